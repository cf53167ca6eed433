"""LogManager: several log.dirs, meta.properties, checkpoints, clean shutdown marker,
flush policy, retention across logs, log deletion, topic names."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from log_helpers import make_batch, read_all

from pystream.config import LogConfig
from pystream.errors import (
    InconsistentClusterIdError,
    InvalidConfigError,
    InvalidTopicException,
    KafkaStorageError,
    UnknownTopicOrPartitionError,
)
from pystream.fileutil import DirectoryLockedError
from pystream.storage import log_manager as log_manager_module
from pystream.storage.checkpoints import (
    CheckpointFile,
    CorruptCheckpointError,
    OffsetCheckpointFile,
)
from pystream.storage.log_dirs import LockedLogDirs, lock_log_dirs
from pystream.storage.log_manager import CLEAN_SHUTDOWN_FILE, LogManager, validate_topic_name
from pystream.storage.meta_properties import InconsistentBrokerIdError, read_meta_properties

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
BATCH = len(make_batch(3))


class FakeClock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def dirs(tmp_path, n: int = 2) -> list[str]:
    return [str(tmp_path / f"data{i}") for i in range(n)]


def manager(tmp_path, n: int = 2, config: LogConfig | None = None, **kw) -> LogManager:
    return LogManager(dirs(tmp_path, n), config or LogConfig(), **kw)


def crashable_manager(
    tmp_path, n: int = 2, config: LogConfig | None = None, **kw
) -> tuple[LogManager, LockedLogDirs]:
    """A manager on dirs whose locks the test holds too, to release them as the kernel does
    when a broker process dies (no shutdown code runs, the OS locks go)."""
    locked = lock_log_dirs(dirs(tmp_path, n))
    return LogManager(locked.paths, config or LogConfig(), locked_dirs=locked, **kw), locked


# --- checkpoint files -----------------------------------------------------------------------


def test_checkpoint_round_trip_in_kafka_format(tmp_path) -> None:
    path = str(tmp_path / "recovery-point-offset-checkpoint")
    checkpoint = OffsetCheckpointFile(path)
    assert checkpoint.read() == {}  # missing file: empty
    offsets = {("orders", 1): 99, ("orders", 0): 1234, ("a.b_c-d", 7): 0}
    checkpoint.write(offsets)
    assert checkpoint.read() == offsets
    with open(path) as f:
        assert f.read() == "0\n3\na.b_c-d 7 0\norders 0 1234\norders 1 99\n"
    assert not os.path.exists(path + ".tmp")
    checkpoint.write({})
    assert checkpoint.read() == {}


@pytest.mark.parametrize(
    ("content", "line", "what"),
    [
        ("", 1, "version line"),
        ("1\n0\n", 1, "unsupported version"),
        ("0\nx\n", 2, "entry count"),
        ("0\n2\ntopic 0 5\n", 2, "count says 2"),
        ("0\n1\ntopic 0\n", 3, "topic partition offset"),
        ("0\n1\ntopic zero 5\n", 3, "topic zero 5"),
        ("0\n2\ntopic 0 5\ntopic 0 6\n", None, "appears twice"),
    ],
)
def test_corrupt_checkpoint_names_file_and_line(tmp_path, content, line, what) -> None:
    path = tmp_path / "replication-offset-checkpoint"
    path.write_text(content)
    with pytest.raises(CorruptCheckpointError) as info:
        OffsetCheckpointFile(str(path)).read()
    message = str(info.value)
    assert str(path) in message and what in message
    if line is not None:
        assert f"line {line}" in message
    assert info.value.error_code == 56


def test_generic_checkpoint_file(tmp_path) -> None:
    checkpoint: CheckpointFile[tuple[int, int]] = CheckpointFile(
        str(tmp_path / "cp"), lambda e: f"{e[0]} {e[1]}", lambda f: (int(f[0]), int(f[1]))
    )
    checkpoint.write([(1, 10), (2, 20)])
    assert checkpoint.read() == [(1, 10), (2, 20)]


# --- meta.properties and log dirs -----------------------------------------------------------


def test_meta_properties_created_and_checked(tmp_path) -> None:
    first = manager(tmp_path, broker_id=3)
    metas = [read_meta_properties(d) for d in first.log_dirs]
    assert all(m is not None and m.broker_id == 3 for m in metas)
    assert {m.cluster_id for m in metas} == {first.cluster_id}
    assert len(first.cluster_id) == 22
    first.shutdown()
    again = manager(tmp_path, broker_id=3)
    assert again.cluster_id == first.cluster_id  # remembered
    again.shutdown()
    with pytest.raises(InconsistentBrokerIdError, match="broker.id 4 doesn't match stored"):
        manager(tmp_path, broker_id=4)
    with pytest.raises(InconsistentClusterIdError):
        manager(tmp_path, broker_id=3, cluster_id="another-cluster")


def test_log_dirs_must_be_distinct_and_present(tmp_path) -> None:
    with pytest.raises(InvalidConfigError, match="same directory twice"):
        LogManager([str(tmp_path / "a"), str(tmp_path / "a/")], LogConfig())
    with pytest.raises(InvalidConfigError, match="empty"):
        LogManager([], LogConfig())


def test_log_dirs_are_locked_until_shutdown(tmp_path) -> None:
    """Kafka's .lock: one manager (one broker) per log dir, also within one process."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    first = LogManager([b], LogConfig())
    assert sorted(os.listdir(b)) == [".lock", "meta.properties"]
    with pytest.raises(DirectoryLockedError) as refused:
        LogManager([a, b], LogConfig())
    assert str(refused.value).startswith(f"Failed to acquire lock on file .lock in {b}. ")
    assert "another process or thread is using this directory" in str(refused.value)
    assert not os.path.exists(os.path.join(a, "meta.properties"))  # refused before writing
    lock_log_dirs([a]).release()  # the refused manager did not keep a's lock
    first.shutdown()
    second = LogManager([a, b], LogConfig())  # b was released on shutdown
    second.shutdown()
    # A manager that fails to open (another broker's dirs) does not keep the locks either.
    with pytest.raises(InconsistentBrokerIdError):
        LogManager([a, b], LogConfig(), broker_id=7)
    with lock_log_dirs([a, b]) as offline:  # how an offline tool writes to log dirs
        assert offline.held and offline.paths == second.log_dirs
        with pytest.raises(DirectoryLockedError):
            LogManager([b], LogConfig())
    assert not offline.held
    LogManager([a, b], LogConfig()).shutdown()


