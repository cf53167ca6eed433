"""Connect distributed mode: how long a SIGKILLed worker's task takes to run again on
another worker, and a distributed worker's idle CPU.

Starts a broker (``pystream serve``) and two ``pystream connect distributed`` workers
(one group, String converters) on free ports.  Each round creates a FileStreamSource
connector, waits for its task to run, SIGKILLs the worker running the task and times
until the task is RUNNING on the other one (the session timeout, then a rebalance and
the task's start), then starts a fresh worker in place of the killed one.  Then, with
one idle connector, the CPU of each worker over ``--idle-seconds`` (utime+stime from
``/proc``), as % of one core.

    PYTHONPATH=src python bench/connect_failover.py [--runs 3] [--session-timeout-ms 10000]

Broker, workers and this script share the machine's cores.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from connect_file import cpu_seconds, start, start_broker


def start_worker(
    work: Path, index: int, bootstrap: str, session_ms: int
) -> tuple[subprocess.Popen[str], str]:
    props = work / f"worker-{index}.properties"
    props.write_text(
        f"bootstrap.servers={bootstrap}\n"
        "group.id=failover-bench\n"
        "config.storage.replication.factor=1\n"
        "offset.storage.replication.factor=1\n"
        "status.storage.replication.factor=1\n"
        "key.converter=org.apache.kafka.connect.storage.StringConverter\n"
        "value.converter=org.apache.kafka.connect.storage.StringConverter\n"
        f"session.timeout.ms={session_ms}\n"
        "listeners=http://127.0.0.1:0\n"
    )
    command = [sys.executable, "-m", "pystream", "connect", "distributed", str(props)]
    return start(command, r"connect worker listening on (\S+)", work / f"worker-{index}.log")


def task_worker(url: str, name: str) -> str | None:
    """The worker_id running task 0 of ``name``, if it is RUNNING."""
    try:
        doc = httpx.get(f"{url}/connectors/{name}/status", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return None
    tasks = doc.get("tasks") or []
    if tasks and tasks[0]["state"] == "RUNNING":
        return str(tasks[0]["worker_id"])
    return None


def wait_running(url: str, name: str, not_on: str = "", timeout: float = 120.0) -> str:
    """Wait until task 0 of ``name`` is RUNNING on a worker other than ``not_on``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owner = task_worker(url, name)
        if owner is not None and owner != not_on:
            return owner
        time.sleep(0.05)
    raise SystemExit(f"{name}'s task did not run within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--session-timeout-ms", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with tempfile.TemporaryDirectory(prefix="connect-failover-") as tmp:
        work = Path(tmp)
        broker, bootstrap = start_broker(work)
        workers = [start_worker(work, i, bootstrap, args.session_timeout_ms) for i in (0, 1)]
        started = 2
        try:
            times = []
            for run in range(args.runs):
                name = f"failover-{uuid.uuid4().hex[:8]}"
                source = work / f"{name}.txt"
                source.write_text("line\n")
                config = {"connector.class": "FileStreamSource", "file": str(source), "topic": name}
                url = workers[0][1]
                httpx.post(
                    f"{url}/connectors", json={"name": name, "config": config}, timeout=60
                ).raise_for_status()
                owner = wait_running(url, name)
                victim = next(i for i, (_, u) in enumerate(workers) if u.endswith(owner))
                survivor_url = workers[1 - victim][1]
                workers[victim][0].kill()
                killed = time.perf_counter()
                wait_running(survivor_url, name, not_on=owner)
                elapsed = time.perf_counter() - killed
                times.append(elapsed)
                print(f"round {run + 1}: task running again after {elapsed:.2f} s", flush=True)
                workers[victim][0].wait()
                workers[victim] = start_worker(work, started, bootstrap, args.session_timeout_ms)
                started += 1
            print(
                f"failover with session.timeout.ms={args.session_timeout_ms}: median "
                f"{statistics.median(times):.2f} s (range {min(times):.2f}-{max(times):.2f})"
            )
            time.sleep(5)  # the last rebalance settles
            before = [cpu_seconds(p.pid) for p, _ in workers]
            time.sleep(args.idle_seconds)
            for (process, url), first in zip(workers, before, strict=True):
                idle = (cpu_seconds(process.pid) - first) / args.idle_seconds * 100
                print(f"idle worker {url}: {idle:.1f}% of a core over {args.idle_seconds:.0f} s")
        finally:
            for process, _ in workers:
                process.terminate()
                process.wait(60)
            broker.terminate()
            broker.wait(60)


if __name__ == "__main__":
    main()
