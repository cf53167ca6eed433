"""Codec primitives, framing and header rules of pystream.protocol."""

from __future__ import annotations

import struct
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pystream.errors import InvalidRequestError, UnsupportedVersionError
from pystream.protocol import (
    FrameDecoder,
    ProtocolDecodeError,
    Reader,
    RequestHeader,
    Writer,
    decode_request,
    decode_request_body,
    decode_request_header,
    encode_request_frame,
    encode_response_frame,
    frame_size,
    request_header_version,
    response_header_version,
)
from pystream.protocol.codec import ZERO_UUID, Versions
from pystream.protocol.framing import begin_frame, end_frame
from pystream.protocol.messages.api_versions import ApiVersionsRequest, ApiVersionsResponse
from pystream.protocol.messages.metadata import MetadataResponse

FAST = settings(max_examples=200, deadline=None, derandomize=True, database=None)


def test_decode_error_is_an_invalid_request():
    assert issubclass(ProtocolDecodeError, InvalidRequestError)
    assert ProtocolDecodeError("x").error_code == 42


# -- fixed width --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        (">b", -128),
        (">h", 32767),
        (">H", 65535),
        (">i", -(2**31)),
        (">I", 2**32 - 1),
        (">q", 2**63 - 1),
        (">d", -2.5),
        (">?", True),
    ],
)
def test_fixed_width_values(fmt, value):
    packer = struct.Struct(fmt)
    w = Writer()
    w += packer.pack(value)
    r = Reader(w)
    assert r.unpack(packer, "f") == (value,)
    assert r.remaining == 0


def test_uuid_roundtrip_and_zero_is_shared():
    u = UUID("12345678-9abc-def0-1234-56789abcdef0")
    w = Writer()
    w.uuid(u)
    w.uuid(ZERO_UUID)
    r = Reader(bytes(w))
    assert r.uuid("a") == u
    assert r.uuid("b") is ZERO_UUID


# -- varints ------------------------------------------------------------------


@FAST
@given(st.integers(0, 2**32 - 1))
def test_uvarint_roundtrip(value):
    w = Writer()
    w.uvarint(value)
    assert len(w) <= 5
    r = Reader(bytes(w))
    assert r.uvarint("u") == value and r.remaining == 0


@FAST
@given(st.integers(-(2**31), 2**31 - 1), st.integers(-(2**63), 2**63 - 1))
def test_zigzag_varint_and_varlong_roundtrip(small, big):
    w = Writer()
    w.varint(small)
    w.varlong(big)
    r = Reader(bytes(w))
    assert (r.varint("a"), r.varlong("b")) == (small, big)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "02"),
        (-1, "01"),
        (63, "7e"),
        (-64, "7f"),
        (64, "8001"),
        (2**31 - 1, "feffffff0f"),
        (-(2**31), "ffffffff0f"),
    ],
)
def test_zigzag_known_encodings(value, encoded):
    w = Writer()
    w.varint(value)
    assert w.hex() == encoded


def test_uvarint_limits():
    assert Reader(b"\xff\xff\xff\xff\x0f").uvarint("u") == 2**32 - 1
    with pytest.raises(ProtocolDecodeError, match="exceeds 32 bits"):
        Reader(b"\xff\xff\xff\xff\x1f").uvarint("u")
    with pytest.raises(ProtocolDecodeError, match="longer than 5 bytes"):
        Reader(b"\x80\x80\x80\x80\x80\x01").uvarint("u")
    with pytest.raises(ProtocolDecodeError, match="truncated"):
        Reader(b"\x80").uvarint("u")
    with pytest.raises(ValueError):
        Writer().uvarint(-1)
    with pytest.raises(ValueError):
        Writer().varint(2**31)


# -- strings, bytes, records ----------------------------------------------------


def test_string_encodings():
    w = Writer()
    w.string("hé")
    w.string(None, True)
    w.compact_string("hé")
    w.compact_string(None, True)
    w.compact_string("", True)
    assert w.hex() == "000368c3a9ffff0468c3a90001"
    r = Reader(bytes(w))
    assert r.string("a") == "hé"
    assert r.string("b", True) is None
    assert r.compact_string("c") == "hé"
    assert r.compact_string("d", True) is None
    assert r.compact_string("e", True) == ""
    assert r.remaining == 0


