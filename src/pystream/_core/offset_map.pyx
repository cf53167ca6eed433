# cython: language_level=3
"""The log cleaner's hot loops: a compact key -> offset table and the record filter.

:class:`OffsetMap` is Kafka's ``SkimpyOffsetMap``: an open-addressing hash
table that stores, per key, a 128-bit digest (MurmurHash3 x64/128 instead of
Kafka's MD5: as collision-proof for this purpose and far cheaper) and the
latest offset seen for it: 24 bytes a key whatever the key's size, so
``log.cleaner.dedupe.buffer.size`` bounds its memory exactly.  The slot count
is a prime and probing is double hashing (the first half of the digest picks
the start, the second a step in ``[1, slots)``, both by multiply-shift rather
than division), so every slot is reachable and the table can be filled to the
load factor (``log.cleaner.io.buffer.load.factor``, 0.9) with short probe
sequences.  Two distinct keys share a slot only if their 128-bit
digests are equal (probability ~ n^2 / 2^129): the cleaner would then drop the
older key's record, the same risk Kafka accepts with MD5.

The passes of a clean (see ``pystream.storage.cleaner_job``) call, per batch:

* :meth:`OffsetMap.put_records`: record every keyed record's offset (map build);
* :func:`filter_records`: copy the records that compaction keeps;
* :func:`write_batch`: wrap kept records (or nothing) in a batch header.

The per-record loops run without the GIL and create no Python objects.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from pystream._core.crc32c cimport crc32c_update
from pystream._core.endian cimport store_be16, store_be32, store_be64
from pystream._core.records cimport (
    ATTRIBUTES_OFFSET,
    BASE_TIMESTAMP_OFFSET,
    BATCH_OVERHEAD,
    CRC_OFFSET,
    LENGTH_OFFSET,
    LOG_OVERHEAD,
    MAX_TIMESTAMP_OFFSET,
    RECORD_OK,
    RECORDS_COUNT_OFFSET,
    RecordInfo,
    read_record,
)
from pystream._core.varint cimport read_varint, read_varint32
from pystream._core.wire cimport put_varint, varint_size

from pystream.errors import InvalidRecordError

__all__ = [
    "SLOT_SIZE",
    "OffsetMap",
    "filter_records",
    "murmur3_hash128",
    "write_batch",
]

#: Bytes one key takes in the map (digest + offset).
SLOT_SIZE = sizeof(Slot)


cdef extern from *:
    """
    /* Lemire's multiply-shift: a 64-bit hash mapped onto [0, n) without a division. */
    static inline uint64_t pystream_fastrange64(uint64_t word, uint64_t n) {
    #if defined(__SIZEOF_INT128__)
        return (uint64_t)(((unsigned __int128)word * (unsigned __int128)n) >> 64);
    #else
        return word % n;
    #endif
    }
    """
    uint64_t fastrange64 "pystream_fastrange64" (uint64_t word, uint64_t n) noexcept nogil


# ---------------------------------------------------------------- MurmurHash3 x64/128

cdef inline uint64_t _rotl64(uint64_t x, int r) noexcept nogil:
    return (x << r) | (x >> (64 - r))


cdef inline uint64_t _fmix64(uint64_t k) noexcept nogil:
    k ^= k >> 33
    k *= 0xff51afd7ed558ccdULL
    k ^= k >> 33
    k *= 0xc4ceb9fe1a85ec53ULL
    k ^= k >> 33
    return k


cdef inline uint64_t _load_le64(const unsigned char* p) noexcept nogil:
    # Byte by byte: the same digest on any host, and no unaligned loads.  Compilers turn
    # this into one load on little-endian machines.
    return (<uint64_t>p[0] | (<uint64_t>p[1] << 8) | (<uint64_t>p[2] << 16)
            | (<uint64_t>p[3] << 24) | (<uint64_t>p[4] << 32) | (<uint64_t>p[5] << 40)
            | (<uint64_t>p[6] << 48) | (<uint64_t>p[7] << 56))


cdef void murmur3_128(const unsigned char* data, Py_ssize_t n, uint64_t seed,
                      uint64_t* out1, uint64_t* out2) noexcept nogil:
    cdef uint64_t c1 = 0x87c37b91114253d5ULL
    cdef uint64_t c2 = 0x4cf5ad432745937fULL
    cdef uint64_t h1 = seed, h2 = seed, k1, k2
    cdef Py_ssize_t i, nblocks = n // 16
    cdef int j, rem
    cdef const unsigned char* tail
    for i in range(nblocks):
        k1 = _load_le64(data + 16 * i)
        k2 = _load_le64(data + 16 * i + 8)
        k1 *= c1
        k1 = _rotl64(k1, 31)
        k1 *= c2
        h1 ^= k1
        h1 = _rotl64(h1, 27)
        h1 += h2
        h1 = h1 * 5 + 0x52dce729
        k2 *= c2
        k2 = _rotl64(k2, 33)
        k2 *= c1
        h2 ^= k2
        h2 = _rotl64(h2, 31)
        h2 += h1
        h2 = h2 * 5 + 0x38495ab5
    tail = data + nblocks * 16
    rem = <int>(n & 15)
    k1 = 0
    k2 = 0
    if rem > 8:
        for j in range(rem - 1, 7, -1):
            k2 ^= (<uint64_t>tail[j]) << ((j - 8) * 8)
        k2 *= c2
        k2 = _rotl64(k2, 33)
        k2 *= c1
        h2 ^= k2
    if rem > 0:
        for j in range(min(rem, 8) - 1, -1, -1):
            k1 ^= (<uint64_t>tail[j]) << (j * 8)
        k1 *= c1
        k1 = _rotl64(k1, 31)
        k1 *= c2
        h1 ^= k1
    h1 ^= <uint64_t>n
    h2 ^= <uint64_t>n
    h1 += h2
    h2 += h1
    h1 = _fmix64(h1)
    h2 = _fmix64(h2)
    h1 += h2
    h2 += h1
    out1[0] = h1
    out2[0] = h2


def murmur3_hash128(const unsigned char[::1] data, uint64_t seed=0) -> tuple:
    """``(h1, h2)``: MurmurHash3 x64/128 of ``data`` as two unsigned 64-bit halves."""
    cdef uint64_t h1, h2
    cdef Py_ssize_t n = data.shape[0]
    cdef unsigned char empty = 0
    murmur3_128(&data[0] if n else &empty, n, seed, &h1, &h2)
    return h1, h2


# ---------------------------------------------------------------- the table

cdef Py_ssize_t _prime_at_most(Py_ssize_t n) noexcept nogil:
    """The largest prime <= n (2 for n < 3): trial division, fine for table sizes."""
    cdef Py_ssize_t c, d
    cdef bint prime
    if n < 3:
        return 2
    c = n if n % 2 else n - 1
    while c > 2:
        prime = True
        d = 3
        while d * d <= c:
            if c % d == 0:
                prime = False
                break
            d += 2
        if prime:
            return c
        c -= 2
    return 2


cdef class OffsetMap:
    """Key -> latest offset, in a fixed memory budget (Kafka's ``SkimpyOffsetMap``).

    ``memory`` bytes give ``memory // SLOT_SIZE`` slots at most.  :meth:`reset`
    empties the map and sizes it for an expected number of keys; when more keys
    come it grows (doubling, rehashing the stored digests) up to the budget, so
    a small log never touches the whole budget.  The map is *full* once it
    cannot grow and holds ``max_entries`` (slots x ``load_factor``) keys.  Not
    thread-safe: one map per cleaner thread.
    """

    def __cinit__(self, Py_ssize_t memory, double load_factor=0.9):
        if memory < 2 * <Py_ssize_t>sizeof(Slot):
            raise ValueError(
                f"the offset map needs at least {2 * sizeof(Slot)} bytes, got {memory}; raise "
                "log.cleaner.dedupe.buffer.size")
        if not 0.0 < load_factor <= 1.0:
            raise ValueError(
                f"load factor must be in (0, 1], got {load_factor}; check "
                "log.cleaner.io.buffer.load.factor")
        self.memory = memory
        self.load_factor = load_factor
        self._table = NULL
        self._allocated = 0
        self._reset(2)

    def __dealloc__(self):
        free(self._table)

    cdef _reset(self, Py_ssize_t slots):
        cdef Slot* table
        if slots > self._allocated:
            table = <Slot*>calloc(<size_t>slots, sizeof(Slot))
            if table == NULL:
                raise MemoryError(f"cannot allocate an offset map of {slots} slots")
            free(self._table)
            self._table = table
            self._allocated = slots
        else:
            memset(self._table, 0, <size_t>slots * sizeof(Slot))
        self._slots = slots
        self._size = 0
        # Never the last free slot: a probe sequence must always find an empty one.
        self._max_entries = max(1, min(<Py_ssize_t>(slots * self.load_factor), slots - 1))
        self._latest_offset = -1
        self._lookups = 0
        self._probes = 0

    def reset(self, Py_ssize_t expected_keys=-1) -> None:
        """Empty the map; with ``expected_keys`` >= 0 use only as many slots as that many
        keys need (still within the budget), else the whole budget."""
        cdef Py_ssize_t budget = self.memory // <Py_ssize_t>sizeof(Slot)
        cdef Py_ssize_t want = budget
        if expected_keys >= 0:
            want = min(budget, <Py_ssize_t>(expected_keys / self.load_factor) + 2)
        self._reset(_prime_at_most(max(min(want, budget), 2)))

    # -- C level ---------------------------------------------------------------

    cdef Slot* _find(self, uint64_t h1, uint64_t h2) noexcept nogil:
        """The slot holding the digest, or the empty slot where it belongs."""
        cdef uint64_t slots = <uint64_t>self._slots
        cdef uint64_t i = fastrange64(h1, slots)
        cdef uint64_t step = 1 + fastrange64(h2, slots - 1)  # in [1, slots): coprime to a prime
        cdef Slot* s
        self._lookups += 1
        while True:
            s = &self._table[i]
            if s.offset_plus_one == 0 or (s.h1 == h1 and s.h2 == h2):
                return s
            self._probes += 1
            i += step
            if i >= slots:
                i -= slots

    cdef int _grow(self) noexcept nogil:
        """Rehash into about twice the slots (within the budget); 0 on success."""
        cdef Py_ssize_t budget = self.memory // <Py_ssize_t>sizeof(Slot)
        cdef Py_ssize_t slots = _prime_at_most(min(budget, 2 * self._slots + 1))
        cdef Py_ssize_t old_slots = self._slots, i
        cdef Slot* old = self._table
        cdef Slot* table
        cdef Slot* s
        if slots <= old_slots:
            return 1
        table = <Slot*>calloc(<size_t>slots, sizeof(Slot))
        if table == NULL:
            return 1
        self._table = table
        self._allocated = slots
        self._slots = slots
        self._max_entries = max(1, min(<Py_ssize_t>(slots * self.load_factor), slots - 1))
        for i in range(old_slots):
            if old[i].offset_plus_one:
                s = self._find(old[i].h1, old[i].h2)
                s[0] = old[i]
        free(old)
        return 0

    cdef int put_c(self, const unsigned char* key, Py_ssize_t n, int64_t offset) noexcept nogil:
        cdef uint64_t h1, h2
        cdef Slot* s
        murmur3_128(key, n, 0, &h1, &h2)
        s = self._find(h1, h2)
        if s.offset_plus_one == 0:
            if self._size >= self._max_entries:
                if self._grow():
                    return 1
                s = self._find(h1, h2)
            s.h1 = h1
            s.h2 = h2
            self._size += 1
        if offset + 1 > s.offset_plus_one:
            s.offset_plus_one = offset + 1
        return 0

    cdef int64_t get_c(self, const unsigned char* key, Py_ssize_t n) noexcept nogil:
        cdef uint64_t h1, h2
        murmur3_128(key, n, 0, &h1, &h2)
        return self._find(h1, h2).offset_plus_one - 1

    # -- Python level ------------------------------------------------------------

    def put(self, const unsigned char[::1] key, int64_t offset) -> bool:
        """Remember ``offset`` for ``key`` (kept if newer); False if the map is full."""
        cdef unsigned char empty = 0
        cdef Py_ssize_t n = key.shape[0]
        if offset < 0:
            raise ValueError(f"offsets are >= 0, got {offset}")
        return self.put_c(&key[0] if n else &empty, n, offset) == 0

    def get(self, const unsigned char[::1] key) -> int:
        """The latest offset stored for ``key``, or -1."""
        cdef unsigned char empty = 0
        cdef Py_ssize_t n = key.shape[0]
        return self.get_c(&key[0] if n else &empty, n)

    def __len__(self) -> int:
        return self._size

    @property
    def slots(self) -> int:
        """Slots in use since the last reset."""
        return self._slots

    @property
    def max_entries(self) -> int:
        """Keys the map takes before it is full."""
        return self._max_entries

    @property
    def is_full(self) -> bool:
        """No new key fits: the budget's slots are in use up to the load factor."""
        return (self._size >= self._max_entries
                and _prime_at_most(min(self.memory // <Py_ssize_t>sizeof(Slot),
                                       2 * self._slots + 1)) <= self._slots)

    @property
    def utilization(self) -> float:
        """Stored keys / slots."""
        return <double>self._size / self._slots

    @property
    def allocated_bytes(self) -> int:
        """Bytes of table memory held (at most ``memory``)."""
        return self._allocated * sizeof(Slot)

    @property
    def average_probes(self) -> float:
        """Extra slots looked at per lookup since the last reset (0 = no collisions)."""
        return <double>self._probes / self._lookups if self._lookups else 0.0

    @property
    def latest_offset(self) -> int:
        """Every keyed record at or below this offset is in the map (-1: none yet)."""
        return self._latest_offset

    @latest_offset.setter
    def latest_offset(self, int64_t offset) -> None:
        self._latest_offset = offset

    def put_records(self, const unsigned char[::1] data, Py_ssize_t start, Py_ssize_t end,
                    int32_t count, int64_t base_offset, int64_t min_offset) -> int:
        """Store the offset of every keyed record at or after ``min_offset`` among the
        ``count`` records of one batch's (decompressed) records section ``data[start:end]``.

        Returns -1 when all went in, else the offset of the first record that did not fit
        (the map is full; records before it are in, it and later ones are not).  Raises
        InvalidRecordError for malformed records.
        """
        cdef RecordInfo r
        cdef Py_ssize_t pos = start
        cdef int32_t i
        cdef int err = RECORD_OK
        cdef int64_t offset, full_at = -1
        cdef const unsigned char* p
        _check_range(data.shape[0], start, end)
        if end == start:
            return -1 if count == 0 else _malformed(base_offset, 0)
        p = &data[0]
        with nogil:
            for i in range(count):
                err = read_record(p, end, &pos, &r)
                if err != RECORD_OK:
                    break
                offset = base_offset + r.offset_delta
                if r.key_length < 0 or offset < min_offset:
                    continue
                if self.put_c(p + r.key_offset, r.key_length, offset):
                    full_at = offset
                    break
        if err != RECORD_OK:
            _malformed(base_offset, i)
        return full_at


cdef inline int _check_range(Py_ssize_t n, Py_ssize_t start, Py_ssize_t end) except -1:
    if start < 0 or end < start or end > n:
        raise ValueError(f"records range [{start}, {end}) is outside a buffer of {n} bytes")
    return 0


cdef int _malformed(int64_t base_offset, int32_t index) except -1:
    raise InvalidRecordError(
        f"record #{index} of the batch at base offset {base_offset} is malformed; the segment "
        "holding it is damaged (recover it, or restore the partition from a replica)")


# ---------------------------------------------------------------- the filter

def filter_records(OffsetMap offset_map, const unsigned char[::1] data, Py_ssize_t start,
                   Py_ssize_t end, int32_t count, int64_t base_offset, int64_t base_timestamp,
                   int64_t new_base_timestamp, bint retain_tombstones, bytearray out) -> tuple:
    """Append to ``out`` the records of one batch that compaction keeps.

    ``data[start:end]`` is the batch's (decompressed) records section holding
    ``count`` records.  A record is kept when (Kafka's ``shouldRetainRecord``):

    * its offset is past ``offset_map.latest_offset`` (the map knows nothing
      about it yet), or
    * it has a key, no newer offset is stored for that key, and it has a value
      or ``retain_tombstones`` (the batch's delete horizon has not passed).

    Keyless records below the latest offset are dropped (invalid in a
    compacted log).  Kept records are copied byte for byte; when
    ``new_base_timestamp`` differs from ``base_timestamp`` (a delete horizon is
    being set) their timestamp deltas are re-encoded against it.

    Returns ``(kept, kept_tombstones, max_timestamp)`` where ``max_timestamp``
    is the largest kept CreateTime timestamp (-1 if none).
    """
    cdef RecordInfo r
    cdef Py_ssize_t pos = start, rec_start, tail, n, written = 0, old_len, body
    cdef int32_t i = 0, kept = 0, tombstones = 0, offset_delta
    cdef int err = RECORD_OK
    cdef int64_t offset, found, ts, ts_delta, max_ts = -1
    cdef int64_t latest = offset_map._latest_offset
    cdef bint keep, same_base = new_base_timestamp == base_timestamp
    cdef const unsigned char* p
    cdef unsigned char* dst
    cdef unsigned char* q
    _check_range(data.shape[0], start, end)
    if count < 0:
        raise ValueError(f"record count must be >= 0, got {count}")
    if end == start:
        if count:
            _malformed(base_offset, 0)
        return 0, 0, -1
    p = &data[0]
    old_len = PyByteArray_GET_SIZE(out)
    # A re-encoded record grows by at most 10 bytes (timestamp delta 1 -> 10 bytes, one more
    # length byte); sizing up front keeps the loop free of Python calls.
    PyByteArray_Resize(out, old_len + (end - start) + <Py_ssize_t>count * 10)
    dst = <unsigned char*>PyByteArray_AS_STRING(out) + old_len
    with nogil:
        while i < count:
            rec_start = pos
            err = read_record(p, end, &pos, &r)
            if err != RECORD_OK:
                break
            offset = base_offset + r.offset_delta
            if offset > latest:
                keep = True
            elif r.key_length < 0:
                keep = False
            else:
                found = offset_map.get_c(p + r.key_offset, r.key_length)
                keep = offset >= found and (r.value_length >= 0 or retain_tombstones)
            i += 1
            if not keep:
                continue
            kept += 1
            if r.value_length < 0:
                tombstones += 1
            ts = base_timestamp + r.timestamp_delta
            if ts > max_ts:
                max_ts = ts
            if same_base:
                n = pos - rec_start
                memcpy(dst + written, p + rec_start, <size_t>n)
                written += n
                continue
            # Re-encode: length | attributes | timestamp delta | offset delta | rest as is.
            tail = rec_start
            read_varint32(p, end, &tail, &offset_delta)      # the length, already checked
            tail += 1                                        # attributes
            read_varint(p, end, &tail, &ts_delta)
            read_varint32(p, end, &tail, &offset_delta)
            ts_delta = ts - new_base_timestamp
            n = pos - tail
            body = 1 + varint_size(ts_delta) + varint_size(offset_delta) + n
            q = put_varint(dst + written, body)
            q[0] = <unsigned char>r.attributes
            q = put_varint(q + 1, ts_delta)
            q = put_varint(q, offset_delta)
            written = q - dst
            memcpy(dst + written, p + tail, <size_t>n)
            written += n
    PyByteArray_Resize(out, old_len + written)
    if err != RECORD_OK:
        _malformed(base_offset, i)
    return kept, tombstones, max_ts


def write_batch(bytearray out, const unsigned char[::1] header, const unsigned char[::1] payload,
                int attributes, int64_t base_timestamp, int64_t max_timestamp,
                int32_t record_count) -> int:
    """Append one batch to ``out``: the first 61 bytes of ``header`` (the original batch:
    base offset, leader epoch, last offset delta, producer id/epoch, base sequence) with
    the given attributes, timestamps and record count, then ``payload`` as its records
    section (already compressed when the attributes name a codec); the CRC is computed.
    Returns the batch's size."""
    cdef Py_ssize_t n = payload.shape[0]
    cdef Py_ssize_t size = BATCH_OVERHEAD + n
    cdef Py_ssize_t old_len
    cdef unsigned char* p
    if header.shape[0] < BATCH_OVERHEAD:
        raise ValueError(f"a batch header is {BATCH_OVERHEAD} bytes, got {header.shape[0]}")
    if size - LOG_OVERHEAD > 0x7FFFFFFF:
        raise ValueError(f"a batch of {size} bytes does not fit a v2 length field")
    old_len = PyByteArray_GET_SIZE(out)
    PyByteArray_Resize(out, old_len + size)
    p = <unsigned char*>PyByteArray_AS_STRING(out) + old_len
    memcpy(p, &header[0], BATCH_OVERHEAD)
    if n:
        memcpy(p + BATCH_OVERHEAD, &payload[0], <size_t>n)
    with nogil:
        store_be32(p + LENGTH_OFFSET, <uint32_t>(size - LOG_OVERHEAD))
        store_be16(p + ATTRIBUTES_OFFSET, <uint16_t>attributes)
        store_be64(p + BASE_TIMESTAMP_OFFSET, <uint64_t>base_timestamp)
        store_be64(p + MAX_TIMESTAMP_OFFSET, <uint64_t>max_timestamp)
        store_be32(p + RECORDS_COUNT_OFFSET, <uint32_t>record_count)
        store_be32(p + CRC_OFFSET, crc32c_update(0, p + ATTRIBUTES_OFFSET, size - ATTRIBUTES_OFFSET))
    return size
