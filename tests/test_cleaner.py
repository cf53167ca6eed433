"""The log cleaner on real partition directories: per-key semantics, tombstones, codecs,
merging, transactions and producers, the manager's choices, and recovery of every step of
an interrupted swap.  (Crash safety under SIGKILL: test_cleaner_crash.py; real brokers and
clients: test_cleaner_broker.py.)"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pystream._core import records as R
from pystream.client._fast import decode_records
from pystream.config import LogConfig
from pystream.storage.cleaner import Cleaner, CleanerConfig, LogCleaner
from pystream.storage.cleaner_io import CleanAborted
from pystream.storage.cleaner_manager import CLEANER_OFFSET_CHECKPOINT, LogCleanerManager
from pystream.storage.log import AppendOrigin, Log
from pystream.storage.log_manager import LogManager

NOW = 1_700_000_000_000


# ---------------------------------------------------------------- helpers


@dataclass
class History:
    """Everything appended to a log: offset -> (key, value)."""

    records: dict[int, tuple[bytes | None, bytes | None]] = field(default_factory=dict)

    def latest(self, below: int | None = None) -> dict[bytes, int]:
        """key -> offset of its newest record (below ``below``)."""
        out: dict[bytes, int] = {}
        for offset, (key, _) in sorted(self.records.items()):
            if key is not None and (below is None or offset < below):
                out[key] = offset
        return out

    def live(self) -> dict[bytes, bytes]:
        """key -> newest value, for keys whose newest record is not a tombstone."""
        return {
            k: self.records[o][1]  # type: ignore[misc]
            for k, o in self.latest().items()
            if self.records[o][1] is not None
        }


def open_log(path: Path, **props: str) -> Log:
    config = LogConfig.from_properties(
        {"cleanup.policy": "compact", "segment.bytes": "1024", **props}
    )
    return Log.open(str(path / "topic-0"), config)


def append(
    log: Log,
    history: History,
    records: list[tuple[bytes | None, bytes | None]],
    *,
    per_batch: int = 1,
    codec: int = 0,
    timestamp: int = NOW - 60_000,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Append ``records`` (key, value) in batches of ``per_batch``; the HW follows the LEO."""
    for i in range(0, len(records), per_batch):
        chunk = records[i : i + per_batch]
        batch = R.build_batch(
            [(timestamp + j, k, v, headers or []) for j, (k, v) in enumerate(chunk)],
            compression=codec,
        )
        info = log.append(bytearray(batch), leader_epoch=0)
        for j, record in enumerate(chunk):
            history.records[info.first_offset + j] = record
    log.high_watermark = log.log_end_offset


def updates(n: int, keys: int, *, seed: int = 1, tombstones: float = 0.0) -> list:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = b"key-%03d" % rng.randrange(keys)
        value = None if rng.random() < tombstones else b"value-%d-" % i + b"x" * rng.randrange(40)
        out.append((key, value))
    return out


def read_log(log: Log, read_committed: bool = False) -> list[tuple[int, Any, Any]]:
    """Every data record a consumer would get, via Log.read and pystream's consumer
    decoder (control batches skipped; ``read_committed``: aborted transactions too, given
    the aborted transactions a Fetch would list, ``Log.aborted_transactions``)."""
    out = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        fetched = log.read(offset, 1 << 20)
        if fetched.records is None:
            break
        aborted = None
        if read_committed:
            aborted = [
                (t.producer_id, t.first_offset)
                for t in log.aborted_transactions(offset, log.log_end_offset)
            ]
        records, offset, batches = decode_records(
            bytes(fetched.view()), "t", 0, offset, aborted=aborted
        )
        assert batches, f"no whole batch at offset {offset}"
        out.extend((r.offset, r.key, r.value) for r in records)
    return out


def batch_headers(log: Log) -> list[R.BatchHeader]:
    headers = []
    for segment in log.segments:
        for position in segment.batches():
            with segment.view(position.position, position.size) as view:
                headers.append(R.read_batch_header(view))
    return headers


