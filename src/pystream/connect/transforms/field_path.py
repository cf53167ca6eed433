"""Kafka's field paths for SMTs (KIP-821, ``field.syntax.version``): ``V1`` names one
top-level field as written; ``V2`` reads ``a.b.c`` as nested fields, with backticks
around a step that holds dots (``foo.`bar.baz```) and a backslash before a backtick
that belongs to the name.  A port of Kafka's ``SingleFieldPath``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import ConfigError, ConfigKey, ConfigType, Importance
from ..data import Field, Schema
from ._util import require_map, require_struct

VERSIONS = ("V1", "V2")

SYNTAX_VERSION_KEY = ConfigKey(
    "field.syntax.version",
    ConfigType.STRING,
    "V1",
    Importance.HIGH,
    "Defines the version of the syntax to access fields. If set to V1, then the field paths "
    "are limited to access the elements at the root level of the struct or map. If set to "
    "V2, the syntax will support accessing nested elements. To access nested elements, "
    "dotted notation is used. If dots are already included in the field name, then "
    "backtick pairs can be used to wrap field names containing dots.",
    validator=lambda v: _check_version(v),
)


def _check_version(value: str) -> None:
    if value.upper() not in VERSIONS:
        raise ConfigError(
            f"Invalid value {value!r} for configuration field.syntax.version: expected V1 or V2"
        )


def _incomplete(path: str, backtick_at: int) -> ConfigError:
    return ConfigError(
        f"Incomplete backtick pair in path: [{path}], consider adding a backslash before "
        f"backtick at position {backtick_at} to escape it"
    )


def parse_steps(path: str, version: str = "V2") -> list[str]:
    """The steps of ``path`` under ``version`` (V1: the path itself)."""
    if version.upper() == "V1":
        return [path]
    steps: list[str] = []
    idx, end = 0, len(path)
    while 0 <= idx < end:
        if path[idx] != "`":
            start = idx
            idx = path.find(".", idx)
            if idx >= 0:
                steps.append(path[start:idx])
                idx += 1
            else:
                steps.append(path[start:])
            continue
        backtick_at = idx
        idx += 1
        field: list[str] = []
        start = idx
        while True:
            idx = path.find("`", idx)
            if idx == -1:
                raise _incomplete(path, backtick_at)
            escaped = path[idx - 1] == "\\"
            if idx >= end - 1:  # the path ends with this backtick
                if escaped:
                    raise _incomplete(path, backtick_at)
                field.append(path[start:idx])
                steps.append("".join(field))
                idx += 1
                break
            if path[idx + 1] != ".":  # a backtick inside the name
                idx += 1
                continue
            if escaped:  # \` before a dot: part of the name, keep looking
                field.append(path[start : idx - 1])
                field.append("`")
                idx += 1
                start = idx
                continue
            field.append(path[start:idx])
            steps.append("".join(field))
            idx += 2  # the backtick and the dot after it
            break
    if path.endswith("."):
        steps.append("")
    return steps


class FieldPath:
    """A parsed path: the field it names in a schema, and its value in a map or struct."""

    def __init__(self, path: str, version: str) -> None:
        self.path = path
        self.steps = parse_steps(path, version)

    def field_from(self, schema: Schema) -> Field | None:
        current = schema
        for step in self.steps[:-1]:
            field = current.field(step) if current.type == "struct" else None
            if field is None:
                return None
            current = field.schema
        return current.field(self.steps[-1]) if current.type == "struct" else None

    def value_from(self, value: Mapping[str, Any] | None, schema: Schema | None) -> Any:
        """The value at the path (None where a step is missing or null); ``schema`` is the
        value's schema, or None for a schemaless map."""
        current = value
        for step in self.steps[:-1]:
            if current is None:
                return None
            current = current.get(step)
            if schema is None:
                current = None if current is None else require_map(current, "nested field access")
            else:
                field = schema.field(step)
                if field is None:
                    return None
                schema = field.schema
                if current is not None:
                    current = require_struct(schema, current, "nested field access")
        return None if current is None else current.get(self.steps[-1])
