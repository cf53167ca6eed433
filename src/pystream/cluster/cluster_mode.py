"""Cluster mode: a broker joined to others through ZooKeeper (``zookeeper.connect`` set).

Imported only in cluster mode, so a single node never imports kazoo.  The broker
asks :class:`ClusterMode` for its metadata store (:class:`ZkMetadataStore`, whose
cluster id comes from ZooKeeper), then, once its listeners are bound, registers
itself and stands for controller.

Roles.  Partition-state changes reach this broker as :class:`TopicChange` events
from the metadata cache's watches (the controller sends no LeaderAndIsr
requests, see :mod:`pystream.cluster.zookeeper.controller`).  Each one is turned into
local roles: the leader hosts the log and serves produce/fetch; a follower
hosts the log, answers NOT_LEADER_OR_FOLLOWER as leader and replicates from
the leader (:mod:`pystream.cluster.replication.replica_fetcher`); a replica that is no
longer assigned here, or whose topic was deleted, is stopped and its files removed.  The group and
transaction coordinators follow the leadership of their internal topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from kazoo.protocol.states import KazooState

from pystream.cluster.metadata.model import (
    TopicMetadata,
)
from pystream.cluster.replication.replica_fetcher import ReplicaFetcherManager
from pystream.cluster.zookeeper import client as zk_client
from pystream.cluster.zookeeper.controller import ZkController
from pystream.cluster.zookeeper.paths import BrokerInfo, EndPoint
from pystream.cluster.zookeeper.registration import BrokerRegistration
from pystream.cluster.zookeeper.store import (
    BrokerConfigChange,
    MetadataEvent,
    TopicChange,
    ZkMetadataStore,
)
from pystream.errors import KafkaError
from pystream.security.client_security import PLAINTEXT, ClientSecurity
from pystream.security.listeners import Listener

if TYPE_CHECKING:
    from kazoo.client import KazooClient

    from pystream.cluster.replication.replica_manager import ReplicaManager
    from pystream.cluster.topics import TopicManager
    from pystream.config import BrokerConfig

log = logging.getLogger(__name__)

CONTROLLED_SHUTDOWN_MAX_S = 30


class PartitionOwner(Protocol):
    """A coordinator following the leadership of its internal topic's partitions."""

    def on_elected(self, partition: int) -> None: ...

    def on_resigned(self, partition: int) -> None: ...


async def connect_zookeeper(config: BrokerConfig) -> ZkMetadataStore:
    """Connect to ZooKeeper and load the cluster metadata (the store's cache is complete);
    the store owns the session."""
    client = await asyncio.to_thread(
        zk_client.connect,
        config.zookeeper_connect,
        config.zookeeper_session_timeout_ms,
        config.zookeeper_connection_timeout_ms,
    )
    store = ZkMetadataStore(client, config.broker_id)
    await store.start()
    log.info(
        "broker %d: cluster %s (ZooKeeper %s)",
        config.broker_id,
        store.cluster_id,
        config.zookeeper_connect,
    )
    return store


def follow_broker_configs(store: ZkMetadataStore, refresh: Callable[[], None]) -> None:
    """Call ``refresh`` (on the loop) whenever this broker's or the cluster-wide dynamic
    broker configs change in ZooKeeper (written by any broker or tool)."""

    def on_event(event: MetadataEvent) -> None:
        if isinstance(event, BrokerConfigChange):
            refresh()

    store.add_listener(on_event)


def attach_replication(
    config: BrokerConfig,
    store: ZkMetadataStore,
    replicas: ReplicaManager,
    listener_name: str,
    security: ClientSecurity = PLAINTEXT,
) -> ReplicaFetcherManager:
    """Give the replica manager its fetchers (followers) and its ISR writer (leaders); before
    any partition is hosted, so followers start fetching at once."""
    fetchers = ReplicaFetcherManager(
        config,
        broker_id=config.broker_id,
        metadata=store,
        replicas=replicas,
        listener_name=listener_name,
        security=security,
    )
    replicas.fetcher = fetchers
    replicas.isr_updater = store.update_isr
    return fetchers


