"""Opening a partition directory: the recovery procedure, step by step.

:func:`load_log` brings a ``<topic>-<partition>/`` directory into a state a
:class:`~pystream.storage.log.Log` can append to.  The ``.log`` files are the
truth (every batch is CRC-checked); the ``.index``/``.timeindex`` files and
the leader-epoch checkpoint are caches that are rebuilt when missing or corrupt.

The procedure (Kafka's ``LogLoader``, written down):

1. **Remove leftovers.** Files ending in ``.deleted`` (segments whose async
   delete did not finish), ``.cleaned`` (a cleaner run that did not reach
   the swap) and ``.tmp`` (an unfinished atomic write) are deleted.
2. **Finish interrupted swaps.** A ``<base>.log.swap`` is a cleaned
   replacement that was complete but not yet renamed into place: its index
   ``.swap`` files are discarded, the swap segment is recovered to learn its
   offset range, every ordinary segment whose base offset lies in that range
   is deleted, and the swap files are renamed to ordinary names.
3. **Drop orphan indexes.** An ``.index``/``.timeindex`` without its ``.log``
   is deleted.
4. **Open segments in base-offset order.** A segment whose index cannot even
   be opened is marked for recovery (its indexes are rebuilt from the
   ``.log``); a missing offset index file is created empty and treated the
   same way (Kafka recovers such a segment, transaction index included).
5. **Check or recover each segment.**  After a clean shutdown (marker
   present) every segment is *loaded*: the files are trusted, an index that
   fails its sanity check is rebuilt.  After an unclean stop, segments wholly
   below the recovery point are loaded the same way (they were flushed), and
   the segment containing the recovery point and every later one is
   *recovered*: each batch's length, magic, CRC and count are checked, the
   file is truncated at the first invalid batch, the indexes are rebuilt.
   Once a segment had to be truncated, every later segment is deleted: a log
   has no holes, so nothing after the first damaged byte can be trusted.
6. **Make sure there is an active segment.**  No segment left, or a log end
   offset below the log-start-offset checkpoint (everything was deleted by
   retention or DeleteRecords): all segments are deleted and an empty one is
   created at the checkpointed log start offset.
7. **Establish the offsets.** ``log_end_offset`` is the last segment's next
   offset; ``log_start_offset`` is the larger of the checkpoint and the first
   segment's base offset; ``recovery_point`` is the log end offset after a
   clean shutdown, else the checkpoint capped at the log end offset (what was
   recovered was not fsynced, so a second crash recovers it again).
8. **Load the leader-epoch cache.** It is read from ``leader-epoch-checkpoint``
   (rebuilt from the batch headers if the file is corrupt, or missing while
   the log has data), then entries at or past the log end offset are dropped
   and the entry covering the log start offset is moved up to it.
9. **Rebuild the producer state.** The newest valid ``<offset>.snapshot`` is
   loaded — after an unclean stop, the newest one at or below the first
   recovered segment — and the batch headers after it are replayed, with the
   ``.txnindex`` entries of the replayed range re-created from the ABORT
   markers (see :mod:`pystream.storage.producer_state`), so idempotent dedup,
   open transactions and the aborted transactions of unflushed segments
   survive a crash (Kafka's ``LogLoader`` rebuilds the transaction index of
   every segment it recovers).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from pystream._core.segment import CorruptIndexError, LogSegment
from pystream.config import LogConfig
from pystream.fileutil import TMP_SUFFIX
from pystream.storage.checkpoints import CorruptCheckpointError
from pystream.storage.leader_epoch import LEADER_EPOCH_CHECKPOINT, LeaderEpochCache
from pystream.storage.producer_state import ProducerStateManager, load_producer_state
from pystream.storage.txn_index import TransactionIndex

log = logging.getLogger(__name__)

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
DELETED_SUFFIX = ".deleted"
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
SEGMENT_FILE_SUFFIXES = (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX)


def segment_file_name(base_offset: int, suffix: str) -> str:
    """Kafka's file name: the base offset as 20 digits, then ``.log``/``.index``/..."""
    return f"{base_offset:020d}{suffix}"


def parse_segment_file_name(name: str) -> tuple[int, str, str] | None:
    """``(base_offset, ".log"|".index"|".timeindex", extra suffix)``, None for other files."""
    stem, dot, rest = name.partition(".")
    if len(stem) != 20 or not stem.isdigit() or not dot:
        return None
    for file_suffix in SEGMENT_FILE_SUFFIXES:
        if ("." + rest).startswith(file_suffix):
            extra = ("." + rest)[len(file_suffix) :]
            if extra in ("", DELETED_SUFFIX, CLEANED_SUFFIX, SWAP_SUFFIX):
                return int(stem), file_suffix, extra
    return None


