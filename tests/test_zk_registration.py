"""Broker registration: ephemeral ``/brokers/ids/<id>``, chroot, session expiry, stepping down."""

from __future__ import annotations

import json
import queue
import threading

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from zookeeper import (  # noqa: E402
    SESSION_TIMEOUT_MS,
    ZkProxy,
    ZooKeeperServer,
    expire_session,
    four_letter_word,
    kazoo_clients,  # noqa: F401 - fixture
    wait_until,
    zk_connect,  # noqa: F401 - fixture
    zookeeper,  # noqa: F401 - fixture
)

from pystream.cluster.zookeeper import client as zk_client  # noqa: E402
from pystream.cluster.zookeeper.paths import PERSISTENT_PATHS, BrokerInfo, EndPoint  # noqa: E402
from pystream.cluster.zookeeper.registration import BrokerIdInUseError, BrokerRegistration  # noqa: E402

INFO = BrokerInfo(
    1, (EndPoint("PLAINTEXT", "127.0.0.1", 9092), EndPoint("SSL", "127.0.0.1", 9093, "SSL")), "r1"
)


class Recorder:
    """Collects registration callbacks (called on kazoo's threads) for the test thread."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, object]] = queue.Queue()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_registered": lambda epoch: self.events.put(("registered", epoch)),
            "on_session_lost": lambda: self.events.put(("lost", None)),
            "on_step_down": lambda reason: self.events.put(("step_down", reason)),
        }

    def next(self, timeout: float = 20.0) -> tuple[str, object]:
        return self.events.get(timeout=timeout)


def test_connect_creates_the_chroot_and_kafkas_paths(
    zookeeper: ZooKeeperServer,  # noqa: F811
    zk_connect: str,  # noqa: F811
    kazoo_clients,  # noqa: F811
) -> None:
    client = zk_client.connect(zk_connect)
    try:
        chroot = zk_connect.split("/", 1)[1]
        raw = kazoo_clients()  # no chroot: sees the whole tree
        for path in PERSISTENT_PATHS:
            assert raw.exists(f"/{chroot}{path}") is not None, path
        assert set(client.get_children("/brokers")) >= {"ids", "topics", "seqid"}
    finally:
        zk_client.close(client)


def test_connect_fails_clearly_when_zookeeper_is_unreachable(zookeeper: ZooKeeperServer) -> None:  # noqa: F811
    proxy = ZkProxy(zookeeper.port)
    proxy.block()
    with pytest.raises(zk_client.ZooKeeperUnavailableError, match="zookeeper.connect"):
        zk_client.connect(proxy.hosts, connection_timeout_ms=500)


def test_registration_is_an_ephemeral_znode_in_kafkas_format(
    zk_connect: str,  # noqa: F811
    kazoo_clients,  # noqa: F811
) -> None:
    client = zk_client.connect(zk_connect)
    registration = BrokerRegistration(client, INFO)
    epoch = registration.register()
    observer = kazoo_clients(zk_connect)
    data, stat = observer.get("/brokers/ids/1")
    assert stat.ephemeralOwner == client.client_id[0]
    assert stat.czxid == epoch == registration.epoch
    value = json.loads(data)
    assert value["endpoints"] == ["PLAINTEXT://127.0.0.1:9092", "SSL://127.0.0.1:9093"]
    assert value["rack"] == "r1"
    assert BrokerInfo.from_bytes(1, data, stat.czxid) == BrokerInfo(
        INFO.broker_id, INFO.endpoints, INFO.rack, epoch
    )
    # The session ends: ZooKeeper removes the registration (what the controller watches for).
    zk_client.close(client)
    assert observer.exists("/brokers/ids/1") is None


def test_clean_deregistration(zk_connect: str, kazoo_clients) -> None:  # noqa: F811
    client = zk_client.connect(zk_connect)
    try:
        registration = BrokerRegistration(client, INFO)
        registration.register()
        registration.deregister()
        assert client.exists("/brokers/ids/1") is None
        assert not registration.registered
    finally:
        zk_client.close(client)


def test_a_second_broker_with_the_same_id_is_refused(zk_connect: str) -> None:  # noqa: F811
    first = zk_client.connect(zk_connect)
    second = zk_client.connect(zk_connect)
    try:
        BrokerRegistration(first, INFO).register()
        with pytest.raises(BrokerIdInUseError, match=r"broker.id 1 is registered by another"):
            BrokerRegistration(second, INFO, stale_wait_s=0.3).register()
        assert first.get("/brokers/ids/1")[1].ephemeralOwner == first.client_id[0]
    finally:
        zk_client.close(first)
        zk_client.close(second)


def test_a_restarted_broker_waits_out_its_old_registration(
    zookeeper: ZooKeeperServer,  # noqa: F811
    zk_connect: str,  # noqa: F811
) -> None:
    """A crashed broker's znode lingers until its session expires; the restarted broker
    registers as soon as it goes (here: when the old session is closed)."""
    old = zk_client.connect(zk_connect)
    new = zk_client.connect(zk_connect)
    try:
        BrokerRegistration(old, INFO).register()
        result: list[object] = []
        waiting = threading.Thread(
            target=lambda: result.append(BrokerRegistration(new, INFO, stale_wait_s=20).register())
        )
        waiting.start()
        # It waits on a watch of the old znode (the server lists watches by path).
        path = "/" + zk_connect.split("/", 1)[1] + "/brokers/ids/1"
        wait_until(
            lambda: path in four_letter_word(zookeeper.port, "wchp"), what="a watch on " + path
        )
        zk_client.close(old)
        waiting.join(30)
        assert result and isinstance(result[0], int)
        assert new.get("/brokers/ids/1")[1].ephemeralOwner == new.client_id[0]
    finally:
        zk_client.close(new)
        zk_client.close(old)


def test_session_expiry_re_registers_with_a_new_broker_epoch(
    zookeeper: ZooKeeperServer,  # noqa: F811
    zk_connect: str,  # noqa: F811
) -> None:
    client = zk_client.connect(zk_connect, session_timeout_ms=SESSION_TIMEOUT_MS)
    recorder = Recorder()
    try:
        registration = BrokerRegistration(client, INFO, **recorder.callbacks())
        first_epoch = registration.register()
        expire_session(client, zookeeper.hosts)
        assert recorder.next() == ("lost", None)
        kind, epoch = recorder.next()
        assert kind == "registered"
        assert isinstance(epoch, int) and epoch > first_epoch
        _, stat = client.get("/brokers/ids/1")
        assert stat.ephemeralOwner == client.client_id[0]
        assert (stat.czxid, registration.epoch, registration.registered) == (epoch, epoch, True)
    finally:
        zk_client.close(client)


def test_broker_steps_down_if_its_id_was_taken_while_it_was_cut_off(
    zookeeper: ZooKeeperServer,  # noqa: F811
    zk_connect: str,  # noqa: F811
) -> None:
    chroot = "/" + zk_connect.split("/", 1)[1]
    proxy = ZkProxy(zookeeper.port)
    client = zk_client.connect(proxy.hosts + chroot, session_timeout_ms=SESSION_TIMEOUT_MS)
    usurper = zk_client.connect(zk_connect)
    recorder = Recorder()
    try:
        registration = BrokerRegistration(client, INFO, stale_wait_s=0.5, **recorder.callbacks())
        registration.register()
        session = client.client_id
        proxy.block()  # network partition: the broker cannot reach ZooKeeper
        # Meanwhile its session ends on the server, and another broker takes broker.id 1.
        from kazoo.client import KazooClient

        twin = KazooClient(hosts=zookeeper.hosts, client_id=session)
        twin.start(timeout=15)
        twin.stop()
        twin.close()
        BrokerRegistration(usurper, INFO).register()
        proxy.unblock()
        assert recorder.next() == ("lost", None)
        kind, reason = recorder.next()
        assert kind == "step_down"
        assert "broker.id 1" in str(reason)
        assert not registration.registered
        assert usurper.get("/brokers/ids/1")[1].ephemeralOwner == usurper.client_id[0]
    finally:
        zk_client.close(client)
        zk_client.close(usurper)
        proxy.close()
