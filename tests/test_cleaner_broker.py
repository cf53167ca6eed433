"""Compacted topics on real brokers with real clients: confluent-kafka, kafka-python and
aiokafka write and read the same keys; compressed topics keep their codec; a broker killed
with SIGKILL while its cleaner runs loses nothing; and ``__consumer_offsets`` keeps the
latest commit of each group/partition."""

from __future__ import annotations

import asyncio
import random
import re
import struct
import threading
import time
from pathlib import Path

import confluent_kafka as ck
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTP
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTP
from waiting import wait_until

from pystream._core import records as R

FAST_CLEANER = {
    "log.cleanup.policy": "compact",
    "log.segment.bytes": "4096",
    "log.cleaner.backoff.ms": "50",
    "log.cleaner.min.cleanable.ratio": "0.01",
    "log.cleaner.delete.retention.ms": "0",
}
Record = tuple[int, bytes | None, bytes | None]  # offset, key, value


def start(broker_factory, **overrides: str):
    broker = broker_factory(**overrides)
    # Printed by LogCleaner.start before the broker prints where clients connect.
    assert "log cleaner thread" in broker.output(), (
        "the broker did not start its log cleaner: Broker.start must create and start a "
        "pystream.storage.cleaner.LogCleaner (and Broker.stop shut it down)"
    )
    return broker


# ---------------------------------------------------------------- clients


def produce_confluent(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]], **config: str
) -> list[Record]:
    acked: list[Record] = []
    errors: list[object] = []

    def delivered(err: object, msg: ck.Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            acked.append((msg.offset(), msg.key(), msg.value()))

    producer = ck.Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "acks": "all",
            "batch.size": 2048,
            **config,
        }
    )
    for key, value in records:
        producer.produce(topic, key=key, value=value, partition=0, on_delivery=delivered)
    assert producer.flush(60) == 0
    assert not errors, errors
    return acked


def produce_one_batch(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], compression: str
) -> list[Record]:
    """All records in ONE batch (pystream's send_batch), so the shape of what the cleaner
    rewrites does not depend on how a client happened to batch under load."""
    from pystream import Producer

    with Producer(bootstrap, compression=compression, acks="all") as producer:
        keys = [k for k, _ in records]
        values = [v for _, v in records]
        batches = producer.send_batch(topic, values, keys, partition=0).result(60)
    assert len(batches) == 1, batches
    first = batches[0].base_offset
    return [(first + i, k, v) for i, (k, v) in enumerate(records)]


def produce_kafka_python(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]
) -> list[Record]:
    producer = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    futures = [(k, v, producer.send(topic, key=k, value=v, partition=0)) for k, v in records]
    acked = [(f.get(timeout=60).offset, k, v) for k, v, f in futures]
    producer.close()
    return acked


def produce_aiokafka(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]
) -> list[Record]:
    async def run() -> list[Record]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            acked = []
            for key, value in records:
                meta = await producer.send_and_wait(topic, value, key=key, partition=0)
                acked.append((meta.offset, key, value))
            return acked
        finally:
            await producer.stop()

    return asyncio.run(run())


def consume_confluent(bootstrap: str, topic: str, last_offset: int) -> list[Record]:
    consumer = ck.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False}
    )
    consumer.assign([ck.TopicPartition(topic, 0, ck.OFFSET_BEGINNING)])
    out: list[Record] = []
    deadline = time.monotonic() + 60
    try:
        while not out or out[-1][0] < last_offset:
            assert time.monotonic() < deadline, f"read only up to {out[-1:]} of {topic}"
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            out.append((msg.offset(), msg.key(), msg.value()))
    finally:
        consumer.close()
    return out


