# cython: language_level=3
"""Segment files: a ``.log`` of whole RecordBatches plus two sparse, mmap'd indexes.

One segment is ``<base_offset:020d>.log`` + ``.index`` + ``.timeindex`` (each
optionally followed by a suffix such as ``.deleted``), as in Kafka:

* ``.log``: batches exactly as on the wire, appended with ``pwrite``.
* ``.index``: 8-byte big-endian entries ``(last_offset - base_offset: u32,
  position: u32)``; ``position`` is the start of the batch whose *last* offset
  is recorded (Kafka's ``offsetIndex.append(batch.lastOffset, position)``).
  A lookup therefore gives a position from which a forward header scan finds
  the first batch with ``last_offset >= target``.
* ``.timeindex``: 12-byte entries ``(max timestamp so far: i64, relative
  offset of the batch that first reached it: u32)``, strictly increasing.

Both indexes get one entry per ``index_interval_bytes`` of log, built the same
way by ``append`` and by ``recover`` (Kafka 3.x's per-batch loop), so a rebuilt
index is byte-identical to the one written live, and ``truncate_to`` leaves the
indexes a fresh build of the remaining batches would have.  Index files are preallocated
to ``max_index_size`` while being appended to and trimmed to exactly
``entries * entry_size`` on close.  On open, the number of valid entries is the
file length for a trimmed index; for a preallocated one (a crash before the
trim) trailing all-zero entries are padding: only entry 0 can legitimately be
all zero (relative offset 0 at position 0 / timestamp 0), and such an entry
carries no information beyond "start at the beginning", so it is dropped too.

Recovery of an unclean segment (``recover``), step by step:

1. Reset both indexes (they are caches; the CRC-checked ``.log`` is the truth).
2. Scan batches from position 0 with ``check_batch``: length, magic 2, CRC-32C,
   record count, attributes, optional max size.  A batch must also start at or
   after the previous batch's next offset and fit the 32-bit relative offset.
3. For every valid batch, add index entries exactly as ``append`` does.
4. Stop at the first invalid batch and truncate the ``.log`` there.
5. Trim both index files to their entries; return the number of bytes cut.

Loading a cleanly shut down segment (``load``), step by step:

1. An index file that did not exist when the segment was opened: ``recover()``.
2. Either index failing ``sanity_check`` (or its last entry pointing past the
   ``.log`` or at something that is not the indexed batch): ``recover()``.
3. Scan headers (no CRC) from the last offset-index entry to the end of the
   ``.log``; if they do not end exactly at the file end: ``recover()``.
4. ``next_offset`` = last batch's last offset + 1.  ``max_timestamp`` is found
   lazily on first use (last time-index entry plus a header scan after it).

Views and truncation: ``view()`` hands out read-only memoryviews over an mmap
of the ``.log``.  Each mmap is a reference-counted object that views keep
alive, so growing the map (remap), ``close()`` and ``delete()`` never unmap
memory under a live view.  Shrinking the *file* would, though (touching a page
past EOF raises SIGBUS), so ``truncate_to``/``recover`` raise ``BufferError``
while any live view covers a byte that would be cut; views entirely before the
cut are unaffected.

File descriptors: the ``.log``'s descriptor is a reference-counted
:class:`FileHandle`, held by the segment and by every ``FileRange`` that
``read()`` hands out.  ``close()``/``delete()`` drop the segment's reference;
the descriptor closes when the last range goes too.  So a fetch response still
being sent from ``FileRange.fd`` keeps reading the right bytes after the
segment is deleted (an unlinked file stays readable on POSIX), never from a
closed descriptor or from another file that reused its number.

Concurrency: a segment is not locked internally.  Header scans hold the GIL so
that no other Python thread can shrink the file under them; only ``append``'s
``pwrite`` and ``recover``'s CRC scan release it (``truncate_to`` is refused
while ``recover`` runs).
"""

import os
from collections import namedtuple

from cpython.buffer cimport PyBuffer_FillInfo
from libc.errno cimport EINTR, errno
from libc.stdint cimport INT32_MAX, int32_t, int64_t, uint32_t, uint64_t
from pystream._core.endian cimport load_be32, load_be64, store_be32, store_be64
from libc.string cimport memset
from posix.mman cimport (
    MAP_FAILED,
    MAP_SHARED,
    MS_SYNC,
    POSIX_MADV_RANDOM,
    POSIX_MADV_SEQUENTIAL,
    PROT_READ,
    PROT_WRITE,
    mmap,
    msync,
    munmap,
    posix_madvise,
)
from posix.types cimport off_t
from posix.unistd cimport close as c_close
from posix.unistd cimport pwrite

from pystream._core.records cimport (
    BATCH_OK,
    BATCH_OVERHEAD,
    LOG_OVERHEAD,
    BatchError,
    BatchInfo,
    check_batch,
    parse_batch_header,
)

from pystream.errors import CorruptMessageError, KafkaStorageError

__all__ = [
    "BatchPosition",
    "CorruptIndexError",
    "FileHandle",
    "FileRange",
    "LogSegment",
    "OffsetIndex",
    "TimeIndex",
]

FileRange = namedtuple("FileRange", ["fd", "position", "length", "file"], defaults=(None,),
                       module=__name__)
FileRange.__doc__ = """Bytes [position, position+length) of an open .log file, for os.sendfile.

``file`` is the :class:`FileHandle` owning ``fd``: while the range (or anything holding
``file``) is alive, ``fd`` stays open, even after the segment is closed or deleted."""

BatchPosition = namedtuple(
    "BatchPosition",
    ["position", "size", "base_offset", "last_offset", "max_timestamp", "partition_leader_epoch"],
    module=__name__,
)
BatchPosition.__doc__ = "Where one batch lives in a segment (size = length field + 12) and its header."


class CorruptIndexError(Exception):
    """An index file is inconsistent (e.g. offsets not increasing); rebuild it."""


cdef enum:
    OFFSET_ENTRY = 8
    TIME_ENTRY = 12
    MAP_GRANULE = 1 << 20          # the .log map grows in whole MiBs (page aligned)
    NO_TIMESTAMP = -1


