"""Entry point of the ``pystream`` command.

Sub-commands live in their own modules and register on :data:`cli`; errors a
user can cause are printed as one line with a non-zero exit code.
"""

from __future__ import annotations

import click

from pystream.cli.acls import acls
from pystream.cli.bench import bench
from pystream.cli.cluster import cluster
from pystream.cli.common import OneLineErrors
from pystream.cli.configs import configs
from pystream.cli.connect import connect
from pystream.cli.console import console
from pystream.cli.consume import consume
from pystream.cli.groups import groups
from pystream.cli.produce import produce
from pystream.cli.rest import rest
from pystream.cli.serve import serve
from pystream.cli.topics import topics
from pystream.cli.users import users
from pystream.version import __version__


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pystream")
def cli() -> None:
    """pystream: a Kafka-compatible event-streaming broker with a Cython core."""


@cli.command()
def info() -> None:
    """Show the version and which compiled core paths are active."""
    from pystream._core import crc32c

    hardware = getattr(crc32c, "has_hardware_crc", lambda: False)()
    click.echo(f"pystream {__version__}")
    click.echo(f"crc32c: {'hardware' if hardware else 'table'}")


for _command in (
    serve,
    cluster,
    topics,
    produce,
    consume,
    groups,
    configs,
    users,
    acls,
    bench,
    rest,
    console,
    connect,
):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
