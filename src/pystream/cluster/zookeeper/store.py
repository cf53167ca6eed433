"""Cluster metadata in ZooKeeper: the :class:`LocalMetadataStore` interface, for many brokers.

Reads are answered from memory (:class:`~pystream.cluster.zookeeper.cache.ZkMetadataCache`,
kept current by watches); writes go to ZooKeeper first and are then applied to
the cache at once, so this broker reads its own writes.

Concurrent writers.  Every write is compare-and-set on znode versions, or a
create that fails if the znode exists, inside an atomic multi-op: two brokers
creating one topic, growing one topic or reserving producer ids cannot overwrite
each other; the loser gets the Kafka error it would get from one broker
(TOPIC_ALREADY_EXISTS, INVALID_PARTITIONS ...).

Writes block the calling thread for a ZooKeeper round trip or two.  They are
admin operations (create/delete/grow topics, configs, ISR changes, producer-id
blocks) and rare; a caller that minds runs them with ``asyncio.to_thread`` —
their cache updates are then posted to the loop instead of applied in place.

Topic deletion is Kafka's: :meth:`ZkMetadataStore.delete_topic` records the
request under ``/admin/delete_topics``; the controller deletes the znodes;
every broker sees the topic vanish (a :class:`TopicChange` with ``after`` None)
and drops its replicas.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from pystream.cluster.metadata.local_store import LocalMetadataStore
from pystream.cluster.metadata.model import PartitionState, ProducerIdBlock, TopicMetadata
from pystream.cluster.metadata.store import BrokerEndpoint, ScramCredentialChange, ThreadedWrites
from pystream.cluster.zookeeper import acls as zk_acls
from pystream.cluster.zookeeper import entity_configs
from pystream.cluster.zookeeper.assignment import assign_replicas
from pystream.cluster.zookeeper.cache import (
    BrokerChange,
    BrokerConfigChange,
    ControllerChange,
    MetadataEvent,
    TopicChange,
    ZkMetadataCache,
    read_topic,
)
from pystream.cluster.zookeeper.client import (
    LoopHandoff,
    TimedClient,
    TransactionFailed,
    kafka_errors,
)
from pystream.cluster.zookeeper.entity_configs import MAX_CAS_ATTEMPTS
from pystream.cluster.zookeeper.paths import (
    CLUSTER_ID,
    CONTROLLER_EPOCH,
    DEFAULT_BROKER_ENTITY,
    ISR_CHANGE_PREFIX,
    BrokerInfo,
    LeaderAndIsr,
    TopicAssignment,
    broker_config_path,
    config_change_entity_path,
    decode_cluster_id,
    decode_config,
    decode_controller_epoch,
    delete_topic_path,
    encode_cluster_id,
    encode_config,
    encode_isr_change,
    new_topic_id,
    partition_path,
    partition_state_path,
    partitions_path,
    topic_config_path,
    topic_path,
)
from pystream.cluster.zookeeper.producer_ids import ZkProducerIdBlockStore
from pystream.errors import (
    FencedLeaderEpochError,
    InvalidPartitionsError,
    InvalidReplicaAssignmentError,
    InvalidRequestError,
    InvalidTopicException,
    InvalidUpdateVersionError,
    KafkaStorageError,
    NotLeaderOrFollowerError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from pystream.security.acl import AclBinding, AclBindingFilter
from pystream.security.scram import ScramCredential
from pystream.storage.meta_properties import generate_cluster_id

log = logging.getLogger(__name__)

__all__ = [
    "BrokerChange",
    "BrokerConfigChange",
    "ControllerChange",
    "MetadataEvent",
    "TopicChange",
    "ZkMetadataStore",
]

ZERO_UUID = uuid.UUID(int=0)
DEFAULT_REQUEST_TIMEOUT_MS = 10_000


class ZkMetadataStore(ThreadedWrites):
    """Topics, partition states, configs and brokers of a ZooKeeper-coordinated cluster.

    ``await start()`` on the broker's loop before use; ``close()`` at shutdown (the
    caller owns the kazoo client and closes it).
    """

    # Validation is the single node's, unchanged: it reads only ``_topics`` (the cache)
    # and ``live_brokers()``.  ZooKeeper has the last word: a create that races another
    # broker's fails there with TOPIC_ALREADY_EXISTS.
    check_create_topic = LocalMetadataStore.check_create_topic
    _check_assignments = LocalMetadataStore._check_assignments

    def __init__(
        self,
        client: KazooClient,
        broker_id: int,
        *,
        request_timeout_ms: int = DEFAULT_REQUEST_TIMEOUT_MS,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        # Every call made on behalf of a request has a deadline (see TimedClient).
        self.zk = TimedClient(client, request_timeout_ms / 1000)
        self.broker_id = broker_id
        self.cluster_id = ""
        self.cache = ZkMetadataCache(client, broker_id)
        self._rng = rng or random.Random()
        self._producer_ids = ZkProducerIdBlockStore(self.zk)

    # === lifecycle ===============================================================================
    async def start(self) -> None:
        """Read the cluster id and arm the watches; returns with the cache complete."""
        handoff = LoopHandoff()
        # Arming reads synchronously (kazoo's recipes take a first reading), so it runs off
        # the loop.  Every first reading is posted before the thread returns, and the loop
        # runs posts in order: all are applied by the time this await resumes.
        self.cluster_id = await asyncio.to_thread(self._start, handoff)

    def _start(self, handoff: LoopHandoff) -> str:
        try:
            self.client.create(CLUSTER_ID, encode_cluster_id(generate_cluster_id()), makepath=True)
        except NodeExistsError:
            pass  # the cluster's first broker wrote it; everyone else reads it
        data, _ = self.client.get(CLUSTER_ID)
        self.cache.start(handoff)
        return decode_cluster_id(data)

    def close(self) -> None:
        self.cache.close()

    # === queries (the LocalMetadataStore interface) ==============================================
    @property
    def _topics(self) -> dict[str, TopicMetadata]:
        # A copy (atomic under the GIL): validation may run off the loop, which meanwhile
        # applies watch readings to the cache.
        return dict(self.cache.topics)

    def topics(self) -> dict[str, TopicMetadata]:
        """All topics by name (do not mutate)."""
        return self.cache.topics

    def get_topic(self, name: str) -> TopicMetadata | None:
        return self.cache.topics.get(name)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMetadata | None:
        for topic in self.cache.topics.values():
            if topic.topic_id == topic_id:
                return topic
        return None

    def live_brokers(self) -> list[int]:
        return sorted(self.cache.brokers)

    # --- cluster-only queries
    def broker_endpoints(self, listener_name: str | None) -> list[BrokerEndpoint]:
        """(id, host, port, rack) of every registered broker on ``listener_name``."""
        result: list[BrokerEndpoint] = []
        for broker_id, info in sorted(self.brokers().items()):
            endpoint = info.endpoint_for(listener_name)
            if endpoint is not None:
                result.append((broker_id, endpoint.host, endpoint.port, info.rack))
        return result

    def brokers(self) -> dict[int, BrokerInfo]:
        """Registered brokers (endpoints, rack, broker epoch) by id (do not mutate)."""
        return self.cache.brokers

    @property
    def controller_id(self) -> int:
        """The active controller's broker id, -1 while none is elected."""
        return self.cache.controller_id

    @kafka_errors
    def broker_configs(self, entity: int | str = DEFAULT_BROKER_ENTITY) -> dict[str, str]:
        """Dynamic config overrides of a broker id or of ``<default>``."""
        cached = self.cache.broker_configs(str(entity))
        if cached is not None:
            return cached
        try:  # another broker's: not watched here, so read it
            data, _ = self.zk.get(broker_config_path(entity))
        except NoNodeError:
            return {}
        return decode_config(data, broker_config_path(entity))

    def add_listener(self, listener: Callable[[MetadataEvent], None]) -> None:
        """Call ``listener(event)`` on the loop after each change reaches the cache."""
        self.cache.add_listener(listener)

    def remove_listener(self, listener: Callable[[MetadataEvent], None]) -> None:
        self.cache.remove_listener(listener)

    async def wait_for(self, predicate: Callable[[ZkMetadataStore], bool], timeout: float) -> None:
        """Until ``predicate(store)`` holds (checked after every change); TimeoutError after
        ``timeout`` seconds — e.g. DeleteTopics waiting for the controller to finish."""
        await self.cache.wait_for(lambda: predicate(self), timeout)

    # === topic changes ===========================================================================
    def plan_topic(
        self,
        name: str,
        num_partitions: int,
        replication_factor: int = 1,
        configs: dict[str, str] | None = None,
        assignments: dict[int, list[int]] | None = None,
    ) -> TopicMetadata:
        """The topic create_topic would make, checked but not stored (its id is all zeros).

        Without ``assignments`` the replicas are spread over the registered brokers
        (rack-aware when they all have ``broker.rack``), leaders first.
        """
        self.check_create_topic(name, num_partitions, replication_factor, assignments)
        if not assignments:
            racks = {b: info.rack for b, info in dict(self.cache.brokers).items()}
            assignments = assign_replicas(racks, num_partitions, replication_factor, rng=self._rng)
        partitions = {
            p: PartitionState(replicas=list(r), leader=r[0], isr=list(r))
            for p, r in sorted(assignments.items())
        }
        return TopicMetadata(name, ZERO_UUID, partitions, dict(configs or {}))

    @kafka_errors
    def create_topic_blocking(
        self,
        name: str,
        num_partitions: int,
        replication_factor: int = 1,
        configs: dict[str, str] | None = None,
        assignments: dict[int, list[int]] | None = None,
    ) -> TopicMetadata:
        """Create a topic: its assignment, config and first partition states in one multi-op.

        The first replica of each partition leads it, every replica is in sync (the logs
        are empty).  Writing the states here rather than waiting for the controller makes
        the topic usable at once; the controller still checks each new topic and elects
        again if a chosen leader died meanwhile.
        """
        plan = self.plan_topic(name, num_partitions, replication_factor, configs, assignments)
        if self.zk.exists(delete_topic_path(name)):
            raise TopicAlreadyExistsError(f"Topic '{name}' is marked for deletion; retry later.")
        assignment = TopicAssignment(
            new_topic_id(), {p: s.replicas for p, s in plan.partitions.items()}
        )
        controller_epoch = self._controller_epoch()
        states = {
            p: LeaderAndIsr(replicas[0], 0, list(replicas), controller_epoch)
            for p, replicas in assignment.partitions.items()
        }
        for _ in range(MAX_CAS_ATTEMPTS):
            config_stat = self.zk.exists(topic_config_path(name))
            txn = self.zk.transaction()
            txn.create(topic_path(name), assignment.to_bytes())
            txn.create(partitions_path(name))
            for p, state in states.items():
                txn.create(partition_path(name, p))
                txn.create(partition_state_path(name, p), state.to_bytes())
            config_bytes = encode_config(plan.configs)
            if config_stat is None:
                txn.create(topic_config_path(name), config_bytes)
            else:  # left over (e.g. by a tool that writes configs first): take it over
                txn.set_data(topic_config_path(name), config_bytes, config_stat.version)
            try:
                self.zk.commit(txn)
                break
            except TransactionFailed as failed:
                if failed.index == 0 and isinstance(failed.error, NodeExistsError):
                    raise TopicAlreadyExistsError(f"Topic '{name}' already exists.") from None
                if isinstance(failed.error, NodeExistsError | BadVersionError):
                    continue  # the config znode changed under us: look again
                raise KafkaStorageError(
                    f"could not create topic {name} in ZooKeeper: {failed.error!r}"
                ) from None
        else:
            raise KafkaStorageError(f"could not create topic {name}: its config keeps changing")
        data, stat = self.zk.get(topic_path(name))
        # One multi-op: every znode it wrote carries the topic znode's creation zxid.  If the
        # topic changed since (grown, or deleted and re-created), the watches will tell.
        unchanged = stat.mzxid == stat.czxid
        if unchanged and TopicAssignment.from_bytes(name, data).topic_id == assignment.topic_id:
            self._apply_local(
                self.cache.apply_topic_write,
                name,
                assignment,
                stat,
                states,
                plan.configs,
                stat.czxid,
            )
        return TopicMetadata(
            name,
            assignment.topic_id,
            {
                p: PartitionState(
                    replicas=list(assignment.partitions[p]),
                    leader=s.leader,
                    leader_epoch=s.leader_epoch,
                    isr=list(s.isr),
                    partition_epoch=0,
                )
                for p, s in states.items()
            },
            dict(plan.configs),
        )

    @kafka_errors
    def delete_topic_blocking(self, name: str) -> TopicMetadata:
        """Ask the controller to delete ``name`` (``/admin/delete_topics/<name>``).

        Returns at once with the topic as it was; it leaves :meth:`topics` when the
        controller has deleted it (``wait_for`` that, if you must).
        """
        topic = self.cache.topics.get(name) or read_topic(self.zk, name)
        if topic is None:
            raise UnknownTopicOrPartitionError(f"Topic '{name}' does not exist")
        try:
            self.zk.create(delete_topic_path(name))
        except NodeExistsError:
            pass  # already requested
        log.info("requested deletion of topic %s", name)
        return topic

    @kafka_errors
    def deletion_pending(self, name: str) -> bool:
        """Whether ``name`` is marked for deletion and the controller has not finished."""
        return self.zk.exists(delete_topic_path(name)) is not None

    @kafka_errors
    def create_partitions_blocking(
        self,
        name: str,
        total: int,
        assignments: list[list[int]] | None = None,
        *,
        validate_only: bool = False,
    ) -> list[int]:
        """Grow a topic to ``total`` partitions; returns the new partition indexes.

        ``assignments`` gives the replicas of each new partition, in order; without
        it they continue the topic's existing spread (Kafka's start index: where
        partition 0's leader sits in the broker list).
        """
        for _ in range(MAX_CAS_ATTEMPTS):
            try:
                data, stat = self.zk.get(topic_path(name))
            except NoNodeError:
                raise UnknownTopicOrPartitionError(f"Topic '{name}' does not exist") from None
            if self.zk.exists(delete_topic_path(name)):
                raise InvalidTopicException(f"The topic {name} is queued for deletion.")
            current_assignment = TopicAssignment.from_bytes(name, data)
            current = len(current_assignment.partitions)
            if total == current:
                raise InvalidPartitionsError(
                    f"Topic already has {current} partition(s); the new count must be larger."
                )
            if total < current:
                raise InvalidPartitionsError(
                    f"The topic {name} currently has {current} partition(s); {total} would not "
                    "be an increase: the new count must be larger (Kafka cannot remove "
                    "partitions)."
                )
            new = list(range(current, total))
            first_replicas = current_assignment.partitions[min(current_assignment.partitions)]
            replication_factor = len(first_replicas)
            if assignments is not None:
                if len(assignments) != len(new):
                    raise InvalidReplicaAssignmentError(
                        f"Attempted to add {len(new)} additional partition(s), but "
                        f"{len(assignments)} assignment(s) were specified."
                    )
                self._check_assignments(assignments, replication_factor)
                added = dict(zip(new, (list(r) for r in assignments), strict=True))
            else:
                racks = {b: info.rack for b, info in dict(self.cache.brokers).items()}
                live = sorted(racks)
                start = live.index(first_replicas[0]) if first_replicas[0] in live else -1
                added = assign_replicas(
                    racks,
                    len(new),
                    replication_factor,
                    start_index=start,
                    start_partition=current,
                    rng=self._rng,
                )
            if validate_only:
                return new
            grown = TopicAssignment(
                current_assignment.topic_id,
                {**current_assignment.partitions, **added},
                current_assignment.adding,  # ongoing reassignments go on
                current_assignment.removing,
            )
            controller_epoch = self._controller_epoch()
            states = {p: LeaderAndIsr(r[0], 0, list(r), controller_epoch) for p, r in added.items()}
            txn = self.zk.transaction()
            txn.set_data(topic_path(name), grown.to_bytes(), stat.version)
            for p, state in states.items():
                txn.create(partition_path(name, p))
                txn.create(partition_state_path(name, p), state.to_bytes())
            try:
                results = self.zk.commit(txn)
            except TransactionFailed as failed:
                if failed.index == 0:
                    continue  # grown or deleted concurrently: read it again and re-check
                raise KafkaStorageError(
                    f"could not add partitions to {name}: {failed.error!r}"
                ) from None
            written = results[0]  # set_data answers with the new stat (the multi-op's zxid)
            self._apply_local(
                self.cache.apply_topic_write, name, grown, written, states, None, written.mzxid
            )
            log.info("topic %s now has %d partition(s)", name, total)
            return new
        raise KafkaStorageError(f"could not add partitions to {name}: it keeps changing")

    @kafka_errors
    def set_topic_configs_blocking(self, name: str, configs: dict[str, str]) -> None:
        """Replace a topic's config overrides (callers validate them first).

        Written with the version just read, so a concurrent replacement is never
        silently overwritten by a stale one: the later writer re-reads and wins.
        """
        if not self.zk.exists(topic_path(name)):
            raise UnknownTopicOrPartitionError(f"Topic '{name}' does not exist")
        data = encode_config(configs)
        path = topic_config_path(name)
        for _ in range(MAX_CAS_ATTEMPTS):
            try:
                stat = self.zk.exists(path)
                if stat is None:
                    self.zk.create(path, data)
                    _, stat = self.zk.get(path)
                else:
                    stat = self.zk.set(path, data, stat.version)
            except (BadVersionError, NodeExistsError):
                continue
            self._apply_local(self.cache.apply_config, name, dict(configs), stat)
            return
        raise KafkaStorageError(f"could not write the configs of {name}: they keep changing")

    @kafka_errors
    def set_broker_configs_blocking(self, entity: int | str, configs: dict[str, str]) -> None:
        """Replace the dynamic config overrides of a broker id or of ``<default>``.

        As Kafka's ``AdminZkClient.changeBrokerConfig``: the ``{"version":1,"config":..}``
        znode, and a ``/config/changes/config_change_<seq>`` notification naming
        ``brokers/<entity>`` for brokers (and tools) that follow the change log, in one
        multi-op compare-and-set on the version just read.
        """
        self._write_entity_config(
            broker_config_path(entity),
            config_change_entity_path(entity),
            configs,
            lambda written: self.cache.apply_broker_config(str(entity), dict(configs), written),
            f"the configs of broker {entity}",
        )

    def scram_credentials(self) -> dict[str, dict[str, ScramCredential]]:
        """Every user's SCRAM credentials, from the watched ``/config/users`` (do not mutate)."""
        return self.cache.scram_credentials

    @kafka_errors
    def alter_scram_credentials_blocking(self, changes: list[ScramCredentialChange]) -> None:
        """Store or delete credentials (see :func:`entity_configs.alter_scram_credentials`),
        then apply them to this broker's cache (the watches bring them to the others)."""
        for user, configs, stat in entity_configs.alter_scram_credentials(self.zk, changes):
            if stat is not None:
                self._apply_local(self.cache.apply_user_config, user, configs, stat)

    def _write_entity_config(
        self,
        path: str,
        entity_path: str,
        configs: dict[str, str],
        apply: Callable[[Any], None],
        what: str,
    ) -> None:
        """Write a ``/config/<type>/<entity>`` znode and its change notification (see
        :func:`entity_configs.write_entity_config`), then ``apply(stat)`` on the loop."""
        written = entity_configs.write_entity_config(self.zk, path, entity_path, configs, what)
        if written is not None:
            self._apply_local(apply, written)

    def _purge_changes(self, directory: str, node_prefix: str) -> None:
        entity_configs.purge_changes(self.zk, directory, node_prefix)

    # === ACLs ====================================================================================
    @property
    def acl_version(self) -> int:
        """Moves on every ACL change this broker sees (its own, or another's via the watch)."""
        return self.cache.acl_version

    def acls(self) -> list[AclBinding]:
        """Every ACL binding, as last read from ZooKeeper (do not mutate)."""
        return self.cache.acls

    def check_acl_resource_name(self, name: str) -> None:
        """See :func:`~pystream.cluster.zookeeper.acls.check_resource_name`."""
        zk_acls.check_resource_name(name)

    @kafka_errors
    def change_acls_blocking(
        self, create: list[AclBinding], delete_filters: list[AclBindingFilter]
    ) -> list[list[AclBinding]]:
        """Write ACL changes at Kafka's layout (see zookeeper/acls.py), then read the ACLs
        back into the cache so this broker enforces them at once."""
        removed = zk_acls.change_acls(self.zk, create, delete_filters)
        self._apply_local(self.cache.apply_acls, *zk_acls.read_acls(self.zk))
        for directory in zk_acls.ACL_CHANGE_DIRS:
            self._purge_changes(directory, zk_acls.ACL_CHANGE_NODE)
        return removed

    # === partition state changes by the leader ===================================================
    @kafka_errors
    def update_isr_blocking(
        self, topic: str, partition: int, isr: list[int], leader_epoch: int, partition_epoch: int
    ) -> PartitionState:
        """The leader (this broker) shrinks or expands a partition's ISR.

        Written only over the state version the leader last saw (``partition_epoch``)
        and only if that state names this broker as leader in ``leader_epoch``: a
        replaced leader, or one that missed a change, cannot write.  A
        ``/isr_change_notification`` tells the controller.  Raises
        NotLeaderOrFollower / FencedLeaderEpoch when this broker no longer leads,
        InvalidUpdateVersion when it leads but its view is stale (refresh and retry).
        """
        if self.broker_id not in isr:
            raise InvalidRequestError(f"the leader {self.broker_id} must stay in the ISR {isr}")
        name = f"{topic}-{partition}"
        path = partition_state_path(topic, partition)
        try:
            data, stat = self.zk.get(path)
        except NoNodeError:
            raise UnknownTopicOrPartitionError(f"{name} does not exist (deleted?)") from None
        current = LeaderAndIsr.from_bytes(data, path)
        if current.leader != self.broker_id:
            raise NotLeaderOrFollowerError(
                f"broker {self.broker_id} does not lead {name} (leader {current.leader})"
            )
        if current.leader_epoch != leader_epoch:
            raise FencedLeaderEpochError(
                f"{name}: leader epoch {leader_epoch} is stale, now {current.leader_epoch}"
            )
        if stat.version != partition_epoch:
            raise InvalidUpdateVersionError(
                f"{name}: partition epoch {partition_epoch} is stale, now {stat.version}; "
                "refresh the partition state and retry"
            )
        state = LeaderAndIsr(self.broker_id, leader_epoch, list(isr), current.controller_epoch)
        txn = self.zk.transaction()
        # Compare-and-set on the version checked above: what was verified is what is replaced.
        txn.set_data(path, state.to_bytes(), stat.version)
        txn.create(ISR_CHANGE_PREFIX, encode_isr_change([(topic, partition)]), sequence=True)
        try:
            results = self.zk.commit(txn)
        except TransactionFailed as failed:
            raise InvalidUpdateVersionError(
                f"{name}: the partition state changed while the ISR was being written "
                f"({type(failed.error).__name__}); refresh it and retry"
            ) from None
        written = results[0]
        self._apply_local(self.cache.apply_state, topic, partition, state, written)
        assignment = self.cache.assignment(topic)
        replicas = assignment.value.partitions.get(partition, []) if assignment else []
        return PartitionState(
            list(replicas), self.broker_id, leader_epoch, list(isr), written.version
        )

    # === producer ids ============================================================================
    @kafka_errors
    def allocate_producer_ids_blocking(self, broker_id: int, size: int) -> ProducerIdBlock:
        """Reserve producer ids cluster-wide (``/latest_producer_id_block``)."""
        return self._producer_ids.allocate_block(broker_id, size)

    # === helpers ===============================================================================
    def _controller_epoch(self) -> int:
        try:
            data, _ = self.zk.get(CONTROLLER_EPOCH)
        except NoNodeError:
            return 0
        return decode_controller_epoch(data)

    def _apply_local(self, fn: Callable[..., None], *args: Any) -> None:
        """Apply our own write to the cache: now if we are on the loop, else via the loop."""
        handoff = self.cache.handoff
        if handoff is None or handoff.on_owner_thread():
            fn(*args)
        else:
            handoff.post(fn, *args)
