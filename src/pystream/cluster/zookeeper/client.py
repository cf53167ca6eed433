"""Connecting to ZooKeeper, atomic multi-ops, and the thread handoff to asyncio.

Threads.  kazoo runs its own threads: one talks to the server, one runs watch
callbacks in order, and session reconnections spawn short-lived ones.  The
broker's state belongs to its asyncio loop, so kazoo threads never touch it:
they read what changed and *post* it to the loop with
:class:`LoopHandoff` (``loop.call_soon_threadsafe``), where it is applied in the
order it was posted.  Calls *into* kazoo (``get``, ``create``, ``commit``...)
block until the server answers; the metadata store makes them from the loop
for its (rare) admin writes, the controller from its own event thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, KazooException, RolledBackError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType
from kazoo.retry import KazooRetry

from pystream.cluster.zookeeper.paths import PERSISTENT_PATHS, parse_connect
from pystream.errors import BrokerStartupError, RequestTimedOutError

log = logging.getLogger(__name__)

DEFAULT_SESSION_TIMEOUT_MS = 18_000  # Kafka's zookeeper.session.timeout.ms
DEFAULT_CONNECTION_TIMEOUT_MS = 18_000

F = TypeVar("F", bound=Callable[..., Any])


class ZooKeeperUnavailableError(BrokerStartupError):
    """ZooKeeper could not be reached (at startup) within the connection timeout."""


class TransactionFailed(Exception):
    """A multi-op was rolled back: ``error`` is why, ``index`` the operation that failed."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(f"operation {index} failed: {type(error).__name__}")
        self.index = index
        self.error = error


def connect(
    connect_string: str,
    session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
    connection_timeout_ms: int = DEFAULT_CONNECTION_TIMEOUT_MS,
) -> KazooClient:
    """A started client for ``zookeeper.connect``, its chroot and Kafka's base paths created.

    The chroot is created through a short-lived client without it (a chrooted client
    cannot create its own root), as Kafka does.
    """
    hosts, chroot = parse_connect(connect_string)
    timeout_s = connection_timeout_ms / 1000
    if chroot:
        bootstrap = _start(KazooClient(hosts=hosts, timeout=session_timeout_ms / 1000), timeout_s)
        try:
            bootstrap.ensure_path(chroot)
        finally:
            bootstrap.stop()
            bootstrap.close()
    client = _start(
        KazooClient(
            hosts=hosts + chroot,
            timeout=session_timeout_ms / 1000,
            # Reconnect for ever, at least every second: kazoo's default backs off to an
            # hour, far too long for a broker cut off from ZooKeeper by a short partition.
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=1.0),
        ),
        timeout_s,
    )
    for path in PERSISTENT_PATHS:
        client.ensure_path(path)
    return client


def _hosts(client: KazooClient) -> str:
    """``host:port,...`` as the operator wrote them in zookeeper.connect."""
    return ",".join(f"{host}:{port}" for host, port in client.hosts)


def _start(client: KazooClient, timeout_s: float) -> KazooClient:
    try:
        client.start(timeout=timeout_s)
    except KazooTimeoutError:
        client.stop()
        client.close()
        raise ZooKeeperUnavailableError(
            f"cannot connect to ZooKeeper at {_hosts(client)} within {timeout_s:g}s; check "
            "zookeeper.connect and that ZooKeeper is running "
            "(zookeeper.connection.timeout.ms sets the wait)"
        ) from None
    return client


def close(client: KazooClient) -> None:
    """End the session now (its ephemeral znodes go at once) and free the client's threads."""
    client.stop()
    client.close()


def commit(transaction: Any, timeout_s: float | None = None) -> list[Any]:
    """Commit a kazoo transaction; raise :class:`TransactionFailed` if it was rolled back.

    ZooKeeper applies a multi-op completely or not at all; the results say which
    operation refused (the others report RolledBackError).
    """
    results = transaction.commit_async().get(timeout=timeout_s)
    return check_results(results)


