"""Log cleaner benchmarks: throughput of a clean, memory of its key map, recovery after SIGKILL.

Run the whole scenario (the issue's closing note)::

    PYTHONPATH=src python bench/bench_cleaner.py            # 1 GB, 10,000 keys
    PYTHONPATH=src python bench/bench_cleaner.py --size-mb 200 --codec lz4

It builds a compacted partition of ``--size-mb`` of ~100-byte records (16 KB
batches, as a producer's ``batch.size`` makes them) over ``--keys`` distinct
keys, then reports:

* **throughput**: the first clean of the whole log in one cleaner thread, MB of
  log cleaned per second of wall time (and of CPU time: this box may be shared);
* **key map memory**: the offset map's slots and bytes (24 bytes a slot) against
  ``log.cleaner.dedupe.buffer.size``;
* **recovery after SIGKILL mid-clean**: a copy of the dirty log is cleaned by a
  child process killed while it writes a cleaned segment, and again right after
  a cleaned segment was renamed ``.swap``; the time to open the partition again
  (the broker's log loading: leftovers deleted, the swap completed) is reported.

The Cython hot loops alone (pytest-benchmark)::

    PYTHONPATH=src python -m pytest bench/bench_cleaner.py --benchmark-only -q
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pystream._core import compression
from pystream._core import offset_map as om
from pystream._core import records as R
from pystream.config import LogConfig
from pystream.storage.cleaner import CleanerConfig, LogCleaner
from pystream.storage.log_manager import LogManager

MB = 1_000_000
TIMESTAMP = 1_700_000_000_000
RECORDS_PER_BATCH = 160  # ~16 KB batches


def topic_props(segment_mb: int) -> dict[str, str]:
    return {"cleanup.policy": "compact", "segment.bytes": str(segment_mb * 1024 * 1024)}


def batches(keys: int, codec: int, seed: int = 0):
    """Endless producer-like batches of ~100-byte records over ``keys`` keys."""
    rng = random.Random(seed)
    names = [b"key-%05d" % i for i in range(keys)]
    value = b"v" * 78  # key 9 B + value 78 B + record framing ~ 100 B
    while True:
        chosen = [names[rng.randrange(keys)] for _ in range(RECORDS_PER_BATCH)]
        yield bytearray(
            R.build_batch_from_values(
                [value] * RECORDS_PER_BATCH,
                keys=chosen,
                timestamp=TIMESTAMP,
                compression=codec,
            )
        )


def build(data: Path, size_mb: int, keys: int, codec: int, segment_mb: int) -> tuple[int, float]:
    """Write the partition; returns (records, seconds)."""
    config = LogConfig.from_properties(topic_props(segment_mb))
    lm = LogManager([str(data)], LogConfig(), topic_configs={"bench": config})
    log = lm.get_or_create_log("bench", 0)
    started = time.monotonic()
    records = 0
    source = batches(keys, codec)
    while log.size_in_bytes < size_mb * MB:
        log.append(next(source), leader_epoch=0)
        records += RECORDS_PER_BATCH
    log.roll()
    log.high_watermark = log.log_end_offset
    lm.checkpoint_high_watermarks()
    lm.shutdown()
    return records, time.monotonic() - started


def clean(data: Path, segment_mb: int, dedupe_mb: int) -> None:
    lm = LogManager(
        [str(data)],
        LogConfig(),
        topic_configs={"bench": LogConfig.from_properties(topic_props(segment_mb))},
    )
    cleaner = LogCleaner(lm, CleanerConfig(dedupe_buffer_size=dedupe_mb * 1024 * 1024))
    log = lm.get_log("bench", 0)
    assert log is not None
    size = log.size_in_bytes
    wall, cpu = time.monotonic(), time.process_time()
    result = cleaner.clean_once()
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    assert result is not None
    stats = result.stats
    offset_map = cleaner._cleaners[0].offset_map
    print(f"log before: {size / MB:.0f} MB in {stats.segments_in} closed segments")
    print(f"log after:  {log.size_in_bytes / MB:.2f} MB in {len(log.segments)} segments")
    print(
        f"clean:      {wall:.2f} s wall, {cpu:.2f} s CPU -> "
        f"{stats.bytes_read / MB / wall:.0f} MB/s wall, {stats.bytes_read / MB / cpu:.0f} MB/s "
        f"CPU (map pass {stats.map_seconds:.2f} s, "
        f"clean pass {stats.clean_seconds:.2f} s, swaps {stats.swap_seconds:.2f} s)"
    )
    print(
        f"key map:    {stats.map_keys} keys in {stats.map_slots} slots = "
        f"{stats.map_bytes / 1e6:.2f} MB used (budget {dedupe_mb} MiB, "
        f"{offset_map.allocated_bytes / 1e6:.2f} MB allocated, "
        f"{offset_map.average_probes:.2f} extra probes per lookup)"
    )
    print(f"max RSS:    {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    lm.shutdown()


CHILD = r"""
import sys
from pystream.config import LogConfig
from pystream.storage.cleaner import LogCleaner
from pystream.storage.log_manager import LogManager

