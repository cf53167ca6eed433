"""Produce (0): validate each partition's batch, append it, answer per partition.

The records of a request are memoryview slices of the request frame (a
private bytearray), so offsets are assigned by patching those bytes in place
and the same bytes are written to the segment: no copy, no per-record work.

``acks=all`` (-1) refuses a partition whose ISR is smaller than
``min.insync.replicas`` (NOT_ENOUGH_REPLICAS, nothing appended), and answers only
once every ISR member has the appended batches: the request waits in the
replica manager's produce purgatory until the high watermark passes them or
``timeout_ms`` expires (REQUEST_TIMED_OUT).  That wait (and a ``flush.messages``
fsync) is a :class:`DeferredResponse`: the connection appends its next Produce
requests meanwhile and answers in order, so a pipelining producer keeps the
followers busy instead of waiting one replication round trip per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pystream.broker.network import DeferredResponse
from pystream.errors import (
    InvalidRecordError,
    InvalidRequiredAcksError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailedError,
)
from pystream.protocol import fast_produce  # noqa: F401  (registers the Cython decoder)
from pystream.protocol.handlers import api_handler
from pystream.protocol.messages.produce import ProduceRequest, ProduceResponse
from pystream.security.acl import AclOperation, ResourceType

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext

TopicResponse = ProduceResponse.TopicProduceResponse
PartitionResponse = ProduceResponse.PartitionProduceResponse
BatchIndexAndErrorMessage = ProduceResponse.BatchIndexAndErrorMessage


@api_handler(0, 3, 10)
async def handle_produce(
    request: ProduceRequest, context: RequestContext
) -> ProduceResponse | DeferredResponse | None:
    services = context.services
    replicas = services.replica_manager
    acks = request.acks
    acks_error = (
        None
        if acks in (-1, 0, 1)
        else InvalidRequiredAcksError(f"acks must be -1 (all), 0 or 1, got {acks}")
    )
    # A transactional producer's batches must belong to a transaction the coordinator knows.
    transactional_id = request.transactional_id
    txn_coordinator = services.transaction_coordinator if transactional_id is not None else None
    if transactional_id is not None and not context.authorize(
        AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, transactional_id
    ):
        # Kafka answers every partition with TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
        acks_error = TransactionalIdAuthorizationFailedError(
            f"not authorized to write transactional id {transactional_id!r}"
        )
    responses = []
    # acks=all: (response, (topic, index, offset the high watermark must reach)).
    waiting: list[tuple[PartitionResponse, tuple[str, int, int]]] = []
    # flush.messages reached: (topic, index, offset the fsync must cover) before answering.
    log_manager = services.log_manager
    metrics = services.metrics
    flushing: list[tuple[str, int, int]] = []
    for topic_data in request.topic_data:
        partitions = []
        topic_error = acks_error
        if topic_error is None and not context.authorize(
            AclOperation.WRITE, ResourceType.TOPIC, topic_data.name
        ):
            topic_error = TopicAuthorizationFailedError(
                f"not authorized to write to topic {topic_data.name!r}"
            )
        for partition_data in topic_data.partition_data:
            response = PartitionResponse(index=partition_data.index)
            try:
                if topic_error is not None:
                    raise topic_error
                if partition_data.records is None:
                    raise InvalidRecordError("the request carries no records for this partition")
                if txn_coordinator is not None:
                    txn_coordinator.check_transactional_write(
                        transactional_id,
                        topic_data.name,
                        partition_data.index,
                        partition_data.records,
                    )
                info = replicas.append(
                    topic_data.name,
                    partition_data.index,
                    partition_data.records,
                    required_acks=acks,
                )
            except KafkaError as exc:
                metrics.record_failed_produce(topic_data.name)
                response.error_code = exc.error_code
                response.error_message = str(exc)
                response.base_offset = -1
                # Produce v8+: which records were refused (Kafka's LogValidator record errors).
                response.record_errors = [
                    BatchIndexAndErrorMessage(batch_index=index, batch_index_error_message=message)
                    for index, message in exc.record_errors
                ]
            else:
                metrics.record_produce(topic_data.name, info.record_count, info.size)
                response.base_offset = info.first_offset
                response.log_append_time_ms = info.log_append_time_ms
                response.log_start_offset = info.log_start_offset
                if log_manager.message_flushes_pending:
                    flushing.append((topic_data.name, partition_data.index, info.last_offset + 1))
                if acks == -1:
                    waiting.append(
                        (response, (topic_data.name, partition_data.index, info.last_offset + 1))
                    )
            partitions.append(response)
        responses.append(TopicResponse(name=topic_data.name, partition_responses=partitions))
    if acks == 0:
        if flushing:
            await log_manager.wait_message_flushed(flushing)
        return None  # acks=0: the client reads no response
    response = ProduceResponse(responses=responses)
    targets = [target for _, target in waiting]
    if not flushing:
        # An ISR of one (a single node) has it already: answer now, no deferral.
        results = replicas.replicated_now(targets) if waiting else []
        if results is not None:
            _set_errors(waiting, results)
            return response

    async def complete() -> ProduceResponse:
        if flushing:
            await log_manager.wait_message_flushed(flushing)
        if waiting:
            _set_errors(waiting, await replicas.wait_for_replication(targets, request.timeout_ms))
        return response

    return DeferredResponse(complete())


def _set_errors(
    waiting: list[tuple[PartitionResponse, tuple[str, int, int]]],
    results: list[KafkaError | None],
) -> None:
    for (partition, _), error in zip(waiting, results, strict=True):
        if error is not None:
            partition.error_code = error.error_code
            partition.error_message = str(error)
