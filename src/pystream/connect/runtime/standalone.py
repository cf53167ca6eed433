"""Standalone mode (``pystream connect standalone``): one worker, connectors from
properties files, source offsets in ``offset.storage.file.filename``, the REST API on
``listeners``; SIGTERM/SIGINT stop the tasks cleanly (offsets committed)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

from starlette.routing import BaseRoute

from ...rest.server import RunningProxy, start_asgi_server
from ..api import ConfigError
from .config import WorkerConfig
from .herder import Herder, HerderError, StandaloneHerder
from .offsets import FileOffsetBackingStore
from .rest import create_app
from .states import StatusStore
from .worker import Worker

__all__ = ["parse_listener", "run_standalone", "serve_rest"]

log = logging.getLogger("pystream.connect.standalone")


def parse_listener(listener: str) -> tuple[str, int]:
    """``http://host:port`` → (host, port); only plain HTTP for now."""
    parts = urlsplit(listener if "://" in listener else f"http://{listener}")
    if parts.scheme != "http":
        raise ConfigError(f"listeners={listener}: only http:// listeners are supported yet")
    try:
        port = parts.port if parts.port is not None else 8083
    except ValueError:
        raise ConfigError(f"listeners={listener}: the port is not a number") from None
    return parts.hostname or "0.0.0.0", port


async def serve_rest(
    herder: Herder, host: str, port: int, routes: Sequence[BaseRoute] = ()
) -> RunningProxy:
    """Start Kafka Connect's REST API for ``herder``, with ``routes`` added (SIGTERM/SIGINT
    stop it); returns once it accepts requests, or raises ConfigError if it cannot listen."""
    app = create_app(herder)
    # After the public routes: a path they serve with other methods still reaches these.
    app.router.routes.extend(routes)
    running = await start_asgi_server(
        app, host, port, handle_signals=True, name="connect-rest", lifespan="off"
    )
    if running.url is None:
        await running.wait()
        raise ConfigError(f"listeners=http://{host}:{port}: cannot listen (see the log)")
    return running


async def run_standalone(
    worker_props: Mapping[str, str],
    connectors: list[tuple[str, dict[str, str]]],
    on_listening: Callable[[str], None],
) -> None:
    """Serve until SIGTERM/SIGINT.  ``connectors`` are (source file, properties);
    a connector that cannot be created raises :class:`ConfigError` naming its file."""
    config = WorkerConfig(dict(worker_props))
    path = config.offset_storage_file
    if not path:
        raise ConfigError(
            "offset.storage.file.filename is required in standalone mode: set it to the file "
            "source offsets are kept in"
        )
    config.exactly_once_source  # noqa: B018 - validates the setting now
    host, port = parse_listener(config.listeners[0])
    offsets = await asyncio.to_thread(FileOffsetBackingStore, path)
    worker = Worker(config, "", offsets, StatusStore())
    herder = StandaloneHerder(worker)
    running = await serve_rest(herder, host, port)
    task = running.task
    assert running.url is not None
    bound = running.url.split("://", 1)[1]
    worker.worker_id = herder.worker_id = bound
    try:
        for source, props in connectors:
            name = props.get("name", "").strip()
            if not name:
                raise ConfigError(f"{source}: 'name' is required")
            try:
                await asyncio.to_thread(herder.put_connector_config, name, props, False)
            except HerderError as exc:
                raise ConfigError(f"{source}: {exc.message}") from None
        on_listening(running.url)
        await task
    finally:
        if not task.done():
            await running.stop()
        log.info("stopping connectors and tasks")
        await asyncio.to_thread(herder.stop)
        await asyncio.to_thread(offsets.close)
