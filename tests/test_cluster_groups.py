"""Consumer groups on three brokers: the group coordinator is the leader of the group's
``__consumer_offsets`` partition, wherever that is.

Clients bootstrapped from one broker are sent to a coordinator on another
(FindCoordinator), the group rebalances and commits there; with
``offsets.topic.replication.factor=3`` the committed offsets survive a SIGKILL
of the coordinator: another broker takes over the partition, loads it from its
replica and serves the same offsets.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from broker_process import BrokerProcess  # noqa: E402
from cluster_fixtures import (  # noqa: E402
    KEY_TYPE_GROUP,
    NONE,
    by_id,
    coordinator_id,
    create_topic,
    find_coordinator,
    metadata,
    start_cluster,
)
from confluent_kafka import (  # noqa: E402
    Consumer,
    ConsumerGroupTopicPartitions,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient  # noqa: E402
from waiting import wait_until  # noqa: E402
from zookeeper import (  # noqa: E402
    zk_connect,  # noqa: F401 - fixture
    zookeeper,  # noqa: F401 - fixture
)

COORDINATOR_NOT_AVAILABLE = 15
RECORDS = 40
PARTITIONS = 4


def started(
    tmp_path: Path, connect: str, overrides: dict[str, str]
) -> Iterator[list[BrokerProcess]]:
    brokers = start_cluster(tmp_path, connect, overrides)
    try:
        yield brokers
    finally:
        for broker in brokers:
            broker.close()


@pytest.fixture
def group_cluster(tmp_path: Path, zk_connect: str) -> Iterator[list[BrokerProcess]]:  # noqa: F811
    yield from started(tmp_path, zk_connect, {"offsets.topic.replication.factor": "1"})


@pytest.fixture
def replicated_group_cluster(
    tmp_path: Path,
    zk_connect: str,  # noqa: F811
) -> Iterator[list[BrokerProcess]]:
    yield from started(
        tmp_path,
        zk_connect,
        {
            "offsets.topic.replication.factor": "3",
            # Preferred-leader rebalancing would move the coordinator behind the test's back.
            "auto.leader.rebalance.enable": "false",
        },
    )


def group_not_on(brokers: list[BrokerProcess], bootstrap: BrokerProcess, prefix: str) -> str:
    """A group id whose coordinator is not ``bootstrap`` (asked through ``bootstrap``)."""
    me = int(bootstrap.overrides["broker.id"])
    for i in range(50):
        group = f"{prefix}-{i}"
        if coordinator_id(bootstrap, group, KEY_TYPE_GROUP) != me:
            return group
    raise AssertionError(f"every group tried is coordinated by broker {me}")


def produce_records(bootstrap: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(RECORDS):
        producer.produce(topic, value=f"v{i}".encode(), partition=i % PARTITIONS)
    assert producer.flush(30) == 0


def consume_in_group(bootstrap: str, group: str, topic: str) -> tuple[list[bytes], int]:
    """Two members of ``group`` consume ``topic`` to the end and commit; (values, members that
    got partitions)."""
    consumers = [
        Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 10_000,
            }
        )
        for _ in range(2)
    ]
    values: list[bytes] = []
    try:
        for consumer in consumers:
            consumer.subscribe([topic])

        def poll_all() -> None:
            for consumer in consumers:
                message = consumer.poll(0.2)
                if message is not None and message.error() is None:
                    values.append(message.value())

        def all_read() -> bool:
            """Both members own partitions and stand at the end of each (a rebalance may
            make a member read a partition again from the start: nothing was committed)."""
            poll_all()
            if not all(consumer.assignment() for consumer in consumers):
                return False
            positions = [
                tp.offset
                for consumer in consumers
                for tp in consumer.position(consumer.assignment())
            ]
            return len(positions) == PARTITIONS and all(
                offset == RECORDS // PARTITIONS for offset in positions
            )

        wait_until(all_read, timeout=90, what="both members at the end", interval=0)
        members = sum(1 for consumer in consumers if consumer.assignment())
        for consumer in consumers:
            consumer.commit(asynchronous=False)
    finally:
        for consumer in consumers:
            consumer.close()
    return values, members


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p) for p in range(PARTITIONS)]
    )
    result = admin.list_consumer_group_offsets([wanted])[group].result(30)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def test_a_group_works_with_its_coordinator_on_another_broker(
    group_cluster: list[BrokerProcess],
) -> None:
    brokers = group_cluster
    create_topic(brokers, "grouped", PARTITIONS, 1)
    entry = brokers[0]
    group = group_not_on(brokers, entry, "remote-group")
    produce_records(entry.bootstrap, "grouped")
    # Bootstrapped from broker 0 alone: the clients reach the coordinator through FindCoordinator.
    values, members = consume_in_group(entry.bootstrap, group, "grouped")
    assert set(values) == {f"v{i}".encode() for i in range(RECORDS)}
    assert members == 2
    per_partition = RECORDS // PARTITIONS
    assert committed_offsets(entry.bootstrap, group, "grouped") == dict.fromkeys(
        range(PARTITIONS), per_partition
    )
    # The bootstrap broker is not the coordinator: it refuses the group's requests.
    response = find_coordinator(entry, group, KEY_TYPE_GROUP)
    assert response.error_code == NONE and response.node_id != 0


def test_committed_offsets_survive_a_sigkill_of_the_coordinator(
    replicated_group_cluster: list[BrokerProcess],
) -> None:
    brokers = replicated_group_cluster
    create_topic(brokers, "durable", PARTITIONS, 1)
    entry = brokers[0]
    group = group_not_on(brokers, entry, "durable-group")
    coordinator = coordinator_id(entry, group, KEY_TYPE_GROUP)
    produce_records(entry.bootstrap, "durable")
    consume_in_group(entry.bootstrap, group, "durable")
    expected = dict.fromkeys(range(PARTITIONS), RECORDS // PARTITIONS)
    assert committed_offsets(entry.bootstrap, group, "durable") == expected

    # The commit was answered once the ISR had it: no wait for the followers here.
    by_id(brokers)[coordinator].kill()
    survivors = [b for b in brokers if b.process is not None]

    def moved() -> int | None:
        found = coordinator_id(entry, group, KEY_TYPE_GROUP)
        return found + 1 if found != coordinator else None

    new_coordinator = wait_until(moved, timeout=60, what="another broker coordinating") - 1
    assert new_coordinator in {int(b.overrides["broker.id"]) for b in survivors}
    bootstrap = ",".join(b.bootstrap for b in survivors)
    assert wait_until(
        lambda: committed_offsets(bootstrap, group, "durable") == expected,
        timeout=60,
        what="the committed offsets served by the new coordinator",
    )
    # A new consumer of the group reads the same committed offsets back.
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        positions = consumer.committed(
            [TopicPartition("durable", p) for p in range(PARTITIONS)], timeout=30
        )
        assert {tp.partition: tp.offset for tp in positions} == expected
    finally:
        consumer.close()


def test_find_coordinator_waits_for_enough_brokers(
    replicated_group_cluster: list[BrokerProcess],
) -> None:
    """As Kafka: ``__consumer_offsets`` is created with offsets.topic.replication.factor
    replicas or not at all — COORDINATOR_NOT_AVAILABLE while fewer brokers are alive."""
    brokers = replicated_group_cluster
    entry, absent = brokers[0], brokers[2]
    absent.stop()
    wait_until(lambda: len(metadata(entry).brokers) == 2, timeout=60, what="broker 2 deregistered")
    response = find_coordinator(entry, "early-group", KEY_TYPE_GROUP)
    assert response.error_code == COORDINATOR_NOT_AVAILABLE
    assert metadata(entry, ["__consumer_offsets"]).topics[0].partitions == []
    absent.start()
    found = coordinator_id(entry, "early-group", KEY_TYPE_GROUP)
    assert found in (0, 1, 2)
    offsets_topic = metadata(entry, ["__consumer_offsets"]).topics[0]
    assert all(len(p.replica_nodes) == 3 for p in offsets_topic.partitions)
