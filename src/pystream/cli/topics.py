"""``pystream topics create|list|describe|alter|delete`` (like ``kafka-topics.sh``), and
``reassign`` / ``elect-leaders`` (like ``kafka-reassign-partitions.sh`` and
``kafka-leader-election.sh``)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import click

from pystream.cli.common import (
    admin_client,
    client_settings,
    connection_options,
    parse_properties,
)


def _names(positional: tuple[str, ...], option: tuple[str, ...]) -> list[str]:
    """Topic names given as arguments and/or ``--topic``, in order, without repeats."""
    return list(dict.fromkeys([*positional, *option]))


def _one(positional: tuple[str, ...], option: tuple[str, ...]) -> str:
    names = _names(positional, option)
    if len(names) != 1:
        raise click.UsageError("name exactly one topic (TOPIC or --topic)")
    return names[0]


topic_option = click.option(
    "--topic", "topic_opts", multiple=True, metavar="TOPIC", help="A topic (repeatable)."
)


@click.group()
def topics() -> None:
    """Create, list, describe, alter and delete topics."""


@topics.command()
@click.argument("topic", nargs=-1)
@topic_option
@click.option("--partitions", type=click.IntRange(min=1), default=None, help="Partition count.")
@click.option("--replication-factor", type=click.IntRange(min=1), default=None)
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE", help="A topic config.")
@click.option("--if-not-exists", is_flag=True, help="No error if the topic exists.")
@connection_options
def create(
    topic: tuple[str, ...],
    topic_opts: tuple[str, ...],
    partitions: int | None,
    replication_factor: int | None,
    configs: tuple[str, ...],
    if_not_exists: bool,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Create a topic."""
    from pystream.client import NewTopic
    from pystream.errors import TopicAlreadyExistsError

    name = _one(topic, topic_opts)
    new = NewTopic(
        name,
        num_partitions=partitions or -1,
        replication_factor=replication_factor or -1,
        config=parse_properties(configs, "--config"),
    )
    with admin_client(bootstrap_server, command_config) as admin:
        try:
            admin.create_topics([new])
        except TopicAlreadyExistsError:
            if not if_not_exists:
                raise click.ClickException(f"topic {name!r} already exists") from None
            return
    click.echo(f"Created topic {name}.")


@topics.command("list")
@click.option("--exclude-internal", is_flag=True, help="Leave out internal topics.")
@connection_options
def list_(exclude_internal: bool, bootstrap_server: str, command_config: str | None) -> None:
    """List topic names, one a line."""
    with admin_client(bootstrap_server, command_config) as admin:
        for name in admin.list_topics(internal=not exclude_internal):
            click.echo(name)


