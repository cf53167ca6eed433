"""Connect's built-in converters, as Kafka's: between Connect data and a record's bytes.

``StringConverter``, ``ByteArrayConverter``, ``JsonConverter`` (with ``schemas.enable``,
writing the ``{"schema": …, "payload": …}`` envelope exactly as Kafka's JsonConverter
does) and ``SimpleHeaderConverter``.  Kafka's Java class names are aliases for them in
:mod:`pystream.connect.plugins`, so a worker configuration written for Kafka works.

Every converter also has ``from_connect_header``/``to_connect_header`` (Kafka's
``HeaderConverter``), for ``header.converter``.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import datetime as dt
import decimal
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from .api import (
    ConfigDef,
    ConfigError,
    ConfigKey,
    ConfigType,
    ConnectError,
    Converter,
    Importance,
)
from .data import (
    DATE_NAME,
    DECIMAL_NAME,
    TIME_NAME,
    TIMESTAMP_NAME,
    Schema,
    SchemaAndValue,
    decimal_schema,
)

__all__ = [
    "ByteArrayConverter",
    "JsonConverter",
    "SimpleHeaderConverter",
    "StringConverter",
]

_OPTIONAL_STRING = Schema("string", optional=True)
_OPTIONAL_BYTES = Schema("bytes", optional=True)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_DATE = _EPOCH.date()
_MS_PER_DAY = 86_400_000


class _HeaderMethods:
    """Kafka's ``HeaderConverter`` side: a header value converts as a record value does."""

    def from_connect_header(
        self, topic: str, header_key: str, schema: Schema | None, value: Any
    ) -> bytes | None:
        return self.from_connect_data(topic, schema, value)  # type: ignore[attr-defined]

    def to_connect_header(self, topic: str, header_key: str, data: bytes | None) -> SchemaAndValue:
        return self.to_connect_data(topic, data)  # type: ignore[attr-defined]


# -- StringConverter ----------------------------------------------------------------


