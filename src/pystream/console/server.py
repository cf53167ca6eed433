"""Serving the console with uvicorn, as the REST proxy is served (``rest.server``):
``pystream console`` owns SIGTERM/SIGINT; with ``console.enable`` ``pystream serve``
starts it after the broker and stops it first."""

from __future__ import annotations

from collections.abc import Callable

from pystream.rest.server import RunningProxy, start_asgi_server

from .app import create_app
from .config import ConsoleConfig

__all__ = ["serve_console", "start_console"]


async def start_console(
    config: ConsoleConfig, host: str, port: int, *, handle_signals: bool
) -> RunningProxy:
    """Start serving; returns once the socket accepts requests (``url`` None if it could
    not listen; the reason is logged).  The cluster need not be up."""
    return await start_asgi_server(
        create_app(config), host, port, handle_signals=handle_signals, name="console"
    )


async def serve_console(
    config: ConsoleConfig, host: str, port: int, on_listening: Callable[[str], None]
) -> bool:
    """Serve until SIGTERM/SIGINT; ``on_listening(url)`` once it accepts requests.  False
    if it never started."""
    running = await start_console(config, host, port, handle_signals=True)
    if running.url is not None:
        on_listening(running.url)
    await running.wait()
    return running.url is not None
