"""Task contexts for driving a connector's tasks directly through the plugin API
(``start``/``poll``/``put``/``flush``), without a worker: offsets in a dict, the
errant record reporter a list.  The connector and the systems it talks to are real."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from pystream.connect.api import (
    ConnectorContext,
    OffsetStorageReader,
    SinkRecord,
    SinkTaskContext,
    SourceRecord,
    SourceTask,
    SourceTaskContext,
    TopicPartition,
)
from pystream.connect.data import Schema


class RecordingConnectorContext(ConnectorContext):
    """Counts task reconfiguration requests and keeps the errors raised."""

    def __init__(self) -> None:
        self.reconfigurations = 0
        self.errors: list[Exception] = []

    def request_task_reconfiguration(self) -> None:
        self.reconfigurations += 1

    def raise_error(self, error: Exception) -> None:
        self.errors.append(error)


class DictOffsetReader(OffsetStorageReader):
    def __init__(self, offsets: Mapping[Any, dict[str, Any]]) -> None:
        self.offsets_by_partition = offsets

    def offset(self, partition: Mapping[str, Any]) -> dict[str, Any] | None:
        return self.offsets_by_partition.get(tuple(sorted(partition.items())))


class DictSourceTaskContext(SourceTaskContext):
    """Source offsets from a dict keyed by the partition's sorted items tuple."""

    def __init__(self, configs: dict[str, str], offsets: Mapping[Any, dict[str, Any]]) -> None:
        self.configs = configs
        self.reader = DictOffsetReader(dict(offsets))

    def offset_storage_reader(self) -> OffsetStorageReader:
        return self.reader


def committed_offsets(records: list[SourceRecord]) -> dict[Any, dict[str, Any]]:
    """The latest offset per source partition, as the worker would store them."""
    return {tuple(sorted(r.source_partition.items())): dict(r.source_offset) for r in records}


class ListSinkTaskContext(SinkTaskContext):
    """A sink context whose errant record reporter (when ``report_errors``) appends to
    ``errant``; the rest records what was asked of it."""

    def __init__(self, configs: dict[str, str], report_errors: bool = False) -> None:
        self.configs = configs
        self.report_errors = report_errors
        self.errant: list[tuple[SinkRecord, BaseException]] = []
        self.timeouts: list[int] = []
        self.commit_requests = 0

    def assignment(self) -> set[TopicPartition]:
        return set()

    def offset(self, offsets: Mapping[TopicPartition, int]) -> None:
        return None

    def timeout(self, timeout_ms: int) -> None:
        self.timeouts.append(timeout_ms)

    def pause(self, *partitions: TopicPartition) -> None:
        return None

    def resume(self, *partitions: TopicPartition) -> None:
        return None

    def request_commit(self) -> None:
        self.commit_requests += 1

    def errant_record_reporter(self) -> Callable[[SinkRecord, BaseException], None] | None:
        if not self.report_errors:
            return None
        return lambda record, error: self.errant.append((record, error))


def sink_record(
    topic: str,
    offset: int,
    value: Any,
    key: Any = None,
    value_schema: Schema | None = None,
    key_schema: Schema | None = None,
    partition: int = 0,
) -> SinkRecord:
    return SinkRecord(
        topic=topic,
        kafka_partition=partition,
        key_schema=key_schema,
        key=key,
        value_schema=value_schema,
        value=value,
        kafka_offset=offset,
    )


def poll_until(task: SourceTask, count: int, timeout: float = 30.0) -> list[SourceRecord]:
    """Poll until at least ``count`` records came back (failing after ``timeout``)."""
    records: list[SourceRecord] = []
    deadline = time.monotonic() + timeout
    while len(records) < count:
        assert time.monotonic() < deadline, f"polled {len(records)} of {count} records"
        records.extend(task.poll() or [])
    return records
