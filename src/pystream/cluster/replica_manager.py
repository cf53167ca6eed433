"""The partitions this broker hosts: appends, reads and high watermarks.

On a single node every partition is led here with itself as the only ISR
member, so the high watermark follows the log end offset on every append.
The cluster issue adds followers, ISR tracking and ``acks=all`` waits; the
interface the broker uses (``append``, ``read``, ``partition``) stays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pystream.cluster.metadata import PartitionState
from pystream.errors import (
    NotLeaderOrFollowerError,
    UnknownTopicOrPartitionError,
)
from pystream.storage.log import AppendOrigin, FetchDataInfo, Log, LogAppendInfo
from pystream.storage.log_manager import LogManager

TopicPartition = tuple[str, int]


@dataclass
class Partition:
    """One hosted partition: its log and its replication state."""

    topic: str
    index: int
    log: Log
    state: PartitionState

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


class ReplicaManager:
    """Partitions by (topic, index); wakes waiters when a partition's data changes."""

    def __init__(
        self,
        broker_id: int,
        log_manager: LogManager,
        on_data_changed: Callable[[TopicPartition], None] | None = None,
        partition_exists: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.broker_id = broker_id
        self.log_manager = log_manager
        # Cluster mode: whether the cluster has a partition (hosted here or not), so that a
        # request for another broker's partition gets NOT_LEADER_OR_FOLLOWER, as in Kafka.
        self._partition_exists = partition_exists or (lambda topic, index: False)
        self._partitions: dict[TopicPartition, Partition] = {}
        self._on_data_changed = on_data_changed or (lambda tp: None)

    # --- hosting ----------------------------------------------------------------------------
    def become_leader(self, topic: str, index: int, state: PartitionState) -> Partition:
        """Host ``topic-index`` as its leader (creating the log if needed)."""
        log = self.log_manager.get_or_create_log(topic, index)
        partition = self._partitions.get((topic, index))
        if partition is None:
            partition = Partition(topic, index, log, state)
            self._partitions[(topic, index)] = partition
        else:
            partition.state = state
        self._maybe_advance_high_watermark(partition)
        return partition

    def become_follower(self, topic: str, index: int, state: PartitionState) -> Partition:
        """Host ``topic-index`` as a follower of ``state.leader`` (creating the log if needed).

        Produce and fetch as leader answer NOT_LEADER_OR_FOLLOWER here; fetching from
        the leader to stay in sync is the replication step's.
        """
        log = self.log_manager.get_or_create_log(topic, index)
        partition = self._partitions.get((topic, index))
        if partition is None:
            partition = Partition(topic, index, log, state)
            self._partitions[(topic, index)] = partition
        else:
            partition.state = state
        self._on_data_changed((topic, index))  # waiting fetches answer (NOT_LEADER...) now
        return partition

    def stop_replica(self, topic: str, index: int, delete: bool) -> None:
        """Stop hosting a partition; with ``delete`` its files are removed too."""
        self._partitions.pop((topic, index), None)
        if delete and self.log_manager.get_log(topic, index) is not None:
            self.log_manager.delete_log(topic, index)
        self._on_data_changed((topic, index))

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
    ) -> LogAppendInfo:
        """Append to a partition this broker leads (raises a KafkaError on bad input)."""
        partition = self.leader_partition(topic, index)
        info = partition.log.append(records, partition.leader_epoch, origin=origin)
        self._maybe_advance_high_watermark(partition)
        return info

    def _maybe_advance_high_watermark(self, partition: Partition) -> None:
        # Single replica: everything appended is replicated to the whole ISR.
        if partition.state.isr == [self.broker_id]:
            log = partition.log
            if log.high_watermark != log.log_end_offset:
                log.high_watermark = log.log_end_offset
                self._on_data_changed((partition.topic, partition.index))

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
        """Whole batches from ``fetch_offset``; consumers see only what is below the HW."""
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
