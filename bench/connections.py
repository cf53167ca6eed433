"""Many connections: idle connections' cost, a connection storm, and the limits under it.

Starts its own ``pystream serve`` (a temporary log dir; PLAINTEXT and SASL_PLAINTEXT
listeners on 127.0.0.1) and drives it from ``--workers`` load-generator processes
(asyncio raw sockets, requests encoded once up front, each worker on its own 127.0.0.x
source addresses), so that the generator does not share the broker's process::

    PYTHONPATH=src python bench/connections.py [--connections 10000] [--rate 1000]
        [--seconds 10] [--workers 2] [--event-loop asyncio|uvloop] [--runs 1]
        [--scenarios idle,latency,storm,storm-sasl,storm-per-ip] [--json out.json]

=============  ===========================================================================
scenario       what
=============  ===========================================================================
idle           ``--connections`` connections, each ApiVersions once, then idle: the
               broker's RSS per connection (RSS after minus before, over the count) and
               its CPU over 5 s of idling
latency        ``bench/e2e.py --scenario latency`` (confluent-kafka, 5,000 rec/s for
               10 s, send-to-receive p50/p99) without, then with the idle connections
storm          ``--rate`` connects/s for ``--seconds``: connect, ApiVersions, Metadata
               (no topics), close; served rate, connect-to-first-response p50/p99
storm-sasl     the same rate of logins with a wrong PLAIN password (connect, ApiVersions,
               SaslHandshake, SaslAuthenticate): time to the failed answer p50/p99, which
               connection.failed.authentication.delay.ms (--auth-delay-ms) stretches,
               while a plaintext storm at the same rate runs alongside
storm-per-ip   the plaintext storm from one address limited by
               max.connections.per.ip.overrides to ``--per-ip-limit``, each connection
               kept 100 ms (about 100 open at once at 1,000/s): served and refused
               (closed at once) connections
=============  ===========================================================================

Every connection has a 10 s deadline; the storm's in-flight connections are capped at
``--rate`` x 5.  A run at the defaults takes about 2 minutes.  Exit status 0 when every
scenario ran, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parent.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from pystream.protocol import encode_request_frame  # noqa: E402
from pystream.protocol.messages import RequestHeader  # noqa: E402
from pystream.protocol.messages.api_versions import ApiVersionsRequest  # noqa: E402
from pystream.protocol.messages.metadata import MetadataRequest  # noqa: E402
from pystream.protocol.messages.sasl_authenticate import SaslAuthenticateRequest  # noqa: E402
from pystream.protocol.messages.sasl_handshake import SaslHandshakeRequest  # noqa: E402

CONNECT_TIMEOUT = 10.0
PER_IP_HOST = "127.0.0.250"  # the storm-per-ip source address (its override names it)
# storm-per-ip keeps each connection this long: at 1,000/s about 100 are open at once,
# twice --per-ip-limit's default.
PER_IP_HOLD = 0.1
SCENARIOS = ("idle", "latency", "storm", "storm-sasl", "storm-per-ip")


# --- requests, encoded once ---------------------------------------------------------------
def _frame(api_key: int, version: int, body: Any) -> bytes:
    header = RequestHeader(
        request_api_key=api_key,
        request_api_version=version,
        correlation_id=1,
        client_id="bench-connections",
    )
    return encode_request_frame(header, body)


def requests() -> dict[str, bytes]:
    """The pre-encoded request frames the workers send."""
    return {
        "api_versions": _frame(
            18, 3, ApiVersionsRequest(client_software_name="bench", client_software_version="1")
        ),
        "metadata": _frame(3, 9, MetadataRequest(topics=[], allow_auto_topic_creation=False)),
        "sasl_handshake": _frame(17, 1, SaslHandshakeRequest(mechanism="PLAIN")),
        "sasl_authenticate": _frame(
            36, 2, SaslAuthenticateRequest(auth_bytes=b"\0bench\0not-the-password")
        ),
    }


# --- load-generator side (worker processes) -----------------------------------------------
async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


async def _exchange(
    host: str, port: int, source: str, frames: Sequence[bytes], hold: float = 0.0
) -> tuple[float, float]:
    """Connect from ``source``, send each frame and read its answer, close.  Returns the
    seconds from the connect to the first answer and to the last."""
    start = time.perf_counter()
    first = 0.0
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    try:
        for i, frame in enumerate(frames):
            writer.write(frame)
            await _read_frame(reader)
            if i == 0:
                first = time.perf_counter() - start
        last = time.perf_counter() - start
        if hold:
            await asyncio.sleep(hold)  # keep the connection a while (per-IP limits)
        return first, last
    finally:
        writer.transport.abort()


async def _storm(
    host: str,
    port: int,
    sources: list[str],
    frames: list[bytes],
    rate: float,
    seconds: float,
    hold: float = 0.0,
) -> dict[str, Any]:
    """``rate`` exchanges per second for ``seconds``, each on a new connection kept
    ``hold`` seconds after its last answer."""
    latencies: list[float] = []
    last_latencies: list[float] = []
    failures = 0
    refused = 0
    limit = asyncio.Semaphore(int(max(rate * 5, 50)))
    skipped = 0

    async def one(source: str) -> None:
        nonlocal failures, refused
        try:
            first, last = await asyncio.wait_for(
                _exchange(host, port, source, frames, hold), CONNECT_TIMEOUT
            )
            latencies.append(first)
            last_latencies.append(last)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            refused += 1  # closed by the broker before it answered
        except (TimeoutError, OSError):
            failures += 1
        finally:
            limit.release()

    tasks = []
    start = time.perf_counter()
    count = int(rate * seconds)
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if limit.locked():
            skipped += 1  # the broker is this far behind: do not pile on
            continue
        await limit.acquire()
        tasks.append(asyncio.ensure_future(one(sources[i % len(sources)])))
    sent_for = time.perf_counter() - start
    await asyncio.gather(*tasks)
    return {
        "attempted": count,
        "skipped": skipped,
        "served": len(latencies),
        "refused": refused,
        "failures": failures,
        "send_seconds": sent_for,
        "total_seconds": time.perf_counter() - start,
        "latencies": latencies,
        "last_latencies": last_latencies,
    }


async def _idle(
    host: str, port: int, sources: list[str], frame: bytes, count: int, hold: Any, done: Any
) -> dict[str, Any]:
    """Open ``count`` connections (ApiVersions each) and hold them until ``hold`` is set."""
    writers: list[asyncio.StreamWriter] = []
    failures = 0
    sem = asyncio.Semaphore(200)

    async def one(i: int) -> None:
        nonlocal failures
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, local_addr=(sources[i % len(sources)], 0)),
                    CONNECT_TIMEOUT,
                )
                writer.write(frame)
                await asyncio.wait_for(_read_frame(reader), CONNECT_TIMEOUT)
                writers.append(writer)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                failures += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    done.set()
    while not hold.is_set():
        await asyncio.sleep(0.1)
    for writer in writers:
        writer.transport.abort()
    return {"open": len(writers), "failures": failures}


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def worker_main(kind: str, params: dict[str, Any], results: Any, hold: Any, done: Any) -> None:
    """One load-generator process (uvloop when installed: the cheaper generator)."""
    _raise_nofile()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        if kind == "idle":
            out = runner.run(_idle(**params, hold=hold, done=done))
        else:
            out = runner.run(_storm(**params))
    results.put(out)


def run_workers(kind: str, params: list[dict[str, Any]], hold: Any = None) -> list[Any]:
    """Run one worker per ``params`` entry; returns their results (and, for idle, the
    processes, which hold their connections until ``hold`` is set)."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    dones = [ctx.Event() for _ in params]
    procs = [
        ctx.Process(target=worker_main, args=(kind, p, results, hold, d), daemon=True)
        for p, d in zip(params, dones, strict=True)
    ]
    for proc in procs:
        proc.start()
    return [procs, results, dones]