def test_partitions_spread_over_log_dirs_and_reload(tmp_path) -> None:
    lm = manager(tmp_path, 3)
    for p in range(6):
        lm.get_or_create_log("orders", p).append(make_batch(3, tag=p), leader_epoch=0)
    per_dir = [sum(1 for p in range(6) if lm.log_dir_of("orders", p) == d) for d in lm.log_dirs]
    assert per_dir == [2, 2, 2]
    assert os.path.isdir(os.path.join(lm.log_dir_of("orders", 4), "orders-4"))
    assert lm.get_or_create_log("orders", 0) is lm.get_log("orders", 0)
    lm.shutdown()
    reloaded = manager(tmp_path, 3)
    assert sorted(reloaded.logs()) == [("orders", p) for p in range(6)]
    for p in range(6):
        assert read_all(reloaded.get_log("orders", p))[0] == (0, f"{p}-0".encode().ljust(10, b"."))
    reloaded.shutdown()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty"),
        (".", "cannot be"),
        ("..", "cannot be"),
        ("a" * 250, "longer than 249"),
        ("bad topic", "illegal"),
        ("ü", "illegal"),
        ("a/b", "illegal"),
    ],
)
def test_topic_names_follow_kafka_rules(tmp_path, name: str, message: str) -> None:
    with pytest.raises(InvalidTopicException, match=message):
        validate_topic_name(name)
    lm = manager(tmp_path, 1)
    with pytest.raises(InvalidTopicException):
        lm.get_or_create_log(name, 0)
    assert lm.logs() == {}


