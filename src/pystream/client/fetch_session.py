"""The requester's side of incremental fetch sessions (KIP-227), Kafka's FetchSessionHandler.

One handler per broker a fetcher reads from (the consumer's fetcher, and each
replica fetcher of a follower).  The first fetch is a full one with session id 0
and epoch 0; if the broker answers with a session id, later fetches carry only
the partitions whose fetch offset, leader epoch or limits changed, plus the ones
to forget, with the next epoch; the broker answers only partitions with
something to say.  On FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH,
FETCH_SESSION_TOPIC_ID_ERROR or a failed request, the next fetch is a full one
again (asking for a new session); :meth:`FetchSessionHandler.close_request`
gives the fetch (session id, epoch -1) that closes the session when the fetcher stops.

Partitions are keyed by (topic name, partition): pystream's fetchers use Fetch
v7..v12 (names, not topic ids).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pystream.protocol.messages.fetch import FetchRequest

__all__ = [
    "SESSION_ERRORS",
    "FetchRequestData",
    "FetchSessionHandler",
    "PartitionData",
    "PartitionKey",
]

log = logging.getLogger("pystream.client.fetch_session")

INVALID_SESSION_ID = 0
INITIAL_EPOCH = 0
FINAL_EPOCH = -1
FIRST_SESSION_VERSION = 7  # Fetch v7 brought session ids and epochs
_FETCH_SESSION_ID_NOT_FOUND = 70
# FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH, FETCH_SESSION_TOPIC_ID_ERROR: the
# handler's next fetch is a full one, asking for a new session.
SESSION_ERRORS = frozenset({70, 71, 106})

PartitionKey = tuple[str, int]


class SessionOutcome(NamedTuple):
    """The top level of a Fetch response, for a requester that decodes it itself."""

    error_code: int
    session_id: int


class PartitionData(NamedTuple):
    """What a fetcher asks of one partition; a partition whose data changed is re-sent."""

    fetch_offset: int
    current_leader_epoch: int
    partition_max_bytes: int
    log_start_offset: int = -1  # followers: their log start offset


def next_epoch(epoch: int) -> int:
    """Kafka's FetchMetadata.nextEpoch: 1 after the maximum, never 0 again."""
    if epoch < 0:
        return FINAL_EPOCH
    return 1 if epoch == 0x7FFFFFFF else epoch + 1


@dataclass(slots=True)
class FetchRequestData:
    """One fetch to send: its session fields and topics, and what its response covers."""

    session_id: int
    session_epoch: int
    topics: list[FetchRequest.FetchTopic]
    forgotten_topics_data: list[FetchRequest.ForgottenTopic]
    # Every partition the response may answer for: the session's (or the request's).
    partitions: dict[PartitionKey, PartitionData] = field(default_factory=dict)

    @property
    def is_full(self) -> bool:
        return self.session_epoch in (INITIAL_EPOCH, FINAL_EPOCH)

    @property
    def sent_partitions(self) -> int:
        """Partitions named in the request itself (all of them in a full fetch)."""
        return sum(len(t.partitions) for t in self.topics)

    def to_request(
        self,
        *,
        replica_id: int,
        max_wait_ms: int,
        min_bytes: int,
        max_bytes: int,
        isolation_level: int = 0,
    ) -> FetchRequest:
        """The Fetch request body (by topic name: v7..v12)."""
        return FetchRequest(
            replica_id=replica_id,
            max_wait_ms=max_wait_ms,
            min_bytes=min_bytes,
            max_bytes=max_bytes,
            isolation_level=isolation_level,
            session_id=self.session_id,
            session_epoch=self.session_epoch,
            topics=self.topics,
            forgotten_topics_data=self.forgotten_topics_data,
            rack_id="",
        )


