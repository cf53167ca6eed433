"""Cluster mode, first step: three ``pystream serve`` processes and a real ZooKeeper.

The brokers form one cluster (one cluster id, every broker in Metadata and
DescribeCluster), spread the leaders of new topics, route clients to leaders
(NOT_LEADER_OR_FOLLOWER elsewhere), elect a new controller when the old one is
SIGKILLed, and remove a deleted topic's partitions on every broker.
Replication (followers fetching, HW over the ISR) is the next step: data goes
through RF=1 topics here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from broker_process import BrokerProcess  # noqa: E402
from cluster_fixtures import (  # noqa: E402 - shared with the other cluster tests
    NONE,
    NOT_LEADER_OR_FOLLOWER,
    bootstrap,
    by_id,
    cluster_broker,
    create_topic,
    fetch,
    metadata,
    produce,
    start_cluster,
)
from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402
from zookeeper import (  # noqa: E402
    wait_until,
    zk_connect,  # noqa: F401 - fixture
    zookeeper,  # noqa: F401 - fixture
)

from pystream.protocol.messages.describe_cluster import DescribeClusterRequest  # noqa: E402


@pytest.fixture
def cluster(tmp_path: Path, zk_connect: str) -> Iterator[list[BrokerProcess]]:  # noqa: F811
    """Three brokers (ids 0-2, racks a/b/c) of one cluster, each with its own log dir and port."""
    brokers = start_cluster(tmp_path, zk_connect)
    try:
        yield brokers
    finally:
        for broker in brokers:
            broker.close()


def test_metadata_lists_every_broker_and_spreads_leaders(cluster: list[BrokerProcess]) -> None:
    create_topic(cluster, "spread", 6, 1)
    create_topic(cluster, "replicated", 3, 3)
    ports = {int(b.overrides["broker.id"]): b.port for b in cluster}
    cluster_ids = set()
    for broker in cluster:
        answer = metadata(broker)
        assert {(b.node_id, b.port) for b in answer.brokers} == set(ports.items())
        assert {b.node_id: b.rack for b in answer.brokers} == {0: "a", 1: "b", 2: "c"}
        assert answer.controller_id in ports
        cluster_ids.add(answer.cluster_id)
        topics = {t.name: t for t in answer.topics}
        leaders = [p.leader_id for p in topics["spread"].partitions]
        assert sorted(leaders) == [0, 0, 1, 1, 2, 2]  # two leaders per broker
        for p in topics["spread"].partitions:
            assert p.replica_nodes == [p.leader_id] and p.isr_nodes == [p.leader_id]
        for p in topics["replicated"].partitions:
            assert sorted(p.replica_nodes) == [0, 1, 2] and sorted(p.isr_nodes) == [0, 1, 2]
            assert p.leader_id == p.replica_nodes[0]
        assert sorted(p.leader_id for p in topics["replicated"].partitions) == [0, 1, 2]
    assert len(cluster_ids) == 1 and None not in cluster_ids
    with cluster[0].wire() as wire:
        described = wire.request(60, 0, DescribeClusterRequest())
    assert described.error_code == NONE
    assert {(b.broker_id, b.port) for b in described.brokers} == set(ports.items())
    assert described.cluster_id in cluster_ids


def test_requests_to_a_non_leader_are_refused(cluster: list[BrokerProcess]) -> None:
    create_topic(cluster, "routed", 6, 1)
    create_topic(cluster, "followed", 1, 3)
    brokers = by_id(cluster)
    for name in ("routed", "followed"):
        leader = metadata(cluster[0], [name]).topics[0].partitions[0].leader_id
        for broker_id, broker in brokers.items():
            with broker.wire() as wire:
                produced = produce(wire, name, 0, b"x")
                fetched = fetch(wire, name, 0)
            expected = NONE if broker_id == leader else NOT_LEADER_OR_FOLLOWER
            assert (produced.error_code, fetched.error_code) == (expected, expected), (
                name,
                broker_id,
            )


def test_clients_produce_and_consume_every_partition(cluster: list[BrokerProcess]) -> None:
    create_topic(cluster, "orders", 6, 1)
    # One bootstrap broker: the clients find the leaders (and the group coordinator) through it.
    # Idempotent: its producer id comes from the cluster-wide blocks in ZooKeeper.
    producer = Producer(
        {"bootstrap.servers": cluster[1].bootstrap, "linger.ms": 5, "enable.idempotence": True}
    )
    sent = {(p, f"{p}-{i}".encode()) for p in range(6) for i in range(20)}
    for partition, value in sorted(sent):
        producer.produce("orders", value, partition=partition)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": cluster[2].bootstrap,
            "group.id": "orders-readers",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: set[tuple[int, bytes]] = set()
    try:
        consumer.subscribe(["orders"])

        def poll() -> bool:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                received.add((message.partition(), message.value()))
            return received == sent

        wait_until(poll, timeout=60, what="every record consumed", interval=0)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert received == sent


def test_sigkill_of_the_controller_elects_another(cluster: list[BrokerProcess]) -> None:
    brokers = by_id(cluster)
    first = wait_until(lambda: metadata(cluster[0]).controller_id + 1) - 1
    brokers[first].kill()
    survivors = [b for i, b in brokers.items() if i != first]

    def new_controller() -> int | None:
        ids = {metadata(b).controller_id for b in survivors}
        (only,) = ids if len(ids) == 1 else (None,)
        return only if only is not None and only not in (-1, first) else None

    elected = wait_until(new_controller, what="a new controller")
    assert elected in brokers and elected != first
    assert {b.node_id for b in metadata(survivors[0]).brokers} == set(brokers) - {first}
    # The new controller serves: a topic created now gets leaders on the survivors.
    create_topic(survivors, "after-failover", 4, 1)
    leaders = {p.leader_id for p in metadata(survivors[0], ["after-failover"]).topics[0].partitions}
    assert leaders == set(brokers) - {first}


def dirs(broker: BrokerProcess, topic: str) -> set[str]:
    """The live partition directories of ``topic`` in the broker's log dir."""
    prefix = f"{topic}-"
    return {
        d.name
        for d in broker.log_dir.iterdir()
        if d.name.startswith(prefix) and d.name[len(prefix) :].isdigit()
    }


