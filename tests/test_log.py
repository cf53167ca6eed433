"""Log: one partition's append, read, roll, truncation, offsets and leader epochs."""

from __future__ import annotations

import os

import pytest
from crc32c import crc32c
from log_helpers import make_batch, read_all, read_via_fd, segment_files

from pystream._core import records as core_records
from pystream.config import LogConfig
from pystream.errors import (
    CorruptMessageError,
    InvalidRecordError,
    InvalidTimestampError,
    KafkaStorageError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    RecordListTooLargeError,
)
from pystream.storage.leader_epoch import LEADER_EPOCH_CHECKPOINT, LeaderEpochCache
from pystream.storage.log import (
    AppendOrigin,
    Log,
    OffsetsOutOfOrderError,
    UnexpectedAppendOffsetError,
    parse_topic_partition,
)


class FakeClock:
    """A settable millisecond clock (the Log's clock is injected, not mocked)."""

    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def open_log(tmp_path, clock=None, **props) -> Log:
    config = LogConfig.from_properties({k.replace("_", "."): v for k, v in props.items()})
    return Log.open(str(tmp_path / "topic-0"), config, clock=clock or FakeClock())


def fill(log: Log, batches: int, count: int = 3, epoch: int = 0, **kw) -> None:
    for i in range(batches):
        log.append(make_batch(count, tag=i, **kw), leader_epoch=epoch)


# --- append and read ------------------------------------------------------------------------


def test_append_assigns_offsets_and_reads_back(tmp_path) -> None:
    log = open_log(tmp_path)
    first = log.append(make_batch(3, tag=0, timestamp=500), leader_epoch=0)
    second = log.append(bytes(make_batch(2, tag=1, timestamp=700)), leader_epoch=0)
    assert (first.first_offset, first.last_offset, first.record_count) == (0, 2, 3)
    assert (second.first_offset, second.last_offset) == (3, 4)
    assert first.max_timestamp == 502 and first.offset_of_max_timestamp == 2
    assert first.log_append_time_ms == -1
    assert first.size == len(make_batch(3, tag=0, timestamp=500))
    assert log.log_end_offset == 5
    assert read_all(log) == [
        (0, b"0-0......."),
        (1, b"0-1......."),
        (2, b"0-2......."),
        (3, b"1-0......."),
        (4, b"1-1......."),
    ]
    assert segment_files(log.directory) == [
        "00000000000000000000.index",
        "00000000000000000000.log",
        "00000000000000000000.timeindex",
    ]
    assert parse_topic_partition(os.path.basename(log.directory)) == ("topic", 0)


def test_writable_buffer_is_patched_in_place(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 1)
    buffer = make_batch(2)
    log.append(buffer, leader_epoch=7)
    header = core_records.read_batch_header(buffer)
    assert header.base_offset == 3
    assert header.partition_leader_epoch == 7
    # The bytes on disk are the patched buffer, byte for byte.
    assert read_via_fd(log, 3, 1 << 20) == bytes(buffer)


def test_read_through_fd_and_view_agree(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 5)
    fetched = log.read(4, 1 << 20)
    assert fetched.segment_base_offset == 0
    assert fetched.size > 0
    assert bytes(fetched.view()) == read_via_fd(log, 4, 1 << 20)
    # The first batch returned contains the fetch offset.
    assert core_records.read_batch_header(bytes(fetched.view())).base_offset == 3


def test_read_bounds(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 4)  # offsets 0..11 in batches of 3
    batch_size = len(make_batch(3))
    with pytest.raises(OffsetOutOfRangeError, match="13"):
        log.read(13, 100)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100)
    empty = log.read(12, 100)
    assert empty.records is None and empty.size == 0 and bytes(empty.view()) == b""
    # max_bytes is a limit on whole batches, but one batch always comes back.
    assert log.read(0, 1).size == batch_size
    assert log.read(0, batch_size * 2 + 5).size == batch_size * 2
    # Without min_one_batch a batch that does not fit gives nothing.
    assert log.read(0, 1, min_one_batch=False).records is None
    # max_offset (e.g. the high watermark) is exclusive and cuts at batch boundaries.
    assert log.read(0, 1 << 20, max_offset=6).size == batch_size * 2
    assert log.read(6, 1 << 20, max_offset=6).records is None
    assert log.read(0, 1 << 20, max_offset=100).size == batch_size * 4