@dataclass
class LoadedLog:
    """What :func:`load_log` established about a partition directory."""

    segments: list[LogSegment]
    log_start_offset: int
    log_end_offset: int
    recovery_point: int
    leader_epoch_cache: LeaderEpochCache
    truncated_bytes: int  # bytes cut off damaged segments (0 after a clean stop)
    deleted_segments: int  # segments dropped after the first damaged one
    producer_state: ProducerStateManager | None = None
    txn_index: TransactionIndex | None = None


def open_segment(
    directory: str, base_offset: int, config: LogConfig, suffix: str = ""
) -> LogSegment:
    """Open (or create) a segment with the config's index settings."""
    return LogSegment(
        directory,
        base_offset,
        index_interval_bytes=config.index_interval_bytes,
        max_index_size=config.segment_index_bytes,
        file_suffix=suffix,
    )


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def load_log(
    directory: str,
    config: LogConfig,
    *,
    log_start_offset_checkpoint: int = 0,
    recovery_point_checkpoint: int = 0,
    had_clean_shutdown: bool = False,
) -> LoadedLog:
    """Run the recovery procedure (see the module docstring) on ``directory``.

    The directory is created if missing.  Raises KafkaStorageError (or
    OSError) only for I/O failures; damaged data is truncated, never raised.
    """
    os.makedirs(directory, exist_ok=True)
    _remove_leftovers(directory)  # step 1
    _complete_swaps(directory, config)  # step 2
    bases = _segment_bases(directory)  # step 3
    segments, needs_recovery = _open_segments(directory, bases, config)  # step 4
    truncated, deleted, first_recovered = _check_segments(  # step 5
        directory, segments, needs_recovery, had_clean_shutdown, recovery_point_checkpoint
    )
    segments = _ensure_active_segment(  # step 6
        directory, segments, config, log_start_offset_checkpoint
    )
    log_end_offset = segments[-1].next_offset  # step 7
    log_start_offset = max(log_start_offset_checkpoint, segments[0].base_offset)
    if had_clean_shutdown:
        recovery_point = log_end_offset
    else:
        recovery_point = min(recovery_point_checkpoint, log_end_offset)
    cache = _load_leader_epochs(directory, segments, log_start_offset, log_end_offset)  # step 8
    producer_state, txn_index = load_producer_state(  # step 9
        directory, segments, log_start_offset, log_end_offset, replay_from=first_recovered
    )
    return LoadedLog(
        segments=segments,
        log_start_offset=log_start_offset,
        log_end_offset=log_end_offset,
        recovery_point=recovery_point,
        leader_epoch_cache=cache,
        truncated_bytes=truncated,
        deleted_segments=deleted,
        producer_state=producer_state,
        txn_index=txn_index,
    )


def _remove_leftovers(directory: str) -> None:
    """Step 1: delete ``.deleted``, ``.cleaned`` and ``.tmp`` files."""
    for name in os.listdir(directory):
        if name.endswith((DELETED_SUFFIX, CLEANED_SUFFIX, TMP_SUFFIX)):
            log.info("Deleting leftover file %s", os.path.join(directory, name))
            _remove(os.path.join(directory, name))


def _complete_swaps(directory: str, config: LogConfig) -> None:
    """Step 2: rename complete ``.swap`` segments into place, replacing what they cover."""
    swap_bases = []
    for name in os.listdir(directory):
        parsed = parse_segment_file_name(name)
        if parsed is None or parsed[2] != SWAP_SUFFIX:
            continue
        if parsed[1] == LOG_SUFFIX:
            swap_bases.append(parsed[0])
        else:  # index swaps are rebuilt from the swapped .log
            _remove(os.path.join(directory, name))
    for base in sorted(swap_bases):
        swap = open_segment(directory, base, config, SWAP_SUFFIX)
        swap.recover()
        end = swap.next_offset
        for other in _segment_bases(directory):
            if base <= other < max(end, base + 1):
                log.info("Replacing segment %d of %s by its swap", other, directory)
                for suffix in SEGMENT_FILE_SUFFIXES:
                    _remove(os.path.join(directory, segment_file_name(other, suffix)))
        swap.change_file_suffix(SWAP_SUFFIX, "")
        swap.close()


def _segment_bases(directory: str) -> list[int]:
    """Step 3: base offsets of the ``.log`` files, deleting indexes that have no ``.log``."""
    logs, indexes = set(), []
    for name in os.listdir(directory):
        parsed = parse_segment_file_name(name)
        if parsed is None or parsed[2]:
            continue
        if parsed[1] == LOG_SUFFIX:
            logs.add(parsed[0])
        else:
            indexes.append((parsed[0], name))
    for base, name in indexes:
        if base not in logs:
            log.info("Deleting orphan index %s", os.path.join(directory, name))
            _remove(os.path.join(directory, name))
    return sorted(logs)


