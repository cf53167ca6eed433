"""The partitions this broker hosts: appends, reads, high watermarks and the ISR.

A partition led here tracks each follower's log end offset from the fetches
the follower sends (Fetch with ``replica_id`` = its broker id).  The high
watermark is the minimum log end offset over the ISR, so a record is
committed (visible to consumers, acknowledged to ``acks=all``) once every
in-sync replica has it.  A follower that has not caught up to the leader's
log end offset within ``replica.lag.time.max.ms`` leaves the ISR; one whose
log end offset reaches the high watermark (and the current leader epoch's
start) rejoins it.  ISR changes are written through the metadata store with
the leader epoch and the partition epoch, so a deposed leader cannot write
them (Kafka's AlterPartition / ZooKeeper ISR updates).

On a single node every partition is led here with itself as the only ISR
member, so the high watermark follows the log end offset on every append.

A partition followed here is handed to the replica fetcher (``fetcher``, set
in cluster mode), which truncates it to the leader's epoch boundary and then
fetches from the leader.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pystream.clock import now_ms
from pystream.cluster.metadata.model import PartitionState
from pystream.errors import (
    KafkaError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderOrFollowerError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
)
from pystream.metrics import BrokerMetrics
from pystream.purgatory import DelayedOperation, Purgatory
from pystream.storage.log import AppendOrigin, FetchDataInfo, Log, LogAppendInfo
from pystream.storage.log_manager import LogManager

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
# (topic, index, isr, leader_epoch, partition_epoch) -> the partition's new state
IsrUpdater = Callable[[str, int, list[int], int, int], Awaitable[PartitionState]]


class Fetcher(Protocol):
    """What the replica manager asks of the replica fetcher (cluster mode)."""

    def add_partition(self, topic: str, index: int, leader: int, leader_epoch: int) -> None: ...

    def remove_partition(self, topic: str, index: int) -> None: ...


@dataclass(slots=True)
class FollowerState:
    """What the leader knows of one follower, from its fetches (Kafka's Replica)."""

    broker_id: int
    log_end_offset: int = -1  # unknown until it fetches
    last_caught_up_ms: int = 0
    last_fetch_ms: int = 0
    last_fetch_leader_log_end_offset: int = 0


@dataclass
class Partition:
    """One hosted partition: its log and its replication state."""

    topic: str
    index: int
    log: Log
    state: PartitionState
    # Leader only: the other replicas, and where the current leader epoch began.
    followers: dict[int, FollowerState] = field(default_factory=dict)
    leader_epoch_start_offset: int = 0
    isr_change_in_flight: bool = False

    @property
    def leader_epoch(self) -> int:
        return self.state.leader_epoch

    @property
    def high_watermark(self) -> int:
        return self.log.high_watermark

    @property
    def last_stable_offset(self) -> int:
        # Open transactions hold it below the high watermark (read_committed reads below it).
        return self.log.last_stable_offset

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.index}"


