"""API v3 consumer groups (read only): list, describe, per-partition lags and the lag
summary, as Confluent's ``/v3/clusters/{id}/consumer-groups/...``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pystream.client.types import GroupDescription

from .clients import KafkaClients, kafka_clients
from .errors import RestError
from .formats import V2Response
from .v3 import CLUSTER, cluster_id_of

__all__ = ["GROUP_ROUTES"]

CONSUMER_GROUP_NOT_FOUND = 40405  # Confluent's CONSUMER_GROUP_ID_NOT_FOUND_ERROR_CODE


def _ok(content: Any) -> Response:
    return V2Response(content, media_type="application/json")


def _url(request: Request, cluster_id: str, tail: str = "") -> str:
    return f"{str(request.base_url).rstrip('/')}/v3/clusters/{cluster_id}/consumer-groups{tail}"


async def _describe(kafka: KafkaClients, group: str) -> GroupDescription:
    description = (await kafka.admin.describe_groups([group])).get(group)
    # Kafka describes a group it does not know as Dead with no members.
    if description is None or description.state == "Dead":
        raise RestError(404, CONSUMER_GROUP_NOT_FOUND, f"Consumer group {group!r} not found.")
    return description


def _group_document(request: Request, cluster_id: str, g: GroupDescription) -> dict[str, Any]:
    url = _url(request, cluster_id, f"/{g.group_id}")
    return {
        "kind": "KafkaConsumerGroup",
        "metadata": {
            "self": url,
            "resource_name": f"crn:///kafka={cluster_id}/consumer-group={g.group_id}",
        },
        "cluster_id": cluster_id,
        "consumer_group_id": g.group_id,
        "is_simple": g.protocol_type == "",
        "partition_assignor": g.protocol,
        "state": g.state.upper(),
        "coordinator": {
            "related": f"{str(request.base_url).rstrip('/')}/v3/clusters/{cluster_id}"
            f"/brokers/{g.coordinator}"
        },
        "consumers": {"related": f"{url}/consumers"},
        "lag_summary": {"related": f"{url}/lag-summary"},
    }


async def list_groups(request: Request) -> Response:
    cluster_id = await cluster_id_of(request)
    kafka = await kafka_clients(request)
    listings = await kafka.admin.list_groups()
    descriptions = (
        await kafka.admin.describe_groups([g.group_id for g in listings]) if listings else {}
    )
    return _ok(
        {
            "kind": "KafkaConsumerGroupList",
            "metadata": {"self": _url(request, cluster_id), "next": None},
            "data": [
                _group_document(request, cluster_id, d) for _, d in sorted(descriptions.items())
            ],
        }
    )


async def get_group(request: Request) -> Response:
    cluster_id = await cluster_id_of(request)
    kafka = await kafka_clients(request)
    description = await _describe(kafka, request.path_params["group"])
    return _ok(_group_document(request, cluster_id, description))


async def _lags(request: Request) -> tuple[str, str, list[dict[str, Any]]]:
    """(cluster id, group, one lag document per partition with a committed offset)."""
    cluster_id = await cluster_id_of(request)
    kafka = await kafka_clients(request)
    group = request.path_params["group"]
    description = await _describe(kafka, group)
    lags = []
    for row in await kafka.admin.list_consumer_group_lags(group, description):
        if row.committed is None:  # assigned, nothing committed yet: no lag to report
            continue
        tp, member = row.partition, row.member
        end = -1 if row.end is None else row.end
        url = _url(request, cluster_id, f"/{group}/lags/{tp.topic}/partitions/{tp.partition}")
        lags.append(
            {
                "kind": "KafkaConsumerLag",
                "metadata": {
                    "self": url,
                    "resource_name": f"crn:///kafka={cluster_id}/consumer-group={group}"
                    f"/lag={tp.topic}/partition={tp.partition}",
                },
                "cluster_id": cluster_id,
                "consumer_group_id": group,
                "topic_name": tp.topic,
                "partition_id": tp.partition,
                "current_offset": row.committed,
                "log_end_offset": end,
                "lag": max(end - row.committed, 0),
                "consumer_id": "" if member is None else member.member_id,
                "instance_id": None if member is None else member.group_instance_id,
                "client_id": "" if member is None else member.client_id,
            }
        )
    return cluster_id, group, lags


async def list_lags(request: Request) -> Response:
    cluster_id, group, lags = await _lags(request)
    return _ok(
        {
            "kind": "KafkaConsumerLagList",
            "metadata": {"self": _url(request, cluster_id, f"/{group}/lags"), "next": None},
            "data": lags,
        }
    )


async def lag_summary(request: Request) -> Response:
    cluster_id, group, lags = await _lags(request)
    worst = max(lags, key=lambda lag: lag["lag"], default=None)
    return _ok(
        {
            "kind": "KafkaConsumerGroupLagSummary",
            "metadata": {
                "self": _url(request, cluster_id, f"/{group}/lag-summary"),
                "resource_name": f"crn:///kafka={cluster_id}/consumer-group={group}/lag-summary",
            },
            "cluster_id": cluster_id,
            "consumer_group_id": group,
            "max_lag_consumer_id": "" if worst is None else worst["consumer_id"],
            "max_lag_instance_id": None if worst is None else worst["instance_id"],
            "max_lag_client_id": "" if worst is None else worst["client_id"],
            "max_lag_topic_name": "" if worst is None else worst["topic_name"],
            "max_lag_partition_id": 0 if worst is None else worst["partition_id"],
            "max_lag": 0 if worst is None else worst["lag"],
            "total_lag": sum(lag["lag"] for lag in lags),
        }
    )


_GROUPS = CLUSTER + "/consumer-groups"

GROUP_ROUTES = [
    Route(_GROUPS, list_groups, methods=["GET"]),
    Route(_GROUPS + "/{group}", get_group, methods=["GET"]),
    Route(_GROUPS + "/{group}/lags", list_lags, methods=["GET"]),
    Route(_GROUPS + "/{group}/lag-summary", lag_summary, methods=["GET"]),
]
