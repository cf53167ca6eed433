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
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...client import Producer
from ..api import (
    ConnectError,
    RetriableError,
    SourceRecord,
    SourceTask,
    SourceTaskContext,
    TransactionContext,
)
from .errors import FailedRecord, Stage
from .offsets import OffsetBackingStore, TaskOffsetReader, offset_key
from .states import State
from .task import WorkerTask

__all__ = ["SourceTaskRunner", "TransactionSettings"]

log = logging.getLogger("pystream.connect.source")


class _Context(SourceTaskContext):
    def __init__(self, configs: dict[str, str], reader: TaskOffsetReader) -> None:
        self.configs = configs
        self._reader = reader
        self.transactions: TransactionContext | None = None

    def offset_storage_reader(self) -> TaskOffsetReader:
        return self._reader

    def transaction_context(self) -> TransactionContext | None:
        return self.transactions


@dataclass(frozen=True)
class TransactionSettings:
    """Exactly-once source support for one task: its offsets go to ``offsets_topic`` in
    the same producer transaction as its records; ``boundary`` is the connector's
    ``transaction.boundary`` (poll, interval or connector)."""

    offsets_topic: str
    boundary: str
    interval_ms: int
    read_offsets: Callable[[], dict[str, dict[str, Any] | None]]


class _TransactionContext(TransactionContext):
    """``transaction.boundary=connector``: the task says when to commit or abort."""

    def __init__(self, runner: SourceTaskRunner) -> None:
        self._runner = runner

    def commit_transaction(self, record: SourceRecord | None = None) -> None:
        self._runner._commit_requested = True

    def abort_transaction(self, record: SourceRecord | None = None) -> None:
        raise ConnectError(
            "abort_transaction is not supported yet by pystream's exactly-once source support"
        )


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
        transactions: TransactionSettings | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.transactions = transactions
        self._in_transaction = False
        self._transaction_started = 0.0
        self._commit_requested = False
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
        if self.transactions is not None:
            self._restore_transactional_offsets()
        reader = TaskOffsetReader(self.offsets, self.id.connector)
        context = _Context(self.task_props, reader)
        if self.transactions is not None and self.transactions.boundary == "connector":
            context.transactions = _TransactionContext(self)
        self.task.initialize(context)
        self.task.start(self.task_props)
        self._started = True
        self.set_state(State.RUNNING)
        next_commit = time.monotonic() + self.flush_interval
        try:
            while not self.stopping.is_set():
                if self.paused and self._in_transaction:
                    self._commit_transaction()  # a paused task holds no transaction open
                if self.wait_while_paused():
                    continue
                try:
                    records = self.task.poll()
                except RetriableError as exc:
                    # As Kafka: log it and let the framework poll again.
                    log.warning("%s: retriable error from poll, polling again: %s", self.id, exc)
                    continue
                if self.transactions is not None:
                    self._transactional_batch(records or [])
                    continue
                if records:
                    self._send(records)
                self._drain()
                if time.monotonic() >= next_commit:
                    self.commit_offsets()
                    next_commit = time.monotonic() + self.flush_interval
        except BaseException:
            if self.transactions is not None and self._in_transaction:
                # Nothing of a failed transaction may become visible.
                try:
                    self.producer.abort_transaction()
                except Exception:
                    log.exception("%s: could not abort the open transaction", self.id)
            raise
        finally:
            # Whatever was polled is sent and its offsets committed before the task ends.
            if self.transactions is None:
                self.commit_offsets(flush=True)
        if self._in_transaction:
            self._commit_transaction()

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

    # -- exactly-once (exactly.once.source.support=enabled) ------------------------------

    def _restore_transactional_offsets(self) -> None:
        """Fence older producers of this task, then take the committed offsets from the
        offsets topic (what aborted transactions wrote is not read)."""
        assert self.transactions is not None
        self.producer.init_transactions()
        committed = self.transactions.read_offsets()
        if committed:
            self.offsets.set(committed)

    def _transactional_batch(self, records: list[SourceRecord]) -> None:
        """Records and their offsets go out in one transaction; it commits after each
        batch (``poll``), when ``transaction.boundary.interval.ms`` passed
        (``interval``) or when the task asked (``connector``)."""
        assert self.transactions is not None
        if records:
            if not self._in_transaction:
                self.producer.begin_transaction()
                self._in_transaction = True
                self._transaction_started = time.monotonic()
            self._send(records)
            self._write_offsets(records)
        if not self._in_transaction:
            return
        boundary = self.transactions.boundary
        due = (
            (boundary == "poll" and records)
            or (
                boundary == "interval"
                and time.monotonic() - self._transaction_started
                >= self.transactions.interval_ms / 1000
            )
            or (boundary == "connector" and self._commit_requested)
        )
        if due:
            self._commit_transaction()

    def _write_offsets(self, records: list[SourceRecord]) -> None:
        assert self.transactions is not None
        latest: dict[str, dict[str, Any]] = {}
        for record in records:
            if record.source_partition:
                latest[offset_key(self.id.connector, record.source_partition)] = dict(
                    record.source_offset
                )
        topic = self.transactions.offsets_topic
        for key, offset in latest.items():
            self.producer.send(topic, json.dumps(offset, separators=(",", ":")), key)

    def _commit_transaction(self) -> None:
        self.producer.commit_transaction()
        self._in_transaction = False
        self._commit_requested = False
        self._drain()
        # The topic has them; the local store is a cache of what was committed.
        self.commit_offsets()

    def close(self) -> None:
        if self._started and not self.stopping.is_set():
            # Failed: the task was not told to stop yet.
            try:
                self.task.stop()
            except Exception:
                log.exception("%s: error in the task's stop()", self.id)
        self.producer.close(self.flush_timeout)
