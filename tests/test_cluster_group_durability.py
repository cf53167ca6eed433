"""Group coordinator writes in a three-broker cluster: replicated before they are answered.

As Kafka's ``GroupMetadataManager`` (``storeOffsets`` / ``storeGroup`` append
with acks=-1 and update the cache in the append's callback), an OffsetCommit
is answered, and becomes what OffsetFetch returns, only once the ISR of the
group's ``__consumer_offsets`` partition has it.  So a SIGKILL of the
coordinator right after the commit returns never loses it, and a commit that
cannot reach ``min.insync.replicas`` replicas gets an error and is not served.

After a killed coordinator restarts (and may lead the partition again), the
group must be reachable within seconds: ``describe_consumer_groups`` and
``list_consumer_group_offsets`` from confluent-kafka's AdminClient.

All tests share one cluster (module scope): RF=3 ``__consumer_offsets``,
``min.insync.replicas=2``, preferred-leader rebalancing on (leadership moving
back to a restarted broker is part of what a coordinator must handle).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from broker_process import BrokerProcess, KafkaWire  # noqa: E402
from cluster_fixtures import (  # noqa: E402
    KEY_TYPE_GROUP,
    KEY_TYPE_TRANSACTION,
    NONE,
    by_id,
    create_topic,
    find_coordinator,
    metadata,
    start_cluster,
)
from confluent_kafka import (  # noqa: E402
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient  # noqa: E402
from waiting import wait_until  # noqa: E402
from zookeeper import ZooKeeperServer, zookeeper  # noqa: E402, F401 - fixture

from pystream.groups.offsets_log import partition_for  # noqa: E402
from pystream.protocol.messages.add_offsets_to_txn import AddOffsetsToTxnRequest  # noqa: E402
from pystream.protocol.messages.describe_groups import DescribeGroupsRequest  # noqa: E402
from pystream.protocol.messages.init_producer_id import InitProducerIdRequest  # noqa: E402
from pystream.protocol.messages.join_group import JoinGroupRequest  # noqa: E402
from pystream.protocol.messages.offset_fetch import OffsetFetchRequest  # noqa: E402
from pystream.protocol.messages.sync_group import SyncGroupRequest  # noqa: E402
from pystream.protocol.messages.txn_offset_commit import TxnOffsetCommitRequest  # noqa: E402

TOPIC = "durable-commits"
ROUNDS = 5
OFFSETS_TOPIC = "__consumer_offsets"
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
MEMBER_ID_REQUIRED = 79
REPLICA_LAG_MS = 3000


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    zookeeper: ZooKeeperServer,  # noqa: F811
) -> Iterator[list[BrokerProcess]]:
    connect = f"{zookeeper.hosts}/pystream-test/{uuid.uuid4().hex[:12]}"
    directory: Path = tmp_path_factory.mktemp("group-durability")
    brokers = start_cluster(
        directory,
        connect,
        {
            "offsets.topic.replication.factor": "3",
            "min.insync.replicas": "2",
            "default.replication.factor": "3",
            "replica.lag.time.max.ms": str(REPLICA_LAG_MS),
            # Leadership moves back to a restarted broker (as Kafka's default does, sooner).
            "auto.leader.rebalance.enable": "true",
            "leader.imbalance.check.interval.seconds": "2",
            "leader.imbalance.per.broker.percentage": "0",
        },
    )
    try:
        create_topic(brokers, TOPIC, 1, 3)
        yield brokers
    finally:
        for broker in brokers:
            broker.close()


def broker_id(broker: BrokerProcess) -> int:
    return int(broker.overrides["broker.id"])


def live(brokers: list[BrokerProcess]) -> list[BrokerProcess]:
    return [b for b in brokers if b.process is not None]


def bootstrap(brokers: list[BrokerProcess]) -> str:
    return ",".join(b.bootstrap for b in live(brokers))


def all_up(brokers: list[BrokerProcess]) -> None:
    """Restart whatever an earlier test left down; until every broker is registered."""
    for broker in brokers:
        if broker.process is None:
            broker.start()
    wait_until(
        lambda: all(len(metadata(b).brokers) == len(brokers) for b in brokers),
        timeout=60,
        what="every broker registered",
    )


def coordinator(brokers: list[BrokerProcess], group: str, other_than: int = -1) -> int:
    """The group's coordinator as the live brokers name it (all agree), once it is not
    ``other_than``."""

    def found() -> tuple[int] | None:
        answers = set()
        for broker in live(brokers):
            try:
                response = find_coordinator(broker, group, KEY_TYPE_GROUP)
            except OSError:
                return None
            if response.error_code != NONE:
                return None
            answers.add(response.node_id)
        if len(answers) == 1 and other_than not in answers:
            return (answers.pop(),)
        return None

    return wait_until(found, timeout=60, what=f"one coordinator for {group} (not {other_than})")[0]


def consumer(brokers: list[BrokerProcess], group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap(brokers),
            "group.id": group,
            "enable.auto.commit": False,
            "socket.timeout.ms": 10_000,
        }
    )


def commit(brokers: list[BrokerProcess], group: str, offset: int) -> None:
    """Commit ``offset`` for the topic's partition 0 synchronously (raises KafkaException)."""
    member = consumer(brokers, group)
    try:
        for tp in member.commit(offsets=[TopicPartition(TOPIC, 0, offset)], asynchronous=False):
            if tp.error is not None:
                raise KafkaException(tp.error)
    finally:
        member.close()


