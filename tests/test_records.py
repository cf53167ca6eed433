"""RecordBatch v2 (pystream._core.records) against kafka-python as the oracle.

kafka-python's pure-Python ``DefaultRecordBatch`` / ``DefaultRecordBatchBuilder``
is an independent implementation: batches we build must parse there (CRC
included), and batches it builds must parse here.  Bad input must raise the
specific Kafka error, never crash.
"""

from __future__ import annotations

import struct

import crc32c as crc32c_ref
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from pystream._core import compression
from pystream._core import records as R
from pystream.errors import (
    CorruptMessageError,
    InvalidRecordError,
    InvalidTimestampError,
    KafkaError,
    MessageTooLargeError,
    UnsupportedCompressionTypeError,
)

CODECS = [0, 1, 2, 3, 4]
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- helpers


def kp_parse(data):
    """(header batch, records) as kafka-python sees them; the CRC must hold."""
    batch = DefaultRecordBatch(bytes(data))
    assert batch.validate_crc()
    batch = DefaultRecordBatch(bytes(data))
    return batch, [(m.offset, m.timestamp, m.key, m.value, list(m.headers)) for m in batch]


def ours(data, **kw):
    return [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in R.iter_records(data, **kw)]


def kp_build(records, codec=0, pid=-1, epoch=-1, seq=-1, txn=False):
    b = DefaultRecordBatchBuilder(2, codec, txn, pid, epoch, seq, 1 << 30)
    for i, (ts, key, value, headers) in enumerate(records):
        b.append(i, ts, key, value, headers)
    return bytes(b.build())


def patch(data, offset, fmt, value, fix_crc=True):
    """Overwrite a header field (big-endian ``fmt``) and optionally redo the CRC."""
    buf = bytearray(data)
    struct.pack_into(">" + fmt, buf, offset, value)
    if fix_crc:
        struct.pack_into(">I", buf, 17, crc32c_ref.crc32c(bytes(buf[21:])))
    return bytes(buf)


def with_records_section(data, section, count=None):
    """The batch with its records section replaced (length and CRC redone)."""
    buf = bytearray(data[:61]) + section
    struct.pack_into(">i", buf, 8, len(buf) - 12)
    if count is not None:
        struct.pack_into(">i", buf, 57, count)
        struct.pack_into(">i", buf, 23, count - 1)
    struct.pack_into(">I", buf, 17, crc32c_ref.crc32c(bytes(buf[21:])))
    return bytes(buf)


def simple_batch(n=3, **kw):
    return R.build_batch([(1000 + i, b"k%d" % i, b"v%d" % i) for i in range(n)], **kw)


# ---------------------------------------------------------------- strategies

nullable_bytes = st.one_of(st.none(), st.binary(max_size=200))
headers_st = st.lists(st.tuples(st.text(max_size=8), nullable_bytes), max_size=3)
# Kept within +-2**61 so that delta = ts - base never overflows int64.
timestamp_st = st.integers(-(2**61), 2**61)
records_st = st.lists(
    st.tuples(timestamp_st, nullable_bytes, nullable_bytes, headers_st), min_size=1, max_size=25
)


# ---------------------------------------------------------------- basics


def test_extension_is_compiled():
    assert R.__file__.endswith((".so", ".pyd")), R.__file__


def test_constants():
    assert (R.BATCH_OVERHEAD, R.LOG_OVERHEAD, R.MIN_RECORD_SIZE) == (61, 12, 7)
    assert (R.ATTR_TRANSACTIONAL, R.ATTR_CONTROL, R.ATTR_DELETE_HORIZON) == (0x10, 0x20, 0x40)
    assert (R.TIMESTAMP_CREATE_TIME, R.TIMESTAMP_LOG_APPEND_TIME) == (0, 1)
    assert R.COMPRESSION_ZSTD == 4 and R.NO_PRODUCER_ID == -1


GOLDEN = bytes.fromhex(
    "0000000000000000"  # base offset
    "0000004a"  # length
    "00000000"  # partition leader epoch
    "02"  # magic
    "f19f7e80"  # crc
    "0000"  # attributes
    "00000001"  # last offset delta
    "00000000000003e8"  # base timestamp 1000
    "00000000000003e8"  # max timestamp 1000
    "ffffffffffffffff"
    "ffff"
    "ffffffff"  # producer id, epoch, base sequence
    "00000002"  # record count
    "1e"
    "00"
    "00"
    "00"
    "026b"
    "0276"
    "04"
    "026802"
    "78"
    "026e"
    "01"  # record 0
    "10"
    "00"
    "01"
    "02"
    "01"
    "047632"
    "00"  # record 1: ts delta -1, null key
)


def test_golden_bytes_and_crc():
    built = R.build_batch(
        [(1000, b"k", b"v", [("h", b"x"), ("n", None)]), (999, None, b"v2")],
        partition_leader_epoch=0,
    )
    assert built == GOLDEN
    assert R.validate_batch(built).crc == 0xF19F7E80 == crc32c_ref.crc32c(built[21:])
    # kafka-python's builder writes the very same bytes.
    assert (
        kp_build([(1000, b"k", b"v", [("h", b"x"), ("n", None)]), (999, None, b"v2", [])]) == GOLDEN
    )


