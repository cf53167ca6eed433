"""Ownership of an internal topic's partitions, shared by the group and transaction coordinators.

:class:`CoordinatorBase` is what both coordinators need (the group coordinator
over ``__consumer_offsets``, the transaction coordinator over
``__transaction_state``): a coordinator serves the keys of the partitions this
broker leads, after it replayed them from the log.
:meth:`~CoordinatorBase.on_elected` / :meth:`~CoordinatorBase.on_resigned` are
what a leadership change calls (:class:`~pystream.cluster.cluster_mode.ClusterMode`,
through the broker's wiring), and :meth:`~CoordinatorBase.ensure_topic` creates
the internal topic on first use.  A coordinator gets the services it uses
through its constructor; it never sees the broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, ClassVar

from pystream.errors import ErrorCode, KafkaError, TopicAlreadyExistsError

if TYPE_CHECKING:
    from pystream.cluster.metadata.store import MetadataStore
    from pystream.cluster.replication.replica_manager import ReplicaManager
    from pystream.cluster.topics import TopicManager
    from pystream.config import BrokerConfig

log = logging.getLogger(__name__)

E = ErrorCode
NONE = 0


class CoordinatorBase:
    """The partitions of one internal topic this broker leads, and serves once loaded.

    Subclasses name their :attr:`topic`, say how to create it (:meth:`topic_spec`),
    how to replay a partition (:meth:`_load_partition`) and how to forget one
    (:meth:`_unload_partition`).  A partition is *loading* from election until its
    replay is done (clients get COORDINATOR_LOAD_IN_PROGRESS), then *owned*;
    partitions led elsewhere get NOT_COORDINATOR.
    """

    topic: ClassVar[str]

    def __init__(
        self,
        config: BrokerConfig,
        *,
        broker_id: int,
        metadata: MetadataStore,
        replicas: ReplicaManager,
        topics: TopicManager,
    ) -> None:
        self.config = config
        self.broker_id = broker_id
        self.metadata = metadata
        self.replicas = replicas
        self.topics = topics
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
        topic = self.metadata.get_topic(self.topic)
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
        """Load every partition of :attr:`topic` this broker leads: whose leader role its
        replica manager has taken, not only what the metadata says.  The metadata runs
        ahead of the roles for a moment (a role change is applied by a task); replaying
        the log of a replica still following would miss what it fetches afterwards, and
        the role change (:meth:`on_elected`) would then find the partition loaded."""
        topic = self.metadata.get_topic(self.topic)
        if topic is None:
            return
        for index in sorted(topic.partitions):
            hosted = self.replicas.partition(self.topic, index)
            if hosted is not None and hosted.state.leader == self.broker_id:
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
        hosted = self.replicas.partition(self.topic, partition)
        if hosted is not None:
            self._appended_up_to[partition] = hosted.log.log_end_offset

    async def _replicated(self, partition: int, timeout_ms: int) -> int:
        """Until the partition's high watermark passes the last write here (every ISR member
        has it), at most ``timeout_ms``; the raw error code (0: replicated)."""
        required = self._appended_up_to.get(partition)
        if required is None:
            return NONE
        (error,) = await self.replicas.wait_for_replication(
            [(self.topic, partition, required)], timeout_ms
        )
        return error.error_code if error is not None else NONE

    # --- creating the internal topic --------------------------------------------------------
    def _too_few_brokers(self, replication_factor: int) -> int:
        """Kafka's rule: the internal topic is created with its configured replication
        factor or not at all (COORDINATOR_NOT_AVAILABLE until enough brokers are alive)."""
        alive = len(self.metadata.live_brokers())
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

    async def ensure_topic(self) -> int:
        """Create :attr:`topic` if missing; an error code.

        The metadata write and the new partitions' log files are made off the event
        loop (:class:`~pystream.cluster.topics.TopicManager`), so creating the 50
        partitions of ``__consumer_offsets`` does not stall other connections;
        concurrent callers share one creation.  New partitions are empty: those led
        here are served at once.
        """
        if self._creating is not None and not self._creating.done():
            # Being created here: the store may list the topic before its partitions are
            # hosted, and a partition is loaded only once it is hosted.
            return await asyncio.shield(self._creating)
        if self.metadata.get_topic(self.topic) is not None:
            # Created some other way (another broker, a Metadata request): serve the
            # partitions led here once they are loaded.
            self._elect_led_partitions()
            return NONE
        if self._creating is None or self._creating.done():
            self._creating = asyncio.ensure_future(self._create_topic())
        return await asyncio.shield(self._creating)

    async def _create_topic(self) -> int:
        partitions, replication_factor, configs = self.topic_spec()
        code = self._too_few_brokers(replication_factor)
        if code:
            return code
        try:
            created = await self.topics.create_topic(
                self.topic, partitions, replication_factor, configs
            )
        except TopicAlreadyExistsError:
            # Another broker created it: its partitions arrive through the watches.
            self._elect_led_partitions()
            return NONE if self.metadata.get_topic(self.topic) else E.COORDINATOR_NOT_AVAILABLE
        except KafkaError as exc:
            log.error("cannot create %s: %s", self.topic, exc)
            return E.COORDINATOR_NOT_AVAILABLE
        for index, state in sorted(created.partitions.items()):
            if state.leader == self.broker_id and self._active:
                self._loading.pop(index, None)
                self._owned.add(index)  # new and empty: nothing to load
        return NONE