# Errors a commit is retried on while a coordinator moves.
RETRIABLE = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError._TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT,
}


def commit_when_possible(brokers: list[BrokerProcess], group: str, offset: int) -> None:
    """Commit, retrying retriable errors (a coordinator moving) until a deadline."""

    def committed() -> bool:
        try:
            commit(brokers, group, offset)
        except KafkaException as exc:
            if not exc.args[0].retriable() and exc.args[0].code() not in RETRIABLE:
                raise
            return False
        return True

    wait_until(committed, timeout=60, what=f"a commit of {offset} for {group}", interval=0.2)


def read_committed(brokers: list[BrokerProcess], group: str) -> int:
    """The group's committed offset of the partition, read by a new consumer (whichever
    broker coordinates); retries until a read succeeds."""

    def read() -> tuple[int] | None:
        member = consumer(brokers, group)
        try:
            (tp,) = member.committed([TopicPartition(TOPIC, 0)], timeout=10)
        except KafkaException:
            return None
        finally:
            member.close()
        if tp.error is not None:
            return None
        return (tp.offset,)

    return wait_until(read, timeout=60, what=f"a read of {group}'s committed offset")[0]


# What the AdminClient said when it failed (for the assertion messages).
errors: list[str] = []


def admin_view(brokers: list[BrokerProcess], group: str) -> tuple[str, int] | None:
    """(group state, committed offset) from confluent-kafka's AdminClient, or None while it
    errs.

    A new AdminClient per attempt: librdkafka's caches a group's coordinator and sends
    DescribeGroups/OffsetFetch there again after a NOT_COORDINATOR answer (it looks the
    coordinator up again only while the cached broker is down), so one kept across a
    coordinator move would ask the old coordinator forever, whatever the brokers do.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap(brokers)})
    try:
        (description,) = admin.describe_consumer_groups([group], request_timeout=5).values()
        state = description.result(10).state
        wanted = ConsumerGroupTopicPartitions(group, [TopicPartition(TOPIC, 0)])
        (offsets,) = admin.list_consumer_group_offsets([wanted], request_timeout=5).values()
        (tp,) = offsets.result(10).topic_partitions
    except KafkaException as exc:
        errors.append(str(exc))
        return None
    if tp.error is not None:
        errors.append(str(tp.error))
        return None
    return str(state), tp.offset


def kill(brokers: list[BrokerProcess], target: int) -> None:
    by_id(brokers)[target].kill()


def offsets_partition(broker: BrokerProcess, group: str) -> Any:
    """The group's ``__consumer_offsets`` partition as ``broker``'s Metadata describes it."""
    (topic,) = metadata(broker, [OFFSETS_TOPIC]).topics
    index = partition_for(group, len(topic.partitions))
    return next(p for p in topic.partitions if p.partition_index == index)


def preferred_leader_leads(brokers: list[BrokerProcess], group: str) -> int:
    """Until the group's partition is led by its preferred replica, in the ISR with every
    replica (auto.leader.rebalance moves leadership back to a restarted broker); its id."""

    def settled() -> tuple[int] | None:
        state = offsets_partition(live(brokers)[0], group)
        preferred = state.replica_nodes[0]
        if state.leader_id != preferred or len(state.isr_nodes) != len(brokers):
            return None
        return (preferred,)

    return wait_until(
        settled, timeout=60, what=f"the preferred leader leading {group}'s partition"
    )[0]


def served_by_one_coordinator(brokers: list[BrokerProcess], group: str) -> bool:
    """Every live broker names the same coordinator, which answers DescribeGroups for the
    group; every other broker answers NOT_COORDINATOR."""
    named = {find_coordinator(b, group, KEY_TYPE_GROUP).node_id for b in live(brokers)}
    if len(named) != 1:
        return False
    (coordinator_id,) = named
    if coordinator_id < 0:
        return False  # no leader for the group's partition right now
    for broker in live(brokers):
        with broker.wire() as wire:
            (described,) = wire.request(15, 3, DescribeGroupsRequest(groups=[group])).groups
        expected = NONE if broker_id(broker) == coordinator_id else NOT_COORDINATOR
        if described.error_code != expected:
            return False
    return True


def test_commits_survive_sigkills_of_the_coordinator_and_the_group_stays_reachable(
    cluster: list[BrokerProcess],
) -> None:
    """Rounds of: commit, SIGKILL the coordinator as soon as the commit returns, read the
    offset from the next coordinator (it must have it: the commit was answered once the
    ISR had it); restart the killed broker, commit again, let preferred-leader election
    move the coordinator back to it, and within 30 s see the group and its offset through
    confluent-kafka's AdminClient (describe_consumer_groups, list_consumer_group_offsets)
    and through every broker's FindCoordinator and DescribeGroups."""
    brokers = cluster
    all_up(brokers)
    group = "survivor"
    commit_when_possible(brokers, group, 1)
    for round_ in range(ROUNDS):
        offset = 100 * (round_ + 1)
        current = preferred_leader_leads(brokers, group)
        wait_until(lambda: served_by_one_coordinator(brokers, group), timeout=30)
        commit(brokers, group, offset)  # answered once the ISR has it
        kill(brokers, current)
        coordinator(brokers, group, other_than=current)
        assert read_committed(brokers, group) == offset, f"round {round_}"

        by_id(brokers)[current].start()
        commit_when_possible(brokers, group, offset + 1)
        assert preferred_leader_leads(brokers, group) == current
        errors.clear()
        seen = wait_until(
            lambda: admin_view(brokers, group),
            timeout=30,
            what=f"describe_consumer_groups and list_consumer_group_offsets, round {round_}",
            interval=0.5,
        )
        assert seen == ("ConsumerGroupState.EMPTY", offset + 1), (round_, errors[-3:])
        wait_until(
            lambda: served_by_one_coordinator(brokers, group),
            timeout=30,
            what=f"one coordinator serving {group}, round {round_}",
        )


