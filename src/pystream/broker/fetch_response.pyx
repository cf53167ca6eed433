# cython: language_level=3
"""Encode a FetchPlan into the chunks of one response frame, without copying records.

A Fetch response is mostly record sets, and those already sit in segment files
exactly as they go on the wire.  So the encoder writes everything *around* the
record sets (size prefix, header, topic and partition fields) into small byte
buffers and puts a :class:`~pystream.broker.network.FileChunk` where each record
set goes; the connection sends those with ``os.sendfile`` (zero copy).  The
size prefix counts the file regions too, so it is known before any byte is sent.

Where sendfile is impossible (TLS), or a record set is too small for the extra
syscalls to pay off (below ``SENDFILE_MIN_BYTES``), its bytes are copied from the
segment's mmap straight into the output buffer, and the view is released at
once: a live view would block log truncation, and an asyncio transport may hold
on to what it is given.

The bytes are identical to the generated codec's (``fetch.encode_reference``),
for every version the broker serves (4..16): the tests compare the two.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.stdint cimport int32_t, uint32_t

from pystream._core.endian cimport store_be32
from pystream._core.frame_writer cimport FrameWriter

from pystream.broker.network import FileChunk
from pystream.protocol.codec import Writer

__all__ = ["SENDFILE_MIN_BYTES", "encode_fetch_response"]

SENDFILE_MIN_BYTES = 64 * 1024
"""Record sets below this many bytes are copied instead of sent with sendfile.

A sendfile'd record set costs two extra syscalls (the bytes before it and
after it go out separately) and an extra packet; measured on loopback TCP
(bench/bench_broker_paths.py report), copying a record set from the mmap costs
the sender less CPU up to ~64 KiB and less wall time up to ~256 KiB, while
sendfile wins from ~1 MB.  Small fetches (tailing consumers: latency) copy;
bulk fetches (catch-up consumers: throughput) go zero-copy.
"""

cdef enum:
    INITIAL_CAPACITY = 256
    PARTITION_MAX = 64           # fixed fields + aborted + preferred + length + tags
    TOPIC_OVERHEAD = 32          # name/id length, partition count, tags

_new_chunk = tuple.__new__      # FileChunk(...) without the namedtuple's Python __new__


cdef class _Frame(FrameWriter):
    """The chunks of one frame: a growing bytearray, cut wherever a file region goes."""

    cdef list chunks
    cdef Py_ssize_t total        # bytes in finished chunks and file regions

    cdef int cut(self) except -1:
        """Finish the current buffer as a chunk and start a new one."""
        self.trim()
        self.chunks.append(self.buf)
        self.total += self.used
        self.buf = bytearray(INITIAL_CAPACITY)
        self.used = 0
        return 0

    cdef list finish(self):
        cdef Py_ssize_t size
        self.cut()
        size = self.total - 4
        if size > 0x7FFFFFFF:
            raise ValueError(f"fetch response of {size} bytes exceeds the int32 frame size")
        store_be32(<unsigned char*>PyByteArray_AS_STRING(self.chunks[0]), <uint32_t>size)
        return self.chunks


cdef int _records(_Frame out, object data, bint flexible, bint sendfile,
                  Py_ssize_t sendfile_min, bint views) except -1:
    """The records field: its length, then a file region, a view of the segment's mmap
    (``views``: TLS, which encrypts from memory), or the bytes themselves."""
    cdef Py_ssize_t n = 0
    cdef Py_buffer view
    records = None
    if data is not None:
        records = data.records
        if records is not None:
            n = records[2]
    # Never null: an empty record set is written as zero bytes, like encode_reference.
    out.reserve(5)
    out.array_length(n, flexible)
    if n == 0:
        return 0
    if sendfile and n >= sendfile_min:
        out.cut()
        # records[3], the segment's FileHandle, keeps the descriptor open until the chunk
        # is sent, even if retention deletes the segment meanwhile.
        out.chunks.append(_new_chunk(FileChunk, (records[0], records[1], n, records[3])))
        out.total += n
        return 0
    mv = data.view()
    if views and n >= sendfile_min:
        # The view holds the segment's mapping (valid after the segment is deleted); the
        # connection releases it once the TLS layer has encrypted it, at once.
        out.cut()
        out.chunks.append(mv)
        out.total += n
        return 0
    try:
        PyObject_GetBuffer(mv, &view, PyBUF_SIMPLE)
        try:
            if view.len != n:
                raise ValueError(f"segment view of {view.len} bytes for a {n}-byte record set")
            out.put_bytes(<const unsigned char*>view.buf, n)
        finally:
            PyBuffer_Release(&view)
    finally:
        mv.release()
    return 0


cdef int _aborted(_Frame out, object aborted, bint flexible) except -1:
    """aborted_transactions: null unless read_committed, else (producer id, first offset)s."""
    cdef Py_ssize_t k, n
    if aborted is None:
        if flexible:
            out.put8(0)
        else:
            out.put32(-1)
        return 0
    n = len(aborted)
    out.reserve(5 + 17 * n + PARTITION_MAX)  # and room for the partition's remaining fields
    out.array_length(n, flexible)
    for k in range(n):
        txn = aborted[k]
        out.put64(txn.producer_id)
        out.put64(txn.first_offset)
        if flexible:
            out.put8(0)  # no tagged fields
    return 0


cdef int _tag_section(_Frame out, object plan, int version) except -1:
    """The response's tagged fields: NodeEndpoints (tag 0, v16+) when the plan has any."""
    endpoints = getattr(plan, "node_endpoints", None) if version >= 16 else None
    if not endpoints:
        out.reserve(1)
        out.put8(0)
        return 0
    value = Writer()
    value.compact_length(endpoints)
    for endpoint in endpoints:
        endpoint.write(value, version)
    section = Writer()
    section.tag_section([(0, value)])
    out.put_bytes(<const unsigned char*>PyByteArray_AS_STRING(section), len(section))
    return 0


