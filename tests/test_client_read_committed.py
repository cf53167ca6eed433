"""pystream's consumer against transactions written by librdkafka (confluent-kafka), and
``Consumer.group_metadata()`` against what the broker knows of the member.

One broker for the module.  ``history`` writes, across 3 partitions, non-transactional
records interleaved with committed and aborted transactions of two transactional
producers (one compressed, small batches so a transaction spans many batches), some of
them open at the same time; each test reads it back with another consumer (sync, aio,
the CLI) and compares with what was written, in offset order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from broker_process import BrokerProcess
from cli_helpers import run
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import Producer as CKProducer
from confluent_kafka import TopicPartition as CKTopicPartition
from confluent_kafka.admin import AdminClient as CKAdmin
from confluent_kafka.admin import NewTopic as CKNewTopic
from waiting import wait_until

import pystream
from pystream import aio
from pystream._core import records as R
from pystream.client.types import ConsumerGroupMetadata, TopicPartition
from pystream.errors import InvalidGroupIdError
from pystream.protocol.messages.heartbeat import HeartbeatRequest

PARTITIONS = 3
TP = TopicPartition
BROKER_SETTINGS = {
    "num.partitions": str(PARTITIONS),
    "transaction.state.log.num.partitions": "4",
    "offsets.topic.num.partitions": "4",
    "group.initial.rebalance.delay.ms": "0",
    "log.cleaner.backoff.ms": "50",  # compacted topics of the module are cleaned at once
}
ILLEGAL_GENERATION = 22


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("read-committed"), BROKER_SETTINGS).start()
    try:
        yield process
    finally:
        process.close()


def txn_producer(bootstrap: str, txn_id: str, **extra: Any) -> CKProducer:
    producer = CKProducer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": txn_id,
            "linger.ms": 0,
            # Small batches: one transaction is many batches, so a fetch can end inside it.
            "batch.num.messages": 4,
            **extra,
        }
    )
    producer.init_transactions(30)
    return producer


@dataclass
class History:
    """What was written: per partition, every data record's value in offset order and
    whether read_committed must return it."""

    topic: str
    written: dict[int, list[tuple[bytes, bool]]] = field(
        default_factory=lambda: {p: [] for p in range(PARTITIONS)}
    )

    def write(self, producer: CKProducer, tag: str, count: int, visible: bool) -> None:
        """``count`` records on every partition, flushed so offsets follow this call order."""
        for p in range(PARTITIONS):
            for i in range(count):
                value = f"{tag}-p{p}-{i:03d}".encode()
                producer.produce(self.topic, value, partition=p)
                self.written[p].append((value, visible))
        assert producer.flush(30) == 0

    def committed(self) -> dict[int, list[bytes]]:
        return {p: [v for v, ok in rs if ok] for p, rs in self.written.items()}

    def everything(self) -> dict[int, list[bytes]]:
        return {p: [v for v, _ in rs] for p, rs in self.written.items()}


@pytest.fixture(scope="module")
def history(cluster: BrokerProcess) -> History:
    h = History("rc-" + uuid.uuid4().hex[:8])
    plain = CKProducer({"bootstrap.servers": cluster.bootstrap, "linger.ms": 0})
    t1 = txn_producer(cluster.bootstrap, "t1-" + h.topic)
    t2 = txn_producer(cluster.bootstrap, "t2-" + h.topic, **{"compression.type": "lz4"})
    h.write(plain, "plain-a", 3, True)
    t1.begin_transaction()
    h.write(t1, "t1-commit-a", 10, True)
    t1.commit_transaction(30)
    h.write(plain, "plain-b", 2, True)
    t1.begin_transaction()
    h.write(t1, "t1-abort-a", 25, False)  # many batches: the ABORT marker comes much later
    t1.abort_transaction(30)
    # Two transactions open at once, with plain records between their batches.
    t2.begin_transaction()
    t1.begin_transaction()
    h.write(t2, "t2-abort-b", 6, False)
    h.write(t1, "t1-commit-b", 5, True)
    h.write(plain, "plain-c", 2, True)
    h.write(t2, "t2-abort-c", 6, False)
    h.write(t1, "t1-commit-c", 5, True)
    t2.abort_transaction(30)
    t1.commit_transaction(30)
    t2.begin_transaction()
    h.write(t2, "t2-commit-d", 9, True)
    t2.commit_transaction(30)
    t1.begin_transaction()
    h.write(t1, "t1-abort-e", 3, False)  # the log ends with an aborted transaction
    t1.abort_transaction(30)
    h.write(plain, "plain-f", 1, True)
    return h


def by_partition(records: list[Any]) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    last: dict[int, int] = {}
    for r in records:
        assert r.offset > last.get(r.partition, -1), "offsets go backwards"
        last[r.partition] = r.offset
        out[r.partition].append(r.value)
    return out


def read_all_sync(bootstrap: str, topic: str, expected: int, **settings: Any) -> list[Any]:
    """Everything ``pystream.Consumer`` returns until ``expected`` records and 1 s more."""
    records: list[Any] = []
    with pystream.Consumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **settings
    ) as consumer:
        deadline = time.monotonic() + 60
        while len(records) < expected and time.monotonic() < deadline:
            records += consumer.poll(0.5)
        records += consumer.poll(1.0)  # nothing more may come (e.g. an aborted tail)
        end = consumer.end_offsets([TP(topic, p) for p in range(PARTITIONS)])
        # Past every control batch: the position is the end of the log.
        for p in range(PARTITIONS):
            wait_until(
                lambda p=p: consumer.position(TP(topic, p)) == end[TP(topic, p)],
                10,
                f"position of partition {p} at its end offset {end[TP(topic, p)]}",
            )
    return records


@pytest.mark.parametrize("max_partition_fetch_bytes", [1_048_576, 300])
@pytest.mark.parametrize("isolation_level", ["read_committed", "read_uncommitted"])
def test_sync_consumer_over_interleaved_transactions(
    cluster: BrokerProcess, history: History, isolation_level: str, max_partition_fetch_bytes: int
) -> None:
    """read_committed: exactly the committed and plain records; read_uncommitted: every
    data record (never a control record).  300-byte fetches end inside transactions, so
    an ABORT marker arrives many fetches after its transaction's first batch."""
    if isolation_level == "read_committed":
        expected = history.committed()
    else:
        expected = history.everything()
    records = read_all_sync(
        cluster.bootstrap,
        history.topic,
        sum(map(len, expected.values())),
        isolation_level=isolation_level,
        max_partition_fetch_bytes=max_partition_fetch_bytes,
    )
    assert by_partition(records) == expected


