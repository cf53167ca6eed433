"""A real ``pystream connect standalone`` worker process for tests: properties files
written from dicts, the REST API on a free port, SIGTERM (clean) or SIGKILL."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_process import BrokerProcess
from service_process import ServiceProcess

# Test plugins (``connect_plugins``) live beside the tests.
TESTS_DIR = str(Path(__file__).resolve().parent)


def write_properties(path: Path, props: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path


class ConnectWorkerProcess(ServiceProcess):
    """``pystream connect standalone worker.properties <connector>.properties…``.

    ``worker`` settings go into ``worker.properties`` (``listeners`` defaults to a free
    port, ``offset.storage.file.filename`` to ``<directory>/offsets.json``, String
    converters, offsets flushed every 500 ms); ``connectors`` are properties by
    connector name."""

    listening = re.compile(r"connect worker listening on (https?://\S+)")
    log_name = "worker.log"
    what = "pystream connect standalone"

    def __init__(
        self,
        directory: Path,
        bootstrap: str,
        worker: dict[str, str] | None = None,
        connectors: dict[str, dict[str, str]] | None = None,
    ) -> None:
        super().__init__(directory)
        self.worker = {
            "bootstrap.servers": bootstrap,
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.storage.StringConverter",
            "offset.storage.file.filename": str(directory / "offsets.json"),
            "offset.flush.interval.ms": "500",
            "listeners": "http://127.0.0.1:0",
            **(worker or {}),
        }
        self.connectors = connectors or {}

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), TESTS_DIR]))
        return env

    def arguments(self) -> list[str]:
        files = [str(write_properties(self.directory / "worker.properties", self.worker))]
        for name, props in self.connectors.items():
            path = write_properties(self.directory / f"{name}.properties", {"name": name, **props})
            files.append(str(path))
        return ["connect", "standalone", *files, "--log-level", "INFO"]

    def start(self, timeout: float = 60.0) -> ConnectWorkerProcess:
        super().start(timeout)
        return self


def running_broker(
    tmp_path_factory: pytest.TempPathFactory, name: str, overrides: dict[str, str] | None = None
) -> Iterator[BrokerProcess]:
    """A broker for a module's Connect tests (``yield from`` it in a module fixture):
    groups rebalance at once, internal topics are small."""
    process = BrokerProcess(
        tmp_path_factory.mktemp(name) / "broker",
        {
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.num.partitions": "4",
            **(overrides or {}),
        },
    ).start()
    try:
        yield process
    finally:
        process.close()


def running_worker(
    broker: BrokerProcess, directory: Path, worker: dict[str, str] | None = None
) -> Iterator[ConnectWorkerProcess]:
    """A standalone worker with no connectors for a module's tests (``yield from`` it in
    a module fixture); it must stop cleanly (exit 0) at the end."""
    process = ConnectWorkerProcess(directory, broker.bootstrap, worker=worker).start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()
