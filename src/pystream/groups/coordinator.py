"""The group coordinator: consumer groups and their offsets in ``__consumer_offsets``.

One :class:`GroupCoordinator` per broker owns the groups whose
``__consumer_offsets`` partition (``abs(hashCode(group)) % partitions``) this
broker leads — on one node, all of them.  This module is its shell:

* **ownership** (:class:`~pystream.groups.base.CoordinatorBase`, shared with
  the transaction coordinator): the partitions it leads are replayed from the
  log (:class:`~pystream.groups.offsets_log.PartitionLoader`) before their
  groups are served — COORDINATOR_LOAD_IN_PROGRESS until then, NOT_COORDINATOR
  for groups of partitions led elsewhere.  ``on_elected`` / ``on_resigned``
  are what a leadership change calls;
* **admin**: DescribeGroups, ListGroups, DeleteGroups;
* **expiration**: every ``offsets.retention.check.interval.ms``, offsets past
  ``offsets.retention.minutes`` get tombstones, and empty groups without
  offsets are removed.

The rebalance protocol is :class:`~pystream.groups.membership.Membership`,
committed offsets :class:`~pystream.groups.committed_offsets.CommittedOffsets`.
"""

from __future__ import annotations

import asyncio
import time

from pystream._core import records as core_records
from pystream.clock import now_ms
from pystream.coordinator.base import NONE, E
from pystream.groups.base import log, store_group_error
from pystream.groups.committed_offsets import CommittedOffsets
from pystream.groups.group import ClassicGroup, GroupState, JoinResult, SyncResult, resolve
from pystream.groups.membership import Membership
from pystream.groups.offsets_log import (
    OFFSETS_TOPIC,
    LoadedPartition,
    PartitionLoader,
    group_metadata_key,
    offset_commit_key,
)

# Kafka's offsets.load.buffer.size: how much of a partition is read per step while loading.
LOAD_BUFFER_BYTES = 5 * 1024 * 1024


class GroupCoordinator(Membership, CommittedOffsets):
    """Consumer groups of the ``__consumer_offsets`` partitions this broker leads."""

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
        loaded = await self._replay(partition)
        groups = self._install(partition, loaded)
        elapsed = time.perf_counter() - started
        self.load_stats[partition] = (loaded.records, groups, elapsed)
        if loaded.records:
            log.info(
                "loaded %d group(s) from %d record(s) of %s-%d in %.0f ms",
                groups,
                loaded.records,
                OFFSETS_TOPIC,
                partition,
                elapsed * 1000,
            )

    async def _replay(self, partition: int) -> LoadedPartition:
        hosted = self.replicas.partition(OFFSETS_TOPIC, partition)
        if hosted is None:
            raise RuntimeError(f"{OFFSETS_TOPIC}-{partition} is not hosted here")
        partition_log = hosted.log
        loader = PartitionLoader()
        end = partition_log.log_end_offset
        offset = partition_log.log_start_offset
        while offset < end:
            info = partition_log.read(offset, LOAD_BUFFER_BYTES, end)
            if info.records is None:
                break
            next_offset = offset
            # The batches keep views into the segment while they are read; the loader
            # copies the keys and values it keeps.
            for batch in core_records.iter_batches(info.view()):
                header = batch.header
                if header.last_offset < offset:
                    continue  # a read may start with the batch holding `offset`
                loader.add_batch(batch)
                next_offset = header.next_offset
            if next_offset <= offset:
                break
            offset = next_offset
            await asyncio.sleep(0)  # let requests for other partitions' groups run
        return loader.finish()

    def _install(self, partition: int, loaded: LoadedPartition) -> int:
        """Make the replayed state live: groups as their last record left them."""
        count = 0
        for group_id, value in loaded.groups.items():
            group = ClassicGroup.from_metadata_value(group_id, value)
            group.offsets = loaded.offsets.pop(group_id, {})
            self.groups[group_id] = group
            count += 1
            for member in group.members.values():
                # Members get one session timeout to show up again (e.g. after a restart).
                self._schedule_heartbeat(group, member)
        for group_id, offsets in loaded.offsets.items():
            # Groups that only store offsets (or whose members all left long ago).
            group = ClassicGroup(group_id)
            group.offsets = offsets
            self.groups[group_id] = group
            count += 1
        for producer_id, by_group in loaded.pending_transactions.items():
            for group_id, offsets in by_group.items():
                group = self.groups.get(group_id)
                if group is None:
                    group = self.groups[group_id] = ClassicGroup(group_id)
                group.pending_transactional_offsets[producer_id] = offsets
        return count

    def _unload_group(self, group: ClassicGroup) -> None:
        """Drop a group from memory, answering its waiting requests with NOT_COORDINATOR."""
        self.groups.pop(group.group_id, None)
        for member in list(group.members.values()):
            resolve(
                group.set_join_future(member, None), JoinResult(E.NOT_COORDINATOR, member.member_id)
            )
            resolve(member.sync_future, SyncResult(E.NOT_COORDINATOR))
            member.sync_future = None
            member.cancel_timer()
        for member_id in list(group.pending_members):
            group.remove_pending_member(member_id)
        group.state = GroupState.DEAD
        self._invalidate_delayed_ops(group)

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
        code = self._append(group_id, records)
        if code:
            return store_group_error(code)
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
        """Delete expired offsets and groups that are empty with no offsets; how many offsets."""
        now = now_ms() if now is None else now
        retention_ms = self.config.offsets_retention_minutes * 60_000
        removed = 0
        for group in list(self.groups.values()):
            group_id = group.group_id
            if self.coordinator_error(group_id, allow_empty=True):
                continue
            expired = group.expired_offsets(now, retention_ms)
            records: list[tuple[bytes, bytes | None]] = [
                (offset_commit_key(group_id, t, p), None) for t, p in expired
            ]
            dies = (
                group.state is GroupState.EMPTY
                and len(group.offsets) == len(expired)
                and not group.pending_transactional_offsets
                and not group.pending_members
            )
            if dies:
                records.append((group_metadata_key(group_id), None))
            if not records:
                continue
            if self._append(group_id, records):
                continue  # logged; try again next time
            for tp in expired:
                del group.offsets[tp]
            removed += len(expired)
            if dies:
                log.info("group %s is empty and has no offsets left: removed", group_id)
                self._unload_group(group)
        if removed:
            log.info("expired %d committed offset(s)", removed)
        return removed
