"""API v3 produce: ``POST /v3/clusters/{id}/topics/{t}/records``.

The body is one record ``{"partition_id", "headers", "key", "value", "timestamp"}``
(key and value ``{"type": "JSON"|"BINARY"|"STRING", "data": ...}``, header values
base64) or, Confluent's streamed mode, many such objects one after another in one
(usually chunked) request.  One record is answered as a plain request: its result,
or an error status.  Many are answered as a stream of results in request order
(each ``{"error_code": 200, ...}`` or ``{"error_code": <code>, "message": ...}``),
written as the records are acknowledged while the request is still being read, so
a client can send records for as long as it likes over one request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from pystream.errors import KafkaError, UnknownTopicOrPartitionError

from .clients import kafka_clients
from .errors import BAD_REQUEST, PAYLOAD_TOO_LARGE, RestError, kafka_error_code
from .formats import (
    EmbeddedFormat,
    V2Response,
    compact_json,
    conversion_error,
    json_object,
    require_v2_json,
)
from .v3 import CLUSTER, cluster_id_of

__all__ = ["RECORDS_ROUTES", "produce_records"]

_TYPES = ("BINARY", "JSON", "STRING")
_skip_space = re.compile(r"\s*").match
# How many records of a stream may wait for their acknowledgement at once.
_IN_FLIGHT = 10_000
# At most this many results per write, so a stream that never pauses is still answered.
_RESULTS_PER_WRITE = 1_000


def _data(body: dict[str, Any], what: str) -> tuple[bytes | None, str | None]:
    """A v3 key or value ``{"type": "BINARY"|"JSON"|"STRING", "data": ...}`` as bytes."""
    item = body.get(what)
    if item is None:
        return None, None
    item = json_object(item, f"'{what}'")
    kind = item.get("type", "BINARY" if isinstance(item.get("data"), str) else "JSON")
    if kind not in _TYPES:
        raise conversion_error(
            f"{what}.type must be one of {', '.join(_TYPES)} (no schema registry), got {kind!r}"
        )
    data = item.get("data")
    if data is None:
        return None, kind
    if kind == "STRING":
        if not isinstance(data, str):
            raise conversion_error(f"{what}.data must be a string for type STRING")
        return data.encode(), kind
    embedded = EmbeddedFormat.JSON if kind == "JSON" else EmbeddedFormat.BINARY
    return embedded.decode(data, f"{what}.data"), kind


def _headers(body: dict[str, Any]) -> list[tuple[str, bytes | None]] | None:
    headers = body.get("headers")
    if headers is None:
        return None
    if not isinstance(headers, list):
        raise conversion_error('\'headers\' must be a list of {"name": ..., "value": base64}')
    out: list[tuple[str, bytes | None]] = []
    for i, header in enumerate(headers):
        header = json_object(header, f"headers[{i}]")
        name, value = header.get("name"), header.get("value")
        if not isinstance(name, str) or not (value is None or isinstance(value, str)):
            raise conversion_error(f"headers[{i}] needs a string name and a base64 value")
        try:
            out.append((name, None if value is None else base64.b64decode(value, validate=True)))
        except (binascii.Error, ValueError):
            raise conversion_error(f"headers[{i}].value is not valid base64") from None
    return out


def _timestamp_ms(body: dict[str, Any]) -> int | None:
    raw = body.get("timestamp")
    if raw is None:
        return None
    try:
        return int(datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise conversion_error(f"'timestamp' must be an ISO-8601 date-time, got {raw!r}") from None


class _Record:
    """One parsed v3 produce request."""

    __slots__ = ("headers", "key", "key_type", "partition", "timestamp", "value", "value_type")

    def __init__(self, body: Any) -> None:
        body = json_object(body, "a record")
        partition = body.get("partition_id")
        if partition is not None and (
            isinstance(partition, bool) or not isinstance(partition, int) or partition < 0
        ):
            raise conversion_error(f"'partition_id' must be an integer >= 0, got {partition!r}")
        self.partition: int | None = partition
        self.key, self.key_type = _data(body, "key")
        self.value, self.value_type = _data(body, "value")
        self.headers = _headers(body)
        self.timestamp = _timestamp_ms(body)

    def result(self, cluster_id: str, topic: str, metadata: Any) -> dict[str, Any]:
        when = datetime.fromtimestamp(metadata.timestamp / 1000, UTC)
        return {
            "error_code": 200,
            "cluster_id": cluster_id,
            "topic_name": topic,
            "partition_id": metadata.partition,
            "offset": metadata.offset,
            "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "key": _size(self.key_type, self.key),
            "value": _size(self.value_type, self.value),
        }


class _DuplexStreamingResponse(StreamingResponse):
    """A streamed response written while the request body is still being read.

    Starlette's, under ASGI spec < 2.4 (uvicorn says 2.3), reads ``receive`` itself to
    notice a disconnect, which would take the body chunks the records are parsed
    from; here the body reader notices the disconnect and ends the stream."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.stream_response(send)
        except OSError:
            raise ClientDisconnect() from None


def _size(kind: str | None, data: bytes | None) -> dict[str, Any] | None:
    return None if kind is None else {"type": kind, "size": len(data or b"")}


