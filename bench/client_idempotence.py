"""pystream's idempotent and transactional producer next to confluent-kafka's (librdkafka),
same broker, same run.

Run against a broker you started, or let the script start a ``pystream serve``::

    PYTHONPATH=src python bench/client_idempotence.py                 # own broker
    PYTHONPATH=src python bench/client_idempotence.py --bootstrap 127.0.0.1:9092 \\
        [--records 1000000] [--txn-records 200000] [--size 100] [--repeat 3] [--json out.json]

==============================  ==============================================================
scenario                        what one run does
==============================  ==============================================================
pystream send idem-off          ``producer.send(topic, v)`` per record, ``flush()``;
                                ``enable_idempotence=False``, acks=all (the baseline)
pystream send idem-on           the same, idempotent (the default)
pystream send_batch idem-off/on ``producer.send_batch(topic, values).result()``, a list of bytes
pystream send_batch np idem-on  the same from a ``(records, size)`` uint8 numpy array
confluent produce idem-on       ``producer.produce(topic, v)`` per record, ``flush()``,
                                ``enable.idempotence=true``
pystream txn-100 / txn-1000     ``--txn-records`` records in transactions of 100 / 1,000:
                                begin, ``send()`` each, commit
confluent txn-100 / txn-1000    the same with librdkafka's transactional producer
==============================  ==============================================================

All producers: acks=all, linger 5 ms, 1 MB batches, no compression, ``--partitions``
partitions; every run writes a fresh topic and its record count is checked against the
topic's end offsets (transactions: plus one commit marker per transaction and
partition it wrote to).  The scenarios run in ``--repeat`` rounds, each once per round, so
that the machine's other load falls on all alike; the table gives the median and the
spread (min-max) of records/s (and transactions/s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from bench_client import client_bench_parser, end_offset_total, fresh_topic, run_on_broker
from confluent_kafka import Producer as CKProducer

import pystream

COMMON = {"acks": "all", "linger_ms": 5, "batch_size": 1_000_000}
CK_COMMON = {
    "acks": "all",
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 2_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
}


def py_send(bootstrap: str, topic: str, values: list[bytes], idempotence: bool) -> float:
    with pystream.Producer(bootstrap, enable_idempotence=idempotence, **COMMON) as producer:
        producer.send(topic, b"warm-up").result(30)
        send = producer.send
        start = time.perf_counter()
        for v in values:
            send(topic, v)
        producer.flush()
        return time.perf_counter() - start


def py_send_batch(bootstrap: str, topic: str, values: object, idempotence: bool) -> float:
    with pystream.Producer(bootstrap, enable_idempotence=idempotence, **COMMON) as producer:
        producer.send(topic, b"warm-up").result(30)
        start = time.perf_counter()
        producer.send_batch(topic, values).result(120)  # type: ignore[arg-type]
        return time.perf_counter() - start


def _ck_produce_all(producer: CKProducer, topic: str, values: list[bytes]) -> None:
    produce, poll = producer.produce, producer.poll
    for v in values:
        while True:
            try:
                produce(topic, v)
                break
            except BufferError:
                poll(0.001)


def ck_send(bootstrap: str, topic: str, values: list[bytes]) -> float:
    producer = CKProducer({"bootstrap.servers": bootstrap, "enable.idempotence": True, **CK_COMMON})
    producer.produce(topic, b"warm-up")
    producer.flush(30)
    start = time.perf_counter()
    _ck_produce_all(producer, topic, values)
    producer.flush(120)
    return time.perf_counter() - start


def py_txn(bootstrap: str, topic: str, values: list[bytes], per_txn: int) -> float:
    with pystream.Producer(bootstrap, transactional_id=topic, **COMMON) as producer:
        producer.init_transactions(60)
        send = producer.send
        start = time.perf_counter()
        for first in range(0, len(values), per_txn):
            producer.begin_transaction()
            for v in values[first : first + per_txn]:
                send(topic, v)
            producer.commit_transaction(120)
        return time.perf_counter() - start


def ck_txn(bootstrap: str, topic: str, values: list[bytes], per_txn: int) -> float:
    producer = CKProducer({"bootstrap.servers": bootstrap, "transactional.id": topic, **CK_COMMON})
    producer.init_transactions(60)
    start = time.perf_counter()
    for first in range(0, len(values), per_txn):
        producer.begin_transaction()
        _ck_produce_all(producer, topic, values[first : first + per_txn])
        producer.commit_transaction(120)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = client_bench_parser(__doc__.split("\n")[0])
    parser.add_argument("--txn-records", type=int, default=200_000)
    return run_on_broker(parser.parse_args(argv), run)


def run(args: argparse.Namespace, bootstrap: str) -> int:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(args.records, args.size), dtype=np.uint8)
    values = [bytes(row) for row in array]
    txn_values = values[: args.txn_records]
    results: list[dict[str, object]] = []
    wanted = [s.strip() for s in args.only.split(",")] if args.only else None

    scenarios: list[tuple[str, int, Callable[[str], float], int]] = []

    def case(name: str, count: int, once: Callable[[str], float], transactions: int = 0) -> None:
        if not wanted or any(w in name for w in wanted):
            scenarios.append((name, count, once, transactions))

    def measure(name: str, count: int, once: Callable[[str], float], transactions: int) -> float:
        topic = fresh_topic(name.replace(" ", "-"))
        elapsed = once(topic)
        stored = end_offset_total(bootstrap, topic, args.partitions)
        if transactions:
            # One commit marker per transaction and partition it wrote to.
            low, high = count + transactions, count + transactions * args.partitions
        else:
            low = high = count + 1  # the warm-up record
        if not low <= stored <= high:
            raise SystemExit(f"{name}: {stored} offsets in {topic}, expected {low}..{high}")
        return count / elapsed

    n = len(values)
    case("pystream send idem-off", n, lambda t: py_send(bootstrap, t, values, False))
    case("pystream send idem-on", n, lambda t: py_send(bootstrap, t, values, True))
    case("pystream send_batch idem-off", n, lambda t: py_send_batch(bootstrap, t, values, False))
    case("pystream send_batch idem-on", n, lambda t: py_send_batch(bootstrap, t, values, True))
    case("pystream send_batch np idem-on", n, lambda t: py_send_batch(bootstrap, t, array, True))
    case("confluent produce idem-on", n, lambda t: ck_send(bootstrap, t, values))
    m = len(txn_values)
    for per_txn in (100, 1000):
        txns = -(-m // per_txn)
        case(
            f"pystream txn-{per_txn}",
            m,
            lambda t, k=per_txn: py_txn(bootstrap, t, txn_values, k),
            txns,
        )
        case(
            f"confluent txn-{per_txn}",
            m,
            lambda t, k=per_txn: ck_txn(bootstrap, t, txn_values, k),
            txns,
        )
    # Rounds: every scenario once per round, so that the machine's other load falls on
    # all of them alike rather than on whichever ran during a busy spell.
    rates: dict[str, list[float]] = {name: [] for name, *_ in scenarios}
    for round_number in range(args.repeat):
        for name, count, once, transactions in scenarios:
            rates[name].append(measure(name, count, once, transactions))
        print(f"round {round_number + 1}/{args.repeat} done", file=sys.stderr, flush=True)
    for name, count, _once, transactions in scenarios:
        runs = rates[name]
        row: dict[str, object] = {
            "scenario": name,
            "records": count,
            "runs_rps": runs,
            "median_rps": statistics.median(runs),
        }
        txn = ""
        if transactions:
            row["median_txn_per_s"] = statistics.median(runs) * transactions / count
            txn = f"  {row['median_txn_per_s']:7,.0f} txn/s"
        results.append(row)
        print(
            f"{name:32} {row['median_rps']:>12,.0f} rec/s  "
            f"(min {min(runs):,.0f}, max {max(runs):,.0f}){txn}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
