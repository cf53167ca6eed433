"""Transactions across three brokers: the coordinator writes markers to other brokers' partitions.

A transaction's partitions are led by every broker of the cluster while its
transaction coordinator (the leader of the id's ``__transaction_state``
partition) is just one of them: the coordinator sends WriteTxnMarkers to the
other leaders and completes the transaction only once they have written the
markers.  A read_committed consumer then sees exactly the committed records (a
marker missing anywhere would hold its partition's last stable offset back), a
read_uncommitted one sees the aborted ones too, and offsets sent to a
transaction (consume-transform-produce) are committed with its output, on the
group coordinator broker, or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from broker_process import BrokerProcess  # noqa: E402
from cluster_fixtures import (  # noqa: E402
    KEY_TYPE_GROUP,
    KEY_TYPE_TRANSACTION,
    bootstrap,
    by_id,
    coordinator_id,
    create_topic,
    leaders,
    start_cluster,
)
from confluent_kafka import (  # noqa: E402
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient  # noqa: E402
from test_transactions import add_partitions, end_txn, init_producer_id_of  # noqa: E402
from waiting import wait_until  # noqa: E402
from zookeeper import (  # noqa: E402
    zk_connect,  # noqa: F401 - fixture
    zookeeper,  # noqa: F401 - fixture
)

from pystream.protocol.messages.describe_transactions import (  # noqa: E402
    DescribeTransactionsRequest,
)

TXN_OVERRIDES = {
    # Three partitions (one per broker) so that the coordinator is one broker among three.
    "transaction.state.log.num.partitions": "3",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
}


@pytest.fixture
def txn_cluster(tmp_path: Path, zk_connect: str) -> Iterator[list[BrokerProcess]]:  # noqa: F811
    brokers = start_cluster(tmp_path, zk_connect, TXN_OVERRIDES)
    try:
        yield brokers
    finally:
        for broker in brokers:
            broker.close()


def transaction_state(broker: BrokerProcess, transactional_id: str) -> str:
    """The id's state as its coordinator ``broker`` describes it (DescribeTransactions)."""
    with broker.wire() as wire:
        response = wire.request(
            65, 0, DescribeTransactionsRequest(transactional_ids=[transactional_id])
        )
    state = response.transaction_states[0]
    assert state.error_code == 0, state
    return state.transaction_state


def one_partition_per_broker(brokers: list[BrokerProcess], topic: str) -> dict[int, int]:
    """Leader id -> a partition of ``topic`` it leads (every broker leads one)."""
    chosen: dict[int, int] = {}
    for partition, leader in sorted(leaders(brokers[0], topic).items()):
        chosen.setdefault(leader, partition)
    assert sorted(chosen) == [0, 1, 2], f"{topic} is not led by every broker: {chosen}"
    return chosen


def transactional_producer(brokers: list[BrokerProcess], transactional_id: str) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap(brokers),
            "transactional.id": transactional_id,
            "transaction.timeout.ms": 60_000,
        }
    )
    producer.init_transactions(60)
    return producer


