# cython: language_level=3
"""RecordBatch v2 (magic 2): validate, iterate, build and patch batches.

Batch layout (big-endian; CLIENTS.md §4)::

    base_offset i64 | batch_length i32 | partition_leader_epoch i32 | magic i8
    | crc u32 | attributes i16 | last_offset_delta i32 | base_timestamp i64
    | max_timestamp i64 | producer_id i64 | producer_epoch i16
    | base_sequence i32 | record_count i32 | records...

The CRC-32C covers ``attributes`` to the end, so the broker rewrites
``base_offset`` and ``partition_leader_epoch`` without touching it.

Which error a bad batch gets follows Kafka (``ProduceRequest.validateRecords``,
``ByteBufferLogInputStream``, ``UnifiedLog.analyzeAndValidateRecords``,
``LogValidator``, ``DefaultRecord.readFrom``):

=============================================================  =========================
what is wrong                                                   error
=============================================================  =========================
truncated batch, length field too small, CRC mismatch,          CorruptMessageError (2)
trailing bytes that are not a whole batch, magic > 2 or < 0,
compressed payload that does not decompress
magic 0 or 1 (Produce v3+ carries only magic 2)                 InvalidRecordError (87)
record count / last offset delta inconsistent, codec id 5-7,    InvalidRecordError (87)
more than one batch in a produce, base offset != 0 from a
client, control batch from a client, producer id without a
sequence, malformed record framing inside a batch, records
that do not fill the batch exactly or whose offset deltas are
not 0, 1, 2, ... (leader appends), a keyless record on a
compacted log (with ``record_errors``)
batch larger than ``max_batch_size`` (max.message.bytes)        MessageTooLargeError (10)
LogAppendTime set by a producer; a record's CreateTime          InvalidTimestampError (32)
outside the message.timestamp.*.max.ms window
zstd in a Produce request older than v7                         UnsupportedCompressionTypeError (76)
=============================================================  =========================

Sections below: C-level checks; BatchHeader and the batch error messages;
produce-path validation; offset assignment; reading records; building.
"""
cimport cython
from cpython.buffer cimport PyBUF_READ
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport INT32_MAX, INT64_MAX, int8_t, int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from pystream._core.endian cimport (
    load_be16, load_be32, load_be64, store_be16, store_be32, store_be64,
)
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

from pystream._core.crc32c cimport crc32c_update
from pystream._core.varint cimport read_varint, read_varint32

import numpy as np

from pystream._core import compression as _compression
from pystream.errors import (
    CorruptMessageError,
    InvalidRecordError,
    InvalidTimestampError,
    MessageTooLargeError,
    UnsupportedCompressionTypeError,
)

# ---------------------------------------------------------------- constants

COMPRESSION_NONE = 0
COMPRESSION_GZIP = 1
COMPRESSION_SNAPPY = 2
COMPRESSION_LZ4 = 3
COMPRESSION_ZSTD = 4
CODEC_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

ATTR_CODEC_MASK = 0x07
ATTR_TIMESTAMP_TYPE = 0x08
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20
ATTR_DELETE_HORIZON = 0x40

TIMESTAMP_CREATE_TIME = 0
TIMESTAMP_LOG_APPEND_TIME = 1
NO_TIMESTAMP = -1
NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_PARTITION_LEADER_EPOCH = -1
MAGIC = 2

CONTROL_ABORT = 0
CONTROL_COMMIT = 1

# Cap on a decompressed records section when the caller gives none: bounded
# memory per batch (DESIGN §6) yet far above what max.message.bytes produces.
DEFAULT_MAX_DECOMPRESSED_SIZE = 128 * 1024 * 1024

# Produce requests before v7 may not carry zstd (KIP-110).
cdef int _ZSTD_MIN_PRODUCE_VERSION = 7
# Below this many bytes a CRC is faster than releasing and re-taking the GIL.
cdef Py_ssize_t _NOGIL_MIN = 16384
cdef int _MIN_LENGTH = BATCH_OVERHEAD - LOG_OVERHEAD      # smallest valid length field
cdef int _LEGACY_MIN_LENGTH = 14                          # Kafka's RECORD_OVERHEAD_V0
cdef unsigned char _EMPTY[1]                              # pointer for empty buffers


# ---------------------------------------------------------------- byte helpers

cdef inline int64_t _add64(int64_t a, int64_t b) noexcept nogil:
    # Offsets and timestamps from the wire can be anything: wrap like Java's
    # long instead of overflowing (undefined behaviour in C).
    return <int64_t>(<uint64_t>a + <uint64_t>b)


cdef inline Py_ssize_t _check_position(Py_ssize_t position, Py_ssize_t length) except -1:
    if position < 0 or position > length:
        raise ValueError(f"position {position} is outside the buffer of {length} bytes")
    return position


# ---------------------------------------------------------------- C-level batch checks

cdef BatchError parse_batch_header(const unsigned char* buf, Py_ssize_t length, BatchInfo* out) noexcept nogil:
    if length < BATCH_OVERHEAD:
        return BATCH_TRUNCATED
    out.base_offset = <int64_t>load_be64(buf + BASE_OFFSET_OFFSET)
    out.batch_length = <int32_t>load_be32(buf + LENGTH_OFFSET)
    out.partition_leader_epoch = <int32_t>load_be32(buf + PARTITION_LEADER_EPOCH_OFFSET)
    out.magic = <int8_t>buf[MAGIC_OFFSET]
    out.crc = load_be32(buf + CRC_OFFSET)
    out.attributes = <int16_t>load_be16(buf + ATTRIBUTES_OFFSET)
    out.last_offset_delta = <int32_t>load_be32(buf + LAST_OFFSET_DELTA_OFFSET)
    out.base_timestamp = <int64_t>load_be64(buf + BASE_TIMESTAMP_OFFSET)
    out.max_timestamp = <int64_t>load_be64(buf + MAX_TIMESTAMP_OFFSET)
    out.producer_id = <int64_t>load_be64(buf + PRODUCER_ID_OFFSET)
    out.producer_epoch = <int16_t>load_be16(buf + PRODUCER_EPOCH_OFFSET)
    out.base_sequence = <int32_t>load_be32(buf + BASE_SEQUENCE_OFFSET)
    out.record_count = <int32_t>load_be32(buf + RECORDS_COUNT_OFFSET)
    if out.batch_length < _MIN_LENGTH:
        return BATCH_BAD_LENGTH
    return BATCH_OK


cdef BatchError check_batch_ex(const unsigned char* buf, Py_ssize_t length, Py_ssize_t max_size,
                               bint verify_crc, BatchInfo* out) noexcept nogil:
    cdef BatchError err = parse_batch_header(buf, length, out)
    cdef Py_ssize_t size
    if err != BATCH_OK:
        return err
    size = <Py_ssize_t>out.batch_length + LOG_OVERHEAD
    if max_size > 0 and size > max_size:
        return BATCH_TOO_LARGE
    if size > length:
        return BATCH_TRUNCATED
    if out.magic != 2:
        return BATCH_BAD_MAGIC
    if verify_crc and crc32c_update(0, buf + ATTRIBUTES_OFFSET, size - ATTRIBUTES_OFFSET) != out.crc:
        return BATCH_BAD_CRC
    if (out.attributes & 0x07) > 4:
        return BATCH_BAD_ATTRIBUTES
    if out.record_count < 0 or out.last_offset_delta < 0:
        return BATCH_BAD_COUNT
    # Compaction may leave gaps, so count <= last_offset_delta + 1; an empty
    # batch (all records cleaned) keeps its last_offset_delta.
    if out.record_count > <int64_t>out.last_offset_delta + 1:
        return BATCH_BAD_COUNT
    return BATCH_OK


cdef BatchError check_batch(const unsigned char* buf, Py_ssize_t length, Py_ssize_t max_size, BatchInfo* out) noexcept nogil:
    return check_batch_ex(buf, length, max_size, 1, out)


cdef BatchError _check_at(const unsigned char* buf, Py_ssize_t avail, Py_ssize_t max_size,
                          bint verify_crc, BatchInfo* out) noexcept nogil:
    # Kafka (ByteBufferLogInputStream) looks at the length and then the magic
    # byte before anything format-specific, so a legacy (v0/v1) message set
    # shorter than a v2 header still reports its magic rather than truncation.
    cdef int32_t length
    if avail >= MAGIC_OFFSET + 1:
        length = <int32_t>load_be32(buf + LENGTH_OFFSET)
        out.batch_length = length
        out.magic = <int8_t>buf[MAGIC_OFFSET]
        if length < _LEGACY_MIN_LENGTH:
            return BATCH_BAD_LENGTH
        if out.magic != 2:
            return BATCH_BAD_MAGIC
    return check_batch_ex(buf, avail, max_size, verify_crc, out)


cdef inline bint _is_partial_tail(const unsigned char* buf, Py_ssize_t avail) noexcept nogil:
    # A fetch response may end with the first part of a batch; a length field
    # that is itself invalid is corruption, not a partial tail.
    cdef int32_t length
    if avail < LOG_OVERHEAD:
        return True
    length = <int32_t>load_be32(buf + LENGTH_OFFSET)
    if length < _MIN_LENGTH:
        return False
    return <Py_ssize_t>length + LOG_OVERHEAD > avail


# ---------------------------------------------------------------- BatchHeader

cdef inline int32_t _increment_sequence(int32_t sequence, int32_t increment) noexcept nogil:
    # Sequences wrap from INT32_MAX to 0 (DefaultRecordBatch.incrementSequence).
    cdef int64_t s = <int64_t>sequence + increment
    if s > INT32_MAX:
        s -= <int64_t>INT32_MAX + 1
    return <int32_t>s


@cython.final
cdef class BatchHeader:
    """The 61-byte header of one v2 record batch (read-only)."""

    cdef BatchInfo _h

    @staticmethod
    cdef BatchHeader wrap(const BatchInfo* info):
        cdef BatchHeader h = BatchHeader.__new__(BatchHeader)
        h._h = info[0]
        return h

    @property
    def base_offset(self) -> int:
        return self._h.base_offset

    @property
    def batch_length(self) -> int:
        """The length field: bytes after it (``size - 12``)."""
        return self._h.batch_length

    @property
    def size(self) -> int:
        """Bytes the whole batch occupies: ``batch_length + 12``."""
        return <int64_t>self._h.batch_length + LOG_OVERHEAD

    @property
    def partition_leader_epoch(self) -> int:
        return self._h.partition_leader_epoch

    @property
    def magic(self) -> int:
        return self._h.magic

    @property
    def crc(self) -> int:
        return self._h.crc

    @property
    def attributes(self) -> int:
        return self._h.attributes

    @property
    def compression(self) -> int:
        """Codec id: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd."""
        return self._h.attributes & 0x07

    @property
    def timestamp_type(self) -> int:
        """0 = CreateTime, 1 = LogAppendTime."""
        return 1 if self._h.attributes & 0x08 else 0

    @property
    def is_transactional(self) -> bool:
        return bool(self._h.attributes & 0x10)

    @property
    def is_control(self) -> bool:
        return bool(self._h.attributes & 0x20)

    @property
    def has_delete_horizon(self) -> bool:
        """base_timestamp holds the delete horizon (set by the log cleaner)."""
        return bool(self._h.attributes & 0x40)

    @property
    def last_offset_delta(self) -> int:
        return self._h.last_offset_delta

    @property
    def last_offset(self) -> int:
        return <object>self._h.base_offset + self._h.last_offset_delta

    @property
    def next_offset(self) -> int:
        return <object>self._h.base_offset + self._h.last_offset_delta + 1

    @property
    def base_timestamp(self) -> int:
        return self._h.base_timestamp

    @property
    def max_timestamp(self) -> int:
        return self._h.max_timestamp

    @property
    def producer_id(self) -> int:
        return self._h.producer_id

    @property
    def has_producer_id(self) -> bool:
        return self._h.producer_id >= 0

    @property
    def producer_epoch(self) -> int:
        return self._h.producer_epoch

    @property
    def base_sequence(self) -> int:
        return self._h.base_sequence

    @property
    def last_sequence(self) -> int:
        """Sequence of the last record (wraps at 2**31-1); -1 when there is none."""
        if self._h.base_sequence < 0:
            return -1
        return _increment_sequence(self._h.base_sequence, self._h.last_offset_delta)

    @property
    def record_count(self) -> int:
        return self._h.record_count

    def __repr__(self) -> str:
        return (
            f"BatchHeader(base_offset={self._h.base_offset}, size={self.size}, "
            f"record_count={self._h.record_count}, last_offset_delta={self._h.last_offset_delta}, "
            f"attributes=0x{self._h.attributes & 0xFFFF:04x}, "
            f"partition_leader_epoch={self._h.partition_leader_epoch}, "
            f"producer_id={self._h.producer_id}, crc=0x{self._h.crc:08x})"
        )

    def __eq__(self, other):
        if not isinstance(other, BatchHeader):
            return NotImplemented
        return self._key() == (<BatchHeader>other)._key()

    def __hash__(self):
        return hash(self._key())

    cdef tuple _key(self):
        return (self._h.base_offset, self._h.batch_length, self._h.partition_leader_epoch,
                self._h.magic, self._h.crc, self._h.attributes, self._h.last_offset_delta,
                self._h.base_timestamp, self._h.max_timestamp, self._h.producer_id,
                self._h.producer_epoch, self._h.base_sequence, self._h.record_count)


