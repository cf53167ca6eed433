"""Checks of what replication promises, for the replication and failover tests.

Two questions, each answered from evidence gathered outside the broker:

* **Delivery** (:func:`check_delivery`): given the records the producer had
  acknowledged (from its delivery reports: key, value, partition, offset) and the
  records a consumer read back at the end, which acknowledged records were lost,
  which were stored more than once, which came back at another offset than the one
  acknowledged, and which were stored out of the order they were produced in.
  Producers in these tests give every record a unique sequence number
  (:func:`record_key`), which is how production order is known.
* **Replica logs** (:func:`log_batches`, :func:`prefix_divergence`): the batches
  of one replica's log read straight from its segment files, and whether a
  follower's log is a prefix of the leader's (same batches: offsets, leader
  epoch and CRC) or where it diverges.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pystream._core import records as core_records
from pystream.errors import KafkaError

KEY_PREFIX = b"seq-"


def record_key(sequence: int) -> bytes:
    """The key of the record with production sequence ``sequence`` (unique per record)."""
    return b"%s%09d" % (KEY_PREFIX, sequence)


def record_value(sequence: int, size: int = 0) -> bytes:
    """A value naming ``sequence`` too (so a record is recognisable by either), padded to
    ``size`` bytes."""
    return (b"value-%09d" % sequence).ljust(size, b".")


def key_sequence(key: bytes | None) -> int | None:
    """The production sequence a :func:`record_key` carries (None: not such a key)."""
    if key is None or not key.startswith(KEY_PREFIX):
        return None
    return int(key[len(KEY_PREFIX) :])


@dataclass(frozen=True, order=True)
class StoredRecord:
    """A record where the broker put it: acknowledged there, or consumed from there."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def identity(self) -> tuple[bytes | None, bytes | None]:
        return self.key, self.value


@dataclass
class DeliveryReport:
    """What :func:`check_delivery` found; every list empty means the promise held."""

    # Acknowledged, but consumed nowhere.
    lost: list[StoredRecord] = field(default_factory=list)
    # Consumed at more than one position: every copy after the first (by partition, offset).
    duplicated: list[StoredRecord] = field(default_factory=list)
    # Neighbours in one partition (by offset) whose production sequences go backwards.
    reordered: list[tuple[StoredRecord, StoredRecord]] = field(default_factory=list)
    # (acknowledged, consumed): the record exists, but not at the acknowledged position.
    misplaced: list[tuple[StoredRecord, StoredRecord]] = field(default_factory=list)
    # Consumed, never acknowledged: legitimate only for sends that reported a failure.
    unacknowledged: list[StoredRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No acknowledged record lost, duplicated, misplaced or reordered."""
        return not (self.lost or self.duplicated or self.reordered or self.misplaced)

    def summary(self, limit: int = 5) -> str:
        """One line per kind of problem, with the first ``limit`` examples."""
        lines = []
        for name in ("lost", "duplicated", "reordered", "misplaced", "unacknowledged"):
            found = getattr(self, name)
            if found:
                lines.append(f"{name}: {len(found)}, e.g. {found[:limit]}")
        return "\n".join(lines) or "no problems"


def check_delivery(
    acknowledged: Iterable[StoredRecord],
    consumed: Iterable[StoredRecord],
    sequence: Callable[[StoredRecord], int | None] = lambda r: key_sequence(r.key),
) -> DeliveryReport:
    """Compare acknowledged records with the records consumed back (see the module doc).

    Records are identified by (key, value), unique per produced record.  ``sequence``
    gives a record's production order; within a partition it must grow with the offset.
    Records without one (None: not produced by the test's producer) are left out of the
    order check; they are ``unacknowledged`` anyway.
    """
    report = DeliveryReport()
    positions: dict[tuple[bytes | None, bytes | None], list[StoredRecord]] = defaultdict(list)
    for record in sorted(consumed):
        positions[record.identity].append(record)
    firsts_by_partition: dict[int, list[StoredRecord]] = defaultdict(list)
    for copies in positions.values():
        report.duplicated.extend(copies[1:])
        firsts_by_partition[copies[0].partition].append(copies[0])
    acked_identities = set()
    for acked in acknowledged:
        acked_identities.add(acked.identity)
        copies = positions.get(acked.identity)
        if not copies:
            report.lost.append(acked)
        elif all((c.partition, c.offset) != (acked.partition, acked.offset) for c in copies):
            report.misplaced.append((acked, copies[0]))
    report.unacknowledged = [
        copies[0] for identity, copies in positions.items() if identity not in acked_identities
    ]
    for records in firsts_by_partition.values():
        sequenced = [(r, s) for r in sorted(records) if (s := sequence(r)) is not None]
        for (before, first), (after, second) in itertools.pairwise(sequenced):
            if second < first:
                report.reordered.append((before, after))
    return report


# --- replica logs on disk --------------------------------------------------------------------
@dataclass(frozen=True)
class BatchId:
    """A batch as replication must copy it: same offsets, leader epoch and CRC everywhere."""

    base_offset: int
    last_offset: int
    leader_epoch: int
    crc: int


def log_batches(partition_dir: Path, verify_crc: bool = False) -> list[BatchId]:
    """The batches of one replica's log, from its segment files in offset order.

    Safe to call while the broker runs: a batch still being written at the tail
    (incomplete) ends the list.  ``verify_crc`` recomputes every batch's CRC (use it
    once the broker is quiet: a batch being written may not match yet).
    """
    batches: list[BatchId] = []
    for segment in sorted(partition_dir.glob("*.log")):  # names are zero-padded base offsets
        data = segment.read_bytes()
        position = 0
        while len(data) - position >= core_records.BATCH_OVERHEAD:
            try:
                header = core_records.read_batch_header(data, position)
            except KafkaError:
                if verify_crc:
                    raise
                break  # a header being written (a reader may see part of a write)
            if header.size > len(data) - position:
                break  # the tail batch is still being written
            if verify_crc:
                core_records.RecordBatch(data, position, check_crc=True)
            batches.append(
                BatchId(
                    header.base_offset,
                    header.last_offset,
                    header.partition_leader_epoch,
                    header.crc,
                )
            )
            position += header.size
    return batches


def prefix_divergence(leader: list[BatchId], follower: list[BatchId]) -> str | None:
    """None when ``follower`` is a prefix of (or equal to) ``leader``; else where it is not."""
    for index, batch in enumerate(follower):
        if index >= len(leader):
            return (
                f"the follower has {len(follower) - index} batches past the leader's end: {batch}"
            )
        if batch != leader[index]:
            return f"batch {index} differs: leader {leader[index]}, follower {batch}"
    return None
