"""Groups at scale: batched OffsetCommits stay durable and ordered, a 100-member group
settles with every partition assigned once (raw protocol, one broker process)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from broker_process import BrokerProcess
from test_groups_wire import (
    MEMBER_ID_REQUIRED,
    NONE,
    Wire,
    assignment,
    describe,
    eventually,
    fetch,
    join,
    subscription,
    sync,
)

from pystream.protocol import decode_response, encode_request_frame
from pystream.protocol.messages import RequestHeader
from pystream.protocol.messages.consumer_protocol import ConsumerProtocolAssignment
from pystream.protocol.messages.find_coordinator import FindCoordinatorRequest
from pystream.protocol.messages.metadata import MetadataRequest
from pystream.protocol.messages.offset_commit import OffsetCommitRequest
from pystream.protocol.messages.offset_delete import OffsetDeleteRequest

TOPIC = "scale"
PARTITIONS = 100


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("groups-scale") / "broker",
        {
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": str(PARTITIONS),
            # Few offsets partitions: groups share them, so their commits share batches.
            "offsets.topic.num.partitions": "3",
        },
    ).start()
    try:
        asyncio.run(prepare(process.bootstrap))
        yield process
    finally:
        process.close()


async def prepare(bootstrap: str) -> None:
    """Auto-create the topic (num.partitions) and ``__consumer_offsets``."""
    async with Wire(bootstrap) as wire:
        request = MetadataRequest(
            topics=[MetadataRequest.MetadataRequestTopic(name=TOPIC)],
            allow_auto_topic_creation=True,
        )
        assert (await wire.call(request, 4)).topics[0].error_code == NONE
        assert (await wire.call(FindCoordinatorRequest(key="setup"), 3)).error_code == NONE


def frame(correlation_id: int, request: Any, version: int) -> bytes:
    """One request as it goes on the wire."""
    header = RequestHeader(
        request_api_key=request.API_KEY,
        request_api_version=version,
        correlation_id=correlation_id,
        client_id="pipelined",
    )
    return encode_request_frame(header, request)


def commit_request(group: str, partitions: list[int], offset: int) -> OffsetCommitRequest:
    """A simple consumer's OffsetCommit (generation -1): ``offset`` for each partition."""
    return OffsetCommitRequest(
        group_id=group,
        generation_id_or_member_epoch=-1,
        topics=[
            OffsetCommitRequest.OffsetCommitRequestTopic(
                name=TOPIC,
                partitions=[
                    OffsetCommitRequest.OffsetCommitRequestPartition(
                        partition_index=p, committed_offset=offset
                    )
                    for p in partitions
                ],
            )
        ],
    )


async def _pipelined(bootstrap: str, requests: list[tuple[Any, int]]) -> list[int]:
    """Write every request at once on one connection; each answer's error codes, in order."""
    host, port = bootstrap.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"".join(frame(i, r, v) for i, (r, v) in enumerate(requests)))
        errors = []
        for i, (request, version) in enumerate(requests):
            (size,) = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), 30))
            header, response = decode_response(
                await reader.readexactly(size), request.API_KEY, version
            )
            assert header.correlation_id == i
            codes = {p.error_code for t in response.topics for p in t.partitions}
            errors.append(max(codes))
        return errors
    finally:
        writer.close()


async def _committed(bootstrap: str, group: str, partitions: list[int]) -> dict[int, int]:
    """What OffsetFetch answers (retried while the coordinator loads after a restart)."""
    async with Wire(bootstrap) as wire:
        found: dict[int, int] = {}

        async def loaded() -> bool:
            error, offsets = await fetch(wire, group, [(TOPIC, p) for p in partitions])
            if error:
                return False
            found.update({tp[1]: v[0] for tp, v in offsets.items()})
            return True

        await eventually(loaded, what=f"the offsets of {group}")
        return found


def test_pipelined_commits_from_several_connections_are_durable(broker: BrokerProcess) -> None:
    """Four members of one group and two groups of their own pipeline 150 commits each; every
    one is answered, and the last offsets are what OffsetFetch returns — also after a clean
    restart and after SIGKILL (batched appends keep the log in the order commits were made)."""
    shared = "pipelined-shared"
    jobs = [(shared, p) for p in range(4)] + [("pipelined-own-a", 10), ("pipelined-own-b", 11)]

    async def round_(first: int) -> None:
        errors = await asyncio.gather(
            *(
                _pipelined(
                    broker.bootstrap,
                    [(commit_request(g, [p], first + i), 8) for i in range(150)],
                )
                for g, p in jobs
            )
        )
        assert all(e == [NONE] * 150 for e in errors)

    def check(last: int) -> None:
        for group in {g for g, _ in jobs}:
            partitions = [p for g, p in jobs if g == group]
            committed = asyncio.run(_committed(broker.bootstrap, group, partitions))
            assert committed == dict.fromkeys(partitions, last), group

    asyncio.run(round_(1))
    check(150)
    broker.restart()
    check(150)
    asyncio.run(round_(1000))
    check(1149)
    broker.kill()
    broker.start()
    check(1149)


