"""The message browser (newest first, from an offset, from a timestamp, key search over a
bounded window) and the produce form's parsing; how keys, values and headers are shown
(text, pretty JSON or hex)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pystream.aio import AdminClient, Consumer, ConsumerRecord, TopicPartition

__all__ = ["FORMATS", "Browse", "ShownRecord", "browse", "show"]

FORMATS = ("text", "json", "hex")
# A browse stops after this long even if the partition yields fewer records than asked
# (records deleted by retention or compaction, transaction markers).
_POLL_S = 5.0


@dataclass
class ShownRecord:
    offset: int
    timestamp: str
    key: str | None
    value: str | None
    headers: list[tuple[str, str | None]]
    # What a rendering could not do (e.g. "value is not JSON, shown as text").
    notes: list[str] = field(default_factory=list)


@dataclass
class Browse:
    """One page of the browser: the records and what was read."""

    partition: int
    low: int
    high: int
    records: list[ShownRecord]
    # Offsets actually read [first, last]; None when nothing was read.
    read_from: int | None = None
    read_to: int | None = None
    note: str = ""


def show(data: bytes | None, fmt: str, what: str, notes: list[str]) -> str | None:
    """``data`` as text (UTF-8; bytes that are not UTF-8 fall back to hex), pretty JSON
    (falls back to text) or hex.  Escaping is the templates' (autoescape)."""
    if data is None:
        return None
    if fmt == "hex":
        return data.hex(" ")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        notes.append(f"{what} is not UTF-8: shown as hex")
        return data.hex(" ")
    if fmt == "json":
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            notes.append(f"{what} is not JSON: shown as text")
    return text


def _shown(record: ConsumerRecord, fmt: str) -> ShownRecord:
    notes: list[str] = []
    moment = datetime.fromtimestamp(record.timestamp / 1000, UTC)
    return ShownRecord(
        offset=record.offset,
        timestamp=moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        key=show(record.key, fmt, "key", notes),
        value=show(record.value, fmt, "value", notes),
        headers=[
            (name, show(value, fmt, f"header {name}", notes)) for name, value in record.headers
        ],
        notes=notes,
    )


async def _read(
    consumer: Consumer, tp: TopicPartition, start: int, end: int
) -> list[ConsumerRecord]:
    """Records of ``tp`` with offsets in [start, end)."""
    await consumer.assign([tp])
    consumer.seek(tp, start)
    records: list[ConsumerRecord] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _POLL_S
    while loop.time() < deadline:
        records += [r for r in await consumer.poll(0.2) if start <= r.offset < end]
        position = consumer.known_position(tp)
        if position is not None and position >= end:
            break
    return records


async def browse(
    admin: AdminClient,
    consumer: Consumer,
    topic: str,
    partition: int,
    *,
    fmt: str,
    limit: int,
    offset: int | None = None,
    timestamp_ms: int | None = None,
    key_contains: str = "",
    search_window: int = 1000,
) -> Browse:
    """A page of records: newest first by default; oldest first from ``offset`` or from
    ``timestamp_ms``; with ``key_contains``, the matching records among up to
    ``search_window`` read (the newest, or from the offset/timestamp given)."""
    tp = TopicPartition(topic, partition)
    low = (await admin.list_offsets({tp: "earliest"}))[tp]
    high = (await admin.list_offsets({tp: "latest"}))[tp]
    page = Browse(partition, low, high, [])
    newest_first = offset is None and timestamp_ms is None
    if timestamp_ms is not None:
        found = (await admin.list_offsets({tp: timestamp_ms}))[tp]
        if found < 0:
            page.note = "no record has a timestamp at or after the one given"
            return page
        offset = found
    span = search_window if key_contains else limit
    if newest_first:
        start, end = max(low, high - span), high
    else:
        assert offset is not None
        start = max(min(offset, high), low)
        end = min(start + span, high)
    if start >= end:
        page.note = "no records in that range"
        return page
    records = await _read(consumer, tp, start, end)
    page.read_from, page.read_to = start, end - 1
    if key_contains:
        needle = key_contains.encode()
        records = [r for r in records if r.key is not None and needle in r.key]
    if newest_first:
        records.reverse()
    # Pretty-printing JSON and hex is CPU work: off the loop (the broker's, in serve).
    page.records = await asyncio.to_thread(lambda: [_shown(r, fmt) for r in records[:limit]])
    return page
