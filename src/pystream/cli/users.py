"""``pystream users add|delete|list``: SCRAM credentials.

With ``--log-dirs`` the credential is written straight into the local metadata
of a broker that is not running (the bootstrap admin before the first start, as
``kafka-storage format --add-scram`` does); the log dirs are locked first, so a
running broker there is refused.  With ``--bootstrap-server`` the command goes
through AlterUserScramCredentials / DescribeUserScramCredentials, as
``kafka-configs --alter --entity-type users`` does.  With ``--zookeeper`` (a
ZooKeeper cluster's ``zookeeper.connect``, chroot included) it writes Kafka's
``/config/users/<name>`` znode and its change notification directly, as
``kafka-configs --zookeeper ... --entity-type users`` does: the way to create the
brokers' own inter-broker user before the cluster's first start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pystream.cli.common import admin_client, connection_options
from pystream.security.scram import (
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    SCRAM_MECHANISMS,
    new_credential,
)

_MECHANISM = click.Choice(sorted(SCRAM_MECHANISMS))
_LOG_DIRS_HELP = (
    "Write to the local metadata in these log dirs (comma-separated, as log.dirs) of a "
    "broker that is not running, instead of going through --bootstrap-server."
)


_ZOOKEEPER_HELP = (
    "Write to ZooKeeper at this zookeeper.connect (HOST:PORT[,...][/chroot]) directly, as "
    "kafka-configs --zookeeper does: e.g. the brokers' inter-broker user before they start."
)


def _target(log_dirs: str | None, zookeeper: str | None) -> str:
    """Where the command goes: "log-dirs", "zookeeper" or "bootstrap-server"; a usage
    error if more than one is given."""
    given = [opt for opt, value in (("--log-dirs", log_dirs), ("--zookeeper", zookeeper)) if value]
    if click.get_current_context().get_parameter_source("bootstrap_server") not in (
        None,
        click.core.ParameterSource.DEFAULT,
    ):
        given.append("--bootstrap-server")
    if len(given) > 1:
        raise click.UsageError(f"give only one of {', '.join(given)}")
    return given[0].removeprefix("--") if given else "bootstrap-server"


def _zk() -> Any:
    """The ZooKeeper writes, imported on use (kazoo only for --zookeeper)."""
    from pystream.cluster.zookeeper import entity_configs

    return entity_configs


def _with_zookeeper(connect: str, action: Callable[[Any], Any]) -> Any:
    """Run ``action(zk)`` with a client of ZooKeeper at ``connect`` (its chroot and Kafka's
    base znodes created if missing, as a broker's first start does)."""
    from kazoo.exceptions import KazooException

    from pystream.cluster.zookeeper.client import TimedClient, close
    from pystream.cluster.zookeeper.client import connect as zk_connect
    from pystream.errors import KafkaError

    try:
        client = zk_connect(connect)
    except KafkaError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        return action(TimedClient(client, 30.0))
    except KazooException as exc:  # e.g. a lost connection: one line, not a traceback
        raise click.ClickException(
            f"ZooKeeper at {connect}: {type(exc).__name__} {exc}".rstrip()
        ) from None
    finally:
        close(client)


def _with_local_store(log_dirs: str, action: Callable[[Any], Any]) -> Any:
    """Run ``action(store)`` on the single node's metadata, its log dirs locked."""
    from pystream.cluster.metadata.local_store import LocalMetadataStore
    from pystream.fileutil import DirectoryLockedError
    from pystream.storage.log_dirs import lock_log_dirs

    dirs = [d.strip() for d in log_dirs.split(",") if d.strip()]
    try:
        locked = lock_log_dirs(dirs)
    except DirectoryLockedError as exc:
        raise click.ClickException(
            f"{exc} — a broker is running on these log dirs: stop it, or use "
            "--bootstrap-server to change credentials through it"
        ) from None
    with locked:
        # The broker keeps its metadata in the first log dir.
        return action(LocalMetadataStore(dirs[0], 0))


@click.group()
def users() -> None:
    """Add, delete and list SASL/SCRAM users."""


@users.command()
@click.argument("name")
@click.option("--password", required=True, help="The user's password (stored salted only).")
@click.option("--mechanism", type=_MECHANISM, default="SCRAM-SHA-256", show_default=True)
@click.option(
    "--iterations", type=click.IntRange(MIN_ITERATIONS, MAX_ITERATIONS), default=MIN_ITERATIONS
)
@click.option("--log-dirs", default=None, help=_LOG_DIRS_HELP)
@click.option("--zookeeper", default=None, metavar="CONNECT", help=_ZOOKEEPER_HELP)
@connection_options
def add(
    name: str,
    password: str,
    mechanism: str,
    iterations: int,
    log_dirs: str | None,
    zookeeper: str | None,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Add a user (or change its password) for one SCRAM mechanism."""
    target = _target(log_dirs, zookeeper)
    if target != "bootstrap-server":
        change = [(name, mechanism, new_credential(mechanism, password, iterations))]
        if zookeeper:
            _with_zookeeper(zookeeper, lambda zk: _zk().alter_scram_credentials(zk, change))
        else:
            _with_local_store(
                log_dirs or "", lambda store: store.alter_scram_credentials_blocking(change)
            )
    else:
        with admin_client(bootstrap_server, command_config) as admin:
            admin.upsert_user_scram_credential(name, mechanism, password, iterations)
    click.echo(f"Completed updating {mechanism} credentials for user {name}.")


@users.command()
@click.argument("name")
@click.option("--mechanism", type=_MECHANISM, default=None, help="Default: every mechanism.")
@click.option("--log-dirs", default=None, help=_LOG_DIRS_HELP)
@click.option("--zookeeper", default=None, metavar="CONNECT", help=_ZOOKEEPER_HELP)
@connection_options
def delete(
    name: str,
    mechanism: str | None,
    log_dirs: str | None,
    zookeeper: str | None,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Delete a user's credentials (one mechanism, or all of them)."""
    target = _target(log_dirs, zookeeper)
    if target == "zookeeper":

        def remove_in_zookeeper(zk: Any) -> list[str]:
            have = sorted(_zk().read_scram_credentials(zk).get(name, {}))
            gone = [m for m in have if mechanism in (None, m)]
            if gone:
                _zk().alter_scram_credentials(zk, [(name, m, None) for m in gone])
            return gone

        removed = _with_zookeeper(zookeeper or "", remove_in_zookeeper)
    elif target == "log-dirs":

        def remove(store: Any) -> list[str]:
            have = sorted(store.scram_credentials().get(name, {}))
            gone = [m for m in have if mechanism in (None, m)]
            store.alter_scram_credentials_blocking([(name, m, None) for m in gone])
            return gone

        removed = _with_local_store(log_dirs or "", remove)
    else:
        with admin_client(bootstrap_server, command_config) as admin:
            have = admin.describe_user_scram_credentials([name]).get(name, {})
            removed = [m for m in sorted(have) if mechanism in (None, m)]
            for m in removed:
                admin.delete_user_scram_credential(name, m)
    if not removed:
        raise click.ClickException(f"user {name} has no {mechanism or 'SCRAM'} credentials")
    click.echo(f"Completed deleting {', '.join(removed)} credentials for user {name}.")


@users.command(name="list")
@click.option("--log-dirs", default=None, help=_LOG_DIRS_HELP)
@click.option("--zookeeper", default=None, metavar="CONNECT", help=_ZOOKEEPER_HELP)
@connection_options
def list_users(
    log_dirs: str | None, zookeeper: str | None, bootstrap_server: str, command_config: str | None
) -> None:
    """List users with their mechanisms and iterations (never a secret)."""
    target = _target(log_dirs, zookeeper)
    if target != "bootstrap-server":
        stored = (
            _with_zookeeper(zookeeper or "", lambda zk: _zk().read_scram_credentials(zk))
            if zookeeper
            else _with_local_store(log_dirs or "", lambda store: store.scram_credentials())
        )
        described = {
            user: {m: c.iterations for m, c in by_mech.items()} for user, by_mech in stored.items()
        }
    else:
        with admin_client(bootstrap_server, command_config) as admin:
            described = admin.describe_user_scram_credentials(None)
    for user in sorted(described):
        mechanisms = ", ".join(f"{m}(iterations={i})" for m, i in sorted(described[user].items()))
        click.echo(f"SCRAM credential configs for user-principal '{user}' are {mechanisms}")
