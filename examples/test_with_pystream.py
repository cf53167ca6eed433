"""Testing Kafka code against a real broker, with pystream's pytest plugin.

``pip install pystream`` registers the plugin; these fixtures need no Docker:

* ``kafka_broker``: a running broker (shared by the session, in a thread of the test
  process); ``.bootstrap_servers`` is what any Kafka client connects to.
* ``kafka_topic``: a topic of this test's own, deleted afterwards.
* ``@pytest.mark.pystream(mode="process")``: the broker in a child process, so that
  ``kill()`` is a real SIGKILL.

Run it with ``pytest examples/test_with_pystream.py``.
"""

from __future__ import annotations

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition


def read_all(bootstrap: str, topic: str, count: int) -> list[bytes]:
    """The first ``count`` values of ``topic``'s partition 0."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "example"})
    values: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        for _ in range(40):  # at most 20 s
            values += [m.value() for m in consumer.consume(count, 0.5) if m.error() is None]
            if len(values) >= count:
                break
    finally:
        consumer.close()
    return values


def write(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Produce ``values`` and wait until the broker acknowledged every one."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for value in values:
        producer.produce(topic, value)
    assert producer.flush(10) == 0


def test_round_trip(kafka_broker, kafka_topic):
    write(kafka_broker.bootstrap_servers, kafka_topic, [b"hello", b"world"])
    assert read_all(kafka_broker.bootstrap_servers, kafka_topic, 2) == [b"hello", b"world"]


def test_each_test_has_its_own_topic(kafka_broker, kafka_topic):
    # Empty: the records of test_round_trip went to that test's own topic.
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap_servers, "group.id": "x"})
    try:
        assert consumer.get_watermark_offsets(TopicPartition(kafka_topic, 0), 10) == (0, 0)
    finally:
        consumer.close()
    kafka_broker.create_topic("orders", partitions=3, config={"retention.ms": "60000"})
    try:
        described = kafka_broker.admin().describe_topics(["orders"])["orders"]
        assert len(described.partitions) == 3
    finally:
        kafka_broker.delete_topic("orders")


@pytest.mark.pystream(mode="process", scope="module")
def test_acknowledged_records_survive_a_crash(kafka_broker, kafka_topic):
    write(kafka_broker.bootstrap_servers, kafka_topic, [b"kept"])
    kafka_broker.kill()  # SIGKILL: no clean shutdown
    kafka_broker.restart()  # same port, same data directory
    assert read_all(kafka_broker.bootstrap_servers, kafka_topic, 1) == [b"kept"]
