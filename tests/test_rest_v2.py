"""The REST proxy's API v2 against a real broker and a real ``pystream rest`` process.

One broker and one proxy for the module; httpx is the HTTP client, confluent-kafka
the independent Kafka client that writes what the proxy reads and reads what it
writes.  Confluent's REST Proxy is the reference for status codes, error codes and
document shapes.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from broker_process import BrokerProcess
from cli_helpers import assert_one_line_error, run
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import Producer as CKProducer
from rest_process import RestProxyProcess
from test_rest_v2_records import SPELLINGS
from tls_certs import CertificateAuthority
from waiting import wait_until

from pystream import AdminClient, NewTopic

V2 = "application/vnd.kafka.v2+json"
JSON_V2 = "application/vnd.kafka.json.v2+json"
BINARY_V2 = "application/vnd.kafka.binary.v2+json"
# Short enough for the expiry test to see an instance go; each other test touches
# its instances far more often than this.
INSTANCE_TIMEOUT_MS = 6_000
BODY_LIMIT = 65_536


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("rest") / "broker",
        # One consumer instance per group joins at once: no need to wait for others.  No
        # auto-creation: producing to an unknown topic is a 404 here (see
        # test_rest_proxy_inside_the_broker for a broker that auto-creates).
        {"group.initial.rebalance.delay.ms": "0", "auto.create.topics.enable": "false"},
    ).start()
    try:
        yield process
    finally:
        process.close()


def running_proxy(
    broker: BrokerProcess,
    tmp_path_factory: pytest.TempPathFactory,
    instance_timeout_ms: int = INSTANCE_TIMEOUT_MS,
) -> Iterator[str]:
    """A ``pystream rest`` over ``broker`` for a module fixture: yields its URL."""
    process = RestProxyProcess(
        tmp_path_factory.mktemp("rest") / "proxy",
        broker.bootstrap,
        {
            "consumer.instance.timeout.ms": str(instance_timeout_ms),
            "max.request.body.bytes": str(BODY_LIMIT),
        },
    ).start()
    try:
        yield process.url
    finally:
        process.close()


@pytest.fixture(scope="module")
def proxy(broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from running_proxy(broker, tmp_path_factory)


@pytest.fixture(scope="module")
def http(proxy: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy, timeout=30) as client:
        yield client


def create_topic(broker: BrokerProcess, partitions: int = 2) -> str:
    name = f"rest-{uuid.uuid4().hex[:10]}"
    with AdminClient(broker.bootstrap) as admin:
        admin.create_topics([NewTopic(name, partitions, 1)])
    return name


def read_with_confluent(broker: BrokerProcess, topic: str, count: int) -> list[Any]:
    consumer = CKConsumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"oracle-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    seen: list[Any] = []
    try:

        def more() -> bool:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                seen.append(message)
            return len(seen) >= count

        wait_until(more, timeout=60, what=f"{count} records of {topic}", interval=0)
    finally:
        consumer.close()
    return sorted(seen, key=lambda m: (m.partition(), m.offset()))


def assert_error(response: httpx.Response, status: int, error_code: int) -> dict[str, Any]:
    """Confluent's error shape: the status, an integer code and a message saying why."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "message"}, body
    assert body["error_code"] == error_code, body
    assert isinstance(body["message"], str) and body["message"], body
    return body


# ---------------------------------------------------------------------- produce


