"""ValueToKey: replace the key with fields taken from the value (Kafka's ValueToKey:
``fields``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import ConfigDef, ConfigKey, ConfigType, ConnectRecord, Importance, Transformation
from ..data import Schema
from ._util import (
    Defined,
    SchemaCache,
    field_or_error,
    non_empty_list,
    require_map,
    require_struct,
)

PURPOSE = "copying fields from value to key"


class ValueToKey(Defined, Transformation):
    """The key becomes a map (schemaless) or struct (schema'd) of the value's ``fields``."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "fields",
                ConfigType.LIST,
                documentation="Field names on the record value to extract as the record key.",
                importance=Importance.HIGH,
                validator=non_empty_list("fields"),
            )
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        self.fields: list[str] = self.CONFIG_DEF.parse(configs)["fields"]
        self._schemas = SchemaCache()

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        schema = record.value_schema
        if schema is None:
            value = require_map(record.value, PURPOSE)
            return record.new_record(
                key_schema=None, key={name: value.get(name) for name in self.fields}
            )
        struct = require_struct(schema, record.value, PURPOSE)
        key_schema = self._schemas.get(schema, self._key_schema)
        return record.new_record(
            key_schema=key_schema, key={name: struct.get(name) for name in self.fields}
        )

    def _key_schema(self, schema: Schema) -> Schema:
        return Schema.struct([(name, field_or_error(schema, name).schema) for name in self.fields])
