"""The broker process: listeners, request dispatch, background maintenance.

:class:`Broker` builds and wires the layers — storage (LogManager), cluster
(metadata store, replica and topic managers, ZooKeeper in cluster mode), the
group and transaction coordinators — into one fully wired
:class:`~pystream.broker.services.BrokerServices`, then serves every listener
on asyncio.  Each request is decoded, dispatched to the one handler registered
for its api key (:mod:`pystream.broker.apis`), and answered in order.  Nothing
below the broker sees it: each component gets what it uses through its
constructor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pystream.broker import apis, metrics_sources
from pystream.broker.apis import api_versions
from pystream.broker.apis import sasl as sasl_api
from pystream.broker.connection_quotas import (
    ConnectionQuotas,
    RefusedConnectionLog,
    listening_sockets,
)
from pystream.broker.context import RequestContext
from pystream.broker.fetch_session import FetchSessionCache
from pystream.broker.loop_monitor import LoopLagMonitor
from pystream.broker.network import Chunk, DeferredResponse, KafkaConnection
from pystream.broker.services import BrokerServices
from pystream.clock import now_ms
from pystream.cluster.broker_channel import BrokerChannels
from pystream.cluster.dynamic_config import DynamicBrokerConfig
from pystream.cluster.metadata.local_store import LocalMetadataStore
from pystream.cluster.metadata.model import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC
from pystream.cluster.metadata.store import MetadataStore
from pystream.cluster.replication.replica_manager import ReplicaManager
from pystream.cluster.topics import TopicManager
from pystream.config import BrokerConfig, LogConfig
from pystream.errors import BrokerStartupError, UnsupportedVersionError
from pystream.groups.coordinator import GroupCoordinator
from pystream.metrics import BrokerMetrics
from pystream.protocol import (
    API_SPECS,
    ProtocolDecodeError,
    decode_request_body,
    decode_request_header,
    encode_response_frame,
)
from pystream.protocol.handlers import HandlerSpec
from pystream.protocol.messages import RequestHeader
from pystream.purgatory import Purgatory
from pystream.security.authorizer import AclAuthorizer, authorizer_enabled
from pystream.security.client_security import ClientSecurity
from pystream.security.jaas import check_jaas_configs, inter_broker_login
from pystream.security.listeners import Listener, ListenerConfig
from pystream.security.sasl import SASL_API_KEYS, SaslAuthenticator, SaslState
from pystream.security.ssl import (
    HandshakeFailureLog,
    PerHostLogLimit,
    SslPrincipalMapper,
    SslSettings,
    broker_client_context,
    server_context,
)
from pystream.storage.checkpoints import (
    LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    REPLICATION_OFFSET_CHECKPOINT,
)
from pystream.storage.cleaner import LogCleaner
from pystream.storage.log import Log
from pystream.storage.log_dirs import lock_log_dirs
from pystream.storage.log_manager import LogManager, write_checkpoints
from pystream.txn.coordinator import TransactionCoordinator

if TYPE_CHECKING:
    from pystream.cluster.cluster_mode import ClusterMode
    from pystream.cluster.zookeeper.store import ZkMetadataStore

log = logging.getLogger(__name__)


class Broker:
    """One pystream broker.  ``await start()``, then ``await stop()``.

    :attr:`services` (everything the request path uses) exists once :meth:`start`
    has returned.
    """

    def __init__(
        self, config: BrokerConfig, *, on_fatal: Callable[[str], None] | None = None
    ) -> None:
        """``on_fatal(reason)``: called (on the loop) when the broker must stop serving (its
        registration was taken over in a cluster); the owner then calls :meth:`stop`."""
        self.config = config
        self.on_fatal = on_fatal or (lambda reason: None)
        self.broker_id = config.broker_id
        listener_config = ListenerConfig.from_config(
            config.listeners,
            config.advertised_listeners,
            config.listener_security_protocol_map,
            config.inter_broker_listener_name,
            config.security_inter_broker_protocol,
        )
        self.listeners: list[Listener] = list(listener_config.listeners)
        self.advertised_listeners: list[Listener] = list(listener_config.advertised)
        # The listener other brokers reach this one on (replication, markers, controller).
        self.inter_broker_listener_name = listener_config.inter_broker_listener_name
        # Each TLS listener's context and principal mapping (its listener.name.<name>.ssl.*
        # overrides over the broker's ssl.*), built and checked before anything starts.
        self._tls: dict[str, tuple[ssl.SSLContext, SslPrincipalMapper]] = {}
        # The rate-limited log of failed TLS handshakes.
        self._handshake_failures = HandshakeFailureLog(log)
        self._refused_log = RefusedConnectionLog(log)
        self._limit_log = PerHostLogLimit(log)  # keyed by listener name
        self._handovers: set[asyncio.Task[None]] = set()
        for listener in self.listeners:
            if listener.uses_tls:
                settings = SslSettings.for_listener(config, listener.name)
                self._tls[listener.name] = (
                    server_context(settings),
                    SslPrincipalMapper(settings.principal_mapping_rules),
                )
        # How this broker connects to its peers (checked now: a SASL inter-broker listener
        # needs a mechanism and a JAAS login).  Every JAAS key given must parse.
        check_jaas_configs(config)
        self.inter_broker_security = self._inter_broker_security()
        self.handlers: dict[int, HandlerSpec] = apis.registry()
        self.fetch_purgatory = Purgatory("fetch")
        self.fetch_sessions = FetchSessionCache(
            config.max_incremental_fetch_session_cache_slots,
            config.min_incremental_fetch_session_eviction_ms,
        )
        self._services: BrokerServices | None = None
        self._cluster: ClusterMode | None = None
        self.log_cleaner: LogCleaner | None = None
        self.loop_monitor: LoopLagMonitor | None = None
        # Each listener's sockets and the task accepting on each (see _accept).
        self._listen_sockets: list[socket.socket] = []
        self._acceptors: list[asyncio.Task[None]] = []
        self.connection_quotas = ConnectionQuotas()
        self._connections: set[KafkaConnection] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._checkpoint_writes: set[asyncio.Future[None]] = set()
        self.bound_ports: dict[str, int] = {}
        self.started_ms = 0
        # Counted by every component it is handed to; scraped by pystream serve's endpoint.
        self.metrics = BrokerMetrics({key: spec.name for key, spec in API_SPECS.items()})
        # Why the broker is not ready yet (/readyz), None once start() has finished.
        self._starting: str | None = "starting"

    @property
    def services(self) -> BrokerServices:
        """The wired services (after :meth:`start`)."""
        if self._services is None:
            raise RuntimeError("the broker has not started")
        return self._services

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Load (and recover) the logs, wire the services, then open every listener."""
        config = self.config
        cluster: ClusterMode | None = None
        zk_store: ZkMetadataStore | None = None
        metadata: MetadataStore
        inter_broker_listener = self.inter_broker_listener_name
        inter_broker_security = self.inter_broker_security
        try:  # an operator's typo in authorizer.class.name stops the broker, with its fix
            authorizer_enabled(config.authorizer_class_name)
        except ValueError as exc:
            raise BrokerStartupError(str(exc)) from None
        # First of all, as Kafka: a second broker on these log dirs stops here, before it
        # touches them (the single node's metadata store lives in the first one).  The
        # log manager holds the locks from then on and releases them on shutdown.
        locked_dirs = lock_log_dirs(config.log_dirs)
        try:
            if config.zookeeper_connect:
                # Imported only here: a single node never imports kazoo.
                from pystream.cluster import cluster_mode

                self._starting = "connecting to ZooKeeper"
                zk_store = await cluster_mode.connect_zookeeper(config)
                metadata = zk_store
            else:
                local_store = LocalMetadataStore(config.log_dirs[0], config.broker_id)
                metadata = local_store
            # The dynamic broker configs stored for this broker and the cluster apply from
            # the start: everything below is built with the effective config.
            dynamic_config = DynamicBrokerConfig(config, metadata)
            config = dynamic_config.current
            topic_configs = {
                name: LogConfig.from_properties(t.configs, defaults=config.log_config)
                for name, t in metadata.topics().items()
            }
        except BaseException:
            locked_dirs.release()
            raise
        self._starting = "loading logs"
        # In a thread: recovery, deleting stale logs and fsyncs would stall the loop (and
        # /readyz, which answers 503 meanwhile) for as long as the logs take to load.
        log_manager = await asyncio.to_thread(
            LogManager,
            config.log_dirs,
            config.log_config,
            broker_id=self.broker_id,
            cluster_id=metadata.cluster_id,
            topic_configs=topic_configs,
            locked_dirs=locked_dirs,
            recovery_threads_per_dir=config.num_recovery_threads_per_data_dir,
        )

        def partition_exists(topic: str, index: int) -> bool:
            known = metadata.get_topic(topic)
            return known is not None and index in known.partitions

        replica_manager = ReplicaManager(
            self.broker_id,
            log_manager,
            on_data_changed=self._partition_changed,
            partition_exists=partition_exists if zk_store is not None else None,
            replica_lag_time_max_ms=config.replica_lag_time_max_ms,
            metrics=self.metrics,
        )
        if zk_store is not None:  # before hosting: followers fetch at once
            fetchers = cluster_mode.attach_replication(
                config, zk_store, replica_manager, inter_broker_listener, inter_broker_security
            )
        topic_manager = TopicManager(config, metadata, replica_manager)
        topic_manager.host_all()
        dynamic_config.attach(topic_manager)
        if zk_store is not None:
            cluster_mode.follow_broker_configs(zk_store, dynamic_config.refresh)
        group_coordinator = GroupCoordinator(
            config,
            broker_id=self.broker_id,
            metadata=metadata,
            replicas=replica_manager,
            topics=topic_manager,
        )
        transaction_coordinator = TransactionCoordinator(
            config,
            broker_id=self.broker_id,
            metadata=metadata,
            replicas=replica_manager,
            topics=topic_manager,
            group_offsets=group_coordinator,
            channels=(
                BrokerChannels(
                    self.broker_id,
                    metadata,
                    listener_name=inter_broker_listener,
                    request_timeout_ms=config.replica_socket_timeout_ms,
                    security=inter_broker_security,
                )
                if zk_store is not None
                else None
            ),
        )
        if zk_store is not None:
            cluster = self._cluster = cluster_mode.ClusterMode(
                config,
                store=zk_store,
                replicas=replica_manager,
                topics=topic_manager,
                fetchers=fetchers,
                owners={
                    OFFSETS_TOPIC: group_coordinator,
                    TRANSACTION_STATE_TOPIC: transaction_coordinator,
                },
                listener_name=inter_broker_listener,
                security=inter_broker_security,
                on_fatal=self.on_fatal,
            )
            cluster.watch_roles()
        self._starting = "loading the group and transaction coordinators' partitions"
        # Loads the __consumer_offsets partitions led here (groups answer
        # COORDINATOR_LOAD_IN_PROGRESS until theirs is loaded).
        await group_coordinator.start()
        # Loads __transaction_state and finishes transactions it had decided.
        await transaction_coordinator.start()
        self.connection_quotas = await ConnectionQuotas.from_config(
            config, [listener.name for listener in self.listeners], inter_broker_listener
        )
        loop = asyncio.get_running_loop()
        for listener in self.listeners:
            sockets = await listening_sockets(listener.host or None, listener.port, backlog=1024)
            for sock in sockets:
                self._listen_sockets.append(sock)
                self._acceptors.append(loop.create_task(self._accept(listener, sock)))
            self.bound_ports[listener.name] = sockets[0].getsockname()[1]
        if any(a.port == 0 for a in self.advertised_listeners):
            # Listening on port 0 (tests): advertise the port the OS chose.
            self.advertised_listeners = [
                dataclasses.replace(
                    a, host=a.host or "127.0.0.1", port=a.port or self.bound_ports.get(a.name, 0)
                )
                for a in self.advertised_listeners
            ]
        endpoints = [(a.name, a.host, a.port) for a in self.advertised_listeners]
        self._services = BrokerServices(
            config=config,
            dynamic_config=dynamic_config,
            broker_id=self.broker_id,
            metadata=metadata,
            log_manager=log_manager,
            replica_manager=replica_manager,
            topic_manager=topic_manager,
            group_coordinator=group_coordinator,
            transaction_coordinator=transaction_coordinator,
            fetch_purgatory=self.fetch_purgatory,
            fetch_sessions=self.fetch_sessions,
            handlers=self.handlers,
            advertised_listeners=tuple(self.advertised_listeners),
            cluster=cluster,
            authenticator=SaslAuthenticator(
                {
                    listener.name: config.for_listener(listener.name, "sasl.enabled.mechanisms")
                    for listener in self.listeners
                    if listener.uses_sasl
                },
                lambda user, mechanism: metadata.scram_credentials().get(user, {}).get(mechanism),
                max_reauth_ms=config.connections_max_reauth_ms,
                failed_delay_ms=config.connection_failed_authentication_delay_ms,
            ),
            authorizer=build_authorizer(config, metadata),
            metrics=self.metrics,
        )
        if cluster is not None:
            await cluster.register(self.advertised_listeners)
        else:
            local_store.register(endpoints, config.broker_rack or None)
        self.started_ms = int(time.time() * 1000)
        self._start_maintenance(self._services)
        self.log_cleaner = LogCleaner.for_broker(log_manager, config, self.metrics)
        self.log_cleaner.start()
        self.loop_monitor = LoopLagMonitor()  # logs every stall of the loop over 100 ms
        self.loop_monitor.start()
        self._add_metric_sources(self._services)
        self._starting = None

    def _add_metric_sources(self, services: BrokerServices) -> None:
        """The scrape-time gauges, read from the wired services."""
        metrics = self.metrics
        metrics.add_source(lambda: metrics_sources.partition_families(services))
        metrics.add_source(lambda: metrics_sources.consumer_group_families(services))
        metrics.add_source(
            lambda: metrics_sources.runtime_families(
                services, lambda: self._connections, lambda: self.loop_monitor
            )
        )

    def not_ready_reason(self) -> str | None:
        """Why the broker cannot serve yet (``/readyz`` answers 503 with it), or None:
        starting (logs loading ...), its ZooKeeper session lost, or a partition hosted
        here without a leader."""
        if self._starting is not None:
            return self._starting
        if self._cluster is not None and not self._cluster.zookeeper_connected:
            return "the ZooKeeper session is lost"
        services = self.services
        offline = [
            partition.name
            for partition in services.replica_manager.partitions().values()
            if partition.state.leader < 0
        ]
        if offline:
            return f"{len(offline)} partition(s) hosted here have no leader: {offline[:5]}"
        return None

    def _inter_broker_security(self) -> ClientSecurity:
        """How this broker connects to its peers' inter-broker listener: on SSL/SASL_SSL,
        with its trust store (their certificates) and key store (its own client
        certificate); on SASL_*, logged in with ``sasl.mechanism.inter.broker.protocol`` and
        its JAAS login.  InvalidConfigError saying what to set if that is incomplete."""
        listener = next(
            a for a in self.advertised_listeners if a.name == self.inter_broker_listener_name
        )
        ssl_context = None
        if listener.uses_tls:
            settings = SslSettings.for_listener(self.config, listener.name)
            ssl_context = broker_client_context(settings)
        login = inter_broker_login(self.config, listener.name) if listener.uses_sasl else None
        return ClientSecurity(listener.security_protocol, ssl_context, login)

    async def _accept(self, listener: Listener, sock: socket.socket) -> None:
        """Accept connections on one listening socket, within the connection limits.

        Our own accept loop rather than ``loop.create_server``'s: at ``max.connections``
        it stops accepting until a connection closes, as Kafka's acceptor does (asyncio's
        and uvloop's servers cannot be paused), and a connection over its address's
        ``max.connections.per.ip`` is closed before any transport or protocol exists."""
        loop = asyncio.get_running_loop()
        quotas = self.connection_quotas
        name = listener.name
        accepted = 0
        while True:
            if not quotas.slot_available(name):
                if self._limit_log.admit(name) is not None:  # once per 10 s per listener
                    log.info(
                        "listener %s is at its connection limit (max.connections): not "
                        "accepting until a connection closes",
                        name,
                    )
                await quotas.wait_for_slot(name)
            try:
                conn, address = await loop.sock_accept(sock)
            except OSError as exc:  # EMFILE, ECONNABORTED ...: not the listener's end
                log.warning("accepting on listener %s failed: %s", name, exc)
                await asyncio.sleep(0.1)
                continue
            host = str(address[0])
            if not quotas.acquire(name, host):
                self._refused_log.refused(
                    name, host, quotas.ip_limit(host), host in quotas.per_ip_overrides
                )
                conn.close()
                continue
            task = loop.create_task(self._serve_accepted(listener, conn, address))
            # The loop holds tasks weakly: keep each until its connection is handed over
            # (after a TLS handshake, which shutdown cancels).
            self._handovers.add(task)
            task.add_done_callback(self._handovers.discard)
            accepted += 1
            if accepted % 64 == 0:
                # A backlog of accepts completes without yielding: let the rest run.
                await asyncio.sleep(0)

    async def _serve_accepted(
        self, listener: Listener, conn: socket.socket, address: tuple[Any, ...]
    ) -> None:
        """Hand an accepted socket to its ``KafkaConnection``, after the TLS handshake on
        a TLS listener.  The handshake is awaited here, not in asyncio's server (which
        drops a failed one silently, logging it only in debug mode): a failure is logged,
        rate limited per peer host, and the connection's slot given back."""
        host = str(address[0])
        connection = self._new_connection(listener, host)
        tls = self._tls[listener.name][0] if listener.uses_tls else None
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: connection, conn, ssl=tls
            )
        except BaseException as exc:
            if connection.transport is not None:
                return  # it opened: its connection_lost gives the slot back
            conn.close()
            self._release_slot(connection)
            if isinstance(exc, asyncio.CancelledError):
                raise
            if not isinstance(exc, Exception):
                raise
            if tls is not None:  # ssl.SSLError, a reset, the handshake timeout ...
                peer = f"{host}:{address[1]}"
                self._handshake_failures.failed(listener.name, peer, host, exc)
            else:  # the peer left at once (reset): not worth a warning
                log.debug("connection from %s on %s failed at once: %s", host, listener.name, exc)

    def _new_connection(self, listener: Listener, host: str) -> KafkaConnection:
        connection = KafkaConnection(
            self.handle_frame,
            self.config.socket_request_max_bytes,
            listener.name,
            on_close=self._connection_closed,
            security_protocol=listener.security_protocol,
            principal_mapper=self._tls[listener.name][1] if listener.uses_tls else None,
            # Tracked once open: a failed TLS handshake never opens (nor closes) it.
            on_open=self._connection_opened,
            max_deferred=self.config.produce_pipeline_max_requests,
        )
        connection.quota_host = host
        return connection

    def _connection_opened(self, connection: KafkaConnection) -> None:
        self._connections.add(connection)
        self.metrics.connections_created[connection.listener_name] += 1

    def _connection_closed(self, connection: KafkaConnection) -> None:
        if connection in self._connections:
            self._connections.discard(connection)
            self.metrics.connections_closed[connection.listener_name] += 1
        self._release_slot(connection)

    def _release_slot(self, connection: KafkaConnection) -> None:
        host, connection.quota_host = connection.quota_host, None  # released once
        if host is not None:
            self.connection_quotas.release(connection.listener_name, host)

    async def stop(self) -> None:
        """Clean shutdown: stop listening, close connections, flush and checkpoint the logs."""
        if self.loop_monitor is not None:  # first: a blocking shutdown step is no stall
            await self.loop_monitor.stop()
        services = self._services
        if self._cluster is not None:
            await self._cluster.stop()  # others take over the controller at once
            await self._cluster.stop_replication()
        if services is not None:
            await services.replica_manager.shutdown()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # A checkpoint being written from a thread finishes before shutdown writes its own.
        await asyncio.gather(*self._checkpoint_writes, return_exceptions=True)
        for acceptor in self._acceptors:
            acceptor.cancel()
        await asyncio.gather(*self._acceptors, return_exceptions=True)
        for sock in self._listen_sockets:
            sock.close()
        for handshake in list(self._handovers):  # TLS handshakes in progress
            handshake.cancel()
        for connection in list(self._connections):
            connection.close()
        if services is not None:
            await services.transaction_coordinator.stop()
            await services.group_coordinator.stop()
        if self.log_cleaner is not None:  # before the logs close under it
            await self.log_cleaner.shutdown()
        if services is not None:
            services.log_manager.shutdown()
        log.info("broker %d shut down cleanly", self.broker_id)

    # --- maintenance ------------------------------------------------------------------------
    def _start_maintenance(self, services: BrokerServices) -> None:
        lm = services.log_manager
        config = self.config
        jobs: list[tuple[str, int, Callable[[], Any]]] = [
            ("retention", config.log_retention_check_interval_ms, self._retention_job(lm)),
            ("flush", config.log_flush_scheduler_interval_ms, lm.flush_dirty_logs_in_background),
            (
                "recovery-point",
                config.log_flush_offset_checkpoint_interval_ms,
                self._checkpoint_job(lm, RECOVERY_POINT_CHECKPOINT, lambda log: log.recovery_point),
            ),
            (
                "log-start-offset",
                config.log_flush_start_offset_checkpoint_interval_ms,
                self._checkpoint_job(
                    lm, LOG_START_OFFSET_CHECKPOINT, lambda log: log.log_start_offset
                ),
            ),
            (
                "high-watermark",
                config.replica_high_watermark_checkpoint_interval_ms,
                self._checkpoint_job(
                    lm, REPLICATION_OFFSET_CHECKPOINT, lambda log: log.high_watermark
                ),
            ),
        ]
        if services.cluster is not None:
            # Followers that stopped catching up leave the ISR (checked twice per lag window).
            jobs.append(
                (
                    "isr-expiration",
                    max(config.replica_lag_time_max_ms // 2, 1),
                    services.replica_manager.maybe_shrink_isr,
                )
            )
        for name, interval_ms, job in jobs:
            if 0 < interval_ms < 10**12:
                self._tasks.append(asyncio.create_task(self._every(name, interval_ms, job)))

    def _retention_job(self, lm: LogManager) -> Callable[[], asyncio.Future[int]]:
        """Retention, counting the segments it deletes."""

        def job() -> asyncio.Future[int]:
            future = lm.cleanup_logs_in_background()
            future.add_done_callback(self._count_retention)
            return future

        return job

    def _count_retention(self, future: asyncio.Future[int]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.metrics.retention_segments_deleted += future.result()

    def _checkpoint_job(
        self, lm: LogManager, name: str, offset_of: Callable[[Log], int]
    ) -> Callable[[], Any]:
        """Read the offsets on the loop, write (and fsync) the file from a thread: an fsync
        on the event loop would stall every connection for its duration.  Offsets that
        have not moved since the last write are not written again (an idle broker with
        10,000 partitions rewrote its high watermarks every 5 s)."""
        written: list[Any] = [None]  # the snapshot the files hold

        def write(snapshot: list[tuple[str, dict[tuple[str, int], int]]]) -> None:
            write_checkpoints(snapshot)
            written[0] = snapshot

        def job() -> asyncio.Future[None] | None:
            snapshot = lm.checkpoint_snapshot(name, offset_of)
            if snapshot == written[0]:
                return None
            future = asyncio.ensure_future(asyncio.to_thread(write, snapshot))
            self._checkpoint_writes.add(future)
            future.add_done_callback(self._checkpoint_writes.discard)
            return future

        return job

    async def _every(self, name: str, interval_ms: int, job: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval_ms / 1000)
            try:
                result = job()
                if asyncio.isfuture(result):
                    await asyncio.shield(result)  # stop() waits for it, never abandons it
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background job %s failed", name)

    # --- dispatch ---------------------------------------------------------------------------
    def _partition_changed(self, key: tuple[str, int]) -> None:
        """A partition's data, offsets or leadership changed: fetch sessions re-read it at
        their next fetch, and parked fetches re-check it now."""
        self.fetch_sessions.partition_changed(key)
        self.fetch_purgatory.check_and_complete(key)

    async def handle_frame(
        self, frame: bytearray, connection: KafkaConnection
    ) -> Sequence[Chunk] | None:
        """Decode one request, run its handler, return the encoded response (None: no reply)."""
        session = connection.sasl
        if session is not None and session.state is SaslState.LEGACY_TOKENS:
            # After SaslHandshake v0 the client sends raw SASL tokens, no request header.
            return await sasl_api.handle_legacy_token(
                frame, connection, self.services.authenticator
            )
        try:
            header, reader = decode_request_header(frame)
        except ProtocolDecodeError as exc:
            connection.close(f"malformed request header: {exc}")
            return None
        api_key, version = header.request_api_key, header.request_api_version
        if (
            session is not None
            and api_key not in SASL_API_KEYS
            and not session.authenticated(now_ms())
        ):
            # Kafka: ILLEGAL_SASL_STATE, the connection is closed (no response).
            connection.close(
                f"{API_SPECS[api_key].name if api_key in API_SPECS else api_key} request "
                + (
                    "after the SASL session expired (connections.max.reauth.ms)"
                    if session.username is not None
                    else "before SASL authentication"
                )
            )
            return None
        handler = self.handlers.get(api_key)
        if handler is None or not handler.min_version <= version <= handler.max_version:
            return self._unsupported(header, connection)
        try:
            request = decode_request_body(header, reader)
        except UnsupportedVersionError:
            return self._unsupported(header, connection)
        except ProtocolDecodeError as exc:
            connection.close(f"malformed {API_SPECS[api_key].name} v{version} request: {exc}")
            return None
        context = RequestContext(header, connection, self.services)
        started = time.perf_counter()
        response = await handler.func(request, context)
        if type(response) is DeferredResponse:  # Produce waiting for the ISR: encode later
            return DeferredResponse(
                self._finish_deferred(response, header, started, len(frame) + 4)
            )
        self.metrics.requests.record(
            api_key, (time.perf_counter() - started) * 1000.0, len(frame) + 4
        )
        if response is None:
            return None
        if isinstance(response, list):  # a handler that encodes itself (Fetch: file regions)
            return response
        encoded = [encode_response_frame(api_key, version, header.correlation_id, response)]
        if session is not None and session.state is SaslState.FAILED:
            # A failed login or an illegal SASL step: answer, then close (Kafka's way).
            await connection.write(encoded)
            connection.close("SASL authentication failed")
            return None
        return encoded

    async def _finish_deferred(
        self, deferred: DeferredResponse, header: RequestHeader, started: float, size: int
    ) -> Sequence[Chunk] | None:
        """The encoded response of a handler that answered with a DeferredResponse."""
        response = await deferred.awaitable
        api_key = header.request_api_key
        self.metrics.requests.record(api_key, (time.perf_counter() - started) * 1000.0, size)
        if response is None:
            return None
        return [
            encode_response_frame(
                api_key, header.request_api_version, header.correlation_id, response
            )
        ]

    def _unsupported(
        self, header: RequestHeader, connection: KafkaConnection
    ) -> Sequence[Chunk] | None:
        api_key, version = header.request_api_key, header.request_api_version
        spec = API_SPECS.get(api_key)
        if api_key == 18:
            # KIP-511: answer a too-new ApiVersions with v0 so the client can retry lower.
            body = api_versions.response_for(
                self.handlers, error_code=UnsupportedVersionError.error_code
            )
            return [encode_response_frame(18, 0, header.correlation_id, body)]
        if spec is None or version not in spec.valid_versions:
            connection.close(
                f"unsupported request: api key {api_key} version {version} "
                f"({spec.name if spec else 'unknown API'}); check ApiVersions"
            )
            return None
        response = error_response(spec.response, UnsupportedVersionError.error_code)
        if response is None:
            connection.close(f"{spec.name} v{version} is not supported and has no error field")
            return None
        return [encode_response_frame(api_key, version, header.correlation_id, response)]


def build_authorizer(config: BrokerConfig, metadata: MetadataStore) -> AclAuthorizer | None:
    """The ACL authorizer ``authorizer.class.name`` asks for, over the store's ACLs."""
    if not authorizer_enabled(config.authorizer_class_name):
        return None
    return AclAuthorizer(
        metadata,
        AclAuthorizer.parse_super_users(config.super_users),
        config.allow_everyone_if_no_acl_found,
    )


def error_response(response_cls: Any, error_code: int) -> Any | None:
    """A response with only its top-level ``error_code`` set, if it has one."""
    if not any(f.name == "error_code" for f in response_cls.FIELDS):
        return None
    return response_cls(error_code=error_code)