cdef object _batch_error(BatchError err, const unsigned char* buf, Py_ssize_t avail,
                         Py_ssize_t position, const BatchInfo* info, Py_ssize_t max_size):
    """The exception for a failed batch check, saying what and what to do."""
    cdef Py_ssize_t size
    cdef uint32_t computed
    where = f"record batch at byte {position}"
    if err == BATCH_TRUNCATED:
        if avail < BATCH_OVERHEAD:
            return CorruptMessageError(
                f"{where} is truncated: {avail} bytes left, a v2 batch header needs "
                f"{BATCH_OVERHEAD}; the data was cut short — resend whole batches only")
        return CorruptMessageError(
            f"{where} is truncated: its length field says {info.batch_length + LOG_OVERHEAD} "
            f"bytes but only {avail} are present; the data was cut short — resend whole batches only")
    if err == BATCH_BAD_LENGTH:
        return CorruptMessageError(
            f"{where} has length field {info.batch_length}, less than the {_MIN_LENGTH} bytes "
            f"a v2 batch header needs; the data is corrupt")
    if err == BATCH_BAD_MAGIC:
        if info.magic == 0 or info.magic == 1:
            return InvalidRecordError(
                f"{where} uses message format v{info.magic} (magic {info.magic}); only magic 2 "
                f"(record batch v2) is accepted — use a client that produces with Produce v3 or later")
        return CorruptMessageError(
            f"{where} has invalid magic {info.magic} (only 0, 1 and 2 exist); the data is corrupt")
    if err == BATCH_BAD_CRC:
        size = info.batch_length + LOG_OVERHEAD
        computed = crc32c_update(0, buf + ATTRIBUTES_OFFSET, size - ATTRIBUTES_OFFSET)
        return CorruptMessageError(
            f"{where} failed its CRC-32C check (stored 0x{info.crc:08x}, computed "
            f"0x{computed:08x}); it was corrupted in transit or on disk — resend it")
    if err == BATCH_BAD_ATTRIBUTES:
        return InvalidRecordError(
            f"{where} has attributes 0x{info.attributes & 0xFFFF:04x} with compression codec id "
            f"{info.attributes & 0x07}; only 0 (none), 1 (gzip), 2 (snappy), 3 (lz4) and 4 (zstd) exist")
    if err == BATCH_BAD_COUNT:
        return InvalidRecordError(
            f"{where} has record count {info.record_count} and last offset delta "
            f"{info.last_offset_delta}; the count must be between 0 and last_offset_delta + 1")
    if err == BATCH_TOO_LARGE:
        return MessageTooLargeError(
            f"{where} is {info.batch_length + LOG_OVERHEAD} bytes, more than the limit of "
            f"{max_size} bytes (max.message.bytes); send smaller batches (producer batch.size) "
            f"or raise the topic's max.message.bytes")
    return CorruptMessageError(f"{where} failed validation (code {<int>err})")


def read_batch_header(const unsigned char[::1] buf, Py_ssize_t position=0) -> BatchHeader:
    """Parse the batch header at ``buf[position:]`` without checking the CRC.

    Only the 61 header bytes need to be present (the rest of the batch may
    not be); the length field and magic byte are checked.  Raises
    CorruptMessageError / InvalidRecordError as :func:`validate_batch` does.
    """
    cdef BatchInfo info
    cdef Py_ssize_t n = buf.shape[0]
    _check_position(position, n)
    cdef const unsigned char* p = (&buf[0] if n else _EMPTY) + position
    cdef Py_ssize_t avail = n - position
    cdef BatchError err = BATCH_OK
    if avail >= MAGIC_OFFSET + 1:
        info.batch_length = <int32_t>load_be32(p + LENGTH_OFFSET)
        info.magic = <int8_t>p[MAGIC_OFFSET]
        if info.batch_length < _LEGACY_MIN_LENGTH:
            err = BATCH_BAD_LENGTH
        elif info.magic != 2:
            err = BATCH_BAD_MAGIC
    if err == BATCH_OK:
        err = parse_batch_header(p, avail, &info)
    if err != BATCH_OK:
        raise _batch_error(err, p, avail, position, &info, 0)
    return BatchHeader.wrap(&info)


def validate_batch(const unsigned char[::1] buf, Py_ssize_t position=0, Py_ssize_t max_batch_size=0) -> BatchHeader:
    """Fully check the batch at ``buf[position:]`` (the C ``check_batch``).

    Checks: whole header and batch present, length field, magic 2, size <=
    ``max_batch_size`` (0 = no limit), CRC-32C, codec id, record count against
    last_offset_delta (``count <= last_offset_delta + 1``; compaction leaves
    gaps).  Records inside are not parsed.  Errors: see the module docstring.
    """
    cdef BatchInfo info
    cdef BatchError err
    cdef Py_ssize_t n = buf.shape[0]
    _check_position(position, n)
    cdef const unsigned char* p = (&buf[0] if n else _EMPTY) + position
    cdef Py_ssize_t avail = n - position
    if avail >= _NOGIL_MIN:
        with nogil:
            err = _check_at(p, avail, max_batch_size, 1, &info)
    else:
        err = _check_at(p, avail, max_batch_size, 1, &info)
    if err != BATCH_OK:
        raise _batch_error(err, p, avail, position, &info, max_batch_size)
    return BatchHeader.wrap(&info)


# ---------------------------------------------------------------- produce-path validation

cdef struct _AppendState:
    int32_t batch_count
    int64_t record_count
    int64_t offset_count
    int64_t first_offset
    int64_t last_offset
    bint monotonic
    int64_t max_timestamp
    int64_t offset_delta_of_max_timestamp
    int64_t shallow_offset_of_max_timestamp
    int32_t last_offset_delta_of_first_batch
    int64_t producer_id
    int16_t producer_epoch
    int32_t base_sequence
    int32_t last_sequence
    bint is_transactional
    bint is_control
    int compression
    int codecs
    Py_ssize_t size


cdef struct _RecordChecks:
    # What a leader checks in every record (Kafka's LogValidator.validateRecord).
    bint walk                  # parse every record: framing, offset deltas, exact fill
    bint compacted             # cleanup.policy has compact: every record needs a key
    bint check_timestamps      # CreateTime with a finite message.timestamp.*.max.ms window
    int64_t now
    int64_t before_max_ms
    int64_t after_max_ms


cdef struct _WalkResult:
    # Where a batch's record walk stopped: the first problem found, if any.
    int code                   # RECORD_OK, a RecordError, or a _RecordProblem
    int32_t index              # record index (batch_index in Kafka's record_errors)
    int64_t value              # the offending offset delta or timestamp
    int32_t invalid            # records refused by key/timestamp rules (Kafka's record errors)
    int invalid_kind           # REC_NO_KEY or REC_TIMESTAMP of the first such record
    int32_t invalid_index      # and its index


cdef enum _RecordProblem:
    REC_NO_KEY = 200           # a keyless record on a compacted topic
    REC_TIMESTAMP = 201        # CreateTime outside the message.timestamp.*.max.ms window
    REC_OFFSET_DELTA = 202     # offset delta != its index
    REC_COUNT_SHORT = 203      # fewer records than the header's count
    REC_TRAILING = 204         # bytes left after the declared records


cdef enum _ProduceError:
    PRODUCE_OK = 0
    PRODUCE_BATCH = 1              # the batch check failed: see the BatchError
    PRODUCE_EMPTY = 2              # no bytes at all
    PRODUCE_MULTIPLE_BATCHES = 3
    PRODUCE_NO_RECORDS = 4         # record_count == 0
    PRODUCE_COUNT_MISMATCH = 5     # record_count != last_offset_delta + 1
    PRODUCE_BASE_OFFSET = 6        # a client sent base_offset != 0
    PRODUCE_CONTROL = 7
    PRODUCE_NO_SEQUENCE = 8        # producer id without a base sequence
    PRODUCE_LOG_APPEND_TIME = 9
    PRODUCE_ZSTD_VERSION = 10
    PRODUCE_RECORDS = 11           # the record walk failed: see the _WalkResult
    PRODUCE_DECOMPRESS = 12        # a compressed batch to walk: the caller decompresses


# What read_record's errors mean, for messages.
_RECORD_REASONS = {
    RECORD_BAD_LENGTH: "has a length varint that is malformed, negative or past the end",
    RECORD_BAD_FIELD: "has a malformed attributes / timestamp delta / offset delta field",
    RECORD_BAD_KEY: "has a key length below -1 or past the record's end",
    RECORD_BAD_VALUE: "has a value length below -1 or past the record's end",
    RECORD_BAD_HEADER_COUNT: "has a negative header count or more headers than bytes left",
    RECORD_BAD_HEADER: "has a header with a negative key length or a key/value past the record's end",
    RECORD_SIZE_MISMATCH: "ends its fields before the length it declares",
}


cdef inline int _check_record(const RecordInfo* r, int64_t base_timestamp,
                              const _RecordChecks* c) noexcept nogil:
    # Kafka's validateKey then validateTimestamp: 0 or the record's problem.
    cdef int64_t timestamp, diff
    if c.compacted and r.key_length < 0:
        return REC_NO_KEY
    if c.check_timestamps:
        timestamp = _add64(base_timestamp, r.timestamp_delta)
        if timestamp != -1:
            # As Java's long arithmetic: now - ts and its negation wrap.
            diff = <int64_t>(<uint64_t>c.now - <uint64_t>timestamp)
            if diff > c.before_max_ms or <int64_t>(0 - <uint64_t>diff) > c.after_max_ms:
                return REC_TIMESTAMP
    return 0


