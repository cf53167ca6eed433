"""The connector plugin API, in Python: what a connector, task, converter or transform
implements, and what the worker hands them.  Names and lifecycle follow Kafka
Connect's (``SourceConnector``/``SourceTask``, ``SinkConnector``/``SinkTask``,
``Converter``, ``Transformation``, ``Predicate``) so that Kafka's documentation reads
across.

Threads: every method of a connector or task is called from that connector's or
task's own worker thread, never from the worker's event loop, so a plugin may block
(a database query, an HTTP call, a file read).  ``SourceTask.poll`` should return
within about a second when there is nothing to read, so that pause and stop are
prompt; ``stop`` is called from another thread to interrupt it.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .data import Schema, SchemaAndValue

__all__ = [
    "NO_DEFAULT",
    "ConfigDef",
    "ConfigError",
    "ConfigKey",
    "ConfigType",
    "ConfigValue",
    "ConnectError",
    "ConnectRecord",
    "Connector",
    "ConnectorContext",
    "Converter",
    "ExactlyOnceSupport",
    "Header",
    "Importance",
    "OffsetStorageReader",
    "Predicate",
    "RetriableError",
    "SinkConnector",
    "SinkRecord",
    "SinkTask",
    "SinkTaskContext",
    "SourceConnector",
    "SourceRecord",
    "SourceTask",
    "SourceTaskContext",
    "Task",
    "TopicPartition",
    "Transformation",
    "TransactionContext",
]


# -- errors -------------------------------------------------------------------------


class ConnectError(Exception):
    """A connector, task, converter or transform failed; the task fails (or, with
    ``errors.tolerance=all``, the record is skipped and reported)."""


class RetriableError(ConnectError):
    """A failure worth retrying (a database briefly down): the worker retries the call
    until ``errors.retry.timeout`` runs out, backing off, before treating it as failed."""


class ConfigError(ConnectError):
    """A configuration is invalid; the message names the key and says what is expected."""


# -- records ------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(frozen=True)
class Header:
    """A record header: ``key`` and a value with an optional schema (bytes if schemaless
    and read from Kafka)."""

    key: str
    value: Any
    schema: Schema | None = None


@dataclass(frozen=True)
class ConnectRecord:
    """What flows through converters and transforms: a topic, an optional partition, a
    key and value each with an optional schema, a timestamp (ms) and headers.

    Records are immutable; a transform returns :meth:`new_record` with what it changed.
    """

    topic: str
    kafka_partition: int | None
    key_schema: Schema | None
    key: Any
    value_schema: Schema | None
    value: Any
    timestamp: int | None = None
    headers: tuple[Header, ...] = ()

    def new_record(self, **changes: Any) -> ConnectRecord:
        """A copy with the given fields changed (``topic=…``, ``value=…``, …)."""
        cls = type(self)
        names = _RECORD_FIELDS.get(cls)
        if names is None or hasattr(cls, "__post_init__"):
            if not hasattr(cls, "__post_init__"):
                _RECORD_FIELDS[cls] = frozenset(f.name for f in fields(cls))
            return replace(self, **changes)
        if not names.issuperset(changes):
            replace(self, **changes)  # raises TypeError naming the unknown field
        # dataclasses.replace re-runs __init__ (~3 us, and SMTs make a record each); with
        # no __post_init__, copying the attributes is the same record, ~10x sooner.
        record = object.__new__(cls)
        record.__dict__.update(self.__dict__)
        record.__dict__.update(changes)
        return record


_RECORD_FIELDS: dict[type, frozenset[str]] = {}


@dataclass(frozen=True)
class SourceRecord(ConnectRecord):
    """A record a source task read: ``source_partition`` names where it came from (a
    file, a table) and ``source_offset`` how far that source has been read; the worker
    stores the latest offset per source partition once the record is acknowledged, and
    gives it back through :class:`OffsetStorageReader` after a restart.  Both are dicts
    of JSON values."""

    source_partition: Mapping[str, Any] = field(default_factory=dict)
    source_offset: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SinkRecord(ConnectRecord):
    """A record a sink task receives: its partition and ``kafka_offset`` in the topic."""

    kafka_offset: int = -1
    timestamp_type: str = "CreateTime"


# -- configuration ------------------------------------------------------------------


class ConfigType(enum.Enum):
    STRING = "STRING"
    INT = "INT"
    LONG = "LONG"
    DOUBLE = "DOUBLE"
    BOOLEAN = "BOOLEAN"
    LIST = "LIST"
    CLASS = "CLASS"
    PASSWORD = "PASSWORD"


class Importance(enum.Enum):
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"


NO_DEFAULT: Any = object()
"""A :class:`ConfigKey` default meaning "required"."""


@dataclass(frozen=True)
class ConfigKey:
    """One setting a plugin accepts.  ``validator`` gets the parsed value and raises
    :class:`ConfigError` (or ``ValueError``) with a message if it is not acceptable."""

    name: str
    type: ConfigType
    default: Any = NO_DEFAULT
    importance: Importance = Importance.MEDIUM
    documentation: str = ""
    validator: Callable[[Any], None] | None = None
    group: str | None = None
    display_name: str | None = None

    @property
    def required(self) -> bool:
        return self.default is NO_DEFAULT


@dataclass
class ConfigValue:
    """One key's result of :meth:`ConfigDef.validate`, as Connect's validate endpoint
    reports it."""

    name: str
    value: Any
    errors: list[str] = field(default_factory=list)
    recommended_values: list[Any] = field(default_factory=list)
    visible: bool = True


_TRUE = {"true"}
_FALSE = {"false"}


class ConfigDef:
    """The settings a connector, converter or transform accepts, with types, defaults and
    checks.  Keys not defined here pass through :meth:`parse` untouched (as strings):
    plugins read extra keys their own way, as in Kafka."""

    def __init__(self, keys: Sequence[ConfigKey] = ()) -> None:
        self.keys: dict[str, ConfigKey] = {}
        for key in keys:
            self.define(key)

    def define(self, key: ConfigKey) -> ConfigDef:
        if key.name in self.keys:
            raise ValueError(f"config key {key.name!r} is defined twice")
        self.keys[key.name] = key
        return self

    def merge(self, other: ConfigDef) -> ConfigDef:
        """A new definition with this one's keys and then ``other``'s."""
        merged = ConfigDef(list(self.keys.values()))
        for key in other.keys.values():
            if key.name not in merged.keys:
                merged.define(key)
        return merged

    @staticmethod
    def convert(key: ConfigKey, raw: Any) -> Any:
        """``raw`` (a string from a properties file or JSON, or already typed) as ``key``'s
        type; raises :class:`ConfigError` naming the key if it cannot be."""
        if raw is None:
            return None
        kind = key.type
        try:
            if kind in (ConfigType.STRING, ConfigType.PASSWORD, ConfigType.CLASS):
                return raw if isinstance(raw, str) else str(raw)
            if kind in (ConfigType.INT, ConfigType.LONG):
                if isinstance(raw, bool):
                    raise ValueError
                value = int(raw.strip()) if isinstance(raw, str) else int(raw)
                if isinstance(raw, float) and raw != value:
                    raise ValueError
                limit = 2**31 if kind is ConfigType.INT else 2**63
                if not -limit <= value < limit:
                    raise ValueError
                return value
            if kind is ConfigType.DOUBLE:
                return float(raw.strip()) if isinstance(raw, str) else float(raw)
            if kind is ConfigType.BOOLEAN:
                if isinstance(raw, bool):
                    return raw
                text = str(raw).strip().lower()
                if text in _TRUE:
                    return True
                if text in _FALSE:
                    return False
                raise ValueError
            if kind is ConfigType.LIST:
                if isinstance(raw, list | tuple):
                    return [str(item).strip() for item in raw]
                text = str(raw).strip()
                return [part.strip() for part in text.split(",")] if text else []
        except (TypeError, ValueError):
            pass
        expected = {
            ConfigType.INT: "a 32-bit integer",
            ConfigType.LONG: "a 64-bit integer",
            ConfigType.DOUBLE: "a number",
            ConfigType.BOOLEAN: "true or false",
        }.get(kind, kind.value.lower())
        raise ConfigError(
            f"Invalid value {raw!r} for configuration {key.name}: expected {expected}"
        )

    def validate(self, props: Mapping[str, Any]) -> dict[str, ConfigValue]:
        """Every defined key's value and errors (all of them, not just the first)."""
        results: dict[str, ConfigValue] = {}
        for name, key in self.keys.items():
            result = ConfigValue(name, props.get(name))
            if name not in props or props[name] is None:
                if key.required:
                    result.errors.append(
                        f'Missing required configuration "{name}" which has no default value.'
                    )
                else:
                    result.value = key.default
            else:
                try:
                    result.value = self.convert(key, props[name])
                    if key.validator is not None:
                        key.validator(result.value)
                except (ConfigError, ValueError) as exc:
                    result.errors.append(str(exc))
            results[name] = result
        return results

    def parse(self, props: Mapping[str, Any]) -> dict[str, Any]:
        """``props`` typed, defaults filled in; raises :class:`ConfigError` listing every
        invalid or missing key."""
        results = self.validate(props)
        problems = [error for result in results.values() for error in result.errors]
        if problems:
            raise ConfigError("; ".join(problems))
        parsed: dict[str, Any] = dict(props)
        parsed.update((name, result.value) for name, result in results.items())
        return parsed


