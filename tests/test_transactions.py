"""Transactions (exactly once) against a real broker: confluent-kafka's and aiokafka's
transactional producers, read_committed consumers, the last stable offset, timeouts, fencing,
consume-transform-produce, and the coordinator's recovery after SIGKILL.

Raw-protocol steps use pystream's own codec (helpers in ``test_idempotence.py``).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from broker_process import BrokerProcess, KafkaWire
from test_idempotence import (
    create_topic,
    describe_producers,
    fetch,
    fetched_values,
    idempotent_batch,
    init_producer_id,
    log_end_offset,
    produce,
    wait_until,
)

from pystream._core import records as core_records
from pystream.config import LogConfig
from pystream.errors import ErrorCode
from pystream.protocol.messages.add_partitions_to_txn import AddPartitionsToTxnRequest
from pystream.protocol.messages.describe_transactions import DescribeTransactionsRequest
from pystream.protocol.messages.end_txn import EndTxnRequest
from pystream.protocol.messages.init_producer_id import InitProducerIdRequest
from pystream.protocol.messages.list_transactions import ListTransactionsRequest
from pystream.protocol.messages.write_txn_markers import WriteTxnMarkersRequest
from pystream.storage.log import AppendOrigin, Log
from pystream.storage.txn_index import AbortedTxn, TransactionIndex
from pystream.txn.metadata import TxnState, TxnTransit, encode_key, encode_value
from pystream.txn.state_log import TRANSACTION_STATE_TOPIC, partition_for

E = ErrorCode

# Few internal partitions: quicker to create, same code paths.
SMALL = {
    "transaction.state.log.num.partitions": "4",
    "offsets.topic.num.partitions": "4",
    "group.initial.rebalance.delay.ms": "0",
}


def start(broker_factory, **overrides: str) -> BrokerProcess:
    return broker_factory(**{**SMALL, **overrides})


# --- raw transactional steps ----------------------------------------------------------------


def add_partitions(wire: KafkaWire, txn_id: str, pid: int, epoch: int, topic: str, *parts: int):
    request = AddPartitionsToTxnRequest(
        v3_and_below_transactional_id=txn_id,
        v3_and_below_producer_id=pid,
        v3_and_below_producer_epoch=epoch,
        v3_and_below_topics=[
            AddPartitionsToTxnRequest.AddPartitionsToTxnTopic(name=topic, partitions=list(parts))
        ],
    )
    response = wire.request(24, 3, request)
    return {
        (t.name, r.partition_index): r.partition_error_code
        for t in response.results_by_topic_v3_and_below
        for r in t.results_by_partition
    }


def end_txn(wire: KafkaWire, txn_id: str, pid: int, epoch: int, commit: bool) -> int:
    request = EndTxnRequest(
        transactional_id=txn_id, producer_id=pid, producer_epoch=epoch, committed=commit
    )
    return wire.request(26, 3, request).error_code


def describe_txn(wire: KafkaWire, txn_id: str):
    """DescribeTransactions for one id (waiting while a restarted coordinator loads)."""

    def attempt():
        request = DescribeTransactionsRequest(transactional_ids=[txn_id])
        state = wire.request(65, 0, request).transaction_states[0]
        return None if state.error_code == E.COORDINATOR_LOAD_IN_PROGRESS else state

    return wait_until(attempt, what=f"the coordinator of {txn_id!r} to load")


def open_raw_transaction(wire: KafkaWire, txn_id: str, topic: str, count: int, timeout_ms=60_000):
    """InitProducerId, AddPartitionsToTxn, one transactional batch: (pid, epoch, base offset)."""
    pid, epoch = init_producer_id(wire, txn_id, timeout_ms)
    assert add_partitions(wire, txn_id, pid, epoch, topic, 0) == {(topic, 0): 0}
    batch = idempotent_batch(pid, epoch, 0, count, "txn", transactional=True)
    written = produce(wire, topic, batch, transactional_id=txn_id)
    assert written.error_code == 0
    return pid, epoch, written.base_offset


def committed_values(wire: KafkaWire, topic: str) -> list[bytes]:
    return [value for _, value in fetched_values(fetch(wire, topic, committed=True))]


def uncommitted_values(wire: KafkaWire, topic: str) -> list[bytes]:
    return [value for _, value in fetched_values(fetch(wire, topic))]


def consume_all(bootstrap: str, topic: str, isolation: str, expected: int, partitions=(0,)):
    """Every value a confluent-kafka consumer with ``isolation`` reads (stops at ``expected``
    values, or when the partitions' ends are reached)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{isolation}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    values: list[bytes] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                assert message.error().code() == -191, message.error()  # _PARTITION_EOF
                at_end.add(message.partition())
                if len(at_end) == len(partitions) and len(values) >= expected:
                    break
                continue
            values.append(message.value())
    finally:
        consumer.close()
    return values


def txn_producer(bootstrap: str, txn_id: str, **config):
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 5, **config}
    )
    producer.init_transactions(30)
    return producer


