"""Committed offsets: OffsetCommit, OffsetFetch, OffsetDelete, transactional commits, expiry.

A commit is checked against the group (a stale generation gets
ILLEGAL_GENERATION, an unknown member UNKNOWN_MEMBER_ID, metadata longer than
``offset.metadata.max.bytes`` OFFSET_METADATA_TOO_LARGE), written to the
group's ``__consumer_offsets`` partition, and only then becomes what
OffsetFetch returns.  A transactional commit stays pending until the
transaction's marker says commit (or abort); offsets older than
``offsets.retention.minutes`` get tombstones.

:class:`CommittedOffsets` is one part of the coordinator
(:class:`~pystream.groups.coordinator.GroupCoordinator` builds it and hands it
the offset APIs and the transaction coordinator's calls); the rebalance
protocol is the other (:mod:`pystream.groups.membership`), and both write
through :mod:`pystream.groups.persistence`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pystream.clock import now_ms
from pystream.coordinator.base import NONE, E
from pystream.groups.group import ClassicGroup, GroupState, Member
from pystream.groups.offsets_log import (
    OffsetAndMetadata,
    TopicPartition,
    group_metadata_key,
    offset_commit_key,
    offset_commit_value,
)
from pystream.groups.persistence import store_offsets_error

if TYPE_CHECKING:
    from pystream.groups.membership import CoordinatorCheck
    from pystream.groups.persistence import GroupPersistence

# One logger for the whole group coordinator, whichever part of it speaks.
log = logging.getLogger("pystream.groups.coordinator")


class CommittedOffsets:
    """The offsets store: the committed (and pending transactional) offsets of the groups.

    The offsets live on each :class:`ClassicGroup` of the registry it shares with
    the membership and the coordinator, because a commit is validated against the
    group's generation and members.  It writes through ``persistence`` and asks
    ``coordinator_error`` whether this broker serves a group.  Two hooks reach
    the other parts: ``keep_alive`` (a member's commit counts as a heartbeat, the
    membership's session timer) and ``remove_group`` (the coordinator forgets an
    Empty group whose last offset expired).
    """

    def __init__(
        self,
        groups: dict[str, ClassicGroup],
        persistence: GroupPersistence,
        *,
        coordinator_error: CoordinatorCheck,
        keep_alive: Callable[[ClassicGroup, Member], None],
        remove_group: Callable[[ClassicGroup], None],
        metadata_max_bytes: int,
        retention_ms: int,
    ) -> None:
        self.groups = groups
        self.persistence = persistence
        self.coordinator_error = coordinator_error
        self._keep_alive = keep_alive
        self._remove_group = remove_group
        self.metadata_max_bytes = metadata_max_bytes  # offset.metadata.max.bytes
        self.retention_ms = retention_ms  # offsets.retention.minutes
        self._writes = 0  # writes of offsets (and their tombstones) so far: their order

    # --- offsets ----------------------------------------------------------------------------
    async def commit_offsets(
        self,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        generation_id: int,
        offsets: dict[TopicPartition, OffsetAndMetadata],
    ) -> dict[TopicPartition, int]:
        """OffsetCommit: an error code per partition, once the commit is replicated.

        A generation of -1 commits for a group that does not use Kafka's group
        management (it must be Empty); otherwise the member and generation must
        be current, or ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID stop a zombie.
        """
        error = self.coordinator_error(group_id, allow_empty=True)
        if error:
            return dict.fromkeys(offsets, error)
        group = self.groups.get(group_id)
        if group is None:
            if generation_id >= 0:
                # A member of a generation this coordinator never saw: a zombie.
                return dict.fromkeys(offsets, E.ILLEGAL_GENERATION)
            group = self.groups[group_id] = ClassicGroup(group_id)
        error = self._commit_error(group, member_id, group_instance_id, generation_id)
        if error:
            return dict.fromkeys(offsets, error)
        return await self._store_offsets(group, offsets)

    def _commit_error(
        self, group: ClassicGroup, member_id: str, instance_id: str | None, generation_id: int
    ) -> int:
        if group.state is GroupState.DEAD:
            return E.COORDINATOR_NOT_AVAILABLE
        if group.is_static_member_fenced(member_id, instance_id):
            return E.FENCED_INSTANCE_ID
        if generation_id < 0 and group.state is GroupState.EMPTY:
            return NONE  # the group only uses Kafka to store offsets
        if member_id not in group.members:
            return E.UNKNOWN_MEMBER_ID
        if generation_id != group.generation_id:
            return E.ILLEGAL_GENERATION
        if group.state is GroupState.COMPLETING_REBALANCE:
            # The member knows the new generation but not its assignment yet.
            return E.REBALANCE_IN_PROGRESS
        # Stable, or PreparingRebalance (the heartbeat tells the member to rejoin).
        self._keep_alive(group, group.members[member_id])
        return NONE

    def _valid_offsets(
        self, offsets: dict[TopicPartition, OffsetAndMetadata], results: dict[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        limit = self.metadata_max_bytes
        valid = {}
        for tp, offset in offsets.items():
            if len(offset.metadata) > limit:
                results[tp] = E.OFFSET_METADATA_TOO_LARGE
            else:
                valid[tp] = offset
        return valid

    async def _store_offsets(
        self, group: ClassicGroup, offsets: dict[TopicPartition, OffsetAndMetadata]
    ) -> dict[TopicPartition, int]:
        """Kafka's ``storeOffsets``: append with acks=all, and only once the ISR has the
        commit make it what OffsetFetch returns (a failed write changes nothing here)."""
        results: dict[TopicPartition, int] = {}
        valid = self._valid_offsets(offsets, results)
        if valid:
            order = self._next_write()
            code = await self.persistence.store_offsets(
                group.group_id, _commit_records(group.group_id, valid)
            )
            if not code:
                self._apply(group, valid, order)
                # A plain commit after a transactional one (not yet committed) wins.
                for pending in group.pending_transactional_offsets.values():
                    for tp in valid:
                        pending.pop(tp, None)
            results.update(dict.fromkeys(valid, code))
        return {tp: results[tp] for tp in offsets}

    def _next_write(self) -> int:
        """The order of a write about to be appended (appends are synchronous: the order of
        these numbers is the order of the records in the log)."""
        self._writes += 1
        return self._writes

    @staticmethod
    def _apply(
        group: ClassicGroup, offsets: dict[TopicPartition, OffsetAndMetadata], order: int
    ) -> None:
        """Make replicated offsets the committed ones, unless a later write of the same
        partition was applied first (replication waits may end out of order)."""
        written = group.offset_write_order
        for tp, offset in offsets.items():
            if written.get(tp, 0) < order:
                written[tp] = order
                group.offsets[tp] = offset

    @staticmethod
    def _forget(group: ClassicGroup, partitions: Iterable[TopicPartition], order: int) -> None:
        """Drop offsets whose tombstones were appended (an older commit still waiting for
        the ISR does not bring them back)."""
        for tp in partitions:
            group.offsets.pop(tp, None)
            group.offset_write_order[tp] = order

    def fetch_offsets(
        self, group_id: str, partitions: list[TopicPartition] | None, require_stable: bool = False
    ) -> tuple[int, dict[TopicPartition, tuple[OffsetAndMetadata | None, int]]]:
        """OffsetFetch: (group error, per partition (committed offset or None, error)).

        ``partitions`` None means every partition the group has an offset for.
        """
        error = self.coordinator_error(group_id, allow_empty=True)
        if error:
            return error, {}
        group = self.groups.get(group_id)
        if group is None or group.state is GroupState.DEAD:
            return NONE, {tp: (None, NONE) for tp in partitions or ()}
        offsets = group.offsets
        if partitions is None:
            partitions = list(offsets)
        unstable: set[TopicPartition] = set()
        if require_stable:
            unstable = {tp for p in group.pending_transactional_offsets.values() for tp in p}
        return NONE, {
            tp: (None, E.UNSTABLE_OFFSET_COMMIT) if tp in unstable else (offsets.get(tp), NONE)
            for tp in partitions
        }

    def delete_offsets(
        self, group_id: str, partitions: list[TopicPartition]
    ) -> tuple[int, dict[TopicPartition, int]]:
        """OffsetDelete (KIP-496): only offsets of topics the group does not consume."""
        error = self.coordinator_error(group_id)
        if error:
            return error, {}
        group = self.groups.get(group_id)
        if group is None or group.state is GroupState.DEAD:
            return E.GROUP_ID_NOT_FOUND, {}
        results: dict[TopicPartition, int] = {}
        if group.state is GroupState.EMPTY:
            eligible = list(partitions)
        elif group.protocol_type == "consumer":
            subscribed = group.subscribed_topics or set()
            eligible = [tp for tp in partitions if tp[0] not in subscribed]
            results.update(
                (tp, E.GROUP_SUBSCRIBED_TO_TOPIC) for tp in partitions if tp[0] in subscribed
            )
        else:
            return E.NON_EMPTY_GROUP, {}
        doomed = [tp for tp in dict.fromkeys(eligible) if tp in group.offsets]
        if doomed:
            order = self._next_write()
            code = store_offsets_error(
                self.persistence.append(
                    group_id, [(offset_commit_key(group_id, t, p), None) for t, p in doomed]
                )
            )
            if code:
                return code, {}
            self._forget(group, doomed, order)
        results.update((tp, NONE) for tp in eligible)
        return NONE, results

    # --- transactional offsets (TxnOffsetCommit, transaction markers) -----------------------
    async def commit_transactional_offsets(
        self,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        member_id: str,
        group_instance_id: str | None,
        generation_id: int,
        offsets: dict[TopicPartition, OffsetAndMetadata],
    ) -> dict[TopicPartition, int]:
        """TxnOffsetCommit: write the offsets as part of the producer's transaction.

        Appended with acks=all and answered once the ISR has them; a failed write
        leaves nothing pending.  They become visible to OffsetFetch only when
        :meth:`complete_transaction` reports the commit marker (and OffsetFetch with
        require_stable reports UNSTABLE_OFFSET_COMMIT meanwhile).
        """
        error = self.coordinator_error(group_id)
        if error:
            return dict.fromkeys(offsets, error)
        group = self.groups.get(group_id)
        if group is None:
            group = self.groups[group_id] = ClassicGroup(group_id)
        if group.state is GroupState.DEAD:
            error = E.COORDINATOR_NOT_AVAILABLE
        elif group.is_static_member_fenced(member_id, group_instance_id):
            error = E.FENCED_INSTANCE_ID
        elif member_id != "" and member_id not in group.members:
            error = E.UNKNOWN_MEMBER_ID
        elif generation_id >= 0 and generation_id != group.generation_id:
            error = E.ILLEGAL_GENERATION
        if error:
            return dict.fromkeys(offsets, error)
        results: dict[TopicPartition, int] = {}
        valid = self._valid_offsets(offsets, results)
        if valid:
            stored = self.persistence.store_transactional_offsets(
                group_id, _commit_records(group_id, valid), producer_id, producer_epoch
            )
            # Pending from the append on (Kafka's prepareTxnOffsetCommit): OffsetFetch with
            # require_stable answers UNSTABLE_OFFSET_COMMIT meanwhile, and a transaction
            # aborted (timed out) during the wait drops them for good.
            pending = group.pending_transactional_offsets.setdefault(producer_id, {})
            pending.update(valid)
            code = await stored
            if code:
                # Not stored: forget them (unless a later commit replaced them meanwhile).
                for tp, offset in valid.items():
                    if pending.get(tp) is offset:
                        del pending[tp]
                if not pending and group.pending_transactional_offsets.get(producer_id) is pending:
                    del group.pending_transactional_offsets[producer_id]
            results.update(dict.fromkeys(valid, code))
        return {tp: results[tp] for tp in offsets}

    def complete_transaction(
        self, producer_id: int, partitions: Iterable[int], committed: bool
    ) -> None:
        """The transaction's marker is in these ``__consumer_offsets`` partitions: its
        offsets become the committed ones (commit) or are dropped (abort)."""
        wanted = set(partitions)
        for group in list(self.groups.values()):
            if self.persistence.partition_for(group.group_id) not in wanted:
                continue
            pending = group.pending_transactional_offsets.pop(producer_id, None)
            if pending and committed:
                self._apply(group, pending, self._next_write())

    # --- expiration -------------------------------------------------------------------------
    def expire_offsets(self, now: int | None = None) -> int:
        """Delete expired offsets and groups that are empty with no offsets; how many offsets."""
        now = now_ms() if now is None else now
        removed = 0
        for group in list(self.groups.values()):
            group_id = group.group_id
            if self.coordinator_error(group_id, allow_empty=True):
                continue
            expired = group.expired_offsets(now, self.retention_ms)
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
            order = self._next_write()
            if self.persistence.append(group_id, records):
                continue  # logged; try again next time
            self._forget(group, expired, order)
            removed += len(expired)
            if dies:
                log.info("group %s is empty and has no offsets left: removed", group_id)
                self._remove_group(group)
        if removed:
            log.info("expired %d committed offset(s)", removed)
        return removed


def _commit_records(
    group_id: str, offsets: dict[TopicPartition, OffsetAndMetadata]
) -> list[tuple[bytes, bytes | None]]:
    """The records that commit ``offsets`` for the group."""
    return [
        (offset_commit_key(group_id, topic, partition), offset_commit_value(offset))
        for (topic, partition), offset in offsets.items()
    ]
