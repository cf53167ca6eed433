"""What every task runner shares: its thread, its state and the pause/resume/stop
signals (Kafka's ``WorkerTask``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from ..api import ConnectRecord, Converter, Header, Task
from .errors import ErrorHandler, Stage, ToleranceExceeded
from .states import State, Status, StatusStore, TargetState, TaskId, trace_of

__all__ = ["Converters", "WorkerTask"]

log = logging.getLogger("pystream.connect.task")


class Converters:
    """A task's key, value and header converters."""

    def __init__(self, key: Converter, value: Converter, header: Converter) -> None:
        self.key = key
        self.value = value
        self.header = header

    @staticmethod
    def name(converter: Converter) -> str:
        return type(converter).__qualname__

    def headers_to_bytes(
        self, topic: str, headers: tuple[Header, ...]
    ) -> list[tuple[str, bytes | None]] | None:
        if not headers:
            return None
        convert = self.header.from_connect_header  # type: ignore[attr-defined]
        return [(h.key, convert(topic, h.key, h.schema, h.value)) for h in headers]

    def headers_from_bytes(self, topic: str, headers: Any) -> tuple[Header, ...]:
        if not headers:
            return ()
        out = []
        for key, raw in headers:
            data = self.header.to_connect_header(topic, key, raw)  # type: ignore[attr-defined]
            out.append(Header(key, data.value, data.schema))
        return tuple(out)


class WorkerTask:
    """One task in its own thread: :meth:`start`, :meth:`transition` (pause/resume),
    :meth:`stop`, :meth:`join`.  Subclasses implement :meth:`execute` (the loop) and
    :meth:`close` (release clients); a failure sets the task FAILED with its trace."""

    def __init__(
        self,
        task_id: TaskId,
        task: Task,
        task_props: dict[str, str],
        worker_id: str,
        statuses: StatusStore,
        target: TargetState,
        errors: ErrorHandler,
        converters: Converters,
        transforms: Any,
        on_topic: Callable[[str], None],
    ) -> None:
        self.id = task_id
        self.task = task
        self.task_props = task_props
        self.worker_id = worker_id
        self.statuses = statuses
        self.errors = errors
        self.converters = converters
        self.transforms = transforms
        self.on_topic = on_topic
        self.stopping = errors.stopping
        self._target = target
        self._changed = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name=f"connect-task-{task_id}", daemon=True
        )
        self.failed = False

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def transition(self, target: TargetState) -> None:
        """Pause (``PAUSED``) or resume (``STARTED``) the task."""
        with self._changed:
            self._target = target
            self._changed.notify_all()

    @property
    def paused(self) -> bool:
        return self._target is TargetState.PAUSED

    def wait_while_paused(self) -> bool:
        """Block while paused (until resumed or stopped); True if it waited."""
        if not self.paused:
            return False
        self.set_state(State.PAUSED)
        with self._changed:
            while self.paused and not self.stopping.is_set():
                self._changed.wait(0.5)
        if not self.stopping.is_set():
            self.set_state(State.RUNNING)
        return True

    def stop(self) -> None:
        """Ask the task to stop (returns at once; :meth:`join` waits)."""
        self.stopping.set()
        with self._changed:
            self._changed.notify_all()
        self.interrupt()

    def interrupt(self) -> None:
        """Wake a blocked task (sources call the task's ``stop`` here, as Kafka does)."""

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; False if it did not within ``timeout``."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def set_state(self, state: State, error: BaseException | None = None) -> None:
        self.statuses.put_task(
            self.id,
            Status(state, self.worker_id, trace_of(error) if error is not None else None),
        )

    def _run(self) -> None:
        try:
            self.execute()
        except BaseException as exc:
            self.failed = True
            if isinstance(exc, ToleranceExceeded):
                log.error("%s failed: %s", self.id, exc, exc_info=exc.__cause__)
            else:
                log.error("%s failed", self.id, exc_info=exc)
            self.set_state(State.FAILED, exc)
        finally:
            try:
                self.close()
            except Exception:
                log.exception("%s: error while closing", self.id)
            try:
                self.transforms.close()
            except Exception:
                log.exception("%s: error while closing the transforms", self.id)
        if not self.failed:
            self.set_state(State.UNASSIGNED)

    def execute(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the task used (called once, from its thread, after execute)."""

    def convert_stages(
        self, topic: str, key: Any, value: Any, headers: Any, failed: Any, to_bytes: bool
    ) -> tuple[Any, Any, Any] | None:
        """Key, value and headers through the converters (to bytes for sources, from
        bytes for sinks), each stage under the error handler; None if one failed and
        the failure was tolerated.  ``key``/``value`` are (schema, value) to write or
        the bytes to read."""
        converters = self.converters
        if to_bytes:
            steps = [
                (
                    Stage.KEY_CONVERTER,
                    converters.key,
                    partial(converters.key.from_connect_data, topic, *key),
                ),
                (
                    Stage.VALUE_CONVERTER,
                    converters.value,
                    partial(converters.value.from_connect_data, topic, *value),
                ),
                (
                    Stage.HEADER_CONVERTER,
                    converters.header,
                    partial(converters.headers_to_bytes, topic, headers),
                ),
            ]
        else:
            steps = [
                (
                    Stage.KEY_CONVERTER,
                    converters.key,
                    partial(converters.key.to_connect_data, topic, key),
                ),
                (
                    Stage.VALUE_CONVERTER,
                    converters.value,
                    partial(converters.value.to_connect_data, topic, value),
                ),
                (
                    Stage.HEADER_CONVERTER,
                    converters.header,
                    partial(converters.headers_from_bytes, topic, headers),
                ),
            ]
        results = []
        for stage, converter, operation in steps:
            ok, result = self.errors.execute(operation, stage, Converters.name(converter), failed)
            if not ok:
                return None
            results.append(result)
        return results[0], results[1], results[2]

    def transform(self, record: ConnectRecord, failed: Any) -> ConnectRecord | None:
        """The record through the transforms; None if dropped or skipped on error."""
        ok, result = self.errors.execute(
            lambda: self.transforms.apply(record),
            Stage.TRANSFORMATION,
            type(self.transforms).__name__,
            failed,
        )
        return result if ok else None
