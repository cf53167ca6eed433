"""pystream.Consumer without a group against a real broker, cross-checked with librdkafka."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_process import BrokerProcess
from confluent_kafka import Producer as CKProducer

import pystream
from pystream.client.connection import BrokerConnection
from pystream.client.types import TopicPartition
from pystream.errors import OffsetOutOfRangeError

PARTITIONS = 3
TP = TopicPartition


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("consumer"), {"num.partitions": str(PARTITIONS)}
    ).start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def topic() -> str:
    return "c-" + uuid.uuid4().hex[:10]


def advertised(bootstrap: str) -> dict[int, tuple[int, int]]:
    """The broker's ApiVersions advertisement."""
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


def produce(bootstrap: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    with pystream.Producer(bootstrap) as producer:
        producer.send_batch(topic, values, partition=partition).result(30)


def poll_until(consumer: pystream.Consumer, count: int, timeout: float = 30) -> list:
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        out += consumer.poll(0.5)
    return out


def test_reads_what_librdkafka_wrote(cluster: BrokerProcess, topic: str) -> None:
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        ck = CKProducer(
            {"bootstrap.servers": cluster.bootstrap, "compression.codec": codec, "linger.ms": 20}
        )
        for i in range(200):
            ck.produce(
                topic,
                b"%s-%d" % (codec.encode(), i),
                key=b"k%d" % i,
                headers=[("codec", codec.encode()), ("n", None)],
                timestamp=1_700_000_000_000 + i,
            )
        assert ck.flush(30) == 0
    with pystream.Consumer(
        topic, bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest"
    ) as consumer:
        records = poll_until(consumer, 1_000)
    assert len(records) == 1_000
    by_value = {r.value: r for r in records}
    r = by_value[b"zstd-7"]
    assert (r.topic, r.key, r.timestamp, r.timestamp_type) == (topic, b"k7", 1_700_000_000_007, 0)
    assert list(r.headers) == [("codec", b"zstd"), ("n", None)]
    # offsets within a partition are consecutive and in order
    for p in range(PARTITIONS):
        offsets = [x.offset for x in records if x.partition == p]
        assert offsets == list(range(len(offsets)))


def test_assign_seek_and_position(cluster: BrokerProcess, topic: str) -> None:
    produce(cluster.bootstrap, topic, [b"%d" % i for i in range(100)], partition=1)
    with pystream.Consumer(
        bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest"
    ) as consumer:
        consumer.assign([(topic, 1)])
        assert consumer.assignment() == [TP(topic, 1)]
        first = poll_until(consumer, 100)
        assert [r.offset for r in first] == list(range(100))
        assert consumer.position((topic, 1)) == 100
        consumer.seek(TP(topic, 1), 60)
        assert consumer.position((topic, 1)) == 60
        again = poll_until(consumer, 40)
        assert [r.value for r in again] == [b"%d" % i for i in range(60, 100)]
        assert consumer.poll(0.2) == []
        assert consumer.highwater((topic, 1)) == 100


def test_max_records_and_iteration(cluster: BrokerProcess, topic: str) -> None:
    produce(cluster.bootstrap, topic, [b"%d" % i for i in range(30)])
    consumer = pystream.Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest")
    try:
        consumer.assign([(topic, 0)])
        first = consumer.poll(15, max_records=7)
        assert [r.value for r in first] == [b"%d" % i for i in range(7)]
        seen = []
        for record in consumer:
            seen.append(record.value)
            if len(seen) == 23:
                break
        assert seen == [b"%d" % i for i in range(7, 30)]
    finally:
        consumer.close()
    assert list(consumer) == []  # a closed consumer's iterator ends


def test_latest_reads_only_new_records(cluster: BrokerProcess, topic: str) -> None:
    produce(cluster.bootstrap, topic, [b"old"] * 10)
    with pystream.Consumer(
        bootstrap_servers=cluster.bootstrap, auto_offset_reset="latest"
    ) as consumer:
        consumer.assign([(topic, 0)])
        assert consumer.poll(0.5) == []
        assert consumer.position((topic, 0)) == 10
        produce(cluster.bootstrap, topic, [b"new"] * 3)
        assert [r.value for r in poll_until(consumer, 3)] == [b"new"] * 3


def test_seek_to_beginning_end_and_offset_lookups(cluster: BrokerProcess, topic: str) -> None:
    with pystream.Producer(cluster.bootstrap) as producer:
        for i in range(20):
            producer.send(topic, b"%d" % i, partition=2, timestamp_ms=1_000_000 + i * 10)
        producer.flush(15)
    with pystream.Consumer(
        bootstrap_servers=cluster.bootstrap, auto_offset_reset="latest"
    ) as consumer:
        tp = TP(topic, 2)
        consumer.assign([tp])
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: 20}
        assert consumer.offsets_for_times({tp: 1_000_055}) == {tp: 6}
        assert consumer.offsets_for_times({tp: 9_000_000}) == {tp: None}
        consumer.seek_to_beginning(tp)
        assert [r.offset for r in poll_until(consumer, 20)] == list(range(20))
        consumer.seek_to_end()
        assert consumer.poll(0.3) == []
        assert consumer.position(tp) == 20


