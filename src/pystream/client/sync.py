"""Synchronous facades: ``pystream.Producer``, ``pystream.Consumer``, ``pystream.AdminClient``.

Each runs the matching :mod:`pystream.aio` client on a private event loop in
a background thread (:class:`LoopThread`).  Methods that need the network
hand a coroutine to that loop and wait; ``Producer.send`` and
``Producer.send_batch`` do their work on the caller's thread and only wake
the loop, so the per-record cost is a few list appends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .accumulator import NEED_METADATA, RecordFuture
from .admin import AdminClient as AsyncAdminClient
from .consumer import Consumer as AsyncConsumer
from .errors import ClientClosedError
from .futures import BatchSendFuture
from .loop_thread import LoopThread
from .producer import Headers, _busy_error
from .producer import Producer as AsyncProducer
from .transaction_manager import TxnState
from .types import (
    ConsumerGroupMetadata,
    ConsumerRecord,
    OffsetAndMetadata,
    RecordMetadata,
    TopicPartition,
)

__all__ = ["AdminClient", "Consumer", "Producer"]


class Producer:
    """Kafka producer (blocking API; records are sent in the background).

    ::

        with pystream.Producer(bootstrap_servers="localhost:9092") as producer:
            future = producer.send("events", b"payload", key=b"user-1")
            print(future.result(10))          # RecordMetadata(topic, partition, offset, ts)
            producer.send_batch("events", [b"a", b"b", b"c"])

    Settings as for :class:`pystream.aio.Producer`.
    """

    def __init__(self, bootstrap_servers: str | Sequence[str], **settings: Any) -> None:
        self._aio = AsyncProducer(bootstrap_servers, **settings)
        self._thread = LoopThread(f"pystream-producer-{self._aio.config.client_id}")
        self._closed = False
        try:
            self._thread.run(self._aio.start, self._aio.max_block)
        except BaseException:
            self._thread.stop()
            raise
        # send() is the accumulator's C method: one call per record; anything it
        # cannot do at once (metadata, buffer full, conversions) comes back here.
        acc = self._aio._acc
        acc.slow_path = self._send_slow
        self.send = acc.send  # type: ignore[method-assign]

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close(0)
            except Exception:
                pass

    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordFuture:
        """Queue one record; the future's ``result(timeout)`` is its :class:`RecordMetadata`.

        ``key``/``value``: bytes, str (UTF-8) or None (or what the serializers
        take); ``headers``: a dict or list of ``(str, bytes)``.  Blocks only
        while the topic's metadata is fetched or ``buffer_memory`` is full (at
        most ``max_block_ms``).  (This method is replaced per instance by the
        accumulator's C fast path, which falls back to :meth:`_send_slow`.)
        """
        return self._aio._acc.send(topic, value, key, headers, partition, timestamp_ms)

    def _send_slow(
        self,
        topic: str,
        value: Any,
        key: Any,
        headers: Headers,
        partition: int | None,
        timestamp_ms: int | None,
    ) -> RecordFuture:
        aio = self._aio
        result = aio._try_send(topic, value, key, headers, partition, timestamp_ms)
        deadline = time.monotonic() + aio.max_block
        while result.__class__ is not RecordFuture:
            self._wait(result, topic, deadline)
            result = aio._try_send(topic, value, key, headers, partition, timestamp_ms)
        return result

    def send_and_wait(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        timeout: float | None = None,
    ) -> RecordMetadata:
        """Send one record and wait for its acknowledgement."""
        return self.send(topic, value, key, headers, partition, timestamp_ms).result(timeout)

    def send_batch(
        self,
        topic: str,
        values: Sequence[bytes | None] | np.ndarray,
        keys: Sequence[bytes | None] | np.ndarray | None = None,
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> BatchSendFuture:
        """Send many records, building whole batches in Cython (see the aio version)."""
        aio = self._aio
        deadline = time.monotonic() + aio.max_block
        while True:
            result = aio._build(topic, values, keys, partition, timestamp_ms)
            if result.__class__ is BatchSendFuture:
                return result
            self._wait(result, topic, deadline)

    def _wait(self, need: object, topic: str, deadline: float) -> None:
        remaining = max(deadline - time.monotonic(), 0)
        if need is NEED_METADATA:
            self._thread.run(lambda: self._aio._wait(need, topic, deadline))
        elif not self._aio._acc.wait_for_space(remaining):
            raise _busy_error(self._aio._acc.buffer_memory)

    def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered and wait for the acknowledgements."""
        if self._closed:
            raise ClientClosedError("the producer is closed")
        self._thread.run(lambda: self._aio.flush(timeout))

    def partitions_for(self, topic: str) -> list[int]:
        return self._thread.run(lambda: self._aio.partitions_for(topic))

    # Transactions: see pystream.aio.Producer for what each step does.

    def init_transactions(self, timeout: float | None = None) -> None:
        """Register the ``transactional_id`` (fences older producers with the same id)."""
        self._thread.run(self._aio.init_transactions, timeout)

    def begin_transaction(self) -> None:
        """Start a transaction: records sent until commit/abort belong to it."""
        self._thread.run(self._aio.begin_transaction)

    def send_offsets_to_transaction(
        self,
        offsets: Mapping[Any, OffsetAndMetadata | int],
        group_metadata: ConsumerGroupMetadata | str,
        timeout: float | None = None,
    ) -> None:
        """Commit consumer offsets with the transaction (committed only if it is)."""
        self._thread.run(
            lambda: self._aio.send_offsets_to_transaction(offsets, group_metadata), timeout
        )

    def commit_transaction(self, timeout: float | None = None) -> None:
        """Send every record of the transaction and commit it."""
        self._thread.run(self._aio.commit_transaction, timeout)

    def abort_transaction(self, timeout: float | None = None) -> None:
        """Abort the transaction: its records are never seen by read_committed consumers."""
        self._thread.run(self._aio.abort_transaction, timeout)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Producer]:
        """``with producer.transaction():`` commits at the end of the block, aborts if it
        raises (the exception goes on)."""
        self.begin_transaction()
        try:
            yield self
        except BaseException:
            txn = self._aio._txn
            if txn is not None and txn.state is not TxnState.FATAL_ERROR:
                self.abort_transaction()
            raise
        self.commit_transaction()

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout`` seconds) and release connections and the loop thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._thread.run(lambda: self._aio.close(timeout))
        finally:
            self._thread.stop()


