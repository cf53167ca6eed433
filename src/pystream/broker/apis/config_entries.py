"""Config entries as DescribeConfigs and CreateTopics report them: value, source, synonyms.

Kafka describes every config with where its value came from
(:class:`~pystream.config.ConfigSource`) and, on request, its *synonyms*: the
chain of places that could supply it, highest priority first.  For a topic
config that is the topic's override, then the broker-level keys set in
``server.properties`` (``log.retention.hours`` ...), then the broker-level
keys' built-in defaults.  pystream has no dynamic broker configs, so the
DYNAMIC_* sources never appear and every broker config is read-only.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

from pystream.config import (
    BROKER_CONFIGS,
    TOPIC_CONFIGS,
    BrokerConfig,
    ConfigDef,
    ConfigSource,
    ConfigType,
    LogConfig,
    format_value,
    parse_value,
)
from pystream.errors import InvalidConfigError

STATIC = ConfigSource.STATIC_BROKER_CONFIG
DEFAULT = ConfigSource.DEFAULT_CONFIG

# Kafka's DescribeConfigsResponse.ConfigType numbering (config_type, v3+).
CONFIG_TYPE_IDS = {
    ConfigType.BOOLEAN: 1,
    ConfigType.STRING: 2,
    ConfigType.INT: 3,
    ConfigType.LONG: 5,
    ConfigType.DOUBLE: 6,
    ConfigType.LIST: 7,
}


@dataclass(frozen=True)
class Synonym:
    """One place a config's value can come from (DescribeConfigs' synonyms, v1+)."""

    name: str
    value: str | None
    source: ConfigSource


@dataclass(frozen=True)
class DescribedConfig:
    """One config of a resource, with everything DescribeConfigs can say about it."""

    name: str
    value: str | None
    source: ConfigSource
    type: ConfigType
    read_only: bool
    documentation: str | None
    synonyms: tuple[Synonym, ...]


# --- broker-level keys that supply topic defaults ---------------------------------------------


def _synonym_default(definition: ConfigDef, index: int) -> str | None:
    """The built-in default of a topic config's ``index``-th broker synonym.

    As in Kafka only the least precise unit has one (``log.retention.hours=168``;
    ``log.retention.ms`` and ``log.retention.minutes`` are unset by default).
    """
    if index != len(definition.synonyms) - 1:
        return None
    default, scale = definition.default, definition.synonyms[index].scale
    if scale != 1 and isinstance(default, int) and default >= 0:
        default //= scale
    return format_value(default)


def _static_value(definition: ConfigDef, key: str, raw: str) -> str:
    """A broker-level synonym's value from server.properties, normalised as Kafka shows it."""
    try:
        return format_value(parse_value(key, definition.type, raw))
    except InvalidConfigError:  # an unused, lower-priority synonym is never validated
        return raw


def _broker_chain(config: BrokerConfig, definition: ConfigDef) -> list[Synonym]:
    """The broker-level synonyms of a topic config that have a value, highest priority first:
    those set in server.properties, then the built-in defaults (Kafka's ``configSynonyms``)."""
    given = config.static_properties
    chain = [
        Synonym(s.name, _static_value(definition, s.name, given[s.name]), STATIC)
        for s in definition.synonyms
        if s.name in given
    ]
    for index, synonym in enumerate(definition.synonyms):
        default = _synonym_default(definition, index)
        if default is not None:
            chain.append(Synonym(synonym.name, default, DEFAULT))
    return chain


# --- topics -----------------------------------------------------------------------------------


def topic_config_entries(
    broker_config: BrokerConfig, overrides: Mapping[str, str], log_config: LogConfig
) -> list[DescribedConfig]:
    """Every topic config of a topic (sorted by name): its effective value and source, and
    the synonyms chain (the topic override first, if any)."""
    entries = []
    for entry in log_config.entries():
        definition = TOPIC_CONFIGS[entry.name]
        synonyms = _broker_chain(broker_config, definition)
        if entry.name in overrides:
            synonyms.insert(0, Synonym(entry.name, entry.value, ConfigSource.TOPIC_CONFIG))
        entries.append(
            DescribedConfig(
                name=entry.name,
                value=entry.value,
                source=entry.source,
                type=definition.type,
                read_only=False,
                documentation=definition.doc or None,
                synonyms=tuple(synonyms),
            )
        )
    return entries


# --- the broker -------------------------------------------------------------------------------


def broker_config_entries(config: BrokerConfig) -> list[DescribedConfig]:
    """Every broker config (its own keys and the topic-default keys), sorted by name.

    All are read-only: pystream applies broker configs at startup only.
    """
    given = config.static_properties
    entries: dict[str, DescribedConfig] = {}
    for definition in BROKER_CONFIGS.values():
        synonyms = [Synonym(definition.name, format_value(definition.default), DEFAULT)]
        if definition.name in given:
            value = format_value(getattr(config, definition.attribute))
            synonyms.insert(0, Synonym(definition.name, value, STATIC))
        entries[definition.name] = DescribedConfig(
            name=definition.name,
            value=synonyms[0].value,
            source=synonyms[0].source,
            type=definition.type,
            read_only=True,
            documentation=definition.doc or None,
            synonyms=tuple(synonyms),
        )
    for definition in TOPIC_CONFIGS.values():
        chain = _broker_chain(config, definition)
        for index, synonym in enumerate(definition.synonyms):
            if synonym.name in entries:
                continue
            # Kafka's dropWhile: a key's synonyms start at its own first appearance.
            own = tuple(itertools.dropwhile(lambda s, n=synonym.name: s.name != n, chain))
            if synonym.name in given:
                value = _static_value(definition, synonym.name, given[synonym.name])
            else:
                value = _synonym_default(definition, index)
            entries[synonym.name] = DescribedConfig(
                name=synonym.name,
                value=value,
                source=own[0].source if own else DEFAULT,
                # log.retention.hours and the like are INTs in Kafka.
                type=ConfigType.INT if synonym.scale != 1 else definition.type,
                read_only=True,
                documentation=definition.doc or None,
                synonyms=own,
            )
    return [entries[name] for name in sorted(entries)]
