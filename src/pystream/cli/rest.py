"""``pystream rest``: serve the REST proxy (Confluent's API v2) until SIGTERM / Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING

import click

from pystream.cli.common import (
    DEFAULT_BOOTSTRAP,
    client_settings_from,
    listen_options,
    read_properties,
)

if TYPE_CHECKING:
    from pystream.rest import RestConfig


def rest_config(bootstrap_server: str, config_file: str | None) -> RestConfig:
    """The proxy's settings from a kafka-rest.properties-style file (or the defaults);
    a bad or unknown key is a ClickException naming the file and the key."""
    from pystream.rest import RestConfig

    props = read_properties(config_file) if config_file else {}
    unknown = RestConfig.unknown_keys(props)
    if unknown:
        raise click.ClickException(
            f"{config_file}: unknown setting(s) {', '.join(unknown)} (Kafka client settings "
            f"take the prefix client., e.g. client.security.protocol)"
        )
    settings = client_settings_from(RestConfig.client_properties(props), config_file or "")
    try:
        return RestConfig.from_properties(bootstrap_server, props, settings)
    except ValueError as exc:
        raise click.ClickException(f"{config_file}: {exc}") from None


@click.command()
@click.option(
    "--bootstrap-server",
    default=DEFAULT_BOOTSTRAP,
    show_default=True,
    metavar="HOST:PORT[,...]",
    help="The Kafka cluster the proxy connects to.",
)
@listen_options(8082)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="A properties file as Confluent's kafka-rest.properties: the proxy's settings "
    "(consumer.instance.timeout.ms, max.request.body.bytes ...), the HTTP listener's TLS "
    "(ssl.keystore.location ...), client.* (Kafka connection), producer.*, consumer.*.",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def rest(
    bootstrap_server: str, host: str, port: int, config_file: str | None, log_level: str
) -> None:
    """Serve Confluent's REST Proxy API v2 (topics, produce, consumer instances) over HTTP."""
    import uvloop

    from pystream.rest.server import serve_proxy

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = rest_config(bootstrap_server, config_file)

    def announce(url: str) -> None:
        click.echo(f"pystream rest proxy listening on {url}")
        click.echo(f"kafka: bootstrap.servers={bootstrap_server}")
        sys.stdout.flush()

    # uvloop (libuv, in C) for this process only: its socket writes and callbacks cost
    # the proxy a fraction of asyncio's.  The broker's own loop (pystream serve, and the
    # proxy inside it with rest.enable) stays asyncio's.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        started = runner.run(serve_proxy(config, host, port, announce))
    if not started:
        raise click.ClickException(
            f"the REST proxy did not start: is a broker reachable at {bootstrap_server} "
            f"and {host}:{port} free? (the log above says which)"
        )
    click.echo("shut down")
