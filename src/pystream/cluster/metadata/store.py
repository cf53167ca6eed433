"""The interface every metadata store offers: a local file (one node) or ZooKeeper (a cluster).

Reads come from memory (the local file's contents, or the ZooKeeper cache kept
current by watches) and are cheap on the event loop.  Every write is
``async``: the local store writes and fsyncs its file in a thread, the
ZooKeeper store makes its round trips in a thread, so no caller can block the
loop by accident.  The ``*_blocking`` methods the stores also have are for
code that already runs in a thread (and for tests).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from pystream.cluster.metadata.model import PartitionState, ProducerIdBlock, TopicMetadata
from pystream.security.acl import AclBinding, AclBindingFilter
from pystream.security.scram import ScramCredential

# (user, mechanism, credential) to store, or (user, mechanism, None) to delete.
ScramCredentialChange = tuple[str, str, ScramCredential | None]

# (broker id, host, port, rack) of a live broker as clients on one listener reach it.
BrokerEndpoint = tuple[int, str, int, str | None]


def apply_scram_changes(
    scram: dict[str, dict[str, ScramCredential]], changes: list[ScramCredentialChange]
) -> None:
    """Apply credential changes to a ``{user: {mechanism: credential}}`` map in place (a user
    left with no mechanism disappears)."""
    for user, mechanism, credential in changes:
        if credential is None:
            by_mech = scram.get(user, {})
            by_mech.pop(mechanism, None)
            if not by_mech:
                scram.pop(user, None)
        else:
            scram.setdefault(user, {})[mechanism] = credential


class MetadataStore(Protocol):
    """Topics, partition states, brokers and producer-id blocks of the cluster."""

    broker_id: int
    cluster_id: str

    # --- reads (from memory) ----------------------------------------------------------------
    def topics(self) -> dict[str, TopicMetadata]:
        """Every topic by name (do not mutate)."""
        ...

    def get_topic(self, name: str) -> TopicMetadata | None: ...

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMetadata | None: ...

    def live_brokers(self) -> list[int]:
        """Ids of the registered (live) brokers."""
        ...

    @property
    def controller_id(self) -> int:
        """The active controller (-1 while none is elected); a single node is its own."""
        ...

    def broker_endpoints(self, listener_name: str | None) -> list[BrokerEndpoint]:
        """Every live broker as reached on ``listener_name`` (its first PLAINTEXT endpoint
        if it has no such listener), ordered by id."""
        ...

    def plan_topic(
        self,
        name: str,
        num_partitions: int,
        replication_factor: int = 1,
        configs: dict[str, str] | None = None,
        assignments: dict[int, list[int]] | None = None,
    ) -> TopicMetadata:
        """The topic :meth:`create_topic` would make, checked but not stored (id all zeros);
        raises the Kafka error create_topic would."""
        ...

    async def wait_for(self, predicate: Callable[[Any], bool], timeout: float) -> None:
        """Until ``predicate(store)`` holds (a cluster applies the controller's changes as
        its watches fire); TimeoutError after ``timeout`` seconds."""
        ...

    # --- writes (off the loop) --------------------------------------------------------------
    async def create_topic(
        self,
        name: str,
        num_partitions: int,
        replication_factor: int = 1,
        configs: dict[str, str] | None = None,
        assignments: dict[int, list[int]] | None = None,
    ) -> TopicMetadata: ...

    async def delete_topic(self, name: str) -> TopicMetadata: ...

    async def create_partitions(
        self,
        name: str,
        total: int,
        assignments: list[list[int]] | None = None,
        *,
        validate_only: bool = False,
    ) -> list[int]: ...

    async def set_topic_configs(self, name: str, configs: dict[str, str]) -> None: ...

    def broker_configs(self, entity: str) -> dict[str, str]:
        """The dynamic broker configs stored for ``entity`` (a broker id as text, or
        :data:`~pystream.cluster.metadata.model.DEFAULT_BROKER_ENTITY`); {} if none."""
        ...

    async def set_broker_configs(self, entity: str, configs: dict[str, str]) -> None:
        """Replace the dynamic broker configs of ``entity`` (callers validate them first);
        every broker that reads ``entity`` sees the change."""
        ...

    def scram_credentials(self) -> dict[str, dict[str, ScramCredential]]:
        """Every user's SCRAM credentials by user then mechanism (do not mutate)."""
        ...

    async def alter_scram_credentials(self, changes: list[ScramCredentialChange]) -> None:
        """Store or delete SCRAM credentials (callers validate them first); every broker
        sees the change (within seconds in a cluster)."""
        ...

    async def update_isr(
        self, topic: str, partition: int, isr: list[int], leader_epoch: int, partition_epoch: int
    ) -> PartitionState:
        """The leader (this broker) changes a partition's ISR."""
        ...

    async def allocate_producer_ids(self, broker_id: int, size: int) -> ProducerIdBlock:
        """Reserve a block of producer ids durably (never handed out twice)."""
        ...

    # --- ACLs (the authorizer's source) -------------------------------------------------------
    @property
    def acl_version(self) -> int:
        """Moves on every ACL change seen here (own writes, or another broker's in a cluster)."""
        ...

    def acls(self) -> list[AclBinding]:
        """Every stored ACL binding (do not mutate)."""
        ...

    def check_acl_resource_name(self, name: str) -> None:
        """ValueError saying why this store cannot keep ACLs of a resource so named (the
        ZooKeeper layout names a znode after it); nothing otherwise."""
        ...

    async def change_acls(
        self, create: list[AclBinding], delete_filters: list[AclBindingFilter]
    ) -> list[list[AclBinding]]:
        """Store ``create`` and remove what ``delete_filters`` match, durably; per filter, the
        bindings it removed."""
        ...