def test_aio_read_committed(cluster: BrokerProcess, history: History) -> None:
    expected = history.committed()
    total = sum(map(len, expected.values()))

    async def main() -> list[Any]:
        records: list[Any] = []
        async with aio.Consumer(
            history.topic,
            bootstrap_servers=cluster.bootstrap,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=500,
        ) as consumer:
            async with asyncio.timeout(60):
                while len(records) < total:
                    records += await consumer.poll(0.5)
            records += await consumer.poll(1.0)
        return records

    assert by_partition(asyncio.run(main())) == expected


def test_cli_consume_read_committed(cluster: BrokerProcess, history: History) -> None:
    expected = history.committed()
    result = run(
        "consume",
        history.topic,
        "--bootstrap-server",
        cluster.bootstrap,
        "--from-beginning",
        "--isolation-level",
        "read_committed",
        # Exactly as many as were committed: an aborted record would take a committed
        # one's place in the output.
        "--max-messages",
        str(sum(map(len, expected.values()))),
        "--timeout-ms",
        "30000",
        "--property",
        "print.partition=true",
    )
    got: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    for line in result.stdout.splitlines():
        partition, value = line.split("\t")
        got[int(partition.removeprefix("Partition:"))].append(value.encode())
    assert got == expected
    assert f"Processed a total of {sum(map(len, expected.values()))} messages" in result.stderr


# --- the last stable offset ------------------------------------------------------------------


def poll_until(consumer: pystream.Consumer, count: int, timeout: float = 30) -> list[Any]:
    """Poll until ``count`` records came (or ``timeout`` seconds passed)."""
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        records += consumer.poll(0.2)
    return records


def poll_for(consumer: pystream.Consumer, seconds: float) -> list[Any]:
    """Everything polled during ``seconds`` (a bounded window to show nothing more comes)."""
    records: list[Any] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        records += consumer.poll(0.2)
    return records


