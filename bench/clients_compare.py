"""pystream's client next to confluent-kafka's, through ``pystream bench``'s API (issue 19).

Starts one ``pystream serve`` (its own log dir, a free port), then runs each workload
through :func:`pystream.cli.bench.run_series`: both clients, ``--runs`` times each,
alternating which goes first:

* **produce**: ``--records`` records of ``--record-size`` bytes to a fresh topic of
  ``--partitions`` partitions (deleted after each run), acks=1, linger.ms=5,
  batch.size=1000000, no compression (``bench/e2e.py``'s producer), in 1 and in
  ``--processes`` processes; pystream's ``send()`` and, in one process, ``send_batch()``;
* **consume**: the same number of records read back from a topic filled once, in 1 and
  in ``--processes`` processes (each assigned its share of the partitions).

Prints one table: records/s and MB/s (median, min-max), p50/p99 latency and the
pystream/confluent-kafka ratio of the medians.  Each run is also one line on stderr.

    PYTHONPATH=src python bench/clients_compare.py [--records 2m] [--runs 3]

The clients, the broker and this process share the machine's cores: with more
processes than cores, the figures are the machine's, not a client's.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from authorizer_overhead import Broker

from pystream.cli.bench import (
    SERIES_HEAD,
    format_table,
    run_consume,
    run_produce,
    run_series,
    series_rows,
    series_summary,
    summary_line,
)
from pystream.client import AdminClient

_TOPICS = itertools.count()


def count(text: str) -> int:
    """``2000000``, ``2m`` or ``500k``."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def fresh_topic(bootstrap: str, produce: Callable[[str], dict[str, Any]]) -> Any:
    """``produce(topic)`` on a new topic, deleted afterwards (the disk stays small)."""

    def run(client: str) -> dict[str, Any]:
        topic = f"clients-compare-{next(_TOPICS)}"
        try:
            return produce(topic, client)
        finally:
            with AdminClient(bootstrap) as admin:
                admin.delete_topics([topic])

    return run


def logged(verb: str, run: Callable[[str], dict[str, Any]]) -> Callable[[str], dict[str, Any]]:
    """``run``, with each run's summary line on stderr."""

    def each(client: str) -> dict[str, Any]:
        result = run(client)
        print(f"  {client}: {summary_line(verb, result)}", file=sys.stderr)
        return result

    return each


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=count, default=2_000_000)
    parser.add_argument("--record-size", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--processes", type=int, default=2, help="the multi-process rows")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    opts = parser.parse_args()

    broker = None
    if opts.bootstrap is None:
        directory = Path(tempfile.mkdtemp(prefix="clients-compare-"))
        broker = Broker(directory, {"metrics.enable": "false"}).start()
    bootstrap = opts.bootstrap or broker.bootstrap
    rows: list[tuple[str, dict[str, Any]]] = []
    started = time.monotonic()
    try:
        for processes, api in ((1, "send"), (opts.processes, "send"), (1, "send_batch")):
            label = f"produce {api} x{processes}"
            print(label, file=sys.stderr)

            def produce(topic: str, client: str, processes=processes, api=api) -> dict:
                return run_produce(
                    bootstrap,
                    topic,
                    opts.records,
                    opts.record_size,
                    client=client,
                    api=api,
                    partitions=opts.partitions,
                    processes=processes,
                )

            run = logged("sent", fresh_topic(bootstrap, produce))
            series = run_series(run, ["pystream", "confluent"], opts.runs)
            rows.append((label, series))
        filled = "clients-compare-consume"
        run_produce(
            bootstrap,
            filled,
            opts.records,
            opts.record_size,
            api="send_batch",
            partitions=opts.partitions,
        )
        for processes in (1, opts.processes):
            label = f"consume x{processes}"
            print(label, file=sys.stderr)

            def consume(client: str, processes=processes) -> dict:
                return run_consume(
                    bootstrap, filled, opts.records, client=client, processes=processes
                )

            series = run_series(logged("consumed", consume), ["pystream", "confluent"], opts.runs)
            rows.append((label, series))
    finally:
        if broker is not None:
            broker.stop()
            shutil.rmtree(broker.directory, ignore_errors=True)
    print_table(rows, opts, time.monotonic() - started)
    return 0


def print_table(
    rows: list[tuple[str, dict[str, Any]]], opts: argparse.Namespace, seconds: float
) -> None:
    """One line per workload and client, then the ratio of the medians."""
    print(
        f"\n{opts.records:,} records of {opts.record_size} B, {opts.partitions} partitions, "
        f"median (min-max) of {opts.runs} runs, {seconds:.0f} s in all"
    )
    lines = []
    for label, series in rows:
        summaries = {client: series_summary(results) for client, results in series.items()}
        lines += [(label, *row) for row in series_rows(summaries)]
    for line in format_table(("workload", *SERIES_HEAD), lines, left=2):
        print(line)


if __name__ == "__main__":
    sys.exit(main())
