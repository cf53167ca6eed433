"""Errors and the dead letter queue on a real standalone worker: a sink that rejects
some records through ``errant_record_reporter`` and a value the converter cannot read
both land in the DLQ topic with the original bytes and Kafka's ``__connect.errors.*``
headers, while the rest (through an SMT chain) reach the sink; with
``errors.tolerance=none`` the same bad value fails the task."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from broker_process import BrokerProcess
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import Producer as KafkaProducer
from connect_process import ConnectWorkerProcess, running_worker
from waiting import wait_until


@pytest.fixture(scope="module")
def broker(connect_broker: BrokerProcess) -> BrokerProcess:
    return connect_broker  # the session's broker for Connect tests (conftest.py)


@pytest.fixture(scope="module")
def worker(
    broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConnectWorkerProcess]:
    yield from running_worker(broker, tmp_path_factory.mktemp("connect-errors") / "worker")


@pytest.fixture(scope="module")
def http(worker: ConnectWorkerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=worker.url, timeout=60) as client:
        yield client


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, value)
    assert producer.flush(30) == 0


def consume_all(bootstrap: str, topic: str, count: int) -> list:
    consumer = KafkaConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    messages = []
    try:
        wait_until(lambda: _poll_into(consumer, messages) >= count, 60, f"{count} records")
    finally:
        consumer.close()
    return messages


def _poll_into(consumer: KafkaConsumer, messages: list) -> int:
    message = consumer.poll(0.5)
    if message is not None and message.error() is None:
        messages.append(message)
    return len(messages)


def task_states(http: httpx.Client, name: str) -> list[str]:
    return [t["state"] for t in http.get(f"/connectors/{name}/status").json()["tasks"]]


RECORDS = [
    json.dumps({"n": n, "secret": "hunter2", "ok": n not in (2, 4)}).encode() for n in range(6)
]
NOT_JSON = b"not json"


def sink_config(topic: str, out: Path, tolerance: str) -> dict[str, str]:
    return {
        "connector.class": "connect_plugins.RejectingSinkConnector",
        "topics": topic,
        "file": str(out),
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
        "errors.tolerance": tolerance,
        "errors.log.enable": "true",
        "errors.deadletterqueue.topic.name": f"{topic}-dlq",
        "errors.deadletterqueue.topic.replication.factor": "1",
        "errors.deadletterqueue.context.headers.enable": "true",
        "transforms": "mask,origin",
        "transforms.mask.type": "org.apache.kafka.connect.transforms.MaskField$Value",
        "transforms.mask.fields": "secret",
        "transforms.origin.type": "org.apache.kafka.connect.transforms.InsertField$Value",
        "transforms.origin.static.field": "origin",
        "transforms.origin.static.value": "pystream",
    }


def test_rejected_and_unreadable_records_go_to_the_dlq(
    http: httpx.Client, broker: BrokerProcess, worker: ConnectWorkerProcess, tmp_path: Path
):
    topic = f"errors-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out.jsonl"
    produce(broker.bootstrap, topic, [*RECORDS[:3], NOT_JSON, *RECORDS[3:]])
    response = http.post(
        "/connectors", json={"name": topic, "config": sink_config(topic, out, "all")}
    )
    assert response.status_code == 201, response.text

    def written() -> list[dict]:
        return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []

    wait_until(lambda: len(written()) >= 4, 60, "the accepted records in the sink")
    # The SMT chain ran: the secret masked, the static field inserted.
    assert written() == [
        {"n": n, "secret": "", "ok": True, "origin": "pystream"} for n in (0, 1, 3, 5)
    ]

    dlq = consume_all(broker.bootstrap, f"{topic}-dlq", 3)
    assert len(dlq) == 3
    by_value = {m.value(): dict(m.headers()) for m in dlq}
    # The original bytes, as they were in the topic.
    assert set(by_value) == {RECORDS[2], RECORDS[4], NOT_JSON}
    unreadable = by_value[NOT_JSON]
    assert unreadable["__connect.errors.stage"] == b"VALUE_CONVERTER"
    assert unreadable["__connect.errors.topic"] == topic.encode()
    assert unreadable["__connect.errors.partition"] == b"0"
    assert unreadable["__connect.errors.offset"] == b"3"
    assert unreadable["__connect.errors.connector.name"] == topic.encode()
    assert unreadable["__connect.errors.task.id"] == b"0"
    assert unreadable["__connect.errors.class.name"] == b"JsonConverter"
    rejected = by_value[RECORDS[4]]
    assert rejected["__connect.errors.stage"] == b"TASK_PUT"
    assert rejected["__connect.errors.offset"] == b"5"
    assert rejected["__connect.errors.exception.message"] == b"rejected n=4"
    assert b"ConnectError" in rejected["__connect.errors.exception.class.name"]
    assert b"rejected n=4" in rejected["__connect.errors.exception.stacktrace"]
    assert task_states(http, topic) == ["RUNNING"]
    # errors.log.enable: each failure logged, naming the stage and where the record was;
    # without errors.log.include.messages, not the record itself.
    log = worker.output()
    assert (
        f"Executing stage 'VALUE_CONVERTER' with class 'JsonConverter' consuming topic={topic}"
        in log
    )
    assert "Executing stage 'TASK_PUT'" in log
    assert "not json" not in log
    # Every record was handled (written or in the DLQ): all 7 offsets are committed.
    wait_until(
        lambda: (
            http.get(f"/connectors/{topic}/offsets").json()["offsets"]
            == [
                {
                    "partition": {"kafka_topic": topic, "kafka_partition": 0},
                    "offset": {"kafka_offset": 7},
                }
            ]
        ),
        60,
        "the committed offsets",
    )


def test_without_tolerance_a_bad_record_fails_the_task(
    http: httpx.Client, broker: BrokerProcess, tmp_path: Path
):
    topic = f"strict-{uuid.uuid4().hex[:8]}"
    produce(broker.bootstrap, topic, [RECORDS[0], NOT_JSON])
    response = http.post(
        "/connectors",
        json={"name": topic, "config": sink_config(topic, tmp_path / "out.jsonl", "none")},
    )
    assert response.status_code == 201, response.text
    wait_until(lambda: task_states(http, topic) == ["FAILED"], 60, "the task failed")
    trace = http.get(f"/connectors/{topic}/tasks/0/status").json()["trace"]
    assert "Tolerance exceeded" in trace and "VALUE_CONVERTER" in trace


def test_retriable_transform_failures_are_retried(
    http: httpx.Client, broker: BrokerProcess, tmp_path: Path
):
    topic = f"retry-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out.txt"
    produce(broker.bootstrap, topic, [f"v{i}".encode() for i in range(5)])
    config = {
        "connector.class": "FileStreamSink",
        "topics": topic,
        "file": str(out),
        "transforms": "flaky",
        "transforms.flaky.type": "connect_plugins.FlakyTransform",
        "transforms.flaky.failures": "2",
        "errors.retry.timeout": "60000",
        "errors.retry.delay.max.ms": "50",
    }
    response = http.post("/connectors", json={"name": topic, "config": config})
    assert response.status_code == 201, response.text
    # Each record failed twice, then passed: all arrive, in order, none skipped.
    wait_until(
        lambda: out.exists() and out.read_text().splitlines() == [f"v{i}" for i in range(5)],
        60,
        "every record after its retries",
    )
    assert task_states(http, topic) == ["RUNNING"]

    # Without retries (the default errors.retry.timeout=0) the first failure is final.
    strict = f"{topic}-strict"
    response = http.post(
        "/connectors",
        json={
            "name": strict,
            "config": {**config, "errors.retry.timeout": "0", "file": str(tmp_path / "strict.txt")},
        },
    )
    assert response.status_code == 201, response.text
    wait_until(lambda: task_states(http, strict) == ["FAILED"], 60, "the task failed")
    assert "TRANSFORMATION" in http.get(f"/connectors/{strict}/tasks/0/status").json()["trace"]
