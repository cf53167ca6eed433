"""CRC-32C against the `crc32c` PyPI package, on both our hardware and table paths."""

import random
import threading

import crc32c as reference
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pystream._core import crc32c as mod
from pystream._core.crc32c import crc32c, crc32c_table, has_hardware_crc

PATHS = [pytest.param(crc32c, id="dispatch"), pytest.param(crc32c_table, id="table")]


def rand_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def test_compiled_extension_loaded():
    assert mod.__file__.endswith((".so", ".pyd")), "crc32c must be the compiled module"


def test_hardware_used_when_cpu_has_it():
    # The reference package reports whether this CPU has a CRC-32C instruction.
    assert has_hardware_crc() == bool(reference.hardware_based)


@pytest.mark.parametrize("fn", PATHS)
def test_known_vectors(fn):
    assert fn(b"123456789") == 0xE3069283
    assert fn(b"") == 0
    assert fn(b"\x00" * 32) == 0x8A9136AA  # RFC 3720 B.4
    assert fn(b"\xff" * 32) == 0x62A8AB43
    assert fn(bytes(range(32))) == 0x46DD794E


@pytest.mark.parametrize("fn", PATHS)
def test_every_length_up_to_4096(fn):
    data = rand_bytes(4096 + 64, seed=1)
    for n in range(4097):
        # vary the start too, so each length sees different bytes and alignments
        start = n % 61
        chunk = data[start : start + n]
        assert fn(chunk) == reference.crc32c(chunk), n


@pytest.mark.parametrize("fn", PATHS)
@pytest.mark.parametrize("size", [1 << 20, (16 << 20) + 7, 3 * 8192 - 1, 3 * 8192 + 9])
def test_large_buffers(fn, size):
    data = rand_bytes(size, seed=size)
    assert fn(data) == reference.crc32c(data)


@pytest.mark.parametrize("fn", PATHS)
def test_unaligned_starts(fn):
    data = bytearray(rand_bytes(100_000, seed=2))
    view = memoryview(data)
    for offset in range(1, 8):
        for length in (0, 1, 7, 8, 9, 255, 769, 4096, 30_000, 100_000 - 8):
            part = view[offset : offset + length]
            assert fn(part) == reference.crc32c(bytes(part)), (offset, length)


@pytest.mark.parametrize("fn", PATHS)
def test_chaining_at_every_split(fn):
    data = rand_bytes(1000, seed=3)
    whole = reference.crc32c(data)
    for cut in range(len(data) + 1):
        assert fn(data[cut:], fn(data[:cut])) == whole


@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_chaining_matches_reference(a, b):
    assert crc32c(b, crc32c(a)) == crc32c(a + b) == reference.crc32c(a + b)
    assert crc32c_table(b, crc32c_table(a)) == crc32c(a + b)
    assert crc32c(b, 12345) == reference.crc32c(b, 12345)


def test_paths_agree_on_big_chained_pieces():
    data = rand_bytes(200_000, seed=4)
    crc = 0
    for i in range(0, len(data), 70_001):  # pieces big enough to release the GIL
        crc = crc32c(data[i : i + 70_001], crc)
    assert crc == crc32c_table(data) == reference.crc32c(data)


def test_buffer_kinds():
    data = rand_bytes(5000, seed=5)
    expected = reference.crc32c(data)
    assert crc32c(bytearray(data)) == expected
    assert crc32c(memoryview(data)) == expected  # read-only
    assert crc32c(memoryview(bytearray(data))) == expected  # writable
    assert crc32c(memoryview(data).toreadonly()) == expected
    assert crc32c(memoryview(data).cast("I", (1250,))) == expected  # itemsize 4
    assert crc32c(bytearray()) == 0
    assert crc32c(memoryview(b"")) == 0


def test_bad_arguments():
    with pytest.raises(TypeError):
        crc32c("text is not bytes")
    with pytest.raises(BufferError):
        crc32c(memoryview(b"abcdef")[::2])  # not contiguous
    with pytest.raises(OverflowError):
        crc32c(b"x", 1 << 32)
    with pytest.raises(OverflowError):
        crc32c(b"x", -1)


def test_threads_share_the_gil_free_path():
    """Large buffers are summed with the GIL released; results stay right."""
    data = [rand_bytes(300_000, seed=s) for s in range(4)]
    results = [None] * len(data)

    def work(i):
        for _ in range(3):
            results[i] = crc32c(data[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(data))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [reference.crc32c(d) for d in data]
