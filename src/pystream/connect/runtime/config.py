"""Worker and connector settings, with Kafka Connect's names and defaults."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...client.config import settings_from_properties
from ...errors import InvalidConfigError
from ..api import NO_DEFAULT, ConfigDef, ConfigError, ConfigKey, ConfigType, Importance

__all__ = [
    "CONNECTOR_CONFIG_DEF",
    "SINK_CONFIG_DEF",
    "SOURCE_CONFIG_DEF",
    "WorkerConfig",
    "client_settings",
    "prefixed",
]

log = logging.getLogger("pystream.connect")

DEFAULT_LISTENER = "http://127.0.0.1:8083"

# Producer/consumer settings beyond the connection's (``acks``, ``linger.ms``…) pass to
# pystream's client under snake_case names; these are numbers by their suffix.
_INT_SUFFIXES = (".ms", ".bytes", ".records", ".size", ".memory", ".connection")
_RENAMED = {"compression.type": "compression"}
# Settings Java's clients need and pystream's client does without (serializers are the
# converters' job).
_IGNORED_CLIENT_KEYS = {
    "key.serializer",
    "value.serializer",
    "key.deserializer",
    "value.deserializer",
    "interceptor.classes",
    "metric.reporters",
}


def prefixed(props: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The settings under ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in props.items() if k.startswith(prefix)}


def _other_client_setting(key: str, raw: str) -> tuple[str, Any]:
    name = _RENAMED.get(key, key).replace(".", "_").replace("-", "_")
    value: Any = raw
    if isinstance(raw, str):
        text = raw.strip()
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        elif key.endswith(_INT_SUFFIXES) or text.lstrip("-").isdigit():
            try:
                value = int(text)
            except ValueError:
                raise ConfigError(f"{key} must be an integer, got {raw!r}") from None
    return name, value


def client_settings(props: Mapping[str, str], where: str = "worker config") -> dict[str, Any]:
    """Kafka client properties as pystream client keyword arguments: the connection and
    security settings as the command line tools read them (``security.protocol``,
    ``ssl.truststore.location``, ``sasl.jaas.config``…), the rest with dots as
    underscores and numbers and booleans converted (``linger.ms`` -> ``linger_ms``)."""
    wanted = {k: v for k, v in props.items() if k not in _IGNORED_CLIENT_KEYS}
    try:
        return settings_from_properties(wanted, where, _other_client_setting)
    except (ValueError, InvalidConfigError) as exc:
        raise ConfigError(str(exc)) from None


def _at_least(name: str, low: int) -> Any:
    def check(value: Any) -> None:
        if value is not None and value < low:
            raise ConfigError(
                f"Invalid value {value} for configuration {name}: must be at least {low}"
            )

    return check


def _one_of(name: str, *choices: str) -> Any:
    def check(value: Any) -> None:
        if value is not None and str(value).lower() not in choices:
            raise ConfigError(
                f"Invalid value {value!r} for configuration {name}: must be one of "
                + ", ".join(choices)
            )

    return check


_COMMON = "Common"
_ERRORS = "Error Handling"


def _key(
    name: str,
    kind: ConfigType,
    default: Any,
    doc: str,
    group: str = _COMMON,
    importance: Importance = Importance.MEDIUM,
    validator: Any = None,
) -> ConfigKey:
    return ConfigKey(name, kind, default, importance, doc, validator, group, name)


CONNECTOR_CONFIG_DEF = ConfigDef(
    [
        _key(
            "name",
            ConfigType.STRING,
            NO_DEFAULT,
            "Globally unique name of the connector.",
            importance=Importance.HIGH,
        ),
        _key(
            "connector.class",
            ConfigType.STRING,
            NO_DEFAULT,
            "The connector's class: a short name (FileStreamSource), a dotted path or "
            "Kafka's Java class name.",
            importance=Importance.HIGH,
        ),
        _key(
            "tasks.max",
            ConfigType.INT,
            1,
            "The most tasks to run for this connector.",
            importance=Importance.HIGH,
            validator=_at_least("tasks.max", 1),
        ),
        _key(
            "key.converter",
            ConfigType.CLASS,
            None,
            "Converter of record keys (overrides the worker's).",
        ),
        _key(
            "value.converter",
            ConfigType.CLASS,
            None,
            "Converter of record values (overrides the worker's).",
        ),
        _key(
            "header.converter",
            ConfigType.CLASS,
            None,
            "Converter of header values (overrides the worker's).",
        ),
        _key("transforms", ConfigType.LIST, [], "Aliases of the transformations to apply."),
        _key("predicates", ConfigType.LIST, [], "Aliases of the predicates transforms use."),
        _key(
            "errors.retry.timeout",
            ConfigType.LONG,
            0,
            "How long (ms) a failed operation is retried; -1: forever, 0: no retries.",
            _ERRORS,
        ),
        _key(
            "errors.retry.delay.max.ms",
            ConfigType.LONG,
            60_000,
            "The longest wait (ms) between retries.",
            _ERRORS,
            validator=_at_least("errors.retry.delay.max.ms", 0),
        ),
        _key(
            "errors.tolerance",
            ConfigType.STRING,
            "none",
            "none: an error fails the task; all: the record is skipped (and reported).",
            _ERRORS,
            validator=_one_of("errors.tolerance", "none", "all"),
        ),
        _key(
            "errors.log.enable",
            ConfigType.BOOLEAN,
            False,
            "Log each error and the record that caused it.",
            _ERRORS,
        ),
        _key(
            "errors.log.include.messages",
            ConfigType.BOOLEAN,
            False,
            "Include the record's content in the error log.",
            _ERRORS,
        ),
    ]
)

SOURCE_CONFIG_DEF = CONNECTOR_CONFIG_DEF.merge(
    ConfigDef(
        [
            _key(
                "exactly.once.support",
                ConfigType.STRING,
                "requested",
                "required: refuse to run if the connector cannot give exactly-once "
                "delivery; requested: run anyway.",
                validator=_one_of("exactly.once.support", "requested", "required"),
            ),
            _key(
                "transaction.boundary",
                ConfigType.STRING,
                "poll",
                "With exactly-once support: poll (one transaction per batch), interval "
                "(every transaction.boundary.interval.ms) or connector (the task says).",
                validator=_one_of("transaction.boundary", "poll", "interval", "connector"),
            ),
            _key(
                "transaction.boundary.interval.ms",
                ConfigType.LONG,
                None,
                "With transaction.boundary=interval: how often to commit (ms; default "
                "the worker's offset.flush.interval.ms).",
            ),
        ]
    )
)

_DLQ = "errors.deadletterqueue."

SINK_CONFIG_DEF = CONNECTOR_CONFIG_DEF.merge(
    ConfigDef(
        [
            _key("topics", ConfigType.LIST, [], "The topics to consume."),
            _key(
                "topics.regex",
                ConfigType.STRING,
                "",
                "A regular expression of the topics to consume.",
            ),
            _key(
                _DLQ + "topic.name",
                ConfigType.STRING,
                "",
                "The dead letter queue topic for records the sink could not process (empty: none).",
                _ERRORS,
            ),
            _key(
                _DLQ + "topic.replication.factor",
                ConfigType.INT,
                3,
                "Replication factor of the dead letter queue topic, if it is created.",
                _ERRORS,
                validator=_at_least(_DLQ + "topic.replication.factor", 1),
            ),
            _key(
                _DLQ + "context.headers.enable",
                ConfigType.BOOLEAN,
                False,
                "Add __connect.errors.* headers saying what failed and why.",
                _ERRORS,
            ),
        ]
    )
)


def check_sink_topics(props: Mapping[str, Any]) -> None:
    """Kafka's rule: a sink names its topics with exactly one of ``topics`` and
    ``topics.regex``, and its dead letter queue is not one of them."""
    topics = [
        t for t in ConfigDef.convert(SINK_CONFIG_DEF.keys["topics"], props.get("topics", "")) if t
    ]
    regex = str(props.get("topics.regex") or "").strip()
    if topics and regex:
        raise ConfigError("topics and topics.regex are mutually exclusive: set one of them")
    if not topics and not regex:
        raise ConfigError("a sink connector needs topics or topics.regex")
    dlq = str(props.get(_DLQ + "topic.name") or "").strip()
    if dlq and dlq in topics:
        raise ConfigError(
            f"the dead letter queue topic {dlq!r} may not be one of the connector's topics"
        )


@dataclass
class WorkerConfig:
    """A worker's settings (Kafka's ``connect-standalone.properties`` and co.)."""

    props: dict[str, str]

    def __post_init__(self) -> None:
        if "plugin.path" in self.props:
            log.info(
                "plugin.path is ignored: pystream finds connectors through the "
                "pystream.connectors entry points and dotted paths"
            )
        for key in ("offset.flush.interval.ms", "offset.flush.timeout.ms"):
            if key in self.props:
                self._int(key, 0)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.props.get(key, default)

    def _int(self, key: str, default: int) -> int:
        raw = self.props.get(key)
        if raw is None or str(raw).strip() == "":
            return default
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{key} must be an integer, got {raw!r}") from None

    @property
    def bootstrap_servers(self) -> str:
        return self.props.get("bootstrap.servers", "localhost:9092")

    @property
    def group_id(self) -> str | None:
        return self.props.get("group.id")

    @property
    def offset_flush_interval_ms(self) -> int:
        return self._int("offset.flush.interval.ms", 60_000)

    @property
    def offset_flush_timeout_ms(self) -> int:
        return self._int("offset.flush.timeout.ms", 5_000)

    @property
    def offset_storage_file(self) -> str | None:
        return self.props.get("offset.storage.file.filename")

    @property
    def listeners(self) -> list[str]:
        raw = self.props.get("listeners") or DEFAULT_LISTENER
        return [item.strip() for item in raw.split(",") if item.strip()]

    @property
    def exactly_once_source(self) -> bool:
        value = self.props.get("exactly.once.source.support", "disabled").strip().lower()
        if value not in ("disabled", "enabled", "preparing"):
            raise ConfigError(
                f"exactly.once.source.support must be disabled, preparing or enabled, got {value!r}"
            )
        return value == "enabled"

    def converter_props(self, which: str) -> tuple[str, dict[str, str]]:
        """(class name, settings) of ``key``/``value``/``header`` converter."""
        defaults = {
            "key": "org.apache.kafka.connect.json.JsonConverter",
            "value": "org.apache.kafka.connect.json.JsonConverter",
            "header": "org.apache.kafka.connect.storage.SimpleHeaderConverter",
        }
        name = self.props.get(f"{which}.converter", defaults[which])
        return name, prefixed(self.props, f"{which}.converter.")

    def _client_base(self) -> dict[str, str]:
        """Worker-level Kafka client settings (security, timeouts, client.id) every
        client shares, as Kafka's worker passes its top-level client settings on."""
        shared = (
            "security.protocol",
            "ssl.",
            "sasl.",
            "request.timeout.ms",
            "retry.backoff.ms",
            "reconnect.backoff.",
            "metadata.max.age.ms",
            "client.id",
        )
        return {k: v for k, v in self.props.items() if k.startswith(shared)}

    def producer_settings(self, overrides: Mapping[str, str] = {}) -> dict[str, Any]:
        """The producer's keyword arguments: the worker's client settings, then
        ``producer.*``, then the connector's ``producer.override.*``."""
        props = {**self._client_base(), **prefixed(self.props, "producer."), **overrides}
        return client_settings(props)

    def consumer_settings(self, overrides: Mapping[str, str] = {}) -> dict[str, Any]:
        """The consumer's keyword arguments, as :meth:`producer_settings`."""
        props = {**self._client_base(), **prefixed(self.props, "consumer."), **overrides}
        return client_settings(props)

    def admin_settings(self) -> dict[str, Any]:
        props = {**self._client_base(), **prefixed(self.props, "admin.")}
        return client_settings(props)
