"""Fetch against ``pystream serve``: long polls, min_bytes, out-of-range offsets and resets.

Raw Fetch requests (pystream's codec over a socket) check the broker's side: a fetch at
the log end waits until ``max_wait_ms`` or until an append brings ``min_bytes``, and an
offset outside the log is OFFSET_OUT_OF_RANGE.  Real clients check what users see: a
consumer blocked in a long fetch gets a new record long before its ``fetch.wait.max.ms``
ends, and ``auto.offset.reset`` earliest / latest / none behave as with Kafka.

No timing is asserted: waits are conditions polled with a deadline.  Deadlines are well
below the configured fetch waits, so a broker that ignored an append would fail them.
"""

from __future__ import annotations

import asyncio
import select
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AioTopicPartition
from aiokafka.errors import OffsetOutOfRangeError as AioOffsetOutOfRangeError
from broker_process import BrokerProcess, KafkaWire
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition
from kafka.errors import OffsetOutOfRangeError as KpOffsetOutOfRangeError

from pystream._core import records as core_records
from pystream.protocol.messages.fetch import FetchRequest
from pystream.protocol.messages.metadata import MetadataRequest
from pystream.protocol.messages.produce import ProduceRequest

NONE = 0
OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_ID = 100
DEADLINE = 15.0  # every "quickly" below; long polls are configured far longer
LONG_WAIT_MS = 60_000
SEEDED = "seeded"  # 5 records at offsets 0..4, never appended to afterwards
SEEDED_COUNT = 5


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("fetch") / "broker")
    process.precreate_topic(SEEDED)
    process.start()
    try:
        with process.wire() as wire:
            for i in range(SEEDED_COUNT):
                assert produce(wire, SEEDED, b"seed-%d" % i).error_code == NONE
        yield process
    finally:
        process.close()


