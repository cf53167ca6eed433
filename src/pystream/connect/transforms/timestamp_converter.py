"""TimestampConverter: convert a timestamp between a formatted string, Unix time and
Connect's Date, Time and Timestamp (Kafka's ``TimestampConverter$Key``/``$Value``:
``field`` ("" for the whole key/value), ``target.type`` (``string``, ``unix``,
``Date``, ``Time``, ``Timestamp``), ``format`` (SimpleDateFormat, for strings),
``unix.precision`` (``seconds``, ``milliseconds``, ``microseconds``, ``nanoseconds``)).
All in UTC, as Kafka's."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from ..api import (
    ConfigDef,
    ConfigError,
    ConfigKey,
    ConfigType,
    ConnectError,
    ConnectRecord,
    Importance,
)
from ..data import (
    DATE_NAME,
    TIME_NAME,
    TIMESTAMP_NAME,
    Schema,
    date_schema,
    time_schema,
    timestamp_schema,
)
from ._dateformat import SimpleDateFormat
from ._util import (
    KeyOrValueTransformation,
    SchemaCache,
    field_or_error,
    key_value_variants,
    require_map,
    require_struct,
    struct_schema_like,
)

PURPOSE = "converting timestamp formats"
TYPES = ("string", "unix", "Date", "Time", "Timestamp")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_PER_MS = {"seconds": 0.001, "milliseconds": 1, "microseconds": 1000, "nanoseconds": 1_000_000}


def _one_of(key: str, allowed: tuple[str, ...]) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value not in allowed:
            raise ConfigError(
                f"Invalid value {value!r} for configuration {key}: expected one of "
                f"{', '.join(allowed)}"
            )

    return check


def _trunc_div(a: int, b: int) -> int:
    """Java's integer division (toward zero), as TimeUnit conversions truncate."""
    return a // b if (a >= 0) == (b > 0) else -(-a // b)


