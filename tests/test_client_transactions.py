"""pystream's transactional producer against one real broker process: commit and abort
across partitions (read back read_committed by librdkafka and by pystream's consumer),
fencing by a second producer with the same transactional_id, the context manager, and
consumer offsets committed with the transaction."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from broker_process import BrokerProcess
from txn_helpers import ck_read_committed
from waiting import wait_until

import pystream
from pystream import ConsumerGroupMetadata, TopicPartition, aio
from pystream.client.errors import TransactionAbortedError
from pystream.errors import KafkaError, ProducerFencedError

PARTITIONS = 3
# Few internal partitions: quicker to create, same code paths.
OVERRIDES = {
    "num.partitions": str(PARTITIONS),
    "transaction.state.log.num.partitions": "4",
    "offsets.topic.num.partitions": "4",
    "group.initial.rebalance.delay.ms": "0",
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("client-txn"), OVERRIDES).start()
    try:
        yield process
    finally:
        process.close()


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ck_committed_values(bootstrap: str, topic: str, marker: bytes) -> list[bytes]:
    """Every value librdkafka's read_committed consumer sees, up to a ``marker`` record
    committed last (so an aborted transaction before it has been decided)."""
    return ck_read_committed(
        bootstrap, topic, PARTITIONS, lambda seen: marker in seen, f"marker of {topic}"
    )


def py_committed_values(bootstrap: str, topic: str, marker: bytes) -> list[bytes]:
    """The same with pystream's consumer (isolation_level='read_committed')."""
    seen: list[bytes] = []
    with pystream.Consumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", auto_offset_reset="earliest"
    ) as consumer:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])

        def reached_marker() -> bool:
            seen.extend(r.value for r in consumer.poll(0.5))
            return marker in seen

        wait_until(reached_marker, timeout=60, what=f"marker of {topic} (pystream consumer)")
    return seen


def transactional(
    broker: BrokerProcess, txn_id: str | None = None, **settings
) -> pystream.Producer:
    producer = pystream.Producer(
        broker.bootstrap, transactional_id=txn_id or new_name("txn"), **settings
    )
    producer.init_transactions(60)
    return producer


def test_commit_and_abort_across_three_partitions(broker: BrokerProcess) -> None:
    topic = new_name("ta")
    with transactional(broker) as producer:
        producer.begin_transaction()
        for i in range(90):
            producer.send(topic, f"committed-{i}".encode(), partition=i % PARTITIONS)
        producer.send_batch(topic, [b"committed-batch"], partition=1)
        producer.commit_transaction(60)

        producer.begin_transaction()
        sent = [
            producer.send(topic, f"aborted-{i}".encode(), partition=i % PARTITIONS)
            for i in range(90)
        ]
        producer.flush(60)  # written to the log, then aborted: markers hide them
        assert all(f.result(0).offset >= 0 for f in sent)
        producer.abort_transaction(60)

        producer.begin_transaction()
        unsent = producer.send(topic, b"never-sent", partition=2)
        producer.abort_transaction(60)  # still queued: fails without being sent
        with pytest.raises(TransactionAbortedError):
            unsent.result(10)

        producer.begin_transaction()
        for p in range(PARTITIONS):
            producer.send(topic, b"end", partition=p)
        producer.commit_transaction(60)

    expected = sorted([f"committed-{i}".encode() for i in range(90)] + [b"committed-batch"])
    for read in (ck_committed_values, py_committed_values):
        values = read(broker.bootstrap, topic, b"end")
        assert sorted(v for v in values if v != b"end") == expected, read.__name__
        assert values.count(b"end") >= 1


def test_send_outside_a_transaction_is_refused(broker: BrokerProcess) -> None:
    producer = pystream.Producer(broker.bootstrap, transactional_id=new_name("txn"))
    try:
        with pytest.raises(RuntimeError, match="init_transactions"):
            producer.send(new_name("tx"), b"x")
        producer.init_transactions(60)
        with pytest.raises(RuntimeError, match="begin_transaction"):
            producer.send(new_name("tx"), b"x")
    finally:
        producer.close(10)


