"""What compaction keeps of one batch: the per-batch rules of a clean (Kafka's
``LogCleaner`` record filter and ``MemoryRecords.filterTo``).

For each batch of a group, in offset order, :meth:`BatchCleaner.clean` appends
to the output what survives:

* **data batch** -- records go through :func:`~pystream._core.offset_map.filter_records`:
  a record stays if no newer offset is mapped for its key (or it lies past the
  map's latest offset); a tombstone only while its batch's delete horizon has
  not passed.  The first clean that keeps a tombstone stamps its batch with a
  delete horizon = now + ``delete.retention.ms`` (KIP-534: the flag in the
  attributes, the horizon in the base timestamp, record timestamp deltas
  re-based on it), so a consumer gets ``delete.retention.ms`` to see it;
* **aborted transaction** -- the batch's records all go;
* **control batch** (a marker) -- kept while data of its transaction was seen
  in this pass; then stamped with a horizon; dropped once that passed;
* a batch whose records all stay is copied byte for byte; otherwise it is
  rebuilt with the same base offset, last offset delta (so offsets and
  producer sequences never change), producer fields, timestamp type and codec;
* a batch left with nothing is dropped, except the **last batch of an active
  producer**, which stays as an empty batch (its sequence and epoch).
"""

from __future__ import annotations

from dataclasses import dataclass

from pystream._core import compression
from pystream._core import records as core_records
from pystream._core.offset_map import OffsetMap, filter_records, write_batch
from pystream._core.records import (
    ATTR_CODEC_MASK,
    ATTR_DELETE_HORIZON,
    BATCH_OVERHEAD,
    CONTROL_ABORT,
    TIMESTAMP_LOG_APPEND_TIME,
    BatchHeader,
)
from pystream.storage.cleaner_txn import LastBatch, TransactionFilter, is_last_batch_of_producer

INT64_MAX = 2**63 - 1

#: What happened to a batch.
DROPPED, VERBATIM, REWRITTEN = 0, 1, 2

# A map that knows no key and whose latest offset is -1 keeps every record: filtering
# through it only re-encodes (a control batch getting a delete horizon).
_KEEP_ALL = OffsetMap(64)


@dataclass
class BatchCounts:
    """How many batches were rewritten or dropped."""

    rewritten: int = 0
    dropped: int = 0


def records_section(chunk: memoryview, pos: int, header: BatchHeader) -> tuple:
    """(buffer, start, end) of a batch's records, decompressed if need be."""
    if header.compression == 0:
        return chunk, pos + BATCH_OVERHEAD, pos + header.size
    data = core_records.RecordBatch(chunk, pos, check_crc=False).records_data()
    return data, 0, len(data)


def control_type(chunk: memoryview, pos: int, header: BatchHeader) -> int:
    """A control batch's type (0 abort, 1 commit), -1 for an empty one."""
    if header.record_count == 0:
        return -1
    return core_records.RecordBatch(chunk, pos, check_crc=False).control_record_type()


def write_empty(out: bytearray, header_bytes: bytes | memoryview, header: BatchHeader) -> None:
    """Kafka's ``writeEmptyHeader``: the batch's offsets and producer fields, no records."""
    attributes = header.attributes & ~(ATTR_CODEC_MASK | ATTR_DELETE_HORIZON)
    write_batch(out, header_bytes, b"", attributes, header.max_timestamp, header.max_timestamp, 0)


