"""The three-broker cluster the cluster tests share: brokers, raw-wire helpers, topics.

:func:`start_cluster` starts three ``pystream serve`` processes of one cluster
on a real ZooKeeper (``test_cluster_basic.py``'s ``cluster`` fixture is that
with no extra overrides).  Moved here from ``test_cluster_basic.py`` so that
the cluster test modules use one copy.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from broker_process import BrokerProcess, KafkaWire
from confluent_kafka.admin import AdminClient, NewTopic
from waiting import wait_until
from zookeeper import SESSION_TIMEOUT_MS

from pystream._core import records as core_records
from pystream.protocol.messages.fetch import FetchRequest
from pystream.protocol.messages.find_coordinator import FindCoordinatorRequest
from pystream.protocol.messages.metadata import MetadataRequest
from pystream.protocol.messages.produce import ProduceRequest

NONE = 0
NOT_LEADER_OR_FOLLOWER = 6
BROKERS = 3


def cluster_broker(tmp_path: Path, connect: str, broker_id: int) -> BrokerProcess:
    return BrokerProcess(
        tmp_path / f"broker-{broker_id}",
        {
            "broker.id": str(broker_id),
            "broker.rack": "abc"[broker_id % 3],
            "zookeeper.connect": connect,
            "zookeeper.session.timeout.ms": str(SESSION_TIMEOUT_MS),
            "offsets.topic.num.partitions": "6",
            "group.initial.rebalance.delay.ms": "0",
            "file.delete.delay.ms": "0",
        },
    )


def bootstrap(brokers: list[BrokerProcess]) -> str:
    return ",".join(b.bootstrap for b in brokers if b.process is not None)


def metadata(broker: BrokerProcess, topics: list[str] | None = None) -> Any:
    request = MetadataRequest(
        topics=None
        if topics is None
        else [MetadataRequest.MetadataRequestTopic(name=t) for t in topics],
        allow_auto_topic_creation=False,
    )
    with broker.wire() as wire:
        return wire.request(3, 12, request)


def create_topic(brokers: list[BrokerProcess], name: str, partitions: int, rf: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap(brokers)})
    futures = admin.create_topics([NewTopic(name, partitions, rf)], operation_timeout=15)
    futures[name].result(timeout=30)
    # Every broker learns of the topic (and its leaders) through its ZooKeeper watches.
    for broker in brokers:
        wait_until(
            lambda b=broker: _all_led(metadata(b, [name]).topics[0], partitions),
            what=f"{name} known with leaders on broker {broker.overrides['broker.id']}",
        )
    wait_leaders_serve(brokers, name)


def wait_leaders_serve(brokers: list[BrokerProcess], name: str, timeout: float = 30) -> None:
    """Until each partition's leader (as the first broker's Metadata says) answers a Fetch.

    A broker's Metadata answer can run ahead of its roles: a new replica's log files are
    made in a thread before the broker takes the role (Kafka's brokers likewise process
    LeaderAndIsr after their metadata cache changes), so clients retry
    NOT_LEADER_OR_FOLLOWER for a moment; a test that wants the topic usable waits here.
    """
    brokers_by_id = by_id(brokers)

    def served() -> bool:
        for p in metadata(brokers[0], [name]).topics[0].partitions:
            leader = brokers_by_id.get(p.leader_id)
            if leader is None or leader.process is None:
                return False
            with leader.wire() as wire:
                if fetch(wire, name, p.partition_index).error_code != NONE:
                    return False
        return True

    wait_until(served, timeout=timeout, what=f"every leader of {name} serving it")


def _all_led(topic: Any, partitions: int) -> bool:
    return (
        topic.error_code == NONE
        and len(topic.partitions) == partitions
        and all(p.leader_id >= 0 for p in topic.partitions)
    )


def produce_request(topic: str, partition: int, value: bytes) -> ProduceRequest:
    """An acks=1 Produce of one record."""
    records = core_records.build_batch([(None, None, value)])
    return ProduceRequest(
        acks=1,
        timeout_ms=5000,
        topic_data=[
            ProduceRequest.TopicProduceData(
                name=topic,
                partition_data=[
                    ProduceRequest.PartitionProduceData(index=partition, records=records)
                ],
            )
        ],
    )


def produce(wire: KafkaWire, topic: str, partition: int, value: bytes) -> Any:
    request = produce_request(topic, partition, value)
    return wire.request(0, 9, request).responses[0].partition_responses[0]


def fetch(wire: KafkaWire, topic: str, partition: int, current_leader_epoch: int = -1) -> Any:
    """A consumer Fetch (v11) from offset 0; ``current_leader_epoch`` -1 is not checked."""
    request = FetchRequest(
        max_wait_ms=0,
        min_bytes=0,
        max_bytes=1 << 20,
        topics=[
            FetchRequest.FetchTopic(
                topic=topic,
                topic_id=uuid.UUID(int=0),
                partitions=[
                    FetchRequest.FetchPartition(
                        partition=partition,
                        current_leader_epoch=current_leader_epoch,
                        fetch_offset=0,
                        partition_max_bytes=1 << 20,
                    )
                ],
            )
        ],
    )
    return wire.request(1, 11, request).responses[0].partitions[0]


def by_id(brokers: list[BrokerProcess]) -> dict[int, BrokerProcess]:
    return {int(b.overrides["broker.id"]): b for b in brokers}


KEY_TYPE_GROUP = 0
KEY_TYPE_TRANSACTION = 1


def start_cluster(
    tmp_path: Path, connect: str, overrides: dict[str, str] | None = None
) -> list[BrokerProcess]:
    """Start the three brokers of :func:`cluster` with extra broker ``overrides``
    (the caller closes them)."""
    brokers = [cluster_broker(tmp_path, connect, i) for i in range(BROKERS)]
    try:
        for broker in brokers:
            broker.overrides.update(overrides or {})
            broker.start()
    except BaseException:
        for broker in brokers:
            broker.close()
        raise
    return brokers


def find_coordinator(broker: BrokerProcess, key: str, key_type: int) -> Any:
    """FindCoordinator v3 for one group (``KEY_TYPE_GROUP``) or transactional id."""
    with broker.wire() as wire:
        return wire.request(10, 3, FindCoordinatorRequest(key=key, key_type=key_type))


def coordinator_id(broker: BrokerProcess, key: str, key_type: int, timeout: float = 60) -> int:
    """The id of the coordinator broker ``broker`` names for ``key``, once it names one
    (the internal topic is created on the first request)."""

    def found() -> int | None:
        response = find_coordinator(broker, key, key_type)
        return response.node_id + 1 if response.error_code == NONE else None

    return wait_until(found, timeout, what=f"a coordinator for {key!r}") - 1


def leaders(broker: BrokerProcess, topic: str) -> dict[int, int]:
    """Partition -> leader id of ``topic`` as ``broker`` knows it."""
    return {p.partition_index: p.leader_id for p in metadata(broker, [topic]).topics[0].partitions}