def consume_kafka_python(bootstrap: str, topic: str, last_offset: int) -> list[Record]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tp = KpTP(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    out: list[Record] = []
    deadline = time.monotonic() + 60
    while not out or out[-1][0] < last_offset:
        assert time.monotonic() < deadline
        for batch in consumer.poll(timeout_ms=1000).values():
            out.extend((m.offset, m.key, m.value) for m in batch)
    consumer.close()
    return out


def consume_aiokafka(bootstrap: str, topic: str, last_offset: int) -> list[Record]:
    async def run() -> list[Record]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = AioTP(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            out: list[Record] = []
            deadline = time.monotonic() + 60
            while not out or out[-1][0] < last_offset:
                assert time.monotonic() < deadline
                for batch in (await consumer.getmany(timeout_ms=1000)).values():
                    out.extend((m.offset, m.key, m.value) for m in batch)
            return out
        finally:
            await consumer.stop()

    return asyncio.run(run())


def tail(bootstrap: str, topic: str) -> int:
    """Writes filler (to roll the test data into closed segments) and a last sentinel
    record; returns the sentinel's offset (readers stop there)."""
    filler = [(b"filler-%d" % i, b"f" * 400) for i in range(12)]
    produce_confluent(bootstrap, topic, filler)
    return produce_confluent(bootstrap, topic, [(b"sentinel", b"end")])[0][0]


def latest_by_key(acked: list[Record]) -> dict[bytes, Record]:
    latest: dict[bytes, Record] = {}
    for record in sorted(acked):
        latest[record[1]] = record  # type: ignore[index]
    return latest


def is_compacted(records: list[Record], expected: dict[bytes, Record], keys: set[bytes]) -> bool:
    """Each live test key exactly once with its newest record; deleted keys gone."""
    mine = [r for r in records if r[1] in keys]
    want = sorted(r for r in expected.values() if r[1] in keys and r[2] is not None)
    return sorted(mine) == want


def check_consistent(records: list[Record], acked: dict[int, Record]) -> None:
    offsets = [r[0] for r in records]
    assert offsets == sorted(set(offsets)), "offsets must increase"
    for record in records:
        assert acked[record[0]] == record, f"{record} is not what was written at that offset"


# ---------------------------------------------------------------- tests


def test_latest_value_per_key_with_several_clients(broker_factory) -> None:
    broker = start(broker_factory, **FAST_CLEANER)
    topic, keys = "compacted", [b"k%02d" % i for i in range(20)]
    acked = produce_confluent(broker.bootstrap, topic, [(k, b"confluent-" + k) for k in keys])
    acked += produce_kafka_python(
        broker.bootstrap, topic, [(k, b"kafka-python-" + k) for k in keys]
    )
    acked += produce_aiokafka(broker.bootstrap, topic, [(k, b"aiokafka-" + k) for k in keys[5:]])
    acked += produce_confluent(broker.bootstrap, topic, [(k, None) for k in keys[:5]])  # deletes
    last = tail(broker.bootstrap, topic)
    expected = latest_by_key(acked)
    state: list[list[Record]] = [[]]

    def compacted() -> bool:
        state[0] = consume_confluent(broker.bootstrap, topic, last)
        return is_compacted(state[0], expected, set(keys))

    wait_until(compacted, what="the cleaner to compact the topic and drop its tombstones")
    by_offset = {r[0]: r for r in acked}
    for reader in (consume_confluent, consume_kafka_python, consume_aiokafka):
        records = reader(broker.bootstrap, topic, last)
        assert is_compacted(records, expected, set(keys)), reader.__name__
        check_consistent([r for r in records if r[1] in set(keys)], by_offset)
        assert {r[1]: r[2] for r in records if r[1] in set(keys)} == {
            k: b"aiokafka-" + k for k in keys[5:]
        }
    assert len(state[0]) < len(acked) / 2


def segment_batches(directory: Path) -> list[R.BatchHeader]:
    headers = []
    for path in sorted(directory.glob("*.log")):
        data = path.read_bytes()
        headers.extend(b.header for b in R.iter_batches(data, check_crc=True))
    return headers


def test_compressed_topics_keep_their_codec(broker_factory) -> None:
    broker = start(broker_factory, **FAST_CLEANER)
    codecs = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
    keys = [b"key-%d" % i for i in range(10)]
    expectations = {}
    for name in codecs:
        topic = f"compressed-{name}"
        acked: list[Record] = []
        for round_ in range(4):
            # The last round updates only half the keys, so older batches lose some records
            # and must be rebuilt (with their codec) rather than copied or dropped.
            chosen = keys if round_ < 3 else keys[::2]
            acked += produce_one_batch(
                broker.bootstrap,
                topic,
                [(k, b"%s-%d-" % (k, round_) + b"v" * 50) for k in chosen],
                name,
            )
        expectations[topic] = (acked, tail(broker.bootstrap, topic))
    for topic, (acked, last) in expectations.items():
        expected = latest_by_key(acked)
        wait_until(
            lambda topic=topic, last=last, expected=expected: is_compacted(
                consume_confluent(broker.bootstrap, topic, last), expected, set(keys)
            ),
            what=f"{topic} to be compacted",
        )
    broker.stop()
    for name, codec in codecs.items():
        acked, _ = expectations[f"compressed-{name}"]
        headers = segment_batches(broker.log_dir / f"compressed-{name}-0")
        mine = [h for h in headers if h.record_count and h.last_offset <= max(acked)[0]]
        assert {h.compression for h in mine} == {codec}
        # Some batches lost records: those were rebuilt, not copied.
        assert any(h.record_count < h.last_offset_delta + 1 for h in mine)


def test_sigkill_while_cleaning_loses_nothing(broker_factory) -> None:
    # A slow cleaner (throttled I/O) so that kills land in the middle of cleans.
    broker = start(
        broker_factory, **{**FAST_CLEANER, "log.cleaner.io.max.bytes.per.second": "200000"}
    )
    topic = "crashy"
    rng = random.Random(42)
    acked: list[Record] = []
    for round_ in range(4):
        updates = [
            (b"key-%02d" % rng.randrange(30), b"round-%d-" % round_ + b"x" * rng.randrange(200))
            for _ in range(300)
        ]
        mark = broker.output_lines()
        acked += produce_confluent(broker.bootstrap, topic, updates)
        broker.wait_for_output(f"Cleaning {topic}-0", timeout=60, since=mark)
        # Any moment of the clean is fair: the kill time is randomised, not awaited.
        threading.Event().wait(rng.uniform(0, 0.6))
        broker.kill()
        broker.start()
        last = produce_confluent(broker.bootstrap, topic, [(b"sentinel", b"%d" % round_)])
        acked += last
        records = consume_confluent(broker.bootstrap, topic, last[0][0])
        check_consistent(records, {r[0]: r for r in acked})
        present = {r[0] for r in records}
        for record in latest_by_key(acked).values():
            assert record[0] in present, f"the newest record {record} was lost"
    assert "Cleaned crashy-0" in broker.output()


def cleaned_up_to(output: str, partition: str) -> int:
    """The highest end offset of the broker's "Cleaned <partition>" log lines (0: none)."""
    pattern = re.compile(
        rf"Cleaned {re.escape(partition)} .*?: offsets \[\d+, (\d+)\) deduplicated"
    )
    return max((int(m.group(1)) for m in pattern.finditer(output)), default=0)


def _string(data: bytes, position: int) -> tuple[str, int]:
    (length,) = struct.unpack_from(">h", data, position)
    return data[position + 2 : position + 2 + length].decode(), position + 2 + length


def offset_commits(directory: Path) -> list[tuple[int, tuple[str, str, int], int | None]]:
    """(offset, (group, topic, partition), committed offset or None) of every offset-commit
    record in a ``__consumer_offsets`` partition directory (Kafka's key/value schemas)."""
    out = []
    for path in sorted(directory.glob("*.log")):
        for batch in R.iter_batches(path.read_bytes()):
            if batch.is_control:
                continue
            for record in batch:
                (version,) = struct.unpack_from(">h", record.key, 0)
                if version > 1:
                    continue  # group metadata
                group, position = _string(record.key, 2)
                topic, position = _string(record.key, position)
                (partition,) = struct.unpack_from(">i", record.key, position)
                value = (
                    None if record.value is None else struct.unpack_from(">q", record.value, 2)[0]
                )
                out.append((record.offset, (group, topic, partition), value))
    return out


def test_consumer_offsets_keep_the_latest_commit_per_group_and_partition(broker_factory) -> None:
    broker = start(
        broker_factory,
        **{
            "log.cleaner.backoff.ms": "50",
            "log.cleaner.min.cleanable.ratio": "0.01",
            "offsets.topic.num.partitions": "1",
            "offsets.topic.segment.bytes": "2048",
            "num.partitions": "3",
        },
    )
    produce_confluent(broker.bootstrap, "orders", [(b"k", b"v")])  # creates the topic
    last_commits = {}
    for group in ("billing", "shipping"):
        consumer = ck.Consumer(
            {"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        for i in range(60):
            offsets = [ck.TopicPartition("orders", p, 1000 * p + i) for p in range(3)]
            consumer.commit(offsets=offsets, asynchronous=False)
        last_commits.update({(group, "orders", p): 1000 * p + 59 for p in range(3)})
        consumer.close()
    # Until a clean covered most commits (the newest ones sit in the active segment).
    wait_until(lambda: cleaned_up_to(broker.output(), "__consumer_offsets-0") >= 300)
    broker.stop()
    checkpoint = (broker.log_dir / "cleaner-offset-checkpoint").read_text().split("\n")
    end = int(
        next(line for line in checkpoint if line.startswith("__consumer_offsets 0 ")).split()[2]
    )
    commits = offset_commits(broker.log_dir / "__consumer_offsets-0")
    cleaned = [key for offset, key, _ in commits if offset < end]
    assert len(cleaned) == len(set(cleaned)), "a key appears twice in the cleaned section"
    assert len(commits) < 2 * 3 * 60 / 2  # compaction removed most of the 360 commits
    latest: dict[tuple[str, str, int], tuple[int, int | None]] = {}
    for offset, key, value in commits:
        if key not in latest or offset > latest[key][0]:
            latest[key] = (offset, value)
    assert {k: v for k, (_, v) in latest.items()} == last_commits
    broker.start()  # the coordinator replays the compacted partition
    for group in ("billing", "shipping"):
        consumer = ck.Consumer(
            {"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        committed = consumer.committed([ck.TopicPartition("orders", p) for p in range(3)], 30)
        assert {(group, tp.topic, tp.partition): tp.offset for tp in committed} == {
            k: v for k, v in last_commits.items() if k[0] == group
        }
        consumer.close()
