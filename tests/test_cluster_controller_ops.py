"""Controller operations: controlled shutdown, preferred leader election (on request and
automatic rebalancing) and partition reassignment.

Two levels, both on a real ZooKeeper:

* the controller alone (:class:`ZkController` on :class:`ZkNode` registrations), where
  the test plays the partition leader's part by writing ISR changes the way a leader
  does (compare-and-set on the state, plus an ISR change notification) — so the
  reassignment and election rules are checked without depending on replication;
* three real ``pystream serve`` processes driven by real clients (confluent-kafka's
  AdminClient, the ``pystream`` command), where replication moves the data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from broker_process import BrokerProcess  # noqa: E402
from cli_helpers import run  # noqa: E402
from cluster_fixtures import (  # noqa: E402
    NONE,
    bootstrap,
    by_id,
    create_topic,
    fetch,
    metadata,
    produce,
    start_cluster,
)
from confluent_kafka import ElectionType, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from kazoo.recipe.watchers import DataWatch  # noqa: E402
from test_cluster_basic import dirs  # noqa: E402
from zookeeper import (  # noqa: E402
    ZkNode,
    kazoo_clients,  # noqa: F401 - fixture
    wait_until,
    zk_connect,  # noqa: F401 - fixture
    zk_nodes,  # noqa: F401 - fixture
    zookeeper,  # noqa: F401 - fixture
)

from pystream.cluster.zookeeper.controller import OngoingReassignment, ZkController  # noqa: E402
from pystream.cluster.zookeeper.paths import (  # noqa: E402
    BROKER_IDS,
    ISR_CHANGE_NOTIFICATION,
    ISR_CHANGE_PREFIX,
    LeaderAndIsr,
    TopicAssignment,
    encode_isr_change,
    new_topic_id,
    partition_path,
    partition_state_path,
    partitions_path,
    topic_path,
)
from pystream.errors import (  # noqa: E402
    ElectionNotNeededError,
    InvalidReplicaAssignmentError,
    NoReassignmentInProgressError,
    PreferredLeaderNotAvailableError,
    UnknownTopicOrPartitionError,
)
from pystream.protocol.messages.alter_partition_reassignments import (  # noqa: E402
    AlterPartitionReassignmentsRequest,
)
from pystream.protocol.messages.controlled_shutdown import ControlledShutdownRequest  # noqa: E402
from pystream.protocol.messages.elect_leaders import ElectLeadersRequest  # noqa: E402
from pystream.protocol.messages.list_partition_reassignments import (  # noqa: E402
    ListPartitionReassignmentsRequest,
)

NOT_CONTROLLER = 41
FAST_SHUTDOWN = {"controlled.shutdown.retry.backoff.ms": "200"}


# === the controller on its own =================================================================
@pytest.fixture
def controller(zk_nodes: Callable[..., ZkNode]) -> Iterator[tuple[ZkController, Any]]:  # noqa: F811
    """Brokers 0-2 registered; a controller on broker 0 (auto rebalance every 0.2 s, 10 %).

    Yields the active controller and a ZooKeeper client to play the leaders' part."""
    nodes = [zk_nodes(i, controller=False) for i in range(3)]
    active = ZkController(
        nodes[0].client,
        0,
        auto_leader_rebalance_enable=True,
        leader_imbalance_check_interval_seconds=0.2,
        leader_imbalance_per_broker_percentage=10,
    )
    active.start()
    try:
        wait_until(lambda: active.active, what="broker 0 is the controller")
        yield active, nodes[1].client
    finally:
        active.stop()


def write_topic(client: Any, name: str, states: dict[int, tuple[list[int], LeaderAndIsr]]) -> None:
    """A topic with its partition states, as CreateTopics writes them (one multi-op)."""
    assignment = TopicAssignment(new_topic_id(), {p: r for p, (r, _) in states.items()})
    txn = client.transaction()
    txn.create(topic_path(name), assignment.to_bytes())
    txn.create(partitions_path(name))
    for p, (_, state) in states.items():
        txn.create(partition_path(name, p))
        txn.create(partition_state_path(name, p), state.to_bytes())
    assert not any(isinstance(r, Exception) for r in txn.commit())


def read_state(client: Any, topic: str, partition: int) -> LeaderAndIsr:
    return LeaderAndIsr.from_bytes(client.get(partition_state_path(topic, partition))[0])


def read_assignment(client: Any, topic: str) -> TopicAssignment:
    return TopicAssignment.from_bytes(topic, client.get(topic_path(topic))[0])


