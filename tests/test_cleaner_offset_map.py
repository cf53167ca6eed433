"""The cleaner's Cython core (pystream._core.offset_map): the key -> offset table, the record
filter and the batch writer.  Rewritten batches are parsed by kafka-python's independent
v2 implementation (CRC included), and a hypothesis model checks the filter's decisions."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch

from pystream._core import compression
from pystream._core import offset_map as om
from pystream._core import records as R
from pystream.errors import InvalidRecordError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def section(batch: bytes) -> tuple[bytes, int, int]:
    """(buffer, start, end) of a batch's records section, decompressed if need be."""
    header = R.read_batch_header(batch)
    if header.compression == 0:
        return batch, R.BATCH_OVERHEAD, header.size
    data = R.RecordBatch(batch).records_data()
    return bytes(data), 0, len(data)


def kp_records(batch: bytes) -> list[tuple[int, int, bytes | None, bytes | None]]:
    parsed = DefaultRecordBatch(bytes(batch))
    assert parsed.validate_crc()
    parsed = DefaultRecordBatch(bytes(batch))
    return [(r.offset, r.timestamp, r.key, r.value) for r in parsed]


# ---------------------------------------------------------------- hashing


def test_murmur3_matches_reference_vectors() -> None:
    # MurmurHash3_x64_128 test vectors (seed 0), as (h1, h2).
    assert om.murmur3_hash128(b"") == (0, 0)
    assert om.murmur3_hash128(b"hello") == (0xCBD8A7B341BD9B02, 0x5B1E906A48AE1D19)
    assert om.murmur3_hash128(b"The quick brown fox jumps over the lazy dog") == (
        0xE34BBC7BBC071B6C,
        0x7A433CA9C49A9347,
    )


def test_murmur3_covers_every_tail_length() -> None:
    digests = {om.murmur3_hash128(bytes(range(n))) for n in range(40)}
    assert len(digests) == 40


# ---------------------------------------------------------------- the table


def test_put_get_keeps_the_newest_offset() -> None:
    m = om.OffsetMap(1 << 16)
    m.reset()
    assert m.get(b"a") == -1
    assert m.put(b"a", 5)
    assert m.put(b"a", 3)  # older: ignored
    assert m.put(b"", 7)  # the empty key is a key
    assert m.get(b"a") == 5
    assert m.get(b"") == 7
    assert len(m) == 2
    m.reset()
    assert m.get(b"a") == -1 and len(m) == 0


def test_grows_within_its_budget() -> None:
    m = om.OffsetMap(1 << 20)
    m.reset(expected_keys=10)
    small = m.slots
    for i in range(20_000):
        assert m.put(b"key-%d" % i, i)
    assert m.slots > small
    assert m.allocated_bytes <= 1 << 20
    assert all(m.get(b"key-%d" % i) == i for i in range(20_000))
    assert m.average_probes < 2


def test_full_map_refuses_new_keys_but_updates_old_ones() -> None:
    m = om.OffsetMap(om.SLOT_SIZE * 101, load_factor=0.9)
    m.reset()
    assert m.slots == 101 and m.max_entries == 90
    stored = [i for i in range(200) if m.put(b"k%d" % i, i)]
    assert stored == list(range(90))
    assert m.is_full
    assert m.put(b"k3", 1_000)  # an existing key still updates
    assert m.get(b"k3") == 1_000
    assert m.get(b"k150") == -1


def test_rejects_a_budget_without_room_or_a_bad_load_factor() -> None:
    with pytest.raises(ValueError, match="dedupe.buffer.size"):
        om.OffsetMap(om.SLOT_SIZE)
    with pytest.raises(ValueError, match="load.factor"):
        om.OffsetMap(4096, load_factor=0.0)


def test_put_records_maps_keys_from_min_offset_and_reports_fullness() -> None:
    batch = R.build_batch(
        [(1, b"a", b"1"), (2, None, b"x"), (3, b"b", b"2"), (4, b"a", b"3")], base_offset=100
    )
    m = om.OffsetMap(4096)
    m.reset()
    assert m.put_records(*section(batch), 4, 100, 101) == -1
    assert (m.get(b"a"), m.get(b"b"), len(m)) == (103, 102, 2)
    tiny = om.OffsetMap(om.SLOT_SIZE * 2)  # room for one key
    tiny.reset()
    assert tiny.put_records(*section(batch), 4, 100, 0) == 102  # "b" did not fit
    assert tiny.get(b"a") == 100


def test_put_records_refuses_malformed_records() -> None:
    batch = bytearray(R.build_batch([(1, b"a", b"1")]))
    batch[R.BATCH_OVERHEAD] = 0x7F  # a record length past the end
    m = om.OffsetMap(4096)
    with pytest.raises(InvalidRecordError):
        m.put_records(bytes(batch), R.BATCH_OVERHEAD, len(batch), 1, 0, 0)


# ---------------------------------------------------------------- filter and writer


