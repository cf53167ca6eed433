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
from pathlib import Path

from broker_process import BrokerProcess
from test_cleaner_broker import consume_confluent, produce_confluent
from test_transactions import SMALL, consume_all, txn_producer
from waiting import wait_until

from pystream.storage.checkpoints import RECOVERY_POINT_CHECKPOINT, OffsetCheckpointFile

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
