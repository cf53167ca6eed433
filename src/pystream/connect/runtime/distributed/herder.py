"""The distributed herder (Kafka's ``DistributedHerder``) and ``run_distributed``.

Connector configs and target states are changed by writing the config topic (any
worker takes the REST call, writes, and reads the topic to its end before answering);
every worker follows the topic.  The group's leader deals connectors and tasks out
round-robin (:func:`.protocol.round_robin`) and rebalances when the set of connectors
or their task configs change.  The worker running a connector computes its task
configs and writes them (``task-*`` then ``commit-*``).  Eager protocol: a worker
stops everything it runs before it rejoins, then starts what it was given.

Everything that starts or stops connectors and tasks runs on one herder thread, in
order; the REST API's calls and the group member's callbacks hand work to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ....client.config import ClientConfig
from ....client.core import ClientCore
from ....rest.server import RunningProxy
from ...api import ConfigError
from ..config import WorkerConfig
from ..herder import HerderError, StandaloneHerder
from ..standalone import parse_listener, serve_rest
from ..states import State, TargetState, TaskId
from ..worker import Worker
from .member import ConnectGroupMember, Members
from .protocol import (
    Assignment,
    WorkerMetadata,
    decode_assignment,
    decode_metadata,
    encode_assignment,
    encode_metadata,
    round_robin,
)
from .stores import (
    ConfigChange,
    ConfigSnapshot,
    KafkaConfigBackingStore,
    KafkaOffsetBackingStore,
    KafkaStatusBackingStore,
)

__all__ = ["DistributedHerder", "DistributedWorker", "run_distributed"]

log = logging.getLogger("pystream.connect.distributed")

FORWARD_TIMEOUT = 30.0
RETRY_BACKOFF = 1.0
# Kafka's answer while the owner of a connector or task is not known.
REBALANCING = "Cannot complete request because of a conflicting operation (e.g. worker rebalance)"


class DistributedWorker(Worker):
    """A worker whose connectors' active topics are in the status topic, so that any
    worker answers ``GET /connectors/{c}/topics`` for tasks anywhere."""

    statuses: KafkaStatusBackingStore

    def record_topic(self, connector: str, topic: str) -> None:
        super().record_topic(connector, topic)
        self.statuses.put_topic(connector, topic)

    def connector_topics(self, connector: str) -> list[str]:
        return self.statuses.topics(connector)

    def reset_topics(self, connector: str) -> None:
        super().reset_topics(connector)
        self.statuses.reset_topics(connector)


class DistributedHerder(StandaloneHerder):
    """The herder of one worker of a Connect group (see the module docstring).

    The read side (``connectors``, ``connector_info``, ``connector_status`` ...) is the
    standalone herder's, over the config topic's snapshot and the status topic."""

    def __init__(self, worker: Worker, config_store: KafkaConfigBackingStore, url: str) -> None:
        super().__init__(worker)
        self.config_store = config_store
        self.url = url
        self.executor = concurrent.futures.ThreadPoolExecutor(1, "connect-herder")
        self.member: ConnectGroupMember | None = None
        self.leader_url = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.owned_connectors: set[str] = set()
        self.owned_tasks: set[TaskId] = set()
        # The leader's last assignment: connectors and their task configs.
        self._assigned: dict[str, list[dict[str, str]]] | None = None
        self._applied_targets: dict[str, TargetState] = {}
        config_store.on_change = self._config_changed

    # The standalone herder's tables are the config topic's (a fresh copy per read, so
    # that the log's thread never changes one under a reader); writes go to the topic.

    @property  # type: ignore[override]
    def _configs(self) -> dict[str, dict[str, str]]:
        return self.config_store.snapshot().connectors

    @_configs.setter
    def _configs(self, value: Any) -> None:
        pass

    @property  # type: ignore[override]
    def _targets(self) -> dict[str, TargetState]:
        return self.config_store.snapshot().targets

    @_targets.setter
    def _targets(self, value: Any) -> None:
        pass

    @property  # type: ignore[override]
    def _task_configs(self) -> dict[str, list[dict[str, str]]]:
        return self.config_store.snapshot().tasks

    @_task_configs.setter
    def _task_configs(self, value: Any) -> None:
        pass

    def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the herder thread and wait for it."""
        return self.executor.submit(fn, *args).result()

    # -- REST: changes go through the config topic --------------------------------------

    def put_connector_config(
        self, name: str, config: Mapping[str, str], allow_replace: bool
    ) -> tuple[bool, dict[str, Any]]:
        config = self._named_config(name, config)
        self.config_store.read_to_end()  # "exists" as of now, not as of the last poll
        exists = name in self._configs
        if exists and not allow_replace:
            raise HerderError(409, f"Connector {name} already exists")
        self.config_store.put_connector_config(
            name, config, None if exists else TargetState.STARTED
        )
        self.config_store.read_to_end()
        return not exists, self.connector_info(name)

    def delete_connector(self, name: str) -> None:
        self._config(name)
        self.config_store.remove_connector(name)
        self.config_store.read_to_end()

    def set_target_state(self, name: str, target: TargetState) -> None:
        self._config(name)
        self.config_store.put_target_state(name, target)
        self.config_store.read_to_end()

    def restart_connector(
        self, name: str, include_tasks: bool, only_failed: bool
    ) -> dict[str, Any]:
        result = self.connector_status(name)
        connector_failed = result["connector"]["state"] == State.FAILED.value
        if connector_failed or not only_failed:
            result["connector"]["state"] = State.RESTARTING.value
            result["connector"].pop("trace", None)
            if name in self.owned_connectors:
                self._run(self._restart_owned_connector, name)
            else:
                self._forward(
                    result["connector"]["worker_id"], f"/connectors/{quote(name)}/restart"
                )
        if include_tasks:
            for task in result["tasks"]:
                if only_failed and task["state"] != State.FAILED.value:
                    continue
                task["state"] = State.RESTARTING.value
                task.pop("trace", None)
                self.restart_task(name, task["id"])
        return result

    def restart_task(self, name: str, task: int) -> None:
        self._config(name)
        if not 0 <= task < len(self._task_configs.get(name, ())):
            raise HerderError(404, f"Task {name}-{task} not found")
        task_id = TaskId(name, task)
        if task_id in self.owned_tasks:
            self._run(self._restart_task, task_id)
            return
        self._forward(
            self.task_status(name, task)["worker_id"],
            f"/connectors/{quote(name)}/tasks/{task}/restart",
        )

    def _forward(self, worker_id: str, path: str) -> None:
        """Ask the worker running it (as Kafka forwards to the owner)."""
        if not worker_id or worker_id == self.worker_id:
            raise HerderError(409, REBALANCING)
        try:
            response = httpx.post(f"http://{worker_id}{path}", timeout=FORWARD_TIMEOUT)
        except httpx.HTTPError as exc:
            raise HerderError(
                409, f"cannot forward the request to worker {worker_id}: {exc}"
            ) from None
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise HerderError(response.status_code, message)

    def stop(self) -> None:
        self._run(self._revoke)
        self.executor.shutdown(wait=True)

    # -- the herder thread --------------------------------------------------------------

    def _config_changed(self, change: ConfigChange) -> None:
        """From the config log's thread: handle on the herder thread, in order."""
        try:
            self.executor.submit(self._handle_change, change)
        except RuntimeError:
            pass  # the worker is stopping: nothing more to start or stop

    def _handle_change(self, change: ConfigChange) -> None:
        try:
            self._apply_change(change)
        except Exception:
            # The herder thread goes on with the next change; the statuses say the rest.
            log.exception("applying the config change %s failed", change)

    def _apply_change(self, change: ConfigChange) -> None:
        kind, name = change
        snap = self.config_store.snapshot()
        member = self.member
        if member is not None and member.is_leader and self._assigned is not None:
            # Only what the last assignment did not already cover moves work.
            if kind in ("connector", "tasks") and self._dealt(snap) != self._assigned:
                self._rejoin(f"the configuration of {name} changed")
        if kind == "connector":
            if name not in snap.connectors:
                self._stop_local(name)
                if name in self.owned_connectors:
                    self.worker.statuses.forget(name)
                    self.worker.reset_topics(name)
                self.owned_connectors.discard(name)
            else:
                if name in self.owned_connectors:
                    self._restart_owned_connector(name)
                # Tasks take converters, transforms and client overrides from the
                # connector's config: restart them even if their own configs stay.
                for task in sorted(t for t in self.owned_tasks if t.connector == name):
                    self._restart_task(task)
        elif kind == "target" and name in snap.connectors:
            self._apply_target(name, snap.targets.get(name, TargetState.STARTED))

    @staticmethod
    def _dealt(snap: ConfigSnapshot) -> dict[str, list[dict[str, str]]]:
        """What an assignment made from ``snap`` covers."""
        return {name: snap.tasks.get(name, []) for name in snap.connectors}

    def _rejoin(self, reason: str) -> None:
        member, loop = self.member, self.loop
        if member is not None and loop is not None:
            loop.call_soon_threadsafe(member.request_rejoin, reason)

    def _stop_local(self, name: str) -> None:
        tasks = [t for t in self.owned_tasks if t.connector == name]
        self.worker.stop_tasks(tasks)
        self.worker.stop_connector(name)

    def _apply_target(self, name: str, target: TargetState) -> None:
        previous = self._applied_targets.get(name)
        self._applied_targets[name] = target
        tasks = sorted(t for t in self.owned_tasks if t.connector == name)
        if target is TargetState.STOPPED:
            self.worker.stop_tasks(tasks)
            for task in tasks:
                self.worker.statuses.forget_task(task)
        else:
            for task in tasks:
                self.worker.set_task_target(task, target)
        if name not in self.owned_connectors:
            return
        connector = self.worker.connectors.get(name)
        if previous is TargetState.STOPPED and target is not TargetState.STOPPED:
            self._restart_owned_connector(name)
        elif connector is not None:
            connector.set_target(target)
            if target is TargetState.STOPPED and self._task_configs.get(name):
                # A stopped connector has no tasks (Kafka writes an empty set).
                self._write_task_configs(name, [])

    def _start_owned_connector(self, name: str) -> None:
        snap = self.config_store.snapshot()
        config = snap.connectors.get(name)
        if config is None:
            return
        target = snap.targets.get(name, TargetState.STARTED)
        self._applied_targets[name] = target
        if not self.worker.start_connector(name, config, target, self._request_reconfiguration):
            return
        if target is TargetState.STOPPED:
            if snap.tasks.get(name):
                self._write_task_configs(name, [])
            return
        self._reconfigure(name)

    def _restart_owned_connector(self, name: str) -> None:
        self.worker.stop_connector(name)
        self._start_owned_connector(name)

    def _reconfigure(self, name: str) -> None:
        """Ask the connector for its task configs; write them if they changed."""
        connector = self.worker.connectors.get(name)
        if connector is None or name not in self.owned_connectors:
            return
        try:
            configs = connector.task_configs()
        except Exception as exc:
            connector.fail(exc)
            return
        if configs != self._task_configs.get(name):
            log.info("%s: writing %d task configs", name, len(configs))
            self._write_task_configs(name, configs)

    def _write_task_configs(self, name: str, configs: list[dict[str, str]]) -> None:
        """The leader writes task configs (Kafka's rule); others send them to it with
        Kafka's internal ``POST /connectors/{c}/tasks``, and try again shortly if the
        leader cannot be reached (it may be moving)."""
        member = self.member
        if member is None or member.is_leader:
            self.config_store.put_task_configs(name, configs)
            return
        try:
            response = httpx.post(
                f"{self.leader_url}/connectors/{quote(name)}/tasks",
                json=configs,
                timeout=FORWARD_TIMEOUT,
            )
            failed = response.status_code >= 400
            reason = response.text
        except httpx.HTTPError as exc:
            failed, reason = True, str(exc)
        if failed:
            log.warning("%s: the leader did not take the task configs (%s); retrying", name, reason)
            timer = threading.Timer(RETRY_BACKOFF, self._request_reconfiguration, [name])
            timer.daemon = True
            timer.start()

    def accept_task_configs(self, name: str, configs: Any) -> None:
        """``POST /connectors/{c}/tasks`` from the worker running the connector: the
        leader writes them; another worker answers 409."""
        member = self.member
        if member is None or not member.is_leader:
            raise HerderError(409, "Cannot write task configs: this worker is not the leader")
        self._config(name)
        if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
            raise HerderError(400, "The body must be a list of task configs (JSON objects)")
        self.config_store.put_task_configs(
            name, [{str(k): str(v) for k, v in c.items()} for c in configs]
        )

    def _request_reconfiguration(self, name: str) -> None:
        # From the connector's thread (or a retry timer).
        try:
            self.executor.submit(self._reconfigure, name)
        except RuntimeError:
            pass  # the worker is stopping

    def _restart_task(self, task_id: TaskId) -> None:
        # Not after its connector's task configs shrank: a rebalance is coming.
        if task_id in self.owned_tasks and task_id.task < len(
            self._task_configs.get(task_id.connector, ())
        ):
            super()._restart_task(task_id)

    def _revoke(self) -> None:
        """Eager: stop every task, then every connector this worker runs."""
        self.worker.stop_tasks(sorted(self.worker.tasks))
        for name in list(self.worker.connectors):
            self.worker.stop_connector(name)
        self.owned_connectors.clear()
        self.owned_tasks.clear()

    def assign(self, members: Members) -> dict[str, bytes]:
        """The leader's job: every connector and task, round-robin over the members."""
        self.config_store.read_to_end()
        snap = self.config_store.snapshot()
        urls = {}
        for member_id, raw in members:
            meta = decode_metadata(raw)
            urls[member_id] = meta.url
            if meta.config_offset > snap.offset:
                log.warning(
                    "member %s has read the config topic further than the leader", member_id
                )
        connectors = list(snap.connectors)
        tasks = [
            TaskId(name, i)
            for name, configs in snap.tasks.items()
            if name in snap.connectors
            for i in range(len(configs))
        ]
        self._assigned = self._dealt(snap)
        member = self.member
        assert member is not None
        dealt = round_robin(urls, connectors, tasks)
        log.info(
            "leader: %d connectors and %d tasks over %d workers",
            len(connectors),
            len(tasks),
            len(urls),
        )
        return {
            member_id: encode_assignment(
                Assignment(member.member_id, self.url, snap.offset, owned[0], owned[1])
            )
            for member_id, owned in dealt.items()
        }

    def assigned(self, generation: int, raw: bytes) -> None:
        """Start what this worker was given (after reading the config topic as far as
        the leader had)."""
        assignment = decode_assignment(raw)
        self.leader_url = assignment.leader_url
        if self.config_store.offset < assignment.config_offset:
            self.config_store.read_to_end()
        statuses = self.worker.statuses
        if isinstance(statuses, KafkaStatusBackingStore):
            statuses.generation = generation
        member = self.member
        if member is not None and not member.is_leader:
            self._assigned = None
        snap = self.config_store.snapshot()
        log.info(
            "generation %d: assigned connectors %s and tasks %s",
            generation,
            assignment.connectors,
            [str(t) for t in assignment.tasks],
        )
        self.owned_connectors = set(assignment.connectors)
        self.owned_tasks = set(assignment.tasks)
        for name in assignment.connectors:
            self._start_owned_connector(name)
        for task in sorted(assignment.tasks):
            configs = snap.tasks.get(task.connector, [])
            if task.connector not in snap.connectors or task.task >= len(configs):
                continue
            self.worker.start_task(
                task,
                snap.connectors[task.connector],
                configs[task.task],
                snap.targets.get(task.connector, TargetState.STARTED),
            )


