"""Replication on three brokers and a real ZooKeeper: RF=3, min.insync.replicas=2.

Followers copy the leader's log batch for batch (checked on disk, offsets, leader
epoch and CRC), the high watermark waits for every ISR member, a stalled follower
(SIGSTOP) leaves the ISR after ``replica.lag.time.max.ms`` and comes back once it
has caught up, acks=all answers NOT_ENOUGH_REPLICAS when the ISR is smaller than
min.insync.replicas, and a fetch with a stale leader epoch is fenced.

The cluster helpers here (:class:`ReplicatedCluster` and friends) are shared with
``test_replication_failover.py``.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from broker_process import BrokerProcess, fetch_session_gauges, paused  # noqa: E402
from cluster_fixtures import (  # noqa: E402
    fetch,
    metadata,
    produce,
    start_cluster,
    wait_leaders_serve,
)
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from kazoo.exceptions import NoNodeError  # noqa: E402
from replication_checker import (  # noqa: E402
    BatchId,
    StoredRecord,
    check_delivery,
    log_batches,
    prefix_divergence,
    record_key,
    record_value,
)
from waiting import wait_until  # noqa: E402
from zookeeper import (  # noqa: E402
    kazoo_clients,  # noqa: F401 - fixture
    zk_connect,  # noqa: F401 - fixture
    zookeeper,  # noqa: F401 - fixture
)

from pystream.cluster.zookeeper import paths as zk_paths  # noqa: E402
from pystream.errors import (  # noqa: E402
    FencedLeaderEpochError,
    NotLeaderOrFollowerError,
    UnknownLeaderEpochError,
)
from pystream.protocol.messages.describe_log_dirs import DescribeLogDirsRequest  # noqa: E402
from pystream.protocol.messages.list_offsets import ListOffsetsRequest  # noqa: E402

T = TypeVar("T")
NONE = 0
NOT_LEADER_OR_FOLLOWER = NotLeaderOrFollowerError.error_code
FENCED_LEADER_EPOCH = FencedLeaderEpochError.error_code
UNKNOWN_LEADER_EPOCH = UnknownLeaderEpochError.error_code
LATEST = -1
BROKER_IDS = (0, 1, 2)
# Small, so that ISR changes happen within a test; not so small that a follower on a
# busy two-core machine drops out of the ISR while it keeps up.
REPLICA_LAG_MS = 3000
MIN_INSYNC_REPLICAS = 2
REPLICATION_OVERRIDES = {
    "replica.lag.time.max.ms": str(REPLICA_LAG_MS),
    "min.insync.replicas": str(MIN_INSYNC_REPLICAS),
    "default.replication.factor": "3",
    # Preferred-leader rebalancing would move leaders behind the tests' backs.
    "auto.leader.rebalance.enable": "false",
}


# --- the cluster -----------------------------------------------------------------------------
class ReplicatedCluster:
    """Three brokers (ids 0-2) of one cluster, and a ZooKeeper client reading its state.

    ZooKeeper is read for the truth of leaders and ISRs (what the controller and the
    leaders wrote); Metadata answers are what clients see.
    """

    def __init__(self, brokers: list[BrokerProcess], zk: Any) -> None:
        self.brokers = {int(b.overrides["broker.id"]): b for b in brokers}
        self.zk = zk

    # --- processes
    def live(self) -> dict[int, BrokerProcess]:
        return {i: b for i, b in self.brokers.items() if b.process is not None}

    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.live().values())

    def kill(self, broker_id: int) -> None:
        """SIGKILL: no shutdown code runs, the ZooKeeper session expires on its own."""
        self.brokers[broker_id].kill()

    def restart(self, broker_id: int) -> None:
        self.brokers[broker_id].start()

    # --- ZooKeeper
    def state(self, topic: str, partition: int) -> zk_paths.LeaderAndIsr:
        data, _ = self.zk.get(zk_paths.partition_state_path(topic, partition))
        return zk_paths.LeaderAndIsr.from_bytes(data)

    def controller(self) -> int | None:
        try:
            data, _ = self.zk.get(zk_paths.CONTROLLER)
        except NoNodeError:
            return None  # between two controllers
        return zk_paths.decode_controller(data)

    def wait_controller(self, other_than: int | None = None, timeout: float = 60) -> int:
        """Until a broker other than ``other_than`` is the controller; its id."""

        def elected() -> tuple[int] | None:  # a tuple: broker id 0 is falsy
            controller = self.controller()
            return None if controller in (None, other_than) else (controller,)

        return wait_until(elected, timeout=timeout, what=f"a controller other than {other_than}")[0]

    def wait_isr(
        self, topic: str, partitions: Iterable[int], isr: set[int], timeout: float = 60
    ) -> None:
        """Until the ISR of every partition is ``isr`` in ZooKeeper and in the Metadata of
        every live broker."""
        partitions = list(partitions)

        def reached() -> bool:
            if any(set(self.state(topic, p).isr) != isr for p in partitions):
                return False
            for broker in self.live().values():
                answer = metadata(broker, [topic]).topics[0]
                seen = {p.partition_index: set(p.isr_nodes) for p in answer.partitions}
                if any(seen.get(p) != isr for p in partitions):
                    return False
            return True

        wait_described(
            reached,
            timeout,
            lambda: (
                f"ISR {sorted(isr)} for {topic}: "
                + ", ".join(f"{p}: {self.state(topic, p)}" for p in partitions)
            ),
        )

    def wait_new_leader(
        self, topic: str, partition: int, old: zk_paths.LeaderAndIsr, timeout: float = 60
    ) -> zk_paths.LeaderAndIsr:
        """Until another live broker leads the partition with a higher leader epoch, and
        that broker answers as its leader."""

        def elected() -> zk_paths.LeaderAndIsr | None:
            state = self.state(topic, partition)
            if (
                state.leader in (old.leader, zk_paths.NO_LEADER)
                or state.leader_epoch <= old.leader_epoch
            ):
                return None
            broker = self.live().get(state.leader)
            if broker is None:
                return None
            answer = metadata(broker, [topic]).topics[0].partitions
            led = {p.partition_index: (p.leader_id, p.leader_epoch) for p in answer}
            return state if led.get(partition) == (state.leader, state.leader_epoch) else None

        return wait_until(
            elected, timeout=timeout, what=f"a new leader of {topic}-{partition} after {old}"
        )

    # --- topics
    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        configs: dict[str, str] | None = None,
        assignment: list[list[int]] | None = None,
    ) -> None:
        """Create an RF=3 topic (or with ``assignment``: replicas per partition, preferred
        leader first) and wait until every broker sees its leaders and a full ISR."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap()})
        if assignment is None:
            new = NewTopic(name, partitions, 3, config=configs or {})
        else:
            partitions = len(assignment)
            # confluent-kafka 2.x wants the count spelled out next to the assignment.
            new = NewTopic(name, partitions, replica_assignment=assignment, config=configs or {})
        admin.create_topics([new], operation_timeout=15)[name].result(timeout=30)
        self.wait_isr(name, range(partitions), set(BROKER_IDS))
        wait_leaders_serve(list(self.live().values()), name)

    # --- data
    def replica_logs(self, topic: str, partition: int) -> dict[int, list[BatchId]]:
        """Each live replica's batches of the partition, read from its segment files."""
        return {
            i: log_batches(b.log_dir / f"{topic}-{partition}", verify_crc=False)
            for i, b in self.live().items()
        }

    def wait_converged(
        self, topic: str, partitions: Iterable[int], timeout: float = 60
    ) -> dict[int, list[BatchId]]:
        """Until every live replica's log equals the leader's and the leader's high
        watermark is its log end; returns the leader's batches per partition."""
        partitions = list(partitions)
        found: dict[int, list[BatchId]] = {}
        problem = ["not checked yet"]

        def converged() -> bool:
            for p in partitions:
                leader = self.state(topic, p).leader
                try:
                    logs = self.replica_logs(topic, p)
                except OSError as exc:  # a segment truncated or deleted while read
                    problem[0] = f"{topic}-{p}: {exc}"
                    return False
                if leader not in logs:
                    problem[0] = f"{topic}-{p}: leader {leader} not live"
                    return False
                for broker_id, batches in logs.items():
                    if batches != logs[leader]:
                        where = prefix_divergence(logs[leader], batches) or (
                            f"{len(logs[leader]) - len(batches)} batches behind"
                        )
                        problem[0] = f"{topic}-{p} on broker {broker_id} (leader {leader}): {where}"
                        return False
                end = logs[leader][-1].last_offset + 1 if logs[leader] else 0
                high_watermark = list_offset(self.brokers[leader], topic, p)
                if high_watermark != (NONE, end):
                    problem[0] = f"{topic}-{p}: high watermark {high_watermark}, log end {end}"
                    return False
                found[p] = logs[leader]
            return True

        wait_described(converged, timeout, lambda: f"converged replica logs; {problem[0]}")
        return found


