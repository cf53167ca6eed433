"""OffsetCommit (8), OffsetFetch (9) and OffsetDelete (47): a group's committed offsets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pystream.broker.apis.groups import coordinator_of, may_read_group
from pystream.clock import now_ms
from pystream.errors import ErrorCode
from pystream.groups.offsets_log import OffsetAndMetadata, TopicPartition
from pystream.protocol.handlers import api_handler
from pystream.protocol.messages.offset_commit import OffsetCommitRequest, OffsetCommitResponse
from pystream.protocol.messages.offset_delete import OffsetDeleteRequest, OffsetDeleteResponse
from pystream.protocol.messages.offset_fetch import OffsetFetchRequest, OffsetFetchResponse
from pystream.security.acl import AclOperation, ResourceType

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext

E = ErrorCode
NO_OFFSET = -1  # what OffsetFetch answers for a partition without a committed offset


def _partition_exists(context: RequestContext, topic: str, partition: int) -> bool:
    metadata = context.services.metadata.get_topic(topic)
    return metadata is not None and partition in metadata.partitions


def _topic_error(
    context: RequestContext, group_allowed: bool, operation: AclOperation, topic: str
) -> int:
    """GROUP_/TOPIC_AUTHORIZATION_FAILED for a topic's partitions, or 0 if allowed."""
    if not group_allowed:
        return E.GROUP_AUTHORIZATION_FAILED
    if not context.authorize(operation, ResourceType.TOPIC, topic):
        return E.TOPIC_AUTHORIZATION_FAILED
    return 0


# --- OffsetCommit -----------------------------------------------------------------------------


@api_handler(8, 0, 9)
async def handle_offset_commit(
    request: OffsetCommitRequest, context: RequestContext
) -> OffsetCommitResponse:
    version = context.api_version
    now = now_ms()
    # v2..v4 may ask for a retention of their own (old per-commit expiry); later ones cannot.
    retention = request.retention_time_ms if 2 <= version <= 4 else -1
    expire_timestamp = now + retention if retention != -1 else -1
    offsets: dict[TopicPartition, OffsetAndMetadata] = {}
    # Kafka's checks: READ on the group (else every partition fails), READ on each topic.
    group_allowed = may_read_group(context, request.group_id)
    refused: dict[TopicPartition, int] = {}
    for topic in request.topics:
        topic_error = _topic_error(context, group_allowed, AclOperation.READ, topic.name)
        for p in topic.partitions:
            tp = (topic.name, p.partition_index)
            if topic_error or not _partition_exists(context, *tp):
                refused[tp] = topic_error or E.UNKNOWN_TOPIC_OR_PARTITION
                continue
            commit_timestamp = p.commit_timestamp if version == 1 else -1
            offsets[tp] = OffsetAndMetadata(
                p.committed_offset,
                p.committed_leader_epoch if version >= 6 else -1,
                p.committed_metadata or "",
                commit_timestamp if commit_timestamp != -1 else now,
                expire_timestamp,
            )
    results: dict[TopicPartition, int] = {}
    if offsets:
        # Answered once the ISR has the commit: it then survives the coordinator's loss.
        results = await coordinator_of(context).offsets.commit_offsets(
            request.group_id,
            request.member_id if version >= 1 else "",
            request.group_instance_id if version >= 7 else None,
            request.generation_id_or_member_epoch if version >= 1 else -1,
            offsets,
        )
    Partition = OffsetCommitResponse.OffsetCommitResponsePartition
    return OffsetCommitResponse(
        topics=[
            OffsetCommitResponse.OffsetCommitResponseTopic(
                name=topic.name,
                partitions=[
                    Partition(
                        partition_index=p.partition_index,
                        error_code=refused.get((topic.name, p.partition_index))
                        or results[(topic.name, p.partition_index)],
                    )
                    for p in topic.partitions
                ],
            )
            for topic in request.topics
        ]
    )


# --- OffsetFetch ------------------------------------------------------------------------------


