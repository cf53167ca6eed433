"""``pystream produce TOPIC``: records from stdin lines (like ``kafka-console-producer.sh``).

Each line is a record value.  ``--property parse.key=true`` splits a key off at
``key.separator`` (tab by default); ``--property parse.headers=true`` reads
``h1:v1,h2:v2`` before the key (``headers.delimiter`` tab, ``headers.separator``
``,``, ``headers.key.separator`` ``:``).  ``null.marker`` turns a matching key
or value into null.  ``--header KEY=VALUE`` adds a header to every record.

The producer is idempotent unless ``--no-idempotence`` (or ``--acks 0/1``).
``--transactional-id`` writes the input in one transaction, or in transactions of
``--transaction-size`` records, each committed when full and the last at the end
of the input; an error aborts the open transaction (the ones committed stay).
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass
from typing import Any, BinaryIO

import click

from pystream.cli.common import (
    client_settings,
    connection_options,
    kafka_properties,
    make_client,
    parse_properties,
)

_MAX_PENDING = 10_000


@dataclass(slots=True)
class LineReader:
    """Turns one input line into ``(key, value, headers)`` as the properties say."""

    parse_key: bool = False
    key_separator: bytes = b"\t"
    parse_headers: bool = False
    headers_delimiter: bytes = b"\t"
    headers_separator: bytes = b","
    headers_key_separator: bytes = b":"
    null_marker: bytes | None = None

    @classmethod
    def from_properties(cls, props: dict[str, str]) -> LineReader:
        known = {
            "parse.key",
            "key.separator",
            "parse.headers",
            "headers.delimiter",
            "headers.separator",
            "headers.key.separator",
            "null.marker",
            "ignore.error",
        }
        unknown = sorted(set(props) - known)
        if unknown:
            raise click.UsageError(f"unknown --property {unknown[0]!r}")
        marker = props.get("null.marker")
        return cls(
            parse_key=props.get("parse.key", "false").lower() == "true",
            key_separator=props.get("key.separator", "\t").encode(),
            parse_headers=props.get("parse.headers", "false").lower() == "true",
            headers_delimiter=props.get("headers.delimiter", "\t").encode(),
            headers_separator=props.get("headers.separator", ",").encode(),
            headers_key_separator=props.get("headers.key.separator", ":").encode(),
            null_marker=marker.encode() if marker is not None else None,
        )

    def _null(self, data: bytes) -> bytes | None:
        return None if self.null_marker is not None and data == self.null_marker else data

    def parse(self, line: bytes, number: int) -> tuple[bytes | None, bytes | None, list[Any]]:
        """``(key, value, headers)`` of one line (without its newline)."""
        headers: list[tuple[str, bytes | None]] = []
        rest = line
        if self.parse_headers:
            head, sep, rest = rest.partition(self.headers_delimiter)
            if not sep:
                raise click.ClickException(
                    f"line {number}: no headers delimiter {self.headers_delimiter!r}"
                )
            for item in filter(None, head.split(self.headers_separator)):
                name, _, value = item.partition(self.headers_key_separator)
                headers.append((name.decode("utf-8", "replace"), self._null(value)))
        key: bytes | None = None
        if self.parse_key:
            key, sep, rest = rest.partition(self.key_separator)
            if not sep:
                raise click.ClickException(
                    f"line {number}: no key separator {self.key_separator.decode()!r}"
                )
            key = self._null(key)
        return key, self._null(rest), headers


@click.command()
@click.argument("topic")
@click.option(
    "--property",
    "properties",
    multiple=True,
    metavar="KEY=VALUE",
    help="Line parsing: parse.key, key.separator, parse.headers, null.marker, ...",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="KEY=VALUE",
    help="A header on every record (repeatable).",
)
@click.option(
    "--partition",
    type=click.IntRange(min=0),
    default=None,
    help="Send every record to this partition.",
)
@click.option(
    "--acks",
    "--request-required-acks",
    "acks",
    default="all",
    show_default=True,
    type=click.Choice(["all", "-1", "0", "1"]),
)
@click.option(
    "--compression-codec",
    default="none",
    show_default=True,
    type=click.Choice(["none", "gzip", "snappy", "lz4", "zstd"]),
)
@click.option("--sync", is_flag=True, help="Wait for each record to be acknowledged.")
@click.option(
    "--producer-property",
    "producer_properties",
    multiple=True,
    metavar="KEY=VALUE",
    help="A producer setting, e.g. linger.ms=10.",
)
@click.option(
    "--idempotence/--no-idempotence",
    default=None,
    help="Idempotent producing (default: on, unless --acks is 0 or 1).",
)
@click.option(
    "--transactional-id",
    default=None,
    help="Write the input in transactions with this transactional.id.",
)
@click.option(
    "--transaction-size",
    type=click.IntRange(min=1),
    default=None,
    help="With --transactional-id: commit every N records (default: one transaction).",
)
@click.option(
    "--input",
    "input_file",
    type=click.File("rb"),
    default="-",
    help="Read lines from this file instead of stdin.",
)
@connection_options
def produce(
    topic: str,
    properties: tuple[str, ...],
    headers: tuple[str, ...],
    partition: int | None,
    acks: str,
    compression_codec: str,
    sync: bool,
    producer_properties: tuple[str, ...],
    idempotence: bool | None,
    transactional_id: str | None,
    transaction_size: int | None,
    input_file: BinaryIO,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Send each line of stdin to TOPIC as a record."""
    from pystream.client import Producer

    if transaction_size is not None and transactional_id is None:
        raise click.UsageError("--transaction-size needs --transactional-id")
    reader = LineReader.from_properties(parse_properties(properties))
    fixed = [(k, v.encode()) for k, v in parse_properties(headers, "--header").items()]
    settings = {
        **client_settings(command_config),
        "acks": acks,
        "compression": None if compression_codec == "none" else compression_codec,
        **kafka_properties(producer_properties, "--producer-property"),
    }
    if idempotence is not None:
        settings["enable_idempotence"] = idempotence
    if transactional_id is not None:
        settings["transactional_id"] = transactional_id
    producer = make_client(Producer, bootstrap_server, **settings)
    pending: deque[Any] = deque()
    count = 0
    in_transaction = 0
    try:
        if transactional_id is not None:
            producer.init_transactions(60)
            producer.begin_transaction()
        for number, raw in enumerate(input_file, 1):
            line = raw.rstrip(b"\n").rstrip(b"\r")
            key, value, record_headers = reader.parse(line, number)
            future = producer.send(
                topic,
                value=value,
                key=key,
                headers=(record_headers + fixed) or None,
                partition=partition,
            )
            pending.append(future)
            count += 1
            if sync or len(pending) > _MAX_PENDING:
                pending.popleft().result(120)
            if transactional_id is not None:
                in_transaction += 1
                if in_transaction == transaction_size:
                    producer.commit_transaction(120)
                    producer.begin_transaction()
                    in_transaction = 0
        if transactional_id is not None:
            producer.commit_transaction(120)
        producer.flush()
        while pending:
            pending.popleft().result(60)
    finally:
        # close() aborts a transaction still open (an error above).
        producer.close(5)
    if count and sys.stderr.isatty():
        click.echo(f"Produced {count} records to {topic}.", err=True)