def collect(procs: list[Any], results: Any, timeout: float) -> list[dict[str, Any]]:
    out = [results.get(timeout=timeout) for _ in procs]
    for proc in procs:
        proc.join(5)
    return out


def worker_sources(worker: int, per_worker: int = 8, block: int = 0) -> list[str]:
    """Distinct 127.<block>.0.x source addresses per worker (ephemeral ports are per
    address).  Each scenario has its own block: the closed connections of one (in
    TIME_WAIT on the generator's side) must not slow the next one's port choice."""
    return [f"127.{block}.0.{10 + worker * per_worker + i}" for i in range(per_worker)]


# --- broker side --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    """``pystream serve`` in a child process, with a temporary log dir."""

    def __init__(self, overrides: dict[str, str]) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="bench-connections-"))
        self.plain, self.sasl = free_port(), free_port()
        props = {
            "log.dirs": str(self.directory / "data"),
            "listeners": f"PLAINTEXT://127.0.0.1:{self.plain},"
            f"SASL_PLAINTEXT://127.0.0.1:{self.sasl}",
            "metrics.enable": "false",
            **overrides,
        }
        command = [sys.executable, "-m", "pystream", "serve", "--log-level", "WARNING"]
        for key, value in props.items():
            command += ["--override", f"{key}={value}"]
        env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONUNBUFFERED": "1"}
        self.log_path = self.directory / "broker.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env
        )
        deadline = time.monotonic() + 60
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "bootstrap.servers=" in line or time.monotonic() > deadline:
                break
        if self.process.poll() is not None:
            raise SystemExit(f"the broker did not start; see {self.log_path}")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def rss_bytes(self) -> int:
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", text)
        return int(match.group(1)) * 1024 if match else 0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


