"""Malformed wire input: every case must raise ProtocolDecodeError, cheaply.

Never MemoryError, IndexError, struct.error or UnicodeDecodeError, and never an
allocation sized by an attacker-controlled length.
"""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pystream.errors import UnsupportedVersionError
from pystream.protocol import (
    FrameDecoder,
    ProtocolDecodeError,
    RequestHeader,
    Writer,
    decode_request,
    decode_response,
    request_header_version,
)
from pystream.protocol.messages.api_versions import ApiVersionsRequest
from pystream.protocol.messages.create_topics import CreateTopicsRequest
from pystream.protocol.messages.fetch import FetchRequest, FetchResponse
from pystream.protocol.messages.join_group import JoinGroupRequest
from pystream.protocol.messages.metadata import MetadataRequest, MetadataResponse
from pystream.protocol.messages.produce import ProduceRequest

INT32_MAX = 2**31 - 1
i16 = struct.Struct(">h").pack
i32 = struct.Struct(">i").pack


def payload(api_key: int, version: int, body: bytes) -> bytes:
    """A request frame body: header for (api_key, version) + ``body`` bytes."""
    w = Writer()
    RequestHeader(
        request_api_key=api_key, request_api_version=version, correlation_id=1, client_id="c"
    ).write(w, request_header_version(api_key, version))
    w += body
    return bytes(w)


def uvarint(n: int) -> bytes:
    w = Writer()
    w.uvarint(n)
    return bytes(w)


def rejected(data: bytes, match: str | None = None) -> ProtocolDecodeError:
    with pytest.raises(ProtocolDecodeError, match=match) as info:
        decode_request(data)
    return info.value


# -- the named malformed cases -------------------------------------------------

PRODUCE_V3_HEAD = i16(-1) + i16(1) + i32(1000)  # null transactional id, acks, timeout
METADATA_V4_TAIL = b"\x01"  # allow_auto_topic_creation

CASES = {
    # array lengths past the buffer
    "array count past buffer": payload(3, 4, i32(1000) + i16(1) + b"a" + METADATA_V4_TAIL),
    "nested array count past buffer": payload(
        0, 3, PRODUCE_V3_HEAD + i32(1) + i16(1) + b"t" + i32(500_000) + i32(0)
    ),
    "compact array count past buffer": payload(
        0, 9, b"\x00" + i16(1) + i32(1000) + uvarint(1_000_001) + b"\x00"
    ),
    # -2 and other negative lengths
    "string length -2": payload(0, 3, i16(-2) + i16(1) + i32(1000) + i32(0)),
    "bytes length -2": payload(36, 0, i32(-2)),
    "array length -2": payload(3, 4, i32(-2) + METADATA_V4_TAIL),
    "records length -2": payload(
        0, 3, PRODUCE_V3_HEAD + i32(1) + i16(1) + b"t" + i32(1) + i32(0) + i32(-2)
    ),
    # INT32_MAX lengths
    "bytes length INT32_MAX": payload(36, 0, i32(INT32_MAX) + b"xx"),
    "array length INT32_MAX": payload(3, 4, i32(INT32_MAX) + METADATA_V4_TAIL),
    "records length INT32_MAX": payload(
        0, 3, PRODUCE_V3_HEAD + i32(1) + i16(1) + b"t" + i32(1) + i32(0) + i32(INT32_MAX)
    ),
    "string length INT16_MAX": payload(0, 3, i16(32767) + b"abc"),
    # oversized compact strings / bytes, checked before allocating
    "compact string 4 GiB": payload(18, 3, uvarint(2**32 - 1) + b"abc"),
    "compact string past buffer": payload(18, 3, uvarint(200) + b"abc"),
    "compact bytes 4 GiB": payload(36, 2, uvarint(2**32 - 1) + b"abc"),
    "compact records past INT32_MAX": payload(
        0, 9, b"\x00" + i16(1) + i32(1000) + b"\x02\x02t\x02" + i32(0) + uvarint(2**32 - 1)
    ),
    "uvarint longer than 5 bytes": payload(18, 3, b"\x80\x80\x80\x80\x80\x01"),
    # tagged fields
    "duplicate unknown tag ids": payload(
        18, 3, b"\x02a\x02b" + b"\x02" + b"\x05\x01x" + b"\x05\x01y"
    ),
    "descending tag ids": payload(18, 3, b"\x02a\x02b" + b"\x02" + b"\x05\x01x" + b"\x02\x01y"),
    "duplicate known tag id": payload(
        1,
        12,
        bytes.fromhex("ffffffff 000001f4 00000001 00100000 00 00000000 ffffffff 01 01 01")
        + b"\x02"
        + b"\x00\x01\x01"
        + b"\x00\x01\x01",
    ),
    "tag size past the end": payload(18, 3, b"\x02a\x02b" + b"\x01" + b"\x05\x7fx"),
    "tag count past the end": payload(18, 3, b"\x02a\x02b" + uvarint(1000) + b"\x05\x01x"),
    "known tag shorter than its size": payload(
        1,
        12,
        bytes.fromhex("ffffffff 000001f4 00000001 00100000 00 00000000 ffffffff 01 01 01")
        + b"\x01"
        + b"\x00\x05\x02c\x00\x00\x00",
    ),
    "tagged header field size past end": payload(18, 3, b"")[:-1] + b"\x01\x00\x09",
    # null where the field is not nullable (at this version)
    "null non-nullable string": payload(0, 3, PRODUCE_V3_HEAD + i32(1) + i16(-1) + i32(0)),
    "null array before its nullable version": payload(3, 0, i32(-1)),
    "null compact string": payload(18, 3, b"\x00\x02b\x00"),
    "null non-nullable array": payload(
        11, 5, i16(2) + b"g1" + i32(1) + i32(1) + i16(0) + i16(-1) + i16(1) + b"c" + i32(-1)
    ),
    "null non-nullable bytes": payload(36, 0, i32(-1)),
    # other content errors
    "invalid UTF-8 string": payload(18, 3, b"\x03\xff\xfe\x02b\x00"),
    "frame shorter than a header": b"\x00\x12\x00",
}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_case_rejected(name):
    err = rejected(CASES[name])
    assert "at byte" in str(err) or "truncated" in str(err)


