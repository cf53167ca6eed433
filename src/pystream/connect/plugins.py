"""Finding Connect plugins (connectors, converters, transforms, predicates) by name.

A name may be a built-in's short name (``FileStreamSource``, ``JsonConverter``,
``InsertField$Value``), Kafka's Java class name for it
(``org.apache.kafka.connect.json.JsonConverter``), an entry point's name in the group
for its kind (``pystream.connectors``, ``pystream.converters``, ``pystream.transforms``,
``pystream.predicates``) or the short name of the class it points to, or a dotted path
``pkg.mod.Class`` / ``pkg.mod:Class`` (``Class$Inner`` for a nested class, as Java
writes ``InsertField$Value``).

The built-ins are a table of module paths imported only when asked for, so a built-in
whose module is absent (or fails to import) does not hide the others; pystream's
``pyproject.toml`` registers the same classes as entry points, so an installed
pystream is found the way a third-party plugin is.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from dataclasses import dataclass
from typing import Any, TypeVar

from ..version import __version__
from .api import (
    ConfigError,
    Connector,
    Converter,
    Predicate,
    SinkConnector,
    SourceConnector,
    Transformation,
)

__all__ = [
    "ENTRY_POINT_GROUPS",
    "load_connector",
    "load_converter",
    "load_predicate",
    "load_transformation",
    "plugin_infos",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

ENTRY_POINT_GROUPS = {
    "connector": "pystream.connectors",
    "converter": "pystream.converters",
    "transformation": "pystream.transforms",
    "predicate": "pystream.predicates",
}
_BASES: dict[str, type] = {
    "connector": Connector,
    "converter": Converter,
    "transformation": Transformation,
    "predicate": Predicate,
}
_KIND_WORD = {
    "connector": "Connector",
    "converter": "Converter",
    "transformation": "Transformation",
    "predicate": "Predicate",
}


@dataclass(frozen=True)
class _Builtin:
    kind: str
    module: str
    attr: str  # "Class" or "Class.Inner"
    aliases: tuple[str, ...]

    @property
    def class_name(self) -> str:
        """The name ``plugin_infos`` shows: a dotted path, ``$`` before a nested class."""
        return f"{self.module}.{self.attr.replace('.', '$')}"


def _connector(module: str, cls: str, *aliases: str) -> _Builtin:
    # Kafka accepts a connector's simple name with or without its "Connector" suffix.
    return _Builtin("connector", module, cls, (cls, cls.removesuffix("Connector"), *aliases))


_KAFKA_TRANSFORMS = "org.apache.kafka.connect.transforms."


def _transform(module: str, cls: str, variants: bool) -> list[_Builtin]:
    if not variants:
        return [_Builtin("transformation", module, cls, (cls, _KAFKA_TRANSFORMS + cls))]
    return [
        _Builtin(
            "transformation",
            module,
            f"{cls}.{side}",
            (f"{cls}${side}", f"{_KAFKA_TRANSFORMS}{cls}${side}"),
        )
        for side in ("Key", "Value")
    ]


_T = "pystream.connect.transforms."
_BUILTINS: tuple[_Builtin, ...] = (
    _connector(
        "pystream.connect.connectors.file",
        "FileStreamSourceConnector",
        "org.apache.kafka.connect.file.FileStreamSourceConnector",
    ),
    _connector(
        "pystream.connect.connectors.file",
        "FileStreamSinkConnector",
        "org.apache.kafka.connect.file.FileStreamSinkConnector",
    ),
    _connector(
        "pystream.connect.connectors.sql",
        "SqlSourceConnector",
        "JdbcSourceConnector",
        "JdbcSource",
        "io.confluent.connect.jdbc.JdbcSourceConnector",
    ),
    _connector(
        "pystream.connect.connectors.sql",
        "SqlSinkConnector",
        "JdbcSinkConnector",
        "JdbcSink",
        "io.confluent.connect.jdbc.JdbcSinkConnector",
    ),
    _connector("pystream.connect.connectors.http_sink", "HttpSinkConnector"),
    _Builtin(
        "converter",
        "pystream.connect.converters",
        "StringConverter",
        ("StringConverter", "org.apache.kafka.connect.storage.StringConverter"),
    ),
    _Builtin(
        "converter",
        "pystream.connect.converters",
        "JsonConverter",
        ("JsonConverter", "org.apache.kafka.connect.json.JsonConverter"),
    ),
    _Builtin(
        "converter",
        "pystream.connect.converters",
        "ByteArrayConverter",
        ("ByteArrayConverter", "org.apache.kafka.connect.converters.ByteArrayConverter"),
    ),
    _Builtin(
        "converter",
        "pystream.connect.converters",
        "SimpleHeaderConverter",
        ("SimpleHeaderConverter", "org.apache.kafka.connect.storage.SimpleHeaderConverter"),
    ),
    *_transform(_T + "insert_field", "InsertField", True),
    *_transform(_T + "replace_field", "ReplaceField", True),
    *_transform(_T + "mask_field", "MaskField", True),
    *_transform(_T + "value_to_key", "ValueToKey", False),
    *_transform(_T + "extract_field", "ExtractField", True),
    *_transform(_T + "cast", "Cast", True),
    *_transform(_T + "hoist_field", "HoistField", True),
    *_transform(_T + "routers", "RegexRouter", False),
    *_transform(_T + "routers", "TimestampRouter", False),
    *_transform(_T + "filter", "Filter", False),
    *_transform(_T + "timestamp_converter", "TimestampConverter", True),
    *_transform(_T + "flatten", "Flatten", True),
    *_transform(_T + "set_schema_metadata", "SetSchemaMetadata", True),
    *_transform(_T + "headers", "InsertHeader", False),
    *_transform(_T + "headers", "DropHeaders", False),
    *(
        _Builtin(
            "predicate",
            _T + "predicates",
            name,
            (name, f"{_KAFKA_TRANSFORMS}predicates.{name}"),
        )
        for name in ("TopicNameMatches", "HasHeaderKey", "RecordIsTombstone")
    ),
)
_BY_ALIAS: dict[tuple[str, str], _Builtin] = {
    (b.kind, alias): b for b in _BUILTINS for alias in (*b.aliases, b.class_name)
}


def _resolve_attr(obj: Any, path: str) -> Any:
    for part in path.replace("$", ".").split("."):
        obj = getattr(obj, part)
    return obj


def _import_path(path: str) -> Any:
    """``pkg.mod:Class``, ``pkg.mod.Class`` or ``pkg.mod.Class$Inner`` → the object, or
    raise ImportError/AttributeError."""
    if ":" in path:
        module, _, attr = path.partition(":")
        return _resolve_attr(importlib.import_module(module), attr)
    head = path.split("$", 1)[0]
    parts = head.split(".")
    # The longest importable prefix is the module; the rest are attributes.
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and not module_name.startswith(exc.name):
                raise  # the module exists but one of its own imports is missing
            continue
        return _resolve_attr(module, path[len(module_name) + 1 :])
    raise ImportError(f"no module in {path!r}")


def _entry_points(kind: str) -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUPS[kind]))


def _entry_point_names(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    """An entry point's target as (simple class name, dotted path), Java-style ``$``
    before a nested class: ``pkg.mod:Outer.Inner`` → (``Outer$Inner``, ``pkg.mod.Outer$Inner``)."""
    module, _, attr = ep.value.partition(":")
    simple = attr.strip().replace(".", "$")
    return simple, f"{module.strip()}.{simple}" if simple else module.strip()


def _entry_point_matches(ep: importlib.metadata.EntryPoint, kind: str, name: str) -> bool:
    simple, dotted = _entry_point_names(ep)
    candidates = {ep.name, simple, dotted, ep.value}
    if kind == "connector":
        candidates.add(simple.removesuffix("Connector"))
    return name in candidates


def _check(kind: str, name: str, obj: Any) -> type:
    base = _BASES[kind]
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise ConfigError(f"Class {name} is not a {_KIND_WORD[kind]} ({obj!r})")
    return obj


def _available(kind: str) -> list[str]:
    names = {b.aliases[0] for b in _BUILTINS if b.kind == kind}
    try:
        names.update(ep.name for ep in _entry_points(kind))
    except Exception:  # a broken distribution must not hide the error being reported
        pass
    return sorted(names)


def _load(kind: str, name: str) -> type:
    name = name.strip() if isinstance(name, str) else name
    if not name or not isinstance(name, str):
        raise ConfigError(f"Invalid {kind} class name {name!r}: give a class name")
    builtin = _BY_ALIAS.get((kind, name))
    if builtin is not None:
        try:
            module = importlib.import_module(builtin.module)
        except ImportError as exc:
            raise ConfigError(
                f"The built-in {kind} {name} is not available: its module "
                f"{builtin.module} could not be imported ({exc})"
            ) from None
        return _check(kind, name, _resolve_attr(module, builtin.attr))
    for ep in _entry_points(kind):
        if _entry_point_matches(ep, kind, name):
            try:
                loaded = ep.load()
            except Exception as exc:
                raise ConfigError(
                    f"The {kind} {name} (entry point {ep.name} = {ep.value} in group "
                    f"{ep.group}) could not be loaded: {exc}"
                ) from None
            return _check(kind, name, loaded)
    if "." in name or ":" in name:
        try:
            return _check(kind, name, _import_path(name))
        except (ImportError, AttributeError) as exc:
            log.debug("%s %s is not importable: %s", kind, name, exc)
    word = _KIND_WORD[kind]
    raise ConfigError(
        f"Failed to find any class that implements {word} and which name matches {name}; "
        f"available {kind}s are: {', '.join(_available(kind))} (or give a dotted path "
        f"pkg.module.Class, or register an entry point in group {ENTRY_POINT_GROUPS[kind]})"
    )


def load_connector(name: str) -> type[Connector]:
    """The connector class called ``name`` (short name, Kafka's class name, entry point or
    dotted path); raises :class:`ConfigError` saying what exists if none is."""
    return _load("connector", name)


def load_converter(name: str) -> type[Converter]:
    """The converter (or header converter) class called ``name``."""
    return _load("converter", name)


def load_transformation(name: str) -> type[Transformation]:
    """The single message transform class called ``name`` (``InsertField$Value``…)."""
    return _load("transformation", name)


def load_predicate(name: str) -> type[Predicate]:
    """The predicate class called ``name`` (``TopicNameMatches``…)."""
    return _load("predicate", name)


_TYPES = ("source", "sink", "converter", "transformation", "predicate")


def _plugin_type(kind: str, cls: type) -> str | None:
    if kind != "connector":
        return kind
    if issubclass(cls, SourceConnector):
        return "source"
    if issubclass(cls, SinkConnector):
        return "sink"
    return None


def _version(cls: type) -> str:
    version = getattr(cls, "version", None)
    if version is None:
        return __version__
    try:
        return str(cls().version())  # Kafka asks an instance, too
    except Exception:
        return "undefined"


def plugin_infos(kind: str | None = None) -> list[dict[str, str]]:
    """The plugins that load, as Kafka's ``GET /connector-plugins`` lists them:
    ``{"class", "type", "version"}`` sorted by class.  ``kind`` is a ``type``
    (``source``, ``sink``, ``converter``, ``transformation``, ``predicate``),
    ``connector`` (sources and sinks: the endpoint's default) or None for all."""
    if kind is not None and kind not in (*_TYPES, "connector"):
        raise ValueError(f"unknown plugin kind {kind!r}: expected connector or one of {_TYPES}")
    kinds = [
        k
        for k in _BASES
        if kind is None or k == kind or (k == "connector" and kind in ("source", "sink"))
    ]
    found: dict[str, dict[str, str]] = {}
    for k in kinds:
        candidates: list[tuple[str, Any]] = []
        for b in _BUILTINS:
            if b.kind == k:
                candidates.append((b.class_name, lambda b=b: _import_path(b.class_name)))
        for ep in _entry_points(k):
            candidates.append((_entry_point_names(ep)[1], ep.load))
        for class_name, load in candidates:
            try:
                cls = load()
            except Exception as exc:  # one broken plugin must not hide the others
                log.debug("plugin %s does not load: %s", class_name, exc)
                continue
            if not (isinstance(cls, type) and issubclass(cls, _BASES[k])):
                continue
            plugin_type = _plugin_type(k, cls)
            if plugin_type is None or (kind in _TYPES and plugin_type != kind):
                continue
            # An entry point naming a built-in shows it once, under its canonical name.
            key = f"{cls.__module__}.{cls.__qualname__}"
            found.setdefault(
                key, {"class": class_name, "type": plugin_type, "version": _version(cls)}
            )
    return sorted(found.values(), key=lambda info: info["class"])
