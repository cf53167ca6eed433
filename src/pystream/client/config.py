"""Settings shared by every client (Kafka's names, snake_case) and bootstrap parsing."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields

from pystream.security.client_security import (
    CLIENT_SASL_MECHANISMS,
    PLAINTEXT,
    ClientSecurity,
    SaslLogin,
)
from pystream.security.jaas import parse_jaas_config
from pystream.security.ssl import client_context

__all__ = [
    "CLIENT_PROPERTIES",
    "ClientConfig",
    "parse_bootstrap_servers",
    "settings_from_properties",
    "split_config",
]


def parse_bootstrap_servers(servers: str | Iterable[str]) -> list[tuple[str, int]]:
    """``"h1:9092,h2:9093"`` or ``["h1:9092", ...]`` -> ``[(host, port), ...]``.

    IPv6 literals go in brackets (``[::1]:9092``); a missing port means 9092.
    """
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    out: list[tuple[str, int]] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        if "://" in item:  # tolerate "PLAINTEXT://host:port"
            item = item.split("://", 1)[1]
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        elif item.count(":") == 1:
            host, port_text = item.split(":")
        else:
            host, port_text = item, ""
        try:
            port = int(port_text) if port_text else 9092
        except ValueError:
            raise ValueError(
                f"bootstrap server {raw!r}: port {port_text!r} is not a number"
            ) from None
        if not host or not 0 < port < 65536:
            raise ValueError(f"bootstrap server {raw!r} is not host:port")
        out.append((host, port))
    if not out:
        raise ValueError("bootstrap_servers is empty: give at least one host:port")
    return out


@dataclass(slots=True)
class ClientConfig:
    """Connection, retry and metadata settings common to producer, consumer and admin."""

    bootstrap_servers: list[tuple[str, int]] = field(default_factory=list)
    client_id: str = "pystream"
    request_timeout_ms: int = 30_000
    """How long to wait for any response before failing the request and the connection."""
    retry_backoff_ms: int = 100
    reconnect_backoff_ms: int = 50
    reconnect_backoff_max_ms: int = 1_000
    socket_connection_setup_timeout_ms: int = 10_000
    metadata_max_age_ms: int = 300_000
    """Refresh metadata at least this often even without errors."""
    max_response_size: int = 256 * 1024 * 1024
    """Refuse response frames larger than this (bounded memory against a bad peer)."""
    security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (kafka-python's names for the TLS and
    SASL settings below)."""
    ssl_context: ssl.SSLContext | None = None
    """A ready TLS context; None: one is made from the ``ssl_*`` files."""
    ssl_cafile: str | None = None
    """CA certificates (PEM) the brokers' certificates are verified with; None: the
    system's."""
    ssl_certfile: str | None = None
    """This client's certificate chain (PEM; may hold the key too) for mTLS."""
    ssl_keyfile: str | None = None
    ssl_password: str | None = None
    """Password of the (encrypted) private key."""
    ssl_check_hostname: bool = True
    """Check that the broker's certificate names the host connected to."""
    sasl_mechanism: str = "PLAIN"
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with security_protocol SASL_*)."""
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None

    @classmethod
    def from_kwargs(cls, bootstrap_servers: str | Iterable[str], **kwargs: object) -> ClientConfig:
        config = cls(bootstrap_servers=parse_bootstrap_servers(bootstrap_servers))
        for name, value in kwargs.items():
            setattr(config, name, value)
        config.check_security()
        try:
            config.security()  # bad TLS files fail here, not at the first connection
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"cannot set up TLS from ssl_cafile/ssl_certfile/ssl_keyfile: {exc}"
            ) from exc
        return config

    def check_security(self) -> None:
        """ValueError naming the setting if the security settings do not fit together."""
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"security_protocol={self.security_protocol!r}: pystream's client speaks "
                + ", ".join(SECURITY_PROTOCOLS)
            )
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_mechanism not in CLIENT_SASL_MECHANISMS:
                raise ValueError(
                    f"sasl_mechanism {self.sasl_mechanism!r}: use PLAIN, SCRAM-SHA-256 or "
                    "SCRAM-SHA-512"
                )
            if not self.sasl_plain_username or self.sasl_plain_password is None:
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs sasl_plain_username "
                    "and sasl_plain_password"
                )

    def security(self) -> ClientSecurity:
        """How connections are secured: TLS (the context is made once, on first use) and
        the SASL login, as ``security_protocol`` says."""
        protocol = self.security_protocol
        if protocol in ("SSL", "SASL_SSL") and self.ssl_context is None:
            self.ssl_context = client_context(
                cafile=self.ssl_cafile,
                certfile=self.ssl_certfile,
                keyfile=self.ssl_keyfile,
                password=self.ssl_password,
                check_hostname=self.ssl_check_hostname,
            )
        if protocol == "PLAINTEXT":
            return PLAINTEXT
        sasl = None
        if protocol.startswith("SASL_"):
            sasl = SaslLogin(
                self.sasl_mechanism, self.sasl_plain_username or "", self.sasl_plain_password or ""
            )
        return ClientSecurity(
            protocol, self.ssl_context if protocol in ("SSL", "SASL_SSL") else None, sasl
        )


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")

_COMMON = frozenset(f.name for f in fields(ClientConfig)) - {"bootstrap_servers"}


def split_config(kwargs: dict[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    """(common client settings, the rest) from keyword arguments."""
    common = {k: v for k, v in kwargs.items() if k in _COMMON}
    rest = {k: v for k, v in kwargs.items() if k not in _COMMON}
    return common, rest


# Kafka client property names -> the pystream client's keyword arguments.
CLIENT_PROPERTIES = {
    "client.id": ("client_id", str),
    "request.timeout.ms": ("request_timeout_ms", int),
    "retry.backoff.ms": ("retry_backoff_ms", int),
    "reconnect.backoff.ms": ("reconnect_backoff_ms", int),
    "reconnect.backoff.max.ms": ("reconnect_backoff_max_ms", int),
    "socket.connection.setup.timeout.ms": ("socket_connection_setup_timeout_ms", int),
    "metadata.max.age.ms": ("metadata_max_age_ms", int),
    "security.protocol": ("security_protocol", str.upper),
    "ssl.truststore.location": ("ssl_cafile", str),  # PEM trust store (Java clients)
    "ssl.ca.location": ("ssl_cafile", str),  # librdkafka's name
    "ssl.keystore.location": ("ssl_certfile", str),  # PEM: key and certificate chain
    "ssl.certificate.location": ("ssl_certfile", str),
    "ssl.key.location": ("ssl_keyfile", str),
    "ssl.key.password": ("ssl_password", str),
    # Kafka's default "https" checks the host name; an empty value turns the check off.
    "ssl.endpoint.identification.algorithm": ("ssl_check_hostname", bool),
    "sasl.mechanism": ("sasl_mechanism", str),
    # librdkafka's names for the login (Kafka's tools use sasl.jaas.config, below).
    "sasl.username": ("sasl_plain_username", str),
    "sasl.password": ("sasl_plain_password", str),
}
# Settings pystream's client accepts and does not need (PEM is its only store format).
_IGNORED_PREFIXES = ("sasl.", "ssl.")


def settings_from_properties(
    props: dict[str, str], where: str, other: Callable[[str, str], tuple[str, object]] | None = None
) -> dict[str, object]:
    """Client keyword arguments from Kafka client properties read from ``where`` (a file
    name, for messages): the connection and security settings above, and
    ``sasl.jaas.config``'s username/password.  Any other key goes to ``other(key,
    value)`` -> (keyword, value) (a producer's ``acks``…), or is a ValueError naming it.
    """
    settings: dict[str, object] = {}
    for key, value in props.items():
        if key == "sasl.jaas.config":  # Kafka's tools: the login module's username/password
            options = parse_jaas_config(value, f"{where}: {key}").options
            for option in ("username", "password"):
                if option in options:
                    settings[f"sasl_plain_{option}"] = options[option]
            continue
        if key not in CLIENT_PROPERTIES:
            if key == "bootstrap.servers" or key.startswith(_IGNORED_PREFIXES):
                continue
            if other is None:
                raise ValueError(f"{where}: unknown client setting {key!r}")
            name, converted = other(key, value)
            settings[name] = converted
            continue
        name, kind = CLIENT_PROPERTIES[key]
        try:
            settings[name] = kind(value)
        except ValueError:
            raise ValueError(f"{where}: {key} must be an integer, got {value!r}") from None
    return settings