def leader_sets_isr(client: Any, topic: str, partition: int, isr: list[int]) -> None:
    """What a partition leader does when a follower catches up (ZkMetadataStore.update_isr)."""
    path = partition_state_path(topic, partition)
    data, stat = client.get(path)
    current = LeaderAndIsr.from_bytes(data)
    state = LeaderAndIsr(current.leader, current.leader_epoch, isr, current.controller_epoch)
    txn = client.transaction()
    txn.set_data(path, state.to_bytes(), stat.version)
    txn.create(ISR_CHANGE_PREFIX, encode_isr_change([(topic, partition)]), sequence=True)
    assert not any(isinstance(r, Exception) for r in txn.commit())


def test_reassignment_waits_for_the_new_replicas_to_join_the_isr(
    controller: tuple[ZkController, Any],
) -> None:
    active, zk = controller
    write_topic(zk, "moved", {0: ([0], LeaderAndIsr(0, 3, [0], 1))})
    outcome = active.alter_partition_reassignments({("moved", 0): [1, 2]}).result(30)
    assert outcome == {("moved", 0): None}
    # Kafka's order while moving: the target replicas, then the original ones.
    ongoing = read_assignment(zk, "moved")
    assert ongoing.partitions[0] == [1, 2, 0]
    assert (ongoing.adding[0], ongoing.removing[0]) == ([1, 2], [0])
    assert active.list_partition_reassignments(None).result(30) == {
        ("moved", 0): OngoingReassignment([1, 2, 0], [1, 2], [0])
    }
    # One new replica in sync is not enough: nothing moves.
    leader_sets_isr(zk, "moved", 0, [0, 1])
    wait_until(lambda: not zk.get_children(ISR_CHANGE_NOTIFICATION), what="the change heard")
    # Requests queue behind events: once this answers, the ISR change has been handled.
    assert list(active.list_partition_reassignments(None).result(30)) == [("moved", 0)]
    assert read_assignment(zk, "moved").partitions[0] == [1, 2, 0]
    assert read_state(zk, "moved", 0).leader == 0
    leader_sets_isr(zk, "moved", 0, [0, 1, 2])
    wait_until(
        lambda: read_assignment(zk, "moved").partitions[0] == [1, 2],
        what="the reassignment completed",
    )
    done = read_assignment(zk, "moved")
    assert not done.reassigning(0)
    # The old leader left: the first target replica leads, in a new leader epoch.
    assert read_state(zk, "moved", 0) == LeaderAndIsr(1, 4, [1, 2], active.epoch)
    assert active.list_partition_reassignments(None).result(30) == {}


def test_reassignment_validation_and_cancellation(controller: tuple[ZkController, Any]) -> None:
    active, zk = controller
    write_topic(zk, "kept", {0: ([0, 1], LeaderAndIsr(0, 0, [0, 1], 1))})
    outcome = active.alter_partition_reassignments(
        {
            ("kept", 0): [1, 1],
            ("kept", 1): [0],
            ("absent", 0): [0],
        }
    ).result(30)
    assert isinstance(outcome[("kept", 0)], InvalidReplicaAssignmentError)
    assert "duplicate" in str(outcome[("kept", 0)])
    assert isinstance(outcome[("kept", 1)], UnknownTopicOrPartitionError)
    assert isinstance(outcome[("absent", 0)], UnknownTopicOrPartitionError)
    unknown_broker = active.alter_partition_reassignments({("kept", 0): [0, 7]}).result(30)
    assert isinstance(unknown_broker[("kept", 0)], InvalidReplicaAssignmentError)
    assert "7" in str(unknown_broker[("kept", 0)])
    nothing = active.alter_partition_reassignments({("kept", 0): None}).result(30)
    assert isinstance(nothing[("kept", 0)], NoReassignmentInProgressError)
    assert read_assignment(zk, "kept").partitions[0] == [0, 1]  # nothing was written

    assert active.alter_partition_reassignments({("kept", 0): [2]}).result(30) == {
        ("kept", 0): None
    }
    assert read_assignment(zk, "kept").partitions[0] == [2, 0, 1]
    leader_sets_isr(zk, "kept", 0, [0, 1, 2])  # broker 2 caught up
    wait_until(lambda: read_assignment(zk, "kept").partitions[0] == [2], what="completed")
    assert read_state(zk, "kept", 0) == LeaderAndIsr(2, 1, [2], active.epoch)
    # Cancel a reassignment that has not finished (broker 1 never joins the ISR).
    assert active.alter_partition_reassignments({("kept", 0): [1, 2]}).result(30) == {
        ("kept", 0): None
    }
    assert read_assignment(zk, "kept").removing == {}
    assert read_assignment(zk, "kept").adding == {0: [1]}
    assert active.alter_partition_reassignments({("kept", 0): None}).result(30) == {
        ("kept", 0): None
    }
    reverted = read_assignment(zk, "kept")
    assert reverted.partitions[0] == [2] and not reverted.reassigning(0)
    assert read_state(zk, "kept", 0).isr == [2]


