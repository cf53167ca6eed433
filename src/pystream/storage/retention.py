"""Which closed segments retention may delete (Kafka's ``deletableSegments`` and predicates).

A predicate looks at one segment and the segment after it; segments are
considered oldest first and the scan stops at the first one the predicate
keeps.  A segment is only deletable when everything in it is below the high
watermark (never throw away what followers may not have), and the last
segment is never deleted while it is empty.  :class:`~pystream.storage.log.Log`
rolls a new active segment when every segment is deletable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pystream._core.segment import LogSegment

#: (segment, next segment or None) -> delete it?
SegmentPredicate = Callable[[LogSegment, LogSegment | None], bool]


def deletable_segments(
    segments: Sequence[LogSegment],
    high_watermark: int,
    log_end_offset: int,
    predicate: SegmentPredicate,
) -> list[LogSegment]:
    """The oldest segments, in order, for which ``predicate`` holds, stopping at the first
    that it keeps, that reaches past the high watermark, or that is the last and empty."""
    deletable: list[LogSegment] = []
    for i, segment in enumerate(segments):
        next_segment = segments[i + 1] if i + 1 < len(segments) else None
        if next_segment is not None:
            upper_bound, last_and_empty = next_segment.base_offset, False
        else:
            upper_bound, last_and_empty = log_end_offset, segment.size == 0
        if high_watermark < upper_bound or last_and_empty or not predicate(segment, next_segment):
            break
        deletable.append(segment)
    return deletable


def largest_timestamp(segment: LogSegment) -> int:
    """The newest record timestamp in a segment, or the file's mtime if it has none."""
    max_timestamp = segment.max_timestamp
    return max_timestamp if max_timestamp >= 0 else segment.last_modified_ms


def retention_ms_breached(now_ms: int, retention_ms: int) -> SegmentPredicate:
    """Delete segments whose newest record is older than ``retention.ms`` (-1: keep all)."""

    def predicate(segment: LogSegment, _next: LogSegment | None) -> bool:
        return retention_ms >= 0 and now_ms - largest_timestamp(segment) > retention_ms

    return predicate


def retention_size_breached(log_size: int, retention_bytes: int) -> SegmentPredicate:
    """Delete the oldest segments while the log stays at least ``retention.bytes`` big."""
    excess = log_size - retention_bytes
    enabled = retention_bytes >= 0 and excess >= 0

    def predicate(segment: LogSegment, _next: LogSegment | None) -> bool:
        nonlocal excess
        if enabled and excess - segment.size >= 0:
            excess -= segment.size
            return True
        return False

    return predicate


def log_start_offset_breached(log_start_offset: int) -> SegmentPredicate:
    """Delete segments wholly below the log start offset (moved by DeleteRecords)."""

    def predicate(_segment: LogSegment, next_segment: LogSegment | None) -> bool:
        return next_segment is not None and next_segment.base_offset <= log_start_offset

    return predicate
