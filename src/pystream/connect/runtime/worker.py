"""The worker: runs connectors and their tasks in this process (Kafka's ``Worker``).

It builds each task's clients (a producer per source task, a consumer per sink task
in group ``connect-<connector>``), converters, transforms and error handler, and
tracks statuses.  What runs where is decided by the herder; the worker only does it.
Every connector method runs on the connector's own thread (an executor of one).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Mapping
from typing import Any

from ...client import AdminClient, Consumer, NewTopic, Producer
from ...errors import TopicAlreadyExistsError
from ..api import (
    ConfigError,
    Connector,
    ConnectorContext,
    ExactlyOnceSupport,
    SinkConnector,
    SinkTask,
    SourceConnector,
    SourceTask,
    Task,
)
from .config import (
    SINK_CONFIG_DEF,
    SOURCE_CONFIG_DEF,
    WorkerConfig,
    check_sink_topics,
    prefixed,
)
from .errors import DeadLetterQueue, ErrorHandler
from .loading import load_connector, make_converter, make_transforms
from .offsets import OffsetBackingStore, read_offsets_topic
from .sink_task import SinkTaskRunner
from .source_task import SourceTaskRunner, TransactionSettings
from .states import State, Status, StatusStore, TargetState, TaskId, trace_of
from .task import Converters, WorkerTask

__all__ = ["Worker", "WorkerConnector", "connector_type", "parse_connector_config"]

log = logging.getLogger("pystream.connect.worker")

# How long a connector's start/stop/task_configs may take before the caller gives up.
CONNECTOR_CALL_TIMEOUT = 30.0
TASK_STOP_TIMEOUT = 5.0


def connector_type(cls: type[Connector]) -> str:
    """``source``, ``sink`` or ``unknown`` (Kafka's ``type`` field)."""
    if issubclass(cls, SourceConnector):
        return "source"
    if issubclass(cls, SinkConnector):
        return "sink"
    return "unknown"


def parse_connector_config(props: Mapping[str, Any]) -> tuple[type[Connector], dict[str, Any]]:
    """The connector class and the worker-side settings, parsed; raises ConfigError."""
    name = props.get("connector.class")
    if not name:
        raise ConfigError(
            'Missing required configuration "connector.class" which has no default value.'
        )
    cls = load_connector(str(name))
    kind = connector_type(cls)
    definition = SINK_CONFIG_DEF if kind == "sink" else SOURCE_CONFIG_DEF
    parsed = definition.parse(props)
    if kind == "sink":
        check_sink_topics(props)
    return cls, parsed


class _ConnectorContext(ConnectorContext):
    def __init__(self, connector: WorkerConnector) -> None:
        self._connector = connector

    def request_task_reconfiguration(self) -> None:
        callback = self._connector.on_reconfigure
        if callback is not None:
            callback(self._connector.name)

    def raise_error(self, error: Exception) -> None:
        self._connector.fail(error)


class WorkerConnector:
    """One connector instance on its own thread."""

    def __init__(
        self, name: str, cls: type[Connector], props: dict[str, str], worker: Worker
    ) -> None:
        self.name = name
        self.cls = cls
        self.props = props
        self.worker = worker
        self.connector = cls()
        self.started = False
        self.on_reconfigure: Any = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, f"connect-connector-{name}")

    def call(self, method: str, *args: Any) -> Any:
        """Run one of the connector's methods on its thread and wait."""
        future = self._executor.submit(getattr(self.connector, method), *args)
        return future.result(CONNECTOR_CALL_TIMEOUT)

    def start(self, target: TargetState) -> bool:
        """Start (unless the target is STOPPED); True if it runs."""
        status = self.worker.statuses
        try:
            self.connector.initialize(_ConnectorContext(self))
            if target is not TargetState.STOPPED:
                self.call("start", dict(self.props))
                self.started = True
        except Exception as exc:
            self.fail(exc)
            return False
        state = {
            TargetState.STARTED: State.RUNNING,
            TargetState.PAUSED: State.PAUSED,
            TargetState.STOPPED: State.STOPPED,
        }[target]
        status.put_connector(self.name, Status(state, self.worker.worker_id))
        return True

    def fail(self, error: BaseException) -> None:
        log.error("connector %s failed", self.name, exc_info=error)
        self.worker.statuses.put_connector(
            self.name, Status(State.FAILED, self.worker.worker_id, trace_of(error))
        )

    def set_target(self, target: TargetState) -> None:
        if target is TargetState.STOPPED:
            self.stop()
            self.worker.statuses.put_connector(
                self.name, Status(State.STOPPED, self.worker.worker_id)
            )
            return
        if not self.started:
            self.start(target)
            return
        current = self.worker.statuses.connector(self.name)
        if current is not None and current.state is State.FAILED:
            return
        state = State.PAUSED if target is TargetState.PAUSED else State.RUNNING
        self.worker.statuses.put_connector(self.name, Status(state, self.worker.worker_id))

    def task_configs(self) -> list[dict[str, str]]:
        max_tasks = int(self.props.get("tasks.max", "1"))
        configs = self.call("task_configs", max_tasks)
        if len(configs) > max_tasks:
            raise ConfigError(
                f"connector {self.name} made {len(configs)} task configs, more than "
                f"tasks.max={max_tasks}"
            )
        return [{str(k): str(v) for k, v in c.items()} for c in configs]

    def stop(self) -> None:
        if self.started:
            self.started = False
            try:
                self.call("stop")
            except Exception:
                log.exception("connector %s: error while stopping", self.name)

    def shutdown(self) -> None:
        self.stop()
        self._executor.shutdown(wait=False)


