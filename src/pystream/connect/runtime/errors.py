"""Error handling of a task: ``errors.retry.timeout``, ``errors.tolerance``,
``errors.log.*`` and, for sinks, the dead letter queue (``errors.deadletterqueue.*``),
as Kafka's ``RetryWithToleranceOperator`` and its reporters.

Each operation on a record runs through :meth:`ErrorHandler.execute` with its stage
(converter, transformation, task put…).  A :class:`RetriableError` is retried with
exponential backoff until ``errors.retry.timeout`` runs out; what still fails fails
the task, unless ``errors.tolerance=all`` and the stage is one Kafka tolerates
(conversion and transformation), when the record is skipped and reported.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..api import RetriableError

__all__ = ["DeadLetterQueue", "ErrorHandler", "FailedRecord", "Stage", "ToleranceExceeded"]

log = logging.getLogger("pystream.connect.errors")

T = TypeVar("T")

# Kafka's header names (DeadLetterQueueReporter).
HEADER_PREFIX = "__connect.errors."
ERROR_HEADERS = (
    "topic",
    "partition",
    "offset",
    "connector.name",
    "task.id",
    "stage",
    "class.name",
    "exception.class.name",
    "exception.message",
    "exception.stacktrace",
)


class Stage(enum.Enum):
    """Where in a record's journey an operation runs (Kafka's ``Stage``)."""

    KEY_CONVERTER = "KEY_CONVERTER"
    VALUE_CONVERTER = "VALUE_CONVERTER"
    HEADER_CONVERTER = "HEADER_CONVERTER"
    TRANSFORMATION = "TRANSFORMATION"
    TASK_POLL = "TASK_POLL"
    TASK_PUT = "TASK_PUT"
    KAFKA_PRODUCE = "KAFKA_PRODUCE"
    KAFKA_CONSUME = "KAFKA_CONSUME"


# Kafka tolerates failures of these stages only; the rest always fail the task.
_TOLERABLE = {
    Stage.KEY_CONVERTER,
    Stage.VALUE_CONVERTER,
    Stage.HEADER_CONVERTER,
    Stage.TRANSFORMATION,
}


class ToleranceExceeded(Exception):
    """An operation failed and the configuration does not tolerate it: the task fails."""


@dataclass(frozen=True)
class FailedRecord:
    """What is reported about a failed record: the original consumer record's topic,
    partition, offset, key and value bytes and headers (sinks), and the failure."""

    stage: Stage
    executing_class: str
    error: BaseException
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    description: str = ""


class DeadLetterQueue:
    """Sends failed sink records to ``errors.deadletterqueue.topic.name`` with their
    original bytes and, with ``context.headers.enable``, Kafka's ``__connect.errors.*``
    headers.  ``send(topic, value, key, headers)`` is the producer's send."""

    def __init__(
        self,
        topic: str,
        send: Callable[..., Any],
        connector: str,
        task_id: int,
        context_headers: bool,
    ) -> None:
        self.topic = topic
        self._send = send
        self.connector = connector
        self.task_id = task_id
        self.context_headers = context_headers

    def report(self, failed: FailedRecord) -> Any:
        headers = list(failed.headers)
        if self.context_headers:
            error = failed.error
            values = {
                "topic": failed.topic,
                "partition": failed.partition,
                "offset": failed.offset,
                "connector.name": self.connector,
                "task.id": self.task_id,
                "stage": failed.stage.value,
                "class.name": failed.executing_class,
                "exception.class.name": f"{type(error).__module__}.{type(error).__qualname__}",
                "exception.message": str(error),
                "exception.stacktrace": "".join(traceback.format_exception(error)),
            }
            headers += [
                (HEADER_PREFIX + name, None if values[name] is None else str(values[name]).encode())
                for name in ERROR_HEADERS
            ]
        return self._send(self.topic, failed.value, failed.key, headers)


