"""FileStreamSource and FileStreamSink, as Kafka's: lines of a file into a topic, and
records of topics appended to a file as lines.

Configs (Kafka's names): the source's ``file`` (stdin when absent), ``topic`` and
``batch.size`` (most lines per poll, 2000); the sink's ``file`` (stdout when absent)
and ``topics``.  The source's offset is ``{"position": <byte after the last line>}``
under the partition ``{"filename": <file>}``, so a restarted task resumes after the
last line whose record was acknowledged.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
from collections.abc import Mapping
from typing import Any, BinaryIO

from ..api import (
    NO_DEFAULT,
    ConfigDef,
    ConfigError,
    ConfigKey,
    ConfigType,
    ConnectError,
    ExactlyOnceSupport,
    Importance,
    SinkConnector,
    SinkRecord,
    SinkTask,
    SourceConnector,
    SourceRecord,
    SourceTask,
    Task,
    TopicPartition,
)
from ..data import Schema
from ..runtime.records import source_record

__all__ = [
    "FileStreamSinkConnector",
    "FileStreamSinkTask",
    "FileStreamSourceConnector",
    "FileStreamSourceTask",
]

log = logging.getLogger("pystream.connect.file")

FILE_CONFIG = "file"
TOPIC_CONFIG = "topic"
TOPICS_CONFIG = "topics"
BATCH_SIZE_CONFIG = "batch.size"
DEFAULT_BATCH_SIZE = 2000

FILENAME_FIELD = "filename"
POSITION_FIELD = "position"

_STRING = Schema("string")
# How long poll waits for new lines before returning nothing (s): short, so that
# pause and stop are prompt.
_IDLE_WAIT = 0.2
_READ_SIZE = 1 << 20


def _single_topic(value: Any) -> None:
    if value is not None and ("," in str(value) or not str(value).strip()):
        raise ConfigError(
            f"'topic' must be one topic name, got {value!r}: FileStreamSource writes one topic"
        )


def _positive(value: Any) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"batch.size must be at least 1, got {value}")


SOURCE_CONFIG = ConfigDef(
    [
        ConfigKey(
            FILE_CONFIG,
            ConfigType.STRING,
            None,
            Importance.HIGH,
            "Source filename. If not specified, the standard input will be used",
        ),
        ConfigKey(
            TOPIC_CONFIG,
            ConfigType.STRING,
            NO_DEFAULT,
            Importance.HIGH,
            "The topic to publish data to",
            _single_topic,
        ),
        ConfigKey(
            BATCH_SIZE_CONFIG,
            ConfigType.INT,
            DEFAULT_BATCH_SIZE,
            Importance.LOW,
            "The maximum number of records the source task can read from the file "
            "each time it is polled",
            _positive,
        ),
    ]
)

SINK_CONFIG = ConfigDef(
    [
        ConfigKey(
            FILE_CONFIG,
            ConfigType.STRING,
            None,
            Importance.HIGH,
            "Destination filename. If not specified, the standard output will be used",
        ),
    ]
)


class FileStreamSourceConnector(SourceConnector):
    """Reads lines of ``file`` (or stdin) into ``topic``; one task."""

    def start(self, props: dict[str, str]) -> None:
        self.props = SOURCE_CONFIG.parse(props)
        self.raw = dict(props)

    def task_class(self) -> type[Task]:
        return FileStreamSourceTask

    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        # Only one task reads a file, as in Kafka.
        config = {
            TOPIC_CONFIG: str(self.props[TOPIC_CONFIG]),
            BATCH_SIZE_CONFIG: str(self.props[BATCH_SIZE_CONFIG]),
        }
        if self.props.get(FILE_CONFIG):
            config[FILE_CONFIG] = str(self.props[FILE_CONFIG])
        return [config]

    def stop(self) -> None:
        return None

    def config(self) -> ConfigDef:
        return SOURCE_CONFIG

    def alter_offsets(self, props: Mapping[str, str], offsets: Mapping[Any, Any]) -> bool:
        return True

    def exactly_once_support(self, props: Mapping[str, str]) -> ExactlyOnceSupport | None:
        # A file's byte positions can be restored exactly; stdin's cannot.
        if props.get(FILE_CONFIG):
            return ExactlyOnceSupport.SUPPORTED
        return ExactlyOnceSupport.UNSUPPORTED


class FileStreamSourceTask(SourceTask):
    """See :class:`FileStreamSourceConnector`."""

    def start(self, props: dict[str, str]) -> None:
        parsed = SOURCE_CONFIG.parse(props)
        self.filename: str | None = parsed.get(FILE_CONFIG) or None
        self.topic: str = parsed[TOPIC_CONFIG]
        self.batch_size: int = parsed[BATCH_SIZE_CONFIG]
        self.partition = {FILENAME_FIELD: self.filename} if self.filename else {}
        self.stream: BinaryIO | None = None
        self.position = 0
        self.buffer = b""
        self.lines: list[bytes] = []
        self.ends: list[int] = []
        self.stopped = threading.Event()
        # poll reads under it; stop closes the file under it (another thread).
        self.lock = threading.Lock()
        if self.filename is None:
            self.stream = sys.stdin.buffer

    def _open(self) -> bool:
        """Open the file at the stored position; False if it does not exist yet."""
        assert self.filename is not None
        try:
            stream = open(self.filename, "rb")  # noqa: SIM115 - kept open across polls
        except FileNotFoundError:
            log.warning(
                "Couldn't find file %s for FileStreamSourceTask, sleeping to wait "
                "for it to be created",
                self.filename,
            )
            return False
        except OSError as exc:
            raise ConnectError(f"cannot open {self.filename}: {exc}") from exc
        stored = self.context.offset_storage_reader().offset(self.partition)
        if stored:
            position = stored.get(POSITION_FIELD)
            if not isinstance(position, int) or position < 0:
                stream.close()
                raise ConnectError(f"Offset position is the incorrect type: {position!r}")
            log.debug("Found previous offset, trying to skip to file offset %d", position)
            stream.seek(position)
            self.position = position
        self.stream = stream
        return True

    def poll(self) -> list[SourceRecord] | None:
        if self.stopped.is_set():
            return None
        if self.stream is None and not self._open():
            self.stopped.wait(1.0)
            return None
        if not self.lines:
            with self.lock:
                if self.stream is not None:
                    self._read()
        if not self.lines:
            self.stopped.wait(_IDLE_WAIT)
            return None
        count = min(self.batch_size, len(self.lines))
        lines, self.lines = self.lines[:count], self.lines[count:]
        ends, self.ends = self.ends[:count], self.ends[count:]
        topic = self.topic
        partition = self.partition
        if not partition:  # stdin: no offsets
            return [
                source_record(
                    topic,
                    None,
                    None,
                    None,
                    _STRING,
                    line.decode("utf-8", "replace"),
                    None,
                    (),
                    partition,
                    {},
                )
                for line in lines
            ]
        return [
            source_record(
                topic,
                None,
                None,
                None,
                _STRING,
                line.decode("utf-8", "replace"),
                None,
                (),
                partition,
                {POSITION_FIELD: end},
            )
            for line, end in zip(lines, ends, strict=True)
        ]

    def _read(self) -> None:
        """Read what is there and cut it into whole lines (``\\n``, ``\\r\\n`` or ``\\r``
        as Kafka's); an unfinished last line waits for its end."""
        assert self.stream is not None
        if self.filename is None:
            # Wait for input at most a moment, so that stop is prompt (Kafka's ready()).
            ready, _, _ = select.select([self.stream], [], [], _IDLE_WAIT)
            chunk = os.read(self.stream.fileno(), _READ_SIZE) if ready else b""
        else:
            chunk = self.stream.read(_READ_SIZE)
        if not chunk:
            return
        data = self.buffer + chunk
        start = 0
        lines = self.lines
        ends = self.ends
        base = self.position - len(self.buffer)
        find = data.find
        while True:
            end = find(b"\n", start)
            if end < 0:
                break
            line = data[start:end]
            if line.endswith(b"\r"):
                line = line[:-1]
            lines.append(line)
            ends.append(base + end + 1)
            start = end + 1
        self.buffer = data[start:]
        self.position = base + len(data)

    def stop(self) -> None:
        self.stopped.set()
        if self.filename is not None:
            with self.lock:
                if self.stream is not None:
                    self.stream.close()
                    self.stream = None


class FileStreamSinkConnector(SinkConnector):
    """Appends the records of ``topics`` to ``file`` (or stdout), one line each."""

    def start(self, props: dict[str, str]) -> None:
        self.props = SINK_CONFIG.parse(props)

    def task_class(self) -> type[Task]:
        return FileStreamSinkTask

    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        config = {}
        if self.props.get(FILE_CONFIG):
            config[FILE_CONFIG] = str(self.props[FILE_CONFIG])
        return [dict(config) for _ in range(max_tasks)]

    def stop(self) -> None:
        return None

    def config(self) -> ConfigDef:
        return SINK_CONFIG


def _line(value: Any) -> bytes:
    """One record's value as a line: ``null`` for None, bytes as they are, else text."""
    if value is None:
        return b"null\n"
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value) + b"\n"
    return str(value).encode() + b"\n"


class FileStreamSinkTask(SinkTask):
    """See :class:`FileStreamSinkConnector`."""

    def start(self, props: dict[str, str]) -> None:
        filename = props.get(FILE_CONFIG) or None
        self.filename = filename
        if filename is None:
            self.stream: BinaryIO = sys.stdout.buffer
        else:
            try:
                self.stream = open(filename, "ab")  # noqa: SIM115 - open until stop
            except OSError as exc:
                raise ConnectError(
                    f"Couldn't find or create file '{filename}' for FileStreamSinkTask: {exc}"
                ) from exc

    def put(self, records: list[SinkRecord]) -> None:
        if not records:
            return
        try:
            # Strings (StringConverter, the common case): one join, one encode.
            data = ("\n".join([r.value for r in records]) + "\n").encode()
        except TypeError:
            data = b"".join(_line(r.value) for r in records)
        self.stream.write(data)

    def flush(self, current_offsets: Mapping[TopicPartition, int]) -> None:
        self.stream.flush()
        if self.filename is not None:
            os.fsync(self.stream.fileno())

    def stop(self) -> None:
        if self.filename is not None:
            self.stream.close()
