"""Kafka Connect's REST API over a :class:`~.herder.Herder`: the same paths, JSON shapes
and status codes (``/connectors``, ``/connectors/{c}/status`` …), errors as
``{"error_code": <HTTP status>, "message": …}``.  Herder calls block (they start and
stop tasks), so each runs in a thread, never on the event loop.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...version import __version__
from .herder import Herder, HerderError
from .states import TargetState

__all__ = ["create_app"]

log = logging.getLogger("pystream.connect.rest")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error_code": status, "message": message}, status_code=status)


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw else None
    except ValueError as exc:
        raise HerderError(400, f"Request body is not valid JSON: {exc}") from None


def _config_object(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise HerderError(400, f"{what} must be a JSON object of string settings")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false"):
        raise HerderError(400, f"query parameter {name} must be true or false, got {value!r}")
    return value == "true"


def _task(request: Request) -> int:
    raw = request.path_params["task"]
    try:
        return int(raw)
    except ValueError:
        raise HerderError(404, f"Task {request.path_params['connector']}-{raw} not found") from None


def create_app(herder: Herder) -> Starlette:
    """The Connect REST app for ``herder``."""

    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        return await run_in_threadpool(fn, *args)

    async def root(request: Request) -> Response:
        return JSONResponse(
            {"version": __version__, "commit": "pystream", "kafka_cluster_id": None}
        )

    async def list_connectors(request: Request) -> Response:
        names = await call(herder.connectors)
        expand = request.query_params.getlist("expand")
        if not expand:
            return JSONResponse(names)
        out: dict[str, Any] = {}
        for name in names:
            entry: dict[str, Any] = {}
            try:
                if "status" in expand:
                    entry["status"] = await call(herder.connector_status, name)
                if "info" in expand:
                    entry["info"] = await call(herder.connector_info, name)
            except HerderError:
                continue  # deleted meanwhile
            out[name] = entry
        return JSONResponse(out)

    async def create_connector(request: Request) -> Response:
        body = await _body(request)
        if not isinstance(body, dict):
            raise HerderError(400, 'Request body must be {"name": ..., "config": {...}}')
        config = _config_object(body.get("config") or {}, "config")
        name = body.get("name") or config.get("name")
        if not isinstance(name, str) or not name.strip():
            raise HerderError(400, 'Connector name must be given as "name"')
        name = name.strip()
        _created, info = await call(herder.put_connector_config, name, config, False)
        return JSONResponse(info, status_code=201, headers={"Location": f"/connectors/{name}"})

    async def get_connector(request: Request) -> Response:
        return JSONResponse(await call(herder.connector_info, request.path_params["connector"]))

    async def delete_connector(request: Request) -> Response:
        await call(herder.delete_connector, request.path_params["connector"])
        return Response(status_code=204)

    async def get_config(request: Request) -> Response:
        return JSONResponse(await call(herder.connector_config, request.path_params["connector"]))

    async def put_config(request: Request) -> Response:
        name = request.path_params["connector"]
        config = _config_object(await _body(request), "The request body")
        created, info = await call(herder.put_connector_config, name, config, True)
        if created:
            return JSONResponse(info, status_code=201, headers={"Location": f"/connectors/{name}"})
        return JSONResponse(info)

    async def status(request: Request) -> Response:
        return JSONResponse(await call(herder.connector_status, request.path_params["connector"]))

    def target(state: TargetState, code: int) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            await call(herder.set_target_state, request.path_params["connector"], state)
            return Response(status_code=code)

        return handler

    async def restart(request: Request) -> Response:
        include_tasks = _flag(request, "includeTasks")
        only_failed = _flag(request, "onlyFailed")
        result = await call(
            herder.restart_connector, request.path_params["connector"], include_tasks, only_failed
        )
        if not include_tasks and not only_failed:
            return Response(status_code=204)
        return JSONResponse(result, status_code=202)

    async def tasks(request: Request) -> Response:
        return JSONResponse(await call(herder.task_configs, request.path_params["connector"]))

    async def task_status(request: Request) -> Response:
        task = _task(request)
        return JSONResponse(await call(herder.task_status, request.path_params["connector"], task))

    async def task_restart(request: Request) -> Response:
        task = _task(request)
        await call(herder.restart_task, request.path_params["connector"], task)
        return Response(status_code=204)

    async def topics(request: Request) -> Response:
        name = request.path_params["connector"]
        return JSONResponse({name: {"topics": await call(herder.connector_topics, name)}})

    async def topics_reset(request: Request) -> Response:
        await call(herder.reset_connector_topics, request.path_params["connector"])
        return Response(status_code=202)

    async def offsets(request: Request) -> Response:
        found = await call(herder.connector_offsets, request.path_params["connector"])
        return JSONResponse({"offsets": found})

    async def plugins(request: Request) -> Response:
        only = request.query_params.get("connectorsOnly", "true").lower() != "false"
        return JSONResponse(await call(herder.plugins, only))

    async def validate(request: Request) -> Response:
        config = _config_object(await _body(request), "The request body")
        plugin = request.path_params["plugin"]
        given = config.get("connector.class")
        if given and given.rsplit(".", 1)[-1] != plugin.rsplit(".", 1)[-1]:
            raise HerderError(
                400, f"Connector class {given} in the config does not match the path's {plugin}"
            )
        return JSONResponse(await call(herder.validate, plugin, config))

    async def herder_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HerderError)
        return _error(exc.status, exc.message)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, f"{type(exc).__name__}: {exc}")

    c = "/connectors/{connector}"
    routes = [
        Route("/", root, methods=["GET"]),
        Route("/connectors", list_connectors, methods=["GET"]),
        Route("/connectors", create_connector, methods=["POST"]),
        Route(c, get_connector, methods=["GET"]),
        Route(c, delete_connector, methods=["DELETE"]),
        Route(c + "/config", get_config, methods=["GET"]),
        Route(c + "/config", put_config, methods=["PUT"]),
        Route(c + "/status", status, methods=["GET"]),
        Route(c + "/pause", target(TargetState.PAUSED, 202), methods=["PUT"]),
        Route(c + "/resume", target(TargetState.STARTED, 202), methods=["PUT"]),
        Route(c + "/stop", target(TargetState.STOPPED, 204), methods=["PUT"]),
        Route(c + "/restart", restart, methods=["POST"]),
        Route(c + "/tasks", tasks, methods=["GET"]),
        Route(c + "/tasks/{task}/status", task_status, methods=["GET"]),
        Route(c + "/tasks/{task}/restart", task_restart, methods=["POST"]),
        Route(c + "/topics", topics, methods=["GET"]),
        Route(c + "/topics/reset", topics_reset, methods=["PUT"]),
        Route(c + "/offsets", offsets, methods=["GET"]),
        Route("/connector-plugins", plugins, methods=["GET"]),
        Route("/connector-plugins/{plugin}/config/validate", validate, methods=["PUT"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            HerderError: herder_error,
            HTTPException: http_error,
            Exception: internal_error,
        },
    )
