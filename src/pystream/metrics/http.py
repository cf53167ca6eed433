"""``GET /metrics``, ``/healthz`` and ``/readyz`` on a tiny asyncio HTTP/1.1 server.

Served on the broker's own event loop: a scrape reads in-memory state only, so a
full HTTP stack (and its threads) would cost more than it saves.  One request per
connection (``Connection: close``), as Prometheus and health probes need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import Metric

from pystream.errors import InvalidConfigError
from pystream.metrics.broker_metrics import render_families

log = logging.getLogger(__name__)

_MAX_REQUEST_HEAD = 16 * 1024
_READ_TIMEOUT_S = 10.0


def parse_metrics_listener(listener: str) -> tuple[str, int]:
    """``http://HOST:PORT`` → (host, port); InvalidConfigError saying the expected form."""
    parts = urlsplit(listener)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise InvalidConfigError(
            f"metrics.listener={listener!r}: expected http://HOST:PORT "
            "(e.g. http://127.0.0.1:9644; port 0 picks a free one)"
        )
    return parts.hostname, port


class MetricsServer:
    """The metrics and health endpoints; ``await start()``, then ``await stop()``.

    ``snapshot()`` gives the metric families (read on the loop, cheap); their text is
    rendered in a thread, the costly part with thousands of partitions.  ``not_ready()``
    gives why the broker is not ready (``/readyz`` answers 503 with it) or None (200).
    """

    def __init__(
        self,
        host: str,
        port: int,
        snapshot: Callable[[], list[Metric]],
        not_ready: Callable[[], str | None],
    ) -> None:
        self.host = host
        self.port = port
        self._snapshot = snapshot
        self._not_ready = not_ready
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        """Where the endpoint is (the bound port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listen (port 0: the OS picks one; :attr:`port` is then the bound one)."""
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
            status, content_type, answer = self._respond(head)
            # None: /metrics, read now on the loop and rendered in a thread.
            body = answer if answer is not None else await self._metrics(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, content_type, body = 400, "text/plain", b"malformed HTTP request\n"
        except ConnectionError:
            writer.close()
            return
        except Exception:  # a bug in a metric source must not kill the endpoint
            log.exception("metrics endpoint failed")
            status, content_type, body = 500, "text/plain", b"internal error, see the log\n"
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  500: "Internal Server Error", 503: "Service Unavailable"}[status]  # fmt: skip
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        writer.write(body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _metrics(self, head: bytes) -> bytes:
        rendered = await asyncio.to_thread(render_families, self._snapshot())
        return b"" if head.startswith(b"HEAD ") else rendered

    def _respond(self, head: bytes) -> tuple[int, str, bytes | None]:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(request_line) != 3:
            return 400, "text/plain", b"malformed HTTP request line\n"
        method, target, _ = request_line
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET is served here\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, None
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            reason = self._not_ready()
            if reason is not None:
                return 503, "text/plain", f"not ready: {reason}\n".encode()
            return 200, "text/plain", b"ready\n"
        return 404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n"
