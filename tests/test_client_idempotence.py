"""pystream's producer is idempotent by default: retries neither duplicate nor reorder.

A real broker process is SIGSTOPped mid-stream for longer than the producer's
short ``request_timeout_ms``, so requests time out and are sent again while the
broker may still append the first attempts once it runs again; librdkafka
reads the topic back.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from broker_process import BrokerProcess, paused
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import TopicPartition as CKTopicPartition
from test_idempotence import describe_producers
from waiting import wait_until

import pystream
from pystream import aio
from pystream.errors import KafkaError

PARTITIONS = 3


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("idempotence"), {"num.partitions": str(PARTITIONS)}
    ).start()
    try:
        yield process
    finally:
        process.close()


def ck_values(bootstrap: str, topic: str, count: int) -> dict[int, list[bytes]]:
    """Each partition's values in offset order, read with librdkafka (waits for ``count``,
    then reads on briefly so that duplicates beyond ``count`` show up too)."""
    consumer = CKConsumer(
        {"bootstrap.servers": bootstrap, "group.id": "oracle-" + topic, "enable.auto.commit": False}
    )
    consumer.assign([CKTopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    out: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    try:

        def drained() -> bool:
            for m in consumer.consume(10_000, 0.5):
                assert m.error() is None, m.error()
                out[m.partition()].append(m.value())
            return sum(map(len, out.values())) >= count

        wait_until(drained, timeout=60, what=f"{count} records of {topic}")
        for m in consumer.consume(10_000, 1.0):
            out[m.partition()].append(m.value())
    finally:
        consumer.close()
    return out


def test_retries_after_sigstop_neither_duplicate_nor_reorder(broker: BrokerProcess) -> None:
    topic = "idem-" + uuid.uuid4().hex[:8]
    total = 30_000
    producer = pystream.Producer(
        broker.bootstrap,
        request_timeout_ms=1_000,
        retry_backoff_ms=50,
        linger_ms=2,
        batch_size=16_384,
    )
    assert producer._aio.enable_idempotence and producer._aio.acks == -1
    sent = threading.Event()
    halfway = threading.Event()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(total):
                p = i % PARTITIONS
                if i % 1000 == 999:
                    # Prebuilt batches (send_batch) carry producer id and sequence too.
                    producer.send_batch(topic, [f"{p}:{i}".encode()], partition=p)
                else:
                    producer.send(topic, f"{p}:{i}".encode(), partition=p)
                if i == total // 3:
                    halfway.set()
            producer.flush(120)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
        finally:
            sent.set()

    try:
        producer.send(topic, b"warm-up", partition=0).result(30)  # topic and producer id exist
        thread = threading.Thread(target=produce)
        thread.start()
        halfway.wait(60)
        with paused(broker):
            # Stopped for longer than request_timeout_ms: in-flight requests time out
            # and their batches are retried, while the stopped broker still holds them.
            wait_until(
                lambda: producer._aio._sender.retries > 0, timeout=30, what="a produce retry"
            )
        thread.join(180)
        assert sent.is_set() and not errors, errors
        retries = producer._aio._sender.retries
    finally:
        producer.close(30)
    assert retries > 0
    values = ck_values(broker.bootstrap, topic, total + 1)
    values[0].remove(b"warm-up")
    for p in range(PARTITIONS):
        counters = [int(v.split(b":")[1]) for v in values[p]]
        assert len(counters) == len(set(counters)), f"partition {p} has duplicates"
        assert counters == list(range(p, total, PARTITIONS)), f"partition {p}: order or gap"


def test_explicit_idempotence_refuses_acks_0_and_1() -> None:
    for acks in (0, 1, "1"):
        with pytest.raises(ValueError, match="acks"):
            aio.Producer("localhost:1", acks=acks, enable_idempotence=True)
    with pytest.raises(ValueError, match="max_in_flight"):
        aio.Producer(
            "localhost:1", enable_idempotence=True, max_in_flight_requests_per_connection=6
        )
    with pytest.raises(ValueError, match="transactional"):
        aio.Producer("localhost:1", transactional_id="t", enable_idempotence=False)
    # Not asked for explicitly: acks=1 turns it off, as in Kafka's Java client.
    assert not aio.Producer("localhost:1", acks=1).enable_idempotence
    assert aio.Producer("localhost:1").enable_idempotence


@pytest.mark.parametrize("settings", [{"enable_idempotence": False}, {"acks": 1}])
def test_without_idempotence_the_producer_still_works(
    broker: BrokerProcess, settings: dict, tmp_path: Path
) -> None:
    topic = "plain-" + uuid.uuid4().hex[:8]
    with pystream.Producer(broker.bootstrap, **settings) as producer:
        assert producer._aio._txn is None
        futures = [
            producer.send(topic, f"{i % PARTITIONS}:{i}".encode(), partition=i % PARTITIONS)
            for i in range(300)
        ]
        batch = producer.send_batch(topic, [b"0:300"], partition=0)
        producer.flush(30)
        assert all(f.result(0).offset >= 0 for f in futures)
        assert batch.result(0)
    values = ck_values(broker.bootstrap, topic, 301)
    assert sum(map(len, values.values())) == 301
    assert values[0][-1] == b"0:300"


def test_a_sequence_gap_bumps_the_epoch_and_later_records_still_arrive_once(
    broker: BrokerProcess,
) -> None:
    """A batch the broker refuses for good (over the topic's max.message.bytes) leaves a
    hole in the partition's sequences: the next batch gets OUT_OF_ORDER_SEQUENCE_NUMBER
    unless the producer bumps its epoch and starts again at sequence 0 (KIP-360)."""
    topic = "gap-" + uuid.uuid4().hex[:8]
    with pystream.AdminClient(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topics(
            [pystream.NewTopic(topic, PARTITIONS, config={"max.message.bytes": "2000"})]
        )
    # batch_size below the large record: it goes alone in its batch.
    with pystream.Producer(broker.bootstrap, linger_ms=0, batch_size=1000) as producer:
        before = [producer.send(topic, f"0:{i}".encode(), partition=0) for i in range(50)]
        producer.flush(30)
        epoch = producer._aio._txn.producer_epoch
        too_large = producer.send(topic, b"x" * 5000, partition=0)
        after = [producer.send(topic, f"0:{i}".encode(), partition=0) for i in range(50, 100)]
        producer.flush(60)
        with pytest.raises(KafkaError, match="max.message.bytes"):
            too_large.result(0)
        offsets = [f.result(0).offset for f in before + after]
        assert producer._aio._txn.producer_epoch > epoch
    assert offsets == sorted(offsets) and len(set(offsets)) == 100
    values = ck_values(broker.bootstrap, topic, 100)
    assert values[0] == [f"0:{i}".encode() for i in range(100)]


def test_send_and_send_batch_batches_carry_producer_id_and_sequences(
    broker: BrokerProcess,
) -> None:
    """The broker's producer state (DescribeProducers) after a mix of send() and
    send_batch() (list and numpy) to one partition: our producer id, epoch, and the last
    sequence = records - 1, so every batch had the id and consecutive sequences."""
    topic = "seq-" + uuid.uuid4().hex[:8]
    with pystream.Producer(broker.bootstrap, batch_size=2_000) as producer:
        for i in range(200):
            producer.send(topic, f"{i}".encode(), partition=0)
        producer.send_batch(topic, [b"list"] * 500, partition=0)
        producer.send_batch(topic, np.zeros((700, 10), dtype=np.uint8), partition=0)
        producer.flush(30)
        txn = producer._aio._txn
        producer_id, epoch = txn.producer_id, txn.producer_epoch
    with broker.wire() as wire:
        (state,) = describe_producers(wire, topic, 0)
    assert (state.producer_id, state.producer_epoch) == (producer_id, epoch)
    assert state.last_sequence == 200 + 500 + 700 - 1
