"""Serving the proxy with uvicorn: listening, announcing the address, shutting down."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

import uvicorn

from .app import create_app
from .config import RestConfig

__all__ = ["ProxyServer", "serve_proxy"]


class ProxyServer(uvicorn.Server):
    """uvicorn's server with loop signal handlers: SIGTERM or SIGINT starts a graceful
    shutdown (in-flight requests finish, consumer instances leave their groups, the
    producer flushes) and :func:`serve_proxy` then returns, instead of uvicorn's
    re-raising the signal once it has stopped."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_exit)
        try:
            yield
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    def request_exit(self) -> None:
        self.should_exit = True


async def serve_proxy(
    config: RestConfig, host: str, port: int, on_listening: Callable[[str], None]
) -> bool:
    """Serve until a signal; ``on_listening(url)`` once the socket accepts requests and
    the clients are connected.  False if it never started (the reason is logged)."""
    server = ProxyServer(
        uvicorn.Config(
            create_app(config),
            host=host,
            port=port,
            lifespan="on",
            access_log=False,
            # X-Forwarded-* rewriting is for proxies in front; it costs every request.
            proxy_headers=False,
            log_config=None,  # the caller's logging set-up stays
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)
    if server.started:
        bound = server.servers[0].sockets[0].getsockname()
        on_listening(f"http://{bound[0]}:{bound[1]}")
    await serving
    return server.started
