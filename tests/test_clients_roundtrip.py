"""Real clients against ``pystream serve``: produce and consume with every client and codec.

confluent-kafka (librdkafka 2.16), kafka-python, aiokafka and kcat (librdkafka 2.0.2) each
produce the same kinds of records -- keys, headers, explicit timestamps, null values, empty
values, a 1 MiB value -- with every codec (none, gzip, snappy, lz4, zstd) into one topic per
codec, and each client then consumes every topic and must read back exactly what all four
wrote.  So each codec is checked in both directions: compressed by one client, decompressed
by all the others.  Further tests: the clients' murmur2 partitioners agree with where keys
land, ``offsets_for_times`` and watermarks per client.

One broker serves the whole module (``message.max.bytes`` raised so 1 MiB values fit).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as AioTopicPartition
from broker_process import BrokerProcess
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition
from kafka.partitioner.default import murmur2

from pystream.protocol.messages.api_versions import ApiVersionsRequest

KCAT = "/usr/bin/kcat"
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
CLIENTS = ["confluent", "kafka-python", "aiokafka", "kcat"]
BIG = b"0123456789abcdef" * 65536  # 1 MiB, printable (kcat reads values from lines)
TS0 = 1_600_000_000_000
KEY_TOPIC = "keys6"
KEY_PARTITIONS = 6
TIMES_TOPIC = "times"
DEADLINE = 60.0


class Rec(NamedTuple):
    """A record as produced / as consumed.  ``timestamp`` None: the producer did not set one."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp: int | None = None


def _records_for(client: str) -> list[Rec]:
    """What each client produces: the same shapes, told apart by key."""
    tag = client.encode()
    if client == "kcat":
        # kcat: one header set for all messages of a run, no per-message timestamps;
        # the null value comes from a second run with -Z (empty line value -> null).
        headers = (("h1", b"v1"), ("h2", b""))
        return [
            Rec(b"kcat-plain", b"hello kcat", headers),
            Rec(b"kcat-empty", b"", headers),
            Rec(None, b"kcat without key", headers),
            Rec(b"kcat-big", BIG, headers),
            Rec(b"kcat-null", None),
        ]
    return [
        Rec(tag + b"-plain", b"hello " + tag, (("h1", b"v1"), ("h2", b"")), TS0),
        Rec(tag + b"-null", None, (), TS0 + 1),
        Rec(tag + b"-empty", b"", (("only", b"header"),), TS0 + 2),
        Rec(None, tag + b" without key", (), TS0 + 3),
        Rec(tag + b"-big", BIG, (), TS0 + 4),
    ]


# --- producers -------------------------------------------------------------------------------


def produce_confluent(
    bootstrap: str, topic: str, records: list[Rec], codec: str = "none", **config: Any
) -> list[tuple[int, int]]:
    """Produce with librdkafka; returns (partition, offset) per record from delivery reports."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": codec,
            "message.max.bytes": 4_000_000,
            "linger.ms": 5,
            **config,
        }
    )
    acks: dict[int, tuple[int, int]] = {}
    errors: list[Any] = []

    def report(index: int) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(err)
            else:
                acks[index] = (msg.partition(), msg.offset())

        return on_delivery

    for i, rec in enumerate(records):
        kwargs: dict[str, Any] = {"key": rec.key, "on_delivery": report(i)}
        if rec.headers:
            kwargs["headers"] = list(rec.headers)
        if rec.timestamp is not None:
            kwargs["timestamp"] = rec.timestamp
        producer.produce(topic, rec.value, **kwargs)
    assert producer.flush(DEADLINE) == 0
    assert errors == []
    return [acks[i] for i in range(len(records))]


def produce_kafka_python(
    bootstrap: str, topic: str, records: list[Rec], codec: str = "none", **config: Any
) -> list[tuple[int, int]]:
    """Produce with kafka-python (idempotence off until the broker has InitProducerId)."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        compression_type=None if codec == "none" else codec,
        enable_idempotence=False,
        max_request_size=4_000_000,
        linger_ms=5,
        **config,
    )
    try:
        futures = [
            producer.send(
                topic, rec.value, key=rec.key, headers=list(rec.headers), timestamp_ms=rec.timestamp
            )
            for rec in records
        ]
        producer.flush(DEADLINE)
        metadata = [future.get(DEADLINE) for future in futures]
    finally:
        producer.close(DEADLINE)
    return [(m.partition, m.offset) for m in metadata]


