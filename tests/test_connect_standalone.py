"""``pystream connect standalone`` with the file connectors, against a real broker:
file source → topic → file sink, lines appended later flow through, and a clean
restart (SIGTERM) sends nothing twice because source offsets and sink offsets were
committed."""

from __future__ import annotations

from pathlib import Path

import pytest
from broker_process import BrokerProcess, free_ports
from cli_helpers import run
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from connect_process import ConnectWorkerProcess
from waiting import wait_until


@pytest.fixture(scope="module")
def broker(connect_broker: BrokerProcess) -> BrokerProcess:
    return connect_broker  # the session's broker for Connect tests (conftest.py)


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
            # Named for this test: the sink's group (connect-<name>) is the broker's, which
            # other Connect modules share.
            "file-lines-source": {
                "connector.class": "FileStreamSource",
                "file": str(source_file),
                "topic": "file-lines",
            },
            "file-lines-sink": {
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


def test_bad_configuration_is_one_clear_line(tmp_path: Path):
    worker = tmp_path / "worker.properties"
    worker.write_text("bootstrap.servers=127.0.0.1:1\nlisteners=http://127.0.0.1:0\n")
    result = run("connect", "standalone", str(worker), check=False)
    assert result.returncode == 1
    assert "offset.storage.file.filename is required" in result.stderr

    worker.write_text(
        "bootstrap.servers=127.0.0.1:1\nlisteners=http://127.0.0.1:0\n"
        f"offset.storage.file.filename={tmp_path / 'offsets.json'}\n"
    )
    connector = tmp_path / "bad.properties"
    connector.write_text("name=bad\nconnector.class=NoSuchConnector\n")
    result = run("connect", "standalone", str(worker), str(connector), check=False)
    assert result.returncode == 1
    assert str(connector) in result.stderr and "NoSuchConnector" in result.stderr


def test_worker_over_sasl_scram(tmp_path: Path):
    """The worker's clients log in with the worker's Kafka client settings
    (``security.protocol``, ``sasl.mechanism``, ``sasl.jaas.config``)."""
    plain_port, sasl_port = free_ports(2)
    broker = BrokerProcess(
        tmp_path / "broker",
        {
            "listeners": f"PLAINTEXT://127.0.0.1:{plain_port},"
            f"SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.num.partitions": "4",
        },
    )
    run("users", "add", "connect", "--password", "connect-Pw-1", "--mechanism",
        "SCRAM-SHA-256", "--log-dirs", str(broker.log_dir))  # fmt: skip
    broker.start()
    source_file = tmp_path / "in.txt"
    sink_file = tmp_path / "out.txt"
    source_file.write_text("secured 1\nsecured 2\n")
    worker = ConnectWorkerProcess(
        tmp_path / "worker",
        f"127.0.0.1:{sasl_port}",
        worker={
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule "
            'required username="connect" password="connect-Pw-1";',
        },
        connectors={
            "source": {
                "connector.class": "FileStreamSource",
                "file": str(source_file),
                "topic": "secured",
            },
            "sink": {
                "connector.class": "FileStreamSink",
                "file": str(sink_file),
                "topics": "secured",
            },
        },
    )
    try:
        worker.start()
        wait_until(
            lambda: lines(sink_file) == ["secured 1", "secured 2"],
            60,
            "the lines through the SASL listener",
        )
        assert worker.stop() == 0, worker.output()
    finally:
        worker.close()
        broker.close()


def test_file_source_without_a_file_reads_stdin(broker: BrokerProcess, tmp_path: Path):
    sink_file = tmp_path / "out.txt"
    worker = ConnectWorkerProcess(
        tmp_path / "worker",
        broker.bootstrap,
        connectors={
            "stdin": {"connector.class": "FileStreamSource", "topic": "stdin-lines"},
            "stdin-lines-sink": {
                "connector.class": "FileStreamSink",
                "file": str(sink_file),
                "topics": "stdin-lines",
            },
        },
    ).start()
    try:
        assert worker.process is not None and worker.process.stdin is not None
        worker.process.stdin.write("typed 1\ntyped 2\n")
        worker.process.stdin.flush()
        wait_until(lambda: lines(sink_file) == ["typed 1", "typed 2"], 60, "stdin's lines")
        # Nothing is stored for stdin: it cannot be read again.
        offsets = tmp_path / "worker" / "offsets.json"
        assert not offsets.exists() or "stdin" not in offsets.read_text()
    finally:
        assert worker.stop() == 0, worker.output()
