"""Contract of pystream._core.segment (implemented in segment.pyx).

One segment = ``<base_offset:020d>.log`` + ``.index`` + ``.timeindex`` in a
partition directory.  Offsets passed in and out are absolute; the index files
store them relative to ``base_offset`` as Kafka does.  Nothing here knows
about topics, configs or time: the storage layer decides when to roll.
"""

from collections.abc import Iterator
from typing import NamedTuple

class FileHandle:
    """An open file descriptor, closed when the last reference (segment or FileRange) goes."""

    fd: int
    def __init__(self, fd: int) -> None: ...

class FileRange(NamedTuple):
    """Bytes [position, position+length) of an open .log file, for os.sendfile.

    ``file`` owns ``fd``: while it is referenced, ``fd`` stays open (also after the
    segment is closed or deleted)."""

    fd: int
    position: int
    length: int
    file: FileHandle | None = None

class BatchPosition(NamedTuple):
    """Where one batch lives in a segment and what its header says."""

    position: int
    size: int  # whole batch: length field + 12
    base_offset: int
    last_offset: int
    max_timestamp: int
    partition_leader_epoch: int

class CorruptIndexError(Exception):
    """An index file is inconsistent (e.g. offsets not increasing); rebuild it."""

class OffsetIndex:
    """Sparse offset index: 8-byte entries (relative offset u32, position u32), mmap'd."""

    path: str
    base_offset: int
    def __init__(self, path: str, base_offset: int, max_index_size: int = 10485760) -> None: ...
    @property
    def entries(self) -> int: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def is_full(self) -> bool: ...
    @property
    def last_offset(self) -> int: ...  # base_offset when empty
    def append(self, offset: int, position: int) -> None: ...  # offset > last_offset
    def lookup(self, target_offset: int) -> tuple[int, int]: ...
    # (offset, position) of the largest entry <= target; (base_offset, 0) if none
    def truncate_to(self, offset: int) -> None: ...  # drop entries with offset >= given
    def reset(self) -> None: ...  # drop all entries
    def sanity_check(self) -> None: ...  # raises CorruptIndexError
    def trim_to_valid_size(self) -> None: ...  # shrink the file to entries * 8
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def delete(self) -> None: ...

class TimeIndex:
    """Sparse time index: 12-byte entries (timestamp i64, relative offset u32), mmap'd."""

    path: str
    base_offset: int
    def __init__(self, path: str, base_offset: int, max_index_size: int = 10485760) -> None: ...
    @property
    def entries(self) -> int: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def is_full(self) -> bool: ...
    @property
    def last_entry(self) -> tuple[int, int]: ...  # (timestamp, offset); (-1, base_offset) if empty
    def maybe_append(self, timestamp: int, offset: int) -> None: ...
    # appends only if timestamp > last timestamp (the index is monotonic)
    def lookup(self, target_timestamp: int) -> tuple[int, int]: ...
    # (timestamp, offset) of the largest entry with timestamp <= target; (-1, base_offset) if none
    def truncate_to(self, offset: int) -> None: ...
    def reset(self) -> None: ...
    def sanity_check(self) -> None: ...
    def trim_to_valid_size(self) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def delete(self) -> None: ...

class LogSegment:
    """A .log file with its two indexes.  Appends whole, already-validated batches."""

    base_offset: int
    directory: str
    def __init__(
        self,
        directory: str,
        base_offset: int,
        *,
        index_interval_bytes: int = 4096,
        max_index_size: int = 10485760,
        file_suffix: str = "",
    ) -> None: ...
    # Opens or creates the files.  An existing segment must be recovered
    # (recover()) or have its state loaded (load()) before it is appended to.
    @property
    def size(self) -> int: ...  # bytes in .log
    @property
    def next_offset(self) -> int: ...  # last offset + 1; base_offset when empty
    @property
    def max_timestamp(self) -> int: ...  # -1 when empty
    @property
    def first_batch_timestamp(self) -> int: ...  # -1 when empty (for segment.ms)
    @property
    def log_path(self) -> str: ...
    @property
    def offset_index(self) -> OffsetIndex: ...
    @property
    def time_index(self) -> TimeIndex: ...
    def should_roll_for_index(self) -> bool: ...  # either index full
    def append(
        self,
        largest_offset: int,
        max_timestamp: int,
        offset_of_max_timestamp: int,
        records: bytes | bytearray | memoryview,
    ) -> int: ...
    # appends the bytes (one or more whole batches), adds index entries every
    # index_interval_bytes; returns the position the bytes start at.
    # Index entries and max_timestamp come from the batch headers (as recover() sees
    # them); largest_offset must equal the last batch's last offset (else ValueError).
    # Raises CorruptMessageError if records are not whole batches, ValueError if
    # offsets do not increase / do not fit 32-bit relative offsets / the .log would pass 2 GiB.
    def load(self) -> None: ...
    # trusts the files (clean shutdown): reads next_offset / max_timestamp from the
    # last index entries plus a header scan of the tail; rebuilds an index that fails sanity_check
    def recover(self, max_batch_size: int = 0) -> int: ...
    # rebuilds both indexes from the .log, validating each batch (length, magic, CRC,
    # count); truncates the .log at the first invalid batch; returns bytes truncated
    def translate_offset(self, offset: int, starting_position: int = 0) -> BatchPosition | None: ...
    # the first batch whose last_offset >= offset
    def read(
        self, start_offset: int, max_size: int, max_position: int = -1, min_one_batch: bool = True
    ) -> FileRange | None: ...
    # whole batches from the one containing start_offset, at most max_size bytes
    # (but the first batch whole if min_one_batch); never past max_position (-1 = end).
    # None: no batch with last_offset >= start_offset.  length 0: the first batch does
    # not fit (beyond max_position, or larger than max_size without min_one_batch).
    # fd stays open while the FileRange (its file handle) is alive, even past close()/delete().
    def view(self, position: int, length: int) -> memoryview: ...  # read-only, over an mmap of .log
    # views survive appends, close() and delete(); truncate_to()/recover() raise BufferError
    # while a live view covers bytes they would cut
    def batches(
        self, start_position: int = 0
    ) -> Iterator[BatchPosition]: ...  # header scan, no CRC
    def find_offset_by_timestamp(
        self, timestamp: int, starting_offset: int = 0
    ) -> tuple[int, int] | None: ...
    # (offset, max_timestamp) of the first batch with max_timestamp >= timestamp and
    # last_offset >= starting_offset;
    # offset is that batch's base offset (iterate its records for the exact one)
    def truncate_to(self, offset: int) -> int: ...
    # drop the batch containing offset (first with last_offset >= offset) and all after,
    # as Kafka's LogSegment.truncateTo; indexes follow; returns bytes removed
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def delete(self) -> None: ...
    def change_file_suffix(self, old_suffix: str, new_suffix: str) -> None: ...
    # renames all three files, e.g. "" -> ".deleted", ".cleaned" -> ".swap"
    @property
    def last_modified_ms(
        self,
    ) -> int: ...  # mtime of .log, for retention by time on empty/old segments
