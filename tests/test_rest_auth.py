"""HTTP Basic on the REST proxy, passed through to the broker as each user's SASL login.

A broker with a SASL_PLAINTEXT listener, SCRAM credentials for two users and the ACL
authorizer (alice is a super user, bob has no ACLs), and a ``pystream rest`` with
``authentication.method=BASIC``: the broker checks the passwords and its ACLs apply
per HTTP user.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from broker_process import BrokerProcess, free_ports
from cli_helpers import run
from rest_process import RestProxyProcess
from test_rest_v2 import JSON_V2, V2, assert_error

from pystream import AdminClient, NewTopic

USERS = {"alice": "alice-secret", "bob": "bob-secret"}


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    plain, sasl = free_ports(2)
    process = BrokerProcess(
        tmp_path_factory.mktemp("rest-auth") / "broker",
        {
            "listeners": f"PLAINTEXT://127.0.0.1:{plain},SASL_PLAINTEXT://127.0.0.1:{sasl}",
            "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256",
            "authorizer.class.name": "pystream.security.AclAuthorizer",
            "super.users": "User:alice;User:ANONYMOUS",  # ANONYMOUS: the PLAINTEXT admin below
            "allow.everyone.if.no.acl.found": "false",
        },
    )
    for user, password in USERS.items():
        run(
            "users", "add", user, "--password", password, "--mechanism", "SCRAM-SHA-256",
            "--log-dirs", str(process.log_dir),
        )  # fmt: skip
    process.start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def proxy(sasl_broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process = RestProxyProcess(
        tmp_path_factory.mktemp("rest-auth") / "proxy",
        f"127.0.0.1:{sasl_broker.listener_ports['SASL_PLAINTEXT']}",
        {
            "authentication.method": "BASIC",
            "client.security.protocol": "SASL_PLAINTEXT",
            "client.sasl.mechanism": "PLAIN",
        },
    ).start()
    try:
        yield process.url
    finally:
        process.close()


def test_basic_credentials_are_the_brokers_logins(sasl_broker: BrokerProcess, proxy: str) -> None:
    with AdminClient(f"127.0.0.1:{sasl_broker.listener_ports['PLAINTEXT']}") as admin:
        admin.create_topics([NewTopic("audited", 1, 1)])
    record = {"records": [{"value": {"by": "alice"}}]}
    headers = {"Content-Type": JSON_V2}
    with httpx.Client(base_url=proxy, timeout=30) as anonymous:
        refused = anonymous.post("/topics/audited", json=record, headers=headers)
        assert_error(refused, 401, 40101)
        assert refused.headers["www-authenticate"].startswith("Basic realm=")
    with httpx.Client(base_url=proxy, timeout=30, auth=("alice", "wrong")) as wrong:
        assert_error(wrong.get("/topics"), 401, 40101)

    with httpx.Client(base_url=proxy, timeout=30, auth=("alice", USERS["alice"])) as alice:
        produced = alice.post("/topics/audited", json=record, headers=headers)
        assert produced.status_code == 200, produced.text
        assert produced.json()["offsets"][0]["error_code"] is None
        created = alice.post(
            "/consumers/audit", json={"name": "reader"}, headers={"Content-Type": V2}
        )
        assert created.status_code == 200, created.text
        instance = "/consumers/audit/instances/reader"
        assert alice.get(f"{instance}/assignments").status_code == 200

        with httpx.Client(base_url=proxy, timeout=30, auth=("bob", USERS["bob"])) as bob:
            # Bob's login works, but the broker's ACLs give him nothing.
            denied = bob.post("/topics/audited", json=record, headers=headers)
            assert_error(denied, 403, 40301)
            assert "audited" not in bob.get("/topics").json()
            # Alice's consumer instance is not Bob's to see.
            assert_error(bob.get(f"{instance}/assignments"), 404, 40403)
        assert alice.delete(instance).status_code == 204


def test_basic_needs_a_sasl_client_config(tmp_path: Path, sasl_broker: BrokerProcess) -> None:
    config = tmp_path / "rest.properties"
    config.write_text("authentication.method=DIGEST\n")
    result = run(
        "rest", "--bootstrap-server", sasl_broker.bootstrap, "--port", "0",
        "--config", str(config), check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "authentication.method must be NONE or BASIC" in result.stderr