def produce_aiokafka(
    bootstrap: str, topic: str, records: list[Rec], codec: str = "none", **config: Any
) -> list[tuple[int, int]]:
    """Produce with aiokafka: all sends queued, then every acknowledgement awaited."""

    async def main() -> list[tuple[int, int]]:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            compression_type=None if codec == "none" else codec,
            max_request_size=4_000_000,
            linger_ms=5,
            request_timeout_ms=int(DEADLINE * 1000),
            **config,
        )
        await producer.start()
        try:
            futures = [
                await producer.send(
                    topic,
                    rec.value,
                    key=rec.key,
                    headers=list(rec.headers),
                    timestamp_ms=rec.timestamp,
                )
                for rec in records
            ]
            metadata = await asyncio.wait_for(asyncio.gather(*futures), DEADLINE)
        finally:
            await producer.stop()
        return [(m.partition, m.offset) for m in metadata]

    return asyncio.run(main())


def kcat(*args: str, stdin: bytes | None = None) -> bytes:
    """Run kcat to completion; its exit code must be 0."""
    result = subprocess.run(
        [KCAT, *args], input=stdin, capture_output=True, timeout=DEADLINE, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def produce_kcat(bootstrap: str, topic: str, records: list[Rec], codec: str = "none") -> None:
    """Produce ``_records_for("kcat")`` lines: ``key:value``, one run for headers, one for null."""
    common = ["-b", bootstrap, "-P", "-t", topic, "-K:", "-z", codec]
    common += ["-X", "message.max.bytes=4000000", "-X", "linger.ms=5"]
    with_headers = [r for r in records if r.value is not None]
    nulls = [r for r in records if r.value is None]
    lines = b"".join(_kcat_line(r) for r in with_headers)
    headers = [f"{k}={(v or b'').decode()}" for k, v in with_headers[0].headers]
    kcat(*common, *[arg for header in headers for arg in ("-H", header)], stdin=lines)
    kcat(*common, "-Z", stdin=b"".join(_kcat_line(r) for r in nulls))


def _kcat_line(rec: Rec) -> bytes:
    """``key:value`` (no key: just the value, which must then hold no colon)."""
    key = b"" if rec.key is None else rec.key + b":"
    return key + (rec.value or b"") + b"\n"


PRODUCERS = {
    "confluent": produce_confluent,
    "kafka-python": produce_kafka_python,
    "aiokafka": produce_aiokafka,
    "kcat": produce_kcat,
}


# --- consumers -------------------------------------------------------------------------------


class Got(NamedTuple):
    """A consumed record, normalised across clients."""

    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_type: str  # "create" | "append"
    timestamp: int


def consume_confluent(
    bootstrap: str, wanted: dict[tuple[str, int], int], **config: Any
) -> dict[tuple[str, int], list[Got]]:
    """Read ``count`` records from offset 0 of each (topic, partition) with librdkafka."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "roundtrip",
            "enable.auto.commit": False,
            **config,
        }
    )
    got: dict[tuple[str, int], list[Got]] = {tp: [] for tp in wanted}
    consumer.assign([TopicPartition(t, p, 0) for t, p in wanted])
    deadline = time.monotonic() + DEADLINE
    try:
        while any(len(got[tp]) < n for tp, n in wanted.items()) and time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.5):
                assert msg.error() is None, msg.error()
                ts_type, ts = msg.timestamp()
                got[(msg.topic(), msg.partition())].append(
                    Got(
                        msg.offset(),
                        msg.key(),
                        msg.value(),
                        tuple(msg.headers() or ()),
                        "create" if ts_type == TIMESTAMP_CREATE_TIME else "append",
                        ts,
                    )
                )
    finally:
        consumer.close()
    return got


def consume_kafka_python(
    bootstrap: str, wanted: dict[tuple[str, int], int]
) -> dict[tuple[str, int], list[Got]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    got: dict[tuple[str, int], list[Got]] = {tp: [] for tp in wanted}
    partitions = [KpTopicPartition(t, p) for t, p in wanted]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    deadline = time.monotonic() + DEADLINE
    try:
        while any(len(got[tp]) < n for tp, n in wanted.items()) and time.monotonic() < deadline:
            for tp, messages in consumer.poll(500).items():
                got[(tp.topic, tp.partition)] += [
                    Got(
                        m.offset,
                        m.key,
                        m.value,
                        tuple(m.headers),
                        "create" if m.timestamp_type == 0 else "append",
                        m.timestamp,
                    )
                    for m in messages
                ]
    finally:
        consumer.close()
    return got


def consume_aiokafka(
    bootstrap: str, wanted: dict[tuple[str, int], int]
) -> dict[tuple[str, int], list[Got]]:
    async def main() -> dict[tuple[str, int], list[Got]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        got: dict[tuple[str, int], list[Got]] = {tp: [] for tp in wanted}
        partitions = [AioTopicPartition(t, p) for t, p in wanted]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + DEADLINE
        try:
            while any(len(got[tp]) < n for tp, n in wanted.items()) and time.monotonic() < deadline:
                for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                    got[(tp.topic, tp.partition)] += [
                        Got(
                            m.offset,
                            m.key,
                            m.value,
                            tuple(m.headers),
                            "create" if m.timestamp_type == 0 else "append",
                            m.timestamp,
                        )
                        for m in messages
                    ]
        finally:
            await consumer.stop()
        return got

    return asyncio.run(main())


def _kcat_bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def consume_kcat(
    bootstrap: str, wanted: dict[tuple[str, int], int]
) -> dict[tuple[str, int], list[Got]]:
    """``kcat -C -e -J`` per partition: reads from the beginning to the end and exits."""
    got: dict[tuple[str, int], list[Got]] = {}
    for topic, partition in wanted:
        args = f"-C -t {topic} -p {partition} -o beginning -e -J -q".split()
        out = kcat("-b", bootstrap, *args)
        rows = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        got[(topic, partition)] = [
            Got(
                row["offset"],
                _kcat_bytes(row["key"]),
                _kcat_bytes(row["payload"]),
                tuple(
                    (row["headers"][i], _kcat_bytes(row["headers"][i + 1]))
                    for i in range(0, len(row.get("headers") or []), 2)
                ),
                row["tstype"],
                row["ts"],
            )
            for row in rows
        ]
    return got


CONSUMERS = {
    "confluent": consume_confluent,
    "kafka-python": consume_kafka_python,
    "aiokafka": consume_aiokafka,
    "kcat": consume_kcat,
}


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for the module; 1 MiB values fit (message.max.bytes = 4 MiB)."""
    process = BrokerProcess(
        tmp_path_factory.mktemp("roundtrip") / "broker", {"message.max.bytes": "4194304"}
    )
    process.precreate_topic(KEY_TOPIC, KEY_PARTITIONS)
    process.start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def produced(shared_broker: BrokerProcess) -> dict[str, list[Rec]]:
    """Every client produces its records into ``roundtrip-<codec>``, in CLIENTS order.

    Returns what each topic must hold, in offset order.
    """
    expected: dict[str, list[Rec]] = {}
    for codec in CODECS:
        topic = f"roundtrip-{codec}"
        expected[topic] = []
        for client in CLIENTS:
            records = _records_for(client)
            acks = PRODUCERS[client](shared_broker.bootstrap, topic, records, codec)
            if acks is not None:
                first = len(expected[topic])
                assert acks == [(0, first + i) for i in range(len(records))], (client, codec)
            expected[topic] += records
    return expected


# --- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("consumer", CLIENTS)
def test_every_client_reads_what_every_client_wrote_with_every_codec(
    shared_broker: BrokerProcess, produced: dict[str, list[Rec]], consumer: str
) -> None:
    wanted = {(topic, 0): len(records) for topic, records in produced.items()}
    got = CONSUMERS[consumer](shared_broker.bootstrap, wanted)
    for topic, expected in produced.items():
        records = got[(topic, 0)]
        assert [r.offset for r in records] == list(range(len(expected))), topic
        for rec, read in zip(expected, records, strict=True):
            where = f"{topic} offset {read.offset} read by {consumer}"
            assert (read.key, read.value) == (rec.key, rec.value), where
            assert read.headers == rec.headers, where
            assert read.timestamp_type == "create", where
            if rec.timestamp is not None:
                assert read.timestamp == rec.timestamp, where
            else:
                assert read.timestamp > TS0, where  # kcat: the producer's clock


def test_partitioners_agree_with_where_keys_land(shared_broker: BrokerProcess) -> None:
    """librdkafka's murmur2_random, kafka-python's and aiokafka's default partitioners
    and kcat (librdkafka 2.0.2, murmur2_random) put each key on murmur2(key) % n."""
    keys = [b"key-%d" % i for i in range(120)] + [b"", b"\x00\xff", "ключ".encode()]
    expected = {key: (murmur2(key) & 0x7FFFFFFF) % KEY_PARTITIONS for key in keys}
    assert len(set(expected.values())) == KEY_PARTITIONS  # the keys spread over all partitions
    bootstrap = shared_broker.bootstrap
    for client in ("confluent", "kafka-python", "aiokafka"):
        records = [Rec(key, client.encode()) for key in keys]
        extra = {"partitioner": "murmur2_random"} if client == "confluent" else {}
        acks = PRODUCERS[client](bootstrap, KEY_TOPIC, records, **extra)
        assert [partition for partition, _ in acks] == [expected[k] for k in keys], client
    printable = [k for k in keys if k and k.isascii() and b":" not in k and b"\n" not in k]
    lines = b"".join(k + b":kcat\n" for k in printable)
    args = f"-P -t {KEY_TOPIC} -K: -X partitioner=murmur2_random".split()
    kcat("-b", bootstrap, *args, stdin=lines)
    # Where did they really land?  Every partition read back to its end.
    counts = {
        p: sum(1 for k in keys if expected[k] == p) * 3
        + sum(1 for k in printable if expected[k] == p)
        for p in range(KEY_PARTITIONS)
    }
    got = consume_confluent(bootstrap, {(KEY_TOPIC, p): n for p, n in counts.items()})
    for partition in range(KEY_PARTITIONS):
        records = got[(KEY_TOPIC, partition)]
        assert len(records) == counts[partition]
        for record in records:
            assert record.key is not None
            assert expected[record.key] == partition, (record.key, record.value, partition)
    landed = {(r.key, r.value) for records in got.values() for r in records}
    for client in ("confluent", "kafka-python", "aiokafka"):
        assert {k for k, v in landed if v == client.encode()} == set(keys)
    assert {k for k, v in landed if v == b"kcat"} == set(printable)


@pytest.fixture(scope="module")
def times_topic(shared_broker: BrokerProcess) -> list[int]:
    """Five records with CreateTime 1000, 2000, ... 5000 at offsets 0..4."""
    stamps = [1000 * (i + 1) for i in range(5)]
    records = [Rec(b"t", b"%d" % ts, (), ts) for ts in stamps]
    acks = produce_confluent(shared_broker.bootstrap, TIMES_TOPIC, records)
    assert acks == [(0, i) for i in range(5)]
    return stamps


# query timestamp -> expected offset (None: no record at or after it)
TIME_QUERIES = {0: 0, 1000: 0, 1001: 1, 2500: 2, 5000: 4, 5001: None}


def _offsets_for_times_confluent(bootstrap: str) -> dict[int, int | None]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "times"})
    try:
        out = {}
        for ts in TIME_QUERIES:
            (tp,) = consumer.offsets_for_times([TopicPartition(TIMES_TOPIC, 0, ts)], 30)
            assert tp.error is None
            out[ts] = None if tp.offset < 0 else tp.offset
        low, high = consumer.get_watermark_offsets(TopicPartition(TIMES_TOPIC, 0), 30)
        out[-2], out[-1] = low, high
        return out
    finally:
        consumer.close()


