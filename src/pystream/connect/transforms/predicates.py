"""Kafka's predicates, for applying a transform to some records only
(``transforms.<a>.predicate``, ``.negate``): TopicNameMatches (``pattern``),
HasHeaderKey (``name``), RecordIsTombstone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import ConfigDef, ConfigKey, ConfigType, ConnectRecord, Importance, Predicate
from ._util import Defined
from .routers import compile_java_regex


class TopicNameMatches(Defined, Predicate):
    """True for records whose topic matches ``pattern`` as a whole."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "pattern",
                ConfigType.STRING,
                documentation="A Java regular expression for matching against the name of "
                "a record's topic.",
                importance=Importance.MEDIUM,
            )
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        self.pattern = compile_java_regex(self.CONFIG_DEF.parse(configs)["pattern"], "pattern")

    def test(self, record: ConnectRecord) -> bool:
        return self.pattern.fullmatch(record.topic) is not None


class HasHeaderKey(Defined, Predicate):
    """True for records with at least one header called ``name``."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "name",
                ConfigType.STRING,
                documentation="The header name.",
                importance=Importance.MEDIUM,
            )
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        self.name: str = self.CONFIG_DEF.parse(configs)["name"]

    def test(self, record: ConnectRecord) -> bool:
        return any(header.key == self.name for header in record.headers)


class RecordIsTombstone(Predicate):
    """True for tombstones: records whose value is null."""

    def test(self, record: ConnectRecord) -> bool:
        return record.value is None
