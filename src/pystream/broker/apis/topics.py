"""CreateTopics (19), DeleteTopics (20), CreatePartitions (37).

Each topic named in a request gets exactly one result (librdkafka aborts on a
response that misses one); a name given twice gets one INVALID_REQUEST
result and nothing happens to it, as in Kafka.  The work itself is
:class:`~pystream.cluster.topics.TopicManager`'s.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from pystream.broker.apis.common import distinct
from pystream.broker.apis.config_entries import topic_config_entries
from pystream.cluster.metadata.model import INTERNAL_TOPICS, TopicMetadata
from pystream.errors import (
    ErrorCode,
    InvalidReplicaAssignmentError,
    InvalidRequestError,
    KafkaError,
    RequestTimedOutError,
    TopicDeletionDisabledError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
)
from pystream.protocol.handlers import api_handler
from pystream.protocol.messages.create_partitions import (
    CreatePartitionsRequest,
    CreatePartitionsResponse,
)
from pystream.protocol.messages.create_topics import CreateTopicsRequest, CreateTopicsResponse
from pystream.protocol.messages.delete_topics import DeleteTopicsRequest, DeleteTopicsResponse
from pystream.security.acl import AclOperation, ResourceType

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext
    from pystream.broker.services import BrokerServices

ZERO_UUID = uuid.UUID(int=0)
CreatableTopicResult = CreateTopicsResponse.CreatableTopicResult
CreatableTopicConfig = CreateTopicsResponse.CreatableTopicConfigs
DeletableTopicResult = DeleteTopicsResponse.DeletableTopicResult
CreatePartitionsResult = CreatePartitionsResponse.CreatePartitionsTopicResult


# --- CreateTopics -----------------------------------------------------------------------------


async def _create_topic(
    services: BrokerServices, topic: CreateTopicsRequest.CreatableTopic, validate_only: bool
) -> TopicMetadata:
    assignments: dict[int, list[int]] = {}
    for assignment in topic.assignments:
        if assignment.partition_index in assignments:
            raise InvalidReplicaAssignmentError(
                "Found multiple manual partition assignments for partition "
                f"{assignment.partition_index}"
            )
        assignments[assignment.partition_index] = list(assignment.broker_ids)
    manager = services.topic_manager
    return await manager.create_topic(
        topic.name,
        topic.num_partitions,
        topic.replication_factor,
        {config.name: config.value for config in topic.configs},
        assignments or None,
        validate_only=validate_only,
    )


def _created(services: BrokerServices, result: CreatableTopicResult, topic: TopicMetadata) -> None:
    """Fill a successful result: v5+ report the counts and every config with its source,
    v7 the topic id (all zeros for validate_only: nothing was created)."""
    manager = services.topic_manager
    config = manager.log_config_for(topic.configs)
    result.topic_id = topic.topic_id
    result.num_partitions = len(topic.partitions)
    result.replication_factor = len(topic.partitions[0].replicas)
    result.configs = [
        CreatableTopicConfig(
            name=entry.name,
            value=entry.value,
            read_only=entry.read_only,
            config_source=int(entry.source),
            is_sensitive=False,
        )
        for entry in topic_config_entries(services.dynamic_config.current, topic.configs, config)
    ]


@api_handler(19, 0, 7)
async def handle_create_topics(
    request: CreateTopicsRequest, context: RequestContext
) -> CreateTopicsResponse:
    """Create (or with validate_only, check) each topic; -1 counts mean the broker default."""
    services = context.services
    by_name = {topic.name: topic for topic in request.topics}
    results = []
    for name, duplicate in distinct(topic.name for topic in request.topics):
        result = CreatableTopicResult(name=name, error_message=None)
        # KIP-525: the configs, counts and id only for a principal that may describe the
        # topic's configs (Kafka: TOPIC_AUTHORIZATION_FAILED in topic_config_error_code).
        shows_configs = context.authorize(AclOperation.DESCRIBE_CONFIGS, ResourceType.TOPIC, name)
        if not shows_configs:
            result.topic_config_error_code = ErrorCode.TOPIC_AUTHORIZATION_FAILED
        try:
            if duplicate:
                raise InvalidRequestError(
                    f"Duplicate topic name {name!r}: the request names it more than once"
                )
            # CREATE on the cluster or on the topic (Kafka's rule).
            if not context.authorize_cluster(AclOperation.CREATE):
                context.require(AclOperation.CREATE, ResourceType.TOPIC, name)
            topic = await _create_topic(services, by_name[name], request.validate_only)
        except KafkaError as exc:
            result.error_code, result.error_message = exc.error_code, str(exc)
        else:
            if shows_configs:
                _created(services, result, topic)
        results.append(result)
    return CreateTopicsResponse(topics=results)


# --- DeleteTopics -----------------------------------------------------------------------------


def _topic_to_delete(
    services: BrokerServices, name: str | None, topic_id: uuid.UUID
) -> TopicMetadata:
    """The topic a DeleteTopics entry names (by name, or by id in v6), if clients may delete
    it: the internal topics hold every group's offsets and every transaction's state."""
    if name is not None and topic_id != ZERO_UUID:
        raise InvalidRequestError("You may not specify both topic name and topic id.")
    if name is None:
        if topic_id == ZERO_UUID:
            raise InvalidRequestError("Neither topic name nor id were specified.")
        topic = services.metadata.topic_by_id(topic_id)
        if topic is None:
            raise UnknownTopicIdError(f"No topic has id {topic_id}")
        _refuse_internal(topic.name)
        return topic
    _refuse_internal(name)
    topic = services.metadata.get_topic(name)
    if topic is None:
        raise UnknownTopicOrPartitionError(f"Topic '{name}' does not exist")
    return topic


def _refuse_internal(name: str) -> None:
    if name in INTERNAL_TOPICS:
        raise InvalidRequestError(
            f"Topic '{name}' is an internal topic (it holds group offsets or transaction "
            "state) and cannot be deleted by clients"
        )


@api_handler(20, 0, 6)
async def handle_delete_topics(
    request: DeleteTopicsRequest, context: RequestContext
) -> DeleteTopicsResponse:
    """Delete each topic: metadata first, then its partitions' directories.

    Clients cannot delete the internal topics (``__consumer_offsets``,
    ``__transaction_state``): INVALID_REQUEST.  (Kafka itself leaves that to ACLs.)
    """
    services = context.services
    manager = context.services.topic_manager
    version = context.api_version
    if version >= 6:
        entries = [(t.name, t.topic_id) for t in request.topics]
    else:
        entries = [(name, ZERO_UUID) for name in request.topic_names]
    results = []
    for (name, topic_id), duplicate in distinct(entries):
        result = DeletableTopicResult(name=name, topic_id=topic_id, error_message=None)
        try:
            manager.check_deletion_enabled()
            if duplicate:
                what = "name" if name is not None else "id"
                raise InvalidRequestError(f"Duplicate topic {what}.")
            if name is not None:  # refused before revealing whether it exists, as Kafka
                context.require(AclOperation.DELETE, ResourceType.TOPIC, name)
            topic = _topic_to_delete(services, name, topic_id)
            if name is None and context.authorize(
                AclOperation.DESCRIBE, ResourceType.TOPIC, topic.name
            ):
                result.name = topic.name  # Kafka names a topic asked by id to who may see it
            context.require(AclOperation.DELETE, ResourceType.TOPIC, topic.name)
            result.name = topic.name
            result.topic_id = (await manager.delete_topic(topic.name)).topic_id
        except TopicDeletionDisabledError as exc:
            # Before v3 clients did not know TOPIC_DELETION_DISABLED.
            error = exc if version >= 3 else InvalidRequestError(str(exc))
            result.error_code, result.error_message = error.error_code, str(error)
        except KafkaError as exc:
            result.error_code, result.error_message = exc.error_code, str(exc)
        results.append(result)
    if services.cluster is not None:
        await _wait_deleted(services, results, request.timeout_ms)
    return DeleteTopicsResponse(responses=results)


async def _wait_deleted(
    services: BrokerServices, results: list[DeletableTopicResult], timeout_ms: int
) -> None:
    """Cluster mode: answer once the controller has deleted the topics (as Kafka does), or
    REQUEST_TIMED_OUT for those still there after ``timeout_ms``."""
    names = {r.name for r in results if r.error_code == 0}
    store = services.metadata
    try:
        await store.wait_for(lambda s: not names & set(s.topics()), max(timeout_ms, 0) / 1000)
    except TimeoutError:
        for result in results:
            if result.error_code == 0 and result.name in store.topics():
                error = RequestTimedOutError(f"Topic {result.name} is still being deleted")
                result.error_code, result.error_message = error.error_code, str(error)


# --- CreatePartitions -------------------------------------------------------------------------


@api_handler(37, 0, 3)
async def handle_create_partitions(
    request: CreatePartitionsRequest, context: RequestContext
) -> CreatePartitionsResponse:
    """Grow each topic to its new partition count (never shrink)."""
    manager = context.services.topic_manager
    by_name = {topic.name: topic for topic in request.topics}
    results = []
    for name, duplicate in distinct(topic.name for topic in request.topics):
        result = CreatePartitionsResult(name=name, error_message=None)
        topic = by_name[name]
        try:
            if duplicate:
                raise InvalidRequestError("Duplicate topic name.")
            context.require(AclOperation.ALTER, ResourceType.TOPIC, name)
            assignments = (
                None
                if topic.assignments is None
                else [list(a.broker_ids) for a in topic.assignments]
            )
            await manager.create_partitions(
                name, topic.count, assignments, validate_only=request.validate_only
            )
        except KafkaError as exc:
            result.error_code, result.error_message = exc.error_code, str(exc)
        results.append(result)
    return CreatePartitionsResponse(results=results)