class BatchCleaner:
    """Applies the rules of the module docstring to the batches of one clean pass."""

    def __init__(
        self,
        offset_map: OffsetMap,
        aborted: TransactionFilter,
        last_batches: dict[int, LastBatch],
        now_ms: int,
        delete_retention_ms: int,
    ) -> None:
        self._map = offset_map
        self._txn = aborted
        self._last_batches = last_batches
        self._now = now_ms
        self._new_horizon = min(now_ms + delete_retention_ms, INT64_MAX)
        self._scratch = bytearray()
        self.counts = BatchCounts()
        #: The earliest delete horizon of what was kept (tombstones, markers); None: none.
        self.earliest_horizon: int | None = None
        #: (producer id, offset) of each ABORT marker dropped, in offset order: their
        #: transactions must leave the ``.txnindex`` (see :meth:`Log.forget_aborted_transactions`).
        self.dropped_abort_markers: list[tuple[int, int]] = []

    def clean(self, chunk: memoryview, pos: int, header: BatchHeader, out: bytearray) -> int:
        """Append what compaction keeps of the batch at ``chunk[pos:]`` to ``out``; returns
        DROPPED, VERBATIM or REWRITTEN."""
        now = self._now
        horizon = header.base_timestamp if header.has_delete_horizon else None
        if header.is_control:
            kind = control_type(chunk, pos, header)
            if not self._txn.on_control_batch(header, kind):
                out += chunk[pos : pos + header.size]
                return VERBATIM
            if horizon is not None and horizon <= now:
                if kind == CONTROL_ABORT:  # gone, or kept as an empty batch: no marker left
                    self.dropped_abort_markers.append((header.producer_id, header.last_offset))
                return self._drop(out, chunk, pos, header)
            self._track_horizon(header, horizon if horizon is not None else self._new_horizon)
            if horizon is None:  # a marker no data needs: keep it delete.retention.ms longer
                self._rewrite(out, chunk, pos, header, _KEEP_ALL)
                return REWRITTEN
            out += chunk[pos : pos + header.size]
            return VERBATIM
        if self._txn.on_batch(header):  # an aborted transaction
            return self._drop(out, chunk, pos, header)
        section = records_section(chunk, pos, header)
        kept, tombstones, max_timestamp = self._filter(
            header, section, header.base_timestamp, horizon is None or now < horizon
        )
        if kept == 0:
            return self._drop(out, chunk, pos, header)
        if tombstones:
            self._track_horizon(header, horizon if horizon is not None else self._new_horizon)
            if horizon is None:
                self._rewrite(out, chunk, pos, header, self._map, section)
                return REWRITTEN
        if kept == header.record_count:
            out += chunk[pos : pos + header.size]
            return VERBATIM
        self._emit(
            out, chunk, pos, header, header.attributes, header.base_timestamp, max_timestamp, kept
        )
        return REWRITTEN

    # --- helpers ------------------------------------------------------------------------------

    def _filter(
        self,
        header: BatchHeader,
        section: tuple,
        base_timestamp: int,
        retain_tombstones: bool,
        offset_map: OffsetMap | None = None,
    ) -> tuple[int, int, int]:
        scratch = self._scratch
        del scratch[:]
        data, start, end = section
        return filter_records(
            offset_map if offset_map is not None else self._map,
            data,
            start,
            end,
            header.record_count,
            header.base_offset,
            header.base_timestamp,
            base_timestamp,
            retain_tombstones,
            scratch,
        )

    def _rewrite(
        self,
        out: bytearray,
        chunk: memoryview,
        pos: int,
        header: BatchHeader,
        offset_map: OffsetMap,
        section: tuple | None = None,
    ) -> None:
        """Filter the batch again with its timestamps re-based on a new delete horizon.

        Tombstones are retained: the first filter kept them, the horizon is ahead."""
        section = section if section is not None else records_section(chunk, pos, header)
        horizon = self._new_horizon
        kept, _, max_timestamp = self._filter(header, section, horizon, True, offset_map)
        attributes = header.attributes | ATTR_DELETE_HORIZON
        self._emit(out, chunk, pos, header, attributes, horizon, max_timestamp, kept)

    def _emit(
        self,
        out: bytearray,
        chunk: memoryview,
        pos: int,
        header: BatchHeader,
        attributes: int,
        base_timestamp: int,
        max_timestamp: int,
        kept: int,
    ) -> None:
        """Wrap the records in the scratch buffer in a batch like ``header`` (same codec)."""
        codec = header.compression
        payload = self._scratch if codec == 0 else compression.compress(codec, self._scratch)
        if header.timestamp_type == TIMESTAMP_LOG_APPEND_TIME:
            max_timestamp = header.max_timestamp  # every record's timestamp
        header_bytes = chunk[pos : pos + BATCH_OVERHEAD]
        write_batch(out, header_bytes, payload, attributes, base_timestamp, max_timestamp, kept)
        self.counts.rewritten += 1

    def _drop(self, out: bytearray, chunk: memoryview, pos: int, header: BatchHeader) -> int:
        if header.producer_id >= 0 and is_last_batch_of_producer(header, self._last_batches):
            write_empty(out, chunk[pos : pos + BATCH_OVERHEAD], header)
            return REWRITTEN
        self.counts.dropped += 1
        return DROPPED

    def _track_horizon(self, header: BatchHeader, horizon: int) -> None:
        # Only batches inside the map's range: the clean that the horizon triggers can then
        # really drop them (past the map, a record is kept whatever it is).
        if header.last_offset <= self._map.latest_offset:
            if self.earliest_horizon is None or horizon < self.earliest_horizon:
                self.earliest_horizon = horizon
