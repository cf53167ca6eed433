"""One partition's log: a directory of segments with Kafka's offsets and rules.

A :class:`Log` owns ``<topic>-<partition>/``: segments named after their base
offsets, the leader-epoch checkpoint, and the offsets that matter to clients:

- ``log_start_offset``: the first offset a client may read (moved by
  retention and DeleteRecords);
- ``log_end_offset`` (LEO): the offset the next appended record gets;
- ``high_watermark``: the first offset not yet replicated to all in-sync
  replicas; set by the caller (on one node: the LEO), readers stop there;
- ``recovery_point``: everything below it is fsynced; recovery after a crash
  starts there.

The object is asyncio-free and thread-compatible: no locks inside, the caller
serializes appends (the broker calls it from its event loop).  Slow file work
can leave that thread: :meth:`Log.plan_flush` / :meth:`FlushPlan.run` /
:meth:`Log.finish_flush` split a flush into a state step (caller's thread), the
fsyncs (any thread) and a state step again; while a plan is out the log keeps
the segments it names open (deletions wait in ``_pending_deletes``).  Batch bytes are
never parsed here: validation, offset assignment and header reads are
``pystream._core.records``; files and indexes are ``pystream._core.segment``.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import logging
import os
import random
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pystream._core import records as core_records
from pystream._core.segment import FileRange, LogSegment
from pystream.clock import now_ms
from pystream.config import LogConfig
from pystream.errors import (
    InvalidRecordError,
    KafkaStorageError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    RecordListTooLargeError,
    UnknownServerError,
)
from pystream.fileutil import fsync_directory
from pystream.storage import retention
from pystream.storage.leader_epoch import LeaderEpochCache
from pystream.storage.log_loader import DELETED_SUFFIX, load_log, open_segment
from pystream.storage.producer_state import (
    BatchInfo,
    BatchMetadata,
    ProducerStateManager,
    batch_infos,
    delete_snapshots,
    load_producer_state,
)
from pystream.storage.txn_index import AbortedTxn, TransactionIndex

logger = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# ListOffsets special timestamps.
EARLIEST_TIMESTAMP = -2
LATEST_TIMESTAMP = -1
MAX_TIMESTAMP = -3
EARLIEST_LOCAL_TIMESTAMP = -4


class AppendOrigin(enum.Enum):
    """Who appends as leader: a producer (Kafka's client rules) or a coordinator."""

    CLIENT = "client"
    COORDINATOR = "coordinator"


class UnexpectedAppendOffsetError(UnknownServerError):
    """A follower append starts below the log end offset (the caller must truncate first)."""


class OffsetsOutOfOrderError(UnknownServerError):
    """A follower append's batches do not have strictly increasing offsets."""


@dataclass(frozen=True, slots=True)
class LogAppendInfo:
    """What an append did: Kafka's ``LogAppendInfo`` for the produce response."""

    first_offset: int
    last_offset: int
    max_timestamp: int
    offset_of_max_timestamp: int
    log_append_time_ms: int  # -1 unless message.timestamp.type=LogAppendTime
    record_count: int
    size: int  # bytes appended
    log_start_offset: int


@dataclass(frozen=True, slots=True)
class FetchDataInfo:
    """The result of :meth:`Log.read`: whole batches from one segment, or nothing.

    ``records`` is a file region for ``os.sendfile`` (it holds the segment's file
    open while it lives, deleted or not); :meth:`view` gives the same bytes as a
    read-only memoryview over the segment's mmap (for TLS).
    """

    fetch_offset: int
    records: FileRange | None
    segment_base_offset: int  # -1 when empty
    segment: LogSegment | None = None

    @property
    def size(self) -> int:
        """Bytes in the region (0 when empty)."""
        return self.records.length if self.records is not None else 0

    def view(self) -> memoryview:
        """The bytes as a read-only memoryview (empty when there is nothing)."""
        if self.records is None or self.segment is None:
            return memoryview(b"")
        return self.segment.view(self.records.position, self.records.length)


@dataclass(slots=True)
class FlushPlan:
    """The fsyncs of one flush, taken by :meth:`Log.plan_flush`: run them anywhere
    (:meth:`run`), then hand the plan back to :meth:`Log.finish_flush`."""

    log: Log
    target: int  # the recovery point once the fsyncs are done
    segments: list[LogSegment]
    txn_index_paths: list[str]
    directory: str | None  # fsync the directory too (new segment files)
    truncations: int  # the log's truncation count when planned
    ok: bool = False

    def run(self) -> None:
        """fsync the segments, the transaction index files and the directory.

        Thread-safe against the log's owner: the log keeps these segments open until
        :meth:`Log.finish_flush`.  Sets ``ok``; raises KafkaStorageError on failure.
        """
        try:
            for segment in self.segments:
                segment.flush()
            for path in self.txn_index_paths:
                _fsync_file(path)
            if self.directory is not None:
                with contextlib.suppress(FileNotFoundError):  # the log was deleted meanwhile
                    fsync_directory(self.directory)
        except OSError as exc:
            raise KafkaStorageError(f"Cannot flush {self.log.directory}: {exc}") from exc
        self.ok = True


@dataclass(frozen=True, slots=True)
class TimestampAndOffset:
    """A ListOffsets answer: the timestamp found, its offset, the epoch that wrote it."""

    timestamp: int
    offset: int
    leader_epoch: int


def parse_topic_partition(dir_name: str) -> tuple[str, int] | None:
    """``"orders-3"`` -> ``("orders", 3)``; None if the name is not ``<topic>-<partition>``."""
    topic, dash, partition = dir_name.rpartition("-")
    if not dash or not topic or not partition.isdigit():
        return None
    return topic, int(partition)


class Log:
    """One partition's segments and offsets.  Open with :meth:`Log.open`."""

    def __init__(
        self,
        directory: str,
        config: LogConfig,
        segments: list[LogSegment],
        *,
        log_start_offset: int,
        log_end_offset: int,
        recovery_point: int,
        leader_epoch_cache: LeaderEpochCache,
        clock: Callable[[], int] = now_ms,
        producer_state: ProducerStateManager | None = None,
        txn_index: TransactionIndex | None = None,
    ) -> None:
        """Use :meth:`open`; this wires up state that the loader established."""
        self.directory = directory
        self.topic_partition = parse_topic_partition(os.path.basename(directory))
        # Kafka's "topic-partition" for error messages (the directory name otherwise).
        self._partition_name = os.path.basename(directory)
        self._config = config
        self._segments = segments
        self._base_offsets = [s.base_offset for s in segments]
        self._log_start_offset = log_start_offset
        self._log_end_offset = log_end_offset
        self._recovery_point = recovery_point
        self._high_watermark = log_start_offset
        self._leader_epoch_cache = leader_epoch_cache
        # Idempotent/transactional producers of this partition and its aborted transactions.
        self._producer_state = producer_state or ProducerStateManager(directory)
        self._txn_index = txn_index or TransactionIndex(directory)
        self._clock = clock
        self._last_flush_ms = clock()
        # When the active segment was created and its segment.ms jitter (for time-based rolls).
        self._active_created_ms = self._last_flush_ms
        self._roll_jitter_ms = self._random_jitter()
        self._dir_flush_needed = False
        self._pending_deletes: list[tuple[int, LogSegment]] = []  # (due ms, segment)
        self._closed = False
        # Background flushes (FlushPlan) not yet finished: their segments must stay open.
        self._flushes_in_flight = 0
        # Counts truncations: a flush planned before one must not move the recovery point.
        self._truncations = 0
        #: Set by an owner that deletes files off its thread (LogManager on an event loop):
        #: with file.delete.delay.ms=0, segments are renamed and left to
        #: take_due_deletes() instead of being deleted inline.
        self.defer_file_deletes = False
        #: Called instead of flush() when flush.messages is reached (LogManager runs the
        #: flush on a thread); None: flush inline.
        self.flush_requester: Callable[[Log], None] | None = None
        #: Called after a roll with the new segment's base offset, to fsync the closed
        #: segments and advance the recovery point (Kafka's ``Log.roll`` schedules
        #: ``flushUptoOffsetExclusive``); None: the next flush_dirty_logs does it.
        self.roll_flush_requester: Callable[[Log, int], None] | None = None

    @classmethod
    def open(
        cls,
        directory: str,
        config: LogConfig | None = None,
        *,
        log_start_offset: int = 0,
        recovery_point: int = 0,
        had_clean_shutdown: bool = False,
        clock: Callable[[], int] = now_ms,
    ) -> Log:
        """Open (creating if needed) the partition in ``directory``.

        ``log_start_offset`` and ``recovery_point`` come from the log dir's
        checkpoints; ``had_clean_shutdown`` from its clean-shutdown marker.
        Without a clean shutdown, segments from the recovery point on are
        CRC-checked and truncated at the first damaged batch (see
        :mod:`pystream.storage.log_loader`).
        """
        config = config if config is not None else LogConfig()
        loaded = load_log(
            directory,
            config,
            log_start_offset_checkpoint=log_start_offset,
            recovery_point_checkpoint=recovery_point,
            had_clean_shutdown=had_clean_shutdown,
        )
        if loaded.truncated_bytes or loaded.deleted_segments:
            logger.warning(
                "Recovered %s: truncated %d bytes, deleted %d segments; log end offset %d",
                directory,
                loaded.truncated_bytes,
                loaded.deleted_segments,
                loaded.log_end_offset,
            )
        return cls(
            directory,
            config,
            loaded.segments,
            log_start_offset=loaded.log_start_offset,
            log_end_offset=loaded.log_end_offset,
            recovery_point=loaded.recovery_point,
            leader_epoch_cache=loaded.leader_epoch_cache,
            clock=clock,
            producer_state=loaded.producer_state,
            txn_index=loaded.txn_index,
        )

    # --- state -----------------------------------------------------------------------------

    @property
    def config(self) -> LogConfig:
        return self._config

    def update_config(self, config: LogConfig) -> None:
        """Use a new config; index settings apply from the next segment on, as in Kafka."""
        self._config = config
        self._roll_jitter_ms = self._random_jitter()

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._log_end_offset

    @property
    def recovery_point(self) -> int:
        return self._recovery_point

    @property
    def high_watermark(self) -> int:
        return self._high_watermark

    @high_watermark.setter
    def high_watermark(self, offset: int) -> None:
        # Clamped: it can never pass what the log has, nor fall below what it keeps.
        self._high_watermark = min(max(offset, self._log_start_offset), self._log_end_offset)

    @property
    def segments(self) -> list[LogSegment]:
        """The live segments, oldest first (a copy)."""
        return list(self._segments)

    @property
    def active_segment(self) -> LogSegment:
        return self._segments[-1]

    @property
    def size_in_bytes(self) -> int:
        """Bytes in all live segments' ``.log`` files."""
        return sum(s.size for s in self._segments)

    @property
    def leader_epoch_cache(self) -> LeaderEpochCache:
        return self._leader_epoch_cache

    @property
    def latest_epoch(self) -> int:
        """The newest leader epoch that appended, or -1."""
        return self._leader_epoch_cache.latest_epoch

    def end_offset_for_epoch(self, leader_epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: ``(epoch, end_offset)``, ``(-1, -1)`` if unknown."""
        return self._leader_epoch_cache.end_offset_for_epoch(leader_epoch, self._log_end_offset)

    @property
    def last_flush_ms(self) -> int:
        return self._last_flush_ms

    @property
    def unflushed_messages(self) -> int:
        """Offsets appended since the recovery point."""
        return self._log_end_offset - self._recovery_point

    def __repr__(self) -> str:
        return (
            f"Log({self.directory!r}, log_start_offset={self._log_start_offset}, "
            f"log_end_offset={self._log_end_offset}, high_watermark={self._high_watermark}, "
            f"segments={len(self._segments)})"
        )

    # --- append ----------------------------------------------------------------------------

    def append(
        self,
        records: bytes | bytearray | memoryview,
        leader_epoch: int,
        *,
        origin: AppendOrigin = AppendOrigin.CLIENT,
    ) -> LogAppendInfo:
        """Validate, assign offsets from the LEO, and append batches as the leader.

        ``records`` is a Produce request's batch (``origin=CLIENT``: exactly
        one batch, Kafka's client rules) or a coordinator's batches
        (``origin=COORDINATOR``: several, control batches allowed).  A
        writable buffer is patched in place (base offset, leader epoch,
        LogAppendTime); ``bytes`` is copied first.  Every record is parsed, as
        Kafka's LogValidator does.  A client batch in another codec than the
        topic's ``compression.type`` (unless ``producer``) is recompressed into
        one new batch first.  Nothing is appended if anything is wrong:
        CorruptMessageError (length, CRC, undecodable compressed data),
        InvalidRecordError (magic, record count, attributes, client rules, record
        framing, offset deltas not 0, 1, 2..., a keyless record on a compacted
        log), MessageTooLargeError (a batch over max.message.bytes, also once
        recompressed), RecordListTooLargeError (over segment.bytes),
        InvalidTimestampError (a CreateTime record outside the
        message.timestamp.*.max.ms window).  Record refusals carry Kafka's
        ``record_errors``.
        """
        self._check_open()
        config = self._config
        client = origin is AppendOrigin.CLIENT
        now = self._clock()
        target_codec = config.compression_codec if client else -1
        # Kafka's LogValidator: every record is parsed (compressed batches decompressed
        # once); CreateTime timestamps are checked per record, keys on compacted logs.
        info = core_records.validate_produce_records(
            records,
            config.max_message_bytes,
            client=client,
            walk_records=True,
            compacted=config.compact_enabled,
            now_ms=-1 if config.log_append_time else now,
            timestamp_before_max_ms=config.message_timestamp_before_max_ms,
            timestamp_after_max_ms=config.message_timestamp_after_max_ms,
            topic_partition=self._partition_name,
            keep_decompressed=target_codec >= 0,
        )
        size = info.size_in_bytes
        if target_codec >= 0 and info.codecs != 1 << target_codec:
            records = self._recompress(records, info, target_codec)
            size = len(records)
        self._check_fits_segment(size)
        producer_id = info.producer_id
        if client and producer_id >= 0:
            # Idempotent producer: one O(1) check per batch (non-idempotent ones skip it).
            duplicate = self._producer_state.check_client_batch(
                producer_id, info.producer_epoch, info.base_sequence, info.last_sequence
            )
            if duplicate is not None:
                return self._duplicate_append_info(duplicate, info.record_count)
        append_time = now if config.log_append_time else -1
        buffer = records if _writable(records) else bytearray(records)
        first_offset = self._log_end_offset
        next_offset = core_records.assign_offsets(buffer, first_offset, leader_epoch, append_time)
        last_offset = next_offset - 1
        coordinator_batches = None
        if not client:  # markers, transactional offset commits: epochs are checked
            coordinator_batches = batch_infos(buffer)
            for _, batch in coordinator_batches:
                if batch.producer_id >= 0:
                    self._producer_state.check_coordinator_batch(batch)
        if append_time >= 0:
            max_timestamp, offset_of_max_timestamp = append_time, first_offset
        else:
            max_timestamp = info.max_timestamp
            offset_of_max_timestamp = first_offset + info.offset_delta_of_max_timestamp
        segment = self._maybe_roll(size, max_timestamp, first_offset, last_offset, now)
        segment.append(last_offset, max_timestamp, offset_of_max_timestamp, buffer)
        self._log_end_offset = next_offset
        self._leader_epoch_cache.assign(leader_epoch, first_offset)
        if coordinator_batches is not None:
            self._update_producers(coordinator_batches, segment)
        elif producer_id >= 0:
            self._producer_state.update_client_batch(
                producer_id,
                info.producer_epoch,
                info.last_sequence,
                first_offset,
                last_offset,
                max_timestamp,
                info.is_transactional,
            )
        self._maybe_flush_for_messages()
        return LogAppendInfo(
            first_offset,
            last_offset,
            max_timestamp,
            offset_of_max_timestamp,
            append_time,
            info.record_count,
            size,
            self._log_start_offset,
        )

    def append_as_follower(self, records: bytes | bytearray | memoryview) -> LogAppendInfo:
        """Append batches that already carry offsets (replication from the leader).

        The batches are validated (CRC, length, magic, count) but not
        size-limited: the leader accepted them.  Their offsets must increase
        (OffsetsOutOfOrderError) and start at or after the LEO
        (UnexpectedAppendOffsetError: truncate first).  The leader-epoch cache
        learns each batch's epoch.  An empty ``records`` is a no-op.
        """
        self._check_open()
        if memoryview(records).nbytes == 0:
            return LogAppendInfo(-1, -1, -1, -1, -1, 0, 0, self._log_start_offset)
        info = core_records.validate_produce_records(records, 0, client=False)
        size = info.size_in_bytes
        first_offset, last_offset = info.first_offset, info.last_offset
        if not info.offsets_monotonic:
            raise OffsetsOutOfOrderError(
                f"Out of order offsets in follower append to {self.directory}: batches "
                f"{first_offset}..{last_offset} do not have increasing offsets"
            )
        if first_offset < self._log_end_offset:
            raise UnexpectedAppendOffsetError(
                f"Follower append to {self.directory} starts at offset {first_offset}, below the "
                f"log end offset {self._log_end_offset}; truncate the log first"
            )
        if last_offset - first_offset > INT32_MAX:
            raise InvalidRecordError(
                f"Follower append spans offsets {first_offset}..{last_offset}, more than a "
                "segment can index; send fewer batches per append"
            )
        self._check_fits_segment(size)
        max_timestamp = info.max_timestamp
        offset_of_max_timestamp = info.shallow_offset_of_max_timestamp
        segment = self._maybe_roll(size, max_timestamp, first_offset, last_offset, self._clock())
        segment.append(last_offset, max_timestamp, offset_of_max_timestamp, records)
        self._log_end_offset = last_offset + 1
        if info.batch_count == 1:
            self._leader_epoch_cache.assign(
                core_records.read_batch_header(records).partition_leader_epoch, first_offset
            )
        else:
            for header in _batch_headers(records):
                self._leader_epoch_cache.assign(header.partition_leader_epoch, header.base_offset)
        if info.producer_id >= 0 or info.batch_count > 1:
            self._update_producers(batch_infos(records), segment)
        self._maybe_flush_for_messages()
        return LogAppendInfo(
            first_offset,
            last_offset,
            max_timestamp,
            offset_of_max_timestamp,
            -1,
            info.record_count,
            size,
            self._log_start_offset,
        )

    def _duplicate_append_info(self, batch: BatchMetadata, record_count: int) -> LogAppendInfo:
        # A retry of a batch already written: its original offsets, nothing stored twice.
        return LogAppendInfo(
            batch.first_offset,
            batch.last_offset,
            batch.timestamp,
            batch.last_offset,
            -1,
            record_count,
            0,
            self._log_start_offset,
        )

    def _update_producers(self, batches: list[tuple[int, BatchInfo]], segment: LogSegment) -> None:
        """Producer state after appending ``batches`` (with their offsets) to ``segment``."""
        state = self._producer_state
        state.prune_replicated(self._high_watermark)  # bounded even if nobody fetches the LSO
        for base_offset, batch in batches:
            if batch.producer_id < 0:
                continue
            completed = state.update(base_offset, batch)
            if completed is not None and completed.is_aborted:
                self._txn_index.append(
                    segment.base_offset,
                    AbortedTxn(
                        completed.producer_id,
                        completed.first_offset,
                        completed.last_offset,
                        state.stable_offset_after(completed),
                    ),
                )

    def _check_fits_segment(self, size: int) -> None:
        if size > self._config.segment_bytes:
            raise RecordListTooLargeError(
                f"Batches of {size} bytes in one append to {self.directory} exceed "
                f"segment.bytes={self._config.segment_bytes}; send smaller requests or raise "
                "segment.bytes"
            )

    def _recompress(
        self,
        records: bytes | bytearray | memoryview,
        info: core_records.AppendInfo,
        codec: int,
    ) -> bytearray:
        # compression.type names another codec than the producer's: one new batch in that
        # codec (Kafka's buildRecordsAndAssignOffsets), measured against max.message.bytes
        # again as Kafka does after a conversion.
        config = self._config
        batch = core_records.recompress_batch(
            records, codec, info.decompressed, config.compression_level
        )
        if len(batch) > config.max_message_bytes:
            raise MessageTooLargeError(
                f"Message batch size is {len(batch)} bytes in append to partition "
                f"{self._partition_name} which exceeds the maximum configured size of "
                f"{config.max_message_bytes} once recompressed to compression.type="
                f"{config.compression_type}; send smaller batches or raise max.message.bytes"
            )
        return bytearray(batch)

    def _maybe_flush_for_messages(self) -> None:
        if self.needs_flush_for_messages():
            if self.flush_requester is not None:
                self.flush_requester(self)
            else:
                self.flush()

    def needs_flush_for_messages(self) -> bool:
        """True when ``flush.messages`` offsets or more are not fsynced yet."""
        return self._log_end_offset - self._recovery_point >= self._config.flush_messages

    # --- rolling ---------------------------------------------------------------------------

    def _random_jitter(self) -> int:
        jitter = self._config.segment_jitter_ms
        return random.randrange(min(jitter, self._config.max_segment_ms)) if jitter > 0 else 0

    def _maybe_roll(
        self, size: int, max_timestamp: int, first_offset: int, last_offset: int, now: int
    ) -> LogSegment:
        """The segment to append to, after rolling if Kafka's ``shouldRoll`` says so."""
        segment = self._segments[-1]
        if last_offset - segment.base_offset > INT32_MAX or last_offset < segment.base_offset:
            return self.roll(first_offset)  # offsets must fit the index's 32-bit relative offsets
        if segment.size == 0:
            return segment
        config = self._config
        first_batch_timestamp = segment.first_batch_timestamp
        if first_batch_timestamp >= 0:
            waited = max_timestamp - first_batch_timestamp
        else:
            waited = now - self._active_created_ms
        if (
            segment.size > config.segment_bytes - size
            or waited > config.max_segment_ms - self._roll_jitter_ms
            or segment.should_roll_for_index()
        ):
            return self.roll(first_offset)
        return segment

    def _replace_empty_active(self, base_offset: int, now: int) -> LogSegment:
        empty = self._segments.pop()
        self._base_offsets.pop()
        empty.delete()
        return self._add_segment(base_offset, now)

    def _add_segment(self, base_offset: int, now: int) -> LogSegment:
        segment = open_segment(self.directory, base_offset, self._config)
        self._segments.append(segment)
        self._base_offsets.append(base_offset)
        self._active_created_ms = now
        self._roll_jitter_ms = self._random_jitter()
        self._dir_flush_needed = True
        return segment

    def roll(
        self, expected_next_offset: int | None = None, *, flush_closed: bool = True
    ) -> LogSegment:
        """Start a new active segment at the LEO (or ``expected_next_offset`` if higher).

        An empty active segment is reused (or replaced) rather than rolled.  The closed
        segment's indexes are trimmed; it is fsynced after the roll, as Kafka's async
        roll flush: by ``roll_flush_requester`` if set (LogManager: on its log-io
        thread), else by the next LogManager.flush_dirty_logs.  The recovery point then
        moves to the new segment's base offset.  ``flush_closed=False``: the closed
        segments are about to be deleted, no fsync for them.
        """
        self._check_open()
        new_base = max(self._log_end_offset, expected_next_offset or 0)
        active = self._segments[-1]
        if active.size == 0:
            # Never leave an empty segment behind: reuse it, or replace it at the new base.
            if active.base_offset == new_base:
                return active
            return self._replace_empty_active(new_base, self._clock())
        active.offset_index.trim_to_valid_size()
        active.time_index.trim_to_valid_size()
        logger.debug("Rolling %s at offset %d", self.directory, new_base)
        segment = self._add_segment(new_base, self._clock())
        # As Kafka: a producer snapshot per roll, so recovery replays at most the active segment.
        try:
            self._producer_state.take_snapshot(new_base)
        except OSError as exc:  # only costs a longer replay at the next recovery
            logger.warning("Could not write the producer snapshot of %s: %s", self.directory, exc)
        if flush_closed and self.roll_flush_requester is not None:
            self.roll_flush_requester(self, new_base)
        return segment

    # --- producers and transactions --------------------------------------------------------

    @property
    def producer_state(self) -> ProducerStateManager:
        """Idempotent/transactional producers of this partition (DescribeProducers)."""
        return self._producer_state

    @property
    def last_stable_offset(self) -> int:
        """The LSO: read_committed consumers see only offsets below it (<= high watermark)."""
        return self._producer_state.last_stable_offset(self._high_watermark)

    def remove_expired_producers(self, now_ms: int, expiration_ms: int) -> int:
        """Forget producers idle for ``producer.id.expiration.ms``; returns how many."""
        return self._producer_state.remove_expired_producers(now_ms, expiration_ms)

    def collect_aborted_transactions(
        self, fetch_offset: int, data: FetchDataInfo
    ) -> list[AbortedTxn]:
        """The aborted transactions a read_committed consumer needs to skip in ``data``."""
        if not len(self._txn_index) or data.records is None or data.segment is None:
            return []
        segment = data.segment
        end = data.records.position + data.records.length
        # The offset just past the data: the next batch's base offset, or the segment's end.
        if end + core_records.BATCH_OVERHEAD <= segment.size:
            with segment.view(end, core_records.BATCH_OVERHEAD) as view:
                upper_bound = core_records.read_batch_header(view).base_offset
        else:
            upper_bound = segment.next_offset
        return self._txn_index.collect(fetch_offset, upper_bound)

    # --- read ------------------------------------------------------------------------------

    def read(
        self,
        start_offset: int,
        max_bytes: int,
        max_offset: int | None = None,
        min_one_batch: bool = True,
    ) -> FetchDataInfo:
        """Whole batches from ``start_offset``: at most ``max_bytes`` (but one whole batch if
        ``min_one_batch``), never reaching ``max_offset`` (exclusive, e.g. the high watermark).

        Raises OffsetOutOfRangeError outside [log_start_offset, log_end_offset];
        reading at the LEO, or at/after ``max_offset``, returns an empty result.
        The first batch may start before ``start_offset`` (clients skip records).
        """
        log_end_offset = self._log_end_offset
        if start_offset > log_end_offset or start_offset < self._log_start_offset:
            raise OffsetOutOfRangeError(
                f"Offset {start_offset} is out of range for {self.directory}: the log has "
                f"[{self._log_start_offset}, {log_end_offset}); reset the consumer's position"
            )
        if max_offset is not None and max_offset >= log_end_offset:
            max_offset = None  # the common case (high watermark = LEO): no bound to locate
        if start_offset == log_end_offset or (
            max_offset is not None and start_offset >= max_offset
        ):
            return FetchDataInfo(start_offset, None, -1)
        segments = self._segments
        # The log start offset may lie below the first segment (e.g. after a follower's
        # far-ahead roll replaced an empty segment): start at the first one then.
        i = max(bisect.bisect_right(self._base_offsets, start_offset) - 1, 0)
        while i < len(segments):
            segment = segments[i]
            max_position = -1
            if max_offset is not None:
                if max_offset <= segment.base_offset:
                    break
                bound = segment.translate_offset(max_offset)
                if bound is not None:
                    max_position = bound.position
            found = segment.read(start_offset, max_bytes, max_position, min_one_batch)
            if found is not None:
                if found.length == 0:  # the first batch does not fit: nothing to send
                    return FetchDataInfo(start_offset, None, segment.base_offset)
                return FetchDataInfo(start_offset, found, segment.base_offset, segment)
            i += 1  # nothing at or after start_offset here (e.g. a compacted gap): next one
        return FetchDataInfo(start_offset, None, -1)

    def fetch_offset_by_timestamp(self, timestamp: int) -> TimestampAndOffset | None:
        """ListOffsets: -2 earliest, -1 latest, -3 the max timestamp, else the first offset
        whose timestamp is >= ``timestamp`` (None if there is none)."""
        cache = self._leader_epoch_cache
        if timestamp in (EARLIEST_TIMESTAMP, EARLIEST_LOCAL_TIMESTAMP):
            offset = self._log_start_offset
            return TimestampAndOffset(-1, offset, cache.epoch_for_offset(offset))
        if timestamp == LATEST_TIMESTAMP:
            offset = self._log_end_offset
            return TimestampAndOffset(-1, offset, cache.latest_epoch)
        if timestamp == MAX_TIMESTAMP:
            newest = max(self._segments, key=lambda s: s.max_timestamp)
            if newest.max_timestamp < 0:
                return None
            candidates, timestamp = [newest], newest.max_timestamp
        else:
            candidates = [s for s in self._segments if s.max_timestamp >= timestamp]
        for segment in candidates:
            found = segment.find_offset_by_timestamp(timestamp, self._log_start_offset)
            if found is not None:
                offset, found_timestamp = self._first_record_at(segment, found[0], timestamp)
                return TimestampAndOffset(found_timestamp, offset, cache.epoch_for_offset(offset))
        return None

    def _first_record_at(
        self, segment: LogSegment, batch_base_offset: int, timestamp: int
    ) -> tuple[int, int]:
        # The batch's max timestamp reaches `timestamp`; the answer is its first record that
        # does (Kafka iterates the batch, decompressing if needed).
        batch = segment.translate_offset(batch_base_offset)
        assert batch is not None
        view = segment.view(batch.position, batch.size)
        for record in core_records.iter_records(view, check_crc=False):
            if record.timestamp >= timestamp and record.offset >= self._log_start_offset:
                return record.offset, record.timestamp
        return max(batch.base_offset, self._log_start_offset), batch.max_timestamp

    # --- truncation and deletion -----------------------------------------------------------

    def truncate_to(self, offset: int) -> bool:
        """Drop everything at and after ``offset`` (a follower diverged); True if anything was.

        A batch containing ``offset`` is dropped whole, so the LEO becomes
        ``offset`` at a batch boundary and the start of that batch otherwise.
        An offset below the first segment empties the log and restarts it there.
        """
        self._check_open()
        if offset < 0:
            raise ValueError(f"cannot truncate {self.directory} to negative offset {offset}")
        if offset >= self._log_end_offset:
            return False
        if self._segments[0].base_offset > offset:
            self.truncate_fully_and_start_at(offset)
            return True
        self._truncations += 1
        keep = bisect.bisect_right(self._base_offsets, offset)
        doomed = self._segments[keep:]
        del self._segments[keep:]
        del self._base_offsets[keep:]
        self._schedule_delete(doomed)
        active = self._segments[-1]
        active.truncate_to(offset)
        # The segment drops a batch containing `offset` whole, so the LEO is what it kept
        # (Kafka says `offset`; a restart would find this value, so use it now).
        end = active.next_offset
        self._log_end_offset = end
        self._log_start_offset = min(self._log_start_offset, end)
        self._recovery_point = min(self._recovery_point, end)
        self._high_watermark = min(self._high_watermark, end)
        self._leader_epoch_cache.truncate_from_end(end)
        self._reload_producer_state()
        return True

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Delete every segment and restart the log empty at ``offset``."""
        self._check_open()
        if offset < 0:
            raise ValueError(f"cannot restart {self.directory} at negative offset {offset}")
        self._truncations += 1
        doomed = self._segments
        self._segments, self._base_offsets = [], []
        self._schedule_delete(doomed)
        self._add_segment(offset, self._clock())
        self._log_start_offset = self._log_end_offset = offset
        self._recovery_point = self._high_watermark = offset
        self._leader_epoch_cache.clear()
        delete_snapshots(self.directory, below=INT64_MAX)  # they describe data that is gone
        self._reload_producer_state()

    def _reload_producer_state(self) -> None:
        # Truncation removed batches (maybe markers): rebuild from a snapshot below the end.
        self._producer_state, self._txn_index = load_producer_state(
            self.directory, self._segments, self._log_start_offset, self._log_end_offset
        )

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords: move the log start offset to ``offset`` and delete segments wholly
        below it; returns the new log start offset.

        Raises OffsetOutOfRangeError if ``offset`` is past the high watermark.
        """
        self._check_open()
        if offset > self._high_watermark or offset < 0:
            raise OffsetOutOfRangeError(
                f"Cannot delete records of {self.directory} before offset {offset}: it must lie "
                f"in [0, high watermark {self._high_watermark}]"
            )
        if offset > self._log_start_offset:
            self._advance_log_start_offset(offset)
            self._delete_segments(retention.log_start_offset_breached(offset), "log start offset")
        return self._log_start_offset

    def delete_old_segments(self, now_ms: int | None = None) -> int:
        """Retention: delete closed segments that breach the log start offset, and with
        cleanup.policy=delete, ``retention.bytes`` and ``retention.ms``; returns how many.

        Only segments wholly below the high watermark go; when all would, a new
        active segment is rolled first.  The log start offset moves to the first
        kept segment.  Files are renamed ``.deleted`` now and removed after
        ``file.delete.delay.ms`` (see :meth:`delete_pending_segments`).
        """
        self._check_open()
        now = self._clock() if now_ms is None else now_ms
        deleted = self._delete_segments(
            retention.log_start_offset_breached(self._log_start_offset), "log start offset"
        )
        if self._config.delete_enabled:
            deleted += self._delete_segments(
                retention.retention_size_breached(self.size_in_bytes, self._config.retention_bytes),
                "retention.bytes",
            )
            deleted += self._delete_segments(
                retention.retention_ms_breached(now, self._config.retention_ms), "retention.ms"
            )
        return deleted

    def _delete_segments(self, predicate: retention.SegmentPredicate, reason: str) -> int:
        doomed = retention.deletable_segments(
            self._segments, self._high_watermark, self._log_end_offset, predicate
        )
        if not doomed:
            return 0
        if len(doomed) == len(self._segments):
            # A log always has an active segment; the closed ones go, so no fsync for them
            # (the recovery point moves up with the log start offset below).
            self.roll(flush_closed=False)
        n = len(doomed)
        del self._segments[:n]
        del self._base_offsets[:n]
        logger.info(
            "Deleting %d segments of %s (%s); log start offset %d -> %d",
            n,
            self.directory,
            reason,
            self._log_start_offset,
            max(self._log_start_offset, self._segments[0].base_offset),
        )
        if self._segments[0].base_offset > self._log_start_offset:
            self._advance_log_start_offset(self._segments[0].base_offset)
        self._schedule_delete(doomed)
        return n

    def _advance_log_start_offset(self, offset: int) -> None:
        # Nothing below the log start offset is kept, so it is "flushed" and "replicated".
        delete_snapshots(self.directory, below=offset)
        self._log_start_offset = offset
        self._high_watermark = max(self._high_watermark, offset)
        self._recovery_point = max(self._recovery_point, offset)
        self._leader_epoch_cache.truncate_from_start(offset)

    def _schedule_delete(self, segments: list[LogSegment]) -> None:
        # Rename now so a restart never loads them; remove the files later (Kafka's
        # file.delete.delay.ms).  A fetch still sending from a segment holds its .log
        # descriptor (FileHandle), so even an early removal leaves its bytes readable.
        delay = self._config.file_delete_delay_ms
        due = self._clock() + max(delay, 0)
        self._txn_index.delete_segments((s.base_offset for s in segments), self._base_offsets)
        # Deleted inline only if nobody else may use them: a background flush may be
        # fsyncing them, and an owner on an event loop deletes files from a thread.
        inline = delay <= 0 and not self.defer_file_deletes and not self._flushes_in_flight
        for segment in segments:
            if inline:
                segment.delete()
            else:
                segment.change_file_suffix("", DELETED_SUFFIX)
                self._pending_deletes.append((due, segment))

    def delete_pending_segments(self, now_ms: int | None = None) -> int:
        """Remove the files of deleted segments whose delay has passed; returns how many."""
        due = self.take_due_deletes(now_ms)
        delete_segment_files(due)
        return len(due)

    def take_due_deletes(self, now_ms: int | None = None) -> list[LogSegment]:
        """Hand over the deleted segments whose delay has passed: the caller removes their
        files (:func:`delete_segment_files`, from any thread); the log forgets them.

        Nothing is handed over while a background flush is out (it may hold them).
        """
        if self._flushes_in_flight:
            return []
        now = self._clock() if now_ms is None else now_ms
        due = [s for t, s in self._pending_deletes if t <= now]
        if due:
            self._pending_deletes = [(t, s) for t, s in self._pending_deletes if t > now]
        return due

    # --- log cleaner hooks (see storage.cleaner_job) ------------------------------------------

    def replace_segments(self, old: list[LogSegment], new: LogSegment) -> None:
        """The log cleaner's swap: ``new`` (a cleaned merge of ``old``, same base offset)
        takes the place of the contiguous closed segments ``old``, which are deleted as by
        retention.  Offsets do not change, so readers see the same records minus those
        compaction removed.  The caller renamed ``new`` to ``.swap`` first and gives it its
        final name after, so that recovery can finish an interrupted swap.  Raises
        ValueError if ``old`` are not contiguous closed segments of this log.
        """
        self._check_open()
        segments = self._segments
        start = next((i for i, s in enumerate(segments) if s is old[0]), -1)
        end = start + len(old)
        if (
            start < 0
            or end >= len(segments)
            or any(a is not b for a, b in zip(segments[start:end], old, strict=True))
            or new.base_offset != old[0].base_offset
        ):
            raise ValueError(f"cannot replace segments of {self.directory}: not closed segments")
        segments[start:end] = [new]
        self._base_offsets[start:end] = [new.base_offset]
        self._schedule_delete(list(old))

    def forget_aborted_transactions(self, markers: Iterable[tuple[int, int]]) -> None:
        """The log cleaner dropped these ABORT markers ``(producer id, offset)``: their
        transactions leave the ``.txnindex`` too, as in Kafka (whose cleaner indexes only
        the markers it keeps).  A read_committed consumer told of an aborted transaction
        skips that producer's batches until its ABORT marker: with the marker gone it would
        skip the producer's later, committed records."""
        self._txn_index.remove_ended_at(markers)

    def aborted_transactions(self, start_offset: int, end_offset: int) -> list[AbortedTxn]:
        """Aborted transactions overlapping [start_offset, end_offset) (``.txnindex``)."""
        return self._txn_index.collect(start_offset, end_offset)

    # --- flush, close ----------------------------------------------------------------------

    def flush(self, up_to_offset: int | None = None) -> None:
        """fsync segments holding offsets in [recovery_point, up_to_offset) (default: the LEO)
        and advance the recovery point there."""
        self._check_open()
        target = self._log_end_offset
        if up_to_offset is not None:
            target = min(up_to_offset, target)
        if target > self._recovery_point:
            first = max(bisect.bisect_right(self._base_offsets, self._recovery_point) - 1, 0)
            last = bisect.bisect_left(self._base_offsets, target)
            try:
                for segment in self._segments[first:last]:
                    segment.flush()
                self._txn_index.flush()
                if self._dir_flush_needed:
                    fsync_directory(self.directory)  # new segment files must survive a crash
                    self._dir_flush_needed = False
            except OSError as exc:
                raise KafkaStorageError(f"Cannot flush {self.directory}: {exc}") from exc
            self._recovery_point = target
        self._last_flush_ms = self._clock()

    def plan_flush(self, up_to_offset: int | None = None) -> FlushPlan:
        """Start a flush to ``up_to_offset`` (default: the LEO) whose fsyncs run elsewhere.

        Call :meth:`FlushPlan.run` (e.g. on a worker thread), then :meth:`finish_flush`
        with the plan on the log's own thread, always (also when run() failed): until
        then the planned segments stay open, so deleting them is deferred.
        """
        self._check_open()
        target = self._log_end_offset
        if up_to_offset is not None:
            target = min(up_to_offset, target)
        segments: list[LogSegment] = []
        txn_paths: list[str] = []
        directory = None
        if target > self._recovery_point:
            first = max(bisect.bisect_right(self._base_offsets, self._recovery_point) - 1, 0)
            last = bisect.bisect_left(self._base_offsets, target)
            segments = self._segments[first:last]
            txn_paths = self._txn_index.take_unflushed()
            if self._dir_flush_needed:
                directory = self.directory
                self._dir_flush_needed = False
        self._flushes_in_flight += 1
        return FlushPlan(self, target, segments, txn_paths, directory, self._truncations)

    def finish_flush(self, plan: FlushPlan) -> None:
        """Apply a flush whose fsyncs ran: move the recovery point to its target, unless the
        log was truncated meanwhile (then the fsynced offsets may hold other data now).
        A failed plan gives its work back to the next flush."""
        self._flushes_in_flight -= 1
        if self._closed:
            return
        if not plan.ok:
            self._txn_index.mark_unflushed(plan.txn_index_paths)
            if plan.directory is not None:
                self._dir_flush_needed = True
            return
        if plan.truncations == self._truncations and plan.target > self._recovery_point:
            self._recovery_point = plan.target
        self._last_flush_ms = self._clock()

    @property
    def flush_in_flight(self) -> bool:
        """True while a :class:`FlushPlan` of this log is not finished."""
        return self._flushes_in_flight > 0

    def close(self) -> None:
        """Close every segment (trimming the active one's indexes); pending deletes finish now."""
        if self._closed:
            return
        self._closed = True
        try:
            # Clean shutdown: the next open needs no replay to rebuild the producer state.
            self._producer_state.take_snapshot(self._log_end_offset)
        except OSError as exc:
            logger.warning("Could not write the producer snapshot of %s: %s", self.directory, exc)
        for _, segment in self._pending_deletes:
            _delete_quietly(segment)
        self._pending_deletes = []
        for segment in self._segments:
            segment.close()

    def delete(self) -> None:
        """Close the log, delete its files and remove its directory.

        Works after the directory was renamed (LogManager's ``-delete``
        rename): files no longer at their paths are just closed.
        """
        self._closed = True
        for _, segment in self._pending_deletes:
            _delete_quietly(segment)
        self._pending_deletes = []
        for segment in self._segments:
            _delete_quietly(segment)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _check_open(self) -> None:
        if self._closed:
            raise KafkaStorageError(f"Log {self.directory} is closed")


def _batch_headers(records: bytes | bytearray | memoryview) -> Iterator[core_records.BatchHeader]:
    """Headers of validated, concatenated batches (no CRC work)."""
    size = memoryview(records).nbytes
    position = 0
    while position < size:
        header = core_records.read_batch_header(records, position)
        yield header
        position += header.size


def _writable(buffer: bytes | bytearray | memoryview) -> bool:
    if isinstance(buffer, bytearray):
        return True
    return isinstance(buffer, memoryview) and not buffer.readonly


def delete_segment_files(segments: list[LogSegment]) -> None:
    """Close and remove deleted segments' files (any thread: nobody else holds them)."""
    for segment in segments:
        _delete_quietly(segment)


def _fsync_file(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # removed meanwhile (its segment was deleted): nothing to keep
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _delete_quietly(segment: LogSegment) -> None:
    try:
        segment.delete()
    except OSError as exc:  # already gone (e.g. the directory was deleted): nothing to keep
        logger.warning("Could not delete segment %s: %s", segment.log_path, exc)
