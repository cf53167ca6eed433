"""Incremental fetch sessions (KIP-227) on the wire, against ``pystream serve``.

Raw Fetch requests (pystream's codec over a socket) check the broker's semantics by
(session id, epoch): a full fetch with epoch 0 creates a session; an incremental fetch
with no news answers no partitions, a produced record makes exactly its partition
appear, forgotten partitions drop out; a wrong epoch is INVALID_FETCH_SESSION_EPOCH, an
unknown id FETCH_SESSION_ID_NOT_FOUND, a session made by name continued by topic id
FETCH_SESSION_TOPIC_ID_ERROR; epoch -1 closes the session; with no slots no session is
made; a full cache evicts as Kafka does (the smaller session, once old enough).

Real clients then consume many partitions across incremental sessions, exactly:
pystream's consumer (which closes its session when it stops) and kafka-python (whose
FetchSessionHandler uses sessions too); the broker's FetchSessionCache gauges show the
sessions.  confluent-kafka and aiokafka send sessionless fetches, covered by
test_clients_fetch.py against a broker with sessions enabled.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from broker_process import BrokerProcess, KafkaWire, fetch_session_gauges
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition
from waiting import wait_until

import pystream
from pystream._core import records as core_records
from pystream.client.fetch_session import FetchSessionHandler, PartitionData
from pystream.protocol.messages.delete_records import DeleteRecordsRequest
from pystream.protocol.messages.fetch import FetchRequest
from pystream.protocol.messages.metadata import MetadataRequest
from pystream.protocol.messages.produce import ProduceRequest

TOPIC = "sessions"
PARTITIONS = 8
MANY = "many"  # consumed by real clients
MANY_PARTITIONS = 48
SLOTS = 3
EVICTION_MS = 1500
FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71
FETCH_SESSION_TOPIC_ID_ERROR = 106


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("sessions") / "broker",
        {
            "max.incremental.fetch.session.cache.slots": str(SLOTS),
            "min.incremental.fetch.session.eviction.ms": str(EVICTION_MS),
        },
    )
    process.precreate_topic(TOPIC, PARTITIONS)
    process.precreate_topic(MANY, MANY_PARTITIONS)
    process.start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def wire(broker: BrokerProcess) -> Iterator[KafkaWire]:
    with broker.wire() as w:
        yield w


@pytest.fixture(autouse=True)
def _free_slots(broker: BrokerProcess) -> None:
    """Each test starts with every slot free: the eviction test fills them all."""
    with broker.wire() as w:
        for session_id in list(_OPEN):
            fetch(w, session_id, -1, {})
    _OPEN.clear()


_OPEN: set[int] = set()  # sessions made by the tests, closed before the next test


def produce(wire: KafkaWire, partition: int, value: bytes) -> int:
    records = core_records.build_batch([(None, None, value)])
    request = ProduceRequest(
        acks=-1,
        timeout_ms=5000,
        topic_data=[
            ProduceRequest.TopicProduceData(
                name=TOPIC,
                partition_data=[
                    ProduceRequest.PartitionProduceData(index=partition, records=records)
                ],
            )
        ],
    )
    result = wire.request(0, 9, request).responses[0].partition_responses[0]
    assert result.error_code == 0
    return int(result.base_offset)


def fetch(
    wire: KafkaWire,
    session_id: int,
    epoch: int,
    offsets: dict[int, int],
    forgotten: list[int] | None = None,
    version: int = 12,
    topic_id: uuid.UUID | None = None,
) -> Any:
    """One Fetch of ``offsets`` (partition -> fetch offset) in (session_id, epoch)."""
    request = FetchRequest(
        replica_id=-1,
        max_wait_ms=0,
        min_bytes=0,
        max_bytes=1 << 20,
        session_id=session_id,
        session_epoch=epoch,
        topics=[
            FetchRequest.FetchTopic(
                topic=TOPIC,
                topic_id=topic_id or uuid.UUID(int=0),
                partitions=[
                    FetchRequest.FetchPartition(
                        partition=p, fetch_offset=o, partition_max_bytes=1 << 16
                    )
                    for p, o in offsets.items()
                ],
            )
        ]
        if offsets
        else [],
        forgotten_topics_data=[
            FetchRequest.ForgottenTopic(
                topic=TOPIC, topic_id=topic_id or uuid.UUID(int=0), partitions=forgotten
            )
        ]
        if forgotten
        else [],
    )
    response = wire.request(1, version, request)
    if response.session_id:
        _OPEN.add(response.session_id)
    return response


def answered(response: Any) -> dict[int, Any]:
    """Partition index -> its answer, for the one topic these tests fetch."""
    return {p.partition_index: p for t in response.responses for p in t.partitions}


def values(partition: Any) -> list[bytes | None]:
    data = bytes(partition.records or b"")
    return [r.value for batch in core_records.iter_batches(data) for r in batch]


def new_session(wire: KafkaWire, partitions: range) -> int:
    response = fetch(wire, 0, 0, {p: 0 for p in partitions})
    assert response.error_code == 0
    assert set(answered(response)) == set(partitions)  # a full fetch answers every partition
    return int(response.session_id)


def test_an_incremental_session_answers_only_what_changed(wire: KafkaWire) -> None:
    offsets = {p: 0 for p in range(PARTITIONS)}
    for p in offsets:  # a known high watermark for every partition
        offsets[p] = produce(wire, p, b"seed") + 1
    full = fetch(wire, 0, 0, offsets)
    session = full.session_id
    assert full.error_code == 0 and session != 0
    assert set(answered(full)) == set(range(PARTITIONS))

    # Nothing new: an incremental fetch with no partitions answers none.
    quiet = fetch(wire, session, 1, {})
    assert (quiet.error_code, quiet.session_id, quiet.responses) == (0, session, [])

    # A record on partition 3: exactly that partition, with the record.
    produce(wire, 3, b"news-3")
    news = fetch(wire, session, 2, {})
    assert list(answered(news)) == [3]
    assert values(answered(news)[3]) == [b"news-3"]
    assert answered(news)[3].high_watermark == offsets[3] + 1

    # The fetcher moves partition 3 on: nothing to say again.
    offsets[3] += 1
    assert fetch(wire, session, 3, {3: offsets[3]}).responses == []

    # Forget 0..3; records on 2 (forgotten) and 5 (still in the session): only 5.
    assert fetch(wire, session, 4, {}, forgotten=[0, 1, 2, 3]).responses == []
    produce(wire, 2, b"news-2")
    produce(wire, 5, b"news-5")
    later = fetch(wire, session, 5, {})
    assert list(answered(later)) == [5] and values(answered(later)[5]) == [b"news-5"]

    # A partition added back comes with everything (the session knows nothing of it);
    # 5 moved on has nothing more to say.
    offsets[5] += 1
    readded = fetch(wire, session, 6, {2: offsets[2], 5: offsets[5]})
    assert list(answered(readded)) == [2] and values(answered(readded)[2]) == [b"news-2"]

    # A wrong epoch is refused at the top level, and the session goes on.
    wrong = fetch(wire, session, 99, {})
    assert (wrong.error_code, wrong.session_id, wrong.responses) == (
        INVALID_FETCH_SESSION_EPOCH,
        0,
        [],
    )
    assert fetch(wire, session, 7, {}).error_code == 0

    # Epoch -1 closes it: a sessionless full answer, then the id is unknown.
    closing = fetch(wire, session, -1, {1: offsets[1]})
    assert (closing.error_code, closing.session_id, list(answered(closing))) == (0, 0, [1])
    gone = fetch(wire, session, 8, {})
    assert (gone.error_code, gone.responses) == (FETCH_SESSION_ID_NOT_FOUND, [])


def test_an_idle_partition_reports_a_moved_log_start_offset(wire: KafkaWire) -> None:
    """Nothing wakes a session when DeleteRecords moves an idle partition's log start: the
    session's periodic full read finds it, and only that partition is answered."""
    end = produce(wire, 6, b"to-delete") + 1
    offsets = {p: 0 for p in range(PARTITIONS)}
    full = fetch(wire, 0, 0, offsets)
    offsets = {p: a.high_watermark for p, a in answered(full).items()}
    assert offsets[6] == end
    session, epoch = full.session_id, 1
    assert fetch(wire, session, epoch, offsets).responses == []  # everyone caught up
    epoch += 1
    request = DeleteRecordsRequest(
        topics=[
            DeleteRecordsRequest.DeleteRecordsTopic(
                name=TOPIC,
                partitions=[
                    DeleteRecordsRequest.DeleteRecordsPartition(partition_index=6, offset=end)
                ],
            )
        ],
        timeout_ms=5000,
    )
    assert wire.request(21, 2, request).topics[0].partitions[0].error_code == 0

    def log_start_news() -> dict[int, Any]:
        nonlocal epoch
        response = fetch(wire, session, epoch, {})
        epoch += 1
        assert response.error_code == 0
        return answered(response)

    news = wait_until(log_start_news, timeout=10, what="the new log start offset")
    assert list(news) == [6] and news[6].log_start_offset == end and values(news[6]) == []


