"""ReplaceField: keep, drop and rename fields of the key or value (Kafka's
``ReplaceField$Key``/``ReplaceField$Value``: ``exclude``, ``include``, ``renames``, and
the older ``blacklist``/``whitelist``).  Tombstones pass unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import ConfigDef, ConfigError, ConfigKey, ConfigType, ConnectRecord, Importance
from ..data import Schema
from ._util import (
    KeyOrValueTransformation,
    SchemaCache,
    key_value_variants,
    struct_schema_like,
)

PURPOSE = "field replacement"


def parse_renames(raw: list[str], key: str = "renames") -> dict[str, str]:
    """``old:new`` pairs, as ``renames`` (and Cast's spec) write them."""
    renames = {}
    for mapping in raw:
        old, sep, new = mapping.partition(":")
        if not sep or not old.strip() or not new.strip() or ":" in new:
            raise ConfigError(
                f"Invalid value {','.join(raw)!r} for configuration {key}: Invalid rename "
                f"mapping: {mapping!r} (expected old:new)"
            )
        renames[old.strip()] = new.strip()
    return renames


@key_value_variants
class ReplaceField(KeyOrValueTransformation):
    """Filter or rename fields."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey("exclude", ConfigType.LIST, [], Importance.MEDIUM, "Fields to exclude."),
            ConfigKey(
                "include",
                ConfigType.LIST,
                [],
                Importance.MEDIUM,
                "Fields to include. If specified, only these fields will be used.",
            ),
            ConfigKey(
                "renames",
                ConfigType.LIST,
                [],
                Importance.MEDIUM,
                "Field rename mappings: a list of old:new.",
            ),
            ConfigKey("blacklist", ConfigType.LIST, None, Importance.LOW, "Deprecated: exclude."),
            ConfigKey("whitelist", ConfigType.LIST, None, Importance.LOW, "Deprecated: include."),
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        self._check_variant()
        parsed = self.CONFIG_DEF.parse(configs)
        # The deprecated names count only when the new ones are not set, as in Kafka.
        exclude = parsed["exclude"] if "exclude" in configs else parsed["blacklist"] or []
        include = parsed["include"] if "include" in configs else parsed["whitelist"] or []
        self.exclude = frozenset(exclude)
        self.include = frozenset(include)
        self.renames = parse_renames(parsed["renames"])
        self._schemas = SchemaCache()

    def _keep(self, name: str) -> bool:
        return name not in self.exclude and (not self.include or name in self.include)

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        operating = self.operating_fields(record, PURPOSE)
        if operating is None:
            return record
        schema, source = operating
        # A struct's dict holds its schema's fields, in order: one comprehension serves both.
        updated = {self.renames.get(k, k): v for k, v in source.items() if self._keep(k)}
        new_schema = None if schema is None else self._schemas.get(schema, self._updated_schema)
        return self.new_record(record, new_schema, updated)

    def _updated_schema(self, schema: Schema) -> Schema:
        return struct_schema_like(
            schema,
            [
                (self.renames.get(f.name, f.name), f.schema)
                for f in schema.fields
                if self._keep(f.name)
            ],
        )
