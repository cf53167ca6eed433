"""Idempotent producers against a real broker: producer ids, dedup, sequence and epoch checks,
producer state surviving SIGKILL, expiry — with pystream's codec on raw sockets and with
kafka-python's and librdkafka's idempotent producers.

The raw-protocol helpers here are shared with ``test_transactions.py``.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from broker_process import BrokerProcess, KafkaWire, paused
from waiting import wait_until

from pystream._core import records as core_records
from pystream.errors import ErrorCode
from pystream.protocol.messages.describe_producers import DescribeProducersRequest
from pystream.protocol.messages.fetch import FetchRequest
from pystream.protocol.messages.init_producer_id import InitProducerIdRequest
from pystream.protocol.messages.list_offsets import ListOffsetsRequest
from pystream.protocol.messages.metadata import MetadataRequest
from pystream.protocol.messages.produce import ProduceRequest
from pystream.storage.producer_state import (
    BatchInfo,
    ProducerStateManager,
    snapshot_offsets,
)

E = ErrorCode

# --- raw protocol helpers (pystream's codec over a socket) -------------------------------------


def create_topic(wire: KafkaWire, topic: str) -> None:
    """Auto-create ``topic`` through Metadata (one partition with the broker defaults)."""
    request = MetadataRequest(
        topics=[MetadataRequest.MetadataRequestTopic(name=topic)], allow_auto_topic_creation=True
    )
    response = wire.request(3, 4, request)
    assert response.topics[0].error_code == 0, response.topics[0].error_code


def init_producer_id(
    wire: KafkaWire, transactional_id: str | None = None, timeout_ms: int = 60_000
) -> tuple[int, int]:
    response = wire.request(
        22,
        4,
        InitProducerIdRequest(transactional_id=transactional_id, transaction_timeout_ms=timeout_ms),
    )
    assert response.error_code == 0, response.error_code
    return response.producer_id, response.producer_epoch


def idempotent_batch(
    producer_id: int,
    epoch: int,
    sequence: int,
    count: int,
    tag: str = "",
    *,
    transactional: bool = False,
    timestamp: int | None = None,
) -> bytes:
    values = [f"{tag}{sequence + i}".encode() for i in range(count)]
    return core_records.build_batch_from_values(
        values,
        timestamp=timestamp,
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=sequence,
        is_transactional=transactional,
    )


def produce(
    wire: KafkaWire,
    topic: str,
    batch: bytes,
    partition: int = 0,
    transactional_id: str | None = None,
) -> ProduceRequest:
    """Send one batch (acks=all); the partition's response (error_code, base_offset)."""
    request = ProduceRequest(
        transactional_id=transactional_id,
        acks=-1,
        timeout_ms=10_000,
        topic_data=[
            ProduceRequest.TopicProduceData(
                name=topic,
                partition_data=[
                    ProduceRequest.PartitionProduceData(index=partition, records=bytearray(batch))
                ],
            )
        ],
    )
    response = wire.request(0, 7, request)
    return response.responses[0].partition_responses[0]


def log_end_offset(wire: KafkaWire, topic: str, partition: int = 0, *, committed=False) -> int:
    """ListOffsets latest: the high watermark, or the last stable offset (read_committed)."""
    request = ListOffsetsRequest(
        replica_id=-1,
        isolation_level=1 if committed else 0,
        topics=[
            ListOffsetsRequest.ListOffsetsTopic(
                name=topic,
                partitions=[
                    ListOffsetsRequest.ListOffsetsPartition(partition_index=partition, timestamp=-1)
                ],
            )
        ],
    )
    response = wire.request(2, 2, request)
    result = response.topics[0].partitions[0]
    assert result.error_code == 0, result.error_code
    return result.offset


