"""Serving the proxy with uvicorn: listening, announcing the address, shutting down.

Standalone (``pystream rest``) the server owns SIGTERM/SIGINT; inside the broker
process (``rest.enable``) ``pystream serve`` owns them and stops the proxy first.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from .app import create_app
from .config import RestConfig

__all__ = [
    "ProxyServer",
    "RunningProxy",
    "serve_proxy",
    "start_asgi_server",
    "start_proxy",
]


class ProxyServer(uvicorn.Server):
    """uvicorn's server; with ``handle_signals`` SIGTERM or SIGINT starts a graceful
    shutdown (in-flight requests finish, consumer instances leave their groups, the
    producer flushes) and :func:`serve_proxy` then returns, instead of uvicorn's
    re-raising the signal once it has stopped.  Without, whoever runs the loop stops it
    with :meth:`RunningProxy.stop`."""

    def __init__(self, config: uvicorn.Config, handle_signals: bool) -> None:
        super().__init__(config)
        self.handle_signals = handle_signals

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if not self.handle_signals:
            yield
            return
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


class RunningProxy:
    """A started proxy: its ``url`` (None if it failed to start) and how to stop it."""

    def __init__(self, server: ProxyServer, task: asyncio.Task[None], scheme: str) -> None:
        self.server = server
        self.task = task
        self.url: str | None = None
        if server.started:
            host, port = server.servers[0].sockets[0].getsockname()[:2]
            self.url = f"{scheme}://{host}:{port}"

    async def wait(self) -> None:
        await self.task

    async def stop(self) -> None:
        self.server.request_exit()
        await self.task


async def start_asgi_server(
    app: Any,
    host: str,
    port: int,
    *,
    handle_signals: bool,
    name: str,
    scheme: str = "http",
    lifespan: str = "on",
    **uvicorn_settings: Any,
) -> RunningProxy:
    """Serve ``app`` with uvicorn as every pystream HTTP service is served (the REST proxy,
    Connect's REST API, the console); returns once the socket accepts requests (and the
    app's lifespan started), or once starting failed (``url`` None; the reason is logged)."""
    server = ProxyServer(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan=lifespan,
            access_log=False,
            # X-Forwarded-* rewriting is for proxies in front; it costs every request.
            proxy_headers=False,
            log_config=None,  # the caller's logging set-up stays
            **uvicorn_settings,
        ),
        handle_signals,
    )
    task = asyncio.create_task(_serve(server), name=name)
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    return RunningProxy(server, task, scheme)


async def _serve(server: ProxyServer) -> None:
    try:
        await server.serve()
    except SystemExit:
        # uvicorn exits the process when it cannot listen (it logged why, e.g. the port
        # in use): here that is a server that did not start (``url`` None), for the
        # caller to report, and for pystream serve to stop the broker cleanly.
        pass


async def start_proxy(
    config: RestConfig, host: str, port: int, *, handle_signals: bool
) -> RunningProxy:
    """Start serving; returns once the socket accepts requests and the clients are
    connected, or once starting failed (``url`` None; the reason is logged)."""
    return await start_asgi_server(
        create_app(config),
        host,
        port,
        handle_signals=handle_signals,
        name="rest-proxy",
        scheme=config.scheme,
        **_tls(config),
    )


def _tls(config: RestConfig) -> dict[str, Any]:
    """uvicorn's TLS settings for the HTTP listener (none without a key store)."""
    if not config.ssl_keystore_location:
        return {}
    return {
        # A PEM key store holds the key and the certificate chain in one file.
        "ssl_certfile": config.ssl_keystore_location,
        "ssl_keyfile_password": config.ssl_key_password,
        "ssl_ca_certs": config.ssl_truststore_location,
        "ssl_cert_reqs": {
            "NONE": ssl.CERT_NONE,
            "REQUESTED": ssl.CERT_OPTIONAL,
            "REQUIRED": ssl.CERT_REQUIRED,
        }[config.ssl_client_authentication],
    }


async def serve_proxy(
    config: RestConfig, host: str, port: int, on_listening: Callable[[str], None]
) -> bool:
    """Serve until SIGTERM/SIGINT; ``on_listening(url)`` once it accepts requests.
    False if it never started (the reason is logged)."""
    running = await start_proxy(config, host, port, handle_signals=True)
    if running.url is not None:
        on_listening(running.url)
    await running.wait()
    return running.url is not None
