"""Recovery debts of the storage layer, on real broker processes with real clients:

- a roll fsyncs the closed segment off the loop and the recovery point follows, so the
  periodic ``recovery-point-offset-checkpoint`` bounds what a SIGKILL costs;
- ``.txnindex`` entries lost with unflushed data are rebuilt from the ABORT markers;
- the cleaner's checkpoint (first dirty offsets and tombstone horizons) survives a
  restart, so a compacted log is not cleaned again;
- ``cleanup.policy=compact,delete``: compaction and retention on one topic.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import confluent_kafka as ck
import pytest
from broker_process import BrokerProcess
from test_cleaner_broker import (
    check_consistent,
    consume_confluent,
    is_compacted,
    latest_by_key,
    produce_confluent,
    tail,
)
from test_transactions import SMALL, consume_all, txn_producer
from waiting import wait_until

from pystream.storage.checkpoints import RECOVERY_POINT_CHECKPOINT, OffsetCheckpointFile
from pystream.storage.cleaner_manager import CLEANER_HORIZON_CHECKPOINT, CLEANER_OFFSET_CHECKPOINT

# Batches well below the topics' segment.bytes (a batch must fit a segment).
SMALL_BATCHES = {"batch.size": "512"}


def segment_bases(directory: Path, suffix: str = ".log") -> list[int]:
    return sorted(int(p.name.split(".")[0]) for p in directory.glob(f"*{suffix}"))


def checkpointed(broker: BrokerProcess, name: str, topic: str) -> int | None:
    return OffsetCheckpointFile(str(broker.log_dir / name)).read().get((topic, 0))


# --- 1. the recovery point moves while the broker runs ----------------------------------------


def test_rolled_segments_are_flushed_and_checkpointed_so_a_crash_recovers_only_the_tail(
    tmp_path: Path,
) -> None:
    # Default flush settings (log.flush.scheduler.interval.ms = Long.MAX: no flush job).
    broker = BrokerProcess(tmp_path, {"log.flush.offset.checkpoint.interval.ms": "200"})
    broker.precreate_topic("rolled", configs={"segment.bytes": "1024"})
    broker.start()
    try:
        records = [(b"k%04d" % i, b"v" * 100 + b"%04d" % i) for i in range(300)]
        acked = sorted(produce_confluent(broker.bootstrap, "rolled", records, **SMALL_BATCHES))
        directory = broker.log_dir / "rolled-0"
        bases = segment_bases(directory)
        assert len(bases) >= 20, bases
        active_base = bases[-1]

        def checkpoint_reached() -> int | None:
            offset = checkpointed(broker, RECOVERY_POINT_CHECKPOINT, "rolled")
            return offset if offset is not None and offset >= active_base else None

        recovery_point = wait_until(
            checkpoint_reached,
            timeout=20,
            what=f"the recovery-point checkpoint of rolled-0 to reach {active_base}",
        )
        mark = broker.output_lines()
        broker.kill()
        broker.start()
        output = broker.output_since(mark)
        found = re.search(
            r"Recovering (\d+) of (\d+) segments of rolled-0 from offset (\d+) "
            r"\(recovery point (\d+)\)",
            output,
        )
        assert found, output
        assert found.groups() == ("1", str(len(bases)), str(active_base), str(recovery_point))
        assert consume_confluent(broker.bootstrap, "rolled", acked[-1][0]) == acked
    finally:
        broker.close()


# --- 2. lost .txnindex entries are rebuilt ----------------------------------------------------


def test_a_lost_transaction_index_is_rebuilt_from_the_abort_markers(tmp_path: Path) -> None:
    # No recovery-point checkpoint before the SIGKILL: every segment is unflushed, as after a
    # power loss that took the .txnindex writes with the data.
    broker = BrokerProcess(
        tmp_path, {**SMALL, "log.flush.offset.checkpoint.interval.ms": "3600000"}
    )
    broker.precreate_topic("txn", configs={"segment.bytes": "1024"})
    broker.start()
    try:
        producer = txn_producer(broker.bootstrap, "recovering", **SMALL_BATCHES)
        committed: list[bytes] = []
        for t in range(12):
            producer.begin_transaction()
            values = [b"t%02d-%02d-" % (t, i) + b"x" * 60 for i in range(8)]
            for value in values:
                producer.produce("txn", value=value, partition=0)
            if t % 3 == 1:
                assert producer.flush(30) == 0  # written before the abort (not purged)
                producer.abort_transaction(30)
            else:
                producer.commit_transaction(30)
                committed += values
        directory = broker.log_dir / "txn-0"
        indexes = segment_bases(directory, ".txnindex")
        assert len(indexes) >= 2, indexes
        # A producer snapshot past the index proves a replay from the newest snapshot
        # alone would not see its markers.
        assert segment_bases(directory, ".snapshot")[-1] > indexes[0]
        broker.kill()
        (directory / f"{indexes[0]:020d}.txnindex").unlink()
        broker.start()
        assert consume_all(broker.bootstrap, "txn", "read_committed", len(committed)) == committed
        assert (directory / f"{indexes[0]:020d}.txnindex").exists()
    finally:
        broker.close()


# --- 3 and 4: the cleaner ------------------------------------------------------------------

COMPACTED = {
    "cleanup.policy": "compact",
    "segment.bytes": "4096",
    "min.cleanable.dirty.ratio": "0.01",
}


@pytest.fixture(scope="module")
def cleaning(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker whose cleaner and retention look often, with a compacted topic ``kept``
    (tombstones kept a day: delete.retention.ms's default), ``probe`` (compacted, to see
    the cleaner at work) and ``both`` (cleanup.policy=compact,delete, retention.ms 10 min)."""
    broker = BrokerProcess(
        tmp_path_factory.mktemp("cleaning"),
        {"log.cleaner.backoff.ms": "50", "log.retention.check.interval.ms": "200"},
    )
    broker.precreate_topic("kept", configs=COMPACTED)
    broker.precreate_topic("probe", configs=COMPACTED)
    broker.precreate_topic(
        "both", configs={**COMPACTED, "cleanup.policy": "compact,delete", "retention.ms": "600000"}
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


def cleaner_ran_twice(broker: BrokerProcess, mark: int) -> None:
    """Make ``probe`` dirty twice and wait for both cleans: the cleaner has picked its
    filthiest log with nothing else cleanable in between, so a log it found cleanable
    since ``mark`` was cleaned by now."""
    for round_ in range(2):
        updates = [(b"p%02d" % (i % 10), b"round-%d" % round_) for i in range(40)]
        produce_confluent(broker.bootstrap, "probe", updates)
        tail(broker.bootstrap, "probe")
        wait_until(
            lambda n=round_ + 1: broker.output_since(mark).count("Cleaned probe-0") >= n,
            what=f"clean {round_ + 1} of probe-0",
        )


def test_a_cleaned_log_is_not_cleaned_again_after_a_restart(cleaning: BrokerProcess) -> None:
    broker = cleaning
    keys = [b"key-%02d" % i for i in range(10)]
    updates = [(k, b"old") for k in keys] + [(k, b"new") for k in keys]
    acked = produce_confluent(broker.bootstrap, "kept", updates + [(k, None) for k in keys[:3]])
    last = tail(broker.bootstrap, "kept")
    active_base = segment_bases(broker.log_dir / "kept-0")[-1]
    assert last >= active_base > acked[-1][0]
    wait_until(
        lambda: checkpointed(broker, CLEANER_OFFSET_CHECKPOINT, "kept") == active_base,
        what=f"kept-0 cleaned up to its active segment ({active_base})",
    )
    # The tombstones stay for delete.retention.ms (a day): their horizon is checkpointed.
    horizon = checkpointed(broker, CLEANER_HORIZON_CHECKPOINT, "kept")
    assert horizon is not None and horizon > time.time() * 1000 + 3_600_000
    records = consume_confluent(broker.bootstrap, "kept", last)
    # The newest record of each key, tombstones included (kept until their horizon).
    assert sorted(r for r in records if r[1] in keys) == sorted(latest_by_key(acked).values())
    assert [r[2] for r in records if r[1] in keys[:3]] == [None, None, None]

    for restart in (broker.restart, lambda: (broker.kill(), broker.start())):
        mark = broker.output_lines()
        restart()
        cleaner_ran_twice(broker, mark)
        output = broker.output_since(mark)
        assert "Cleaning kept-0" not in output, output
        assert checkpointed(broker, CLEANER_OFFSET_CHECKPOINT, "kept") == active_base
        assert checkpointed(broker, CLEANER_HORIZON_CHECKPOINT, "kept") == horizon
    # New dirty data: cleaned again, from the checkpointed offset on.
    mark = broker.output_lines()
    produce_confluent(broker.bootstrap, "kept", [(k, b"newer") for k in keys[3:]])
    tail(broker.bootstrap, "kept")
    broker.wait_for_output("Cleaning kept-0 (dirty ratio", timeout=30, since=mark)
    assert f"dirty [{active_base}, " in broker.output_since(mark)


def produce_at(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], timestamp: int):
    """Write ``records`` with the CreateTime ``timestamp`` (ms); their offsets."""
    offsets: list[int] = []
    errors: list[object] = []
    producer = ck.Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "batch.size": 2048}
    )
    for key, value in records:
        producer.produce(
            topic,
            value,
            key,
            partition=0,
            timestamp=timestamp,
            on_delivery=lambda err, msg: (
                errors.append(err) if err else offsets.append(msg.offset())
            ),
        )
    assert producer.flush(60) == 0
    assert not errors, errors
    return sorted(offsets)


