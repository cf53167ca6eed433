"""bench/e2e.py, the end-to-end benchmark runner: every piece that needs no broker.

Argument parsing, record generation, the percentile and throughput arithmetic,
verdicts, the result table and JSON, the client settings (checked by librdkafka
itself, without connecting) and the produce/consume loops against fake clients.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from rich.console import Console

E2E_PATH = Path(__file__).resolve().parent.parent / "bench" / "e2e.py"


def load_e2e() -> ModuleType:
    """Import bench/e2e.py (bench/ is not a package) under the name ``bench_e2e``."""
    spec = importlib.util.spec_from_file_location("bench_e2e", E2E_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


e2e = load_e2e()


def parse_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run parse_args expecting a usage error; return its single stderr line."""
    with pytest.raises(SystemExit) as info:
        e2e.parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("e2e.py: error: ")
    return err


# --------------------------------------------------------------------------- arguments


def test_defaults() -> None:
    opts = e2e.parse_args(["--bootstrap", "127.0.0.1:9092"])
    assert [str(b) for b in opts.bootstraps] == ["127.0.0.1:9092"]
    assert [s.name for s in opts.scenarios] == list(e2e.SCENARIOS)
    assert opts.records is None
    assert opts.producers == 4
    assert opts.timeout == 120
    assert (opts.latency_rate, opts.latency_duration, opts.latency_warmup) == (5000, 10, 2)
    assert not opts.all_delivery_reports
    assert opts.json_path is None


def test_issue_scenarios_exist_with_their_targets() -> None:
    s = e2e.SCENARIOS
    assert (s["produce-100b"].record_size, s["produce-100b"].default_records) == (100, 1_000_000)
    assert (s["produce-1k"].record_size, s["produce-1k"].default_records) == (1024, 200_000)
    assert s["produce-100b"].target == e2e.Target("records_per_s", 1_000_000)
    assert s["produce-1k"].target == e2e.Target("mb_per_s", 300)
    assert s["consume-100b"].target == e2e.Target("records_per_s", 1_000_000)
    assert s["latency"].target == e2e.Target("p99_ms", 5)
    for name in ("multi-producer", "kcat-produce", "consume-1k"):
        assert name in s


def test_several_bootstraps_keep_their_order() -> None:
    opts = e2e.parse_args(
        [
            "--bootstrap",
            "127.0.0.1:9092",
            "--bootstrap",
            "[::1]:9093",
            "--bootstrap",
            "localhost:1,localhost:2",
        ]
    )
    assert [str(b) for b in opts.bootstraps] == [
        "127.0.0.1:9092",
        "[::1]:9093",
        "localhost:1,localhost:2",
    ]
    assert opts.bootstraps[1].servers == (("::1", 9093),)


def test_scenarios_comma_separated_and_repeated_without_duplicates() -> None:
    opts = e2e.parse_args(
        ["--bootstrap", "h:1", "--scenario", "latency,produce-1k", "--scenario", "latency"]
    )
    assert [s.name for s in opts.scenarios] == ["latency", "produce-1k"]


def test_all_scenarios_keyword() -> None:
    opts = e2e.parse_args(["--bootstrap", "h:1", "--scenario", "all"])
    assert len(opts.scenarios) == len(e2e.SCENARIOS)


def test_unknown_scenario_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    err = parse_error(capsys, ["--bootstrap", "h:1", "--scenario", "produce-10b"])
    assert "unknown scenario 'produce-10b'" in err


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("localhost", "expected host:port"),
        ("h:0", "port must be"),
        ("h:70000", "port must be"),
        ("h:x", "port must be"),
        (":9092", "missing host"),
        ("::1:9092", "brackets"),
        ("[::1]9092", "expected [address]:port"),
        (",", "empty bootstrap"),
    ],
)
def test_bad_bootstrap_is_one_line_error(
    capsys: pytest.CaptureFixture[str], value: str, reason: str
) -> None:
    assert reason in parse_error(capsys, ["--bootstrap", value])


