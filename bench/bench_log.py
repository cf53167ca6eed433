"""Log benchmarks: append throughput into the page cache, locate+slice latency on a big log.

Run: ``PYTHONPATH=src python -m pytest bench/bench_log.py --benchmark-only -q``

Targets (the storage issue): ``Log.append`` of 1 MiB batches >= 1 GB/s into the
page cache; ``Log.read`` (locate the batch by offset, return the file range) < 5 us.

``test_append_100b_records`` appends typical producer batches (100 / 1000 records of
100 B, uncompressed and lz4): what per-record validation costs (issue 13).  For a
before/after comparison run this file from both trees, interleaved::

    PYTHONPATH=src python -m pytest bench/bench_log.py -k append_100b_records --benchmark-only
"""

from __future__ import annotations

import itertools
import random

import pytest

from pystream._core import records as core_records
from pystream.config import LogConfig
from pystream.storage.log import Log

MIB = 1024 * 1024


def one_batch(total_bytes: int, records: int) -> bytearray:
    """A valid uncompressed batch of about ``total_bytes`` with ``records`` records."""
    value = b"v" * max(total_bytes // records - 20, 1)
    return bytearray(
        core_records.build_batch([(1_700_000_000_000 + i, None, value) for i in range(records)])
    )


def reset_for_produce(batch: bytearray) -> None:
    # A producer sends base offset 0; Log.append patched the previous offset in.
    batch[0:8] = bytes(8)


@pytest.fixture
def append_log(tmp_path):
    config = LogConfig.from_properties(
        {
            "segment.bytes": str(32 * MIB),
            "max.message.bytes": str(2 * MIB),
            "file.delete.delay.ms": "0",
        }
    )
    log = Log.open(str(tmp_path / "bench-0"), config)
    yield log
    log.delete()


def append_rounds(
    benchmark, log: Log, batch: bytearray, per_round: int, *, rounds: int, warmup_rounds: int
) -> None:
    """``per_round`` appends of ``batch`` per timed round."""

    def setup() -> None:
        # Start each round on an empty log so the page cache and disk stay bounded.
        log.truncate_fully_and_start_at(log.log_end_offset)

    def run() -> None:
        for _ in range(per_round):
            reset_for_produce(batch)
            log.append(batch, leader_epoch=0)

    benchmark.pedantic(run, setup=setup, rounds=rounds, warmup_rounds=warmup_rounds)


@pytest.mark.parametrize("batch_mib", [1])
def test_append_1mib_batches(benchmark, append_log: Log, batch_mib: int) -> None:
    batch = one_batch(batch_mib * MIB, 1024)
    per_round = 64
    append_rounds(benchmark, append_log, batch, per_round, rounds=20, warmup_rounds=1)
    stats = benchmark.stats.stats
    median, best = (per_round * len(batch) / t / 1e9 for t in (stats.median, stats.min))
    benchmark.extra_info["GB/s median"] = round(median, 2)
    benchmark.extra_info["GB/s best"] = round(best, 2)
    print(f"\nLog.append of {len(batch)}-byte batches: {median:.2f} GB/s median, {best:.2f} best")


def test_append_small_batches(benchmark, append_log: Log) -> None:
    batch = one_batch(1024, 10)

    def run() -> None:
        reset_for_produce(batch)
        append_log.append(batch, leader_epoch=0)

    benchmark(run)


@pytest.mark.parametrize("codec", [0, 3], ids=["none", "lz4"])
@pytest.mark.parametrize("records", [100, 1000])
def test_append_100b_records(benchmark, append_log: Log, records: int, codec: int) -> None:
    """A typical producer batch (``records`` x 100 B, keyed) through Log.append: validation
    (every record parsed since issue 13), offsets, segment write."""
    batch = bytearray(
        core_records.build_batch(
            [(1_700_000_000_000 + i, b"key-%d" % i, bytes(100)) for i in range(records)], codec
        )
    )
    per_round = 200
    append_rounds(benchmark, append_log, batch, per_round, rounds=30, warmup_rounds=2)
    benchmark.extra_info["records_per_call"] = per_round * records


@pytest.fixture(scope="module")
def big_log(tmp_path_factory):
    """~200k batches of 10 records (~30 MB) over several segments, default index interval."""
    directory = tmp_path_factory.mktemp("bench") / "big-0"
    log = Log.open(str(directory), LogConfig.from_properties({"segment.bytes": str(8 * MIB)}))
    batch = one_batch(150, 10)
    for _ in range(200_000):
        reset_for_produce(batch)
        log.append(batch, leader_epoch=0)
    log.high_watermark = log.log_end_offset
    yield log
    log.delete()


def _offsets(log: Log) -> itertools.cycle:
    rng = random.Random(7)
    return itertools.cycle([rng.randrange(log.log_end_offset) for _ in range(4096)])


def test_read_locate_by_offset(benchmark, big_log: Log) -> None:
    offsets = _offsets(big_log)
    result = benchmark(lambda: big_log.read(next(offsets), 64 * 1024))
    assert result.records is not None and len(big_log.segments) > 3


def test_read_locate_and_slice(benchmark, big_log: Log) -> None:
    offsets = _offsets(big_log)

    def run() -> memoryview:
        return big_log.read(next(offsets), 64 * 1024).view()

    assert len(benchmark(run)) > 0


def test_read_bounded_by_high_watermark(benchmark, big_log: Log) -> None:
    # A high watermark below the LEO costs one more index lookup per read.
    offsets = _offsets(big_log)
    bound = big_log.log_end_offset - 5
    result = benchmark(lambda: big_log.read(next(offsets) % bound, 64 * 1024, max_offset=bound))
    assert result.records is not None
