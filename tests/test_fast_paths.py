"""The broker's fast paths against their references (uvloop's lesson: the reference is the oracle).

* Produce: the Cython decoder (``protocol/fast_produce.pyx``) must return what the
  generated ``ProduceRequest`` decoder returns, for every served version (3..10),
  and fail exactly as it does on malformed input.
* Fetch: ``encode_fetch_response`` must produce the bytes of ``encode_reference``
  for every served version (4..16), once its file regions are read back.
* End to end: real clients consume what a real broker sent with sendfile.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from log_helpers import make_batch
from protocol_samples import strategy

from pystream._core.segment import FileRange
from pystream.broker import fetch_response
from pystream.broker.apis import produce as produce_handler  # noqa: F401  (registers the decoder)
from pystream.broker.apis.fetch import (
    FetchPlan,
    PartitionFetch,
    TopicFetch,
    encode_reference,
    must_respond,
)
from pystream.broker.fetch_response import encode_fetch_response
from pystream.broker.network import Chunk, FileChunk
from pystream.client._fast import decode_fetch_response
from pystream.config import LogConfig
from pystream.protocol import (
    ProtocolDecodeError,
    Reader,
    RequestHeader,
    Writer,
    encode_response_frame,
    fast_produce,
)
from pystream.protocol.headers import decode_response
from pystream.protocol.messages.fetch import FetchResponse
from pystream.protocol.messages.produce import ProduceRequest, ProduceResponse
from pystream.storage.log import FetchDataInfo, Log

PRODUCE_VERSIONS = range(3, 11)
FETCH_VERSIONS = range(4, 17)
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def test_compiled_fast_paths_are_loaded() -> None:
    """Fail loudly if the extensions were not built (no silent fallback to Python)."""
    assert fast_produce.__file__.endswith(".so")
    assert fetch_response.__file__.endswith(".so")


# ---------------------------------------------------------------------------------- produce


def test_fast_decoder_is_registered_for_every_served_version() -> None:
    for v in PRODUCE_VERSIONS:
        assert ProduceRequest._READERS[v] is not fast_produce.GENERATED_READERS[v]
        assert ProduceRequest._READERS[v].__module__ == "pystream.protocol.fast_produce"


def _decode_both(frame: bytearray, version: int) -> tuple[Any, Any, int, int]:
    fast_reader, ref_reader = Reader(frame), Reader(bytearray(frame))
    fast = ProduceRequest.decode(fast_reader, version)
    ref = fast_produce.GENERATED_READERS[version](ref_reader)
    return fast, ref, fast_reader.pos, ref_reader.pos


@st.composite
def produce_requests(draw: st.DrawFn) -> tuple[int, ProduceRequest]:
    version = draw(st.sampled_from(PRODUCE_VERSIONS))
    request = draw(strategy(ProduceRequest, ProduceRequest, version))
    # More realistic shapes too: many partitions, real batches, long and non-ASCII names.
    if draw(st.booleans()):
        name = draw(st.text(min_size=1, max_size=200))
        parts = [
            ProduceRequest.PartitionProduceData(
                index=i, records=draw(st.none() | st.binary(max_size=300))
            )
            for i in range(draw(st.integers(0, 40)))
        ]
        request.topic_data.append(ProduceRequest.TopicProduceData(name=name, partition_data=parts))
    return version, request


@SETTINGS
@given(produce_requests(), st.binary(max_size=8))
def test_fast_produce_decoder_equals_generated(
    case: tuple[int, ProduceRequest], trailer: bytes
) -> None:
    version, request = case
    frame = bytearray(request.encode(version)) + trailer  # the reader must stop at the end
    fast, ref, fast_pos, ref_pos = _decode_both(frame, version)
    assert fast == ref == request
    assert fast_pos == ref_pos == len(frame) - len(trailer)


def test_fast_produce_records_are_zero_copy_slices_of_the_frame() -> None:
    request = ProduceRequest(
        acks=1,
        timeout_ms=30_000,
        topic_data=[
            ProduceRequest.TopicProduceData(
                name="t",
                partition_data=[ProduceRequest.PartitionProduceData(index=0, records=b"abcdef")],
            )
        ],
    )
    for version in PRODUCE_VERSIONS:
        frame = bytearray(request.encode(version))
        records = (
            ProduceRequest.decode(Reader(frame), version).topic_data[0].partition_data[0].records
        )
        assert isinstance(records, memoryview) and not records.readonly
        records[0] = ord("X")  # the produce path patches batches in place
        assert b"Xbcdef" in frame


@pytest.mark.parametrize("version", PRODUCE_VERSIONS)
def test_fast_produce_truncated_frames_fail_like_generated(version: int) -> None:
    request = ProduceRequest(
        transactional_id="txn-é",
        acks=-1,
        timeout_ms=1,
        topic_data=[
            ProduceRequest.TopicProduceData(
                name="topic",
                partition_data=[
                    ProduceRequest.PartitionProduceData(index=0, records=b"x" * 20),
                    ProduceRequest.PartitionProduceData(index=1, records=None),
                ],
            )
        ],
    )
    frame = request.encode(version)
    for cut in range(len(frame)):
        _assert_same_outcome(bytearray(frame[:cut]), version)


def _assert_same_outcome(frame: bytearray, version: int) -> None:
    try:
        ref = fast_produce.GENERATED_READERS[version](Reader(bytearray(frame)))
    except ProtocolDecodeError as exc:
        with pytest.raises(ProtocolDecodeError) as fast_exc:
            ProduceRequest.decode(Reader(frame), version)
        assert str(fast_exc.value) == str(exc)
    else:
        assert ProduceRequest.decode(Reader(frame), version) == ref


@SETTINGS
@given(produce_requests(), st.data())
def test_fast_produce_mutated_frames_behave_like_generated(
    case: tuple[int, ProduceRequest], data: st.DataObject
) -> None:
    version, request = case
    frame = bytearray(request.encode(version))
    assume(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(frame) - 1))
        frame[at] = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF, 0xC3, 0xED]))
    _assert_same_outcome(frame, version)


@pytest.mark.parametrize("version", [9, 10])
def test_fast_produce_tagged_fields_are_read_like_generated(version: int) -> None:
    # Unknown tags at every level: acks 1, timeout 5, one topic "t", one partition, null records.
    tag = b"\x01\x05\x02ab"  # one tagged field: tag 5, two bytes
    frame = bytearray(
        b"\x00"  # transactional id: null
        + b"\x00\x01\x00\x00\x00\x05"
        + b"\x02\x02t"  # one topic, name "t"
        + b"\x02\x00\x00\x00\x07\x00"  # one partition, index 7, records null
        + tag  # partition tags
        + tag  # topic tags
        + tag  # request tags
    )
    fast, ref, fast_pos, ref_pos = _decode_both(frame, version)
    assert fast == ref
    assert fast.topic_data[0].partition_data[0].index == 7
    assert fast_pos == ref_pos == len(frame)


@SETTINGS
@given(st.data(), st.sampled_from(PRODUCE_VERSIONS))
def test_fast_produce_response_writer_equals_generated(data: st.DataObject, version: int) -> None:
    response = data.draw(strategy(ProduceResponse, ProduceResponse, version))
    if data.draw(st.booleans()):  # the common shape: no per-batch errors, default tags
        response.node_endpoints = []
        for topic in response.responses:
            for partition in topic.partition_responses:
                partition.record_errors = []
                partition.current_leader = ProduceResponse.LeaderIdAndEpoch()
    prefix = data.draw(st.binary(max_size=5))  # writers append to a frame already begun
    fast, ref = Writer(prefix), Writer(prefix)
    ProduceResponse._WRITERS[version](fast, response)
    fast_produce.GENERATED_WRITERS[version](ref, response)
    assert bytes(fast) == bytes(ref)
    assert ProduceResponse.decode(bytes(fast)[len(prefix) :], version) is not None


def test_fast_produce_response_writer_is_registered() -> None:
    for v in PRODUCE_VERSIONS:
        assert ProduceResponse._WRITERS[v] is not fast_produce.GENERATED_WRITERS[v]
    for v in (1, 2):
        assert RequestHeader._READERS[v] is not fast_produce.GENERATED_HEADER_READERS[v]


@SETTINGS
@given(st.data(), st.sampled_from([1, 2]), st.binary(max_size=4))
def test_fast_request_header_reader_equals_generated(
    data: st.DataObject, version: int, body: bytes
) -> None:
    header = data.draw(strategy(RequestHeader, RequestHeader, version))
    frame = bytearray(header.encode(version)) + body
    fast_reader, ref_reader = Reader(frame), Reader(bytearray(frame))
    assert RequestHeader.decode(fast_reader, version) == (
        fast_produce.GENERATED_HEADER_READERS[version](ref_reader)
    )
    assert fast_reader.pos == ref_reader.pos
    for cut in range(len(frame) - len(body)):  # truncated: the same error
        truncated = frame[:cut]
        with pytest.raises(ProtocolDecodeError) as ref_error:
            fast_produce.GENERATED_HEADER_READERS[version](Reader(bytearray(truncated)))
        with pytest.raises(ProtocolDecodeError) as fast_error:
            RequestHeader.decode(Reader(truncated), version)
        assert str(fast_error.value) == str(ref_error.value)


def test_fast_request_header_with_tags_falls_back() -> None:
    frame = bytearray(b"\x00\x00\x00\x0a\x00\x00\x00\x07\xff\xff" + b"\x01\x03\x01z")
    fast_reader, ref_reader = Reader(frame), Reader(bytearray(frame))
    fast = RequestHeader.decode(fast_reader, 2)
    assert fast == fast_produce.GENERATED_HEADER_READERS[2](ref_reader)
    assert fast.client_id is None and fast_reader.pos == ref_reader.pos == len(frame)


# ------------------------------------------------------------------------------------ fetch


class _FakeSegment:
    """Stands in for LogSegment.view over a scratch file: same bytes as the fd holds."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def view(self, position: int, length: int) -> memoryview:
        return memoryview(self.data)[position : position + length]


