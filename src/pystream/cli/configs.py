"""``pystream configs describe|alter`` (like ``kafka-configs.sh``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from pystream.cli.common import admin_client, connection_options

F = TypeVar("F", bound=Callable[..., Any])

_ENTITY_TYPES = {"topics": "topic", "brokers": "broker", "groups": "group"}
_SOURCES = {
    1: "DYNAMIC_TOPIC_CONFIG",
    2: "DYNAMIC_BROKER_CONFIG",
    3: "DYNAMIC_DEFAULT_BROKER_CONFIG",
    4: "STATIC_BROKER_CONFIG",
    5: "DEFAULT_CONFIG",
    6: "DYNAMIC_BROKER_LOGGER_CONFIG",
    8: "GROUP_CONFIG",
}


def entity_options(func: F) -> F:
    """``--entity-type/--entity-name`` and the ``--topic/--broker/--group`` shortcuts."""
    for decorator in reversed(
        [
            click.option("--entity-type", type=click.Choice(sorted(_ENTITY_TYPES)), default=None),
            click.option("--entity-name", default=None),
            click.option(
                "--entity-default",
                is_flag=True,
                help="With --entity-type brokers: the cluster-wide dynamic broker configs.",
            ),
            click.option("--topic", default=None, help="Same as --entity-type topics."),
            click.option("--broker", default=None, help="Same as --entity-type brokers."),
            click.option("--group", default=None, help="Same as --entity-type groups."),
        ]
    ):
        func = decorator(func)
    return func


def _entity(
    entity_type: str | None,
    entity_name: str | None,
    entity_default: bool,
    topic: str | None,
    broker: str | None,
    group: str | None,
) -> tuple[str, str]:
    """``(resource type, name)`` from the options; exactly one entity must be named.
    ``("broker", "")`` is the cluster-wide default (``--entity-default``)."""
    named = [(t, n) for t, n in (("topic", topic), ("broker", broker), ("group", group)) if n]
    if entity_default:
        if entity_type != "brokers" or entity_name is not None:
            raise click.UsageError("--entity-default goes with --entity-type brokers alone")
        named.append(("broker", ""))
    elif entity_type is not None:
        if entity_name is None:
            raise click.UsageError("--entity-type needs --entity-name")
        named.append((_ENTITY_TYPES[entity_type], entity_name))
    elif entity_name is not None:
        raise click.UsageError("--entity-name needs --entity-type")
    if len(named) != 1:
        raise click.UsageError("name one entity: --topic, --broker, --group or --entity-type")
    kind, name = named[0]
    if kind == "broker" and not name.isdigit() and not entity_default:
        raise click.UsageError(f"broker {name!r} is not a broker id")
    return kind, name


def split_config_list(text: str) -> dict[str, str]:
    """``k1=v1,k2=[a,b]`` -> ``{"k1": "v1", "k2": "a,b"}`` (brackets hold lists)."""
    items: list[str] = []
    depth, current = 0, ""
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    out: dict[str, str] = {}
    for item in filter(str.strip, items):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"--add-config item {item!r} is not KEY=VALUE")
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            value = value[1:-1]
        out[key.strip()] = value
    return out


@click.group()
def configs() -> None:
    """Describe and alter topic, broker and group configs."""


@configs.command()
@entity_options
@click.option("--all", "show_all", is_flag=True, help="Include default values.")
@connection_options
def describe(
    entity_type: str | None,
    entity_name: str | None,
    entity_default: bool,
    topic: str | None,
    broker: str | None,
    group: str | None,
    show_all: bool,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Show an entity's configs (only the overridden ones unless --all)."""
    kind, name = _entity(entity_type, entity_name, entity_default, topic, broker, group)
    with admin_client(bootstrap_server, command_config) as admin:
        if kind == "topic":
            admin.describe_topics([name])  # a clear error for a missing topic
        result = admin.describe_configs([(kind, name)])
    entries = next(iter(result.values()), {})
    label = "All" if show_all else "Dynamic"
    if entity_default:  # Kafka's wording for the cluster-wide default
        click.echo("Default configs for brokers in the cluster are:")
    else:
        click.echo(f"{label} configs for {kind} {name} are:")
    for entry in sorted(entries.values(), key=lambda e: e.name):
        if not show_all and (entry.is_default or entry.source in (4, 5)):
            continue
        value = "null" if entry.value is None else entry.value
        if entry.is_sensitive:
            value = "null"
        source = _SOURCES.get(entry.source, "UNKNOWN")
        sensitive = str(entry.is_sensitive).lower()
        click.echo(f"  {entry.name}={value} sensitive={sensitive} source={source}")


@configs.command()
@entity_options
@click.option("--add-config", "add", multiple=True, metavar="K1=V1,K2=[A,B]")
@click.option("--delete-config", "delete", multiple=True, metavar="K1,K2")
@connection_options
def alter(
    entity_type: str | None,
    entity_name: str | None,
    entity_default: bool,
    topic: str | None,
    broker: str | None,
    group: str | None,
    add: tuple[str, ...],
    delete: tuple[str, ...],
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Set (--add-config) or reset to default (--delete-config) an entity's configs."""
    kind, name = _entity(entity_type, entity_name, entity_default, topic, broker, group)
    changes: dict[str, str | None] = {}
    for text in add:
        changes.update(split_config_list(text))
    for text in delete:
        changes.update({key.strip(): None for key in text.split(",") if key.strip()})
    if not changes:
        raise click.UsageError("nothing to alter: give --add-config or --delete-config")
    with admin_client(bootstrap_server, command_config) as admin:
        if kind == "topic":
            admin.describe_topics([name])
        admin.alter_configs((kind, name), changes)
    if entity_default:
        click.echo("Completed updating default config for brokers in the cluster.")
    else:
        click.echo(f"Completed updating config for {kind} {name}.")