class FetchSessionHandler:
    """Builds full or incremental fetch requests to one broker and tracks the session."""

    def __init__(self, node_id: int, *, enabled: bool = True) -> None:
        """``enabled=False`` sends sessionless full fetches (session id 0, epoch -1)."""
        self.node_id = node_id
        self.enabled = enabled
        self.session_id = INVALID_SESSION_ID
        self.epoch = INITIAL_EPOCH if enabled else FINAL_EPOCH
        # What the broker's session holds, as last sent (insertion ordered).
        self._session: dict[PartitionKey, PartitionData] = {}

    @property
    def has_session(self) -> bool:
        return self.session_id != INVALID_SESSION_ID

    def build(self, wanted: dict[PartitionKey, PartitionData], version: int) -> FetchRequestData:
        """The request for fetching ``wanted`` now: everything (a full fetch) or only what
        changed since the session last heard from us, plus the partitions to forget."""
        if version < FIRST_SESSION_VERSION or not self.enabled:
            return FetchRequestData(0, FINAL_EPOCH, _by_topic(wanted), [], wanted)
        if self.epoch == INITIAL_EPOCH or not self.has_session:
            self._session = dict(wanted)
            return FetchRequestData(self.session_id, INITIAL_EPOCH, _by_topic(wanted), [], wanted)
        session = self._session
        changed = {key: data for key, data in wanted.items() if session.get(key) != data}
        forgotten: dict[str, list[int]] = defaultdict(list)
        if len(session) + sum(1 for key in changed if key not in session) != len(wanted):
            for key in [key for key in session if key not in wanted]:
                del session[key]
                forgotten[key[0]].append(key[1])
        session.update(changed)
        return FetchRequestData(
            self.session_id,
            self.epoch,
            _by_topic(changed),
            [
                FetchRequest.ForgottenTopic(topic=topic, partitions=indexes)
                for topic, indexes in forgotten.items()
            ],
            wanted,
        )

    def handle_response(self, request: FetchRequestData, response: Any) -> bool:
        """Advance (or restart) the session after ``response``; False if the response is
        to be ignored (a session error: the next fetch is a full one)."""
        if not self.enabled or request.session_epoch == FINAL_EPOCH:
            return response.error_code == 0
        if response.error_code:
            log.info(
                "broker %d refused fetch session %d epoch %d: error %d; the next fetch is full",
                self.node_id,
                request.session_id,
                request.session_epoch,
                response.error_code,
            )
            if response.error_code == _FETCH_SESSION_ID_NOT_FOUND:
                self.session_id = INVALID_SESSION_ID
            self.epoch = INITIAL_EPOCH  # a full fetch closes the old session, if any
            return False
        if response.session_id == INVALID_SESSION_ID:
            # No slot (or the session ended): full fetches, asking for a session again.
            self.session_id = INVALID_SESSION_ID
            self.epoch = INITIAL_EPOCH
        elif request.is_full:
            self.session_id = response.session_id
            self.epoch = next_epoch(INITIAL_EPOCH)
        else:
            self.epoch = next_epoch(self.epoch)
        return True

    def handle_error(self) -> None:
        """The fetch failed (connection lost, timeout): start over with a full fetch that
        closes the session the broker may still hold."""
        self.epoch = INITIAL_EPOCH

    def close_request(self) -> FetchRequestData | None:
        """The fetch that closes the session (its id, epoch -1, no partitions); None if
        there is no session.  The handler starts over with a full fetch afterwards."""
        if not self.has_session:
            return None
        session_id, self.session_id = self.session_id, INVALID_SESSION_ID
        self.epoch = INITIAL_EPOCH
        self._session = {}
        return FetchRequestData(session_id, FINAL_EPOCH, [], [])


def _by_topic(partitions: dict[PartitionKey, PartitionData]) -> list[Any]:
    topics: dict[str, list[FetchRequest.FetchPartition]] = defaultdict(list)
    for (topic, index), data in partitions.items():
        topics[topic].append(
            FetchRequest.FetchPartition(
                partition=index,
                current_leader_epoch=data.current_leader_epoch,
                fetch_offset=data.fetch_offset,
                last_fetched_epoch=-1,
                log_start_offset=data.log_start_offset,
                partition_max_bytes=data.partition_max_bytes,
            )
        )
    return [FetchRequest.FetchTopic(topic=name, partitions=ps) for name, ps in topics.items()]
