"""Partition leader election: what the controller decides, as pure functions.

Each function takes a partition's replicas (assignment order: the first is the
preferred leader), its current :class:`LeaderAndIsr` and the live brokers, and
returns the state to write — or None when nothing should change.  The
controller (:mod:`pystream.cluster.zookeeper.controller`) reads the inputs from
ZooKeeper and writes the result with compare-and-set; keeping the decision
pure makes every rule testable on its own.

The safety rule of a *clean* election: only an ISR member may lead, because only
ISR members are known to hold every committed record (the high watermark is
the minimum over the ISR).  An *unclean* election (``unclean.leader.election.enable``)
picks any live replica and may lose committed records: availability over
durability, the operator's choice per topic.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping
from typing import TypeVar

from pystream.cluster.zookeeper.paths import NO_LEADER, LeaderAndIsr

__all__ = [
    "PREFERRED_ELECTION",
    "UNCLEAN_ELECTION",
    "controlled_shutdown_election",
    "imbalanced_partitions",
    "initial_leader_and_isr",
    "offline_partition_election",
    "preferred_replica_election",
    "reassignment_completion",
]

K = TypeVar("K", bound=Hashable)

# ElectLeaders election types (Kafka's ElectionType).
PREFERRED_ELECTION = 0
UNCLEAN_ELECTION = 1


def initial_leader_and_isr(
    replicas: list[int], live: Collection[int], controller_epoch: int
) -> LeaderAndIsr | None:
    """A new partition: the first live replica leads, every live replica is in sync (the
    log is empty).  None while no replica is live: the partition waits for one."""
    live_replicas = [r for r in replicas if r in live]
    if not live_replicas:
        return None
    return LeaderAndIsr(live_replicas[0], 0, live_replicas, controller_epoch)


def offline_partition_election(
    replicas: list[int],
    current: LeaderAndIsr,
    live: Collection[int],
    *,
    unclean: bool,
    controller_epoch: int,
    shutting_down: Collection[int] = (),
) -> LeaderAndIsr | None:
    """After brokers come or go: keep a live leader (dropping dead brokers from its ISR),
    or elect a new one, bumping the leader epoch.

    Brokers in ``shutting_down`` (a controlled shutdown is under way) are live but never
    *become* leader: leadership would only have to move again moments later.

    * leader alive (and still a replica): the ISR loses members that are not live;
    * else the first replica (in assignment order) that is live and in the ISR leads;
      the ISR keeps its live members;
    * else, with ``unclean``, the first live replica leads with an ISR of itself;
    * else nobody leads (leader -1) and the ISR is kept as it was, so that whichever of
      its members returns first can be elected cleanly.
    """
    isr = current.isr
    if current.leader in live and current.leader in replicas:
        live_isr = [b for b in isr if b in live]
        if current.leader not in live_isr:
            live_isr.insert(0, current.leader)
        if live_isr == isr:
            return None
        # The leader is unchanged: its epoch is too; the znode version marks the change.
        return LeaderAndIsr(current.leader, current.leader_epoch, live_isr, controller_epoch)
    next_epoch = current.leader_epoch + 1
    clean = [r for r in replicas if r in live and r in isr and r not in shutting_down]
    if clean:
        live_isr = [b for b in isr if b in live]
        return LeaderAndIsr(clean[0], next_epoch, live_isr, controller_epoch)
    if unclean:
        live_replicas = [r for r in replicas if r in live and r not in shutting_down]
        if live_replicas:
            return LeaderAndIsr(live_replicas[0], next_epoch, [live_replicas[0]], controller_epoch)
    if current.leader == NO_LEADER:
        return None  # already offline; nothing new to record
    return LeaderAndIsr(NO_LEADER, next_epoch, list(isr), controller_epoch)


def preferred_replica_election(
    replicas: list[int],
    current: LeaderAndIsr,
    live: Collection[int],
    controller_epoch: int,
    shutting_down: Collection[int] = (),
) -> LeaderAndIsr | None:
    """Give leadership back to the preferred (first) replica if it is live and in sync
    (and not shutting down)."""
    preferred = replicas[0] if replicas else NO_LEADER
    if (
        current.leader == preferred
        or preferred not in live
        or preferred not in current.isr
        or preferred in shutting_down
    ):
        return None
    return LeaderAndIsr(preferred, current.leader_epoch + 1, current.isr, controller_epoch)


def controlled_shutdown_election(
    replicas: list[int],
    current: LeaderAndIsr,
    live: Collection[int],
    shutting_down: Collection[int],
    controller_epoch: int,
) -> LeaderAndIsr | None:
    """Move leadership off brokers that are shutting down, to a live ISR member that is not;
    the shutting-down brokers leave the ISR.  None if no other ISR member can lead (the
    partition stays with its leader until it actually goes away)."""
    if current.leader not in shutting_down:
        remaining = [b for b in current.isr if b not in shutting_down]
        if remaining == current.isr or not remaining:
            return None
        return LeaderAndIsr(current.leader, current.leader_epoch, remaining, controller_epoch)
    candidates = [r for r in replicas if r in live and r in current.isr and r not in shutting_down]
    if not candidates:
        return None
    isr = [b for b in current.isr if b not in shutting_down]
    return LeaderAndIsr(candidates[0], current.leader_epoch + 1, isr, controller_epoch)


def reassignment_completion(
    target: list[int],
    current: LeaderAndIsr,
    live: Collection[int],
    controller_epoch: int,
    shutting_down: Collection[int] = (),
) -> LeaderAndIsr | None:
    """The state of a partition whose replicas become ``target`` (the end of a KIP-455
    reassignment, once every target replica is in the ISR).

    Replicas that are not in ``target`` leave the ISR.  A live leader that stays a
    replica keeps leading (same leader epoch: only the ISR changes); else the first
    target replica that is live, in the ISR and not shutting down leads, with the leader
    epoch bumped.  None if no target replica can lead: the reassignment waits.
    """
    isr = [b for b in current.isr if b in target]
    if current.leader in target and current.leader in live and current.leader in isr:
        return LeaderAndIsr(current.leader, current.leader_epoch, isr, controller_epoch)
    candidates = [r for r in target if r in live and r in isr and r not in shutting_down]
    if not candidates:
        return None
    return LeaderAndIsr(candidates[0], current.leader_epoch + 1, isr, controller_epoch)


def imbalanced_partitions(
    partitions: Mapping[K, tuple[list[int], int]], threshold_percent: int
) -> list[K]:
    """The partitions to give back to their preferred leader (Kafka's auto leader
    rebalance), from each partition's ``(replicas, leader)``.

    A broker's imbalance ratio is the share of the partitions it is preferred leader
    of (first replica) that another broker leads.  For every broker whose ratio is
    above ``threshold_percent`` (``leader.imbalance.per.broker.percentage``), its
    not-led partitions are returned; whether each can move (preferred replica live,
    in the ISR) is :func:`preferred_replica_election`'s call.
    """
    preferred_here: dict[int, list[K]] = {}
    for key, (replicas, _leader) in partitions.items():
        if replicas:
            preferred_here.setdefault(replicas[0], []).append(key)
    chosen: list[K] = []
    for broker, keys in sorted(preferred_here.items()):
        not_led = [k for k in keys if partitions[k][1] != broker]
        if not_led and len(not_led) * 100 > threshold_percent * len(keys):
            chosen.extend(not_led)
    return chosen
