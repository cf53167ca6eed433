"""Shared pieces of the client commands: connection options, client settings, errors.

Every client command takes ``--bootstrap-server`` and ``--command-config`` (a
Kafka-style ``.properties`` file of client settings).  Errors a user can cause
become one ``Error: ...`` line on stderr and exit code 1 (see
:class:`OneLineErrors`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from pystream.client.config import settings_from_properties
from pystream.config import read_properties_file
from pystream.errors import InvalidConfigError

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def connection_options(func: F) -> F:
    """Add ``--bootstrap-server`` and ``--command-config`` to a command."""
    func = click.option(
        "--command-config",
        type=click.Path(dir_okay=False),
        default=None,
        help="A properties file of client settings (e.g. client.id, request.timeout.ms).",
    )(func)
    func = click.option(
        "--bootstrap-server",
        default=DEFAULT_BOOTSTRAP,
        show_default=True,
        metavar="HOST:PORT[,...]",
        help="Where to connect.",
    )(func)
    return func


def listen_options(default_port: int) -> Callable[[F], F]:
    """Add ``--host`` and ``--port`` (0: a free one) to a command that serves HTTP."""

    def decorate(func: F) -> F:
        func = click.option(
            "--port",
            default=default_port,
            show_default=True,
            type=click.IntRange(0, 65535),
            help="HTTP port (0: any free port).",
        )(func)
        return click.option(
            "--host", default="127.0.0.1", show_default=True, help="Address to listen on."
        )(func)

    return decorate


def client_settings(command_config: str | None) -> dict[str, Any]:
    """Client keyword arguments from a ``--command-config`` properties file."""
    if not command_config:
        return {}
    return client_settings_from(read_properties(command_config), command_config)


def read_properties(path: str) -> dict[str, str]:
    """A ``.properties`` file, or a one-line error saying why it cannot be read."""
    try:
        return read_properties_file(path)
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from exc


def client_settings_from(props: dict[str, str], command_config: str) -> dict[str, Any]:
    """Client keyword arguments from Kafka client properties read from ``command_config``."""
    try:
        return settings_from_properties(props, command_config)
    except (ValueError, InvalidConfigError) as exc:
        raise click.ClickException(str(exc)) from None


def admin_client(bootstrap_server: str, command_config: str | None) -> Any:
    """A connected :class:`pystream.AdminClient` (use it as a context manager)."""
    from pystream.client import AdminClient

    return AdminClient(bootstrap_server, **client_settings(command_config))


def parse_properties(values: tuple[str, ...], what: str = "--property") -> dict[str, str]:
    """``("k=v", ...)`` -> ``{"k": "v"}``; a malformed item is a usage error."""
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"{what} {item!r} is not KEY=VALUE")
        out[key.strip()] = value
    return out


def one_line(exc: BaseException) -> str:
    """An exception as one line of text."""
    inner = getattr(exc, "errors", None)
    if isinstance(inner, dict) and inner:
        text = "; ".join(str(e) for e in inner.values())
    else:
        text = str(exc)
    return " ".join(text.split()) or type(exc).__name__


class OneLineErrors(click.Group):
    """A click group whose commands report every user error as one ``Error: ...`` line.

    Kafka, connection and value errors exit with 1, usage errors (also click's
    own, e.g. a missing option) with 2 -- without click's multi-line usage text.
    """

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _usage_error(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        from pystream.errors import KafkaError

        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _usage_error(exc) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:  # e.g. ``pystream consume t | head``: stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(1) from None
        except (KafkaError, OSError, ValueError, TimeoutError) as exc:
            raise click.ClickException(one_line(exc)) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None


def _usage_error(exc: click.UsageError) -> click.ClickException:
    """A usage error as one line that points at ``--help``."""
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    error = click.ClickException(one_line(click.ClickException(exc.format_message())) + hint)
    error.exit_code = 2
    return error


def kafka_properties(values: tuple[str, ...], what: str) -> dict[str, Any]:
    """``--producer-property acks=1`` style items as client keyword arguments
    (dots become underscores; integers and true/false are converted)."""
    out: dict[str, Any] = {}
    for key, value in parse_properties(values, what).items():
        converted: Any = value
        if value.lstrip("-").isdigit():
            converted = int(value)
        elif value.lower() in ("true", "false"):
            converted = value.lower() == "true"
        out[key.replace(".", "_").replace("-", "_")] = converted
    return out


def make_client(factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Construct a client, turning an unknown setting into a one-line error."""
    try:
        return factory(*args, **kwargs)
    except (TypeError, AttributeError, ValueError) as exc:
        raise click.ClickException(f"bad client setting: {one_line(exc)}") from None