# -- connectors and tasks -----------------------------------------------------------


class ConnectorContext(abc.ABC):
    """What the worker offers a connector."""

    @abc.abstractmethod
    def request_task_reconfiguration(self) -> None:
        """Ask the worker to call ``task_configs`` again (the source's tables changed)."""

    @abc.abstractmethod
    def raise_error(self, error: Exception) -> None:
        """Fail the connector from a background thread of its own."""


class Connector(abc.ABC):
    """A connector: reads its configuration and splits the work into task configs.

    ``context`` is set by the worker before :meth:`start`.
    """

    context: ConnectorContext

    def initialize(self, context: ConnectorContext) -> None:
        self.context = context

    def version(self) -> str:
        """The plugin's version, shown by ``GET /connector-plugins``."""
        from ..version import __version__

        return __version__

    @abc.abstractmethod
    def start(self, props: dict[str, str]) -> None:
        """Start with the connector's configuration (strings, as given by the user)."""

    @abc.abstractmethod
    def task_class(self) -> type[Task]:
        """The task class this connector's tasks run."""

    @abc.abstractmethod
    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        """One config per task, at most ``max_tasks`` (``tasks.max``)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Release what :meth:`start` took."""

    def config(self) -> ConfigDef:
        """The settings this connector accepts (for validation and the validate endpoint)."""
        return ConfigDef()

    def validate(self, props: Mapping[str, Any]) -> dict[str, ConfigValue]:
        """Checks ``props`` against :meth:`config`; override to add cross-key checks."""
        return self.config().validate(props)


