"""Codec dispatch: round trips, compatibility with kafka-python's codecs, bad input."""

import json
import random
import struct
import threading
import tracemalloc
import zlib

import cramjam
import lz4.frame
import pytest
import zstandard
from kafka import codec as kc

from pystream._core import compression as comp
from pystream._core.compression import (
    GZIP,
    LZ4,
    NONE,
    SNAPPY,
    ZSTD,
    codec_from_name,
    codec_name,
    compress,
    decompress,
)
from pystream.errors import CorruptMessageError, UnsupportedCompressionTypeError

CODECS = [NONE, GZIP, SNAPPY, LZ4, ZSTD]
COMPRESSED = [GZIP, SNAPPY, LZ4, ZSTD]
needs_snappy = pytest.mark.skipif(
    not kc.has_snappy(), reason="kafka-python's snappy codec needs python-snappy"
)


def records_like(n: int, seed: int = 0) -> bytes:
    rnd = random.Random(seed)
    out = bytearray()
    while len(out) < n:
        record = {
            "user": f"u{rnd.randrange(1000)}",
            "event": rnd.choice(["click", "view"]),
            "ts": 1700000000000 + rnd.randrange(10**6),
        }
        out += json.dumps(record).encode()
    return bytes(out[:n])


SAMPLES = {
    "empty": b"",
    "one": b"x",
    "small": b"hello kafka " * 3,
    "random-1MiB": random.Random(1).randbytes(1 << 20),
    "repetitive-1MiB": b"abcdefgh" * (1 << 17),
    "records-1MiB": records_like(1 << 20),
    "odd-size": records_like(100_003, seed=2),
}


def test_compiled_extension_loaded():
    assert comp.__file__.endswith((".so", ".pyd")), "compression must be the compiled module"


def test_codec_ids_and_names():
    assert (NONE, GZIP, SNAPPY, LZ4, ZSTD) == (0, 1, 2, 3, 4)
    assert [codec_name(c) for c in CODECS] == ["none", "gzip", "snappy", "lz4", "zstd"]
    for c in CODECS:
        assert codec_from_name(codec_name(c)) == c
    assert codec_from_name("uncompressed") == NONE
    assert codec_from_name(" ZSTD ") == ZSTD
    with pytest.raises(UnsupportedCompressionTypeError, match="brotli"):
        codec_from_name("brotli")
    with pytest.raises(UnsupportedCompressionTypeError):
        codec_name(5)


@pytest.mark.parametrize("codec", [-1, 5, 7, 1000])
def test_unknown_codec_id(codec):
    with pytest.raises(UnsupportedCompressionTypeError, match=str(codec)):
        compress(codec, b"abc")
    with pytest.raises(UnsupportedCompressionTypeError):
        decompress(codec, b"abc")


@pytest.mark.parametrize("name", list(SAMPLES))
@pytest.mark.parametrize("codec", CODECS, ids=codec_name)
def test_round_trip(codec, name):
    data = SAMPLES[name]
    packed = compress(codec, data)
    assert isinstance(packed, bytes)
    out = decompress(codec, packed)
    assert isinstance(out, bytes) and out == data
    if codec != NONE and name.startswith(("repetitive", "records")):
        assert len(packed) < len(data) // 2


@pytest.mark.parametrize("codec", CODECS, ids=codec_name)
def test_accepts_any_buffer(codec):
    data = SAMPLES["odd-size"]
    packed = compress(codec, memoryview(bytearray(data))[3:])
    assert decompress(codec, bytearray(packed)) == data[3:]
    assert decompress(codec, memoryview(packed)) == data[3:]


@pytest.mark.parametrize(
    ("codec", "levels"),
    [
        (GZIP, [1, 9]),
        (LZ4, [1, 9, 17]),
        (ZSTD, [-5, 1, 19]),
    ],
)
def test_levels(codec, levels):
    data = SAMPLES["records-1MiB"][:200_000]
    for level in levels:
        assert decompress(codec, compress(codec, data, level)) == data
    with pytest.raises(ValueError, match="level"):
        compress(codec, data, 100)


