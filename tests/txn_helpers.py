"""Reading a topic back with librdkafka as a read_committed consumer (the oracle of the
transactional producer's tests)."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import TopicPartition as CKTopicPartition
from waiting import wait_until


def ck_read_committed(
    bootstrap: str,
    topic: str,
    partitions: int,
    until: Callable[[list[bytes]], bool],
    what: str,
    timeout: float = 120,
) -> list[bytes]:
    """Values a read_committed librdkafka consumer sees from offset 0 of every partition,
    until ``until(values)``; then it reads on for a second so that extra records
    (duplicates) show up too."""
    consumer = CKConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "oracle-" + topic,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([CKTopicPartition(topic, p, 0) for p in range(partitions)])
    seen: list[bytes] = []
    try:

        def done() -> bool:
            for m in consumer.consume(10_000, 0.5):
                assert m.error() is None, m.error()
                seen.append(m.value())
            return until(seen)

        wait_until(done, timeout=timeout, what=what)
        for m in consumer.consume(10_000, 1.0):
            assert m.error() is None, m.error()
            seen.append(m.value())
    finally:
        consumer.close()
    return seen
