"""SIGKILL and torn writes: what a broker acknowledged survives, damaged tails are cut.

* A producer (acks=all) runs at full speed and the broker is SIGKILLed the moment enough
  records are acknowledged -- with more still in flight.  After a restart every
  acknowledged record is at the offset it was acknowledged with, the log has no gaps or
  duplicates, and producing continues from the log end.  Three rounds, three codecs,
  small segments so that kills land on rolled segments and rebuilt indexes too.
* A torn tail (half a batch, a batch with a bad CRC, zeros, a lying length, garbage)
  appended to the active segment of a killed broker is truncated on restart -- exactly
  those bytes -- and offsets continue where the good data ended.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from broker_process import BrokerProcess, KafkaWire, paused
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from pystream._core import records as core_records
from pystream.protocol.messages.fetch import FetchRequest
from pystream.protocol.messages.list_offsets import ListOffsetsRequest
from pystream.protocol.messages.produce import ProduceRequest

DEADLINE = 30.0
PARTITIONS = 3


def _consume_everything(bootstrap: str, topic: str, partitions: int) -> dict[int, list[Any]]:
    """Every record of every partition, as (offset, value), read up to the high watermark."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "crash",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    got: dict[int, list[Any]] = {p: [] for p in range(partitions)}
    at_end: set[int] = set()
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    deadline = time.monotonic() + DEADLINE
    try:
        while len(at_end) < partitions and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.2):
                error = message.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error
                    _, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, message.partition()), DEADLINE
                    )
                    if message.offset() >= high:
                        at_end.add(message.partition())
                    continue
                got[message.partition()].append((message.offset(), message.value()))
    finally:
        consumer.close()
    assert len(at_end) == partitions, "did not reach the end of every partition"
    return got


def _produce_until_killed(
    broker: BrokerProcess, topic: str, round_no: int, codec: str, kill_after: int
) -> dict[tuple[int, int], bytes]:
    """Produce until ``kill_after`` records are acknowledged, SIGKILL the broker right
    then (more records in flight), and return what was acknowledged: (partition, offset)
    -> value."""
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "acks": "all",
            "compression.type": codec,
            "linger.ms": 1,
            "batch.num.messages": 50,
            "message.timeout.ms": 60_000,
        }
    )
    acked: dict[tuple[int, int], bytes] = {}
    failed: list[Any] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            acked[(msg.partition(), msg.offset())] = msg.value()
        else:
            failed.append(err)

    deadline = time.monotonic() + DEADLINE
    sent = 0

    def produce_some() -> None:
        nonlocal sent
        for _ in range(100):
            value = b"r%d-%06d-" % (round_no, sent) + b"x" * (sent % 300)
            producer.produce(topic, value, key=b"%d" % sent, on_delivery=on_delivery)
            sent += 1

    while len(acked) < kill_after:
        assert time.monotonic() < deadline, f"only {len(acked)} acknowledged"
        assert sent < 50 * kill_after, "producing without acknowledgements"
        produce_some()
        producer.poll(0)
    # Stopped wherever it was (mid-write, like the kill), the broker cannot answer what
    # is sent now: records are in flight at the kill however fast it was until then.
    with paused(broker):
        produce_some()
        producer.poll(0.1)
        broker.kill()
    # Whatever was not acknowledged yet is given up on (never retried against the restart).
    producer.purge(in_queue=True, in_flight=True)
    producer.flush(DEADLINE)
    assert not any(e.code() not in _GIVEN_UP for e in failed), failed[:5]
    assert sent > len(acked), "nothing was in flight at the kill"
    return acked


_GIVEN_UP = {
    KafkaError._PURGE_QUEUE,
    KafkaError._PURGE_INFLIGHT,
    KafkaError._TRANSPORT,
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
}


