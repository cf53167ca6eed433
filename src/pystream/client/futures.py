"""What :meth:`Producer.send` and :meth:`Producer.send_batch` return.

Futures are per *batch* (one ``concurrent.futures.Future``, plus one asyncio
future created only if someone awaits on the event loop); a record's
:class:`RecordFuture` (Cython, in ``_accumulator``) is a two-field handle onto
its batch, so ``send()`` allocates almost nothing per record.
``result(timeout)`` works from any thread; ``await`` works on the producer's
event loop (the :mod:`pystream.aio` classes).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Generator
from typing import Any

from ._accumulator import ProducerBatch, RecordFuture
from .types import BatchMetadata

__all__ = ["BatchSendFuture", "RecordFuture"]


class BatchSendFuture:
    """The outcome of one :meth:`Producer.send_batch`: ``result(timeout)`` -> list of
    :class:`BatchMetadata`, one per batch written, in input order per partition."""

    __slots__ = ("_batches",)

    def __init__(self, batches: list[ProducerBatch]) -> None:
        self._batches = batches

    def __repr__(self) -> str:
        done = sum(b.future.done() for b in self._batches)
        return f"<BatchSendFuture {done}/{len(self._batches)} batches done>"

    @property
    def record_count(self) -> int:
        return sum(b.record_count for b in self._batches)

    def done(self) -> bool:
        return all(b.future.done() for b in self._batches)

    def add_done_callback(self, fn: Callable[[BatchSendFuture], None]) -> None:
        """Call ``fn(self)`` once every batch is acknowledged or failed (on the thread that
        completes the last one: the client's loop, or this one if all are done)."""
        left = len(self._batches)
        if not left:
            fn(self)
            return
        lock = threading.Lock()

        def one_done(_: concurrent.futures.Future) -> None:
            nonlocal left
            with lock:
                left -= 1
                last = left == 0
            if last:
                fn(self)

        for b in self._batches:
            b.future.add_done_callback(one_done)

    def result(self, timeout: float | None = None) -> list[BatchMetadata]:
        """Wait for every batch; raises the first failure, or ``TimeoutError``."""
        futures = [b.future for b in self._batches]
        done, pending = concurrent.futures.wait(futures, timeout)
        if pending:
            raise TimeoutError(
                f"{len(pending)} of {len(futures)} batches not acknowledged within {timeout}s"
            )
        return [self._metadata(b) for b in self._batches]

    @staticmethod
    def _metadata(b: ProducerBatch) -> BatchMetadata:
        base_offset, log_append_time = b.future.result(0)
        timestamp = log_append_time if log_append_time >= 0 else b.timestamp_of(0)
        return BatchMetadata(b.topic, b.partition, base_offset, b.record_count, timestamp)

    def __await__(self) -> Generator[Any, None, list[BatchMetadata]]:
        for b in self._batches:
            if not b.future.done():
                yield from b.aio_future().__await__()
        return [self._metadata(b) for b in self._batches]
