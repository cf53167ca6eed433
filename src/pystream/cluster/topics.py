"""Topic lifecycle: create, delete, grow, reconfigure — metadata first, then logs.

The single place that keeps the metadata store, the partition logs and the
topic configs in step; the admin API handlers and auto-creation call it.
"""

from __future__ import annotations

import logging

from pystream.cluster.local_store import LocalMetadataStore
from pystream.cluster.metadata import TopicMetadata
from pystream.cluster.replica_manager import ReplicaManager
from pystream.config import BrokerConfig, LogConfig
from pystream.errors import (
    InvalidRequestError,
    TopicDeletionDisabledError,
    UnknownTopicOrPartitionError,
)

log = logging.getLogger(__name__)


class TopicManager:
    """Create/delete/alter topics on this broker and in the metadata store."""

    def __init__(
        self,
        config: BrokerConfig,
        metadata: LocalMetadataStore,
        replica_manager: ReplicaManager,
    ) -> None:
        self.config = config
        self.metadata = metadata
        self.replica_manager = replica_manager
        self.log_manager = replica_manager.log_manager

    # --- configs ----------------------------------------------------------------------------
    def log_config_for(self, overrides: dict[str, str]) -> LogConfig:
        """A topic's effective config: its overrides on top of the broker's defaults.

        Raises InvalidConfigError naming an unknown key or a bad value.
        """
        return LogConfig.from_properties(overrides, defaults=self.config.log_config)

    def topic_config(self, name: str) -> LogConfig:
        topic = self.metadata.get_topic(name)
        return self.log_config_for(topic.configs if topic else {})

    # --- startup ----------------------------------------------------------------------------
    def host_all(self) -> None:
        """Host every partition the metadata says this broker leads (at startup)."""
        for topic in self.metadata.topics().values():
            self._host(topic)

    def _host(self, topic: TopicMetadata) -> None:
        self.log_manager.update_config(topic.name, self.log_config_for(topic.configs))
        for index, state in sorted(topic.partitions.items()):
            if state.leader == self.metadata.broker_id:
                self.replica_manager.become_leader(topic.name, index, state)

    # --- changes ----------------------------------------------------------------------------
    def create_topic(
        self,
        name: str,
        num_partitions: int = -1,
        replication_factor: int = -1,
        configs: dict[str, str] | None = None,
        *,
        validate_only: bool = False,
    ) -> TopicMetadata | None:
        """CreateTopics for one topic; -1 means the broker default.  Returns None if validate_only.

        Raises TopicAlreadyExists / InvalidTopic / InvalidPartitions /
        InvalidReplicationFactor / InvalidConfig errors; nothing is created then.
        """
        if num_partitions == -1:
            num_partitions = self.config.num_partitions
        if replication_factor == -1:
            replication_factor = self.config.default_replication_factor
        configs = dict(configs or {})
        self.metadata.check_create_topic(name, num_partitions, replication_factor)
        self.log_config_for(configs)  # validate before anything is written
        if validate_only:
            return None
        topic = self.metadata.create_topic(name, num_partitions, replication_factor, configs)
        self._host(topic)
        log.info("created topic %s with %d partition(s)", name, num_partitions)
        return topic

    def maybe_auto_create(self, name: str) -> TopicMetadata | None:
        """Auto-create ``name`` with the broker defaults if allowed (Metadata requests)."""
        if not self.config.auto_create_topics_enable:
            return None
        return self.create_topic(name)

    def delete_topic(self, name: str) -> None:
        if not self.config.delete_topic_enable:
            raise TopicDeletionDisabledError(
                "topic deletion is disabled on this broker (delete.topic.enable=false)"
            )
        topic = self.metadata.delete_topic(name)
        for index in topic.partitions:
            self.replica_manager.stop_replica(name, index, delete=True)
        log.info("deleted topic %s", name)

    def create_partitions(self, name: str, total: int, *, validate_only: bool = False) -> None:
        new = self.metadata.create_partitions(name, total, validate_only=validate_only)
        if validate_only:
            return
        topic = self.metadata.get_topic(name)
        assert topic is not None
        for index in new:
            self.replica_manager.become_leader(name, index, topic.partitions[index])

    def set_topic_configs(
        self, name: str, overrides: dict[str, str], *, validate_only: bool = False
    ) -> None:
        """Replace a topic's config overrides (AlterConfigs semantics)."""
        if self.metadata.get_topic(name) is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        if any(value is None for value in overrides.values()):
            raise InvalidRequestError("config values must not be null; omit the key to reset it")
        config = self.log_config_for(overrides)
        if validate_only:
            return
        self.metadata.set_topic_configs(name, overrides)
        self.log_manager.update_config(name, config)
