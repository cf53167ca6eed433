"""Live rates from the brokers' own ``GET /metrics``, scraped by the console: a short ring
of samples, and from consecutive samples the rates the charts and the topics page show
(messages and bytes in/out per second, in total and per topic; requests per second and
latency percentiles per API from the ``kafka_network_requestmetrics_totaltimems``
histogram).  Scrapes go over httpx; the text is parsed in a thread."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from pystream.aio import AdminClient, TopicPartition

from .config import ConsoleConfig

__all__ = ["LiveMetrics", "TopicRate", "metrics_urls_of", "quantile"]

log = logging.getLogger("pystream.console.metrics")
# httpx logs every request at INFO: a line per broker every scrape would drown the log.
logging.getLogger("httpx").setLevel(logging.WARNING)

_TOPIC = "kafka_server_brokertopicmetrics_"
_THROUGHPUT = {
    _TOPIC + "messagesin_total": "messages_in",
    _TOPIC + "bytesin_total": "bytes_in",
    _TOPIC + "bytesout_total": "bytes_out",
}
_REQUESTS = "kafka_network_requestmetrics_requests_total"
_LATENCY_BUCKET = "kafka_network_requestmetrics_totaltimems_bucket"
_LOG_SIZE = "kafka_log_log_size"
# The brokers' metrics addresses are asked for again this often (brokers come and go).
_REDISCOVER_S = 30.0


@dataclass
class TopicRate:
    messages_in: float
    bytes_in: float
    bytes_out: float


@dataclass
class Sample:
    """One scrape, summed over the brokers that answered."""

    at: float  # monotonic
    wall_ms: int
    totals: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    topics: dict[str, dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    requests: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # api -> {upper bound: cumulative count}
    buckets: dict[str, dict[float, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    # A partition's size on its largest replica (each broker reports the logs it hosts).
    sizes: dict[TopicPartition, int] = field(default_factory=dict)


def _add_scrape(sample: Sample, text: str) -> None:
    """Fold one broker's /metrics text into ``sample`` (runs in a thread)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name, labels, value = s.name, s.labels, s.value
            if name in _THROUGHPUT:
                what = _THROUGHPUT[name]
                if "topic" in labels:
                    sample.topics[labels["topic"]][what] += value
                else:
                    sample.totals[what] += value
            elif name == _REQUESTS:
                sample.requests[labels.get("request", "?")] += value
            elif name == _LATENCY_BUCKET:
                bound = float(labels["le"])
                sample.buckets[labels.get("request", "?")][bound] += value
            elif name == _LOG_SIZE:
                tp = TopicPartition(labels["topic"], int(labels["partition"]))
                sample.sizes[tp] = max(sample.sizes.get(tp, 0), int(value))


def quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a histogram's cumulative buckets (sorted by bound),
    interpolated within its bucket as Prometheus's ``histogram_quantile``; None if empty."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank = q * cumulative[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bucket: its bound is all we know
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _delta(new: float, old: float) -> float:
    # A broker restart starts its counters again: the new value is the increase.
    return new - old if new >= old else new


async def metrics_urls_of(admin: AdminClient) -> tuple[list[str], list[str]]:
    """Each broker's /metrics URL from its ``metrics.listener`` (DescribeConfigs on the
    BROKER resource), and why a broker has none."""
    cluster = await admin.describe_cluster()
    urls, problems = [], []
    for broker in cluster["brokers"]:
        key = (4, str(broker.node_id))
        configs = await admin.describe_configs(
            [("broker", str(broker.node_id))], ["metrics.enable", "metrics.listener"]
        )
        entries = configs.get(key, {})
        enabled = entries.get("metrics.enable")
        listener = entries.get("metrics.listener")
        if enabled is not None and enabled.value == "false":
            problems.append(f"broker {broker.node_id}: metrics.enable=false")
            continue
        if listener is None or not listener.value:
            problems.append(f"broker {broker.node_id} does not report metrics.listener")
            continue
        parts = urlsplit(listener.value)
        if not parts.port:
            problems.append(
                f"broker {broker.node_id}: metrics.listener={listener.value} has no fixed port; "
                f"give the console its URL (--metrics-url)"
            )
            continue
        host = parts.hostname or ""
        if host in ("", "0.0.0.0", "::"):  # listening everywhere: reach it where clients do
            host = broker.host
        urls.append(f"http://{host}:{parts.port}/metrics")
    return urls, problems


