"""Recovery of a partition directory: one test per step of log_loader's procedure, the
truncation sweep and bit flips of the issue, and a real SIGKILL of an appending process."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from log_helpers import make_batch, read_all, segment_files

from pystream._core import records as core_records
from pystream._core.segment import LogSegment
from pystream.config import LogConfig
from pystream.storage.leader_epoch import LEADER_EPOCH_CHECKPOINT
from pystream.storage.log import AppendOrigin, Log
from pystream.storage.log_loader import load_log

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def build_log(directory: str, batches: int, config: LogConfig | None = None, epoch: int = 0):
    """A log with ``batches`` batches of 3 records (values ``b"<batch>-<record>..."``)."""
    log = Log.open(directory, config)
    for i in range(batches):
        log.append(make_batch(3, tag=i, timestamp=1000 * i), leader_epoch=epoch)
    return log


def batch_spans(log: Log) -> list[tuple[LogSegment, int, int, int]]:
    """(segment, position, size, last offset) of every batch, oldest first."""
    return [
        (segment, b.position, b.size, b.last_offset)
        for segment in log.segments
        for b in segment.batches()
    ]


def reopen_unclean(directory: str, config: LogConfig | None = None, **kw) -> Log:
    return Log.open(directory, config, had_clean_shutdown=False, **kw)


# --- step 1: leftovers ----------------------------------------------------------------------


def test_step1_leftover_files_are_removed(tmp_path) -> None:
    log = build_log(str(tmp_path / "t-0"), 2)
    log.close()
    for name in (
        "00000000000000000009.log.deleted",
        "00000000000000000009.index.deleted",
        "00000000000000000012.log.cleaned",
        "recovery-point-offset-checkpoint.tmp",
    ):
        (tmp_path / "t-0" / name).write_bytes(b"junk")
    reopened = Log.open(str(tmp_path / "t-0"), had_clean_shutdown=True)
    assert segment_files(reopened.directory) == [
        "00000000000000000000.index",
        "00000000000000000000.log",
        "00000000000000000000.timeindex",
    ]
    assert not (tmp_path / "t-0" / "recovery-point-offset-checkpoint.tmp").exists()
    assert reopened.log_end_offset == 6


# --- step 2: swaps --------------------------------------------------------------------------


def test_step2_interrupted_swap_is_completed(tmp_path) -> None:
    directory = str(tmp_path / "t-0")
    batch_size = len(make_batch(3))
    config = LogConfig.from_properties({"segment.bytes": str(batch_size * 2)})
    log = build_log(directory, 6, config)  # segments 0, 6, 12
    log.close()
    # A cleaner produced a replacement for offsets 0..11 holding only offsets 3..5 and 9..11.
    swap = LogSegment(directory, 0, file_suffix=".swap")
    swap.recover()
    kept = make_batch(3, tag=1, base_offset=3) + make_batch(3, tag=3, base_offset=9)
    swap.append(11, 0, 0, kept)
    swap.close()
    (tmp_path / "t-0" / "00000000000000000000.index.swap").write_bytes(b"stale")
    reopened = Log.open(directory, config, had_clean_shutdown=True)
    assert [s.base_offset for s in reopened.segments] == [0, 12]
    assert [o for o, _ in read_all(reopened, 3)] == [3, 4, 5, 9, 10, 11, 12, 13, 14, 15, 16, 17]
    assert not any(n.endswith(".swap") for n in os.listdir(directory))


# --- step 3: orphan indexes -----------------------------------------------------------------


def test_step3_orphan_indexes_are_removed(tmp_path) -> None:
    log = build_log(str(tmp_path / "t-0"), 1)
    log.close()
    (tmp_path / "t-0" / "00000000000000000042.index").write_bytes(bytes(8))
    (tmp_path / "t-0" / "00000000000000000042.timeindex").write_bytes(bytes(12))
    reopened = Log.open(str(tmp_path / "t-0"), had_clean_shutdown=True)
    assert [s.base_offset for s in reopened.segments] == [0]
    assert not (tmp_path / "t-0" / "00000000000000000042.index").exists()


# --- steps 4 and 5: indexes are caches, recovery from the recovery point --------------------


@pytest.mark.parametrize("damage", ["missing", "garbage", "odd size"])
@pytest.mark.parametrize("clean", [True, False])
def test_step4_missing_or_corrupt_index_is_rebuilt(tmp_path, damage: str, clean: bool) -> None:
    directory = str(tmp_path / "t-0")
    config = LogConfig.from_properties({"index.interval.bytes": "0"})
    log = build_log(directory, 20, config)
    expected_entries = log.active_segment.offset_index.entries
    expected = read_all(log)
    log.close()
    index = tmp_path / "t-0" / "00000000000000000000.index"
    if damage == "missing":
        index.unlink()
    elif damage == "garbage":
        index.write_bytes(bytes(range(255, 95, -1)))  # decreasing offsets
    else:
        index.write_bytes(index.read_bytes()[:-3])
    reopened = Log.open(directory, config, had_clean_shutdown=clean, recovery_point=60)
    assert reopened.log_end_offset == 60
    assert reopened.active_segment.offset_index.entries == expected_entries
    reopened.active_segment.offset_index.sanity_check()
    assert read_all(reopened) == expected
    assert reopened.append(make_batch(1), leader_epoch=0).first_offset == 60


def test_step5_clean_shutdown_trusts_the_files(tmp_path) -> None:
    directory = str(tmp_path / "t-0")
    log = build_log(directory, 4)
    segment, position, size, _ = batch_spans(log)[1]
    log.close()
    _flip(os.path.join(directory, "00000000000000000000.log"), position + size - 1, 0)
    # With the marker, nothing is CRC-checked (as Kafka): the damage is not noticed ...
    assert Log.open(directory, had_clean_shutdown=True).log_end_offset == 12
    # ... without it, recovery from the recovery point cuts at the damaged batch.
    assert reopen_unclean(directory).log_end_offset == 3


def test_step5_segments_below_the_recovery_point_are_not_rescanned(tmp_path) -> None:
    directory = str(tmp_path / "t-0")
    batch_size = len(make_batch(3))
    config = LogConfig.from_properties({"segment.bytes": str(batch_size * 2)})
    log = build_log(directory, 6, config)  # segments 0, 6, 12
    log.close()
    _flip(os.path.join(directory, "00000000000000000000.log"), batch_size + 30, 3)
    _flip(os.path.join(directory, "00000000000000000006.log"), batch_size + 30, 3)
    # Recovery point 12: segments 0 and 6 were flushed and are trusted; 12 is checked.
    assert reopen_unclean(directory, config, recovery_point=12).log_end_offset == 18
    # Recovery point 7: segment 6 (containing it) is recovered and cut; 12 is deleted.
    recovered = reopen_unclean(directory, config, recovery_point=7)
    assert recovered.log_end_offset == 9
    assert [s.base_offset for s in recovered.segments] == [0, 6]
    assert not os.path.exists(os.path.join(directory, "00000000000000000012.log"))


def test_step5_damage_deletes_every_later_segment(tmp_path) -> None:
    directory = str(tmp_path / "t-0")
    batch_size = len(make_batch(3))
    config = LogConfig.from_properties({"segment.bytes": str(batch_size * 2)})
    log = build_log(directory, 7, config)  # segments 0, 6, 12, 18
    log.close()
    _flip(os.path.join(directory, "00000000000000000006.log"), 40, 0)
    loaded = load_log(directory, config)
    assert loaded.log_end_offset == 6
    assert loaded.deleted_segments == 2
    assert loaded.truncated_bytes == 2 * batch_size
    assert [s.base_offset for s in loaded.segments] == [0, 6]
    assert segment_files(directory) == [
        f"{base:020d}{ext}" for base in (0, 6) for ext in (".index", ".log", ".timeindex")
    ]


# --- steps 6 to 8: offsets and leader epochs ------------------------------------------------


def test_step6_empty_directory_starts_at_the_checkpointed_log_start(tmp_path) -> None:
    log = Log.open(str(tmp_path / "t-0"), log_start_offset=42)
    assert (log.log_start_offset, log.log_end_offset) == (42, 42)
    assert [s.base_offset for s in log.segments] == [42]


def test_step6_log_wholly_below_its_start_restarts_there(tmp_path) -> None:
    log = build_log(str(tmp_path / "t-0"), 2)
    log.close()
    reopened = Log.open(str(tmp_path / "t-0"), log_start_offset=50, had_clean_shutdown=True)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (50, 50)
    assert segment_files(reopened.directory)[1] == "00000000000000000050.log"


def test_step7_offsets(tmp_path) -> None:
    directory = str(tmp_path / "t-0")
    build_log(directory, 4).close()
    clean = Log.open(directory, log_start_offset=4, recovery_point=2, had_clean_shutdown=True)
    assert (clean.log_start_offset, clean.log_end_offset, clean.recovery_point) == (4, 12, 12)
    clean.close()
    unclean = reopen_unclean(directory, recovery_point=6)
    assert (unclean.log_start_offset, unclean.recovery_point) == (0, 6)
    unclean.close()
    assert reopen_unclean(directory, recovery_point=100).recovery_point == 12


@pytest.mark.parametrize("damage", ["corrupt", "missing", "beyond the end"])
def test_step8_leader_epoch_cache_is_rebuilt_or_fitted(tmp_path, damage: str) -> None:
    directory = str(tmp_path / "t-0")
    log = Log.open(directory)
    for epoch in (1, 1, 4, 4, 6):
        log.append(make_batch(2), leader_epoch=epoch)
    assert log.leader_epoch_cache.entries() == [(1, 0), (4, 4), (6, 8)]
    log.close()
    path = os.path.join(directory, LEADER_EPOCH_CHECKPOINT)
    if damage == "corrupt":
        with open(path, "w") as f:
            f.write("0\n3\n1 0\nnonsense\n")
    elif damage == "missing":
        os.remove(path)
    else:
        with open(path, "w") as f:
            f.write("0\n4\n1 0\n4 4\n6 8\n9 20\n")
    reopened = Log.open(directory, had_clean_shutdown=True)
    assert reopened.leader_epoch_cache.entries() == [(1, 0), (4, 4), (6, 8)]
    if damage == "beyond the end":
        # Fitted in memory only (a write per partition made large starts slow): every
        # load drops the entries past the end again, and the next change writes the file.
        reopened.close()
        reopened = Log.open(directory, had_clean_shutdown=True)
        assert reopened.leader_epoch_cache.entries() == [(1, 0), (4, 4), (6, 8)]
        reopened.append(make_batch(1), leader_epoch=7)
        with open(path) as f:
            assert f.read() == "0\n4\n1 0\n4 4\n6 8\n7 10\n"
        return
    with open(path) as f:
        assert f.read() == "0\n3\n1 0\n4 4\n6 8\n"


def test_an_empty_partition_led_again_at_its_epoch_writes_no_checkpoint(tmp_path) -> None:
    """An empty log's entry (epoch, 0) is past its end at load and assigned again when it
    is led: the file holds that already, so a start with many partitions writes none."""
    directory = str(tmp_path / "t-0")
    log = Log.open(directory)
    log.leader_epoch_cache.assign(3, 0)
    log.close()
    path = os.path.join(directory, LEADER_EPOCH_CHECKPOINT)
    written = os.stat(path).st_ino  # atomic_write replaces the file: a new inode
    reopened = Log.open(directory, had_clean_shutdown=True)
    assert reopened.leader_epoch_cache.entries() == []
    assert reopened.leader_epoch_cache.assign(3, 0)
    assert reopened.leader_epoch_cache.entries() == [(3, 0)]
    assert os.stat(path).st_ino == written
    reopened.leader_epoch_cache.assign(4, 0)  # a real change is written
    assert os.stat(path).st_ino != written
    with open(path) as f:
        assert f.read() == "0\n1\n4 0\n"


# --- the sweep: truncate the tail at every byte of the last two batches -------------


# --- step 9: producer state and transaction index -------------------------------------------


@pytest.mark.parametrize("lost", ["unflushed", "with its offset index"])
def test_step9_lost_txnindex_entries_of_recovered_segments_are_rebuilt(tmp_path, lost) -> None:
    """The .txnindex entries of segments past the recovery point were not fsynced either:
    recovery re-creates them from the ABORT markers, even below the newest producer
    snapshot (which alone would replay only the active segment).  So does a segment
    recovered because its offset index is missing, also after a clean shutdown (Kafka)."""
    directory = str(tmp_path / "t-0")
    log = Log.open(directory)
    for t, commit in enumerate((False, True, False)):
        data = core_records.build_batch(
            [(1000, b"k", b"txn-%d" % t)] * 2,
            producer_id=7,
            producer_epoch=0,
            base_sequence=2 * t,
            is_transactional=True,
        )
        log.append(bytearray(data), 0)
        marker = core_records.build_control_batch(commit, 7, 0, 1000)
        log.append(bytearray(marker), 0, origin=AppendOrigin.COORDINATOR)
        log.roll()  # one transaction per segment; a producer snapshot per roll
    aborted = log.aborted_transactions(0, log.log_end_offset)
    assert [(t.first_offset, t.last_offset) for t in aborted] == [(0, 2), (6, 8)]
    txn_index = os.path.join(directory, f"{0:020d}.txnindex")
    if lost == "unflushed":
        os.remove(txn_index)  # a crash (no close) that took the unflushed index with it
        recovered = reopen_unclean(directory, recovery_point=0)
    else:
        log.close()
        os.remove(txn_index)
        os.remove(os.path.join(directory, f"{0:020d}.index"))
        recovered = Log.open(directory, had_clean_shutdown=True)
    assert recovered.aborted_transactions(0, recovered.log_end_offset) == aborted
    assert os.path.getsize(txn_index) == 34


def _flip(path: str, position: int, bit: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ (1 << bit)]))


def _check_recovered(directory: str, config: LogConfig, expected: list, next_offset: int) -> None:
    recovered = reopen_unclean(directory, config)
    assert recovered.log_end_offset == next_offset
    assert read_all(recovered) == expected
    for segment in recovered.segments:
        segment.offset_index.sanity_check()
        segment.time_index.sanity_check()
    # Offsets continue right after the intact prefix, and survive another restart.
    info = recovered.append(make_batch(2, tag=99), leader_epoch=0)
    assert info.first_offset == next_offset
    recovered.close()
    again = Log.open(directory, config, had_clean_shutdown=True)
    appended = [(next_offset, b"99-0......"), (next_offset + 1, b"99-1......")]
    assert read_all(again) == expected + appended
    again.close()


@pytest.mark.parametrize("layout", ["one segment", "across a segment boundary"])
def test_truncation_sweep_keeps_exactly_the_intact_prefix(tmp_path, layout: str) -> None:
    template = str(tmp_path / "template" / "t-0")
    batch_size = len(make_batch(3, tag=0))
    segment_bytes = batch_size * 100 if layout == "one segment" else batch_size * 5
    config = LogConfig.from_properties(
        {"segment.bytes": str(segment_bytes), "index.interval.bytes": "0"}
    )
    log = build_log(template, 6, config)
    spans = batch_spans(log)
    records = read_all(log)
    log.close()
    last_two = spans[-2:]
    if layout == "across a segment boundary":
        assert last_two[0][0].base_offset != last_two[1][0].base_offset
    for k, (segment, position, size, _) in enumerate(last_two):
        intact = len(spans) - 2 + k  # batches before this one
        for cut in range(position, position + size):
            work = str(tmp_path / f"cut-{k}-{cut}" / "t-0")
            shutil.copytree(template, work)
            log_file = os.path.join(work, os.path.basename(segment.log_path))
            os.truncate(log_file, cut)
            expected, next_offset = records[: intact * 3], intact * 3
            if cut == position and segment is not spans[-1][0]:
                # An earlier segment that ends exactly at a batch boundary is indistinguishable
                # from one that compaction shortened: the intact later segment is kept and
                # the lost offsets are a gap (as in Kafka).
                expected, next_offset = expected + records[-3:], len(records)
            _check_recovered(work, config, expected, next_offset)
            shutil.rmtree(os.path.dirname(work))


def test_random_bit_flips_keep_exactly_the_intact_prefix(tmp_path) -> None:
    template = str(tmp_path / "template" / "t-0")
    batch_size = len(make_batch(3))
    config = LogConfig.from_properties(
        {"segment.bytes": str(batch_size * 4), "index.interval.bytes": "0"}
    )
    log = build_log(template, 10, config)
    spans = batch_spans(log)
    records = read_all(log)
    log.close()
    rng = random.Random(20240611)
    for trial in range(60):
        index = rng.randrange(len(spans))
        segment, position, size, _ = spans[index]
        # Every byte but base offset (0-7) and leader epoch (12-15): those are outside
        # the CRC in the v2 format (Kafka cannot detect flips there either).
        byte = rng.choice([*range(8, 12), *range(16, size)])
        work = str(tmp_path / f"flip-{trial}" / "t-0")
        shutil.copytree(template, work)
        log_file = os.path.join(work, os.path.basename(segment.log_path))
        _flip(log_file, position + byte, rng.randrange(8))
        _check_recovered(work, config, records[: index * 3], index * 3)
        shutil.rmtree(os.path.dirname(work))


# --- a real crash ---------------------------------------------------------------------------

CHILD = r"""
import sys
from pystream.config import LogConfig
from pystream.storage.log import AppendOrigin, Log

