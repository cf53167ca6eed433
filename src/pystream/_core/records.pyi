"""Contract of pystream._core.records: RecordBatch v2 (magic 2), see records.pyx.

Errors (all from pystream.errors) follow Kafka: CorruptMessageError for
truncation, bad length, bad CRC, bad magic (> 2), undecodable compressed data;
InvalidRecordError for magic 0/1, count/offset inconsistencies, unknown codec
ids, client-rule violations and malformed records; MessageTooLargeError over
max_batch_size; InvalidTimestampError for producer-set LogAppendTime;
UnsupportedCompressionTypeError for zstd before Produce v7.
"""

from collections.abc import Iterable, Iterator, Sequence
from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt

# Any C-contiguous buffer of bytes (read-only ones too).
Buffer: TypeAlias = bytes | bytearray | memoryview
# Writable C-contiguous buffer (assign_offsets patches in place).
WritableBuffer: TypeAlias = bytearray | memoryview
Header: TypeAlias = tuple[str, bytes | None]
HeaderIn: TypeAlias = tuple[str | bytes, bytes | bytearray | memoryview | None]
BytesIn: TypeAlias = bytes | bytearray | memoryview | None

COMPRESSION_NONE: Final = 0
COMPRESSION_GZIP: Final = 1
COMPRESSION_SNAPPY: Final = 2
COMPRESSION_LZ4: Final = 3
COMPRESSION_ZSTD: Final = 4
CODEC_NAMES: Final[dict[int, str]]

ATTR_CODEC_MASK: Final = 0x07
ATTR_TIMESTAMP_TYPE: Final = 0x08
ATTR_TRANSACTIONAL: Final = 0x10
ATTR_CONTROL: Final = 0x20
ATTR_DELETE_HORIZON: Final = 0x40

TIMESTAMP_CREATE_TIME: Final = 0
TIMESTAMP_LOG_APPEND_TIME: Final = 1
NO_TIMESTAMP: Final = -1
NO_PRODUCER_ID: Final = -1
NO_PRODUCER_EPOCH: Final = -1
NO_SEQUENCE: Final = -1
NO_PARTITION_LEADER_EPOCH: Final = -1
MAGIC: Final = 2
BATCH_OVERHEAD: Final = 61  # header size = smallest batch
LOG_OVERHEAD: Final = 12  # base offset + length field, not counted by the length
MIN_RECORD_SIZE: Final = 7  # smallest encoded record
CONTROL_ABORT: Final = 0
CONTROL_COMMIT: Final = 1
DEFAULT_MAX_DECOMPRESSED_SIZE: Final[int]  # 128 MiB

class BatchHeader:
    """The 61-byte header of one batch (read-only)."""

    @property
    def base_offset(self) -> int: ...
    @property
    def batch_length(self) -> int: ...  # the length field
    @property
    def size(self) -> int: ...  # batch_length + 12
    @property
    def partition_leader_epoch(self) -> int: ...
    @property
    def magic(self) -> int: ...
    @property
    def crc(self) -> int: ...
    @property
    def attributes(self) -> int: ...
    @property
    def compression(self) -> int: ...  # codec id 0..4
    @property
    def timestamp_type(self) -> int: ...  # 0 CreateTime, 1 LogAppendTime
    @property
    def is_transactional(self) -> bool: ...
    @property
    def is_control(self) -> bool: ...
    @property
    def has_delete_horizon(self) -> bool: ...
    @property
    def last_offset_delta(self) -> int: ...
    @property
    def last_offset(self) -> int: ...
    @property
    def next_offset(self) -> int: ...
    @property
    def base_timestamp(self) -> int: ...
    @property
    def max_timestamp(self) -> int: ...
    @property
    def producer_id(self) -> int: ...
    @property
    def has_producer_id(self) -> bool: ...
    @property
    def producer_epoch(self) -> int: ...
    @property
    def base_sequence(self) -> int: ...
    @property
    def last_sequence(self) -> int: ...  # wraps at 2**31-1; -1 without sequence
    @property
    def record_count(self) -> int: ...

def read_batch_header(buf: Buffer, position: int = 0) -> BatchHeader: ...

# header only (61 bytes needed), length field and magic checked, no CRC
def validate_batch(buf: Buffer, position: int = 0, max_batch_size: int = 0) -> BatchHeader: ...

