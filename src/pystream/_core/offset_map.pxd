from libc.stdint cimport int64_t, uint64_t

# One slot of the table: a 128-bit MurmurHash3 digest of the key and the
# latest offset seen for it, stored + 1 so that an all-zero slot is empty.
cdef struct Slot:
    uint64_t h1
    uint64_t h2
    int64_t offset_plus_one


# MurmurHash3 x64 128 of data[0:n] with `seed`: the digest that stands for a key.
cdef void murmur3_128(const unsigned char* data, Py_ssize_t n, uint64_t seed,
                      uint64_t* h1, uint64_t* h2) noexcept nogil


cdef class OffsetMap:
    cdef Slot* _table
    cdef Py_ssize_t _allocated        # slots allocated
    cdef Py_ssize_t _slots            # slots in use (a prime)
    cdef Py_ssize_t _size             # keys stored
    cdef Py_ssize_t _max_entries      # keys allowed before the map counts as full
    cdef readonly Py_ssize_t memory   # the byte budget (log.cleaner.dedupe.buffer.size / threads)
    cdef readonly double load_factor
    cdef int64_t _latest_offset
    cdef int64_t _lookups
    cdef int64_t _probes

    cdef _reset(self, Py_ssize_t slots)
    cdef Slot* _find(self, uint64_t h1, uint64_t h2) noexcept nogil
    cdef int _grow(self) noexcept nogil
    # 0: stored (or updated); 1: a new key did not fit (the map is full).
    cdef int put_c(self, const unsigned char* key, Py_ssize_t n, int64_t offset) noexcept nogil
    # The latest offset stored for the key, or -1.
    cdef int64_t get_c(self, const unsigned char* key, Py_ssize_t n) noexcept nogil