directory, total = sys.argv[1], int(sys.argv[2])
config = LogConfig.from_properties({"segment.bytes": "16384", "index.interval.bytes": "512"})
log = Log.open(directory, config)
for i in range(total):
    batch = bytearray(build(i))
    info = log.append(batch, leader_epoch=0)
    print(info.last_offset, flush=True)
"""


def _child_source() -> str:
    # The child builds batches with kafka-python, exactly like the tests' make_batch.
    import inspect

    import log_helpers

    return (
        "from kafka.record.default_records import DefaultRecordBatchBuilder\n"
        + inspect.getsource(log_helpers.make_batch)
        + "def build(i):\n    return make_batch(4, tag=i, value_size=100, timestamp=1000 + i)\n"
        + CHILD
    )


def test_sigkill_while_appending_keeps_every_acknowledged_record(tmp_path) -> None:
    directory = str(tmp_path / "crash-0")
    env = dict(os.environ, PYTHONPATH=SRC)
    child = subprocess.Popen(
        [sys.executable, "-c", _child_source(), directory, "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    acked = -1
    try:
        deadline = time.monotonic() + 60
        while acked < 2000 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acked = int(line)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert acked >= 2000, child.stderr.read()
    assert child.returncode == -signal.SIGKILL
    log = reopen_unclean(directory, LogConfig.from_properties({"segment.bytes": "16384"}))
    assert log.log_end_offset >= acked + 1
    assert log.log_end_offset % 4 == 0  # whole batches only
    assert len(log.segments) > 10
    records = read_all(log)
    assert [o for o, _ in records] == list(range(log.log_end_offset))
    for offset, value in records[: acked + 1]:
        assert value.startswith(f"{offset // 4}-{offset % 4}".encode())
    for segment in log.segments:
        segment.offset_index.sanity_check()
        segment.time_index.sanity_check()
    # Every acknowledged offset is found through the index.
    for offset in range(0, acked + 1, 37):
        fetched = log.read(offset, 1)
        assert fetched.records is not None
    assert log.append(make_batch(1), leader_epoch=0).first_offset == log.log_end_offset - 1
