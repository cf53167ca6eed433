from libc.stdint cimport uint32_t

# Continue a CRC-32C (Castagnoli) over data[0:length].  Start with crc=0.
# Pre- and post-inversion are handled inside: crc32c_update(crc32c_update(0, a), b)
# equals the CRC of a + b.
cdef uint32_t crc32c_update(uint32_t crc, const unsigned char* data, size_t length) noexcept nogil
