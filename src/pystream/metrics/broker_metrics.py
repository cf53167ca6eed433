"""The broker's counters and histograms, rendered in Prometheus text format.

Hot paths bump plain ints in dicts and lists (no locks, no label lookups through
``prometheus_client``'s metric objects): a scrape turns them into metric families
through one custom collector.  The event loop is the only writer, so the counters
need no lock; a scrape runs on the same loop.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample

#: Request latency bucket bounds in ms (Kafka's TotalTimeMs, as a Prometheus histogram).
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
)  # fmt: skip

#: A scrape-time source: yields metric families read from in-memory state.
MetricSource = Callable[[], Iterable[Metric]]

_TOPIC_COUNTERS = {
    # attribute -> (JMX exporter name of the BrokerTopicMetrics meter, help)
    "messages_in": ("messagesin", "Records appended by produce requests (leader appends)."),
    "bytes_in": ("bytesin", "Bytes of record batches appended by produce requests."),
    "bytes_out": ("bytesout", "Bytes of record batches sent in fetch responses."),
    "replication_bytes_out": ("replicationbytesout", "Bytes sent to followers' fetches."),
    "total_produce_requests": ("totalproducerequests", "Produce requests, per partition."),
    "total_fetch_requests": ("totalfetchrequests", "Fetch requests, per partition."),
    "failed_produce_requests": ("failedproducerequests", "Failed produce partitions."),
    "failed_fetch_requests": ("failedfetchrequests", "Failed fetch partitions."),
}


class RequestMetrics:
    """Requests and their total time per API (Kafka's RequestMetrics), by api key."""

    __slots__ = ("names", "counts", "buckets", "sums", "bounds", "request_bytes")

    def __init__(
        self, names: Mapping[int, str], bounds_ms: tuple[float, ...] = LATENCY_BUCKETS_MS
    ) -> None:
        """``names``: each api key's name (the ``request`` label; unknown keys by number)."""
        self.bounds = bounds_ms
        self.names = names
        self.counts: dict[int, int] = defaultdict(int)
        self.sums: dict[int, float] = defaultdict(float)
        self.buckets: dict[int, list[int]] = {}
        self.request_bytes: dict[int, int] = defaultdict(int)

    def record(self, api_key: int, total_ms: float, size: int = 0) -> None:
        """One request of ``api_key`` (``size`` bytes, header included) answered after
        ``total_ms`` (on the hot path)."""
        self.request_bytes[api_key] += size
        buckets = self.buckets.get(api_key)
        if buckets is None:
            buckets = self.buckets[api_key] = [0] * (len(self.bounds) + 1)
        buckets[bisect.bisect_left(self.bounds, total_ms)] += 1
        self.counts[api_key] += 1
        self.sums[api_key] += total_ms

    def families(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "kafka_network_requestmetrics_requests",
            "Requests received, per API (Kafka's RequestsPerSec).",
            labels=["request"],
        )
        latency = HistogramMetricFamily(
            "kafka_network_requestmetrics_totaltimems",
            "Time from a request's decoding to its response being ready, in ms (the local "
            "and remote phases of Kafka's TotalTimeMs: purgatory waits included).",
            labels=["request"],
        )
        request_bytes = CounterMetricFamily(
            "kafka_network_requestmetrics_requestbytes",
            "Bytes of requests received, per API (the sum of Kafka's RequestBytes).",
            labels=["request"],
        )
        bounds = [*self.bounds, float("inf")]
        for api_key in sorted(self.buckets):
            name = self.names.get(api_key, str(api_key))
            requests.add_metric([name], self.counts[api_key])
            request_bytes.add_metric([name], self.request_bytes[api_key])
            counts = zip(bounds, self.buckets[api_key], strict=True)
            latency.add_metric([name], cumulative_buckets(counts), self.sums[api_key])
        yield requests
        yield request_bytes
        yield latency


class BrokerMetrics:
    """Everything one broker counts, and the registry a scrape renders.

    The counters are public dicts and ints so the hot paths bump them with one
    dictionary operation; :meth:`add_source` registers scrape-time gauges.
    """

    def __init__(self, api_names: Mapping[int, str] | None = None) -> None:
        """``api_names``: the request label of each api key (Kafka's API names)."""
        self.messages_in: dict[str, int] = defaultdict(int)
        self.bytes_in: dict[str, int] = defaultdict(int)
        self.bytes_out: dict[str, int] = defaultdict(int)
        self.replication_bytes_out: dict[str, int] = defaultdict(int)
        self.total_produce_requests: dict[str, int] = defaultdict(int)
        self.total_fetch_requests: dict[str, int] = defaultdict(int)
        self.failed_produce_requests: dict[str, int] = defaultdict(int)
        self.failed_fetch_requests: dict[str, int] = defaultdict(int)
        self.requests = RequestMetrics(api_names or {})
        self.isr_shrinks = 0
        self.isr_expands = 0
        self.connections_created: dict[str, int] = defaultdict(int)
        self.connections_closed: dict[str, int] = defaultdict(int)
        self.retention_segments_deleted = 0
        self.cleaner_runs = 0
        self.cleaner_bytes_read = 0
        self.cleaner_bytes_written = 0
        self._sources: list[MetricSource] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # type: ignore[arg-type]  # a Collector by duck type

    # --- hot-path helpers ---------------------------------------------------------------------
    def record_produce(self, topic: str, records: int, size: int) -> None:
        """One partition's batch appended by a produce request."""
        self.messages_in[topic] += records
        self.bytes_in[topic] += size
        self.total_produce_requests[topic] += 1

    def record_failed_produce(self, topic: str) -> None:
        """One partition of a produce request refused."""
        self.total_produce_requests[topic] += 1
        self.failed_produce_requests[topic] += 1

    def record_fetch(self, topic: str, size: int, *, follower: bool, failed: bool) -> None:
        """One partition of a fetch response (``size`` bytes of records)."""
        self.total_fetch_requests[topic] += 1
        if failed:
            self.failed_fetch_requests[topic] += 1
        elif size:
            self.bytes_out[topic] += size
            if follower:
                self.replication_bytes_out[topic] += size

    def record_idle_fetches(self, topic: str, partitions: int) -> None:
        """``partitions`` partitions of a fetch with no records and no error (a session's
        idle partitions, counted at once)."""
        self.total_fetch_requests[topic] += partitions

    # --- scraping ---------------------------------------------------------------------------
    def add_source(self, source: MetricSource) -> None:
        """Register a scrape-time source of metric families (gauges from memory)."""
        self._sources.append(source)

    def render(self) -> bytes:
        """Every metric in Prometheus text format (what ``GET /metrics`` answers)."""
        return generate_latest(self.registry)

    def snapshot(self) -> list[Metric]:
        """Every metric family, read now (on the loop: the state does not move under it);
        :func:`render_families` turns them into text anywhere (a thread)."""
        return list(self.collect())

    def collect(self) -> Iterable[Metric]:
        """The ``prometheus_client`` Collector interface."""
        for attribute, (name, help_text) in _TOPIC_COUNTERS.items():
            yield _per_topic(
                f"kafka_server_brokertopicmetrics_{name}", help_text, getattr(self, attribute)
            )
        yield from self.requests.families()
        yield _counter(
            "kafka_server_replicamanager_isrshrinks", "ISR shrinks of partitions led here.",
            self.isr_shrinks,
        )  # fmt: skip
        yield _counter(
            "kafka_server_replicamanager_isrexpands", "ISR expansions of partitions led here.",
            self.isr_expands,
        )  # fmt: skip
        for name, counts, help_text in (
            ("connectioncreation", self.connections_created, "Connections opened"),
            ("connectionclose", self.connections_closed, "Connections closed"),
        ):
            family = CounterMetricFamily(
                f"kafka_server_socketservermetrics_{name}", f"{help_text}, per listener.",
                labels=["listener"],
            )  # fmt: skip
            for listener, count in sorted(counts.items()):
                family.add_metric([listener], count)
            yield family
        yield _counter(
            "kafka_log_logmanager_retentionsegmentsdeleted",
            "Segments deleted by time, size or log-start-offset retention.",
            self.retention_segments_deleted,
        )
        yield _counter(
            "kafka_log_logcleaner_cleanerruns", "Cleans of compacted logs.", self.cleaner_runs
        )
        yield _counter(
            "kafka_log_logcleaner_cleanerbytesread",
            "Bytes read by the log cleaner.",
            self.cleaner_bytes_read,
        )
        yield _counter(
            "kafka_log_logcleaner_cleanerbyteswritten",
            "Bytes written by the log cleaner.",
            self.cleaner_bytes_written,
        )
        for source in self._sources:
            yield from source()


def render_families(families: list[Metric]) -> bytes:
    """Families from :meth:`BrokerMetrics.snapshot` in Prometheus text format."""

    class Snapshot:
        def collect(self) -> list[Metric]:
            return families

    return generate_latest(Snapshot())  # type: ignore[arg-type]  # a Collector by duck type


def gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    """A gauge family with one unlabelled sample."""
    return GaugeMetricFamily(name, help_text, value=value)


def labelled_gauge(
    name: str, help_text: str, labels: list[str], samples: Iterable[tuple[list[str], float]]
) -> GaugeMetricFamily:
    """A gauge family with one sample per label tuple."""
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


def _per_topic(name: str, help_text: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    """The all-topics sample (no label, as Kafka's unlabelled MBean) and one per topic."""
    family = CounterMetricFamily(name, help_text, labels=[])
    family.add_metric([], sum(counts.values()))
    for topic, count in sorted(counts.items()):
        family.samples.append(Sample(f"{name}_total", {"topic": topic}, count))
    return family


def cumulative_buckets(counts: Iterable[tuple[float, int]]) -> list[tuple[str, float]]:
    """(upper bound, count in that bucket alone) → Prometheus' cumulative ``le`` buckets."""
    total, buckets = 0, []
    for bound, count in counts:
        total += count
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
    return buckets