# ---------------------------------------------------------------------------
# big-endian loads/stores (index entries are big-endian, as Kafka's)

cdef inline int64_t _be64(const unsigned char* p) noexcept nogil:
    return <int64_t>load_be64(p)

cdef inline void _put64(unsigned char* p, int64_t v) noexcept nogil:
    store_be64(p, <uint64_t>v)


# ---------------------------------------------------------------------------
# file descriptors

cdef class FileHandle:
    """An open file descriptor, closed when the last reference (segment or FileRange) goes.

    Python's reference count is the count of users: a segment holds one while it is
    open, each ``FileRange`` (and so each fetch response chunk sending from it) holds
    one, and ``__dealloc__`` closes the descriptor when none is left.
    """

    cdef readonly int fd

    def __cinit__(self, int fd):
        self.fd = fd

    def __dealloc__(self):
        if self.fd >= 0:
            c_close(self.fd)
            self.fd = -1

    def __repr__(self):
        return f"FileHandle({self.fd})"


# ---------------------------------------------------------------------------
# memory maps

cdef class _Mapping:
    """One mmap of a file, unmapped when the last reference (segment or view) goes."""

    cdef unsigned char* addr
    cdef Py_ssize_t length

    def __dealloc__(self):
        if self.addr != NULL:
            munmap(self.addr, <size_t>self.length)
            self.addr = NULL


cdef _Mapping _map_file(int fd, Py_ssize_t length, bint writable, str path):
    """Map [0, length) of fd shared; length may exceed the file (never touched past EOF)."""
    cdef _Mapping m = _Mapping.__new__(_Mapping)
    cdef void* p
    cdef int prot = PROT_READ | PROT_WRITE if writable else PROT_READ
    if length > 0:
        p = mmap(NULL, <size_t>length, prot, MAP_SHARED, fd, 0)
        if p == MAP_FAILED:
            err = errno
            raise KafkaStorageError(f"cannot mmap {length} bytes of {path}: {os.strerror(err)}")
        m.addr = <unsigned char*>p
        m.length = length
    return m


cdef class _LogView:
    """Buffer exporter for one view(): keeps its mmap alive and registers itself while exported."""

    cdef _Mapping mapping
    cdef Py_ssize_t start
    cdef Py_ssize_t length
    cdef Py_ssize_t exports
    cdef set live                  # the segment's set of exported views

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        # readonly=1: a request for a writable buffer raises BufferError here.
        PyBuffer_FillInfo(buffer, self, self.mapping.addr + self.start, self.length, 1, flags)
        self.exports += 1
        if self.exports == 1:
            self.live.add(self)

    def __releasebuffer__(self, Py_buffer* buffer):
        self.exports -= 1
        if self.exports == 0:
            self.live.discard(self)


# ---------------------------------------------------------------------------
# batch header scanning over mapped .log bytes

cdef inline Py_ssize_t _batch_at(const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end,
                                 BatchInfo* info) noexcept nogil:
    """Size of the batch at buf[pos] (header in *info); 0 when no whole batch fits
    before end (end of log or an incomplete tail); -1 when its length field is invalid."""
    cdef Py_ssize_t size
    if end - pos < BATCH_OVERHEAD:
        return 0
    if parse_batch_header(buf + pos, end - pos, info) != BATCH_OK:
        return -1
    size = <Py_ssize_t>info.batch_length + LOG_OVERHEAD
    if size > end - pos:
        return 0
    return size


cdef inline int64_t _last_offset(const BatchInfo* info) noexcept nogil:
    return info.base_offset + info.last_offset_delta


cdef object _batch_position(Py_ssize_t position, const BatchInfo* info):
    return BatchPosition(position, <Py_ssize_t>info.batch_length + LOG_OVERHEAD,
                         info.base_offset, _last_offset(info), info.max_timestamp,
                         info.partition_leader_epoch)


cdef int _pwrite_all(int fd, const unsigned char* data, Py_ssize_t n, off_t offset) noexcept nogil:
    """Write all n bytes at offset; 0 or an errno."""
    cdef Py_ssize_t written
    while n > 0:
        written = pwrite(fd, data, <size_t>n, offset)
        if written < 0:
            if errno == EINTR:
                continue
            return errno
        data += written
        n -= written
        offset += written
    return 0


# ---------------------------------------------------------------------------
# indexes

