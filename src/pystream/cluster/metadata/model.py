"""What the cluster knows about topics: ids, partitions, replicas, leaders, configs.

:class:`TopicMetadata` and :class:`PartitionState` are plain values shared by
every metadata store.  A single node keeps them in a local file
(:mod:`pystream.cluster.metadata.local_store`); a cluster keeps them in ZooKeeper.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from pystream.errors import FencedLeaderEpochError, UnknownLeaderEpochError
from pystream.storage.log_manager import validate_topic_name

__all__ = [
    "DEFAULT_BROKER_ENTITY",
    "MAX_PRODUCER_ID",
    "ProducerIdBlock",
    "INTERNAL_TOPICS",
    "OFFSETS_TOPIC",
    "TRANSACTION_STATE_TOPIC",
    "PartitionState",
    "TopicMetadata",
    "collision_name",
    "validate_topic_name",
]

# The internal topics, named once here for every package that needs them.
OFFSETS_TOPIC = "__consumer_offsets"
TRANSACTION_STATE_TOPIC = "__transaction_state"
INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC})
MAX_PRODUCER_ID = 2**63 - 1
# The entity of the cluster-wide dynamic broker configs (a BROKER resource named ""): Kafka's
# ZooKeeper name for it (/config/brokers/<default>).  A broker's own entity is its id.
DEFAULT_BROKER_ENTITY = "<default>"


def collision_name(name: str) -> str:
    """The name ``name`` collides with: Kafka's metric names turn '.' into '_', so topics
    that differ only there (``a.b`` / ``a_b``) cannot both exist."""
    return name.replace(".", "_")


@dataclass
class PartitionState:
    """Replicas of one partition and who leads them."""

    replicas: list[int]
    leader: int
    leader_epoch: int = 0
    isr: list[int] = field(default_factory=list)
    partition_epoch: int = 0

    def check_leader_epoch(self, current_leader_epoch: int, partition: str) -> None:
        """KIP-320 fencing: a client's ``current_leader_epoch`` (-1: unknown, not checked) must
        be the leader's; older is FENCED_LEADER_EPOCH, newer UNKNOWN_LEADER_EPOCH."""
        epoch = self.leader_epoch
        if current_leader_epoch < 0 or current_leader_epoch == epoch:
            return
        error = FencedLeaderEpochError if current_leader_epoch < epoch else UnknownLeaderEpochError
        raise error(
            f"{partition}: leader epoch {current_leader_epoch} given, the leader is at {epoch}; "
            "refresh metadata"
        )

    def to_json(self) -> dict:
        return {
            "replicas": self.replicas,
            "leader": self.leader,
            "leader_epoch": self.leader_epoch,
            "isr": self.isr,
            "partition_epoch": self.partition_epoch,
        }

    @classmethod
    def from_json(cls, data: dict) -> PartitionState:
        return cls(
            replicas=list(data["replicas"]),
            leader=int(data["leader"]),
            leader_epoch=int(data.get("leader_epoch", 0)),
            isr=list(data.get("isr", data["replicas"])),
            partition_epoch=int(data.get("partition_epoch", 0)),
        )


@dataclass
class TopicMetadata:
    """A topic: its id, partitions (by index) and config overrides."""

    name: str
    topic_id: uuid.UUID
    partitions: dict[int, PartitionState]
    configs: dict[str, str] = field(default_factory=dict)

    @property
    def is_internal(self) -> bool:
        return self.name in INTERNAL_TOPICS

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "topic_id": str(self.topic_id),
            "partitions": {str(p): s.to_json() for p, s in sorted(self.partitions.items())},
            "configs": dict(sorted(self.configs.items())),
        }

    @classmethod
    def from_json(cls, data: dict) -> TopicMetadata:
        return cls(
            name=data["name"],
            topic_id=uuid.UUID(data["topic_id"]),
            partitions={int(p): PartitionState.from_json(s) for p, s in data["partitions"].items()},
            configs=dict(data.get("configs", {})),
        )


@dataclass(frozen=True, slots=True)
class ProducerIdBlock:
    """Ids ``first .. first + size - 1``, reserved for one broker."""

    broker_id: int
    first: int
    size: int

    @property
    def last(self) -> int:
        return self.first + self.size - 1