def test_legal_topic_names(tmp_path) -> None:
    lm = manager(tmp_path, 1)
    for name in ("a", "a" * 249, "A.b_c-9", "__consumer_offsets"):
        validate_topic_name(name)
    assert lm.get_or_create_log("__consumer_offsets", 49).topic_partition == (
        "__consumer_offsets",
        49,
    )


# --- clean shutdown, recovery, checkpoints --------------------------------------------------


def test_clean_shutdown_writes_checkpoints_and_marker(tmp_path) -> None:
    lm = manager(tmp_path, 2)
    a = lm.get_or_create_log("t", 0)
    b = lm.get_or_create_log("t", 1)
    for _ in range(3):
        a.append(make_batch(3), leader_epoch=0)
    b.append(make_batch(2), leader_epoch=0)
    a.high_watermark = 6
    b.high_watermark = 2
    lm.shutdown()
    for d in lm.log_dirs:
        assert os.path.exists(os.path.join(d, CLEAN_SHUTDOWN_FILE))
    dir_a, dir_b = lm.log_dir_of("t", 0), lm.log_dir_of("t", 1)
    assert OffsetCheckpointFile(os.path.join(dir_a, "recovery-point-offset-checkpoint")).read() == {
        ("t", 0): 9
    }
    assert OffsetCheckpointFile(os.path.join(dir_b, "replication-offset-checkpoint")).read() == {
        ("t", 1): 2
    }
    assert OffsetCheckpointFile(os.path.join(dir_a, "log-start-offset-checkpoint")).read() == {
        ("t", 0): 0
    }
    reopened = manager(tmp_path, 2)
    for d in reopened.log_dirs:
        assert not os.path.exists(os.path.join(d, CLEAN_SHUTDOWN_FILE))  # removed on start
    assert reopened.get_log("t", 0).high_watermark == 6
    assert reopened.get_log("t", 0).recovery_point == 9
    reopened.shutdown()
    with pytest.raises(KafkaStorageError, match="shut down"):
        reopened.get_or_create_log("t", 2)


def _damage_last_batch(log_dir: str, partition_dir: str = "t-0") -> None:
    path = os.path.join(log_dir, partition_dir, "00000000000000000000.log")
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))


def test_unclean_stop_recovers_from_the_checkpointed_recovery_point(tmp_path) -> None:
    lm, locked = crashable_manager(tmp_path, 1)
    log = lm.get_or_create_log("t", 0)
    for _ in range(3):
        log.append(make_batch(3), leader_epoch=0)
    log.flush(up_to_offset=3)
    lm.checkpoint_recovery_points()
    # No shutdown: the process "dies" here and the last batch is damaged on disk.
    log.close()
    locked.release()
    _damage_last_batch(lm.log_dirs[0])
    recovered = manager(tmp_path, 1)
    assert recovered.get_log("t", 0).log_end_offset == 6
    assert recovered.get_log("t", 0).recovery_point == 3
    recovered.shutdown()
    # After a clean shutdown the files are trusted: the same damage is not looked for.
    _damage_last_batch(recovered.log_dirs[0])
    assert manager(tmp_path, 1).get_log("t", 0).log_end_offset == 6


def test_recovery_threads_load_and_recover_every_log(tmp_path) -> None:
    """num.recovery.threads.per.data.dir > 1: the logs of both dirs are loaded by a pool,
    after a crash too (each damaged tail cut), with what one thread would give."""
    lm, locked = crashable_manager(tmp_path, 2)
    for partition in range(12):
        log = lm.get_or_create_log("t", partition)
        for _ in range(partition % 3 + 1):
            log.append(make_batch(2), leader_epoch=0)
        log.high_watermark = log.log_end_offset
    lm.checkpoint_high_watermarks()
    for log in lm.logs().values():
        log.close()
    locked.release()
    for log_dir in lm.log_dirs:  # one log of each dir loses its last batch
        _damage_last_batch(log_dir, min(n for n in os.listdir(log_dir) if n.startswith("t-")))
    copy = tmp_path / "copy"
    for i, log_dir in enumerate(lm.log_dirs):
        shutil.copytree(log_dir, copy / f"data{i}")
    one = manager(tmp_path, 2)  # one thread: the reference
    expected = {tp: (log.log_end_offset, one.log_dir_of(*tp)) for tp, log in one.logs().items()}
    one.shutdown()
    pooled = manager(copy, 2, recovery_threads_per_dir=4)
    got = {
        tp: (log.log_end_offset, pooled.log_dir_of(*tp).replace(str(copy), str(tmp_path)))
        for tp, log in pooled.logs().items()
    }
    assert len(expected) == 12
    assert got == expected
    assert sorted(end for end, _ in got.values()) != sorted(
        2 * (p % 3 + 1) for p in range(12)
    )  # the damage was found and cut
    pooled.shutdown()
    with pytest.raises(ValueError, match="recovery threads"):
        manager(tmp_path, 2, recovery_threads_per_dir=0)