class ExactlyOnceSupport(enum.Enum):
    SUPPORTED = "SUPPORTED"
    UNSUPPORTED = "UNSUPPORTED"


class SourceConnector(Connector):
    """A connector reading from outside into topics."""

    def exactly_once_support(self, props: Mapping[str, str]) -> ExactlyOnceSupport | None:
        """Whether tasks can run with ``exactly.once.source.support=enabled`` (None:
        unknown, as Kafka's default)."""
        return None

    def alter_offsets(self, props: Mapping[str, str], offsets: Mapping[Any, Any]) -> bool:
        """Called before ``PATCH``/``DELETE /connectors/{c}/offsets``; return True if the
        connector accepts the change (Kafka's default refuses)."""
        return False


class SinkConnector(Connector):
    """A connector writing topics' records outside."""

    def alter_offsets(
        self, props: Mapping[str, str], offsets: Mapping[TopicPartition, int | None]
    ) -> bool:
        """Sinks keep offsets in their consumer group; altering them needs no connector
        help (Kafka's default for sinks)."""
        return True


class Task(abc.ABC):
    """A task: does the copying for its share of the connector's work."""

    def version(self) -> str:
        from ..version import __version__

        return __version__

    @abc.abstractmethod
    def start(self, props: dict[str, str]) -> None:
        """Start with this task's config (from the connector's ``task_configs``)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop: may be called from another thread while ``poll``/``put`` runs."""


class OffsetStorageReader(abc.ABC):
    """The latest committed source offsets, by source partition."""

    @abc.abstractmethod
    def offset(self, partition: Mapping[str, Any]) -> dict[str, Any] | None:
        """The committed offset of one source partition, or None if none."""

    def offsets(self, partitions: Sequence[Mapping[str, Any]]) -> dict[Any, dict[str, Any] | None]:
        """Several at once, keyed by the partition made hashable (a sorted items tuple)."""
        return {tuple(sorted(p.items())): self.offset(p) for p in partitions}


class TransactionContext(abc.ABC):
    """For connectors that define their own transaction boundaries
    (``transaction.boundary=connector``) under exactly-once source support."""

    @abc.abstractmethod
    def commit_transaction(self, record: SourceRecord | None = None) -> None:
        """Commit after ``record`` (or after the next batch the task returns)."""

    @abc.abstractmethod
    def abort_transaction(self, record: SourceRecord | None = None) -> None:
        """Abort the transaction holding ``record`` (or the next batch)."""


class SourceTaskContext(abc.ABC):
    configs: dict[str, str]

    @abc.abstractmethod
    def offset_storage_reader(self) -> OffsetStorageReader: ...

    def transaction_context(self) -> TransactionContext | None:
        """Set only under exactly-once support with ``transaction.boundary=connector``."""
        return None


