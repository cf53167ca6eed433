"""Compression codecs on ~1 MiB of record-batch-like data (JSON-ish records).

Run: PYTHONPATH=src python -m pytest bench/bench_compression.py --benchmark-only -q
MB/s (of uncompressed data) = 1 MiB / mean time.  The "library" rows call the
codec library directly, to show what our dispatch and framing cost on top.
"""

import json
import random

import lz4.frame
import pytest
import zstandard

from pystream._core.compression import (
    GZIP,
    LZ4,
    NONE,
    SNAPPY,
    ZSTD,
    codec_name,
    compress,
    decompress,
)

CODECS = [NONE, GZIP, SNAPPY, LZ4, ZSTD]


def record_batch_like(size: int = 1 << 20) -> bytes:
    """Kafka-ish records: varint-prefixed JSON values with keys from a small set."""
    rnd = random.Random(42)
    users = [f"user-{i:05d}" for i in range(500)]
    out = bytearray()
    offset = 0
    while len(out) < size:
        value = json.dumps(
            {
                "user": rnd.choice(users),
                "event": rnd.choice(["page_view", "click", "add_to_cart", "purchase"]),
                "url": f"/products/{rnd.randrange(10_000)}",
                "ts": 1_700_000_000_000 + offset * 17 + rnd.randrange(50),
                "session": rnd.getrandbits(64),
                "price": round(rnd.uniform(1, 500), 2),
            }
        ).encode()
        out += bytes([offset & 0x7F, len(value) & 0x7F]) + value
        offset += 1
    return bytes(out[:size])


DATA = record_batch_like()


def _mbps(benchmark) -> None:
    benchmark.extra_info["MB/s"] = round(len(DATA) / benchmark.stats.stats.mean / 1e6, 1)


@pytest.mark.parametrize("codec", CODECS, ids=codec_name)
def test_compress(benchmark, codec):
    benchmark.group = "compress 1 MiB"
    packed = benchmark(lambda: compress(codec, DATA))
    benchmark.extra_info["ratio"] = round(len(DATA) / len(packed), 2)
    _mbps(benchmark)


@pytest.mark.parametrize("codec", CODECS, ids=codec_name)
def test_decompress(benchmark, codec):
    benchmark.group = "decompress 1 MiB"
    packed = compress(codec, DATA)
    out = benchmark(lambda: decompress(codec, packed, max_size=8 << 20))
    assert out == DATA
    _mbps(benchmark)


def test_decompress_zstd_streamed_frame(benchmark):
    """Frames without a content size, as Java and librdkafka write them."""
    benchmark.group = "decompress 1 MiB"
    packed = zstandard.ZstdCompressor(write_content_size=False).compress(DATA)
    assert benchmark(lambda: decompress(ZSTD, packed, max_size=8 << 20)) == DATA
    _mbps(benchmark)


@pytest.mark.parametrize("lib", ["lz4.frame", "zstandard"])
def test_decompress_library(benchmark, lib):
    benchmark.group = "decompress 1 MiB"
    if lib == "zstandard":
        packed, fn = compress(ZSTD, DATA), zstandard.ZstdDecompressor().decompress
    else:
        packed, fn = compress(LZ4, DATA), lz4.frame.decompress
    assert benchmark(lambda: fn(packed)) == DATA
    _mbps(benchmark)
