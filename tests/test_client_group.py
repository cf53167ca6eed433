"""Consumer groups: pystream members alone and mixed with librdkafka members.

These need the broker's group coordinator (FindCoordinator, JoinGroup, SyncGroup,
Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch).  The module's broker fixture
skips every test when the broker does not advertise JoinGroup in ApiVersions;
``test_missing_group_api_is_reported_clearly`` runs only in that case.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import BrokerProcess
from confluent_kafka import Consumer as CKConsumer
from librdkafka_close import unsubscribe_and_close
from waiting import wait_until

import pystream
from pystream.client.admin import AdminClient
from pystream.client.connection import BrokerConnection
from pystream.client.errors import UnsupportedFeatureError
from pystream.client.types import GroupDescription, OffsetAndMetadata, TopicPartition

PARTITIONS = 3
TP = TopicPartition
STRATEGIES = ["range", "roundrobin", "cooperative-sticky"]
BROKER_SETTINGS = {
    "num.partitions": str(PARTITIONS),
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.num.partitions": "3",
}
FAST = dict(heartbeat_interval_ms=300, session_timeout_ms=6_000, max_poll_interval_ms=20_000)


def advertised(bootstrap: str) -> dict[int, tuple[int, int]]:
    host, port = bootstrap.rsplit(":", 1)

    async def ask() -> dict[int, tuple[int, int]]:
        conn = await BrokerConnection.open(
            host,
            int(port),
            client_id="probe",
            request_timeout_ms=10_000,
            connect_timeout_ms=10_000,
            max_response_size=1 << 20,
        )
        conn.close()
        return conn.api_versions

    return asyncio.run(ask())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("group"), BROKER_SETTINGS).start()
    try:
        if 11 not in advertised(process.bootstrap):
            pytest.skip("the broker does not advertise JoinGroup: no group coordinator yet")
        yield process
    finally:
        process.close()


@pytest.fixture
def topic() -> str:
    return "g-" + uuid.uuid4().hex[:10]


def consumer(bootstrap: str, topic: str, group: str, **settings: Any) -> pystream.Consumer:
    options = {"auto_offset_reset": "earliest", **FAST, **settings}
    return pystream.Consumer(topic, bootstrap_servers=bootstrap, group_id=group, **options)


def ck_consumer(bootstrap: str, topic: str, group: str, strategy: str) -> CKConsumer:
    c = CKConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": strategy,
            "heartbeat.interval.ms": 300,
            "session.timeout.ms": 6_000,
            "max.poll.interval.ms": 20_000,
        }
    )
    c.subscribe([topic])
    return c


def describe_group(bootstrap: str, group: str) -> GroupDescription:
    async def ask() -> GroupDescription:
        async with AdminClient(bootstrap) as admin:
            return (await admin.describe_groups([group]))[group]

    return asyncio.run(ask())


def group_members(bootstrap: str, group: str) -> list[str]:
    """The member ids the broker has in ``group`` now."""
    return [m.member_id for m in describe_group(bootstrap, group).members]


def group_state(bootstrap: str, group: str) -> str:
    return describe_group(bootstrap, group).state


def leave_then_close(ck: CKConsumer, bootstrap: str, group: str) -> None:
    """Close a librdkafka member once it has left the group (see :mod:`librdkafka_close`
    for the librdkafka hang this avoids); the broker must answer its LeaveGroup and drop it."""
    member_id = ck.memberid()
    unsubscribe_and_close(ck, left=lambda: member_id not in group_members(bootstrap, group))


def produce(bootstrap: str, topic: str, count: int, prefix: bytes = b"") -> list[bytes]:
    values = [prefix + b"%d" % i for i in range(count)]
    keys = [b"key-%d" % i for i in range(count)]
    with pystream.Producer(bootstrap) as producer:
        producer.send_batch(topic, values, keys).result(30)
    return values


def drive(
    members: list[Any], until: Any, timeout: float = 40, seen: dict[Any, list] | None = None
) -> dict[Any, list]:
    """Poll every member (pystream or librdkafka) until ``until(seen)`` holds; adds the
    records each member returned to ``seen``."""
    seen = {} if seen is None else seen
    for m in members:
        seen.setdefault(m, [])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in members:
            if isinstance(m, CKConsumer):
                for msg in m.consume(500, 0.05):
                    assert msg.error() is None, msg.error()
                    seen[m].append((msg.partition(), msg.offset(), msg.value()))
            else:
                seen[m] += [(r.partition, r.offset, r.value) for r in m.poll(0.05)]
        if until(seen):
            return seen
    counts = [len(v) for v in seen.values()]
    raise AssertionError(f"condition not reached in {timeout}s; records seen: {counts}")


def assignment_of(member: Any) -> set[TopicPartition]:
    if isinstance(member, CKConsumer):
        return {TP(p.topic, p.partition) for p in member.assignment()}
    return set(member.assignment())


def split_evenly(members: list[Any], topic: str) -> Any:
    everything = {TP(topic, p) for p in range(PARTITIONS)}

    def check(_seen: Any) -> bool:
        sets = [assignment_of(m) for m in members]
        return (
            all(sets)
            and sum(len(s) for s in sets) == PARTITIONS
            and set().union(*sets) == everything
        )

    return check


def test_one_member_consumes_commits_and_a_successor_resumes(
    cluster: BrokerProcess, topic: str
) -> None:
    group = "solo-" + topic
    values = produce(cluster.bootstrap, topic, 300)
    first = consumer(cluster.bootstrap, topic, group, enable_auto_commit=False)
    try:
        assert sorted(first.wait_for_assignment(30)) == [TP(topic, p) for p in range(PARTITIONS)]
        seen = drive([first], lambda s: len(s[first]) == 300)[first]
        assert sorted(v for _, _, v in seen) == sorted(values)
        first.commit()
        committed = first.committed(first.assignment())
        assert committed == {tp: OffsetAndMetadata(first.position(tp)) for tp in first.assignment()}
        assert sum(om.offset for om in committed.values()) == 300
        assert first.member_id
    finally:
        first.close()
    more = produce(cluster.bootstrap, topic, 10, prefix=b"more-")
    second = consumer(cluster.bootstrap, topic, group)
    try:
        got = drive([second], lambda s: len(s[second]) >= 10)[second]
        assert sorted(v for _, _, v in got) == sorted(more)
    finally:
        second.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_pystream_members_share_the_partitions(
    cluster: BrokerProcess, topic: str, strategy: str
) -> None:
    group = f"pair-{strategy}-{topic}"
    produce(cluster.bootstrap, topic, 1)  # the topic exists before the group forms
    a = consumer(cluster.bootstrap, topic, group, partition_assignment_strategy=strategy)
    b = consumer(cluster.bootstrap, topic, group, partition_assignment_strategy=strategy)
    try:
        seen = drive([a, b], split_evenly([a, b], topic))
        values = produce(cluster.bootstrap, topic, 600, prefix=b"x")
        drive([a, b], lambda s: sum(len(v) for v in s.values()) >= 601, seen=seen)
        got = [v for records in seen.values() for _, _, v in records]
        assert sorted(got) == sorted([b"0"] + values)  # exactly once across the group
        for member, records in seen.items():  # after the split, each reads its own share
            later = {TP(topic, p) for p, _, v in records if v.startswith(b"x")}
            assert later == assignment_of(member)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("leader", ["pystream", "librdkafka"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_mixed_group_with_librdkafka(
    cluster: BrokerProcess, topic: str, strategy: str, leader: str
) -> None:
    group = f"mixed-{strategy}-{topic}"
    produce(cluster.bootstrap, topic, 1)
    members: list[Any] = []
    try:
        if leader == "pystream":
            py = consumer(cluster.bootstrap, topic, group, partition_assignment_strategy=strategy)
            members.append(py)
            py.wait_for_assignment(30)
            ck = ck_consumer(cluster.bootstrap, topic, group, strategy)
            members.append(ck)
        else:
            ck = ck_consumer(cluster.bootstrap, topic, group, strategy)
            members.append(ck)
        seen: dict[Any, list] = {}
        if leader == "librdkafka":
            drive([ck], lambda s: bool(ck.assignment()), seen=seen)
            py = consumer(cluster.bootstrap, topic, group, partition_assignment_strategy=strategy)
            members.append(py)
        drive(members, split_evenly(members, topic), seen=seen)
        values = produce(cluster.bootstrap, topic, 600, prefix=b"m")
        drive(members, lambda s: sum(len(v) for v in s.values()) >= 601, seen=seen)
        got = [v for records in seen.values() for _, _, v in records]
        assert sorted(got) == sorted([b"0"] + values)
        assert seen[py] and seen[ck]  # both really consumed
        # Both members were in the group; each one's leave is answered and the group empties.
        assert set(group_members(cluster.bootstrap, group)) == {py.member_id, ck.memberid()}
    finally:
        for m in members:
            if isinstance(m, CKConsumer):
                leave_then_close(m, cluster.bootstrap, group)
            else:
                m.close()
    wait_until(lambda: group_state(cluster.bootstrap, group) == "Empty", 30, what="an Empty group")


def test_rebalance_callbacks_and_a_member_leaving(cluster: BrokerProcess, topic: str) -> None:
    group = "leave-" + topic
    produce(cluster.bootstrap, topic, 1)
    events: list[tuple[str, str, list[TopicPartition]]] = []

    def listeners(name: str) -> dict[str, Any]:
        return {
            "on_assign": lambda parts: events.append((name, "assign", parts)),
            "on_revoke": lambda parts: events.append((name, "revoke", parts)),
        }

    a = consumer(cluster.bootstrap, topic, group, **listeners("a"))
    b = consumer(cluster.bootstrap, topic, group, **listeners("b"))
    try:
        drive([a, b], split_evenly([a, b], topic))
        assert any(e[:2] == ("b", "assign") and e[2] for e in events)
        b.close()
        everything = {TP(topic, p) for p in range(PARTITIONS)}
        drive([a], lambda s: assignment_of(a) == everything)
        assert ("b", "revoke") in {e[:2] for e in events}
        assert events[-1][:2] == ("a", "assign") and set(events[-1][2]) == everything
    finally:
        a.close()


def test_cooperative_rebalance_revokes_only_what_moves(cluster: BrokerProcess, topic: str) -> None:
    group = "coop-" + topic
    produce(cluster.bootstrap, topic, 1)
    revoked: list[TopicPartition] = []
    a = consumer(
        cluster.bootstrap,
        topic,
        group,
        partition_assignment_strategy="cooperative-sticky",
        on_revoke=revoked.extend,
    )
    try:
        everything = {TP(topic, p) for p in range(PARTITIONS)}
        assert set(a.wait_for_assignment(30)) == everything
        b = consumer(
            cluster.bootstrap, topic, group, partition_assignment_strategy="cooperative-sticky"
        )
        try:
            drive([a, b], split_evenly([a, b], topic))
            # a gave up exactly what b owns now and kept the rest all along
            assert set(revoked) == assignment_of(b)
            assert assignment_of(a) == everything - set(revoked)
        finally:
            b.close()
    finally:
        a.close()


def test_missing_group_api_is_reported_clearly(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "b", {"num.partitions": "1"}).start()
    try:
        if 11 in advertised(broker.bootstrap) and 10 in advertised(broker.bootstrap):
            pytest.skip("the broker has a group coordinator")
        with pystream.Consumer("t", bootstrap_servers=broker.bootstrap, group_id="g") as c:
            with pytest.raises(UnsupportedFeatureError, match="consumer groups"):
                for _ in range(20):
                    c.poll(0.5)
    finally:
        broker.close()


def test_unsubscribe_leaves_the_group(cluster: BrokerProcess, topic: str) -> None:
    group = "unsub-" + topic
    produce(cluster.bootstrap, topic, 1)
    revoked: list[TopicPartition] = []
    a = consumer(cluster.bootstrap, topic, group, on_revoke=revoked.extend)
    b = consumer(cluster.bootstrap, topic, group)
    try:
        drive([a, b], split_evenly([a, b], topic))
        owned = assignment_of(a)
        revoked.clear()  # eager rebalances so far revoked everything once
        a.unsubscribe()
        assert a.assignment() == [] and set(revoked) == owned
        everything = {TP(topic, p) for p in range(PARTITIONS)}
        drive([b], lambda s: assignment_of(b) == everything)
        assert a.poll(0.2) == []
    finally:
        a.close()
        b.close()
