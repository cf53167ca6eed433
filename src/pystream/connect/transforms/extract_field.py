"""ExtractField: replace the key or value with one of its fields (Kafka's
``ExtractField$Key``/``ExtractField$Value``: ``field``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import ConfigDef, ConfigKey, ConfigType, ConnectError, ConnectRecord, Importance
from ._util import (
    KeyOrValueTransformation,
    key_value_variants,
    require_map,
    require_struct,
)
from .field_path import SYNTAX_VERSION_KEY, FieldPath

PURPOSE = "field extraction"


@key_value_variants
class ExtractField(KeyOrValueTransformation):
    """The key or value becomes its ``field`` (null if the record had none); with
    ``field.syntax.version=V2`` the field may be nested (``a.b.c``)."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "field",
                ConfigType.STRING,
                documentation="Field name to extract.",
                importance=Importance.MEDIUM,
            ),
            SYNTAX_VERSION_KEY,
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        self._check_variant()
        parsed = self.CONFIG_DEF.parse(configs)
        self.field: str = parsed["field"]
        self.path = FieldPath(self.field, parsed["field.syntax.version"])

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        schema = self.operating_schema(record)
        value = self.operating_value(record)
        if schema is None:
            if value is None:
                return self.new_record(record, None, None)
            return self.new_record(
                record, None, self.path.value_from(require_map(value, PURPOSE), None)
            )
        if schema.type != "struct":
            require_struct(schema, value, PURPOSE)  # raises, saying what it found
        field = self.path.field_from(schema)
        if field is None:
            raise ConnectError(
                f"Unknown field: {self.field} (fields: {', '.join(f.name for f in schema.fields)})"
            )
        if value is None:
            return self.new_record(record, field.schema, None)
        struct = require_struct(schema, value, PURPOSE)
        return self.new_record(record, field.schema, self.path.value_from(struct, schema))
