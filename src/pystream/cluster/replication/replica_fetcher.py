"""Followers replicate from leaders: fetchers per source broker, Fetch with replica_id.

A partition followed here is added to a fetcher of its leader (Kafka's
ReplicaFetcherManager / ReplicaFetcherThread, on asyncio): ``num.replica.fetchers``
fetchers per source broker, a partition going to fetcher
``abs(31 * topic.hashCode() + partition) % num.replica.fetchers`` as in Kafka.
Each fetcher keeps its own connection to its leader and loops:

1. **Truncate** the partitions that just got a (new) leader: ask
   OffsetForLeaderEpoch for the end offset of this log's latest leader epoch
   and cut the log there (KIP-101/KIP-279), so a follower never keeps records
   the new leader does not have — not even after a double failover.  Without
   epoch information the follower falls back to its high watermark.
2. **Fetch** every other partition from its log end offset, with the current
   leader epoch (a stale one is fenced by the leader), append the batches as
   they are (offsets and epochs already assigned), and take the leader's high
   watermark (capped by the local log end).  The response is decoded in C
   (``client._fast.decode_fetch_response``): each partition's batches stay a
   memoryview of the response frame down to the segment write, and a batch cut
   off at the end of the response is left for the next fetch.

The fetch offset doubles as the follower's acknowledgement: the leader learns
the follower's log end offset from it, which moves the ISR and the high
watermark.  Errors back a partition off for ``replica.fetch.backoff.ms``; the
metadata watch (new leader, new epoch) re-adds it with fresh state.

Fetches go through an incremental fetch session (KIP-227, the client's
``FetchSessionHandler``): after the first, a fetch names only the partitions
whose fetch offset moved, and the leader answers only partitions with records
or a new high watermark.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pystream.client._fast import decode_fetch_response
from pystream.client.fetch_session import (
    SESSION_ERRORS,
    FetchSessionHandler,
    PartitionData,
    SessionOutcome,
)
from pystream.cluster.broker_channel import BrokerChannel, broker_endpoint
from pystream.errors import ErrorCode, KafkaError, error_for_code
from pystream.protocol.messages.offset_for_leader_epoch import OffsetForLeaderEpochRequest
from pystream.security.client_security import PLAINTEXT, ClientSecurity
from pystream.storage.log import Log

if TYPE_CHECKING:
    from pystream.cluster.metadata.store import MetadataStore
    from pystream.cluster.replication.replica_manager import ReplicaManager
    from pystream.config import BrokerConfig

log = logging.getLogger(__name__)

FETCH_VERSIONS = (12, 12)  # replica_id in the body, current_leader_epoch, topic names
OFFSET_FOR_LEADER_EPOCH_VERSIONS = (4, 4)  # replica_id in the body
LEADERSHIP_RETRY_S = 0.05
SESSION_CLOSE_TIMEOUT_S = 1.0  # stopping does not wait longer for a leader that is gone
# Errors that mean "the leadership moved": wait for the metadata watch to tell us where.
_LEADERSHIP_ERRORS = frozenset(
    {
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.UNKNOWN_TOPIC_ID,
    }
)


@dataclass(slots=True, eq=False)
class FetchState:
    """One followed partition: where to fetch from, and whether to truncate first."""

    topic: str
    index: int
    log: Log
    leader_epoch: int
    fetch_offset: int
    truncating: bool = True
    delayed_until: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.index}"


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode`` (32-bit, over UTF-16 code units)."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def fetcher_id(topic: str, index: int, num_fetchers: int) -> int:
    """Kafka's ``AbstractFetcherManager.getFetcherId``: which of a source broker's
    ``num.replica.fetchers`` fetchers replicates ``topic-index``."""
    h = (31 * java_string_hash(topic) + index) & 0xFFFFFFFF
    h = h - (1 << 32) if h >= 1 << 31 else h
    return (0 if h == -(1 << 31) else abs(h)) % num_fetchers  # Kafka's Utils.abs


class ReplicaFetcherManager:
    """The fetchers of one broker, by (source broker id, fetcher id)."""

    def __init__(
        self,
        config: BrokerConfig,
        *,
        broker_id: int,
        metadata: MetadataStore,
        replicas: ReplicaManager,
        listener_name: str,
        security: ClientSecurity = PLAINTEXT,
    ) -> None:
        """``listener_name``: the listener of the leaders that followers connect to, with
        ``security``."""
        self.security = security
        self.config = config
        self.broker_id = broker_id
        self.metadata = metadata
        self.replicas = replicas
        self._fetchers: dict[tuple[int, int], ReplicaFetcher] = {}
        self._fetcher_of: dict[tuple[str, int], tuple[int, int]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._listener_name = listener_name

    def endpoint(self, broker_id: int) -> tuple[str, int] | None:
        """Where a leader is reached.  Each fetcher keeps its own connection: a fetch long
        poll must not delay other inter-broker requests such as transaction markers."""
        return broker_endpoint(self.metadata, broker_id, self._listener_name)

    def add_partition(self, topic: str, index: int, leader: int, leader_epoch: int) -> None:
        """Follow ``topic-index`` from ``leader`` in ``leader_epoch`` (truncating first)."""
        self.remove_partition(topic, index)
        partition = self.replicas.partition(topic, index)
        if partition is None:
            return
        key = (leader, fetcher_id(topic, index, self.config.num_replica_fetchers))
        fetcher = self._fetchers.get(key)
        if fetcher is None:
            fetcher = self._fetchers[key] = ReplicaFetcher(self, *key)
            fetcher.start()
        fetcher.add(
            FetchState(topic, index, partition.log, leader_epoch, partition.log.log_end_offset)
        )
        self._fetcher_of[(topic, index)] = key

    def remove_partition(self, topic: str, index: int) -> None:
        key = self._fetcher_of.pop((topic, index), None)
        fetcher = self._fetchers.get(key) if key is not None else None
        if fetcher is None or key is None:
            return
        fetcher.remove(topic, index)
        if not fetcher.partitions:  # e.g. its broker died: nothing left to fetch from it
            del self._fetchers[key]
            task = asyncio.get_running_loop().create_task(fetcher.stop())
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    def fetcher_states(self) -> dict[tuple[str, int], FetchState]:
        """Every followed partition's fetch state (for tests and DescribeLogDirs lag)."""
        return {tp: s for f in self._fetchers.values() for tp, s in f.partitions.items()}

    async def shutdown(self) -> None:
        fetchers, self._fetchers = list(self._fetchers.values()), {}
        self._fetcher_of.clear()
        await asyncio.gather(*(f.stop() for f in fetchers), *self._stopping, return_exceptions=True)