class Consumer:
    """Kafka consumer (blocking API; fetching and group membership run in the background).

    ::

        with pystream.Consumer("events", bootstrap_servers="localhost:9092",
                               group_id="billing", auto_offset_reset="earliest") as consumer:
            for record in consumer:           # or: records = consumer.poll(1.0)
                handle(record.key, record.value)

    Settings as for :class:`pystream.aio.Consumer`.  Rebalance callbacks
    (``on_assign``/``on_revoke``/``on_lost``) run on the client's loop thread:
    do not call this consumer's blocking methods from them.
    """

    def __init__(
        self, *topics: str, bootstrap_servers: str | Sequence[str], **settings: Any
    ) -> None:
        self._aio = AsyncConsumer(*topics, bootstrap_servers=bootstrap_servers, **settings)
        self._thread = LoopThread(f"pystream-consumer-{self._aio.config.client_id}")
        self._closed = False
        try:
            self._thread.run(self._aio.start, self._aio.config.request_timeout_ms / 1000)
        except BaseException:
            self._thread.stop()
            raise

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass

    def _run(self, make_coro: Callable[[], Any], timeout: float | None = None) -> Any:
        if self._closed:
            raise ClientClosedError("the consumer is closed")
        return self._thread.run(make_coro, timeout)

    def poll(
        self, timeout: float | None = None, max_records: int | None = None
    ) -> list[ConsumerRecord]:
        """Records fetched since the last poll, waiting up to ``timeout`` seconds
        (None: until one arrives) when none are buffered."""
        # Buffered records are taken on this thread; only waiting needs the loop.
        records = self._aio._poll_buffered(max_records, self._notify)
        if records:
            return records
        return self._run(lambda: self._aio.poll(timeout, max_records))

    def _notify(self) -> None:
        fetcher = self._aio._fetcher
        if fetcher is not None:
            self._thread.loop.call_soon_threadsafe(fetcher.wakeup)

    def __iter__(self) -> Iterator[ConsumerRecord]:
        """Records one by one, forever (until :meth:`close`)."""
        while not self._closed:
            try:
                batch = self.poll(1.0)
            except ClientClosedError:
                return
            yield from batch

    def subscribe(self, topics: Iterable[str], **listeners: Any) -> None:
        self._run(lambda: self._aio.subscribe(topics, **listeners))

    def unsubscribe(self) -> None:
        self._run(self._aio.unsubscribe)

    def assign(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> None:
        self._run(lambda: self._aio.assign(partitions))

    def assignment(self) -> list[TopicPartition]:
        return self._aio.assignment()

    def wait_for_assignment(self, timeout: float | None = None) -> list[TopicPartition]:
        """Block until the group gave this member partitions (see the aio version)."""
        return self._run(lambda: self._aio.wait_for_assignment(timeout))

    def position(
        self, partition: TopicPartition | tuple[str, int], timeout: float | None = None
    ) -> int:
        """The offset of the next record ``poll()`` returns for this partition (waits
        while the starting offset is looked up)."""
        known = self._aio.known_position(partition)
        if known is not None:
            return known
        return self._run(lambda: self._aio.position(partition, timeout))

    def seek(self, partition: TopicPartition | tuple[str, int], offset: int) -> None:
        self._thread.loop.call_soon_threadsafe(self._aio.seek, partition, offset)
        self._run(lambda: asyncio.sleep(0))  # the seek happened when this returns

    def seek_to_beginning(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        self._thread.loop.call_soon_threadsafe(self._aio.seek_to_beginning, *partitions)
        self._run(lambda: asyncio.sleep(0))

    def seek_to_end(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        self._thread.loop.call_soon_threadsafe(self._aio.seek_to_end, *partitions)
        self._run(lambda: asyncio.sleep(0))

    def pause(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        self._thread.loop.call_soon_threadsafe(self._aio.pause, *partitions)
        self._run(lambda: asyncio.sleep(0))

    def resume(self, *partitions: TopicPartition | tuple[str, int]) -> None:
        self._thread.loop.call_soon_threadsafe(self._aio.resume, *partitions)
        self._run(lambda: asyncio.sleep(0))

    def commit(self, offsets: dict[Any, Any] | None = None) -> None:
        """Commit positions (see the aio version); raises if the group rebalanced."""
        self._run(lambda: self._aio.commit(offsets))

    def committed(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> dict[Any, Any]:
        return self._run(lambda: self._aio.committed(partitions))

    def beginning_offsets(self, partitions: Iterable[Any]) -> dict[TopicPartition, int]:
        return self._run(lambda: self._aio.beginning_offsets(partitions))

    def end_offsets(self, partitions: Iterable[Any]) -> dict[TopicPartition, int]:
        return self._run(lambda: self._aio.end_offsets(partitions))

    def offsets_for_times(self, timestamps: dict[Any, int]) -> dict[TopicPartition, int | None]:
        return self._run(lambda: self._aio.offsets_for_times(timestamps))

    def partitions_for(self, topic: str) -> list[int]:
        return self._run(lambda: self._aio.partitions_for(topic))

    def highwater(self, partition: TopicPartition | tuple[str, int]) -> int | None:
        return self._aio.highwater(partition)

    @property
    def member_id(self) -> str | None:
        return self._aio.member_id

    def group_metadata(self) -> ConsumerGroupMetadata:
        """This member's group membership now (see the aio version); raises
        InvalidGroupIdError without a ``group_id``."""
        if self._aio.group_id is None or self._closed:
            return self._aio.group_metadata()

        async def snapshot() -> ConsumerGroupMetadata:
            # Read on the loop thread: generation and member id change together there.
            return self._aio.group_metadata()

        return self._run(snapshot)

    def close(self) -> None:
        """Commit (auto-commit), leave the group, disconnect."""
        if self._closed:
            return
        self._closed = True
        try:
            self._thread.run(self._aio.close)
        finally:
            self._thread.stop()


class AdminClient:
    """Kafka admin client (blocking API): topics, partitions, configs, groups, offsets.

    ::

        with pystream.AdminClient(bootstrap_servers="localhost:9092") as admin:
            admin.create_topics([NewTopic("events", num_partitions=6)])
            print(admin.describe_topics(["events"]))

    Every method is the :class:`pystream.aio.AdminClient` one, run to completion.
    """

    def __init__(self, bootstrap_servers: str | Sequence[str], **settings: Any) -> None:
        self._aio = AsyncAdminClient(bootstrap_servers, **settings)
        self._thread = LoopThread(f"pystream-admin-{self._aio.config.client_id}")
        self._closed = False
        try:
            self._thread.run(self._aio.start, self._aio.config.request_timeout_ms / 1000)
        except BaseException:
            self._thread.stop()
            raise

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._thread.run(self._aio.close)
        finally:
            self._thread.stop()


def _blocking(name: str) -> Any:
    method = getattr(AsyncAdminClient, name)

    @functools.wraps(method)
    def call(self: AdminClient, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise ClientClosedError("the admin client is closed")
        return self._thread.run(lambda: getattr(self._aio, name)(*args, **kwargs))

    return call


for _name in (
    "describe_cluster",
    "list_topics",
    "describe_topics",
    "create_topics",
    "delete_topics",
    "create_partitions",
    "describe_configs",
    "alter_configs",
    "list_groups",
    "describe_groups",
    "delete_groups",
    "list_consumer_group_offsets",
    "alter_consumer_group_offsets",
    "delete_consumer_group_offsets",
    "list_consumer_group_lags",
    "consumer_group_reset_targets",
    "delete_records",
    "list_offsets",
    "elect_leaders",
    "alter_partition_reassignments",
    "list_partition_reassignments",
    "describe_user_scram_credentials",
    "upsert_user_scram_credential",
    "delete_user_scram_credential",
    "create_acls",
    "describe_acls",
    "delete_acls",
):
    setattr(AdminClient, _name, _blocking(_name))
