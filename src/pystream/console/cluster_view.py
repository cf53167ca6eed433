"""What the overview and topic pages show, read with the admin client: brokers, topics,
partitions and configs; and the topic changes the forms make."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pystream.aio import AdminClient, NewTopic, TopicPartition
from pystream.client.types import ConfigEntry, TopicDescription

from .forms import parse_count, parse_pairs
from .live_metrics import LiveMetrics

__all__ = [
    "BrokerRow",
    "Overview",
    "PartitionRow",
    "TopicDetail",
    "TopicRow",
    "create_topic",
    "overview",
    "topic_detail",
    "topic_rows",
]


@dataclass
class BrokerRow:
    node_id: int
    address: str
    rack: str | None
    is_controller: bool
    partitions_led: int
    under_replicated: int


@dataclass
class Overview:
    cluster_id: str | None
    controller_id: int
    brokers: list[BrokerRow]
    topics: int
    partitions: int
    under_replicated: int
    offline: int


@dataclass
class TopicRow:
    name: str
    internal: bool
    partitions: int
    replication_factor: int
    under_replicated: int
    size_bytes: int | None  # None: no broker's metrics were scraped
    messages_in_per_s: float | None
    bytes_in_per_s: float | None
    bytes_out_per_s: float | None


@dataclass
class PartitionRow:
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    offline: list[int]
    earliest: int | None
    latest: int | None
    size_bytes: int | None

    @property
    def messages(self) -> int | None:
        if self.earliest is None or self.latest is None:
            return None
        return self.latest - self.earliest


@dataclass
class TopicDetail:
    name: str
    topic_id: str
    internal: bool
    partitions: list[PartitionRow]
    # Every config: those set on the topic first, then the defaults in force.
    configs: list[ConfigEntry] = field(default_factory=list)


def _under_replicated(description: TopicDescription) -> int:
    return sum(1 for p in description.partitions if len(p.isr) < len(p.replicas))


async def overview(admin: AdminClient) -> Overview:
    """The cluster's brokers with what each leads (from metadata: no broker is asked for
    more than the admin client's Metadata request)."""
    cluster = await admin.describe_cluster()
    topics = await admin.describe_topics(None)
    partitions = [p for t in topics.values() for p in t.partitions]
    rows = [
        BrokerRow(
            node_id=b.node_id,
            address=f"{b.host}:{b.port}",
            rack=b.rack,
            is_controller=b.node_id == cluster["controller_id"],
            partitions_led=sum(1 for p in partitions if p.leader == b.node_id),
            under_replicated=sum(
                1 for p in partitions if p.leader == b.node_id and len(p.isr) < len(p.replicas)
            ),
        )
        for b in cluster["brokers"]
    ]
    return Overview(
        cluster_id=cluster["cluster_id"],
        controller_id=cluster["controller_id"],
        brokers=rows,
        topics=len(topics),
        partitions=len(partitions),
        under_replicated=sum(_under_replicated(t) for t in topics.values()),
        offline=sum(1 for p in partitions if p.leader < 0),
    )


async def topic_rows(admin: AdminClient, metrics: LiveMetrics) -> list[TopicRow]:
    """Every topic (internal ones last) with its size and rates from the latest scrape."""
    topics = await admin.describe_topics(None)
    rates = metrics.topic_rates()
    sizes = metrics.partition_sizes()
    rows = []
    for name, t in topics.items():
        rate = rates.get(name)
        size = [sizes.get(TopicPartition(name, p.partition)) for p in t.partitions]
        rows.append(
            TopicRow(
                name=name,
                internal=t.is_internal,
                partitions=len(t.partitions),
                replication_factor=max((len(p.replicas) for p in t.partitions), default=0),
                under_replicated=_under_replicated(t),
                size_bytes=None if not sizes else sum(s or 0 for s in size),
                messages_in_per_s=None if rate is None else rate.messages_in,
                bytes_in_per_s=None if rate is None else rate.bytes_in,
                bytes_out_per_s=None if rate is None else rate.bytes_out,
            )
        )
    return sorted(rows, key=lambda r: (r.internal, r.name))


async def topic_detail(admin: AdminClient, metrics: LiveMetrics, name: str) -> TopicDetail:
    """One topic's partitions (leader, replicas, ISR, log start/end offsets) and configs;
    raises UnknownTopicOrPartitionError for a topic that does not exist."""
    description = (await admin.describe_topics([name]))[name]
    tps = [TopicPartition(name, p.partition) for p in description.partitions]
    # A partition without a leader has no offsets to list.
    led = [tp for tp, p in zip(tps, description.partitions, strict=True) if p.leader >= 0]
    earliest, latest, configs = await asyncio.gather(
        admin.list_offsets(dict.fromkeys(led, "earliest")),
        admin.list_offsets(dict.fromkeys(led, "latest")),
        admin.describe_configs([("topic", name)]),
    )
    sizes = metrics.partition_sizes()
    return TopicDetail(
        name=name,
        topic_id=description.topic_id,
        internal=description.is_internal,
        partitions=[
            PartitionRow(
                partition=p.partition,
                leader=p.leader,
                replicas=p.replicas,
                isr=p.isr,
                offline=p.offline_replicas,
                earliest=earliest.get(tp),
                latest=latest.get(tp),
                size_bytes=sizes.get(tp),
            )
            for tp, p in zip(tps, description.partitions, strict=True)
        ],
        configs=sorted(configs[(2, name)].values(), key=lambda c: (c.is_default, c.name)),
    )


async def create_topic(
    admin: AdminClient, name: str, partitions: Any, replication: Any, configs: str
) -> NewTopic:
    topic = NewTopic(
        name.strip(),
        num_partitions=parse_count(partitions, "partitions"),
        replication_factor=parse_count(replication, "replication factor"),
        config=dict(parse_pairs(configs, "config")),
    )
    await admin.create_topics(topic)
    return topic