class ThreadedWrites:
    """The async writes of :class:`MetadataStore`, each running the store's ``*_blocking``
    method in a thread (both stores write that way: a file fsync, or ZooKeeper round
    trips)."""

    def create_topic_blocking(self, *args: Any, **kwargs: Any) -> TopicMetadata:
        raise NotImplementedError

    def delete_topic_blocking(self, name: str) -> TopicMetadata:
        raise NotImplementedError

    def create_partitions_blocking(self, *args: Any, **kwargs: Any) -> list[int]:
        raise NotImplementedError

    def set_topic_configs_blocking(self, name: str, configs: dict[str, str]) -> None:
        raise NotImplementedError

    def set_broker_configs_blocking(self, entity: str, configs: dict[str, str]) -> None:
        raise NotImplementedError

    def update_isr_blocking(self, *args: Any) -> PartitionState:
        raise NotImplementedError

    def alter_scram_credentials_blocking(self, changes: list[ScramCredentialChange]) -> None:
        raise NotImplementedError

    def allocate_producer_ids_blocking(self, broker_id: int, size: int) -> ProducerIdBlock:
        raise NotImplementedError

    def change_acls_blocking(
        self, create: list[AclBinding], delete_filters: list[AclBindingFilter]
    ) -> list[list[AclBinding]]:
        raise NotImplementedError

    async def create_topic(
        self,
        name: str,
        num_partitions: int,
        replication_factor: int = 1,
        configs: dict[str, str] | None = None,
        assignments: dict[int, list[int]] | None = None,
    ) -> TopicMetadata:
        """See the store's ``create_topic_blocking``."""
        return await asyncio.to_thread(
            self.create_topic_blocking,
            name,
            num_partitions,
            replication_factor,
            configs,
            assignments,
        )

    async def delete_topic(self, name: str) -> TopicMetadata:
        """See the store's ``delete_topic_blocking``."""
        return await asyncio.to_thread(self.delete_topic_blocking, name)

    async def create_partitions(
        self,
        name: str,
        total: int,
        assignments: list[list[int]] | None = None,
        *,
        validate_only: bool = False,
    ) -> list[int]:
        """See the store's ``create_partitions_blocking``."""
        return await asyncio.to_thread(
            lambda: self.create_partitions_blocking(
                name, total, assignments, validate_only=validate_only
            )
        )

    async def set_topic_configs(self, name: str, configs: dict[str, str]) -> None:
        """See the store's ``set_topic_configs_blocking``."""
        await asyncio.to_thread(self.set_topic_configs_blocking, name, configs)

    async def set_broker_configs(self, entity: str, configs: dict[str, str]) -> None:
        """See the store's ``set_broker_configs_blocking``."""
        await asyncio.to_thread(self.set_broker_configs_blocking, entity, configs)

    async def alter_scram_credentials(self, changes: list[ScramCredentialChange]) -> None:
        """See the store's ``alter_scram_credentials_blocking``."""
        await asyncio.to_thread(self.alter_scram_credentials_blocking, changes)

    async def update_isr(
        self, topic: str, partition: int, isr: list[int], leader_epoch: int, partition_epoch: int
    ) -> PartitionState:
        """See the store's ``update_isr_blocking``."""
        return await asyncio.to_thread(
            self.update_isr_blocking, topic, partition, isr, leader_epoch, partition_epoch
        )

    async def allocate_producer_ids(self, broker_id: int, size: int) -> ProducerIdBlock:
        """See the store's ``allocate_producer_ids_blocking``."""
        return await asyncio.to_thread(self.allocate_producer_ids_blocking, broker_id, size)

    async def change_acls(
        self, create: list[AclBinding], delete_filters: list[AclBindingFilter]
    ) -> list[list[AclBinding]]:
        """See the store's ``change_acls_blocking``."""
        return await asyncio.to_thread(self.change_acls_blocking, create, delete_filters)
