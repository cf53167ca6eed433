"""The classic rebalance protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup.

Kafka's ``GroupCoordinator`` behaviour, so clients see the same thing:

* **Join phase.**  A JoinGroup puts the group into PreparingRebalance; the
  request waits (an asyncio future per member) until every known member has
  rejoined or the rebalance timeout passes — a delayed operation in the
  rebalance :class:`~pystream.purgatory.Purgatory`, woken by each join
  and leave.  The first rebalance of an Empty group waits
  ``group.initial.rebalance.delay.ms`` more, so consumers starting together
  get one rebalance, not one each.  Then the generation is bumped, a protocol
  every member supports is voted, and the leader gets all subscriptions.
* **Sync phase.**  The leader's SyncGroup carries the assignment; it is written
  to ``__consumer_offsets`` and handed to every member.  Members that send no
  SyncGroup within the rebalance timeout are removed.
* **Liveness.**  Each member has one timer (``loop.call_at``) for its session
  timeout; a heartbeat only moves the deadline, the timer re-arms itself lazily.
* **Static members** (``group.instance.id``, KIP-345) keep their assignment
  across a restart: the new member id replaces the old one without a rebalance.

Nothing awaits between reading and changing a group (appends to the local log
are synchronous), so each request sees and leaves a consistent state.  What
must survive this broker is stored with acks=all (Kafka's ``storeGroup``): a
SyncGroup's assignment reaches the members, and a static member's new id its
JoinGroup answer, only once the ISR has it; a task of the coordinator waits
for that and re-checks the group's generation and state before it answers.

:class:`Membership` is one part of the coordinator
(:class:`~pystream.groups.coordinator.GroupCoordinator` builds it and hands it
JoinGroup, SyncGroup, Heartbeat and LeaveGroup); the committed offsets are the
other (:mod:`pystream.groups.committed_offsets`), and both write through
:mod:`pystream.groups.persistence`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pystream.coordinator.base import NONE, E
from pystream.groups.group import (
    ClassicGroup,
    GroupState,
    JoinResult,
    Member,
    SyncResult,
    resolve,
)
from pystream.purgatory import DelayedOperation, Purgatory

if TYPE_CHECKING:
    from pystream.groups.persistence import GroupPersistence

# One logger for the whole group coordinator, whichever part of it speaks.
log = logging.getLogger("pystream.groups.coordinator")

# Kafka's GroupCoordinator.NewMemberJoinTimeoutMs: a new member whose JoinGroup is abandoned
# (its client gave up and retried with a new member) is dropped after this long.
NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000

JoinOutcome = JoinResult | asyncio.Future[JoinResult]


@dataclass(frozen=True, slots=True)
class _JoinRequest:
    """What a JoinGroup says about the member."""

    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    require_known_member_id: bool
    supports_skip_assignment: bool
    reason: str


class _Token:
    """Identifies one delayed rebalance operation; a newer one makes it stale."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


class CoordinatorCheck(Protocol):
    """The coordinator's "may I serve this group now?": 0, or the error to answer with
    (:meth:`pystream.groups.coordinator.GroupCoordinator.coordinator_error`)."""

    def __call__(self, group_id: str | None, *, allow_empty: bool = False) -> int: ...