@pytest.fixture(scope="module")
def scratch() -> Iterator[tuple[int, _FakeSegment]]:
    """A file of distinct bytes to cut record sets from."""
    data = os.urandom(1 << 16)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        yield f.fileno(), _FakeSegment(data)


def _resolve(chunks: Sequence[Chunk]) -> bytes:
    """The bytes a connection would send for these chunks."""
    out = bytearray()
    for chunk in chunks:
        if isinstance(chunk, FileChunk):
            out += os.pread(chunk.fd, chunk.length, chunk.position)
        else:
            out += chunk
    return bytes(out)


_I16 = st.integers(-(2**15), 2**15 - 1)
_I32 = st.integers(-(2**31), 2**31 - 1)
_I64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def _data(draw: st.DrawFn, fd: int, segment: _FakeSegment) -> FetchDataInfo | None:
    kind = draw(st.sampled_from(["none", "no-records", "records", "records", "records"]))
    if kind == "none":
        return None
    if kind == "no-records":
        return FetchDataInfo(0, None, -1)
    length = draw(st.integers(0, 3000) | st.sampled_from([1, 126, 127, 128, 16383, 16384]))
    position = draw(st.integers(0, len(segment.data) - length))
    records = FileRange(fd, position, length)
    return FetchDataInfo(0, records, 0, segment)  # type: ignore[arg-type]


