"""``pystream cluster up`` run as a real subprocess: ZooKeeper and three brokers come up,
real clients produce and consume through them, and Ctrl-C takes every process down.

Also: a missing ZooKeeper installation is one clear line; ``--zookeeper`` uses a
given server (the session's test ZooKeeper) without needing java at all; a broker
that dies (at startup or later) stops the cluster with an error naming it and its log.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from broker_process import process_state  # noqa: E402
from cli_helpers import ENV, PYSTREAM, assert_one_line_error  # noqa: E402
from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from zookeeper import (  # noqa: E402
    INSTALL_HINT,
    ZooKeeperNotInstalledError,
    ZooKeeperServer,
    find_zookeeper_jar,
    free_port,
    require_zookeeper,
    wait_until,
    zookeeper,  # noqa: F401 - fixture
)

BROKERS = 3
_BROKER_LINE = re.compile(r"^broker (\d+): 127\.0\.0\.1:(\d+) \(pid (\d+),")
_METRICS = re.compile(r"^broker \d+: .*, metrics (http://\S+)\)$")
_ZOOKEEPER_LINE = re.compile(r"^zookeeper\.connect=(\S+)(?: \(pid (\d+),)?")


@dataclass
class ClusterCommand:
    """A running ``pystream cluster up`` and what it printed."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _stderr: str | None = None

    def pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def printed(self, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        return [m for line in list(self.lines) if (m := pattern.match(line))]

    def bootstrap(self) -> str:
        """The printed ``bootstrap.servers``, once the cluster is up ('' before)."""
        found = [line for line in list(self.lines) if line.startswith("bootstrap.servers=")]
        return found[0].split("=", 1)[1] if found else ""

    def wait_up(self, timeout: float = 180.0) -> str:
        def up() -> str:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"cluster up exited with {self.process.returncode}: {self.stderr()}"
                )
            return self.bootstrap()

        return wait_until(up, timeout, what="the bootstrap.servers line")

    def stderr(self) -> str:
        """Everything it wrote to stderr, once it has exited."""
        if self.process.poll() is None:
            return "(still running)"
        if self._stderr is None:
            assert self.process.stderr is not None
            self._stderr = self.process.stderr.read()
        return self._stderr

    def child_pids(self) -> dict[str, int]:
        """``{"broker 0": pid, ..., "zookeeper": pid}`` as printed."""
        pids = {f"broker {m[1]}": int(m[3]) for m in self.printed(_BROKER_LINE)}
        for match in self.printed(_ZOOKEEPER_LINE):
            if match[2]:  # started here (a given ZooKeeper has no pid to show)
                pids["zookeeper"] = int(match[2])
        return pids


StartCluster = Callable[..., ClusterCommand]


def consecutive_free_ports(count: int, attempts: int = 50) -> int:
    """A base port with ``count`` free loopback ports from it on (right now)."""
    for _ in range(attempts):
        base = free_port()
        if base + count > 65535:
            continue
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError(f"no {count} consecutive free ports in {attempts} attempts")


def process_gone(pid: int) -> bool:
    """No such process; a zombie (exited, never reaped by its parent) still counts as there."""
    return not Path(f"/proc/{pid}").exists()


def skip_without_local_zookeeper() -> None:
    """``cluster up`` starts its own ZooKeeper: skip where Debian's package is missing."""
    try:
        require_zookeeper()
    except ZooKeeperNotInstalledError as exc:
        pytest.skip(f"{exc} ({INSTALL_HINT})")


