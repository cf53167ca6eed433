"""The idempotent and transactional producer's state (Java's ``TransactionManager``).

Idempotence: a producer id and epoch (InitProducerId) and, per partition, the
next sequence number.  A batch gets its producer id, epoch and base sequence
when it is first drained and keeps them on retry; the batches sent and not yet
acknowledged are kept per partition in sequence order, and a retried batch only
goes out again when it is the first of them (so the broker sees every sequence
in order).  OUT_OF_ORDER_SEQUENCE_NUMBER and UNKNOWN_PRODUCER_ID bump the
epoch (KIP-360): once nothing is in flight, the epoch goes up by one and every
unacknowledged batch is renumbered from sequence 0.  INVALID_PRODUCER_EPOCH
gets a new producer id.

Transactions: the state machine of Java's client (READY, IN_TRANSACTION,
COMMITTING, ABORTING, ABORTABLE_ERROR, FATAL_ERROR); AddPartitionsToTxn
before the first batch to a partition (the sender holds the partition back
until it is added), AddOffsetsToTxn + TxnOffsetCommit, EndTxn.  A fenced
producer (PRODUCER_FENCED / INVALID_PRODUCER_EPOCH) is in FATAL_ERROR: every
later call raises :class:`~pystream.errors.ProducerFencedError`.  Any other
failure inside a transaction is abortable: the caller aborts and carries on.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pystream.errors import (
    ErrorCode,
    KafkaError,
    ProducerFencedError,
    error_for_code,
)
from pystream.protocol.messages.add_offsets_to_txn import AddOffsetsToTxnRequest
from pystream.protocol.messages.add_partitions_to_txn import AddPartitionsToTxnRequest
from pystream.protocol.messages.end_txn import EndTxnRequest
from pystream.protocol.messages.init_producer_id import InitProducerIdRequest
from pystream.protocol.messages.txn_offset_commit import TxnOffsetCommitRequest

from .accumulator import ProducerBatch
from .connection import BrokerConnection
from .core import ClientCore
from .errors import KafkaConnectionError
from .types import ConsumerGroupMetadata, OffsetAndMetadata

__all__ = ["TransactionManager", "TxnState"]

log = logging.getLogger("pystream.client.producer")

E = ErrorCode
TopicPartition = tuple[str, int]

_SEQUENCE_MODULO = 1 << 31  # sequences wrap at Int32.MAX_VALUE, as in Kafka
_MAX_EPOCH = 32767
# Coordinator errors after which a transactional request is sent again.
_COORDINATOR_MOVED = frozenset({E.NOT_COORDINATOR, E.COORDINATOR_NOT_AVAILABLE})
_RETRY = frozenset({E.COORDINATOR_LOAD_IN_PROGRESS, E.CONCURRENT_TRANSACTIONS}) | _COORDINATOR_MOVED
_FENCED = frozenset({E.PRODUCER_FENCED, E.INVALID_PRODUCER_EPOCH})
# Kafka's producer retries CONCURRENT_TRANSACTIONS (the previous EndTxn is still
# writing its markers) much sooner than retry.backoff.ms.
_CONCURRENT_BACKOFF = 0.02


class TxnState(enum.Enum):
    UNINITIALIZED = "UNINITIALIZED"
    READY = "READY"
    IN_TRANSACTION = "IN_TRANSACTION"
    COMMITTING = "COMMITTING"
    ABORTING = "ABORTING"
    ABORTABLE_ERROR = "ABORTABLE_ERROR"
    FATAL_ERROR = "FATAL_ERROR"


def _fenced_error(transactional_id: str | None, detail: str) -> ProducerFencedError:
    return ProducerFencedError(
        f"producer with transactional_id {transactional_id!r} was fenced ({detail}): another "
        f"producer with the same transactional_id started, or the transaction timed out. "
        f"This producer cannot be used any more: close it and create a new one."
    )


class TransactionManager:
    """Producer id, epoch, sequence numbers and the transaction of one producer."""

    def __init__(
        self,
        core: ClientCore,
        *,
        transactional_id: str | None,
        transaction_timeout_ms: int,
        retry_backoff_ms: int,
        wakeup: Callable[[], None],
    ) -> None:
        self.core = core
        self.transactional_id = transactional_id
        self.transaction_timeout_ms = transaction_timeout_ms
        self.backoff = retry_backoff_ms / 1000
        self.wakeup = wakeup
        self.producer_id = -1
        self.producer_epoch = -1
        # Called with True when send() must take the checked slow path (not in a
        # transaction, or failed), False when the C fast path may run.
        self.gate_sends: Callable[[bool], None] = lambda gated: None
        self._state = TxnState.UNINITIALIZED
        self.last_error: BaseException | None = None
        self.epoch_bump_required = False
        self.new_producer_id_required = False
        self._next_sequence: dict[TopicPartition, int] = {}
        # Sent and not yet acknowledged or failed, in sequence order.
        self._unacked: dict[TopicPartition, list[ProducerBatch]] = {}
        self._init_task: asyncio.Task[None] | None = None
        # Transaction: partitions added (AddPartitionsToTxn answered), being added.
        self.partitions_in_txn: set[TopicPartition] = set()
        self._pending_partitions: set[TopicPartition] = set()
        self._add_task: asyncio.Task[None] | None = None
        self.txn_started = False  # a partition or the offsets were added: EndTxn needed
        self._coordinator: BrokerConnection | None = None

    @property
    def state(self) -> TxnState:
        return self._state

    @state.setter
    def state(self, state: TxnState) -> None:
        self._state = state
        if self.is_transactional:
            self.gate_sends(state is not TxnState.IN_TRANSACTION)
        else:
            self.gate_sends(state is TxnState.FATAL_ERROR)

    @property
    def is_transactional(self) -> bool:
        return self.transactional_id is not None

    @property
    def has_producer_id(self) -> bool:
        return self.producer_id >= 0

    # ------------------------------------------------------------------ errors

    def raise_if_fatal(self) -> None:
        if self.state is TxnState.FATAL_ERROR:
            assert self.last_error is not None
            raise self.last_error

    def check_can_send(self) -> None:
        """For send(): the state must allow a record now (raises what is wrong)."""
        self.raise_if_fatal()
        if not self.is_transactional:
            return
        if self.state is TxnState.ABORTABLE_ERROR:
            raise KafkaError(
                f"cannot send: the transaction hit an error and must be aborted "
                f"(call abort_transaction()): {self.last_error}"
            )
        self._require(
            TxnState.IN_TRANSACTION,
            "send",
            "call begin_transaction() first (a transactional producer sends only inside one)",
        )

    def _require(self, state: TxnState, action: str, hint: str) -> None:
        if self.state is TxnState.UNINITIALIZED:
            raise RuntimeError(f"call init_transactions() before you {action}")
        if self.state is not state:
            raise RuntimeError(f"cannot {action} in transaction state {self.state.value}: {hint}")

    def fatal(self, error: BaseException) -> None:
        self.state = TxnState.FATAL_ERROR
        self.last_error = error

    def abortable(self, error: BaseException) -> None:
        """A failure inside a transaction: it can only be aborted now."""
        if self.state in (TxnState.IN_TRANSACTION, TxnState.COMMITTING):
            self.state = TxnState.ABORTABLE_ERROR
            self.last_error = error

    @property
    def blocks_sending(self) -> bool:
        """The sender must fail queued batches instead of sending them."""
        return self.state in (TxnState.FATAL_ERROR, TxnState.ABORTABLE_ERROR)

    # ------------------------------------------------------------------ sequences (sender side)

    def sendable(self, tp: TopicPartition, head: ProducerBatch | None) -> bool:
        """May the sender drain the first queued batch of ``tp`` now?"""
        if self.is_transactional and tp not in self.partitions_in_txn:
            if tp not in self._pending_partitions:
                self._pending_partitions.add(tp)
                self._start_add_partitions()
            return False
        if head is None or head.base_sequence < 0:
            return True
        # A retry goes out only as the first unacknowledged batch of its partition.
        unacked = self._unacked.get(tp)
        return not unacked or unacked[0] is head

    def add_partitions_early(self, partitions: list[TopicPartition]) -> None:
        """AddPartitionsToTxn for partitions with records queued, before their batches are
        ready: the round trip overlaps ``linger_ms`` instead of following it (as Java's
        producer adds a partition at ``send()``)."""
        if self.state is not TxnState.IN_TRANSACTION and self.state is not TxnState.COMMITTING:
            return
        new = [
            tp
            for tp in partitions
            if tp not in self.partitions_in_txn and tp not in self._pending_partitions
        ]
        if new:
            self._pending_partitions.update(new)
            self._start_add_partitions()

    def assign(self, batch: ProducerBatch) -> None:
        """Give a batch drained for the first time its producer id, epoch and sequence."""
        if batch.base_sequence >= 0:
            return
        tp = (batch.topic, batch.partition)
        sequence = self._next_sequence.get(tp, 0)
        batch.set_producer_state(
            self.producer_id, self.producer_epoch, sequence, self.is_transactional
        )
        self._next_sequence[tp] = (sequence + batch.record_count) % _SEQUENCE_MODULO
        self._unacked.setdefault(tp, []).append(batch)

    def _forget(self, batch: ProducerBatch) -> bool:
        """Drop a finished batch from the unacknowledged; whether it was there."""
        unacked = self._unacked.get((batch.topic, batch.partition))
        if unacked and batch in unacked:
            unacked.remove(batch)
            return True
        return False

    def completed(self, batch: ProducerBatch) -> None:
        self._forget(batch)

    def failed(self, batch: ProducerBatch, error: BaseException) -> None:
        """A batch failed for good: its sequence may now be a gap the broker will not fill."""
        had_sequence = self._forget(batch)
        if isinstance(error, ProducerFencedError) and self.is_transactional:
            self.fatal(error)
            return
        if self.is_transactional:
            if self.state is not TxnState.ABORTING:
                self.abortable(error)
            if had_sequence:
                self.epoch_bump_required = True
        elif had_sequence:
            self.epoch_bump_required = True

    def can_retry(self, batch: ProducerBatch, code: int) -> bool:
        """Java's ``canRetry`` for the sequence errors of an idempotent producer."""
        tp = (batch.topic, batch.partition)
        unacked = self._unacked.get(tp) or []
        if code == E.OUT_OF_ORDER_SEQUENCE_NUMBER:
            if unacked and unacked[0] is not batch:
                return True  # an earlier batch is being retried: this one follows it
            if not self.is_transactional:
                self.epoch_bump_required = True  # a real gap: start again at a new epoch
                return True
            return False
        if code == E.UNKNOWN_PRODUCER_ID:
            # The broker lost our state (e.g. the records were deleted): a new epoch
            # starts every partition at sequence 0.
            if not self.is_transactional:
                self.epoch_bump_required = True
                return True
            return False
        if code == E.INVALID_PRODUCER_EPOCH and not self.is_transactional:
            self.new_producer_id_required = True
            return True
        return False

    def needs_reset(self) -> bool:
        """Must the sender stop and bump the epoch?  Idempotent producers only: a
        transactional one bumps it with the coordinator when the transaction is aborted
        (a local bump would not match the coordinator's epoch)."""
        if self.is_transactional:
            return False
        return self.epoch_bump_required or self.new_producer_id_required

    async def reset_producer_state(self) -> None:
        """With nothing in flight: bump the epoch (or get a new id) and renumber every
        unacknowledged batch from sequence 0 (Java's ``bumpIdempotentEpochAndResetIdIfNeeded``)."""
        if self.new_producer_id_required or self.producer_epoch >= _MAX_EPOCH:
            await self.init_producer_id(keep_id=True)
        else:
            self.producer_epoch += 1
        log.info(
            "producer id %d: epoch bumped to %d, sequences start again at 0",
            self.producer_id,
            self.producer_epoch,
        )
        self.epoch_bump_required = self.new_producer_id_required = False
        self._renumber()

    def _renumber(self) -> None:
        self._next_sequence.clear()
        for tp, batches in self._unacked.items():
            sequence = 0
            for batch in batches:
                batch.set_producer_state(
                    self.producer_id, self.producer_epoch, sequence, self.is_transactional
                )
                sequence = (sequence + batch.record_count) % _SEQUENCE_MODULO
            self._next_sequence[tp] = sequence

    # ------------------------------------------------------------------ producer id

    def ensure_producer_id(self) -> None:
        """Idempotent producer: get a producer id in the background (before the first batch)."""
        if self._init_task is None or self._init_task.done():
            self._init_task = asyncio.get_running_loop().create_task(self._init_in_background())

    async def _init_in_background(self) -> None:
        try:
            await self.init_producer_id()
        except KafkaError as exc:
            if not exc.retriable:
                self.fatal(exc)
            log.warning("producer: InitProducerId failed: %s", exc)
            await asyncio.sleep(self.backoff)
        finally:
            self.wakeup()

    async def init_producer_id(self, keep_id: bool = False) -> None:
        """InitProducerId (to the transaction coordinator when transactional).  With
        ``keep_id`` the current id and epoch go along (KIP-360): the coordinator bumps
        the epoch of this producer instead of fencing it."""

        def build(version: int) -> InitProducerIdRequest:
            return InitProducerIdRequest(
                transactional_id=self.transactional_id,
                transaction_timeout_ms=self.transaction_timeout_ms,
                producer_id=self.producer_id if keep_id else -1,
                producer_epoch=self.producer_epoch if keep_id else -1,
            )

        while True:
            if self.is_transactional:
                response = await self._to_coordinator(22, build)
            else:
                response = await self.core.request(None, 22, build)
            code = response.error_code
            if code == 0:
                self.producer_id = response.producer_id
                self.producer_epoch = response.producer_epoch
                self._renumber()
                return
            error = self._error(code, "InitProducerId")
            if code in _FENCED:
                self.fatal(error)
                raise error
            if not error.retriable:
                raise error
            await asyncio.sleep(self.backoff)

    # ------------------------------------------------------------------ the coordinator

    async def _to_coordinator(self, api_key: int, build: Callable[[int], Any]) -> Any:
        """Send to the transaction coordinator; find it again when it moved."""
        assert self.transactional_id is not None
        for _ in range(100):
            conn = self._coordinator
            if conn is None or conn.closed:
                conn = self._coordinator = await self.core.find_coordinator(
                    self.transactional_id, 1
                )
            version = conn.version(api_key)
            try:
                response = await conn.request(api_key, build(version), version)
            except KafkaConnectionError:
                self._coordinator = None
                await asyncio.sleep(self.backoff)
                continue
            if getattr(response, "error_code", 0) in _COORDINATOR_MOVED:
                self._coordinator = None
            return response
        raise error_for_code(E.COORDINATOR_NOT_AVAILABLE)(
            f"transactional id {self.transactional_id!r}: no reachable coordinator"
        )

    def _error(self, code: int, what: str) -> KafkaError:
        if code in _FENCED:
            name = error_for_code(code).error_name
            return _fenced_error(self.transactional_id, f"{what}: {name}")
        cls = error_for_code(code)
        return cls(f"{what} for transactional id {self.transactional_id!r}: {cls.error_name}")

    async def _txn_request(self, api_key: int, what: str, build: Callable[[int], Any]) -> None:
        """A request answered by one error code: retried while retriable; fenced is fatal,
        anything else abortable."""
        while True:
            response = await self._to_coordinator(api_key, build)
            code = response.error_code
            if code == 0:
                return
            if code in _RETRY:
                await asyncio.sleep(
                    _CONCURRENT_BACKOFF if code == E.CONCURRENT_TRANSACTIONS else self.backoff
                )
                continue
            self._raise(code, what)

    def _raise(self, code: int, what: str) -> None:
        error = self._error(code, what)
        if code in _FENCED or code == E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
            self.fatal(error)
        else:
            self.abortable(error)
        raise error

    # ------------------------------------------------------------------ transactions

    async def init_transactions(self) -> None:
        self.raise_if_fatal()
        if self.state is not TxnState.UNINITIALIZED:
            raise RuntimeError(f"init_transactions() was already called (state {self.state.value})")
        await self.init_producer_id()
        self.state = TxnState.READY

    def begin(self) -> None:
        self.raise_if_fatal()
        self._require(TxnState.READY, "begin a transaction", "commit or abort the current one")
        self.state = TxnState.IN_TRANSACTION

    def check_in_transaction(self, what: str) -> None:
        self.raise_if_fatal()
        if self.state is TxnState.ABORTABLE_ERROR:
            assert self.last_error is not None
            raise self.last_error
        if self.state is not TxnState.IN_TRANSACTION:
            raise RuntimeError(f"cannot {what} in transaction state {self.state.value}")

    def _start_add_partitions(self) -> None:
        if self._add_task is None or self._add_task.done():
            self._add_task = asyncio.get_running_loop().create_task(self._add_partitions())

    async def _add_partitions(self) -> None:
        """AddPartitionsToTxn for every partition waiting (the sender holds their batches)."""
        while self._pending_partitions and not self.blocks_sending:
            wanted = sorted(self._pending_partitions)
            topics: dict[str, list[int]] = {}
            for topic, partition in wanted:
                topics.setdefault(topic, []).append(partition)

            def build(version: int, topics: dict[str, list[int]] = topics) -> Any:
                return AddPartitionsToTxnRequest(
                    v3_and_below_transactional_id=self.transactional_id,
                    v3_and_below_producer_id=self.producer_id,
                    v3_and_below_producer_epoch=self.producer_epoch,
                    v3_and_below_topics=[
                        AddPartitionsToTxnRequest.AddPartitionsToTxnTopic(name=t, partitions=ps)
                        for t, ps in topics.items()
                    ],
                )

            try:
                response = await self._to_coordinator(24, build)
            except KafkaError as exc:
                self.abortable(exc)
                break
            codes = {
                (t.name, p.partition_index): p.partition_error_code
                for t in response.results_by_topic_v3_and_below
                for p in t.results_by_partition
            }
            worst = max(
                (c for c in codes.values() if c and c != E.OPERATION_NOT_ATTEMPTED),
                default=0,
                key=lambda c: (c not in _RETRY, c),
            )
            if worst == 0:
                self.partitions_in_txn.update(wanted)
                self._pending_partitions.difference_update(wanted)
                self.txn_started = True
                self.wakeup()
                continue
            if worst in _RETRY:
                await asyncio.sleep(
                    _CONCURRENT_BACKOFF if worst == E.CONCURRENT_TRANSACTIONS else self.backoff
                )
                continue
            try:
                self._raise(worst, "AddPartitionsToTxn")
            except KafkaError:
                pass
            break
        self.wakeup()

    async def send_offsets(
        self,
        offsets: Mapping[Any, OffsetAndMetadata | int],
        group: ConsumerGroupMetadata,
    ) -> None:
        """AddOffsetsToTxn, then TxnOffsetCommit to the group coordinator."""
        self.check_in_transaction("send offsets to the transaction")
        tid = self.transactional_id
        await self._txn_request(
            25,
            "AddOffsetsToTxn",
            lambda v: AddOffsetsToTxnRequest(
                transactional_id=tid,
                producer_id=self.producer_id,
                producer_epoch=self.producer_epoch,
                group_id=group.group_id,
            ),
        )
        self.txn_started = True
        by_topic: dict[str, list[TxnOffsetCommitRequest.TxnOffsetCommitRequestPartition]] = {}
        for (topic, partition), value in offsets.items():
            om = value if isinstance(value, OffsetAndMetadata) else OffsetAndMetadata(int(value))
            by_topic.setdefault(topic, []).append(
                TxnOffsetCommitRequest.TxnOffsetCommitRequestPartition(
                    partition_index=partition,
                    committed_offset=om.offset,
                    committed_leader_epoch=om.leader_epoch,
                    committed_metadata=om.metadata,
                )
            )
        body = TxnOffsetCommitRequest(
            transactional_id=tid,
            group_id=group.group_id,
            producer_id=self.producer_id,
            producer_epoch=self.producer_epoch,
            generation_id=group.generation_id,
            member_id=group.member_id,
            group_instance_id=group.group_instance_id,
            topics=[
                TxnOffsetCommitRequest.TxnOffsetCommitRequestTopic(name=t, partitions=ps)
                for t, ps in by_topic.items()
            ],
        )
        for _ in range(100):
            conn = await self.core.find_coordinator(group.group_id, 0)
            version = conn.version(28)
            response = await conn.request(28, body, version)
            codes = [p.error_code for t in response.topics for p in t.partitions]
            bad = [c for c in codes if c]
            if not bad:
                return
            if all(c in _RETRY or error_for_code(c).retriable for c in bad):
                await asyncio.sleep(self.backoff)
                continue
            self._raise(bad[0], f"TxnOffsetCommit for group {group.group_id!r}")
        self._raise(E.COORDINATOR_NOT_AVAILABLE, "TxnOffsetCommit")

    async def end(self, committed: bool) -> None:
        """EndTxn (when anything was added), then READY for the next transaction."""
        self._pending_partitions.clear()
        if self._add_task is not None and not self._add_task.done():
            await self._add_task  # its answer must not land in the next transaction
        if self.txn_started:
            await self._txn_request(
                26,
                "EndTxn",
                lambda v: EndTxnRequest(
                    transactional_id=self.transactional_id,
                    producer_id=self.producer_id,
                    producer_epoch=self.producer_epoch,
                    committed=committed,
                ),
            )
        if not committed and self.epoch_bump_required:
            # A batch of the aborted transaction failed after getting a sequence: a new
            # epoch from the coordinator starts every partition at 0 (KIP-360).
            await self.init_producer_id(keep_id=True)
            self.epoch_bump_required = False
        self.partitions_in_txn.clear()
        self._pending_partitions.clear()
        self.txn_started = False
        self.last_error = None
        self.state = TxnState.READY
