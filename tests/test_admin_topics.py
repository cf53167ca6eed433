"""CreateTopics, DeleteTopics and CreatePartitions against a real broker, with real clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from admin_helpers import ck_admin, ck_error, partition_dirs, produce, topic_partitions
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin import NewPartitions as AioNewPartitions
from aiokafka.admin import NewTopic as AioNewTopic
from aiokafka.errors import InvalidPartitionsError as AioInvalidPartitionsError
from broker_process import BrokerProcess
from confluent_kafka import TopicPartition
from confluent_kafka.admin import ConfigResource, NewPartitions, NewTopic, OffsetSpec
from kafka import KafkaAdminClient
from kafka.admin import NewPartitions as KpNewPartitions
from kafka.admin import NewTopic as KpNewTopic
from waiting import wait_until

from pystream.config import ConfigSource
from pystream.errors import ErrorCode
from pystream.protocol.messages.create_topics import CreateTopicsRequest
from pystream.protocol.messages.delete_topics import DeleteTopicsRequest

ZERO_UUID = uuid.UUID(int=0)


@pytest.fixture
def admin_broker(broker_factory: object) -> BrokerProcess:
    """A broker with 2 partitions by default that removes deleted files at once."""
    return broker_factory(  # type: ignore[operator]
        **{"num.partitions": "2", "log.segment.delete.delay.ms": "0"}
    )


@pytest.fixture
def kp_admin(admin_broker: BrokerProcess) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=admin_broker.bootstrap)
    try:
        yield client
    finally:
        client.close()


# --- CreateTopics -----------------------------------------------------------------------------


def test_create_topics_librdkafka(admin_broker: BrokerProcess) -> None:
    admin = ck_admin(admin_broker)
    futures = admin.create_topics(
        [
            NewTopic("orders", 3, 1, config={"retention.ms": "3600000"}),
            NewTopic("defaults"),  # -1/-1: num.partitions=2, default.replication.factor=1
            NewTopic("manual", 4, replica_assignment=[[0], [0], [0], [0]]),
        ]
    )
    assert {name: ck_error(f) for name, f in futures.items()} == {
        "orders": (0, ""),
        "defaults": (0, ""),
        "manual": (0, ""),
    }
    topics = topic_partitions(admin_broker)
    assert (topics["orders"], topics["defaults"], topics["manual"]) == (3, 2, 4)
    assert partition_dirs(admin_broker, "orders") == ["orders-0", "orders-1", "orders-2"]
    produce(admin_broker, "orders", 3, partition=2)


def test_create_topics_errors_are_per_topic(admin_broker: BrokerProcess) -> None:
    admin = ck_admin(admin_broker)
    assert ck_error(admin.create_topics([NewTopic("ex.ists", 1)])["ex.ists"]) == (0, "")
    futures = admin.create_topics(
        [
            NewTopic("ex.ists", 1),
            NewTopic("ok", 1),
            NewTopic("bad name!", 1),
            NewTopic("rf3", 1, 3),
            NewTopic("unknown-config", 1, config={"retention.mss": "1"}),
            NewTopic("bad-value", 1, config={"retention.ms": "soon"}),
            NewTopic("other-broker", 1, replica_assignment=[[7]]),
            NewTopic("twice-a-broker", 1, replica_assignment=[[0, 0]]),
            NewTopic("ex_ists", 1),  # the same as ex.ists in metric names
        ]
    )
    errors = {name: ck_error(f) for name, f in futures.items()}
    assert {name: code for name, (code, _) in errors.items()} == {
        "ex.ists": ErrorCode.TOPIC_ALREADY_EXISTS,
        "ok": 0,
        "bad name!": ErrorCode.INVALID_TOPIC_EXCEPTION,
        "rf3": ErrorCode.INVALID_REPLICATION_FACTOR,
        "unknown-config": ErrorCode.INVALID_CONFIG,
        "bad-value": ErrorCode.INVALID_CONFIG,
        "other-broker": ErrorCode.INVALID_REPLICA_ASSIGNMENT,
        "twice-a-broker": ErrorCode.INVALID_REPLICA_ASSIGNMENT,
        "ex_ists": ErrorCode.INVALID_TOPIC_EXCEPTION,
    }
    assert "retention.mss" in errors["unknown-config"][1]
    assert "retention.ms" in errors["bad-value"][1] and "soon" in errors["bad-value"][1]
    # Nothing half-created: only the topics that succeeded exist, files included.
    failed = set(errors) - {"ex.ists", "ok"}
    assert not set(topic_partitions(admin_broker)) & failed
    assert [partition_dirs(admin_broker, name) for name in sorted(failed)] == [[]] * len(failed)


def test_validate_only_creates_nothing(admin_broker: BrokerProcess) -> None:
    admin = ck_admin(admin_broker)
    futures = admin.create_topics(
        [NewTopic("checked", 4), NewTopic("checked-bad", 1, config={"cleanup.policy": "x"})],
        validate_only=True,
    )
    assert ck_error(futures["checked"]) == (0, "")
    assert ck_error(futures["checked-bad"])[0] == ErrorCode.INVALID_CONFIG
    assert "checked" not in topic_partitions(admin_broker)
    assert partition_dirs(admin_broker, "checked") == []


def test_create_topics_v7_reports_counts_configs_and_id(kp_admin: KafkaAdminClient) -> None:
    # kafka-python sends CreateTopics v7: counts, configs with their sources and the topic id.
    response = kp_admin.create_topics(
        [KpNewTopic("reported", 3, 1, topic_configs={"segment.bytes": "1048576"})]
    )
    (result,) = response["topics"]
    assert result["error_code"] == 0
    assert (result["num_partitions"], result["replication_factor"]) == (3, 1)
    assert uuid.UUID(str(result["topic_id"])) != ZERO_UUID
    configs = result["configs"]
    assert configs["segment.bytes"]["value"] == "1048576"
    assert configs["segment.bytes"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"  # TOPIC_CONFIG
    assert configs["retention.ms"]["value"] == "604800000"
    assert configs["retention.ms"]["config_source"] == "DEFAULT_CONFIG"
    # validate_only answers the same, but nothing exists (and the id is all zeros).
    response = kp_admin.create_topics([KpNewTopic("would-be", 5, 1)], validate_only=True)
    (result,) = response["topics"]
    assert (result["error_code"], result["num_partitions"]) == (0, 5)
    assert result["topic_id"] in (None, ZERO_UUID, str(ZERO_UUID))
    assert "would-be" not in kp_admin.list_topics()


@pytest.mark.parametrize("version", [0, 4, 7])
def test_create_topics_duplicate_names_and_counts_on_the_wire(
    admin_broker: BrokerProcess, version: int
) -> None:
    topic = CreateTopicsRequest.CreatableTopic
    request = CreateTopicsRequest(
        topics=[
            topic(name="dup", num_partitions=1, replication_factor=1),
            topic(name="zero", num_partitions=0, replication_factor=1),
            topic(name="dup", num_partitions=1, replication_factor=1),
            topic(name="rf0", num_partitions=1, replication_factor=0),
        ],
        timeout_ms=10_000,
    )
    with admin_broker.wire() as wire:
        response = wire.request(19, version, request)
    assert [(t.name, t.error_code) for t in response.topics] == [
        ("dup", ErrorCode.INVALID_REQUEST),
        ("zero", ErrorCode.INVALID_PARTITIONS),
        ("rf0", ErrorCode.INVALID_REPLICATION_FACTOR),
    ]
    assert "dup" not in topic_partitions(admin_broker)


def test_kafka_python_and_aiokafka_create_topics(
    admin_broker: BrokerProcess, kp_admin: KafkaAdminClient
) -> None:
    kp_admin.create_topics([KpNewTopic("kp-topic", 2, 1)])

    async def aiokafka_create() -> object:
        client = AIOKafkaAdminClient(bootstrap_servers=admin_broker.bootstrap)
        await client.start()
        try:
            await client.create_topics([AioNewTopic("aio-topic", 3, 1)])
            return await client.create_topics([AioNewTopic("aio-topic", 3, 1)])
        finally:
            await client.close()

    again = asyncio.run(aiokafka_create())  # CreateTopics v3
    assert [e[1] for e in again.topic_errors] == [ErrorCode.TOPIC_ALREADY_EXISTS]
    topics = topic_partitions(admin_broker)
    assert (topics["kp-topic"], topics["aio-topic"]) == (2, 3)


# --- DeleteTopics -----------------------------------------------------------------------------


def test_delete_topics_removes_the_files(admin_broker: BrokerProcess) -> None:
    admin = ck_admin(admin_broker)
    assert ck_error(admin.create_topics([NewTopic("doomed", 3)])["doomed"]) == (0, "")
    produce(admin_broker, "doomed", 20, partition=1)
    assert partition_dirs(admin_broker, "doomed") == ["doomed-0", "doomed-1", "doomed-2"]
    futures = admin.delete_topics(["doomed", "never-was", "__consumer_offsets"])
    errors = {name: ck_error(f)[0] for name, f in futures.items()}
    assert errors == {
        "doomed": 0,
        "never-was": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        "__consumer_offsets": ErrorCode.INVALID_REQUEST,  # internal: not for clients
    }
    assert "doomed" not in topic_partitions(admin_broker)
    # file.delete.delay.ms=0 here: removed at once, by the broker's log-io thread (the
    # response does not wait for it: an rmtree must not stall the event loop).
    wait_until(lambda: partition_dirs(admin_broker, "doomed") == [], 15, "doomed's dirs removed")
    # The name is free again, and the new topic starts empty.
    assert ck_error(admin.create_topics([NewTopic("doomed", 1)])["doomed"]) == (0, "")
    produce(admin_broker, "doomed", 1)
    partition = TopicPartition("doomed", 0)
    latest = admin.list_offsets({partition: OffsetSpec.latest()})[partition].result(15)
    assert latest.offset == 1


def test_deleted_topic_directories_wait_for_the_delete_delay(broker: BrokerProcess) -> None:
    # Default file.delete.delay.ms (60 s): renamed at once, removed later.
    admin = ck_admin(broker)
    assert ck_error(admin.create_topics([NewTopic("later", 1)])["later"]) == (0, "")
    assert ck_error(admin.delete_topics(["later"])["later"]) == (0, "")
    (renamed,) = partition_dirs(broker, "later")
    assert renamed.startswith("later-0.") and renamed.endswith("-delete")


def test_delete_topics_by_id_v6(admin_broker: BrokerProcess, kp_admin: KafkaAdminClient) -> None:
    created = kp_admin.create_topics([KpNewTopic("by-id", 1, 1)])["topics"][0]
    topic_id = uuid.UUID(str(created["topic_id"]))
    state = DeleteTopicsRequest.DeleteTopicState
    request = DeleteTopicsRequest(
        topics=[
            state(name=None, topic_id=topic_id),
            state(name=None, topic_id=uuid.uuid4()),
            state(name="by-id", topic_id=topic_id),
            state(name=None, topic_id=ZERO_UUID),
        ],
        timeout_ms=10_000,
    )
    with admin_broker.wire() as wire:
        response = wire.request(20, 6, request)
    assert [(r.name, r.error_code) for r in response.responses] == [
        ("by-id", 0),
        (None, ErrorCode.UNKNOWN_TOPIC_ID),
        ("by-id", ErrorCode.INVALID_REQUEST),  # name and id together
        (None, ErrorCode.INVALID_REQUEST),  # neither
    ]
    assert response.responses[0].topic_id == topic_id
    assert "by-id" not in topic_partitions(admin_broker)


def test_topic_deletion_disabled(broker_factory: object) -> None:
    broker = broker_factory(**{"delete.topic.enable": "false"})  # type: ignore[operator]
    admin = ck_admin(broker)
    assert ck_error(admin.create_topics([NewTopic("kept", 1)])["kept"]) == (0, "")
    code, _ = ck_error(admin.delete_topics(["kept"])["kept"])
    assert code == ErrorCode.TOPIC_DELETION_DISABLED
    with broker.wire() as wire:  # v0-2 clients do not know TOPIC_DELETION_DISABLED
        old = wire.request(20, 1, DeleteTopicsRequest(topic_names=["kept"], timeout_ms=1000))
    assert [r.error_code for r in old.responses] == [ErrorCode.INVALID_REQUEST]
    assert "kept" in topic_partitions(broker)
    assert partition_dirs(broker, "kept") == ["kept-0"]


def test_kafka_python_and_aiokafka_delete_topics(
    admin_broker: BrokerProcess, kp_admin: KafkaAdminClient
) -> None:
    kp_admin.create_topics([KpNewTopic(name, 1, 1) for name in ("kp-del", "aio-del")])
    kp_admin.delete_topics(["kp-del"])  # v6

    async def aiokafka_delete() -> object:
        client = AIOKafkaAdminClient(bootstrap_servers=admin_broker.bootstrap)
        await client.start()
        try:
            return await client.delete_topics(["aio-del", "aio-missing"])  # v3
        finally:
            await client.close()

    response = asyncio.run(aiokafka_delete())
    assert sorted(response.topic_error_codes) == [
        ("aio-del", 0),
        ("aio-missing", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
    ]
    assert not {"kp-del", "aio-del"} & set(topic_partitions(admin_broker))
    wait_until(
        lambda: not [d for t in ("kp-del", "aio-del") for d in partition_dirs(admin_broker, t)],
        15,
        "the deleted topics' dirs removed (off the event loop, after the responses)",
    )


# --- CreatePartitions -------------------------------------------------------------------------


def test_create_partitions_librdkafka(admin_broker: BrokerProcess) -> None:
    admin = ck_admin(admin_broker)
    assert ck_error(admin.create_topics([NewTopic("grow", 1)])["grow"]) == (0, "")
    assert ck_error(admin.create_partitions([NewPartitions("grow", 3)])["grow"]) == (0, "")
    assert topic_partitions(admin_broker)["grow"] == 3
    assert partition_dirs(admin_broker, "grow") == ["grow-0", "grow-1", "grow-2"]
    produce(admin_broker, "grow", 2, partition=2)  # the new partitions take writes
    # validate_only changes nothing
    futures = admin.create_partitions([NewPartitions("grow", 5)], validate_only=True)
    assert ck_error(futures["grow"]) == (0, "")
    assert topic_partitions(admin_broker)["grow"] == 3
    # manual assignments: this broker only, one list per new partition
    futures = admin.create_partitions([NewPartitions("grow", 4, replica_assignment=[[0]])])
    assert ck_error(futures["grow"]) == (0, "")
    futures = admin.create_partitions([NewPartitions("grow", 5, replica_assignment=[[3]])])
    assert ck_error(futures["grow"])[0] == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    for count in (2, 4):  # shrinking or the same count
        code, message = ck_error(admin.create_partitions([NewPartitions("grow", count)])["grow"])
        assert code == ErrorCode.INVALID_PARTITIONS and "4 partition" in message
    missing = admin.create_partitions([NewPartitions("no-such-topic", 2)])["no-such-topic"]
    assert ck_error(missing)[0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert topic_partitions(admin_broker)["grow"] == 4


def test_kafka_python_and_aiokafka_create_partitions(
    admin_broker: BrokerProcess, kp_admin: KafkaAdminClient
) -> None:
    kp_admin.create_topics([KpNewTopic("kp-grow", 1, 1)])
    result = kp_admin.create_partitions({"kp-grow": KpNewPartitions(3)})  # v3
    assert [r.error_code for r in result.results] == [0]

    async def aiokafka_grow() -> None:
        client = AIOKafkaAdminClient(bootstrap_servers=admin_broker.bootstrap)
        await client.start()
        try:
            await client.create_partitions({"kp-grow": AioNewPartitions(5)})  # v1
            with pytest.raises(AioInvalidPartitionsError, match="already has 5 partition"):
                await client.create_partitions({"kp-grow": AioNewPartitions(5)})
        finally:
            await client.close()

    asyncio.run(aiokafka_grow())
    assert topic_partitions(admin_broker)["kp-grow"] == 5


def test_topics_and_configs_survive_a_restart(admin_broker: BrokerProcess) -> None:
    admin = ck_admin(admin_broker)
    topic = NewTopic("durable", 2, 1, config={"cleanup.policy": "compact"})
    assert ck_error(admin.create_topics([topic])["durable"]) == (0, "")
    admin_broker.restart()
    assert topic_partitions(admin_broker)["durable"] == 2
    resource = ConfigResource("topic", "durable")
    admin = ck_admin(admin_broker)
    configs = admin.describe_configs([resource])[resource].result(15)
    assert configs["cleanup.policy"].value == "compact"
    assert configs["cleanup.policy"].source == int(ConfigSource.TOPIC_CONFIG)


# --- auto-creation --------------------------------------------------------------------------


def test_auto_created_topic_is_hosted_even_if_its_requester_hangs_up(broker: BrokerProcess) -> None:
    """librdkafka drops its bootstrap connection (Metadata in flight) once it learns the
    broker ids; a topic that Metadata request auto-created must still get its logs, or
    every Produce to it answers UNKNOWN_TOPIC_OR_PARTITION for good."""
    from pystream.protocol.messages.metadata import MetadataRequest

    names = [f"hung-up-{i}" for i in range(30)]
    for name in names:  # each asks for its topic and closes without reading the answer
        wire = broker.wire()
        request = MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name=name)])
        wire.send(wire.frame(3, 9, request))
        wire.close()
    admin = ck_admin(broker)
    created = wait_until(
        lambda: sorted(t for t in admin.list_topics(timeout=10).topics if t in names),
        timeout=30,
        what="a topic auto-created",
    )
    for name in created:
        produce(broker, name, 1, **{"message.timeout.ms": "15000"})