def test_errors_name_the_field():
    assert "ProduceRequest.TransactionalId" in str(rejected(CASES["string length -2"]))
    assert "invalid negative length -2" in str(rejected(CASES["bytes length -2"]))
    assert "MetadataRequest.Topics" in str(rejected(CASES["array length INT32_MAX"]))
    assert "duplicate or descending" in str(rejected(CASES["descending tag ids"]))
    assert "tag 0 after tag 0" in str(rejected(CASES["duplicate known tag id"]))
    assert "non-nullable" in str(rejected(CASES["null array before its nullable version"]))
    assert "UTF-8" in str(rejected(CASES["invalid UTF-8 string"]))


def test_malformed_cases_allocate_nothing_large():
    tracemalloc.start()
    try:
        for data in CASES.values():
            with pytest.raises(ProtocolDecodeError):
                decode_request(data)
        dec = FrameDecoder()
        with pytest.raises(ProtocolDecodeError):
            dec.feed(i32(INT32_MAX) + b"x")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 512 * 1024


def test_the_valid_versions_of_the_same_shapes_decode():
    """Sanity: the malformed cases are malformed only where intended."""
    ok = payload(3, 4, i32(1) + i16(1) + b"a" + METADATA_V4_TAIL)
    assert [t.name for t in decode_request(ok)[1].topics] == ["a"]
    ok = payload(18, 3, b"\x02a\x02b" + b"\x02" + b"\x02\x01x" + b"\x05\x01y")
    assert decode_request(ok)[1].client_software_name == "a"  # unknown tags skipped
    assert decode_request(payload(3, 1, i32(-1)))[1].topics is None  # nullable from v1
    fetch_v12 = payload(
        1,
        12,
        bytes.fromhex("ffffffff 000001f4 00000001 00100000 00 00000000 ffffffff 01 01 01")
        + b"\x01\x00\x02\x02c",
    )
    assert decode_request(fetch_v12)[1].cluster_id == "c"  # known tag 0


# -- truncation at every byte -----------------------------------------------------

