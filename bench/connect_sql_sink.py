"""The SQL sink's upsert throughput into PostgreSQL, one task, batched.

Starts a throwaway PostgreSQL server (``tests/postgres.py``: Debian's ``postgresql``,
fsync off) unless ``--dsn`` names one, then per round: one ``SqlSinkTask`` with
``insert.mode=upsert``, ``pk.mode=record_key`` and ``auto.create`` gets ``--rows``
records (a struct key and a 5-field struct value, about 100 B of data; keys drawn
from ``--keys`` distinct ids, so about half the rows update an existing one) in
``put`` calls of ``--put-size`` (what a worker hands a task per poll), then
``flush``.  Records are built before the clock starts: the figure is the connector
and the database (its writer thread: batches staged with ``COPY``, then ``INSERT …
SELECT … ON CONFLICT DO UPDATE``), not the worker or the converter.

With ``--through-worker`` the records go the whole way instead: a broker (``pystream
serve``) and, per round, a standalone worker (``pystream connect standalone``) with
JsonConverter (schemas on) and the sink connector; the records are produced to a topic
first (untimed, with confluent-kafka) and the figure is records / (time from the
first row in PostgreSQL to the last record's row), i.e. consuming, converting and
upserting once the sink's group has formed (the last rows land without waiting for an
offset commit: the worker calls ``put`` after every poll, as Kafka's does); the time
from the worker being up is printed too, and then the idle worker's CPU over
``--idle-seconds`` (utime+stime from ``/proc``, as % of one core).

Prints each round and the median of ``--runs`` rounds with the range::

    PYTHONPATH=src python bench/connect_sql_sink.py [--runs 3] [--rows 100000] [--batch-size 3000]
    PYTHONPATH=src python bench/connect_sql_sink.py --through-worker [--runs 3]

Everything (the client or the worker, the broker, PostgreSQL) shares the machine's cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from connect_contexts import ListSinkTaskContext, sink_record  # noqa: E402
from connect_file import cpu_seconds  # noqa: E402  (bench/, next to this script)

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


IDLE: list[float] = []  # the idle worker's CPU, per --through-worker round


def sink_props(url: str, table: str, args: argparse.Namespace) -> dict[str, str]:
    """Upserts by the record key into a table created on first use."""
    return {
        "connection.url": url,
        "topics": table,
        "insert.mode": "upsert",
        "pk.mode": "record_key",
        "auto.create": "true",
        "batch.size": str(args.batch_size),
    }


def one_round(url: str, args: argparse.Namespace) -> float:
    table = f"bench_{uuid.uuid4().hex[:8]}"
    batch = records(args.rows, args.keys, table)
    props = sink_props(url, table, args)
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


def json_records(count: int, keys: int) -> list[tuple[bytes, bytes]]:
    """``records()`` as JsonConverter (schemas on) writes them; the last one has a key of
    its own, so that its row marks the end."""
    key_schema = {"type": "struct", "fields": [{"field": "id", "type": "int64"}], "optional": False}
    value_schema = {
        "type": "struct",
        "optional": False,
        "fields": [
            {"field": "id", "type": "int64"},
            {"field": "name", "type": "string"},
            {"field": "email", "type": "string"},
            {"field": "amount", "type": "double"},
            {"field": "updated", "type": "int64", "name": TIMESTAMP_NAME, "version": 1},
        ],
    }
    rng = random.Random(42)
    out = []
    for offset in range(count):
        i = keys if offset == count - 1 else rng.randrange(keys)
        value = {
            "id": i,
            "name": f"user number {i}",
            "email": f"user{i}@example.com",
            "amount": rng.random() * 1000,
            "updated": 1704067200000 + offset * 1000,
        }
        out.append(
            (
                json.dumps({"schema": key_schema, "payload": {"id": i}}).encode(),
                json.dumps({"schema": value_schema, "payload": value}).encode(),
            )
        )
    return out


def worker_round(broker: Any, url: str, dsn: str, work: Path, args: argparse.Namespace) -> float:
    import psycopg
    from confluent_kafka import Producer
    from connect_process import ConnectWorkerProcess

    table = f"bench_{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    for key, value in json_records(args.rows, args.keys):
        while True:
            try:
                producer.produce(table, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    converters = {
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "offset.flush.interval.ms": "10000",
    }
    sink = {"connector.class": "JdbcSinkConnector", **sink_props(url, table, args)}
    worker = ConnectWorkerProcess(work / table, broker.bootstrap, converters, {"sink": sink})
    worker.start()
    try:
        up = time.perf_counter()
        first = None
        deadline = up + 600
        with psycopg.connect(dsn, autocommit=True) as conn:
            while time.perf_counter() < deadline:
                if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None:
                    if first is None:
                        first = time.perf_counter()
                    found = conn.execute(
                        f'SELECT 1 FROM "{table}" WHERE id = %s', (args.keys,)
                    ).fetchone()
                    if found:
                        break
                time.sleep(0.02)
            else:
                raise SystemExit(f"the last record did not arrive: {worker.output()[-2000:]}")
        done = time.perf_counter()
        # Then idle: everything consumed, the sink task polling an empty topic.
        time.sleep(1)
        pid = worker.process.pid
        cpu_before, wall_before = cpu_seconds(pid), time.perf_counter()
        time.sleep(args.idle_seconds)
        idle = (cpu_seconds(pid) - cpu_before) / (time.perf_counter() - wall_before)
    finally:
        worker.stop()
        worker.close()
    print(
        f"  from the worker being up: {args.rows / (done - up):,.0f} records/s; "
        f"idle worker CPU {idle:.1%} of a core",
        flush=True,
    )
    IDLE.append(idle)
    return args.rows / (done - (first or up))


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
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument(
        "--through-worker",
        action="store_true",
        help="topic → standalone worker → PostgreSQL, with a broker (see above)",
    )
    args = parser.parse_args()

    server = broker = None
    work = Path(tempfile.mkdtemp(prefix="pystream-bench-sql-"))
    try:
        if args.dsn:
            url = args.dsn
        else:
            from postgres import start_server

            # A directory of its own: the server may run as another user (see postgres.py).
            server = start_server(Path(tempfile.mkdtemp(prefix="pystream-bench-pg-")))
            url = server.url()
        if args.through_worker:
            from broker_process import BrokerProcess

            broker = BrokerProcess(work / "broker", {"group.initial.rebalance.delay.ms": "0"})
            broker.start()
        rates = []
        for run in range(args.runs):
            if broker is not None:
                dsn = server.dsn() if server is not None else url.removeprefix("jdbc:")
                rate = worker_round(broker, url, dsn, work, args)
            else:
                rate = one_round(url, args)
            rates.append(rate)
            print(f"round {run + 1}: {rate:,.0f} rows/s", flush=True)
        path = "topic -> worker -> " if broker is not None else ""
        if IDLE:
            print(
                f"idle worker (PostgreSQL sink) CPU: median {statistics.median(IDLE):.1%} "
                f"of a core (range {min(IDLE):.1%}-{max(IDLE):.1%})"
            )
        print(
            f"{path}PostgreSQL sink upserts, 1 task, batch.size={args.batch_size}, "
            f"{args.rows:,} rows over {args.keys:,} keys: median "
            f"{statistics.median(rates):,.0f} rows/s "
            f"(range {min(rates):,.0f}-{max(rates):,.0f}, {args.runs} runs)"
        )
    finally:
        if broker is not None:
            broker.close()
        if server is not None:
            server.stop()
            shutil.rmtree(server.directory, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
