"""Producer state of one partition: idempotent dedup, producer epochs, open transactions.

Kafka's ``ProducerStateManager``.  For every producer id that wrote to the
partition it keeps the epoch, the sequence ranges and offsets of its last five
batches, the coordinator epoch of its last transaction marker and the first
offset of its open transaction.  With that, a leader append of a batch from an
idempotent producer is checked in O(1) — no record is parsed:

- same epoch, same sequence range as a cached batch: a **duplicate** (a retry
  of a batch already written); it is answered with the original offsets and
  not stored again;
- same epoch, first sequence not the last one + 1: OUT_OF_ORDER_SEQUENCE_NUMBER;
- an epoch below the producer's: INVALID_PRODUCER_EPOCH (a zombie, fenced);
- a new epoch must start at sequence 0;
- an unknown producer (never seen, or its state expired after
  ``producer.id.expiration.ms`` or was removed with old segments) is accepted
  at any sequence, as Kafka does since KIP-360.

Open transactions hold the **last stable offset** (LSO): the first offset of
the oldest open transaction, or of a completed one whose marker is not yet
below the high watermark.  A marker completes a transaction
(:class:`CompletedTxn`); aborted ones go to the ``.txnindex``
(:mod:`pystream.storage.txn_index`).

**Snapshots.**  The state is written to ``<offset>.snapshot`` when a segment
is rolled (offset = the new segment's base) and when the log is closed
(offset = the log end offset).  The format is Kafka's snapshot version 1 —
``version i16 | crc32c u32 | count i32 | entries`` with 46-byte entries
``producer_id i64 | epoch i16 | last_sequence i32 | last_offset i64 |
offset_delta i32 | timestamp i64 | coordinator_epoch i32 |
current_txn_first_offset i64``, CRC-32C over everything after the CRC — with
one entry per cached batch (oldest first) so that all five batches survive a
restart; Kafka's own reader keeps the last entry of each producer.

**Recovery** (:func:`load_producer_state`, step 9 of the log loader):

1. delete snapshots past the log end offset (their data was truncated away)
   and below the log start offset (their data was deleted);
2. load the newest snapshot that passes its CRC check (a damaged one is
   deleted and the next older one tried); after an unclean stop, the newest
   at or below the first recovered segment, so that the replay rebuilds the
   ``.txnindex`` entries of every segment past the recovery point;
3. read the ``.txnindex`` files of the live segments, keeping entries whose
   marker lies below the snapshot offset;
4. replay the batch headers from the snapshot offset (or the log start when
   there is no snapshot) to the log end offset: data batches of producers
   update their entries, markers complete transactions and aborted ones are
   re-entered in the transaction index;
5. drop producers whose data all lies below the log start offset.
"""

from __future__ import annotations

import logging
import os
import struct
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pystream._core import records as core_records
from pystream._core.crc32c import crc32c
from pystream.errors import (
    InvalidProducerEpochError,
    OutOfOrderSequenceNumberError,
    TransactionCoordinatorFencedError,
)
from pystream.storage.txn_index import AbortedTxn, TransactionIndex

if TYPE_CHECKING:
    from pystream._core.segment import LogSegment

log = logging.getLogger(__name__)

NO_PRODUCER_ID = -1
NO_EPOCH = -1
NO_SEQUENCE = -1
INT32_MAX = 2**31 - 1
BATCHES_TO_RETAIN = 5
SNAPSHOT_SUFFIX = ".snapshot"
CONTROL_ABORT = core_records.CONTROL_ABORT
CONTROL_COMMIT = core_records.CONTROL_COMMIT

_SNAPSHOT_VERSION = 1
_SNAPSHOT_HEADER = struct.Struct(">hI")  # version, crc
_COUNT = struct.Struct(">i")
_SNAPSHOT_ENTRY = struct.Struct(">qhiqiqiq")  # 46 bytes


def _in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == INT32_MAX)


def _decrement_sequence(sequence: int, decrement: int) -> int:
    if sequence < decrement:
        return INT32_MAX - (decrement - sequence) + 1
    return sequence - decrement


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    """Where one batch of a producer was written: enough to answer its retry."""

    last_seq: int
    last_offset: int
    offset_delta: int
    timestamp: int

    @property
    def first_seq(self) -> int:
        return _decrement_sequence(self.last_seq, self.offset_delta)

    @property
    def first_offset(self) -> int:
        return self.last_offset - self.offset_delta