def test_produce_json_and_binary_read_back_with_confluent_kafka(
    broker: BrokerProcess, http: httpx.Client
) -> None:
    topic = create_topic(broker)
    as_json = http.post(
        f"/topics/{topic}",
        headers={"Content-Type": JSON_V2},
        json={
            "records": [
                {"key": "user-1", "value": {"amount": 12.5, "tags": ["a", "é"]}},
                {"value": [1, 2, 3], "partition": 1},
                {"key": None, "value": None, "partition": 0},
            ]
        },
    )
    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"].startswith(V2)
    document = as_json.json()
    assert document["key_schema_id"] is None and document["value_schema_id"] is None
    offsets = document["offsets"]
    assert [o["error_code"] for o in offsets] == [None, None, None]
    assert offsets[1]["partition"] == 1 and offsets[2]["partition"] == 0

    raw = bytes(range(256))
    as_binary = http.post(
        f"/topics/{topic}/partitions/1",
        headers={"Content-Type": BINARY_V2},
        json={
            "records": [
                {
                    "key": base64.b64encode(b"\x00k").decode(),
                    "value": base64.b64encode(raw).decode(),
                }
            ]
        },
    )
    assert as_binary.status_code == 200, as_binary.text
    (binary_offset,) = as_binary.json()["offsets"]
    assert binary_offset["partition"] == 1
    assert binary_offset["offset"] == offsets[1]["offset"] + 1

    plain = http.post(
        f"/topics/{topic}/partitions/0",
        headers={"Content-Type": "application/json; charset=utf-8"},
        content=json.dumps({"records": [{"value": "text"}]}),
    )
    assert plain.status_code == 200, plain.text

    messages = read_with_confluent(broker, topic, 5)
    stored = {(m.partition(), m.offset()): (m.key(), m.value()) for m in messages}
    first = offsets[0]
    assert stored[(first["partition"], first["offset"])] == (
        b'"user-1"',
        json.dumps(
            {"amount": 12.5, "tags": ["a", "é"]}, separators=(",", ":"), ensure_ascii=False
        ).encode(),
    )
    assert stored[(1, offsets[1]["offset"])] == (None, b"[1,2,3]")
    assert stored[(0, offsets[2]["offset"])] == (None, None)
    assert stored[(1, binary_offset["offset"])] == (b"\x00k", raw)
    assert (None, b'"text"') in stored.values()


def test_json_values_are_stored_exactly(broker: BrokerProcess, http: httpx.Client) -> None:
    """Integers beyond 64 bits keep every digit and non-ASCII text stays UTF-8: the
    stored bytes are the value's compact JSON, whichever parser read the body."""
    topic = create_topic(broker, partitions=1)
    values = [
        {"big": 123456789012345678901234567890, "neg": -(2**63)},
        {"text": "d\u00e9j\u00e0 vu \u2603", "n": [1.5, 0.1, True, None]},
        18446744073709551616,
    ]
    response = http.post(
        f"/topics/{topic}",
        headers={"Content-Type": JSON_V2},
        json={"records": [{"value": v} for v in values]},
    )
    assert response.status_code == 200, response.text
    assert [o["error_code"] for o in response.json()["offsets"]] == [None] * len(values)
    stored = [m.value() for m in read_with_confluent(broker, topic, len(values))]
    assert stored == [
        b'{"big":123456789012345678901234567890,"neg":-9223372036854775808}',
        '{"text":"d\u00e9j\u00e0 vu \u2603","n":[1.5,0.1,true,null]}'.encode(),
        b"18446744073709551616",
    ]


def test_spellings_of_a_value_are_stored_as_its_compact_json(
    broker: BrokerProcess, http: httpx.Client
) -> None:
    """A body as clients write it (spaces, escapes, other spellings of a number, a
    repeated key): each value is stored as the compact JSON of what it parses to,
    whether the proxy splits the body in Cython or parses it (``v2_records.pyx``)."""
    topic = create_topic(broker, partitions=1)
    values = [(b'{ "id" : 1 , "tags" : [ "x" , "y" ] }', b'{"id":1,"tags":["x","y"]}'), *SPELLINGS]
    body = b'{"records": [' + b", ".join(b'{"value": ' + v + b"}" for v, _ in values) + b"]}"
    response = http.post(f"/topics/{topic}", headers={"Content-Type": JSON_V2}, content=body)
    assert response.status_code == 200, response.text
    assert [o["error_code"] for o in response.json()["offsets"]] == [None] * len(values)
    stored = [m.value() for m in read_with_confluent(broker, topic, len(values))]
    assert stored == [compact for _, compact in values]
    # A number beyond a double is refused, not stored as null.
    response = http.post(
        f"/topics/{topic}",
        headers={"Content-Type": JSON_V2},
        content=b'{"records":[{"value":1e400}]}',
    )
    assert_error(response, 400, 400)


