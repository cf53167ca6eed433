"""Raw Kafka protocol against ``pystream serve``: produce validation, ApiVersions, Metadata.

Requests are encoded with pystream's own codec and sent over a plain socket
(``BrokerProcess.wire()``); record batches are built with ``pystream._core.records`` and
corrupted on purpose.  Where a real client sees the same error, it is checked too.

One broker for the module, with ``auto.create.topics.enable=false`` and topics (and their
per-topic configs) created in its metadata store before it starts.
"""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError as AioKafkaTimeoutError
from aiokafka.errors import UnknownTopicOrPartitionError as AioUnknownTopicError
from aiokafka.structs import TopicPartition as AioTopicPartition
from broker_process import BrokerProcess, KafkaWire
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition
from kafka.errors import InvalidRecordError as KpInvalidRecordError
from kafka.errors import KafkaTimeoutError

import pystream
from pystream._core import records as core_records
from pystream._core.compression import compress
from pystream._core.crc32c import crc32c
from pystream.protocol.messages.api_versions import ApiVersionsRequest, ApiVersionsResponse
from pystream.protocol.messages.fetch import FetchRequest
from pystream.protocol.messages.list_offsets import ListOffsetsRequest
from pystream.protocol.messages.metadata import MetadataRequest
from pystream.protocol.messages.produce import ProduceRequest

NONE = 0
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
MESSAGE_TOO_LARGE = 10
INVALID_REQUIRED_ACKS = 21
INVALID_REQUEST = 42
UNSUPPORTED_VERSION = 35
INVALID_RECORD = 87
INVALID_TIMESTAMP = 32
UNKNOWN_TOPIC_ID = 100

TOPIC = "plain"
SMALL = "small-limit"  # max.message.bytes=2000
APPEND_TIME = "append-time"  # message.timestamp.type=LogAppendTime
GZIP_TOPIC = "gzip-topic"  # compression.type=gzip
ZSTD_TOPIC = "zstd-topic"  # compression.type=zstd
COMPACTED = "compacted"  # cleanup.policy=compact
COMPACT_DELETE = "compact-delete"  # cleanup.policy=compact,delete
TIME_WINDOW = "time-window"  # message.timestamp.before/after.max.ms = 1 hour
SMALL_LIMIT = 2000
HOUR_MS = 3_600_000
TOPICS = {
    TOPIC: {},
    SMALL: {"max.message.bytes": str(SMALL_LIMIT)},
    APPEND_TIME: {"message.timestamp.type": "LogAppendTime"},
    GZIP_TOPIC: {"compression.type": "gzip"},
    ZSTD_TOPIC: {"compression.type": "zstd"},
    COMPACTED: {"cleanup.policy": "compact"},
    COMPACT_DELETE: {"cleanup.policy": "compact,delete"},
    TIME_WINDOW: {
        "message.timestamp.before.max.ms": str(HOUR_MS),
        "message.timestamp.after.max.ms": str(HOUR_MS),
    },
}
DEADLINE = 30.0
CODECS = tuple(range(5))  # none, gzip, snappy, lz4, zstd (Kafka's codec ids)


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("protocol") / "broker", {"auto.create.topics.enable": "false"}
    )
    for name, configs in TOPICS.items():
        process.precreate_topic(name, 1, configs)
    process.start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def wire(shared_broker: BrokerProcess) -> Iterator[KafkaWire]:
    with shared_broker.wire() as connection:
        yield connection


# --- helpers ---------------------------------------------------------------------------------


def batch(*values: bytes, compression: int = 0, timestamp: int = 1_000) -> bytes:
    return core_records.build_batch(
        [(timestamp + i, b"key", value, [("h", b"x")]) for i, value in enumerate(values)],
        compression,
    )


def with_crc(data: bytes | bytearray) -> bytes:
    """Recompute the CRC-32C (attributes to the end), as a deliberate liar would."""
    out = bytearray(data)
    out[17:21] = struct.pack(">I", crc32c(bytes(out[21:])))
    return bytes(out)


