"""A real ``pystream serve`` process for tests: start, stop (SIGTERM), kill (SIGKILL), restart."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pystream

_BOOTSTRAP = re.compile(r"clients: bootstrap\.servers=(\S+)")


class BrokerProcess:
    """One broker in a subprocess, on a free loopback port, logging to ``<dir>/broker.log``."""

    def __init__(self, directory: Path, overrides: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.log_dir = directory / "data"
        self.log_path = directory / "broker.log"
        self.overrides = {
            "log.dirs": str(self.log_dir),
            "listeners": "PLAINTEXT://127.0.0.1:0",
            **(overrides or {}),
        }
        self.process: subprocess.Popen[str] | None = None
        self.bootstrap = ""
        self._output: list[str] = []

    @property
    def port(self) -> int:
        return int(self.bootstrap.rsplit(":", 1)[1])

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
        # Keep the port across restarts so clients can reconnect.
        self.overrides["listeners"] = f"PLAINTEXT://127.0.0.1:{self.port}"
        return self

    def _pump(self, process: subprocess.Popen[str], found: threading.Event) -> None:
        assert process.stdout is not None
        with open(self.log_path, "a") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                self._output.append(line)
                match = _BOOTSTRAP.search(line)
                if match:
                    self.bootstrap = match.group(1)
                    found.set()

    def output(self) -> str:
        return "".join(self._output)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the clean shutdown path.  Returns the exit code."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int:
        """SIGKILL: no shutdown code runs."""
        return self._signal(signal.SIGKILL, 30.0)

    def _signal(self, signum: int, timeout: float) -> int:
        process = self.process
        assert process is not None
        if process.poll() is None:
            process.send_signal(signum)
        try:
            return process.wait(timeout)
        finally:
            self.process = None

    def restart(self) -> BrokerProcess:
        if self.process is not None:
            self.stop()
        return self.start()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()
