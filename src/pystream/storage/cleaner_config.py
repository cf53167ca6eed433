"""The log cleaner's broker-level settings (Kafka's ``CleanerConfig``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True)
class CleanerConfig:
    """``log.cleaner.*``: how many cleaner threads, how much memory and I/O they use.

    Memory and I/O budgets are for all threads together, split evenly as in
    Kafka: each thread's offset map gets ``dedupe_buffer_size / threads`` bytes;
    each thread reads and writes through ``io_buffer_size / threads / 2`` bytes.
    """

    enable: bool = True
    threads: int = 1
    backoff_ms: int = 15_000
    dedupe_buffer_size: int = 128 * MIB
    io_buffer_size: int = 512 * 1024
    io_buffer_load_factor: float = 0.9
    io_max_bytes_per_second: float = math.inf

    @classmethod
    def from_broker_config(cls, config: Any) -> CleanerConfig:
        """Read the ``log_cleaner_*`` attributes of a BrokerConfig (defaults where absent)."""
        default = cls()

        def get(name: str) -> Any:
            return getattr(config, "log_cleaner_" + name, getattr(default, name))

        return cls(
            enable=get("enable"),
            threads=get("threads"),
            backoff_ms=get("backoff_ms"),
            dedupe_buffer_size=get("dedupe_buffer_size"),
            io_buffer_size=get("io_buffer_size"),
            io_buffer_load_factor=get("io_buffer_load_factor"),
            io_max_bytes_per_second=get("io_max_bytes_per_second"),
        )

    @property
    def map_memory_per_thread(self) -> int:
        """Bytes of offset map each cleaner thread gets."""
        return max(self.dedupe_buffer_size // max(self.threads, 1), 1024)

    @property
    def io_buffer_per_thread(self) -> int:
        """Bytes of read (and of write) buffer each cleaner thread gets."""
        return max(self.io_buffer_size // max(self.threads, 1) // 2, 64 * 1024)
