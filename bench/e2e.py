"""End-to-end benchmark of any Kafka-compatible broker, with librdkafka as the load generator.

Run (the broker first, then the runner; several ``--bootstrap`` options compare brokers)::

    pystream serve &
    python bench/e2e.py --bootstrap 127.0.0.1:9092 [--bootstrap 127.0.0.1:9093] \
        [--scenario produce-100b,latency] [--records 200k] [--producers 4] [--json out.json]

Every scenario creates its own one-partition topic (CreateTopics, or the broker's
auto-creation when CreateTopics is not supported), runs, and deletes the topic.

===================  ==========================================================  =================
scenario             what                                                        target
===================  ==========================================================  =================
produce-100b         1,000,000 x 100 B, one Python loop calling ``produce()``    >= 1,000,000 rec/s
produce-1k           200,000 x 1 KiB, one Python loop                            >= 300 MB/s
consume-100b         read 1,000,000 x 100 B back with ``consume()`` batches     >= 1,000,000 rec/s
consume-1k           read 200,000 x 1 KiB back                                   none set
latency              5,000 rec/s for 10 s, send-to-receive time, 2 s warm-up     p99 <= 5 ms
multi-producer       100 B records from ``--producers`` processes at once        >= 1,000,000 rec/s
multi-producer-1k    1 KiB records from ``--producers`` processes                >= 300 MB/s
kcat-produce         100 B records from a file with ``kcat -P -l``               >= 1,000,000 rec/s
kcat-produce-1k      1 KiB records with kcat                                     >= 300 MB/s
===================  ==========================================================  =================

Producers use acks=1, linger.ms=5, batch.size=1000000 and no compression. A single
Python loop tops out near 500,000 records/s, so the multi-producer and kcat rows show
what the broker takes from a load generator that is not the limit. MB is 10**6 bytes of
record values. Throughput runs from the first ``produce()`` (or kcat's start) to the last
delivery report; every produced count is cross-checked against the partition's
watermarks. Exit status: 0 when every scenario gave a valid figure (targets missed or
not), 1 when one failed or a broker is unreachable, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import itertools
import json
import multiprocessing
import os
import platform
import queue
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

try:
    import confluent_kafka
    from confluent_kafka import (
        OFFSET_BEGINNING,
        Consumer,
        KafkaError,
        KafkaException,
        Producer,
        TopicPartition,
    )
    from confluent_kafka.admin import AdminClient, NewTopic
except ImportError:  # pragma: no cover - reported by main() as a one-line error
    confluent_kafka = None

MB = 1_000_000
KIB = 1024
VALUE_POOL = 1024  # distinct record values cycled through by every producer
PRODUCE_CHUNK = 65_536  # records produced between two deadline checks
CONSUME_BATCH = 10_000  # num_messages per Consumer.consume() call
METADATA_TIMEOUT = 10.0  # seconds for one metadata request
ADMIN_TIMEOUT = 5.0  # seconds for CreateTopics/DeleteTopics before falling back
PROG = "e2e.py"


class BenchError(Exception):
    """A scenario (or the setup) failed; the message is one line for the table and the log."""


# --------------------------------------------------------------------------- scenarios


def compact_number(value: float) -> str:
    """``1M``, ``300k`` or ``1,234`` for target labels."""
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if value >= scale and value % scale == 0:
            return f"{value / scale:g}{unit}"
    return f"{value:,g}"


@dataclasses.dataclass(frozen=True)
class Target:
    """A goal from the issue: ``metric`` compared against ``threshold``."""

    metric: str  # "records_per_s", "mb_per_s" or "p99_ms"
    threshold: float

    @property
    def label(self) -> str:
        """Human-readable form, e.g. ``>= 1M rec/s``."""
        if self.metric == "records_per_s":
            return f">= {compact_number(self.threshold)} rec/s"
        if self.metric == "mb_per_s":
            return f">= {compact_number(self.threshold)} MB/s"
        return f"p99 <= {self.threshold:g} ms"

    def met_by(self, value: float) -> bool:
        """Whether a measured ``value`` of this metric reaches the target."""
        if self.metric == "p99_ms":
            return value <= self.threshold
        return value >= self.threshold


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One benchmark: how records are driven (``kind``), their size and default count."""

    name: str
    kind: str  # "produce", "consume", "latency", "multi-producer" or "kcat"
    record_size: int
    default_records: int
    target: Target | None
    description: str


PRODUCE_TARGET = Target("records_per_s", 1_000_000)
BYTES_TARGET = Target("mb_per_s", 300)
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "produce-100b",
            "produce",
            100,
            1_000_000,
            PRODUCE_TARGET,
            "one Python loop calling produce()",
        ),
        Scenario(
            "produce-1k", "produce", KIB, 200_000, BYTES_TARGET, "one Python loop calling produce()"
        ),
        Scenario(
            "consume-100b",
            "consume",
            100,
            1_000_000,
            PRODUCE_TARGET,
            "Consumer.consume() batches from offset 0",
        ),
        Scenario(
            "consume-1k", "consume", KIB, 200_000, None, "Consumer.consume() batches from offset 0"
        ),
        Scenario(
            "latency",
            "latency",
            100,
            0,
            Target("p99_ms", 5),
            "fixed-rate producer, consumer in another process",
        ),
        Scenario(
            "multi-producer",
            "multi-producer",
            100,
            1_000_000,
            PRODUCE_TARGET,
            "several producer processes started together",
        ),
        Scenario(
            "multi-producer-1k",
            "multi-producer",
            KIB,
            200_000,
            BYTES_TARGET,
            "several producer processes started together",
        ),
        Scenario(
            "kcat-produce",
            "kcat",
            100,
            1_000_000,
            PRODUCE_TARGET,
            "kcat -P reading a file of records",
        ),
        Scenario(
            "kcat-produce-1k",
            "kcat",
            KIB,
            200_000,
            BYTES_TARGET,
            "kcat -P reading a file of records",
        ),
    )
}


# --------------------------------------------------------------------------- arguments


@dataclasses.dataclass(frozen=True)
class Bootstrap:
    """One broker (or cluster) under test: its ``host:port`` bootstrap list."""

    servers: tuple[tuple[str, int], ...]

    def __str__(self) -> str:
        return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.servers)


@dataclasses.dataclass(frozen=True)
class Options:
    """Everything the command line decides."""

    bootstraps: tuple[Bootstrap, ...]
    scenarios: tuple[Scenario, ...]
    records: int | None = None
    producers: int = 4
    timeout: float = 120.0
    latency_rate: float = 5_000.0
    latency_duration: float = 10.0
    latency_warmup: float = 2.0
    all_delivery_reports: bool = False
    kcat: str = "kcat"
    json_path: Path | None = None
    allow_non_loopback: bool = False
    verbose: bool = False
    client_config: tuple[tuple[str, str], ...] = ()

    def record_count(self, scenario: Scenario) -> int:
        """Records a throughput scenario produces (``--records`` overrides the default)."""
        if scenario.kind == "latency":
            return latency_record_count(self.latency_rate, self.latency_duration)
        return self.records if self.records is not None else scenario.default_records


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_host_port(text: str) -> tuple[str, int]:
    """Parse ``host:port`` or ``[v6]:port``; raise ValueError with a readable reason."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"expected [address]:port, got {text!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"expected host:port, got {text!r}")
        if ":" in host:
            raise ValueError(f"put an IPv6 address in brackets, e.g. [::1]:9092, got {text!r}")
    if not host:
        raise ValueError(f"missing host in {text!r}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 1 to 65535 in {text!r}")
    return host, int(port_text)


def parse_bootstrap(text: str) -> Bootstrap:
    """Parse one ``--bootstrap`` value: ``host:port`` or a comma-separated list of them."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("empty bootstrap server")
    return Bootstrap(tuple(parse_host_port(p) for p in parts))