cdef int _walk_batch_records(const unsigned char* data, Py_ssize_t start, Py_ssize_t end,
                             const BatchInfo* info, const _RecordChecks* c,
                             _WalkResult* out) noexcept nogil:
    # Every record of one (decompressed) records section: framing, offset deltas
    # 0, 1, 2, ... exactly count of them filling the section, then the per-record
    # rules.  Framing problems stop the walk (Kafka's iterator throws); key and
    # timestamp problems are counted over the whole batch (Kafka's record errors).
    cdef RecordInfo r
    cdef Py_ssize_t pos = start
    cdef int32_t i
    cdef int code
    cdef bint rules = c.compacted or c.check_timestamps
    out.invalid = 0
    out.invalid_kind = 0
    for i in range(info.record_count):
        out.index = i
        code = _read_record(data, end, &pos, &r)
        if code != RECORD_OK:
            out.code = REC_COUNT_SHORT if code == RECORD_MISSING else code
            return out.code
        if r.offset_delta != i:
            out.code = REC_OFFSET_DELTA
            out.value = r.offset_delta
            return out.code
        code = _check_record(&r, info.base_timestamp, c) if rules else 0
        if code != 0:
            if out.invalid == 0:
                out.invalid_kind = code
                out.invalid_index = i
            out.invalid += 1
    if pos != end:
        out.index = info.record_count
        out.value = end - pos
        out.code = REC_TRAILING
        return out.code
    out.code = out.invalid_kind
    return out.code


cdef _ProduceError _validate_records(const unsigned char* buf, Py_ssize_t n, Py_ssize_t max_size,
                                     bint client, int api_version, const _RecordChecks* checks,
                                     _AppendState* st, BatchInfo* info, BatchError* berr,
                                     Py_ssize_t* err_pos, _WalkResult* walk) noexcept nogil:
    # One pass over the batch headers (and their CRCs), walking the records of
    # uncompressed batches when checks.walk; a compressed batch to walk stops
    # the pass with PRODUCE_DECOMPRESS (its state complete) for the caller, who
    # walks it and calls again: the pass resumes at st.size.
    cdef Py_ssize_t pos = st.size
    cdef Py_ssize_t size
    cdef int codec
    cdef int64_t last
    if n == 0:
        return PRODUCE_EMPTY
    while pos < n:
        err_pos[0] = pos
        berr[0] = _check_at(buf + pos, n - pos, max_size, 1, info)
        if berr[0] != BATCH_OK:
            return PRODUCE_BATCH
        size = <Py_ssize_t>info.batch_length + LOG_OVERHEAD
        codec = info.attributes & 0x07
        if client:
            # Kafka's client rules: ProduceRequest.validateRecords and
            # LogValidator.validateBatch (origin CLIENT, magic 2).
            if st.batch_count >= 1:
                return PRODUCE_MULTIPLE_BATCHES
            if codec == 4 and api_version < _ZSTD_MIN_PRODUCE_VERSION:
                return PRODUCE_ZSTD_VERSION
            if info.base_offset != 0:
                return PRODUCE_BASE_OFFSET
            if info.record_count <= 0:
                return PRODUCE_NO_RECORDS
            if info.record_count != <int64_t>info.last_offset_delta + 1:
                return PRODUCE_COUNT_MISMATCH
            if info.attributes & 0x20:
                return PRODUCE_CONTROL
            if info.producer_id >= 0 and info.base_sequence < 0:
                return PRODUCE_NO_SEQUENCE
            if info.attributes & 0x08:
                return PRODUCE_LOG_APPEND_TIME
        if checks.walk and codec == 0 and _walk_batch_records(
                buf + pos, BATCH_OVERHEAD, size, info, checks, walk) != 0:
            return PRODUCE_RECORDS
        last = _add64(info.base_offset, info.last_offset_delta)
        if st.batch_count == 0:
            st.first_offset = info.base_offset
            st.last_offset_delta_of_first_batch = info.last_offset_delta
            st.producer_id = info.producer_id
            st.producer_epoch = info.producer_epoch
            st.base_sequence = info.base_sequence
            st.is_transactional = (info.attributes & 0x10) != 0
            st.is_control = (info.attributes & 0x20) != 0
            st.max_timestamp = info.max_timestamp
            st.offset_delta_of_max_timestamp = info.last_offset_delta
            st.shallow_offset_of_max_timestamp = last
        else:
            if last <= st.last_offset:
                st.monotonic = False
            if info.max_timestamp > st.max_timestamp:
                st.max_timestamp = info.max_timestamp
                st.offset_delta_of_max_timestamp = st.offset_count + info.last_offset_delta
                st.shallow_offset_of_max_timestamp = last
        st.last_offset = last
        st.last_sequence = (-1 if info.base_sequence < 0
                            else _increment_sequence(info.base_sequence, info.last_offset_delta))
        st.batch_count += 1
        st.record_count += info.record_count
        st.offset_count += <int64_t>info.last_offset_delta + 1
        st.codecs |= 1 << codec
        if codec != 0:
            st.compression = codec
        pos += size
        st.size = pos
        if checks.walk and codec != 0:
            return PRODUCE_DECOMPRESS
    return PRODUCE_OK


@cython.final
cdef class AppendInfo:
    """What :func:`validate_produce_records` learnt about a ``records`` field.

    Offsets "delta" are relative to the first offset :func:`assign_offsets`
    will give (offsets numbered consecutively over all batches).  The
    producer fields come from the first batch (a client produce has exactly
    one); ``last_sequence`` is the last batch's.  ``compression`` is the last
    non-none codec seen (Kafka's sourceCompression); ``codecs`` has bit
    ``1 << id`` set for every codec seen.
    """

    cdef readonly int batch_count
    cdef readonly int64_t record_count
    cdef readonly int64_t offset_count
    cdef readonly int64_t first_offset
    cdef readonly int64_t last_offset
    cdef readonly bint offsets_monotonic
    cdef readonly int64_t max_timestamp
    cdef readonly int64_t offset_delta_of_max_timestamp
    cdef readonly int64_t shallow_offset_of_max_timestamp
    cdef readonly int32_t last_offset_delta_of_first_batch
    cdef readonly int64_t producer_id
    cdef readonly int producer_epoch
    cdef readonly int32_t base_sequence
    cdef readonly int32_t last_sequence
    cdef readonly bint is_transactional
    cdef readonly bint is_control
    cdef readonly int compression
    cdef readonly int codecs
    cdef readonly Py_ssize_t size_in_bytes
    # The one compressed batch's records section, decompressed by the record
    # walk (validate_produce_records(keep_decompressed=True)), else None.
    cdef readonly object decompressed

    def __repr__(self) -> str:
        return (
            f"AppendInfo(batch_count={self.batch_count}, record_count={self.record_count}, "
            f"offset_count={self.offset_count}, max_timestamp={self.max_timestamp}, "
            f"offset_delta_of_max_timestamp={self.offset_delta_of_max_timestamp}, "
            f"producer_id={self.producer_id}, producer_epoch={self.producer_epoch}, "
            f"base_sequence={self.base_sequence}, is_transactional={self.is_transactional}, "
            f"compression={self.compression}, size_in_bytes={self.size_in_bytes})"
        )


cdef object _produce_error(_ProduceError err, const BatchInfo* info, Py_ssize_t pos, int api_version):
    where = f"record batch at byte {pos}"
    if err == PRODUCE_EMPTY:
        return InvalidRecordError(
            "the produce request has no record batch for this partition; send at least one batch")
    if err == PRODUCE_MULTIPLE_BATCHES:
        return InvalidRecordError(
            f"the produce request carries more than one record batch for this partition (another "
            f"starts at byte {pos}); Produce v3+ allows exactly one batch per partition")
    if err == PRODUCE_ZSTD_VERSION:
        return UnsupportedCompressionTypeError(
            f"{where} is zstd-compressed but Produce v{api_version} does not allow zstd "
            f"(needs v{_ZSTD_MIN_PRODUCE_VERSION}+); upgrade the client or use another codec")
    if err == PRODUCE_BASE_OFFSET:
        return InvalidRecordError(
            f"{where} has base offset {info.base_offset}; a producer must send base offset 0 "
            f"(the broker assigns offsets)")
    if err == PRODUCE_NO_RECORDS:
        return InvalidRecordError(
            f"{where} has record count {info.record_count}; a produced batch needs at least one record")
    if err == PRODUCE_COUNT_MISMATCH:
        return InvalidRecordError(
            f"{where} has record count {info.record_count} but last offset delta "
            f"{info.last_offset_delta}; a produced batch must have count == last_offset_delta + 1")
    if err == PRODUCE_CONTROL:
        return InvalidRecordError(
            f"{where} is a control batch; clients may not write control records")
    if err == PRODUCE_NO_SEQUENCE:
        return InvalidRecordError(
            f"{where} has producer id {info.producer_id} but base sequence {info.base_sequence}; "
            f"an idempotent producer must set a sequence number >= 0")
    if err == PRODUCE_LOG_APPEND_TIME:
        return InvalidTimestampError(
            f"{where} has the LogAppendTime timestamp type set; producers must use CreateTime "
            f"(the broker stamps LogAppendTime itself)")
    return InvalidRecordError(f"{where} failed validation (code {<int>err})")


cdef str _timestamp_record_error(int64_t timestamp, int64_t offset, const _RecordChecks* c):
    # The bounds as Python ints: an unlimited side must not wrap around.
    cdef object now = c.now
    return (f"Timestamp {timestamp} of message with offset {offset} is out of range. The "
            f"timestamp should be within [{now - c.before_max_ms}, {now + c.after_max_ms}]")


cdef list _record_errors(const unsigned char* data, Py_ssize_t start, Py_ssize_t end,
                         const BatchInfo* info, const _RecordChecks* c, str topic_partition):
    # Kafka's record_errors (batch_index, message) for every refused record; only
    # called after _walk_batch_records found the framing sound and some refused.
    cdef list out = []
    cdef RecordInfo r
    cdef Py_ssize_t pos = start
    cdef int32_t i
    cdef int code
    for i in range(info.record_count):
        _read_record(data, end, &pos, &r)
        code = _check_record(&r, info.base_timestamp, c)
        if code == REC_NO_KEY:
            out.append((i, f"Compacted topic cannot accept message without key in topic "
                           f"partition {topic_partition}."))
        elif code == REC_TIMESTAMP:
            out.append((i, _timestamp_record_error(_add64(info.base_timestamp, r.timestamp_delta),
                                                   _add64(info.base_offset, r.offset_delta), c)))
    return out


cdef object _walk_error(const _WalkResult* w, const unsigned char* data, Py_ssize_t start,
                        Py_ssize_t end, const BatchInfo* info, const _RecordChecks* c,
                        Py_ssize_t pos, str topic_partition):
    """The exception for a failed record walk (Kafka's LogValidator / DefaultRecord messages)."""
    where = f"record batch at byte {pos} (topic partition {topic_partition})"
    fix = "the producer wrote a malformed batch"
    cdef list errors
    if w.code == REC_NO_KEY or w.code == REC_TIMESTAMP:
        errors = _record_errors(data, start, end, info, c, topic_partition)
        timestamps = [(i, m) for i, m in errors if m.startswith("Timestamp")]
        if timestamps:  # as Kafka: any timestamp refusal makes it INVALID_TIMESTAMP
            first_index, first = timestamps[0]
            exc = InvalidTimestampError(
                f"One or more records have been rejected due to invalid timestamp: record "
                f"{first_index} of the {info.record_count}: {first}; the broker's clock is {c.now} "
                f"and message.timestamp.before.max.ms={c.before_max_ms}, "
                f"message.timestamp.after.max.ms={c.after_max_ms} -- check the producer's clock")
        else:
            shown = ", ".join(f"RecordError(batchIndex={i}, message='{m}')" for i, m in errors[:3])
            exc = InvalidRecordError(
                f"One or more records have been rejected due to {len(errors)} record errors in "
                f"total, and only showing the first three errors at most: [{shown}]")
        exc.record_errors = errors
        return exc
    if w.code == REC_OFFSET_DELTA:
        message = (f"Record {w.index} has offset delta {w.value}, expected {w.index}: the records "
                   f"of a batch must have offset deltas 0, 1, 2, ... in order")
        exc = InvalidRecordError(f"{where}: {message}; {fix}")
        exc.record_errors = [(w.index, message)]
        return exc
    if w.code == REC_COUNT_SHORT:
        return InvalidRecordError(
            f"{where} declares {info.record_count} records but its data ends after {w.index} "
            f"(Incorrect declared batch size, premature EOF reached); {fix}")
    if w.code == REC_TRAILING:
        return InvalidRecordError(
            f"{where} declares {info.record_count} records but {w.value} bytes remain after "
            f"them (Incorrect declared batch size, records still remaining in file); {fix}")
    return InvalidRecordError(
        f"record {w.index} of the {info.record_count} in the {where} "
        f"{_RECORD_REASONS.get(w.code, f'is invalid (code {w.code})')}; {fix}")


