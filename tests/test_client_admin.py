"""pystream.AdminClient against a real broker, cross-checked with confluent-kafka's admin.

Each test needs some admin APIs; it is skipped when the broker does not advertise
them in ApiVersions (they are being added to the broker).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from broker_process import BrokerProcess
from confluent_kafka.admin import AdminClient as CKAdmin

import pystream
from pystream.client.connection import BrokerConnection
from pystream.client.types import NewTopic, OffsetAndMetadata, TopicPartition
from pystream.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

TP = TopicPartition
BROKER_SETTINGS = {
    "num.partitions": "2",
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.num.partitions": "3",
}


def advertised(bootstrap: str) -> dict[int, tuple[int, int]]:
    host, port = bootstrap.rsplit(":", 1)

    async def ask() -> dict[int, tuple[int, int]]:
        conn = await BrokerConnection.open(
            host,
            int(port),
            client_id="probe",
            request_timeout_ms=10_000,
            connect_timeout_ms=10_000,
            max_response_size=1 << 20,
        )
        conn.close()
        return conn.api_versions

    return asyncio.run(ask())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("admin"), BROKER_SETTINGS).start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def apis(cluster: BrokerProcess) -> dict[int, tuple[int, int]]:
    return advertised(cluster.bootstrap)


@pytest.fixture
def admin(cluster: BrokerProcess) -> Iterator[pystream.AdminClient]:
    client = pystream.AdminClient(cluster.bootstrap)
    try:
        yield client
    finally:
        client.close()


def need(apis: dict[int, tuple[int, int]], *keys: int) -> None:
    missing = [k for k in keys if k not in apis]
    if missing:
        pytest.skip(f"the broker does not advertise api keys {missing} yet")


@pytest.fixture
def name() -> str:
    return "a-" + uuid.uuid4().hex[:10]


def test_create_describe_and_delete_topics(
    cluster: BrokerProcess, apis: dict, admin: pystream.AdminClient, name: str
) -> None:
    need(apis, 19, 20)
    admin.create_topics(
        [
            NewTopic(name, num_partitions=5, config={"retention.ms": "3600000"}),
            NewTopic(name + "-b", num_partitions=1),
        ]
    )
    assert {name, name + "-b"} <= set(admin.list_topics())
    described = admin.describe_topics([name])[name]
    assert [p.partition for p in described.partitions] == list(range(5))
    assert all(p.leader >= 0 and p.replicas for p in described.partitions)
    # librdkafka sees the same topic
    ck_topics = CKAdmin({"bootstrap.servers": cluster.bootstrap}).list_topics(timeout=15).topics
    assert len(ck_topics[name].partitions) == 5
    with pytest.raises(TopicAlreadyExistsError) as info:
        admin.create_topics([NewTopic(name, num_partitions=1)])
    assert name in str(info.value) and name in info.value.errors  # type: ignore[attr-defined]
    admin.delete_topics([name, name + "-b"])
    assert name not in admin.list_topics()
    with pytest.raises(UnknownTopicOrPartitionError):
        admin.delete_topics([name])


def test_validate_only_creates_nothing(apis: dict, admin: pystream.AdminClient, name: str) -> None:
    need(apis, 19)
    admin.create_topics(NewTopic(name, num_partitions=3), validate_only=True)
    assert name not in admin.list_topics()


def test_create_partitions(apis: dict, admin: pystream.AdminClient, name: str) -> None:
    need(apis, 19, 37)
    admin.create_topics([NewTopic(name, num_partitions=2)])
    admin.create_partitions({name: 6})
    assert len(admin.describe_topics([name])[name].partitions) == 6
    with pytest.raises(Exception, match="partitions"):
        admin.create_partitions({name: 3})  # cannot shrink


def test_describe_and_alter_topic_configs(
    apis: dict, admin: pystream.AdminClient, name: str
) -> None:
    need(apis, 19, 32)
    admin.create_topics([NewTopic(name, num_partitions=1, config={"cleanup.policy": "compact"})])
    configs = admin.describe_configs([("topic", name)])[(2, name)]
    assert configs["cleanup.policy"].value == "compact"
    assert not configs["cleanup.policy"].is_default
    if 44 not in apis and 33 not in apis:
        pytest.skip("no AlterConfigs / IncrementalAlterConfigs")
    admin.alter_configs(("topic", name), {"retention.ms": "123456"})
    after = admin.describe_configs([("topic", name)], keys=["retention.ms", "cleanup.policy"])
    assert after[(2, name)]["retention.ms"].value == "123456"
    assert after[(2, name)]["cleanup.policy"].value == "compact"  # incremental: kept


def test_group_admin(
    cluster: BrokerProcess, apis: dict, admin: pystream.AdminClient, name: str
) -> None:
    need(apis, 10, 11, 15, 16, 42, 8, 9)
    with pystream.Producer(cluster.bootstrap) as producer:
        producer.send_batch(name, [b"%d" % i for i in range(40)]).result(30)
    group = "grp-" + name
    with pystream.Consumer(
        name,
        bootstrap_servers=cluster.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        heartbeat_interval_ms=300,
    ) as consumer:
        consumer.wait_for_assignment(30)
        got = 0
        deadline = time.monotonic() + 30
        while got < 40 and time.monotonic() < deadline:
            got += len(consumer.poll(0.5))
        consumer.commit()
        listing = {g.group_id: g for g in admin.list_groups()}
        assert listing[group].protocol_type == "consumer"
        described = admin.describe_groups([group])[group]
        assert described.state == "Stable" and described.protocol == "range"
        (member,) = described.members
        assert member.member_id == consumer.member_id
        assert sorted(member.assignment) == [TP(name, 0), TP(name, 1)]
    offsets = admin.list_consumer_group_offsets(group)
    assert sum(om.offset for om in offsets.values()) == 40
    admin.alter_consumer_group_offsets(
        group, {TP(name, 0): 1, (name, 1): OffsetAndMetadata(2, "m")}
    )
    offsets = admin.list_consumer_group_offsets(group, [TP(name, 0), TP(name, 1)])
    assert offsets == {
        TP(name, 0): OffsetAndMetadata(1, ""),
        TP(name, 1): OffsetAndMetadata(2, "m"),
    }
    # Lags and reset targets (what the console and kafka-consumer-groups show and commit).
    ends = admin.list_offsets({TP(name, 0): "latest", TP(name, 1): "latest"})
    lags = admin.list_consumer_group_lags(group)
    assert [(r.partition, r.committed, r.end, r.lag, r.member) for r in lags] == [
        (TP(name, 0), 1, ends[TP(name, 0)], max(0, ends[TP(name, 0)] - 1), None),
        (TP(name, 1), 2, ends[TP(name, 1)], max(0, ends[TP(name, 1)] - 2), None),
    ]
    both = [TP(name, 0), TP(name, 1)]
    assert admin.consumer_group_reset_targets(group, both, "to-latest") == ends
    assert admin.consumer_group_reset_targets(group, both, "to-earliest") == dict.fromkeys(both, 0)
    # Clamped to the log start.
    assert admin.consumer_group_reset_targets(group, both[:1], "shift-by", -5) == {both[0]: 0}
    if 47 in apis:
        admin.delete_consumer_group_offsets(group, [TP(name, 1)])
        assert set(admin.list_consumer_group_offsets(group)) == {TP(name, 0)}
    admin.delete_groups([group])
    assert group not in {g.group_id for g in admin.list_groups()}


def test_delete_records_and_list_offsets(
    cluster: BrokerProcess, apis: dict, admin: pystream.AdminClient, name: str
) -> None:
    need(apis, 21)
    with pystream.Producer(cluster.bootstrap) as producer:
        producer.send_batch(name, [b"%d" % i for i in range(30)], partition=0).result(30)
    tp = TP(name, 0)
    assert admin.list_offsets({tp: "earliest"}) == {tp: 0}
    assert admin.list_offsets({tp: "latest"}) == {tp: 30}
    assert admin.delete_records({tp: 12}) == {tp: 12}
    assert admin.list_offsets({tp: "earliest"}) == {tp: 12}


def test_describe_cluster(cluster: BrokerProcess, admin: pystream.AdminClient) -> None:
    info = admin.describe_cluster()
    assert [b.port for b in info["brokers"]] == [cluster.port]
    assert info["controller_id"] == info["brokers"][0].node_id
    assert info["cluster_id"]
