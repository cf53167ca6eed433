from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

from pystream._core.crc32c cimport crc32c_update
from pystream._core.endian cimport store_be16, store_be32, store_be64
from pystream._core.wire cimport put_varint, varint_size

# RecordBatch v2 header layout (big-endian), offsets from the batch start.
cdef enum:
    BASE_OFFSET_OFFSET = 0
    LENGTH_OFFSET = 8
    PARTITION_LEADER_EPOCH_OFFSET = 12
    MAGIC_OFFSET = 16
    CRC_OFFSET = 17
    ATTRIBUTES_OFFSET = 21
    LAST_OFFSET_DELTA_OFFSET = 23
    BASE_TIMESTAMP_OFFSET = 27
    MAX_TIMESTAMP_OFFSET = 35
    PRODUCER_ID_OFFSET = 43
    PRODUCER_EPOCH_OFFSET = 51
    BASE_SEQUENCE_OFFSET = 53
    RECORDS_COUNT_OFFSET = 57
    BATCH_OVERHEAD = 61        # header size = smallest possible batch
    LOG_OVERHEAD = 12          # base offset + length: bytes not counted by `length`

# Results of parse_batch_header / check_batch.  0 means fine.
cdef enum BatchError:
    BATCH_OK = 0
    BATCH_TRUNCATED = 1        # fewer bytes than the header, or than `length` says
    BATCH_BAD_LENGTH = 2       # length field smaller than the header needs
    BATCH_BAD_MAGIC = 3        # magic != 2
    BATCH_BAD_CRC = 4
    BATCH_BAD_COUNT = 5        # record count negative or inconsistent with last_offset_delta
    BATCH_BAD_ATTRIBUTES = 6   # compression codec id 5..7
    BATCH_TOO_LARGE = 7        # size over the caller's limit

cdef struct BatchInfo:
    int64_t base_offset
    int32_t batch_length       # the length field: bytes after it
    int32_t partition_leader_epoch
    int8_t magic
    uint32_t crc
    int16_t attributes
    int32_t last_offset_delta
    int64_t base_timestamp
    int64_t max_timestamp
    int64_t producer_id
    int16_t producer_epoch
    int32_t base_sequence
    int32_t record_count

# Fill `out` from buf[0:length] without checking the CRC.  Needs the whole
# header (61 bytes) but not the whole batch; a batch longer than `length`
# is reported as BATCH_TRUNCATED only by check_batch.
cdef BatchError parse_batch_header(const unsigned char* buf, Py_ssize_t length, BatchInfo* out) noexcept nogil
# Everything a log must know before it stores a batch: header, whole batch
# present, magic 2, CRC over attributes..end, record count against
# last_offset_delta, attributes.  max_size <= 0 means no limit.
cdef BatchError check_batch(const unsigned char* buf, Py_ssize_t length, Py_ssize_t max_size, BatchInfo* out) noexcept nogil

# check_batch with the CRC check optional: readers that trust their source
# (or check the CRC elsewhere) use verify_crc=0.  check_batch(...) is
# check_batch_ex(..., 1, out).
cdef BatchError check_batch_ex(const unsigned char* buf, Py_ssize_t length, Py_ssize_t max_size, bint verify_crc, BatchInfo* out) noexcept nogil


# ---------------------------------------------------------------- records
# One record inside a (decompressed) batch:
#   length varint | attributes i8 | timestamp_delta varlong | offset_delta varint
#   | key_length varint | key | value_length varint | value
#   | header_count varint | (key_length varint | key | value_length varint | value)*
# Lengths of -1 mean null (keys, values, header values; never header keys).

cdef enum:
    MIN_RECORD_SIZE = 7        # 1-byte length + attributes + 5 one-byte varints

cdef enum RecordError:
    RECORD_OK = 0
    RECORD_MISSING = 1         # no bytes left where a record should start
    RECORD_BAD_LENGTH = 2      # length varint malformed, negative or past the end
    RECORD_BAD_FIELD = 3       # attributes/timestamp/offset varint malformed or past the record
    RECORD_BAD_KEY = 4         # key length < -1 or past the record
    RECORD_BAD_VALUE = 5       # value length < -1 or past the record
    RECORD_BAD_HEADER_COUNT = 6  # negative, or more headers than bytes left
    RECORD_BAD_HEADER = 7      # header key length < 0, or key/value past the record
    RECORD_SIZE_MISMATCH = 8   # the fields end before the record's length does

cdef struct RecordInfo:
    Py_ssize_t size            # bytes the record occupies, length varint included
    int8_t attributes
    int64_t timestamp_delta
    int32_t offset_delta
    Py_ssize_t key_offset      # absolute positions in the buffer given to read_record
    int32_t key_length         # -1 = null
    Py_ssize_t value_offset
    int32_t value_length       # -1 = null
    Py_ssize_t headers_offset  # where the first header starts
    int32_t header_count

