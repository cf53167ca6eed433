"""Metadata (3): brokers, topics, partition leaders — and topic auto-creation."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from pystream.broker.apis.cluster import cluster_authorized_operations
from pystream.cluster.metadata.model import TopicMetadata
from pystream.errors import (
    ErrorCode,
    InvalidRequestError,
    KafkaError,
    TopicAuthorizationFailedError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
    error_code_of,
)
from pystream.protocol.handlers import api_handler
from pystream.protocol.messages.metadata import MetadataRequest, MetadataResponse
from pystream.security.acl import AclOperation, ResourceType

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext
    from pystream.broker.services import BrokerServices

ZERO_UUID = uuid.UUID(int=0)
LEADER_NOT_AVAILABLE = 5
Topic = MetadataResponse.MetadataResponseTopic
PartitionInfo = MetadataResponse.MetadataResponsePartition
BrokerInfo = MetadataResponse.MetadataResponseBroker


def _topic_response(topic: TopicMetadata) -> Topic:
    return Topic(
        error_code=0,
        name=topic.name,
        topic_id=topic.topic_id,
        is_internal=topic.is_internal,
        partitions=_partitions_response(topic),
    )


# A topic's partition entries as last built, by topic id: (the partition states they were
# built from, the entries).  States are replaced, never changed in place, so the same
# state objects give the same entries; rebuilding 10,000 of them was most of a Metadata
# request for every topic.  The entries are shared by responses and never modified.
_partition_entries: dict[uuid.UUID, tuple[list[tuple[int, Any]], list[PartitionInfo]]] = {}


def _partitions_response(topic: TopicMetadata) -> list[PartitionInfo]:
    cached = _partition_entries.get(topic.topic_id)
    partitions = topic.partitions
    if cached is not None:
        states, entries = cached
        if len(states) == len(partitions) and all(
            partitions.get(index) is state for index, state in states
        ):
            return entries
    states = sorted(partitions.items())
    entries = [
        PartitionInfo(
            # No leader (its replicas are down): LEADER_NOT_AVAILABLE, clients retry.
            error_code=0 if state.leader >= 0 else LEADER_NOT_AVAILABLE,
            partition_index=index,
            leader_id=state.leader,
            leader_epoch=state.leader_epoch,
            replica_nodes=list(state.replicas),
            isr_nodes=list(state.isr),
            offline_replicas=[],
        )
        for index, state in states
    ]
    if len(_partition_entries) >= _MAX_CACHED_TOPICS:
        _partition_entries.clear()  # deleted topics' entries go with the rest, now and then
    _partition_entries[topic.topic_id] = (states, entries)
    return entries


_MAX_CACHED_TOPICS = 10_000


def _error_topic(name: str | None, topic_id: uuid.UUID, exc: KafkaError) -> Topic:
    return Topic(error_code=error_code_of(exc), name=name, topic_id=topic_id, partitions=[])


async def _auto_create(services: BrokerServices, name: str) -> TopicMetadata | None:
    """Create a missing topic for a Metadata request; internal topics get their own
    settings (compaction, partition counts, replication factor) from their coordinator,
    as Kafka does, and are created off the event loop in cluster mode."""
    for coordinator in (services.group_coordinator, services.transaction_coordinator):
        if name == coordinator.topic:
            await coordinator.ensure_topic()
            return services.metadata.get_topic(name)
    return await services.topic_manager.maybe_auto_create(name)


@api_handler(3, 0, 12)
async def handle_metadata(request: MetadataRequest, context: RequestContext) -> MetadataResponse:
    services = context.services
    store = services.metadata
    version = context.api_version
    requested = request.topics
    # v0: an empty list means every topic; v1+: null means every topic, [] none.
    all_topics = requested is None or (version == 0 and not requested)
    auto_create = request.allow_auto_topic_creation if version >= 4 else True
    results: list[Topic] = []
    if all_topics:
        # Topics the principal may not describe are left out, as if they did not exist.
        results = [
            _topic_response(t)
            for name, t in sorted(store.topics().items())
            if context.authorize(AclOperation.DESCRIBE, ResourceType.TOPIC, name)
        ]
    else:
        for wanted in requested:
            name, topic_id = wanted.name, wanted.topic_id
            if name is None and version < 12:
                # v10-11 requests may carry a null name, but their responses cannot say
                # it: Kafka refuses topic ids before v12 (INVALID_REQUEST).
                err = InvalidRequestError(f"Metadata v{version} needs topic names; ids need v12+")
                results.append(_error_topic("", topic_id, err))
                continue
            if name is None:
                topic = store.topic_by_id(topic_id)
                if topic is None:
                    err = UnknownTopicIdError(f"no topic has id {topic_id}")
                    results.append(_error_topic(None, topic_id, err))
                elif not context.authorize(AclOperation.DESCRIBE, ResourceType.TOPIC, topic.name):
                    results.append(_error_topic(None, topic_id, TopicAuthorizationFailedError()))
                else:
                    results.append(_topic_response(topic))
                continue
            if not context.authorize(AclOperation.DESCRIBE, ResourceType.TOPIC, name):
                results.append(_error_topic(name, ZERO_UUID, TopicAuthorizationFailedError()))
                continue
            topic = store.get_topic(name)
            if topic is None:
                try:
                    # Auto-creation needs CREATE on the cluster or on the topic (Kafka's
                    # rule; no check when the broker would not create it anyway).
                    if (
                        auto_create
                        and services.topic_manager.config.auto_create_topics_enable
                        and not (
                            context.authorize_cluster(AclOperation.CREATE)
                            or context.authorize(AclOperation.CREATE, ResourceType.TOPIC, name)
                        )
                    ):
                        raise TopicAuthorizationFailedError(f"not authorized to create {name!r}")
                    if auto_create:
                        topic = await _auto_create(services, name)
                    if topic is None:
                        raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
                except KafkaError as exc:
                    results.append(_error_topic(name, ZERO_UUID, exc))
                    continue
            results.append(_topic_response(topic))
    response = MetadataResponse(
        brokers=[
            BrokerInfo(node_id=node_id, host=host, port=port, rack=rack)
            for node_id, host, port, rack in services.live_brokers(context.listener_name)
        ],
        cluster_id=store.cluster_id,
        controller_id=services.controller_id,
        topics=results,
    )
    if version >= 8:
        _set_authorized_operations(request, response, context)
    return response


def _set_authorized_operations(
    request: MetadataRequest, response: MetadataResponse, context: RequestContext
) -> None:
    """v8+: the operations the principal may do on the cluster (v8-10) and on each topic,
    when asked (Kafka's KafkaApis: topics refused or unknown by id keep the default)."""
    if context.api_version <= 10 and request.include_cluster_authorized_operations:
        response.cluster_authorized_operations = cluster_authorized_operations(context)
    if request.include_topic_authorized_operations:
        for topic in response.topics:
            if topic.name and topic.error_code != ErrorCode.TOPIC_AUTHORIZATION_FAILED:
                topic.topic_authorized_operations = context.authorized_operations(
                    ResourceType.TOPIC, topic.name
                )