cdef class _Index:
    """Shared machinery of the two indexes: a file of fixed-size entries, mmap'd."""

    cdef readonly str path
    cdef readonly int64_t base_offset
    cdef Py_ssize_t _entry_size
    cdef Py_ssize_t _entries           # valid entries
    cdef Py_ssize_t _capacity          # entries the file (= the map) holds now
    cdef Py_ssize_t _max_entries       # entries max_index_size allows
    cdef Py_ssize_t _file_len
    cdef _Mapping _map
    cdef unsigned char* _addr
    cdef bint _created                 # the file did not exist at open: contents unknown
    cdef bint _closed

    cdef _open(self, path, int64_t base_offset, Py_ssize_t max_index_size, Py_ssize_t entry_size):
        if base_offset < 0:
            raise ValueError(f"base offset must be >= 0, got {base_offset}")
        self.path = os.fspath(path)
        self.base_offset = base_offset
        self._entry_size = entry_size
        self._max_entries = max(max_index_size, 0) // entry_size
        flags = os.O_RDWR | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644)
            self._created = True
        except FileExistsError:
            fd = os.open(self.path, flags)
            self._created = False
        try:
            if self._created:
                # Preallocate (sparse) so appends never resize, as Kafka does.
                os.ftruncate(fd, self._max_entries * entry_size)
            self._file_len = os.fstat(fd).st_size
            self._set_map(_map_file(fd, self._file_len, True, self.path))
        finally:
            os.close(fd)
        # A file created here holds no entry: do not fault its pages in to count them.
        self._entries = 0 if self._created else self._count_valid_entries()

    cdef _set_map(self, _Mapping m):
        self._map = m
        self._addr = m.addr
        self._capacity = m.length // self._entry_size
        if m.addr != NULL:
            # Lookups are binary searches: without this each page fault reads ahead
            # (~64 KiB), and counting the entries of a preallocated index cost ~1.3 MB
            # of resident memory per partition.
            posix_madvise(m.addr, <size_t>m.length, POSIX_MADV_RANDOM)

    cdef bint _is_zero(self, Py_ssize_t slot) noexcept nogil:
        cdef const unsigned char* p = self._addr + slot * self._entry_size
        cdef Py_ssize_t i
        for i in range(self._entry_size):
            if p[i] != 0:
                return False
        return True

    cdef Py_ssize_t _count_valid_entries(self) noexcept nogil:
        # Valid entries are a prefix of non-zero entries (entries after the first
        # have increasing non-zero keys), so binary search for the first zero one.
        cdef Py_ssize_t n = self._capacity, lo, hi, mid
        if n == 0 or not self._is_zero(n - 1):
            return n
        lo = 1
        hi = n - 1                     # known zero
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._is_zero(mid):
                hi = mid
            else:
                lo = mid + 1
        if lo == 1 and self._is_zero(0):
            return 0
        return lo

    cdef _check_open(self):
        if self._closed:
            raise ValueError(f"index {self.path} is closed")

    cdef _resize(self, Py_ssize_t new_len):
        """Set the file length and remap (lookups copy values out, so no view pins the map)."""
        if new_len == self._file_len:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._set_map(_Mapping.__new__(_Mapping))   # unmap before shrinking the file
            os.ftruncate(fd, new_len)
            self._file_len = new_len
            self._set_map(_map_file(fd, new_len, True, self.path))
        except OSError as exc:
            raise KafkaStorageError(f"cannot resize index {self.path} to {new_len} bytes: {exc}") from exc
        finally:
            os.close(fd)

    cdef _preallocate(self):
        """Make room for max_entries before appending (a trimmed file is grown back)."""
        self._check_open()
        if self._capacity < self._max_entries:
            self._resize(self._max_entries * self._entry_size)

    cdef _keep(self, Py_ssize_t n):
        """Keep the first n entries; zero the rest so a crash cannot revive them."""
        if n < self._entries:
            memset(self._addr + n * self._entry_size, 0, (self._entries - n) * self._entry_size)
            self._entries = n

    cdef _rename(self, str new_path):
        os.rename(self.path, new_path)
        self.path = new_path

    @property
    def entries(self) -> int:
        """Number of valid entries."""
        return self._entries

    @property
    def max_entries(self) -> int:
        """Entries allowed by max_index_size (rounded down to whole entries)."""
        return self._max_entries

    @property
    def is_full(self) -> bool:
        """True when no entry can be added: the segment should roll."""
        return self._entries >= self._max_entries

    def reset(self) -> None:
        """Drop all entries."""
        self._check_open()
        self._keep(0)

    def trim_to_valid_size(self) -> None:
        """Shrink the file to exactly entries * entry size (on roll and close)."""
        self._check_open()
        self._resize(self._entries * self._entry_size)

    def flush(self) -> None:
        """msync the mapped entries to disk.

        The GIL is released for the msync: a flush runs on a worker thread and must not
        stall the event loop for the disk's latency.  The local reference keeps the map
        alive if the loop remaps or closes the index meanwhile.
        """
        self._check_open()
        cdef _Mapping m = self._map
        cdef int rc = 0
        if m is None or m.addr == NULL:
            return
        with nogil:
            rc = msync(m.addr, <size_t>m.length, MS_SYNC)
        if rc != 0:
            err = errno
            raise KafkaStorageError(f"cannot flush index {self.path}: {os.strerror(err)}")

    def close(self) -> None:
        """Trim the file to its entries and unmap it.  Idempotent."""
        if self._closed:
            return
        try:
            self.trim_to_valid_size()
        finally:
            self._set_map(_Mapping.__new__(_Mapping))
            self._entries = 0
            self._closed = True

    def delete(self) -> None:
        """Unmap and remove the file (a missing file is fine)."""
        self._set_map(_Mapping.__new__(_Mapping))
        self._entries = 0
        self._closed = True
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    cdef _check_length(self):
        if self._file_len % self._entry_size:
            raise CorruptIndexError(
                f"index {self.path} is {self._file_len} bytes, not a multiple of the "
                f"{self._entry_size}-byte entry size; rebuild it from the .log")


