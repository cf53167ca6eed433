"""``kafka_bench``: a produce + consume workload through a Kafka client, timed by
pytest-benchmark, with its throughput in the benchmark JSON's ``extra_info``.

Each round writes ``records`` records of ``size`` bytes to a fresh topic, waits for
every acknowledgement (acks=all), then reads them all back from the beginning.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

from pystream.testing.broker import TopicAdmin

__all__ = ["CLIENTS", "KafkaBench"]

Workload = Callable[[str, str, int, bytes, float], tuple[float, float]]


def _confluent(
    bootstrap: str, topic: str, records: int, payload: bytes, timeout: float
) -> tuple[float, float]:
    """confluent-kafka (librdkafka): seconds to produce (acknowledged), seconds to consume."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    start = time.perf_counter()
    for _ in range(records):
        while True:
            try:
                producer.produce(topic, payload)
                break
            except BufferError:  # its queue is full: let it send
                producer.poll(0.01)
    if producer.flush(timeout) != 0:
        raise TimeoutError(f"confluent-kafka: records unacknowledged after {timeout:g}s")
    produced = time.perf_counter()
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"{topic}-bench", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        seen = 0
        deadline = time.monotonic() + timeout
        while seen < records and time.monotonic() < deadline:
            for message in consumer.consume(10_000, 0.5):
                if message.error() is None:
                    seen += 1
    finally:
        consumer.close()
    _check_count("confluent-kafka", seen, records)
    return produced - start, time.perf_counter() - produced


def _pystream(
    bootstrap: str, topic: str, records: int, payload: bytes, timeout: float
) -> tuple[float, float]:
    """pystream's own client: seconds to produce (acknowledged), seconds to consume."""
    from pystream.client import Consumer, Producer

    start = time.perf_counter()
    with Producer(bootstrap, acks="all") as producer:
        producer.send_batch(topic, [payload] * records, partition=0)
        producer.flush(timeout)
    produced = time.perf_counter()
    with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([(topic, 0)])
        seen = 0
        deadline = time.monotonic() + timeout
        while seen < records and time.monotonic() < deadline:
            seen += len(consumer.poll(timeout=0.5))
    _check_count("pystream", seen, records)
    return produced - start, time.perf_counter() - produced


def _check_count(client: str, seen: int, records: int) -> None:
    if seen != records:
        raise AssertionError(f"{client}: consumed {seen} of the {records} records produced")


CLIENTS: dict[str, Workload] = {"confluent": _confluent, "pystream": _pystream}


class KafkaBench:
    """``kafka_bench(client="confluent"|"pystream", records=..., size=...)``: runs the workload
    under ``benchmark.pedantic`` and returns (and stores in ``benchmark.extra_info``)
    ``records_per_s`` and ``mb_per_s`` of the median round, and the same for its produce
    and consume halves."""

    _topics = itertools.count()

    def __init__(self, benchmark: Any, brokers: TopicAdmin) -> None:
        self.benchmark = benchmark
        self.brokers = brokers

    def __call__(
        self,
        client: str = "pystream",
        records: int = 10_000,
        size: int = 100,
        *,
        rounds: int = 3,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        if client not in CLIENTS:
            raise ValueError(f"kafka_bench client {client!r}: use one of {', '.join(CLIENTS)}")
        workload = CLIENTS[client]
        payload = b"x" * size
        timings: list[tuple[float, float]] = []
        created: list[str] = []

        def setup() -> tuple[tuple[str], dict[str, Any]]:
            topic = f"kafka-bench-{client}-{next(self._topics)}"
            created.append(self.brokers.create_topic(topic))
            return (topic,), {}

        def run(topic: str) -> None:
            bootstrap = self.brokers.bootstrap_servers
            timings.append(workload(bootstrap, topic, records, payload, timeout))

        try:
            self.benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1)
        finally:
            for topic in created:
                self.brokers.delete_topic(topic)
        produce = statistics.median(p for p, _ in timings)
        consume = statistics.median(c for _, c in timings)
        total = statistics.median(p + c for p, c in timings)
        megabytes = records * size / 1e6
        info = {
            "client": client,
            "records": records,
            "record_size": size,
            "records_per_s": records / total,
            "mb_per_s": megabytes / total,
            "produce_records_per_s": records / produce,
            "produce_mb_per_s": megabytes / produce,
            "consume_records_per_s": records / consume,
            "consume_mb_per_s": megabytes / consume,
        }
        self.benchmark.extra_info.update(info)
        return info