def test_high_watermark_is_clamped(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 2)
    assert log.high_watermark == 0
    log.high_watermark = 100
    assert log.high_watermark == 6
    log.high_watermark = -5
    assert log.high_watermark == 0


def test_log_append_time_stamps_batches(tmp_path) -> None:
    clock = FakeClock(5_000_000)
    log = open_log(tmp_path, clock, message_timestamp_type="LogAppendTime")
    info = log.append(make_batch(3, timestamp=10), leader_epoch=0)
    assert info.log_append_time_ms == 5_000_000
    assert info.max_timestamp == 5_000_000
    assert info.offset_of_max_timestamp == 0
    stored = read_via_fd(log, 0, 1 << 20)
    header = core_records.validate_batch(stored)  # CRC recomputed correctly
    assert header.timestamp_type == 1
    assert [r.timestamp for r in core_records.iter_records(stored)] == [5_000_000] * 3


def test_create_time_window(tmp_path) -> None:
    clock = FakeClock(1_000_000)
    log = open_log(
        tmp_path,
        clock,
        message_timestamp_before_max_ms="1000",
        message_timestamp_after_max_ms="500",
    )
    log.append(make_batch(1, timestamp=999_500), leader_epoch=0)
    with pytest.raises(InvalidTimestampError, match="message.timestamp.before.max.ms"):
        log.append(make_batch(1, timestamp=998_000), leader_epoch=0)
    with pytest.raises(InvalidTimestampError):
        log.append(make_batch(1, timestamp=1_000_600), leader_epoch=0)
    assert log.log_end_offset == 1


# --- compression.type ----------------------------------------------------------------------


def _stored_batch(log: Log, base_offset: int) -> bytes:
    data = bytes(read_via_fd(log, base_offset, 1 << 20))
    for batch in core_records.iter_batches(data):
        if batch.header.base_offset == base_offset:
            return data[batch.position : batch.position + batch.header.size]
    raise AssertionError(f"no batch at {base_offset}")


def test_broker_compression_type_recompresses(tmp_path) -> None:
    # The broker's compression.type is every topic's default (Kafka's synonym).
    config = LogConfig.from_broker_properties({"compression.type": "lz4"})
    log = Log.open(str(tmp_path / "t-0"), config, clock=FakeClock())
    gzip = core_records.build_batch([(1_000 + i, b"k", b"v" * 50) for i in range(3)], 1)
    info = log.append(gzip, leader_epoch=0)
    stored = _stored_batch(log, 0)
    assert core_records.validate_batch(stored).compression == core_records.COMPRESSION_LZ4
    assert info.size == len(stored)
    assert [r.offset for r in core_records.iter_records(stored)] == [0, 1, 2]
    # Already lz4: the producer's bytes as sent (offsets and leader epoch aside).
    lz4 = core_records.build_batch([(1_000, b"k", b"v" * 50)], core_records.COMPRESSION_LZ4)
    log.append(lz4, leader_epoch=0)
    assert _stored_batch(log, 3)[16:] == lz4[16:]


@pytest.mark.parametrize("level,xfl", [("1", 4), ("9", 2)])
def test_compression_gzip_level(tmp_path, level: str, xfl: int) -> None:
    log = open_log(tmp_path, compression_type="gzip", compression_gzip_level=level)
    log.append(make_batch(20, value_size=200), leader_epoch=0)
    stored = _stored_batch(log, 0)
    assert core_records.read_batch_header(stored).compression == core_records.COMPRESSION_GZIP
    assert stored[61 + 8] == xfl  # gzip header XFL: 4 = fastest, 2 = best compression


def test_recompressed_batch_over_max_message_bytes_is_refused(tmp_path) -> None:
    log = open_log(tmp_path, compression_type="uncompressed", max_message_bytes="2000")
    squeezed = core_records.build_batch([(1_000, b"k", bytes(200))] * 30, 4)
    assert len(squeezed) < 2000
    with pytest.raises(MessageTooLargeError, match="compression.type=uncompressed"):
        log.append(squeezed, leader_epoch=0)
    assert log.log_end_offset == 0


