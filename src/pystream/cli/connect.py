"""``pystream connect standalone WORKER.properties CONNECTOR.properties…`` and
``pystream connect distributed WORKER.properties``: Kafka Connect workers."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from pystream.cli.common import read_properties


@click.group()
def connect() -> None:
    """Kafka Connect workers: move data between outside systems and topics."""


@connect.command()
@click.argument("worker_config", type=click.Path(dir_okay=False))
@click.argument("connector_configs", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def standalone(worker_config: str, connector_configs: tuple[str, ...], log_level: str) -> None:
    """Run connectors in one process, as Kafka's connect-standalone: WORKER_CONFIG has
    bootstrap.servers, the converters, offset.storage.file.filename and listeners; each
    CONNECTOR_CONFIG has name, connector.class and the connector's settings.  Serves
    Kafka Connect's REST API until SIGTERM or Ctrl-C, which stop the tasks cleanly."""
    from pystream.connect.api import ConfigError
    from pystream.connect.runtime.standalone import run_standalone

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    worker_props = read_properties(worker_config)
    connectors = [(path, read_properties(path)) for path in connector_configs]

    def announce(url: str) -> None:
        click.echo(f"pystream connect worker listening on {url}")
        click.echo(f"kafka: bootstrap.servers={worker_props.get('bootstrap.servers', '')}")
        sys.stdout.flush()

    try:
        asyncio.run(run_standalone(worker_props, connectors, announce))
    except ConfigError as exc:
        # One line: a multi-line validation report becomes "; "-separated.
        raise click.ClickException(str(exc).replace(":\n", ": ").replace("\n", "; ")) from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("shut down")


@connect.command()
@click.argument("worker_config", type=click.Path(dir_okay=False))
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def distributed(worker_config: str, log_level: str) -> None:
    """Run one worker of a Connect cluster, as Kafka's connect-distributed: workers with
    the same group.id share connectors and tasks, kept in config.storage.topic,
    offset.storage.topic and status.storage.topic.  Connectors are created through the
    REST API on listeners.  SIGTERM or Ctrl-C stop the tasks and leave the group."""
    from pystream.connect.api import ConfigError
    from pystream.connect.runtime.distributed.herder import run_distributed

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    worker_props = read_properties(worker_config)

    def announce(url: str) -> None:
        click.echo(f"pystream connect worker listening on {url}")
        click.echo(f"group.id={worker_props.get('group.id', '')}")
        sys.stdout.flush()

    try:
        asyncio.run(run_distributed(worker_props, announce))
    except ConfigError as exc:
        raise click.ClickException(str(exc).replace(":\n", ": ").replace("\n", "; ")) from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("shut down")
