"""Purgatory: requests that wait for a condition, woken by events, not by polling.

A delayed operation (a long-poll Fetch waiting for ``min_bytes``, an ``acks=all``
Produce waiting for the ISR, a JoinGroup waiting for its members) watches one or
more keys, e.g. ``(topic, partition)``.  Whoever changes a key's state -- an
append, a high watermark move -- calls :meth:`Purgatory.check_and_complete` for
that key and every operation watching it re-checks its condition.  An operation
completes exactly once: when its condition holds, when its deadline passes, or
when it is cancelled.  This is Kafka's DelayedOperationPurgatory, on asyncio,
shared by the broker, replication and the group coordinator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

Key = Hashable
T = TypeVar("T")


class DelayedOperation(Generic[T]):
    """Waits until ``try_complete()`` returns a result or ``timeout_ms`` passes.

    ``try_complete`` returns ``None`` while the condition does not hold; on
    timeout ``on_expire`` computes the result (e.g. whatever data there is).
    With ``keyed``, ``try_complete(key)`` is told which key woke it (None for the
    check on entry), so an operation watching many keys can look at that one only.
    """

    __slots__ = ("_try_complete", "_on_expire", "_future", "_timer", "keys", "_keyed")

    def __init__(
        self,
        try_complete: Callable[..., T | None],
        on_expire: Callable[[], T],
        keys: Iterable[Key],
        *,
        keyed: bool = False,
    ) -> None:
        self._keyed = keyed
        self._try_complete = try_complete
        self._on_expire = on_expire
        self._future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._timer: asyncio.TimerHandle | None = None
        self.keys = tuple(keys)

    @property
    def is_completed(self) -> bool:
        return self._future.done()

    def result(self) -> T:
        """The result of a completed operation (``check()`` returned True)."""
        return self._future.result()

    def check(self, key: Key | None = None) -> bool:
        """Re-check the condition (``key`` changed, if known); complete if it holds.  True if
        completed now or before."""
        if self._future.done():
            return True
        result = self._try_complete(key) if self._keyed else self._try_complete()
        if result is None:
            return False
        self._finish(result)
        return True

    def expire(self) -> None:
        if not self._future.done():
            self._finish(self._on_expire())

    def _finish(self, result: T) -> None:
        if self._timer is not None:
            self._timer.cancel()
        # on_expire may complete this very operation re-entrantly (a group's join timeout
        # rebalances, which re-checks the operations on its key): the first result stands.
        if not self._future.done():
            self._future.set_result(result)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._future.cancel()


class Purgatory:
    """Watch lists of delayed operations by key."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._watchers: dict[Key, list[DelayedOperation]] = {}

    def __len__(self) -> int:
        """Operations currently watched (an operation watching n keys counts once)."""
        return len({id(op) for ops in self._watchers.values() for op in ops})

    async def wait(self, operation: DelayedOperation[T], timeout_ms: int) -> T:
        """Complete now if possible, else watch its keys until done or timed out."""
        if operation.check():
            return await operation._future
        if timeout_ms <= 0:
            operation.expire()
            return await operation._future
        for key in operation.keys:
            self._watchers.setdefault(key, []).append(operation)
        loop = asyncio.get_running_loop()
        operation._timer = loop.call_later(timeout_ms / 1000.0, operation.expire)
        try:
            return await operation._future
        finally:
            if not operation.is_completed:
                operation.cancel()
            self._unwatch(operation)

    def check_and_complete(self, key: Key) -> int:
        """Re-check every operation watching ``key``; return how many completed."""
        operations = self._watchers.get(key)
        if not operations:
            return 0
        completed = 0
        for operation in list(operations):
            if operation.check(key):
                completed += 1
        return completed

    def _unwatch(self, operation: DelayedOperation) -> None:
        for key in operation.keys:
            operations = self._watchers.get(key)
            if operations is None:
                continue
            try:
                operations.remove(operation)
            except ValueError:
                pass
            if not operations:
                del self._watchers[key]