def produce(
    wire: KafkaWire,
    records: bytes | None,
    topic: str = TOPIC,
    partition: int = 0,
    acks: int = -1,
    version: int = 9,
) -> Any:
    """One Produce request for one partition; returns that partition's response."""
    request = ProduceRequest(
        acks=acks,
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
    response = wire.request(0, version, request)
    (topic_response,) = response.responses
    assert topic_response.name == topic
    (partition_response,) = topic_response.partition_responses
    assert partition_response.index == partition
    return partition_response


def fetch(wire: KafkaWire, topic: str, offset: int, partition: int = 0, version: int = 11) -> Any:
    request = FetchRequest(
        max_wait_ms=0,
        min_bytes=0,
        max_bytes=10 << 20,
        topics=[
            FetchRequest.FetchTopic(
                topic=topic,
                partitions=[
                    FetchRequest.FetchPartition(
                        partition=partition, fetch_offset=offset, partition_max_bytes=10 << 20
                    )
                ],
            )
        ],
    )
    response = wire.request(1, version, request)
    return response.responses[0].partitions[0]


def list_offset(wire: KafkaWire, topic: str, timestamp: int = -1, partition: int = 0) -> Any:
    request = ListOffsetsRequest(
        replica_id=-1,
        topics=[
            ListOffsetsRequest.ListOffsetsTopic(
                name=topic,
                partitions=[
                    ListOffsetsRequest.ListOffsetsPartition(
                        partition_index=partition, timestamp=timestamp
                    )
                ],
            )
        ],
    )
    return wire.request(2, 4, request).topics[0].partitions[0]


def end_offset(wire: KafkaWire, topic: str) -> int:
    response = list_offset(wire, topic)
    assert response.error_code == NONE
    return response.offset


def metadata(wire: KafkaWire, version: int, topics: list[str] | None, auto: bool = True) -> Any:
    wanted = (
        None if topics is None else [MetadataRequest.MetadataRequestTopic(name=t) for t in topics]
    )
    return wire.request(3, version, MetadataRequest(topics=wanted, allow_auto_topic_creation=auto))


# --- produce validation ----------------------------------------------------------------------


def test_valid_batches_get_consecutive_offsets(wire: KafkaWire) -> None:
    start = end_offset(wire, TOPIC)
    first = produce(wire, batch(b"a", b"b", b"c"))
    second = produce(wire, batch(b"d"), version=3)
    assert (first.error_code, first.base_offset) == (NONE, start)
    assert (second.error_code, second.base_offset) == (NONE, start + 3)
    assert first.log_append_time_ms == -1  # CreateTime topic
    assert end_offset(wire, TOPIC) == start + 4


def _flip_crc(data: bytes) -> bytes:
    out = bytearray(data)
    out[20] ^= 0x01
    return bytes(out)


def _set_magic(magic: int) -> Any:
    def corrupt(data: bytes) -> bytes:
        out = bytearray(data)
        out[16] = magic
        return bytes(out)

    return corrupt


def _set_field(position: int, fmt: str, value: int, fix_crc: bool = True) -> Any:
    def corrupt(data: bytes) -> bytes:
        out = bytearray(data)
        struct.pack_into(fmt, out, position, value)
        return with_crc(out) if fix_crc else bytes(out)

    return corrupt


CORRUPTIONS = {
    # name: (corrupt(batch) -> bytes, expected error code)
    "crc-flipped": (_flip_crc, CORRUPT_MESSAGE),
    "body-byte-flipped": (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), CORRUPT_MESSAGE),
    "magic-0": (_set_magic(0), INVALID_RECORD),
    "magic-1": (_set_magic(1), INVALID_RECORD),
    "magic-3": (_set_magic(3), CORRUPT_MESSAGE),
    "truncated": (lambda b: b[:-5], CORRUPT_MESSAGE),
    "header-only": (lambda b: b[:40], CORRUPT_MESSAGE),
    "trailing-garbage": (lambda b: b + b"\x00\x01\x02", CORRUPT_MESSAGE),
    "length-past-end": (_set_field(8, ">i", 1 << 20, fix_crc=False), CORRUPT_MESSAGE),
    "length-negative": (_set_field(8, ">i", -1, fix_crc=False), CORRUPT_MESSAGE),
    "length-too-small": (_set_field(8, ">i", 5, fix_crc=False), CORRUPT_MESSAGE),
    "count-above-offsets": (_set_field(57, ">i", 3), INVALID_RECORD),
    "count-zero": (_set_field(57, ">i", 0), INVALID_RECORD),
    "count-negative": (_set_field(57, ">i", -1), INVALID_RECORD),
    "unknown-codec-7": (_set_field(21, ">h", 7), INVALID_RECORD),
    "two-batches": (lambda b: b + b, INVALID_RECORD),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_bad_batches_are_refused_and_nothing_is_appended(
    shared_broker: BrokerProcess, wire: KafkaWire, name: str
) -> None:
    corrupt, expected = CORRUPTIONS[name]
    before = end_offset(wire, TOPIC)
    response = produce(wire, corrupt(batch(b"one", b"two")))
    assert response.error_code == expected, response.error_message
    assert response.base_offset == -1
    assert response.error_message  # v8+: says what was wrong
    assert end_offset(wire, TOPIC) == before
    # The connection stays usable and the log keeps accepting good batches.
    assert produce(wire, batch(b"good")).base_offset == before


def test_empty_and_null_records_are_refused(wire: KafkaWire) -> None:
    before = end_offset(wire, TOPIC)
    assert produce(wire, b"").error_code == INVALID_RECORD
    assert produce(wire, None).error_code == INVALID_RECORD
    assert end_offset(wire, TOPIC) == before


def test_batch_claiming_more_records_than_it_holds_is_refused(wire: KafkaWire) -> None:
    before = end_offset(wire, TOPIC)
    lie = bytearray(batch(b"one", b"two"))
    struct.pack_into(">i", lie, 23, 2)  # last offset delta: 1 -> 2
    struct.pack_into(">i", lie, 57, 3)  # record count: 2 -> 3
    response = produce(wire, with_crc(lie))
    assert response.error_code in (CORRUPT_MESSAGE, INVALID_RECORD)
    assert end_offset(wire, TOPIC) == before


@pytest.mark.parametrize("acks", [2, -2, 100])
def test_invalid_required_acks(wire: KafkaWire, acks: int) -> None:
    before = end_offset(wire, TOPIC)
    response = produce(wire, batch(b"x"), acks=acks)
    assert response.error_code == INVALID_REQUIRED_ACKS
    assert str(acks) in response.error_message
    assert end_offset(wire, TOPIC) == before


def test_acks_zero_gets_no_response_but_appends(wire: KafkaWire) -> None:
    before = end_offset(wire, TOPIC)
    request = ProduceRequest(
        acks=0,
        timeout_ms=5000,
        topic_data=[
            ProduceRequest.TopicProduceData(
                name=TOPIC,
                partition_data=[ProduceRequest.PartitionProduceData(index=0, records=batch(b"z"))],
            )
        ],
    )
    wire.send(wire.frame(0, 9, request))
    # The next response on the connection is the ListOffsets answer: acks=0 got none.
    assert end_offset(wire, TOPIC) == before + 1


def test_message_too_large_per_topic(wire: KafkaWire) -> None:
    big = batch(b"x" * (SMALL_LIMIT + 100))
    assert len(big) > SMALL_LIMIT
    response = produce(wire, big, topic=SMALL)
    assert response.error_code == MESSAGE_TOO_LARGE
    assert "max.message.bytes" in response.error_message
    assert end_offset(wire, SMALL) == 0
    # The same batch fits the broker default on another topic; small batches fit this one.
    assert produce(wire, big, topic=TOPIC).error_code == NONE
    assert produce(wire, batch(b"fits"), topic=SMALL).error_code == NONE
    # A compressed batch is measured as sent (compressed), as in Kafka.
    squeezed = batch(b"x" * (SMALL_LIMIT * 4), compression=core_records.COMPRESSION_GZIP)
    assert len(squeezed) < SMALL_LIMIT
    assert produce(wire, squeezed, topic=SMALL).error_code == NONE


def test_message_too_large_reaches_librdkafka(shared_broker: BrokerProcess) -> None:
    producer = Producer({"bootstrap.servers": shared_broker.bootstrap, "linger.ms": 0})
    errors: list[Any] = []
    producer.produce(SMALL, b"y" * (SMALL_LIMIT * 2), on_delivery=lambda e, m: errors.append(e))
    assert producer.flush(DEADLINE) == 0
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].name() == "MSG_SIZE_TOO_LARGE"


