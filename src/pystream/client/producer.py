"""The asyncio producer (``pystream.aio.Producer``); the sync ``pystream.Producer`` wraps it.

``send()`` does its work on the calling thread and returns at once: it picks
the partition (Java's murmur2 / sticky partitioner), appends the record to
its partition's open batch and hands back a :class:`RecordFuture`.  Only
when the topic's metadata is unknown or ``buffer_memory`` is full does it
wait (at most ``max_block_ms``).  ``send_batch()`` builds whole RecordBatches
in Cython from a list of values or a numpy array of fixed-size records.  The
:class:`~pystream.client.sender.Sender` task ships batches to the leaders.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from pystream._core.compression import codec_from_name
from pystream._core.records import build_batch_from_values
from pystream.errors import UnknownTopicOrPartitionError

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
from .errors import ClientClosedError
from .futures import BatchSendFuture
from .metadata import TopicInfo
from .sender import Sender
from .types import RecordMetadata

__all__ = ["Producer"]

Headers = Mapping[str, bytes | str | None] | Iterable[tuple[str, bytes | str | None]] | None


def _parse_acks(acks: int | str) -> int:
    value = {"all": -1, "-1": -1, "0": 0, "1": 1}.get(str(acks).lower())
    if value is None:
        raise ValueError(f"acks must be 'all', -1, 0 or 1, got {acks!r}")
    return value


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
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        acks: int | str = "all",
        linger_ms: float = 5,
        batch_size: int = 1_000_000,
        compression: str | None = None,
        max_request_size: int = 1_048_576,
        buffer_memory: int = 64 * 1024 * 1024,
        max_block_ms: int = 60_000,
        delivery_timeout_ms: int = 120_000,
        max_in_flight_requests_per_connection: int = 5,
        allow_auto_create_topics: bool = True,
        key_serializer: Any = None,
        value_serializer: Any = None,
        **client_settings: Any,
    ) -> None:
        self.config = ClientConfig.from_kwargs(bootstrap_servers, **client_settings)
        self.acks = _parse_acks(acks)
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
        self._closed = False
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect (bootstrap) and start the sender; ``async with`` calls this."""
        if self._started:
            return
        await self._core.start()
        self._sender = Sender(
            self._core,
            self._acc,
            acks=self.acks,
            request_timeout_ms=self.config.request_timeout_ms,
            max_in_flight=self.max_in_flight,
            max_request_size=self.max_request_size,
            retry_backoff_ms=self.config.retry_backoff_ms,
        )
        self._sender.start()
        self._started = True

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

    async def partitions_for(self, topic: str) -> list[int]:
        """The topic's partition ids (waits for its metadata up to ``max_block_ms``)."""
        self._check_started()
        info = await self._core.wait_for_topic(topic, self.max_block)
        return sorted(info.partitions)

    async def wait_for_topic(self, topic: str) -> None:
        await self._core.wait_for_topic(topic, self.max_block)


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
