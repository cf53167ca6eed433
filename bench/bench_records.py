"""Benchmarks for pystream._core.records (RecordBatch v2).

Run:  PYTHONPATH=src python -m pytest bench/bench_records.py --benchmark-only -q

Each benchmark stores its unit of work in ``extra_info`` (records or bytes
per call), so records/s = records / mean and GB/s = bytes / mean; add
``--benchmark-json=out.json`` to get them machine-readable.
"""

from __future__ import annotations

from collections import deque

import pytest

from pystream._core import records as R

VALUE = bytes(range(100))
RECORDS_1MIB = ((1 << 20) - 61) // 110  # 100-byte value + ~10 bytes of record framing
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


@pytest.fixture(scope="module")
def batch_1mib() -> bytes:
    data = R.build_batch_from_values([VALUE] * RECORDS_1MIB, timestamp=1_700_000_000_000)
    assert abs(len(data) - (1 << 20)) < 1 << 13
    return data


def _per_call(benchmark, records: int = 0, nbytes: int = 0) -> None:
    benchmark.extra_info["records_per_call"] = records
    benchmark.extra_info["bytes_per_call"] = nbytes


# ---------------------------------------------------------------- iteration


def _drain(it) -> None:
    deque(it, maxlen=0)  # consume at C speed: measures the iterator, not a Python loop


def test_iterate_records(benchmark, batch_1mib):
    """Record objects, CRC checked (what a consumer does)."""
    _per_call(benchmark, RECORDS_1MIB, len(batch_1mib))
    benchmark(lambda: _drain(R.iter_records(batch_1mib)))
    assert len(R.RecordBatch(batch_1mib).records()) == RECORDS_1MIB


def test_iterate_records_no_crc(benchmark, batch_1mib):
    """Record objects, CRC not checked (e.g. the broker re-reading its own log)."""
    _per_call(benchmark, RECORDS_1MIB, len(batch_1mib))
    benchmark(lambda: _drain(R.iter_records(batch_1mib, check_crc=False)))


def test_iterate_records_python_loop(benchmark, batch_1mib):
    """Record objects consumed by a Python for-loop touching each value."""
    _per_call(benchmark, RECORDS_1MIB, len(batch_1mib))

    def run():
        n = 0
        for rec in R.iter_records(batch_1mib):
            n += len(rec.value)
        return n

    assert benchmark(run) == RECORDS_1MIB * len(VALUE)


def test_iterate_kafka_python_reference(benchmark, batch_1mib):
    """kafka-python's pure-Python reader on the same batch, for scale."""
    from kafka.record.default_records import DefaultRecordBatch

    _per_call(benchmark, RECORDS_1MIB, len(batch_1mib))
    benchmark.pedantic(lambda: _drain(DefaultRecordBatch(batch_1mib)), rounds=3, iterations=1)


def test_index_records(benchmark, batch_1mib):
    """No per-record objects: offsets/timestamps/positions into numpy arrays."""
    _per_call(benchmark, RECORDS_1MIB, len(batch_1mib))
    ix = benchmark(R.index_records, batch_1mib)
    assert len(ix) == RECORDS_1MIB


# ---------------------------------------------------------------- produce path


def test_validate_produce_records_1mib(benchmark, batch_1mib):
    _per_call(benchmark, RECORDS_1MIB, len(batch_1mib))
    info = benchmark(R.validate_produce_records, batch_1mib)
    assert info.record_count == RECORDS_1MIB


@pytest.mark.parametrize("codec", [0, 3], ids=["none", "lz4"])
@pytest.mark.parametrize("records", [100, 1000])
@pytest.mark.parametrize("walk", [False, True], ids=["header-only", "records-walked"])
def test_validate_produce_100b_records(benchmark, records, codec, walk):
    """A typical producer batch of ``records`` x 100 B: header + CRC only (walk=False, the
    check before per-record validation) against what Log.append asks for (walk=True:
    every record parsed, compressed batches decompressed, CreateTime window checked)."""
    batch = R.build_batch_from_values(
        [VALUE] * records,
        [b"key-%d" % i for i in range(records)],
        1_700_000_000_000,
        compression=codec,
    )
    _per_call(benchmark, records, len(batch))
    kwargs = {}
    if walk:
        kwargs = dict(
            walk_records=True,
            now_ms=1_700_000_000_000,
            timestamp_before_max_ms=3_600_000,
            timestamp_after_max_ms=3_600_000,
            topic_partition="bench-0",
        )
    info = benchmark(lambda: R.validate_produce_records(batch, 1 << 20, **kwargs))
    assert info.record_count == records


def test_assign_offsets_1mib(benchmark, batch_1mib):
    buf = bytearray(batch_1mib)
    _per_call(benchmark, RECORDS_1MIB, len(buf))
    assert benchmark(R.assign_offsets, buf, 1000, 3) == 1000 + RECORDS_1MIB


def test_validate_and_assign_1mib(benchmark, batch_1mib):
    """The broker's produce hot path: validate, then patch offsets in place."""
    buf = bytearray(batch_1mib)
    _per_call(benchmark, RECORDS_1MIB, len(buf))

    def run():
        R.validate_produce_records(buf)
        return R.assign_offsets(buf, 0, 3)

    assert benchmark(run) == RECORDS_1MIB


def test_assign_offsets_log_append_time_1mib(benchmark, batch_1mib):
    """LogAppendTime: also re-stamps max_timestamp and recomputes the CRC."""
    buf = bytearray(batch_1mib)
    _per_call(benchmark, RECORDS_1MIB, len(buf))
    assert benchmark(R.assign_offsets, buf, 0, 3, 1_700_000_000_001) == RECORDS_1MIB


# ---------------------------------------------------------------- building

VALUES_1000 = [VALUE] * 1000


def test_build_from_values_1000(benchmark):
    _per_call(benchmark, 1000)
    data = benchmark(R.build_batch_from_values, VALUES_1000, None, 1_700_000_000_000)
    assert R.read_batch_header(data).record_count == 1000


def test_builder_append_1000(benchmark):
    _per_call(benchmark, 1000)

    def run():
        b = R.RecordBatchBuilder()
        for v in VALUES_1000:
            b.append(1_700_000_000_000, None, v)
        return b.build()

    assert R.read_batch_header(benchmark(run)).record_count == 1000


# ---------------------------------------------------------------- per codec


@pytest.mark.parametrize("codec", list(CODECS), ids=list(CODECS.values()))
def test_build_codec_1000(benchmark, codec):
    _per_call(benchmark, 1000)
    data = benchmark(
        R.build_batch_from_values, VALUES_1000, None, 1_700_000_000_000, compression=codec
    )
    assert R.read_batch_header(data).compression == codec


@pytest.mark.parametrize("codec", list(CODECS), ids=list(CODECS.values()))
def test_iterate_codec_1000(benchmark, codec):
    data = R.build_batch_from_values(VALUES_1000, None, 1_700_000_000_000, compression=codec)
    _per_call(benchmark, 1000)
    benchmark(lambda: _drain(R.iter_records(data)))
