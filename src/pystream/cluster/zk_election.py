"""Partition leader election: what the controller decides, as pure functions.

Each function takes a partition's replicas (assignment order: the first is the
preferred leader), its current :class:`LeaderAndIsr` and the live brokers, and
returns the state to write — or None when nothing should change.  The
controller (:mod:`pystream.cluster.zk_controller`) reads the inputs from
ZooKeeper and writes the result with compare-and-set; keeping the decision
pure makes every rule testable on its own.

The safety rule of a *clean* election: only an ISR member may lead, because only
ISR members are known to hold every committed record (the high watermark is
the minimum over the ISR).  An *unclean* election (``unclean.leader.election.enable``)
picks any live replica and may lose committed records: availability over
durability, the operator's choice per topic.
"""

from __future__ import annotations

from collections.abc import Collection

from pystream.cluster.zk_paths import NO_LEADER, LeaderAndIsr

__all__ = [
    "controlled_shutdown_election",
    "initial_leader_and_isr",
    "offline_partition_election",
    "preferred_replica_election",
]


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
) -> LeaderAndIsr | None:
    """After brokers come or go: keep a live leader (dropping dead brokers from its ISR),
    or elect a new one, bumping the leader epoch.

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
    clean = [r for r in replicas if r in live and r in isr]
    if clean:
        live_isr = [b for b in isr if b in live]
        return LeaderAndIsr(clean[0], next_epoch, live_isr, controller_epoch)
    if unclean:
        live_replicas = [r for r in replicas if r in live]
        if live_replicas:
            return LeaderAndIsr(live_replicas[0], next_epoch, [live_replicas[0]], controller_epoch)
    if current.leader == NO_LEADER:
        return None  # already offline; nothing new to record
    return LeaderAndIsr(NO_LEADER, next_epoch, list(isr), controller_epoch)


def preferred_replica_election(
    replicas: list[int], current: LeaderAndIsr, live: Collection[int], controller_epoch: int
) -> LeaderAndIsr | None:
    """Give leadership back to the preferred (first) replica if it is live and in sync."""
    preferred = replicas[0] if replicas else NO_LEADER
    if current.leader == preferred or preferred not in live or preferred not in current.isr:
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
