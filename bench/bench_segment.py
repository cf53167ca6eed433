"""Segment hot paths: append, offset/time lookups, recovery.

Run: PYTHONPATH=src python -m pytest bench/bench_segment.py --benchmark-only -q
Targets: append of 1 MiB batches >= 1 GB/s into the page cache; translate_offset /
read on a ~1 GiB segment (~200k index entries) < 5 us per lookup.
extra_info carries GB/s, MB/s or us per call.
"""

import random
import shutil
import struct

import numpy as np
import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder

from pystream._core.crc32c import crc32c
from pystream._core.segment import LogSegment

MiB = 1 << 20
BATCHES_PER_ROUND = 64  # 64 MiB appended per timed round
SMALL_BATCH = 1024  # bytes per batch in the lookup segment
LOOKUP_SEGMENT = 1 << 30  # ~1 GiB of 1 KiB batches
RECOVER_SEGMENT = 256 * MiB
T0 = 1_700_000_000_000


def one_record_batch(value_size: int) -> bytearray:
    builder = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 1 << 31)
    builder.append(0, T0, None, b"v" * value_size, [])
    return builder.build()


def batch_of_size(size: int) -> bytearray:
    """A one-record batch of exactly `size` bytes."""
    value = size - 70
    while len(b := one_record_batch(value)) != size:
        value += size - len(b)
    return b


def tiled_chunk(template: bytearray, first_offset: int, count: int) -> np.ndarray:
    """count copies of a one-record batch with consecutive base offsets (outside the CRC)."""
    rows = np.tile(np.frombuffer(bytes(template), np.uint8), (count, 1))
    offsets = np.arange(first_offset, first_offset + count, dtype=">i8")
    rows[:, :8] = offsets.view(np.uint8).reshape(count, 8)
    return rows


def set_timestamps(rows: np.ndarray, first_offset: int) -> None:
    """Give batch i the timestamp T0 + its offset, and fix up its CRC."""
    count = rows.shape[0]
    stamps = (T0 + np.arange(first_offset, first_offset + count, dtype=np.int64)).astype(">i8")
    rows[:, 27:35] = stamps.view(np.uint8).reshape(count, 8)  # base timestamp
    rows[:, 35:43] = rows[:, 27:35]  # max timestamp
    for row in rows:
        row[17:21] = np.frombuffer(struct.pack(">I", crc32c(row[21:].tobytes())), np.uint8)


@pytest.fixture(scope="module")
def lookup_segment(tmp_path_factory):
    """~1 GiB of 1 KiB batches, one offset each, timestamps increasing."""
    directory = tmp_path_factory.mktemp("lookup")
    seg = LogSegment(str(directory), 0)
    template = batch_of_size(SMALL_BATCH)
    per_chunk = MiB // SMALL_BATCH
    for first in range(0, LOOKUP_SEGMENT // SMALL_BATCH, per_chunk):
        rows = tiled_chunk(template, first, per_chunk)
        set_timestamps(rows, first)
        seg.append(first + per_chunk - 1, 0, 0, rows.tobytes())
    yield seg
    seg.close()
    shutil.rmtree(directory)


def random_offsets(seg: LogSegment, n: int = 4096):
    rng = random.Random(0)
    values = [rng.randrange(seg.next_offset) for _ in range(n)]
    while True:
        yield from values


def test_append_1mib_batches(benchmark, tmp_path):
    batch = batch_of_size(MiB)
    state = {"n": 0}

    def setup():
        state["n"] += 1
        directory = tmp_path / f"r{state['n']}"
        directory.mkdir()
        return (LogSegment(str(directory), 0), directory), {}

    def run(seg, directory):
        for offset in range(BATCHES_PER_ROUND):
            batch[0:8] = offset.to_bytes(8, "big")
            seg.append(offset, T0, offset, batch)
        seg.delete()

    benchmark.group = "segment append"
    benchmark.pedantic(run, setup=setup, rounds=10, iterations=1)
    benchmark.extra_info["GB/s"] = round(
        BATCHES_PER_ROUND * MiB / benchmark.stats.stats.mean / 1e9, 2
    )


def timed(benchmark, fn):
    """Steady state: warm-up touches every page the 4096 cycled probes need first."""
    result = benchmark.pedantic(fn, rounds=2000, iterations=10, warmup_rounds=500)
    benchmark.extra_info["us/call"] = round(benchmark.stats.stats.mean * 1e6, 3)
    return result


def test_translate_offset(benchmark, lookup_segment):
    offsets = random_offsets(lookup_segment)
    benchmark.group = "segment lookup (1 GiB segment)"
    benchmark.extra_info["index entries"] = lookup_segment.offset_index.entries
    result = timed(benchmark, lambda: lookup_segment.translate_offset(next(offsets)))
    assert result is not None


def test_read_1mib(benchmark, lookup_segment):
    offsets = random_offsets(lookup_segment)
    benchmark.group = "segment lookup (1 GiB segment)"
    result = timed(benchmark, lambda: lookup_segment.read(next(offsets), MiB))
    assert result is not None and result.length > 0


def test_offset_index_lookup(benchmark, lookup_segment):
    offsets = random_offsets(lookup_segment)
    index = lookup_segment.offset_index
    benchmark.group = "segment lookup (1 GiB segment)"
    timed(benchmark, lambda: index.lookup(next(offsets)))


def test_find_offset_by_timestamp(benchmark, lookup_segment):
    offsets = random_offsets(lookup_segment)
    benchmark.group = "segment lookup (1 GiB segment)"
    benchmark.extra_info["time index entries"] = lookup_segment.time_index.entries
    result = timed(benchmark, lambda: lookup_segment.find_offset_by_timestamp(T0 + next(offsets)))
    assert result is not None


def test_time_index_lookup(benchmark, lookup_segment):
    offsets = random_offsets(lookup_segment)
    index = lookup_segment.time_index
    benchmark.group = "segment lookup (1 GiB segment)"
    timed(benchmark, lambda: index.lookup(T0 + next(offsets)))


def test_recover(benchmark, tmp_path):
    seg = LogSegment(str(tmp_path), 0)
    batch = batch_of_size(MiB)
    for offset in range(RECOVER_SEGMENT // MiB):
        batch[0:8] = offset.to_bytes(8, "big")
        seg.append(offset, T0, offset, batch)
    benchmark.group = "segment recover"
    truncated = benchmark.pedantic(seg.recover, rounds=5, iterations=1, warmup_rounds=1)
    assert truncated == 0 and seg.size == RECOVER_SEGMENT
    benchmark.extra_info["MB/s"] = round(RECOVER_SEGMENT / benchmark.stats.stats.mean / 1e6)
    seg.delete()
