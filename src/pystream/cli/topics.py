"""``pystream topics create|list|describe|alter|delete`` (like ``kafka-topics.sh``)."""

from __future__ import annotations

import click

from pystream.cli.common import admin_client, connection_options, parse_properties


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
