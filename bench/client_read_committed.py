"""pystream's consumer: read_committed against read_uncommitted over the same transactional
log, with confluent-kafka's read_committed consumer in the same run.

Run against a running broker, or let the script start one (``pystream serve`` in a temp dir)::

    PYTHONPATH=src python bench/client_read_committed.py [--bootstrap 127.0.0.1:9092] \\
        [--records-100b 1000000] [--records-1k 200000] [--runs 3] [--json out.json]

For each record size (100 B and 1 KiB) one topic (one partition) is filled by a
confluent-kafka transactional producer with transactions of 100 records, every 10th
aborted (``e2e_transactions.fill_with_aborts``).  Each round then reads it from offset 0
with, in rotating order:

=============================  ==============================================================
pystream read_committed        ``pystream.Consumer(isolation_level="read_committed")``,
                               ``assign`` + ``seek(0)``, ``poll()`` until every committed
                               record arrived (aborted records are fetched and dropped)
pystream read_uncommitted      the same consumer reading every data record of the log
confluent read_committed       ``consume(10000, 1.0)`` with ``isolation.level=read_committed``
confluent rc tuned             the same with librdkafka's prefetch limits raised (as
                               ``bench_client.py``'s "confluent consume tuned")
=============================  ==============================================================

All use 10 MiB per-partition fetches (``e2e_transactions.bench_consume`` for confluent).
Figures are records delivered per second, from creating the consumer (pystream's
constructor connects; librdkafka's connects in the background, after its clock started)
to the last record; every count is checked.  The script prints the
median of ``--runs`` rounds and the spread (min-max).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_client import CK_CONSUMER_TUNED, own_broker  # noqa: E402
from e2e_transactions import bench_consume, fill_with_aborts  # noqa: E402

import pystream  # noqa: E402

FETCH = dict(max_partition_fetch_bytes=10_485_760, fetch_max_bytes=52_428_800)


def pystream_consume(bootstrap: str, topic: str, isolation: str, expected: int) -> float:
    """Records/s of ``pystream.Consumer`` reading ``expected`` records of partition 0."""
    started = time.perf_counter()
    got = 0
    with pystream.Consumer(
        bootstrap_servers=bootstrap, isolation_level=isolation, max_poll_records=10_000, **FETCH
    ) as consumer:
        tp = pystream.TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        deadline = time.monotonic() + 300
        while got < expected and time.monotonic() < deadline:
            got += len(consumer.poll(1.0))
        elapsed = time.perf_counter() - started
    assert got == expected, f"pystream {isolation}: {got} of {expected} records"
    return got / elapsed


def tuned_consume(bootstrap: str, topic: str, isolation: str, expected: int) -> float:
    """confluent-kafka with librdkafka's prefetch limits raised (``bench_client``'s
    ``CK_CONSUMER_TUNED``: by default it pauses fetching 1 s whenever 100,000 records wait)."""
    return bench_consume(bootstrap, topic, isolation, expected, **CK_CONSUMER_TUNED)


def run(bootstrap: str, sizes: dict[int, int], runs: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    for size, records in sizes.items():
        value = b"x" * size
        topic = f"rc-bench-{size}-{uuid.uuid4().hex[:8]}"
        committed = fill_with_aborts(bootstrap, topic, records, value)
        cases: list[tuple[str, Callable[[str, str, str, int], float], str, int]] = [
            (f"pystream read_committed {size} B", pystream_consume, "read_committed", committed),
            (f"pystream read_uncommitted {size} B", pystream_consume, "read_uncommitted", records),
            (f"confluent read_committed {size} B", bench_consume, "read_committed", committed),
            (f"confluent rc tuned {size} B", tuned_consume, "read_committed", committed),
        ]
        pystream_consume(bootstrap, topic, "read_uncommitted", records)  # warm the page cache
        for round_ in range(runs):
            # Rotate the order: whoever runs first in a round is not always the same.
            shift = round_ % len(cases)
            for name, consume, isolation, expected in cases[shift:] + cases[:shift]:
                results.setdefault(name, []).append(consume(bootstrap, topic, isolation, expected))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", help="a running broker (default: start one)")
    parser.add_argument("--records-100b", type=int, default=1_000_000)
    parser.add_argument("--records-1k", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", help="also write the per-run figures here")
    args = parser.parse_args()
    sizes = {100: args.records_100b, 1024: args.records_1k}
    # A broker given, or a ``pystream serve`` of our own for the run.
    with nullcontext(args.bootstrap) if args.bootstrap else own_broker(1) as bootstrap:
        results = run(bootstrap, sizes, args.runs)
    print(
        f"{args.records_100b:,} x 100 B and {args.records_1k:,} x 1 KiB, transactions of 100, "
        f"every 10th aborted; {args.runs} runs, {os.cpu_count()} CPUs"
    )
    print(f"{'case':36s} {'median rec/s':>14s} {'min':>12s} {'max':>12s}")
    for name, rates in results.items():
        print(
            f"{name:36s} {statistics.median(rates):>14,.0f} {min(rates):>12,.0f} "
            f"{max(rates):>12,.0f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
