"""Connections to ``pystream serve``: bad input costs one connection, never the broker.

DESIGN §6: malformed frames close only the connection that sent them, with a logged
reason naming the peer; a frame larger than ``socket.request.max.bytes`` is refused as
soon as its size prefix arrives (before the body is read into memory); requests are
answered in order; hundreds of idle connections cost little.  Throughout, a bystander
connection and a real client keep working and data produced earlier stays intact.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from broker_process import BrokerProcess, KafkaWire
from confluent_kafka import Consumer, Producer, TopicPartition
from test_protocol_malformed import CASES as MALFORMED_PAYLOADS

from pystream.protocol import decode_response
from pystream.protocol.messages.api_versions import ApiVersionsRequest
from pystream.protocol.messages.metadata import MetadataRequest

DEADLINE = 20.0
TOPIC = "precious"
PRECIOUS = [b"precious-%d" % i for i in range(50)]
UNSUPPORTED_VERSION = 35


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    errors: list[Any] = []
    for value in values:
        producer.produce(topic, value, on_delivery=lambda e, m: e and errors.append(e))
    assert producer.flush(DEADLINE) == 0 and errors == []


def _consume(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "conn", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + DEADLINE
    try:
        while len(values) < count and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.2):
                assert message.error() is None, message.error()
                values.append(message.value())
    finally:
        consumer.close()
    return values


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("connections") / "broker").start()
    try:
        _produce(process.bootstrap, TOPIC, PRECIOUS)
        yield process
        # Whatever the tests threw at it: still up, same data, still serving clients.
        assert process.process is not None and process.process.poll() is None
        assert _consume(process.bootstrap, TOPIC, len(PRECIOUS)) == PRECIOUS
        assert "Traceback" not in process.output()
    finally:
        process.close()


@pytest.fixture(scope="module")
def bystander(shared_broker: BrokerProcess) -> Iterator[KafkaWire]:
    """A connection opened before any abuse; it must keep working through all of it."""
    with shared_broker.wire() as wire:
        yield wire


def _still_serves(wire: KafkaWire) -> None:
    response = wire.request(18, 3, ApiVersionsRequest(client_software_name="bystander"))
    assert response.error_code == 0


def _advertised(shared_broker: BrokerProcess) -> dict[int, tuple[int, int]]:
    with shared_broker.wire() as wire:
        response = wire.request(18, 3, ApiVersionsRequest(client_software_name="t"))
    return {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}


def _closed_with_reason(broker: BrokerProcess, wire: KafkaWire, mark: int) -> str:
    """Assert the broker closed ``wire`` and logged why, naming this peer; return the line."""
    peer = f"127.0.0.1:{wire.sock.getsockname()[1]}"
    assert wire.is_closed_by_peer(DEADLINE), "the broker kept the connection open"
    text = f"closing connection from {peer}: "
    output = broker.wait_for_output(text, since=mark)
    line = next(line for line in output.splitlines() if text in line)
    assert len(line.split(text, 1)[1]) > 10  # a reason, not just "closed"
    return line


@pytest.mark.parametrize("case", list(MALFORMED_PAYLOADS))
def test_malformed_request_closes_only_its_connection(
    shared_broker: BrokerProcess, bystander: KafkaWire, case: str
) -> None:
    payload = MALFORMED_PAYLOADS[case]
    advertised = _advertised(shared_broker)
    mark = shared_broker.output_lines()
    with shared_broker.wire() as wire:
        local = wire.sock.getsockname()[1]
        wire.send(struct.pack(">i", len(payload)) + payload)
        served = False
        if len(payload) >= 4:
            api_key, version = struct.unpack_from(">hh", payload)
            low, high = advertised.get(api_key, (1, 0))
            served = low <= version <= high
        if served:
            # An API the broker implements: the bytes are bad, so the connection goes.
            _closed_with_reason(shared_broker, wire, mark)
        else:
            # Not implemented here: UNSUPPORTED_VERSION if the response can say so, or
            # the connection is closed with a logged reason.
            answer = wire.recv_frame()
            if answer is None:
                peer = f"closing connection from 127.0.0.1:{local}: "
                shared_broker.wait_for_output(peer, since=mark)
            else:
                api_key, version = struct.unpack_from(">hh", payload)
                _, body = decode_response(answer, api_key, version)
                assert body.error_code == UNSUPPORTED_VERSION
    _still_serves(bystander)


def _header(api_key: int, version: int, correlation_id: int = 1) -> bytes:
    return struct.pack(">hhih", api_key, version, correlation_id, 1) + b"c"


RAW_FRAMES = {
    # name: (bytes sent, text expected in the logged reason)
    "negative size": (struct.pack(">i", -1), "outside 0..socket.request.max.bytes"),
    "size INT32_MIN": (struct.pack(">i", -(2**31)), "outside 0..socket.request.max.bytes"),
    "empty frame": (struct.pack(">i", 0), "malformed request header"),
    "header cut short": (struct.pack(">i", 3) + b"\x00\x03\x00", "malformed request header"),
    "client id past the end": (
        struct.pack(">i", 10) + struct.pack(">hhih", 3, 4, 1, 500),
        "malformed request header",
    ),
    "metadata v4 array past the end": (
        struct.pack(">i", 13) + _header(3, 4) + struct.pack(">i", 1000),
        "malformed Metadata v4 request",
    ),
    "tls client hello": (bytes.fromhex("160301020001000200"), "TLS"),
    "http request": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP"),
}


@pytest.mark.parametrize("name", list(RAW_FRAMES))
def test_bad_frames_close_the_connection_with_a_logged_reason(
    shared_broker: BrokerProcess, bystander: KafkaWire, name: str
) -> None:
    data, reason = RAW_FRAMES[name]
    mark = shared_broker.output_lines()
    with shared_broker.wire() as wire:
        wire.send(data)
        line = _closed_with_reason(shared_broker, wire, mark)
    assert reason.lower() in line.lower(), line
    _still_serves(bystander)


def test_oversized_frame_is_refused_before_its_body_is_read(
    shared_broker: BrokerProcess, bystander: KafkaWire
) -> None:
    """Only the 4-byte size prefix of a 100 MiB + 1 frame is sent: the broker must refuse it
    at once, without waiting for (or buffering) the body."""
    limit = 104_857_600  # socket.request.max.bytes default
    mark = shared_broker.output_lines()
    with shared_broker.wire() as wire:
        wire.send(struct.pack(">i", limit + 1))
        line = _closed_with_reason(shared_broker, wire, mark)
    assert str(limit + 1) in line and str(limit) in line
    _still_serves(bystander)


def test_frame_size_limit_is_exact(tmp_path: Any) -> None:
    """With socket.request.max.bytes=N a frame of N bytes is served and N + 1 is refused."""
    limit = 4096
    process = BrokerProcess(tmp_path / "broker", {"socket.request.max.bytes": str(limit)})
    process.start()
    try:

        def metadata_frame(wire: KafkaWire, size: int) -> bytes:
            # Metadata v1 for one topic whose name pads the frame body to ``size`` bytes.
            base = wire.frame(3, 1, MetadataRequest(topics=[]))
            pad = size - (len(base) - 4) - 2  # the topic name's int16 length
            name = "t" * pad
            topic = MetadataRequest.MetadataRequestTopic(name=name)
            frame = wire.frame(3, 1, MetadataRequest(topics=[topic]))
            assert len(frame) - 4 == size
            return frame

        with process.wire() as wire:
            wire.send(metadata_frame(wire, limit))
            answer = wire.recv_frame()
            assert answer is not None
            _, body = decode_response(answer, 3, 1)
            assert len(body.topics) == 1  # an (invalid, too long) topic name, answered
        mark = process.output_lines()
        with process.wire() as wire:
            wire.send(metadata_frame(wire, limit + 1))
            line = _closed_with_reason(process, wire, mark)
        assert str(limit) in line
    finally:
        process.close()


def test_pipelined_requests_are_answered_in_order(shared_broker: BrokerProcess) -> None:
    with shared_broker.wire() as wire:
        frames = []
        for i in range(300):
            if i % 3 == 0:
                frames.append((18, 0, wire.frame(18, 0, ApiVersionsRequest())))
            elif i % 3 == 1:
                request = MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name=TOPIC)])
                frames.append((3, 9, wire.frame(3, 9, request)))
            else:
                frames.append((3, 1, wire.frame(3, 1, MetadataRequest(topics=None))))
        wire.send(b"".join(frame for _, _, frame in frames))
        for correlation_id, (api_key, version, _) in enumerate(frames, start=1):
            payload = wire.recv_frame()
            assert payload is not None
            header, _ = decode_response(payload, api_key, version)
            assert header.correlation_id == correlation_id


def test_malformed_frame_after_good_ones_in_a_pipeline(shared_broker: BrokerProcess) -> None:
    """Requests before the bad frame are answered; nothing after it is."""
    mark = shared_broker.output_lines()
    with shared_broker.wire() as wire:
        good = [wire.frame(18, 0, ApiVersionsRequest()) for _ in range(5)]
        bad = struct.pack(">i", 13) + _header(3, 4, 99) + struct.pack(">i", 1000)
        after = wire.frame(18, 0, ApiVersionsRequest())
        wire.send(b"".join(good) + bad + after)
        for correlation_id in range(1, 6):
            payload = wire.recv_frame()
            assert payload is not None
            assert decode_response(payload, 18, 0)[0].correlation_id == correlation_id
        _closed_with_reason(shared_broker, wire, mark)


def test_clients_that_vanish_mid_frame_cost_nothing(
    shared_broker: BrokerProcess, bystander: KafkaWire
) -> None:
    frame = KafkaWire.frame(bystander, 18, 0, ApiVersionsRequest())
    for cut in (1, 3, 4, 6, len(frame) - 1):
        with socket.create_connection(("127.0.0.1", shared_broker.port), timeout=5) as sock:
            sock.sendall(frame[:cut])
    # A client that sends half a frame and then sits there does not block anyone either.
    with socket.create_connection(("127.0.0.1", shared_broker.port), timeout=5) as stuck:
        stuck.sendall(struct.pack(">i", 1000) + b"\x00\x12")
        _still_serves(bystander)
        _produce(shared_broker.bootstrap, "after-vanish", [b"v"])


def _recv_frame(sock: socket.socket) -> bytes | None:
    """One response frame body from a plain socket (None if closed)."""
    data = b""
    while len(data) < 4 or len(data) < 4 + struct.unpack_from(">i", data)[0]:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    return data[4:]


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_hundreds_of_idle_connections_cost_little(
    shared_broker: BrokerProcess, bystander: KafkaWire
) -> None:
    count = 400
    assert shared_broker.process is not None
    pid = shared_broker.process.pid
    before = _rss_kib(pid)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(socket.create_connection(("127.0.0.1", shared_broker.port), timeout=10))
        # Every one of them is really accepted and served (one request each) ...
        request = bystander.frame(18, 0, ApiVersionsRequest())
        for sock in sockets:
            sock.sendall(request)
        for sock in sockets:
            assert _recv_frame(sock) is not None
        grown = _rss_kib(pid) - before
        # A few KiB each is expected (transport, buffers, a task); 64 KiB each is a leak.
        assert grown < count * 64, f"{count} idle connections grew the broker by {grown} KiB"
        # They sit idle while real work goes on.
        _still_serves(bystander)
        _produce(shared_broker.bootstrap, "with-idle", [b"x%d" % i for i in range(100)])
        assert _consume(shared_broker.bootstrap, "with-idle", 100)[-1] == b"x99"
        for sock in sockets[:: count // 10]:  # still connected, still answered
            sock.sendall(request)
            assert _recv_frame(sock) is not None
    finally:
        for sock in sockets:
            sock.close()
    # All closed: the broker notices and keeps serving.
    _still_serves(bystander)
    assert os.path.exists(f"/proc/{pid}")