@key_value_variants
class TimestampConverter(KeyOrValueTransformation):
    """Convert timestamps between formats."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "field",
                ConfigType.STRING,
                "",
                Importance.HIGH,
                "The field containing the timestamp, or empty if the entire value is a timestamp",
            ),
            ConfigKey(
                "target.type",
                ConfigType.STRING,
                documentation="The desired timestamp representation: string, unix, Date, Time, "
                "or Timestamp",
                importance=Importance.HIGH,
                validator=_one_of("target.type", TYPES),
            ),
            ConfigKey(
                "format",
                ConfigType.STRING,
                "",
                Importance.MEDIUM,
                "A SimpleDateFormat-compatible format for the timestamp. Used to generate the "
                "output when type=string or used to parse the input if the input is a string.",
            ),
            ConfigKey(
                "unix.precision",
                ConfigType.STRING,
                "milliseconds",
                Importance.LOW,
                "The desired Unix precision for the timestamp: seconds, milliseconds, "
                "microseconds, or nanoseconds.",
                validator=_one_of("unix.precision", tuple(_PER_MS)),
            ),
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        self._check_variant()
        parsed = self.CONFIG_DEF.parse(configs)
        self.field: str = parsed["field"]
        self.target: str = parsed["target.type"]
        self.precision: str = parsed["unix.precision"]
        pattern = parsed["format"]
        self.format = SimpleDateFormat(pattern, "format") if pattern else None
        if self.target == "string" and self.format is None:
            raise ConfigError(
                "TimestampConverter requires format option to be specified when using string "
                "timestamps"
            )
        self._schemas = SchemaCache()

    # -- one value: to an aware UTC datetime and back

    def _to_raw(self, kind: str, value: Any) -> dt.datetime:
        if kind == "string":
            if not isinstance(value, str):
                raise ConnectError(f"Expected string timestamp to be a str, but found {value!r}")
            if self.format is None:
                raise ConnectError(
                    "TimestampConverter requires the format option to parse string timestamps"
                )
            return self.format.parse(value)
        if kind == "unix":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConnectError(f"Expected Unix timestamp to be an int, but found {value!r}")
            per_ms = _PER_MS[self.precision]
            ms = value * 1000 if per_ms < 1 else _trunc_div(value, int(per_ms))
            return _EPOCH + dt.timedelta(milliseconds=ms)
        if kind == "Date" and type(value) is dt.date:
            return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        if kind == "Time" and isinstance(value, dt.time):
            return dt.datetime.combine(_EPOCH.date(), value.replace(tzinfo=None), dt.UTC)
        if isinstance(value, dt.datetime):
            return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value
        raise ConnectError(
            f"TimestampConverter does not support {type(value).__name__} objects as {kind}"
        )

    def _to_type(self, when: dt.datetime) -> Any:
        target = self.target
        if target == "string":
            return self.format.format(when.astimezone(dt.UTC))  # type: ignore[union-attr]
        if target == "unix":
            ms = (when - _EPOCH) // dt.timedelta(milliseconds=1)
            per_ms = _PER_MS[self.precision]
            return _trunc_div(ms, 1000) if per_ms < 1 else ms * int(per_ms)
        utc = when.astimezone(dt.UTC)
        if target == "Date":
            return utc.date()
        if target == "Time":
            return utc.time()
        return utc

    def _target_schema(self, optional: bool) -> Schema:
        return {
            "string": lambda: Schema("string", optional=optional),
            "unix": lambda: Schema("int64", optional=optional),
            "Date": lambda: date_schema(optional=optional),
            "Time": lambda: time_schema(optional=optional),
            "Timestamp": lambda: timestamp_schema(optional=optional),
        }[self.target]()

    def _convert(self, kind: str, value: Any) -> Any:
        return None if value is None else self._to_type(self._to_raw(kind, value))

    # -- the record

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        schema = self.operating_schema(record)
        value = self.operating_value(record)
        if schema is None:
            if value is None:
                return record
            if not self.field:
                return self.new_record(record, None, self._convert(_kind_of(value), value))
            updated = dict(require_map(value, PURPOSE))
            if updated.get(self.field) is not None:
                field_value = updated[self.field]
                updated[self.field] = self._convert(_kind_of(field_value), field_value)
            return self.new_record(record, None, updated)
        if not self.field:
            new_schema = self._schemas.get(schema, lambda s: self._target_schema(s.optional))
            return self.new_record(record, new_schema, self._convert(_schema_kind(schema), value))
        if schema.type != "struct":
            require_struct(schema, value, PURPOSE)  # raises, saying what it found
        field = field_or_error(schema, self.field)
        new_schema = self._schemas.get(schema, self._struct_schema)
        if value is None:
            return self.new_record(record, new_schema, None)
        struct = dict(require_struct(schema, value, PURPOSE))
        struct[self.field] = self._convert(_schema_kind(field.schema), struct.get(self.field))
        return self.new_record(record, new_schema, struct)

    def _struct_schema(self, schema: Schema) -> Schema:
        return struct_schema_like(
            schema,
            [
                (
                    f.name,
                    self._target_schema(f.schema.optional) if f.name == self.field else f.schema,
                )
                for f in schema.fields
            ],
        )


def _schema_kind(schema: Schema) -> str:
    kind = {TIMESTAMP_NAME: "Timestamp", DATE_NAME: "Date", TIME_NAME: "Time"}.get(
        schema.name or ""
    )
    if kind is not None:
        return kind
    if schema.type == "string":
        return "string"
    if schema.type == "int64":
        return "unix"
    raise ConnectError(
        f"Schema {schema.type} (name {schema.name}) does not correspond to a known timestamp "
        "type format"
    )


def _kind_of(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, int) and not isinstance(value, bool):
        return "unix"
    if isinstance(value, dt.datetime):
        return "Timestamp"
    if isinstance(value, dt.date):
        return "Date"
    if isinstance(value, dt.time):
        return "Time"
    raise ConnectError(
        f"TimestampConverter does not support {type(value).__name__} objects as timestamps"
    )