def test_preferred_election_on_request_and_by_the_imbalance_check(
    zk_nodes: Callable[..., ZkNode],  # noqa: F811
) -> None:
    nodes = [zk_nodes(i, controller=False) for i in range(3)]
    zk = nodes[1].client
    manual = ZkController(nodes[0].client, 0)  # no automatic rebalancing
    manual.start()
    try:
        wait_until(lambda: manual.active, what="broker 0 is the controller")
        write_topic(
            zk,
            "led",
            {
                0: ([0, 1, 2], LeaderAndIsr(1, 5, [0, 1, 2], 1)),  # preferred 0, in the ISR
                1: ([1, 2], LeaderAndIsr(1, 2, [1, 2], 1)),  # already led by 1
                2: ([2, 0], LeaderAndIsr(0, 2, [0], 1)),  # preferred 2 not in the ISR
            },
        )
        outcome = manual.elect_leaders(0, [("led", 0), ("led", 1), ("led", 2), ("led", 9)])
        results = outcome.result(30)
        assert results[("led", 0)] is None
        assert isinstance(results[("led", 1)], ElectionNotNeededError)
        assert isinstance(results[("led", 2)], PreferredLeaderNotAvailableError)
        assert isinstance(results[("led", 9)], UnknownTopicOrPartitionError)
        assert read_state(zk, "led", 0) == LeaderAndIsr(0, 6, [0, 1, 2], manual.epoch)
        assert read_state(zk, "led", 2).leader == 0
    finally:
        manual.stop()
    # Now a controller that checks the imbalance on its own (every 0.2 s, above 10 %).
    write_topic(zk, "drifted", {0: ([2, 0], LeaderAndIsr(0, 1, [0, 2], 1))})
    automatic = ZkController(
        nodes[2].client,
        2,
        auto_leader_rebalance_enable=True,
        leader_imbalance_check_interval_seconds=0.2,
        leader_imbalance_per_broker_percentage=10,
    )
    automatic.start()
    try:
        wait_until(
            lambda: read_state(zk, "drifted", 0).leader == 2, what="the preferred leader back"
        )
        assert read_state(zk, "drifted", 0).leader_epoch == 2
    finally:
        automatic.stop()


# === three real brokers ===========================================================================
@pytest.fixture
def brokers(request: pytest.FixtureRequest, tmp_path: Path, zk_connect: str) -> Iterator[Any]:  # noqa: F811
    """The three-broker cluster, with the test's extra broker overrides
    (``@pytest.mark.parametrize("brokers", [{...}], indirect=True)``)."""
    started = start_cluster(
        tmp_path, zk_connect, {**FAST_SHUTDOWN, **getattr(request, "param", {})}
    )
    try:
        yield started
    finally:
        for broker in started:
            broker.close()


def led_elsewhere(partitions: dict[int, Any], broker_id: int) -> dict[int, Any] | None:
    """``partitions`` if each has a leader other than ``broker_id``, else None."""
    ok = all(s.leader_id not in (-1, broker_id) for s in partitions.values())
    return partitions if ok else None


def controller_of(cluster: list[BrokerProcess]) -> int:
    return wait_until(lambda: metadata(cluster[0]).controller_id + 1, what="a controller") - 1


def partitions_of(broker: BrokerProcess, topic: str) -> dict[int, Any]:
    return {p.partition_index: p for p in metadata(broker, [topic]).topics[0].partitions}