# --- commit, abort, read_committed ----------------------------------------------------------


def test_read_committed_sees_only_committed_records_read_uncommitted_sees_all(
    broker_factory,
) -> None:
    broker = start(broker_factory)
    producer = txn_producer(broker.bootstrap, "ab-1")
    producer.begin_transaction()
    for i in range(5):
        producer.produce("ab", value=f"aborted-{i}".encode(), partition=0)
    producer.flush(10)
    producer.abort_transaction(30)
    producer.begin_transaction()
    for i in range(5):
        producer.produce("ab", value=f"committed-{i}".encode(), partition=0)
    producer.commit_transaction(30)

    committed = [f"committed-{i}".encode() for i in range(5)]
    aborted = [f"aborted-{i}".encode() for i in range(5)]
    assert consume_all(broker.bootstrap, "ab", "read_committed", 5) == committed
    assert consume_all(broker.bootstrap, "ab", "read_uncommitted", 10) == aborted + committed
    with broker.wire() as wire:
        response = fetch(wire, "ab", committed=True)
        # The aborted transaction is listed for read_committed fetches ...
        (txn,) = response.aborted_transactions
        assert txn.first_offset == 0
        # ... and recorded in the segment's .txnindex (one 34-byte entry).
        assert (broker.log_dir / "ab-0" / f"{0:020d}.txnindex").stat().st_size == 34
        assert fetch(wire, "ab").aborted_transactions is None  # read_uncommitted: null
        # 5 aborted + marker + 5 committed + marker; nothing is open.
        assert response.high_watermark == response.last_stable_offset == 12


def test_aiokafka_transactional_producer_commit_and_abort(broker_factory) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    broker = start(broker_factory)

    async def run() -> tuple[list[bytes], list[bytes]]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="aio-1")
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(3):
                    await producer.send("aio-txn", f"c{i}".encode(), partition=0)
            with pytest.raises(RuntimeError):
                async with producer.transaction():
                    for i in range(3):
                        await producer.send("aio-txn", f"a{i}".encode(), partition=0)
                    raise RuntimeError("abort this one")
            async with producer.transaction():
                await producer.send("aio-txn", b"last", partition=0)
        finally:
            await producer.stop()
        seen = []
        for isolation in ("read_committed", "read_uncommitted"):
            consumer = AIOKafkaConsumer(
                bootstrap_servers=broker.bootstrap,
                isolation_level=isolation,
                enable_auto_commit=False,
            )
            await consumer.start()
            try:
                tp = TopicPartition("aio-txn", 0)
                consumer.assign([tp])
                await consumer.seek_to_beginning(tp)
                values: list[bytes] = []
                want = 4 if isolation == "read_committed" else 7
                deadline = time.monotonic() + 30
                while len(values) < want and time.monotonic() < deadline:
                    batches = await consumer.getmany(tp, timeout_ms=500)
                    values += [m.value for m in batches.get(tp, [])]
                seen.append(values)
            finally:
                await consumer.stop()
        return seen[0], seen[1]

    committed, everything = asyncio.run(run())
    assert committed == [b"c0", b"c1", b"c2", b"last"]
    assert everything == [b"c0", b"c1", b"c2", b"a0", b"a1", b"a2", b"last"]