@pytest.mark.parametrize("outcome", ["commit", "abort"])
def test_read_committed_stops_at_the_open_transaction(cluster: BrokerProcess, outcome: str) -> None:
    topic = f"lso-{outcome}-" + uuid.uuid4().hex[:8]
    tp = TP(topic, 1)
    plain = CKProducer({"bootstrap.servers": cluster.bootstrap, "linger.ms": 0})
    txn = txn_producer(cluster.bootstrap, "lso-" + topic)
    for i in range(3):
        plain.produce(topic, b"before-%d" % i, partition=1)
    assert plain.flush(30) == 0
    txn.begin_transaction()
    for i in range(4):
        txn.produce(topic, b"txn-%d" % i, partition=1)
    assert txn.flush(30) == 0
    for i in range(2):
        plain.produce(topic, b"after-%d" % i, partition=1)
    assert plain.flush(30) == 0
    common = dict(bootstrap_servers=cluster.bootstrap, fetch_max_wait_ms=100)
    with (
        pystream.Consumer(isolation_level="read_committed", **common) as committed,
        pystream.Consumer(**common) as uncommitted,
    ):
        committed.assign([tp])
        uncommitted.assign([tp])
        committed.seek(tp, 0)
        uncommitted.seek(tp, 0)
        # The open transaction and the plain records after it are in the log (and below
        # the high watermark): read_uncommitted gets them ...
        seen = poll_until(uncommitted, 9)
        assert [r.value for r in seen][3:] == [b"txn-0", b"txn-1", b"txn-2", b"txn-3"] + [
            b"after-0",
            b"after-1",
        ]
        assert uncommitted.end_offsets([tp]) == {tp: 9}
        assert uncommitted.highwater(tp) == 9
        # ... read_committed stops at the LSO, the open transaction's first offset.
        assert committed.end_offsets([tp]) == {tp: 3}
        got = poll_for(committed, 1.5)
        assert [r.value for r in got] == [b"before-0", b"before-1", b"before-2"]
        assert committed.position(tp) == 3
        wait_until(lambda: committed.highwater(tp) == 3, 10, "read_committed highwater = LSO")
        if outcome == "commit":
            txn.commit_transaction(30)
            expected = [b"txn-0", b"txn-1", b"txn-2", b"txn-3", b"after-0", b"after-1"]
        else:
            txn.abort_transaction(30)
            expected = [b"after-0", b"after-1"]
        got = poll_until(committed, len(expected))
        got += poll_for(committed, 0.5)
        assert [r.value for r in got] == expected
        # The marker is offset 9: both isolation levels end at 10 now.
        assert committed.end_offsets([tp]) == {tp: 10}
        wait_until(lambda: committed.position(tp) == 10, 10, "position past the marker")


# --- compaction ------------------------------------------------------------------------------


def abort_markers(partition_dir: Any) -> list[int]:
    """Offsets of the ABORT markers in a partition's segment files (read beside the broker:
    a file the cleaner swaps away meanwhile is still readable)."""
    found = []
    for path in sorted(partition_dir.glob("*.log")):
        for batch in R.iter_batches(path.read_bytes(), check_crc=False):
            if batch.is_control and len(batch) and batch.control_record_type() == R.CONTROL_ABORT:
                found.append(batch.header.base_offset)
    return found


