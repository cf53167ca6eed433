"""The group coordinator's persistence: writing to and replaying ``__consumer_offsets``.

Everything the coordinator knows that must outlive it (group metadata with the
members' assignments, committed offsets, open transactional commits) is a
record in the group's ``__consumer_offsets`` partition.
:class:`GroupPersistence` is the one place that writes those records, waits
until the ISR has them, maps a failed write to what the client is told
(Kafka's two mappings, :func:`store_group_error` and
:func:`store_offsets_error`), and replays a partition into groups when this
broker becomes its leader.

It knows the log, not the protocols: what to write and when is decided by the
membership (:mod:`pystream.groups.membership`), the offsets store
(:mod:`pystream.groups.committed_offsets`) and the coordinator's admin and
expiration (:mod:`pystream.groups.coordinator`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pystream._core import records as core_records
from pystream.clock import now_ms
from pystream.coordinator.base import NONE, E
from pystream.errors import KafkaError
from pystream.groups.group import ClassicGroup
from pystream.groups.offsets_log import (
    OFFSETS_TOPIC,
    LoadedPartition,
    PartitionLoader,
    build_records,
    group_metadata_key,
    group_metadata_value,
)
from pystream.storage.log import AppendOrigin

if TYPE_CHECKING:
    from pystream.cluster.replication.replica_manager import ReplicaManager

log = logging.getLogger("pystream.groups.coordinator")

# Kafka's offsets.commit.timeout.ms: how long a commit waits for the ISR.
OFFSETS_COMMIT_TIMEOUT_MS = 5000

# Kafka's offsets.load.buffer.size: how much of a partition is read per step while loading.
LOAD_BUFFER_BYTES = 5 * 1024 * 1024

Records = list[tuple[bytes, bytes | None]]


def store_group_error(code: int) -> int:
    """Kafka's mapping of a failed group-metadata append to what the client is told (0, written,
    stays 0)."""
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
    """Kafka's mapping of a failed offset-commit append to what the client is told (0, written,
    stays 0)."""
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


@dataclass(slots=True)
class ReplayedPartition:
    """The groups one ``__consumer_offsets`` partition holds, rebuilt from its log."""

    records: int  # records read
    # group id -> the group as its last records left it, in the order the coordinator
    # installs them (groups with metadata first, then groups that only have offsets).
    groups: dict[str, ClassicGroup]
    stored: int  # groups with metadata or committed offsets (not only open transactions)


class GroupPersistence:
    """Writes the coordinator's records to ``__consumer_offsets`` and reads them back.

    Owns no state of its own: the replication bookkeeping (the log end of the last
    write per partition, forgotten when this broker resigns) stays with the
    partition ownership of :class:`~pystream.coordinator.base.CoordinatorBase`,
    which hands over the two functions that use it (``note_appended``,
    ``replicated``).  ``partition_for`` maps a group id to its partition (it
    depends on the topic's partition count, which the metadata knows).
    """

    def __init__(
        self,
        replicas: ReplicaManager,
        partition_for: Callable[[str], int],
        *,
        note_appended: Callable[[int], None],
        replicated: Callable[[int, int], Awaitable[int]],
    ) -> None:
        self.replicas = replicas
        self.partition_for = partition_for
        self._note_appended = note_appended
        self._replicated = replicated

    # --- writes -----------------------------------------------------------------------------
    def append(
        self,
        group_id: str,
        records: Records,
        *,
        producer_id: int = -1,
        producer_epoch: int = -1,
        transactional: bool = False,
    ) -> int:
        """Append records to the group's partition; the raw Kafka error code (0: written).

        Synchronous (the local log append is), so a caller that reads a group,
        writes and then changes the group sees no other request in between.
        """
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

    def append_offsets(self, group_id: str, records: Records) -> int:
        """Append offset commits (or their tombstones); the error as a committer is told it."""
        return store_offsets_error(self.append(group_id, records))

    def append_transactional_offsets(
        self, group_id: str, records: Records, producer_id: int, producer_epoch: int
    ) -> int:
        """Append offset commits as part of the producer's transaction (the partition checks
        the producer epoch); the error as a committer is told it."""
        return store_offsets_error(
            self.append(
                group_id,
                records,
                producer_id=producer_id,
                producer_epoch=producer_epoch,
                transactional=True,
            )
        )

    def append_group(self, group_id: str, records: Records) -> int:
        """Append group records (metadata, or a deleted group's tombstones); the error as
        a group member or admin is told it."""
        return store_group_error(self.append(group_id, records))

    def store_group(self, group: ClassicGroup, assignments: dict[str, bytes] | None) -> int:
        """Write the group's metadata (its generation, members and, given, their assignments)."""
        value = group.to_metadata_value(assignments)
        return self.append_group(
            group.group_id, [(group_metadata_key(group.group_id), group_metadata_value(value))]
        )

    async def wait_replicated(self, group_id: str) -> int:
        """Until what was appended to the group's partition is on every ISR member (Kafka's
        coordinator appends with acks=all); an error code as the client is told it."""
        code = await self._replicated(self.partition_for(group_id), OFFSETS_COMMIT_TIMEOUT_MS)
        return store_offsets_error(code) if code else NONE

    # --- replay -----------------------------------------------------------------------------
    async def replay(self, partition: int) -> ReplayedPartition:
        """Read the partition from its start and rebuild its groups (not yet live: the
        coordinator installs them)."""
        loaded = await self._read(partition)
        return ReplayedPartition(loaded.records, *_rebuild_groups(loaded))

    async def _read(self, partition: int) -> LoadedPartition:
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


def _rebuild_groups(loaded: LoadedPartition) -> tuple[dict[str, ClassicGroup], int]:
    """The groups of a replayed partition, as their last records left them, and how many
    have metadata or committed offsets."""
    groups: dict[str, ClassicGroup] = {}
    for group_id, value in loaded.groups.items():
        group = ClassicGroup.from_metadata_value(group_id, value)
        group.offsets = loaded.offsets.pop(group_id, {})
        groups[group_id] = group
    for group_id, offsets in loaded.offsets.items():
        # Groups that only store offsets (or whose members all left long ago).
        group = ClassicGroup(group_id)
        group.offsets = offsets
        groups[group_id] = group
    stored = len(groups)
    for producer_id, by_group in loaded.pending_transactions.items():
        for group_id, offsets in by_group.items():
            group = groups.get(group_id)
            if group is None:
                group = groups[group_id] = ClassicGroup(group_id)
            group.pending_transactional_offsets[producer_id] = offsets
    return groups, stored