def test_open_transaction_holds_read_committed_consumers_at_the_lso(broker_factory) -> None:
    broker = start(broker_factory)
    with broker.wire() as wire:
        create_topic(wire, "lso")
        plain = produce(wire, "lso", idempotent_batch(*init_producer_id(wire), 0, 2, "before"))
        assert plain.base_offset == 0
        pid, epoch, first = open_raw_transaction(wire, "lso-1", "lso", 3)
        assert first == 2
        # Records written after the transaction began, by another (non-transactional) producer.
        assert (
            produce(
                wire, "lso", idempotent_batch(*init_producer_id(wire), 0, 2, "after")
            ).error_code
            == 0
        )

        held = fetch(wire, "lso", committed=True)
        assert held.last_stable_offset == 2 and held.high_watermark == 7
        assert [v for _, v in fetched_values(held)] == [b"before0", b"before1"]
        assert log_end_offset(wire, "lso", committed=True) == 2
        # read_uncommitted sees everything up to the high watermark.
        assert len(uncommitted_values(wire, "lso")) == 7
        # A read_committed consumer at the LSO gets nothing until the transaction ends.
        assert fetched_values(fetch(wire, "lso", offset=2, committed=True)) == []

        assert end_txn(wire, "lso-1", pid, epoch, commit=True) == 0
        released = fetch(wire, "lso", committed=True)
        assert released.last_stable_offset == released.high_watermark == 8  # + the marker
        assert [v for _, v in fetched_values(released)] == [
            b"before0",
            b"before1",
            b"txn0",
            b"txn1",
            b"txn2",
            b"after0",
            b"after1",
        ]
    values = consume_all(broker.bootstrap, "lso", "read_committed", 7)
    assert values == [b"before0", b"before1", b"txn0", b"txn1", b"txn2", b"after0", b"after1"]


def test_transactional_write_needs_the_partition_in_an_ongoing_transaction(
    broker_factory,
) -> None:
    broker = start(broker_factory)
    with broker.wire() as wire:
        create_topic(wire, "unadded")
        pid, epoch = init_producer_id(wire, "unadded-1")
        batch = idempotent_batch(pid, epoch, 0, 2, transactional=True)
        refused = produce(wire, "unadded", batch, transactional_id="unadded-1")
        assert refused.error_code == E.INVALID_TXN_STATE
        assert log_end_offset(wire, "unadded") == 0  # no transaction left hanging
        # An unknown topic fails the whole AddPartitionsToTxn, naming the culprit.
        results = add_partitions(wire, "unadded-1", pid, epoch, "no-such-topic", 0)
        assert results == {("no-such-topic", 0): E.UNKNOWN_TOPIC_OR_PARTITION}
        assert describe_txn(wire, "unadded-1").transaction_state == "Empty"
        # transaction.max.timeout.ms (900000 by default) bounds the producer's timeout.
        too_long = InitProducerIdRequest(transactional_id="slow", transaction_timeout_ms=900_001)
        assert wire.request(22, 4, too_long).error_code == E.INVALID_TRANSACTION_TIMEOUT


# --- timeouts and fencing -------------------------------------------------------------------


def test_transaction_timeout_aborts_and_fences_the_producer(broker_factory) -> None:
    from confluent_kafka import KafkaException

    broker = start(
        broker_factory, **{"transaction.abort.timed.out.transaction.cleanup.interval.ms": "100"}
    )
    producer = txn_producer(broker.bootstrap, "slow-1", **{"transaction.timeout.ms": 1500})
    producer.begin_transaction()
    for i in range(3):
        producer.produce("slow", value=f"late-{i}".encode(), partition=0)
    assert producer.flush(10) == 0
    with broker.wire() as wire:
        state = wait_until(
            lambda: (s := describe_txn(wire, "slow-1")).transaction_state == "CompleteAbort" and s,
            what="the timed-out transaction to be aborted",
        )
        assert state.producer_epoch == 1  # the producer had epoch 0: fenced
        response = fetch(wire, "slow", committed=True)
        assert response.last_stable_offset == response.high_watermark == 4  # 3 + abort marker
        assert fetched_values(response) == []
    with pytest.raises(KafkaException) as failure:
        producer.commit_transaction(10)
    assert failure.value.args[0].fatal()  # fenced: this instance must go away


