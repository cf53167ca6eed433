"""The one wall clock of the broker: milliseconds since the epoch, as Kafka's records use."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock time in milliseconds (record timestamps, expirations, znode timestamps)."""
    return time.time_ns() // 1_000_000