def test_unknown_topic_and_partition_with_auto_create_off(wire: KafkaWire) -> None:
    assert produce(wire, batch(b"x"), topic="nope").error_code == UNKNOWN_TOPIC_OR_PARTITION
    assert produce(wire, batch(b"x"), partition=5).error_code == UNKNOWN_TOPIC_OR_PARTITION
    assert produce(wire, batch(b"x"), partition=-1).error_code == UNKNOWN_TOPIC_OR_PARTITION
    assert fetch(wire, "nope", 0).error_code == UNKNOWN_TOPIC_OR_PARTITION
    assert fetch(wire, TOPIC, 0, partition=9).error_code == UNKNOWN_TOPIC_OR_PARTITION
    assert list_offset(wire, "nope").error_code == UNKNOWN_TOPIC_OR_PARTITION
    # Metadata asking for it (even allowing auto-creation) does not create it.
    for version in (0, 1, 4, 9, 12):
        response = metadata(wire, version, ["nope"], auto=True)
        (topic,) = response.topics
        assert (topic.name, topic.error_code) == ("nope", UNKNOWN_TOPIC_OR_PARTITION)
    listed = {t.name for t in metadata(wire, 12, None).topics}
    assert "nope" not in listed and set(TOPICS) <= listed


def test_unknown_topic_reaches_librdkafka(shared_broker: BrokerProcess) -> None:
    producer = Producer(
        {
            "bootstrap.servers": shared_broker.bootstrap,
            "topic.metadata.propagation.max.ms": 500,
            "message.timeout.ms": 20000,
        }
    )
    errors: list[Any] = []
    producer.produce("never-created", b"x", on_delivery=lambda e, m: errors.append(e))
    assert producer.flush(DEADLINE) == 0
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].name() in ("UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC"), errors[0]


def _fetch_batch_bytes(wire: KafkaWire, topic: str, offset: int) -> bytes:
    response = fetch(wire, topic, offset)
    assert response.error_code == NONE
    data = bytes(response.records)
    header = core_records.read_batch_header(data)
    assert header.base_offset == offset
    return data[: header.size]


