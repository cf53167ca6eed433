"""The group APIs on the wire: every version clients use, error codes, records in the log.

A real broker process, spoken to with raw protocol messages (pystream's codec)
so each test controls versions, member ids and generations exactly.  The
:class:`Wire` client and the ``join``/``sync`` helpers are reused by the other
``test_groups_*`` modules.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from broker_process import BrokerProcess

from pystream.groups.offsets_log import java_string_hash, partition_for
from pystream.protocol import decode_response, encode_request_frame
from pystream.protocol.codec import Struct
from pystream.protocol.messages import RequestHeader
from pystream.protocol.messages.consumer_protocol import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)
from pystream.protocol.messages.delete_groups import DeleteGroupsRequest
from pystream.protocol.messages.describe_groups import DescribeGroupsRequest
from pystream.protocol.messages.find_coordinator import FindCoordinatorRequest
from pystream.protocol.messages.heartbeat import HeartbeatRequest
from pystream.protocol.messages.join_group import JoinGroupRequest
from pystream.protocol.messages.leave_group import LeaveGroupRequest
from pystream.protocol.messages.list_groups import ListGroupsRequest
from pystream.protocol.messages.offset_commit import OffsetCommitRequest
from pystream.protocol.messages.offset_delete import OffsetDeleteRequest
from pystream.protocol.messages.offset_fetch import OffsetFetchRequest
from pystream.protocol.messages.sync_group import SyncGroupRequest

NONE = 0
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
OFFSET_METADATA_TOO_LARGE = 12
UNKNOWN_TOPIC_OR_PARTITION = 3
NOT_COORDINATOR = 16
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
FENCED_INSTANCE_ID = 82
GROUP_MAX_SIZE_REACHED = 81
GROUP_SUBSCRIBED_TO_TOPIC = 86

OFFSETS_PARTITIONS = 7
TOPIC = "orders"
OTHER_TOPIC = "payments"
TOPIC_PARTITIONS = 4


# --- a raw protocol client --------------------------------------------------------------------


class Wire:
    """One connection speaking raw Kafka requests, one at a time."""

    def __init__(self, bootstrap: str, client_id: str = "wire-test") -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.client_id = client_id
        self._correlation = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Wire:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()

    async def call(self, request: Struct, version: int, timeout: float = 30) -> Any:
        """Send ``request`` at ``version``; the decoded response."""
        assert self._reader is not None and self._writer is not None
        self._correlation += 1
        header = RequestHeader(
            request_api_key=request.API_KEY,
            request_api_version=version,
            correlation_id=self._correlation,
            client_id=self.client_id,
        )
        self._writer.write(encode_request_frame(header, request))
        (size,) = struct.unpack(">i", await asyncio.wait_for(self._reader.readexactly(4), timeout))
        payload = await asyncio.wait_for(self._reader.readexactly(size), timeout)
        response_header, body = decode_response(payload, request.API_KEY, version)
        assert response_header.correlation_id == self._correlation
        return body


def subscription(*topics: str) -> bytes:
    return ConsumerProtocolSubscription(topics=list(topics)).encode_versioned(0)


def assignment(topic: str, partitions: list[int]) -> bytes:
    tp = ConsumerProtocolAssignment.TopicPartition(topic=topic, partitions=partitions)
    return ConsumerProtocolAssignment(assigned_partitions=[tp]).encode_versioned(0)


async def join(
    wire: Wire,
    group: str,
    member_id: str = "",
    *,
    version: int = 5,
    instance_id: str | None = None,
    protocols: tuple[tuple[str, bytes], ...] | None = None,
    protocol_type: str = "consumer",
    session_timeout_ms: int = 10_000,
    rebalance_timeout_ms: int = 10_000,
) -> Any:
    """One JoinGroup request (no retry on MEMBER_ID_REQUIRED)."""
    if protocols is None:
        protocols = (("range", subscription(TOPIC)),)
    request = JoinGroupRequest(
        group_id=group,
        session_timeout_ms=session_timeout_ms,
        rebalance_timeout_ms=rebalance_timeout_ms,
        member_id=member_id,
        group_instance_id=instance_id,
        protocol_type=protocol_type,
        protocols=[
            JoinGroupRequest.JoinGroupRequestProtocol(name=name, metadata=metadata)
            for name, metadata in protocols
        ],
    )
    return await wire.call(request, version)


async def join_member(wire: Wire, group: str, **kwargs: Any) -> Any:
    """Join as a new member the way v4+ clients do: get a member id, then join with it."""
    response = await join(wire, group, **kwargs)
    if response.error_code == MEMBER_ID_REQUIRED:
        response = await join(wire, group, response.member_id, **kwargs)
    return response


async def sync(
    wire: Wire,
    group: str,
    generation: int,
    member_id: str,
    assignments: dict[str, bytes] | None = None,
    *,
    version: int = 3,
    instance_id: str | None = None,
) -> Any:
    request = SyncGroupRequest(
        group_id=group,
        generation_id=generation,
        member_id=member_id,
        group_instance_id=instance_id,
        protocol_type="consumer",
        protocol_name="range",
        assignments=[
            SyncGroupRequest.SyncGroupRequestAssignment(member_id=m, assignment=a)
            for m, a in (assignments or {}).items()
        ],
    )
    return await wire.call(request, version)


async def heartbeat(
    wire: Wire,
    group: str,
    generation: int,
    member_id: str,
    *,
    version: int = 3,
    instance_id: str | None = None,
) -> int:
    request = HeartbeatRequest(
        group_id=group,
        generation_id=generation,
        member_id=member_id,
        group_instance_id=instance_id,
    )
    return (await wire.call(request, version)).error_code


async def commit(
    wire: Wire,
    group: str,
    offsets: dict[tuple[str, int], int | tuple[int, str]],
    *,
    generation: int = -1,
    member_id: str = "",
    version: int = 8,
    retention_time_ms: int = -1,
) -> dict[tuple[str, int], int]:
    """OffsetCommit; the error code per partition."""
    by_topic: dict[str, list[Any]] = {}
    for (topic, partition), value in offsets.items():
        offset, metadata = value if isinstance(value, tuple) else (value, "")
        by_topic.setdefault(topic, []).append(
            OffsetCommitRequest.OffsetCommitRequestPartition(
                partition_index=partition, committed_offset=offset, committed_metadata=metadata
            )
        )
    request = OffsetCommitRequest(
        group_id=group,
        generation_id_or_member_epoch=generation,
        member_id=member_id,
        retention_time_ms=retention_time_ms,
        topics=[
            OffsetCommitRequest.OffsetCommitRequestTopic(name=name, partitions=parts)
            for name, parts in by_topic.items()
        ],
    )
    response = await wire.call(request, version)
    return {
        (t.name, p.partition_index): p.error_code for t in response.topics for p in t.partitions
    }


async def fetch(
    wire: Wire, group: str, partitions: list[tuple[str, int]] | None, *, version: int = 7
) -> tuple[int, dict[tuple[str, int], tuple[int, str, int]]]:
    """OffsetFetch (one group, v1..v7): (group error, {tp: (offset, metadata, error)})."""
    topics = None
    if partitions is not None:
        by_topic: dict[str, list[int]] = {}
        for topic, partition in partitions:
            by_topic.setdefault(topic, []).append(partition)
        topics = [
            OffsetFetchRequest.OffsetFetchRequestTopic(name=name, partition_indexes=indexes)
            for name, indexes in by_topic.items()
        ]
    response = await wire.call(OffsetFetchRequest(group_id=group, topics=topics), version)
    return response.error_code, {
        (t.name, p.partition_index): (p.committed_offset, p.metadata, p.error_code)
        for t in response.topics
        for p in t.partitions
    }


async def describe(wire: Wire, *groups: str, version: int = 5) -> list[Any]:
    return (await wire.call(DescribeGroupsRequest(groups=list(groups)), version)).groups


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 30, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for this module's tests (each test uses its own group ids)."""
    process = BrokerProcess(
        tmp_path_factory.mktemp("groups-wire") / "broker",
        {
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "500",
            "offsets.topic.num.partitions": str(OFFSETS_PARTITIONS),
            "offsets.retention.check.interval.ms": "200",
            "offset.metadata.max.bytes": "16",
            "num.partitions": str(TOPIC_PARTITIONS),
            "group.max.size": "2",
        },
    ).start()
    try:
        asyncio.run(_create_topic(process.bootstrap))
        yield process
    finally:
        process.close()


