"""``pystream users add|delete|list``: SCRAM credentials.

With ``--log-dirs`` the credential is written straight into the local metadata
of a broker that is not running (the bootstrap admin before the first start, as
``kafka-storage format --add-scram`` does); the log dirs are locked first, so a
running broker there is refused.  With ``--bootstrap-server`` the command goes
through AlterUserScramCredentials / DescribeUserScramCredentials, as
``kafka-configs --alter --entity-type users`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pystream.cli.common import admin_client, connection_options
from pystream.security.scram import MIN_ITERATIONS, SCRAM_MECHANISMS, new_credential

_MECHANISM = click.Choice(sorted(SCRAM_MECHANISMS))
_LOG_DIRS_HELP = (
    "Write to the local metadata in these log dirs (comma-separated, as log.dirs) of a "
    "broker that is not running, instead of going through --bootstrap-server."
)


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
@click.option("--iterations", type=click.IntRange(MIN_ITERATIONS, 16384), default=MIN_ITERATIONS)
@click.option("--log-dirs", default=None, help=_LOG_DIRS_HELP)
@connection_options
def add(
    name: str,
    password: str,
    mechanism: str,
    iterations: int,
    log_dirs: str | None,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Add a user (or change its password) for one SCRAM mechanism."""
    if log_dirs:
        credential = new_credential(mechanism, password, iterations)
        _with_local_store(
            log_dirs,
            lambda store: store.alter_scram_credentials_blocking([(name, mechanism, credential)]),
        )
    else:
        with admin_client(bootstrap_server, command_config) as admin:
            admin.upsert_user_scram_credential(name, mechanism, password, iterations)
    click.echo(f"Completed updating {mechanism} credentials for user {name}.")


@users.command()
@click.argument("name")
@click.option("--mechanism", type=_MECHANISM, default=None, help="Default: every mechanism.")
@click.option("--log-dirs", default=None, help=_LOG_DIRS_HELP)
@connection_options
def delete(
    name: str,
    mechanism: str | None,
    log_dirs: str | None,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Delete a user's credentials (one mechanism, or all of them)."""
    if log_dirs:

        def remove(store: Any) -> list[str]:
            have = sorted(store.scram_credentials().get(name, {}))
            gone = [m for m in have if mechanism in (None, m)]
            store.alter_scram_credentials_blocking([(name, m, None) for m in gone])
            return gone

        removed = _with_local_store(log_dirs, remove)
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
@connection_options
def list_users(log_dirs: str | None, bootstrap_server: str, command_config: str | None) -> None:
    """List users with their mechanisms and iterations (never a secret)."""
    if log_dirs:
        described = _with_local_store(
            log_dirs,
            lambda store: {
                user: {m: c.iterations for m, c in by_mech.items()}
                for user, by_mech in store.scram_credentials().items()
            },
        )
    else:
        with admin_client(bootstrap_server, command_config) as admin:
            described = admin.describe_user_scram_credentials(None)
    for user in sorted(described):
        mechanisms = ", ".join(f"{m}(iterations={i})" for m, i in sorted(described[user].items()))
        click.echo(f"SCRAM credential configs for user-principal '{user}' are {mechanisms}")
