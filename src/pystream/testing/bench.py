"""``kafka_bench``: a produce + consume workload through a Kafka client, timed by
pytest-benchmark, with its throughput in the benchmark JSON's ``extra_info``.

Each round writes ``records`` records of ``size`` bytes to a fresh topic, waits for
every acknowledgement (acks=all), then reads them all back from the beginning.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable
from typing import Any

from pystream.testing.broker import TopicAdmin

__all__ = ["CLIENTS", "KafkaBench"]

Workload = Callable[[str, str, int, bytes, float], tuple[float, float]]


def _workload(client: str) -> Workload:
    """``pystream bench``'s produce and consume loops for ``client`` (pystream's with
    ``send_batch``), acks=all to partition 0: (seconds to produce, seconds to consume)."""

    def run(
        bootstrap: str, topic: str, records: int, payload: bytes, timeout: float
    ) -> tuple[float, float]:
        from pystream.cli.bench_workload import (
            ConsumeWorkload,
            ProduceWorkload,
            consume_share,
            produce_share,
        )

        produce = ProduceWorkload(
            bootstrap, topic, records, len(payload), acks="all", api="send_batch", timeout_s=timeout
        )
        produced = produce_share(client, produce, records, 0, 0, samples=0)
        consume = ConsumeWorkload(bootstrap, topic, {0: (0, records)}, timeout_s=timeout)
        consumed = consume_share(client, consume)
        if consumed.records != records:
            raise AssertionError(f"{client}: consumed {consumed.records} of {records} records")
        return (produced.end_ns - produced.start_ns) / 1e9, (
            consumed.end_ns - consumed.start_ns
        ) / 1e9

    return run


CLIENTS: dict[str, Workload] = {client: _workload(client) for client in ("confluent", "pystream")}


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