def test_corrupt_checkpoint_only_costs_a_longer_recovery(tmp_path) -> None:
    lm = manager(tmp_path, 1)
    log = lm.get_or_create_log("t", 0)
    log.append(make_batch(3), leader_epoch=0)
    log.high_watermark = 3
    lm.shutdown()
    for name in ("recovery-point-offset-checkpoint", "replication-offset-checkpoint"):
        with open(os.path.join(lm.log_dirs[0], name), "w") as f:
            f.write("garbage")
    reopened = manager(tmp_path, 1)
    assert reopened.get_log("t", 0).log_end_offset == 3
    assert reopened.get_log("t", 0).high_watermark == 0


def test_log_start_offset_checkpoint_survives_restart(tmp_path) -> None:
    config = LogConfig.from_properties({"file.delete.delay.ms": "0"})
    lm, locked = crashable_manager(tmp_path, 1, config)
    log = lm.get_or_create_log("t", 0)
    for _ in range(3):
        log.append(make_batch(3), leader_epoch=0)
    log.high_watermark = 9
    log.delete_records_before(5)
    lm.checkpoint_log_start_offsets()
    lm.checkpoint_high_watermarks()
    log.close()  # unclean stop
    locked.release()
    reopened = manager(tmp_path, 1, config)
    assert reopened.get_log("t", 0).log_start_offset == 5
    assert reopened.get_log("t", 0).high_watermark == 9


# --- periodic steps -------------------------------------------------------------------------


def test_flush_dirty_logs_follows_flush_ms_and_rolls(tmp_path) -> None:
    clock = FakeClock(0)
    flushy = LogConfig.from_properties({"flush.ms": "1000"})
    lm = manager(tmp_path, 1, clock=clock)
    timed = lm.get_or_create_log("timed", 0, flushy)
    lazy = lm.get_or_create_log("lazy", 0, LogConfig.from_properties({"segment.bytes": str(BATCH)}))
    timed.append(make_batch(3), leader_epoch=0)
    lazy.append(make_batch(3), leader_epoch=0)
    clock.now = 999
    assert lm.flush_dirty_logs() == 0
    assert timed.recovery_point == 0
    clock.now = 1000
    assert lm.flush_dirty_logs() == 1
    assert timed.recovery_point == 3
    assert lazy.recovery_point == 0  # default policy: the OS decides
    lazy.append(make_batch(3), leader_epoch=0)  # rolls segment 0
    assert lm.flush_dirty_logs(2000) == 1
    assert lazy.recovery_point == 3  # the rolled segment was fsynced, the active one not


def test_cleanup_logs_applies_retention_to_every_log(tmp_path) -> None:
    config = LogConfig.from_properties(
        {"segment.bytes": str(BATCH), "retention.ms": "1000", "file.delete.delay.ms": "0"}
    )
    lm = manager(tmp_path, 2, config)
    for p in range(2):
        log = lm.get_or_create_log("t", p)
        for ts in (1, 2, 10_000):
            log.append(make_batch(3, timestamp=ts), leader_epoch=0)
        log.high_watermark = 9
    assert lm.cleanup_logs(now_ms=5_000) == 4
    assert [lm.get_log("t", p).log_start_offset for p in range(2)] == [6, 6]


