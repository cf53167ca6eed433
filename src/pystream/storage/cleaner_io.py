"""How the log cleaner reads segments: its own file descriptors, whole batches, throttled.

The cleaner runs in a worker thread while the broker keeps using the log on
its event loop, so it never touches a :class:`LogSegment` object there.
Instead the owner thread takes a :class:`SegmentFile` snapshot of each segment
(size, offsets, mtime and a read-only file descriptor of its own) and the
worker reads through that descriptor with ``pread``:

* retention or a swap may rename or delete the segment meanwhile: an open
  descriptor keeps the inode readable;
* a follower truncation may shorten the file: ``pread`` then returns less
  (never SIGBUS, as a mapping would), the batch walk stops early and the swap
  refuses the group because the segment's size changed.

:class:`BatchReader` walks whole batches through one reusable buffer (the
cleaner's half of ``log.cleaner.io.buffer.size``), growing it for a batch that
does not fit.  :class:`Throttler` caps the read rate at
``log.cleaner.io.max.bytes.per.second``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pystream._core import records as core_records
from pystream._core.records import BATCH_OVERHEAD, BatchHeader
from pystream._core.segment import LogSegment

#: A batch cannot be larger than this (2 GiB segments, int32 length field).
MAX_BATCH_BUFFER = 2**31 - 1


class CleanAborted(Exception):
    """The clean was stopped (shutdown) or its log changed under it; nothing was swapped."""


@dataclass
class SegmentFile:
    """A snapshot of one segment for the cleaner thread (taken on the log's owner thread)."""

    segment: LogSegment
    base_offset: int
    size: int
    next_offset: int
    mtime_ns: int
    index_bytes: int
    time_index_bytes: int
    fd: int

    @classmethod
    def open(cls, segment: LogSegment) -> SegmentFile:
        """Snapshot ``segment`` and open its ``.log`` read-only (call on the owner thread)."""
        fd = os.open(segment.log_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return cls(
                segment=segment,
                base_offset=segment.base_offset,
                size=segment.size,
                next_offset=segment.next_offset,
                mtime_ns=os.fstat(fd).st_mtime_ns,
                index_bytes=segment.offset_index.entries * 8,
                time_index_bytes=segment.time_index.entries * 12,
                fd=fd,
            )
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def still_matches(self) -> bool:
        """The live segment still has the size it had at the snapshot (no truncation)."""
        return self.segment.size == self.size


class Throttler:
    """Sleeps the calling (worker) thread so reads stay under ``bytes_per_second``."""

    def __init__(self, bytes_per_second: float, stop: threading.Event | None = None) -> None:
        self._rate = bytes_per_second
        self._stop = stop
        self._start = time.monotonic()
        self._bytes = 0

    def maybe_throttle(self, n: int) -> None:
        if math.isinf(self._rate) or self._rate <= 0:
            return
        self._bytes += n
        ahead = self._bytes / self._rate - (time.monotonic() - self._start)
        if ahead > 0.01:
            if self._stop is not None:
                self._stop.wait(ahead)  # returns early on shutdown
            else:
                time.sleep(ahead)
        if time.monotonic() - self._start > 1.0:  # a fresh window: no credit for idle time
            self._start, self._bytes = time.monotonic(), 0


class BatchReader:
    """Walks the whole batches of :class:`SegmentFile` snapshots through one reusable buffer."""

    def __init__(self, buffer_size: int, throttler: Throttler | None = None) -> None:
        self._buffer = bytearray(max(buffer_size, 4 * BATCH_OVERHEAD))
        self._throttler = throttler
        self.bytes_read = 0

    def _read(self, segment: SegmentFile, position: int) -> memoryview:
        """Bytes of ``segment`` from ``position`` (at most the buffer, never past the snapshot)."""
        n = min(len(self._buffer), segment.size - position)
        if n <= 0:
            return memoryview(b"")
        view = memoryview(self._buffer)
        got = os.preadv(segment.fd, [view[:n]], position)
        self.bytes_read += got
        if self._throttler is not None:
            self._throttler.maybe_throttle(got)
        return view[:got]

    def chunks(self, segment: SegmentFile, position: int = 0) -> Iterator[tuple[memoryview, int]]:
        """``(chunk, file position of chunk[0])`` until the end of the snapshot.

        The consumer says how many bytes it used by sending the next position
        with ``generator.send`` (None: the whole chunk); a batch larger than
        the buffer grows it.  A chunk is valid until the next one is read.
        """
        while position < segment.size:
            chunk = self._read(segment, position)
            if not chunk:
                return  # the file shrank (truncation): the swap will notice
            used = yield chunk, position
            if used is None:
                position += len(chunk)
            elif used <= position:
                # Not even one whole batch fits: grow to the batch's size (its header says).
                needed = _batch_size_at(chunk)
                if needed <= len(chunk) or needed > MAX_BATCH_BUFFER:
                    return
                del chunk
                self._buffer = bytearray(needed)
            else:
                position = used

    def batches(
        self, segment: SegmentFile, position: int = 0
    ) -> Iterator[tuple[memoryview, int, BatchHeader]]:
        """``(chunk, position in chunk, header)`` for every whole batch from ``position``.

        The chunk holds the whole batch at ``chunk[pos:pos + header.size]``; it is
        reused once the iteration moves on, so copy what must outlive it.
        """
        walk = self.chunks(segment, position)
        try:
            item = next(walk)
            while True:
                chunk, file_position = item
                n = len(chunk)
                pos = 0
                while n - pos >= BATCH_OVERHEAD:
                    header = core_records.read_batch_header(chunk, pos)
                    if header.size > n - pos:
                        break
                    yield chunk, pos, header
                    pos += header.size
                del chunk
                item = walk.send(file_position + pos)
        except StopIteration:
            return


def _batch_size_at(chunk: memoryview) -> int:
    if len(chunk) < 12:
        return MAX_BATCH_BUFFER + 1
    return int.from_bytes(chunk[8:12], "big", signed=True) + 12
