"""Which log to clean next, and how far each log is cleaned (Kafka's ``LogCleanerManager``).

Every log with ``cleanup.policy`` containing ``compact`` has two regions:

* the *clean* section ``[log start, first dirty offset)``: already compacted;
  ``cleaner-offset-checkpoint`` in each log dir remembers the first dirty
  offset (``topic partition offset`` lines, like the other checkpoints);
* the *dirty* section ``[first dirty offset, first uncleanable offset)``: the
  part the next clean deduplicates.  It ends at the first of: the active
  segment (never cleaned), the last stable offset (at most the high
  watermark: followers may not have more, and no transaction may be open in
  what is cleaned), and the first segment whose newest record is younger than
  ``min.compaction.lag.ms``.

The *dirty ratio* is dirty bytes / (clean + dirty bytes), counted in whole
segments.  The cleaner picks, among logs not being cleaned, the one with the
highest ratio above ``min.cleanable.dirty.ratio``; a log whose oldest dirty
segment is older than ``max.compaction.lag.ms`` is cleaned whatever its ratio,
and so is a log whose retained tombstones' delete horizon has passed (they
can go now).  Horizons are learnt by cleans and checkpointed next to the
first dirty offsets in ``cleaner-delete-horizon-checkpoint`` (the same
``topic partition value`` format, the value being the earliest delete horizon
in ms; a log without retained tombstones has no line), so a restart does not
clean every compacted log again.  A log dir with an offset checkpoint but no
horizon file (written by an older version) cleans its logs once to learn them.

Both files are written after each clean that changed them, atomically, on the
log manager's log-io thread when on an event loop (they are fsynced).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from pystream.clock import now_ms
from pystream.storage import retention
from pystream.storage.checkpoints import CorruptCheckpointError, OffsetCheckpointFile
from pystream.storage.log import Log
from pystream.storage.log_manager import LogManager, TopicPartition

logger = logging.getLogger(__name__)

CLEANER_OFFSET_CHECKPOINT = "cleaner-offset-checkpoint"
CLEANER_HORIZON_CHECKPOINT = "cleaner-delete-horizon-checkpoint"


def first_dirty_offset(log: Log, checkpoint: int | None) -> int:
    """Where the dirty section starts: the checkpoint if it lies within the log, else the
    log start offset (new log, retention moved past it, or the log was truncated below it)."""
    start = log.log_start_offset
    if checkpoint is None or checkpoint < start or checkpoint > log.log_end_offset:
        return start
    return checkpoint


def first_uncleanable_offset(log: Log, first_dirty: int, now_ms: int) -> int:
    """Where the dirty section ends (see the module docstring); at least ``first_dirty``."""
    segments = log.segments
    bound = min(segments[-1].base_offset, log.last_stable_offset)
    lag = log.config.min_compaction_lag_ms
    if lag > 0:
        for segment, following in zip(segments, segments[1:], strict=False):
            if following.base_offset <= first_dirty:
                continue  # wholly clean
            if retention.largest_timestamp(segment) > now_ms - lag:
                bound = min(bound, segment.base_offset)
                break
    return max(bound, first_dirty)


def max_compaction_delay_ms(log: Log, first_dirty: int, now_ms: int) -> int:
    """How long past ``max.compaction.lag.ms`` the oldest dirty closed segment is (0: not)."""
    lag = max(log.config.max_compaction_lag_ms, 0)
    segments = log.segments
    timestamps = [
        s.first_batch_timestamp
        for s, following in zip(segments, segments[1:], strict=False)
        if following.base_offset > first_dirty and s.first_batch_timestamp > 0
    ]
    clean_until = now_ms - lag
    earliest = min(timestamps, default=None)
    return clean_until - earliest if earliest is not None and earliest < clean_until else 0


def bytes_between(log: Log, from_offset: int, to_offset: int) -> int:
    """Bytes of the segments holding offsets in ``[from_offset, to_offset)``."""
    segments = log.segments
    total = 0
    for i, segment in enumerate(segments):
        end = segments[i + 1].base_offset if i + 1 < len(segments) else log.log_end_offset
        if segment.base_offset < to_offset and end > from_offset:
            total += segment.size
    return total


@dataclass(frozen=True)
class LogToClean:
    """A compacted log and its sections, as the manager sees them now."""

    topic_partition: TopicPartition
    log: Log
    first_dirty_offset: int
    first_uncleanable_offset: int
    clean_bytes: int
    cleanable_bytes: int
    needs_compaction_now: bool  # max.compaction.lag.ms passed
    horizon_due: bool  # retained tombstones may go now

    @property
    def total_bytes(self) -> int:
        return self.clean_bytes + self.cleanable_bytes

    @property
    def cleanable_ratio(self) -> float:
        """The dirty ratio: dirty bytes / all bytes (0 for an empty log)."""
        return self.cleanable_bytes / self.total_bytes if self.total_bytes else 0.0

    @property
    def is_cleanable(self) -> bool:
        if self.total_bytes == 0:
            return False
        return (
            (self.needs_compaction_now and self.cleanable_bytes > 0)
            or self.cleanable_ratio > self.log.config.min_cleanable_dirty_ratio
            or self.horizon_due
        )


@dataclass(frozen=True)
class CleanOutcome:
    """What a finished clean tells the manager."""

    end_offset: int  # the new first dirty offset
    earliest_horizon_ms: int | None  # of retained tombstones / markers, None: none
    progressed: bool  # the clean moved the first dirty offset or rewrote something


def describe(ltc: LogToClean) -> str:
    tp = ltc.topic_partition
    return (
        f"{tp[0]}-{tp[1]} (dirty ratio {ltc.cleanable_ratio:.2f}, dirty "
        f"[{ltc.first_dirty_offset}, {ltc.first_uncleanable_offset}))"
    )


class LogCleanerManager:
    """Tracks first dirty offsets, cleans in progress and failures; picks the next log.

    Called from the thread that owns the logs (the broker's event loop).
    """

    def __init__(
        self,
        log_manager: LogManager,
        *,
        clock: Callable[[], int] = now_ms,
        retry_backoff_ms: int = 15_000,
    ) -> None:
        self._log_manager = log_manager
        self._clock = clock
        self._retry_backoff_ms = retry_backoff_ms
        self._checkpoints: dict[TopicPartition, int] = {}
        self._in_progress: set[TopicPartition] = set()
        self._skip_until: dict[TopicPartition, int] = {}  # after a failure or a no-op clean
        self._horizons: dict[TopicPartition, int] = {}
        # The Log object each state belongs to: a deleted and re-created partition starts over.
        self._known: dict[TopicPartition, Log] = log_manager.logs()
        for log_dir in log_manager.log_dirs:
            self._load_checkpoints(log_dir)

    def _load_checkpoints(self, log_dir: str) -> None:
        try:
            entries = OffsetCheckpointFile(os.path.join(log_dir, CLEANER_OFFSET_CHECKPOINT)).read()
        except CorruptCheckpointError as exc:
            logger.warning("%s; every compacted log in %s is cleaned from its start", exc, log_dir)
            return
        horizon_path = os.path.join(log_dir, CLEANER_HORIZON_CHECKPOINT)
        horizons: dict[TopicPartition, int] | None = None
        if os.path.exists(horizon_path):
            try:
                horizons = OffsetCheckpointFile(horizon_path).read()
            except CorruptCheckpointError as exc:
                logger.warning("%s; the cleaned logs of %s are cleaned once more", exc, log_dir)
        for tp, offset in entries.items():
            if self._log_manager.log_dir_of(*tp) != log_dir:
                continue
            self._checkpoints[tp] = offset
            if horizons is None:
                # Cleaned before, horizons unknown: it may hold stamped tombstones; one
                # clean rediscovers them (and drops the due ones).
                self._horizons[tp] = 0
            elif tp in horizons:
                self._horizons[tp] = horizons[tp]

    # --- state ----------------------------------------------------------------------------

    def _compacted_logs(self) -> dict[TopicPartition, Log]:
        logs = self._log_manager.logs()
        for tp, log in logs.items():
            if self._known.get(tp) is not log:  # a new log under an old name
                self._known[tp] = log
                self._checkpoints.pop(tp, None)
                self._horizons.pop(tp, None)
                self._skip_until.pop(tp, None)
        return {tp: log for tp, log in logs.items() if log.config.compact_enabled}

    def checkpoint_offset(self, topic: str, partition: int) -> int | None:
        """The checkpointed first dirty offset of a partition, or None."""
        return self._checkpoints.get((topic, partition))

    def log_to_clean(self, tp: TopicPartition, log: Log, now_ms: int) -> LogToClean:
        """The sections of ``log`` now."""
        first_dirty = first_dirty_offset(log, self._checkpoints.get(tp))
        first_uncleanable = first_uncleanable_offset(log, first_dirty, now_ms)
        horizon = self._horizons.get(tp)
        return LogToClean(
            topic_partition=tp,
            log=log,
            first_dirty_offset=first_dirty,
            first_uncleanable_offset=first_uncleanable,
            clean_bytes=bytes_between(log, log.log_start_offset, first_dirty),
            cleanable_bytes=bytes_between(log, first_dirty, first_uncleanable),
            needs_compaction_now=max_compaction_delay_ms(log, first_dirty, now_ms) > 0,
            horizon_due=horizon is not None and horizon <= now_ms,
        )

    def dirty_ratio(self, topic: str, partition: int) -> float | None:
        """The partition's dirty ratio now (None: no such compacted log)."""
        tp = (topic, partition)
        log = self._compacted_logs().get(tp)
        if log is None:
            return None
        return self.log_to_clean(tp, log, self._clock()).cleanable_ratio

    # --- choosing and finishing -------------------------------------------------------------

    def grab_filthiest_log(self, now_ms: int | None = None) -> LogToClean | None:
        """The cleanable log with the highest dirty ratio (forced ones first), marked in
        progress; None if no log needs cleaning."""
        now = self._clock() if now_ms is None else now_ms
        candidates = []
        for tp, log in self._compacted_logs().items():
            if tp in self._in_progress or self._skip_until.get(tp, 0) > now:
                continue
            ltc = self.log_to_clean(tp, log, now)
            if ltc.is_cleanable:
                candidates.append(ltc)
        if not candidates:
            return None
        filthiest = max(candidates, key=lambda c: (c.needs_compaction_now, c.cleanable_ratio))
        self._in_progress.add(filthiest.topic_partition)
        return filthiest

    def done_cleaning(self, ltc: LogToClean, outcome: CleanOutcome) -> None:
        """Record a finished clean: checkpoint its end offset, remember the tombstone horizon."""
        tp = ltc.topic_partition
        self._in_progress.discard(tp)
        if self._known.get(tp) is not ltc.log:
            return  # deleted meanwhile
        before = (self._checkpoints.get(tp), self._horizons.get(tp))
        if outcome.earliest_horizon_ms is None:
            self._horizons.pop(tp, None)
        else:
            self._horizons[tp] = outcome.earliest_horizon_ms
        if not outcome.progressed:
            self._skip_until[tp] = self._clock() + self._retry_backoff_ms
        self._checkpoints[tp] = outcome.end_offset
        log_dir = self._log_manager.log_dir_of(*tp)
        if log_dir is not None and before != (outcome.end_offset, self._horizons.get(tp)):
            # Taken now, written (fsynced) on the log-io thread in submission order.
            self._log_manager.run_in_background(_write_checkpoints, *self._snapshot(log_dir))

    def abort_cleaning(self, ltc: LogToClean, *, failed: bool = False) -> None:
        """Release a log whose clean stopped; a failed log is retried only after a backoff."""
        tp = ltc.topic_partition
        self._in_progress.discard(tp)
        if failed:
            self._skip_until[tp] = self._clock() + max(self._retry_backoff_ms, 60_000)

    def _snapshot(
        self, log_dir: str
    ) -> tuple[str, dict[TopicPartition, int], dict[TopicPartition, int]]:
        in_dir = self._log_manager.log_dir_of
        offsets = {tp: o for tp, o in self._checkpoints.items() if in_dir(*tp) == log_dir}
        horizons = {tp: h for tp, h in self._horizons.items() if tp in offsets}
        return log_dir, offsets, horizons


def _write_checkpoints(
    log_dir: str, offsets: dict[TopicPartition, int], horizons: dict[TopicPartition, int]
) -> None:
    # Horizons first: an offset checkpoint newer than its horizons would skip tombstones
    # (the other way round, a crash in between only costs one more clean).
    OffsetCheckpointFile(os.path.join(log_dir, CLEANER_HORIZON_CHECKPOINT)).write(horizons)
    OffsetCheckpointFile(os.path.join(log_dir, CLEANER_OFFSET_CHECKPOINT)).write(offsets)
