"""pystream: a Kafka-compatible broker with a Cython core, and its own client.

``pystream.Producer``, ``pystream.Consumer`` and ``pystream.AdminClient`` (and
``TopicPartition``, ``NewTopic``, ``OffsetAndMetadata``) are loaded on first
use, so ``import pystream`` stays cheap for the broker and the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pystream.version import __version__

_CLIENT_NAMES = frozenset(
    {
        "AdminClient",
        "Consumer",
        "ConsumerGroupMetadata",
        "NewPartitions",
        "NewTopic",
        "OffsetAndMetadata",
        "Producer",
        "TopicPartition",
    }
)

if TYPE_CHECKING:
    from pystream.client import (
        AdminClient,
        Consumer,
        ConsumerGroupMetadata,
        NewPartitions,
        NewTopic,
        OffsetAndMetadata,
        Producer,
        TopicPartition,
    )

__all__ = [
    "AdminClient",
    "Consumer",
    "ConsumerGroupMetadata",
    "NewPartitions",
    "NewTopic",
    "OffsetAndMetadata",
    "Producer",
    "TopicPartition",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from pystream import client

        value = getattr(client, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pystream' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _CLIENT_NAMES)