def test_deleting_a_topic_removes_its_partitions_on_every_broker(
    cluster: list[BrokerProcess],
) -> None:
    create_topic(cluster, "doomed", 6, 1)
    create_topic(cluster, "doomed-replicated", 2, 3)
    create_topic(cluster, "kept", 3, 1)

    for broker in cluster:  # every replica hosts a log, leaders and followers alike
        assert dirs(broker, "doomed-replicated") == {"doomed-replicated-0", "doomed-replicated-1"}
    assert sum(len(dirs(b, "doomed")) for b in cluster) == 6
    admin = AdminClient({"bootstrap.servers": bootstrap(cluster)})
    futures = admin.delete_topics(["doomed", "doomed-replicated"], operation_timeout=15)
    for future in futures.values():
        future.result(timeout=30)
    for broker in cluster:
        wait_until(
            lambda b=broker: not dirs(b, "doomed") and not dirs(b, "doomed-replicated"),
            what=f"the deleted partitions gone from {broker.log_dir}",
        )
        names = {t.name for t in metadata(broker).topics}
        assert "doomed" not in names and "doomed-replicated" not in names
    assert sum(len(dirs(b, "kept")) for b in cluster) == 3


def test_sigterm_leaves_the_cluster_cleanly(cluster: list[BrokerProcess]) -> None:
    assert cluster[2].stop() == 0
    assert "shut down cleanly" in cluster[2].output()
    # Deregistered at once (no session timeout to wait out).
    wait_until(
        lambda: {b.node_id for b in metadata(cluster[0]).brokers} == {0, 1},
        what="broker 2 gone from the cluster",
    )
    cluster[2].start()  # and it comes back under its id
    wait_until(
        lambda: {b.node_id for b in metadata(cluster[0]).brokers} == {0, 1, 2},
        what="broker 2 back in the cluster",
    )


def test_a_log_dir_of_another_cluster_is_refused(
    tmp_path: Path,
    zookeeper: Any,  # noqa: F811
) -> None:
    first = cluster_broker(tmp_path / "one", f"{zookeeper.hosts}/{uuid.uuid4().hex}", 0)
    first.start()
    first.stop()
    # The same log dir, pointed at another cluster (another chroot: another cluster id).
    moved = BrokerProcess(
        first.directory,
        {**first.overrides, "zookeeper.connect": f"{zookeeper.hosts}/{uuid.uuid4().hex}"},
    )
    with pytest.raises(RuntimeError, match="did not start"):
        moved.start()
    assert "belong to different clusters" in moved.output()
    assert moved.process is None or moved.process.poll() is not None


def test_a_broker_down_during_a_deletion_removes_the_partitions_when_back(
    cluster: list[BrokerProcess],
) -> None:
    create_topic(cluster, "gone-meanwhile", 3, 3)
    assert dirs(cluster[2], "gone-meanwhile") == {f"gone-meanwhile-{i}" for i in range(3)}
    assert cluster[2].stop() == 0
    admin = AdminClient({"bootstrap.servers": bootstrap(cluster)})
    futures = admin.delete_topics(["gone-meanwhile"], operation_timeout=15)
    futures["gone-meanwhile"].result(timeout=30)
    for broker in cluster[:2]:
        wait_until(lambda b=broker: not dirs(b, "gone-meanwhile"), what="deleted on survivors")
    assert dirs(cluster[2], "gone-meanwhile")  # still there: it was down
    cluster[2].start()  # startup drops the logs of partitions no longer assigned to it
    assert not dirs(cluster[2], "gone-meanwhile")