@pytest.fixture
def cluster_up() -> Iterator[StartCluster]:
    """Start ``pystream cluster up ARGS``; whatever is still running afterwards is killed."""
    started: list[ClusterCommand] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ClusterCommand:
        process = subprocess.Popen(
            [*PYSTREAM, "cluster", "up", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or ENV,
        )
        command = ClusterCommand(process)
        threading.Thread(target=command.pump, daemon=True).start()
        started.append(command)
        return command

    yield start
    for command in started:
        if command.process.poll() is None:
            command.process.terminate()
            try:
                command.process.wait(90)
            except subprocess.TimeoutExpired:
                command.process.kill()
                command.process.wait(30)
        for pid in command.child_pids().values():  # each child leads a process group
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def test_cluster_up_serves_clients_and_ctrl_c_stops_every_process(
    tmp_path: Path, cluster_up: StartCluster
) -> None:
    skip_without_local_zookeeper()
    base = consecutive_free_ports(BROKERS)
    command = cluster_up(
        "--brokers",
        str(BROKERS),
        "--data-dir",
        str(tmp_path / "cluster"),
        "--base-port",
        str(base),
        "--override",
        "offsets.topic.num.partitions=6",
        "--override",
        "group.initial.rebalance.delay.ms=0",
    )
    bootstrap = command.wait_up()
    ports = range(base, base + BROKERS)
    assert bootstrap == ",".join(f"127.0.0.1:{port}" for port in ports)
    pids = command.child_pids()
    assert set(pids) == {"zookeeper", *(f"broker {i}" for i in range(BROKERS))}
    logs = tmp_path / "cluster" / "logs"
    assert f"logs: {logs}" in command.lines
    assert {p.name for p in logs.iterdir()} >= {"zookeeper.log", "broker-0.log"}
    # Each broker's metrics URL, printed and serving (this broker's own id in its gauges).
    metrics_urls = [m[1] for m in command.printed(_METRICS)]
    assert len(metrics_urls) == BROKERS

    def active_controllers() -> int:
        count = 0
        for url in metrics_urls:
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            gauge = families["kafka_controller_kafkacontroller_activecontrollercount"]
            count += int(gauge.samples[0].value)
        return count

    # One active controller in the cluster (once elected).
    assert wait_until(lambda: active_controllers() == 1, 30, what="one active controller")

    # Every broker is in the metadata, on its port.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    brokers = admin.list_topics(timeout=30).brokers
    assert {b.id: b.port for b in brokers.values()} == {i: port for i, port in enumerate(ports)}

    # The cluster default replication factor (min(3, N) = 3) applies to a topic created
    # without one: three replicas per partition, on three different brokers.
    topic = "orders"
    admin.create_topics([NewTopic(topic, 3)], operation_timeout=30)[topic].result(timeout=60)
    partitions = wait_until(
        lambda: admin.list_topics(topic, timeout=10).topics[topic].partitions,
        what=f"{topic}'s partitions",
    )
    assert len(partitions) == 3
    assert all(sorted(p.replicas) == [0, 1, 2] for p in partitions.values())

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors: list[object] = []
    values = [f"order-{i}".encode() for i in range(30)]
    for value in values:
        producer.produce(topic, value, on_delivery=lambda err, msg: err and errors.append(err))
    assert producer.flush(60) == 0
    assert errors == []

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    received: list[bytes] = []
    try:

        def all_received() -> bool:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                received.append(message.value())
            return len(received) >= len(values)

        wait_until(all_received, 90, what="every record back", interval=0)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert sorted(received) == sorted(values)
    # --override reached every broker: the group's offsets topic has the 6 partitions
    # asked for (Kafka's default is 50).
    offsets = admin.list_topics("__consumer_offsets", timeout=10).topics["__consumer_offsets"]
    assert len(offsets.partitions) == 6

    command.process.send_signal(signal.SIGINT)
    assert command.process.wait(120) == 0, command.stderr()
    for name, pid in pids.items():
        wait_until(lambda pid=pid: process_gone(pid), 10, what=f"{name} (pid {pid}) gone")
    assert "cluster stopped" in command.stderr()


def test_missing_zookeeper_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    data_dir = tmp_path / "cluster"
    base = ("--brokers", "1", "--data-dir", str(data_dir), "--base-port", str(free_port()))
    no_jar = {**ENV, "ZOOKEEPER_JAR": str(tmp_path / "nowhere" / "zookeeper.jar")}
    result = subprocess.run(
        [*PYSTREAM, "cluster", "up", *base],
        capture_output=True,
        text=True,
        env=no_jar,
        timeout=120,
    )
    assert_one_line_error(result, "ZOOKEEPER_JAR", "apt-get install zookeeper", "--zookeeper")
    assert not (data_dir / "broker-0").exists()  # nothing was started

    # The jar is there but java is not on $PATH (an empty directory).
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    no_java = {**ENV, "PATH": str(empty)}
    no_java.pop("ZOOKEEPER_JAR", None)
    if find_zookeeper_jar({}) is None:
        pytest.skip("no ZooKeeper jar installed to get past the jar check")
    result = subprocess.run(
        [*PYSTREAM, "cluster", "up", *base],
        capture_output=True,
        text=True,
        env=no_java,
        timeout=120,
    )
    assert_one_line_error(result, "java", "apt-get install zookeeper", "--zookeeper")


def test_given_zookeeper_needs_no_local_one(
    tmp_path: Path,
    cluster_up: StartCluster,
    zookeeper: ZooKeeperServer,  # noqa: F811
) -> None:
    from kazoo.client import KazooClient

    chroot = f"/cli-cluster-{uuid.uuid4().hex[:8]}"
    # No jar to be found: --zookeeper must not even look for one.
    env = {**ENV, "ZOOKEEPER_JAR": str(tmp_path / "nowhere.jar")}
    command = cluster_up(
        "--brokers",
        "1",
        "--zookeeper",
        zookeeper.hosts + chroot,
        "--data-dir",
        str(tmp_path / "cluster"),
        "--base-port",
        str(free_port()),
        env=env,
    )
    command.wait_up()
    assert f"zookeeper.connect={zookeeper.hosts}{chroot}" in command.lines
    pids = command.child_pids()
    assert set(pids) == {"broker 0"}

    client = KazooClient(hosts=zookeeper.hosts + chroot)
    client.start(timeout=15)
    try:
        assert client.get_children("/brokers/ids") == ["0"]
        command.process.send_signal(signal.SIGTERM)
        assert command.process.wait(120) == 0, command.stderr()
        # It deregistered on the way out (a clean stop, not a session expiry).
        assert client.get_children("/brokers/ids") == []
    finally:
        client.stop()
        client.close()
    wait_until(lambda: process_gone(pids["broker 0"]), 10, what="broker 0 gone")


def test_a_broker_that_dies_at_startup_is_named_with_its_log(
    tmp_path: Path, cluster_up: StartCluster
) -> None:
    skip_without_local_zookeeper()
    data_dir = tmp_path / "cluster"
    # Broker 1's data dir belongs to another broker id: that broker refuses to start.
    (data_dir / "broker-1").mkdir(parents=True)
    (data_dir / "broker-1" / "meta.properties").write_text("version=0\nbroker.id=7\n")
    base = consecutive_free_ports(2)
    command = cluster_up("--brokers", "2", "--data-dir", str(data_dir), "--base-port", str(base))
    assert command.process.wait(180) == 1
    result = subprocess.CompletedProcess(command.process.args, 1, "", command.stderr())
    log = data_dir / "logs" / "broker-1.log"
    assert_one_line_error(result, "broker 1 exited with 1", "broker.id 7", f"(log: {log})")
    assert command.bootstrap() == ""  # it never announced a cluster
    # Broker 0, which did start, was stopped with it: its port is free again.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", base))


def test_a_broker_that_dies_later_stops_the_cluster_with_its_name(
    tmp_path: Path,
    cluster_up: StartCluster,
    zookeeper: ZooKeeperServer,  # noqa: F811
) -> None:
    connect = f"{zookeeper.hosts}/cli-cluster-{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path / "cluster"
    port = str(free_port())
    command = cluster_up(
        "--brokers", "1", "--zookeeper", connect, "--data-dir", str(data_dir), "--base-port", port
    )
    command.wait_up()
    os.kill(command.child_pids()["broker 0"], signal.SIGKILL)
    assert command.process.wait(60) == 1
    result = subprocess.CompletedProcess(command.process.args, 1, "", command.stderr())
    log = data_dir / "logs" / "broker-0.log"
    assert_one_line_error(result, "broker 0 was killed by SIGKILL", f"(log: {log})")


def process_exited(pid: int) -> bool:
    """Gone, or a zombie: it ran its exit (an orphan waits for whoever reaps it here)."""
    try:
        return process_state(pid) in ("Z", "X")
    except FileNotFoundError:
        return True


def test_sigkill_of_cluster_up_stops_zookeeper_and_the_brokers(
    tmp_path: Path, cluster_up: StartCluster
) -> None:
    skip_without_local_zookeeper()
    command = cluster_up(
        "--brokers",
        "2",
        "--data-dir",
        str(tmp_path / "cluster"),
        "--base-port",
        str(consecutive_free_ports(2)),
    )
    command.wait_up()
    pids = command.child_pids()
    assert set(pids) == {"zookeeper", "broker 0", "broker 1"}
    command.process.kill()  # no shutdown code of the command runs
    command.process.wait(30)
    for name, pid in pids.items():
        wait_until(lambda pid=pid: process_exited(pid), 90, what=f"{name} (pid {pid}) to stop")
