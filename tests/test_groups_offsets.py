"""Committed offsets with real clients: exact resume points, survival of broker restarts
(SIGTERM and SIGKILL), and what admin tools see (groups, members, offsets, lag)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from broker_process import BrokerProcess
from test_groups_rebalance import Member, split_evenly, wait_until
from test_groups_wire import (
    NONE,
    Wire,
    assignment,
    commit,
    describe,
    fetch,
    heartbeat,
    join_member,
    sync,
)

from pystream.protocol.messages.delete_groups import DeleteGroupsRequest

PARTITIONS = 3
PER_PARTITION = 30
TOTAL = PARTITIONS * PER_PARTITION
GROUP_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "num.partitions": str(PARTITIONS),
    "offsets.topic.num.partitions": "10",
}

_names = iter(range(10**6))


def produce(bootstrap: str) -> str:
    """A new topic with PER_PARTITION records in each partition, values ``b"<p>-<i>"``."""
    from kafka import KafkaProducer

    topic = f"offsets-{next(_names)}"
    producer = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    for partition in range(PARTITIONS):
        for i in range(PER_PARTITION):
            producer.send(topic, value=f"{partition}-{i}".encode(), partition=partition)
    producer.flush(30)
    producer.close()
    return topic


Record = tuple[int, int]  # (partition, offset)


def consume(kind: str, bootstrap: str, group: str, topic: str, limit: int) -> list[Record]:
    """Process exactly ``limit`` records as a group member, commit what was processed, leave.

    The commit names the offset after the last processed record of each
    partition — not the consumer's position, which may be further ahead.
    """
    if kind == "aio":
        return asyncio.run(_consume_aio(bootstrap, group, topic, limit))
    processed: list[Record] = []
    deadline = time.monotonic() + 60
    if kind == "ck":
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        while len(processed) < limit and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                processed.append((message.partition(), message.offset()))
        offsets = [TopicPartition(topic, p, o + 1) for p, o in _next_offsets(processed).items()]
        if offsets:
            consumer.commit(offsets=offsets, asynchronous=False)
        consumer.close()
    else:
        from kafka import KafkaConsumer, OffsetAndMetadata
        from kafka import TopicPartition as KTopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        consumer.subscribe([topic])
        while len(processed) < limit and time.monotonic() < deadline:
            for records in consumer.poll(200, max_records=limit - len(processed)).values():
                processed += [(r.partition, r.offset) for r in records]
        consumer.commit(
            {
                KTopicPartition(topic, p): OffsetAndMetadata(o + 1, "", -1)
                for p, o in _next_offsets(processed).items()
            }
        )
        consumer.close()
    assert len(processed) == limit, f"{kind} processed {len(processed)} of {limit} records"
    return processed


async def _consume_aio(bootstrap: str, group: str, topic: str, limit: int) -> list[Record]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    processed: list[Record] = []
    deadline = time.monotonic() + 60
    while len(processed) < limit and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=200, max_records=limit - len(processed))
        for records in batches.values():
            processed += [(r.partition, r.offset) for r in records]
    await consumer.commit(
        {TopicPartition(topic, p): o + 1 for p, o in _next_offsets(processed).items()}
    )
    await consumer.stop()
    assert len(processed) == limit
    return processed


def _next_offsets(processed: list[Record]) -> dict[int, int]:
    """The last processed offset per partition."""
    last: dict[int, int] = {}
    for partition, offset in processed:
        last[partition] = max(offset, last.get(partition, -1))
    return last


def first_offsets(records: list[Record]) -> dict[int, int]:
    first: dict[int, int] = {}
    for partition, offset in records:
        first[partition] = min(offset, first.get(partition, offset))
    return first


def assert_resumed_exactly(before: list[Record], after: list[Record]) -> None:
    """No gap, no re-delivery: together the two runs saw every record exactly once."""
    assert not set(before) & set(after), "records were delivered again after the commit"
    assert sorted(before + after) == [
        (p, o) for p in range(PARTITIONS) for o in range(PER_PARTITION)
    ]
    # Each partition resumes right after the last record processed before.
    last = _next_offsets(before)
    for partition, offset in first_offsets(after).items():
        assert offset == last.get(partition, -1) + 1


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("groups-offsets") / "broker", GROUP_OVERRIDES
    ).start()
    try:
        yield process
    finally:
        process.close()


@pytest.mark.parametrize("kind", ["ck", "kp", "aio"])
def test_restarted_consumer_resumes_exactly_at_the_committed_offsets(
    shared_broker: BrokerProcess, kind: str
) -> None:
    bootstrap = shared_broker.bootstrap
    topic = produce(bootstrap)
    group = f"resume-{topic}"
    before = consume(kind, bootstrap, group, topic, 40)
    after = consume(kind, bootstrap, group, topic, TOTAL - 40)
    assert_resumed_exactly(before, after)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_committed_offsets_and_groups_survive_a_broker_restart(
    broker_factory: Any, how: str
) -> None:
    broker: BrokerProcess = broker_factory(**GROUP_OVERRIDES)
    topic = produce(broker.bootstrap)
    before = consume("ck", broker.bootstrap, "survivor", topic, 40)

    async def prepare() -> tuple[str, int]:
        async with Wire(broker.bootstrap) as wire:
            # Overwritten offsets: the newest commit wins after the replay.
            for offset in (1, 2, 3):
                await commit(wire, "overwritten", {(topic, 0): offset})
            # A deleted group stays deleted (its tombstones are replayed too).
            await commit(wire, "deleted", {(topic, 0): 9})
            response = await wire.call(DeleteGroupsRequest(groups_names=["deleted"]), 1)
            assert response.results[0].error_code == NONE
            # A stable group keeps its generation and members.
            member = await join_member(wire, "stable", session_timeout_ms=30_000)
            plan = {member.member_id: assignment(topic, [0, 1, 2])}
            await sync(wire, "stable", member.generation_id, member.member_id, plan)
            return member.member_id, member.generation_id

    member_id, generation = asyncio.run(prepare())
    if how == "sigterm":
        assert broker.stop() == 0
    else:
        broker.kill()
    broker.start()

    async def check() -> None:
        async with Wire(broker.bootstrap) as wire:

            async def loaded() -> dict[Any, Any]:
                while True:
                    error, offsets = await fetch(wire, "overwritten", [(topic, 0)])
                    if error == NONE:
                        return offsets
                    assert error in (14, 15, 16)  # loading / not available yet: retriable
                    await asyncio.sleep(0.05)

            assert (await asyncio.wait_for(loaded(), 30))[(topic, 0)][0] == 3
            _, deleted = await fetch(wire, "deleted", [(topic, 0)])
            assert deleted[(topic, 0)][0] == -1
            assert await heartbeat(wire, "stable", generation, member_id) == NONE
            [stable] = await describe(wire, "stable")
            assert stable.group_state == "Stable"
            assert stable.members[0].member_assignment == assignment(topic, [0, 1, 2])
            [survivor] = await describe(wire, "survivor")
            assert (survivor.group_state, survivor.protocol_type) == ("Empty", "consumer")

    asyncio.run(check())
    after = consume("ck", broker.bootstrap, "survivor", topic, TOTAL - 40)
    assert_resumed_exactly(before, after)


def test_admin_clients_see_groups_members_offsets_and_lag(shared_broker: BrokerProcess) -> None:
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    bootstrap = shared_broker.bootstrap
    topic = produce(bootstrap)
    lagging, active = f"lagging-{topic}", f"active-{topic}"
    committed = {0: 3, 1: 17, 2: PER_PARTITION}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    altered = admin.alter_consumer_group_offsets(
        [
            ConsumerGroupTopicPartitions(
                lagging, [TopicPartition(topic, p, o) for p, o in committed.items()]
            )
        ]
    )
    altered[lagging].result(timeout=30)
    members = [Member("ck", bootstrap, active, topic).start() for _ in range(PARTITIONS)]
    try:
        wait_until(split_evenly(members, 1), what="one partition per member")

        # confluent-kafka: offsets, lag against the high watermarks, groups, members.
        offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(lagging)])
        found = {
            tp.partition: tp.offset for tp in offsets[lagging].result(timeout=30).topic_partitions
        }
        assert found == committed
        ends = admin.list_offsets(
            {TopicPartition(topic, p): OffsetSpec.latest() for p in range(PARTITIONS)}
        )
        high = {tp.partition: f.result(timeout=30).offset for tp, f in ends.items()}
        lag = {p: high[p] - found[p] for p in range(PARTITIONS)}
        assert lag == {0: PER_PARTITION - 3, 1: PER_PARTITION - 17, 2: 0}
        listed = admin.list_consumer_groups().result(timeout=30).valid
        states = {g.group_id: g.state.name for g in listed}
        assert states[lagging] == "EMPTY" and states[active] == "STABLE"
        description = admin.describe_consumer_groups([active])[active].result(timeout=30)
        assert description.state.name == "STABLE"
        assert description.partition_assignor == "range"
        owned = sorted(
            tp.partition for m in description.members for tp in m.assignment.topic_partitions
        )
        assert owned == list(range(PARTITIONS))

        # kafka-python: the same through its own request versions.
        from kafka import KafkaAdminClient

        kp_admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        kp_offsets = kp_admin.list_group_offsets([lagging])[lagging]
        assert {tp.partition: o.offset for tp, o in kp_offsets.items()} == committed
        kp_groups = {g["group_id"]: g["group_state"] for g in kp_admin.list_groups()}
        assert kp_groups[active] == "Stable"
        kp_described = kp_admin.describe_groups([active])[active]
        assert len(kp_described["members"]) == PARTITIONS
        kp_admin.close()

        # aiokafka: ListGroups v1 and DescribeGroups v3.
        async def aio() -> tuple[set[str], int, dict[int, int]]:
            from aiokafka.admin import AIOKafkaAdminClient

            aio_admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await aio_admin.start()
            try:
                groups = {g[0] for g in await aio_admin.list_consumer_groups()}
                [response] = await aio_admin.describe_consumer_groups([active])
                members = len(response.groups[0][5])
                aio_offsets = await aio_admin.list_consumer_group_offsets(lagging)
                return groups, members, {tp.partition: o.offset for tp, o in aio_offsets.items()}
            finally:
                await aio_admin.close()

        groups, member_count, aio_committed = asyncio.run(aio())
        assert {lagging, active} <= groups
        assert member_count == PARTITIONS
        assert aio_committed == committed

        # An empty group can be deleted, an active one cannot.
        deleted = admin.delete_consumer_groups([lagging, active])
        deleted[lagging].result(timeout=30)
        with pytest.raises(Exception, match="NON_EMPTY_GROUP|not empty"):
            deleted[active].result(timeout=30)
        remaining = {g.group_id for g in admin.list_consumer_groups().result(timeout=30).valid}
        assert lagging not in remaining and active in remaining
    finally:
        for member in members:
            member.close()