# full check: whole batch present, length, magic 2, size <= max_batch_size (0 = none),
# CRC, codec id, 0 <= record_count <= last_offset_delta + 1

class AppendInfo:
    """Result of validate_produce_records.

    Deltas are relative to the first offset assign_offsets gives.
    """

    @property
    def batch_count(self) -> int: ...
    @property
    def record_count(self) -> int: ...  # sum of record counts
    @property
    def offset_count(self) -> int: ...  # sum of last_offset_delta + 1: offsets to assign
    @property
    def first_offset(self) -> int: ...  # base offset of the first batch as sent
    @property
    def last_offset(self) -> int: ...  # last offset of the last batch as sent
    @property
    def offsets_monotonic(self) -> bool: ...  # batches' offsets increase as sent
    @property
    def max_timestamp(self) -> int: ...  # largest batch max_timestamp
    @property
    def offset_delta_of_max_timestamp(self) -> int: ...  # last offset (delta) of that batch
    @property
    def shallow_offset_of_max_timestamp(self) -> int: ...  # same, as sent (follower path)
    @property
    def last_offset_delta_of_first_batch(self) -> int: ...
    @property
    def producer_id(self) -> int: ...  # first batch
    @property
    def producer_epoch(self) -> int: ...  # first batch
    @property
    def base_sequence(self) -> int: ...  # first batch
    @property
    def last_sequence(self) -> int: ...  # last batch
    @property
    def is_transactional(self) -> bool: ...  # first batch
    @property
    def is_control(self) -> bool: ...  # first batch
    @property
    def compression(self) -> int: ...  # last non-none codec seen (Kafka's sourceCompression)
    @property
    def codecs(self) -> int: ...  # bit (1 << codec id) per codec seen
    @property
    def size_in_bytes(self) -> int: ...
    @property
    def decompressed(self) -> bytes | None: ...  # keep_decompressed: the records section

def validate_produce_records(
    records: Buffer,
    max_batch_size: int = 0,
    *,
    api_version: int = 9,
    client: bool = True,
    walk_records: bool = False,
    compacted: bool = False,
    now_ms: int = -1,
    timestamp_before_max_ms: int = ...,
    timestamp_after_max_ms: int = ...,
    topic_partition: str = "",
    max_decompressed_size: int = 0,
    keep_decompressed: bool = False,
) -> AppendInfo: ...

# client=True: Kafka's producer rules (exactly one batch, base offset 0,
# count == last_offset_delta + 1 > 0, no control batch, sequence when pid set,
# CreateTime only, zstd needs api_version >= 7).  client=False: replication /
# coordinator appends (several batches, control and compacted batches allowed).
# walk_records=True (a leader append, Kafka's LogValidator): every record parsed,
# compressed ones decompressed; offset deltas 0, 1, 2, ...; exactly record_count
# records filling the batch; compacted: every record has a key; now_ms >= 0: each
# CreateTime within [now - before, now + after].  Refusals of keys / timestamps
# carry exc.record_errors [(batch_index, message)].

def recompress_batch(
    batch: Buffer, compression: int, decompressed: Buffer | None = None, level: int | None = None
) -> bytes: ...

# the one batch re-encoded in codec `compression` (0 = none), header fields kept,
# records byte for byte; decompressed = its records section if already known

def assign_offsets(
    records: WritableBuffer,
    base_offset: int,
    partition_leader_epoch: int,
    log_append_time_ms: int = -1,
) -> int: ...

# patches base offsets (consecutive) and leader epochs in place; with
# log_append_time_ms >= 0 also LogAppendTime type + max_timestamp + CRC.
# Returns the next offset.
def set_partition_leader_epoch(records: WritableBuffer, partition_leader_epoch: int) -> None: ...