@dataclass(slots=True)
class ProducerStateEntry:
    """What a partition remembers about one producer id."""

    producer_id: int
    producer_epoch: int = NO_EPOCH
    batches: deque[BatchMetadata] = field(default_factory=lambda: deque(maxlen=BATCHES_TO_RETAIN))
    coordinator_epoch: int = -1
    current_txn_first_offset: int = -1
    last_timestamp: int = -1

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE

    @property
    def last_data_offset(self) -> int:
        return self.batches[-1].last_offset if self.batches else -1

    def find_duplicate(self, epoch: int, first_seq: int, last_seq: int) -> BatchMetadata | None:
        if epoch != self.producer_epoch:
            return None
        for batch in self.batches:
            if batch.last_seq == last_seq and batch.first_seq == first_seq:
                return batch
        return None

    def update_epoch(self, epoch: int) -> None:
        # A higher epoch starts over: the old epoch's sequences mean nothing any more.
        if epoch != self.producer_epoch:
            self.batches.clear()
            self.producer_epoch = epoch


@dataclass(frozen=True, slots=True)
class CompletedTxn:
    """A transaction a marker ended: its data and marker span [first_offset, last_offset]."""

    producer_id: int
    first_offset: int
    last_offset: int
    is_aborted: bool


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """The producer fields of one batch's header (plus the marker, for control batches)."""

    producer_id: int
    producer_epoch: int
    base_sequence: int
    last_sequence: int
    offset_delta: int  # last offset delta: the batch spans offset_delta + 1 offsets
    max_timestamp: int
    is_transactional: bool
    control_type: int = -1  # CONTROL_ABORT / CONTROL_COMMIT for markers, else -1
    coordinator_epoch: int = -1

    @property
    def is_marker(self) -> bool:
        return self.control_type in (CONTROL_ABORT, CONTROL_COMMIT)


def batch_infos(records: bytes | bytearray | memoryview) -> list[tuple[int, BatchInfo]]:
    """``(base offset, producer fields)`` of every batch in validated ``records`` (no CRC
    work; markers are read to learn commit/abort and the coordinator epoch)."""
    infos = []
    size = memoryview(records).nbytes
    position = 0
    while position < size:
        header = core_records.read_batch_header(records, position)
        infos.append((header.base_offset, _batch_info(header, records, position)))
        position += header.size
    return infos


def _batch_info(
    header: core_records.BatchHeader, buffer: bytes | bytearray | memoryview, position: int
) -> BatchInfo:
    control_type, coordinator_epoch = -1, -1
    if header.is_control:
        control_type, coordinator_epoch = _read_marker(buffer, position)
    return BatchInfo(
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        header.last_sequence,
        header.last_offset_delta,
        header.max_timestamp,
        header.is_transactional,
        control_type,
        coordinator_epoch,
    )


def _read_marker(buffer: bytes | bytearray | memoryview, position: int) -> tuple[int, int]:
    # Kept in its own frame so the RecordBatch (which holds the buffer) is gone on return.
    batch = core_records.RecordBatch(buffer, position, check_crc=False)
    control_type = batch.control_record_type()
    if control_type not in (CONTROL_ABORT, CONTROL_COMMIT):
        return -1, -1  # other control records (KRaft) are not transaction markers
    records = batch.records()
    value = records[0].value if records else None
    return control_type, core_records.end_txn_marker_coordinator_epoch(value or b"")


