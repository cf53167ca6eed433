"""REST proxy produce throughput and latency, against direct Kafka-protocol produce.

Starts a broker (``pystream serve``) and a proxy (``pystream rest``) as subprocesses
on free ports, then, per round:

* **1-record POSTs**: ``--clients`` concurrent keep-alive HTTP/1.1 connections (spread
  over ``--client-procs`` processes; a minimal hand-written client, see ``_post_loop``)
  POST one JSON record each to ``/topics/{t}`` for
  ``--seconds``: requests/s, and p50/p99 of a request as the client sees it;
* **100-record POSTs**: the same with 100 records per request: records/s;
* **v3 1-record POSTs**: the same against ``/v3/clusters/{id}/topics/{t}/records``;
* **v3 streamed**: ``--client-procs`` httpx clients, 100 and 1,000 records per request
  in v3's streamed mode (one JSON object per line, one result line per record): records/s;
* **direct**: ``pystream.aio.Producer.send`` of the same records (one process, the
  proxy's own client) for ``--seconds``: records/s -- the ceiling the proxy adds HTTP to;
* **consumed**: one consumer instance reading the topic from the beginning with
  back-to-back ``GET .../records`` (httpx): records/s.

Prints each round and the median of ``--runs`` rounds with the range::

    PYTHONPATH=src python bench/rest_produce.py [--runs 3] [--seconds 5] [--clients 32]

Everything (broker, proxy, HTTP clients) shares the machine's cores: on 2 cores the
clients' CPU is taken from the proxy and the broker, so the figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from pystream import aio

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
VALUE = {"id": 123456, "name": "a user", "amount": 12.5, "tags": ["x", "y"]}  # ~70 bytes


def start(command: list[str], pattern: str, log: Path) -> tuple[subprocess.Popen[str], str]:
    """Start ``command`` and return it with the first match of ``pattern`` in its output."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV
    )
    assert process.stdout is not None
    with log.open("w") as out:
        for line in process.stdout:
            out.write(line)
            match = re.search(pattern, line)
            if match:
                # Keep draining so the child never blocks on a full pipe.
                threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
                return process, match.group(1)
    raise SystemExit(f"{command[3]} did not start; see {log}")


@dataclasses.dataclass(frozen=True)
class Workload:
    """One kind of POST: where, what, and the bytes a successful response contains."""

    path: str
    content_type: str
    payload: bytes
    ok_marker: bytes
    records: int


def v2_workload(topic: str, records: int) -> Workload:
    payload = json.dumps({"records": [{"value": VALUE} for _ in range(records)]}).encode()
    return Workload(
        f"/topics/{topic}",
        "application/vnd.kafka.json.v2+json",
        payload,
        b'"error_code":null',
        records,
    )


def v3_workload(cluster_id: str, topic: str) -> Workload:
    payload = json.dumps({"value": {"type": "JSON", "data": VALUE}}).encode()
    path = f"/v3/clusters/{cluster_id}/topics/{topic}/records"
    return Workload(path, "application/json", payload, b'"error_code":200', 1)