def test_header_fields():
    data = R.build_batch(
        [(5, b"a", b"b"), (3, None, None), (9, b"", b"")],
        base_offset=100,
        partition_leader_epoch=4,
        producer_id=77,
        producer_epoch=2,
        base_sequence=2**31 - 2,
        is_transactional=True,
    )
    h = R.read_batch_header(data)
    assert h == R.validate_batch(data)
    assert (h.base_offset, h.size, h.batch_length, h.magic) == (100, len(data), len(data) - 12, 2)
    assert (h.partition_leader_epoch, h.record_count, h.last_offset_delta) == (4, 3, 2)
    assert (h.last_offset, h.next_offset, h.base_timestamp, h.max_timestamp) == (102, 103, 5, 9)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (77, 2, 2**31 - 2)
    assert h.last_sequence == 0  # wraps past INT32_MAX as Kafka does
    assert h.is_transactional and not h.is_control and h.has_producer_id
    assert (h.compression, h.timestamp_type, h.attributes) == (0, 0, 0x10)
    kb, _ = kp_parse(data)
    assert (kb.base_offset, kb.leader_epoch, kb.producer_id, kb.crc) == (100, 4, 77, h.crc)


def test_read_batch_header_needs_only_the_header():
    data = simple_batch()
    assert R.read_batch_header(data[:61]).record_count == 3
    with pytest.raises(CorruptMessageError):
        R.validate_batch(data[:61])
    with pytest.raises(CorruptMessageError, match="truncated"):
        R.read_batch_header(data[:60])
    assert R.read_batch_header(b"xx" + data, 2).size == len(data)
    with pytest.raises(ValueError):
        R.read_batch_header(data, len(data) + 1)


# ---------------------------------------------------------------- oracle: ours -> kafka-python


@SETTINGS
@given(
    records=records_st,
    codec=st.sampled_from(CODECS),
    txn=st.booleans(),
    base_offset=st.integers(0, 2**40),
)
def test_built_batches_parse_in_kafka_python(records, codec, txn, base_offset):
    pid, epoch, seq = (4242, 3, 17) if txn else (-1, -1, -1)
    builder = R.RecordBatchBuilder(codec, base_offset, 9, 0, pid, epoch, seq, txn)
    for i, rec in enumerate(records):
        assert builder.append(*rec) == i
    assert builder.record_count == len(records)
    data = builder.build()
    if codec == 0:
        assert builder.size_in_bytes() == len(data)
    kb, kp = kp_parse(data)
    expect = [(base_offset + i, ts, k, v, h) for i, (ts, k, v, h) in enumerate(records)]
    assert kp == expect
    assert (kb.base_offset, kb.compression_type, kb.is_transactional) == (base_offset, codec, txn)
    assert (kb.producer_id, kb.producer_epoch, kb.base_sequence) == (pid, epoch, seq)
    assert kb.first_timestamp == records[0][0]
    assert kb.max_timestamp == max(r[0] for r in records)
    assert kb.last_offset_delta == len(records) - 1 and kb.records_count == len(records)
    # and our own reader agrees
    assert ours(data) == expect
    assert (
        R.build_batch(
            records,
            codec,
            base_offset,
            partition_leader_epoch=9,
            producer_id=pid,
            producer_epoch=epoch,
            base_sequence=seq,
            is_transactional=txn,
        )
        == data
    )


@SETTINGS
@given(
    values=st.lists(nullable_bytes, min_size=1, max_size=40),
    with_keys=st.booleans(),
    codec=st.sampled_from(CODECS),
    ts=timestamp_st,
    per_record=st.booleans(),
    data=st.data(),
)
def test_build_from_values_matches_builder(values, with_keys, codec, ts, per_record, data):
    keys = (
        data.draw(st.lists(nullable_bytes, min_size=len(values), max_size=len(values)))
        if with_keys
        else None
    )
    tss = (
        data.draw(st.lists(timestamp_st, min_size=len(values), max_size=len(values)))
        if per_record
        else None
    )
    fast = R.build_batch_from_values(values, keys, ts, timestamps=tss, compression=codec)
    slow = R.build_batch(
        [(tss[i] if tss else ts, keys[i] if keys else None, v) for i, v in enumerate(values)], codec
    )
    if codec == 0:
        assert fast == slow
    _, kp = kp_parse(fast)
    assert kp == [
        (i, tss[i] if tss else ts, keys[i] if keys else None, v, []) for i, v in enumerate(values)
    ]


def test_build_from_values_accepts_other_buffers_and_defaults_timestamp():
    data = R.build_batch_from_values(
        [bytearray(b"ab"), memoryview(b"cd"), None], [b"k", None, None]
    )
    recs = list(R.iter_records(data))
    assert [r.value for r in recs] == [b"ab", b"cd", None]
    assert recs[0].timestamp > 1_600_000_000_000  # None = now (ms)
    with pytest.raises(TypeError):
        R.build_batch_from_values(["text"])
    with pytest.raises(ValueError):
        R.build_batch_from_values([b"a"], keys=[b"a", b"b"])
    with pytest.raises(ValueError):
        R.build_batch_from_values([])


# ---------------------------------------------------------------- oracle: kafka-python -> ours


