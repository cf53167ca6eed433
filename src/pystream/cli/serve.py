"""``pystream serve``: run a broker until SIGTERM / Ctrl-C, then shut down cleanly."""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import resource
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from pystream.config import BrokerConfig, parse_overrides, read_properties_file
from pystream.errors import BrokerStartupError, KafkaError

log = logging.getLogger("pystream")

# What ``pystream serve`` prints before the metrics URL (``pystream cluster up`` reads it).
METRICS_MARK = "pystream metrics on "


def load_config(config_file: str | None, overrides: tuple[str, ...]) -> BrokerConfig:
    """server.properties (if given) with ``--override key=value`` on top."""
    props: dict[str, str] = {}
    if config_file:
        try:
            props.update(read_properties_file(config_file))
        except OSError as exc:
            raise click.ClickException(f"cannot read {config_file}: {exc.strerror}") from exc
    props.update(parse_overrides(overrides))
    return BrokerConfig.from_properties(props)


async def run_broker(config: BrokerConfig) -> None:
    """Start a broker, print where clients connect, wait for a signal, stop cleanly.

    A fatal condition the broker reports (its ``broker.id`` registered by another broker
    while its ZooKeeper session was lost) stops it the same way, then raises
    ClickException: ``pystream serve`` exits with status 1 and says why."""
    from pystream.broker.server import Broker

    stop = asyncio.Event()
    fatal: list[str] = []

    def on_fatal(reason: str) -> None:
        fatal.append(reason)
        stop.set()

    broker = Broker(config, on_fatal=on_fatal)
    # Checked before anything starts: a console that could not connect is refused at once.
    console_settings = _console_client_settings(config, broker) if config.console_enable else {}
    # First: /readyz answers 503 while the logs load, and /healthz from the start.
    metrics_server = await _start_metrics_server(config, broker)
    try:
        await broker.start()
    except BaseException:
        if metrics_server is not None:
            await metrics_server.stop()
        raise
    # Everything built so far (modules, generated codecs, loaded logs) lives as long as
    # the process: keep it out of the garbage collector's full passes, which would
    # otherwise stall request handling for milliseconds.
    gc.collect()
    gc.freeze()
    # Before announcing the address: a SIGTERM sent as soon as it is printed shuts down cleanly.
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    addresses = ", ".join(str(listener) for listener in broker.advertised_listeners)
    bootstrap = ",".join(f"{a.host}:{a.port}" for a in broker.advertised_listeners)
    proxy = await _start_rest_proxy(config, broker) if config.rest_enable else None
    console = (
        await _start_console(config, broker, metrics_server, proxy, console_settings)
        if config.console_enable
        else None
    )
    click.echo(f"pystream broker {config.broker_id} listening on {addresses}")
    log.info("event loop: %s (event.loop)", config.event_loop)
    if proxy is not None:
        click.echo(f"pystream rest proxy listening on {proxy.url}")
    if console is not None:
        click.echo(f"pystream console listening on {console.url}")
    if metrics_server is not None:
        click.echo(f"{METRICS_MARK}{metrics_server.url}/metrics")
    click.echo(f"clients: bootstrap.servers={bootstrap}")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        click.echo("shutting down")
        if console is not None:
            await console.stop()
        if proxy is not None:  # its consumer instances leave their groups while the broker is up
            await proxy.stop()
        await broker.stop()
        if metrics_server is not None:
            await metrics_server.stop()
    if fatal:
        raise click.ClickException(f"broker {config.broker_id} stopped serving: {fatal[0]}")


async def _start_metrics_server(config: BrokerConfig, broker: Any) -> Any:
    """``metrics.enable``: GET /metrics, /healthz, /readyz on ``metrics.listener``.  A port
    in use is a warning, not a failed start: the broker serves clients either way."""
    if not config.metrics_enable:
        return None
    from pystream.metrics import MetricsServer, parse_metrics_listener

    host, port = parse_metrics_listener(config.metrics_listener)
    server = MetricsServer(host, port, broker.metrics.snapshot, broker.not_ready_reason)
    try:
        await server.start()
    except OSError as exc:
        log.warning(
            "metrics.listener %s: %s; the metrics and health endpoints are off (set "
            "metrics.listener=http://%s:0 for a free port, or metrics.enable=false)",
            config.metrics_listener,
            exc.strerror or exc,
            host,
        )
        return None
    return server