class ErrorHandler:
    """One task's ``errors.*`` settings in action (see the module docstring)."""

    def __init__(
        self,
        *,
        retry_timeout_ms: int,
        retry_delay_max_ms: int,
        tolerate_all: bool,
        log_errors: bool,
        log_messages: bool,
        task: str,
        dlq: DeadLetterQueue | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.retry_timeout_ms = retry_timeout_ms
        self.retry_delay_max_ms = retry_delay_max_ms
        self.tolerate_all = tolerate_all
        self.log_errors = log_errors
        self.log_messages = log_messages
        self.task = task
        self.dlq = dlq
        self.stopping = stopping or threading.Event()
        self.skipped = 0
        self.dlq_futures: list[Any] = []

    @classmethod
    def from_config(
        cls,
        props: dict[str, Any],
        task: str,
        dlq: DeadLetterQueue | None,
        stopping: threading.Event,
    ) -> ErrorHandler:
        """From a connector's parsed config (see :mod:`.config`)."""
        return cls(
            retry_timeout_ms=props["errors.retry.timeout"],
            retry_delay_max_ms=props["errors.retry.delay.max.ms"],
            tolerate_all=str(props["errors.tolerance"]).lower() == "all",
            log_errors=props["errors.log.enable"],
            log_messages=props["errors.log.include.messages"],
            task=task,
            dlq=dlq,
            stopping=stopping,
        )

    def retry(self, operation: Callable[[], T], stage: Stage) -> T:
        """Run ``operation``, retrying a :class:`RetriableError` with exponential backoff
        (300 ms doubling, at most ``errors.retry.delay.max.ms``) until
        ``errors.retry.timeout`` (-1: forever); the last error is raised."""
        deadline = (
            None if self.retry_timeout_ms < 0 else time.monotonic() + self.retry_timeout_ms / 1000
        )
        delay = 0.3
        attempt = 0
        while True:
            try:
                return operation()
            except RetriableError as exc:
                attempt += 1
                now = time.monotonic()
                if self.stopping.is_set() or (deadline is not None and now >= deadline):
                    raise
                wait = min(delay, self.retry_delay_max_ms / 1000)
                if deadline is not None:
                    wait = min(wait, deadline - now)
                log.debug(
                    "%s: %s failed (attempt %d), retrying: %s", self.task, stage.value, attempt, exc
                )
                self.stopping.wait(wait)
                delay *= 2

    def execute(
        self,
        operation: Callable[[], T],
        stage: Stage,
        executing_class: str,
        failed: Callable[[BaseException], FailedRecord] | None = None,
    ) -> tuple[bool, T | None]:
        """(True, result), or (False, None) when the operation failed and the failure is
        tolerated (then it is logged and sent to the DLQ as configured).  Raises
        :class:`ToleranceExceeded` when it is not tolerated."""
        try:
            return True, self.retry(operation, stage)
        except Exception as exc:
            report = (
                failed(exc) if failed is not None else FailedRecord(stage, executing_class, exc)
            )
            report = FailedRecord(
                **{**report.__dict__, "stage": stage, "executing_class": executing_class}
            )
            if not (self.tolerate_all and stage in _TOLERABLE):
                self._log(report)
                raise ToleranceExceeded(
                    f"Tolerance exceeded in error handler ({stage.value} {executing_class})"
                ) from exc
            self.report(report)
            return False, None

    def report(self, failed: FailedRecord) -> None:
        """Log (``errors.log.enable``) and send to the DLQ a record that was skipped."""
        self.skipped += 1
        self._log(failed)
        if self.dlq is not None:
            self.dlq_futures.append(self.dlq.report(failed))

    def _log(self, failed: FailedRecord) -> None:
        if not self.log_errors:
            return
        where = (
            f" consuming topic={failed.topic} partition={failed.partition} offset={failed.offset}"
            if failed.topic is not None
            else ""
        )
        message = (
            f" record: {failed.description}" if self.log_messages and failed.description else ""
        )
        log.error(
            "Error encountered in task %s. Executing stage '%s' with class '%s'%s.%s",
            self.task,
            failed.stage.value,
            failed.executing_class,
            where,
            message,
            exc_info=failed.error,
        )

    def wait_for_dlq(self, timeout: float) -> None:
        """Wait until the DLQ has every reported record (before committing offsets past
        them: a record is either written by the task or in the DLQ)."""
        futures, self.dlq_futures = self.dlq_futures, []
        for future in futures:
            future.result(timeout)
