from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint32_t

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
