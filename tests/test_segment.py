"""Segment files, offset index and time index, checked against a plain-Python model.

Batches are real v2 batches built by kafka-python; the model recomputes what
Kafka's LogSegment would index and return, so every lookup/read is compared to
an independent answer.
"""

import os
import random
import shutil
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatchBuilder

from pystream._core import segment as segment_module
from pystream._core.segment import (
    BatchPosition,
    CorruptIndexError,
    FileRange,
    LogSegment,
    OffsetIndex,
    TimeIndex,
)
from pystream.errors import CorruptMessageError

# ---------------------------------------------------------------------------
# building batches and the reference model


def make_batch(
    base_offset: int, deltas: list[int], timestamps: list[int], value_size: int = 40
) -> bytes:
    """A v2 batch with records at base_offset + deltas (gaps allowed, as after compaction)."""
    builder = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 1 << 30)
    for delta, ts in zip(deltas, timestamps, strict=True):
        builder.append(delta, ts, None, bytes([delta % 256]) * value_size, [])
    buf = builder.build()
    buf[0:8] = struct.pack(">q", base_offset)  # base offset is outside the CRC
    return bytes(buf)


@dataclass
class Batch:
    position: int
    data: bytes
    base_offset: int
    last_offset: int
    max_timestamp: int

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def end(self) -> int:
        return self.position + self.size


def make_batches(
    base_offset: int, count: int, seed: int = 0, monotonic: bool = True, gaps: bool = True
) -> list[Batch]:
    rng = random.Random(seed)
    out: list[Batch] = []
    offset, position, ts = base_offset, 0, 1_600_000_000_000
    for _ in range(count):
        n = rng.randint(1, 4)
        deltas = sorted(rng.sample(range(n + 3), n)) if gaps else list(range(n))
        deltas[0] = 0
        stamps = []
        for _ in deltas:
            ts += rng.randint(0, 50) if monotonic else rng.randint(-300, 300)
            stamps.append(max(ts, 0))
        data = make_batch(offset, deltas, stamps, rng.randint(1, 120))
        out.append(Batch(position, data, offset, offset + deltas[-1], max(stamps)))
        position += len(data)
        offset += deltas[-1] + 1 + (rng.randint(1, 5) if gaps and rng.random() < 0.2 else 0)
    return out


