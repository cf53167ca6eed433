"""Incremental fetch sessions (KIP-227): the broker's cache of what each fetcher asked for.

A fetcher that sends a full fetch with session id 0 and epoch 0 gets a session
(when a slot is free): its id comes back in the response, and from then on the
fetcher sends only the partitions whose fetch offset (or limits) changed, plus
the ones to forget, with the next epoch.  The broker reads every partition of
the session and answers only those with something to say.  This module keeps
the sessions — the cache, its eviction, the update of a session by an
incremental request — as Kafka's ``FetchSession.scala`` does; the Fetch handler
(``apis/fetch.py``) builds the plans.

A session's partitions are the handler's ``PartitionFetch`` objects themselves,
kept from one fetch to the next, so an incremental fetch builds no Python object
for an idle partition.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# The session id and epoch rules are the protocol's, shared with the requesters' side.
from pystream.client.fetch_session import (
    FINAL_EPOCH,
    INITIAL_EPOCH,
    INVALID_SESSION_ID,
    next_epoch,
)

if TYPE_CHECKING:
    from pystream.broker.apis.fetch import PartitionFetch, TopicFetch

__all__ = [
    "FINAL_EPOCH",
    "INITIAL_EPOCH",
    "INVALID_SESSION_ID",
    "FetchSession",
    "FetchSessionCache",
    "next_epoch",
]


# A session's partition key: (topic name, partition) before Fetch v13, (topic id, partition)
# from v13 on; a topic's key likewise.
TopicKey = Any
PartitionKey = tuple[Any, int]


@dataclass(slots=True, eq=False)
class FetchSession:
    """One fetcher's session: its partitions, grouped by topic in the order they came."""

    id: int
    # A follower's session: only another follower's (or a stale) session may evict it.
    privileged: bool
    uses_topic_ids: bool
    created_ms: int
    last_used_ms: int
    epoch: int
    topics: dict[TopicKey, TopicFetch] = field(default_factory=dict)
    partitions: dict[PartitionKey, PartitionFetch] = field(default_factory=dict)
    # (topic name, partition) -> partition: the purgatory's keys, rebuilt only when
    # partitions come or go.
    _watched: dict[tuple[str, int], PartitionFetch] | None = None
    # Partitions changed since they were last read (appends, high watermark, leadership):
    # set by the cache, from the replica manager's notifications.
    changed: set[tuple[str, int]] = field(default_factory=set)
    # Partitions that are not caught up or answered an error at their last read: read
    # again at every fetch (the others read as before until they change).
    pending: set[tuple[str, int]] = field(default_factory=set)
    # When every partition was last read (now and then, for what nothing notifies: the
    # log start offset moved by retention or DeleteRecords).
    full_read_ms: int = 0
    _indexed: tuple[tuple[str, int], ...] = ()

    @property
    def size(self) -> int:
        return len(self.partitions)

    def eviction_key(self) -> tuple[bool, int, int]:
        """Kafka's EvictableKey: the least valuable session sorts first."""
        return (self.privileged, len(self.partitions), self.id)

    def add(self, key: TopicKey, topic: TopicFetch, partition: PartitionFetch) -> None:
        """Add a partition (and its topic, on first use) at the end of the session."""
        held = self.topics.get(key)
        if held is None:
            held = self.topics[key] = topic
            held.partitions = []
        held.partitions.append(partition)
        self.partitions[(key, partition.partition)] = partition
        self._watched = None

    def forget(self, key: TopicKey, indexes: list[int]) -> None:
        """Drop these partitions of a topic (those the session does not hold are ignored)."""
        topic = self.topics.get(key)
        if topic is None:
            return
        gone = {i for i in indexes if self.partitions.pop((key, i), None) is not None}
        if not gone:
            return
        topic.partitions = [p for p in topic.partitions if p.partition not in gone]
        if not topic.partitions:
            del self.topics[key]
        self._watched = None

    def watched(self) -> dict[tuple[str, int], PartitionFetch]:
        """Every partition by (topic name, partition): what the fetch purgatory wakes on."""
        if self._watched is None:
            self._watched = {
                (t.name, p.partition): p for t in self.topics.values() for p in t.partitions
            }
        return self._watched

    def renamed(self) -> None:
        """A topic's name changed (deleted, or found by id): rebuild the keys."""
        self._watched = None


