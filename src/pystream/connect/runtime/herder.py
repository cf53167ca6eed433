"""The herder: what the REST API and the command line ask to create, reconfigure,
pause, stop, restart and delete connectors (Kafka's ``Herder``).

:class:`Herder` is the interface; :class:`StandaloneHerder` keeps configurations in
memory and runs everything on its one worker (connectors created over REST are not
persisted, as in Kafka's standalone mode).  A distributed herder implements the same
methods over the config, offset and status topics.  Methods block (they start and
stop tasks): the REST app calls them in threads.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Mapping
from typing import Any

from ...client import TopicPartition as KafkaTopicPartition
from ..api import ConfigError, ConfigKey, ConfigType, TopicPartition
from .config import SINK_CONFIG_DEF, SOURCE_CONFIG_DEF, check_sink_topics
from .loading import load_connector, plugin_infos
from .offsets import offset_key
from .states import State, Status, TargetState, TaskId
from .worker import Worker, connector_type, parse_connector_config

__all__ = ["Herder", "HerderError", "StandaloneHerder"]

log = logging.getLogger("pystream.connect.herder")


class HerderError(Exception):
    """A request the herder refuses: ``status`` is the HTTP status (404 unknown
    connector or task, 409 conflict, 400 bad configuration)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _not_found(name: str) -> HerderError:
    return HerderError(404, f"Connector {name} not found")


