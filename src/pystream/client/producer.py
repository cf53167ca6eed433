"""The asyncio producer (``pystream.aio.Producer``); the sync ``pystream.Producer`` wraps it.

``send()`` does its work on the calling thread and returns at once: it picks
the partition (Java's murmur2 / sticky partitioner), appends the record to
its partition's open batch and hands back a :class:`RecordFuture`.  Only
when the topic's metadata is unknown or ``buffer_memory`` is full does it
wait (at most ``max_block_ms``).  ``send_batch()`` builds whole RecordBatches
in Cython from a list of values or a numpy array of fixed-size records.  The
:class:`~pystream.client.sender.Sender` task ships batches to the leaders.

Idempotence is on by default (as in Kafka's Java client since 3.0): no
duplicates and no reordering on retries.  With ``transactional_id`` the
producer writes transactions (``init_transactions()``, ``begin_transaction()``,
``commit_transaction()``/``abort_transaction()``, or ``async with
producer.transaction():``); the :class:`TransactionManager` keeps that state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from pystream._core.compression import codec_from_name
from pystream._core.records import build_batch_from_values
from pystream.errors import KafkaError, UnknownTopicOrPartitionError

from ._fast import (
    build_fixed_batch,
    chunk_bounds,
    partitions_for_fixed_keys,
    partitions_for_keys,
    record_overhead,
    take,
)
from .accumulator import NEED_METADATA, NEED_SPACE, ProducerBatch, RecordAccumulator, RecordFuture
from .config import ClientConfig
from .core import ClientCore
from .errors import ClientClosedError, TransactionAbortedError
from .futures import BatchSendFuture
from .metadata import TopicInfo
from .sender import Sender
from .transaction_manager import TransactionManager, TxnState
from .types import ConsumerGroupMetadata, OffsetAndMetadata, RecordMetadata

__all__ = ["Producer"]

Headers = Mapping[str, bytes | str | None] | Iterable[tuple[str, bytes | str | None]] | None


def _parse_acks(acks: int | str) -> int:
    value = {"all": -1, "-1": -1, "0": 0, "1": 1}.get(str(acks).lower())
    if value is None:
        raise ValueError(f"acks must be 'all', -1, 0 or 1, got {acks!r}")
    return value


# Kafka's limit for idempotence: the broker keeps the last 5 batches per producer.
_MAX_IN_FLIGHT_IDEMPOTENT = 5


def _idempotence(
    enable_idempotence: bool | None,
    acks: int | str | None,
    max_in_flight: int,
    transactional_id: str | None,
) -> bool:
    """Java's rules: on unless turned off or unless settings it needs were changed
    (then off if it was not asked for, a ValueError if it was)."""
    if transactional_id is not None and enable_idempotence is False:
        raise ValueError(
            "a transactional producer is idempotent: remove enable_idempotence=False "
            "or transactional_id"
        )
    explicit = enable_idempotence is True or transactional_id is not None
    if enable_idempotence is False:
        return False
    conflicts = []
    if acks is not None and _parse_acks(acks) != -1:
        conflicts.append(f"acks={acks!r} (it needs acks='all')")
    if max_in_flight > _MAX_IN_FLIGHT_IDEMPOTENT:
        conflicts.append(
            f"max_in_flight_requests_per_connection={max_in_flight} "
            f"(it needs at most {_MAX_IN_FLIGHT_IDEMPOTENT})"
        )
    if conflicts and explicit:
        raise ValueError(
            "idempotence (enable_idempotence=True, or transactional_id) cannot work with "
            + " and ".join(conflicts)
            + ": change that setting or set enable_idempotence=False"
        )
    return not conflicts


def _to_bytes(data: Any, what: str) -> bytes | None:
    if data is None or data.__class__ is bytes:
        return data
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"{what} must be bytes, str or None (or set a serializer), got {type(data)}")


def _headers(headers: Headers) -> list[tuple[str, bytes | None]] | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in items]


def _busy_error(buffer_memory: int) -> TimeoutError:
    return TimeoutError(
        f"buffer_memory ({buffer_memory} bytes) stayed full for max_block_ms; "
        f"the brokers are not keeping up or not reachable"
    )


class Producer:
    """Asynchronous Kafka producer: ``async with Producer(...) as p: await p.send(...)``.

    Settings (Kafka's names): ``acks`` ('all'/-1, 0, 1), ``linger_ms``,
    ``batch_size`` (bytes per partition batch), ``compression`` (None, 'gzip',
    'snappy', 'lz4', 'zstd'), ``max_request_size``, ``buffer_memory``,
    ``max_block_ms``, ``delivery_timeout_ms``, ``retry_backoff_ms``,
    ``max_in_flight_requests_per_connection``, ``request_timeout_ms``,
    ``client_id``, ``allow_auto_create_topics``, ``key_serializer`` /
    ``value_serializer`` (callables to bytes), plus the connection settings of
    :class:`~pystream.client.config.ClientConfig`.

    ``enable_idempotence`` (default: on unless ``acks`` is 0/1 or more than 5
    requests may be in flight): producer id and sequence numbers, so retries
    neither duplicate nor reorder records; it forces ``acks='all'``.
    ``transactional_id`` makes the producer transactional (call
    :meth:`init_transactions` once), ``transaction_timeout_ms`` is how long the
    coordinator lets a transaction stay open before aborting it.
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        acks: int | str | None = None,
        linger_ms: float = 5,
        batch_size: int = 1_000_000,
        compression: str | None = None,
        max_request_size: int = 1_048_576,
        buffer_memory: int = 64 * 1024 * 1024,
        max_block_ms: int = 60_000,
        delivery_timeout_ms: int = 120_000,
        max_in_flight_requests_per_connection: int = 5,
        enable_idempotence: bool | None = None,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 60_000,
        allow_auto_create_topics: bool = True,
        key_serializer: Any = None,
        value_serializer: Any = None,
        **client_settings: Any,
    ) -> None:
        self.config = ClientConfig.from_kwargs(bootstrap_servers, **client_settings)
        self.enable_idempotence = _idempotence(
            enable_idempotence, acks, max_in_flight_requests_per_connection, transactional_id
        )
        self.acks = -1 if acks is None else _parse_acks(acks)
        if transactional_id is not None and not transactional_id:
            raise ValueError("transactional_id must be a non-empty string (or None)")
        if transaction_timeout_ms <= 0:
            raise ValueError("transaction_timeout_ms must be positive")
        self.transactional_id = transactional_id
        self.transaction_timeout_ms = transaction_timeout_ms
        if batch_size <= 0 or max_request_size <= 0:
            raise ValueError("batch_size and max_request_size must be positive")
        self.batch_size = batch_size
        self.max_request_size = max_request_size
        self.max_block = max_block_ms / 1000
        self.max_in_flight = max_in_flight_requests_per_connection
        self.codec = codec_from_name(compression or "none")
        self.key_serializer = key_serializer
        self.value_serializer = value_serializer
        self._core = ClientCore(self.config)
        self._core.allow_auto_topic_creation = allow_auto_create_topics
        self._acc = RecordAccumulator(
            batch_size=batch_size,
            linger_ms=linger_ms,
            codec=self.codec,
            buffer_memory=buffer_memory,
            delivery_timeout_ms=delivery_timeout_ms,
        )
        # Like Java's RecordTooLargeException: a record that cannot fit in a request
        # fails at send() instead of after a round trip.
        self._acc.max_record_size = max_request_size
        self._core.metadata_listeners.append(self._update_topics)
        self._sender: Sender | None = None
        self._txn: TransactionManager | None = None
        self._closed = False
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect (bootstrap) and start the sender; ``async with`` calls this."""
        if self._started:
            return
        await self._core.start()
        if self.enable_idempotence:
            self._txn = TransactionManager(
                self._core,
                transactional_id=self.transactional_id,
                transaction_timeout_ms=self.transaction_timeout_ms,
                retry_backoff_ms=self.config.retry_backoff_ms,
                wakeup=self._wakeup_sender,
            )
            self._txn.gate_sends = self._gate_sends
            self._gate_sends(self.transactional_id is not None)
        self._sender = Sender(
            self._core,
            self._acc,
            acks=self.acks,
            request_timeout_ms=self.config.request_timeout_ms,
            max_in_flight=self.max_in_flight,
            max_request_size=self.max_request_size,
            retry_backoff_ms=self.config.retry_backoff_ms,
            txn=self._txn,
        )
        self._sender.start()
        self._started = True

    def _wakeup_sender(self) -> None:
        if self._sender is not None:
            self._sender.wakeup()

    def _gate_sends(self, gated: bool) -> None:
        self._acc.gated = gated

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered now and wait until it is acknowledged (or failed)."""
        acc = self._acc
        pending = acc.begin_flush()
        try:
            if self._sender is not None:
                self._sender.wakeup()
            waits = [b.aio_future() for b in pending]
            if waits:
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*waits)
        finally:
            acc.end_flush()

    async def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout`` seconds), then stop; unsent records fail with
        :class:`ClientClosedError`."""
        if self._closed:
            return
        self._closed = True
        acc = self._acc
        txn = self._txn
        try:
            if txn is not None and txn.state in (
                TxnState.IN_TRANSACTION,
                TxnState.ABORTABLE_ERROR,
            ):
                # As Kafka's producer: an open transaction is aborted on close.
                async with asyncio.timeout(timeout):
                    await self.abort_transaction()
        except (TimeoutError, KafkaError, RuntimeError):
            pass
        acc.closed = True
        try:
            if self._started:
                await self.flush(timeout)
        except TimeoutError:
            pass
        finally:
            acc.closing = True
            error = ClientClosedError("the producer was closed before the record was delivered")
            for batch in acc.abort_all():
                acc.fail(batch, error)
            for batch in list(acc.incomplete):
                acc.fail(batch, error)
            if self._sender is not None:
                await self._sender.stop()
            await self._core.close()

    # ------------------------------------------------------------------ sending

    def _update_topics(self) -> None:
        """Metadata listener: partition counts and available partitions for send()."""
        acc = self._acc
        for name, info in self._core.metadata.topics.items():
            acc.set_topic(name, len(info.partitions), info.available)

    def _prepare(self, key: Any, value: Any, headers: Headers) -> tuple[Any, Any, Any]:
        """Serialize and normalise what the C fast path does not take as is."""
        if self.key_serializer is not None and key is not None:
            key = self.key_serializer(key)
        if self.value_serializer is not None and value is not None:
            value = self.value_serializer(value)
        if key is not None and key.__class__ is not bytes:
            key = _to_bytes(key, "key")
        if value is not None and value.__class__ is not bytes:
            value = _to_bytes(value, "value")
        return key, value, _headers(headers)

    def _try_send(
        self,
        topic: str,
        value: Any,
        key: Any,
        headers: Headers,
        partition: int | None,
        timestamp_ms: int | None,
    ) -> Any:
        if self._closed:
            raise ClientClosedError("the producer is closed")
        if self._txn is not None:
            self._txn.check_can_send()
        key, value, hdrs = self._prepare(key, value, headers)
        return self._acc.try_send(topic, value, key, hdrs, partition, timestamp_ms)

    async def _wait(self, need: object, topic: str, deadline: float) -> None:
        remaining = max(deadline - time.monotonic(), 0)
        if need is NEED_METADATA:
            await self._core.wait_for_topic(topic, remaining)
            self._update_topics()
        elif not await self._acc.wait_for_space_async(remaining):
            raise _busy_error(self._acc.buffer_memory)

    async def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordFuture:
        """Queue one record; ``await`` the returned future for its :class:`RecordMetadata`.

        ``key``/``value`` are bytes, str (UTF-8) or None (or anything the
        serializers take); ``headers`` a dict or list of ``(str, bytes)``.
        Waits only for unknown topic metadata or a full ``buffer_memory``
        (at most ``max_block_ms``).
        """
        self._check_started()
        if (
            headers is None
            and (value is None or value.__class__ is bytes)
            and (key is None or key.__class__ is bytes)
            and self.key_serializer is None
            and self.value_serializer is None
            and not self._closed
            and not self._acc.gated
        ):
            result = self._acc.try_send(topic, value, key, None, partition, timestamp_ms)
        else:
            result = self._try_send(topic, value, key, headers, partition, timestamp_ms)
        if result.__class__ is RecordFuture:
            return result
        deadline = time.monotonic() + self.max_block
        while result.__class__ is not RecordFuture:
            await self._wait(result, topic, deadline)
            result = self._try_send(topic, value, key, headers, partition, timestamp_ms)
        return result

    async def send_and_wait(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Send one record and wait for its acknowledgement."""
        future = await self.send(topic, value, key, headers, partition, timestamp_ms)
        return await future

    async def send_batch(
        self,
        topic: str,
        values: Sequence[bytes | None] | np.ndarray,
        keys: Sequence[bytes | None] | np.ndarray | None = None,
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> BatchSendFuture:
        """Send many records at once; whole batches are built in Cython.

        ``values``: a list of bytes (or None), or a numpy array whose rows are
        fixed-size records (``arr[i]`` is record i's value, e.g. shape
        ``(n, 100)`` uint8 or a structured dtype).  ``keys``: None, a list of
        bytes, or a numpy array of fixed-size keys (one row per record).
        Records with keys go to their murmur2 partition; without keys they
        fill one partition's batch, then the next (sticky).  Every record gets
        ``timestamp_ms`` (None = now).  ``await`` the returned future for a
        :class:`BatchMetadata` per batch.
        """
        self._check_started()
        deadline = time.monotonic() + self.max_block
        while True:
            result = self._build(topic, values, keys, partition, timestamp_ms)
            if result.__class__ is BatchSendFuture:
                return result
            await self._wait(result, topic, deadline)

    def _check_started(self) -> None:
        if not self._started:
            raise RuntimeError("call `await producer.start()` (or use `async with`) first")

    def _build(
        self,
        topic: str,
        values: Any,
        keys: Any,
        partition: int | None,
        timestamp_ms: int | None,
    ) -> Any:
        """Build and queue the batches of a send_batch (any thread), or say what to wait for."""
        if self._closed:
            raise ClientClosedError("the producer is closed")
        if self._txn is not None:
            self._txn.check_can_send()
        info = self._core.metadata.topics.get(topic)
        if info is None or not info.partitions or self._acc.num_partitions(topic) < 0:
            return NEED_METADATA
        if self._acc.buffered >= self._acc.buffer_memory:
            return NEED_SPACE
        if partition is not None and partition not in info.partitions:
            raise UnknownTopicOrPartitionError(
                f"topic {topic!r} has partitions 0..{len(info.partitions) - 1}, not {partition}"
            )
        ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
        if isinstance(values, np.ndarray):
            if keys is not None and not isinstance(keys, np.ndarray):
                # Variable-size keys with fixed-size values: take the list path.
                values = [bytes(row) for row in _rows_as_bytes(values)]
            else:
                batches = self._build_fixed(topic, info, values, keys, partition, ts)
                return BatchSendFuture(batches)
        batches = self._build_list(topic, info, values, keys, partition, ts)
        return BatchSendFuture(batches)

    def _build_list(
        self,
        topic: str,
        info: TopicInfo,
        values: Any,
        keys: Any,
        partition: int | None,
        ts: int,
    ) -> list[ProducerBatch]:
        values = values if isinstance(values, list) else list(values)
        if keys is not None:
            keys = keys if isinstance(keys, list) else list(keys)
            if len(keys) != len(values):
                raise ValueError(f"keys has {len(keys)} items but values has {len(values)}")
            if all(k is None for k in keys):
                keys = None
        if not values:
            return []
        groups: list[tuple[int | None, list, list | None]]
        if partition is not None:
            groups = [(partition, values, keys)]
        elif keys is not None:
            parts = partitions_for_keys(keys, len(info.partitions))
            if (parts < 0).any():
                parts[parts < 0] = self._acc.sticky_partition(topic)
            groups = []
            for p, index in _group_rows(parts):
                groups.append(
                    (p, take(values, index, 0, len(index)), take(keys, index, 0, len(index)))
                )
        else:
            groups = [(None, values, None)]
        now = time.monotonic()
        batches = []
        codec = self.codec
        for p, vals, ks in groups:
            start = 0
            for end in chunk_bounds(vals, ks, self.batch_size):
                target = self._acc.sticky_partition(topic) if p is None else p
                records = build_batch_from_values(
                    vals[start:end],
                    None if ks is None else ks[start:end],
                    ts,
                    compression=codec,
                )
                batch = ProducerBatch.prebuilt(topic, target, records, end - start, ts, now)
                # Queue each batch as soon as it is built: the sender starts on the
                # first while the rest are still being encoded.
                self._acc.add_prebuilt([batch])
                batches.append(batch)
                if p is None:
                    self._acc.next_sticky_partition(topic, target)
                start = end
        return batches

    def _build_fixed(
        self,
        topic: str,
        info: TopicInfo,
        values: np.ndarray,
        keys: np.ndarray | None,
        partition: int | None,
        ts: int,
    ) -> list[ProducerBatch]:
        count = values.shape[0] if values.ndim else 0
        if count == 0:
            return []
        data = _rows_as_bytes(values)
        record_size = data.shape[1]
        key_data = None
        key_size = -1
        if keys is not None:
            if keys.shape[0] != count:
                raise ValueError(f"keys has {keys.shape[0]} rows but values has {count}")
            key_rows = _rows_as_bytes(keys)
            key_size = key_rows.shape[1]
            key_data = key_rows.reshape(-1)
        flat = data.reshape(-1)
        per_batch = max(1, (self.batch_size - 61) // record_overhead(key_size, record_size))
        now = time.monotonic()
        codec = self.codec
        batches = []

        def add(target: int, rows: np.ndarray | None, start: int, n: int) -> None:
            records = build_fixed_batch(
                flat,
                record_size,
                start,
                n,
                rows,
                ts,
                key_data=key_data,
                key_size=key_size,
                compression=codec,
            )
            batch = ProducerBatch.prebuilt(topic, target, records, n, ts, now)
            self._acc.add_prebuilt([batch])  # the sender can start at once
            batches.append(batch)

        if partition is None and key_data is not None:
            parts = partitions_for_fixed_keys(key_data, key_size, count, len(info.partitions))
            for p, index in _group_rows(parts):
                for start in range(0, len(index), per_batch):
                    add(p, index, start, min(per_batch, len(index) - start))
        else:
            for start in range(0, count, per_batch):
                if partition is None:
                    target = self._acc.sticky_partition(topic)
                    add(target, None, start, min(per_batch, count - start))
                    self._acc.next_sticky_partition(topic, target)
                else:
                    add(partition, None, start, min(per_batch, count - start))
        return batches

    # ------------------------------------------------------------------ transactions

    def _transactional(self) -> TransactionManager:
        self._check_started()
        if self._txn is None or not self._txn.is_transactional:
            raise RuntimeError("transactions need a transactional_id (set it on the Producer)")
        return self._txn

    async def init_transactions(self) -> None:
        """Register the ``transactional_id`` with its coordinator (InitProducerId): fences
        any older producer with the same id and completes its open transaction."""
        await self._transactional().init_transactions()

    async def begin_transaction(self) -> None:
        """Start a transaction: every record sent until commit/abort belongs to it."""
        self._transactional().begin()

    async def send_offsets_to_transaction(
        self,
        offsets: Mapping[Any, OffsetAndMetadata | int],
        group_metadata: ConsumerGroupMetadata | str,
    ) -> None:
        """Commit consumer offsets as part of the transaction (consume-transform-produce).

        ``offsets``: ``{TopicPartition: OffsetAndMetadata or offset}``, the next
        record to consume per partition; ``group_metadata``: the consumer's
        ``group_metadata()`` (or a group id).  They are committed only if the
        transaction is.
        """
        txn = self._transactional()
        if isinstance(group_metadata, str):
            group_metadata = ConsumerGroupMetadata(group_metadata)
        elif not isinstance(group_metadata, ConsumerGroupMetadata):
            raise TypeError(
                f"group_metadata must be a ConsumerGroupMetadata (consumer.group_metadata()) "
                f"or a group id, got {type(group_metadata).__name__}"
            )
        await txn.send_offsets(offsets, group_metadata)

    async def commit_transaction(self) -> None:
        """Send every record of the transaction, then commit it (EndTxn).

        Raises :class:`~pystream.errors.ProducerFencedError` (fatal: close the
        producer) or the error that made the transaction fail (abortable: call
        :meth:`abort_transaction`).
        """
        txn = self._transactional()
        txn.check_in_transaction("commit")
        txn.state = TxnState.COMMITTING
        await self.flush()
        if txn.state is not TxnState.COMMITTING:
            assert txn.last_error is not None
            raise txn.last_error
        await txn.end(committed=True)

    async def abort_transaction(self) -> None:
        """Abort the transaction: unsent records fail with
        :class:`~pystream.client.errors.TransactionAbortedError`, sent ones are
        never seen by ``read_committed`` consumers."""
        txn = self._transactional()
        txn.raise_if_fatal()
        if txn.state not in (TxnState.IN_TRANSACTION, TxnState.ABORTABLE_ERROR):
            raise RuntimeError(f"no transaction to abort (state {txn.state.value})")
        txn.state = TxnState.ABORTING
        assert self._sender is not None
        error = TransactionAbortedError("the record was not sent: its transaction was aborted")
        for batch in self._acc.abort_all():
            self._sender._fail(batch, error)
        # Batches already sent finish first: EndTxn must come after them.
        waits = [b.aio_future() for b in list(self._acc.incomplete)]
        if waits:
            await asyncio.gather(*waits)
        await txn.end(committed=False)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Producer]:
        """``async with producer.transaction():`` begins a transaction, commits it at the
        end of the block, aborts it if the block raises (the exception goes on)."""
        await self.begin_transaction()
        try:
            yield self
        except BaseException:
            txn = self._txn
            if txn is not None and txn.state is not TxnState.FATAL_ERROR:
                await self.abort_transaction()
            raise
        await self.commit_transaction()

    async def partitions_for(self, topic: str) -> list[int]:
        """The topic's partition ids (waits for its metadata up to ``max_block_ms``)."""
        self._check_started()
        info = await self._core.wait_for_topic(topic, self.max_block)
        return sorted(info.partitions)

    async def wait_for_topic(self, topic: str, missing_is_final: bool = False) -> None:
        """Wait (up to ``max_block_ms``) until the topic's partitions are known; asking for
        it lets the broker auto-create it (``allow_auto_create_topics``).  With
        ``missing_is_final`` a broker that answers UNKNOWN_TOPIC_OR_PARTITION (it does not
        auto-create) raises UnknownTopicOrPartitionError at once instead."""
        await self._core.wait_for_topic(topic, self.max_block, missing_is_final)


def _rows_as_bytes(array: np.ndarray) -> np.ndarray:
    """A C-contiguous ``(rows, bytes_per_row)`` uint8 view (or copy) of an array."""
    arr = np.ascontiguousarray(array)
    if arr.ndim == 0:
        raise ValueError("expected an array of records (one row per record), got a scalar")
    rows = arr.shape[0]
    return arr.view(np.uint8).reshape(rows, -1) if rows else arr.view(np.uint8).reshape(0, 0)


def _group_rows(parts: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(partition, row numbers in input order) for each partition present."""
    order = np.argsort(parts, kind="stable").astype(np.int64)
    sorted_parts = parts[order]
    bounds = np.flatnonzero(np.diff(sorted_parts)) + 1
    out = []
    for chunk in np.split(order, bounds):
        if len(chunk):
            out.append((int(parts[chunk[0]]), np.ascontiguousarray(chunk)))
    return out
