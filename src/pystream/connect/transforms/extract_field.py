"""ExtractField: replace the key or value with one of its fields (Kafka's
``ExtractField$Key``/``ExtractField$Value``: ``field``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import ConfigDef, ConfigKey, ConfigType, ConnectRecord, Importance
from ._util import (
    KeyOrValueTransformation,
    field_or_error,
    key_value_variants,
    require_map,
    require_struct,
)

PURPOSE = "field extraction"


@key_value_variants
class ExtractField(KeyOrValueTransformation):
    """The key or value becomes its ``field`` (null if the record had none)."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "field",
                ConfigType.STRING,
                documentation="Field name to extract.",
                importance=Importance.MEDIUM,
            )
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        self._check_variant()
        self.field: str = self.CONFIG_DEF.parse(configs)["field"]

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        schema = self.operating_schema(record)
        value = self.operating_value(record)
        if schema is None:
            if value is None:
                return self.new_record(record, None, None)
            return self.new_record(record, None, require_map(value, PURPOSE).get(self.field))
        if schema.type != "struct":
            require_struct(schema, value, PURPOSE)  # raises, saying what it found
        field = field_or_error(schema, self.field)
        if value is None:
            return self.new_record(record, field.schema, None)
        struct = require_struct(schema, value, PURPOSE)
        return self.new_record(record, field.schema, struct.get(self.field))