class ClusterMode:
    """ZooKeeper session, registration, controller and role changes of one broker.

    Built by the broker once its store (:func:`connect_zookeeper`), replica fetchers
    (:func:`attach_replication`), topic manager and coordinators exist: :meth:`watch_roles`,
    then :meth:`register` once the listeners are bound; :meth:`stop` and
    :meth:`stop_replication` at shutdown.
    """

    def __init__(
        self,
        config: BrokerConfig,
        *,
        store: ZkMetadataStore,
        replicas: ReplicaManager,
        topics: TopicManager,
        fetchers: ReplicaFetcherManager,
        owners: Mapping[str, PartitionOwner],
        listener_name: str,
        security: ClientSecurity = PLAINTEXT,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        """``owners``: internal topic -> its coordinator, told when this broker starts or
        stops leading one of their partitions; ``listener_name``: the listener other
        brokers reach this one on (replication, controller requests, transaction markers),
        ``security`` how to connect to it;
        ``on_fatal(reason)``: called (on the loop) when this broker must stop serving,
        e.g. its ``broker.id`` was registered by another broker while its session was lost."""
        self.config = config
        self.broker_id = config.broker_id
        self.listener_name = listener_name
        self.security = security
        self.store = store
        self.client: KazooClient | None = store.client
        self.registration: BrokerRegistration | None = None
        self.controller: ZkController | None = None
        self.fetchers = fetchers
        self._replicas = replicas
        self._topics = topics
        self._owners = owners
        self._on_fatal = on_fatal or (lambda reason: None)
        # Topic changes, applied in order by one task (new logs are made in a thread first).
        self._changes: asyncio.Queue[tuple[str, TopicMetadata | None, TopicMetadata | None]] = (
            asyncio.Queue()
        )
        self._applier: asyncio.Task[None] | None = None

    # --- lifecycle --------------------------------------------------------------------------
    def watch_roles(self) -> None:
        """Remove stray logs (deleted or moved away while this broker was down), then
        follow partition-state changes."""
        store, replicas = self.store, self._replicas
        topics, me = store.topics(), self.broker_id
        for topic, index in sorted(replicas.log_manager.logs()):
            known = topics.get(topic)
            state = known.partitions.get(index) if known is not None else None
            if state is None or me not in state.replicas:
                log.info(
                    "removing stray log %s-%d (no replica of it is assigned here)", topic, index
                )
                replicas.stop_replica(topic, index, delete=True)
        store.add_listener(self._on_event)

    async def register(self, advertised: Sequence[Listener]) -> None:
        """Register this broker (its advertised listeners with their security protocols, as
        Kafka's listener_security_protocol_map; its rack) and stand for controller."""
        assert self.client is not None
        loop = asyncio.get_running_loop()
        handoff = zk_client.LoopHandoff(loop)
        info = BrokerInfo(
            self.broker_id,
            tuple(
                EndPoint(a.name, a.host or "127.0.0.1", a.port, a.security_protocol)
                for a in advertised
            ),
            self.config.broker_rack or None,
        )
        self.registration = BrokerRegistration(
            self.client,
            info,
            on_step_down=self._on_step_down,
            post=handoff.post,
            stale_wait_s=self.config.zookeeper_session_timeout_ms / 1000,
        )
        await asyncio.to_thread(self.registration.register)
        self.controller = ZkController(
            self.client,
            self.broker_id,
            unclean_leader_election_enable=self.config.unclean_leader_election_enable,
            delete_topic_enable=self.config.delete_topic_enable,
            auto_leader_rebalance_enable=self.config.auto_leader_rebalance_enable,
            leader_imbalance_check_interval_seconds=(
                self.config.leader_imbalance_check_interval_seconds
            ),
            leader_imbalance_per_broker_percentage=(
                self.config.leader_imbalance_per_broker_percentage
            ),
            post=handoff.post,
        )
        self.controller.start()

    async def stop(self) -> None:
        """Hand leadership over (controlled shutdown), resign as controller, deregister,
        close the session (others take over at once).

        Without ZooKeeper (gone before or during the shutdown) no controller can move
        leadership and nothing needs deregistering (the session expires on the server's
        side): one line says so and the broker stops at once, closing its client first so
        that no ZooKeeper call is left waiting for a server that may never come back.
        """
        lost = self._zookeeper_lost_event()
        if not lost.is_set() and self.config.controlled_shutdown_enable:
            await self._controlled_shutdown_unless(lost)
        if lost.is_set():
            log.warning(
                "broker %d: ZooKeeper is unreachable: shutting down without controlled "
                "shutdown or deregistration (the registration expires with the session)",
                self.broker_id,
            )
            await self._close_client()  # fails the calls kazoo holds (the controller's)
        self.store.remove_listener(self._on_event)
        if self._applier is not None:
            self._applier.cancel()
            await asyncio.gather(self._applier, return_exceptions=True)
        if self.controller is not None:
            await asyncio.to_thread(self.controller.stop)
        if self.registration is not None:
            await asyncio.to_thread(self.registration.deregister)
        self.store.close()
        await self._close_client()

    @property
    def zookeeper_connected(self) -> bool:
        """Whether the ZooKeeper client is connected (its session live and reachable)."""
        return self.client is not None and self.client.connected

    def _zookeeper_lost_event(self) -> asyncio.Event:
        """An event set (now, or later from kazoo's thread) once the client is not connected."""
        lost = asyncio.Event()
        client = self.client
        if client is None or not client.connected:
            lost.set()
            return lost
        loop = asyncio.get_running_loop()

        def on_state(state: str) -> bool:
            if state == KazooState.CONNECTED:
                return False
            with contextlib.suppress(RuntimeError):  # the loop is closed: shut down already
                loop.call_soon_threadsafe(lost.set)
            return True  # kazoo removes a listener that returns True

        client.add_listener(on_state)
        return lost

    async def _controlled_shutdown_unless(self, lost: asyncio.Event) -> None:
        """The controlled shutdown, bounded, and given up as soon as ZooKeeper is lost."""
        from pystream.cluster.controlled_shutdown import controlled_shutdown

        # First, while this broker still follows role changes and serves requests.
        # Bounded: a controller that does not answer must not hold the shutdown hostage.
        handover = asyncio.ensure_future(controlled_shutdown(self))
        lost_wait = asyncio.ensure_future(lost.wait())
        try:
            done, _ = await asyncio.wait(
                {handover, lost_wait},
                timeout=CONTROLLED_SHUTDOWN_MAX_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            lost_wait.cancel()
            # Cancel until it ends: Python 3.11's asyncio.wait_for swallows a cancellation
            # that races with its result (as a controller's answer and the loss of
            # ZooKeeper do), and the hand-over would go on to its next attempt.
            while not handover.done():
                handover.cancel()
                await asyncio.wait({handover}, timeout=0.1)
            await asyncio.gather(handover, lost_wait, return_exceptions=True)
        if not done:
            log.warning(
                "broker %d: controlled shutdown took over %d s; shutting down anyway",
                self.broker_id,
                CONTROLLED_SHUTDOWN_MAX_S,
            )

    async def _close_client(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            await asyncio.to_thread(zk_client.close, client)

    def _on_step_down(self, reason: str) -> None:
        # Another broker serves as this id now: serving on would answer for partitions the
        # controller gives to the other one.  Stop, as Kafka's broker exits.
        log.error(
            "broker %d is no longer a cluster member and shuts down: %s", self.broker_id, reason
        )
        self._on_fatal(reason)

    # --- replication ------------------------------------------------------------------------
    async def stop_replication(self) -> None:
        """Stop every fetcher (after the controlled shutdown moved leadership away)."""
        await self.fetchers.shutdown()

    # --- roles ------------------------------------------------------------------------------
    def _on_event(self, event: MetadataEvent) -> None:
        if isinstance(event, TopicChange):
            self._changes.put_nowait((event.name, event.before, event.after))
            if self._applier is None or self._applier.done():
                self._applier = asyncio.get_running_loop().create_task(
                    self._apply_changes(), name="cluster-role-changes"
                )

    async def _apply_changes(self) -> None:
        """Apply queued topic changes in order.  The files of replicas new here are created
        in a thread first (:meth:`TopicManager.create_missing_logs`), so a role change does
        not stall the event loop; the roles themselves change on the loop."""
        while not self._changes.empty():
            name, before, after = self._changes.get_nowait()
            if after is not None:
                try:
                    await self._topics.create_missing_logs(after)
                except Exception:  # apply_topic creates them on the loop, or reports why
                    log.exception("creating the logs of %s in the background failed", name)
            self.apply_topic(name, before, after)

    def apply_topic(
        self, name: str, before: TopicMetadata | None, after: TopicMetadata | None
    ) -> None:
        """Bring this broker's replicas of ``name`` in line with its new metadata."""
        replicas, topics = self._replicas, self._topics
        me = self.broker_id
        if after is not None:
            try:
                replicas.log_manager.update_config(name, topics.log_config_for(after.configs))
            except KafkaError as exc:
                log.error("topic %s has an invalid config (%s); keeping the old one", name, exc)
        wanted = after.partitions if after is not None else {}
        gone = set(before.partitions if before is not None else ()) - set(wanted)
        for index in sorted(gone):
            hosted = replicas.partition(name, index)
            if hosted is not None and hosted.state.leader == me:
                self._resigned(name, index)
            replicas.stop_replica(name, index, delete=True)
        for index, state in sorted(wanted.items()):
            hosted = replicas.partition(name, index)
            was_leader = hosted is not None and hosted.state.leader == me
            if state.leader == me:
                replicas.become_leader(name, index, state)
                if not was_leader:
                    self._elected(name, index)
                continue
            if was_leader:
                self._resigned(name, index)
            if me in state.replicas:
                replicas.become_follower(name, index, state)
            elif hosted is not None:
                replicas.stop_replica(name, index, delete=True)
        if after is None:
            log.info("topic %s was deleted: its replicas here are removed", name)

    def _elected(self, topic: str, index: int) -> None:
        owner = self._owners.get(topic)
        if owner is not None:
            owner.on_elected(index)

    def _resigned(self, topic: str, index: int) -> None:
        owner = self._owners.get(topic)
        if owner is not None:
            owner.on_resigned(index)

    @property
    def controller_id(self) -> int:
        return self.store.controller_id
