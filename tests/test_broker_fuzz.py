"""Fuzzing a live ``pystream serve`` with hypothesis: it stays up, correct, and keeps data.

For every API the broker advertises (and every version it advertises), requests are
generated two ways and each is sent on a fresh connection, followed by an ApiVersions
"ping" on the same connection:

* valid random requests (``protocol_samples.strategy``): the broker must answer every one
  it answers with a response that decodes at that version and echoes the correlation id;
* byte-level mutations (flips, interesting integers, insertions, deletions, truncation)
  of valid requests, both synthetic ones (``protocol_samples.sample``) and realistic ones
  aimed at a real topic: the broker answers or closes the connection, and any answer
  carries the correlation id it was sent.

A request may legitimately be held (a long poll, a join waiting for its rebalance), so a
silent connection is closed after a short wait and not counted as a failure.  Afterwards
the broker must still be running, answer a real client, hold exactly the records produced
before the fuzzing, and never have logged an internal error (a handler exception).

Runs are derandomized (same examples every run) and bounded in count.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import BrokerProcess
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_samples import sample, strategy

from pystream._core import records as core_records
from pystream.protocol import decode_response, encode_request_frame
from pystream.protocol.messages import API_SPECS, RequestHeader
from pystream.protocol.messages.api_versions import ApiVersionsRequest
from pystream.protocol.messages.fetch import FetchRequest
from pystream.protocol.messages.list_offsets import ListOffsetsRequest
from pystream.protocol.messages.metadata import MetadataRequest
from pystream.protocol.messages.produce import ProduceRequest
from pystream.protocol.messages.write_txn_markers import WriteTxnMarkersRequest

PRECIOUS = "precious-records"  # longer than any generated name: no request can name it
TARGET = "fuzz-target"  # realistic requests aim here; expendable
PRECIOUS_VALUES = [b"value-%d" % i for i in range(200)]
PING_ID = 0x7FFF_FFF0
FUZZ_ID = 77
WAIT = 2.0  # how long a fuzzed request may stay unanswered before we hang up
DEADLINE = 30.0
# Never fuzzed even if advertised: asking a broker to shut down is not an attack.
EXCLUDED_KEYS = {7}  # ControlledShutdown
INTERESTING = [0, 1, -1, -2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 2**31 - 1, -(2**31)]


def _frame(api_key: int, version: int, body: Any, correlation_id: int = FUZZ_ID) -> bytes:
    header = RequestHeader(
        request_api_key=api_key,
        request_api_version=version,
        correlation_id=correlation_id,
        client_id="fuzz",
    )
    return encode_request_frame(header, body)


PING = _frame(18, 0, ApiVersionsRequest(), PING_ID)


@pytest.fixture(scope="module")
def fuzz_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("fuzz") / "broker")
    process.precreate_topic(PRECIOUS)
    process.precreate_topic(TARGET, 2)
    process.start()
    try:
        producer = Producer({"bootstrap.servers": process.bootstrap, "linger.ms": 2})
        for value in PRECIOUS_VALUES:
            producer.produce(PRECIOUS, value, key=value[-3:])
        assert producer.flush(DEADLINE) == 0
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def advertised(fuzz_broker: BrokerProcess) -> list[tuple[int, int]]:
    """(api key, version) for every version of every API the broker advertises."""
    with fuzz_broker.wire() as wire:
        response = wire.request(18, 3, ApiVersionsRequest(client_software_name="fuzz"))
    pairs = [
        (k.api_key, v)
        for k in response.api_keys
        if k.api_key in API_SPECS and k.api_key not in EXCLUDED_KEYS
        for v in range(k.min_version, k.max_version + 1)
    ]
    assert (0, 3) in pairs and (1, 4) in pairs and (3, 0) in pairs
    return pairs


def _realistic_seeds() -> list[tuple[int, int, bytes]]:
    """Well-formed requests that reach real data paths (a real topic, a valid batch)."""
    batch = core_records.build_batch(
        [(1_000 + i, b"k%d" % i, b"v" * i, [("h", b"x")]) for i in range(3)],
        core_records.COMPRESSION_LZ4,
    )
    produce = ProduceRequest(
        acks=1,
        timeout_ms=1000,
        topic_data=[
            ProduceRequest.TopicProduceData(
                name=TARGET,
                partition_data=[ProduceRequest.PartitionProduceData(index=1, records=batch)],
            )
        ],
    )
    fetch = FetchRequest(
        max_wait_ms=10,
        min_bytes=1,
        max_bytes=1 << 16,
        topics=[
            FetchRequest.FetchTopic(
                topic=TARGET,
                partitions=[
                    FetchRequest.FetchPartition(
                        partition=1, fetch_offset=0, partition_max_bytes=4096
                    )
                ],
            )
        ],
    )
    list_offsets = ListOffsetsRequest(
        replica_id=-1,
        topics=[
            ListOffsetsRequest.ListOffsetsTopic(
                name=TARGET,
                partitions=[
                    ListOffsetsRequest.ListOffsetsPartition(partition_index=1, timestamp=-2)
                ],
            )
        ],
    )
    metadata = MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name=TARGET)])
    seeds = [(0, v, produce) for v in (3, 7, 9, 10)]
    seeds += [(1, v, fetch) for v in (4, 7, 11, 12)]
    seeds += [(2, v, list_offsets) for v in (1, 4, 7)]
    seeds += [(3, v, metadata) for v in (0, 1, 4, 9, 12)]
    api_versions = ApiVersionsRequest(client_software_name="a", client_software_version="1")
    seeds += [(18, v, api_versions) for v in (0, 3)]
    return [(key, v, _frame(key, v, body)[4:]) for key, v, body in seeds]


def _synthetic_seeds(pairs: list[tuple[int, int]]) -> list[tuple[int, int, bytes]]:
    seeds = []
    for api_key, version in pairs:
        cls = API_SPECS[api_key].request
        for nulls in (False, True):
            body = sample(cls, cls, version, nulls=nulls)
            seeds.append((api_key, version, _frame(api_key, version, body)[4:]))
    return seeds


# --- talking to the broker -------------------------------------------------------------------


def _exchange(port: int, payload: bytes) -> tuple[list[bytes], bool]:
    """Send one request frame body (correct size prefix) then the ping, on a fresh
    connection.  Returns the response frame bodies received and whether the ping was
    answered (False: closed, or still holding the request after WAIT seconds)."""
    frames: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(struct.pack(">i", len(payload)) + payload + PING)
        sock.settimeout(WAIT)
        buffer = b""
        try:
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    return frames, False
                buffer += chunk
                while len(buffer) >= 4 and len(buffer) >= 4 + struct.unpack_from(">i", buffer)[0]:
                    size = struct.unpack_from(">i", buffer)[0]
                    body, buffer = buffer[4 : 4 + size], buffer[4 + size :]
                    if struct.unpack_from(">i", body)[0] == PING_ID:
                        _check_ping(body)
                        return frames, True
                    frames.append(body)
        except (TimeoutError, ConnectionResetError):
            return frames, False


def _check_ping(body: bytes) -> None:
    header, response = decode_response(body, 18, 0)
    assert header.correlation_id == PING_ID
    assert response.error_code == 0


def _check_answers(payload: bytes, frames: list[bytes]) -> None:
    """At most one answer to the one request, carrying the correlation id it was sent."""
    assert len(frames) <= 1, f"{len(frames)} responses to one request"
    for body in frames:
        assert body[:4] == payload[4:8], "the response's correlation id is not the request's"


# --- strategies ------------------------------------------------------------------------------


def _int_bytes(value: int, width: int) -> bytes:
    return (value % (1 << (8 * width))).to_bytes(width, "big")


@st.composite
def _mutated(draw: st.DrawFn, seeds: list[tuple[int, int, bytes]]) -> bytes:
    _, _, original = draw(st.sampled_from(seeds))
    data = bytearray(original)
    # Mostly keep the header (api key, version, correlation id, client id "fuzz": 14 bytes)
    # so the body decoders are exercised; sometimes mutate the header too.
    low = draw(st.sampled_from([14, 14, 14, 14, 4, 0]))
    for _ in range(draw(st.integers(1, 4))):
        if len(data) <= low:
            data += draw(st.binary(min_size=1, max_size=8))
            continue
        pos = draw(st.integers(low, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "int", "insert", "delete", "truncate", "dup"]))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "int":
            width = draw(st.sampled_from([1, 2, 4, 8]))
            data[pos : pos + width] = _int_bytes(draw(st.sampled_from(INTERESTING)), width)
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[pos:]
        else:
            end = draw(st.integers(pos, min(len(data), pos + 32)))
            data[pos:pos] = data[pos:end]
    return bytes(data)


# --- the tests -------------------------------------------------------------------------------

FUZZ_SETTINGS = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_fuzz_valid_random_requests_for_every_api(
    fuzz_broker: BrokerProcess, advertised: list[tuple[int, int]]
) -> None:
    port = fuzz_broker.port
    stats = {"answered": 0, "held": 0}
    strategies: dict[tuple[int, int], st.SearchStrategy[Any]] = {}

    @FUZZ_SETTINGS
    @given(st.data())
    def run(data: st.DataObject) -> None:
        api_key, version = data.draw(st.sampled_from(advertised), label="api")
        if (api_key, version) not in strategies:
            cls = API_SPECS[api_key].request
            strategies[(api_key, version)] = strategy(cls, cls, version)
        body = data.draw(strategies[(api_key, version)], label="request")
        payload = _frame(api_key, version, body)[4:]
        frames, pinged = _exchange(port, payload)
        _check_answers(payload, frames)
        for answer in frames:
            decode_response(answer, api_key, version)  # a well-formed response at v
        stats["answered" if pinged else "held"] += 1

    run()
    _check_broker_intact(fuzz_broker)
    assert stats["answered"] > stats["held"], stats


def test_fuzz_mutated_requests_for_every_api(
    fuzz_broker: BrokerProcess, advertised: list[tuple[int, int]]
) -> None:
    port = fuzz_broker.port
    seeds = _synthetic_seeds(advertised) + _realistic_seeds()

    @FUZZ_SETTINGS
    @given(_mutated(seeds))
    def run(payload: bytes) -> None:
        frames, _ = _exchange(port, payload)
        _check_answers(payload, frames)

    run()
    _check_broker_intact(fuzz_broker)


def test_fuzz_garbage_streams(fuzz_broker: BrokerProcess) -> None:
    """Arbitrary bytes, including nonsense size prefixes: the connection may be closed or
    left waiting for more, but the broker carries on."""

    @settings(max_examples=100, deadline=None, derandomize=True, database=None)
    @given(st.binary(min_size=1, max_size=300))
    def run(data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", fuzz_broker.port), timeout=DEADLINE) as sock:
            sock.sendall(data)

    run()
    _check_broker_intact(fuzz_broker)


def _check_broker_intact(broker: BrokerProcess) -> None:
    """Still running, no handler crashed, a real client works, the precious data is there."""
    assert broker.process is not None and broker.process.poll() is None, broker.output()
    output = broker.output()
    assert "internal error" not in output and "Traceback" not in output, output[-5000:]
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "fuzz", "enable.auto.commit": False}
    )
    got: list[tuple[int, bytes]] = []
    try:
        consumer.assign([TopicPartition(PRECIOUS, 0, 0)])
        deadline = time.monotonic() + DEADLINE
        while len(got) < len(PRECIOUS_VALUES) and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.2):
                assert message.error() is None, message.error()
                got.append((message.offset(), message.value()))
        low, high = consumer.get_watermark_offsets(TopicPartition(PRECIOUS, 0), DEADLINE)
    finally:
        consumer.close()
    assert got == list(enumerate(PRECIOUS_VALUES))
    assert (low, high) == (0, len(PRECIOUS_VALUES))


def test_write_txn_markers_with_a_negative_producer_id(tmp_path: Path) -> None:
    """Found by the fuzz test: the marker write raised ValueError inside the handler (the
    connection was closed with an internal error); now an error code per partition."""
    Marker = WriteTxnMarkersRequest.WritableTxnMarker
    Topic = WriteTxnMarkersRequest.WritableTxnMarkerTopic
    request = WriteTxnMarkersRequest(
        markers=[
            Marker(
                producer_id=-1,
                producer_epoch=0,
                transaction_result=True,
                topics=[Topic(name=TARGET, partition_indexes=[0])],
                coordinator_epoch=0,
            )
        ]
    )
    process = BrokerProcess(tmp_path / "broker").precreate_topic(TARGET).start()
    try:
        with process.wire() as wire:
            response = wire.request(27, 1, request)  # ConnectionError if the broker hangs up
    finally:
        process.close()
    (marker,) = response.markers
    (topic,) = marker.topics
    assert topic.partitions[0].error_code != 0
