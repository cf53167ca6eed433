"""Settings shared by every client (Kafka's names, snake_case) and bootstrap parsing."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field, fields

from pystream.security.client_security import (
    CLIENT_SASL_MECHANISMS,
    PLAINTEXT,
    ClientSecurity,
    SaslLogin,
)
from pystream.security.ssl import client_context

__all__ = ["ClientConfig", "parse_bootstrap_servers", "split_config"]


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
    retry_backoff_max_ms: int = 1_000
    """Repeated failures of the same step back off exponentially up to this (KIP-580)."""
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