@SETTINGS
@given(records=records_st, codec=st.sampled_from(CODECS), txn=st.booleans())
def test_kafka_python_batches_parse_here(records, codec, txn):
    pid, epoch, seq = (99, 1, 5) if txn else (-1, -1, -1)
    records = [(ts, k, v, h) for ts, k, v, h in records]
    data = kp_build(records, codec, pid, epoch, seq, txn)
    kb, expect = kp_parse(data)
    batch = R.RecordBatch(data)
    h = batch.header
    assert (h.compression, h.is_transactional, h.producer_id, h.base_sequence) == (
        kb.compression_type,
        txn,
        pid,
        seq,
    )
    assert (h.crc, h.max_timestamp, h.record_count) == (kb.crc, kb.max_timestamp, len(records))
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in batch] == expect
    assert all(r.timestamp_type == 0 for r in batch)
    # the no-object fast path sees the same records
    ix = batch.index()
    assert len(ix) == len(records)
    assert list(ix.offsets) == [e[0] for e in expect]
    assert list(ix.timestamps) == [e[1] for e in expect]
    assert [ix.key(i) for i in range(len(ix))] == [e[2] for e in expect]
    assert [ix.value(i) for i in range(len(ix))] == [e[3] for e in expect]
    assert [ix.headers(i) for i in range(len(ix))] == [e[4] for e in expect]
    for i, e in enumerate(expect):
        kl, vl = ix.key_lengths[i], ix.value_lengths[i]
        kp_, vp = ix.key_positions[i], ix.value_positions[i]
        assert (None if kl < 0 else bytes(ix.data[kp_ : kp_ + kl])) == e[2]
        assert (None if vl < 0 else bytes(ix.data[vp : vp + vl])) == e[3]
    with pytest.raises(ValueError):  # positions are trusted by key(i) etc.: read-only
        ix.key_positions[0] = 1 << 40
    info = R.validate_produce_records(data)
    assert (info.record_count, info.offset_count, info.batch_count) == (len(records),) * 2 + (1,)
    assert info.max_timestamp == max(r[0] for r in records)


# ---------------------------------------------------------------- iteration details


def test_record_objects_and_lazy_iteration():
    data = R.build_batch(
        [(10, b"k", b"v", [("\u00e9t\u00e9", b"\x00"), ("n", None)]), (8, None, None)],
        base_offset=5,
    )
    it = R.iter_records(data)
    first = next(it)
    assert first == R.Record(5, 10, b"k", b"v", [("\u00e9t\u00e9", b"\x00"), ("n", None)])
    assert first.timestamp_type == 0 and "offset=5" in repr(first)
    second = next(it)
    assert (second.offset, second.timestamp, second.key, second.value, second.headers) == (
        6,
        8,
        None,
        None,
        [],
    )
    with pytest.raises(StopIteration):
        next(it)
    assert len(R.RecordBatch(data)) == 2


def test_log_append_time_batch_reports_max_timestamp():
    data = R.build_batch([(1, b"a", b"b"), (7, b"c", b"d")], timestamp_type=1)
    assert R.read_batch_header(data).timestamp_type == 1
    assert [(r.timestamp, r.timestamp_type) for r in R.iter_records(data)] == [(7, 1), (7, 1)]
    assert list(R.index_records(data).timestamps) == [7, 7]
    kb, kp = kp_parse(data)
    assert kb.timestamp_type == 1 and [r[1] for r in kp] == [7, 7]


def test_log_append_time_without_timestamps():
    data = R.build_batch([(-1, None, b"a"), (-1, None, b"b")], timestamp_type=1)
    assert [r.timestamp for r in R.iter_records(data)] == [-1, -1]


def test_invalid_utf8_header_key_is_replaced_not_fatal():
    data = R.build_batch([(1, None, b"v", [(b"\xff\xfe", b"x")])])
    assert list(R.iter_records(data))[0].headers == [("\ufffd\ufffd", b"x")]


@pytest.mark.parametrize("codec", CODECS)
def test_records_data_and_memoryview_input(codec):
    payload = b"0123456789" * 20
    data = R.build_batch_from_values([payload] * 30, timestamp=1, compression=codec)
    assert R.read_batch_header(data).compression == codec
    section = R.RecordBatch(memoryview(data)).records_data()
    assert bytes(section).count(payload) == 30
    assert [r.value for r in R.iter_records(bytearray(data))] == [payload] * 30
    padded = b"\x00" * 7 + data
    assert [r.offset for r in R.iter_records(padded, 7)] == list(range(30))


def test_decompression_is_capped():
    data = R.build_batch_from_values([b"\x00" * 10_000] * 10, timestamp=1, compression=4)
    assert len(data) < 2_000
    with pytest.raises(CorruptMessageError):
        list(R.iter_records(data, max_decompressed_size=50_000))
    assert len(list(R.iter_records(data, max_decompressed_size=200_000))) == 10


def test_iter_batches_and_partial_tail():
    batches = [simple_batch(2), simple_batch(1, base_offset=2), simple_batch(4, base_offset=3)]
    blob = b"".join(batches)
    got = list(R.iter_batches(blob))
    assert [b.position for b in got] == [0, len(batches[0]), len(batches[0]) + len(batches[1])]
    assert [r.offset for b in got for r in b] == list(range(7))
    assert list(R.iter_batches(b"")) == []
    for cut in (1, 11, 12, 60, 61, len(batches[2]) - 1):
        partial = blob[: len(blob) - cut]
        assert len(list(R.iter_batches(partial, allow_partial_tail=True))) == 2
        with pytest.raises(CorruptMessageError):
            list(R.iter_batches(partial))
    # a tail whose length field is itself impossible is corruption, not a partial batch
    bad_tail = blob + struct.pack(">qi", 0, 5)
    with pytest.raises(CorruptMessageError):
        list(R.iter_batches(bad_tail, allow_partial_tail=True))
    # a bad CRC in the middle stops iteration with an error
    mid = bytearray(blob)
    mid[len(batches[0]) + 70] ^= 1
    with pytest.raises(CorruptMessageError, match="CRC"):
        list(R.iter_batches(bytes(mid)))
    assert len(list(R.iter_batches(bytes(mid), check_crc=False))) == 3