def _offsets_for_times_kafka_python(bootstrap: str) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    tp = KpTopicPartition(TIMES_TOPIC, 0)
    try:
        out: dict[int, int | None] = {}
        for ts in TIME_QUERIES:
            found = consumer.offsets_for_times({tp: ts})[tp]
            out[ts] = None if found is None else found.offset
            if found is not None:
                assert found.timestamp == 1000 * (found.offset + 1)
        out[-2] = consumer.beginning_offsets([tp])[tp]
        out[-1] = consumer.end_offsets([tp])[tp]
        return out
    finally:
        consumer.close()


def _offsets_for_times_aiokafka(bootstrap: str) -> dict[int, int | None]:
    async def main() -> dict[int, int | None]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        tp = AioTopicPartition(TIMES_TOPIC, 0)
        try:
            out: dict[int, int | None] = {}
            for ts in TIME_QUERIES:
                found = (await consumer.offsets_for_times({tp: ts}))[tp]
                out[ts] = None if found is None else found.offset
                if found is not None:
                    assert found.timestamp == 1000 * (found.offset + 1)
            out[-2] = (await consumer.beginning_offsets([tp]))[tp]
            out[-1] = (await consumer.end_offsets([tp]))[tp]
            return out
        finally:
            await consumer.stop()

    return asyncio.run(main())


