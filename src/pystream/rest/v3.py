"""API v3, first part: clusters, topics (list, get, create, delete) and producing
records (``POST /v3/clusters/{id}/topics/{t}/records``, in :mod:`.v3_records`).

Documents follow Confluent's v3: a ``kind``, ``metadata.self`` (the URL of the
resource), ``metadata.resource_name`` (``crn:///kafka=<cluster>/topic=<t>``) and
``related`` links.  Not yet: partitions, configs, brokers, consumer groups and lag.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pystream.aio import NewTopic
from pystream.client.types import TopicDescription

from .clients import kafka_clients
from .errors import RestError
from .formats import (
    V2Response,
    conversion_error,
    json_object,
    read_json,
    require_v2_json,
)

__all__ = ["CLUSTER", "V3_ROUTES", "cluster_id_of"]

_JSON = "application/json"


def _ok(content: Any, status: int = 200) -> Response:
    return V2Response(content, status_code=status, media_type=_JSON)


async def cluster_id_of(request: Request) -> str:
    """The cluster id of the URL, checked against the cluster's (404 for another)."""
    state = request.app.state.proxy
    wanted = request.path_params["cluster_id"]
    if state.cluster_id != wanted:
        admin = (await kafka_clients(request)).admin
        state.cluster_id = (await admin.describe_cluster())["cluster_id"]
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
    state.cluster_id = (await (await kafka_clients(request)).admin.describe_cluster())["cluster_id"]
    return _ok(
        {
            "kind": "KafkaClusterList",
            "metadata": {"self": f"{_base(request)}/v3/clusters", "next": None},
            "data": [_cluster_document(request, state.cluster_id)],
        }
    )


async def get_cluster(request: Request) -> Response:
    return _ok(_cluster_document(request, await cluster_id_of(request)))


async def list_topics(request: Request) -> Response:
    cluster_id = await cluster_id_of(request)
    descriptions = await (await kafka_clients(request)).admin.describe_topics()
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
    cluster_id = await cluster_id_of(request)
    topics = (await kafka_clients(request)).topics
    description = await topics.describe(request.path_params["topic"], fresh=True)
    return _ok(_topic_document(request, cluster_id, description))


async def create_topic(request: Request) -> Response:
    cluster_id = await cluster_id_of(request)
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
    kafka = await kafka_clients(request)
    await kafka.admin.create_topics(
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
        description = await kafka.topics.describe(name, fresh=True)
    return _ok(_topic_document(request, cluster_id, description), status=201)


async def delete_topic(request: Request) -> Response:
    await cluster_id_of(request)
    kafka = await kafka_clients(request)
    topic = request.path_params["topic"]
    await kafka.admin.delete_topics([topic])
    kafka.topics.forget(topic)
    return Response(status_code=204)


CLUSTER = "/v3/clusters/{cluster_id}"

V3_ROUTES = [
    Route("/v3/clusters", list_clusters, methods=["GET"]),
    Route(CLUSTER, get_cluster, methods=["GET"]),
    Route(CLUSTER + "/topics", list_topics, methods=["GET"]),
    Route(CLUSTER + "/topics", create_topic, methods=["POST"]),
    Route(CLUSTER + "/topics/{topic}", get_topic, methods=["GET"]),
    Route(CLUSTER + "/topics/{topic}", delete_topic, methods=["DELETE"]),
]
