"""The REST proxy's API v3, first part: clusters, topics, one record per request.

A broker and a ``pystream rest`` process of this module's own (the fixtures of
test_rest_v2); confluent-kafka reads back what was produced.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import httpx
from broker_process import BrokerProcess
from test_rest_v2 import (
    JSON_V2,
    V2,
    assert_error,
    broker,
    http,
    new_instance,
    poll_records,
    proxy,
    read_with_confluent,
)

__all__ = ["broker", "http", "proxy"]  # the fixtures this module uses


def cluster_id(http: httpx.Client) -> str:
    listing = http.get("/v3/clusters")
    assert listing.status_code == 200, listing.text
    assert listing.json()["kind"] == "KafkaClusterList"
    (cluster,) = listing.json()["data"]
    assert cluster["kind"] == "KafkaCluster"
    assert cluster["metadata"]["resource_name"] == f"crn:///kafka={cluster['cluster_id']}"
    return cluster["cluster_id"]


def test_cluster_and_topic_lifecycle(http: httpx.Client) -> None:
    cluster = cluster_id(http)
    base = f"/v3/clusters/{cluster}"
    assert http.get(base).json()["topics"]["related"].endswith(f"{base}/topics")
    assert_error(http.get("/v3/clusters/not-this-one"), 404, 404)

    name = f"v3-{uuid.uuid4().hex[:8]}"
    created = http.post(
        f"{base}/topics",
        json={
            "topic_name": name,
            "partitions_count": 3,
            "replication_factor": 1,
            "configs": [{"name": "cleanup.policy", "value": "compact"}],
        },
    )
    assert created.status_code == 201, created.text
    topic = created.json()
    assert (topic["kind"], topic["topic_name"], topic["partitions_count"]) == (
        "KafkaTopic",
        name,
        3,
    )
    assert topic["metadata"]["self"].endswith(f"{base}/topics/{name}")
    # The config reached the broker: v2's topic document lists it.
    assert http.get(f"/topics/{name}").json()["configs"]["cleanup.policy"] == "compact"
    again = http.post(f"{base}/topics", json={"topic_name": name, "partitions_count": 3})
    assert "already exists" in assert_error(again, 400, 40002)["message"]

    listed = http.get(f"{base}/topics").json()
    assert listed["kind"] == "KafkaTopicList"
    assert name in [t["topic_name"] for t in listed["data"]]
    assert http.get(f"{base}/topics/{name}").json()["replication_factor"] == 1

    assert http.delete(f"{base}/topics/{name}").status_code == 204
    assert_error(http.get(f"{base}/topics/{name}"), 404, 40401)
    assert_error(http.delete(f"{base}/topics/{name}"), 404, 40403)


def test_produce_one_record_read_back_with_confluent_kafka(
    broker: BrokerProcess, http: httpx.Client
) -> None:
    base = f"/v3/clusters/{cluster_id(http)}"
    name = f"v3-{uuid.uuid4().hex[:8]}"
    assert http.post(f"{base}/topics", json={"topic_name": name, "partitions_count": 2}).is_success
    records = [
        {
            "partition_id": 1,
            "headers": [{"name": "trace", "value": base64.b64encode(b"t-1").decode()}],
            "key": {"type": "STRING", "data": "user-1"},
            "value": {"type": "JSON", "data": {"amount": 3}},
            "timestamp": "2024-01-02T03:04:05.678Z",
        },
        {
            "partition_id": 1,
            "value": {"type": "BINARY", "data": base64.b64encode(b"\x00\xff").decode()},
        },
    ]
    answers = []
    for record in records:
        response = http.post(f"{base}/topics/{name}/records", json=record)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    assert [(a["error_code"], a["partition_id"], a["offset"]) for a in answers] == [
        (200, 1, 0),
        (200, 1, 1),
    ]
    assert answers[0]["timestamp"] == "2024-01-02T03:04:05.678Z"
    assert answers[0]["key"] == {"type": "STRING", "size": 6}
    assert answers[1]["key"] is None and answers[1]["value"] == {"type": "BINARY", "size": 2}

    first, second = read_with_confluent(broker, name, 2)
    assert (first.key(), first.value(), first.headers()) == (
        b"user-1",
        b'{"amount":3}',
        [("trace", b"t-1")],
    )
    assert first.timestamp()[1] == 1704164645678
    assert (second.key(), second.value()) == (None, b"\x00\xff")


def test_v3_bad_records_are_4xx(http: httpx.Client) -> None:
    base = f"/v3/clusters/{cluster_id(http)}"
    cases = [
        ("no-such-topic", {"value": {"type": "JSON", "data": 1}}, 404, 40401),
        (None, {"value": {"type": "AVRO", "data": 1}}, 422, 42203),
        (None, {"value": {"type": "BINARY", "data": "*not base64*"}}, 422, 42203),
        (None, {"partition_id": -1}, 422, 42203),
        (None, {"timestamp": "yesterday"}, 422, 42203),
        (None, {"headers": [{"name": "h", "value": "!!"}]}, 422, 42203),
    ]
    name = f"v3-{uuid.uuid4().hex[:8]}"
    assert http.post(f"{base}/topics", json={"topic_name": name, "partitions_count": 1}).is_success
    for topic, body, status, code in cases:
        response = http.post(f"{base}/topics/{topic or name}/records", json=body)
        assert_error(response, status, code)
    bad_create = http.post(f"{base}/topics", json={"topic_name": name, "partitions_count": "many"})
    assert_error(bad_create, 422, 42203)


def test_streamed_records_in_one_request(broker: BrokerProcess, http: httpx.Client) -> None:
    """Confluent's streamed mode: many records in one chunked request, one result per
    record in request order; a bad record gets its error and the others go on."""
    base = f"/v3/clusters/{cluster_id(http)}"
    name = f"v3-{uuid.uuid4().hex[:8]}"
    assert http.post(f"{base}/topics", json={"topic_name": name, "partitions_count": 1}).is_success
    records = [{"value": {"type": "JSON", "data": {"n": i}}} for i in range(200)]
    records[50] = {"value": {"type": "BINARY", "data": "*not base64*"}}

    def body() -> Iterator[bytes]:
        for record in records:  # one record per chunk, split mid-record now and then
            text = json.dumps(record).encode()
            yield text[:7]
            yield text[7:] + b"\n"

    response = http.post(
        f"{base}/topics/{name}/records",
        headers={"Content-Type": "application/json"},
        content=body(),
    )
    assert response.status_code == 200, response.text
    results = [json.loads(line) for line in response.text.splitlines()]
    assert len(results) == 200
    assert results[50]["error_code"] == 42203 and "base64" in results[50]["message"]
    good = [r for i, r in enumerate(results) if i != 50]
    assert {r["error_code"] for r in good} == {200}
    assert [r["offset"] for r in good] == list(range(199))
    stored = read_with_confluent(broker, name, 199)
    assert [json.loads(m.value())["n"] for m in stored] == [i for i in range(200) if i != 50]


def test_consumer_groups_and_lag(http: httpx.Client) -> None:
    base = f"/v3/clusters/{cluster_id(http)}"
    name = f"v3-{uuid.uuid4().hex[:8]}"
    assert http.post(f"{base}/topics", json={"topic_name": name, "partitions_count": 1}).is_success
    produced = http.post(
        f"/topics/{name}",
        headers={"Content-Type": JSON_V2},
        json={"records": [{"value": i} for i in range(5)]},
    )
    assert produced.status_code == 200, produced.text
    group = f"lagging-{uuid.uuid4().hex[:6]}"
    instance = new_instance(
        http,
        group,
        format="json",
        **{"auto.offset.reset": "earliest", "auto.commit.enable": "false"},
    )
    http.post(f"{instance}/subscription", headers={"Content-Type": V2}, json={"topics": [name]})
    assert len(poll_records(http, instance, 5)) == 5
    # Processed up to offset 2: the committed offset is 3, two records behind the end.
    commit = http.post(
        f"{instance}/offsets",
        headers={"Content-Type": V2},
        json={"offsets": [{"topic": name, "partition": 0, "offset": 2}]},
    )
    assert commit.status_code == 204, commit.text

    groups = http.get(f"{base}/consumer-groups").json()
    assert groups["kind"] == "KafkaConsumerGroupList"
    assert group in [g["consumer_group_id"] for g in groups["data"]]
    described = http.get(f"{base}/consumer-groups/{group}").json()
    assert (described["consumer_group_id"], described["state"]) == (group, "STABLE")
    (lag,) = http.get(f"{base}/consumer-groups/{group}/lags").json()["data"]
    assert (lag["topic_name"], lag["partition_id"]) == (name, 0)
    assert (lag["current_offset"], lag["log_end_offset"], lag["lag"]) == (3, 5, 2)
    assert lag["consumer_id"]  # the instance's member id: it holds the partition
    summary = http.get(f"{base}/consumer-groups/{group}/lag-summary").json()
    assert (summary["max_lag"], summary["total_lag"], summary["max_lag_topic_name"]) == (2, 2, name)
    assert_error(http.get(f"{base}/consumer-groups/no-such-group"), 404, 40405)
    assert http.delete(instance).status_code == 204