def test_unknown_session_id_and_topic_id_mismatch(wire: KafkaWire) -> None:
    unknown = fetch(wire, 123_456_789, 1, {0: 0})
    assert (unknown.error_code, unknown.session_id, unknown.responses) == (
        FETCH_SESSION_ID_NOT_FOUND,
        0,
        [],
    )
    # Made with topic names (v12), continued with topic ids (v13): refused.
    session = new_session(wire, range(2))
    metadata = wire.request(
        3, 12, MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name=TOPIC)])
    )
    topic_id = metadata.topics[0].topic_id
    mismatch = fetch(wire, session, 1, {0: 0}, version=13, topic_id=topic_id)
    assert (mismatch.error_code, mismatch.responses) == (FETCH_SESSION_TOPIC_ID_ERROR, [])
    # A session by topic id works as one by name.
    by_id = fetch(wire, 0, 0, {0: 0, 1: 0}, version=13, topic_id=topic_id)
    assert by_id.session_id != 0 and len(answered(by_id)) == 2
    at_end = {p: a.high_watermark for p, a in answered(by_id).items()}
    moved = fetch(wire, by_id.session_id, 1, at_end, version=13, topic_id=topic_id)
    assert moved.error_code == 0 and moved.responses == []
    produce(wire, 1, b"by-id")
    news = fetch(wire, by_id.session_id, 2, {}, version=13, topic_id=topic_id)
    assert [t.topic_id for t in news.responses] == [topic_id] and list(answered(news)) == [1]
    # Versions before 7 know no sessions: still served, as full fetches.
    assert set(answered(fetch(wire, 0, -1, {0: 0, 1: 0}, version=4))) == {0, 1}


