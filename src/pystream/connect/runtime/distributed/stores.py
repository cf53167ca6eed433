"""The config, status and offset stores of a distributed worker, each over a
:class:`~.kafka_log.KafkaBasedLog`, with Kafka's record keys and JSON values
(``KafkaConfigBackingStore``, ``KafkaStatusBackingStore``, ``KafkaOffsetBackingStore``):

config topic (one partition, so that its order is the order of changes):
  ``connector-<c>`` → ``{"properties": {...}}`` (tombstone: deleted),
  ``task-<c>-<n>`` → ``{"properties": {...}}``, applied only when
  ``commit-<c>`` → ``{"tasks": n}`` follows them,
  ``target-state-<c>`` → ``{"state": "STARTED|PAUSED", "state.v2": "STARTED|PAUSED|STOPPED"}``;
status topic: ``status-connector-<c>``, ``status-task-<c>-<n>`` →
  ``{"state", "trace", "worker_id", "generation"}`` (tombstone: forgotten);
  ``status-topic-<topic>:connector-<c>`` → ``{"topic": {"name", "connector", "task",
  "discoverTimestamp"}}``, a connector's active topics (KIP-558);
offset topic: ``["<c>", {source partition}]`` → the offset JSON (null: deleted).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ....clock import now_ms
from ...api import ConfigError
from ..config import WorkerConfig
from ..offsets import MemoryOffsetBackingStore
from ..states import State, Status, StatusStore, TargetState, TaskId
from .kafka_log import KafkaBasedLog, LogRecord

__all__ = [
    "ConfigSnapshot",
    "KafkaConfigBackingStore",
    "KafkaOffsetBackingStore",
    "KafkaStatusBackingStore",
    "storage_settings",
]

log = logging.getLogger("pystream.connect.stores")

CONNECTOR_PREFIX = "connector-"
TASK_PREFIX = "task-"
COMMIT_PREFIX = "commit-"
TARGET_PREFIX = "target-state-"
STATUS_CONNECTOR_PREFIX = "status-connector-"
STATUS_TASK_PREFIX = "status-task-"
STATUS_TOPIC_PREFIX = "status-topic-"
TOPIC_SEPARATOR = ":connector-"


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def storage_settings(
    config: WorkerConfig, kind: str, default_topic: str, partitions: int
) -> tuple[str, int, int]:
    """(topic, partitions, replication factor) of ``<kind>.storage.*`` (Kafka's names
    and defaults; the config topic always has one partition)."""
    topic = (config.get(f"{kind}.storage.topic") or default_topic).strip()
    count = config._int(f"{kind}.storage.partitions", partitions) if kind != "config" else 1
    factor = config._int(f"{kind}.storage.replication.factor", -1)
    return topic, count, factor


def _split_task_key(rest: str) -> TaskId | None:
    connector, _, index = rest.rpartition("-")
    if not connector or not index.isdigit():
        return None
    return TaskId(connector, int(index))


@dataclass
class ConfigSnapshot:
    """What the config topic says, up to ``offset`` (the next offset to read)."""

    offset: int = 0
    connectors: dict[str, dict[str, str]] = field(default_factory=dict)
    tasks: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    targets: dict[str, TargetState] = field(default_factory=dict)

    def copy(self) -> ConfigSnapshot:
        return ConfigSnapshot(
            self.offset,
            {k: dict(v) for k, v in self.connectors.items()},
            {k: [dict(t) for t in v] for k, v in self.tasks.items()},
            dict(self.targets),
        )


# A change seen in the config topic: ("connector" | "tasks" | "target", connector name).
ConfigChange = tuple[str, str]


class KafkaConfigBackingStore:
    """Connector configs, task configs and target states in ``config.storage.topic``.
    ``on_change`` is told of each change after the initial read (from the log's thread)."""

    def __init__(self, config: WorkerConfig, client_id: str) -> None:
        topic, partitions, factor = storage_settings(config, "config", "connect-configs", 1)
        self._lock = threading.Lock()
        self._snapshot = ConfigSnapshot()
        self._deferred: dict[str, dict[int, dict[str, str]]] = {}
        self.on_change: Callable[[ConfigChange], None] | None = None
        self.log = KafkaBasedLog(config, topic, partitions, factor, self._apply, client_id)

    def start(self) -> None:
        self.log.start()
        count = self.log.partition_count
        if count != 1:
            self.log.stop()
            raise ConfigError(
                f"config.storage.topic={self.log.topic} has {count} partitions; the config "
                "topic needs exactly one (its order is the order of changes): name another "
                "topic or recreate this one with one partition"
            )

    def stop(self) -> None:
        self.log.stop()

    def snapshot(self) -> ConfigSnapshot:
        with self._lock:
            return self._snapshot.copy()

    @property
    def offset(self) -> int:
        with self._lock:
            return self._snapshot.offset

    def _apply(self, record: LogRecord) -> None:
        key, raw, offset = record
        value = None if raw is None else json.loads(raw)
        change: ConfigChange | None = None
        with self._lock:
            snap = self._snapshot
            snap.offset = offset + 1
            if key.startswith(CONNECTOR_PREFIX):
                name = key[len(CONNECTOR_PREFIX) :]
                if value is None:
                    snap.connectors.pop(name, None)
                    snap.tasks.pop(name, None)
                    snap.targets.pop(name, None)
                    self._deferred.pop(name, None)
                else:
                    snap.connectors[name] = dict(value["properties"])
                    snap.targets.setdefault(name, TargetState.STARTED)
                change = ("connector", name)
            elif key.startswith(TASK_PREFIX):
                task = _split_task_key(key[len(TASK_PREFIX) :])
                if task is not None and value is not None:
                    self._deferred.setdefault(task.connector, {})[task.task] = dict(
                        value["properties"]
                    )
            elif key.startswith(COMMIT_PREFIX):
                name = key[len(COMMIT_PREFIX) :]
                count = int(value["tasks"]) if value is not None else 0
                deferred = self._deferred.pop(name, {})
                if all(i in deferred for i in range(count)):
                    snap.tasks[name] = [deferred[i] for i in range(count)]
                    change = ("tasks", name)
                else:
                    log.warning(
                        "config topic: commit of %d task configs of %s with some missing; ignored",
                        count,
                        name,
                    )
            elif key.startswith(TARGET_PREFIX):
                name = key[len(TARGET_PREFIX) :]
                if value is None:
                    snap.targets.pop(name, None)
                else:
                    state = value.get("state.v2") or value.get("state")
                    snap.targets[name] = TargetState(state)
                change = ("target", name)
        callback = self.on_change
        if change is not None and callback is not None:
            callback(change)

    # -- writes (each acknowledged before it returns) -----------------------------------

    def put_connector_config(
        self, name: str, props: Mapping[str, str], target: TargetState | None = None
    ) -> None:
        if target is not None:
            self.put_target_state(name, target)
        self.log.send(CONNECTOR_PREFIX + name, _json({"properties": dict(props)}))

    def remove_connector(self, name: str) -> None:
        self.log.send(CONNECTOR_PREFIX + name, None)
        self.log.send(TARGET_PREFIX + name, None)

    def put_target_state(self, name: str, target: TargetState) -> None:
        # Kafka's TARGET_STATE_V1: workers that predate STOPPED read "state" (PAUSED).
        legacy = TargetState.PAUSED if target is TargetState.STOPPED else target
        self.log.send(
            TARGET_PREFIX + name, _json({"state": legacy.value, "state.v2": target.value})
        )

    def put_task_configs(self, name: str, configs: list[dict[str, str]]) -> None:
        for index, props in enumerate(configs):
            self.log.send(f"{TASK_PREFIX}{name}-{index}", _json({"properties": props}), wait=False)
        self.log.send(COMMIT_PREFIX + name, _json({"tasks": len(configs)}))

    def read_to_end(self) -> None:
        self.log.read_to_end()


class KafkaStatusBackingStore(StatusStore):
    """Statuses in ``status.storage.topic``: this worker's writes go to the topic (and
    count at once here); everyone's are read back.  A worker does not write over another
    worker's status of a newer group generation (Kafka's rule against zombies)."""

    def __init__(self, config: WorkerConfig, client_id: str) -> None:
        super().__init__()
        topic, partitions, factor = storage_settings(config, "status", "connect-status", 5)
        self.generation = -1
        self._generations: dict[str, tuple[int, str]] = {}
        self._active: dict[str, set[str]] = {}
        self.log = KafkaBasedLog(config, topic, partitions, factor, self._apply, client_id)

    def start(self) -> None:
        self.log.start()

    def stop(self) -> None:
        self.log.flush()
        self.log.stop()

    # -- active topics (KIP-558) --------------------------------------------------------

    def put_topic(self, connector: str, topic: str) -> None:
        """``connector`` used ``topic`` (written once; the worker does not say which of
        its tasks, so ``task`` is -1)."""
        with self._lock:
            if topic in self._active.get(connector, ()):
                return
            self._active.setdefault(connector, set()).add(topic)
        value = {
            "topic": {
                "name": topic,
                "connector": connector,
                "task": -1,
                "discoverTimestamp": now_ms(),
            }
        }
        self._write(f"{STATUS_TOPIC_PREFIX}{topic}{TOPIC_SEPARATOR}{connector}", _json(value))

    def topics(self, connector: str) -> list[str]:
        with self._lock:
            return sorted(self._active.get(connector, ()))

    def reset_topics(self, connector: str) -> None:
        with self._lock:
            topics = self._active.pop(connector, set())
        for topic in sorted(topics):
            self._write(f"{STATUS_TOPIC_PREFIX}{topic}{TOPIC_SEPARATOR}{connector}", None)

    def _encode(self, status: Status) -> bytes:
        return _json(
            {
                "state": status.state.value,
                "trace": status.trace,
                "worker_id": status.worker_id,
                "generation": self.generation,
            }
        )

    def put_connector(self, name: str, status: Status) -> None:
        if self._claim(STATUS_CONNECTOR_PREFIX + name, status):
            super().put_connector(name, status)
            self._write(STATUS_CONNECTOR_PREFIX + name, self._encode(status))

    def put_task(self, task: TaskId, status: Status) -> None:
        if self._claim(f"{STATUS_TASK_PREFIX}{task}", status):
            super().put_task(task, status)
            self._write(f"{STATUS_TASK_PREFIX}{task}", self._encode(status))

    def _claim(self, key: str, status: Status) -> bool:
        """Kafka's ``canWriteSafely``: not over another worker's status of a newer
        generation (this worker lost the connector or task and does not know yet)."""
        with self._lock:
            known = self._generations.get(key)
            if known is not None and known[1] != status.worker_id and known[0] > self.generation:
                log.info("%s: not written, %s has it in a newer generation", key, known[1])
                return False
            self._generations[key] = (self.generation, status.worker_id)
            return True

    def _write(self, key: str, value: bytes | None) -> None:
        try:
            # Not waited for: statuses are advisory, and this is called from task threads.
            self.log.send(key, value, wait=False)
        except Exception:
            log.warning("cannot write the status %s", key, exc_info=True)

    def forget(self, connector: str) -> None:
        tasks = list(self.tasks(connector))
        super().forget(connector)
        self._write(STATUS_CONNECTOR_PREFIX + connector, None)
        for task in tasks:
            self._write(f"{STATUS_TASK_PREFIX}{task}", None)

    def forget_task(self, task: TaskId) -> None:
        super().forget_task(task)
        self._write(f"{STATUS_TASK_PREFIX}{task}", None)

    def _apply(self, record: LogRecord) -> None:
        key, raw, _offset = record
        value = None if raw is None else json.loads(raw)
        if key.startswith(STATUS_TOPIC_PREFIX):
            topic, _, connector = key[len(STATUS_TOPIC_PREFIX) :].rpartition(TOPIC_SEPARATOR)
            with self._lock:
                if value is None:
                    self._active.get(connector, set()).discard(topic)
                else:
                    self._active.setdefault(connector, set()).add(topic)
            return
        status = None
        with self._lock:
            if value is None:
                self._generations.pop(key, None)
            else:
                status = Status(
                    State(value["state"]), value.get("worker_id") or "", value.get("trace")
                )
                self._generations[key] = (int(value.get("generation", -1)), status.worker_id)
            if key.startswith(STATUS_CONNECTOR_PREFIX):
                name = key[len(STATUS_CONNECTOR_PREFIX) :]
                if status is None:
                    self._connectors.pop(name, None)
                else:
                    self._connectors[name] = status
            elif key.startswith(STATUS_TASK_PREFIX):
                task = _split_task_key(key[len(STATUS_TASK_PREFIX) :])
                if task is None:
                    return
                if status is None:
                    self._tasks.pop(task, None)
                else:
                    self._tasks[task] = status


class KafkaOffsetBackingStore(MemoryOffsetBackingStore):
    """Source offsets in ``offset.storage.topic`` (read ``read_committed``, so that
    offsets of exactly-once sources' aborted transactions never count)."""

    def __init__(self, config: WorkerConfig, client_id: str) -> None:
        super().__init__()
        topic, partitions, factor = storage_settings(config, "offset", "connect-offsets", 25)
        self.log = KafkaBasedLog(
            config, topic, partitions, factor, self._record, client_id, "read_committed"
        )

    def start(self) -> None:
        self.log.start()

    def _record(self, record: LogRecord) -> None:
        key, raw, _offset = record
        with self._lock:
            self._apply({key: None if raw is None else json.loads(raw)})

    def set(self, values: Mapping[str, dict[str, Any] | None]) -> None:
        for key, value in values.items():
            self.log.send(key, None if value is None else _json(value), wait=False)
        # Acknowledged before they count (the producer keeps order per partition).
        self.log.flush()
        with self._lock:
            self._apply(values)

    def close(self) -> None:
        self.log.stop()