def validate_produce_records(const unsigned char[::1] records, Py_ssize_t max_batch_size=0, *,
                             int api_version=9, bint client=True, bint walk_records=False,
                             bint compacted=False, int64_t now_ms=-1,
                             int64_t timestamp_before_max_ms=INT64_MAX,
                             int64_t timestamp_after_max_ms=INT64_MAX,
                             str topic_partition="", Py_ssize_t max_decompressed_size=0,
                             bint keep_decompressed=False) -> AppendInfo:
    """Validate a Produce request's ``records`` field (one or more whole batches).

    Each batch gets the full :func:`validate_batch` check (CRC included);
    trailing bytes that are not a whole batch raise CorruptMessageError.
    With ``client=True`` (a producer's request, ``api_version`` its Produce
    version, 3+) Kafka's client rules apply as well: exactly one batch,
    base offset 0, ``record_count == last_offset_delta + 1 > 0``, no control
    batch, a sequence when there is a producer id, CreateTime only, zstd only
    from v7.  ``client=False`` (replication, coordinator writes) allows
    several batches, control batches and compacted batches.

    ``walk_records=True`` (a leader's append, Kafka's ``LogValidator``) also
    parses every record, compressed batches decompressed (at most
    ``max_decompressed_size`` bytes, 0 = DEFAULT_MAX_DECOMPRESSED_SIZE):
    framing, offset deltas exactly 0, 1, 2, ..., exactly ``record_count``
    records filling the batch (InvalidRecordError); with ``compacted`` every
    record needs a key (InvalidRecordError); with ``now_ms >= 0`` every
    record's CreateTime must lie in ``[now - before, now + after]``
    (InvalidTimestampError).  Key and timestamp refusals carry Kafka's
    ``record_errors`` (batch_index, message) on the exception; messages name
    ``topic_partition``.  ``keep_decompressed`` keeps a compressed batch's
    records section in :attr:`AppendInfo.decompressed` (for recompression).

    One pass in C, GIL released for large inputs, no Python object per record.
    """
    cdef _AppendState st
    cdef BatchInfo info
    cdef BatchError berr = BATCH_OK
    cdef Py_ssize_t err_pos = 0
    cdef _ProduceError err
    cdef _RecordChecks checks
    cdef _WalkResult walk
    cdef Py_ssize_t n = records.shape[0]
    cdef const unsigned char* p = &records[0] if n else _EMPTY
    cdef const unsigned char* data
    cdef Py_ssize_t data_size
    cdef object decompressed = None
    cdef int code
    checks.walk = walk_records
    checks.compacted = compacted
    checks.now = now_ms
    checks.before_max_ms = timestamp_before_max_ms
    checks.after_max_ms = timestamp_after_max_ms
    checks.check_timestamps = now_ms >= 0 and (timestamp_before_max_ms != INT64_MAX
                                               or timestamp_after_max_ms != INT64_MAX)
    st.batch_count = 0
    st.record_count = 0
    st.offset_count = 0
    st.first_offset = -1
    st.last_offset = -1
    st.monotonic = True
    st.max_timestamp = -1
    st.offset_delta_of_max_timestamp = -1
    st.shallow_offset_of_max_timestamp = -1
    st.last_offset_delta_of_first_batch = -1
    st.producer_id = -1
    st.producer_epoch = -1
    st.base_sequence = -1
    st.last_sequence = -1
    st.is_transactional = False
    st.is_control = False
    st.compression = 0
    st.codecs = 0
    st.size = 0
    while True:
        if n >= _NOGIL_MIN:
            with nogil:
                err = _validate_records(p, n, max_batch_size, client, api_version, &checks, &st,
                                        &info, &berr, &err_pos, &walk)
        else:
            err = _validate_records(p, n, max_batch_size, client, api_version, &checks, &st,
                                    &info, &berr, &err_pos, &walk)
        if err != PRODUCE_DECOMPRESS:
            break
        # A compressed batch: decompress it once and walk its records section.
        decompressed = _decompress(
            info.attributes & 0x07,
            records[err_pos + BATCH_OVERHEAD:st.size],
            max_decompressed_size if max_decompressed_size > 0 else DEFAULT_MAX_DECOMPRESSED_SIZE,
            info.base_offset)
        data = <const unsigned char*>PyBytes_AS_STRING(decompressed)
        data_size = PyBytes_GET_SIZE(decompressed)
        if data_size >= _NOGIL_MIN:
            with nogil:
                code = _walk_batch_records(data, 0, data_size, &info, &checks, &walk)
        else:
            code = _walk_batch_records(data, 0, data_size, &info, &checks, &walk)
        if code != 0:
            raise _walk_error(&walk, data, 0, data_size, &info, &checks, err_pos, topic_partition)
    if err == PRODUCE_BATCH:
        raise _batch_error(berr, p + err_pos, n - err_pos, err_pos, &info, max_batch_size)
    if err == PRODUCE_RECORDS:
        raise _walk_error(&walk, p + err_pos, BATCH_OVERHEAD,
                          <Py_ssize_t>info.batch_length + LOG_OVERHEAD, &info, &checks, err_pos,
                          topic_partition)
    if err != PRODUCE_OK:
        raise _produce_error(err, &info, err_pos, api_version)
    cdef AppendInfo out = AppendInfo.__new__(AppendInfo)
    out.batch_count = st.batch_count
    out.record_count = st.record_count
    out.offset_count = st.offset_count
    out.first_offset = st.first_offset
    out.last_offset = st.last_offset
    out.offsets_monotonic = st.monotonic
    out.max_timestamp = st.max_timestamp
    out.offset_delta_of_max_timestamp = st.offset_delta_of_max_timestamp
    out.shallow_offset_of_max_timestamp = st.shallow_offset_of_max_timestamp
    out.last_offset_delta_of_first_batch = st.last_offset_delta_of_first_batch
    out.producer_id = st.producer_id
    out.producer_epoch = st.producer_epoch
    out.base_sequence = st.base_sequence
    out.last_sequence = st.last_sequence
    out.is_transactional = st.is_transactional
    out.is_control = st.is_control
    out.compression = st.compression
    out.codecs = st.codecs
    out.size_in_bytes = st.size
    if keep_decompressed and st.batch_count == 1:
        out.decompressed = decompressed
    return out


def recompress_batch(const unsigned char[::1] batch, int compression, decompressed=None,
                     level=None) -> bytes:
    """The one batch in ``batch`` re-encoded with codec ``compression`` (Kafka's
    recompression to a topic's ``compression.type``; 0 = uncompressed).

    Every header field is kept (offsets, producer id/epoch, base sequence,
    timestamps, timestamp type, transactional and control flags) but the codec
    bits and the CRC; the records (their offset and timestamp deltas are
    relative to the header) are kept byte for byte.  ``decompressed`` is the
    records section when the caller already has it (AppendInfo.decompressed);
    ``level`` the codec's level (None = its default).  Expects a validated
    batch; the CRC is not checked again.
    """
    cdef BatchInfo info
    cdef Py_ssize_t n = batch.shape[0]
    cdef const unsigned char* p = &batch[0] if n else _EMPTY
    cdef BatchError err = check_batch_ex(p, n, 0, 0, &info)
    cdef const unsigned char[::1] view
    if err != BATCH_OK:
        raise _batch_error(err, p, n, 0, &info, 0)
    _check_codec(compression)
    cdef int codec = info.attributes & 0x07
    cdef Py_ssize_t size = <Py_ssize_t>info.batch_length + LOG_OVERHEAD
    section = decompressed
    if section is None:
        section = batch[BATCH_OVERHEAD:size]
        if codec != 0:
            section = _decompress(codec, section, DEFAULT_MAX_DECOMPRESSED_SIZE, info.base_offset)
    view = section
    return _finish_batch(compression, &view[0] if view.shape[0] else _EMPTY, view.shape[0], section,
                         info.base_offset, info.partition_leader_epoch, info.attributes & ~0x07,
                         info.last_offset_delta, info.base_timestamp, info.max_timestamp,
                         info.producer_id, info.producer_epoch, info.base_sequence,
                         info.record_count, level)


# ---------------------------------------------------------------- offset assignment

cdef BatchError _patch_batches(unsigned char* buf, Py_ssize_t n, int64_t* next_offset, bint set_offsets,
                               int32_t leader_epoch, int64_t log_append_time,
                               Py_ssize_t* err_pos, BatchInfo* info) noexcept nogil:
    # base_offset and partition_leader_epoch lie outside the CRC; LogAppendTime
    # changes attributes and max_timestamp, so that batch's CRC is redone.
    # The framing is checked for the whole buffer first, so bad input leaves
    # it untouched rather than half patched.
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t size
    cdef BatchError err
    cdef uint16_t attributes
    while pos < n:
        err_pos[0] = pos
        err = parse_batch_header(buf + pos, n - pos, info)
        if err != BATCH_OK:
            return err
        if info.magic != 2:
            return BATCH_BAD_MAGIC
        if info.last_offset_delta < 0:
            return BATCH_BAD_COUNT
        size = <Py_ssize_t>info.batch_length + LOG_OVERHEAD
        if size > n - pos:
            return BATCH_TRUNCATED
        pos += size
    pos = 0
    while pos < n:
        size = <Py_ssize_t>(<int32_t>load_be32(buf + pos + LENGTH_OFFSET)) + LOG_OVERHEAD
        if set_offsets:
            store_be64(buf + pos + BASE_OFFSET_OFFSET, <uint64_t>next_offset[0])
            next_offset[0] = _add64(next_offset[0],
                                    <int64_t>(<int32_t>load_be32(buf + pos + LAST_OFFSET_DELTA_OFFSET)) + 1)
        store_be32(buf + pos + PARTITION_LEADER_EPOCH_OFFSET, <uint32_t>leader_epoch)
        if log_append_time >= 0:
            attributes = load_be16(buf + pos + ATTRIBUTES_OFFSET) | 0x08
            store_be16(buf + pos + ATTRIBUTES_OFFSET, attributes)
            store_be64(buf + pos + MAX_TIMESTAMP_OFFSET, <uint64_t>log_append_time)
            store_be32(buf + pos + CRC_OFFSET,
                     crc32c_update(0, buf + pos + ATTRIBUTES_OFFSET, size - ATTRIBUTES_OFFSET))
        pos += size
    return BATCH_OK