def _fetch_group(
    context: RequestContext,
    group_id: str,
    requested: list[tuple[str, list[int]]] | None,
    require_stable: bool,
) -> tuple[int, list[tuple[str, list[tuple[int, OffsetAndMetadata | None, int]]]]]:
    """(group error, [(topic, [(partition, offset or None, error)])]) in the request's order.

    Kafka's checks: READ on the group; DESCRIBE on each topic (a topic named but not
    describable answers TOPIC_AUTHORIZATION_FAILED; one not named is left out)."""
    if not may_read_group(context, group_id):
        return E.GROUP_AUTHORIZATION_FAILED, []
    partitions = None
    if requested is not None:
        partitions = [(topic, index) for topic, indexes in requested for index in indexes]
    error, found = coordinator_of(context).offsets.fetch_offsets(
        group_id, partitions, require_stable
    )
    if error:
        return error, []
    if requested is None:  # every committed offset of the group, by topic
        by_topic: dict[str, list[int]] = {}
        for topic, index in sorted(found):
            by_topic.setdefault(topic, []).append(index)
        requested = [
            (topic, indexes)
            for topic, indexes in by_topic.items()
            if not _topic_error(context, True, AclOperation.DESCRIBE, topic)
        ]
    results = []
    for topic, indexes in requested:
        if denied := _topic_error(context, True, AclOperation.DESCRIBE, topic):
            results.append((topic, [(index, None, denied) for index in indexes]))
        else:
            results.append((topic, [(index, *found[(topic, index)]) for index in indexes]))
    return 0, results


@api_handler(9, 0, 9)
async def handle_offset_fetch(
    request: OffsetFetchRequest, context: RequestContext
) -> OffsetFetchResponse:
    version = context.api_version
    require_stable = request.require_stable if version >= 7 else False
    if version >= 8:  # batched by group
        groups = []
        for group in request.groups:
            requested = (
                None
                if group.topics is None
                else [(t.name, list(t.partition_indexes)) for t in group.topics]
            )
            error, topics = _fetch_group(context, group.group_id, requested, require_stable)
            groups.append(
                OffsetFetchResponse.OffsetFetchResponseGroup(
                    group_id=group.group_id,
                    error_code=error,
                    topics=[
                        OffsetFetchResponse.OffsetFetchResponseTopics(
                            name=name,
                            partitions=[
                                _partition(OffsetFetchResponse.OffsetFetchResponsePartitions, *p)
                                for p in partitions
                            ],
                        )
                        for name, partitions in topics
                    ],
                )
            )
        return OffsetFetchResponse(groups=groups)
    requested = (
        None
        if request.topics is None
        else [(t.name, list(t.partition_indexes)) for t in request.topics]
    )
    error, topics = _fetch_group(context, request.group_id, requested, require_stable)
    if error and version < 2 and requested is not None:
        # v0/v1 have no group-level error field: every partition carries it.
        topics = [(name, [(i, None, error) for i in indexes]) for name, indexes in requested]
    return OffsetFetchResponse(
        error_code=error,
        topics=[
            OffsetFetchResponse.OffsetFetchResponseTopic(
                name=name,
                partitions=[
                    _partition(OffsetFetchResponse.OffsetFetchResponsePartition, *p)
                    for p in partitions
                ],
            )
            for name, partitions in topics
        ],
    )


def _partition(cls: type, index: int, offset: OffsetAndMetadata | None, error: int) -> object:
    if offset is None:
        return cls(
            partition_index=index,
            committed_offset=NO_OFFSET,
            committed_leader_epoch=-1,
            metadata="",
            error_code=error,
        )
    return cls(
        partition_index=index,
        committed_offset=offset.offset,
        committed_leader_epoch=offset.leader_epoch,
        metadata=offset.metadata,
        error_code=error,
    )


# --- OffsetDelete -----------------------------------------------------------------------------


@api_handler(47, 0, 0)
async def handle_offset_delete(
    request: OffsetDeleteRequest, context: RequestContext
) -> OffsetDeleteResponse:
    if not context.authorize(AclOperation.DELETE, ResourceType.GROUP, request.group_id):
        return OffsetDeleteResponse(error_code=E.GROUP_AUTHORIZATION_FAILED, topics=[])
    wanted: list[TopicPartition] = []
    refused: dict[TopicPartition, int] = {}
    for topic in request.topics:
        topic_error = _topic_error(context, True, AclOperation.READ, topic.name)
        for p in topic.partitions:
            tp = (topic.name, p.partition_index)
            if not topic_error and _partition_exists(context, *tp):
                wanted.append(tp)
            else:
                refused[tp] = topic_error or E.UNKNOWN_TOPIC_OR_PARTITION
    error, results = coordinator_of(context).offsets.delete_offsets(request.group_id, wanted)
    if error:
        return OffsetDeleteResponse(error_code=error)
    Partition = OffsetDeleteResponse.OffsetDeleteResponsePartition
    return OffsetDeleteResponse(
        topics=[
            OffsetDeleteResponse.OffsetDeleteResponseTopic(
                name=topic.name,
                partitions=[
                    Partition(
                        partition_index=p.partition_index,
                        error_code=refused.get((topic.name, p.partition_index))
                        or results.get((topic.name, p.partition_index), 0),
                    )
                    for p in topic.partitions
                ],
            )
            for topic in request.topics
        ]
    )