# --- scenarios ----------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def storm(
    broker: Broker,
    args: argparse.Namespace,
    port: int,
    frames: list[bytes],
    block: int,
    per_ip: bool = False,
) -> dict[str, Any]:
    """One storm from ``--workers`` processes, from source addresses 127.<block>.0.x."""
    workers = args.workers
    rate = args.rate / workers
    params = [
        {
            "host": "127.0.0.1",
            "port": port,
            "sources": [PER_IP_HOST] if per_ip else worker_sources(w, block=block),
            "frames": frames,
            "rate": rate,
            "seconds": args.seconds,
            "hold": PER_IP_HOLD if per_ip else 0.0,
        }
        for w in range(workers)
    ]
    cpu0 = broker.cpu_seconds()
    procs, results, _ = run_workers("storm", params)
    outs = collect(procs, results, args.seconds + 60)
    cpu = broker.cpu_seconds() - cpu0
    latencies = [x for out in outs for x in out["latencies"]]
    last = [x for out in outs for x in out["last_latencies"]]
    send_seconds = max(out["send_seconds"] for out in outs)
    served = sum(out["served"] for out in outs)
    return {
        "attempted": sum(out["attempted"] for out in outs),
        "served": served,
        "served_per_s": served / max(out["total_seconds"] for out in outs),
        "refused": sum(out["refused"] for out in outs),
        "failures": sum(out["failures"] for out in outs),
        "skipped": sum(out["skipped"] for out in outs),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "last_p50_ms": percentile(last, 50) * 1000,
        "last_p99_ms": percentile(last, 99) * 1000,
        "broker_cpu_pct": 100 * cpu / send_seconds,
    }


def latency_run(port: int) -> dict[str, float]:
    """bench/e2e.py's latency scenario against the broker: p50/p99 in ms."""
    out = Path(tempfile.mkdtemp()) / "latency.json"
    command = [
        sys.executable,
        str(Path(__file__).with_name("e2e.py")),
        "--bootstrap",
        f"127.0.0.1:{port}",
        "--scenario",
        "latency",
        "--json",
        str(out),
    ]
    subprocess.run(command, check=False, capture_output=True, timeout=120)
    try:
        data = json.loads(out.read_text())
    except (OSError, ValueError):
        data = {}
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    latency = (data.get("results") or [{}])[0].get("latency_ms") or {}
    nan = float("nan")
    return {"p50_ms": latency.get("p50", nan), "p99_ms": latency.get("p99", nan)}