cdef int64_t _patch(object records, int64_t base_offset, bint set_offsets, int32_t leader_epoch,
                    int64_t log_append_time) except? -1:
    cdef unsigned char[::1] buf
    cdef BatchInfo info
    cdef Py_ssize_t err_pos = 0
    cdef BatchError err
    cdef int64_t next_offset = base_offset
    try:
        buf = records
    except (TypeError, ValueError, BufferError) as exc:
        raise TypeError(
            f"records must be a writable contiguous buffer (bytearray, writable memoryview), "
            f"got {type(records).__name__}: {exc}") from None
    cdef Py_ssize_t n = buf.shape[0]
    cdef unsigned char* p = &buf[0] if n else _EMPTY
    if base_offset < 0:
        raise ValueError(f"base_offset must be >= 0, got {base_offset}")
    if n >= _NOGIL_MIN and log_append_time >= 0:
        with nogil:
            err = _patch_batches(p, n, &next_offset, set_offsets, leader_epoch, log_append_time, &err_pos, &info)
    else:
        err = _patch_batches(p, n, &next_offset, set_offsets, leader_epoch, log_append_time, &err_pos, &info)
    if err != BATCH_OK:
        raise _batch_error(err, p + err_pos, n - err_pos, err_pos, &info, 0)
    return next_offset


def assign_offsets(records, int64_t base_offset, int32_t partition_leader_epoch,
                   int64_t log_append_time_ms=-1) -> int:
    """Number the batches in ``records`` (a writable buffer) in place.

    Every batch gets base offset = the next free offset (from ``base_offset``,
    consecutive over batches) and ``partition_leader_epoch``; neither is
    under the CRC.  With ``log_append_time_ms >= 0`` each batch also gets the
    LogAppendTime timestamp type and max_timestamp = that time (as Kafka's
    ``setMaxTimestamp(LOG_APPEND_TIME, now)``), and its CRC is recomputed.
    Returns the next offset after the last batch.  Expects validated input;
    structurally broken input still raises CorruptMessageError, never
    writes out of bounds.
    """
    return _patch(records, base_offset, True, partition_leader_epoch, log_append_time_ms)


def set_partition_leader_epoch(records, int32_t partition_leader_epoch) -> None:
    """Set every batch's partition leader epoch in place (no CRC work)."""
    _patch(records, 0, False, partition_leader_epoch, -1)


# ---------------------------------------------------------------- reading records

cdef inline bint _short_varint(const unsigned char* buf, Py_ssize_t end, Py_ssize_t* pos,
                               int64_t* out) noexcept nogil:
    # A one- or two-byte zig-zag varint, read inline: record fields (lengths below
    # 8 KiB, deltas) are that short, and the produce path walks every record (a call
    # into varint.pyx per field costs more than the parsing).  False: longer or
    # truncated, for the general readers to decide; pos is then unchanged.
    cdef Py_ssize_t p = pos[0]
    cdef int64_t u
    if p >= end:
        return False
    if buf[p] < 0x80:
        u = buf[p]
        pos[0] = p + 1
    elif p + 1 < end and buf[p + 1] < 0x80:
        u = (buf[p] & 0x7F) | (<int64_t>buf[p + 1] << 7)
        pos[0] = p + 2
    else:
        return False
    out[0] = (u >> 1) ^ -(u & 1)
    return True


cdef inline int _varint32(const unsigned char* buf, Py_ssize_t end, Py_ssize_t* pos,
                          int32_t* out) noexcept nogil:
    cdef int64_t v
    if _short_varint(buf, end, pos, &v):
        out[0] = <int32_t>v
        return 0
    return read_varint32(buf, end, pos, out)


cdef RecordError read_record(const unsigned char* buf, Py_ssize_t end, Py_ssize_t* pos,
                             RecordInfo* out) noexcept nogil:
    return _read_record(buf, end, pos, out)


cdef inline RecordError _read_record(const unsigned char* buf, Py_ssize_t end, Py_ssize_t* pos,
                                     RecordInfo* out) noexcept nogil:
    # read_record's body, inline for the loops of this module (the produce path's
    # record walk calls it once per record); other modules call read_record.
    cdef Py_ssize_t p = pos[0]
    cdef Py_ssize_t rend
    cdef int32_t n32, klen, vlen, i
    cdef int64_t n64
    if p >= end:
        return RECORD_MISSING
    if _varint32(buf, end, &p, &n32) != 0 or n32 < 0 or n32 > end - p:
        return RECORD_BAD_LENGTH
    # Every field is read against the record's own end, not the batch's.
    rend = p + n32
    if p >= rend:
        return RECORD_BAD_FIELD
    out.attributes = <int8_t>buf[p]
    p += 1
    if not _short_varint(buf, rend, &p, &n64) and read_varint(buf, rend, &p, &n64) != 0:
        return RECORD_BAD_FIELD
    out.timestamp_delta = n64
    if _varint32(buf, rend, &p, &n32) != 0:
        return RECORD_BAD_FIELD
    out.offset_delta = n32
    if _varint32(buf, rend, &p, &klen) != 0 or klen < -1 or klen > rend - p:
        return RECORD_BAD_KEY
    out.key_offset = p
    out.key_length = klen
    if klen > 0:
        p += klen
    if _varint32(buf, rend, &p, &vlen) != 0 or vlen < -1 or vlen > rend - p:
        return RECORD_BAD_VALUE
    out.value_offset = p
    out.value_length = vlen
    if vlen > 0:
        p += vlen
    # Each header takes at least two bytes (two length varints).
    if _varint32(buf, rend, &p, &n32) != 0 or n32 < 0 or n32 > (rend - p) // 2:
        return RECORD_BAD_HEADER_COUNT
    out.header_count = n32
    out.headers_offset = p
    for i in range(n32):
        if _varint32(buf, rend, &p, &klen) != 0 or klen < 0 or klen > rend - p:
            return RECORD_BAD_HEADER
        p += klen
        if _varint32(buf, rend, &p, &vlen) != 0 or vlen < -1 or vlen > rend - p:
            return RECORD_BAD_HEADER
        if vlen > 0:
            p += vlen
    if p != rend:
        return RECORD_SIZE_MISMATCH
    out.size = rend - pos[0]
    pos[0] = rend
    return RECORD_OK


# Outcomes of _walk_next beyond RecordError.
cdef enum:
    WALK_END = 100         # every declared record read, no bytes left
    WALK_TRAILING = 101    # every declared record read, bytes left over
    WALK_ORDER = 102       # offset delta not increasing, or past last_offset_delta

cdef struct _Walk:
    const unsigned char* data
    Py_ssize_t pos
    Py_ssize_t end
    int32_t count          # records the header declares
    int32_t read
    int32_t prev_delta
    int32_t last_delta


cdef inline int _walk_next(_Walk* w, RecordInfo* r) noexcept nogil:
    """Next record of a batch, with the batch-level consistency checks."""
    cdef RecordError err
    if w.read >= w.count:
        return WALK_END if w.pos == w.end else WALK_TRAILING
    err = _read_record(w.data, w.end, &w.pos, r)
    if err != RECORD_OK:
        return err
    if r.offset_delta <= w.prev_delta or r.offset_delta > w.last_delta:
        return WALK_ORDER
    w.prev_delta = r.offset_delta
    w.read += 1
    return RECORD_OK


cdef object _record_error(int code, const _Walk* w, const RecordInfo* r, int64_t base_offset):
    what = f"record #{w.read} (from 0) of the {w.count} in the batch at base offset {base_offset}"
    fix = "the producer wrote a malformed batch"
    if code == WALK_TRAILING:
        return InvalidRecordError(
            f"the batch at base offset {base_offset} declares {w.count} records but "
            f"{w.end - w.pos} bytes remain after them; {fix}")
    if code == RECORD_MISSING:
        return InvalidRecordError(
            f"the batch at base offset {base_offset} declares {w.count} records but its data "
            f"ends after {w.read}; {fix}")
    if code == WALK_ORDER:
        return InvalidRecordError(
            f"{what} has offset delta {r.offset_delta}, but deltas must increase and stay within "
            f"0..{w.last_delta} (last_offset_delta); {fix}")
    return InvalidRecordError(f"{what} {_RECORD_REASONS.get(code, f'is invalid (code {code})')}; {fix}")


cdef list decode_headers(const unsigned char* buf, Py_ssize_t end, Py_ssize_t pos, int32_t count):
    # Only called on headers read_record has already framed.  Keys decode as
    # Java's Utils.utf8 does: invalid UTF-8 becomes U+FFFD, never an error.
    cdef list out = []
    cdef int32_t i, klen, vlen
    for i in range(count):
        read_varint32(buf, end, &pos, &klen)
        key = PyUnicode_DecodeUTF8(<const char*>buf + pos, klen, "replace")
        pos += klen
        read_varint32(buf, end, &pos, &vlen)
        if vlen < 0:
            value = None
        else:
            value = PyBytes_FromStringAndSize(<const char*>buf + pos, vlen)
            pos += vlen
        out.append((key, value))
    return out


@cython.final
@cython.freelist(64)
cdef class Record:
    """One record: absolute offset, timestamp, key, value, headers."""

    cdef readonly int64_t offset
    cdef readonly int64_t timestamp
    cdef readonly int timestamp_type
    cdef readonly object key
    cdef readonly object value
    cdef readonly list headers

    def __init__(self, int64_t offset, int64_t timestamp, key, value, headers=(),
                 int timestamp_type=0):
        self.offset = offset
        self.timestamp = timestamp
        self.timestamp_type = timestamp_type
        self.key = key
        self.value = value
        self.headers = list(headers)

    def __repr__(self) -> str:
        return (f"Record(offset={self.offset}, timestamp={self.timestamp}, key={self.key!r}, "
                f"value={self.value!r}, headers={self.headers!r})")

    def __eq__(self, other):
        if not isinstance(other, Record):
            return NotImplemented
        cdef Record o = <Record>other
        return (self.offset == o.offset and self.timestamp == o.timestamp
                and self.timestamp_type == o.timestamp_type and self.key == o.key
                and self.value == o.value and self.headers == o.headers)

    __hash__ = None


cdef inline Record _make_record(const unsigned char* data, Py_ssize_t end, const RecordInfo* r,
                                int64_t base_offset, int64_t base_timestamp, int64_t log_append_time,
                                int timestamp_type):
    cdef Record rec = Record.__new__(Record)
    rec.offset = _add64(base_offset, r.offset_delta)
    rec.timestamp = (log_append_time if timestamp_type == 1
                     else _add64(base_timestamp, r.timestamp_delta))
    rec.timestamp_type = timestamp_type
    if r.key_length < 0:
        rec.key = None
    else:
        rec.key = PyBytes_FromStringAndSize(<const char*>data + r.key_offset, r.key_length)
    if r.value_length < 0:
        rec.value = None
    else:
        rec.value = PyBytes_FromStringAndSize(<const char*>data + r.value_offset, r.value_length)
    if r.header_count == 0:
        rec.headers = []
    else:
        rec.headers = decode_headers(data, end, r.headers_offset, r.header_count)
    return rec


cdef object _decompress(int codec, object data, Py_ssize_t max_size, int64_t base_offset):
    try:
        return _compression.decompress(codec, data, max_size)
    except Exception as exc:
        raise CorruptMessageError(
            f"the {CODEC_NAMES.get(codec, codec)}-compressed records of the batch at base offset "
            f"{base_offset} could not be decompressed ({exc}); the batch is corrupt — resend it"
        ) from exc


