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