def test_many_records_in_one_request_keep_their_order(
    broker: BrokerProcess, http: httpx.Client
) -> None:
    """100 records without keys (the proxy builds them as one batch): consecutive
    offsets in one partition, in request order, as confluent-kafka reads them."""
    topic = create_topic(broker, partitions=3)
    values = [f"record-{i}".encode() * (i % 7) for i in range(100)]  # a few are empty
    response = http.post(
        f"/topics/{topic}",
        headers={"Content-Type": BINARY_V2},
        json={"records": [{"value": base64.b64encode(v).decode()} for v in values]},
    )
    assert response.status_code == 200, response.text
    offsets = response.json()["offsets"]
    assert {o["error_code"] for o in offsets} == {None}
    (partition,) = {o["partition"] for o in offsets}
    first = offsets[0]["offset"]
    assert [o["offset"] for o in offsets] == list(range(first, first + 100))
    messages = read_with_confluent(broker, topic, 100)
    assert [(m.partition(), m.offset()) for m in messages] == [
        (partition, o["offset"]) for o in offsets
    ]
    assert [m.value() for m in messages] == values


def test_a_record_for_a_missing_partition_fails_alone(
    broker: BrokerProcess, http: httpx.Client
) -> None:
    topic = create_topic(broker, partitions=2)
    response = http.post(
        f"/topics/{topic}",
        headers={"Content-Type": JSON_V2},
        json={"records": [{"value": 1, "partition": 0}, {"value": 2, "partition": 7}]},
    )
    assert response.status_code == 200, response.text
    good, bad = response.json()["offsets"]
    assert good["error_code"] is None and good["offset"] == 0
    assert bad["offset"] is None and bad["error_code"] == 40403
    assert "7" in bad["error"]
    assert [m.value() for m in read_with_confluent(broker, topic, 1)] == [b"1"]


def test_topic_and_partition_documents(broker: BrokerProcess, http: httpx.Client) -> None:
    topic = create_topic(broker, partitions=3)
    produced = http.post(
        f"/topics/{topic}/partitions/2",
        headers={"Content-Type": JSON_V2},
        json={"records": [{"value": i} for i in range(4)]},
    )
    assert produced.status_code == 200, produced.text

    assert topic in http.get("/topics").json()
    document = http.get(f"/topics/{topic}").json()
    assert document["name"] == topic
    assert document["configs"]["cleanup.policy"] == "delete"
    assert [p["partition"] for p in document["partitions"]] == [0, 1, 2]
    partitions = http.get(f"/topics/{topic}/partitions").json()
    assert partitions == document["partitions"]
    one = http.get(f"/topics/{topic}/partitions/2").json()
    assert one["partition"] == 2
    assert one["replicas"] == [{"broker": one["leader"], "leader": True, "in_sync": True}]
    offsets = http.get(f"/topics/{topic}/partitions/2/offsets").json()
    assert offsets == {"beginning_offset": 0, "end_offset": 4}


# ---------------------------------------------------------------------- consumers


def new_instance(http: httpx.Client, group: str, **settings: Any) -> str:
    response = http.post(f"/consumers/{group}", headers={"Content-Type": V2}, json=settings)
    assert response.status_code == 200, response.text
    document = response.json()
    path = f"/consumers/{group}/instances/{document['instance_id']}"
    assert document["base_uri"] == str(http.base_url).rstrip("/") + path
    return path