class Membership:
    """The classic rebalance protocol over the coordinator's groups.

    Owns what a rebalance is made of: the members' requests waiting for the join
    and sync phases (their futures live on the :class:`ClassicGroup`), the
    session and pending-member timers, and the rebalance purgatory in which the
    delayed join and pending-sync operations wait.  It shares the group registry
    with the offsets store and the coordinator (a group is both its members and
    its offsets), writes group metadata through ``persistence``, and asks
    ``coordinator_error`` whether this broker serves a group.  ``spawn`` runs the
    delayed operations as tasks the coordinator cancels when it stops.  Futures
    and timers are made on the running loop: every call comes from a request, a
    timer or a partition load, all on the broker's loop.
    """

    def __init__(
        self,
        groups: dict[str, ClassicGroup],
        persistence: GroupPersistence,
        *,
        coordinator_error: CoordinatorCheck,
        spawn: Callable[[Awaitable[object]], object],
        min_session_timeout_ms: int,
        max_session_timeout_ms: int,
        max_size: int,
        initial_rebalance_delay_ms: int,
    ) -> None:
        self.groups = groups
        self.persistence = persistence
        self.coordinator_error = coordinator_error
        self._spawn = spawn
        # group.min/max.session.timeout.ms, group.max.size, group.initial.rebalance.delay.ms
        self.min_session_timeout_ms = min_session_timeout_ms
        self.max_session_timeout_ms = max_session_timeout_ms
        self.max_size = max_size
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        # Delayed joins and pending syncs, keyed ("join" | "sync", group id).
        self.purgatory = Purgatory("rebalance")

    # --- groups loaded and unloaded by the coordinator --------------------------------------
    def on_group_loaded(self, group: ClassicGroup) -> None:
        """A group replayed from the log: its members get one session timeout to show up
        again (e.g. after a restart), as if they had just sent a heartbeat."""
        for member in group.members.values():
            self.schedule_heartbeat(group, member)

    def on_group_unloaded(self, group: ClassicGroup) -> None:
        """The group left the registry (its partition is led elsewhere now, or it was
        deleted): answer its waiting requests with NOT_COORDINATOR, stop its timers and
        delayed operations, and mark it Dead for whoever still holds it."""
        for member in list(group.members.values()):
            resolve(
                group.set_join_future(member, None), JoinResult(E.NOT_COORDINATOR, member.member_id)
            )
            resolve(member.sync_future, SyncResult(E.NOT_COORDINATOR))
            member.sync_future = None
            member.cancel_timer()
        for member_id in list(group.pending_members):
            group.remove_pending_member(member_id)
        group.state = GroupState.DEAD
        self._invalidate_delayed_ops(group)

    # --- JoinGroup --------------------------------------------------------------------------
    async def join_group(
        self,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        client_id: str,
        client_host: str,
        rebalance_timeout_ms: int,
        session_timeout_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        *,
        require_known_member_id: bool,
        supports_skip_assignment: bool,
        reason: str | None = None,
    ) -> JoinResult:
        """A member joins (or rejoins); returns once the join phase is over for it."""
        error = self.coordinator_error(group_id)
        if error:
            return JoinResult(error, member_id)
        if not (self.min_session_timeout_ms <= session_timeout_ms <= self.max_session_timeout_ms):
            return JoinResult(E.INVALID_SESSION_TIMEOUT, member_id)
        unknown = member_id == ""
        group = self.groups.get(group_id)
        if group is None:
            if not unknown:
                return JoinResult(E.UNKNOWN_MEMBER_ID, member_id)
            group = self.groups[group_id] = ClassicGroup(group_id)
        request = _JoinRequest(
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            protocol_type,
            protocols,
            require_known_member_id,
            supports_skip_assignment,
            f"client reason: {reason or 'not provided'}",
        )
        if unknown:
            outcome = self._join_unknown_member(group, request)
        else:
            outcome = self._join_known_member(group, member_id, request)
        if group.state is GroupState.PREPARING_REBALANCE:
            self.purgatory.check_and_complete(("join", group_id))
        if isinstance(outcome, JoinResult):
            return outcome
        return await outcome

    def _join_unknown_member(self, group: ClassicGroup, request: _JoinRequest) -> JoinOutcome:
        """A JoinGroup without a member id: a new member, or a static member restarting."""
        if group.state is GroupState.DEAD:
            return JoinResult(E.COORDINATOR_NOT_AVAILABLE, "")
        if not group.supports_protocols(request.protocol_type, request.protocols):
            return JoinResult(E.INCONSISTENT_GROUP_PROTOCOL, "")
        instance_id = request.group_instance_id
        new_member_id = group.generate_member_id(request.client_id, instance_id)
        if instance_id is not None:
            old_member_id = group.static_member_id(instance_id)
            if old_member_id is not None:
                return self._update_static_member(group, old_member_id, new_member_id, request)
        if group.size >= self.max_size:
            return JoinResult(E.GROUP_MAX_SIZE_REACHED, "")
        if instance_id is None and request.require_known_member_id:
            # KIP-394: hand out the member id first and let the member join with it, so a
            # client that times out and retries does not leave an orphan member behind.
            timer = asyncio.get_running_loop().call_later(
                request.session_timeout_ms / 1000,
                self._expire_pending_member,
                group,
                new_member_id,
            )
            group.add_pending_member(new_member_id, timer)
            return JoinResult(E.MEMBER_ID_REQUIRED, new_member_id)
        return self._add_member_and_rebalance(group, new_member_id, request)

    def _join_known_member(
        self, group: ClassicGroup, member_id: str, request: _JoinRequest
    ) -> JoinOutcome:
        """A JoinGroup with a member id: a pending member's second join, or a rejoin."""
        if group.state is GroupState.DEAD:
            return JoinResult(E.COORDINATOR_NOT_AVAILABLE, member_id)
        if not group.supports_protocols(request.protocol_type, request.protocols):
            return JoinResult(E.INCONSISTENT_GROUP_PROTOCOL, member_id)
        if member_id in group.pending_members:
            if group.size >= self.max_size:
                group.remove_pending_member(member_id)
                return JoinResult(E.GROUP_MAX_SIZE_REACHED, member_id)
            return self._add_member_and_rebalance(group, member_id, request)
        error = self._validate_member(group, member_id, request.group_instance_id)
        if error:
            return JoinResult(error, member_id)
        member = group.members[member_id]
        state = group.state
        if state is GroupState.PREPARING_REBALANCE:
            return self._update_member_and_rebalance(group, member, request)
        if state is GroupState.COMPLETING_REBALANCE:
            if member.matches(request.protocols):
                # It lost the JoinGroup response (e.g. a timeout): send the same again.
                return self._join_result(group, member)
            return self._update_member_and_rebalance(group, member, request)
        if state is GroupState.STABLE:
            if group.is_leader(member_id) or not member.matches(request.protocols):
                # A leader's rejoin means something the assignment depends on changed (e.g.
                # topic metadata) even if its subscription did not: rebalance.
                return self._update_member_and_rebalance(group, member, request)
            return JoinResult(
                NONE,
                member_id,
                group.generation_id,
                group.protocol_type,
                group.protocol_name,
                group.leader_id or "",
            )
        # Empty (or Dead): the member has a stale view; let it start over.
        return JoinResult(E.UNKNOWN_MEMBER_ID, member_id)

    def _join_result(self, group: ClassicGroup, member: Member) -> JoinResult:
        """The join answer of the current generation; the leader gets all subscriptions."""
        is_leader = group.is_leader(member.member_id)
        return JoinResult(
            NONE,
            member.member_id,
            group.generation_id,
            group.protocol_type,
            group.protocol_name,
            group.leader_id or "",
            members=group.current_member_metadata() if is_leader else [],
        )

    def _validate_member(self, group: ClassicGroup, member_id: str, instance_id: str | None) -> int:
        """Kafka's validateCurrentMember: the instance id (if any) maps to this member id."""
        if instance_id is not None:
            known = group.static_member_id(instance_id)
            if known is None:
                return E.UNKNOWN_MEMBER_ID
            if known != member_id:
                return E.FENCED_INSTANCE_ID
            return NONE
        if member_id not in group.members:
            return E.UNKNOWN_MEMBER_ID
        return NONE

    def _add_member_and_rebalance(
        self, group: ClassicGroup, member_id: str, request: _JoinRequest
    ) -> asyncio.Future[JoinResult]:
        member = Member(
            member_id,
            request.group_instance_id,
            request.client_id,
            request.client_host,
            request.rebalance_timeout_ms,
            request.session_timeout_ms,
            request.protocol_type,
            request.protocols,
        )
        member.is_new = True
        if group.state is GroupState.PREPARING_REBALANCE and group.generation_id == 0:
            group.new_member_added = True  # the initial delay waits once more
        future: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
        group.add(member, future)
        # Its session timeout cannot apply yet (it has no generation to heartbeat with).  A
        # client that gave up on this join and retried as a new member would leave this one
        # behind forever: drop it if the join does not complete in time.
        self.schedule_heartbeat(group, member, NEW_MEMBER_JOIN_TIMEOUT_MS)
        self._maybe_prepare_rebalance(group, f"adding new member {member_id} ({request.reason})")
        return future

    def _update_member_and_rebalance(
        self, group: ClassicGroup, member: Member, request: _JoinRequest
    ) -> asyncio.Future[JoinResult]:
        future: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
        previous = member.join_future
        group.update_member(
            member,
            request.protocols,
            request.rebalance_timeout_ms,
            request.session_timeout_ms,
            future,
        )
        # A duplicate JoinGroup replaces the earlier one, which must not hang forever.
        resolve(previous, JoinResult(E.REBALANCE_IN_PROGRESS, member.member_id))
        self._maybe_prepare_rebalance(
            group, f"member {member.member_id} rejoins in {group.state.value} ({request.reason})"
        )
        return future

    def _update_static_member(
        self, group: ClassicGroup, old_member_id: str, new_member_id: str, request: _JoinRequest
    ) -> JoinOutcome:
        """A static member restarted (new member id, same instance id): KIP-345.

        In a Stable group whose protocol choice does not change, the member takes
        over its old identity and assignment with no rebalance at all.
        """
        member = group.members[old_member_id]
        current_leader = group.leader_id or ""
        # Fence the previous incarnation: its waiting requests (if any) are answered now.
        resolve(
            group.set_join_future(member, None), JoinResult(E.FENCED_INSTANCE_ID, old_member_id)
        )
        resolve(member.sync_future, SyncResult(E.FENCED_INSTANCE_ID))
        member.sync_future = None
        old = (member.protocols, member.rebalance_timeout_ms, member.session_timeout_ms)
        group.replace_static_member(old_member_id, new_member_id)
        self.schedule_heartbeat(group, member)
        future: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
        group.update_member(
            member,
            request.protocols,
            request.rebalance_timeout_ms,
            request.session_timeout_ms,
            future,
        )
        state = group.state
        if state is GroupState.STABLE:
            if group.protocol_name != group.select_protocol():
                self._maybe_prepare_rebalance(
                    group, f"static member {new_member_id} rejoined with other protocols"
                )
                return future
            group.set_join_future(member, None)
            # Answered once the new member id is stored (Kafka's storeGroup callback).
            stored = self.persistence.store_group(group, None)
            self._spawn(
                self._complete_static_rejoin(
                    group, member, old_member_id, old, request, current_leader, stored, future
                )
            )
            return future
        if state is GroupState.COMPLETING_REBALANCE:
            # The leader may be assigning to the old member id: start over.
            self._prepare_rebalance(group, f"static member {new_member_id} replaced its old id")
        return future

    async def _complete_static_rejoin(
        self,
        group: ClassicGroup,
        member: Member,
        old_member_id: str,
        old: tuple[list[tuple[str, bytes]], int, int],
        request: _JoinRequest,
        current_leader: str,
        stored: Awaitable[int],
        future: asyncio.Future[JoinResult],
    ) -> None:
        """Once the group with the static member's new id is stored, answer its JoinGroup;
        if the store failed the member keeps its old identity (the client retries)."""
        new_member_id = member.member_id
        try:
            error = await stored
        except asyncio.CancelledError:
            # The coordinator stops: the member looks for the next one.
            resolve(future, JoinResult(E.NOT_COORDINATOR, new_member_id))
            raise
        if error:
            if group.members.get(new_member_id) is member:
                group.update_member(member, old[0], old[1], old[2], None)
                group.replace_static_member(new_member_id, old_member_id)
                self.schedule_heartbeat(group, member)
            resolve(
                future,
                JoinResult(
                    error,
                    "",
                    group.generation_id,
                    group.protocol_type,
                    group.protocol_name,
                    current_leader,
                ),
            )
            return
        log.info(
            "static member %s of group %s rejoined as %s without a rebalance",
            request.group_instance_id,
            group.group_id,
            new_member_id,
        )
        if request.supports_skip_assignment:
            # JoinGroup v9 (KIP-814): a returning leader learns it leads, but must not
            # run the assignor (a stable group would not hand out its result).
            is_leader = group.is_leader(new_member_id)
            result = JoinResult(
                NONE,
                new_member_id,
                group.generation_id,
                group.protocol_type,
                group.protocol_name,
                group.leader_id or "",
                skip_assignment=is_leader,
                members=group.current_member_metadata() if is_leader else [],
            )
        else:
            # Older versions: name the old leader id, so a returning leader does not think
            # it leads and compute an assignment that the stable group would never distribute.
            result = JoinResult(
                NONE,
                new_member_id,
                group.generation_id,
                group.protocol_type,
                group.protocol_name,
                current_leader,
            )
        resolve(future, result)

    # --- rebalance phases -------------------------------------------------------------------
    def _maybe_prepare_rebalance(self, group: ClassicGroup, reason: str) -> None:
        if group.can_rebalance():
            self._prepare_rebalance(group, reason)

    def _prepare_rebalance(self, group: ClassicGroup, reason: str) -> None:
        if group.state is GroupState.COMPLETING_REBALANCE:
            # Members waiting for the old generation's assignment must rejoin instead.
            self._reset_and_propagate_assignment_error(group, E.REBALANCE_IN_PROGRESS)
        group.sync_token = None
        self.purgatory.check_and_complete(("sync", group.group_id))
        was_empty = group.state is GroupState.EMPTY
        log.info(
            "preparing to rebalance group %s in state %s with old generation %d: %s",
            group.group_id,
            group.state.value,
            group.generation_id,
            reason,
        )
        group.transition_to(GroupState.PREPARING_REBALANCE)
        if was_empty:
            delay = self.initial_rebalance_delay_ms
            self._start_initial_join(group, delay, max(group.rebalance_timeout_ms - delay, 0))
        else:
            self._start_join(group, group.rebalance_timeout_ms)

    def _start_join(self, group: ClassicGroup, timeout_ms: int) -> None:
        """Wait until every member rejoined (woken by joins and leaves) or the timeout."""
        token = _Token()
        group.join_token = token

        def try_complete() -> bool | None:
            if token.done or group.join_token is not token:
                return True
            if group.has_all_members_joined():
                token.done = True
                self._complete_join(group)
                return True
            return None

        def on_expire() -> bool:
            if not token.done and group.join_token is token:
                token.done = True
                self._complete_join(group)
            return True

        operation = DelayedOperation(try_complete, on_expire, [("join", group.group_id)])
        self._spawn(self.purgatory.wait(operation, timeout_ms))

    def _start_initial_join(self, group: ClassicGroup, delay_ms: int, remaining_ms: int) -> None:
        """The first rebalance of an Empty group waits for more members to arrive.

        Each wait of ``group.initial.rebalance.delay.ms`` that saw a new member is
        followed by another, until one passes quietly or the rebalance timeout is used up.
        """
        token = _Token()
        group.join_token = token

        def try_complete() -> bool | None:
            return True if token.done or group.join_token is not token else None

        def on_expire() -> bool:
            if token.done or group.join_token is not token:
                return True
            token.done = True
            if group.new_member_added and remaining_ms != 0:
                group.new_member_added = False
                delay = min(self.initial_rebalance_delay_ms, remaining_ms)
                self._start_initial_join(group, delay, max(remaining_ms - delay, 0))
            else:
                self._complete_join(group)
            return True

        operation = DelayedOperation(try_complete, on_expire, [("join", group.group_id)])
        self._spawn(self.purgatory.wait(operation, delay_ms))

    def _complete_join(self, group: ClassicGroup) -> None:
        """The join phase is over: drop who did not rejoin, start the next generation."""
        group.join_token = None
        if group.state is not GroupState.PREPARING_REBALANCE:
            return  # e.g. deleted or unloaded meanwhile
        for member in group.not_yet_rejoined():
            if not member.is_static:  # a static member keeps its place until its session ends
                log.info(
                    "group %s removes member %s: it did not rejoin in time",
                    group.group_id,
                    member.member_id,
                )
                group.remove(member.member_id)
        if not group.maybe_elect_new_joined_leader() and group.members:
            # Only static members that did not rejoin are left: wait for them (their session
            # timeout removes them if they are gone for good).
            log.warning(
                "group %s could not complete its rebalance: no member rejoined", group.group_id
            )
            self._start_join(group, group.rebalance_timeout_ms)
            return
        group.init_next_generation()
        if group.state is GroupState.EMPTY:
            log.info(
                "group %s with generation %d is now empty", group.group_id, group.generation_id
            )
            # Nobody waits for this write (as in Kafka): a failure is only logged.
            self._spawn(
                self._log_failed_store(group.group_id, self.persistence.store_group(group, {}))
            )
            return
        log.info(
            "stabilized group %s generation %d (protocol %s) with %d member(s)",
            group.group_id,
            group.generation_id,
            group.protocol_name,
            group.size,
        )
        for member in group.members.values():
            result = self._join_result(group, member)
            resolve(group.set_join_future(member, None), result)
            self.schedule_heartbeat(group, member)
            member.is_new = False
            group.pending_sync_members.add(member.member_id)
        self._start_pending_sync(group)

    def _start_pending_sync(self, group: ClassicGroup) -> None:
        """Members that got their JoinGroup answer must send SyncGroup within the rebalance
        timeout, or they are removed and the group rebalances without them."""
        token = _Token()
        group.sync_token = token
        generation = group.generation_id
        states = (GroupState.COMPLETING_REBALANCE, GroupState.STABLE)

        def stale() -> bool:
            return (
                token.done
                or group.sync_token is not token
                or group.generation_id != generation
                or group.state not in states
            )

        def try_complete() -> bool | None:
            if stale() or not group.pending_sync_members:
                token.done = True
                return True
            return None

        def on_expire() -> bool:
            if stale():
                return True
            token.done = True
            missing = sorted(group.pending_sync_members)
            for member_id in missing:
                member = group.members.get(member_id)
                if member is not None:
                    self._drop_member(group, member)
            self._prepare_rebalance(group, f"members {missing} sent no SyncGroup in time")
            return True

        operation = DelayedOperation(try_complete, on_expire, [("sync", group.group_id)])
        self._spawn(self.purgatory.wait(operation, group.rebalance_timeout_ms))

    def _remove_pending_sync_member(self, group: ClassicGroup, member_id: str) -> None:
        if member_id in group.pending_sync_members:
            group.pending_sync_members.discard(member_id)
            self.purgatory.check_and_complete(("sync", group.group_id))

    def _invalidate_delayed_ops(self, group: ClassicGroup) -> None:
        """Let the group's delayed join/sync finish now as no-ops (no task lingers)."""
        group.join_token = None
        group.sync_token = None
        self.purgatory.check_and_complete(("join", group.group_id))
        self.purgatory.check_and_complete(("sync", group.group_id))

    # --- SyncGroup --------------------------------------------------------------------------
    async def sync_group(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: dict[str, bytes],
    ) -> SyncResult:
        """A member asks for its assignment; the leader's request carries everyone's."""
        error = self.coordinator_error(group_id)
        if error == E.COORDINATOR_LOAD_IN_PROGRESS:
            # The rebalance state was lost with the previous coordinator: rejoin (older
            # clients do not expect COORDINATOR_LOAD_IN_PROGRESS here).
            return SyncResult(E.REBALANCE_IN_PROGRESS)
        if error:
            return SyncResult(error)
        group = self.groups.get(group_id)
        if group is None:
            return SyncResult(E.UNKNOWN_MEMBER_ID)
        if group.state is GroupState.DEAD:
            return SyncResult(E.COORDINATOR_NOT_AVAILABLE)
        error = self._validate_member(group, member_id, group_instance_id)
        if error:
            return SyncResult(error)
        if generation_id != group.generation_id:
            return SyncResult(E.ILLEGAL_GENERATION)
        if (protocol_type is not None and protocol_type != group.protocol_type) or (
            protocol_name is not None and protocol_name != group.protocol_name
        ):
            return SyncResult(E.INCONSISTENT_GROUP_PROTOCOL)
        state = group.state
        if state is GroupState.EMPTY:
            return SyncResult(E.UNKNOWN_MEMBER_ID)
        if state is GroupState.PREPARING_REBALANCE:
            return SyncResult(E.REBALANCE_IN_PROGRESS)
        member = group.members[member_id]
        if state is GroupState.STABLE:
            self._remove_pending_sync_member(group, member_id)
            self.schedule_heartbeat(group, member)
            return SyncResult(NONE, member.assignment, group.protocol_type, group.protocol_name)
        # CompletingRebalance: wait for the leader's assignment.
        future: asyncio.Future[SyncResult] = asyncio.get_running_loop().create_future()
        resolve(member.sync_future, SyncResult(E.REBALANCE_IN_PROGRESS))
        member.sync_future = future
        self._remove_pending_sync_member(group, member_id)
        if group.is_leader(member_id):
            log.info(
                "assignment received from leader %s of group %s for generation %d",
                member_id,
                group.group_id,
                group.generation_id,
            )
            # Members the leader left out get an empty assignment.
            assignment = {mid: assignments.get(mid, b"") for mid in group.members}
            # The members are answered once the assignment is stored (Kafka's storeGroup
            # callback), by a task of its own: a leader that goes away cannot stall them.
            stored = self.persistence.store_group(group, assignment)
            self._spawn(self._complete_sync(group, generation_id, assignment, stored))
        return await future

    async def _complete_sync(
        self,
        group: ClassicGroup,
        generation_id: int,
        assignment: dict[str, bytes],
        stored: Awaitable[int],
    ) -> None:
        """Once the leader's assignment is stored (or not), hand it to the members (or the
        error, and rebalance) — if the group is still in that generation's sync phase."""
        error = await stored
        if (
            group.state is not GroupState.COMPLETING_REBALANCE
            or group.generation_id != generation_id
        ):
            return
        if error:
            self._reset_and_propagate_assignment_error(group, error)
            self._maybe_prepare_rebalance(group, "storing the assignment failed")
            return
        for m in group.members.values():
            m.assignment = assignment.get(m.member_id, b"")
        self._propagate_assignment(group, NONE)
        group.transition_to(GroupState.STABLE)

    async def _log_failed_store(self, group_id: str, stored: Awaitable[int]) -> None:
        error = await stored
        if error:
            # The previous generation stays in the log; it has no live members to confuse.
            log.warning("could not write the empty metadata of group %s: error %d", group_id, error)

    def _propagate_assignment(self, group: ClassicGroup, error: int) -> None:
        protocol_type = group.protocol_type if not error else None
        protocol_name = group.protocol_name if not error else None
        for member in group.members.values():
            future = member.sync_future
            if future is None:
                continue
            member.sync_future = None
            resolve(future, SyncResult(error, member.assignment, protocol_type, protocol_name))
            # Its session may have run out while it waited: give it a fresh one.
            self.schedule_heartbeat(group, member)

    def _reset_and_propagate_assignment_error(self, group: ClassicGroup, error: int) -> None:
        for member in group.members.values():
            member.assignment = b""
        self._propagate_assignment(group, error)

    # --- Heartbeat and liveness -------------------------------------------------------------
    def heartbeat(
        self, group_id: str, member_id: str, group_instance_id: str | None, generation_id: int
    ) -> int:
        """A member is alive; the answer tells it whether to rejoin."""
        error = self.coordinator_error(group_id)
        if error == E.COORDINATOR_LOAD_IN_PROGRESS:
            return NONE  # the group is being loaded: nothing to tell the member yet
        if error:
            return error
        group = self.groups.get(group_id)
        if group is None:
            return E.UNKNOWN_MEMBER_ID
        if group.state is GroupState.DEAD:
            return E.COORDINATOR_NOT_AVAILABLE
        error = self._validate_member(group, member_id, group_instance_id)
        if error:
            return error
        if generation_id != group.generation_id:
            return E.ILLEGAL_GENERATION
        if group.state is GroupState.EMPTY:
            return E.UNKNOWN_MEMBER_ID
        self.schedule_heartbeat(group, group.members[member_id])
        if group.state is GroupState.PREPARING_REBALANCE:
            return E.REBALANCE_IN_PROGRESS
        return NONE

    def schedule_heartbeat(
        self, group: ClassicGroup, member: Member, timeout_ms: int | None = None
    ) -> None:
        """The member's next heartbeat is due ``timeout_ms`` (its session timeout) from now.

        One timer per member: moving the deadline later costs nothing, the timer
        notices when it fires and re-arms for the new deadline.
        """
        loop = asyncio.get_running_loop()
        timeout = member.session_timeout_ms if timeout_ms is None else timeout_ms
        deadline = loop.time() + timeout / 1000
        member.heartbeat_deadline = deadline
        timer = member.timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            member.timer = loop.call_at(deadline, self._on_heartbeat_deadline, group, member)

    def _on_heartbeat_deadline(self, group: ClassicGroup, member: Member) -> None:
        member.timer = None
        if self.groups.get(group.group_id) is not group:
            return
        if group.members.get(member.member_id) is not member:
            return
        loop = asyncio.get_running_loop()
        if loop.time() + 0.001 < member.heartbeat_deadline:
            member.timer = loop.call_at(
                member.heartbeat_deadline, self._on_heartbeat_deadline, group, member
            )
            return
        if not member.is_new and (member.is_awaiting_join or member.is_awaiting_sync):
            # Waiting for the rebalance is not silence; the rebalance timeout bounds it and
            # a new deadline is set when the member gets its answer.
            return
        log.info(
            "member %s of group %s has not sent a heartbeat within its session timeout "
            "(%d ms): removing it",
            member.member_id,
            group.group_id,
            member.session_timeout_ms,
        )
        self._remove_member_and_update_group(group, member, "session timeout expired")

    def _expire_pending_member(self, group: ClassicGroup, member_id: str) -> None:
        if member_id in group.pending_members:
            group.pending_members[member_id] = None  # this timer is the one firing
            self._remove_pending_member_and_update_group(group, member_id)

    def _remove_pending_member_and_update_group(self, group: ClassicGroup, member_id: str) -> None:
        group.remove_pending_member(member_id)
        if group.state is GroupState.PREPARING_REBALANCE:
            self.purgatory.check_and_complete(("join", group.group_id))

    def _drop_member(self, group: ClassicGroup, member: Member) -> None:
        """Remove a member, answering its waiting requests with UNKNOWN_MEMBER_ID."""
        resolve(
            group.set_join_future(member, None), JoinResult(E.UNKNOWN_MEMBER_ID, member.member_id)
        )
        resolve(member.sync_future, SyncResult(E.UNKNOWN_MEMBER_ID))
        member.sync_future = None
        group.remove(member.member_id)

    def _remove_member_and_update_group(
        self, group: ClassicGroup, member: Member, reason: str
    ) -> None:
        self._drop_member(group, member)
        state = group.state
        if state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._maybe_prepare_rebalance(group, f"removing member {member.member_id}: {reason}")
        elif state is GroupState.PREPARING_REBALANCE:
            self.purgatory.check_and_complete(("join", group.group_id))

    # --- LeaveGroup -------------------------------------------------------------------------
    def leave_group(
        self, group_id: str, members: list[tuple[str, str | None, str | None]]
    ) -> tuple[int, list[int]]:
        """Members ``(member id, group instance id, reason)`` leave; (group error, per member).

        A member id of "" with an instance id removes that static member (admin tools).
        """
        error = self.coordinator_error(group_id)
        if error:
            return error, []
        group = self.groups.get(group_id)
        if group is None:
            return NONE, [E.UNKNOWN_MEMBER_ID] * len(members)
        if group.state is GroupState.DEAD:
            return E.COORDINATOR_NOT_AVAILABLE, []
        errors = []
        for member_id, instance_id, reason in members:
            why = f"member left the group ({reason or 'no reason given'})"
            if member_id == "":
                current = group.static_member_id(instance_id)
                if current is None:
                    errors.append(E.UNKNOWN_MEMBER_ID)
                else:
                    self._remove_member_and_update_group(group, group.members[current], why)
                    errors.append(NONE)
            elif member_id in group.pending_members:
                self._remove_pending_member_and_update_group(group, member_id)
                errors.append(NONE)
            else:
                error = self._validate_member(group, member_id, instance_id)
                if not error:
                    log.info("member %s leaves group %s", member_id, group_id)
                    self._remove_member_and_update_group(group, group.members[member_id], why)
                errors.append(error)
        return NONE, errors