def check_log(log: Log, history: History, cleaned_below: int) -> list:
    """What compaction promises, checked on what a consumer reads:

    * every record read is one that was appended, at its offset; offsets increase;
    * every key's newest record is still there (tombstones: unless deleted), and all
      newest live values are readable;
    * below ``cleaned_below`` no record has a newer one with the same key there.
    """
    records = read_log(log)
    offsets = [o for o, _, _ in records]
    assert offsets == sorted(set(offsets))
    for offset, key, value in records:
        assert history.records[offset] == (key, value)
    present = set(offsets)
    latest = history.latest()
    for key, offset in latest.items():
        if history.records[offset][1] is not None:
            assert offset in present, f"newest record of {key!r} at {offset} is gone"
    latest_below = history.latest(below=cleaned_below)
    for offset, key, _ in records:
        if offset < cleaned_below and key is not None:
            assert latest_below[key] == offset, f"{key!r} at {offset} was superseded"
    return records


def cleaner(**config: object) -> Cleaner:
    return Cleaner(CleanerConfig(**config))  # type: ignore[arg-type]


# ---------------------------------------------------------------- per-key semantics


def test_keeps_only_the_newest_record_per_key_at_its_offset(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    history = History()
    append(log, history, updates(600, 40, seed=3), per_batch=5)
    active = log.active_segment.base_offset
    size_before = log.size_in_bytes
    result = cleaner().clean(log, now_ms=NOW)
    assert result.end_offset == active
    records = check_log(log, history, active)
    assert len([r for r in records if r[0] < active]) <= 40
    assert log.size_in_bytes < size_before / 3
    assert log.log_end_offset == max(history.records) + 1
    # Offsets never change: every surviving record reads back at its own offset.
    for offset, key, value in records[:10]:
        fetched = log.read(offset, 1)
        first = next(R.iter_batches(bytes(fetched.view())))
        assert (offset, key, value) in [(r.offset, r.key, r.value) for r in first]


def test_headers_and_log_append_time_survive_rewrites(tmp_path: Path) -> None:
    log = open_log(tmp_path, **{"message.timestamp.type": "LogAppendTime"})
    history = History()
    append(
        log,
        history,
        [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")] * 20,
        per_batch=3,
        headers=[("h", b"v")],
    )
    stamped = {h.base_offset: h.max_timestamp for h in batch_headers(log)}
    cleaner().clean(log, now_ms=NOW)
    check_log(log, history, log.active_segment.base_offset)
    for header in batch_headers(log):
        assert header.max_timestamp == stamped[header.base_offset]
        assert header.timestamp_type == R.TIMESTAMP_LOG_APPEND_TIME
    for segment in log.segments:
        for position in segment.batches():
            with segment.view(position.position, position.size) as view:
                for record in R.iter_records(view):
                    assert record.headers == [("h", b"v")]


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_compressed_batches_are_rewritten_with_their_codec(tmp_path: Path, codec: int) -> None:
    log = open_log(tmp_path, **{"segment.bytes": "2048"})
    history = History()
    append(log, history, updates(400, 15, seed=codec), per_batch=8, codec=codec)
    cleaner().clean(log, now_ms=NOW)
    check_log(log, history, log.active_segment.base_offset)
    headers = batch_headers(log)
    assert {h.compression for h in headers if h.record_count} == {codec}
    for segment in log.segments:
        assert segment.recover() == 0  # every batch passes the CRC check


def test_batches_larger_than_the_io_buffer(tmp_path: Path) -> None:
    log = open_log(tmp_path, **{"segment.bytes": str(4 << 20), "max.message.bytes": str(2 << 20)})
    history = History()
    big = [(b"k%d" % (i % 3), b"%d" % i + b"x" * 100_000) for i in range(30)]
    append(log, history, big, per_batch=10)  # 1 MB batches through a 64 KB buffer
    log.roll()
    result = cleaner(io_buffer_size=128 * 1024).clean(log, now_ms=NOW)
    assert result.stats.batches_rewritten == 1
    records = check_log(log, history, log.active_segment.base_offset)
    assert [o for o, _, _ in records] == [27, 28, 29]


def test_keyless_records_are_dropped_from_the_cleaned_section(tmp_path: Path) -> None:
    # A compacted log refuses keyless records (Kafka's LogValidator); they get there as in
    # Kafka: written while the topic was cleanup.policy=delete, then switched to compact.
    log = open_log(tmp_path, **{"cleanup.policy": "delete"})
    history = History()
    append(log, history, [(None, b"no key"), (b"k", b"1")] * 30, per_batch=2)
    log.update_config(LogConfig.from_properties({"cleanup.policy": "compact"}, log.config))
    active = log.active_segment.base_offset
    cleaner().clean(log, now_ms=NOW)
    records = read_log(log)
    assert [r for r in records if r[0] < active and r[1] is None] == []
    assert all(history.records[o] == (k, v) for o, k, v in records)


# ---------------------------------------------------------------- tombstones


def test_tombstones_go_after_delete_retention(tmp_path: Path) -> None:
    log = open_log(tmp_path, **{"delete.retention.ms": "60000"})
    history = History()
    append(log, history, updates(300, 20, seed=5))
    append(log, history, [(b"key-%03d" % i, None) for i in range(0, 20, 2)])  # delete half
    append(log, history, [(b"filler-%d" % i, b"f" * 60) for i in range(40)])  # roll past them
    first = cleaner().clean(log, now_ms=NOW)
    tombstone_offsets = [o for o, (_, v) in history.records.items() if v is None]
    kept = {o for o, _, _ in read_log(log)}
    # First clean: superseded values of deleted keys go, the newest tombstones stay ...
    assert all(history.latest()[k] in kept for k in (b"key-%03d" % i for i in range(0, 20, 2)))
    assert first.earliest_horizon_ms == NOW + 60_000
    horizons = {h.base_timestamp for h in batch_headers(log) if h.has_delete_horizon}
    assert horizons == {NOW + 60_000}
    # ... until delete.retention.ms has passed since that clean.
    second = cleaner().clean(log, first_dirty=first.end_offset, now_ms=NOW + 59_999)
    assert {o for o, _, _ in read_log(log)} >= {o for o in tombstone_offsets if o in kept}
    cleaner().clean(log, first_dirty=second.end_offset, now_ms=NOW + 60_000)
    records = check_log(log, history, first.end_offset)
    assert [r for r in records if r[2] is None and r[0] < first.end_offset] == []
    live = {k: v for _, k, v in records}
    assert {k: v for k, v in history.live().items() if not k.startswith(b"filler")} == {
        k: v for k, v in live.items() if not k.startswith(b"filler")
    }


# ---------------------------------------------------------------- segments


def test_small_segments_are_merged(tmp_path: Path) -> None:
    log = open_log(tmp_path, **{"segment.bytes": "600"})
    history = History()
    append(log, history, updates(800, 10, seed=7))
    before = len(log.segments)
    c = cleaner()
    result = c.clean(log, now_ms=NOW)
    c.clean(log, first_dirty=result.end_offset, now_ms=NOW)  # the cleaned ones are small now
    assert before > 50 and len(log.segments) < before / 5
    assert all(s.size <= 600 for s in log.segments[:-1])
    check_log(log, history, result.end_offset)
    names = os.listdir(log.directory)
    assert not [n for n in names if n.endswith((".cleaned", ".swap"))]


def test_active_segment_and_young_segments_are_not_cleaned(tmp_path: Path) -> None:
    log = open_log(tmp_path, **{"min.compaction.lag.ms": "3600000"})
    history = History()
    append(log, history, updates(100, 5, seed=1), timestamp=NOW - 2 * 3_600_000)
    young = log.roll().base_offset
    append(log, history, updates(100, 5, seed=2), timestamp=NOW - 60_000)
    result = cleaner().clean(log, now_ms=NOW)
    assert result.end_offset == young
    records = check_log(log, history, young)
    assert [o for o, _, _ in records if o >= young] == [o for o in history.records if o >= young]


def test_a_full_offset_map_cleans_in_several_rounds(tmp_path: Path) -> None:
    log = open_log(tmp_path, **{"segment.bytes": "4096"})
    history = History()
    append(log, history, [(b"k%04d" % i, b"v%d" % i) for i in range(300)] * 2, per_batch=10)
    c = cleaner(dedupe_buffer_size=24 * 211)  # a map of 189 keys: fewer than there are
    first = c.clean(log, now_ms=NOW)
    active = log.active_segment.base_offset
    assert 0 < first.end_offset < active
    check_log(log, history, 0)  # nothing lost, whatever was cleaned
    result = first
    for _ in range(10):
        if result.end_offset >= active:
            break
        result = c.clean(log, first_dirty=result.end_offset, now_ms=NOW)
    assert result.end_offset == active
    check_log(log, history, 300)  # every key's old value (offsets < 300) is gone


# ---------------------------------------------------------------- producers, transactions


def producer_batch(pid: int, seq: int, records, *, txn: bool = False, epoch: int = 0) -> bytearray:
    return bytearray(
        R.build_batch(
            [(NOW, k, v) for k, v in records],
            producer_id=pid,
            producer_epoch=epoch,
            base_sequence=seq,
            is_transactional=txn,
        )
    )


def marker(log: Log, pid: int, commit: bool, epoch: int = 0) -> int:
    batch = bytearray(R.build_control_batch(commit, pid, epoch, NOW))
    return log.append(batch, 0, origin=AppendOrigin.COORDINATOR).first_offset


def test_last_batch_of_a_producer_survives_as_an_empty_batch(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    history = History()
    info = log.append(producer_batch(5, 0, [(b"a", b"1"), (b"b", b"2")]), 0)
    last = log.append(producer_batch(5, 2, [(b"a", b"3"), (b"b", b"4")]), 0)
    append(log, history, [(b"a", b"5"), (b"b", b"6")])  # supersedes everything of producer 5
    append(log, history, [(b"filler-%d" % i, b"x" * 50) for i in range(30)])
    cleaner().clean(log, now_ms=NOW)
    by_offset = {h.base_offset: h for h in batch_headers(log)}
    assert info.first_offset not in by_offset
    kept = by_offset[last.first_offset]
    assert (kept.record_count, kept.last_offset, kept.producer_id, kept.last_sequence) == (
        0,
        last.last_offset,
        5,
        3,
    )
    # The producer state rebuilt from the log still knows sequence 3: 4 is next, a retry
    # of 2..3 is a duplicate.
    log.close()
    log = Log.open(log.directory, log.config)
    log.high_watermark = log.log_end_offset
    retry = log.append(producer_batch(5, 2, [(b"a", b"3"), (b"b", b"4")]), 0)
    assert retry.first_offset == last.first_offset
    assert (
        log.append(producer_batch(5, 4, [(b"c", b"7")]), 0).first_offset == log.log_end_offset - 1
    )


def transactional_values(log: Log) -> list[bytes | None]:
    return [v for _, k, v in read_log(log, True) if not (k or b"").startswith(b"filler")]


def test_aborted_records_go_and_markers_follow_when_safe(tmp_path: Path) -> None:
    log = open_log(tmp_path, **{"delete.retention.ms": "1000"})
    log.append(producer_batch(7, 0, [(b"a", b"aborted")], txn=True), 0)
    log.append(producer_batch(8, 0, [(b"c", b"committed")], txn=True), 0)
    abort = marker(log, 7, commit=False)
    commit = marker(log, 8, commit=True)
    log.append(producer_batch(7, 1, [(b"d", b"committed too")], txn=True), 0)
    marker(log, 7, commit=True)
    history = History()
    append(log, history, [(b"filler-%d" % i, b"x" * 60) for i in range(30)])
    assert log.aborted_transactions(0, log.log_end_offset)
    assert transactional_values(log) == [b"committed", b"committed too"]
    c = cleaner()
    first = c.clean(log, now_ms=NOW)
    data = {k: v for _, k, v in read_log(log)}
    assert b"a" not in data and data[b"c"] == b"committed" and data[b"d"] == b"committed too"
    headers = {h.base_offset: h for h in batch_headers(log)}
    assert 0 not in headers  # the aborted batch is gone (not producer 7's last batch)
    assert abort in headers and not headers[abort].has_delete_horizon  # its data was just seen
    second = c.clean(log, first_dirty=first.end_offset, now_ms=NOW)
    headers = {h.base_offset: h for h in batch_headers(log)}
    assert headers[abort].has_delete_horizon and headers[abort].base_timestamp == NOW + 1000
    assert commit in headers and not headers[commit].has_delete_horizon  # data still there
    c.clean(log, first_dirty=second.end_offset, now_ms=NOW + 1000)
    headers = {h.base_offset: h for h in batch_headers(log)}
    assert abort not in headers and commit in headers
    assert {k: v for _, k, v in read_log(log)}[b"c"] == b"committed"
    # The ABORT marker left the transaction index with it (as in Kafka, whose cleaner
    # indexes only the markers it keeps): otherwise a read_committed consumer would take
    # producer 7 as aborted from its next batch on, with no marker to end that.
    assert transactional_values(log) == [b"committed", b"committed too"]
    assert log.aborted_transactions(0, log.log_end_offset) == []
    log.close()
    reopened = Log.open(log.directory, log.config)
    assert reopened.aborted_transactions(0, reopened.log_end_offset) == []
    reopened.close()


def test_open_transactions_bound_the_clean(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    history = History()
    append(log, history, updates(60, 5, seed=9))
    open_at = log.append(producer_batch(9, 0, [(b"t", b"open")], txn=True), 0).first_offset
    append(log, history, updates(60, 5, seed=10))
    assert log.last_stable_offset == open_at
    result = cleaner().clean(log, now_ms=NOW)
    assert result.end_offset <= open_at
    assert (open_at, b"t", b"open") in read_log(log)


# ---------------------------------------------------------------- the swap


def prepared_job(log: Log, c: Cleaner):
    job = c.new_job(log, log.log_start_offset, log.active_segment.base_offset, NOW)
    job.build_offset_map()
    return job


def test_swap_refused_when_retention_or_truncation_got_there_first(tmp_path: Path) -> None:
    log = open_log(tmp_path, **{"cleanup.policy": "compact,delete"})
    history = History()
    append(log, history, updates(200, 10, seed=4))
    job = prepared_job(log, cleaner())
    group = job.groups()[0]
    cleaned = job.clean_group(group)
    assert cleaned is not None and os.path.exists(cleaned.log_path)
    log.truncate_to(group[0].next_offset - 1)  # a follower truncation into the group
    with pytest.raises(CleanAborted):
        job.swap_group(group, cleaned)
    job.close()
    assert not [n for n in os.listdir(log.directory) if n.endswith(".cleaned")]
    assert log.segments[0] is group[0].segment


def test_swap_refused_when_the_log_was_deleted(tmp_path: Path) -> None:
    lm, log, history = manager_setup(tmp_path)
    append(log, history, updates(200, 10, seed=8))
    cleaner_ = LogCleaner(lm, CleanerConfig())
    ltc = cleaner_.manager.grab_filthiest_log()
    assert ltc is not None
    job = cleaner_._new_job(cleaner_._cleaners[0], ltc)
    job.build_offset_map()
    group = job.groups()[0]
    cleaned = job.clean_group(group)
    lm.delete_log("t", 0)
    with pytest.raises(CleanAborted):
        job.swap_group(group, cleaned)
    job.close()
    lm.shutdown()


def test_an_unchanged_segment_is_not_rewritten(tmp_path: Path) -> None:
    log = open_log(tmp_path, **{"segment.bytes": "300"})
    history = History()
    append(log, history, [(b"k%d" % i, b"v") for i in range(40)])  # no key twice
    before = log.segments
    inodes = [os.stat(s.log_path).st_ino for s in before]
    result = cleaner().clean(log, now_ms=NOW)
    assert result.stats.groups > 1 and result.stats.segments_swapped == 0
    assert all(a is b for a, b in zip(log.segments, before, strict=True))
    assert [os.stat(s.log_path).st_ino for s in before] == inodes
    assert not [n for n in os.listdir(log.directory) if n.endswith(".cleaned")]
    check_log(log, history, result.end_offset)


# ---------------------------------------------------------------- recovery of each step


class Crash(Exception):
    pass


def crash_at(step: str):
    def progress(name: str) -> None:
        if name == step:
            raise Crash(step)

    return progress


def recovered(log: Log) -> Log:
    """What a restart finds: the files as the 'crash' left them, no clean shutdown."""
    reopened = Log.open(log.directory, log.config, had_clean_shutdown=False)
    reopened.high_watermark = reopened.log_end_offset
    return reopened


@pytest.mark.parametrize("step", ["mapped", "cleaning", "cleaned", "swap", "replaced", "swapped"])
def test_recovery_after_a_crash_at_each_step(tmp_path: Path, step: str) -> None:
    log = open_log(tmp_path, **{"segment.bytes": "700", "file.delete.delay.ms": "600000"})
    history = History()
    append(log, history, updates(300, 12, seed=11), per_batch=3)
    job = cleaner(io_buffer_size=1 << 17).new_job(
        log, 0, log.active_segment.base_offset, NOW, progress=crash_at(step)
    )
    with pytest.raises(Crash):
        job.run()  # no job.close(): a crash runs no cleanup code
    names = os.listdir(log.directory)
    if step == "swap":
        assert any(n.endswith(".log.swap") for n in names)
    reopened = recovered(log)
    names = os.listdir(reopened.directory)
    assert not [n for n in names if n.endswith((".cleaned", ".swap", ".deleted"))]
    records = check_log(reopened, history, 0)
    if step in ("swap", "replaced", "swapped"):  # the swap completed: the group is compacted
        first = reopened.segments[0]
        assert len([r for r in records if r[0] < first.next_offset]) <= 12
    # The next clean finishes the job.
    cleaner().clean(reopened, now_ms=NOW)
    check_log(reopened, history, reopened.active_segment.base_offset)


def test_recovery_finishes_a_swap_that_deleted_only_some_old_segments(tmp_path: Path) -> None:
    log = open_log(tmp_path, **{"segment.bytes": "700", "file.delete.delay.ms": "600000"})
    history = History()
    append(log, history, updates(300, 12, seed=12), per_batch=3)
    c = cleaner()
    first = c.clean(log, now_ms=NOW)  # small cleaned segments ...
    append(log, history, updates(100, 12, seed=13), per_batch=3)
    job = c.new_job(log, first.end_offset, log.active_segment.base_offset, NOW)
    job.build_offset_map()
    group = next(g for g in job.groups() if len(g) > 2)  # ... merged by the next clean
    cleaned = job.clean_group(group)
    assert cleaned is not None
    cleaned.change_file_suffix(".cleaned", ".swap")
    group[1].segment.change_file_suffix("", ".deleted")  # the crash hit mid-way
    job._pending_cleaned = None
    reopened = recovered(log)
    bases = [s.base_offset for s in reopened.segments]
    assert group[0].base_offset in bases
    assert not set(bases) & {f.base_offset for f in group[1:]}
    check_log(reopened, history, 0)


# ---------------------------------------------------------------- the manager


def manager_setup(tmp_path: Path, **props: str) -> tuple[LogManager, Log, History]:
    config = LogConfig.from_properties(
        {"cleanup.policy": "compact", "segment.bytes": "1024", **props}
    )
    lm = LogManager([str(tmp_path / "data")], LogConfig(), topic_configs={"t": config})
    log = lm.get_or_create_log("t", 0)
    lm.get_or_create_log("plain", 0, LogConfig())
    return lm, log, History()


def test_manager_picks_dirty_logs_and_checkpoints_what_it_cleaned(tmp_path: Path) -> None:
    lm, log, history = manager_setup(tmp_path)
    append(log, history, updates(300, 10, seed=2))
    manager = LogCleanerManager(lm)
    assert manager.dirty_ratio("t", 0) == 1.0
    assert manager.dirty_ratio("plain", 0) is None
    cleaner_ = LogCleaner(lm, CleanerConfig(threads=1))
    result = cleaner_.clean_once()
    assert result is not None and result.end_offset == log.active_segment.base_offset
    assert cleaner_.manager.dirty_ratio("t", 0) == 0.0
    assert cleaner_.clean_once() is None  # nothing dirty any more
    checkpoint = Path(lm.log_dirs[0]) / CLEANER_OFFSET_CHECKPOINT
    assert f"t 0 {result.end_offset}" in checkpoint.read_text()
    lm.shutdown()
    lm = LogManager([str(tmp_path / "data")], LogConfig(), topic_configs={"t": log.config})
    restarted = LogCleanerManager(lm)
    assert restarted.checkpoint_offset("t", 0) == result.end_offset
    # Nothing dirty and no tombstone horizon (checkpointed too): no clean after a restart.
    assert restarted.grab_filthiest_log() is None
    lm.shutdown()


def test_manager_respects_the_ratio_and_max_compaction_lag(tmp_path: Path) -> None:
    lm, log, history = manager_setup(tmp_path, **{"min.cleanable.dirty.ratio": "0.9"})
    append(log, history, updates(300, 10, seed=2), timestamp=NOW - 10_000)
    c = LogCleaner(lm, CleanerConfig())
    assert c.clean_once() is not None  # everything dirty: ratio 1.0 > 0.9
    append(log, history, updates(60, 10, seed=3), timestamp=NOW - 10_000)
    assert c.manager.grab_filthiest_log(NOW) is None  # a little dirt is below 0.9
    lagged = LogConfig.from_properties({"max.compaction.lag.ms": "5000"}, defaults=log.config)
    lm.update_config("t", lagged)
    forced = c.manager.grab_filthiest_log(NOW)
    assert forced is not None and forced.needs_compaction_now
    lm.shutdown()


def test_max_compaction_lag_rolls_the_active_segment(tmp_path: Path) -> None:
    clock = [NOW]
    config = LogConfig.from_properties(
        {"cleanup.policy": "compact", "max.compaction.lag.ms": "1000", "segment.ms": "3600000"}
    )
    assert config.max_segment_ms == 1000
    log = Log.open(str(tmp_path / "t-0"), config, clock=lambda: clock[0])
    log.append(bytearray(R.build_batch([(NOW, b"k", b"1")])), 0)
    log.append(bytearray(R.build_batch([(NOW + 2000, b"k", b"2")])), 0)
    assert len(log.segments) == 2


# ---------------------------------------------------------------- the background cleaner


def test_background_cleaners_clean_and_stop(tmp_path: Path) -> None:
    lm, log, history = manager_setup(tmp_path)
    other = lm.get_or_create_log("t", 1)
    other_history = History()

    async def main() -> None:
        cleaner_ = LogCleaner(lm, CleanerConfig(backoff_ms=10, threads=2))
        cleaner_.start()
        append(log, history, updates(400, 10, seed=21))
        append(other, other_history, updates(400, 10, seed=22))
        for _ in range(1000):  # bounded: until both logs were cleaned
            if cleaner_.manager.checkpoint_offset("t", 0) and cleaner_.manager.checkpoint_offset(
                "t", 1
            ):
                break
            await asyncio.sleep(0.01)
        await cleaner_.shutdown()
        assert cleaner_.manager.checkpoint_offset("t", 0) == log.active_segment.base_offset
        assert cleaner_.manager.checkpoint_offset("t", 1) == other.active_segment.base_offset

    asyncio.run(main())
    check_log(log, history, log.active_segment.base_offset)
    check_log(other, other_history, other.active_segment.base_offset)
    lm.shutdown()


def test_shutdown_aborts_a_clean_in_progress(tmp_path: Path) -> None:
    lm, log, history = manager_setup(tmp_path, **{"segment.bytes": "100000"})
    append(log, history, updates(3000, 50, seed=22), per_batch=10)
    log.roll()

    async def main() -> None:
        # 20 KB/s: the first clean takes many seconds, so shutdown finds it in progress.
        cleaner_ = LogCleaner(lm, CleanerConfig(backoff_ms=10, io_max_bytes_per_second=20_000))
        cleaner_.start()
        for _ in range(500):
            if cleaner_.manager._in_progress:
                break
            await asyncio.sleep(0.01)
        assert cleaner_.manager._in_progress
        await cleaner_.shutdown()
        assert cleaner_.manager.checkpoint_offset("t", 0) is None

    asyncio.run(main())
    assert not [n for n in os.listdir(log.directory) if n.endswith((".cleaned", ".swap"))]
    check_log(log, history, 0)
    lm.shutdown()
