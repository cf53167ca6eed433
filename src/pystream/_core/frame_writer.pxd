# Appends protocol fields to a bytearray (a response frame) through a pointer:
# shared by the broker's fast response writers (Produce, Fetch).
#
# reserve(n) first, then up to n bytes of put*: the puts do not check room, so
# a response's fixed fields cost a store each.  The inline methods compile
# into the caller (a direct call, no vtable); subclasses add their own state.
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from libc.stdint cimport int16_t, int32_t, int64_t, uint64_t

from pystream._core.wire cimport put_array_length, put_i16, put_i32, put_i64, put_uvarint


cdef class FrameWriter:
    cdef object buf              # a bytearray or a subclass (the codec's Writer): not exact-typed
    cdef Py_ssize_t used         # bytes written; the bytearray may be longer (spare room)

    cdef inline unsigned char* reserve(self, Py_ssize_t n) except NULL:
        cdef Py_ssize_t size = PyByteArray_GET_SIZE(self.buf)
        if self.used + n > size:
            PyByteArray_Resize(self.buf, max(2 * size, self.used + n))
        return <unsigned char*>PyByteArray_AS_STRING(self.buf) + self.used

    cdef inline unsigned char* at(self) noexcept:
        return <unsigned char*>PyByteArray_AS_STRING(self.buf) + self.used

    cdef inline void put8(self, unsigned char v) noexcept:
        self.at()[0] = v
        self.used += 1

    cdef inline void put16(self, int16_t v) noexcept:
        put_i16(self.at(), v)
        self.used += 2

    cdef inline void put32(self, int32_t v) noexcept:
        put_i32(self.at(), v)
        self.used += 4

    cdef inline void put64(self, int64_t v) noexcept:
        put_i64(self.at(), v)
        self.used += 8

    cdef inline void uvarint(self, uint64_t v) noexcept:
        cdef unsigned char* p = self.at()
        self.used += put_uvarint(p, v) - p

    cdef inline void array_length(self, Py_ssize_t n, bint flexible) noexcept:
        """Compact (N+1) in flexible versions, else int32; needs 5 bytes reserved."""
        cdef unsigned char* p = self.at()
        self.used += put_array_length(p, n, flexible) - p

    # Reserve what they need themselves.
    cdef int put_bytes(self, const unsigned char* data, Py_ssize_t n) except -1
    cdef int string(self, object value, bint flexible) except -1
    cdef int trim(self) except -1