_aborted_transactions = st.builds(
    FetchResponse.AbortedTransaction, producer_id=_I64, first_offset=_I64
)


@st.composite
def fetch_plans(draw: st.DrawFn, fd: int, segment: _FakeSegment) -> FetchPlan:
    topics = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.text(max_size=20) | st.text(min_size=120, max_size=250))
        partitions = [
            PartitionFetch(
                partition=draw(_I32),
                fetch_offset=draw(_I64),
                max_bytes=draw(_I32),
                current_leader_epoch=draw(_I32),
                error_code=draw(_I16 | st.just(0)),
                high_watermark=draw(_I64),
                last_stable_offset=draw(_I64),
                log_start_offset=draw(_I64),
                data=draw(_data(fd, segment)),
                aborted_transactions=draw(st.none() | st.lists(_aborted_transactions, max_size=3)),
            )
            for _ in range(draw(st.integers(0, 5) | st.just(130)))
        ]
        for p in partitions:
            # In a session: what was last sent, mostly the same as now (nothing to say).
            if draw(st.booleans()):
                p.sent_high_watermark = p.high_watermark
                p.sent_last_stable_offset = p.last_stable_offset
                p.sent_log_start_offset = p.log_start_offset
        topic_id = draw(st.uuids() | st.just(uuid.UUID(int=0)))
        topics.append(TopicFetch(name, topic_id, partitions, error_code=draw(_I16)))
    session_id = draw(st.just(0) | _I32)
    return FetchPlan(
        topics,
        max_bytes=draw(_I32),
        error_code=draw(_I16),
        session_id=session_id,
        incremental=session_id != 0 and draw(st.booleans()),
    )


