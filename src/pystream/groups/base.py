"""The group coordinator's shared state: its groups, and how it writes to ``__consumer_offsets``.

:class:`GroupCoordinatorBase` adds the groups to the partition ownership every
coordinator has (:class:`~pystream.coordinator.base.CoordinatorBase`): it
answers "may I serve this group now?" (:meth:`~GroupCoordinatorBase.coordinator_error`)
and appends records to a group's partition.  The rebalance protocol
(:mod:`pystream.groups.membership`), the committed offsets
(:mod:`pystream.groups.committed_offsets`) and the coordinator itself
(:mod:`pystream.groups.coordinator`) build on it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from pystream.clock import now_ms
from pystream.coordinator.base import NONE, CoordinatorBase, E
from pystream.errors import KafkaError
from pystream.groups.group import ClassicGroup, Member
from pystream.groups.offsets_log import (
    OFFSETS_TOPIC,
    build_records,
    group_metadata_key,
    group_metadata_value,
    partition_for,
)
from pystream.purgatory import Purgatory
from pystream.storage.log import AppendOrigin

if TYPE_CHECKING:
    from pystream.cluster.metadata.store import MetadataStore
    from pystream.cluster.replication.replica_manager import ReplicaManager
    from pystream.cluster.topics import TopicManager
    from pystream.config import BrokerConfig

log = logging.getLogger("pystream.groups.coordinator")

# Kafka's offsets.commit.timeout.ms: how long a commit waits for the ISR.
OFFSETS_COMMIT_TIMEOUT_MS = 5000


def store_group_error(code: int) -> int:
    """Kafka's mapping of a failed group-metadata append to what the client is told."""
    if code in (
        E.UNKNOWN_TOPIC_OR_PARTITION,
        E.NOT_ENOUGH_REPLICAS,
        E.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    ):
        return E.COORDINATOR_NOT_AVAILABLE
    if code in (E.NOT_LEADER_OR_FOLLOWER, E.KAFKA_STORAGE_ERROR):
        return E.NOT_COORDINATOR
    if code == E.REQUEST_TIMED_OUT:
        return E.REBALANCE_IN_PROGRESS
    if code in (E.MESSAGE_TOO_LARGE, E.RECORD_LIST_TOO_LARGE, E.INVALID_FETCH_SIZE):
        return E.UNKNOWN_SERVER_ERROR
    return code


def store_offsets_error(code: int) -> int:
    """Kafka's mapping of a failed offset-commit append to what the client is told."""
    if code in (
        E.UNKNOWN_TOPIC_OR_PARTITION,
        E.NOT_ENOUGH_REPLICAS,
        E.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        E.REQUEST_TIMED_OUT,
    ):
        return E.COORDINATOR_NOT_AVAILABLE
    if code in (E.NOT_LEADER_OR_FOLLOWER, E.KAFKA_STORAGE_ERROR):
        return E.NOT_COORDINATOR
    if code in (E.MESSAGE_TOO_LARGE, E.RECORD_LIST_TOO_LARGE, E.INVALID_FETCH_SIZE):
        return E.INVALID_COMMIT_OFFSET_SIZE
    return code


class GroupCoordinatorBase(CoordinatorBase):
    """The group coordinator's state and the helpers every group API uses."""

    topic = OFFSETS_TOPIC

    def __init__(
        self,
        config: BrokerConfig,
        *,
        broker_id: int,
        metadata: MetadataStore,
        replicas: ReplicaManager,
        topics: TopicManager,
    ) -> None:
        super().__init__(
            config, broker_id=broker_id, metadata=metadata, replicas=replicas, topics=topics
        )
        self.groups: dict[str, ClassicGroup] = {}
        self.purgatory = Purgatory("rebalance")
        self._cleanup_timer: asyncio.TimerHandle | None = None
        # partition -> (records replayed, groups, seconds): what the last load did.
        self.load_stats: dict[int, tuple[int, int, float]] = {}

    def topic_spec(self) -> tuple[int, int, dict[str, str]]:
        """``__consumer_offsets`` is compacted: the newest record per key is the state."""
        config = self.config
        return (
            config.offsets_topic_num_partitions,
            config.offsets_topic_replication_factor,
            {
                "cleanup.policy": "compact",
                "segment.bytes": str(config.offsets_topic_segment_bytes),
                "compression.type": "producer",
            },
        )

    def partition_for(self, group_id: str) -> int:
        return partition_for(group_id, self.num_partitions)

    def coordinator_error(self, group_id: str | None, *, allow_empty: bool = False) -> int:
        """Whether this broker can serve ``group_id`` now (0) or the error to answer with.

        OffsetCommit/OffsetFetch/DescribeGroups/DeleteGroups accept the empty group
        id (Kafka keeps that for backwards compatibility); the other APIs do not.
        """
        if group_id is None or (group_id == "" and not allow_empty):
            return E.INVALID_GROUP_ID
        if not self._active:
            return E.COORDINATOR_NOT_AVAILABLE
        return self.partition_error(self.partition_for(group_id))

    # --- writes to __consumer_offsets -------------------------------------------------------
    def _append(
        self,
        group_id: str,
        records: list[tuple[bytes, bytes | None]],
        *,
        producer_id: int = -1,
        producer_epoch: int = -1,
        transactional: bool = False,
    ) -> int:
        """Append records to the group's partition; the Kafka error code (0: written)."""
        partition = self.partition_for(group_id)
        batch = build_records(
            records,
            now_ms(),
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            transactional=transactional,
        )
        try:
            self.replicas.append(OFFSETS_TOPIC, partition, batch, origin=AppendOrigin.COORDINATOR)
        except KafkaError as exc:
            log.warning("appending to %s-%d failed: %s", OFFSETS_TOPIC, partition, exc)
            return exc.error_code
        self._note_appended(partition)
        return NONE

    async def wait_replicated(self, group_id: str) -> int:
        """Until what was appended to the group's partition is on every ISR member (Kafka's
        coordinator appends with acks=all); an error code as the client is told it."""
        code = await self._replicated(self.partition_for(group_id), OFFSETS_COMMIT_TIMEOUT_MS)
        return store_offsets_error(code) if code else NONE

    def _store_group(self, group: ClassicGroup, assignments: dict[str, bytes] | None) -> int:
        value = group.to_metadata_value(assignments)
        code = self._append(
            group.group_id, [(group_metadata_key(group.group_id), group_metadata_value(value))]
        )
        return store_group_error(code) if code else NONE

    def _schedule_heartbeat(
        self, group: ClassicGroup, member: Member, timeout_ms: int | None = None
    ) -> None:
        """Expect the member's next heartbeat within its session timeout (membership)."""
        raise NotImplementedError
