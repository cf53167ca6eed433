"""Producer-id blocks reserved cluster-wide in ``/latest_producer_id_block``.

Kafka's ZooKeeper-mode ``ProducerIdManager``: the znode holds the last block
handed out (``{"version":1,"broker":2,"block_start":"2000","block_end":"2999"}``).
A broker reserves the next block by writing it with the version it read
(compare-and-set); if another broker got there first the write fails and it
reads again.  A block is durable in ZooKeeper before any of its ids is used,
so no id is ever handed out twice, across brokers and restarts.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from pystream.cluster.metadata.model import MAX_PRODUCER_ID, ProducerIdBlock
from pystream.cluster.zookeeper.paths import PRODUCER_ID_BLOCK
from pystream.errors import KafkaStorageError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 50  # concurrent reservations retry; each failed attempt means another succeeded


def encode_block(block: ProducerIdBlock) -> bytes:
    return json.dumps(
        {
            "version": 1,
            "broker": block.broker_id,
            "block_start": str(block.first),
            "block_end": str(block.last),
        },
        separators=(",", ":"),
    ).encode()


def decode_block(data: bytes) -> ProducerIdBlock | None:
    """The block in the znode, or None if none was ever reserved (empty znode)."""
    if not data:
        return None
    value = json.loads(data)
    first, last = int(value["block_start"]), int(value["block_end"])
    return ProducerIdBlock(int(value["broker"]), first, last - first + 1)


class ZkProducerIdBlockStore:
    """Producer-id blocks reserved cluster-wide in ZooKeeper."""

    def __init__(self, client: Any) -> None:
        # A KazooClient, or a TimedClient (the metadata store's: calls with a deadline).
        self.client = client

    def allocate_block(self, broker_id: int, size: int) -> ProducerIdBlock:
        """Reserve the next ``size`` ids for ``broker_id`` (blocking ZooKeeper round trips)."""
        for _ in range(MAX_ATTEMPTS):
            try:
                data, stat = self.client.get(PRODUCER_ID_BLOCK)
            except NoNodeError:
                data, stat = b"", None
            previous = decode_block(data)
            first = previous.last + 1 if previous else 0
            if first + size - 1 > MAX_PRODUCER_ID:
                raise KafkaStorageError(
                    "producer ids are exhausted: the cluster has reserved every 64-bit id"
                )
            block = ProducerIdBlock(broker_id, first, size)
            try:
                if stat is None:
                    self.client.create(PRODUCER_ID_BLOCK, encode_block(block))
                else:
                    self.client.set(PRODUCER_ID_BLOCK, encode_block(block), stat.version)
            except (BadVersionError, NodeExistsError):
                continue  # another broker reserved a block meanwhile: read it and go after it
            log.info("reserved producer ids %d..%d for broker %d", first, block.last, broker_id)
            return block
        raise KafkaStorageError(
            f"could not reserve a producer id block after {MAX_ATTEMPTS} attempts (heavy "
            "contention on /latest_producer_id_block); retry"
        )