def _offsets_for_times_kcat(bootstrap: str) -> dict[int, int | None]:
    out: dict[int, int | None] = {}
    for ts in [*TIME_QUERIES, -2, -1]:
        text = kcat("-b", bootstrap, "-Q", "-t", f"{TIMES_TOPIC}:0:{ts}").decode()
        # "times [0] offset 2"
        offset = int(text.split("offset")[1].split()[0])
        out[ts] = None if offset < 0 and ts >= 0 else offset
    return out


@pytest.mark.parametrize("client", CLIENTS)
def test_offsets_for_times_and_watermarks(
    shared_broker: BrokerProcess, times_topic: list[int], client: str
) -> None:
    lookup = {
        "confluent": _offsets_for_times_confluent,
        "kafka-python": _offsets_for_times_kafka_python,
        "aiokafka": _offsets_for_times_aiokafka,
        "kcat": _offsets_for_times_kcat,
    }[client]
    assert lookup(shared_broker.bootstrap) == {**TIME_QUERIES, -2: 0, -1: len(times_topic)}


@pytest.mark.parametrize("client", ["kafka-python", "confluent", "aiokafka"])
def test_idempotent_producers(shared_broker: BrokerProcess, client: str) -> None:
    """kafka-python's defaults (enable_idempotence=True), and idempotence turned on in
    librdkafka and aiokafka, need InitProducerId (api key 22).

    Skipped while the broker does not advertise it; then it must just work.
    """
    with shared_broker.wire() as wire:
        advertised = wire.request(18, 3, ApiVersionsRequest(client_software_name="t"))
    if 22 not in {k.api_key for k in advertised.api_keys}:
        pytest.skip("InitProducerId (22) is not implemented yet: enable once it is")
    topic = f"idempotent-{client}"
    records = [Rec(b"k", b"v%d" % i, (), TS0 + i) for i in range(20)]
    if client == "kafka-python":
        producer = KafkaProducer(bootstrap_servers=shared_broker.bootstrap)  # the defaults
        assert producer.config["enable_idempotence"] is True
        try:
            futures = [producer.send(topic, r.value, key=r.key) for r in records]
            producer.flush(DEADLINE)
            acks = [(f.get(DEADLINE).partition, f.get(DEADLINE).offset) for f in futures]
        finally:
            producer.close(DEADLINE)
    elif client == "confluent":
        acks = produce_confluent(
            shared_broker.bootstrap, topic, records, **{"enable.idempotence": True}
        )
    else:
        acks = produce_aiokafka(shared_broker.bootstrap, topic, records, enable_idempotence=True)
    assert acks == [(0, i) for i in range(20)]
    got = consume_kafka_python(shared_broker.bootstrap, {(topic, 0): 20})
    assert [r.value for r in got[(topic, 0)]] == [r.value for r in records]


def test_big_value_is_rejected_at_the_default_max_message_bytes(tmp_path: Path) -> None:
    """A 1 MiB value does not fit Kafka's default message.max.bytes (1 MiB + 12): every
    client gets MESSAGE_TOO_LARGE, and what fits is stored."""
    process = BrokerProcess(tmp_path / "broker").start()
    try:
        producer = Producer(
            {"bootstrap.servers": process.bootstrap, "message.max.bytes": 4_000_000}
        )
        errors: list[Any] = []
        for value in (BIG, b"small"):  # separate requests: one batch each
            producer.produce("limits", value, on_delivery=lambda err, msg: errors.append(err))
            assert producer.flush(DEADLINE) == 0
        assert errors[0] is not None and errors[0].name() == "MSG_SIZE_TOO_LARGE"
        assert errors[1] is None
        got = consume_confluent(process.bootstrap, {("limits", 0): 1})
        assert [(r.offset, r.value) for r in got[("limits", 0)]] == [(0, b"small")]
    finally:
        process.close()
