"""The REST proxy's settings: Confluent's key names where Confluent has one.

Read from ``pystream rest --config FILE`` (a ``.properties`` file).  Keys the
proxy itself uses are listed in :data:`REST_KEYS`; ``producer.<key>`` and
``consumer.<key>`` pass a setting to the proxy's producer or to every
consumer instance (``producer.linger.ms=10`` -> ``linger_ms=10``); the
remaining keys are Kafka client settings (``client.id``, ``security.protocol``
...), handed to every client as given by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["REST_KEYS", "RestConfig"]

# key -> (attribute, default, minimum)
REST_KEYS: dict[str, tuple[str, int, int]] = {
    # Idle consumer instances are closed after this long (Confluent's default: 5 minutes).
    "consumer.instance.timeout.ms": ("consumer_instance_timeout_ms", 300_000, 1),
    # How long GET .../records waits for records when the request gives no timeout.
    "consumer.request.timeout.ms": ("consumer_request_timeout_ms", 1_000, 0),
    # The most bytes (keys + values) one GET .../records returns without max_bytes.
    "consumer.request.max.bytes": ("consumer_request_max_bytes", 67_108_864, 1),
    # Request bodies larger than this are refused with 413.
    "max.request.body.bytes": ("max_request_body_bytes", 16 * 1024 * 1024, 1),
    # How long a topic's partition count is trusted before it is looked up again.
    "metadata.max.age.ms": ("metadata_max_age_ms", 30_000, 0),
}


@dataclass(slots=True)
class RestConfig:
    """Where the proxy connects and how it behaves; see :data:`REST_KEYS`."""

    bootstrap_servers: str
    consumer_instance_timeout_ms: int = 300_000
    consumer_request_timeout_ms: int = 1_000
    consumer_request_max_bytes: int = 67_108_864
    max_request_body_bytes: int = 16 * 1024 * 1024
    metadata_max_age_ms: int = 30_000
    # Keyword arguments for every client (connection and security settings).
    client_settings: dict[str, Any] = field(default_factory=dict)
    # Extra keyword arguments for the producer and for every consumer instance.
    producer_settings: dict[str, Any] = field(default_factory=dict)
    consumer_settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_properties(
        cls, bootstrap_servers: str, props: dict[str, str], client_settings: dict[str, Any]
    ) -> RestConfig:
        """The proxy's keys and ``producer.``/``consumer.`` keys from ``props``; a bad
        value raises ValueError naming the key."""
        config = cls(bootstrap_servers, client_settings=dict(client_settings))
        for key, value in props.items():
            if key in REST_KEYS:
                attribute, _, minimum = REST_KEYS[key]
                try:
                    number = int(value)
                except ValueError:
                    raise ValueError(f"{key} must be an integer, got {value!r}") from None
                if number < minimum:
                    raise ValueError(f"{key} must be >= {minimum}, got {number}")
                setattr(config, attribute, number)
            elif key.startswith(("producer.", "consumer.")):
                kind, _, name = key.partition(".")
                target = (
                    config.producer_settings if kind == "producer" else config.consumer_settings
                )
                target[name.replace(".", "_")] = _scalar(value)
        return config

    @staticmethod
    def is_rest_key(key: str) -> bool:
        """True for the keys :meth:`from_properties` takes (not client settings)."""
        return key in REST_KEYS or key.startswith(("producer.", "consumer."))


def _scalar(value: str) -> Any:
    if value.lstrip("-").isdigit():
        return int(value)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value