def test_new_instance_fences_the_zombie_and_aborts_its_transaction(broker_factory) -> None:
    from confluent_kafka import KafkaException

    broker = start(broker_factory)
    zombie = txn_producer(broker.bootstrap, "app-1")
    zombie.begin_transaction()
    zombie.produce("fence", value=b"zombie-0", partition=0)
    assert zombie.flush(10) == 0

    successor = txn_producer(broker.bootstrap, "app-1")  # same transactional.id
    with broker.wire() as wire:
        state = describe_txn(wire, "app-1")
        assert state.transaction_state == "Empty"
        assert state.producer_epoch == 2  # 0: zombie; 1: its transaction's abort; 2: successor
        assert fetch(wire, "fence", committed=True).aborted_transactions[0].first_offset == 0
    successor.begin_transaction()
    successor.produce("fence", value=b"successor-0", partition=0)
    successor.commit_transaction(30)

    with pytest.raises(KafkaException) as failure:
        zombie.produce("fence", value=b"zombie-1", partition=0)
        zombie.commit_transaction(10)
    assert failure.value.args[0].fatal()
    assert consume_all(broker.bootstrap, "fence", "read_committed", 1) == [b"successor-0"]
    with broker.wire() as wire:
        assert b"zombie-1" not in uncommitted_values(wire, "fence")


# --- consume-transform-produce --------------------------------------------------------------


def test_consume_transform_produce_gives_every_input_exactly_once(broker_factory) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    broker = start(broker_factory)
    source = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(300):
        source.produce("ctp-in", value=f"{i}".encode(), partition=0)
    assert source.flush(10) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "ctp",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition("ctp-in", 0)])
    producer = txn_producer(broker.bootstrap, "ctp-app")
    rounds = 0
    done = 0
    deadline = time.monotonic() + 60
    while done < 300 and time.monotonic() < deadline:
        messages = [m for m in consumer.consume(50, 1.0) if m.error() is None]
        if not messages:
            continue
        producer.begin_transaction()
        for message in messages:
            producer.produce("ctp-out", value=b"out-" + message.value(), partition=0)
        positions = [TopicPartition("ctp-in", 0, messages[-1].offset() + 1)]
        producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
        rounds += 1
        if rounds == 2:
            # A failed round (its output written): abort, resume from the committed offset.
            assert producer.flush(10) == 0
            producer.abort_transaction(30)
            (committed,) = consumer.committed([TopicPartition("ctp-in", 0)], 10)
            assert committed.offset == int(messages[0].value())  # the abort committed nothing
            consumer.seek(TopicPartition("ctp-in", 0, committed.offset))
            continue
        producer.commit_transaction(30)
        done = messages[-1].offset() + 1
    (committed,) = consumer.committed([TopicPartition("ctp-in", 0)], 10)
    consumer.close()
    assert committed.offset == 300
    outputs = consume_all(broker.bootstrap, "ctp-out", "read_committed", 300)
    assert outputs == [f"out-{i}".encode() for i in range(300)]  # each input exactly once
    with broker.wire() as wire:
        assert len(uncommitted_values(wire, "ctp-out")) > 300  # the aborted round is there


# --- coordinator recovery -------------------------------------------------------------------


def test_sigkill_mid_transaction_aborts_it_after_restart(broker_factory) -> None:
    broker = start(
        broker_factory, **{"transaction.abort.timed.out.transaction.cleanup.interval.ms": "100"}
    )
    with broker.wire() as wire:
        create_topic(wire, "crash")
        # The timeout outlasts the restart, so the recovered LSO can be seen holding first.
        pid, epoch, _ = open_raw_transaction(wire, "crash-1", "crash", 4, timeout_ms=6000)
        assert fetch(wire, "crash", committed=True).last_stable_offset == 0
    broker.kill()
    broker.start()
    with broker.wire() as wire:
        # Recovered: the producer state holds the LSO at the open transaction ...
        assert fetch(wire, "crash", committed=True).last_stable_offset == 0
        # ... until the restarted coordinator times it out and aborts it.
        wait_until(
            lambda: describe_txn(wire, "crash-1").transaction_state == "CompleteAbort",
            timeout=30,
            what="the abort of the transaction open at the crash",
        )
        response = fetch(wire, "crash", committed=True)
        assert response.last_stable_offset == response.high_watermark == 5
        assert fetched_values(response) == []
        # The old producer instance is fenced.
        assert end_txn(wire, "crash-1", pid, epoch, commit=True) == E.PRODUCER_FENCED


