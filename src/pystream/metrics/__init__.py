"""Prometheus metrics and health checks of a broker (on ``prometheus-client``).

A leaf: nothing here imports pystream above ``config``/``errors``.  Components get
the one :class:`BrokerMetrics` of their broker through their constructors and bump
its plain counters once per request or batch (never per record); everything that
is a state rather than an event (partition counts, log sizes, consumer lag) is read
from memory at scrape time by the sources the broker registers.  Names follow the
JMX exporter's rendering of Kafka's MBeans, so existing dashboards work.
"""

from pystream.metrics.broker_metrics import BrokerMetrics, MetricSource, RequestMetrics
from pystream.metrics.http import MetricsServer, parse_metrics_listener

__all__ = [
    "BrokerMetrics",
    "MetricSource",
    "MetricsServer",
    "RequestMetrics",
    "parse_metrics_listener",
]
