"""Consumer group membership, client side of the classic protocol.

A background task keeps the consumer in its group:

1. **FindCoordinator** (key type 0) on any broker, then connect to the coordinator;
2. **JoinGroup** with one protocol per configured assignor (its subscription bytes).
   v4+ brokers answer the first join with MEMBER_ID_REQUIRED and a member id: join
   again with it.  The broker holds the request until the group is complete;
3. the leader (``leader == member_id``) refreshes metadata for every topic any member
   subscribes to and runs the assignor the group chose; **SyncGroup** sends the
   assignments and returns this member's own;
4. eager protocols (range, roundrobin) revoked everything before joining and now
   assign the new set; cooperative-sticky revokes only what moved away and, if
   anything did, joins once more so the partitions can move (KIP-429);
5. a **Heartbeat** task every ``heartbeat_interval_ms``: REBALANCE_IN_PROGRESS
   means join again; ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID mean the membership
   is gone (partitions lost); NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE mean find
   the coordinator again.  Not polling for ``max_poll_interval_ms`` leaves the group
   (like the Java client); the next ``poll()`` joins again;
6. **OffsetCommit** / **OffsetFetch** for positions (auto-commit every
   ``auto_commit_interval_ms``, before an eager revoke, and on close);
7. **LeaveGroup** on close.

Errors that cannot be retried (an API the broker does not have, authorization,
inconsistent protocols) are kept and raised from the next ``poll()``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from pystream.errors import (
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
    error_for_code,
)
from pystream.protocol.messages.find_coordinator import FindCoordinatorRequest
from pystream.protocol.messages.heartbeat import HeartbeatRequest
from pystream.protocol.messages.join_group import JoinGroupRequest
from pystream.protocol.messages.leave_group import LeaveGroupRequest
from pystream.protocol.messages.offset_commit import OffsetCommitRequest
from pystream.protocol.messages.offset_fetch import OffsetFetchRequest
from pystream.protocol.messages.sync_group import SyncGroupRequest

from .assignors import (
    Assignor,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from .connection import BrokerConnection
from .core import ClientCore
from .errors import KafkaConnectionError
from .subscription import SubscriptionState
from .types import OffsetAndMetadata, TopicPartition

__all__ = ["GroupCoordinator"]

log = logging.getLogger("pystream.client.group")

NONE = 0
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
ILLEGAL_GENERATION = 22
UNKNOWN_MEMBER_ID = 25
REBALANCE_IN_PROGRESS = 27
MEMBER_ID_REQUIRED = 79
FENCED_INSTANCE_ID = 82
UNSTABLE_OFFSET_COMMIT = 88
_COORDINATOR_ERRORS = frozenset({COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR})
_RETRY = frozenset({COORDINATOR_LOAD_IN_PROGRESS, UNSTABLE_OFFSET_COMMIT, 7, 13})

Listener = Callable[[list[TopicPartition]], Any]


async def call_listener(listener: Listener | None, partitions: list[TopicPartition]) -> None:
    """Run a rebalance callback (plain or async); its errors are logged, not raised."""
    if listener is None:
        return
    try:
        result = listener(sorted(partitions))
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("rebalance listener %r failed", listener)


class GroupCoordinator:
    """Membership of one consumer in one group, run as a task on the client's loop."""

    def __init__(
        self,
        core: ClientCore,
        subscriptions: SubscriptionState,
        *,
        group_id: str,
        group_instance_id: str | None,
        assignors: list[Assignor],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        heartbeat_interval_ms: int,
        enable_auto_commit: bool,
        auto_commit_interval_ms: int,
        on_assign: Listener | None = None,
        on_revoke: Listener | None = None,
        on_lost: Listener | None = None,
        on_partitions_dropped: Callable[[Iterable[TopicPartition]], None] | None = None,
    ) -> None:
        self.core = core
        self.subs = subscriptions
        self.group_id = group_id
        self.group_instance_id = group_instance_id
        self.assignors = assignors
        # Cooperative only if every configured assignor supports it (as in Java).
        self.cooperative = all(a.cooperative for a in assignors)
        self.session_timeout_ms = session_timeout_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.heartbeat_interval = heartbeat_interval_ms / 1000
        self.enable_auto_commit = enable_auto_commit
        self.auto_commit_interval = auto_commit_interval_ms / 1000
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self.on_lost = on_lost
        self.on_partitions_dropped = on_partitions_dropped
        self.member_id = ""
        self.generation = -1
        self.protocol: str | None = None
        self.leader_id: str | None = None
        self.backoff = core.config.retry_backoff_ms / 1000
        self.last_poll = time.monotonic()
        self.error: Exception | None = None
        self.stable = asyncio.Event()  # set while the member has a current assignment
        self._conn: BrokerConnection | None = None
        self._rejoin = asyncio.Event()  # set by subscribe() and by rebalance triggers
        self._left_for_poll_timeout = False
        self._assigned_topics: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._auto_commit: asyncio.Task[None] | None = None
        self._closing = False
        core.metadata_listeners.append(self._check_metadata)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run())
        if self.enable_auto_commit:
            self._auto_commit = loop.create_task(self._auto_commit_loop())

    async def close(self, leave: bool = True) -> None:
        """Commit (auto-commit), stop the tasks, leave the group."""
        self._closing = True
        for task in (self._task, self._heartbeat, self._auto_commit):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        if self.enable_auto_commit and self.generation >= 0:
            try:
                await self.commit(None)
            except Exception as exc:
                log.warning("final auto-commit failed: %s", exc)
        if self.subs.assignment and not self.subs.manual:
            # Leaving gives every partition back (Java calls onPartitionsRevoked too).
            await call_listener(self.on_revoke, list(self.subs.assignment))
        if leave and self.member_id:
            try:
                await self._leave("the consumer is closing")
            except Exception as exc:
                log.info("leaving group %r failed: %s", self.group_id, exc)

    def request_rejoin(self, reason: str) -> None:
        if not self._rejoin.is_set():
            log.info("group %r: rejoining (%s)", self.group_id, reason)
        self.stable.clear()
        self._rejoin.set()

    def polled(self) -> None:
        """The application called poll(): the max.poll.interval clock restarts."""
        self.last_poll = time.monotonic()
        if self._left_for_poll_timeout:
            self._left_for_poll_timeout = False
            self.request_rejoin("poll() called again after max_poll_interval_ms")

    def needs_loop_for_poll(self) -> bool:
        return self._left_for_poll_timeout

    def raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    # ------------------------------------------------------------------ the coordinator

    async def coordinator(self) -> BrokerConnection:
        """The connection to the group coordinator (found with FindCoordinator)."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        for _ in range(100):
            any_conn = await self.core.any_connection()
            version = any_conn.version(10)
            body = FindCoordinatorRequest(key=self.group_id, key_type=0)
            response = await any_conn.request(10, body, version)
            code = response.error_code
            if code == NONE:
                self._conn = await self.core.connect(response.host, response.port)
                # The group APIs must exist there too: fail clearly if not.
                self._conn.version(11)
                return self._conn
            if code in _COORDINATOR_ERRORS or code in _RETRY:
                await asyncio.sleep(self.backoff)
                continue
            raise error_for_code(code)(
                f"FindCoordinator for group {self.group_id!r}: {response.error_message or ''}"
            )
        raise error_for_code(COORDINATOR_NOT_AVAILABLE)(
            f"no coordinator for group {self.group_id!r} after many attempts"
        )

    def _coordinator_lost(self) -> None:
        if self._conn is not None:
            self._conn = None

    async def _request(
        self, api_key: int, build: Callable[[int], Any], timeout: float | None = None
    ) -> Any:
        conn = await self.coordinator()
        version = conn.version(api_key)
        try:
            return await conn.request(api_key, build(version), version, timeout)
        except KafkaConnectionError:
            self._coordinator_lost()
            raise

    # ------------------------------------------------------------------ membership loop

    async def _run(self) -> None:
        while not self._closing:
            await self._rejoin.wait()
            try:
                await self._join_group()
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:
                self._rejoin.set()
                self._coordinator_lost()
                if exc.retriable:
                    log.info("group %r: join failed (%s); retrying", self.group_id, exc)
                    await asyncio.sleep(self.backoff)
                else:
                    # Not going to fix itself (missing API, authorization, bad config):
                    # poll() raises it; keep trying slowly in case the broker changes.
                    log.error("group %r: %s", self.group_id, exc)
                    self.error = exc
                    await asyncio.sleep(max(self.backoff * 10, 1.0))
            except Exception as exc:
                log.exception("group %r: unexpected error while joining", self.group_id)
                self._rejoin.set()
                self.error = exc
                await asyncio.sleep(max(self.backoff * 10, 1.0))

    async def _prepare_join(self) -> None:
        """Before JoinGroup: eager protocols commit and give up every partition."""
        if self.cooperative or not self.subs.assignment:
            return
        revoked = list(self.subs.assignment)
        if self.enable_auto_commit and self.generation >= 0:
            try:
                await self.commit(None)
            except Exception as exc:
                log.warning("commit before rebalance failed: %s", exc)
        await call_listener(self.on_revoke, revoked)
        self.subs.set_assignment([])
        if self.on_partitions_dropped is not None:
            self.on_partitions_dropped(revoked)

    def _metadata(self, assignor: Assignor) -> bytes:
        owned = list(self.subs.assignment) if self.cooperative else []
        return encode_subscription(
            sorted(self.subs.topics),
            owned,
            self.generation,
            assignor.user_data(self.generation),
        )

    async def _join_group(self) -> None:
        self._rejoin.clear()
        self.stable.clear()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        if not self.subs.topics:
            # Unsubscribed: leave, so the group gives the partitions to the others.
            if self.member_id and self.generation >= 0:
                try:
                    await self._leave("the consumer unsubscribed")
                except KafkaError as exc:
                    log.info("leaving group %r failed: %s", self.group_id, exc)
            return
        await self._prepare_join()
        while True:
            join_timeout = self.rebalance_timeout_ms / 1000 + 5

            def build_join(version: int) -> JoinGroupRequest:
                return JoinGroupRequest(
                    group_id=self.group_id,
                    session_timeout_ms=self.session_timeout_ms,
                    rebalance_timeout_ms=self.rebalance_timeout_ms,
                    member_id=self.member_id,
                    group_instance_id=self.group_instance_id,
                    protocol_type="consumer",
                    protocols=[
                        JoinGroupRequest.JoinGroupRequestProtocol(
                            name=a.name, metadata=self._metadata(a)
                        )
                        for a in self.assignors
                    ],
                )

            response = await self._request(11, build_join, join_timeout)
            code = response.error_code
            if code == MEMBER_ID_REQUIRED:
                # KIP-394: the broker assigned an id; join again with it.
                self.member_id = response.member_id
                continue
            if code == UNKNOWN_MEMBER_ID:
                self.member_id = ""
                continue
            if code in _COORDINATOR_ERRORS:
                self._coordinator_lost()
                await asyncio.sleep(self.backoff)
                continue
            if code in (REBALANCE_IN_PROGRESS, *_RETRY):
                await asyncio.sleep(self.backoff)
                continue
            if code == ILLEGAL_GENERATION:
                self.generation = -1
                continue
            if code:
                raise error_for_code(code)(f"JoinGroup for group {self.group_id!r}")
            self.member_id = response.member_id
            self.leader_id = response.leader
            protocol = response.protocol_name
            generation = response.generation_id
            assignments: dict[str, list[TopicPartition]] = {}
            if response.leader == response.member_id:
                assignments = await self._lead(protocol, response.members)
            sync = await self._sync(generation, protocol, assignments)
            if sync is None:
                continue  # the group moved on: join again
            self.generation = generation
            self.protocol = protocol
            await self._apply(sync)
            return

    async def _lead(self, protocol: str, members: list[Any]) -> dict[str, list[TopicPartition]]:
        """Run the group's assignor over every member's subscription (the leader's job)."""
        assignor = next((a for a in self.assignors if a.name == protocol), None)
        if assignor is None:
            raise error_for_code(23)(
                f"group {self.group_id!r} chose assignor {protocol!r}, which this consumer "
                f"did not offer"
            )
        subscriptions = [
            decode_subscription(m.member_id, m.metadata, m.group_instance_id) for m in members
        ]
        topics = {t for s in subscriptions for t in s.topics}
        await self.core.refresh_metadata(topics)
        counts = {
            t: len(self.core.metadata.topics[t].partitions)
            for t in topics
            if t in self.core.metadata.topics
        }
        self._assigned_topics = counts
        assignment = assignor.assign(subscriptions, counts)
        log.info(
            "group %r: leader assigned %d partitions with %s to %d members",
            self.group_id,
            sum(len(v) for v in assignment.values()),
            protocol,
            len(subscriptions),
        )
        return assignment

    async def _sync(
        self, generation: int, protocol: str, assignments: dict[str, list[TopicPartition]]
    ) -> list[TopicPartition] | None:
        def build(version: int) -> SyncGroupRequest:
            return SyncGroupRequest(
                group_id=self.group_id,
                generation_id=generation,
                member_id=self.member_id,
                group_instance_id=self.group_instance_id,
                protocol_type="consumer",
                protocol_name=protocol,
                assignments=[
                    SyncGroupRequest.SyncGroupRequestAssignment(
                        member_id=member, assignment=encode_assignment(parts)
                    )
                    for member, parts in assignments.items()
                ],
            )

        response = await self._request(14, build, self.rebalance_timeout_ms / 1000 + 5)
        code = response.error_code
        if code == NONE:
            return decode_assignment(response.assignment)
        if code in (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, FENCED_INSTANCE_ID):
            if code == UNKNOWN_MEMBER_ID:
                self.member_id = ""
            self.generation = -1
            await self._lose_partitions()
            return None
        if code == REBALANCE_IN_PROGRESS:
            return None
        if code in _COORDINATOR_ERRORS:
            self._coordinator_lost()
            return None
        raise error_for_code(code)(f"SyncGroup for group {self.group_id!r}")

    async def _apply(self, assigned: list[TopicPartition]) -> None:
        owned = set(self.subs.assignment)
        new = set(assigned)
        revoked = owned - new
        added = new - owned
        if self.cooperative and revoked:
            if self.enable_auto_commit:
                try:
                    await self.commit({tp: None for tp in revoked})
                except Exception as exc:
                    log.warning("commit before revoking failed: %s", exc)
            await call_listener(self.on_revoke, list(revoked))
        self.subs.set_assignment(sorted(new))
        if revoked and self.on_partitions_dropped is not None:
            self.on_partitions_dropped(revoked)
        await call_listener(self.on_assign, list(added if self.cooperative else new))
        log.info(
            "group %r generation %d: member %s assigned %s",
            self.group_id,
            self.generation,
            self.member_id,
            sorted(new),
        )
        self.stable.set()
        self._heartbeat = asyncio.get_running_loop().create_task(self._heartbeat_loop())
        if self.cooperative and revoked:
            # KIP-429: the revoked partitions can be given out only after this member
            # confirms it let them go, by joining again.
            self.request_rejoin("partitions revoked in a cooperative rebalance")

    async def _lose_partitions(self) -> None:
        """The membership is gone: partitions are lost, not revoked (no commit)."""
        lost = list(self.subs.assignment)
        if not lost:
            return
        await call_listener(self.on_lost or self.on_revoke, lost)
        self.subs.set_assignment([])
        if self.on_partitions_dropped is not None:
            self.on_partitions_dropped(lost)

    # ------------------------------------------------------------------ heartbeats

    async def _heartbeat_loop(self) -> None:
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            if time.monotonic() - self.last_poll > self.rebalance_timeout_ms / 1000:
                log.warning(
                    "group %r: poll() not called for max_poll_interval_ms (%d ms): leaving the "
                    "group so its partitions go to live members; poll() again to rejoin",
                    self.group_id,
                    self.rebalance_timeout_ms,
                )
                await self._leave("max_poll_interval_ms exceeded")
                await self._lose_partitions()
                self._left_for_poll_timeout = True
                return
            try:
                response = await self._request(
                    12,
                    lambda v: HeartbeatRequest(
                        group_id=self.group_id,
                        generation_id=self.generation,
                        member_id=self.member_id,
                        group_instance_id=self.group_instance_id,
                    ),
                )
            except KafkaError as exc:
                log.info("group %r: heartbeat failed: %s", self.group_id, exc)
                if time.monotonic() - last_ok > self.session_timeout_ms / 1000:
                    await self._lose_partitions()
                    self.generation = -1
                    self.request_rejoin("no heartbeat within session_timeout_ms")
                    return
                continue
            code = response.error_code
            if code == NONE:
                last_ok = time.monotonic()
                continue
            if code == REBALANCE_IN_PROGRESS:
                self.request_rejoin("the group is rebalancing")
                return
            if code in (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID):
                if code == UNKNOWN_MEMBER_ID:
                    self.member_id = ""
                self.generation = -1
                await self._lose_partitions()
                self.request_rejoin(f"heartbeat error {error_for_code(code).error_name}")
                return
            if code in _COORDINATOR_ERRORS:
                self._coordinator_lost()
                continue
            log.warning("group %r: heartbeat error %d", self.group_id, code)

    async def _leave(self, reason: str) -> None:
        member_id = self.member_id
        if not member_id:
            return

        def build(version: int) -> LeaveGroupRequest:
            return LeaveGroupRequest(
                group_id=self.group_id,
                member_id=member_id,
                members=[
                    LeaveGroupRequest.MemberIdentity(
                        member_id=member_id,
                        group_instance_id=self.group_instance_id,
                        reason=reason,
                    )
                ],
            )

        if self.group_instance_id is None:
            # Static members keep their id across restarts and do not leave (KIP-345).
            await self._request(13, build)
        self.member_id = "" if self.group_instance_id is None else self.member_id
        self.generation = -1
        self.stable.clear()

    def _check_metadata(self) -> None:
        """Leader: a subscribed topic's partition count changed -> rebalance (as in Java)."""
        if self.leader_id is None or self.leader_id != self.member_id or not self.stable.is_set():
            return
        topics = self.core.metadata.topics
        for topic, count in self._assigned_topics.items():
            info = topics.get(topic)
            if info is not None and len(info.partitions) != count:
                self.request_rejoin(f"topic {topic!r} now has {len(info.partitions)} partitions")
                return

    # ------------------------------------------------------------------ offsets

    async def commit(
        self, offsets: dict[TopicPartition, OffsetAndMetadata | int | None] | None
    ) -> None:
        """Commit ``offsets`` (None: every current position; a None value: that position)."""
        positions = self.subs.positions()
        if offsets is None:
            wanted = {tp: OffsetAndMetadata(pos) for tp, pos in positions.items()}
        else:
            wanted = {}
            for tp, value in offsets.items():
                tp = TopicPartition(*tp)
                if value is None:
                    if tp in positions:
                        wanted[tp] = OffsetAndMetadata(positions[tp])
                elif isinstance(value, int):
                    wanted[tp] = OffsetAndMetadata(value)
                else:
                    wanted[tp] = value
        if not wanted:
            return
        by_topic: dict[str, list[Any]] = defaultdict(list)
        for tp, om in sorted(wanted.items()):
            by_topic[tp.topic].append(
                OffsetCommitRequest.OffsetCommitRequestPartition(
                    partition_index=tp.partition,
                    committed_offset=om.offset,
                    committed_leader_epoch=om.leader_epoch,
                    committed_metadata=om.metadata,
                )
            )
        manual = self.subs.manual
        for _attempt in range(10):

            def build(version: int) -> OffsetCommitRequest:
                return OffsetCommitRequest(
                    group_id=self.group_id,
                    generation_id_or_member_epoch=-1 if manual else self.generation,
                    member_id="" if manual else self.member_id,
                    group_instance_id=None if manual else self.group_instance_id,
                    retention_time_ms=-1,
                    topics=[
                        OffsetCommitRequest.OffsetCommitRequestTopic(name=t, partitions=ps)
                        for t, ps in by_topic.items()
                    ],
                )

            try:
                response = await self._request(8, build)
            except KafkaConnectionError:
                await asyncio.sleep(self.backoff)
                continue
            codes = {p.error_code for t in response.topics for p in t.partitions} - {NONE}
            if not codes:
                return
            code = min(codes)
            if code in _COORDINATOR_ERRORS:
                self._coordinator_lost()
                await asyncio.sleep(self.backoff)
                continue
            if code in _RETRY:
                await asyncio.sleep(self.backoff)
                continue
            if code in (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID):
                self.request_rejoin("commit refused by the group")
                cls = {
                    REBALANCE_IN_PROGRESS: RebalanceInProgressError,
                    ILLEGAL_GENERATION: IllegalGenerationError,
                    UNKNOWN_MEMBER_ID: UnknownMemberIdError,
                }[code]
                raise cls(
                    f"commit failed: the group {self.group_id!r} rebalanced and these partitions "
                    f"may belong to another member now; poll() again and commit what it returns"
                )
            raise error_for_code(code)(f"OffsetCommit for group {self.group_id!r}")
        raise error_for_code(COORDINATOR_NOT_AVAILABLE)(
            f"OffsetCommit for group {self.group_id!r}: no coordinator answered"
        )

    async def fetch_committed(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        """The committed offsets of ``partitions`` (None where nothing is committed)."""
        by_topic: dict[str, list[int]] = defaultdict(list)
        for tp in partitions:
            by_topic[tp.topic].append(tp.partition)
        if not by_topic:
            return {}
        for _ in range(20):

            def build(version: int) -> OffsetFetchRequest:
                return OffsetFetchRequest(
                    group_id=self.group_id,
                    topics=[
                        OffsetFetchRequest.OffsetFetchRequestTopic(name=t, partition_indexes=ps)
                        for t, ps in by_topic.items()
                    ],
                    require_stable=True,
                )

            try:
                response = await self._request(9, build)
            except KafkaConnectionError:
                await asyncio.sleep(self.backoff)
                continue
            code = response.error_code
            codes = {p.error_code for t in response.topics for p in t.partitions}
            code = code or max(codes - {NONE}, default=NONE)
            if code in _COORDINATOR_ERRORS:
                self._coordinator_lost()
                await asyncio.sleep(self.backoff)
                continue
            if code in _RETRY:
                await asyncio.sleep(self.backoff)
                continue
            if code:
                raise error_for_code(code)(f"OffsetFetch for group {self.group_id!r}")
            out: dict[TopicPartition, OffsetAndMetadata | None] = {}
            for t in response.topics:
                for p in t.partitions:
                    tp = TopicPartition(t.name, p.partition_index)
                    out[tp] = (
                        None
                        if p.committed_offset < 0
                        else OffsetAndMetadata(
                            p.committed_offset, p.metadata or "", p.committed_leader_epoch
                        )
                    )
            return out
        raise error_for_code(COORDINATOR_NOT_AVAILABLE)(
            f"OffsetFetch for group {self.group_id!r}: no coordinator answered"
        )

    async def _auto_commit_loop(self) -> None:
        last: dict[TopicPartition, int] = {}
        while True:
            await asyncio.sleep(self.auto_commit_interval)
            if not self.stable.is_set() and not self.subs.manual:
                continue
            positions = self.subs.positions()
            changed = {tp: pos for tp, pos in positions.items() if last.get(tp) != pos}
            if not changed:
                continue
            try:
                await self.commit({tp: OffsetAndMetadata(p) for tp, p in changed.items()})
                last.update(changed)
            except Exception as exc:
                log.warning("auto-commit for group %r failed: %s", self.group_id, exc)
