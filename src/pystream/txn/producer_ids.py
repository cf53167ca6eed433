"""Producer ids: unique across restarts (and, with a shared store, across brokers).

Every idempotent or transactional producer gets a 64-bit producer id from
InitProducerId.  Ids must never be reused while a partition may still hold
state for them, so the broker reserves *blocks* of ids in the metadata store
and hands them out from memory: a block is written down before its first id is
used, so a restart (clean or SIGKILL) continues after the last reserved block
and never repeats an id.  This is Kafka's ``ProducerIdManager`` with its
``AllocateProducerIds`` blocks: a single node reserves them in a file of its
log dir, a cluster in ZooKeeper's ``/latest_producer_id_block``
(:meth:`~pystream.cluster.metadata.store.MetadataStore.allocate_producer_ids`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pystream.cluster.metadata.model import ProducerIdBlock

BLOCK_SIZE = 1000

# (broker id, block size) -> a reserved block; the metadata store's allocate_producer_ids.
AllocateBlock = Callable[[int, int], Awaitable[ProducerIdBlock]]


class ProducerIdManager:
    """Hands out producer ids one by one from reserved blocks."""

    def __init__(
        self, broker_id: int, allocate_block: AllocateBlock, block_size: int = BLOCK_SIZE
    ) -> None:
        self.broker_id = broker_id
        self._allocate_block = allocate_block
        self._block_size = block_size
        self._next = 0
        self._last = -1  # nothing reserved yet
        self._lock = asyncio.Lock()  # one reservation at a time: a block is never skipped

    async def generate(self) -> int:
        """A producer id never handed out before (KafkaStorageError if none can be reserved)."""
        if self._next > self._last:
            async with self._lock:
                if self._next > self._last:
                    block = await self._allocate_block(self.broker_id, self._block_size)
                    self._next, self._last = block.first, block.last
        producer_id = self._next
        self._next += 1
        return producer_id
