"""Consumer groups at scale (issue 19, "Groups"): idle groups' memory, a 100-member join,
pipelined OffsetCommit throughput.

Starts a fresh ``pystream serve`` per run (``tests/broker_process.py``) and measures,
with raw-protocol clients (pystream's codec, frames encoded before the clock starts):

* **idle groups** — ``--groups`` consumer groups, each with one member that joined
  (JoinGroup v7: MEMBER_ID_REQUIRED, then again with the id), synced and committed
  ``--group-partitions`` offsets, then idle (a long session timeout, no heartbeats);
  then as many "simple" groups that only committed offsets (generation -1, no members).
  The broker's RSS (``/proc/<pid>/status`` VmRSS) before and after each kind, per group.
* **join storm** — ``--members`` members join one group concurrently (one connection
  each, in ``--join-procs`` processes), the leader assigns the ``--members``
  partitions of a topic by range and everyone syncs.  Timed from the first JoinGroup
  sent to the last SyncGroup answered (CLOCK_MONOTONIC, shared by the processes), with
  the broker's CPU seconds in that window (``/proc/<pid>/stat``).  The broker runs with
  ``group.initial.rebalance.delay.ms=0``: Kafka's default of 3000 holds the first
  rebalance of an empty group that long by design (``InitialDelayedJoin``), which would
  measure the delay, not the broker.  Checks every partition is assigned exactly once.
  With ``--ck-members N``, also N confluent-kafka consumers (in ``--ck-procs`` processes,
  one polling thread each) subscribing at once: until every one holds its partitions
  (what an application sees, librdkafka's own timers included).
* **commit storm** — ``--commit-conns`` connections (in ``--commit-procs`` processes),
  each writing ``--commits`` OffsetCommit v8 requests back to back (generation -1, the
  same partitions every time, the offset growing) and reading the answers as they come;
  requests/s = all requests / (first sent .. last answered), with the broker's CPU per
  request.  Three shapes: the connections commit for one group (its members), one
  partition per request; each connection for a group of its own; one group with 10
  partitions per request.  Every answer is checked for error 0.

Each run prints its figures; the summary table gives the median and spread (min..max)
of ``--runs`` runs.  Defaults take ~30 s a run on a 2-core machine::

    PYTHONPATH=src python bench/groups_scale.py --runs 3
    PYTHONPATH=src python bench/groups_scale.py --runs 3 --ck-members 100
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from broker_process import BrokerProcess  # noqa: E402
from test_groups_scale import (  # noqa: E402
    TOPIC,
    commit_request,
    frame,
    join_and_sync,
    prepare,
)
from test_groups_wire import (  # noqa: E402
    MEMBER_ID_REQUIRED,
    Wire,
    assignment,
    commit,
    join,
    sync,
)

from pystream.protocol import decode_response  # noqa: E402

SESSION_TIMEOUT_MS = 600_000  # idle members stay members for the whole run
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


# --- the broker's memory and CPU --------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


async def settle_rss(pid: int, seconds: float = 1.0) -> int:
    """RSS once the broker is idle again (log lines flushed, garbage collected)."""
    await asyncio.sleep(seconds)
    return rss_bytes(pid)


# --- (a) idle groups --------------------------------------------------------------------------


async def _member_group(wire: Wire, group: str, partitions: int) -> None:
    """One member joins, syncs (assigning itself the partitions) and commits them."""
    kwargs: dict[str, Any] = {"version": 7, "session_timeout_ms": SESSION_TIMEOUT_MS}
    joined = await join(wire, group, **kwargs)
    assert joined.error_code == MEMBER_ID_REQUIRED, joined
    joined = await join(wire, group, joined.member_id, **kwargs)
    assert joined.error_code == 0, joined
    member = joined.member_id
    plan = {member: assignment(TOPIC, list(range(partitions)))}
    synced = await sync(wire, group, joined.generation_id, member, plan)
    assert synced.error_code == 0, synced
    offsets = {(TOPIC, p): 1000 + p for p in range(partitions)}
    result = await commit(wire, group, offsets, generation=joined.generation_id, member_id=member)
    assert set(result.values()) == {0}, result


async def _simple_group(wire: Wire, group: str, partitions: int) -> None:
    offsets = {(TOPIC, p): 1000 + p for p in range(partitions)}
    result = await commit(wire, group, offsets)
    assert set(result.values()) == {0}, result


async def _make_groups(
    bootstrap: str, prefix: str, count: int, partitions: int, with_member: bool
) -> None:
    make = _member_group if with_member else _simple_group
    connections = 8

    async def worker(index: int) -> None:
        async with Wire(bootstrap, f"idle-{index}") as wire:
            for g in range(index, count, connections):
                await make(wire, f"{prefix}-{g}", partitions)

    await asyncio.gather(*(worker(i) for i in range(connections)))


async def idle_groups(broker: BrokerProcess, count: int, partitions: int) -> dict[str, float]:
    pid = broker.process.pid  # type: ignore[union-attr]
    # Warm up the code paths (first-use allocations are not per group).
    await _make_groups(broker.bootstrap, "warm-member", 50, partitions, True)
    await _make_groups(broker.bootstrap, "warm-simple", 50, partitions, False)
    before = await settle_rss(pid)
    started = time.perf_counter()
    await _make_groups(broker.bootstrap, "idle", count, partitions, True)
    made = time.perf_counter() - started
    with_members = await settle_rss(pid)
    await _make_groups(broker.bootstrap, "simple", count, partitions, False)
    simple = await settle_rss(pid)
    return {
        "rss_before_mib": before / 2**20,
        "kib_per_member_group": (with_members - before) / count / 1024,
        "kib_per_simple_group": (simple - with_members) / count / 1024,
        "member_groups_per_s": count / made,
    }


# --- (b) join storm ---------------------------------------------------------------------------


async def _storm_member(
    bootstrap: str, group: str, index: int, partitions: int, start_at: float
) -> tuple[float, float, int, list[int]]:
    """(first JoinGroup sent, SyncGroup answered, generation, assigned partitions)."""
    async with Wire(bootstrap, f"storm-{index}") as wire:
        # Connected beforehand (a consumer's FindCoordinator connection is open when it joins).
        delay = start_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        first = time.monotonic()
        generation, _, assigned = await join_and_sync(wire, group, partitions, TOPIC)
        return first, time.monotonic(), generation, assigned


def _storm_process(
    bootstrap: str, group: str, indexes: list[int], partitions: int, start_at: float
) -> list[tuple[float, float, int, list[int]]]:
    async def main() -> list[tuple[float, float, int, list[int]]]:
        return await asyncio.gather(
            *(_storm_member(bootstrap, group, i, partitions, start_at) for i in indexes)
        )

    return asyncio.run(main())


def join_storm(broker: BrokerProcess, group: str, members: int, processes: int) -> dict[str, Any]:
    pid = broker.process.pid  # type: ignore[union-attr]
    # Start in 1.5 s: every process is up and connected by then.
    start_at = time.monotonic() + 1.5
    shares = [list(range(i, members, processes)) for i in range(processes)]
    cpu_before = cpu_seconds(pid)
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        results = [
            r
            for rs in pool.starmap(
                _storm_process,
                [(broker.bootstrap, group, share, members, start_at) for share in shares],
            )
            for r in rs
        ]
    cpu = cpu_seconds(pid) - cpu_before
    first = min(r[0] for r in results)
    last = max(r[1] for r in results)
    generations = {r[2] for r in results}
    assigned = sorted(p for r in results for p in r[3])
    assert assigned == list(range(members)), "every partition exactly once"
    assert len(generations) == 1, generations
    return {
        "stable_ms": (last - first) * 1000,
        # The broker's CPU from the processes' start to the end: the load generator's setup
        # (connections) is in the window too, so this bounds the join's CPU from above.
        "broker_cpu_ms": cpu * 1000,
        "generation": generations.pop(),
    }


# Partitions each confluent-kafka consumer holds, shared by the forked processes: one of
# them alone cannot tell an intermediate generation (its consumers all assigned, others not
# yet members) from the last one.
_HELD: Any = None
_DONE_BY: Any = None  # per process: 1 once it saw every consumer assigned


def _ck_process(
    bootstrap: str, group: str, indexes: list[int], partitions: int, start_at: float
) -> float:
    """Consumers ``indexes`` polled by one thread, subscribed at ``start_at``: when the last
    of them got its partitions, once every consumer (of every process) holds some and
    together they hold each partition."""
    from confluent_kafka import Consumer

    assigned_at: dict[int, float] = {}
    consumers = []
    for i in indexes:

        def on_assign(consumer: Any, tps: Any, i: int = i) -> None:
            _HELD[i] = len(tps)
            assigned_at[i] = time.monotonic()

        def on_revoke(consumer: Any, tps: Any, i: int = i) -> None:
            _HELD[i] = 0

        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": 30_000}
        )
        consumers.append((consumer, on_assign, on_revoke))
    time.sleep(max(0.0, start_at - time.monotonic()))
    for consumer, on_assign, on_revoke in consumers:
        consumer.subscribe([TOPIC], on_assign=on_assign, on_revoke=on_revoke)
    members = len(_HELD)
    fair = {partitions // members, -(-partitions // members)}  # what range gives each
    deadline = time.monotonic() + 120
    last = 0.0
    # Until every process saw the final assignment: one that closed its consumers earlier
    # would make the group rebalance again.
    while sum(_DONE_BY) < len(_DONE_BY):
        if time.monotonic() > deadline:
            raise AssertionError(f"not every consumer was assigned in time: {list(_HELD)}")
        held = list(_HELD)
        if not last and set(held) <= fair and sum(held) == partitions:
            last = max(assigned_at.values())
            _DONE_BY[indexes[0] % len(_DONE_BY)] = 1
        for consumer, _, _ in consumers:
            consumer.poll(0)
        time.sleep(0.001)
    for consumer, _, _ in consumers:
        consumer.close()
    return last


def ck_join_storm(
    broker: BrokerProcess, group: str, members: int, processes: int, partitions: int
) -> float:
    """confluent-kafka consumers subscribing at once: ms until every one holds partitions
    (what an application sees: librdkafka's own timers included)."""
    global _HELD, _DONE_BY
    context = multiprocessing.get_context("fork")
    _HELD = context.Array("i", members, lock=False)
    _DONE_BY = context.Array("i", min(processes, members), lock=False)
    start_at = time.monotonic() + 3  # consumers created (and bootstrapped) by then
    shares = [list(range(i, members, processes)) for i in range(processes)]
    with context.Pool(processes) as pool:
        ends = pool.starmap(
            _ck_process,
            [(broker.bootstrap, group, share, partitions, start_at) for share in shares if share],
        )
    return (max(ends) - start_at) * 1000


# --- (c) commit storm -------------------------------------------------------------------------


def _commit_frames(group: str, count: int, partitions: list[int]) -> list[bytes]:
    """``count`` OffsetCommit v8 requests of ``group`` for ``partitions``, offsets growing."""
    return [frame(i, commit_request(group, partitions, i), 8) for i in range(count)]


async def _commit_connection(
    bootstrap: str, frames: list[bytes], per_request: int, start_at: float
) -> tuple[float, float]:
    """Send the frames back to back; (first sent, last answered).  Every answer error 0."""
    host, port = bootstrap.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    delay = start_at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    started = time.monotonic()

    async def send() -> None:
        for k in range(0, len(frames), 256):
            writer.write(b"".join(frames[k : k + 256]))
            await writer.drain()

    sender = asyncio.ensure_future(send())
    expected = b""
    for i in range(len(frames)):
        (size,) = struct.unpack(">i", await reader.readexactly(4))
        payload = await reader.readexactly(size)
        # Success answers differ only in the correlation id: decode the first one fully,
        # then compare the rest byte for byte (the client must not be the bottleneck).
        if not expected or payload[4:] != expected:
            header, response = decode_response(payload, 8, 8)
            assert header.correlation_id == i
            errors = {p.error_code for t in response.topics for p in t.partitions}
            assert errors == {0}, response
            assert len(response.topics[0].partitions) == per_request
            expected = payload[4:]
    ended = time.monotonic()
    await sender
    writer.close()
    return started, ended


def _commit_process(
    bootstrap: str, jobs: list[tuple[str, list[int]]], count: int, start_at: float
) -> list[tuple[float, float]]:
    frames = [_commit_frames(group, count, partitions) for group, partitions in jobs]

    async def main() -> list[tuple[float, float]]:
        return await asyncio.gather(
            *(
                _commit_connection(bootstrap, f, len(partitions), start_at)
                for f, (_, partitions) in zip(frames, jobs, strict=True)
            )
        )

    return asyncio.run(main())


def commit_storm(
    broker: BrokerProcess,
    groups: list[str],
    connections: int,
    processes: int,
    count: int,
    per: int,
) -> dict[str, float]:
    """Connection ``c`` commits for ``groups[c % len(groups)]`` the ``per`` partitions from
    ``c * per`` on (the partitions a consumer was assigned, committed over and over)."""
    pid = broker.process.pid  # type: ignore[union-attr]
    jobs = [
        (groups[c % len(groups)], [(c * per + k) % 100 for k in range(per)])
        for c in range(connections)
    ]
    shares = [jobs[i::processes] for i in range(processes)]
    # Frames are encoded before the start: time enough for 100k of them on a busy machine.
    start_at = time.monotonic() + 2 + connections * count / 20_000
    cpu_before = cpu_seconds(pid)
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        results = [
            r
            for rs in pool.starmap(
                _commit_process,
                [(broker.bootstrap, share, count, start_at) for share in shares if share],
            )
            for r in rs
        ]
    cpu = cpu_seconds(pid) - cpu_before
    elapsed = max(r[1] for r in results) - min(r[0] for r in results)
    total = connections * count
    return {
        "commits_per_s": total / elapsed,
        "offsets_per_s": total * per / elapsed,
        "broker_cpu_us_per_commit": cpu / total * 1e6,
    }


# --- runs and the table -----------------------------------------------------------------------


def one_run(args: argparse.Namespace, run: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    partitions = max(100, args.members)
    with tempfile.TemporaryDirectory(prefix="groups-scale-") as tmp:
        broker = BrokerProcess(
            Path(tmp) / "broker",
            {
                "group.initial.rebalance.delay.ms": "0",
                "num.partitions": str(partitions),
                "group.max.session.timeout.ms": str(SESSION_TIMEOUT_MS),
            },
        ).start()
        try:
            asyncio.run(prepare(broker.bootstrap))
            idle = asyncio.run(idle_groups(broker, args.groups, args.group_partitions))
            figures.update(idle)
            storm = join_storm(broker, f"storm-{run}", args.members, args.join_procs)
            figures["join_stable_ms"] = storm["stable_ms"]
            figures["join_broker_cpu_ms"] = storm["broker_cpu_ms"]
            if args.ck_members:
                figures["ck_join_ms"] = ck_join_storm(
                    broker, f"ck-storm-{run}", args.ck_members, args.ck_procs, partitions
                )
            conns, procs, count = args.commit_conns, args.commit_procs, args.commits
            one_group = [f"commit-{run}"]  # the members of one group commit together
            own_groups = [f"commit-{run}-{c}" for c in range(conns)]  # a group each
            for tag, groups, per in (
                ("1", one_group, 1),
                ("own", own_groups, 1),
                ("10", one_group, 10),
            ):
                commits = commit_storm(broker, groups, conns, procs, count, per)
                figures[f"commits_per_s_{tag}"] = commits["commits_per_s"]
                figures[f"offsets_per_s_{tag}"] = commits["offsets_per_s"]
                figures[f"cpu_us_per_commit_{tag}"] = commits["broker_cpu_us_per_commit"]
            figures["rss_end_mib"] = rss_bytes(broker.process.pid) / 2**20  # type: ignore[union-attr]
        finally:
            broker.stop()
    return figures


ROWS = [
    ("rss_before_mib", "broker RSS before the groups (MiB)", "{:.1f}"),
    ("kib_per_member_group", "RSS per idle group: 1 member, {gp} offsets (KiB)", "{:.1f}"),
    ("kib_per_simple_group", "RSS per empty group with {gp} offsets only (KiB)", "{:.1f}"),
    ("member_groups_per_s", "groups joined+synced+committed per s (8 conns)", "{:,.0f}"),
    ("join_stable_ms", "{m} members join one group: first Join -> last Sync (ms)", "{:.0f}"),
    ("join_broker_cpu_ms", "  broker CPU in that window incl. connects (ms)", "{:.0f}"),
    ("ck_join_ms", "{ck} confluent-kafka consumers subscribe: all assigned (ms)", "{:.0f}"),
    ("commits_per_s_1", "OffsetCommit pipelined, one group, 1 partition/req (req/s)", "{:,.0f}"),
    ("cpu_us_per_commit_1", "  broker CPU per request (us)", "{:.1f}"),
    (
        "commits_per_s_own",
        "OffsetCommit pipelined, a group per conn, 1 partition (req/s)",
        "{:,.0f}",
    ),
    ("cpu_us_per_commit_own", "  broker CPU per request (us)", "{:.1f}"),
    ("commits_per_s_10", "OffsetCommit pipelined, one group, 10 partitions/req (req/s)", "{:,.0f}"),
    ("offsets_per_s_10", "  offsets committed per s", "{:,.0f}"),
    ("cpu_us_per_commit_10", "  broker CPU per request (us)", "{:.1f}"),
    ("rss_end_mib", "broker RSS at the end (MiB)", "{:.1f}"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--groups", type=int, default=1000, help="idle groups of each kind")
    parser.add_argument("--group-partitions", type=int, default=4, help="offsets per idle group")
    parser.add_argument("--members", type=int, default=100, help="members of the join storm")
    parser.add_argument("--join-procs", type=int, default=2)
    parser.add_argument(
        "--ck-members",
        type=int,
        default=0,
        help="confluent-kafka consumers to join (0: skip; <= --members)",
    )
    parser.add_argument("--ck-procs", type=int, default=4)
    parser.add_argument("--commit-conns", type=int, default=8)
    parser.add_argument("--commit-procs", type=int, default=2)
    parser.add_argument("--commits", type=int, default=5000, help="requests per connection")
    args = parser.parse_args()
    runs = []
    for run in range(args.runs):
        started = time.perf_counter()
        figures = one_run(args, run)
        runs.append(figures)
        shown = ", ".join(f"{k}={v:,.1f}" for k, v in figures.items())
        print(f"run {run + 1}/{args.runs} ({time.perf_counter() - started:.0f} s): {shown}")
    print()
    print(
        f"groups at scale: median (min .. max) of {args.runs} run(s); "
        f"{args.commit_conns} commit connections in {args.commit_procs} process(es) x "
        f"{args.commits:,} requests; join storm in {args.join_procs} process(es)"
    )
    width = 64
    print(f"{'':{width}}  {'median':>10}  {'min .. max':>22}")
    for key, label, fmt in ROWS:
        values = [r[key] for r in runs if key in r]
        if not values:
            continue
        label = label.format(gp=args.group_partitions, m=args.members, ck=args.ck_members)
        spread = f"{fmt.format(min(values))} .. {fmt.format(max(values))}"
        print(f"{label:{width}}  {fmt.format(statistics.median(values)):>10}  {spread:>22}")


if __name__ == "__main__":
    main()
