"""Parse Kafka's ``listeners`` / ``advertised.listeners`` values."""

from __future__ import annotations

from dataclasses import dataclass

from pystream.errors import InvalidConfigError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True)
class Listener:
    """One ``NAME://host:port`` entry; NAME is also the security protocol for now."""

    name: str
    host: str
    port: int

    @property
    def security_protocol(self) -> str:
        return self.name if self.name in SECURITY_PROTOCOLS else "PLAINTEXT"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name}://{host}:{self.port}"


def parse_listeners(value: str, key: str = "listeners") -> list[Listener]:
    """Parse ``"PLAINTEXT://127.0.0.1:9092,SSL://:9093"``.

    An empty host means all interfaces, as in Kafka.  Raises InvalidConfigError
    naming the key and the offending entry.
    """
    listeners: list[Listener] = []
    for raw in (part.strip() for part in value.split(",")):
        if not raw:
            continue
        name, sep, address = raw.partition("://")
        if not sep or not name:
            raise InvalidConfigError(
                f"{key}: {raw!r} is not NAME://host:port (e.g. PLAINTEXT://127.0.0.1:9092)"
            )
        if address.startswith("["):
            host, _, rest = address[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = address.rpartition(":")
        try:
            port = int(port_text)
        except ValueError:
            raise InvalidConfigError(f"{key}: {raw!r} has no valid port") from None
        if not 0 <= port <= 65535:
            raise InvalidConfigError(f"{key}: port {port} in {raw!r} is outside 0..65535")
        listener = Listener(name.upper(), host, port)
        if any(existing.name == listener.name for existing in listeners):
            raise InvalidConfigError(f"{key}: listener name {listener.name} appears twice")
        listeners.append(listener)
    if not listeners:
        raise InvalidConfigError(f"{key} is empty; set e.g. PLAINTEXT://127.0.0.1:9092")
    return listeners
