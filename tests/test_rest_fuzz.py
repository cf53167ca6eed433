"""Random requests against a real ``pystream rest``: whatever the method, path, content
type, query or body, the answer is never a 5xx and always Confluent's error shape.

Bounded (a few hundred requests); topic creation and deletion are left out (a random
body could ask for a million partitions or delete the module's topic).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from broker_process import BrokerProcess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rest_v2 import BINARY_V2, JSON_V2, V2, broker, http, proxy

from pystream import AdminClient, NewTopic

__all__ = ["broker", "http", "proxy"]  # the fixtures this module uses

TOPIC = "fuzzed"
PATHS = [
    ("GET", "/topics"),
    ("GET", "/topics/{topic}"),
    ("POST", "/topics/{topic}"),
    ("GET", "/topics/{topic}/partitions"),
    ("GET", "/topics/{topic}/partitions/{partition}"),
    ("POST", "/topics/{topic}/partitions/{partition}"),
    ("GET", "/topics/{topic}/partitions/{partition}/offsets"),
    ("POST", "/consumers/{group}"),
    ("DELETE", "/consumers/{group}/instances/{name}"),
    ("POST", "/consumers/{group}/instances/{name}/subscription"),
    ("GET", "/consumers/{group}/instances/{name}/subscription"),
    ("DELETE", "/consumers/{group}/instances/{name}/subscription"),
    ("POST", "/consumers/{group}/instances/{name}/assignments"),
    ("GET", "/consumers/{group}/instances/{name}/records"),
    ("POST", "/consumers/{group}/instances/{name}/offsets"),
    ("GET", "/consumers/{group}/instances/{name}/offsets"),
    ("POST", "/consumers/{group}/instances/{name}/positions"),
    ("POST", "/consumers/{group}/instances/{name}/positions/beginning"),
    ("POST", "/consumers/{group}/instances/{name}/positions/end"),
    ("GET", "/v3/clusters"),
    ("GET", "/v3/clusters/{cluster}"),
    ("GET", "/v3/clusters/{cluster}/topics/{topic}"),
    ("POST", "/v3/clusters/{cluster}/topics/{topic}/records"),
    ("GET", "/v3/clusters/{cluster}/consumer-groups"),
    ("GET", "/v3/clusters/{cluster}/consumer-groups/{name}"),
    ("GET", "/v3/clusters/{cluster}/consumer-groups/{name}/lags"),
    ("GET", "/v3/clusters/{cluster}/consumer-groups/{name}/lag-summary"),
    ("GET", "/openapi.json"),
    ("PATCH", "/topics/{topic}"),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["records", "value", "key", "partition", "topics", "topic_pattern", "partitions",
             "offsets", "topic", "offset", "name", "format", "auto.offset.reset", "type",
             "data", "partition_id", "headers", "timestamp", "metadata"]
        ) | st.text(max_size=8),
        inner,
        max_size=5,
    ),
    max_leaves=12,
)  # fmt: skip
bodies = (
    json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=64)
    | st.just(b"")
    | st.builds(
        lambda values: json.dumps({"records": [{"value": v} for v in values]}).encode(),
        st.lists(json_values, min_size=1, max_size=5),
    )
)
segments = st.sampled_from(
    [TOPIC, "fuzzer", "0", "1", "-1", "x", "%20", "a" * 300, "..", "__consumer_offsets"]
)


@pytest.fixture(scope="module")
def targets(broker: BrokerProcess, http: httpx.Client) -> None:
    """A real topic and a real consumer instance ("fuzzer" in group "fuzz") to hit."""
    with AdminClient(broker.bootstrap) as admin:
        admin.create_topics([NewTopic(TOPIC, 2, 1)])
    created = http.post(
        "/consumers/fuzz", headers={"Content-Type": V2}, json={"name": "fuzzer", "format": "json"}
    )
    assert created.status_code == 200, created.text


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    route=st.sampled_from(PATHS),
    topic=segments,
    partition=segments,
    name=segments,
    content_type=st.sampled_from([JSON_V2, BINARY_V2, V2, "application/json", "text/plain", None]),
    accept=st.sampled_from([JSON_V2, BINARY_V2, "*/*", "text/html", None]),
    query=st.dictionaries(st.sampled_from(["timeout", "max_bytes"]), segments, max_size=2),
    body=bodies,
)
def test_random_requests_never_get_a_server_error(
    targets: None,
    http: httpx.Client,
    route: tuple[str, str],
    topic: str,
    partition: str,
    name: str,
    content_type: str | None,
    accept: str | None,
    query: dict[str, str],
    body: bytes,
) -> None:
    method, template = route
    path = template.format(
        topic=topic, partition=partition, group="fuzz", name=name, cluster=partition
    )
    headers: dict[str, Any] = {}
    if content_type:
        headers["Content-Type"] = content_type
    if accept:
        headers["Accept"] = accept
    response = http.request(method, path, headers=headers, params=query, content=body)
    assert response.status_code < 500, (method, path, response.status_code, response.text)
    if response.status_code >= 400:
        document = response.json()
        assert set(document) == {"error_code", "message"}, document
    elif method == "POST" and template == "/consumers/{group}" and response.status_code == 200:
        # An instance the fuzzer happened to create is deleted again (no leak).
        created = response.json()
        http.delete(f"/consumers/fuzz/instances/{created['instance_id']}")