def test_fetch_plan_fields_are_the_ones_the_encoder_knows() -> None:
    """A field added to the plan must be taught to fetch_response.pyx (and this test)."""
    assert [f.name for f in dataclasses.fields(FetchPlan)] == [
        "topics",
        "max_bytes",
        "error_code",
        "total_bytes",
        "has_error",
        "isolation_level",  # read by read_plan only
        "replica_id",  # read by read_plan only (followers read up to the log end)
        "session_id",
        "incremental",
        "watched",  # read by the fetch purgatory only
        "pending",  # read by read_plan only
        "reread",  # read by handle_fetch only
    ]
    assert [f.name for f in dataclasses.fields(TopicFetch)] == [
        "name",
        "topic_id",
        "partitions",
        "error_code",
    ]
    assert [f.name for f in dataclasses.fields(PartitionFetch)] == [
        "partition",
        "fetch_offset",
        "max_bytes",
        "current_leader_epoch",
        "error_code",
        "high_watermark",
        "last_stable_offset",
        "log_start_offset",
        "data",
        "aborted_transactions",
        "sent_high_watermark",
        "sent_last_stable_offset",
        "sent_log_start_offset",
    ]


@SETTINGS
@given(
    st.data(),
    st.sampled_from(FETCH_VERSIONS),
    _I32,
    st.sampled_from(["copy", "sendfile", "views"]),
    st.sampled_from([0, 200]),
)
def test_fetch_encoder_equals_reference(
    scratch: tuple[int, _FakeSegment],
    data: st.DataObject,
    version: int,
    correlation_id: int,
    mode: str,
    sendfile_min: int,
) -> None:
    plan = data.draw(fetch_plans(*scratch))
    expected = b"".join(encode_reference(plan, version, correlation_id))
    written = [
        (t, p) for t in plan.topics for p in t.partitions if not plan.incremental or must_respond(p)
    ]
    wanted = [p.data for _, p in written if p.data is not None and 0 < p.data.size >= sendfile_min]
    before = {
        id(p): (p.sent_high_watermark, p.sent_log_start_offset)
        for t in plan.topics
        for p in t.partitions
    }
    orders = {id(t): list(t.partitions) for t in plan.topics}
    busy = {id(p) for _, p in written if p.data is not None and p.data.size > 0}
    chunks = encode_fetch_response(
        plan, version, correlation_id, mode == "sendfile", sendfile_min, views=mode == "views"
    )
    assert _resolve(chunks) == expected
    if plan.session_id:
        # What each written partition's fetcher was told is remembered; its read is dropped.
        written_ids = {id(p) for _, p in written}
        for t in plan.topics:
            for p in t.partitions:
                if id(p) in written_ids:
                    hw = -1 if p.error_code else p.high_watermark
                    assert (p.sent_high_watermark, p.sent_log_start_offset) == (
                        hw,
                        p.log_start_offset,
                    )
                    assert p.data is None
                else:
                    assert (p.sent_high_watermark, p.sent_log_start_offset) == before[id(p)]
    if plan.incremental:
        # Partitions that sent records go to the end of their topic, in order.
        for t in plan.topics:
            old = orders[id(t)]
            expected_order = [p for p in old if id(p) not in busy] + [
                p for p in old if id(p) in busy
            ]
            assert [id(p) for p in t.partitions] == [id(p) for p in expected_order]
    file_chunks = [c for c in chunks if isinstance(c, FileChunk)]
    views = [c for c in chunks if isinstance(c, memoryview)]
    if mode == "copy":
        assert len(chunks) == 1 and not file_chunks  # one buffer, records copied in
    elif mode == "sendfile":
        # The whole range, its FileHandle too: the chunk keeps the descriptor open.
        assert [tuple(c) for c in file_chunks] == [tuple(d.records) for d in wanted]
    else:  # TLS: each large record set is a view of the segment, not a copy
        assert not file_chunks
        assert [bytes(v) for v in views] == [bytes(d.view()) for d in wanted]


