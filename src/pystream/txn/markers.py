"""Transaction markers: the COMMIT/ABORT control batches that end a transaction in a partition.

The transaction coordinator writes one marker to every partition of a
transaction.  For a partition this broker leads that is a local append
(:func:`write_markers`: ``AppendOrigin.COORDINATOR``, so the partition's
producer state checks the producer and coordinator epochs and, for an ABORT,
records the aborted transaction in the ``.txnindex``).  For a partition led by
another broker, :class:`MarkerSender` sends WriteTxnMarkers (api key 27) to
that leader over the inter-broker channel
(:mod:`pystream.cluster.broker_channel`), whose handler calls
:func:`write_markers` in turn.  Markers for one destination broker travel in
one request: what is queued for it while a request is in flight goes in the
next (Kafka's TransactionMarkerChannelManager drains a queue per broker the
same way).  A ``__consumer_offsets`` partition's marker so reaches the group
coordinator of that partition, which makes the transaction's offsets visible.

Writing a marker twice is harmless: the second one ends an empty transaction.
Outcomes outside :data:`FINAL_ERRORS` (not the leader, broker unreachable ...)
are retried by the coordinator, which re-reads the leaders each time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pystream._core import records as core_records
from pystream.clock import now_ms
from pystream.cluster.broker_channel import BrokerChannel, BrokerChannels, ChannelError
from pystream.cluster.metadata.model import OFFSETS_TOPIC
from pystream.errors import ErrorCode, KafkaError, UnsupportedVersionError
from pystream.protocol.messages.write_txn_markers import (
    WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
)
from pystream.storage.log import AppendOrigin

if TYPE_CHECKING:
    from pystream.cluster.metadata.store import MetadataStore
    from pystream.cluster.replication.replica_manager import ReplicaManager
    from pystream.txn.group_hooks import TxnOffsetStore

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
    replicas: ReplicaManager,
    group_offsets: TxnOffsetStore | None,
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
    partitions = list(partitions)
    if producer_id < 0 or producer_epoch < 0:
        # Markers belong to a producer; a request without one is refused per partition.
        code = E.INVALID_PRODUCER_ID_MAPPING if producer_id < 0 else E.INVALID_PRODUCER_EPOCH
        return dict.fromkeys(partitions, code)
    results: dict[TopicPartition, int] = {}
    offsets_partitions = []
    if group_offsets is not None:
        group_offsets.append_pending_commits(p for t, p in partitions if t == OFFSETS_TOPIC)
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
        if group_offsets is not None:
            group_offsets.complete_transaction(producer_id, offsets_partitions, committed)
        else:
            log.warning(
                "no group coordinator to complete the transactional offsets of producer %d",
                producer_id,
            )
    return results


# Kafka's request.timeout.ms, the bound of a marker append's wait for the ISR.
MARKER_REPLICATION_TIMEOUT_MS = 30_000


def unreplicated(
    replicas: ReplicaManager, partitions: Iterable[TopicPartition]
) -> list[TopicPartition]:
    """Of ``partitions`` led here, those whose log end (the marker just written) is not yet
    below the high watermark: the ISR does not have it yet."""
    waiting = []
    for topic, index in partitions:
        partition = replicas.partition(topic, index)
        if partition is not None and partition.log.high_watermark < partition.log.log_end_offset:
            waiting.append((topic, index))
    return waiting


async def wait_markers_replicated(
    replicas: ReplicaManager, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """Until every ISR member has the markers just written to ``partitions`` (Kafka appends
    markers with acks=all: a marker lost with its leader would leave the transaction open
    in that partition for good); an error code per partition, retried by the coordinator."""
    targets = []
    results: dict[TopicPartition, int] = {}
    for topic, index in partitions:
        partition = replicas.partition(topic, index)
        if partition is None:
            results[(topic, index)] = E.NOT_LEADER_OR_FOLLOWER
        else:
            targets.append((topic, index, partition.log.log_end_offset))
    errors = await replicas.wait_for_replication(targets, MARKER_REPLICATION_TIMEOUT_MS)
    for (topic, index, _), error in zip(targets, errors, strict=True):
        results[(topic, index)] = error.error_code if error is not None else 0
    return results


# --- markers for partitions led by other brokers ----------------------------------------------
WRITE_TXN_MARKERS = 27
WRITE_TXN_MARKERS_VERSIONS = (0, 1)

Marker = WriteTxnMarkersRequest.WritableTxnMarker
MarkerTopic = WriteTxnMarkersRequest.WritableTxnMarkerTopic


@dataclass(frozen=True, slots=True)
class TxnMarker:
    """The marker of one transaction: whose, which outcome, from which coordinator epoch."""

    producer_id: int
    producer_epoch: int
    coordinator_epoch: int
    committed: bool


class _Destination:
    """Markers queued for one broker, sent together: one request in flight at a time."""

    def __init__(self, channel: BrokerChannel) -> None:
        self.channel = channel
        self.queued: list[
            tuple[TxnMarker, list[TopicPartition], asyncio.Future[dict[TopicPartition, int]]]
        ] = []
        self.sending: asyncio.Task[None] | None = None

    def submit(
        self, marker: TxnMarker, partitions: list[TopicPartition]
    ) -> asyncio.Future[dict[TopicPartition, int]]:
        future: asyncio.Future[dict[TopicPartition, int]] = (
            asyncio.get_running_loop().create_future()
        )
        self.queued.append((marker, partitions, future))
        if self.sending is None or self.sending.done():
            self.sending = asyncio.ensure_future(self._send_queued())
        return future

    async def _send_queued(self) -> None:
        batch, self.queued = self.queued, []
        try:
            results = await self._send(batch)
        except asyncio.CancelledError:
            for *_, future in batch:
                future.cancel()
            raise
        for (_, _, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        if self.queued:
            # Queued while this request was in flight: the next request takes them all.
            self.sending = asyncio.ensure_future(self._send_queued())

    async def _send(
        self,
        batch: list[
            tuple[TxnMarker, list[TopicPartition], asyncio.Future[dict[TopicPartition, int]]]
        ],
    ) -> list[dict[TopicPartition, int]]:
        request = WriteTxnMarkersRequest(
            markers=[
                Marker(
                    producer_id=marker.producer_id,
                    producer_epoch=marker.producer_epoch,
                    transaction_result=marker.committed,
                    coordinator_epoch=marker.coordinator_epoch,
                    topics=[
                        MarkerTopic(name=topic, partition_indexes=indexes)
                        for topic, indexes in _by_topic(partitions).items()
                    ],
                )
                for marker, partitions, _ in batch
            ]
        )
        destination = self.channel.destination
        try:
            response: WriteTxnMarkersResponse = await self.channel.request(
                WRITE_TXN_MARKERS, request, WRITE_TXN_MARKERS_VERSIONS
            )
        except (ChannelError, UnsupportedVersionError) as exc:
            # Unreachable (or not speaking WriteTxnMarkers yet): retried, the leader re-read.
            log.warning("markers to broker %d not sent: %s", destination, exc)
            return [dict.fromkeys(partitions, E.NETWORK_EXCEPTION) for _, partitions, _ in batch]
        except Exception:
            # A broken answer must not leave the transactions waiting forever: retried too.
            log.exception("markers to broker %d failed", destination)
            return [dict.fromkeys(partitions, E.UNKNOWN_SERVER_ERROR) for _, partitions, _ in batch]
        results = []
        # Kafka answers the markers in request order (one result per marker).
        answered = list(response.markers)
        for i, (marker, partitions, _) in enumerate(batch):
            codes = dict.fromkeys(partitions, int(E.UNKNOWN_SERVER_ERROR))
            if i < len(answered) and answered[i].producer_id == marker.producer_id:
                for topic in answered[i].topics:
                    for partition in topic.partitions:
                        if (topic.name, partition.partition_index) in codes:
                            codes[(topic.name, partition.partition_index)] = partition.error_code
            results.append(codes)
        return results


def _by_topic(partitions: Iterable[TopicPartition]) -> dict[str, list[int]]:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(partitions):
        by_topic.setdefault(topic, []).append(partition)
    return by_topic


class MarkerSender:
    """Writes a transaction's markers where its partitions are led: here, or elsewhere with
    WriteTxnMarkers over one persistent channel per destination broker."""

    def __init__(
        self, broker_id: int, metadata: MetadataStore, channels: BrokerChannels | None
    ) -> None:
        self.broker_id = broker_id
        self.metadata = metadata
        # None on a single node: every partition is led here.
        self.channels = channels
        self._destinations: dict[int, _Destination] = {}

    def leaders(self, partitions: Iterable[TopicPartition]) -> dict[int, list[TopicPartition]]:
        """The partitions by leader id, as the metadata says now (-1: no leader, or the
        partition is unknown; on a single node everything is led here)."""
        me = self.broker_id
        by_leader: dict[int, list[TopicPartition]] = {}
        for topic, partition in partitions:
            leader = me
            if self.channels is not None:
                known = self.metadata.get_topic(topic)
                state = known.partitions.get(partition) if known is not None else None
                leader = state.leader if state is not None else -1
            by_leader.setdefault(leader, []).append((topic, partition))
        return by_leader

    async def send(
        self, marker: TxnMarker, by_leader: dict[int, list[TopicPartition]]
    ) -> dict[TopicPartition, int]:
        """Send the marker to each other leader (``by_leader`` without this broker); an error
        code per partition (no leader: LEADER_NOT_AVAILABLE, retried)."""
        results: dict[TopicPartition, int] = {}
        waiting = []
        for leader, partitions in by_leader.items():
            if leader < 0 or self.channels is None:
                results.update(dict.fromkeys(partitions, E.LEADER_NOT_AVAILABLE))
                continue
            destination = self._destinations.get(leader)
            if destination is None:
                destination = self._destinations[leader] = _Destination(
                    self.channels.channel(leader)
                )
            waiting.append(destination.submit(marker, partitions))
        for answered in await asyncio.gather(*waiting):
            results.update(answered)
        return results

    async def close(self) -> None:
        """Stop sending and close the channels."""
        tasks = [d.sending for d in self._destinations.values() if d.sending is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._destinations.clear()
        if self.channels is not None:
            self.channels.close()
