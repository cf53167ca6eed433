"""Flatten: nested structs (or maps) become top-level fields named by their path joined
with ``delimiter`` (default ``.``), as Kafka's ``Flatten$Key``/``Flatten$Value``.
Arrays, and maps in a schema'd value, are copied as they are."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import ConfigDef, ConfigKey, ConfigType, ConnectError, ConnectRecord, Importance
from ..data import Schema
from ._util import (
    KeyOrValueTransformation,
    SchemaCache,
    key_value_variants,
    require_map,
    require_struct,
    schema_with,
    struct_schema_like,
)

PURPOSE = "flattening"


@key_value_variants
class Flatten(KeyOrValueTransformation):
    """Flatten nested structures."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "delimiter",
                ConfigType.STRING,
                ".",
                Importance.MEDIUM,
                "Delimiter to insert between field names from the input record when "
                "generating field names for the output record",
            )
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        self._check_variant()
        self.delimiter: str = self.CONFIG_DEF.parse(configs)["delimiter"]
        self._schemas = SchemaCache()

    def _name(self, prefix: str, name: str) -> str:
        return f"{prefix}{self.delimiter}{name}" if prefix else name

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        schema = self.operating_schema(record)
        value = self.operating_value(record)
        if value is None:
            return record
        out: dict[str, Any] = {}
        if schema is None:
            self._flatten_map(require_map(value, PURPOSE), "", out)
            return self.new_record(record, None, out)
        new_schema = self._schemas.get(schema, self._flat_schema)
        self._flatten_struct(schema, require_struct(schema, value, PURPOSE), "", out)
        return self.new_record(record, new_schema, out)

    def _flatten_map(self, value: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
        for key, item in value.items():
            name = self._name(prefix, key)
            if isinstance(item, Mapping):
                self._flatten_map(item, name, out)
            elif item is None or isinstance(item, str | bytes | bool | int | float | list):
                out[name] = item
            else:
                raise ConnectError(
                    f"Flatten transformation does not support {type(item).__name__} for record "
                    f"without schemas (for field {name})."
                )

    def _flatten_struct(
        self, schema: Schema, value: Mapping[str, Any] | None, prefix: str, out: dict[str, Any]
    ) -> None:
        for field in schema.fields:
            name = self._name(prefix, field.name)
            item = None if value is None else value.get(field.name)
            if field.schema.type == "struct":
                self._flatten_struct(field.schema, item, name, out)
            else:
                out[name] = item

    def _flat_schema(self, schema: Schema) -> Schema:
        fields: list[tuple[str, Schema]] = []

        def walk(struct: Schema, prefix: str, optional: bool) -> None:
            for field in struct.fields:
                name = self._name(prefix, field.name)
                inner = field.schema
                if inner.type == "struct":
                    walk(inner, name, optional or inner.optional)
                elif optional and not inner.optional:
                    # A field under an optional struct may be absent: it becomes optional.
                    fields.append((name, schema_with(inner, optional=True)))
                else:
                    fields.append((name, inner))

        walk(schema, "", False)
        return struct_schema_like(schema, fields)