class StringConverter(_HeaderMethods, Converter):
    """Values as strings in ``converter.encoding`` (default UTF-8).  Reading always gives
    an optional string schema; writing turns any value into its string form."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "converter.encoding",
                ConfigType.STRING,
                "UTF8",
                Importance.HIGH,
                "The name of the Java (or Python) character set to encode and decode with.",
            )
        ]
    )

    def __init__(self) -> None:
        self.encoding = "utf-8"

    def config(self) -> ConfigDef:
        return self.CONFIG_DEF

    def configure(self, configs: Mapping[str, Any], is_key: bool) -> None:
        encoding = str(configs.get("converter.encoding", "UTF8"))
        try:
            # Python's codec registry knows Java's names (UTF8, UTF-16BE, ISO-8859-1…).
            self.encoding = codecs.lookup(encoding).name
        except LookupError:
            raise ConfigError(
                f"Invalid value {encoding!r} for configuration converter.encoding: "
                "unknown character set (try UTF-8)"
            ) from None

    def from_connect_data(self, topic: str, schema: Schema | None, value: Any) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, str):
            text = value
        elif isinstance(value, bool):
            text = "true" if value else "false"  # Java's Boolean.toString
        elif isinstance(value, bytes | bytearray | memoryview):
            text = bytes(value).decode(self.encoding, errors="replace")
        else:
            text = str(value)
        return text.encode(self.encoding)

    def to_connect_data(self, topic: str, data: bytes | None) -> SchemaAndValue:
        if data is None:
            return SchemaAndValue(_OPTIONAL_STRING, None)
        try:
            return SchemaAndValue(_OPTIONAL_STRING, bytes(data).decode(self.encoding))
        except UnicodeDecodeError as exc:
            raise ConnectError(
                f"StringConverter could not decode a record of topic {topic} as "
                f"{self.encoding}: {exc}"
            ) from None


# -- ByteArrayConverter -------------------------------------------------------------


class ByteArrayConverter(_HeaderMethods, Converter):
    """Bytes through untouched: the schema must be absent or ``bytes``."""

    def from_connect_data(self, topic: str, schema: Schema | None, value: Any) -> bytes | None:
        if schema is not None and schema.type != "bytes":
            raise ConnectError(f"Invalid schema type for ByteArrayConverter: {schema.type}")
        if value is None:
            return None
        if isinstance(value, bytes):
            return value
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        raise ConnectError(
            f"ByteArrayConverter is not compatible with objects of type {type(value).__name__}: "
            "it passes bytes only (use StringConverter or JsonConverter for other values)"
        )

    def to_connect_data(self, topic: str, data: bytes | None) -> SchemaAndValue:
        return SchemaAndValue(_OPTIONAL_BYTES, None if data is None else bytes(data))


# -- JsonConverter ------------------------------------------------------------------

# Kafka's JSON type names differ from the schema type names only for the floats.
_TO_JSON_TYPE = {"float32": "float", "float64": "double"}
_FROM_JSON_TYPE = {"float": "float32", "double": "float64", **{t: t for t in (
    "boolean", "int8", "int16", "int32", "int64", "string", "bytes", "array", "map", "struct"
)}}  # fmt: skip
_INT_BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}
_DECODER = json.JSONDecoder(parse_float=decimal.Decimal)


class _NumericDecimal:
    """A Decimal to be written as a JSON number (``decimal.format=NUMERIC``): json.dumps
    cannot emit a raw number, so it is written as a marked string and unquoted after."""

    __slots__ = ("text",)

    def __init__(self, value: decimal.Decimal) -> None:
        self.text = format(value, "f") if value.is_finite() else "null"


def _unscaled_bytes(value: decimal.Decimal, scale: int) -> bytes:
    """Kafka's ``Decimal.fromLogical``: the unscaled value, big-endian two's complement,
    as short as Java's ``BigInteger.toByteArray``."""
    try:
        scaled = value.scaleb(scale)
        unscaled = int(scaled)
    except (decimal.InvalidOperation, OverflowError, ValueError):
        raise ConnectError(f"Invalid Decimal value {value!r}") from None
    if scaled != unscaled:
        raise ConnectError(
            f"Decimal {value} has more digits after the point than the schema's scale {scale}"
        )
    bits = unscaled.bit_length() if unscaled >= 0 else (~unscaled).bit_length()
    return unscaled.to_bytes(bits // 8 + 1, "big", signed=True)


def _scale(schema: Schema) -> int:
    try:
        return int((schema.parameters or {})["scale"])
    except (KeyError, ValueError):
        raise ConnectError(
            "Invalid Decimal schema: its parameters need an integer 'scale'"
        ) from None


class JsonConverter(_HeaderMethods, Converter):
    """JSON as Kafka's JsonConverter writes it.

    With ``schemas.enable=true`` (the default) every message is the envelope
    ``{"schema": <schema>, "payload": <value>}``; with ``false`` it is the value alone and
    reading gives schemaless values (objects → dicts, integers → int, decimals → float).
    ``decimal.format`` is ``BASE64`` (Kafka's default) or ``NUMERIC``;
    ``replace.null.with.default`` (default true) writes and reads a null field as its
    schema's default.
    """

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "schemas.enable",
                ConfigType.BOOLEAN,
                True,
                Importance.HIGH,
                "Include schemas within each of the serialized values and keys.",
            ),
            ConfigKey(
                "schemas.cache.size",
                ConfigType.INT,
                1000,
                Importance.HIGH,
                "The maximum number of schemas that can be cached in this converter instance.",
            ),
            ConfigKey(
                "decimal.format",
                ConfigType.STRING,
                "BASE64",
                Importance.LOW,
                "How to write Decimal values: BASE64 (bytes) or NUMERIC (a JSON number).",
                validator=lambda v: _one_of("decimal.format", v, ("BASE64", "NUMERIC")),
            ),
            ConfigKey(
                "replace.null.with.default",
                ConfigType.BOOLEAN,
                True,
                Importance.LOW,
                "Whether a null field with a schema default is written and read as the default.",
            ),
        ]
    )

    def __init__(self) -> None:
        self.schemas_enable = True
        self.decimal_numeric = False
        self.replace_null_with_default = True
        self._cache_size = 1000
        self._schema_cache: dict[Schema, dict[str, Any]] = {}
        self._last_schema: tuple[Schema, dict[str, Any]] | None = None
        self._last_head: tuple[Schema | None, str] | None = None
        # Parsed schemas by the repr of their JSON (repr is C-fast and tells 1, "1", 1.0
        # and true apart): a topic's records share one schema.
        self._connect_schema_cache: dict[str, Schema | None] = {}
        self._last_envelope: tuple[str, Schema | None, _Plan | None] | None = None
        # Unique per instance, so that no user string can look like a numeric marker.
        self._marker = "\x00" + os.urandom(6).hex() + ":"
        self._escaped_marker = json.dumps(self._marker)[1:-1]
        self._marker_re = re.compile('"' + re.escape(self._escaped_marker) + r'([^"\\]*)\\u0000"')

    def config(self) -> ConfigDef:
        return self.CONFIG_DEF

    def configure(self, configs: Mapping[str, Any], is_key: bool) -> None:
        parsed = self.CONFIG_DEF.parse(configs)
        self.schemas_enable = parsed["schemas.enable"]
        self.decimal_numeric = str(parsed["decimal.format"]).upper() == "NUMERIC"
        self.replace_null_with_default = parsed["replace.null.with.default"]
        self._cache_size = parsed["schemas.cache.size"]
        self._schema_cache.clear()
        self._last_schema = None
        self._last_head = None
        self._connect_schema_cache.clear()
        self._last_envelope = None

    # -- Connect → JSON

    def from_connect_data(self, topic: str, schema: Schema | None, value: Any) -> bytes | None:
        if schema is None and value is None:
            return None
        text = self._dumps(self._to_json(schema, value))
        if self.schemas_enable:
            text = self._envelope_head(schema) + text + "}"
        return text.encode()

    def _dumps(self, node: Any) -> str:
        text = json.dumps(
            node, ensure_ascii=False, separators=(",", ":"), default=self._json_default
        )
        if self._escaped_marker in text:  # a NUMERIC decimal was written
            text = self._marker_re.sub(r"\1", text)
        return text

    def _envelope_head(self, schema: Schema | None) -> str:
        """'{"schema":<schema>,"payload":', written once for a run of records that share
        one schema object."""
        last = self._last_head
        if last is not None and last[0] is schema:
            return last[1]
        head = '{"schema":' + self._dumps(self.as_json_schema(schema)) + ',"payload":'
        self._last_head = (schema, head)
        return head

    def _json_default(self, value: Any) -> Any:
        if isinstance(value, _NumericDecimal):
            return self._marker + value.text + "\x00"
        raise TypeError(f"not JSON serializable: {type(value).__name__}")

    def as_json_schema(self, schema: Schema | None) -> dict[str, Any] | None:
        """``schema`` as Kafka's JSON schema (``{"type": "int32", "optional": false}``…)."""
        if schema is None:
            return None
        # Records of a topic share one schema object: skip hashing it (recursive).
        last = self._last_schema
        if last is not None and last[0] is schema:
            return last[1]
        cached = self._schema_cache.get(schema)
        if cached is not None:
            self._last_schema = (schema, cached)
            return cached
        kind = schema.type
        node: dict[str, Any] = {"type": _TO_JSON_TYPE.get(kind, kind)}
        if kind == "array":
            node["items"] = self.as_json_schema(schema.value_schema)
        elif kind == "map":
            node["keys"] = self.as_json_schema(schema.key_schema)
            node["values"] = self.as_json_schema(schema.value_schema)
        elif kind == "struct":
            # Kafka appends "field" after the field's own schema keys.
            node["fields"] = [
                {**self.as_json_schema(f.schema), "field": f.name}  # type: ignore[dict-item]
                for f in schema.fields
            ]
        node["optional"] = schema.optional
        if schema.name is not None:
            node["name"] = schema.name
        if schema.version is not None:
            node["version"] = schema.version
        if schema.doc is not None:
            node["doc"] = schema.doc
        if schema.parameters is not None:
            node["parameters"] = dict(schema.parameters)
        if schema.default is not None:
            node["default"] = self._to_json(schema, schema.default)
        if len(self._schema_cache) >= self._cache_size:
            self._schema_cache.clear()
        self._schema_cache[schema] = node
        self._last_schema = (schema, node)
        return node

    def _to_json(self, schema: Schema | None, value: Any) -> Any:
        if value is None:
            if schema is None:
                return None
            if schema.default is not None and self.replace_null_with_default:
                return self._to_json(schema, schema.default)
            if schema.optional:
                return None
            raise ConnectError(
                "Conversion error: null value for field that is required and has no default value"
            )
        if schema is None:
            return self._schemaless_to_json(value)
        if schema.name is not None and schema.name in _LOGICAL_NAMES:
            return self._logical_to_json(schema, value)
        kind = schema.type
        if kind == "string":
            if isinstance(value, str):
                return value
        elif kind in _INT_BITS:
            if isinstance(value, int) and not isinstance(value, bool):
                limit = 1 << (_INT_BITS[kind] - 1)
                if -limit <= value < limit:
                    return value
                raise ConnectError(f"Invalid value {value} for {kind}: out of range")
        elif kind == "boolean":
            if isinstance(value, bool):
                return value
        elif kind in ("float32", "float64"):
            if isinstance(value, float | int) and not isinstance(value, bool):
                return float(value)
        elif kind == "bytes":
            if isinstance(value, bytes | bytearray | memoryview):
                return base64.b64encode(value).decode("ascii")
        elif kind == "array":
            if isinstance(value, list | tuple):
                items = schema.value_schema
                return [self._to_json(items, item) for item in value]
        elif kind == "map":
            if isinstance(value, Mapping):
                keys, values = schema.key_schema, schema.value_schema
                if keys is not None and keys.type == "string":
                    return {
                        str(self._to_json(keys, k)): self._to_json(values, v)
                        for k, v in value.items()
                    }
                return [
                    [self._to_json(keys, k), self._to_json(values, v)] for k, v in value.items()
                ]
        elif kind == "struct":
            if isinstance(value, Mapping):
                # A C-level subset test of the keys (the schema's own index of its fields).
                if not value.keys() <= schema._by_name.keys():
                    extra = [key for key in value if schema.field(key) is None]
                    raise ConnectError(
                        f"Invalid struct value: {', '.join(map(repr, extra))} is not a field of "
                        f"its schema (fields: {', '.join(f.name for f in schema.fields)})"
                    )
                return {f.name: self._to_json(f.schema, value.get(f.name)) for f in schema.fields}
        raise ConnectError(f"Invalid type for {kind.upper()}: {type(value).__name__}")

    def _schemaless_to_json(self, value: Any) -> Any:
        if isinstance(value, str | bool | int) or value is None:
            return value
        if isinstance(value, float):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return base64.b64encode(value).decode("ascii")
        if isinstance(value, list | tuple):
            return [self._schemaless_to_json(item) for item in value]
        if isinstance(value, Mapping):
            if all(isinstance(k, str) for k in value):
                return {k: self._schemaless_to_json(v) for k, v in value.items()}
            return [
                [self._schemaless_to_json(k), self._schemaless_to_json(v)] for k, v in value.items()
            ]
        if isinstance(value, decimal.Decimal):
            return _NumericDecimal(value)
        raise ConnectError(
            f"Python type {type(value).__name__} does not have a corresponding schema type: "
            "give the value a schema"
        )

    def _logical_to_json(self, schema: Schema, value: Any) -> Any:
        name = schema.name
        if name == DECIMAL_NAME:
            if isinstance(value, int) and not isinstance(value, bool):
                value = decimal.Decimal(value)
            if not isinstance(value, decimal.Decimal):
                raise ConnectError(
                    f"Invalid type for Decimal, expected Decimal but was {type(value).__name__}"
                )
            if self.decimal_numeric:
                return _NumericDecimal(value)
            return base64.b64encode(_unscaled_bytes(value, _scale(schema))).decode("ascii")
        if name == DATE_NAME:
            if isinstance(value, dt.datetime):
                value = value.date()
            if isinstance(value, dt.date):
                return (value - _EPOCH_DATE).days
        elif name == TIME_NAME:
            if isinstance(value, dt.time):
                return (
                    (value.hour * 60 + value.minute) * 60 + value.second
                ) * 1000 + value.microsecond // 1000
        elif name == TIMESTAMP_NAME:
            if isinstance(value, dt.datetime):
                if value.tzinfo is None:  # naive: taken as UTC, as Connect's Timestamp is
                    value = value.replace(tzinfo=dt.UTC)
                return (value - _EPOCH) // dt.timedelta(milliseconds=1)
        # Already the base type (days, ms): passed through after the base type's check.
        if isinstance(value, int) and not isinstance(value, bool):
            return self._to_json(Schema(schema.type), value)
        kind = name.rsplit(".", 1)[-1]
        raise ConnectError(
            f"Invalid type for {kind}, expected a {_LOGICAL_PYTHON[name]} but was "
            f"{type(value).__name__}"
        )

    # -- JSON → Connect

    def to_connect_data(self, topic: str, data: bytes | None) -> SchemaAndValue:
        if data is None or len(data) == 0:
            return SchemaAndValue(None, None)
        try:
            text = bytes(data).decode()
            if self.schemas_enable:
                same = self._with_last_schema(text)
                if same is not None:
                    return same
            # Decimals keep every digit until the schema says what the number is.
            node = _DECODER.decode(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConnectError(
                f"Converting byte[] to Kafka Connect data failed due to serialization error: {exc}"
            ) from None
        if not self.schemas_enable:
            return SchemaAndValue(None, self._to_connect(None, node))
        if not (
            isinstance(node, dict) and len(node) == 2 and "schema" in node and "payload" in node
        ):
            raise ConnectError(
                'JsonConverter with schemas.enable requires "schema" and "payload" fields and '
                "may not contain additional fields. If you are trying to deserialize plain "
                "JSON data, set schemas.enable=false in your converter configuration."
            )
        schema_node = node["schema"]
        key = repr(schema_node)
        try:
            schema = self._connect_schema_cache[key]
        except KeyError:
            schema = self.as_connect_schema(schema_node)
            if len(self._connect_schema_cache) >= self._cache_size:
                self._connect_schema_cache.clear()
            self._connect_schema_cache[key] = schema
        self._remember_envelope(text, schema)
        return SchemaAndValue(schema, self._to_connect(schema, node["payload"]))

    # Kafka's JsonConverter writes '{"schema":<S>,"payload":<P>}' (other producers, e.g.
    # Python's json.dumps, put spaces in).  When a message starts with the previous one's
    # '{"schema":<S>,"payload":' text, spaces and all, its schema is <S> (a complete JSON
    # value parses one way only): read just the payload.  Anything else takes the general
    # path.
    _ENVELOPE_START = re.compile(r'\{[ \t\n\r]*"schema"[ \t\n\r]*:[ \t\n\r]*')
    _PAYLOAD_KEY = re.compile(r'[ \t\n\r]*,[ \t\n\r]*"payload"[ \t\n\r]*:[ \t\n\r]*')

    def _with_last_schema(self, text: str) -> SchemaAndValue | None:
        last = self._last_envelope
        if last is None or not text.startswith(last[0]):
            return None
        prefix, schema, plan = last
        if plan is not None:
            # A struct of plain fields: orjson reads the payload, and any value that is not
            # exactly the field's JSON type sends the message down the exact path below.
            body = text[len(prefix) :].rstrip()
            if body.endswith("}"):
                try:
                    payload = orjson.loads(body[:-1])
                except orjson.JSONDecodeError:
                    payload = None
                if type(payload) is dict:
                    value = _apply_plan(plan, payload)
                    if value is not None:
                        return SchemaAndValue(schema, value)
        try:
            payload, end = _DECODER.raw_decode(text, len(prefix))
        except ValueError:
            return None  # the general path says what is wrong
        if text[end:].strip() != "}":
            return None  # more keys: the general path says what is wrong
        return SchemaAndValue(schema, self._to_connect(schema, payload))

    def _remember_envelope(self, text: str, schema: Schema | None) -> None:
        start = self._ENVELOPE_START.match(text)
        if start is None:
            return
        try:
            _, end = _DECODER.raw_decode(text, start.end())
        except ValueError:
            return
        payload_key = self._PAYLOAD_KEY.match(text, end)
        if payload_key is not None:
            self._last_envelope = (text[: payload_key.end()], schema, _plan(schema))

    def as_connect_schema(self, node: Any) -> Schema | None:
        """Kafka's JSON schema (as parsed JSON) as a :class:`Schema`."""
        if node is None:
            return None
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            raise ConnectError("Schema must contain 'type' field")
        json_type = node["type"]
        kind = _FROM_JSON_TYPE.get(json_type)
        if kind is None:
            raise ConnectError(f"Unknown schema type: {json_type}")
        parts: dict[str, Any] = {}
        if kind == "array":
            if node.get("items") is None:
                raise ConnectError("Array schema did not specify the element type")
            parts["value_schema"] = self.as_connect_schema(node["items"])
        elif kind == "map":
            if "keys" not in node:
                raise ConnectError("Map schema did not specify the key type")
            if "values" not in node:
                raise ConnectError("Map schema did not specify the value type")
            parts["key_schema"] = self.as_connect_schema(node["keys"])
            parts["value_schema"] = self.as_connect_schema(node["values"])
        elif kind == "struct":
            fields = node.get("fields")
            if not isinstance(fields, list):
                raise ConnectError('Struct schema\'s "fields" argument is not an array.')
            pairs = []
            for field in fields:
                if not isinstance(field, dict) or not isinstance(field.get("field"), str):
                    raise ConnectError("Struct schema's field name not specified properly")
                pairs.append((field["field"], self.as_connect_schema(field)))
            parts["fields"] = Schema.struct(pairs).fields
        version = node.get("version")
        params = node.get("parameters")
        if isinstance(params, dict):
            if not all(isinstance(v, str) for v in params.values()):
                raise ConnectError("Schema parameters must have string values.")
        else:
            params = None
        name = node.get("name")
        doc = node.get("doc")
        schema = Schema(
            kind,
            optional=node.get("optional") is True,
            name=name if isinstance(name, str) else None,
            version=version if isinstance(version, int) and not isinstance(version, bool) else None,
            doc=doc if isinstance(doc, str) else None,
            parameters=params,
            **parts,
        )
        if node.get("default") is not None:
            default = self._to_connect(schema, node["default"])
            schema = Schema(
                kind,
                optional=schema.optional,
                default=default,
                name=schema.name,
                version=schema.version,
                doc=schema.doc,
                parameters=schema.parameters,
                **parts,
            )
        return schema

    def _to_connect(self, schema: Schema | None, node: Any) -> Any:
        if schema is None:
            return _schemaless_to_connect(node)
        if node is None:
            if schema.default is not None and self.replace_null_with_default:
                return schema.default
            if schema.optional:
                return None
            raise ConnectError(f"Invalid null value for required {schema.type.upper()} field")
        if schema.name is not None and schema.name in _LOGICAL_NAMES:
            return _logical_to_connect(schema, node)
        kind = schema.type
        if kind == "string":
            if isinstance(node, str):
                return node
        elif kind in _INT_BITS:
            if isinstance(node, int) and not isinstance(node, bool):
                return node
            if isinstance(node, decimal.Decimal):
                return int(node)  # Jackson's intValue() truncates
        elif kind in ("float32", "float64"):
            if isinstance(node, int | decimal.Decimal) and not isinstance(node, bool):
                return float(node)
        elif kind == "boolean":
            if isinstance(node, bool):
                return node
        elif kind == "bytes":
            if isinstance(node, str):
                return _b64decode(node, "bytes field")
        elif kind == "array":
            if isinstance(node, list):
                return [self._to_connect(schema.value_schema, item) for item in node]
        elif kind == "map":
            keys, values = schema.key_schema, schema.value_schema
            if keys is not None and keys.type == "string":
                if not isinstance(node, dict):
                    raise ConnectError(
                        "Maps with string fields should be encoded as JSON objects, but found "
                        + _json_type(node)
                    )
                return {k: self._to_connect(values, v) for k, v in node.items()}
            if not isinstance(node, list):
                raise ConnectError(
                    "Maps with non-string fields should be encoded as JSON array of tuples, "
                    "but found " + _json_type(node)
                )
            result = {}
            for entry in node:
                if not isinstance(entry, list) or len(entry) != 2:
                    raise ConnectError(f"Found invalid map entry instead of array tuple: {entry!r}")
                result[self._to_connect(keys, entry[0])] = self._to_connect(values, entry[1])
            return result
        elif kind == "struct":
            if not isinstance(node, dict):
                raise ConnectError(
                    "Structs should be encoded as JSON objects, but found " + _json_type(node)
                )
            return {f.name: self._to_connect(f.schema, node.get(f.name)) for f in schema.fields}
        raise ConnectError(f"Invalid JSON {_json_type(node)} for a {kind} value: {node!r}")


def _schemaless_to_connect(node: Any) -> Any:
    # Kafka: integers → int64, other numbers → float64, objects → maps.
    if isinstance(node, decimal.Decimal):
        return float(node)
    if isinstance(node, list):
        return [_schemaless_to_connect(item) for item in node]
    if isinstance(node, dict):
        return {k: _schemaless_to_connect(v) for k, v in node.items()}
    return node


def _logical_to_connect(schema: Schema, node: Any) -> Any:
    name = schema.name
    if name == DECIMAL_NAME:
        if isinstance(node, int | decimal.Decimal) and not isinstance(node, bool):
            return decimal.Decimal(node)
        if isinstance(node, str):
            unscaled = int.from_bytes(_b64decode(node, "Decimal field"), "big", signed=True)
            return decimal.Decimal(unscaled).scaleb(-_scale(schema))
        raise ConnectError(
            "Invalid type for Decimal, underlying representation should be numeric or bytes "
            f"but was {_json_type(node)}"
        )
    if not isinstance(node, int) or isinstance(node, bool):
        kind = name.rsplit(".", 1)[-1]  # type: ignore[union-attr]
        raise ConnectError(
            f"Invalid type for {kind}, underlying representation should be integer but was "
            + _json_type(node)
        )
    if name == DATE_NAME:
        return _EPOCH_DATE + dt.timedelta(days=node)
    if name == TIME_NAME:
        if not 0 <= node < _MS_PER_DAY:
            raise ConnectError(f"Time values must be within one day (0..86399999 ms): {node}")
        return (dt.datetime.min + dt.timedelta(milliseconds=node)).time()
    return _EPOCH + dt.timedelta(milliseconds=node)


_LOGICAL_NAMES = frozenset((DECIMAL_NAME, DATE_NAME, TIME_NAME, TIMESTAMP_NAME))

# A struct of plain fields read without the general converter: (field name, the one
# Python type its JSON value must have, whether null is its value, and for Timestamp and
# Date fields the function making the logical value from that int, else None).
_Plan = tuple[tuple[str, type, bool, Callable[[int], Any] | None], ...]
_PLAIN_TYPES: dict[str, type] = {
    "string": str,
    "boolean": bool,
    "int8": int,
    "int16": int,
    "int32": int,
    "int64": int,
    "float32": float,
    "float64": float,
}
# Logical types whose JSON is a plain int, as _logical_to_connect reads them.
_PLAN_LOGICAL: dict[tuple[str, str], Callable[[int], Any]] = {
    # (timedelta's positional milliseconds: quicker than the keyword, the same value)
    (TIMESTAMP_NAME, "int64"): lambda ms: _EPOCH + dt.timedelta(0, 0, 0, ms),
    (DATE_NAME, "int32"): lambda days: _EPOCH_DATE + dt.timedelta(days=days),
}


def _plan(schema: Schema | None) -> _Plan | None:
    """The plan for a struct schema whose fields are all plain or Timestamp/Date (no
    other logical types, no nested values, no defaults for null), else None."""
    if schema is None or schema.type != "struct" or schema.name in _LOGICAL_NAMES:
        return None
    plan = []
    for field in schema.fields:
        kind = _PLAIN_TYPES.get(field.schema.type)
        logical = None
        if field.schema.name in _LOGICAL_NAMES:
            logical = _PLAN_LOGICAL.get((field.schema.name, field.schema.type))
            if logical is None:
                return None
        if kind is None:
            return None
        nullable = field.schema.optional and field.schema.default is None
        plan.append((field.name, kind, nullable, logical))
    return tuple(plan)


def _apply_plan(plan: _Plan, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The struct value as ``_to_connect`` would make it, or None if any value is not
    exactly its field's plain JSON type (the caller then takes the general path)."""
    out = {}
    for name, kind, nullable, logical in plan:
        value = payload.get(name)
        found = type(value)
        if found is kind:
            if logical is not None:
                try:
                    value = logical(value)
                except OverflowError:
                    return None  # the general path says what is wrong
            out[name] = value
        elif value is None and nullable:
            out[name] = None
        elif kind is float and found is int:
            out[name] = float(value)
        else:
            return None
    return out


_LOGICAL_PYTHON = {
    DECIMAL_NAME: "decimal.Decimal",
    DATE_NAME: "datetime.date",
    TIME_NAME: "datetime.time",
    TIMESTAMP_NAME: "datetime.datetime",
}


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConnectError(f"Invalid {what}: not base64: {text[:40]!r}") from None


def _json_type(node: Any) -> str:
    if node is None:
        return "NULL"
    if isinstance(node, bool):
        return "BOOLEAN"
    if isinstance(node, int | float | decimal.Decimal):
        return "NUMBER"
    if isinstance(node, str):
        return "STRING"
    if isinstance(node, list):
        return "ARRAY"
    return "OBJECT"


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if str(value).upper() not in allowed:
        raise ConfigError(
            f"Invalid value {value!r} for configuration {key}: expected one of {', '.join(allowed)}"
        )


# -- SimpleHeaderConverter ----------------------------------------------------------

_INT_RE = re.compile(r"[+-]?\d+")


class SimpleHeaderConverter(_HeaderMethods, Converter):
    """Header values as their string form (UTF-8); reading infers the type as Kafka's
    ``Values.parseString`` does for the simple cases: ``true``/``false`` → boolean,
    integers → the smallest of int8…int64, other numbers → float64, else a string."""

    def from_connect_data(self, topic: str, schema: Schema | None, value: Any) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, bool):
            return b"true" if value else b"false"
        if isinstance(value, bytes | bytearray | memoryview):
            return base64.b64encode(value)  # Kafka's Values.convertToString for bytes
        return str(value).encode()

    def to_connect_data(self, topic: str, data: bytes | None) -> SchemaAndValue:
        if data is None:
            return SchemaAndValue(None, None)
        try:
            text = bytes(data).decode()
        except UnicodeDecodeError:
            return SchemaAndValue(Schema("bytes"), bytes(data))
        stripped = text.strip()
        if stripped in ("true", "false"):
            return SchemaAndValue(Schema("boolean"), stripped == "true")
        if _INT_RE.fullmatch(stripped):
            number = int(stripped)
            for kind, bits in _INT_BITS.items():
                if -(1 << (bits - 1)) <= number < 1 << (bits - 1):
                    return SchemaAndValue(Schema(kind), number)
            return SchemaAndValue(decimal_schema(0), decimal.Decimal(number))  # beyond int64
        if stripped and stripped[0] in "+-.0123456789":
            try:
                number_f = float(stripped)
            except ValueError:
                pass
            else:
                if math.isfinite(number_f):
                    return SchemaAndValue(Schema("float64"), number_f)
        return SchemaAndValue(Schema("string"), text)
