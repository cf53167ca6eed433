"""Brokers when ZooKeeper fails them: a registration taken over during a session loss,
a topic deleted under the controller's watches, and ZooKeeper dying before a shutdown.

Real ``pystream serve`` processes and a real ZooKeeper: the shared server (each test in
its own chroot), and one of this module's own for the test that SIGKILLs it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from broker_process import BrokerProcess, paused  # noqa: E402
from cluster_fixtures import (  # noqa: E402 - shared with the other cluster tests
    bootstrap,
    cluster_broker,
    create_topic,
    metadata,
    start_cluster,
)
from confluent_kafka.admin import AdminClient  # noqa: E402
from waiting import wait_until  # noqa: E402
from zookeeper import (  # noqa: E402
    LocalZooKeeper,
    kazoo_clients,  # noqa: F401 - fixture
    start_server,
    zk_connect,  # noqa: F401 - fixture
    zookeeper,  # noqa: F401 - fixture
)

UNKNOWN_TOPIC_OR_PARTITION = 3
# What a broker's log must never show, whatever ZooKeeper does.
FAILURE_MARKS = ("Traceback", "AttributeError")
# A broker told to stop exits within this, ZooKeeper or not (nothing waits for ZooKeeper's
# 30 s timeouts: the controlled shutdown's bound, or a controller stuck on a call).
SHUTDOWN_DEADLINE_S = 25


def failure_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(mark in line for mark in FAILURE_MARKS)]


def registered_port(client: object, broker_id: int) -> int:
    """The port ``/brokers/ids/<broker_id>`` advertises (Kafka's JSON registration)."""
    import json

    data, _ = client.get(f"/brokers/ids/{broker_id}")  # type: ignore[attr-defined]
    return int(json.loads(data)["port"])


# --- a registration taken over while the session was lost ------------------------------------


def test_a_broker_whose_id_was_taken_while_its_session_was_lost_stops(
    tmp_path: Path,
    zk_connect: str,  # noqa: F811
    kazoo_clients,  # noqa: F811
) -> None:
    first = cluster_broker(tmp_path, zk_connect, 0)
    # The same broker.id, elsewhere: another port, another log dir (an operator's mistake,
    # or a replacement started while the first looked dead).
    second = BrokerProcess(
        tmp_path / "replacement",
        {**first.overrides, "log.dirs": str(tmp_path / "replacement" / "data")},
    )
    try:
        first.start()
        zk = kazoo_clients(zk_connect)  # the broker made the chroot
        assert registered_port(zk, 0) == first.port
        with paused(first):
            # Frozen past zookeeper.session.timeout.ms: ZooKeeper expires its session and
            # deletes its registration; the second broker registers the id.
            wait_until(
                lambda: zk.exists("/brokers/ids/0") is None,
                timeout=30,
                what="the frozen broker's session to expire",
            )
            second.start(timeout=60)
            assert registered_port(zk, 0) == second.port
            mark = first.output_lines()
        # The first wakes up, finds its session expired and its id registered by another
        # broker: it must stop serving as broker 0, and say why.
        assert first.process is not None
        code = first.process.wait(60)
        first.process = None
        assert code != 0
        output = first.output_since(mark)
        assert "not owned by this session" in output, output
        assert "broker 0 stopped serving" in output, output
        assert failure_lines(output) == [], output
        # The second broker is untouched: still registered, still serving as broker 0.
        assert second.process is not None and second.process.poll() is None
        assert registered_port(zk, 0) == second.port
        brokers = {b.node_id: b.port for b in metadata(second).brokers}
        assert brokers == {0: second.port}
    finally:
        first.close()
        second.close()


# --- clusters on a ZooKeeper of their own (the tests kill it) -------------------------------


@contextmanager
def cluster_on_own_zookeeper(
    directory: Path,
) -> Iterator[tuple[LocalZooKeeper, list[BrokerProcess]]]:
    """A ZooKeeper server of its own and the three brokers of :func:`start_cluster` on it."""
    server = start_server(directory / "zookeeper")
    try:
        brokers = start_cluster(directory, f"{server.hosts}/zk-failures")
        try:
            yield server, brokers
        finally:
            for broker in brokers:
                broker.close()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def zk_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalZooKeeper, list[BrokerProcess]]]:
    with cluster_on_own_zookeeper(tmp_path_factory.mktemp("zk-cluster")) as cluster:
        yield cluster


