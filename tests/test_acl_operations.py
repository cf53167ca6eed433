"""Authorization API by API, as Kafka 3.9's ``KafkaApis`` does it.

One secured broker serves the module: a PLAINTEXT listener (``User:ANONYMOUS``, which no
ACL names: the "user without ACLs" of the table below) and a SASL_PLAINTEXT one with
``admin`` (a super user, who sets everything up), ``alice`` (a few ACLs) and ``bob`` (only
DESCRIBE on one topic).  A second broker without an authorizer shows the
``*_authorized_operations`` fields Kafka answers then: every operation the resource type
supports.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from broker_process import BrokerProcess, KafkaWire, free_ports
from cli_helpers import run
from confluent_kafka import Consumer, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from pystream._core.records import RecordBatchBuilder
from pystream.protocol.messages import add_offsets_to_txn as aot
from pystream.protocol.messages import add_partitions_to_txn as apt
from pystream.protocol.messages import alter_configs as ac
from pystream.protocol.messages import alter_partition_reassignments as apr
from pystream.protocol.messages import alter_user_scram_credentials as auc
from pystream.protocol.messages import controlled_shutdown as cs
from pystream.protocol.messages import create_acls as ca
from pystream.protocol.messages import create_partitions as cp
from pystream.protocol.messages import create_topics as ct
from pystream.protocol.messages import delete_acls as da
from pystream.protocol.messages import delete_groups as dg
from pystream.protocol.messages import delete_records as dr
from pystream.protocol.messages import delete_topics as dt
from pystream.protocol.messages import describe_acls as dacl
from pystream.protocol.messages import describe_cluster as dcl
from pystream.protocol.messages import describe_configs as dc
from pystream.protocol.messages import describe_groups as dgr
from pystream.protocol.messages import describe_log_dirs as dld
from pystream.protocol.messages import describe_producers as dp
from pystream.protocol.messages import describe_transactions as dtx
from pystream.protocol.messages import describe_user_scram_credentials as duc
from pystream.protocol.messages import elect_leaders as el
from pystream.protocol.messages import end_txn as et
from pystream.protocol.messages import fetch as fe
from pystream.protocol.messages import find_coordinator as fc
from pystream.protocol.messages import heartbeat as hb
from pystream.protocol.messages import incremental_alter_configs as iac
from pystream.protocol.messages import init_producer_id as ip
from pystream.protocol.messages import join_group as jg
from pystream.protocol.messages import leave_group as lg
from pystream.protocol.messages import list_groups as lgr
from pystream.protocol.messages import list_offsets as lo
from pystream.protocol.messages import list_partition_reassignments as lpr
from pystream.protocol.messages import list_transactions as ltx
from pystream.protocol.messages import metadata as md
from pystream.protocol.messages import offset_commit as oc
from pystream.protocol.messages import offset_delete as od
from pystream.protocol.messages import offset_fetch as of
from pystream.protocol.messages import offset_for_leader_epoch as ofle
from pystream.protocol.messages import produce as pr
from pystream.protocol.messages import sync_group as sg
from pystream.protocol.messages import txn_offset_commit as toc
from pystream.protocol.messages import write_txn_markers as wtm
from pystream.protocol.messages.sasl_authenticate import SaslAuthenticateRequest
from pystream.protocol.messages.sasl_handshake import SaslHandshakeRequest

TIMEOUT = 30.0
AUTHORIZER = "pystream.security.AclAuthorizer"
ADMIN, ALICE, BOB = (
    ("admin", "admin-Secret-1"),
    ("alice", "alice-Secret-1"),
    ("bob", "bob-Secret-1"),
)
TOPIC, OTHER_TOPIC, GROUP, TXN = "ops-topic", "ops-other", "ops-group", "ops-txn"
NOT_REQUESTED = -(2**31)
# Kafka's error codes.
NONE, TOPIC_DENIED, GROUP_DENIED, CLUSTER_DENIED, TXN_DENIED = 0, 29, 30, 31, 53
INVALID_REQUEST = 42
# The operations each resource type supports (Kafka's AclEntry.supportedOperations).
ALL_TOPIC_OPS = {
    AclOperation.READ,
    AclOperation.WRITE,
    AclOperation.CREATE,
    AclOperation.DESCRIBE,
    AclOperation.DELETE,
    AclOperation.ALTER,
    AclOperation.DESCRIBE_CONFIGS,
    AclOperation.ALTER_CONFIGS,
}
ALL_GROUP_OPS = {AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE}
ALL_GROUP_OPS |= {AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS}
ALL_CLUSTER_OPS = {
    AclOperation.CREATE,
    AclOperation.CLUSTER_ACTION,
    AclOperation.DESCRIBE_CONFIGS,
    AclOperation.ALTER_CONFIGS,
    AclOperation.IDEMPOTENT_WRITE,
    AclOperation.ALTER,
    AclOperation.DESCRIBE,
}


def _allow(rtype: ResourceType, name: str, user: str, operation: AclOperation) -> AclBinding:
    return AclBinding(
        rtype, name, ResourcePatternType.LITERAL, f"User:{user}", "*", operation,
        AclPermissionType.ALLOW,
    )  # fmt: skip


# alice: READ and ALTER_CONFIGS on the topic (READ implies DESCRIBE, ALTER_CONFIGS implies
# DESCRIBE_CONFIGS), READ and DELETE on the group, DESCRIBE and IDEMPOTENT_WRITE on the
# cluster.  bob: DESCRIBE on the topic, nothing on the cluster.
ACLS = [
    _allow(ResourceType.TOPIC, TOPIC, "alice", AclOperation.READ),
    _allow(ResourceType.TOPIC, TOPIC, "alice", AclOperation.ALTER_CONFIGS),
    _allow(ResourceType.GROUP, GROUP, "alice", AclOperation.READ),
    _allow(ResourceType.GROUP, GROUP, "alice", AclOperation.DELETE),
    _allow(ResourceType.BROKER, "kafka-cluster", "alice", AclOperation.DESCRIBE),
    _allow(ResourceType.BROKER, "kafka-cluster", "alice", AclOperation.IDEMPOTENT_WRITE),
    _allow(ResourceType.TOPIC, TOPIC, "bob", AclOperation.DESCRIBE),
    _allow(ResourceType.TOPIC, "ops-by-bob", "bob", AclOperation.CREATE),
    _allow(ResourceType.TOPIC, "ops-missing", "bob", AclOperation.DESCRIBE),
]
ALICE_TOPIC_OPS = {
    AclOperation.READ,
    AclOperation.DESCRIBE,
    AclOperation.ALTER_CONFIGS,
    AclOperation.DESCRIBE_CONFIGS,
}
ALICE_GROUP_OPS = {AclOperation.READ, AclOperation.DELETE, AclOperation.DESCRIBE}
ALICE_CLUSTER_OPS = {AclOperation.DESCRIBE, AclOperation.IDEMPOTENT_WRITE}


@dataclass
class Secured:
    process: BrokerProcess
    sasl_port: int

    def sasl(self, user: tuple[str, str], **extra: Any) -> dict[str, Any]:
        return {
            "bootstrap.servers": f"127.0.0.1:{self.sasl_port}",
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "SCRAM-SHA-256",
            "sasl.username": user[0],
            "sasl.password": user[1],
            **extra,
        }

    def admin(self, user: tuple[str, str]) -> AdminClient:
        return AdminClient(self.sasl(user))

    def sasl_wire(self, user: tuple[str, str]) -> KafkaWire:
        """A raw connection logged in as ``user`` (SASL/PLAIN)."""
        wire = KafkaWire(("127.0.0.1", self.sasl_port), TIMEOUT)
        assert wire.request(17, 1, SaslHandshakeRequest(mechanism="PLAIN")).error_code == NONE
        token = f"\0{user[0]}\0{user[1]}".encode()
        assert wire.request(36, 2, SaslAuthenticateRequest(auth_bytes=token)).error_code == NONE
        return wire


def _commit_offset(config: dict[str, Any], group: str, topic: str) -> None:
    """Make ``group`` exist (Empty, with one committed offset)."""
    consumer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    finally:
        consumer.close()


def _create_topics(admin: AdminClient, *names: str) -> None:
    for future in admin.create_topics([NewTopic(n, 1, 1) for n in names]).values():
        future.result(TIMEOUT)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    plain_port, sasl_port = free_ports(2)
    process = BrokerProcess(
        tmp_path_factory.mktemp("acl-ops") / "broker",
        {
            "listeners": f"PLAINTEXT://127.0.0.1:{plain_port},"
            f"SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
            "authorizer.class.name": AUTHORIZER,
            "super.users": "User:admin",
            # Metadata then creates no topic: no CREATE check either (see the last test).
            "auto.create.topics.enable": "false",
        },
    )
    for user, password in (ADMIN, ALICE, BOB):
        run(
            "users", "add", user, "--password", password, "--mechanism", "SCRAM-SHA-256",
            "--log-dirs", str(process.log_dir),
        )  # fmt: skip
    try:
        process.start()
        broker = Secured(process, sasl_port)
        admin = broker.admin(ADMIN)
        _create_topics(admin, TOPIC, OTHER_TOPIC)
        for future in admin.create_acls(ACLS).values():
            future.result(TIMEOUT)
        _commit_offset(broker.sasl(ADMIN), GROUP, TOPIC)
        # A transaction the admin may list and ANONYMOUS may not.
        producer = Producer(broker.sasl(ADMIN, **{"transactional.id": TXN}))
        producer.init_transactions(TIMEOUT)
        yield broker
    finally:
        process.close()


@pytest.fixture(scope="module")
def open_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """No authorizer: every client may do everything."""
    process = BrokerProcess(tmp_path_factory.mktemp("acl-ops-open") / "broker")
    try:
        process.start()
        _create_topics(AdminClient({"bootstrap.servers": process.bootstrap}), TOPIC)
        _commit_offset({"bootstrap.servers": process.bootstrap}, GROUP, TOPIC)
        yield process
    finally:
        process.close()


# --- authorized operations ------------------------------------------------------------------


def _described(admin: AdminClient) -> tuple[Any, Any, Any]:
    """(cluster, topic, group) operations as confluent-kafka's admin describes them."""
    cluster = admin.describe_cluster(include_authorized_operations=True).result(TIMEOUT)
    topics = admin.describe_topics(TopicCollection([TOPIC]), include_authorized_operations=True)
    topic = topics[TOPIC].result(TIMEOUT)
    groups = admin.describe_consumer_groups([GROUP], include_authorized_operations=True)
    group = groups[GROUP].result(TIMEOUT)
    return cluster.authorized_operations, topic.authorized_operations, group.authorized_operations


