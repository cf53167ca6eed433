"""The REST proxy's ASGI app: Confluent's API v2 routes over pystream's asyncio client.

:func:`create_app` builds a Starlette app whose lifespan starts one shared
producer, one admin client and the consumer-instance registry, and closes them
on shutdown.  Handlers only translate HTTP to client calls: produce in
:mod:`.produce`, consumer instances in :mod:`.consumers`, topic metadata in
:mod:`.topics`, bodies and content types in :mod:`.formats`, errors in
:mod:`.errors`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from pystream.aio import OffsetAndMetadata, TopicPartition

from .clients import ClientPool, kafka_clients
from .config import RestConfig
from .consumers import ConsumerInstance, ConsumerRegistry
from .errors import EXCEPTION_HANDLERS, PARTITION_NOT_FOUND, V2_JSON, RestError
from .formats import (
    INT32_MAX,
    EmbeddedFormat,
    V2Response,
    accepted_format,
    body_json,
    compact_json,
    conversion_error,
    json_int,
    json_list,
    json_object,
    json_str,
    produce_format,
    read_body,
    read_json,
    require_v2_json,
)
from .openapi import openapi_document
from .topics import partition_document
from .v2_records import split_json_records
from .v3 import V3_ROUTES
from .v3_groups import GROUP_ROUTES
from .v3_records import RECORDS_ROUTES

__all__ = ["create_app"]

log = logging.getLogger("pystream.rest")


@dataclass(slots=True)
class ProxyState:
    """What the handlers use, built by the lifespan."""

    config: RestConfig
    clients: ClientPool
    consumers: ConsumerRegistry
    cluster_id: str | None = None  # API v3's, looked up on first use


def _ok(content: Any, media_type: str = V2_JSON) -> Response:
    return V2Response(content, media_type=media_type)


def _no_content() -> Response:
    return Response(status_code=204)


def _state(request: Request) -> ProxyState:
    return request.app.state.proxy


def _partition_param(request: Request) -> int:
    raw = request.path_params["partition"]
    # isdigit alone lets "²" through, which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or int(raw) > INT32_MAX:
        raise RestError(404, PARTITION_NOT_FOUND, f"Partition not found: {raw!r} is not a number")
    return int(raw)


def _query_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) > INT32_MAX:
        raise conversion_error(
            f"query parameter {name} must be an integer in [0, {INT32_MAX}], got {raw!r}"
        )
    return int(raw)


# ---------------------------------------------------------------------- topics


async def list_topics(request: Request) -> Response:
    return _ok(await (await kafka_clients(request)).admin.list_topics())


async def get_topic(request: Request) -> Response:
    kafka = await kafka_clients(request)
    topic = request.path_params["topic"]
    description = await kafka.topics.describe(topic, fresh=True)
    configs = await kafka.admin.describe_configs([("topic", topic)])
    entries = next(iter(configs.values()), {})
    return _ok(
        {
            "name": topic,
            "configs": {name: entry.value for name, entry in sorted(entries.items())},
            "partitions": [partition_document(p) for p in description.partitions],
        }
    )


async def list_partitions(request: Request) -> Response:
    kafka = await kafka_clients(request)
    description = await kafka.topics.describe(request.path_params["topic"], fresh=True)
    return _ok([partition_document(p) for p in description.partitions])


async def get_partition(request: Request) -> Response:
    info = await (await kafka_clients(request)).topics.partition(
        request.path_params["topic"], _partition_param(request)
    )
    return _ok(partition_document(info))


async def partition_offsets(request: Request) -> Response:
    kafka = await kafka_clients(request)
    topic = request.path_params["topic"]
    partition = _partition_param(request)
    await kafka.topics.partition(topic, partition)
    tp = TopicPartition(topic, partition)
    beginning = await kafka.admin.list_offsets({tp: "earliest"})
    end = await kafka.admin.list_offsets({tp: "latest"})
    return _ok({"beginning_offset": beginning[tp], "end_offset": end[tp]})


async def _produce(request: Request) -> dict[str, Any]:
    """A v2 produce request's response document: ``POST /topics/{topic}``, or with the
    ``partition`` path parameter ``POST /topics/{topic}/partitions/{partition}``."""
    kafka = await kafka_clients(request)
    embedded = produce_format(request)
    partition = _partition_param(request) if "partition" in request.path_params else None
    body = await read_body(request, _state(request).config.max_request_body_bytes)
    topic = request.path_params["topic"]
    # Most JSON bodies are split in one Cython pass, their values' text kept as the
    # stored bytes; the rest (and every error) take the parse-and-encode path.
    records = split_json_records(body) if embedded is EmbeddedFormat.JSON else None
    if records is not None:
        return await kafka.produce.produce_records(topic, records, partition)
    return await kafka.produce.produce(topic, body_json(body), embedded, partition)


async def produce_to_topic(request: Request) -> Response:
    return _ok(await _produce(request))


async def produce_to_partition(request: Request) -> Response:
    return _ok(await _produce(request))


# ---------------------------------------------------------------------- consumers


async def _consumer_body(request: Request, *, optional: bool = False) -> Any:
    require_v2_json(request, body_expected=not optional)
    return await read_json(
        request, _state(request).config.max_request_body_bytes, optional=optional
    )


def _partitions(body: Any) -> list[TopicPartition]:
    items = json_list(json_object(body, "the body"), "partitions")
    out = []
    for i, item in enumerate(items):
        where = f"partitions[{i}]"
        item = json_object(item, where)
        out.append(
            TopicPartition(
                json_str(item, "topic", where),
                json_int(item, "partition", where, maximum=INT32_MAX),
            )
        )
    return out


def _offsets(body: Any) -> list[tuple[TopicPartition, int, str]]:
    items = json_list(json_object(body, "the body"), "offsets")
    out = []
    for i, item in enumerate(items):
        where = f"offsets[{i}]"
        item = json_object(item, where)
        tp = TopicPartition(
            json_str(item, "topic", where), json_int(item, "partition", where, maximum=INT32_MAX)
        )
        metadata = item.get("metadata") or ""
        if not isinstance(metadata, str):
            raise conversion_error(f"{where}: 'metadata' must be a string")
        out.append((tp, json_int(item, "offset", where), metadata))
    return out


def _tp_documents(partitions: list[TopicPartition]) -> list[dict[str, Any]]:
    return [{"topic": tp.topic, "partition": tp.partition} for tp in sorted(partitions)]


async def create_instance(request: Request) -> Response:
    state = _state(request)
    group = request.path_params["group"]
    body = await _consumer_body(request, optional=True)
    settings = {} if body is None else json_object(body, "the body")
    kafka = await kafka_clients(request)
    instance = await state.consumers.create(group, settings, kafka.settings, kafka.user)
    base = str(request.base_url).rstrip("/")
    return _ok(
        {
            "instance_id": instance.name,
            "base_uri": f"{base}/consumers/{quote(group, safe='')}/instances/{instance.name}",
        }
    )


async def delete_instance(request: Request) -> Response:
    kafka = await kafka_clients(request)
    await _state(request).consumers.delete(
        request.path_params["group"], request.path_params["name"], kafka.user
    )
    return _no_content()


@asynccontextmanager
async def _use(request: Request) -> AsyncIterator[ConsumerInstance]:
    """The request's consumer instance (its creator's only), locked for the request."""
    kafka = await kafka_clients(request)
    params = request.path_params
    async with _state(request).consumers.use(params["group"], params["name"], kafka.user) as it:
        yield it


async def subscribe(request: Request) -> Response:
    body = json_object(await _consumer_body(request), "the body")
    topics = body.get("topics")
    pattern = body.get("topic_pattern")
    if (topics is None) == (pattern is None):
        raise conversion_error("give either 'topics' (a list of names) or 'topic_pattern'")
    if topics is not None:
        if (
            not isinstance(topics, list)
            or not topics
            or not all(isinstance(t, str) and t for t in topics)
        ):
            raise conversion_error("'topics' must be a non-empty list of topic names")
    elif not isinstance(pattern, str) or not pattern:
        raise conversion_error("'topic_pattern' must be a non-empty regular expression")
    async with _use(request) as instance:
        if topics is None:
            admin = (await kafka_clients(request)).admin
            topics = await ConsumerRegistry.matching_topics(admin, pattern)
        await instance.subscribe(topics)
    return _no_content()


async def get_subscription(request: Request) -> Response:
    async with _use(request) as instance:
        return _ok({"topics": instance.consumer.subscription()})


async def unsubscribe(request: Request) -> Response:
    async with _use(request) as instance:
        await instance.unsubscribe()
    return _no_content()


async def assign(request: Request) -> Response:
    partitions = _partitions(await _consumer_body(request))
    # A partition that does not exist is a 404 now, not an instance that looks up its
    # offsets in vain until it expires (Kafka's consumer would accept it silently).
    topics = (await kafka_clients(request)).topics
    for tp in partitions:
        await topics.partition(tp.topic, tp.partition)
    async with _use(request) as instance:
        await instance.assign(partitions)
    return _no_content()


async def get_assignments(request: Request) -> Response:
    async with _use(request) as instance:
        return _ok({"partitions": _tp_documents(instance.consumer.assignment())})


async def records(request: Request) -> Response:
    state = _state(request)
    timeout_ms = _query_int(request, "timeout")
    max_bytes = _query_int(request, "max_bytes")
    async with _use(request) as instance:
        accepted_format(request, instance.format)
        limit = state.config.consumer_request_max_bytes
        documents = await instance.records(timeout_ms, min(max_bytes or limit, limit))
        return _ok(documents, instance.format.media_type)


async def commit_offsets(request: Request) -> Response:
    body = await _consumer_body(request, optional=True)
    # Confluent commits offset + 1: the body names the last record processed.
    offsets = (
        None
        if body is None or json_object(body, "the body").get("offsets") is None
        else {
            tp: OffsetAndMetadata(offset + 1, metadata) for tp, offset, metadata in _offsets(body)
        }
    )
    async with _use(request) as instance:
        await instance.commit(offsets)
    return _no_content()


async def committed_offsets(request: Request) -> Response:
    partitions = _partitions(await _consumer_body(request))
    async with _use(request) as instance:
        committed = await instance.consumer.committed(partitions)
    return _ok(
        {
            "offsets": [
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "offset": -1 if om is None else om.offset,
                    "metadata": "" if om is None else om.metadata,
                }
                for tp, om in sorted(committed.items())
            ]
        }
    )


async def seek(request: Request) -> Response:
    positions = {tp: offset for tp, offset, _ in _offsets(await _consumer_body(request))}
    async with _use(request) as instance:
        instance.seek(positions)
    return _no_content()


async def seek_to_beginning(request: Request) -> Response:
    partitions = _partitions(await _consumer_body(request))
    async with _use(request) as instance:
        await instance.seek_to(partitions, end=False)
    return _no_content()


async def seek_to_end(request: Request) -> Response:
    partitions = _partitions(await _consumer_body(request))
    async with _use(request) as instance:
        await instance.seek_to(partitions, end=True)
    return _no_content()


# ---------------------------------------------------------------------- the app

_INSTANCE = "/consumers/{group}/instances/{name}"

ROUTES = [
    Route("/topics", list_topics, methods=["GET"]),
    Route("/topics/{topic}", get_topic, methods=["GET"]),
    Route("/topics/{topic}", produce_to_topic, methods=["POST"]),
    Route("/topics/{topic}/partitions", list_partitions, methods=["GET"]),
    Route("/topics/{topic}/partitions/{partition}", get_partition, methods=["GET"]),
    Route("/topics/{topic}/partitions/{partition}", produce_to_partition, methods=["POST"]),
    Route("/topics/{topic}/partitions/{partition}/offsets", partition_offsets, methods=["GET"]),
    Route("/consumers/{group}", create_instance, methods=["POST"]),
    Route(_INSTANCE, delete_instance, methods=["DELETE"]),
    Route(_INSTANCE + "/subscription", subscribe, methods=["POST"]),
    Route(_INSTANCE + "/subscription", get_subscription, methods=["GET"]),
    Route(_INSTANCE + "/subscription", unsubscribe, methods=["DELETE"]),
    Route(_INSTANCE + "/assignments", assign, methods=["POST"]),
    Route(_INSTANCE + "/assignments", get_assignments, methods=["GET"]),
    Route(_INSTANCE + "/records", records, methods=["GET"]),
    Route(_INSTANCE + "/offsets", commit_offsets, methods=["POST"]),
    Route(_INSTANCE + "/offsets", committed_offsets, methods=["GET"]),
    Route(_INSTANCE + "/positions", seek, methods=["POST"]),
    Route(_INSTANCE + "/positions/beginning", seek_to_beginning, methods=["POST"]),
    Route(_INSTANCE + "/positions/end", seek_to_end, methods=["POST"]),
]


async def openapi(request: Request) -> Response:
    """This API as an OpenAPI document."""
    return V2Response(openapi_document(request.app.routes), media_type="application/json")


_V2_JSON_HEADER = V2_JSON.encode()


class RestApp(Starlette):
    """The Starlette app with a shortcut for v2's produce routes, the proxy's hot path:
    ``POST /topics/{t}`` and ``POST /topics/{t}/partitions/{p}`` skip the middleware
    stack, the router's scan of every route and the ``Response`` object (a third of a
    one-record POST's CPU), and run the very handler the routes name.  Errors go
    through the same exception handlers, so every answer is the routed one's."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            # The routes' own match: /topics/{topic}[/partitions/{partition}], no part empty.
            parts = scope["path"].split("/")
            if (
                len(parts) in (3, 5)
                and parts[1] == "topics"
                and all(parts[2:])
                and (len(parts) == 3 or parts[3] == "partitions")
            ):
                scope["app"] = self
                scope["path_params"] = (
                    {"topic": parts[2]}
                    if len(parts) == 3
                    else {"topic": parts[2], "partition": parts[4]}
                )
                await self._produce(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _produce(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            body = compact_json(await _produce(request))
        except Exception as exc:
            handler = next(
                EXCEPTION_HANDLERS[cls] for cls in type(exc).__mro__ if cls in EXCEPTION_HANDLERS
            )
            await (await handler(request, exc))(scope, receive, send)
            return
        # What V2Response sends, without building one.
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", _V2_JSON_HEADER),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(config: RestConfig) -> Starlette:
    """The proxy as an ASGI app; its clients connect when the server starts it."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        clients = ClientPool(config)
        await clients.start()
        consumers = ConsumerRegistry(
            config.bootstrap_servers,
            instance_timeout_ms=config.consumer_instance_timeout_ms,
            request_timeout_ms=config.consumer_request_timeout_ms,
            consumer_settings=config.consumer_settings,
        )
        consumers.start()
        app.state.proxy = ProxyState(config, clients, consumers)
        try:
            yield
        finally:
            await consumers.close()
            await clients.close()

    return RestApp(
        routes=[
            *ROUTES,
            *V3_ROUTES,
            *RECORDS_ROUTES,
            *GROUP_ROUTES,
            Route("/openapi.json", openapi),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
