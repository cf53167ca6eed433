"""pystream.Producer against a real broker, cross-checked with confluent-kafka (librdkafka)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from broker_process import BrokerProcess
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import Producer as CKProducer
from confluent_kafka import TopicPartition as CKTopicPartition

import pystream
from pystream.client import BatchSendFuture
from pystream.client.partitioner import partition_for_key
from pystream.errors import KafkaError, MessageTooLargeError, UnknownTopicOrPartitionError

PARTITIONS = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("producer"), {"num.partitions": str(PARTITIONS)}
    ).start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def topic() -> str:
    return "p-" + uuid.uuid4().hex[:10]


def ck_read(bootstrap: str, topic: str, count: int, partitions: int = PARTITIONS) -> list:
    """Every record of ``topic`` read with librdkafka (bounded wait)."""
    consumer = CKConsumer(
        {"bootstrap.servers": bootstrap, "group.id": "oracle-" + topic, "enable.auto.commit": False}
    )
    consumer.assign([CKTopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    deadline = time.monotonic() + 30
    try:
        while len(out) < count and time.monotonic() < deadline:
            for m in consumer.consume(10_000, 0.5):
                assert m.error() is None, m.error()
                out.append(m)
    finally:
        consumer.close()
    return out


def py_read(bootstrap: str, topic: str, count: int) -> list:
    """Every record of ``topic`` read with pystream's consumer (bounded wait)."""
    out = []
    with pystream.Consumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest") as c:
        deadline = time.monotonic() + 30
        while len(out) < count and time.monotonic() < deadline:
            out += c.poll(0.5)
    return out


def test_send_result_is_record_metadata_and_librdkafka_reads_the_record(
    cluster: BrokerProcess, topic: str
) -> None:
    with pystream.Producer(cluster.bootstrap) as producer:
        futures = [
            producer.send(
                topic,
                b"v0",
                key=b"k0",
                headers={"h": b"1", "s": "str"},
                timestamp_ms=1_700_000_000_123,
            ),
            producer.send(topic, "text value", key="text key"),
            producer.send(topic, None, key=b"k0"),  # a tombstone
        ]
        metadata = [f.result(15) for f in futures]
    assert metadata[0].topic == topic
    assert metadata[0].partition == partition_for_key(b"k0", PARTITIONS)
    assert metadata[0].timestamp == 1_700_000_000_123
    assert metadata[2].partition == metadata[0].partition
    assert metadata[2].offset == metadata[0].offset + 1
    got = {(m.partition(), m.offset()): m for m in ck_read(cluster.bootstrap, topic, 3)}
    first = got[(metadata[0].partition, metadata[0].offset)]
    assert (first.key(), first.value(), first.timestamp()[1]) == (
        b"k0",
        b"v0",
        1_700_000_000_123,
    )
    assert first.headers() == [("h", b"1"), ("s", b"str")]
    second = got[(metadata[1].partition, metadata[1].offset)]
    assert (second.key(), second.value()) == (b"text key", b"text value")
    assert got[(metadata[2].partition, metadata[2].offset)].value() is None


def test_keys_land_where_librdkafka_murmur2_random_puts_them(
    cluster: BrokerProcess, topic: str
) -> None:
    keys = [b"key-%d" % i for i in range(300)] + [b"", b"\x00\xff" * 9]
    ck_topic = topic + "-ck"
    ck = CKProducer({"bootstrap.servers": cluster.bootstrap, "partitioner": "murmur2_random"})
    for key in keys:
        ck.produce(ck_topic, b"v", key=key)
    assert ck.flush(30) == 0
    by_librdkafka = {
        m.key(): m.partition() for m in ck_read(cluster.bootstrap, ck_topic, len(keys))
    }
    with pystream.Producer(cluster.bootstrap) as producer:
        futures = {key: producer.send(topic, b"v", key=key) for key in keys}
        by_pystream = {key: f.result(15).partition for key, f in futures.items()}
    assert by_librdkafka == by_pystream
    assert by_pystream == {key: partition_for_key(key, PARTITIONS) for key in keys}
    assert len(set(by_pystream.values())) == PARTITIONS


def test_send_batch_of_values_writes_whole_batches(cluster: BrokerProcess, topic: str) -> None:
    values = [b"value-%06d" % i for i in range(20_000)]
    with pystream.Producer(cluster.bootstrap, batch_size=64_000) as producer:
        batches = producer.send_batch(topic, values, timestamp_ms=1_700_000_000_000).result(30)
    assert sum(b.record_count for b in batches) == len(values)
    assert len(batches) > 1
    # every batch is consecutive offsets of one partition, in input order
    order = []
    for b in batches:
        assert b.timestamp == 1_700_000_000_000
        order += [(b.partition, b.base_offset + i) for i in range(b.record_count)]
    records = {(r.partition, r.offset): r.value for r in py_read(cluster.bootstrap, topic, 20_000)}
    assert [records[pos] for pos in order] == values