def test_authorized_operations_of_a_user_with_some_acls(secured: Secured) -> None:
    cluster, topic, group = _described(secured.admin(ALICE))
    assert set(cluster) == ALICE_CLUSTER_OPS
    assert set(topic) == ALICE_TOPIC_OPS
    assert set(group) == ALICE_GROUP_OPS
    # Not asked for: none.
    admin = secured.admin(ALICE)
    assert admin.describe_cluster().result(TIMEOUT).authorized_operations is None
    topics = admin.describe_topics(TopicCollection([TOPIC]))
    assert topics[TOPIC].result(TIMEOUT).authorized_operations is None


def test_without_describe_on_the_cluster_its_operations_are_none(secured: Secured) -> None:
    """bob may not describe the cluster: Kafka answers 0, whatever else he may do."""
    admin = secured.admin(BOB)
    cluster = admin.describe_cluster(include_authorized_operations=True).result(TIMEOUT)
    assert not cluster.authorized_operations
    topics = admin.describe_topics(TopicCollection([TOPIC]), include_authorized_operations=True)
    assert set(topics[TOPIC].result(TIMEOUT).authorized_operations) == {AclOperation.DESCRIBE}


def test_without_an_authorizer_every_supported_operation_is_authorized(
    open_broker: BrokerProcess,
) -> None:
    cluster, topic, group = _described(AdminClient({"bootstrap.servers": open_broker.bootstrap}))
    assert set(cluster) == ALL_CLUSTER_OPS
    assert set(topic) == ALL_TOPIC_OPS
    assert set(group) == ALL_GROUP_OPS