def fetch(
    wire: KafkaWire, topic: str, offset: int = 0, partition: int = 0, *, committed: bool = False
):
    """One Fetch v11 (no wait): the partition's response, with its records decoded."""
    request = FetchRequest(
        replica_id=-1,
        max_wait_ms=0,
        min_bytes=0,
        max_bytes=10_000_000,
        isolation_level=1 if committed else 0,
        session_id=0,
        session_epoch=-1,
        topics=[
            FetchRequest.FetchTopic(
                topic=topic,
                partitions=[
                    FetchRequest.FetchPartition(
                        partition=partition, fetch_offset=offset, partition_max_bytes=10_000_000
                    )
                ],
            )
        ],
        forgotten_topics_data=[],
        rack_id="",
    )
    response = wire.request(1, 11, request)
    return response.responses[0].partitions[0]


def fetched_values(partition_response) -> list[tuple[int, bytes | None]]:
    """(offset, value) of the data records of a fetch response's partition, as a consumer
    sees them: markers skipped and, for read_committed (aborted_transactions not null), the
    records of aborted transactions dropped the way Kafka's clients drop them."""
    data = bytes(partition_response.records or b"")
    aborted = sorted(
        (t.first_offset, t.producer_id) for t in partition_response.aborted_transactions or ()
    )
    aborting: set[int] = set()
    found = []
    for batch in core_records.iter_batches(data):
        header = batch.header
        while aborted and aborted[0][0] <= header.last_offset:
            aborting.add(aborted.pop(0)[1])
        if header.is_control:
            if batch.control_record_type() == core_records.CONTROL_ABORT:
                aborting.discard(header.producer_id)
            continue
        if header.is_transactional and header.producer_id in aborting:
            continue
        found.extend((record.offset, record.value) for record in batch)
    return found


def describe_producers(wire: KafkaWire, topic: str, partition: int = 0) -> list:
    request = DescribeProducersRequest(
        topics=[DescribeProducersRequest.TopicRequest(name=topic, partition_indexes=[partition])]
    )
    response = wire.request(61, 0, request)
    result = response.topics[0].partitions[0]
    assert result.error_code == 0, result.error_message
    return result.active_producers


def partition_dir(broker: BrokerProcess, topic: str, partition: int = 0) -> Path:
    return broker.log_dir / f"{topic}-{partition}"


# --- InitProducerId and the clients' default idempotent producers ------------------------------


def test_kafka_python_default_producer_gets_a_producer_id_and_produces(broker) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)  # enable_idempotence=True
    try:
        futures = [producer.send("kp-default", f"v{i}".encode()) for i in range(300)]
        producer.flush(30)
        offsets = [f.get(timeout=30).offset for f in futures]
    finally:
        producer.close(10)
    assert offsets == list(range(300))
    with broker.wire() as wire:
        producers = describe_producers(wire, "kp-default")
    # One idempotent producer wrote every batch, its sequences ending at the last record.
    assert len(producers) == 1
    assert producers[0].producer_id >= 0 and producers[0].producer_epoch == 0
    assert producers[0].last_sequence == 299
    consumer = KafkaConsumer(
        "kp-default",
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    try:
        values = [m.value for _, m in zip(range(300), consumer, strict=False)]
    finally:
        consumer.close()
    assert values == [f"v{i}".encode() for i in range(300)]


def test_aiokafka_idempotent_producer(broker) -> None:
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def run() -> list[int]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            futures = [await producer.send("aio-idem", f"v{i}".encode()) for i in range(200)]
            return [(await f).offset for f in futures]
        finally:
            await producer.stop()

    assert asyncio.run(run()) == list(range(200))
    with broker.wire() as wire:
        (state,) = describe_producers(wire, "aio-idem")
        assert (state.producer_epoch, state.last_sequence) == (0, 199)


def test_producer_ids_are_unique_across_restarts(broker) -> None:
    with broker.wire() as wire:
        first = [init_producer_id(wire)[0] for _ in range(5)]
    broker.kill()
    broker.start()
    with broker.wire() as wire:
        after_kill = [init_producer_id(wire)[0] for _ in range(5)]
    broker.restart()
    with broker.wire() as wire:
        after_restart = init_producer_id(wire)[0]
    ids = [*first, *after_kill, after_restart]
    assert len(set(ids)) == len(ids)
    assert first == sorted(first)


def test_confluent_idempotent_producer_20000_records_no_duplicates_order_kept(
    broker_factory,
) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    broker = broker_factory(**{"num.partitions": "3"})
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "batch.num.messages": 500,
        }
    )
    failures = []

    def delivered(err, msg) -> None:
        if err is not None:
            failures.append(err)

    for i in range(20_000):
        while True:
            try:
                producer.produce(
                    "idem-20k", key=f"k{i % 97}", value=f"{i}".encode(), on_delivery=delivered
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert failures == []
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "idem-check",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition("idem-20k", p, 0) for p in range(3)])
    by_partition: dict[int, list[int]] = {0: [], 1: [], 2: []}
    received = 0
    deadline = time.monotonic() + 60
    while received < 20_000 and time.monotonic() < deadline:
        for message in consumer.consume(1000, 1.0):
            assert message.error() is None, message.error()
            by_partition[message.partition()].append(int(message.value()))
            received += 1
    consumer.close()
    everything = [v for values in by_partition.values() for v in values]
    assert sorted(everything) == list(range(20_000))  # every record exactly once
    for values in by_partition.values():
        assert values == sorted(values)  # one producer: per-partition order is send order


