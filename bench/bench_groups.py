"""Consumer-group benchmarks: rebalance time, OffsetCommit throughput, coordinator load time.

Run one or all::

    PYTHONPATH=src python bench/bench_groups.py            # everything
    PYTHONPATH=src python bench/bench_groups.py load --records 1000000
    PYTHONPATH=src python bench/bench_groups.py rebalance commit

* ``rebalance``: 10 members over a 100-partition topic (group.initial.rebalance.delay.ms=0).
  Measured twice: with raw protocol members (the broker's own cost: every member joins
  at once, the leader assigns by range, everyone syncs) and with confluent-kafka
  consumers (what an application sees, dominated by the clients' heartbeat interval).
  Then one member leaves and the other nine rebalance.
* ``commit``: OffsetCommit requests per second from one client, one request in flight
  (confluent-kafka synchronous commits, and a raw-protocol client), plus a pipelined
  raw client to show the broker's capacity.
* ``load``: the time a restarted broker needs to replay N committed-offset records
  from ``__consumer_offsets`` (in process, timing ``Broker.start`` + loading).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from broker_process import BrokerProcess  # noqa: E402
from test_groups_wire import (  # noqa: E402
    MEMBER_ID_REQUIRED,
    Wire,
    assignment,
    commit,
    heartbeat,
    join,
    sync,
)

from pystream.broker.server import Broker  # noqa: E402
from pystream.config import BrokerConfig  # noqa: E402
from pystream.groups.offsets_log import (  # noqa: E402
    OFFSETS_TOPIC,
    OffsetAndMetadata,
    build_records,
    offset_commit_key,
    offset_commit_value,
    partition_for,
)
from pystream.protocol import decode_response, encode_request_frame  # noqa: E402
from pystream.protocol.messages import RequestHeader  # noqa: E402
from pystream.protocol.messages.find_coordinator import FindCoordinatorRequest  # noqa: E402
from pystream.protocol.messages.leave_group import LeaveGroupRequest  # noqa: E402
from pystream.protocol.messages.offset_commit import OffsetCommitRequest  # noqa: E402
from pystream.storage.log import AppendOrigin  # noqa: E402

OVERRIDES = {"group.initial.rebalance.delay.ms": "0"}


async def _warm_up(bootstrap: str) -> None:
    """Create ``__consumer_offsets`` (the first FindCoordinator does) before timing anything."""
    async with Wire(bootstrap) as wire:
        assert (await wire.call(FindCoordinatorRequest(key="warm-up"), 3)).error_code == 0


def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=60)


# --- rebalance --------------------------------------------------------------------------------


class _RawMember:
    """A group member on the raw protocol that behaves like a client with a 10 ms heartbeat:
    it joins, syncs (assigning by range when it leads), and rejoins when told to."""

    def __init__(self, bootstrap: str, group: str, index: int, partitions: int) -> None:
        self.wire = Wire(bootstrap, f"bench-{index}")
        self.group, self.partitions = group, partitions
        self.member_id = ""
        self.generation = -1
        self.assignment = b""
        self.leaving = False

    async def run(self) -> None:
        await self.wire.__aenter__()
        try:
            found = await self.wire.call(FindCoordinatorRequest(key=self.group), 3)
            assert found.error_code == 0, found
            while not self.leaving:
                await self._join_and_sync()
                while not self.leaving:
                    error = await heartbeat(self.wire, self.group, self.generation, self.member_id)
                    if error:
                        break  # REBALANCE_IN_PROGRESS: rejoin
                    await asyncio.sleep(0.01)
            await self.wire.call(
                LeaveGroupRequest(
                    group_id=self.group,
                    members=[LeaveGroupRequest.MemberIdentity(member_id=self.member_id)],
                ),
                3,
            )
        finally:
            await self.wire.__aexit__()

    async def _join_and_sync(self) -> None:
        self.generation, self.assignment = -1, b""
        while True:
            response = await join(
                self.wire, self.group, self.member_id, version=7, session_timeout_ms=30_000
            )
            if response.error_code == MEMBER_ID_REQUIRED:
                self.member_id = response.member_id
                continue
            assert response.error_code == 0, response
            self.member_id = response.member_id
            plan = None
            if response.members:  # the leader assigns by range
                ids = sorted(m.member_id for m in response.members)
                per = -(-self.partitions // len(ids))
                plan = {
                    member_id: assignment(
                        "bench", list(range(i * per, min((i + 1) * per, self.partitions)))
                    )
                    for i, member_id in enumerate(ids)
                }
            synced = await sync(self.wire, self.group, response.generation_id, self.member_id, plan)
            if synced.error_code == 0:
                self.generation, self.assignment = response.generation_id, synced.assignment
                return


async def _wait_settled(members: list[_RawMember], tasks: list[asyncio.Future[None]]) -> None:
    while True:
        for task in tasks:
            if task.done():
                task.result()  # a member failed: raise its error
                raise RuntimeError("a member stopped unexpectedly")
        generations = {m.generation for m in members}
        if len(generations) == 1 and -1 not in generations and all(m.assignment for m in members):
            return
        await asyncio.sleep(0.001)


async def _wire_rebalance(
    bootstrap: str, group: str, count: int, partitions: int
) -> tuple[float, float]:
    """(seconds until all members are assigned, seconds to rebalance after one leaves)."""
    members = [_RawMember(bootstrap, group, i, partitions) for i in range(count)]
    started = time.perf_counter()
    tasks = [asyncio.ensure_future(m.run()) for m in members]
    await _wait_settled(members, tasks)
    first = time.perf_counter() - started
    started = time.perf_counter()
    leaving = members.pop()
    generation = members[0].generation
    leaving.leaving = True
    await tasks.pop()
    while members[0].generation <= generation:
        await asyncio.sleep(0.001)
    await _wait_settled(members, tasks)
    after_leave = time.perf_counter() - started
    for member in members:
        member.leaving = True
    await asyncio.gather(*tasks)
    return first, after_leave


def _client_rebalance(
    bootstrap: str, group: str, members: int, heartbeat_ms: int
) -> tuple[float, float]:
    """confluent-kafka consumers: (seconds to the first full split, seconds after a leave)."""
    from confluent_kafka import Consumer

    owned: list[set[int]] = [set() for _ in range(members)]
    stop = [threading.Event() for _ in range(members)]
    lock = threading.Lock()

    def run(i: int) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "heartbeat.interval.ms": heartbeat_ms,
                "session.timeout.ms": 30_000,
            }
        )

        def on_assign(c: Any, tps: Any) -> None:
            with lock:
                owned[i] |= {tp.partition for tp in tps}

        def on_revoke(c: Any, tps: Any) -> None:
            with lock:
                owned[i] -= {tp.partition for tp in tps}

        consumer.subscribe(["bench"], on_assign=on_assign, on_revoke=on_revoke)
        while not stop[i].is_set():
            consumer.poll(0.05)
        consumer.close()

    def settled(count: int) -> bool:
        with lock:
            sets = owned[:count]
            return sum(len(s) for s in sets) == 100 and all(sets) and len(set().union(*sets)) == 100

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(members)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    while not settled(members):
        time.sleep(0.005)
    first = time.perf_counter() - started
    started = time.perf_counter()
    stop[-1].set()
    threads[-1].join()
    while not settled(members - 1):
        time.sleep(0.005)
    after_leave = time.perf_counter() - started
    for i in range(members - 1):
        stop[i].set()
    for thread in threads[:-1]:
        thread.join()
    return first, after_leave


def bench_rebalance(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(Path(tmp) / "broker", OVERRIDES).start()
        try:
            _create_topic(broker.bootstrap, "bench", 100)
            asyncio.run(_warm_up(broker.bootstrap))
            times = [
                asyncio.run(_wire_rebalance(broker.bootstrap, f"wire-{i}", 10, 100))
                for i in range(rounds)
            ]
            firsts, leaves = [t[0] for t in times], [t[1] for t in times]
            print(
                f"rebalance, raw-protocol members (10 ms heartbeat), 10 members / 100 partitions:"
                f" all assigned after median {statistics.median(firsts) * 1000:.0f} ms; after one"
                f" leaves, 9 reassigned in median {statistics.median(leaves) * 1000:.0f} ms"
                f" ({rounds} rounds)"
            )
            for heartbeat_ms in (3000, 100):
                first, leave = _client_rebalance(
                    broker.bootstrap, f"ck-{heartbeat_ms}", 10, heartbeat_ms
                )
                print(
                    f"rebalance, confluent-kafka, 10 members / 100 partitions, "
                    f"heartbeat.interval.ms={heartbeat_ms}: all assigned after {first:.2f} s; "
                    f"after one member leaves, 9 reassigned in {leave:.2f} s"
                )
        finally:
            broker.stop()


# --- commit throughput ------------------------------------------------------------------------


def _ck_commits(bootstrap: str, seconds: float, partitions: int) -> float:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"ck-commit-{partitions}",
            "enable.auto.commit": False,
        }
    )
    tps = [TopicPartition("bench", p) for p in range(partitions)]
    consumer.assign(tps)
    n = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        n += 1
        offsets = [TopicPartition("bench", p, n) for p in range(partitions)]
        consumer.commit(offsets=offsets, asynchronous=False)
    elapsed = time.perf_counter() - started
    consumer.close()
    return n / elapsed


async def _wire_commits(bootstrap: str, seconds: float) -> float:
    async with Wire(bootstrap) as wire:
        n = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            n += 1
            result = await commit(wire, "wire-commit", {("bench", 0): n})
            assert result == {("bench", 0): 0}
        return n / (time.perf_counter() - started)


async def _pipelined_commits(bootstrap: str, count: int) -> float:
    """``count`` OffsetCommit v8 requests written back to back; responses read as they come."""
    host, port = bootstrap.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    frames = []
    for i in range(count):
        request = OffsetCommitRequest(
            group_id="pipelined",
            generation_id_or_member_epoch=-1,
            topics=[
                OffsetCommitRequest.OffsetCommitRequestTopic(
                    name="bench",
                    partitions=[
                        OffsetCommitRequest.OffsetCommitRequestPartition(
                            partition_index=0, committed_offset=i
                        )
                    ],
                )
            ],
        )
        header = RequestHeader(
            request_api_key=8, request_api_version=8, correlation_id=i, client_id="bench"
        )
        frames.append(encode_request_frame(header, request))
    started = time.perf_counter()

    async def send() -> None:
        for frame in frames:
            writer.write(frame)
            await writer.drain()

    sender = asyncio.ensure_future(send())
    for _ in range(count):
        (size,) = struct.unpack(">i", await reader.readexactly(4))
        _, response = decode_response(await reader.readexactly(size), 8, 8)
        assert response.topics[0].partitions[0].error_code == 0
    await sender
    elapsed = time.perf_counter() - started
    writer.close()
    return count / elapsed


def bench_commit(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(Path(tmp) / "broker", OVERRIDES).start()
        try:
            _create_topic(broker.bootstrap, "bench", 100)
            asyncio.run(_warm_up(broker.bootstrap))
            for partitions in (1, 100):
                rate = _ck_commits(broker.bootstrap, seconds, partitions)
                print(
                    f"OffsetCommit, confluent-kafka synchronous commit() of {partitions} "
                    f"partition(s): {rate:,.0f} commits/s ({rate * partitions:,.0f} offsets/s)"
                )
            rate = asyncio.run(_wire_commits(broker.bootstrap, seconds))
            print(f"OffsetCommit, raw protocol, one request in flight: {rate:,.0f} commits/s")
            rate = asyncio.run(_pipelined_commits(broker.bootstrap, 50_000))
            print(f"OffsetCommit, raw protocol, pipelined on one connection: {rate:,.0f} commits/s")
        finally:
            broker.stop()


# --- load time --------------------------------------------------------------------------------


def _config(directory: Path) -> BrokerConfig:
    return BrokerConfig.from_properties(
        {"log.dirs": str(directory), "listeners": "PLAINTEXT://127.0.0.1:0", **OVERRIDES}
    )


async def _write_offsets(directory: Path, records: int, groups: int, partitions: int) -> int:
    """Append ``records`` offset commits (``groups`` x ``partitions`` keys, committed over and
    over) to ``__consumer_offsets`` through a broker's own log; returns the distinct keys."""
    broker = Broker(_config(directory))
    await broker.start()
    try:
        coordinator = broker.services.group_coordinator
        assert await coordinator.ensure_topic() == 0
        n = coordinator.num_partitions
        per_batch = 1000
        written = 0
        round_ = 0
        while written < records:
            round_ += 1
            for g in range(groups):
                group = f"group-{g}"
                batch = [
                    (
                        offset_commit_key(group, "bench", p),
                        offset_commit_value(OffsetAndMetadata(round_ * 1000 + p, 0, "", 1)),
                    )
                    for p in range(partitions)
                ][: records - written]
                for start in range(0, len(batch), per_batch):
                    chunk = batch[start : start + per_batch]
                    broker.services.replica_manager.append(
                        OFFSETS_TOPIC,
                        partition_for(group, n),
                        build_records(chunk, 1),
                        origin=AppendOrigin.COORDINATOR,
                    )
                written += len(batch)
                if written >= records:
                    break
        return min(records, groups * partitions)
    finally:
        await broker.stop()