# ---------------------------------------------------------------- kafka-python

ENCODERS = {
    GZIP: (kc.gzip_encode, kc.gzip_decode),
    LZ4: (kc.lz4_encode, kc.lz4_decode),
    ZSTD: (kc.zstd_encode, kc.zstd_decode),
}


@pytest.mark.parametrize("name", ["one", "small", "random-1MiB", "records-1MiB", "odd-size"])
@pytest.mark.parametrize("codec", list(ENCODERS), ids=codec_name)
def test_kafka_python_interop(codec, name):
    data = SAMPLES[name]
    encode, decode = ENCODERS[codec]
    assert decompress(codec, encode(data)) == data
    assert decode(compress(codec, data)) == data


@needs_snappy
@pytest.mark.parametrize("xerial", [True, False])
@pytest.mark.parametrize("name", ["one", "small", "random-1MiB", "records-1MiB", "odd-size"])
def test_snappy_kafka_python_interop(name, xerial):
    data = SAMPLES[name]
    assert decompress(SNAPPY, kc.snappy_encode(data, xerial_compatible=xerial)) == data
    assert kc.snappy_decode(compress(SNAPPY, data)) == data


@needs_snappy
def test_snappy_empty_from_kafka_python():
    for xerial in (True, False):
        assert decompress(SNAPPY, kc.snappy_encode(b"", xerial_compatible=xerial)) == b""


def test_snappy_writes_java_xerial_framing():
    data = SAMPLES["records-1MiB"][:100_000]
    packed = compress(SNAPPY, data)
    assert packed[:16] == b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    pos, out = 16, b""
    while pos < len(packed):  # [int32 length][raw block]*, 32 KiB per block
        (n,) = struct.unpack_from(">i", packed, pos)
        block = bytes(cramjam.snappy.decompress_raw(packed[pos + 4 : pos + 4 + n]))
        assert len(block) == min(32768, len(data) - len(out))
        out += block
        pos += 4 + n
    assert out == data


def test_snappy_xerial_little_endian_version_fields_accepted():
    data = b"redpanda wrote this " * 50
    block = bytes(cramjam.snappy.compress_raw(data))
    packed = b"\x82SNAPPY\x00" + struct.pack("<ii", 1, 1) + struct.pack(">i", len(block)) + block
    assert decompress(SNAPPY, packed) == data


def test_lz4_writes_kafka_frame_flags():
    packed = compress(LZ4, b"abc" * 1000)
    assert packed[:4] == b"\x04\x22\x4d\x18"
    flg, bd = packed[4], packed[5]
    assert flg >> 6 == 1  # version 01
    assert flg & 0x20  # independent blocks
    assert not flg & 0x18  # no content size, no content checksum
    assert not flg & 0x10  # no block checksum
    assert (bd >> 4) & 7 == 4  # 64 KiB max block size


@pytest.mark.parametrize(
    "options",
    [
        dict(store_size=True),  # content size in header
        dict(block_linked=True, store_size=False),  # dependent blocks
        dict(block_checksum=True, content_checksum=True),
        dict(block_size=lz4.frame.BLOCKSIZE_MAX4MB, store_size=False),
        dict(block_size=lz4.frame.BLOCKSIZE_MAX256KB, compression_level=12),
    ],
    ids=["sized", "linked", "checksums", "4MiB-blocks", "hc"],
)
@pytest.mark.parametrize("name", ["empty", "small", "random-1MiB", "records-1MiB"])
def test_lz4_frame_variants_from_other_writers(options, name):
    data = SAMPLES[name]
    packed = lz4.frame.compress(data, **options)
    assert decompress(LZ4, packed) == data
    assert decompress(LZ4, packed, max_size=max(len(data), 1)) == data


def test_multi_member_and_multi_frame_inputs():
    a, b = b"first " * 100, b"second " * 100
    assert decompress(GZIP, kc.gzip_encode(a) + kc.gzip_encode(b)) == a + b
    assert decompress(GZIP, zlib.compress(a)) == a  # zlib header detected too
    assert decompress(LZ4, lz4.frame.compress(a) + lz4.frame.compress(b)) == a + b
    assert (
        decompress(
            ZSTD, zstandard.ZstdCompressor().compress(a) + zstandard.ZstdCompressor().compress(b)
        )
        == a + b
    )


