"""One classic consumer group: members, generations and the rebalance state machine.

States (Kafka's ``GroupState``)::

    Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
      ▲                  ▲        │                                 │ leader's SyncGroup
      │                  │        └──▶ Empty (nobody rejoined)      ▼
      └── last member ───┴─────── member joins/leaves/dies ──────  Stable
                                                 (any state) ──▶ Dead (deleted / expired)

A :class:`ClassicGroup` holds the data and enforces the legal transitions; the
coordinator's parts drive it from requests and timers (the rebalance protocol,
:mod:`pystream.groups.membership`; the committed offsets,
:mod:`pystream.groups.committed_offsets`).  A member waiting for its JoinGroup
or SyncGroup answer holds an asyncio future here; the membership resolves it
when the rebalance moves on.
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections import Counter
from dataclasses import dataclass, field

from pystream.clock import now_ms
from pystream.groups.offsets_log import OffsetAndMetadata, TopicPartition
from pystream.protocol.messages.consumer_protocol import ConsumerProtocolSubscription
from pystream.protocol.messages.internal import GroupMetadataValue

CONSUMER_PROTOCOL_TYPE = "consumer"


class GroupState(enum.Enum):
    """Kafka's classic group states; the values are the names clients see."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


_VALID_PREVIOUS: dict[GroupState, frozenset[GroupState]] = {
    GroupState.PREPARING_REBALANCE: frozenset(
        {GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY}
    ),
    GroupState.COMPLETING_REBALANCE: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.STABLE: frozenset({GroupState.COMPLETING_REBALANCE}),
    GroupState.EMPTY: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.DEAD: frozenset(GroupState),
}


