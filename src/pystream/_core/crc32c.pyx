# cython: language_level=3
"""CRC-32C (Castagnoli), the checksum of Kafka's RecordBatch v2.

The work is done in ``crc32c_hw.h``: the SSE4.2 / ARMv8 CRC instructions when
the CPU has them (checked once at import), slicing-by-8 tables otherwise.
Other Cython modules ``cimport crc32c_update``; Python code calls
:func:`crc32c`.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport uint32_t


cdef extern from "crc32c_hw.h" nogil:
    void pystream_crc32c_init()
    int pystream_crc32c_hw_ok
    uint32_t pystream_crc32c(uint32_t crc, const unsigned char* p, size_t length) noexcept
    uint32_t pystream_crc32c_sw(uint32_t crc, const unsigned char* p, size_t length) noexcept


# Below this many bytes the CRC takes less time than releasing and re-taking
# the GIL would (hardware CRC runs at several GB/s).
cdef Py_ssize_t _NOGIL_MIN = 16384

pystream_crc32c_init()


cdef uint32_t crc32c_update(uint32_t crc, const unsigned char* data, size_t length) noexcept nogil:
    return pystream_crc32c(crc, data, length)


ctypedef uint32_t (*_crc_fn)(uint32_t, const unsigned char*, size_t) noexcept nogil


cdef uint32_t _crc_of(object data, uint32_t crc, _crc_fn fn) except? 0xFFFFFFFF:
    cdef Py_buffer view
    # PyBUF_SIMPLE: any C-contiguous buffer, read-only ones included; the
    # exporter raises BufferError for non-contiguous ones.
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    cdef const unsigned char* p = <const unsigned char*>view.buf
    cdef size_t n = <size_t>view.len
    try:
        if view.len < _NOGIL_MIN:
            crc = fn(crc, p, n)
        else:
            with nogil:
                crc = fn(crc, p, n)
    finally:
        PyBuffer_Release(&view)
    return crc


def crc32c(data, uint32_t crc=0) -> int:
    """CRC-32C of ``data`` (any C-contiguous buffer), continuing from ``crc``.

    ``crc32c(b, crc32c(a)) == crc32c(a + b)``.  Large buffers are checksummed
    with the GIL released.
    """
    return _crc_of(data, crc, pystream_crc32c)


def crc32c_table(data, uint32_t crc=0) -> int:
    """Same as :func:`crc32c` but always with the portable table code (for tests)."""
    return _crc_of(data, crc, pystream_crc32c_sw)


def has_hardware_crc() -> bool:
    """True if this CPU's CRC-32C instruction is in use (SSE4.2 or ARMv8 CRC)."""
    return bool(pystream_crc32c_hw_ok)
