"""``pystream consume TOPIC``: print records (like ``kafka-console-consumer.sh``).

Output follows Kafka's ``DefaultMessageFormatter``: with ``--property
print.timestamp|print.partition|print.offset|print.headers|print.key=true`` the
fields come in that order, separated by tabs (``key.separator``), before the value.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import click

from pystream.cli.common import (
    client_settings,
    connection_options,
    kafka_properties,
    make_client,
    parse_properties,
)

_TIMESTAMP_TYPES = {0: "CreateTime", 1: "LogAppendTime"}


@dataclass(slots=True)
class Formatter:
    """Kafka's DefaultMessageFormatter, configured by ``--property``."""

    print_timestamp: bool = False
    print_partition: bool = False
    print_offset: bool = False
    print_headers: bool = False
    print_key: bool = False
    print_value: bool = True
    key_separator: str = "\t"
    line_separator: str = "\n"
    headers_separator: str = ","
    null_literal: str = "null"

    @classmethod
    def from_properties(cls, props: dict[str, str]) -> Formatter:
        flags = {
            "print.timestamp",
            "print.partition",
            "print.offset",
            "print.headers",
            "print.key",
            "print.value",
        }
        texts = {"key.separator", "line.separator", "headers.separator", "null.literal"}
        unknown = sorted(set(props) - flags - texts)
        if unknown:
            raise click.UsageError(f"unknown --property {unknown[0]!r}")
        kwargs: dict[str, Any] = {
            k.replace(".", "_"): props[k].lower() == "true" for k in flags & set(props)
        }
        kwargs.update({k.replace(".", "_"): props[k] for k in texts & set(props)})
        return cls(**kwargs)

    def _text(self, data: bytes | None) -> str:
        return self.null_literal if data is None else data.decode("utf-8", "replace")

    def format(self, record: Any) -> str:
        parts: list[str] = []
        if self.print_timestamp:
            kind = _TIMESTAMP_TYPES.get(record.timestamp_type, "NoTimestampType")
            parts.append(f"{kind}:{record.timestamp}")
        if self.print_partition:
            parts.append(f"Partition:{record.partition}")
        if self.print_offset:
            parts.append(f"Offset:{record.offset}")
        if self.print_headers:
            headers = self.headers_separator.join(
                f"{name}:{self._text(value)}" for name, value in record.headers
            )
            parts.append(headers or "NO_HEADERS")
        if self.print_key:
            parts.append(self._text(record.key))
        if self.print_value:
            parts.append(self._text(record.value))
        return self.key_separator.join(parts) + self.line_separator


def _start_offset(consumer: Any, tp: Any, offset: str) -> None:
    """Position ``tp`` at ``earliest``, ``latest`` or a number (negative: from the end)."""
    if offset == "earliest":
        consumer.seek_to_beginning(tp)
    elif offset == "latest":
        consumer.seek_to_end(tp)
    else:
        try:
            number = int(offset)
        except ValueError:
            raise click.UsageError(
                f"--offset must be earliest, latest or a number, got {offset!r}"
            ) from None
        if number < 0:
            number = max(0, consumer.end_offsets([tp])[tp] + number)
        consumer.seek(tp, number)


@click.command()
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="Start at the earliest offset.")
@click.option("--group", default=None, help="Consume as a member of this consumer group.")
@click.option(
    "--partition", type=click.IntRange(min=0), default=None, help="Consume only this partition."
)
@click.option(
    "--offset",
    default=None,
    help="With --partition: earliest, latest or an offset (negative: from the end).",
)
@click.option(
    "--max-messages", type=click.IntRange(min=1), default=None, help="Exit after this many records."
)
@click.option(
    "--timeout-ms",
    type=click.IntRange(min=1),
    default=None,
    help="Exit when no record arrived for this long.",
)
@click.option(
    "--isolation-level",
    default="read_uncommitted",
    show_default=True,
    type=click.Choice(["read_uncommitted", "read_committed"]),
)
@click.option(
    "--property",
    "properties",
    multiple=True,
    metavar="KEY=VALUE",
    help="Output: print.key, print.timestamp, print.partition, print.offset, ...",
)
@click.option(
    "--consumer-property",
    "consumer_properties",
    multiple=True,
    metavar="KEY=VALUE",
    help="A consumer setting, e.g. fetch.max.wait.ms=100.",
)
@connection_options
def consume(
    topic: str,
    from_beginning: bool,
    group: str | None,
    partition: int | None,
    offset: str | None,
    max_messages: int | None,
    timeout_ms: int | None,
    isolation_level: str,
    properties: tuple[str, ...],
    consumer_properties: tuple[str, ...],
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Print TOPIC's records to stdout until Ctrl-C, --max-messages or --timeout-ms."""
    from pystream.client import Consumer, TopicPartition

    if offset is not None and partition is None:
        raise click.UsageError("--offset needs --partition")
    if offset is not None and from_beginning:
        raise click.UsageError("give --offset or --from-beginning, not both")
    if group is not None and partition is not None:
        raise click.UsageError("--partition cannot be combined with --group")
    formatter = Formatter.from_properties(parse_properties(properties))
    settings = {
        **client_settings(command_config),
        "group_id": group,
        "auto_offset_reset": "earliest" if from_beginning else "latest",
        "isolation_level": isolation_level,
        **kafka_properties(consumer_properties, "--consumer-property"),
    }
    consumer = make_client(Consumer, bootstrap_servers=bootstrap_server, **settings)
    counter: list[int] = []
    try:
        if group is not None:
            consumer.subscribe([topic])
        else:
            partitions = consumer.partitions_for(topic)
            if not partitions:
                raise click.ClickException(f"topic {topic!r} does not exist")
            if partition is not None and partition not in partitions:
                raise click.ClickException(f"topic {topic!r} has no partition {partition}")
            chosen = [partition] if partition is not None else sorted(partitions)
            tps = [TopicPartition(topic, p) for p in chosen]
            consumer.assign(tps)
            for tp in tps:
                _start_offset(consumer, tp, offset or ("earliest" if from_beginning else "latest"))
        counter.append(0)
        _print_records(consumer, formatter, max_messages, timeout_ms, counter)
    finally:
        consumer.close()
        if counter:
            click.echo(f"Processed a total of {counter[0]} messages", err=True)


def _print_records(
    consumer: Any,
    formatter: Formatter,
    max_messages: int | None,
    timeout_ms: int | None,
    counter: list[int],
) -> None:
    """Poll and print until the limit or the idle timeout, counting in ``counter[0]``."""
    out = sys.stdout
    count = 0
    idle_deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
    while max_messages is None or count < max_messages:
        wait = 1.0 if idle_deadline is None else max(0.0, idle_deadline - time.monotonic())
        want = None if max_messages is None else max_messages - count
        records = consumer.poll(min(wait, 1.0), max_records=want)
        if records:
            for record in records:
                text = formatter.format(record)
                # Counted before it can be seen (stdout may be unbuffered): a Ctrl-C right
                # after a record appears still reports it.
                count += 1
                counter[0] = count
                out.write(text)
            out.flush()
            if timeout_ms is not None:
                idle_deadline = time.monotonic() + timeout_ms / 1000
        elif idle_deadline is not None and time.monotonic() >= idle_deadline:
            break