cdef class OffsetIndex(_Index):
    """Sparse offset index: 8-byte entries (relative offset u32, position u32), mmap'd."""

    def __init__(self, path, int64_t base_offset, Py_ssize_t max_index_size=10485760):
        self._open(path, base_offset, max_index_size, OFFSET_ENTRY)

    cdef inline int64_t _offset(self, Py_ssize_t slot) noexcept nogil:
        return self.base_offset + load_be32(self._addr + slot * OFFSET_ENTRY)

    cdef inline int64_t _position(self, Py_ssize_t slot) noexcept nogil:
        return load_be32(self._addr + slot * OFFSET_ENTRY + 4)

    cdef Py_ssize_t _floor_slot(self, int64_t target) noexcept nogil:
        """Slot of the largest entry with offset <= target, or -1."""
        cdef Py_ssize_t lo = 0, hi = self._entries - 1, mid
        if hi < 0 or self._offset(0) > target:
            return -1
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if self._offset(mid) <= target:
                lo = mid
            else:
                hi = mid - 1
        return lo

    cdef int64_t _lookup_position(self, int64_t target) noexcept nogil:
        """Position of the largest entry with offset <= target; 0 if none."""
        cdef Py_ssize_t slot = self._floor_slot(target)
        return 0 if slot < 0 else self._position(slot)

    cdef int64_t _floor_position(self, int64_t position) noexcept nogil:
        """Largest indexed batch start <= position, or -1 (positions increase too)."""
        cdef Py_ssize_t lo = 0, hi = self._entries - 1, mid
        if hi < 0 or self._position(0) > position:
            return -1
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if self._position(mid) <= position:
                lo = mid
            else:
                hi = mid - 1
        return self._position(lo)

    cdef int64_t _last_position(self) noexcept nogil:
        return 0 if self._entries == 0 else self._position(self._entries - 1)

    cdef void _put(self, int64_t offset, int64_t position) noexcept nogil:
        """Append without checks but capacity (the segment guarantees order); full: skip."""
        cdef unsigned char* p
        if self._entries >= self._capacity or self._entries >= self._max_entries:
            return
        p = self._addr + self._entries * OFFSET_ENTRY
        store_be32(p, <uint32_t>(offset - self.base_offset))
        store_be32(p + 4, <uint32_t>position)
        self._entries += 1

    @property
    def last_offset(self) -> int:
        """Offset of the last entry; base_offset when empty."""
        return self.base_offset if self._entries == 0 else self._offset(self._entries - 1)

    def append(self, int64_t offset, int64_t position) -> None:
        """Add (offset, position); offset must exceed last_offset (or be >= base when empty)."""
        self._check_open()
        if self.is_full:
            raise ValueError(f"offset index {self.path} is full ({self._entries} entries): roll")
        if self._entries and offset <= self._offset(self._entries - 1):
            raise ValueError(f"offset {offset} is not above the last indexed offset "
                             f"{self._offset(self._entries - 1)} in {self.path}")
        if not 0 <= offset - self.base_offset <= INT32_MAX:
            raise ValueError(f"offset {offset} does not fit a 32-bit offset relative to "
                             f"{self.base_offset}: roll a new segment")
        if not 0 <= position <= INT32_MAX:
            raise ValueError(f"position {position} must be in [0, 2**31)")
        self._preallocate()
        self._put(offset, position)

    def lookup(self, int64_t target_offset) -> tuple:
        """(offset, position) of the largest entry <= target; (base_offset, 0) if none."""
        self._check_open()
        cdef Py_ssize_t slot = self._floor_slot(target_offset)
        if slot < 0:
            return (self.base_offset, 0)
        return (self._offset(slot), self._position(slot))

    def truncate_to(self, int64_t offset) -> None:
        """Drop entries with offset >= the given one."""
        self._check_open()
        self._keep(self._floor_slot(offset - 1) + 1)

    def sanity_check(self) -> None:
        """Raise CorruptIndexError unless offsets and positions strictly increase."""
        self._check_open()
        self._check_length()
        cdef Py_ssize_t i, bad = -1
        cdef uint32_t rel, pos
        with nogil:
            for i in range(self._entries):
                rel = load_be32(self._addr + i * OFFSET_ENTRY)
                pos = load_be32(self._addr + i * OFFSET_ENTRY + 4)
                if rel > INT32_MAX or pos > INT32_MAX or (
                        i > 0 and (rel <= load_be32(self._addr + (i - 1) * OFFSET_ENTRY)
                                   or pos <= load_be32(self._addr + (i - 1) * OFFSET_ENTRY + 4))):
                    bad = i
                    break
        if bad >= 0:
            raise CorruptIndexError(
                f"offset index {self.path}: entry {bad} (offset {self._offset(bad)}, position "
                f"{self._position(bad)}) does not increase over its predecessor or is out of "
                "range; rebuild it from the .log")


cdef class TimeIndex(_Index):
    """Sparse time index: 12-byte entries (timestamp i64, relative offset u32), mmap'd."""

    def __init__(self, path, int64_t base_offset, Py_ssize_t max_index_size=10485760):
        self._open(path, base_offset, max_index_size, TIME_ENTRY)

    cdef inline int64_t _timestamp(self, Py_ssize_t slot) noexcept nogil:
        return _be64(self._addr + slot * TIME_ENTRY)

    cdef inline int64_t _offset(self, Py_ssize_t slot) noexcept nogil:
        return self.base_offset + load_be32(self._addr + slot * TIME_ENTRY + 8)

    cdef int64_t _last_timestamp(self) noexcept nogil:
        return NO_TIMESTAMP if self._entries == 0 else self._timestamp(self._entries - 1)

    cdef int64_t _last_entry_offset(self) noexcept nogil:
        return self.base_offset if self._entries == 0 else self._offset(self._entries - 1)

    cdef Py_ssize_t _floor_slot(self, int64_t target) noexcept nogil:
        """Slot of the largest entry with timestamp <= target, or -1."""
        cdef Py_ssize_t lo = 0, hi = self._entries - 1, mid
        if hi < 0 or self._timestamp(0) > target:
            return -1
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if self._timestamp(mid) <= target:
                lo = mid
            else:
                hi = mid - 1
        return lo

    cdef void _put(self, int64_t timestamp, int64_t offset) noexcept nogil:
        """Append if timestamp exceeds the last one (Kafka's maybeAppend); full: skip."""
        cdef unsigned char* p
        if timestamp <= self._last_timestamp():
            return
        if self._entries >= self._capacity or self._entries >= self._max_entries:
            return
        p = self._addr + self._entries * TIME_ENTRY
        _put64(p, timestamp)
        store_be32(p + 8, <uint32_t>(offset - self.base_offset))
        self._entries += 1

    @property
    def last_entry(self) -> tuple:
        """(timestamp, offset) of the last entry; (-1, base_offset) if empty."""
        return (self._last_timestamp(), self._last_entry_offset())

    def maybe_append(self, int64_t timestamp, int64_t offset) -> None:
        """Append (timestamp, offset) if timestamp exceeds the last one: the index is monotonic."""
        self._check_open()
        if self._entries:
            if offset < self._last_entry_offset():
                raise ValueError(f"offset {offset} is below the last time-index offset "
                                 f"{self._last_entry_offset()} in {self.path}")
            if timestamp < self._last_timestamp():
                raise ValueError(f"timestamp {timestamp} is below the last time-index timestamp "
                                 f"{self._last_timestamp()} in {self.path}")
        if timestamp <= self._last_timestamp():
            return
        if self.is_full:
            raise ValueError(f"time index {self.path} is full ({self._entries} entries): roll")
        if not 0 <= offset - self.base_offset <= INT32_MAX:
            raise ValueError(f"offset {offset} does not fit a 32-bit offset relative to "
                             f"{self.base_offset}: roll a new segment")
        self._preallocate()
        self._put(timestamp, offset)

    def lookup(self, int64_t target_timestamp) -> tuple:
        """(timestamp, offset) of the largest entry with timestamp <= target; (-1, base) if none."""
        self._check_open()
        cdef Py_ssize_t slot = self._floor_slot(target_timestamp)
        if slot < 0:
            return (NO_TIMESTAMP, self.base_offset)
        return (self._timestamp(slot), self._offset(slot))

    def truncate_to(self, int64_t offset) -> None:
        """Drop entries with offset >= the given one (offsets never decrease)."""
        self._check_open()
        cdef Py_ssize_t lo = 0, hi = self._entries, mid
        while lo < hi:                 # first slot with offset >= target
            mid = (lo + hi) >> 1
            if self._offset(mid) < offset:
                lo = mid + 1
            else:
                hi = mid
        self._keep(lo)

    def sanity_check(self) -> None:
        """Raise CorruptIndexError unless timestamps increase and offsets never decrease."""
        self._check_open()
        self._check_length()
        cdef Py_ssize_t i, bad = -1
        cdef uint32_t rel
        cdef int64_t ts
        with nogil:
            for i in range(self._entries):
                ts = self._timestamp(i)
                rel = load_be32(self._addr + i * TIME_ENTRY + 8)
                if ts < 0 or rel > INT32_MAX or (
                        i > 0 and (ts <= self._timestamp(i - 1)
                                   or rel < load_be32(self._addr + (i - 1) * TIME_ENTRY + 8))):
                    bad = i
                    break
        if bad >= 0:
            raise CorruptIndexError(
                f"time index {self.path}: entry {bad} (timestamp {self._timestamp(bad)}, offset "
                f"{self._offset(bad)}) is out of order or out of range; rebuild it from the .log")


