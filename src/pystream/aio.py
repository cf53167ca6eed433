"""pystream's asyncio client: ``Producer``, ``Consumer`` and ``AdminClient`` with ``async``
methods and ``async with``, on the caller's event loop.

::

    from pystream import aio

    async with aio.Producer(bootstrap_servers="localhost:9092") as producer:
        metadata = await producer.send_and_wait("events", b"payload")
        future = await producer.send("events", b"more")    # queued; await future later
        await producer.send_batch("events", [b"a", b"b"])

    async with aio.Consumer("events", bootstrap_servers="localhost:9092",
                            group_id="billing") as consumer:
        async for record in consumer:
            ...

The blocking classes ``pystream.Producer`` etc. wrap these, each on its own
background loop thread.
"""

from __future__ import annotations

from pystream.client.admin import AdminClient
from pystream.client.consumer import Consumer
from pystream.client.producer import Producer
from pystream.client.types import (
    BatchMetadata,
    ConsumerGroupMetadata,
    ConsumerRecord,
    NewPartitions,
    NewTopic,
    OffsetAndMetadata,
    RecordMetadata,
    TopicPartition,
)

__all__ = [
    "AdminClient",
    "BatchMetadata",
    "ConsumerGroupMetadata",
    "Consumer",
    "ConsumerRecord",
    "NewPartitions",
    "NewTopic",
    "OffsetAndMetadata",
    "Producer",
    "RecordMetadata",
    "TopicPartition",
]
