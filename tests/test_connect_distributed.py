"""``pystream connect distributed``: real worker processes in one Connect group against
a real broker.  Connectors created through one worker's REST API are spread over both
workers (status ``worker_id``); every line flows once; a SIGKILLed worker's tasks move
to the other within the session timeout and data keeps flowing; the configuration
survives restarting every worker (it is in the config topic).  The stores are checked
against records in Kafka's own layout, written with confluent-kafka."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest
from broker_process import BrokerProcess
from cli_helpers import run
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaException
from confluent_kafka import Producer as KafkaProducer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from connect_process import ConnectWorkerProcess
from test_connect_standalone import topic_values as read_topic
from waiting import wait_until

from pystream.client import AdminClient, NewTopic
from pystream.connect.api import ConfigError
from pystream.connect.runtime.config import WorkerConfig
from pystream.connect.runtime.distributed.protocol import (
    Assignment,
    WorkerMetadata,
    decode_assignment,
    decode_metadata,
    encode_assignment,
    encode_metadata,
    round_robin,
)
from pystream.connect.runtime.distributed.stores import (
    KafkaConfigBackingStore,
    KafkaOffsetBackingStore,
    KafkaStatusBackingStore,
)
from pystream.connect.runtime.offsets import offset_key
from pystream.connect.runtime.states import State, Status, TargetState, TaskId

SESSION_TIMEOUT_MS = 6000


@pytest.fixture(scope="module")
def broker(connect_broker: BrokerProcess) -> BrokerProcess:
    return connect_broker  # the session's broker for Connect tests (conftest.py)


class DistributedWorker(ConnectWorkerProcess):
    """``pystream connect distributed worker.properties``."""

    what = "pystream connect distributed"

    def __init__(self, directory: Path, bootstrap: str, group: str) -> None:
        super().__init__(
            directory,
            bootstrap,
            {
                "group.id": group,
                "config.storage.topic": f"{group}-configs",
                "offset.storage.topic": f"{group}-offsets",
                "status.storage.topic": f"{group}-status",
                "config.storage.replication.factor": "1",
                "offset.storage.replication.factor": "1",
                "status.storage.replication.factor": "1",
                "offset.storage.partitions": "3",
                "status.storage.partitions": "2",
                "session.timeout.ms": str(SESSION_TIMEOUT_MS),
                "heartbeat.interval.ms": "1000",
            },
        )
        del self.worker["offset.storage.file.filename"]

    def arguments(self) -> list[str]:
        path = self.directory / "worker.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in self.worker.items()))
        return ["connect", "distributed", str(path), "--log-level", "INFO"]

    @property
    def worker_id(self) -> str:
        return self.url.split("://", 1)[1]


def topic_values(bootstrap: str, topic: str) -> list[str] | None:
    """Every value of partition 0 of ``topic``; None while the topic does not exist."""
    try:
        return read_topic(bootstrap, topic)
    except KafkaException:
        return None


def status(url: str, name: str) -> dict:
    response = httpx.get(f"{url}/connectors/{name}/status", timeout=10)
    return response.json() if response.status_code == 200 else {}


def running_on(url: str, name: str) -> dict[int, str]:
    """Task id → worker_id of each RUNNING task (empty until the connector has tasks)."""
    doc = status(url, name)
    tasks = doc.get("tasks", [])
    if not tasks or any(t["state"] != State.RUNNING.value for t in tasks):
        return {}
    return {t["id"]: t["worker_id"] for t in tasks}


def append(path: Path, start: int, stop: int) -> None:
    with path.open("a") as handle:
        handle.write("".join(f"{path.stem} {i}\n" for i in range(start, stop)))


def wait_each_line_once(bootstrap: str, files: dict[str, Path], stop: int, when: str) -> None:
    """Lines 0..stop-1 of each file are in its topic, each once and in order."""
    for name, path in files.items():
        wanted = [f"{path.stem} {i}" for i in range(stop)]
        wait_until(
            lambda n=name, w=wanted: topic_values(bootstrap, f"dist-{n}") == w,
            30,
            f"every line of {name} once {when}",
        )


def test_workers_share_tasks_survive_a_kill_and_keep_configs(broker: BrokerProcess, tmp_path: Path):
    group = "dist-group"
    workers = [DistributedWorker(tmp_path / name, broker.bootstrap, group) for name in ("a", "b")]
    files = {name: tmp_path / f"{name}.txt" for name in ("alpha", "beta")}
    for path in files.values():
        append(path, 0, 100)
    try:
        for worker in workers:
            worker.start()
        first = workers[0].url
        for name, path in files.items():
            response = httpx.post(
                f"{first}/connectors",
                json={
                    "name": name,
                    "config": {
                        "connector.class": "FileStreamSource",
                        "file": str(path),
                        "topic": f"dist-{name}",
                    },
                },
                timeout=30,
            )
            assert response.status_code == 201, response.text
        # The second worker answers from the config topic too.
        assert httpx.get(f"{workers[1].url}/connectors", timeout=10).json() == ["alpha", "beta"]

        # Two connectors and two tasks, dealt round-robin: one task on each worker.
        owners = {
            name: wait_until(lambda n=name: running_on(first, n), 60, f"{name}'s task running")[0]
            for name in files
        }
        ids = {w.worker_id for w in workers}
        assert set(owners.values()) == ids, (owners, ids)
        wait_each_line_once(broker.bootstrap, files, 100, "at first")
        for name, path in files.items():
            # Committed source offsets are in the offsets topic (any worker reads them).
            size = path.stat().st_size
            wait_until(
                lambda n=name, s=size: (
                    httpx.get(f"{workers[1].url}/connectors/{n}/offsets").json().get("offsets")
                    == [{"partition": {"filename": str(files[n])}, "offset": {"position": s}}]
                ),
                30,
                f"{name}'s offset committed",
            )

        # Active topics (KIP-558) are in the status topic: any worker knows them.
        for worker in workers:
            for name in files:
                wait_until(
                    lambda w=worker, n=name: (
                        httpx.get(f"{w.url}/connectors/{n}/topics").json()
                        == {n: {"topics": [f"dist-{n}"]}}
                    ),
                    10,
                    f"{name}'s active topic known to every worker",
                )

        # SIGKILL the worker running beta's task: it moves to the survivor.
        victim = next(w for w in workers if w.worker_id == owners["beta"])
        survivor = next(w for w in workers if w is not victim)
        victim.stop(signal.SIGKILL)
        for path in files.values():
            append(path, 100, 200)
        moved = wait_until(
            lambda: (
                running_on(survivor.url, "alpha") == {0: survivor.worker_id}
                and running_on(survivor.url, "beta") == {0: survivor.worker_id}
            ),
            SESSION_TIMEOUT_MS / 1000 + 30,
            "both tasks running on the survivor",
        )
        assert moved
        # Once: the offsets were committed before the kill (else at least once).
        wait_each_line_once(broker.bootstrap, files, 200, "after the kill")

        # Every worker restarts: the connectors come back from the config topic.
        assert survivor.stop() == 0, survivor.output()
        for worker in workers:
            worker.start()
        listed = httpx.get(f"{workers[1].url}/connectors", timeout=10).json()
        assert listed == ["alpha", "beta"]
        for name, path in files.items():
            wait_until(lambda n=name: running_on(workers[0].url, n), 60, f"{name} running again")
            append(path, 200, 250)
        wait_each_line_once(broker.bootstrap, files, 250, "after the restart")
        info = httpx.get(f"{workers[0].url}/connectors/beta", timeout=10).json()
        assert info["config"]["file"] == str(files["beta"])
        assert info["tasks"] == [{"connector": "beta", "task": 0}]
    finally:
        for worker in workers:
            worker.close()


def test_protocol_is_kafkas_connect_protocol_v0():
    meta = encode_metadata(WorkerMetadata("http://h:1", 5))
    # version int16 | url string (int16 length) | config offset int64, as Kafka writes it
    assert meta == b"\x00\x00" + b"\x00\x0ahttp://h:1" + (5).to_bytes(8, "big")
    assert decode_metadata(meta) == WorkerMetadata("http://h:1", 5)
    assignment = Assignment("m1", "http://h:1", 7, ["a"], [TaskId("a", 0), TaskId("b", 1)])
    raw = encode_assignment(assignment)
    # ... error int16 | leader | leader url | offset | [connector, [task int32]]; -1 = connector
    assert raw.startswith(b"\x00\x00\x00\x00\x00\x02m1")
    assert b"\x00\x01a\x00\x00\x00\x02\xff\xff\xff\xff\x00\x00\x00\x00" in raw
    assert decode_assignment(raw) == assignment
    dealt = round_robin(["w2", "w1"], ["b", "a"], [TaskId("b", 0), TaskId("a", 0)])
    assert dealt == {"w1": (["a"], [TaskId("a", 0)]), "w2": (["b"], [TaskId("b", 0)])}


def raw_records(bootstrap: str, topic: str) -> dict[str, object]:
    """The latest value (JSON, or None for a tombstone) of every key of ``topic``."""
    consumer = KafkaConsumer(
        {"bootstrap.servers": bootstrap, "group.id": "raw", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        found: dict[str, object] = {}
        for partition in metadata.partitions:
            tp = KafkaTopicPartition(topic, partition)
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high == low:
                continue
            consumer.assign([KafkaTopicPartition(topic, partition, low)])
            seen = 0
            while seen < high - low:
                message = consumer.poll(5)
                assert message is not None and message.error() is None
                seen += 1
                value = message.value()
                found[message.key().decode()] = None if value is None else json.loads(value)
        return found
    finally:
        consumer.close()


def test_stores_read_and_write_kafkas_record_layout(broker: BrokerProcess):
    config = WorkerConfig(
        {
            "bootstrap.servers": broker.bootstrap,
            "config.storage.topic": "layout-configs",
            "status.storage.topic": "layout-status",
            "offset.storage.topic": "layout-offsets",
            "config.storage.replication.factor": "1",
            "status.storage.replication.factor": "1",
            "offset.storage.replication.factor": "1",
            "status.storage.partitions": "2",
            "offset.storage.partitions": "2",
        }
    )
    configs = KafkaConfigBackingStore(config, "layout")
    statuses = KafkaStatusBackingStore(config, "layout")
    offsets = KafkaOffsetBackingStore(config, "layout")
    for store in (configs, statuses, offsets):
        store.start()
    try:
        # Records as Kafka's KafkaConfigBackingStore writes them, by another client.
        # murmur2: the partitioner of Kafka's Java clients (and pystream's), so that a key
        # lands in the partition Kafka's workers would write it to.
        producer = KafkaProducer(
            {"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2_random"}
        )
        records = [
            ("connector-x", {"properties": {"name": "x", "tasks.max": "2"}}),
            ("task-x-0", {"properties": {"file": "a"}}),
            ("task-x-1", {"properties": {"file": "b"}}),
            ("commit-x", {"tasks": 2}),
            ("target-state-x", {"state": "PAUSED"}),
            ("connector-y", {"properties": {"name": "y"}}),
            ("task-y-0", {"properties": {"file": "c"}}),  # never committed: not applied
            ("connector-gone", {"properties": {"name": "gone"}}),
            ("connector-gone", None),
        ]
        for key, value in records:
            payload = None if value is None else json.dumps(value).encode()
            producer.produce("layout-configs", payload, key.encode())
        assert producer.flush(10) == 0
        configs.read_to_end()
        snap = configs.snapshot()
        assert snap.connectors == {"x": {"name": "x", "tasks.max": "2"}, "y": {"name": "y"}}
        assert snap.tasks == {"x": [{"file": "a"}, {"file": "b"}]}
        assert snap.targets == {"x": TargetState.PAUSED, "y": TargetState.STARTED}
        assert snap.offset == len(records)

        # And what this store writes is Kafka's layout.
        configs.put_task_configs("y", [{"file": "d"}])
        configs.put_target_state("y", TargetState.STOPPED)
        configs.read_to_end()
        assert configs.snapshot().tasks["y"] == [{"file": "d"}]
        raw = raw_records(broker.bootstrap, "layout-configs")
        assert raw["task-y-0"] == {"properties": {"file": "d"}}
        assert raw["commit-y"] == {"tasks": 1}
        assert raw["target-state-y"] == {"state": "PAUSED", "state.v2": "STOPPED"}

        statuses.generation = 3
        statuses.put_task(TaskId("x", 1), Status(State.RUNNING, "h:8083"))
        statuses.put_connector("x", Status(State.FAILED, "h:8083", "boom"))
        statuses.log.flush()
        raw = raw_records(broker.bootstrap, "layout-status")
        assert raw["status-task-x-1"] == {
            "state": "RUNNING",
            "trace": None,
            "worker_id": "h:8083",
            "generation": 3,
        }
        assert raw["status-connector-x"]["trace"] == "boom"
        # Another worker took the task in a newer generation: this one (a zombie that
        # has not noticed) does not write over it.
        newer = {"state": "RUNNING", "trace": None, "worker_id": "o:1", "generation": 4}
        producer.produce("layout-status", json.dumps(newer).encode(), b"status-task-x-1")
        assert producer.flush(10) == 0
        statuses.log.read_to_end()
        assert statuses.task(TaskId("x", 1)) == Status(State.RUNNING, "o:1")
        statuses.put_task(TaskId("x", 1), Status(State.FAILED, "h:8083", "late"))
        statuses.log.flush()
        assert statuses.task(TaskId("x", 1)) == Status(State.RUNNING, "o:1")
        statuses.put_topic("x", "t1")
        statuses.log.flush()
        raw = raw_records(broker.bootstrap, "layout-status")
        assert raw["status-task-x-1"] == newer
        assert raw["status-topic-t1:connector-x"]["topic"]["name"] == "t1"

        key = offset_key("x", {"filename": "a"})
        offsets.set({key: {"position": 42}})
        raw = raw_records(broker.bootstrap, "layout-offsets")
        assert raw['["x",{"filename":"a"}]'] == {"position": 42}
        # Another worker reads what was written (statuses and offsets).
        others = (
            KafkaStatusBackingStore(config, "layout-2"),
            KafkaOffsetBackingStore(config, "layout-2"),
        )
        for store in others:
            store.start()
        try:
            assert others[0].task(TaskId("x", 1)) == Status(State.RUNNING, "o:1")
            assert others[0].connector("x") == Status(State.FAILED, "h:8083", "boom")
            assert others[0].topics("x") == ["t1"]
            assert others[1].get(key) == {"position": 42}
        finally:
            others[0].stop()
            others[1].close()
    finally:
        configs.stop()
        statuses.stop()
        offsets.close()


def test_config_topic_with_more_than_one_partition_is_refused(broker: BrokerProcess):
    with AdminClient(broker.bootstrap) as admin:
        admin.create_topics([NewTopic("two-part-configs", 2, 1, {"cleanup.policy": "compact"})])
    config = WorkerConfig(
        {"bootstrap.servers": broker.bootstrap, "config.storage.topic": "two-part-configs"}
    )
    with pytest.raises(ConfigError, match="two-part-configs has 2 partitions"):
        KafkaConfigBackingStore(config, "two-part").start()


def test_rest_calls_on_any_worker_reach_the_connector(broker: BrokerProcess, tmp_path: Path):
    """Pause, resume, restart, reconfigure, stop and delete through the worker that
    does not run the task: the config topic (or a forwarded call) gets them there."""
    workers = [
        DistributedWorker(tmp_path / name, broker.bootstrap, "ops-group") for name in ("a", "b")
    ]
    path = tmp_path / "ops.txt"
    append(path, 0, 10)
    try:
        for worker in workers:
            worker.start()
        config = {"connector.class": "FileStreamSource", "file": str(path), "topic": "dist-ops"}
        response = httpx.put(f"{workers[0].url}/connectors/ops/config", json=config, timeout=30)
        assert response.status_code == 201, response.text
        owner = wait_until(lambda: running_on(workers[0].url, "ops"), 60, "ops running")[0]
        other = next(w for w in workers if w.worker_id != owner)
        wait_each_line_once(broker.bootstrap, {"ops": path}, 10, "at first")

        def states() -> tuple[str, list[str]]:
            doc = status(workers[0].url, "ops")
            return doc["connector"]["state"], [t["state"] for t in doc["tasks"]]

        assert httpx.put(f"{other.url}/connectors/ops/pause", timeout=30).status_code == 202
        wait_until(lambda: states() == ("PAUSED", ["PAUSED"]), 30, "ops paused")
        assert httpx.put(f"{other.url}/connectors/ops/resume", timeout=30).status_code == 202
        wait_until(lambda: states() == ("RUNNING", ["RUNNING"]), 30, "ops resumed")

        # Restarting the task through the other worker is forwarded to its owner.
        restart = httpx.post(f"{other.url}/connectors/ops/tasks/0/restart", timeout=30)
        assert restart.status_code == 204, restart.text
        wait_until(lambda: running_on(other.url, "ops") == {0: owner}, 30, "task restarted")
        append(path, 10, 20)
        wait_each_line_once(broker.bootstrap, {"ops": path}, 20, "after pause and restart")

        # Stopped, it has no tasks; a new config then reaches the connector and its
        # task when it resumes (the file's offsets go on: only new lines, in the new topic).
        assert httpx.put(f"{other.url}/connectors/ops/stop", timeout=30).status_code == 204
        wait_until(lambda: states() == ("STOPPED", []), 30, "ops stopped with no tasks")
        config["topic"] = "dist-ops2"
        response = httpx.put(f"{other.url}/connectors/ops/config", json=config, timeout=30)
        assert response.status_code == 200, response.text
        assert httpx.put(f"{other.url}/connectors/ops/resume", timeout=30).status_code == 202
        wait_until(lambda: running_on(other.url, "ops"), 30, "ops running again")
        tasks = httpx.get(f"{other.url}/connectors/ops/tasks", timeout=10).json()
        assert [t["config"]["topic"] for t in tasks] == ["dist-ops2"]
        append(path, 20, 30)
        wanted = [f"ops {i}" for i in range(20, 30)]
        wait_until(
            lambda: topic_values(broker.bootstrap, "dist-ops2") == wanted,
            30,
            "only the new lines in the new topic",
        )
        wait_each_line_once(broker.bootstrap, {"ops": path}, 20, "in the old topic")

        # A connector setting its task configs do not carry (a transform) restarts the
        # task too: changed while paused, the resumed task routes to the new topic.
        assert httpx.put(f"{other.url}/connectors/ops/pause", timeout=30).status_code == 202
        wait_until(lambda: states() == ("PAUSED", ["PAUSED"]), 30, "ops paused")
        config.update(
            {
                "transforms": "route",
                "transforms.route.type": "RegexRouter",
                "transforms.route.regex": "dist-ops2",
                "transforms.route.replacement": "dist-ops3",
            }
        )
        response = httpx.put(f"{other.url}/connectors/ops/config", json=config, timeout=30)
        assert response.status_code == 200, response.text
        assert httpx.put(f"{other.url}/connectors/ops/resume", timeout=30).status_code == 202
        wait_until(lambda: states() == ("RUNNING", ["RUNNING"]), 30, "ops resumed")
        append(path, 30, 40)
        wait_until(
            lambda: (
                topic_values(broker.bootstrap, "dist-ops3") == [f"ops {i}" for i in range(30, 40)]
            ),
            30,
            "the new lines through the new transform",
        )
        assert topic_values(broker.bootstrap, "dist-ops2") == wanted

        assert httpx.delete(f"{other.url}/connectors/ops", timeout=30).status_code == 204
        for worker in workers:
            wait_until(
                lambda w=worker: httpx.get(f"{w.url}/connectors", timeout=10).json() == [],
                30,
                "ops gone from every worker",
            )
            gone = httpx.get(f"{worker.url}/connectors/ops/status", timeout=10)
            assert gone.status_code == 404

        # A sink's two tasks on a two-partition topic run on both workers (one consumer
        # group across them) and deliver every record once.
        with AdminClient(broker.bootstrap) as admin:
            admin.create_topics([NewTopic("dist-sink", 2, 1)])
        out = tmp_path / "sink.out"
        sink = {
            "connector.class": "connect_dist_plugins.SplitFileSink",
            "tasks.max": "2",
            "topics": "dist-sink",
            "file": str(out),
        }
        response = httpx.put(f"{other.url}/connectors/dist-sink/config", json=sink, timeout=30)
        assert response.status_code == 201, response.text
        placed = wait_until(
            lambda: (
                len(running_on(other.url, "dist-sink")) == 2 and running_on(other.url, "dist-sink")
            ),
            60,
            "both sink tasks running",
        )
        assert set(placed.values()) == {w.worker_id for w in workers}
        producer = KafkaProducer({"bootstrap.servers": broker.bootstrap})
        for i in range(200):
            producer.produce("dist-sink", f"v{i}".encode(), partition=i % 2)
        assert producer.flush(10) == 0

        def delivered() -> list[str]:
            found = []
            for part in (0, 1):
                path = tmp_path / f"sink.out.{part}"
                if path.exists():
                    found += [line.split()[2] for line in path.read_text().splitlines()]
            return sorted(found)

        everything = sorted(f"v{i}" for i in range(200))
        wait_until(lambda: delivered() == everything, 30, "every record in the sink once")
    finally:
        for worker in workers:
            worker.close()


def test_distributed_needs_a_group_id(tmp_path: Path):
    worker = tmp_path / "worker.properties"
    worker.write_text("bootstrap.servers=127.0.0.1:1\nlisteners=http://127.0.0.1:0\n")
    result = run("connect", "distributed", str(worker), check=False)
    assert result.returncode == 1
    assert "group.id is required in distributed mode" in result.stderr
