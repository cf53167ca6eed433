"""DeleteRecords (21) and OffsetForLeaderEpoch (23): per-partition requests to the leader."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pystream.errors import KafkaError, PolicyViolationError
from pystream.protocol.handlers import api_handler
from pystream.protocol.messages.delete_records import DeleteRecordsRequest, DeleteRecordsResponse
from pystream.protocol.messages.offset_for_leader_epoch import (
    OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
)
from pystream.security.acl import AclOperation, ResourceType

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext
    from pystream.cluster.replication.replica_manager import ReplicaManager

DeleteRecordsTopicResult = DeleteRecordsResponse.DeleteRecordsTopicResult
DeleteRecordsPartitionResult = DeleteRecordsResponse.DeleteRecordsPartitionResult
EpochTopicResult = OffsetForLeaderEpochResponse.OffsetForLeaderTopicResult
EpochEndOffset = OffsetForLeaderEpochResponse.EpochEndOffset


def _delete_records(replicas: ReplicaManager, topic: str, index: int, offset: int) -> int:
    """Move the partition's log start offset to ``offset`` (-1: the high watermark); returns
    the new low watermark.  Beyond the high watermark is OFFSET_OUT_OF_RANGE."""
    partition = replicas.leader_partition(topic, index)
    if not partition.log.config.delete_enabled:
        # As Kafka: a compact-only log keeps every key's latest record by promise.
        raise PolicyViolationError(
            f"Records of {topic}-{index} cannot be deleted: its cleanup.policy "
            f"({','.join(partition.log.config.cleanup_policy)}) does not include delete"
        )
    return replicas.delete_records(topic, index, offset)


@api_handler(21, 0, 2)
async def handle_delete_records(
    request: DeleteRecordsRequest, context: RequestContext
) -> DeleteRecordsResponse:
    """Delete every record below the given offset of each partition."""
    services = context.services
    replicas = services.replica_manager
    topics = []
    moved = False
    for topic in request.topics:
        partitions = []
        for p in topic.partitions:
            result = DeleteRecordsPartitionResult(
                partition_index=p.partition_index, low_watermark=-1
            )
            try:
                context.require(AclOperation.DELETE, ResourceType.TOPIC, topic.name)
                result.low_watermark = _delete_records(
                    replicas, topic.name, p.partition_index, p.offset
                )
                moved = True
            except KafkaError as exc:
                result.error_code = exc.error_code
            partitions.append(result)
        topics.append(DeleteRecordsTopicResult(name=topic.name, partitions=partitions))
    if moved:
        # Deleted records must stay deleted after a crash, not come back at the segment base.
        services.log_manager.checkpoint_log_start_offsets()
    return DeleteRecordsResponse(topics=topics)


@api_handler(23, 0, 4)
async def handle_offset_for_leader_epoch(
    request: OffsetForLeaderEpochRequest, context: RequestContext
) -> OffsetForLeaderEpochResponse:
    """The end offset of each requested leader epoch, from the leader's epoch cache.

    Followers use it to truncate a divergent log, consumers (KIP-320) to detect
    truncation after a leader change.  As in Kafka the answer does not depend on
    ``replica_id`` (v3+; it only selects the authorization Kafka applies), and the
    latest epoch ends at the log end offset.  An epoch the cache does not know gives
    leader_epoch -1 and end_offset -1 with no error.
    """
    replicas = context.services.replica_manager
    # Kafka: CLUSTER_ACTION on the cluster (a follower) allows every topic; anyone else needs
    # DESCRIBE on each topic (TOPIC_AUTHORIZATION_FAILED), whatever replica_id says.
    inter_broker = context.authorize_cluster(AclOperation.CLUSTER_ACTION)
    topics = []
    for topic in request.topics:
        partitions = []
        for p in topic.partitions:
            result = EpochEndOffset(partition=p.partition)
            try:
                if not inter_broker:
                    context.require(AclOperation.DESCRIBE, ResourceType.TOPIC, topic.topic)
                partition = replicas.leader_partition(topic.topic, p.partition)
                partition.state.check_leader_epoch(
                    p.current_leader_epoch, f"{topic.topic}-{p.partition}"
                )
                result.leader_epoch, result.end_offset = partition.log.end_offset_for_epoch(
                    p.leader_epoch
                )
            except KafkaError as exc:
                result.error_code = exc.error_code
            partitions.append(result)
        topics.append(EpochTopicResult(topic=topic.topic, partitions=partitions))
    return OffsetForLeaderEpochResponse(topics=topics)
