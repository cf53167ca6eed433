"""A throwaway Apache ZooKeeper server for the cluster tests, and helpers to use it.

One standalone server per test session (started on first use, stopped at
session end) on a free loopback port, with its data in a temporary directory.
Each test gets its own chroot (``127.0.0.1:port/t-<random>``), so tests never
see each other's znodes and the chroot handling is exercised on every run.

The server is :class:`pystream.cli.local_zookeeper.LocalZooKeeper`, the same
code ``pystream cluster up`` runs (Debian's ``zookeeper`` package or
``$ZOOKEEPER_JAR``, started with ``java``).  Tests are skipped, with the reason,
when java, the jar or kazoo is missing.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from waiting import wait_until  # noqa: F401  (re-exported to the zk tests)

from pystream.cli.local_zookeeper import (  # noqa: F401  (re-exported to the zk tests)
    INSTALL_HINT,
    LocalZooKeeper,
    ZooKeeperNotInstalledError,
    find_zookeeper_jar,
    four_letter_word,
    free_port,
    require_zookeeper,
)

# The tests' name for the server class.
ZooKeeperServer = LocalZooKeeper
TICK_MS = 200  # session timeouts are bounded by 2..20 ticks: 0.4 s .. 4 s, fast tests


# --- one server per test session -------------------------------------------------------------
def start_server(directory: Path) -> ZooKeeperServer:
    """A started throwaway server with its data in ``directory`` (the test is skipped, with
    the reason, without kazoo, java or the ZooKeeper jar)."""
    pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")
    try:
        java, jar = require_zookeeper()
    except ZooKeeperNotInstalledError as exc:
        pytest.skip(f"{exc} ({INSTALL_HINT})")
    # No fsync per write: a throwaway server, and tests stay fast.
    return LocalZooKeeper(directory, jar=jar, java=java, tick_ms=TICK_MS, force_sync=False).start()


_shared: ZooKeeperServer | None = None
_shared_lock = threading.Lock()


def shared_server(request: pytest.FixtureRequest) -> ZooKeeperServer:
    """The session's server, started on first use and stopped when the session ends.

    Kept in this module rather than in a fixture's cache so that every test module
    that imports the fixtures shares one server.
    """
    global _shared
    with _shared_lock:
        if _shared is None:
            directory = Path(tempfile.mkdtemp(prefix="pystream-zk-"))
            server = start_server(directory)
            _shared = server

            def stop() -> None:
                global _shared
                server.stop()
                shutil.rmtree(directory, ignore_errors=True)
                _shared = None

            request.addfinalizer(stop)  # a session-scoped fixture's request: at session end
        return _shared


@pytest.fixture(scope="session")
def zookeeper(request: pytest.FixtureRequest) -> ZooKeeperServer:
    """The session's ZooKeeper server."""
    return shared_server(request)


@pytest.fixture
def zk_connect(zookeeper: ZooKeeperServer) -> str:
    """A ``zookeeper.connect`` string with a chroot of its own for this test."""
    return f"{zookeeper.hosts}/pystream-test/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def kazoo_clients(zookeeper: ZooKeeperServer) -> Iterator[Callable[..., object]]:
    """Make started KazooClients (optionally chrooted); all are stopped after the test."""
    from kazoo.client import KazooClient

    clients: list[KazooClient] = []

    def make(hosts: str | None = None, session_timeout: float = 2.0) -> KazooClient:
        client = KazooClient(hosts=hosts or zookeeper.hosts, timeout=session_timeout)
        client.start(timeout=15)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.stop()
        client.close()