async def _create_topic(bootstrap: str) -> None:
    from pystream.protocol.messages.metadata import MetadataRequest

    async with Wire(bootstrap) as wire:
        # Metadata with auto-creation: the topic gets num.partitions partitions.
        request = MetadataRequest(
            topics=[
                MetadataRequest.MetadataRequestTopic(name=TOPIC),
                MetadataRequest.MetadataRequestTopic(name=OTHER_TOPIC),
            ],
            allow_auto_topic_creation=True,
        )
        response = await wire.call(request, 4)
        assert [t.error_code for t in response.topics] == [NONE, NONE]
        # Like a client, find the coordinator first: that creates __consumer_offsets.
        assert (await wire.call(FindCoordinatorRequest(key="setup"), 3)).error_code == NONE


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


# --- the coordinator's partition --------------------------------------------------------------


def test_java_string_hash_matches_java() -> None:
    # Values from Java's String.hashCode().
    assert java_string_hash("") == 0
    assert java_string_hash("hello") == 99162322
    # Cross-check against the definition: s[0]*31^(n-1) + ... + s[n-1], as a signed int32.
    text = "my-consumer-group"
    expected = sum(ord(c) * 31 ** (len(text) - 1 - i) for i, c in enumerate(text)) % 2**32
    expected -= 2**32 if expected >= 2**31 else 0
    assert java_string_hash(text) == expected
    assert java_string_hash("\U0001f600") == 1772899  # a surrogate pair: two UTF-16 units
    # Kafka's Utils.abs maps Integer.MIN_VALUE to 0: "polygenelubricants" hashes to it.
    assert java_string_hash("polygenelubricants") == -(2**31)
    assert partition_for("polygenelubricants", 50) == 0
    assert partition_for(text, 50) == abs(expected) % 50


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_find_coordinator_single_key(broker: BrokerProcess, version: int) -> None:
    async def main() -> None:
        async with Wire(broker.bootstrap) as wire:
            response = await wire.call(FindCoordinatorRequest(key="g-find"), version)
            assert response.error_code == NONE
            assert (response.host, response.port, response.node_id) == ("127.0.0.1", broker.port, 0)

    run(main())


@pytest.mark.parametrize("version", [4, 5, 6])
def test_find_coordinator_batched_keys(broker: BrokerProcess, version: int) -> None:
    async def main() -> None:
        async with Wire(broker.bootstrap) as wire:
            keys = ["g-a", "g-b", "g-c"]
            response = await wire.call(FindCoordinatorRequest(coordinator_keys=keys), version)
            assert [c.key for c in response.coordinators] == keys
            for coordinator in response.coordinators:
                assert coordinator.error_code == NONE
                assert (coordinator.host, coordinator.port) == ("127.0.0.1", broker.port)

    run(main())