def test_compact_delete_topic_is_compacted_and_loses_old_segments(cleaning: BrokerProcess) -> None:
    broker = cleaning
    hour_ago = int(time.time() * 1000) - 3_600_000
    old = [(b"old-%02d" % i, b"o" * 200) for i in range(40)]  # past retention.ms: whole segments
    old_offsets = produce_at(broker.bootstrap, "both", old, hour_ago)
    keys = [b"k%d" % i for i in range(10)]
    updates = [(k, b"v%02d-" % round_ + b"x" * 80) for round_ in range(10) for k in keys]
    acked = [(o, k, v) for o, (k, v) in zip(old_offsets, old, strict=True)]
    acked += produce_confluent(broker.bootstrap, "both", updates)
    last = tail(broker.bootstrap, "both")
    state: list[list[tuple[int, bytes | None, bytes | None]]] = [[]]

    def compacted_and_retained() -> bool:
        state[0] = records = consume_confluent(broker.bootstrap, "both", last)
        return records[0][0] > 0 and is_compacted(records, latest_by_key(acked), set(keys))

    wait_until(compacted_and_retained, what="both-0 compacted and its old segments deleted")
    records = state[0]
    check_consistent(
        [r for r in records if r[1] in keys or r[1] in dict(old)], dict((r[0], r) for r in acked)
    )
    # Retention took whole segments from the head (the oldest keys), compaction the old
    # values of k0..k9: each once, with its last value.
    assert b"old-00" not in {r[1] for r in records}
    assert {r[1]: r[2] for r in records if r[1] in keys} == {
        k: updates[-10 + i][1] for i, k in enumerate(keys)
    }
    output = broker.output()
    assert re.search(r"Deleting \d+ segments of \S+/both-0 \(retention\.ms\)", output), output
    assert "Cleaned both-0" in output
