"""Replica assignment for new topics and partitions: Kafka's algorithm, rack-aware.

Goals, in Kafka's words (``AdminUtils.assignReplicasToBrokers``):

1. spread the replicas evenly among brokers;
2. for partitions assigned to a broker, spread their other replicas evenly over the
   other brokers, so that losing one broker moves its load to many, not one;
3. when every broker has a rack (``broker.rack``), put each partition's replicas on
   as many different racks as possible, so that losing a rack keeps a copy.

Partition ``p``'s first replica (its preferred leader) is broker ``(p + start) % n``;
the others follow at a shift that changes after every ``n`` partitions.  With racks,
the broker list is first interleaved rack by rack (``rack1 b0, rack2 b3, rack3 b1,
rack1 b5, ...``) and a candidate is skipped while it would repeat a rack (or a
broker) that already holds a replica and unused ones remain.

The same inputs (``start_index`` given) give the same assignment as Kafka's.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from pystream.errors import InvalidReplicaAssignmentError, InvalidReplicationFactorError

__all__ = ["assign_replicas", "rack_alternated_brokers"]


def assign_replicas(
    brokers: Mapping[int, str | None],
    num_partitions: int,
    replication_factor: int,
    *,
    start_index: int = -1,
    start_partition: int = -1,
    rng: random.Random | None = None,
) -> dict[int, list[int]]:
    """Partition -> replica broker ids for ``num_partitions`` new partitions.

    ``brokers`` maps each available broker id to its rack (None: no rack).
    ``start_index`` (-1: random) fixes where the first partition's leader is taken
    from; ``start_partition`` (-1: 0) numbers the first new partition, for growing a
    topic.  Raises InvalidReplicationFactor when there are too few brokers and
    InvalidReplicaAssignment when only some brokers have a rack.
    """
    if num_partitions <= 0:
        raise InvalidReplicaAssignmentError("number of partitions must be larger than 0")
    if replication_factor <= 0:
        raise InvalidReplicationFactorError("replication factor must be larger than 0")
    if replication_factor > len(brokers):
        raise InvalidReplicationFactorError(
            f"Replication factor: {replication_factor} larger than available brokers: "
            f"{len(brokers)}."
        )
    rng = rng or random.Random()
    racks = {b: r for b, r in brokers.items() if r is not None}
    if not racks:
        return _assign_without_racks(
            sorted(brokers), num_partitions, replication_factor, start_index, start_partition, rng
        )
    if len(racks) != len(brokers):
        missing = sorted(b for b, r in brokers.items() if r is None)
        raise InvalidReplicaAssignmentError(
            f"Not all brokers have rack information for replica rack aware assignment "
            f"(brokers without broker.rack: {missing}); set broker.rack on every broker "
            "or on none"
        )
    return _assign_with_racks(
        racks, num_partitions, replication_factor, start_index, start_partition, rng
    )


def _replica_index(first: int, shift: int, replica: int, n: int) -> int:
    # The (replica+1)-th follower of a partition led by broker index ``first``: never
    # ``first`` itself, and distinct for distinct ``replica`` below n-1.
    return (first + 1 + (shift + replica) % (n - 1)) % n


def _assign_without_racks(
    brokers: list[int],
    num_partitions: int,
    replication_factor: int,
    start_index: int,
    start_partition: int,
    rng: random.Random,
) -> dict[int, list[int]]:
    n = len(brokers)
    start = start_index if start_index >= 0 else rng.randrange(n)
    shift = start_index if start_index >= 0 else rng.randrange(n)
    partition = max(0, start_partition)
    assignment: dict[int, list[int]] = {}
    for _ in range(num_partitions):
        if partition > 0 and partition % n == 0:
            shift += 1
        first = (partition + start) % n
        replicas = [brokers[first]]
        replicas += [
            brokers[_replica_index(first, shift, j, n)] for j in range(replication_factor - 1)
        ]
        assignment[partition] = replicas
        partition += 1
    return assignment


def rack_alternated_brokers(racks: Mapping[int, str]) -> list[int]:
    """Brokers interleaved by rack: the first of each rack (racks sorted), then the second...

    ``{0: "r1", 1: "r3", 2: "r3", 3: "r2", 4: "r2", 5: "r1"}`` -> ``[0, 3, 1, 5, 4, 2]``.
    """
    by_rack: dict[str, list[int]] = {}
    for broker in sorted(racks):
        by_rack.setdefault(racks[broker], []).append(broker)
    columns = [by_rack[rack] for rack in sorted(by_rack)]
    result: list[int] = []
    for row in range(max(len(c) for c in columns)):
        result += [column[row] for column in columns if row < len(column)]
    return result


def _assign_with_racks(
    racks: Mapping[int, str],
    num_partitions: int,
    replication_factor: int,
    start_index: int,
    start_partition: int,
    rng: random.Random,
) -> dict[int, list[int]]:
    arranged = rack_alternated_brokers(racks)
    n = len(arranged)
    num_racks = len(set(racks.values()))
    start = start_index if start_index >= 0 else rng.randrange(n)
    shift = start_index if start_index >= 0 else rng.randrange(n)
    partition = max(0, start_partition)
    assignment: dict[int, list[int]] = {}
    for _ in range(num_partitions):
        if partition > 0 and partition % n == 0:
            shift += 1
        first = (partition + start) % n
        leader = arranged[first]
        replicas = [leader]
        used_racks = {racks[leader]}
        used_brokers = {leader}
        k = 0
        for _ in range(replication_factor - 1):
            # Within n - 1 steps of k every other broker is a candidate once: an unused rack
            # (or, all racks used, an unused broker) is always found.
            for _ in range(n):
                broker = arranged[_replica_index(first, shift * num_racks, k, n)]
                k += 1
                rack = racks[broker]
                if (rack not in used_racks or len(used_racks) == num_racks) and (
                    broker not in used_brokers or len(used_brokers) == n
                ):
                    replicas.append(broker)
                    used_racks.add(rack)
                    used_brokers.add(broker)
                    break
            else:  # pragma: no cover - impossible while replication_factor <= n
                raise AssertionError(f"no broker for replica {len(replicas)} of {partition}")
        assignment[partition] = replicas
        partition += 1
    return assignment
