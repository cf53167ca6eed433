"""One clean of one log (Kafka's ``Cleaner.doClean``), step by step.

A :class:`CleanJob` compacts ``[first segment, end offset)`` of a log given
the dirty section ``[first_dirty, upper)`` chosen by the manager:

0. **Snapshot** (owner thread).  Every segment's size, offsets, mtime and an
   own read-only file descriptor (:class:`~pystream.storage.cleaner_io.SegmentFile`),
   the config, ``now``, each active producer's last batch (producer state)
   and the aborted transactions below the upper bound (``.txnindex``).  The
   manager already bounded the dirty section by the last stable offset, so
   every transaction in it is complete.
1. **Build the offset map** (worker) over the dirty section: for each keyed
   record its latest offset; aborted transactional batches and control
   batches put nothing.  If the map fills up (``log.cleaner.dedupe.buffer.size``),
   the clean ends at the first record that did not fit: that is the *end
   offset*; otherwise the end offset is the upper bound.  Every keyed record
   below the end offset is now in the map.
2. **Group** the segments holding offsets below the end offset (never the
   active one) so that a merged group fits ``segment.bytes``, the index size
   and 32-bit relative offsets: small segments become one.
3. **Clean each group** (worker) into ``<base>.log.cleaned`` (+ indexes), batch
   by batch in offset order, keeping what the rules of
   :mod:`~pystream.storage.cleaner_batch` keep (latest record per key,
   tombstones until their delete horizon, no aborted records, markers while
   needed, producers' last batches).  The group's last batch always stays (empty
   if need be), so that the cleaned segment ends where the group did: that is
   what recovery needs to finish an interrupted swap.  The file gets the group's
   last mtime (time-based retention of ``compact,delete`` logs) and is fsynced.

   A single segment that came out byte-identical is not swapped.
4. **Swap** (owner thread, between two uses of the log by the broker).  The
   group must still be the same closed segments of the same sizes (retention,
   truncation or deletion may have got there first: then the clean is
   aborted).  Then, each step durable before the next:
   ``.cleaned`` -> ``.swap`` (+ directory fsync), the log's segment list
   takes the new segment and the old ones are renamed ``.deleted`` (removed
   after ``file.delete.delay.ms``), ``.swap`` -> final name.  A crash before
   the ``.swap`` rename leaves only ``.cleaned`` garbage; after it, recovery
   replaces every segment whose base offset lies in the swap segment's offset
   range by the swap segment (``log_loader`` step 2) -- so at any moment the
   directory holds either the old or the new data for each offset.
5. **Checkpoint** (owner thread, by the manager) the end offset as the new
   first dirty offset.

The worker never touches the live :class:`~pystream.storage.log.Log`: it reads
through its own descriptors and writes files no one else knows about; only
steps 0 and 4 touch the log, on its owner thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pystream._core.offset_map import SLOT_SIZE, OffsetMap
from pystream._core.records import BATCH_OVERHEAD, BatchHeader
from pystream._core.segment import LogSegment
from pystream.config import LogConfig
from pystream.fileutil import fsync_directory
from pystream.storage.cleaner_batch import (
    VERBATIM,
    BatchCleaner,
    control_type,
    records_section,
    write_empty,
)
from pystream.storage.cleaner_io import BatchReader, CleanAborted, SegmentFile, Throttler
from pystream.storage.cleaner_txn import TransactionFilter, last_batches
from pystream.storage.log import Log
from pystream.storage.log_loader import (
    CLEANED_SUFFIX,
    SEGMENT_FILE_SUFFIXES,
    SWAP_SUFFIX,
    open_segment,
    segment_file_name,
)

logger = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1

Progress = Callable[[str], None]


def _no_progress(_step: str) -> None:
    pass


@dataclass
class CleanStats:
    """Numbers of one clean (Kafka's ``CleanerStats``)."""

    bytes_read: int = 0  # by the clean pass (the map pass reads the dirty section again)
    bytes_read_total: int = 0
    bytes_written: int = 0
    batches_read: int = 0
    batches_rewritten: int = 0
    batches_dropped: int = 0
    map_keys: int = 0
    map_slots: int = 0
    map_bytes: int = 0
    groups: int = 0
    segments_in: int = 0
    segments_swapped: int = 0
    map_seconds: float = 0.0
    clean_seconds: float = 0.0
    swap_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return self.map_seconds + self.clean_seconds + self.swap_seconds

    @property
    def mb_per_second(self) -> float:
        """Cleaned bytes (the clean pass's input) per second of the whole clean."""
        return self.bytes_read / 1e6 / self.seconds if self.seconds else 0.0


@dataclass
class CleanResult:
    """What a clean did."""

    first_dirty_offset: int
    end_offset: int
    earliest_horizon_ms: int | None
    stats: CleanStats = field(default_factory=CleanStats)

    @property
    def progressed(self) -> bool:
        return self.end_offset > self.first_dirty_offset or self.stats.segments_swapped > 0


def group_segments(
    files: list[SegmentFile], max_size: int, max_index_size: int, end_offset: int
) -> list[list[SegmentFile]]:
    """Kafka's ``groupSegmentsBySize``: consecutive segments merged while the group's log
    and index sizes fit and its offsets fit 32-bit relative offsets."""
    groups: list[list[SegmentFile]] = []
    i = 0
    while i < len(files):
        group = [files[i]]
        size, index_size, time_index_size = (
            files[i].size,
            files[i].index_bytes,
            files[i].time_index_bytes,
        )
        i += 1
        while i < len(files):
            candidate = files[i]
            last_offset = (
                files[i + 1].base_offset - 1 if i + 1 < len(files) else max(end_offset, 1) - 1
            )
            if not (
                size + candidate.size <= max_size
                and index_size + candidate.index_bytes <= max_index_size
                and time_index_size + candidate.time_index_bytes <= max_index_size
                and (candidate.size == 0 or last_offset - group[0].base_offset <= INT32_MAX)
            ):
                break
            group.append(candidate)
            size += candidate.size
            index_size += candidate.index_bytes
            time_index_size += candidate.time_index_bytes
            i += 1
        groups.append(group)
    return groups


class CleanJob:
    """One clean of one log; see the module docstring for the steps."""

    def __init__(
        self,
        log: Log,
        first_dirty_offset: int,
        upper_offset: int,
        offset_map: OffsetMap,
        *,
        now_ms: int,
        io_buffer_size: int = 256 * 1024,
        max_io_bytes_per_second: float = float("inf"),
        stop: threading.Event | None = None,
        is_live: Callable[[], bool] = lambda: True,
        progress: Progress | None = None,
    ) -> None:
        """Step 0, on the owner thread: snapshot the log."""
        self.log = log
        self.directory = log.directory
        self.config: LogConfig = log.config
        self.first_dirty_offset = first_dirty_offset
        self.upper_offset = max(upper_offset, first_dirty_offset)
        self.end_offset = first_dirty_offset
        self.now_ms = now_ms
        self._map = offset_map
        self._stop = stop or threading.Event()
        self._is_live = is_live
        self._progress = progress or _no_progress
        self._write_threshold = io_buffer_size
        self._reader = BatchReader(io_buffer_size, Throttler(max_io_bytes_per_second, self._stop))
        self._batches: BatchCleaner | None = None
        self._pending_cleaned: LogSegment | None = None
        # Per cleaned group (by base offset): the ABORT markers its clean dropped.
        self._dropped_aborts: dict[int, list[tuple[int, int]]] = {}
        self.stats = CleanStats()
        self._files: list[SegmentFile] = []
        try:
            for segment in log.segments:
                self._files.append(SegmentFile.open(segment))
        except BaseException:
            self.close()
            raise
        self._last_batches = last_batches(log.producer_state.producers)
        self._aborted = log.aborted_transactions(self._files[0].base_offset, self.upper_offset)
        # Where the dirty section starts in its segment (an index lookup + short scan).
        self._dirty_position = 0
        for f in self._files:
            if f.base_offset <= first_dirty_offset < max(f.next_offset, f.base_offset + 1):
                found = f.segment.translate_offset(first_dirty_offset)
                self._dirty_position = found.position if found is not None else 0

    # --- helpers ------------------------------------------------------------------------------

    def check_stop(self) -> None:
        if self._stop.is_set():
            raise CleanAborted(f"clean of {self.directory} stopped")

    def close(self) -> None:
        """Release the descriptors and delete a cleaned segment that was not swapped in."""
        for f in self._files:
            f.close()
        if self._pending_cleaned is not None:
            self._pending_cleaned.delete()
            self._pending_cleaned = None

    def result(self) -> CleanResult:
        stats = self.stats
        stats.bytes_read_total = self._reader.bytes_read
        horizon = None
        if self._batches is not None:
            stats.batches_rewritten = self._batches.counts.rewritten
            stats.batches_dropped = self._batches.counts.dropped
            horizon = self._batches.earliest_horizon
        return CleanResult(self.first_dirty_offset, self.end_offset, horizon, stats)

    # --- step 1: the offset map ----------------------------------------------------------

    def build_offset_map(self) -> None:
        """Step 1 (worker thread): fill the offset map over the dirty section."""
        started = time.monotonic()
        first_dirty, end_offset = self.first_dirty_offset, self.upper_offset
        dirty_bytes = sum(
            f.size
            for f in self._files
            if f.base_offset < end_offset and f.next_offset > first_dirty
        )
        offset_map = self._map
        # A first guess of the key count (small: a compact table is a fast one); the map
        # grows, within its budget, if there are more keys.
        offset_map.reset(max(1024, dirty_bytes // 16384))
        txn = TransactionFilter(self._aborted)
        for f in self._files:
            if end_offset <= first_dirty or f.base_offset >= end_offset:
                break
            if f.next_offset <= first_dirty:
                continue
            position = self._dirty_position if f.base_offset <= first_dirty else 0
            full_at = self._map_segment(f, position, txn, first_dirty, end_offset)
            if full_at >= 0:
                end_offset = full_at
                break
        offset_map.latest_offset = end_offset - 1
        self.end_offset = end_offset
        self.stats.map_keys = len(offset_map)
        self.stats.map_slots = offset_map.slots
        self.stats.map_bytes = offset_map.slots * SLOT_SIZE
        self.stats.map_seconds = time.monotonic() - started
        self._progress("mapped")

    def _map_segment(
        self, f: SegmentFile, position: int, txn: TransactionFilter, first_dirty: int, end: int
    ) -> int:
        """Map one segment's dirty batches; the offset where the map filled up, or -1."""
        offset_map = self._map
        for chunk, pos, header in self._reader.batches(f, position):
            self.check_stop()
            if header.base_offset >= end:
                return -1
            if header.is_control:
                txn.on_control_batch(header, control_type(chunk, pos, header))
                continue
            if txn.on_batch(header) or header.last_offset < first_dirty:
                continue
            data, start, stop = records_section(chunk, pos, header)
            full_at = offset_map.put_records(
                data, start, stop, header.record_count, header.base_offset, first_dirty
            )
            if full_at >= 0:
                return full_at
        return -1

    # --- step 2: groups --------------------------------------------------------------------

    def groups(self) -> list[list[SegmentFile]]:
        """Step 2: the closed segments below the end offset, grouped by size."""
        files = [f for f in self._files[:-1] if f.base_offset < self.end_offset]
        groups = group_segments(
            files, self.config.segment_bytes, self.config.segment_index_bytes, self.end_offset
        )
        self.stats.groups = len(groups)
        self.stats.segments_in = len(files)
        return groups

    # --- step 3: clean a group -------------------------------------------------------------

    def clean_group(self, group: list[SegmentFile]) -> LogSegment | None:
        """Step 3 (worker thread): write the group's cleaned segment; None if unchanged."""
        started = time.monotonic()
        if self._batches is None:  # one for all groups: transactions span segments
            self._batches = BatchCleaner(
                self._map,
                TransactionFilter(self._aborted),
                self._last_batches,
                self.now_ms,
                self.config.delete_retention_ms,
            )
        batches = self._batches
        base = group[0].base_offset
        for suffix in SEGMENT_FILE_SUFFIXES:  # leftovers of an earlier attempt
            _remove(os.path.join(self.directory, segment_file_name(base, suffix + CLEANED_SUFFIX)))
        cleaned = open_segment(self.directory, base, self.config, CLEANED_SUFFIX)
        self._pending_cleaned = cleaned
        out = bytearray()
        out_last_offset = -1
        changed = len(group) > 1
        dropped_last: tuple[bytes, BatchHeader] | None = None
        aborts_before = len(batches.dropped_abort_markers)
        for f in group:
            for chunk, pos, header in self._reader.batches(f):
                self.check_stop()
                self.stats.batches_read += 1
                self.stats.bytes_read += header.size
                before = len(out)
                if batches.clean(chunk, pos, header, out) != VERBATIM:
                    changed = True
                if len(out) > before:
                    out_last_offset = header.last_offset
                    dropped_last = None
                else:
                    dropped_last = (bytes(chunk[pos : pos + BATCH_OVERHEAD]), header)
                if len(out) >= self._write_threshold:
                    self._append(cleaned, out, out_last_offset)
                    out = bytearray()
        if dropped_last is not None:
            # The group's last batch stays (empty) so the segment ends where the group did.
            header_bytes, header = dropped_last
            write_empty(out, header_bytes, header)
            out_last_offset = header.last_offset
        if out:
            self._append(cleaned, out, out_last_offset)
        self.stats.clean_seconds += time.monotonic() - started
        if not changed:
            self._pending_cleaned = None
            cleaned.delete()
            return None
        self._dropped_aborts[base] = batches.dropped_abort_markers[aborts_before:]
        cleaned.offset_index.trim_to_valid_size()
        cleaned.time_index.trim_to_valid_size()
        mtime = group[-1].mtime_ns
        os.utime(cleaned.log_path, ns=(mtime, mtime))
        cleaned.flush()
        self._progress("cleaned")
        return cleaned

    def _append(self, cleaned: LogSegment, out: bytearray, last_offset: int) -> None:
        cleaned.append(last_offset, -1, -1, out)
        self.stats.bytes_written += len(out)
        self._progress("cleaning")

    # --- step 4: swap ----------------------------------------------------------------------

    def _group_is_current(self, group: list[SegmentFile]) -> bool:
        segments = self.log.segments
        first = group[0].segment
        index = next((i for i, s in enumerate(segments) if s is first), -1)
        n = len(group)
        return (
            index >= 0
            and index + n < len(segments)  # the active segment is never replaced
            and all(
                segments[index + k] is f.segment and f.still_matches() for k, f in enumerate(group)
            )
        )

    def swap_group(self, group: list[SegmentFile], cleaned: LogSegment | None) -> None:
        """Step 4 (owner thread): put ``cleaned`` in the place of ``group``.

        Raises CleanAborted (and deletes ``cleaned``) if the log changed since the
        snapshot so that the group is no longer what was cleaned.
        """
        if cleaned is None:
            return
        started = time.monotonic()
        if not self._is_live() or not self._group_is_current(group):
            raise CleanAborted(
                f"segments {group[0].base_offset}..{group[-1].base_offset} of {self.directory} "
                "changed during the clean (retention, truncation or deletion); cleaning again later"
            )
        # Before the swap: these transactions have no data left (a marker goes only then),
        # so their entries matter to no reader of the old segments either, and a crash
        # anywhere in the swap cannot leave an entry without its marker.
        self.log.forget_aborted_transactions(self._dropped_aborts.pop(group[0].base_offset, ()))
        cleaned.change_file_suffix(CLEANED_SUFFIX, SWAP_SUFFIX)
        fsync_directory(self.directory)
        self._progress("swap")
        self.log.replace_segments([f.segment for f in group], cleaned)
        self._pending_cleaned = None
        self._progress("replaced")
        cleaned.change_file_suffix(SWAP_SUFFIX, "")
        fsync_directory(self.directory)
        self.stats.segments_swapped += len(group)
        self.stats.swap_seconds += time.monotonic() - started
        self._progress("swapped")

    # --- all steps in the calling thread ---------------------------------------------------

    def run(self) -> CleanResult:
        """Steps 1-4 in the calling thread, which must own the log (tests, tools)."""
        self.build_offset_map()
        for group in self.groups():
            self.swap_group(group, self.clean_group(group))
        return self.result()


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
