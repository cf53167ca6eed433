"""What transactions need from the group coordinator (``pystream.groups``), and nothing more.

A consume-transform-produce application commits its consumer offsets inside
its transaction (``send_offsets_to_transaction``):

1. AddOffsetsToTxn: the transaction coordinator adds the group's
   ``__consumer_offsets`` partition to the transaction — it asks the group
   coordinator which one (:meth:`TxnOffsetStore.partition_for`);
2. TxnOffsetCommit (sent to the *group* coordinator; its handler lives in
   :mod:`pystream.broker.apis.transactions`): the offsets are written to that partition as
   a transactional batch (the producer's id and epoch, no sequence) and kept
   *pending* by the group coordinator's offsets store
   (:meth:`~pystream.groups.committed_offsets.CommittedOffsets.commit_transactional_offsets`;
   the handler calls it, the transaction coordinator does not);
3. EndTxn: the commit/abort marker is appended to the partition like to every
   other partition of the transaction, then the group coordinator is told
   (:meth:`TxnOffsetStore.complete_transaction`): on commit the pending
   offsets become the group's committed offsets, on abort they are dropped.
   When the group coordinator replays the partition (at startup) it applies
   transactional offsets only at their COMMIT marker.

The broker hands its group coordinator to the transaction coordinator (and to
the WriteTxnMarkers handler) as a :class:`TxnOffsetStore`: transactions never
import the group package.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class TxnOffsetStore(Protocol):
    """Implemented by :class:`pystream.groups.coordinator.GroupCoordinator`."""

    def partition_for(self, group_id: str) -> int:
        """The ``__consumer_offsets`` partition of the group."""
        ...

    async def wait_loaded(self) -> None:
        """Until every ``__consumer_offsets`` partition being loaded is loaded."""
        ...

    def append_pending_commits(self, partitions: Iterable[int]) -> None:
        """Markers are about to be appended to these ``__consumer_offsets`` partitions:
        offset commits the coordinator holds back to batch them are appended first, so the
        log has every write in the order it was made."""
        ...

    def complete_transaction(
        self, producer_id: int, partitions: Iterable[int], committed: bool
    ) -> None:
        """A marker of ``producer_id`` was appended to these ``__consumer_offsets``
        partitions: its pending offsets become committed (``committed``) or are dropped."""
        ...
