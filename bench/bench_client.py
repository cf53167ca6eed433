"""Client throughput: pystream's Producer/Consumer next to confluent-kafka (librdkafka),
kafka-python and aiokafka, same broker, same workload, one run.

Run against a broker you started, or let the script start a ``pystream serve``::

    PYTHONPATH=src python bench/bench_client.py                       # own broker
    PYTHONPATH=src python bench/bench_client.py --bootstrap 127.0.0.1:9092 \\
        [--records 1000000] [--size 100] [--partitions 3] [--repeat 3] [--json out.json]

=======================  ===================================================================
scenario                 what one run does
=======================  ===================================================================
pystream send            ``for v in values: producer.send(topic, v)`` then ``flush()``
pystream send keyed      the same with a key per record (murmur2 partitioning)
pystream aio send        ``await producer.send(topic, v)`` (pystream.aio) then ``flush()``
pystream send_batch      ``producer.send_batch(topic, values).result()`` (a list of bytes)
pystream send_batch np   the same from a ``(records, size)`` uint8 numpy array
confluent produce        ``for v in values: producer.produce(topic, v)`` then ``flush()``
confluent produce keyed  the same with a key per record
pystream poll            read the topic back: ``consumer.poll()`` until every record arrived
confluent consume        read it back with ``consumer.consume(10000, timeout)``, defaults
confluent consume tuned  the same with librdkafka's prefetch limits raised (see below)
=======================  ===================================================================

Producers use acks=1, linger 5 ms, 1 MB batches, no compression; each producer run
writes a fresh topic and the count is checked against the topic's end offsets.
Consumers start at offset 0 of a topic holding ``--records`` records and stop at the
last one; their time includes connecting.  Throughput: records/s and MB/s (10**6 bytes
of record values).  Runs are repeated ``--repeat`` times; the best run is reported
(the machine's other load only ever slows a run down).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import Producer as CKProducer
from confluent_kafka import TopicPartition as CKTopicPartition

import pystream
from pystream import aio

PRODUCER_SETTINGS = {"acks": 1, "linger_ms": 5, "batch_size": 1_000_000}
CK_PRODUCER = {
    "acks": 1,
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 2_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
}


@contextmanager
def own_broker(partitions: int) -> Iterator[str]:
    """A ``pystream serve`` on a free loopback port in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pystream",
            "serve",
            "--override",
            f"log.dirs={tmp}/data",
            "--override",
            "listeners=PLAINTEXT://127.0.0.1:0",
            "--override",
            f"num.partitions={partitions}",
        ]
        # The broker runs the pystream this script imports (in-place build or installed).
        root = str(Path(pystream.__file__).resolve().parent.parent)
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp,
            env={**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                found = re.search(r"bootstrap\.servers=(\S+)", line)
                if found:
                    break
            else:
                raise SystemExit("the broker did not start")
            yield found.group(1)
        finally:
            process.terminate()
            process.wait(30)


def end_offset_total(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = CKConsumer({"bootstrap.servers": bootstrap, "group.id": "bench-check"})
    try:
        return sum(
            consumer.get_watermark_offsets(CKTopicPartition(topic, p), 15)[1]
            for p in range(partitions)
        )
    finally:
        consumer.close()


def fresh_topic(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- producers


def py_send(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes] | None) -> float:
    with pystream.Producer(bootstrap, **PRODUCER_SETTINGS) as producer:
        producer.send(topic, b"warm-up")
        producer.flush()
        send = producer.send
        start = time.perf_counter()
        if keys is None:
            for v in values:
                send(topic, v)
        else:
            for k, v in zip(keys, values, strict=True):
                send(topic, v, k)
        producer.flush()
        return time.perf_counter() - start


def py_aio_send(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes] | None) -> float:
    async def run() -> float:
        async with aio.Producer(bootstrap, **PRODUCER_SETTINGS) as producer:
            await producer.send_and_wait(topic, b"warm-up")
            send = producer.send
            start = time.perf_counter()
            for v in values:
                await send(topic, v)
            await producer.flush()
            return time.perf_counter() - start

    return asyncio.run(run())


def py_send_batch(bootstrap: str, topic: str, values: object, keys: object) -> float:
    with pystream.Producer(bootstrap, **PRODUCER_SETTINGS) as producer:
        producer.send(topic, b"warm-up")
        producer.flush()
        start = time.perf_counter()
        producer.send_batch(topic, values, keys).result(120)  # type: ignore[arg-type]
        return time.perf_counter() - start


def ck_produce(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes] | None) -> float:
    producer = CKProducer({"bootstrap.servers": bootstrap, **CK_PRODUCER})
    producer.produce(topic, b"warm-up")
    producer.flush(30)
    produce, poll = producer.produce, producer.poll
    start = time.perf_counter()
    for i, v in enumerate(values):
        while True:
            try:
                if keys is None:
                    produce(topic, v)
                else:
                    produce(topic, v, keys[i])
                break
            except BufferError:
                poll(0.001)
    producer.flush(120)
    return time.perf_counter() - start