def _bits(operations: set[AclOperation]) -> int:
    return sum(1 << op.value for op in operations)


def test_metadata_v10_carries_cluster_and_topic_operations(secured: Secured) -> None:
    """Metadata v8-10 (which librdkafka does not ask this way): the bitfields when asked;
    a topic refused keeps the default, as does everything when not asked."""
    topics = [md.MetadataRequest.MetadataRequestTopic(name=n) for n in (TOPIC, OTHER_TOPIC)]
    asked = md.MetadataRequest(
        topics=topics,
        allow_auto_topic_creation=False,
        include_cluster_authorized_operations=True,
        include_topic_authorized_operations=True,
    )
    with secured.sasl_wire(ALICE) as wire:
        answer = wire.request(3, 10, asked)
        plain = wire.request(3, 10, md.MetadataRequest(topics=topics))
    assert answer.cluster_authorized_operations == _bits(ALICE_CLUSTER_OPS)
    by_name = {t.name: t for t in answer.topics}
    assert by_name[TOPIC].topic_authorized_operations == _bits(ALICE_TOPIC_OPS)
    assert by_name[OTHER_TOPIC].error_code == TOPIC_DENIED
    assert by_name[OTHER_TOPIC].topic_authorized_operations == NOT_REQUESTED
    assert plain.cluster_authorized_operations == NOT_REQUESTED
    assert {t.topic_authorized_operations for t in plain.topics} == {NOT_REQUESTED}


# --- the table: every API, refused as Kafka refuses it ------------------------------------


def _records() -> bytes:
    builder = RecordBatchBuilder()
    builder.append(None, b"k", b"v")
    return bytes(builder.build())


@dataclass(frozen=True)
class Check:
    """One API as a principal without ACLs sends it: the request, and where in the answer
    the error is (``code``: answer -> error code)."""

    api_key: int
    version: int
    request: Callable[[], Any]
    code: Callable[[Any], object]
    expected: object


