"""Topic lifecycle: create, delete, grow, reconfigure — metadata first, then logs.

The single place that keeps the metadata store, the partition logs and the
topic configs in step; the admin API handlers and auto-creation call it.
Every change is validated completely before anything is written, so a
request that fails (or is ``validate_only``) leaves no trace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from pystream.cluster.metadata.model import PartitionState, TopicMetadata
from pystream.cluster.metadata.store import MetadataStore
from pystream.cluster.replication.replica_manager import ReplicaManager
from pystream.config import BrokerConfig, LogConfig
from pystream.errors import (
    InvalidConfigError,
    InvalidRequestError,
    KafkaError,
    LeaderNotAvailableError,
    TopicAlreadyExistsError,
    TopicDeletionDisabledError,
    UnknownTopicOrPartitionError,
)

log = logging.getLogger(__name__)

# CreateTopics' "use the broker default" for the partition count and replication factor.
BROKER_DEFAULT = -1


class TopicManager:
    """Create/delete/alter topics on this broker and in the metadata store."""

    def __init__(
        self,
        config: BrokerConfig,
        metadata: MetadataStore,
        replica_manager: ReplicaManager,
    ) -> None:
        self.config = config
        self.metadata = metadata
        self.replica_manager = replica_manager
        self.log_manager = replica_manager.log_manager
        # Creations under way (held: a shielded task outlives the request that started it).
        self._creations: set[asyncio.Task[TopicMetadata]] = set()

    # --- configs ----------------------------------------------------------------------------
    def log_config_for(self, overrides: dict[str, str]) -> LogConfig:
        """A topic's effective config: its overrides on top of the broker's defaults.

        Raises InvalidConfigError naming an unknown key or a bad value.
        """
        return LogConfig.from_properties(overrides, defaults=self.config.log_config)

    def set_broker_config(self, config: BrokerConfig) -> None:
        """Use new broker-level topic defaults (dynamic broker configs changed): every topic
        follows them at once where it has no override of its own."""
        self.config = config
        configs = {}
        # Most topics share their overrides (none at all, often): parse each set once.
        by_overrides: dict[tuple[tuple[str, str], ...], LogConfig] = {}
        for name, topic in self.metadata.topics().items():
            key = tuple(sorted(topic.configs.items()))
            try:
                if key not in by_overrides:
                    by_overrides[key] = self.log_config_for(topic.configs)
                configs[name] = by_overrides[key]
            except KafkaError as exc:  # e.g. a topic's min.compaction.lag.ms above the new max
                log.error("topic %s keeps its config: %s", name, exc)
        self.log_manager.update_configs(configs, config.log_config)

    def topic_config(self, name: str) -> LogConfig:
        topic = self.metadata.get_topic(name)
        return self.log_config_for(topic.configs if topic else {})

    # --- startup ----------------------------------------------------------------------------
    def host_all(self) -> None:
        """Host every partition the metadata says this broker leads (at startup, before the
        listeners open).  The leader epochs' checkpoints are synced once at the end: an
        fsync per partition made a start with 10,000 partitions take half a minute."""
        for topic in self.metadata.topics().values():
            self._host(topic, durable=False)
        self.log_manager.sync_log_dirs()

    def _host(self, topic: TopicMetadata, *, durable: bool = True) -> None:
        self.log_manager.update_config(topic.name, self.log_config_for(topic.configs))
        for index, state in sorted(topic.partitions.items()):
            self._host_partition(topic.name, index, state, durable=durable)

    def _host_partition(
        self, name: str, index: int, state: PartitionState, *, durable: bool = True
    ) -> None:
        """Lead the partition if the metadata says so, else follow it if a replica is here."""
        broker_id = self.metadata.broker_id
        if state.leader == broker_id:
            self.replica_manager.become_leader(name, index, state, durable=durable)
        elif broker_id in state.replicas:
            self.replica_manager.become_follower(name, index, state)

    async def _host_new(self, topic: TopicMetadata, indexes: list[int]) -> None:
        """Host new partitions of ``topic``: their log files first (in a thread), then the
        roles, on the loop."""
        self.log_manager.update_config(topic.name, self.log_config_for(topic.configs))
        await self.create_missing_logs(topic, indexes)
        for index in indexes:
            self._host_partition(topic.name, index, topic.partitions[index])

    async def create_missing_logs(
        self, topic: TopicMetadata, indexes: Iterable[int] | None = None
    ) -> None:
        """Create, in a thread, the logs of the partitions of ``topic`` (``indexes``, default
        all) that have a replica here and no log yet, and write the leader epoch of those
        led here: a topic of 1,000 partitions (files, a fsynced leader-epoch checkpoint
        each) would otherwise stall every connection.  The roles, taken on the loop next,
        find the logs ready."""
        me = self.metadata.broker_id
        missing = [
            (topic.name, index)
            for index in (sorted(topic.partitions) if indexes is None else indexes)
            if me in topic.partitions[index].replicas
            and self.log_manager.get_log(topic.name, index) is None
        ]
        if missing:
            config = self.log_config_for(topic.configs)
            await asyncio.to_thread(self._create_logs, topic, missing, config)

    def _create_logs(
        self, topic: TopicMetadata, partitions: list[tuple[str, int]], config: LogConfig
    ) -> None:
        # (In a thread.)  The leader-epoch checkpoint is written here, not by the role change,
        # and all of them are synced at once at the end (not an fsync per partition).
        logs = self.log_manager.create_logs(partitions, config)
        me = self.metadata.broker_id
        for (_, index), partition_log in zip(partitions, logs, strict=True):
            state = topic.partitions[index]
            if state.leader == me:
                partition_log.leader_epoch_cache.assign(
                    state.leader_epoch, partition_log.log_end_offset, durable=False
                )
        self.log_manager.sync_log_dirs()

    # --- changes ----------------------------------------------------------------------------
    async def create_topic(
        self,
        name: str,
        num_partitions: int = BROKER_DEFAULT,
        replication_factor: int = BROKER_DEFAULT,
        configs: dict[str, str] | None = None,
        assignments: dict[int, list[int]] | None = None,
        *,
        validate_only: bool = False,
    ) -> TopicMetadata:
        """CreateTopics for one topic; -1 means the broker default (KIP-464).

        ``assignments`` (partition -> replica broker ids) is the manual alternative to
        the counts, which must then both be -1.  Returns the created topic, or with
        ``validate_only`` the topic that would be created (its id all zeros).
        Raises TopicAlreadyExists / InvalidTopic / InvalidPartitions /
        InvalidReplicationFactor / InvalidReplicaAssignment / InvalidConfig /
        InvalidRequest errors; nothing is created then.
        """
        if assignments and (
            num_partitions != BROKER_DEFAULT or replication_factor != BROKER_DEFAULT
        ):
            raise InvalidRequestError(
                "A manual partition assignment was given together with numPartitions or "
                "replicationFactor; give one or the other (set both counts to -1)"
            )
        if num_partitions == BROKER_DEFAULT:
            num_partitions = self.config.num_partitions
        if replication_factor == BROKER_DEFAULT:
            replication_factor = self.config.default_replication_factor
        configs = dict(configs or {})
        null = sorted(key for key, value in configs.items() if value is None)
        if null:
            raise InvalidConfigError(f"Null value not supported for topic configs: {null}")
        topic = self.metadata.plan_topic(
            name, num_partitions, replication_factor, configs, assignments
        )
        self.log_config_for(configs)  # validate before anything is written
        if validate_only:
            return topic
        # The metadata write and the logs are one piece of work that the request cannot cut
        # in two: a client that hangs up mid-request (librdkafka drops its bootstrap
        # connection, a Metadata in flight, once it learns the broker ids) cancels the
        # request, and a topic written but never hosted would answer every Produce with
        # UNKNOWN_TOPIC_OR_PARTITION for good.
        creation = asyncio.ensure_future(
            self._create_and_host(name, num_partitions, replication_factor, configs, assignments)
        )
        self._creations.add(creation)
        creation.add_done_callback(self._creation_done)
        return await asyncio.shield(creation)

    def _creation_done(self, creation: asyncio.Task[TopicMetadata]) -> None:
        self._creations.discard(creation)
        if not creation.cancelled():
            creation.exception()  # retrieved: its requester (if still there) raises it

    async def _create_and_host(
        self,
        name: str,
        num_partitions: int,
        replication_factor: int,
        configs: dict[str, str],
        assignments: dict[int, list[int]] | None,
    ) -> TopicMetadata:
        topic = await self.metadata.create_topic(
            name, num_partitions, replication_factor, configs, assignments
        )
        await self._host_new(topic, sorted(topic.partitions))
        log.info("created topic %s with %d partition(s)", name, len(topic.partitions))
        return topic

    async def maybe_auto_create(self, name: str) -> TopicMetadata | None:
        """Auto-create ``name`` with the broker defaults if allowed (Metadata requests)."""
        if not self.config.auto_create_topics_enable:
            return None
        try:
            return await self.create_topic(name)
        except TopicAlreadyExistsError:
            # Another request is creating it right now: as Kafka, the client retries.
            topic = self.metadata.get_topic(name)
            if topic is None:
                raise LeaderNotAvailableError(f"topic {name!r} is being created") from None
            return topic

    def check_deletion_enabled(self) -> None:
        """TOPIC_DELETION_DISABLED unless ``delete.topic.enable`` is true."""
        if not self.config.delete_topic_enable:
            raise TopicDeletionDisabledError(
                "Topic deletion is disabled on this broker (delete.topic.enable=false)"
            )

    async def delete_topic(self, name: str) -> TopicMetadata:
        """Remove the topic from the metadata, stop its partitions and delete their files.

        The partition directories are renamed ``*-delete`` at once and removed after
        ``file.delete.delay.ms`` (in-flight fetches may still read them).
        """
        self.check_deletion_enabled()
        topic = await self.metadata.delete_topic(name)
        if self.config.zookeeper_connect:
            # Cluster mode: the controller deletes the topic; every broker (this one too)
            # removes its replicas when it sees the topic vanish (ClusterMode).
            return topic
        for index in topic.partitions:
            self.replica_manager.stop_replica(name, index, delete=True)
        log.info("deleted topic %s", name)
        return topic

    async def create_partitions(
        self,
        name: str,
        total: int,
        assignments: list[list[int]] | None = None,
        *,
        validate_only: bool = False,
    ) -> list[int]:
        """Grow ``name`` to ``total`` partitions; returns the new partition indexes.

        ``assignments`` gives the replica broker ids of each new partition, in order.
        """
        new = await self.metadata.create_partitions(
            name, total, assignments, validate_only=validate_only
        )
        if validate_only:
            return new
        topic = self.metadata.get_topic(name)
        if topic is None:  # deleted meanwhile
            raise UnknownTopicOrPartitionError(f"Topic '{name}' does not exist")
        await self._host_new(topic, new)
        log.info("topic %s now has %d partition(s)", name, total)
        return new

    async def set_topic_configs(
        self, name: str, overrides: dict[str, str | None], *, validate_only: bool = False
    ) -> LogConfig:
        """Replace a topic's config overrides (AlterConfigs semantics); returns the new config.

        A null value means "no override", as in Kafka's AlterConfigs.  The new
        config is persisted, then applied to the live logs (retention, segment
        rolling ... follow it from now on).
        """
        if self.metadata.get_topic(name) is None:
            raise UnknownTopicOrPartitionError(f"Topic '{name}' does not exist")
        kept = {key: value for key, value in overrides.items() if value is not None}
        config = self.log_config_for(kept)
        if validate_only:
            return config
        await self.metadata.set_topic_configs(name, kept)
        self.log_manager.update_config(name, config)
        log.info("topic %s config overrides are now %s", name, kept)
        return config
