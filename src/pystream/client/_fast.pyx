# cython: language_level=3
"""Client hot paths in C: murmur2 partitioning, batches from fixed-size numpy
records, and fetched batches decoded straight into ConsumerRecord objects.

Everything here is per-record work that would cost a Python bytecode loop:

* :func:`murmur2` / :func:`partition_for_key` / :func:`partitions_for_keys` --
  the Java client's ``Utils.murmur2`` and ``toPositive(hash) % n`` (so keys land
  on the same partitions as with the Java client and librdkafka's
  ``murmur2_random``);
* :func:`chunk_bounds` -- where to cut a list of values into batches of at most
  ``max_bytes``;
* :func:`build_fixed_batch` -- a RecordBatch v2 from rows of a contiguous
  buffer (a numpy array of fixed-size records), no Python object per record;
* :func:`decode_records` -- one partition's fetched bytes to ConsumerRecords,
  skipping control batches and (read_committed) aborted transactions;
* :func:`decode_fetch_response` -- a Fetch response's partition headers, each
  partition's record batches a memoryview of the frame (the replica fetcher's path).
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport INT32_MAX, int16_t, int32_t, int64_t, uint32_t
from libc.string cimport memcpy

from pystream._core.endian cimport load_be16, load_be32, load_be64
from pystream._core.varint cimport read_uvarint32
from pystream._core.records cimport (
    BATCH_OK, BATCH_OVERHEAD, LOG_OVERHEAD, RECORD_OK, BatchError, BatchInfo, RecordError,
    RecordInfo, check_batch_ex, decode_headers, now_ms, put_batch_header, put_record, read_record,
    record_body_size,
)
from pystream._core.wire cimport varint_size
from pystream.client.murmur2 cimport murmur2 as _murmur2

import numpy as np

from pystream._core import compression as _compression
from pystream.errors import CorruptMessageError
from pystream.protocol.codec import ProtocolDecodeError

# ---------------------------------------------------------------- murmur2

def murmur2(const unsigned char[::1] data) -> int:
    """Kafka's murmur2 of ``data`` as a signed 32-bit int (``Utils.murmur2``)."""
    return _murmur2(&data[0] if data.shape[0] else <const unsigned char*>b"", data.shape[0])


