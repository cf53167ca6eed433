# cython: language_level=3
"""FrameWriter (see ``frame_writer.pxd``): a protocol frame appended to a bytearray.

FrameWriter is only for other Cython modules (``cimport``).  From Python,
:func:`receive_buffer` gives the buffer a large frame is received into.
"""
from cpython.bytearray cimport PyByteArray_FromStringAndSize
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.string cimport memcpy

cdef enum:
    INT16_MAX = 0x7FFF


cdef class FrameWriter:

    cdef int put_bytes(self, const unsigned char* data, Py_ssize_t n) except -1:
        memcpy(self.reserve(n), data, n)
        self.used += n
        return 0

    cdef int string(self, object value, bint flexible) except -1:
        """A string: compact length in flexible versions, else int16; None is null."""
        cdef Py_ssize_t n
        cdef const char* utf8
        if value is None:
            self.reserve(2)
            if flexible:
                self.put8(0)
            else:
                self.put16(-1)
            return 0
        utf8 = PyUnicode_AsUTF8AndSize(value, &n)
        if n > INT16_MAX:
            raise ValueError(f"string of {n} bytes exceeds INT16_MAX")
        self.reserve(n + 5)
        if flexible:
            self.uvarint(<uint64_t>n + 1)
        else:
            self.put16(<int16_t>n)
        memcpy(self.at(), utf8, n)
        self.used += n
        return 0

    cdef int trim(self) except -1:
        """Cut the bytearray to what was written (drop the spare room)."""
        PyByteArray_Resize(self.buf, self.used)
        return 0


def receive_buffer(Py_ssize_t size) -> bytearray:
    """A bytearray of ``size`` bytes, left uninitialised: for a frame that the socket is
    about to fill whole.  ``bytearray(size)`` would zero it first, a memset (and, for a
    fresh allocation, page faults) per megabyte-sized Produce request or Fetch response."""
    if size < 0:
        raise ValueError(f"receive_buffer: negative size {size}")
    return PyByteArray_FromStringAndSize(NULL, size)