def kp_produce(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes] | None) -> float:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=5,
        batch_size=1_000_000,
        enable_idempotence=False,
    )
    producer.send(topic, b"warm-up").get(30)
    send = producer.send
    start = time.perf_counter()
    for i, v in enumerate(values):
        send(topic, v, key=None if keys is None else keys[i])
    producer.flush(120)
    seconds = time.perf_counter() - start
    producer.close()
    return seconds


def aio_produce(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes] | None) -> float:
    from aiokafka import AIOKafkaProducer

    async def go() -> float:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks=1, linger_ms=5, max_batch_size=1_000_000
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"warm-up")
            send = producer.send
            start = time.perf_counter()
            futures = [
                await send(topic, v, key=None if keys is None else keys[i])
                for i, v in enumerate(values)
            ]
            await asyncio.gather(*futures)
            return time.perf_counter() - start
        finally:
            await producer.stop()

    return asyncio.run(go())


# ---------------------------------------------------------------- consumers


def py_poll(bootstrap: str, topic: str, count: int, partitions: int) -> float:
    start = time.perf_counter()
    with pystream.Consumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", max_poll_records=10_000
    ) as consumer:
        consumer.assign([(topic, p) for p in range(partitions)])
        got = 0
        deadline = time.monotonic() + 120
        while got < count:
            got += len(consumer.poll(0.05))
            if time.monotonic() > deadline:
                raise RuntimeError(f"pystream poll stalled after {got} records")
        return time.perf_counter() - start


# librdkafka stops fetching for fetch.queue.backoff.ms (1 s in 2.x) whenever more than
# queued.min.messages (100,000) wait in its local queue: at these rates that is every few
# fetches.  The tuned settings let it prefetch like pystream does.
CK_CONSUMER_TUNED = {
    "queued.min.messages": 1_000_000,
    "queued.max.messages.kbytes": 1_048_576,
    "fetch.queue.backoff.ms": 1,
}


def ck_consume(
    bootstrap: str, topic: str, count: int, partitions: int, tuned: bool = False
) -> float:
    start = time.perf_counter()
    settings = {
        "bootstrap.servers": bootstrap,
        "group.id": "bench-" + topic,
        "enable.auto.commit": False,
        **(CK_CONSUMER_TUNED if tuned else {}),
    }
    consumer = CKConsumer(settings)
    try:
        consumer.assign([CKTopicPartition(topic, p, 0) for p in range(partitions)])
        got = 0
        deadline = time.monotonic() + 120
        while got < count:
            # consume() waits its whole timeout unless the batch fills: keep it short.
            got += len(consumer.consume(10_000, 0.05))
            if time.monotonic() > deadline:
                raise RuntimeError(f"confluent consume stalled after {got} records")
        return time.perf_counter() - start
    finally:
        consumer.close()


def kp_consume(bootstrap: str, topic: str, count: int, partitions: int) -> float:
    from kafka import KafkaConsumer, TopicPartition

    start = time.perf_counter()
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_poll_records=10_000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        consumer.seek_to_beginning()
        got = 0
        deadline = time.monotonic() + 300
        while got < count:
            got += sum(len(r) for r in consumer.poll(timeout_ms=50).values())
            if time.monotonic() > deadline:
                raise RuntimeError(f"kafka-python consume stalled after {got} records")
        return time.perf_counter() - start
    finally:
        consumer.close()


