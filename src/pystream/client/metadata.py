"""The client's picture of the cluster: brokers, topics, partition leaders.

Filled from Metadata responses by :class:`~pystream.client.core.ClientCore`;
read everywhere (partitioner, sender, fetcher, admin).  Updates replace the
entries of the topics a response covers, so a lookup never sees half an
update.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pystream.protocol.messages.metadata import MetadataResponse

from .types import PartitionInfo, TopicPartition

__all__ = ["BrokerInfo", "ClusterMetadata", "TopicInfo"]

# Errors that mean "the topic does not exist (yet)" rather than a transient state.
UNKNOWN_TOPIC_OR_PARTITION = 3
LEADER_NOT_AVAILABLE = 5
INVALID_TOPIC = 17


@dataclass(slots=True, frozen=True)
class BrokerInfo:
    node_id: int
    host: str
    port: int
    rack: str | None = None


@dataclass(slots=True)
class TopicInfo:
    """One topic's partitions; ``available`` lists those with a live leader."""

    name: str
    topic_id: str
    is_internal: bool
    partitions: dict[int, PartitionInfo]
    available: list[int] = field(default_factory=list)

    @property
    def num_partitions(self) -> int:
        return len(self.partitions)


class ClusterMetadata:
    """Brokers and topics as last reported; ``version`` increases with every update."""

    def __init__(self) -> None:
        self.brokers: dict[int, BrokerInfo] = {}
        self.topics: dict[str, TopicInfo] = {}
        self.topic_errors: dict[str, int] = {}
        self.controller_id = -1
        self.cluster_id: str | None = None
        self.version = 0
        self.updated_at = 0.0  # time.monotonic() of the last successful update

    def update(self, response: MetadataResponse, all_topics: bool) -> None:
        """Apply a response; with ``all_topics`` topics it does not list are forgotten."""
        brokers = {
            b.node_id: BrokerInfo(b.node_id, b.host, b.port, b.rack) for b in response.brokers
        }
        if brokers:
            self.brokers = brokers
        self.controller_id = response.controller_id
        self.cluster_id = response.cluster_id
        seen: set[str] = set()
        for topic in response.topics:
            name = topic.name
            if name is None:
                continue
            seen.add(name)
            if topic.error_code and not topic.partitions:
                self.topic_errors[name] = topic.error_code
                if topic.error_code != LEADER_NOT_AVAILABLE:
                    self.topics.pop(name, None)
                continue
            self.topic_errors.pop(name, None)
            partitions = {
                p.partition_index: PartitionInfo(
                    partition=p.partition_index,
                    leader=p.leader_id if p.error_code != LEADER_NOT_AVAILABLE else -1,
                    leader_epoch=p.leader_epoch,
                    replicas=list(p.replica_nodes),
                    isr=list(p.isr_nodes),
                    offline_replicas=list(p.offline_replicas),
                )
                for p in topic.partitions
            }
            self.topics[name] = TopicInfo(
                name=name,
                topic_id=str(topic.topic_id),
                is_internal=topic.is_internal,
                partitions=partitions,
                available=sorted(i for i, p in partitions.items() if p.leader >= 0),
            )
        if all_topics:
            for name in list(self.topics):
                if name not in seen:
                    del self.topics[name]
        self.version += 1
        self.updated_at = time.monotonic()

    def leader_for(self, tp: TopicPartition | tuple[str, int]) -> int:
        """Node id of the partition's leader, or -1 if unknown / none."""
        topic = self.topics.get(tp[0])
        if topic is None:
            return -1
        info = topic.partitions.get(tp[1])
        return -1 if info is None else info.leader

    def leader_epoch(self, tp: TopicPartition | tuple[str, int]) -> int:
        topic = self.topics.get(tp[0])
        info = None if topic is None else topic.partitions.get(tp[1])
        return -1 if info is None else info.leader_epoch

    def partitions_for(self, topic: str) -> list[int] | None:
        """Partition ids of ``topic`` (sorted), None if the topic is unknown."""
        info = self.topics.get(topic)
        return None if info is None else sorted(info.partitions)

    def broker(self, node_id: int) -> BrokerInfo | None:
        return self.brokers.get(node_id)
