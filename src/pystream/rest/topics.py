"""Topic metadata for the proxy: partition counts (cached) and the v2 topic documents."""

from __future__ import annotations

import time
from typing import Any

from pystream.aio import AdminClient
from pystream.client.types import PartitionInfo, TopicDescription
from pystream.errors import UnknownTopicOrPartitionError

from .errors import PARTITION_NOT_FOUND, TOPIC_NOT_FOUND, RestError

__all__ = ["TopicCache", "partition_document"]


def topic_not_found(topic: str) -> RestError:
    return RestError(404, TOPIC_NOT_FOUND, f"Topic not found: {topic!r}")


class TopicCache:
    """Each topic's description, trusted for ``max_age_ms``, so a produce request costs
    no metadata round trip; an unknown topic is looked up every time (it may be created
    at any moment)."""

    def __init__(self, admin: AdminClient, max_age_ms: int) -> None:
        self._admin = admin
        self._max_age = max_age_ms / 1000
        self._topics: dict[str, tuple[float, TopicDescription]] = {}

    async def describe(self, topic: str, *, fresh: bool = False) -> TopicDescription:
        """The topic's description; 404 with Confluent's 40401 if it does not exist."""
        cached = self._topics.get(topic)
        now = time.monotonic()
        if cached is not None and not fresh and now - cached[0] < self._max_age:
            return cached[1]
        try:
            description = (await self._admin.describe_topics([topic]))[topic]
        except UnknownTopicOrPartitionError:  # describe_topics raises the topic's error
            self._topics.pop(topic, None)
            raise topic_not_found(topic) from None
        self._topics[topic] = (now, description)
        return description

    def forget(self, topic: str) -> None:
        """Drop a topic from the cache (it was just deleted)."""
        self._topics.pop(topic, None)

    async def partition(self, topic: str, partition: int) -> PartitionInfo:
        """One partition's description; 404 with 40402 if the topic has no such partition."""
        description = await self.describe(topic)
        for info in description.partitions:
            if info.partition == partition:
                return info
        # Maybe it just grew: look again before saying no.
        for info in (await self.describe(topic, fresh=True)).partitions:
            if info.partition == partition:
                return info
        raise RestError(
            404,
            PARTITION_NOT_FOUND,
            f"Partition not found: topic {topic!r} has partitions "
            f"0..{len(description.partitions) - 1}, not {partition}",
        )


def partition_document(info: PartitionInfo) -> dict[str, Any]:
    """A partition as v2's ``GET /topics/{t}/partitions`` shows it."""
    return {
        "partition": info.partition,
        "leader": info.leader,
        "replicas": [
            {"broker": broker, "leader": broker == info.leader, "in_sync": broker in info.isr}
            for broker in info.replicas
        ],
    }