# --- bad input ------------------------------------------------------------------------------


def _bad_inputs() -> dict[str, tuple[bytes, type]]:
    good = make_batch(3)
    wrong_crc = bytearray(good)
    wrong_crc[-1] ^= 0xFF
    magic_3 = bytearray(good)
    magic_3[16] = 3
    magic_1 = bytearray(good)
    magic_1[16] = 1
    past_buffer = bytearray(good)
    past_buffer[8:12] = (len(good) + 100).to_bytes(4, "big")
    truncated = good[:-5]
    bad_count = bytearray(good)
    bad_count[57:61] = (5).to_bytes(4, "big")  # header says 5 records, last delta says 3
    bad_count[17:21] = crc32c(bytes(bad_count[21:])).to_bytes(4, "big")  # only the count is wrong
    return {
        "wrong crc": (bytes(wrong_crc), CorruptMessageError),
        "unknown magic": (bytes(magic_3), CorruptMessageError),
        "old magic": (bytes(magic_1), InvalidRecordError),
        "length past buffer": (bytes(past_buffer), CorruptMessageError),
        "truncated": (bytes(truncated), CorruptMessageError),
        "inconsistent count": (bytes(bad_count), InvalidRecordError),
        "two batches from a client": (bytes(good + good), InvalidRecordError),
        "empty": (b"", InvalidRecordError),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_input_is_rejected_and_nothing_appended(tmp_path, case: str) -> None:
    data, error = _bad_inputs()[case]
    log = open_log(tmp_path)
    fill(log, 1)
    before = read_via_fd(log, 0, 1 << 20)
    with pytest.raises(error) as info:
        log.append(bytearray(data), leader_epoch=0)
    assert info.value.error_code == error.error_code
    assert log.log_end_offset == 3
    assert log.active_segment.size == len(before)
    assert read_via_fd(log, 0, 1 << 20) == before
    log.append(make_batch(1), leader_epoch=0)  # the log still works
    assert log.log_end_offset == 4


def test_batch_over_max_message_bytes(tmp_path) -> None:
    log = open_log(tmp_path, max_message_bytes="200")
    with pytest.raises(MessageTooLargeError, match="max.message.bytes"):
        log.append(make_batch(1, value_size=300), leader_epoch=0)
    assert log.log_end_offset == 0 and log.size_in_bytes == 0


def test_append_over_segment_bytes(tmp_path) -> None:
    log = open_log(tmp_path, segment_bytes="200")
    with pytest.raises(RecordListTooLargeError, match="segment.bytes"):
        log.append(make_batch(1, value_size=300), leader_epoch=0)
    assert log.log_end_offset == 0


def test_coordinator_appends_several_batches(tmp_path) -> None:
    log = open_log(tmp_path)
    batches = make_batch(2) + make_batch(3)
    info = log.append(batches, leader_epoch=1, origin=AppendOrigin.COORDINATOR)
    assert (info.first_offset, info.last_offset, info.record_count) == (0, 4, 5)
    assert [o for o, _ in read_all(log)] == [0, 1, 2, 3, 4]


# --- rolling --------------------------------------------------------------------------------


def test_roll_on_segment_bytes(tmp_path) -> None:
    batch_size = len(make_batch(3))
    log = open_log(tmp_path, segment_bytes=str(batch_size * 3))
    fill(log, 7)
    assert [s.base_offset for s in log.segments] == [0, 9, 18]
    assert [s.size for s in log.segments] == [batch_size * 3, batch_size * 3, batch_size]
    assert [o for o, _ in read_all(log)] == list(range(21))
    # A read that starts in an older segment stays within it.
    assert log.read(4, 1 << 20).segment_base_offset == 0
    assert log.read(10, 1 << 20).segment_base_offset == 9


def test_roll_on_segment_ms_uses_record_timestamps(tmp_path) -> None:
    clock = FakeClock()
    log = open_log(tmp_path, clock, segment_ms="1000")
    log.append(make_batch(1, timestamp=10_000), leader_epoch=0)
    log.append(make_batch(1, timestamp=11_000), leader_epoch=0)  # waited exactly 1000: no roll
    assert len(log.segments) == 1
    log.append(make_batch(1, timestamp=11_001), leader_epoch=0)
    assert [s.base_offset for s in log.segments] == [0, 2]


def test_roll_on_full_index(tmp_path) -> None:
    # Every batch after the first gets an index entry; 3 entries fill a 24-byte index.
    log = open_log(tmp_path, segment_index_bytes="24", index_interval_bytes="0")
    fill(log, 6, count=1)
    assert len(log.segments) >= 2
    assert all(s.offset_index.entries <= 3 for s in log.segments)
    assert [o for o, _ in read_all(log)] == list(range(6))


def test_explicit_roll_keeps_an_empty_active_segment(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 1)
    rolled = log.roll()
    assert rolled.base_offset == 3 and log.roll() is rolled
    fill(log, 1)
    assert [s.base_offset for s in log.segments] == [0, 3]


def test_follower_append_far_ahead_rolls_for_relative_offsets(tmp_path) -> None:
    log = open_log(tmp_path)
    log.append_as_follower(make_batch(1))
    far = 2**31 + 10
    log.append_as_follower(make_batch(1, base_offset=far))
    assert [s.base_offset for s in log.segments] == [0, far]
    assert log.log_end_offset == far + 1


def test_follower_append_far_ahead_replaces_an_empty_segment(tmp_path) -> None:
    log = open_log(tmp_path)
    far = 2**31 + 10
    log.append_as_follower(make_batch(2, base_offset=far))
    assert [s.base_offset for s in log.segments] == [far]  # no empty segment left behind
    assert segment_files(log.directory)[1] == f"{far:020d}.log"
    assert log.log_start_offset == 0
    assert read_all(log) == [(far, b"0-0......."), (far + 1, b"0-1.......")]


# --- follower appends -----------------------------------------------------------------------


def test_append_as_follower_keeps_offsets_and_learns_epochs(tmp_path) -> None:
    log = open_log(tmp_path)
    first = make_batch(2, base_offset=0)
    core_records.set_partition_leader_epoch(first, 3)
    second = make_batch(2, base_offset=5)  # a gap, as after compaction on the leader
    core_records.set_partition_leader_epoch(second, 4)
    info = log.append_as_follower(first + second)
    assert (info.first_offset, info.last_offset) == (0, 6)
    assert log.log_end_offset == 7
    assert [o for o, _ in read_all(log)] == [0, 1, 5, 6]
    assert log.leader_epoch_cache.entries() == [(3, 0), (4, 5)]
    with pytest.raises(UnexpectedAppendOffsetError, match="truncate"):
        log.append_as_follower(make_batch(1, base_offset=6))
    with pytest.raises(OffsetsOutOfOrderError):
        log.append_as_follower(make_batch(2, base_offset=9) + make_batch(1, base_offset=9))
    bad = make_batch(1, base_offset=7)
    bad[-1] ^= 1
    with pytest.raises(CorruptMessageError):
        log.append_as_follower(bad)
    assert log.log_end_offset == 7
    assert log.append_as_follower(b"").record_count == 0


# --- truncation -----------------------------------------------------------------------------


def test_truncate_to_batch_boundary_and_continue(tmp_path) -> None:
    batch_size = len(make_batch(3))
    log = open_log(tmp_path, segment_bytes=str(batch_size * 2), file_delete_delay_ms="0")
    fill(log, 5, epoch=1)
    log.append(make_batch(3, tag=9), leader_epoch=2)  # offsets 15..17, epoch 2
    log.high_watermark = 18
    assert log.truncate_to(6) is True
    assert log.log_end_offset == 6 and log.high_watermark == 6
    assert [s.base_offset for s in log.segments] == [0, 6]
    assert log.leader_epoch_cache.entries() == [(1, 0)]
    assert log.truncate_to(100) is False
    info = log.append(make_batch(1), leader_epoch=3)
    assert info.first_offset == 6
    assert [o for o, _ in read_all(log)] == list(range(7))
    assert log.leader_epoch_cache.entries() == [(1, 0), (3, 6)]


def test_truncate_inside_a_batch_drops_it_whole(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 3)
    log.truncate_to(4)
    assert log.log_end_offset == 3
    assert [o for o, _ in read_all(log)] == [0, 1, 2]
    log.close()
    reopened = Log.open(log.directory, log.config, had_clean_shutdown=True)
    assert reopened.log_end_offset == 3


def test_truncate_below_first_segment_restarts_the_log(tmp_path) -> None:
    batch_size = len(make_batch(3))
    log = open_log(tmp_path, segment_bytes=str(batch_size), file_delete_delay_ms="0")
    fill(log, 3)
    log.high_watermark = 9
    log.delete_records_before(6)
    assert log.segments[0].base_offset == 6
    log.truncate_to(2)
    assert (log.log_start_offset, log.log_end_offset) == (2, 2)
    assert [s.base_offset for s in log.segments] == [2]
    assert log.append(make_batch(1), leader_epoch=0).first_offset == 2


def test_truncate_fully_and_start_at(tmp_path) -> None:
    log = open_log(tmp_path, file_delete_delay_ms="0")
    fill(log, 3)
    log.truncate_fully_and_start_at(100)
    assert (log.log_start_offset, log.log_end_offset, log.high_watermark) == (100, 100, 100)
    assert segment_files(log.directory) == [
        "00000000000000000100.index",
        "00000000000000000100.log",
        "00000000000000000100.timeindex",
    ]
    assert log.leader_epoch_cache.entries() == []
    assert log.append(make_batch(1), leader_epoch=0).first_offset == 100


def test_deleted_segments_wait_for_file_delete_delay(tmp_path) -> None:
    clock = FakeClock(0)
    batch_size = len(make_batch(3))
    log = open_log(tmp_path, clock, segment_bytes=str(batch_size), file_delete_delay_ms="1000")
    fill(log, 3)
    held = log.read(0, 1 << 20)  # an in-flight fetch of the first segment
    log.truncate_to(3)
    names = segment_files(log.directory)
    assert "00000000000000000003.log.deleted" not in names  # segment 3 is the active one
    assert "00000000000000000006.log.deleted" in names
    log.high_watermark = 3
    log.delete_records_before(3)
    assert "00000000000000000000.log.deleted" in segment_files(log.directory)
    # The in-flight fetch can still send offset 0's batch from its file descriptor.
    assert os.pread(held.records.fd, 8, held.records.position) == bytes(8)
    assert log.delete_pending_segments(999) == 0
    assert log.delete_pending_segments(1000) == 2
    assert not any(n.endswith(".deleted") for n in segment_files(log.directory))


# --- delete records, list offsets -----------------------------------------------------------


def test_delete_records_before(tmp_path) -> None:
    batch_size = len(make_batch(3))
    log = open_log(tmp_path, segment_bytes=str(batch_size * 2), file_delete_delay_ms="0")
    fill(log, 5)  # segments [0, 6, 12], LEO 15
    with pytest.raises(OffsetOutOfRangeError, match="high watermark"):
        log.delete_records_before(1)
    log.high_watermark = 15
    assert log.delete_records_before(7) == 7
    assert log.log_start_offset == 7
    assert [s.base_offset for s in log.segments] == [6, 12]
    with pytest.raises(OffsetOutOfRangeError):
        log.read(6, 100)
    assert read_all(log)[0][0] == 7
    assert log.delete_records_before(3) == 7  # never moves backwards
    assert log.fetch_offset_by_timestamp(-2).offset == 7
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_records_before(16)


def test_fetch_offset_by_timestamp(tmp_path) -> None:
    batch_size = len(make_batch(3))
    log = open_log(tmp_path, segment_bytes=str(batch_size * 2))
    log.append(make_batch(3, timestamp=100), leader_epoch=1)  # 0..2 at 100..102
    log.append(make_batch(3, timestamp=300), leader_epoch=1)  # 3..5 at 300..302
    log.append(make_batch(3, timestamp=200), leader_epoch=2)  # 6..8 at 200..202
    earliest = log.fetch_offset_by_timestamp(-2)
    latest = log.fetch_offset_by_timestamp(-1)
    assert (earliest.offset, earliest.leader_epoch) == (0, 1)
    assert (latest.offset, latest.leader_epoch) == (9, 2)
    maximum = log.fetch_offset_by_timestamp(-3)
    assert (maximum.timestamp, maximum.offset) == (302, 5)
    assert log.fetch_offset_by_timestamp(101).offset == 1  # the exact record inside a batch
    assert log.fetch_offset_by_timestamp(150).offset == 3
    found = log.fetch_offset_by_timestamp(201)
    assert (found.offset, found.timestamp) == (3, 300)  # first offset with a timestamp >= 201
    assert log.fetch_offset_by_timestamp(303) is None


# --- flush, epochs, close -------------------------------------------------------------------


def test_flush_advances_the_recovery_point(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 2)
    assert log.recovery_point == 0 and log.unflushed_messages == 6
    log.flush(up_to_offset=3)
    assert log.recovery_point == 3
    log.flush()
    assert log.recovery_point == 6 and log.unflushed_messages == 0


def test_flush_messages_policy(tmp_path) -> None:
    log = open_log(tmp_path, flush_messages="5")
    fill(log, 1)
    assert log.recovery_point == 0
    fill(log, 1)
    assert log.recovery_point == 6


def test_leader_epochs_are_assigned_on_append_and_persisted(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 2, epoch=0)
    fill(log, 1, epoch=0)
    fill(log, 1, epoch=3)
    fill(log, 1, epoch=5)
    assert log.leader_epoch_cache.entries() == [(0, 0), (3, 9), (5, 12)]
    assert log.latest_epoch == 5
    assert log.end_offset_for_epoch(0) == (0, 9)
    assert log.end_offset_for_epoch(2) == (0, 9)  # unknown epoch: the one before it
    assert log.end_offset_for_epoch(5) == (5, 15)
    assert log.end_offset_for_epoch(6) == (-1, -1)
    with open(os.path.join(log.directory, LEADER_EPOCH_CHECKPOINT)) as f:
        assert f.read() == "0\n3\n0 0\n3 9\n5 12\n"


def test_leader_epoch_cache_semantics(tmp_path) -> None:
    cache = LeaderEpochCache(str(tmp_path))
    assert cache.end_offset_for_epoch(0, 10) == (-1, -1)
    assert cache.assign(2, 10) and not cache.assign(2, 15) and not cache.assign(-1, 20)
    assert cache.assign(4, 20)
    assert cache.end_offset_for_epoch(1, 30) == (1, 10)  # older than every entry
    assert cache.end_offset_for_epoch(3, 30) == (2, 20)
    assert cache.end_offset_for_epoch(-1, 30) == (-1, -1)
    assert cache.epoch_for_offset(15) == 2 and cache.epoch_for_offset(5) == -1
    cache.assign(3, 15)  # conflicts with (4, 20): Kafka drops the contradicted entry
    assert cache.entries() == [(2, 10), (3, 15)]
    cache.truncate_from_start(12)
    assert cache.entries() == [(2, 12), (3, 15)]
    cache.truncate_from_end(15)
    assert cache.entries() == [(2, 12)]
    assert LeaderEpochCache(str(tmp_path)).entries() == [(2, 12)]


def test_closed_log_refuses_work(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 1)
    log.close()
    log.close()  # idempotent
    with pytest.raises(KafkaStorageError, match="closed"):
        log.append(make_batch(1), leader_epoch=0)


def test_clean_reopen_keeps_everything(tmp_path) -> None:
    batch_size = len(make_batch(3))
    log = open_log(tmp_path, segment_bytes=str(batch_size * 2))
    fill(log, 5, epoch=2)
    expected = read_all(log)
    log.flush()
    log.close()
    reopened = Log.open(log.directory, log.config, recovery_point=15, had_clean_shutdown=True)
    assert reopened.log_end_offset == 15 and reopened.recovery_point == 15
    assert read_all(reopened) == expected
    assert reopened.leader_epoch_cache.entries() == [(2, 0)]
    assert reopened.append(make_batch(1), leader_epoch=2).first_offset == 15


def test_delete_removes_the_directory(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 1)
    log.delete()
    assert not os.path.exists(log.directory)
