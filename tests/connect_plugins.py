"""Connectors for Connect's tests, loaded by dotted path (``connect_plugins.X``) in a
worker process started by :class:`connect_process.ConnectWorkerProcess`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pystream.connect.api import (
    ConnectError,
    ConnectRecord,
    RetriableError,
    SinkConnector,
    SinkRecord,
    SinkTask,
    Task,
    TopicPartition,
    Transformation,
)


class RejectingSinkConnector(SinkConnector):
    """Writes each record's value as a JSON line to ``file``, except values whose
    ``ok`` field is false: those go to ``errant_record_reporter`` (the DLQ)."""

    def start(self, props: dict[str, str]) -> None:
        self.props = props

    def task_class(self) -> type[Task]:
        return RejectingSinkTask

    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        return [{"file": self.props["file"]}]

    def stop(self) -> None:
        return None


class RejectingSinkTask(SinkTask):
    def start(self, props: dict[str, str]) -> None:
        self.stream = open(props["file"], "a")  # noqa: SIM115 - open until stop
        self.reporter = self.context.errant_record_reporter()

    def put(self, records: list[SinkRecord]) -> None:
        for record in records:
            value: Any = record.value
            if isinstance(value, dict) and value.get("ok") is False:
                assert self.reporter is not None
                self.reporter(record, ConnectError(f"rejected n={value.get('n')}"))
                continue
            self.stream.write(json.dumps(value, sort_keys=True) + "\n")

    def flush(self, current_offsets: Mapping[TopicPartition, int]) -> None:
        self.stream.flush()

    def stop(self) -> None:
        self.stream.close()


__all__ = [
    "FlakyTransform",
    "RecordingSinkConnector",
    "RecordingSinkTask",
    "RejectingSinkConnector",
    "RejectingSinkTask",
]


class FlakyTransform(Transformation):
    """Fails each record ``failures`` times with a :class:`RetriableError` before
    passing it on unchanged (exercises ``errors.retry.timeout``)."""

    def configure(self, configs: Mapping[str, Any]) -> None:
        self.failures = int(configs.get("failures", "2"))
        self.seen: dict[Any, int] = {}

    def apply(self, record: ConnectRecord) -> ConnectRecord | None:
        key = (record.topic, record.kafka_partition, getattr(record, "kafka_offset", None))
        count = self.seen.get(key, 0)
        if count < self.failures:
            self.seen[key] = count + 1
            raise RetriableError(f"flaky: attempt {count + 1} for {key}")
        return record


class RecordingSinkConnector(SinkConnector):
    """Writes ``<topic> <partition> <offset> <value>`` lines to ``file`` and the
    partitions ``open`` was given to ``file``.open; with ``start.offset`` it asks the
    worker (``SinkTaskContext.offset``) to start each new partition there, and with
    ``commit.each.put`` it asks for a commit after every ``put``."""

    def start(self, props: dict[str, str]) -> None:
        self.props = props

    def task_class(self) -> type[Task]:
        return RecordingSinkTask

    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        return [dict(self.props)]

    def stop(self) -> None:
        return None


class RecordingSinkTask(SinkTask):
    def start(self, props: dict[str, str]) -> None:
        self.path = props["file"]
        self.stream = open(self.path, "a")  # noqa: SIM115 - open until stop
        self.start_offset = props.get("start.offset")
        self.commit_each_put = props.get("commit.each.put") == "true"
        # put() fails this many times with a RetriableError (asking for a 100 ms pause).
        self.retriable_failures = int(props.get("retriable.failures", "0"))
        # Every put() call's record count goes to <file>.puts, one line each.
        self.count_puts = props.get("count.puts") == "true"

    def open(self, partitions: set[TopicPartition]) -> None:
        with open(self.path + ".open", "a") as handle:
            for tp in sorted(partitions, key=lambda p: (p.topic, p.partition)):
                handle.write(f"{tp.topic} {tp.partition}\n")
        if self.start_offset is not None:
            self.context.offset({tp: int(self.start_offset) for tp in partitions})

    def put(self, records: list[SinkRecord]) -> None:
        if self.count_puts:
            with open(self.path + ".puts", "a") as handle:
                handle.write(f"{len(records)}\n")
        if records and self.retriable_failures > 0:
            self.retriable_failures -= 1
            self.context.timeout(100)
            raise RetriableError("not now")
        for r in records:
            self.stream.write(f"{r.topic} {r.kafka_partition} {r.kafka_offset} {r.value}\n")
        self.stream.flush()
        if self.commit_each_put:
            self.context.request_commit()

    def stop(self) -> None:
        self.stream.close()