def aio_consume(bootstrap: str, topic: str, count: int, partitions: int) -> float:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def go() -> float:
        start = time.perf_counter()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
            await consumer.seek_to_beginning()
            got = 0
            deadline = time.monotonic() + 300
            while got < count:
                batch = await consumer.getmany(timeout_ms=50, max_records=10_000)
                got += sum(len(r) for r in batch.values())
                if time.monotonic() > deadline:
                    raise RuntimeError(f"aiokafka consume stalled after {got} records")
            return time.perf_counter() - start
        finally:
            await consumer.stop()

    return asyncio.run(go())


# ---------------------------------------------------------------- driver


def best_of(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def client_bench_parser(description: str) -> argparse.ArgumentParser:
    """The options every client bench takes (broker, sizes, rounds, filter, JSON out)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", help="an existing broker (default: start pystream serve)")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=100, help="value bytes per record")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", help="comma-separated scenario name substrings to run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser


def run_on_broker(args: argparse.Namespace, run: Callable[[argparse.Namespace, str], int]) -> int:
    """``run(args, bootstrap)`` on ``--bootstrap``, or on a broker started for the run."""
    if args.bootstrap:
        return run(args, args.bootstrap)
    with own_broker(args.partitions) as bootstrap:
        return run(args, bootstrap)


def main(argv: list[str] | None = None) -> int:
    args = client_bench_parser(__doc__.split("\n")[0]).parse_args(argv)
    return run_on_broker(args, run)


def run(args: argparse.Namespace, bootstrap: str) -> int:
    n, size, partitions = args.records, args.size, args.partitions
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    values = [bytes(row) for row in array[: min(n, 50_000)]] * (n // min(n, 50_000) + 1)
    values = values[:n]
    keys = [b"key-%d" % (i % 10_000) for i in range(n)]

    def producer_case(
        kind: str, fn: Callable[..., float], data: object, k: object
    ) -> Callable[[], float]:
        def once() -> float:
            topic = fresh_topic(kind)
            seconds = fn(bootstrap, topic, data, k)
            written = end_offset_total(bootstrap, topic, partitions)
            if written != n + 1:  # + the warm-up record
                raise RuntimeError(f"{kind}: {written - 1} records written, expected {n}")
            return seconds

        return once

    # One topic holding n records for the consumers.
    read_topic = fresh_topic("read")
    py_send_batch(bootstrap, read_topic, values, None)
    cases: list[tuple[str, Callable[[], float]]] = [
        ("pystream send", producer_case("send", py_send, values, None)),
        ("pystream send keyed", producer_case("sendk", py_send, values, keys)),
        ("pystream aio send", producer_case("aio", py_aio_send, values, None)),
        ("pystream send_batch", producer_case("batch", py_send_batch, values, None)),
        ("pystream send_batch np", producer_case("np", py_send_batch, array, None)),
        ("confluent produce", producer_case("ck", ck_produce, values, None)),
        ("confluent produce keyed", producer_case("ckk", ck_produce, values, keys)),
        ("kafka-python send", producer_case("kp", kp_produce, values, None)),
        ("aiokafka send", producer_case("aiokafka", aio_produce, values, None)),
        ("pystream poll", lambda: py_poll(bootstrap, read_topic, n + 1, partitions)),
        ("confluent consume", lambda: ck_consume(bootstrap, read_topic, n + 1, partitions)),
        (
            "confluent consume tuned",
            lambda: ck_consume(bootstrap, read_topic, n + 1, partitions, tuned=True),
        ),
        ("kafka-python consume", lambda: kp_consume(bootstrap, read_topic, n + 1, partitions)),
        ("aiokafka consume", lambda: aio_consume(bootstrap, read_topic, n + 1, partitions)),
    ]
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        cases = [c for c in cases if any(w in c[0] for w in wanted)]
    results = []
    print(
        f"broker {bootstrap}, {n:,} records x {size} B, {partitions} partitions, "
        f"best of {args.repeat}; {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print(f"{'scenario':<26}{'records/s':>14}{'MB/s':>10}{'seconds':>10}")
    for name, case in cases:
        seconds = best_of(args.repeat, case)
        rate = n / seconds
        results.append(
            {
                "scenario": name,
                "records_per_s": rate,
                "mb_per_s": rate * size / 1e6,
                "seconds": seconds,
            }
        )
        print(f"{name:<26}{rate:>14,.0f}{rate * size / 1e6:>10.1f}{seconds:>10.3f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"records": n, "size": size, "partitions": partitions, "results": results}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