def test_sigkill_after_acknowledged_produce_loses_nothing(tmp_path: Path) -> None:
    topic = "crash"
    broker = BrokerProcess(tmp_path / "broker")
    broker.precreate_topic(topic, PARTITIONS, {"segment.bytes": "100000"})
    broker.start()
    acked: dict[tuple[int, int], bytes] = {}
    try:
        for round_no, codec in enumerate(["none", "lz4", "zstd"]):
            this_round = _produce_until_killed(broker, topic, round_no, codec, 3000)
            assert not set(this_round) & set(acked), "an offset was acknowledged twice"
            acked.update(this_round)
            mark = broker.output_lines()
            broker.start()
            assert "recovering" in broker.wait_for_output("clients: bootstrap", since=mark)
            log = _consume_everything(broker.bootstrap, topic, PARTITIONS)
            for partition, records in log.items():
                offsets = [offset for offset, _ in records]
                assert offsets == list(range(len(records))), f"gap or duplicate in {partition}"
            stored = {(p, offset): value for p, records in log.items() for offset, value in records}
            lost = {key: value for key, value in acked.items() if stored.get(key) != value}
            assert not lost, f"{len(lost)} acknowledged records lost, e.g. {list(lost)[:3]}"
            values = [value for records in log.values() for _, value in records]
            assert len(values) == len(set(values)), "a record was stored twice"
        # Segments were rolled (the kills did not all land in a first segment).
        segments = list((broker.log_dir / f"{topic}-0").glob("*.log"))
        assert len(segments) > 1
    finally:
        broker.close()


# --- torn tails ------------------------------------------------------------------------------

TORN = "torn"  # topics torn-<kind of damage>
GOOD_BATCHES = 4
PER_BATCH = 5


def _batch(values: list[bytes], base_offset: int = 0) -> bytes:
    return core_records.build_batch(
        [(1_000 + i, None, v) for i, v in enumerate(values)], base_offset=base_offset
    )


def _good_values() -> list[bytes]:
    return [b"good-%d" % i for i in range(GOOD_BATCHES * PER_BATCH)]


