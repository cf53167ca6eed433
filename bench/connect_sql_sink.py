"""The SQL sink's upsert throughput into PostgreSQL, one task, batched.

Starts a throwaway PostgreSQL server (``tests/postgres.py``: Debian's ``postgresql``,
fsync off) unless ``--dsn`` names one, then per round: one ``SqlSinkTask`` with
``insert.mode=upsert``, ``pk.mode=record_key`` and ``auto.create`` gets ``--rows``
records (a struct key and a 5-field struct value, about 100 B of data; keys drawn
from ``--keys`` distinct ids, so about half the rows update an existing one) in
``put`` calls of ``--put-size`` (what a worker hands a task per poll), then
``flush``.  Records are built before the clock starts: the figure is the connector
and the database (psycopg's pipelined ``executemany`` of ``INSERT … ON CONFLICT DO
UPDATE``), not the worker or the converter.

Prints each round and the median of ``--runs`` rounds with the range::

    PYTHONPATH=src python bench/connect_sql_sink.py [--runs 3] [--rows 100000] [--batch-size 3000]

The client and the server share the machine's cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from connect_contexts import ListSinkTaskContext, sink_record  # noqa: E402

from pystream.connect.connectors.sql import SqlSinkTask  # noqa: E402
from pystream.connect.data import TIMESTAMP_NAME, Schema  # noqa: E402

KEY = Schema.struct([("id", Schema("int64"))], name="Key")
VALUE = Schema.struct(
    [
        ("id", Schema("int64")),
        ("name", Schema("string")),
        ("email", Schema("string")),
        ("amount", Schema("float64")),
        ("updated", Schema("int64", name=TIMESTAMP_NAME)),
    ],
    name="Value",
)


def records(count: int, keys: int, topic: str) -> list:
    rng = random.Random(42)
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    out = []
    for offset in range(count):
        i = rng.randrange(keys)
        value = {
            "id": i,
            "name": f"user number {i}",
            "email": f"user{i}@example.com",
            "amount": rng.random() * 1000,
            "updated": base + dt.timedelta(seconds=offset),
        }
        out.append(sink_record(topic, offset, value, {"id": i}, VALUE, KEY))
    return out


def one_round(url: str, args: argparse.Namespace) -> float:
    table = f"bench_{uuid.uuid4().hex[:8]}"
    batch = records(args.rows, args.keys, table)
    props = {
        "connection.url": url,
        "topics": table,
        "insert.mode": "upsert",
        "pk.mode": "record_key",
        "auto.create": "true",
        "batch.size": str(args.batch_size),
    }
    task = SqlSinkTask()
    task.initialize(ListSinkTaskContext(props))
    task.start(props)
    try:
        started = time.perf_counter()
        for i in range(0, len(batch), args.put_size):
            task.put(batch[i : i + args.put_size])
        task.flush({})
        elapsed = time.perf_counter() - started
    finally:
        task.stop()
    return args.rows / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=3000)
    parser.add_argument("--put-size", type=int, default=500)
    parser.add_argument(
        "--dsn", help="jdbc:postgresql://… of a running server (default: start one)"
    )
    args = parser.parse_args()

    server = None
    if args.dsn:
        url = args.dsn
    else:
        from postgres import start_server

        server = start_server(Path(tempfile.mkdtemp(prefix="pystream-bench-pg-")))
        url = server.url()
    try:
        rates = []
        for run in range(args.runs):
            rate = one_round(url, args)
            rates.append(rate)
            print(f"round {run + 1}: {rate:,.0f} rows/s", flush=True)
        print(
            f"PostgreSQL sink upserts, 1 task, batch.size={args.batch_size}, {args.rows:,} rows "
            f"over {args.keys:,} keys: median {statistics.median(rates):,.0f} rows/s "
            f"(range {min(rates):,.0f}-{max(rates):,.0f}, {args.runs} runs)"
        )
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
