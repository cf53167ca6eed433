"""``pystream connect standalone`` with the file connectors, against a real broker:
file source → topic → file sink, lines appended later flow through, and a clean
restart (SIGTERM) sends nothing twice because source offsets and sink offsets were
committed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_process import BrokerProcess
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from connect_process import ConnectWorkerProcess, running_broker
from waiting import wait_until


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    yield from running_broker(tmp_path_factory, "connect")


def topic_values(bootstrap: str, topic: str) -> list[str]:
    """Every value in partition 0 of ``topic``, read with confluent-kafka."""
    consumer = KafkaConsumer(
        {"bootstrap.servers": bootstrap, "group.id": "checker", "enable.auto.commit": False}
    )
    try:
        low, high = consumer.get_watermark_offsets(KafkaTopicPartition(topic, 0), timeout=10)
        consumer.assign([KafkaTopicPartition(topic, 0, low)])
        values: list[str] = []
        while len(values) < high - low:
            message = consumer.poll(5)
            assert message is not None, f"only {len(values)} of {high - low} records read"
            assert message.error() is None, message.error()
            values.append(message.value().decode())
        return values
    finally:
        consumer.close()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_file_source_to_topic_to_file_sink_and_restart(broker: BrokerProcess, tmp_path: Path):
    source_file = tmp_path / "in.txt"
    sink_file = tmp_path / "out.txt"
    source_file.write_text("".join(f"line {i}\n" for i in range(200)))
    worker = ConnectWorkerProcess(
        tmp_path / "worker",
        broker.bootstrap,
        connectors={
            "source": {
                "connector.class": "FileStreamSource",
                "file": str(source_file),
                "topic": "file-lines",
            },
            "sink": {
                "connector.class": "FileStreamSink",
                "file": str(sink_file),
                "topics": "file-lines",
            },
        },
    ).start()
    try:
        wait_until(lambda: len(lines(sink_file)) >= 200, 60, "the first 200 lines in the sink")
        # Appended lines flow through, including one finished only by a later write.
        with source_file.open("a") as handle:
            handle.write("".join(f"line {i}\n" for i in range(200, 300)))
            handle.write("line 30")
            handle.flush()
            handle.write("0\n")
        wait_until(lambda: len(lines(sink_file)) >= 301, 60, "the appended lines in the sink")
        assert worker.stop() == 0, worker.output()
    finally:
        worker.close()
    assert "shut down" in worker.output()

    # Written while the worker is down: only these may be sent after the restart.
    with source_file.open("a") as handle:
        handle.write("".join(f"line {i}\n" for i in range(301, 350)))
    worker.start()
    try:
        wait_until(lambda: len(lines(sink_file)) >= 350, 60, "the lines written while down")
        expected = [f"line {i}" for i in range(350)]
        # Nothing twice: not in the topic (source offsets) nor in the file (sink offsets).
        wait_until(
            lambda: topic_values(broker.bootstrap, "file-lines") == expected,
            30,
            "every line once in the topic",
        )
        assert lines(sink_file) == expected
    finally:
        assert worker.stop() == 0, worker.output()