def _kafka_failure(exc: BaseException) -> RestError:
    if isinstance(exc, UnknownTopicOrPartitionError):
        return RestError(404, 404, str(exc))
    code = kafka_error_code(exc)
    return RestError(code // 100, code, f"Kafka error: {exc}")


async def _objects(request: Request, limit: int) -> AsyncIterator[Any]:
    """The JSON values of the body, one after another, as they arrive; one value may
    be at most ``limit`` bytes (413 beyond), the stream as long as the client likes."""
    decoder = json.JSONDecoder()
    text = codecs.getincrementaldecoder("utf-8")()
    buffer = ""
    try:
        async for chunk in request.stream():
            buffer += text.decode(chunk)
            # Walk the buffer by index (slicing after every record would copy the rest of
            # a large chunk once per record); keep only the incomplete tail.
            pos = _skip_space(buffer, 0).end()
            while pos < len(buffer):
                try:
                    value, pos = decoder.raw_decode(buffer, pos)
                except ValueError:
                    if len(buffer) - pos > limit:
                        raise RestError(
                            413,
                            PAYLOAD_TOO_LARGE,
                            f"a record is larger than max.request.body.bytes ({limit})",
                        ) from None
                    break  # not complete yet
                pos = _skip_space(buffer, pos).end()
                yield value
            buffer = buffer[pos:]
        buffer += text.decode(b"", final=True)
    except UnicodeDecodeError:
        raise RestError(400, BAD_REQUEST, "the body is not UTF-8") from None
    except ClientDisconnect:
        return
    if buffer.strip():
        try:
            decoder.raw_decode(buffer.strip())
        except ValueError as exc:
            raise RestError(400, BAD_REQUEST, f"the body is not valid JSON: {exc}") from None


async def produce_records(request: Request) -> Response:
    """One record, or a stream of them (see the module docstring)."""
    cluster_id = await cluster_id_of(request)
    state = request.app.state.proxy
    topic = request.path_params["topic"]
    require_v2_json(request, body_expected=True)
    kafka = await kafka_clients(request)
    await kafka.topics.describe(topic)  # 404 before anything is read or sent
    objects = _objects(request, state.config.max_request_body_bytes)
    first = await anext(objects, None)
    if first is None:
        raise conversion_error("the request needs a record")
    second = await anext(objects, None)
    if second is None:
        record = _Record(first)
        if record.partition is not None:
            await kafka.topics.partition(topic, record.partition)
        try:
            future = await _send(kafka.producer, topic, record)
            metadata = await future
        except (KafkaError, TimeoutError) as exc:
            raise _kafka_failure(exc) from None
        return V2Response(record.result(cluster_id, topic, metadata), media_type="application/json")
    return _DuplexStreamingResponse(
        _stream(kafka.producer, cluster_id, topic, first, second, objects),
        media_type="application/json",
    )


async def _send(producer: Any, topic: str, record: _Record) -> Any:
    return await producer.send(
        topic, record.value, record.key, record.headers, record.partition, record.timestamp
    )


async def _stream(
    producer: Any, cluster_id: str, topic: str, first: Any, second: Any, rest: AsyncIterator[Any]
) -> AsyncIterator[bytes]:
    """Results in request order, each written once its record is acknowledged; a
    reader task keeps sending the records that follow meanwhile."""
    queue: asyncio.Queue[tuple[_Record | None, Any] | None] = asyncio.Queue(_IN_FLIGHT)

    async def read() -> None:
        try:
            for body in (first, second):
                await queue.put(await _queued(producer, topic, body))
            async for body in rest:
                await queue.put(await _queued(producer, topic, body))
        except RestError as exc:  # the stream itself broke (not JSON, too large)
            await queue.put((None, exc))
        finally:
            await queue.put(None)

    reader = asyncio.create_task(read(), name="rest-v3-records")
    try:
        done = False
        while not done:
            # Everything already acknowledged goes out in one write: a write per record
            # would cost more than producing it.
            out: list[bytes] = []
            item = await queue.get()
            while True:
                if item is None:
                    done = True
                    break
                out.append(await _result_line(cluster_id, topic, *item))
                if queue.empty() or len(out) >= _RESULTS_PER_WRITE:
                    break
                item = queue.get_nowait()
            if out:
                yield b"".join(out)
    finally:
        reader.cancel()


async def _result_line(cluster_id: str, topic: str, record: _Record | None, outcome: Any) -> bytes:
    """One record's result as a line of the streamed response."""
    if isinstance(outcome, RestError):
        document = {"error_code": outcome.error_code, "message": outcome.message}
    else:
        try:
            metadata = outcome.result(0) if outcome.done() else await outcome
            document = record.result(cluster_id, topic, metadata)  # type: ignore[union-attr]
        except (KafkaError, TimeoutError) as exc:
            failure = _kafka_failure(exc)
            document = {"error_code": failure.error_code, "message": failure.message}
    return compact_json(document) + b"\n"


async def _queued(producer: Any, topic: str, body: Any) -> tuple[_Record | None, Any]:
    """(record, its future) or (None, the RestError that refused it)."""
    try:
        record = _Record(body)
        return record, await _send(producer, topic, record)
    except RestError as exc:
        return None, exc
    except (KafkaError, TimeoutError) as exc:
        return None, _kafka_failure(exc)


RECORDS_ROUTES = [Route(CLUSTER + "/topics/{topic}/records", produce_records, methods=["POST"])]
