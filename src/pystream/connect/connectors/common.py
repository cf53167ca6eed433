"""What the built-in connectors share: config validators, and JSON for Connect values."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from ..api import ConfigDef, ConfigError, ConfigValue, SinkConnector, Task

__all__ = [
    "BackgroundWriter",
    "SharedConfigSinkConnector",
    "at_least",
    "json_default",
    "one_of",
    "validate_with",
]


T = TypeVar("T")


def one_of(key: str, choices: tuple[str, ...]) -> Callable[[Any], None]:
    """A ``ConfigKey`` validator: the value is one of ``choices``."""

    def check(value: Any) -> None:
        if value not in choices:
            raise ConfigError(
                f"Invalid value {value!r} for configuration {key}: expected one of "
                + ", ".join(choices)
            )

    return check


def at_least(key: str, minimum: int) -> Callable[[Any], None]:
    """A ``ConfigKey`` validator: the number is ``minimum`` or more."""

    def check(value: Any) -> None:
        if value < minimum:
            raise ConfigError(
                f"Invalid value {value} for configuration {key}: must be at least {minimum}"
            )

    return check


def json_default(value: Any) -> Any:
    """``json.dumps``'s fallback for the values Connect records may hold."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def validate_with(
    config_def: ConfigDef, props: Mapping[str, Any], check: Callable[[dict[str, str]], Any]
) -> dict[str, ConfigValue]:
    """``config_def``'s per-key results, then, if those pass, the connector's rules
    between keys (``check``); a rule's error is filed under the first key its message
    names, so that the validate endpoint shows it where it belongs."""
    results = config_def.validate(props)
    if not any(result.errors for result in results.values()):
        try:
            check(dict(props))
        except ConfigError as exc:
            message = str(exc)
            named = [name for name in results if name in message]
            key = min(named, key=message.index) if named else next(iter(results))
            results[key].errors.append(message)
    return results


class SharedConfigSinkConnector(SinkConnector):
    """A sink connector whose tasks all run the connector's own config (the worker
    shares the topics' partitions among them): subclasses set ``task`` and
    ``config_def``, and may override :meth:`check` for cross-key rules."""

    task: type[Task]
    config_def: ConfigDef

    def check(self, props: dict[str, str]) -> None:
        """Raise :class:`ConfigError` if ``props`` are not valid."""
        self.config_def.parse(props)

    def start(self, props: dict[str, str]) -> None:
        self.check(props)
        self.props = dict(props)

    def task_class(self) -> type[Task]:
        return self.task

    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        return [dict(self.props) for _ in range(max(1, max_tasks))]

    def stop(self) -> None:
        return None

    def config(self) -> ConfigDef:
        return self.config_def

    def validate(self, props: Mapping[str, Any]) -> dict[str, ConfigValue]:
        return validate_with(self.config_def, props, self.check)


class BackgroundWriter:
    """One thread that runs a sink task's writes in order, so that the task converts the
    next batch while the last one is written (the database's time and the conversion's
    overlap).  The task decides how many writes are in flight (the SQL sink: one) by
    waiting for a write's :class:`Future` before it submits the next.  A daemon thread:
    a write stuck on an unresponsive server cannot keep the process alive."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, write: Callable[[], T]) -> Future[T]:
        """Run ``write`` after the writes submitted before it; its result or error is the
        future's."""
        future: Future[T] = Future()
        self._jobs.put((future, write))
        return future

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, write = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(write())
            except BaseException as exc:  # noqa: BLE001 (the submitter gets it)
                future.set_exception(exc)

    def close(self, timeout: float | None = None) -> bool:
        """End the thread once the submitted writes are done; False if it is still
        running after ``timeout`` seconds (a write is stuck)."""
        self._jobs.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()
