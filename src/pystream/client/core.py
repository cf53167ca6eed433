"""Connections, metadata and request routing shared by one client's parts (one event loop).

The producer's sender, the consumer's fetcher and coordinator, and the admin
client all talk to brokers through a :class:`ClientCore`:

* connections are keyed by address, opened on demand, reused, and retried
  with exponential backoff (``reconnect_backoff_ms`` .. ``reconnect_backoff_max_ms``);
* bootstrap tries every ``bootstrap_servers`` entry (in random order) until
  one answers, so one dead server does not stop a client;
* metadata is refreshed on demand (coalesced: concurrent callers share one
  request), after errors (:meth:`request_update`, rate-limited by
  ``retry_backoff_ms``), and every ``metadata_max_age_ms``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from pystream.errors import ErrorCode, KafkaError, UnknownTopicOrPartitionError, error_for_code
from pystream.protocol.messages.find_coordinator import FindCoordinatorRequest
from pystream.protocol.messages.metadata import MetadataRequest

from .config import ClientConfig
from .connection import BrokerConnection
from .errors import ClientClosedError, KafkaConnectionError
from .metadata import ClusterMetadata, TopicInfo

__all__ = ["ClientCore"]

log = logging.getLogger("pystream.client")

Address = tuple[str, int]


class ClientCore:
    """Everything one client needs to reach the cluster; lives on one event loop."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.metadata = ClusterMetadata()
        self.topics: set[str] = set()
        """Topics whose metadata this client keeps (those it produces to or consumes)."""
        self.want_all_topics = False
        self.allow_auto_topic_creation = False
        self.metadata_listeners: list[Callable[[], None]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._connections: dict[Address, BrokerConnection] = {}
        self._connecting: dict[Address, asyncio.Task[BrokerConnection]] = {}
        self._failures: dict[Address, tuple[int, float]] = {}
        self._refresh: asyncio.Task[None] | None = None
        self._refresh_covers: frozenset[str] | None = None
        self._update_scheduled: asyncio.TimerHandle | None = None
        self._periodic: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind to the running loop and fetch the first metadata (bootstrap)."""
        self.loop = asyncio.get_running_loop()
        await self.refresh_metadata()
        self._periodic = self.loop.create_task(self._refresh_periodically())

    async def close(self) -> None:
        self._closed = True
        for task in (self._periodic, self._refresh):
            if task is not None and not task.done():
                task.cancel()
        if self._update_scheduled is not None:
            self._update_scheduled.cancel()
        for task in list(self._connecting.values()):
            task.cancel()
        for conn in list(self._connections.values()):
            conn.close(ClientClosedError("the client was closed"))
        self._connections.clear()

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ connections

    def connected(self, node_id: int) -> BrokerConnection | None:
        """The open connection to a broker, or None (no waiting)."""
        broker = self.metadata.brokers.get(node_id)
        if broker is None:
            return None
        conn = self._connections.get((broker.host, broker.port))
        return None if conn is None or conn.closed else conn

    async def connection(self, node_id: int) -> BrokerConnection:
        """Connection to a broker by node id (metadata must know it)."""
        broker = self.metadata.brokers.get(node_id)
        if broker is None:
            await self.refresh_metadata()
            broker = self.metadata.brokers.get(node_id)
            if broker is None:
                raise KafkaConnectionError(f"broker id {node_id} is not in the cluster metadata")
        return await self.connect(broker.host, broker.port)

    async def connect(self, host: str, port: int) -> BrokerConnection:
        """Connection to an address: the open one, the one being opened, or a new one."""
        if self._closed:
            raise ClientClosedError("the client was closed")
        addr = (host, port)
        conn = self._connections.get(addr)
        if conn is not None and not conn.closed:
            return conn
        task = self._connecting.get(addr)
        if task is None:
            assert self.loop is not None
            task = self._connecting[addr] = self.loop.create_task(self._open(addr))
        return await asyncio.shield(task)

    async def _open(self, addr: Address) -> BrokerConnection:
        config = self.config
        try:
            failures, not_before = self._failures.get(addr, (0, 0.0))
            delay = not_before - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                conn = await BrokerConnection.open(
                    addr[0],
                    addr[1],
                    client_id=config.client_id,
                    request_timeout_ms=config.request_timeout_ms,
                    connect_timeout_ms=config.socket_connection_setup_timeout_ms,
                    max_response_size=config.max_response_size,
                    security=config.security(),
                )
            except KafkaConnectionError:
                backoff = min(
                    config.reconnect_backoff_ms * 2**failures, config.reconnect_backoff_max_ms
                )
                backoff *= random.uniform(0.8, 1.2)  # jitter, like Kafka
                self._failures[addr] = (failures + 1, time.monotonic() + backoff / 1000)
                raise
            self._failures.pop(addr, None)
            self._connections[addr] = conn
            return conn
        finally:
            self._connecting.pop(addr, None)

    def _candidates(self) -> list[Address]:
        brokers = [(b.host, b.port) for b in self.metadata.brokers.values()]
        random.shuffle(brokers)
        bootstrap = list(self.config.bootstrap_servers)
        random.shuffle(bootstrap)
        seen: set[Address] = set()
        out = []
        for addr in brokers + bootstrap:
            if addr not in seen:
                seen.add(addr)
                out.append(addr)
        # Addresses in backoff last.
        now = time.monotonic()
        out.sort(key=lambda a: self._failures.get(a, (0, 0.0))[1] > now)
        return out

    async def any_connection(self) -> BrokerConnection:
        """The least loaded open connection, else the first broker/bootstrap server that answers."""
        open_ = [c for c in self._connections.values() if not c.closed]
        if open_:
            return min(open_, key=lambda c: c.in_flight)
        errors = []
        for host, port in self._candidates():
            try:
                return await self.connect(host, port)
            except KafkaConnectionError as exc:
                errors.append(str(exc))
        raise KafkaConnectionError(
            "no broker is reachable; tried: " + "; ".join(errors or ["(no addresses)"])
        )

    async def request(
        self,
        node_id: int | None,
        api_key: int,
        build: Callable[[int], Any],
        *,
        timeout: float | None = None,
    ) -> Any:
        """Build the request for the negotiated version (``build(version)``), send, await."""
        conn = await (self.any_connection() if node_id is None else self.connection(node_id))
        version = conn.version(api_key)
        return await conn.request(api_key, build(version), version, timeout)

    async def find_coordinator(
        self, key: str, key_type: int, *, attempts: int = 100
    ) -> BrokerConnection:
        """A connection to the coordinator of a group (``key_type`` 0) or a transactional
        id (1), found with FindCoordinator; retries while it is loading or moving."""
        what = "group" if key_type == 0 else "transactional id"
        backoff = self.config.retry_backoff_ms / 1000
        for _ in range(attempts):
            conn = await self.any_connection()
            body = FindCoordinatorRequest(key=key, key_type=key_type)
            response = await conn.request(10, body, conn.version(10))
            code = response.error_code
            if code == 0:
                return await self.connect(response.host, response.port)
            cls = error_for_code(code)
            if not cls.retriable:
                detail = response.error_message or cls.error_name
                raise cls(f"FindCoordinator for {what} {key!r}: {detail}")
            await asyncio.sleep(backoff)
        raise error_for_code(ErrorCode.COORDINATOR_NOT_AVAILABLE)(
            f"no coordinator for {what} {key!r} after {attempts} attempts"
        )

    # ------------------------------------------------------------------ metadata

    async def refresh_metadata(self, topics: Iterable[str] = ()) -> None:
        """Fetch metadata for every topic of interest (plus ``topics``); concurrent callers
        share one request."""
        self.topics.update(topics)
        while True:
            task = self._refresh
            if task is None or task.done():
                assert self.loop is not None
                self._refresh_covers = None if self.want_all_topics else frozenset(self.topics)
                task = self._refresh = self.loop.create_task(self._fetch_metadata())
            covers = self._refresh_covers
            await asyncio.shield(task)
            if covers is None or self.topics <= covers:
                return

    async def _fetch_metadata(self) -> None:
        all_topics = self.want_all_topics
        names = None if all_topics else sorted(self.topics)
        last: Exception | None = None
        for _ in range(max(3, len(self.config.bootstrap_servers))):
            conn = await self.any_connection()
            version = conn.version(3)
            body = MetadataRequest(
                topics=None
                if names is None
                else [MetadataRequest.MetadataRequestTopic(name=n) for n in names],
                allow_auto_topic_creation=self.allow_auto_topic_creation,
            )
            try:
                response = await conn.request(3, body, version)
            except KafkaConnectionError as exc:
                last = exc
                conn.close()
                continue
            self.metadata.update(response, all_topics)
            for listener in list(self.metadata_listeners):
                listener()
            return
        assert last is not None
        raise last

    def request_update(self) -> None:
        """Refresh metadata soon (after an error); cheap to call often."""
        if self._closed or self._update_scheduled is not None or self.loop is None:
            return
        wait = self.metadata.updated_at + self.config.retry_backoff_ms / 1000 - time.monotonic()
        self._update_scheduled = self.loop.call_later(max(wait, 0), self._start_update)

    def _start_update(self) -> None:
        self._update_scheduled = None
        if self._closed:
            return
        assert self.loop is not None
        task = self.loop.create_task(self.refresh_metadata())
        task.add_done_callback(_log_failure)

    async def _refresh_periodically(self) -> None:
        max_age = self.config.metadata_max_age_ms / 1000
        while not self._closed:
            wait = self.metadata.updated_at + max_age - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                await self.refresh_metadata()
            except KafkaError as exc:
                log.warning("periodic metadata refresh failed: %s", exc)
                await asyncio.sleep(self.config.retry_backoff_ms / 1000)

    async def wait_for_topic(
        self, topic: str, timeout: float, missing_is_final: bool = False
    ) -> TopicInfo:
        """The topic's metadata, refreshing until it has partitions or ``timeout`` passes.

        With ``missing_is_final`` a broker answering UNKNOWN_TOPIC_OR_PARTITION ends the
        wait at once (a consumer that does not auto-create, like Kafka's partitionsFor);
        otherwise the topic may still be auto-created or propagating, so it is retried.
        """
        self.topics.add(topic)
        deadline = time.monotonic() + timeout
        backoff = self.config.retry_backoff_ms / 1000
        while True:
            info = self.metadata.topics.get(topic)
            if info is not None and info.partitions:
                return info
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                code = self.metadata.topic_errors.get(topic)
                if code is not None and code != ErrorCode.LEADER_NOT_AVAILABLE:
                    raise error_for_code(code)(
                        f"topic {topic!r}: {error_for_code(code).error_name} "
                        f"(create it, or let the broker auto-create it)"
                    )
                raise UnknownTopicOrPartitionError(
                    f"topic {topic!r} is not in the metadata after {timeout:.1f}s"
                )
            try:
                async with asyncio.timeout(remaining):
                    await self.refresh_metadata()
            except (KafkaConnectionError, TimeoutError):
                pass
            info = self.metadata.topics.get(topic)
            if info is None or not info.partitions:
                if (
                    missing_is_final
                    and self.metadata.topic_errors.get(topic)
                    == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                ):
                    raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
                await asyncio.sleep(min(backoff, max(deadline - time.monotonic(), 0)))


def _log_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.warning("metadata refresh failed: %s", exc)
