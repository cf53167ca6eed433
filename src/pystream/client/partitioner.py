"""Partitioning identical to the Java client (``BuiltInPartitioner``).

* A record with a key goes to ``toPositive(murmur2(key)) % num_partitions``
  over *all* partitions (available or not), so the same key lands on the same
  partition whether Java, librdkafka (``murmur2_random``) or pystream wrote it.
* Records without a key stick to one available partition until its batch is
  full (KIP-480), then move to another one chosen at random: fewer, fuller
  batches than round robin.

The functions here are the C implementations; ``Producer.send`` applies the
same rules inside the Cython accumulator (one C call per record) and
``send_batch`` partitions whole arrays of keys at once.
"""

from __future__ import annotations

from ._fast import murmur2, partition_for_key, partitions_for_fixed_keys, partitions_for_keys

__all__ = ["murmur2", "partition_for_key", "partitions_for_fixed_keys", "partitions_for_keys"]
