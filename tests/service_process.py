"""A ``pystream`` service command in a subprocess for tests (the REST proxy, a Connect
worker): start it, wait for the line announcing its URL, stop it (SIGTERM) or kill it,
and read its output (also appended to ``<directory>/<log_name>``)."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from broker_process import signal_and_wait
from cli_helpers import ENV, PYSTREAM


class ServiceProcess:
    """Subclasses say how to start (:meth:`arguments`) and what line gives the URL
    (``listening``: a regex whose group 1 is the URL)."""

    listening: re.Pattern[str]
    log_name = "service.log"
    what = "the service"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self._output: list[str] = []

    def arguments(self) -> list[str]:
        """The ``pystream`` sub-command and its arguments (files may be written here)."""
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """The process's environment (this checkout's pystream on the path)."""
        return {**ENV, "PYTHONUNBUFFERED": "1"}

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.url = ""
        self.process = subprocess.Popen(
            [*PYSTREAM, *self.arguments()],
            # Its own stdin (a pipe the test may write to), never the test runner's.
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.environment(),
            cwd=self.directory,
        )
        found = threading.Event()
        threading.Thread(target=self._pump, args=(self.process, found), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"{self.what} did not start:\n" + self.output())
        return self

    def _pump(self, process: subprocess.Popen[str], found: threading.Event) -> None:
        assert process.stdout is not None
        with open(self.directory / self.log_name, "a") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                self._output.append(line)
                match = self.listening.search(line)
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