# ---------------------------------------------------------------- control batches


@pytest.mark.parametrize("commit", [True, False])
def test_control_batches(commit):
    data = R.build_control_batch(
        commit,
        producer_id=7,
        producer_epoch=3,
        timestamp=1234,
        coordinator_epoch=11,
        base_offset=50,
    )
    batch = R.RecordBatch(data)
    assert batch.is_control and batch.header.is_transactional
    assert batch.header.base_sequence == -1 and batch.header.producer_id == 7
    assert R.control_record_type(batch) == batch.control_record_type() == int(commit)
    (rec,) = list(batch)
    assert rec.offset == 50 and R.end_txn_marker_coordinator_epoch(rec.value) == 11
    kb = DefaultRecordBatch(data)
    assert kb.validate_crc() and kb.is_control_batch
    (krec,) = list(DefaultRecordBatch(data))
    assert (krec.type, krec.commit) == (int(commit), commit)
    # a control batch is fine for the coordinator, not for a producer
    assert R.validate_produce_records(data, client=False).is_control
    with pytest.raises(InvalidRecordError, match="control"):
        R.validate_produce_records(patch(data, 0, "q", 0, fix_crc=False))


def test_control_record_type_rejects_non_control_and_bad_keys():
    with pytest.raises(InvalidRecordError, match="not a control batch"):
        R.control_record_type(R.RecordBatch(simple_batch()))
    short_key = R.RecordBatchBuilder(0, 0, -1, 0, 1, 0, -1, True, True)
    short_key.append(1, b"\x00", b"")
    with pytest.raises(InvalidRecordError, match="4 bytes"):
        R.control_record_type(R.RecordBatch(short_key.build()))
    with pytest.raises(InvalidRecordError):
        R.end_txn_marker_coordinator_epoch(b"\x00\x00")


# ---------------------------------------------------------------- batch-level negatives


def test_bad_crc():
    data = simple_batch()
    for index in (17, 21, 30, 61, len(data) - 1):  # the CRC itself, header fields, records
        bad = bytearray(data)
        bad[index] ^= 0x40
        for check in (R.validate_batch, R.RecordBatch, R.validate_produce_records):
            with pytest.raises(CorruptMessageError, match="CRC"):
                check(bytes(bad))
    # base offset and leader epoch are outside the CRC
    assert R.validate_batch(patch(data, 0, "q", 12345, fix_crc=False)).base_offset == 12345


@pytest.mark.parametrize(
    "magic,error",
    [
        (0, InvalidRecordError),
        (1, InvalidRecordError),
        (3, CorruptMessageError),
        (-1, CorruptMessageError),
    ],
)
def test_bad_magic(magic, error):
    bad = patch(simple_batch(), 16, "b", magic, fix_crc=False)
    for check in (R.validate_batch, R.read_batch_header, R.RecordBatch, R.validate_produce_records):
        with pytest.raises(error, match="magic"):
            check(bad)
    with pytest.raises(error):
        R.assign_offsets(bytearray(bad), 0, 0)


def test_legacy_message_set_shorter_than_a_v2_header_reports_its_magic():
    legacy_v1 = struct.pack(">qiIbbq", 0, 22, 0, 1, 0, 0) + struct.pack(">ii", -1, -1)
    with pytest.raises(InvalidRecordError, match="v1"):
        R.validate_produce_records(legacy_v1)


def test_truncated_at_every_length():
    data = R.build_batch([(1, b"key", b"value", [("h", b"v")])] * 3)
    for n in range(len(data)):
        cut = data[:n]
        with pytest.raises(CorruptMessageError):
            R.validate_batch(cut)
        with pytest.raises(CorruptMessageError):
            R.RecordBatch(cut)
        with pytest.raises(InvalidRecordError if n == 0 else CorruptMessageError):
            R.validate_produce_records(cut)
        if n >= 61:
            with pytest.raises(CorruptMessageError):
                R.assign_offsets(bytearray(cut), 0, 0)


@pytest.mark.parametrize("length", [-1, -(2**31), 0, 13, 48, 2**31 - 1])
def test_bad_length_field(length):
    data = patch(simple_batch(), 8, "i", length, fix_crc=False)
    with pytest.raises(CorruptMessageError):
        R.validate_batch(data)
    with pytest.raises(CorruptMessageError):
        R.validate_produce_records(data)
    with pytest.raises(CorruptMessageError):
        list(R.iter_batches(data))


def test_length_field_past_buffer():
    data = simple_batch()
    with pytest.raises(CorruptMessageError, match="truncated"):
        R.validate_batch(patch(data, 8, "i", len(data) - 12 + 1, fix_crc=False))


@pytest.mark.parametrize("count,delta", [(-1, 2), (4, 2), (2**31 - 1, 2), (1, -1)])
def test_bad_record_count(count, delta):
    data = patch(patch(simple_batch(), 57, "i", count), 23, "i", delta)
    with pytest.raises(InvalidRecordError, match="count"):
        R.validate_batch(data)
    with pytest.raises(InvalidRecordError):
        R.validate_produce_records(data)


