"""Kafka Connect's REST API on a real standalone worker (``pystream connect
standalone``), over HTTP with httpx: every path, Kafka's JSON shapes and status codes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from broker_process import BrokerProcess
from connect_process import ConnectWorkerProcess, running_worker
from waiting import wait_until

from pystream.client import AdminClient, TopicPartition
from pystream.errors import UnknownTopicOrPartitionError

SOURCE = "pystream.connect.connectors.file.FileStreamSourceConnector"


@pytest.fixture(scope="module")
def broker(connect_broker: BrokerProcess) -> BrokerProcess:
    return connect_broker  # the session's broker for Connect tests (conftest.py)


@pytest.fixture(scope="module")
def worker(
    broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConnectWorkerProcess]:
    yield from running_worker(broker, tmp_path_factory.mktemp("connect-rest") / "worker")


@pytest.fixture(scope="module")
def http(worker: ConnectWorkerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=worker.url, timeout=60) as client:
        yield client


def source_config(tmp_path: Path, topic: str) -> dict[str, str]:
    path = tmp_path / f"{topic}.txt"
    path.touch()
    return {"connector.class": "FileStreamSource", "file": str(path), "topic": topic}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def status(http: httpx.Client, name: str) -> dict:
    response = http.get(f"/connectors/{name}/status")
    assert response.status_code == 200, response.text
    return response.json()


def states(http: httpx.Client, name: str) -> tuple[str, list[str]]:
    body = status(http, name)
    return body["connector"]["state"], [t["state"] for t in body["tasks"]]


def create(http: httpx.Client, name: str, config: dict[str, str]) -> dict:
    response = http.post("/connectors", json={"name": name, "config": config})
    assert response.status_code == 201, response.text
    wait_until(lambda: states(http, name) == ("RUNNING", ["RUNNING"]), 60, f"{name} running")
    return response.json()


def high_watermark(bootstrap: str, topic: str) -> int:
    with AdminClient(bootstrap) as admin:
        try:
            return admin.list_offsets({TopicPartition(topic, 0): "latest"})[
                TopicPartition(topic, 0)
            ]
        except UnknownTopicOrPartitionError:
            return 0  # not created yet, or created and not ready yet


def test_root_and_plugins(http: httpx.Client):
    root = http.get("/")
    assert root.status_code == 200
    assert set(root.json()) == {"version", "commit", "kafka_cluster_id"}
    plugins = http.get("/connector-plugins").json()
    classes = {p["class"]: p["type"] for p in plugins}
    assert classes[SOURCE] == "source"
    assert classes["pystream.connect.connectors.file.FileStreamSinkConnector"] == "sink"
    assert all(set(p) == {"class", "type", "version"} for p in plugins)


def test_create_read_update_delete(http: httpx.Client, tmp_path: Path):
    name = unique("crud")
    config = source_config(tmp_path, name)
    info = create(http, name, config)
    assert info == {
        "name": name,
        "config": {**config, "name": name},
        "tasks": [{"connector": name, "task": 0}],
        "type": "source",
    }
    again = http.post("/connectors", json={"name": name, "config": config})
    assert again.status_code == 409
    assert again.json()["error_code"] == 409 and name in again.json()["message"]

    assert name in http.get("/connectors").json()
    expanded = http.get("/connectors", params=[("expand", "status"), ("expand", "info")]).json()
    assert expanded[name]["status"]["connector"]["state"] == "RUNNING"
    assert expanded[name]["info"]["type"] == "source"
    assert http.get(f"/connectors/{name}").json() == info
    assert http.get(f"/connectors/{name}/config").json() == {**config, "name": name}
    tasks = http.get(f"/connectors/{name}/tasks").json()
    assert tasks[0]["id"] == {"connector": name, "task": 0}
    assert tasks[0]["config"]["topic"] == name

    # PUT config updates (200) an existing connector, creates (201) a new one.
    updated = {**config, "batch.size": "10"}
    response = http.put(f"/connectors/{name}/config", json=updated)
    assert response.status_code == 200, response.text
    assert response.json()["config"]["batch.size"] == "10"
    other = unique("put")
    response = http.put(f"/connectors/{other}/config", json=source_config(tmp_path, other))
    assert response.status_code == 201, response.text
    mismatch = http.put(f"/connectors/{other}/config", json={**config, "name": "another"})
    assert mismatch.status_code == 400

    for connector in (name, other):
        assert http.delete(f"/connectors/{connector}").status_code == 204
    missing = http.get(f"/connectors/{name}")
    assert missing.status_code == 404
    assert missing.json() == {"error_code": 404, "message": f"Connector {name} not found"}
    assert http.delete(f"/connectors/{name}").status_code == 404
    assert name not in http.get("/connectors").json()


def test_bad_requests(http: httpx.Client, tmp_path: Path):
    no_topic = http.post(
        "/connectors",
        json={"name": unique("bad"), "config": {"connector.class": "FileStreamSource"}},
    )
    assert no_topic.status_code == 400
    assert "topic" in no_topic.json()["message"]
    unknown = http.post(
        "/connectors", json={"name": unique("bad"), "config": {"connector.class": "NoSuchThing"}}
    )
    assert unknown.status_code == 400 and "NoSuchThing" in unknown.json()["message"]
    malformed = http.post("/connectors", content=b"{", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["error_code"] == 400
    assert http.get("/connectors/x/tasks/abc/status").status_code == 404
    assert http.post("/connectors/x/restart", params={"includeTasks": "maybe"}).status_code == 400


def test_pause_and_resume(http: httpx.Client, broker: BrokerProcess, tmp_path: Path):
    name = unique("pause")
    config = source_config(tmp_path, name)
    create(http, name, config)
    source = Path(config["file"])
    source.write_text("a\nb\n")
    wait_until(lambda: high_watermark(broker.bootstrap, name) == 2, 60, "2 records")

    assert http.put(f"/connectors/{name}/pause").status_code == 202
    wait_until(lambda: states(http, name) == ("PAUSED", ["PAUSED"]), 60, "paused")
    with source.open("a") as handle:
        handle.write("c\nd\n")
    # A paused task does not poll: nothing arrives while it stays paused.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert high_watermark(broker.bootstrap, name) == 2
    assert http.put(f"/connectors/{name}/resume").status_code == 202
    wait_until(lambda: states(http, name) == ("RUNNING", ["RUNNING"]), 60, "running")
    wait_until(lambda: high_watermark(broker.bootstrap, name) == 4, 60, "the lines after resume")
    http.delete(f"/connectors/{name}")


def test_restart_and_task_endpoints(http: httpx.Client, tmp_path: Path):
    name = unique("restart")
    create(http, name, source_config(tmp_path, name))
    assert http.post(f"/connectors/{name}/restart").status_code == 204
    response = http.post(f"/connectors/{name}/restart", params={"includeTasks": "true"})
    assert response.status_code == 202
    body = response.json()
    assert body["connector"]["state"] == "RESTARTING"
    assert [t["state"] for t in body["tasks"]] == ["RESTARTING"]
    wait_until(lambda: states(http, name) == ("RUNNING", ["RUNNING"]), 60, "running again")

    task = http.get(f"/connectors/{name}/tasks/0/status")
    assert task.status_code == 200
    assert task.json()["id"] == 0 and task.json()["state"] == "RUNNING"
    assert "worker_id" in task.json()
    assert http.post(f"/connectors/{name}/tasks/0/restart").status_code == 204
    wait_until(lambda: states(http, name) == ("RUNNING", ["RUNNING"]), 60, "task running")
    assert http.get(f"/connectors/{name}/tasks/7/status").status_code == 404
    assert http.post(f"/connectors/{name}/tasks/7/restart").status_code == 404
    http.delete(f"/connectors/{name}")


def test_failed_task_has_a_trace_and_restarts_only_failed(http: httpx.Client, tmp_path: Path):
    name = unique("failing")
    target = tmp_path / "no-such-dir" / "out.txt"
    response = http.post(
        "/connectors",
        json={
            "name": name,
            "config": {"connector.class": "FileStreamSink", "file": str(target), "topics": name},
        },
    )
    assert response.status_code == 201, response.text
    wait_until(lambda: states(http, name) == ("RUNNING", ["FAILED"]), 60, "the task failed")
    failed = status(http, name)["tasks"][0]
    assert "no-such-dir" in failed["trace"]

    target.parent.mkdir()  # the cause is mended: the restarted task runs
    response = http.post(
        f"/connectors/{name}/restart", params={"includeTasks": "true", "onlyFailed": "true"}
    )
    assert response.status_code == 202
    body = response.json()
    assert body["connector"]["state"] == "RUNNING"  # not failed: not restarted
    assert [t["state"] for t in body["tasks"]] == ["RESTARTING"]
    wait_until(lambda: states(http, name) == ("RUNNING", ["RUNNING"]), 60, "restarted task")
    http.delete(f"/connectors/{name}")


def test_stop_and_resume(http: httpx.Client, tmp_path: Path):
    name = unique("stop")
    create(http, name, source_config(tmp_path, name))
    assert http.put(f"/connectors/{name}/stop").status_code == 204
    wait_until(lambda: states(http, name) == ("STOPPED", []), 60, "stopped, no tasks")
    assert http.get(f"/connectors/{name}").json()["tasks"] == []
    assert http.put(f"/connectors/{name}/resume").status_code == 202
    wait_until(lambda: states(http, name) == ("RUNNING", ["RUNNING"]), 60, "running again")
    http.delete(f"/connectors/{name}")


def test_topics_and_offsets(http: httpx.Client, broker: BrokerProcess, tmp_path: Path):
    name = unique("topics")
    config = source_config(tmp_path, name)
    create(http, name, config)
    Path(config["file"]).write_text("one\ntwo\n")
    wait_until(
        lambda: http.get(f"/connectors/{name}/topics").json() == {name: {"topics": [name]}},
        60,
        "the topic in use",
    )
    expected = [{"partition": {"filename": config["file"]}, "offset": {"position": 8}}]
    wait_until(
        lambda: http.get(f"/connectors/{name}/offsets").json() == {"offsets": expected},
        60,
        "the committed source offset",
    )
    assert http.put(f"/connectors/{name}/topics/reset").status_code == 202
    assert http.get(f"/connectors/{name}/topics").json() == {name: {"topics": []}}

    sink = unique("sink")
    response = http.post(
        "/connectors",
        json={
            "name": sink,
            "config": {
                "connector.class": "FileStreamSink",
                "file": str(tmp_path / "out.txt"),
                "topics": name,
            },
        },
    )
    assert response.status_code == 201
    sink_offsets = [
        {"partition": {"kafka_topic": name, "kafka_partition": 0}, "offset": {"kafka_offset": 2}}
    ]
    wait_until(
        lambda: http.get(f"/connectors/{sink}/offsets").json() == {"offsets": sink_offsets},
        60,
        "the sink's committed offsets",
    )
    for connector in (name, sink):
        http.delete(f"/connectors/{connector}")


def test_validate(http: httpx.Client):
    response = http.put(
        "/connector-plugins/FileStreamSource/config/validate",
        json={"connector.class": "FileStreamSource", "tasks.max": "many"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == SOURCE
    errors = {c["value"]["name"]: c["value"]["errors"] for c in body["configs"]}
    assert errors["tasks.max"] and errors["topic"] and errors["name"]
    assert body["error_count"] == sum(len(e) for e in errors.values())
    definition = next(
        c["definition"] for c in body["configs"] if c["definition"]["name"] == "topic"
    )
    assert definition["required"] is True and definition["type"] == "STRING"

    good = http.put(
        "/connector-plugins/FileStreamSource/config/validate",
        json={"connector.class": "FileStreamSource", "name": "v", "topic": "t"},
    )
    assert good.json()["error_count"] == 0
    unknown = http.put("/connector-plugins/Nope/config/validate", json={})
    assert unknown.status_code == 400


def test_sink_created_before_its_topic(http: httpx.Client, tmp_path: Path):
    name = unique("later")
    out = tmp_path / "out.txt"
    sink = f"{name}-sink"
    response = http.post(
        "/connectors",
        json={
            "name": sink,
            "config": {"connector.class": "FileStreamSink", "file": str(out), "topics": name},
        },
    )
    assert response.status_code == 201, response.text
    wait_until(lambda: states(http, sink) == ("RUNNING", ["RUNNING"]), 60, "sink running")
    # The group formed without the topic; once a source creates it, records arrive.
    config = source_config(tmp_path, name)
    Path(config["file"]).write_text("first\nsecond\n")
    create(http, name, config)
    wait_until(
        lambda: out.exists() and out.read_text().splitlines() == ["first", "second"],
        60,
        "the records in the sink",
    )
    for connector in (name, sink):
        http.delete(f"/connectors/{connector}")


def test_alter_and_reset_offsets_of_stopped_connectors(
    http: httpx.Client, broker: BrokerProcess, tmp_path: Path
):
    name = unique("alter")
    config = source_config(tmp_path, name)
    Path(config["file"]).write_text("one\ntwo\n")
    create(http, name, config)
    partition = {"filename": config["file"]}
    wait_until(
        lambda: (
            http.get(f"/connectors/{name}/offsets").json()["offsets"]
            == [{"partition": partition, "offset": {"position": 8}}]
        ),
        60,
        "the source's offset",
    )
    body = {"offsets": [{"partition": partition, "offset": {"position": 4}}]}
    running = http.patch(f"/connectors/{name}/offsets", json=body)
    assert running.status_code == 400 and "STOPPED" in running.json()["message"]

    assert http.put(f"/connectors/{name}/stop").status_code == 204
    wait_until(lambda: states(http, name) == ("STOPPED", []), 60, "stopped")
    altered = http.patch(f"/connectors/{name}/offsets", json=body)
    assert altered.status_code == 200, altered.text
    assert altered.json() == {
        "message": "The offsets for this connector have been altered successfully"
    }
    assert http.get(f"/connectors/{name}/offsets").json()["offsets"] == body["offsets"]
    # Resumed from byte 4: "two" is read again.
    assert http.put(f"/connectors/{name}/resume").status_code == 202
    wait_until(lambda: high_watermark(broker.bootstrap, name) == 3, 60, "'two' sent again")

    sink = f"{name}-sink"
    response = http.post(
        "/connectors",
        json={
            "name": sink,
            "config": {
                "connector.class": "FileStreamSink",
                "file": str(tmp_path / "out.txt"),
                "topics": name,
            },
        },
    )
    assert response.status_code == 201
    sink_partition = {"kafka_topic": name, "kafka_partition": 0}
    wait_until(
        lambda: (
            http.get(f"/connectors/{sink}/offsets").json()["offsets"]
            == [{"partition": sink_partition, "offset": {"kafka_offset": 3}}]
        ),
        60,
        "the sink's offsets",
    )
    for connector in (name, sink):
        assert http.put(f"/connectors/{connector}/stop").status_code == 204
    sink_body = {"offsets": [{"partition": sink_partition, "offset": {"kafka_offset": 1}}]}
    assert http.patch(f"/connectors/{sink}/offsets", json=sink_body).status_code == 200
    assert http.get(f"/connectors/{sink}/offsets").json()["offsets"] == sink_body["offsets"]
    bad = http.patch(
        f"/connectors/{sink}/offsets",
        json={"offsets": [{"partition": {"kafka_topic": name}, "offset": None}]},
    )
    assert bad.status_code == 400

    for connector in (name, sink):
        reset = http.delete(f"/connectors/{connector}/offsets")
        assert reset.status_code == 200, reset.text
        assert reset.json()["message"].endswith("reset successfully")
        assert http.get(f"/connectors/{connector}/offsets").json() == {"offsets": []}
        http.delete(f"/connectors/{connector}")
