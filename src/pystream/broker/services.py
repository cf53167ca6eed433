"""Everything a request handler may use, built fully wired by :meth:`Broker.start`.

Handlers see :class:`BrokerServices` through their
:class:`~pystream.broker.context.RequestContext`, never the
:class:`~pystream.broker.server.Broker`: no field here is optional, so a handler
never checks whether the broker has started, and a renamed service fails at
once instead of falling back quietly.  In cluster mode :attr:`cluster` is the
ZooKeeper side (controller operations); on a single node it is None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pystream.broker.fetch_session import FetchSessionCache
from pystream.cluster.dynamic_config import DynamicBrokerConfig
from pystream.cluster.metadata.store import BrokerEndpoint, MetadataStore
from pystream.cluster.replication.replica_manager import ReplicaManager
from pystream.cluster.topics import TopicManager
from pystream.config import BrokerConfig
from pystream.groups.coordinator import GroupCoordinator
from pystream.metrics import BrokerMetrics
from pystream.protocol.handlers import HandlerSpec
from pystream.purgatory import Purgatory
from pystream.security.authorizer import AclAuthorizer
from pystream.security.listeners import Listener
from pystream.security.sasl import SaslAuthenticator
from pystream.storage.log_manager import LogManager
from pystream.txn.coordinator import TransactionCoordinator

if TYPE_CHECKING:
    from pystream.cluster.cluster_mode import ClusterMode


@dataclass(frozen=True, slots=True)
class BrokerServices:
    """The broker's services, as the request path sees them."""

    # The config the broker started with (dynamic broker configs included then); the
    # current one, with later AlterConfigs on BROKER resources, is dynamic_config.current.
    config: BrokerConfig
    dynamic_config: DynamicBrokerConfig
    broker_id: int
    metadata: MetadataStore
    log_manager: LogManager
    replica_manager: ReplicaManager
    topic_manager: TopicManager
    group_coordinator: GroupCoordinator
    transaction_coordinator: TransactionCoordinator
    fetch_purgatory: Purgatory
    # Incremental fetch sessions (KIP-227), max.incremental.fetch.session.cache.slots of them.
    fetch_sessions: FetchSessionCache
    # Every API this broker serves, by key: what ApiVersions advertises.
    handlers: Mapping[int, HandlerSpec]
    advertised_listeners: tuple[Listener, ...]
    cluster: ClusterMode | None
    # SASL: enabled mechanisms, the credential lookup, session lifetime, login throttle.
    authenticator: SaslAuthenticator
    # The ACL authorizer (authorizer.class.name); None: every request is allowed.
    authorizer: AclAuthorizer | None
    # The broker's counters: the request path bumps them once per partition of a request.
    metrics: BrokerMetrics

    def live_brokers(self, listener_name: str) -> list[BrokerEndpoint]:
        """(id, host, port, rack) of every live broker, as clients on ``listener_name``
        reach them: this broker alone on a single node."""
        return self.metadata.broker_endpoints(listener_name)

    @property
    def controller_id(self) -> int:
        """The active controller (-1 while none is elected); a single node is its own."""
        return self.metadata.controller_id

    @property
    def is_active_controller(self) -> bool:
        """Whether this broker is the elected controller now, by its own election state
        (as Kafka's ``KafkaController.isActive``), not by the metadata's view of who is:
        while the controller moves, only one broker says yes."""
        if self.cluster is None:
            return True  # a single node is its own controller
        controller = self.cluster.controller
        return controller is not None and controller.active

    def listener_for(self, listener_name: str) -> Listener:
        """The advertised listener named ``listener_name`` (the first one if none is)."""
        for listener in self.advertised_listeners:
            if listener.name == listener_name:
                return listener
        return self.advertised_listeners[0]