async def _load(directory: Path) -> tuple[float, int, int]:
    """(seconds from Broker.start until every partition is loaded, records, groups)."""
    started = time.perf_counter()
    broker = Broker(_config(directory))
    await broker.start()
    coordinator = broker.services.group_coordinator
    await coordinator.wait_loaded()
    total = time.perf_counter() - started
    records = sum(s[0] for s in coordinator.load_stats.values())
    groups = len(coordinator.groups)
    await broker.stop()
    return total, records, groups


def bench_load(records: int, groups: int, partitions: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="bench-groups-load-"))
    try:
        started = time.perf_counter()
        keys = asyncio.run(_write_offsets(directory, records, groups, partitions))
        print(
            f"(wrote {records:,} offset commit records, {keys:,} distinct keys, in "
            f"{time.perf_counter() - started:.1f} s)"
        )
        total, loaded, group_count = asyncio.run(_load(directory))
        assert loaded == records, (loaded, records)
        print(
            f"coordinator load, {records:,} committed-offset records ({keys:,} distinct "
            f"group/partition keys, {group_count:,} groups): {total:.2f} s from Broker.start "
            f"until every partition is loaded ({records / total:,.0f} records/s)"
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("which", nargs="*", default=["rebalance", "commit", "load"])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=100, help="keys per group (load)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if "rebalance" in args.which:
        bench_rebalance(args.rounds)
    if "commit" in args.which:
        bench_commit(args.seconds)
    if "load" in args.which:
        bench_load(args.records, args.groups, args.partitions)


if __name__ == "__main__":
    main()
