"""Shared fixtures: a real broker process per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_process import BrokerProcess


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A running ``pystream serve`` on a free loopback port with its own log dir."""
    process = BrokerProcess(tmp_path / "broker").start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture(scope="session")
def connect_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for the session's Connect test modules (started on first use): their
    topics, groups and connectors are named per test, so they share it."""
    from connect_process import running_broker

    yield from running_broker(tmp_path_factory, "connect")


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[object]:
    """Start brokers with overrides, e.g. ``broker_factory(**{"num.partitions": "3"})``."""
    started: list[BrokerProcess] = []

    def start(name: str = "broker", **overrides: str) -> BrokerProcess:
        process = BrokerProcess(tmp_path / name, overrides).start()
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.close()