def test_send_batch_with_keys_partitions_by_murmur2(cluster: BrokerProcess, topic: str) -> None:
    keys = [b"user-%d" % (i % 97) for i in range(5_000)]
    values = [b"%d" % i for i in range(5_000)]
    with pystream.Producer(cluster.bootstrap) as producer:
        batches = producer.send_batch(topic, values, keys).result(30)
    assert sum(b.record_count for b in batches) == 5_000
    records = py_read(cluster.bootstrap, topic, 5_000)
    assert len(records) == 5_000
    for r in records:
        assert r.partition == partition_for_key(r.key, PARTITIONS)
        assert r.key == keys[int(r.value)]
    # per key, records keep their send order
    per_key: dict[bytes, list[int]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        per_key.setdefault(r.key, []).append(int(r.value))
    assert all(v == sorted(v) for v in per_key.values())


def test_send_batch_of_numpy_rows(cluster: BrokerProcess, topic: str) -> None:
    rows = np.random.default_rng(1).integers(0, 256, size=(3_000, 100), dtype=np.uint8)
    dtype = np.dtype([("id", "<u4"), ("price", "<f8")])
    structured = np.zeros(1_000, dtype=dtype)
    structured["id"] = np.arange(1_000)
    structured["price"] = np.arange(1_000) * 0.5
    keys = np.frombuffer(b"".join(b"k%03d" % (i % 50) for i in range(1_000)), dtype="S4")
    with pystream.Producer(cluster.bootstrap, batch_size=50_000, compression="lz4") as producer:
        plain = producer.send_batch(topic, rows)
        keyed = producer.send_batch(topic + "-s", structured, keys)
        assert sum(b.record_count for b in plain.result(30)) == 3_000
        assert sum(b.record_count for b in keyed.result(30)) == 1_000
    got = py_read(cluster.bootstrap, topic, 3_000)
    assert sorted(r.value for r in got) == sorted(bytes(row) for row in rows)
    assert all(r.key is None for r in got)
    decoded = py_read(cluster.bootstrap, topic + "-s", 1_000)
    assert len(decoded) == 1_000
    for r in decoded:
        item = np.frombuffer(r.value, dtype=dtype)[0]
        assert r.key == b"k%03d" % (item["id"] % 50)
        assert item["price"] == item["id"] * 0.5
        assert r.partition == partition_for_key(r.key, PARTITIONS)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_are_readable_by_librdkafka(
    cluster: BrokerProcess, topic: str, codec: str
) -> None:
    with pystream.Producer(cluster.bootstrap, compression=codec) as producer:
        for i in range(500):
            producer.send(topic, b"compressible " * 10 + b"%d" % i, key=b"%d" % (i % 10))
        producer.send_batch(topic, [b"batch-%d" % i for i in range(500)]).result(30)
    messages = ck_read(cluster.bootstrap, topic, 1_000)
    values = {m.value() for m in messages}
    assert len(messages) == 1_000
    assert b"compressible " * 10 + b"499" in values and b"batch-499" in values


def test_acks_zero_gets_no_offsets_but_delivers(cluster: BrokerProcess, topic: str) -> None:
    with pystream.Producer(cluster.bootstrap, acks=0) as producer:
        futures = [producer.send(topic, b"fire-%d" % i, partition=1) for i in range(100)]
        producer.flush(15)
        assert all(f.result(0).offset == -1 for f in futures)
    got = py_read(cluster.bootstrap, topic, 100)
    assert sorted(r.value for r in got) == sorted(b"fire-%d" % i for i in range(100))


def test_close_delivers_what_was_lingering(cluster: BrokerProcess, topic: str) -> None:
    producer = pystream.Producer(cluster.bootstrap, linger_ms=60_000)
    futures = [producer.send(topic, b"late-%d" % i, partition=0) for i in range(50)]
    assert not any(f.done() for f in futures)
    producer.close()
    offsets = [f.result(0).offset for f in futures]
    assert offsets == list(range(offsets[0], offsets[0] + 50))
    with pytest.raises(pystream.client.ClientClosedError):
        producer.send(topic, b"after close")


def test_send_from_many_threads(cluster: BrokerProcess, topic: str) -> None:
    with pystream.Producer(cluster.bootstrap) as producer:
        results: list = []

        def work(n: int) -> None:
            futures = [producer.send(topic, b"%d-%d" % (n, i)) for i in range(3_000)]
            results.extend(f.result(30) for f in futures)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert len(results) == 12_000
    assert len({(m.partition, m.offset) for m in results}) == 12_000


def test_serializers(cluster: BrokerProcess, topic: str) -> None:
    with pystream.Producer(
        cluster.bootstrap,
        key_serializer=lambda k: k.to_bytes(4, "big"),
        value_serializer=lambda v: json.dumps(v).encode(),
    ) as producer:
        metadata = producer.send_and_wait(topic, {"a": [1, 2]}, key=42, timeout=15)
    (record,) = py_read(cluster.bootstrap, topic, 1)
    assert (record.key, json.loads(record.value)) == ((42).to_bytes(4, "big"), {"a": [1, 2]})
    assert record.partition == metadata.partition


def test_bootstrap_skips_a_dead_server(cluster: BrokerProcess, topic: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        with pystream.Producer([dead, cluster.bootstrap], reconnect_backoff_max_ms=100) as p:
            assert p.send(topic, b"x").result(15).offset == 0


def test_unknown_topic_without_auto_creation_fails_clearly(cluster: BrokerProcess) -> None:
    with pystream.Producer(
        cluster.bootstrap, allow_auto_create_topics=False, max_block_ms=1_000
    ) as producer:
        with pytest.raises(UnknownTopicOrPartitionError, match="does-not-exist"):
            producer.send("does-not-exist", b"x")
        with pytest.raises(UnknownTopicOrPartitionError):
            producer.send_batch("does-not-exist", [b"x"])


def test_invalid_partition_is_refused(cluster: BrokerProcess, topic: str) -> None:
    with pystream.Producer(cluster.bootstrap) as producer:
        producer.send(topic, b"x").result(15)
        with pytest.raises(UnknownTopicOrPartitionError, match="0..3"):
            producer.send(topic, b"x", partition=PARTITIONS)


def test_producer_survives_a_broker_restart(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "b", {"num.partitions": "1"}).start()
    try:
        with pystream.Producer(broker.bootstrap, retry_backoff_ms=50) as producer:
            assert producer.send("restart", b"before").result(15).offset == 0
            broker.restart()
            # the old connection is dead: the batch is retried on a new one
            assert producer.send("restart", b"after").result(30).offset == 1
    finally:
        broker.close()


def test_undeliverable_records_fail_after_the_delivery_timeout(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "b", {"num.partitions": "1"}).start()
    try:
        producer = pystream.Producer(
            broker.bootstrap,
            delivery_timeout_ms=1_500,
            request_timeout_ms=1_000,
            reconnect_backoff_max_ms=200,
        )
        try:
            assert producer.send("gone", b"delivered").result(15).offset == 0
            broker.kill()
            future = producer.send("gone", b"lost")
            with pytest.raises(KafkaError, match="delivery_timeout_ms|timed out|did not answer"):
                future.result(30)
        finally:
            producer.close(1)
    finally:
        broker.close()


def test_record_too_large_fails_at_send_and_broker_errors_reach_the_future(
    cluster: BrokerProcess, topic: str
) -> None:
    with pystream.Producer(cluster.bootstrap, max_request_size=10_000) as producer:
        with pytest.raises(MessageTooLargeError, match="max_request_size"):
            producer.send(topic, b"x" * 20_000)
    # A limit the broker enforces (max.message.bytes, 1 MiB) fails the future instead.
    with pystream.Producer(
        cluster.bootstrap, max_request_size=4_000_000, batch_size=4_000_000
    ) as producer:
        called = []
        future = producer.send(topic, b"y" * 2_000_000, partition=0)
        future.add_done_callback(called.append)
        small = producer.send(topic, b"fine", partition=1)
        assert isinstance(future.exception(30), MessageTooLargeError)
        with pytest.raises(MessageTooLargeError):
            future.result(0)
        assert called == [future]
        assert small.result(15).offset >= 0


def test_send_batch_done_callback_runs_once_every_batch_is_done(
    cluster: BrokerProcess, topic: str
) -> None:
    calls: list[bool] = []
    called = threading.Event()

    def done(future: BatchSendFuture) -> None:
        calls.append(future.done())
        called.set()

    with pystream.Producer(cluster.bootstrap, batch_size=64_000) as producer:
        future = producer.send_batch(topic, [b"value-%06d" % i for i in range(20_000)])
        future.add_done_callback(done)
        batches = future.result(30)
        assert called.wait(30)
    assert len(batches) > 1 and calls == [True]  # once, after the last batch
    late: list[object] = []
    future.add_done_callback(late.append)  # already done: at once, on this thread
    assert late == [future]
