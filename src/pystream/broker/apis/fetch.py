"""Fetch (1): read each partition from its fetch offset, long-polling until data arrives.

A fetch is planned (which bytes of which segment each partition returns),
then encoded.  If the plan has fewer than ``min_bytes`` and no error, the
request waits in the fetch purgatory until an append to one of its partitions
wakes it or ``max_wait_ms`` passes — no polling loop.

Fetch sessions (KIP-227) are not kept: every response says session id 0,
which clients read as "no session; keep sending full fetch requests".
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pystream.broker.fetch_response import encode_fetch_response
from pystream.errors import (
    FetchSessionIdNotFoundError,
    KafkaError,
    TopicAuthorizationFailedError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
)
from pystream.protocol.handlers import api_handler
from pystream.protocol.headers import encode_response_frame
from pystream.protocol.messages.fetch import FetchRequest, FetchResponse
from pystream.purgatory import DelayedOperation
from pystream.security.acl import AclOperation, ResourceType
from pystream.storage.log import FetchDataInfo

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext
    from pystream.broker.network import Chunk
    from pystream.broker.services import BrokerServices

ZERO_UUID = uuid.UUID(int=0)
READ_COMMITTED = 1  # FetchRequest.isolation_level


@dataclass(slots=True)
class PartitionFetch:
    """What one partition contributes to a fetch response."""

    partition: int
    fetch_offset: int
    max_bytes: int
    current_leader_epoch: int = -1
    error_code: int = 0
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    data: FetchDataInfo | None = None
    # read_committed: the aborted transactions in `data` (the client drops their records).
    aborted_transactions: list[FetchResponse.AbortedTransaction] | None = None

    @property
    def size(self) -> int:
        return self.data.size if self.data is not None else 0


@dataclass(slots=True)
class TopicFetch:
    name: str
    topic_id: uuid.UUID
    partitions: list[PartitionFetch] = field(default_factory=list)
    # Set when the topic itself is unknown: every partition answers with it.
    error_code: int = 0


@dataclass(slots=True)
class FetchPlan:
    """The fetch request reduced to what the broker must read; re-read on every wake-up."""

    topics: list[TopicFetch]
    max_bytes: int
    error_code: int = 0
    total_bytes: int = 0
    has_error: bool = False
    isolation_level: int = 0  # 1 = read_committed: below the last stable offset only
    # A follower's fetch (its broker id; -1 for consumers): reads up to the log end offset.
    replica_id: int = -1


def _resolve_topics(
    services: BrokerServices, request: FetchRequest, version: int
) -> list[TopicFetch]:
    store = services.metadata
    topics = []
    for fetch_topic in request.topics:
        if version >= 13:
            meta = store.topic_by_id(fetch_topic.topic_id)
            name = meta.name if meta is not None else ""
        else:
            name = fetch_topic.topic
            meta = store.get_topic(name)
        topic = TopicFetch(name, meta.topic_id if meta else fetch_topic.topic_id)
        if meta is None:
            error = UnknownTopicIdError if version >= 13 else UnknownTopicOrPartitionError
            topic.error_code = error.error_code
        topic.partitions = [
            PartitionFetch(
                p.partition,
                p.fetch_offset,
                p.partition_max_bytes,
                p.current_leader_epoch,
                error_code=topic.error_code,
            )
            for p in fetch_topic.partitions
        ]
        topics.append(topic)
    return topics


def read_plan(services: BrokerServices, plan: FetchPlan) -> None:
    """(Re)read every partition of the plan, within the response's byte budget."""
    replicas = services.replica_manager
    remaining = plan.max_bytes
    total = 0
    has_error = False
    for topic in plan.topics:
        if topic.error_code:
            has_error = True
            continue
        for p in topic.partitions:
            p.data = None
            p.error_code = 0
            p.aborted_transactions = None
            try:
                partition = replicas.leader_partition(topic.name, p.partition)
                partition.state.check_leader_epoch(
                    p.current_leader_epoch, f"{topic.name}-{p.partition}"
                )
                log = partition.log
                p.high_watermark = log.high_watermark
                p.last_stable_offset = partition.last_stable_offset
                p.log_start_offset = log.log_start_offset
                limit = min(p.max_bytes, remaining)
                # Kafka: the first partition with data may exceed the limits by one batch,
                # so a batch larger than max_bytes can never block a consumer.
                read_committed = plan.isolation_level == READ_COMMITTED
                p.data = replicas.read(
                    partition,
                    p.fetch_offset,
                    limit,
                    up_to_high_watermark=plan.replica_id < 0,
                    min_one_batch=total == 0,
                    read_committed=read_committed,
                )
                if read_committed:
                    p.aborted_transactions = [
                        FetchResponse.AbortedTransaction(
                            producer_id=txn.producer_id, first_offset=txn.first_offset
                        )
                        for txn in log.collect_aborted_transactions(p.fetch_offset, p.data)
                    ]
            except KafkaError as exc:
                p.error_code = exc.error_code
                has_error = True
                continue
            total += p.size
            remaining = max(remaining - p.size, 0)
    plan.total_bytes = total
    plan.has_error = has_error


