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

In a fetch session (``plan.session_id``) the plan's partitions are the session's,
kept between fetches: the encoder records in each partition what the fetcher is
told (``sent_*``) and drops its read result (which holds the segment open).  An
incremental plan (``plan.incremental``) is answered with only the partitions that
have something to say, as Kafka's ``CachedPartition.maybeUpdateResponseData``
decides: records, an error, or a high watermark, last stable offset or log start
offset other than the one last sent.  The others cost a few C comparisons here.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, int64_t, uint32_t

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



cdef inline Py_ssize_t _records_size(object data):
    if data is None:
        return 0
    records = data.records
    return 0 if records is None else records[2]


cdef bint _must_respond(object p):
    """Kafka's maybeUpdateResponseData: does an incremental answer include ``p``?"""
    if p.error_code != 0 or _records_size(p.data) > 0:
        return True
    return (
        <int64_t>p.high_watermark != <int64_t>p.sent_high_watermark
        or <int64_t>p.log_start_offset != <int64_t>p.sent_log_start_offset
        or <int64_t>p.last_stable_offset != <int64_t>p.sent_last_stable_offset
    )


cdef int _sent(object p) except -1:
    """Remember what the fetcher was told; an error clears it, so the partition is sent
    again (with its offsets) once the error is gone."""
    if p.error_code != 0:
        p.sent_high_watermark = -1
    else:
        p.sent_high_watermark = p.high_watermark
    p.sent_last_stable_offset = p.last_stable_offset
    p.sent_log_start_offset = p.log_start_offset
    return 0


cdef unsigned char* _select(list topics, Py_ssize_t* n_selected_topics) except? NULL:
    """One flag per partition of the plan (in order): 1 if the incremental answer has it."""
    cdef Py_ssize_t t, i, n = 0, k = 0, count, n_parts
    cdef unsigned char* flags
    cdef list partitions
    for t in range(PyList_GET_SIZE(topics)):
        n += PyList_GET_SIZE((<object>PyList_GET_ITEM(topics, t)).partitions)
    flags = <unsigned char*>PyMem_Malloc(n + 1)
    if flags == NULL:
        raise MemoryError()
    n_selected_topics[0] = 0
    for t in range(PyList_GET_SIZE(topics)):
        partitions = (<object>PyList_GET_ITEM(topics, t)).partitions
        n_parts = PyList_GET_SIZE(partitions)
        count = 0
        for i in range(n_parts):
            flags[k + i] = _must_respond(<object>PyList_GET_ITEM(partitions, i))
            count += flags[k + i]
        if count:
            n_selected_topics[0] += 1
        k += n_parts
    return flags


cdef int _rotate(object topic, list partitions, unsigned char* flags) except -1:
    """Partitions that sent records (flag 2) go to the end of the session's topic for the
    next fetch (Kafka's rotation: a busy partition does not keep others out of a full
    response).  This response keeps the order it was written in."""
    cdef Py_ssize_t i, n = PyList_GET_SIZE(partitions)
    cdef list quiet = [], busy = []
    for i in range(n):
        (busy if flags[i] == 2 else quiet).append(<object>PyList_GET_ITEM(partitions, i))
    topic.partitions = quiet + busy
    return 0


cdef Py_ssize_t _count(unsigned char* flags, Py_ssize_t start, Py_ssize_t n):
    cdef Py_ssize_t i, c = 0
    for i in range(start, start + n):
        c += flags[i]
    return c


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
    cdef Py_ssize_t t, i, n_topics, n_parts, k = 0, n_written
    cdef list topics, partitions
    cdef bytes topic_id
    cdef unsigned char* flags = NULL
    cdef int32_t session_id = getattr(plan, "session_id", 0)
    cdef bint in_session = session_id != 0
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
        out.put32(session_id)
    topics = plan.topics
    n_topics = PyList_GET_SIZE(topics)
    if getattr(plan, "incremental", False):
        flags = _select(topics, &n_written)
    else:
        n_written = n_topics
    try:
        out.array_length(n_written, flexible)
        for t in range(n_topics):
            topic = <object>PyList_GET_ITEM(topics, t)
            n_parts = PyList_GET_SIZE(topic.partitions)
            if flags != NULL:
                n_written = _count(flags, k, n_parts)
                if n_written == 0:
                    k += n_parts
                    continue
            else:
                n_written = n_parts
            _topic(out, topic, version, flexible, sendfile, sendfile_min, views,
                   flags, k, n_written, in_session)
            k += n_parts
    finally:
        PyMem_Free(flags)
    if flexible:
        _tag_section(out, plan, version)
    return out.finish()


cdef int _topic(_Frame out, object topic, int version, bint flexible, bint sendfile,
                Py_ssize_t sendfile_min, bint views, unsigned char* flags, Py_ssize_t k,
                Py_ssize_t n_written, bint in_session) except -1:
    """One topic of the response: its ``n_written`` partitions (those flagged, if ``flags``)."""
    cdef Py_ssize_t i, n_parts
    cdef list partitions
    cdef bytes topic_id
    cdef bint busy = False
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
    out.array_length(n_written, flexible)
    for i in range(n_parts):
        if flags != NULL and not flags[k + i]:
            continue
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
        if in_session:
            _sent(p)
            if p.data is not None:
                if flags != NULL and _records_size(p.data) > 0:
                    flags[k + i] = 2
                    busy = True
                p.data = None  # kept in the session, it would hold the segment open
                p.aborted_transactions = None
    if flexible:
        out.reserve(1)
        out.put8(0)          # topic: no tagged fields
    if busy:
        _rotate(topic, partitions, flags + k)
    return 0
