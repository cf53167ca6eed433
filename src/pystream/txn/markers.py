"""Transaction markers: the COMMIT/ABORT control batches that end a transaction in a partition.

The transaction coordinator writes one marker to every partition of a
transaction.  On this broker that is a local append (``AppendOrigin.COORDINATOR``,
so the partition's producer state checks the producer and coordinator epochs
and, for an ABORT, records the aborted transaction in the ``.txnindex``); in a
cluster the coordinator sends WriteTxnMarkers to each partition's leader, whose
handler calls :func:`write_markers` too.  Writing a marker twice is harmless:
the second one ends an empty transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pystream._core import records as core_records
from pystream.cluster.metadata import OFFSETS_TOPIC
from pystream.errors import ErrorCode, KafkaError
from pystream.storage.log import AppendOrigin
from pystream.txn.group_hooks import group_offset_store
from pystream.txn.state_log import now_ms

if TYPE_CHECKING:
    from pystream.broker.server import Broker

log = logging.getLogger(__name__)
E = ErrorCode

TopicPartition = tuple[str, int]

# Outcomes after which a marker is not retried: written, or the partition/producer is gone.
FINAL_ERRORS = frozenset(
    {
        0,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.INVALID_PRODUCER_EPOCH,
        ErrorCode.TRANSACTION_COORDINATOR_FENCED,
        ErrorCode.CORRUPT_MESSAGE,
        ErrorCode.INVALID_RECORD,
    }
)


def write_markers(
    broker: Broker,
    producer_id: int,
    producer_epoch: int,
    coordinator_epoch: int,
    committed: bool,
    partitions: Iterable[TopicPartition],
) -> dict[TopicPartition, int]:
    """Append a marker to each partition this broker leads; an error code per partition.

    Then tells the group coordinator about ``__consumer_offsets`` partitions
    that got one, so the transaction's offsets become visible (or are dropped).
    """
    replicas = broker.replica_manager
    assert replicas is not None
    partitions = list(partitions)
    if producer_id < 0 or producer_epoch < 0:
        # Markers belong to a producer; a request without one is refused per partition.
        code = E.INVALID_PRODUCER_ID_MAPPING if producer_id < 0 else E.INVALID_PRODUCER_EPOCH
        return dict.fromkeys(partitions, code)
    results: dict[TopicPartition, int] = {}
    offsets_partitions = []
    timestamp = now_ms()
    for topic, partition in partitions:
        marker = core_records.build_control_batch(
            committed, producer_id, producer_epoch, timestamp, coordinator_epoch
        )
        try:
            replicas.append(topic, partition, marker, origin=AppendOrigin.COORDINATOR)
        except KafkaError as exc:
            results[(topic, partition)] = exc.error_code
            log.log(
                logging.INFO
                if exc.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                else logging.WARNING,
                "%s marker for producer %d (epoch %d) not written to %s-%d: %s",
                "COMMIT" if committed else "ABORT",
                producer_id,
                producer_epoch,
                topic,
                partition,
                exc,
            )
            continue
        results[(topic, partition)] = 0
        if topic == OFFSETS_TOPIC:
            offsets_partitions.append(partition)
    if offsets_partitions:
        store = group_offset_store(broker)
        if store is not None:
            store.complete_transaction(producer_id, offsets_partitions, committed)
        else:
            log.warning(
                "no group coordinator to complete the transactional offsets of producer %d",
                producer_id,
            )
    return results
