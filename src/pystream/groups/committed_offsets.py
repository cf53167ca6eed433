"""Committed offsets: OffsetCommit, OffsetFetch, OffsetDelete and transactional commits.

A commit is checked against the group (a stale generation gets
ILLEGAL_GENERATION, an unknown member UNKNOWN_MEMBER_ID, metadata longer than
``offset.metadata.max.bytes`` OFFSET_METADATA_TOO_LARGE), written to the
group's ``__consumer_offsets`` partition, and only then becomes what
OffsetFetch returns.
"""

from __future__ import annotations

from collections.abc import Iterable

from pystream.coordinator.base import NONE, E
from pystream.groups.base import GroupCoordinatorBase, store_offsets_error
from pystream.groups.group import ClassicGroup, GroupState
from pystream.groups.offsets_log import (
    OffsetAndMetadata,
    TopicPartition,
    offset_commit_key,
    offset_commit_value,
)


class CommittedOffsets(GroupCoordinatorBase):
    """Offsets of the coordinator's groups (mixed into the GroupCoordinator)."""

    # --- offsets ----------------------------------------------------------------------------
    def commit_offsets(
        self,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        generation_id: int,
        offsets: dict[TopicPartition, OffsetAndMetadata],
    ) -> dict[TopicPartition, int]:
        """OffsetCommit: an error code per partition.

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
        return self._store_offsets(group, offsets)

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
        self._schedule_heartbeat(group, group.members[member_id])
        return NONE

    def _valid_offsets(
        self, offsets: dict[TopicPartition, OffsetAndMetadata], results: dict[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        limit = self.config.offset_metadata_max_bytes
        valid = {}
        for tp, offset in offsets.items():
            if len(offset.metadata) > limit:
                results[tp] = E.OFFSET_METADATA_TOO_LARGE
            else:
                valid[tp] = offset
        return valid

    def _store_offsets(
        self, group: ClassicGroup, offsets: dict[TopicPartition, OffsetAndMetadata]
    ) -> dict[TopicPartition, int]:
        results: dict[TopicPartition, int] = {}
        valid = self._valid_offsets(offsets, results)
        if valid:
            group_id = group.group_id
            code = self._append(
                group_id,
                [
                    (offset_commit_key(group_id, topic, partition), offset_commit_value(offset))
                    for (topic, partition), offset in valid.items()
                ],
            )
            if code:
                code = store_offsets_error(code)
            else:
                group.offsets.update(valid)
                # A plain commit after a transactional one (not yet committed) wins.
                for pending in group.pending_transactional_offsets.values():
                    for tp in valid:
                        pending.pop(tp, None)
            results.update(dict.fromkeys(valid, code))
        return {tp: results[tp] for tp in offsets}

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
            code = self._append(
                group_id, [(offset_commit_key(group_id, t, p), None) for t, p in doomed]
            )
            if code:
                return store_offsets_error(code), {}
            for tp in doomed:
                del group.offsets[tp]
        results.update((tp, NONE) for tp in eligible)
        return NONE, results

    # --- transactional offsets (TxnOffsetCommit, transaction markers) -----------------------
    def commit_transactional_offsets(
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

        They become visible to OffsetFetch only when :meth:`complete_transaction`
        reports the commit marker (and OffsetFetch with require_stable reports
        UNSTABLE_OFFSET_COMMIT meanwhile).
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
            code = self._append(
                group_id,
                [
                    (offset_commit_key(group_id, t, p), offset_commit_value(o))
                    for (t, p), o in valid.items()
                ],
                producer_id=producer_id,
                producer_epoch=producer_epoch,
                transactional=True,
            )
            if code:
                code = store_offsets_error(code)
            else:
                group.pending_transactional_offsets.setdefault(producer_id, {}).update(valid)
            results.update(dict.fromkeys(valid, code))
        return {tp: results[tp] for tp in offsets}

    def complete_transaction(
        self, producer_id: int, partitions: Iterable[int], committed: bool
    ) -> None:
        """The transaction's marker is in these ``__consumer_offsets`` partitions: its
        offsets become the committed ones (commit) or are dropped (abort)."""
        wanted = set(partitions)
        for group in list(self.groups.values()):
            if self.partition_for(group.group_id) not in wanted:
                continue
            pending = group.pending_transactional_offsets.pop(producer_id, None)
            if pending and committed:
                group.offsets.update(pending)
