"""``pystream console``: serve the web console until SIGTERM / Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from pystream.cli.common import client_settings, connection_options, listen_options


@click.command()
@connection_options
@listen_options(9021)
@click.option(
    "--metrics-url",
    "metrics_urls",
    multiple=True,
    metavar="URL",
    help="A broker's GET /metrics URL for the live charts (repeatable; console.metrics.urls). "
    "Default: each broker's metrics.listener, as DescribeConfigs reports it.",
)
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def console(
    bootstrap_server: str,
    command_config: str | None,
    host: str,
    port: int,
    metrics_urls: tuple[str, ...],
    log_level: str,
) -> None:
    """Serve the web console: overview, topics, messages, consumer groups, live charts."""
    from pystream.console import ConsoleConfig
    from pystream.console.server import serve_console

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = ConsoleConfig(
        bootstrap_server,
        client_settings=client_settings(command_config),
        metrics_urls=list(metrics_urls),
    )

    def announce(url: str) -> None:
        click.echo(f"pystream console listening on {url}")
        click.echo(f"kafka: bootstrap.servers={bootstrap_server}")
        sys.stdout.flush()

    if not asyncio.run(serve_console(config, host, port, announce)):
        raise click.ClickException(f"the console did not start: is {host}:{port} free?")
    click.echo("shut down")
