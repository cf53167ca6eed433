"""Kafka's checkpoint files, written atomically.

Format (text, as Kafka's ``CheckpointFile``)::

    0                      <- version
    2                      <- number of entries
    my-topic 0 1234        <- one entry per line
    my-topic 1 99

Used for ``recovery-point-offset-checkpoint``, ``log-start-offset-checkpoint``
and ``replication-offset-checkpoint`` (entries ``topic partition offset``) and,
through :mod:`pystream.storage.leader_epoch`, ``leader-epoch-checkpoint``
(entries ``epoch start_offset``).

A write goes to ``<file>.tmp``, is fsynced, renamed over the file and the
directory is fsynced, so a crash leaves either the old or the new file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Generic, TypeVar

from pystream.errors import KafkaStorageError
from pystream.fileutil import atomic_write

VERSION = 0

RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"
REPLICATION_OFFSET_CHECKPOINT = "replication-offset-checkpoint"

T = TypeVar("T")


class CorruptCheckpointError(KafkaStorageError):
    """A checkpoint file cannot be parsed; the message names the file and the line."""


class CheckpointFile(Generic[T]):
    """A versioned list of entries in Kafka's text format.

    ``format_entry`` renders one entry as a line (without newline);
    ``parse_entry`` turns a line's whitespace-separated fields back into an
    entry and raises ValueError if they are malformed.
    """

    def __init__(
        self,
        path: str,
        format_entry: Callable[[T], str],
        parse_entry: Callable[[list[str]], T],
    ) -> None:
        self.path = path
        self._format = format_entry
        self._parse = parse_entry

    def write(self, entries: Iterable[T], *, durable: bool = True) -> None:
        """Replace the file with ``entries`` atomically (tmp + fsync + rename + dir fsync;
        without ``durable`` no fsync: the caller syncs the file system later)."""
        items = list(entries)
        lines = [str(VERSION), str(len(items)), *(self._format(e) for e in items)]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        try:
            atomic_write(self.path, data, durable=durable)
        except OSError as exc:
            raise KafkaStorageError(
                f"Cannot write checkpoint file {self.path}: {exc}; check the log directory's "
                "disk space and permissions"
            ) from exc

    def read(self) -> list[T]:
        """The entries; an empty list if the file does not exist.

        Raises CorruptCheckpointError naming the file and the bad line if the
        version, the count or an entry is malformed.
        """
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise CorruptCheckpointError(f"Cannot read checkpoint file {self.path}: {exc}") from exc

        def corrupt(line_no: int, what: str) -> CorruptCheckpointError:
            return CorruptCheckpointError(
                f"Malformed checkpoint file {self.path}, line {line_no}: {what}; the file is "
                "rewritten on the next checkpoint, or remove it to start from defaults"
            )

        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the trailing newline
        if len(lines) < 2:
            raise corrupt(len(lines) + 1, "expected a version line and a count line")
        if lines[0].strip() != str(VERSION):
            raise corrupt(1, f"unsupported version {lines[0]!r} (expected {VERSION})")
        try:
            count = int(lines[1].strip())
        except ValueError:
            raise corrupt(2, f"expected an entry count, got {lines[1]!r}") from None
        if count < 0 or count != len(lines) - 2:
            raise corrupt(2, f"count says {count} entries but the file has {len(lines) - 2}")
        entries = []
        for line_no, line in enumerate(lines[2:], start=3):
            try:
                entries.append(self._parse(line.split()))
            except ValueError as exc:
                raise corrupt(line_no, f"{line!r} ({exc})") from None
        return entries


def _format_offset_entry(entry: tuple[tuple[str, int], int]) -> str:
    (topic, partition), offset = entry
    return f"{topic} {partition} {offset}"


def _parse_offset_entry(fields: list[str]) -> tuple[tuple[str, int], int]:
    if len(fields) != 3:
        raise ValueError("expected 'topic partition offset'")
    topic, partition, offset = fields[0], int(fields[1]), int(fields[2])
    if partition < 0:
        raise ValueError("negative partition")
    return (topic, partition), offset


class OffsetCheckpointFile:
    """A ``topic partition offset`` checkpoint: {(topic, partition): offset}."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: CheckpointFile[tuple[tuple[str, int], int]] = CheckpointFile(
            path, _format_offset_entry, _parse_offset_entry
        )

    def write(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Atomically replace the file with ``offsets`` (sorted, for readable diffs)."""
        self._file.write(sorted(offsets.items()))

    def read(self) -> dict[tuple[str, int], int]:
        """The offsets; empty if the file does not exist; CorruptCheckpointError if malformed."""
        offsets: dict[tuple[str, int], int] = {}
        for tp, offset in self._file.read():
            if tp in offsets:
                raise CorruptCheckpointError(
                    f"Malformed checkpoint file {self.path}: {tp[0]}-{tp[1]} appears twice; "
                    "remove the file to start from defaults"
                )
            offsets[tp] = offset
        return offsets
