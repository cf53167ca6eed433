"""Single-node metadata store: topics and their configs in one local JSON file.

``pystream serve`` without ``zookeeper.connect`` keeps cluster metadata here
and is its own controller.  Every change is written atomically (and fsynced)
before it is acknowledged, so a crash leaves either the old or the new
metadata; the ``async`` writes (:class:`~pystream.cluster.metadata.store.ThreadedWrites`)
do that in a thread.  Producer-id blocks are reserved in a file beside it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pystream.cluster.metadata.model import (
    MAX_PRODUCER_ID,
    PartitionState,
    ProducerIdBlock,
    TopicMetadata,
    collision_name,
    validate_topic_name,
)
from pystream.cluster.metadata.store import (
    BrokerEndpoint,
    ScramCredentialChange,
    ThreadedWrites,
    apply_scram_changes,
)
from pystream.errors import (
    InvalidPartitionsError,
    InvalidReplicaAssignmentError,
    InvalidReplicationFactorError,
    InvalidRequestError,
    InvalidTopicException,
    KafkaStorageError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from pystream.fileutil import atomic_write
from pystream.security.acl import (
    AclBinding,
    AclBindingFilter,
    PatternType,
    ResourceType,
    apply_acl_changes,
    bindings_from_json,
    group_by_resource,
    resource_acls_json,
)
from pystream.security.scram import ScramCredential
from pystream.storage.meta_properties import generate_cluster_id

METADATA_FILE = "pystream-metadata.json"
PRODUCER_ID_BLOCK_FILE = "producer-id-block.json"
FORMAT_VERSION = 1
ZERO_UUID = uuid.UUID(int=0)


class LocalMetadataStore(ThreadedWrites):
    """Topics of a one-broker cluster, persisted in ``<dir>/pystream-metadata.json``."""

    def __init__(self, directory: str | Path, broker_id: int) -> None:
        self.path = Path(directory) / METADATA_FILE
        self.producer_id_block_path = Path(directory) / PRODUCER_ID_BLOCK_FILE
        self.broker_id = broker_id
        self._topics: dict[str, TopicMetadata] = {}
        # Dynamic broker configs by entity (this broker's id, or "<default>").
        self._broker_configs: dict[str, dict[str, str]] = {}
        # SCRAM credentials by user, then mechanism (salted hashes only, never a password).
        self._scram: dict[str, dict[str, ScramCredential]] = {}
        # ACL bindings (replaced whole on each change, so readers on the loop see one list).
        self._acls: list[AclBinding] = []
        self._acl_version = 0
        # Writes run in threads (one at a time); reads on the loop see whole dict operations.
        self._lock = threading.Lock()
        # (listener name, host, port) this broker advertises, set once its listeners are bound.
        self._endpoints: list[tuple[str, str, int]] = []
        self._rack: str | None = None
        self.cluster_id = generate_cluster_id()
        if self.path.exists():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._save()

    # -- persistence ---------------------------------------------------------
    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown format version {data.get('version')!r}")
            self.cluster_id = data["cluster_id"]
            self._topics = {t["name"]: TopicMetadata.from_json(t) for t in data["topics"]}
            self._broker_configs = {
                str(entity): {str(k): str(v) for k, v in configs.items()}
                for entity, configs in data.get("broker_configs", {}).items()
            }
            self._scram = {
                str(user): {m: ScramCredential.from_string(c) for m, c in by_mech.items()}
                for user, by_mech in data.get("scram_credentials", {}).items()
            }
            self._acls = [
                binding
                for resource in data.get("acls", [])
                for binding in bindings_from_json(
                    (
                        ResourceType.parse(resource["resource_type"]),
                        PatternType.parse(resource["pattern_type"]),
                        resource["name"],
                    ),
                    resource,
                )
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KafkaStorageError(
                f"cannot read cluster metadata {self.path}: {exc}. Restore it from a backup "
                "or move it away to start with no topics (their logs stay on disk)."
            ) from exc

    def _save(self) -> None:
        data = {
            "version": FORMAT_VERSION,
            "cluster_id": self.cluster_id,
            "topics": [t.to_json() for _, t in sorted(self._topics.items())],
            # Optional (older files have none): the format version stays 1.
            "broker_configs": {e: dict(sorted(c.items())) for e, c in self._broker_configs.items()},
            # Kafka's credential strings (salt, stored_key, server_key, iterations).
            "scram_credentials": {
                user: {m: c.to_string() for m, c in sorted(by_mech.items())}
                for user, by_mech in sorted(self._scram.items())
            },
            # Optional too: one entry per resource pattern, Kafka's /kafka-acl JSON inside.
            "acls": [
                {
                    "resource_type": rtype.camel,
                    "pattern_type": ptype.name,
                    "name": name,
                    **resource_acls_json(bindings),
                }
                for (rtype, ptype, name), bindings in group_by_resource(self._acls).items()
            ],
        }
        atomic_write(self.path, json.dumps(data, indent=1).encode())

    # -- queries -------------------------------------------------------------
    def topics(self) -> dict[str, TopicMetadata]:
        """All topics by name (do not mutate)."""
        return self._topics

    def get_topic(self, name: str) -> TopicMetadata | None:
        return self._topics.get(name)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMetadata | None:
        for topic in self._topics.values():
            if topic.topic_id == topic_id:
                return topic
        return None

    def live_brokers(self) -> list[int]:
        return [self.broker_id]

    @property
    def controller_id(self) -> int:
        """A single node is its own controller."""
        return self.broker_id

    def register(self, endpoints: list[tuple[str, str, int]], rack: str | None = None) -> None:
        """Record this broker's advertised (listener name, host, port)s once they are bound."""
        self._endpoints = list(endpoints)
        self._rack = rack

    def broker_endpoints(self, listener_name: str | None) -> list[BrokerEndpoint]:
        if not self._endpoints:
            return []
        name, host, port = next(
            (e for e in self._endpoints if e[0] == listener_name), self._endpoints[0]
        )
        return [(self.broker_id, host, port, self._rack)]

    async def wait_for(self, predicate: Callable[[Any], bool], timeout: float) -> None:
        """Until ``predicate(self)`` holds: only this broker's own writes change a single
        node's metadata, so a predicate that does not hold now is awaited briefly."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self):
            if asyncio.get_running_loop().time() >= deadline:
                raise TimeoutError(f"metadata did not reach the expected state in {timeout} s")
            await asyncio.sleep(0.01)

    # -- changes -------------------------------------------------------------
    def check_create_topic(
        self,
        name: str,
        num_partitions: int,
        replication_factor: int,
        assignments: dict[int, list[int]] | None = None,
    ) -> None:
        """Everything create_topic checks, without creating (CreateTopics validate_only).

        ``assignments`` (partition -> replica broker ids) replaces the counts when given.
        """
        validate_topic_name(name)
        if name in self._topics:
            raise TopicAlreadyExistsError(f"Topic '{name}' already exists.")
        collides = collision_name(name)
        for existing in self._topics:
            if collision_name(existing) == collides:
                raise InvalidTopicException(
                    f"Topic '{name}' collides with existing topic: {existing} ('.' and '_' "
                    "are the same in metric names)"
                )
        if assignments:
            self._check_assignments(list(assignments.values()), None)
            missing = sorted(set(range(len(assignments))) - set(assignments))
            if missing:
                raise InvalidReplicaAssignmentError(
                    f"partitions should be a consecutive 0-based integer sequence; "
                    f"partition {missing[0]} has no assignment"
                )
            return
        if num_partitions < 1:
            raise InvalidPartitionsError(
                f"number of partitions must be at least 1, got {num_partitions}"
            )
        brokers = len(self.live_brokers())
        if replication_factor < 1 or replication_factor > brokers:
            raise InvalidReplicationFactorError(
                f"replication factor {replication_factor} is not possible with {brokers} "
                f"available broker(s); use 1..{brokers}"
            )

    def _check_assignments(
        self, assignments: list[list[int]], replication_factor: int | None
    ) -> None:
        """Manual replica assignments: live brokers, each once, the same count everywhere."""
        live = set(self.live_brokers())
        for replicas in assignments:
            if not replicas:
                raise InvalidReplicaAssignmentError(
                    "The manual partition assignment includes an empty replica list."
                )
            for broker in replicas:
                if broker not in live:
                    raise InvalidReplicaAssignmentError(
                        f"The manual partition assignment includes broker {broker}, but no such "
                        f"broker is registered (live brokers: {sorted(live)})."
                    )
            if len(set(replicas)) != len(replicas):
                raise InvalidReplicaAssignmentError(
                    f"The manual partition assignment {replicas} includes a broker more than once."
                )
            if replication_factor is not None and len(replicas) != replication_factor:
                raise InvalidReplicaAssignmentError(
                    f"The manual partition assignment includes a partition with {len(replicas)} "
                    "replica(s), but this is not consistent with previous partitions, which have "
                    f"{replication_factor} replica(s)."
                )
            replication_factor = len(replicas)

    def plan_topic(
        self,
        name: str,
        num_partitions: int,
        replication_factor: int = 1,
        configs: dict[str, str] | None = None,
        assignments: dict[int, list[int]] | None = None,
    ) -> TopicMetadata:
        """The topic create_topic would make, checked but not stored (its id is all zeros)."""
        self.check_create_topic(name, num_partitions, replication_factor, assignments)
        if assignments:
            partitions = {p: self._new_partition(r) for p, r in sorted(assignments.items())}
        else:
            partitions = {p: self._new_partition() for p in range(num_partitions)}
        return TopicMetadata(
            name=name, topic_id=ZERO_UUID, partitions=partitions, configs=dict(configs or {})
        )

    def create_topic_blocking(
        self,
        name: str,
        num_partitions: int,
        replication_factor: int = 1,
        configs: dict[str, str] | None = None,
        assignments: dict[int, list[int]] | None = None,
    ) -> TopicMetadata:
        """Create a topic (led by this broker unless ``assignments`` says otherwise); raises a
        Kafka error on bad input."""
        with self._lock:
            topic = self.plan_topic(name, num_partitions, replication_factor, configs, assignments)
            topic.topic_id = uuid.uuid4()
            self._topics[name] = topic
            self._save()
        return topic

    def _new_partition(self, replicas: list[int] | None = None) -> PartitionState:
        replicas = list(replicas) if replicas else [self.broker_id]
        return PartitionState(replicas=replicas, leader=replicas[0], isr=list(replicas))

    def delete_topic_blocking(self, name: str) -> TopicMetadata:
        with self._lock:
            topic = self._require(name)
            del self._topics[name]
            self._save()
        return topic

    def create_partitions_blocking(
        self,
        name: str,
        total: int,
        assignments: list[list[int]] | None = None,
        *,
        validate_only: bool = False,
    ) -> list[int]:
        """Grow a topic to ``total`` partitions; returns the new partition indexes.

        ``assignments`` gives the replicas of each new partition, in order.
        """
        topic = self._require(name)
        current = len(topic.partitions)
        if total == current:
            raise InvalidPartitionsError(
                f"Topic already has {current} partition(s); the new count must be larger."
            )
        if total < current:
            raise InvalidPartitionsError(
                f"The topic {name} currently has {current} partition(s); {total} would not be an "
                "increase: the new count must be larger (Kafka cannot remove partitions)."
            )
        new = list(range(current, total))
        if assignments is not None:
            if len(assignments) != len(new):
                raise InvalidReplicaAssignmentError(
                    f"Attempted to add {len(new)} additional partition(s), but "
                    f"{len(assignments)} assignment(s) were specified."
                )
            replication_factor = len(topic.partitions[min(topic.partitions)].replicas)
            self._check_assignments(assignments, replication_factor)
        if not validate_only:
            with self._lock:
                for i, partition in enumerate(new):
                    replicas = assignments[i] if assignments is not None else None
                    topic.partitions[partition] = self._new_partition(replicas)
                self._save()
        return new

    def set_topic_configs_blocking(self, name: str, configs: dict[str, str]) -> None:
        """Replace a topic's config overrides (callers validate them first)."""
        with self._lock:
            topic = self._require(name)
            topic.configs = dict(configs)
            self._save()

    def broker_configs(self, entity: str) -> dict[str, str]:
        """The dynamic broker configs of ``entity`` ({} if none)."""
        return dict(self._broker_configs.get(str(entity), {}))

    def set_broker_configs_blocking(self, entity: str, configs: dict[str, str]) -> None:
        """Replace the dynamic broker configs of ``entity`` (callers validate them first)."""
        with self._lock:
            if configs:
                self._broker_configs[str(entity)] = dict(configs)
            else:
                self._broker_configs.pop(str(entity), None)
            self._save()

    def scram_credentials(self) -> dict[str, dict[str, ScramCredential]]:
        """Every user's SCRAM credentials (do not mutate)."""
        return self._scram

    def alter_scram_credentials_blocking(self, changes: list[ScramCredentialChange]) -> None:
        """Store or delete credentials, all in one durable write."""
        with self._lock:
            # A new dict each time: readers on the loop see the old or the new one whole.
            scram = {user: dict(by_mech) for user, by_mech in self._scram.items()}
            apply_scram_changes(scram, changes)
            self._scram = scram
            self._save()

    def update_isr_blocking(
        self, topic: str, partition: int, isr: list[int], leader_epoch: int, partition_epoch: int
    ) -> PartitionState:
        """A single node is every partition's only replica: its ISR never changes."""
        raise InvalidRequestError("a single node has no ISR to change")

    # -- producer ids ------------------------------------------------------------------
    def _next_free_producer_id(self) -> int:
        path = self.producer_id_block_path
        if not path.exists():
            return 0
        try:
            return int(json.loads(path.read_text())["next_producer_id"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KafkaStorageError(
                f"cannot read {path}: {exc}. Producer ids would risk being reused; restore "
                "the file, or write a next_producer_id above every id in use"
            ) from exc

    def allocate_producer_ids_blocking(self, broker_id: int, size: int) -> ProducerIdBlock:
        """Reserve ids ``next .. next + size - 1`` in ``producer-id-block.json``."""
        with self._lock:
            first = self._next_free_producer_id()
            if first + size - 1 > MAX_PRODUCER_ID:
                raise KafkaStorageError("producer ids are exhausted")
            data = {"version": 1, "broker_id": broker_id, "next_producer_id": first + size}
            # Durable before any id of the block is handed out: a crash can skip ids, never
            # repeat one.
            atomic_write(self.producer_id_block_path, json.dumps(data).encode())
        return ProducerIdBlock(broker_id, first, size)

    # -- ACLs --------------------------------------------------------------------------
    @property
    def acl_version(self) -> int:
        """Moves on every ACL change."""
        return self._acl_version

    def acls(self) -> list[AclBinding]:
        """Every stored ACL binding (do not mutate)."""
        return self._acls

    def check_acl_resource_name(self, name: str) -> None:
        """The local file keeps any name."""

    def change_acls_blocking(
        self, create: list[AclBinding], delete_filters: list[AclBindingFilter]
    ) -> list[list[AclBinding]]:
        """Add ``create``, remove what ``delete_filters`` match, save; per filter, what it
        removed."""
        with self._lock:
            kept, removed = apply_acl_changes(self._acls, create, delete_filters)
            if kept != self._acls:
                previous = self._acls
                self._acls = kept
                try:
                    self._save()
                except BaseException:
                    self._acls = previous
                    raise
                self._acl_version += 1
        return removed

    def _require(self, name: str) -> TopicMetadata:
        topic = self._topics.get(name)
        if topic is None:
            raise UnknownTopicOrPartitionError(f"Topic '{name}' does not exist")
        return topic
