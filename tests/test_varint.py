"""Varints against kafka-python's pure-Python reference and hand-made edge cases."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.record import util as ref

from pystream._core import varint as v
from pystream.errors import CorruptMessageError

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1

SIGNED_EDGES = [
    0,
    1,
    -1,
    63,
    -64,
    64,
    -65,
    127,
    128,
    300,
    -300,
    INT32_MIN,
    INT32_MAX,
    INT64_MIN,
    INT64_MAX,
]
UNSIGNED_EDGES = [0, 1, 127, 128, 16383, 16384, 2**32 - 1, 2**32, 2**63, UINT64_MAX]


def ref_encode(value: int) -> bytes:
    out = bytearray()
    ref.encode_varint(value, out.append)
    return bytes(out)


def test_compiled_extension_loaded():
    assert v.__file__.endswith((".so", ".pyd")), "varint must be the compiled module"


@pytest.mark.parametrize("value", SIGNED_EDGES)
def test_signed_round_trip_edges(value):
    data = v.encode_varint(value)
    assert v.decode_varint(data) == (value, len(data))
    assert len(data) == v.varint_size(value) == v.size_of_varint(value)
    assert data == ref_encode(value)


@pytest.mark.parametrize("value", UNSIGNED_EDGES)
def test_unsigned_round_trip_edges(value):
    data = v.encode_uvarint(value)
    assert v.decode_uvarint(data) == (value, len(data))
    assert len(data) == v.uvarint_size(value)


def test_known_encodings():
    # protobuf documentation examples
    assert v.encode_uvarint(1) == b"\x01"
    assert v.encode_uvarint(150) == b"\x96\x01"
    assert v.encode_uvarint(300) == b"\xac\x02"
    assert v.encode_varint(-1) == b"\x01"
    assert v.encode_varint(1) == b"\x02"
    assert v.encode_varint(-2) == b"\x03"
    assert v.encode_varint(INT64_MIN) == b"\xff" * 9 + b"\x01"
    assert v.encode_uvarint(UINT64_MAX) == b"\xff" * 9 + b"\x01"


@given(st.integers(INT64_MIN, INT64_MAX))
def test_signed_matches_kafka_python(value):
    data = v.encode_varint(value)
    assert data == ref_encode(value)
    assert v.varint_size(value) == ref.size_of_varint(value)
    assert v.decode_varint(data) == ref.decode_varint(bytearray(data)) == (value, len(data))


@given(st.integers(INT32_MIN, INT32_MAX))
def test_32bit_decoders_agree(value):
    data = v.encode_varint(value)
    assert v.decode_varint32(data) == (value, len(data))
    if value >= 0:
        udata = v.encode_uvarint(value)
        assert v.decode_uvarint32(udata) == (value, len(udata))


@given(st.integers(0, UINT64_MAX), st.binary(max_size=8), st.binary(max_size=8))
def test_decode_at_position_in_larger_buffer(value, prefix, suffix):
    data = prefix + v.encode_uvarint(value) + suffix
    buf = memoryview(bytearray(data))  # writable and read-only both accepted
    for b in (data, buf, memoryview(data)):
        assert v.decode_uvarint(b, len(prefix)) == (value, len(data) - len(suffix))


def test_sequence_decoding():
    values = [5, -300, INT64_MAX, 0, INT32_MIN]
    data = b"".join(v.encode_varint(x) for x in values)
    pos, got = 0, []
    while pos < len(data):
        x, pos = v.decode_varint(data, pos)
        got.append(x)
    assert got == values


@pytest.mark.parametrize(
    "decode", [v.decode_varint, v.decode_uvarint, v.decode_varint32, v.decode_uvarint32]
)
@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff", b"\x96"])
def test_truncated_rejected(decode, data):
    with pytest.raises(CorruptMessageError):
        decode(data)


@pytest.mark.parametrize("decode", [v.decode_varint, v.decode_uvarint])
def test_truncated_mid_buffer_rejected(decode):
    data = v.encode_uvarint(2**40)
    for cut in range(len(data)):
        with pytest.raises(CorruptMessageError):
            decode(data[:cut])


@pytest.mark.parametrize(
    "data",
    [
        b"\xff" * 10 + b"\x01",  # 11 bytes
        b"\x80" * 10 + b"\x00",  # 11 bytes, even though the value is zero
        b"\xff" * 9 + b"\x02",  # 10th byte sets bit 64: overflow
        b"\xff" * 9 + b"\x81\x00",  # 10th byte has a continuation bit
    ],
)
@pytest.mark.parametrize("decode", [v.decode_varint, v.decode_uvarint])
def test_over_long_64_rejected(decode, data):
    with pytest.raises(CorruptMessageError):
        decode(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff\xff\x1f",  # 33 bits
        b"\x80\x80\x80\x80\x80\x00",  # 6 bytes
        b"\xff\xff\xff\xff\x8f\x00",  # 5th byte continues
    ],
)
@pytest.mark.parametrize("decode", [v.decode_varint32, v.decode_uvarint32])
def test_over_long_32_rejected(decode, data):
    with pytest.raises(CorruptMessageError):
        decode(data)


def test_32bit_extremes_accepted():
    assert v.decode_uvarint32(b"\xff\xff\xff\xff\x0f") == (2**32 - 1, 5)
    assert v.decode_varint32(v.encode_varint(INT32_MIN)) == (INT32_MIN, 5)


def test_bad_position_and_range():
    with pytest.raises(ValueError):
        v.decode_varint(b"\x00", -1)
    with pytest.raises(ValueError):
        v.decode_varint(b"\x00", 2)
    with pytest.raises(CorruptMessageError):
        v.decode_varint(b"\x00", 1)  # at the end: nothing to read
    with pytest.raises(OverflowError):
        v.encode_varint(INT64_MAX + 1)
    with pytest.raises(OverflowError):
        v.encode_uvarint(-1)
