"""The SASL server mechanisms against kafka-python's client implementations."""

from __future__ import annotations

import base64

import pytest
from kafka.net.sasl.plain import SaslMechanismPlain
from kafka.net.sasl.scram import ScramClient

from pystream.security.sasl import (
    PlainServer,
    SaslAuthenticationFailed,
    ScramServer,
)
from pystream.security.scram import ScramCredential, new_credential

MECHANISMS = ["SCRAM-SHA-256", "SCRAM-SHA-512"]


def _store(mechanism: str, users: dict[str, str]):
    creds = {(u, mechanism): new_credential(mechanism, p) for u, p in users.items()}
    return lambda user, mech: creds.get((user, mech))


def _scram_login(mechanism: str, lookup, user: str, password: str) -> ScramServer:
    server = ScramServer(mechanism, lookup)
    client = ScramClient(user, password, mechanism)
    server_first = server.evaluate(client.first_message())
    client.process_server_first_message(server_first)
    server_final = server.evaluate(client.final_message())
    client.process_server_final_message(server_final)  # raises if the signature is wrong
    return server


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_scram_login_with_kafka_python_client(mechanism: str) -> None:
    lookup = _store(mechanism, {"alice": "s3cret", "bob,=x": "pw"})
    server = _scram_login(mechanism, lookup, "alice", "s3cret")
    assert server.complete and server.username == "alice"


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize(("user", "password"), [("alice", "Hunter2!"), ("mallory", "s3cret")])
def test_scram_wrong_password_or_unknown_user_fails_alike(
    mechanism: str, user: str, password: str
) -> None:
    lookup = _store(mechanism, {"alice": "s3cret"})
    with pytest.raises(SaslAuthenticationFailed) as failure:
        _scram_login(mechanism, lookup, user, password)
    assert password not in failure.value.detail


def test_scram_refuses_tokenauth_and_other_authzid() -> None:
    lookup = _store("SCRAM-SHA-256", {"alice": "s3cret"})
    with pytest.raises(SaslAuthenticationFailed, match="delegation"):
        ScramServer("SCRAM-SHA-256", lookup).evaluate(b"n,,n=alice,r=abc,tokenauth=true")
    with pytest.raises(SaslAuthenticationFailed, match="authorization id"):
        ScramServer("SCRAM-SHA-256", lookup).evaluate(b"n,a=bob,n=alice,r=abc")
    # authzid equal to the username is accepted
    assert ScramServer("SCRAM-SHA-256", lookup).evaluate(b"n,a=alice,n=alice,r=abc")


def test_credential_string_is_kafkas_form() -> None:
    credential = new_credential("SCRAM-SHA-512", "pw", iterations=8192)
    text = credential.to_string()
    assert text.startswith("salt=") and ",stored_key=" in text and text.endswith(",iterations=8192")
    assert ScramCredential.from_string(text) == credential
    with pytest.raises(ValueError, match="malformed"):
        ScramCredential.from_string("salt=AA==,iterations=4096")


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_plain_checks_the_stored_scram_hash(mechanism: str) -> None:
    lookup = _store(mechanism, {"alice": "s3cret"})
    token = SaslMechanismPlain(
        sasl_plain_username="alice", sasl_plain_password="s3cret", security_protocol="SASL_SSL"
    ).auth_bytes()
    server = PlainServer(lookup)
    assert server.evaluate(token) == b"" and server.complete and server.username == "alice"
    for bad in (b"\0alice\0nope", b"\0nobody\0s3cret", b"bob\0alice\0s3cret", b"alice"):
        with pytest.raises(SaslAuthenticationFailed):
            PlainServer(lookup).evaluate(bad)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_pystreams_scram_client_checks_the_server_signature(mechanism: str) -> None:
    from pystream.security.sasl import new_client

    lookup = _store(mechanism, {"alice": "s3cret"})
    client, server = new_client(mechanism, "alice", "s3cret"), ScramServer(mechanism, lookup)
    final = server.evaluate(client.evaluate(server.evaluate(client.first_token())))
    assert server.complete and client.evaluate(final) is None
    # A server that does not know the password cannot forge its final message.
    client, server = new_client(mechanism, "alice", "s3cret"), ScramServer(mechanism, lookup)
    client.evaluate(server.evaluate(client.first_token()))
    with pytest.raises(SaslAuthenticationFailed, match="signature"):
        client.evaluate(b"v=" + base64.b64encode(b"x" * 32))


def test_the_login_throttle_grows_per_address_caps_and_forgets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pystream.security import sasl

    now = [1000.0]
    monkeypatch.setattr(sasl.time, "monotonic", lambda: now[0])
    throttle = sasl.LoginThrottle(base_delay_ms=100, max_steps=5, window_s=60)
    delays = [throttle.record_failure("10.0.0.1") for _ in range(7)]
    assert delays == [0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5]  # grows, then capped
    assert throttle.record_failure("10.0.0.2") == 0.1  # another address starts afresh
    now[0] += 61  # a quiet minute: forgotten
    assert throttle.record_failure("10.0.0.1") == 0.1
