"""Incremental fetch sessions (KIP-227, issue 19): request bytes and broker CPU per fetch.

Starts two ``pystream serve`` brokers, one with fetch sessions (the default
``max.incremental.fetch.session.cache.slots=1000``) and one without (``=0``), each
holding one topic of ``--partitions`` partitions.  In each run, for each broker and
each consumer (pystream's, kafka-python's: both use sessions when the broker gives
them), a consumer assigned every partition is kept in steady state while a producer
writes one 100 B record every ``--interval-ms`` to one of ``--hot`` partitions (the
others stay idle).  Over ``--seconds`` (after ``--warmup`` seconds) it reads, from the
broker's ``/metrics`` and ``/proc``:

* **request B/fetch**: ``kafka_network_requestmetrics_requestbytes_total{request="Fetch"}``
  over ``kafka_network_requestmetrics_requests_total{request="Fetch"}``;
* **CPU µs/fetch**: the broker process's user+system CPU over the window (``/proc/PID/stat``)
  over the same Fetch count (the producer's few requests are in it, the same in both modes);
* **fetches/s** and **records/s** consumed (a check that the consumer keeps up).

Prints one table: the median of ``--runs`` runs and the spread (min-max) per row.

    PYTHONPATH=src python bench/fetch_sessions.py [--runs 3] [--partitions 1000]

At the defaults a run takes ~55 s (3 runs plus start-up: ~3 min).  The brokers, the
consumers and the producer share the machine.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from authorizer_overhead import Broker
from confluent_kafka import Producer
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition
from prometheus_client.parser import text_string_to_metric_families
from scale_partitions import cpu_seconds

import pystream
from pystream.cluster.metadata.local_store import LocalMetadataStore
from pystream.storage.log_dirs import lock_log_dirs

TOPIC = "sessions"
VALUE = b"x" * 100
CLIENTS = ("pystream", "kafka-python")
MODES = ("sessions", "no sessions")


def fetch_counters(metrics_url: str) -> tuple[float, float]:
    """(Fetch requests, Fetch request bytes) the broker has received."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    requests = size = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("request") != "Fetch":
                continue
            if sample.name == "kafka_network_requestmetrics_requests_total":
                requests = sample.value
            elif sample.name == "kafka_network_requestmetrics_requestbytes_total":
                size = sample.value
    return requests, size


def start_broker(directory: Path, partitions: int, slots: int) -> Broker:
    broker = Broker(directory, {"max.incremental.fetch.session.cache.slots": str(slots)})
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    with lock_log_dirs([str(data)]):  # the topic, written before the broker starts
        LocalMetadataStore(data, 0).create_topic_blocking(TOPIC, partitions, 1, None)
    return broker.start()


class Load:
    """One record every ``interval`` seconds to one of the hot partitions, in a thread."""

    def __init__(self, bootstrap: str, hot: list[int], interval: float) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self.hot = hot
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self.producer.produce(TOPIC, VALUE, partition=random.choice(self.hot))
            self.producer.poll(0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.producer.flush(30)


def consume_pystream(bootstrap: str, partitions: int, stop: threading.Event) -> Callable[[], int]:
    consumer = pystream.Consumer(
        bootstrap_servers=bootstrap, auto_offset_reset="latest", fetch_max_wait_ms=500
    )
    consumer.assign([(TOPIC, p) for p in range(partitions)])
    count = [0]

    def run() -> None:
        try:
            while not stop.is_set():
                count[0] += len(consumer.poll(0.2))
        finally:
            consumer.close()

    threading.Thread(target=run, daemon=True).start()
    return lambda: count[0]


def consume_kafka_python(
    bootstrap: str, partitions: int, stop: threading.Event
) -> Callable[[], int]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        fetch_max_wait_ms=500,
    )
    consumer.assign([KpTopicPartition(TOPIC, p) for p in range(partitions)])
    count = [0]

    def run() -> None:
        try:
            while not stop.is_set():
                count[0] += sum(len(r) for r in consumer.poll(timeout_ms=200).values())
        finally:
            consumer.close()

    threading.Thread(target=run, daemon=True).start()
    return lambda: count[0]


CONSUMERS = {"pystream": consume_pystream, "kafka-python": consume_kafka_python}


def measure(broker: Broker, client: str, args: argparse.Namespace) -> dict[str, float]:
    assert broker.process is not None
    pid = broker.process.pid
    hot = random.sample(range(args.partitions), args.hot)
    load = Load(broker.bootstrap, hot, args.interval_ms / 1000)
    stop = threading.Event()
    consumed = CONSUMERS[client](broker.bootstrap, args.partitions, stop)
    try:
        time.sleep(args.warmup)
        fetches0, bytes0 = fetch_counters(broker.metrics_url)
        cpu0, records0, t0 = cpu_seconds(pid), consumed(), time.perf_counter()
        time.sleep(args.seconds)
        fetches1, bytes1 = fetch_counters(broker.metrics_url)
        cpu1, records1, t1 = cpu_seconds(pid), consumed(), time.perf_counter()
    finally:
        stop.set()
        load.close()
    fetches = max(fetches1 - fetches0, 1)
    return {
        "request B/fetch": (bytes1 - bytes0) / fetches,
        "CPU µs/fetch": (cpu1 - cpu0) / fetches * 1e6,
        "fetches/s": fetches / (t1 - t0),
        "records/s": (records1 - records0) / (t1 - t0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=1000)
    parser.add_argument("--hot", type=int, default=5, help="partitions that get records")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="between records")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    args = parser.parse_args()
    clients = [c for c in args.clients.split(",") if c]
    logging.basicConfig(level=logging.WARNING)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="fetch-sessions-") as tmp:
        brokers = {
            "sessions": start_broker(Path(tmp) / "on", args.partitions, 1000),
            "no sessions": start_broker(Path(tmp) / "off", args.partitions, 0),
        }
        try:
            for run in range(args.runs):
                for client in clients:
                    for mode in MODES:
                        row = measure(brokers[mode], client, args)
                        results.setdefault((client, mode), []).append(row)
                        print(
                            f"run {run + 1}: {client:12} {mode:11} "
                            + "  ".join(f"{k} {v:,.0f}" for k, v in row.items()),
                            file=sys.stderr,
                        )
        finally:
            for broker in brokers.values():
                broker.stop()
    print(
        f"\nFetch sessions: {args.partitions} partitions, {args.hot} hot, one record per "
        f"{args.interval_ms:g} ms; median (min-max) of {args.runs} runs\n"
    )
    metrics = ["request B/fetch", "CPU µs/fetch", "fetches/s", "records/s"]
    print(f"{'client':13} {'mode':12} " + " ".join(f"{m:>24}" for m in metrics))
    for (client, mode), rows in results.items():
        cells = []
        for m in metrics:
            values = [r[m] for r in rows]
            cells.append(
                f"{statistics.median(values):>10,.0f} ({min(values):,.0f}-{max(values):,.0f})"
            )
        print(f"{client:13} {mode:12} " + " ".join(f"{c:>24}" for c in cells))


if __name__ == "__main__":
    main()
