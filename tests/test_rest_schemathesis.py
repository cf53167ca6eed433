"""Schemathesis against a real ``pystream rest``'s own ``GET /openapi.json``.

Every operation of the document gets requests generated from its schemas (path,
query, each request body content type); none may be answered with a 5xx, and every
answer must match the document (an error is Confluent's ``{"error_code",
"message"}``).  Half the cases name seeded objects (a topic with records, the
cluster's id, a consumer instance, a group with a commit) so that requests get past
the "not found" checks into the handlers.

Bounded: a few examples per operation.  Creating and deleting topics (v3) are left
out: a generated body could ask for a million partitions or delete the seeded topic.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from broker_process import BrokerProcess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from test_rest_v2 import JSON_V2, V2, broker, http, running_proxy

from pystream import AdminClient, NewTopic

__all__ = ["broker", "http"]  # the fixtures this module uses

TOPIC = "schemathesis"
GROUP = "schemathesis-group"
INSTANCE = "schemathesis-instance"
EXAMPLES_PER_OPERATION = int(os.environ.get("REST_SCHEMATHESIS_EXAMPLES", "20"))
SKIPPED = {
    ("POST", "/v3/clusters/{cluster_id}/topics"),
    ("DELETE", "/v3/clusters/{cluster_id}/topics/{topic}"),
}


@pytest.fixture(scope="module")
def proxy(broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """test_rest_v2's proxy but for the instance timeout: the seeded instance must
    outlive the whole run, not expire while other operations are fuzzed."""
    yield from running_proxy(broker, tmp_path_factory, instance_timeout_ms=600_000)


@pytest.fixture(scope="module")
def seeded(broker: BrokerProcess, http: httpx.Client) -> dict[str, Any]:
    """Path parameters that name things that exist: a topic with records, the
    cluster, a consumer instance of a group that has committed offsets."""
    with AdminClient(broker.bootstrap) as admin:
        admin.create_topics([NewTopic(TOPIC, 2, 1)])
    produced = http.post(
        f"/topics/{TOPIC}",
        headers={"Content-Type": JSON_V2},
        json={"records": [{"value": i, "partition": i % 2} for i in range(4)]},
    )
    assert produced.status_code == 200, produced.text
    created = http.post(
        f"/consumers/{GROUP}",
        headers={"Content-Type": V2},
        json={"name": INSTANCE, "format": "json", "auto.offset.reset": "earliest"},
    )
    assert created.status_code == 200, created.text
    base = f"/consumers/{GROUP}/instances/{INSTANCE}"
    assigned = http.post(
        f"{base}/assignments",
        headers={"Content-Type": V2},
        json={"partitions": [{"topic": TOPIC, "partition": 0}]},
    )
    assert assigned.status_code == 204, assigned.text
    committed = http.post(
        f"{base}/offsets",
        headers={"Content-Type": V2},
        json={"offsets": [{"topic": TOPIC, "partition": 0, "offset": 1}]},
    )
    assert committed.status_code == 204, committed.text
    (cluster,) = http.get("/v3/clusters").json()["data"]
    return {
        "topic": TOPIC,
        "partition": 0,
        "group": GROUP,
        "name": INSTANCE,
        "cluster_id": cluster["cluster_id"],
    }


def test_openapi_document_is_valid(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    validate(document)  # raises, naming the offending part, if not valid OpenAPI 3.1
    produce = document["paths"]["/topics/{topic}"]["post"]
    assert set(produce["requestBody"]["content"]) == {
        JSON_V2,
        "application/vnd.kafka.binary.v2+json",
        "application/json",
    }
    partition = document["paths"]["/topics/{topic}/partitions/{partition}"]["get"]
    (param,) = [p for p in partition["parameters"] if p["name"] == "partition"]
    assert param["schema"]["type"] == "integer"


def test_schemathesis_finds_no_server_error(
    proxy: str, http: httpx.Client, seeded: dict[str, Any]
) -> None:
    schema = schemathesis.openapi.from_url(f"{proxy}/openapi.json")
    session = requests.Session()
    requests_per_operation: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    # Deleting the seeded consumer instance goes last: the others use it.
    operations.sort(key=lambda op: op.method.upper() == "DELETE" and op.path.endswith("{name}"))
    assert len(operations) >= 30, [op.label for op in operations]
    for operation in operations:
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        known = {
            name: seeded[name]
            for name in ("topic", "partition", "group", "name", "cluster_id")
            if "{" + name + "}" in operation.path
        }
        strategy = st.one_of(
            operation.as_strategy(mode, path_parameters=fixed)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            for fixed in (None, known)
        )

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=os.environ.get("REST_SCHEMATHESIS_RANDOM") is None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            requests_per_operation[case.operation.label] += 1
            response = case.call_and_validate(
                base_url=proxy,
                session=session,
                checks=[not_a_server_error, response_schema_conformance],
                timeout=30,
            )
            statuses[response.status_code] += 1

        try:
            run()
        except (
            Exception,
            BaseExceptionGroup,
        ) as error:  # one operation's failure must not hide the others'
            failures.append(f"{operation.label}: {error}")
    assert not failures, "\n\n".join(failures)
    # Every operation (but the skipped ones) was exercised.
    assert len(requests_per_operation) == len(operations) - len(SKIPPED), requests_per_operation
    # Not only errors: generated requests got through to the handlers' success paths.
    assert sum(n for status, n in statuses.items() if status < 300) >= 20, statuses
    print(f"{sum(requests_per_operation.values())} requests, statuses {dict(statuses)}")
    print(dict(requests_per_operation))
