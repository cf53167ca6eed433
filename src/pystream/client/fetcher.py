"""The consumer's fetcher task: Fetch requests per leader, with prefetch, into a record buffer.

The loop keeps at most one Fetch in flight per broker.  A partition is
fetched while it has a fetch offset, is not paused, and holds less than
``max_partition_fetch_bytes`` of unconsumed records -- so while the
application works through one response the next one is already on its way
(prefetch).  Responses are decoded by the Cython decoder straight into
:class:`ConsumerRecord` objects (control batches and, for read_committed,
aborted transactions skipped) and queued; ``poll()`` takes records from the
queue and advances positions.

Each broker is fetched through an incremental fetch session (KIP-227,
:class:`~pystream.client.fetch_session.FetchSessionHandler`): after the first
full fetch, a request names only the partitions whose position changed and the
response only the partitions with news; the sessions are closed on ``stop()``.

Errors per partition: OFFSET_OUT_OF_RANGE resets the position
(``auto_offset_reset``) or raises from ``poll()`` when the policy is
``none``; leadership errors refresh metadata and the partition is fetched
again from the new leader.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pystream.errors import KafkaError, OffsetOutOfRangeError, error_for_code
from pystream.protocol.messages.list_offsets import ListOffsetsRequest

from ._fast import ConsumerRecord, decode_records
from .core import ClientCore
from .errors import KafkaConnectionError
from .fetch_session import SESSION_ERRORS, FetchRequestData, FetchSessionHandler, PartitionData
from .subscription import OffsetResetStrategy, PartitionState, SubscriptionState
from .types import TopicPartition

__all__ = ["Fetcher"]

log = logging.getLogger("pystream.client.consumer")

_OFFSET_OUT_OF_RANGE = 1
# Errors after which the partition's leader may have moved: refresh metadata, fetch again.
_RETRY_AFTER_METADATA = frozenset({3, 5, 6, 9, 13, 56, 74, 75, 100, 106})
_FATAL_FOR_PARTITION = frozenset({29})  # TOPIC_AUTHORIZATION_FAILED


class _CompletedFetch:
    """Decoded records of one partition from one response, consumed front to back."""

    __slots__ = ("tp", "state", "epoch", "records", "pos", "next_offset", "size")

    def __init__(
        self,
        tp: TopicPartition,
        state: PartitionState,
        records: list[ConsumerRecord],
        next_offset: int,
        size: int,
    ) -> None:
        self.tp = tp
        self.state = state
        self.epoch = state.epoch
        self.records = records
        self.pos = 0
        self.next_offset = next_offset
        self.size = size


class Fetcher:
    """Fetches assigned partitions in the background and buffers their records."""

    def __init__(
        self,
        core: ClientCore,
        subscriptions: SubscriptionState,
        *,
        fetch_min_bytes: int = 1,
        fetch_max_wait_ms: int = 500,
        fetch_max_bytes: int = 52_428_800,
        max_partition_fetch_bytes: int = 1_048_576,
        isolation_level: int = 0,
        check_crcs: bool = True,
        position_provider: Callable[[list[TopicPartition]], Awaitable[None]] | None = None,
    ) -> None:
        self.core = core
        self.subs = subscriptions
        self.min_bytes = fetch_min_bytes
        self.max_wait_ms = fetch_max_wait_ms
        self.max_bytes = fetch_max_bytes
        self.partition_max_bytes = max_partition_fetch_bytes
        self.isolation_level = isolation_level
        self.check_crcs = check_crcs
        self.position_provider = position_provider
        self._completed: deque[_CompletedFetch] = deque()
        self._in_flight: set[int] = set()
        self._errors: list[Exception] = []
        self._wakeup = asyncio.Event()
        self.data_ready = asyncio.Event()
        self.positions_known = asyncio.Event()  # set when a lookup or reset finished
        self._task: asyncio.Task[None] | None = None
        self._position_tasks: set[asyncio.Task[None]] = set()
        self._reset_failures = 0  # offset resets failed in a row (for the backoff)
        self._sessions: dict[int, FetchSessionHandler] = {}  # by broker id
        core.metadata_listeners.append(self.wakeup)
        subscriptions.listeners.append(self.wakeup)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        for task in list(self._position_tasks):
            task.cancel()
        await self._close_sessions()

    async def _close_sessions(self) -> None:
        """Free the brokers' session slots: a fetch with epoch -1 and no partitions."""
        closes = []
        for node, handler in self._sessions.items():
            close = handler.close_request()
            conn = self.core.connected(node)
            if close is None or conn is None:
                continue
            body = close.to_request(replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=0)
            try:
                future = conn.send(1, body, conn.version(1), timeout=conn.request_timeout)
            except KafkaError:
                continue
            if future is not None:
                closes.append(future)
        self._sessions.clear()
        if closes:
            # Best effort: a broker that does not answer evicts the session in time anyway.
            await asyncio.wait(closes, timeout=self.core.config.request_timeout_ms / 1000)
            for future in closes:
                if future.done() and not future.cancelled():
                    future.exception()  # retrieved: a failed close is not worth a warning
                else:
                    future.cancel()

    def wakeup(self) -> None:
        self._wakeup.set()

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                self._start_position_lookups()
                self._send_fetches()
            except Exception as exc:  # keep fetching; surface the error through poll()
                log.exception("fetcher error")
                self._errors.append(exc)
                self.data_ready.set()
            await self._wakeup.wait()

    def _start_position_lookups(self) -> None:
        subs = self.subs
        need = subs.needing_position()
        resets = subs.needing_reset()
        if need and self.position_provider is not None:
            for tp in need:
                subs.assignment[tp].awaiting_position = True
            self._spawn(self._provide_positions(need))
        elif need:
            for tp in need:
                subs.assignment[tp].reset_to = subs.default_reset
            resets = subs.needing_reset()
        if resets:
            for tp in resets:
                subs.assignment[tp].awaiting_position = True
            self._spawn(self._reset_offsets(resets))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._position_tasks.add(task)
        task.add_done_callback(self._position_tasks.discard)

    async def _provide_positions(self, tps: list[TopicPartition]) -> None:
        assert self.position_provider is not None
        try:
            await self.position_provider(tps)
        except Exception as exc:
            log.warning("looking up committed offsets failed: %s", exc)
            await asyncio.sleep(self.core.config.retry_backoff_ms / 1000)
        finally:
            for tp in tps:
                st = self.subs.assignment.get(tp)
                if st is not None:
                    st.awaiting_position = False
            self.positions_known.set()
            self.wakeup()

    async def _reset_offsets(self, tps: list[TopicPartition]) -> None:
        """Look up the reset offsets (earliest/latest) and seek there."""
        subs = self.subs
        try:
            wanted: dict[TopicPartition, tuple[int, int]] = {}
            for tp in tps:
                st = subs.assignment.get(tp)
                if st is None or st.reset_to is None:
                    continue
                if st.reset_to == OffsetResetStrategy.NONE:
                    st.reset_to = None
                    self._errors.append(
                        OffsetOutOfRangeError(
                            f"no committed or valid offset for {tp.topic}-{tp.partition} and "
                            f"auto_offset_reset is 'none': seek() to an offset first"
                        )
                    )
                    self.data_ready.set()
                    continue
                wanted[tp] = (st.reset_to, st.epoch)
            offsets = await self.list_offsets({tp: ts for tp, (ts, _) in wanted.items()})
            for tp, offset in offsets.items():
                st = subs.assignment.get(tp)
                if st is not None and st.epoch == wanted[tp][1] and st.reset_to is not None:
                    st.seek(offset)
            self._reset_failures = 0
        except Exception as exc:
            # An assigned partition that does not exist fails every time: back off
            # exponentially and warn once, not every retry.backoff.ms forever.
            config = self.core.config
            self._reset_failures += 1
            backoff_ms = min(
                config.retry_backoff_ms * 2 ** min(self._reset_failures - 1, 16),
                config.retry_backoff_max_ms,
            )
            log.log(
                logging.WARNING if self._reset_failures == 1 else logging.DEBUG,
                "offset reset failed (retrying with backoff up to %d ms): %s",
                config.retry_backoff_max_ms,
                exc,
            )
            await asyncio.sleep(backoff_ms / 1000)
        finally:
            for tp in tps:
                st = subs.assignment.get(tp)
                if st is not None:
                    st.awaiting_position = False
            self.positions_known.set()
            self.wakeup()

    async def list_offsets(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """ListOffsets to each leader: the offset for each partition's timestamp
        (-2 earliest, -1 latest, else the first offset at or after the time; -1 if none)."""
        metadata = self.core.metadata
        by_node: dict[int, dict[TopicPartition, int]] = defaultdict(dict)
        missing = [tp for tp in timestamps if metadata.leader_for(tp) < 0]
        if missing:
            await self.core.refresh_metadata({tp.topic for tp in missing})
        for tp, ts in timestamps.items():
            leader = metadata.leader_for(tp)
            if leader < 0:
                raise error_for_code(5)(f"{tp.topic}-{tp.partition} has no leader right now")
            by_node[leader][tp] = ts
        results: dict[TopicPartition, int] = {}

        async def ask(node: int, parts: dict[TopicPartition, int]) -> None:
            topics: dict[str, list[Any]] = defaultdict(list)
            for tp, ts in parts.items():
                topics[tp.topic].append(
                    ListOffsetsRequest.ListOffsetsPartition(
                        partition_index=tp.partition,
                        current_leader_epoch=-1,
                        timestamp=ts,
                    )
                )

            def build(version: int) -> ListOffsetsRequest:
                return ListOffsetsRequest(
                    replica_id=-1,
                    isolation_level=self.isolation_level,
                    topics=[
                        ListOffsetsRequest.ListOffsetsTopic(name=name, partitions=ps)
                        for name, ps in topics.items()
                    ],
                )

            response = await self.core.request(node, 2, build)
            for topic in response.topics:
                for p in topic.partitions:
                    tp = TopicPartition(topic.name, p.partition_index)
                    if p.error_code:
                        if p.error_code in _RETRY_AFTER_METADATA:
                            self.core.request_update()
                        raise error_for_code(p.error_code)(
                            f"ListOffsets for {tp.topic}-{tp.partition}"
                        )
                    results[tp] = p.offset

        await asyncio.gather(*(ask(node, parts) for node, parts in by_node.items()))
        return results

    # ------------------------------------------------------------------ fetching

    def _send_fetches(self) -> None:
        metadata = self.core.metadata
        by_node: dict[int, list[tuple[TopicPartition, PartitionState]]] = defaultdict(list)
        missing_leader = False
        for tp, st in self.subs.assignment.items():
            if not st.fetchable or st.buffered_bytes >= self.partition_max_bytes:
                continue
            leader = metadata.leader_for(tp)
            if leader < 0:
                missing_leader = True
                continue
            if leader not in self._in_flight:
                by_node[leader].append((tp, st))
        if missing_leader:
            self.core.request_update()
        for node, parts in by_node.items():
            conn = self.core.connected(node)
            if conn is None:
                self._in_flight.add(node)
                self._spawn(self._connect(node))
                continue
            self._fetch(conn, node, parts)

    async def _connect(self, node: int) -> None:
        try:
            await self.core.connection(node)
        except KafkaError as exc:
            log.warning("consumer cannot reach broker %d: %s", node, exc)
            self.core.request_update()
            await asyncio.sleep(self.core.config.retry_backoff_ms / 1000)
        finally:
            self._in_flight.discard(node)
            self.wakeup()

    def _fetch(
        self, conn: Any, node: int, parts: list[tuple[TopicPartition, PartitionState]]
    ) -> None:
        metadata = self.core.metadata
        wanted: dict[tuple[str, int], PartitionData] = {}
        sent: dict[TopicPartition, tuple[int, int]] = {}
        for tp, st in parts:
            assert st.fetch_offset is not None
            wanted[tp] = PartitionData(
                st.fetch_offset,
                metadata.leader_epoch(tp),
                self.partition_max_bytes * st.max_bytes_boost,
            )
            sent[tp] = (st.fetch_offset, st.epoch)
        session = self._sessions.get(node)
        if session is None:
            session = self._sessions[node] = FetchSessionHandler(node)
        try:
            version = conn.version(1)
            request = session.build(wanted, version)
            body = request.to_request(
                replica_id=-1,
                max_wait_ms=self.max_wait_ms,
                min_bytes=self.min_bytes,
                max_bytes=self.max_bytes,
                isolation_level=self.isolation_level,
            )
            future = conn.send(
                1, body, version, timeout=conn.request_timeout + self.max_wait_ms / 1000
            )
        except KafkaError as exc:
            session.handle_error()
            self._errors.append(exc)
            self.data_ready.set()
            return
        self._in_flight.add(node)
        future.add_done_callback(lambda f: self._on_response(node, sent, request, f))

    def _on_response(
        self,
        node: int,
        sent: dict[TopicPartition, tuple[int, int]],
        request: FetchRequestData,
        future: Any,
    ) -> None:
        self._in_flight.discard(node)
        self.wakeup()
        session = self._sessions.get(node)
        try:
            response = future.result()
        except Exception as exc:
            if session is not None:
                session.handle_error()
            if not self.core.closed:
                level = logging.INFO if isinstance(exc, KafkaConnectionError) else logging.WARNING
                log.log(level, "fetch from broker %d failed: %s", node, exc)
                self.core.request_update()
            return
        ok = response.error_code == 0
        if session is not None:
            ok = session.handle_response(request, response)  # a session error: full next
        if not ok:
            level = logging.INFO if response.error_code in SESSION_ERRORS else logging.WARNING
            log.log(level, "fetch from broker %d: error %d", node, response.error_code)
            return
        got_data = False
        for topic in response.responses:
            for p in topic.partitions:
                tp = TopicPartition(topic.topic, p.partition_index)
                st = self.subs.assignment.get(tp)
                sent_at = sent.get(tp)
                if st is None or sent_at is None or (st.fetch_offset, st.epoch) != sent_at:
                    continue  # unassigned or seeked meanwhile: stale data
                try:
                    got_data |= self._partition_result(tp, st, p, sent_at[0])
                except Exception as exc:
                    self._errors.append(exc)
                    got_data = True
        if got_data:
            self.data_ready.set()

    def _partition_result(
        self, tp: TopicPartition, st: PartitionState, p: Any, fetch_offset: int
    ) -> bool:
        code = p.error_code
        if code == 0:
            st.high_watermark = p.high_watermark
            st.last_stable_offset = p.last_stable_offset
            st.log_start_offset = p.log_start_offset
            data = p.records
            if not data:
                return False
            aborted = None
            if self.isolation_level and p.aborted_transactions:
                aborted = [(a.producer_id, a.first_offset) for a in p.aborted_transactions]
            records, next_offset, batches = decode_records(
                data,
                tp.topic,
                tp.partition,
                fetch_offset,
                check_crc=self.check_crcs,
                aborted=aborted,
            )
            if batches == 0:
                # Only the start of a batch fit: ask for more next time.
                st.max_bytes_boost = min(st.max_bytes_boost * 2, 64)
                return False
            st.max_bytes_boost = 1
            st.fetch_offset = next_offset
            size = len(data)
            st.buffered_bytes += size
            self._completed.append(_CompletedFetch(tp, st, records, next_offset, size))
            return True
        if code == _OFFSET_OUT_OF_RANGE:
            log.info("%s-%d: offset %d out of range", tp.topic, tp.partition, fetch_offset)
            st.reset_to = self.subs.default_reset
            st.fetch_offset = None
            st.position = None if st.position == fetch_offset else st.position
            return False
        if code in _RETRY_AFTER_METADATA:
            self.core.request_update()
            return False
        error = error_for_code(code)(f"fetching {tp.topic}-{tp.partition}")
        if code in _FATAL_FOR_PARTITION or not error.retriable:
            self._errors.append(error)
            return True
        self.core.request_update()
        return False

    # ------------------------------------------------------------------ the buffer

    def raise_errors(self) -> None:
        """Raise the oldest fetch error, if any (e.g. a reset with policy 'none')."""
        if self._errors:
            raise self._errors.pop(0)

    def has_records(self) -> bool:
        return bool(self._completed) or bool(self._errors)

    def drain(
        self, max_records: int, notify: Callable[[], None] | None = None
    ) -> list[ConsumerRecord]:
        """Up to ``max_records`` buffered records, advancing positions (raises fetch errors).

        ``notify`` replaces :meth:`wakeup` when called off the loop thread (the
        sync consumer drains on its caller's thread when records are buffered).
        """
        if self._errors:
            error = self._errors.pop(0)
            raise error
        out: list[ConsumerRecord] = []
        completed = self._completed
        freed = False
        while completed and len(out) < max_records:
            cf = completed[0]
            st = cf.state
            if self.subs.assignment.get(cf.tp) is not st or st.epoch != cf.epoch or st.paused:
                completed.popleft()  # unassigned, seeked or paused since: drop
                continue
            want = max_records - len(out)
            records = cf.records
            if cf.pos == 0 and len(records) <= want:
                taken = records
            else:
                taken = records[cf.pos : cf.pos + want]
            cf.pos += len(taken)
            if taken:
                out.extend(taken)
                st.position = taken[-1].offset + 1
            if cf.pos >= len(records):
                completed.popleft()
                # Past control batches / aborted data at the end of this response.
                if st.position is None or st.position < cf.next_offset:
                    st.position = cf.next_offset
                st.buffered_bytes -= cf.size
                freed = True
        if not completed:
            self.data_ready.clear()
        if freed:
            (notify or self.wakeup)()
        return out

    def drop_partitions(self, tps: Iterable[TopicPartition]) -> None:
        """Forget buffered records of these partitions (paused, revoked, seeked)."""
        gone = set(tps)
        self._completed = deque(cf for cf in self._completed if cf.tp not in gone)
        for tp in gone:
            st = self.subs.assignment.get(tp)
            if st is not None:
                st.buffered_bytes = 0
