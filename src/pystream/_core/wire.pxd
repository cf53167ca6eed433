# Kafka wire encodings for every Cython writer (produce and fetch responses,
# record batches, the client's batches): the one copy of each.
#
# Inline so each call compiles to a few stores in the caller; a cimported
# non-inline cdef function is an indirect call through a capsule pointer.
# Each put_* writes at p (the caller has made room) and returns the pointer
# past what it wrote, so an encoder is a chain of `p = put_x(p, v)`.
# Readers stay in varint.pxd (they check bounds); endian.pxd has the loads.
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t

from pystream._core.endian cimport store_be16, store_be32, store_be64


# ---------------------------------------------------------------- fixed width, big-endian

cdef inline unsigned char* put_i8(unsigned char* p, int8_t v) noexcept nogil:
    p[0] = <unsigned char>v
    return p + 1

cdef inline unsigned char* put_i16(unsigned char* p, int16_t v) noexcept nogil:
    store_be16(p, <uint16_t>v)
    return p + 2

cdef inline unsigned char* put_i32(unsigned char* p, int32_t v) noexcept nogil:
    store_be32(p, <uint32_t>v)
    return p + 4

cdef inline unsigned char* put_i64(unsigned char* p, int64_t v) noexcept nogil:
    store_be64(p, <uint64_t>v)
    return p + 8


# ---------------------------------------------------------------- varints (protobuf style)
# "uvarint" = unsigned (compact lengths, tagged fields); "varint" = zig-zag
# signed (record fields).  At most 10 bytes.

cdef inline uint64_t zigzag64(int64_t v) noexcept nogil:
    # Shift as unsigned: left-shifting a negative signed value is undefined in C.
    return (<uint64_t>v << 1) ^ <uint64_t>(v >> 63)

cdef inline Py_ssize_t uvarint_size(uint64_t v) noexcept nogil:
    cdef Py_ssize_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n

cdef inline Py_ssize_t varint_size(int64_t v) noexcept nogil:
    return uvarint_size(zigzag64(v))

cdef inline unsigned char* put_uvarint(unsigned char* p, uint64_t v) noexcept nogil:
    while v >= 0x80:
        p[0] = <unsigned char>(v | 0x80)
        p += 1
        v >>= 7
    p[0] = <unsigned char>v
    return p + 1

cdef inline unsigned char* put_varint(unsigned char* p, int64_t v) noexcept nogil:
    return put_uvarint(p, zigzag64(v))


# ---------------------------------------------------------------- lengths

# A flexible version's compact length: N+1 as a uvarint, so null (-1) is 0.
cdef inline unsigned char* put_compact_length(unsigned char* p, Py_ssize_t n) noexcept nogil:
    return put_uvarint(p, <uint64_t>(n + 1))

# An array length (or a bytes length): compact in flexible versions, else int32.
# At most 5 bytes for n < 2**31.
cdef inline unsigned char* put_array_length(unsigned char* p, Py_ssize_t n, bint flexible) noexcept nogil:
    if flexible:
        return put_compact_length(p, n)
    return put_i32(p, <int32_t>n)
