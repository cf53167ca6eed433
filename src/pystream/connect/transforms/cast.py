"""Cast: change fields (or the whole key/value) to another primitive type (Kafka's
``Cast$Key``/``Cast$Value``: ``spec`` is ``field:type,…`` or one type for the whole
value; types ``int8``…``int64``, ``float32``, ``float64``, ``boolean``, ``string``).

Numbers narrow as Java casts them (truncated toward zero, wrapped to the width);
strings parse (``"42"`` → 42, ``"true"`` → true, case-insensitively); booleans are 1/0;
anything casts to string (bytes as base64).  Tombstones pass unchanged.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import re
from collections.abc import Mapping
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
from ..data import DECIMAL_NAME, Schema
from ._util import (
    KeyOrValueTransformation,
    SchemaCache,
    key_value_variants,
    non_empty_list,
    require_map,
    require_struct,
    struct_schema_like,
)

PURPOSE = "cast types"
TARGET_TYPES = ("int8", "int16", "int32", "int64", "float32", "float64", "boolean", "string")
_INPUT_TYPES = (*TARGET_TYPES, "bytes")
_BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}
_INT_TEXT = re.compile(r"[+-]?\d+")
WHOLE_VALUE = None  # the spec's key for a whole-value cast


def _wrap(number: int, bits: int) -> int:
    """Java's narrowing of an integer to ``bits`` (two's complement wrap)."""
    number &= (1 << bits) - 1
    return number - (1 << bits) if number >> (bits - 1) else number


def _to_int(value: Any, target: str) -> int:
    bits = _BITS[target]
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return _wrap(value, bits)
    if isinstance(value, float | decimal.Decimal):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConnectError(f"Value ({value}) was out of range for requested data type")
        return _wrap(int(value), bits)  # int() truncates toward zero, as Java's cast
    if isinstance(value, str):
        if _INT_TEXT.fullmatch(value):
            number = int(value)
            if -(1 << (bits - 1)) <= number < 1 << (bits - 1):
                return number
        raise ConnectError(f"Value ({value}) was out of range for requested data type {target}")
    raise ConnectError(f"Unexpected type in Cast transformation: {type(value).__name__}")


def _to_float(value: Any) -> float:
    if isinstance(value, bool | int | float | decimal.Decimal):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ConnectError(f"Value ({value}) could not be cast to a number") from None
    raise ConnectError(f"Unexpected type in Cast transformation: {type(value).__name__}")


def _to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | decimal.Decimal):
        return value != 0
    if isinstance(value, str):
        return value.lower() == "true"  # Java's Boolean.parseBoolean
    raise ConnectError(f"Unexpected type in Cast transformation: {type(value).__name__}")


def _to_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    # Kafka's Values.dateFormatFor: ISO 8601 in UTC, milliseconds, a literal Z.
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.strftime("%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return str(value)


def cast_value(value: Any, target: str) -> Any:
    """``value`` as ``target`` (one of :data:`TARGET_TYPES`)."""
    if value is None:
        return None
    if isinstance(value, list | tuple | Mapping):
        raise ConnectError(
            f"Cast transformation does not support casting from {type(value).__name__}"
        )
    if target in _BITS:
        return _to_int(value, target)
    if target in ("float32", "float64"):
        return _to_float(value)
    if target == "boolean":
        return _to_boolean(value)
    return _to_string(value)


def parse_spec(spec: list[str]) -> dict[str | None, str]:
    """``field:type`` pairs, or one bare type (key None) for the whole value."""
    casts: dict[str | None, str] = {}
    for item in spec:
        name, sep, kind = item.rpartition(":")
        kind = kind.strip()
        if kind not in TARGET_TYPES:
            raise ConfigError(
                f"Invalid value {','.join(spec)!r} for configuration spec: Invalid type found "
                f"in casting spec: {kind!r} (expected one of {', '.join(TARGET_TYPES)})"
            )
        casts[name.strip() if sep else WHOLE_VALUE] = kind
    if WHOLE_VALUE in casts and len(casts) > 1:
        raise ConfigError(
            f"Invalid value {','.join(spec)!r} for configuration spec: Cast transformations "
            "that specify a type to cast the entire value to may only specify a single cast "
            "in their spec"
        )
    return casts


@key_value_variants
class Cast(KeyOrValueTransformation):
    """Cast fields, or the whole key/value, to primitive types."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "spec",
                ConfigType.LIST,
                documentation="List of fields and the type to cast them to of the form "
                "field1:type,field2:type to cast fields of Maps or Structs. A single type to "
                "cast the entire value.",
                importance=Importance.HIGH,
                validator=non_empty_list("spec"),
            )
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        self._check_variant()
        self.casts = parse_spec(self.CONFIG_DEF.parse(configs)["spec"])
        self.whole = self.casts.get(WHOLE_VALUE)
        self._schemas = SchemaCache()

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        value = self.operating_value(record)
        if value is None:
            return record
        schema = self.operating_schema(record)
        if self.whole is not None:
            new_schema = None if schema is None else self._schemas.get(schema, self._whole_schema)
            return self.new_record(record, new_schema, cast_value(value, self.whole))
        if schema is None:
            source = require_map(value, PURPOSE)
            return self.new_record(
                record,
                None,
                {
                    k: cast_value(v, self.casts[k]) if k in self.casts else v
                    for k, v in source.items()
                },
            )
        struct = require_struct(schema, value, PURPOSE)
        new_schema = self._schemas.get(schema, self._struct_schema)
        return self.new_record(
            record,
            new_schema,
            {
                f.name: cast_value(struct.get(f.name), self.casts[f.name])
                if f.name in self.casts
                else struct.get(f.name)
                for f in schema.fields
            },
        )

    def _cast_schema(self, schema: Schema, target: str) -> Schema:
        if schema.type not in _INPUT_TYPES and schema.name != DECIMAL_NAME:
            raise ConnectError(
                f"Cast transformation does not support casting from {schema.type.upper()}"
            )
        if schema.type == "bytes" and schema.name != DECIMAL_NAME and target != "string":
            raise ConnectError(f"Cast transformation does not support casting BYTES to {target}")
        return Schema(
            target,
            optional=schema.optional,
            default=cast_value(schema.default, target),
            doc=schema.doc,
        )

    def _whole_schema(self, schema: Schema) -> Schema:
        return self._cast_schema(schema, self.whole)  # type: ignore[arg-type]

    def _struct_schema(self, schema: Schema) -> Schema:
        return struct_schema_like(
            schema,
            [
                (f.name, self._cast_schema(f.schema, self.casts[f.name]))
                if f.name in self.casts
                else (f.name, f.schema)
                for f in schema.fields
            ],
        )
