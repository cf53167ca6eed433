"""The source task runner (Kafka's ``WorkerSourceTask``): its thread calls ``poll``,
sends the records through the transforms and converters to pystream's producer, and
commits source offsets only once the broker acknowledged the records they cover.

Offsets: records are kept in send order with their futures; an acknowledged prefix
moves each source partition's committable offset forward, so a record acknowledged
out of order never commits past one still in flight.  Committable offsets are written
to the offset store every ``offset.flush.interval.ms``, when paused and at stop.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

from ...client import Producer
from ..api import ConnectError, SourceRecord, SourceTask, SourceTaskContext
from .errors import FailedRecord, Stage
from .offsets import OffsetBackingStore, TaskOffsetReader, offset_key
from .states import State
from .task import WorkerTask

__all__ = ["SourceTaskRunner"]

log = logging.getLogger("pystream.connect.source")


class _Context(SourceTaskContext):
    def __init__(self, configs: dict[str, str], reader: TaskOffsetReader) -> None:
        self.configs = configs
        self._reader = reader

    def offset_storage_reader(self) -> TaskOffsetReader:
        return self._reader


class SourceTaskRunner(WorkerTask):
    """Runs one :class:`SourceTask` (see the module docstring)."""

    task: SourceTask

    def __init__(
        self,
        *args: Any,
        producer: Producer,
        offsets: OffsetBackingStore,
        flush_interval_ms: int,
        flush_timeout_ms: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.producer = producer
        self.offsets = offsets
        self.flush_interval = flush_interval_ms / 1000
        self.flush_timeout = flush_timeout_ms / 1000
        # (record, future or None when nothing was sent), in send order.
        self._in_flight: collections.deque[tuple[SourceRecord, Any]] = collections.deque()
        self._committable: dict[str, dict[str, Any]] = {}
        self._started = False
        self._topics_seen: set[str] = set()

    def interrupt(self) -> None:
        if self._started:
            try:
                self.task.stop()
            except Exception:
                log.exception("%s: error in the task's stop()", self.id)

    def execute(self) -> None:
        reader = TaskOffsetReader(self.offsets, self.id.connector)
        self.task.initialize(_Context(self.task_props, reader))
        self.task.start(self.task_props)
        self._started = True
        self.set_state(State.RUNNING)
        next_commit = time.monotonic() + self.flush_interval
        try:
            while not self.stopping.is_set():
                if self.wait_while_paused():
                    continue
                records = self.errors.retry(self.task.poll, Stage.TASK_POLL)
                if records:
                    self._send(records)
                self._drain()
                if time.monotonic() >= next_commit:
                    self.commit_offsets()
                    next_commit = time.monotonic() + self.flush_interval
        finally:
            # Whatever was polled is sent and its offsets committed before the task ends.
            self.commit_offsets(flush=True)

    def _send(self, records: list[SourceRecord]) -> None:
        # The fast path converts a record in one go; any failure redoes that record
        # stage by stage through the error handler (retries, tolerance, reporting).
        apply = self.transforms.apply
        key_to_bytes = self.converters.key.from_connect_data
        value_to_bytes = self.converters.value.from_connect_data
        headers_to_bytes = self.converters.headers_to_bytes
        send = self.producer.send
        in_flight = self._in_flight
        for record in records:
            try:
                out = apply(record)
                if out is not None:
                    topic = out.topic
                    key = key_to_bytes(topic, out.key_schema, out.key)
                    value = value_to_bytes(topic, out.value_schema, out.value)
                    headers = headers_to_bytes(topic, out.headers) if out.headers else None
            except Exception:
                converted = self._convert_with_errors(record)
                if converted is None:
                    in_flight.append((record, None))
                    continue
                out, key, value, headers = converted
            if out is None:
                in_flight.append((record, None))
                continue
            topic = out.topic
            future = send(topic, value, key, headers, out.kafka_partition, out.timestamp)
            in_flight.append((record, future))
            if topic not in self._topics_seen:
                self._topics_seen.add(topic)
                self.on_topic(topic)

    def _convert_with_errors(self, record: SourceRecord) -> tuple[Any, Any, Any, Any] | None:
        """(transformed record, key, value, headers) stage by stage under the error
        handler; None if the record was skipped (or filtered out)."""

        def failed(exc: BaseException) -> FailedRecord:
            return FailedRecord(Stage.TRANSFORMATION, "", exc, description=repr(record))

        out = self.transform(record, failed)
        if out is None:
            return None
        converted = self.convert_stages(
            out.topic,
            (out.key_schema, out.key),
            (out.value_schema, out.value),
            out.headers,
            failed,
            to_bytes=True,
        )
        return None if converted is None else (out, *converted)

    def _drain(self) -> None:
        """Move the acknowledged prefix of the in-flight records to committable offsets,
        calling ``commit_record`` for each."""
        in_flight = self._in_flight
        committable = self._committable
        commit_record = self.task.commit_record
        while in_flight:
            record, future = in_flight[0]
            if future is not None:
                if not future.done():
                    break
                error = future.exception(0)
                if error is not None:
                    raise ConnectError(
                        f"Unrecoverable exception from producer send for topic {record.topic}"
                    ) from error
                metadata = future.result(0)
            else:
                metadata = None
            in_flight.popleft()
            if record.source_partition:  # empty: the source keeps no offsets (stdin)
                committable[offset_key(self.id.connector, record.source_partition)] = dict(
                    record.source_offset
                )
            commit_record(record, metadata)

    def commit_offsets(self, flush: bool = False) -> None:
        """Write the committable offsets to the store; with ``flush``, first wait (up to
        ``offset.flush.timeout.ms``) for everything sent."""
        if flush and self._in_flight:
            try:
                self.producer.flush(self.flush_timeout)
            except Exception:
                log.warning(
                    "%s: not every record was acknowledged within "
                    "offset.flush.timeout.ms; committing what was",
                    self.id,
                )
            self._drain()
        if not self._committable:
            return
        pending, self._committable = self._committable, {}
        self.offsets.set(pending)
        log.debug("%s: committed offsets of %d source partitions", self.id, len(pending))
        self.task.commit()

    def close(self) -> None:
        if self._started and not self.stopping.is_set():
            # Failed: the task was not told to stop yet.
            try:
                self.task.stop()
            except Exception:
                log.exception("%s: error in the task's stop()", self.id)
        self.producer.close(self.flush_timeout)
