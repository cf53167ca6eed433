"""Exactly-once source support (``exactly.once.source.support=enabled``): each batch
of a file source and its offsets go out in one producer transaction, so after a
SIGKILL mid-stream and a restart a read_committed consumer sees every line once."""

from __future__ import annotations

from pathlib import Path

import pytest
from broker_process import BrokerProcess
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from connect_process import ConnectWorkerProcess
from waiting import wait_until

LINES = 20_000


@pytest.fixture(scope="module")
def broker(connect_broker: BrokerProcess) -> BrokerProcess:
    return connect_broker  # the session's broker for Connect tests (conftest.py)


def committed_values(bootstrap: str, topic: str) -> list[str]:
    """Every committed value of partition 0, read_committed, with confluent-kafka."""
    consumer = KafkaConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "eos-checker",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        tp = KafkaTopicPartition(topic, 0)
        _low, high = consumer.get_watermark_offsets(tp, timeout=10)
        consumer.assign([KafkaTopicPartition(topic, 0, 0)])
        values: list[str] = []
        while True:
            messages = consumer.consume(10_000, 2)
            for message in messages:
                assert message.error() is None, message.error()
                values.append(message.value().decode())
            position = consumer.position([tp])[0].offset
            if not messages and (position < 0 or position >= high - 1):
                return values
    finally:
        consumer.close()


def topic_end(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer({"bootstrap.servers": bootstrap, "group.id": "eos-end"})
    try:
        return consumer.get_watermark_offsets(KafkaTopicPartition(topic, 0), timeout=10)[1]
    except Exception:
        return 0
    finally:
        consumer.close()


def test_sigkill_mid_stream_duplicates_nothing(broker: BrokerProcess, tmp_path: Path):
    source = tmp_path / "in.txt"
    source.write_text("".join(f"line {i}\n" for i in range(LINES)))
    worker = ConnectWorkerProcess(
        tmp_path / "worker",
        broker.bootstrap,
        worker={
            "exactly.once.source.support": "enabled",
            "offset.storage.partitions": "1",
        },
        connectors={
            "eos": {
                "connector.class": "FileStreamSource",
                "file": str(source),
                "topic": "eos-lines",
                "batch.size": "100",
                "exactly.once.support": "required",
            }
        },
    ).start()
    try:
        wait_until(lambda: topic_end(broker.bootstrap, "eos-lines") > 1000, 60, "some lines")
        worker.stop(9)  # SIGKILL mid-stream: an open transaction is left behind
    finally:
        worker.close()
    before = topic_end(broker.bootstrap, "eos-lines")
    # Records plus one commit marker per 100-line transaction: less if killed mid-stream.
    assert before < LINES + LINES // 100, "the kill came after everything was sent"
    # Under exactly-once the offsets topic is the truth; the local file is a cache.
    (tmp_path / "worker" / "offsets.json").unlink(missing_ok=True)

    worker.start()
    try:
        expected = [f"line {i}" for i in range(LINES)]
        wait_until(
            lambda: len(committed_values(broker.bootstrap, "eos-lines")) >= LINES,
            120,
            "every line committed",
        )
        assert committed_values(broker.bootstrap, "eos-lines") == expected
    finally:
        assert worker.stop() == 0, worker.output()
