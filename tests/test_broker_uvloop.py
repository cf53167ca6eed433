"""``pystream serve`` on uvloop (``event.loop=uvloop``): the same broker, another loop.

uvloop has no ``loop.sendfile``: a fetch response whose socket fills up goes out as
copied writes instead of ``sendfile`` (``KafkaConnection._write_copied``).  A consumer
with a tiny socket receive buffer reading megabytes makes that happen; every record must
come back intact and in order.  The network, fetch, TLS and SASL test modules also pass
with the default switched to uvloop (see the issue's closing note).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from broker_process import BrokerProcess
from confluent_kafka import Consumer, Producer, TopicPartition

from pystream.protocol.messages.api_versions import ApiVersionsRequest

DEADLINE = 30.0
TOPIC = "on-uvloop"
VALUES = [b"%06d" % i + bytes([i % 251]) * 20_000 for i in range(300)]  # ~6 MB


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("uvloop") / "broker", {"event.loop": "uvloop"}
    ).start()
    try:
        yield process
        assert "Traceback" not in process.output()
    finally:
        process.close()


def test_runs_on_uvloop(broker: BrokerProcess) -> None:
    assert "event loop: uvloop" in broker.output()
    with broker.wire() as wire:
        assert wire.request(18, 3, ApiVersionsRequest(client_software_name="t")).error_code == 0


def test_large_fetches_to_a_slow_socket_arrive_intact(broker: BrokerProcess) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for value in VALUES:
        producer.produce(TOPIC, value)
    assert producer.flush(DEADLINE) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "uvloop",
            "enable.auto.commit": False,
            # A small receive buffer: the broker's socket fills mid-response.
            "socket.receive.buffer.bytes": 4096,
            "fetch.max.bytes": 8_000_000,
            "max.partition.fetch.bytes": 8_000_000,
        }
    )
    consumer.assign([TopicPartition(TOPIC, 0, 0)])
    got: list[bytes] = []
    deadline = time.monotonic() + DEADLINE
    try:
        while len(got) < len(VALUES) and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                assert message.error() is None, message.error()
                got.append(message.value())
    finally:
        consumer.close()
    assert got == VALUES
