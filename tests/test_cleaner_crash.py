"""Crash safety of the log cleaner: a real process cleaning a real log is SIGKILLed at every
step of its cleans (map built, part of a cleaned file written, cleaned file fsynced, renamed
to .swap, old segments renamed .deleted, swapped in, checkpointed), then the log is
recovered as a broker would.  Whatever the moment, nothing compaction should keep is lost,
offsets are unchanged, and the next clean completes the compaction.

The child reports each step on stdout and waits for the parent before going on, so each
kill lands exactly at its step (no timing involved)."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_cleaner import History, append, check_log, updates

import pystream
from pystream.config import LogConfig
from pystream.storage.cleaner import CleanerConfig, LogCleaner
from pystream.storage.log_manager import LogManager

TOPIC_PROPS = {
    "cleanup.policy": "compact",
    "segment.bytes": "2048",
    "delete.retention.ms": "0",  # tombstones go in the clean after the one that stamps them
    "file.delete.delay.ms": "60000",
}

CHILD = r"""
import sys
from pystream.config import LogConfig
from pystream.storage.cleaner import CleanerConfig, LogCleaner
from pystream.storage.log_manager import LogManager

data_dir, props = sys.argv[1], dict(arg.split("=", 1) for arg in sys.argv[2:])
lm = LogManager([data_dir], LogConfig(), topic_configs={"t": LogConfig.from_properties(props)})
cleaner = LogCleaner(lm, CleanerConfig(io_buffer_size=64 * 1024))

def progress(step):
    print(step, flush=True)
    sys.stdin.readline()  # the parent lets us go on, or SIGKILLs us right here

for _ in range(10):
    if cleaner.clean_once(progress) is None:
        break
print("done", flush=True)
"""


def build(tmp_path: Path) -> tuple[Path, History]:
    """A compacted partition with many segments, mixed codecs and tombstones."""
    data = tmp_path / "pristine"
    lm = LogManager(
        [str(data)], LogConfig(), topic_configs={"t": LogConfig.from_properties(TOPIC_PROPS)}
    )
    log = lm.get_or_create_log("t", 0)
    history = History()
    for round_, codec in enumerate([0, 1, 3, 0, 4]):
        append(
            log, history, updates(150, 25, seed=round_, tombstones=0.1), per_batch=5, codec=codec
        )
    log.roll()
    append(log, history, [(b"tail", b"in the active segment")])
    lm.checkpoint_high_watermarks()
    lm.shutdown()
    return data, history


def run_child(data: Path, kill_at: int | None) -> list[str]:
    """Run the cleaning process; SIGKILL it when it reports step number ``kill_at``."""
    env = {**os.environ, "PYTHONPATH": str(Path(pystream.__file__).resolve().parent.parent)}
    args = [sys.executable, "-c", CHILD, str(data), *(f"{k}={v}" for k, v in TOPIC_PROPS.items())]
    child = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdin is not None and child.stdout is not None
    steps: list[str] = []
    try:
        for line in child.stdout:
            step = line.strip()
            if step == "done":
                break
            steps.append(step)
            if kill_at is not None and len(steps) == kill_at:
                child.kill()  # SIGKILL: no cleanup code runs
                break
            child.stdin.write("\n")
            child.stdin.flush()
    finally:
        child.wait(60)
    return steps


def recover_and_check(data: Path, history: History) -> None:
    lm = LogManager(
        [str(data)], LogConfig(), topic_configs={"t": LogConfig.from_properties(TOPIC_PROPS)}
    )
    log = lm.get_log("t", 0)
    assert log is not None
    names = os.listdir(log.directory)
    assert not [n for n in names if n.endswith((".cleaned", ".swap", ".deleted"))]
    check_log(log, history, 0)  # nothing that compaction keeps is lost
    cleaner = LogCleaner(lm, CleanerConfig())
    for _ in range(10):
        if cleaner.clean_once() is None:
            break
    records = check_log(log, history, log.active_segment.base_offset)
    below = [r for r in records if r[0] < log.active_segment.base_offset]
    assert len(below) <= 25 and all(value is not None for _, _, value in below)
    lm.shutdown()


def test_sigkill_at_every_step_of_a_clean_loses_nothing(tmp_path: Path) -> None:
    pristine, history = build(tmp_path)
    dry = tmp_path / "dry"
    shutil.copytree(pristine, dry)
    steps = run_child(dry, kill_at=None)
    # Two cleans: the first compacts and stamps tombstones, the second drops them.
    assert steps.count("checkpointed") == 2
    for needed in ("mapped", "cleaning", "cleaned", "swap", "replaced", "swapped"):
        assert needed in steps
    recover_and_check(dry, history)
    # Every step once if there are few, else a bounded random sample plus every kind of step.
    points = list(range(1, len(steps) + 1))
    if len(points) > 24:
        rng = random.Random(7)
        firsts = {steps.index(s) + 1 for s in set(steps)}
        points = sorted(firsts | set(rng.sample(points, 24 - len(firsts))))
    for point in points:
        run = tmp_path / f"kill-{point}"
        shutil.copytree(pristine, run)
        seen = run_child(run, kill_at=point)
        assert len(seen) == point
        recover_and_check(run, history)
        shutil.rmtree(run)


@pytest.mark.parametrize("repeat", range(2))
def test_repeated_kills_at_random_steps_converge(tmp_path: Path, repeat: int) -> None:
    # Crash, restart, crash again ...: each restart resumes from what the last one left.
    pristine, history = build(tmp_path)
    rng = random.Random(repeat)
    for _ in range(6):
        run_child(pristine, kill_at=rng.randrange(1, 12))
        lm = LogManager(
            [str(pristine)],
            LogConfig(),
            topic_configs={"t": LogConfig.from_properties(TOPIC_PROPS)},
        )
        log = lm.get_log("t", 0)
        assert log is not None
        check_log(log, history, 0)
        lm.shutdown()
    recover_and_check(pristine, history)