def parse_scenarios(values: Sequence[str] | None) -> tuple[Scenario, ...]:
    """Turn repeated/comma-separated ``--scenario`` values into scenarios (default: all)."""
    names = [n.strip() for v in (values or ["all"]) for n in v.split(",") if n.strip()]
    chosen: list[Scenario] = []
    for name in names:
        picked = list(SCENARIOS.values()) if name == "all" else [SCENARIOS.get(name)]
        if picked == [None]:
            known = ", ".join(SCENARIOS)
            raise ValueError(f"unknown scenario {name!r} (choose from: {known}, all)")
        chosen.extend(s for s in picked if s is not None and s not in chosen)
    if not chosen:
        raise ValueError("no scenario selected")
    return tuple(chosen)


def parse_count(text: str) -> int:
    """A positive record count: ``1000000``, ``1_000_000``, ``200k`` or ``1m``."""
    cleaned = text.strip().lower().replace("_", "").replace(",", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(cleaned[-1:], 1)
    digits = cleaned[:-1] if scale > 1 else cleaned
    if not digits.isdigit() or int(digits) * scale <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a positive count like 1000000 or 200k, got {text!r}"
        )
    return int(digits) * scale


def positive_float(text: str) -> float:
    """argparse type: a float > 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a float >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def scenario_help() -> str:
    """The scenario list shown at the end of ``--help``."""
    lines = ["scenarios:"]
    for s in SCENARIOS.values():
        target = s.target.label if s.target else "no target"
        size = f"{s.record_size // KIB} KiB" if s.record_size % KIB == 0 else f"{s.record_size} B"
        lines.append(f"  {s.name:<18} {size} records, {s.description} ({target})")
    return "\n".join(lines)


def build_parser() -> OneLineParser:
    """The command line of the runner."""
    p = OneLineParser(
        prog=PROG,
        description="End-to-end throughput and latency of "
        "Kafka-compatible brokers, driven by librdkafka (confluent-kafka) and kcat.",
        epilog=scenario_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--bootstrap",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="broker to test; repeat to compare several side by side",
    )
    p.add_argument(
        "--scenario",
        action="append",
        metavar="NAME[,NAME...]",
        help=f"scenarios to run (default all): {', '.join(SCENARIOS)}",
    )
    p.add_argument(
        "--records",
        type=parse_count,
        metavar="N",
        help="records per throughput scenario (default 1m for 100 B, 200k for 1 KiB)",
    )
    p.add_argument(
        "--producers",
        type=positive_int,
        default=4,
        metavar="N",
        help="processes in multi-producer scenarios (default 4)",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=120.0,
        metavar="SECONDS",
        help="time limit of each scenario, setup included (default 120)",
    )
    p.add_argument(
        "--latency-rate",
        type=positive_float,
        default=5_000.0,
        metavar="REC/S",
        help="records/s sent in the latency scenario (default 5000)",
    )
    p.add_argument(
        "--latency-duration",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="how long the latency scenario sends (default 10)",
    )
    p.add_argument(
        "--latency-warmup",
        type=non_negative_float,
        default=2.0,
        metavar="SECONDS",
        help="leading seconds of latency samples discarded (default 2)",
    )
    p.add_argument(
        "--delivery-reports",
        choices=("errors", "all"),
        default="errors",
        help="'errors' (default) asks librdkafka for failed deliveries only, so "
        "the Python loop is not slowed by a callback per record; 'all' "
        "counts every delivery report",
    )
    p.add_argument("--kcat", default="kcat", metavar="PATH", help="kcat executable")
    p.add_argument(
        "--json", dest="json_path", type=Path, metavar="FILE", help="also write the results as JSON"
    )
    p.add_argument(
        "--allow-non-loopback",
        action="store_true",
        help="allow brokers that are not on this machine's loopback interface",
    )
    p.add_argument(
        "--client-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="librdkafka property for every client (and kcat), e.g. security.protocol=SSL "
        "ssl.ca.location=ca.pem; repeat for several",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show librdkafka's own logs")
    return p


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Parse and validate the command line; bad input exits 2 with one line."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        bootstraps = tuple(parse_bootstrap(b) for b in ns.bootstrap)
        scenarios = parse_scenarios(ns.scenario)
        client_settings = tuple(parse_client_config(c) for c in ns.client_config)
    except ValueError as exc:
        parser.error(str(exc))
    if len({str(b) for b in bootstraps}) != len(bootstraps):
        parser.error("the same --bootstrap is given twice")
    if ns.latency_warmup >= ns.latency_duration:
        parser.error("--latency-warmup must be shorter than --latency-duration")
    if latency_record_count(ns.latency_rate, ns.latency_duration - ns.latency_warmup) < 1:
        parser.error("--latency-rate x (duration - warm-up) leaves no record to measure")
    if ns.json_path is not None and not ns.json_path.resolve().parent.is_dir():
        parser.error(f"directory of --json {ns.json_path} does not exist")
    return Options(
        bootstraps=bootstraps,
        scenarios=scenarios,
        records=ns.records,
        producers=ns.producers,
        timeout=ns.timeout,
        latency_rate=ns.latency_rate,
        latency_duration=ns.latency_duration,
        latency_warmup=ns.latency_warmup,
        all_delivery_reports=ns.delivery_reports == "all",
        kcat=ns.kcat,
        json_path=ns.json_path,
        allow_non_loopback=ns.allow_non_loopback,
        verbose=ns.verbose,
        client_config=client_settings,
    )


# --------------------------------------------------------------------------- records


def make_value(index: int, size: int) -> bytes:
    """A record value of exactly ``size`` printable bytes (no newline), unique per ``index``."""
    if size < 1:
        raise ValueError("record size must be at least 1 byte")
    head = f"{index:010d}:".encode()
    filler = bytes(0x41 + (index + i) % 26 for i in range(26))  # a rotated A..Z
    body = head + filler * (size // len(filler) + 1)
    return body[:size]


def make_values(size: int, pool: int = VALUE_POOL) -> list[bytes]:
    """``pool`` distinct values of ``size`` bytes, cycled through when producing."""
    return [make_value(i, size) for i in range(pool)]


def cycled(values: Sequence[bytes], count: int) -> Iterable[bytes]:
    """The first ``count`` items of ``values`` repeated end to end."""
    return itertools.islice(itertools.cycle(values), count)


def write_records_file(path: Path, values: Sequence[bytes], count: int) -> int:
    """Write ``count`` records, one per line, cycling ``values``; return the bytes written."""
    if any(b"\n" in v for v in values):
        raise ValueError("a record value contains a newline")
    block = b"".join(v + b"\n" for v in values)
    full, rest = divmod(count, len(values))
    with open(path, "wb") as fh:
        for _ in range(full):
            fh.write(block)
        fh.write(b"".join(v + b"\n" for v in values[:rest]))
    return full * len(block) + sum(len(v) + 1 for v in values[:rest])


TIMESTAMP = struct.Struct(">q")


def encode_timestamp(ns: int, size: int) -> bytes:
    """A ``size``-byte value carrying the send time ``ns`` in its first 8 bytes."""
    if size < TIMESTAMP.size:
        raise ValueError(f"latency records need at least {TIMESTAMP.size} bytes")
    return TIMESTAMP.pack(ns) + b"L" * (size - TIMESTAMP.size)


def decode_timestamp(value: bytes) -> int:
    """The send time stored by :func:`encode_timestamp`."""
    return TIMESTAMP.unpack_from(value)[0]


def latency_record_count(rate: float, seconds: float) -> int:
    """Records sent at ``rate`` per second for ``seconds``."""
    return int(round(rate * seconds))


# --------------------------------------------------------------------------- arithmetic


def throughput(records: int, nbytes: int, seconds: float) -> tuple[float, float]:
    """(records/s, MB/s) for ``records`` records of ``nbytes`` value bytes in ``seconds``."""
    if seconds <= 0:
        raise ValueError("elapsed time must be positive")
    return records / seconds, nbytes / MB / seconds


def latency_summary(send_ns: np.ndarray, recv_ns: np.ndarray, cutoff_ns: int) -> dict[str, float]:
    """p50/p99/p99.9/max of ``recv - send`` in ms over records sent at or after ``cutoff_ns``."""
    send = np.asarray(send_ns, dtype=np.int64)
    recv = np.asarray(recv_ns, dtype=np.int64)
    if send.shape != recv.shape:
        raise ValueError("send and receive times differ in length")
    kept = (recv - send)[send >= cutoff_ns]
    if kept.size == 0:
        raise ValueError("no latency sample left after the warm-up")
    p50, p99, p999 = np.percentile(kept, [50, 99, 99.9]) / 1e6
    return {
        "p50": float(p50),
        "p99": float(p99),
        "p999": float(p999),
        "max": float(kept.max()) / 1e6,
        "samples": int(kept.size),
    }


def split_count(total: int, parts: int) -> list[int]:
    """Split ``total`` records over ``parts`` producers as evenly as possible."""
    if parts < 1:
        raise ValueError("need at least one part")
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def aggregate_window(spans: Iterable[tuple[int, int]]) -> float:
    """Seconds from the earliest start to the latest end of ``(start_ns, end_ns)`` spans."""
    spans = list(spans)
    if not spans:
        raise ValueError("no spans")
    return (max(e for _, e in spans) - min(s for s, _ in spans)) / 1e9


class Deadline:
    """A point in time a scenario must finish by (monotonic clock)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self, floor: float = 0.0) -> float:
        """Seconds left, never below ``floor``."""
        return max(self.at - time.monotonic(), floor)

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return time.monotonic() >= self.at

    def check(self, doing: str) -> None:
        """Raise BenchError if the deadline has passed while ``doing`` something."""
        if self.expired():
            raise BenchError(f"timed out after {self.seconds:g} s while {doing}")