def test_update_config_applies_to_existing_logs(tmp_path) -> None:
    lm = manager(tmp_path, 1)
    log = lm.get_or_create_log("t", 0)
    other = lm.get_or_create_log("u", 0)
    small = LogConfig.from_properties({"max.message.bytes": "100"})
    lm.update_config("t", small)
    assert log.config is small and other.config == LogConfig()
    assert lm.get_or_create_log("t", 1).config is small


def test_delete_log_renames_then_removes_after_the_delay(tmp_path) -> None:
    clock = FakeClock(0)
    lm = manager(tmp_path, 1, clock=clock)
    log = lm.get_or_create_log("t", 0)
    log.append(make_batch(3), leader_epoch=0)
    held = log.read(0, 100)  # an in-flight fetch
    lm.delete_log("t", 0)
    root = lm.log_dirs[0]
    leftovers = [n for n in os.listdir(root) if n.endswith("-delete")]
    assert len(leftovers) == 1 and leftovers[0].startswith("t-0.")
    assert not os.path.exists(os.path.join(root, "t-0"))
    assert lm.get_log("t", 0) is None
    assert os.pread(held.records.fd, 8, held.records.position) == bytes(8)  # still sendable
    fresh = lm.get_or_create_log("t", 0)  # the name is free again at once
    assert fresh.log_end_offset == 0
    clock.now = 59_999
    lm.cleanup_logs()
    assert os.path.exists(os.path.join(root, leftovers[0]))
    clock.now = 60_000
    lm.cleanup_logs()
    assert not os.path.exists(os.path.join(root, leftovers[0]))
    with pytest.raises(UnknownTopicOrPartitionError):
        lm.delete_log("nope", 0)


def test_leftover_delete_dirs_are_removed_at_startup(tmp_path) -> None:
    lm, locked = crashable_manager(tmp_path, 1)
    lm.get_or_create_log("t", 0).append(make_batch(1), leader_epoch=0)
    lm.delete_log("t", 0)
    os.makedirs(os.path.join(lm.log_dirs[0], "not-a-log"))
    # A crash before the delayed removal: the renamed dir is still there.
    locked.release()
    restarted = manager(tmp_path, 1)
    assert not any(n.endswith("-delete") for n in os.listdir(restarted.log_dirs[0]))
    assert restarted.logs() == {}  # "not-a-log" is not <topic>-<partition>


# --- a real crash of a broker-like process --------------------------------------------------

CHILD = r"""
import sys
from kafka.record.default_records import DefaultRecordBatchBuilder
from pystream.config import LogConfig
from pystream.storage.log_manager import LogManager

def batch(i):
    b = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 1 << 20)
    b.append(0, timestamp=1000 + i, key=None, value=str(i).encode(), headers=[])
    return bytearray(b.build())

lm = LogManager(sys.argv[1:3], LogConfig.from_properties({"segment.bytes": "4096"}))
logs = [lm.get_or_create_log("crash", p) for p in range(2)]
for i in range(100000):
    info = logs[i % 2].append(batch(i), leader_epoch=0)
    if i % 100 == 0:
        lm.flush_dirty_logs()
        lm.checkpoint_recovery_points()
    print(i % 2, info.last_offset, flush=True)
"""


def test_sigkilled_broker_restarts_with_every_acknowledged_record(tmp_path) -> None:
    log_dirs = dirs(tmp_path, 2)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *log_dirs],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=SRC),
        text=True,
    )
    acked = {0: -1, 1: -1}
    count = 0
    try:
        deadline = time.monotonic() + 60
        while count < 1500 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            partition, offset = map(int, line.split())
            acked[partition] = offset
            count += 1
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert count == 1500, child.stderr.read()
    lm = LogManager(log_dirs, LogConfig.from_properties({"segment.bytes": "4096"}))
    for partition in (0, 1):
        log = lm.get_log("crash", partition)
        assert log.log_end_offset >= acked[partition] + 1
        records = read_all(log)
        assert [o for o, _ in records] == list(range(log.log_end_offset))
        assert all(int(value) == 2 * offset + partition for offset, value in records)
        assert len(log.segments) > 1
    lm.shutdown()


