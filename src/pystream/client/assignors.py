"""Partition assignors of the classic consumer group protocol: ``range``, ``roundrobin``,
``cooperative-sticky`` -- the same algorithms and wire encodings as the Java client and
librdkafka, so pystream consumers can share a group with them (whoever is leader).

The group leader decodes every member's ``ConsumerProtocolSubscription`` (topics,
owned partitions, generation), runs the assignor the group agreed on, and sends each
member a ``ConsumerProtocolAssignment``.  Members are ordered like Java's
``MemberInfo``: by group instance id when set, else by member id.

``cooperative-sticky`` (KIP-429) keeps partitions where they are as far as balance
allows and never hands a partition to a new owner in the same rebalance in which its
old owner still holds it: such partitions are left out, the old owner revokes them and
rejoins, and the next rebalance assigns them.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from dataclasses import dataclass, field

from pystream.protocol.messages.consumer_protocol import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)

from .types import TopicPartition

__all__ = [
    "ASSIGNORS",
    "Assignor",
    "CooperativeStickyAssignor",
    "MemberSubscription",
    "RangeAssignor",
    "RoundRobinAssignor",
    "decode_assignment",
    "decode_subscription",
    "encode_assignment",
    "encode_subscription",
]

SUBSCRIPTION_VERSION = 3
ASSIGNMENT_VERSION = 3
_GENERATION = struct.Struct(">i")


@dataclass(slots=True)
class MemberSubscription:
    """One member's JoinGroup metadata, decoded."""

    member_id: str
    topics: list[str]
    owned_partitions: list[TopicPartition] = field(default_factory=list)
    generation: int = -1
    group_instance_id: str | None = None
    user_data: bytes | None = None
    rack_id: str | None = None

    def sort_key(self) -> tuple[int, str]:
        # Java's MemberInfo.compareTo: static members (instance id) first, by instance id.
        if self.group_instance_id is not None:
            return (0, self.group_instance_id)
        return (1, self.member_id)


def _grouped(partitions: list[TopicPartition]) -> dict[str, list[int]]:
    by_topic: dict[str, list[int]] = defaultdict(list)
    for tp in partitions:
        by_topic[tp.topic].append(tp.partition)
    return {t: sorted(ps) for t, ps in sorted(by_topic.items())}


def encode_subscription(
    topics: list[str],
    owned: list[TopicPartition],
    generation: int,
    user_data: bytes | None = None,
    rack_id: str | None = None,
) -> bytes:
    sub = ConsumerProtocolSubscription(
        topics=sorted(topics),
        user_data=user_data,
        owned_partitions=[
            ConsumerProtocolSubscription.TopicPartition(topic=t, partitions=ps)
            for t, ps in _grouped(owned).items()
        ],
        generation_id=generation,
        rack_id=rack_id,
    )
    return sub.encode_versioned(SUBSCRIPTION_VERSION)


def decode_subscription(
    member_id: str, metadata: bytes, group_instance_id: str | None = None
) -> MemberSubscription:
    """Any version (newer ones read as the newest known, as Kafka does)."""
    version, sub = ConsumerProtocolSubscription.decode_versioned(bytes(metadata), allow_newer=True)
    owned = [TopicPartition(t.topic, p) for t in sub.owned_partitions for p in t.partitions]
    generation = sub.generation_id
    user_data = sub.user_data
    if generation < 0 and user_data is not None and len(user_data) == 4:
        # CooperativeStickyAssignor before v2 carried the generation in user data.
        generation = _GENERATION.unpack(user_data)[0]
    return MemberSubscription(
        member_id=member_id,
        topics=list(sub.topics),
        owned_partitions=owned,
        generation=generation,
        group_instance_id=group_instance_id,
        user_data=user_data,
        rack_id=sub.rack_id,
    )


def encode_assignment(partitions: list[TopicPartition], user_data: bytes | None = None) -> bytes:
    assignment = ConsumerProtocolAssignment(
        assigned_partitions=[
            ConsumerProtocolAssignment.TopicPartition(topic=t, partitions=ps)
            for t, ps in _grouped(partitions).items()
        ],
        user_data=user_data,
    )
    return assignment.encode_versioned(ASSIGNMENT_VERSION)


def decode_assignment(data: bytes | None) -> list[TopicPartition]:
    """The partitions in a SyncGroup assignment (empty bytes: none)."""
    if not data:
        return []
    _, assignment = ConsumerProtocolAssignment.decode_versioned(bytes(data), allow_newer=True)
    return [
        TopicPartition(t.topic, p) for t in assignment.assigned_partitions for p in t.partitions
    ]


