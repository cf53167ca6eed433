"""Consumer groups with real clients: partitions split, rebalances on leave/death, static
members, cooperative rebalancing, and groups mixing confluent-kafka, kafka-python and aiokafka.

Each member polls in its own thread (aiokafka on its own event loop) and records
its assignment from the client's rebalance callbacks.  Members that must die
without saying goodbye run in a subprocess and get SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from broker_process import BrokerProcess
from librdkafka_close import unsubscribe_and_close
from test_groups_wire import Wire
from waiting import wait_until

PARTITIONS = 6
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_MS = 300


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("groups-rebalance") / "broker",
        {
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            "num.partitions": str(PARTITIONS),
        },
    ).start()
    try:
        yield process
    finally:
        process.close()


_topics = iter(range(10**6))


def new_topic(broker: BrokerProcess) -> str:
    """A fresh topic with PARTITIONS partitions (auto-created through Metadata)."""
    from pystream.protocol.messages.metadata import MetadataRequest

    name = f"topic-{next(_topics)}"

    async def create() -> None:
        async with Wire(broker.bootstrap) as wire:
            request = MetadataRequest(
                topics=[MetadataRequest.MetadataRequestTopic(name=name)],
                allow_auto_topic_creation=True,
            )
            response = await wire.call(request, 4)
            assert response.topics[0].error_code == 0

    asyncio.run(create())
    return name


# --- members ----------------------------------------------------------------------------------


class Member:
    """One consumer in a background thread; ``assignment`` follows its rebalance callbacks."""

    def __init__(
        self,
        kind: str,
        bootstrap: str,
        group: str,
        topic: str,
        *,
        assignor: str = "range",
        instance_id: str | None = None,
    ) -> None:
        self.kind, self.bootstrap, self.group, self.topic = kind, bootstrap, group, topic
        self.assignor = assignor
        self.instance_id = instance_id
        self._lock = threading.Lock()
        self._assignment: set[int] = set()
        self.events: list[tuple[str, frozenset[int]]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{kind}-member", daemon=True)

    # Rebalance callbacks of every client end up here.
    def assigned(self, partitions: set[int]) -> None:
        with self._lock:
            self._assignment |= partitions
            self.events.append(("assigned", frozenset(partitions)))

    def revoked(self, partitions: set[int]) -> None:
        with self._lock:
            self._assignment -= partitions
            self.events.append(("revoked", frozenset(partitions)))

    @property
    def assignment(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._assignment)

    def start(self) -> Member:
        self._thread.start()
        return self

    def close(self) -> None:
        """Leave the group cleanly (the client sends LeaveGroup unless it is static)."""
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), f"{self.kind} member did not stop"
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            {"ck": self._run_ck, "kp": self._run_kp, "aio": self._run_aio}[self.kind]()
        except BaseException as exc:  # surfaced by close()
            self.error = exc

    def _run_ck(self) -> None:
        from confluent_kafka import Consumer

        config = {
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "partition.assignment.strategy": self.assignor,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_MS,
            "auto.offset.reset": "earliest",
        }
        if self.instance_id:
            config["group.instance.id"] = self.instance_id
        consumer = Consumer(config)
        consumer.subscribe(
            [self.topic],
            on_assign=lambda c, tps: self.assigned({tp.partition for tp in tps}),
            on_revoke=lambda c, tps: self.revoked({tp.partition for tp in tps}),
            on_lost=lambda c, tps: self.revoked({tp.partition for tp in tps}),
        )
        try:
            while not self._stop.is_set():
                consumer.poll(0.1)
        finally:
            # Not close() straight away: librdkafka can hang in it while the revoke of a
            # rebalance (e.g. another member just left) is queued (see librdkafka_close).
            unsubscribe_and_close(consumer)

    def _run_kp(self) -> None:
        from kafka import ConsumerRebalanceListener, KafkaConsumer
        from kafka.coordinator.assignors.range import RangePartitionAssignor
        from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

        member = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                member.revoked({tp.partition for tp in revoked})

            def on_partitions_assigned(self, assigned: Any) -> None:
                member.assigned({tp.partition for tp in assigned})

        assignor = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            group_instance_id=self.instance_id,
            partition_assignment_strategy=[assignor[self.assignor]],
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_MS,
            auto_offset_reset="earliest",
        )
        # kafka-python joins without waiting for metadata; a leader that assigns before
        # the topic's metadata arrives assigns nothing and soon rejoins, and that quick
        # heartbeat disable/enable can stall kafka-python 3.0's heartbeat loop for good
        # (seen under load: the leader never heartbeats again).  Knowing the topic first
        # keeps the first assignment whole.
        assert consumer.partitions_for_topic(self.topic)
        consumer.subscribe([self.topic], listener=Listener())
        try:
            while not self._stop.is_set():
                consumer.poll(100)
        finally:
            consumer.close()

    def _run_aio(self) -> None:
        asyncio.run(self._run_aio_async())

    async def _run_aio_async(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.abc import ConsumerRebalanceListener
        from aiokafka.coordinator.assignors.range import RangePartitionAssignor
        from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

        member = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                member.revoked({tp.partition for tp in revoked})

            def on_partitions_assigned(self, assigned: Any) -> None:
                member.assigned({tp.partition for tp in assigned})

        assignor = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            group_instance_id=self.instance_id,
            partition_assignment_strategy=(assignor[self.assignor],),
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_MS,
            auto_offset_reset="earliest",
        )
        consumer.subscribe([self.topic], listener=Listener())
        await consumer.start()
        try:
            while not self._stop.is_set():
                await consumer.getmany(timeout_ms=100)
        finally:
            await consumer.stop()


class MemberProcess:
    """A confluent-kafka member in its own process, so it can die by SIGKILL."""

    SCRIPT = """