class Worker:
    """Runs connectors and tasks (see the module docstring)."""

    def __init__(
        self,
        config: WorkerConfig,
        worker_id: str,
        offsets: OffsetBackingStore,
        statuses: StatusStore,
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self.offsets = offsets
        self.statuses = statuses
        self.connectors: dict[str, WorkerConnector] = {}
        self.tasks: dict[TaskId, WorkerTask] = {}
        self._topics_lock = threading.Lock()
        self.active_topics: dict[str, set[str]] = {}
        self._admin: AdminClient | None = None
        self._admin_lock = threading.Lock()

    # -- shared clients -----------------------------------------------------------------

    def admin(self) -> AdminClient:
        with self._admin_lock:
            if self._admin is None:
                self._admin = AdminClient(
                    self.config.bootstrap_servers, **self.config.admin_settings()
                )
            return self._admin

    def list_topics(self) -> list[str]:
        return self.admin().list_topics()

    def record_topic(self, connector: str, topic: str) -> None:
        """A connector used ``topic`` (``GET /connectors/{c}/topics``)."""
        with self._topics_lock:
            self.active_topics.setdefault(connector, set()).add(topic)

    def connector_topics(self, connector: str) -> list[str]:
        with self._topics_lock:
            return sorted(self.active_topics.get(connector, ()))

    def reset_topics(self, connector: str) -> None:
        with self._topics_lock:
            self.active_topics.pop(connector, None)

    # -- connectors ---------------------------------------------------------------------

    def start_connector(
        self, name: str, props: dict[str, str], target: TargetState, on_reconfigure: Any = None
    ) -> bool:
        """Create and start the connector; False (and FAILED status) if it could not."""
        try:
            cls, _parsed = parse_connector_config(props)
        except Exception as exc:
            self.statuses.put_connector(name, Status(State.FAILED, self.worker_id, trace_of(exc)))
            return False
        connector = WorkerConnector(name, cls, props, self)
        connector.on_reconfigure = on_reconfigure
        self.connectors[name] = connector
        return connector.start(target)

    def stop_connector(self, name: str) -> None:
        connector = self.connectors.pop(name, None)
        if connector is not None:
            connector.shutdown()

    # -- tasks --------------------------------------------------------------------------

    def start_task(
        self,
        task_id: TaskId,
        connector_props: dict[str, str],
        task_props: dict[str, str],
        target: TargetState,
    ) -> bool:
        """Build and start one task; False (and FAILED status) if it could not."""
        self.statuses.put_task(task_id, Status(State.UNASSIGNED, self.worker_id))
        try:
            runner = self._build_task(task_id, connector_props, task_props, target)
        except Exception as exc:
            log.error("%s could not start", task_id, exc_info=exc)
            self.statuses.put_task(task_id, Status(State.FAILED, self.worker_id, trace_of(exc)))
            return False
        self.tasks[task_id] = runner
        runner.start()
        return True

    def _build_task(
        self,
        task_id: TaskId,
        connector_props: dict[str, str],
        task_props: dict[str, str],
        target: TargetState,
    ) -> WorkerTask:
        cls, parsed = parse_connector_config(connector_props)
        running = self.connectors.get(task_id.connector)
        task_class: type[Task] = (running.connector if running is not None else cls()).task_class()
        config = self.config

        def converter(which: str, is_key: bool) -> Any:
            name, settings = config.converter_props(which)
            own = connector_props.get(f"{which}.converter")
            if own:
                name, settings = own, prefixed(connector_props, f"{which}.converter.")
            return make_converter(name, settings, is_key)

        converters = Converters(
            converter("key", True), converter("value", False), converter("header", False)
        )
        transforms = make_transforms(connector_props)
        stopping = threading.Event()
        common: dict[str, Any] = dict(
            converters=converters,
            transforms=transforms,
            on_topic=lambda topic: self.record_topic(task_id.connector, topic),
            flush_interval_ms=config.offset_flush_interval_ms,
            flush_timeout_ms=config.offset_flush_timeout_ms,
        )
        task = task_class()
        if isinstance(task, SourceTask):
            producer_settings = config.producer_settings(
                prefixed(connector_props, "producer.override.")
            )
            transactions = None
            if config.exactly_once_source:
                transactions = self._transaction_settings(task_id, cls, connector_props, parsed)
                producer_settings["transactional_id"] = (
                    f"{config.group_id or 'connect'}-{task_id.connector}-{task_id.task}"
                )
            producer = Producer(
                config.bootstrap_servers,
                client_id=f"connector-producer-{task_id}",
                **producer_settings,
            )
            errors = ErrorHandler.from_config(parsed, str(task_id), None, stopping)
            return SourceTaskRunner(
                task_id,
                task,
                task_props,
                self.worker_id,
                self.statuses,
                target,
                errors,
                producer=producer,
                offsets=self.offsets,
                transactions=transactions,
                **common,
            )
        if not isinstance(task, SinkTask):
            raise ConfigError(f"{task_class.__qualname__} is neither a SourceTask nor a SinkTask")
        dlq_producer = None
        dlq = None
        dlq_topic = parsed["errors.deadletterqueue.topic.name"].strip()
        if dlq_topic:
            self._create_topic(
                dlq_topic, 1, parsed["errors.deadletterqueue.topic.replication.factor"], {}
            )
            dlq_producer = Producer(
                config.bootstrap_servers,
                client_id=f"connector-dlq-producer-{task_id}",
                **config.producer_settings(prefixed(connector_props, "producer.override.")),
            )
            dlq = DeadLetterQueue(
                dlq_topic,
                dlq_producer.send,
                task_id.connector,
                task_id.task,
                parsed["errors.deadletterqueue.context.headers.enable"],
            )
        errors = ErrorHandler.from_config(parsed, str(task_id), dlq, stopping)
        consumer_settings = {
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            **config.consumer_settings(prefixed(connector_props, "consumer.override.")),
        }
        consumer = Consumer(
            bootstrap_servers=config.bootstrap_servers,
            group_id=f"connect-{task_id.connector}",
            client_id=f"connector-consumer-{task_id}",
            **consumer_settings,
        )
        return SinkTaskRunner(
            task_id,
            task,
            task_props,
            self.worker_id,
            self.statuses,
            target,
            errors,
            consumer=consumer,
            topics=[t for t in parsed["topics"] if t],
            topics_regex=parsed["topics.regex"].strip(),
            list_topics=self.list_topics,
            dlq_producer=dlq_producer,
            **common,
        )

    def _create_topic(
        self, topic: str, partitions: int, replication_factor: int, configs: dict[str, str]
    ) -> None:
        """Create ``topic`` if it is missing (the DLQ, the offsets topic)."""
        admin = self.admin()
        if topic in admin.list_topics():
            return
        try:
            admin.create_topics(NewTopic(topic, partitions, replication_factor, configs))
        except TopicAlreadyExistsError:
            pass

    def _transaction_settings(
        self,
        task_id: TaskId,
        cls: type[Connector],
        connector_props: dict[str, str],
        parsed: dict[str, Any],
    ) -> TransactionSettings:
        """Exactly-once source support for a task: the offsets topic (created compacted
        if missing), the transaction boundary, and how committed offsets are read."""
        config = self.config
        if str(parsed["exactly.once.support"]).lower() == "required":
            support = cls().exactly_once_support(connector_props)
            if support is not ExactlyOnceSupport.SUPPORTED:
                raise ConfigError(
                    f"exactly.once.support=required but {cls.__qualname__} does not say it "
                    "supports exactly-once delivery: set exactly.once.support=requested"
                )
        topic = config.props.get("offset.storage.topic", "connect-offsets")
        self._create_topic(
            topic,
            int(config.props.get("offset.storage.partitions", "25")),
            int(config.props.get("offset.storage.replication.factor", "-1")),
            {"cleanup.policy": "compact"},
        )
        consumer_settings = config.consumer_settings()

        def consumer() -> Consumer:
            return Consumer(
                bootstrap_servers=config.bootstrap_servers,
                client_id=f"connector-offsets-reader-{task_id}",
                isolation_level="read_committed",
                enable_auto_commit=False,
                **consumer_settings,
            )

        interval = parsed.get("transaction.boundary.interval.ms")
        return TransactionSettings(
            topic,
            str(parsed["transaction.boundary"]).lower(),
            config.offset_flush_interval_ms if interval is None else interval,
            lambda: read_offsets_topic(consumer, topic, task_id.connector),
        )

    def set_task_target(self, task_id: TaskId, target: TargetState) -> None:
        task = self.tasks.get(task_id)
        if task is not None:
            task.transition(target)

    def stop_tasks(self, task_ids: list[TaskId], timeout: float = TASK_STOP_TIMEOUT) -> None:
        """Stop these tasks together and wait for them (each commits its offsets)."""
        runners = [self.tasks.pop(t) for t in task_ids if t in self.tasks]
        for runner in runners:
            runner.stop()
        for runner in runners:
            if not runner.join(timeout):
                log.warning("%s did not stop within %.0f s", runner.id, timeout)

    def connector_task_ids(self, connector: str) -> list[TaskId]:
        return sorted(t for t in self.tasks if t.connector == connector)

    def stop(self) -> None:
        """Stop every task, then every connector; close the shared clients."""
        self.stop_tasks(list(self.tasks))
        for name in list(self.connectors):
            self.stop_connector(name)
        with self._admin_lock:
            if self._admin is not None:
                self._admin.close()
                self._admin = None