def test_a_second_producer_with_the_same_id_fences_the_first(broker: BrokerProcess) -> None:
    topic = new_name("tf")
    txn_id = new_name("fenced")
    first = transactional(broker, txn_id)
    try:
        first.begin_transaction()
        first.send(topic, b"zombie", partition=0).result(30)
        with transactional(broker, txn_id) as second:
            # The first's open transaction was aborted by the second's InitProducerId.
            with pytest.raises(ProducerFencedError):
                first.send(topic, b"zombie-2", partition=0)
                first.commit_transaction(60)
            # Fatal: every later call raises it again.
            with pytest.raises(ProducerFencedError):
                first.begin_transaction()
            with pytest.raises(ProducerFencedError):
                first.send(topic, b"zombie-3", partition=1)
            with second.transaction():
                for p in range(PARTITIONS):
                    second.send(topic, b"end", partition=p)
    finally:
        first.close(10)
    assert b"zombie" not in ck_committed_values(broker.bootstrap, topic, b"end")


def test_the_context_manager_commits_or_aborts_on_exception(broker: BrokerProcess) -> None:
    topic = new_name("tc")
    with transactional(broker) as producer:
        with producer.transaction():
            producer.send(topic, b"kept", partition=0)
        with pytest.raises(ValueError, match="transform"), producer.transaction():
            producer.send(topic, b"dropped", partition=1).result(30)
            raise ValueError("the transform failed")
        with producer.transaction():  # the producer is usable after the abort
            for p in range(PARTITIONS):
                producer.send(topic, b"end", partition=p)
    values = ck_committed_values(broker.bootstrap, topic, b"end")
    assert b"kept" in values and b"dropped" not in values


def test_offsets_are_committed_only_with_the_transaction(broker: BrokerProcess) -> None:
    source, sink, group = new_name("src"), new_name("sink"), new_name("group")
    tp = TopicPartition(source, 0)
    with pystream.Consumer(bootstrap_servers=broker.bootstrap, group_id=group) as consumer:
        with transactional(broker) as producer:
            producer.begin_transaction()
            producer.send(sink, b"out-aborted", partition=0)
            producer.send_offsets_to_transaction({tp: 5}, ConsumerGroupMetadata(group))
            producer.abort_transaction(60)
            assert consumer.committed([tp]).get(tp) is None

            with producer.transaction():
                producer.send(sink, b"out-committed", partition=0)
                producer.send_offsets_to_transaction({tp: 7}, group)  # a group id works too

            def committed() -> int | None:
                value = consumer.committed([tp]).get(tp)
                return None if value is None else value.offset

            wait_until(lambda: committed() == 7, timeout=30, what="offset 7 committed")


def test_the_aio_producer_commits_and_aborts(broker: BrokerProcess) -> None:
    topic = new_name("taio")

    async def run() -> None:
        async with aio.Producer(broker.bootstrap, transactional_id=new_name("aio")) as producer:
            await producer.init_transactions()
            async with producer.transaction():
                await producer.send(topic, b"aio-kept", partition=0)
            with pytest.raises(KeyError):
                async with producer.transaction():
                    await (await producer.send(topic, b"aio-dropped", partition=1))
                    raise KeyError("the transform failed")
            async with producer.transaction():
                for p in range(PARTITIONS):
                    await producer.send(topic, b"end", partition=p)

    asyncio.run(run())
    values = ck_committed_values(broker.bootstrap, topic, b"end")
    assert b"aio-kept" in values and b"aio-dropped" not in values


def test_a_failed_batch_is_abortable_and_the_next_transaction_works(
    broker: BrokerProcess,
) -> None:
    """A record the broker refuses (over the topic's max.message.bytes) fails its batch:
    commit raises that error, send() refuses until abort_transaction(), which bumps the
    epoch with the coordinator (KIP-360: the refused batch left a sequence gap)."""
    topic = new_name("tab")
    with pystream.AdminClient(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topics(
            [pystream.NewTopic(topic, PARTITIONS, config={"max.message.bytes": "2000"})]
        )
    with transactional(broker, batch_size=1000) as producer:
        epoch = producer._aio._txn.producer_epoch
        producer.begin_transaction()
        producer.send(topic, b"before", partition=0)
        producer.send(topic, b"x" * 5000, partition=0)
        with pytest.raises(KafkaError, match="max.message.bytes"):
            producer.commit_transaction(60)
        with pytest.raises(KafkaError, match="abort_transaction"):
            producer.send(topic, b"refused", partition=0)
        producer.abort_transaction(60)
        assert producer._aio._txn.producer_epoch > epoch
        with producer.transaction():
            producer.send(topic, b"after", partition=0)
            for p in range(PARTITIONS):
                producer.send(topic, b"end", partition=p)
    values = ck_committed_values(broker.bootstrap, topic, b"end")
    assert b"after" in values and b"before" not in values and b"refused" not in values
