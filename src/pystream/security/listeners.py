"""Kafka's listener model: ``listeners``, ``advertised.listeners``,
``listener.security.protocol.map`` and the inter-broker listener.

A listener is ``NAME://host:port``; its security protocol comes from
``listener.security.protocol.map`` (Kafka's default maps each protocol name to
itself, so ``SSL://:9093`` is an SSL listener and ``INTERNAL://:9094`` needs
``INTERNAL:SSL`` or similar in the map).  The inter-broker listener is named by
``inter.broker.listener.name``, or is the one whose name is
``security.inter.broker.protocol`` (default PLAINTEXT); setting both is an
error, as in Kafka.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pystream.errors import InvalidConfigError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: Kafka's default ``listener.security.protocol.map``.
DEFAULT_PROTOCOL_MAP = ",".join(f"{p}:{p}" for p in SECURITY_PROTOCOLS)


@dataclass(frozen=True)
class Listener:
    """One ``NAME://host:port`` entry and the security protocol it speaks."""

    name: str
    host: str
    port: int
    security_protocol: str = "PLAINTEXT"

    @property
    def uses_tls(self) -> bool:
        """SSL and SASL_SSL listeners wrap the socket in TLS."""
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        """SASL_PLAINTEXT and SASL_SSL listeners require SASL authentication."""
        return self.security_protocol.startswith("SASL_")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name}://{host}:{self.port}"


def parse_protocol_map(value: str, key: str = "listener.security.protocol.map") -> dict[str, str]:
    """Parse ``"INTERNAL:SSL,EXTERNAL:SASL_SSL"`` into {listener name: security protocol}."""
    protocols: dict[str, str] = {}
    for raw in (part.strip() for part in value.split(",")):
        if not raw:
            continue
        name, sep, protocol = (s.strip() for s in raw.partition(":"))
        if not sep or not name:
            raise InvalidConfigError(f"{key}: {raw!r} is not NAME:PROTOCOL (e.g. INTERNAL:SSL)")
        protocol = protocol.upper()
        if protocol not in SECURITY_PROTOCOLS:
            raise InvalidConfigError(
                f"{key}: {raw!r} names an unknown security protocol; "
                f"use one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        name = name.upper()
        if name in protocols:
            raise InvalidConfigError(f"{key}: listener name {name} appears twice")
        protocols[name] = protocol
    return protocols


def parse_listeners(
    value: str, key: str = "listeners", protocol_map: Mapping[str, str] | None = None
) -> list[Listener]:
    """Parse ``"PLAINTEXT://127.0.0.1:9092,SSL://:9093"``.

    An empty host means all interfaces, as in Kafka.  ``protocol_map`` (default:
    Kafka's) gives each name its security protocol.  Raises InvalidConfigError naming
    the key and the offending entry.
    """
    if protocol_map is None:
        protocol_map = parse_protocol_map(DEFAULT_PROTOCOL_MAP)
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
        name = name.upper()
        protocol = protocol_map.get(name)
        if protocol is None:
            raise InvalidConfigError(
                f"{key}: no security protocol defined for listener {name}; add "
                f"{name}:<PROTOCOL> to listener.security.protocol.map"
            )
        if any(existing.name == name for existing in listeners):
            raise InvalidConfigError(f"{key}: listener name {name} appears twice")
        if port and any(existing.port == port for existing in listeners):
            raise InvalidConfigError(f"{key}: each listener must have a different port ({port})")
        listeners.append(Listener(name, host, port, protocol))
    if not listeners:
        raise InvalidConfigError(f"{key} is empty; set e.g. PLAINTEXT://127.0.0.1:9092")
    return listeners


@dataclass(frozen=True)
class ListenerConfig:
    """The broker's listeners, the addresses it advertises, and the inter-broker one."""

    listeners: tuple[Listener, ...]
    advertised: tuple[Listener, ...]
    inter_broker_listener_name: str

    @classmethod
    def from_config(
        cls,
        listeners: str,
        advertised_listeners: str = "",
        protocol_map: str = DEFAULT_PROTOCOL_MAP,
        inter_broker_listener_name: str = "",
        security_inter_broker_protocol: str = "",
    ) -> ListenerConfig:
        """Validate the keys together as Kafka's ``KafkaConfig`` does.

        ``security_inter_broker_protocol`` empty means "not set" (Kafka's default,
        PLAINTEXT, applies unless ``inter_broker_listener_name`` is given).
        """
        protocols = parse_protocol_map(protocol_map)
        bound = parse_listeners(listeners, "listeners", protocols)
        advertised = (
            parse_listeners(advertised_listeners, "advertised.listeners", protocols)
            if advertised_listeners.strip()
            else list(bound)
        )
        names = {listener.name for listener in bound}
        for listener in advertised:
            if listener.name not in names:
                raise InvalidConfigError(
                    f"advertised.listeners: listener {listener.name} is not in listeners "
                    f"({', '.join(sorted(names))}); advertised listener names must be a "
                    "subset of the listener names"
                )
            if listener.host in ("0.0.0.0", "::"):
                raise InvalidConfigError(
                    f"advertised.listeners: {listener} is a wildcard address; advertise an "
                    "address clients can connect to"
                )
        if inter_broker_listener_name and security_inter_broker_protocol:
            raise InvalidConfigError(
                "Only one of inter.broker.listener.name and security.inter.broker.protocol "
                "should be set"
            )
        inter_broker = (inter_broker_listener_name or security_inter_broker_protocol).upper()
        if not inter_broker:
            # Kafka's default security.inter.broker.protocol is PLAINTEXT; a broker with no
            # PLAINTEXT listener (pystream's earlier behaviour) uses its first advertised one.
            inter_broker = "PLAINTEXT" if "PLAINTEXT" in names else advertised[0].name
        elif security_inter_broker_protocol and inter_broker not in SECURITY_PROTOCOLS:
            raise InvalidConfigError(
                f"security.inter.broker.protocol: {security_inter_broker_protocol!r} is not "
                f"one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        if all(listener.name != inter_broker for listener in advertised):
            key = (
                "inter.broker.listener.name"
                if inter_broker_listener_name
                else "security.inter.broker.protocol"
            )
            raise InvalidConfigError(
                f"{key}: listener {inter_broker} must be a listener name defined in "
                "advertised.listeners (or listeners)"
            )
        return cls(tuple(bound), tuple(advertised), inter_broker)

    @property
    def inter_broker(self) -> Listener:
        """The advertised listener other brokers connect to."""
        return next(a for a in self.advertised if a.name == self.inter_broker_listener_name)