@pytest.mark.parametrize("codec", CODECS)
def test_compression_type_producer_keeps_the_producers_bytes(wire: KafkaWire, codec: int) -> None:
    sent = batch(b"alpha" * 50, b"beta" * 50, b"", compression=codec)
    response = produce(wire, sent)
    assert response.error_code == NONE
    stored = _fetch_batch_bytes(wire, TOPIC, response.base_offset)
    # Only the base offset and the partition leader epoch (both outside the CRC) change.
    assert stored[8:12] == sent[8:12] and stored[16:] == sent[16:]
    header = core_records.read_batch_header(stored)
    assert header.compression == codec
    assert [r.value for r in core_records.iter_records(stored)] == [
        b"alpha" * 50,
        b"beta" * 50,
        b"",
    ]


def test_topic_compression_type_recompresses(wire: KafkaWire) -> None:
    response = produce(wire, batch(b"v" * 200), topic=GZIP_TOPIC)
    assert response.error_code == NONE
    stored = _fetch_batch_bytes(wire, GZIP_TOPIC, response.base_offset)
    assert core_records.read_batch_header(stored).compression == core_records.COMPRESSION_GZIP
    assert [r.value for r in core_records.iter_records(stored)] == [b"v" * 200]


@pytest.mark.parametrize("codec", [core_records.COMPRESSION_NONE, core_records.COMPRESSION_LZ4])
def test_log_append_time_stamps_the_batch_in_place(
    shared_broker: BrokerProcess, wire: KafkaWire, codec: int
) -> None:
    sent = batch(b"first", b"second", compression=codec, timestamp=1_000)
    response = produce(wire, sent, topic=APPEND_TIME)
    assert response.error_code == NONE
    stamp = response.log_append_time_ms
    assert stamp > 1_000_000_000_000  # the broker's clock, not the producer's 1000
    stored = _fetch_batch_bytes(wire, APPEND_TIME, response.base_offset)
    header = core_records.read_batch_header(stored)
    assert header.timestamp_type == core_records.TIMESTAMP_LOG_APPEND_TIME
    assert header.max_timestamp == stamp
    assert header.base_timestamp == 1_000  # first timestamp kept, as Kafka does
    # Same records section, only the header fields changed; the new CRC is valid.
    assert stored[61:] == sent[61:]
    assert stored[57:61] == sent[57:61]
    batch_obj = core_records.RecordBatch(stored, check_crc=True)
    assert [(r.value, r.timestamp) for r in batch_obj] == [(b"first", stamp), (b"second", stamp)]
    # A real consumer (which checks CRCs) sees LogAppendTime.
    consumer = Consumer(
        {
            "bootstrap.servers": shared_broker.bootstrap,
            "group.id": "lat",
            "enable.auto.commit": False,  # no group coordinator yet: close must not wait
            "check.crcs": True,
        }
    )
    try:
        consumer.assign([TopicPartition(APPEND_TIME, 0, response.base_offset)])
        seen: list[Any] = []
        deadline = time.monotonic() + DEADLINE
        while len(seen) < 2 and time.monotonic() < deadline:
            for message in consumer.consume(10, 0.5):
                assert message.error() is None, message.error()
                seen.append((message.value(), message.timestamp()))
    finally:
        consumer.close()
    assert seen[:2] == [
        (b"first", (TIMESTAMP_LOG_APPEND_TIME, stamp)),
        (b"second", (TIMESTAMP_LOG_APPEND_TIME, stamp)),
    ]


# --- per-record validation (Kafka's LogValidator) ---------------------------------------------


def _records_of(data: bytes) -> list[tuple[bytes | None, bytes | None]]:
    return [(r.key, r.value) for r in core_records.iter_records(data)]


def _batch_with_records_section(section: bytes, count: int, compression: int = 0) -> bytes:
    """A batch claiming ``count`` records whose records section is ``section`` as given
    (compressed by ``compression``), header and CRC consistent: a liar only the records
    themselves give away."""
    out = bytearray(batch(*[b"x"] * count)[:61])
    out += compress(compression, section) if compression else section
    struct.pack_into(">i", out, 8, len(out) - 12)
    struct.pack_into(">h", out, 21, compression)
    return with_crc(out)


@pytest.mark.parametrize("topic", [COMPACTED, COMPACT_DELETE])
@pytest.mark.parametrize("codec", [core_records.COMPRESSION_NONE, core_records.COMPRESSION_LZ4])
def test_keyless_record_on_compacted_topic_is_refused(
    wire: KafkaWire, topic: str, codec: int
) -> None:
    before = end_offset(wire, topic)
    keyless = core_records.build_batch(
        [(1_000, b"k", b"keyed", []), (1_001, None, b"keyless", [])], codec
    )
    response = produce(wire, keyless, topic=topic)
    assert response.error_code == INVALID_RECORD, response.error_message
    record_error = (
        f"Compacted topic cannot accept message without key in topic partition {topic}-0."
    )
    assert record_error in response.error_message
    assert [(e.batch_index, e.batch_index_error_message) for e in response.record_errors] == [
        (1, record_error)
    ]
    assert response.base_offset == -1
    assert end_offset(wire, topic) == before
    # Keyed records, tombstones (null value) included, are fine.
    keyed = core_records.build_batch([(1_000, b"k", b"v", []), (1_001, b"k", None, [])], codec)
    assert produce(wire, keyed, topic=topic).base_offset == before
    assert end_offset(wire, topic) == before + 2


