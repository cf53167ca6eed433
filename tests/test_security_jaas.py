"""Kafka's ``sasl.jaas.config`` parser, the broker's inter-broker login lookup, and the
startup errors of a SASL inter-broker listener that is not fully configured."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import assert_one_line_error, run
from tls_certs import CertificateAuthority

from pystream.broker.server import Broker
from pystream.config import BrokerConfig, is_sensitive_broker_config
from pystream.errors import InvalidConfigError
from pystream.security.jaas import inter_broker_login, parse_jaas_config

SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule"


def test_a_login_module_entry_with_quoted_and_bare_values_and_escapes() -> None:
    entry = parse_jaas_config(
        f'  {SCRAM}  REQUIRED username="admin"\n password="a \\"q\\" b\\\\c;d" tokenauth=true ;  '
    )
    assert entry.login_module == SCRAM
    assert entry.control_flag == "required"
    assert entry.options == {"username": "admin", "password": 'a "q" b\\c;d', "tokenauth": "true"}
    assert "a \\" not in repr(entry) and "hidden" in repr(entry)  # no password in a repr
    assert parse_jaas_config(f"{SCRAM} optional;").options == {}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "expected '<LoginModuleClass> <ControlFlag>"),
        ('password="PW";', "expected '<LoginModuleClass> <ControlFlag>"),
        (f'{SCRAM} required password="PW"', "must end with ';'"),
        (f'{SCRAM} mandatory password="PW";', "invalid control flag 'mandatory'"),
        (f'{SCRAM} required password="PW" username=;', 'is not key="value"'),
        (f'{SCRAM} required "password"="PW";', 'is not key="value"'),
        (f'{SCRAM} required username="a" password="PW;', "unterminated quoted value"),
        (f'{SCRAM} required password="PW" password="PW";', "option password"),
        (f'{SCRAM} required password="PW"; {PLAIN} required;', "more than one login module"),
    ],
)
def test_a_malformed_entry_is_an_error_naming_the_key_not_the_text(text: str, needle: str) -> None:
    key = "listener.name.internal.scram-sha-256.sasl.jaas.config"
    with pytest.raises(InvalidConfigError) as raised:
        parse_jaas_config(text.replace("PW", "s3cret-Pw"), key)
    message = str(raised.value)
    assert message.startswith(key + ":") and needle in message
    assert "s3cret-Pw" not in message


def _config(**props: str) -> BrokerConfig:
    return BrokerConfig.from_properties(
        {
            "listeners": "INTERNAL://127.0.0.1:0,EXTERNAL://127.0.0.1:0",
            "listener.security.protocol.map": "INTERNAL:SASL_PLAINTEXT,EXTERNAL:PLAINTEXT",
            "inter.broker.listener.name": "INTERNAL",
            **props,
        }
    )


def _jaas(user: str, password: str, module: str = SCRAM) -> str:
    return f'{module} required username="{user}" password="{password}";'


def test_the_login_is_looked_up_as_kafka_does_most_specific_key_first() -> None:
    keys = {
        "listener.name.internal.scram-sha-512.sasl.jaas.config": _jaas("per-mechanism", "pw-1"),
        "listener.name.internal.sasl.jaas.config": _jaas("per-listener", "pw-2"),
        "sasl.jaas.config": _jaas("broker-wide", "pw-3"),
    }
    base = {"sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512"}
    names = list(keys)
    for index, expected in enumerate(["per-mechanism", "per-listener", "broker-wide"]):
        config = _config(**base, **{k: keys[k] for k in names[index:]})
        login = inter_broker_login(config, "INTERNAL")
        assert (login.mechanism, login.username) == ("SCRAM-SHA-512", expected)
        assert login.password not in repr(login)
    # Another mechanism's key is not this one's.
    other = _config(
        **base,
        **{"listener.name.internal.scram-sha-256.sasl.jaas.config": _jaas("u", "p")},
        **{"sasl.jaas.config": _jaas("broker-wide", "pw-3")},
    )
    assert inter_broker_login(other, "INTERNAL").username == "broker-wide"


def test_plain_user_options_are_ignored_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    config = _config(
        **{
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "sasl.jaas.config": f'{PLAIN} required username="admin" password="pw" '
            'user_admin="pw" user_alice="alice-pw";',
            # Not the inter-broker listener's: still checked, and named in the warning.
            "listener.name.external.plain.sasl.jaas.config": f'{PLAIN} required user_bob="b";',
        }
    )
    with caplog.at_level(logging.WARNING, logger="pystream.security.jaas"):
        login = Broker(config).inter_broker_security.sasl
    assert login is not None
    assert (login.mechanism, login.username, login.password) == ("PLAIN", "admin", "pw")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "listener.name.external.plain.sasl.jaas.config, sasl.jaas.config" in warnings[0]
    assert "user_<name> options" in warnings[0] and "ignored" in warnings[0]
    assert "alice-pw" not in warnings[0]


def test_a_malformed_jaas_key_stops_the_broker_even_when_unused() -> None:
    config = _config(
        **{
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-256",
            "sasl.jaas.config": _jaas("admin", "pw"),
            "listener.name.external.sasl.jaas.config": f'{PLAIN} required username="a"',
        }
    )
    with pytest.raises(InvalidConfigError, match="^listener.name.external.sasl.jaas.config: "):
        Broker(config)


@pytest.mark.parametrize(
    ("props", "needles"),
    [
        ({}, ["set sasl.mechanism.inter.broker.protocol to PLAIN, SCRAM-SHA-256 or", "GSSAPI"]),
        (
            {"sasl.mechanism.inter.broker.protocol": "GSSAPI"},
            ["'GSSAPI' is not supported"],
        ),
        (
            {"sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-256"},
            ["set listener.name.internal.scram-sha-256.sasl.jaas.config=", "ScramLoginModule"],
        ),
        (
            {
                "sasl.mechanism.inter.broker.protocol": "PLAIN",
                "listener.name.internal.sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "sasl.jaas.config": _jaas("a", "b"),
            },
            ["PLAIN must be included in sasl.enabled.mechanisms of listener INTERNAL"],
        ),
        (
            {
                "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-256",
                "listener.name.internal.sasl.jaas.config": f'{SCRAM} required username="a";',
            },
            ["listener.name.internal.sasl.jaas.config:", "has no password"],
        ),
        (
            {
                "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-256",
                "sasl.jaas.config": 'com.sun.security.auth.module.Krb5LoginModule required a="b";',
            },
            ["sasl.jaas.config: login module com.sun.security.auth.module.Krb5LoginModule"],
        ),
        (
            {
                "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-256",
                "sasl.jaas.config": f'{SCRAM} required username="a" password="b"',
            },
            ["sasl.jaas.config: the login module entry must end with ';'"],
        ),
    ],
)
def test_a_broker_refuses_to_start_without_a_usable_inter_broker_login(
    props: dict[str, str], needles: list[str]
) -> None:
    with pytest.raises(InvalidConfigError) as raised:
        Broker(_config(**props))
    for needle in needles:
        assert needle in str(raised.value)


def test_a_complete_sasl_inter_broker_listener_gives_the_login_to_every_channel() -> None:
    broker = Broker(
        _config(
            **{
                "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-256",
                "listener.name.internal.scram-sha-256.sasl.jaas.config": _jaas("admin", "pw"),
            }
        )
    )
    security = broker.inter_broker_security
    assert security.security_protocol == "SASL_PLAINTEXT" and security.ssl_context is None
    assert security.sasl is not None
    assert (security.sasl.mechanism, security.sasl.username) == ("SCRAM-SHA-256", "admin")


def test_sasl_ssl_inter_broker_security_has_tls_and_the_login(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    identity = ca.issue("broker", "localhost")
    config: dict[str, Any] = {
        "listener.security.protocol.map": "INTERNAL:SASL_SSL,EXTERNAL:PLAINTEXT",
        "ssl.keystore.location": str(identity.pem),
        "ssl.truststore.location": str(ca.ca_file),
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "sasl.jaas.config": _jaas("admin", "pw"),
    }
    security = Broker(_config(**config)).inter_broker_security
    assert security.ssl_context is not None and security.sasl is not None


def test_jaas_keys_are_secrets_and_listener_sasl_keys_are_known() -> None:
    for key in (
        "sasl.jaas.config",
        "listener.name.internal.sasl.jaas.config",
        "listener.name.internal.scram-sha-512.sasl.jaas.config",
        "listener.name.internal.ssl.key.password",
    ):
        assert is_sensitive_broker_config(key), key
    assert not is_sensitive_broker_config("sasl.enabled.mechanisms")
    config = _config(
        **{
            "listener.name.internal.sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
            "listener.name.internal.plain.sasl.jaas.config": _jaas("a", "b", PLAIN),
        }
    )
    assert config.unknown_keys == ()
    assert config.for_listener("INTERNAL", "sasl.enabled.mechanisms") == ("SCRAM-SHA-512", "PLAIN")
    assert config.for_listener("EXTERNAL", "sasl.enabled.mechanisms") == (
        "SCRAM-SHA-256",
        "SCRAM-SHA-512",
        "PLAIN",
    )
    with pytest.raises(InvalidConfigError, match="^listener.name.internal.sasl.enabled.mech"):
        _config(**{"listener.name.internal.sasl.enabled.mechanisms": "GSSAPI"})


def test_serve_prints_one_line_saying_what_to_set(tmp_path: Path) -> None:
    result = run(
        "serve",
        "--override", f"log.dirs={tmp_path / 'data'}",
        "--override", "listeners=INTERNAL://127.0.0.1:0",
        "--override", "listener.security.protocol.map=INTERNAL:SASL_PLAINTEXT",
        "--override", "inter.broker.listener.name=INTERNAL",
        check=False,
    )  # fmt: skip
    assert_one_line_error(result, "sasl.mechanism.inter.broker.protocol")
    assert not (tmp_path / "data").exists()  # refused before touching the log dirs
