"""The broker's scrape-time metrics: states read from memory when Prometheus scrapes.

Partition counts, log sizes and offsets, consumer-group lag, connections, purgatory
sizes and event-loop lag are states, not events: they are computed here from the
wired services on each scrape (no file is stat-ed: segment sizes are kept in
memory), and readiness (``/readyz``) is judged from the same state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from pystream.broker.loop_monitor import LoopLagMonitor
from pystream.broker.network import KafkaConnection
from pystream.broker.services import BrokerServices
from pystream.metrics.broker_metrics import cumulative_buckets, gauge, labelled_gauge


def partition_families(services: BrokerServices) -> Iterable[Metric]:
    """ReplicaManager and controller gauges, and each hosted log's size and offsets."""
    broker_id = services.broker_id
    partitions = services.replica_manager.partitions()
    leaders = under_replicated = offline = 0
    sizes, starts, ends = [], [], []
    for (topic, index), partition in partitions.items():
        state = partition.state
        if state.leader == broker_id:
            leaders += 1
            if len(state.isr) < len(state.replicas):
                under_replicated += 1
        elif state.leader < 0:
            offline += 1
        labels = [topic, str(index)]
        log = partition.log
        sizes.append((labels, log.size_in_bytes))
        starts.append((labels, log.log_start_offset))
        ends.append((labels, log.log_end_offset))
    prefix = "kafka_server_replicamanager_"
    yield gauge(f"{prefix}partitioncount", "Partitions hosted on this broker.", len(partitions))
    yield gauge(f"{prefix}leadercount", "Partitions led by this broker.", leaders)
    yield gauge(
        f"{prefix}underreplicatedpartitions",
        "Partitions led here whose ISR is smaller than their replica set.",
        under_replicated,
    )
    yield gauge(
        f"{prefix}offlinereplicacount", "Replicas hosted here whose partition has no leader.",
        offline,
    )  # fmt: skip
    is_controller = services.is_active_controller
    yield gauge(
        "kafka_controller_kafkacontroller_activecontrollercount",
        "1 on the active controller, 0 elsewhere.",
        int(is_controller),
    )
    yield gauge(
        "kafka_controller_kafkacontroller_offlinepartitionscount",
        "Partitions without a live leader (counted by the active controller; 0 elsewhere).",
        offline_partitions(services) if is_controller else 0,
    )
    labels = ["topic", "partition"]
    yield labelled_gauge("kafka_log_log_size", "Bytes in the log's segments.", labels, sizes)
    yield labelled_gauge("kafka_log_log_logstartoffset", "The log's first offset.", labels, starts)
    yield labelled_gauge(
        "kafka_log_log_logendoffset", "The offset the next record gets.", labels, ends
    )


def offline_partitions(services: BrokerServices) -> int:
    """Partitions of the cluster whose leader is none or not a live broker."""
    live = set(services.metadata.live_brokers())
    return sum(
        1
        for topic in services.metadata.topics().values()
        for state in topic.partitions.values()
        if state.leader not in live
    )


def consumer_group_families(services: BrokerServices) -> Iterable[Metric]:
    """Each group's committed offset and lag per partition (kafka_exporter's names), for
    the groups coordinated here and the partitions whose high watermark is known here."""
    replicas = services.replica_manager
    current, lag = [], []
    for group in list(services.group_coordinator.groups.values()):
        for (topic, index), committed in list(group.offsets.items()):
            labels = [group.group_id, topic, str(index)]
            current.append((labels, committed.offset))
            partition = replicas.partition(topic, index)
            if partition is not None:
                lag.append((labels, max(partition.high_watermark - committed.offset, 0)))
    labels = ["consumergroup", "topic", "partition"]
    yield labelled_gauge(
        "kafka_consumergroup_current_offset", "A group's committed offset.", labels, current
    )
    yield labelled_gauge(
        "kafka_consumergroup_lag",
        "High watermark minus the group's committed offset.",
        labels,
        lag,
    )


def runtime_families(
    services: BrokerServices,
    connections: Callable[[], Iterable[KafkaConnection]],
    loop_monitor: Callable[[], LoopLagMonitor | None],
) -> Iterable[Metric]:
    """Connections per listener, purgatory sizes and the event loop's lag."""
    per_listener = Counter(c.listener_name for c in list(connections()))
    yield labelled_gauge(
        "kafka_server_socketservermetrics_connectioncount",
        "Open client connections, per listener.",
        ["listener"],
        [([listener.name], per_listener.get(listener.name, 0))
         for listener in services.advertised_listeners],
    )  # fmt: skip
    yield labelled_gauge(
        "kafka_server_delayedoperationpurgatory_purgatorysize",
        "Requests waiting in a purgatory (Fetch: for data; Produce: acks=all for the ISR).",
        ["delayedOperation"],
        [
            (["Fetch"], len(services.fetch_purgatory)),
            (["Produce"], len(services.replica_manager.produce_purgatory)),
        ],
    )
    sessions = services.fetch_sessions
    prefix = "kafka_server_fetchsessioncache_"
    yield gauge(
        f"{prefix}numincrementalfetchsessions", "Incremental fetch sessions held.", len(sessions)
    )
    yield gauge(
        f"{prefix}numincrementalfetchpartitionscached",
        "Partitions held by all incremental fetch sessions.",
        sessions.total_partitions,
    )
    yield CounterMetricFamily(
        f"{prefix}incrementalfetchsessionevictions",
        "Fetch sessions evicted to make room for new ones.",
        value=sessions.evictions,
    )
    monitor = loop_monitor()
    if monitor is None:
        return
    yield GaugeMetricFamily(
        "pystream_eventloop_lag_max_ms",
        "The longest the broker's event loop was late to wake a timer, in ms.",
        value=monitor.max_lag_ms,
    )
    histogram = HistogramMetricFamily(
        "pystream_eventloop_lag_ms",
        f"How late a {monitor.interval_ms:g} ms timer on the event loop woke, in ms.",
    )
    histogram.add_metric([], cumulative_buckets(monitor.histogram()), sum_value=monitor.lag_sum_ms)
    yield histogram