def wait_described(condition: Callable[[], T], timeout: float, describe: Callable[[], str]) -> T:
    """``wait_until``, failing with ``describe()`` of the state at the time it gives up."""
    try:
        return wait_until(condition, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"timed out after {timeout}s waiting for {describe()}") from None


@pytest.fixture
def replicated(
    tmp_path: Path,
    zk_connect: str,  # noqa: F811
    kazoo_clients: Any,  # noqa: F811
) -> Iterator[ReplicatedCluster]:
    """Three running brokers with RF=3 defaults, min.insync.replicas=2 and a short
    replica.lag.time.max.ms; every broker is SIGCONTed and killed afterwards."""
    brokers = start_cluster(tmp_path, zk_connect, REPLICATION_OVERRIDES)
    try:
        yield ReplicatedCluster(brokers, kazoo_clients(zk_connect))
    finally:
        for broker in brokers:
            if broker.process is not None:
                os.kill(broker.process.pid, signal.SIGCONT)  # a paused broker cannot die
            broker.close()


# --- raw wire --------------------------------------------------------------------------------
def list_offset(
    broker: BrokerProcess, topic: str, partition: int, isolation_level: int = 0
) -> tuple[int, int]:
    """(error code, latest offset) from ``broker``: for a leader the high watermark, or with
    ``isolation_level=1`` (read_committed) the last stable offset."""
    request = ListOffsetsRequest(
        replica_id=-1,
        isolation_level=isolation_level,
        topics=[
            ListOffsetsRequest.ListOffsetsTopic(
                name=topic,
                partitions=[
                    ListOffsetsRequest.ListOffsetsPartition(
                        partition_index=partition, timestamp=LATEST
                    )
                ],
            )
        ],
    )
    with broker.wire() as wire:
        answer = wire.request(2, 7, request).topics[0].partitions[0]
    return answer.error_code, answer.offset


