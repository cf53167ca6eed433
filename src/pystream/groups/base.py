"""What the coordinators share: ownership of internal-topic partitions, and the group state.

:class:`CoordinatorBase` is the partition ownership both coordinators need
(the group coordinator over ``__consumer_offsets``, the transaction
coordinator over ``__transaction_state``): a coordinator serves the keys of
the partitions this broker leads, after it replayed them from the log.
:meth:`~CoordinatorBase.on_elected` / :meth:`~CoordinatorBase.on_resigned` are
what a leadership change calls (:mod:`pystream.cluster.cluster_mode`), and
:meth:`~CoordinatorBase.ensure_topic` creates the internal topic on first use.

:class:`GroupCoordinatorBase` adds the groups themselves: answers "may I serve
this group now?" (:meth:`~GroupCoordinatorBase.coordinator_error`) and appends
records to a group's partition.  The rebalance protocol
(:mod:`pystream.groups.membership`), the committed offsets
(:mod:`pystream.groups.committed_offsets`) and the coordinator itself
(:mod:`pystream.groups.coordinator`) build on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, ClassVar

from pystream.errors import ErrorCode, KafkaError, TopicAlreadyExistsError
from pystream.groups.group import ClassicGroup, Member, now_ms
from pystream.groups.offsets_log import (
    OFFSETS_TOPIC,
    build_records,
    group_metadata_key,
    group_metadata_value,
    partition_for,
)
from pystream.purgatory import Purgatory
from pystream.storage.log import AppendOrigin

if TYPE_CHECKING:
    from pystream.broker.server import Broker

log = logging.getLogger("pystream.groups.coordinator")

E = ErrorCode
NONE = 0
# Kafka's offsets.commit.timeout.ms: how long a commit waits for the ISR.
OFFSETS_COMMIT_TIMEOUT_MS = 5000


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
        E.REQUEST_TIMED_OUT,
    ):
        return E.COORDINATOR_NOT_AVAILABLE
    if code in (E.NOT_LEADER_OR_FOLLOWER, E.KAFKA_STORAGE_ERROR):
        return E.NOT_COORDINATOR
    if code in (E.MESSAGE_TOO_LARGE, E.RECORD_LIST_TOO_LARGE, E.INVALID_FETCH_SIZE):
        return E.INVALID_COMMIT_OFFSET_SIZE
    return code


class CoordinatorBase:
    """The partitions of one internal topic this broker leads, and serves once loaded.

    Subclasses name their :attr:`topic`, say how to create it (:meth:`topic_spec`),
    how to replay a partition (:meth:`_load_partition`) and how to forget one
    (:meth:`_unload_partition`).  A partition is *loading* from election until its
    replay is done (clients get COORDINATOR_LOAD_IN_PROGRESS), then *owned*;
    partitions led elsewhere get NOT_COORDINATOR.
    """

    topic: ClassVar[str]

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.config = broker.config
        self._owned: set[int] = set()
        self._loading: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._active = False
        # The topic being created in ZooKeeper (one creation at a time, shared by callers).
        self._creating: asyncio.Future[int] | None = None
        # partition -> the offset after the last record appended here (what must replicate).
        self._appended_up_to: dict[int, int] = {}

    # --- what a coordinator provides --------------------------------------------------------
    def topic_spec(self) -> tuple[int, int, dict[str, str]]:
        """(partitions, replication factor, topic configs) to create :attr:`topic` with."""
        raise NotImplementedError

    async def _load_partition(self, partition: int) -> None:
        """Replay the partition's log into memory (raise to stay not-the-coordinator)."""
        raise NotImplementedError

    def _unload_partition(self, partition: int) -> None:
        """Forget the state of a partition led elsewhere now."""
        raise NotImplementedError

    # --- lifecycle --------------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, f"{type(self).__name__}.start() was not called"
        return self._loop

    def _spawn(self, coro: Awaitable[object]) -> asyncio.Task[object]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_ownership(self) -> None:
        """Serve from now on: load the partitions this broker leads already."""
        self._loop = asyncio.get_running_loop()
        self._active = True
        self._elect_led_partitions()

    async def _stop_ownership(self) -> None:
        """Stop serving: cancel loads and background tasks, forget every partition."""
        self._active = False
        tasks = [*self._loading.values(), *self._tasks]
        if self._creating is not None:
            tasks.append(self._creating)  # type: ignore[arg-type]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for partition in sorted(self._owned | set(self._loading)):
            self._unload_partition(partition)
        self._owned.clear()
        self._loading.clear()

    # --- partitions -------------------------------------------------------------------------
    @property
    def default_num_partitions(self) -> int:
        """The configured partition count (before the topic exists)."""
        return self.topic_spec()[0]

    @property
    def num_partitions(self) -> int:
        """Partitions of :attr:`topic` (the topic's, once it exists)."""
        topic = self.broker.metadata.get_topic(self.topic)
        if topic is not None:
            return len(topic.partitions)
        return self.default_num_partitions

    def partition_error(self, partition: int) -> int:
        """0 if this broker serves the partition's keys now, else the error to answer."""
        if not self._active:
            return E.COORDINATOR_NOT_AVAILABLE
        if partition in self._loading:
            return E.COORDINATOR_LOAD_IN_PROGRESS
        if partition not in self._owned:
            return E.NOT_COORDINATOR
        return NONE

    def owns(self, partition: int) -> bool:
        """Whether this broker serves the partition's keys now (loaded, still the leader)."""
        return self._active and partition in self._owned

    def _elect_led_partitions(self) -> None:
        """Load every partition of :attr:`topic` the metadata says this broker leads."""
        topic = self.broker.metadata.get_topic(self.topic)
        if topic is None:
            return
        for index, state in sorted(topic.partitions.items()):
            if state.leader == self.broker.broker_id:
                self.on_elected(index)

    def on_elected(self, partition: int) -> None:
        """This broker now leads ``<topic>-<partition>``: replay it, then serve it."""
        if not self._active or partition in self._owned or partition in self._loading:
            return
        self._loading[partition] = asyncio.ensure_future(self._load(partition))

    def on_resigned(self, partition: int) -> None:
        """Another broker leads the partition now: forget its state (it lives in the log),
        requests for its keys get NOT_COORDINATOR."""
        task = self._loading.pop(partition, None)
        if task is not None:
            task.cancel()
        self._owned.discard(partition)
        # The log may be truncated before this broker leads it again: forget its end.
        self._appended_up_to.pop(partition, None)
        self._unload_partition(partition)

    async def wait_loaded(self) -> None:
        """Until every partition being loaded is loaded (tests and benchmarks)."""
        while self._loading:
            await asyncio.gather(*self._loading.values(), return_exceptions=True)

    async def _load(self, partition: int) -> None:
        try:
            await self._load_partition(partition)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Stay not-the-coordinator for these keys rather than serve half the state.
            log.exception("loading %s-%d failed", self.topic, partition)
            self._loading.pop(partition, None)
            return
        # Serve the keys only now: until here requests get COORDINATOR_LOAD_IN_PROGRESS.
        self._loading.pop(partition, None)
        self._owned.add(partition)

    # --- replication of what the coordinator wrote ------------------------------------------
    def _note_appended(self, partition: int) -> None:
        """Remember the partition's log end after a write (what :meth:`_replicated` waits for)."""
        replicas = self.broker.replica_manager
        hosted = replicas.partition(self.topic, partition) if replicas is not None else None
        if hosted is not None:
            self._appended_up_to[partition] = hosted.log.log_end_offset

    async def _replicated(self, partition: int, timeout_ms: int) -> int:
        """Until the partition's high watermark passes the last write here (every ISR member
        has it), at most ``timeout_ms``; the raw error code (0: replicated)."""
        required = self._appended_up_to.get(partition)
        replicas = self.broker.replica_manager
        if required is None or replicas is None:
            return NONE
        (error,) = await replicas.wait_for_replication(
            [(self.topic, partition, required)], timeout_ms
        )
        return error.error_code if error is not None else NONE

    # --- creating the internal topic --------------------------------------------------------
    def _too_few_brokers(self, replication_factor: int) -> int:
        """Kafka's rule: the internal topic is created with its configured replication
        factor or not at all (COORDINATOR_NOT_AVAILABLE until enough brokers are alive)."""
        alive = len(self.broker.metadata.live_brokers())
        if alive >= replication_factor:
            return NONE
        log.warning(
            "number of alive brokers %d does not meet the required replication factor %d "
            "for %s; clients get COORDINATOR_NOT_AVAILABLE until enough brokers are up",
            alive,
            replication_factor,
            self.topic,
        )
        return E.COORDINATOR_NOT_AVAILABLE

    def ensure_topic_now(self) -> int:
        """Create :attr:`topic` if missing, on the calling thread; an error code.

        New partitions are empty: those led here are owned at once.  (In cluster mode
        prefer :meth:`ensure_topic`, which keeps the ZooKeeper write off the loop.)
        """
        if self.broker.metadata.get_topic(self.topic) is not None:
            # Created some other way (another broker, a Metadata request): serve the
            # partitions led here once they are loaded.
            self._elect_led_partitions()
            return NONE
        partitions, replication_factor, configs = self.topic_spec()
        code = self._too_few_brokers(replication_factor)
        if code:
            return code
        topics = self.broker.topic_manager
        assert topics is not None
        try:
            created = topics.create_topic(self.topic, partitions, replication_factor, configs)
        except TopicAlreadyExistsError:
            self._elect_led_partitions()
            return NONE
        except KafkaError as exc:
            log.error("cannot create %s: %s", self.topic, exc)
            return E.COORDINATOR_NOT_AVAILABLE
        for index, state in sorted(created.partitions.items()):
            if state.leader == self.broker.broker_id:
                self._loading.pop(index, None)
                self._owned.add(index)  # new and empty: nothing to load
        return NONE

    async def ensure_topic(self) -> int:
        """Create :attr:`topic` if missing; an error code.

        In cluster mode the ZooKeeper write (50 partitions' znodes by default) runs in a
        thread, so the event loop keeps serving meanwhile; concurrent callers share one
        creation.  The store applies its own write to the metadata cache on the loop, and
        the cluster's role handling hosts the partitions and calls :meth:`on_elected`.
        """
        if self.broker.metadata.get_topic(self.topic) is not None or self.broker.cluster is None:
            return self.ensure_topic_now()
        if self._creating is None or self._creating.done():
            self._creating = asyncio.ensure_future(self._create_in_cluster())
        return await asyncio.shield(self._creating)

    async def _create_in_cluster(self) -> int:
        partitions, replication_factor, configs = self.topic_spec()
        code = self._too_few_brokers(replication_factor)
        if code:
            return code
        store = self.broker.metadata
        try:
            await asyncio.to_thread(
                store.create_topic, self.topic, partitions, replication_factor, configs
            )
        except TopicAlreadyExistsError:
            pass  # another broker created it: its partitions arrive through the watches
        except KafkaError as exc:
            log.error("cannot create %s: %s", self.topic, exc)
            return E.COORDINATOR_NOT_AVAILABLE
        # Not in the cache yet (created elsewhere, the watch is on its way): clients retry.
        return NONE if store.get_topic(self.topic) is not None else E.COORDINATOR_NOT_AVAILABLE


