# cython: language_level=3
"""Kafka varints: zig-zag signed (record fields) and unsigned (compact lengths,
tagged fields), encoded as in protobuf: 7 bits per byte, low group first, high
bit set on every byte but the last.

The ``cdef`` functions (see ``varint.pxd``) are for other Cython modules; the
``def`` wrappers are for Python code and tests.  Readers are strict: a value
that runs past the buffer, or has more bytes / bits than its type can hold, is
rejected rather than silently truncated, because such input only ever comes
from a broken or hostile client.

The writers are inline in ``wire.pxd``, shared by every encoder; this module
has the readers and the Python wrappers of both.
"""
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

from pystream._core.wire cimport put_uvarint, put_varint
from pystream._core.wire cimport uvarint_size as _uvarint_size
from pystream._core.wire cimport varint_size as _varint_size

from pystream.errors import CorruptMessageError


# ---------------------------------------------------------------- zig-zag
# (encoding: wire.zigzag64)

cdef inline int64_t _unzigzag64(uint64_t u) noexcept nogil:
    return <int64_t>((u >> 1) ^ (0 - (u & 1)))

cdef inline int32_t _unzigzag32(uint32_t u) noexcept nogil:
    return <int32_t>((u >> 1) ^ (0 - (u & 1)))


# ---------------------------------------------------------------- readers

cdef int read_uvarint(const unsigned char* buf, Py_ssize_t length, Py_ssize_t* pos, uint64_t* out) noexcept nogil:
    cdef Py_ssize_t p = pos[0]
    cdef uint64_t result = 0
    cdef unsigned int shift = 0
    cdef unsigned char b
    if p < 0:
        return -1
    while p < length:
        b = buf[p]
        p += 1
        if shift == 63:
            # 10th byte: only bit 63 is left, so it must be 0 or 1 and final.
            if b > 1:
                return -1
            out[0] = result | (<uint64_t>b << 63)
            pos[0] = p
            return 0
        result |= <uint64_t>(b & 0x7F) << shift
        if not (b & 0x80):
            out[0] = result
            pos[0] = p
            return 0
        shift += 7
    return -1                      # ran off the end of the buffer


cdef int read_varint(const unsigned char* buf, Py_ssize_t length, Py_ssize_t* pos, int64_t* out) noexcept nogil:
    cdef uint64_t u
    # Fast path: most record fields (deltas, small lengths) fit in one byte.
    cdef Py_ssize_t p = pos[0]
    if 0 <= p < length and not (buf[p] & 0x80):
        out[0] = _unzigzag64(buf[p])
        pos[0] = p + 1
        return 0
    if read_uvarint(buf, length, pos, &u) < 0:
        return -1
    out[0] = _unzigzag64(u)
    return 0


cdef int read_uvarint32(const unsigned char* buf, Py_ssize_t length, Py_ssize_t* pos, uint32_t* out) noexcept nogil:
    cdef Py_ssize_t p = pos[0]
    cdef uint32_t result = 0
    cdef unsigned int shift = 0
    cdef unsigned char b
    if p < 0:
        return -1
    while p < length:
        b = buf[p]
        p += 1
        if shift == 28:
            # 5th byte: 4 bits left, no continuation.
            if b > 0x0F:
                return -1
            out[0] = result | (<uint32_t>b << 28)
            pos[0] = p
            return 0
        result |= <uint32_t>(b & 0x7F) << shift
        if not (b & 0x80):
            out[0] = result
            pos[0] = p
            return 0
        shift += 7
    return -1


cdef int read_varint32(const unsigned char* buf, Py_ssize_t length, Py_ssize_t* pos, int32_t* out) noexcept nogil:
    cdef uint32_t u
    if read_uvarint32(buf, length, pos, &u) < 0:
        return -1
    out[0] = _unzigzag32(u)
    return 0


# ---------------------------------------------------------------- Python API

cdef inline Py_ssize_t _check_pos(Py_ssize_t pos, Py_ssize_t length) except -1:
    if pos < 0 or pos > length:
        raise ValueError(f"position {pos} is outside the buffer of {length} bytes")
    return pos


cdef object _corrupt(str kind, Py_ssize_t pos, Py_ssize_t length, int max_bytes):
    return CorruptMessageError(
        f"invalid {kind} at byte {pos} of {length}: truncated, or longer than "
        f"{max_bytes} bytes / out of range; the sender wrote a malformed field"
    )


def encode_varint(int64_t value) -> bytes:
    """Zig-zag varint bytes of a signed 64-bit ``value`` (OverflowError if out of range)."""
    cdef unsigned char tmp[10]
    return tmp[:put_varint(tmp, value) - tmp]


def encode_uvarint(uint64_t value) -> bytes:
    """Unsigned varint bytes of ``value`` in [0, 2**64) (OverflowError otherwise)."""
    cdef unsigned char tmp[10]
    return tmp[:put_uvarint(tmp, value) - tmp]


def decode_varint(const unsigned char[::1] buf, Py_ssize_t pos=0) -> tuple:
    """Read a zig-zag signed 64-bit varint at ``buf[pos]``: ``(value, new_pos)``.

    Raises CorruptMessageError if it is truncated, over 10 bytes or overflows.
    """
    cdef int64_t v
    cdef Py_ssize_t n = buf.shape[0]
    _check_pos(pos, n)
    if read_varint(&buf[0] if n else NULL, n, &pos, &v) < 0:
        raise _corrupt("varint", pos, n, 10)
    return v, pos


def decode_uvarint(const unsigned char[::1] buf, Py_ssize_t pos=0) -> tuple:
    """Read an unsigned 64-bit varint at ``buf[pos]``: ``(value, new_pos)``.

    Raises CorruptMessageError if it is truncated, over 10 bytes or overflows.
    """
    cdef uint64_t v
    cdef Py_ssize_t n = buf.shape[0]
    _check_pos(pos, n)
    if read_uvarint(&buf[0] if n else NULL, n, &pos, &v) < 0:
        raise _corrupt("unsigned varint", pos, n, 10)
    return v, pos


def decode_varint32(const unsigned char[::1] buf, Py_ssize_t pos=0) -> tuple:
    """Like :func:`decode_varint` but for a signed 32-bit field (at most 5 bytes)."""
    cdef int32_t v
    cdef Py_ssize_t n = buf.shape[0]
    _check_pos(pos, n)
    if read_varint32(&buf[0] if n else NULL, n, &pos, &v) < 0:
        raise _corrupt("32-bit varint", pos, n, 5)
    return v, pos


def decode_uvarint32(const unsigned char[::1] buf, Py_ssize_t pos=0) -> tuple:
    """Like :func:`decode_uvarint` but for an unsigned 32-bit field (at most 5 bytes)."""
    cdef uint32_t v
    cdef Py_ssize_t n = buf.shape[0]
    _check_pos(pos, n)
    if read_uvarint32(&buf[0] if n else NULL, n, &pos, &v) < 0:
        raise _corrupt("unsigned 32-bit varint", pos, n, 5)
    return v, pos


def size_of_varint(int64_t value) -> int:
    """Bytes :func:`encode_varint` needs for ``value`` (1..10)."""
    return _varint_size(value)


def size_of_uvarint(uint64_t value) -> int:
    """Bytes :func:`encode_uvarint` needs for ``value`` (1..10)."""
    return _uvarint_size(value)


# The wrappers under the names of the inline functions (cimported as _varint_size
# and _uvarint_size above, so these names are free for Python).
varint_size = size_of_varint
uvarint_size = size_of_uvarint