# --- work off the event loop ----------------------------------------------------------------


def test_create_logs_from_a_thread_spreads_and_returns_existing(tmp_path) -> None:
    lm = manager(tmp_path, 2)
    existing = lm.get_or_create_log("wide", 0)

    async def create() -> list:
        return await asyncio.to_thread(lm.create_logs, [("wide", p) for p in range(6)])

    logs = asyncio.run(create())
    assert logs[0] is existing and [log.topic_partition for log in logs] == [
        ("wide", p) for p in range(6)
    ]
    assert sorted(lm.log_dir_of("wide", p) for p in range(6)).count(lm.log_dirs[0]) == 3


def test_background_flush_and_retention_on_a_loop(tmp_path) -> None:
    config = LogConfig.from_properties(
        {"segment.bytes": str(BATCH), "retention.ms": "1000", "file.delete.delay.ms": "0"}
    )
    lm = manager(tmp_path, 1, config, clock=lambda: 10_000)
    log = lm.get_or_create_log("t", 0)
    for _ in range(4):
        log.append(make_batch(1, timestamp=0), leader_epoch=0)
    log.high_watermark = log.log_end_offset

    async def run() -> tuple[int, int]:
        flushed = await lm.flush_dirty_logs_in_background()
        return flushed, await lm.cleanup_logs_in_background()

    # The roll flush covered the 3 closed segments; retention then took all 4 (rolling).
    assert asyncio.run(run()) == (1, 4)
    assert log.log_start_offset == log.recovery_point == 4
    assert not [name for name in os.listdir(log.directory) if name.endswith(".deleted")]
    lm.shutdown()


def test_an_append_reaching_flush_messages_is_answered_after_its_fsync(tmp_path) -> None:
    """flush.messages fsyncs on the log-io thread, and the produce path waits for it: what
    the appender is told is durable has reached the recovery point."""
    config = LogConfig.from_properties({"flush.messages": "3"})
    lm = manager(tmp_path, 1, config)
    log = lm.get_or_create_log("t", 0)

    async def run() -> list[tuple[int, int, bool]]:
        seen = []
        for _ in range(7):
            log.append(make_batch(1), leader_epoch=0)
            end = log.log_end_offset
            asked = lm.message_flushes_pending
            await lm.wait_message_flushed([("t", 0, end)])
            seen.append((end, log.recovery_point, asked))
        return seen

    seen = asyncio.run(run())
    # The 3rd and 6th appends reached flush.messages: each waited until it was fsynced.
    for end, recovery_point, asked in seen:
        assert asked == (end % 3 == 0)
        if asked:
            assert recovery_point >= end
    assert [rp for _, rp, _ in seen] == [0, 0, 3, 3, 3, 6, 6]
    assert not lm.message_flushes_pending
    lm.shutdown()


def test_a_roll_fsyncs_the_closed_segments_on_the_log_io_thread(tmp_path, monkeypatch) -> None:
    """Kafka's flush after roll, with the default flush settings (no flush job): each roll
    fsyncs what it closed off the event loop and the recovery point follows the rolls."""
    config = LogConfig.from_properties({"segment.bytes": str(BATCH)})
    lm = manager(tmp_path, 1, config)
    log = lm.get_or_create_log("t", 0)
    flushed_on: list[str] = []
    run_plans = log_manager_module._run_flush_plans

    def observed(plans: list) -> None:
        flushed_on.append(threading.current_thread().name)
        run_plans(plans)

    monkeypatch.setattr(log_manager_module, "_run_flush_plans", observed)

    async def run() -> None:
        for _ in range(6):
            log.append(make_batch(1), leader_epoch=0)
        deadline = time.monotonic() + 10
        while log.recovery_point < log.active_segment.base_offset:
            assert time.monotonic() < deadline, f"recovery point stuck at {log.recovery_point}"
            await asyncio.sleep(0.01)

    asyncio.run(run())
    assert len(log.segments) == 6
    assert log.recovery_point == log.active_segment.base_offset == 5
    assert flushed_on and all(name.startswith("log-io") for name in flushed_on), flushed_on
    lm.shutdown()