class GroupCoordinatorBase(CoordinatorBase):
    """The group coordinator's state and the helpers every group API uses."""

    topic = OFFSETS_TOPIC

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        self.groups: dict[str, ClassicGroup] = {}
        self.purgatory = Purgatory("rebalance")
        self._cleanup_timer: asyncio.TimerHandle | None = None
        # partition -> (records replayed, groups, seconds): what the last load did.
        self.load_stats: dict[int, tuple[int, int, float]] = {}

    def topic_spec(self) -> tuple[int, int, dict[str, str]]:
        """``__consumer_offsets`` is compacted: the newest record per key is the state."""
        config = self.config
        return (
            config.offsets_topic_num_partitions,
            config.offsets_topic_replication_factor,
            {
                "cleanup.policy": "compact",
                "segment.bytes": str(config.offsets_topic_segment_bytes),
                "compression.type": "producer",
            },
        )

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
        return self.partition_error(self.partition_for(group_id))

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
        self._note_appended(partition)
        return NONE

    async def wait_replicated(self, group_id: str) -> int:
        """Until what was appended to the group's partition is on every ISR member (Kafka's
        coordinator appends with acks=all); an error code as the client is told it."""
        code = await self._replicated(self.partition_for(group_id), OFFSETS_COMMIT_TIMEOUT_MS)
        return store_offsets_error(code) if code else NONE

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