def test_committed_transaction_survives_sigkill(broker_factory) -> None:
    broker = start(broker_factory)
    with broker.wire() as wire:
        create_topic(wire, "durable-txn")
        pid, epoch, _ = open_raw_transaction(wire, "dur-1", "durable-txn", 3)
        assert end_txn(wire, "dur-1", pid, epoch, commit=True) == 0
    broker.kill()
    broker.start()
    with broker.wire() as wire:
        assert committed_values(wire, "durable-txn") == [b"txn0", b"txn1", b"txn2"]
        state = describe_txn(wire, "dur-1")
        assert (state.transaction_state, state.producer_id) == ("CompleteCommit", pid)
        # The retried EndTxn of a completed commit is answered with success, not an error.
        assert end_txn(wire, "dur-1", pid, epoch, commit=True) == 0
        assert end_txn(wire, "dur-1", pid, epoch, commit=False) == E.INVALID_TXN_STATE


def test_restarted_coordinator_finishes_a_logged_prepare_commit(broker_factory) -> None:
    """The coordinator crashed after logging PrepareCommit, before writing any marker: the
    restarted one must complete the commit (the decision was durable)."""
    broker = start(broker_factory)
    with broker.wire() as wire:
        create_topic(wire, "prepared")
        pid, epoch, _ = open_raw_transaction(wire, "prep-1", "prepared", 3)
        started = describe_txn(wire, "prep-1").transaction_start_time_ms
    broker.kill()
    # Append what the coordinator writes first on EndTxn(commit): PrepareCommit.
    partition = partition_for("prep-1", int(SMALL["transaction.state.log.num.partitions"]))
    state_log = Log.open(
        str(broker.log_dir / f"{TRANSACTION_STATE_TOPIC}-{partition}"),
        LogConfig.from_properties({"cleanup.policy": "compact"}),
    )
    transit = TxnTransit(
        producer_id=pid,
        last_producer_id=-1,
        producer_epoch=epoch,
        last_producer_epoch=-1,
        txn_timeout_ms=60_000,
        state=TxnState.PREPARE_COMMIT,
        partitions=frozenset({("prepared", 0)}),
        txn_start_timestamp=started,
        txn_last_update_timestamp=int(time.time() * 1000),
    )
    record = core_records.build_batch(
        [(int(time.time() * 1000), encode_key("prep-1"), encode_value(transit))]
    )
    state_log.append(record, 0, origin=AppendOrigin.COORDINATOR)
    state_log.close()
    broker.start()
    with broker.wire() as wire:
        wait_until(
            lambda: describe_txn(wire, "prep-1").transaction_state == "CompleteCommit",
            what="the logged commit to be completed",
        )
        assert committed_values(wire, "prepared") == [b"txn0", b"txn1", b"txn2"]
        producers = describe_producers(wire, "prepared")
        assert [(p.producer_id, p.current_txn_start_offset) for p in producers] == [(pid, -1)]


LOADING = (E.COORDINATOR_LOAD_IN_PROGRESS, E.COORDINATOR_NOT_AVAILABLE, E.NOT_COORDINATOR)


def init_producer_id_of(wire: KafkaWire, txn_id: str, pid: int, epoch: int):
    """InitProducerId v4 naming (pid, epoch) — (-1, -1): a new instance; the caller's own:
    a producer bumping its epoch (KIP-360) — retried while the id's coordinator loads."""
    request = InitProducerIdRequest(
        transactional_id=txn_id,
        transaction_timeout_ms=60_000,
        producer_id=pid,
        producer_epoch=epoch,
    )
    return wait_until(
        lambda: (r := wire.request(22, 4, request)).error_code not in LOADING and r,
        what=f"the coordinator of {txn_id!r} to serve it",
    )