def _open_segments(
    directory: str, bases: list[int], config: LogConfig
) -> tuple[list[LogSegment], set[int]]:
    """Step 4: open every segment; note those whose indexes must be rebuilt.

    A segment whose offset index is missing is recovered, as Kafka's
    ``LogLoader`` does (its transaction index is then rebuilt too, step 9); an
    index that cannot even be opened is deleted here.
    """
    segments, needs_recovery = [], set()
    for base in bases:
        if not os.path.exists(os.path.join(directory, segment_file_name(base, INDEX_SUFFIX))):
            needs_recovery.add(base)
        try:
            segment = open_segment(directory, base, config)
        except CorruptIndexError as exc:
            log.warning("Rebuilding unreadable index of segment %d in %s: %s", base, directory, exc)
            for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                _remove(os.path.join(directory, segment_file_name(base, suffix)))
            segment = open_segment(directory, base, config)
            needs_recovery.add(base)
        segments.append(segment)
    return segments, needs_recovery


def _check_segments(
    directory: str,
    segments: list[LogSegment],
    needs_recovery: set[int],
    had_clean_shutdown: bool,
    recovery_point: int,
) -> tuple[int, int, int | None]:
    """Step 5: load trusted segments, recover the rest.

    Returns (bytes truncated, segments deleted, base offset of the first recovered
    segment or None): step 9 rebuilds the transaction index from there, since the
    ``.txnindex`` entries of unflushed segments may be lost like their data.
    """
    # The first segment to recover after an unclean stop: the one containing the recovery point.
    first_unflushed = len(segments)
    if not had_clean_shutdown:
        first_unflushed = 0
        for i, segment in enumerate(segments):
            if segment.base_offset <= recovery_point:
                first_unflushed = i
    recovered = [
        s.base_offset
        for i, s in enumerate(segments)
        if i >= first_unflushed or s.base_offset in needs_recovery
    ]
    if recovered:
        # INFO, with the count: how much a crash costs shows how far the recovery point was.
        log.info(
            "Recovering %d of %d segments of %s from offset %d (recovery point %d)",
            len(recovered),
            len(segments),
            os.path.basename(directory),
            recovered[0],
            recovery_point,
        )
    truncated = 0
    for i, segment in enumerate(segments):
        if i >= first_unflushed or segment.base_offset in needs_recovery:
            cut = segment.recover()
            if cut:
                log.warning(
                    "Truncated %d invalid bytes at the end of segment %s", cut, segment.log_path
                )
            truncated += cut
            if cut and i >= first_unflushed:
                doomed = segments[i + 1 :]
                for later in doomed:
                    log.warning("Deleting segment %s after a damaged one", later.log_path)
                    later.delete()
                del segments[i + 1 :]
                return truncated, len(doomed), recovered[0]
        else:
            segment.load()
    return truncated, 0, recovered[0] if recovered else None


def _ensure_active_segment(
    directory: str, segments: list[LogSegment], config: LogConfig, log_start_offset: int
) -> list[LogSegment]:
    """Step 6: an empty log, or one wholly below the checkpointed start, restarts there."""
    if segments and segments[-1].next_offset >= log_start_offset:
        return segments
    if segments:
        log.warning(
            "Log end offset %d of %s is below its log start offset %d; starting empty there",
            segments[-1].next_offset,
            directory,
            log_start_offset,
        )
    for segment in segments:
        segment.delete()
    return [open_segment(directory, log_start_offset, config)]


def _load_leader_epochs(
    directory: str, segments: list[LogSegment], log_start_offset: int, log_end_offset: int
) -> LeaderEpochCache:
    """Step 8: read (or rebuild) the leader-epoch cache and fit it to the offsets."""
    path = os.path.join(directory, LEADER_EPOCH_CHECKPOINT)
    try:
        cache: LeaderEpochCache | None = LeaderEpochCache(directory)
        if not os.path.exists(path) and log_end_offset > log_start_offset:
            cache = None
    except CorruptCheckpointError as exc:
        log.warning("Rebuilding the leader epoch cache of %s from the log: %s", directory, exc)
        cache = None
    if cache is None:
        entries: list[tuple[int, int]] = []
        for segment in segments:
            for batch in segment.batches():
                epoch = batch.partition_leader_epoch
                if epoch >= 0 and (not entries or epoch > entries[-1][0]):
                    entries.append((epoch, batch.base_offset))
        cache = LeaderEpochCache(directory, entries)
        cache.flush(durable=False)
    # In memory only (a write per partition, two fsyncs each, made a start with 10,000
    # partitions take a minute): each load fits the entries to the offsets again.
    cache.truncate_from_end(log_end_offset, persist=False)
    cache.truncate_from_start(log_start_offset, persist=False)
    return cache
