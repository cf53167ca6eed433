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

# A batch of offset commits is appended at once when it reaches this many bytes of keys and
# values (well below the topic's max.message.bytes, 1 MiB by default), else at the end of
# the event loop's iteration.
MAX_COMMIT_BATCH_BYTES = 256 * 1024

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


def _unexpected_error(exc: Exception) -> int:
    """The error code of an exception that is not a KafkaError: a failing disk is
    KAFKA_STORAGE_ERROR (Kafka's log-dir failure), anything else UNKNOWN_SERVER_ERROR."""
    return E.KAFKA_STORAGE_ERROR if isinstance(exc, OSError) else E.UNKNOWN_SERVER_ERROR


async def _mapped(stored: Awaitable[int], mapping: Callable[[int], int]) -> int:
    return mapping(await stored)


@dataclass(slots=True)
class ReplayedPartition:
    """The groups one ``__consumer_offsets`` partition holds, rebuilt from its log."""

    records: int  # records read
    # group id -> the group as its last records left it, in the order the coordinator
    # installs them (groups with metadata first, then groups that only have offsets).
    groups: dict[str, ClassicGroup]
    stored: int  # groups with metadata or committed offsets (not only open transactions)


class _CommitBatch:
    """Offset commits for one ``__consumer_offsets`` partition, appended together."""

    __slots__ = ("records", "size", "waiters")

    def __init__(self) -> None:
        self.records: Records = []
        self.size = 0  # bytes of keys and values
        # One future per commit (a request that goes away cancels only its own): each gets
        # the batch's error code as a committer is told it.
        self.waiters: list[asyncio.Future[int]] = []

    def resolve(self, code: int) -> None:
        code = store_offsets_error(code)
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(code)