import json, sys
from confluent_kafka import Consumer
config = json.loads(sys.argv[1])
topic = sys.argv[2]
consumer = Consumer(config)
owned = set()
def report():
    print(json.dumps(sorted(owned)), flush=True)
def on_assign(c, tps):
    owned.update(tp.partition for tp in tps); report()
def on_revoke(c, tps):
    owned.difference_update(tp.partition for tp in tps); report()
consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
while True:
    consumer.poll(0.1)
"""

    def __init__(self, bootstrap: str, group: str, topic: str, instance_id: str | None = None):
        config = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "partition.assignment.strategy": "range",
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_MS,
        }
        if instance_id:
            config["group.instance.id"] = instance_id
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, json.dumps(config), topic],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._assignment: frozenset[int] = frozenset()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._assignment = frozenset(json.loads(line))

    @property
    def assignment(self) -> frozenset[int]:
        return self._assignment

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)


def split_evenly(members: list[Any], each: int) -> Callable[[], bool]:
    """The members own disjoint sets of ``each`` partitions that cover the topic."""

    def check() -> bool:
        owned = [m.assignment for m in members]
        union = frozenset().union(*owned)
        return all(len(o) == each for o in owned) and union == set(range(len(owned) * each))

    return check


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kinds",
    [("ck", "ck", "ck"), ("kp", "kp", "kp"), ("aio", "aio", "aio"), ("ck", "kp", "aio")],
    ids=["confluent-kafka", "kafka-python", "aiokafka", "mixed"],
)
def test_three_members_split_six_partitions_then_one_leaves(
    broker: BrokerProcess, kinds: tuple[str, ...]
) -> None:
    topic = new_topic(broker)
    group = f"group-{topic}"
    members = [Member(kind, broker.bootstrap, group, topic).start() for kind in kinds]
    try:
        wait_until(split_evenly(members, 2), what="2 partitions per member")
        leaving = members.pop(1)
        leaving.close()
        wait_until(split_evenly(members, 3), what="3 partitions per remaining member")
    finally:
        for member in members:
            member.close()


@pytest.mark.parametrize("assignor", ["roundrobin"])
def test_mixed_clients_agree_on_their_common_assignor(broker: BrokerProcess, assignor: str) -> None:
    # Each client lists the protocols it supports; the group votes for one all share.
    topic = new_topic(broker)
    group = f"group-{topic}"
    kinds = ("aio", "kp", "ck")
    members = [Member(k, broker.bootstrap, group, topic, assignor=assignor).start() for k in kinds]
    try:
        wait_until(split_evenly(members, 2), what="2 partitions per member")
        # roundrobin interleaves: nobody owns two consecutive partitions.
        for member in members:
            low, high = sorted(member.assignment)
            assert high - low == 3
    finally:
        for member in members:
            member.close()


def test_killed_member_is_evicted_after_its_session_timeout(broker: BrokerProcess) -> None:
    topic = new_topic(broker)
    group = f"group-{topic}"
    members = [Member("ck", broker.bootstrap, group, topic).start() for _ in range(2)]
    doomed = MemberProcess(broker.bootstrap, group, topic)
    try:
        wait_until(split_evenly([*members, doomed], 2), what="2 partitions per member")
        orphaned = doomed.assignment
        doomed.kill()  # no LeaveGroup: only the session timeout can tell
        wait_until(split_evenly(members, 3), what="the dead member's partitions to move")
        assert orphaned <= members[0].assignment | members[1].assignment
    finally:
        doomed.kill()
        for member in members:
            member.close()


def test_static_member_restarts_without_a_rebalance(broker: BrokerProcess) -> None:
    topic = new_topic(broker)
    group = f"group-{topic}"
    stays = Member("ck", broker.bootstrap, group, topic, instance_id="stays").start()
    restarts = MemberProcess(broker.bootstrap, group, topic, instance_id="restarts")
    try:
        wait_until(split_evenly([stays, restarts], 3), what="3 partitions each")
        before = restarts.assignment
        events = list(stays.events)
        restarts.kill()
        restarts = MemberProcess(broker.bootstrap, group, topic, instance_id="restarts")
        wait_until(lambda: restarts.assignment == before, what="the same partitions back")
        # A rebalance would have revoked the other member's partitions before the restarted
        # member got any: its callbacks saw nothing since.
        assert stays.events == events
        assert stays.assignment == frozenset(range(PARTITIONS)) - before
    finally:
        restarts.kill()
        stays.close()


def test_cooperative_sticky_moves_only_what_it_must(broker: BrokerProcess) -> None:
    topic = new_topic(broker)
    group = f"group-{topic}"
    first = Member("ck", broker.bootstrap, group, topic, assignor="cooperative-sticky").start()
    second = None
    try:
        wait_until(lambda: first.assignment == set(range(PARTITIONS)), what="all partitions")
        second = Member("ck", broker.bootstrap, group, topic, assignor="cooperative-sticky")
        second.start()
        wait_until(split_evenly([first, second], 3), what="3 partitions each")
        revoked = [p for kind, parts in first.events if kind == "revoked" for p in parts]
        # Incremental: the first member gave up exactly what moved, and kept the rest.
        assert sorted(revoked) == sorted(second.assignment)
        assert ("revoked", frozenset(range(PARTITIONS))) not in first.events
    finally:
        for member in (first, second):
            if member is not None:
                member.close()