def start_idle(args: argparse.Namespace, port: int) -> tuple[Any, Any, Any, Any]:
    """Workers opening ``--connections`` idle connections (each after one ApiVersions):
    their processes, result queue, done events, and the event that lets them close."""
    hold = multiprocessing.get_context("spawn").Event()
    per = [args.connections // args.workers] * args.workers
    per[0] += args.connections - sum(per)
    params = [
        {
            "host": "127.0.0.1",
            "port": port,
            "sources": worker_sources(w),
            "frame": requests()["api_versions"],
            "count": n,
        }
        for w, n in enumerate(per)
    ]
    procs, results, dones = run_workers("idle", params, hold)
    return procs, results, dones, hold


def idle_and_latency(
    broker: Broker, args: argparse.Namespace, with_latency: bool
) -> dict[str, Any]:
    """The idle scenario (RSS, CPU), with e2e.py's latency before and during it."""
    result: dict[str, Any] = {}
    if with_latency:
        result["latency_without"] = latency_run(broker.plain)
    time.sleep(1)
    rss0 = broker.rss_bytes()
    procs, results, dones, hold = start_idle(args, broker.plain)
    try:
        deadline = time.monotonic() + 90
        for done in dones:
            done.wait(max(0.0, deadline - time.monotonic()))
        time.sleep(2)  # let the broker settle (frees, pools) before measuring
        rss1 = broker.rss_bytes()
        cpu0 = broker.cpu_seconds()
        time.sleep(5)
        idle_cpu = (broker.cpu_seconds() - cpu0) / 5 * 100
        result.update(
            rss_before_mb=rss0 / 2**20,
            rss_after_mb=rss1 / 2**20,
            bytes_per_connection=(rss1 - rss0) / args.connections,
            idle_cpu_pct=idle_cpu,
        )
        if with_latency:
            result["latency_with"] = latency_run(broker.plain)
    finally:
        hold.set()
        outs = collect(procs, results, 60)
    result["open"] = sum(out["open"] for out in outs)
    result["failures"] = sum(out["failures"] for out in outs)
    return result


def idle_tracemalloc(args: argparse.Namespace) -> dict[str, Any]:
    """The idle scenario against a broker in this process (a thread), under tracemalloc:
    Python-level bytes per idle connection, and where they are allocated."""
    import tracemalloc

    from pystream.testing.broker import KafkaBroker

    tracemalloc.start()
    directory = Path(tempfile.mkdtemp(prefix="bench-connections-"))
    broker = KafkaBroker(directory, {"metrics.enable": "false"}).start()
    try:
        port = broker.port
        time.sleep(1)
        before = tracemalloc.take_snapshot()
        traced0 = tracemalloc.get_traced_memory()[0]
        procs, results, dones, hold = start_idle(args, port)
        try:
            for done in dones:
                done.wait(90)
            time.sleep(2)
            traced1 = tracemalloc.get_traced_memory()[0]
            after = tracemalloc.take_snapshot()
        finally:
            hold.set()
            outs = collect(procs, results, 60)
        opened = sum(out["open"] for out in outs)
        top = after.compare_to(before, "lineno")[:12]
        print(f"tracemalloc: top allocations for {opened} idle connections (bytes each)")
        for stat in top:
            frame = stat.traceback[0]
            name = frame.filename.split("site-packages/")[-1].split("/src/")[-1]
            print(f"  {stat.size_diff / max(opened, 1):8.0f}  {name}:{frame.lineno}")
        return {"open": opened, "traced_bytes_per_connection": (traced1 - traced0) / max(opened, 1)}
    finally:
        broker.close()
        tracemalloc.stop()
        shutil.rmtree(directory, ignore_errors=True)


def run_once(args: argparse.Namespace, scenarios: Sequence[str]) -> dict[str, Any]:
    frames = requests()
    broker = Broker(
        {
            "event.loop": args.event_loop,
            "connection.failed.authentication.delay.ms": str(args.auth_delay_ms),
            "max.connections.per.ip.overrides": f"{PER_IP_HOST}:{args.per_ip_limit}",
            "sasl.enabled.mechanisms": "PLAIN",
        }
    )
    out: dict[str, Any] = {}
    try:
        if "idle" in scenarios or "latency" in scenarios:
            out["idle"] = idle_and_latency(broker, args, "latency" in scenarios)
        plain = [frames["api_versions"], frames["metadata"]]
        if "storm" in scenarios:
            out["storm"] = storm(broker, args, broker.plain, plain, block=1)
        if "storm-sasl" in scenarios:
            sasl = [frames["api_versions"], frames["sasl_handshake"], frames["sasl_authenticate"]]
            plain_proc = threading.Thread(
                target=lambda: out.__setitem__(
                    "storm-sasl-plain", storm(broker, args, broker.plain, plain, block=3)
                )
            )
            plain_proc.start()
            out["storm-sasl"] = storm(broker, args, broker.sasl, sasl, block=2)
            plain_proc.join()
        if "storm-per-ip" in scenarios:
            out["storm-per-ip"] = storm(broker, args, broker.plain, plain, block=4, per_ip=True)
    finally:
        broker.stop()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="connects per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes")
    parser.add_argument("--event-loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--auth-delay-ms", type=int, default=100)
    parser.add_argument("--per-ip-limit", type=int, default=50)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="only the idle scenario, broker in this process under tracemalloc",
    )
    args = parser.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; known: {SCENARIOS}")
    _raise_nofile()
    if args.tracemalloc:
        runs = [{"idle": idle_tracemalloc(args)} for _ in range(args.runs)]
    else:
        runs = [run_once(args, scenarios) for _ in range(args.runs)]
    print_table(args, runs)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    return 0