@cython.final
cdef class RecordBatch:
    """One v2 batch in a buffer: its header, and its records on iteration.

    ``RecordBatch(buf, position=0)`` checks the batch (CRC included unless
    ``check_crc=False``); iterating decompresses the records section (at most
    ``max_decompressed_size`` bytes, 0 = DEFAULT_MAX_DECOMPRESSED_SIZE) and
    yields :class:`Record` objects, checking every record's framing.  The
    batch keeps the buffer alive while it (or an iterator over it) exists.
    """

    cdef readonly BatchHeader header
    cdef readonly Py_ssize_t position
    cdef object _source                    # the object the caller passed
    cdef const unsigned char[::1] _view    # the whole buffer
    cdef Py_ssize_t _max_decompressed
    cdef object _decompressed              # cached decompressed records section

    def __init__(self, buf, Py_ssize_t position=0, *, bint check_crc=True,
                 Py_ssize_t max_decompressed_size=0):
        cdef BatchInfo info
        cdef BatchError err
        cdef const unsigned char[::1] view = buf
        cdef Py_ssize_t n = view.shape[0]
        _check_position(position, n)
        cdef const unsigned char* p = (&view[0] if n else _EMPTY) + position
        if check_crc and n - position >= _NOGIL_MIN:
            with nogil:
                err = _check_at(p, n - position, 0, check_crc, &info)
        else:
            err = _check_at(p, n - position, 0, check_crc, &info)
        if err != BATCH_OK:
            raise _batch_error(err, p, n - position, position, &info, 0)
        self._init(buf, view, position, &info, max_decompressed_size)

    cdef _init(self, object source, const unsigned char[::1] view, Py_ssize_t position,
               const BatchInfo* info, Py_ssize_t max_decompressed_size):
        self._source = source
        self._view = view
        self.position = position
        self.header = BatchHeader.wrap(info)
        self._max_decompressed = (max_decompressed_size if max_decompressed_size > 0
                                  else DEFAULT_MAX_DECOMPRESSED_SIZE)
        self._decompressed = None

    @staticmethod
    cdef RecordBatch _make(object source, const unsigned char[::1] view, Py_ssize_t position,
                           const BatchInfo* info, Py_ssize_t max_decompressed_size):
        cdef RecordBatch b = RecordBatch.__new__(RecordBatch)
        b._init(source, view, position, info, max_decompressed_size)
        return b

    @property
    def is_control(self) -> bool:
        return self.header.is_control

    @property
    def size(self) -> int:
        return self.header.size

    def __len__(self) -> int:
        """The record count the header declares."""
        return self.header._h.record_count

    def __repr__(self) -> str:
        return f"RecordBatch(position={self.position}, header={self.header!r})"

    cdef int _records_section(self, const unsigned char** data, Py_ssize_t* start,
                              Py_ssize_t* end) except -1:
        """Pointer and [start, end) of the records, decompressed on first use.

        The memory belongs to this batch (its buffer or its cached
        decompressed bytes): valid while the batch is alive.
        """
        cdef const BatchInfo* h = &self.header._h
        cdef int codec = h.attributes & 0x07
        cdef Py_ssize_t first = self.position + BATCH_OVERHEAD
        cdef Py_ssize_t stop = self.position + <Py_ssize_t>h.batch_length + LOG_OVERHEAD
        if codec == 0:
            data[0] = &self._view[0]
            start[0] = first
            end[0] = stop
            return 0
        if self._decompressed is None:
            section = memoryview(self._source)[first:stop]
            out = _decompress(codec, section, self._max_decompressed, h.base_offset)
            if not PyBytes_CheckExact(out):
                out = bytes(out)
            self._decompressed = out
        data[0] = <const unsigned char*>PyBytes_AS_STRING(self._decompressed)
        start[0] = 0
        end[0] = PyBytes_GET_SIZE(self._decompressed)
        return 0

    def records_data(self):
        """The records section, decompressed: a memoryview (codec none) or bytes."""
        cdef const unsigned char* data
        cdef Py_ssize_t start, end
        self._records_section(&data, &start, &end)
        if self._decompressed is not None:
            return self._decompressed
        return memoryview(self._source)[start:end]

    def __iter__(self):
        return _RecordIterator.create(self)

    def records(self) -> list:
        """All records as a list."""
        return list(_RecordIterator.create(self))

    def index(self) -> RecordIndex:
        """Frame-check every record and return their positions (no per-record objects)."""
        return RecordIndex.create(self)

    def control_record_type(self) -> int:
        """See :func:`control_record_type`."""
        return control_record_type(self)


@cython.final
cdef class _RecordIterator:
    cdef RecordBatch _batch                # keeps the memory alive
    cdef _Walk _w
    cdef int64_t _base_offset
    cdef int64_t _base_timestamp
    cdef int64_t _log_append_time          # max_timestamp: every record's time under LogAppendTime
    cdef int _timestamp_type
    cdef bint _failed

    @staticmethod
    cdef _RecordIterator create(RecordBatch batch):
        cdef _RecordIterator it = _RecordIterator.__new__(_RecordIterator)
        cdef const BatchInfo* h = &batch.header._h
        it._batch = batch
        batch._records_section(&it._w.data, &it._w.pos, &it._w.end)
        it._w.count = h.record_count
        it._w.read = 0
        it._w.prev_delta = -1
        it._w.last_delta = h.last_offset_delta
        it._base_offset = h.base_offset
        it._base_timestamp = h.base_timestamp
        it._timestamp_type = 1 if h.attributes & 0x08 else 0
        it._log_append_time = h.max_timestamp
        it._failed = False
        return it

    def __iter__(self):
        return self

    def __next__(self):
        cdef RecordInfo r
        cdef int code
        if self._failed:
            raise StopIteration
        code = _walk_next(&self._w, &r)
        if code == RECORD_OK:
            return _make_record(self._w.data, self._w.end, &r, self._base_offset,
                                self._base_timestamp, self._log_append_time, self._timestamp_type)
        self._failed = True
        if code == WALK_END:
            raise StopIteration
        raise _record_error(code, &self._w, &r, self._base_offset)


def iter_records(buf, Py_ssize_t position=0, Py_ssize_t max_decompressed_size=0, *,
                 bint check_crc=True):
    """Iterate the records of the batch at ``buf[position:]`` (see :class:`RecordBatch`)."""
    return iter(RecordBatch(buf, position, check_crc=check_crc,
                            max_decompressed_size=max_decompressed_size))


def iter_batches(buf, Py_ssize_t position=0, *, bint allow_partial_tail=False, bint check_crc=True,
                 Py_ssize_t max_decompressed_size=0):
    """Iterate the concatenated batches in ``buf[position:]`` as :class:`RecordBatch` objects.

    Each batch is checked as by :func:`validate_batch` (CRC optional).  A
    trailing partial batch raises CorruptMessageError, or ends the iteration
    quietly when ``allow_partial_tail`` (fetch responses may end with one).
    """
    cdef const unsigned char[::1] view = buf
    cdef Py_ssize_t n = view.shape[0]
    cdef Py_ssize_t pos = _check_position(position, n)
    cdef const unsigned char* p
    cdef BatchInfo info
    cdef BatchError err
    while pos < n:
        p = &view[0] + pos
        if allow_partial_tail and _is_partial_tail(p, n - pos):
            return
        if check_crc and n - pos >= _NOGIL_MIN:
            with nogil:
                err = _check_at(p, n - pos, 0, check_crc, &info)
        else:
            err = _check_at(p, n - pos, 0, check_crc, &info)
        if err != BATCH_OK:
            raise _batch_error(err, p, n - pos, pos, &info, 0)
        yield RecordBatch._make(buf, view, pos, &info, max_decompressed_size)
        pos += <Py_ssize_t>info.batch_length + LOG_OVERHEAD


def control_record_type(RecordBatch batch) -> int:
    """The type in a control batch's record key: 0 abort, 1 commit (others: KRaft).

    The key is ``version i16 | type i16`` (Kafka's ControlRecordType).
    Raises InvalidRecordError if the batch is not a control batch or its key
    is malformed.
    """
    cdef RecordInfo r
    cdef int code
    cdef _RecordIterator it
    cdef const unsigned char* key
    if not batch.header.is_control:
        raise InvalidRecordError(
            f"the batch at base offset {batch.header.base_offset} is not a control batch")
    it = _RecordIterator.create(batch)
    code = _walk_next(&it._w, &r)
    if code == WALK_END:
        raise InvalidRecordError(
            f"the control batch at base offset {batch.header.base_offset} has no record")
    if code != RECORD_OK:
        raise _record_error(code, &it._w, &r, batch.header.base_offset)
    if r.key_length < 4:
        raise InvalidRecordError(
            f"the control record at offset {batch.header.base_offset + r.offset_delta} has a "
            f"{r.key_length}-byte key; a control key needs at least 4 bytes (version, type)")
    key = it._w.data + r.key_offset
    if <int16_t>load_be16(key) < 0:
        raise InvalidRecordError(
            f"the control record at offset {batch.header.base_offset + r.offset_delta} has "
            f"invalid key version {<int16_t>load_be16(key)}")
    return <int16_t>load_be16(key + 2)


# ---------------------------------------------------------------- no-object fast path

cdef struct _IndexArrays:
    int64_t* offsets
    int64_t* timestamps
    int64_t* key_positions
    int32_t* key_lengths
    int64_t* value_positions
    int32_t* value_lengths
    int64_t* header_positions
    int32_t* header_counts


cdef int _index_loop(_Walk* w, RecordInfo* r, _IndexArrays* a, int64_t base_offset,
                     int64_t base_timestamp, bint log_append, int64_t log_append_time) noexcept nogil:
    cdef int code
    cdef int32_t i
    while True:
        i = w.read
        code = _walk_next(w, r)
        if code != RECORD_OK:
            return code
        a.offsets[i] = _add64(base_offset, r.offset_delta)
        a.timestamps[i] = (log_append_time if log_append
                           else _add64(base_timestamp, r.timestamp_delta))
        a.key_positions[i] = r.key_offset
        a.key_lengths[i] = r.key_length
        a.value_positions[i] = r.value_offset
        a.value_lengths[i] = r.value_length
        a.header_positions[i] = r.headers_offset
        a.header_counts[i] = r.header_count