def test_record_count_larger_than_the_records():
    # count == last_offset_delta + 1 passes the header checks, the records do not
    data = patch(patch(simple_batch(), 57, "i", 2**31 - 1), 23, "i", 2**31 - 2)
    assert R.validate_batch(data).record_count == 2**31 - 1
    with pytest.raises(InvalidRecordError, match="declares 2147483647 records but its data ends"):
        list(R.iter_records(data))
    with pytest.raises(InvalidRecordError, match="can hold at most"):
        R.index_records(data)  # refused before sizing arrays by the count


def test_fewer_records_declared_than_present():
    data = patch(patch(simple_batch(), 57, "i", 2), 23, "i", 1)
    with pytest.raises(InvalidRecordError, match="remain after them"):
        list(R.iter_records(data))
    with pytest.raises(InvalidRecordError, match="remain after them"):
        R.index_records(data)


@pytest.mark.parametrize("codec", [5, 6, 7])
def test_unknown_codec(codec):
    data = patch(simple_batch(), 21, "h", codec)
    with pytest.raises(InvalidRecordError, match="codec"):
        R.validate_batch(data)


def test_too_large():
    data = simple_batch()
    assert R.validate_batch(data, 0, len(data)).size == len(data)
    with pytest.raises(MessageTooLargeError, match="max.message.bytes"):
        R.validate_batch(data, 0, len(data) - 1)
    with pytest.raises(MessageTooLargeError):
        R.validate_produce_records(data, len(data) - 1)


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_garbage_inside_compressed_payload(codec):
    data = R.build_batch_from_values([b"x" * 100] * 10, timestamp=1, compression=codec)
    bad = with_records_section(data, bytes(range(256)) * 2)
    assert R.validate_batch(bad).compression == codec  # records are not parsed here
    with pytest.raises(CorruptMessageError):
        list(R.iter_records(bad))
    with pytest.raises(CorruptMessageError):
        R.index_records(bad)
    # a compressed payload that decompresses to garbage records
    junk = compression.compress(codec, b"\x7f" * 50)
    with pytest.raises(InvalidRecordError):
        list(R.iter_records(with_records_section(data, junk)))


# ---------------------------------------------------------------- record framing negatives


def record(body):
    return bytes([len(body) * 2]) + body  # one-byte zig-zag length (body < 64 bytes)


GOOD_BODY = b"\x00\x00\x00\x02k\x02v\x00"  # attrs, ts 0, offset 0, key "k", value "v", 0 headers


MALFORMED_SECTIONS = [
    (b"\x80", "length varint"),  # truncated length varint
    (b"\x01", "length varint"),  # negative length
    (b"\x7e" + GOOD_BODY, "length varint"),  # length 63, past the end
    (record(b""), "attributes"),  # no attributes byte
    (record(b"\x00\x80"), "attributes"),  # truncated timestamp varint
    (record(b"\x00\x00\x00\x03"), "key length"),  # key length -2
    (record(b"\x00\x00\x00\x10k"), "key length"),  # key length 8, past the record
    (record(b"\x00\x00\x00\x02k\x20v"), "value length"),  # value past the record
    (record(b"\x00\x00\x00\x01\x01\x01"), "header count"),  # header count -1
    (record(b"\x00\x00\x00\x01\x01\x7e"), "header count"),  # 63 headers in no bytes
    (record(b"\x00\x00\x00\x01\x01\x02\x01\x00"), "header"),  # header key length -1
    (record(b"\x00\x00\x00\x01\x01\x02\x04h\x00"), "header"),  # header key past the record
    (record(GOOD_BODY + b"\x00"), "before the length"),  # unused bytes inside the record
    (record(b"\x00\x00\x02" + GOOD_BODY[3:]), "offset delta"),  # offset delta 1 > last delta 0
    (record(b"\x00\x00\x01" + GOOD_BODY[3:]), "offset delta"),  # offset delta -1
]


@pytest.mark.parametrize("section,match", MALFORMED_SECTIONS)
def test_malformed_records(section, match):
    data = with_records_section(simple_batch(1), section, count=1)
    R.validate_batch(data)  # the batch frame is fine
    with pytest.raises(InvalidRecordError, match=match):
        list(R.iter_records(data))
    with pytest.raises(InvalidRecordError):  # tiny sections fail its size bound first
        R.index_records(data)


