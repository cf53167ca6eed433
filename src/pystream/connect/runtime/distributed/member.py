"""A distributed worker's membership in its Connect group (Kafka's
``WorkerGroupMember``/``WorkerCoordinator``), on pystream's client connections.

The consumer's group machinery is tied to protocol type ``consumer`` and partition
subscriptions, so this is a small dedicated member of protocol type ``connect``:
FindCoordinator, JoinGroup (metadata from ``metadata()``), the leader's
``assign(members)``, SyncGroup, then Heartbeat every ``heartbeat.interval.ms``.
Eager: ``revoke()`` (stop everything) runs before each join, ``assigned(...)`` after
each sync.  A heartbeat answered REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION or
UNKNOWN_MEMBER_ID, or none answered within the session timeout, means join again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ....client.connection import BrokerConnection
from ....client.core import ClientCore
from ....client.errors import KafkaConnectionError
from ....errors import KafkaError, error_for_code
from ....protocol.messages.heartbeat import HeartbeatRequest
from ....protocol.messages.join_group import JoinGroupRequest
from ....protocol.messages.leave_group import LeaveGroupRequest
from ....protocol.messages.sync_group import SyncGroupRequest
from .protocol import PROTOCOL

__all__ = ["ConnectGroupMember"]

log = logging.getLogger("pystream.connect.member")

ILLEGAL_GENERATION = 22
UNKNOWN_MEMBER_ID = 25
REBALANCE_IN_PROGRESS = 27
MEMBER_ID_REQUIRED = 79
_COORDINATOR_MOVED = frozenset({15, 16})  # COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
_RETRY = frozenset({7, 13, 14})  # REQUEST_TIMED_OUT, NETWORK_EXCEPTION, LOADING

Members = list[tuple[str, bytes]]


class ConnectGroupMember:
    """One worker in group ``group_id`` (see the module docstring)."""

    def __init__(
        self,
        core: ClientCore,
        group_id: str,
        *,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        heartbeat_interval_ms: int,
        metadata: Callable[[], bytes],
        assign: Callable[[Members], Awaitable[dict[str, bytes]]],
        assigned: Callable[[int, bytes], Awaitable[None]],
        revoke: Callable[[], Awaitable[None]],
    ) -> None:
        self.core = core
        self.group_id = group_id
        self.session_timeout_ms = session_timeout_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.heartbeat_interval = heartbeat_interval_ms / 1000
        self.metadata = metadata
        self.assign = assign
        self.assigned = assigned
        self.revoke = revoke
        self.member_id = ""
        self.generation = -1
        self.leader_id = ""
        self.backoff = max(core.config.retry_backoff_ms / 1000, 0.1)
        self._conn: BrokerConnection | None = None
        self._rejoin = asyncio.Event()
        self._rejoin.set()
        self._task: asyncio.Task[None] | None = None
        self._starting: asyncio.Future[None] | None = None
        self._closing = False

    @property
    def is_leader(self) -> bool:
        return bool(self.member_id) and self.member_id == self.leader_id

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="connect-member")

    def request_rejoin(self, reason: str) -> None:
        if not self._rejoin.is_set():
            log.info("group %r: rebalancing (%s)", self.group_id, reason)
        self._rejoin.set()

    async def pause(self) -> None:
        """Stop taking part (no more joins or heartbeats); the worker then stops its
        work and leaves (:meth:`leave`)."""
        self._closing = True
        for task in (self._task, self._starting):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass

    async def leave(self) -> None:
        """Leave the group (the others rebalance at once, not after the session timeout)."""
        await self.pause()
        if self.member_id:
            member_id = self.member_id
            try:
                await self._request(
                    13,
                    lambda v: LeaveGroupRequest(
                        group_id=self.group_id,
                        member_id=member_id,
                        members=[
                            LeaveGroupRequest.MemberIdentity(
                                member_id=member_id, reason="the worker is stopping"
                            )
                        ],
                    ),
                )
            except Exception as exc:
                log.info("leaving group %r failed: %s", self.group_id, exc)

    async def _request(
        self, api_key: int, build: Callable[[int], Any], timeout: float | None = None
    ) -> Any:
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = await self.core.find_coordinator(self.group_id, 0)
        version = conn.version(api_key)
        try:
            return await conn.request(api_key, build(version), version, timeout)
        except KafkaConnectionError:
            self._conn = None
            raise

    async def _run(self) -> None:
        while not self._closing:
            await self._rejoin.wait()
            try:
                await self._join()
            except asyncio.CancelledError:
                raise
            except (KafkaError, KafkaConnectionError, OSError) as exc:
                log.info("group %r: join failed (%s); retrying", self.group_id, exc)
                self._conn = None
                self._rejoin.set()
                await asyncio.sleep(self.backoff)
                continue
            except Exception:
                log.exception("group %r: unexpected error while joining", self.group_id)
                self._rejoin.set()
                await asyncio.sleep(1.0)
                continue
            await self._heartbeat()

    async def _join(self) -> None:
        self._rejoin.clear()
        # Eager: everything this worker runs stops before it joins.
        await self.revoke()
        while True:
            metadata = self.metadata()
            response = await self._request(
                11,
                lambda v, metadata=metadata: JoinGroupRequest(
                    group_id=self.group_id,
                    session_timeout_ms=self.session_timeout_ms,
                    rebalance_timeout_ms=self.rebalance_timeout_ms,
                    member_id=self.member_id,
                    protocol_type="connect",
                    protocols=[
                        JoinGroupRequest.JoinGroupRequestProtocol(name=PROTOCOL, metadata=metadata)
                    ],
                ),
                self.rebalance_timeout_ms / 1000 + 5,
            )
            code = response.error_code
            if code == MEMBER_ID_REQUIRED:
                self.member_id = response.member_id  # KIP-394: join again with it
                continue
            if code in (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION):
                self.member_id = ""
                continue
            if code in _COORDINATOR_MOVED:
                self._conn = None
                await asyncio.sleep(self.backoff)
                continue
            if code == REBALANCE_IN_PROGRESS or code in _RETRY:
                await asyncio.sleep(self.backoff)
                continue
            if code:
                raise error_for_code(code)(f"JoinGroup for Connect group {self.group_id!r}")
            self.member_id = response.member_id
            self.leader_id = response.leader
            generation = response.generation_id
            assignments: dict[str, bytes] = {}
            if self.is_leader:
                members = [(m.member_id, bytes(m.metadata)) for m in response.members]
                assignments = await self.assign(members)
            sync = await self._request(
                14,
                lambda v, generation=generation, assignments=assignments: SyncGroupRequest(
                    group_id=self.group_id,
                    generation_id=generation,
                    member_id=self.member_id,
                    protocol_type="connect",
                    protocol_name=PROTOCOL,
                    assignments=[
                        SyncGroupRequest.SyncGroupRequestAssignment(member_id=m, assignment=a)
                        for m, a in assignments.items()
                    ],
                ),
                self.rebalance_timeout_ms / 1000 + 5,
            )
            if sync.error_code in (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID):
                if sync.error_code == UNKNOWN_MEMBER_ID:
                    self.member_id = ""
                continue
            if sync.error_code in _COORDINATOR_MOVED:
                self._conn = None
                continue
            if sync.error_code:
                raise error_for_code(sync.error_code)(
                    f"SyncGroup for Connect group {self.group_id!r}"
                )
            self.generation = generation
            log.info(
                "group %r generation %d: joined as %s (leader %s)",
                self.group_id,
                generation,
                self.member_id,
                self.leader_id,
            )
            # Heartbeats go on while the assignment starts (that can take a while).
            self._starting = asyncio.ensure_future(
                self.assigned(generation, bytes(sync.assignment))
            )
            return

    async def _heartbeat(self) -> None:
        last_ok = time.monotonic()
        while not self._rejoin.is_set():
            try:
                await asyncio.wait_for(self._rejoin.wait(), self.heartbeat_interval)
                break
            except TimeoutError:
                pass
            try:
                response = await self._request(
                    12,
                    lambda v: HeartbeatRequest(
                        group_id=self.group_id,
                        generation_id=self.generation,
                        member_id=self.member_id,
                    ),
                    self.heartbeat_interval * 3 + 1,
                )
            except (KafkaError, KafkaConnectionError, OSError) as exc:
                log.info("group %r: heartbeat failed: %s", self.group_id, exc)
                self._conn = None
                if time.monotonic() - last_ok > self.session_timeout_ms / 1000:
                    self.generation = -1
                    self.request_rejoin("no heartbeat answered within session.timeout.ms")
                continue
            code = response.error_code
            if code == 0:
                last_ok = time.monotonic()
            elif code == REBALANCE_IN_PROGRESS:
                self.request_rejoin("the group is rebalancing")
            elif code in (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID):
                if code == UNKNOWN_MEMBER_ID:
                    self.member_id = ""
                self.generation = -1
                self.request_rejoin(f"heartbeat error {error_for_code(code).error_name}")
            elif code in _COORDINATOR_MOVED:
                self._conn = None
        # Wait for the assignment being started before revoking it.
        starting = self._starting
        if starting is not None:
            try:
                await starting
            except Exception:
                log.exception("starting the assignment failed")
