"""Dynamic broker configs: AlterConfigs on a BROKER resource, applied without a restart.

Kafka keeps them at two levels (``DynamicBrokerConfig.scala``): per broker
(DYNAMIC_BROKER_CONFIG, the resource named by a broker id) and cluster-wide
(DYNAMIC_DEFAULT_BROKER_CONFIG, the resource named ""), above the static
``server.properties`` (STATIC_BROKER_CONFIG) and the built-in defaults.  They
live in the metadata store (``/config/brokers/<id>`` and
``/config/brokers/<default>`` in ZooKeeper, the metadata file on a single
node), so they survive restarts and every broker sees the cluster-wide ones.

:class:`DynamicBrokerConfig` holds the broker's effective config (static plus
both dynamic layers) and applies a change of either layer at once: the
topic defaults they set (``log.retention.ms``, ``log.segment.bytes``,
``message.max.bytes`` ...) reach every topic that does not override them.
The broker's own dynamic keys (``log.cleaner.threads``,
``num.replica.fetchers`` ...) are stored and reported, and are read at the
broker's next start (see ``DYNAMIC_APPLIED_CONFIGS`` in :mod:`pystream.config`).
"""

from __future__ import annotations

import logging

from pystream.cluster.metadata.model import DEFAULT_BROKER_ENTITY
from pystream.cluster.metadata.store import MetadataStore
from pystream.cluster.topics import TopicManager
from pystream.config import BrokerConfig, validate_dynamic_broker_configs
from pystream.errors import InvalidConfigError, InvalidRequestError

log = logging.getLogger(__name__)

# Kafka's DynamicThreadPool.ReconfigurableConfigs (accepted and reported; pystream ignores them).
THREAD_POOL_CONFIGS = (
    "num.io.threads",
    "num.replica.fetchers",
    "num.recovery.threads.per.data.dir",
    "background.threads",
)


def _check_thread_pools(old: BrokerConfig, new: BrokerConfig) -> None:
    """Kafka's ``DynamicThreadPool.validateReconfiguration``: a thread count changes by at
    most a factor of two at a time."""
    for key in THREAD_POOL_CONFIGS:
        attribute = key.replace(".", "_")
        before, after = getattr(old, attribute), getattr(new, attribute)
        if after == before:
            continue
        failed = f"Dynamic thread count update validation failed for {key}={after}"
        if after < before / 2:
            raise InvalidConfigError(
                f"{failed}, value should be at least half the current value {before}"
            )
        if after > before * 2:
            raise InvalidConfigError(
                f"{failed}, value should not be greater than double the current value {before}"
            )


class DynamicBrokerConfig:
    """This broker's config with its dynamic layers from ``metadata``; :attr:`current` is
    what the broker runs with."""

    def __init__(self, static: BrokerConfig, metadata: MetadataStore) -> None:
        self.static = static
        self.metadata = metadata
        self.entity = str(static.broker_id)
        self._topics: TopicManager | None = None
        try:
            self.current = static.with_dynamic(*self._stored_layers())
        except InvalidConfigError as exc:  # stored by another tool: start on the static config
            log.error("ignoring the dynamic broker configs (%s)", exc)
            self.current = static

    def attach(self, topics: TopicManager) -> None:
        """From now on, changes reach ``topics`` (and through it every topic's logs)."""
        self._topics = topics

    def entity_of(self, resource_name: str) -> str:
        """The store entity of a BROKER resource: this broker's id, or ``<default>`` for "".

        Raises INVALID_REQUEST for a name that is not an integer or names another broker,
        as Kafka (admin clients send a broker's resource to that broker).
        """
        if not resource_name:
            return DEFAULT_BROKER_ENTITY
        try:
            broker_id = int(resource_name)
        except ValueError:
            raise InvalidRequestError(
                f"Broker id must be an integer, but it is: {resource_name}"
            ) from None
        if broker_id != self.static.broker_id:
            raise InvalidRequestError(
                f"Unexpected broker id, expected {self.static.broker_id} or empty string, but "
                f"received {resource_name}; send broker resources to the broker they name"
            )
        return self.entity

    def list_in_force(self, key: str) -> list[str]:
        """The items of LIST broker key ``key``'s value in force (what APPEND and SUBTRACT
        start from): its highest layer's value, else its built-in default."""
        value = self.current.value_of(key)
        return [item.strip() for item in value.split(",") if item.strip()] if value else []

    def stored(self, entity: str) -> dict[str, str]:
        """The dynamic configs stored for ``entity`` (custom keys included)."""
        return self.metadata.broker_configs(entity)

    async def alter(self, entity: str, configs: dict[str, str], *, validate_only: bool) -> None:
        """Replace the dynamic configs of ``entity`` with ``configs`` (AlterConfigs semantics;
        IncrementalAlterConfigs computes the whole new set first), then apply them.

        Raises InvalidConfigError for a static key ("Cannot update these configs
        dynamically"), a bad value, or a combination that does not hold together.
        ``validate_only`` checks everything and changes nothing.
        """
        validate_dynamic_broker_configs(configs, per_broker=entity != DEFAULT_BROKER_ENTITY)
        per_broker, default = self._stored_layers()
        if entity == DEFAULT_BROKER_ENTITY:
            default = configs
        else:
            per_broker = configs
        # The layers together must be consistent, and thread pools change gradually.
        _check_thread_pools(self.current, self.static.with_dynamic(per_broker, default))
        if validate_only:
            return
        await self.metadata.set_broker_configs(entity, dict(configs))
        log.info("dynamic broker configs of %s are now %s", entity, configs)
        self.refresh()

    def refresh(self) -> None:
        """Re-read both layers from the store and apply them if they changed (after our own
        write, or when ZooKeeper reports another broker's)."""
        try:
            new = self.static.with_dynamic(*self._stored_layers())
        except InvalidConfigError as exc:
            log.error(
                "keeping the current broker config: the dynamic configs are invalid (%s)", exc
            )
            return
        old = self.current
        if (new.dynamic_broker, new.dynamic_default) == (old.dynamic_broker, old.dynamic_default):
            return
        self.current = new
        if self._topics is not None:
            self._topics.set_broker_config(new)

    def _stored_layers(self) -> tuple[dict[str, str], dict[str, str]]:
        return self.stored(self.entity), self.stored(DEFAULT_BROKER_ENTITY)
