"""Value types the client API hands out and takes in (Kafka's vocabulary)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from ._fast import ConsumerRecord

__all__ = [
    "BatchMetadata",
    "ConfigEntry",
    "ConsumerGroupLag",
    "ConsumerGroupMetadata",
    "ConsumerRecord",
    "GroupDescription",
    "GroupListing",
    "MemberDescription",
    "NewPartitions",
    "NewTopic",
    "OffsetAndMetadata",
    "PartitionInfo",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
]


class TopicPartition(NamedTuple):
    """A partition of a topic; plain ``(topic, partition)`` tuples work wherever one is taken."""

    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    """Where the broker stored a record sent with :meth:`Producer.send`.

    ``offset`` is -1 with ``acks=0`` (the broker does not answer).
    ``timestamp`` is the broker's LogAppendTime when the topic uses it, else
    the record's CreateTime.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int


class BatchMetadata(NamedTuple):
    """One batch written by :meth:`Producer.send_batch`: records ``base_offset ..
    base_offset + record_count - 1`` of ``topic``-``partition``, in input order."""

    topic: str
    partition: int
    base_offset: int
    record_count: int
    timestamp: int


class OffsetAndMetadata(NamedTuple):
    """A committed offset: the next record to consume, with optional metadata."""

    offset: int
    metadata: str = ""
    leader_epoch: int = -1


@dataclass(frozen=True)
class ConsumerGroupMetadata:
    """What ``Producer.send_offsets_to_transaction`` needs of a consumer's group
    (``Consumer.group_metadata()``): with the generation and member id the group
    coordinator fences offsets committed by a zombie member (KIP-447)."""

    group_id: str
    generation_id: int = -1
    member_id: str = ""
    group_instance_id: str | None = None


@dataclass(slots=True)
class NewTopic:
    """A topic to create.  ``replication_factor`` -1 means the broker default;
    ``replica_assignment`` maps partition -> broker ids (then leave
    ``num_partitions`` and ``replication_factor`` at -1)."""

    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    config: dict[str, str] = field(default_factory=dict)
    replica_assignment: dict[int, list[int]] | None = None


@dataclass(slots=True)
class NewPartitions:
    """Grow ``topic`` to ``total_count`` partitions."""

    topic: str
    total_count: int
    assignments: list[list[int]] | None = None


@dataclass(slots=True)
class PartitionInfo:
    """One partition as metadata describes it."""

    partition: int
    leader: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    offline_replicas: list[int] = field(default_factory=list)


@dataclass(slots=True)
class TopicDescription:
    name: str
    topic_id: str
    is_internal: bool
    partitions: list[PartitionInfo]


@dataclass(slots=True)
class ConfigEntry:
    """One configuration value as DescribeConfigs reports it."""

    name: str
    value: str | None
    read_only: bool = False
    is_default: bool = False
    is_sensitive: bool = False
    source: int = -1


@dataclass(slots=True)
class GroupListing:
    group_id: str
    protocol_type: str
    state: str = ""


@dataclass(slots=True)
class MemberDescription:
    member_id: str
    client_id: str
    client_host: str
    group_instance_id: str | None
    assignment: list[TopicPartition]


@dataclass(slots=True)
class GroupDescription:
    group_id: str
    state: str
    protocol_type: str
    protocol: str
    members: list[MemberDescription]
    coordinator: int = -1


@dataclass(slots=True)
class ConsumerGroupLag:
    """One partition a group committed an offset for or has assigned: the committed offset
    (None: nothing committed), the log end offset (None: the topic is gone), their
    difference (None if either is unknown) and the member that owns it (None: unowned)."""

    partition: TopicPartition
    committed: int | None
    end: int | None
    lag: int | None
    member: MemberDescription | None