class ProducerStateManager:
    """The producer state of one partition (see the module docstring)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.producers: dict[int, ProducerStateEntry] = {}
        self._ongoing: dict[int, int] = {}  # first offset of an open transaction -> producer id
        self._unreplicated: list[CompletedTxn] = []  # completed, marker not yet below the HW

    # --- checks (before an append) ----------------------------------------------------------

    def check_client_batch(
        self, producer_id: int, epoch: int, first_seq: int, last_seq: int
    ) -> BatchMetadata | None:
        """Check a producer's batch (leader append, client rules); return the cached batch if
        it is a duplicate.  Raises InvalidProducerEpochError / OutOfOrderSequenceNumberError."""
        entry = self.producers.get(producer_id)
        if entry is None or entry.producer_epoch == NO_EPOCH:
            return None  # unknown (or expired) producer: any sequence starts it
        current = entry.producer_epoch
        last = entry.last_seq
        if epoch == current and last != NO_SEQUENCE and _in_sequence(last, first_seq):
            return None  # the common case: the next batch
        duplicate = entry.find_duplicate(epoch, first_seq, last_seq)
        if duplicate is not None:
            return duplicate
        if epoch < current:
            raise InvalidProducerEpochError(
                f"producer {producer_id} has epoch {epoch}, below the current epoch {current} "
                "on this partition: it was fenced by a newer instance with the same id"
            )
        if epoch > current:
            if first_seq != 0:
                raise OutOfOrderSequenceNumberError(
                    f"producer {producer_id} starts epoch {epoch} at sequence {first_seq}; a new "
                    "epoch must start at sequence 0"
                )
            return None
        if last == NO_SEQUENCE:
            if first_seq != 0:
                # Known epoch but no batch yet (e.g. only a marker): the epoch starts at 0.
                raise OutOfOrderSequenceNumberError(
                    f"producer {producer_id} (epoch {epoch}) sent sequence {first_seq}; its "
                    "first batch in this epoch must have sequence 0"
                )
            return None
        raise OutOfOrderSequenceNumberError(
            f"producer {producer_id} (epoch {epoch}) sent sequence {first_seq} but the next "
            f"expected is {last + 1 if last < INT32_MAX else 0}: a batch is missing"
        )

    def check_coordinator_batch(self, info: BatchInfo) -> None:
        """Check a batch appended by a coordinator (markers, transactional offset commits):
        epochs only, sequences are not used."""
        entry = self.producers.get(info.producer_id)
        if entry is None:
            return
        if info.producer_epoch < entry.producer_epoch:
            raise InvalidProducerEpochError(
                f"producer {info.producer_id}: epoch {info.producer_epoch} is below the current "
                f"epoch {entry.producer_epoch}; the producer was fenced"
            )
        if info.is_marker and entry.coordinator_epoch > info.coordinator_epoch:
            raise TransactionCoordinatorFencedError(
                f"transaction marker for producer {info.producer_id} from coordinator epoch "
                f"{info.coordinator_epoch}, but epoch {entry.coordinator_epoch} already wrote one"
            )

    # --- updates (after an append) ----------------------------------------------------------

    def update_client_batch(
        self,
        producer_id: int,
        epoch: int,
        last_seq: int,
        first_offset: int,
        last_offset: int,
        timestamp: int,
        is_transactional: bool,
    ) -> None:
        """Record a data batch written at [first_offset, last_offset]."""
        entry = self.producers.get(producer_id)
        if entry is None:
            entry = self.producers[producer_id] = ProducerStateEntry(producer_id)
        entry.update_epoch(epoch)
        if last_seq != NO_SEQUENCE:
            entry.batches.append(
                BatchMetadata(last_seq, last_offset, last_offset - first_offset, timestamp)
            )
        entry.last_timestamp = timestamp
        if is_transactional and entry.current_txn_first_offset < 0:
            entry.current_txn_first_offset = first_offset
            self._ongoing[first_offset] = producer_id

    def update(self, first_offset: int, info: BatchInfo) -> CompletedTxn | None:
        """Record any batch (data or marker) written at ``first_offset``; a marker returns the
        transaction it completed."""
        if info.producer_id < 0:
            return None
        last_offset = first_offset + info.offset_delta
        if not info.is_marker:
            self.update_client_batch(
                info.producer_id,
                info.producer_epoch,
                info.last_sequence,
                first_offset,
                last_offset,
                info.max_timestamp,
                info.is_transactional,
            )
            return None
        entry = self.producers.get(info.producer_id)
        if entry is None:
            entry = self.producers[info.producer_id] = ProducerStateEntry(info.producer_id)
        entry.update_epoch(max(info.producer_epoch, entry.producer_epoch))
        txn_first = entry.current_txn_first_offset
        if txn_first >= 0:
            self._ongoing.pop(txn_first, None)
        else:
            txn_first = last_offset  # a marker without data here (e.g. an empty abort)
        entry.current_txn_first_offset = -1
        entry.coordinator_epoch = info.coordinator_epoch
        entry.last_timestamp = info.max_timestamp
        completed = CompletedTxn(
            info.producer_id, txn_first, last_offset, info.control_type == CONTROL_ABORT
        )
        self._unreplicated.append(completed)
        return completed

    # --- last stable offset -----------------------------------------------------------------

    def prune_replicated(self, high_watermark: int) -> None:
        """Forget completed transactions whose marker is below the high watermark."""
        if self._unreplicated:
            self._unreplicated = [t for t in self._unreplicated if t.last_offset >= high_watermark]

    def first_unstable_offset(self, high_watermark: int) -> int | None:
        """The first offset of the oldest transaction a read_committed consumer must wait for."""
        self.prune_replicated(high_watermark)
        candidates = [t.first_offset for t in self._unreplicated]
        if self._ongoing:
            candidates.append(min(self._ongoing))
        return min(candidates) if candidates else None

    def last_stable_offset(self, high_watermark: int) -> int:
        """The LSO: read_committed consumers read below it (never above the high watermark)."""
        if not self._ongoing and not self._unreplicated:
            return high_watermark
        first = self.first_unstable_offset(high_watermark)
        return high_watermark if first is None else min(first, high_watermark)

    def stable_offset_after(self, completed: CompletedTxn) -> int:
        """The LSO once ``completed`` is done, for its aborted-transaction entry."""
        others = [offset for offset in self._ongoing if offset != completed.first_offset]
        return min(others) if others else completed.last_offset + 1

    @property
    def ongoing_transactions(self) -> dict[int, int]:
        """First offset of each open transaction -> producer id (a copy)."""
        return dict(self._ongoing)

    # --- expiration, truncation ---------------------------------------------------------------

    def remove_expired_producers(self, now_ms: int, expiration_ms: int) -> int:
        """Forget producers idle for ``producer.id.expiration.ms`` with no open transaction
        (as Kafka, idleness is measured with the batches' timestamps); returns how many."""
        expired = [
            pid
            for pid, entry in self.producers.items()
            if entry.current_txn_first_offset < 0 and now_ms - entry.last_timestamp >= expiration_ms
        ]
        for pid in expired:
            del self.producers[pid]
        return len(expired)

    def remove_unretained_producers(self, log_start_offset: int) -> None:
        """Forget producers whose data all lies below the log start offset (deleted)."""
        for pid in [
            pid
            for pid, entry in self.producers.items()
            if entry.current_txn_first_offset < 0 and 0 <= entry.last_data_offset < log_start_offset
        ]:
            del self.producers[pid]

    def clear(self) -> None:
        self.producers.clear()
        self._ongoing.clear()
        self._unreplicated.clear()

    # --- snapshots --------------------------------------------------------------------------

    def snapshot_bytes(self) -> bytes:
        """The state in Kafka's snapshot format (one entry per cached batch)."""
        entries = []
        for pid, entry in self.producers.items():
            common = (entry.coordinator_epoch, entry.current_txn_first_offset)
            if not entry.batches:
                entries.append(
                    _SNAPSHOT_ENTRY.pack(
                        pid, entry.producer_epoch, -1, -1, 0, entry.last_timestamp, *common
                    )
                )
            for i, batch in enumerate(entry.batches):
                timestamp = entry.last_timestamp if i == len(entry.batches) - 1 else batch.timestamp
                entries.append(
                    _SNAPSHOT_ENTRY.pack(
                        pid,
                        entry.producer_epoch,
                        batch.last_seq,
                        batch.last_offset,
                        batch.offset_delta,
                        timestamp,
                        *common,
                    )
                )
        body = _COUNT.pack(len(entries)) + b"".join(entries)
        return _SNAPSHOT_HEADER.pack(_SNAPSHOT_VERSION, crc32c(body)) + body

    def take_snapshot(self, offset: int) -> None:
        """Write ``<offset>.snapshot`` (atomically: a crash leaves the old file set)."""
        path = snapshot_path(self.directory, offset)
        tmp = path + ".tmp"
        with open(tmp, "wb") as handle:
            handle.write(self.snapshot_bytes())
        os.replace(tmp, path)

    def load_snapshot_bytes(self, data: bytes) -> None:
        """Replace the state with a snapshot's; ValueError if it is damaged."""
        if len(data) < _SNAPSHOT_HEADER.size + _COUNT.size:
            raise ValueError(f"{len(data)} bytes is too short for a snapshot")
        version, crc = _SNAPSHOT_HEADER.unpack_from(data)
        body = data[_SNAPSHOT_HEADER.size :]
        if version != _SNAPSHOT_VERSION:
            raise ValueError(f"unknown snapshot version {version}")
        if crc32c(body) != crc:
            raise ValueError("CRC mismatch")
        (count,) = _COUNT.unpack_from(body)
        if count < 0 or len(body) != _COUNT.size + count * _SNAPSHOT_ENTRY.size:
            raise ValueError(f"{count} entries do not match {len(body)} bytes")
        self.clear()
        for (
            pid,
            epoch,
            last_seq,
            last_offset,
            delta,
            timestamp,
            coord_epoch,
            txn_first,
        ) in _SNAPSHOT_ENTRY.iter_unpack(body[_COUNT.size :]):
            entry = self.producers.get(pid)
            if entry is None:
                entry = self.producers[pid] = ProducerStateEntry(pid)
            entry.producer_epoch = epoch
            if last_offset >= 0 and last_seq >= 0:
                entry.batches.append(BatchMetadata(last_seq, last_offset, delta, timestamp))
            entry.coordinator_epoch = coord_epoch
            entry.current_txn_first_offset = txn_first
            entry.last_timestamp = timestamp
        for pid, entry in self.producers.items():
            if entry.current_txn_first_offset >= 0:
                self._ongoing[entry.current_txn_first_offset] = pid


# --- snapshot files ---------------------------------------------------------------------------


def snapshot_path(directory: str, offset: int) -> str:
    return os.path.join(directory, f"{offset:020d}{SNAPSHOT_SUFFIX}")


def snapshot_offsets(directory: str) -> list[int]:
    """Offsets of the ``<offset>.snapshot`` files in ``directory``, ascending."""
    offsets = []
    for name in os.listdir(directory):
        stem, _, rest = name.partition(".")
        if "." + rest == SNAPSHOT_SUFFIX and len(stem) == 20 and stem.isdigit():
            offsets.append(int(stem))
    return sorted(offsets)


def delete_snapshots(directory: str, *, below: int | None = None, above: int | None = None) -> None:
    """Delete snapshots with offsets < ``below`` and/or > ``above``."""
    for offset in snapshot_offsets(directory):
        if (below is not None and offset < below) or (above is not None and offset > above):
            _remove(snapshot_path(directory, offset))


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


# --- recovery ---------------------------------------------------------------------------------


def load_producer_state(
    directory: str,
    segments: Sequence[LogSegment],
    log_start_offset: int,
    log_end_offset: int,
    *,
    replay_from: int | None = None,
) -> tuple[ProducerStateManager, TransactionIndex]:
    """Rebuild a partition's producer state and transaction index (module docstring, 1-5).

    ``replay_from`` (the first segment recovery checked after an unclean stop) caps the
    snapshot used: the replay then covers every recovered segment, whose ``.txnindex``
    entries were not fsynced and are rebuilt from its markers.
    """
    state = ProducerStateManager(directory)
    # step 1 (and those below the log start: their data may be gone)
    delete_snapshots(directory, below=log_start_offset, above=log_end_offset)
    start = log_start_offset
    snapshots = snapshot_offsets(directory)
    if replay_from is not None:
        # Later snapshots stay: they match the log, and a later recovery may start there.
        snapshots = [offset for offset in snapshots if offset <= replay_from]
    for offset in reversed(snapshots):  # step 2
        path = snapshot_path(directory, offset)
        try:
            with open(path, "rb") as handle:
                state.load_snapshot_bytes(handle.read())
        except (OSError, ValueError) as exc:
            log.warning("Deleting damaged producer snapshot %s: %s", path, exc)
            _remove(path)
            state.clear()
            continue
        start = max(offset, log_start_offset)
        break
    txn_index = TransactionIndex(directory)  # step 3
    txn_index.load((s.base_offset for s in segments), keep_below=start)
    replayed = 0
    for segment, position, header in _batches_from(segments, start, log_end_offset):  # step 4
        if header.producer_id < 0:
            continue
        if header.is_control:
            with segment.view(position, header.size) as view:
                info = _batch_info(header, view, 0)
        else:
            info = _batch_info(header, b"", 0)
        completed = state.update(header.base_offset, info)
        replayed += 1
        if completed is not None and completed.is_aborted:
            txn_index.append(
                segment.base_offset,
                AbortedTxn(
                    completed.producer_id,
                    completed.first_offset,
                    completed.last_offset,
                    state.stable_offset_after(completed),
                ),
            )
    state._unreplicated.clear()  # everything recovered is below the log end offset
    state.remove_unretained_producers(log_start_offset)  # step 5
    if replayed:
        log.info(
            "Rebuilt producer state of %s from offset %d: %d batches replayed, %d producers",
            directory,
            start,
            replayed,
            len(state.producers),
        )
    return state, txn_index


def _batches_from(
    segments: Sequence[LogSegment], start: int, end: int
) -> Iterator[tuple[LogSegment, int, core_records.BatchHeader]]:
    """(segment, position, header) of every batch with offsets in [start, end)."""
    for segment in segments:
        if segment.next_offset <= start:
            continue
        position = 0
        if segment.base_offset < start:
            found = segment.translate_offset(start)
            if found is None:
                continue
            position = found.position
        for batch in segment.batches(position):
            if batch.base_offset >= end:
                return
            with segment.view(batch.position, core_records.BATCH_OVERHEAD) as view:
                header = core_records.read_batch_header(view)
            yield segment, batch.position, header
