"""Connect's per-record conversion costs: converters and an SMT chain, one record at a
time, as a task calls them (no broker: the end-to-end figures are the runtime's).

Run: PYTHONPATH=src python -m pytest bench/bench_connect_convert.py --benchmark-only -q
records/s = 1 / mean time.  Context: issue 17's file pipeline target is 100k lines/s
of 100 B, a budget of 10 us per line for everything a worker does; StringConverter
(the file connectors' converter) should take well under 1 us of it.
"""

from __future__ import annotations

import pytest

from pystream.connect.api import SourceRecord
from pystream.connect.converters import JsonConverter, StringConverter
from pystream.connect.data import Schema
from pystream.connect.transforms import TransformationChain

LINE = "x" * 100
STRUCT = Schema.struct(
    [(f"f{i}", Schema("string") if i % 2 else Schema("int64")) for i in range(10)]
)
VALUE = {f"f{i}": ("v" * 8 if i % 2 else i * 1000) for i in range(10)}


def _converter(cls, **configs):
    converter = cls()
    converter.configure(configs, False)
    return converter


CASES = {
    "string-write-100B": (_converter(StringConverter), None, LINE),
    "json-write-struct10": (_converter(JsonConverter), STRUCT, VALUE),
    "json-write-schemaless10": (
        _converter(JsonConverter, **{"schemas.enable": "false"}),
        None,
        VALUE,
    ),
}


def _records_per_second(benchmark) -> None:
    benchmark.extra_info["records/s"] = round(1 / benchmark.stats.stats.mean)


@pytest.mark.parametrize("case", list(CASES))
def test_from_connect(benchmark, case):
    converter, schema, value = CASES[case]
    benchmark.group = "connect from_connect_data"
    data = benchmark(lambda: converter.from_connect_data("t", schema, value))
    assert converter.to_connect_data("t", data).value == value
    _records_per_second(benchmark)


@pytest.mark.parametrize("case", list(CASES))
def test_to_connect(benchmark, case):
    converter, schema, value = CASES[case]
    data = converter.from_connect_data("t", schema, value)
    benchmark.group = "connect to_connect_data"
    result = benchmark(lambda: converter.to_connect_data("t", data))
    assert result.value == value
    _records_per_second(benchmark)


def test_smt_chain(benchmark):
    # Kafka's quickstart chain: HoistField then InsertField on every line.
    chain = TransformationChain.from_config(
        {
            "transforms": "MakeMap,InsertSource",
            "transforms.MakeMap.type": "HoistField$Value",
            "transforms.MakeMap.field": "line",
            "transforms.InsertSource.type": "InsertField$Value",
            "transforms.InsertSource.static.field": "data_source",
            "transforms.InsertSource.static.value": "test-file-source",
        }
    )
    record = SourceRecord("t", None, None, None, Schema("string"), LINE)
    benchmark.group = "connect SMT chain"
    out = benchmark(lambda: chain.apply(record))
    assert out.value == {"line": LINE, "data_source": "test-file-source"}
    _records_per_second(benchmark)