@pytest.fixture
def topic(shared_broker: BrokerProcess) -> str:
    """A fresh, empty (auto-created) topic per test."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    with shared_broker.wire() as wire:
        request = MetadataRequest(
            topics=[MetadataRequest.MetadataRequestTopic(name=name)],
            allow_auto_topic_creation=True,
        )
        assert wire.request(3, 9, request).topics[0].error_code == NONE
    return name


def produce(wire: KafkaWire, topic: str, *values: bytes) -> Any:
    records = core_records.build_batch([(None, None, v) for v in values])
    request = ProduceRequest(
        acks=-1,
        timeout_ms=5000,
        topic_data=[
            ProduceRequest.TopicProduceData(
                name=topic,
                partition_data=[ProduceRequest.PartitionProduceData(index=0, records=records)],
            )
        ],
    )
    return wire.request(0, 9, request).responses[0].partition_responses[0]


def fetch_request(
    topic: str,
    offset: int,
    max_wait_ms: int = 0,
    min_bytes: int = 0,
    topic_id: uuid.UUID | None = None,
) -> FetchRequest:
    return FetchRequest(
        max_wait_ms=max_wait_ms,
        min_bytes=min_bytes,
        max_bytes=1 << 20,
        topics=[
            FetchRequest.FetchTopic(
                topic=topic,
                topic_id=topic_id or uuid.UUID(int=0),
                partitions=[
                    FetchRequest.FetchPartition(
                        partition=0, fetch_offset=offset, partition_max_bytes=1 << 20
                    )
                ],
            )
        ],
    )


def values_of(partition: Any) -> list[bytes | None]:
    data = bytes(partition.records or b"")
    return [r.value for batch in core_records.iter_batches(data) for r in batch]


def _response_pending(wire: KafkaWire, window: float = 0.3) -> bool:
    """True if no response byte arrived within ``window`` (the broker holds the request).

    Not a synchronisation point: if the broker answered early the test still checks the
    answer; this only makes it likely the request is parked before the append.
    """
    readable, _, _ = select.select([wire.sock], [], [], window)
    return not readable


def _read_fetch(wire: KafkaWire, version: int) -> Any:
    from pystream.protocol import decode_response

    wire.sock.settimeout(DEADLINE)
    payload = wire.recv_frame()
    assert payload is not None, "the broker closed the connection"
    header, response = decode_response(payload, 1, version)
    assert header.correlation_id == wire.correlation_id
    return response.responses[0].partitions[0]


# --- raw fetch -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 7, 11, 12])
def test_fetch_reads_records_at_every_version(
    shared_broker: BrokerProcess, topic: str, version: int
) -> None:
    with shared_broker.wire() as wire:
        produce(wire, topic, b"a", b"b")
        produce(wire, topic, b"c")
        partition = wire.request(1, version, fetch_request(topic, 0)).responses[0].partitions[0]
        assert partition.error_code == NONE
        assert partition.high_watermark == 3
        assert values_of(partition) == [b"a", b"b", b"c"]
        # From the middle of a batch: whole batches come back, clients skip to offset 1.
        partition = wire.request(1, version, fetch_request(topic, 1)).responses[0].partitions[0]
        assert b"b" in values_of(partition) and b"c" in values_of(partition)


@pytest.mark.parametrize("version", [13, 16])
def test_fetch_by_topic_id(shared_broker: BrokerProcess, topic: str, version: int) -> None:
    with shared_broker.wire() as wire:
        produce(wire, topic, b"by-id")
        request = MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name=topic)])
        topic_id = wire.request(3, 12, request).topics[0].topic_id
        assert topic_id != uuid.UUID(int=0)
        response = wire.request(1, version, fetch_request("", 0, topic_id=topic_id))
        assert response.responses[0].topic_id == topic_id
        assert values_of(response.responses[0].partitions[0]) == [b"by-id"]
        unknown = wire.request(1, version, fetch_request("", 0, topic_id=uuid.uuid4()))
        assert unknown.responses[0].partitions[0].error_code == UNKNOWN_TOPIC_ID


@pytest.mark.parametrize("offset", [SEEDED_COUNT + 1, 10**12, -1, -(2**63)])
def test_fetch_outside_the_log_is_offset_out_of_range(
    shared_broker: BrokerProcess, offset: int
) -> None:
    with shared_broker.wire() as wire:
        response = wire.request(1, 11, fetch_request(SEEDED, offset, max_wait_ms=LONG_WAIT_MS))
        partition = response.responses[0].partitions[0]
        assert partition.error_code == OFFSET_OUT_OF_RANGE
        assert (partition.high_watermark, partition.log_start_offset) == (SEEDED_COUNT, 0)
        # At the log end itself there is simply nothing (yet).
        at_end = wire.request(1, 11, fetch_request(SEEDED, SEEDED_COUNT)).responses[0]
        assert at_end.partitions[0].error_code == NONE
        assert values_of(at_end.partitions[0]) == []


def test_long_poll_returns_empty_when_max_wait_passes(shared_broker: BrokerProcess) -> None:
    with shared_broker.wire() as wire:
        wire.send(wire.frame(1, 11, fetch_request(SEEDED, SEEDED_COUNT, 300, min_bytes=1)))
        partition = _read_fetch(wire, 11)  # within DEADLINE: the 300 ms wait ended
        assert partition.error_code == NONE and values_of(partition) == []


def test_long_poll_with_data_below_min_bytes_returns_it_at_max_wait(
    shared_broker: BrokerProcess,
) -> None:
    with shared_broker.wire() as wire:
        wire.send(wire.frame(1, 11, fetch_request(SEEDED, 0, 300, min_bytes=10 << 20)))
        partition = _read_fetch(wire, 11)
        assert values_of(partition) == [b"seed-%d" % i for i in range(SEEDED_COUNT)]


def test_long_poll_is_woken_by_an_append(shared_broker: BrokerProcess, topic: str) -> None:
    with shared_broker.wire() as waiter, shared_broker.wire() as writer:
        waiter.send(waiter.frame(1, 11, fetch_request(topic, 0, LONG_WAIT_MS, min_bytes=1)))
        assert _response_pending(waiter)  # parked: nothing to return yet
        assert produce(writer, topic, b"wake up").error_code == NONE
        partition = _read_fetch(waiter, 11)  # long before the 60 s wait ends
        assert values_of(partition) == [b"wake up"]
        assert partition.high_watermark == 1


def test_long_poll_waits_for_min_bytes_across_appends(
    shared_broker: BrokerProcess, topic: str
) -> None:
    one = len(core_records.build_batch([(None, None, b"x" * 100)]))
    with shared_broker.wire() as waiter, shared_broker.wire() as writer:
        min_bytes = one + one // 2  # more than one batch, less than two
        waiter.send(waiter.frame(1, 11, fetch_request(topic, 0, LONG_WAIT_MS, min_bytes)))
        assert _response_pending(waiter)
        assert produce(writer, topic, b"x" * 100).error_code == NONE
        # The first append is below min_bytes: the fetch must stay parked ...
        assert _response_pending(waiter)
        assert produce(writer, topic, b"y" * 100).error_code == NONE
        # ... and the second completes it, so both batches come back together.
        assert values_of(_read_fetch(waiter, 11)) == [b"x" * 100, b"y" * 100]


def test_a_parked_fetch_does_not_block_other_connections(
    shared_broker: BrokerProcess, topic: str
) -> None:
    with shared_broker.wire() as waiter, shared_broker.wire() as other:
        waiter.send(waiter.frame(1, 11, fetch_request(topic, 0, LONG_WAIT_MS, min_bytes=1)))
        for i in range(20):
            response = other.request(1, 11, fetch_request(SEEDED, i % SEEDED_COUNT))
            assert response.responses[0].partitions[0].error_code == NONE
        # A client that gives up on its long poll costs the broker nothing.
        waiter.close()
    with shared_broker.wire() as wire:
        assert produce(wire, topic, b"after").base_offset == 0


# --- real clients: long poll -----------------------------------------------------------------


def _produce_one(bootstrap: str, topic: str, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    errors: list[Any] = []
    producer.produce(topic, value, on_delivery=lambda e, m: e and errors.append(e))
    assert producer.flush(DEADLINE) == 0 and errors == []


def test_confluent_consumer_in_a_long_fetch_gets_a_new_record_quickly(
    shared_broker: BrokerProcess, topic: str
) -> None:
    _produce_one(shared_broker.bootstrap, topic, b"first")
    consumer = Consumer(
        {
            "bootstrap.servers": shared_broker.bootstrap,
            "group.id": "long-poll",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": LONG_WAIT_MS,
            "socket.timeout.ms": LONG_WAIT_MS + 30_000,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        # Once "first" is delivered the consumer is at the end, in a 60 s fetch.
        assert _poll_values(consumer, 1) == [(0, b"first")]
        _produce_one(shared_broker.bootstrap, topic, b"news")
        assert _poll_values(consumer, 1) == [(1, b"news")]  # within DEADLINE, not 60 s
    finally:
        consumer.close()


def _poll_values(consumer: Consumer, count: int) -> list[tuple[int, bytes]]:
    """Up to ``count`` (offset, value) pairs, polling until DEADLINE; errors fail."""
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + DEADLINE
    while len(got) < count and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None:
            continue
        assert message.error() is None or message.error().code() == KafkaError._PARTITION_EOF
        if message.error() is None:
            got.append((message.offset(), message.value()))
    return got


def _wait_for_eof(consumer: Consumer) -> bool:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is not None:
            return message.error().code() == KafkaError._PARTITION_EOF
    return False


def test_kafka_python_consumer_in_a_long_fetch_gets_a_new_record_quickly(
    shared_broker: BrokerProcess, topic: str
) -> None:
    consumer = KafkaConsumer(
        bootstrap_servers=shared_broker.bootstrap,
        fetch_max_wait_ms=25_000,
        request_timeout_ms=40_000,
    )
    tp = KpTopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        assert consumer.poll(200) == {}
        _produce_one(shared_broker.bootstrap, topic, b"news")
        deadline = time.monotonic() + DEADLINE
        got: list[bytes] = []
        while not got and time.monotonic() < deadline:
            for messages in consumer.poll(200).values():
                got += [m.value for m in messages]
        assert got == [b"news"]
    finally:
        consumer.close()


def test_aiokafka_consumer_in_a_long_fetch_gets_a_new_record_quickly(
    shared_broker: BrokerProcess, topic: str
) -> None:
    async def main() -> list[bytes]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=shared_broker.bootstrap,
            fetch_max_wait_ms=25_000,
            request_timeout_ms=40_000,
        )
        await consumer.start()
        tp = AioTopicPartition(topic, 0)
        try:
            consumer.assign([tp])
            consumer.seek(tp, 0)
            assert await consumer.getmany(timeout_ms=200) == {}
            await asyncio.to_thread(_produce_one, shared_broker.bootstrap, topic, b"news")
            deadline = time.monotonic() + DEADLINE
            got: list[bytes] = []
            while not got and time.monotonic() < deadline:
                for messages in (await consumer.getmany(timeout_ms=200)).values():
                    got += [m.value for m in messages]
            return got
        finally:
            await consumer.stop()

    assert asyncio.run(main()) == [b"news"]


# --- real clients: auto.offset.reset ---------------------------------------------------------


def _confluent_consumer(bootstrap: str, reset: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reset-{reset}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": reset,
        }
    )


def test_confluent_out_of_range_reset_to_earliest(shared_broker: BrokerProcess) -> None:
    consumer = _confluent_consumer(shared_broker.bootstrap, "earliest")
    try:
        consumer.assign([TopicPartition(SEEDED, 0, 1000)])
        expected = [(i, b"seed-%d" % i) for i in range(SEEDED_COUNT)]
        assert _poll_values(consumer, SEEDED_COUNT) == expected
    finally:
        consumer.close()


def test_confluent_out_of_range_reset_to_latest(shared_broker: BrokerProcess, topic: str) -> None:
    _produce_one(shared_broker.bootstrap, topic, b"old")
    consumer = _confluent_consumer(shared_broker.bootstrap, "latest")
    try:
        consumer.assign([TopicPartition(topic, 0, 1000)])
        assert _wait_for_eof(consumer)  # reset to the end (offset 1), nothing there
        _produce_one(shared_broker.bootstrap, topic, b"new")
        assert _poll_values(consumer, 1) == [(1, b"new")]
    finally:
        consumer.close()


def test_confluent_out_of_range_with_reset_error(shared_broker: BrokerProcess) -> None:
    consumer = _confluent_consumer(shared_broker.bootstrap, "error")
    try:
        consumer.assign([TopicPartition(SEEDED, 0, 1000)])
        deadline = time.monotonic() + DEADLINE
        error = None
        while error is None and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None:
                assert message.error() is not None, "no record may be delivered"
                error = message.error()
        assert error is not None and error.code() == KafkaError._AUTO_OFFSET_RESET
        assert "out of range" in error.str().lower() or "OFFSET_OUT_OF_RANGE" in error.str()
    finally:
        consumer.close()


@pytest.mark.parametrize("reset", ["earliest", "none"])
def test_kafka_python_out_of_range(shared_broker: BrokerProcess, reset: str) -> None:
    consumer = KafkaConsumer(bootstrap_servers=shared_broker.bootstrap, auto_offset_reset=reset)
    tp = KpTopicPartition(SEEDED, 0)
    try:
        consumer.assign([tp])
        consumer.seek(tp, 1000)
        got: list[int] = []
        deadline = time.monotonic() + DEADLINE
        if reset == "none":
            with pytest.raises(KpOffsetOutOfRangeError):
                while time.monotonic() < deadline:
                    consumer.poll(200)
            return
        while len(got) < SEEDED_COUNT and time.monotonic() < deadline:
            for messages in consumer.poll(200).values():
                got += [m.offset for m in messages]
        assert got == list(range(SEEDED_COUNT))
    finally:
        consumer.close()


@pytest.mark.parametrize("reset", ["earliest", "latest", "none"])
def test_aiokafka_out_of_range(shared_broker: BrokerProcess, reset: str) -> None:
    async def main() -> list[int] | str:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=shared_broker.bootstrap, auto_offset_reset=reset
        )
        await consumer.start()
        tp = AioTopicPartition(SEEDED, 0)
        try:
            consumer.assign([tp])
            consumer.seek(tp, 1000)
            got: list[int] = []
            deadline = time.monotonic() + DEADLINE
            while time.monotonic() < deadline:
                try:
                    batches = await consumer.getmany(timeout_ms=200)
                except AioOffsetOutOfRangeError:
                    return "out of range"
                got += [m.offset for messages in batches.values() for m in messages]
                if reset == "earliest" and len(got) >= SEEDED_COUNT:
                    break
                if reset == "latest" and await consumer.position(tp) == SEEDED_COUNT:
                    break
            return got
        finally:
            await consumer.stop()

    expected: Any = {
        "earliest": list(range(SEEDED_COUNT)),
        "latest": [],
        "none": "out of range",
    }[reset]
    assert asyncio.run(main()) == expected
