"""SCRAM credentials in a cluster: written through one broker (ZooKeeper ``/config/users``),
usable on every broker within seconds, and gone everywhere once deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from broker_process import KafkaWire, free_ports  # noqa: E402
from cluster_fixtures import cluster_broker  # noqa: E402
from zookeeper import (  # noqa: E402
    wait_until,
    zk_connect,  # noqa: F401 - fixture
    zookeeper,  # noqa: F401 - fixture
)

from pystream.client import AdminClient  # noqa: E402
from pystream.protocol.messages.sasl_authenticate import SaslAuthenticateRequest  # noqa: E402
from pystream.protocol.messages.sasl_handshake import SaslHandshakeRequest  # noqa: E402


def login_error(port: int, user: str, password: str) -> int:
    """The SaslAuthenticate error code of a PLAIN login on a SASL port (0: logged in)."""
    with KafkaWire(("127.0.0.1", port)) as wire:
        assert wire.request(17, 1, SaslHandshakeRequest(mechanism="PLAIN")).error_code == 0
        token = f"\0{user}\0{password}".encode()
        return wire.request(36, 2, SaslAuthenticateRequest(auth_bytes=token)).error_code


def test_a_credential_altered_on_one_broker_works_on_every_broker(
    tmp_path: Path,
    zk_connect: str,  # noqa: F811
) -> None:
    brokers, plain_ports, sasl_ports = [], [], []
    try:
        for broker_id in range(2):
            plain_port, sasl_port = free_ports(2)
            broker = cluster_broker(tmp_path, zk_connect, broker_id)
            broker.overrides["listeners"] = (
                f"PLAINTEXT://127.0.0.1:{plain_port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}"
            )
            broker.overrides["connection.failed.authentication.delay.ms"] = "0"
            brokers.append(broker.start())
            plain_ports.append(plain_port)
            sasl_ports.append(sasl_port)
        first = f"127.0.0.1:{plain_ports[0]}"  # altered through broker 0 only
        with AdminClient(first) as admin:
            admin.upsert_user_scram_credential("zed", "SCRAM-SHA-512", "zed-Pw-1", 4096)
        for port in sasl_ports:
            wait_until(lambda port=port: login_error(port, "zed", "zed-Pw-1") == 0, 15)
        assert login_error(sasl_ports[1], "zed", "not-it") != 0
        with AdminClient(first) as admin:
            assert admin.describe_user_scram_credentials(["zed"]) == {
                "zed": {"SCRAM-SHA-512": 4096}
            }
            admin.delete_user_scram_credential("zed", "SCRAM-SHA-512")
        for port in sasl_ports:
            wait_until(lambda port=port: login_error(port, "zed", "zed-Pw-1") != 0, 15)
    finally:
        for broker in brokers:
            broker.close()