def test_a_retried_epoch_bump_keeps_its_producer_id_across_a_coordinator_restart(
    broker_factory,
) -> None:
    broker = start(broker_factory)
    with broker.wire() as wire:
        create_topic(wire, "retried")
        pid, epoch = init_producer_id(wire, "retry-1")
        # The producer bumps its own epoch (as after an abortable error) ...
        bumped = init_producer_id_of(wire, "retry-1", pid, epoch)
        assert (bumped.error_code, bumped.producer_id, bumped.producer_epoch) == (
            0,
            pid,
            epoch + 1,
        )
    # ... the coordinator dies before the answer gets through, so the producer sends the
    # same request again, to the restarted coordinator.
    broker.kill()
    broker.start()
    with broker.wire() as wire:
        retried = init_producer_id_of(wire, "retry-1", pid, epoch)
        # Its own bump, recognised: the same producer id and epoch, not PRODUCER_FENCED.
        assert (retried.error_code, retried.producer_id, retried.producer_epoch) == (
            0,
            pid,
            epoch + 1,
        )
        # And it carries on: a transaction with that epoch commits.
        assert add_partitions(wire, "retry-1", pid, epoch + 1, "retried", 0) == {("retried", 0): 0}
        batch = idempotent_batch(pid, epoch + 1, 0, 3, "txn", transactional=True)
        assert produce(wire, "retried", batch, transactional_id="retry-1").error_code == 0
        assert end_txn(wire, "retry-1", pid, epoch + 1, commit=True) == 0
        wait_until(
            lambda: committed_values(wire, "retried") == [b"txn0", b"txn1", b"txn2"],
            what="the transaction committed",
        )
        # A new instance (no producer id given) fences every earlier epoch for good ...
        assert init_producer_id(wire, "retry-1") == (pid, epoch + 2)
    broker.kill()
    broker.start()
    with broker.wire() as wire:
        # ... restart or not: neither older epoch passes for a retry.
        for old_epoch in (epoch + 1, epoch):
            fenced = init_producer_id_of(wire, "retry-1", pid, old_epoch)
            assert fenced.error_code == E.PRODUCER_FENCED


# --- admin APIs and expiry ------------------------------------------------------------------


def test_describe_and_list_transactions(broker_factory) -> None:
    broker = start(broker_factory)
    with broker.wire() as wire:
        create_topic(wire, "listed")
        pid, epoch, _ = open_raw_transaction(wire, "list-1", "listed", 1)
        state = describe_txn(wire, "list-1")
        assert (state.error_code, state.transaction_state, state.producer_id) == (0, "Ongoing", pid)
        assert [(t.topic, t.partitions) for t in state.topics] == [("listed", [0])]
        assert describe_txn(wire, "nobody").error_code == E.TRANSACTIONAL_ID_NOT_FOUND

        def listed(states, pids=()):
            request = ListTransactionsRequest(
                state_filters=list(states), producer_id_filters=list(pids), duration_filter=-1
            )
            response = wire.request(66, 1, request)
            return response, [
                (t.transactional_id, t.transaction_state) for t in response.transaction_states
            ]

        assert listed(["Ongoing"])[1] == [("list-1", "Ongoing")]
        assert listed(["CompleteCommit"])[1] == []
        assert listed([], [pid + 1000])[1] == []
        response, found = listed(["Bogus"])
        assert response.unknown_state_filters == ["Bogus"] and found == []
        assert end_txn(wire, "list-1", pid, epoch, commit=True) == 0
        assert listed(["CompleteCommit"])[1] == [("list-1", "CompleteCommit")]


def test_write_txn_markers_ends_the_transaction_in_a_partition(broker_factory) -> None:
    """The broker-to-broker API: a coordinator elsewhere asks this leader for markers."""
    broker = start(broker_factory)
    Marker = WriteTxnMarkersRequest.WritableTxnMarker
    with broker.wire() as wire:
        create_topic(wire, "marked")
        pid, epoch, _ = open_raw_transaction(wire, "mark-1", "marked", 2)
        request = WriteTxnMarkersRequest(
            markers=[
                Marker(
                    producer_id=pid,
                    producer_epoch=epoch,
                    transaction_result=False,  # abort
                    coordinator_epoch=0,
                    topics=[
                        WriteTxnMarkersRequest.WritableTxnMarkerTopic(
                            name="marked", partition_indexes=[0]
                        ),
                        WriteTxnMarkersRequest.WritableTxnMarkerTopic(
                            name="no-such-topic", partition_indexes=[0]
                        ),
                    ],
                )
            ]
        )
        (result,) = wire.request(27, 1, request).markers
        codes = {
            (t.name, p.partition_index): p.error_code for t in result.topics for p in t.partitions
        }
        assert codes == {("marked", 0): 0, ("no-such-topic", 0): E.UNKNOWN_TOPIC_OR_PARTITION}
        response = fetch(wire, "marked", committed=True)
        assert response.last_stable_offset == response.high_watermark == 3
        assert [(t.producer_id, t.first_offset) for t in response.aborted_transactions] == [
            (pid, 0)
        ]
        assert fetched_values(response) == []
        # A marker from an older coordinator epoch than the partition has seen is refused.
        request.markers[0].coordinator_epoch = -5
        (result,) = wire.request(27, 1, request).markers
        assert result.topics[0].partitions[0].error_code == E.TRANSACTION_COORDINATOR_FENCED