class Assignor:
    """Base: ``assign(members, partitions_per_topic)`` -> member id -> partitions."""

    name = ""
    cooperative = False

    def user_data(self, generation: int) -> bytes | None:
        return None

    def assign(
        self, members: list[MemberSubscription], partitions_per_topic: dict[str, int]
    ) -> dict[str, list[TopicPartition]]:
        raise NotImplementedError


class RangeAssignor(Assignor):
    """Per topic: consecutive ranges of partitions to the sorted members that subscribe to it;
    the first ``partitions % members`` members get one extra."""

    name = "range"

    def assign(
        self, members: list[MemberSubscription], partitions_per_topic: dict[str, int]
    ) -> dict[str, list[TopicPartition]]:
        out: dict[str, list[TopicPartition]] = {m.member_id: [] for m in members}
        ordered = sorted(members, key=MemberSubscription.sort_key)
        topics = sorted({t for m in members for t in m.topics})
        for topic in topics:
            count = partitions_per_topic.get(topic, 0)
            consumers = [m for m in ordered if topic in m.topics]
            if not count or not consumers:
                continue
            per, extra = divmod(count, len(consumers))
            for i, member in enumerate(consumers):
                start = per * i + min(i, extra)
                length = per + (1 if i < extra else 0)
                out[member.member_id].extend(
                    TopicPartition(topic, p) for p in range(start, start + length)
                )
        return out


class RoundRobinAssignor(Assignor):
    """All partitions of all subscribed topics, sorted, dealt round robin to the sorted
    members, skipping members not subscribed to a partition's topic."""

    name = "roundrobin"

    def assign(
        self, members: list[MemberSubscription], partitions_per_topic: dict[str, int]
    ) -> dict[str, list[TopicPartition]]:
        out: dict[str, list[TopicPartition]] = {m.member_id: [] for m in members}
        ordered = sorted(members, key=MemberSubscription.sort_key)
        if not ordered:
            return out
        topics = sorted({t for m in members for t in m.topics})
        subscribed = {m.member_id: set(m.topics) for m in members}
        index = 0
        for topic in topics:
            for p in range(partitions_per_topic.get(topic, 0)):
                # Bounded: some member subscribes to every topic in `topics`.
                for _ in range(len(ordered)):
                    member = ordered[index % len(ordered)]
                    if topic in subscribed[member.member_id]:
                        break
                    index += 1
                out[ordered[index % len(ordered)].member_id].append(TopicPartition(topic, p))
                index += 1
        return out


class CooperativeStickyAssignor(Assignor):
    """Balanced and sticky (KIP-54/341/429), as ``CooperativeStickyAssignor`` in Java."""

    name = "cooperative-sticky"
    cooperative = True

    def user_data(self, generation: int) -> bytes | None:
        # Java encodes the generation for members that read subscriptions older than v2.
        return _GENERATION.pack(generation)

    def assign(
        self, members: list[MemberSubscription], partitions_per_topic: dict[str, int]
    ) -> dict[str, list[TopicPartition]]:
        previous = _previous_owners(members)
        sticky = sticky_assign(members, partitions_per_topic, previous)
        # Cooperative: a partition changing owner is left out this round (its
        # owner revokes it first and rejoins).
        for member_id, parts in sticky.items():
            sticky[member_id] = [tp for tp in parts if previous.get(tp, member_id) == member_id]
        return sticky


def _previous_owners(members: list[MemberSubscription]) -> dict[TopicPartition, str]:
    """Who owns each partition now; when two members claim one, the higher generation wins."""
    owners: dict[TopicPartition, tuple[int, str]] = {}
    for m in members:
        for tp in m.owned_partitions:
            claim = (m.generation, m.member_id)
            current = owners.get(tp)
            if current is None or claim[0] > current[0]:
                owners[tp] = claim
    return {tp: member for tp, (_, member) in owners.items()}


def sticky_assign(
    members: list[MemberSubscription],
    partitions_per_topic: dict[str, int],
    previous: dict[TopicPartition, str],
) -> dict[str, list[TopicPartition]]:
    """A balanced assignment that keeps as many partitions with their owner as balance allows."""
    ordered = sorted(members, key=MemberSubscription.sort_key)
    ids = [m.member_id for m in ordered]
    subscribed = {m.member_id: set(m.topics) for m in ordered}
    all_partitions = [
        TopicPartition(t, p)
        for t in sorted({t for m in members for t in m.topics})
        for p in range(partitions_per_topic.get(t, 0))
    ]
    out: dict[str, list[TopicPartition]] = {m: [] for m in ids}
    if not ids or not all_partitions:
        return out
    same_subscription = len({frozenset(s) for s in subscribed.values()}) == 1
    if same_subscription:
        return _constrained(ids, all_partitions, previous)
    return _general(ids, subscribed, all_partitions, previous)


