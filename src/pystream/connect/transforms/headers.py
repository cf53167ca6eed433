"""Header SMTs, as Kafka's: InsertHeader (``header``, ``value.literal``, typed as the
SimpleHeaderConverter reads a header), DropHeaders (``headers``) and HeaderFrom
(``fields`` → ``headers``, ``operation`` move or copy; ``$Key``/``$Value``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import (
    ConfigDef,
    ConfigError,
    ConfigKey,
    ConfigType,
    ConnectRecord,
    Header,
    Importance,
    Transformation,
)
from ..converters import SimpleHeaderConverter
from ..data import Schema
from ._util import (
    Defined,
    KeyOrValueTransformation,
    SchemaCache,
    field_or_error,
    key_value_variants,
    non_empty_list,
    struct_schema_like,
)


class InsertHeader(Defined, Transformation):
    """Add a header ``header`` whose value is the literal ``value.literal``."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "header",
                ConfigType.STRING,
                documentation="The name of the header.",
                importance=Importance.HIGH,
            ),
            ConfigKey(
                "value.literal",
                ConfigType.STRING,
                documentation="The literal value that is to be set as the header value on all "
                "records.",
                importance=Importance.HIGH,
            ),
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        parsed = self.CONFIG_DEF.parse(configs)
        # Kafka parses the literal with Values.parseString, as SimpleHeaderConverter reads.
        typed = SimpleHeaderConverter().to_connect_data("", parsed["value.literal"].encode())
        self.header = Header(parsed["header"], typed.value, typed.schema)

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        return record.new_record(headers=(*record.headers, self.header))


class DropHeaders(Defined, Transformation):
    """Remove every header whose name is in ``headers``."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "headers",
                ConfigType.LIST,
                documentation="The name of the headers to be removed.",
                importance=Importance.HIGH,
                validator=non_empty_list("headers"),
            )
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        self.names = frozenset(self.CONFIG_DEF.parse(configs)["headers"])

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        kept = tuple(h for h in record.headers if h.key not in self.names)
        if len(kept) == len(record.headers):
            return record
        return record.new_record(headers=kept)


@key_value_variants
class HeaderFrom(KeyOrValueTransformation):
    """Copy or move ``fields`` of the key/value into headers named ``headers`` (the
    n-th field into the n-th header, with the field's schema)."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "fields",
                ConfigType.LIST,
                documentation="Field names in the record whose values are to be copied or "
                "moved to headers.",
                importance=Importance.HIGH,
                validator=non_empty_list("fields"),
            ),
            ConfigKey(
                "headers",
                ConfigType.LIST,
                documentation="Header names, in the same order as the field names listed in "
                "the fields configuration property.",
                importance=Importance.HIGH,
                validator=non_empty_list("headers"),
            ),
            ConfigKey(
                "operation",
                ConfigType.STRING,
                documentation="Either move if the fields are to be moved to the headers "
                "(removed from the key/value), or copy if the fields are to be copied to the "
                "headers (retained in the key/value).",
                importance=Importance.HIGH,
            ),
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        self._check_variant()
        parsed = self.CONFIG_DEF.parse(configs)
        self.fields: list[str] = parsed["fields"]
        self.headers: list[str] = parsed["headers"]
        if len(self.fields) != len(self.headers):
            raise ConfigError(
                "'headers' config must have the same number of elements as 'fields' config."
            )
        if parsed["operation"] not in ("move", "copy"):
            raise ConfigError(
                f"Invalid value {parsed['operation']!r} for configuration operation: expected "
                "move or copy"
            )
        self.move = parsed["operation"] == "move"
        self._schemas = SchemaCache()

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        operating = self.operating_fields(record, "header " + ("move" if self.move else "copy"))
        if operating is None:
            return record
        schema, source = operating
        added = tuple(
            Header(
                header,
                source.get(name),
                None if schema is None else field_or_error(schema, name).schema,
            )
            for name, header in zip(self.fields, self.headers, strict=True)
        )
        headers = (*record.headers, *added)
        if not self.move:
            return record.new_record(headers=headers)
        moved = set(self.fields)
        value = {k: v for k, v in source.items() if k not in moved}
        new_schema = None if schema is None else self._schemas.get(schema, self._moved_schema)
        return self.new_record(record, new_schema, value).new_record(headers=headers)

    def _moved_schema(self, schema: Schema) -> Schema:
        moved = set(self.fields)
        return struct_schema_like(
            schema, [(f.name, f.schema) for f in schema.fields if f.name not in moved]
        )
