"""The group coordinator: consumer groups and their offsets in ``__consumer_offsets``.

One :class:`GroupCoordinator` per broker owns the groups whose
``__consumer_offsets`` partition (``abs(hashCode(group)) % partitions``) this
broker leads — on one node, all of them.  It is built from three parts, split
by responsibility and composed (each gets what it uses through its
constructor):

* :class:`~pystream.groups.persistence.GroupPersistence` — the log: appends
  to a group's partition, waits for the ISR, maps append errors to Kafka's
  answers, replays a partition into groups;
* :class:`~pystream.groups.membership.Membership` — the rebalance protocol:
  JoinGroup, SyncGroup, Heartbeat, LeaveGroup, session timers, the rebalance
  purgatory;
* :class:`~pystream.groups.committed_offsets.CommittedOffsets` — the offsets
  store: OffsetCommit/Fetch/Delete, transactional offsets, expiry.

They share one registry, ``groups`` (group id -> :class:`ClassicGroup`): a
group is its members and its offsets at once (a commit is checked against the
generation).  The coordinator itself keeps what is neither:

* **ownership** (:class:`~pystream.coordinator.base.CoordinatorBase`, shared
  with the transaction coordinator): the partitions it leads are replayed from
  the log before their groups are served — COORDINATOR_LOAD_IN_PROGRESS until
  then, NOT_COORDINATOR for groups of partitions led elsewhere.
  ``on_elected`` / ``on_resigned`` are what a leadership change calls;
* **admin**: DescribeGroups, ListGroups, DeleteGroups;
* **the cleanup timer**: every ``offsets.retention.check.interval.ms`` the
  offsets store expires offsets past ``offsets.retention.minutes`` and empty
  groups without offsets are removed.

The request handlers call :attr:`GroupCoordinator.membership` and
:attr:`GroupCoordinator.offsets` directly; the coordinator's own methods are
ownership, admin, and the :class:`~pystream.txn.group_hooks.TxnOffsetStore`
the transaction coordinator is handed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pystream.coordinator.base import NONE, CoordinatorBase, E
from pystream.groups.committed_offsets import CommittedOffsets
from pystream.groups.group import ClassicGroup, GroupState
from pystream.groups.membership import Membership
from pystream.groups.offsets_log import (
    OFFSETS_TOPIC,
    group_metadata_key,
    offset_commit_key,
    partition_for,
)
from pystream.groups.persistence import GroupPersistence, store_group_error

if TYPE_CHECKING:
    import asyncio

    from pystream.cluster.metadata.store import MetadataStore
    from pystream.cluster.replication.replica_manager import ReplicaManager
    from pystream.cluster.topics import TopicManager
    from pystream.config import BrokerConfig

log = logging.getLogger(__name__)


class GroupCoordinator(CoordinatorBase):
    """Consumer groups of the ``__consumer_offsets`` partitions this broker leads.

    Owns the group registry's lifecycle (groups come in when their partition is
    loaded, leave when it is led elsewhere, deleted or expired), the partition
    ownership, admin and the cleanup timer; the protocols are its parts'.
    """

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
        self._cleanup_timer: asyncio.TimerHandle | None = None
        # partition -> (records replayed, groups, seconds): what the last load did.
        self.load_stats: dict[int, tuple[int, int, float]] = {}
        self._persistence = GroupPersistence(replicas, self.partition_for)
        # The rebalance protocol (JoinGroup ... LeaveGroup) and the committed offsets
        # (OffsetCommit/Fetch/Delete): the API handlers call these parts directly.
        self.membership = Membership(
            self.groups,
            self._persistence,
            coordinator_error=self.coordinator_error,
            spawn=self._spawn,
            min_session_timeout_ms=config.group_min_session_timeout_ms,
            max_session_timeout_ms=config.group_max_session_timeout_ms,
            max_size=config.group_max_size,
            initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
        )
        self.offsets = CommittedOffsets(
            self.groups,
            self._persistence,
            coordinator_error=self.coordinator_error,
            keep_alive=self.membership.schedule_heartbeat,
            remove_group=self._unload_group,
            metadata_max_bytes=config.offset_metadata_max_bytes,
            retention_ms=config.offsets_retention_minutes * 60_000,
        )

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
        """The group's ``__consumer_offsets`` partition (by the topic's partition count)."""
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

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the ``__consumer_offsets`` partitions this broker leads; start expiring offsets."""
        self._start_ownership()
        self._schedule_cleanup()

    async def stop(self) -> None:
        """Forget every group (their state is in the log) and stop all timers."""
        if self._cleanup_timer is not None:
            self._cleanup_timer.cancel()
        await self._stop_ownership()
        for group in list(self.groups.values()):
            self._unload_group(group)

    # --- partitions -------------------------------------------------------------------------
    def _unload_partition(self, partition: int) -> None:
        """Forget the partition's groups; their waiting requests get NOT_COORDINATOR."""
        for group in list(self.groups.values()):
            if self.partition_for(group.group_id) == partition:
                self._unload_group(group)

    async def _load_partition(self, partition: int) -> None:
        started = time.perf_counter()
        replayed = await self._persistence.replay(partition)
        # Live from here on, in one step (nothing awaits until the partition is served).
        self.groups.update(replayed.groups)
        for group in replayed.groups.values():
            self.membership.on_group_loaded(group)
        elapsed = time.perf_counter() - started
        self.load_stats[partition] = (replayed.records, replayed.stored, elapsed)
        if replayed.records:
            log.info(
                "loaded %d group(s) from %d record(s) of %s-%d in %.0f ms",
                replayed.stored,
                replayed.records,
                OFFSETS_TOPIC,
                partition,
                elapsed * 1000,
            )

    def _unload_group(self, group: ClassicGroup) -> None:
        """Drop a group from memory, answering its waiting requests with NOT_COORDINATOR."""
        self.groups.pop(group.group_id, None)
        self.membership.on_group_unloaded(group)

    # --- the TxnOffsetStore side (pystream.txn.group_hooks) -----------------------------------
    def append_pending_commits(self, partitions: Iterable[int]) -> None:
        """Markers come next in these partitions: batched offset commits go first."""
        for partition in partitions:
            self._persistence.flush_commits(partition)

    def complete_transaction(
        self, producer_id: int, partitions: Iterable[int], committed: bool
    ) -> None:
        """The transaction's marker is in these ``__consumer_offsets`` partitions: its offsets
        become committed or are dropped (:meth:`CommittedOffsets.complete_transaction`)."""
        self.offsets.complete_transaction(producer_id, partitions, committed)

    # --- admin ------------------------------------------------------------------------------
    def describe_group(self, group_id: str) -> tuple[int, ClassicGroup | None]:
        error = self.coordinator_error(group_id, allow_empty=True)
        if error:
            return error, None
        return NONE, self.groups.get(group_id)

    def list_groups(self) -> tuple[int, list[ClassicGroup]]:
        """Every group this broker coordinates (COORDINATOR_LOAD_IN_PROGRESS while loading)."""
        if not self._active:
            return E.COORDINATOR_NOT_AVAILABLE, []
        error = E.COORDINATOR_LOAD_IN_PROGRESS if self._loading else NONE
        return error, [g for g in self.groups.values() if g.state is not GroupState.DEAD]

    def delete_groups(self, group_ids: list[str]) -> dict[str, int]:
        """DeleteGroups: only Empty groups go; their offsets and metadata get tombstones."""
        results: dict[str, int] = {}
        for group_id in group_ids:
            error = self.coordinator_error(group_id, allow_empty=True)
            if error:
                results[group_id] = error
                continue
            group = self.groups.get(group_id)
            if group is None or group.state is GroupState.DEAD:
                results[group_id] = E.GROUP_ID_NOT_FOUND
            elif group.state is not GroupState.EMPTY:
                results[group_id] = E.NON_EMPTY_GROUP
            else:
                results[group_id] = self._delete_group(group)
        return results

    def _delete_group(self, group: ClassicGroup) -> int:
        group_id = group.group_id
        records: list[tuple[bytes, bytes | None]] = [
            (offset_commit_key(group_id, topic, partition), None)
            for topic, partition in group.offsets
        ]
        records.append((group_metadata_key(group_id), None))
        code = store_group_error(self._persistence.append(group_id, records))
        if code:
            return code
        log.info("deleted group %s and its %d offset(s)", group_id, len(group.offsets))
        self._unload_group(group)
        return NONE

    # --- expiration -------------------------------------------------------------------------
    def _schedule_cleanup(self) -> None:
        interval = self.config.offsets_retention_check_interval_ms / 1000
        self._cleanup_timer = self.loop.call_later(interval, self._run_cleanup)

    def _run_cleanup(self) -> None:
        try:
            self.expire_offsets()
        except Exception:
            log.exception("expiring offsets failed")
        if self._active:
            self._schedule_cleanup()

    def expire_offsets(self, now: int | None = None) -> int:
        """Delete expired offsets and groups that are empty with no offsets; how many offsets
        (:meth:`CommittedOffsets.expire_offsets`)."""
        return self.offsets.expire_offsets(now)
