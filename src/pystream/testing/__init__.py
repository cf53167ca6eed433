"""pystream.testing: real pystream brokers for test suites (and pytest fixtures for them).

``KafkaBroker`` (one broker, in a thread of this process or in a child process) and
``KafkaCluster`` (ZooKeeper and N brokers) are loaded on first use: pytest imports
:mod:`pystream.testing.plugin` in every session, and this package with it, so importing
it must stay cheap.  The fixtures are in :mod:`pystream.testing.plugin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pystream.testing.broker import CrashNeedsProcessModeError, KafkaBroker
    from pystream.testing.cluster import KafkaCluster

__all__ = ["CrashNeedsProcessModeError", "KafkaBroker", "KafkaCluster"]

_LAZY = {
    "KafkaBroker": "pystream.testing.broker",
    "CrashNeedsProcessModeError": "pystream.testing.broker",
    "KafkaCluster": "pystream.testing.cluster",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pystream.testing' has no attribute {name!r}")