class Record:
    """One record.  For LogAppendTime batches timestamp is the batch's max_timestamp."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    def __init__(
        self,
        offset: int,
        timestamp: int,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[Header] = (),
        timestamp_type: int = 0,
    ) -> None: ...

class RecordBatch:
    """One batch in a buffer; iterating yields its Records (decompressing if needed)."""

    header: BatchHeader
    position: int
    def __init__(
        self,
        buf: Buffer,
        position: int = 0,
        *,
        check_crc: bool = True,
        max_decompressed_size: int = 0,
    ) -> None: ...
    @property
    def is_control(self) -> bool: ...
    @property
    def size(self) -> int: ...
    def __len__(self) -> int: ...  # declared record count
    def __iter__(self) -> Iterator[Record]: ...
    def records(self) -> list[Record]: ...
    def records_data(self) -> bytes | memoryview: ...  # decompressed records section
    def index(self) -> RecordIndex: ...
    def control_record_type(self) -> int: ...

class RecordIndex:
    """Positions of every record in one batch, as numpy arrays; lengths -1 = null."""

    header: BatchHeader
    data: Buffer  # what positions index: the caller's buffer, or the decompressed section
    count: int
    offsets: npt.NDArray[np.int64]
    timestamps: npt.NDArray[np.int64]
    key_positions: npt.NDArray[np.int64]
    key_lengths: npt.NDArray[np.int32]
    value_positions: npt.NDArray[np.int64]
    value_lengths: npt.NDArray[np.int32]
    header_positions: npt.NDArray[np.int64]
    header_counts: npt.NDArray[np.int32]
    def __len__(self) -> int: ...
    def key(self, i: int) -> bytes | None: ...
    def value(self, i: int) -> bytes | None: ...
    def headers(self, i: int) -> list[Header]: ...
    def record(self, i: int) -> Record: ...

def iter_records(
    buf: Buffer, position: int = 0, max_decompressed_size: int = 0, *, check_crc: bool = True
) -> Iterator[Record]: ...
def iter_batches(
    buf: Buffer,
    position: int = 0,
    *,
    allow_partial_tail: bool = False,
    check_crc: bool = True,
    max_decompressed_size: int = 0,
) -> Iterator[RecordBatch]: ...
def index_records(
    buf: Buffer, position: int = 0, max_decompressed_size: int = 0, *, check_crc: bool = True
) -> RecordIndex: ...
def control_record_type(batch: RecordBatch) -> int: ...  # 0 abort, 1 commit
def end_txn_marker_coordinator_epoch(value: Buffer) -> int: ...

class RecordBatchBuilder:
    """Builds one batch record by record; build() compresses, fills header and CRC."""

    def __init__(
        self,
        compression: int = 0,
        base_offset: int = 0,
        partition_leader_epoch: int = -1,
        timestamp_type: int = 0,
        producer_id: int = -1,
        producer_epoch: int = -1,
        base_sequence: int = -1,
        is_transactional: bool = False,
        is_control: bool = False,
    ) -> None: ...
    def append(
        self,
        timestamp: int | None,
        key: BytesIn,
        value: BytesIn,
        headers: Iterable[HeaderIn] = (),
    ) -> int: ...  # returns the offset delta; timestamp None = now
    def append_with_offset(
        self,
        offset: int,
        timestamp: int | None,
        key: BytesIn,
        value: BytesIn,
        headers: Iterable[HeaderIn] = (),
    ) -> int: ...  # absolute offset > previous; gaps allowed
    @property
    def record_count(self) -> int: ...
    @property
    def last_offset_delta(self) -> int: ...
    def size_in_bytes(self) -> int: ...  # exact uncompressed; upper estimate compressed
    def build(self) -> bytes: ...

RecordIn: TypeAlias = (
    tuple[int | None, BytesIn, BytesIn] | tuple[int | None, BytesIn, BytesIn, Iterable[HeaderIn]]
)

def build_batch(
    records: Iterable[RecordIn],
    compression: int = 0,
    base_offset: int = 0,
    *,
    partition_leader_epoch: int = -1,
    timestamp_type: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    is_transactional: bool = False,
) -> bytes: ...
def build_batch_from_values(
    values: Sequence[BytesIn],
    keys: Sequence[BytesIn] | None = None,
    timestamp: int | None = None,
    *,
    timestamps: Sequence[int] | None = None,
    compression: int = 0,
    base_offset: int = 0,
    partition_leader_epoch: int = -1,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    is_transactional: bool = False,
) -> bytes: ...
def build_control_batch(
    commit: bool,
    producer_id: int,
    producer_epoch: int,
    timestamp: int | None,
    coordinator_epoch: int = 0,
    base_offset: int = 0,
    partition_leader_epoch: int = -1,
) -> bytes: ...
