"""A real ``pystream serve`` process for tests: start, stop (SIGTERM), kill (SIGKILL), restart."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from waiting import wait_until

import pystream
from pystream.protocol import decode_response, encode_request_frame
from pystream.protocol.messages import API_SPECS, RequestHeader

_BOOTSTRAP = re.compile(r"clients: bootstrap\.servers=(\S+)")
_METRICS = re.compile(r"pystream metrics on (\S+)")
_LISTENING = re.compile(r"listening on (.+)$")


def signal_and_wait(process: subprocess.Popen, signum: int, timeout: float) -> int:
    """Send ``signum`` unless the process already ended, then wait: its exit code."""
    if process.poll() is None:
        process.send_signal(signum)
    return process.wait(timeout)


class BrokerProcess:
    """One broker in a subprocess, on a free loopback port, logging to ``<dir>/broker.log``."""

    def __init__(self, directory: Path, overrides: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.log_dir = directory / "data"
        self.log_path = directory / "broker.log"
        self.overrides = {
            "log.dirs": str(self.log_dir),
            "listeners": "PLAINTEXT://127.0.0.1:0",
            # Brokers of parallel tests never share the metrics port (9644 by default).
            "metrics.listener": "http://127.0.0.1:0",
            **(overrides or {}),
        }
        self.process: subprocess.Popen[str] | None = None
        self.bootstrap = ""
        # GET /metrics of this broker ("" until it printed it, or with metrics.enable=false).
        self.metrics_url = ""
        # Each advertised listener's port, by name (from the "listening on" line).
        self.listener_ports: dict[str, int] = {}
        self._output: list[str] = []

    @property
    def port(self) -> int:
        """The PLAINTEXT listener's port (else the first listener's)."""
        if "PLAINTEXT" in self.listener_ports:
            return self.listener_ports["PLAINTEXT"]
        return int(self.bootstrap.split(",")[0].rsplit(":", 1)[1])

    def start(self, timeout: float = 30.0) -> BrokerProcess:
        """Start and wait until the broker prints where clients connect."""
        command = [sys.executable, "-m", "pystream", "serve"]
        for key, value in self.overrides.items():
            command += ["--override", f"{key}={value}"]
        # The broker runs the same pystream the tests import (in-place build or installed).
        package_root = str(Path(pystream.__file__).resolve().parent.parent)
        python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": python_path}
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=self.directory,
        )
        found = threading.Event()
        threading.Thread(target=self._pump, args=(self.process, found), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"broker did not start (exit {self.process.poll()}):\n" + self.output()
                )
        # Keep the ports across restarts so clients can reconnect.
        self.overrides["listeners"] = ",".join(
            f"{name}://127.0.0.1:{port}" for name, port in self.listener_ports.items()
        )
        return self

    def _pump(self, process: subprocess.Popen[str], found: threading.Event) -> None:
        assert process.stdout is not None
        with open(self.log_path, "a") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                self._output.append(line)
                listening = _LISTENING.search(line.rstrip())
                if listening:
                    for address in listening.group(1).split(", "):
                        name, _, rest = address.partition("://")
                        self.listener_ports[name] = int(rest.rsplit(":", 1)[1])
                metrics = _METRICS.search(line)
                if metrics:
                    self.metrics_url = metrics.group(1)
                match = _BOOTSTRAP.search(line)
                if match:
                    self.bootstrap = match.group(1)
                    found.set()

    def output(self) -> str:
        return "".join(self._output)

    def wait_for_output(self, text: str, timeout: float = 15.0, since: int = 0) -> str:
        """Poll the broker's output (from line ``since`` on) until ``text`` appears in it."""
        deadline = time.monotonic() + timeout
        while True:
            output = "".join(self._output[since:])
            if text in output:
                return output
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the broker output:\n{self.output()}")
            time.sleep(0.02)

    def output_since(self, mark: int) -> str:
        """The broker's output from line ``mark`` (an ``output_lines()`` value) on."""
        return "".join(self._output[mark:])

    def output_lines(self) -> int:
        """How many lines the broker printed so far (a mark for ``wait_for_output``)."""
        return len(self._output)

    def wire(self, timeout: float = 15.0) -> KafkaWire:
        """A raw protocol connection to this broker (pystream's own codec over a socket)."""
        return KafkaWire(("127.0.0.1", self.port), timeout)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the clean shutdown path.  Returns the exit code."""
        return self._signal(signal.SIGTERM, timeout)

    def interrupt(self) -> int:
        """SIGINT (Ctrl-C): the same clean shutdown as SIGTERM."""
        return self._signal(signal.SIGINT, 30.0)

    def kill(self) -> int:
        """SIGKILL: no shutdown code runs."""
        return self._signal(signal.SIGKILL, 30.0)

    def _signal(self, signum: int, timeout: float) -> int:
        process = self.process
        assert process is not None
        try:
            return signal_and_wait(process, signum, timeout)
        finally:
            self.process = None

    def precreate_topic(
        self, name: str, partitions: int = 1, configs: dict[str, str] | None = None
    ) -> BrokerProcess:
        """Create a topic (with per-topic configs) in the metadata store before ``start()``.

        For tests that need partitions or topic configs without CreateTopics.
        """
        from pystream.cluster.metadata.local_store import LocalMetadataStore
        from pystream.storage.log_dirs import lock_log_dirs

        assert self.process is None, "precreate topics while the broker is stopped"
        broker_id = int(self.overrides.get("broker.id", "0"))
        with lock_log_dirs([str(self.log_dir)]):  # as any offline writer of a log dir
            LocalMetadataStore(self.log_dir, broker_id).create_topic_blocking(
                name, partitions, 1, configs
            )
        return self

    def restart(self) -> BrokerProcess:
        if self.process is not None:
            self.stop()
        return self.start()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


def fetch_session_gauges(broker: BrokerProcess) -> tuple[float, float]:
    """(incremental fetch sessions held, partitions in them), from the broker's /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(broker.metrics_url, timeout=10) as response:
        text = response.read().decode()
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    prefix = "kafka_server_fetchsessioncache_"
    return (
        samples[f"{prefix}numincrementalfetchsessions"],
        samples[f"{prefix}numincrementalfetchpartitionscached"],
    )


