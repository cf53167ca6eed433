"""The sink task runner (Kafka's ``WorkerSinkTask``): pystream's consumer in group
``connect-<connector>`` reads ``topics`` (or ``topics.regex``); records go through the
converters and transforms to ``put``; every ``offset.flush.interval.ms`` (or when the
task asks) ``pre_commit`` flushes and the offsets it returns are committed.

A :class:`RetriableError` from ``put`` pauses consumption and delivers the same batch
again after the task's ``timeout`` (as in Kafka).  Records that fail conversion or a
transform (tolerated with ``errors.tolerance=all``), and those the task reports through
``errant_record_reporter``, go to the dead letter queue when one is configured; the
offsets committed after them are committed only once the DLQ has them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from ...client import Consumer
from ...client import TopicPartition as KafkaTopicPartition
from ..api import RetriableError, SinkRecord, SinkTask, SinkTaskContext, TopicPartition
from .errors import FailedRecord, Stage, ToleranceExceeded
from .records import sink_record
from .states import State
from .task import WorkerTask

__all__ = ["SinkTaskRunner"]

log = logging.getLogger("pystream.connect.sink")

_TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")
# How often (s) topics.regex is matched against the cluster's topics again, and missing
# topics are looked for.
_TOPICS_REFRESH = 2.0


def _sink_record(raw: Any, key: Any, value: Any, headers: Any) -> SinkRecord:
    """The consumer record ``raw`` as Connect data, with its converted key and value."""
    return sink_record(
        raw.topic,
        raw.partition,
        key.schema,
        key.value,
        value.schema,
        value.value,
        raw.timestamp,
        headers,
        raw.offset,
        _TIMESTAMP_TYPES[raw.timestamp_type],
    )


class _Context(SinkTaskContext):
    def __init__(self, runner: SinkTaskRunner) -> None:
        self.configs = runner.task_props
        self._runner = runner

    def assignment(self) -> set[TopicPartition]:
        return set(self._runner.assigned)

    def offset(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._runner.seeks.update(offsets)

    def timeout(self, timeout_ms: int) -> None:
        self._runner.retry_timeout = timeout_ms / 1000

    def pause(self, *partitions: TopicPartition) -> None:
        self._runner.consumer.pause(
            *(KafkaTopicPartition(p.topic, p.partition) for p in partitions)
        )
        self._runner.task_paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._runner.task_paused.difference_update(partitions)
        self._runner.consumer.resume(
            *(KafkaTopicPartition(p.topic, p.partition) for p in partitions)
        )

    def request_commit(self) -> None:
        self._runner.commit_requested = True

    def errant_record_reporter(self) -> Callable[[SinkRecord, BaseException], None] | None:
        return self._runner.report_errant


class SinkTaskRunner(WorkerTask):
    """Runs one :class:`SinkTask` (see the module docstring)."""

    task: SinkTask

    def __init__(
        self,
        *args: Any,
        consumer: Consumer,
        topics: list[str],
        topics_regex: str,
        list_topics: Callable[[], list[str]],
        flush_interval_ms: int,
        flush_timeout_ms: int,
        dlq_producer: Any | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.consumer = consumer
        self.topics = topics
        self.regex = re.compile(topics_regex) if topics_regex else None
        self.list_topics = list_topics
        self.flush_interval = flush_interval_ms / 1000
        self.flush_timeout = flush_timeout_ms / 1000
        self.dlq_producer = dlq_producer
        self.assigned: set[TopicPartition] = set()
        self.task_paused: set[TopicPartition] = set()
        self.seeks: dict[TopicPartition, int] = {}
        self.retry_timeout = -1.0
        self.commit_requested = False
        # Next offsets to consume, of records delivered to put (or skipped).
        self.current: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        # The first offset delivered per partition since it was assigned: where a rewind
        # goes when this runner has committed nothing there yet.
        self._first_delivered: dict[TopicPartition, int] = {}
        # The consumer records behind the batch being delivered, for the DLQ.
        self._originals: dict[int, Any] = {}
        self._started = False
        self._subscribed: list[str] = []
        self._complete = True

    # -- the loop -----------------------------------------------------------------------

    def execute(self) -> None:
        self.task.initialize(_Context(self))
        self.task.start(self.task_props)
        self._started = True
        self._subscribe()
        self.set_state(State.RUNNING)
        next_commit = time.monotonic() + self.flush_interval
        next_refresh = time.monotonic() + _TOPICS_REFRESH
        while not self.stopping.is_set():
            if self.paused:
                self._pause_all()
                self.wait_while_paused()
                self._resume_all()
                continue
            self._sync_assignment()
            if self.seeks:
                self._apply_seeks()
            if not self._subscribed:
                self.stopping.wait(0.5)  # none of the topics exists yet
                records = []
            else:
                records = self.consumer.poll(0.5)
            if records and self._sync_assignment() | bool(self.seeks):
                # The group changed while polling: the task opens its new partitions
                # before it sees their records, and records of partitions taken away or
                # sought elsewhere are dropped (they are read again from the right place).
                sought = set(self.seeks)
                self._apply_seeks()
                keep = {(tp.topic, tp.partition) for tp in self.assigned - sought}
                records = [r for r in records if (r.topic, r.partition) in keep]
            # After every poll, with no records too, as Kafka does: a task that buffers
            # writes what it holds once the topics go quiet, not at the next commit.
            self._deliver(self._convert(records) if records else [])
            now = time.monotonic()
            if now >= next_commit or self.commit_requested:
                self.commit_offsets()
                next_commit = time.monotonic() + self.flush_interval
            if (self.regex is not None or not self._complete) and now >= next_refresh:
                self._subscribe()
                next_refresh = now + _TOPICS_REFRESH

    def _subscribe(self) -> None:
        """Subscribe to the configured topics that exist (all matches of topics.regex).
        Topics created later are picked up by the next refresh: a group's assignment
        does not follow a topic that was missing when the group formed."""
        existing = set(self.list_topics())
        if self.regex is None:
            topics = [t for t in self.topics if t in existing]
            self._complete = len(topics) == len(self.topics)
        else:
            topics = sorted(t for t in existing if self.regex.fullmatch(t))
        if topics != self._subscribed and topics:
            self.consumer.subscribe(topics)
            self._subscribed = list(topics)
            for topic in topics:
                self.on_topic(topic)

    def _sync_assignment(self) -> bool:
        """Call the task's ``open``/``close`` for partitions the group gave or took;
        True if it changed."""
        now = {TopicPartition(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        if now == self.assigned:
            return False
        revoked = self.assigned - now
        added = now - self.assigned
        log.info(
            "%s: partitions assigned %s, revoked %s",
            self.id,
            sorted(f"{tp.topic}-{tp.partition}" for tp in added),
            sorted(f"{tp.topic}-{tp.partition}" for tp in revoked),
        )
        if revoked:
            # The group moved these on: their offsets are no longer ours to commit.
            self.task.close(revoked)
            for tp in revoked:
                self.current.pop(tp, None)
                self._committed.pop(tp, None)
                self._first_delivered.pop(tp, None)
                self.task_paused.discard(tp)
        self.assigned = now
        if added:
            self.task.open(added)
        return True

    def _apply_seeks(self) -> None:
        seeks, self.seeks = self.seeks, {}
        for tp, offset in seeks.items():
            if tp in self.assigned:
                self.consumer.seek(KafkaTopicPartition(tp.topic, tp.partition), offset)
                self.current[tp] = offset

    def _pause_all(self) -> None:
        if self.assigned:
            self.consumer.pause(*(KafkaTopicPartition(p.topic, p.partition) for p in self.assigned))

    def _resume_all(self) -> None:
        partitions = self.assigned - self.task_paused
        if partitions:
            self.consumer.resume(*(KafkaTopicPartition(p.topic, p.partition) for p in partitions))

    # -- records ------------------------------------------------------------------------

    def _convert(self, records: list[Any]) -> list[SinkRecord]:
        key_to_data = self.converters.key.to_connect_data
        value_to_data = self.converters.value.to_connect_data
        headers_from_bytes = self.converters.headers_from_bytes
        # No transforms (the common case): skip the call per record.
        apply = self.transforms.apply if self.transforms.stages else None
        originals = self._originals
        originals.clear()
        ends: dict[tuple[str, int], int] = {}
        batch = []
        for raw in records:
            topic = raw.topic
            ends[topic, raw.partition] = raw.offset + 1
            try:
                record = _sink_record(
                    raw,
                    key_to_data(topic, raw.key),
                    value_to_data(topic, raw.value),
                    headers_from_bytes(topic, raw.headers),
                )
                if apply is not None:
                    record = apply(record)
            except Exception:
                record = self._convert_with_errors(raw)
            if record is not None:
                originals[id(record)] = raw
                batch.append(record)
        # Next offsets per partition (a TopicPartition per record would cost more).
        first_delivered = self._first_delivered
        for (topic, partition), offset in ends.items():
            tp = TopicPartition(topic, partition)
            if tp not in self.current:  # its first records since it was assigned
                first_delivered[tp] = next(
                    r.offset for r in records if r.partition == partition and r.topic == topic
                )
            self.current[tp] = offset
        return batch

    def _failed(self, raw: Any, exc: BaseException) -> FailedRecord:
        return FailedRecord(
            Stage.KAFKA_CONSUME,
            "",
            exc,
            raw.topic,
            raw.partition,
            raw.offset,
            raw.key,
            raw.value,
            tuple(raw.headers or ()),
            description=f"key={raw.key!r} value={raw.value!r}",
        )

    def _convert_with_errors(self, raw: Any) -> SinkRecord | None:
        """One record stage by stage under the error handler (see the source runner)."""
        failed = partial(self._failed, raw)
        topic = raw.topic
        converted = self.convert_stages(topic, raw.key, raw.value, raw.headers, failed, False)
        if converted is None:
            return None
        key, value, headers = converted
        record = _sink_record(raw, key, value, headers)
        return self.transform(record, failed)

    def _deliver(self, batch: list[SinkRecord]) -> None:
        """``put`` the batch, again and again while it raises :class:`RetriableError`."""
        while True:
            try:
                self.task.put(batch)
                return
            except RetriableError as exc:
                log.warning(
                    "%s: retriable error from put, delivering the batch again: %s", self.id, exc
                )
                self._pause_all()
                try:
                    self.stopping.wait(max(self.retry_timeout, 0.0))
                finally:
                    self.retry_timeout = -1.0
                    self._resume_all()
                if self.stopping.is_set():
                    raise
                self._sync_assignment()

    def report_errant(self, record: SinkRecord, error: BaseException) -> None:
        """``SinkTaskContext.errant_record_reporter``: the record goes to the DLQ (and the
        log) under ``errors.tolerance=all``; otherwise the task fails, as in Kafka."""
        raw = self._originals.get(id(record))
        if raw is not None:
            failed = self._failed(raw, error)
        else:
            converters = self.converters
            failed = FailedRecord(
                Stage.TASK_PUT,
                "",
                error,
                record.topic,
                record.kafka_partition,
                record.kafka_offset,
                converters.key.from_connect_data(record.topic, record.key_schema, record.key),
                converters.value.from_connect_data(record.topic, record.value_schema, record.value),
            )
        failed = FailedRecord(
            **{
                **failed.__dict__,
                "stage": Stage.TASK_PUT,
                "executing_class": type(self.task).__qualname__,
            }
        )
        if not self.errors.tolerate_all:
            raise ToleranceExceeded(
                f"Tolerance exceeded in error handler (TASK_PUT {type(self.task).__qualname__})"
            ) from error
        self.errors.report(failed)

    # -- offsets ------------------------------------------------------------------------

    def commit_offsets(self, closing: bool = False) -> None:
        """``pre_commit`` (which flushes by default), then commit what it returned; after
        a :class:`RetriableError` from it, rewind to the last committed offsets."""
        self.commit_requested = False
        if not self.current:
            return
        # A record reported to the DLQ is committed past only once the DLQ has it.
        self.errors.wait_for_dlq(self.flush_timeout)
        try:
            offsets = self.task.pre_commit(dict(self.current))
        except RetriableError as exc:
            if closing:
                log.warning("%s: offset commit failed while closing: %s", self.id, exc)
                return
            # As Kafka: nothing is committed, and everything since the last commit is
            # delivered again (a task drops what it did not write when flush fails).
            # Other errors fail the task (Kafka rewinds on those too, which can loop).
            log.error(
                "%s: offset commit failed, rewinding to the last committed offsets: %s",
                self.id,
                exc,
            )
            for tp in self.assigned:
                offset = self._committed.get(tp, self._first_delivered.get(tp))
                if offset is not None:
                    self.seeks[tp] = offset
            return
        changed = {
            KafkaTopicPartition(tp.topic, tp.partition): offset
            for tp, offset in offsets.items()
            if tp in self.assigned and self._committed.get(tp) != offset
        }
        if not changed:
            return
        try:
            self.consumer.commit(changed)
        except Exception as exc:
            # A rebalance took partitions away: the next owner re-reads from the last
            # commit (at least once).
            log.warning("%s: offset commit failed, will retry: %s", self.id, exc)
            return
        for tp, offset in changed.items():
            self._committed[TopicPartition(tp.topic, tp.partition)] = offset

    def close(self) -> None:
        try:
            if self._started:
                try:
                    if not self.failed:
                        self._sync_assignment()
                        self.commit_offsets(closing=True)
                    if self.assigned:
                        self.task.close(set(self.assigned))
                finally:
                    # Even after a failed last flush: the task's threads and connections
                    # end with it.
                    self.task.stop()
        finally:
            self.consumer.close()
            if self.dlq_producer is not None:
                self.dlq_producer.close(self.flush_timeout)
