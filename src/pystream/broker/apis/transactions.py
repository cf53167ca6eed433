"""Producer-id and transaction API handlers: InitProducerId ... EndTxn, TxnOffsetCommit,
WriteTxnMarkers, DescribeTransactions, ListTransactions, DescribeProducers.

Each handler turns its request into a call on the broker's
:class:`~pystream.txn.coordinator.TransactionCoordinator` (or the partitions'
producer state) and the result into its response.  Versions before KIP-588
know no PRODUCER_FENCED: they get INVALID_PRODUCER_EPOCH, as from Kafka.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pystream.broker.apis.groups import may_read_group
from pystream.clock import now_ms
from pystream.errors import ErrorCode, KafkaError
from pystream.groups.offsets_log import OffsetAndMetadata
from pystream.protocol.handlers import api_handler
from pystream.protocol.messages.add_offsets_to_txn import (
    AddOffsetsToTxnRequest,
    AddOffsetsToTxnResponse,
)
from pystream.protocol.messages.add_partitions_to_txn import (
    AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse,
)
from pystream.protocol.messages.describe_producers import (
    DescribeProducersRequest,
    DescribeProducersResponse,
)
from pystream.protocol.messages.describe_transactions import (
    DescribeTransactionsRequest,
    DescribeTransactionsResponse,
)
from pystream.protocol.messages.end_txn import EndTxnRequest, EndTxnResponse
from pystream.protocol.messages.init_producer_id import (
    InitProducerIdRequest,
    InitProducerIdResponse,
)
from pystream.protocol.messages.list_transactions import (
    ListTransactionsRequest,
    ListTransactionsResponse,
)
from pystream.protocol.messages.txn_offset_commit import (
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
)
from pystream.protocol.messages.write_txn_markers import (
    WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
)
from pystream.security.acl import AclOperation
from pystream.security.acl import ResourceType as AclResourceType
from pystream.txn.markers import wait_markers_replicated, write_markers
from pystream.txn.metadata import TxnState

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext

E = ErrorCode


def _may_write_txn(context: RequestContext, transactional_id: str) -> bool:
    """WRITE on the transactional id: what every transactional request needs."""
    return context.authorize(AclOperation.WRITE, AclResourceType.TRANSACTIONAL_ID, transactional_id)


def _fenced(code: int, version: int, first_version_with_fenced: int) -> int:
    """PRODUCER_FENCED as older clients know it."""
    if code == E.PRODUCER_FENCED and version < first_version_with_fenced:
        return E.INVALID_PRODUCER_EPOCH
    return code


# --- InitProducerId (22) ----------------------------------------------------------------------
@api_handler(22, 0, 4)
async def handle_init_producer_id(
    request: InitProducerIdRequest, context: RequestContext
) -> InitProducerIdResponse:
    coordinator = context.services.transaction_coordinator
    version = context.api_version
    if request.transactional_id is not None:
        if not _may_write_txn(context, request.transactional_id):
            return InitProducerIdResponse(
                error_code=E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                producer_id=-1,
                producer_epoch=-1,
            )
    elif not (
        context.authorize_cluster(AclOperation.IDEMPOTENT_WRITE)
        or context.authorize_any(AclOperation.WRITE, AclResourceType.TOPIC)
    ):
        # KIP-679: an idempotent producer needs IDEMPOTENT_WRITE or WRITE on some topic.
        return InitProducerIdResponse(
            error_code=E.CLUSTER_AUTHORIZATION_FAILED, producer_id=-1, producer_epoch=-1
        )
    if request.transactional_id is not None:
        # The id's coordinator partition must exist (usually FindCoordinator created it).
        code = await coordinator.ensure_topic()
        if code:
            return InitProducerIdResponse(error_code=code, producer_id=-1, producer_epoch=-1)
    code, producer_id, epoch = await coordinator.init_producer_id(
        request.transactional_id,
        request.transaction_timeout_ms,
        request.producer_id if version >= 3 else -1,
        request.producer_epoch if version >= 3 else -1,
    )
    if not code and request.transactional_id is not None:
        code = await coordinator.wait_replicated(request.transactional_id)
        if code:
            producer_id, epoch = -1, -1
    return InitProducerIdResponse(
        error_code=_fenced(code, version, 4), producer_id=producer_id, producer_epoch=epoch
    )


# --- AddPartitionsToTxn (24) ------------------------------------------------------------------
TopicResult = AddPartitionsToTxnResponse.AddPartitionsToTxnTopicResult
PartitionResult = AddPartitionsToTxnResponse.AddPartitionsToTxnPartitionResult


@api_handler(24, 0, 3)
async def handle_add_partitions_to_txn(
    request: AddPartitionsToTxnRequest, context: RequestContext
) -> AddPartitionsToTxnResponse:
    services = context.services
    coordinator = services.transaction_coordinator
    version = context.api_version
    wanted = [(t.name, p) for t in request.v3_and_below_topics for p in t.partitions]
    errors: dict[tuple[str, int], int] = {}
    txn_allowed = _may_write_txn(context, request.v3_and_below_transactional_id)
    for topic, partition in wanted:
        meta = services.metadata.get_topic(topic)
        if not txn_allowed:
            errors[(topic, partition)] = E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        elif not context.authorize(AclOperation.WRITE, AclResourceType.TOPIC, topic):
            errors[(topic, partition)] = E.TOPIC_AUTHORIZATION_FAILED
        elif meta is None or partition not in meta.partitions:
            errors[(topic, partition)] = E.UNKNOWN_TOPIC_OR_PARTITION
    if errors:
        # As Kafka: nothing is added when one partition is unknown.
        code = E.OPERATION_NOT_ATTEMPTED
    else:
        code = coordinator.add_partitions(
            request.v3_and_below_transactional_id,
            request.v3_and_below_producer_id,
            request.v3_and_below_producer_epoch,
            wanted,
        ) or await coordinator.wait_replicated(request.v3_and_below_transactional_id)
    code = _fenced(code, version, 2)
    by_topic: dict[str, list[PartitionResult]] = {}
    for topic, partition in wanted:
        by_topic.setdefault(topic, []).append(
            PartitionResult(
                partition_index=partition, partition_error_code=errors.get((topic, partition), code)
            )
        )
    return AddPartitionsToTxnResponse(
        results_by_topic_v3_and_below=[
            TopicResult(name=topic, results_by_partition=results)
            for topic, results in by_topic.items()
        ]
    )


# --- AddOffsetsToTxn (25) ---------------------------------------------------------------------
@api_handler(25, 0, 3)
async def handle_add_offsets_to_txn(
    request: AddOffsetsToTxnRequest, context: RequestContext
) -> AddOffsetsToTxnResponse:
    coordinator = context.services.transaction_coordinator
    if not _may_write_txn(context, request.transactional_id):
        return AddOffsetsToTxnResponse(error_code=E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    if not may_read_group(context, request.group_id):
        return AddOffsetsToTxnResponse(error_code=E.GROUP_AUTHORIZATION_FAILED)
    if not request.group_id:
        return AddOffsetsToTxnResponse(error_code=E.INVALID_GROUP_ID)
    code = coordinator.add_partitions(
        request.transactional_id,
        request.producer_id,
        request.producer_epoch,
        [coordinator.offsets_partition_for(request.group_id)],
    ) or await coordinator.wait_replicated(request.transactional_id)
    return AddOffsetsToTxnResponse(error_code=_fenced(code, context.api_version, 2))


# --- EndTxn (26) ------------------------------------------------------------------------------
@api_handler(26, 0, 3)
async def handle_end_txn(request: EndTxnRequest, context: RequestContext) -> EndTxnResponse:
    coordinator = context.services.transaction_coordinator
    if not _may_write_txn(context, request.transactional_id):
        return EndTxnResponse(error_code=E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    code = coordinator.end_transaction(
        request.transactional_id, request.producer_id, request.producer_epoch, request.committed
    ) or await coordinator.wait_replicated(request.transactional_id)
    return EndTxnResponse(error_code=_fenced(code, context.api_version, 2))


# --- TxnOffsetCommit (28) ---------------------------------------------------------------------
TxnTopicResponse = TxnOffsetCommitResponse.TxnOffsetCommitResponseTopic
TxnPartitionResponse = TxnOffsetCommitResponse.TxnOffsetCommitResponsePartition


@api_handler(28, 0, 3)
async def handle_txn_offset_commit(
    request: TxnOffsetCommitRequest, context: RequestContext
) -> TxnOffsetCommitResponse:
    """Offsets committed inside a transaction: stored by the group coordinator as pending,
    visible to the group only once the transaction commits (see :mod:`.group_hooks`)."""
    services = context.services
    version = context.api_version
    now = now_ms()
    offsets = {
        (topic.name, p.partition_index): OffsetAndMetadata(
            offset=p.committed_offset,
            leader_epoch=p.committed_leader_epoch if version >= 2 else -1,
            metadata=p.committed_metadata or "",
            commit_timestamp=now,
        )
        for topic in request.topics
        for p in topic.partitions
    }
    coordinator = services.transaction_coordinator
    refused: dict[tuple[str, int], int] = {}
    if not _may_write_txn(context, request.transactional_id):
        refused = dict.fromkeys(offsets, E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    elif not may_read_group(context, request.group_id):
        refused = dict.fromkeys(offsets, E.GROUP_AUTHORIZATION_FAILED)
    else:
        for tp in offsets:
            if not context.authorize(AclOperation.READ, AclResourceType.TOPIC, tp[0]):
                refused[tp] = E.TOPIC_AUTHORIZATION_FAILED
    offsets = {tp: o for tp, o in offsets.items() if tp not in refused}
    # The producer's transaction must have added the group's partition (AddOffsetsToTxn).
    code = coordinator.check_txn_offset_commit(
        request.transactional_id, request.producer_id, request.producer_epoch, request.group_id
    )
    store = services.group_coordinator.offsets
    if not offsets:
        results = {}
    elif code:
        results = dict.fromkeys(offsets, code)
    else:
        results = await store.commit_transactional_offsets(
            request.group_id,
            request.producer_id,
            request.producer_epoch,
            request.member_id if version >= 3 else "",
            request.group_instance_id if version >= 3 else None,
            request.generation_id if version >= 3 else -1,
            offsets,
        )
    results = {tp: _fenced(results.get(tp, E.UNKNOWN_SERVER_ERROR), version, 2) for tp in offsets}
    results.update(refused)
    by_topic: dict[str, list[TxnPartitionResponse]] = {}
    for (topic, partition), error in results.items():
        by_topic.setdefault(topic, []).append(
            TxnPartitionResponse(partition_index=partition, error_code=error)
        )
    return TxnOffsetCommitResponse(
        topics=[TxnTopicResponse(name=t, partitions=ps) for t, ps in by_topic.items()]
    )


# --- WriteTxnMarkers (27) ---------------------------------------------------------------------
MarkerResult = WriteTxnMarkersResponse.WritableTxnMarkerResult
MarkerTopicResult = WriteTxnMarkersResponse.WritableTxnMarkerTopicResult
MarkerPartitionResult = WriteTxnMarkersResponse.WritableTxnMarkerPartitionResult


@api_handler(27, 0, 1)
async def handle_write_txn_markers(
    request: WriteTxnMarkersRequest, context: RequestContext
) -> WriteTxnMarkersResponse:
    """Markers from a transaction coordinator (broker to broker) for partitions led here."""
    results = []
    allowed = context.authorize_cluster(AclOperation.CLUSTER_ACTION)
    for marker in request.markers:
        if not allowed:
            written = {
                (t.name, p): E.CLUSTER_AUTHORIZATION_FAILED
                for t in marker.topics
                for p in t.partition_indexes
            }
        else:
            written = write_markers(
                context.services.replica_manager,
                context.services.group_coordinator,
                marker.producer_id,
                marker.producer_epoch,
                marker.coordinator_epoch,
                marker.transaction_result,
                [(t.name, p) for t in marker.topics for p in t.partition_indexes],
            )
            written.update(
                await wait_markers_replicated(
                    context.services.replica_manager,
                    [tp for tp, code in written.items() if code == 0],
                )
            )
        by_topic: dict[str, list[MarkerPartitionResult]] = {}
        for (topic, partition), code in written.items():
            by_topic.setdefault(topic, []).append(
                MarkerPartitionResult(partition_index=partition, error_code=code)
            )
        results.append(
            MarkerResult(
                producer_id=marker.producer_id,
                topics=[MarkerTopicResult(name=t, partitions=ps) for t, ps in by_topic.items()],
            )
        )
    return WriteTxnMarkersResponse(markers=results)


# --- DescribeTransactions (65) / ListTransactions (66) -----------------------------------------
TxnDescription = DescribeTransactionsResponse.TransactionState
TxnTopicData = DescribeTransactionsResponse.TopicData


@api_handler(65, 0, 0)
async def handle_describe_transactions(
    request: DescribeTransactionsRequest, context: RequestContext
) -> DescribeTransactionsResponse:
    coordinator = context.services.transaction_coordinator
    states = []
    for transactional_id in request.transactional_ids:
        if context.authorize(
            AclOperation.DESCRIBE, AclResourceType.TRANSACTIONAL_ID, transactional_id
        ):
            code, metadata = coordinator.describe(transactional_id)
        else:
            code, metadata = E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, None
        if metadata is None:
            states.append(
                TxnDescription(error_code=code, transactional_id=transactional_id, topics=[])
            )
            continue
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(metadata.partitions):
            # Kafka leaves out the partitions of topics the principal may not describe.
            if context.authorize(AclOperation.DESCRIBE, AclResourceType.TOPIC, topic):
                by_topic.setdefault(topic, []).append(partition)
        states.append(
            TxnDescription(
                error_code=0,
                transactional_id=transactional_id,
                transaction_state=(metadata.pending_state or metadata.state).kafka_name,
                transaction_timeout_ms=metadata.txn_timeout_ms,
                transaction_start_time_ms=metadata.txn_start_timestamp,
                producer_id=metadata.producer_id,
                producer_epoch=metadata.producer_epoch,
                topics=[TxnTopicData(topic=t, partitions=ps) for t, ps in by_topic.items()],
            )
        )
    return DescribeTransactionsResponse(transaction_states=states)


@api_handler(66, 0, 1)
async def handle_list_transactions(
    request: ListTransactionsRequest, context: RequestContext
) -> ListTransactionsResponse:
    coordinator = context.services.transaction_coordinator
    states, unknown = set(), []
    for name in request.state_filters:
        state = TxnState.from_kafka_name(name)
        if state is None:
            unknown.append(name)
        else:
            states.add(state)
    if unknown and not states:
        found = []  # only unknown states asked for: nothing matches
    else:
        found = coordinator.list_transactions(
            states or None,
            set(request.producer_id_filters) or None,
            request.duration_filter if context.api_version >= 1 else -1,
        )
    return ListTransactionsResponse(
        unknown_state_filters=unknown,
        transaction_states=[
            ListTransactionsResponse.TransactionState(
                transactional_id=m.transactional_id,
                producer_id=m.producer_id,
                transaction_state=m.state.kafka_name,
            )
            for m in found
            # Only the transactional ids the principal may describe (Kafka's filter).
            if context.authorize(
                AclOperation.DESCRIBE, AclResourceType.TRANSACTIONAL_ID, m.transactional_id
            )
        ],
    )


# --- DescribeProducers (61) -------------------------------------------------------------------
ProducerState = DescribeProducersResponse.ProducerState


@api_handler(61, 0, 0)
async def handle_describe_producers(
    request: DescribeProducersRequest, context: RequestContext
) -> DescribeProducersResponse:
    """The idempotent/transactional producers each partition knows (for kafka-transactions.sh
    --find-hanging and operators)."""
    replicas = context.services.replica_manager
    topics = []
    for topic in request.topics:
        partitions = []
        for index in topic.partition_indexes:
            response = DescribeProducersResponse.PartitionResponse(
                partition_index=index, active_producers=[]
            )
            try:
                context.require(AclOperation.READ, AclResourceType.TOPIC, topic.name)
                partition = replicas.leader_partition(topic.name, index)
            except KafkaError as exc:
                response.error_code = exc.error_code
                response.error_message = str(exc)
            else:
                response.active_producers = [
                    ProducerState(
                        producer_id=entry.producer_id,
                        producer_epoch=entry.producer_epoch,
                        last_sequence=entry.last_seq,
                        last_timestamp=entry.last_timestamp,
                        coordinator_epoch=entry.coordinator_epoch,
                        current_txn_start_offset=entry.current_txn_first_offset,
                    )
                    for entry in partition.log.producer_state.producers.values()
                ]
            partitions.append(response)
        topics.append(
            DescribeProducersResponse.TopicResponse(name=topic.name, partitions=partitions)
        )
    return DescribeProducersResponse(topics=topics)