@cython.final
cdef class RecordIndex:
    """Where every record of one batch lives, as numpy arrays (no per-record objects).

    Positions index into :attr:`data`: the caller's buffer for an
    uncompressed batch, the decompressed records section otherwise.  A length
    of -1 means null.  ``key(i)``, ``value(i)``, ``headers(i)`` and
    ``record(i)`` build objects for one record on demand.
    """

    cdef readonly BatchHeader header
    cdef readonly object data
    cdef readonly Py_ssize_t count
    cdef readonly object offsets
    cdef readonly object timestamps
    cdef readonly object key_positions
    cdef readonly object key_lengths
    cdef readonly object value_positions
    cdef readonly object value_lengths
    cdef readonly object header_positions
    cdef readonly object header_counts
    cdef RecordBatch _batch

    @staticmethod
    cdef RecordIndex create(RecordBatch batch):
        cdef RecordIndex ix = RecordIndex.__new__(RecordIndex)
        cdef const BatchInfo* h = &batch.header._h
        cdef _Walk w
        cdef RecordInfo r
        cdef _IndexArrays a
        cdef int code
        cdef int32_t count = h.record_count
        batch._records_section(&w.data, &w.pos, &w.end)
        # The count sizes the arrays, so bound it by the bytes first: a
        # record takes at least MIN_RECORD_SIZE bytes.
        if count > (w.end - w.pos) // MIN_RECORD_SIZE:
            raise InvalidRecordError(
                f"the batch at base offset {h.base_offset} declares {count} records but its "
                f"{w.end - w.pos} bytes of records can hold at most "
                f"{(w.end - w.pos) // MIN_RECORD_SIZE}; the producer wrote a malformed batch")
        w.count = count
        w.read = 0
        w.prev_delta = -1
        w.last_delta = h.last_offset_delta
        ix._batch = batch
        ix.header = batch.header
        ix.count = count
        ix.data = batch._decompressed if batch._decompressed is not None else batch._source
        ix.offsets = np.empty(count, np.int64)
        ix.timestamps = np.empty(count, np.int64)
        ix.key_positions = np.empty(count, np.int64)
        ix.key_lengths = np.empty(count, np.int32)
        ix.value_positions = np.empty(count, np.int64)
        ix.value_lengths = np.empty(count, np.int32)
        ix.header_positions = np.empty(count, np.int64)
        ix.header_counts = np.empty(count, np.int32)
        cdef int64_t[::1] offsets = ix.offsets
        cdef int64_t[::1] timestamps = ix.timestamps
        cdef int64_t[::1] key_positions = ix.key_positions
        cdef int32_t[::1] key_lengths = ix.key_lengths
        cdef int64_t[::1] value_positions = ix.value_positions
        cdef int32_t[::1] value_lengths = ix.value_lengths
        cdef int64_t[::1] header_positions = ix.header_positions
        cdef int32_t[::1] header_counts = ix.header_counts
        if count:
            a.offsets = &offsets[0]
            a.timestamps = &timestamps[0]
            a.key_positions = &key_positions[0]
            a.key_lengths = &key_lengths[0]
            a.value_positions = &value_positions[0]
            a.value_lengths = &value_lengths[0]
            a.header_positions = &header_positions[0]
            a.header_counts = &header_counts[0]
        with nogil:
            code = _index_loop(&w, &r, &a, h.base_offset, h.base_timestamp,
                               (h.attributes & 0x08) != 0, h.max_timestamp)
        if code != WALK_END:
            raise _record_error(code, &w, &r, h.base_offset)
        # key(i)/value(i)/headers(i) trust these positions: keep them read-only.
        for arr in (ix.offsets, ix.timestamps, ix.key_positions, ix.key_lengths,
                    ix.value_positions, ix.value_lengths, ix.header_positions, ix.header_counts):
            arr.flags.writeable = False
        return ix

    def __len__(self) -> int:
        return self.count

    cdef const unsigned char* _data(self) except NULL:
        cdef const unsigned char* data
        cdef Py_ssize_t start, end
        self._batch._records_section(&data, &start, &end)
        return data

    cdef Py_ssize_t _check_index(self, Py_ssize_t i) except -1:
        if i < 0:
            i += self.count
        if i < 0 or i >= self.count:
            raise IndexError(f"record index {i} out of range for {self.count} records")
        return i

    def key(self, Py_ssize_t i):
        """Key of record ``i`` as bytes (None if null)."""
        i = self._check_index(i)
        cdef int32_t n = self.key_lengths[i]
        if n < 0:
            return None
        return PyBytes_FromStringAndSize(<const char*>self._data() + <Py_ssize_t>self.key_positions[i], n)

    def value(self, Py_ssize_t i):
        """Value of record ``i`` as bytes (None if null)."""
        i = self._check_index(i)
        cdef int32_t n = self.value_lengths[i]
        if n < 0:
            return None
        return PyBytes_FromStringAndSize(<const char*>self._data() + <Py_ssize_t>self.value_positions[i], n)

    def headers(self, Py_ssize_t i) -> list:
        """Headers of record ``i``."""
        cdef const unsigned char* data
        cdef Py_ssize_t start, end
        i = self._check_index(i)
        self._batch._records_section(&data, &start, &end)
        return decode_headers(data, end, self.header_positions[i], self.header_counts[i])

    def record(self, Py_ssize_t i) -> Record:
        """Record ``i`` as a :class:`Record`."""
        i = self._check_index(i)
        return Record(self.offsets[i], self.timestamps[i], self.key(i), self.value(i),
                      self.headers(i), self.header.timestamp_type)


def index_records(buf, Py_ssize_t position=0, Py_ssize_t max_decompressed_size=0, *,
                  bint check_crc=True) -> RecordIndex:
    """:meth:`RecordBatch.index` of the batch at ``buf[position:]``."""
    return RecordBatch(buf, position, check_crc=check_crc,
                       max_decompressed_size=max_decompressed_size).index()


# ---------------------------------------------------------------- building

cdef bytes _encode_headers(object headers, int32_t* count):
    """Encoded header section (without the count varint) of (key, value) pairs."""
    cdef bytearray out = bytearray()
    cdef unsigned char tmp[10]
    cdef Py_ssize_t n
    cdef int64_t c = 0
    for item in headers:
        try:
            hkey, hvalue = item
        except (TypeError, ValueError):
            raise TypeError(f"a header must be a (key, value) pair, got {item!r}") from None
        if hkey is None:
            raise TypeError("a header key may not be None")
        hkey = (<str>hkey).encode("utf-8") if isinstance(hkey, str) else _as_bytes(hkey, "a header key")
        n = put_varint(tmp, len(hkey)) - tmp
        out += tmp[:n]
        out += hkey
        hvalue = _as_bytes(hvalue, "a header value")
        if hvalue is None:
            out.append(1)
        else:
            n = put_varint(tmp, len(hvalue)) - tmp
            out += tmp[:n]
            out += hvalue
        c += 1
    if c > INT32_MAX:
        raise ValueError("too many headers")
    count[0] = <int32_t>c
    return bytes(out)


cdef bytes _as_bytes(object obj, str what):
    """``obj`` (any buffer) as bytes; None stays None; no copy for bytes."""
    if obj is None or PyBytes_CheckExact(obj):
        return obj
    if isinstance(obj, str):
        raise TypeError(f"{what} must be bytes-like or None, not str: encode it first")
    try:
        return bytes(memoryview(obj))
    except TypeError:
        raise TypeError(f"{what} must be bytes-like or None, got {type(obj).__name__}") from None


cdef int _check_codec(int codec) except -1:
    if codec < 0 or codec > 4:
        raise ValueError(
            f"compression must be a codec id 0 (none), 1 (gzip), 2 (snappy), 3 (lz4) or 4 (zstd), "
            f"got {codec}")
    return 0


cdef bytes _finish_batch(int codec, const unsigned char* records, Py_ssize_t records_size,
                         object records_owner, int64_t base_offset, int32_t leader_epoch,
                         int16_t attributes, int32_t last_offset_delta, int64_t base_timestamp,
                         int64_t max_timestamp, int64_t producer_id, int16_t producer_epoch,
                         int32_t base_sequence, int32_t record_count, object level=None):
    """The finished batch: records section compressed by ``codec`` (at ``level``, None =
    the codec's default), header, CRC."""
    cdef object payload
    cdef const unsigned char* src = records
    cdef Py_ssize_t n = records_size
    if codec != 0:
        view = (records_owner if records_owner is not None
                else PyMemoryView_FromMemory(<char*>records, records_size, PyBUF_READ))
        payload = _compression.compress(codec, view, level)
        if not PyBytes_CheckExact(payload):
            payload = bytes(payload)
        src = <const unsigned char*>PyBytes_AS_STRING(payload)
        n = PyBytes_GET_SIZE(payload)
    cdef Py_ssize_t size = BATCH_OVERHEAD + n
    if size - LOG_OVERHEAD > INT32_MAX:
        raise MessageTooLargeError(
            f"the batch would be {size} bytes, over the 2 GiB a v2 batch can hold; build smaller batches")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    memcpy(p + BATCH_OVERHEAD, src, n)
    with nogil:
        put_batch_header(p, size, base_offset, leader_epoch, attributes | codec, last_offset_delta,
                      base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence,
                      record_count)
    return out


cdef int16_t _attributes(int timestamp_type, bint transactional, bint control):
    cdef int16_t a = 0
    if timestamp_type == 1:
        a |= 0x08
    if transactional:
        a |= 0x10
    if control:
        a |= 0x20
    return a


@cython.final
cdef class RecordBatchBuilder:
    """Builds one v2 batch record by record.

    ``append`` encodes each record at once into a C buffer; ``build``
    compresses the records section with the codec, fills the header and the
    CRC, and returns the batch bytes.  The base timestamp is the first
    record's; max_timestamp is the largest.
    """

    cdef unsigned char* _buf
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef int _codec
    cdef int64_t _base_offset
    cdef int32_t _leader_epoch
    cdef int16_t _attributes
    cdef int64_t _producer_id
    cdef int16_t _producer_epoch
    cdef int32_t _base_sequence
    cdef int32_t _count
    cdef int32_t _last_delta
    cdef int64_t _base_timestamp
    cdef int64_t _max_timestamp
    cdef bytes _built

    def __cinit__(self, int compression=0, int64_t base_offset=0, int32_t partition_leader_epoch=-1,
                  int timestamp_type=0, int64_t producer_id=-1, int16_t producer_epoch=-1,
                  int32_t base_sequence=-1, bint is_transactional=False, bint is_control=False):
        _check_codec(compression)
        if timestamp_type not in (0, 1):
            raise ValueError(f"timestamp_type must be 0 (CreateTime) or 1 (LogAppendTime), got {timestamp_type}")
        if (is_transactional or is_control) and producer_id < 0:
            raise ValueError("a transactional or control batch needs a producer id >= 0")
        self._codec = compression
        self._base_offset = base_offset
        self._leader_epoch = partition_leader_epoch
        self._attributes = _attributes(timestamp_type, is_transactional, is_control)
        self._producer_id = producer_id
        self._producer_epoch = producer_epoch
        self._base_sequence = base_sequence
        self._count = 0
        self._last_delta = -1
        self._base_timestamp = -1
        self._max_timestamp = -1
        self._built = None
        self._cap = 1024
        self._buf = <unsigned char*>malloc(self._cap)
        if self._buf == NULL:
            raise MemoryError()
        self._len = BATCH_OVERHEAD       # room for the header

    def __dealloc__(self):
        free(self._buf)

    cdef int _reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t cap = self._cap
        cdef unsigned char* grown
        if self._len + extra <= cap:
            return 0
        while cap < self._len + extra:
            cap *= 2
        grown = <unsigned char*>realloc(self._buf, cap)
        if grown == NULL:
            raise MemoryError()
        self._buf = grown
        self._cap = cap
        return 0

    cdef int32_t _append(self, int32_t offset_delta, object timestamp, object key, object value,
                         object headers) except -2:
        cdef int64_t ts = now_ms() if timestamp is None else <int64_t>timestamp
        cdef int64_t ts_delta
        cdef int32_t header_count = 0
        cdef bytes hbytes = None
        cdef Py_ssize_t hsize = 0
        cdef Py_ssize_t klen = -1, vlen = -1
        cdef const unsigned char* kp = NULL
        cdef const unsigned char* vp = NULL
        cdef Py_ssize_t body
        if self._built is not None:
            raise RuntimeError("the batch is already built; start a new RecordBatchBuilder")
        if offset_delta <= self._last_delta:
            raise ValueError(f"offsets must increase: offset delta {offset_delta} after {self._last_delta}")
        key = _as_bytes(key, "key")
        value = _as_bytes(value, "value")
        if key is not None:
            kp = <const unsigned char*>PyBytes_AS_STRING(key)
            klen = PyBytes_GET_SIZE(key)
        if value is not None:
            vp = <const unsigned char*>PyBytes_AS_STRING(value)
            vlen = PyBytes_GET_SIZE(value)
        if headers:
            hbytes = _encode_headers(headers, &header_count)
            hsize = PyBytes_GET_SIZE(hbytes)
        # The first record's timestamp is the batch's base timestamp.
        ts_delta = 0 if self._count == 0 else <int64_t>(<uint64_t>ts - <uint64_t>self._base_timestamp)
        body = record_body_size(ts_delta, offset_delta, klen, vlen, header_count, hsize)
        if self._len + body > INT32_MAX:
            raise MessageTooLargeError("the batch would exceed 2 GiB; build smaller batches")
        self._reserve(body + 5)
        self._len = put_record(self._buf + self._len, body, ts_delta, offset_delta, kp, klen, vp,
                                  vlen, header_count,
                                  <const unsigned char*>PyBytes_AS_STRING(hbytes) if hsize else NULL,
                                  hsize) - self._buf
        # State changes only once the record is in (an error above leaves none).
        if self._count == 0:
            self._base_timestamp = self._max_timestamp = ts
        elif ts > self._max_timestamp:
            self._max_timestamp = ts
        self._count += 1
        self._last_delta = offset_delta
        return offset_delta

    def append(self, timestamp, key, value, headers=()) -> int:
        """Add a record (timestamp in ms, None = now); returns its offset delta."""
        if self._last_delta == INT32_MAX:
            raise ValueError("the batch already holds 2**31 offsets; start a new batch")
        return self._append(self._last_delta + 1, timestamp, key, value, headers)

    def append_with_offset(self, int64_t offset, timestamp, key, value, headers=()) -> int:
        """Add a record at an absolute ``offset`` (> the previous one; gaps allowed, as compaction leaves)."""
        delta = <object>offset - self._base_offset     # Python ints: no overflow
        if delta < 0 or delta > INT32_MAX:
            raise ValueError(f"offset {offset} is outside base_offset {self._base_offset} .. +2**31-1")
        return self._append(<int32_t>delta, timestamp, key, value, headers)

    @property
    def record_count(self) -> int:
        return self._count

    @property
    def last_offset_delta(self) -> int:
        return self._last_delta

    def size_in_bytes(self) -> int:
        """Size of the batch so far: exact without compression, an upper estimate with it."""
        return self._len

    def build(self) -> bytes:
        """The finished batch (the same bytes if called again)."""
        if self._built is not None:
            return self._built
        if self._count == 0:
            raise ValueError("a record batch needs at least one record")
        if self._codec == 0:
            with nogil:
                put_batch_header(self._buf, self._len, self._base_offset, self._leader_epoch,
                              self._attributes, self._last_delta, self._base_timestamp,
                              self._max_timestamp, self._producer_id, self._producer_epoch,
                              self._base_sequence, self._count)
            self._built = PyBytes_FromStringAndSize(<char*>self._buf, self._len)
        else:
            self._built = _finish_batch(self._codec, self._buf + BATCH_OVERHEAD,
                                        self._len - BATCH_OVERHEAD, None, self._base_offset,
                                        self._leader_epoch, self._attributes, self._last_delta,
                                        self._base_timestamp, self._max_timestamp,
                                        self._producer_id, self._producer_epoch,
                                        self._base_sequence, self._count)
        return self._built


