"""Kafka's listener model: listeners, protocol map, advertised and inter-broker listeners."""

from __future__ import annotations

import pytest

from pystream.config import BrokerConfig
from pystream.errors import InvalidConfigError
from pystream.security.listeners import Listener, ListenerConfig, parse_listeners


def test_parse_listeners() -> None:
    assert parse_listeners("PLAINTEXT://127.0.0.1:9092") == [
        Listener("PLAINTEXT", "127.0.0.1", 9092, "PLAINTEXT")
    ]
    both = parse_listeners("PLAINTEXT://:9092, ssl://[::1]:9093")
    assert both[0].host == "" and both[1] == Listener("SSL", "::1", 9093, "SSL")
    assert str(both[1]) == "SSL://[::1]:9093"
    assert both[1].uses_tls and not both[1].uses_sasl
    sasl = parse_listeners("SASL_PLAINTEXT://h:1,SASL_SSL://h:2")
    assert [(s.uses_sasl, s.uses_tls) for s in sasl] == [(True, False), (True, True)]
    for bad in [
        "127.0.0.1:9092",
        "PLAINTEXT://host:port",
        "PLAINTEXT://h:70000",
        "",
        "PLAINTEXT://h:1,PLAINTEXT://h:2",
        "PLAINTEXT://h:1,SSL://h:1",  # two listeners on one port
        "INTERNAL://h:1",  # not in the default protocol map
    ]:
        with pytest.raises(InvalidConfigError):
            parse_listeners(bad)


def test_named_listeners_with_protocol_map() -> None:
    config = ListenerConfig.from_config(
        "INTERNAL://127.0.0.1:9093,EXTERNAL://0.0.0.0:9094",
        "INTERNAL://broker1:9093,EXTERNAL://kafka.example.com:9094",
        "INTERNAL:SSL,EXTERNAL:SASL_SSL",
        inter_broker_listener_name="internal",
    )
    assert [(lis.name, lis.security_protocol) for lis in config.listeners] == [
        ("INTERNAL", "SSL"),
        ("EXTERNAL", "SASL_SSL"),
    ]
    assert config.inter_broker == Listener("INTERNAL", "broker1", 9093, "SSL")
    assert config.advertised[1].host == "kafka.example.com"


def test_inter_broker_listener_rules() -> None:
    both = "PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9093"
    # Kafka's default: security.inter.broker.protocol=PLAINTEXT.
    assert ListenerConfig.from_config(both).inter_broker_listener_name == "PLAINTEXT"
    by_protocol = ListenerConfig.from_config(both, security_inter_broker_protocol="SSL")
    assert by_protocol.inter_broker.port == 9093
    # A broker without a PLAINTEXT listener talks to its peers on its first one.
    only_ssl = ListenerConfig.from_config("SSL://127.0.0.1:9093")
    assert only_ssl.inter_broker_listener_name == "SSL"
    with pytest.raises(InvalidConfigError, match="Only one of"):
        ListenerConfig.from_config(
            both, inter_broker_listener_name="SSL", security_inter_broker_protocol="SSL"
        )
    with pytest.raises(InvalidConfigError, match="inter.broker.listener.name"):
        ListenerConfig.from_config(both, inter_broker_listener_name="INTERNAL")
    with pytest.raises(InvalidConfigError, match="security.inter.broker.protocol"):
        ListenerConfig.from_config("SSL://h:1", security_inter_broker_protocol="PLAINTEXT")


def test_advertised_listeners_validation() -> None:
    with pytest.raises(InvalidConfigError, match="subset"):
        ListenerConfig.from_config("PLAINTEXT://:9092", "SSL://h:9093")
    with pytest.raises(InvalidConfigError, match="wildcard"):
        ListenerConfig.from_config("PLAINTEXT://:9092", "PLAINTEXT://0.0.0.0:9092")
    with pytest.raises(InvalidConfigError, match="NAME:PROTOCOL"):
        ListenerConfig.from_config("PLAINTEXT://:9092", protocol_map="INTERNAL")
    with pytest.raises(InvalidConfigError, match="unknown security protocol"):
        ListenerConfig.from_config("PLAINTEXT://:9092", protocol_map="INTERNAL:TLS")


def test_broker_config_keys() -> None:
    config = BrokerConfig.from_properties(
        {
            "listeners": "INTERNAL://:0",
            "listener.security.protocol.map": "INTERNAL:SSL",
            "inter.broker.listener.name": "INTERNAL",
            "ssl.client.auth": "required",
            "ssl.enabled.protocols": "TLSv1.3",
        }
    )
    assert config.ssl_client_auth == "required"
    assert config.ssl_enabled_protocols == ("TLSv1.3",)
    with pytest.raises(InvalidConfigError):
        BrokerConfig.from_properties({"ssl.client.auth": "always"})
    with pytest.raises(InvalidConfigError):
        BrokerConfig.from_properties({"security.inter.broker.protocol": "TLS"})


def test_per_listener_ssl_overrides() -> None:
    config = BrokerConfig.from_properties(
        {
            "ssl.client.auth": "none",
            "listener.name.internal.ssl.client.auth": "required",
            "listener.name.internal.ssl.enabled.protocols": "TLSv1.3",
        }
    )
    assert config.for_listener("INTERNAL", "ssl.client.auth") == "required"
    assert config.for_listener("INTERNAL", "ssl.enabled.protocols") == ("TLSv1.3",)
    assert config.for_listener("EXTERNAL", "ssl.client.auth") == "none"
    assert config.unknown_keys == ()
    # Dynamic config layers keep them.
    assert config.with_dynamic({}, {}).for_listener("INTERNAL", "ssl.client.auth") == "required"
    with pytest.raises(InvalidConfigError, match="ssl.client.auth"):
        BrokerConfig.from_properties({"listener.name.internal.ssl.client.auth": "always"})
    with pytest.raises(InvalidConfigError, match="lower case"):
        BrokerConfig.from_properties({"listener.name.INTERNAL.ssl.client.auth": "none"})
    with pytest.raises(InvalidConfigError, match="ssl.nope"):
        BrokerConfig.from_properties({"listener.name.internal.ssl.nope": "x"})
