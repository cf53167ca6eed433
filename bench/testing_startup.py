"""Start-up of the pytest plugin's broker: fixture request -> first acknowledged produce.

Each run is a fresh Python process (as a test session is): it imports the client as a
test module would, then times what ``kafka_broker`` does on first request (build a
``KafkaBroker``, start it, wait for Metadata) plus one confluent-kafka produce
acknowledged with acks=all -- for the session's first broker (``first_produce_ms``:
pystream's broker modules are imported then, once per session) and for a second
broker in the same process (``warm_first_produce_ms``: e.g. a test's own
``scope="function"`` broker).  Modules are loaded from compiled bytecode, as from an
installed package (a cache of the script's own, whatever PYTHONDONTWRITEBYTECODE says;
``--no-bytecode-cache`` compiles them from source every run instead).  Thread mode (the
broker in the test process) and process mode (``pystream serve`` as a child), ``--runs``
each after one uncounted run; prints the median and spread.

    PYTHONPATH=src python bench/testing_startup.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ONE_RUN = r"""
import json, sys, tempfile, time
from pathlib import Path

import confluent_kafka  # what a test module imports before its fixtures run


def first_produce(mode):
    started = time.perf_counter()
    from pystream.testing.broker import KafkaBroker

    broker = KafkaBroker(Path(tempfile.mkdtemp()), mode=mode).start()
    ready = time.perf_counter()
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "acks": "all"}
    )
    producer.produce("startup", b"first")
    assert producer.flush(30) == 0
    produced = time.perf_counter()
    broker.close()
    return (ready - started) * 1e3, (produced - started) * 1e3


mode = sys.argv[1]
cold_ready, cold = first_produce(mode)  # the session's first broker: imports included
warm_ready, warm = first_produce(mode)  # another broker in the same session
print(json.dumps({"ready_ms": cold_ready, "first_produce_ms": cold,
                  "warm_ready_ms": warm_ready, "warm_first_produce_ms": warm}))
"""


def measure(mode: str, bytecode_cache: bool) -> dict[str, float]:
    src = str(Path(__file__).resolve().parent.parent / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    if bytecode_cache:
        # As an installed package has: compiled modules, in a cache of our own (so that a
        # PYTHONDONTWRITEBYTECODE environment measures the same and the tree stays clean).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "pystream-bench-pycache")
    done = subprocess.run(
        [sys.executable, "-c", ONE_RUN, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if done.returncode != 0:
        raise SystemExit(f"a {mode} run failed (exit {done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--modes", default="thread,process")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="compile every module from source each run (PYTHONDONTWRITEBYTECODE as set)",
    )
    args = parser.parse_args()
    cache = not args.no_bytecode_cache
    for mode in args.modes.split(","):
        measure(mode, cache)  # not counted: fills the bytecode cache, warms the page cache
        runs = [measure(mode, cache) for _ in range(args.runs)]
        for key in runs[0]:
            values = sorted(r[key] for r in runs)
            print(
                f"{mode:8s} {key:22s} median {statistics.median(values):7.0f} ms "
                f"(min {values[0]:.0f}, max {values[-1]:.0f}, {args.runs} runs)"
            )


if __name__ == "__main__":
    main()
