"""Producer ids: unique across restarts (and, with a shared store, across brokers).

Every idempotent or transactional producer gets a 64-bit producer id from
InitProducerId.  Ids must never be reused while a partition may still hold
state for them, so the broker reserves *blocks* of ids in a durable store and
hands them out from memory: a block is written down before its first id is
used, so a restart (clean or SIGKILL) continues after the last reserved block
and never repeats an id.  This is Kafka's ``ProducerIdManager`` with its
``AllocateProducerIds`` blocks; a cluster replaces :class:`LocalProducerIdBlockStore`
with one that allocates through the metadata store (ZooKeeper's
``/latest_producer_id_block``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pystream.errors import KafkaStorageError
from pystream.fileutil import atomic_write

BLOCK_SIZE = 1000
PRODUCER_ID_BLOCK_FILE = "producer-id-block.json"
MAX_PRODUCER_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class ProducerIdBlock:
    """Ids ``first .. first + size - 1``, reserved for one broker."""

    broker_id: int
    first: int
    size: int

    @property
    def last(self) -> int:
        return self.first + self.size - 1


class ProducerIdBlockStore(Protocol):
    """Where blocks are reserved durably; one per cluster."""

    def allocate_block(self, broker_id: int, size: int) -> ProducerIdBlock: ...


class LocalProducerIdBlockStore:
    """A single node's block store: the next free id in ``<log dir>/producer-id-block.json``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / PRODUCER_ID_BLOCK_FILE

    def _next_free(self) -> int:
        if not self.path.exists():
            return 0
        try:
            data = json.loads(self.path.read_text())
            return int(data["next_producer_id"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KafkaStorageError(
                f"cannot read {self.path}: {exc}. Producer ids would risk being reused; restore "
                "the file, or write a next_producer_id above every id in use"
            ) from exc

    def allocate_block(self, broker_id: int, size: int) -> ProducerIdBlock:
        first = self._next_free()
        if first + size - 1 > MAX_PRODUCER_ID:
            raise KafkaStorageError("producer ids are exhausted")
        data = {"version": 1, "broker_id": broker_id, "next_producer_id": first + size}
        # Durable before any id of the block is handed out: a crash can skip ids, never repeat.
        atomic_write(self.path, json.dumps(data).encode())
        return ProducerIdBlock(broker_id, first, size)


def block_store_for(metadata_store: object, log_dir: str) -> ProducerIdBlockStore:
    """The cluster's block store: the metadata store's, if it has one (a ZooKeeper-backed store
    reserves blocks for every broker), else a file in the first log dir (one node)."""
    if hasattr(metadata_store, "allocate_block"):
        return metadata_store  # type: ignore[return-value]
    return LocalProducerIdBlockStore(log_dir)


class ProducerIdManager:
    """Hands out producer ids one by one from reserved blocks."""

    def __init__(
        self, broker_id: int, store: ProducerIdBlockStore, block_size: int = BLOCK_SIZE
    ) -> None:
        self.broker_id = broker_id
        self._store = store
        self._block_size = block_size
        self._next = 0
        self._last = -1  # nothing reserved yet

    def generate(self) -> int:
        """A producer id never handed out before (KafkaStorageError if none can be reserved)."""
        if self._next > self._last:
            block = self._store.allocate_block(self.broker_id, self._block_size)
            self._next, self._last = block.first, block.last
        producer_id = self._next
        self._next += 1
        return producer_id