# --------------------------------------------------------------------------- client configs


#: --client-config travels to spawned scenario processes in this environment variable.
CLIENT_CONFIG_ENV = "PYSTREAM_BENCH_CLIENT_CONFIG"


def parse_client_config(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` of --client-config; ValueError naming the bad entry."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--client-config {text!r} is not KEY=VALUE")
    return key.strip(), value.strip()


def extra_client_config() -> dict[str, str]:
    """The --client-config properties (e.g. security.protocol=SSL)."""
    return json.loads(os.environ.get(CLIENT_CONFIG_ENV, "{}"))


def client_config(bootstrap: str, verbose: bool = False) -> dict[str, Any]:
    """Settings every librdkafka client here shares (and the --client-config ones)."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": "pystream-bench-e2e",
        "log_level": 6 if verbose else 0,  # librdkafka's logs only with --verbose
        "socket.connection.setup.timeout.ms": 10_000,
        **extra_client_config(),
    }


def throughput_producer_settings(linger_ms: float = 5) -> dict[str, Any]:
    """The issue's producer: acks=1, linger.ms=5, 1 MB batches, no compression.

    librdkafka caps a batch by ``batch.size`` bytes *and* ``batch.num.messages``
    records (default 10,000), so the record cap is raised to its maximum to let the
    1 MB byte limit decide. The local queue holds a million records / 1 GiB, so a
    BufferError is rare. These are plain librdkafka properties, shared with kcat.
    """
    return {
        "acks": 1,
        "linger.ms": linger_ms,
        "batch.size": 1_000_000,
        "batch.num.messages": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "compression.type": "none",
        "enable.idempotence": False,
    }


def producer_config(
    bootstrap: str, *, linger_ms: float = 5, all_reports: bool = False, verbose: bool = False
) -> dict[str, Any]:
    """confluent_kafka.Producer settings for the throughput and latency producers."""
    config = {**client_config(bootstrap, verbose), **throughput_producer_settings(linger_ms)}
    config["delivery.report.only.error"] = not all_reports
    return config


def consumer_config(
    bootstrap: str, *, latency: bool = False, verbose: bool = False
) -> dict[str, Any]:
    """confluent_kafka.Consumer settings: manual assignment, no commits, big prefetch.

    ``group.id`` is required by confluent-kafka even without a subscription; it is
    never joined because partitions are assigned by hand. ``fetch.queue.backoff.ms``
    is lowered from 1 s so a full local queue does not stall the next fetch for a
    second. The latency consumer asks the broker to answer as soon as one byte is
    there, waiting at most 100 ms.
    """
    config = {
        **client_config(bootstrap, verbose),
        "group.id": f"pystream-bench-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "isolation.level": "read_uncommitted",
        "max.partition.fetch.bytes": 8 * 1024 * KIB,
        "fetch.max.bytes": 64 * 1024 * KIB,
        "queued.min.messages": 1_000_000,
        "queued.max.messages.kbytes": 256 * KIB,
        "fetch.queue.backoff.ms": 10,
    }
    if latency:
        config.update({"fetch.wait.max.ms": 100, "fetch.min.bytes": 1})
    return config


def kcat_command(
    kcat: str, bootstrap: str, topic: str, path: Path, timeout: float = METADATA_TIMEOUT
) -> list[str]:
    """``kcat -P`` producing each line of ``path`` to partition 0 with the issue's settings."""
    cmd = [kcat, "-P", "-b", bootstrap, "-t", topic, "-p", "0", "-m", str(max(1, int(timeout)))]
    for key, value in {**throughput_producer_settings(), **extra_client_config()}.items():
        cmd += ["-X", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return [*cmd, "-l", str(path)]


def kafka_error_text(exc: BaseException) -> str:
    """One line describing a confluent-kafka exception (or any other)."""
    if confluent_kafka is not None and isinstance(exc, KafkaException) and exc.args:
        err = exc.args[0]
        if isinstance(err, KafkaError):
            return f"{err.str()} ({err.name()})"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


# --------------------------------------------------------------------------- broker helpers


def is_loopback_host(host: str) -> bool:
    """Whether every address ``host`` names is on the loopback interface."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host == "localhost":
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def tcp_probe(servers: Sequence[tuple[str, int]], timeout: float) -> None:
    """Raise BenchError unless one of ``servers`` accepts a TCP connection."""
    reasons = []
    for host, port in servers:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return
        except OSError as exc:
            reasons.append(f"{host}:{port}: {exc.strerror or exc}")
    raise BenchError(f"cannot connect to {'; '.join(reasons)}")


def check_broker(bootstrap: Bootstrap, opts: Options) -> str:
    """Check a broker answers Kafka metadata on loopback; return a one-line description."""
    if not opts.allow_non_loopback:
        for host, port in bootstrap.servers:
            if not is_loopback_host(host):
                raise BenchError(
                    f"{host}:{port} does not resolve to a loopback address (this benchmark "
                    "measures brokers on this machine; see --allow-non-loopback)"
                )
    tcp_probe(bootstrap.servers, timeout=5.0)
    admin = AdminClient(client_config(str(bootstrap), opts.verbose))
    try:
        metadata = admin.list_topics(timeout=METADATA_TIMEOUT)
    except KafkaException as exc:
        raise BenchError(
            f"{bootstrap} accepts connections but answers no Kafka metadata "
            f"request: {kafka_error_text(exc)}"
        ) from None
    brokers = sorted(metadata.brokers.values(), key=lambda b: b.id)
    if not opts.allow_non_loopback:
        for b in brokers:
            if not is_loopback_host(b.host):
                raise BenchError(
                    f"{bootstrap} advertises broker {b.id} at {b.host}:{b.port}, "
                    "which is not on loopback (see --allow-non-loopback)"
                )
    listed = ", ".join(f"{b.id}@{b.host}:{b.port}" for b in brokers)
    return f"{len(brokers)} broker(s): {listed}"


def leader_ready(metadata: Any, topic: str) -> int | None:
    """Partition count of ``topic`` once partition 0 has a leader, else None."""
    info = metadata.topics.get(topic)
    if info is None or info.error is not None or 0 not in info.partitions:
        return None
    part = info.partitions[0]
    return len(info.partitions) if part.error is None and part.leader >= 0 else None


def wait_for_topic(client: Any, topic: str, deadline: Deadline) -> int:
    """Poll metadata until partition 0 of ``topic`` has a leader; return its partition count."""
    last = "topic not in metadata"
    while True:
        try:
            metadata = client.list_topics(
                topic, timeout=min(METADATA_TIMEOUT, deadline.remaining(0.5))
            )
            count = leader_ready(metadata, topic)
            if count is not None:
                return count
            info = metadata.topics.get(topic)
            last = kafka_error_text(KafkaException(info.error)) if info and info.error else last
        except KafkaException as exc:
            last = kafka_error_text(exc)
        deadline.check(f"waiting for topic {topic} ({last})")
        time.sleep(0.1)


@dataclasses.dataclass
class AdminSupport:
    """What a broker's admin API did so far: a failed CreateTopics/DeleteTopics is not retried.

    Brokers that lack these requests (or never answer them) would otherwise cost
    the admin timeout in every scenario.
    """

    create_error: str | None = None
    delete_error: str | None = None


def create_topic(
    bootstrap: str, topic: str, deadline: Deadline, support: AdminSupport, verbose: bool
) -> str | None:
    """Create a one-partition topic; fall back to broker auto-creation. Return a note or None."""
    if support.create_error is None:
        admin = AdminClient(client_config(bootstrap, verbose))
        timeout = min(ADMIN_TIMEOUT, deadline.remaining(1.0))
        try:
            future = admin.create_topics(
                [NewTopic(topic, num_partitions=1, replication_factor=1)],
                operation_timeout=timeout,
                request_timeout=timeout,
            )[topic]
            future.result(timeout=timeout + 1)
            wait_for_topic(admin, topic, deadline)
            return None
        except (KafkaException, TimeoutError) as exc:
            support.create_error = kafka_error_text(exc)
    reason = support.create_error
    producer = Producer({**client_config(bootstrap, verbose), "allow.auto.create.topics": True})
    try:
        partitions = wait_for_topic(producer, topic, deadline)
    except BenchError as exc:
        raise BenchError(
            f"CreateTopics failed ({reason}) and auto-creation failed: {exc}"
        ) from None
    return (
        f"CreateTopics failed ({reason}); topic auto-created by a metadata request "
        f"({partitions} partition(s), partition 0 used)"
    )


def delete_topic(bootstrap: str, topic: str, support: AdminSupport, verbose: bool) -> str | None:
    """Delete the scenario's topic; return a note if the broker would not."""
    if support.delete_error is None:
        admin = AdminClient(client_config(bootstrap, verbose))
        try:
            future = admin.delete_topics(
                [topic], operation_timeout=ADMIN_TIMEOUT, request_timeout=ADMIN_TIMEOUT
            )[topic]
            future.result(timeout=ADMIN_TIMEOUT + 1)
            return None
        except (KafkaException, TimeoutError) as exc:
            support.delete_error = kafka_error_text(exc)
    return f"topic {topic} left behind: DeleteTopics failed ({support.delete_error})"


def watermarks(bootstrap: str, topic: str, deadline: Deadline, verbose: bool) -> tuple[int, int]:
    """(low, high) offsets of partition 0 as the broker reports them (ListOffsets)."""
    consumer = Consumer(consumer_config(bootstrap, verbose=verbose))
    try:
        return consumer.get_watermark_offsets(
            TopicPartition(topic, 0),
            timeout=min(METADATA_TIMEOUT, deadline.remaining(1.0)),
            cached=False,
        )
    except KafkaException as exc:
        raise BenchError(f"cannot read the offsets of {topic}: {kafka_error_text(exc)}") from None
    finally:
        consumer.close()


def readable_offset(
    bootstrap: str, topic: str, offset: int, deadline: Deadline, verbose: bool
) -> bool:
    """Whether the record at ``offset`` of partition 0 can be fetched (within 5 s)."""
    consumer = Consumer(consumer_config(bootstrap, verbose=verbose))
    try:
        consumer.assign([TopicPartition(topic, 0, offset)])
        until = Deadline(min(5.0, deadline.remaining(1.0)))
        while not until.expired():
            msg = consumer.poll(0.2)
            if msg is not None:
                return msg.error() is None and msg.offset() == offset
        return False
    finally:
        consumer.close()


def compare_stored(high: int, expected: int) -> str:
    """``ok``, ``more`` or ``fewer``: a fresh topic's end offset ``high`` against ``expected``."""
    return "ok" if high == expected else "more" if high > expected else "fewer"


def verify_stored(ctx: Context, expected: int) -> tuple[int, int]:
    """Check partition 0 of the fresh topic holds the ``expected`` acknowledged records.

    The topic was empty, so its high watermark must reach ``expected``; it is read
    (ListOffsets) for up to 3 s until it does. If the broker still reports less,
    the last record is fetched by offset: when it is there the broker's high
    watermark lags its log, which becomes a note; when it is not, records were
    lost and the run is invalid. Returns the (low, high) watermarks.
    """
    until = Deadline(min(3.0, ctx.deadline.remaining(0.5)))
    while True:
        low, high = watermarks(ctx.bootstrap, ctx.topic, ctx.deadline, ctx.opts.verbose)
        verdict = compare_stored(high, expected)
        if verdict != "fewer" or until.expired():
            break
        time.sleep(0.2)
    where = f"{ctx.topic}[0] (offsets {low}..{high})"
    if verdict == "more":
        ctx.notes.append(
            f"broker reports {high:,} records in {where}, {expected:,} were produced "
            "(retried duplicates?)"
        )
    elif verdict == "fewer":
        last = expected - 1
        if not readable_offset(ctx.bootstrap, ctx.topic, last, ctx.deadline, ctx.opts.verbose):
            raise BenchError(
                f"broker reports {high:,} of {expected:,} acknowledged records in {where} "
                f"and offset {last} cannot be read"
            )
        ctx.notes.append(
            f"ListOffsets reports {high:,} records in {where} but offset {last} is "
            "readable: the broker's high watermark lags its log"
        )
    if low > 0:
        ctx.notes.append(f"broker already deleted offsets below {low:,} (retention)")
    return low, high


# --------------------------------------------------------------------------- producing


class ErrorLog:
    """``error_cb``: keeps the last client-level error (e.g. all brokers down) for messages."""

    def __init__(self) -> None:
        self.last: str | None = None

    def __call__(self, err: Any) -> None:
        """Called by librdkafka with a KafkaError."""
        self.last = err.str() if hasattr(err, "str") else str(err)

    def suffix(self) -> str:
        """``; last client error: ...`` or an empty string."""
        return f"; last client error: {self.last}" if self.last else ""


class DeliveryCounter:
    """Delivery-report callback: counts successes and failures and keeps the first error."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.first_error: str | None = None
        self.client_errors = ErrorLog()  # the producer's error_cb

    def __call__(self, err: Any, msg: Any) -> None:
        """Called by librdkafka (from poll/flush) once per reported delivery."""
        if err is None:
            self.delivered += 1
            return
        self.failed += 1
        if self.first_error is None:
            self.first_error = err.str() if hasattr(err, "str") else str(err)


@dataclasses.dataclass
class ProduceOutcome:
    """What one producer did, timed from its first produce() to its last delivery."""

    produced: int
    delivered: int
    failed: int
    undelivered: int
    start_ns: int
    end_ns: int
    first_error: str | None = None
    client_error: str | None = None

    def problem(self) -> str | None:
        """Why the figure is invalid, or None when every record was delivered."""
        if self.failed:
            return f"{self.failed:,} of {self.produced:,} deliveries failed: {self.first_error}"
        if self.undelivered:
            last = f"; last client error: {self.client_error}" if self.client_error else ""
            return f"{self.undelivered:,} of {self.produced:,} records still undelivered{last}"
        return None


def produce_one(producer: Any, topic: str, value: bytes, deadline: Deadline) -> None:
    """produce() one record, serving delivery reports while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value, partition=0)
            return
        except BufferError:
            producer.poll(0.001)
            deadline.check("waiting for room in the producer queue")


def produce_all(
    producer: Any, topic: str, values: Sequence[bytes], count: int, deadline: Deadline
) -> None:
    """Produce ``count`` records to partition 0 in a tight loop (deadline checked per chunk)."""
    produce = producer.produce
    done = 0
    while done < count:
        deadline.check(f"producing (record {done:,} of {count:,})")
        chunk = min(PRODUCE_CHUNK, count - done)
        for value in cycled(values, chunk):
            try:
                produce(topic, value, partition=0)
            except BufferError:
                producer.poll(0.001)  # let librdkafka send and free queue space first
                produce_one(producer, topic, value, deadline)
        producer.poll(0)
        done += chunk


def new_producer(
    bootstrap: str,
    topic: str,
    deadline: Deadline,
    *,
    linger_ms: float = 5,
    all_reports: bool = False,
    verbose: bool = False,
) -> tuple[Any, DeliveryCounter]:
    """A connected producer (topic metadata fetched) and its delivery counter."""
    counter = DeliveryCounter()
    config = producer_config(
        bootstrap, linger_ms=linger_ms, all_reports=all_reports, verbose=verbose
    )
    producer = Producer({**config, "on_delivery": counter, "error_cb": counter.client_errors})
    try:
        producer.list_topics(topic, timeout=min(METADATA_TIMEOUT, deadline.remaining(1.0)))
    except KafkaException as exc:
        raise BenchError(f"producer cannot fetch metadata: {kafka_error_text(exc)}") from None
    return producer, counter


def timed_produce(
    producer: Any,
    counter: DeliveryCounter,
    topic: str,
    values: Sequence[bytes],
    count: int,
    deadline: Deadline,
    all_reports: bool,
) -> ProduceOutcome:
    """Produce ``count`` records and flush; time from first produce() to last delivery."""
    start = time.monotonic_ns()
    produce_all(producer, topic, values, count, deadline)
    undelivered = producer.flush(deadline.remaining(0.1))
    end = time.monotonic_ns()
    delivered = counter.delivered if all_reports else count - counter.failed - undelivered
    return ProduceOutcome(
        count,
        delivered,
        counter.failed,
        undelivered,
        start,
        end,
        counter.first_error,
        counter.client_errors.last,
    )


# --------------------------------------------------------------------------- scenarios: runs


@dataclasses.dataclass
class Measurement:
    """What a scenario measured."""

    records: int
    nbytes: int
    seconds: float
    latency: dict[str, float] | None = None


@dataclasses.dataclass
class Context:
    """What a scenario run gets: the broker, its topic, the options and the time budget."""

    scenario: Scenario
    bootstrap: str
    topic: str
    opts: Options
    deadline: Deadline
    notes: list[str]

    @property
    def count(self) -> int:
        """Records this scenario produces."""
        return self.opts.record_count(self.scenario)


def run_produce(ctx: Context) -> Measurement:
    """One Python loop produces the records; throughput to the last delivery report."""
    size = ctx.scenario.record_size
    producer, counter = new_producer(
        ctx.bootstrap,
        ctx.topic,
        ctx.deadline,
        all_reports=ctx.opts.all_delivery_reports,
        verbose=ctx.opts.verbose,
    )
    outcome = timed_produce(
        producer,
        counter,
        ctx.topic,
        make_values(size),
        ctx.count,
        ctx.deadline,
        ctx.opts.all_delivery_reports,
    )
    if outcome.problem():
        raise BenchError(outcome.problem())
    verify_stored(ctx, ctx.count)
    return Measurement(ctx.count, ctx.count * size, (outcome.end_ns - outcome.start_ns) / 1e9)


def fill_topic(ctx: Context) -> tuple[int, int]:
    """Produce the records a consume scenario reads (untimed); return the watermarks."""
    producer, counter = new_producer(
        ctx.bootstrap, ctx.topic, ctx.deadline, verbose=ctx.opts.verbose
    )
    outcome = timed_produce(
        producer,
        counter,
        ctx.topic,
        make_values(ctx.scenario.record_size),
        ctx.count,
        ctx.deadline,
        all_reports=False,
    )
    if outcome.problem():
        raise BenchError(f"filling the topic: {outcome.problem()}")
    seconds = (outcome.end_ns - outcome.start_ns) / 1e9
    ctx.notes.append(f"filled with {ctx.count:,} records in {seconds:.2f} s (untimed)")
    low, high = verify_stored(ctx, ctx.count)
    if low > 0:
        raise BenchError(
            f"broker kept only offsets {low:,}..{high:,} of the {ctx.count:,} records "
            "written; reading them all back needs a larger retention"
        )
    return low, high


def consume_exactly(
    consumer: Any, topic: str, count: int, deadline: Deadline, errors: ErrorLog
) -> int:
    """Read ``count`` records of partition 0 from the start; return the last offset seen.

    ``consume(num_messages=n)`` waits until n records are there or the timeout
    passes, so the batch is never larger than what is still missing: the last
    call returns as soon as the last record arrives.
    """
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    received, last_offset = 0, -1
    while received < count:
        deadline.check(f"consuming ({received:,} of {count:,} records read{errors.suffix()})")
        batch = consumer.consume(
            num_messages=min(CONSUME_BATCH, count - received),
            timeout=min(1.0, deadline.remaining(0.01)),
        )
        for msg in batch:
            if msg.error() is not None:
                raise BenchError(f"consumer error after {received:,} records: {msg.error().str()}")
        if batch:
            received += len(batch)
            last_offset = batch[-1].offset()
    return last_offset


def run_consume(ctx: Context) -> Measurement:
    """Fill the topic, then time one consumer reading every record back from offset 0."""
    low, _ = fill_topic(ctx)
    errors = ErrorLog()
    consumer = Consumer(
        {**consumer_config(ctx.bootstrap, verbose=ctx.opts.verbose), "error_cb": errors}
    )
    try:
        consumer.get_watermark_offsets(
            TopicPartition(ctx.topic, 0), timeout=min(METADATA_TIMEOUT, ctx.deadline.remaining(1.0))
        )
        start = time.perf_counter_ns()
        last = consume_exactly(consumer, ctx.topic, ctx.count, ctx.deadline, errors)
        seconds = (time.perf_counter_ns() - start) / 1e9
    except KafkaException as exc:
        raise BenchError(f"consumer: {kafka_error_text(exc)}") from None
    finally:
        consumer.close()
    if last != low + ctx.count - 1:
        raise BenchError(
            f"read {ctx.count:,} records but the last offset was {last}, "
            f"expected {low + ctx.count - 1}"
        )
    return Measurement(ctx.count, ctx.count * ctx.scenario.record_size, seconds)


def paced_produce(
    producer: Any, topic: str, rate: float, count: int, size: int, deadline: Deadline
) -> tuple[int, int]:
    """Send ``count`` timestamped records at ``rate``/s on an absolute schedule.

    Each value carries ``time.monotonic_ns()`` taken just before its produce();
    CLOCK_MONOTONIC is shared by all processes of a machine, so the consumer
    process can subtract it from its own reading. Returns (first, last) send time.
    """
    interval = 1e9 / rate
    start = time.monotonic_ns()
    sent = start
    for i in range(count):
        delay = (start + i * interval - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)
        if not i % 1000:
            deadline.check(f"sending latency records ({i:,} of {count:,} sent)")
        sent = time.monotonic_ns()
        produce_one(producer, topic, encode_timestamp(sent, size), deadline)
        producer.poll(0)
    return start, sent


def receive_timestamps(
    consumer: Any, expected: int, deadline: Deadline, errors: ErrorLog, ready: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Poll ``expected`` timestamped records; return (send, receive) times in ns.

    ``ready`` is set after the first poll() (which starts fetching the empty
    topic), telling the producer it may begin.
    """
    send, recv = np.empty(expected, np.int64), np.empty(expected, np.int64)
    received, started = 0, False
    while received < expected:
        msg = consumer.poll(0.1)
        now = time.monotonic_ns()
        if not started:
            ready.set()
            started = True
        if msg is None:
            deadline.check(f"receiving ({received:,} of {expected:,} records{errors.suffix()})")
            continue
        if msg.error() is not None:
            raise BenchError(f"consumer error: {msg.error().str()}")
        send[received], recv[received] = decode_timestamp(msg.value()), now
        received += 1
    return send, recv


def latency_consumer_main(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout: float,
    verbose: bool,
    ready: Any,
    results: Any,
) -> None:
    """Child process: read ``expected`` timestamped records and report send/receive times."""
    out: dict[str, Any] = {"send_ns": b"", "recv_ns": b"", "error": None}
    consumer = None
    try:
        deadline = Deadline(timeout)
        errors = ErrorLog()
        consumer = Consumer(
            {**consumer_config(bootstrap, latency=True, verbose=verbose), "error_cb": errors}
        )
        consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=METADATA_TIMEOUT)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        send, recv = receive_timestamps(consumer, expected, deadline, errors, ready)
        out.update(send_ns=send.tobytes(), recv_ns=recv.tobytes())
    except Exception as exc:  # reported to the parent, which owns the result
        out["error"] = kafka_error_text(exc)
    finally:
        results.put(out)
        if consumer is not None:
            consumer.close()


def spawn_context() -> Any:
    """multiprocessing with ``spawn``: children share no librdkafka state with the parent."""
    return multiprocessing.get_context("spawn")


def stop_processes(procs: Iterable[Any], grace: float = 5.0) -> None:
    """Join child processes, terminating any still running after ``grace`` seconds."""
    for proc in procs:
        proc.join(timeout=grace)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=grace)


def run_latency(ctx: Context) -> Measurement:
    """Fixed-rate producer here (linger.ms=0), consumer in a child process; latency = recv-send."""
    opts, size = ctx.opts, ctx.scenario.record_size
    count = ctx.count
    mp = spawn_context()
    ready, results = mp.Event(), mp.Queue()
    child = mp.Process(
        target=latency_consumer_main,
        daemon=True,
        args=(
            ctx.bootstrap,
            ctx.topic,
            count,
            ctx.deadline.remaining(1.0),
            opts.verbose,
            ready,
            results,
        ),
    )
    child.start()
    try:
        wait_ready(ready, child, results, ctx.deadline)
        producer, counter = new_producer(
            ctx.bootstrap, ctx.topic, ctx.deadline, linger_ms=0, verbose=opts.verbose
        )
        first, last = paced_produce(
            producer, ctx.topic, opts.latency_rate, count, size, ctx.deadline
        )
        undelivered = producer.flush(ctx.deadline.remaining(0.1))
        if counter.failed or undelivered:
            raise BenchError(
                f"{counter.failed} deliveries failed ({counter.first_error}), "
                f"{undelivered} undelivered"
            )
        out = results.get(timeout=ctx.deadline.remaining(1.0))
    except queue.Empty:
        raise BenchError("latency consumer sent no result before the timeout") from None
    finally:
        stop_processes([child])
    if out["error"]:
        raise BenchError(f"latency consumer: {out['error']}")
    send = np.frombuffer(out["send_ns"], np.int64)
    recv = np.frombuffer(out["recv_ns"], np.int64)
    summary = latency_summary(send, recv, first + int(opts.latency_warmup * 1e9))
    ctx.notes.append(
        f"{summary['samples']:,} samples after a {opts.latency_warmup:g} s warm-up; "
        f"target rate {opts.latency_rate:,.0f} rec/s"
    )
    # The span between the first and the last send holds count - 1 intervals; add the last one.
    seconds = (last - first) / 1e9 + 1 / opts.latency_rate
    return Measurement(count, count * size, seconds, summary)


def wait_ready(ready: Any, child: Any, results: Any, deadline: Deadline) -> None:
    """Wait until the latency consumer is fetching; fail early if it died."""
    while not ready.wait(timeout=0.1):
        if not child.is_alive():
            raise BenchError(f"latency consumer failed to start: {child_error(results)}")
        deadline.check("waiting for the latency consumer to start")


def child_error(results: Any) -> str:
    """The error a child process reported, if it already did."""
    try:
        return results.get(timeout=1.0).get("error") or "no error reported"
    except queue.Empty:
        return "no answer"


def producer_worker(
    bootstrap: str,
    topic: str,
    count: int,
    size: int,
    all_reports: bool,
    timeout: float,
    verbose: bool,
    barrier: Any,
    results: Any,
) -> None:
    """Child process of multi-producer: connect, wait for the others, produce, report."""
    report: dict[str, Any] = {"error": None}
    try:
        deadline = Deadline(timeout)
        producer, counter = new_producer(
            bootstrap, topic, deadline, all_reports=all_reports, verbose=verbose
        )
        values = make_values(size)
        barrier.wait(timeout=deadline.remaining(1.0))
        outcome = timed_produce(producer, counter, topic, values, count, deadline, all_reports)
        report.update(dataclasses.asdict(outcome))
        report["error"] = outcome.problem()
    except threading.BrokenBarrierError:
        report["error"] = "another producer process failed before the start"
    except Exception as exc:  # reported to the parent, which owns the result
        report["error"] = kafka_error_text(exc)
        barrier.abort()
    results.put(report)


def run_multi_producer(ctx: Context) -> Measurement:
    """N producer processes start together; throughput = total / (last end - first start)."""
    opts, size = ctx.opts, ctx.scenario.record_size
    counts = split_count(ctx.count, opts.producers)
    mp = spawn_context()
    barrier, results = mp.Barrier(len(counts)), mp.Queue()
    procs = [
        mp.Process(
            target=producer_worker,
            daemon=True,
            args=(
                ctx.bootstrap,
                ctx.topic,
                n,
                size,
                opts.all_delivery_reports,
                ctx.deadline.remaining(1.0),
                opts.verbose,
                barrier,
                results,
            ),
        )
        for n in counts
    ]
    for proc in procs:
        proc.start()
    reports = []
    try:
        for _ in procs:
            reports.append(results.get(timeout=ctx.deadline.remaining(1.0)))
    except queue.Empty:
        raise BenchError(
            f"only {len(reports)} of {len(procs)} producer processes reported before the timeout"
        ) from None
    finally:
        stop_processes(procs)
    errors = [r["error"] for r in reports if r["error"]]
    if errors:
        raise BenchError(f"{len(errors)} of {len(procs)} producers failed: {errors[0]}")
    verify_stored(ctx, ctx.count)
    seconds = aggregate_window((r["start_ns"], r["end_ns"]) for r in reports)
    ctx.notes.append(f"{len(procs)} processes x ~{counts[0]:,} records")
    return Measurement(ctx.count, ctx.count * size, seconds)


def resolve_kcat(name: str) -> str:
    """Path of the kcat executable, or BenchError."""
    path = shutil.which(name)
    if path is None:
        raise BenchError(
            f"kcat not found ({name!r}); install it (Debian: apt-get install kcat) "
            "or pass --kcat PATH"
        )
    return path


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (a child's stderr), or a placeholder."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def run_kcat(ctx: Context) -> Measurement:
    """kcat -P reads a file of records; timed from its start to its exit (all delivered)."""
    kcat = resolve_kcat(ctx.opts.kcat)
    size = ctx.scenario.record_size
    with tempfile.TemporaryDirectory(prefix="pystream-e2e-") as tmp:
        path = Path(tmp) / "records.txt"
        write_records_file(path, make_values(size), ctx.count)
        cmd = kcat_command(kcat, ctx.bootstrap, ctx.topic, path)
        start = time.perf_counter_ns()
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                check=False,
                timeout=ctx.deadline.remaining(1.0),
            )
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"kcat did not finish within the {ctx.opts.timeout:g} s timeout"
            ) from None
        seconds = (time.perf_counter_ns() - start) / 1e9
    if proc.returncode != 0:
        raise BenchError(f"kcat exited with status {proc.returncode}: {last_line(proc.stderr)}")
    verify_stored(ctx, ctx.count)
    ctx.notes.append("timed from kcat's start (process start-up and metadata included)")
    return Measurement(ctx.count, ctx.count * size, seconds)


RUNNERS: dict[str, Callable[[Context], Measurement]] = {
    "produce": run_produce,
    "consume": run_consume,
    "latency": run_latency,
    "multi-producer": run_multi_producer,
    "kcat": run_kcat,
}


# --------------------------------------------------------------------------- results


@dataclasses.dataclass
class Result:
    """One row of the table: a scenario on a broker."""

    scenario: str
    broker: str
    records: int = 0
    bytes: int = 0
    seconds: float | None = None
    records_per_s: float | None = None
    mb_per_s: float | None = None
    latency_ms: dict[str, float] | None = None
    target: str | None = None
    verdict: str = "ERROR"  # PASS, FAIL, "-" (no target) or ERROR
    error: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


def metric_value(result: Result, metric: str) -> float | None:
    """The value of a target's metric in ``result``."""
    if metric == "p99_ms":
        return result.latency_ms["p99"] if result.latency_ms else None
    return getattr(result, metric)


def judge(result: Result, target: Target | None) -> str:
    """PASS/FAIL against ``target``, ``-`` without one, ERROR if there is no valid figure."""
    if result.error is not None:
        return "ERROR"
    if target is None:
        return "-"
    value = metric_value(result, target.metric)
    if value is None:
        return "ERROR"
    return "PASS" if target.met_by(value) else "FAIL"


def make_result(
    scenario: Scenario,
    broker: str,
    measurement: Measurement | None,
    error: str | None,
    notes: list[str],
) -> Result:
    """Build the table row of a finished (or failed) scenario."""
    result = Result(
        scenario.name,
        broker,
        notes=list(notes),
        error=error,
        target=scenario.target.label if scenario.target else None,
    )
    if measurement is not None and error is None:
        result.records, result.bytes = measurement.records, measurement.nbytes
        result.seconds = measurement.seconds
        result.records_per_s, result.mb_per_s = throughput(
            measurement.records, measurement.nbytes, measurement.seconds
        )
        result.latency_ms = measurement.latency
    result.verdict = judge(result, scenario.target)
    return result


def unique_topic(scenario: Scenario) -> str:
    """A fresh topic name for one run of ``scenario``."""
    return f"pystream-bench-{scenario.name}-{uuid.uuid4().hex[:10]}"


def run_scenario(
    scenario: Scenario, bootstrap: Bootstrap, opts: Options, support: AdminSupport
) -> Result:
    """Create the topic, run the scenario within its deadline, delete the topic."""
    broker = str(bootstrap)
    topic = unique_topic(scenario)
    notes: list[str] = []
    deadline = Deadline(opts.timeout)
    measurement, error, created = None, None, False
    try:
        note = create_topic(broker, topic, deadline, support, opts.verbose)
        created = True
        notes.extend([note] if note else [])
        ctx = Context(scenario, broker, topic, opts, deadline, notes)
        measurement = RUNNERS[scenario.kind](ctx)
    except BenchError as exc:
        error = str(exc)
    except (KafkaException, OSError) as exc:
        error = kafka_error_text(exc)
    finally:
        note = delete_topic(broker, topic, support, opts.verbose)
        if note and created:
            notes.append(note)
    return make_result(scenario, broker, measurement, error, notes)


def fmt_count(value: float | None) -> str:
    """``1,234,567`` (or ``-``)."""
    return "-" if value is None else f"{value:,.0f}"


def fmt_mb(value: float | None) -> str:
    """MB/s with one decimal (or ``-``)."""
    return "-" if value is None else f"{value:,.1f}"


def fmt_ms(value: float | None) -> str:
    """Milliseconds with three significant decimals (or ``-``)."""
    return "-" if value is None else f"{value:.3f}" if value < 10 else f"{value:,.1f}"


def fmt_seconds(value: float | None) -> str:
    """Seconds with two decimals (or ``-``)."""
    return "-" if value is None else f"{value:.2f}"


VERDICT_STYLE = {"PASS": "bold green", "FAIL": "bold yellow", "ERROR": "bold red", "-": "dim"}


def render_table(results: Sequence[Result]) -> Table:
    """The broker x scenario table (one row per pair, grouped by scenario)."""
    table = Table(title="pystream end-to-end benchmark (librdkafka load generator)")
    for name in ("scenario", "broker", "records", "s", "records/s", "MB/s"):
        left = name in ("scenario", "broker")
        table.add_column(name, justify="left" if left else "right", no_wrap=left)
    for name in ("p50 ms", "p99 ms", "p99.9 ms", "max ms"):
        table.add_column(name, justify="right")
    table.add_column("target", no_wrap=True)
    table.add_column("result", no_wrap=True)
    previous = None
    for r in results:
        if previous is not None and r.scenario != previous:
            table.add_section()
        previous = r.scenario
        lat = r.latency_ms or {}
        verdict = f"[{VERDICT_STYLE[r.verdict]}]{r.verdict}[/]"
        table.add_row(
            Text(r.scenario),
            Text(r.broker),
            fmt_count(r.records or None),
            fmt_seconds(r.seconds),
            fmt_count(r.records_per_s),
            fmt_mb(r.mb_per_s),
            fmt_ms(lat.get("p50")),
            fmt_ms(lat.get("p99")),
            fmt_ms(lat.get("p999")),
            fmt_ms(lat.get("max")),
            r.target or "-",
            verdict,
        )
    return table


def footnotes(results: Sequence[Result]) -> list[str]:
    """Errors and notes under the table, one line each."""
    lines = []
    for r in results:
        if r.error:
            lines.append(f"{r.scenario} @ {r.broker}: ERROR: {r.error}")
        lines.extend(f"{r.scenario} @ {r.broker}: {note}" for note in r.notes)
    return lines


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded with the JSON results."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    if confluent_kafka is not None:
        info["confluent_kafka"] = confluent_kafka.__version__
        info["librdkafka"] = confluent_kafka.libversion()[0]
    return info


def results_document(
    results: Sequence[Result], opts: Options, brokers: dict[str, str]
) -> dict[str, Any]:
    """The JSON document written by ``--json``."""
    return {
        "tool": "bench/e2e.py",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
        "brokers": brokers,
        "options": {
            "scenarios": [s.name for s in opts.scenarios],
            "records": opts.records,
            "producers": opts.producers,
            "timeout": opts.timeout,
            "latency_rate": opts.latency_rate,
            "latency_duration": opts.latency_duration,
            "latency_warmup": opts.latency_warmup,
            "delivery_reports": "all" if opts.all_delivery_reports else "errors",
        },
        "targets": {s.name: s.target.label for s in opts.scenarios if s.target},
        "results": [dataclasses.asdict(r) for r in results],
    }


def progress_line(result: Result) -> str:
    """One line for the progress log after a scenario finished."""
    if result.error:
        return f"ERROR: {result.error}"
    text = f"{fmt_count(result.records_per_s)} rec/s, {fmt_mb(result.mb_per_s)} MB/s"
    if result.latency_ms:
        text += f", p99 {fmt_ms(result.latency_ms['p99'])} ms"
    return f"{text} -> {result.verdict}"


def run_all(opts: Options, log: Console) -> list[Result]:
    """Every scenario on every broker, scenario by scenario so brokers alternate."""
    results = []
    total = len(opts.scenarios) * len(opts.bootstraps)
    support = {str(b): AdminSupport() for b in opts.bootstraps}
    for scenario in opts.scenarios:
        for bootstrap in opts.bootstraps:
            log.print(
                f"[{len(results) + 1}/{total}] {scenario.name} @ {bootstrap} ...",
                markup=False,
                highlight=False,
            )
            result = run_scenario(scenario, bootstrap, opts, support[str(bootstrap)])
            log.print(f"    {progress_line(result)}", markup=False, highlight=False)
            results.append(result)
    return results


def wide_width(console: Console, minimum: int = 140) -> int | None:
    """Console width: the terminal's, or ``minimum`` when output goes to a file or pipe."""
    return None if console.is_terminal else max(console.width, minimum)


def fail(message: str, status: int = 1) -> int:
    """Print a one-line error to stderr and return ``status``."""
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    opts = parse_args(argv)
    if opts.client_config:  # inherited by the spawned scenario processes
        os.environ[CLIENT_CONFIG_ENV] = json.dumps(dict(opts.client_config))
    if confluent_kafka is None:
        return fail("confluent-kafka is not installed (pip install confluent-kafka)")
    log = Console(stderr=True, width=wide_width(Console(stderr=True)))
    brokers = {}
    try:
        for bootstrap in opts.bootstraps:
            brokers[str(bootstrap)] = check_broker(bootstrap, opts)
            log.print(f"{bootstrap}: {brokers[str(bootstrap)]}", markup=False, highlight=False)
    except BenchError as exc:
        return fail(str(exc))
    results = run_all(opts, log)
    out = Console(width=wide_width(Console()))
    out.print(render_table(results))
    for line in footnotes(results):
        out.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    if opts.json_path is not None:
        document = results_document(results, opts, brokers)
        try:
            opts.json_path.write_text(json.dumps(document, indent=2) + "\n")
        except OSError as exc:
            return fail(f"cannot write {opts.json_path}: {exc.strerror or exc}")
    return 1 if any(r.verdict == "ERROR" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
