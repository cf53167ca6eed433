"""Plugins, converters and transform chains by name, for the worker.

``pystream.connect.plugins``, ``.converters`` and ``.transforms`` (another part of
Connect) do the finding; until they are present this module falls back to the
built-in file connectors, dotted paths, and byte-array/string conversion, so the
runtime works on its own.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ..api import ConfigError, Connector, ConnectRecord, Converter
from ..data import Schema, SchemaAndValue

__all__ = ["NoTransforms", "load_connector", "make_converter", "make_transforms", "plugin_infos"]

_FALLBACK_CONNECTORS = {
    "FileStreamSource": "pystream.connect.connectors.file:FileStreamSourceConnector",
    "FileStreamSink": "pystream.connect.connectors.file:FileStreamSinkConnector",
}


def _plugins() -> Any | None:
    try:
        return importlib.import_module("pystream.connect.plugins")
    except ImportError:
        return None


def _by_path(name: str) -> Any:
    module_name, _, attr = name.partition(":") if ":" in name else name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot load {name!r}: {exc}") from None


def load_connector(name: str) -> type[Connector]:
    """The connector class ``name`` names (short name, dotted path or Kafka's)."""
    plugins = _plugins()
    if plugins is not None:
        return plugins.load_connector(name)
    short = name.rsplit(".", 1)[-1].removesuffix("Connector")
    if short in _FALLBACK_CONNECTORS:
        return _by_path(_FALLBACK_CONNECTORS[short])
    if "." in name or ":" in name:
        cls = _by_path(name)
        if isinstance(cls, type) and issubclass(cls, Connector):
            return cls
    raise ConfigError(
        f"connector.class={name!r}: no such connector; known: {', '.join(_FALLBACK_CONNECTORS)}"
    )


def plugin_infos(kind: str | None = None) -> list[dict[str, str]]:
    """``GET /connector-plugins``: ``{"class", "type", "version"}`` per plugin."""
    plugins = _plugins()
    if plugins is not None:
        return plugins.plugin_infos(kind)
    out = []
    for path in _FALLBACK_CONNECTORS.values():
        cls = _by_path(path)
        ptype = "source" if "Source" in cls.__name__ else "sink"
        if kind in (None, ptype):
            out.append(
                {
                    "class": f"{cls.__module__}.{cls.__name__}",
                    "type": ptype,
                    "version": cls.version(cls.__new__(cls)),
                }
            )
    return out


class _BytesConverter(Converter):
    """Fallback for ByteArray/String conversion until the converters module is here."""

    def __init__(self, text: bool) -> None:
        self.text = text

    def from_connect_data(self, topic: str, schema: Schema | None, value: Any) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        if self.text:
            return str(value).encode()
        raise ConfigError(f"ByteArrayConverter cannot write {type(value).__name__}")

    def to_connect_data(self, topic: str, data: bytes | None) -> SchemaAndValue:
        if data is None:
            return SchemaAndValue(None, None)
        if self.text:
            return SchemaAndValue(Schema("string", optional=True), bytes(data).decode())
        return SchemaAndValue(Schema("bytes", optional=True), bytes(data))


def make_converter(name: str, settings: Mapping[str, Any], is_key: bool) -> Converter:
    """A configured converter (``key.converter``/``value.converter``/``header.converter``)."""
    plugins = _plugins()
    if plugins is not None:
        converter = plugins.load_converter(name)()
    else:
        short = name.rsplit(".", 1)[-1]
        if short in ("StringConverter", "SimpleHeaderConverter", "JsonConverter"):
            # JSON falls back to text until the converters module is merged.
            converter = _BytesConverter(text=True)
        elif short == "ByteArrayConverter":
            converter = _BytesConverter(text=False)
        else:
            converter = _by_path(name)()
    converter.configure(dict(settings), is_key)
    return converter


class NoTransforms:
    """The chain of no transforms."""

    def apply(self, record: ConnectRecord) -> ConnectRecord | None:
        return record

    def close(self) -> None:
        return None


def make_transforms(props: Mapping[str, str]) -> Any:
    """The ``transforms=``/``predicates=`` chain of a connector's config."""
    try:
        module = importlib.import_module("pystream.connect.transforms")
    except ImportError:
        module = None
    if module is not None:
        return module.TransformationChain.from_config(props)
    if str(props.get("transforms", "")).strip():
        raise ConfigError("transforms: single message transforms are not available yet")
    return NoTransforms()