def _first(items: list[Any]) -> Any:
    assert items, "the answer names nothing"
    return items[0]


P = TOPIC  # the topic every check names
# Config resource types: (what, ConfigResource.Type id, name, the error Kafka answers).
CONFIG_RESOURCES = (
    ("topic", 2, P, TOPIC_DENIED),
    ("on the cluster for a broker", 4, "0", CLUSTER_DENIED),
    ("on the cluster for a broker logger", 8, "0", CLUSTER_DENIED),
    ("group", 32, GROUP, GROUP_DENIED),
)

# Legacy AlterConfigs has no broker-logger or group configs: INVALID_REQUEST, unauthorized.
LEGACY_ALTER_RESOURCES = (
    *CONFIG_RESOURCES[:2],
    *((what, rtype, name, INVALID_REQUEST) for what, rtype, name, _ in CONFIG_RESOURCES[2:]),
)


def _config_checks(
    title: str,
    api_key: int,
    version: int,
    request: Callable[[int, str], Any],
    results: Callable[[Any], list[Any]],
    resources: tuple[tuple[str, int, str, int], ...] = CONFIG_RESOURCES,
) -> dict[str, Check]:
    """One check per config resource type of a configs API."""
    return {
        f"{title} {what}": Check(
            api_key,
            version,
            lambda rtype=rtype, name=name: request(rtype, name),
            lambda r: _first(results(r)).error_code,
            code,
        )
        for what, rtype, name, code in resources
    }


def _elect_leaders() -> Any:
    return el.ElectLeadersRequest(
        election_type=0,
        timeout_ms=5000,
        topic_partitions=[el.ElectLeadersRequest.TopicPartitions(topic=P, partitions=[0])],
    )


def _one(topic_cls: Any, partition_cls: Any, topic: str = P, **partition: Any) -> list[Any]:
    """The nested topic -> partitions list most requests carry, for partition 0 of one
    topic (the field names differ per API: the topic's name is its first field, the
    partitions its first list)."""
    name_field = topic_cls.FIELDS[0].name
    list_field = next(f.name for f in topic_cls.FIELDS if f.type.startswith("[]"))
    return [topic_cls(**{name_field: topic, list_field: [partition_cls(**partition)]})]


def _partition_error(r: Any, topics: str = "topics", partitions: str = "partitions") -> int:
    return _first(getattr(_first(getattr(r, topics)), partitions)).error_code


Pr, Fetch, Lo = pr.ProduceRequest, fe.FetchRequest, lo.ListOffsetsRequest
Oc, Dr, Ofle = oc.OffsetCommitRequest, dr.DeleteRecordsRequest, ofle.OffsetForLeaderEpochRequest
Apt, Toc, Od = apt.AddPartitionsToTxnRequest, toc.TxnOffsetCommitRequest, od.OffsetDeleteRequest
Apr, Wtm = apr.AlterPartitionReassignmentsRequest, wtm.WriteTxnMarkersRequest
ANY_ACL = dict(
    resource_type_filter=1,
    resource_name_filter=None,
    pattern_type_filter=1,
    principal_filter=None,
    host_filter=None,
    operation=1,
    permission_type=1,
)


def _produce(transactional_id: str | None) -> Any:
    return Pr(
        transactional_id=transactional_id,
        acks=-1,
        timeout_ms=5000,
        topic_data=_one(Pr.TopicProduceData, Pr.PartitionProduceData, index=0, records=_records()),
    )


def _produce_error(r: Any) -> int:
    return _partition_error(r, "responses", "partition_responses")