def test_confluent_idempotent_producer_across_broker_sigkill_stores_no_duplicates(
    broker_factory,
) -> None:
    """SIGKILL with thousands of records queued or in flight: librdkafka retries them after the
    restart with their sequences; what was written before the kill is not written again."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    broker = broker_factory()
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,
            "linger.ms": 2,
            "batch.num.messages": 50,
            "message.timeout.ms": 120_000,
        }
    )
    delivered: list[int] = []
    failures: list[object] = []

    def on_delivery(err, msg) -> None:
        (failures if err is not None else delivered).append(err or msg.offset())

    with ExitStack() as frozen:
        for i in range(6000):
            while True:
                try:
                    producer.produce("crash", value=str(i).encode(), on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            if i == 3000:
                # Stopped wherever it was (mid-write, like a kill), the broker answers
                # nothing more: the next records are in flight or queued at the kill.
                frozen.enter_context(paused(broker))
            elif i == 3100:
                producer.poll(0.1)
                assert len(delivered) <= 3001, "acknowledged by a stopped broker"
                broker.kill()
                broker.start()
    assert producer.flush(120) == 0
    assert failures == []
    assert sorted(delivered) == list(range(6000))  # each acknowledged once, at its own offset
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "crash", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition("crash", 0, 0)])
    values: list[int] = []
    deadline = time.monotonic() + 60
    while len(values) < 6000 and time.monotonic() < deadline:
        values += [int(m.value()) for m in consumer.consume(1000, 1.0) if m.error() is None]
    consumer.close()
    assert values == list(range(6000))
    with broker.wire() as wire:
        assert log_end_offset(wire, "crash") == 6000


# --- dedup, sequence and epoch checks (raw protocol) -------------------------------------------


def test_retried_batch_is_stored_once_and_answered_with_its_original_offsets(broker) -> None:
    with broker.wire() as wire:
        create_topic(wire, "dedup")
        pid, epoch = init_producer_id(wire)
        first = produce(wire, "dedup", idempotent_batch(pid, epoch, 0, 10, "a"))
        second = produce(wire, "dedup", idempotent_batch(pid, epoch, 10, 5, "b"))
        assert (first.error_code, first.base_offset) == (0, 0)
        assert (second.error_code, second.base_offset) == (0, 10)
        # The same batches again (a client retrying after a lost response): same offsets.
        retry_second = produce(wire, "dedup", idempotent_batch(pid, epoch, 10, 5, "b"))
        retry_first = produce(wire, "dedup", idempotent_batch(pid, epoch, 0, 10, "a"))
        assert (retry_second.error_code, retry_second.base_offset) == (0, 10)
        assert (retry_first.error_code, retry_first.base_offset) == (0, 0)
        # ... and nothing was stored twice.
        assert log_end_offset(wire, "dedup") == 15
        values = [v for _, v in fetched_values(fetch(wire, "dedup"))]
        assert values == [f"a{i}".encode() for i in range(10)] + [
            f"b{i}".encode() for i in range(10, 15)
        ]
        # The sequence continues after the retries.
        third = produce(wire, "dedup", idempotent_batch(pid, epoch, 15, 1, "c"))
        assert (third.error_code, third.base_offset) == (0, 15)


def test_only_the_last_five_batches_are_remembered(broker) -> None:
    with broker.wire() as wire:
        create_topic(wire, "window")
        pid, epoch = init_producer_id(wire)
        for i in range(7):
            assert produce(wire, "window", idempotent_batch(pid, epoch, i, 1)).error_code == 0
        # Batches 2..6 are cached: a retry of batch 2 is a duplicate.
        assert produce(wire, "window", idempotent_batch(pid, epoch, 2, 1)).base_offset == 2
        # Batch 1 fell out of the window: it is no longer recognised (and not written).
        stale = produce(wire, "window", idempotent_batch(pid, epoch, 1, 1))
        assert stale.error_code == E.OUT_OF_ORDER_SEQUENCE_NUMBER
        assert log_end_offset(wire, "window") == 7


def test_sequence_gap_is_out_of_order_and_nothing_is_written(broker) -> None:
    with broker.wire() as wire:
        create_topic(wire, "gap")
        pid, epoch = init_producer_id(wire)
        assert produce(wire, "gap", idempotent_batch(pid, epoch, 0, 3)).error_code == 0
        gap = produce(wire, "gap", idempotent_batch(pid, epoch, 5, 3))
        assert gap.error_code == E.OUT_OF_ORDER_SEQUENCE_NUMBER
        assert gap.base_offset == -1
        assert log_end_offset(wire, "gap") == 3
        # The expected sequence is still accepted.
        assert produce(wire, "gap", idempotent_batch(pid, epoch, 3, 2)).base_offset == 3


def test_old_epoch_is_fenced_and_new_epoch_must_start_at_zero(broker) -> None:
    with broker.wire() as wire:
        create_topic(wire, "epochs")
        pid, _ = init_producer_id(wire)
        assert produce(wire, "epochs", idempotent_batch(pid, 0, 0, 2)).error_code == 0
        # A new epoch must start at sequence 0.
        bad_start = produce(wire, "epochs", idempotent_batch(pid, 1, 2, 1))
        assert bad_start.error_code == E.OUT_OF_ORDER_SEQUENCE_NUMBER
        assert produce(wire, "epochs", idempotent_batch(pid, 1, 0, 1)).base_offset == 2
        # The old epoch is fenced now, even with the sequence that would follow.
        zombie = produce(wire, "epochs", idempotent_batch(pid, 0, 2, 1))
        assert zombie.error_code == E.INVALID_PRODUCER_EPOCH
        assert log_end_offset(wire, "epochs") == 3
        # Non-idempotent batches are never checked.
        plain = core_records.build_batch_from_values([b"x", b"x"])
        assert produce(wire, "epochs", plain).base_offset == 3
        assert produce(wire, "epochs", plain).base_offset == 5


@pytest.mark.parametrize("stop", ["kill", "stop"])
def test_dedup_survives_restart(broker_factory, stop: str) -> None:
    # Small segments: rolls write snapshots, so recovery is "snapshot + replay of the tail".
    broker = broker_factory(**{"log.segment.bytes": "400"})
    with broker.wire() as wire:
        create_topic(wire, "durable")
        pid, epoch = init_producer_id(wire)
        answers = [
            produce(wire, "durable", idempotent_batch(pid, epoch, 3 * i, 3, "d")) for i in range(12)
        ]
        assert [a.base_offset for a in answers] == [3 * i for i in range(12)]
    assert len(snapshot_offsets(str(partition_dir(broker, "durable")))) >= 2  # rolled
    getattr(broker, stop)()
    broker.start()
    with broker.wire() as wire:
        # The last batch, retried after the restart: recognised, answered with its offset.
        retry = produce(wire, "durable", idempotent_batch(pid, epoch, 33, 3, "d"))
        assert (retry.error_code, retry.base_offset) == (0, 33)
        # An earlier one still in the five-batch window too.
        assert produce(wire, "durable", idempotent_batch(pid, epoch, 27, 3, "d")).base_offset == 27
        assert log_end_offset(wire, "durable") == 36
        # Gaps and zombies are still caught after the restart.
        gap = produce(wire, "durable", idempotent_batch(pid, epoch, 40, 1, "d"))
        assert gap.error_code == E.OUT_OF_ORDER_SEQUENCE_NUMBER
        assert produce(wire, "durable", idempotent_batch(pid, epoch, 36, 1, "d")).base_offset == 36
        producers = describe_producers(wire, "durable")
        assert [(p.producer_id, p.last_sequence) for p in producers] == [(pid, 36)]
    if stop == "stop":
        # A clean shutdown leaves a snapshot at the log end: nothing is replayed.
        assert 36 in snapshot_offsets(str(partition_dir(broker, "durable")))


def test_expired_producer_state_is_forgotten(broker_factory) -> None:
    broker = broker_factory(
        **{"producer.id.expiration.ms": "60000", "producer.id.expiration.check.interval.ms": "50"}
    )
    with broker.wire() as wire:
        create_topic(wire, "expiry")
        pid, epoch = init_producer_id(wire)
        # Idleness is measured with the batch timestamps (as Kafka): these are 2 minutes old.
        old = int(time.time() * 1000) - 120_000
        produce(wire, "expiry", idempotent_batch(pid, epoch, 0, 2, timestamp=old))
        fresh_pid, _ = init_producer_id(wire)
        produce(wire, "expiry", idempotent_batch(fresh_pid, 0, 0, 1))
        wait_until(
            lambda: [p.producer_id for p in describe_producers(wire, "expiry")] == [fresh_pid],
            what="the idle producer to expire",
        )
        # The partition forgot it: a batch with a sequence that would be a gap starts it anew.
        later = produce(wire, "expiry", idempotent_batch(pid, epoch, 9, 1))
        assert later.error_code == 0
        # The active producer is still checked.
        gap = produce(wire, "expiry", idempotent_batch(fresh_pid, 0, 5, 1))
        assert gap.error_code == E.OUT_OF_ORDER_SEQUENCE_NUMBER


# --- producer state: the snapshot format and sequence arithmetic (no broker) ------------------


def _data(pid: int, epoch: int, first_seq: int, last_seq: int, txn: bool = False) -> BatchInfo:
    return BatchInfo(pid, epoch, first_seq, last_seq, last_seq - first_seq, 1000, txn)


def test_snapshot_round_trip_keeps_five_batches_and_open_transactions(tmp_path) -> None:
    state = ProducerStateManager(str(tmp_path))
    for i in range(7):
        state.update(10 * i, _data(1, 0, 2 * i, 2 * i + 1))
    state.update(100, _data(2, 3, 0, 0, txn=True))
    state.take_snapshot(101)
    loaded = ProducerStateManager(str(tmp_path))
    with open(tmp_path / f"{101:020d}.snapshot", "rb") as handle:
        loaded.load_snapshot_bytes(handle.read())
    entry = loaded.producers[1]
    assert [b.first_seq for b in entry.batches] == [4, 6, 8, 10, 12]
    assert [b.first_offset for b in entry.batches] == [20, 30, 40, 50, 60]
    assert loaded.check_client_batch(1, 0, 8, 9).first_offset == 40  # still a duplicate
    assert loaded.producers[2].current_txn_first_offset == 100
    assert loaded.last_stable_offset(high_watermark=101) == 100
    # A damaged snapshot is refused, not half-loaded.
    data = bytearray((tmp_path / f"{101:020d}.snapshot").read_bytes())
    data[-1] ^= 1
    with pytest.raises(ValueError, match="CRC"):
        ProducerStateManager(str(tmp_path)).load_snapshot_bytes(bytes(data))


def test_sequence_wraps_around_at_int32_max(tmp_path) -> None:
    state = ProducerStateManager(str(tmp_path))
    top = 2**31 - 1
    state.update(0, _data(5, 0, top - 1, top))
    assert state.check_client_batch(5, 0, 0, 2) is None  # 0 follows INT32_MAX
    state.update(2, BatchInfo(5, 0, 0, 2, 2, 1000, False))
    assert state.check_client_batch(5, 0, 0, 2).first_offset == 2