@pytest.mark.parametrize("version", FETCH_VERSIONS)
def test_fetch_encoder_session_error_and_empty_plan(version: int) -> None:
    for plan in (FetchPlan([], 0), FetchPlan([], 10, error_code=70)):
        expected = b"".join(encode_reference(plan, version, 42))
        assert _resolve(encode_fetch_response(plan, version, 42, True)) == expected


def test_fetch_encoder_node_endpoints_tag_at_v16() -> None:
    endpoints = [
        FetchResponse.NodeEndpoint(node_id=1, host="broker-1", port=9092, rack=None),
        FetchResponse.NodeEndpoint(node_id=2, host="broker-2", port=9093, rack="r2"),
    ]
    topic = TopicFetch("t", uuid.uuid4(), [PartitionFetch(0, 0, 100, error_code=6)])
    plan = SimpleNamespace(topics=[topic], error_code=0, node_endpoints=endpoints)
    reference = FetchResponse.decode(b"".join(encode_reference(plan, 16, 7))[8 + 1 :], 16)  # type: ignore[arg-type]
    reference.node_endpoints = endpoints
    expected = encode_response_frame(1, 16, 7, reference)
    assert _resolve(encode_fetch_response(plan, 16, 7, True)) == expected
    # Below v16 the field does not exist: the plan's endpoints are not written.
    assert _resolve(encode_fetch_response(plan, 15, 7, True)) == b"".join(
        encode_reference(plan, 15, 7)  # type: ignore[arg-type]
    )


def test_fetch_encoder_over_a_real_log_releases_its_views(tmp_path) -> None:
    log = Log.open(str(tmp_path / "t-0"), LogConfig())
    for i in range(5):
        log.append(make_batch(10, tag=i, value_size=100), leader_epoch=0)
    info = log.read(0, 1 << 20)
    plan = FetchPlan(
        [TopicFetch("t", uuid.uuid4(), [PartitionFetch(0, 0, 1 << 20, data=info)])], 1 << 20
    )
    for version in (4, 11, 12, 16):
        expected = b"".join(encode_reference(plan, version, 1))
        copied = encode_fetch_response(plan, version, 1, sendfile=False)
        assert len(copied) == 1 and bytes(copied[0]) == expected
        sent = encode_fetch_response(plan, version, 1, sendfile=True, sendfile_min_bytes=0)
        assert isinstance(sent[1], FileChunk) and sent[1].length == info.size
        assert _resolve(sent) == expected
        # By default a record set this small (< SENDFILE_MIN_BYTES) is copied, not sendfile'd.
        assert info.size < fetch_response.SENDFILE_MIN_BYTES
        small = encode_fetch_response(plan, version, 1, sendfile=True)
        assert len(small) == 1 and bytes(small[0]) == expected
    # No view outlives the encoding: truncation (refused under a live view) goes through.
    log.truncate_to(10)
    assert log.log_end_offset == 10


# ----------------------------------------------------------------------------- end to end


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 5, "batch.size": 200_000}
    )
    for i, value in enumerate(values):
        producer.produce(topic, value, partition=i % 3)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


def _consume_confluent(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "fast-paths",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(3)])
    out: list[bytes] = []
    try:
        for _ in range(600):
            for message in consumer.consume(1000, timeout=0.1):
                assert message.error() is None, message.error()
                out.append(message.value())
            if len(out) >= expected:
                break
    finally:
        consumer.close()
    return out