@dataclass(slots=True)
class JoinResult:
    """What a JoinGroup request is answered with."""

    error: int
    member_id: str
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str = ""
    skip_assignment: bool = False
    # (member id, group instance id, metadata): only the leader gets the members.
    members: list[tuple[str, str | None, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class SyncResult:
    """What a SyncGroup request is answered with."""

    error: int
    assignment: bytes = b""
    protocol_type: str | None = None
    protocol_name: str | None = None


class Member:
    """One member of a group, as the coordinator knows it."""

    __slots__ = (
        "member_id",
        "group_instance_id",
        "client_id",
        "client_host",
        "rebalance_timeout_ms",
        "session_timeout_ms",
        "protocol_type",
        "protocols",
        "assignment",
        "join_future",
        "sync_future",
        "is_new",
        "heartbeat_deadline",
        "heartbeat_satisfied",
        "timer",
    )

    def __init__(
        self,
        member_id: str,
        group_instance_id: str | None,
        client_id: str,
        client_host: str,
        rebalance_timeout_ms: int,
        session_timeout_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
    ) -> None:
        self.member_id = member_id
        self.group_instance_id = group_instance_id
        self.client_id = client_id
        self.client_host = client_host
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.session_timeout_ms = session_timeout_ms
        self.protocol_type = protocol_type
        self.protocols = protocols  # (name, metadata) in the member's order of preference
        self.assignment = b""
        self.join_future: asyncio.Future[JoinResult] | None = None
        self.sync_future: asyncio.Future[SyncResult] | None = None
        # A member that joined but never completed a rebalance: its JoinGroup may be abandoned.
        self.is_new = False
        self.heartbeat_deadline = 0.0  # loop.time() by which the next heartbeat is due
        self.heartbeat_satisfied = False
        self.timer: asyncio.TimerHandle | None = None

    @property
    def is_static(self) -> bool:
        return self.group_instance_id is not None

    @property
    def is_awaiting_join(self) -> bool:
        return self.join_future is not None

    @property
    def is_awaiting_sync(self) -> bool:
        return self.sync_future is not None

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata(self, protocol: str) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        raise KeyError(f"member {self.member_id} does not support protocol {protocol}")

    def matches(self, protocols: list[tuple[str, bytes]]) -> bool:
        """Same protocols with the same metadata, in the same order (no rebalance needed)."""
        return self.protocols == protocols

    def vote(self, candidates: set[str]) -> str:
        """The member's most preferred protocol among those every member supports."""
        for name, _ in self.protocols:
            if name in candidates:
                return name
        raise ValueError(f"member {self.member_id} supports none of {sorted(candidates)}")

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def resolve(future: asyncio.Future | None, result: object) -> None:
    """Answer a waiting request, unless its connection went away (the future was cancelled)."""
    if future is not None and not future.done():
        future.set_result(result)


class ClassicGroup:
    """A group's members, generation, chosen protocol, leader and committed offsets."""

    def __init__(self, group_id: str, state: GroupState = GroupState.EMPTY) -> None:
        self.group_id = group_id
        self.state = state
        self.state_timestamp = now_ms()
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, Member] = {}
        # Members that got MEMBER_ID_REQUIRED and have not rejoined yet, with their expiry timers.
        self.pending_members: dict[str, asyncio.TimerHandle | None] = {}
        self.pending_sync_members: set[str] = set()  # joined this generation, no SyncGroup yet
        self.static_members: dict[str, str] = {}  # group instance id -> member id
        self.supported_protocols: Counter[str] = Counter()
        self.num_awaiting_join = 0
        # Set when a member joins during the initial delay, which then waits once more.
        self.new_member_added = False
        self.subscribed_topics: set[str] | None = None
        self.offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        # The order (a counter of the offsets store) of the write each offset came from: a
        # commit replicated after a later write to the same partition must not overwrite it.
        self.offset_write_order: dict[TopicPartition, int] = {}
        # Transactional offset commits not yet committed: producer id -> offsets.
        self.pending_transactional_offsets: dict[int, dict[TopicPartition, OffsetAndMetadata]] = {}
        # Tokens of the rebalance's current delayed join / pending-sync operations: the
        # coordinator replaces (or clears) them, which makes an older operation a no-op.
        self.join_token: object | None = None
        self.sync_token: object | None = None

    def __repr__(self) -> str:
        return (
            f"ClassicGroup({self.group_id!r}, {self.state.value}, "
            f"generation={self.generation_id}, members={len(self.members)})"
        )

    # --- state ------------------------------------------------------------------------------
    def is_in(self, *states: GroupState) -> bool:
        return self.state in states

    def transition_to(self, state: GroupState) -> None:
        if self.state not in _VALID_PREVIOUS[state]:
            raise AssertionError(
                f"group {self.group_id}: illegal transition {self.state.value} -> {state.value}"
            )
        self.state = state
        self.state_timestamp = now_ms()

    def can_rebalance(self) -> bool:
        return self.state in _VALID_PREVIOUS[GroupState.PREPARING_REBALANCE]

    @property
    def size(self) -> int:
        return len(self.members)

    def is_leader(self, member_id: str) -> bool:
        return self.leader_id == member_id

    def has(self, member_id: str) -> bool:
        return member_id in self.members

    @property
    def rebalance_timeout_ms(self) -> int:
        """The longest rebalance timeout any member asked for: how long a join may take."""
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    # --- membership -------------------------------------------------------------------------
    @staticmethod
    def generate_member_id(client_id: str, group_instance_id: str | None) -> str:
        return f"{group_instance_id or client_id}-{uuid.uuid4()}"

    def add(self, member: Member, join_future: asyncio.Future[JoinResult] | None) -> None:
        if not self.members:
            self.protocol_type = member.protocol_type
        if self.leader_id is None:
            self.leader_id = member.member_id
        self.members[member.member_id] = member
        self.supported_protocols.update(member.protocol_names())
        member.join_future = join_future
        if join_future is not None:
            self.num_awaiting_join += 1
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member.member_id
        self.remove_pending_member(member.member_id)

    def add_pending_member(self, member_id: str, timer: asyncio.TimerHandle | None) -> None:
        self.pending_members[member_id] = timer

    def remove_pending_member(self, member_id: str) -> bool:
        """Forget a pending member (it joined, left or timed out); True if it was pending."""
        if member_id not in self.pending_members:
            return False
        timer = self.pending_members.pop(member_id)
        if timer is not None:
            timer.cancel()
        return True

    def remove(self, member_id: str) -> Member | None:
        member = self.members.pop(member_id, None)
        if member is None:
            return None
        self.supported_protocols.subtract(member.protocol_names())
        self.supported_protocols += Counter()  # drop counts that reached zero
        if member.is_awaiting_join:
            self.num_awaiting_join -= 1
        if member.group_instance_id is not None:
            if self.static_members.get(member.group_instance_id) == member_id:
                del self.static_members[member.group_instance_id]
        self.pending_sync_members.discard(member_id)
        member.cancel_timer()
        if self.is_leader(member_id):
            self.leader_id = next(iter(self.members), None)
        return member

    def update_member(
        self,
        member: Member,
        protocols: list[tuple[str, bytes]],
        rebalance_timeout_ms: int,
        session_timeout_ms: int,
        join_future: asyncio.Future[JoinResult] | None,
    ) -> None:
        """New protocols/timeouts of a rejoining member; it now awaits the join result."""
        self.supported_protocols.subtract(member.protocol_names())
        self.supported_protocols.update(name for name, _ in protocols)
        self.supported_protocols += Counter()
        member.protocols = protocols
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.session_timeout_ms = session_timeout_ms
        self.set_join_future(member, join_future)

    def set_join_future(
        self, member: Member, join_future: asyncio.Future[JoinResult] | None
    ) -> asyncio.Future[JoinResult] | None:
        """Replace the member's pending JoinGroup; returns the one it replaced (if any)."""
        previous = member.join_future
        if join_future is not None and previous is None:
            self.num_awaiting_join += 1
        elif join_future is None and previous is not None:
            self.num_awaiting_join -= 1
        member.join_future = join_future
        return previous

    def has_all_members_joined(self) -> bool:
        return self.num_awaiting_join == len(self.members) and not self.pending_members

    def not_yet_rejoined(self) -> list[Member]:
        return [m for m in self.members.values() if not m.is_awaiting_join]

    def maybe_elect_new_joined_leader(self) -> bool:
        """Keep a leader that rejoined, else pick any member that did; False if none did."""
        if self.leader_id is None:
            return False
        leader = self.members.get(self.leader_id)
        if leader is not None and leader.is_awaiting_join:
            return True
        for member in self.members.values():
            if member.is_awaiting_join:
                self.leader_id = member.member_id
                return True
        return False

    # --- static membership ------------------------------------------------------------------
    def static_member_id(self, group_instance_id: str | None) -> str | None:
        if group_instance_id is None:
            return None
        return self.static_members.get(group_instance_id)

    def is_static_member_fenced(self, member_id: str, group_instance_id: str | None) -> bool:
        """Another member id holds this instance id: the caller is a zombie or a duplicate."""
        known = self.static_member_id(group_instance_id)
        return known is not None and known != member_id

    def replace_static_member(self, old_member_id: str, new_member_id: str) -> Member:
        """A static member restarted: same instance, same assignment, new member id."""
        member = self.members.pop(old_member_id)
        # Its old requests are answered with FENCED_INSTANCE_ID by the caller.
        member.member_id = new_member_id
        self.members[new_member_id] = member
        assert member.group_instance_id is not None
        self.static_members[member.group_instance_id] = new_member_id
        if self.is_leader(old_member_id):
            self.leader_id = new_member_id
        if old_member_id in self.pending_sync_members:
            self.pending_sync_members.discard(old_member_id)
            self.pending_sync_members.add(new_member_id)
        return member

    # --- protocols --------------------------------------------------------------------------
    def candidate_protocols(self) -> set[str]:
        n = len(self.members)
        return {name for name, count in self.supported_protocols.items() if count == n}

    def supports_protocols(self, protocol_type: str, protocols: list[tuple[str, bytes]]) -> bool:
        """Could a member with these protocols join? (else INCONSISTENT_GROUP_PROTOCOL)."""
        names = {name for name, _ in protocols}
        if self.state is GroupState.EMPTY and not self.members:
            return bool(protocol_type) and bool(names)
        if protocol_type != self.protocol_type:
            return False
        n = len(self.members)
        return any(self.supported_protocols.get(name, 0) == n for name in names)

    def select_protocol(self) -> str:
        """Each member votes for its favourite protocol that all support; the most votes win."""
        candidates = self.candidate_protocols()
        if not candidates:
            raise ValueError(f"group {self.group_id} has no protocol every member supports")
        votes = Counter(member.vote(candidates) for member in self.members.values())
        # Ties go to the leader's preference order, so the choice is deterministic.
        best = max(votes.values())
        leader = self.members.get(self.leader_id or "")
        order = leader.protocol_names() if leader else sorted(votes)
        for name in order:
            if votes.get(name) == best:
                return name
        return max(votes, key=lambda name: votes[name])

    def init_next_generation(self) -> None:
        """The join phase is over: bump the generation and pick the protocol."""
        self.generation_id += 1
        if self.members:
            self.protocol_name = self.select_protocol()
            self.subscribed_topics = self._compute_subscribed_topics()
            self.transition_to(GroupState.COMPLETING_REBALANCE)
        else:
            self.protocol_name = None
            self.subscribed_topics = None
            self.transition_to(GroupState.EMPTY)
        self.pending_sync_members.clear()

    def _compute_subscribed_topics(self) -> set[str] | None:
        """The topics the consumers subscribe to, if every subscription can be read."""
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE or self.protocol_name is None:
            return None
        topics: set[str] = set()
        for member in self.members.values():
            try:
                _, subscription = ConsumerProtocolSubscription.decode_versioned(
                    member.metadata(self.protocol_name), allow_newer=True
                )
            except Exception:  # a client's bytes we cannot read: expire by commit time only
                return None
            topics.update(subscription.topics)
        return topics

    def current_member_metadata(self) -> list[tuple[str, str | None, bytes]]:
        """What the leader gets to compute the assignment with."""
        assert self.protocol_name is not None
        return [
            (m.member_id, m.group_instance_id, m.metadata(self.protocol_name))
            for m in self.members.values()
        ]

    # --- persistence ------------------------------------------------------------------------
    def to_metadata_value(self, assignments: dict[str, bytes] | None = None) -> GroupMetadataValue:
        """The ``GroupMetadataValue`` record of this group (with these assignments)."""
        protocol = self.protocol_name
        members = []
        for member in self.members.values():
            assignment = (
                assignments.get(member.member_id, b"")
                if assignments is not None
                else member.assignment
            )
            members.append(
                GroupMetadataValue.MemberMetadata(
                    member_id=member.member_id,
                    group_instance_id=member.group_instance_id,
                    client_id=member.client_id,
                    client_host=member.client_host,
                    rebalance_timeout=member.rebalance_timeout_ms,
                    session_timeout=member.session_timeout_ms,
                    subscription=member.metadata(protocol) if protocol is not None else b"",
                    assignment=assignment,
                )
            )
        return GroupMetadataValue(
            protocol_type=self.protocol_type or "",
            generation=self.generation_id,
            protocol=protocol,
            leader=self.leader_id if protocol is not None else None,
            current_state_timestamp=self.state_timestamp,
            members=members,
        )

    @classmethod
    def from_metadata_value(cls, group_id: str, value: GroupMetadataValue) -> ClassicGroup:
        """A group as its last metadata record left it (Stable with members, else Empty)."""
        group = cls(group_id, GroupState.STABLE if value.members else GroupState.EMPTY)
        group.generation_id = value.generation
        group.protocol_type = value.protocol_type or None
        group.protocol_name = value.protocol
        group.leader_id = value.leader
        if value.current_state_timestamp >= 0:
            group.state_timestamp = value.current_state_timestamp
        protocol = value.protocol or ""
        for m in value.members:
            member = Member(
                m.member_id,
                m.group_instance_id,
                m.client_id,
                m.client_host,
                m.rebalance_timeout if m.rebalance_timeout >= 0 else m.session_timeout,
                m.session_timeout,
                group.protocol_type or "",
                [(protocol, m.subscription)],
            )
            member.assignment = m.assignment
            group.add(member, None)
        group.leader_id = value.leader if value.leader in group.members else group.leader_id
        group.subscribed_topics = group._compute_subscribed_topics()
        return group

    # --- offsets ----------------------------------------------------------------------------
    def expired_offsets(self, now: int, retention_ms: int) -> list[TopicPartition]:
        """Kafka's offset expiration (KIP-211), per the group's situation.

        - a consumer group that is Empty: all offsets, once the group has been
          empty for ``offsets.retention.minutes``;
        - a Stable consumer group: offsets of topics nobody subscribes to anymore,
          once their last commit is that old;
        - a group only used to store offsets (no protocol type): each offset once
          its last commit is that old.
        An offset committed with an explicit expire timestamp (old clients) expires then.
        """
        subscribed: set[str] = set()
        if self.protocol_type is not None and self.state is GroupState.EMPTY:

            def base(o: OffsetAndMetadata) -> int:
                return self.state_timestamp
        elif (
            self.protocol_type == CONSUMER_PROTOCOL_TYPE
            and self.subscribed_topics is not None
            and self.state is GroupState.STABLE
        ):
            subscribed = self.subscribed_topics

            def base(o: OffsetAndMetadata) -> int:
                return o.commit_timestamp
        elif self.protocol_type is None:

            def base(o: OffsetAndMetadata) -> int:
                return o.commit_timestamp
        else:
            return []
        pending = {tp for offsets in self.pending_transactional_offsets.values() for tp in offsets}
        expired = []
        for tp, offset in self.offsets.items():
            if tp[0] in subscribed or tp in pending:
                continue
            if offset.expire_timestamp >= 0:
                if now >= offset.expire_timestamp:
                    expired.append(tp)
            elif now - base(offset) >= retention_ms:
                expired.append(tp)
        return expired
