"""The transaction and producer rules of compaction (Kafka's ``CleanedTransactionMetadata``).

Compaction must not break idempotent or transactional producers:

* the **last batch of each active producer** stays (empty if all its records
  go): it carries the producer's last sequence and epoch, which the producer
  state is rebuilt from after a restart.  Which batch that is comes from the
  log's :class:`~pystream.storage.producer_state.ProducerStateManager`,
  snapshotted when the clean starts (:func:`last_batches`);
* **aborted transactions** (the log's ``.txnindex``) lose their records: their
  data batches go as soon as a clean sees them;
* a **marker** (control batch) goes only once no data of its transaction is
  left, and then only after its own delete horizon, like a tombstone: a
  consumer that read the transaction's data must still see its end.

:class:`TransactionFilter` is fed the batches of one pass in offset order and
decides the last two.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from pystream._core.records import CONTROL_ABORT, CONTROL_COMMIT, BatchHeader


class AbortedTxnLike(Protocol):
    """An aborted transaction (``txn_index.AbortedTxn``): data in [first, last = marker]."""

    @property
    def producer_id(self) -> int: ...
    @property
    def first_offset(self) -> int: ...
    @property
    def last_offset(self) -> int: ...


@dataclass(frozen=True, slots=True)
class LastBatch:
    """What must survive of a producer: its last data batch (None: none) and epoch."""

    last_data_offset: int | None
    producer_epoch: int


def last_batches(producers: dict[int, object]) -> dict[int, LastBatch]:
    """Snapshot of a ProducerStateManager's ``producers`` (entries with ``last_data_offset``,
    -1 when the producer has no data batch, and ``producer_epoch``)."""
    snapshot = {}
    for producer_id, entry in producers.items():
        last = getattr(entry, "last_data_offset", -1)
        snapshot[producer_id] = LastBatch(
            last if last >= 0 else None, getattr(entry, "producer_epoch", -1)
        )
    return snapshot


def is_last_batch_of_producer(header: BatchHeader, last: dict[int, LastBatch]) -> bool:
    """Kafka's ``isBatchLastRecordOfProducer``: this batch carries the producer's state."""
    entry = last.get(header.producer_id)
    if entry is None:
        return False
    if entry.last_data_offset is not None:
        return header.last_offset == entry.last_data_offset
    return header.is_control and header.producer_epoch == entry.producer_epoch


class _OngoingAbort:
    __slots__ = ("txn", "seen_batch")

    def __init__(self, txn: AbortedTxnLike) -> None:
        self.txn = txn
        self.seen_batch = False


class TransactionFilter:
    """Kafka's ``CleanedTransactionMetadata`` for one pass over batches in offset order."""

    def __init__(self, aborted: Iterable[AbortedTxnLike]) -> None:
        self._pending = deque(sorted(aborted, key=lambda t: t.first_offset))
        self._ongoing_aborted: dict[int, _OngoingAbort] = {}
        self._ongoing_committed: set[int] = set()

    def _consume_up_to(self, offset: int) -> None:
        pending = self._pending
        while pending and pending[0].first_offset <= offset:
            txn = pending.popleft()
            self._ongoing_aborted[txn.producer_id] = _OngoingAbort(txn)

    def on_batch(self, header: BatchHeader) -> bool:
        """A data batch: True if it belongs to an aborted transaction (discard its records)."""
        self._consume_up_to(header.last_offset)
        if not header.is_transactional:
            return False
        ongoing = self._ongoing_aborted.get(header.producer_id)
        if ongoing is not None:
            ongoing.seen_batch = True
            return True
        self._ongoing_committed.add(header.producer_id)
        return False

    def on_control_batch(self, header: BatchHeader, control_type: int) -> bool:
        """A control batch (``control_type`` -1 when it has no record): True if it may be
        discarded because no batch of its transaction was seen in this pass."""
        self._consume_up_to(header.last_offset)
        producer_id = header.producer_id
        if control_type < 0:
            return True  # an empty control batch was already cleaned
        if control_type == CONTROL_ABORT:
            ongoing = self._ongoing_aborted.pop(producer_id, None)
            # Keep the marker until every batch of the aborted transaction is gone.
            return ongoing is None or not ongoing.seen_batch
        if control_type == CONTROL_COMMIT:
            if producer_id in self._ongoing_committed:
                self._ongoing_committed.discard(producer_id)
                return False
            return True
        return False  # a control type we do not know: keep it