def test_offset_deltas_must_increase():
    rec0 = record(GOOD_BODY)
    data = with_records_section(simple_batch(1), rec0 + rec0, count=2)
    with pytest.raises(InvalidRecordError, match="offset delta 0"):
        list(R.iter_records(data))
    # gaps (compacted batches) are fine
    b = R.RecordBatchBuilder()
    b.append_with_offset(0, 1, b"a", b"1")
    b.append_with_offset(5, 2, b"b", b"2")
    gapped = b.build()
    assert [r.offset for r in R.iter_records(gapped)] == [0, 5]
    assert R.validate_batch(gapped).record_count == 2
    with pytest.raises(InvalidRecordError, match="count"):
        R.validate_produce_records(gapped)  # producers may not leave gaps
    assert R.validate_produce_records(gapped, client=False).offset_count == 6


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_batches_never_crash(data):
    codec = data.draw(st.sampled_from(CODECS))
    good = R.build_batch(
        [(i, b"key%d" % i, b"v" * i, [("h", b"x")] * (i % 2)) for i in range(6)], codec
    )
    buf = bytearray(good)
    for _ in range(data.draw(st.integers(1, 6))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        struct.pack_into(">I", buf, 17, crc32c_ref.crc32c(bytes(buf[21:])))
    blob = bytes(buf[: data.draw(st.integers(0, len(buf)))])
    for action in (
        lambda: list(R.iter_records(blob, check_crc=False)),
        lambda: R.index_records(blob, check_crc=False),
        lambda: [list(b) for b in R.iter_batches(blob, allow_partial_tail=True)],
        lambda: R.validate_produce_records(blob),
        lambda: R.validate_produce_records(
            blob, walk_records=True, compacted=True, now_ms=3, timestamp_before_max_ms=2
        ),
        lambda: R.validate_produce_records(blob, client=False, walk_records=True),
        lambda: R.assign_offsets(bytearray(blob), 10, 1, 99),
    ):
        try:
            action()
        except KafkaError:
            pass


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=300))
def test_random_bytes_never_crash(blob):
    blob = struct.pack(">qiib", 0, len(blob) + 5, 0, 2) + blob  # plausible frame, random body
    for fn in (R.validate_batch, R.read_batch_header, R.validate_produce_records):
        try:
            fn(blob)
        except KafkaError:
            pass
    try:
        list(R.iter_records(blob, check_crc=False))
    except KafkaError:
        pass


# ---------------------------------------------------------------- produce-path validation


def test_produce_append_info():
    data = R.build_batch(
        [(5, b"a", b"b"), (9, b"c", b"d"), (7, None, b"e")],
        producer_id=12,
        producer_epoch=3,
        base_sequence=40,
        compression=1,
    )
    info = R.validate_produce_records(data, 10_000, api_version=3)
    assert (info.batch_count, info.record_count, info.offset_count) == (1, 3, 3)
    assert (info.max_timestamp, info.offset_delta_of_max_timestamp) == (9, 2)
    assert (info.producer_id, info.producer_epoch, info.base_sequence, info.last_sequence) == (
        12,
        3,
        40,
        42,
    )
    assert (info.compression, info.codecs, info.size_in_bytes) == (1, 0b10, len(data))
    assert (info.first_offset, info.last_offset, info.last_offset_delta_of_first_batch) == (0, 2, 2)
    assert not info.is_transactional and not info.is_control and info.offsets_monotonic


def test_produce_rules():
    one = simple_batch(2)
    with pytest.raises(InvalidRecordError, match="no record batch"):
        R.validate_produce_records(b"")
    with pytest.raises(InvalidRecordError, match="more than one record batch"):
        R.validate_produce_records(one + one)
    with pytest.raises(CorruptMessageError, match="truncated"):
        R.validate_produce_records(one + one[:30])
    with pytest.raises(InvalidRecordError, match="base offset 7"):
        R.validate_produce_records(patch(one, 0, "q", 7, fix_crc=False))
    with pytest.raises(InvalidRecordError, match="count"):  # count != last_offset_delta + 1
        R.validate_produce_records(patch(one, 57, "i", 1))
    with pytest.raises(InvalidRecordError, match="at least one record"):  # empty batch
        R.validate_produce_records(patch(one, 57, "i", 0))
    with pytest.raises(InvalidRecordError, match="sequence"):
        R.validate_produce_records(R.build_batch([(1, None, b"x")], producer_id=5))
    with pytest.raises(InvalidTimestampError, match="LogAppendTime"):
        R.validate_produce_records(R.build_batch([(1, None, b"x")], timestamp_type=1))
    zstd = R.build_batch([(1, None, b"x")], 4)
    with pytest.raises(UnsupportedCompressionTypeError, match="v6"):
        R.validate_produce_records(zstd, api_version=6)
    assert R.validate_produce_records(zstd, api_version=7).codecs == 1 << 4


def test_non_client_append_of_several_batches():
    b1 = R.build_batch([(5, None, b"a"), (50, None, b"b")], base_offset=10)
    b2 = R.build_batch([(20, None, b"c")], base_offset=12, compression=3)
    b3 = R.build_batch([(7, None, b"d")], base_offset=11)  # out of order
    info = R.validate_produce_records(b1 + b2, client=False)
    assert (info.batch_count, info.record_count, info.offset_count) == (2, 3, 3)
    assert (info.first_offset, info.last_offset, info.offsets_monotonic) == (10, 12, True)
    assert (info.max_timestamp, info.offset_delta_of_max_timestamp) == (50, 1)
    assert info.shallow_offset_of_max_timestamp == 11
    assert (info.compression, info.codecs) == (3, 0b1001)
    assert not R.validate_produce_records(b1 + b2 + b3, client=False).offsets_monotonic


# ---------------------------------------------------------------- produce path: every record


@pytest.mark.parametrize("codec", [0, 3])
@pytest.mark.parametrize("section,match", MALFORMED_SECTIONS)
def test_walk_refuses_malformed_records(section, match, codec):
    data = with_records_section(simple_batch(1), section, count=1)
    if codec:
        data = with_records_section(
            patch(data, 21, "h", codec), compression.compress(codec, section)
        )
    R.validate_produce_records(data)  # the header check alone lets it through
    with pytest.raises(InvalidRecordError):
        R.validate_produce_records(data, walk_records=True)