def _partition_keys(plan: FetchPlan) -> list[tuple[str, int]]:
    return [(t.name, p.partition) for t in plan.topics for p in t.partitions]


def encode_reference(plan: FetchPlan, version: int, correlation_id: int) -> list[Chunk]:
    """Encode with the generated codec, copying record bytes (the reference path)."""
    topics = []
    for topic in plan.topics:
        partitions = []
        for p in topic.partitions:
            records = b""
            if p.data is not None and p.data.records is not None:
                with p.data.view() as view:
                    records = bytes(view)
            partitions.append(
                FetchResponse.PartitionData(
                    partition_index=p.partition,
                    error_code=p.error_code,
                    high_watermark=p.high_watermark,
                    last_stable_offset=p.last_stable_offset,
                    log_start_offset=p.log_start_offset,
                    aborted_transactions=p.aborted_transactions,
                    records=records,
                )
            )
        topics.append(
            FetchResponse.FetchableTopicResponse(
                topic=topic.name, topic_id=topic.topic_id, partitions=partitions
            )
        )
    response = FetchResponse(error_code=plan.error_code, session_id=0, responses=topics)
    return [encode_response_frame(1, version, correlation_id, response)]


@api_handler(1, 4, 16)
async def handle_fetch(request: FetchRequest, context: RequestContext) -> list[Chunk]:
    services = context.services
    version = context.api_version
    max_bytes = min(request.max_bytes, services.config.fetch_max_bytes)
    replica_id = request.replica_state.replica_id if version >= 15 else request.replica_id
    plan = FetchPlan(
        _resolve_topics(services, request, version),
        max_bytes,
        isolation_level=request.isolation_level,
        replica_id=replica_id,
    )
    if services.authorizer is not None:
        _authorize(context, plan)
    if version >= 7 and request.session_id != 0:
        # We never hand out sessions, so any session id is one we do not know.
        plan.error_code = FetchSessionIdNotFoundError.error_code
        plan.topics = []
    else:
        if replica_id >= 0:
            _record_follower_fetches(services, plan)
        read_plan(services, plan)
        if plan.total_bytes < request.min_bytes and not plan.has_error and request.max_wait_ms > 0:
            await _wait_for_data(services, plan, request.min_bytes, request.max_wait_ms)
    _record_metrics(services, plan)
    # Record sets go out as file regions (sendfile) on plaintext, as views of the segments'
    # mmaps on TLS (encrypted straight from them); encode_reference is the oracle.
    connection = context.connection
    return encode_fetch_response(
        plan,
        version,
        context.header.correlation_id,
        connection.supports_sendfile,
        views=connection.sends_views,
    )


def _record_metrics(services: BrokerServices, plan: FetchPlan) -> None:
    """Kafka's BrokerTopicMetrics of a fetch: once per partition, with its bytes out."""
    record = services.metrics.record_fetch
    follower = plan.replica_id >= 0
    for topic in plan.topics:
        for p in topic.partitions:
            record(topic.name, p.size, follower=follower, failed=p.error_code != 0)


def _authorize(context: RequestContext, plan: FetchPlan) -> None:
    """Kafka's rule: a follower needs CLUSTER_ACTION (else every partition is refused), a
    consumer READ on each topic; refused topics answer TOPIC_AUTHORIZATION_FAILED."""
    follower_allowed = plan.replica_id < 0 or context.authorize_cluster(AclOperation.CLUSTER_ACTION)
    for topic in plan.topics:
        if topic.error_code == UnknownTopicIdError.error_code:
            continue  # an id nobody knows names nothing to authorize
        if follower_allowed and (
            plan.replica_id >= 0
            or context.authorize(AclOperation.READ, ResourceType.TOPIC, topic.name)
        ):
            continue
        topic.error_code = TopicAuthorizationFailedError.error_code
        for p in topic.partitions:
            p.error_code = topic.error_code


def _record_follower_fetches(services: BrokerServices, plan: FetchPlan) -> None:
    """A follower's fetch offsets are its log end offsets: the leader's view of the ISR and
    the high watermark move with them (once per request, before any long poll)."""
    replicas = services.replica_manager
    for topic in plan.topics:
        if topic.error_code:
            continue
        for p in topic.partitions:
            try:
                partition = replicas.leader_partition(topic.name, p.partition)
                partition.state.check_leader_epoch(
                    p.current_leader_epoch, f"{topic.name}-{p.partition}"
                )
                replicas.update_follower_fetch(partition, plan.replica_id, p.fetch_offset)
            except KafkaError:
                continue  # read_plan answers the partition with the same error


async def _wait_for_data(
    services: BrokerServices, plan: FetchPlan, min_bytes: int, max_wait_ms: int
) -> None:
    def try_complete() -> bool | None:
        read_plan(services, plan)
        return True if plan.total_bytes >= min_bytes or plan.has_error else None

    operation = DelayedOperation(try_complete, lambda: False, _partition_keys(plan))
    expired_without_data = not await services.fetch_purgatory.wait(operation, max_wait_ms)
    if expired_without_data:
        read_plan(services, plan)  # whatever arrived, even below min_bytes