data, segment_bytes, stop_at = sys.argv[1], sys.argv[2], sys.argv[3]
config = LogConfig.from_properties({"cleanup.policy": "compact", "segment.bytes": segment_bytes})
lm = LogManager([data], LogConfig(), topic_configs={"bench": config})
seen = 0

def progress(step):
    global seen
    seen += 1
    if step == stop_at and (step != "cleaning" or seen > 4):
        print("at", step, flush=True)
        sys.stdin.readline()  # killed here

LogCleaner(lm).clean_once(progress)
"""


def kill_and_recover(data: Path, segment_mb: int, step: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    segment_bytes = str(segment_mb * 1024 * 1024)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data), segment_bytes, step],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    child.kill()
    child.wait()
    assert line.startswith("at"), f"the child ended before {step!r}"
    leftovers = [n for n in os.listdir(data / "bench-0") if n.endswith((".cleaned", ".swap"))]
    started = time.monotonic()
    lm = LogManager(
        [str(data)],
        LogConfig(),
        topic_configs={"bench": LogConfig.from_properties(topic_props(segment_mb))},
    )
    took = time.monotonic() - started
    log = lm.get_log("bench", 0)
    assert log is not None
    print(
        f"SIGKILL at {step!r:10} ({len(leftovers)} leftover files): reopened in {took:.2f} s, "
        f"{log.size_in_bytes / MB:.0f} MB in {len(log.segments)} segments"
    )
    lm.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=10_000)
    codecs = ["none", "gzip", "snappy", "lz4", "zstd"]
    parser.add_argument("--codec", default="none", choices=codecs)
    parser.add_argument("--segment-mb", type=int, default=256)
    parser.add_argument("--dedupe-mb", type=int, default=128)
    parser.add_argument("--dir", default=None, help="where to build (default: a temp dir)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-cleaner-", dir=args.dir))
    try:
        codec = compression.codec_from_name(args.codec)
        records, took = build(root / "log", args.size_mb, args.keys, codec, args.segment_mb)
        print(
            f"built:      {records:,} records, {args.keys:,} keys, codec {args.codec}, "
            f"{args.size_mb} MB in {took:.1f} s"
        )
        shutil.copytree(root / "log", root / "crash")
        clean(root / "log", args.segment_mb, args.dedupe_mb)
        kill_and_recover(root / "crash", args.segment_mb, "cleaning")
        kill_and_recover(root / "crash", args.segment_mb, "swap")
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- pytest-benchmark


def _sample() -> list[bytes]:
    source = batches(10_000, 0)
    return [bytes(next(source)) for _ in range(200)]


def test_put_records(benchmark) -> None:
    sample = _sample()
    offset_map = om.OffsetMap(16 * 1024 * 1024)
    offset_map.reset(20_000)

    def run() -> None:
        for batch in sample:
            offset_map.put_records(batch, R.BATCH_OVERHEAD, len(batch), RECORDS_PER_BATCH, 0, 0)

    benchmark(run)


def test_filter_records(benchmark) -> None:
    sample = _sample()
    offset_map = om.OffsetMap(16 * 1024 * 1024)
    offset_map.reset(20_000)
    for i, batch in enumerate(sample):
        offset_map.put_records(batch, R.BATCH_OVERHEAD, len(batch), RECORDS_PER_BATCH, i * 1000, 0)
    offset_map.latest_offset = 10**9
    out = bytearray()

    def run() -> None:
        for i, batch in enumerate(sample):
            del out[:]
            om.filter_records(
                offset_map,
                batch,
                R.BATCH_OVERHEAD,
                len(batch),
                RECORDS_PER_BATCH,
                i * 1000,
                TIMESTAMP,
                TIMESTAMP,
                True,
                out,
            )

    benchmark(run)


if __name__ == "__main__":
    main()