class LiveMetrics:
    """Scrapes every ``scrape_interval_s`` while started; read by the pages and the
    charts' JSON."""

    def __init__(self, config: ConsoleConfig, admin: Callable[[], Awaitable[AdminClient]]) -> None:
        self.config = config
        self._admin = admin
        self._samples: deque[Sample] = deque(maxlen=6)
        self._points: deque[dict[str, Any]] = deque(maxlen=config.samples_kept)
        self.urls: list[str] = list(config.metrics_urls)
        self.problems: list[str] = []
        self._discovered_at = -math.inf
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # trust_env=False: the brokers' metrics are reached directly, never through an
        # HTTP(S)_PROXY the environment names for the outside world.  Made in a thread:
        # httpx loads the CA certificates for its TLS context (hundreds of ms).
        self._http = await asyncio.to_thread(httpx.AsyncClient, timeout=2.0, trust_env=False)
        self._task = asyncio.create_task(self._run(), name="console-metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()

    async def _run(self) -> None:
        while True:
            try:
                await self.scrape()
            except Exception as exc:  # the charts say what went wrong; the console goes on
                self.problems = [f"scrape failed: {exc}"]
                log.debug("metrics scrape failed", exc_info=True)
            await asyncio.sleep(self.config.scrape_interval_s)

    async def _discover(self) -> None:
        if self.config.metrics_urls:
            return
        if time.monotonic() - self._discovered_at < _REDISCOVER_S and self.urls:
            return
        self.urls, self.problems = await metrics_urls_of(await self._admin())
        self._discovered_at = time.monotonic()

    async def scrape(self) -> None:
        """One scrape of every broker; a point for the charts from it and the last one."""
        await self._discover()
        assert self._http is not None
        sample = Sample(at=time.monotonic(), wall_ms=int(time.time() * 1000))
        failed = []
        answers = await asyncio.gather(
            *(self._http.get(url) for url in self.urls), return_exceptions=True
        )
        texts = []
        for url, answer in zip(self.urls, answers, strict=True):
            if isinstance(answer, BaseException) or answer.status_code != 200:
                failed.append(f"{url}: {answer if isinstance(answer, BaseException) else answer}")
            else:
                texts.append(answer.text)
        if failed:
            self._discovered_at = -math.inf  # a broker moved or left: ask again next time
        self.problems = [p for p in self.problems if not p.startswith("http")] + failed
        if not texts:
            return
        await asyncio.to_thread(lambda: [_add_scrape(sample, t) for t in texts])
        if self._samples:
            self._points.append(self._point(self._samples[-1], sample))
        self._samples.append(sample)

    def _point(self, old: Sample, new: Sample) -> dict[str, Any]:
        seconds = max(new.at - old.at, 1e-3)
        apis = {}
        for api, count in new.requests.items():
            rate = _delta(count, old.requests.get(api, 0.0)) / seconds
            bounds = sorted(new.buckets.get(api, {}).items())
            before = old.buckets.get(api, {})
            window = [(b, _delta(c, before.get(b, 0.0))) for b, c in bounds]
            apis[api] = {
                "rate": rate,
                "p50": quantile(0.5, window),
                "p99": quantile(0.99, window),
            }
        point: dict[str, Any] = {"t": new.wall_ms / 1000, "apis": apis}
        for what in _THROUGHPUT.values():
            point[what] = _delta(new.totals[what], old.totals.get(what, 0.0)) / seconds
        return point

    def series(self) -> dict[str, Any]:
        """The charts' JSON: time (s), throughput and per-API series, where the metrics
        come from and what went wrong."""
        points = list(self._points)
        apis = sorted({api for p in points for api in p["apis"]})
        return {
            "t": [p["t"] for p in points],
            **{what: [p[what] for p in points] for what in _THROUGHPUT.values()},
            "apis": {
                api: {
                    key: [p["apis"].get(api, {}).get(key) for p in points]
                    for key in ("rate", "p50", "p99")
                }
                for api in apis
            },
            "sources": self.urls,
            "problems": self.problems,
        }

    def topic_rates(self) -> dict[str, TopicRate]:
        """Per topic, over the samples kept (up to the last ~10 s)."""
        if len(self._samples) < 2:
            return {}
        old, new = self._samples[0], self._samples[-1]
        seconds = max(new.at - old.at, 1e-3)
        rates = {}
        for topic, values in new.topics.items():
            before = old.topics.get(topic, {})
            rates[topic] = TopicRate(
                *(
                    _delta(values[w], before.get(w, 0.0)) / seconds
                    for w in ("messages_in", "bytes_in", "bytes_out")
                )
            )
        return rates

    def partition_sizes(self) -> dict[TopicPartition, int]:
        """Each partition's size in bytes at the last scrape (empty: none yet)."""
        return dict(self._samples[-1].sizes) if self._samples else {}

    def api_table(self) -> list[tuple[str, dict[str, float | None]]]:
        """The latest point's per-API rates and percentiles, busiest first."""
        if not self._points:
            return []
        apis = self._points[-1]["apis"]
        return sorted(apis.items(), key=lambda kv: -kv[1]["rate"])