def test_keyless_record_on_compacted_topic_reaches_the_clients(
    shared_broker: BrokerProcess, wire: KafkaWire
) -> None:
    before = end_offset(wire, COMPACTED)
    producer = Producer(
        {"bootstrap.servers": shared_broker.bootstrap, "linger.ms": 0, "retries": 0}
    )
    errors: list[Any] = []
    producer.produce(COMPACTED, b"no key", on_delivery=lambda e, m: errors.append(e))
    assert producer.flush(DEADLINE) == 0
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].name() == "INVALID_RECORD", errors[0]
    kp = KafkaProducer(bootstrap_servers=shared_broker.bootstrap, retries=0)
    try:
        with pytest.raises(KpInvalidRecordError):
            kp.send(COMPACTED, b"no key either").get(timeout=DEADLINE)
    finally:
        kp.close()
    assert end_offset(wire, COMPACTED) == before


def test_record_offset_deltas_must_be_0_1_2(wire: KafkaWire) -> None:
    before = end_offset(wire, TOPIC)
    good = batch(b"one", b"two")
    # First record: length, attributes, timestamp delta (1 byte each), then its offset delta.
    assert good[61 + 3] == 0
    skewed = bytearray(good)
    skewed[61 + 3] = 2  # zig-zag 1: the first record claims offset delta 1
    response = produce(wire, with_crc(skewed))
    assert response.error_code == INVALID_RECORD
    assert "Record 0 has offset delta 1" in response.error_message
    assert [e.batch_index for e in response.record_errors] == [0]
    assert end_offset(wire, TOPIC) == before


@pytest.mark.parametrize("codec", [core_records.COMPRESSION_NONE, core_records.COMPRESSION_GZIP])
def test_records_must_fill_the_batch_exactly(wire: KafkaWire, codec: int) -> None:
    before = end_offset(wire, TOPIC)
    section = batch(b"one", b"two")[61:]
    trailing = _batch_with_records_section(section + b"\x00\x00\x00", 2, codec)
    response = produce(wire, trailing)
    assert response.error_code == INVALID_RECORD
    assert "remain after them" in response.error_message
    truncated = _batch_with_records_section(section[:-3], 2, codec)
    response = produce(wire, truncated)
    assert response.error_code == INVALID_RECORD, response.error_message
    assert end_offset(wire, TOPIC) == before


@pytest.mark.parametrize("codec", CODECS[1:])  # compressed ones
def test_compressed_batch_whose_records_do_not_parse_is_refused(
    wire: KafkaWire, codec: int
) -> None:
    before = end_offset(wire, TOPIC)
    garbage = _batch_with_records_section(b"\x7f" * 40, 2, codec)
    response = produce(wire, garbage)
    assert response.error_code == INVALID_RECORD, response.error_message
    # Compressed bytes that do not even decompress: CORRUPT_MESSAGE.
    undecodable = bytearray(batch(b"x" * 100, compression=codec))
    undecodable[61:] = b"\x13" * (len(undecodable) - 61)
    response = produce(wire, with_crc(undecodable))
    assert response.error_code == CORRUPT_MESSAGE, response.error_message
    assert end_offset(wire, TOPIC) == before


