"""Typed configuration with Kafka's key names.

One definition mechanism for every config in pystream: a :class:`ConfigDef`
(name, type, default, validator, doc, whether pystream honours it) in a table
keyed by Kafka's name; ``scripts/gen_config_docs.py`` writes
``docs/configuration.md`` from the tables.
Values arrive as strings (``server.properties``, CreateTopics, AlterConfigs)
or already typed; :func:`parse_value` turns them into Python values and the
validator checks them, raising :class:`~pystream.errors.InvalidConfigError`
that names the key and what is allowed.

Topic-level configs live in :data:`TOPIC_CONFIGS` and are read into a frozen
:class:`LogConfig`.  Each topic config also names the broker-level keys that
supply its default (``segment.bytes`` <- ``log.segment.bytes``, ``retention.ms``
<- ``log.retention.ms`` / ``log.retention.minutes`` / ``log.retention.hours``),
as Kafka's ``ServerTopicConfigSynonyms`` does.  Broker-level configs
(``listeners``, ``log.dirs``, ``broker.id`` ...) are the second table,
:data:`BROKER_CONFIGS`, read into a frozen :class:`BrokerConfig`.  The keys Kafka lets
AlterConfigs change on a running broker are :data:`DYNAMIC_BROKER_CONFIGS`; a
:class:`BrokerConfig` carries those layers (per broker, cluster-wide) above its
static properties (:meth:`BrokerConfig.with_dynamic`).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pystream.errors import InvalidConfigError

_log = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1  # Java's Integer.MAX_VALUE: Kafka's "no limit" for int configs
INT64_MIN = -(2**63)
DOUBLE_MAX = 1.7976931348623157e308  # Java's Double.MAX_VALUE: "no limit" for rates


class ConfigType(enum.Enum):
    """Kafka's ``ConfigDef.Type`` subset we use (PASSWORD etc. come with broker configs)."""

    BOOLEAN = "boolean"
    STRING = "string"
    INT = "int"
    LONG = "long"
    DOUBLE = "double"
    LIST = "list"


class ConfigSource(enum.IntEnum):
    """Where a value came from; numbers are DescribeConfigs' ``config_source`` field."""

    UNKNOWN = 0
    TOPIC_CONFIG = 1  # a per-topic override
    DYNAMIC_BROKER_CONFIG = 2
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3
    STATIC_BROKER_CONFIG = 4  # server.properties
    DEFAULT_CONFIG = 5  # Kafka's built-in default


# --- validators -------------------------------------------------------------------------------
# A validator is called with (name, parsed value) and raises InvalidConfigError; its str() says
# what is allowed, for messages and docs.


class Validator:
    """Base of value validators: ``__call__`` raises, ``__str__`` describes what is allowed."""

    def __call__(self, name: str, value: Any) -> None:
        raise NotImplementedError

    def _fail(self, name: str, value: Any) -> InvalidConfigError:
        return InvalidConfigError(
            f"Invalid value {format_value(value)!r} for configuration {name}: value must be {self}"
        )


@dataclass(frozen=True)
class AtLeast(Validator):
    """Numbers >= ``minimum``."""

    minimum: int | float

    def __call__(self, name: str, value: Any) -> None:
        if value < self.minimum:
            raise self._fail(name, value)

    def __str__(self) -> str:
        return f"at least {self.minimum}"


@dataclass(frozen=True)
class Between(Validator):
    """Numbers in ``[lower, upper]``."""

    lower: int | float
    upper: int | float

    def __call__(self, name: str, value: Any) -> None:
        if not self.lower <= value <= self.upper:  # also rejects NaN
            raise self._fail(name, value)

    def __str__(self) -> str:
        return f"between {self.lower} and {self.upper} inclusive"


@dataclass(frozen=True)
class OneOf(Validator):
    """A string from a fixed set (case-sensitive, like Kafka's ``ValidString``)."""

    allowed: tuple[str, ...]

    def __call__(self, name: str, value: Any) -> None:
        if value not in self.allowed:
            raise self._fail(name, value)

    def __str__(self) -> str:
        return "one of " + ", ".join(self.allowed)


@dataclass(frozen=True)
class ListOf(Validator):
    """A non-empty list of distinct strings from a fixed set (Kafka's ``ValidList``)."""

    allowed: tuple[str, ...]

    def __call__(self, name: str, value: Any) -> None:
        if not value or any(v not in self.allowed for v in value) or len(set(value)) != len(value):
            raise self._fail(name, value)

    def __str__(self) -> str:
        return "a comma-separated non-empty list of distinct values from " + ", ".join(self.allowed)


@dataclass(frozen=True)
class BetweenOr(Validator):
    """Numbers in ``[lower, upper]``, or the one ``other`` value (gzip's level: -1 or 1..9)."""

    lower: int
    upper: int
    other: int

    def __call__(self, name: str, value: Any) -> None:
        if value != self.other and not self.lower <= value <= self.upper:
            raise self._fail(name, value)

    def __str__(self) -> str:
        return f"between {self.lower} and {self.upper} inclusive, or {self.other}"


@dataclass(frozen=True)
class Matches(Validator):
    """A string (or every item of a list) matching ``pattern`` in full."""

    pattern: str
    description: str

    def __call__(self, name: str, value: Any) -> None:
        items = value if isinstance(value, tuple) else (value,)
        if not all(re.fullmatch(self.pattern, item) for item in items):
            raise self._fail(name, value)


class ThrottledReplicas(Matches):
    """Kafka's ``ThrottledReplicaListValidator``: ``*`` alone, or ``partition:broker`` pairs."""

    def __init__(self) -> None:
        super().__init__(
            r"[0-9]+:[0-9]+",
            "the literal '*' or a list of replicas in the format [partitionId]:[brokerId],...",
        )

    def __call__(self, name: str, value: Any) -> None:
        if value != ("*",):
            super().__call__(name, value)

    def __str__(self) -> str:
        return self.description


def parse_connection_overrides(value: str) -> dict[str, int]:
    """``max.connections.per.ip.overrides``: ``host:count,host:count`` -> {host: count}.

    Raises InvalidConfigError saying which entry is wrong."""
    out: dict[str, int] = {}
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        host, sep, count = entry.rpartition(":")
        if not sep or not host or not _INT_RE.fullmatch(count.strip()) or int(count) < 0:
            raise InvalidConfigError(
                f"Invalid value {value!r} for configuration max.connections.per.ip.overrides: "
                f"{entry!r} is not host:count with a count of at least 0 "
                "(e.g. 127.0.0.1:100,broker.example.com:0)"
            )
        out[host.strip().strip("[]")] = int(count)
    return out


class ConnectionOverrides(Validator):
    """``host:count`` pairs, comma-separated (Kafka's ``max.connections.per.ip.overrides``)."""

    def __call__(self, name: str, value: Any) -> None:
        parse_connection_overrides(value)

    def __str__(self) -> str:
        return "a comma-separated list of host:count (count at least 0)"


# --- definitions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Synonym:
    """A broker-level key that supplies a topic config's default, scaled to the topic's unit."""

    name: str
    scale: int = 1  # e.g. 3_600_000 for log.retention.hours -> retention.ms


@dataclass(frozen=True)
class ConfigDef:
    """One configuration key: Kafka's name, type, default, validator and documentation."""

    name: str
    type: ConfigType
    default: Any
    validator: Validator | None = None
    doc: str = ""
    synonyms: tuple[Synonym, ...] = ()  # broker-level keys, highest priority first
    # False: parsed and validated (so Kafka's server.properties and tools work unchanged)
    # but the value changes nothing in pystream.  docs/configuration.md says which.
    honoured: bool = True

    @property
    def attribute(self) -> str:
        """The pythonic attribute name: ``segment.bytes`` -> ``segment_bytes``."""
        return self.name.replace(".", "_")

    def parse(self, value: Any) -> Any:
        """Parse and validate one value (a string or an already-typed value)."""
        parsed = parse_value(self.name, self.type, value)
        if self.validator is not None:
            self.validator(self.name, parsed)
        return parsed


_INT_RE = re.compile(r"[+-]?[0-9]+")


def parse_value(name: str, type_: ConfigType, value: Any) -> Any:
    """Turn a string (or a typed value) into the Python value for ``type_``.

    Follows Kafka's ``ConfigDef.parseType``: strings are trimmed, booleans are
    ``true``/``false`` in any case, lists are comma-separated.  Raises
    InvalidConfigError naming the key and the expected type.
    """

    def bad(expected: str) -> InvalidConfigError:
        return InvalidConfigError(
            f"Invalid value {value!r} for configuration {name}: expected {expected}"
        )

    if value is None:
        raise bad(f"a {type_.value}, not null")
    if type_ is ConfigType.BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise bad("true or false")
    if type_ in (ConfigType.INT, ConfigType.LONG):
        lo, hi = (INT32_MIN, INT32_MAX) if type_ is ConfigType.INT else (INT64_MIN, INT64_MAX)
        what = "a 32-bit integer" if type_ is ConfigType.INT else "a 64-bit integer"
        if isinstance(value, bool):
            raise bad(what)
        if isinstance(value, str):
            text = value.strip()
            if not _INT_RE.fullmatch(text):  # int() would also accept "1_000" and " 1 "
                raise bad(what)
            value = int(text)
        if not isinstance(value, int) or not lo <= value <= hi:
            raise bad(what)
        return value
    if type_ is ConfigType.DOUBLE:
        if isinstance(value, bool):
            raise bad("a number")
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise bad("a number") from None
        if math.isnan(number):
            raise bad("a number")
        return number
    if type_ is ConfigType.STRING:
        if not isinstance(value, str):
            raise bad("a string")
        return value.strip()
    if type_ is ConfigType.LIST:
        if isinstance(value, str):
            text = value.strip()
            return tuple(item.strip() for item in text.split(",")) if text else ()
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(v.strip() for v in value)
        raise bad("a comma-separated list")
    raise AssertionError(type_)