def test_idle_transactional_id_expires(broker_factory) -> None:
    broker = start(
        broker_factory,
        **{
            "transactional.id.expiration.ms": "2000",
            "transaction.remove.expired.transaction.cleanup.interval.ms": "100",
        },
    )
    with broker.wire() as wire:
        create_topic(wire, "expire-txn")
        pid, epoch, _ = open_raw_transaction(wire, "exp-1", "expire-txn", 1)
        assert end_txn(wire, "exp-1", pid, epoch, commit=True) == 0
        wait_until(
            lambda: describe_txn(wire, "exp-1").error_code == E.TRANSACTIONAL_ID_NOT_FOUND,
            what="the idle transactional id to expire",
        )
        # Gone for good (a tombstone in the log): after a restart too; a new producer id then.
    broker.restart()
    with broker.wire() as wire:
        assert describe_txn(wire, "exp-1").error_code == E.TRANSACTIONAL_ID_NOT_FOUND
        new_pid, new_epoch = init_producer_id(wire, "exp-1")
        assert new_pid != pid and new_epoch == 0


# --- the transaction index (no broker) ------------------------------------------------------


def test_transaction_index_collects_by_range_and_follows_segment_changes(tmp_path) -> None:
    index = TransactionIndex(str(tmp_path))
    index.append(0, AbortedTxn(1, 0, 5, 6))
    index.append(100, AbortedTxn(2, 90, 105, 106))  # started in the previous segment
    index.append(200, AbortedTxn(3, 200, 205, 206))
    assert [t.producer_id for t in index.collect(0, 50)] == [1]
    assert [t.producer_id for t in index.collect(6, 100)] == [2]  # overlaps [6, 100)
    assert [t.producer_id for t in index.collect(106, 1000)] == [3]
    # The cleaner merges segments 0 and 100 into one at base 0: entries move, none is lost.
    index.delete_segments([0, 100], live_segment_bases=[0, 200])
    reloaded = TransactionIndex(str(tmp_path))
    reloaded.load([0, 200], keep_below=1000)
    assert [t.producer_id for t in reloaded.all()] == [1, 2, 3]
    # Retention deletes the first segment: its transactions go with it.
    reloaded.delete_segments([0], live_segment_bases=[200])
    assert [t.producer_id for t in reloaded.all()] == [3]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{200:020d}.txnindex"]
    # Truncation drops transactions whose marker is cut off.
    reloaded.truncate_from(205)
    assert reloaded.all() == [] and not (tmp_path / f"{200:020d}.txnindex").exists()


@pytest.mark.parametrize("version", range(4, 17))
def test_fetch_encoder_writes_aborted_transactions_as_the_reference_codec(version: int) -> None:
    """The zero-copy Fetch encoder lists aborted transactions byte for byte like the generated
    codec (null for read_uncommitted, a list for read_committed)."""
    import uuid

    from pystream.broker.apis.fetch import FetchPlan, PartitionFetch, TopicFetch, encode_reference
    from pystream.broker.fetch_response import encode_fetch_response
    from pystream.protocol.messages.fetch import FetchResponse

    aborted = [
        FetchResponse.AbortedTransaction(producer_id=7, first_offset=3),
        FetchResponse.AbortedTransaction(producer_id=2**40, first_offset=2**33),
    ]
    partitions = [
        PartitionFetch(0, 0, 100, high_watermark=10, last_stable_offset=4, aborted_transactions=a)
        for a in (None, [], aborted, aborted * 40)
    ]
    plan = FetchPlan([TopicFetch("t", uuid.uuid4(), partitions)], max_bytes=1000)
    expected = b"".join(encode_reference(plan, version, 9))
    assert b"".join(encode_fetch_response(plan, version, 9)) == expected
