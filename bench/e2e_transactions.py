"""End-to-end throughput of idempotent and transactional produce, and of read_committed fetch.

Run against a running broker, or let the script start one (``pystream serve`` in a temp dir)::

    PYTHONPATH=src python bench/e2e_transactions.py [--bootstrap 127.0.0.1:9092] \
        [--records 200000] [--value-bytes 100]

Scenarios, one producer process (confluent-kafka / librdkafka), acks=all, linger.ms=5,
records of ``--value-bytes`` bytes, one partition per topic:

=========================  ===============================================================
idempotent                 ``enable.idempotence=true``: the baseline
transactional-100          transactions of 100 records (begin, produce, commit)
transactional-1000         transactions of 1,000 records
read_committed-10%-abort   consume a topic of 100-record transactions, every 10th aborted:
                           read_committed (committed records delivered per second) and
                           read_uncommitted (all records) from the same log
=========================  ===============================================================

Figures are records per second from the first ``produce()`` to the last commit/delivery
(producers) or from ``assign()`` to the last record (consumers).  Every count is checked.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

_BOOTSTRAP = re.compile(r"clients: bootstrap\.servers=(\S+)")


def start_broker(directory: str) -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable,
        "-m",
        "pystream",
        "serve",
        "--log-level",
        "WARNING",
        "--override",
        f"log.dirs={directory}/data",
        "--override",
        "listeners=PLAINTEXT://127.0.0.1:0",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        match = _BOOTSTRAP.search(line)
        if match:
            return process, match.group(1)
    raise RuntimeError("the broker did not start")


def producer(bootstrap: str, **config: object) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            **config,
        }
    )


def _produce(p: Producer, topic: str, value: bytes) -> None:
    while True:
        try:
            p.produce(topic, value, partition=0)
            return
        except BufferError:
            p.poll(0.05)


def bench_idempotent(bootstrap: str, records: int, value: bytes) -> float:
    topic = f"idem-{uuid.uuid4().hex[:8]}"
    p = producer(bootstrap, **{"enable.idempotence": True})
    _produce(p, topic, value)  # metadata, producer id
    assert p.flush(30) == 0
    started = time.perf_counter()
    for _ in range(records):
        _produce(p, topic, value)
    assert p.flush(120) == 0
    return records / (time.perf_counter() - started)


def bench_transactional(bootstrap: str, records: int, value: bytes, size: int) -> float:
    topic = f"txn{size}-{uuid.uuid4().hex[:8]}"
    p = producer(bootstrap, **{"transactional.id": f"bench-{topic}"})
    p.init_transactions(30)
    p.begin_transaction()
    _produce(p, topic, value)
    p.commit_transaction(30)
    started = time.perf_counter()
    for _ in range(records // size):
        p.begin_transaction()
        for _ in range(size):
            _produce(p, topic, value)
        p.commit_transaction(60)
    return records / (time.perf_counter() - started)


def fill_with_aborts(bootstrap: str, topic: str, records: int, value: bytes) -> int:
    """Transactions of 100 records, every 10th aborted; returns the committed count."""
    p = producer(bootstrap, **{"transactional.id": f"fill-{topic}"})
    p.init_transactions(30)
    committed = 0
    for n in range(records // 100):
        p.begin_transaction()
        for _ in range(100):
            _produce(p, topic, value)
        if n % 10 == 9:
            assert p.flush(60) == 0  # written, then aborted
            p.abort_transaction(60)
        else:
            p.commit_transaction(60)
            committed += 100
    return committed


def bench_consume(
    bootstrap: str, topic: str, isolation: str, expected: int, **extra: object
) -> float:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "fetch.max.bytes": 52_428_800,
            "max.partition.fetch.bytes": 10_485_760,
            **extra,
        }
    )
    started = time.perf_counter()
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    deadline = time.monotonic() + 300
    while got < expected and time.monotonic() < deadline:
        # At most what is missing: more would wait out the timeout at the end of the topic.
        for message in c.consume(min(10_000, expected - got), 1.0):
            if message.error() is None:
                got += 1
    elapsed = time.perf_counter() - started
    c.close()
    assert got == expected, f"{isolation}: {got} of {expected} records"
    return got / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", help="a running broker (default: start one)")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    args = parser.parse_args()
    value = b"x" * args.value_bytes
    process = None
    with tempfile.TemporaryDirectory() as directory:
        bootstrap = args.bootstrap
        if bootstrap is None:
            process, bootstrap = start_broker(directory)
        try:
            rows = [
                ("idempotent", bench_idempotent(bootstrap, args.records, value)),
                ("transactional-100", bench_transactional(bootstrap, args.records, value, 100)),
                ("transactional-1000", bench_transactional(bootstrap, args.records, value, 1000)),
            ]
            topic = f"aborts-{uuid.uuid4().hex[:8]}"
            committed = fill_with_aborts(bootstrap, topic, args.records, value)
            bench_consume(bootstrap, topic, "read_uncommitted", args.records)  # warm-up
            # Best of two, alternating: the page cache and the machine's load vary.
            rates: dict[str, list[float]] = {"read_committed": [], "read_uncommitted": []}
            for _ in range(2):
                rates["read_committed"].append(
                    bench_consume(bootstrap, topic, "read_committed", committed)
                )
                rates["read_uncommitted"].append(
                    bench_consume(bootstrap, topic, "read_uncommitted", args.records)
                )
            rows.append(("read_committed-10%-abort", max(rates["read_committed"])))
            rows.append(("read_uncommitted-same-log", max(rates["read_uncommitted"])))
        finally:
            if process is not None:
                process.terminate()
                process.wait(30)
    print(f"{args.records:,} records of {args.value_bytes} B, {os.cpu_count()} CPUs")
    for name, rate in rows:
        print(f"{name:28s} {rate:>12,.0f} records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