_records = bytes(61)
REQUESTS = [
    (
        0,
        3,
        ProduceRequest(
            acks=-1,
            timeout_ms=1000,
            topic_data=[
                ProduceRequest.TopicProduceData(
                    name="t",
                    partition_data=[ProduceRequest.PartitionProduceData(index=0, records=_records)],
                )
            ],
        ),
    ),
    (
        0,
        9,
        ProduceRequest(
            transactional_id="x",
            acks=1,
            topic_data=[
                ProduceRequest.TopicProduceData(
                    name="t",
                    partition_data=[ProduceRequest.PartitionProduceData(index=1, records=_records)],
                )
            ],
        ),
    ),
    (
        1,
        4,
        FetchRequest(
            topics=[
                FetchRequest.FetchTopic(
                    topic="t", partitions=[FetchRequest.FetchPartition(partition=0, fetch_offset=5)]
                )
            ]
        ),
    ),
    (
        1,
        16,
        FetchRequest(
            cluster_id="c",
            topics=[
                FetchRequest.FetchTopic(
                    partitions=[FetchRequest.FetchPartition(partition=0, fetch_offset=5)]
                )
            ],
        ),
    ),
    (3, 0, MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name="a")])),
    (3, 12, MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name="a")])),
    (18, 3, ApiVersionsRequest(client_software_name="n", client_software_version="1")),
    (
        11,
        5,
        JoinGroupRequest(
            group_id="g",
            member_id="",
            protocol_type="consumer",
            protocols=[
                JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"\x00\x01")
            ],
        ),
    ),
    (
        19,
        7,
        CreateTopicsRequest(
            topics=[
                CreateTopicsRequest.CreatableTopic(
                    name="n",
                    num_partitions=1,
                    replication_factor=1,
                    configs=[CreateTopicsRequest.CreatableTopicConfig(name="k", value=None)],
                )
            ]
        ),
    ),
]


def _frame_body(api_key, version, body):
    return payload(api_key, version, body.encode(version))


@pytest.mark.parametrize(
    ("api_key", "version", "body"),
    REQUESTS,
    ids=[f"{type(b).__name__}-v{v}" for _, v, b in REQUESTS],
)
def test_truncated_at_every_byte(api_key, version, body):
    data = _frame_body(api_key, version, body)
    assert decode_request(data)[1] == body
    for cut in range(len(data)):
        with pytest.raises(ProtocolDecodeError):
            decode_request(data[:cut])


@pytest.mark.parametrize(
    ("cls", "api_key", "version"),
    [(MetadataResponse, 3, 12), (FetchResponse, 1, 16), (FetchResponse, 1, 4)],
)
def test_truncated_responses_at_every_byte(cls, api_key, version):
    from protocol_samples import sample

    data = (
        b"\x00\x00\x00\x01"
        + (b"\x00" if version >= 9 else b"")
        + sample(cls, cls, version).encode(version)
    )
    decode_response(data, api_key, version)
    for cut in range(len(data)):
        with pytest.raises(ProtocolDecodeError):
            decode_response(data[:cut], api_key, version)


# -- fuzzing --------------------------------------------------------------------

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
SEEDS = [_frame_body(*r) for r in REQUESTS]


def _decode_never_crashes(data: bytes) -> None:
    try:
        decode_request(data)
    except (ProtocolDecodeError, UnsupportedVersionError):
        pass


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_fuzz_byte_mutations(seed, edits):
    data = bytearray(seed)
    for pos, value in edits:
        data[pos % len(data)] = value
    _decode_never_crashes(bytes(data))


@FUZZ
@given(
    st.sampled_from(SEEDS), st.integers(0, 10_000), st.binary(min_size=1, max_size=8), st.booleans()
)
def test_fuzz_insertions_and_deletions(seed, pos, chunk, insert):
    pos %= len(seed)
    data = seed[:pos] + chunk + seed[pos:] if insert else seed[:pos] + seed[pos + len(chunk) :]
    _decode_never_crashes(data)


@FUZZ
@given(st.integers(0, 80), st.integers(0, 20), st.binary(max_size=64))
def test_fuzz_random_bodies_for_every_api(api_key, version, body):
    _decode_never_crashes(payload(api_key, version, body))
