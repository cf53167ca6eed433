"""InsertField: add the record's topic, partition, offset, timestamp or a static value as
fields of the key or value (Kafka's ``InsertField$Key``/``InsertField$Value``).

A field name ending in ``!`` is required in the updated schema, ``?`` (or nothing)
optional.  Tombstones (a null key/value) pass unchanged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..api import (
    ConfigDef,
    ConfigError,
    ConfigKey,
    ConfigType,
    ConnectError,
    ConnectRecord,
    Importance,
    SinkRecord,
)
from ..data import Schema, timestamp_schema
from ._util import (
    KeyOrValueTransformation,
    SchemaCache,
    key_value_variants,
    struct_schema_like,
)

PURPOSE = "field insertion"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class InsertionSpec:
    name: str
    optional: bool

    @staticmethod
    def parse(spec: str | None) -> InsertionSpec | None:
        if not spec:
            return None
        if spec.endswith("?"):
            return InsertionSpec(spec[:-1], True)
        if spec.endswith("!"):
            return InsertionSpec(spec[:-1], False)
        return InsertionSpec(spec, True)


def _field_key(name: str, doc: str) -> ConfigKey:
    return ConfigKey(name, ConfigType.STRING, None, Importance.MEDIUM, doc)


_SUFFIX = " Suffix with ! to make this a required field, or ? to keep it optional (the default)."


@key_value_variants
class InsertField(KeyOrValueTransformation):
    """Insert fields from the record's metadata or a static value (``topic.field``,
    ``partition.field``, ``offset.field`` (sink records only), ``timestamp.field``,
    ``static.field`` with ``static.value``)."""

    CONFIG_DEF = ConfigDef(
        [
            _field_key("topic.field", "Field name for Kafka topic." + _SUFFIX),
            _field_key("partition.field", "Field name for Kafka partition." + _SUFFIX),
            _field_key(
                "offset.field", "Field name for Kafka offset - only for sink connectors." + _SUFFIX
            ),
            _field_key("timestamp.field", "Field name for record timestamp." + _SUFFIX),
            _field_key("static.field", "Field name for static data field." + _SUFFIX),
            _field_key("static.value", "Static field value, if field name configured."),
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        self._check_variant()
        parsed = self.CONFIG_DEF.parse(configs)
        self.topic_field = InsertionSpec.parse(parsed["topic.field"])
        self.partition_field = InsertionSpec.parse(parsed["partition.field"])
        self.offset_field = InsertionSpec.parse(parsed["offset.field"])
        self.timestamp_field = InsertionSpec.parse(parsed["timestamp.field"])
        self.static_field = InsertionSpec.parse(parsed["static.field"])
        self.static_value = parsed["static.value"]
        if not any(
            (
                self.topic_field,
                self.partition_field,
                self.offset_field,
                self.timestamp_field,
                self.static_field,
            )
        ):
            raise ConfigError(
                "No field insertion configured: set topic.field, partition.field, "
                "offset.field, timestamp.field or static.field"
            )
        if self.static_field is not None and self.static_value is None:
            raise ConfigError(
                f"Invalid value None for configuration static.value: No value specified for "
                f"static field: {self.static_field.name}"
            )
        self._schemas = SchemaCache()

    def _offset(self, record: ConnectRecord) -> int:
        if not isinstance(record, SinkRecord):
            raise ConnectError(
                f"Only SinkRecord supported for [{PURPOSE}] with offset.field, found: "
                f"{type(record).__name__}"
            )
        return record.kafka_offset

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        operating = self.operating_fields(record, PURPOSE)
        if operating is None:
            return record
        schema, source = operating
        updated = dict(source)
        schemaless = schema is None
        if self.topic_field is not None:
            updated[self.topic_field.name] = record.topic
        if self.partition_field is not None and record.kafka_partition is not None:
            updated[self.partition_field.name] = record.kafka_partition
        if self.offset_field is not None:
            updated[self.offset_field.name] = self._offset(record)
        if self.timestamp_field is not None and record.timestamp is not None:
            updated[self.timestamp_field.name] = (
                record.timestamp
                if schemaless
                else _EPOCH + dt.timedelta(milliseconds=record.timestamp)
            )
        if self.static_field is not None:
            updated[self.static_field.name] = self.static_value
        if schemaless:
            return self.new_record(record, None, updated)
        new_schema = self._schemas.get(schema, self._updated_schema)
        # Fields absent above (a record without partition or timestamp) are null.
        return self.new_record(
            record, new_schema, {f.name: updated.get(f.name) for f in new_schema.fields}
        )

    def _updated_schema(self, schema: Schema) -> Schema:
        fields = [(f.name, f.schema) for f in schema.fields]
        for spec, kind, make in (
            (self.topic_field, "string", None),
            (self.partition_field, "int32", None),
            (self.offset_field, "int64", None),
            (self.timestamp_field, None, timestamp_schema),
            (self.static_field, "string", None),
        ):
            if spec is not None:
                field_schema = (
                    make(optional=spec.optional)
                    if make is not None
                    else Schema(kind, optional=spec.optional)  # type: ignore[arg-type]
                )
                fields.append((spec.name, field_schema))
        return struct_schema_like(schema, fields)
