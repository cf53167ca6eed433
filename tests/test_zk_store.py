"""The ZooKeeper metadata store: topics, states, configs, producer ids — seen by every broker."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from zookeeper import (  # noqa: E402
    ZkNode,
    ZkProxy,
    ZooKeeperServer,
    expire_session,
    kazoo_clients,  # noqa: F401 - fixture
    wait_until,
    zk_connect,  # noqa: F401 - fixture
    zk_nodes,  # noqa: F401 - fixture
    zookeeper,  # noqa: F401 - fixture
)

from pystream.cluster.zookeeper import entity_configs  # noqa: E402
from pystream.cluster.zookeeper.paths import (  # noqa: E402
    CONFIG_CHANGES,
    LeaderAndIsr,
    decode_topic_id,
)
from pystream.cluster.zookeeper.store import TopicChange, ZkMetadataStore  # noqa: E402
from pystream.errors import (  # noqa: E402
    FencedLeaderEpochError,
    InvalidPartitionsError,
    InvalidReplicaAssignmentError,
    InvalidReplicationFactorError,
    InvalidTopicException,
    InvalidUpdateVersionError,
    NotLeaderOrFollowerError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

NodeFactory = Callable[..., ZkNode]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


async def started_store(node: ZkNode) -> ZkMetadataStore:
    store = ZkMetadataStore(node.client, node.broker_id)
    await store.start()
    return store


def partition_count(store: ZkMetadataStore, name: str) -> int:
    topic = store.get_topic(name)
    return len(topic.partitions) if topic else 0


def configs_of(store: ZkMetadataStore, name: str) -> dict[str, str] | None:
    topic = store.get_topic(name)
    return topic.configs if topic else None


def partition_state(store: ZkMetadataStore, name: str, partition: int) -> Any:
    topic = store.get_topic(name)
    return topic.partitions.get(partition) if topic else None


def start_brokers(zk_nodes: NodeFactory, count: int, **kwargs: Any) -> list[ZkNode]:  # noqa: F811
    return [zk_nodes(broker_id, controller=False, **kwargs) for broker_id in range(1, count + 1)]


def test_a_topic_created_on_one_broker_is_seen_by_the_others(
    zk_nodes: NodeFactory,  # noqa: F811
    zk_connect: str,  # noqa: F811
    kazoo_clients,  # noqa: F811
) -> None:
    async def scenario() -> None:
        nodes = start_brokers(zk_nodes, 3)
        a, b = await started_store(nodes[0]), await started_store(nodes[1])
        assert a.live_brokers() == b.live_brokers() == [1, 2, 3]
        seen: list[TopicChange] = []
        b.add_listener(lambda e: seen.append(e) if isinstance(e, TopicChange) else None)

        created = a.create_topic_blocking("orders", 6, 3, {"cleanup.policy": "compact"})
        # Read-your-writes on the creating broker, at once.
        assert a.get_topic("orders") == created
        await b.wait_for(lambda s: s.get_topic("orders") is not None, 10)
        assert b.get_topic("orders") == created
        assert b.topic_by_id(created.topic_id) == created
        assert [e.name for e in seen] == ["orders"] and seen[0].before is None

        # Spread: each broker leads 2 of the 6 partitions; replicas on 3 distinct brokers.
        leaders = Counter(s.leader for s in created.partitions.values())
        assert leaders == {1: 2, 2: 2, 3: 2}
        for state in created.partitions.values():
            assert sorted(state.replicas) == [1, 2, 3]
            assert state.leader == state.replicas[0] and state.isr == state.replicas
            assert (state.leader_epoch, state.partition_epoch) == (0, 0)
        assert created.configs == {"cleanup.policy": "compact"}

        # Kafka's layout, under the chroot.
        raw = kazoo_clients()
        root = "/" + zk_connect.split("/", 1)[1]
        topic_json = json.loads(raw.get(f"{root}/brokers/topics/orders")[0])
        assert decode_topic_id(topic_json["topic_id"]) == created.topic_id
        assert {int(p): r for p, r in topic_json["partitions"].items()} == {
            p: s.replicas for p, s in created.partitions.items()
        }
        state_json = json.loads(raw.get(f"{root}/brokers/topics/orders/partitions/0/state")[0])
        assert state_json["leader"] == created.partitions[0].leader
        config_json = json.loads(raw.get(f"{root}/config/topics/orders")[0])
        assert config_json == {"version": 1, "config": {"cleanup.policy": "compact"}}

    run(scenario())


def test_only_one_of_two_concurrent_creates_wins(zk_nodes: NodeFactory) -> None:  # noqa: F811
    async def scenario() -> None:
        nodes = start_brokers(zk_nodes, 2)
        a, b = await started_store(nodes[0]), await started_store(nodes[1])
        outcomes = await asyncio.gather(
            asyncio.to_thread(a.create_topic_blocking, "race", 4, 2),
            asyncio.to_thread(b.create_topic_blocking, "race", 4, 2),
            return_exceptions=True,
        )
        errors = [o for o in outcomes if isinstance(o, Exception)]
        winners = [o for o in outcomes if not isinstance(o, Exception)]
        assert len(winners) == 1 and len(errors) == 1, outcomes
        assert isinstance(errors[0], TopicAlreadyExistsError)
        for store in (a, b):
            await store.wait_for(lambda s: s.get_topic("race") is not None, 10)
            assert store.get_topic("race").topic_id == winners[0].topic_id

    run(scenario())


def test_replicas_are_spread_over_racks(zk_nodes: NodeFactory) -> None:  # noqa: F811
    async def scenario() -> None:
        racks = {1: "a", 2: "a", 3: "b", 4: "b", 5: "c", 6: "c"}
        nodes = [zk_nodes(b, controller=False, rack=r) for b, r in racks.items()]
        store = await started_store(nodes[0])
        assert {b: i.rack for b, i in store.brokers().items()} == racks
        topic = store.create_topic_blocking("racked", 12, 3)
        for state in topic.partitions.values():
            assert sorted(racks[b] for b in state.replicas) == ["a", "b", "c"]
        nodes.append(zk_nodes(7, controller=False))  # a broker without broker.rack
        await store.wait_for(lambda s: 7 in s.live_brokers(), 10)
        with pytest.raises(InvalidReplicaAssignmentError, match=r"broker.rack.*\[7\]"):
            store.create_topic_blocking("mixed", 3, 2)

    run(scenario())


def test_topic_creation_is_validated(zk_nodes: NodeFactory) -> None:  # noqa: F811
    async def scenario() -> None:
        nodes = start_brokers(zk_nodes, 2)
        store = await started_store(nodes[0])
        with pytest.raises(InvalidReplicationFactorError):
            store.create_topic_blocking("t", 1, 3)
        store.create_topic_blocking("a.b", 1, 1)
        with pytest.raises(TopicAlreadyExistsError):
            store.create_topic_blocking("a.b", 1, 1)
        with pytest.raises(InvalidTopicException, match="collides"):
            store.create_topic_blocking("a_b", 1, 1)
        with pytest.raises(InvalidReplicaAssignmentError, match="broker 9"):
            store.create_topic_blocking("manual", -1, -1, assignments={0: [1, 9]})
        manual = store.create_topic_blocking("manual", -1, -1, assignments={0: [2, 1], 1: [1, 2]})
        assert {p: s.replicas for p, s in manual.partitions.items()} == {0: [2, 1], 1: [1, 2]}
        assert manual.partitions[0].leader == 2
        plan = store.plan_topic("planned", 3, 2)  # validate_only: nothing written
        assert len(plan.partitions) == 3 and store.get_topic("planned") is None
        assert nodes[0].client.exists("/brokers/topics/planned") is None

    run(scenario())


def test_partitions_added_on_one_broker_are_seen_by_the_others(
    zk_nodes: NodeFactory,  # noqa: F811
) -> None:
    async def scenario() -> None:
        nodes = start_brokers(zk_nodes, 3)
        a, b = await started_store(nodes[0]), await started_store(nodes[1])
        a.create_topic_blocking("grow", 3, 2)
        assert a.create_partitions_blocking("grow", 6, validate_only=True) == [3, 4, 5]
        assert len(a.get_topic("grow").partitions) == 3
        assert a.create_partitions_blocking("grow", 6) == [3, 4, 5]
        assert sorted(a.get_topic("grow").partitions) == list(range(6))
        await b.wait_for(lambda s: partition_count(s, "grow") == 6, 10)
        leaders = Counter(s.leader for s in b.get_topic("grow").partitions.values())
        assert leaders == {1: 2, 2: 2, 3: 2}
        assert b.get_topic("grow") == a.get_topic("grow")

        with pytest.raises(InvalidPartitionsError, match="already has 6"):
            a.create_partitions_blocking("grow", 6)
        with pytest.raises(InvalidReplicaAssignmentError, match="2 assignment"):
            a.create_partitions_blocking("grow", 7, [[1, 2], [2, 3]])
        with pytest.raises(UnknownTopicOrPartitionError):
            a.create_partitions_blocking("nope", 2)

        # Concurrent growth from two brokers: one wins, the other is told it is too late.
        outcomes = await asyncio.gather(
            asyncio.to_thread(a.create_partitions_blocking, "grow", 8),
            asyncio.to_thread(b.create_partitions_blocking, "grow", 8),
            return_exceptions=True,
        )
        assert sorted(type(o).__name__ for o in outcomes) == ["InvalidPartitionsError", "list"]
        await b.wait_for(lambda s: partition_count(s, "grow") == 8, 10)
        await a.wait_for(lambda s: partition_count(s, "grow") == 8, 10)

    run(scenario())


def test_topic_configs_are_replaced_and_seen_everywhere(zk_nodes: NodeFactory) -> None:  # noqa: F811
    async def scenario() -> None:
        nodes = start_brokers(zk_nodes, 2)
        a, b = await started_store(nodes[0]), await started_store(nodes[1])
        a.create_topic_blocking("conf", 1, 1, {"retention.ms": "1000"})
        a.set_topic_configs_blocking("conf", {"retention.ms": "5000", "cleanup.policy": "compact"})
        assert a.get_topic("conf").configs == {"retention.ms": "5000", "cleanup.policy": "compact"}
        await b.wait_for(lambda s: (configs_of(s, "conf") or {}).get("retention.ms") == "5000", 10)
        b.set_topic_configs_blocking("conf", {})
        await a.wait_for(lambda s: configs_of(s, "conf") == {}, 10)
        with pytest.raises(UnknownTopicOrPartitionError):
            a.set_topic_configs_blocking("nope", {})

        a.set_broker_configs_blocking("<default>", {"log.retention.ms": "1"})
        a.set_broker_configs_blocking(2, {"num.io.threads": "4"})
        await a.wait_for(lambda s: s.broker_configs() == {"log.retention.ms": "1"}, 10)
        await b.wait_for(lambda s: s.broker_configs(2) == {"num.io.threads": "4"}, 10)
        assert a.broker_configs(2) == {"num.io.threads": "4"}  # not watched by 1: read

    run(scenario())


def test_broker_config_changes_are_notified_and_old_notices_purged(
    zk_nodes: NodeFactory,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        (node,) = start_brokers(zk_nodes, 1)
        store = await started_store(node)

        def notices() -> list[Any]:
            children = sorted(store.zk.get_children(CONFIG_CHANGES))
            return [json.loads(store.zk.get(f"{CONFIG_CHANGES}/{c}")[0]) for c in children]

        store.set_broker_configs_blocking("<default>", {"log.retention.ms": "1"})
        store.set_broker_configs_blocking(1, {"num.io.threads": "4"})
        # Kafka's AdminZkClient.changeBrokerConfig writes these for brokers and tools.
        assert notices() == [
            {"version": 2, "entity_path": "brokers/<default>"},
            {"version": 2, "entity_path": "brokers/1"},
        ]
        # Notices older than the expiry are removed by the next change (all of them here).
        monkeypatch.setattr(entity_configs, "CONFIG_CHANGE_EXPIRATION_MS", 0)
        store.set_broker_configs_blocking(1, {})
        assert notices() == []
        assert store.broker_configs(1) == {}

    run(scenario())


def test_the_leader_changes_the_isr_fenced_by_epoch_and_version(
    zk_nodes: NodeFactory,  # noqa: F811
) -> None:
    async def scenario() -> None:
        nodes = start_brokers(zk_nodes, 3)
        stores = {n.broker_id: await started_store(n) for n in nodes}
        topic = stores[1].create_topic_blocking("isr", -1, -1, assignments={0: [1, 2, 3]})
        state = topic.partitions[0]
        leader, follower = stores[1], stores[2]

        shrunk = leader.update_isr_blocking(
            "isr", 0, [1, 3], state.leader_epoch, state.partition_epoch
        )
        assert (shrunk.isr, shrunk.leader_epoch, shrunk.partition_epoch) == ([1, 3], 0, 1)
        assert leader.get_topic("isr").partitions[0].isr == [1, 3]
        await follower.wait_for(
            lambda s: getattr(partition_state(s, "isr", 0), "isr", None) == [1, 3], 10
        )
        changes = nodes[0].client.get_children("/isr_change_notification")
        assert len(changes) == 1 and changes[0].startswith("isr_change_")

        with pytest.raises(InvalidUpdateVersionError):  # the leader's view is stale
            leader.update_isr_blocking("isr", 0, [1], 0, state.partition_epoch)
        with pytest.raises(NotLeaderOrFollowerError):  # broker 2 does not lead
            follower.update_isr_blocking("isr", 0, [2, 1, 3], 0, 1)
        # The controller moves leadership to 3 (epoch 1): the old leader is fenced.
        path = "/brokers/topics/isr/partitions/0/state"
        nodes[0].client.set(path, LeaderAndIsr(3, 1, [3, 1], 1).to_bytes(), 1)
        await leader.wait_for(lambda s: partition_state(s, "isr", 0).leader == 3, 10)
        with pytest.raises(NotLeaderOrFollowerError):
            leader.update_isr_blocking("isr", 0, [1], 0, 1)
        nodes[0].client.set(path, LeaderAndIsr(1, 2, [1, 3], 1).to_bytes(), 2)
        with pytest.raises(FencedLeaderEpochError):
            leader.update_isr_blocking("isr", 0, [1], 1, 3)
        assert LeaderAndIsr.from_bytes(nodes[0].client.get(path)[0]).isr == [1, 3]

    run(scenario())


def test_producer_id_blocks_never_overlap_across_brokers(zk_nodes: NodeFactory) -> None:  # noqa: F811
    async def scenario() -> None:
        nodes = start_brokers(zk_nodes, 3)
        stores = [await started_store(n) for n in nodes]
        blocks: list[Any] = []
        lock = threading.Lock()

        def reserve(store: ZkMetadataStore) -> None:
            for _ in range(20):
                block = store.allocate_producer_ids_blocking(store.broker_id, 100)
                with lock:
                    blocks.append(block)

        await asyncio.gather(*(asyncio.to_thread(reserve, s) for s in stores))
        firsts = sorted(b.first for b in blocks)
        assert firsts == list(range(0, 6000, 100))  # 60 blocks, no gap, no overlap
        assert Counter(b.broker_id for b in blocks) == {1: 20, 2: 20, 3: 20}
        data, _ = nodes[0].client.get("/latest_producer_id_block")
        assert json.loads(data)["block_end"] == "5999"

    run(scenario())


def test_every_broker_reads_the_same_cluster_id(zk_nodes: NodeFactory) -> None:  # noqa: F811
    async def scenario() -> None:
        nodes = start_brokers(zk_nodes, 2)
        a, b = await started_store(nodes[0]), await started_store(nodes[1])
        assert a.cluster_id and a.cluster_id == b.cluster_id
        assert json.loads(nodes[0].client.get("/cluster/id")[0])["id"] == a.cluster_id

    run(scenario())


def test_the_view_follows_brokers_and_controller(zk_nodes: NodeFactory) -> None:  # noqa: F811
    async def scenario() -> None:
        first = zk_nodes(1)
        store = await started_store(first)
        await store.wait_for(lambda s: s.controller_id == 1, 10)
        assert store.brokers()[1].endpoints[0].port == 9001
        assert store.brokers()[1].epoch > 0
        second = zk_nodes(2)
        await store.wait_for(lambda s: s.live_brokers() == [1, 2], 10)
        second.crash()
        await store.wait_for(lambda s: s.live_brokers() == [1], 10)

    run(scenario())


def test_watches_are_renewed_after_the_session_expires(
    zookeeper: ZooKeeperServer,  # noqa: F811
    zk_nodes: NodeFactory,  # noqa: F811
) -> None:
    async def scenario() -> None:
        nodes = start_brokers(zk_nodes, 2)
        a, b = await started_store(nodes[0]), await started_store(nodes[1])
        a.create_topic_blocking("before", 1, 1)
        await b.wait_for(lambda s: s.get_topic("before") is not None, 10)
        registered_epoch = a.brokers()[2].epoch
        await asyncio.to_thread(expire_session, nodes[1].client, zookeeper.hosts)
        # Changes after the expiry reach b through watches armed on its new session.
        a.create_topic_blocking("after", 1, 1)
        a.set_topic_configs_blocking("before", {"retention.ms": "7"})
        await b.wait_for(lambda s: s.get_topic("after") is not None, 10)
        await b.wait_for(lambda s: configs_of(s, "before") == {"retention.ms": "7"}, 10)
        # Broker 2 registered again on its new session, with a larger broker epoch.
        await a.wait_for(lambda s: getattr(s.brokers().get(2), "epoch", -1) > registered_epoch, 10)
        assert b.live_brokers() == [1, 2]

    run(scenario())


def test_delete_topic_is_carried_out_by_the_controller(
    zk_nodes: NodeFactory,  # noqa: F811
) -> None:
    async def scenario() -> None:
        node = zk_nodes(1)  # with a controller
        other = zk_nodes(2, controller=False)
        a, b = await started_store(node), await started_store(other)
        first = a.create_topic_blocking("doomed", 2, 2, {"retention.ms": "1"})
        await b.wait_for(lambda s: s.get_topic("doomed") is not None, 10)
        gone: list[TopicChange] = []
        b.add_listener(lambda e: gone.append(e) if isinstance(e, TopicChange) else None)

        assert a.delete_topic_blocking("doomed") == first
        await a.wait_for(lambda s: s.get_topic("doomed") is None, 10)
        await b.wait_for(lambda s: s.get_topic("doomed") is None, 10)
        assert gone[-1].after is None and gone[-1].before.topic_id == first.topic_id
        client = node.client
        wait_until(lambda: not a.deletion_pending("doomed"), what="the marker deleted")
        assert client.exists("/brokers/topics/doomed") is None
        assert client.exists("/config/topics/doomed") is None
        with pytest.raises(UnknownTopicOrPartitionError):
            a.delete_topic_blocking("doomed")

        again = b.create_topic_blocking("doomed", 1, 1)
        assert again.topic_id != first.topic_id
        await a.wait_for(
            lambda s: getattr(s.get_topic("doomed"), "topic_id", None) == again.topic_id, 10
        )
        assert a.get_topic("doomed").configs == {}

    run(scenario())


def test_requests_fail_fast_while_zookeeper_is_unreachable(
    zookeeper: ZooKeeperServer,  # noqa: F811
    zk_connect: str,  # noqa: F811
) -> None:
    """A partition from ZooKeeper must not freeze the broker's loop: writes answer
    REQUEST_TIMED_OUT at once, and work again once ZooKeeper is back."""

    async def scenario() -> None:
        proxy = ZkProxy(zookeeper.port)
        node = ZkNode(proxy.hosts + "/" + zk_connect.split("/", 1)[1], 1, controller=False)
        try:
            store = await started_store(node.start())
            proxy.block()
            await asyncio.to_thread(
                wait_until, lambda: not node.client.connected, 20, "the disconnection"
            )
            with pytest.raises(RequestTimedOutError, match="ZooKeeper did not answer"):
                store.create_topic_blocking("t", 1, 1)
            with pytest.raises(RequestTimedOutError):
                store.allocate_producer_ids_blocking(1, 10)
            assert store.get_topic("t") is None  # reads still answer, from memory
            proxy.unblock()
            await asyncio.to_thread(wait_until, lambda: node.client.connected, 20, "reconnection")
            assert store.create_topic_blocking("t", 1, 1).partitions[0].leader == 1
        finally:
            node.crash()
            proxy.close()

    run(scenario())


def test_scram_credentials_live_in_config_users_and_reach_every_broker(
    zk_nodes: NodeFactory,  # noqa: F811
) -> None:
    from pystream.security.scram import new_credential

    async def scenario() -> None:
        a_node, b_node = start_brokers(zk_nodes, 2)
        a, b = await started_store(a_node), await started_store(b_node)
        c256 = new_credential("SCRAM-SHA-256", "pw")
        c512 = new_credential("SCRAM-SHA-512", "pw2", iterations=8192)
        a.alter_scram_credentials_blocking(
            [("alice", "SCRAM-SHA-256", c256), ("alice", "SCRAM-SHA-512", c512)]
        )
        # Kafka's layout: /config/users/<name> with credentialToString values.
        stored = json.loads(a.zk.get("/config/users/alice")[0])
        assert stored == {
            "version": 1,
            "config": {"SCRAM-SHA-256": c256.to_string(), "SCRAM-SHA-512": c512.to_string()},
        }
        changes = [
            json.loads(a.zk.get(f"{CONFIG_CHANGES}/{c}")[0])
            for c in a.zk.get_children(CONFIG_CHANGES)
        ]
        assert {"version": 2, "entity_path": "users/alice"} in changes
        await b.wait_for(
            lambda s: (
                s.scram_credentials().get("alice") == {"SCRAM-SHA-256": c256, "SCRAM-SHA-512": c512}
            ),
            10,
        )
        b.alter_scram_credentials_blocking([("alice", "SCRAM-SHA-256", None)])
        await a.wait_for(
            lambda s: s.scram_credentials().get("alice") == {"SCRAM-SHA-512": c512}, 10
        )
        b.alter_scram_credentials_blocking([("alice", "SCRAM-SHA-512", None)])
        await a.wait_for(lambda s: "alice" not in s.scram_credentials(), 10)
        # A user created later (a new child of /config/users) is seen too.
        a.alter_scram_credentials_blocking([("bob", "SCRAM-SHA-256", c256)])
        await b.wait_for(lambda s: "bob" in s.scram_credentials(), 10)

    run(scenario())