# --- helpers ---------------------------------------------------------------------------------
def expire_session(client: object, hosts: str, timeout: float = 20.0) -> None:
    """Expire ``client``'s ZooKeeper session for real, and wait until it has a new one.

    A second connection that presents the same session id and password and then
    closes ends the session on the server (its ephemeral znodes are deleted, its
    watches dropped); the first client then learns on reconnect that its session
    expired (state LOST) and kazoo establishes a fresh session.
    """
    from kazoo.client import KazooClient
    from kazoo.protocol.states import KazooState

    old_session = client.client_id[0]  # type: ignore[attr-defined]
    lost = threading.Event()
    reconnected = threading.Event()

    def listener(state: str) -> None:
        if state == KazooState.LOST:
            lost.set()
        elif state == KazooState.CONNECTED and lost.is_set():
            reconnected.set()

    client.add_listener(listener)  # type: ignore[attr-defined]
    try:
        twin = KazooClient(hosts=hosts.split("/", 1)[0], client_id=client.client_id)  # type: ignore[attr-defined]
        twin.start(timeout=15)
        twin.stop()
        twin.close()
        if not lost.wait(timeout):
            raise AssertionError(f"session {old_session:#x} did not expire within {timeout}s")
        if not reconnected.wait(timeout):
            raise AssertionError(f"no new session within {timeout}s after expiry")
        new_session = client.client_id[0]  # type: ignore[attr-defined]
        assert new_session != old_session, "kazoo reconnected to the expired session?"
    finally:
        client.remove_listener(listener)  # type: ignore[attr-defined]


# --- a TCP proxy, to cut a client off from ZooKeeper (a network partition) -------------------
class ZkProxy:
    """Forwards a loopback port to the server; ``block()`` cuts every client using it off
    (their connections are closed and new ones refused) until ``unblock()``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.unblock()

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def unblock(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def block(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (Linux)
            except OSError:
                pass
            listener.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    close = block

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # blocked: the listener was closed
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._sockets.update((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# --- the ZooKeeper side of a broker ----------------------------------------------------------
SESSION_TIMEOUT_MS = 4000  # the most this server allows (20 ticks)


class ZkNode:
    """One broker's coordination pieces, without its Kafka side: a ZooKeeper client, its
    registration in ``/brokers/ids`` and (optionally) its controller."""

    def __init__(
        self,
        connect: str,
        broker_id: int,
        *,
        rack: str | None = None,
        controller: bool = True,
        unclean: bool = False,
    ) -> None:
        self.connect = connect
        self.broker_id = broker_id
        self.rack = rack
        self.with_controller = controller
        self.unclean = unclean
        self.client = None
        self.registration = None
        self.controller = None
        self.controller_states: list[object] = []

    def start(self) -> ZkNode:
        from pystream.cluster.zookeeper import client as zk_client
        from pystream.cluster.zookeeper.controller import ZkController
        from pystream.cluster.zookeeper.paths import BrokerInfo, EndPoint
        from pystream.cluster.zookeeper.registration import BrokerRegistration

        self.client = zk_client.connect(self.connect, session_timeout_ms=SESSION_TIMEOUT_MS)
        endpoint = EndPoint("PLAINTEXT", "127.0.0.1", 9000 + self.broker_id)
        info = BrokerInfo(self.broker_id, (endpoint,), self.rack)
        self.registration = BrokerRegistration(self.client, info, stale_wait_s=1.0)
        self.registration.register()
        if self.with_controller:
            self.controller = ZkController(
                self.client,
                self.broker_id,
                unclean_leader_election_enable=self.unclean,
                on_change=self.controller_states.append,
            )
            self.controller.start()
        return self

    @property
    def is_controller(self) -> bool:
        return self.controller is not None and self.controller.active

    def stop(self) -> None:
        """A clean shutdown: resign, deregister, close the session."""
        from pystream.cluster.zookeeper import client as zk_client

        if self.client is None:
            return
        if self.controller is not None:
            self.controller.stop()
        if self.registration is not None:
            self.registration.deregister()
        zk_client.close(self.client)
        self.client = None

    def crash(self) -> None:
        """Die without a word: the session ends, its ephemeral znodes go with it."""
        from pystream.cluster.zookeeper import client as zk_client

        if self.client is None:
            return
        zk_client.close(self.client)
        self.client = None
        if self.controller is not None:
            self.controller.stop()  # only ends its thread: the client is closed


@pytest.fixture
def zk_nodes(zk_connect: str) -> Iterator[Callable[..., ZkNode]]:
    """Start ZkNodes in this test's chroot; all are stopped after the test."""
    nodes: list[ZkNode] = []

    def start(broker_id: int, **kwargs: object) -> ZkNode:
        node = ZkNode(zk_connect, broker_id, **kwargs).start()  # type: ignore[arg-type]
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.crash()
