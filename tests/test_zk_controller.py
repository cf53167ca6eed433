"""The controller: election, epoch fencing, and leadership when brokers die and return."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from zookeeper import (  # noqa: E402
    ZkNode,
    ZooKeeperServer,
    expire_session,
    wait_until,
    zk_connect,  # noqa: F401 - fixture
    zk_nodes,  # noqa: F401 - fixture
    zookeeper,  # noqa: F401 - fixture
)

from pystream.cluster.zookeeper import client as zk_client  # noqa: E402
from pystream.cluster.zookeeper.controller import ControllerState, EpochFence  # noqa: E402
from pystream.cluster.zookeeper.paths import (  # noqa: E402
    NO_LEADER,
    LeaderAndIsr,
    TopicAssignment,
    decode_controller,
    encode_config,
    encode_isr_change,
    new_topic_id,
    partition_state_path,
    topic_path,
)
from pystream.cluster.zookeeper.store import TopicChange, ZkMetadataStore  # noqa: E402
from pystream.errors import NotControllerError  # noqa: E402

NodeFactory = Callable[..., ZkNode]


def controller_epoch(node: ZkNode) -> int:
    return int(node.client.get("/controller_epoch")[0])


def controller_id(node: ZkNode) -> int | None:
    stat = node.client.exists("/controller")
    return decode_controller(node.client.get("/controller")[0]) if stat else None


def the_controller(nodes: list[ZkNode]) -> ZkNode:
    """The one active controller among ``nodes`` (waits until there is exactly one)."""
    live = [n for n in nodes if n.client is not None]

    def single() -> ZkNode | None:
        active = [n for n in live if n.is_controller]
        if len(active) == 1 and controller_id(live[0]) == active[0].broker_id:
            return active[0]
        return None

    return wait_until(single, what="exactly one active controller")


def write_topic(node: ZkNode, name: str, partitions: dict[int, list[int]]) -> None:
    """Create a topic the way an external tool does: only its assignment (no states)."""
    assignment = TopicAssignment(new_topic_id(), partitions)
    node.client.create(topic_path(name), assignment.to_bytes())


def read_state(node: ZkNode, topic: str, partition: int) -> tuple[LeaderAndIsr, int] | None:
    stat = node.client.exists(partition_state_path(topic, partition))
    if stat is None:
        return None
    data, stat = node.client.get(partition_state_path(topic, partition))
    return LeaderAndIsr.from_bytes(data), stat.version


def state_of(node: ZkNode, topic: str, partition: int) -> LeaderAndIsr | None:
    reading = read_state(node, topic, partition)
    return reading[0] if reading else None


def wait_state(
    node: ZkNode, topic: str, partition: int, check: Callable[[LeaderAndIsr], bool], what: str
) -> LeaderAndIsr:
    def probe() -> LeaderAndIsr | None:
        state = state_of(node, topic, partition)
        return state if state is not None and check(state) else None

    return wait_until(probe, what=f"{topic}-{partition}: {what}")


def set_state(node: ZkNode, topic: str, partition: int, state: LeaderAndIsr) -> None:
    _, version = read_state(node, topic, partition)  # type: ignore[misc]
    node.client.set(partition_state_path(topic, partition), state.to_bytes(), version)


# --- election ---------------------------------------------------------------------------------
def test_one_controller_at_a_time_each_with_a_higher_epoch(zk_nodes: NodeFactory) -> None:  # noqa: F811
    nodes = [zk_nodes(b) for b in (1, 2, 3)]
    first = the_controller(nodes)
    assert controller_epoch(first) == first.controller.epoch == 1
    assert first.controller_states == [ControllerState(True, 1)]

    first.stop()  # clean shutdown: resigns at once
    second = the_controller(nodes)
    assert second is not first
    assert controller_epoch(second) == second.controller.epoch == 2
    assert first.controller_states[-1] == ControllerState(False, 1)

    second.crash()  # dies: its session ends, /controller goes with it
    third = the_controller(nodes)
    assert {third.broker_id} == {1, 2, 3} - {first.broker_id, second.broker_id}
    assert controller_epoch(third) == third.controller.epoch == 3


def test_forced_re_election_when_controller_znode_is_deleted(zk_nodes: NodeFactory) -> None:  # noqa: F811
    nodes = [zk_nodes(b) for b in (1, 2)]
    first = the_controller(nodes)
    first.client.delete("/controller")  # what an operator does to move the controller
    wait_until(lambda: controller_epoch(first) == 2, what="a new election")
    winner = the_controller(nodes)
    assert winner.controller.epoch == 2
    loser = next(n for n in nodes if n is not winner)
    assert not loser.is_controller


def test_an_expired_controller_resigns_and_its_old_epoch_is_fenced(
    zookeeper: ZooKeeperServer,  # noqa: F811
    zk_nodes: NodeFactory,  # noqa: F811
) -> None:
    nodes = [zk_nodes(b) for b in (1, 2, 3)]
    old = the_controller(nodes)
    old_fence = old.controller.fence
    write_topic(old, "fenced", {0: [1, 2, 3]})
    wait_state(old, "fenced", 0, lambda s: s.leader == 1, "online")

    expire_session(old.client, zookeeper.hosts)
    wait_until(lambda: ControllerState(False, 1) in old.controller_states, what="resignation")
    new = the_controller(nodes)  # possibly the same broker, on its new session
    assert new.controller.epoch == controller_epoch(new) == 2

    # A write of the deposed reign — what a controller still busy with an event when its
    # session expired would attempt — is refused as a whole.
    _, version = read_state(old, "fenced", 0)  # type: ignore[misc]
    txn = old_fence.transaction(old.client)
    txn.set_data(partition_state_path("fenced", 0), LeaderAndIsr(3, 9, [3], 1).to_bytes(), version)
    with pytest.raises(NotControllerError, match="epoch 1 was superseded"):
        old_fence.commit(txn)
    assert state_of(old, "fenced", 0).leader_epoch != 9
    # The current reign's fence writes.
    current = EpochFence(2, new.controller.fence.zk_version)
    txn = current.transaction(new.client)
    txn.check(topic_path("fenced"), -1)
    current.commit(txn)


# --- leadership ---------------------------------------------------------------------------------
def test_controller_brings_new_partitions_online(zk_nodes: NodeFactory) -> None:  # noqa: F811
    nodes = [zk_nodes(b) for b in (1, 2, 3)]
    controller = the_controller(nodes)
    write_topic(controller, "fresh", {0: [2, 3], 1: [3, 1]})
    assert wait_state(controller, "fresh", 0, lambda s: True, "online") == LeaderAndIsr(
        2, 0, [2, 3], 1
    )
    assert state_of(controller, "fresh", 1) == LeaderAndIsr(3, 0, [3, 1], 1)
    # Partitions added by a tool that writes only the assignment get states too.
    data, stat = controller.client.get(topic_path("fresh"))
    grown = TopicAssignment.from_bytes("fresh", data)
    grown.partitions[2] = [1, 2]
    controller.client.set(topic_path("fresh"), grown.to_bytes(), stat.version)
    wait_state(controller, "fresh", 2, lambda s: s == LeaderAndIsr(1, 0, [1, 2], 1), "online")


def test_leaders_move_to_isr_members_when_a_broker_dies(zk_nodes: NodeFactory) -> None:  # noqa: F811
    nodes = {b: zk_nodes(b) for b in (1, 2, 3)}
    observer = nodes[3]
    write_topic(observer, "t", {0: [1, 2, 3], 1: [2, 3, 1], 2: [3, 1, 2]})
    for p, leader in ((0, 1), (1, 2), (2, 3)):
        wait_state(observer, "t", p, lambda s, leader=leader: s.leader == leader, "online")

    nodes[1].crash()  # leader of t-0 (and maybe the controller)
    moved = wait_state(observer, "t", 0, lambda s: s.leader != 1, "a new leader")
    assert moved.leader == 2  # next in assignment order that is alive and in sync
    assert moved.leader_epoch == 1 and moved.isr == [2, 3]
    assert moved.controller_epoch == controller_epoch(observer)
    # Partitions whose leader survived keep it and its epoch; broker 1 leaves their ISR.
    assert wait_state(observer, "t", 1, lambda s: 1 not in s.isr, "isr") == LeaderAndIsr(
        2, 0, [2, 3], moved.controller_epoch
    )
    assert wait_state(observer, "t", 2, lambda s: 1 not in s.isr, "isr").leader == 3


def test_no_clean_leader_means_offline_until_an_isr_member_returns(
    zk_nodes: NodeFactory,  # noqa: F811
) -> None:
    nodes = {b: zk_nodes(b) for b in (1, 2, 3)}
    observer = nodes[3]
    write_topic(observer, "strict", {0: [1, 2]})
    wait_state(observer, "strict", 0, lambda s: s.isr == [1, 2], "online")
    # Broker 2 fell behind: the leader shrank the ISR to itself.
    set_state(observer, "strict", 0, LeaderAndIsr(1, 0, [1], 1))

    nodes[1].crash()
    offline = wait_state(observer, "strict", 0, lambda s: s.leader == NO_LEADER, "offline")
    assert offline.isr == [1] and offline.leader_epoch == 1  # broker 2 is not elected

    zk_nodes(1, controller=False)  # broker 1 comes back
    back = wait_state(observer, "strict", 0, lambda s: s.leader == 1, "back online")
    assert back.leader_epoch == 2 and back.isr == [1]


def test_unclean_election_when_the_topic_allows_it(zk_nodes: NodeFactory) -> None:  # noqa: F811
    nodes = {b: zk_nodes(b) for b in (1, 2, 3)}
    observer = nodes[3]
    write_topic(observer, "lossy", {0: [1, 2]})
    observer.client.create(
        "/config/topics/lossy", encode_config({"unclean.leader.election.enable": "true"})
    )
    wait_state(observer, "lossy", 0, lambda s: s.isr == [1, 2], "online")
    set_state(observer, "lossy", 0, LeaderAndIsr(1, 0, [1], 1))

    nodes[1].crash()
    elected = wait_state(observer, "lossy", 0, lambda s: s.leader != 1, "an unclean leader")
    assert (elected.leader, elected.leader_epoch, elected.isr) == (2, 1, [2])


def test_unclean_election_by_broker_default(zk_nodes: NodeFactory) -> None:  # noqa: F811
    nodes = {b: zk_nodes(b, unclean=True) for b in (1, 2, 3)}
    observer = nodes[3]
    write_topic(observer, "lossy", {0: [1, 2]})
    wait_state(observer, "lossy", 0, lambda s: s.isr == [1, 2], "online")
    set_state(observer, "lossy", 0, LeaderAndIsr(1, 0, [1], 1))
    nodes[1].crash()
    assert wait_state(observer, "lossy", 0, lambda s: s.leader != 1, "elected").leader == 2


def test_isr_change_notifications_are_consumed_and_dead_members_removed(
    zk_nodes: NodeFactory,  # noqa: F811
) -> None:
    nodes = {b: zk_nodes(b) for b in (1, 2, 3)}
    observer = nodes[3]
    write_topic(observer, "n", {0: [3, 2, 1]})
    wait_state(observer, "n", 0, lambda s: s.isr == [3, 2, 1], "online")
    nodes[1].crash()
    wait_state(observer, "n", 0, lambda s: s.isr == [3, 2], "isr without 1")
    # The leader re-adds broker 1 (a race with its death) and notifies the controller.
    set_state(observer, "n", 0, LeaderAndIsr(3, 0, [3, 2, 1], 1))
    observer.client.create(
        "/isr_change_notification/isr_change_", encode_isr_change([("n", 0)]), sequence=True
    )
    wait_until(
        lambda: observer.client.get_children("/isr_change_notification") == [],
        what="notifications consumed",
    )
    wait_state(observer, "n", 0, lambda s: s.isr == [3, 2], "dead member removed again")


def test_every_broker_sees_leadership_move(zk_nodes: NodeFactory) -> None:  # noqa: F811
    """Brokers learn their roles from ZooKeeper watches (no LeaderAndIsr requests)."""

    async def scenario() -> None:
        nodes = {b: zk_nodes(b) for b in (1, 2, 3)}
        store = ZkMetadataStore(nodes[3].client, 3)
        await store.start()
        topic = store.create_topic_blocking("roles", -1, -1, assignments={0: [1, 3, 2]})
        assert topic.partitions[0].leader == 1
        changes: list[TopicChange] = []
        store.add_listener(lambda e: changes.append(e) if isinstance(e, TopicChange) else None)
        nodes[1].crash()

        def leads() -> bool:
            state = store.get_topic("roles").partitions[0]
            return state.leader == 3 and state.isr == [3, 2]

        await store.wait_for(lambda s: leads(), 20)
        state = store.get_topic("roles").partitions[0]
        assert (state.leader_epoch, state.partition_epoch) == (1, 1)
        assert changes[-1].before.partitions[0].leader == 1

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_controlled_controller_shutdown_lets_another_take_over_without_waiting(
    zk_nodes: NodeFactory,  # noqa: F811
) -> None:
    nodes = [zk_nodes(b) for b in (1, 2)]
    first = the_controller(nodes)
    write_topic(first, "handover", {0: [1, 2]})
    wait_state(first, "handover", 0, lambda s: s.isr == [1, 2], "online")
    first.stop()
    survivor = next(n for n in nodes if n is not first)
    assert the_controller(nodes) is survivor
    state = wait_state(survivor, "handover", 0, lambda s: first.broker_id not in s.isr, "moved")
    assert state.leader == survivor.broker_id


def test_a_broker_restarted_unnoticed_is_treated_as_failed_and_returned(
    zk_connect: str,  # noqa: F811
    zk_nodes: NodeFactory,  # noqa: F811
) -> None:
    """A broker back within its session timeout may never be seen gone: the controller tells
    by its broker epoch (the registration's czxid) and moves leadership off it anyway."""
    restarted_broker = zk_nodes(1, controller=False)
    nodes = {1: restarted_broker, **{b: zk_nodes(b) for b in (2, 3)}}
    observer = nodes[3]
    write_topic(observer, "bounce", {0: [1, 2, 3]})
    wait_state(observer, "bounce", 0, lambda s: s.leader == 1, "online")

    # The restarted broker's new session replaces the registration in one transaction.
    data, _ = observer.client.get("/brokers/ids/1")
    restarted = zk_client.connect(zk_connect)
    try:
        txn = restarted.transaction()
        txn.delete("/brokers/ids/1")
        txn.create("/brokers/ids/1", data, ephemeral=True)
        zk_client.commit(txn)
        moved = wait_state(observer, "bounce", 0, lambda s: s.leader != 1, "leader moved")
        assert (moved.leader, moved.leader_epoch, moved.isr) == (2, 1, [2, 3])
        assert sorted(restarted.get_children("/brokers/ids")) == ["1", "2", "3"]
    finally:
        zk_client.close(restarted)