def poll_records(
    http: httpx.Client, instance: str, count: int, accept: str = JSON_V2
) -> list[dict[str, Any]]:
    """GET records until ``count`` arrived (a group join takes a few polls)."""
    got: list[dict[str, Any]] = []

    def more() -> bool:
        response = http.get(
            f"{instance}/records", params={"timeout": 500}, headers={"Accept": accept}
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(accept)
        got.extend(response.json())
        return len(got) >= count

    wait_until(more, timeout=60, what=f"{count} records from {instance}", interval=0)
    return got


def test_instance_lifecycle_commit_and_resume(broker: BrokerProcess, http: httpx.Client) -> None:
    topic = create_topic(broker, partitions=1)
    producer = CKProducer({"bootstrap.servers": broker.bootstrap})
    for i in range(5):
        producer.produce(topic, key=json.dumps(f"k{i}"), value=json.dumps({"n": i}))
    assert producer.flush(30) == 0
    group = f"g-{uuid.uuid4().hex[:8]}"
    settings = {
        "name": "worker",
        "format": "json",
        "auto.offset.reset": "earliest",
        "auto.commit.enable": "false",
    }

    instance = new_instance(http, group, **settings)
    taken = http.post(f"/consumers/{group}", headers={"Content-Type": V2}, json=settings)
    assert_error(taken, 409, 40902)
    subscribed = http.post(
        f"{instance}/subscription", headers={"Content-Type": V2}, json={"topics": [topic]}
    )
    assert subscribed.status_code == 204, subscribed.text
    assert http.get(f"{instance}/subscription").json() == {"topics": [topic]}

    records = poll_records(http, instance, 5)
    assert [(r["offset"], r["key"], r["value"]) for r in records] == [
        (i, f"k{i}", {"n": i}) for i in range(5)
    ]
    assert all(r["topic"] == topic and r["partition"] == 0 for r in records)
    assert http.get(f"{instance}/assignments").json() == {
        "partitions": [{"topic": topic, "partition": 0}]
    }
    # A binary Accept on a json instance: Confluent's 406 / 40601.
    mismatch = http.get(f"{instance}/records", headers={"Accept": BINARY_V2})
    assert_error(mismatch, 406, 40601)

    committed = http.post(f"{instance}/offsets", headers={"Content-Type": V2})
    assert committed.status_code == 204, committed.text
    asked = http.request(
        "GET",
        f"{instance}/offsets",
        headers={"Content-Type": V2},
        json={"partitions": [{"topic": topic, "partition": 0}]},
    )
    assert asked.json() == {
        "offsets": [{"topic": topic, "partition": 0, "offset": 5, "metadata": ""}]
    }
    assert http.delete(instance).status_code == 204
    assert_error(http.get(f"{instance}/subscription"), 404, 40403)

    for i in range(5, 8):
        producer.produce(topic, key=json.dumps(f"k{i}"), value=json.dumps({"n": i}))
    assert producer.flush(30) == 0
    again = new_instance(http, group, **settings)
    assert again == instance
    http.post(f"{again}/subscription", headers={"Content-Type": V2}, json={"topics": [topic]})
    resumed = poll_records(http, again, 3)
    assert [r["offset"] for r in resumed] == [5, 6, 7]
    assert http.delete(again).status_code == 204


def test_assignments_and_positions(broker: BrokerProcess, http: httpx.Client) -> None:
    topic = create_topic(broker, partitions=2)
    values = [base64.b64encode(bytes([i]) * 3).decode() for i in range(6)]
    produced = http.post(
        f"/topics/{topic}/partitions/1",
        headers={"Content-Type": BINARY_V2},
        json={"records": [{"value": v} for v in values]},
    )
    assert produced.status_code == 200, produced.text
    instance = new_instance(http, f"g-{uuid.uuid4().hex[:8]}", format="binary")
    partition = {"topic": topic, "partition": 1}
    assigned = http.post(
        f"{instance}/assignments", headers={"Content-Type": V2}, json={"partitions": [partition]}
    )
    assert assigned.status_code == 204, assigned.text
    assert http.get(f"{instance}/assignments").json() == {"partitions": [partition]}
    # A partition or topic that does not exist: 404 with Confluent's codes, and the
    # instance keeps the assignment it had.
    for missing, code in (
        ({"topic": topic, "partition": 2}, 40402),
        ({"topic": "nope-x", "partition": 0}, 40401),
    ):
        assert_error(
            http.post(
                f"{instance}/assignments",
                headers={"Content-Type": V2},
                json={"partitions": [partition, missing]},
            ),
            404,
            code,
        )
    assert http.get(f"{instance}/assignments").json() == {"partitions": [partition]}
    # Assigned partitions and a subscription do not mix (Confluent's 409 / 40901).
    assert_error(
        http.post(
            f"{instance}/subscription", headers={"Content-Type": V2}, json={"topics": [topic]}
        ),
        409,
        40901,
    )

    # Seeking a partition the instance does not hold: Kafka's IllegalState, 409 / 40903.
    elsewhere = {"offsets": [{"topic": topic, "partition": 0, "offset": 1}]}
    assert_error(
        http.post(f"{instance}/positions", headers={"Content-Type": V2}, json=elsewhere), 409, 40903
    )
    seek = http.post(
        f"{instance}/positions",
        headers={"Content-Type": V2},
        json={"offsets": [{**partition, "offset": 4}]},
    )
    assert seek.status_code == 204, seek.text
    tail = poll_records(http, instance, 2, accept=BINARY_V2)
    assert [(r["offset"], r["value"]) for r in tail] == [(4, values[4]), (5, values[5])]

    beginning = http.post(
        f"{instance}/positions/beginning",
        headers={"Content-Type": V2},
        json={"partitions": [partition]},
    )
    assert beginning.status_code == 204

    # max_bytes 3: one 3-byte value per response, in order.
    def first_response() -> list[dict[str, Any]]:
        response = http.get(
            f"{instance}/records",
            params={"timeout": 500, "max_bytes": 3},
            headers={"Accept": BINARY_V2},
        )
        assert response.status_code == 200, response.text
        return response.json()

    first = wait_until(first_response, timeout=60, what="records after seeking to the beginning")
    assert [(r["offset"], r["value"]) for r in first] == [(0, values[0])]
    second = wait_until(first_response, timeout=60, what="the next record")
    assert [(r["offset"], r["value"]) for r in second] == [(1, values[1])]

    end = http.post(
        f"{instance}/positions/end", headers={"Content-Type": V2}, json={"partitions": [partition]}
    )
    assert end.status_code == 204
    http.post(
        f"/topics/{topic}/partitions/1",
        headers={"Content-Type": BINARY_V2},
        json={"records": [{"value": "QUJD"}]},
    )
    after_end = poll_records(http, instance, 1, accept=BINARY_V2)
    assert [(r["offset"], r["value"]) for r in after_end] == [(6, "QUJD")]
    assert http.delete(instance).status_code == 204


def test_idle_instance_expires(http: httpx.Client) -> None:
    instance = new_instance(http, f"g-{uuid.uuid4().hex[:8]}")
    assert http.get(f"{instance}/assignments").status_code == 200

    def gone() -> httpx.Response | None:
        response = http.get(f"{instance}/assignments")
        return response if response.status_code == 404 else None

    # Polling every 3 s keeps the check light but, being shorter than the timeout,
    # would keep the instance alive if a 200 refreshed it: only GETs of gone ones 404.
    expired = wait_until(
        gone,
        timeout=INSTANCE_TIMEOUT_MS / 1000 * 5,
        what="the idle instance to expire",
        interval=INSTANCE_TIMEOUT_MS / 1000 + 1,
    )
    assert_error(expired, 404, 40403)


# ---------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def topic(broker: BrokerProcess) -> str:
    return create_topic(broker, partitions=1)


BAD_REQUESTS = {
    "malformed JSON": ("POST", "/topics/{topic}", JSON_V2, b'{"records": [', 400, 400),
    # Not JSON (Python's own parser would take it): refused, as Confluent's Jackson does.
    "NaN value": ("POST", "/topics/{topic}", JSON_V2, b'{"records": [{"value": NaN}]}', 400, 400),
    "not an object": ("POST", "/topics/{topic}", JSON_V2, b"[1, 2]", 422, 42203),
    "no records": ("POST", "/topics/{topic}", JSON_V2, b'{"records": []}', 422, 42203),
    "wrong content type": ("POST", "/topics/{topic}", "text/plain", b'{"records": []}', 415, 415),
    "schema format": (
        "POST",
        "/topics/{topic}",
        "application/vnd.kafka.avro.v2+json",
        b"{}",
        415,
        415,
    ),
    "bad base64": (
        "POST",
        "/topics/{topic}",
        BINARY_V2,
        b'{"records": [{"value": "not*base64"}]}',
        422,
        42203,
    ),
    "unknown topic": (
        "POST",
        "/topics/no-such-topic",
        JSON_V2,
        b'{"records": [{"value": 1}]}',
        404,
        40401,
    ),
    "unknown topic GET": ("GET", "/topics/no-such-topic", None, None, 404, 40401),
    "invalid topic name": ("GET", "/topics/not%20a%20topic/partitions", None, None, 404, 40401),
    "unknown partition": ("GET", "/topics/{topic}/partitions/5", None, None, 404, 40402),
    "produce to unknown partition": (
        "POST",
        "/topics/{topic}/partitions/5",
        JSON_V2,
        b'{"records": [{"value": 1}]}',
        404,
        40402,
    ),
    "produce to a partition that is not a number": (
        "POST",
        "/topics/{topic}/partitions/one",
        JSON_V2,
        b'{"records": [{"value": 1}]}',
        404,
        40402,
    ),
    "produce to an empty topic name": ("POST", "/topics//partitions/0", JSON_V2, b"{}", 404, 404),
    "unknown instance": ("GET", "/consumers/g/instances/nobody/records", None, None, 404, 40403),
    "delete unknown instance": ("DELETE", "/consumers/g/instances/nobody", None, None, 404, 40403),
    "bad consumer format": ("POST", "/consumers/g", V2, b'{"format": "avro"}', 422, 42204),
    "bad offset reset": ("POST", "/consumers/g", V2, b'{"auto.offset.reset": "soon"}', 422, 42204),
    "consumer wrong content type": ("POST", "/consumers/g", "text/xml", b"<a/>", 415, 415),
    # Found by schemathesis (test_rest_schemathesis.py): each was a 500.
    "non-ASCII digit partition": (
        "GET",
        "/topics/{topic}/partitions/\u00b2",
        None,
        None,
        404,
        40402,
    ),
    "non-ASCII digit timeout": (
        "GET",
        "/consumers/g/instances/nobody/records?timeout=\u00b2",
        None,
        None,
        422,
        42203,
    ),
    "no such route": ("GET", "/no/such/path", None, None, 404, 404),
    "wrong method": ("PUT", "/topics", None, None, 405, 405),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_requests_get_confluent_errors(http: httpx.Client, topic: str, case: str) -> None:
    method, path, content_type, body, status, code = BAD_REQUESTS[case]
    headers = {"Content-Type": content_type} if content_type else {}
    response = http.request(method, path.format(topic=topic), headers=headers, content=body)
    assert_error(response, status, code)


def test_numbers_past_kafkas_widths_are_422_not_500(http: httpx.Client, topic: str) -> None:
    """Found by schemathesis: an int64 offset or int32 partition overflowed the client's
    encoder (a 500) once the request reached a real instance."""
    instance = new_instance(http, f"wide-{uuid.uuid4().hex[:8]}")
    try:
        too_far = http.post(
            f"{instance}/offsets",
            headers={"Content-Type": V2},
            json={"offsets": [{"topic": topic, "partition": 0, "offset": 2**64}]},
        )
        assert "offset" in assert_error(too_far, 422, 42203)["message"]
        too_wide = http.post(
            f"{instance}/assignments",
            headers={"Content-Type": V2},
            json={"partitions": [{"topic": topic, "partition": 2**31}]},
        )
        assert "partition" in assert_error(too_wide, 422, 42203)["message"]
        # The instance still works: the bad requests changed nothing.
        assert http.get(f"{instance}/assignments").json() == {"partitions": []}
    finally:
        assert http.delete(instance).status_code == 204


def test_oversize_body_is_413_and_nothing_is_written(
    broker: BrokerProcess, http: httpx.Client, topic: str
) -> None:
    before = http.get(f"/topics/{topic}/partitions/0/offsets").json()["end_offset"]
    records = {"records": [{"value": "x" * 1000} for _ in range(BODY_LIMIT // 1000 + 1)]}
    response = http.post(f"/topics/{topic}", headers={"Content-Type": JSON_V2}, json=records)
    body = assert_error(response, 413, 413)
    assert "max.request.body.bytes" in body["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted as it streams
        payload = json.dumps(records).encode()
        for i in range(0, len(payload), 8192):
            yield payload[i : i + 8192]

    streamed = http.post(f"/topics/{topic}", headers={"Content-Type": JSON_V2}, content=chunks())
    assert_error(streamed, 413, 413)
    assert http.get(f"/topics/{topic}/partitions/0/offsets").json()["end_offset"] == before


BAD_CONFIGS = {
    "consumer.instance.timeout.ms=soon": ("consumer.instance.timeout.ms must be an integer",),
    # A Kafka client setting without its client. prefix.
    "security.protocol=SSL": ("unknown setting(s) security.protocol", "client."),
    "ssl.client.authentication=REQUIRED": ("needs ssl.truststore.location",),
}


@pytest.mark.parametrize("line", BAD_CONFIGS)
def test_bad_config_is_one_line_error(tmp_path: Path, broker: BrokerProcess, line: str) -> None:
    config = tmp_path / "rest.properties"
    config.write_text(line + "\n")
    result = run(
        "rest",
        "--bootstrap-server",
        broker.bootstrap,
        "--port",
        "0",
        "--config",
        str(config),
        check=False,
    )
    assert_one_line_error(result, *BAD_CONFIGS[line])


def test_sigterm_closes_instances_and_exits_cleanly(broker: BrokerProcess, tmp_path: Path) -> None:
    process = RestProxyProcess(tmp_path / "proxy", broker.bootstrap).start()
    try:
        group = f"g-{uuid.uuid4().hex[:8]}"
        topic = create_topic(broker, partitions=1)
        with httpx.Client(base_url=process.url, timeout=30) as client:
            instance = new_instance(client, group, format="binary")
            client.post(
                f"{instance}/subscription", headers={"Content-Type": V2}, json={"topics": [topic]}
            )
            client.get(f"{instance}/records", params={"timeout": 100})
            with AdminClient(broker.bootstrap) as admin:
                wait_until(
                    lambda: admin.describe_groups([group])[group].members,
                    timeout=60,
                    what="the instance to join its group",
                )
                assert process.stop(signal.SIGTERM) == 0
                # The instance left its group on the way out (no session timeout to wait for).
                assert admin.describe_groups([group])[group].members == []
        assert "shut down" in process.output()
        assert "Traceback" not in process.output()
    finally:
        process.close()


def test_rest_proxy_inside_the_broker(tmp_path: Path) -> None:
    """``rest.enable=true``: ``pystream serve`` alone serves Kafka and HTTP, configured by
    ``rest.config.file`` as ``pystream rest --config``."""
    rest_properties = tmp_path / "kafka-rest.properties"
    rest_properties.write_text("max.request.body.bytes=2000\nproducer.linger.ms=0\n")
    inside = BrokerProcess(
        tmp_path / "broker",
        {
            "rest.enable": "true",
            "rest.port": "0",
            "num.partitions": "1",
            "rest.config.file": str(rest_properties),
        },
    ).start()
    try:
        match = re.search(r"rest proxy listening on (http://\S+)", inside.output())
        assert match, inside.output()
        with httpx.Client(base_url=match.group(1), timeout=30) as client:
            produced = client.post(
                "/topics/inside",
                headers={"Content-Type": JSON_V2},
                json={"records": [{"value": {"from": "http"}}]},
            )
            # An unknown topic is auto-created, as through Confluent's proxy (the broker's
            # auto.create.topics.enable is on by default); GET alone never creates one.
            assert_error(client.get("/topics/never-produced"), 404, 40401)
            assert produced.status_code == 200, produced.text
            assert produced.json()["offsets"][0]["offset"] == 0
            assert client.get("/topics/inside").status_code == 200
            assert_error(client.get("/topics/never-produced"), 404, 40401)
            too_large = client.post(
                "/topics/inside",
                headers={"Content-Type": JSON_V2},
                json={"records": [{"value": "x" * 3000}]},
            )
            assert_error(too_large, 413, 413)  # rest.config.file's max.request.body.bytes
        (message,) = read_with_confluent(inside, "inside", 1)
        assert message.value() == b'{"from":"http"}'
        assert inside.stop() == 0
        assert "Traceback" not in inside.output()
    finally:
        inside.close()


def test_https_listener_with_client_certificates(broker: BrokerProcess, tmp_path: Path) -> None:
    """TLS on the HTTP listener (Confluent's ssl.* keys, PEM files); with
    ssl.client.authentication=REQUIRED a client without a certificate is refused."""
    ca = CertificateAuthority(tmp_path / "ca")
    server = ca.issue("rest", "localhost", password="key-pw")
    client = ca.issue("client", "reader")
    process = RestProxyProcess(
        tmp_path / "proxy",
        broker.bootstrap,
        {
            "ssl.keystore.location": str(server.pem),
            "ssl.key.password": "key-pw",
            "ssl.truststore.location": str(ca.ca_file),
            "ssl.client.authentication": "REQUIRED",
        },
    ).start()
    try:
        assert process.url.startswith("https://127.0.0.1:"), process.url
        context = ssl.create_default_context(cafile=str(ca.ca_file))
        context.load_cert_chain(str(client.cert), str(client.key))
        with httpx.Client(base_url=process.url, verify=context, timeout=30) as https:
            assert https.get("/topics").status_code == 200
            created = https.post("/consumers/tls", headers={"Content-Type": V2}, json={})
            assert created.json()["base_uri"].startswith("https://")
            assert https.delete(created.json()["base_uri"]).status_code == 204
        without_certificate = ssl.create_default_context(cafile=str(ca.ca_file))
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{process.url}/topics", verify=without_certificate, timeout=30)
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA
            httpx.get(f"{process.url}/topics", timeout=30)
    finally:
        process.close()


def test_openapi_document_covers_every_route(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    operations = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    for method, path in [
        ("GET", "/topics"),
        ("POST", "/topics/{topic}/partitions/{partition}"),
        ("POST", "/consumers/{group}"),
        ("GET", "/consumers/{group}/instances/{name}/records"),
        ("POST", "/consumers/{group}/instances/{name}/positions/end"),
        ("DELETE", "/consumers/{group}/instances/{name}"),
        ("POST", "/v3/clusters/{cluster_id}/topics"),
        ("POST", "/v3/clusters/{cluster_id}/topics/{topic}/records"),
    ]:
        assert (method, path) in operations, (method, path)
    produce = document["paths"]["/topics/{topic}"]["post"]
    assert set(produce["requestBody"]["content"]) == {JSON_V2, BINARY_V2, "application/json"}
    records = document["paths"]["/consumers/{group}/instances/{name}/records"]["get"]
    assert {p["name"] for p in records["parameters"]} == {"group", "name", "timeout", "max_bytes"}
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)), "OpenAPI operation ids must be unique"
    # Every POST that reads a body says what it takes.
    for path, item in document["paths"].items():
        if "post" in item and not path.endswith("/offsets"):
            assert "requestBody" in item["post"], path