class ReplicaManager:
    """Partitions by (topic, index); wakes waiters when a partition's data changes."""

    def __init__(
        self,
        broker_id: int,
        log_manager: LogManager,
        on_data_changed: Callable[[TopicPartition], None] | None = None,
        partition_exists: Callable[[str, int], bool] | None = None,
        *,
        replica_lag_time_max_ms: int = 30_000,
        clock: Callable[[], int] = now_ms,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        """``metrics``: the broker's (ISR shrinks and expansions are counted there)."""
        self.broker_id = broker_id
        self.metrics = metrics if metrics is not None else BrokerMetrics()
        self.log_manager = log_manager
        self.replica_lag_time_max_ms = replica_lag_time_max_ms
        self._clock = clock
        # Cluster mode: whether the cluster has a partition (hosted here or not), so that a
        # request for another broker's partition gets NOT_LEADER_OR_FOLLOWER, as in Kafka.
        self._partition_exists = partition_exists or (lambda topic, index: False)
        self._partitions: dict[TopicPartition, Partition] = {}
        self._on_data_changed = on_data_changed or (lambda tp: None)
        # acks=all produce requests (and coordinator writes) waiting for the ISR.
        self.produce_purgatory = Purgatory("produce")
        # Cluster mode: the replica fetcher and the ISR writer (ZooKeeper).
        self.fetcher: Fetcher | None = None
        self.isr_updater: IsrUpdater | None = None
        self._isr_tasks: set[asyncio.Task[None]] = set()

    # --- hosting ----------------------------------------------------------------------------
    def _hosted(self, topic: str, index: int, state: PartitionState) -> tuple[Partition, bool]:
        log = self.log_manager.get_or_create_log(topic, index)
        partition = self._partitions.get((topic, index))
        if partition is None:
            partition = Partition(topic, index, log, state)
            self._partitions[(topic, index)] = partition
            return partition, True
        return partition, False

    def become_leader(
        self, topic: str, index: int, state: PartitionState, *, durable: bool = True
    ) -> Partition:
        """Host ``topic-index`` as its leader (creating the log if needed).

        A new leader epoch starts at the log end offset (recorded in the leader-epoch
        cache, so OffsetForLeaderEpoch answers followers at once); every follower starts
        unknown, the ISR members counted as caught up now (they get a full
        ``replica.lag.time.max.ms`` to fetch from the new leader).  Without ``durable`` the
        epoch's checkpoint is not fsynced: the caller syncs the log dirs before serving.
        """
        partition, new = self._hosted(topic, index, state)
        before = partition.state
        new_term = (
            new or before.leader != self.broker_id or before.leader_epoch != state.leader_epoch
        )
        partition.state = state
        me = self.broker_id
        if new_term:
            if self.fetcher is not None:
                self.fetcher.remove_partition(topic, index)
            log = partition.log
            log.leader_epoch_cache.assign(state.leader_epoch, log.log_end_offset, durable=durable)
            partition.leader_epoch_start_offset = log.log_end_offset
            now = self._clock()
            partition.followers = {
                r: FollowerState(r, last_caught_up_ms=now if r in state.isr else 0)
                for r in state.replicas
                if r != me
            }
            partition.isr_change_in_flight = False
        else:  # same term: the replica set may have changed (reassignment)
            followers = partition.followers
            for r in state.replicas:
                if r != me and r not in followers:
                    followers[r] = FollowerState(r)
            for r in list(followers):
                if r not in state.replicas:
                    del followers[r]
        self._maybe_advance_high_watermark(partition)
        self._partition_changed(partition)  # waiting acks=all requests re-check the ISR
        return partition

    def become_follower(self, topic: str, index: int, state: PartitionState) -> Partition:
        """Host ``topic-index`` as a follower of ``state.leader`` (creating the log if needed).

        Produce and fetch as leader answer NOT_LEADER_OR_FOLLOWER here; the fetcher
        (cluster mode) truncates to the leader's epoch boundary, then replicates.
        """
        partition, new = self._hosted(topic, index, state)
        before = partition.state
        new_term = new or before.leader != state.leader or before.leader_epoch != state.leader_epoch
        partition.state = state
        partition.followers = {}
        if self.fetcher is not None:
            if state.leader < 0:
                self.fetcher.remove_partition(topic, index)
            elif new_term:
                self.fetcher.add_partition(topic, index, state.leader, state.leader_epoch)
        self._partition_changed(partition)  # waiting fetches answer (NOT_LEADER...) now
        return partition

    def stop_replica(self, topic: str, index: int, delete: bool) -> None:
        """Stop hosting a partition; with ``delete`` its files are removed too."""
        if self.fetcher is not None:
            self.fetcher.remove_partition(topic, index)
        self._partitions.pop((topic, index), None)
        if delete and self.log_manager.get_log(topic, index) is not None:
            self.log_manager.delete_log(topic, index)
        self._on_data_changed((topic, index))
        self.produce_purgatory.check_and_complete((topic, index))

    def partition(self, topic: str, index: int) -> Partition | None:
        return self._partitions.get((topic, index))

    def partitions(self) -> dict[TopicPartition, Partition]:
        return self._partitions

    def leader_partition(self, topic: str, index: int) -> Partition:
        """The partition if this broker leads it; else the Kafka error a client expects."""
        partition = self._partitions.get((topic, index))
        if partition is None:
            if self._partition_exists(topic, index):
                raise NotLeaderOrFollowerError(
                    f"broker {self.broker_id} does not host {topic}-{index}; refresh metadata"
                )
            raise UnknownTopicOrPartitionError(
                f"this broker does not host {topic}-{index}; refresh metadata"
            )
        if partition.state.leader != self.broker_id:
            raise NotLeaderOrFollowerError(f"broker {self.broker_id} does not lead {topic}-{index}")
        return partition

    # --- data -------------------------------------------------------------------------------
    def append(
        self,
        topic: str,
        index: int,
        records: bytearray | memoryview | bytes,
        origin: AppendOrigin = AppendOrigin.CLIENT,
        *,
        required_acks: int = 1,
    ) -> LogAppendInfo:
        """Append to a partition this broker leads (raises a KafkaError on bad input).

        With ``required_acks=-1`` the ISR must have at least ``min.insync.replicas``
        members, else NOT_ENOUGH_REPLICAS and nothing is appended; the caller then
        awaits :meth:`wait_for_replication`.
        """
        partition = self.leader_partition(topic, index)
        if required_acks == -1:
            self._check_min_isr(partition, NotEnoughReplicasError)
        info = partition.log.append(records, partition.leader_epoch, origin=origin)
        if partition.followers:
            self._partition_changed(partition)  # followers' long-poll fetches wake up
        self._maybe_advance_high_watermark(partition)
        return info

    def _check_min_isr(self, partition: Partition, error: type[KafkaError]) -> None:
        min_isr = partition.log.config.min_insync_replicas
        isr = partition.state.isr
        if len(isr) < min_isr:
            raise error(
                f"{partition.name}: the ISR {isr} has {len(isr)} member(s), fewer than "
                f"min.insync.replicas={min_isr}"
            )

    def replication_state(
        self, topic: str, index: int, required_offset: int, leader_epoch: int
    ) -> tuple[bool, KafkaError | None]:
        """Where an ``acks=all`` write up to ``required_offset`` stands now: (False, None)
        while the ISR does not have it yet; (True, None) once it does (with at least
        ``min.insync.replicas`` in the ISR); (True, error) when it cannot be told
        (NOT_LEADER_OR_FOLLOWER: leadership moved since ``leader_epoch``;
        NOT_ENOUGH_REPLICAS_AFTER_APPEND: the ISR shrank below the minimum)."""
        partition = self._partitions.get((topic, index))
        if (
            partition is None
            or partition.state.leader != self.broker_id
            or partition.leader_epoch != leader_epoch
        ):
            return True, NotLeaderOrFollowerError(
                f"{topic}-{index}: leadership moved while waiting for the ISR; the "
                "records may or may not be committed"
            )
        if partition.log.high_watermark < required_offset:
            return False, None
        try:
            self._check_min_isr(partition, NotEnoughReplicasAfterAppendError)
        except KafkaError as exc:
            return True, exc
        return True, None

    def leader_epoch(self, topic: str, index: int) -> int:
        """The partition's leader epoch here (-1 if it is not hosted)."""
        partition = self._partitions.get((topic, index))
        return partition.leader_epoch if partition is not None else -1

    async def wait_for_replication(
        self, targets: Sequence[tuple[str, int, int]], timeout_ms: int
    ) -> list[KafkaError | None]:
        """``acks=all``: wait until each ``(topic, index, required_offset)`` is below its
        high watermark (every ISR member has it), without polling.

        One result per target: None when replicated (with at least
        ``min.insync.replicas`` in the ISR), NOT_ENOUGH_REPLICAS_AFTER_APPEND when the
        ISR shrank below it, NOT_LEADER_OR_FOLLOWER when leadership moved meanwhile,
        REQUEST_TIMED_OUT when ``timeout_ms`` passed first.
        """
        operation = self._replication_operation(targets, timeout_ms)
        if operation.check():  # e.g. no followers: nothing to wait for
            return operation.result()
        return await self.produce_purgatory.wait(operation, timeout_ms)

    def replicated_now(
        self, targets: Sequence[tuple[str, int, int]]
    ) -> list[KafkaError | None] | None:
        """:meth:`wait_for_replication`'s results if every target is settled already (a
        single node, an ISR of one), else None: the caller need not wait at all."""
        operation = self._replication_operation(targets, 0)
        return operation.result() if operation.check() else None

    def _replication_operation(
        self, targets: Sequence[tuple[str, int, int]], timeout_ms: int
    ) -> DelayedOperation[list[KafkaError | None]]:
        epochs = [self.leader_epoch(topic, index) for topic, index, _ in targets]
        results: list[KafkaError | None] = [None] * len(targets)
        pending = set(range(len(targets)))  # targets not settled yet

        def settle(i: int) -> bool:
            """Whether target ``i`` is settled now (its answer then in ``results[i]``)."""
            done, results[i] = self.replication_state(*targets[i], epochs[i])
            return done

        def try_complete() -> list[KafkaError | None] | None:
            pending.difference_update([i for i in pending if settle(i)])
            return None if pending else results

        def on_expire() -> list[KafkaError | None]:
            for i in pending:
                results[i] = RequestTimedOutError(
                    f"{targets[i][0]}-{targets[i][1]}: not replicated to the ISR within "
                    f"{timeout_ms} ms"
                )
            return results

        return DelayedOperation(try_complete, on_expire, [(t, i) for t, i, _ in targets])

    def _partition_changed(self, partition: Partition) -> None:
        tp = (partition.topic, partition.index)
        self._on_data_changed(tp)
        self.produce_purgatory.check_and_complete(tp)

    def _maybe_advance_high_watermark(self, partition: Partition) -> None:
        """HW = the minimum log end offset over the ISR (followers not yet heard of hold it)."""
        if partition.state.leader != self.broker_id:
            return
        log = partition.log
        high_watermark = log.log_end_offset
        followers = partition.followers
        for replica in partition.state.isr:
            if replica != self.broker_id:
                follower = followers.get(replica)
                if follower is not None:
                    high_watermark = min(high_watermark, follower.log_end_offset)
        if high_watermark > log.high_watermark:
            log.high_watermark = high_watermark
            self._partition_changed(partition)

    # --- followers, as the leader sees them --------------------------------------------------
    def update_follower_fetch(
        self, partition: Partition, replica_id: int, fetch_offset: int
    ) -> None:
        """A follower fetched from ``fetch_offset``: it has everything below it.

        Caught up means it asked for the leader's log end offset; a follower that asked
        for at least what the leader had at its previous fetch was caught up then (Kafka's
        lastCaughtUpTime rule).  May expand the ISR and advance the high watermark.
        """
        follower = partition.followers.get(replica_id)
        if follower is None:
            raise NotLeaderOrFollowerError(
                f"broker {replica_id} is not a replica of {partition.name} "
                f"(replicas {partition.state.replicas})"
            )
        now = self._clock()
        leader_end = partition.log.log_end_offset
        if fetch_offset > leader_end:
            # A follower ahead of the leader has a divergent tail: the read answers
            # OFFSET_OUT_OF_RANGE and it truncates; until then it counts for nothing.
            return
        if fetch_offset == leader_end:
            follower.last_caught_up_ms = now
        elif fetch_offset >= follower.last_fetch_leader_log_end_offset:
            follower.last_caught_up_ms = max(follower.last_caught_up_ms, follower.last_fetch_ms)
        follower.last_fetch_leader_log_end_offset = leader_end
        follower.last_fetch_ms = now
        follower.log_end_offset = fetch_offset
        if (
            replica_id not in partition.state.isr
            and fetch_offset >= partition.log.high_watermark
            and fetch_offset >= partition.leader_epoch_start_offset
        ):
            self._change_isr(partition, [*partition.state.isr, replica_id], "caught up")
        self._maybe_advance_high_watermark(partition)

    def maybe_shrink_isr(self) -> int:
        """Drop followers that have not caught up within ``replica.lag.time.max.ms`` from
        the ISRs of the partitions led here; returns how many ISR changes were started."""
        now = self._clock()
        started = 0
        for partition in self._partitions.values():
            state = partition.state
            if state.leader != self.broker_id or len(state.isr) < 2:
                continue
            lagging = [
                r
                for r in state.isr
                if r != self.broker_id
                and now - partition.followers.get(r, FollowerState(r)).last_caught_up_ms
                > self.replica_lag_time_max_ms
            ]
            if lagging and self._change_isr(
                partition,
                [r for r in state.isr if r not in lagging],
                f"{lagging} not caught up within {self.replica_lag_time_max_ms} ms",
            ):
                started += 1
        return started

    def _change_isr(self, partition: Partition, isr: list[int], reason: str) -> bool:
        """Write a new ISR through the metadata store (one change in flight per partition)."""
        if self.isr_updater is None or partition.isr_change_in_flight:
            return False
        partition.isr_change_in_flight = True
        state = partition.state
        log.info("%s: ISR %s -> %s (%s)", partition.name, state.isr, isr, reason)
        task = asyncio.get_running_loop().create_task(self._write_isr(partition, state, isr))
        self._isr_tasks.add(task)
        task.add_done_callback(self._isr_tasks.discard)
        return True

    async def _write_isr(self, partition: Partition, state: PartitionState, isr: list[int]) -> None:
        assert self.isr_updater is not None
        try:
            written = await self.isr_updater(
                partition.topic, partition.index, isr, state.leader_epoch, state.partition_epoch
            )
        except KafkaError as exc:
            # Stale view (the controller or a new leader wrote meanwhile): the metadata
            # watch brings the new state; the next fetch or check tries again.
            log.info("%s: ISR change to %s not written: %s", partition.name, isr, exc)
        except Exception:
            log.exception("%s: ISR change to %s failed", partition.name, isr)
        else:
            # Kafka's IsrShrinksPerSec / IsrExpandsPerSec count ISR changes written.
            if len(isr) < len(state.isr):
                self.metrics.isr_shrinks += 1
            elif len(isr) > len(state.isr):
                self.metrics.isr_expands += 1
            current = self._partitions.get((partition.topic, partition.index))
            if current is partition and partition.leader_epoch == written.leader_epoch:
                if written.partition_epoch >= partition.state.partition_epoch:
                    partition.state = written
                self._maybe_advance_high_watermark(partition)
                self._partition_changed(partition)
        finally:
            partition.isr_change_in_flight = False

    async def shutdown(self) -> None:
        """Wait for ISR writes in flight (they are short ZooKeeper calls)."""
        if self._isr_tasks:
            await asyncio.gather(*self._isr_tasks, return_exceptions=True)

    def read(
        self,
        partition: Partition,
        fetch_offset: int,
        max_bytes: int,
        *,
        up_to_high_watermark: bool = True,
        min_one_batch: bool = True,
        read_committed: bool = False,
    ) -> FetchDataInfo:
        """Whole batches from ``fetch_offset``; consumers see only what is below the HW
        (followers, ``up_to_high_watermark=False``, everything up to the log end)."""
        max_offset = partition.log.high_watermark if up_to_high_watermark else None
        if read_committed:
            max_offset = partition.log.last_stable_offset
        return partition.log.read(fetch_offset, max_bytes, max_offset, min_one_batch)

    def delete_records(self, topic: str, index: int, offset: int) -> int:
        """DeleteRecords: move the log start offset (-1 means the high watermark)."""
        partition = self.leader_partition(topic, index)
        log = partition.log
        target = log.high_watermark if offset == -1 else offset
        return log.delete_records_before(target)
