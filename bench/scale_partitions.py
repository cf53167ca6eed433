"""Many partitions on one broker (issue 19's partition targets).

Starts one ``pystream serve`` and measures, in order:

* **create**: ``--topics`` topics of ``--partitions`` partitions each, one CreateTopics
  per topic through confluent-kafka's AdminClient: seconds for each and in all, and the
  broker's resident memory (RSS) before, at its peak and after, per partition;
* **data**: ``--records`` records of 100 B produced to every partition (confluent-kafka);
* **idle CPU**: the broker's CPU share over ``--idle-seconds`` with nothing to do;
* **Metadata**: a Metadata request for every topic (v12, raw wire: the broker's time
  plus the loopback), median and p99 of ``--metadata-requests``;
* **consume**: one confluent-kafka consumer assigned every partition, from the start,
  records/s; against a one-partition topic holding the same number of records;
* **restart**: ``--restarts`` clean stops (SIGTERM) and starts, then as many SIGKILLs
  and starts: seconds from spawn to "listening" (the logs loaded and recovered).

    python bench/scale_partitions.py [--topics 10] [--partitions 1000] [--records 100]

Prints each figure; the restarts as median and range.  The broker shares the machine
with this process and confluent-kafka's threads.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

from authorizer_overhead import Broker
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pystream.protocol.headers import RequestHeader, decode_response, encode_request_frame
from pystream.protocol.messages.metadata import MetadataRequest

VALUE = b"x" * 100


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_start(broker: Broker) -> float:
    started = time.perf_counter()
    broker.start()
    return time.perf_counter() - started


def create_topics(admin: AdminClient, names: list[str], partitions: int, pid: int) -> None:
    before = memory_kib(pid)["VmRSS"]
    started = time.perf_counter()
    for name in names:
        t = time.perf_counter()
        futures = admin.create_topics(
            [NewTopic(name, partitions, 1)], request_timeout=600, operation_timeout=600
        )
        for future in futures.values():
            future.result(timeout=600)
        print(f"  created {name} ({partitions} partitions) in {time.perf_counter() - t:.2f} s")
    elapsed = time.perf_counter() - started
    after = memory_kib(pid)
    count = len(names) * partitions
    print(f"create: {count:,} partitions in {elapsed:.2f} s ({elapsed / count * 1e3:.3f} ms each)")
    print(
        f"RSS: {before / 1024:.0f} MiB before, peak {after['VmHWM'] / 1024:.0f} MiB, "
        f"after {after['VmRSS'] / 1024:.0f} MiB: "
        f"{(after['VmHWM'] - before) / count:.1f} KiB per partition at the peak, "
        f"{(after['VmRSS'] - before) / count:.1f} KiB after"
    )


def produce_everywhere(bootstrap: str, names: list[str], partitions: int, records: int) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000}
    )
    started = time.perf_counter()
    total = 0
    for _ in range(records):
        for name in names:
            for partition in range(partitions):
                while True:
                    try:
                        producer.produce(name, VALUE, partition=partition)
                        break
                    except BufferError:
                        producer.poll(0.05)
                total += 1
        producer.poll(0)
    producer.flush(300)
    print(f"data: {total:,} records of 100 B in {time.perf_counter() - started:.1f} s")


def consume_rate(bootstrap: str, assignment: list[TopicPartition], expected: int) -> float:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"scale-{time.time_ns()}",
            "enable.auto.commit": False,
            # As e2e.py's consume scenario: 8 MiB per partition and fetch, so that one
            # partition is not held back by the per-partition default (1 MiB).
            "fetch.max.bytes": 52428800,
            "max.partition.fetch.bytes": 8388608,
            "queued.max.messages.kbytes": 262144,
        }
    )
    consumer.assign(assignment)
    seen = 0
    started = None
    deadline = time.monotonic() + 600
    while seen < expected and time.monotonic() < deadline:
        for message in consumer.consume(10000, timeout=1.0):
            if message.error() is None:
                if started is None:
                    started = time.perf_counter()
                seen += 1
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    if seen < expected:
        raise SystemExit(f"consumed {seen} of {expected} records")
    return seen / elapsed if elapsed > 0 else float("nan")


def metadata_latency(bootstrap: str, requests: int) -> list[float]:
    host, port = bootstrap.rsplit(":", 1)
    times = []
    with socket.create_connection((host, int(port))) as sock:
        for correlation_id in range(requests):
            frame = encode_request_frame(
                RequestHeader(
                    request_api_key=3,
                    request_api_version=12,
                    correlation_id=correlation_id,
                    client_id="scale-bench",
                ),
                MetadataRequest(topics=None, allow_auto_topic_creation=False),
            )
            started = time.perf_counter()
            sock.sendall(frame)
            size = struct.unpack(">i", _read(sock, 4))[0]
            payload = _read(sock, size)
            times.append((time.perf_counter() - started) * 1000)
        _, response = decode_response(payload, 3, 12)
    partitions = sum(len(t.partitions) for t in response.topics)
    print(f"Metadata: {len(response.topics)} topics, {partitions:,} partitions, {size:,} bytes")
    return times


def _read(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise SystemExit("the broker closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (range {min(values):.2f} .. {max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topics", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=1000)
    parser.add_argument("--records", type=int, default=100, help="records per partition")
    parser.add_argument("--idle-seconds", type=float, default=20)
    parser.add_argument("--metadata-requests", type=int, default=30)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep the broker's data and log here")
    ns = parser.parse_args()
    work = ns.keep or Path(tempfile.mkdtemp(prefix="scale-bench-"))
    broker = Broker(work, {"metrics.enable": "false"})
    print(f"first start: {timed_start(broker):.2f} s (empty)")
    assert broker.process is not None
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    names = [f"scale-{i}" for i in range(ns.topics)]
    try:
        create_topics(admin, names, ns.partitions, broker.process.pid)
        total = ns.topics * ns.partitions * ns.records
        produce_everywhere(broker.bootstrap, names, ns.partitions, ns.records)
        single = "scale-single"
        admin.create_topics([NewTopic(single, 1, 1)])[single].result(60)
        del admin  # its connection would only retry through the restarts below
        produce_everywhere(broker.bootstrap, [single], 1, total)

        pid = broker.process.pid
        time.sleep(2)
        cpu = cpu_seconds(pid)
        time.sleep(ns.idle_seconds)
        idle = (cpu_seconds(pid) - cpu) / ns.idle_seconds * 100
        print(f"idle CPU: {idle:.2f}% of a core over {ns.idle_seconds:.0f} s")
        print(f"RSS idle: {memory_kib(pid)['VmRSS'] / 1024:.0f} MiB")

        times = sorted(metadata_latency(broker.bootstrap, ns.metadata_requests))
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        print(f"Metadata all topics: median {statistics.median(times):.1f} ms, p99 {p99:.1f} ms")

        everything = [TopicPartition(name, p, 0) for name in names for p in range(ns.partitions)]
        wide = consume_rate(broker.bootstrap, everything, total)
        narrow = consume_rate(broker.bootstrap, [TopicPartition(single, 0, 0)], total)
        print(
            f"consume: {len(everything):,} partitions {wide:,.0f} rec/s, one partition "
            f"{narrow:,.0f} rec/s ({100 * wide / narrow:.0f}%)"
        )

        for kind, sig in (("clean", signal.SIGTERM), ("SIGKILL", signal.SIGKILL)):
            starts, stops = [], []
            for _ in range(ns.restarts):
                assert broker.process is not None
                stopped = time.perf_counter()
                broker.process.send_signal(sig)
                broker.process.wait(300)
                stops.append(time.perf_counter() - stopped)
                broker.process = None
                starts.append(timed_start(broker))
            if kind == "clean":
                print(f"clean stop: {summary(stops)} s")
            print(f"start after {kind}: {summary(starts)} s over {len(starts)} restarts")
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