class ReplicaFetcher:
    """Replicates its share of the partitions led by one source broker, over its own
    connection."""

    def __init__(
        self, manager: ReplicaFetcherManager, source_broker_id: int, fetcher_id: int = 0
    ) -> None:
        self.manager = manager
        self.broker_id = manager.broker_id
        self.config = manager.config
        self.source_broker_id = source_broker_id
        self.fetcher_id = fetcher_id
        self.partitions: dict[tuple[str, int], FetchState] = {}
        self._channel = BrokerChannel(
            source_broker_id,
            manager.endpoint,
            # Kafka's ReplicaFetcherThread-<fetcherId>-<sourceBrokerId> client id, in spirit.
            client_id=f"broker-{self.broker_id}-fetcher-{fetcher_id}-{source_broker_id}",
            request_timeout_ms=self.config.replica_socket_timeout_ms,
            connect_timeout_ms=self.config.replica_socket_timeout_ms,
            security=manager.security,
        )
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._session = FetchSessionHandler(source_broker_id)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"replica-fetcher-{self.fetcher_id}-{self.source_broker_id}"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        close = self._session.close_request()
        if close is not None and self._channel.connected:
            # Free the leader's session slot (followers' sessions are hard to evict).
            body = close.to_request(
                replica_id=self.broker_id, max_wait_ms=0, min_bytes=0, max_bytes=0
            )
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._channel.request(1, body, FETCH_VERSIONS), SESSION_CLOSE_TIMEOUT_S
                )
        self._channel.close()

    def add(self, state: FetchState) -> None:
        self.partitions[(state.topic, state.index)] = state
        self._wake.set()

    def remove(self, topic: str, index: int) -> None:
        self.partitions.pop((topic, index), None)

    # --- the loop ---------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = self.config.replica_fetch_backoff_ms / 1000
        while True:
            if not self.partitions:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._truncate()
                if not await self._fetch():
                    # Every partition is backing off or truncating: wait for the first one.
                    await self._idle()
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:
                # Network trouble included (ChannelError): the channel reconnects next time.
                log.info(
                    "fetcher from broker %d: %s; retrying in %.1f s",
                    self.source_broker_id,
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
            except Exception:
                log.exception("fetcher from broker %d failed", self.source_broker_id)
                await asyncio.sleep(backoff)

    async def _idle(self) -> None:
        now = time.monotonic()
        waits = [s.delayed_until - now for s in self.partitions.values()]
        delay = min((w for w in waits if w > 0), default=0.05)
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), min(delay, 1.0))

    def _ready(self, truncating: bool) -> list[FetchState]:
        now = time.monotonic()
        return [
            s
            for s in self.partitions.values()
            if s.truncating == truncating and s.delayed_until <= now
        ]

    def _current(self, topic: str, index: int, sent: FetchState) -> FetchState | None:
        """The state a response is about, unless it was replaced or removed meanwhile."""
        state = self.partitions.get((topic, index))
        return state if state is sent else None

    def _back_off(self, state: FetchState, reason: str, error: int = -1) -> None:
        log.info("%s: fetch from broker %d: %s", state.name, self.source_broker_id, reason)
        backoff = self.config.replica_fetch_backoff_ms / 1000
        if error in _LEADERSHIP_ERRORS:
            # Usually the leader has not yet seen the election we have (or the other way
            # round): the metadata watch settles it within milliseconds, so retry soon.
            backoff = min(backoff, LEADERSHIP_RETRY_S)
        state.delayed_until = time.monotonic() + backoff

    # --- truncation (OffsetForLeaderEpoch) ---------------------------------------------------
    async def _truncate(self) -> None:
        pending = self._ready(truncating=True)
        if not pending:
            return
        by_topic: dict[str, list[Any]] = {}
        sent: dict[tuple[str, int], tuple[FetchState, int]] = {}
        for state in pending:
            epoch = state.log.latest_epoch
            by_topic.setdefault(state.topic, []).append(
                OffsetForLeaderEpochRequest.OffsetForLeaderPartition(
                    partition=state.index,
                    current_leader_epoch=state.leader_epoch,
                    leader_epoch=epoch,
                )
            )
            sent[(state.topic, state.index)] = (state, epoch)
        request = OffsetForLeaderEpochRequest(
            replica_id=self.broker_id,
            topics=[
                OffsetForLeaderEpochRequest.OffsetForLeaderTopic(topic=t, partitions=ps)
                for t, ps in by_topic.items()
            ],
        )
        response = await self._channel.request(23, request, OFFSET_FOR_LEADER_EPOCH_VERSIONS)
        for topic in response.topics:
            for result in topic.partitions:
                entry = sent.get((topic.topic, result.partition))
                if entry is None:
                    continue
                state = self._current(topic.topic, result.partition, entry[0])
                if state is None:
                    continue
                if result.error_code:
                    self._back_off(
                        state,
                        f"OffsetForLeaderEpoch error {result.error_code}",
                        result.error_code,
                    )
                    continue
                self._truncate_to_leader(state, entry[1], result.leader_epoch, result.end_offset)

    def _truncate_to_leader(
        self, state: FetchState, asked_epoch: int, leader_epoch: int, leader_end_offset: int
    ) -> None:
        """Cut the log where it stops agreeing with the leader (KIP-279's rule)."""
        log_ = state.log
        if asked_epoch < 0 or leader_end_offset < 0:
            # No epoch to compare (an empty cache, or one the leader does not know):
            # what was committed is safe, anything above the high watermark may diverge.
            offset = log_.high_watermark
        else:
            local_epoch, local_end = log_.end_offset_for_epoch(leader_epoch)
            if local_epoch == leader_epoch:
                offset = min(leader_end_offset, local_end)
            else:
                offset = min(leader_end_offset, log_.log_end_offset)
        offset = min(offset, log_.log_end_offset)
        before = log_.log_end_offset
        if log_.truncate_to(offset):
            log.info(
                "%s: truncated from %d to %d to follow broker %d (leader epoch %d)",
                state.name,
                before,
                log_.log_end_offset,
                self.source_broker_id,
                state.leader_epoch,
            )
        state.fetch_offset = log_.log_end_offset
        state.truncating = False

    # --- fetch ------------------------------------------------------------------------------
    async def _fetch(self) -> bool:
        """One fetch round; False if no partition was ready to fetch."""
        ready = self._ready(truncating=False)
        if not ready:
            return False
        config = self.config
        wanted: dict[tuple[str, int], PartitionData] = {}
        sent: dict[tuple[str, int], FetchState] = {}
        for state in ready:
            key = (state.topic, state.index)
            wanted[key] = PartitionData(
                state.fetch_offset,
                state.leader_epoch,
                config.replica_fetch_max_bytes,
                state.log.log_start_offset,
            )
            sent[key] = state
        # A partition added meanwhile waits at most one long poll.
        wait_ms = config.replica_fetch_wait_max_ms if len(ready) == len(self.partitions) else 0
        session = self._session
        fetch = session.build(wanted, FETCH_VERSIONS[1])
        request = fetch.to_request(
            replica_id=self.broker_id,
            max_wait_ms=wait_ms,
            min_bytes=config.replica_fetch_min_bytes,
            max_bytes=config.replica_fetch_response_max_bytes,
        )
        try:
            version, frame = await self._channel.request_raw(1, request, FETCH_VERSIONS)
            error_code, session_id, partitions = decode_fetch_response(frame, version)
        except BaseException:
            session.handle_error()
            raise
        if not session.handle_response(fetch, SessionOutcome(error_code, session_id)):
            if error_code in SESSION_ERRORS:
                return True  # the next fetch, a full one, goes at once
            raise error_for_code(error_code)(
                f"broker {self.source_broker_id} refused the replica fetch"
            )
        for data in partitions:
            entry = sent.get((data[0], data[1]))
            if entry is None:
                continue
            state = self._current(data[0], data[1], entry)
            if state is not None:
                self._process_partition(state, *data[2:])
        return True

    def _process_partition(
        self,
        state: FetchState,
        error: int,
        high_watermark: int,
        last_stable_offset: int,
        log_start_offset: int,
        records: memoryview | None,
        trailing: int,
    ) -> None:
        """One partition of a fetch response (``decode_fetch_response``'s fields):
        ``records`` holds its whole batches, ``trailing`` counts the bytes of a batch cut
        off after them (fetched again next time, from the new log end)."""
        log_ = state.log
        if error == ErrorCode.OFFSET_OUT_OF_RANGE:
            if log_start_offset > state.fetch_offset:
                # The leader deleted what we would fetch next: start over at its log start.
                log.info(
                    "%s: offset %d is below the leader's log start %d; restarting there",
                    state.name,
                    state.fetch_offset,
                    log_start_offset,
                )
                log_.truncate_fully_and_start_at(log_start_offset)
                state.fetch_offset = log_.log_end_offset
            else:
                state.truncating = True  # we are ahead of the leader: find where we diverge
            return
        if error in _LEADERSHIP_ERRORS:
            self._back_off(state, f"error {error}; waiting for the new leadership", error)
            return
        if error:
            self._back_off(state, f"error {error}")
            return
        if records is not None:
            try:
                log_.append_as_follower(records)
            except KafkaError as exc:
                self._back_off(state, f"append failed: {exc}")
                state.truncating = True  # re-check where we agree with the leader
                return
            state.fetch_offset = log_.log_end_offset
        elif trailing:
            # Not one whole batch (a leader sends its first batch whole, however large):
            # nothing to append; ask again after the back-off rather than spin.
            self._back_off(state, f"the response holds only {trailing} bytes of a batch")
            return
        # The follower's HW: the leader's, as far as this log reaches (the setter caps it).
        if high_watermark > log_.high_watermark:
            log_.high_watermark = high_watermark
        if log_start_offset > log_.log_start_offset:
            with contextlib.suppress(KafkaError):
                log_.delete_records_before(min(log_start_offset, log_.high_watermark))
