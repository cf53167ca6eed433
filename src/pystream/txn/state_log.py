"""``__transaction_state``: where the transaction coordinator persists its state.

A compacted internal topic (``transaction.state.log.num.partitions``, 50 by
default) keyed by transactional id: the newest record per key is the state of
that id (see :mod:`pystream.txn.metadata` for the record format).  A
transactional id lives on partition ``abs(java hashCode(id)) % partitions``,
as in Kafka, so a broker that leads the partition is the id's coordinator.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from pystream._core import records as core_records
from pystream.clock import now_ms
from pystream.cluster.metadata.model import TRANSACTION_STATE_TOPIC
from pystream.errors import ErrorCode, KafkaError
from pystream.protocol.codec import ProtocolDecodeError
from pystream.storage.log import AppendOrigin
from pystream.txn.metadata import TransactionMetadata, decode_key, decode_value

if TYPE_CHECKING:
    from pystream.cluster.replication.replica_manager import ReplicaManager
    from pystream.storage.log import Log

log = logging.getLogger(__name__)

LOAD_BUFFER_BYTES = 5 * 1024 * 1024  # Kafka's transaction.state.log.load.buffer.size


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode()`` (31-based over UTF-16 code units), as a signed int32."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + (data[i] << 8 | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def partition_for(transactional_id: str, num_partitions: int) -> int:
    """Kafka's ``Utils.abs(transactionalId.hashCode) % partitions``."""
    h = java_string_hash(transactional_id)
    return (0 if h == -(2**31) else abs(h)) % num_partitions


def append_state(
    replicas: ReplicaManager, partition: int, transactional_id: str, value: bytes | None, key: bytes
) -> int:
    """Write one record (a state, or a tombstone) to the id's partition; an error code.

    Errors are mapped as Kafka's coordinator does: the client retries
    COORDINATOR_NOT_AVAILABLE / NOT_COORDINATOR elsewhere or later.
    """
    batch = core_records.build_batch([(now_ms(), key, value)])
    try:
        replicas.append(TRANSACTION_STATE_TOPIC, partition, batch, origin=AppendOrigin.COORDINATOR)
    except KafkaError as exc:
        log.warning(
            "writing the state of transactional id %r to %s-%d failed: %s",
            transactional_id,
            TRANSACTION_STATE_TOPIC,
            partition,
            exc,
        )
        return state_write_error(exc.error_code)
    return 0


def state_write_error(code: int) -> int:
    """What the client is told when writing (or replicating) a state failed with ``code``."""
    if code in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.KAFKA_STORAGE_ERROR):
        return ErrorCode.NOT_COORDINATOR
    if code in (
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.NOT_ENOUGH_REPLICAS,
        ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ErrorCode.REQUEST_TIMED_OUT,
    ):
        return ErrorCode.COORDINATOR_NOT_AVAILABLE
    return ErrorCode.UNKNOWN_SERVER_ERROR


async def load_partition(partition_log: Log) -> dict[str, TransactionMetadata]:
    """Replay one partition: the newest record of each transactional id (tombstones delete)."""
    transactions: dict[str, TransactionMetadata] = {}
    end = partition_log.high_watermark
    offset = partition_log.log_start_offset
    while offset < end:
        info = partition_log.read(offset, LOAD_BUFFER_BYTES, end)
        if info.records is None:
            break
        with info.view() as view:
            records, next_offset = _decode_chunk(view, offset)
        for key, value in records:
            _apply(transactions, key, value)
        if next_offset <= offset:
            break
        offset = next_offset
        await asyncio.sleep(0)  # let other partitions' requests run
    return transactions


def _decode_chunk(view: memoryview, offset: int) -> tuple[list[tuple[bytes, bytes | None]], int]:
    # Its own frame: the batches (which hold the view) are gone when it returns.
    records = []
    next_offset = offset
    for batch in core_records.iter_batches(view):
        header = batch.header
        next_offset = max(next_offset, header.next_offset)
        if header.last_offset < offset or header.is_control:
            continue
        records.extend((r.key, r.value) for r in batch if r.offset >= offset and r.key is not None)
    return records, next_offset


def _apply(transactions: dict[str, TransactionMetadata], key: bytes, value: bytes | None) -> None:
    try:
        transactional_id = decode_key(key)
        if transactional_id is None:
            return
        if value is None:
            transactions.pop(transactional_id, None)
            return
        transactions[transactional_id] = decode_value(transactional_id, value)
    except (ProtocolDecodeError, ValueError) as exc:
        log.warning("skipping an unreadable %s record: %s", TRANSACTION_STATE_TOPIC, exc)