@pytest.mark.parametrize("stopped_role", ["follower of the controller", "the controller"])
def test_sigterm_moves_leadership_away_before_the_broker_leaves(
    brokers: list[BrokerProcess],
    zk_connect: str,  # noqa: F811
    kazoo_clients: Callable[..., Any],  # noqa: F811
    stopped_role: str,
) -> None:
    create_topic(brokers, "handed", 6, 3)
    create_topic(brokers, "single", 3, 1)
    controller = controller_of(brokers)
    ids = by_id(brokers)
    victim = controller if stopped_role == "the controller" else (controller + 1) % 3
    survivor = ids[(victim + 1) % 3]
    before = partitions_of(survivor, "handed")
    led = {p for p, s in before.items() if s.leader_id == victim}
    assert led  # replicas are spread: every broker leads two of the six
    zk = kazoo_clients(zk_connect)
    # The zxid of the first write that gave each partition another leader: ZooKeeper orders
    # every write, so it tells whether that happened before the broker deregistered.
    moved_at: dict[int, int] = {}

    def watch(partition: int, data: bytes | None, stat: Any) -> None:
        if data and LeaderAndIsr.from_bytes(data).leader != victim:
            moved_at.setdefault(partition, stat.mzxid)

    for p in led:
        DataWatch(zk, partition_state_path("handed", p), partial(watch, p))

    assert ids[victim].stop() == 0  # SIGTERM; the process exits 0

    after = wait_until(
        lambda: led_elsewhere(partitions_of(survivor, "handed"), victim),
        what="new leaders of the partitions the stopped broker led",
    )
    # The last change of /brokers/ids's children is the stopped broker's deregistration.
    deregistered = zk.exists(BROKER_IDS).pzxid
    for p in led:
        assert after[p].leader_epoch > before[p].leader_epoch
        assert victim not in after[p].isr_nodes
        assert moved_at[p] < deregistered, f"handed-{p} moved only after the broker left"
    output = ids[victim].output()
    assert "controlled shutdown succeeded" in output
    assert output.index("controlled shutdown succeeded") < output.index("shut down cleanly")


def test_other_brokers_answer_not_controller(brokers: list[BrokerProcess]) -> None:
    create_topic(brokers, "asked", 1, 3)
    controller = controller_of(brokers)
    other = by_id(brokers)[(controller + 1) % 3]
    with other.wire() as wire:
        elected = wire.request(43, 2, ElectLeadersRequest(election_type=0, topic_partitions=None))
        altered = wire.request(
            45,
            0,
            AlterPartitionReassignmentsRequest(
                topics=[
                    AlterPartitionReassignmentsRequest.ReassignableTopic(
                        name="asked",
                        partitions=[
                            AlterPartitionReassignmentsRequest.ReassignablePartition(
                                partition_index=0, replicas=[0, 1]
                            )
                        ],
                    )
                ]
            ),
        )
        listed = wire.request(46, 0, ListPartitionReassignmentsRequest(topics=None))
    assert (elected.error_code, altered.error_code, listed.error_code) == (NOT_CONTROLLER,) * 3
    with by_id(brokers)[controller].wire() as wire:
        listed = wire.request(46, 0, ListPartitionReassignmentsRequest(topics=None))
    assert (listed.error_code, listed.topics) == (NONE, [])


def _stop_and_restart(broker: BrokerProcess) -> None:
    assert broker.stop() == 0
    broker.start()


def _isr_complete(broker: BrokerProcess, topic: str, size: int) -> bool:
    return all(len(p.isr_nodes) == size for p in partitions_of(broker, topic).values())


def test_elect_leaders_gives_the_preferred_replica_its_leadership_back(
    brokers: list[BrokerProcess],
) -> None:
    create_topic(brokers, "preferred", 3, 3)
    ids = by_id(brokers)
    returning = (controller_of(brokers) + 1) % 3
    first = partitions_of(ids[0], "preferred")
    preferred_here = [p for p, s in first.items() if s.replica_nodes[0] == returning]
    assert preferred_here and all(first[p].leader_id == returning for p in preferred_here)
    _stop_and_restart(ids[returning])
    # Back, it catches up and rejoins the ISR (replication), but others lead its partitions.
    wait_until(lambda: _isr_complete(ids[0], "preferred", 3), what="the ISR complete again")
    assert all(partitions_of(ids[0], "preferred")[p].leader_id != returning for p in preferred_here)

    admin = AdminClient({"bootstrap.servers": bootstrap(brokers)})
    wanted = [TopicPartition("preferred", p) for p in sorted(first)]
    results = admin.elect_leaders(ElectionType.PREFERRED, wanted).result(30)
    moved = {tp.partition for tp, error in results.items() if error is None}
    assert moved == set(preferred_here)
    for tp, error in results.items():
        if tp.partition not in moved:
            assert error is not None and error.code() == 84  # ELECTION_NOT_NEEDED
    wait_until(
        lambda: all(
            s.leader_id == s.replica_nodes[0] for s in partitions_of(ids[0], "preferred").values()
        ),
        what="every partition led by its preferred replica",
    )
    again = run("topics", "elect-leaders", "--topic", "preferred", "--bootstrap-server",
                bootstrap(brokers))  # fmt: skip
    assert again.stdout.splitlines() == [
        f"No election needed for preferred-{p}." for p in sorted(first)
    ]