@pytest.mark.parametrize("name", ["small", "records-1MiB", "random-1MiB", "empty"])
@pytest.mark.parametrize("checksum", [False, True])
def test_zstd_streamed_frames_without_content_size(name, checksum):
    """Java (zstd-jni streams) and librdkafka write frames without a content size."""
    data = SAMPLES[name]
    cctx = zstandard.ZstdCompressor(write_content_size=False, write_checksum=checksum)
    packed = cctx.compress(data)
    assert zstandard.get_frame_parameters(packed).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert decompress(ZSTD, packed) == data
    # and through a streaming writer, chunk by chunk, as a producer does
    chunks = cctx.compressobj()
    streamed = b"".join(chunks.compress(data[i : i + 7000]) for i in range(0, len(data), 7000))
    streamed += chunks.flush()
    assert decompress(ZSTD, streamed) == data
    assert decompress(ZSTD, streamed, max_size=max(len(data), 1)) == data


def test_zstd_skippable_frame_ignored():
    data = b"payload " * 10
    skippable = struct.pack("<II", 0x184D2A50, 5) + b"12345"
    assert decompress(ZSTD, skippable + compress(ZSTD, data)) == data
    with pytest.raises(CorruptMessageError, match="no data frame"):
        decompress(ZSTD, skippable)


# ---------------------------------------------------------------- max_size


@pytest.mark.parametrize("codec", CODECS, ids=codec_name)
def test_max_size_enforced(codec):
    data = SAMPLES["repetitive-1MiB"]
    packed = compress(codec, data)
    assert decompress(codec, packed, max_size=len(data)) == data
    with pytest.raises(CorruptMessageError, match=str(len(data) - 1)):
        decompress(codec, packed, max_size=len(data) - 1)


def bombs():
    """~100 MiB of zeros in small packages, as each codec's real writers make them."""
    zeros = bytes(100 << 20)
    yield GZIP, zlib.compress(zeros, 9, wbits=31)
    yield SNAPPY, compress(SNAPPY, zeros)
    yield LZ4, lz4.frame.compress(zeros)
    yield ZSTD, zstandard.ZstdCompressor().compress(zeros)
    yield ZSTD, zstandard.ZstdCompressor(write_content_size=False).compress(zeros)