class Herder(abc.ABC):
    """What the REST API calls (see the module docstring)."""

    worker_id: str

    @abc.abstractmethod
    def connectors(self) -> list[str]: ...

    @abc.abstractmethod
    def connector_info(self, name: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    def connector_config(self, name: str) -> dict[str, str]: ...

    @abc.abstractmethod
    def put_connector_config(
        self, name: str, config: Mapping[str, str], allow_replace: bool
    ) -> tuple[bool, dict[str, Any]]:
        """Create (or with ``allow_replace`` update) a connector: (created, info)."""

    @abc.abstractmethod
    def delete_connector(self, name: str) -> None: ...

    @abc.abstractmethod
    def connector_status(self, name: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    def task_status(self, name: str, task: int) -> dict[str, Any]: ...

    @abc.abstractmethod
    def task_configs(self, name: str) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def set_target_state(self, name: str, target: TargetState) -> None: ...

    @abc.abstractmethod
    def restart_connector(
        self, name: str, include_tasks: bool, only_failed: bool
    ) -> dict[str, Any]:
        """Restart; the status with RESTARTING for what is restarted."""

    @abc.abstractmethod
    def restart_task(self, name: str, task: int) -> None: ...

    @abc.abstractmethod
    def connector_topics(self, name: str) -> list[str]: ...

    @abc.abstractmethod
    def reset_connector_topics(self, name: str) -> None: ...

    @abc.abstractmethod
    def connector_offsets(self, name: str) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def alter_offsets(self, name: str, offsets: list[Any] | None) -> str:
        """``PATCH`` (``offsets``) or ``DELETE`` (None) ``/connectors/{c}/offsets`` of a
        STOPPED connector; Kafka's success message."""

    @abc.abstractmethod
    def stop(self) -> None: ...

    # Plugins are the same everywhere.

    def plugins(self, connectors_only: bool = True) -> list[dict[str, str]]:
        infos = plugin_infos(None)
        if connectors_only:
            infos = [i for i in infos if i["type"] in ("source", "sink")]
        return infos

    def validate(self, plugin: str, config: Mapping[str, Any]) -> dict[str, Any]:
        """Kafka's ``PUT /connector-plugins/{p}/config/validate`` answer."""
        try:
            cls = load_connector(plugin)
        except ConfigError as exc:
            raise HerderError(400, str(exc)) from None
        config = dict(config)
        config.setdefault("connector.class", plugin)
        kind = connector_type(cls)
        worker_def = SINK_CONFIG_DEF if kind == "sink" else SOURCE_CONFIG_DEF
        results = worker_def.validate(config)
        if kind == "sink" and "topics" in results:
            try:
                check_sink_topics(config)
            except ConfigError as exc:
                results["topics"].errors.append(str(exc))
        connector = cls()
        own_def = connector.config()
        try:
            own = connector.validate(config)
        except Exception as exc:
            raise HerderError(400, f"{plugin}: validation failed: {exc}") from None
        configs = []
        groups: list[str] = []
        for definition, values in ((worker_def, results), (own_def, own)):
            for order, (key_name, value) in enumerate(values.items()):
                key = definition.keys.get(key_name) or ConfigKey(key_name, ConfigType.STRING)
                group = key.group or ""
                if group and group not in groups:
                    groups.append(group)
                configs.append(_config_info(key, value, order + 1))
        return {
            "name": f"{cls.__module__}.{cls.__qualname__}",
            "error_count": sum(len(c["value"]["errors"]) for c in configs),
            "groups": groups,
            "configs": configs,
        }


def _config_info(key: ConfigKey, value: Any, order: int) -> dict[str, Any]:
    default = None if key.required else key.default
    return {
        "definition": {
            "name": key.name,
            "type": key.type.value,
            "required": key.required,
            "default_value": None if default is None else _as_text(default),
            "importance": key.importance.value,
            "documentation": key.documentation,
            "group": key.group,
            "width": "NONE",
            "display_name": key.display_name or key.name,
            "dependents": [],
            "order": order,
        },
        "value": {
            "name": key.name,
            "value": None if value.value is None else _as_text(value.value),
            "recommended_values": [_as_text(v) for v in value.recommended_values],
            "errors": list(value.errors),
            "visible": value.visible,
        },
    }


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


class StandaloneHerder(Herder):
    """Every connector on this process's worker; configurations in memory."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.worker_id = worker.worker_id
        self._lock = threading.RLock()
        self._configs: dict[str, dict[str, str]] = {}
        self._targets: dict[str, TargetState] = {}
        self._task_configs: dict[str, list[dict[str, str]]] = {}

    # -- reading ------------------------------------------------------------------------

    def _config(self, name: str) -> dict[str, str]:
        config = self._configs.get(name)
        if config is None:
            raise _not_found(name)
        return config

    def connectors(self) -> list[str]:
        with self._lock:
            return sorted(self._configs)

    def _type(self, config: Mapping[str, str]) -> str:
        try:
            return connector_type(load_connector(config["connector.class"]))
        except Exception:
            return "unknown"

    def connector_info(self, name: str) -> dict[str, Any]:
        with self._lock:
            config = self._config(name)
            return {
                "name": name,
                "config": dict(config),
                "tasks": [
                    TaskId(name, i).to_json() for i in range(len(self._task_configs.get(name, ())))
                ],
                "type": self._type(config),
            }

    def connector_config(self, name: str) -> dict[str, str]:
        with self._lock:
            return dict(self._config(name))

    def task_configs(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            self._config(name)
            return [
                {"id": TaskId(name, i).to_json(), "config": dict(c)}
                for i, c in enumerate(self._task_configs.get(name, ()))
            ]

    def connector_status(self, name: str) -> dict[str, Any]:
        with self._lock:
            config = self._config(name)
            statuses = self.worker.statuses
            connector = statuses.connector(name) or Status(State.UNASSIGNED, self.worker_id)
            tasks = []
            for i in range(len(self._task_configs.get(name, ()))):
                status = statuses.task(TaskId(name, i)) or Status(State.UNASSIGNED, self.worker_id)
                tasks.append({"id": i, **status.to_json()})
            return {
                "name": name,
                "connector": connector.to_json(),
                "tasks": tasks,
                "type": self._type(config),
            }

    def task_status(self, name: str, task: int) -> dict[str, Any]:
        with self._lock:
            self._config(name)
            if not 0 <= task < len(self._task_configs.get(name, ())):
                raise HerderError(404, f"Task {name}-{task} not found")
            status = self.worker.statuses.task(TaskId(name, task)) or Status(
                State.UNASSIGNED, self.worker_id
            )
            return {"id": task, **status.to_json()}

    def connector_topics(self, name: str) -> list[str]:
        with self._lock:
            self._config(name)
        return self.worker.connector_topics(name)

    def reset_connector_topics(self, name: str) -> None:
        with self._lock:
            self._config(name)
        self.worker.reset_topics(name)

    def connector_offsets(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            config = self._config(name)
        if self._type(config) == "sink":
            group = f"connect-{name}"
            committed = self.worker.admin().list_consumer_group_offsets(group)
            return [
                {
                    "partition": {"kafka_topic": tp.topic, "kafka_partition": tp.partition},
                    "offset": {"kafka_offset": getattr(om, "offset", om)},
                }
                for tp, om in sorted(committed.items())
            ]
        return [
            {"partition": partition, "offset": offset}
            for partition, offset in self.worker.offsets.connector_offsets(name)
        ]

    # -- changing -----------------------------------------------------------------------

    def put_connector_config(
        self, name: str, config: Mapping[str, str], allow_replace: bool
    ) -> tuple[bool, dict[str, Any]]:
        config = self._named_config(name, config)
        with self._lock:
            exists = name in self._configs
            if exists and not allow_replace:
                raise HerderError(409, f"Connector {name} already exists")
            target = self._targets.get(name, TargetState.STARTED)
            if exists:
                self._stop_connector(name)
            self._configs[name] = config
            self._targets[name] = target
            self._start_connector(name)
        return not exists, self.connector_info(name)

    def _named_config(self, name: str, config: Mapping[str, str]) -> dict[str, str]:
        """``config`` as strings with ``name`` set, checked (HerderError 400 if bad)."""
        config = {str(k): str(v) for k, v in config.items()}
        if config.get("name", name) != name:
            raise HerderError(
                400,
                f"Connector name configuration ({config['name']}) doesn't match "
                f"connector name in the URL ({name})",
            )
        config["name"] = name
        self._check_config(config)
        return config

    def _check_config(self, config: dict[str, str]) -> None:
        try:
            cls, _parsed = parse_connector_config(config)
        except ConfigError as exc:
            raise HerderError(400, f"Connector configuration is invalid: {exc}") from None
        problems = [
            f"{key}: {error}"
            for key, value in cls().validate(config).items()
            for error in value.errors
        ]
        if problems:
            raise HerderError(
                400,
                f"Connector configuration is invalid and contains the following "
                f"{len(problems)} error(s):\n" + "\n".join(problems),
            )

    def _start_connector(self, name: str) -> None:
        config = self._configs[name]
        target = self._targets[name]
        worker = self.worker
        if not worker.start_connector(name, config, target, self._request_reconfiguration):
            return
        if target is TargetState.STOPPED:
            self._task_configs[name] = []
            return
        self._start_tasks(name)

    def _start_tasks(self, name: str) -> None:
        connector = self.worker.connectors.get(name)
        if connector is None:
            return
        try:
            configs = connector.task_configs()
        except Exception as exc:
            connector.fail(exc)
            return
        self._task_configs[name] = configs
        for index, task_config in enumerate(configs):
            self.worker.start_task(
                TaskId(name, index), self._configs[name], task_config, self._targets[name]
            )

    def _stop_tasks(self, name: str) -> None:
        self.worker.stop_tasks(self.worker.connector_task_ids(name))

    def _stop_connector(self, name: str) -> None:
        self._stop_tasks(name)
        self.worker.stop_connector(name)

    def _request_reconfiguration(self, name: str) -> None:
        # Called from the connector's thread: reconfigure from another one.
        def reconfigure() -> None:
            with self._lock:
                connector = self.worker.connectors.get(name)
                if connector is None or self._targets.get(name) is TargetState.STOPPED:
                    return
                try:
                    configs = connector.task_configs()
                except Exception as exc:
                    connector.fail(exc)
                    return
                if configs != self._task_configs.get(name):
                    self._stop_tasks(name)
                    self._start_tasks(name)

        threading.Thread(target=reconfigure, name=f"connect-reconfigure-{name}").start()

    def alter_offsets(self, name: str, offsets: list[Any] | None) -> str:
        with self._lock:
            config = self._config(name)
            if self._targets.get(name) is not TargetState.STOPPED:
                raise HerderError(
                    400,
                    f"Connectors must be in the STOPPED state before their offsets can be "
                    f"modified. This can be done for the specified connector by issuing a "
                    f"'PUT' request to the '/connectors/{name}/stop' endpoint",
                )
            cls = load_connector(config["connector.class"])
            if connector_type(cls) == "sink":
                self._alter_sink_offsets(name, cls, config, offsets)
            else:
                self._alter_source_offsets(name, cls, config, offsets)
        if offsets is None:
            return "The offsets for this connector have been reset successfully"
        return "The offsets for this connector have been altered successfully"

    def _alter_source_offsets(
        self, name: str, cls: type[Any], config: dict[str, str], offsets: list[Any] | None
    ) -> None:
        store = self.worker.offsets
        if offsets is None:
            wanted: dict[str, Any] = {
                offset_key(name, partition): None
                for partition, _offset in store.connector_offsets(name)
            }
        else:
            wanted = {}
            for entry in offsets:
                partition, offset = entry.get("partition"), entry.get("offset")
                if not isinstance(partition, dict) or not (
                    offset is None or isinstance(offset, dict)
                ):
                    raise HerderError(
                        400, "Each offset needs a 'partition' object and an 'offset' object or null"
                    )
                wanted[offset_key(name, partition)] = offset
        as_partitions = {k: v for k, v in wanted.items()}
        if not cls().alter_offsets(config, as_partitions):
            raise HerderError(400, f"{cls.__qualname__} does not support altering its offsets")
        store.set(wanted)

    def _alter_sink_offsets(
        self, name: str, cls: type[Any], config: dict[str, str], offsets: list[Any] | None
    ) -> None:
        admin = self.worker.admin()
        group = f"connect-{name}"
        if offsets is None:
            committed = admin.list_consumer_group_offsets(group)
            if committed:
                admin.delete_consumer_group_offsets(group, list(committed))
            return
        alter: dict[KafkaTopicPartition, int] = {}
        delete: list[KafkaTopicPartition] = []
        for entry in offsets:
            partition, offset = entry.get("partition") or {}, entry.get("offset")
            topic, index = partition.get("kafka_topic"), partition.get("kafka_partition")
            if not isinstance(topic, str) or not isinstance(index, int):
                raise HerderError(
                    400,
                    'A sink\'s partition is {"kafka_topic": <string>, "kafka_partition": <int>}',
                )
            tp = KafkaTopicPartition(topic, index)
            if offset is None:
                delete.append(tp)
            elif isinstance(offset, dict) and isinstance(offset.get("kafka_offset"), int):
                alter[tp] = offset["kafka_offset"]
            else:
                raise HerderError(400, 'A sink\'s offset is {"kafka_offset": <int>} or null')
        requested = {
            TopicPartition(tp.topic, tp.partition): alter.get(tp) for tp in [*alter, *delete]
        }
        if not cls().alter_offsets(config, requested):
            raise HerderError(400, f"{cls.__qualname__} does not support altering its offsets")
        if alter:
            admin.alter_consumer_group_offsets(group, alter)
        if delete:
            admin.delete_consumer_group_offsets(group, delete)

    def delete_connector(self, name: str) -> None:
        with self._lock:
            self._config(name)
            self._stop_connector(name)
            del self._configs[name]
            self._targets.pop(name, None)
            self._task_configs.pop(name, None)
            self.worker.statuses.forget(name)
            self.worker.reset_topics(name)

    def set_target_state(self, name: str, target: TargetState) -> None:
        with self._lock:
            self._config(name)
            previous = self._targets[name]
            self._targets[name] = target
            if target is TargetState.STOPPED:
                self._stop_tasks(name)
                for task in range(len(self._task_configs.get(name, ()))):
                    self.worker.statuses.forget_task(TaskId(name, task))
                self._task_configs[name] = []
                connector = self.worker.connectors.get(name)
                if connector is not None:
                    connector.set_target(target)
                return
            if previous is TargetState.STOPPED:
                # Resuming a stopped connector starts it and its tasks again.
                self.worker.stop_connector(name)
                self._start_connector(name)
                return
            connector = self.worker.connectors.get(name)
            if connector is not None:
                connector.set_target(target)
            for task_id in self.worker.connector_task_ids(name):
                self.worker.set_task_target(task_id, target)

    def restart_connector(
        self, name: str, include_tasks: bool, only_failed: bool
    ) -> dict[str, Any]:
        with self._lock:
            self._config(name)
            statuses = self.worker.statuses
            connector_status = statuses.connector(name)
            connector_failed = (
                connector_status is not None and connector_status.state is State.FAILED
            )
            restart_connector = connector_failed or not only_failed
            tasks = []
            if include_tasks:
                for i in range(len(self._task_configs.get(name, ()))):
                    status = statuses.task(TaskId(name, i))
                    if not only_failed or (status is not None and status.state is State.FAILED):
                        tasks.append(TaskId(name, i))
            result = self.connector_status(name)
            if restart_connector:
                result["connector"]["state"] = State.RESTARTING.value
                result["connector"].pop("trace", None)
            restarting = {t.task for t in tasks}
            for task in result["tasks"]:
                if task["id"] in restarting:
                    task["state"] = State.RESTARTING.value
                    task.pop("trace", None)
            if restart_connector and include_tasks and not only_failed:
                self._stop_connector(name)
                self._start_connector(name)
                return result
            if restart_connector:
                self.worker.stop_connector(name)
                config = self._configs[name]
                self.worker.start_connector(
                    name, config, self._targets[name], self._request_reconfiguration
                )
            for task_id in tasks:
                self._restart_task(task_id)
            return result

    def restart_task(self, name: str, task: int) -> None:
        with self._lock:
            self._config(name)
            if not 0 <= task < len(self._task_configs.get(name, ())):
                raise HerderError(404, f"Task {name}-{task} not found")
            self._restart_task(TaskId(name, task))

    def _restart_task(self, task_id: TaskId) -> None:
        self.worker.stop_tasks([task_id])
        name = task_id.connector
        self.worker.start_task(
            task_id,
            self._configs[name],
            self._task_configs[name][task_id.task],
            self._targets[name],
        )

    def stop(self) -> None:
        with self._lock:
            self.worker.stop()