@pytest.mark.parametrize("codec", [core_records.COMPRESSION_NONE, core_records.COMPRESSION_SNAPPY])
def test_create_time_is_checked_per_record(wire: KafkaWire, codec: int) -> None:
    before = end_offset(wire, TIME_WINDOW)
    now = int(time.time() * 1000)
    stale = now - 2 * HOUR_MS
    # The header's first and max timestamps (now) are in range; the second record is not.
    records = [(now, b"k", b"fresh", []), (stale, b"k", b"stale", []), (now, b"k", b"ok", [])]
    response = produce(wire, core_records.build_batch(records, codec), topic=TIME_WINDOW)
    assert response.error_code == INVALID_TIMESTAMP, response.error_message
    assert "message.timestamp.before.max.ms" in response.error_message
    ((index, message),) = [
        (e.batch_index, e.batch_index_error_message) for e in response.record_errors
    ]
    assert index == 1
    assert message.startswith(f"Timestamp {stale} of message with offset 1 is out of range.")
    future = [(now, b"k", b"fresh", []), (now + 2 * HOUR_MS, b"k", b"future", [])]
    response = produce(wire, core_records.build_batch(future, codec), topic=TIME_WINDOW)
    assert response.error_code == INVALID_TIMESTAMP
    assert end_offset(wire, TIME_WINDOW) == before
    fine = [(now - HOUR_MS // 2, b"k", b"a", []), (now + HOUR_MS // 2, b"k", b"b", [])]
    assert produce(wire, core_records.build_batch(fine, codec), topic=TIME_WINDOW).error_code == 0
    assert end_offset(wire, TIME_WINDOW) == before + 2


def _segment_batch_codecs(shared_broker: BrokerProcess, topic: str) -> list[int]:
    """Codec of every batch in the partition's segment files, read from disk."""
    codecs = []
    for path in sorted((shared_broker.log_dir / f"{topic}-0").glob("*.log")):
        data = path.read_bytes()
        codecs += [b.header.compression for b in core_records.iter_batches(data)]
    return codecs


def test_topic_compression_type_zstd_every_client_reads_back(
    shared_broker: BrokerProcess,
) -> None:
    sent = [
        (
            b"key-%d" % i,
            b"value-%d" % i * 20,
            [("h", b"%d" % i), ("n", None)],
            1_700_000_000_000 + i,
        )
        for i in range(50)
    ]
    producer = Producer(
        {"bootstrap.servers": shared_broker.bootstrap, "compression.codec": "none", "linger.ms": 5}
    )
    for key, value, headers, timestamp in sent:
        producer.produce(ZSTD_TOPIC, value, key=key, headers=headers, timestamp=timestamp)
    assert producer.flush(DEADLINE) == 0
    codecs = _segment_batch_codecs(shared_broker, ZSTD_TOPIC)
    assert codecs and set(codecs) == {core_records.COMPRESSION_ZSTD}
    expected = [(k, v, [(h, hv) for h, hv in hs], ts) for k, v, hs, ts in sent]

    def settle(got: list[Any]) -> list[Any]:
        assert len(got) >= len(expected)
        return got[: len(expected)]

    # confluent-kafka
    consumer = Consumer(
        {
            "bootstrap.servers": shared_broker.bootstrap,
            "group.id": "zstd-readers",
            "enable.auto.commit": False,
            "check.crcs": True,
        }
    )
    got: list[Any] = []
    try:
        consumer.assign([TopicPartition(ZSTD_TOPIC, 0, 0)])
        deadline = time.monotonic() + DEADLINE
        while len(got) < len(expected) and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                assert message.error() is None, message.error()
                got.append(
                    (message.key(), message.value(), message.headers(), message.timestamp()[1])
                )
    finally:
        consumer.close()
    assert settle(got) == expected
    # kafka-python
    kp = KafkaConsumer(bootstrap_servers=shared_broker.bootstrap, enable_auto_commit=False)
    got = []
    try:
        tp = KpTopicPartition(ZSTD_TOPIC, 0)
        kp.assign([tp])
        kp.seek_to_beginning(tp)
        deadline = time.monotonic() + DEADLINE
        while len(got) < len(expected) and time.monotonic() < deadline:
            for messages in kp.poll(timeout_ms=500).values():
                got += [(m.key, m.value, list(m.headers), m.timestamp) for m in messages]
    finally:
        kp.close()
    assert settle(got) == expected

    # aiokafka
    async def aiokafka_read() -> list[Any]:
        aio = AIOKafkaConsumer(bootstrap_servers=shared_broker.bootstrap, enable_auto_commit=False)
        await aio.start()
        out: list[Any] = []
        try:
            tp = AioTopicPartition(ZSTD_TOPIC, 0)
            aio.assign([tp])
            await aio.seek_to_beginning(tp)
            deadline = time.monotonic() + DEADLINE
            while len(out) < len(expected) and time.monotonic() < deadline:
                for messages in (await aio.getmany(timeout_ms=500)).values():
                    out += [(m.key, m.value, list(m.headers), m.timestamp) for m in messages]
        finally:
            await aio.stop()
        return out

    assert settle(asyncio.run(aiokafka_read())) == expected
    # pystream's own client
    got = []
    with pystream.Consumer(
        bootstrap_servers=shared_broker.bootstrap, auto_offset_reset="earliest"
    ) as ours:
        ours.assign([(ZSTD_TOPIC, 0)])
        deadline = time.monotonic() + DEADLINE
        while len(got) < len(expected) and time.monotonic() < deadline:
            got += [(r.key, r.value, list(r.headers), r.timestamp) for r in ours.poll(0.5)]
    assert settle(got) == expected


@pytest.mark.parametrize("codec", CODECS[:-1])  # all but zstd
def test_topic_compression_type_keeps_batch_fields(wire: KafkaWire, codec: int) -> None:
    # An idempotent producer's batch in another codec: one zstd batch with the same
    # producer id/epoch/sequence, timestamps and records.
    records = [
        (1_700_000_000_000 + i, b"k%d" % i, b"v%d" % i * 30, [("h", b"x")]) for i in range(5)
    ]
    sent = core_records.build_batch(
        records, codec, producer_id=4242, producer_epoch=3, base_sequence=0
    )
    response = produce(wire, sent, topic=ZSTD_TOPIC)
    assert response.error_code == NONE, response.error_message
    stored = _fetch_batch_bytes(wire, ZSTD_TOPIC, response.base_offset)
    header = core_records.validate_batch(stored)  # CRC valid
    original = core_records.read_batch_header(sent)
    assert header.compression == core_records.COMPRESSION_ZSTD
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (4242, 3, 0)
    assert (header.base_timestamp, header.max_timestamp, header.record_count) == (
        original.base_timestamp,
        original.max_timestamp,
        5,
    )
    assert [
        (r.offset - response.base_offset, r.timestamp, r.key, r.value, r.headers)
        for r in core_records.iter_records(stored)
    ] == [(i, ts, k, v, h) for i, (ts, k, v, h) in enumerate(records)]
    # Already zstd: stored as sent (no recompression on the fast path).
    zstd = core_records.build_batch(records, core_records.COMPRESSION_ZSTD)
    response = produce(wire, zstd, topic=ZSTD_TOPIC)
    stored = _fetch_batch_bytes(wire, ZSTD_TOPIC, response.base_offset)
    assert stored[16:] == zstd[16:]


# --- ApiVersions -----------------------------------------------------------------------------


def _advertised(response: Any) -> dict[int, tuple[int, int]]:
    return {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}


def test_api_versions_every_supported_version_answers_the_same(wire: KafkaWire) -> None:
    answers = []
    for version in range(5):
        response = wire.request(
            18, version, ApiVersionsRequest(client_software_name="t", client_software_version="1")
        )
        assert response.error_code == NONE
        answers.append(_advertised(response))
    assert all(a == answers[0] for a in answers)
    advertised = answers[0]
    assert advertised[18] == (0, 4)
    # kcat's (librdkafka 2.0.2) feature checks need these legacy versions (CLIENTS.md §3).
    assert advertised[0][0] <= 3 <= advertised[0][1]  # Produce 3 (MSGVER2)
    assert advertised[1][0] <= 4 <= advertised[1][1]  # Fetch 4
    assert advertised[0][1] >= 7 and advertised[1][1] >= 10  # zstd
    # Telemetry must not be advertised before it is implemented (CLIENTS.md §1 note 6).
    assert 71 not in advertised and 72 not in advertised


def _v0_error_answer(payload: bytes, correlation_id: int) -> tuple[int, dict[int, tuple[int, int]]]:
    """Decode a response to an unsupported ApiVersions version: header v0 + v0 body."""
    (correlation,) = struct.unpack_from(">i", payload)
    assert correlation == correlation_id
    from pystream.protocol import Reader

    reader = Reader(payload, 4)
    body = ApiVersionsResponse.decode(reader, 0)
    reader.expect_end("ApiVersionsResponse v0")
    return body.error_code, _advertised(body)


@pytest.mark.parametrize("version", [5, 100, 32767])
def test_api_versions_too_new_gets_a_v0_error_answer(wire: KafkaWire, version: int) -> None:
    """KIP-511: an ApiVersions version the broker does not know is answered with a v0 body
    (UNSUPPORTED_VERSION plus the supported range), so the client can retry lower."""
    # Header v2 (ApiVersions v3+ is flexible): key, version, correlation, client id, no tags;
    # body as a v3 one (two compact strings and no tags).
    header = struct.pack(">hhih", 18, version, 4242, 4) + b"test" + b"\x00"
    body = b"\x02x\x021\x00"
    wire.send(struct.pack(">i", len(header + body)) + header + body)
    payload = wire.recv_frame()
    assert payload is not None, "the broker dropped the connection"
    error_code, advertised = _v0_error_answer(payload, 4242)
    assert error_code == UNSUPPORTED_VERSION
    assert advertised[18] == (0, 4)
    # The retry on the same connection works (librdkafka retries with v0).
    assert wire.request(18, 0, ApiVersionsRequest()).error_code == NONE


# Exact first requests captured from each client (CLIENTS.md §5 / test-vectors).
CLIENT_API_VERSIONS = {
    "aiokafka-v0": "000000190012000000000001000f61696f6b61666b612d302e31342e30",
    "librdkafka-2.16-v3": "000000400012000300000001000772646b61666b610017636f6e666c75656e742d"
    "6b61666b612d707974686f6e16322e31362e312d72646b61666b612d322e31362e3000",
    "librdkafka-fallback-v0": "000000110012000000000002000772646b61666b61",
    "kcat-librdkafka-2.0.2-v3": "000000240012000300000001000772646b61666b61000b6c696272646b61"
    "666b6106322e302e3200",
    "kafka-python-v4": "00000033001200040000000100136b61666b612d707974686f6e2d332e302e3132"
    "000d6b61666b612d707974686f6e07332e302e313200",
    "kafka-python-retry-v2": "0000001d001200020000000200136b61666b612d707974686f6e2d332e302e3132",
    "kafkajs-v2": "000000170012000200000000000d6b61666b616a732d736e696666",
}


@pytest.mark.parametrize("client", list(CLIENT_API_VERSIONS))
def test_api_versions_exact_client_requests(wire: KafkaWire, client: str) -> None:
    frame = bytes.fromhex(CLIENT_API_VERSIONS[client])
    version, correlation_id = struct.unpack_from(">hi", frame, 6)
    wire.send(frame)
    payload = wire.recv_frame()
    assert payload is not None
    from pystream.protocol import decode_response

    header, body = decode_response(payload, 18, version)
    assert header.correlation_id == correlation_id
    assert body.error_code == NONE
    assert _advertised(body)[18] == (0, 4)


# --- Metadata --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", range(13))
def test_metadata_topic_list_semantics(wire: KafkaWire, version: int) -> None:
    """v0: an empty list means all topics.  v1+: null means all topics, [] means none."""
    everything = set(TOPICS)
    if version == 0:
        assert {t.name for t in metadata(wire, 0, []).topics} >= everything
    else:
        assert {t.name for t in metadata(wire, version, None).topics} >= everything
        assert metadata(wire, version, []).topics == []
    response = metadata(wire, version, [TOPIC, SMALL])
    assert [(t.name, t.error_code) for t in response.topics] == [(TOPIC, NONE), (SMALL, NONE)]
    partition = response.topics[0].partitions[0]
    assert (partition.partition_index, partition.error_code) == (0, NONE)
    (broker,) = response.brokers
    assert partition.leader_id == broker.node_id
    assert (broker.host, broker.port) == ("127.0.0.1", wire.sock.getpeername()[1])


@pytest.mark.parametrize("version", [10, 11, 12])
def test_metadata_by_topic_id(wire: KafkaWire, version: int) -> None:
    """v10+ requests may name a topic by id (null name); only v12+ supports it (before
    that Kafka answers INVALID_REQUEST: the v10-11 response cannot hold a null name)."""
    topic_id = metadata(wire, 12, [TOPIC]).topics[0].topic_id
    by_id = MetadataRequest.MetadataRequestTopic(name=None, topic_id=topic_id)
    unknown = MetadataRequest.MetadataRequestTopic(name=None, topic_id=uuid.uuid4())
    response = wire.request(3, version, MetadataRequest(topics=[by_id, unknown]))
    codes = [t.error_code for t in response.topics]
    if version < 12:
        assert codes == [INVALID_REQUEST, INVALID_REQUEST]
    else:
        assert codes == [NONE, UNKNOWN_TOPIC_ID]
        assert (response.topics[0].name, response.topics[0].topic_id) == (TOPIC, topic_id)
    # The connection is still good.
    assert metadata(wire, version, [TOPIC]).topics[0].error_code == NONE


def test_max_message_bytes_of_a_topic_created_with_admin_client(
    shared_broker: BrokerProcess,
) -> None:
    """The per-topic limit set through CreateTopics (confluent-kafka AdminClient)."""
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    topic = "admin-limited"
    futures = admin.create_topics(
        [NewTopic(topic, 1, 1, config={"max.message.bytes": str(SMALL_LIMIT)})],
        operation_timeout=DEADLINE,
    )
    futures[topic].result(DEADLINE)
    producer = Producer({"bootstrap.servers": shared_broker.bootstrap, "linger.ms": 0})
    errors: list[Any] = []
    for value in (b"z" * (SMALL_LIMIT * 2), b"fits"):
        producer.produce(topic, value, on_delivery=lambda e, m: errors.append(e))
        assert producer.flush(DEADLINE) == 0
    assert errors[0] is not None and errors[0].name() == "MSG_SIZE_TOO_LARGE"
    assert errors[1] is None


def test_unknown_topic_reaches_kafka_python_and_aiokafka(shared_broker: BrokerProcess) -> None:
    """With auto-creation off, sending to a missing topic fails instead of hanging."""
    producer = KafkaProducer(bootstrap_servers=shared_broker.bootstrap, max_block_ms=1000)
    try:
        with pytest.raises(KafkaTimeoutError):
            producer.send("missing-kp", b"x").get(DEADLINE)
    finally:
        producer.close(DEADLINE)

    async def aio() -> None:
        aio_producer = AIOKafkaProducer(
            bootstrap_servers=shared_broker.bootstrap, request_timeout_ms=1000
        )
        await aio_producer.start()
        try:
            with pytest.raises((AioKafkaTimeoutError, AioUnknownTopicError)):
                await aio_producer.send_and_wait("missing-aio", b"x")
        finally:
            await aio_producer.stop()

    asyncio.run(aio())
    with shared_broker.wire() as wire:
        listed = {t.name for t in metadata(wire, 12, None).topics}
    assert not {"missing-kp", "missing-aio"} & listed