@pytest.mark.parametrize(
    ("codec", "packed"), list(bombs()), ids=["gzip", "snappy", "lz4", "zstd-sized", "zstd-unsized"]
)
def test_decompression_bomb_rejected(codec, packed):
    assert len(packed) < 5 << 20
    tracemalloc.start()
    try:
        with pytest.raises(CorruptMessageError, match="1048576"):
            decompress(codec, packed, max_size=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, "the cap must hold before the output is allocated"


@pytest.mark.parametrize("codec", [LZ4, ZSTD], ids=codec_name)
def test_uncapped_output_buffer_sized_by_frame_walk(codec):
    """Frames without a content size still decode with ~one output's memory."""
    data = SAMPLES["records-1MiB"] * 8
    if codec == LZ4:
        packed = compress(LZ4, data)
    else:
        packed = zstandard.ZstdCompressor(write_content_size=False).compress(data)
    tracemalloc.start()
    try:
        out = decompress(codec, packed)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out == data
    assert peak < 2.5 * len(data)


def test_snappy_size_lie_rejected_before_allocating():
    # preamble claims 4 GiB from a 6-byte block; no cap given
    with pytest.raises(CorruptMessageError, match="claims"):
        decompress(SNAPPY, b"\xff\xff\xff\xff\x0f\x00")


def test_zstd_content_size_lie_rejected():
    packed = bytearray(zstandard.ZstdCompressor().compress(b"a" * 300))
    # frame header: magic, FHD, then the content size (FHD says its width)
    fhd = packed[4]
    assert fhd >> 6 == 1 and fhd & 0x20  # 2-byte size, single segment
    packed[5:7] = struct.pack("<H", 65535)  # now claims 65535 + 256 bytes
    with pytest.raises(CorruptMessageError):
        decompress(ZSTD, bytes(packed))


# ---------------------------------------------------------------- corrupt input


def corruptions(codec):
    data = SAMPLES["records-1MiB"][:50_000]
    packed = compress(codec, data)
    yield "truncated", packed[: len(packed) // 2]
    yield "last-byte-cut", packed[:-1]
    yield "garbage", random.Random(codec).randbytes(200)
    yield "empty", b""
    flipped = bytearray(packed)
    flipped[len(flipped) // 2] ^= 0xFF
    yield "flipped", bytes(flipped)
    yield "trailing-garbage", packed + b"\x00junk"


CORRUPT_CASES = [
    pytest.param(codec, packed, id=f"{codec_name(codec)}-{label}")
    for codec in COMPRESSED
    for label, packed in corruptions(codec)
    # only gzip always carries a checksum: elsewhere a flipped byte may decode
    if not (label == "flipped" and codec != GZIP)
]


@pytest.mark.parametrize(("codec", "packed"), CORRUPT_CASES)
def test_corrupt_input_raises(codec, packed):
    with pytest.raises(CorruptMessageError, match=codec_name(codec)):
        decompress(codec, packed)


@pytest.mark.parametrize("codec", COMPRESSED, ids=codec_name)
def test_flipped_bytes_never_crash(codec):
    data = SAMPLES["records-1MiB"][:20_000]
    packed = compress(codec, data)
    rnd = random.Random(7)
    for _ in range(300):
        bad = bytearray(packed)
        for _ in range(3):
            bad[rnd.randrange(len(bad))] = rnd.randrange(256)
        try:
            out = decompress(codec, bytes(bad), max_size=len(data) * 2)
        except CorruptMessageError:
            continue
        assert len(out) <= len(data) * 2


@pytest.mark.parametrize("codec", COMPRESSED, ids=codec_name)
def test_every_truncation_rejected(codec):
    data = SAMPLES["records-1MiB"][:70_000]  # spans several blocks
    packed = compress(codec, data)
    # xerial framing has no end mark: a cut between blocks is a shorter valid
    # stream (the batch CRC is what catches that), so those cuts are left out
    whole_blocks = {16}
    while codec == SNAPPY and max(whole_blocks) < len(packed):
        end = max(whole_blocks)
        whole_blocks.add(end + 4 + struct.unpack_from(">i", packed, end)[0])
    step = max(1, len(packed) // 300)
    for cut in [*range(0, 40), *range(40, len(packed), step), len(packed) - 1]:
        if codec == SNAPPY and cut in whole_blocks:
            continue
        with pytest.raises(CorruptMessageError):
            decompress(codec, packed[:cut])


@pytest.mark.parametrize("codec", COMPRESSED, ids=codec_name)
def test_threads_share_codec_contexts_safely(codec):
    inputs = [records_like(300_000, seed=s) for s in range(4)]
    errors = []

    def work(data):
        try:
            for level in (None, 1, None):
                assert decompress(codec, compress(codec, data, level)) == data
        except Exception as e:  # surfaced below, in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(d,)) for d in inputs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize(
    "packed",
    [
        b"\x82SNAPPY\x00\x00\x00",  # header cut short
        b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1) + b"\x00\x00",  # block length cut
        b"\x82SNAPPY\x00" + struct.pack(">iii", 1, 1, 100) + b"\x05",  # block past the end
        b"\x82SNAPPY\x00" + struct.pack(">iii", 1, 1, -4) + b"\x05",  # negative length
        b"\x82SNAPPY\x00" + struct.pack(">iii", 1, 1, 0),  # empty block
        b"\xff\xff\xff\xff\xff\xff",  # bad raw preamble
    ],
)
def test_snappy_bad_framing(packed):
    with pytest.raises(CorruptMessageError, match="snappy"):
        decompress(SNAPPY, packed)
