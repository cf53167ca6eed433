"""Connect's data model: schemas, as Kafka Connect's ``org.apache.kafka.connect.data``.

A record's key and value are plain Python values (``None``, ``bool``, ``int``,
``float``, ``str``, ``bytes``, ``list``, ``dict``) with an optional :class:`Schema`
beside them.  A struct is a ``dict`` keyed by field name, in field order, whose
schema is a ``struct`` schema; a map is a ``dict`` with a ``map`` schema.  Type names
are Kafka's lowercase ones (``int32``, ``string``, ``struct``…), which is also how
``JsonConverter`` writes them with ``schemas.enable=true``.  Logical types (``Decimal``,
``Date``, ``Time``, ``Timestamp``) are schemas with Kafka's names and their base types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PRIMITIVE_TYPES",
    "SCHEMA_TYPES",
    "Field",
    "Schema",
    "SchemaAndValue",
    "DATE_NAME",
    "DECIMAL_NAME",
    "TIME_NAME",
    "TIMESTAMP_NAME",
    "date_schema",
    "decimal_schema",
    "time_schema",
    "timestamp_schema",
]

PRIMITIVE_TYPES = (
    "int8",
    "int16",
    "int32",
    "int64",
    "float32",
    "float64",
    "boolean",
    "string",
    "bytes",
)
SCHEMA_TYPES = (*PRIMITIVE_TYPES, "array", "map", "struct")

DECIMAL_NAME = "org.apache.kafka.connect.data.Decimal"
DATE_NAME = "org.apache.kafka.connect.data.Date"
TIME_NAME = "org.apache.kafka.connect.data.Time"
TIMESTAMP_NAME = "org.apache.kafka.connect.data.Timestamp"


@dataclass(frozen=True)
class Field:
    """One field of a struct schema."""

    name: str
    index: int
    schema: Schema


@dataclass(frozen=True)
class Schema:
    """A Connect schema.  ``fields`` for ``struct``; ``value_schema`` for ``array``;
    ``key_schema`` and ``value_schema`` for ``map``."""

    type: str
    optional: bool = False
    default: Any = None
    name: str | None = None
    version: int | None = None
    doc: str | None = None
    parameters: dict[str, str] | None = None
    fields: tuple[Field, ...] = ()
    key_schema: Schema | None = None
    value_schema: Schema | None = None
    _by_name: dict[str, Field] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.type not in SCHEMA_TYPES:
            raise ValueError(f"unknown schema type {self.type!r}: expected one of {SCHEMA_TYPES}")
        self._by_name.update((f.name, f) for f in self.fields)

    def field(self, name: str) -> Field | None:
        """The struct field called ``name``, or None."""
        return self._by_name.get(name)

    def __hash__(self) -> int:
        return hash((self.type, self.optional, self.name, self.version, self.fields))

    @staticmethod
    def struct(
        fields: list[tuple[str, Schema]], *, name: str | None = None, optional: bool = False
    ) -> Schema:
        """A struct schema from ``(name, schema)`` pairs, in order."""
        return Schema(
            "struct",
            optional=optional,
            name=name,
            fields=tuple(Field(n, i, s) for i, (n, s) in enumerate(fields)),
        )


@dataclass(frozen=True)
class SchemaAndValue:
    """What a converter reads from bytes: the value and its schema (None if schemaless)."""

    schema: Schema | None
    value: Any


SchemaAndValue.NULL = SchemaAndValue(None, None)  # type: ignore[attr-defined]


# -- logical types --------------------------------------------------------------------
# Kafka's logical schemas (``Decimal.schema(scale)``, ``Date.SCHEMA`` …): a base type,
# Kafka's name and version 1, so that JsonConverter writes them as Kafka does.  Their
# Python values are ``decimal.Decimal``, ``datetime.date``, ``datetime.time`` and an
# aware ``datetime.datetime`` (UTC).


def decimal_schema(scale: int, *, optional: bool = False) -> Schema:
    """Kafka's ``Decimal.schema(scale)``: bytes holding the unscaled two's-complement value."""
    return Schema(
        "bytes", optional=optional, name=DECIMAL_NAME, version=1, parameters={"scale": str(scale)}
    )


def date_schema(*, optional: bool = False) -> Schema:
    """Kafka's ``Date.SCHEMA``: int32 days since the epoch."""
    return Schema("int32", optional=optional, name=DATE_NAME, version=1)


def time_schema(*, optional: bool = False) -> Schema:
    """Kafka's ``Time.SCHEMA``: int32 milliseconds since midnight."""
    return Schema("int32", optional=optional, name=TIME_NAME, version=1)


def timestamp_schema(*, optional: bool = False) -> Schema:
    """Kafka's ``Timestamp.SCHEMA``: int64 milliseconds since the epoch."""
    return Schema("int64", optional=optional, name=TIMESTAMP_NAME, version=1)