def _constrained(
    ids: list[str], partitions: list[TopicPartition], previous: dict[TopicPartition, str]
) -> dict[str, list[TopicPartition]]:
    """Every member subscribes to the same topics: quotas of floor/ceil(partitions/members)."""
    n, total = len(ids), len(partitions)
    min_quota, extra = divmod(total, n)
    max_quota = min_quota + (1 if extra else 0)
    out: dict[str, list[TopicPartition]] = {m: [] for m in ids}
    owned: dict[str, list[TopicPartition]] = defaultdict(list)
    existing = set(partitions)
    for tp, member in previous.items():
        if tp in existing and member in out:
            owned[member].append(tp)
    over_quota = 0
    taken: set[TopicPartition] = set()
    for member in ids:
        mine = sorted(owned.get(member, []))
        if len(mine) <= min_quota:
            keep = mine
        elif over_quota < extra:
            keep = mine[:max_quota]
            over_quota += 1
        else:
            keep = mine[:min_quota]
        out[member] = keep
        taken.update(keep)
    unassigned = [tp for tp in partitions if tp not in taken]
    pos = 0
    for member in sorted(ids, key=lambda m: len(out[m])):
        while len(out[member]) < min_quota and pos < len(unassigned):
            out[member].append(unassigned[pos])
            pos += 1
    for member in sorted(ids, key=lambda m: len(out[m])):
        if pos >= len(unassigned):
            break
        if len(out[member]) == min_quota and over_quota < extra:
            out[member].append(unassigned[pos])
            pos += 1
            over_quota += 1
    # Whatever is left (owners above quota gave some up) goes to the least loaded.
    while pos < len(unassigned):
        member = min(ids, key=lambda m: (len(out[m]), ids.index(m)))
        out[member].append(unassigned[pos])
        pos += 1
    return out


def _general(
    ids: list[str],
    subscribed: dict[str, set[str]],
    partitions: list[TopicPartition],
    previous: dict[TopicPartition, str],
) -> dict[str, list[TopicPartition]]:
    """Members subscribe to different topics: keep, fill the least loaded, then even out."""
    out: dict[str, list[TopicPartition]] = {m: [] for m in ids}
    rank = {m: i for i, m in enumerate(ids)}
    unassigned = []
    for tp in partitions:
        owner = previous.get(tp)
        if owner in out and tp.topic in subscribed[owner]:
            out[owner].append(tp)
        else:
            unassigned.append(tp)
    candidates = {tp: [m for m in ids if tp.topic in subscribed[m]] for tp in partitions}
    # Partitions with fewest possible consumers first (hardest to place).
    for tp in sorted(unassigned, key=lambda tp: (len(candidates[tp]), tp)):
        if candidates[tp]:
            member = min(candidates[tp], key=lambda m: (len(out[m]), rank[m]))
            out[member].append(tp)
    # Even out: move a partition from a member to an eligible one with >= 2 fewer.
    for _ in range(len(partitions) * len(ids)):
        moved = False
        for donor in sorted(ids, key=lambda m: (-len(out[m]), rank[m])):
            for tp in sorted(out[donor], reverse=True):
                takers = [m for m in candidates[tp] if len(out[m]) + 1 < len(out[donor])]
                if takers:
                    taker = min(takers, key=lambda m: (len(out[m]), rank[m]))
                    out[donor].remove(tp)
                    out[taker].append(tp)
                    moved = True
                    break
            if moved:
                break
        if not moved:
            break
    return {m: sorted(ps) for m, ps in out.items()}


ASSIGNORS: dict[str, type[Assignor]] = {
    RangeAssignor.name: RangeAssignor,
    RoundRobinAssignor.name: RoundRobinAssignor,
    CooperativeStickyAssignor.name: CooperativeStickyAssignor,
}


def assignors_from_names(names: str | list[str] | tuple[str, ...]) -> list[Assignor]:
    """``"range,roundrobin"`` or a list of names (Java class names accepted) -> assignors."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out = []
    for name in names:
        key = name.lower()
        java = {
            "org.apache.kafka.clients.consumer.rangeassignor": "range",
            "org.apache.kafka.clients.consumer.roundrobinassignor": "roundrobin",
            "org.apache.kafka.clients.consumer.cooperativestickyassignor": "cooperative-sticky",
        }
        key = java.get(key, key)
        if key not in ASSIGNORS:
            raise ValueError(
                f"unknown partition assignment strategy {name!r}; "
                f"choose from {', '.join(ASSIGNORS)}"
            )
        out.append(ASSIGNORS[key]())
    if not out:
        raise ValueError("partition_assignment_strategy names no assignor")
    return out
