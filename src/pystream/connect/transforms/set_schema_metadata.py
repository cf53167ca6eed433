"""SetSchemaMetadata: set the key's or value's schema name and/or version (Kafka's
``SetSchemaMetadata$Key``/``$Value``: ``schema.name``, ``schema.version``)."""

from __future__ import annotations

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
from ._util import KeyOrValueTransformation, key_value_variants, schema_with


@key_value_variants
class SetSchemaMetadata(KeyOrValueTransformation):
    """Set the schema's name and/or version; the value is unchanged."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "schema.name", ConfigType.STRING, None, Importance.HIGH, "Schema name to set."
            ),
            ConfigKey(
                "schema.version", ConfigType.INT, None, Importance.HIGH, "Schema version to set."
            ),
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        self._check_variant()
        parsed = self.CONFIG_DEF.parse(configs)
        self.name: str | None = parsed["schema.name"]
        self.version: int | None = parsed["schema.version"]
        if self.name is None and self.version is None:
            raise ConfigError(
                "Neither schema name nor version configured: set schema.name or schema.version"
            )

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        schema = self.operating_schema(record)
        if schema is None:
            raise ConnectError("Schema required for [updating schema metadata]")
        changes: dict[str, Any] = {}
        if self.name is not None:
            changes["name"] = self.name
        if self.version is not None:
            changes["version"] = self.version
        updated = schema_with(schema, **changes)
        return self.new_record(record, updated, self.operating_value(record))