def read_values(
    brokers: list[BrokerProcess],
    topic: str,
    partitions: list[int],
    isolation: str,
    until: set[bytes],
) -> list[bytes]:
    """Every value a consumer with ``isolation`` reads from the start of ``partitions``, read
    until all of ``until`` have arrived (and the partitions' ends are reached)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap(brokers),
            "group.id": f"reader-{isolation}-{topic}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    values: list[bytes] = []
    at_end: set[int] = set()

    def done() -> bool:
        message = consumer.poll(0.5)
        if message is not None:
            if message.error() is None:
                values.append(message.value())
                at_end.discard(message.partition())
            elif message.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(message.partition())
            else:
                raise AssertionError(f"consumer error: {message.error()}")
        return until <= set(values) and at_end >= set(partitions)

    try:
        wait_until(done, timeout=90, what=f"{sorted(until)} read ({isolation})", interval=0)
    finally:
        consumer.close()
    return values


def test_commit_and_abort_across_brokers(txn_cluster: list[BrokerProcess]) -> None:
    brokers = txn_cluster
    create_topic(brokers, "txn-out", 6, 1)
    by_leader = one_partition_per_broker(brokers, "txn-out")
    transactional_id = "txn-across-brokers"
    coordinator = coordinator_id(brokers[0], transactional_id, KEY_TYPE_TRANSACTION)
    # Two of the three partitions are led by brokers other than the coordinator.
    assert sum(leader != coordinator for leader in by_leader) == 2
    producer = transactional_producer(brokers, transactional_id)

    def run(prefix: str, commit: bool) -> set[bytes]:
        producer.begin_transaction()
        sent = set()
        for leader, partition in sorted(by_leader.items()):
            value = f"{prefix}-{leader}".encode()
            producer.produce("txn-out", value=value, partition=partition)
            sent.add(value)
        # Delivered before the outcome: an abort would otherwise drop what is still queued.
        assert producer.flush(30) == 0
        if commit:
            producer.commit_transaction(60)
        else:
            producer.abort_transaction(60)
        return sent

    committed = run("committed", True)
    aborted = run("aborted", False)
    # A later committed transaction: read_committed reaches it only past the aborted one's
    # markers on every partition (the last stable offset waits for them).
    later = run("later", True)
    partitions = sorted(by_leader.values())

    read_committed = read_values(brokers, "txn-out", partitions, "read_committed", later)
    assert sorted(read_committed) == sorted(committed | later)

    read_uncommitted = read_values(brokers, "txn-out", partitions, "read_uncommitted", later)
    assert sorted(read_uncommitted) == sorted(committed | aborted | later)
    producer.flush(10)


def group_led_elsewhere(brokers: list[BrokerProcess], avoid: int) -> tuple[str, int]:
    """A group id whose coordinator is not broker ``avoid``, and that coordinator."""
    for i in range(50):
        group = f"ctp-group-{i}"
        found = coordinator_id(brokers[0], group, KEY_TYPE_GROUP)
        if found != avoid:
            return group, found
    raise AssertionError(f"every group tried is coordinated by broker {avoid}")


def test_offsets_commit_atomically_with_the_output(txn_cluster: list[BrokerProcess]) -> None:
    brokers = txn_cluster
    create_topic(brokers, "ctp-in", 3, 1)
    create_topic(brokers, "ctp-out", 3, 1)
    transactional_id = "ctp-transformer"
    txn_coordinator = coordinator_id(brokers[0], transactional_id, KEY_TYPE_TRANSACTION)
    group, group_coordinator = group_led_elsewhere(brokers, txn_coordinator)

    source = Producer({"bootstrap.servers": bootstrap(brokers)})
    for i in range(30):
        source.produce("ctp-in", value=f"in-{i}".encode(), partition=i % 3)
    assert source.flush(30) == 0
    producer = transactional_producer(brokers, transactional_id)

    def transform(count: int, tag: str, commit: bool) -> None:
        """Consume ``count`` records from the committed offsets on, write them transformed
        and send the offsets to the same transaction; commit or abort it."""
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap(brokers),
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
        consumer.subscribe(["ctp-in"])
        taken = []

        def consumed() -> bool:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                taken.append(message)
            return len(taken) >= count

        try:
            wait_until(consumed, timeout=90, what=f"{count} input records", interval=0)
            producer.begin_transaction()
            for message in taken:
                value = message.value().decode().replace("in-", "out-") + f"-{tag}"
                producer.produce("ctp-out", value=value.encode(), partition=message.partition())
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 60
            )
            assert producer.flush(30) == 0  # the aborted output reaches the brokers too
            if commit:
                producer.commit_transaction(60)
            else:
                producer.abort_transaction(60)
        finally:
            consumer.close()

    admin = AdminClient({"bootstrap.servers": bootstrap(brokers)})

    def committed_total() -> int:
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition("ctp-in", p) for p in range(3)]
        )
        result = admin.list_consumer_group_offsets([request])[group].result(30)
        return sum(max(tp.offset, 0) for tp in result.topic_partitions)

    transform(30, "first", commit=True)
    assert wait_until(lambda: committed_total() == 30, what="30 offsets committed")

    for i in range(30, 40):
        source.produce("ctp-in", value=f"in-{i}".encode(), partition=i % 3)
    assert source.flush(30) == 0
    transform(10, "aborted", commit=False)
    # The aborted transaction's offsets are dropped: the next consumer of the group starts at
    # the committed 30 and processes the 10 again.
    transform(10, "retried", commit=True)
    assert wait_until(lambda: committed_total() == 40, what="40 offsets committed")

    out = read_values(
        brokers,
        "ctp-out",
        [0, 1, 2],
        "read_committed",
        {f"out-{i}-retried".encode() for i in range(30, 40)},
    )
    expected = {f"out-{i}-first" for i in range(30)} | {f"out-{i}-retried" for i in range(30, 40)}
    assert sorted(v.decode() for v in out) == sorted(expected)
    assert group_coordinator != txn_coordinator
    producer.flush(10)


def test_markers_wait_for_a_leader_that_comes_back(txn_cluster: list[BrokerProcess]) -> None:
    """A partition leader SIGKILLed before the commit: the coordinator retries its marker
    (the broker is unreachable, then the partition has no leader) and delivers it once the
    broker is back on a new port; only then does the transaction complete."""
    brokers = txn_cluster
    create_topic(brokers, "txn-retry", 6, 1)
    by_leader = one_partition_per_broker(brokers, "txn-retry")
    transactional_id = "txn-retry"
    coordinator = coordinator_id(brokers[0], transactional_id, KEY_TYPE_TRANSACTION)
    victim_id = next(b for b in sorted(by_leader) if b != coordinator)
    victim = by_id(brokers)[victim_id]
    producer = transactional_producer(brokers, transactional_id)
    producer.begin_transaction()
    values = {f"kept-{leader}".encode() for leader in by_leader}
    for leader, partition in sorted(by_leader.items()):
        producer.produce("txn-retry", value=f"kept-{leader}".encode(), partition=partition)
    assert producer.flush(30) == 0
    victim.kill()
    # The decision is logged on the coordinator: the commit returns though a marker is pending.
    producer.commit_transaction(60)
    # Decided (PrepareCommit is logged) but not complete: the victim's marker is pending.
    survivor = by_id(brokers)[coordinator]
    assert transaction_state(survivor, transactional_id) == "PrepareCommit"
    victim.start()  # on a new port: the coordinator's channel reads the endpoint again
    wait_until(
        lambda: transaction_state(survivor, transactional_id) == "CompleteCommit",
        timeout=90,
        what="the transaction completed once the leader is back",
    )
    read = read_values(brokers, "txn-retry", sorted(by_leader.values()), "read_committed", values)
    assert sorted(read) == sorted(values)
    producer.flush(10)


@pytest.fixture
def replicated_txn_cluster(
    tmp_path: Path,
    zk_connect: str,  # noqa: F811
) -> Iterator[list[BrokerProcess]]:
    overrides = {
        **TXN_OVERRIDES,
        "transaction.state.log.replication.factor": "3",
        # Preferred-leader rebalancing would move the coordinator behind the test's back.
        "auto.leader.rebalance.enable": "false",
    }
    brokers = start_cluster(tmp_path, zk_connect, overrides)
    try:
        yield brokers
    finally:
        for broker in brokers:
            broker.close()


def test_the_coordinator_moves_when_its_broker_dies(
    replicated_txn_cluster: list[BrokerProcess],
) -> None:
    """SIGKILL of the transaction coordinator with a transaction open: another broker leads
    the id's ``__transaction_state`` partition, loads it from its replica, and a new instance
    of the producer is served there — the open transaction is aborted (fenced), the
    committed one stays committed.  And a producer whose epoch bump was answered just before
    the crash, retrying it at the new coordinator, keeps its producer id and epoch."""
    brokers = replicated_txn_cluster
    create_topic(brokers, "txn-failover", 3, 3)
    transactional_id = "txn-failover"
    coordinator = coordinator_id(brokers[0], transactional_id, KEY_TYPE_TRANSACTION)
    # Another transactional id on the same coordinator, for the raw-wire retry.
    retry_id = next(
        t
        for t in (f"retry-{i}" for i in range(100))
        if coordinator_id(brokers[0], t, KEY_TYPE_TRANSACTION) == coordinator
    )
    with by_id(brokers)[coordinator].wire() as wire:
        first = init_producer_id_of(wire, retry_id, -1, -1)
        pid, epoch = first.producer_id, first.producer_epoch
        # KIP-360: the producer bumps its own epoch.
        bumped = init_producer_id_of(wire, retry_id, pid, epoch)
        assert (bumped.error_code, bumped.producer_epoch) == (0, epoch + 1)
    producer = transactional_producer(brokers, transactional_id)
    producer.begin_transaction()
    for p in range(3):
        producer.produce("txn-failover", value=f"first-{p}".encode(), partition=p)
    producer.commit_transaction(60)
    producer.begin_transaction()
    for p in range(3):
        producer.produce("txn-failover", value=f"open-{p}".encode(), partition=p)
    assert producer.flush(30) == 0

    by_id(brokers)[coordinator].kill()
    survivors = [b for b in brokers if b.process is not None]

    def new_coordinator(key: str) -> BrokerProcess:
        """``key``'s coordinator, once another broker than the dead one."""

        def moved() -> int | None:
            found = coordinator_id(survivors[0], key, KEY_TYPE_TRANSACTION)
            return found + 1 if found != coordinator else None

        return by_id(brokers)[wait_until(moved, 60, what=f"another coordinator of {key}") - 1]

    new_coordinator(transactional_id)
    # The bump's answer was "lost": the producer retries it where the id lives now.
    with new_coordinator(retry_id).wire() as wire:
        retried = init_producer_id_of(wire, retry_id, pid, epoch)
        assert (retried.error_code, retried.producer_id, retried.producer_epoch) == (
            0,
            pid,
            epoch + 1,
        )
        assert add_partitions(wire, retry_id, pid, epoch + 1, "txn-failover", 0) == {
            ("txn-failover", 0): 0
        }
        assert end_txn(wire, retry_id, pid, epoch + 1, commit=True) == 0

    successor = transactional_producer(survivors, transactional_id)  # fences the old one
    successor.begin_transaction()
    for p in range(3):
        successor.produce("txn-failover", value=f"second-{p}".encode(), partition=p)
    successor.commit_transaction(60)
    second = {f"second-{p}".encode() for p in range(3)}
    read = read_values(survivors, "txn-failover", [0, 1, 2], "read_committed", second)
    assert sorted(read) == sorted({f"first-{p}".encode() for p in range(3)} | second)
