"""examples/consume_transform_produce.py as a real process: SIGKILLed mid-stream and
restarted, its output is its input transformed, exactly once (read_committed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_process import BrokerProcess
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import TopicPartition as CKTopicPartition
from txn_helpers import ck_read_committed
from waiting import wait_until

import pystream

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "consume_transform_produce.py"
PARTITIONS = 3
HALF = 1500


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("ctp"),
        {
            "num.partitions": str(PARTITIONS),
            "transaction.state.log.num.partitions": "4",
            "offsets.topic.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
        },
    ).start()
    try:
        yield process
    finally:
        process.close()


def start_example(broker: BrokerProcess, topics: tuple[str, str], group: str, log: Path):
    env = {**os.environ, "PYTHONPATH": str(Path(pystream.__file__).parents[1])}
    command = [sys.executable, str(EXAMPLE), "--bootstrap-servers", broker.bootstrap]
    command += ["--input", topics[0], "--output", topics[1], "--group", group]
    # Small transactions (many of them) so that the SIGKILL lands mid-stream.
    command += ["--max-poll-records", "20", "--session-timeout-ms", "6000"]
    return subprocess.Popen(command, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT)


def output_end(bootstrap: str, topic: str) -> int:
    consumer = CKConsumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return sum(
            consumer.get_watermark_offsets(CKTopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        )
    finally:
        consumer.close()


def test_sigkill_and_restart_gives_each_input_record_once(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    source, sink, group = (f"{n}-{uuid.uuid4().hex[:6]}" for n in ("in", "out", "ctp"))
    with pystream.AdminClient(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topics(
            [pystream.NewTopic(source, PARTITIONS), pystream.NewTopic(sink, PARTITIONS)]
        )
    inputs = [f"record-{i}".encode() for i in range(2 * HALF)]
    with pystream.Producer(broker.bootstrap) as producer:
        producer.send_batch(source, inputs[:HALF]).result(30)
    log = tmp_path / "example.log"
    first = start_example(broker, (source, sink), group, log)
    try:
        # Killed once it has written part of the output: mid-stream, and most likely
        # with a transaction open.
        wait_until(lambda: output_end(broker.bootstrap, sink) >= 300, timeout=60, what="output")
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    assert output_end(broker.bootstrap, sink) < 2 * HALF
    with pystream.Producer(broker.bootstrap) as producer:
        producer.send_batch(source, inputs[HALF:]).result(30)
    second = start_example(broker, (source, sink), group, log)
    try:
        values = ck_read_committed(
            broker.bootstrap,
            sink,
            PARTITIONS,
            lambda seen: len(seen) >= 2 * HALF,
            f"{2 * HALF} committed records in {sink}",
        )
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if second.poll() is None:
            second.kill()
    expected = Counter(v.upper() for v in inputs)
    got = Counter(values)
    assert got == expected, (
        f"missing {sum((expected - got).values())}, duplicated {sum((got - expected).values())}"
    )