@topics.command()
@click.argument("topic", nargs=-1)
@topic_option
@click.option("--exclude-internal", is_flag=True, help="Leave out internal topics.")
@connection_options
def describe(
    topic: tuple[str, ...],
    topic_opts: tuple[str, ...],
    exclude_internal: bool,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Partitions, leaders, replicas and non-default configs (all topics if none named)."""
    names = _names(topic, topic_opts) or None
    with admin_client(bootstrap_server, command_config) as admin:
        described = admin.describe_topics(names)
        for name in sorted(described):
            desc = described[name]
            if exclude_internal and desc.is_internal:
                continue
            entries = admin.describe_configs([("topic", name)])[(2, name)]
            overrides = ",".join(
                f"{e.name}={e.value}"
                for e in sorted(entries.values(), key=lambda e: e.name)
                if not e.is_default and not e.is_sensitive
            )
            replication = len(desc.partitions[0].replicas) if desc.partitions else 0
            click.echo(
                f"Topic: {name}\tTopicId: {desc.topic_id}\tPartitionCount: "
                f"{len(desc.partitions)}\tReplicationFactor: {replication}\tConfigs: {overrides}"
            )
            for p in desc.partitions:
                offline = ",".join(map(str, p.offline_replicas))
                click.echo(
                    f"\tTopic: {name}\tPartition: {p.partition}\tLeader: "
                    f"{p.leader if p.leader >= 0 else 'none'}\t"
                    f"Replicas: {','.join(map(str, p.replicas))}\t"
                    f"Isr: {','.join(map(str, p.isr))}"
                    + (f"\tOffline: {offline}" if offline else "")
                )


@topics.command()
@click.argument("topic", nargs=-1)
@topic_option
@click.option("--partitions", type=click.IntRange(min=1), default=None, help="New total count.")
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE", help="Set a config.")
@click.option("--delete-config", "deletes", multiple=True, metavar="KEY", help="Reset a config.")
@connection_options
def alter(
    topic: tuple[str, ...],
    topic_opts: tuple[str, ...],
    partitions: int | None,
    configs: tuple[str, ...],
    deletes: tuple[str, ...],
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Grow a topic's partitions and/or change its configs."""
    name = _one(topic, topic_opts)
    changes: dict[str, str | None] = dict(parse_properties(configs, "--config"))
    changes.update({key: None for key in deletes})
    if partitions is None and not changes:
        raise click.UsageError("nothing to alter: give --partitions, --config or --delete-config")
    with admin_client(bootstrap_server, command_config) as admin:
        if partitions is not None:
            admin.create_partitions({name: partitions})
        if changes:
            admin.describe_topics([name])  # a clear error for a missing topic
            admin.alter_configs(("topic", name), changes)
    click.echo(f"Altered topic {name}.")


@topics.command()
@click.argument("topic", nargs=-1)
@topic_option
@click.option("--if-exists", is_flag=True, help="No error for topics that do not exist.")
@connection_options
def delete(
    topic: tuple[str, ...],
    topic_opts: tuple[str, ...],
    if_exists: bool,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Delete topics."""
    names = _names(topic, topic_opts)
    if not names:
        raise click.UsageError("name at least one topic (TOPIC or --topic)")
    with admin_client(bootstrap_server, command_config) as admin:
        if if_exists:
            existing = set(admin.list_topics(internal=True))
            names = [n for n in names if n in existing]
        admin.delete_topics(names)
    for name in names:
        click.echo(f"Deleted topic {name}.")


def _run_admin(bootstrap_server: str, command_config: str | None, work: Any) -> Any:
    """Run ``await work(admin)`` with an asyncio admin client (for the controller's APIs)."""
    from pystream.aio import AdminClient

    async def run() -> Any:
        async with AdminClient(bootstrap_server, **client_settings(command_config)) as admin:
            return await work(admin)

    return asyncio.run(run())


def _replica_list(text: str) -> list[int]:
    try:
        replicas = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.UsageError(
            f"--replicas {text!r} is not a comma-separated list of ids"
        ) from None
    if not replicas:
        raise click.UsageError("--replicas names no broker")
    return replicas


def _reassignment_file(path: str) -> dict[tuple[str, int], list[int] | None]:
    """Kafka's ``kafka-reassign-partitions`` JSON: ``{"version":1,"partitions":[{"topic":
    "t","partition":0,"replicas":[1,2]}, ...]}``."""
    try:
        with open(path) as file:
            document = json.load(file)
        return {
            (str(entry["topic"]), int(entry["partition"])): [int(b) for b in entry["replicas"]]
            for entry in document["partitions"]
        }
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(
            f"{path}: not a reassignment JSON file ({exc!r}); expected "
            '{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1,2]}]}'
        ) from None


@topics.command()
@click.option("--topic", default=None, help="The topic of the partition to move.")
@click.option("--partition", type=click.IntRange(min=0), default=None, help="Its index.")
@click.option("--replicas", default=None, metavar="ID,ID,...", help="The new replicas, in order.")
@click.option(
    "--reassignment-json-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Many partitions at once, in kafka-reassign-partitions' JSON format.",
)
@click.option("--cancel", is_flag=True, help="Cancel the partition's ongoing reassignment.")
@click.option("--list", "list_only", is_flag=True, help="Show the ongoing reassignments.")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Wait up to this long for the reassignments to finish.",
)
@connection_options
def reassign(
    topic: str | None,
    partition: int | None,
    replicas: str | None,
    reassignment_json_file: str | None,
    cancel: bool,
    list_only: bool,
    wait_s: float | None,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Move partitions to other brokers (or cancel, or list, reassignments).

    The new replicas join, catch up and enter the ISR; then the old ones leave
    (their logs are deleted) and, if needed, a new leader is elected among the new.
    """
    if list_only:
        ongoing = _run_admin(
            bootstrap_server, command_config, lambda a: a.list_partition_reassignments()
        )
        for tp, state in sorted(ongoing.items()):
            click.echo(
                f"Topic: {tp.topic}\tPartition: {tp.partition}\t"
                f"Replicas: {','.join(map(str, state['replicas']))}\t"
                f"Adding: {','.join(map(str, state['adding_replicas']))}\t"
                f"Removing: {','.join(map(str, state['removing_replicas']))}"
            )
        return
    if reassignment_json_file is not None:
        if topic is not None or partition is not None or replicas is not None:
            raise click.UsageError("give --reassignment-json-file or --topic/--partition")
        wanted = _reassignment_file(reassignment_json_file)
        if cancel:
            wanted = dict.fromkeys(wanted)
    else:
        if topic is None or partition is None or (replicas is not None) == cancel:
            raise click.UsageError("give --topic, --partition and --replicas (or --cancel)")
        wanted = {(topic, partition): None if cancel else _replica_list(replicas or "")}
    if not wanted:
        raise click.UsageError("the reassignment names no partition")

    async def work(admin: Any) -> Any:
        await admin.alter_partition_reassignments(wanted)
        if wait_s is None:
            return {}
        deadline = time.monotonic() + wait_s
        while True:
            ongoing = await admin.list_partition_reassignments(list(wanted))
            if not ongoing or time.monotonic() >= deadline:
                return ongoing
            await asyncio.sleep(0.2)

    pending = _run_admin(bootstrap_server, command_config, work)
    verb = "Cancelled" if cancel else "Started"
    for (name, index), target in sorted(wanted.items()):
        moved = "" if target is None else f" to {','.join(map(str, target))}"
        click.echo(f"{verb} reassignment of {name}-{index}{moved}.")
    if wait_s is not None:
        if pending:
            left = ", ".join(f"{tp.topic}-{tp.partition}" for tp in sorted(pending))
            raise click.ClickException(f"still reassigning after {wait_s:g}s: {left}")
        click.echo("Reassignment complete.")


@topics.command("elect-leaders")
@click.option("--topic", default=None, help="The topic (all partitions of all topics if none).")
@click.option("--partition", type=click.IntRange(min=0), default=None, help="One partition.")
@click.option(
    "--election-type",
    type=click.Choice(["preferred", "unclean"]),
    default="preferred",
    show_default=True,
)
@connection_options
def elect_leaders(
    topic: str | None,
    partition: int | None,
    election_type: str,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Give partitions their preferred leader back (or elect any live replica, unclean)."""
    from pystream.errors import ElectionNotNeededError

    if partition is not None and topic is None:
        raise click.UsageError("--partition needs --topic")

    async def work(admin: Any) -> Any:
        if topic is None:
            return await admin.elect_leaders(election_type)
        indexes = (
            [partition]
            if partition is not None
            else [p.partition for p in (await admin.describe_topics([topic]))[topic].partitions]
        )
        return await admin.elect_leaders(election_type, [(topic, i) for i in indexes])

    failed = False
    for tp, error in sorted(_run_admin(bootstrap_server, command_config, work).items()):
        if error is None:
            click.echo(f"Elected a new leader for {tp.topic}-{tp.partition}.")
        elif isinstance(error, ElectionNotNeededError):
            click.echo(f"No election needed for {tp.topic}-{tp.partition}.")
        else:
            failed = True
            click.echo(f"Election failed for {tp.topic}-{tp.partition}: {error}", err=True)
    if failed:
        raise click.exceptions.Exit(1)