def test_a_full_cache_evicts_the_smaller_session_once_old_enough(wire: KafkaWire) -> None:
    small = new_session(wire, range(1))
    medium = new_session(wire, range(2))
    large = new_session(wire, range(3))
    epochs = {small: 1, medium: 1, large: 1}
    # Every slot is taken by a session younger than the eviction time: no session.
    refused = fetch(wire, 0, 0, {p: 0 for p in range(PARTITIONS)})
    assert refused.session_id == 0 and len(answered(refused)) == PARTITIONS

    def newcomer_gets_a_slot() -> int:
        # Keep the three in use (so none is evicted as stale) while they age.
        for session_id in epochs:
            assert fetch(wire, session_id, epochs[session_id], {}).error_code == 0
            epochs[session_id] += 1
        response = fetch(wire, 0, 0, {p: 0 for p in range(PARTITIONS)})
        return int(response.session_id)

    newcomer = wait_until(newcomer_gets_a_slot, timeout=20, what="a slot after eviction")
    assert newcomer not in epochs
    # The least valuable (the smallest) went; the others go on.
    assert fetch(wire, small, epochs[small], {}).error_code == FETCH_SESSION_ID_NOT_FOUND
    assert fetch(wire, medium, epochs[medium], {}).error_code == 0
    assert fetch(wire, large, epochs[large], {}).error_code == 0
    # A newcomer smaller than every session left does not evict any of them.
    assert fetch(wire, 0, 0, {0: 0}).session_id == 0


def test_no_sessions_with_zero_slots(tmp_path_factory: pytest.TempPathFactory) -> None:
    process = BrokerProcess(
        tmp_path_factory.mktemp("no-sessions") / "broker",
        {"max.incremental.fetch.session.cache.slots": "0"},
    )
    process.precreate_topic(TOPIC, 2)
    process.start()
    try:
        with process.wire() as w:
            response = fetch(w, 0, 0, {0: 0, 1: 0})
            assert (response.error_code, response.session_id) == (0, 0)
            assert set(answered(response)) == {0, 1}
            # So any incremental fetch names an unknown session.
            assert fetch(w, 1, 1, {}).error_code == FETCH_SESSION_ID_NOT_FOUND
    finally:
        process.close()
    _OPEN.clear()


# --- real clients ---------------------------------------------------------------------------


def produce_rounds(broker: BrokerProcess, round_: int) -> dict[tuple[int, int], bytes]:
    """Round 0: one record on every partition; later rounds: a few on three partitions
    (the shape incremental sessions are for).  Returns (partition, offset) -> value."""
    written: dict[tuple[int, int], bytes] = {}
    partitions = range(MANY_PARTITIONS) if round_ == 0 else [round_, 17 + round_, 40 + round_]
    with pystream.Producer(broker.bootstrap) as producer:
        futures = {
            p: producer.send_batch(
                MANY, [b"r%d-p%d-%d" % (round_, p, i) for i in range(3)], partition=p
            )
            for p in partitions
        }
        for p, future in futures.items():
            i = 0  # the value's index, across the batches (in input order)
            for batch in future.result(30):
                for j in range(batch.record_count):
                    written[(p, batch.base_offset + j)] = b"r%d-p%d-%d" % (round_, p, i)
                    i += 1
    return written