async def _start_rest_proxy(config: BrokerConfig, broker: Any) -> Any:
    """``rest.enable``: the REST proxy in this process, configured by ``rest.config.file``
    (as ``pystream rest --config``), a client of the broker's first listener of its
    client's security protocol."""
    from pystream.cli.rest import rest_config
    from pystream.rest.server import start_proxy

    try:
        rest = rest_config("", config.rest_config_file or None)
    except click.ClickException:
        await broker.stop()
        raise
    # The listener whose protocol the proxy's client speaks (client.security.protocol in
    # rest.config.file, with its credentials; PLAINTEXT without one).
    protocol = rest.client_settings.get("security_protocol", "PLAINTEXT").upper()
    bootstrap = _client_listener(broker, protocol)
    if bootstrap is None:
        await broker.stop()
        raise click.ClickException(
            f"rest.enable needs a {protocol} listener for the proxy to connect to; add one to "
            f"listeners, or set client.security.protocol and its credentials in "
            f"rest.config.file"
        )
    rest.bootstrap_servers = bootstrap
    proxy = await start_proxy(rest, config.rest_host, config.rest_port, handle_signals=False)
    if proxy.url is None:
        await broker.stop()
        raise click.ClickException(
            f"the REST proxy did not start on {config.rest_host}:{config.rest_port} "
            f"(rest.port in use?); the log above says why"
        )
    return proxy


def _client_listener(broker: Any, protocol: str) -> str | None:
    """HOST:PORT of the broker's first advertised listener speaking ``protocol``."""
    listeners = [a for a in broker.advertised_listeners if a.security_protocol == protocol]
    return f"{listeners[0].host}:{listeners[0].port}" if listeners else None


async def _stop_all(*services: Any) -> None:
    """Stop what started, in this order (the clients of the broker before it)."""
    for service in services:
        if service is not None:
            await service.stop()


def _console_client_settings(config: BrokerConfig, broker: Any) -> dict[str, Any]:
    """The in-broker console's client settings, from ``console.config.file`` (as ``pystream
    console --command-config`` reads it; empty: PLAINTEXT); a ClickException saying what
    to set if the broker has no listener of their security protocol."""
    from pystream.cli.common import client_settings

    settings = client_settings(config.console_config_file or None)
    protocol = str(settings.get("security_protocol", "PLAINTEXT")).upper()
    if not any(a.security_protocol == protocol for a in broker.advertised_listeners):
        raise click.ClickException(
            f"console.enable needs a {protocol} listener for the console to connect to; add "
            f"one to listeners, or set console.config.file to a client properties file with "
            f"the security.protocol of a listener and its credentials (security.protocol, "
            f"sasl.mechanism, sasl.jaas.config), as pystream console --command-config takes"
        )
    return settings


async def _start_console(
    config: BrokerConfig, broker: Any, metrics_server: Any, proxy: Any, settings: dict[str, Any]
) -> Any:
    """``console.enable``: the web console in this process, a client of the broker's first
    listener of ``settings``' security protocol (PLAINTEXT without one; see
    :func:`_console_client_settings`), charting this broker's own metrics endpoint."""
    # Importing the console (Jinja2, httpx, Starlette ...) takes a few hundred ms: in a
    # thread, not on the loop the broker already serves clients from.
    await asyncio.to_thread(importlib.import_module, "pystream.console.server")
    from pystream.console import ConsoleConfig
    from pystream.console.server import start_console

    protocol = str(settings.get("security_protocol", "PLAINTEXT")).upper()
    bootstrap = _client_listener(broker, protocol)
    assert bootstrap is not None  # checked before the broker started
    urls = [f"{metrics_server.url}/metrics"] if metrics_server is not None else []
    console = await start_console(
        ConsoleConfig(bootstrap, client_settings=settings, metrics_urls=urls),
        config.console_host,
        config.console_port,
        handle_signals=False,
    )
    if console.url is None:
        await _stop_all(proxy, broker)
        raise click.ClickException(
            f"the console did not start on {config.console_host}:{config.console_port} "
            f"(console.port in use?); the log above says why"
        )
    return console


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="server.properties")
@click.option(
    "--override",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="a broker config on top of the file, e.g. --override log.dirs=/data",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def serve(config_file: str | None, overrides: tuple[str, ...], log_level: str) -> None:
    """Run a broker (single node, no ZooKeeper needed) until SIGTERM or Ctrl-C."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(config_file, overrides)
        for key in config.unknown_keys:
            log.warning("unknown config %r is ignored (check its spelling)", key)
        _raise_open_files_limit()
        with asyncio.Runner(loop_factory=event_loop_factory(config.event_loop)) as runner:
            runner.run(run_broker(config))
    except (KafkaError, BrokerStartupError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:  # e.g. address already in use
        raise click.ClickException(f"{exc.strerror or exc}; is another broker running?") from exc


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The broker's event loop (``event.loop``): asyncio's, or uvloop's."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError as exc:
            raise click.ClickException(
                f"event.loop=uvloop but uvloop is not installed ({exc}): install it "
                "(pip install uvloop; Linux and macOS only) or set event.loop=asyncio"
            ) from exc
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def _raise_open_files_limit() -> None:
    """Raise the soft open-files limit to the hard one: every connection is a descriptor
    (as are segments and indexes), and the usual soft default (1,024) refuses accepts far
    below what the broker can hold."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit on macOS
            log.debug("open-files limit stays at %d: %s", soft, exc)
