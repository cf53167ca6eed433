"""What every part of the group coordinator shares: its state, ownership checks, log writes.

:class:`CoordinatorBase` holds the groups of the ``__consumer_offsets``
partitions this broker leads, answers "may I serve this group now?"
(:meth:`~CoordinatorBase.coordinator_error`) and appends records to a group's
partition.  The rebalance protocol (:mod:`pystream.groups.membership`), the
committed offsets (:mod:`pystream.groups.committed_offsets`) and the coordinator
itself (:mod:`pystream.groups.coordinator`) build on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from pystream.broker.purgatory import Purgatory
from pystream.errors import ErrorCode, KafkaError
from pystream.groups.group import ClassicGroup, Member, now_ms
from pystream.groups.offsets_log import (
    OFFSETS_TOPIC,
    build_records,
    group_metadata_key,
    group_metadata_value,
    partition_for,
)
from pystream.storage.log import AppendOrigin

if TYPE_CHECKING:
    from pystream.broker.server import Broker

log = logging.getLogger("pystream.groups.coordinator")

E = ErrorCode
NONE = 0


def store_group_error(code: int) -> int:
    """Kafka's mapping of a failed group-metadata append to what the client is told."""
    if code in (
        E.UNKNOWN_TOPIC_OR_PARTITION,
        E.NOT_ENOUGH_REPLICAS,
        E.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    ):
        return E.COORDINATOR_NOT_AVAILABLE
    if code in (E.NOT_LEADER_OR_FOLLOWER, E.KAFKA_STORAGE_ERROR):
        return E.NOT_COORDINATOR
    if code == E.REQUEST_TIMED_OUT:
        return E.REBALANCE_IN_PROGRESS
    if code in (E.MESSAGE_TOO_LARGE, E.RECORD_LIST_TOO_LARGE, E.INVALID_FETCH_SIZE):
        return E.UNKNOWN_SERVER_ERROR
    return code


def store_offsets_error(code: int) -> int:
    """Kafka's mapping of a failed offset-commit append to what the client is told."""
    if code in (
        E.UNKNOWN_TOPIC_OR_PARTITION,
        E.NOT_ENOUGH_REPLICAS,
        E.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    ):
        return E.COORDINATOR_NOT_AVAILABLE
    if code in (E.NOT_LEADER_OR_FOLLOWER, E.KAFKA_STORAGE_ERROR):
        return E.NOT_COORDINATOR
    if code in (E.MESSAGE_TOO_LARGE, E.RECORD_LIST_TOO_LARGE, E.INVALID_FETCH_SIZE):
        return E.INVALID_COMMIT_OFFSET_SIZE
    return code


class CoordinatorBase:
    """The coordinator's state and the helpers every group API uses."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.config = broker.config
        self.groups: dict[str, ClassicGroup] = {}
        self.purgatory = Purgatory("rebalance")
        self._owned: set[int] = set()
        self._loading: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._cleanup_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._active = False
        # partition -> (records replayed, groups, seconds): what the last load did.
        self.load_stats: dict[int, tuple[int, int, float]] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "GroupCoordinator.start() was not called"
        return self._loop

    def _spawn(self, coro: Awaitable[object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- partitions -------------------------------------------------------------------------
    @property
    def num_partitions(self) -> int:
        """Partitions of ``__consumer_offsets`` (the topic's, once it exists)."""
        topic = self.broker.metadata.get_topic(OFFSETS_TOPIC)
        if topic is not None:
            return len(topic.partitions)
        return self.config.offsets_topic_num_partitions

    def partition_for(self, group_id: str) -> int:
        return partition_for(group_id, self.num_partitions)

    def coordinator_error(self, group_id: str | None, *, allow_empty: bool = False) -> int:
        """Whether this broker can serve ``group_id`` now (0) or the error to answer with.

        OffsetCommit/OffsetFetch/DescribeGroups/DeleteGroups accept the empty group
        id (Kafka keeps that for backwards compatibility); the other APIs do not.
        """
        if group_id is None or (group_id == "" and not allow_empty):
            return E.INVALID_GROUP_ID
        if not self._active:
            return E.COORDINATOR_NOT_AVAILABLE
        partition = self.partition_for(group_id)
        if partition in self._loading:
            return E.COORDINATOR_LOAD_IN_PROGRESS
        if partition not in self._owned:
            return E.NOT_COORDINATOR
        return NONE

    # --- writes to __consumer_offsets -------------------------------------------------------
    def _append(
        self,
        group_id: str,
        records: list[tuple[bytes, bytes | None]],
        *,
        producer_id: int = -1,
        producer_epoch: int = -1,
        transactional: bool = False,
    ) -> int:
        """Append records to the group's partition; the Kafka error code (0: written)."""
        partition = self.partition_for(group_id)
        batch = build_records(
            records,
            now_ms(),
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            transactional=transactional,
        )
        replicas = self.broker.replica_manager
        assert replicas is not None
        try:
            replicas.append(OFFSETS_TOPIC, partition, batch, origin=AppendOrigin.COORDINATOR)
        except KafkaError as exc:
            log.warning("appending to %s-%d failed: %s", OFFSETS_TOPIC, partition, exc)
            return exc.error_code
        return NONE

    def _store_group(self, group: ClassicGroup, assignments: dict[str, bytes] | None) -> int:
        value = group.to_metadata_value(assignments)
        code = self._append(
            group.group_id, [(group_metadata_key(group.group_id), group_metadata_value(value))]
        )
        return store_group_error(code) if code else NONE

    def _schedule_heartbeat(
        self, group: ClassicGroup, member: Member, timeout_ms: int | None = None
    ) -> None:
        """Expect the member's next heartbeat within its session timeout (membership)."""
        raise NotImplementedError