def process_state(pid: int) -> str:
    """The kernel's one-letter state of ``pid`` (R, S, T for stopped...)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


@contextmanager
def paused(broker: BrokerProcess) -> Iterator[None]:
    """SIGSTOP the broker and wait until the kernel has stopped it; SIGCONT on exit
    (unless it was killed meanwhile: a stopped process dies of SIGKILL all the same)."""
    process = broker.process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        wait_until(
            lambda: process_state(process.pid) == "T", timeout=10, what=f"pid {process.pid} stopped"
        )
        yield
    finally:
        if broker.process is process and process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (for brokers with several listeners)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class KafkaWire:
    """A plain socket speaking the Kafka protocol with pystream's codec, for raw tests."""

    def __init__(
        self,
        address: tuple[str, int],
        timeout: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
        source_host: str | None = None,
    ) -> None:
        """``ssl_context``: speak TLS (to an SSL listener); ``source_host``: connect from
        this local address (e.g. another loopback address, 127.0.0.2)."""
        source = (source_host, 0) if source_host is not None else None
        self.sock = socket.create_connection(address, timeout=timeout, source_address=source)
        if ssl_context is not None:
            self.sock = ssl_context.wrap_socket(self.sock, server_hostname=address[0])
        self.correlation_id = 0

    def __enter__(self) -> KafkaWire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def frame(self, api_key: int, version: int, body: Any, client_id: str | None = "wire") -> bytes:
        """A complete request frame (size prefix included) with the next correlation id."""
        self.correlation_id += 1
        header = RequestHeader(
            request_api_key=api_key,
            request_api_version=version,
            correlation_id=self.correlation_id,
            client_id=client_id,
        )
        return encode_request_frame(header, body)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exactly(self, size: int) -> bytes:
        """``size`` bytes, or fewer if the broker closed the connection."""
        chunks = bytearray()
        while len(chunks) < size:
            chunk = self.sock.recv(size - len(chunks))
            if not chunk:
                break
            chunks += chunk
        return bytes(chunks)

    def recv_frame(self) -> bytes | None:
        """One response frame body, or None if the broker closed the connection."""
        prefix = self.recv_exactly(4)
        if len(prefix) < 4:
            return None
        (size,) = struct.unpack(">i", prefix)
        body = self.recv_exactly(size)
        return body if len(body) == size else None

    def request(self, api_key: int, version: int, body: Any, client_id: str | None = "wire") -> Any:
        """Send one request, read and decode its response body (checks the correlation id)."""
        self.send(self.frame(api_key, version, body, client_id))
        payload = self.recv_frame()
        if payload is None:
            name = API_SPECS[api_key].name if api_key in API_SPECS else api_key
            raise ConnectionError(f"the broker closed the connection after {name} v{version}")
        header, response = decode_response(payload, api_key, version)
        assert header.correlation_id == self.correlation_id
        return response

    def is_closed_by_peer(self, timeout: float = 15.0) -> bool:
        """True once the broker closes the connection (EOF or reset) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
