"""ListOffsets (2): earliest, latest, by timestamp, max timestamp — per partition."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pystream.errors import (
    InvalidRequestError,
    KafkaError,
)
from pystream.protocol.handlers import api_handler
from pystream.protocol.messages.list_offsets import ListOffsetsRequest, ListOffsetsResponse
from pystream.security.acl import AclOperation, ResourceType
from pystream.storage.log import LATEST_TIMESTAMP

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext
    from pystream.cluster.replication.replica_manager import Partition

TopicResponse = ListOffsetsResponse.ListOffsetsTopicResponse
PartitionResponse = ListOffsetsResponse.ListOffsetsPartitionResponse
LATEST_TIERED_TIMESTAMP = -5
READ_COMMITTED = 1


def _lookup(
    partition: Partition, timestamp: int, isolation_level: int, version: int
) -> tuple[int, int, int]:
    """(timestamp, offset, leader_epoch) as ListOffsets answers them (-1 when not found)."""
    log = partition.log
    if timestamp == LATEST_TIMESTAMP:
        # Consumers see up to the high watermark (last stable offset for read_committed).
        offset = (
            partition.last_stable_offset
            if isolation_level == READ_COMMITTED
            else partition.high_watermark
        )
        return -1, offset, log.leader_epoch_cache.epoch_for_offset(offset)
    if timestamp == LATEST_TIERED_TIMESTAMP:
        return -1, -1, -1  # no tiered storage: nothing has been uploaded
    if timestamp < LATEST_TIERED_TIMESTAMP:
        raise InvalidRequestError(f"timestamp {timestamp} is not a valid ListOffsets target")
    found = log.fetch_offset_by_timestamp(timestamp)
    if found is None or found.offset >= partition.high_watermark and timestamp >= 0:
        return -1, -1, -1
    return found.timestamp, found.offset, found.leader_epoch


@api_handler(2, 1, 9)
async def handle_list_offsets(
    request: ListOffsetsRequest, context: RequestContext
) -> ListOffsetsResponse:
    replicas = context.services.replica_manager
    version = context.api_version
    topics = []
    for topic in request.topics:
        partitions = []
        for p in topic.partitions:
            response = PartitionResponse(partition_index=p.partition_index)
            try:
                context.require(AclOperation.DESCRIBE, ResourceType.TOPIC, topic.name)
                partition = replicas.leader_partition(topic.name, p.partition_index)
                partition.state.check_leader_epoch(
                    p.current_leader_epoch, f"{topic.name}-{p.partition_index}"
                )
                timestamp, offset, epoch = _lookup(
                    partition, p.timestamp, request.isolation_level, version
                )
            except KafkaError as exc:
                response.error_code = exc.error_code
            else:
                response.timestamp, response.offset, response.leader_epoch = (
                    timestamp,
                    offset,
                    epoch,
                )
            partitions.append(response)
        topics.append(TopicResponse(name=topic.name, partitions=partitions))
    return ListOffsetsResponse(topics=topics)
