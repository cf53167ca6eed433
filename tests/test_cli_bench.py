"""``pystream bench produce|consume|e2e`` as a subprocess against a real broker."""

from __future__ import annotations

import json

import pytest
from broker_process import BrokerProcess
from cli_helpers import assert_one_line_error, run


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_bench_produce_consume_e2e(broker: BrokerProcess) -> None:
    b = ("--bootstrap-server", broker.bootstrap)
    common = ("--num-records", "3000", "--record-size", "100", "--json", *b)
    produced = run("bench", "produce", "--topic", "perf", "--partitions", "2", *common)
    result = _last_json(produced.stdout)
    assert result["records"] == 3000 and result["records_per_sec"] > 0
    assert result["mb_per_sec"] > 0
    for key in ("p50", "p95", "p99", "p999", "max"):
        assert result[f"latency_{key}_ms"] >= 0
    assert result["latency_p50_ms"] <= result["latency_p99_ms"] <= result["latency_max_ms"]
    summary = produced.stdout.strip().splitlines()[0]
    assert summary.startswith("3000 records sent, ") and "ms 99.9th." in summary

    consumed = _last_json(run("bench", "consume", "--topic", "perf", *common).stdout)
    assert consumed["records"] == 3000 and consumed["records_per_sec"] > 0

    e2e = _last_json(run("bench", "e2e", "--topic", "perf-e2e", *common).stdout)
    assert e2e["records"] == 3000 and e2e["latency_max_ms"] >= e2e["latency_p50_ms"] > 0


def test_bench_throughput_cap(broker: BrokerProcess) -> None:
    out = run(
        "bench",
        "produce",
        "--topic",
        "slow",
        "--num-records",
        "400",
        "--record-size",
        "10",
        "--throughput",
        "1000",
        "--json",
        "--bootstrap-server",
        broker.bootstrap,
    )
    result = _last_json(out.stdout)
    assert result["records"] == 400
    assert result["records_per_sec"] < 1300
    assert out.stdout.count("{") == 1


def test_bench_json_without_flag_is_absent(broker: BrokerProcess) -> None:
    out = run(
        "bench",
        "produce",
        "--topic",
        "plain",
        "--num-records",
        "10",
        "--bootstrap-server",
        broker.bootstrap,
    )
    assert out.stdout.startswith("10 records sent") and "{" not in out.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("bench", "consume", "--topic", "absent", "--num-records", "5"), "absent"),
        (
            ("bench", "consume", "--topic", "few", "--num-records", "50", "--timeout-ms", "3000"),
            "only 5 of 50",
        ),
        (
            ("bench", "e2e", "--topic", "few", "--num-records", "5", "--record-size", "4"),
            "at least 8",
        ),
        (("bench", "produce", "--topic", "few", "--num-records", "0"), "--num-records"),
        (
            (
                "bench",
                "produce",
                "--topic",
                "few",
                "--num-records",
                "5",
                "--producer-property",
                "acks=maybe",
            ),
            "acks",
        ),
    ],
)
def test_bench_errors_are_one_line(
    broker: BrokerProcess, args: tuple[str, ...], needle: str
) -> None:
    run(
        "bench",
        "produce",
        "--topic",
        "few",
        "--num-records",
        "5",
        "--bootstrap-server",
        broker.bootstrap,
    )
    result = run(*args, "--bootstrap-server", broker.bootstrap, check=False)
    assert_one_line_error(result, needle)