class FetchSessionCache:
    """The broker's fetch sessions, at most ``max_slots`` (0: no sessions at all).

    Eviction follows Kafka's ``FetchSessionCacheShard``: a new session takes the
    slot of one unused for ``eviction_ms``; else of the least valuable session
    (non-privileged before privileged, then smaller before larger) that is at
    least ``eviction_ms`` old — or, for a follower's new session, of any consumer's
    session — provided the new one is worth at least as much.
    """

    def __init__(self, max_slots: int, eviction_ms: int) -> None:
        self.max_slots = max_slots
        self.eviction_ms = eviction_ms
        self._sessions: dict[int, FetchSession] = {}
        # (topic name, partition) -> the sessions holding it: who to tell of a change.
        self._by_key: dict[tuple[str, int], set[FetchSession]] = {}
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def total_partitions(self) -> int:
        """Partitions held by all sessions (Kafka's NumIncrementalFetchPartitionsCached)."""
        return sum(s.size for s in self._sessions.values())

    def get(self, session_id: int) -> FetchSession | None:
        return self._sessions.get(session_id)

    def remove(self, session_id: int) -> FetchSession | None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self._unindex(session)
        return session

    def touch(self, session: FetchSession, now_ms: int) -> None:
        session.last_used_ms = now_ms

    def partition_changed(self, key: tuple[str, int]) -> None:
        """The replica manager's notification: sessions holding ``key`` re-read it."""
        sessions = self._by_key.get(key)
        if sessions:
            for session in sessions:
                session.changed.add(key)

    def index(self, session: FetchSession) -> dict[tuple[str, int], PartitionFetch]:
        """The session's partitions by key (see :meth:`FetchSession.watched`); the cache's
        index of who holds which partition follows them when they come or go."""
        rebuilt = session._watched is None
        watched = session.watched()
        if rebuilt:
            self._unindex(session)
            session._indexed = tuple(watched)
            for key in session._indexed:
                self._by_key.setdefault(key, set()).add(session)
        return watched

    def _unindex(self, session: FetchSession) -> None:
        for key in session._indexed:
            holders = self._by_key.get(key)
            if holders is not None:
                holders.discard(session)
                if not holders:
                    del self._by_key[key]
        session._indexed = ()

    def maybe_create(
        self, now_ms: int, privileged: bool, size: int, uses_topic_ids: bool
    ) -> FetchSession | None:
        """A new empty session (epoch 1, the one its first incremental fetch carries), or
        None when every slot is taken by a session worth keeping."""
        if self.max_slots <= 0:
            return None
        if len(self._sessions) >= self.max_slots and not self._try_evict(privileged, size, now_ms):
            return None
        session_id = INVALID_SESSION_ID
        while session_id == INVALID_SESSION_ID or session_id in self._sessions:
            session_id = random.randint(1, 0x7FFFFFFF)
        session = FetchSession(
            session_id,
            privileged,
            uses_topic_ids,
            created_ms=now_ms,
            last_used_ms=now_ms,
            epoch=next_epoch(INITIAL_EPOCH),
        )
        self._sessions[session_id] = session
        return session

    def _try_evict(self, privileged: bool, size: int, now_ms: int) -> bool:
        # A linear scan: it runs only when a full fetch finds every slot taken.
        sessions = self._sessions.values()
        stale = min(sessions, key=lambda s: s.last_used_ms)
        if now_ms - stale.last_used_ms > self.eviction_ms:
            return self._evict(stale)
        old_enough = [
            s
            for s in sessions
            if now_ms - s.created_ms > self.eviction_ms or (privileged and not s.privileged)
        ]
        if not old_enough:
            return False
        victim = min(old_enough, key=FetchSession.eviction_key)
        if (privileged, size, 0) < victim.eviction_key():
            return False
        return self._evict(victim)

    def _evict(self, session: FetchSession) -> bool:
        del self._sessions[session.id]
        self._unindex(session)
        self.evictions += 1
        return True
