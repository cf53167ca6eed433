"""Retention: retention.ms and retention.bytes delete whole closed segments and move the
log start offset; nothing above the high watermark goes."""

from __future__ import annotations

import os

import pytest
from log_helpers import make_batch, read_all, segment_files

from pystream.config import LogConfig
from pystream.errors import OffsetOutOfRangeError
from pystream.storage.log import Log
from pystream.storage.retention import deletable_segments, largest_timestamp

BATCH = len(make_batch(3))
HOUR = 3_600_000


def open_log(tmp_path, **props: str) -> Log:
    config = LogConfig.from_properties(
        {"segment.bytes": str(BATCH * 2), "file.delete.delay.ms": "0", **props}
    )
    return Log.open(str(tmp_path / "t-0"), config, clock=lambda: 0)


def append_at(log: Log, *timestamps: int) -> None:
    for ts in timestamps:
        log.append(make_batch(3, timestamp=ts, tag=ts), leader_epoch=0)


def test_retention_ms_deletes_old_segments_and_moves_log_start(tmp_path) -> None:
    log = open_log(tmp_path, **{"retention.ms": str(HOUR)})
    append_at(log, 1_000, 2_000, 10 * HOUR, 10 * HOUR, 20 * HOUR)  # segments 0, 6, 12
    log.high_watermark = log.log_end_offset
    assert [s.base_offset for s in log.segments] == [0, 6, 12]
    now = 10 * HOUR + 2  # segment 0's newest record is ~10 h old; segment 6's is 0 h
    assert log.delete_old_segments(now) == 1
    assert log.log_start_offset == 6
    assert [s.base_offset for s in log.segments] == [6, 12]
    assert not os.path.exists(os.path.join(log.directory, "00000000000000000000.log"))
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0, 100)
    assert read_all(log)[0][0] == 6
    assert log.delete_old_segments(now) == 0  # idempotent


def test_retention_ms_of_the_whole_log_rolls_a_new_active_segment(tmp_path) -> None:
    log = open_log(tmp_path, **{"retention.ms": str(HOUR)})
    append_at(log, 1_000, 2_000, 3_000)  # segments 0 and 6 (active, one batch)
    log.high_watermark = log.log_end_offset
    assert log.delete_old_segments(5 * HOUR) == 2
    assert (log.log_start_offset, log.log_end_offset) == (9, 9)
    assert [(s.base_offset, s.size) for s in log.segments] == [(9, 0)]
    assert log.append(make_batch(1), leader_epoch=0).first_offset == 9
    assert read_all(log) == [(9, b"0-0.......")]


def test_nothing_above_the_high_watermark_is_deleted(tmp_path) -> None:
    log = open_log(tmp_path, **{"retention.ms": str(HOUR)})
    append_at(log, 1_000, 1_000, 1_000, 1_000, 1_000)  # segments 0, 6, 12
    log.high_watermark = 11  # segment 6 holds offsets up to 11: not fully replicated
    assert log.delete_old_segments(5 * HOUR) == 1
    assert [s.base_offset for s in log.segments] == [6, 12]
    log.high_watermark = 15
    assert log.delete_old_segments(5 * HOUR) == 2  # then everything, with a fresh active one
    assert [s.base_offset for s in log.segments] == [15]


def test_segment_without_timestamps_uses_its_mtime(tmp_path) -> None:
    log = open_log(tmp_path, **{"retention.ms": str(HOUR)})
    append_at(log, -1, -1)  # the first segment's records carry no timestamp
    first = log.segments[0]
    now = first.last_modified_ms + HOUR + 1
    append_at(log, now)  # a recent batch in the active segment
    log.high_watermark = log.log_end_offset
    assert first.max_timestamp == -1
    os.utime(first.log_path, ns=(0, (now - 2 * HOUR) * 1_000_000))
    assert largest_timestamp(first) == now - 2 * HOUR
    assert log.delete_old_segments(now) == 1
    assert log.log_start_offset == 6


def test_retention_bytes_keeps_at_least_the_limit(tmp_path) -> None:
    log = open_log(tmp_path, **{"retention.bytes": str(BATCH * 3), "retention.ms": "-1"})
    append_at(log, *range(7))  # segments 0, 6, 12 (full) and 18 (one batch): 7 batches
    log.high_watermark = log.log_end_offset
    assert log.size_in_bytes == 7 * BATCH
    # Deleting segment 0 leaves 5 batches, segment 6 too leaves 3: still >= the limit.
    assert log.delete_old_segments() == 2
    assert log.log_start_offset == 12
    assert log.size_in_bytes == 3 * BATCH
    assert log.delete_old_segments() == 0


def test_unlimited_retention_keeps_everything(tmp_path) -> None:
    log = open_log(tmp_path, **{"retention.bytes": "-1", "retention.ms": "-1"})
    append_at(log, *range(5))
    log.high_watermark = log.log_end_offset
    assert log.delete_old_segments(10**15) == 0
    assert log.log_start_offset == 0


def test_compacted_topic_only_deletes_below_the_log_start_offset(tmp_path) -> None:
    # Keyless records (make_batch): written while the topic was cleanup.policy=delete, as a
    # compacted log refuses them (Kafka's LogValidator), then switched to compact.
    log = open_log(tmp_path, **{"retention.ms": "1"})
    append_at(log, 1, 2, 3, 4, 5)
    log.update_config(LogConfig.from_properties({"cleanup.policy": "compact"}, log.config))
    log.high_watermark = log.log_end_offset
    assert log.delete_old_segments(10 * HOUR) == 0
    log.close()  # restart with a log-start-offset checkpoint of 7
    log = Log.open(log.directory, log.config, log_start_offset=7, had_clean_shutdown=True)
    log.high_watermark = log.log_end_offset
    assert log.delete_old_segments(10 * HOUR) == 1
    assert [s.base_offset for s in log.segments] == [6, 12]
    assert log.log_start_offset == 7


def test_delayed_file_removal(tmp_path) -> None:
    config = LogConfig.from_properties(
        {"segment.bytes": str(BATCH * 2), "file.delete.delay.ms": "500", "retention.ms": "10"}
    )
    log = Log.open(str(tmp_path / "t-0"), config, clock=lambda: 1_000)
    append_at(log, 1, 2, 3)
    log.high_watermark = log.log_end_offset
    assert log.delete_old_segments(1_000) == 2
    assert "00000000000000000000.log.deleted" in segment_files(log.directory)
    assert log.delete_pending_segments(1_499) == 0
    assert log.delete_pending_segments(1_500) == 2
    assert segment_files(log.directory) == [
        "00000000000000000009.index",
        "00000000000000000009.log",
        "00000000000000000009.timeindex",
    ]


def test_last_empty_segment_is_never_deletable(tmp_path) -> None:
    log = open_log(tmp_path)
    append_at(log, 1)
    log.roll()
    segments = log.segments
    everything = deletable_segments(segments, 100, log.log_end_offset, lambda s, n: True)
    assert everything == segments[:1]