def test_walk_offset_deltas_count_and_fill():
    rec = [record(b"\x00\x00" + bytes([2 * i]) + GOOD_BODY[3:]) for i in range(3)]
    good = with_records_section(simple_batch(3), b"".join(rec), count=3)
    assert R.validate_produce_records(good, walk_records=True).record_count == 3
    skipped = with_records_section(simple_batch(3), rec[0] + rec[2] + rec[2], count=3)
    with pytest.raises(InvalidRecordError, match="Record 1 has offset delta 2") as caught:
        R.validate_produce_records(skipped, walk_records=True)
    assert caught.value.record_errors == [
        (
            1,
            "Record 1 has offset delta 2, expected 1: the records"
            " of a batch must have offset deltas 0, 1, 2, ... in order",
        )
    ]
    with pytest.raises(InvalidRecordError, match="remain after them"):
        R.validate_produce_records(
            with_records_section(simple_batch(3), b"".join(rec) + b"\x00", count=3),
            walk_records=True,
        )
    with pytest.raises(InvalidRecordError, match="ends after 2"):
        R.validate_produce_records(
            patch(
                patch(with_records_section(simple_batch(3), b"".join(rec[:2])), 57, "i", 3),
                23,
                "i",
                2,
            ),
            walk_records=True,
        )


@pytest.mark.parametrize("codec", CODECS)
def test_walk_keys_on_compacted_logs(codec):
    data = R.build_batch(
        [(1, b"k", b"v"), (2, None, b"a"), (3, b"k", None), (4, None, None)], codec
    )
    R.validate_produce_records(data, walk_records=True)  # not compacted: fine
    with pytest.raises(InvalidRecordError) as caught:
        R.validate_produce_records(data, walk_records=True, compacted=True, topic_partition="t-0")
    message = "Compacted topic cannot accept message without key in topic partition t-0."
    assert caught.value.record_errors == [(1, message), (3, message)]
    assert str(caught.value) == (
        "One or more records have been rejected due to 2 record errors in total, and only "
        f"showing the first three errors at most: [RecordError(batchIndex=1, message='{message}'),"
        f" RecordError(batchIndex=3, message='{message}')]"
    )
    keyed = R.build_batch([(1, b"k", b"v"), (2, b"k", None)], codec)
    assert R.validate_produce_records(keyed, walk_records=True, compacted=True).record_count == 2


@pytest.mark.parametrize("codec", CODECS)
def test_walk_create_time_window_per_record(codec):
    now = 1_000_000
    window = dict(now_ms=now, timestamp_before_max_ms=1000, timestamp_after_max_ms=500)
    inside = R.build_batch([(now - 1000, b"k", b"a"), (now + 500, b"k", b"b"), (-1, b"k", b"c")])
    assert R.validate_produce_records(inside, walk_records=True, **window).record_count == 3
    # First and max timestamps are in range; record 1 is not (a per-batch check misses it).
    data = R.build_batch([(now, b"k", b"a"), (now - 1001, b"k", b"b"), (now, b"k", b"c")], codec)
    with pytest.raises(InvalidTimestampError, match="message.timestamp.before.max.ms") as caught:
        R.validate_produce_records(data, walk_records=True, **window)
    assert caught.value.record_errors == [
        (
            1,
            f"Timestamp {now - 1001} of message with offset 1 is out of range. The timestamp "
            f"should be within [{now - 1000}, {now + 500}]",
        )
    ]
    future = R.build_batch([(now + 501, b"k", b"a")], codec)
    with pytest.raises(InvalidTimestampError):
        R.validate_produce_records(future, walk_records=True, **window)
    # No window (the defaults), or no clock: not checked.
    R.validate_produce_records(data, walk_records=True, now_ms=now)
    R.validate_produce_records(data, walk_records=True)
    # A timestamp refusal wins over key refusals (Kafka: INVALID_TIMESTAMP if any).
    mixed = R.build_batch([(now, None, b"a"), (0, b"k", b"b")], codec)
    with pytest.raises(InvalidTimestampError) as caught:
        R.validate_produce_records(mixed, walk_records=True, compacted=True, **window)
    assert [i for i, _ in caught.value.record_errors] == [0, 1]


def test_walk_several_batches_with_compressed_ones_between():
    b1 = R.build_batch([(5, b"k", b"a"), (50, b"k", b"b")], base_offset=10)
    b2 = R.build_batch([(20, b"k", b"c")], base_offset=12, compression=3)
    b3 = R.build_batch([(7, b"k", b"d")], base_offset=13, compression=1)
    b4 = R.build_batch([(8, None, b"e")], base_offset=14)
    info = R.validate_produce_records(b1 + b2 + b3 + b1, client=False, walk_records=True)
    assert (info.batch_count, info.record_count, info.codecs) == (4, 6, 0b1011)
    assert info.size_in_bytes == len(b1 + b2 + b3 + b1)
    with pytest.raises(InvalidRecordError) as caught:  # the batch after the compressed ones
        R.validate_produce_records(
            b1 + b2 + b3 + b4, client=False, walk_records=True, compacted=True
        )
    assert [i for i, _ in caught.value.record_errors] == [0]


