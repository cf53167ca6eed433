"""The REST proxy's settings: Confluent's key names where Confluent has one.

Read from ``pystream rest --config FILE`` (a ``.properties`` file), laid out as
Confluent's ``kafka-rest.properties``: the proxy's own keys (:data:`REST_KEYS`), the
HTTP listener's TLS (:data:`SSL_KEYS`: ``ssl.keystore.location`` -- a PEM file with
the key and its certificate chain --, ``ssl.key.password``,
``ssl.truststore.location``, ``ssl.client.authentication``), ``client.<key>`` for the
Kafka connection of every client (``client.security.protocol``,
``client.sasl.jaas.config`` ...; ``client.id`` as is), and ``producer.<key>`` /
``consumer.<key>`` for the proxy's producer or every consumer instance
(``producer.linger.ms=10`` -> ``linger_ms=10``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["REST_KEYS", "SSL_KEYS", "RestConfig"]

# The HTTP listener's TLS: key -> attribute.
SSL_KEYS = {
    "ssl.keystore.location": "ssl_keystore_location",
    "ssl.key.password": "ssl_key_password",
    "ssl.truststore.location": "ssl_truststore_location",
    "ssl.client.authentication": "ssl_client_authentication",
}
CLIENT_AUTHENTICATION = ("NONE", "REQUESTED", "REQUIRED")
# HTTP authentication (Confluent's keys): NONE, or BASIC passed through to the broker as
# the SASL login of each request's user.
AUTH_KEYS = {
    "authentication.method": "authentication_method",
    "authentication.realm": "authentication_realm",
}
AUTHENTICATION_METHODS = ("NONE", "BASIC")

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
    # TLS on the HTTP listener (see SSL_KEYS); without a key store the proxy speaks http.
    ssl_keystore_location: str | None = None
    ssl_key_password: str | None = None
    ssl_truststore_location: str | None = None
    ssl_client_authentication: str = "NONE"
    authentication_method: str = "NONE"
    authentication_realm: str = "pystream"
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
            elif key in SSL_KEYS:
                setattr(config, SSL_KEYS[key], value)
            elif key in AUTH_KEYS:
                setattr(config, AUTH_KEYS[key], value)
            elif key.startswith(("producer.", "consumer.")):
                kind, _, name = key.partition(".")
                target = (
                    config.producer_settings if kind == "producer" else config.consumer_settings
                )
                target[name.replace(".", "_")] = _scalar(value)
        method = config.authentication_method = config.authentication_method.upper()
        if method not in AUTHENTICATION_METHODS:
            raise ValueError(
                f"authentication.method must be NONE or BASIC (passed through to the broker "
                f"as SASL credentials), got {method!r}"
            )
        auth = config.ssl_client_authentication = config.ssl_client_authentication.upper()
        if auth not in CLIENT_AUTHENTICATION:
            raise ValueError(
                f"ssl.client.authentication must be one of {', '.join(CLIENT_AUTHENTICATION)}, "
                f"got {auth!r}"
            )
        if auth != "NONE" and not config.ssl_truststore_location:
            raise ValueError(
                "ssl.client.authentication needs ssl.truststore.location (the CAs that "
                "sign client certificates)"
            )
        return config

    @staticmethod
    def client_properties(props: dict[str, str]) -> dict[str, str]:
        """The Kafka client properties among ``props``: ``client.<key>`` without the
        prefix, and ``client.id`` itself."""
        return {
            (key if key == "client.id" else key.removeprefix("client.")): value
            for key, value in props.items()
            if key.startswith("client.")
        }

    @staticmethod
    def unknown_keys(props: dict[str, str]) -> list[str]:
        """Keys that are none of the proxy's, the listener's or the clients'."""
        return sorted(
            key
            for key in props
            if key not in REST_KEYS
            and key not in SSL_KEYS
            and key not in AUTH_KEYS
            and key != "bootstrap.servers"
            and not key.startswith(("producer.", "consumer.", "client."))
        )

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_keystore_location else "http"


def _scalar(value: str) -> Any:
    if value.lstrip("-").isdigit():
        return int(value)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value