def fetch_with_epoch(
    broker: BrokerProcess, topic: str, partition: int, current_leader_epoch: int
) -> Any:
    with broker.wire() as wire:
        return fetch(wire, topic, partition, current_leader_epoch)


def partition_sizes(broker: BrokerProcess, topic: str) -> dict[int, int]:
    """DescribeLogDirs: the size in bytes of each of ``topic``'s partitions on ``broker``."""
    request = DescribeLogDirsRequest(
        topics=[DescribeLogDirsRequest.DescribableLogDirTopic(topic=topic, partitions=[0, 1, 2])]
    )
    with broker.wire() as wire:
        answer = wire.request(35, 1, request)
    return {
        p.partition_index: p.partition_size
        for result in answer.results
        for t in result.topics
        if t.name == topic
        for p in t.partitions
    }


# --- clients ---------------------------------------------------------------------------------
class Deliveries:
    """A delivery-report callback that keeps what was acknowledged and what failed."""

    def __init__(self) -> None:
        self.acknowledged: list[StoredRecord] = []
        self.failed: list[tuple[bytes | None, KafkaError]] = []

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            self.acknowledged.append(
                StoredRecord(msg.partition(), msg.offset(), msg.key(), msg.value())
            )
        else:
            self.failed.append((msg.key(), err))