def test_our_consumer_reads_many_partitions_through_sessions(broker: BrokerProcess) -> None:
    before = fetch_session_gauges(broker)[0]
    expected: dict[tuple[int, int], bytes] = {}
    got: dict[tuple[int, int], bytes] = {}
    consumer = pystream.Consumer(
        bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=200
    )
    try:
        consumer.assign([(MANY, p) for p in range(MANY_PARTITIONS)])
        for round_ in range(4):
            expected.update(produce_rounds(broker, round_))

            def caught_up() -> bool:
                for record in consumer.poll(0.2):
                    key = (record.partition, record.offset)
                    assert key not in got, f"record {key} delivered twice"
                    got[key] = record.value
                return len(got) >= len(expected)

            wait_until(caught_up, timeout=30, what=f"round {round_} consumed")
            assert got == expected
            if round_ == 0:
                # The session holds every partition of the consumer's.
                wait_until(
                    lambda: fetch_session_gauges(broker)[1] >= MANY_PARTITIONS,
                    timeout=10,
                    what="the consumer's session",
                )
        assert consumer.poll(0.3) == []  # nothing more, nothing twice
    finally:
        consumer.close()
    # Closing the consumer closed its session.
    wait_until(lambda: fetch_session_gauges(broker)[0] <= before, timeout=10, what="session closed")


def test_kafka_python_reads_many_partitions_through_a_session(broker: BrokerProcess) -> None:
    expected: dict[tuple[int, int], bytes] = {}
    got: dict[tuple[int, int], bytes] = {}
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=200,
    )
    try:
        consumer.assign([KpTopicPartition(MANY, p) for p in range(MANY_PARTITIONS)])
        for round_ in range(4, 7):
            expected.update(produce_rounds(broker, round_))

            def caught_up() -> bool:
                for records in consumer.poll(timeout_ms=200).values():
                    for record in records:
                        key = (record.partition, record.offset)
                        assert key not in got, f"record {key} delivered twice"
                        got[key] = record.value
                return len(got) >= len(expected) and all(k in got for k in expected)

            wait_until(caught_up, timeout=30, what=f"round {round_} consumed")
        # Everything from the start of the topic, the earlier tests' rounds included.
        assert {k: v for k, v in got.items() if k in expected} == expected
        assert fetch_session_gauges(broker)[1] >= MANY_PARTITIONS  # its session holds them all
    finally:
        consumer.close()


# --- the requesters' handler ---------------------------------------------------------------


def test_the_session_handler_sends_changes_and_starts_over_after_session_errors() -> None:
    class Response:
        def __init__(self, error_code: int, session_id: int) -> None:
            self.error_code, self.session_id = error_code, session_id

    handler = FetchSessionHandler(node_id=1)
    wanted = {("t", p): PartitionData(0, 5, 1024) for p in range(3)}
    first = handler.build(dict(wanted), 12)
    assert (first.session_id, first.session_epoch, first.sent_partitions) == (0, 0, 3)
    assert handler.handle_response(first, Response(0, 42))
    # Incremental: only the moved partition, and the dropped one forgotten.
    wanted[("t", 1)] = PartitionData(7, 5, 1024)
    del wanted[("t", 2)]
    second = handler.build(dict(wanted), 12)
    assert (second.session_id, second.session_epoch) == (42, 1)
    assert [(t.topic, [p.partition for p in t.partitions]) for t in second.topics] == [("t", [1])]
    assert [(f.topic, list(f.partitions)) for f in second.forgotten_topics_data] == [("t", [2])]
    assert handler.handle_response(second, Response(0, 42))
    assert handler.build(dict(wanted), 12).topics == []  # nothing changed: nothing sent
    # A wrong epoch: a full fetch that closes the session (its id, epoch 0) and makes a new one.
    assert not handler.handle_response(second, Response(INVALID_FETCH_SESSION_EPOCH, 0))
    again = handler.build(dict(wanted), 12)
    assert (again.session_id, again.session_epoch, again.sent_partitions) == (42, 0, 2)
    assert handler.handle_response(again, Response(0, 43))
    # An unknown session: a full fetch asking for a new one (id 0).
    unknown = handler.build(dict(wanted), 12)
    assert not handler.handle_response(unknown, Response(FETCH_SESSION_ID_NOT_FOUND, 0))
    assert handler.build(dict(wanted), 12).session_id == 0
    # Before Fetch v7 there are no sessions: always full, epoch -1.
    assert FetchSessionHandler(2).build(dict(wanted), 6).session_epoch == -1
    # Closing: the session's id with epoch -1, and no partitions.
    closing = FetchSessionHandler(3)
    assert closing.close_request() is None
    closing.handle_response(closing.build(dict(wanted), 12), Response(0, 9))
    close = closing.close_request()
    assert close is not None and (close.session_id, close.session_epoch, close.topics) == (
        9,
        -1,
        [],
    )
