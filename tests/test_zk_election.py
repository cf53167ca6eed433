"""The controller's pure rules for controlled shutdown, preferred leaders and reassignment."""

from __future__ import annotations

from pystream.cluster.zookeeper.election import (
    imbalanced_partitions,
    offline_partition_election,
    preferred_replica_election,
    reassignment_completion,
)
from pystream.cluster.zookeeper.paths import LeaderAndIsr, TopicAssignment, new_topic_id


def test_a_broker_shutting_down_is_never_elected() -> None:
    dead_leader = LeaderAndIsr(0, 4, [0, 1, 2], 1)
    elected = offline_partition_election(
        [0, 1, 2], dead_leader, {1, 2}, unclean=False, controller_epoch=2, shutting_down={1}
    )
    assert elected == LeaderAndIsr(2, 5, [1, 2], 2)  # 1 stays in the ISR: it is still live
    only_shutting_down = offline_partition_election(
        [0, 1], LeaderAndIsr(0, 4, [0, 1], 1), {1}, unclean=True, controller_epoch=2,
        shutting_down={1},
    )  # fmt: skip
    assert only_shutting_down == LeaderAndIsr(-1, 5, [0, 1], 2)
    # A shutting-down leader that is still live keeps leading until it hands over.
    assert (
        offline_partition_election(
            [0, 1],
            LeaderAndIsr(0, 4, [0, 1], 1),
            {0, 1},
            unclean=False,
            controller_epoch=2,
            shutting_down={0},
        )  # fmt: skip
        is None
    )
    led_elsewhere = LeaderAndIsr(1, 3, [0, 1], 1)
    assert preferred_replica_election([0, 1], led_elsewhere, {0, 1}, 2, shutting_down={0}) is None
    assert preferred_replica_election([0, 1], led_elsewhere, {0, 1}, 2) == LeaderAndIsr(
        0, 4, [0, 1], 2
    )


def test_reassignment_completion_keeps_a_staying_leader_and_drops_leaving_replicas() -> None:
    state = LeaderAndIsr(1, 7, [1, 0, 2], 3)
    assert reassignment_completion([1, 2], state, {0, 1, 2}, 4) == LeaderAndIsr(1, 7, [1, 2], 4)


def test_reassignment_completion_elects_from_the_target_when_the_leader_leaves() -> None:
    state = LeaderAndIsr(0, 7, [0, 1, 2], 3)
    assert reassignment_completion([1, 2], state, {0, 1, 2}, 4) == LeaderAndIsr(1, 8, [1, 2], 4)
    # The first target replica is shutting down: the next one leads.
    assert reassignment_completion([1, 2], state, {0, 1, 2}, 4, {1}) == LeaderAndIsr(
        2, 8, [1, 2], 4
    )
    # No target replica is live: wait.
    assert reassignment_completion([1, 2], state, {0}, 4) is None


def test_imbalance_ratio_above_the_threshold_picks_the_not_led_partitions() -> None:
    partitions = {
        ("t", 0): ([0, 1], 1),  # preferred 0, led by 1
        ("t", 1): ([0, 1], 0),
        ("t", 2): ([0, 1], 0),
        ("t", 3): ([0, 1], 0),
        ("t", 4): ([1, 0], 1),
    }
    # Broker 0: 1 of 4 not led = 25 %.
    assert imbalanced_partitions(partitions, 24) == [("t", 0)]
    assert imbalanced_partitions(partitions, 25) == []
    assert imbalanced_partitions({("u", 0): ([2], 2)}, 0) == []


def test_topic_assignment_keeps_reassignments() -> None:
    assignment = TopicAssignment(new_topic_id(), {0: [1, 2, 0], 1: [0]}, {0: [1, 2]}, {0: [0]})
    read = TopicAssignment.from_bytes("t", assignment.to_bytes())
    assert read == assignment
    assert read.reassigning(0) and not read.reassigning(1)
    assert read.target_replicas(0) == [1, 2]
    assert read.original_replicas(0) == [0]
    assert read.target_replicas(1) == read.original_replicas(1) == [0]
    # A topic znode written by Kafka before KIP-455 (no reassignment fields) reads too.
    legacy = b'{"version":1,"partitions":{"0":[3,4]}}'
    assert TopicAssignment.from_bytes("t", legacy).adding == {}