def test_read_committed_after_the_cleaner_dropped_an_abort_marker(cluster: BrokerProcess) -> None:
    """A compacted topic: an aborted transaction, then a committed one of the same
    producer.  Once the cleaner removed the aborted records and then the ABORT marker,
    read_committed must still return the committed transaction (the broker must stop
    listing the aborted one, or the consumer skips the producer's records for good)."""
    topic = "compact-rc-" + uuid.uuid4().hex[:8]
    admin = CKAdmin({"bootstrap.servers": cluster.bootstrap})
    config = {
        "cleanup.policy": "compact",
        "segment.bytes": "2048",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "0",
    }
    (created,) = admin.create_topics([CKNewTopic(topic, 1, 1, config=config)]).values()
    created.result(30)
    txn = txn_producer(cluster.bootstrap, "compact-" + topic)
    txn.begin_transaction()
    for i in range(5):
        txn.produce(topic, b"aborted-%d" % i, key=b"a%d" % i, partition=0)
    assert txn.flush(30) == 0
    txn.abort_transaction(30)
    txn.begin_transaction()
    committed = [b"committed-%d" % i for i in range(5)]
    for i, value in enumerate(committed):
        txn.produce(topic, value, key=b"c%d" % i, partition=0)
    txn.commit_transaction(30)
    plain = CKProducer({"bootstrap.servers": cluster.bootstrap, "linger.ms": 0})
    partition_dir = cluster.log_dir / f"{topic}-0"
    assert abort_markers(partition_dir), "the ABORT marker is in the log"
    filler = 0

    def marker_cleaned() -> bool:
        # Keyed filler rolls segments and dirties the log, so cleans keep coming.
        nonlocal filler
        for _ in range(20):
            plain.produce(topic, b"f" * 100, key=b"filler-%d" % (filler % 50), partition=0)
            filler += 1
        assert plain.flush(30) == 0
        return not abort_markers(partition_dir)

    wait_until(marker_cleaned, 60, "the cleaner to remove the ABORT marker", interval=0.2)
    with pystream.Consumer(
        bootstrap_servers=cluster.bootstrap, isolation_level="read_committed"
    ) as consumer:
        tp = TP(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        end = consumer.end_offsets([tp])[tp]
        records: list[Any] = []
        deadline = time.monotonic() + 30
        while consumer.position(tp) < end and time.monotonic() < deadline:
            records += consumer.poll(0.2)
    values = [r.value for r in records if not r.key.startswith(b"filler")]
    assert values == committed
    # librdkafka's read_committed consumer, told the same by the broker, agrees.
    ck = CKConsumer(
        {
            "bootstrap.servers": cluster.bootstrap,
            "group.id": "ck-" + topic,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    try:
        ck.assign([CKTopicPartition(topic, 0, 0)])
        seen: list[bytes] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = ck.poll(0.2)
            if message is None or message.error() is not None:
                continue
            if not message.key().startswith(b"filler"):
                seen.append(message.value())
            if message.offset() >= end - 1:
                break
        assert seen == committed
    finally:
        ck.close()


# --- group_metadata() ------------------------------------------------------------------------


def heartbeat(cluster: BrokerProcess, meta: ConsumerGroupMetadata) -> int:
    """The coordinator's answer to a Heartbeat with this generation and member id."""
    with cluster.wire() as wire:
        response = wire.request(
            12,
            3,
            HeartbeatRequest(
                group_id=meta.group_id,
                generation_id=meta.generation_id,
                member_id=meta.member_id,
                group_instance_id=meta.group_instance_id,
            ),
        )
    return response.error_code


def broker_members(cluster: BrokerProcess, group: str) -> set[str]:
    admin = CKAdmin({"bootstrap.servers": cluster.bootstrap})
    (future,) = admin.describe_consumer_groups([group], request_timeout=10).values()
    return {m.member_id for m in future.result(15).members}


def test_group_metadata_follows_rebalances(cluster: BrokerProcess) -> None:
    topic = "gm-" + uuid.uuid4().hex[:8]
    group = "gm-group-" + topic
    fast = dict(heartbeat_interval_ms=300, session_timeout_ms=6_000, max_poll_interval_ms=20_000)
    first = pystream.Consumer(
        topic,
        bootstrap_servers=cluster.bootstrap,
        group_id=group,
        allow_auto_create_topics=True,
        **fast,
    )
    try:
        first.wait_for_assignment(30)
        meta = first.group_metadata()
        assert meta.group_id == group and meta.group_instance_id is None
        assert meta.generation_id >= 1 and meta.member_id == first.member_id
        assert broker_members(cluster, group) == {meta.member_id}
        assert heartbeat(cluster, meta) == 0
        # A second member: the group rebalances into a new generation.
        with pystream.Consumer(
            topic, bootstrap_servers=cluster.bootstrap, group_id=group, **fast
        ) as second:
            wait_until(
                lambda: (
                    first.poll(0.1) == []
                    and first.group_metadata().generation_id > meta.generation_id
                    and second.group_metadata().generation_id
                    == first.group_metadata().generation_id
                    and len(first.assignment()) + len(second.assignment()) == PARTITIONS
                ),
                30,
                "both members in the next generation",
            )
            now = first.group_metadata()
            other = second.group_metadata()
            assert now.member_id == meta.member_id != other.member_id
            assert broker_members(cluster, group) == {now.member_id, other.member_id}
            assert heartbeat(cluster, now) == 0
            assert heartbeat(cluster, other) == 0
            assert heartbeat(cluster, meta) == ILLEGAL_GENERATION  # the old generation
    finally:
        first.close()


def test_group_metadata_static_member_and_aio(cluster: BrokerProcess) -> None:
    topic = "gms-" + uuid.uuid4().hex[:8]
    group = "gms-group-" + topic

    async def main() -> ConsumerGroupMetadata:
        async with aio.Consumer(
            topic,
            bootstrap_servers=cluster.bootstrap,
            group_id=group,
            group_instance_id="instance-1",
            allow_auto_create_topics=True,
        ) as consumer:
            await consumer.wait_for_assignment(30)
            meta = consumer.group_metadata()
            assert meta.member_id == consumer.member_id
            assert meta.generation_id == consumer.generation >= 1
            # Heartbeat while the member is still in the group.
            assert await asyncio.to_thread(heartbeat, cluster, meta) == 0
            assert await asyncio.to_thread(broker_members, cluster, group) == {meta.member_id}
            return meta

    meta = asyncio.run(main())
    assert meta.group_id == group and meta.group_instance_id == "instance-1"


def test_group_metadata_needs_a_group(cluster: BrokerProcess) -> None:
    with pystream.Consumer(bootstrap_servers=cluster.bootstrap) as consumer:
        with pytest.raises(InvalidGroupIdError, match="group_id"):
            consumer.group_metadata()