def build_batch(records, int compression=0, int64_t base_offset=0, *,
                int32_t partition_leader_epoch=-1, int timestamp_type=0, int64_t producer_id=-1,
                int16_t producer_epoch=-1, int32_t base_sequence=-1,
                bint is_transactional=False) -> bytes:
    """One batch from ``(timestamp, key, value, headers)`` tuples (headers may be omitted)."""
    cdef RecordBatchBuilder b = RecordBatchBuilder(
        compression, base_offset, partition_leader_epoch, timestamp_type, producer_id,
        producer_epoch, base_sequence, is_transactional, False)
    for item in records:
        if len(item) == 3:
            b.append(item[0], item[1], item[2])
        else:
            b.append(item[0], item[1], item[2], item[3])
    return b.build()


def build_batch_from_values(values, keys=None, timestamp=None, *, timestamps=None,
                            int compression=0, int64_t base_offset=0,
                            int32_t partition_leader_epoch=-1, int64_t producer_id=-1,
                            int16_t producer_epoch=-1, int32_t base_sequence=-1,
                            bint is_transactional=False) -> bytes:
    """One batch from a list of values (bytes or None), the fast path.

    ``keys``: None (all null) or a list as long as ``values``.  Timestamps:
    ``timestamps`` (one per record) if given, else ``timestamp`` for all
    (None = now).  Sizes are computed first, then everything is encoded into
    one allocation; no objects are made per record.
    """
    cdef list vals = list(values)
    cdef list ks = None if keys is None else list(keys)
    cdef list tss = None if timestamps is None else list(timestamps)
    cdef Py_ssize_t n = PyList_GET_SIZE(vals)
    cdef Py_ssize_t i
    cdef int64_t ts, base_ts = 0, max_ts = 0
    cdef object item
    cdef bint transactional = is_transactional
    _check_codec(compression)
    if n == 0:
        raise ValueError("a record batch needs at least one record")
    if n > INT32_MAX:
        raise ValueError("too many records for one batch")
    if ks is not None and PyList_GET_SIZE(ks) != n:
        raise ValueError(f"keys has {len(ks)} items but values has {n}")
    if tss is not None and len(tss) != n:
        raise ValueError(f"timestamps has {len(tss)} items but values has {n}")
    if transactional and producer_id < 0:
        raise ValueError("a transactional batch needs a producer id >= 0")
    # Normalise anything that is not bytes/None (rare) so the loops below
    # only see bytes.
    for i in range(n):
        item = <object>PyList_GET_ITEM(vals, i)
        if item is not None and not PyBytes_CheckExact(item):
            vals[i] = _as_bytes(item, "value")
        if ks is not None:
            item = <object>PyList_GET_ITEM(ks, i)
            if item is not None and not PyBytes_CheckExact(item):
                ks[i] = _as_bytes(item, "key")
    # Timestamps as deltas from the first one, in a C array when per record.
    cdef int64_t* deltas = NULL
    if tss is None:
        base_ts = max_ts = now_ms() if timestamp is None else <int64_t>timestamp
    else:
        deltas = <int64_t*>malloc(n * sizeof(int64_t))
        if deltas == NULL:
            raise MemoryError()
    try:
        if tss is not None:
            base_ts = max_ts = <int64_t>tss[0]
            for i in range(n):
                ts = <int64_t>tss[i]
                if ts > max_ts:
                    max_ts = ts
                deltas[i] = <int64_t>(<uint64_t>ts - <uint64_t>base_ts)
        return _encode_values(vals, ks, deltas, n, compression, base_offset, partition_leader_epoch,
                              _attributes(0, transactional, False), base_ts, max_ts, producer_id,
                              producer_epoch, base_sequence)
    finally:
        free(deltas)


cdef bytes _encode_values(list vals, list ks, const int64_t* deltas, Py_ssize_t n, int compression,
                          int64_t base_offset, int32_t leader_epoch, int16_t attributes,
                          int64_t base_ts, int64_t max_ts, int64_t producer_id,
                          int16_t producer_epoch, int32_t base_sequence):
    """build_batch_from_values after its checks: values/keys are bytes or None."""
    cdef Py_ssize_t i, total = 0, body, klen, vlen
    cdef int64_t delta = 0
    cdef const unsigned char* kp
    cdef const unsigned char* vp
    cdef object item
    # Pass 1: sizes.
    for i in range(n):
        if deltas != NULL:
            delta = deltas[i]
        item = <object>PyList_GET_ITEM(vals, i)
        vlen = -1 if item is None else PyBytes_GET_SIZE(item)
        klen = -1
        if ks is not None:
            item = <object>PyList_GET_ITEM(ks, i)
            klen = -1 if item is None else PyBytes_GET_SIZE(item)
        body = record_body_size(delta, <int32_t>i, klen, vlen, 0, 0)
        total += varint_size(body) + body
    if total + BATCH_OVERHEAD - LOG_OVERHEAD > INT32_MAX:
        raise MessageTooLargeError(
            f"the batch would be {total + BATCH_OVERHEAD} bytes, over the 2 GiB a v2 batch can "
            f"hold; build smaller batches")
    # Pass 2: encode straight into the output (uncompressed) or a scratch
    # bytes object that the codec then reads.
    cdef bytes out
    cdef unsigned char* start
    cdef unsigned char* p
    if compression == 0:
        out = PyBytes_FromStringAndSize(NULL, BATCH_OVERHEAD + total)
        start = <unsigned char*>PyBytes_AS_STRING(out)
        p = start + BATCH_OVERHEAD
    else:
        out = PyBytes_FromStringAndSize(NULL, total)
        start = <unsigned char*>PyBytes_AS_STRING(out)
        p = start
    for i in range(n):
        if deltas != NULL:
            delta = deltas[i]
        item = <object>PyList_GET_ITEM(vals, i)
        if item is None:
            vp = NULL
            vlen = -1
        else:
            vp = <const unsigned char*>PyBytes_AS_STRING(item)
            vlen = PyBytes_GET_SIZE(item)
        kp = NULL
        klen = -1
        if ks is not None:
            item = <object>PyList_GET_ITEM(ks, i)
            if item is not None:
                kp = <const unsigned char*>PyBytes_AS_STRING(item)
                klen = PyBytes_GET_SIZE(item)
        body = record_body_size(delta, <int32_t>i, klen, vlen, 0, 0)
        p = put_record(p, body, delta, <int32_t>i, kp, klen, vp, vlen, 0, NULL, 0)
    if compression == 0:
        with nogil:
            put_batch_header(start, BATCH_OVERHEAD + total, base_offset, leader_epoch, attributes,
                          <int32_t>(n - 1), base_ts, max_ts, producer_id, producer_epoch,
                          base_sequence, <int32_t>n)
        return out
    return _finish_batch(compression, start, total, out, base_offset, leader_epoch, attributes,
                         <int32_t>(n - 1), base_ts, max_ts, producer_id, producer_epoch,
                         base_sequence, <int32_t>n)


def build_control_batch(bint commit, int64_t producer_id, int16_t producer_epoch, timestamp,
                        int32_t coordinator_epoch=0, int64_t base_offset=0,
                        int32_t partition_leader_epoch=-1) -> bytes:
    """A transaction marker: a control batch with one COMMIT or ABORT record.

    Key ``version=0 i16 | type i16`` (1 commit, 0 abort); value
    ``version=0 i16 | coordinator_epoch i32`` (Kafka's EndTransactionMarker).
    The batch is transactional, with no sequence (Kafka's NO_SEQUENCE).
    """
    cdef unsigned char key[4]
    cdef unsigned char value[6]
    store_be16(key, 0)
    store_be16(key + 2, 1 if commit else 0)
    store_be16(value, 0)
    store_be32(value + 2, <uint32_t>coordinator_epoch)
    cdef RecordBatchBuilder b = RecordBatchBuilder(
        0, base_offset, partition_leader_epoch, 0, producer_id, producer_epoch, -1, True, True)
    b.append(timestamp, key[:4], value[:6])
    return b.build()


def end_txn_marker_coordinator_epoch(value) -> int:
    """The coordinator epoch in a transaction marker's record value."""
    cdef const unsigned char[::1] v = value
    if v.shape[0] < 6:
        raise InvalidRecordError(
            f"a transaction marker value needs 6 bytes (version, coordinator epoch), got {v.shape[0]}")
    if <int16_t>load_be16(&v[0]) < 0:
        raise InvalidRecordError(f"invalid transaction marker value version {<int16_t>load_be16(&v[0])}")
    return <int32_t>load_be32(&v[2])


# The Python names of the header constants are taken at C level by the .pxd
# enums, so bind them here.
globals().update(
    BATCH_OVERHEAD=<int>BATCH_OVERHEAD,
    LOG_OVERHEAD=<int>LOG_OVERHEAD,
    MIN_RECORD_SIZE=<int>MIN_RECORD_SIZE,
)
