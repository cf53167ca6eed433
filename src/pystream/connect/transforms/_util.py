"""What Kafka's SMTs share (``org.apache.kafka.connect.transforms.util``): the record's
key or value as the thing operated on, the ``$Key``/``$Value`` variants, struct schema
rebuilding and the checks on what a transform was given."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from ..api import ConfigDef, ConfigError, ConnectError, ConnectRecord, Transformation
from ..data import Field, Schema

T = TypeVar("T", bound=type)

# Bound on a transform's schema cache (Kafka's SMTs keep an LRU of 16).
_SCHEMA_CACHE_SIZE = 16


def key_value_variants(cls: T) -> T:
    """Give an SMT Kafka's two variants, ``cls.Key`` and ``cls.Value`` (Java's
    ``InsertField$Key``…), which operate on the record's key or value."""
    for side in ("Key", "Value"):
        variant = type(
            f"{cls.__name__}{side}",
            (cls,),
            {
                "is_key": side == "Key",
                "__module__": cls.__module__,
                "__qualname__": f"{cls.__name__}.{side}",
                "__doc__": f"{cls.__name__} on the record's {side.lower()}.",
            },
        )
        setattr(cls, side, variant)
    return cls


class Defined:
    """A transform or predicate whose settings are its class's ``CONFIG_DEF``."""

    CONFIG_DEF: ClassVar[ConfigDef] = ConfigDef()

    def config(self) -> ConfigDef:
        return self.CONFIG_DEF


def non_empty_list(key: str) -> Callable[[list[str]], None]:
    """A validator: ``key`` must list at least one name (Kafka's NonEmptyListValidator)."""

    def check(value: list[str]) -> None:
        if not any(value):
            raise ConfigError(f"Invalid value for configuration {key}: empty list")

    return check


class KeyOrValueTransformation(Defined, Transformation):
    """An SMT with ``$Key``/``$Value`` variants: :meth:`operating_schema`,
    :meth:`operating_value` and :meth:`new_record` read or replace the side it works on."""

    is_key: bool | None = None  # set by the variants made with key_value_variants

    def _check_variant(self) -> None:
        if self.is_key is None:
            name = type(self).__name__
            raise ConfigError(f"Use {name}$Key or {name}$Value: {name} alone names neither side")

    def operating_schema(self, record: ConnectRecord) -> Schema | None:
        return record.key_schema if self.is_key else record.value_schema

    def operating_value(self, record: ConnectRecord) -> Any:
        return record.key if self.is_key else record.value

    def operating_fields(
        self, record: ConnectRecord, purpose: str
    ) -> tuple[Schema | None, Mapping[str, Any]] | None:
        """The key's or value's schema and fields (a map without a schema, a struct with
        one); None for a tombstone, which these SMTs pass unchanged."""
        value = self.operating_value(record)
        if value is None:
            return None
        schema = self.operating_schema(record)
        if schema is None:
            return None, require_map(value, purpose)
        return schema, require_struct(schema, value, purpose)

    def new_record(self, record: ConnectRecord, schema: Schema | None, value: Any) -> ConnectRecord:
        if self.is_key:
            return record.new_record(key_schema=schema, key=value)
        return record.new_record(value_schema=schema, value=value)


def require_map(value: Any, purpose: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConnectError(
            f"Only Map objects supported in absence of schema for [{purpose}], found: "
            f"{_type_name(value)}"
        )
    return value


def require_struct(schema: Schema, value: Any, purpose: str) -> Mapping[str, Any]:
    if schema.type != "struct" or not isinstance(value, Mapping):
        raise ConnectError(
            f"Only Struct objects supported for [{purpose}], found: {_type_name(value)}"
        )
    return value


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def struct_schema_like(schema: Schema, fields: list[tuple[str, Schema]]) -> Schema:
    """A struct schema with ``fields`` and ``schema``'s name, version, doc, parameters and
    optionality (Kafka's ``SchemaUtil.copySchemaBasics``)."""
    return Schema(
        "struct",
        optional=schema.optional,
        name=schema.name,
        version=schema.version,
        doc=schema.doc,
        parameters=schema.parameters,
        fields=tuple(Field(name, i, s) for i, (name, s) in enumerate(fields)),
    )


class SchemaCache:
    """Updated schemas by the schema they were made from: records of one topic share a
    schema, so each is rebuilt once."""

    def __init__(self) -> None:
        self._cache: dict[Schema, Schema] = {}
        self._last: tuple[Schema, Schema] | None = None

    def get(self, schema: Schema, build: Callable[[Schema], Schema]) -> Schema:
        # The same schema object, record after record: skip hashing it (recursive).
        last = self._last
        if last is not None and last[0] is schema:
            return last[1]
        updated = self._cache.get(schema)
        if updated is None:
            updated = build(schema)
            if len(self._cache) >= _SCHEMA_CACHE_SIZE:
                self._cache.clear()
            self._cache[schema] = updated
        self._last = (schema, updated)
        return updated


def field_or_error(schema: Schema, name: str) -> Field:
    field = schema.field(name)
    if field is None:
        raise ConnectError(
            f"Field does not exist: {name} (fields: {', '.join(f.name for f in schema.fields)})"
        )
    return field


def schema_with(schema: Schema, **changes: Any) -> Schema:
    """``schema`` with some attributes changed (``optional=True``, ``name=…``)."""
    return dataclasses.replace(schema, _by_name={}, **changes)