class SourceTask(Task):
    """Reads records from outside; the worker sends them, then commits their offsets."""

    context: SourceTaskContext

    def initialize(self, context: SourceTaskContext) -> None:
        self.context = context

    @abc.abstractmethod
    def poll(self) -> list[SourceRecord] | None:
        """New records, or None/[] if there are none yet (return within ~1 s)."""

    def commit(self) -> None:
        """Offsets of everything polled so far were committed (a hint, as in Kafka)."""

    def commit_record(self, record: SourceRecord, metadata: Any | None) -> None:
        """``record`` was acknowledged by the broker (``metadata``: where it was written)
        or filtered out by a transform (``metadata`` None)."""


class SinkTaskContext(abc.ABC):
    configs: dict[str, str]

    @abc.abstractmethod
    def assignment(self) -> set[TopicPartition]: ...

    @abc.abstractmethod
    def offset(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Rewind (or skip) consumption to these offsets."""

    @abc.abstractmethod
    def timeout(self, timeout_ms: int) -> None:
        """After a :class:`RetriableError` from ``put``: redeliver after this many ms."""

    @abc.abstractmethod
    def pause(self, *partitions: TopicPartition) -> None: ...

    @abc.abstractmethod
    def resume(self, *partitions: TopicPartition) -> None: ...

    @abc.abstractmethod
    def request_commit(self) -> None:
        """Flush and commit offsets soon, not only at ``offset.flush.interval.ms``."""

    def errant_record_reporter(self) -> Callable[[SinkRecord, BaseException], None] | None:
        """Report a record the task could not write (to the dead letter queue under
        ``errors.tolerance=all``); None when error reporting is not configured."""
        return None


class SinkTask(Task):
    """Writes records from topics outside; the worker commits offsets after ``flush``."""

    context: SinkTaskContext

    def initialize(self, context: SinkTaskContext) -> None:
        self.context = context

    @abc.abstractmethod
    def put(self, records: list[SinkRecord]) -> None:
        """Write (or buffer) these records; raise :class:`RetriableError` to have them
        delivered again."""

    def flush(self, current_offsets: Mapping[TopicPartition, int]) -> None:
        """Make everything ``put`` so far durable; offsets are committed after this.
        ``current_offsets`` are the next offsets to consume, as in Kafka."""

    def pre_commit(
        self, current_offsets: Mapping[TopicPartition, int]
    ) -> Mapping[TopicPartition, int]:
        """The offsets safe to commit; the default flushes and returns them all."""
        self.flush(current_offsets)
        return current_offsets

    def open(self, partitions: set[TopicPartition]) -> None:
        """These partitions were assigned to the task."""

    def close(self, partitions: set[TopicPartition]) -> None:
        """These partitions were taken away: write what is buffered for them."""


# -- converters and transforms ------------------------------------------------------


class Converter(abc.ABC):
    """Between Connect data and the bytes in a record's key or value."""

    def configure(self, configs: Mapping[str, Any], is_key: bool) -> None:
        """``configs`` are the ``key.converter.*``/``value.converter.*`` settings with the
        prefix removed."""
        return None

    def config(self) -> ConfigDef:
        return ConfigDef()

    @abc.abstractmethod
    def from_connect_data(self, topic: str, schema: Schema | None, value: Any) -> bytes | None:
        """Serialize; raises :class:`ConnectError` if ``value`` does not fit ``schema``."""

    @abc.abstractmethod
    def to_connect_data(self, topic: str, data: bytes | None) -> SchemaAndValue:
        """Deserialize; raises :class:`ConnectError` on malformed bytes."""


class Transformation(abc.ABC):
    """A single message transform: record in, record (or None to drop it) out.

    Configured with its ``transforms.<alias>.*`` settings with the prefix removed.
    """

    def configure(self, configs: Mapping[str, Any]) -> None:
        """Read the settings (raise :class:`ConfigError` naming a bad key)."""
        return None

    def config(self) -> ConfigDef:
        return ConfigDef()

    @abc.abstractmethod
    def apply(self, record: ConnectRecord) -> ConnectRecord | None: ...

    def close(self) -> None:
        """Release what :meth:`configure` took."""
        return None


class Predicate(abc.ABC):
    """A condition on a record, used to apply a transform only to some records
    (``transforms.<alias>.predicate`` and ``.negate``)."""

    def configure(self, configs: Mapping[str, Any]) -> None:
        return None

    def config(self) -> ConfigDef:
        return ConfigDef()

    @abc.abstractmethod
    def test(self, record: ConnectRecord) -> bool: ...

    def close(self) -> None:
        return None