TABLE: dict[str, Check] = {
    "Produce(0) WRITE topic": Check(0, 9, lambda: _produce(None), _produce_error, TOPIC_DENIED),
    "Produce(0) WRITE transactional id": Check(
        0, 9, lambda: _produce(TXN), _produce_error, TXN_DENIED,
    ),
    "Fetch(1) READ topic": Check(
        1, 12,
        lambda: Fetch(
            replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=1 << 20, isolation_level=0,
            session_id=0, session_epoch=-1, forgotten_topics_data=[], rack_id="",
            topics=_one(Fetch.FetchTopic, Fetch.FetchPartition, partition=0, fetch_offset=0,
                        partition_max_bytes=1 << 20),
        ),
        lambda r: _partition_error(r, "responses"), TOPIC_DENIED,
    ),
    "ListOffsets(2) DESCRIBE topic": Check(
        2, 7,
        lambda: Lo(replica_id=-1, topics=_one(
            Lo.ListOffsetsTopic, Lo.ListOffsetsPartition, partition_index=0, timestamp=-1)),
        _partition_error, TOPIC_DENIED,
    ),
    "Metadata(3) DESCRIBE topic": Check(
        3, 12,
        lambda: md.MetadataRequest(topics=[md.MetadataRequest.MetadataRequestTopic(name=P)],
                                   allow_auto_topic_creation=False),
        lambda r: _first(r.topics).error_code, TOPIC_DENIED,
    ),
    "ControlledShutdown(7) CLUSTER_ACTION": Check(
        7, 3, lambda: cs.ControlledShutdownRequest(broker_id=0, broker_epoch=-1),
        lambda r: r.error_code, CLUSTER_DENIED,
    ),
    "OffsetCommit(8) READ group": Check(
        8, 8,
        lambda: Oc(group_id=GROUP, generation_id_or_member_epoch=-1, member_id="", topics=_one(
            Oc.OffsetCommitRequestTopic, Oc.OffsetCommitRequestPartition, partition_index=0,
            committed_offset=0)),
        _partition_error, GROUP_DENIED,
    ),
    "OffsetFetch(9) DESCRIBE group": Check(
        9, 7, lambda: of.OffsetFetchRequest(group_id=GROUP, topics=None),
        lambda r: r.error_code, GROUP_DENIED,
    ),
    "FindCoordinator(10) DESCRIBE group": Check(
        10, 3, lambda: fc.FindCoordinatorRequest(key=GROUP, key_type=0),
        lambda r: r.error_code, GROUP_DENIED,
    ),
    "FindCoordinator(10) DESCRIBE transactional id": Check(
        10, 3, lambda: fc.FindCoordinatorRequest(key=TXN, key_type=1),
        lambda r: r.error_code, TXN_DENIED,
    ),
    "JoinGroup(11) READ group": Check(
        11, 5,
        lambda: jg.JoinGroupRequest(
            group_id=GROUP, session_timeout_ms=10000, rebalance_timeout_ms=10000, member_id="",
            protocol_type="consumer",
            protocols=[jg.JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"")],
        ),
        lambda r: r.error_code, GROUP_DENIED,
    ),
    "Heartbeat(12) READ group": Check(
        12, 4, lambda: hb.HeartbeatRequest(group_id=GROUP, generation_id=1, member_id="m"),
        lambda r: r.error_code, GROUP_DENIED,
    ),
    "LeaveGroup(13) READ group": Check(
        13, 4,
        lambda: lg.LeaveGroupRequest(
            group_id=GROUP, members=[lg.LeaveGroupRequest.MemberIdentity(member_id="m")]),
        lambda r: r.error_code, GROUP_DENIED,
    ),
    "SyncGroup(14) READ group": Check(
        14, 5,
        lambda: sg.SyncGroupRequest(
            group_id=GROUP, generation_id=1, member_id="m", protocol_type="consumer",
            protocol_name="range", assignments=[]),
        lambda r: r.error_code, GROUP_DENIED,
    ),
    "DescribeGroups(15) DESCRIBE group": Check(
        15, 5,
        lambda: dgr.DescribeGroupsRequest(groups=[GROUP], include_authorized_operations=True),
        lambda r: _first(r.groups).error_code, GROUP_DENIED,
    ),
    "CreateTopics(19) CREATE cluster or topic": Check(
        19, 7,
        lambda: ct.CreateTopicsRequest(timeout_ms=5000, topics=[
            ct.CreateTopicsRequest.CreatableTopic(
                name="ops-new", num_partitions=1, replication_factor=1, assignments=[],
                configs=[])]),
        lambda r: _first(r.topics).error_code, TOPIC_DENIED,
    ),
    "DeleteTopics(20) DELETE topic": Check(
        20, 6,
        lambda: dt.DeleteTopicsRequest(
            topics=[dt.DeleteTopicsRequest.DeleteTopicState(name=P)], timeout_ms=5000),
        lambda r: _first(r.responses).error_code, TOPIC_DENIED,
    ),
    "DeleteRecords(21) DELETE topic": Check(
        21, 2,
        lambda: Dr(timeout_ms=5000, topics=_one(
            Dr.DeleteRecordsTopic, Dr.DeleteRecordsPartition, partition_index=0, offset=0)),
        _partition_error, TOPIC_DENIED,
    ),
    "InitProducerId(22) WRITE transactional id": Check(
        22, 4, lambda: ip.InitProducerIdRequest(transactional_id=TXN, transaction_timeout_ms=60000),
        lambda r: r.error_code, TXN_DENIED,
    ),
    "InitProducerId(22) IDEMPOTENT_WRITE cluster (or WRITE on a topic)": Check(
        22, 4,
        lambda: ip.InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60000),
        lambda r: r.error_code, CLUSTER_DENIED,
    ),
    "OffsetForLeaderEpoch(23) CLUSTER_ACTION or DESCRIBE topic, as a follower too": Check(
        23, 4,
        lambda: Ofle(replica_id=1, topics=_one(
            Ofle.OffsetForLeaderTopic, Ofle.OffsetForLeaderPartition, partition=0,
            current_leader_epoch=-1, leader_epoch=0)),
        _partition_error, TOPIC_DENIED,
    ),
    "AddPartitionsToTxn(24) WRITE transactional id": Check(
        24, 3,
        lambda: Apt(
            v3_and_below_transactional_id=TXN, v3_and_below_producer_id=1,
            v3_and_below_producer_epoch=0,
            v3_and_below_topics=[Apt.AddPartitionsToTxnTopic(name=P, partitions=[0])],
        ),
        lambda r: _first(_first(r.results_by_topic_v3_and_below).results_by_partition)
        .partition_error_code,
        TXN_DENIED,
    ),
    "AddOffsetsToTxn(25) WRITE transactional id": Check(
        25, 3,
        lambda: aot.AddOffsetsToTxnRequest(
            transactional_id=TXN, producer_id=1, producer_epoch=0, group_id=GROUP),
        lambda r: r.error_code, TXN_DENIED,
    ),
    "EndTxn(26) WRITE transactional id": Check(
        26, 3,
        lambda: et.EndTxnRequest(
            transactional_id=TXN, producer_id=1, producer_epoch=0, committed=True),
        lambda r: r.error_code, TXN_DENIED,
    ),
    "WriteTxnMarkers(27) CLUSTER_ACTION": Check(
        27, 1,
        lambda: Wtm(markers=[Wtm.WritableTxnMarker(
            producer_id=1, producer_epoch=0, transaction_result=True, coordinator_epoch=0,
            topics=[Wtm.WritableTxnMarkerTopic(name=P, partition_indexes=[0])])]),
        lambda r: _partition_error(_first(r.markers)), CLUSTER_DENIED,
    ),
    "TxnOffsetCommit(28) WRITE transactional id": Check(
        28, 3,
        lambda: Toc(transactional_id=TXN, group_id=GROUP, producer_id=1, producer_epoch=0,
                    topics=_one(Toc.TxnOffsetCommitRequestTopic,
                                Toc.TxnOffsetCommitRequestPartition,
                                partition_index=0, committed_offset=0)),
        _partition_error, TXN_DENIED,
    ),
    "DescribeAcls(29) DESCRIBE cluster": Check(
        29, 3, lambda: dacl.DescribeAclsRequest(**ANY_ACL),
        lambda r: r.error_code, CLUSTER_DENIED,
    ),
    "CreateAcls(30) ALTER cluster": Check(
        30, 3,
        lambda: ca.CreateAclsRequest(creations=[ca.CreateAclsRequest.AclCreation(
            resource_type=2, resource_name=P, resource_pattern_type=3,
            principal="User:ANONYMOUS", host="*", operation=3, permission_type=3)]),
        lambda r: _first(r.results).error_code, CLUSTER_DENIED,
    ),
    "DeleteAcls(31) ALTER cluster": Check(
        31, 3,
        lambda: da.DeleteAclsRequest(filters=[da.DeleteAclsRequest.DeleteAclsFilter(**ANY_ACL)]),
        lambda r: _first(r.filter_results).error_code, CLUSTER_DENIED,
    ),
    **_config_checks(
        "DescribeConfigs(32) DESCRIBE_CONFIGS", 32, 4,
        lambda rtype, name: dc.DescribeConfigsRequest(resources=[
            dc.DescribeConfigsRequest.DescribeConfigsResource(
                resource_type=rtype, resource_name=name, configuration_keys=None)]),
        lambda r: r.results,
    ),
    **_config_checks(
        "AlterConfigs(33) ALTER_CONFIGS", 33, 2,
        lambda rtype, name: ac.AlterConfigsRequest(validate_only=True, resources=[
            ac.AlterConfigsRequest.AlterConfigsResource(
                resource_type=rtype, resource_name=name, configs=[])]),
        lambda r: r.responses,
        LEGACY_ALTER_RESOURCES,
    ),
    "DescribeLogDirs(35) DESCRIBE cluster": Check(
        35, 4, lambda: dld.DescribeLogDirsRequest(topics=None),
        lambda r: r.error_code, CLUSTER_DENIED,
    ),
    "CreatePartitions(37) ALTER topic": Check(
        37, 3,
        lambda: cp.CreatePartitionsRequest(
            topics=[cp.CreatePartitionsRequest.CreatePartitionsTopic(
                name=P, count=2, assignments=None)],
            timeout_ms=5000, validate_only=True),
        lambda r: _first(r.results).error_code, TOPIC_DENIED,
    ),
    "DeleteGroups(42) DELETE group": Check(
        42, 2, lambda: dg.DeleteGroupsRequest(groups_names=[GROUP]),
        lambda r: _first(r.results).error_code, GROUP_DENIED,
    ),
    "ElectLeaders(43) ALTER cluster (top level)": Check(
        43, 2, _elect_leaders, lambda r: r.error_code, CLUSTER_DENIED,
    ),
    "ElectLeaders(43) ALTER cluster (each partition)": Check(
        43, 2, _elect_leaders,
        lambda r: _partition_error(r, "replica_election_results", "partition_result"),
        CLUSTER_DENIED,
    ),
    **_config_checks(
        "IncrementalAlterConfigs(44) ALTER_CONFIGS", 44, 1,
        lambda rtype, name: iac.IncrementalAlterConfigsRequest(validate_only=True, resources=[
            iac.IncrementalAlterConfigsRequest.AlterConfigsResource(
                resource_type=rtype, resource_name=name, configs=[])]),
        lambda r: r.responses,
    ),
    "AlterPartitionReassignments(45) ALTER cluster": Check(
        45, 0,
        lambda: Apr(timeout_ms=5000, topics=_one(
            Apr.ReassignableTopic, Apr.ReassignablePartition, partition_index=0, replicas=[0])),
        lambda r: r.error_code, CLUSTER_DENIED,
    ),
    "ListPartitionReassignments(46) DESCRIBE cluster": Check(
        46, 0, lambda: lpr.ListPartitionReassignmentsRequest(timeout_ms=5000, topics=None),
        lambda r: r.error_code, CLUSTER_DENIED,
    ),
    "OffsetDelete(47) DELETE group": Check(
        47, 0,
        lambda: Od(group_id=GROUP, topics=_one(
            Od.OffsetDeleteRequestTopic, Od.OffsetDeleteRequestPartition, partition_index=0)),
        lambda r: r.error_code, GROUP_DENIED,
    ),
    "DescribeUserScramCredentials(50) DESCRIBE cluster": Check(
        50, 0, lambda: duc.DescribeUserScramCredentialsRequest(users=None),
        lambda r: r.error_code, CLUSTER_DENIED,
    ),
    "AlterUserScramCredentials(51) ALTER cluster": Check(
        51, 0,
        lambda: auc.AlterUserScramCredentialsRequest(upsertions=[], deletions=[
            auc.AlterUserScramCredentialsRequest.ScramCredentialDeletion(name="bob", mechanism=1)]),
        lambda r: _first(r.results).error_code, CLUSTER_DENIED,
    ),
    "DescribeCluster(60) no check; operations 0 without DESCRIBE cluster": Check(
        60, 1, lambda: dcl.DescribeClusterRequest(include_cluster_authorized_operations=True),
        lambda r: (r.error_code, r.cluster_authorized_operations), (NONE, 0),
    ),
    "DescribeProducers(61) READ topic": Check(
        61, 0,
        lambda: dp.DescribeProducersRequest(
            topics=[dp.DescribeProducersRequest.TopicRequest(name=P, partition_indexes=[0])]),
        _partition_error, TOPIC_DENIED,
    ),
    "DescribeTransactions(65) DESCRIBE transactional id": Check(
        65, 0, lambda: dtx.DescribeTransactionsRequest(transactional_ids=[TXN]),
        lambda r: _first(r.transaction_states).error_code, TXN_DENIED,
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def anonymous(secured: Secured) -> Iterator[KafkaWire]:
    """One raw PLAINTEXT connection: ``User:ANONYMOUS``, whom no ACL names."""
    with secured.process.wire(TIMEOUT) as wire:
        yield wire


@pytest.mark.parametrize("name", list(TABLE))
def test_a_principal_without_acls_is_refused_as_kafka_refuses_it(
    anonymous: KafkaWire, name: str
) -> None:
    check = TABLE[name]
    answer = anonymous.request(check.api_key, check.version, check.request())
    assert check.code(answer) == check.expected


def test_listings_leave_out_what_the_principal_may_not_describe(
    secured: Secured, anonymous: KafkaWire
) -> None:
    """ListGroups (without DESCRIBE on the cluster) and ListTransactions answer no error,
    only the groups / transactional ids the principal may describe: none, for ANONYMOUS;
    the admin sees them."""
    groups = anonymous.request(16, 4, lgr.ListGroupsRequest(states_filter=[]))
    transactions = ltx.ListTransactionsRequest(state_filters=[], producer_id_filters=[])
    listed = anonymous.request(66, 0, transactions)
    assert (groups.error_code, groups.groups) == (NONE, [])
    assert (listed.error_code, listed.transaction_states) == (NONE, [])
    with secured.sasl_wire(ADMIN) as wire:
        groups = wire.request(16, 4, lgr.ListGroupsRequest(states_filter=[]))
        listed = wire.request(66, 0, transactions)
    assert GROUP in {g.group_id for g in groups.groups}
    assert TXN in {t.transactional_id for t in listed.transaction_states}


def test_a_follower_with_cluster_action_needs_no_topic_acl(secured: Secured) -> None:
    """OffsetForLeaderEpoch as Kafka checks it: CLUSTER_ACTION on the cluster allows every
    topic, whatever replica_id says (the admin is a super user; alice has neither)."""
    request = TABLE["OffsetForLeaderEpoch(23) CLUSTER_ACTION or DESCRIBE topic, as a follower too"]
    with secured.sasl_wire(ADMIN) as wire:
        answer = wire.request(23, 4, request.request())
    assert request.code(answer) == NONE
    unique = f"ops-{uuid.uuid4().hex[:6]}"
    with secured.sasl_wire(ALICE) as wire:
        answer = wire.request(23, 4, Ofle(replica_id=1, topics=[Ofle.OffsetForLeaderTopic(
            topic=unique, partitions=[Ofle.OffsetForLeaderPartition(
                partition=0, current_leader_epoch=-1, leader_epoch=0)])]))  # fmt: skip
    assert request.code(answer) == TOPIC_DENIED


def test_create_topics_shows_configs_only_to_who_may_describe_them(secured: Secured) -> None:
    """KIP-525 as Kafka checks it: bob may create the topic but not describe its configs,
    so the answer has no configs, counts or id, and TOPIC_AUTHORIZATION_FAILED as the
    topic_config_error_code; the admin's answer has them."""

    def create(name: str, validate_only: bool) -> Any:
        return ct.CreateTopicsRequest(
            timeout_ms=5000, validate_only=validate_only, topics=[
                ct.CreateTopicsRequest.CreatableTopic(
                    name=name, num_partitions=2, replication_factor=1, assignments=[],
                    configs=[])])  # fmt: skip

    with secured.sasl_wire(BOB) as wire:
        [bobs] = wire.request(19, 7, create("ops-by-bob", False)).topics
    assert (bobs.error_code, bobs.topic_config_error_code) == (NONE, TOPIC_DENIED)
    assert (bobs.num_partitions, bobs.replication_factor, bobs.configs) == (-1, -1, [])
    assert bobs.topic_id == uuid.UUID(int=0)
    with secured.sasl_wire(ADMIN) as wire:
        [admins] = wire.request(19, 7, create("ops-by-admin", True)).topics
    assert (admins.error_code, admins.topic_config_error_code) == (NONE, NONE)
    assert (admins.num_partitions, admins.replication_factor) == (2, 1)
    assert "retention.ms" in {c.name for c in admins.configs}


def test_delete_topics_by_id_names_the_topic_only_to_who_may_describe_it(
    secured: Secured, anonymous: KafkaWire
) -> None:
    """Both may not delete it (TOPIC_AUTHORIZATION_FAILED); bob, who may describe it, is
    told its name, ANONYMOUS is not (as Kafka's handleDeleteTopicsRequest)."""
    metadata = md.MetadataRequest(topics=[md.MetadataRequest.MetadataRequestTopic(name=TOPIC)])
    with secured.sasl_wire(ADMIN) as wire:
        topic_id = _first(wire.request(3, 12, metadata).topics).topic_id
    by_id = dt.DeleteTopicsRequest(
        topics=[dt.DeleteTopicsRequest.DeleteTopicState(name=None, topic_id=topic_id)],
        timeout_ms=5000,
    )
    with secured.sasl_wire(BOB) as wire:
        [bobs] = wire.request(20, 6, by_id).responses
    [anonymous_result] = anonymous.request(20, 6, by_id).responses
    assert (bobs.error_code, bobs.name, bobs.topic_id) == (TOPIC_DENIED, TOPIC, topic_id)
    assert (anonymous_result.error_code, anonymous_result.name) == (TOPIC_DENIED, None)
    assert anonymous_result.topic_id == topic_id


def test_metadata_checks_create_only_when_the_broker_would_create(secured: Secured) -> None:
    """auto.create.topics.enable=false: a missing topic the principal may describe is
    UNKNOWN_TOPIC_OR_PARTITION even when the request allows auto-creation and the principal
    may not create it (Kafka checks CREATE only when it would create the topic)."""
    request = md.MetadataRequest(
        topics=[md.MetadataRequest.MetadataRequestTopic(name="ops-missing")],
        allow_auto_topic_creation=True,
    )
    with secured.sasl_wire(BOB) as wire:
        [missing] = wire.request(3, 12, request).topics
    assert missing.error_code == 3  # UNKNOWN_TOPIC_OR_PARTITION