# ---------------------------------------------------------------------------
# the segment

cdef class LogSegment:
    """A .log file with its two indexes.  Appends whole, already-validated batches.

    Opening creates missing files.  A segment whose .log is not empty must be
    ``load()``-ed (clean shutdown) or ``recover()``-ed before ``append`` and before
    ``next_offset``/``max_timestamp`` are read; reads work either way.
    """

    cdef readonly int64_t base_offset
    cdef readonly str directory
    cdef str _prefix
    cdef str _suffix
    cdef str _log_path
    cdef int _fd                       # _file.fd while open, -1 after close()/delete()
    cdef FileHandle _file              # shared with the FileRanges read() hands out
    cdef Py_ssize_t _size
    cdef Py_ssize_t _index_interval_bytes
    cdef OffsetIndex _oi
    cdef TimeIndex _ti
    cdef _Mapping _map                 # current map of the .log; older ones live on in views
    cdef set _views                    # live _LogView exporters
    cdef bint _loaded                  # next_offset etc. are known
    cdef bint _max_ts_loaded
    cdef bint _recovering
    cdef int64_t _next_offset
    cdef int64_t _max_ts
    cdef int64_t _offset_of_max_ts
    cdef int64_t _first_batch_ts      # -2: not read yet
    cdef Py_ssize_t _last_index_position

    def __cinit__(self):
        self._fd = -1

    def __init__(self, directory, int64_t base_offset, *, Py_ssize_t index_interval_bytes=4096,
                 Py_ssize_t max_index_size=10485760, str file_suffix=""):
        if base_offset < 0:
            raise ValueError(f"base offset must be >= 0, got {base_offset}")
        if index_interval_bytes < 0:
            raise ValueError(f"index_interval_bytes must be >= 0, got {index_interval_bytes}")
        self.directory = os.fspath(directory)
        self.base_offset = base_offset
        self._index_interval_bytes = index_interval_bytes
        self._prefix = os.path.join(self.directory, f"{base_offset:020d}")
        self._suffix = file_suffix
        self._log_path = self._prefix + ".log" + file_suffix
        self._views = set()
        self._first_batch_ts = -2
        self._fd = os.open(self._log_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._file = FileHandle(self._fd)
        try:
            self._size = os.fstat(self._fd).st_size
            self._oi = OffsetIndex(self._prefix + ".index" + file_suffix, base_offset,
                                   max_index_size)
            self._ti = TimeIndex(self._prefix + ".timeindex" + file_suffix, base_offset,
                                 max_index_size)
        except BaseException:
            self._release_file()
            raise
        if self._size == 0:
            # Nothing to index: whatever the index files hold is stale.
            self._oi.reset()
            self._ti.reset()
            self._oi._created = self._ti._created = False
            self._reset_state()

    def __repr__(self):
        return f"LogSegment({self._log_path!r}, size={self._size})"

    cdef _reset_state(self):
        self._loaded = True
        self._max_ts_loaded = True
        self._next_offset = self.base_offset
        self._max_ts = NO_TIMESTAMP
        self._offset_of_max_ts = self.base_offset
        self._last_index_position = 0
        self._first_batch_ts = -2

    # -- state ---------------------------------------------------------------

    cdef _check_open(self):
        if self._fd < 0:
            raise ValueError(f"segment {self._log_path} is closed")

    cdef _release_file(self):
        """Drop the segment's reference to the .log descriptor: it closes now, or when the
        last FileRange still sending from it goes."""
        self._fd = -1
        self._file = None
        self._map = None

    cdef _require_loaded(self):
        self._check_open()
        if not self._loaded:
            raise RuntimeError(f"segment {self._log_path} was opened on existing data: "
                               "call load() or recover() first")

    @property
    def size(self) -> int:
        """Bytes in the .log."""
        return self._size

    @property
    def next_offset(self) -> int:
        """Last offset + 1; base_offset when empty."""
        self._require_loaded()
        return self._next_offset

    @property
    def max_timestamp(self) -> int:
        """Largest batch max timestamp; -1 when empty."""
        self._require_loaded()
        self._ensure_max_timestamp()
        return self._max_ts

    @property
    def first_batch_timestamp(self) -> int:
        """Max timestamp of the first batch (Kafka's rolling timestamp); -1 when empty."""
        cdef BatchInfo info
        self._check_open()
        if self._size == 0:
            return NO_TIMESTAMP
        if self._first_batch_ts == -2:
            if self._batch(0, &info) == 0:
                return NO_TIMESTAMP
            self._first_batch_ts = info.max_timestamp
        return self._first_batch_ts

    @property
    def log_path(self) -> str:
        return self._log_path

    @property
    def offset_index(self) -> OffsetIndex:
        return self._oi

    @property
    def time_index(self) -> TimeIndex:
        return self._ti

    @property
    def last_modified_ms(self) -> int:
        """mtime of the .log in ms (retention by time)."""
        st = os.fstat(self._fd) if self._fd >= 0 else os.stat(self._log_path)
        return st.st_mtime_ns // 1_000_000

    def should_roll_for_index(self) -> bool:
        """True when either index is full."""
        return self._oi.is_full or self._ti.is_full

    # -- .log mapping and header scans ---------------------------------------

    cdef _Mapping _log_map(self, Py_ssize_t end):
        """A map covering [0, end); grows geometrically so tailing readers rarely remap."""
        cdef _Mapping m = self._map
        cdef Py_ssize_t cap
        if m is None or m.length < end:
            cap = max(end, 2 * (m.length if m is not None else 0), MAP_GRANULE)
            cap = (cap + MAP_GRANULE - 1) // MAP_GRANULE * MAP_GRANULE
            m = _map_file(self._fd, cap, False, self._log_path)
            self._map = m
        return m

    cdef Py_ssize_t _batch(self, Py_ssize_t pos, BatchInfo* info) except -1:
        """Size of the whole batch at pos, 0 at the end of the log; raises on a bad length."""
        cdef Py_ssize_t size
        if pos < 0 or pos >= self._size:
            return 0
        size = _batch_at(self._log_map(self._size).addr, pos, self._size, info)
        if size < 0:
            raise self._corrupt(pos)
        return size

    cdef _corrupt(self, Py_ssize_t pos):
        return CorruptMessageError(
            f"{self._log_path}: invalid batch length at position {pos}; the segment needs "
            "recovery (restart the broker after an unclean shutdown, or recover() the segment)")

    cdef Py_ssize_t _locate(self, int64_t offset, Py_ssize_t start, BatchInfo* info) except -2:
        """Position of the first batch at or after start with last_offset >= offset; -1 if none."""
        cdef Py_ssize_t pos, size, end = self._size
        cdef const unsigned char* buf
        self._check_open()
        if end == 0:
            return -1
        pos = max(<Py_ssize_t>self._oi._lookup_position(offset), start)
        buf = self._log_map(end).addr
        while True:
            size = _batch_at(buf, pos, end, info)
            if size == 0:
                return -1
            if size < 0:
                raise self._corrupt(pos)
            if _last_offset(info) >= offset:
                return pos
            pos += size

    cdef int64_t _scan_tail(self, Py_ssize_t pos, bint* clean) except? -2:
        """Last offset of the last batch from pos on (-1 if none); clean = ends at EOF."""
        cdef BatchInfo info
        cdef Py_ssize_t size, end = self._size
        cdef int64_t last = -1
        cdef const unsigned char* buf
        clean[0] = pos == end
        if pos >= end:
            return last
        buf = self._log_map(end).addr
        while True:
            size = _batch_at(buf, pos, end, &info)
            if size <= 0:
                break
            last = _last_offset(&info)
            pos += size
        clean[0] = pos == end
        return last

    cdef _ensure_max_timestamp(self):
        """Largest timestamp from the last time-index entry plus the batches after it."""
        cdef BatchInfo info
        cdef Py_ssize_t pos, size, end = self._size
        cdef const unsigned char* buf
        cdef int64_t ts, off
        if self._max_ts_loaded:
            return
        ts = self._ti._last_timestamp()
        off = self._ti._last_entry_offset()
        if end > 0:
            pos = self._oi._lookup_position(off)
            buf = self._log_map(end).addr
            while True:
                size = _batch_at(buf, pos, end, &info)
                if size <= 0:
                    break
                if info.max_timestamp > ts:
                    ts = info.max_timestamp
                    off = _last_offset(&info)
                pos += size
        self._max_ts = ts
        self._offset_of_max_ts = off
        self._max_ts_loaded = True

    cdef void _index_batch(self, Py_ssize_t position, int64_t last_offset,
                           int64_t max_timestamp) noexcept nogil:
        """Kafka's per-batch index step, shared by append and recover."""
        if max_timestamp > self._max_ts:
            self._max_ts = max_timestamp
            self._offset_of_max_ts = last_offset
        if position - self._last_index_position > self._index_interval_bytes:
            self._oi._put(last_offset, position)
            self._ti._put(self._max_ts, self._offset_of_max_ts)
            self._last_index_position = position

    cdef _truncate_log(self, Py_ssize_t new_size):
        for v in self._views:
            if (<_LogView>v).start + (<_LogView>v).length > new_size:
                raise BufferError(
                    f"cannot truncate {self._log_path} to {new_size} bytes: a view of bytes "
                    f"[{(<_LogView>v).start}, {(<_LogView>v).start + (<_LogView>v).length}) "
                    "is still exported; release it first")
        try:
            os.ftruncate(self._fd, new_size)
        except OSError as exc:
            raise KafkaStorageError(f"cannot truncate {self._log_path}: {exc}") from exc
        self._size = new_size
        if new_size == 0:
            self._first_batch_ts = -2

    # -- writing ---------------------------------------------------------------

    def append(self, int64_t largest_offset, int64_t max_timestamp,
               int64_t offset_of_max_timestamp, records) -> int:
        """Append one or more whole batches; return the position they start at.

        Index entries are added per batch every index_interval_bytes, from the
        batch headers (the truth recovery also uses); ``max_timestamp`` and
        ``offset_of_max_timestamp`` are accepted for Kafka's signature but the
        headers decide.  ``largest_offset`` must be the last batch's last offset.
        """
        cdef const unsigned char[::1] data = records
        cdef Py_ssize_t n = data.shape[0], pos = 0, size, position
        cdef int64_t next_offset, last
        cdef const unsigned char* buf
        cdef BatchInfo info
        cdef int err
        self._require_loaded()
        if self._recovering:
            raise RuntimeError(f"segment {self._log_path} is being recovered")
        if n == 0:
            return self._size
        buf = &data[0]
        next_offset = self._next_offset
        while pos < n:
            size = _batch_at(buf, pos, n, &info)
            if size <= 0:
                raise CorruptMessageError(
                    f"append to {self._log_path}: bytes {pos}..{n} are not a whole v2 record "
                    "batch; pass only complete, validated batches")
            last = _last_offset(&info)
            if info.base_offset < next_offset or info.last_offset_delta < 0:
                raise ValueError(f"append to {self._log_path}: batch at byte {pos} has offsets "
                                 f"{info.base_offset}..{last}, below the next offset "
                                 f"{next_offset}; offsets must increase")
            if last - self.base_offset > INT32_MAX:
                raise ValueError(f"append to {self._log_path}: offset {last} does not fit a "
                                 "32-bit relative offset; roll a new segment first")
            next_offset = last + 1
            pos += size
        if largest_offset != next_offset - 1:
            raise ValueError(f"largest_offset {largest_offset} does not match the last batch's "
                             f"last offset {next_offset - 1}")
        if self._size + n > INT32_MAX:
            raise ValueError(f"append of {n} bytes would take {self._log_path} past 2 GiB "
                             "(32-bit index positions); roll a new segment first")
        self._ensure_max_timestamp()
        self._oi._preallocate()
        self._ti._preallocate()

        position = self._size
        with nogil:
            err = _pwrite_all(self._fd, buf, n, position)
        if err:
            try:
                os.ftruncate(self._fd, position)   # a partial write must not stay visible
            except OSError:
                pass
            raise KafkaStorageError(f"cannot write {n} bytes to {self._log_path}: "
                                    f"{os.strerror(err)}")
        self._size = position + n
        pos = 0
        while pos < n:
            size = _batch_at(buf, pos, n, &info)
            self._index_batch(position + pos, _last_offset(&info), info.max_timestamp)
            pos += size
        self._next_offset = next_offset
        return position

    # -- loading and recovery --------------------------------------------------

    def load(self) -> None:
        """Trust the files after a clean shutdown; falls back to recover() on any doubt."""
        cdef BatchInfo info
        cdef Py_ssize_t pos
        cdef int64_t last
        cdef bint clean
        self._check_open()
        if self._size == 0:
            self._reset_state()
            return
        if self._oi._created or self._ti._created:
            self.recover()
            return
        try:
            self._oi.sanity_check()
            self._ti.sanity_check()
        except CorruptIndexError:
            self.recover()
            return
        pos = self._oi._last_position()
        if self._oi._entries:
            # The last entry must point at the batch it indexes.
            if (pos >= self._size or _batch_at(self._log_map(self._size).addr, pos, self._size,
                                               &info) <= 0
                    or not (info.base_offset <= self._oi._offset(self._oi._entries - 1)
                            <= _last_offset(&info))):
                self.recover()
                return
        last = self._scan_tail(pos, &clean)
        if not clean or last < 0 or self._ti._last_entry_offset() > last:
            self.recover()
            return
        self._loaded = True
        self._next_offset = last + 1
        self._last_index_position = pos
        self._max_ts_loaded = False

    def recover(self, Py_ssize_t max_batch_size=0) -> int:
        """Rebuild both indexes from the .log, validating every batch (length, magic, CRC,
        count, attributes, size <= max_batch_size if > 0, increasing offsets); truncate the
        .log at the first invalid batch; return the number of bytes truncated."""
        cdef Py_ssize_t pos = 0, size, end
        cdef int64_t next_offset
        cdef const unsigned char* buf = NULL
        cdef BatchInfo info
        cdef _Mapping m
        self._check_open()
        if self._recovering:
            raise RuntimeError(f"segment {self._log_path} is already being recovered")
        self._oi.reset()
        self._ti.reset()
        self._oi._preallocate()
        self._ti._preallocate()
        self._oi._created = self._ti._created = False
        self._reset_state()
        end = self._size
        if end > 0:
            m = self._log_map(end)          # held locally: no remap can unmap it mid-scan
            buf = m.addr
            posix_madvise(m.addr, <size_t>end, POSIX_MADV_SEQUENTIAL)
        next_offset = self.base_offset
        self._recovering = True
        try:
            with nogil:
                while pos < end:
                    if check_batch(buf + pos, end - pos, max_batch_size, &info) != BATCH_OK:
                        break
                    if (info.base_offset < next_offset
                            or _last_offset(&info) - self.base_offset > INT32_MAX):
                        break
                    size = <Py_ssize_t>info.batch_length + LOG_OVERHEAD
                    self._index_batch(pos, _last_offset(&info), info.max_timestamp)
                    next_offset = _last_offset(&info) + 1
                    pos += size
        finally:
            self._recovering = False
        self._next_offset = next_offset
        truncated = end - pos
        if truncated:
            try:
                self._truncate_log(pos)
            except BaseException:
                self._loaded = False       # indexes describe a shorter log: recover again
                raise
        self._oi.trim_to_valid_size()
        self._ti.trim_to_valid_size()
        return truncated

    # -- reading -----------------------------------------------------------------

    def translate_offset(self, int64_t offset, Py_ssize_t starting_position=0):
        """BatchPosition of the first batch (from starting_position, a batch start) with
        last_offset >= offset, or None when the segment has no such batch."""
        cdef BatchInfo info
        cdef Py_ssize_t pos = self._locate(offset, starting_position, &info)
        if pos < 0:
            return None
        return _batch_position(pos, &info)

    def read(self, int64_t start_offset, Py_ssize_t max_size, Py_ssize_t max_position=-1,
             bint min_one_batch=True):
        """FileRange of whole batches from the one containing start_offset.

        At most max_size bytes, except that with min_one_batch the first batch is
        returned whole even if larger; never past max_position (-1: end of log).
        None when no batch has last_offset >= start_offset; a FileRange of length 0
        when the first batch does not fit (past max_position, or too big without
        min_one_batch).
        """
        cdef BatchInfo info
        cdef Py_ssize_t pos, end, limit, first, size, jump
        cdef const unsigned char* buf
        if max_size < 0:
            raise ValueError(f"max_size must be >= 0, got {max_size}")
        pos = self._locate(start_offset, 0, &info)
        if pos < 0:
            return None
        first = <Py_ssize_t>info.batch_length + LOG_OVERHEAD
        limit = self._size if max_position < 0 else min(max_position, self._size)
        max_size = min(max_size, self._size)          # keeps pos + max_size from overflowing
        limit = min(limit, pos + (max(max_size, first) if min_one_batch else max_size))
        if pos + first > limit:
            return FileRange(self._fd, pos, 0, self._file)
        end = pos + first
        # Indexed positions are batch starts: skip straight to the last one that fits.
        jump = self._oi._floor_position(limit)
        if jump > end:
            end = jump
        buf = self._log_map(self._size).addr
        while True:
            size = _batch_at(buf, end, limit, &info)
            if size <= 0:
                break
            end += size
        return FileRange(self._fd, pos, end - pos, self._file)

    def view(self, Py_ssize_t position, Py_ssize_t length) -> memoryview:
        """Read-only memoryview of .log bytes [position, position+length), over an mmap.

        The view stays valid after close()/delete() and across appends; truncating
        bytes it covers is refused with BufferError until it is released.
        """
        cdef _LogView v
        self._check_open()
        if position < 0 or length < 0 or position > self._size or length > self._size - position:
            raise ValueError(f"view [{position}, {position + length}) is outside "
                             f"{self._log_path} (size {self._size})")
        if length == 0:
            return memoryview(b"")
        v = _LogView.__new__(_LogView)
        v.mapping = self._log_map(self._size)
        v.start = position
        v.length = length
        v.live = self._views
        return memoryview(v)

    def batches(self, Py_ssize_t start_position=0):
        """Yield BatchPosition for each batch from start_position (header scan, no CRC).

        start_position must be a batch start.  Stops at the end of the log or at an
        incomplete tail; raises CorruptMessageError on an invalid length field.
        """
        cdef BatchInfo info
        cdef Py_ssize_t pos = start_position, size
        while True:
            self._check_open()
            size = self._batch(pos, &info)
            if size == 0:
                return
            yield _batch_position(pos, &info)
            pos += size

    def find_offset_by_timestamp(self, int64_t timestamp, int64_t starting_offset=0):
        """(base_offset, max_timestamp) of the first batch with max_timestamp >= timestamp and
        last_offset >= starting_offset, or None.  The exact record is found by iterating
        that batch (translate_offset(base_offset) gives its position)."""
        cdef BatchInfo info
        cdef Py_ssize_t pos, size, end = self._size
        cdef const unsigned char* buf
        cdef int64_t entry_offset
        self._check_open()
        if end == 0:
            return None
        slot = self._ti._floor_slot(timestamp)
        entry_offset = self.base_offset if slot < 0 else self._ti._offset(slot)
        pos = self._oi._lookup_position(max(entry_offset, starting_offset))
        buf = self._log_map(end).addr
        while True:
            size = _batch_at(buf, pos, end, &info)
            if size == 0:
                return None
            if size < 0:
                raise self._corrupt(pos)
            if info.max_timestamp >= timestamp and _last_offset(&info) >= starting_offset:
                return (info.base_offset, info.max_timestamp)
            pos += size

    # -- truncation and file management ------------------------------------------

    def truncate_to(self, int64_t offset) -> int:
        """Drop the batch containing offset (first with last_offset >= offset) and all after,
        as Kafka's LogSegment.truncateTo; indexes follow.  Return bytes removed."""
        cdef BatchInfo info
        cdef Py_ssize_t pos
        cdef int64_t last
        cdef bint clean
        self._require_loaded()
        if self._recovering:
            raise RuntimeError(f"segment {self._log_path} is being recovered")
        pos = self._locate(offset, 0, &info)
        if pos < 0:
            return 0
        removed = self._size - pos
        self._truncate_log(pos)            # first: it may refuse (BufferError)
        self._oi.truncate_to(offset)
        # A time entry is written together with the first offset entry at or after
        # its offset; drop those whose offset entry went, so the indexes equal a
        # fresh build of what is left (Kafka keeps them; they are harmless but stale).
        if self._oi._entries:
            self._ti.truncate_to(self._oi._offset(self._oi._entries - 1) + 1)
        else:
            self._ti.reset()
        self._last_index_position = self._oi._last_position()
        last = self._scan_tail(self._last_index_position, &clean)
        self._next_offset = self.base_offset if last < 0 else last + 1
        self._max_ts_loaded = False
        return removed

    def flush(self) -> None:
        """fsync the .log and msync both indexes."""
        self._check_open()
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise KafkaStorageError(f"cannot fsync {self._log_path}: {exc}") from exc
        self._oi.flush()
        self._ti.flush()

    def close(self) -> None:
        """Trim the indexes and close the files.  Live views keep their maps, and live
        FileRanges their descriptor.  Idempotent."""
        if self._fd < 0:
            return
        try:
            self._oi.close()
            self._ti.close()
        finally:
            self._release_file()

    def delete(self) -> None:
        """Close and remove all three files (missing files are fine).

        A FileRange read before keeps the .log's descriptor open, and its bytes
        readable, until it goes.
        """
        self._release_file()
        self._oi.delete()
        self._ti.delete()
        try:
            os.unlink(self._log_path)
        except FileNotFoundError:
            pass

    def change_file_suffix(self, str old_suffix, str new_suffix) -> None:
        """Rename all three files, e.g. "" -> ".deleted", ".cleaned" -> ".swap"."""
        if self._suffix != old_suffix:
            raise ValueError(f"{self._log_path} does not end with suffix {old_suffix!r}")
        new_log = self._prefix + ".log" + new_suffix
        os.rename(self._log_path, new_log)
        self._log_path = new_log
        self._oi._rename(self._prefix + ".index" + new_suffix)
        self._ti._rename(self._prefix + ".timeindex" + new_suffix)
        self._suffix = new_suffix
