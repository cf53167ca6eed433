"""``pystream bench produce|consume|e2e`` as a subprocess against one real broker
(topics are named per test)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_process import BrokerProcess
from cli_helpers import ENV, PYSTREAM, assert_one_line_error, run

from pystream.client import AdminClient, TopicPartition


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for the module, with 5 records in topic ``few`` (the error cases')."""
    process = BrokerProcess(tmp_path_factory.mktemp("bench") / "broker").start()
    try:
        run(
            "bench",
            "produce",
            "--topic",
            "few",
            "--num-records",
            "5",
            "--bootstrap-server",
            process.bootstrap,
        )
        yield process
    finally:
        process.close()


def high_watermarks(broker: BrokerProcess, topic: str) -> list[int]:
    """Each partition's high watermark, in partition order."""
    with AdminClient(broker.bootstrap) as admin:
        count = len(admin.describe_topics([topic])[topic].partitions)
        latest = admin.list_offsets({TopicPartition(topic, p): "latest" for p in range(count)})
    return [latest[TopicPartition(topic, p)] for p in range(count)]


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
        (
            ("bench", "produce", "--topic", "few", "--records", "5", "--processes", "0"),
            "--processes",
        ),
        (("bench", "consume", "--topic", "few", "--records", "5", "--runs", "0"), "--runs"),
        (
            ("bench", "produce", "--topic", "new", "--records", "5", "--partitions", "0"),
            "--partitions",
        ),
        (
            ("bench", "produce", "--topic", "few", "--records", "5", "--partitions", "3"),
            "'few' exists with 1 partitions, not --partitions 3",
        ),
        (
            ("bench", "consume", "--topic", "few", "--records", "5", "--processes", "2"),
            "--processes 2 needs as many partitions",
        ),
        (
            ("bench", "consume", "--topic", "few", "--records", "5", "--partitions", "2"),
            "'few' exists with 1 partitions, not --partitions 2",
        ),
    ],
)
def test_bench_errors_are_one_line(
    broker: BrokerProcess, args: tuple[str, ...], needle: str
) -> None:
    result = run(*args, "--bootstrap-server", broker.bootstrap, check=False)
    assert_one_line_error(result, needle)


def test_processes_and_partitions_produce_exactly_the_total(broker: BrokerProcess) -> None:
    """3 processes share 3001 records over 4 new partitions, a 100-record batch at a time
    (batch.size=10000), with send_batch; the watermarks hold exactly the total."""
    out = run(
        "bench",
        "produce",
        "--topic",
        "spread",
        "--records",
        "3001",
        "--partitions",
        "4",
        "--processes",
        "3",
        "--api",
        "send_batch",
        "--producer-property",
        "batch.size=10000",
        "--json",
        "--bootstrap-server",
        broker.bootstrap,
    )
    result = _last_json(out.stdout)
    assert (result["records"], result["stored"], result["processes"]) == (3001, 3001, 3)
    assert result["partitions"] == 4 and result["api"] == "send_batch"
    assert result["latency_p50_ms"] <= result["latency_p99_ms"]
    highs = high_watermarks(broker, "spread")
    assert sum(highs) == 3001 and min(highs) > 0, highs

    # send() with keys: murmur2 spreads them; the summary counts what the partitions hold.
    keyed = _last_json(
        run(
            "bench",
            "produce",
            "--topic",
            "keyed",
            "--records",
            "3000",
            "--partitions",
            "3",
            "--keyed",
            "--json",
            "--bootstrap-server",
            broker.bootstrap,
        ).stdout
    )
    highs = high_watermarks(broker, "keyed")
    assert keyed["stored"] == keyed["records"] == sum(highs) == 3000 and min(highs) > 0, highs


def test_compare_prints_both_clients_and_consume_in_processes(broker: BrokerProcess) -> None:
    out = run(
        "bench",
        "produce",
        "--topic",
        "versus",
        "--records",
        "2000",
        "--partitions",
        "2",
        "--compare",
        "--runs",
        "2",
        "--producer-property",
        "batch.size=10000",  # 100 records a partition at a time: both partitions get some
        "--json",
        "--bootstrap-server",
        broker.bootstrap,
    )
    lines = out.stdout.strip().splitlines()
    table = {
        line.split()[0]: line
        for line in lines
        if line.split()[0] in ("pystream", "confluent-kafka", "pystream/confluent")
    }
    assert set(table) == {"pystream", "confluent-kafka", "pystream/confluent"}, out.stdout
    assert lines[0].startswith(("pystream: 2000 records sent", "confluent-kafka: 2000"))
    document = json.loads(lines[-1])
    assert document["runs"] == 2 and set(document["clients"]) == {"pystream", "confluent"}
    for summary in document["clients"].values():
        assert [r["stored"] for r in summary["runs"]] == [2000, 2000]
        assert summary["min"]["records_per_sec"] <= summary["median"]["records_per_sec"]
    assert document["ratio"]["records_per_sec"] > 0
    assert sum(high_watermarks(broker, "versus")) == 8000  # 2 clients x 2 runs x 2000

    # Both consumers, two processes each (one partition each), read 5000 of the 8000: 2500
    # from the start of each partition, stopping mid-partition.
    consumed = json.loads(
        run(
            "bench",
            "consume",
            "--topic",
            "versus",
            "--records",
            "5000",
            "--processes",
            "2",
            "--compare",
            "--json",
            "--bootstrap-server",
            broker.bootstrap,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    for client in ("pystream", "confluent"):
        (only,) = consumed["clients"][client]["runs"]
        assert (only["records"], only["processes"], only["partitions"]) == (5000, 2, 2)


def test_compare_without_confluent_kafka(broker: BrokerProcess, tmp_path: Path) -> None:
    """A package named confluent_kafka that fails to import stands in for its absence."""
    (tmp_path / "confluent_kafka").mkdir()
    (tmp_path / "confluent_kafka" / "__init__.py").write_text(
        "raise ImportError(\"No module named 'confluent_kafka'\")\n"
    )
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path), ENV["PYTHONPATH"]])}
    result = subprocess.run(
        [
            *PYSTREAM,
            "bench",
            "produce",
            "--topic",
            "few",
            "--records",
            "5",
            "--compare",
            "--bootstrap-server",
            broker.bootstrap,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert_one_line_error(result, "--compare needs the confluent-kafka package")


def test_librdkafka_settings_are_bench_e2e_ones() -> None:
    """--compare's librdkafka producer is bench/e2e.py's (which cannot import pystream)."""
    from test_bench_e2e import e2e

    from pystream.cli.bench_workload import LIBRDKAFKA_PRODUCER

    assert e2e.throughput_producer_settings() == LIBRDKAFKA_PRODUCER
