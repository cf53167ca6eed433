"""The leader epoch cache of one partition and its ``leader-epoch-checkpoint`` file.

An entry ``(epoch, start_offset)`` says that leader epoch ``epoch`` wrote its
first batch at ``start_offset``.  Followers use it (OffsetForLeaderEpoch) to
find where their log diverges from the leader's.  The file uses Kafka's
checkpoint format: ``0``, the count, then ``epoch start_offset`` lines; it is
rewritten atomically on every change, which is rare (once per leader change).
"""

from __future__ import annotations

import bisect
import os
import threading

from pystream.storage.checkpoints import CheckpointFile, CorruptCheckpointError

LEADER_EPOCH_CHECKPOINT = "leader-epoch-checkpoint"
UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1


def _parse_entry(fields: list[str]) -> tuple[int, int]:
    if len(fields) != 2:
        raise ValueError("expected 'epoch start_offset'")
    epoch, start_offset = int(fields[0]), int(fields[1])
    if epoch < 0 or start_offset < 0:
        raise ValueError("negative epoch or offset")
    return epoch, start_offset


class LeaderEpochCache:
    """Ordered ``(epoch, start_offset)`` entries, both strictly increasing, persisted on change."""

    def __init__(self, directory: str, entries: list[tuple[int, int]] | None = None) -> None:
        """Open the cache of a partition directory, reading the file unless ``entries`` given.

        Raises CorruptCheckpointError if the file is malformed or its entries
        are not increasing.
        """
        self._file: CheckpointFile[tuple[int, int]] = CheckpointFile(
            os.path.join(directory, LEADER_EPOCH_CHECKPOINT),
            lambda e: f"{e[0]} {e[1]}",
            _parse_entry,
        )
        # What the file holds (None: unknown), so that a change undone before it is
        # written -- a load's truncation then the same epoch assigned again -- costs no write.
        self._persisted: list[tuple[int, int]] | None = None
        if entries is None:
            entries = self._file.read()
            self._persisted = list(entries)
            for (e1, o1), (e2, o2) in zip(entries, entries[1:], strict=False):
                if not (e2 > e1 and o2 >= o1):
                    raise CorruptCheckpointError(
                        f"Malformed {self._file.path}: entries ({e1} {o1}) and ({e2} {o2}) "
                        "are not increasing"
                    )
        self._entries: list[tuple[int, int]] = list(entries)
        self._assign_lock = threading.Lock()

    @property
    def path(self) -> str:
        return self._file.path

    def entries(self) -> list[tuple[int, int]]:
        """A copy of the ``(epoch, start_offset)`` entries, oldest first."""
        return list(self._entries)

    @property
    def latest_epoch(self) -> int:
        """The newest epoch, or UNDEFINED_EPOCH (-1) when empty."""
        return self._entries[-1][0] if self._entries else UNDEFINED_EPOCH

    def assign(self, epoch: int, start_offset: int, *, durable: bool = True) -> bool:
        """Record that ``epoch`` starts at ``start_offset``; True if the cache changed.

        The latest epoch again at the same or a later offset is ignored (the
        common case: every append of the same leader).  Otherwise entries that
        the new one contradicts (same or higher epoch, or start offset at or
        past the new one) are dropped, as Kafka's LeaderEpochFileCache does.
        Without ``durable`` the file is not fsynced: the caller syncs the file system
        (``sync_filesystems``) before anything is appended at ``epoch``.
        """
        if epoch < 0 or start_offset < 0 or self._is_latest(epoch, start_offset):
            return False
        # A new topic's leader epoch is written from the thread that creates its logs while
        # the loop may take the leadership: one writer of the checkpoint at a time.
        with self._assign_lock:
            if self._is_latest(epoch, start_offset):
                return False
            entries = [(e, o) for e, o in self._entries if e < epoch and o < start_offset]
            entries.append((epoch, start_offset))
            self._entries = entries
            if entries != self._persisted:
                self.flush(durable=durable)
        return True

    def _is_latest(self, epoch: int, start_offset: int) -> bool:
        """The latest epoch again at the same or a later offset (nothing to record)."""
        if not self._entries:
            return False
        latest_epoch, latest_offset = self._entries[-1]
        return epoch == latest_epoch and start_offset >= latest_offset

    def epoch_for_offset(self, offset: int) -> int:
        """The epoch that wrote ``offset`` (the last entry starting at or before it), or -1."""
        i = bisect.bisect_right(self._entries, offset, key=lambda e: e[1]) - 1
        return self._entries[i][0] if i >= 0 else UNDEFINED_EPOCH

    def end_offset_for_epoch(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """``(epoch, end_offset)`` for OffsetForLeaderEpoch, with Kafka's semantics.

        The end offset of an epoch is the start offset of the next higher
        epoch, or ``log_end_offset`` for the latest epoch.  The returned epoch
        is the largest known epoch <= ``requested_epoch`` (the requested one if
        it is older than every entry).  Unknown (requested -1, or newer than
        every entry) gives ``(-1, -1)``.
        """
        if requested_epoch == UNDEFINED_EPOCH or not self._entries:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if requested_epoch == self.latest_epoch:
            return requested_epoch, log_end_offset
        higher = bisect.bisect_right(self._entries, requested_epoch, key=lambda e: e[0])
        if higher == len(self._entries):
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        end_offset = self._entries[higher][1]
        if higher == 0:
            return requested_epoch, end_offset
        return self._entries[higher - 1][0], end_offset

    def truncate_from_end(self, end_offset: int, *, persist: bool = True) -> None:
        """Drop entries starting at or after ``end_offset`` (the log was truncated there).

        Without ``persist`` only in memory: loading a log does that, since every load
        drops the entries past the log's end again (an empty partition's entry at 0 is
        dropped by each load and assigned again as it is led: no write at all)."""
        kept = [(e, o) for e, o in self._entries if o < end_offset]
        if kept != self._entries:
            self._entries = kept
            if persist:
                self.flush()

    def truncate_from_start(self, start_offset: int, *, persist: bool = True) -> None:
        """Forget epochs wholly below ``start_offset`` (log start moved); the one covering it
        now starts there."""
        i = bisect.bisect_right(self._entries, start_offset, key=lambda e: e[1]) - 1
        if i < 0:
            return
        kept = [(self._entries[i][0], start_offset), *self._entries[i + 1 :]]
        if kept != self._entries:
            self._entries = kept
            if persist:  # see truncate_from_end
                self.flush()

    def clear(self) -> None:
        """Drop every entry (the log was emptied)."""
        self._entries = []
        self.flush()

    def flush(self, *, durable: bool = True) -> None:
        """Write the entries to ``leader-epoch-checkpoint`` atomically (fsynced unless
        not ``durable``)."""
        self._file.write(self._entries, durable=durable)
        self._persisted = list(self._entries)
