"""End-to-end benchmark of a replicated pystream cluster: ZooKeeper and three brokers.

Run (it starts everything itself, on loopback, in a temporary directory)::

    python bench/e2e_cluster.py [--records-100b 2m] [--records-1k 300k] [--failovers 5] \
        [--repeat 3] [--broker-config num.replica.fetchers=2]

In one run it measures, with confluent-kafka (librdkafka) as the client:

==================  ===========================================================================
measurement         what
==================  ===========================================================================
produce throughput  1 KiB and 100 B records to a one-partition topic, one Python loop, for
                    RF=1 acks=1, RF=3 acks=1 and RF=3 acks=all (min.insync.replicas=2);
                    from the first ``produce()`` to the last delivery report
follower lag        during every RF=3 produce run, sampled every ``--lag-interval-ms``:
                    leader log size minus each follower's (DescribeLogDirs), in bytes and
                    in records (bytes / the leader's bytes per record at the end); p50,
                    p99 and max of the samples
RF=3/RF=1 ratio     each RF=3 row's records/s over the RF=1 row's of the same size and round
failover time       SIGKILL of the partition's leader -> the first acks=all record produced
                    after the kill is acknowledged; ``--failovers`` times (the victim restarts
                    and rejoins the ISR in between), median and max
==================  ===========================================================================

Producers use e2e.py's settings (linger.ms=5, 1 MB batches, no compression); acks as
in the row.  Failover time is dominated by the ZooKeeper session timeout (the
brokers' ``zookeeper.session.timeout.ms``, printed with the results): a SIGKILLed
broker is noticed only when its session expires.  Every wait has a deadline
(``--timeout`` per measurement), so the run is bounded.  ``--repeat N`` runs the
throughput rows N times on the same cluster and prints the median and range of each
figure (the failovers run once, after).  Exit status: 0 when every
measurement gave a figure, 1 when one failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
# e2e.py's producer settings and loops; the tests' ZooKeeper and broker processes.
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent / "tests")]
try:
    import pystream  # noqa: F401 - installed
except ImportError:  # this checkout, built in place
    sys.path.append(str(BENCH_DIR.parent / "src"))

import e2e  # noqa: E402
from broker_process import BrokerProcess, KafkaWire  # noqa: E402
from cluster_fixtures import cluster_broker  # noqa: E402
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from zookeeper import SESSION_TIMEOUT_MS, TICK_MS  # noqa: E402

from pystream.cli.local_zookeeper import (  # noqa: E402
    LocalZooKeeper,
    ZooKeeperNotInstalledError,
    require_zookeeper,
)
from pystream.protocol.messages.describe_log_dirs import DescribeLogDirsRequest  # noqa: E402

BROKERS = 3
CLUSTER_OVERRIDES = {
    "min.insync.replicas": "2",
    # Preferred-leader rebalancing would move leaders back between failovers.
    "auto.leader.rebalance.enable": "false",
}
RUNS = ((1, "1"), (3, "1"), (3, "all"))  # (replication factor, acks) per size


@dataclass
class LagSamples:
    """Follower lag behind the leader, in bytes, sampled during a produce run."""

    bytes_behind: list[int] = field(default_factory=list)
    errors: int = 0


@dataclass
class ThroughputRow:
    size: int
    replication_factor: int
    acks: str
    records: int
    seconds: float  # first produce() to last delivery report
    catch_up: float  # last delivery report to the high watermark at the last record
    lag: LagSamples | None
    bytes_per_record: float
    round: int = 0
    # Over the produce window: the brokers' CPU (all three, seconds) and how busy the
    # whole machine was (busy CPU time / (wall time x CPUs)): is the row CPU-bound?
    broker_cpu: float = 0.0
    machine_busy: float = 0.0

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds

    def lag_bytes(self, percentile: float) -> int | None:
        """The ``percentile`` (0..1, nearest rank) of the lag samples, in bytes."""
        if self.lag is None or not self.lag.bytes_behind:
            return None
        ordered = sorted(self.lag.bytes_behind)
        return ordered[min(len(ordered) - 1, int(len(ordered) * percentile))]

    def lag_records(self, percentile: float) -> float | None:
        value = self.lag_bytes(percentile)
        return None if value is None else value / self.bytes_per_record


def spread(values: Sequence[float], fmt: str = ",.0f") -> str:
    """``median (min-max)`` of one figure over the rounds (just the value for one round)."""
    if not values:
        return "-"
    median = format(statistics.median(values), fmt)
    if len(values) == 1:
        return median
    return f"{median} ({format(min(values), fmt)}-{format(max(values), fmt)})"


# --- the cluster -----------------------------------------------------------------------------
class Cluster:
    """ZooKeeper and three brokers in a temporary directory; ``close()`` stops them all."""

    def __init__(
        self, directory: Path, java: str, jar: str, overrides: dict[str, str] | None = None
    ) -> None:
        self.directory = directory
        self.overrides = {**CLUSTER_OVERRIDES, **(overrides or {})}
        # The tests' ZooKeeper settings: short ticks allow their short session timeout.
        self.zookeeper = LocalZooKeeper(
            directory / "zookeeper", jar=jar, java=java, tick_ms=TICK_MS, force_sync=False
        )
        self.brokers: dict[int, BrokerProcess] = {}
        self.admin: AdminClient | None = None
        self.consumer: Consumer | None = None  # for watermarks; never joins its group

    def start(self) -> Cluster:
        self.zookeeper.start()
        connect = f"{self.zookeeper.hosts}/pystream-bench"
        for broker_id in range(BROKERS):
            broker = cluster_broker(self.directory, connect, broker_id)
            broker.overrides.update(self.overrides)
            self.brokers[broker_id] = broker
            broker.start()
        # Every broker keeps its port across restarts: one admin client for the whole run.
        self.admin = AdminClient({"bootstrap.servers": self.bootstrap()})
        self.consumer = Consumer({"bootstrap.servers": self.bootstrap(), "group.id": "bench"})
        return self

    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values() if b.process is not None)

    def high_watermark(self, topic: str) -> int:
        """ListOffsets (latest) of ``topic``-0 from its leader."""
        assert self.consumer is not None
        low_high = self.consumer.get_watermark_offsets(
            TopicPartition(topic, 0), timeout=e2e.METADATA_TIMEOUT, cached=False
        )
        return low_high[1]

    def close(self) -> None:
        """Stop whatever was started (also after a failed start)."""
        if self.consumer is not None:
            self.consumer.close()
        for broker in self.brokers.values():
            if broker.process is not None:
                broker.stop()
        self.zookeeper.stop()

    def create_topic(self, name: str, replication_factor: int, deadline: e2e.Deadline) -> None:
        assert self.admin is not None
        futures = self.admin.create_topics(
            [NewTopic(name, 1, replication_factor)], operation_timeout=15
        )
        futures[name].result(timeout=deadline.remaining(1.0))
        self.wait_partition(name, deadline, lambda p: len(p.isrs) == replication_factor)

    def delete_topic(self, name: str) -> None:
        """Delete a measured topic (its files go in the brokers' background)."""
        assert self.admin is not None
        self.admin.delete_topics([name], operation_timeout=15)[name].result(timeout=30)

    def partition(self, topic: str) -> Any | None:
        """Partition 0 of ``topic`` as the cluster's Metadata describes it (None: unknown)."""
        assert self.admin is not None
        try:
            topics = self.admin.list_topics(topic, timeout=e2e.METADATA_TIMEOUT).topics
        except KafkaException:
            return None
        found = topics.get(topic)
        if found is None or found.error is not None or 0 not in found.partitions:
            return None
        return found.partitions[0]

    def wait_partition(
        self, topic: str, deadline: e2e.Deadline, condition: Callable[[Any], bool]
    ) -> Any:
        """Until partition 0 of ``topic`` has a leader and meets ``condition``."""
        while True:
            partition = self.partition(topic)
            if partition is not None and partition.leader >= 0 and condition(partition):
                return partition
            deadline.check(f"waiting for {topic}-0 ({partition})")
            time.sleep(0.1)  # polling the cluster's metadata

    def log_size(self, broker_id: int, topic: str, wire: KafkaWire) -> int:
        """DescribeLogDirs: bytes of ``topic``-0 on one broker."""
        request = DescribeLogDirsRequest(
            topics=[DescribeLogDirsRequest.DescribableLogDirTopic(topic=topic, partitions=[0])]
        )
        answer = wire.request(35, 1, request)
        for result in answer.results:
            for t in result.topics:
                for p in t.partitions:
                    if t.name == topic and p.partition_index == 0:
                        return p.partition_size
        raise e2e.BenchError(f"broker {broker_id} has no log of {topic}-0")


# --- follower lag ----------------------------------------------------------------------------
class LagSampler(threading.Thread):
    """Samples (leader size - each follower's size) of ``topic``-0 until stopped."""

    def __init__(self, cluster: Cluster, topic: str, leader: int, interval: float) -> None:
        super().__init__(name="lag-sampler", daemon=True)
        self.cluster = cluster
        self.topic = topic
        self.leader = leader
        self.interval = interval
        self.samples = LagSamples()
        self.stopping = threading.Event()

    def run(self) -> None:
        wires = {i: b.wire(timeout=5) for i, b in self.cluster.brokers.items()}
        try:
            while not self.stopping.wait(self.interval):
                try:
                    sizes = {
                        i: self.cluster.log_size(i, self.topic, wire) for i, wire in wires.items()
                    }
                except (OSError, e2e.BenchError):
                    self.samples.errors += 1
                    continue
                behind = [sizes[self.leader] - s for i, s in sizes.items() if i != self.leader]
                self.samples.bytes_behind.append(max(0, *behind))
        finally:
            for wire in wires.values():
                wire.close()

    def stop(self) -> LagSamples:
        self.stopping.set()
        self.join(30)
        return self.samples


# --- measurements ----------------------------------------------------------------------------
def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / ticks, sum(fields[:8]) / ticks


def brokers_cpu(cluster: Cluster) -> float:
    """User + system CPU seconds of every live broker process."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for broker in cluster.brokers.values():
        if broker.process is not None and broker.process.poll() is None:
            stat = Path(f"/proc/{broker.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(stat[11]) + int(stat[12])) / ticks
    return total


def measure_throughput(
    cluster: Cluster, size: int, count: int, rf: int, acks: str, opts: argparse.Namespace
) -> ThroughputRow:
    """One produce run of ``count`` records of ``size`` bytes to a fresh topic."""
    deadline = e2e.Deadline(opts.timeout)
    topic = f"bench-{size}b-rf{rf}-acks{acks}-{uuid.uuid4().hex[:6]}"
    cluster.create_topic(topic, rf, deadline)
    leader = cluster.wait_partition(topic, deadline, lambda p: True).leader
    counter = e2e.DeliveryCounter()
    config = {**e2e.producer_config(cluster.bootstrap()), "acks": acks}
    producer = Producer({**config, "on_delivery": counter, "error_cb": counter.client_errors})
    producer.list_topics(topic, timeout=e2e.METADATA_TIMEOUT)
    sampler = None
    if rf > 1:
        sampler = LagSampler(cluster, topic, leader, opts.lag_interval_ms / 1000)
        sampler.start()
    cpu_before, (busy_before, total_before) = brokers_cpu(cluster), machine_cpu()
    try:
        outcome = e2e.timed_produce(
            producer, counter, topic, e2e.make_values(size), count, deadline, False
        )
    finally:
        lag = sampler.stop() if sampler is not None else None
    busy_after, total_after = machine_cpu()
    broker_cpu = brokers_cpu(cluster) - cpu_before
    machine_busy = (busy_after - busy_before) / max(total_after - total_before, 1e-9)
    if outcome.problem():
        raise e2e.BenchError(outcome.problem())
    # With acks=1 the followers may still be copying: the high watermark follows them.
    high = -1
    while high != count:
        deadline.check(f"waiting for the high watermark of {topic} ({high} of {count})")
        high = cluster.high_watermark(topic)
    catch_up = time.monotonic_ns() - outcome.end_ns
    with cluster.brokers[leader].wire() as wire:
        bytes_per_record = cluster.log_size(leader, topic, wire) / count
    seconds = (outcome.end_ns - outcome.start_ns) / 1e9
    cluster.delete_topic(topic)  # rounds of 300 MB topics would fill the disk
    return ThroughputRow(
        size,
        rf,
        acks,
        count,
        seconds,
        catch_up / 1e9,
        lag,
        bytes_per_record,
        broker_cpu=broker_cpu,
        machine_busy=machine_busy,
    )


def measure_failovers(cluster: Cluster, opts: argparse.Namespace) -> list[float]:
    """Seconds from each leader's SIGKILL to the first acknowledged acks=all record."""
    topic = f"bench-failover-{uuid.uuid4().hex[:6]}"
    cluster.create_topic(topic, BROKERS, e2e.Deadline(opts.timeout))
    acknowledged: list[float] = []
    failures: list[str] = []

    def report(err: Any, msg: Any) -> None:
        if err is None:
            acknowledged.append(time.monotonic())
        else:
            failures.append(err.str())

    producer = Producer(
        {
            "bootstrap.servers": cluster.bootstrap(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 0,
            "message.timeout.ms": int(opts.timeout * 1000),
            "retry.backoff.ms": 20,
            "retry.backoff.max.ms": 100,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
            "topic.metadata.refresh.fast.interval.ms": 50,
            "on_delivery": report,
        }
    )
    times = []
    for _ in range(opts.failovers):
        deadline = e2e.Deadline(opts.timeout)
        leader = cluster.wait_partition(topic, deadline, lambda p: len(p.isrs) == BROKERS).leader
        producer.produce(topic, b"before", partition=0)  # connected to the leader, warm
        if producer.flush(deadline.remaining(1.0)) or failures:
            raise e2e.BenchError(f"produce before the kill failed: {failures}")
        acknowledged.clear()
        cluster.brokers[leader].kill()
        killed = time.monotonic()
        producer.produce(topic, b"after", partition=0)
        if producer.flush(deadline.remaining(1.0)) or failures or not acknowledged:
            raise e2e.BenchError(f"no acks=all delivery after the kill: {failures}")
        times.append(acknowledged[0] - killed)
        cluster.brokers[leader].start()
        cluster.wait_partition(topic, deadline, lambda p: len(p.isrs) == BROKERS)
    return times


# --- the run ---------------------------------------------------------------------------------
def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2e_cluster.py",
        description=__doc__.split("\n\n")[0],
        epilog="Starts ZooKeeper (Debian's zookeeper package) and three brokers on loopback.",
    )
    parser.add_argument(
        "--records-100b",
        type=e2e.parse_count,
        default=2_000_000,
        metavar="N",
        help="100 B records per throughput run (default 2m)",
    )
    parser.add_argument(
        "--records-1k",
        type=e2e.parse_count,
        default=300_000,
        metavar="N",
        help="1 KiB records per throughput run (default 300k)",
    )
    parser.add_argument(
        "--failovers",
        type=non_negative_int,
        default=5,
        metavar="N",
        help="leader kills to time (default 5; 0 skips the failover measurement)",
    )
    parser.add_argument(
        "--repeat",
        type=e2e.positive_int,
        default=3,
        metavar="N",
        help="rounds of the throughput rows; median and range are printed (default 3)",
    )
    parser.add_argument(
        "--broker-config",
        type=e2e.parse_client_config,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a broker setting for all three brokers (repeatable), e.g. num.replica.fetchers=2",
    )
    parser.add_argument(
        "--lag-interval-ms",
        type=e2e.positive_float,
        default=20,
        metavar="MS",
        help="follower-lag sampling interval (default 20)",
    )
    parser.add_argument(
        "--timeout",
        type=e2e.positive_float,
        default=120,
        metavar="S",
        help="deadline of each measurement in seconds (default 120)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the data directory (its path is printed)"
    )
    return parser


def size_label(size: int) -> str:
    return "1 KiB" if size == 1024 else f"{size} B"


def render(rows: Sequence[ThroughputRow], failovers: list[float], rounds: int) -> list[Table]:
    """The throughput table (with follower lag), the RF=3/RF=1 ratios, the failovers.

    With several rounds every figure is ``median (min-max)`` over the rounds.
    """
    title = f"pystream cluster: {BROKERS} brokers on loopback, {os.cpu_count()} CPUs"
    if rounds > 1:
        title += f", {rounds} rounds: median (min-max)"
    throughput = Table(title=f"{title}: produce throughput, one partition")
    for column in (
        "record",
        "RF",
        "acks",
        "records",
        "records/s",
        "MB/s",
        "HW catch-up ms",
        "follower lag p50",
        "lag p99 (records)",
        "lag p99 (KiB)",
        "lag max",
        "lag samples",
        "brokers' CPU s",
        "machine busy",
    ):
        throughput.add_column(column, justify="right")
    groups: dict[tuple[int, int, str], list[ThroughputRow]] = {}
    for row in rows:
        groups.setdefault((row.size, row.replication_factor, row.acks), []).append(row)
    for (size, rf, acks), group in groups.items():
        lagged = [r for r in group if r.lag_bytes(0.5) is not None]
        throughput.add_row(
            size_label(size),
            str(rf),
            acks,
            f"{group[0].records:,}",
            spread([r.records_per_second for r in group]),
            spread([r.records_per_second * size / e2e.MB for r in group], ",.1f"),
            spread([r.catch_up * 1000 for r in group]),
            spread([r.lag_records(0.5) or 0.0 for r in lagged]),
            spread([r.lag_records(0.99) or 0.0 for r in lagged]),
            spread([(r.lag_bytes(0.99) or 0) / 1024 for r in lagged]),
            spread([r.lag_records(1.0) or 0.0 for r in lagged]),
            "-" if not lagged else str(sum(len(r.lag.bytes_behind) for r in lagged if r.lag)),
            spread([r.broker_cpu for r in group], ",.2f"),
            spread([r.machine_busy * 100 for r in group], ".0f") + " %",
        )
    ratios = Table(title="RF=3 throughput / RF=1 throughput (same size, same round)")
    for column in ("record", "RF=3 acks=1 / RF=1", "RF=3 acks=all / RF=1", "target"):
        ratios.add_column(column, justify="right")
    for size in dict.fromkeys(r.size for r in rows):
        cells = []
        for acks in ("1", "all"):
            base = {r.round: r.records_per_second for r in groups.get((size, 1, "1"), [])}
            other = groups.get((size, 3, acks), [])
            # Paired by round: both rows of a round ran back to back on the same machine.
            pairs = [o.records_per_second / base[o.round] for o in other if o.round in base]
            cells.append(spread(pairs, ".0%"))
        ratios.add_row(size_label(size), *cells, ">= 80% (acks=all)")
    failover = Table(
        title="failover: SIGKILL of the leader -> first acks=all record acknowledged",
        caption=f"brokers' zookeeper.session.timeout.ms={SESSION_TIMEOUT_MS}",
    )
    for column in ("kills", "median", "max", "each"):
        failover.add_column(column, justify="right")
    if failovers:
        failover.add_row(
            str(len(failovers)),
            f"{statistics.median(failovers):.2f} s",
            f"{max(failovers):.2f} s",
            " ".join(f"{t:.2f}" for t in failovers),
        )
    return [throughput, ratios, failover]


def main(argv: Sequence[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    log = Console(stderr=True)
    directory = Path(tempfile.mkdtemp(prefix="pystream-cluster-bench-"))
    rows: list[ThroughputRow] = []
    failovers: list[float] = []
    status = 0
    try:
        java, jar = require_zookeeper()
    except ZooKeeperNotInstalledError as exc:
        log.print(f"e2e_cluster.py: error: {exc} (apt-get install zookeeper)")
        return 1
    cluster = Cluster(directory, java, jar, dict(opts.broker_config))
    try:
        cluster.start()
        pids = " ".join(f"{i}:{b.process.pid}" for i, b in cluster.brokers.items() if b.process)
        log.print(f"cluster up: {cluster.bootstrap()} (data in {directory}; broker pids {pids})")
        for round_ in range(opts.repeat):
            for size, count in ((1024, opts.records_1k), (100, opts.records_100b)):
                for rf, acks in RUNS:
                    try:
                        row = measure_throughput(cluster, size, count, rf, acks, opts)
                        row.round = round_
                        rows.append(row)
                        log.print(f"{size} B RF={rf} acks={acks}: {rows[-1].seconds:.2f} s")
                    except (e2e.BenchError, KafkaException) as exc:
                        log.print(f"{size} B RF={rf} acks={acks}: failed: {exc}")
                        status = 1
        if opts.failovers:
            try:
                failovers = measure_failovers(cluster, opts)
            except (e2e.BenchError, KafkaException) as exc:
                log.print(f"failover: failed: {exc}")
                status = 1
    except (RuntimeError, e2e.BenchError) as exc:  # the cluster did not start
        log.print(f"e2e_cluster.py: error: {exc}")
        status = 1
    finally:
        cluster.close()
        if not opts.keep:
            shutil.rmtree(directory, ignore_errors=True)
    out = Console()
    out.width = e2e.wide_width(out, 190) or out.width
    for table in render(rows, failovers, opts.repeat):
        out.print(table)
    return status


if __name__ == "__main__":
    sys.exit(main())
