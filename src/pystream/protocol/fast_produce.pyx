# cython: language_level=3
"""Hand-written codecs for the produce hot path: request header, ProduceRequest, ProduceResponse.

A producer with ``linger.ms=0`` sends one request per record, so what a request
costs besides its records matters: the generated codecs spend ~25 us per
Produce request (header decode, body decode, response encode); these spend a
few.  Three codecs, each registered with ``register_fast_codec``:

* **RequestHeader** v1/v2 (every request, not only Produce): api key, version,
  correlation id, client id;
* **ProduceRequest** v3..v10, below;
* **ProduceResponse** v3..v10: written straight into the frame buffer.  Rare
  shapes (per-batch record errors, a current-leader or node-endpoints tag) go
  to the generated writer.

ProduceRequest decoding:

The generated decoder builds the same objects through a dozen Python-level
``Reader`` calls per partition; this one walks the frame with C pointers and
only creates the objects the result is made of: the request, one struct per
topic and per partition, the topic name, and one memoryview per record set.
Record sets stay zero-copy slices of the reader's buffer (the broker's private,
writable copy of the frame), exactly as the generated decoder returns them, so
the produce path can patch offsets in place.

Only well-formed requests with empty tagged-field sections (what every client
sends) are decoded here.  Anything else -- truncation, bad lengths, invalid
UTF-8, tagged fields -- is handed to the generated decoder from the start of the
message, so errors (and their messages) are exactly the generated codec's.

Importing this module registers the codecs; the generated ones stay available
in :data:`GENERATED_READERS`, :data:`GENERATED_HEADER_READERS` and
:data:`GENERATED_WRITERS` (the references the tests compare against).
"""
from cpython.bytearray cimport PyByteArray_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int16_t, int32_t, int64_t, uint32_t

from pystream._core.endian cimport load_be16, load_be32
from pystream._core.frame_writer cimport FrameWriter

from pystream.protocol.messages import RequestHeader, register_fast_codec
from pystream.protocol.messages.produce import ProduceRequest, ProduceResponse

__all__ = [
    "FAST_VERSIONS",
    "GENERATED_HEADER_READERS",
    "GENERATED_READERS",
    "GENERATED_WRITERS",
    "read_produce_request",
]

FAST_VERSIONS = range(3, 11)
"""Produce versions the broker serves (the handler's range); all use this decoder."""

GENERATED_READERS = {v: ProduceRequest._READERS[v] for v in FAST_VERSIONS}
"""The generated decoder per version, captured before registration: the oracle."""

GENERATED_WRITERS = {v: ProduceResponse._WRITERS[v] for v in FAST_VERSIONS}
"""The generated ProduceResponse writer per version (the oracle, and the fallback)."""

GENERATED_HEADER_READERS = {v: RequestHeader._READERS[v] for v in (1, 2)}
"""The generated RequestHeader reader for header v1 and v2."""

_Request = ProduceRequest
_Topic = ProduceRequest.TopicProduceData
_Partition = ProduceRequest.PartitionProduceData
_new = object.__new__

cdef enum:
    INT16_MAX = 0x7FFF
    INT32_MAX = 0x7FFFFFFF


cdef class _Cursor:
    """Position over buf[0:end]; every read checks bounds and reports failure (-1)."""

    cdef const unsigned char* buf
    cdef Py_ssize_t pos
    cdef Py_ssize_t end

    cdef inline bint has(self, Py_ssize_t n) noexcept:
        return n >= 0 and n <= self.end - self.pos

    cdef inline int int16(self, int16_t* out) noexcept:
        if not self.has(2):
            return -1
        out[0] = <int16_t>load_be16(self.buf + self.pos)
        self.pos += 2
        return 0

    cdef inline int int32(self, int32_t* out) noexcept:
        if not self.has(4):
            return -1
        out[0] = <int32_t>load_be32(self.buf + self.pos)
        self.pos += 4
        return 0

    cdef inline int uvarint32(self, uint32_t* out) noexcept:
        # As Reader.uvarint: at most 5 bytes and the value must fit 32 bits.
        cdef uint32_t value = 0
        cdef unsigned int shift = 0
        cdef unsigned char b
        cdef Py_ssize_t p = self.pos
        while p < self.end and shift <= 28:
            b = self.buf[p]
            p += 1
            if shift == 28 and b > 0x0F:
                return -1          # more than 32 bits, or a 6th byte would follow
            value |= <uint32_t>(b & 0x7F) << shift
            if b < 0x80:
                out[0] = value
                self.pos = p
                return 0
            shift += 7
        return -1

    cdef inline int compact_length(self, int32_t* out) noexcept:
        """N+1 as an unsigned varint; writes -1 for null (0)."""
        cdef uint32_t u
        if self.uvarint32(&u) < 0:
            return -1
        if u == 0:
            out[0] = -1
        elif u - 1 > INT32_MAX:
            return -1
        else:
            out[0] = <int32_t>(u - 1)
        return 0

    cdef inline int empty_tags(self) noexcept:
        """An empty tagged-field section; anything else goes to the generated decoder."""
        if self.pos < self.end and self.buf[self.pos] == 0:
            self.pos += 1
            return 0
        return -1