@pytest.mark.parametrize("source", CODECS)
@pytest.mark.parametrize("target", CODECS)
def test_recompress_batch_keeps_everything_but_the_codec(source, target):
    records = [
        (1_700_000_000_000 + i, b"k%d" % i, b"v" * i * 20, [("h", b"%d" % i)]) for i in range(5)
    ]
    data = R.build_batch(
        records,
        source,
        base_offset=0,
        producer_id=77,
        producer_epoch=2,
        base_sequence=9,
        is_transactional=True,
    )
    info = R.validate_produce_records(data, walk_records=True, keep_decompressed=True)
    assert (info.decompressed is None) == (source == 0)
    for decompressed in (info.decompressed, None):
        out = R.recompress_batch(data, target, decompressed)
        header, original = R.validate_batch(out), R.read_batch_header(data)  # CRC valid
        assert header.compression == target
        for name in (
            "base_offset",
            "partition_leader_epoch",
            "last_offset_delta",
            "base_timestamp",
            "max_timestamp",
            "producer_id",
            "producer_epoch",
            "base_sequence",
            "record_count",
            "is_transactional",
            "timestamp_type",
            "is_control",
        ):
            assert getattr(header, name) == getattr(original, name), name
        assert [(r.timestamp, r.key, r.value, r.headers) for r in R.iter_records(out)] == [
            (ts, k, v, h) for ts, k, v, h in records
        ]
    if target == 1:  # gzip levels reach zlib: XFL (byte 8 of the gzip header) says which
        fast, best = (R.recompress_batch(data, 1, None, level) for level in (1, 9))
        assert (fast[61 + 8], best[61 + 8]) == (4, 2)


# ---------------------------------------------------------------- offset assignment


def test_assign_offsets_in_place():
    records = bytearray(simple_batch(3))
    view = memoryview(records)
    assert R.assign_offsets(view, 1000, 7) == 1003
    kb, kp = kp_parse(records)
    assert [r[0] for r in kp] == [1000, 1001, 1002]
    assert (kb.base_offset, kb.leader_epoch, kb.timestamp_type) == (1000, 7, 0)
    assert R.validate_batch(records).partition_leader_epoch == 7
    R.set_partition_leader_epoch(records, 9)
    assert R.validate_batch(records).partition_leader_epoch == 9
    assert R.validate_batch(records).base_offset == 1000


def test_assign_offsets_over_several_batches_with_log_append_time():
    blob = bytearray(simple_batch(3) + simple_batch(5, compression=2) + simple_batch(1))
    assert R.assign_offsets(blob, 10, 2, log_append_time_ms=123456) == 19
    got = list(R.iter_batches(blob))
    assert [b.header.base_offset for b in got] == [10, 13, 18]
    for b in got:
        assert b.header.timestamp_type == 1 and b.header.max_timestamp == 123456
        assert b.header.base_timestamp == 1000  # Kafka leaves the base timestamp alone
        assert all(r.timestamp == 123456 and r.timestamp_type == 1 for r in b)
    pos = 0
    for b in got:
        kb, kp = kp_parse(blob[pos : pos + b.size])  # kafka-python: CRC still valid
        assert kb.timestamp_type == 1 and {r[1] for r in kp} == {123456}
        pos += b.size


def test_assign_offsets_rejects_bad_input_without_touching_it():
    blob = simple_batch(2) + simple_batch(2)[:-1]
    buf = bytearray(blob)
    with pytest.raises(CorruptMessageError, match=f"byte {len(blob) // 2 + 1}"):
        R.assign_offsets(buf, 500, 1, 77)
    assert bytes(buf) == blob
    with pytest.raises(TypeError, match="writable"):
        R.assign_offsets(simple_batch(), 0, 0)
    with pytest.raises(ValueError):
        R.assign_offsets(bytearray(simple_batch()), -1, 0)
    assert R.assign_offsets(bytearray(), 5, 0) == 5


# ---------------------------------------------------------------- builder API


def test_builder_errors_and_reuse():
    b = R.RecordBatchBuilder()
    with pytest.raises(ValueError, match="at least one record"):
        b.build()
    with pytest.raises(TypeError):
        b.append(1, "text", b"v")
    with pytest.raises(TypeError):
        b.append(1, None, b"v", [("k", "text")])
    with pytest.raises(TypeError):
        b.append(1, None, b"v", [("k", 5)])
    with pytest.raises(TypeError):
        b.append(1, None, b"v", [(None, b"x")])
    with pytest.raises(TypeError):
        b.append(1, 5, b"v")
    b.append(1, None, b"v")
    first = b.build()
    assert b.build() is first
    with pytest.raises(RuntimeError):
        b.append(2, None, b"w")
    with pytest.raises(ValueError):
        R.RecordBatchBuilder(compression=5)
    with pytest.raises(ValueError):
        R.RecordBatchBuilder(is_transactional=True)  # needs a producer id
    b2 = R.RecordBatchBuilder(base_offset=10)
    b2.append_with_offset(12, 1, None, b"a")
    with pytest.raises(ValueError, match="increase"):
        b2.append_with_offset(12, 1, None, b"a")
    with pytest.raises(ValueError):
        b2.append_with_offset(9, 1, None, b"a")


def test_builder_grows_past_its_initial_buffer():
    b = R.RecordBatchBuilder()
    values = [bytes([i]) * (i * 37) for i in range(200)]
    for v in values:
        b.append(1, None, v)
    assert [r[3] for r in kp_parse(b.build())[1]] == values
