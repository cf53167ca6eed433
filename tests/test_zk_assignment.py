"""Replica assignment (Kafka's algorithm) and the controller's leader-election rules."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pystream.cluster.zookeeper.assignment import assign_replicas, rack_alternated_brokers
from pystream.cluster.zookeeper.election import (
    controlled_shutdown_election,
    initial_leader_and_isr,
    offline_partition_election,
    preferred_replica_election,
)
from pystream.cluster.zookeeper.paths import NO_LEADER, LeaderAndIsr
from pystream.errors import InvalidReplicaAssignmentError, InvalidReplicationFactorError


# --- assignment --------------------------------------------------------------------------------
def test_same_assignment_as_kafka_without_racks() -> None:
    # Kafka's AdminZkClientTest: 5 brokers, 10 partitions, RF 3, fixed start index 0.
    brokers = dict.fromkeys(range(5))
    assert assign_replicas(brokers, 10, 3, start_index=0) == {
        0: [0, 1, 2],
        1: [1, 2, 3],
        2: [2, 3, 4],
        3: [3, 4, 0],
        4: [4, 0, 1],
        5: [0, 2, 3],
        6: [1, 3, 4],
        7: [2, 4, 0],
        8: [3, 0, 1],
        9: [4, 1, 2],
    }


def test_same_rack_alternation_and_assignment_as_kafka() -> None:
    # Kafka's AdminRackAwareTest.testGetRackAlternatedBrokerListAndAssignReplicasToBrokers.
    racks = {0: "rack1", 1: "rack3", 2: "rack3", 3: "rack2", 4: "rack2", 5: "rack1"}
    assert rack_alternated_brokers(racks) == [0, 3, 1, 5, 4, 2]
    assert assign_replicas(racks, 7, 3, start_index=0, start_partition=0) == {
        0: [0, 3, 1],
        1: [3, 1, 5],
        2: [1, 5, 4],
        3: [5, 4, 2],
        4: [4, 2, 0],
        5: [2, 0, 3],
        6: [0, 4, 2],
    }


@pytest.mark.parametrize("seed", range(20))
def test_leaders_and_replicas_are_spread_evenly(seed: int) -> None:
    brokers = dict.fromkeys([1, 2, 3, 4])
    assignment = assign_replicas(brokers, 12, 3, rng=random.Random(seed))
    assert sorted(assignment) == list(range(12))
    for replicas in assignment.values():
        assert len(set(replicas)) == 3
    leaders = Counter(replicas[0] for replicas in assignment.values())
    assert set(leaders.values()) == {3}, leaders
    load = Counter(b for replicas in assignment.values() for b in replicas)
    assert set(load.values()) == {9}, load


@pytest.mark.parametrize("seed", range(20))
def test_rack_aware_puts_each_partition_on_distinct_racks(seed: int) -> None:
    racks = {1: "a", 2: "a", 3: "b", 4: "b", 5: "c", 6: "c"}
    assignment = assign_replicas(racks, 12, 3, rng=random.Random(seed))
    for replicas in assignment.values():
        assert sorted(racks[b] for b in replicas) == ["a", "b", "c"], replicas
    leaders = Counter(replicas[0] for replicas in assignment.values())
    assert set(leaders.values()) == {2}, leaders


def test_more_replicas_than_racks_still_uses_every_rack() -> None:
    racks = {1: "a", 2: "a", 3: "b", 4: "b"}
    for replicas in assign_replicas(racks, 8, 3, start_index=1).values():
        assert len(set(replicas)) == 3
        assert {racks[b] for b in replicas} == {"a", "b"}


def test_growing_a_topic_continues_the_spread() -> None:
    brokers = dict.fromkeys(range(5))
    whole = assign_replicas(brokers, 10, 3, start_index=2)
    first = assign_replicas(brokers, 4, 3, start_index=2)
    rest = assign_replicas(brokers, 6, 3, start_index=2, start_partition=4)
    assert {**first, **rest} == whole


def test_assignment_errors() -> None:
    with pytest.raises(InvalidReplicationFactorError, match="larger than available brokers: 2"):
        assign_replicas({1: None, 2: None}, 3, 3)
    with pytest.raises(InvalidReplicaAssignmentError, match=r"broker.rack.*\[2\]"):
        assign_replicas({1: "a", 2: None, 3: "b"}, 3, 2)


# --- elections ---------------------------------------------------------------------------------
def state(leader: int, epoch: int, isr: list[int]) -> LeaderAndIsr:
    return LeaderAndIsr(leader, epoch, isr, controller_epoch=1)


def test_initial_state_leads_with_first_live_replica() -> None:
    assert initial_leader_and_isr([3, 1, 2], {1, 2}, 4) == LeaderAndIsr(1, 0, [1, 2], 4)
    assert initial_leader_and_isr([3], {1, 2}, 4) is None


def test_clean_election_picks_first_live_isr_member_in_assignment_order() -> None:
    new = offline_partition_election(
        [1, 2, 3], state(1, 4, [1, 3, 2]), {2, 3}, unclean=False, controller_epoch=9
    )
    assert new == LeaderAndIsr(2, 5, [3, 2], 9)


def test_live_leader_keeps_epoch_and_loses_dead_isr_members() -> None:
    current = state(1, 4, [1, 2, 3])
    assert offline_partition_election(
        [1, 2, 3], current, {1, 3}, unclean=False, controller_epoch=2
    ) == LeaderAndIsr(1, 4, [1, 3], 2)
    assert (
        offline_partition_election([1, 2, 3], current, {1, 2, 3}, unclean=False, controller_epoch=2)
        is None
    )


def test_no_isr_member_alive_leaves_partition_leaderless_with_its_isr() -> None:
    current = state(1, 4, [1])
    offline = offline_partition_election([1, 2], current, {2}, unclean=False, controller_epoch=2)
    assert offline == LeaderAndIsr(NO_LEADER, 5, [1], 2)
    # Nothing new while still nobody eligible; the ISR member's return elects it.
    assert (
        offline_partition_election([1, 2], offline, {2}, unclean=False, controller_epoch=2) is None
    )
    back = offline_partition_election([1, 2], offline, {1, 2}, unclean=False, controller_epoch=3)
    assert back == LeaderAndIsr(1, 6, [1], 3)


def test_unclean_election_takes_any_live_replica() -> None:
    new = offline_partition_election(
        [1, 2, 3], state(1, 4, [1]), {3}, unclean=True, controller_epoch=2
    )
    assert new == LeaderAndIsr(3, 5, [3], 2)


def test_preferred_and_controlled_shutdown_elections() -> None:
    current = state(2, 3, [1, 2])
    assert preferred_replica_election([1, 2], current, {1, 2}, 5) == LeaderAndIsr(1, 4, [1, 2], 5)
    assert preferred_replica_election([1, 2], state(2, 3, [2]), {1, 2}, 5) is None
    moved = controlled_shutdown_election([1, 2, 3], state(1, 3, [1, 2, 3]), {1, 2, 3}, {1}, 5)
    assert moved == LeaderAndIsr(2, 4, [2, 3], 5)
    follower_leaves = controlled_shutdown_election([1, 2], state(1, 3, [1, 2]), {1, 2}, {2}, 5)
    assert follower_leaves == LeaderAndIsr(1, 3, [1], 5)
    assert controlled_shutdown_election([1, 2], state(1, 3, [1]), {1, 2}, {1}, 5) is None