def test_writes_that_cannot_reach_min_insync_replicas_fail_and_change_nothing(
    cluster: list[BrokerProcess],
) -> None:
    """With two of three brokers dead the ISR of the group's partition is the coordinator
    alone, below min.insync.replicas=2.  Kafka's answers to NOT_ENOUGH_REPLICAS, and
    nothing the coordinator serves changes:

    * OffsetCommit (confluent-kafka): COORDINATOR_NOT_AVAILABLE; a new consumer still
      reads the previous committed offset;
    * TxnOffsetCommit: COORDINATOR_NOT_AVAILABLE; no pending transactional offset
      (OffsetFetch with require_stable reads the committed offset, not
      UNSTABLE_OFFSET_COMMIT);
    * SyncGroup of the leader: COORDINATOR_NOT_AVAILABLE, and the group rebalances.
    """
    brokers = cluster
    all_up(brokers)
    group = "under-replicated"
    commit_when_possible(brokers, group, 7)
    keeper = coordinator(brokers, group)
    survivor = by_id(brokers)[keeper]
    partitions = len(metadata(survivor, [OFFSETS_TOPIC]).topics[0].partitions)
    partition = partition_for(group, partitions)
    # A second group on the same partition, for the rebalance.
    rebalancing = next(
        g
        for g in (f"rebalancing-{i}" for i in range(1000))
        if partition_for(g, partitions) == partition
    )
    # A transaction (its coordinator on the same broker) that added the group's offsets.
    transactional_id = next(
        t
        for t in (f"txn-{i}" for i in range(200))
        if find_coordinator(survivor, t, KEY_TYPE_TRANSACTION).node_id == keeper
    )
    with survivor.wire() as wire:
        producer = wire.request(
            22,
            1,
            InitProducerIdRequest(transactional_id=transactional_id, transaction_timeout_ms=15_000),
        )
        assert producer.error_code == NONE
        added = wire.request(
            25,
            1,
            AddOffsetsToTxnRequest(
                transactional_id=transactional_id,
                producer_id=producer.producer_id,
                producer_epoch=producer.producer_epoch,
                group_id=group,
            ),
        )
        assert added.error_code == NONE

    for broker in brokers:
        if broker_id(broker) != keeper:
            broker.kill()
    wait_until(
        lambda: list(offsets_partition(survivor, group).isr_nodes) == [keeper],
        timeout=60,
        what="the ISR shrunk to the coordinator",
    )

    with pytest.raises(KafkaException) as failed:
        commit(brokers, group, 8)
    assert failed.value.args[0].code() == KafkaError.COORDINATOR_NOT_AVAILABLE
    assert read_committed(brokers, group) == 7

    with survivor.wire() as wire:
        response = wire.request(
            28,
            3,
            TxnOffsetCommitRequest(
                transactional_id=transactional_id,
                group_id=group,
                producer_id=producer.producer_id,
                producer_epoch=producer.producer_epoch,
                topics=[
                    TxnOffsetCommitRequest.TxnOffsetCommitRequestTopic(
                        name=TOPIC,
                        partitions=[
                            TxnOffsetCommitRequest.TxnOffsetCommitRequestPartition(
                                partition_index=0, committed_offset=9
                            )
                        ],
                    )
                ],
            ),
        )
        assert response.topics[0].partitions[0].error_code == COORDINATOR_NOT_AVAILABLE
        fetched = wire.request(
            9,
            7,
            OffsetFetchRequest(
                group_id=group,
                topics=[
                    OffsetFetchRequest.OffsetFetchRequestTopic(name=TOPIC, partition_indexes=[0])
                ],
                require_stable=True,
            ),
        )
        (fetched_partition,) = fetched.topics[0].partitions
        assert (fetched_partition.error_code, fetched_partition.committed_offset) == (NONE, 7)

        member = join_group(wire, rebalancing)
        assert member.error_code == NONE and member.leader == member.member_id
        synced = wire.request(
            14,
            3,
            SyncGroupRequest(
                group_id=rebalancing,
                generation_id=member.generation_id,
                member_id=member.member_id,
                assignments=[
                    SyncGroupRequest.SyncGroupRequestAssignment(
                        member_id=member.member_id, assignment=b"\x00\x00"
                    )
                ],
            ),
        )
        assert synced.error_code == COORDINATOR_NOT_AVAILABLE
        (described,) = wire.request(15, 3, DescribeGroupsRequest(groups=[rebalancing])).groups
        assert described.group_state == "PreparingRebalance"

    all_up(brokers)
    # Once the followers are back the group takes commits again.
    commit_when_possible(brokers, group, 10)
    assert read_committed(brokers, group) == 10


def join_group(wire: KafkaWire, group: str) -> Any:
    """A new member joins (JoinGroup v5: a member id first, then the join); the response."""
    member_id = ""
    for _ in range(2):
        response = wire.request(
            11,
            5,
            JoinGroupRequest(
                group_id=group,
                session_timeout_ms=10_000,
                rebalance_timeout_ms=10_000,
                member_id=member_id,
                protocol_type="consumer",
                protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"")],
            ),
        )
        if response.error_code != MEMBER_ID_REQUIRED:
            return response
        member_id = response.member_id
    return response