def test_bytes_encodings():
    w = Writer()
    w.bytes(b"ab")
    w.bytes(None, True)
    w.compact_bytes(memoryview(b"xyz"))
    w.compact_bytes(None, True)
    assert w.hex() == "000000026162ffffffff0478797a00"
    r = Reader(bytes(w))
    assert r.bytes("a") == b"ab"
    assert r.bytes("b", True) is None
    assert r.compact_bytes("c") == b"xyz"
    assert r.compact_bytes("d", True) is None


def test_records_are_views_of_the_input():
    data = b"\x00\x00\x00\x03abc\x04xyz\xff\xff\xff\xff"
    r = Reader(data)
    a, b, c = r.records("a"), r.compact_records("b"), r.records("c", True)
    assert isinstance(a, memoryview) and a.obj is data and a == b"abc"
    assert b.obj is data and b == b"xyz"
    assert c is None


def test_writer_rejects_null_and_oversized_for_non_nullable():
    for method in (
        "string",
        "compact_string",
        "bytes",
        "compact_bytes",
        "length",
        "compact_length",
    ):
        with pytest.raises(ValueError, match="non-nullable"):
            getattr(Writer(), method)(None)
    with pytest.raises(ValueError, match="non-nullable"):
        Writer().fixed_array("i", None, False, True)
    with pytest.raises(ValueError, match="INT16_MAX"):
        Writer().string("x" * 32768)


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("values", [[], [1, -2, 3], list(range(300)), None])
def test_fixed_arrays(compact, values):
    w = Writer()
    w.fixed_array("i", values, True, compact)
    w.uuid_array(None if values is None else [UUID(int=v % 7) for v in values], True, compact)
    r = Reader(bytes(w))
    assert r.fixed_array("i", 4, "a", True, compact) == values
    uuids = r.uuid_array("b", True, compact)
    assert uuids == (None if values is None else [UUID(int=v % 7) for v in values])
    assert r.remaining == 0


# -- tagged fields --------------------------------------------------------------


def test_tag_section_roundtrip_and_unknown_tags_skipped():
    w = Writer()
    w.tag_section([(1, bytearray(b"\x05")), (7, bytearray(b"abc")), (300, bytearray())])
    data = bytes(w) + b"\xee"
    r = Reader(data)
    seen = []
    for tag in r.tags("s"):
        if tag == 1:
            seen.append(r.int8("t1"))
        else:
            r.pos = r.end  # skip
            seen.append(tag)
    assert seen == [5, 7, 300]
    assert r.end == len(data) and r.remaining == 1  # limit restored after the section
    r2 = Reader(data)
    r2.skip_tags("s")
    assert r2.remaining == 1


def test_empty_tag_section_is_one_byte():
    r = Reader(b"\x00")
    r.skip_tags("s")
    assert r.remaining == 0


# -- reader window and Struct base ------------------------------------------------


def test_reader_window_validated():
    with pytest.raises(ValueError):
        Reader(b"abc", 2, 1)
    with pytest.raises(ValueError):
        Reader(b"abc", 0, 9)
    r = Reader(bytearray(b"abcd"), 1, 3)
    assert r.remaining == 2


def test_struct_eq_repr_and_unhashable():
    a = ApiVersionsRequest(client_software_name="x", client_software_version="1")
    assert a == ApiVersionsRequest(client_software_name="x", client_software_version="1")
    assert a != ApiVersionsRequest(client_software_name="y", client_software_version="1")
    assert a != "x"
    assert repr(a) == "ApiVersionsRequest(client_software_name='x', client_software_version='1')"
    with pytest.raises(TypeError):
        hash(a)
    assert repr(ApiVersionsResponse.ApiVersion()).startswith("ApiVersionsResponse.ApiVersion(")


def test_versions_range():
    assert 5 in Versions(3) and 2 not in Versions(3)
    assert 4 in Versions(0, 4) and 5 not in Versions(0, 4)
    assert str(Versions(9)) == "9+" and str(Versions(0, 4)) == "0-4" and str(Versions(2, 2)) == "2"


# -- framing ----------------------------------------------------------------------


def test_frame_decoder_handles_any_split():
    frames = [b"", b"a", b"hello world" * 10]
    stream = b"".join(struct.pack(">i", len(f)) + f for f in frames)
    for cut in range(len(stream) + 1):
        dec = FrameDecoder()
        got = dec.feed(stream[:cut]) + dec.feed(stream[cut:])
        assert got == frames
        assert dec.buffered == 0
    dec = FrameDecoder()
    got = [f for i in range(len(stream)) for f in dec.feed(stream[i : i + 1])]
    assert got == frames


