"""Connection limits, as Kafka's ``ConnectionQuotas`` (``SocketServer.scala``).

* ``max.connections`` (broker-wide) and ``listener.name.<name>.max.connections``: at the
  limit a listener's acceptor stops accepting until a connection closes (new ones wait in
  the kernel's listen backlog, as in Kafka).  The inter-broker listener is exempt from the
  broker-wide limit, so replication and the controller keep working when clients fill it.
* ``max.connections.per.ip`` and ``max.connections.per.ip.overrides``: a connection from
  an address at its limit is closed as soon as it is accepted, and logged.

The counts are taken when the acceptor accepts and given back when the connection closes
(also when a TLS handshake fails): :meth:`ConnectionQuotas.acquire` / :meth:`release`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Iterable, Mapping

from pystream.config import INT32_MAX, BrokerConfig, parse_connection_overrides
from pystream.errors import InvalidConfigError
from pystream.security.ssl import PerHostLogLimit

log = logging.getLogger(__name__)


class ConnectionQuotas:
    """Connection counts per listener and per address, and the limits they are held to."""

    def __init__(
        self,
        max_connections: int = INT32_MAX,
        listener_max_connections: Mapping[str, int] | None = None,
        max_connections_per_ip: int = INT32_MAX,
        per_ip_overrides: Mapping[str, int] | None = None,
        protected_listener: str | None = None,
    ) -> None:
        """``per_ip_overrides`` are keyed by IP address (see :meth:`from_config`);
        ``protected_listener`` (the inter-broker listener) ignores ``max_connections``."""
        self.max_connections = max_connections
        self.listener_max_connections = dict(listener_max_connections or {})
        self.max_connections_per_ip = max_connections_per_ip
        self.per_ip_overrides = dict(per_ip_overrides or {})
        self.protected_listener = protected_listener
        self.total = 0
        self.per_listener: Counter[str] = Counter()
        self.per_ip: Counter[str] = Counter()
        # Set while every listener may accept; acceptors at a limit wait for a release.
        self._released = asyncio.Event()

    @classmethod
    async def from_config(
        cls, config: BrokerConfig, listeners: Iterable[str], protected_listener: str | None
    ) -> ConnectionQuotas:
        """The limits of ``config`` for ``listeners``; host names in the overrides are
        resolved (in a thread: DNS may block) to every address they have."""
        overrides: dict[str, int] = {}
        for host, count in parse_connection_overrides(
            config.max_connections_per_ip_overrides
        ).items():
            for address in await asyncio.to_thread(_addresses, host):
                overrides[address] = count
        listener_limits = {name: config.for_listener(name, "max.connections") for name in listeners}
        return cls(
            config.max_connections,
            {name: n for name, n in listener_limits.items() if n < INT32_MAX},
            config.max_connections_per_ip,
            overrides,
            protected_listener,
        )

    def ip_limit(self, host: str) -> int:
        """How many connections ``host`` (an IP address) may hold."""
        return self.per_ip_overrides.get(host, self.max_connections_per_ip)

    def slot_available(self, listener: str) -> bool:
        """Whether ``listener`` may accept one more connection now (the per-IP limit is
        checked after the accept, when the address is known)."""
        if self.per_listener[listener] >= self.listener_max_connections.get(listener, INT32_MAX):
            return False
        return listener == self.protected_listener or self.total < self.max_connections

    async def wait_for_slot(self, listener: str) -> None:
        """Return once ``listener`` may accept again (a connection closed somewhere)."""
        while not self.slot_available(listener):
            self._released.clear()
            await self._released.wait()

    def acquire(self, listener: str, host: str) -> bool:
        """Count an accepted connection; False (nothing counted) if ``host`` is at its
        per-IP limit and the connection must be closed."""
        if self.per_ip[host] >= self.ip_limit(host):
            return False
        self.per_ip[host] += 1
        self.per_listener[listener] += 1
        self.total += 1
        return True

    def release(self, listener: str, host: str) -> None:
        """A connection counted by :meth:`acquire` closed."""
        self.total -= 1
        self.per_listener[listener] -= 1
        self.per_ip[host] -= 1
        if not self.per_ip[host]:
            del self.per_ip[host]  # an address seen once must not stay in memory
        self._released.set()


class RefusedConnectionLog(PerHostLogLimit):
    """Logs connections closed for ``max.connections.per.ip``, rate limited per host (a
    client reconnecting in a loop must not flood the log)."""

    def refused(self, listener_name: str, host: str, limit: int, overridden: bool) -> None:
        """Record one refused connection from ``host``."""
        suppressed = self.admit(host)
        if suppressed is not None:
            self._log.info(
                "Rejected connection from %s on listener %s: it already has %d connection(s), "
                "its max.connections.per.ip%s%s",
                host,
                listener_name,
                limit,
                " override" if overridden else "",
                self.left_out(suppressed, "rejected connection(s)", host),
            )


async def listening_sockets(host: str | None, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for ``host:port``, as ``loop.create_server``
    makes them: one per address ``host`` resolves to (every interface when None)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, type_, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, type_, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                # Both families are bound separately (as asyncio does): no dual-stack clash.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno, f"error while attempting to bind on address {address!r}: {exc}"
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _addresses(host: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InvalidConfigError(
            f"max.connections.per.ip.overrides: cannot resolve host {host!r}: {exc}"
        ) from None
    return sorted({str(info[4][0]) for info in infos})