def _median(values: list[float]) -> str:
    values = sorted(v for v in values if v == v)
    if not values:
        return "-"
    mid = values[len(values) // 2]
    spread = f" ({values[0]:.4g}..{values[-1]:.4g})" if len(values) > 1 else ""
    return f"{mid:.6g}{spread}"


def print_table(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    print(
        f"\nbench/connections.py  event.loop={args.event_loop}  runs={len(runs)}  "
        f"workers={args.workers}  (median (min..max))"
    )
    rows: list[tuple[str, str, list[float]]] = []

    def add(section: str, key: str, label: str, sub: str | None = None) -> None:
        values = []
        for run in runs:
            node = run.get(section, {})
            if sub is not None:
                node = node.get(sub, {})
            if key in node:
                values.append(float(node[key]))
        if values:
            rows.append((section if sub is None else f"{section}/{sub}", label, values))

    add("idle", "open", "idle connections open")
    add("idle", "bytes_per_connection", "broker RSS per idle connection (bytes)")
    add("idle", "traced_bytes_per_connection", "tracemalloc bytes per idle connection")
    add("idle", "rss_after_mb", "broker RSS with them (MiB)")
    add("idle", "idle_cpu_pct", "broker CPU while idle (% of a core)")
    add("idle", "p50_ms", "producer p50 (ms), no idle connections", "latency_without")
    add("idle", "p99_ms", "producer p99 (ms), no idle connections", "latency_without")
    add("idle", "p50_ms", "producer p50 (ms), with idle connections", "latency_with")
    add("idle", "p99_ms", "producer p99 (ms), with idle connections", "latency_with")
    for name, what in (
        ("storm", "plaintext"),
        ("storm-sasl", "failed SASL logins"),
        ("storm-sasl-plain", "plaintext during the SASL storm"),
        ("storm-per-ip", f"one address, max {args.per_ip_limit}"),
    ):
        add(name, "served_per_s", f"{what}: served connections/s")
        add(name, "p50_ms", f"{what}: connect to first answer p50 (ms)")
        add(name, "p99_ms", f"{what}: connect to first answer p99 (ms)")
        add(name, "last_p50_ms", f"{what}: connect to last answer p50 (ms)")
        add(name, "last_p99_ms", f"{what}: connect to last answer p99 (ms)")
        add(name, "refused", f"{what}: closed by the broker")
        add(name, "failures", f"{what}: failures (timeouts, errors)")
        add(name, "skipped", f"{what}: not attempted (5 s behind)")
        add(name, "broker_cpu_pct", f"{what}: broker CPU (% of a core)")
    width = max(len(label) for _, label, _ in rows) if rows else 10
    for _, label, values in rows:
        print(f"  {label:<{width}}  {_median(values)}")


if __name__ == "__main__":
    sys.exit(main())
