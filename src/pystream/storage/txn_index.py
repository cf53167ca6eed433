"""Aborted transactions of one partition: the ``.txnindex`` files.

When an ABORT marker is appended, the transaction it ends is recorded as an
:class:`AbortedTxn` (producer id, first offset, marker offset, last stable
offset) in the ``<segment base>.txnindex`` file of the segment the marker
lands in — Kafka's file format exactly: 34-byte entries ``version i16 (0) |
producer_id i64 | first_offset i64 | last_offset i64 | last_stable_offset i64``.
A read_committed Fetch returns the aborted transactions that overlap its data,
and the client drops those producers' records up to their abort markers.

Like the offset indexes, these files are derived data: recovery re-creates the
entries of the log tail it replays (see :mod:`pystream.storage.producer_state`).
All entries are also kept in memory (a partition has few aborted transactions
compared to its records), ordered by last offset.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

TXN_INDEX_SUFFIX = ".txnindex"
_ENTRY = struct.Struct(">hqqqq")
ENTRY_SIZE = _ENTRY.size  # 34
_VERSION = 0


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    """One aborted transaction: its data lies in [first_offset, last_offset] (the marker)."""

    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int

    def encode(self) -> bytes:
        return _ENTRY.pack(
            _VERSION, self.producer_id, self.first_offset, self.last_offset, self.last_stable_offset
        )


def txn_index_file_name(segment_base_offset: int) -> str:
    return f"{segment_base_offset:020d}{TXN_INDEX_SUFFIX}"


def parse_txn_index_file_name(name: str) -> int | None:
    stem, _, rest = name.partition(".")
    if "." + rest != TXN_INDEX_SUFFIX or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


class TransactionIndex:
    """Every aborted transaction of a partition, in memory and in per-segment files."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._entries: list[tuple[int, AbortedTxn]] = []  # (segment base, txn) by last offset
        self._last_offsets: list[int] = []
        self._unflushed: set[int] = set()
        self._max_span = 0  # the largest last_offset - first_offset of an entry

    def __len__(self) -> int:
        return len(self._entries)

    def _path(self, segment_base_offset: int) -> str:
        return os.path.join(self.directory, txn_index_file_name(segment_base_offset))

    # --- loading ----------------------------------------------------------------------------

    def load(self, live_segment_bases: Iterable[int], keep_below: int) -> None:
        """Read the files of the live segments, keeping entries whose marker lies below
        ``keep_below`` (recovery replays the rest); delete files of segments that are gone."""
        live = set(live_segment_bases)
        entries: list[tuple[int, AbortedTxn]] = []
        for name in os.listdir(self.directory):
            base = parse_txn_index_file_name(name)
            if base is None:
                continue
            path = os.path.join(self.directory, name)
            if base not in live:
                _remove(path)
                continue
            with open(path, "rb") as handle:
                data = handle.read()
            kept = []
            whole = len(data) - len(data) % ENTRY_SIZE
            for position in range(0, whole, ENTRY_SIZE):
                version, pid, first, last, lso = _ENTRY.unpack_from(data, position)
                if version != _VERSION or last < first:
                    log.warning("Ignoring the rest of corrupt transaction index %s", path)
                    break
                if last < keep_below:
                    kept.append((base, AbortedTxn(pid, first, last, lso)))
            if len(kept) * ENTRY_SIZE != len(data):
                self._rewrite(base, [txn for _, txn in kept])
            entries.extend(kept)
        entries.sort(key=lambda entry: entry[1].last_offset)
        self._entries = entries
        self._last_offsets = [txn.last_offset for _, txn in entries]
        self._max_span = max((t.last_offset - t.first_offset for _, t in entries), default=0)

    def _rewrite(self, segment_base_offset: int, txns: list[AbortedTxn]) -> None:
        path = self._path(segment_base_offset)
        if not txns:
            _remove(path)
            return
        tmp = path + ".tmp"
        with open(tmp, "wb") as handle:
            handle.write(b"".join(txn.encode() for txn in txns))
        os.replace(tmp, path)

    # --- changes ----------------------------------------------------------------------------

    def append(self, segment_base_offset: int, txn: AbortedTxn) -> None:
        """Record an aborted transaction whose marker is in the segment at that base offset."""
        if self._last_offsets and txn.last_offset <= self._last_offsets[-1]:
            raise ValueError(
                f"aborted transaction ending at {txn.last_offset} is not after the last one "
                f"({self._last_offsets[-1]}) in {self.directory}"
            )
        with open(self._path(segment_base_offset), "ab") as handle:
            handle.write(txn.encode())
        self._entries.append((segment_base_offset, txn))
        self._last_offsets.append(txn.last_offset)
        self._unflushed.add(segment_base_offset)
        self._max_span = max(self._max_span, txn.last_offset - txn.first_offset)

    def truncate_from(self, offset: int) -> None:
        """Forget transactions whose marker is at or after ``offset`` (log truncation)."""
        cut = bisect.bisect_left(self._last_offsets, offset)
        if cut == len(self._entries):
            return
        touched = {base for base, _ in self._entries[cut:]}
        del self._entries[cut:]
        del self._last_offsets[cut:]
        for base in touched:
            self._rewrite(base, [txn for b, txn in self._entries if b == base])

    def remove_ended_at(self, markers: Iterable[tuple[int, int]]) -> None:
        """Forget the transactions whose marker was at these ``(producer id, offset)``s."""
        gone = set(markers)
        if not gone:
            return
        touched = {b for b, t in self._entries if (t.producer_id, t.last_offset) in gone}
        if not touched:
            return
        self._entries = [
            (b, t) for b, t in self._entries if (t.producer_id, t.last_offset) not in gone
        ]
        self._last_offsets = [txn.last_offset for _, txn in self._entries]
        for base in touched:
            self._rewrite(base, [txn for b, txn in self._entries if b == base])

    def delete_segments(
        self, segment_base_offsets: Iterable[int], live_segment_bases: Iterable[int] = ()
    ) -> None:
        """These segments are gone.  Their transactions move to the live segment that now
        holds their offsets (a compaction merged them into it), or go too (retention)."""
        live = sorted(set(live_segment_bases))
        # A base that is still live was replaced by a segment with the same base (cleaner).
        doomed = set(segment_base_offsets) - set(live)
        if not doomed:
            return
        moved: set[int] = set()
        kept = []
        for base, txn in self._entries:
            if base in doomed:
                index = bisect.bisect_right(live, base) - 1
                if index < 0:
                    continue  # deleted from the head of the log
                base = live[index]
                moved.add(base)
            kept.append((base, txn))
        self._entries = kept
        self._last_offsets = [txn.last_offset for _, txn in kept]
        for base in doomed:
            _remove(self._path(base))
            self._unflushed.discard(base)
        for base in moved:
            self._rewrite(base, [txn for b, txn in kept if b == base])

    def take_unflushed(self) -> list[str]:
        """The paths of the files appended to since the last flush, now counted as
        flushed: the caller fsyncs them (any thread) or gives them back with
        :meth:`mark_unflushed`."""
        paths = [self._path(base) for base in sorted(self._unflushed)]
        self._unflushed.clear()
        return paths

    def mark_unflushed(self, paths: Iterable[str]) -> None:
        """Give back paths from :meth:`take_unflushed` whose fsync failed."""
        for path in paths:
            base = parse_txn_index_file_name(os.path.basename(path))
            if base is not None:
                self._unflushed.add(base)

    def flush(self) -> None:
        """fsync the files appended to since the last flush (with the segments' flush)."""
        for base in sorted(self._unflushed):
            try:
                fd = os.open(self._path(base), os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._unflushed.clear()

    # --- reading ----------------------------------------------------------------------------

    def collect(self, fetch_offset: int, upper_bound_offset: int) -> list[AbortedTxn]:
        """Aborted transactions overlapping [fetch_offset, upper_bound_offset): a consumer
        reading that range needs them to skip aborted records."""
        if not self._entries:
            return []
        found = []
        # Entries are ordered by last offset; none can start before the upper bound once the
        # last offsets pass it by more than the longest transaction spans.
        stop = upper_bound_offset + self._max_span
        first = bisect.bisect_left(self._last_offsets, fetch_offset)
        for index in range(first, len(self._entries)):
            txn = self._entries[index][1]
            if txn.last_offset >= stop:
                break
            if txn.first_offset < upper_bound_offset:
                found.append(txn)
        return found

    def all(self) -> list[AbortedTxn]:
        return [txn for _, txn in self._entries]


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