@pytest.mark.parametrize(
    "brokers", [{"leader.imbalance.check.interval.seconds": "1"}], indirect=True
)
def test_auto_rebalance_moves_leadership_back(brokers: list[BrokerProcess]) -> None:
    create_topic(brokers, "balanced", 3, 3)
    ids = by_id(brokers)
    controller = controller_of(brokers)
    returning = (controller + 1) % 3
    assert ids[returning].stop() == 0
    survivor = ids[(returning + 1) % 3]
    moved = wait_until(
        lambda: led_elsewhere(partitions_of(survivor, "balanced"), returning),
        what="leadership moved off the stopped broker",
    )
    assert any(s.replica_nodes[0] == returning for s in moved.values())
    ids[returning].start()
    # No request: the controller's periodic imbalance check elects the preferred leaders
    # once the returning broker is back in the ISR.
    wait_until(
        lambda: all(
            s.leader_id == s.replica_nodes[0] for s in partitions_of(ids[0], "balanced").values()
        ),
        what="preferred leaders restored by the imbalance check",
    )
    assert "leader imbalance" in ids[controller].output()


def test_reassignment_moves_a_partition_and_its_data_to_new_brokers(
    brokers: list[BrokerProcess],
) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap(brokers)})
    admin.create_topics([NewTopic("relocated", num_partitions=1, replica_assignment=[[0]])])[
        "relocated"
    ].result(30)
    ids = by_id(brokers)
    for broker in brokers:
        wait_until(
            lambda b=broker: getattr(partitions_of(b, "relocated").get(0), "leader_id", -1) == 0,
            what="the topic known everywhere",
        )
    with ids[0].wire() as wire:
        for i in range(10):
            assert produce(wire, "relocated", 0, f"record-{i}".encode()).error_code == NONE
    assert dirs(ids[0], "relocated") == {"relocated-0"}

    run(
        "topics", "reassign", "--bootstrap-server", bootstrap(brokers),
        "--topic", "relocated", "--partition", "0", "--replicas", "1,2", "--wait", "60",
    )  # fmt: skip
    state = partitions_of(ids[1], "relocated")[0]
    assert state.replica_nodes == [1, 2]
    assert state.leader_id in (1, 2) and sorted(state.isr_nodes) == [1, 2]
    described = run("topics", "describe", "relocated", "--bootstrap-server", bootstrap(brokers))
    assert "Replicas: 1,2" in described.stdout
    leader = ids[state.leader_id]
    with leader.wire() as wire:
        fetched = wait_until(
            lambda: (lambda f: f if f.error_code == NONE and f.high_watermark == 10 else None)(
                fetch(wire, "relocated", 0)
            ),
            what="the data readable from the new leader",
        )
    assert fetched.records  # the ten records, copied by replication
    wait_until(lambda: dirs(ids[0], "relocated") == set(), what="broker 0's log dir removed")
    listed = run("topics", "reassign", "--list", "--bootstrap-server", bootstrap(brokers))
    assert listed.stdout == ""


def test_a_single_node_is_its_own_controller(broker: BrokerProcess) -> None:
    """Without ZooKeeper every partition has one replica: nothing to elect or move."""
    run("topics", "create", "solo", "--partitions", "1", "--bootstrap-server", broker.bootstrap)
    reassign = AlterPartitionReassignmentsRequest.ReassignablePartition
    with broker.wire() as wire:
        elected = wire.request(
            43,
            2,
            ElectLeadersRequest(
                election_type=0,
                topic_partitions=[
                    ElectLeadersRequest.TopicPartitions(topic="solo", partitions=[0, 3])
                ],
            ),
        )
        altered = wire.request(
            45,
            0,
            AlterPartitionReassignmentsRequest(
                topics=[
                    AlterPartitionReassignmentsRequest.ReassignableTopic(
                        name="solo",
                        partitions=[
                            reassign(partition_index=0, replicas=[0, 1]),
                            reassign(partition_index=1, replicas=[0]),
                        ],
                    )
                ]
            ),
        )
        shutdown = wire.request(7, 3, ControlledShutdownRequest(broker_id=0, broker_epoch=-1))
    (topic,) = elected.replica_election_results
    assert [(p.partition_id, p.error_code) for p in topic.partition_result] == [
        (0, 84),  # ELECTION_NOT_NEEDED
        (3, 3),  # UNKNOWN_TOPIC_OR_PARTITION
    ]
    (moved,) = altered.responses
    assert [(p.partition_index, p.error_code) for p in moved.partitions] == [(0, 39), (1, 3)]
    assert (shutdown.error_code, shutdown.remaining_partitions) == (NONE, [])