class GroupPersistence:
    """Writes the coordinator's records to ``__consumer_offsets`` and reads them back.

    Owns no state of its own.  ``partition_for`` maps a group id to its partition
    (it depends on the topic's partition count, which the metadata knows).

    Two kinds of writes, as Kafka's ``GroupMetadataManager``:

    * **stores** (:meth:`store_offsets`, :meth:`store_transactional_offsets`,
      :meth:`store_group`) append with acks=all — nothing is appended while the
      ISR is below ``min.insync.replicas`` — and return only once every ISR member
      has the records (at most ``offsets.commit.timeout.ms``).  The caller changes
      its memory and answers only after a store succeeded, so what a client was
      told, and what OffsetFetch returns, survives the loss of this broker;
    * **cleanups** (:meth:`append`: tombstones of deleted groups and expired or
      deleted offsets) are appended without waiting, as Kafka's
      ``cleanupGroupMetadata`` does (acks=0): a lost tombstone is written again by
      the next cleanup, or the offset it removes comes back with a reload.

    Plain offset commits (:meth:`store_offsets`) are batched: the commits of every
    request handled in one iteration of the event loop (e.g. pipelined on several
    connections) share one append and one wait for the ISR per partition, as Kafka's
    coordinator runtime batches its writes.  Any other write to a partition appends
    its waiting commits first, so the log keeps the order in which writes were made.
    """

    def __init__(self, replicas: ReplicaManager, partition_for: Callable[[str], int]) -> None:
        self.replicas = replicas
        self.partition_for = partition_for
        # partition -> the offset commits waiting for the end of this loop iteration.
        self._commit_batches: dict[int, _CommitBatch] = {}
        self._replicating: set[asyncio.Future[int]] = set()  # their waits for the ISR

    # --- writes -----------------------------------------------------------------------------
    def _append(
        self,
        partition: int,
        records: Records,
        *,
        required_acks: int,
        producer_id: int = -1,
        producer_epoch: int = -1,
        transactional: bool = False,
    ) -> tuple[int, int]:
        """Append records to a partition: (raw Kafka error code, the offset after the
        appended batch).  Synchronous (the local log append is)."""
        if partition in self._commit_batches:
            self.flush_commits(partition)  # batched commits were made first: they go first
        try:
            batch = build_records(
                records,
                now_ms(),
                producer_id=producer_id,
                producer_epoch=producer_epoch,
                transactional=transactional,
            )
            info = self.replicas.append(
                OFFSETS_TOPIC,
                partition,
                batch,
                origin=AppendOrigin.COORDINATOR,
                required_acks=required_acks,
            )
        except KafkaError as exc:
            log.warning("appending to %s-%d failed: %s", OFFSETS_TOPIC, partition, exc)
            return exc.error_code, -1
        except Exception as exc:
            # Never raise to the caller: it has requests waiting for this write's outcome
            # (a leader's SyncGroup and its followers').  Kafka's appendToLocalLog turns an
            # unexpected failure into an error code too.
            log.exception("appending to %s-%d failed unexpectedly", OFFSETS_TOPIC, partition)
            return _unexpected_error(exc), -1
        return NONE, info.last_offset + 1

    def append(self, group_id: str, records: Records) -> int:
        """Append cleanup records (tombstones) without waiting for the ISR; the raw Kafka
        error code (0: appended)."""
        return self._append(self.partition_for(group_id), records, required_acks=1)[0]

    def store(
        self,
        group_id: str,
        records: Records,
        *,
        producer_id: int = -1,
        producer_epoch: int = -1,
        transactional: bool = False,
    ) -> Awaitable[int]:
        """Append records with acks=all now, and return what to await: the raw Kafka error
        code once every ISR member has them (0) or the write failed.  Neither this call nor
        the awaitable raises (an unexpected failure is an error code), so whoever waits for
        the write is always answered.

        The append happens in this call (synchronously), so a caller that reads a group
        and stores it sees no other request in between, and writes land in the log in
        the order they were made, even when their waits are awaited in other tasks.
        NOT_ENOUGH_REPLICAS (nothing appended) while the ISR is below
        ``min.insync.replicas``; NOT_ENOUGH_REPLICAS_AFTER_APPEND, REQUEST_TIMED_OUT or
        NOT_LEADER_OR_FOLLOWER when the records were appended here but may not survive.
        """
        partition = self.partition_for(group_id)
        code, required_offset = self._append(
            partition,
            records,
            required_acks=-1,
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            transactional=transactional,
        )
        return self._replicated(partition, code, required_offset)

    async def _replicated(self, partition: int, code: int, required_offset: int) -> int:
        if code:
            return code
        try:
            (error,) = await self.replicas.wait_for_replication(
                [(OFFSETS_TOPIC, partition, required_offset)], OFFSETS_COMMIT_TIMEOUT_MS
            )
        except Exception as exc:  # as in _append: an error code, never an exception
            log.exception(
                "%s-%d: waiting for the ISR failed unexpectedly", OFFSETS_TOPIC, partition
            )
            return _unexpected_error(exc)
        if error is None:
            return NONE
        log.warning(
            "%s-%d: a coordinator write was not replicated: %s", OFFSETS_TOPIC, partition, error
        )
        return error.error_code

    def store_offsets(self, group_id: str, records: Records) -> Awaitable[int]:
        """Store offset commits as :meth:`store` does, batched with the other commits for
        the partition made in this iteration of the event loop; what to await is the error
        as a committer is told it.

        Their place in the log is taken in this call: a later write to the partition,
        of any kind, lands after them.
        """
        partition = self.partition_for(group_id)
        loop = asyncio.get_running_loop()
        batch = self._commit_batches.get(partition)
        if batch is None:
            batch = self._commit_batches[partition] = _CommitBatch()
            loop.call_soon(self.flush_commits, partition, batch)
        waiter: asyncio.Future[int] = loop.create_future()
        batch.waiters.append(waiter)
        batch.records.extend(records)
        batch.size += sum(len(key) + len(value or b"") for key, value in records)
        if batch.size >= MAX_COMMIT_BATCH_BYTES:
            self.flush_commits(partition)
        return waiter

    def flush_commits(self, partition: int, batch: _CommitBatch | None = None) -> None:
        """Append the partition's batched commits now (``batch``: only if it still waits)
        and answer them once the ISR has them."""
        waiting = self._commit_batches.get(partition)
        if waiting is None or (batch is not None and waiting is not batch):
            return  # appended already: it grew large, or another write came first
        del self._commit_batches[partition]
        code, required_offset = self._append(partition, waiting.records, required_acks=-1)
        if code:
            waiting.resolve(code)
            return
        epoch = self.replicas.leader_epoch(OFFSETS_TOPIC, partition)
        done, error = self.replicas.replication_state(
            OFFSETS_TOPIC, partition, required_offset, epoch
        )
        if done:  # no followers to wait for (or it cannot be told): answer now
            waiting.resolve(error.error_code if error is not None else NONE)
            return
        replicated = asyncio.ensure_future(self._replicated(partition, code, required_offset))
        self._replicating.add(replicated)
        replicated.add_done_callback(self._replicating.discard)
        replicated.add_done_callback(
            lambda task: waiting.resolve(E.NOT_COORDINATOR if task.cancelled() else task.result())
        )

    def store_transactional_offsets(
        self, group_id: str, records: Records, producer_id: int, producer_epoch: int
    ) -> Awaitable[int]:
        """Store offset commits as part of the producer's transaction (the partition checks
        the producer epoch); the error as a committer is told it."""
        stored = self.store(
            group_id,
            records,
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            transactional=True,
        )
        return _mapped(stored, store_offsets_error)

    def store_group(
        self, group: ClassicGroup, assignments: dict[str, bytes] | None
    ) -> Awaitable[int]:
        """Store the group's metadata (its generation, members and, given, their
        assignments) as it is now; the error as a group member is told it."""
        value = group.to_metadata_value(assignments)
        records: Records = [(group_metadata_key(group.group_id), group_metadata_value(value))]
        return _mapped(self.store(group.group_id, records), store_group_error)

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
