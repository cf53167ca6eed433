"""A real ``pystream rest`` process for tests and benchmarks: start on a free port, stop
(SIGTERM) and read its output."""

from __future__ import annotations

import re
from pathlib import Path

from service_process import ServiceProcess


class RestProxyProcess(ServiceProcess):
    """``pystream rest --port 0`` against ``bootstrap``; ``url`` once it listens.

    ``properties`` go into the ``--config`` file (e.g. ``consumer.instance.timeout.ms``)."""

    listening = re.compile(r"rest proxy listening on (https?://\S+)")
    log_name = "rest.log"
    what = "pystream rest"

    def __init__(
        self, directory: Path, bootstrap: str, properties: dict[str, str] | None = None
    ) -> None:
        super().__init__(directory)
        self.bootstrap = bootstrap
        self.properties = properties or {}

    def arguments(self) -> list[str]:
        config = self.directory / "rest.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties.items()))
        return [
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

    def start(self, timeout: float = 30.0) -> RestProxyProcess:
        super().start(timeout)
        return self
