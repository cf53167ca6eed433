"""The HTTP sink against a real HTTP server on loopback (``http_endpoint.Endpoint``)
that can be told to fail its next calls."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator

import pytest
from connect_contexts import ListSinkTaskContext, sink_record
from http_endpoint import Endpoint

from pystream.connect.api import ConfigError, ConnectError, RetriableError
from pystream.connect.connectors.http_sink import HttpSink, HttpSinkConnector, HttpSinkTask


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint()
    yield server
    server.close()


@pytest.fixture
def fresh(endpoint: Endpoint) -> Endpoint:
    endpoint.requests.clear()
    endpoint.failures.clear()
    return endpoint


def start_task(props: dict[str, str], report_errors: bool = False) -> HttpSinkTask:
    task = HttpSinkTask()
    task.initialize(ListSinkTaskContext(props, report_errors))
    task.start(props)
    return task


def test_batches_are_posted_as_json_arrays_with_headers(fresh: Endpoint) -> None:
    task = start_task(
        {
            "http.api.url": fresh.url,
            "batch.max.size": "2",
            "headers": "X-Source:pystream|Authorization:Bearer t0ken",
        }
    )
    try:
        at = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        task.put(
            [
                sink_record("t", 0, {"id": 1, "at": at}),
                sink_record("t", 1, "plain text"),
                sink_record("t", 2, b"\x00\x01"),
            ]
        )
        task.flush({})
    finally:
        task.stop()
    assert fresh.bodies() == [
        [{"id": 1, "at": "2024-01-02T03:04:05+00:00"}, "plain text"],
        [base64.b64encode(b"\x00\x01").decode()],
    ]
    headers = fresh.requests[0]["headers"]
    assert headers["X-Source"] == "pystream"
    assert headers["Authorization"] == "Bearer t0ken"
    assert headers["Content-Type"] == "application/json"
    assert fresh.requests[0]["path"] == "/ingest"


def test_server_errors_are_retried_then_succeed(fresh: Endpoint) -> None:
    fresh.failures.extend([503, "drop", 500])
    task = start_task(
        {"http.api.url": fresh.url, "max.retries": "3", "retry.backoff.ms": "10",
         "auth.type": "BASIC", "connection.user": "u", "connection.password": "p"}
    )  # fmt: skip
    try:
        task.put([sink_record("t", 0, {"n": 1})])
    finally:
        task.stop()
    # Three failed attempts (the dropped connection is one), then the one that worked;
    # httpx may retry a dropped keep-alive connection itself, so count the bodies.
    assert fresh.bodies()[-1] == [{"n": 1}]
    assert len(fresh.requests) >= 4 and fresh.failures == []
    expected = "Basic " + base64.b64encode(b"u:p").decode()
    assert {r["headers"]["Authorization"] for r in fresh.requests} == {expected}


def test_retries_run_out_with_a_retriable_error(fresh: Endpoint) -> None:
    fresh.failures.extend([502, 502, 502])
    task = start_task({"http.api.url": fresh.url, "max.retries": "2", "retry.backoff.ms": "1"})
    try:
        with pytest.raises(RetriableError, match="502"):
            task.put([sink_record("t", 0, {"n": 1})])
        assert len(fresh.requests) == 3
        # The worker delivers the records again: now they go through.
        task.put([sink_record("t", 0, {"n": 1})])
        assert fresh.bodies()[-1] == [{"n": 1}]
    finally:
        task.stop()


def test_client_errors_fail_or_go_to_the_dead_letter_queue(fresh: Endpoint) -> None:
    fresh.failures.append(400)
    task = start_task({"http.api.url": fresh.url, "retry.backoff.ms": "1"})
    try:
        with pytest.raises(ConnectError, match="400") as failure:
            task.put([sink_record("t", 0, {"n": 1})])
        assert not isinstance(failure.value, RetriableError)
        assert len(fresh.requests) == 1  # a 4xx is not retried
    finally:
        task.stop()
    fresh.failures.append(422)
    reporting = start_task({"http.api.url": fresh.url, "batch.max.size": "2"}, report_errors=True)
    try:
        records = [sink_record("t", i, {"n": i}) for i in range(3)]
        reporting.put(records)
        # The rejected batch (the first two) is reported; the next one is sent.
        assert [r for r, _ in reporting.context.errant] == records[:2]
        assert "422" in str(reporting.context.errant[0][1])
        assert fresh.bodies()[-1] == [{"n": 2}]
    finally:
        reporting.stop()


def test_config_errors() -> None:
    connector = HttpSinkConnector()
    assert HttpSink is HttpSinkConnector
    with pytest.raises(ConfigError, match="http.api.url"):
        connector.start({"topics": "t"})
    with pytest.raises(ConfigError, match="http.api.url"):
        connector.start({"http.api.url": "ftp://x"})
    with pytest.raises(ConfigError, match="headers"):
        connector.start({"http.api.url": "http://127.0.0.1:1/", "headers": "no-colon"})
    with pytest.raises(ConfigError, match="connection.user"):
        connector.start({"http.api.url": "http://127.0.0.1:1/", "auth.type": "BASIC"})
    connector.start({"http.api.url": "http://127.0.0.1:1/", "topics": "a"})
    assert len(connector.task_configs(2)) == 2