def encode_fetch_response(plan, int version, int32_t correlation_id, bint sendfile=False,
                          sendfile_min_bytes=None, bint views=False):
    """The response frame for ``plan`` as chunks: bytes, and FileChunks if ``sendfile``.

    ``version`` is the request's (4..16); ``sendfile`` says whether the
    connection can send file regions (plaintext).  ``views`` (TLS connections: no
    sendfile) puts large record sets in as memoryviews over the segment's mmap instead.
    Without either every record set is copied into the frame, which is then a single
    bytearray.
    """
    cdef _Frame out = _Frame.__new__(_Frame)
    cdef bint flexible = version >= 12
    cdef Py_ssize_t sendfile_min = (
        SENDFILE_MIN_BYTES if sendfile_min_bytes is None else sendfile_min_bytes
    )
    cdef Py_ssize_t t, i, n_topics, n_parts
    cdef list topics, partitions
    cdef bytes topic_id
    if version < 4 or version > 17:
        raise ValueError(f"the fetch encoder serves v4..v17, not v{version}")
    out.chunks = []
    out.buf = bytearray(INITIAL_CAPACITY)
    out.used = 0
    out.total = 0

    out.used = 4                 # the size prefix, filled in by finish()
    out.put32(correlation_id)
    if flexible:
        out.put8(0)              # response header v1: no tagged fields
    out.put32(0)                 # throttle_time_ms
    if version >= 7:
        out.put16(plan.error_code)
        out.put32(0)             # session_id: sessions are not kept
    topics = plan.topics
    n_topics = PyList_GET_SIZE(topics)
    out.array_length(n_topics, flexible)

    for t in range(n_topics):
        topic = <object>PyList_GET_ITEM(topics, t)
        if version >= 13:
            topic_id = topic.topic_id.bytes
            out.put_bytes(<const unsigned char*>PyBytes_AS_STRING(topic_id), 16)
        else:
            name = topic.name
            if name is None:
                raise TypeError("a fetch response topic needs a name")  # never written as null
            out.string(name, flexible)
        partitions = topic.partitions
        n_parts = PyList_GET_SIZE(partitions)
        out.reserve(TOPIC_OVERHEAD)
        out.array_length(n_parts, flexible)
        for i in range(n_parts):
            p = <object>PyList_GET_ITEM(partitions, i)
            out.reserve(PARTITION_MAX)
            out.put32(p.partition)
            out.put16(p.error_code)
            out.put64(p.high_watermark)
            out.put64(p.last_stable_offset)
            if version >= 5:
                out.put64(p.log_start_offset)
            _aborted(out, p.aborted_transactions, flexible)
            if version >= 11:
                out.put32(-1)    # preferred_read_replica: none
            _records(out, p.data, flexible, sendfile, sendfile_min, views)
            if flexible:
                out.reserve(1)
                out.put8(0)      # partition: no tagged fields
        if flexible:
            out.reserve(1)
            out.put8(0)          # topic: no tagged fields
    if flexible:
        _tag_section(out, plan, version)
    return out.finish()