def test_missing_bootstrap_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--bootstrap" in parse_error(capsys, [])


def test_duplicate_bootstrap_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    err = parse_error(capsys, ["--bootstrap", "h:1", "--bootstrap", "h:1"])
    assert "twice" in err


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("1000000", 1_000_000),
        ("1_000_000", 1_000_000),
        ("200k", 200_000),
        ("1m", 1_000_000),
        ("1M", 1_000_000),
        ("7", 7),
    ],
)
def test_record_counts(text: str, count: int) -> None:
    assert e2e.parse_args(["--bootstrap", "h:1", "--records", text]).records == count


@pytest.mark.parametrize("text", ["0", "-5", "abc", "1.5", "k", ""])
def test_bad_record_count(capsys: pytest.CaptureFixture[str], text: str) -> None:
    assert "--records" in parse_error(capsys, ["--bootstrap", "h:1", "--records", text])


@pytest.mark.parametrize(
    "argv",
    [
        ["--producers", "0"],
        ["--timeout", "0"],
        ["--timeout", "nan"],
        ["--latency-rate", "-1"],
        ["--latency-warmup", "-1"],
        ["--latency-duration", "2", "--latency-warmup", "2"],
        ["--delivery-reports", "some"],
    ],
)
def test_bad_numbers_and_choices(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    parse_error(capsys, ["--bootstrap", "h:1", *argv])


def test_json_directory_must_exist(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = parse_error(capsys, ["--bootstrap", "h:1", "--json", str(tmp_path / "no" / "x.json")])
    assert "does not exist" in err
    opts = e2e.parse_args(["--bootstrap", "h:1", "--json", str(tmp_path / "x.json")])
    assert opts.json_path == tmp_path / "x.json"


def test_record_count_per_scenario() -> None:
    opts = e2e.parse_args(["--bootstrap", "h:1"])
    assert opts.record_count(e2e.SCENARIOS["produce-100b"]) == 1_000_000
    assert opts.record_count(e2e.SCENARIOS["consume-1k"]) == 200_000
    assert opts.record_count(e2e.SCENARIOS["latency"]) == 50_000  # 5,000/s for 10 s
    opts = e2e.parse_args(
        [
            "--bootstrap",
            "h:1",
            "--records",
            "10k",
            "--latency-rate",
            "100",
            "--latency-duration",
            "3",
            "--latency-warmup",
            "1",
        ]
    )
    assert opts.record_count(e2e.SCENARIOS["produce-1k"]) == 10_000
    assert opts.record_count(e2e.SCENARIOS["latency"]) == 300


def test_delivery_reports_all() -> None:
    opts = e2e.parse_args(["--bootstrap", "h:1", "--delivery-reports", "all"])
    assert opts.all_delivery_reports


def test_loopback_hosts() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost"):
        assert e2e.is_loopback_host(host), host
    for host in ("10.0.0.1", "192.168.1.20", "8.8.8.8", "2001:db8::1"):
        assert not e2e.is_loopback_host(host), host


# --------------------------------------------------------------------------- records


@pytest.mark.parametrize("size", [1, 8, 11, 26, 100, 1024, 4000])
def test_values_have_exact_size_and_no_newline(size: int) -> None:
    values = e2e.make_values(size, pool=64)
    assert all(len(v) == size for v in values)
    assert all(b"\n" not in v and v.isascii() for v in values)


def test_values_are_distinct() -> None:
    assert len(set(e2e.make_values(100))) == e2e.VALUE_POOL
    assert len(set(e2e.make_values(1024))) == e2e.VALUE_POOL


def test_value_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        e2e.make_value(0, 0)


def test_cycled() -> None:
    assert list(e2e.cycled([b"a", b"b", b"c"], 7)) == [b"a", b"b", b"c", b"a", b"b", b"c", b"a"]
    assert list(e2e.cycled([b"a"], 0)) == []


@pytest.mark.parametrize("count", [0, 5, 64, 1000, 2049])
def test_records_file_has_one_record_per_line(tmp_path: Path, count: int) -> None:
    values = e2e.make_values(100, pool=64)
    path = tmp_path / "records.txt"
    written = e2e.write_records_file(path, values, count)
    data = path.read_bytes()
    assert written == len(data) == count * 101
    lines = data.split(b"\n")
    assert lines[-1] == b""  # every record ends with a newline
    assert lines[:-1] == list(e2e.cycled(values, count))


def test_records_file_rejects_newlines(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        e2e.write_records_file(tmp_path / "x", [b"a\nb"], 1)


def test_timestamp_round_trip() -> None:
    value = e2e.encode_timestamp(1_234_567_890_123_456_789, 100)
    assert len(value) == 100
    assert e2e.decode_timestamp(value) == 1_234_567_890_123_456_789
    with pytest.raises(ValueError):
        e2e.encode_timestamp(1, 7)


# --------------------------------------------------------------------------- arithmetic


def test_latency_percentiles() -> None:
    # Receive times 1..1000 ms after sending: linear interpolation between ranks.
    send = np.zeros(1000, np.int64)
    recv = np.arange(1, 1001, dtype=np.int64) * 1_000_000
    summary = e2e.latency_summary(send, recv, cutoff_ns=0)
    assert summary["p50"] == pytest.approx(500.5)
    assert summary["p99"] == pytest.approx(990.01)
    assert summary["p999"] == pytest.approx(999.001)
    assert summary["max"] == pytest.approx(1000.0)
    assert summary["samples"] == 1000


def test_latency_warmup_is_discarded() -> None:
    # First half sent before the cutoff with 100 ms latency, second half 2 ms.
    send = np.arange(200, dtype=np.int64) * 1_000_000
    recv = send + np.where(send < 100_000_000, 100_000_000, 2_000_000)
    summary = e2e.latency_summary(send, recv, cutoff_ns=100_000_000)
    assert summary["samples"] == 100
    assert summary["p50"] == summary["max"] == pytest.approx(2.0)


def test_latency_summary_errors() -> None:
    with pytest.raises(ValueError, match="warm-up"):
        e2e.latency_summary(np.array([1, 2]), np.array([3, 4]), cutoff_ns=10)
    with pytest.raises(ValueError, match="length"):
        e2e.latency_summary(np.array([1, 2]), np.array([3]), cutoff_ns=0)


def test_throughput() -> None:
    assert e2e.throughput(1_000_000, 100_000_000, 2.0) == (500_000, 50.0)
    with pytest.raises(ValueError):
        e2e.throughput(1, 1, 0)


@pytest.mark.parametrize(("total", "parts"), [(1_000_000, 4), (10, 3), (2, 4), (7, 1)])
def test_split_count(total: int, parts: int) -> None:
    counts = e2e.split_count(total, parts)
    assert len(counts) == parts and sum(counts) == total
    assert max(counts) - min(counts) <= 1


def test_aggregate_window_spans_first_start_to_last_end() -> None:
    spans = [(1_000_000_000, 3_000_000_000), (1_500_000_000, 4_000_000_000)]
    assert e2e.aggregate_window(spans) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        e2e.aggregate_window([])


def test_deadline() -> None:
    assert not e2e.Deadline(60).expired()
    expired = e2e.Deadline(0)
    assert expired.expired() and expired.remaining() == 0 and expired.remaining(0.5) == 0.5
    with pytest.raises(e2e.BenchError, match="timed out after 0 s while consuming"):
        expired.check("consuming")


def test_compare_stored() -> None:
    assert e2e.compare_stored(100, 100) == "ok"
    assert e2e.compare_stored(101, 100) == "more"
    assert e2e.compare_stored(99, 100) == "fewer"


# --------------------------------------------------------------------------- verdicts and output


def test_target_labels_and_comparison() -> None:
    assert e2e.SCENARIOS["produce-100b"].target.label == ">= 1M rec/s"
    assert e2e.SCENARIOS["produce-1k"].target.label == ">= 300 MB/s"
    assert e2e.SCENARIOS["latency"].target.label == "p99 <= 5 ms"
    assert e2e.Target("records_per_s", 1e6).met_by(1e6)
    assert not e2e.Target("mb_per_s", 300).met_by(299.9)
    assert e2e.Target("p99_ms", 5).met_by(5.0) and not e2e.Target("p99_ms", 5).met_by(5.01)


def make(scenario: str, records: int = 1_000_000, seconds: float = 0.5, **kw: Any) -> Any:
    """A result for ``scenario`` as run_scenario would build it."""
    s = e2e.SCENARIOS[scenario]
    m = e2e.Measurement(records, records * s.record_size, seconds, kw.get("latency"))
    return e2e.make_result(s, kw.get("broker", "127.0.0.1:9092"), m, kw.get("error"), [])


def test_results_are_judged_against_targets() -> None:
    assert make("produce-100b", seconds=0.5).verdict == "PASS"  # 2M rec/s
    assert make("produce-100b", seconds=2.0).verdict == "FAIL"  # 500k rec/s
    fast_1k = make("produce-1k", records=200_000, seconds=0.5)  # 409.6 MB/s
    assert fast_1k.mb_per_s == pytest.approx(409.6) and fast_1k.verdict == "PASS"
    assert make("consume-1k").verdict == "-"
    lat = {"p50": 1.0, "p99": 4.0, "p999": 9.0, "max": 12.0, "samples": 40_000}
    assert make("latency", records=50_000, seconds=10, latency=lat).verdict == "PASS"
    lat["p99"] = 6.0
    assert make("latency", records=50_000, seconds=10, latency=lat).verdict == "FAIL"
    failed = make("produce-100b", error="3 deliveries failed")
    assert failed.verdict == "ERROR" and failed.records_per_s is None


def test_table_shows_brokers_side_by_side() -> None:
    lat = {"p50": 0.8, "p99": 2.5, "p999": 4.0, "max": 7.25, "samples": 40_000}
    results = [
        make("produce-100b", broker="127.0.0.1:9092"),
        make("produce-100b", broker="[::1]:9093", seconds=4.0),
        make("latency", records=50_000, seconds=10, latency=lat),
        make("kcat-produce", error="kcat not found"),
    ]
    console = Console(record=True, width=200)
    console.print(e2e.render_table(results))
    text = console.export_text()
    assert "[::1]:9093" in text  # a bracketed address is text, not rich markup
    assert "2,000,000" in text and "250,000" in text and "200.0" in text
    assert "PASS" in text and "FAIL" in text and "ERROR" in text
    assert "2.500" in text and "7.250" in text
    assert "p99 <= 5 ms" in text and ">= 1M rec/s" in text
    notes = e2e.footnotes(results)
    assert notes == ["kcat-produce @ 127.0.0.1:9092: ERROR: kcat not found"]


def test_json_document(tmp_path: Path) -> None:
    opts = e2e.parse_args(["--bootstrap", "127.0.0.1:9092", "--scenario", "produce-100b,latency"])
    results = [make("produce-100b")]
    document = e2e.results_document(results, opts, {"127.0.0.1:9092": "1 broker(s)"})
    decoded = json.loads(json.dumps(document))
    assert decoded["results"][0]["records_per_s"] == pytest.approx(2_000_000)
    assert decoded["results"][0]["verdict"] == "PASS"
    assert decoded["options"]["scenarios"] == ["produce-100b", "latency"]
    assert decoded["targets"] == {"produce-100b": ">= 1M rec/s", "latency": "p99 <= 5 ms"}
    assert "python" in decoded["environment"]


def test_progress_line() -> None:
    assert make("produce-100b").verdict == "PASS"
    assert e2e.progress_line(make("produce-100b")) == "2,000,000 rec/s, 200.0 MB/s -> PASS"
    assert e2e.progress_line(make("produce-100b", error="boom")) == "ERROR: boom"


# --------------------------------------------------------------------------- client settings


def test_producer_settings_match_the_issue() -> None:
    config = e2e.producer_config("127.0.0.1:9092")
    assert config["acks"] == 1
    assert config["linger.ms"] == 5
    assert config["batch.size"] == 1_000_000
    assert config["batch.num.messages"] == 1_000_000  # so the 1 MB byte limit decides
    assert config["compression.type"] == "none"
    assert config["delivery.report.only.error"] is True
    assert e2e.producer_config("h:1", all_reports=True)["delivery.report.only.error"] is False
    assert e2e.producer_config("h:1", linger_ms=0)["linger.ms"] == 0


def test_consumer_settings() -> None:
    config = e2e.consumer_config("127.0.0.1:9092")
    assert config["enable.auto.commit"] is False
    assert config["max.partition.fetch.bytes"] <= config["fetch.max.bytes"]
    latency = e2e.consumer_config("127.0.0.1:9092", latency=True)
    assert (latency["fetch.wait.max.ms"], latency["fetch.min.bytes"]) == (100, 1)
    assert config["group.id"] != latency["group.id"]


def test_librdkafka_accepts_every_setting() -> None:
    # Creating a client validates each property name and range; without
    # bootstrap.servers librdkafka connects nowhere.
    ck = pytest.importorskip("confluent_kafka")
    for config in (
        e2e.producer_config("x:1", verbose=True),
        e2e.producer_config("x:1", linger_ms=0),
    ):
        del config["bootstrap.servers"]
        ck.Producer({**config, "on_delivery": e2e.DeliveryCounter(), "error_cb": e2e.ErrorLog()})
    for latency in (False, True):
        config = e2e.consumer_config("x:1", latency=latency)
        del config["bootstrap.servers"]
        ck.Consumer(config).close()


def test_kcat_command() -> None:
    cmd = e2e.kcat_command("/usr/bin/kcat", "127.0.0.1:9092", "t1", Path("/tmp/r.txt"))
    assert cmd[:2] == ["/usr/bin/kcat", "-P"]
    assert cmd[-2:] == ["-l", "/tmp/r.txt"]
    pairs = dict(zip(cmd, cmd[1:], strict=False))
    assert (pairs["-b"], pairs["-t"], pairs["-p"]) == ("127.0.0.1:9092", "t1", "0")
    settings = {cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-X"}
    for expected in (
        "acks=1",
        "linger.ms=5",
        "batch.size=1000000",
        "compression.type=none",
        "enable.idempotence=false",
    ):
        assert expected in settings


def test_kafka_error_text_is_one_line() -> None:
    assert e2e.kafka_error_text(ValueError("a\n  b")) == "a b"
    ck = pytest.importorskip("confluent_kafka")
    exc = ck.KafkaException(ck.KafkaError(ck.KafkaError._TRANSPORT, "Broker transport failure"))
    assert e2e.kafka_error_text(exc) == "Broker transport failure (_TRANSPORT)"


# --------------------------------------------------------------------------- loops on fake clients


class FakeError:
    """Stands in for confluent_kafka.KafkaError."""

    def __init__(self, text: str) -> None:
        self.text = text

    def str(self) -> str:
        return self.text


class FakeMessage:
    """Stands in for confluent_kafka.Message."""

    def __init__(self, offset: int, value: bytes = b"v", error: FakeError | None = None) -> None:
        self._offset, self._value, self._error = offset, value, error

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def error(self) -> FakeError | None:
        return self._error


class FakeProducer:
    """Accepts records, refusing every ``full_every``-th attempt with BufferError."""

    def __init__(self, full_every: int = 0) -> None:
        self.records: list[tuple[str, bytes, int]] = []
        self.attempts = 0
        self.polls = 0
        self.full_every = full_every

    def produce(self, topic: str, value: bytes, partition: int) -> None:
        self.attempts += 1
        if self.full_every and self.attempts % self.full_every == 0:
            raise BufferError("Local: Queue full")
        self.records.append((topic, value, partition))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0


def test_produce_all_retries_when_the_queue_is_full() -> None:
    producer = FakeProducer(full_every=7)
    values = e2e.make_values(100, pool=16)
    e2e.produce_all(producer, "t", values, 100_000, e2e.Deadline(60))
    assert len(producer.records) == 100_000
    assert [r[1] for r in producer.records] == list(e2e.cycled(values, 100_000))
    assert {(r[0], r[2]) for r in producer.records} == {("t", 0)}
    assert producer.polls > 100_000 // 7


def test_produce_all_respects_the_deadline() -> None:
    with pytest.raises(e2e.BenchError, match="timed out"):
        e2e.produce_all(FakeProducer(), "t", [b"x"], 10, e2e.Deadline(0))


def test_timed_produce_counts_deliveries() -> None:
    class Flushing(FakeProducer):
        def flush(self, timeout: float) -> int:
            return 2  # two records never delivered

    counter = e2e.DeliveryCounter()
    counter(FakeError("Broker: Not enough replicas"), None)
    outcome = e2e.timed_produce(Flushing(), counter, "t", [b"x"], 10, e2e.Deadline(60), False)
    assert (outcome.produced, outcome.failed, outcome.undelivered) == (10, 1, 2)
    assert outcome.delivered == 7  # errors-only reports: produced - failed - undelivered
    assert outcome.problem() == "1 of 10 deliveries failed: Broker: Not enough replicas"
    assert outcome.end_ns >= outcome.start_ns


def test_delivery_counter_and_error_log() -> None:
    counter = e2e.DeliveryCounter()
    for err in (None, None, FakeError("first"), FakeError("second")):
        counter(err, None)
    assert (counter.delivered, counter.failed, counter.first_error) == (2, 2, "first")
    log = e2e.ErrorLog()
    assert log.suffix() == ""
    log(FakeError("all brokers down"))
    assert log.suffix() == "; last client error: all brokers down"


def test_undelivered_records_invalidate_the_figure() -> None:
    outcome = e2e.ProduceOutcome(10, 8, 0, 2, 0, 1)
    assert outcome.problem() == "2 of 10 records still undelivered"
    assert e2e.ProduceOutcome(10, 10, 0, 0, 0, 1).problem() is None


class FakeConsumer:
    """Hands out ``total`` records in batches of at most ``per_call``."""

    def __init__(self, total: int, per_call: int = 3000, error_at: int | None = None) -> None:
        self.total, self.per_call, self.error_at = total, per_call, error_at
        self.next = 0
        self.asked: list[int] = []
        self.assigned: list[Any] = []

    def assign(self, partitions: list[Any]) -> None:
        self.assigned = partitions

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        self.asked.append(num_messages)
        n = min(num_messages, self.per_call, self.total - self.next)
        batch = [FakeMessage(self.next + i) for i in range(n)]
        if self.error_at is not None and self.next <= self.error_at < self.next + n:
            batch[self.error_at - self.next] = FakeMessage(0, error=FakeError("Broker: bad"))
        self.next += n
        return batch


def test_consume_exactly_never_asks_for_more_than_missing() -> None:
    pytest.importorskip("confluent_kafka")  # TopicPartition
    consumer = FakeConsumer(25_000)
    last = e2e.consume_exactly(consumer, "t", 25_000, e2e.Deadline(60), e2e.ErrorLog())
    assert last == 24_999
    assert max(consumer.asked) <= e2e.CONSUME_BATCH
    assert consumer.asked[-1] == 25_000 - 3000 * (len(consumer.asked) - 1)
    assert consumer.assigned[0].partition == 0


def test_consume_exactly_reports_message_errors_and_timeouts() -> None:
    pytest.importorskip("confluent_kafka")
    with pytest.raises(e2e.BenchError, match="consumer error after 3,000 records: Broker: bad"):
        e2e.consume_exactly(
            FakeConsumer(10_000, error_at=3500), "t", 10_000, e2e.Deadline(60), e2e.ErrorLog()
        )
    with pytest.raises(e2e.BenchError, match="0 of 5 records read"):
        e2e.consume_exactly(FakeConsumer(5), "t", 5, e2e.Deadline(0), e2e.ErrorLog())


def test_paced_produce_sends_timestamps_on_schedule() -> None:
    producer = FakeProducer()
    first, last = e2e.paced_produce(producer, "t", 2_000, 100, 100, e2e.Deadline(60))
    stamps = [e2e.decode_timestamp(r[1]) for r in producer.records]
    assert len(stamps) == 100 and all(len(r[1]) == 100 for r in producer.records)
    assert stamps == sorted(stamps) and stamps[-1] == last and stamps[0] >= first
    assert (last - first) / 1e9 >= 99 / 2_000  # not faster than the rate


class TimestampConsumer:
    """Returns one timestamped record per poll, with a None (no data) in between."""

    def __init__(self, stamps: list[int]) -> None:
        self.queue: list[FakeMessage | None] = []
        for i, ns in enumerate(stamps):
            self.queue += [None, FakeMessage(i, e2e.encode_timestamp(ns, 100))]

    def poll(self, timeout: float) -> FakeMessage | None:
        return self.queue.pop(0) if self.queue else None


def test_receive_timestamps() -> None:
    ready = threading.Event()
    consumer = TimestampConsumer([10, 20, 30])
    send, recv = e2e.receive_timestamps(consumer, 3, e2e.Deadline(60), e2e.ErrorLog(), ready)
    assert ready.is_set()
    assert send.tolist() == [10, 20, 30]
    assert all(r > s for s, r in zip(send, recv, strict=True))


# ------------------------------------------------------------------- checks without a broker


def test_verify_stored_notes_a_lagging_watermark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(e2e, "watermarks", lambda *a: (0, 90))
    monkeypatch.setattr(e2e, "readable_offset", lambda b, t, offset, d, v: offset == 99)
    opts = e2e.parse_args(["--bootstrap", "h:1"])
    ctx = e2e.Context(e2e.SCENARIOS["produce-100b"], "h:1", "t", opts, e2e.Deadline(0.3), [])
    assert e2e.verify_stored(ctx, 100) == (0, 90)
    assert "high watermark lags" in ctx.notes[0]


def test_verify_stored_fails_when_records_are_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(e2e, "watermarks", lambda *a: (0, 90))
    monkeypatch.setattr(e2e, "readable_offset", lambda *a: False)
    opts = e2e.parse_args(["--bootstrap", "h:1"])
    ctx = e2e.Context(e2e.SCENARIOS["kcat-produce"], "h:1", "t", opts, e2e.Deadline(0.3), [])
    with pytest.raises(e2e.BenchError, match="90 of 100 acknowledged records"):
        e2e.verify_stored(ctx, 100)


def test_verify_stored_notes_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(e2e, "watermarks", lambda *a: (40, 100))
    opts = e2e.parse_args(["--bootstrap", "h:1"])
    ctx = e2e.Context(e2e.SCENARIOS["produce-100b"], "h:1", "t", opts, e2e.Deadline(5), [])
    assert e2e.verify_stored(ctx, 100) == (40, 100)
    assert ctx.notes == ["broker already deleted offsets below 40 (retention)"]


def test_unreachable_bootstrap_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("confluent_kafka")

    def refuse(address: tuple[str, int], timeout: float) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(e2e.socket, "create_connection", refuse)
    assert e2e.main(["--bootstrap", "127.0.0.1:9092"]) == 1
    err = capsys.readouterr().err
    assert err == "e2e.py: error: cannot connect to 127.0.0.1:9092: Connection refused\n"


def test_non_loopback_bootstrap_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("confluent_kafka")
    assert e2e.main(["--bootstrap", "10.1.2.3:9092"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not resolve to a loopback address" in err


def test_undelivered_records_name_the_last_client_error() -> None:
    outcome = e2e.ProduceOutcome(10, 0, 0, 10, 0, 1, client_error="1/1 brokers are down")
    assert outcome.problem() == (
        "10 of 10 records still undelivered; last client error: 1/1 brokers are down"
    )
