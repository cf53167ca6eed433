"""The console's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ConsoleConfig"]


@dataclass
class ConsoleConfig:
    """Where the cluster is and how the console reads it.

    ``metrics_urls`` (``console.metrics.urls``, ``--metrics-url``): the brokers' ``GET
    /metrics`` URLs; empty, each broker is asked for its ``metrics.listener``
    (DescribeConfigs on the BROKER resource)."""

    bootstrap_servers: str
    # Kafka client settings (security_protocol, sasl_* ...), as the REST proxy takes them.
    client_settings: dict[str, Any] = field(default_factory=dict)
    metrics_urls: list[str] = field(default_factory=list)
    # How often the brokers' metrics are scraped, and how many samples the charts keep.
    scrape_interval_s: float = 2.0
    samples_kept: int = 150
    # Records shown per page of the message browser, and how many the key search reads.
    browse_limit: int = 50
    search_window: int = 1000
    # A page waits this long for the cluster before saying it cannot reach it.
    request_timeout_ms: int = 10_000

    def clients(self) -> dict[str, Any]:
        """Keyword settings of the console's Kafka clients."""
        return {
            "client_id": "pystream-console",
            "request_timeout_ms": self.request_timeout_ms,
            **self.client_settings,
        }
