# Java's org.apache.kafka.common.utils.Utils.murmur2, shared by the client's Cython modules.
from libc.stdint cimport int32_t, uint32_t


cdef inline int32_t murmur2(const unsigned char* data, Py_ssize_t length) noexcept nogil:
    # org.apache.kafka.common.utils.Utils.murmur2: seed 0x9747b28c, 4-byte
    # little-endian words, Java's signed int arithmetic (done here in uint32).
    cdef uint32_t m = 0x5bd1e995
    cdef uint32_t h = (<uint32_t>0x9747b28cUL) ^ <uint32_t>length
    cdef uint32_t k
    cdef Py_ssize_t i, n4 = length // 4
    for i in range(n4):
        k = (<uint32_t>data[4 * i] | (<uint32_t>data[4 * i + 1] << 8)
             | (<uint32_t>data[4 * i + 2] << 16) | (<uint32_t>data[4 * i + 3] << 24))
        k *= m
        k ^= k >> 24
        k *= m
        h *= m
        h ^= k
    i = n4 * 4
    cdef Py_ssize_t rest = length - i
    if rest == 3:
        h ^= <uint32_t>data[i + 2] << 16
    if rest >= 2:
        h ^= <uint32_t>data[i + 1] << 8
    if rest >= 1:
        h ^= <uint32_t>data[i]
        h *= m
    h ^= h >> 13
    h *= m
    h ^= h >> 15
    return <int32_t>h
