"""Connect throughput: FileStreamSource → topic → FileStreamSink, lines/s, and a
worker's idle CPU.

Starts a broker (``pystream serve``) and a standalone worker (``pystream connect
standalone``, String converters) as subprocesses on free ports, then per round writes
``--lines`` lines of ``--size`` bytes (newline included) to a new file, creates a
topic (one partition), then a source and a sink connector over REST, and times until
the sink's file has every line:

* **end-to-end**: lines / (time from creating the connectors to the last line in the
  sink's file);
* **source**: lines / (time until the topic holds every line).

Then, with both connectors idle (everything read), the worker's CPU over
``--idle-seconds`` (utime+stime from ``/proc``), as % of one core.

Prints each round and the median of ``--runs`` rounds with the range::

    PYTHONPATH=src python bench/connect_file.py [--runs 3] [--lines 500000] [--size 100]

Broker, worker (source and sink tasks) and this script share the machine's cores.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from pystream.client import AdminClient, NewTopic, TopicPartition
from pystream.errors import UnknownTopicOrPartitionError

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}


def start(command: list[str], pattern: str, log: Path) -> tuple[subprocess.Popen[str], str]:
    """Start ``command``; return it with the first match of ``pattern`` in its output."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV
    )
    assert process.stdout is not None
    out = log.open("w")
    for line in process.stdout:
        out.write(line)
        match = re.search(pattern, line)
        if match:
            # Keep draining (into the log) so the child never blocks on a full pipe.
            threading.Thread(target=_drain, args=(process, out), daemon=True).start()
            return process, match.group(1)
    out.close()
    raise SystemExit(f"{' '.join(command[2:5])} did not start; see {log}")


def _drain(process: subprocess.Popen[str], out: Any) -> None:
    assert process.stdout is not None
    with out:
        for line in process.stdout:
            out.write(line)
            out.flush()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def one_round(
    http: httpx.Client, admin: AdminClient, work: Path, lines: int, size: int, keep: bool
) -> tuple[float, float]:
    """One measurement; the connectors are deleted after it unless ``keep`` (so idle
    connectors of earlier rounds do not load later ones)."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    source = work / f"{name}.in"
    sink = work / f"{name}.out"
    line = b"x" * (size - 1) + b"\n"
    source.write_bytes(line * lines)
    # The topic exists first, so the sink's group gets it at once.
    admin.create_topics([NewTopic(name, 1, 1)])
    start_time = time.perf_counter()
    for kind, config in (
        ("sink", {"connector.class": "FileStreamSink", "file": str(sink), "topics": name}),
        ("source", {"connector.class": "FileStreamSource", "file": str(source), "topic": name}),
    ):
        response = http.post("/connectors", json={"name": f"{name}-{kind}", "config": config})
        response.raise_for_status()
    source_done = None
    tp = TopicPartition(name, 0)
    while True:
        if source_done is None and name in admin.list_topics():
            try:
                if admin.list_offsets({tp: "latest"})[tp] >= lines:
                    source_done = time.perf_counter() - start_time
            except UnknownTopicOrPartitionError:
                pass  # created, not ready yet
        if count_lines(sink) >= lines:
            break
        time.sleep(0.05)
    total = time.perf_counter() - start_time
    if source_done is None:
        source_done = total
    if not keep:
        for kind in ("sink", "source"):
            http.delete(f"/connectors/{name}-{kind}").raise_for_status()
    return lines / total, lines / source_done


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):,.0f} (range {min(values):,.0f}-{max(values):,.0f})"


def start_broker(work: Path) -> tuple[subprocess.Popen[str], str]:
    """``pystream serve`` on a free port with its log dir under ``work``: the process and
    its bootstrap address (groups form at once)."""
    return start(
        [
            sys.executable,
            "-m",
            "pystream",
            "serve",
            "--override",
            f"log.dirs={work}/data",
            "--override",
            "listeners=PLAINTEXT://127.0.0.1:0",
            "--override",
            "group.initial.rebalance.delay.ms=0",
        ],
        r"clients: bootstrap\.servers=(\S+)",
        work / "broker.log",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--size", type=int, default=100, help="bytes per line, newline included")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument(
        "--keep-logs", metavar="DIR", help="copy the broker's and worker's logs here at the end"
    )
    args = parser.parse_args()
    # A SIGTERM (e.g. from timeout) still stops the broker and worker in ``finally``.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with tempfile.TemporaryDirectory(prefix="connect-bench-") as tmp:
        work = Path(tmp)
        broker, bootstrap = start_broker(work)
        worker_props = work / "worker.properties"
        worker_props.write_text(
            f"bootstrap.servers={bootstrap}\n"
            "key.converter=org.apache.kafka.connect.storage.StringConverter\n"
            "value.converter=org.apache.kafka.connect.storage.StringConverter\n"
            f"offset.storage.file.filename={work}/offsets.json\n"
            "offset.flush.interval.ms=10000\n"
            "listeners=http://127.0.0.1:0\n"
        )
        worker, url = start(
            [
                sys.executable,
                "-m",
                "pystream",
                "connect",
                "standalone",
                str(worker_props),
                "--log-level",
                "INFO" if args.keep_logs else "WARNING",
            ],
            r"connect worker listening on (\S+)",
            work / "worker.log",
        )
        try:
            with httpx.Client(base_url=url, timeout=60) as http, AdminClient(bootstrap) as admin:
                end_to_end, source = [], []
                for run in range(args.runs):
                    e2e, src = one_round(
                        http, admin, work, args.lines, args.size, run == args.runs - 1
                    )
                    end_to_end.append(e2e)
                    source.append(src)
                    print(
                        f"round {run + 1}: end-to-end {e2e:,.0f} lines/s, "
                        f"source {src:,.0f} lines/s",
                        flush=True,
                    )
                print(f"{args.lines:,} lines of {args.size} B, {args.runs} rounds")
                print(f"end-to-end lines/s: {summary(end_to_end)}")
                print(f"source lines/s:     {summary(source)}")
                connectors = len(http.get("/connectors").json())
                before = cpu_seconds(worker.pid)
                time.sleep(args.idle_seconds)
                idle = (cpu_seconds(worker.pid) - before) / args.idle_seconds * 100
                print(
                    f"idle worker CPU with {connectors} idle connectors: {idle:.1f}% of a core "
                    f"over {args.idle_seconds:.0f} s"
                )
        finally:
            for process in (worker, broker):
                process.terminate()
                process.wait(60)
            if args.keep_logs:
                Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
                for log in ("worker.log", "broker.log"):
                    shutil.copy(work / log, Path(args.keep_logs) / log)


if __name__ == "__main__":
    main()