class _Fallback(Exception):
    """Not decodable here; the generated decoder will decide (and name the error)."""


cdef object _text(_Cursor c, Py_ssize_t n):
    # Strict UTF-8 as Reader._text; a decode error means "let the generated one report it".
    try:
        s = PyUnicode_DecodeUTF8(<const char*>c.buf + c.pos, n, NULL)
    except UnicodeDecodeError:
        raise _Fallback from None
    c.pos += n
    return s


cdef object _string(_Cursor c, bint flexible, bint nullable):
    cdef int16_t n16
    cdef int32_t n
    if flexible:
        if c.compact_length(&n) < 0:
            raise _Fallback
        if n > INT16_MAX:
            raise _Fallback
    else:
        if c.int16(&n16) < 0:
            raise _Fallback
        n = n16
    if n < 0:
        if n == -1 and nullable:
            return None
        raise _Fallback
    if not c.has(n):
        raise _Fallback
    return _text(c, n)


cdef inline int32_t _count(_Cursor c, bint flexible, Py_ssize_t min_size) except? -2:
    """A non-nullable array count whose elements could fit (Reader.length's rule)."""
    cdef int32_t n
    if flexible:
        if c.compact_length(&n) < 0:
            raise _Fallback
    elif c.int32(&n) < 0:
        raise _Fallback
    if n < 0 or <int64_t>n * min_size > c.end - c.pos:
        raise _Fallback
    return n


cdef object _decode(object reader, bint flexible):
    cdef const unsigned char[::1] view = reader.buf
    cdef _Cursor c = _Cursor.__new__(_Cursor)
    cdef int16_t acks
    cdef int32_t timeout_ms, n_topics, n_parts, index, n
    cdef int32_t t, i
    cdef object buf = reader.buf
    c.buf = &view[0] if view.shape[0] else NULL
    c.pos = reader.pos
    c.end = reader.end

    request = _new(_Request)
    request.transactional_id = _string(c, flexible, True)
    if c.int16(&acks) < 0 or c.int32(&timeout_ms) < 0:
        raise _Fallback
    request.acks = acks
    request.timeout_ms = timeout_ms
    # Smallest topic / partition on the wire, as the generated Reader.length checks.
    n_topics = _count(c, flexible, 3 if flexible else 6)
    topics = []
    for t in range(n_topics):
        topic = _new(_Topic)
        topic.name = _string(c, flexible, False)
        n_parts = _count(c, flexible, 6 if flexible else 8)
        partitions = []
        for i in range(n_parts):
            if c.int32(&index) < 0:
                raise _Fallback
            if flexible:
                if c.compact_length(&n) < 0:
                    raise _Fallback
            elif c.int32(&n) < 0:
                raise _Fallback
            partition = _new(_Partition)
            partition.index = index
            if n == -1:
                partition.records = None
            elif n < 0 or not c.has(n):
                raise _Fallback
            else:
                partition.records = buf[c.pos : c.pos + n]
                c.pos += n
            if flexible and c.empty_tags() < 0:
                raise _Fallback
            partitions.append(partition)
        topic.partition_data = partitions
        if flexible and c.empty_tags() < 0:
            raise _Fallback
        topics.append(topic)
    request.topic_data = topics
    if flexible and c.empty_tags() < 0:
        raise _Fallback
    reader.pos = c.pos
    return request


def _read_v3_8(reader):
    start = reader.pos
    try:
        return _decode(reader, False)
    except _Fallback:
        reader.pos = start
        return GENERATED_READERS[3](reader)


def _read_v9_10(reader):
    start = reader.pos
    try:
        return _decode(reader, True)
    except _Fallback:
        reader.pos = start
        return GENERATED_READERS[9](reader)


def read_produce_request(reader, int version):
    """Decode a ProduceRequest at ``version`` (3..10) from a ``Reader``; leave it after the message."""
    if version < 3 or version > 10:
        raise ValueError(f"the fast Produce decoder serves v3..v10, not v{version}")
    return _read_v9_10(reader) if version >= 9 else _read_v3_8(reader)


