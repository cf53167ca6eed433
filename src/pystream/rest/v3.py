"""API v3, first part: clusters, topics (list, get, create, delete) and producing one
record per request (``POST /v3/clusters/{id}/topics/{t}/records``).

Documents follow Confluent's v3: a ``kind``, ``metadata.self`` (the URL of the
resource), ``metadata.resource_name`` (``crn:///kafka=<cluster>/topic=<t>``) and
``related`` links.  Not yet: the streamed records mode (many JSON records in one
request, one response per record), partitions, configs, brokers, consumer groups
and lag.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pystream.aio import NewTopic
from pystream.client.types import TopicDescription
from pystream.errors import KafkaError, UnknownTopicOrPartitionError

from .errors import RestError, kafka_error_code
from .formats import (
    EmbeddedFormat,
    V2Response,
    conversion_error,
    json_object,
    read_json,
    require_v2_json,
)

__all__ = ["V3_ROUTES"]

_JSON = "application/json"


def _ok(content: Any, status: int = 200) -> Response:
    return V2Response(content, status_code=status, media_type=_JSON)


async def _cluster_id(request: Request) -> str:
    """The cluster id of the URL, checked against the cluster's (404 for another)."""
    state = request.app.state.proxy
    wanted = request.path_params["cluster_id"]
    if state.cluster_id != wanted:
        state.cluster_id = (await state.admin.describe_cluster())["cluster_id"]
        if state.cluster_id != wanted:
            raise RestError(404, 404, f"Cluster {wanted} cannot be found.")
    return wanted


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _cluster_document(request: Request, cluster_id: str) -> dict[str, Any]:
    url = f"{_base(request)}/v3/clusters/{cluster_id}"
    related = {
        name: {"related": f"{url}/{path}"}
        for name, path in (
            ("controller", "brokers/-1"),
            ("acls", "acls"),
            ("brokers", "brokers"),
            ("broker_configs", "broker-configs"),
            ("consumer_groups", "consumer-groups"),
            ("topics", "topics"),
            ("partition_reassignments", "topics/-/partitions/-/reassignment"),
        )
    }
    return {
        "kind": "KafkaCluster",
        "metadata": {"self": url, "resource_name": f"crn:///kafka={cluster_id}"},
        "cluster_id": cluster_id,
        **related,
    }


def _topic_document(
    request: Request, cluster_id: str, description: TopicDescription
) -> dict[str, Any]:
    url = f"{_base(request)}/v3/clusters/{cluster_id}/topics/{description.name}"
    partitions = description.partitions
    return {
        "kind": "KafkaTopic",
        "metadata": {
            "self": url,
            "resource_name": f"crn:///kafka={cluster_id}/topic={description.name}",
        },
        "cluster_id": cluster_id,
        "topic_name": description.name,
        "is_internal": description.is_internal,
        "replication_factor": len(partitions[0].replicas) if partitions else 0,
        "partitions_count": len(partitions),
        "partitions": {"related": f"{url}/partitions"},
        "configs": {"related": f"{url}/configs"},
        "partition_reassignments": {"related": f"{url}/partitions/-/reassignment"},
        "authorized_operations": [],
    }


async def list_clusters(request: Request) -> Response:
    state = request.app.state.proxy
    state.cluster_id = (await state.admin.describe_cluster())["cluster_id"]
    return _ok(
        {
            "kind": "KafkaClusterList",
            "metadata": {"self": f"{_base(request)}/v3/clusters", "next": None},
            "data": [_cluster_document(request, state.cluster_id)],
        }
    )


async def get_cluster(request: Request) -> Response:
    return _ok(_cluster_document(request, await _cluster_id(request)))


async def list_topics(request: Request) -> Response:
    cluster_id = await _cluster_id(request)
    descriptions = await request.app.state.proxy.admin.describe_topics()
    return _ok(
        {
            "kind": "KafkaTopicList",
            "metadata": {
                "self": f"{_base(request)}/v3/clusters/{cluster_id}/topics",
                "next": None,
            },
            "data": [
                _topic_document(request, cluster_id, d) for _, d in sorted(descriptions.items())
            ],
        }
    )


