"""CRC-32C throughput: pystream's core against the `crc32c` PyPI package.

Run: PYTHONPATH=src python -m pytest bench/bench_crc32c.py --benchmark-only -q
MB/s = size / mean time; the target is ours >= 90% of the package on 1 MiB.
"""

import random

import crc32c as reference
import pytest

from pystream._core.crc32c import crc32c, crc32c_table

SIZES = {"4KiB": 4096, "1MiB": 1 << 20}
IMPLS = {"pystream": crc32c, "pystream-table": crc32c_table, "crc32c-pkg": reference.crc32c}


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("size", list(SIZES))
def test_crc32c(benchmark, impl, size):
    data = random.Random(0).randbytes(SIZES[size])
    fn = IMPLS[impl]
    benchmark.group = f"crc32c {size}"
    benchmark.extra_info["MB/s"] = 0.0
    # Call positionally, as real code does: benchmark(fn, data) would go through
    # fn(*args, **{}), a slower calling convention for Cython functions.
    result = benchmark(lambda: fn(data))
    assert result == reference.crc32c(data)
    benchmark.extra_info["MB/s"] = round(len(data) / benchmark.stats.stats.mean / 1e6, 1)
