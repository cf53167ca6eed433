"""Config entries as DescribeConfigs and CreateTopics report them: value, source, synonyms.

Kafka describes every config with where its value came from
(:class:`~pystream.config.ConfigSource`) and, on request, its *synonyms*: the
chain of places that could supply it, highest priority first.  For a topic
config that is the topic's override, then the broker-level keys set in
``server.properties`` (``log.retention.hours`` ...), then the broker-level
keys' built-in defaults.  Kafka's rules (``ConfigHelper.configSynonyms``) are
followed exactly: the layers are dynamic per broker, dynamic cluster default,
static (``server.properties``), built-in default; only keys with a value in a
layer are listed, and a chain starts at the first appearance of the key asked
about (so ``retention.ms`` lists no synonym while only ``log.retention.hours``
has a value, as in Kafka).  Broker configs that can be altered dynamically
(:data:`~pystream.config.DYNAMIC_BROKER_CONFIGS`) are not read-only.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

from pystream.config import (
    BROKER_CONFIGS,
    BROKER_DEFAULTS,
    DYNAMIC_BROKER_CONFIGS,
    TOPIC_CONFIG_OF_SYNONYM,
    TOPIC_CONFIGS,
    BrokerConfig,
    ConfigSource,
    ConfigType,
    LogConfig,
    broker_key_type,
)

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
    type: ConfigType | None  # None: a custom dynamic broker key pystream does not know
    read_only: bool
    documentation: str | None
    synonyms: tuple[Synonym, ...]


# --- where values come from -------------------------------------------------------------------


Layers = list[tuple[ConfigSource, Mapping[str, str]]]


def _layers(config: BrokerConfig) -> Layers:
    """The places a broker key's value can come from, highest priority first."""
    return [
        (ConfigSource.DYNAMIC_BROKER_CONFIG, config.dynamic_broker),
        (ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG, config.dynamic_default),
        (STATIC, config.static_properties),
        (DEFAULT, BROKER_DEFAULTS),
    ]


def _synonyms_of(name: str) -> tuple[str, ...]:
    """Kafka's ``brokerConfigSynonyms``: the keys that set the same value as ``name``, in
    precedence order (log.retention.ms, .minutes, .hours); just ``name`` for most keys."""
    if name in TOPIC_CONFIG_OF_SYNONYM:
        return tuple(s.name for s in TOPIC_CONFIG_OF_SYNONYM[name][0].synonyms)
    return (name,)


def _config_synonyms(layers: Layers, name: str) -> list[Synonym]:
    """Kafka's ``configSynonyms``: each layer's values of ``name``'s synonyms, layer by
    layer, from the first one that is ``name`` itself on (so log.retention.ms lists
    nothing while only log.retention.hours has a value)."""
    chain = [
        Synonym(key, layer[key], source)
        for source, layer in layers
        for key in _synonyms_of(name)
        if key in layer
    ]
    return list(itertools.dropwhile(lambda s: s.name != name, chain))


# --- topics -----------------------------------------------------------------------------------


def topic_config_entries(
    broker_config: BrokerConfig, overrides: Mapping[str, str], log_config: LogConfig
) -> list[DescribedConfig]:
    """Every topic config of a topic (sorted by name) as Kafka's ``createTopicConfigEntry``:
    its effective value; its synonyms (the topic override, then the primary broker key's
    chain); its source, the first synonym's (DEFAULT_CONFIG if there is none)."""
    layers = _layers(broker_config)
    entries = []
    for entry in log_config.entries():
        definition = TOPIC_CONFIGS[entry.name]
        synonyms = (
            _config_synonyms(layers, definition.synonyms[0].name) if definition.synonyms else []
        )
        if entry.name in overrides:
            synonyms.insert(0, Synonym(entry.name, entry.value, ConfigSource.TOPIC_CONFIG))
        entries.append(
            DescribedConfig(
                name=entry.name,
                value=entry.value,
                source=synonyms[0].source if synonyms else DEFAULT,
                type=definition.type,
                read_only=False,
                documentation=definition.doc or None,
                synonyms=tuple(synonyms),
            )
        )
    return entries


# --- the broker -------------------------------------------------------------------------------


def _broker_entry(name: str, value: str | None, synonyms: list[Synonym]) -> DescribedConfig:
    definition = BROKER_CONFIGS.get(name) or TOPIC_CONFIG_OF_SYNONYM.get(name, (None,))[0]
    return DescribedConfig(
        name=name,
        value=value,
        source=synonyms[0].source if synonyms else DEFAULT,
        type=broker_key_type(name) if definition is not None else None,
        read_only=name not in DYNAMIC_BROKER_CONFIGS,
        documentation=(definition.doc or None) if definition is not None else None,
        synonyms=tuple(synonyms),
    )


def broker_config_entries(config: BrokerConfig) -> list[DescribedConfig]:
    """Every broker config of this broker (its own keys and the topic-default keys), sorted
    by name, as Kafka's ``createBrokerConfigEntry``: the value in force, the synonyms over
    every layer, read-only unless the key can be altered dynamically."""
    layers = _layers(config)
    entries = []
    # Kafka lists custom keys set dynamically too (they are among its config's originals).
    for name in sorted(_BROKER_KEYS | config.dynamic_broker.keys() | config.dynamic_default.keys()):
        # The key's own value in force (not a more precise synonym's).
        entries.append(_broker_entry(name, config.value_of(name), _config_synonyms(layers, name)))
    return entries


def default_broker_config_entries(config: BrokerConfig) -> list[DescribedConfig]:
    """The cluster-wide dynamic broker configs (the BROKER resource ""), as Kafka: only
    those set, each with its DYNAMIC_DEFAULT_BROKER_CONFIG synonyms."""
    layers = _layers(config)
    entries = []
    for name, value in sorted(config.dynamic_default.items()):
        synonyms = [
            s
            for s in _config_synonyms(layers, name)
            if s.source is ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG
        ]
        entries.append(_broker_entry(name, value, synonyms))
    return entries


_BROKER_KEYS = frozenset(BROKER_CONFIGS) | frozenset(TOPIC_CONFIG_OF_SYNONYM)
