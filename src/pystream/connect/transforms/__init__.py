"""Single message transforms (SMTs) and predicates, as Kafka's, and the chain a connector's
``transforms=``/``predicates=`` settings build.

One module per family: ``insert_field``, ``replace_field``, ``mask_field``,
``value_to_key``, ``extract_field``, ``cast``, ``hoist_field``, ``routers``
(RegexRouter, TimestampRouter), ``filter``, ``timestamp_converter``, ``flatten``,
``set_schema_metadata``, ``headers`` (InsertHeader, DropHeaders), ``predicates``.
The classes are found by name through :mod:`pystream.connect.plugins` (``InsertField$Value``,
``org.apache.kafka.connect.transforms.InsertField$Value``…).

A connector configuration such as::

    transforms=route,mask
    transforms.route.type=org.apache.kafka.connect.transforms.RegexRouter
    transforms.route.regex=(.*)-raw
    transforms.route.replacement=$1
    transforms.mask.type=MaskField$Value
    transforms.mask.fields=ssn
    transforms.mask.predicate=isPeople
    predicates=isPeople
    predicates.isPeople.type=TopicNameMatches
    predicates.isPeople.pattern=people.*

gives ``TransformationChain.from_config(props)``, whose ``apply`` runs each transform in
order (those with a predicate only where it holds, or with ``negate=true`` where it does
not) and returns None once one drops the record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import plugins
from ..api import (
    ConfigDef,
    ConfigError,
    ConfigKey,
    ConfigType,
    ConnectRecord,
    Predicate,
    Transformation,
)

__all__ = ["TransformationChain", "TransformationStage"]

_NEGATE = ConfigKey("negate", ConfigType.BOOLEAN, False)


def _aliases(props: Mapping[str, Any], key: str) -> list[str]:
    aliases = ConfigDef.convert(ConfigKey(key, ConfigType.LIST), props.get(key) or "")
    if any(not alias for alias in aliases):
        raise ConfigError(f"Invalid value {props.get(key)!r} for configuration {key}: empty alias")
    duplicates = sorted({a for a in aliases if aliases.count(a) > 1})
    if duplicates:
        raise ConfigError(
            f"Invalid value {props.get(key)!r} for configuration {key}: "
            f"duplicate aliases {', '.join(duplicates)}"
        )
    return aliases


def _prefixed(props: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in props.items() if k.startswith(prefix)}


def _configured(kind: str, prefix: str, props: Mapping[str, Any]) -> Any:
    """Load ``<prefix>type`` and configure an instance with the ``<prefix>*`` settings;
    a ConfigError's message is prefixed so that it names the full key."""
    configs = _prefixed(props, prefix)
    type_name = configs.pop("type", None)
    if not type_name:
        raise ConfigError(
            f'Missing required configuration "{prefix}type" which has no default value.'
        )
    load = plugins.load_transformation if kind == "transformation" else plugins.load_predicate
    try:
        instance = load(str(type_name))()
        if kind == "transformation":
            configs.pop("predicate", None)
            configs.pop("negate", None)
        instance.configure(configs)
    except ConfigError as exc:
        raise ConfigError(
            f"Invalid configuration {prefix}* ({prefix}type={type_name}): {exc}"
        ) from None
    return instance


@dataclass
class TransformationStage:
    """One transform of the chain, with its predicate (None: every record)."""

    alias: str
    transformation: Transformation
    predicate: Predicate | None = None
    negate: bool = False

    def apply(self, record: ConnectRecord) -> ConnectRecord | None:
        if self.predicate is not None and self.predicate.test(record) == self.negate:
            return record
        return self.transformation.apply(record)


class TransformationChain:
    """Transforms applied in order, as a connector's ``transforms=`` lists them."""

    def __init__(
        self, stages: Sequence[TransformationStage] = (), predicates: Sequence[Predicate] = ()
    ) -> None:
        self.stages = list(stages)
        self._predicates = list(predicates)

    @classmethod
    def from_config(cls, props: Mapping[str, Any]) -> TransformationChain:
        """The chain ``transforms=``/``predicates=`` and their ``transforms.<alias>.*`` /
        ``predicates.<alias>.*`` keys describe; an empty or absent ``transforms`` gives a
        chain that passes records unchanged.  Bad settings raise ConfigError naming the
        key."""
        predicates: dict[str, Predicate] = {}
        stages: list[TransformationStage] = []
        try:
            for alias in _aliases(props, "predicates"):
                predicates[alias] = _configured("predicate", f"predicates.{alias}.", props)
            for alias in _aliases(props, "transforms"):
                prefix = f"transforms.{alias}."
                transformation = _configured("transformation", prefix, props)
                stage = TransformationStage(alias, transformation)
                stages.append(stage)
                predicate_alias = props.get(prefix + "predicate")
                negate_key = prefix + "negate"
                if predicate_alias:
                    if predicate_alias not in predicates:
                        raise ConfigError(
                            f"Invalid value {predicate_alias!r} for configuration "
                            f"{prefix}predicate: it is not one of the aliases in predicates="
                            f"{props.get('predicates') or ''!r}"
                        )
                    stage.predicate = predicates[predicate_alias]
                    stage.negate = ConfigDef.convert(
                        ConfigKey(negate_key, ConfigType.BOOLEAN), props.get(negate_key, False)
                    )
                elif negate_key in props:
                    raise ConfigError(
                        f"Invalid configuration {negate_key}: negate needs a predicate "
                        f"({prefix}predicate)"
                    )
        except BaseException:
            cls(stages, list(predicates.values())).close()
            raise
        return cls(stages, list(predicates.values()))

    def apply(self, record: ConnectRecord) -> ConnectRecord | None:
        """``record`` through every stage; None if one dropped it."""
        for stage in self.stages:
            record = stage.apply(record)  # type: ignore[assignment]
            if record is None:
                return None
        return record

    def close(self) -> None:
        """Close every transform and predicate (errors of one do not skip the others)."""
        for closeable in [*(s.transformation for s in self.stages), *self._predicates]:
            try:
                closeable.close()
            except Exception:  # closing is best effort, as Kafka's Utils.closeQuietly
                pass

    def __len__(self) -> int:
        return len(self.stages)