async def get_topic(request: Request) -> Response:
    cluster_id = await _cluster_id(request)
    topics = request.app.state.proxy.topics
    description = await topics.describe(request.path_params["topic"], fresh=True)
    return _ok(_topic_document(request, cluster_id, description))


async def create_topic(request: Request) -> Response:
    cluster_id = await _cluster_id(request)
    state = request.app.state.proxy
    require_v2_json(request, body_expected=True)
    body = json_object(await read_json(request, state.config.max_request_body_bytes), "the body")
    name = body.get("topic_name")
    if not isinstance(name, str) or not name:
        raise conversion_error("'topic_name' must be a non-empty string")
    counts = {}
    for key in ("partitions_count", "replication_factor"):
        value = body.get(key, -1)  # -1: the broker's default
        if isinstance(value, bool) or not isinstance(value, int) or value < -1 or value == 0:
            raise conversion_error(f"{key!r} must be a positive integer, got {value!r}")
        counts[key] = value
    configs = body.get("configs") or []
    if not isinstance(configs, list) or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("value"), str)
        for c in configs
    ):
        raise conversion_error('\'configs\' must be a list of {"name": ..., "value": ...}')
    validate_only = body.get("validate_only") is True
    await state.admin.create_topics(
        NewTopic(
            name,
            counts["partitions_count"],
            counts["replication_factor"],
            {c["name"]: c["value"] for c in configs},
        ),
        validate_only=validate_only,
    )
    if validate_only:
        description = TopicDescription(name, "", False, [])
    else:
        description = await state.topics.describe(name, fresh=True)
    return _ok(_topic_document(request, cluster_id, description), status=201)


async def delete_topic(request: Request) -> Response:
    await _cluster_id(request)
    state = request.app.state.proxy
    topic = request.path_params["topic"]
    await state.admin.delete_topics([topic])
    state.topics.forget(topic)
    return Response(status_code=204)


_TYPES = ("BINARY", "JSON", "STRING")


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


async def produce_record(request: Request) -> Response:
    """One record: ``{"partition_id", "headers", "key", "value", "timestamp"}``."""
    cluster_id = await _cluster_id(request)
    state = request.app.state.proxy
    topic = request.path_params["topic"]
    require_v2_json(request, body_expected=True)
    body = json_object(await read_json(request, state.config.max_request_body_bytes), "the body")
    partition = body.get("partition_id")
    if partition is not None and (
        isinstance(partition, bool) or not isinstance(partition, int) or partition < 0
    ):
        raise conversion_error(f"'partition_id' must be an integer >= 0, got {partition!r}")
    key, key_type = _data(body, "key")
    value, value_type = _data(body, "value")
    headers = _headers(body)
    timestamp = _timestamp_ms(body)
    if partition is None:
        await state.topics.describe(topic)
    else:
        await state.topics.partition(topic, partition)
    try:
        future = await state.producer.send(topic, value, key, headers, partition, timestamp)
        metadata = await future
    except UnknownTopicOrPartitionError as exc:
        raise RestError(404, 404, str(exc)) from None
    except (KafkaError, TimeoutError) as exc:
        code = kafka_error_code(exc)
        raise RestError(code // 100, code, f"Kafka error: {exc}") from None
    when = datetime.fromtimestamp(metadata.timestamp / 1000, UTC)
    return _ok(
        {
            "error_code": 200,
            "cluster_id": cluster_id,
            "topic_name": topic,
            "partition_id": metadata.partition,
            "offset": metadata.offset,
            "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "key": None if key_type is None else {"type": key_type, "size": len(key or b"")},
            "value": None
            if value_type is None
            else {"type": value_type, "size": len(value or b"")},
        }
    )


_CLUSTER = "/v3/clusters/{cluster_id}"

V3_ROUTES = [
    Route("/v3/clusters", list_clusters, methods=["GET"]),
    Route(_CLUSTER, get_cluster, methods=["GET"]),
    Route(_CLUSTER + "/topics", list_topics, methods=["GET"]),
    Route(_CLUSTER + "/topics", create_topic, methods=["POST"]),
    Route(_CLUSTER + "/topics/{topic}", get_topic, methods=["GET"]),
    Route(_CLUSTER + "/topics/{topic}", delete_topic, methods=["DELETE"]),
    Route(_CLUSTER + "/topics/{topic}/records", produce_record, methods=["POST"]),
]
