"""``pystream groups list|describe|delete|reset-offsets`` (like ``kafka-consumer-groups.sh``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

from pystream.cli.common import admin_client, connection_options

_INACTIVE = {"Empty", "Dead"}


def print_columns(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Whitespace-aligned columns with an upper-case header line, as Kafka's tools print."""
    text_rows = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in text_rows)]) for i, h in enumerate(headers)]
    for row in [list(headers), *text_rows]:
        click.echo(" ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@click.group()
def groups() -> None:
    """List, describe, delete consumer groups and reset their offsets."""


@groups.command("list")
@click.option("--state", "with_state", is_flag=True, help="Also show each group's state.")
@connection_options
def list_(with_state: bool, bootstrap_server: str, command_config: str | None) -> None:
    """Group ids, one a line."""
    with admin_client(bootstrap_server, command_config) as admin:
        listings = admin.list_groups()
    if with_state:
        print_columns(["GROUP", "STATE"], [(g.group_id, g.state or "-") for g in listings])
    else:
        for listing in listings:
            click.echo(listing.group_id)


def _offset_rows(admin: Any, group_id: str, description: Any) -> list[tuple[Any, ...]]:
    """One row per partition the group committed or owns: offsets, lag and owner."""
    return [
        (
            group_id,
            lag.partition.topic,
            lag.partition.partition,
            lag.committed,
            lag.end,
            lag.lag,
            lag.member.member_id if lag.member else None,
            lag.member.client_host if lag.member else None,
            lag.member.client_id if lag.member else None,
        )
        for lag in admin.list_consumer_group_lags(group_id, description)
    ]


@groups.command()
@click.argument("group", nargs=-1)
@click.option("--group", "group_opts", multiple=True, help="A group id (repeatable).")
@click.option("--all-groups", is_flag=True, help="Describe every group.")
@click.option("--members", "show_members", is_flag=True, help="Show members, not offsets.")
@click.option("--state", "show_state", is_flag=True, help="Show the group's state.")
@connection_options
def describe(
    group: tuple[str, ...],
    group_opts: tuple[str, ...],
    all_groups: bool,
    show_members: bool,
    show_state: bool,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Offsets and lag per partition (or --members, --state) of consumer groups."""
    names = list(dict.fromkeys([*group, *group_opts]))
    if not names and not all_groups:
        raise click.UsageError("name a group (GROUP or --group) or give --all-groups")
    with admin_client(bootstrap_server, command_config) as admin:
        if all_groups:
            names = [g.group_id for g in admin.list_groups()]
        descriptions = admin.describe_groups(names)
        for index, name in enumerate(names):
            desc = descriptions[name]
            if index:
                click.echo("")
            if desc.state == "Dead":
                raise click.ClickException(f"consumer group {name!r} does not exist")
            if show_state:
                print_columns(
                    ["GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"],
                    [(name, desc.coordinator, desc.protocol, desc.state, len(desc.members))],
                )
            elif show_members:
                print_columns(
                    ["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS"],
                    [
                        (name, m.member_id, m.client_host, m.client_id, len(m.assignment))
                        for m in desc.members
                    ],
                )
            else:
                if not desc.members:
                    click.echo(f"Consumer group '{name}' has no active members.")
                print_columns(
                    [
                        "GROUP",
                        "TOPIC",
                        "PARTITION",
                        "CURRENT-OFFSET",
                        "LOG-END-OFFSET",
                        "LAG",
                        "CONSUMER-ID",
                        "HOST",
                        "CLIENT-ID",
                    ],
                    _offset_rows(admin, name, desc),
                )


@groups.command()
@click.argument("group", nargs=-1)
@click.option("--group", "group_opts", multiple=True, help="A group id (repeatable).")
@connection_options
def delete(
    group: tuple[str, ...],
    group_opts: tuple[str, ...],
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Delete empty consumer groups and their committed offsets."""
    names = list(dict.fromkeys([*group, *group_opts]))
    if not names:
        raise click.UsageError("name at least one group (GROUP or --group)")
    from pystream.errors import GroupIdNotFoundError, NonEmptyGroupError

    with admin_client(bootstrap_server, command_config) as admin:
        try:
            admin.delete_groups(names)
        except (GroupIdNotFoundError, NonEmptyGroupError) as exc:
            failed = getattr(exc, "errors", {})
            reasons = [
                f"consumer group '{g}' "
                + ("does not exist" if isinstance(e, GroupIdNotFoundError) else "is not empty")
                for g, e in failed.items()
            ]
            raise click.ClickException("; ".join(reasons) or str(exc)) from None
    quoted = ", ".join(f"'{n}'" for n in names)
    click.echo(f"Deletion of requested consumer groups ({quoted}) was successful.")


def _parse_topic_spec(spec: str) -> tuple[str, list[int] | None]:
    """``topic`` or ``topic:0,1,2``."""
    topic, sep, parts = spec.partition(":")
    if not sep:
        return topic, None
    try:
        return topic, [int(p) for p in parts.split(",") if p.strip()]
    except ValueError:
        raise click.UsageError(f"--topic {spec!r} is not TOPIC or TOPIC:P1,P2") from None


def _parse_datetime(text: str) -> int:
    """An ISO date-time (local time unless it names a zone) as epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.UsageError(
            f"--to-datetime {text!r} is not YYYY-MM-DDTHH:mm:SS[.sss][+HH:MM]"
        ) from None
    return int(moment.astimezone().timestamp() * 1000)


def _reset_partitions(
    admin: Any, group_id: str, topic_specs: tuple[str, ...], all_topics: bool
) -> list[Any]:
    from pystream.client import TopicPartition

    if all_topics:
        existing = set(admin.list_topics(internal=True))
        committed = admin.list_consumer_group_offsets(group_id)
        return sorted(tp for tp in committed if tp.topic in existing)
    wanted: list[TopicPartition] = []
    specs = [_parse_topic_spec(s) for s in topic_specs]
    described = admin.describe_topics(sorted({t for t, _ in specs}))
    for topic, parts in specs:
        existing = {p.partition for p in described[topic].partitions}
        for p in parts if parts is not None else sorted(existing):
            if p not in existing:
                raise click.ClickException(f"topic {topic!r} has no partition {p}")
            wanted.append(TopicPartition(topic, p))
    return sorted(set(wanted))


@groups.command("reset-offsets")
@click.argument("group", required=False)
@click.option("--group", "group_opt", default=None, help="The group id.")
@click.option("--topic", "topic_specs", multiple=True, metavar="TOPIC[:P1,P2]")
@click.option("--all-topics", is_flag=True, help="Every topic the group has offsets for.")
@click.option("--to-earliest", "how", flag_value="to-earliest", help="Reset to the log start.")
@click.option("--to-latest", "how", flag_value="to-latest", help="Reset to the log end.")
@click.option("--to-current", "how", flag_value="to-current", help="Keep the committed offsets.")
@click.option("--to-offset", type=int, default=None, help="Reset to this offset.")
@click.option("--to-datetime", default=None, metavar="YYYY-MM-DDTHH:mm:SS.sss", help="Time.")
@click.option("--shift-by", type=int, default=None, help="Move committed offsets by N.")
@click.option("--dry-run", is_flag=True, help="Only show the new offsets (the default).")
@click.option("--execute", is_flag=True, help="Commit the new offsets.")
@connection_options
def reset_offsets(
    group: str | None,
    group_opt: str | None,
    topic_specs: tuple[str, ...],
    all_topics: bool,
    how: str | None,
    to_offset: int | None,
    to_datetime: str | None,
    shift_by: int | None,
    dry_run: bool,
    execute: bool,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Reset a group's committed offsets (the group must have no active members)."""
    group_id = group or group_opt
    if not group_id:
        raise click.UsageError("name the group (GROUP or --group)")
    choices: list[tuple[str, Any]] = []
    if how:
        choices.append((how, 0))
    if to_offset is not None:
        choices.append(("to-offset", to_offset))
    if to_datetime is not None:
        choices.append(("to-datetime", _parse_datetime(to_datetime)))
    if shift_by is not None:
        choices.append(("shift-by", shift_by))
    if len(choices) != 1:
        raise click.UsageError(
            "give exactly one of --to-earliest, --to-latest, --to-current, --to-offset, "
            "--to-datetime, --shift-by"
        )
    if bool(topic_specs) == all_topics:
        raise click.UsageError("give --topic or --all-topics")
    if dry_run and execute:
        raise click.UsageError("give --dry-run or --execute, not both")
    with admin_client(bootstrap_server, command_config) as admin:
        state = admin.describe_groups([group_id])[group_id].state
        if state not in _INACTIVE:
            raise click.ClickException(
                f"assignments can only be reset if the group '{group_id}' is inactive, "
                f"but the current state is {state}"
            )
        partitions = _reset_partitions(admin, group_id, topic_specs, all_topics)
        targets = admin.consumer_group_reset_targets(group_id, partitions, *choices[0])
        if execute and targets:
            admin.alter_consumer_group_offsets(group_id, targets)
    if not execute:
        click.echo("WARN: no action was performed: add --execute to reset the offsets.", err=True)
    print_columns(
        ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"],
        [(group_id, tp.topic, tp.partition, off) for tp, off in sorted(targets.items())],
    )