def check_results(results: list[Any]) -> list[Any]:
    """The results of a committed multi-op, or TransactionFailed naming the refusing op."""
    for index, result in enumerate(results):
        if isinstance(result, Exception) and not isinstance(result, RolledBackError):
            raise TransactionFailed(index, result)
    if any(isinstance(r, Exception) for r in results):  # every op rolled back: no cause given
        raise TransactionFailed(0, RolledBackError())
    return results


class TimedClient:
    """kazoo's blocking calls, each with a deadline.

    kazoo queues requests while it is disconnected and answers them after it
    reconnects — possibly much later.  A caller on the event loop must not wait out a
    network partition: it fails at once when disconnected, and after ``timeout_s``
    otherwise (KazooTimeoutError; a write may then still happen later).
    """

    def __init__(self, client: KazooClient, timeout_s: float) -> None:
        self.client = client
        self.timeout_s = timeout_s

    def _wait(self, result: Any) -> Any:
        return result.get(timeout=self.timeout_s)

    def _ready(self) -> None:
        if not self.client.connected:
            raise ConnectionLoss("not connected to ZooKeeper")

    def get(self, path: str, watch: Callable[..., Any] | None = None) -> Any:
        self._ready()
        return self._wait(self.client.get_async(path, watch))

    def exists(self, path: str, watch: Callable[..., Any] | None = None) -> Any:
        self._ready()
        return self._wait(self.client.exists_async(path, watch))

    def get_children(self, path: str, watch: Callable[..., Any] | None = None) -> list[str]:
        self._ready()
        return self._wait(self.client.get_children_async(path, watch))

    def create(
        self, path: str, value: bytes = b"", *, makepath: bool = False, ephemeral: bool = False
    ) -> str:
        self._ready()
        return self._wait(
            self.client.create_async(path, value, ephemeral=ephemeral, makepath=makepath)
        )

    def set(self, path: str, value: bytes, version: int = -1) -> Any:
        self._ready()
        return self._wait(self.client.set_async(path, value, version))

    def delete(self, path: str, version: int = -1) -> Any:
        self._ready()
        return self._wait(self.client.delete_async(path, version))

    def transaction(self) -> Any:
        return self.client.transaction()

    def commit(self, transaction: Any) -> list[Any]:
        self._ready()
        return commit(transaction, self.timeout_s)


def kafka_errors(fn: F) -> F:
    """Report ZooKeeper trouble (connection loss, expired session...) as a Kafka error.

    REQUEST_TIMED_OUT is retriable, and honest: a write whose answer was lost may or
    may not have been made, so the client should look before it retries.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (KazooException, KazooTimeoutError) as exc:
            raise zookeeper_error(exc, fn.__name__) from exc

    return wrapper  # type: ignore[return-value]


def zookeeper_error(exc: Exception, during: str) -> RequestTimedOutError:
    """The Kafka error a client is told when ZooKeeper failed ``during`` an operation."""
    return RequestTimedOutError(
        f"ZooKeeper did not answer ({type(exc).__name__}) during {during}; the change may "
        "or may not have been made: check, then retry"
    )


def is_connection_event(event: Any) -> bool:
    """Whether a watch fired for a connection change rather than a znode's.

    kazoo fires every pending watch with such an event (type NONE, path None) when the
    connection drops or the session ends: the znode may not have changed at all, and
    the session listener is the one that resyncs on reconnect.
    """
    return event.type == EventType.NONE or event.path is None


class LoopHandoff:
    """Posts work from kazoo's threads onto the asyncio loop that owns the state.

    Create it on the loop's thread.  ``post`` is FIFO: what one kazoo thread posts
    runs on the loop in that order, so a watch's successive readings of a znode
    are applied oldest first.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self._thread = threading.get_ident()

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            # The loop is closed: the broker is shutting down and nobody needs the news.
            log.debug("dropped a ZooKeeper event posted after the loop closed")

    def on_owner_thread(self) -> bool:
        return threading.get_ident() == self._thread
