"""HoistField: wrap the key or value in a struct (or map) with one field (Kafka's
``HoistField$Key``/``HoistField$Value``: ``field``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import ConfigDef, ConfigKey, ConfigType, ConnectRecord, Importance
from ..data import Schema
from ._util import KeyOrValueTransformation, SchemaCache, key_value_variants


@key_value_variants
class HoistField(KeyOrValueTransformation):
    """The key or value becomes ``{field: <it>}``, with a one-field struct schema when it
    had a schema."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "field",
                ConfigType.STRING,
                documentation="Field name for the single field that will be created in the "
                "resulting Struct or Map.",
                importance=Importance.MEDIUM,
            )
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        self._check_variant()
        self.field: str = self.CONFIG_DEF.parse(configs)["field"]
        self._schemas = SchemaCache()

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        schema = self.operating_schema(record)
        value = self.operating_value(record)
        if schema is None:
            return self.new_record(record, None, {self.field: value})
        new_schema = self._schemas.get(schema, lambda s: Schema.struct([(self.field, s)]))
        return self.new_record(record, new_schema, {self.field: value})