def test_pause_and_resume(cluster: BrokerProcess, topic: str) -> None:
    produce(cluster.bootstrap, topic, [b"a"] * 5, partition=0)
    produce(cluster.bootstrap, topic, [b"b"] * 5, partition=1)
    with pystream.Consumer(
        bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest"
    ) as consumer:
        consumer.assign([(topic, 0), (topic, 1)])
        consumer.pause((topic, 1))
        assert consumer._aio.paused() == [TP(topic, 1)]
        got = poll_until(consumer, 5)
        assert {r.partition for r in got} == {0} and len(got) == 5
        assert consumer.poll(0.3) == []
        consumer.resume((topic, 1))
        assert [r.value for r in poll_until(consumer, 5)] == [b"b"] * 5


def test_subscription_without_group_follows_new_partitions_of_the_topics(
    cluster: BrokerProcess, topic: str
) -> None:
    produce(cluster.bootstrap, topic, [b"x"])
    with pystream.Consumer(
        topic,
        topic + "-2",
        bootstrap_servers=cluster.bootstrap,
        auto_offset_reset="earliest",
        allow_auto_create_topics=True,
    ) as c:
        assert sorted(c.assignment()) == sorted(
            [TP(t, p) for t in (topic, topic + "-2") for p in range(PARTITIONS)]
        )
        assert [r.value for r in poll_until(c, 1)] == [b"x"]


def test_auto_offset_reset_none_raises(cluster: BrokerProcess, topic: str) -> None:
    produce(cluster.bootstrap, topic, [b"x"])
    with pystream.Consumer(
        bootstrap_servers=cluster.bootstrap, auto_offset_reset="none"
    ) as consumer:
        consumer.assign([(topic, 0)])
        with pytest.raises(OffsetOutOfRangeError, match="auto_offset_reset is 'none'"):
            for _ in range(20):
                consumer.poll(0.5)


def test_commit_without_group_is_refused(cluster: BrokerProcess, topic: str) -> None:
    with pystream.Consumer(bootstrap_servers=cluster.bootstrap) as consumer:
        consumer.assign([(topic, 0)])
        with pytest.raises(Exception, match="group_id"):
            consumer.commit()


def test_read_committed_skips_aborted_transactions(cluster: BrokerProcess, topic: str) -> None:
    apis = advertised(cluster.bootstrap)
    if not {22, 24, 26} <= set(apis):
        pytest.skip("the broker does not advertise InitProducerId/AddPartitionsToTxn/EndTxn yet")
    producer = CKProducer(
        {"bootstrap.servers": cluster.bootstrap, "transactional.id": "tx-" + topic}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed-1", partition=0)
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"aborted", partition=0)
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed-2", partition=0)
    producer.commit_transaction(30)
    for level, expected in (
        ("read_committed", [b"committed-1", b"committed-2"]),
        ("read_uncommitted", [b"committed-1", b"aborted", b"committed-2"]),
    ):
        with pystream.Consumer(
            bootstrap_servers=cluster.bootstrap, isolation_level=level, auto_offset_reset="earliest"
        ) as consumer:
            consumer.assign([(topic, 0)])
            got = [r.value for r in poll_until(consumer, len(expected))]
            assert got == expected
            assert consumer.poll(0.3) == []
            # control batches count as offsets: the position is past the last marker
            assert consumer.position((topic, 0)) == 6


def test_consumer_continues_after_a_broker_restart(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "b", {"num.partitions": "1"}).start()
    try:
        produce(broker.bootstrap, "r", [b"one"])
        with pystream.Consumer(
            "r",
            bootstrap_servers=broker.bootstrap,
            auto_offset_reset="earliest",
            retry_backoff_ms=50,
            reconnect_backoff_max_ms=200,
        ) as consumer:
            assert [r.value for r in poll_until(consumer, 1)] == [b"one"]
            broker.restart()
            produce(broker.bootstrap, "r", [b"two"])
            assert [r.value for r in poll_until(consumer, 1)] == [b"two"]
            assert consumer.position(("r", 0)) == 2
    finally:
        broker.close()


def test_partitions_for_a_missing_topic_is_an_error_at_once(cluster: BrokerProcess) -> None:
    # Like Kafka's partitionsFor: the broker's UNKNOWN_TOPIC_OR_PARTITION is the answer,
    # not a reason to retry until request.timeout.ms (which would say "not in the
    # metadata after 30.0s").
    from pystream.errors import UnknownTopicOrPartitionError

    with pystream.Consumer(bootstrap_servers=cluster.bootstrap) as consumer:
        with pytest.raises(UnknownTopicOrPartitionError, match="does not exist"):
            consumer.partitions_for(f"missing-{uuid.uuid4().hex[:8]}")
    with pystream.Consumer(
        bootstrap_servers=cluster.bootstrap, allow_auto_create_topics=True
    ) as consumer:
        assert len(consumer.partitions_for(f"auto-{uuid.uuid4().hex[:8]}")) >= 1
