"""The producer's sender task: drains ready batches into Produce requests per leader.

One loop on the client's event loop:

1. expire batches older than ``delivery_timeout_ms``;
2. ask the accumulator which partitions have a batch ready;
3. group them by leader; for each leader with a connection and fewer than
   ``max_in_flight`` requests outstanding, drain up to ``max_request_size``
   bytes of batches and write one Produce request (pipelined);
4. sleep until the next linger deadline or a wake-up (new batch, full batch,
   flush, a response, a new connection, fresh metadata).

Responses are handled in a done-callback, not a task per request.  Per
partition: success completes the batch; a retriable error (not leader,
connection loss, timeout ...) puts it back at the head of its queue after
``retry_backoff_ms`` and asks for fresh metadata; anything else fails it.
Without idempotence a retry can reorder batches of one partition when
``max_in_flight > 1``, exactly as in Kafka.  With idempotence (a
:class:`~pystream.client.transaction_manager.TransactionManager`) batches get
their producer id, epoch and sequence when first drained, a retried batch goes
out again only as the first unacknowledged one of its partition, and sequence
errors bump the epoch once nothing is in flight.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from typing import Any

from pystream.errors import (
    ErrorCode,
    KafkaError,
    ProducerFencedError,
    RequestTimedOutError,
    error_for_code,
)
from pystream.protocol.messages.produce import ProduceRequest

from .accumulator import ProducerBatch, RecordAccumulator
from .core import ClientCore
from .errors import ClientClosedError, TransactionAbortedError
from .transaction_manager import TransactionManager

__all__ = ["Sender"]

log = logging.getLogger("pystream.client.producer")

# Errors after which the partition's leader may have moved: refresh metadata.
_METADATA_ERRORS = frozenset({3, 5, 6, 13, 19, 74, 75, 100})
_MESSAGE_TOO_LARGE = 10
# Produce errors the transaction manager decides on (retry, epoch bump, fenced).
_SEQUENCE_ERRORS = frozenset(
    {
        ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
        ErrorCode.UNKNOWN_PRODUCER_ID,
        ErrorCode.INVALID_PRODUCER_EPOCH,
        ErrorCode.PRODUCER_FENCED,
    }
)


class Sender:
    """Moves batches from the accumulator to the brokers."""

    def __init__(
        self,
        core: ClientCore,
        accumulator: RecordAccumulator,
        *,
        acks: int,
        request_timeout_ms: int,
        max_in_flight: int,
        max_request_size: int,
        retry_backoff_ms: int,
        txn: TransactionManager | None = None,
    ) -> None:
        self.core = core
        self.txn = txn
        self.retries = 0  # batches sent again after a retriable error (Java's record-retry-total)
        self._resetting: asyncio.Task[None] | None = None
        self.acc = accumulator
        self.acks = acks
        self.request_timeout_ms = request_timeout_ms
        self.max_in_flight = max_in_flight
        self.max_request_size = max_request_size
        self.retry_backoff = retry_backoff_ms / 1000
        self.in_flight: dict[int, int] = defaultdict(int)  # node -> requests outstanding
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False
        self._connecting: set[int] = set()
        self._running = True
        self._task: asyncio.Task[None] | None = None
        accumulator.wakeup = self.wakeup
        core.metadata_listeners.append(self.wakeup)

    def start(self) -> None:
        self._task = self._loop.create_task(self._run())

    async def stop(self) -> None:
        """Stop once nothing is queued or in flight (the caller flushed or aborted)."""
        self._running = False
        self.wakeup()
        if self._task is not None:
            await self._task

    def wakeup(self) -> None:
        """Make the loop look again; callable from any thread."""
        if threading.get_ident() == self._thread:
            self._wake()
        else:
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # loop closed
                pass

    def _wake(self) -> None:
        self._woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _sleep(self, until: float | None) -> None:
        if self._woken:
            self._woken = False
            return
        waiter = self._waiter = self._loop.create_future()
        handle = None
        if until is not None:
            handle = self._loop.call_at(
                self._loop.time() + max(until - time.monotonic(), 0), self._wake
            )
        try:
            await waiter
        finally:
            self._waiter = None
            self._woken = False
            if handle is not None:
                handle.cancel()

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        acc = self.acc
        while True:
            now = time.monotonic()
            for batch in acc.expired(now):
                self._fail(
                    batch,
                    RequestTimedOutError(
                        f"{batch.record_count} record(s) for {batch.topic}-{batch.partition} "
                        f"expired: not delivered within delivery_timeout_ms "
                        f"({acc.delivery_timeout * 1000:.0f} ms)"
                    ),
                )
            ready, next_at = acc.ready(now)
            if not self._running and not ready and not acc.incomplete:
                return
            if self.txn is not None and self.txn.is_transactional:
                self.txn.add_partitions_early(acc.queued_partitions())
            if ready and self.txn is not None and not self._producer_state_ready():
                ready = []
            if ready:
                blocked_until = self._send_ready(ready, now)
                if blocked_until is not None and (next_at is None or blocked_until < next_at):
                    next_at = blocked_until
            await self._sleep(next_at)

    def _producer_state_ready(self) -> bool:
        """Idempotence: is there a producer id and epoch batches may be stamped with now?"""
        txn = self.txn
        assert txn is not None
        if txn.blocks_sending:
            # Java's abortUndrainedBatches: nothing queued may go out any more.
            error = txn.last_error
            if not isinstance(error, ProducerFencedError):
                error = TransactionAbortedError(
                    f"the record was not sent: its transaction hit an error and must be "
                    f"aborted ({txn.last_error})"
                )
            for batch in self.acc.abort_all():
                self._fail(batch, error)
            return False
        if not txn.has_producer_id:
            if not txn.is_transactional:
                txn.ensure_producer_id()  # wakes the sender when done
            return False
        if txn.needs_reset():
            # Renumbering needs every batch back: wait until nothing is in flight.
            if not any(self.in_flight.values()) and (
                self._resetting is None or self._resetting.done()
            ):
                self._resetting = self._loop.create_task(self._reset_producer_state())
            return False
        return True

    async def _reset_producer_state(self) -> None:
        assert self.txn is not None
        try:
            await self.txn.reset_producer_state()
        except KafkaError as exc:
            log.warning("producer: cannot bump the producer epoch: %s", exc)
            if not exc.retriable:
                self.txn.fatal(exc)
            await asyncio.sleep(self.retry_backoff)
        finally:
            self.wakeup()

    def _send_ready(self, ready: list[tuple[str, int]], now: float) -> float | None:
        """Send what can go now; return when to look again if something had to wait."""
        txn = self.txn
        if txn is not None:
            head = self.acc.head
            ready = [tp for tp in ready if txn.sendable(tp, head(tp))]
        metadata = self.core.metadata
        by_node: dict[int, list[tuple[str, int]]] = defaultdict(list)
        missing_leader = False
        for tp in ready:
            leader = metadata.leader_for(tp)
            if leader < 0:
                missing_leader = True
                continue
            by_node[leader].append(tp)
        retry_at = None
        if missing_leader:
            self.core.request_update()
            retry_at = now + self.retry_backoff
        for node, tps in by_node.items():
            conn = self.core.connected(node)
            if conn is None:
                self._connect(node)
                continue
            while self.in_flight[node] < self.max_in_flight:
                batches = self.acc.drain(tps, self.max_request_size, now)
                if not batches:
                    break
                self._produce(conn, node, batches)
        return retry_at

    def _connect(self, node: int) -> None:
        if node in self._connecting:
            return
        self._connecting.add(node)

        async def connect() -> None:
            try:
                await self.core.connection(node)
            except KafkaError as exc:
                log.warning("producer cannot reach broker %d: %s", node, exc)
                self.core.request_update()
                await asyncio.sleep(self.retry_backoff)
            finally:
                self._connecting.discard(node)
                self.wakeup()

        self._loop.create_task(connect())

    # ------------------------------------------------------------------ requests

    def _produce(self, conn: Any, node: int, batches: list[ProducerBatch]) -> None:
        codec = self.acc.codec
        topics: dict[str, list[ProduceRequest.PartitionProduceData]] = defaultdict(list)
        txn = self.txn
        if txn is not None:
            for batch in batches:
                txn.assign(batch)
        try:
            for batch in batches:
                topics[batch.topic].append(
                    ProduceRequest.PartitionProduceData(
                        index=batch.partition, records=batch.build(codec)
                    )
                )
        except Exception as exc:  # a record the builder refuses fails its batch only
            for batch in batches:
                if batch.records is None:
                    self._fail(batch, exc)
            batches = [b for b in batches if b.records is not None]
            if not batches:
                return
        body = ProduceRequest(
            transactional_id=None if txn is None else txn.transactional_id,
            acks=self.acks,
            timeout_ms=self.request_timeout_ms,
            topic_data=[
                ProduceRequest.TopicProduceData(name=name, partition_data=parts)
                for name, parts in topics.items()
            ],
        )
        try:
            version = conn.version(0)
            if self.acks == 0:
                conn.send(0, body, version, expect_response=False)
                for batch in batches:
                    self.acc.complete(batch, -1, -1)
                return
            future = conn.send(0, body, version)
        except KafkaError as exc:
            self._handle_failure(batches, exc)
            return
        self.in_flight[node] += 1
        future.add_done_callback(lambda f: self._on_response(node, batches, f))

    def _on_response(self, node: int, batches: list[ProducerBatch], future: Any) -> None:
        self.in_flight[node] -= 1
        try:
            response = future.result()
        except Exception as exc:
            self._handle_failure(batches, exc)
            self.wakeup()
            return
        results = {
            (topic.name, p.index): p
            for topic in response.responses
            for p in topic.partition_responses
        }
        refresh = False
        for batch in batches:
            result = results.get((batch.topic, batch.partition))
            if result is None:
                self._fail(
                    batch,
                    KafkaError(
                        f"the produce response has no result for {batch.topic}-{batch.partition}"
                    ),
                )
                continue
            code = result.error_code
            if code == 0 or (code == ErrorCode.DUPLICATE_SEQUENCE_NUMBER and self.txn):
                # A duplicate: the broker already has this batch (an earlier attempt).
                self._complete(batch, result.base_offset, result.log_append_time_ms)
                continue
            error_cls = error_for_code(code)
            detail = result.error_message or error_cls.error_name
            where = f"producing to {batch.topic}-{batch.partition}"
            if code in _METADATA_ERRORS:
                refresh = True
            if code in _SEQUENCE_ERRORS and self.txn is not None:
                if self.txn.can_retry(batch, code):
                    self._retry_or_fail(batch, error_cls(f"{where}: {detail}"), force=True)
                elif code in (ErrorCode.INVALID_PRODUCER_EPOCH, ErrorCode.PRODUCER_FENCED):
                    self._fail(batch, ProducerFencedError(f"{where}: {detail}: fenced"))
                else:
                    self._fail(batch, error_cls(f"{where}: {detail}"))
                continue
            self._retry_or_fail(batch, error_cls(f"{where}: {detail}"))
        if refresh:
            self.core.request_update()
        self.wakeup()

    def _handle_failure(self, batches: list[ProducerBatch], exc: BaseException) -> None:
        if isinstance(exc, ClientClosedError) or not isinstance(exc, KafkaError):
            for batch in batches:
                self._fail(batch, exc)
            return
        self.core.request_update()
        for batch in batches:
            self._retry_or_fail(batch, exc)

    def _retry_or_fail(
        self, batch: ProducerBatch, error: BaseException, force: bool = False
    ) -> None:
        retriable = force or (isinstance(error, KafkaError) and error.retriable)
        within = time.monotonic() - batch.created < self.acc.delivery_timeout
        if retriable and within and self._running_or_flushing():
            log.debug("retrying %r after %s", batch, error)
            self.retries += 1
            self.acc.reenqueue(batch, self.retry_backoff)
        else:
            self._fail(batch, error)

    def _complete(self, batch: ProducerBatch, base_offset: int, log_append_time: int) -> None:
        if self.txn is not None:
            self.txn.completed(batch)
        self.acc.complete(batch, base_offset, log_append_time)

    def _fail(self, batch: ProducerBatch, error: BaseException) -> None:
        if self.txn is not None:
            self.txn.failed(batch, error)
        self.acc.fail(batch, error)

    def _running_or_flushing(self) -> bool:
        return self._running or bool(self.acc.incomplete)
