from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

# Kafka varints (protobuf style).  "varint" = zig-zag signed, "uvarint" = unsigned.
# Readers take buf[0:length], start at pos[0], advance pos[0] past the value and
# return 0; on a truncated or over-long (> 10 bytes / overflowing) value they
# return -1 and leave pos[0] unchanged.
cdef int read_varint(const unsigned char* buf, Py_ssize_t length, Py_ssize_t* pos, int64_t* out) noexcept nogil
cdef int read_uvarint(const unsigned char* buf, Py_ssize_t length, Py_ssize_t* pos, uint64_t* out) noexcept nogil
# The writers and sizes are inline in wire.pxd (put_varint, varint_size, ...).
# 32-bit variants for int32 fields (record length, offset delta, key/value
# lengths, header count; compact lengths): at most 5 bytes, value must fit.
cdef int read_varint32(const unsigned char* buf, Py_ssize_t length, Py_ssize_t* pos, int32_t* out) noexcept nogil
cdef int read_uvarint32(const unsigned char* buf, Py_ssize_t length, Py_ssize_t* pos, uint32_t* out) noexcept nogil