def expected_indexes(
    batches: list[Batch], base_offset: int, interval: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Kafka's per-batch index loop (LogSegment.append / recover), written out plainly."""
    offsets: list[tuple[int, int]] = []
    times: list[tuple[int, int]] = []
    last_index_position = 0
    max_ts, max_ts_offset = -1, base_offset
    for b in batches:
        if b.max_timestamp > max_ts:
            max_ts, max_ts_offset = b.max_timestamp, b.last_offset
        if b.position - last_index_position > interval:
            offsets.append((b.last_offset, b.position))
            if max_ts > (times[-1][0] if times else -1):
                times.append((max_ts, max_ts_offset))
            last_index_position = b.position
    return offsets, times


def index_entries(seg: LogSegment) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Entries read back from the index files (after trim) as absolute offsets."""
    base = seg.base_offset
    raw = Path(seg.offset_index.path).read_bytes()[: seg.offset_index.entries * 8]
    offsets = [(base + r, p) for r, p in struct.iter_unpack(">II", raw)]
    raw = Path(seg.time_index.path).read_bytes()[: seg.time_index.entries * 12]
    times = [(t, base + r) for t, r in struct.iter_unpack(">qI", raw)]
    return offsets, times


def build(
    directory: Path,
    batches: list[Batch],
    base_offset: int = 0,
    interval: int = 300,
    chunk: int = 1,
    **kwargs,
) -> LogSegment:
    seg = LogSegment(str(directory), base_offset, index_interval_bytes=interval, **kwargs)
    for i in range(0, len(batches), chunk):
        group = batches[i : i + chunk]
        data = b"".join(b.data for b in group)
        pos = seg.append(
            group[-1].last_offset, max(b.max_timestamp for b in group), group[-1].last_offset, data
        )
        assert pos == group[0].position
    return seg


def first_at_or_after(batches: list[Batch], offset: int) -> Batch | None:
    return next((b for b in batches if b.last_offset >= offset), None)


def model_read(batches, total, start_offset, max_size, max_position, min_one_batch):
    first = first_at_or_after(batches, start_offset)
    if first is None:
        return None
    limit = total if max_position < 0 else min(max_position, total)
    limit = min(limit, first.position + (max(max_size, first.size) if min_one_batch else max_size))
    end = first.position
    for b in batches:
        if b.position >= first.position:
            if b.end > limit:
                break
            end = b.end
    return first.position, end - first.position


def subdir(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir()
    return path


def copy_segment(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    return dst


@pytest.fixture(scope="module")
def batches() -> list[Batch]:
    return make_batches(0, 160, seed=1)


# ---------------------------------------------------------------------------


def test_compiled_extension_loaded():
    assert segment_module.__file__.endswith((".so", ".pyd"))


def test_new_segment_creates_named_preallocated_files(tmp_path):
    seg = LogSegment(str(tmp_path), 42, max_index_size=1000)
    assert sorted(os.listdir(tmp_path)) == [
        "00000000000000000042.index",
        "00000000000000000042.log",
        "00000000000000000042.timeindex",
    ]
    assert os.path.getsize(seg.offset_index.path) == 1000  # rounded down to 8
    assert os.path.getsize(seg.time_index.path) == 996  # rounded down to 12
    assert (seg.size, seg.next_offset, seg.max_timestamp) == (0, 42, -1)
    assert seg.first_batch_timestamp == -1
    assert seg.offset_index.max_entries == 125
    assert seg.translate_offset(42) is None and seg.read(42, 100) is None
    seg.close()
    assert os.path.getsize(tmp_path / "00000000000000000042.index") == 0


def _resident_file_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssFile:"):
                return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def test_new_segments_keep_their_preallocated_indexes_out_of_memory(tmp_path):
    """A partition's first segment maps two 10 MiB sparse indexes: creating it must not
    fault their pages in (it once read ~1.3 MB per partition: 13 GB for 10,000)."""
    before = _resident_file_kib()
    segments = []
    for i in range(100):
        directory = tmp_path / f"p{i}"
        directory.mkdir()
        segments.append(LogSegment(str(directory), 0, max_index_size=10 * 1024 * 1024))
    grown = _resident_file_kib() - before
    assert all(s.offset_index.entries == 0 == s.time_index.entries for s in segments)
    assert grown < 100 * 64, f"100 new segments made {grown} KiB of file pages resident"
    for s in segments:
        s.close()


@pytest.mark.parametrize("chunk", [1, 7])
def test_indexes_follow_kafkas_rule(tmp_path, batches, chunk):
    seg = build(tmp_path, batches, chunk=chunk)
    want_offsets, want_times = expected_indexes(batches, 0, 300)
    assert len(want_offsets) > 20 and len(want_times) > 20
    assert index_entries(seg) == (want_offsets, want_times)
    assert seg.next_offset == batches[-1].last_offset + 1
    assert seg.max_timestamp == max(b.max_timestamp for b in batches)
    assert seg.first_batch_timestamp == batches[0].max_timestamp
    assert seg.size == batches[-1].end
    assert Path(seg.log_path).read_bytes() == b"".join(b.data for b in batches)


@pytest.mark.parametrize("base_offset", [0, 1000])
def test_translate_every_offset(tmp_path, base_offset):
    batches = make_batches(base_offset, 120, seed=2)
    seg = build(tmp_path, batches, base_offset=base_offset, interval=200)
    index_offsets, _ = index_entries(seg)
    for offset in range(base_offset - 3, batches[-1].last_offset + 4):
        want = first_at_or_after(batches, offset)
        got = seg.translate_offset(offset)
        if want is None:
            assert got is None
        else:
            assert got == BatchPosition(
                want.position, want.size, want.base_offset, want.last_offset, want.max_timestamp, 0
            )
        floor = [e for e in index_offsets if e[0] <= offset]
        assert seg.offset_index.lookup(offset) == (floor[-1] if floor else (base_offset, 0))
    mid = batches[60]
    assert seg.translate_offset(batches[10].base_offset, mid.position).position == mid.position


@pytest.mark.parametrize("monotonic", [True, False])
def test_find_offset_by_timestamp(tmp_path, monotonic):
    batches = make_batches(0, 150, seed=3, monotonic=monotonic)
    seg = build(tmp_path, batches, interval=250)
    _, times = index_entries(seg)
    stamps = sorted({b.max_timestamp for b in batches})
    probes = stamps + [s + 1 for s in stamps] + [s - 1 for s in stamps] + [-5, 0, 1 << 50]
    starts = [0, batches[40].base_offset, batches[41].last_offset, batches[-1].last_offset + 1]
    for ts in probes:
        floor = [e for e in times if e[0] <= ts]
        assert seg.time_index.lookup(ts) == (floor[-1] if floor else (-1, 0))
        for start in starts:
            want = next(
                (b for b in batches if b.max_timestamp >= ts and b.last_offset >= start), None
            )
            got = seg.find_offset_by_timestamp(ts, start)
            assert got == (None if want is None else (want.base_offset, want.max_timestamp))


def test_read_boundaries(tmp_path, batches):
    seg = build(tmp_path, batches)
    total = seg.size
    rng = random.Random(4)
    cases = 0
    for start in [
        -1,
        0,
        1,
        batches[5].last_offset,
        batches[80].base_offset + 1,
        batches[-1].last_offset,
        batches[-1].last_offset + 1,
    ]:
        for max_size in [0, 1, 60, batches[0].size, 500, 3000, 1 << 30]:
            for max_position in [
                -1,
                total,
                batches[90].position,
                batches[90].position + 1,
                rng.randrange(total),
            ]:
                for min_one in (True, False):
                    want = model_read(batches, total, start, max_size, max_position, min_one)
                    got = seg.read(start, max_size, max_position, min_one)
                    if want is None:
                        assert got is None
                    else:
                        assert isinstance(got, FileRange)
                        assert (got.position, got.length) == want
                        assert got.fd >= 0
                    cases += 1
    assert cases > 400
    # min_one_batch returns a first batch larger than max_size whole
    big = seg.read(0, 1)
    assert big.length == batches[0].size
    assert seg.read(0, 1, min_one_batch=False).length == 0


def test_view_bytes_equal_file_bytes_and_are_read_only(tmp_path, batches):
    seg = build(tmp_path, batches[:50])
    data = Path(seg.log_path).read_bytes()
    rng = random.Random(5)
    for _ in range(50):
        a = rng.randrange(len(data))
        b = rng.randrange(a, len(data) + 1)
        view = seg.view(a, b - a)
        assert view.readonly and bytes(view) == data[a:b]
    view = seg.view(0, len(data))
    with pytest.raises(TypeError):
        view[0] = 1
    with pytest.raises(ValueError):
        seg.view(1, len(data))
    assert bytes(seg.view(len(data), 0)) == b""
    # appends past the current map are visible to new views; old views stay intact
    nxt = batches[49].last_offset + 1
    for i in range(2):
        seg.append(nxt + i, 5, nxt + i, make_batch(nxt + i, [0], [5], value_size=700_000))
    grown = Path(seg.log_path).read_bytes()
    assert len(grown) > 1 << 20  # beyond the first 1 MiB map
    assert bytes(seg.view(len(grown) - 1000, 1000)) == grown[-1000:]
    assert bytes(view) == data
    seg.close()
    assert bytes(view) == data  # a view outlives close()
    seg.delete()
    assert bytes(view[:100]) == data[:100]  # ... and delete()


def test_truncate_refused_while_a_view_covers_the_cut(tmp_path, batches):
    seg = build(tmp_path, batches[:40])
    cut = batches[30]
    tail_view = seg.view(cut.position + 5, 20)
    head_view = seg.view(0, batches[20].position)
    head = bytes(head_view)
    with pytest.raises(BufferError):
        seg.truncate_to(cut.base_offset)
    assert seg.size == batches[39].end and seg.next_offset == batches[39].last_offset + 1
    tail_view.release()
    assert seg.truncate_to(cut.base_offset) == batches[39].end - cut.position
    assert bytes(head_view) == head  # views before the cut are untouched
    # recover() obeys the same rule for the bytes it would cut
    with open(seg.log_path, "r+b") as f:
        f.seek(batches[20].position + 17)  # zero batch 20's CRC on disk
        f.write(bytes(4))
    doomed = seg.view(batches[25].position, 10)
    with pytest.raises(BufferError):
        seg.recover()
    with pytest.raises(RuntimeError, match="recover"):
        _ = seg.next_offset  # state is unknown until a recover() succeeds
    doomed.release()
    assert seg.recover() == cut.position - batches[20].position
    assert seg.next_offset == batches[19].last_offset + 1 and bytes(head_view) == head


def test_full_index_asks_for_roll(tmp_path, batches):
    seg = build(tmp_path, batches[:100], interval=0, max_index_size=8 * 10)
    assert seg.offset_index.entries == 10 and seg.offset_index.is_full
    assert seg.should_roll_for_index()
    assert seg.time_index.max_entries == 6 and seg.time_index.is_full
    with pytest.raises(ValueError, match="full"):
        seg.offset_index.append(batches[-1].last_offset + 1, 99999)
    # lookups stay correct with the index stopped early
    for b in batches[:100]:
        assert seg.translate_offset(b.base_offset).position == b.position
    fresh = LogSegment(str(subdir(tmp_path, "x")), 0)
    assert not fresh.should_roll_for_index()


@pytest.mark.parametrize("cut", [0, 1, 37, 160])
def test_close_reopen_load_keeps_state(tmp_path, batches, cut):
    seg = build(tmp_path, batches[:cut] if cut else [])
    before = (seg.size, seg.next_offset, seg.max_timestamp, index_entries(seg))
    seg.close()
    assert os.path.getsize(seg.offset_index.path) == len(before[3][0]) * 8  # trimmed
    assert os.path.getsize(seg.time_index.path) == len(before[3][1]) * 12
    again = LogSegment(str(tmp_path), 0, index_interval_bytes=300)
    if cut:
        with pytest.raises(RuntimeError, match="load"):
            again.append(0, 0, 0, batches[0].data)
    again.load()
    assert (again.size, again.next_offset, again.max_timestamp, index_entries(again)) == before
    # appending after load continues the same index as a fresh build
    for b in batches[cut:]:
        again.append(b.last_offset, b.max_timestamp, b.last_offset, b.data)
    assert index_entries(again) == expected_indexes(batches, 0, 300)
    assert again.max_timestamp == max(b.max_timestamp for b in batches)


def test_load_of_non_monotonic_timestamps_and_a_torn_tail(tmp_path):
    batches = make_batches(0, 120, seed=12, monotonic=False)
    seg = build(tmp_path, batches[:100])
    seg.close()
    again = LogSegment(str(tmp_path), 0, index_interval_bytes=300)
    again.load()
    assert again.max_timestamp == max(b.max_timestamp for b in batches[:100])
    for b in batches[100:]:
        again.append(b.last_offset, b.max_timestamp, b.last_offset, b.data)
    assert index_entries(again) == expected_indexes(batches, 0, 300)
    assert again.max_timestamp == max(b.max_timestamp for b in batches)
    again.close()
    with open(again.log_path, "ab") as f:  # a torn write after the last clean batch
        f.write(batches[5].data[:100])
    torn = LogSegment(str(tmp_path), 0, index_interval_bytes=300)
    torn.load()  # the tail does not parse: falls back to recover
    assert torn.size == batches[-1].end and torn.next_offset == batches[-1].last_offset + 1


def test_preallocated_index_left_by_a_crash_is_counted_by_trailing_zeros(tmp_path, batches):
    seg = build(subdir(tmp_path, "a"), batches)
    seg.flush()
    want = index_entries(seg)
    crashed = copy_segment(tmp_path / "a", tmp_path / "b")  # index files still preallocated
    assert os.path.getsize(crashed / "00000000000000000000.index") == 10485760
    again = LogSegment(str(crashed), 0, index_interval_bytes=300)
    assert again.offset_index.entries == len(want[0])
    assert again.time_index.entries == len(want[1])
    again.load()
    assert index_entries(again) == want and again.next_offset == seg.next_offset


def test_index_entry_zero_at_relative_zero(tmp_path):
    idx = OffsetIndex(str(tmp_path / "a.index"), 100, 80)
    idx.append(100, 0)  # all-zero bytes, but a legal first entry
    assert idx.entries == 1 and idx.lookup(150) == (100, 0) and idx.lookup(99) == (100, 0)
    idx.append(105, 400)
    idx.close()
    again = OffsetIndex(str(tmp_path / "a.index"), 100, 80)
    assert again.entries == 2 and again.lookup(104) == (100, 0) and again.lookup(105) == (105, 400)
    again.sanity_check()


def test_offset_index_unit(tmp_path):
    idx = OffsetIndex(str(tmp_path / "b.index"), 50, 8 * 100)
    for i in range(1, 60):
        idx.append(50 + 3 * i, 100 * i)
    assert idx.last_offset == 50 + 3 * 59
    for target in range(0, 300):
        entries = [(50 + 3 * i, 100 * i) for i in range(1, 60) if 50 + 3 * i <= target]
        assert idx.lookup(target) == (entries[-1] if entries else (50, 0))
    with pytest.raises(ValueError):
        idx.append(50 + 3 * 59, 99999)  # not increasing
    idx.truncate_to(60)  # drops offsets >= 60
    assert idx.entries == 3 and idx.last_offset == 59
    idx.sanity_check()
    idx.reset()
    assert idx.entries == 0 and idx.lookup(1000) == (50, 0) and idx.last_offset == 50


def test_time_index_unit(tmp_path):
    idx = TimeIndex(str(tmp_path / "c.timeindex"), 10, 12 * 100)
    assert idx.last_entry == (-1, 10)
    idx.maybe_append(-1, 10)  # not above "no timestamp": ignored
    idx.maybe_append(1000, 12)
    idx.maybe_append(1000, 15)  # same timestamp: ignored
    idx.maybe_append(2000, 15)
    assert idx.entries == 2 and idx.last_entry == (2000, 15)
    with pytest.raises(ValueError):
        idx.maybe_append(3000, 14)  # offset going back
    with pytest.raises(ValueError):
        idx.maybe_append(1500, 20)  # timestamp going back
    assert idx.lookup(999) == (-1, 10)
    assert idx.lookup(1999) == (1000, 12) and idx.lookup(5000) == (2000, 15)
    idx.truncate_to(15)
    assert idx.entries == 1 and idx.last_entry == (1000, 12)
    idx.sanity_check()


def test_sanity_check_finds_disorder(tmp_path):
    path = tmp_path / "d.index"
    path.write_bytes(struct.pack(">IIIIII", 5, 100, 3, 200, 9, 300))
    with pytest.raises(CorruptIndexError):
        OffsetIndex(str(path), 0).sanity_check()
    path = tmp_path / "d.timeindex"
    path.write_bytes(struct.pack(">qIqI", 50, 1, 40, 2))
    with pytest.raises(CorruptIndexError):
        TimeIndex(str(path), 0).sanity_check()
    path = tmp_path / "e.index"
    path.write_bytes(struct.pack(">II", 5, 100) + b"\x01\x02")
    with pytest.raises(CorruptIndexError, match="multiple"):
        OffsetIndex(str(path), 0).sanity_check()


def recovered_equals_fresh(tmp_path: Path, seg: LogSegment, prefix: list[Batch], name: str):
    fresh = build(subdir(tmp_path, name), prefix)
    fresh.close()
    seg.close()
    assert Path(seg.log_path).read_bytes() == Path(fresh.log_path).read_bytes()
    for a, b in (
        (seg.offset_index.path, fresh.offset_index.path),
        (seg.time_index.path, fresh.time_index.path),
    ):
        assert Path(a).read_bytes() == Path(b).read_bytes()


def test_recover_at_every_cut_in_the_last_two_batches(tmp_path):
    batches = make_batches(0, 30, seed=7)
    src = subdir(tmp_path, "src")
    build(src, batches).close()
    data = (src / "00000000000000000000.log").read_bytes()
    for cut in range(batches[-2].position, len(data) + 1):
        d = copy_segment(src, tmp_path / f"c{cut}")
        os.truncate(d / "00000000000000000000.log", cut)
        seg = LogSegment(str(d), 0, index_interval_bytes=300)
        prefix = [b for b in batches if b.end <= cut]
        assert seg.recover() == cut - prefix[-1].end
        assert seg.size == prefix[-1].end
        assert seg.next_offset == prefix[-1].last_offset + 1
        assert seg.max_timestamp == max(b.max_timestamp for b in prefix)
        assert index_entries(seg) == expected_indexes(prefix, 0, 300)
        if cut in (batches[-2].position, batches[-1].position + 1, len(data)):
            recovered_equals_fresh(tmp_path, seg, prefix, f"f{cut}")
        else:
            seg.close()
        shutil.rmtree(d)


def test_recover_truncates_from_a_corrupted_batch(tmp_path):
    batches = make_batches(0, 40, seed=8)
    src = subdir(tmp_path, "src")
    build(src, batches).close()
    rng = random.Random(9)
    last = batches[-1]
    # Every byte but base offset (0..7) and leader epoch (12..15), which the CRC does not cover.
    covered = [i for i in range(last.size) if not (i < 8 or 12 <= i < 16)]
    for trial in range(60):
        d = copy_segment(src, tmp_path / f"t{trial}")
        byte = last.position + rng.choice(covered)
        with open(d / "00000000000000000000.log", "r+b") as f:
            f.seek(byte)
            value = f.read(1)[0]
            f.seek(byte)
            f.write(bytes([value ^ (1 << rng.randrange(8))]))
        seg = LogSegment(str(d), 0, index_interval_bytes=300)
        assert seg.recover() == last.size
        assert seg.size == last.position and seg.next_offset == batches[-2].last_offset + 1
        seg.close()
        shutil.rmtree(d)


def test_recover_garbage_tail_and_size_limit(tmp_path, batches):
    seg = build(tmp_path, batches[:20])
    seg.close()
    with open(seg.log_path, "ab") as f:
        f.write(random.Random(10).randbytes(5000))
    seg = LogSegment(str(tmp_path), 0, index_interval_bytes=300)
    assert seg.recover() == 5000 and seg.size == batches[19].end
    big = max(range(20), key=lambda i: batches[i].size)
    assert (
        seg.recover(max_batch_size=batches[big].size - 1) == batches[19].end - batches[big].position
    )
    assert seg.size == batches[big].position
    # batches whose offsets go backwards are invalid too
    seg.close()
    with open(seg.log_path, "ab") as f:
        f.write(batches[0].data)
    seg = LogSegment(str(tmp_path), 0, index_interval_bytes=300)
    assert seg.recover() == batches[0].size


@pytest.mark.parametrize("damage", ["delete", "garbage", "odd_length", "past_log"])
def test_load_rebuilds_missing_or_corrupt_indexes(tmp_path, batches, damage):
    src = subdir(tmp_path, "src")
    good = build(src, batches)
    want = index_entries(good)
    good.close()
    for name in ("00000000000000000000.index", "00000000000000000000.timeindex"):
        d = copy_segment(src, tmp_path / f"{damage}-{name.split('.')[1]}")
        path = d / name
        if damage == "delete":
            path.unlink()
        elif damage == "garbage":
            path.write_bytes(random.Random(11).randbytes(os.path.getsize(path) or 24))
        elif damage == "odd_length":
            with open(path, "ab") as f:
                f.write(b"\x07")
        elif damage == "past_log":  # entries pointing beyond a shortened log
            os.truncate(d / "00000000000000000000.log", batches[50].end)
        seg = LogSegment(str(d), 0, index_interval_bytes=300)
        seg.load()
        kept = batches if damage != "past_log" else batches[:51]
        assert index_entries(seg) == expected_indexes(kept, 0, 300)
        if damage != "past_log":
            assert index_entries(seg) == want
        assert seg.next_offset == kept[-1].last_offset + 1
        seg.close()


@pytest.mark.parametrize("monotonic", [True, False])
def test_truncate_to(tmp_path, monotonic):
    batches = make_batches(0, 70, seed=13, monotonic=monotonic)
    src = subdir(tmp_path, "src")
    build(src, batches[:60]).close()
    targets = sorted(
        {
            0,
            1,
            batches[59].last_offset,
            batches[59].last_offset + 1,
            10**9,
            *(b.base_offset for b in batches[:60:7]),
            *(b.last_offset for b in batches[3:60:11]),
        }
    )
    for target in targets:
        d = copy_segment(src, tmp_path / f"t{target}")
        seg = LogSegment(str(d), 0, index_interval_bytes=300)
        seg.load()
        kept = [b for b in batches[:60] if b.last_offset < target]
        size = kept[-1].end if kept else 0
        assert seg.truncate_to(target) == batches[59].end - size
        assert seg.size == size == os.path.getsize(seg.log_path)
        assert seg.next_offset == (kept[-1].last_offset + 1 if kept else 0)
        assert seg.max_timestamp == max((b.max_timestamp for b in kept), default=-1)
        assert index_entries(seg) == expected_indexes(kept, 0, 300)
        # appending after the truncation continues as if the tail never existed
        for b in batches[len(kept) : 70]:
            seg.append(b.last_offset, b.max_timestamp, b.last_offset, b.data)
        assert index_entries(seg) == expected_indexes(batches[:70], 0, 300)
        seg.close()


def test_batches_iterator(tmp_path, batches):
    seg = build(tmp_path, batches[:50])
    got = list(seg.batches())
    assert [(p.position, p.size, p.base_offset, p.last_offset, p.max_timestamp) for p in got] == [
        (b.position, b.size, b.base_offset, b.last_offset, b.max_timestamp) for b in batches[:50]
    ]
    assert [p.position for p in seg.batches(batches[30].position)] == [
        b.position for b in batches[30:50]
    ]
    seg.close()
    with open(seg.log_path, "ab") as f:  # an incomplete tail ends the scan
        f.write(batches[50].data[:70])
    seg = LogSegment(str(tmp_path), 0)
    assert len(list(seg.batches())) == 50
    with open(seg.log_path, "r+b") as f:  # an impossible length is corruption
        f.seek(batches[10].position + 8)
        f.write(struct.pack(">i", 3))
    with pytest.raises(CorruptMessageError, match="recover"):
        list(seg.batches())


def test_append_rejects_bad_input(tmp_path, batches):
    seg = build(tmp_path, batches[:5])
    nxt = batches[5]
    with pytest.raises(CorruptMessageError):
        seg.append(nxt.last_offset, 0, 0, nxt.data[:-1])
    with pytest.raises(ValueError, match="increase"):
        seg.append(batches[4].last_offset, 0, 0, batches[4].data)
    with pytest.raises(ValueError, match="largest_offset"):
        seg.append(nxt.last_offset + 1, 0, 0, nxt.data)
    with pytest.raises(ValueError, match="32-bit"):
        seg.append(2**31, 0, 0, make_batch(2**31, [0], [1]))
    assert seg.size == batches[4].end and seg.next_offset == batches[4].last_offset + 1
    assert seg.append(nxt.last_offset, 0, 0, bytearray(nxt.data)) == nxt.position
    assert seg.append(0, 0, 0, b"") == nxt.end


def test_change_file_suffix_and_delete(tmp_path, batches):
    seg = build(tmp_path, batches[:10])
    seg.change_file_suffix("", ".deleted")
    assert sorted(os.listdir(tmp_path)) == [
        "00000000000000000000.index.deleted",
        "00000000000000000000.log.deleted",
        "00000000000000000000.timeindex.deleted",
    ]
    seg.append(batches[10].last_offset, 0, 0, batches[10].data)  # still usable
    assert seg.translate_offset(batches[10].base_offset).position == batches[10].position
    with pytest.raises(ValueError):
        seg.change_file_suffix(".swap", "")
    seg.flush()
    seg.close()
    again = LogSegment(str(tmp_path), 0, index_interval_bytes=300, file_suffix=".deleted")
    again.load()
    assert again.next_offset == batches[10].last_offset + 1
    again.change_file_suffix(".deleted", "")
    assert again.log_path.endswith("00000000000000000000.log")
    again.delete()
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="closed"):
        again.read(0, 100)


def test_sendfile_of_a_file_range(tmp_path, batches):
    seg = build(tmp_path, batches[:80])
    data = Path(seg.log_path).read_bytes()
    rng = seg.read(batches[20].base_offset, 2000)
    want = data[rng.position : rng.position + rng.length]
    assert rng.length > 1000
    a, b = socket.socketpair()
    with a, b:
        sent = 0
        while sent < rng.length:
            sent += os.sendfile(a.fileno(), rng.fd, rng.position + sent, rng.length - sent)
        got = b""
        while len(got) < rng.length:
            got += b.recv(65536)
    assert got == want
    with open(tmp_path / "copy", "wb") as out:
        assert os.sendfile(out.fileno(), rng.fd, rng.position, rng.length) == rng.length
    assert (tmp_path / "copy").read_bytes() == want


def test_a_file_range_keeps_the_log_open_after_close_and_delete(tmp_path, batches):
    """A fetch response sending from a FileRange must read the segment's bytes even after
    retention deleted it: the range holds the descriptor; the last reference closes it."""
    seg = build(tmp_path, batches[:80])
    data = Path(seg.log_path).read_bytes()
    rng = seg.read(batches[10].base_offset, 3000)
    want = data[rng.position : rng.position + rng.length]
    seg.delete()
    assert not os.path.exists(seg.log_path)
    with pytest.raises(ValueError, match="closed"):
        seg.read(0, 100)
    # Files opened now would get the descriptor's number had delete() closed it.
    others = [open(tmp_path / f"other-{i}", "wb+") for i in range(4)]  # noqa: SIM115
    try:
        for other in others:
            other.write(b"x" * 4096)
            other.flush()
        assert rng.fd not in [other.fileno() for other in others]
        assert os.pread(rng.fd, rng.length, rng.position) == want
    finally:
        for other in others:
            other.close()
    fd = rng.fd
    del rng  # the last reference: the descriptor closes
    with pytest.raises(OSError):
        os.fstat(fd)
    # Without a live range, close() releases the descriptor at once.
    (tmp_path / "b").mkdir()
    seg = build(tmp_path / "b", batches[:3])
    fd = seg.read(0, 100).fd
    os.fstat(fd)
    seg.close()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_last_modified_ms(tmp_path, batches):
    seg = build(tmp_path, batches[:3])
    os.utime(seg.log_path, ns=(1_700_000_000_123_000_000, 1_700_000_000_123_000_000))
    assert seg.last_modified_ms == 1_700_000_000_123


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 10**6),
    count=st.integers(1, 40),
    interval=st.integers(0, 700),
    base=st.sampled_from([0, 7, 2**31]),
)
def test_lookups_match_model(tmp_path_factory, seed, count, interval, base):
    batches = make_batches(base, count, seed=seed, monotonic=seed % 2 == 0)
    seg = build(tmp_path_factory.mktemp("h"), batches, base_offset=base, interval=interval)
    assert index_entries(seg) == expected_indexes(batches, base, interval)
    rng = random.Random(seed)
    for _ in range(30):
        offset = rng.randint(base - 2, batches[-1].last_offset + 2)
        want = first_at_or_after(batches, offset)
        got = seg.translate_offset(offset)
        assert (got and got.position) == (want and want.position)
        max_size = rng.randint(0, 2000)
        assert (lambda r: r and (r.position, r.length))(seg.read(offset, max_size)) == model_read(
            batches, seg.size, offset, max_size, -1, True
        )
    seg.close()
