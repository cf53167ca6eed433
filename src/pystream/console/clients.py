"""The console's Kafka clients: one admin client and one producer, connected on first use
and again after the cluster was unreachable, so the console starts (and says so on every
page) while the cluster is down and recovers when it is back."""

from __future__ import annotations

import asyncio
from typing import Any

from pystream.aio import AdminClient, Consumer, Producer
from pystream.errors import NetworkException, RequestTimedOutError

from .config import ConsoleConfig

__all__ = ["ConsoleClients", "is_unreachable"]


def is_unreachable(exc: BaseException) -> bool:
    """A failure to talk to the cluster at all (as opposed to a Kafka error it answered)."""
    # RequestTimedOut: the client gave up waiting (a broker that hangs is as good as down).
    return isinstance(exc, NetworkException | RequestTimedOutError | TimeoutError | OSError)


class ConsoleClients:
    """``await clients.admin()`` / ``producer()``; ``consumer()`` makes a group-less consumer
    for one browse (its own fetch positions, so browses never share state)."""

    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self._admin: AdminClient | None = None
        self._producer: Producer | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    async def admin(self) -> AdminClient:
        async with self._lock:
            if self._admin is None:
                self._admin = await self._started(AdminClient)
            return self._admin

    async def producer(self) -> Producer:
        async with self._lock:
            if self._producer is None:
                self._producer = await self._started(Producer)
            return self._producer

    def consumer(self) -> Consumer:
        """Unstarted; the caller starts and closes it (``async with``)."""
        return Consumer(
            bootstrap_servers=self.config.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            **self.config.clients(),
        )

    async def _started(self, kind: type[Any]) -> Any:
        client = kind(self.config.bootstrap_servers, **self.config.clients())
        try:
            await client.start()
        except BaseException:
            await client.close()
            raise
        return client

    def lost(self, exc: BaseException) -> str:
        """The cluster could not be reached (``exc``): drop the clients, so that the next
        request bootstraps afresh (the cluster may be back); the reason, for the page."""
        stale = [c for c in (self._admin, self._producer) if c is not None]
        self._admin = self._producer = None
        for client in stale:  # closed in the background; held until then
            task = asyncio.get_running_loop().create_task(client.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return str(exc) or type(exc).__name__

    async def close(self) -> None:
        await asyncio.gather(*self._closing, return_exceptions=True)
        for client in (self._producer, self._admin):
            if client is not None:
                await client.close()
        self._admin = self._producer = None
