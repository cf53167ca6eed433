"""Settings shared by every client (Kafka's names, snake_case) and bootstrap parsing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields

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
    reconnect_backoff_ms: int = 50
    reconnect_backoff_max_ms: int = 1_000
    socket_connection_setup_timeout_ms: int = 10_000
    metadata_max_age_ms: int = 300_000
    """Refresh metadata at least this often even without errors."""
    max_response_size: int = 256 * 1024 * 1024
    """Refuse response frames larger than this (bounded memory against a bad peer)."""
    security_protocol: str = "PLAINTEXT"
    """PLAINTEXT or SASL_PLAINTEXT (kafka-python's name; TLS comes with the SSL work)."""
    sasl_mechanism: str = "PLAIN"
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with security_protocol=SASL_PLAINTEXT)."""
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None

    @classmethod
    def from_kwargs(cls, bootstrap_servers: str | Iterable[str], **kwargs: object) -> ClientConfig:
        config = cls(bootstrap_servers=parse_bootstrap_servers(bootstrap_servers))
        for name, value in kwargs.items():
            setattr(config, name, value)
        config.check_security()
        return config

    def check_security(self) -> None:
        """ValueError naming the setting if the security settings do not fit together."""
        if self.security_protocol not in ("PLAINTEXT", "SASL_PLAINTEXT"):
            raise ValueError(
                f"security_protocol {self.security_protocol!r} is not supported by pystream's "
                "client yet: use PLAINTEXT or SASL_PLAINTEXT"
            )
        if self.security_protocol == "SASL_PLAINTEXT":
            if self.sasl_mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
                raise ValueError(
                    f"sasl_mechanism {self.sasl_mechanism!r}: use PLAIN, SCRAM-SHA-256 or "
                    "SCRAM-SHA-512"
                )
            if not self.sasl_plain_username or self.sasl_plain_password is None:
                raise ValueError(
                    "security_protocol SASL_PLAINTEXT needs sasl_plain_username and "
                    "sasl_plain_password"
                )

    def sasl_credentials(self) -> tuple[str, str, str] | None:
        """(mechanism, username, password) when connections must log in, else None."""
        if self.security_protocol != "SASL_PLAINTEXT":
            return None
        return self.sasl_mechanism, self.sasl_plain_username or "", self.sasl_plain_password or ""


_COMMON = frozenset(f.name for f in fields(ClientConfig)) - {"bootstrap_servers"}


def split_config(kwargs: dict[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    """(common client settings, the rest) from keyword arguments."""
    common = {k: v for k, v in kwargs.items() if k in _COMMON}
    rest = {k: v for k, v in kwargs.items() if k not in _COMMON}
    return common, rest
