"""What metrics collection costs: ``e2e.py`` produce and consume against two fresh
brokers per run, one with ``metrics.enable=true`` (scraped every ``--scrape-interval``
seconds, as Prometheus would), one with ``metrics.enable=false``; which one starts and
is measured first alternates between runs.  Prints the median and range of ``--runs``
runs per scenario (issue 18's target: within 3%).

    python bench/metrics_overhead.py [--runs 3] [--records 1m]
        [--scenario produce-100b,consume-100b] [--scrape-interval 5]

``--control`` runs the same procedure with metrics off on both (an A/A run: the noise
floor of two brokers on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import timeit
import urllib.request
from pathlib import Path

from authorizer_overhead import Broker, run_e2e
from e2e import parse_count
from prometheus_client.parser import text_string_to_metric_families

from pystream.metrics import BrokerMetrics


def scrape_every(url: str, interval_s: float, stop: threading.Event) -> list[int]:
    """Scrape ``url`` until ``stop``; the sizes of the scrapes (a scrape that failed
    raises in the thread and shows in the output)."""
    sizes: list[int] = []
    while not stop.wait(interval_s):
        with urllib.request.urlopen(url, timeout=10) as response:
            sizes.append(len(response.read()))
    return sizes


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counted_work(url: str) -> tuple[float, float]:
    """(requests, request partitions) the broker counted: what its metrics cost scales with."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    requests = partitions = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kafka_network_requestmetrics_requests_total":
                requests += sample.value
            elif not sample.labels and sample.name in (
                "kafka_server_brokertopicmetrics_totalproducerequests_total",
                "kafka_server_brokertopicmetrics_totalfetchrequests_total",
            ):
                partitions += sample.value
    return requests, partitions


def metric_call_costs() -> tuple[float, float]:
    """Seconds the hot paths spend on metrics per request (two clock reads and the latency
    histogram) and per request partition (the topic counters), timed in this process."""
    metrics = BrokerMetrics({0: "Produce"})
    clock = time.perf_counter
    n = 200_000

    def per_request() -> None:
        started = clock()
        metrics.requests.record(0, (clock() - started) * 1000.0)

    def per_partition() -> None:
        metrics.record_produce("topic", 1000, 100_000)

    return (
        min(timeit.repeat(per_request, number=n, repeat=5)) / n,
        min(timeit.repeat(per_partition, number=n, repeat=5)) / n,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--records", default="1m")
    parser.add_argument("--scenario", default="produce-100b,consume-100b")
    parser.add_argument("--scrape-interval", type=float, default=5.0)
    parser.add_argument(
        "--control", action="store_true", help="A/A run: metrics off on both brokers"
    )
    ns = parser.parse_args()
    scenarios = ns.scenario.split(",")
    rates: dict[tuple[str, str], list[float]] = {
        (s, label): [] for s in scenarios for label in ("on", "off")
    }
    # Broker CPU per record: what the counters cost shows here even when the machine's
    # other load moves the throughput of both brokers by more than 3%.
    cpu_per_record: dict[tuple[str, str], list[float]] = {key: [] for key in rates}
    records = parse_count(ns.records)
    work = [0.0, 0.0, 0.0]  # requests, request partitions, CPU s of the metrics brokers
    with tempfile.TemporaryDirectory(prefix="metrics-bench-") as tmp:
        for i in range(ns.runs):
            # Fresh brokers each run, the metrics broker started first in even runs and
            # second in odd ones, and measured first or second likewise: an A/A run showed
            # the two slots differing by themselves (start order, history).
            labels = ["on", "off"] if i % 2 == 0 else ["off", "on"]
            brokers = {
                label: Broker(
                    Path(tmp) / f"run{i}-{label}",
                    {"metrics.enable": "true" if label == "on" and not ns.control else "false"},
                ).start()
                for label in labels
            }
            stop = threading.Event()
            url = brokers["on"].metrics_url
            if url:
                threading.Thread(
                    target=scrape_every, args=(url, ns.scrape_interval, stop), daemon=True
                ).start()
            cpu_before = cpu_seconds(brokers["on"].process.pid)  # type: ignore[union-attr]
            try:
                for scenario in scenarios:
                    cpu_start = {
                        label: cpu_seconds(brokers[label].process.pid)  # type: ignore[union-attr]
                        for label in labels
                    }
                    got = run_e2e(
                        [brokers[label].bootstrap for label in labels],
                        ns.records,
                        Path(tmp) / "r.json",
                        scenario,
                    )
                    # The records each broker moved (a scenario may stop at its deadline).
                    done = {
                        r["broker"]: r["records"]
                        for r in json.loads((Path(tmp) / "r.json").read_text())["results"]
                    }
                    for label in labels:
                        rates[scenario, label].append(got[brokers[label].bootstrap])
                        used = cpu_seconds(brokers[label].process.pid) - cpu_start[label]  # type: ignore[union-attr]
                        moved = done[brokers[label].bootstrap] or records
                        cpu_per_record[scenario, label].append(used / moved * 1e6)
                    print(
                        f"run {i + 1} {scenario}: "
                        + ", ".join(
                            f"{label} {rates[scenario, label][-1]:,.0f} rec/s "
                            f"{cpu_per_record[scenario, label][-1]:.3f} broker CPU us/rec"
                            for label in ("on", "off")
                        ),
                        flush=True,
                    )
                if url:
                    requests, partitions = counted_work(url)
                    work[0] += requests
                    work[1] += partitions
                    work[2] += cpu_seconds(brokers["on"].process.pid) - cpu_before  # type: ignore[union-attr]
            finally:
                stop.set()
                for broker in brokers.values():
                    broker.stop()
    for scenario in scenarios:
        for what, figures, unit, digits in (
            ("", rates, "rec/s", 0),
            (" broker CPU per record", cpu_per_record, "broker CPU us/record", 3),
        ):
            median = {label: statistics.median(figures[scenario, label]) for label in ("on", "off")}
            for label in ("on", "off"):
                values = figures[scenario, label]
                print(
                    f"{scenario} metrics {label:>3}: median {median[label]:,.{digits}f} {unit} "
                    f"(range {min(values):,.{digits}f} .. {max(values):,.{digits}f}) "
                    f"over {len(values)} runs"
                )
            print(f"{scenario}{what} on/off: {median['on'] / median['off']:.3f}")
    if work[2] > 0:
        # Throughput figures on a shared machine swing by more than 3% by themselves; this
        # one does not: the CPU the counters took, as a share of the broker's CPU.
        per_request, per_partition = metric_call_costs()
        spent = work[0] * per_request + work[1] * per_partition
        print(
            f"metrics work: {work[0]:,.0f} requests x {per_request * 1e6:.2f} us + "
            f"{work[1]:,.0f} request partitions x {per_partition * 1e6:.2f} us = "
            f"{spent * 1000:.1f} ms of {work[2]:.1f} s broker CPU "
            f"({100 * spent / work[2]:.3f}%)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
