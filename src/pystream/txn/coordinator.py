"""The transaction coordinator: producer ids, epochs and the two-phase commit of transactions.

One :class:`TransactionCoordinator` per broker.  It hands out producer ids to
idempotent producers (InitProducerId without a transactional id) and owns the
transactional ids whose ``__transaction_state`` partition this broker leads
(on one node: all of them).  It follows Kafka's ``TransactionCoordinator``:

* **InitProducerId** (transactional) gives the id a producer id and bumps its
  epoch, which fences every older instance of the producer: their writes to
  partitions (INVALID_PRODUCER_EPOCH) and to the coordinator (PRODUCER_FENCED)
  are refused from then on.  A transaction the old instance left open is
  aborted first, with the epoch already bumped (PrepareEpochFence).
* **AddPartitionsToTxn / AddOffsetsToTxn** move the id to Ongoing and record
  the partitions the transaction writes to.
* **EndTxn** writes PrepareCommit/PrepareAbort to the log, then a marker to
  each partition (:mod:`pystream.txn.markers`), then CompleteCommit/CompleteAbort.
  Markers for partitions led here are appended before the answer (on one node
  all of them: a read_committed consumer sees a committed transaction as soon
  as the producer can).  Partitions led by other brokers get theirs through
  WriteTxnMarkers after the answer, as in Kafka; the transaction completes when
  every leader has acknowledged, and meanwhile the id answers
  CONCURRENT_TRANSACTIONS.  Failed markers are retried with backoff, their
  leaders read again from the metadata each time.
* **Timeouts.** Every ``transaction.abort.timed.out.transaction.cleanup.interval.ms``
  transactions older than their ``transaction.timeout.ms`` are fenced and aborted.
* **Expiry.** Ids idle for ``transactional.id.expiration.ms`` are removed
  (a tombstone in the log); producer state idle for ``producer.id.expiration.ms``
  is removed from the partitions.
* **Recovery.**  Every state is in the log before it is acted on.  When the
  broker starts (or becomes a partition's leader) the partition is replayed;
  transactions found in PrepareCommit/PrepareAbort get their markers written
  again and are completed; Ongoing ones are left to their timeout.

Everything runs on the broker's event loop and nothing awaits between reading
and changing a transaction's state (appends to local logs are synchronous), but
one: InitProducerId may wait for a new block of producer ids (a metadata-store
write, once per 1,000 ids), and checks the state again after it.
The handlers then wait until the write is on every ISR member of the id's
partition before they answer (``wait_replicated``, Kafka's acks=all), so an
acknowledged state survives the loss of the coordinator.  Partition ownership
(loading on election, NOT_COORDINATOR after resignation) is shared with the
group coordinator: :class:`~pystream.coordinator.base.CoordinatorBase`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pystream._core import records as core_records
from pystream.clock import now_ms
from pystream.cluster.broker_channel import BrokerChannels
from pystream.coordinator.base import CoordinatorBase
from pystream.errors import ErrorCode, KafkaError, error_for_code
from pystream.txn import state_log
from pystream.txn.markers import (
    FINAL_ERRORS,
    OFFSETS_TOPIC,
    MarkerSender,
    TxnMarker,
    unreplicated,
    wait_markers_replicated,
    write_markers,
)
from pystream.txn.metadata import (
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    TopicPartition,
    TransactionMetadata,
    TxnState,
    TxnTransit,
    encode_key,
    encode_value,
)
from pystream.txn.producer_ids import ProducerIdManager
from pystream.txn.state_log import TRANSACTION_STATE_TOPIC

if TYPE_CHECKING:
    from pystream._core.records import Buffer
    from pystream.cluster.metadata.store import MetadataStore
    from pystream.cluster.replication.replica_manager import ReplicaManager
    from pystream.cluster.topics import TopicManager
    from pystream.config import BrokerConfig
    from pystream.txn.group_hooks import TxnOffsetStore

log = logging.getLogger(__name__)

E = ErrorCode
NONE = 0
MARKER_RETRY_MS = 200
# Kafka retries markers until written; the wait between attempts stops growing here.
MARKER_MAX_BACKOFF_MS = 5_000
# How long a state change waits for the ISR of its partition before the client is answered.
TXN_STATE_WRITE_TIMEOUT_MS = 5_000


class TransactionCoordinator(CoordinatorBase):
    """Producer ids for every producer; transactional ids of the partitions led here."""

    topic = TRANSACTION_STATE_TOPIC

    def __init__(
        self,
        config: BrokerConfig,
        *,
        broker_id: int,
        metadata: MetadataStore,
        replicas: ReplicaManager,
        topics: TopicManager,
        group_offsets: TxnOffsetStore,
        channels: BrokerChannels | None,
    ) -> None:
        """``channels`` reach the other brokers' leaders with WriteTxnMarkers (None on a
        single node: every partition is led here)."""
        super().__init__(
            config, broker_id=broker_id, metadata=metadata, replicas=replicas, topics=topics
        )
        self.group_offsets = group_offsets
        self.producer_ids = ProducerIdManager(broker_id, metadata.allocate_producer_ids)
        self.transactions: dict[str, TransactionMetadata] = {}
        # Transactions in PrepareCommit/PrepareAbort not completed yet: the partitions whose
        # marker is still to be written (empty: only the Complete state is).
        self._unfinished: dict[str, set[TopicPartition]] = {}
        # Transactional id -> (failed attempts, loop time of the next one): the backoff.
        self._retry_at: dict[str, tuple[int, float]] = {}
        # Transactional id -> its markers being sent to other brokers (one attempt at a time).
        self._sending: dict[str, asyncio.Task[object]] = {}
        self.markers = MarkerSender(broker_id, metadata, channels)

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the ``__transaction_state`` partitions led here; start the periodic jobs."""
        self._start_ownership()
        config = self.config
        jobs: list[tuple[str, int, Callable[[], object]]] = [
            (
                "abort timed-out transactions",
                config.transaction_abort_timed_out_transaction_cleanup_interval_ms,
                self.abort_timed_out_transactions,
            ),
            (
                "remove expired transactional ids",
                config.transaction_remove_expired_transaction_cleanup_interval_ms,
                self.remove_expired_transactional_ids,
            ),
            (
                "expire producer ids",
                config.producer_id_expiration_check_interval_ms,
                self.expire_producer_ids,
            ),
            ("retry transaction markers", MARKER_RETRY_MS, self.retry_unfinished),
        ]
        for name, interval_ms, job in jobs:
            self._spawn(self._every(name, interval_ms, job))

    async def stop(self) -> None:
        """Stop the jobs and forget the state (it is in the log)."""
        await self._stop_ownership()
        await self.markers.close()
        self.transactions.clear()
        self._unfinished.clear()
        self._retry_at.clear()

    async def _every(self, name: str, interval_ms: int, job: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(interval_ms / 1000)
            try:
                job()
            except Exception:
                log.exception("transaction coordinator job %r failed", name)

    # --- partitions of __transaction_state --------------------------------------------------
    def topic_spec(self) -> tuple[int, int, dict[str, str]]:
        config = self.config
        return (
            config.transaction_state_log_num_partitions,
            config.transaction_state_log_replication_factor,
            {
                "cleanup.policy": "compact",
                "min.insync.replicas": str(config.transaction_state_log_min_isr),
                "segment.bytes": str(config.transaction_state_log_segment_bytes),
                "compression.type": "uncompressed",
            },
        )

    def partition_for(self, transactional_id: str) -> int:
        return state_log.partition_for(transactional_id, self.num_partitions)

    def coordinator_error(self, transactional_id: str) -> int:
        """0 if this broker can serve the id now, else the error to answer with (the topic is
        created by FindCoordinator / InitProducerId, :meth:`ensure_topic`)."""
        if not self._active:
            return E.COORDINATOR_NOT_AVAILABLE
        if self.metadata.get_topic(TRANSACTION_STATE_TOPIC) is None:
            in_cluster = self.markers.channels is not None
            return E.COORDINATOR_NOT_AVAILABLE if in_cluster else E.NOT_COORDINATOR
        return self.partition_error(self.partition_for(transactional_id))

    def _unload_partition(self, partition: int) -> None:
        """Forget the partition's transactional ids and stop completing their transactions
        (the new coordinator finishes them from the log)."""
        for transactional_id in list(self.transactions):
            if self.partition_for(transactional_id) == partition:
                del self.transactions[transactional_id]
                self._unfinished.pop(transactional_id, None)
                self._retry_at.pop(transactional_id, None)
                task = self._sending.pop(transactional_id, None)
                if task is not None:
                    task.cancel()

    async def _load_partition(self, partition: int) -> None:
        replicas = self.replicas
        hosted = replicas.partition(TRANSACTION_STATE_TOPIC, partition)
        if hosted is None:
            raise RuntimeError(f"{TRANSACTION_STATE_TOPIC}-{partition} is not hosted here")
        loaded = await state_log.load_partition(hosted.log)
        for transactional_id, metadata in loaded.items():
            self.transactions[transactional_id] = metadata
        if loaded:
            log.info(
                "loaded %d transactional id(s) from %s-%d",
                len(loaded),
                TRANSACTION_STATE_TOPIC,
                partition,
            )
        # Finish what was decided before the restart: the markers of a logged PrepareCommit
        # or PrepareAbort (an Ongoing transaction is left to its timeout).  The group
        # coordinator must have loaded its offsets first, or it would miss the completion of
        # the transactional offsets these markers end.
        prepared = [m for m in loaded.values() if m.state.is_preparing]
        if prepared:
            await self.group_offsets.wait_loaded()
        for metadata in prepared:
            if metadata.state.is_preparing and metadata.pending_state is None:
                log.info(
                    "completing transaction of %r (%s) after loading",
                    metadata.transactional_id,
                    metadata.state.kafka_name,
                )
                self._complete_transaction(metadata)

    def _coordinator_epoch(self, transactional_id: str) -> int:
        replicas = self.replicas
        hosted = replicas.partition(TRANSACTION_STATE_TOPIC, self.partition_for(transactional_id))
        return hosted.leader_epoch if hosted is not None else 0

    # --- writing states ---------------------------------------------------------------------
    def _write(self, metadata: TransactionMetadata, transit: TxnTransit) -> int:
        """Persist a prepared transition, then apply it; an error code (the state is kept)."""
        replicas = self.replicas
        transactional_id = metadata.transactional_id
        code = state_log.append_state(
            replicas,
            self.partition_for(transactional_id),
            transactional_id,
            encode_value(transit),
            encode_key(transactional_id),
        )
        if code:
            metadata.abandon()
            return code
        self._note_appended(self.partition_for(transactional_id))
        metadata.complete(transit)
        return NONE

    async def wait_replicated(self, transactional_id: str) -> int:
        """Until the id's last state write is on every ISR member of its partition (Kafka
        writes the transaction log with acks=all); an error code for the client."""
        code = await self._replicated(
            self.partition_for(transactional_id), TXN_STATE_WRITE_TIMEOUT_MS
        )
        return state_log.state_write_error(code) if code else NONE

    def _complete_transaction(
        self, metadata: TransactionMetadata, partitions: set[TopicPartition] | None = None
    ) -> bool:
        """Markers to the partitions (default: all of the transaction's), then
        CompleteCommit/CompleteAbort; True when done here and now.

        Markers for partitions led here are appended at once; the others are sent to their
        leaders (:class:`~pystream.txn.markers.MarkerSender`) and the transaction completes
        when every leader has acknowledged.  Partitions whose marker could not be written
        are retried with backoff by :meth:`retry_unfinished`, their leaders read again.
        """
        transactional_id = metadata.transactional_id
        if transactional_id in self._sending:
            return False  # an attempt is in flight; it decides what is left
        marker = TxnMarker(
            metadata.producer_id,
            metadata.producer_epoch,
            self._coordinator_epoch(transactional_id),
            metadata.state is TxnState.PREPARE_COMMIT,
        )
        by_leader = self.markers.leaders(
            sorted(metadata.partitions if partitions is None else partitions)
        )
        local = by_leader.pop(self.broker_id, [])
        results = (
            write_markers(
                self.replicas,
                self.group_offsets,
                marker.producer_id,
                marker.producer_epoch,
                marker.coordinator_epoch,
                marker.committed,
                local,
            )
            if local
            else {}
        )
        remaining = {tp for tp, code in results.items() if code not in FINAL_ERRORS}
        # Written here, but not yet on every ISR member: waited for like remote markers.
        replicating = unreplicated(self.replicas, [tp for tp, code in results.items() if code == 0])
        if not by_leader and not replicating:
            return self._markers_written(metadata, remaining)
        self._unfinished[transactional_id] = (
            remaining | set(replicating) | {tp for tps in by_leader.values() for tp in tps}
        )
        self._sending[transactional_id] = self._spawn(
            self._send_markers(metadata, marker, by_leader, replicating)
        )
        return False

    async def _send_markers(
        self,
        metadata: TransactionMetadata,
        marker: TxnMarker,
        by_leader: dict[int, list[TopicPartition]],
        replicating: list[TopicPartition],
    ) -> None:
        """One attempt at the markers of partitions led elsewhere (WriteTxnMarkers), and the
        wait for the ISR of those written here (``replicating``)."""
        transactional_id = metadata.transactional_id
        try:
            sent, replicated = await asyncio.gather(
                self.markers.send(marker, by_leader),
                wait_markers_replicated(self.replicas, replicating),
            )
            results = {**sent, **replicated}
        finally:
            if self._sending.get(transactional_id) is asyncio.current_task():
                del self._sending[transactional_id]
        if (
            self.transactions.get(transactional_id) is not metadata
            or not metadata.state.is_preparing
            or metadata.producer_epoch != marker.producer_epoch
        ):
            return  # resigned, or completed/fenced meanwhile: nothing of ours is left to do
        sent = set(results)
        remaining = {tp for tp in self._unfinished.get(transactional_id, set()) if tp not in sent}
        remaining |= {tp for tp, code in results.items() if code not in FINAL_ERRORS}
        for tp, code in sorted(results.items()):
            if code not in FINAL_ERRORS:
                log.info(
                    "%s marker of %r for %s-%d not written yet (%s): retrying",
                    "COMMIT" if marker.committed else "ABORT",
                    transactional_id,
                    *tp,
                    error_for_code(code).error_name,
                )
        self._markers_written(metadata, remaining)

    def _markers_written(
        self, metadata: TransactionMetadata, remaining: set[TopicPartition]
    ) -> bool:
        """Record what is left to write; with nothing left, write CompleteCommit/CompleteAbort.
        True when the transaction is complete."""
        transactional_id = metadata.transactional_id
        if remaining:
            self._unfinished[transactional_id] = remaining
            self._back_off(transactional_id)
            return False
        self._unfinished[transactional_id] = set()  # markers done; the state is left to write
        committed = metadata.state is TxnState.PREPARE_COMMIT
        transit = metadata.transit(
            TxnState.COMPLETE_COMMIT if committed else TxnState.COMPLETE_ABORT,
            now_ms(),
            partitions=frozenset(),
        )
        if self._write(metadata, transit):
            self._back_off(transactional_id)
            return False
        del self._unfinished[transactional_id]
        self._retry_at.pop(transactional_id, None)
        return True

    def _back_off(self, transactional_id: str) -> None:
        """Next attempt after MARKER_RETRY_MS, doubling per failure up to MARKER_MAX_BACKOFF_MS."""
        attempts = self._retry_at.get(transactional_id, (0, 0.0))[0] + 1
        delay_ms = min(MARKER_RETRY_MS * 2 ** min(attempts - 1, 16), MARKER_MAX_BACKOFF_MS)
        self._retry_at[transactional_id] = (attempts, self.loop.time() + delay_ms / 1000)

    def retry_unfinished(self) -> None:
        """Retry what is left of transactions stuck in PrepareCommit/PrepareAbort (each after
        its backoff); the partitions' leaders are read again."""
        now = self.loop.time()
        for transactional_id, partitions in list(self._unfinished.items()):
            metadata = self.transactions.get(transactional_id)
            if metadata is None or not metadata.state.is_preparing or metadata.pending_state:
                del self._unfinished[transactional_id]
                self._retry_at.pop(transactional_id, None)
                continue
            if transactional_id in self._sending:
                continue
            if now < self._retry_at.get(transactional_id, (0, 0.0))[1]:
                continue
            self._complete_transaction(metadata, partitions)

    def _fence_and_abort(self, metadata: TransactionMetadata) -> int:
        """Abort an Ongoing transaction with a bumped epoch, fencing its producer."""
        old_epoch = metadata.producer_epoch
        new_epoch = old_epoch if metadata.is_epoch_exhausted else old_epoch + 1
        metadata.pending_state = TxnState.PREPARE_EPOCH_FENCE
        # No previous epoch: the fenced instance must not get the new one by "retrying".
        transit = metadata.transit(
            TxnState.PREPARE_ABORT,
            now_ms(),
            producer_epoch=new_epoch,
            last_producer_epoch=NO_PRODUCER_EPOCH,
        )
        code = self._write(metadata, transit)
        if code:
            return code
        log.info(
            "fenced producer %d of %r at epoch %d and aborting its transaction",
            metadata.producer_id,
            metadata.transactional_id,
            old_epoch,
        )
        self._complete_transaction(metadata)
        return NONE

    # --- InitProducerId ---------------------------------------------------------------------
    async def init_producer_id(
        self,
        transactional_id: str | None,
        txn_timeout_ms: int,
        expected_producer_id: int = NO_PRODUCER_ID,
        expected_epoch: int = NO_PRODUCER_EPOCH,
    ) -> tuple[int, int, int]:
        """``(error code, producer id, epoch)`` for a producer starting (or recovering).

        Reserving a new block of producer ids is the only wait (a metadata-store write,
        once per 1,000 ids); what it changes is checked again after it.
        """
        if transactional_id is None:
            # Idempotent producer: a fresh id; its epoch only changes at the partitions.
            try:
                return NONE, await self.producer_ids.generate(), 0
            except KafkaError as exc:
                log.error("cannot allocate a producer id: %s", exc)
                return E.COORDINATOR_NOT_AVAILABLE, NO_PRODUCER_ID, NO_PRODUCER_EPOCH
        failed = (NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
        if not transactional_id:
            return E.INVALID_REQUEST, *failed
        if not 0 < txn_timeout_ms <= self.config.transaction_max_timeout_ms:
            return E.INVALID_TRANSACTION_TIMEOUT, *failed
        code = self.coordinator_error(transactional_id)
        if code:
            return code, *failed
        metadata = self.transactions.get(transactional_id)
        if metadata is None:
            try:
                producer_id = await self.producer_ids.generate()
            except KafkaError as exc:
                log.error("cannot allocate a producer id: %s", exc)
                return E.COORDINATOR_NOT_AVAILABLE, *failed
            code = self.coordinator_error(transactional_id)
            if code:  # resigned while the block was reserved
                return code, *failed
            # A concurrent InitProducerId of the same id may have created it meanwhile.
            metadata = self.transactions.setdefault(
                transactional_id,
                TransactionMetadata(
                    transactional_id, producer_id, NO_PRODUCER_EPOCH, txn_timeout_ms
                ),
            )
        if metadata.pending_state is not None:
            return E.CONCURRENT_TRANSACTIONS, *failed
        expected = expected_producer_id != NO_PRODUCER_ID
        if expected and (expected_producer_id, expected_epoch) == (
            metadata.producer_id,
            metadata.producer_epoch,
        ):
            pass  # KIP-360: the current instance asks for a bump to recover
        elif (
            expected
            and metadata.last_producer_epoch != NO_PRODUCER_EPOCH
            and (expected_producer_id, expected_epoch)
            == (metadata.last_producer_id, metadata.last_producer_epoch)
        ):
            if metadata.state.is_complete:
                # The bump it asks for happened already (a retried request whose answer was
                # lost, maybe before this coordinator loaded the id): same answer.
                return NONE, metadata.producer_id, metadata.producer_epoch
        elif expected:
            return E.PRODUCER_FENCED, *failed
        if metadata.state is TxnState.ONGOING:
            code = self._fence_and_abort(metadata)
            if code:
                return code, *failed
        if not metadata.state.is_complete:
            # Markers still being written (PrepareCommit/PrepareAbort): the client retries.
            return E.CONCURRENT_TRANSACTIONS, *failed
        producer_id, epoch = metadata.producer_id, metadata.producer_epoch + 1
        if metadata.is_epoch_exhausted or metadata.producer_id == NO_PRODUCER_ID:
            try:
                producer_id, epoch = await self.producer_ids.generate(), 0
            except KafkaError as exc:
                log.error("cannot allocate a producer id: %s", exc)
                return E.COORDINATOR_NOT_AVAILABLE, *failed
            if metadata.pending_state is not None or not metadata.state.is_complete:
                return E.CONCURRENT_TRANSACTIONS, *failed  # changed while the block was reserved
        transit = metadata.transit(
            TxnState.EMPTY,
            now_ms(),
            producer_id=producer_id,
            producer_epoch=epoch,
            # The instance it replaces, which a retry of this very request names.  Only for
            # an instance asking for its own bump (KIP-360): after a new instance's plain
            # InitProducerId the old one is fenced, retry or not (Kafka's rule).
            last_producer_id=metadata.producer_id,
            last_producer_epoch=metadata.producer_epoch if expected else NO_PRODUCER_EPOCH,
            txn_timeout_ms=txn_timeout_ms,
            partitions=frozenset(),
            txn_start_timestamp=-1,
        )
        code = self._write(metadata, transit)
        if code:
            return code, *failed
        return NONE, metadata.producer_id, metadata.producer_epoch

    # --- AddPartitionsToTxn / AddOffsetsToTxn -----------------------------------------------
    def _check_producer(
        self, transactional_id: str, producer_id: int, producer_epoch: int
    ) -> tuple[int, TransactionMetadata | None]:
        code = self.coordinator_error(transactional_id)
        if code:
            return code, None
        metadata = self.transactions.get(transactional_id)
        if metadata is None or metadata.producer_id != producer_id:
            return E.INVALID_PRODUCER_ID_MAPPING, None
        if metadata.producer_epoch != producer_epoch:
            return E.PRODUCER_FENCED, None
        if metadata.pending_state is not None:
            return E.CONCURRENT_TRANSACTIONS, None
        return NONE, metadata

    def add_partitions(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: Iterable[TopicPartition],
    ) -> int:
        """Add partitions to the producer's transaction (starting it); an error code."""
        code, metadata = self._check_producer(transactional_id, producer_id, producer_epoch)
        if metadata is None:
            return code
        if metadata.state.is_preparing:
            return E.CONCURRENT_TRANSACTIONS  # the previous transaction is still completing
        if metadata.state not in (TxnState.ONGOING, *_COMPLETE_STATES):
            return E.INVALID_TXN_STATE
        wanted = set(partitions)
        if not wanted or (metadata.state is TxnState.ONGOING and wanted <= metadata.partitions):
            return NONE  # nothing new: no state change to write
        now = now_ms()
        started = metadata.txn_start_timestamp if metadata.state is TxnState.ONGOING else now
        transit = metadata.transit(
            TxnState.ONGOING,
            now,
            partitions=frozenset(metadata.partitions | wanted),
            txn_start_timestamp=started,
        )
        return self._write(metadata, transit)

    def offsets_partition_for(self, group_id: str) -> TopicPartition:
        """The ``__consumer_offsets`` partition a group's offsets go to (AddOffsetsToTxn)."""
        return OFFSETS_TOPIC, self.group_offsets.partition_for(group_id)

    # --- EndTxn -----------------------------------------------------------------------------
    def end_transaction(
        self, transactional_id: str, producer_id: int, producer_epoch: int, committed: bool
    ) -> int:
        """Commit or abort the producer's transaction; an error code."""
        code, metadata = self._check_producer(transactional_id, producer_id, producer_epoch)
        if metadata is None:
            return code
        state = metadata.state
        if state is TxnState.ONGOING:
            transit = metadata.transit(
                TxnState.PREPARE_COMMIT if committed else TxnState.PREPARE_ABORT, now_ms()
            )
            code = self._write(metadata, transit)
            if code:
                return code
            # Decided and logged: from here on the outcome is certain, markers or not.
            self._complete_transaction(metadata)
            return NONE
        done = TxnState.COMPLETE_COMMIT if committed else TxnState.COMPLETE_ABORT
        doing = TxnState.PREPARE_COMMIT if committed else TxnState.PREPARE_ABORT
        if state is done:
            return NONE  # a retry of the request that completed it
        if state is doing:
            return E.CONCURRENT_TRANSACTIONS
        return E.INVALID_TXN_STATE

    # --- checks for other APIs --------------------------------------------------------------
    def verify_transactional_write(
        self,
        transactional_id: str,
        topic: str,
        partition: int,
        producer_id: int,
        producer_epoch: int,
    ) -> int:
        """Produce: a transactional batch must come from the id's current producer and belong
        to its Ongoing transaction with the partition added (KIP-890's verification: a late
        write would otherwise open a transaction nobody ends)."""
        if not self.owns(self.partition_for(transactional_id)):
            return NONE  # not ours to judge (another coordinator, or still loading)
        metadata = self.transactions.get(transactional_id)
        if metadata is None or metadata.producer_id != producer_id:
            return E.INVALID_PRODUCER_ID_MAPPING
        if producer_epoch < metadata.producer_epoch:
            return E.INVALID_PRODUCER_EPOCH  # a zombie: fenced by a newer instance
        if metadata.state is not TxnState.ONGOING or (topic, partition) not in metadata.partitions:
            return E.INVALID_TXN_STATE
        return NONE

    def check_transactional_write(
        self, transactional_id: str, topic: str, partition: int, records: Buffer
    ) -> None:
        """:meth:`verify_transactional_write` for the Produce handler (reads the batch header,
        raises the error)."""
        header = core_records.read_batch_header(records)
        if not header.is_transactional:
            return
        code = self.verify_transactional_write(
            transactional_id, topic, partition, header.producer_id, header.producer_epoch
        )
        if code:
            raise error_for_code(code)(
                f"producer {header.producer_id} (epoch {header.producer_epoch}) of transactional "
                f"id {transactional_id!r} cannot write to {topic}-{partition}: no ongoing "
                "transaction of this producer has added the partition (AddPartitionsToTxn), "
                "or the producer was fenced"
            )

    def check_txn_offset_commit(
        self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str
    ) -> int:
        """TxnOffsetCommit: the producer's transaction must be Ongoing with the group's
        offsets partition added (AddOffsetsToTxn first)."""
        if not self.owns(self.partition_for(transactional_id)):
            return NONE
        metadata = self.transactions.get(transactional_id)
        if metadata is None or metadata.producer_id != producer_id:
            return E.INVALID_PRODUCER_ID_MAPPING
        if metadata.producer_epoch != producer_epoch:
            return E.PRODUCER_FENCED
        if (
            metadata.state is not TxnState.ONGOING
            or self.offsets_partition_for(group_id) not in metadata.partitions
        ):
            return E.INVALID_TXN_STATE
        return NONE

    # --- periodic jobs ----------------------------------------------------------------------
    def abort_timed_out_transactions(self, now: int | None = None) -> int:
        """Fence and abort transactions open longer than their timeout; returns how many."""
        now = now_ms() if now is None else now
        aborted = 0
        for metadata in list(self.transactions.values()):
            if (
                metadata.state is TxnState.ONGOING
                and metadata.pending_state is None
                and metadata.txn_start_timestamp + metadata.txn_timeout_ms < now
            ):
                log.info(
                    "transaction of %r (producer %d) timed out after %d ms: aborting it",
                    metadata.transactional_id,
                    metadata.producer_id,
                    metadata.txn_timeout_ms,
                )
                if not self._fence_and_abort(metadata):
                    aborted += 1
        return aborted

    def remove_expired_transactional_ids(self, now: int | None = None) -> int:
        """Remove ids with no transaction for ``transactional.id.expiration.ms``."""
        now = now_ms() if now is None else now
        expiration = self.config.transactional_id_expiration_ms
        replicas = self.replicas
        removed = 0
        for transactional_id, metadata in list(self.transactions.items()):
            if (
                metadata.pending_state is None
                and metadata.state.is_complete
                and metadata.txn_last_update_timestamp + expiration <= now
            ):
                code = state_log.append_state(
                    replicas,
                    self.partition_for(transactional_id),
                    transactional_id,
                    None,
                    encode_key(transactional_id),
                )
                if not code:
                    del self.transactions[transactional_id]
                    removed += 1
        if removed:
            log.info("removed %d expired transactional id(s)", removed)
        return removed

    def expire_producer_ids(self, now: int | None = None) -> int:
        """Remove producer state idle for ``producer.id.expiration.ms`` from every partition."""
        now = now_ms() if now is None else now
        log_manager = self.replicas.log_manager
        expiration = self.config.producer_id_expiration_ms
        return sum(
            partition_log.remove_expired_producers(now, expiration)
            for partition_log in log_manager.logs().values()
        )

    # --- DescribeTransactions / ListTransactions --------------------------------------------
    def describe(self, transactional_id: str) -> tuple[int, TransactionMetadata | None]:
        code = self.coordinator_error(transactional_id)
        if code:
            return code, None
        metadata = self.transactions.get(transactional_id)
        if metadata is None:
            return E.TRANSACTIONAL_ID_NOT_FOUND, None
        return NONE, metadata

    def list_transactions(
        self, states: set[TxnState] | None, producer_ids: set[int] | None, min_duration_ms: int
    ) -> list[TransactionMetadata]:
        now = now_ms()
        found = []
        for metadata in self.transactions.values():
            if states and metadata.state not in states:
                continue
            if producer_ids and metadata.producer_id not in producer_ids:
                continue
            if min_duration_ms >= 0 and (
                metadata.txn_start_timestamp < 0
                or now - metadata.txn_start_timestamp < min_duration_ms
            ):
                continue
            found.append(metadata)
        return found


_COMPLETE_STATES = (TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)
