"""A real ``pystream rest`` process for tests and benchmarks: start on a free port, stop
(SIGTERM) and read its output."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from broker_process import signal_and_wait
from cli_helpers import ENV, PYSTREAM

_LISTENING = re.compile(r"rest proxy listening on (https?://\S+)")


class RestProxyProcess:
    """``pystream rest --port 0`` against ``bootstrap``; ``url`` once it listens.

    ``properties`` go into the ``--config`` file (e.g. ``consumer.instance.timeout.ms``)."""

    def __init__(
        self, directory: Path, bootstrap: str, properties: dict[str, str] | None = None
    ) -> None:
        self.directory = directory
        self.bootstrap = bootstrap
        self.properties = properties or {}
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self._output: list[str] = []

    def start(self, timeout: float = 30.0) -> RestProxyProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "rest.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties.items()))
        command = [
            *PYSTREAM,
            "rest",
            "--bootstrap-server",
            self.bootstrap,
            "--port",
            "0",
            "--config",
            str(config),
            "--log-level",
            "WARNING",
        ]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**ENV, "PYTHONUNBUFFERED": "1"},
            cwd=self.directory,
        )
        found = threading.Event()
        threading.Thread(target=self._pump, args=(self.process, found), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("pystream rest did not start:\n" + self.output())
        return self

    def _pump(self, process: subprocess.Popen[str], found: threading.Event) -> None:
        assert process.stdout is not None
        with open(self.directory / "rest.log", "a") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                self._output.append(line)
                match = _LISTENING.search(line)
                if match:
                    self.url = match.group(1)
                    found.set()

    def output(self) -> str:
        return "".join(self._output)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal and wait: the clean shutdown path.  Returns the exit code."""
        process = self.process
        assert process is not None
        try:
            return signal_and_wait(process, signum, timeout)
        finally:
            self.process = None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop(signal.SIGKILL)