def test_commits_and_deletes_racing_on_connections_agree_with_the_log(
    broker: BrokerProcess,
) -> None:
    """Commits and OffsetDeletes of one group sent at once on two connections land in some
    order; whatever OffsetFetch answers then, it answers the same after a restart."""
    group = "racing"
    partitions = list(range(20, 40))

    def delete(p: int) -> OffsetDeleteRequest:
        return OffsetDeleteRequest(
            group_id=group,
            topics=[
                OffsetDeleteRequest.OffsetDeleteRequestTopic(
                    name=TOPIC,
                    partitions=[
                        OffsetDeleteRequest.OffsetDeleteRequestPartition(partition_index=p)
                    ],
                )
            ],
        )

    async def race() -> None:
        commits = [(commit_request(group, [p], 7), 8) for p in partitions]
        deletes = [(delete(p), 0) for p in partitions]
        first = [(commit_request(group, [p], 3), 8) for p in partitions]
        assert await _pipelined(broker.bootstrap, first) == [NONE] * len(partitions)
        results = await asyncio.gather(
            _pipelined(broker.bootstrap, commits), _pipelined(broker.bootstrap, deletes)
        )
        assert results == [[NONE] * len(partitions)] * 2

    asyncio.run(race())
    before = asyncio.run(_committed(broker.bootstrap, group, partitions))
    assert set(before.values()) <= {7, -1}
    broker.restart()
    assert asyncio.run(_committed(broker.bootstrap, group, partitions)) == before


async def join_and_sync(
    wire: Wire, group: str, partitions: int, topic: str = TOPIC
) -> tuple[int, str, list[int]]:
    """Join as a new member (MEMBER_ID_REQUIRED first) and sync — the leader assigns the
    topic's partitions by range — until synced: (generation, member id, its partitions)."""
    kwargs: dict[str, Any] = {
        "version": 7,
        "protocols": (("range", subscription(topic)),),
        "session_timeout_ms": 30_000,
        "rebalance_timeout_ms": 60_000,
    }
    member = ""
    while True:
        joined = await join(wire, group, member, **kwargs)
        if joined.error_code == MEMBER_ID_REQUIRED:
            member = joined.member_id
            continue
        assert joined.error_code == NONE, joined
        plan = None
        if joined.members:
            ids = sorted(m.member_id for m in joined.members)
            per = -(-partitions // len(ids))
            plan = {
                m: assignment(topic, list(range(i * per, min((i + 1) * per, partitions))))
                for i, m in enumerate(ids)
            }
        synced = await sync(wire, group, joined.generation_id, member, plan)
        if synced.error_code == NONE:
            break
    _, decoded = ConsumerProtocolAssignment.decode_versioned(synced.assignment)
    owned = [p for tp in decoded.assigned_partitions for p in tp.partitions]
    return joined.generation_id, member, owned


async def _member(bootstrap: str, group: str, index: int) -> tuple[int, str, list[int]]:
    async with Wire(bootstrap, f"member-{index}") as wire:
        return await join_and_sync(wire, group, PARTITIONS)


def test_a_hundred_members_reach_stable_with_each_partition_assigned_once(
    broker: BrokerProcess,
) -> None:
    group = "hundred"

    async def storm() -> tuple[list[tuple[int, str, list[int]]], Any]:
        members = await asyncio.gather(*(_member(broker.bootstrap, group, i) for i in range(100)))
        async with Wire(broker.bootstrap) as wire:
            (described,) = await describe(wire, group)
        return members, described

    members, described = asyncio.run(storm())
    assert len({generation for generation, _, _ in members}) == 1
    assert sorted(p for _, _, owned in members for p in owned) == list(range(PARTITIONS))
    assert all(len(owned) == 1 for _, _, owned in members)
    assert described.group_state == "Stable"
    assert sorted(m.member_id for m in described.members) == sorted(m for _, m, _ in members)
