"""Event-loop lag of a broker during operations that used to block it.

Runs a broker in this process (its event loop on its own thread), samples how late a
5 ms timer on that loop wakes, and reports the worst lag seen during each operation,
driven from the main thread by confluent-kafka:

- ``create``: CreateTopics of one topic with ``--partitions`` (default 200) partitions;
- ``group``: the first consumer group join on a fresh broker (FindCoordinator creates
  the 50 ``__consumer_offsets`` partitions);
- ``retention``: retention deleting ~80 segments at once (``retention.bytes=0``);
- ``delete``: DeleteTopics of the ``create`` topic (its directories are removed).

    PYTHONPATH=src python bench/loop_lag.py --runs 3
    python bench/loop_lag.py --src /path/to/other/checkout/src   # another version

``--src`` puts another checkout's ``src`` first on ``sys.path`` (built in place), so
two versions are measured by the same script on the same machine.  The sampler is
this script's own (not the broker's monitor), so older versions are measured alike.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

SAMPLE_S = 0.005


class Sampler:
    """Worst lateness of a 5 ms timer on the broker's loop since the last reset."""

    def __init__(self) -> None:
        self.max_ms = 0.0

    async def run(self) -> None:
        while True:
            expected = time.monotonic() + SAMPLE_S
            await asyncio.sleep(SAMPLE_S)
            self.max_ms = max(self.max_ms, (time.monotonic() - expected) * 1000)


def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def one_run(partitions: int) -> dict[str, float]:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

    from pystream.broker.server import Broker
    from pystream.config import BrokerConfig

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    directory = tempfile.mkdtemp(prefix="loop-lag-")
    config = BrokerConfig.from_properties(
        {
            "log.dirs": directory,
            "listeners": "PLAINTEXT://127.0.0.1:0",
            "log.retention.check.interval.ms": "200",
            "file.delete.delay.ms": "0",
            "log.segment.delete.delay.ms": "0",
            "group.initial.rebalance.delay.ms": "0",
        }
    )
    broker = Broker(config)
    asyncio.run_coroutine_threadsafe(broker.start(), loop).result(60)
    sampler = Sampler()
    sampling = asyncio.run_coroutine_threadsafe(sampler.run(), loop)
    bootstrap = f"127.0.0.1:{next(iter(broker.bound_ports.values()))}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    results: dict[str, float] = {}

    def measure(name: str, operation: Callable[[], Any]) -> None:
        time.sleep(0.3)  # let the previous operation's tail settle
        sampler.max_ms = 0.0
        operation()
        time.sleep(0.3)  # work finishing just after the answer (deletes) counts too
        results[name] = sampler.max_ms

    def log_dirs() -> list[str]:
        import os

        return os.listdir(directory)

    def create() -> None:
        admin.create_topics([NewTopic("wide", partitions, 1)])["wide"].result(60)

    def group() -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "lag",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe(["wide"])
        deadline = time.monotonic() + 60
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.1)
        consumer.close()

    def fill() -> None:
        admin.create_topics([NewTopic("aged", 1, 1, config={"segment.bytes": "20000"})])[
            "aged"
        ].result(30)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for _ in range(1600):  # 1.6 MB: ~80 segments of 20 kB
            producer.produce("aged", b"x" * 1000)
        producer.flush(30)

    def retention() -> None:
        resource = ConfigResource("topic", "aged", set_config={"retention.bytes": "0"})
        admin.alter_configs([resource])[resource].result(30)

        def segments() -> int:
            import glob

            return len(glob.glob(f"{directory}/aged-0/*.log"))

        wait(lambda: segments() <= 2, 30, "retention did not delete the segments")

    def delete() -> None:
        admin.delete_topics(["wide"])["wide"].result(30)
        wait(lambda: not any(d.startswith("wide-") for d in log_dirs()), 30, "dirs stay")

    try:
        measure("create", create)
        measure("group", group)
        fill()
        measure("retention", retention)
        measure("delete", delete)
    finally:
        sampling.cancel()
        asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=200)
    parser.add_argument("--src", help="another checkout's src/ to measure instead")
    args = parser.parse_args()
    if args.src:
        sys.path.insert(0, args.src)
    import pystream

    print(f"pystream from {pystream.__file__}")
    runs = [one_run(args.partitions) for _ in range(args.runs)]
    print(f"{'operation':<10} {'median ms':>10} {'min':>8} {'max':>8}   (max event-loop lag)")
    for name in runs[0]:
        values = [r[name] for r in runs]
        print(
            f"{name:<10} {statistics.median(values):>10.1f} {min(values):>8.1f} {max(values):>8.1f}"
        )


if __name__ == "__main__":
    main()
