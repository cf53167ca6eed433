"""``KafkaCluster``: a standalone ZooKeeper and N ``pystream serve`` brokers for a test.

The pieces are ``pystream cluster up``'s: :class:`~pystream.cli.local_zookeeper.LocalZooKeeper`
and its replication defaults (:func:`~pystream.cli.cluster.cluster_defaults`); each broker
is a process-mode :class:`~pystream.testing.broker.KafkaBroker` on a free port, so any of
them can be killed and restarted.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pystream.testing.broker import KafkaBroker, TopicAdmin, wait_for_metadata

__all__ = ["KafkaCluster", "ZOOKEEPER_MISSING"]

# The reason kafka_cluster is skipped with when ZooKeeper (or java) is not installed.
ZOOKEEPER_MISSING = "kafka_cluster needs Apache ZooKeeper (Debian package `zookeeper`)"


class KafkaCluster(TopicAdmin):
    """ZooKeeper plus ``size`` brokers (ids 0..size-1).  ``start()``, ``bootstrap_servers``,
    ``brokers``, ``create_topic``/``delete_topic``, ``logs``, ``close()``.

    :meth:`start` raises :class:`~pystream.cli.local_zookeeper.ZooKeeperNotInstalledError`
    when java or the ZooKeeper jar is missing.
    """

    def __init__(
        self,
        directory: Path,
        size: int,
        config: Mapping[str, Any] | None = None,
        *,
        start_timeout: float = 60.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one broker, not {size}")
        self.directory = Path(directory)
        self.size = size
        self.config = dict(config or {})
        self.start_timeout = start_timeout
        self.zookeeper: Any = None
        self.brokers: list[KafkaBroker] = []

    @property
    def bootstrap_servers(self) -> str:  # type: ignore[override]
        return ",".join(b.bootstrap_servers for b in self.brokers if b.bootstrap_servers)

    def start(self) -> KafkaCluster:
        """ZooKeeper, then every broker at once; returns when Metadata lists all of them."""
        from pystream.cli.cluster import DEFAULT_CHROOT, cluster_defaults
        from pystream.cli.local_zookeeper import LocalZooKeeper, require_zookeeper

        java, jar = require_zookeeper()
        self.zookeeper = LocalZooKeeper(
            self.directory / "zookeeper", jar=jar, java=java, force_sync=False
        )
        self.zookeeper.start(self.start_timeout)
        connect = self.zookeeper.hosts + DEFAULT_CHROOT
        self.brokers = [
            KafkaBroker(
                self.directory / f"broker-{i}",
                {
                    "broker.id": i,
                    "zookeeper.connect": connect,
                    **cluster_defaults(self.size),
                    **self.config,
                },
                mode="process",
                start_timeout=self.start_timeout,
            )
            for i in range(self.size)
        ]
        try:
            for broker in self.brokers:
                broker.launch()
            for broker in self.brokers:
                broker.wait_started()
            wait_for_metadata(self.bootstrap_servers, self.size, self.start_timeout)
        except BaseException:
            self.close()
            raise
        return self

    @property
    def logs(self) -> str:
        """Every broker's log, one after the other, then ZooKeeper's tail."""
        parts = [f"=== broker {i} ({b.log_path}) ===\n{b.logs}" for i, b in enumerate(self.brokers)]
        if self.zookeeper is not None:
            parts.append(f"=== zookeeper ===\n{self.zookeeper.log_tail()}")
        return "\n".join(parts)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` of each broker's log."""
        parts = [f"=== broker {i} ===\n{b.log_tail(lines)}" for i, b in enumerate(self.brokers)]
        return "\n".join(parts)

    def close(self) -> None:
        """Stop the brokers (SIGTERM, all at once), then ZooKeeper."""
        self._drop_admin()
        for broker in self.brokers:
            if broker.process is not None and broker.process.poll() is None:
                broker.process.terminate()
        for broker in self.brokers:
            broker.stop()
        if self.zookeeper is not None:
            self.zookeeper.stop()