def kill(server: LocalZooKeeper) -> None:
    process = server.process
    assert process is not None
    process.kill()
    process.wait(30)


def assert_exits_cleanly(broker: BrokerProcess, mark: int, timeout: float) -> str:
    """The broker (told to stop) exits 0 within ``timeout`` s, with no traceback logged
    since line ``mark``; its output since then."""
    assert broker.process is not None
    try:
        code = broker.process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"still running {timeout} s later:\n{broker.output_since(mark)}"
        ) from None
    broker.process = None
    output = broker.output_since(mark)
    assert code == 0, output
    assert failure_lines(output) == [], output
    assert "shut down cleanly" in output, output
    return output


def test_deleting_a_topic_under_the_watches_logs_no_errors(
    zk_cluster: tuple[LocalZooKeeper, list[BrokerProcess]],
) -> None:
    _, brokers = zk_cluster
    marks = [b.output_lines() for b in brokers]
    create_topic(brokers, "short-lived", partitions=12, rf=3)
    admin = AdminClient({"bootstrap.servers": bootstrap(brokers)})
    admin.delete_topics(["short-lived"], operation_timeout=30)["short-lived"].result(timeout=60)
    for broker, mark in zip(brokers, marks, strict=True):
        wait_until(
            lambda b=broker: (
                metadata(b, ["short-lived"]).topics[0].error_code == UNKNOWN_TOPIC_OR_PARTITION
            ),
            timeout=60,
            what="the deletion seen by every broker",
        )
        broker.wait_for_output("topic short-lived was deleted", timeout=60, since=mark)
    for broker, mark in zip(brokers, marks, strict=True):
        output = broker.output_since(mark)
        errors = [line for line in output.splitlines() if " ERROR " in line]
        assert failure_lines(output) + errors == [], output


def test_brokers_shut_down_cleanly_after_zookeeper_dies(
    zk_cluster: tuple[LocalZooKeeper, list[BrokerProcess]],
) -> None:
    server, brokers = zk_cluster
    # Topics (and so the controller's data watches on them) for ZooKeeper to drop.
    for index in range(8):
        create_topic(brokers, f"watched-{index}", partitions=3, rf=2)
    marks = [b.output_lines() for b in brokers]
    kill(server)
    # Every broker notices (its connection drops at once), then is told to stop.
    for broker, mark in zip(brokers, marks, strict=True):
        broker.wait_for_output("Zookeeper connection lost", timeout=30, since=mark)
    for broker in brokers:
        assert broker.process is not None
        broker.process.terminate()
    for broker, mark in zip(brokers, marks, strict=True):
        output = assert_exits_cleanly(broker, mark, SHUTDOWN_DEADLINE_S)
        assert output.count("ZooKeeper is unreachable") == 1, output


def test_brokers_shut_down_promptly_when_zookeeper_dies_during_the_shutdown(
    tmp_path: Path,
) -> None:
    """The whole cluster stopping, and ZooKeeper gone mid-way (as when the servers are
    stopped together): controlled shutdowns in flight are given up at once, and no
    ZooKeeper call is left waiting for a server that is not coming back."""
    with cluster_on_own_zookeeper(tmp_path) as (server, brokers):
        for index in range(8):
            create_topic(brokers, f"busy-{index}", partitions=6, rf=3)
        marks = [b.output_lines() for b in brokers]
        for broker in brokers:
            assert broker.process is not None
            broker.process.terminate()
        for broker, mark in zip(brokers, marks, strict=True):
            broker.wait_for_output("shutting down", timeout=30, since=mark)
        kill(server)
        for broker, mark in zip(brokers, marks, strict=True):
            output = assert_exits_cleanly(broker, mark, SHUTDOWN_DEADLINE_S)
            assert output.count("ZooKeeper is unreachable") <= 1, output