def _consume_kafka_python(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    partitions = [TopicPartition(topic, p) for p in range(3)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    out: list[bytes] = []
    try:
        for _ in range(600):
            for records in consumer.poll(timeout_ms=100).values():
                out += [r.value for r in records]
            if len(out) >= expected:
                break
    finally:
        consumer.close()
    return out


def test_real_clients_consume_what_sendfile_sent(broker_factory) -> None:
    # Auto-created with three partitions (CreateTopics is not needed for this path).
    broker = broker_factory(**{"num.partitions": "3"})
    topic = "fast-paths"
    # Enough data that fetches carry many batches per partition (large file regions).
    values = [f"{i:08d}-".encode() + os.urandom(64).hex().encode() for i in range(30_000)]
    _produce(broker.bootstrap, topic, values)
    want = sorted(values)
    assert sorted(_consume_confluent(broker.bootstrap, topic, len(values))) == want
    assert sorted(_consume_kafka_python(broker.bootstrap, topic, len(values))) == want


def test_sendfile_waits_for_a_full_socket(tmp_path) -> None:
    """A region far larger than the socket buffer: sendfile meets EAGAIN and must wait."""
    import asyncio
    import socket
    import struct

    from pystream.broker.network import KafkaConnection

    data = os.urandom(4 * 1024 * 1024 + 5)
    path = tmp_path / "segment.log"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)

    async def handler(frame: bytearray, connection: KafkaConnection) -> list[Chunk]:
        sock = connection.transport.get_extra_info("socket")  # type: ignore[union-attr]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)  # EAGAIN for sure
        return [struct.pack(">i", len(data) + 3), b"hdr", FileChunk(fd, 0, len(data))]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: KafkaConnection(handler, 1024), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):  # twice: the connection is still usable afterwards
            writer.write(struct.pack(">i", 1) + b"x")
            (size,) = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), 30))
            body = await asyncio.wait_for(reader.readexactly(size), 30)
            assert body == b"hdr" + data
        writer.close()
        server.close()

    try:
        asyncio.run(main())
    finally:
        os.close(fd)


# --- the replica fetcher's Fetch response decoder ----------------------------------------------
def _fetch_response_frame(response: FetchResponse, version: int) -> bytes:
    """The frame as a BrokerConnection hands it over: from the correlation id on."""
    return bytes(encode_response_frame(1, version, 99, response))[4:]


@SETTINGS
@given(st.data(), st.sampled_from(FETCH_VERSIONS))
def test_fast_fetch_response_decoder_equals_generated(data: st.DataObject, version: int) -> None:
    response = data.draw(strategy(FetchResponse, FetchResponse, version))
    batches = [bytes(make_batch(n, value_size=n, base_offset=n)) for n in (1, 30)]
    for topic in response.responses:
        for partition in topic.partitions:
            # Records: none, whole batches, or whole batches and the start of another.
            cut = data.draw(st.integers(0, len(batches[1]) - 1))
            partition.records = data.draw(
                st.sampled_from([None, b"", batches[0], batches[0] + batches[1][:cut]])
            )
    frame = _fetch_response_frame(response, version)
    error_code, session_id, partitions = decode_fetch_response(frame, version)
    expected = decode_response(frame, 1, version)[1]
    assert error_code == expected.error_code
    assert session_id == (expected.session_id if version >= 7 else 0)
    flat = [(t, p) for t in expected.responses for p in t.partitions]
    assert len(partitions) == len(flat)
    for got, (topic, partition) in zip(partitions, flat, strict=True):
        name = topic.topic_id.bytes if version >= 13 else topic.topic
        records = bytes(partition.records or b"")
        whole = len(batches[0]) if records.startswith(batches[0]) else 0
        assert got[:6] == (
            name,
            partition.partition_index,
            partition.error_code,
            partition.high_watermark,
            partition.last_stable_offset,
            partition.log_start_offset,
        )
        assert (bytes(got[6]) if got[6] is not None else b"") == records[:whole]
        assert got[7] == len(records) - whole  # the cut-off batch is left for the next fetch


@pytest.mark.parametrize("version", [4, 11, 12, 16])
def test_fast_fetch_response_decoder_refuses_truncated_frames(version: int) -> None:
    response = FetchResponse(
        responses=[
            FetchResponse.FetchableTopicResponse(
                topic="t",
                topic_id=uuid.uuid4(),
                partitions=[
                    FetchResponse.PartitionData(
                        partition_index=0, high_watermark=5, records=bytes(make_batch(2))
                    )
                ],
            )
        ]
    )
    frame = _fetch_response_frame(response, version)
    assert decode_fetch_response(frame, version)[2][0][6] is not None
    for end in range(len(frame)):
        with pytest.raises(ProtocolDecodeError, match=f"Fetch v{version}"):
            decode_fetch_response(frame[:end], version)
    with pytest.raises(ProtocolDecodeError, match="after its end"):
        decode_fetch_response(frame + b"\0", version)