def format_value(value: Any) -> str:
    """Render a parsed value the way Kafka shows it (DescribeConfigs, properties files)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(value)
    return str(value)


def _table(*defs: ConfigDef) -> dict[str, ConfigDef]:
    return {d.name: d for d in defs}


DAY_MS = 24 * 60 * 60 * 1000
HOUR_MS = 60 * 60 * 1000
MINUTE_MS = 60 * 1000

CLEANUP_POLICIES = ("delete", "compact")
COMPRESSION_TYPES = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")
TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")
# compression.type -> Kafka codec id (-1: keep the producer's).
_COMPRESSION_CODECS = {
    "producer": -1,
    "uncompressed": 0,
    "gzip": 1,
    "snappy": 2,
    "lz4": 3,
    "zstd": 4,
}

#: Topic-level configs: Kafka's ``LogConfig`` names, types, defaults and validators.
TOPIC_CONFIGS: dict[str, ConfigDef] = _table(
    ConfigDef(
        "cleanup.policy",
        ConfigType.LIST,
        ("delete",),
        ListOf(CLEANUP_POLICIES),
        "delete: drop old segments by retention; compact: keep the latest record per key.",
        (Synonym("log.cleanup.policy"),),
    ),
    ConfigDef(
        "compression.gzip.level",
        ConfigType.INT,
        -1,
        BetweenOr(1, 9, -1),
        "gzip level when the log recompresses to compression.type=gzip (-1: zlib's default).",
        (Synonym("compression.gzip.level"),),
    ),
    ConfigDef(
        "compression.lz4.level",
        ConfigType.INT,
        9,
        Between(1, 17),
        "lz4 level when the log recompresses to compression.type=lz4 (9: the fast mode).",
        (Synonym("compression.lz4.level"),),
    ),
    ConfigDef(
        "compression.type",
        ConfigType.STRING,
        "producer",
        OneOf(COMPRESSION_TYPES),
        "Codec of stored batches; producer keeps what the producer sent, another codec "
        "recompresses batches sent in a different one.",
        (Synonym("compression.type"),),
    ),
    ConfigDef(
        "compression.zstd.level",
        ConfigType.INT,
        3,
        Between(-131072, 22),
        "zstd level when the log recompresses to compression.type=zstd.",
        (Synonym("compression.zstd.level"),),
    ),
    ConfigDef(
        "delete.retention.ms",
        ConfigType.LONG,
        DAY_MS,
        AtLeast(0),
        "How long tombstones are kept in a compacted log.",
        (Synonym("log.cleaner.delete.retention.ms"),),
    ),
    ConfigDef(
        "file.delete.delay.ms",
        ConfigType.LONG,
        MINUTE_MS,
        AtLeast(0),
        "Delay before a deleted segment's files are removed from disk.",
        (Synonym("log.segment.delete.delay.ms"),),
    ),
    ConfigDef(
        "flush.messages",
        ConfigType.LONG,
        INT64_MAX,
        AtLeast(1),
        "fsync after this many messages; the default leaves flushing to the OS.",
        (Synonym("log.flush.interval.messages"),),
    ),
    ConfigDef(
        "flush.ms",
        ConfigType.LONG,
        INT64_MAX,
        AtLeast(0),
        "fsync when the last flush is this old; the default leaves flushing to the OS.",
        (Synonym("log.flush.interval.ms"), Synonym("log.flush.scheduler.interval.ms")),
    ),
    ConfigDef(
        "index.interval.bytes",
        ConfigType.INT,
        4096,
        AtLeast(0),
        "Bytes of log between two offset-index entries.",
        (Synonym("log.index.interval.bytes"),),
    ),
    ConfigDef(
        "max.compaction.lag.ms",
        ConfigType.LONG,
        INT64_MAX,
        AtLeast(1),
        "Longest time a record stays ineligible for compaction.",
        (Synonym("log.cleaner.max.compaction.lag.ms"),),
    ),
    ConfigDef(
        "max.message.bytes",
        ConfigType.INT,
        1024 * 1024 + 12,
        AtLeast(0),
        "Largest record batch the log accepts.",
        (Synonym("message.max.bytes"),),
    ),
    ConfigDef(
        "message.timestamp.type",
        ConfigType.STRING,
        "CreateTime",
        OneOf(TIMESTAMP_TYPES),
        "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's clock.",
        (Synonym("log.message.timestamp.type"),),
    ),
    ConfigDef(
        "message.timestamp.before.max.ms",
        ConfigType.LONG,
        INT64_MAX,
        AtLeast(0),
        "How far a CreateTime timestamp may lie in the past of the broker's clock.",
        (Synonym("log.message.timestamp.before.max.ms"),),
    ),
    ConfigDef(
        "message.timestamp.after.max.ms",
        ConfigType.LONG,
        INT64_MAX,
        AtLeast(0),
        "How far a CreateTime timestamp may lie in the future of the broker's clock.",
        (Synonym("log.message.timestamp.after.max.ms"),),
    ),
    ConfigDef(
        "min.cleanable.dirty.ratio",
        ConfigType.DOUBLE,
        0.5,
        Between(0, 1),
        "Share of the log that must be uncompacted before the cleaner runs.",
        (Synonym("log.cleaner.min.cleanable.ratio"),),
    ),
    ConfigDef(
        "min.compaction.lag.ms",
        ConfigType.LONG,
        0,
        AtLeast(0),
        "Shortest time a record stays uncompacted.",
        (Synonym("log.cleaner.min.compaction.lag.ms"),),
    ),
    ConfigDef(
        "min.insync.replicas",
        ConfigType.INT,
        1,
        AtLeast(1),
        "Replicas that must have a batch before acks=all succeeds.",
        (Synonym("min.insync.replicas"),),
    ),
    ConfigDef(
        "preallocate",
        ConfigType.BOOLEAN,
        False,
        None,
        "Preallocate the file of a new segment.",
        (Synonym("log.preallocate"),),
        honoured=False,  # .log files grow as written (indexes are always preallocated)
    ),
    ConfigDef(
        "retention.bytes",
        ConfigType.LONG,
        -1,
        None,
        "Largest size of a partition's log before old segments are deleted; -1: no limit.",
        (Synonym("log.retention.bytes"),),
    ),
    ConfigDef(
        "retention.ms",
        ConfigType.LONG,
        7 * DAY_MS,
        AtLeast(-1),
        "How long a segment is kept after its newest record; -1: no limit.",
        (
            Synonym("log.retention.ms"),
            Synonym("log.retention.minutes", MINUTE_MS),
            Synonym("log.retention.hours", HOUR_MS),
        ),
    ),
    ConfigDef(
        "segment.bytes",
        ConfigType.INT,
        1024 * 1024 * 1024,
        AtLeast(14),
        "Size at which the active segment is rolled.",
        (Synonym("log.segment.bytes"),),
    ),
    ConfigDef(
        "segment.index.bytes",
        ConfigType.INT,
        10 * 1024 * 1024,
        AtLeast(4),
        "Largest size of a segment's offset index (and time index).",
        (Synonym("log.index.size.max.bytes"),),
    ),
    ConfigDef(
        "segment.jitter.ms",
        ConfigType.LONG,
        0,
        AtLeast(0),
        "Largest random amount subtracted from segment.ms, to spread rolls.",
        (Synonym("log.roll.jitter.ms"), Synonym("log.roll.jitter.hours", HOUR_MS)),
    ),
    ConfigDef(
        "segment.ms",
        ConfigType.LONG,
        7 * DAY_MS,
        AtLeast(1),
        "Age (by record timestamps) at which the active segment is rolled.",
        (Synonym("log.roll.ms"), Synonym("log.roll.hours", HOUR_MS)),
    ),
    ConfigDef(
        "unclean.leader.election.enable",
        ConfigType.BOOLEAN,
        False,
        None,
        "Allow a replica outside the ISR to become leader, at the cost of data loss.",
        (Synonym("unclean.leader.election.enable"),),
    ),
    # --- Kafka 3.9's other topic configs: listed (DescribeConfigs), validated, not honoured.
    ConfigDef(
        "follower.replication.throttled.replicas",
        ConfigType.LIST,
        (),
        ThrottledReplicas(),
        "Replicas whose follower-side replication is throttled (pystream has no throttles).",
        honoured=False,
    ),
    ConfigDef(
        "leader.replication.throttled.replicas",
        ConfigType.LIST,
        (),
        ThrottledReplicas(),
        "Replicas whose leader-side replication is throttled (pystream has no throttles).",
        honoured=False,
    ),
    ConfigDef(
        "local.retention.bytes",
        ConfigType.LONG,
        -2,
        AtLeast(-2),
        "Tiered storage: local size limit; -2: retention.bytes (pystream has no tiers).",
        (Synonym("log.local.retention.bytes"),),
        honoured=False,
    ),
    ConfigDef(
        "local.retention.ms",
        ConfigType.LONG,
        -2,
        AtLeast(-2),
        "Tiered storage: local time limit; -2: retention.ms (pystream has no tiers).",
        (Synonym("log.local.retention.ms"),),
        honoured=False,
    ),
    ConfigDef(
        "message.downconversion.enable",
        ConfigType.BOOLEAN,
        True,
        None,
        "Down-convert batches for old consumers (pystream serves v2 batches only).",
        (Synonym("log.message.downconversion.enable"),),
        honoured=False,
    ),
    ConfigDef(
        "message.format.version",
        ConfigType.STRING,
        "3.0-IV1",
        Matches(r"[0-9]+\.[0-9]+(\.[0-9]+)?(-IV[0-9]+)?", "a Kafka version such as 3.0-IV1"),
        "Deprecated record format version; pystream writes v2 batches whatever it says.",
        (Synonym("log.message.format.version"),),
        honoured=False,
    ),
    ConfigDef(
        "message.timestamp.difference.max.ms",
        ConfigType.LONG,
        INT64_MAX,
        AtLeast(0),
        "Deprecated (use message.timestamp.before/after.max.ms).",
        (Synonym("log.message.timestamp.difference.max.ms"),),
        honoured=False,
    ),
    ConfigDef(
        "remote.log.copy.disable",
        ConfigType.BOOLEAN,
        False,
        None,
        "Tiered storage: stop copying segments to remote storage (pystream has no tiers).",
        honoured=False,
    ),
    ConfigDef(
        "remote.log.delete.on.disable",
        ConfigType.BOOLEAN,
        False,
        None,
        "Tiered storage: delete remote segments when tiering is disabled.",
        honoured=False,
    ),
    ConfigDef(
        "remote.storage.enable",
        ConfigType.BOOLEAN,
        False,
        None,
        "Tiered storage for the topic (pystream has no tiers).",
        honoured=False,
    ),
)


def parse_properties(
    defs: Mapping[str, ConfigDef], props: Mapping[str, Any], kind: str
) -> dict[str, Any]:
    """Parse ``props`` against a table; unknown keys raise InvalidConfigError.

    ``kind`` names the table in messages ("topic", "broker").
    """
    values: dict[str, Any] = {}
    for key, raw in props.items():
        definition = defs.get(key)
        if definition is None:
            raise InvalidConfigError(
                f"Unknown {kind} config name: {key!r}; known names are " + ", ".join(sorted(defs))
            )
        values[key] = definition.parse(raw)
    return values


# --- LogConfig --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigEntry:
    """One row of DescribeConfigs: Kafka name, value as text, where it came from."""

    name: str
    value: str
    source: ConfigSource

    @property
    def is_default(self) -> bool:
        return self.source is ConfigSource.DEFAULT_CONFIG


@dataclass(frozen=True)
class LogConfig:
    """A partition log's configuration: Kafka's topic configs with pythonic names.

    Build one with :meth:`from_properties` (topic overrides on top of defaults)
    or :meth:`from_broker_properties` (the broker's defaults).  Instances are
    immutable; a config change makes a new one.
    """

    cleanup_policy: tuple[str, ...] = ("delete",)
    compression_gzip_level: int = -1
    compression_lz4_level: int = 9
    compression_type: str = "producer"
    compression_zstd_level: int = 3
    delete_retention_ms: int = DAY_MS
    file_delete_delay_ms: int = MINUTE_MS
    flush_messages: int = INT64_MAX
    flush_ms: int = INT64_MAX
    index_interval_bytes: int = 4096
    max_compaction_lag_ms: int = INT64_MAX
    max_message_bytes: int = 1024 * 1024 + 12
    message_timestamp_type: str = "CreateTime"
    message_timestamp_before_max_ms: int = INT64_MAX
    message_timestamp_after_max_ms: int = INT64_MAX
    min_cleanable_dirty_ratio: float = 0.5
    min_compaction_lag_ms: int = 0
    min_insync_replicas: int = 1
    preallocate: bool = False
    retention_bytes: int = -1
    retention_ms: int = 7 * DAY_MS
    segment_bytes: int = 1024 * 1024 * 1024
    segment_index_bytes: int = 10 * 1024 * 1024
    segment_jitter_ms: int = 0
    segment_ms: int = 7 * DAY_MS
    unclean_leader_election_enable: bool = False
    compression_gzip_level: int = -1
    compression_lz4_level: int = 9
    compression_zstd_level: int = 3
    follower_replication_throttled_replicas: tuple[str, ...] = ()
    leader_replication_throttled_replicas: tuple[str, ...] = ()
    local_retention_bytes: int = -2
    local_retention_ms: int = -2
    message_downconversion_enable: bool = True
    message_format_version: str = "3.0-IV1"
    message_timestamp_difference_max_ms: int = INT64_MAX
    remote_log_copy_disable: bool = False
    remote_log_delete_on_disable: bool = False
    remote_storage_enable: bool = False
    # Keys whose value did not come from Kafka's default, with their source (DescribeConfigs).
    sources: tuple[tuple[str, ConfigSource], ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_properties(
        cls, props: Mapping[str, Any], defaults: LogConfig | None = None
    ) -> LogConfig:
        """Topic overrides (Kafka key -> string or typed value) on top of ``defaults``.

        Raises InvalidConfigError naming the key and what is allowed, for an
        unknown key, an unparsable value, a value out of range, or
        inconsistent values (min.compaction.lag.ms > max.compaction.lag.ms).
        """
        base = defaults if defaults is not None else cls()
        values = parse_properties(TOPIC_CONFIGS, props, "topic")
        return base._with(values, ConfigSource.TOPIC_CONFIG)

    @classmethod
    def from_broker_properties(
        cls,
        broker_props: Mapping[str, Any],
        sources: Mapping[str, ConfigSource] | None = None,
    ) -> LogConfig:
        """The broker's topic defaults from its properties (``log.segment.bytes`` ...).

        Keys that are not a synonym of a topic config are ignored (they belong
        to the broker's own table).  Among synonyms the most precise unit wins:
        ``log.retention.ms`` over ``log.retention.minutes`` over ``log.retention.hours``
        (whatever layer each comes from, as Kafka merges the dynamic layers into its
        properties first).  ``sources`` gives a broker key's source when it is not
        STATIC_BROKER_CONFIG (a dynamic broker config).
        """
        values: dict[str, Any] = {}
        value_sources: dict[str, ConfigSource] = {}
        for definition in TOPIC_CONFIGS.values():
            for synonym in definition.synonyms:
                if synonym.name not in broker_props:
                    continue
                raw = parse_value(synonym.name, definition.type, broker_props[synonym.name])
                if synonym.scale != 1 and raw >= 0:  # -1 ("no limit") is not scaled
                    raw *= synonym.scale
                    if raw > INT64_MAX:
                        raise InvalidConfigError(
                            f"Invalid value for configuration {synonym.name}: "
                            f"{broker_props[synonym.name]} overflows {definition.name}"
                        )
                if definition.validator is not None:
                    definition.validator(synonym.name, raw)
                values[definition.name] = raw
                value_sources[definition.name] = (sources or {}).get(
                    synonym.name, ConfigSource.STATIC_BROKER_CONFIG
                )
                break
        return cls()._with(values, value_sources)

    def _with(
        self, values: Mapping[str, Any], source: ConfigSource | Mapping[str, ConfigSource]
    ) -> LogConfig:
        sources = dict(self.sources)
        if isinstance(source, ConfigSource):
            sources.update((key, source) for key in values)
        else:
            sources.update(source)
        config = dataclasses.replace(
            self,
            **{TOPIC_CONFIGS[key].attribute: value for key, value in values.items()},
            sources=tuple(sorted(sources.items())),
        )
        config._check_consistency()
        return config

    def _check_consistency(self) -> None:
        if self.min_compaction_lag_ms > self.max_compaction_lag_ms:
            raise InvalidConfigError(
                f"Conflicting topic configs: min.compaction.lag.ms ({self.min_compaction_lag_ms})"
                f" must not exceed max.compaction.lag.ms ({self.max_compaction_lag_ms})"
            )

    def get(self, name: str) -> Any:
        """The value of a config by its Kafka name."""
        definition = TOPIC_CONFIGS.get(name)
        if definition is None:
            raise InvalidConfigError(f"Unknown topic config name: {name!r}")
        return getattr(self, definition.attribute)

    def source(self, name: str) -> ConfigSource:
        """Where the value of ``name`` came from."""
        self.get(name)  # validates the name
        return dict(self.sources).get(name, ConfigSource.DEFAULT_CONFIG)

    def entries(self) -> list[ConfigEntry]:
        """Every topic config with its value as text and its source, sorted by name."""
        sources = dict(self.sources)
        return [
            ConfigEntry(
                name,
                format_value(getattr(self, d.attribute)),
                sources.get(name, ConfigSource.DEFAULT_CONFIG),
            )
            for name, d in sorted(TOPIC_CONFIGS.items())
        ]

    def non_default_entries(self) -> list[ConfigEntry]:
        """Entries whose value did not come from Kafka's built-in default."""
        return [e for e in self.entries() if not e.is_default]

    def overrides(self) -> dict[str, str]:
        """The per-topic overrides as Kafka properties (what the metadata store persists)."""
        return {e.name: e.value for e in self.entries() if e.source is ConfigSource.TOPIC_CONFIG}

    def to_properties(self) -> dict[str, str]:
        """Every topic config as Kafka key -> text."""
        return {e.name: e.value for e in self.entries()}

    # Derived views used by storage.
    @property
    def delete_enabled(self) -> bool:
        """Retention deletes old segments (cleanup.policy contains delete)."""
        return "delete" in self.cleanup_policy

    @property
    def compact_enabled(self) -> bool:
        """The cleaner compacts this log (cleanup.policy contains compact)."""
        return "compact" in self.cleanup_policy

    @property
    def max_segment_ms(self) -> int:
        """Age at which the active segment rolls: segment.ms, or max.compaction.lag.ms if
        shorter on a compacted log (the active segment is never cleaned), as Kafka."""
        if self.compact_enabled and self.max_compaction_lag_ms > 0:
            return min(self.max_compaction_lag_ms, self.segment_ms)
        return self.segment_ms

    @property
    def compression_codec(self) -> int:
        """Kafka codec id batches are stored with (0 none .. 4 zstd), -1 for ``producer``
        (kept as sent)."""
        return _COMPRESSION_CODECS[self.compression_type]

    @property
    def compression_level(self) -> int | None:
        """The level for :attr:`compression_codec` (None: the codec's default mode, as
        Kafka's defaults gzip -1 and lz4 9 mean)."""
        codec = self.compression_type
        if codec == "gzip" and self.compression_gzip_level != -1:
            return self.compression_gzip_level
        if codec == "lz4" and self.compression_lz4_level != 9:
            return self.compression_lz4_level
        if codec == "zstd":
            return self.compression_zstd_level
        return None

    @property
    def log_append_time(self) -> bool:
        """message.timestamp.type is LogAppendTime: the broker stamps batches."""
        return self.message_timestamp_type == "LogAppendTime"


# --- broker configs ---------------------------------------------------------------------------

BROKER_CONFIGS: dict[str, ConfigDef] = _table(
    ConfigDef("broker.id", ConfigType.INT, 0, AtLeast(0), doc="This broker's id in the cluster."),
    ConfigDef(
        "listeners",
        ConfigType.STRING,
        "PLAINTEXT://127.0.0.1:9092",
        doc="Comma-separated NAME://host:port the broker listens on (port 0: any free port).",
    ),
    ConfigDef(
        "advertised.listeners",
        ConfigType.STRING,
        "",
        doc="Addresses given to clients in metadata; empty: the listeners themselves.",
    ),
    ConfigDef(
        "listener.security.protocol.map",
        ConfigType.STRING,
        "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
        doc="Listener name to security protocol, NAME:PROTOCOL comma-separated "
        "(e.g. INTERNAL:SSL for a listener INTERNAL://...).",
    ),
    ConfigDef(
        "inter.broker.listener.name",
        ConfigType.STRING,
        "",
        doc="The listener other brokers connect to (replication, controller requests, "
        "transaction markers); exclusive with security.inter.broker.protocol.",
    ),
    ConfigDef(
        "security.inter.broker.protocol",
        ConfigType.STRING,
        "",
        OneOf(("", "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")),
        doc="Security protocol between brokers (the listener of that name); exclusive with "
        "inter.broker.listener.name.  Unset: PLAINTEXT, or the first advertised listener "
        "when there is no PLAINTEXT one.",
    ),
    ConfigDef(
        "ssl.keystore.type",
        ConfigType.STRING,
        "PEM",
        OneOf(("PEM",)),
        doc="Key store format of TLS listeners (PEM only).",
    ),
    ConfigDef(
        "ssl.keystore.location",
        ConfigType.STRING,
        "",
        doc="PEM file with the broker's private key and certificate chain.",
    ),
    ConfigDef(
        "ssl.keystore.password",
        ConfigType.STRING,
        "",
        doc="Accepted for Kafka compatibility; a PEM key store has no store password "
        "(the key's is ssl.key.password).",
        honoured=False,
    ),
    ConfigDef(
        "ssl.key.password",
        ConfigType.STRING,
        "",
        doc="Password of the (encrypted) private key.",
    ),
    ConfigDef(
        "ssl.keystore.key",
        ConfigType.STRING,
        "",
        doc="The private key in PEM, inline (instead of ssl.keystore.location).",
    ),
    ConfigDef(
        "ssl.keystore.certificate.chain",
        ConfigType.STRING,
        "",
        doc="The certificate chain in PEM, inline (with ssl.keystore.key).",
    ),
    ConfigDef(
        "ssl.truststore.type",
        ConfigType.STRING,
        "PEM",
        OneOf(("PEM",)),
        doc="Trust store format (PEM only).",
    ),
    ConfigDef(
        "ssl.truststore.location",
        ConfigType.STRING,
        "",
        doc="PEM file of the CA certificates trusted for client (and broker) certificates.",
    ),
    ConfigDef(
        "ssl.truststore.certificates",
        ConfigType.STRING,
        "",
        doc="Trusted CA certificates in PEM, inline (instead of ssl.truststore.location).",
    ),
    ConfigDef(
        "ssl.client.auth",
        ConfigType.STRING,
        "none",
        OneOf(("none", "requested", "required")),
        doc="Whether TLS listeners ask clients for a certificate (mTLS): the principal is "
        "then User:<certificate subject>.",
    ),
    ConfigDef(
        "ssl.principal.mapping.rules",
        ConfigType.STRING,
        "DEFAULT",
        doc="Rules mapping a client certificate's subject to the principal name, "
        "RULE:pattern/replacement/[LU] comma-separated, then DEFAULT (the whole subject).",
    ),
    ConfigDef(
        "ssl.enabled.protocols",
        ConfigType.LIST,
        ("TLSv1.2", "TLSv1.3"),
        ListOf(("TLSv1.2", "TLSv1.3")),
        doc="TLS versions TLS listeners accept.",
    ),
    ConfigDef(
        "ssl.cipher.suites",
        ConfigType.LIST,
        (),
        doc="Cipher suites allowed, by IANA name as Kafka (Java) spells them or by OpenSSL "
        "name; empty: OpenSSL's defaults. TLS 1.3 suites cannot be narrowed by Python's ssl: "
        "listing only TLS 1.3 suites turns TLS 1.2 off, as in Kafka.",
    ),
    ConfigDef(
        "log.dirs",
        ConfigType.LIST,
        ("./pystream-data",),
        doc="Directories of the partition logs (log.dir is accepted as a fallback).",
    ),
    ConfigDef(
        "num.partitions",
        ConfigType.INT,
        1,
        AtLeast(1),
        doc="Partitions of a topic created without a partition count (or auto-created).",
    ),
    ConfigDef(
        "default.replication.factor",
        ConfigType.INT,
        1,
        AtLeast(1),
        doc="Replication factor of a topic created without one (or auto-created).",
    ),
    ConfigDef(
        "authorizer.class.name",
        ConfigType.STRING,
        "",
        doc="The authorizer: pystream.security.AclAuthorizer (Kafka's "
        "kafka.security.authorizer.AclAuthorizer and kafka.security.auth.SimpleAclAuthorizer "
        "are aliases) checks every request against the ACLs; empty: no authorization.",
    ),
    ConfigDef(
        "super.users",
        ConfigType.STRING,
        "",
        doc="Principals the authorizer allows everything, separated by semicolons "
        "(User:admin;User:ops).",
    ),
    ConfigDef(
        "allow.everyone.if.no.acl.found",
        ConfigType.BOOLEAN,
        False,
        doc="With the authorizer on, allow a resource no ACL names to everyone (false: deny).",
    ),
    ConfigDef(
        "auto.create.topics.enable",
        ConfigType.BOOLEAN,
        True,
        doc="Create a topic when a client asks for metadata of one that does not exist.",
    ),
    ConfigDef(
        "delete.topic.enable",
        ConfigType.BOOLEAN,
        True,
        doc="Allow DeleteTopics; false rejects it.",
    ),
    ConfigDef(
        "rest.enable",
        ConfigType.BOOLEAN,
        False,
        doc="Serve the REST proxy (Confluent's REST API v2 and v3, as `pystream rest`) in "
        "the broker process on rest.host:rest.port, a client of the broker's first "
        "PLAINTEXT listener.",
    ),
    ConfigDef(
        "rest.host",
        ConfigType.STRING,
        "127.0.0.1",
        doc="The address the in-broker REST proxy listens on (with rest.enable).",
    ),
    ConfigDef(
        "rest.port",
        ConfigType.INT,
        8082,
        AtLeast(0),
        doc="The port of the in-broker REST proxy (with rest.enable); 0 picks a free one.",
    ),
    ConfigDef(
        "console.enable",
        ConfigType.BOOLEAN,
        False,
        doc="Serve the web console (as `pystream console`: overview, topics, messages, "
        "consumer groups, live charts) in the broker process on console.host:console.port, "
        "a client of the broker's first listener of console.config.file's security.protocol "
        "(PLAINTEXT without one).",
    ),
    ConfigDef(
        "console.host",
        ConfigType.STRING,
        "127.0.0.1",
        doc="The address the in-broker web console listens on (with console.enable).",
    ),
    ConfigDef(
        "console.port",
        ConfigType.INT,
        9021,
        AtLeast(0),
        doc="The port of the in-broker web console (with console.enable); 0 picks a free one "
        "(printed at start).",
    ),
    ConfigDef(
        "console.config.file",
        ConfigType.STRING,
        "",
        doc="The in-broker web console's Kafka client settings (with console.enable): a client "
        "properties file as `pystream console --command-config` reads (security.protocol, "
        "sasl.mechanism, sasl.jaas.config, ssl.* ...). The console connects to the broker's "
        "first listener of that security.protocol. Empty: PLAINTEXT, as User:ANONYMOUS.",
    ),
    ConfigDef(
        "rest.config.file",
        ConfigType.STRING,
        "",
        doc="The in-broker REST proxy's settings (with rest.enable): a properties file laid "
        "out as Confluent's kafka-rest.properties, as `pystream rest --config` reads "
        "(consumer.instance.timeout.ms, producer.*, ssl.keystore.location, client.* ...). "
        "Empty: the proxy's defaults.",
    ),
    ConfigDef(
        "metrics.enable",
        ConfigType.BOOLEAN,
        True,
        doc="Serve Prometheus metrics (GET /metrics, named as Kafka's JMX exporter renders "
        "its MBeans) and the health checks GET /healthz and GET /readyz on metrics.listener.",
    ),
    ConfigDef(
        "metrics.listener",
        ConfigType.STRING,
        "http://127.0.0.1:9644",
        doc="Where the metrics endpoint listens (with metrics.enable): http://HOST:PORT; "
        "port 0 picks a free one (printed at start).",
    ),
    ConfigDef(
        "socket.request.max.bytes",
        ConfigType.INT,
        104_857_600,
        AtLeast(1),
        doc="Largest request frame the broker reads; larger ones close the connection.",
    ),
    ConfigDef(
        "produce.pipeline.max.requests",
        ConfigType.INT,
        4,
        AtLeast(1),
        doc="pystream's own: Produce requests of one connection appended while earlier ones "
        "still wait for their acks=all replication (answers stay in request order; any other "
        "request waits for every earlier answer). 1 is Kafka's behaviour: one request of a "
        "connection in process at a time, so an acks=all producer gets one batch replicated "
        "per round trip to the followers. Deeper pipelines only let the followers fall "
        "further behind (a few batches hide the round trip).",
    ),
    ConfigDef(
        "sasl.enabled.mechanisms",
        ConfigType.LIST,
        ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"),
        ListOf(("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")),
        doc="SASL mechanisms offered on SASL_PLAINTEXT/SASL_SSL listeners. Kafka's default is "
        "GSSAPI, which pystream does not have: the default here is every mechanism it has. "
        "PLAIN sends the password itself, so offer it on SASL_SSL only where that matters. "
        "listener.name.{listener}.sasl.enabled.mechanisms sets it for one listener.",
    ),
    ConfigDef(
        "sasl.mechanism.inter.broker.protocol",
        ConfigType.STRING,
        "",
        doc="SASL mechanism brokers log in to each other's SASL_PLAINTEXT/SASL_SSL "
        "inter-broker listener with: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512. Kafka's default is "
        "GSSAPI, which pystream does not have: with a SASL inter-broker listener it must be "
        "set. The broker's own login comes from sasl.jaas.config.",
    ),
    ConfigDef(
        "sasl.jaas.config",
        ConfigType.STRING,
        "",
        doc="JAAS login of this broker on a SASL inter-broker listener, as Kafka's: "
        '\'org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" '
        'password="admin-secret";\' (or PlainLoginModule). '
        "listener.name.{listener}.{mechanism}.sasl.jaas.config (e.g. "
        "listener.name.internal.scram-sha-512.sasl.jaas.config), then "
        "listener.name.{listener}.sasl.jaas.config take precedence. PlainLoginModule's "
        "user_<name> options are ignored: logins are checked against the SCRAM credentials. "
        "A secret: DescribeConfigs hides it.",
    ),
    ConfigDef(
        "connections.max.reauth.ms",
        ConfigType.LONG,
        0,
        AtLeast(0),
        doc="KIP-368: a SASL session lasts at most this long (told to clients in "
        "SaslAuthenticate v1+); a connection that does not re-authenticate in time is "
        "closed at its next request. 0: sessions never expire.",
    ),
    ConfigDef(
        "connection.failed.authentication.delay.ms",
        ConfigType.INT,
        100,
        AtLeast(0),
        doc="Delay before answering a failed SASL login (the connection is then closed). It "
        "grows with each recent failure from the same address (up to 50 times this), which "
        "slows password guessing without holding up anyone else.",
    ),
    ConfigDef(
        "max.connections",
        ConfigType.INT,
        INT32_MAX,
        AtLeast(0),
        doc="The most connections the broker holds open at once, over all listeners; "
        "listener.name.{listener}.max.connections limits one listener. At the limit the "
        "listener stops accepting (new connections wait in the kernel's backlog) until one "
        "closes. The inter-broker listener is exempt from the broker-wide limit (its own "
        "listener limit still applies), so replication keeps working when clients fill it.",
    ),
    ConfigDef(
        "max.connections.per.ip",
        ConfigType.INT,
        INT32_MAX,
        AtLeast(0),
        doc="The most connections one IP address may hold open at once; a connection over "
        "it is closed as soon as it is accepted (and logged). 0 only together with "
        "max.connections.per.ip.overrides (only the listed hosts may connect).",
    ),
    ConfigDef(
        "max.connections.per.ip.overrides",
        ConfigType.STRING,
        "",
        ConnectionOverrides(),
        doc="Per-host exceptions to max.connections.per.ip: host:count,host:count (an IP "
        "address or a host name, resolved when the broker starts), e.g. 127.0.0.1:200,"
        "batch.example.com:0.",
    ),
    ConfigDef(
        "event.loop",
        ConfigType.STRING,
        "asyncio",
        OneOf(("asyncio", "uvloop")),
        doc="The broker process's event loop (pystream serve): asyncio's own, or uvloop "
        "(libuv, Linux and macOS; installed with pystream on Linux).",
    ),
    ConfigDef(
        "fetch.max.bytes",
        ConfigType.INT,
        57_671_680,
        AtLeast(1024),
        doc="Upper bound of one Fetch response, whatever the client asks for.",
    ),
    ConfigDef(
        "max.incremental.fetch.session.cache.slots",
        ConfigType.INT,
        1000,
        AtLeast(0),
        doc="Incremental fetch sessions (KIP-227) the broker keeps at most; 0 disables "
        "sessions (every fetch is then a full one).",
    ),
    ConfigDef(
        "min.incremental.fetch.session.eviction.ms",
        ConfigType.INT,
        120_000,
        AtLeast(0),
        doc="How long a fetch session is safe from eviction by a new session, once "
        "created; a session unused for this long is evicted first.",
    ),
    ConfigDef(
        "log.retention.check.interval.ms",
        ConfigType.LONG,
        300_000,
        AtLeast(1),
        doc="How often retention looks for segments to delete.",
    ),
    ConfigDef(
        "log.flush.scheduler.interval.ms",
        ConfigType.LONG,
        INT64_MAX,
        AtLeast(1),
        doc="How often the flusher checks logs against flush.ms.",
    ),
    ConfigDef(
        "log.flush.offset.checkpoint.interval.ms",
        ConfigType.INT,
        60_000,
        AtLeast(0),
        doc=(
            "How often the recovery-point checkpoint file is written. Rolled segments are "
            "fsynced in the background as they close, so after a crash recovery rescans only "
            "what was written since about this long ago."
        ),
    ),
    ConfigDef(
        "log.flush.start.offset.checkpoint.interval.ms",
        ConfigType.INT,
        60_000,
        AtLeast(0),
        doc="How often the log-start-offset checkpoint file is written.",
    ),
    ConfigDef(
        "replica.high.watermark.checkpoint.interval.ms",
        ConfigType.LONG,
        5_000,
        AtLeast(1),
        doc="How often the high-watermark checkpoint file is written.",
    ),
    ConfigDef(
        "log.cleaner.enable",
        ConfigType.BOOLEAN,
        True,
        doc="Run the log cleaner that compacts topics with cleanup.policy=compact.",
    ),
    ConfigDef(
        "log.cleaner.threads",
        ConfigType.INT,
        1,
        AtLeast(0),
        doc="Threads of the log cleaner.",
    ),
    ConfigDef(
        "log.cleaner.backoff.ms",
        ConfigType.LONG,
        15_000,
        AtLeast(0),
        doc="How long the cleaner sleeps when no log needs cleaning.",
    ),
    ConfigDef(
        "log.cleaner.dedupe.buffer.size",
        ConfigType.LONG,
        134_217_728,
        AtLeast(1024),
        doc="Memory of the cleaner's key-to-offset maps, shared by its threads.",
    ),
    ConfigDef(
        "log.cleaner.io.buffer.size",
        ConfigType.INT,
        524_288,
        AtLeast(0),
        doc="Read and write buffer memory of the cleaner, shared by its threads.",
    ),
    ConfigDef(
        "log.cleaner.io.buffer.load.factor",
        ConfigType.DOUBLE,
        0.9,
        Between(0.01, 1),
        doc="How full the cleaner's offset map may get before a cleaning pass stops.",
    ),
    ConfigDef(
        "log.cleaner.io.max.bytes.per.second",
        ConfigType.DOUBLE,
        DOUBLE_MAX,
        AtLeast(1),
        doc="Throttle of the cleaner's reads and writes.",
    ),
    ConfigDef(
        "zookeeper.connect",
        ConfigType.STRING,
        "",
        doc="host:port[/chroot] of ZooKeeper; set, the broker runs in cluster mode.",
    ),
    ConfigDef(
        "zookeeper.session.timeout.ms",
        ConfigType.INT,
        18_000,
        AtLeast(1),
        doc="ZooKeeper session timeout (cluster mode).",
    ),
    ConfigDef(
        "zookeeper.connection.timeout.ms",
        ConfigType.INT,
        18_000,
        AtLeast(1),
        doc="How long the first connection to ZooKeeper may take (cluster mode).",
    ),
    ConfigDef(
        "broker.rack",
        ConfigType.STRING,
        "",
        doc="This broker's rack; assignment is rack-aware only when every broker has one.",
    ),
    ConfigDef(
        "offsets.topic.num.partitions",
        ConfigType.INT,
        50,
        AtLeast(1),
        doc="Partitions of __consumer_offsets.",
    ),
    ConfigDef(
        "offsets.topic.replication.factor",
        ConfigType.INT,
        1,  # Kafka's default is 3; one node can only host one replica.
        AtLeast(1),
        doc="Replication factor of __consumer_offsets (Kafka's default: 3).",
    ),
    ConfigDef(
        "offsets.topic.segment.bytes",
        ConfigType.INT,
        104_857_600,
        AtLeast(1),
        doc="segment.bytes of __consumer_offsets.",
    ),
    ConfigDef(
        "offsets.retention.minutes",
        ConfigType.INT,
        10_080,
        AtLeast(1),
        doc="How long an empty group's committed offsets are kept.",
    ),
    ConfigDef(
        "offsets.retention.check.interval.ms",
        ConfigType.LONG,
        600_000,
        AtLeast(1),
        doc="How often expired committed offsets are removed.",
    ),
    ConfigDef(
        "offset.metadata.max.bytes",
        ConfigType.INT,
        4096,
        doc="Largest metadata string of a committed offset.",
    ),
    ConfigDef(
        "group.initial.rebalance.delay.ms",
        ConfigType.INT,
        3000,
        AtLeast(0),
        doc="How long a new group waits for more members before its first rebalance.",
    ),
    ConfigDef(
        "group.min.session.timeout.ms",
        ConfigType.INT,
        6000,
        doc="Smallest session timeout a group member may ask for.",
    ),
    ConfigDef(
        "group.max.session.timeout.ms",
        ConfigType.INT,
        1_800_000,
        doc="Largest session timeout a group member may ask for.",
    ),
    ConfigDef(
        "group.max.size",
        ConfigType.INT,
        INT32_MAX,
        AtLeast(1),
        doc="Most members one consumer group may have.",
    ),
    ConfigDef(
        "transaction.state.log.num.partitions",
        ConfigType.INT,
        50,
        AtLeast(1),
        doc="Partitions of __transaction_state.",
    ),
    ConfigDef(
        "transaction.state.log.replication.factor",
        ConfigType.INT,
        1,  # Kafka's default is 3; one node can only host one replica.
        AtLeast(1),
        doc="Replication factor of __transaction_state (Kafka's default: 3).",
    ),
    ConfigDef(
        "transaction.state.log.min.isr",
        ConfigType.INT,
        1,  # Kafka's default is 2; one node can only host one replica.
        AtLeast(1),
        doc="min.insync.replicas of __transaction_state (Kafka's default: 2).",
    ),
    ConfigDef(
        "transaction.state.log.segment.bytes",
        ConfigType.INT,
        104_857_600,
        AtLeast(1),
        doc="segment.bytes of __transaction_state.",
    ),
    ConfigDef(
        "transaction.max.timeout.ms",
        ConfigType.INT,
        900_000,
        AtLeast(1),
        doc="Largest transaction timeout a producer may ask for.",
    ),
    ConfigDef(
        "transactional.id.expiration.ms",
        ConfigType.INT,
        604_800_000,
        AtLeast(1),
        doc="How long an idle transactional id is remembered.",
    ),
    ConfigDef(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        ConfigType.INT,
        10_000,
        AtLeast(1),
        doc="How often transactions past their timeout are aborted.",
    ),
    ConfigDef(
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        ConfigType.INT,
        3_600_000,
        AtLeast(1),
        doc="How often expired transactional ids are removed.",
    ),
    ConfigDef(
        "producer.id.expiration.ms",
        ConfigType.INT,
        86_400_000,
        AtLeast(1),
        doc="How long an idle producer id's idempotence state is kept.",
    ),
    ConfigDef(
        "producer.id.expiration.check.interval.ms",
        ConfigType.INT,
        600_000,
        AtLeast(1),
        doc="How often expired producer ids are removed.",
    ),
    ConfigDef(
        "replica.lag.time.max.ms",
        ConfigType.LONG,
        30_000,
        AtLeast(1),
        doc="A follower that has not caught up for this long leaves the ISR.",
    ),
    ConfigDef(
        "replica.fetch.max.bytes",
        ConfigType.INT,
        1_048_576,
        AtLeast(0),
        doc="Bytes a follower asks for per partition in one fetch.",
    ),
    ConfigDef(
        "replica.fetch.response.max.bytes",
        ConfigType.INT,
        10_485_760,
        AtLeast(0),
        doc="Bytes a follower asks for in one whole fetch response.",
    ),
    ConfigDef(
        "replica.fetch.wait.max.ms",
        ConfigType.INT,
        500,
        AtLeast(0),
        doc="How long a follower's fetch may wait at the leader for data.",
    ),
    ConfigDef(
        "replica.fetch.min.bytes",
        ConfigType.INT,
        1,
        AtLeast(1),
        doc="Bytes a follower's fetch waits for at the leader.",
    ),
    ConfigDef(
        "replica.fetch.backoff.ms",
        ConfigType.INT,
        1_000,
        AtLeast(0),
        doc="Pause of a follower's fetcher after a failed fetch.",
    ),
    ConfigDef(
        "replica.socket.timeout.ms",
        ConfigType.INT,
        30_000,
        AtLeast(1),
        doc="Timeout of a follower's fetch requests (and other broker-to-broker requests).",
    ),
    ConfigDef(
        "num.io.threads",
        ConfigType.INT,
        8,
        AtLeast(1),
        doc="Request handler threads; pystream serves requests on its event loop.",
        honoured=False,
    ),
    ConfigDef(
        "num.recovery.threads.per.data.dir",
        ConfigType.INT,
        1,
        AtLeast(1),
        doc="Threads that load (and after a crash recover) the logs at startup, one log "
        "dir after the other.",
    ),
    ConfigDef(
        "background.threads",
        ConfigType.INT,
        10,
        AtLeast(1),
        doc="Threads of background jobs; pystream runs them on its event loop and in threads.",
        honoured=False,
    ),
    ConfigDef(
        "num.replica.fetchers",
        ConfigType.INT,
        1,
        AtLeast(1),
        doc=(
            "Fetchers per source broker, each with its own connection; a partition goes to "
            "fetcher abs(31 * topic.hashCode() + partition) % num.replica.fetchers, as in "
            "Kafka (asyncio tasks on the broker's loop, not threads; a dynamic change takes "
            "effect at the next start)."
        ),
    ),
    ConfigDef(
        "unclean.leader.election.enable",
        ConfigType.BOOLEAN,
        False,
        doc="Broker-wide default of the topic config of the same name (elections).",
    ),
    ConfigDef(
        "auto.leader.rebalance.enable",
        ConfigType.BOOLEAN,
        True,
        doc="The controller moves leadership back to preferred replicas when imbalanced.",
    ),
    ConfigDef(
        "leader.imbalance.check.interval.seconds",
        ConfigType.LONG,
        300,
        AtLeast(1),
        doc="How often the controller checks for leader imbalance.",
    ),
    ConfigDef(
        "leader.imbalance.per.broker.percentage",
        ConfigType.INT,
        10,
        AtLeast(0),
        doc="Share of a broker's partitions led elsewhere that triggers a rebalance.",
    ),
    ConfigDef(
        "controlled.shutdown.enable",
        ConfigType.BOOLEAN,
        True,
        doc="A stopping broker first asks the controller to move its leaderships away.",
    ),
    ConfigDef(
        "controlled.shutdown.max.retries",
        ConfigType.INT,
        3,
        AtLeast(0),
        doc="Retries of a controlled shutdown that did not complete.",
    ),
    ConfigDef(
        "controlled.shutdown.retry.backoff.ms",
        ConfigType.LONG,
        5_000,
        AtLeast(0),
        doc="Pause between two controlled-shutdown attempts.",
    ),
)

#: Broker keys Kafka accepts as a fallback for another key (used when that key is not given).
BROKER_ALIASES: dict[str, str] = {"log.dir": "log.dirs"}
# Broker keys that set a topic config's default (log.segment.bytes, log.retention.hours ...).
_TOPIC_SYNONYM_NAMES = frozenset(s.name for d in TOPIC_CONFIGS.values() for s in d.synonyms)
# Broker key -> (topic config, synonym) for the broker keys that set topic defaults.
TOPIC_CONFIG_OF_SYNONYM: dict[str, tuple[ConfigDef, Synonym]] = {
    s.name: (d, s) for d in TOPIC_CONFIGS.values() for s in d.synonyms
}


def broker_key_type(name: str) -> ConfigType:
    """The type of a broker key: its own table's, or (a topic-default key) the topic
    config's (INT for the scaled ones: log.retention.hours and the like are INTs in Kafka)."""
    if name in BROKER_CONFIGS:
        return BROKER_CONFIGS[name].type
    definition, synonym = TOPIC_CONFIG_OF_SYNONYM[name]
    return ConfigType.INT if synonym.scale != 1 else definition.type


def _normalised(name: str, raw: Any) -> str:
    """A broker key's given value as Kafka shows it (trimmed, canonical booleans ...)."""
    try:
        return format_value(parse_value(name, broker_key_type(name), raw))
    except InvalidConfigError:  # an unused, lower-priority synonym is never validated
        return str(raw)


@dataclass(frozen=True)
class BrokerConfig:
    """The broker's configuration (``server.properties`` + ``--override``), typed.

    ``log_config`` holds the topic defaults given at broker level
    (``log.segment.bytes``, ``log.retention.hours``, ``message.max.bytes`` ...).
    """

    broker_id: int = 0
    listeners: str = "PLAINTEXT://127.0.0.1:9092"
    advertised_listeners: str = ""
    listener_security_protocol_map: str = (
        "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
    )
    inter_broker_listener_name: str = ""
    security_inter_broker_protocol: str = ""
    ssl_keystore_type: str = "PEM"
    ssl_keystore_location: str = ""
    ssl_keystore_password: str = ""
    ssl_key_password: str = ""
    ssl_keystore_key: str = ""
    ssl_keystore_certificate_chain: str = ""
    ssl_truststore_type: str = "PEM"
    ssl_truststore_location: str = ""
    ssl_truststore_certificates: str = ""
    ssl_client_auth: str = "none"
    ssl_principal_mapping_rules: str = "DEFAULT"
    ssl_enabled_protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    ssl_cipher_suites: tuple[str, ...] = ()
    log_dirs: tuple[str, ...] = ("./pystream-data",)
    num_partitions: int = 1
    default_replication_factor: int = 1
    auto_create_topics_enable: bool = True
    authorizer_class_name: str = ""
    super_users: str = ""
    allow_everyone_if_no_acl_found: bool = False
    delete_topic_enable: bool = True
    socket_request_max_bytes: int = 104_857_600
    produce_pipeline_max_requests: int = 4
    rest_enable: bool = False
    rest_host: str = "127.0.0.1"
    rest_port: int = 8082
    rest_config_file: str = ""
    console_enable: bool = False
    console_host: str = "127.0.0.1"
    console_port: int = 9021
    console_config_file: str = ""
    metrics_enable: bool = True
    metrics_listener: str = "http://127.0.0.1:9644"
    sasl_enabled_mechanisms: tuple[str, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
    sasl_mechanism_inter_broker_protocol: str = ""
    sasl_jaas_config: str = ""
    connections_max_reauth_ms: int = 0
    connection_failed_authentication_delay_ms: int = 100
    max_connections: int = INT32_MAX
    max_connections_per_ip: int = INT32_MAX
    max_connections_per_ip_overrides: str = ""
    event_loop: str = "asyncio"
    fetch_max_bytes: int = 57_671_680
    max_incremental_fetch_session_cache_slots: int = 1000
    min_incremental_fetch_session_eviction_ms: int = 120_000
    log_retention_check_interval_ms: int = 300_000
    log_flush_scheduler_interval_ms: int = INT64_MAX
    log_flush_offset_checkpoint_interval_ms: int = 60_000
    log_flush_start_offset_checkpoint_interval_ms: int = 60_000
    replica_high_watermark_checkpoint_interval_ms: int = 5_000
    log_cleaner_enable: bool = True
    log_cleaner_threads: int = 1
    log_cleaner_backoff_ms: int = 15_000
    log_cleaner_dedupe_buffer_size: int = 134_217_728
    log_cleaner_io_buffer_size: int = 524_288
    log_cleaner_io_buffer_load_factor: float = 0.9
    log_cleaner_io_max_bytes_per_second: float = DOUBLE_MAX
    zookeeper_connect: str = ""
    zookeeper_session_timeout_ms: int = 18_000
    zookeeper_connection_timeout_ms: int = 18_000
    broker_rack: str = ""
    offsets_topic_num_partitions: int = 50
    offsets_topic_replication_factor: int = 1
    offsets_topic_segment_bytes: int = 104_857_600
    offsets_retention_minutes: int = 10_080
    offsets_retention_check_interval_ms: int = 600_000
    offset_metadata_max_bytes: int = 4096
    group_initial_rebalance_delay_ms: int = 3000
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1_800_000
    group_max_size: int = INT32_MAX
    transaction_state_log_num_partitions: int = 50
    transaction_state_log_replication_factor: int = 1
    transaction_state_log_min_isr: int = 1
    transaction_state_log_segment_bytes: int = 104_857_600
    transaction_max_timeout_ms: int = 900_000
    transactional_id_expiration_ms: int = 604_800_000
    transaction_abort_timed_out_transaction_cleanup_interval_ms: int = 10_000
    transaction_remove_expired_transaction_cleanup_interval_ms: int = 3_600_000
    producer_id_expiration_ms: int = 86_400_000
    producer_id_expiration_check_interval_ms: int = 600_000
    replica_lag_time_max_ms: int = 30_000
    replica_fetch_max_bytes: int = 1_048_576
    replica_fetch_response_max_bytes: int = 10_485_760
    replica_fetch_wait_max_ms: int = 500
    replica_fetch_min_bytes: int = 1
    replica_fetch_backoff_ms: int = 1_000
    replica_socket_timeout_ms: int = 30_000
    num_io_threads: int = 8
    num_recovery_threads_per_data_dir: int = 1
    background_threads: int = 10
    num_replica_fetchers: int = 1
    unclean_leader_election_enable: bool = False
    auto_leader_rebalance_enable: bool = True
    leader_imbalance_check_interval_seconds: int = 300
    leader_imbalance_per_broker_percentage: int = 10
    controlled_shutdown_enable: bool = True
    controlled_shutdown_max_retries: int = 3
    controlled_shutdown_retry_backoff_ms: int = 5_000
    log_config: LogConfig = field(default_factory=LogConfig)
    # Keys that were given but that pystream does not know (the caller warns about them).
    unknown_keys: tuple[str, ...] = field(default=(), compare=False)
    # The known keys as given (file + overrides, aliases resolved; values as Kafka shows
    # them): DescribeConfigs reports them as STATIC_BROKER_CONFIG.  Do not mutate.
    static_properties: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    # Dynamic broker configs (AlterConfigs on a BROKER resource) in force: this broker's own
    # (DYNAMIC_BROKER_CONFIG) and the cluster-wide defaults (DYNAMIC_DEFAULT_BROKER_CONFIG).
    # Keys of DYNAMIC_BROKER_CONFIGS with valid values (they override static_properties),
    # and custom keys pystream does not know (reported by DescribeConfigs only).
    dynamic_broker: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    dynamic_default: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    # Per-listener overrides, Kafka's ``listener.name.<name>.<key>`` (ssl.* keys,
    # sasl.enabled.mechanisms, [<mechanism>.]sasl.jaas.config), parsed:
    # {"listener.name.internal.ssl.client.auth": "required", ...}.  Do not mutate.
    listener_properties: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def for_listener(self, listener_name: str, key: str) -> Any:
        """Broker key ``key`` (``ssl.*``, ``sasl.enabled.mechanisms``, ``sasl.jaas.config``,
        ``max.connections``)
        for listener ``listener_name``: its ``listener.name.<name>.<key>`` override, else
        the broker-wide value."""
        override = f"listener.name.{listener_name.lower()}.{key}"
        if override in self.listener_properties:
            return self.listener_properties[override]
        return getattr(self, BROKER_CONFIGS[key].attribute)

    @classmethod
    def from_properties(
        cls,
        props: Mapping[str, Any],
        *,
        dynamic_default: Mapping[str, str] | None = None,
        dynamic_broker: Mapping[str, str] | None = None,
    ) -> BrokerConfig:
        """Parse broker properties; unknown keys are collected in ``unknown_keys``.

        ``dynamic_default`` and ``dynamic_broker`` (dynamic broker configs, see
        :func:`validate_dynamic_broker_configs`) override ``props`` in that order, as in
        Kafka.  Raises InvalidConfigError naming the key for a value that does not parse
        or is out of range.
        """
        props = dict(props)
        for alias, key in BROKER_ALIASES.items():
            if alias in props:
                value = props.pop(alias)
                props.setdefault(key, value)
        topic_synonyms = _TOPIC_SYNONYM_NAMES
        static = {
            k: _normalised(k, v)
            for k, v in props.items()
            if k in BROKER_CONFIGS or k in topic_synonyms
        }
        listener_props = listener_overrides(props)
        unknown = sorted(
            k
            for k in props
            if k not in BROKER_CONFIGS and k not in topic_synonyms and k not in listener_props
        )
        dynamic_default = {k: dynamic_default[k] for k in dynamic_default or {}}
        dynamic_broker = {k: dynamic_broker[k] for k in dynamic_broker or {}}
        merged = {**props, **dynamic_default, **dynamic_broker}
        sources = {k: ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG for k in dynamic_default}
        sources.update((k, ConfigSource.DYNAMIC_BROKER_CONFIG) for k in dynamic_broker)
        known = {k: v for k, v in merged.items() if k in BROKER_CONFIGS}
        values = parse_properties(BROKER_CONFIGS, known, "broker")
        if "log.dirs" in values and not values["log.dirs"]:
            raise InvalidConfigError("log.dirs is empty; give at least one directory")
        if values.get("max.connections.per.ip") == 0 and not values.get(
            "max.connections.per.ip.overrides"
        ):
            raise InvalidConfigError(
                "max.connections.per.ip is 0 but max.connections.per.ip.overrides is empty: "
                "no address could connect (list the hosts allowed in the overrides)"
            )
        return cls(
            **{BROKER_CONFIGS[k].attribute: v for k, v in values.items()},
            log_config=LogConfig.from_broker_properties(merged, sources),
            unknown_keys=tuple(unknown),
            listener_properties=listener_props,
            static_properties=static,
            dynamic_broker=dynamic_broker,
            dynamic_default=dynamic_default,
        )

    def with_dynamic(
        self, dynamic_broker: Mapping[str, str], dynamic_default: Mapping[str, str]
    ) -> BrokerConfig:
        """This broker's static config under new dynamic layers, as stored.

        Static keys and invalid values are left out with a warning each, as Kafka ignores
        them; custom keys pystream does not know are kept (reported, otherwise ignored, as
        in Kafka).  Raises InvalidConfigError if the layers together are inconsistent (e.g.
        log.cleaner.min.compaction.lag.ms above the max)."""
        layers = []
        for stored, level in ((dynamic_broker, "broker"), (dynamic_default, "default cluster")):
            kept = {}
            for key, value in stored.items():
                try:
                    validate_dynamic_broker_configs({key: value}, per_broker=level == "broker")
                except InvalidConfigError as exc:
                    _log.warning("ignoring dynamic %s config %s: %s", level, key, exc)
                    continue
                kept[key] = value  # a dynamic key, or a custom one (reported, else ignored)
            layers.append(kept)
        config = BrokerConfig.from_properties(
            self.static_properties, dynamic_broker=layers[0], dynamic_default=layers[1]
        )
        return dataclasses.replace(
            config, unknown_keys=self.unknown_keys, listener_properties=self.listener_properties
        )

    def value_of(self, key: str) -> str | None:
        """Broker key ``key``'s value as given in its highest layer, else its built-in
        default (None for keys without one, e.g. log.retention.ms)."""
        for layer in (self.dynamic_broker, self.dynamic_default, self.static_properties):
            if key in layer:
                return layer[key]
        return BROKER_DEFAULTS.get(key)

    def source_of(self, key: str) -> ConfigSource:
        """Where broker key ``key``'s value comes from (its highest-priority layer)."""
        if key in self.dynamic_broker:
            return ConfigSource.DYNAMIC_BROKER_CONFIG
        if key in self.dynamic_default:
            return ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG
        if key in self.static_properties:
            return ConfigSource.STATIC_BROKER_CONFIG
        return ConfigSource.DEFAULT_CONFIG


#: Broker keys holding secrets: DescribeConfigs marks them sensitive and hides the value,
#: as Kafka does for its PASSWORD-type configs.
SENSITIVE_BROKER_CONFIGS = frozenset(
    {"ssl.keystore.password", "ssl.key.password", "ssl.keystore.key", "sasl.jaas.config"}
)


# listener.name.<name>.<key>: ssl.* keys, sasl.enabled.mechanisms, and the JAAS login, which
# may also be per mechanism (listener.name.internal.scram-sha-256.sasl.jaas.config).
_LISTENER_OVERRIDE = re.compile(
    r"listener\.name\.([^.]+)\."
    r"(ssl\..+|sasl\.enabled\.mechanisms|max\.connections|(?:(?:plain|scram-sha-256|scram-sha-512)\.)?"
    r"sasl\.jaas\.config)"
)


def is_sensitive_broker_config(key: str) -> bool:
    """Whether broker key ``key`` (or a ``listener.name.*`` override) holds a secret."""
    match = _LISTENER_OVERRIDE.fullmatch(key)
    base = match[2] if match else key
    return base in SENSITIVE_BROKER_CONFIGS or base.endswith(".sasl.jaas.config")


def listener_overrides(props: Mapping[str, Any]) -> dict[str, Any]:
    """Kafka's per-listener ``listener.name.<name>.<key>`` keys, parsed and validated as
    the key they override (the listener name is lower case, as in Kafka)."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        match = _LISTENER_OVERRIDE.fullmatch(key)
        if match is None:
            continue
        name, base = match.groups()
        if base.endswith(".sasl.jaas.config"):  # per mechanism: parsed as sasl.jaas.config
            base = "sasl.jaas.config"
        if base not in BROKER_CONFIGS:
            raise InvalidConfigError(f"{key}: {base} is not a broker config pystream knows")
        if name != name.lower():
            raise InvalidConfigError(
                f"{key}: the listener name in listener.name.<name>.* is lower case "
                f"(listener.name.{name.lower()}.{base})"
            )
        try:
            out[key] = BROKER_CONFIGS[base].parse(value)
        except InvalidConfigError as exc:
            raise InvalidConfigError(f"{key}: {exc}") from None
    return out


def _synonym_default(definition: ConfigDef, index: int) -> str | None:
    # As in Kafka only the least precise unit has a default (log.retention.hours=168;
    # log.retention.ms and log.retention.minutes are unset by default).
    if index != len(definition.synonyms) - 1:
        return None
    default, scale = definition.default, definition.synonyms[index].scale
    if scale != 1 and isinstance(default, int) and default >= 0:
        default //= scale
    return format_value(default)


#: Every broker key's built-in default as text, as Kafka's ``staticDefaultConfigs``: the
#: broker table's, and the topic-default keys' (keys whose default is null in Kafka, e.g.
#: log.retention.ms, have none).
BROKER_DEFAULTS: dict[str, str] = {
    **{
        s.name: value
        for d in TOPIC_CONFIGS.values()
        for i, s in enumerate(d.synonyms)
        if (value := _synonym_default(d, i)) is not None
    },
    **{d.name: format_value(d.default) for d in BROKER_CONFIGS.values()},
}

# --- dynamic broker configs -------------------------------------------------------------------

#: Broker keys Kafka lets AlterConfigs change on a running broker (``DynamicBrokerConfig.
#: AllDynamicConfigs``), of those pystream knows: the first broker synonym of every topic
#: config but message.format.version (Kafka's ``DynamicLogConfig``), the cleaner's, the
#: thread pools' and producer.id.expiration.ms.  Others (log.retention.hours, listeners ...)
#: are static: AlterConfigs answers INVALID_CONFIG "Cannot update these configs dynamically".
DYNAMIC_BROKER_CONFIGS: frozenset[str] = frozenset(
    {d.synonyms[0].name for d in TOPIC_CONFIGS.values() if d.synonyms}
    - {"log.message.format.version"}
) | frozenset(
    {
        "log.cleaner.threads",
        "log.cleaner.dedupe.buffer.size",
        "log.cleaner.io.buffer.load.factor",
        "log.cleaner.io.buffer.size",
        "log.cleaner.io.max.bytes.per.second",
        "log.cleaner.backoff.ms",
        "num.io.threads",
        "num.replica.fetchers",
        "num.recovery.threads.per.data.dir",
        "background.threads",
        "producer.id.expiration.ms",
    }
)

#: Dynamic keys a running pystream applies at once: the topic defaults whose topic config
#: pystream honours (every topic without an override follows them).  The other dynamic
#: keys are stored and reported, and the broker's own ones take effect at its next start.
DYNAMIC_APPLIED_CONFIGS: frozenset[str] = frozenset(
    d.synonyms[0].name for d in TOPIC_CONFIGS.values() if d.synonyms and d.honoured
) - {"unclean.leader.election.enable"}  # the controller reads its own flag at startup


def _scala_set(names: Iterable[str]) -> str:
    # Kafka's messages print the offending keys as a Scala Set.
    return "Set(" + ", ".join(sorted(names)) + ")"


def validate_dynamic_broker_configs(props: Mapping[str, str], *, per_broker: bool) -> None:
    """Check a dynamic broker config change as Kafka's ``DynamicBrokerConfig.validateConfigs``.

    Known keys that are not dynamic raise InvalidConfigError "Cannot update these configs
    dynamically: Set(...)"; a dynamic key's value must parse and be in range.  Keys pystream
    does not know are allowed (Kafka keeps custom keys for plugins).  ``per_broker`` is
    False for the cluster-wide default (pystream has no per-broker-only keys yet).
    """
    known = broker_property_names()
    static = [k for k in props if k in known and k not in DYNAMIC_BROKER_CONFIGS]
    if static:
        raise InvalidConfigError(f"Cannot update these configs dynamically: {_scala_set(static)}")
    for key, value in props.items():
        if key in BROKER_CONFIGS:
            BROKER_CONFIGS[key].parse(value)
        elif key in _TOPIC_SYNONYM_NAMES:
            LogConfig.from_broker_properties({key: value})


def read_properties_file(path: str) -> dict[str, str]:
    """Read a Java ``.properties`` file (``key=value`` or ``key: value``, ``#``/``!`` comments,
    backslash line continuations), as Kafka's ``server.properties``."""
    result: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        pending = ""
        for raw in handle:
            line = raw.rstrip("\n").rstrip("\r")
            stripped = (pending + line.lstrip()) if pending else line.strip()
            if not pending and (not stripped or stripped[0] in "#!"):
                continue
            if stripped.endswith("\\") and not stripped.endswith("\\\\"):
                pending = stripped[:-1]
                continue
            pending = ""
            key, value = _split_property(stripped)
            result[key] = value
    return result


def _split_property(line: str) -> tuple[str, str]:
    for index, char in enumerate(line):
        if char in "=:":
            return line[:index].strip(), line[index + 1 :].strip()
        if char.isspace():
            rest = line[index:].strip()
            return line[:index], rest[1:].strip() if rest[:1] in ("=", ":") else rest
    return line, ""


def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """``["key=value", ...]`` (``--override``) as a dict; InvalidConfigError if no ``=``."""
    result = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidConfigError(f"--override {item!r} is not key=value")
        result[key.strip()] = value.strip()
    return result


def broker_property_names() -> frozenset[str]:
    """Every key :meth:`BrokerConfig.from_properties` parses: the broker table, the topic
    configs' broker-level synonyms and the aliases (``log.dir``); others are unknown."""
    return frozenset(BROKER_CONFIGS) | _TOPIC_SYNONYM_NAMES | frozenset(BROKER_ALIASES)


def broker_synonyms(name: str) -> tuple[str, ...]:
    """The broker-level keys that supply the default of topic config ``name``."""
    return tuple(s.name for s in TOPIC_CONFIGS[name].synonyms)


def _check_tables(defs: Iterable[ConfigDef], cls: type, extra: set[str]) -> None:
    # The dataclass and the table must agree: one definition per idea, checked at import.
    names = {f.name for f in dataclasses.fields(cls)} - extra
    attributes = {d.attribute for d in defs}
    if names != attributes:
        raise AssertionError(f"{cls.__name__} fields and table differ: {names ^ attributes}")
    for d in defs:
        if d.parse(d.default) != getattr(cls(), d.attribute):
            raise AssertionError(f"default of {d.name} differs from {cls.__name__}")


_check_tables(TOPIC_CONFIGS.values(), LogConfig, {"sources"})
_check_tables(
    BROKER_CONFIGS.values(),
    BrokerConfig,
    {
        "log_config",
        "unknown_keys",
        "static_properties",
        "dynamic_broker",
        "dynamic_default",
        "listener_properties",
    },
)

__all__ = [
    "AtLeast",
    "BROKER_ALIASES",
    "BROKER_CONFIGS",
    "BROKER_DEFAULTS",
    "BrokerConfig",
    "Between",
    "ConfigDef",
    "ConfigEntry",
    "ConfigSource",
    "ConfigType",
    "DYNAMIC_APPLIED_CONFIGS",
    "DYNAMIC_BROKER_CONFIGS",
    "ListOf",
    "LogConfig",
    "OneOf",
    "Synonym",
    "TOPIC_CONFIGS",
    "Validator",
    "broker_key_type",
    "broker_property_names",
    "broker_synonyms",
    "is_sensitive_broker_config",
    "format_value",
    "parse_overrides",
    "parse_properties",
    "parse_value",
    "read_properties_file",
    "validate_dynamic_broker_configs",
]
