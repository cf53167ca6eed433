# cython: language_level=3
"""The producer's record accumulator in C: ``send()``'s per-record work.

``RecordAccumulator.send`` is the whole fast path of ``Producer.send``: pick
the partition (murmur2 of the key like the Java client, or the sticky
partition for null keys), encode the record straight into its partition's
open batch (a growing C buffer in RecordBatch v2 record format), and return
a :class:`RecordFuture` -- one C call, no Python object kept per record.
Anything unusual (unknown topic, full ``buffer_memory``, serializers, non-bytes
values) goes to ``slow_path``, a Python callable that waits or converts and
then calls :meth:`RecordAccumulator.try_send`.

A batch is *ready* when full (``batch_size``), after ``linger_ms``, or during
a flush/close; a retried batch first waits ``retry_backoff_ms``.  The sender
(on the event loop thread) drains ready batches; ``build()`` then writes the
61-byte header and CRC (compressing the records section first if asked).

Thread safety: a C lock guards the queues and open batches; it is taken
without blocking when free and with the GIL released when not, so a thread
waiting for it never holds the GIL the owner needs.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.pythread cimport (
    NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock, PyThread_free_lock,
    PyThread_release_lock, PyThread_type_lock,
)
from cpython.unicode cimport PyUnicode_AsUTF8String, PyUnicode_CheckExact
from libc.stdint cimport INT32_MAX, int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from pystream._core.crc32c cimport crc32c_update
from pystream._core.records cimport (
    ATTRIBUTES_OFFSET, BASE_SEQUENCE_OFFSET, BATCH_OVERHEAD, CRC_OFFSET, PRODUCER_EPOCH_OFFSET,
    PRODUCER_ID_OFFSET, now_ms, put_batch_header, put_record, record_body_size,
)
from pystream._core.endian cimport store_be16, store_be32, store_be64
from pystream._core.wire cimport put_varint
from pystream.client.murmur2 cimport murmur2 as _murmur2

import asyncio
import concurrent.futures
import random
import threading
from collections import deque

from pystream._core import compression as _compression

from .types import RecordMetadata

# Status codes try_send returns instead of a future.
NEED_METADATA = 1
NEED_SPACE = 2


cdef inline double _monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + ts.tv_nsec * 1e-9


def monotonic() -> float:
    """The clock batch creation/retry times use (same as time.monotonic())."""
    return _monotonic()




cdef bytes _encode_headers(list headers, int32_t* count):
    """(key, value) pairs (str/bytes key, bytes/None value) as record header bytes."""
    cdef bytearray out = bytearray()
    cdef unsigned char tmp[10]
    cdef Py_ssize_t n
    cdef int32_t c = 0
    for item in headers:
        hkey, hvalue = item
        if PyUnicode_CheckExact(hkey):
            hkey = PyUnicode_AsUTF8String(hkey)
        elif not PyBytes_CheckExact(hkey):
            raise TypeError(f"a header key must be str or bytes, got {type(hkey).__name__}")
        n = put_varint(tmp, PyBytes_GET_SIZE(hkey)) - tmp
        out += tmp[:n]
        out += hkey
        if hvalue is None:
            out.append(1)
        else:
            if PyUnicode_CheckExact(hvalue):
                hvalue = PyUnicode_AsUTF8String(hvalue)
            elif not PyBytes_CheckExact(hvalue):
                hvalue = bytes(memoryview(hvalue))
            n = put_varint(tmp, PyBytes_GET_SIZE(hvalue)) - tmp
            out += tmp[:n]
            out += hvalue
        c += 1
    count[0] = c
    return bytes(out)


# ---------------------------------------------------------------- batches

@cython.final
cdef class ProducerBatch:
    """One batch for one partition: records encoded in a C buffer until built."""

    cdef readonly str topic
    cdef readonly int32_t partition
    cdef unsigned char* _buf      # records section while open
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef int64_t* _ts             # each record's timestamp (for RecordMetadata)
    cdef Py_ssize_t _ts_cap
    cdef int32_t _count
    cdef int64_t _base_ts
    cdef int64_t _max_ts
    cdef int64_t _single_ts       # prebuilt batches: every record's timestamp
    cdef public Py_ssize_t size   # bytes this batch holds / will send (header included)
    cdef public double created
    cdef public double retry_at
    cdef public int attempts
    cdef public bint closed
    cdef public object records    # the batch bytes once built
    # Idempotence: set when the batch is first drained (kept on retry, renumbered
    # only after an epoch bump); -1 = none (a plain at-least-once batch).
    cdef readonly int64_t producer_id
    cdef readonly int16_t producer_epoch
    cdef readonly int32_t base_sequence
    cdef readonly bint transactional
    cdef readonly object future   # concurrent.futures.Future of (base_offset, log_append_time)
    cdef object _aio
    cdef object __weakref__

    def __cinit__(self, str topic, int32_t partition, double created):
        self.topic = topic
        self.partition = partition
        self.created = created
        self.size = BATCH_OVERHEAD
        self.future = concurrent.futures.Future()
        self._single_ts = -1
        self.producer_id = -1
        self.producer_epoch = -1
        self.base_sequence = -1

    def __dealloc__(self):
        free(self._buf)
        free(self._ts)

    @staticmethod
    def prebuilt(str topic, int32_t partition, bytes records, int32_t count, int64_t timestamp,
                 double created):
        """A batch whose bytes ``send_batch`` already built."""
        cdef ProducerBatch batch = ProducerBatch(topic, partition, created)
        batch.records = records
        batch.size = PyBytes_GET_SIZE(records)
        batch._count = count
        batch._single_ts = timestamp
        batch.closed = True
        return batch

    def __repr__(self):
        return f"<ProducerBatch {self.topic}-{self.partition} records={self._count}>"

    @property
    def record_count(self) -> int:
        return self._count

    cpdef int64_t timestamp_of(self, Py_ssize_t index):
        if self._ts == NULL or index < 0 or index >= self._count:
            return self._single_ts
        return self._ts[index]

    cdef int _reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t cap
        cdef void* grown
        if self._len + extra > self._cap:
            cap = self._cap * 2 if self._cap else 4096
            while cap < self._len + extra:
                cap *= 2
            grown = realloc(self._buf, cap)
            if grown == NULL:
                raise MemoryError()
            self._buf = <unsigned char*>grown
            self._cap = cap
        if self._count >= self._ts_cap:
            cap = self._ts_cap * 2 if self._ts_cap else 256
            grown = realloc(self._ts, cap * sizeof(int64_t))
            if grown == NULL:
                raise MemoryError()
            self._ts = <int64_t*>grown
            self._ts_cap = cap
        return 0

    cdef int32_t _append(self, int64_t ts, const unsigned char* kp, Py_ssize_t klen,
                         const unsigned char* vp, Py_ssize_t vlen, bytes hdrs,
                         int32_t hcount) except -1:
        cdef int32_t index = self._count
        cdef int64_t delta = 0 if index == 0 else <int64_t>(<uint64_t>ts - <uint64_t>self._base_ts)
        cdef Py_ssize_t hsize = 0 if hdrs is None else PyBytes_GET_SIZE(hdrs)
        cdef Py_ssize_t body = record_body_size(delta, index, klen, vlen, hcount, hsize)
        self._reserve(body + 5)
        cdef unsigned char* start = self._buf + self._len
        cdef Py_ssize_t written = put_record(
            start, body, delta, index, kp, klen, vp, vlen, hcount,
            <const unsigned char*>PyBytes_AS_STRING(hdrs) if hsize else NULL, hsize) - start
        self._len += written
        self.size += written
        if index == 0:
            self._base_ts = self._max_ts = ts
        elif ts > self._max_ts:
            self._max_ts = ts
        self._ts[index] = ts
        self._count = index + 1
        return index

    def set_producer_state(self, int64_t producer_id, int16_t producer_epoch,
                           int32_t base_sequence, bint transactional):
        """Give the batch its producer id, epoch and base sequence (and the transactional
        flag).  A batch already built gets its header fields and CRC rewritten: in place
        the first time (a ``send_batch`` batch nobody else has seen yet), in a copy after
        an epoch bump (the old bytes may still be referenced by a request going out)."""
        cdef bint first = self.producer_id == -1
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.base_sequence = base_sequence
        self.transactional = transactional
        if self.records is None:
            return
        cdef bytes old = <bytes>self.records
        cdef Py_ssize_t size = PyBytes_GET_SIZE(old)
        if size < BATCH_OVERHEAD:
            raise ValueError("a built batch is shorter than a RecordBatch header")
        cdef bytes out = old if first else PyBytes_FromStringAndSize(PyBytes_AS_STRING(old), size)
        cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
        cdef uint16_t attributes = (<uint16_t>p[ATTRIBUTES_OFFSET] << 8) | p[ATTRIBUTES_OFFSET + 1]
        if transactional:
            attributes |= 0x10
        else:
            attributes &= ~0x10
        with nogil:
            store_be16(p + ATTRIBUTES_OFFSET, attributes)
            store_be64(p + PRODUCER_ID_OFFSET, <uint64_t>producer_id)
            store_be16(p + PRODUCER_EPOCH_OFFSET, <uint16_t>producer_epoch)
            store_be32(p + BASE_SEQUENCE_OFFSET, <uint32_t>base_sequence)
            store_be32(p + CRC_OFFSET, crc32c_update(0, p + ATTRIBUTES_OFFSET, size - ATTRIBUTES_OFFSET))
        self.records = out

    def build(self, int codec) -> bytes:
        """The RecordBatch bytes (built once; a retry resends the same bytes)."""
        if self.records is not None:
            return self.records
        if self._count == 0:
            raise ValueError("an empty batch cannot be built")
        cdef bytes out
        cdef Py_ssize_t n
        if codec == 0:
            n = self._len
            out = PyBytes_FromStringAndSize(NULL, BATCH_OVERHEAD + n)
            memcpy(PyBytes_AS_STRING(out) + BATCH_OVERHEAD, self._buf, n)
        else:
            payload = _compression.compress(codec, PyBytes_FromStringAndSize(<char*>self._buf, self._len))
            if not PyBytes_CheckExact(payload):
                payload = bytes(payload)
            n = PyBytes_GET_SIZE(payload)
            out = PyBytes_FromStringAndSize(NULL, BATCH_OVERHEAD + n)
            memcpy(PyBytes_AS_STRING(out) + BATCH_OVERHEAD, PyBytes_AS_STRING(payload), n)
        cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
        cdef Py_ssize_t size = BATCH_OVERHEAD + n
        with nogil:
            # Base offset 0 (the broker assigns it); leader epoch: none (-1).
            put_batch_header(p, size, 0, -1, codec | (0x10 if self.transactional else 0),
                             self._count - 1, self._base_ts, self._max_ts, self.producer_id,
                             self.producer_epoch, self.base_sequence, self._count)
        free(self._buf)
        self._buf = NULL
        self._len = self._cap = 0
        self.records = out
        self.size = size
        return out

    def aio_future(self):
        """An asyncio future done with this batch (create and await on the client's loop)."""
        if self._aio is None:
            self._aio = asyncio.get_running_loop().create_future()
            if self.future.done():
                self._aio.set_result(None)
        return self._aio

    def complete(self, int64_t base_offset, int64_t log_append_time):
        if not self.future.done():
            self.future.set_result((base_offset, log_append_time))
            if self._aio is not None and not self._aio.done():
                self._aio.set_result(None)

    def fail(self, error):
        if not self.future.done():
            self.future.set_exception(error)
            if self._aio is not None and not self._aio.done():
                self._aio.set_result(None)  # the awaiter reads the error from `future`


@cython.final
@cython.freelist(1024)
cdef class RecordFuture:
    """The outcome of one ``send()``: ``result(timeout)`` -> :class:`RecordMetadata`.

    ``result`` works from any thread; ``await future`` works on the client's
    event loop (the :mod:`pystream.aio` producer).
    """

    cdef readonly ProducerBatch batch
    cdef readonly int32_t index

    def __repr__(self):
        state = "done" if self.batch.future.done() else "pending"
        return f"<RecordFuture {self.batch.topic}-{self.batch.partition} #{self.index} {state}>"

    def done(self) -> bool:
        return self.batch.future.done()

    def result(self, timeout=None):
        """Wait up to ``timeout`` seconds; raises the send's error, or ``TimeoutError``."""
        base_offset, log_append_time = self.batch.future.result(timeout)
        return self._metadata(base_offset, log_append_time)

    cdef _metadata(self, int64_t base_offset, int64_t log_append_time):
        cdef ProducerBatch b = self.batch
        ts = log_append_time if log_append_time >= 0 else b.timestamp_of(self.index)
        return RecordMetadata(b.topic, b.partition,
                              base_offset + self.index if base_offset >= 0 else -1, ts)

    def exception(self, timeout=None):
        return self.batch.future.exception(timeout)

    def add_done_callback(self, fn):
        """Call ``fn(self)`` once the record is acknowledged or failed (on the client's loop)."""
        self.batch.future.add_done_callback(lambda _f: fn(self))

    def __await__(self):
        if not self.batch.future.done():
            yield from self.batch.aio_future().__await__()
        return self.result(0)


cdef inline RecordFuture _future(ProducerBatch batch, int32_t index):
    cdef RecordFuture f = RecordFuture.__new__(RecordFuture)
    f.batch = batch
    f.index = index
    return f


# ---------------------------------------------------------------- per topic

@cython.final
cdef class _Topic:
    """What send() needs of a topic: partition count, sticky choice, open batches."""

    cdef str name
    cdef int32_t num_partitions
    cdef list available        # partitions with a leader (sticky choices)
    cdef int32_t sticky
    cdef list open             # partition -> open ProducerBatch or None

    def __cinit__(self, str name):
        self.name = name
        self.sticky = -1
        self.open = []
        self.available = []

    cdef int32_t pick(self, int32_t exclude) except -2:
        choices = self.available or list(range(self.num_partitions))
        if len(choices) > 1 and exclude >= 0:
            choices = [p for p in choices if p != exclude]
        self.sticky = random.choice(choices)
        return self.sticky


# ---------------------------------------------------------------- the accumulator

@cython.final
cdef class RecordAccumulator:
    """Per-partition queues of batches, shared by send() (any thread) and the sender (loop)."""

    cdef PyThread_type_lock _lock
    cdef dict _topics                 # name -> _Topic
    cdef dict _queues                 # (topic, partition) -> deque of ProducerBatch
    cdef public set incomplete        # every batch not yet completed or failed
    cdef public Py_ssize_t buffered   # bytes held by incomplete batches
    cdef public Py_ssize_t buffer_memory
    cdef public Py_ssize_t batch_size
    cdef public Py_ssize_t max_record_size  # larger records fail at once (max_request_size)
    cdef public double linger
    cdef public double delivery_timeout
    cdef public int codec
    cdef public int flushing
    cdef public bint closing
    cdef public bint closed
    cdef public bint sender_idle
    cdef public bint gated            # send() takes the slow path (a transactional producer's checks)
    cdef public object wakeup         # called (any thread) when the sender should look again
    cdef public object slow_path      # send()'s fallback: (topic, value, key, headers, partition, ts)
    cdef object _space                # threading.Condition for blocked sync senders
    cdef int _space_waiters
    cdef list _aio_space_waiters

    def __cinit__(self, *, Py_ssize_t batch_size, double linger_ms, int codec,
                  Py_ssize_t buffer_memory, double delivery_timeout_ms):
        self._lock = PyThread_allocate_lock()
        if self._lock == NULL:
            raise MemoryError()
        self.batch_size = batch_size
        self.max_record_size = 0  # 0: no limit
        self.linger = linger_ms / 1000
        self.codec = codec
        self.buffer_memory = buffer_memory
        self.delivery_timeout = delivery_timeout_ms / 1000
        self._topics = {}
        self._queues = {}
        self.incomplete = set()
        self.sender_idle = True
        self.wakeup = lambda: None
        self.slow_path = None
        self._space = threading.Condition()
        self._aio_space_waiters = []

    def __dealloc__(self):
        if self._lock != NULL:
            PyThread_free_lock(self._lock)

    cdef inline void _acquire(self) noexcept:
        if not PyThread_acquire_lock(self._lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self._lock, WAIT_LOCK)

    cdef inline void _release_lock(self) noexcept:
        PyThread_release_lock(self._lock)

    # ------------------------------------------------------------------ topics

    def set_topic(self, str topic, int32_t num_partitions, list available):
        """Record a topic's partition count and available partitions (from metadata)."""
        cdef _Topic t
        self._acquire()
        try:
            t = self._topics.get(topic)
            if t is None:
                t = _Topic(topic)
                self._topics[topic] = t
            t.num_partitions = num_partitions
            t.available = list(available)
            while PyList_GET_SIZE(t.open) < num_partitions:
                t.open.append(None)
            if t.sticky >= num_partitions or (t.available and t.sticky not in t.available):
                t.sticky = -1
        finally:
            self._release_lock()

    def num_partitions(self, str topic) -> int:
        t = self._topics.get(topic)
        return -1 if t is None else (<_Topic>t).num_partitions

    def sticky_partition(self, str topic) -> int:
        """The partition null-key records of ``topic`` go to now."""
        cdef _Topic t = self._topics[topic]
        return t.sticky if t.sticky >= 0 else t.pick(-1)

    def next_sticky_partition(self, str topic, int32_t previous) -> int:
        """Move the sticky partition on from ``previous`` (a batch for it is complete)."""
        cdef _Topic t = self._topics[topic]
        if t.sticky < 0 or t.sticky == previous:
            t.pick(previous)
        return t.sticky

    # ------------------------------------------------------------------ appending

    def send(self, str topic, value=None, key=None, headers=None, partition=None,
             timestamp_ms=None):
        """Queue one record (see ``Producer.send``); the fast path of the producer."""
        if (self.closed or self.gated or headers is not None
                or (value is not None and not PyBytes_CheckExact(value))
                or (key is not None and not PyBytes_CheckExact(key))
                or self.buffered >= self.buffer_memory):
            return self.slow_path(topic, value, key, headers, partition, timestamp_ms)
        t = self._topics.get(topic)
        if t is None:
            return self.slow_path(topic, value, key, headers, partition, timestamp_ms)
        return self._send(<_Topic>t, value, key, None, partition, timestamp_ms)

    def try_send(self, str topic, value, key, list headers, partition, timestamp_ms):
        """``send`` once values are bytes: a RecordFuture, or NEED_METADATA / NEED_SPACE."""
        if self.closed:
            raise RuntimeError("the producer is closed")
        t = self._topics.get(topic)
        if t is None or (<_Topic>t).num_partitions <= 0:
            return NEED_METADATA
        if self.buffered >= self.buffer_memory:
            return NEED_SPACE
        return self._send(<_Topic>t, value, key, headers, partition, timestamp_ms)

    cdef object _send(self, _Topic t, value, key, list headers, partition, timestamp_ms):
        cdef int64_t ts = now_ms() if timestamp_ms is None else <int64_t>timestamp_ms
        cdef int32_t p, n = t.num_partitions
        cdef const unsigned char* kp = NULL
        cdef const unsigned char* vp = NULL
        cdef Py_ssize_t klen = -1, vlen = -1
        cdef bytes hdrs = None
        cdef int32_t hcount = 0
        if key is not None:
            kp = <const unsigned char*>PyBytes_AS_STRING(key)
            klen = PyBytes_GET_SIZE(key)
        if value is not None:
            vp = <const unsigned char*>PyBytes_AS_STRING(value)
            vlen = PyBytes_GET_SIZE(value)
        if headers:
            hdrs = _encode_headers(headers, &hcount)
        if self.max_record_size and (
                (klen if klen > 0 else 0) + (vlen if vlen > 0 else 0)
                + (PyBytes_GET_SIZE(hdrs) if hdrs is not None else 0) + 64
                > self.max_record_size):
            from pystream.errors import MessageTooLargeError
            raise MessageTooLargeError(
                f"a record of {max(klen, 0) + max(vlen, 0)} key+value bytes does not fit in "
                f"max_request_size ({self.max_record_size} bytes); raise max_request_size "
                f"(and the topic's max.message.bytes) or send smaller records")
        if partition is not None:
            p = partition
            if p < 0 or p >= n:
                from pystream.errors import UnknownTopicOrPartitionError
                raise UnknownTopicOrPartitionError(
                    f"topic {t.name!r} has partitions 0..{n - 1}, not {partition}")
            return self._append(t, p, ts, kp, klen, vp, vlen, hdrs, hcount, False)
        if key is not None:
            # BuiltInPartitioner.partitionForKey: toPositive(murmur2(key)) % numPartitions.
            p = (_murmur2(kp, klen) & 0x7fffffff) % n
            return self._append(t, p, ts, kp, klen, vp, vlen, hdrs, hcount, False)
        p = t.sticky if t.sticky >= 0 else t.pick(-1)
        result = self._append(t, p, ts, kp, klen, vp, vlen, hdrs, hcount, True)
        if result is None:
            # The sticky partition's batch is full: move on (KIP-480) and go there.
            p = t.pick(p)
            result = self._append(t, p, ts, kp, klen, vp, vlen, hdrs, hcount, False)
        return result

    cdef object _append(self, _Topic t, int32_t p, int64_t ts, const unsigned char* kp,
                        Py_ssize_t klen, const unsigned char* vp, Py_ssize_t vlen, bytes hdrs,
                        int32_t hcount, bint abort_if_full):
        cdef ProducerBatch batch
        cdef bint wake = False
        cdef int32_t index = -1
        cdef Py_ssize_t before
        cdef Py_ssize_t estimate = (16 + (klen if klen > 0 else 0) + (vlen if vlen > 0 else 0)
                                    + (PyBytes_GET_SIZE(hdrs) if hdrs is not None else 0))
        self._acquire()
        try:
            item = <object>PyList_GET_ITEM(t.open, p)
            batch = None if item is None else <ProducerBatch>item
            if batch is not None and batch._count and batch.size + estimate > self.batch_size:
                # Full: it is ready now; start another unless the caller moves on.
                batch.closed = True
                t.open[p] = None
                batch = None
                wake = True
            if batch is None and not (wake and abort_if_full):
                batch = ProducerBatch(t.name, p, _monotonic())
                t.open[p] = batch
                tp = (t.name, p)
                queue = self._queues.get(tp)
                if queue is None:
                    queue = self._queues[tp] = deque()
                queue.append(batch)
                self.incomplete.add(batch)
                if self.sender_idle:
                    self.sender_idle = False
                    wake = True
            if batch is not None:
                before = batch.size
                index = batch._append(ts, kp, klen, vp, vlen, hdrs, hcount)
                self.buffered += batch.size - before
        finally:
            self._release_lock()
        if wake:
            self.wakeup()
        return None if batch is None else _future(batch, index)

    def add_prebuilt(self, list batches):
        """Queue batches ``send_batch`` built (ready at once), after the open batch of
        their partition so records keep their send order."""
        cdef ProducerBatch batch
        cdef _Topic t
        self._acquire()
        try:
            for item in batches:
                batch = <ProducerBatch>item
                tp = (batch.topic, batch.partition)
                queue = self._queues.get(tp)
                if queue is None:
                    queue = self._queues[tp] = deque()
                t = self._topics.get(batch.topic)
                if t is not None and batch.partition < PyList_GET_SIZE(t.open):
                    open_batch = <object>PyList_GET_ITEM(t.open, batch.partition)
                    if open_batch is not None:
                        (<ProducerBatch>open_batch).closed = True
                        t.open[batch.partition] = None
                queue.append(batch)
                self.incomplete.add(batch)
                self.buffered += batch.size
            self.sender_idle = False
        finally:
            self._release_lock()
        self.wakeup()

    # ------------------------------------------------------------------ buffer memory

    def wait_for_space(self, double timeout) -> bool:
        """Block this (non-loop) thread until buffered bytes drop below ``buffer_memory``."""
        with self._space:
            self._space_waiters += 1
            try:
                return self._space.wait_for(lambda: self.buffered < self.buffer_memory, timeout)
            finally:
                self._space_waiters -= 1

    async def wait_for_space_async(self, double timeout) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.buffered >= self.buffer_memory:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            waiter = loop.create_future()
            self._aio_space_waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except (TimeoutError, asyncio.TimeoutError):
                return False
        return True

    cdef int _done(self, ProducerBatch batch) except -1:
        self._acquire()
        self.buffered -= batch.size
        self.incomplete.discard(batch)
        self._release_lock()
        if self.buffered < self.buffer_memory:
            if self._space_waiters:
                with self._space:
                    self._space.notify_all()
            if self._aio_space_waiters:
                waiters, self._aio_space_waiters = self._aio_space_waiters, []
                for w in waiters:
                    if not w.done():
                        w.set_result(None)
        return 0

    def complete(self, ProducerBatch batch, int64_t base_offset, int64_t log_append_time):
        self._done(batch)
        batch.complete(base_offset, log_append_time)

    def fail(self, ProducerBatch batch, error):
        self._done(batch)
        batch.fail(error)

    # ------------------------------------------------------------------ sender side

    def ready(self, double now):
        """``(partitions whose first batch may go now, when the next one will be ready)``."""
        cdef list ready = []
        cdef ProducerBatch batch
        cdef double at, next_at = -1
        cdef bint send_all
        self._acquire()
        try:
            send_all = self.flushing > 0 or self.closing
            for tp, queue in self._queues.items():
                batch = <ProducerBatch>queue[0]
                if batch.retry_at > now:
                    at = batch.retry_at
                elif batch.closed or send_all:
                    ready.append(tp)
                    continue
                else:
                    at = batch.created + self.linger
                    if at <= now:
                        ready.append(tp)
                        continue
                if next_at < 0 or at < next_at:
                    next_at = at
            if not ready and next_at < 0:
                self.sender_idle = True
        finally:
            self._release_lock()
        return ready, (None if next_at < 0 else next_at)

    def drain(self, list tps, Py_ssize_t max_request_size, double now):
        """Take the first ready batch of each partition in ``tps``, up to ``max_request_size``."""
        cdef list out = []
        cdef Py_ssize_t total = 0
        cdef ProducerBatch batch
        cdef bint send_all
        cdef _Topic t
        self._acquire()
        try:
            send_all = self.flushing > 0 or self.closing
            for tp in tps:
                queue = self._queues.get(tp)
                if not queue:
                    continue
                batch = <ProducerBatch>queue[0]
                if batch.retry_at > now:
                    continue
                if not (batch.closed or send_all or batch.created + self.linger <= now):
                    continue  # still filling
                if out and total + batch.size > max_request_size:
                    break
                queue.popleft()
                if not queue:
                    del self._queues[tp]
                t = self._topics.get(batch.topic)
                if (t is not None and batch.partition < PyList_GET_SIZE(t.open)
                        and <object>PyList_GET_ITEM(t.open, batch.partition) is batch):
                    t.open[batch.partition] = None
                batch.closed = True
                out.append(batch)
                total += batch.size
        finally:
            self._release_lock()
        return out

    def reenqueue(self, ProducerBatch batch, double backoff):
        """Put a batch that failed with a retriable error back at the head of its queue.

        Batches with a sequence number go back in sequence order (Java's
        ``insertInSequenceOrder``): several in flight that fail together return
        in the order they were first sent, before any batch not sent yet.
        """
        cdef Py_ssize_t i = 0
        cdef ProducerBatch other
        self._acquire()
        try:
            batch.attempts += 1
            batch.retry_at = _monotonic() + backoff
            tp = (batch.topic, batch.partition)
            queue = self._queues.get(tp)
            if queue is None:
                queue = self._queues[tp] = deque()
            if batch.base_sequence >= 0:
                for item in queue:
                    other = <ProducerBatch>item
                    if other.base_sequence < 0 or other.base_sequence > batch.base_sequence:
                        break
                    i += 1
            queue.insert(i, batch)
            self.sender_idle = False
        finally:
            self._release_lock()

    def head(self, tuple tp):
        """The first queued batch of a partition, or None."""
        self._acquire()
        try:
            queue = self._queues.get(tp)
            return queue[0] if queue else None
        finally:
            self._release_lock()

    def queued_partitions(self):
        """The partitions with a batch queued (open or ready)."""
        self._acquire()
        try:
            return list(self._queues)
        finally:
            self._release_lock()

    def queued(self):
        """Every queued batch (not in flight), in queue order per partition."""
        self._acquire()
        try:
            return [b for q in self._queues.values() for b in q]
        finally:
            self._release_lock()

    def expired(self, double now):
        """Queued batches older than ``delivery_timeout_ms`` (taken out of the queues)."""
        cdef list out = []
        cdef double limit = now - self.delivery_timeout
        cdef _Topic t
        self._acquire()
        try:
            for tp in list(self._queues):
                queue = self._queues[tp]
                while queue and (<ProducerBatch>queue[0]).created < limit:
                    batch = queue.popleft()
                    t = self._topics.get(tp[0])
                    if (t is not None and tp[1] < PyList_GET_SIZE(t.open)
                            and <object>PyList_GET_ITEM(t.open, tp[1]) is batch):
                        t.open[tp[1]] = None
                    out.append(batch)
                if not queue:
                    del self._queues[tp]
        finally:
            self._release_lock()
        return out

    def abort_all(self):
        """Take every queued batch out (closing without sending)."""
        cdef _Topic t
        self._acquire()
        try:
            out = [b for q in self._queues.values() for b in q]
            self._queues.clear()
            for t in self._topics.values():
                t.open = [None] * PyList_GET_SIZE(t.open)
        finally:
            self._release_lock()
        return out

    def begin_flush(self):
        """Count a flush in (every batch is ready meanwhile); the batches to wait for."""
        self._acquire()
        try:
            self.flushing += 1
            return list(self.incomplete)
        finally:
            self._release_lock()

    def end_flush(self):
        self._acquire()
        self.flushing -= 1
        self._release_lock()