def internal_tasks_route(herder: DistributedHerder) -> Route:
    """Kafka's internal ``POST /connectors/{connector}/tasks`` (task configs for the
    leader to write)."""

    async def put_task_configs(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error_code": 400, "message": "The body is not JSON"}, 400)
        name = request.path_params["connector"]
        try:
            await asyncio.to_thread(herder.accept_task_configs, name, body)
        except HerderError as exc:
            return JSONResponse({"error_code": exc.status, "message": exc.message}, exc.status)
        return Response(status_code=204)

    return Route("/connectors/{connector}/tasks", put_task_configs, methods=["POST"])


def advertised_url(config: WorkerConfig, bound: str) -> str:
    """``rest.advertised.host.name``/``rest.advertised.port`` over the bound address."""
    host, _, port = bound.rpartition(":")
    host = config.get("rest.advertised.host.name") or host
    port = config.get("rest.advertised.port") or port
    return f"http://{host}:{port}"


async def run_distributed(
    worker_props: Mapping[str, str], on_listening: Callable[[str], None]
) -> None:
    """Serve as one worker of ``group.id`` until SIGTERM/SIGINT, then stop the tasks
    (offsets committed) and leave the group."""
    config = WorkerConfig(dict(worker_props))
    group_id = (config.group_id or "").strip()
    if not group_id:
        raise ConfigError(
            "group.id is required in distributed mode: workers with the same group.id "
            "share connectors"
        )
    config.exactly_once_source  # noqa: B018 - validates the setting now
    session_timeout = config._int("session.timeout.ms", 10_000)
    heartbeat_interval = config._int("heartbeat.interval.ms", 3_000)
    rebalance_timeout = config._int("rebalance.timeout.ms", 60_000)
    host, port = parse_listener(config.listeners[0])
    client_id = f"connect-{group_id}"
    config_store = KafkaConfigBackingStore(config, f"{client_id}-configs")
    statuses = KafkaStatusBackingStore(config, f"{client_id}-statuses")
    offsets = KafkaOffsetBackingStore(config, f"{client_id}-offsets")
    worker = DistributedWorker(config, "", offsets, statuses)
    herder = DistributedHerder(worker, config_store, "")
    running: RunningProxy | None = None
    core: ClientCore | None = None
    member: ConnectGroupMember | None = None
    try:
        for store in (config_store, statuses, offsets):
            await asyncio.to_thread(store.start)
        running = await serve_rest(herder, host, port, [internal_tasks_route(herder)])
        assert running.url is not None
        bound = running.url.split("://", 1)[1]
        url = advertised_url(config, bound)
        worker.worker_id = herder.worker_id = url.split("://", 1)[1]
        herder.url = url
        loop = asyncio.get_running_loop()
        herder.loop = loop
        settings = {"client_id": f"{client_id}-member", **config.admin_settings()}
        core = ClientCore(ClientConfig.from_kwargs(config.bootstrap_servers, **settings))
        await core.start()

        def on_herder(fn: Callable[..., Any], *args: Any) -> Any:
            return loop.run_in_executor(herder.executor, fn, *args)

        member = herder.member = ConnectGroupMember(
            core,
            group_id,
            session_timeout_ms=session_timeout,
            rebalance_timeout_ms=rebalance_timeout,
            heartbeat_interval_ms=heartbeat_interval,
            metadata=lambda: encode_metadata(WorkerMetadata(url, config_store.offset)),
            assign=lambda members: on_herder(herder.assign, members),
            assigned=lambda generation, raw: on_herder(herder.assigned, generation, raw),
            revoke=lambda: on_herder(herder._revoke),
        )
        member.start()
        on_listening(url)
        await running.task
    finally:
        if running is not None and not running.task.done():
            await running.stop()
        log.info("stopping connectors and tasks, then leaving the group")
        if member is not None:
            await member.pause()
        await asyncio.to_thread(herder.stop)
        if member is not None:
            await member.leave()
        if core is not None:
            await core.close()
        for store in (config_store, statuses):
            await asyncio.to_thread(store.stop)
        await asyncio.to_thread(offsets.close)
