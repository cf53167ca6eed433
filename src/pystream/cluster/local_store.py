"""Single-node metadata store: topics and their configs in one local JSON file.

``pystream serve`` without ``zookeeper.connect`` keeps cluster metadata here
and is its own controller.  Every change is written atomically before it is
acknowledged, so a crash leaves either the old or the new metadata.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from pystream.cluster.metadata import PartitionState, TopicMetadata, validate_topic_name
from pystream.errors import (
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    KafkaStorageError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from pystream.fileutil import atomic_write
from pystream.storage.meta_properties import generate_cluster_id

METADATA_FILE = "pystream-metadata.json"
FORMAT_VERSION = 1


class LocalMetadataStore:
    """Topics of a one-broker cluster, persisted in ``<dir>/pystream-metadata.json``."""

    def __init__(self, directory: str | Path, broker_id: int) -> None:
        self.path = Path(directory) / METADATA_FILE
        self.broker_id = broker_id
        self._topics: dict[str, TopicMetadata] = {}
        self.cluster_id = generate_cluster_id()
        if self.path.exists():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._save()

    # -- persistence ---------------------------------------------------------
    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown format version {data.get('version')!r}")
            self.cluster_id = data["cluster_id"]
            self._topics = {t["name"]: TopicMetadata.from_json(t) for t in data["topics"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KafkaStorageError(
                f"cannot read cluster metadata {self.path}: {exc}. Restore it from a backup "
                "or move it away to start with no topics (their logs stay on disk)."
            ) from exc

    def _save(self) -> None:
        data = {
            "version": FORMAT_VERSION,
            "cluster_id": self.cluster_id,
            "topics": [t.to_json() for _, t in sorted(self._topics.items())],
        }
        atomic_write(self.path, json.dumps(data, indent=1).encode())

    # -- queries -------------------------------------------------------------
    def topics(self) -> dict[str, TopicMetadata]:
        """All topics by name (do not mutate)."""
        return self._topics

    def get_topic(self, name: str) -> TopicMetadata | None:
        return self._topics.get(name)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMetadata | None:
        for topic in self._topics.values():
            if topic.topic_id == topic_id:
                return topic
        return None

    def live_brokers(self) -> list[int]:
        return [self.broker_id]

    # -- changes -------------------------------------------------------------
    def check_create_topic(self, name: str, num_partitions: int, replication_factor: int) -> None:
        """Everything create_topic checks, without creating (CreateTopics validate_only)."""
        validate_topic_name(name)
        if name in self._topics:
            raise TopicAlreadyExistsError(f"topic {name!r} already exists")
        if num_partitions < 1:
            raise InvalidPartitionsError(
                f"number of partitions must be at least 1, got {num_partitions}"
            )
        brokers = len(self.live_brokers())
        if replication_factor < 1 or replication_factor > brokers:
            raise InvalidReplicationFactorError(
                f"replication factor {replication_factor} is not possible with {brokers} "
                f"available broker(s); use 1..{brokers}"
            )

    def create_topic(
        self,
        name: str,
        num_partitions: int,
        replication_factor: int = 1,
        configs: dict[str, str] | None = None,
    ) -> TopicMetadata:
        """Create a topic led by this broker; raises a Kafka error on bad input."""
        self.check_create_topic(name, num_partitions, replication_factor)
        topic = TopicMetadata(
            name=name,
            topic_id=uuid.uuid4(),
            partitions={p: self._new_partition() for p in range(num_partitions)},
            configs=dict(configs or {}),
        )
        self._topics[name] = topic
        self._save()
        return topic

    def _new_partition(self) -> PartitionState:
        return PartitionState(
            replicas=[self.broker_id], leader=self.broker_id, isr=[self.broker_id]
        )

    def delete_topic(self, name: str) -> TopicMetadata:
        topic = self._require(name)
        del self._topics[name]
        self._save()
        return topic

    def create_partitions(self, name: str, total: int, *, validate_only: bool = False) -> list[int]:
        """Grow a topic to ``total`` partitions; returns the new partition indexes."""
        topic = self._require(name)
        current = len(topic.partitions)
        if total <= current:
            raise InvalidPartitionsError(
                f"topic {name!r} has {current} partitions; the new count must be larger, "
                f"got {total} (Kafka cannot remove partitions)"
            )
        new = list(range(current, total))
        if not validate_only:
            for partition in new:
                topic.partitions[partition] = self._new_partition()
            self._save()
        return new

    def set_topic_configs(self, name: str, configs: dict[str, str]) -> None:
        """Replace a topic's config overrides (callers validate them first)."""
        topic = self._require(name)
        topic.configs = dict(configs)
        self._save()

    def _require(self, name: str) -> TopicMetadata:
        topic = self._topics.get(name)
        if topic is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        return topic