cdef inline int32_t _partition(object key, int32_t num_partitions) except -1:
    cdef const unsigned char[::1] view
    cdef int32_t h
    if PyBytes_CheckExact(key):
        h = _murmur2(<const unsigned char*>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
    else:
        view = memoryview(key).cast("B")
        h = _murmur2(&view[0] if view.shape[0] else <const unsigned char*>b"", view.shape[0])
    # Utils.toPositive: clear the sign bit (not abs: abs(MIN_VALUE) is negative).
    return (h & 0x7fffffff) % num_partitions


def partition_for_key(key, int32_t num_partitions) -> int:
    """The Java default partitioner's choice for a non-null key."""
    if num_partitions <= 0:
        raise ValueError(f"num_partitions must be positive, got {num_partitions}")
    return _partition(key, num_partitions)


def partitions_for_keys(list keys, int32_t num_partitions):
    """Partition of every key (bytes) as an int32 numpy array; -1 for a None key."""
    if num_partitions <= 0:
        raise ValueError(f"num_partitions must be positive, got {num_partitions}")
    cdef Py_ssize_t i, n = PyList_GET_SIZE(keys)
    out = np.empty(n, dtype=np.int32)
    cdef int32_t[::1] res = out
    cdef object key
    for i in range(n):
        key = <object>PyList_GET_ITEM(keys, i)
        res[i] = -1 if key is None else _partition(key, num_partitions)
    return out


def partitions_for_fixed_keys(const unsigned char[::1] key_data, Py_ssize_t key_size,
                              Py_ssize_t count, int32_t num_partitions):
    """Partition of each of ``count`` ``key_size``-byte keys packed in ``key_data``."""
    if num_partitions <= 0:
        raise ValueError(f"num_partitions must be positive, got {num_partitions}")
    if key_size < 0 or count < 0 or key_size * count > key_data.shape[0]:
        raise ValueError(f"{count} keys of {key_size} bytes do not fit in {key_data.shape[0]} bytes")
    out = np.empty(count, dtype=np.int32)
    cdef int32_t[::1] res = out
    cdef const unsigned char* base = &key_data[0] if key_data.shape[0] else <const unsigned char*>b""
    cdef Py_ssize_t i
    with nogil:
        for i in range(count):
            res[i] = (_murmur2(base + i * key_size, key_size) & 0x7fffffff) % num_partitions
    return out


# ---------------------------------------------------------------- batch building

cdef inline Py_ssize_t _body_size(int32_t offset_delta, Py_ssize_t klen, Py_ssize_t vlen) noexcept nogil:
    # The records built here: timestamp delta 0, no headers.
    return record_body_size(0, offset_delta, klen, vlen, 0, 0)


def record_overhead(Py_ssize_t key_length, Py_ssize_t value_length) -> int:
    """Encoded size of a record without headers (for batch-size accounting)."""
    cdef Py_ssize_t body = _body_size(0x7fff, key_length, value_length)
    return varint_size(body) + body


def chunk_bounds(list values, list keys, Py_ssize_t max_bytes):
    """End indexes that cut ``values`` into batches of at most ``max_bytes`` bytes.

    A record larger than ``max_bytes`` gets a batch of its own (the broker
    decides whether it is too large).  ``keys`` may be None.
    """
    cdef Py_ssize_t i, n = PyList_GET_SIZE(values), size = BATCH_OVERHEAD, rec, klen, vlen
    cdef int32_t delta = 0
    cdef list bounds = []
    cdef object item
    for i in range(n):
        item = <object>PyList_GET_ITEM(values, i)
        vlen = -1 if item is None else (PyBytes_GET_SIZE(item) if PyBytes_CheckExact(item) else len(item))
        klen = -1
        if keys is not None:
            item = <object>PyList_GET_ITEM(keys, i)
            klen = -1 if item is None else (PyBytes_GET_SIZE(item) if PyBytes_CheckExact(item) else len(item))
        rec = _body_size(delta, klen, vlen)
        rec += varint_size(rec)
        if delta > 0 and size + rec > max_bytes:
            bounds.append(i)
            size = BATCH_OVERHEAD
            delta = 0
            rec = _body_size(delta, klen, vlen)
            rec += varint_size(rec)
        size += rec
        delta += 1
    if n:
        bounds.append(n)
    return bounds


def build_fixed_batch(const unsigned char[::1] data, Py_ssize_t record_size, Py_ssize_t start,
                      Py_ssize_t count, const int64_t[::1] rows=None, timestamp=None, *,
                      const unsigned char[::1] key_data=None, Py_ssize_t key_size=-1,
                      int compression=0, int64_t producer_id=-1, int16_t producer_epoch=-1,
                      int32_t base_sequence=-1, bint is_transactional=False) -> bytes:
    """One batch whose values are ``record_size``-byte rows of ``data``.

    Rows ``start .. start+count-1`` are used, or, with ``rows``, the row numbers
    ``rows[start .. start+count-1]`` (the records of one partition picked out of
    a larger array).  Keys are null, or with ``key_data`` the same rows of a
    second buffer of ``key_size``-byte keys.  Every record gets ``timestamp``
    (None = now).
    """
    if record_size < 0:
        raise ValueError("record_size must be >= 0")
    if count <= 0:
        raise ValueError("a record batch needs at least one record")
    if count > INT32_MAX:
        raise ValueError("too many records for one batch")
    cdef Py_ssize_t nrows = data.shape[0] // record_size if record_size else INT32_MAX
    cdef Py_ssize_t i, row
    cdef bint keyed = key_data is not None
    if keyed:
        if key_size < 0:
            raise ValueError("key_size must be >= 0 with key_data")
        if key_size and key_data.shape[0] // key_size < nrows:
            nrows = key_data.shape[0] // key_size
    if rows is None:
        if start < 0 or start + count > nrows:
            raise ValueError(f"rows {start}..{start + count - 1} are outside the {nrows} given")
    else:
        if start < 0 or start + count > rows.shape[0]:
            raise ValueError("start/count are outside the rows array")
        for i in range(start, start + count):
            if rows[i] < 0 or rows[i] >= nrows:
                raise ValueError(f"row {rows[i]} is outside the {nrows} given")
    if compression < 0 or compression > 4:
        raise ValueError(f"unknown compression codec id {compression}")
    cdef int64_t ts = now_ms() if timestamp is None else <int64_t>timestamp
    cdef Py_ssize_t klen = key_size if keyed else -1
    cdef Py_ssize_t total = 0, body
    for i in range(count):
        body = _body_size(<int32_t>i, klen, record_size)
        total += varint_size(body) + body
    cdef bytes raw = PyBytes_FromStringAndSize(NULL, total + (BATCH_OVERHEAD if compression == 0 else 0))
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(raw)
    if compression == 0:
        p += BATCH_OVERHEAD
    cdef const unsigned char* base = &data[0] if data.shape[0] else <const unsigned char*>b""
    cdef const unsigned char* kbase = <const unsigned char*>b""
    if keyed and key_data.shape[0]:
        kbase = &key_data[0]
    with nogil:
        for i in range(count):
            row = (start + i) if rows is None else rows[start + i]
            body = _body_size(<int32_t>i, klen, record_size)
            p = put_record(p, body, 0, <int32_t>i, kbase + row * klen if keyed else NULL, klen,
                           base + row * record_size, record_size, 0, NULL, 0)
    cdef int16_t attributes = (0x10 if is_transactional else 0)
    return _finish(raw, compression, attributes, <int32_t>(count - 1), ts, producer_id,
                   producer_epoch, base_sequence, <int32_t>count)


cdef bytes _finish(bytes raw, int codec, int16_t attributes, int32_t last_offset_delta, int64_t ts,
                   int64_t producer_id, int16_t producer_epoch, int32_t base_sequence,
                   int32_t count):
    """Header and CRC around ``raw`` (records in place, or to be compressed)."""
    cdef bytes out
    cdef unsigned char* p
    cdef Py_ssize_t size
    if codec == 0:
        out = raw
    else:
        payload = _compression.compress(codec, raw)
        if not PyBytes_CheckExact(payload):
            payload = bytes(payload)
        out = PyBytes_FromStringAndSize(NULL, BATCH_OVERHEAD + PyBytes_GET_SIZE(payload))
        memcpy(PyBytes_AS_STRING(out) + BATCH_OVERHEAD, PyBytes_AS_STRING(payload),
               PyBytes_GET_SIZE(payload))
    size = PyBytes_GET_SIZE(out)
    if size - LOG_OVERHEAD > INT32_MAX:
        raise ValueError("the batch would exceed the 2 GiB a v2 batch can hold")
    p = <unsigned char*>PyBytes_AS_STRING(out)
    with nogil:
        # Base offset 0 (the broker assigns it), no partition leader epoch.
        put_batch_header(p, size, 0, -1, attributes | codec, last_offset_delta, ts, ts,
                         producer_id, producer_epoch, base_sequence, count)
    return out


# ---------------------------------------------------------------- consuming

@cython.final
@cython.freelist(256)
@cython.no_gc
cdef class ConsumerRecord:
    """One record as :meth:`Consumer.poll` returns it.

    ``timestamp_type`` is 0 (CreateTime) or 1 (LogAppendTime); ``headers`` is a
    sequence of ``(str, bytes | None)`` pairs (an empty tuple when the record
    has none); ``leader_epoch`` is the batch's partition leader epoch (-1 if
    unknown).

    Not tracked by the cyclic garbage collector: a poll creates thousands of
    these, and GC passes over them cost more than decoding.  They hold
    bytes, str and header tuples, which cannot form cycles.
    """

    cdef readonly str topic
    cdef readonly int32_t partition
    cdef readonly int64_t offset
    cdef readonly int64_t timestamp
    cdef readonly int timestamp_type
    cdef readonly object key
    cdef readonly object value
    cdef readonly object headers
    cdef readonly int32_t leader_epoch

    def __init__(self, str topic, int32_t partition, int64_t offset, int64_t timestamp, key, value,
                 headers=(), int timestamp_type=0, int32_t leader_epoch=-1):
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.timestamp_type = timestamp_type
        self.key = key
        self.value = value
        self.headers = list(headers) if headers else ()
        self.leader_epoch = leader_epoch

    def __repr__(self) -> str:
        return (f"ConsumerRecord(topic={self.topic!r}, partition={self.partition}, "
                f"offset={self.offset}, timestamp={self.timestamp}, key={self.key!r}, "
                f"value={self.value!r}, headers={self.headers!r})")

    def __eq__(self, other):
        if not isinstance(other, ConsumerRecord):
            return NotImplemented
        cdef ConsumerRecord o = <ConsumerRecord>other
        return (self.topic == o.topic and self.partition == o.partition
                and self.offset == o.offset and self.timestamp == o.timestamp
                and self.key == o.key and self.value == o.value
                and list(self.headers) == list(o.headers))

    __hash__ = None

    def __reduce__(self):
        return (ConsumerRecord, (self.topic, self.partition, self.offset, self.timestamp,
                                 self.key, self.value, self.headers, self.timestamp_type,
                                 self.leader_epoch))




cdef int _records_of(list out, str topic, int32_t partition, const unsigned char* data,
                     Py_ssize_t length, const BatchInfo* info, int64_t min_offset,
                     int64_t batch_base) except -1:
    cdef Py_ssize_t pos = 0
    cdef RecordInfo r
    cdef RecordError err
    cdef int32_t i
    cdef int64_t offset
    cdef int ts_type = 1 if info.attributes & 0x08 else 0
    cdef ConsumerRecord rec
    for i in range(info.record_count):
        err = read_record(data, length, &pos, &r)
        if err != RECORD_OK:
            raise CorruptMessageError(
                f"{topic}-{partition}: record #{i} of the batch at offset {batch_base} is "
                f"malformed (code {err})")
        offset = batch_base + r.offset_delta
        if offset < min_offset:
            continue
        rec = ConsumerRecord.__new__(ConsumerRecord)
        rec.topic = topic
        rec.partition = partition
        rec.offset = offset
        rec.timestamp = info.max_timestamp if ts_type else info.base_timestamp + r.timestamp_delta
        rec.timestamp_type = ts_type
        rec.leader_epoch = info.partition_leader_epoch
        rec.key = (None if r.key_length < 0
                   else PyBytes_FromStringAndSize(<const char*>data + r.key_offset, r.key_length))
        rec.value = (None if r.value_length < 0
                     else PyBytes_FromStringAndSize(<const char*>data + r.value_offset, r.value_length))
        rec.headers = (() if r.header_count == 0
                       else decode_headers(data, length, r.headers_offset, r.header_count))
        out.append(rec)
    return 0


def decode_records(buf, str topic, int32_t partition, int64_t fetch_offset, *,
                   bint check_crc=True, aborted=None, Py_ssize_t max_decompressed_size=0):
    """ConsumerRecords of one partition's fetched record set, from ``fetch_offset`` on.

    Returns ``(records, next_offset, complete_batches)``: ``next_offset`` is
    one past the last whole batch (control and skipped batches included), so
    the next fetch never re-reads them; ``complete_batches`` is 0 when the
    bytes held only the start of a batch (the fetch size was too small).

    ``aborted`` (read_committed only): the response's aborted transactions as
    a list of ``(producer_id, first_offset)``; their transactional batches are
    skipped until the producer's ABORT marker, like the Java consumer.
    """
    cdef const unsigned char[::1] view = buf
    cdef Py_ssize_t n = view.shape[0], pos = 0, size
    cdef const unsigned char* p = &view[0] if n else <const unsigned char*>b""
    cdef BatchInfo info
    cdef BatchError err
    cdef list out = []
    cdef int64_t next_offset = fetch_offset
    cdef int batches = 0
    cdef int codec
    cdef set aborted_pids = None
    cdef list pending = None
    cdef Py_ssize_t pending_pos = 0
    cdef const unsigned char[::1] plain
    if aborted:
        pending = sorted(aborted, key=lambda a: a[1])
        aborted_pids = set()
    while n - pos >= LOG_OVERHEAD:
        size = <Py_ssize_t><int32_t>load_be32(p + pos + 8) + LOG_OVERHEAD
        if size > n - pos:
            break  # partial batch at the end of the response
        err = check_batch_ex(p + pos, n - pos, 0, check_crc, &info)
        if err != BATCH_OK:
            raise CorruptMessageError(
                f"{topic}-{partition}: the batch at byte {pos} of the fetched data is invalid "
                f"(code {err}); the log or the connection is corrupt")
        batches += 1
        next_offset = info.base_offset + info.last_offset_delta + 1
        if pending is not None and info.producer_id >= 0:
            # Transactions that started at or before this batch are now open.
            while pending_pos < len(pending) and pending[pending_pos][1] <= next_offset - 1:
                aborted_pids.add(pending[pending_pos][0])
                pending_pos += 1
        if info.attributes & 0x20:  # control batch: commit/abort marker, never returned
            if aborted_pids is not None and info.record_count > 0:
                # The control record's key: version int16, type int16 (0 abort).
                if _control_type(p + pos + BATCH_OVERHEAD, size - BATCH_OVERHEAD) == 0:
                    aborted_pids.discard(info.producer_id)
            pos += size
            continue
        if (aborted_pids is not None and info.attributes & 0x10
                and info.producer_id in aborted_pids):
            pos += size
            continue
        if next_offset <= fetch_offset:
            pos += size
            continue
        codec = info.attributes & 0x07
        if codec == 0:
            _records_of(out, topic, partition, p + pos + BATCH_OVERHEAD, size - BATCH_OVERHEAD,
                        &info, fetch_offset, info.base_offset)
        else:
            try:
                payload = _compression.decompress(
                    codec, memoryview(buf)[pos + BATCH_OVERHEAD: pos + size],
                    max_decompressed_size or 128 * 1024 * 1024)
            except Exception as exc:
                raise CorruptMessageError(
                    f"{topic}-{partition}: the compressed batch at offset {info.base_offset} "
                    f"could not be decompressed ({exc})") from exc
            plain = payload
            _records_of(out, topic, partition,
                        &plain[0] if plain.shape[0] else <const unsigned char*>b"",
                        plain.shape[0], &info, fetch_offset, info.base_offset)
        pos += size
    return out, next_offset, batches


cdef int _control_type(const unsigned char* data, Py_ssize_t length) noexcept:
    """Type of the first control record in an (uncompressed) control batch; -1 if unreadable."""
    cdef Py_ssize_t pos = 0
    cdef RecordInfo r
    if read_record(data, length, &pos, &r) != RECORD_OK or r.key_length < 4:
        return -1
    return <int16_t>load_be16(data + r.key_offset + 2)


def take(list items, const int64_t[::1] index, Py_ssize_t start, Py_ssize_t stop) -> list:
    """``[items[index[i]] for i in range(start, stop)]`` without a bytecode loop."""
    cdef Py_ssize_t i, j, n = PyList_GET_SIZE(items)
    if start < 0 or stop > index.shape[0] or start > stop:
        raise IndexError("start/stop outside the index array")
    cdef list out = [None] * (stop - start)
    cdef object item
    for i in range(start, stop):
        j = index[i]
        if j < 0 or j >= n:
            raise IndexError(f"index {j} is outside the list of {n}")
        item = <object>PyList_GET_ITEM(items, j)
        out[i - start] = item
    return out


# ---------------------------------------------------------------- Fetch responses

cdef struct _Cursor:
    const unsigned char* p
    Py_ssize_t pos
    Py_ssize_t end
    bint bad


cdef inline bint _need(_Cursor* c, Py_ssize_t n) noexcept nogil:
    if c.bad or n < 0 or c.end - c.pos < n:
        c.bad = True
        return False
    return True


cdef inline int16_t _i16(_Cursor* c) noexcept nogil:
    if not _need(c, 2):
        return 0
    c.pos += 2
    return <int16_t>load_be16(c.p + c.pos - 2)


cdef inline int32_t _i32(_Cursor* c) noexcept nogil:
    if not _need(c, 4):
        return 0
    c.pos += 4
    return <int32_t>load_be32(c.p + c.pos - 4)


cdef inline int64_t _i64(_Cursor* c) noexcept nogil:
    if not _need(c, 8):
        return 0
    c.pos += 8
    return <int64_t>load_be64(c.p + c.pos - 8)


cdef inline Py_ssize_t _uvarint(_Cursor* c) noexcept nogil:
    cdef uint32_t v = 0
    if c.bad or read_uvarint32(c.p, c.end, &c.pos, &v) != 0:
        c.bad = True
        return 0
    return <Py_ssize_t>v


cdef inline Py_ssize_t _length(_Cursor* c, bint flexible) noexcept nogil:
    """An array or bytes length; -1 is null."""
    if flexible:
        return _uvarint(c) - 1
    return _i32(c)


cdef inline void _skip_tagged(_Cursor* c) noexcept nogil:
    cdef Py_ssize_t count = _uvarint(c)
    cdef Py_ssize_t i, size
    for i in range(count):
        _uvarint(c)  # tag
        size = _uvarint(c)
        if _need(c, size):
            c.pos += size


cdef inline Py_ssize_t _whole_batches(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """Bytes of the complete record batches at the start of p[0:n] (a fetch may end with
    the first part of a batch)."""
    cdef Py_ssize_t pos = 0
    cdef int32_t length
    while n - pos >= LOG_OVERHEAD:
        length = <int32_t>load_be32(p + pos + 8)
        if length < 0 or n - pos - LOG_OVERHEAD < length:
            break
        pos += LOG_OVERHEAD + length
    return pos


def decode_fetch_response(data, int version):
    """A Fetch response frame (v4-v17, from its correlation id on) in one pass in C.

    Returns ``(error_code, session_id, partitions)``, each partition a tuple ``(topic,
    partition_index, error_code, high_watermark, last_stable_offset, log_start_offset,
    records, trailing)``: ``topic`` the name (v4-v12) or the 16-byte topic id (v13+),
    ``records`` a memoryview of ``data`` holding only its whole record batches (None
    when the response has none) and ``trailing`` the bytes of an incomplete batch
    after them.  Aborted transactions and tagged fields are skipped (replica fetches
    read uncommitted).  ProtocolDecodeError when the frame is short or malformed.
    """
    if version < 4 or version > 17:
        raise ProtocolDecodeError(f"decode_fetch_response: unsupported Fetch version {version}")
    cdef const unsigned char[::1] buf = data
    cdef object view = memoryview(data)
    cdef _Cursor c
    c.p = &buf[0] if buf.shape[0] else <const unsigned char*>b""
    c.pos = 0
    c.end = buf.shape[0]
    c.bad = False
    cdef bint flexible = version >= 12
    cdef int16_t error_code = 0
    cdef int32_t session_id = 0
    cdef Py_ssize_t topics, parts, i, j, k, n, start, whole, aborted
    cdef int32_t partition_index
    cdef int16_t partition_error
    cdef int64_t high_watermark, last_stable_offset, log_start_offset
    cdef object topic, records
    cdef list out = []
    _i32(&c)  # correlation id (the connection matched it)
    if flexible:
        _skip_tagged(&c)
    _i32(&c)  # throttle_time_ms
    if version >= 7:
        error_code = _i16(&c)
        session_id = _i32(&c)
    topics = _length(&c, flexible)
    for i in range(topics):
        if c.bad:
            break
        if version >= 13:
            if not _need(&c, 16):
                break
            topic = PyBytes_FromStringAndSize(<const char*>c.p + c.pos, 16)
            c.pos += 16
        else:
            n = _uvarint(&c) - 1 if flexible else _i16(&c)  # a string: int16 length
            if not _need(&c, n):
                break
            topic = PyUnicode_DecodeUTF8(<const char*>c.p + c.pos, n, NULL)
            c.pos += n
        parts = _length(&c, flexible)
        for j in range(parts):
            if c.bad:
                break
            partition_index = _i32(&c)
            partition_error = _i16(&c)
            high_watermark = _i64(&c)
            last_stable_offset = _i64(&c)
            log_start_offset = _i64(&c) if version >= 5 else -1
            aborted = _length(&c, flexible)
            for k in range(aborted):
                _i64(&c)
                _i64(&c)
                if flexible:
                    _skip_tagged(&c)
            if version >= 11:
                _i32(&c)  # preferred_read_replica
            n = _length(&c, flexible)
            records = None
            whole = 0
            if n > 0:
                if not _need(&c, n):
                    break
                start = c.pos
                whole = _whole_batches(c.p + start, n)
                if whole:
                    records = view[start:start + whole]
                c.pos += n
            elif n < -1:
                c.bad = True
                break
            if flexible:
                _skip_tagged(&c)
            if c.bad:
                break
            out.append((topic, partition_index, partition_error, high_watermark,
                        last_stable_offset, log_start_offset, records, max(n, 0) - whole))
        if flexible:
            _skip_tagged(&c)
    if flexible and not c.bad:
        _skip_tagged(&c)
    if c.bad:
        raise ProtocolDecodeError(
            f"Fetch v{version} response of {c.end} bytes is truncated or malformed at "
            f"byte {c.pos}")
    if c.pos != c.end:
        raise ProtocolDecodeError(
            f"Fetch v{version} response has {c.end - c.pos} bytes after its end")
    return error_code, session_id, out