async def _post_loop(
    url: str, work: Workload, seconds: float, clients: int
) -> tuple[int, list[float]]:
    """``clients`` keep-alive connections, each POSTing one request after another.

    The requests are written and the responses parsed by hand (HTTP/1.1,
    Content-Length): httpx's async client costs more CPU per request than the
    proxy itself, so with it the bench would measure the client.  The first
    response of each workload is checked with httpx in :func:`check_with_httpx`."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    request = (
        f"POST {work.path} HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: {work.content_type}\r\n"
        f"Content-Length: {len(work.payload)}\r\n\r\n"
    ).encode() + work.payload
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while True:
                started = time.perf_counter()
                if started > deadline:
                    return
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"POST failed: {head[:200]!r}")
                at = head.lower().index(b"content-length:") + 15
                body = await reader.readexactly(int(head[at : head.index(b"\r\n", at)]))
                if work.ok_marker not in body[:300]:
                    raise SystemExit(f"a record failed: {body[:300]!r}")
                latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(clients)))
    return len(latencies), latencies


def check_with_httpx(url: str, work: Workload) -> None:
    """One POST through a real HTTP client library: the response is what the bench parses."""
    response = httpx.post(
        url + work.path, content=work.payload, headers={"Content-Type": work.content_type}
    )
    response.raise_for_status()
    assert work.ok_marker in response.content, response.text


def _client_process(args: tuple[str, Workload, float, int]) -> tuple[int, list[float]]:
    return asyncio.run(_post_loop(*args))


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _wrk(url: str, work: Workload, seconds: float, clients: int) -> tuple[int, float, float]:
    """Requests made, p50 and p99 ms, with wrk (C, one thread): a load generator that
    leaves the cores to the proxy and the broker.  Refuses a run with any non-2xx."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(
            f'wrk.method = "POST"\nwrk.body = {json.dumps(work.payload.decode())}\n'
            f'wrk.headers["Content-Type"] = "{work.content_type}"\n'
        )
        script.flush()
        out = subprocess.run(
            ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency"]
            + ["-s", script.name, url + work.path],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw failed requests:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * _WRK_UNITS[unit]

    return requests, percentile("50"), percentile("99")


def http_round(
    url: str,
    work: Workload,
    seconds: float,
    clients: int,
    procs: int,
    proxy_pid: int,
    load: str = "python",
) -> dict[str, float]:
    per_proc = max(1, clients // procs)
    records = work.records
    cpu_before = cpu_seconds(proxy_pid)
    if load == "wrk":
        requests, p50, p99 = _wrk(url, work, seconds, clients)
    else:
        with multiprocessing.get_context("spawn").Pool(procs) as pool:
            results = pool.map(_client_process, [(url, work, seconds, per_proc)] * procs)
        requests = sum(r[0] for r in results)
        latencies = sorted(x for r in results for x in r[1])
        p50 = latencies[len(latencies) // 2] * 1000
        p99 = latencies[int(len(latencies) * 0.99)] * 1000
    cpu = cpu_seconds(proxy_pid) - cpu_before
    return {
        "requests/s": requests / seconds,
        "records/s": requests * records / seconds,
        "p50 ms": p50,
        "p99 ms": p99,
        # The proxy's own CPU per request: what it would sustain on a core of its own,
        # whatever else ran (a shared machine makes the rates above a floor).
        "proxy CPU ms/request": cpu * 1000 / max(requests, 1),
    }


async def direct_round(bootstrap: str, topic: str, seconds: float) -> dict[str, float]:
    value = json.dumps(VALUE, separators=(",", ":")).encode()
    async with aio.Producer(bootstrap) as producer:
        sent = 0
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            for _ in range(1000):
                await producer.send(topic, value)
            sent += 1000
        await producer.flush()
        elapsed = time.perf_counter() - started
    return {"records/s": sent / elapsed}


def _streamed_client(args: tuple[str, str, float, int]) -> int:
    """Records one client sends in v3's streamed mode: requests of ``per_request``
    records (one JSON object per line), every result checked."""
    url, path, seconds, per_request = args
    line = json.dumps({"value": {"type": "JSON", "data": VALUE}}).encode() + b"\n"
    body = line * per_request
    sent = 0
    deadline = time.perf_counter() + seconds
    with httpx.Client(base_url=url, timeout=60) as http:
        while time.perf_counter() < deadline:
            response = http.post(path, content=body, headers={"Content-Type": "application/json"})
            response.raise_for_status()
            results = response.content.splitlines()
            if len(results) != per_request or any(b'"error_code":200' not in r for r in results):
                raise SystemExit(f"streamed produce failed: {response.content[:300]!r}")
            sent += per_request
    return sent


def streamed_round(url: str, path: str, seconds: float, procs: int, per_request: int) -> float:
    """Records/s in v3's streamed mode, ``procs`` client processes, ``per_request``
    records a request."""
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        started = time.perf_counter()
        sent = sum(pool.map(_streamed_client, [(url, path, seconds, per_request)] * procs))
        elapsed = time.perf_counter() - started
    return sent / elapsed


def consume_round(url: str, topic: str, seconds: float) -> float:
    """Records/s one consumer instance reads from the beginning of the bench topic with
    back-to-back GET .../records (binary format, every partition assigned)."""
    headers = {"Content-Type": "application/vnd.kafka.v2+json"}
    with httpx.Client(base_url=url, timeout=60) as http:
        created = http.post(
            f"/consumers/bench-{time.monotonic_ns()}", json={"format": "binary"}, headers=headers
        )
        created.raise_for_status()
        instance = created.json()["base_uri"].removeprefix(url)
        partitions = {"partitions": [{"topic": topic, "partition": p} for p in range(4)]}
        http.post(f"{instance}/assignments", json=partitions, headers=headers).raise_for_status()
        http.post(
            f"{instance}/positions/beginning", json=partitions, headers=headers
        ).raise_for_status()
        accept = {"Accept": "application/vnd.kafka.binary.v2+json"}
        read = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            response = http.get(f"{instance}/records", params={"timeout": 1000}, headers=accept)
            response.raise_for_status()
            read += len(response.json())
        elapsed = time.perf_counter() - started
        if not read:
            print(f"consume round read nothing: last response {response.text[:300]!r}")
        http.delete(instance).raise_for_status()
    return read / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32, help="concurrent HTTP connections")
    parser.add_argument("--client-procs", type=int, default=2, help="HTTP client processes")
    parser.add_argument(
        "--load",
        choices=("python", "wrk"),
        default="python",
        help="what POSTs: pystream's minimal asyncio client in --client-procs processes, or "
        "wrk (apt-get install wrk), whose C costs the proxy and broker far less CPU",
    )
    parser.add_argument(
        "--proxy-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a line of the proxy's --config file (e.g. producer.linger.ms=0); repeatable",
    )
    parser.add_argument(
        "--keep-logs", metavar="DIR", help="copy the broker's and proxy's logs here"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rest-bench-") as tmp:
        work = Path(tmp)
        broker, bootstrap = start(
            [
                sys.executable,
                "-m",
                "pystream",
                "serve",
                "--override",
                f"log.dirs={work / 'data'}",
                "--override",
                "listeners=PLAINTEXT://127.0.0.1:0",
                "--override",
                "num.partitions=4",
                "--log-level",
                "WARNING",
            ],
            r"bootstrap\.servers=(\S+)",
            work / "broker.log",
        )
        proxy_config = work / "rest.properties"
        proxy_config.write_text("".join(f"{line}\n" for line in args.proxy_setting))
        proxy, url = start(
            [
                sys.executable,
                "-m",
                "pystream",
                "rest",
                "--config",
                str(proxy_config),
                "--bootstrap-server",
                bootstrap,
                "--port",
                "0",
                "--log-level",
                "WARNING",
            ],
            r"listening on (http://\S+)",
            work / "rest.log",
        )
        try:
            with aio_admin(bootstrap) as create:
                create("rest-bench")
            cluster = httpx.get(f"{url}/v3/clusters").json()["data"][0]["cluster_id"]
            single, batch = v2_workload("rest-bench", 1), v2_workload("rest-bench", 100)
            v3_single = v3_workload(cluster, "rest-bench")
            for workload in (single, batch, v3_single):
                check_with_httpx(url, workload)
            rounds: list[dict[str, float]] = []
            for run in range(args.runs):
                clients, procs = args.clients, args.client_procs
                load = args.load
                one = http_round(url, single, args.seconds, clients, procs, proxy.pid, load)
                alone = http_round(url, single, min(args.seconds, 3), 1, 1, proxy.pid, load)
                hundred = http_round(
                    url, batch, args.seconds, clients // 4 or 1, procs, proxy.pid, load
                )
                v3 = http_round(url, v3_single, args.seconds, clients, procs, proxy.pid, load)
                streamed = streamed_round(url, v3_single.path, args.seconds, procs, 1000)
                streamed_100 = streamed_round(url, v3_single.path, args.seconds, procs, 100)
                direct = asyncio.run(direct_round(bootstrap, "rest-bench", args.seconds))
                consumed = consume_round(url, "rest-bench", args.seconds)
                row = {
                    "1-record POSTs/s": one["requests/s"],
                    "1-record p50 ms": one["p50 ms"],
                    "1-record p99 ms": one["p99 ms"],
                    "1-record proxy CPU ms/request": one["proxy CPU ms/request"],
                    "1-record p50 ms, 1 connection": alone["p50 ms"],
                    "1-record p99 ms, 1 connection": alone["p99 ms"],
                    "100-record POSTs: records/s": hundred["records/s"],
                    "100-record p50 ms": hundred["p50 ms"],
                    "100-record proxy CPU ms/request": hundred["proxy CPU ms/request"],
                    "v3 1-record POSTs/s": v3["requests/s"],
                    "v3 1-record p50 ms": v3["p50 ms"],
                    "v3 1-record p99 ms": v3["p99 ms"],
                    "v3 streamed (100/request) records/s": streamed_100,
                    "v3 streamed (1,000/request) records/s": streamed,
                    "direct aio Producer records/s": direct["records/s"],
                    "consumed over HTTP records/s": consumed,
                }
                rounds.append(row)
                print(f"round {run + 1}: " + ", ".join(f"{k} {v:,.3g}" for k, v in row.items()))
            print(
                f"\nmedian of {args.runs} (min .. max); {args.clients} connections "
                + ("from wrk" if args.load == "wrk" else f"in {args.client_procs} Python processes")
                + f", {args.seconds:g} s each:"
            )
            for key in rounds[0]:
                values = [r[key] for r in rounds]
                low, high = min(values), max(values)
                digits = 3 if "CPU" in key else 2  # CPU per request is a fraction of a ms
                print(
                    f"  {key:38} {statistics.median(values):>12,.{digits}f}   "
                    f"({low:,.{digits}f} .. {high:,.{digits}f})"
                )
        finally:
            for process in (proxy, broker):
                process.terminate()
                process.wait(30)
            if args.keep_logs:
                for name in ("broker.log", "rest.log"):
                    (Path(args.keep_logs) / name).write_bytes((work / name).read_bytes())


class aio_admin:
    """Create the bench topic with the blocking admin client."""

    def __init__(self, bootstrap: str) -> None:
        from pystream import AdminClient

        self.admin = AdminClient(bootstrap)

    def __enter__(self) -> Any:
        from pystream import NewTopic

        self.admin.__enter__()
        return lambda name: self.admin.create_topics([NewTopic(name, 4, 1)])

    def __exit__(self, *exc: object) -> None:
        self.admin.__exit__(*exc)


if __name__ == "__main__":
    main()
