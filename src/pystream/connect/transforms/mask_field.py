"""MaskField: replace fields' values with their type's empty value (``0``, ``""``,
``false``, an empty list or map…) or with ``replacement`` (Kafka's ``MaskField$Key``/
``MaskField$Value``).  Tombstones pass unchanged."""

from __future__ import annotations

import datetime as dt
import decimal
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
from ._util import (
    KeyOrValueTransformation,
    key_value_variants,
    non_empty_list,
)

PURPOSE = "mask fields"


def _masked(value: Any) -> Any:
    # bool before int: Python's bool is an int.
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0
    if isinstance(value, float):
        return 0.0
    if isinstance(value, decimal.Decimal):
        return decimal.Decimal(0)
    if isinstance(value, str):
        return ""
    if isinstance(value, bytes | bytearray):
        return b""
    if isinstance(value, dt.datetime):
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.date(1970, 1, 1)
    if isinstance(value, dt.time):
        return dt.time(0)
    if isinstance(value, list | tuple):
        return []
    if isinstance(value, Mapping):
        return {}
    raise ConnectError(f"Cannot mask value of type: {type(value).__name__}")


def _replaced(value: Any, replacement: str) -> Any:
    if isinstance(value, str):
        return replacement
    if isinstance(value, bool):
        raise ConnectError("Cannot mask value of type bool with custom replacement.")
    try:
        if isinstance(value, int):
            return int(replacement)
        if isinstance(value, float):
            return float(replacement)
        if isinstance(value, decimal.Decimal):
            return decimal.Decimal(replacement)
    except (ValueError, decimal.InvalidOperation):
        raise ConnectError(f"Unable to convert {replacement!r} to number") from None
    raise ConnectError(f"Cannot mask value of type {type(value).__name__} with custom replacement.")


@key_value_variants
class MaskField(KeyOrValueTransformation):
    """Mask ``fields`` with their type's empty value, or with ``replacement``."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "fields",
                ConfigType.LIST,
                documentation="Names of fields to mask.",
                importance=Importance.HIGH,
                validator=non_empty_list("fields"),
            ),
            ConfigKey(
                "replacement",
                ConfigType.STRING,
                None,
                Importance.LOW,
                "Custom value replacement, that will be applied to all 'fields' values "
                "(numeric or non-empty string values only).",
            ),
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        self._check_variant()
        parsed = self.CONFIG_DEF.parse(configs)
        self.fields = frozenset(parsed["fields"])
        self.replacement = parsed["replacement"]
        if self.replacement == "":
            raise ConfigError(
                "Invalid value '' for configuration replacement: String must be non-empty"
            )

    def _mask(self, value: Any) -> Any:
        if value is None:
            return None
        return _masked(value) if self.replacement is None else _replaced(value, self.replacement)

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        operating = self.operating_fields(record, PURPOSE)
        if operating is None:
            return record
        schema, source = operating
        updated = {k: self._mask(v) if k in self.fields else v for k, v in source.items()}
        return self.new_record(record, schema, updated)