def filtered(
    batch: bytes,
    offset_map: om.OffsetMap,
    *,
    retain_tombstones: bool = True,
    new_base: int | None = None,
) -> tuple[tuple[int, int, int], bytes]:
    """Filter ``batch`` and wrap what is kept in a batch like it (same codec)."""
    header = R.read_batch_header(batch)
    out = bytearray()
    base = header.base_timestamp if new_base is None else new_base
    result = om.filter_records(
        offset_map,
        *section(batch),
        header.record_count,
        header.base_offset,
        header.base_timestamp,
        base,
        retain_tombstones,
        out,
    )
    payload = (
        bytes(out) if header.compression == 0 else compression.compress(header.compression, out)
    )
    attributes = header.attributes | (R.ATTR_DELETE_HORIZON if new_base is not None else 0)
    rebuilt = bytearray()
    om.write_batch(rebuilt, batch, payload, attributes, base, result[2], result[0])
    return result, bytes(rebuilt)


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4])
def test_filter_keeps_the_latest_records_with_their_offsets(codec: int) -> None:
    batch = R.build_batch(
        [(10, b"a", b"1"), (11, b"b", b"2"), (12, b"a", b"3"), (13, b"c", None), (14, None, b"z")],
        compression=codec,
        base_offset=50,
        producer_id=9,
        producer_epoch=2,
        base_sequence=40,
    )
    m = om.OffsetMap(4096)
    m.reset()
    m.put_records(*section(batch), 5, 50, 0)
    m.latest_offset = 54
    (kept, tombstones, max_ts), rebuilt = filtered(batch, m)
    assert (kept, tombstones, max_ts) == (3, 1, 13)
    assert kp_records(rebuilt) == [(51, 11, b"b", b"2"), (52, 12, b"a", b"3"), (53, 13, b"c", None)]
    before, after = R.read_batch_header(batch), R.read_batch_header(rebuilt)
    assert after.compression == codec
    assert (after.base_offset, after.last_offset, after.record_count) == (50, 54, 3)
    assert (after.producer_id, after.producer_epoch, after.base_sequence) == (9, 2, 40)
    assert after.last_sequence == before.last_sequence
    R.validate_batch(rebuilt)
    # Tombstones go once their horizon passed.
    (kept, tombstones, _), rebuilt = filtered(batch, m, retain_tombstones=False)
    assert (kept, tombstones) == (2, 0)
    assert [r[0] for r in kp_records(rebuilt)] == [51, 52]
    # Records past the map's latest offset stay, whatever they are.
    m.latest_offset = 51
    (kept, tombstones, _), rebuilt = filtered(batch, m, retain_tombstones=False)
    assert (kept, tombstones) == (4, 1)
    assert [r[0] for r in kp_records(rebuilt)] == [51, 52, 53, 54]


def test_filter_rebases_timestamps_on_a_delete_horizon() -> None:
    batch = R.build_batch(
        [(1_000, b"a", b"1"), (5_000, b"b", None), (-1, b"c", b"3")], base_offset=7
    )
    m = om.OffsetMap(4096)
    m.reset()
    m.latest_offset = 9
    (kept, tombstones, _), rebuilt = filtered(batch, m, new_base=10**12)
    assert (kept, tombstones) == (3, 1)
    header = R.read_batch_header(rebuilt)
    assert header.has_delete_horizon and header.base_timestamp == 10**12
    assert [(r[0], r[1]) for r in kp_records(rebuilt)] == [(7, 1_000), (8, 5_000), (9, -1)]
    assert [(r.offset, r.timestamp) for r in R.iter_records(rebuilt)] == [
        (7, 1_000),
        (8, 5_000),
        (9, -1),
    ]


def test_empty_batch_keeps_offsets_and_producer_fields() -> None:
    batch = R.build_batch(
        [(5, b"a", b"1"), (6, b"a", b"2")],
        compression=1,
        base_offset=30,
        producer_id=4,
        producer_epoch=1,
        base_sequence=8,
    )
    header = R.read_batch_header(batch)
    out = bytearray()
    om.write_batch(out, batch, b"", header.attributes & ~7, 6, 6, 0)
    empty = R.validate_batch(bytes(out))
    assert (empty.base_offset, empty.last_offset, empty.record_count) == (30, 31, 0)
    assert (empty.producer_id, empty.last_sequence, empty.compression) == (4, 9, 0)
    assert kp_records(bytes(out)) == []


# ---------------------------------------------------------------- model check

entries = st.lists(
    st.tuples(st.sampled_from([b"a", b"b", b"c", b"d", None]), st.booleans()),
    min_size=1,
    max_size=40,
)


@SETTINGS
@given(entries=entries, split=st.integers(0, 40), codec=st.sampled_from([0, 2, 3]))
def test_filter_against_a_model(entries, split, codec) -> None:
    # Records 0..n-1 (key, tombstone?) in one batch; the map knows those below `split`.
    records = [(100 + i, k, None if dead else b"v%d" % i) for i, (k, dead) in enumerate(entries)]
    batch = R.build_batch(records, compression=codec)
    n = len(records)
    split = min(split, n)
    m = om.OffsetMap(4096)
    m.reset()
    m.put_records(*section(batch), n, 0, 0)
    # Forget keys only seen at/after split: rebuild the map from the first `split` records.
    m.reset()
    if split:
        prefix = R.build_batch(records[:split], compression=codec)
        m.put_records(*section(prefix), split, 0, 0)
    m.latest_offset = split - 1
    latest = {k: i for i, (_, k, _) in enumerate(records[:split]) if k is not None}
    for retain in (True, False):
        expected = [
            i
            for i, (_, k, v) in enumerate(records)
            if i >= split or (k is not None and latest[k] == i and (v is not None or retain))
        ]
        (kept, tombstones, _), rebuilt = filtered(batch, m, retain_tombstones=retain)
        assert kept == len(expected)
        assert tombstones == sum(records[i][2] is None for i in expected)
        if kept:
            assert [r[0] for r in kp_records(rebuilt)] == expected