def _half_batch() -> bytes:
    whole = _batch([b"torn"] * 3, base_offset=GOOD_BATCHES * PER_BATCH)
    return whole[: len(whole) // 2]


def _bad_crc_batch() -> bytes:
    whole = bytearray(_batch([b"torn"] * 3, base_offset=GOOD_BATCHES * PER_BATCH))
    whole[-1] ^= 0xFF
    return bytes(whole)


def _lying_length() -> bytes:
    whole = bytearray(_batch([b"torn"], base_offset=GOOD_BATCHES * PER_BATCH))
    whole[8:12] = (len(whole) * 10).to_bytes(4, "big")
    return bytes(whole)


TAILS = {
    "half-a-batch": _half_batch,
    "bad-crc": _bad_crc_batch,
    "zeros": lambda: bytes(4096),
    "lying-length": _lying_length,
    "just-an-offset": lambda: (GOOD_BATCHES * PER_BATCH).to_bytes(8, "big") + b"\x00\x00",
    "garbage": lambda: random.Random(7).randbytes(700),
}


def _produce_raw(wire: KafkaWire, topic: str, records: bytes) -> Any:
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
    response = wire.request(0, 9, request).responses[0].partition_responses[0]
    assert response.error_code == 0, response.error_message
    return response.base_offset


def _read_values(wire: KafkaWire, topic: str, offset: int = 0) -> list[tuple[int, bytes | None]]:
    out: list[tuple[int, bytes | None]] = []
    while True:
        request = FetchRequest(
            max_wait_ms=0,
            max_bytes=1 << 20,
            topics=[
                FetchRequest.FetchTopic(
                    topic=topic,
                    partitions=[
                        FetchRequest.FetchPartition(
                            partition=0, fetch_offset=offset, partition_max_bytes=1 << 20
                        )
                    ],
                )
            ],
        )
        partition = wire.request(1, 11, request).responses[0].partitions[0]
        assert partition.error_code == 0
        data = bytes(partition.records or b"")
        fresh = [
            (r.offset, r.value)
            for batch in core_records.iter_batches(data)
            for r in batch
            if r.offset >= offset
        ]
        if not fresh:
            return out
        out += fresh
        offset = fresh[-1][0] + 1


def _log_end(wire: KafkaWire, topic: str) -> int:
    request = ListOffsetsRequest(
        replica_id=-1,
        topics=[
            ListOffsetsRequest.ListOffsetsTopic(
                name=topic,
                partitions=[
                    ListOffsetsRequest.ListOffsetsPartition(partition_index=0, timestamp=-1)
                ],
            )
        ],
    )
    return wire.request(2, 4, request).topics[0].partitions[0].offset


def _topic_for(tail: str) -> str:
    return f"{TORN}-{tail}"


class TornBroker(NamedTuple):
    broker: BrokerProcess
    sizes: dict[str, int]  # tail -> intact segment size
    damage: dict[str, int]  # tail -> bytes appended
    restart_output: str


@pytest.fixture(scope="module")
def torn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TornBroker]:
    """One broker, one topic per kind of torn tail: good batches produced, SIGKILL, each
    active segment damaged its own way, restart."""
    broker = BrokerProcess(tmp_path_factory.mktemp("torn") / "broker")
    for tail in TAILS:
        broker.precreate_topic(_topic_for(tail))
    broker.start()
    good = _good_values()
    sizes: dict[str, int] = {}
    damage: dict[str, int] = {}
    try:
        with broker.wire() as wire:
            for tail in TAILS:
                for i in range(GOOD_BATCHES):
                    chunk = good[i * PER_BATCH : (i + 1) * PER_BATCH]
                    assert _produce_raw(wire, _topic_for(tail), _batch(chunk)) == i * PER_BATCH
        broker.kill()
        for tail, make in TAILS.items():
            (segment,) = sorted((broker.log_dir / f"{_topic_for(tail)}-0").glob("*.log"))
            sizes[tail] = segment.stat().st_size
            bad = make()
            damage[tail] = len(bad)
            with open(segment, "ab") as file:  # the crash tore the last write
                file.write(bad)
        mark = broker.output_lines()
        broker.start()
        output = broker.wait_for_output("clients: bootstrap", since=mark)
        yield TornBroker(broker, sizes, damage, output)
    finally:
        broker.close()


@pytest.mark.parametrize("tail", list(TAILS))
def test_torn_tail_is_truncated_on_restart_and_offsets_continue(
    torn: TornBroker, tail: str
) -> None:
    topic = _topic_for(tail)
    (segment,) = sorted((torn.broker.log_dir / f"{topic}-0").glob("*.log"))
    logged = f"Truncated {torn.damage[tail]} invalid bytes at the end of segment {segment}"
    assert logged in torn.restart_output
    assert segment.stat().st_size == torn.sizes[tail]
    good = _good_values()
    with torn.broker.wire() as wire:
        assert _log_end(wire, topic) == len(good)
        assert _read_values(wire, topic) == list(enumerate(good))
        # Offsets continue right after the good data, and the new batch reads back.
        assert _produce_raw(wire, topic, _batch([b"after-1", b"after-2"])) == len(good)
        assert _read_values(wire, topic, len(good) - 1) == [
            (len(good) - 1, good[-1]),
            (len(good), b"after-1"),
            (len(good) + 1, b"after-2"),
        ]


def test_repaired_logs_survive_another_crash(torn: TornBroker) -> None:
    with torn.broker.wire() as wire:
        before = {tail: _read_values(wire, _topic_for(tail)) for tail in TAILS}
    torn.broker.kill()
    torn.broker.start()
    good = list(enumerate(_good_values()))
    with torn.broker.wire() as wire:
        for tail in TAILS:
            after = _read_values(wire, _topic_for(tail))
            assert after == before[tail]
            assert after[: len(good)] == good