def test_frame_size_limit_checked_before_the_body_arrives():
    dec = FrameDecoder(max_size=1024)
    with pytest.raises(ProtocolDecodeError, match="exceeds the maximum 1024"):
        dec.feed(struct.pack(">i", 1025))
    assert dec.buffered == 4  # nothing allocated for the announced body
    assert frame_size(struct.pack(">i", 1024), 1024) == 1024
    with pytest.raises(ProtocolDecodeError, match="invalid frame size -2"):
        frame_size(struct.pack(">i", -2))
    with pytest.raises(ProtocolDecodeError, match="4 bytes"):
        frame_size(b"\x00\x00")


def test_frame_errors_name_common_foreign_protocols():
    with pytest.raises(ProtocolDecodeError, match="TLS"):
        frame_size(b"\x16\x03\x01\x02")
    with pytest.raises(ProtocolDecodeError, match="HTTP"):
        FrameDecoder().feed(b"GET / HTTP/1.1\r\n")


def test_begin_end_frame():
    w = begin_frame()
    w += b"payload"
    assert end_frame(w) == b"\x00\x00\x00\x07payload"


# -- header version rules -----------------------------------------------------------


@pytest.mark.parametrize(
    ("api_key", "version", "request_v", "response_v"),
    [
        (18, 0, 1, 0),
        (18, 2, 1, 0),
        (18, 3, 2, 0),
        (18, 4, 2, 0),  # ApiVersions: response v0
        (18, 5, 2, 0),  # a future ApiVersions version is still read with header v2
        (0, 8, 1, 0),
        (0, 9, 2, 1),
        (0, 11, 2, 1),  # Produce flexible from 9
        (1, 11, 1, 0),
        (1, 12, 2, 1),  # Fetch flexible from 12
        (3, 8, 1, 0),
        (3, 9, 2, 1),  # Metadata flexible from 9
        (17, 1, 1, 0),  # SaslHandshake: never flexible
        (7, 0, 0, 0),
        (7, 3, 2, 1),  # ControlledShutdown v0: header v0
        (9999, 0, 1, 0),  # unknown api key
    ],
)
def test_header_versions(api_key, version, request_v, response_v):
    assert request_header_version(api_key, version) == request_v
    assert response_header_version(api_key, version) == response_v


def test_apiversions_v3_request_header_v2_and_response_header_v0():
    h = RequestHeader(
        request_api_key=18, request_api_version=3, correlation_id=1, client_id="rdkafka"
    )
    frame = encode_request_frame(
        h, ApiVersionsRequest(client_software_name="librdkafka", client_software_version="2.0.2")
    )
    # the captured kcat request (CLIENTS.md section 5)
    assert frame.hex() == (
        "000000240012000300000001000772646b61666b61000b6c696272646b61666b6106322e302e3200"
    )
    resp = encode_response_frame(18, 3, 1, ApiVersionsResponse())
    assert resp[4:8] == b"\x00\x00\x00\x01" and resp[8:10] == b"\x00\x00"  # no header tag byte


def test_flexible_response_header_has_tag_byte():
    frame = encode_response_frame(3, 12, 77, MetadataResponse())
    assert frame[4:9] == b"\x00\x00\x00\x4d\x00"


def test_unknown_api_key_and_version_are_answerable():
    for key, version in ((9999, 0), (18, 5), (0, 12)):
        h = RequestHeader(
            request_api_key=key, request_api_version=version, correlation_id=33, client_id="c"
        )
        w = Writer()
        h.write(w, request_header_version(key, version))
        w += b"\x00body?"
        header, reader = decode_request_header(bytes(w))
        assert header.correlation_id == 33
        with pytest.raises(UnsupportedVersionError):
            decode_request_body(header, reader)


def test_trailing_bytes_after_a_request_are_ignored_like_kafka():
    # librdkafka 2.16's AdminClient.list_topics sends Metadata v12 with 3 extra bytes;
    # Kafka's parser ignores what follows the body, so must we.
    librdkafka_metadata_v12 = bytes.fromhex("0003000c00000003000772646b61666b610000000000010000")
    header, body = decode_request(librdkafka_metadata_v12)
    assert header.request_api_version == 12
    assert body.topics is None and body.allow_auto_topic_creation is False
    h = RequestHeader(request_api_key=18, request_api_version=0, correlation_id=1, client_id="c")
    frame = encode_request_frame(h, ApiVersionsRequest())
    assert decode_request(frame[4:] + b"\x00")[1] == ApiVersionsRequest()
