"""Kafka Connect's connector and task states, and the status documents of the REST API."""

from __future__ import annotations

import enum
import threading
import traceback
from dataclasses import dataclass

__all__ = ["State", "StatusStore", "TargetState", "TaskId", "Status", "trace_of"]


class State(enum.Enum):
    """What a connector or task is doing (``GET /connectors/{c}/status``)."""

    UNASSIGNED = "UNASSIGNED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    STOPPED = "STOPPED"
    FAILED = "FAILED"
    RESTARTING = "RESTARTING"
    DESTROYED = "DESTROYED"


class TargetState(enum.Enum):
    """What the user asked for: ``/resume`` (STARTED), ``/pause``, ``/stop``."""

    STARTED = "STARTED"
    PAUSED = "PAUSED"
    STOPPED = "STOPPED"


@dataclass(frozen=True, order=True)
class TaskId:
    connector: str
    task: int

    def __str__(self) -> str:
        return f"{self.connector}-{self.task}"

    def to_json(self) -> dict[str, object]:
        return {"connector": self.connector, "task": self.task}


@dataclass(frozen=True)
class Status:
    state: State
    worker_id: str
    trace: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"state": self.state.value, "worker_id": self.worker_id}
        if self.trace is not None:
            out["trace"] = self.trace
        return out


def trace_of(error: BaseException) -> str:
    """Kafka's ``trace``: the failure's stack trace as text."""
    return "".join(traceback.format_exception(error)).rstrip()


class StatusStore:
    """Connector and task statuses (in memory: standalone mode; a distributed worker
    keeps them in ``status.storage.topic``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connectors: dict[str, Status] = {}
        self._tasks: dict[TaskId, Status] = {}

    def put_connector(self, name: str, status: Status) -> None:
        with self._lock:
            self._connectors[name] = status

    def put_task(self, task: TaskId, status: Status) -> None:
        with self._lock:
            self._tasks[task] = status

    def connector(self, name: str) -> Status | None:
        with self._lock:
            return self._connectors.get(name)

    def task(self, task: TaskId) -> Status | None:
        with self._lock:
            return self._tasks.get(task)

    def tasks(self, connector: str) -> dict[TaskId, Status]:
        with self._lock:
            return {t: s for t, s in self._tasks.items() if t.connector == connector}

    def forget(self, connector: str) -> None:
        with self._lock:
            self._connectors.pop(connector, None)
            for task in [t for t in self._tasks if t.connector == connector]:
                del self._tasks[task]

    def forget_task(self, task: TaskId) -> None:
        with self._lock:
            self._tasks.pop(task, None)