def test_offsets_topic_is_created_on_the_first_find_coordinator(broker_factory: Any) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource

    from pystream.protocol.messages.metadata import MetadataRequest

    fresh: BrokerProcess = broker_factory(**{"offsets.topic.num.partitions": "5"})
    assert not list(fresh.log_dir.glob("__consumer_offsets-*"))

    async def find_and_describe() -> Any:
        async with Wire(fresh.bootstrap) as wire:
            found = await wire.call(FindCoordinatorRequest(key="g-topic"), 2)
            assert found.error_code == NONE
            request = MetadataRequest(
                topics=[MetadataRequest.MetadataRequestTopic(name="__consumer_offsets")],
                allow_auto_topic_creation=False,
            )
            return (await wire.call(request, 4)).topics[0]

    topic = run(find_and_describe())
    assert topic.is_internal
    assert len(topic.partitions) == 5
    partitions = sorted(p.name for p in fresh.log_dir.glob("__consumer_offsets-*"))
    assert partitions == sorted(f"__consumer_offsets-{i}" for i in range(5))
    admin = AdminClient({"bootstrap.servers": fresh.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, "__consumer_offsets")
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    assert configs["cleanup.policy"].value == "compact"
    assert configs["segment.bytes"].value == "104857600"


# --- join / sync / heartbeat ------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5, 6, 7, 8, 9])
def test_join_v4_plus_requires_a_member_id_first(broker: BrokerProcess, version: int) -> None:
    group = f"g-join-v{version}"

    async def main() -> None:
        async with Wire(broker.bootstrap, "client-x") as wire:
            first = await join(wire, group, version=version)
            assert first.error_code == MEMBER_ID_REQUIRED
            assert first.member_id.startswith("client-x-")
            assert first.generation_id == -1
            second = await join(wire, group, first.member_id, version=version)
            assert second.error_code == NONE
            assert second.member_id == first.member_id
            assert second.generation_id == 1
            assert second.leader == first.member_id
            assert second.protocol_name == "range"
            assert [m.member_id for m in second.members] == [first.member_id]
            assert second.members[0].metadata == subscription(TOPIC)

    run(main())


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_join_before_v4_assigns_the_member_id_directly(broker: BrokerProcess, version: int) -> None:
    group = f"g-join-old-v{version}"

    async def main() -> None:
        async with Wire(broker.bootstrap) as wire:
            response = await join(wire, group, version=version)
            assert response.error_code == NONE
            assert response.generation_id == 1
            assert response.leader == response.member_id
            sync_response = await sync(
                wire,
                group,
                1,
                response.member_id,
                {response.member_id: assignment(TOPIC, [0, 1])},
                version=0,
            )
            assert sync_response.error_code == NONE
            assert sync_response.assignment == assignment(TOPIC, [0, 1])

    run(main())


def test_join_errors(broker: BrokerProcess) -> None:
    async def main() -> None:
        async with Wire(broker.bootstrap) as wire:
            assert (await join(wire, "")).error_code == INVALID_GROUP_ID
            too_short = await join(wire, "g-err", session_timeout_ms=100)
            assert too_short.error_code == INVALID_SESSION_TIMEOUT
            too_long = await join(wire, "g-err", session_timeout_ms=1_800_001)
            assert too_long.error_code == INVALID_SESSION_TIMEOUT
            unknown = await join(wire, "g-err-unknown", "no-such-member")
            assert unknown.error_code == UNKNOWN_MEMBER_ID
            no_protocols = await join(wire, "g-err", protocols=(), version=3)
            assert no_protocols.error_code == INCONSISTENT_GROUP_PROTOCOL
            member = await join_member(wire, "g-err")
            assert member.error_code == NONE
        async with Wire(broker.bootstrap) as other:
            # A member whose protocols share nothing with the group's cannot join it.
            mismatch = await join(other, "g-err", protocols=(("sticky", b""),), version=3)
            assert mismatch.error_code == INCONSISTENT_GROUP_PROTOCOL
            wrong_type = await join(other, "g-err", protocol_type="connect", version=3)
            assert wrong_type.error_code == INCONSISTENT_GROUP_PROTOCOL

    run(main())


def test_rebalance_between_two_members_and_generations(broker: BrokerProcess) -> None:
    group = "g-rebalance"

    async def main() -> None:
        async with Wire(broker.bootstrap) as a, Wire(broker.bootstrap) as b:
            first = await join_member(a, group)
            leader = first.member_id
            assert (first.error_code, first.generation_id) == (NONE, 1)
            stable = await sync(a, group, 1, leader, {leader: assignment(TOPIC, [0, 1, 2, 3])})
            assert stable.error_code == NONE
            assert stable.assignment == assignment(TOPIC, [0, 1, 2, 3])
            assert await heartbeat(a, group, 1, leader) == NONE
            # A second member joins: its JoinGroup waits for the leader to rejoin.
            b_id = (await join(b, group)).member_id
            b_join = asyncio.ensure_future(join(b, group, b_id))

            async def told_to_rejoin() -> bool:
                return await heartbeat(a, group, 1, leader) == REBALANCE_IN_PROGRESS

            await eventually(told_to_rejoin, what="the leader to learn about the rebalance")
            # A commit of the old generation is still accepted while preparing the rebalance.
            assert await commit(a, group, {(TOPIC, 0): 5}, generation=1, member_id=leader) == {
                (TOPIC, 0): NONE
            }
            a_rejoin = await join(a, group, leader)
            b_rejoin = await b_join
            assert a_rejoin.generation_id == b_rejoin.generation_id == 2
            assert a_rejoin.leader == b_rejoin.leader == leader
            assert sorted(m.member_id for m in a_rejoin.members) == sorted([leader, b_id])
            assert b_rejoin.members == []
            # The follower's SyncGroup waits for the leader's assignment.
            b_sync = asyncio.ensure_future(sync(b, group, 2, b_id))
            plan = {leader: assignment(TOPIC, [0, 1]), b_id: assignment(TOPIC, [2, 3])}
            a_sync = await sync(a, group, 2, leader, plan)
            assert a_sync.assignment == plan[leader]
            assert (await b_sync).assignment == plan[b_id]
            # The old generation is fenced now.
            assert await heartbeat(a, group, 1, leader) == ILLEGAL_GENERATION
            stale = await commit(a, group, {(TOPIC, 0): 6}, generation=1, member_id=leader)
            assert stale == {(TOPIC, 0): ILLEGAL_GENERATION}
            unknown = await commit(a, group, {(TOPIC, 0): 6}, generation=2, member_id="nobody")
            assert unknown == {(TOPIC, 0): UNKNOWN_MEMBER_ID}
            assert await commit(a, group, {(TOPIC, 0): 7}, generation=2, member_id=leader) == {
                (TOPIC, 0): NONE
            }
            _, offsets = await fetch(a, group, [(TOPIC, 0)])
            assert offsets[(TOPIC, 0)][0] == 7
            assert await heartbeat(a, group, 2, "nobody") == UNKNOWN_MEMBER_ID

    run(main())


def test_rebalance_timeout_bounds_the_join_phase(broker: BrokerProcess) -> None:
    group = "g-join-timeout"

    async def main() -> None:
        async with Wire(broker.bootstrap) as a, Wire(broker.bootstrap) as b:
            a_id = (await join_member(a, group, rebalance_timeout_ms=1000)).member_id
            await sync(a, group, 1, a_id, {a_id: assignment(TOPIC, [0, 1, 2, 3])})
            b_first = await join(b, group, rebalance_timeout_ms=1000)
            assert b_first.error_code == MEMBER_ID_REQUIRED
            b_join = asyncio.ensure_future(
                join(b, group, b_first.member_id, rebalance_timeout_ms=1000)
            )
            # a stays alive (it heartbeats) but never rejoins: the join phase ends without it.
            while not b_join.done():
                error = await heartbeat(a, group, 1, a_id)
                assert error in (NONE, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID)
                if error == UNKNOWN_MEMBER_ID:
                    break  # removed: the join phase is over
                await asyncio.wait([b_join], timeout=0.1)
            alone = await b_join
            assert (alone.error_code, alone.generation_id) == (NONE, 2)
            assert alone.leader == b_first.member_id
            assert [m.member_id for m in alone.members] == [b_first.member_id]
            assert await heartbeat(a, group, 1, a_id) == UNKNOWN_MEMBER_ID

    run(main())


def test_rebalance_timeout_bounds_the_wait_for_the_leaders_assignment(
    broker: BrokerProcess,
) -> None:
    group = "g-sync-timeout"

    async def main() -> None:
        async with Wire(broker.bootstrap) as a, Wire(broker.bootstrap) as b:
            a_id = (await join_member(a, group, rebalance_timeout_ms=1000)).member_id
            await sync(a, group, 1, a_id, {a_id: b""})
            b_id = (await join(b, group, rebalance_timeout_ms=1000)).member_id
            b_join = asyncio.ensure_future(join(b, group, b_id, rebalance_timeout_ms=1000))
            await eventually(
                lambda: _is(heartbeat(a, group, 1, a_id), REBALANCE_IN_PROGRESS), what="rebalance"
            )
            leader = await join(a, group, a_id, rebalance_timeout_ms=1000)
            assert leader.leader == a_id and (await b_join).generation_id == 2
            # The leader never sends its SyncGroup: the follower is told to rejoin, and the
            # leader is removed from the group.
            waiting = await sync(b, group, 2, b_id)
            assert waiting.error_code == REBALANCE_IN_PROGRESS
            assert await heartbeat(a, group, 2, a_id) == UNKNOWN_MEMBER_ID
            alone = await join(b, group, b_id, rebalance_timeout_ms=1000)
            assert (alone.generation_id, alone.leader) == (3, b_id)

    run(main())


async def _follower_waiting_for_its_assignment(
    a: Wire, b: Wire, group: str, *, session_timeout_ms: int = 10_000
) -> tuple[str, str, asyncio.Future[Any]]:
    """Leader a and follower b in generation 2, CompletingRebalance, b's SyncGroup sent and
    waiting for a's assignment: (a's id, b's id, b's SyncGroup response to come)."""
    a_id = (await join_member(a, group, session_timeout_ms=session_timeout_ms)).member_id
    await sync(a, group, 1, a_id, {a_id: assignment(TOPIC, [0, 1, 2, 3])})
    b_id = (await join(b, group)).member_id
    b_join = asyncio.ensure_future(join(b, group, b_id))
    await eventually(
        lambda: _is(heartbeat(a, group, 1, a_id), REBALANCE_IN_PROGRESS), what="a rebalance"
    )
    rejoined = await join(a, group, a_id, session_timeout_ms=session_timeout_ms)
    assert rejoined.leader == a_id and (await b_join).generation_id == 2
    b_sync = asyncio.ensure_future(sync(b, group, 2, b_id))
    # A round trip on a after b's SyncGroup was written: the broker has read b's request
    # before whatever the test sends next on another connection (were it not, b would get
    # the same answer at once instead of while waiting).  b is not answered yet.
    assert await heartbeat(a, group, 2, a_id) == NONE
    assert not b_sync.done()
    return a_id, b_id, b_sync


@pytest.mark.parametrize(
    "change", ["leader leaves", "follower removed", "leader rejoins", "leader goes silent"]
)
def test_a_waiting_sync_group_is_answered_when_the_group_changes(
    broker: BrokerProcess, change: str
) -> None:
    # Kafka answers every pending SyncGroup: REBALANCE_IN_PROGRESS when the group starts
    # another rebalance, UNKNOWN_MEMBER_ID when the waiting member itself is removed.  A
    # SyncGroup left unanswered blocks that member's connection (and its client) for good.
    group = "g-pending-sync-" + change.replace(" ", "-")

    async def main() -> None:
        async with Wire(broker.bootstrap) as a, Wire(broker.bootstrap) as b:
            session = 1000 if change == "leader goes silent" else 10_000
            a_id, b_id, b_sync = await _follower_waiting_for_its_assignment(
                a, b, group, session_timeout_ms=session
            )
            expected = REBALANCE_IN_PROGRESS
            if change == "leader leaves":
                left = await a.call(LeaveGroupRequest(group_id=group, member_id=a_id), 1)
                assert left.error_code == NONE
            elif change == "follower removed":  # e.g. an admin removing it by member id
                request = LeaveGroupRequest(
                    group_id=group, members=[LeaveGroupRequest.MemberIdentity(member_id=b_id)]
                )
                assert [m.error_code for m in (await a.call(request, 3)).members] == [NONE]
                expected = UNKNOWN_MEMBER_ID
            elif change == "leader rejoins":  # with another subscription: a new rebalance
                protocols = (("range", subscription(TOPIC, OTHER_TOPIC)),)
                a_join = asyncio.ensure_future(join(a, group, a_id, protocols=protocols))
            # "leader goes silent": a sends nothing more; its session timeout removes it.
            answer = await asyncio.wait_for(b_sync, 30)
            assert (answer.error_code, answer.assignment) == (expected, b"")
            if change == "follower removed":
                assert await heartbeat(b, group, 2, b_id) == UNKNOWN_MEMBER_ID
            elif change == "leader rejoins":  # both members go on to the next generation
                joined = await asyncio.gather(a_join, join(b, group, b_id))
                assert [(j.error_code, j.generation_id) for j in joined] == [(NONE, 3)] * 2
            else:  # a is gone; b, still a member, leads the next generation alone
                alone = await join(b, group, b_id)
                assert (alone.error_code, alone.generation_id, alone.leader) == (NONE, 3, b_id)
                assert await heartbeat(a, group, 2, a_id) == UNKNOWN_MEMBER_ID

    run(main())


def test_a_failing_store_still_answers_every_waiting_sync_group(broker_factory: Any) -> None:
    # The leader's assignment cannot be written (a disk error: the partition's directory
    # is gone and the append must roll a new segment there).  The leader and the
    # follower waiting for it are both told, with Kafka's mapping of the storage error
    # (NOT_COORDINATOR), and the group rebalances; neither request is left unanswered.
    failing: BrokerProcess = broker_factory(
        **{
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.num.partitions": "1",
            # room for one group record, not two: the next append must roll a new segment
            "offsets.topic.segment.bytes": "600",
        }
    )
    group = "g-failing-store"

    async def main() -> None:
        async with Wire(failing.bootstrap) as a, Wire(failing.bootstrap) as b:

            async def coordinator_ready() -> bool:
                return (await a.call(FindCoordinatorRequest(key=group), 3)).error_code == NONE

            await eventually(coordinator_ready, what="__consumer_offsets")  # created on demand
            a_id, b_id, b_sync = await _follower_waiting_for_its_assignment(a, b, group)
            shutil.rmtree(failing.log_dir / "__consumer_offsets-0")
            plan = {a_id: assignment(TOPIC, [0, 1]), b_id: assignment(TOPIC, [2, 3])}
            leader_sync = asyncio.ensure_future(sync(a, group, 2, a_id, plan))
            follower = await asyncio.wait_for(b_sync, 30)  # before the fix: never answered
            leader = await leader_sync  # before the fix: its connection was closed
            assert (leader.error_code, leader.assignment) == (NOT_COORDINATOR, b"")
            assert (follower.error_code, follower.assignment) == (NOT_COORDINATOR, b"")
            [described] = await describe(a, group)
            assert described.group_state == "PreparingRebalance"

    run(main())
    assert "appending to __consumer_offsets-0 failed unexpectedly" in failing.output()


def test_group_max_size(broker: BrokerProcess) -> None:
    group = "g-max-size"  # group.max.size=2 on this broker

    async def main() -> None:
        async with Wire(broker.bootstrap) as a, Wire(broker.bootstrap) as b:
            a_id = (await join(a, group, version=3)).member_id
            b_join = asyncio.ensure_future(join(b, group, version=3))
            await eventually(
                lambda: _is(heartbeat(a, group, 1, a_id), REBALANCE_IN_PROGRESS), what="rebalance"
            )
            async with Wire(broker.bootstrap) as c:
                assert (await join(c, group, version=3)).error_code == GROUP_MAX_SIZE_REACHED
                assert (await join(c, group, version=5)).error_code == GROUP_MAX_SIZE_REACHED
            await join(a, group, a_id, version=3)
            assert (await b_join).generation_id == 2

    run(main())


def test_session_timeout_evicts_a_silent_member(broker: BrokerProcess) -> None:
    group = "g-session"

    async def main() -> None:
        async with Wire(broker.bootstrap) as a, Wire(broker.bootstrap) as b:
            a_id = (await join_member(a, group, session_timeout_ms=600)).member_id
            b_id = (await join(b, group, session_timeout_ms=600)).member_id
            b_join = asyncio.ensure_future(join(b, group, b_id, session_timeout_ms=600))

            async def rejoin_needed() -> bool:
                return await heartbeat(a, group, 1, a_id) == REBALANCE_IN_PROGRESS

            await eventually(rejoin_needed, what="a rebalance")
            await join(a, group, a_id, session_timeout_ms=600)
            joined = await b_join
            assert joined.generation_id == 2
            await asyncio.gather(sync(a, group, 2, a_id), sync(b, group, 2, b_id))

            # b keeps heartbeating, a goes silent: a is removed and b must rejoin alone.
            async def a_evicted() -> bool:
                error = await heartbeat(b, group, 2, b_id)
                assert error in (NONE, REBALANCE_IN_PROGRESS)
                return error == REBALANCE_IN_PROGRESS

            await eventually(a_evicted, timeout=20, what="the silent member to be evicted")
            alone = await join(b, group, b_id, session_timeout_ms=600)
            assert alone.generation_id == 3
            assert [m.member_id for m in alone.members] == [b_id]
            assert await heartbeat(a, group, 2, a_id) == UNKNOWN_MEMBER_ID

    run(main())


def test_static_member_rejoins_without_a_rebalance(broker: BrokerProcess) -> None:
    group = "g-static"

    async def main() -> None:
        async with Wire(broker.bootstrap) as a, Wire(broker.bootstrap) as b:
            a1 = await join(a, group, instance_id="inst-a")
            assert a1.error_code == NONE  # static members skip MEMBER_ID_REQUIRED
            a_id = a1.member_id
            await sync(a, group, 1, a_id, {a_id: b""}, instance_id="inst-a")
            b_join = asyncio.ensure_future(join(b, group, instance_id="inst-b"))
            await eventually(
                lambda: _is(heartbeat(a, group, 1, a_id, instance_id="inst-a"), 27),
                what="a rebalance",
            )
            a2 = await join(a, group, a_id, instance_id="inst-a")
            b2 = await b_join
            generation = a2.generation_id
            assert generation == b2.generation_id == 2
            b1_id = b2.member_id
            plan = {a_id: assignment(TOPIC, [0, 1]), b1_id: assignment(TOPIC, [2, 3])}
            await asyncio.gather(
                sync(a, group, generation, a_id, plan, instance_id="inst-a"),
                sync(b, group, generation, b1_id, instance_id="inst-b"),
            )
        # Instance b restarts: a new member id, the same generation, the same assignment.
        async with Wire(broker.bootstrap) as b_again:
            rejoin = await join(b_again, group, instance_id="inst-b")
            assert rejoin.error_code == NONE
            assert rejoin.member_id != b1_id
            assert rejoin.generation_id == generation
            assert rejoin.leader == a_id
            synced = await sync(b_again, group, generation, rejoin.member_id, instance_id="inst-b")
            assert synced.assignment == plan[b1_id]
            # The old incarnation is fenced.
            fenced = await heartbeat(b_again, group, generation, b1_id, instance_id="inst-b")
            assert fenced == FENCED_INSTANCE_ID
            assert (
                await heartbeat(b_again, group, generation, rejoin.member_id, instance_id="inst-b")
                == NONE
            )
            [described] = await describe(b_again, group)
            assert described.group_state == "Stable"
            assert sorted(m.group_instance_id for m in described.members) == ["inst-a", "inst-b"]
            # An admin removes the static member by instance id: the group rebalances.
            request = LeaveGroupRequest(
                group_id=group,
                members=[
                    LeaveGroupRequest.MemberIdentity(member_id="", group_instance_id="inst-b"),
                    LeaveGroupRequest.MemberIdentity(member_id="", group_instance_id="nobody"),
                ],
            )
            left = await b_again.call(request, 4)
            assert [m.error_code for m in left.members] == [NONE, UNKNOWN_MEMBER_ID]
            [described] = await describe(b_again, group)
            assert described.group_state == "PreparingRebalance"
            assert [m.group_instance_id for m in described.members] == ["inst-a"]

    run(main())


async def _is(coro: Awaitable[int], expected: int) -> bool:
    return await coro == expected


def test_leave_group_batched_and_old_versions(broker: BrokerProcess) -> None:
    async def main() -> None:
        async with Wire(broker.bootstrap) as wire:
            # An offset keeps the group around once empty (this broker expires empty groups
            # without offsets within offsets.retention.check.interval.ms=200).
            await commit(wire, "g-leave-old", {(TOPIC, 0): 1})
            member = await join_member(wire, "g-leave-old")
            old = await wire.call(
                LeaveGroupRequest(group_id="g-leave-old", member_id=member.member_id), 1
            )
            assert old.error_code == NONE
            again = await wire.call(
                LeaveGroupRequest(group_id="g-leave-old", member_id=member.member_id), 1
            )
            assert again.error_code == UNKNOWN_MEMBER_ID
            [described] = await describe(wire, "g-leave-old")
            assert described.group_state == "Empty"

            member = await join_member(wire, "g-leave-new")
            request = LeaveGroupRequest(
                group_id="g-leave-new",
                members=[
                    LeaveGroupRequest.MemberIdentity(member_id=member.member_id, reason="bye"),
                    LeaveGroupRequest.MemberIdentity(member_id="ghost"),
                ],
            )
            response = await wire.call(request, 5)
            assert response.error_code == NONE
            assert [(m.member_id, m.error_code) for m in response.members] == [
                (member.member_id, NONE),
                ("ghost", UNKNOWN_MEMBER_ID),
            ]

    run(main())


# --- offsets ----------------------------------------------------------------------------------


def test_commit_and_fetch_in_every_version(broker: BrokerProcess) -> None:
    async def main() -> None:
        async with Wire(broker.bootstrap) as wire:
            for version in range(0, 10):
                group = f"g-commit-v{version}"
                committed = await commit(wire, group, {(TOPIC, 1): 10 + version}, version=version)
                assert committed == {(TOPIC, 1): NONE}
            for version in range(0, 8):
                error, offsets = await fetch(
                    wire, f"g-commit-v{version}", [(TOPIC, 1), (TOPIC, 2)], version=version
                )
                assert error == NONE
                assert offsets[(TOPIC, 1)] == (10 + version, "", NONE)
                assert offsets[(TOPIC, 2)] == (-1, "", NONE)
            # v2+: null topics means every committed offset of the group.
            _, everything = await fetch(wire, "g-commit-v3", None, version=3)
            assert everything == {(TOPIC, 1): (13, "", NONE)}

    run(main())


@pytest.mark.parametrize("version", [8, 9])
def test_offset_fetch_batched_by_group(broker: BrokerProcess, version: int) -> None:
    async def main() -> None:
        async with Wire(broker.bootstrap) as wire:
            await commit(wire, "g-batch-1", {(TOPIC, 0): 1, (TOPIC, 1): 2})
            await commit(wire, "g-batch-2", {(TOPIC, 3): 3})
            Group = OffsetFetchRequest.OffsetFetchRequestGroup
            Topics = OffsetFetchRequest.OffsetFetchRequestTopics
            request = OffsetFetchRequest(
                groups=[
                    Group(group_id="g-batch-1", topics=[Topics(name=TOPIC, partition_indexes=[1])]),
                    Group(group_id="g-batch-2", topics=None),
                    Group(
                        group_id="g-batch-none", topics=[Topics(name=TOPIC, partition_indexes=[0])]
                    ),
                ]
            )
            response = await wire.call(request, version)
            result = {
                g.group_id: (
                    g.error_code,
                    {
                        (t.name, p.partition_index): p.committed_offset
                        for t in g.topics
                        for p in t.partitions
                    },
                )
                for g in response.groups
            }
            assert result == {
                "g-batch-1": (NONE, {(TOPIC, 1): 2}),
                "g-batch-2": (NONE, {(TOPIC, 3): 3}),
                "g-batch-none": (NONE, {(TOPIC, 0): -1}),
            }

    run(main())


def test_commit_errors_are_per_partition(broker: BrokerProcess) -> None:
    async def main() -> None:
        async with Wire(broker.bootstrap) as wire:
            result = await commit(
                wire,
                "g-commit-errors",
                {
                    (TOPIC, 0): (5, "fits"),
                    (TOPIC, 1): (6, "x" * 17),  # offset.metadata.max.bytes=16 here
                    (TOPIC, 99): 7,
                    ("no-such-topic", 0): 8,
                },
            )
            assert result == {
                (TOPIC, 0): NONE,
                (TOPIC, 1): OFFSET_METADATA_TOO_LARGE,
                (TOPIC, 99): UNKNOWN_TOPIC_OR_PARTITION,
                ("no-such-topic", 0): UNKNOWN_TOPIC_OR_PARTITION,
            }
            _, offsets = await fetch(wire, "g-commit-errors", [(TOPIC, 0), (TOPIC, 1)])
            assert offsets == {(TOPIC, 0): (5, "fits", NONE), (TOPIC, 1): (-1, "", NONE)}
            # A member of a generation this group never had is a zombie.
            zombie = await commit(
                wire, "g-never-joined", {(TOPIC, 0): 1}, generation=3, member_id="m"
            )
            assert zombie == {(TOPIC, 0): ILLEGAL_GENERATION}
            # Plain commits (generation -1) are refused while the group has members.
            member = await join_member(wire, "g-active")
            assert member.error_code == NONE
            admin = await commit(wire, "g-active", {(TOPIC, 0): 1})
            assert admin == {(TOPIC, 0): UNKNOWN_MEMBER_ID}
            early = await commit(
                wire, "g-active", {(TOPIC, 0): 1}, generation=1, member_id=member.member_id
            )
            assert early == {(TOPIC, 0): REBALANCE_IN_PROGRESS}  # no SyncGroup yet

    run(main())


def test_offsets_with_a_retention_time_expire(broker: BrokerProcess) -> None:
    async def main() -> None:
        async with Wire(broker.bootstrap) as wire:
            # OffsetCommit v2 may set its own retention: the offset expires after it.
            await commit(wire, "g-expire", {(TOPIC, 0): 3}, version=2, retention_time_ms=300)
            await commit(wire, "g-keep", {(TOPIC, 0): 4}, version=2)

            async def expired() -> bool:
                _, offsets = await fetch(wire, "g-expire", [(TOPIC, 0)])
                return offsets[(TOPIC, 0)][0] == -1

            await eventually(expired, what="the offset to expire")
            _, kept = await fetch(wire, "g-keep", [(TOPIC, 0)])
            assert kept[(TOPIC, 0)][0] == 4
            # A group left with no offsets and no members is removed.
            listed = await wire.call(ListGroupsRequest(), 1)
            names = {g.group_id for g in listed.groups}
            assert "g-keep" in names and "g-expire" not in names

    run(main())


# --- admin ------------------------------------------------------------------------------------


def test_list_describe_and_delete_groups(broker: BrokerProcess) -> None:
    async def main() -> None:
        async with Wire(broker.bootstrap) as wire, Wire(broker.bootstrap) as active:
            await commit(wire, "g-admin-empty", {(TOPIC, 0): 1})
            member = await join_member(active, "g-admin-active")
            await sync(
                active,
                "g-admin-active",
                1,
                member.member_id,
                {member.member_id: assignment(TOPIC, [0])},
            )
            for version in (0, 1, 2, 3):
                listed = await wire.call(ListGroupsRequest(), version)
                types = {g.group_id: g.protocol_type for g in listed.groups}
                assert types["g-admin-empty"] == ""
                assert types["g-admin-active"] == "consumer"
            stable = await wire.call(ListGroupsRequest(states_filter=["stable"]), 4)
            assert "g-admin-active" in {g.group_id for g in stable.groups}
            assert "g-admin-empty" not in {g.group_id for g in stable.groups}
            classic = await wire.call(ListGroupsRequest(types_filter=["Classic"]), 5)
            assert {g.group_type for g in classic.groups} == {"classic"}
            modern = await wire.call(ListGroupsRequest(types_filter=["consumer"]), 5)
            assert modern.groups == []

            for version in range(0, 6):
                active_group, empty_group, unknown = await describe(
                    wire, "g-admin-active", "g-admin-empty", "g-admin-unknown", version=version
                )
                assert (active_group.group_state, active_group.protocol_data) == ("Stable", "range")
                [described_member] = active_group.members
                assert described_member.member_id == member.member_id
                assert described_member.client_id == "wire-test"
                assert described_member.client_host == "/127.0.0.1"
                assert described_member.member_metadata == subscription(TOPIC)
                assert described_member.member_assignment == assignment(TOPIC, [0])
                assert (empty_group.group_state, empty_group.members) == ("Empty", [])
                assert (unknown.error_code, unknown.group_state) == (NONE, "Dead")

            response = await wire.call(
                DeleteGroupsRequest(
                    groups_names=["g-admin-empty", "g-admin-active", "g-admin-unknown"]
                ),
                2,
            )
            assert {r.group_id: r.error_code for r in response.results} == {
                "g-admin-empty": NONE,
                "g-admin-active": NON_EMPTY_GROUP,
                "g-admin-unknown": GROUP_ID_NOT_FOUND,
            }
            _, offsets = await fetch(wire, "g-admin-empty", [(TOPIC, 0)])
            assert offsets[(TOPIC, 0)][0] == -1

    run(main())


def test_offset_delete_spares_subscribed_topics(broker: BrokerProcess) -> None:
    group = "g-offset-delete"

    async def main() -> None:
        async with Wire(broker.bootstrap) as wire:
            member = await join_member(wire, group)
            await sync(wire, group, 1, member.member_id, {member.member_id: b""})
            await commit(
                wire,
                group,
                {(TOPIC, 0): 1, (OTHER_TOPIC, 0): 2},
                generation=1,
                member_id=member.member_id,
            )
            Topic = OffsetDeleteRequest.OffsetDeleteRequestTopic
            Partition = OffsetDeleteRequest.OffsetDeleteRequestPartition
            request = OffsetDeleteRequest(
                group_id=group,
                topics=[
                    Topic(name=TOPIC, partitions=[Partition(partition_index=0)]),
                    Topic(name=OTHER_TOPIC, partitions=[Partition(partition_index=0)]),
                ],
            )
            response = await wire.call(request, 0)
            errors = {
                (t.name, p.partition_index): p.error_code
                for t in response.topics
                for p in t.partitions
            }
            assert errors == {(TOPIC, 0): GROUP_SUBSCRIBED_TO_TOPIC, (OTHER_TOPIC, 0): NONE}
            _, offsets = await fetch(wire, group, None)
            assert set(offsets) == {(TOPIC, 0)}
            missing = await wire.call(OffsetDeleteRequest(group_id="g-no-such", topics=[]), 0)
            assert missing.error_code == GROUP_ID_NOT_FOUND

    run(main())


# --- the records in __consumer_offsets --------------------------------------------------------


def _kafka_string(data: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from(">h", data, pos)
    return data[pos + 2 : pos + 2 + n].decode(), pos + 2 + n


def test_records_use_kafkas_key_and_value_schemas(broker: BrokerProcess) -> None:
    """Decoded by hand from Kafka's schemas, independently of pystream's codec."""
    from kafka import KafkaConsumer, TopicPartition

    group = "g-records"

    async def main() -> None:
        async with Wire(broker.bootstrap) as wire:
            await commit(wire, group, {(TOPIC, 2): (42, "meta")})
            member = await join_member(wire, group + "-members")
            await sync(
                wire,
                group + "-members",
                1,
                member.member_id,
                {member.member_id: assignment(TOPIC, [1])},
            )

    run(main())
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    partitions = [
        TopicPartition("__consumer_offsets", partition_for(g, OFFSETS_PARTITIONS))
        for g in (group, group + "-members")
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    records = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for batch in consumer.poll(200).values():
            records += batch
        keys = [r.key for r in records]
        if any(k and group.encode() + b"-members" in k for k in keys) and any(
            k and k[:2] == b"\x00\x01" and group.encode() + b"\x00" in k for k in keys
        ):
            break
    consumer.close()
    offset_commit = commit_value = group_value = None
    for record in records:
        version, key = struct.unpack_from(">h", record.key)[0], record.key
        if version == 1:
            g, pos = _kafka_string(key, 2)
            topic, pos = _kafka_string(key, pos)
            (partition,) = struct.unpack_from(">i", key, pos)
            if g == group:
                offset_commit, commit_value = (g, topic, partition), record.value
        elif version == 2 and _kafka_string(key, 2)[0] == group + "-members":
            group_value = record.value
    assert offset_commit == (group, TOPIC, 2)
    # OffsetCommitValue v3: offset, leader epoch, metadata, commit timestamp.
    assert commit_value is not None
    version, offset, epoch = struct.unpack_from(">hqi", commit_value)
    metadata, pos = _kafka_string(commit_value, 14)
    (timestamp,) = struct.unpack_from(">q", commit_value, pos)
    assert (version, offset, epoch, metadata) == (3, 42, -1, "meta")
    assert abs(timestamp - time.time() * 1000) < 600_000
    # GroupMetadataValue v3: protocol type, generation, protocol, leader, state timestamp, members.
    assert group_value is not None
    (version,) = struct.unpack_from(">h", group_value)
    protocol_type, pos = _kafka_string(group_value, 2)
    (generation,) = struct.unpack_from(">i", group_value, pos)
    protocol, pos = _kafka_string(group_value, pos + 4)
    leader, pos = _kafka_string(group_value, pos)
    (members,) = struct.unpack_from(">i", group_value, pos + 8)
    assert (version, protocol_type, generation, protocol, members) == (3, "consumer", 1, "range", 1)
    assert leader.startswith("wire-test-")


def test_metadata_auto_creation_of_the_offsets_topic_uses_its_own_settings(broker_factory) -> None:
    """A Metadata request naming __consumer_offsets creates it as the coordinator would
    (compacted, offsets.topic.num.partitions), not with the broker's topic defaults."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    broker = broker_factory(
        **{
            "offsets.topic.num.partitions": "3",
            "num.partitions": "7",
            "group.initial.rebalance.delay.ms": "0",
        }
    )
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    from confluent_kafka import Producer

    Producer({"bootstrap.servers": broker.bootstrap}).list_topics("__consumer_offsets", timeout=30)
    metadata = admin.list_topics(timeout=30)
    assert len(metadata.topics["__consumer_offsets"].partitions) == 3
    resource = ConfigResource(ConfigResource.Type.TOPIC, "__consumer_offsets")
    configs = admin.describe_configs([resource])[resource].result(30)
    assert configs["cleanup.policy"].value == "compact"