# Read and frame-check the record at buf[pos[0]:end]; on success advance pos[0]
# past it.  Never reads at or past `end`.  On error pos[0] is unchanged.
cdef RecordError read_record(const unsigned char* buf, Py_ssize_t end, Py_ssize_t* pos, RecordInfo* out) noexcept nogil

# Header (key, value) pairs of a record whose framing was already checked
# (keys decode as Java's Utils.utf8: invalid UTF-8 becomes U+FFFD).
cdef list decode_headers(const unsigned char* buf, Py_ssize_t end, Py_ssize_t pos, int32_t count)


# ---------------------------------------------------------------- writing
# Inline, shared by every batch writer (RecordBatchBuilder, build_batch_from_values,
# the client's accumulator and build_fixed_batch), so each record is a few
# stores in the caller's loop and all of them write the same bytes.

# A key / value field: varint length then the bytes; n < 0 is null (varint -1).
cdef inline Py_ssize_t bytes_field_size(Py_ssize_t n) noexcept nogil:
    return 1 if n < 0 else varint_size(n) + n

cdef inline unsigned char* put_bytes_field(unsigned char* p, const unsigned char* data,
                                           Py_ssize_t n) noexcept nogil:
    if n < 0:
        p[0] = 1          # zig-zag(-1): null
        return p + 1
    p = put_varint(p, n)
    memcpy(p, data, n)
    return p + n

# The record's bytes after its length varint (what that varint holds).
# headers_size: the encoded header section after its count.
cdef inline Py_ssize_t record_body_size(int64_t timestamp_delta, int32_t offset_delta,
                                        Py_ssize_t key_length, Py_ssize_t value_length,
                                        int32_t header_count, Py_ssize_t headers_size) noexcept nogil:
    return (1 + varint_size(timestamp_delta) + varint_size(offset_delta)
            + bytes_field_size(key_length) + bytes_field_size(value_length)
            + varint_size(header_count) + headers_size)

# One whole record at p (body from record_body_size; at most body + 5 bytes);
# returns the pointer past it.
cdef inline unsigned char* put_record(unsigned char* p, Py_ssize_t body, int64_t timestamp_delta,
                                      int32_t offset_delta, const unsigned char* key,
                                      Py_ssize_t key_length, const unsigned char* value,
                                      Py_ssize_t value_length, int32_t header_count,
                                      const unsigned char* headers, Py_ssize_t headers_size) noexcept nogil:
    p = put_varint(p, body)
    p[0] = 0              # record attributes: unused
    p += 1
    p = put_varint(p, timestamp_delta)
    p = put_varint(p, offset_delta)
    p = put_bytes_field(p, key, key_length)
    p = put_bytes_field(p, value, value_length)
    p = put_varint(p, header_count)
    if headers_size:
        memcpy(p, headers, headers_size)
        p += headers_size
    return p

# Fill the 61-byte header of the `size`-byte batch at p (records in place after
# it), then its CRC (attributes .. end).
cdef inline void put_batch_header(unsigned char* p, Py_ssize_t size, int64_t base_offset,
                                  int32_t leader_epoch, int16_t attributes,
                                  int32_t last_offset_delta, int64_t base_timestamp,
                                  int64_t max_timestamp, int64_t producer_id,
                                  int16_t producer_epoch, int32_t base_sequence,
                                  int32_t record_count) noexcept nogil:
    store_be64(p + BASE_OFFSET_OFFSET, <uint64_t>base_offset)
    store_be32(p + LENGTH_OFFSET, <uint32_t>(size - LOG_OVERHEAD))
    store_be32(p + PARTITION_LEADER_EPOCH_OFFSET, <uint32_t>leader_epoch)
    p[MAGIC_OFFSET] = 2
    store_be16(p + ATTRIBUTES_OFFSET, <uint16_t>attributes)
    store_be32(p + LAST_OFFSET_DELTA_OFFSET, <uint32_t>last_offset_delta)
    store_be64(p + BASE_TIMESTAMP_OFFSET, <uint64_t>base_timestamp)
    store_be64(p + MAX_TIMESTAMP_OFFSET, <uint64_t>max_timestamp)
    store_be64(p + PRODUCER_ID_OFFSET, <uint64_t>producer_id)
    store_be16(p + PRODUCER_EPOCH_OFFSET, <uint16_t>producer_epoch)
    store_be32(p + BASE_SEQUENCE_OFFSET, <uint32_t>base_sequence)
    store_be32(p + RECORDS_COUNT_OFFSET, <uint32_t>record_count)
    store_be32(p + CRC_OFFSET, crc32c_update(0, p + ATTRIBUTES_OFFSET, size - ATTRIBUTES_OFFSET))

# The default record timestamp: wall-clock milliseconds (Java's
# System.currentTimeMillis()), read without the GIL or a float.
cdef inline int64_t now_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000 + ts.tv_nsec // 1000000
