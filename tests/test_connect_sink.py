"""The sink task runner against a real worker and broker: ``topics.regex``, the
task's ``open`` with its partitions, ``SinkTaskContext.offset`` (where to start) and
``request_commit`` (offsets committed without waiting for the flush interval), and
a ``RetriableError`` from ``put`` (the batch delivered again after ``timeout``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from broker_process import BrokerProcess
from confluent_kafka import Producer as KafkaProducer
from connect_process import ConnectWorkerProcess
from waiting import wait_until


@pytest.fixture(scope="module")
def broker(connect_broker: BrokerProcess) -> BrokerProcess:
    return connect_broker  # the session's broker for Connect tests (conftest.py)


@pytest.fixture(scope="module")
def http(broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    # A flush interval far beyond the tests: only request_commit can commit in time.
    worker = ConnectWorkerProcess(
        tmp_path_factory.mktemp("connect-sink") / "worker",
        broker.bootstrap,
        worker={"offset.flush.interval.ms": "600000"},
    ).start()
    try:
        with httpx.Client(base_url=worker.url, timeout=60) as client:
            yield client
    finally:
        assert worker.stop() == 0, worker.output()


def produce(bootstrap: str, values: dict[str, list[str]]) -> None:
    producer = KafkaProducer({"bootstrap.servers": bootstrap})
    for topic, items in values.items():
        for value in items:
            producer.produce(topic, value.encode())
    assert producer.flush(30) == 0


def read(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def recording_sink(http: httpx.Client, name: str, out: Path, **settings: str) -> None:
    """Create a ``RecordingSinkConnector`` named ``name`` writing to ``out``."""
    config = {"connector.class": "connect_plugins.RecordingSinkConnector", "file": str(out)}
    response = http.post("/connectors", json={"name": name, "config": {**config, **settings}})
    assert response.status_code == 201, response.text


def test_topics_regex_open_and_start_offset(
    http: httpx.Client, broker: BrokerProcess, tmp_path: Path
):
    prefix = f"rx{uuid.uuid4().hex[:6]}"
    produce(
        broker.bootstrap,
        {
            f"{prefix}-a": ["a0", "a1", "a2"],
            f"{prefix}-b": ["b0", "b1", "b2"],
            f"{prefix}-c": ["c0"],
        },
    )
    out = tmp_path / "out.txt"
    name = f"{prefix}-sink"
    recording_sink(http, name, out, **{"topics.regex": f"{prefix}-[ab]", "start.offset": "1"})
    # Offset 0 skipped through SinkTaskContext.offset; topic c does not match.
    expected = {f"{prefix}-{t} 0 {i} {t}{i}" for t in "ab" for i in (1, 2)}
    wait_until(lambda: len(read(out)) >= len(expected), 60, "records from offset 1 of a and b")
    # open() came before any record of its partition, so nothing before offset 1 and
    # nothing twice.
    assert sorted(read(out)) == sorted(expected)
    assert set(read(Path(f"{out}.open"))) == {f"{prefix}-a 0", f"{prefix}-b 0"}
    topics = http.get(f"/connectors/{name}/topics").json()[name]["topics"]
    assert topics == [f"{prefix}-a", f"{prefix}-b"]
    http.delete(f"/connectors/{name}")


def test_request_commit_commits_before_the_interval(
    http: httpx.Client, broker: BrokerProcess, tmp_path: Path
):
    topic = f"commit-{uuid.uuid4().hex[:6]}"
    produce(broker.bootstrap, {topic: ["x", "y", "z"]})
    recording_sink(http, topic, tmp_path / "out.txt", topics=topic, **{"commit.each.put": "true"})
    expected = [
        {"partition": {"kafka_topic": topic, "kafka_partition": 0}, "offset": {"kafka_offset": 3}}
    ]
    wait_until(
        lambda: http.get(f"/connectors/{topic}/offsets").json()["offsets"] == expected,
        60,
        "offsets committed on request",
    )
    http.delete(f"/connectors/{topic}")


def test_put_is_called_after_every_poll_also_without_records(
    http: httpx.Client, broker: BrokerProcess, tmp_path: Path
):
    """As Kafka's WorkerSinkTask: put() after every poll, with no records when there are
    none, so a task that buffers writes what it holds once its topics go quiet."""
    topic = f"quiet-{uuid.uuid4().hex[:6]}"
    produce(broker.bootstrap, {topic: ["a", "b", "c"]})
    out = tmp_path / "out.txt"
    recording_sink(http, topic, out, topics=topic, **{"count.puts": "true"})
    puts = Path(f"{out}.puts")

    def counts() -> list[int]:
        return [int(n) for n in puts.read_text().split()] if puts.exists() else []

    # The three records, then empty puts while the topic is quiet.
    wait_until(lambda: sum(counts()) == 3 and counts()[-2:] == [0, 0], 30, "empty puts")
    assert out.read_text().count("\n") == 3
    http.delete(f"/connectors/{topic}")


def test_retriable_put_delivers_the_same_batch_again(
    http: httpx.Client, broker: BrokerProcess, tmp_path: Path
):
    topic = f"again-{uuid.uuid4().hex[:6]}"
    produce(broker.bootstrap, {topic: ["p", "q", "r"]})
    out = tmp_path / "out.txt"
    recording_sink(http, topic, out, topics=topic, **{"retriable.failures": "3"})
    # Three refusals later the records arrive, each once, in order; the task never failed.
    expected = [f"{topic} 0 {i} {v}" for i, v in enumerate("pqr")]
    wait_until(lambda: read(out) == expected, 60, "the records after the retries")
    states = [t["state"] for t in http.get(f"/connectors/{topic}/status").json()["tasks"]]
    assert states == ["RUNNING"]
    http.delete(f"/connectors/{topic}")