# ---------------------------------------------------------------------- RequestHeader

_Header = RequestHeader


cdef object _decode_header(object reader, bint flexible):
    cdef const unsigned char[::1] view = reader.buf
    cdef _Cursor c = _Cursor.__new__(_Cursor)
    cdef int16_t api_key, api_version
    cdef int32_t correlation_id
    c.buf = &view[0] if view.shape[0] else NULL
    c.pos = reader.pos
    c.end = reader.end
    if c.int16(&api_key) < 0 or c.int16(&api_version) < 0 or c.int32(&correlation_id) < 0:
        raise _Fallback
    header = _new(_Header)
    header.request_api_key = api_key
    header.request_api_version = api_version
    header.correlation_id = correlation_id
    header.client_id = _string(c, False, True)  # int16-length even in header v2
    if flexible and c.empty_tags() < 0:
        raise _Fallback
    reader.pos = c.pos
    return header


def _read_header_v1(reader):
    start = reader.pos
    try:
        return _decode_header(reader, False)
    except _Fallback:
        reader.pos = start
        return GENERATED_HEADER_READERS[1](reader)


def _read_header_v2(reader):
    start = reader.pos
    try:
        return _decode_header(reader, True)
    except _Fallback:
        reader.pos = start
        return GENERATED_HEADER_READERS[2](reader)


# -------------------------------------------------------------------- ProduceResponse

cdef bint _needs_generated(object response, int version):
    """Shapes the fast writer leaves to the generated one (rare: errors per batch, tags)."""
    cdef list topics = response.responses
    cdef Py_ssize_t t, i
    if version >= 10 and response.node_endpoints:
        return True
    for t in range(PyList_GET_SIZE(topics)):
        topic = <object>PyList_GET_ITEM(topics, t)
        if topic.name is None:
            return True  # not nullable: let the generated writer raise
        for partition in topic.partition_responses:
            if version >= 8 and partition.record_errors:
                return True
            if version >= 10:
                leader = partition.current_leader
                if leader.leader_id != -1 or leader.leader_epoch != -1:
                    return True
    return False


cdef int _write_response(object writer, object response, int version) except -1:
    cdef FrameWriter out = FrameWriter.__new__(FrameWriter)
    cdef bint flexible = version >= 9
    cdef list topics = response.responses
    cdef list partitions
    cdef Py_ssize_t t, i
    if not isinstance(writer, bytearray):
        raise TypeError(f"a ProduceResponse is written to a bytearray, not {type(writer)}")
    out.buf = writer
    out.used = PyByteArray_GET_SIZE(writer)
    out.reserve(5)
    out.array_length(PyList_GET_SIZE(topics), flexible)
    for t in range(PyList_GET_SIZE(topics)):
        topic = <object>PyList_GET_ITEM(topics, t)
        out.string(topic.name, flexible)
        partitions = topic.partition_responses
        out.reserve(5)
        out.array_length(PyList_GET_SIZE(partitions), flexible)
        for i in range(PyList_GET_SIZE(partitions)):
            p = <object>PyList_GET_ITEM(partitions, i)
            out.reserve(38)  # the fixed fields and record_errors' length
            out.put32(p.index)
            out.put16(p.error_code)
            out.put64(p.base_offset)
            out.put64(p.log_append_time_ms)
            if version >= 5:
                out.put64(p.log_start_offset)
            if version >= 8:
                out.array_length(0, flexible)  # record_errors: none (else the generated writer)
                out.string(p.error_message, flexible)
            if flexible:
                out.reserve(1)
                out.put8(0)  # partition: no tagged fields
        if flexible:
            out.reserve(1)
            out.put8(0)  # topic: no tagged fields
    out.reserve(5)
    out.put32(response.throttle_time_ms)
    if flexible:
        out.put8(0)  # no tagged fields
    out.trim()
    return 0


def _write_produce_response(int version):
    """The fast writer for one version (register_fast_codec's ``write(writer, obj)``)."""
    generated = GENERATED_WRITERS[version]

    def write(writer, response):
        if _needs_generated(response, version):
            generated(writer, response)
        else:
            _write_response(writer, response, version)

    write.__qualname__ = write.__name__ = f"write_produce_response_v{version}"
    return write


register_fast_codec(RequestHeader, [1], read=_read_header_v1)
register_fast_codec(RequestHeader, [2], read=_read_header_v2)
register_fast_codec(ProduceRequest, range(3, 9), read=_read_v3_8)
register_fast_codec(ProduceRequest, range(9, 11), read=_read_v9_10)
for _v in FAST_VERSIONS:
    register_fast_codec(ProduceResponse, [_v], write=_write_produce_response(_v))
