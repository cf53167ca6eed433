"""pystream's own Kafka client: asyncio core, blocking facade.

* :class:`Producer` / :class:`Consumer` / :class:`AdminClient` -- blocking API
  (each runs its asyncio core on a private background thread), also exported as
  ``pystream.Producer`` etc.;
* :mod:`pystream.aio` -- the same classes with ``async`` methods and ``async with``.

Modules, one job each: ``connection`` (one broker, pipelined requests),
``core`` (connections + metadata + routing), ``metadata``, ``versions``
(ApiVersions negotiation), ``partitioner``, ``accumulator`` (+ ``_accumulator``,
Cython), ``sender``, ``producer``, ``subscription``, ``fetcher``, ``assignors``,
``coordinator`` (group membership), ``consumer``, ``admin``, ``loop_thread`` and
``sync`` (the blocking facades), ``_fast`` (Cython: murmur2, batch building from
numpy rows, record decoding).
"""

from __future__ import annotations

from .errors import ClientClosedError, KafkaConnectionError, UnsupportedFeatureError
from .futures import BatchSendFuture, RecordFuture
from .sync import AdminClient, Consumer, Producer
from .types import (
    BatchMetadata,
    ConfigEntry,
    ConsumerGroupMetadata,
    ConsumerRecord,
    GroupDescription,
    GroupListing,
    MemberDescription,
    NewPartitions,
    NewTopic,
    OffsetAndMetadata,
    PartitionInfo,
    RecordMetadata,
    TopicDescription,
    TopicPartition,
)

__all__ = [
    "AdminClient",
    "BatchMetadata",
    "BatchSendFuture",
    "ClientClosedError",
    "ConfigEntry",
    "ConsumerGroupMetadata",
    "Consumer",
    "ConsumerRecord",
    "GroupDescription",
    "GroupListing",
    "KafkaConnectionError",
    "MemberDescription",
    "NewPartitions",
    "NewTopic",
    "OffsetAndMetadata",
    "PartitionInfo",
    "Producer",
    "RecordFuture",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
    "UnsupportedFeatureError",
]