def acks_all_producer(bootstrap: str, **overrides: Any) -> Producer:
    """An idempotent acks=all producer that rides out leader changes (long timeouts,
    quick metadata refresh)."""
    config = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 120_000,
        "retry.backoff.ms": 50,
        "retry.backoff.max.ms": 500,
        "topic.metadata.refresh.fast.interval.ms": 100,
        "socket.timeout.ms": 10_000,
    }
    return Producer({**config, **overrides})


def produce_sequenced(
    producer: Producer,
    deliveries: Deliveries,
    topic: str,
    sequences: Iterable[int],
    partitions: int = 1,
    value_size: int = 0,
) -> None:
    """Queue one record per sequence number, on partition ``sequence % partitions``."""
    for sequence in sequences:
        for _ in range(1000):  # bounded: the local queue drains as deliveries are polled
            try:
                producer.produce(
                    topic,
                    key=record_key(sequence),
                    value=record_value(sequence, value_size),
                    partition=sequence % partitions,
                    on_delivery=deliveries,
                )
                break
            except BufferError:
                producer.poll(0.1)
        else:
            raise AssertionError("the producer's queue stayed full")
        producer.poll(0)


def consume_all(
    bootstrap: str, topic: str, partitions: int, timeout: float = 60
) -> list[StoredRecord]:
    """Every record of ``topic`` below each partition's high watermark, read with a
    real consumer from offset 0 (no group membership, nothing committed)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "socket.timeout.ms": 10_000,
            # The end may be a transaction marker, which is never delivered: EOF tells.
            "enable.partition.eof": True,
        }
    )
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1]
            for p in range(partitions)
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        consumed: list[StoredRecord] = []
        positions = dict.fromkeys(range(partitions), 0)

        def done() -> bool:
            for message in consumer.consume(1000, 0.2):
                error = message.error()
                if error is None:
                    consumed.append(
                        StoredRecord(
                            message.partition(), message.offset(), message.key(), message.value()
                        )
                    )
                    positions[message.partition()] = message.offset() + 1
                elif error.code() == KafkaError._PARTITION_EOF:
                    positions[message.partition()] = message.offset()
            return all(positions[p] >= ends[p] for p in positions)

        wait_until(done, timeout=timeout, what=f"{topic} consumed up to {ends}", interval=0)
        return consumed
    finally:
        consumer.close()


def assert_delivered(deliveries: Deliveries, consumed: list[StoredRecord], expected: int) -> None:
    """Every one of ``expected`` sends acknowledged, and read back exactly as acknowledged."""
    assert not deliveries.failed, f"{len(deliveries.failed)} failed, e.g. {deliveries.failed[:3]}"
    assert len(deliveries.acknowledged) == expected
    report = check_delivery(deliveries.acknowledged, consumed)
    assert report.ok, report.summary()
    assert not report.unacknowledged, report.summary()
    assert len(consumed) == expected


# --- tests -----------------------------------------------------------------------------------
def test_metadata_shows_replicas_isr_and_spread_leaders(replicated: ReplicatedCluster) -> None:
    replicated.create_topic("spread", 6)
    for broker in replicated.brokers.values():
        partitions = metadata(broker, ["spread"]).topics[0].partitions
        assert len(partitions) == 6
        for p in partitions:
            assert sorted(p.replica_nodes) == [0, 1, 2] and sorted(p.isr_nodes) == [0, 1, 2]
            assert p.leader_id == p.replica_nodes[0] and p.leader_epoch >= 0
            assert replicated.state("spread", p.partition_index).leader == p.leader_id
        assert sorted(p.leader_id for p in partitions) == [0, 0, 1, 1, 2, 2]
    # Every replica hosts the partition, and a follower refuses consumers.
    for p in range(6):
        leader = replicated.state("spread", p).leader
        for broker_id, broker in replicated.brokers.items():
            assert (broker.log_dir / f"spread-{p}").is_dir()
            with broker.wire() as wire:
                answer = fetch(wire, "spread", p)
            assert answer.error_code == (NONE if broker_id == leader else NOT_LEADER_OR_FOLLOWER)


def test_acks_all_records_are_readable_and_follower_logs_converge(
    replicated: ReplicatedCluster,
) -> None:
    replicated.create_topic("orders", 3)
    deliveries = Deliveries()
    producer = acks_all_producer(replicated.brokers[0].bootstrap)
    produce_sequenced(producer, deliveries, "orders", range(3000), partitions=3, value_size=100)
    assert producer.flush(60) == 0
    consumed = consume_all(replicated.bootstrap(), "orders", 3)
    assert_delivered(deliveries, consumed, 3000)

    # Followers hold exactly the leader's batches (offsets, leader epoch, CRC) ...
    logs = replicated.wait_converged("orders", range(3))
    for p, batches in logs.items():
        assert batches[-1].last_offset + 1 == 1000  # partition = sequence % 3
        for broker in replicated.brokers.values():  # quiet now: every CRC must verify
            assert log_batches(broker.log_dir / f"orders-{p}", verify_crc=True) == batches
    # ... and are the same size wherever DescribeLogDirs asks.
    sizes = [partition_sizes(b, "orders") for b in replicated.brokers.values()]
    assert sizes[0] == sizes[1] == sizes[2] and len(sizes[0]) == 3
    # The followers replicated through incremental fetch sessions (KIP-227): each broker
    # leads a partition, so each holds a session per follower.
    for broker in replicated.brokers.values():
        assert fetch_session_gauges(broker)[0] >= 2

    # Followers stay in the ISR, both while records flow and while idle, for longer than
    # replica.lag.time.max.ms: an idle follower that fetches is caught up.
    more = iter(range(3000, 1_000_000))
    for busy in (True, False):
        window_end = time.monotonic() + REPLICA_LAG_MS * 1.5 / 1000
        samples = 0
        while time.monotonic() < window_end and samples < 1000:
            if busy:
                produce_sequenced(
                    producer, deliveries, "orders", (next(more) for _ in range(30)), 3
                )
            isr = [replicated.state("orders", p).isr for p in range(3)]
            assert all(sorted(i) == [0, 1, 2] for i in isr), (busy, isr)
            samples += 1
            producer.poll(0.1)
        assert producer.flush(60) == 0
    assert not deliveries.failed


def test_high_watermark_waits_for_the_isr(replicated: ReplicatedCluster) -> None:
    controller = replicated.wait_controller()
    # The stalled follower is neither the leader nor the controller (a paused
    # controller would stall every election); min.insync.replicas 2 (the broker
    # default) on one topic, 3 on the other.
    victim = next(i for i in BROKER_IDS if i != controller)
    leader = next(i for i in BROKER_IDS if i != victim)
    other = next(i for i in BROKER_IDS if i not in (victim, leader))
    assignment = [[leader, other, victim]]
    replicated.create_topic("min2", assignment=assignment)
    replicated.create_topic("min3", assignment=assignment, configs={"min.insync.replicas": "3"})
    deliveries = Deliveries()
    # Bootstrap from the brokers that stay up: a paused broker would answer nothing.
    bootstrap = ",".join(replicated.brokers[i].bootstrap for i in (leader, other))
    producer = acks_all_producer(bootstrap)
    produce_sequenced(producer, deliveries, "min2", range(10))
    produce_sequenced(producer, deliveries, "min3", range(10, 20))
    assert producer.flush(60) == 0 and len(deliveries.acknowledged) == 20
    replicated.wait_converged("min2", [0])
    replicated.wait_converged("min3", [0])
    strict = acks_all_producer(bootstrap, **{"enable.idempotence": False, "retries": 0})

    with paused(replicated.brokers[victim]):
        with replicated.brokers[leader].wire() as wire:
            appended = produce(wire, "min2", 0, record_value(100))
        assert appended.error_code == NONE and appended.base_offset == 10
        # While the paused follower is in the ISR (ZooKeeper, read after the high
        # watermark), the high watermark stays below the record it lacks.
        checked = 0
        for _ in range(20):
            high_watermark = list_offset(replicated.brokers[leader], "min2", 0)
            if victim not in replicated.state("min2", 0).isr:
                break
            assert high_watermark == (NONE, 10)
            checked += 1
            time.sleep(0.05)  # sampling a window, not waiting for a condition
        assert checked, "the ISR shrank before the first sample (the machine stalled for 3 s?)"
        # It drops out of the ISR; then the record is committed without it ...
        wait_until(
            lambda: all(victim not in replicated.state(t, 0).isr for t in ("min2", "min3")),
            timeout=30,
            what=f"broker {victim} out of the ISR",
        )
        wait_until(
            lambda: list_offset(replicated.brokers[leader], "min2", 0) == (NONE, 11),
            what="the high watermark past the record",
        )
        # ... acks=all still succeeds with two in sync, and fails with three required.
        produce_sequenced(strict, deliveries, "min2", [20])
        produce_sequenced(strict, deliveries, "min3", [21])
        assert strict.flush(60) == 0
        assert [StoredRecord(0, 11, record_key(20), record_value(20))] == [
            r for r in deliveries.acknowledged if r.key == record_key(20)
        ]
        assert [(k, e.code()) for k, e in deliveries.failed] == [
            (record_key(21), KafkaError.NOT_ENOUGH_REPLICAS)
        ], deliveries.failed
        assert list_offset(replicated.brokers[leader], "min3", 0) == (NONE, 10)

    # Back: it catches up, rejoins the ISR, and acks=all with three in sync works again.
    replicated.wait_isr("min2", [0], set(BROKER_IDS))
    replicated.wait_isr("min3", [0], set(BROKER_IDS))
    replicated.wait_converged("min2", [0])
    deliveries.failed.clear()
    produce_sequenced(producer, deliveries, "min3", [22])
    assert producer.flush(60) == 0 and not deliveries.failed
    logs = replicated.wait_converged("min3", [0])
    assert logs[0][-1].last_offset == 10


def test_fetch_with_a_stale_leader_epoch_is_fenced(replicated: ReplicatedCluster) -> None:
    replicated.create_topic("fenced", 1)
    old = replicated.state("fenced", 0)
    assert (
        fetch_with_epoch(replicated.brokers[old.leader], "fenced", 0, old.leader_epoch).error_code
        == NONE
    )
    replicated.kill(old.leader)
    new = replicated.wait_new_leader("fenced", 0, old)
    leader = replicated.brokers[new.leader]
    assert fetch_with_epoch(leader, "fenced", 0, new.leader_epoch).error_code == NONE
    assert fetch_with_epoch(leader, "fenced", 0, old.leader_epoch).error_code == FENCED_LEADER_EPOCH
    assert (
        fetch_with_epoch(leader, "fenced", 0, new.leader_epoch + 1).error_code
        == UNKNOWN_LEADER_EPOCH
    )
    assert fetch_with_epoch(leader, "fenced", 0, -1).error_code == NONE  # -1: not checked
    # The survivors are the ISR now, and clients still write with acks=all.
    replicated.wait_isr("fenced", [0], set(BROKER_IDS) - {old.leader})
    deliveries = Deliveries()
    producer = acks_all_producer(replicated.bootstrap())
    produce_sequenced(producer, deliveries, "fenced", range(5))
    assert producer.flush(60) == 0
    assert [r.offset for r in deliveries.acknowledged] == [0, 1, 2, 3, 4]
