"""ACL authorization end to end: a real broker, confluent-kafka and kafka-python clients.

Every connection is ``User:ANONYMOUS`` on PLAINTEXT listeners (until SASL lands), so
the ACLs below name ``User:ANONYMOUS`` or ``User:*``.  The secured broker is started
once with ``super.users=User:ANONYMOUS`` to grant ANONYMOUS the cluster rights an
operator has (create/describe ACLs and topics), then restarted without super users:
its ACLs survived the restart, and from then on every check is the authorizer's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from admin_helpers import CK_ANY_ACL, ck_error
from broker_process import BrokerProcess
from cli_helpers import run
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from waiting import wait_until

from pystream.protocol.messages import controlled_shutdown as cs
from pystream.protocol.messages import create_partitions as cp
from pystream.protocol.messages import delete_groups as dg
from pystream.protocol.messages import delete_records as dr
from pystream.protocol.messages import delete_topics as dt
from pystream.protocol.messages import describe_configs as dc
from pystream.protocol.messages import describe_groups as dgr
from pystream.protocol.messages import describe_producers as dp
from pystream.protocol.messages import end_txn as et
from pystream.protocol.messages import find_coordinator as fc
from pystream.protocol.messages import init_producer_id as ip
from pystream.protocol.messages import list_offsets as lo
from pystream.protocol.messages import offset_fetch as of
from pystream.protocol.messages import offset_for_leader_epoch as ofle
from pystream.protocol.messages import write_txn_markers as wtm
from pystream.protocol.messages.api_versions import ApiVersionsRequest
from pystream.protocol.messages.create_acls import CreateAclsRequest
from pystream.protocol.messages.delete_acls import DeleteAclsRequest
from pystream.protocol.messages.describe_acls import DescribeAclsRequest

ANON = "User:ANONYMOUS"
AUTHORIZER = "pystream.security.AclAuthorizer"
TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
SECURITY_DISABLED = 54
ANY_FILTER = CK_ANY_ACL

# DescribeAcls / DeleteAcls filter fields matching every ACL (ANY = 1 everywhere).
ANY_WIRE_FILTER = {
    "resource_type_filter": 1,
    "resource_name_filter": None,
    "pattern_type_filter": 1,
    "principal_filter": None,
    "host_filter": None,
    "operation": 1,
    "permission_type": 1,
}


def binding(
    rtype: ResourceType,
    name: str,
    operation: AclOperation,
    permission: AclPermissionType = AclPermissionType.ALLOW,
    pattern: ResourcePatternType = ResourcePatternType.LITERAL,
    principal: str = ANON,
) -> AclBinding:
    return AclBinding(rtype, name, pattern, principal, "*", operation, permission)


# What the operator grants ANONYMOUS while it is a super user: admin rights on the cluster.
CLUSTER_ACLS = [
    binding(ResourceType.BROKER, "kafka-cluster", op)
    for op in (AclOperation.ALTER, AclOperation.DESCRIBE, AclOperation.CREATE)
]


def create_acls(admin: AdminClient, acls: list[AclBinding]) -> None:
    for future in admin.create_acls(acls).values():
        future.result(15)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(
        tmp_path_factory.mktemp("acl") / "broker",
        {"authorizer.class.name": AUTHORIZER, "super.users": ANON},
    )
    try:
        broker.start()
        create_acls(AdminClient({"bootstrap.servers": broker.bootstrap}), CLUSTER_ACLS)
        broker.stop()
        broker.overrides["super.users"] = ""
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="module")
def admin(secured: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": secured.bootstrap})


def new_topic(admin: AdminClient, prefix: str) -> str:
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    for future in admin.create_topics([NewTopic(name, 1, 1)]).values():
        future.result(15)
    return name


def produce_error(broker: BrokerProcess, topic: str) -> int:
    """The delivery error code of one record (0: delivered)."""
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 10_000, "linger.ms": 0}
    )
    outcome: list[int] = []
    producer.produce(
        topic, b"v", on_delivery=lambda err, _msg: outcome.append(err.code() if err else 0)
    )
    producer.flush(15)
    assert outcome, "no delivery report"
    return outcome[0]


def consume_outcome(broker: BrokerProcess, topic: str, group: str) -> bytes | int:
    """The first record's value, or the first error code the consumer reports."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])

        def outcome() -> bytes | int | None:
            message = consumer.poll(0.5)
            if message is None:
                return None
            error = message.error()
            if error is not None:
                return None if error.code() == KafkaError._PARTITION_EOF else error.code()
            return message.value()

        return wait_until(outcome, 30, what=f"a record or an error from {topic}")
    finally:
        consumer.close()


def test_acls_survive_a_restart(admin: AdminClient) -> None:
    described = admin.describe_acls(ANY_FILTER).result(15)
    assert set(CLUSTER_ACLS) <= set(described)


def test_no_acl_refuses_produce_and_consume(secured: BrokerProcess, admin: AdminClient) -> None:
    topic = new_topic(admin, "closed-")
    assert produce_error(secured, topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    outcome = consume_outcome(secured, topic, f"g-{topic}")
    assert outcome in (
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    )


@pytest.mark.parametrize("pattern", [ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED])
def test_topic_and_group_acls_let_the_client_through(
    secured: BrokerProcess, admin: AdminClient, pattern: ResourcePatternType
) -> None:
    topic = new_topic(admin, f"open-{pattern.name.lower()}-")
    group = f"g-{topic}"
    assert produce_error(secured, topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # PREFIXED: the ACLs name a prefix of the topic and the group, not the names themselves.
    topic_acl_name = topic if pattern is ResourcePatternType.LITERAL else topic[:-4]
    group_acl_name = group if pattern is ResourcePatternType.LITERAL else group[:-4]
    create_acls(
        admin,
        [
            binding(ResourceType.TOPIC, topic_acl_name, AclOperation.WRITE, pattern=pattern),
            binding(ResourceType.TOPIC, topic_acl_name, AclOperation.READ, pattern=pattern),
            binding(ResourceType.GROUP, group_acl_name, AclOperation.READ, pattern=pattern),
        ],
    )
    assert produce_error(secured, topic) == 0
    assert consume_outcome(secured, topic, group) == b"v"


def test_deny_beats_allow(secured: BrokerProcess, admin: AdminClient) -> None:
    topic = new_topic(admin, "denied-")
    create_acls(
        admin,
        [
            binding(ResourceType.TOPIC, topic, AclOperation.ALL, principal="User:*"),
            binding(ResourceType.TOPIC, topic, AclOperation.WRITE, AclPermissionType.DENY),
        ],
    )
    assert produce_error(secured, topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_metadata_hides_topics_the_principal_may_not_describe(
    secured: BrokerProcess, admin: AdminClient
) -> None:
    hidden = new_topic(admin, "hidden-")
    shown = new_topic(admin, "shown-")
    create_acls(admin, [binding(ResourceType.TOPIC, shown, AclOperation.DESCRIBE)])
    listed = admin.list_topics(timeout=15).topics
    assert shown in listed
    assert hidden not in listed
    named = admin.list_topics(hidden, timeout=15).topics[hidden]
    assert named.error is not None
    assert named.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_describe_and_delete_acls_round_trip_with_confluent(admin: AdminClient) -> None:
    name = f"rt-{uuid.uuid4().hex[:8]}"
    literal = binding(ResourceType.TOPIC, name, AclOperation.READ)
    prefixed = binding(
        ResourceType.GROUP, name, AclOperation.READ, pattern=ResourcePatternType.PREFIXED
    )
    create_acls(admin, [literal, prefixed])
    by_name = AclBindingFilter(
        ResourceType.ANY,
        name,
        ResourcePatternType.ANY,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    assert sorted(map(str, admin.describe_acls(by_name).result(15))) == sorted(
        map(str, [literal, prefixed])
    )
    # MATCH: every pattern that applies to a name (here the prefixed group ACL).
    match = AclBindingFilter(
        ResourceType.GROUP,
        f"{name}-consumers",
        ResourcePatternType.MATCH,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    assert admin.describe_acls(match).result(15) == [prefixed]
    deleted = admin.delete_acls([by_name])
    assert sorted(map(str, deleted[by_name].result(15))) == sorted(map(str, [literal, prefixed]))
    assert admin.describe_acls(by_name).result(15) == []


def test_describe_and_delete_acls_round_trip_with_kafka_python(secured: BrokerProcess) -> None:
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        KafkaAdminClient,
        ResourcePattern,
        ResourcePatternFilter,
    )
    from kafka.admin import ACLResourcePatternType as KPattern
    from kafka.admin import ResourceType as KResource

    client = KafkaAdminClient(bootstrap_servers=secured.bootstrap)
    try:
        name = f"kp-{uuid.uuid4().hex[:8]}"
        acl = ACL(
            ANON,
            "*",
            ACLOperation.WRITE,
            ACLPermissionType.ALLOW,
            ResourcePattern(KResource.TOPIC, name, KPattern.PREFIXED),
        )
        result = client.create_acls([acl])
        assert result["failed"] == [], result
        acl_filter = ACLFilter(
            ANON,
            "*",
            ACLOperation.ANY,
            ACLPermissionType.ANY,
            ResourcePatternFilter(KResource.TOPIC, name, KPattern.ANY),
        )
        found, error = client.describe_acls(acl_filter)
        assert error.errno == 0
        assert [(a.operation, a.resource_pattern.pattern_type) for a in found] == [
            (ACLOperation.WRITE, KPattern.PREFIXED)
        ]
        [(_, deleted, error)] = client.delete_acls([acl_filter])
        assert error.errno == 0
        assert len(deleted) == 1
        assert client.describe_acls(acl_filter)[0] == []
    finally:
        client.close()


@pytest.fixture(scope="module")
def open_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(tmp_path_factory.mktemp("noauth") / "broker")
    try:
        yield broker.start()
    finally:
        broker.close()


def test_without_an_authorizer_acl_apis_answer_security_disabled(
    open_broker: BrokerProcess,
) -> None:
    with open_broker.wire() as wire:
        advertised = {k.api_key for k in wire.request(18, 3, ApiVersionsRequest()).api_keys}
        assert {29, 30, 31} <= advertised
        creation = CreateAclsRequest.AclCreation(
            resource_type=2,
            resource_name="t",
            resource_pattern_type=3,
            principal=ANON,
            host="*",
            operation=3,
            permission_type=3,
        )
        response = wire.request(30, 3, CreateAclsRequest(creations=[creation]))
        assert [r.error_code for r in response.results] == [SECURITY_DISABLED]
        response = wire.request(29, 3, DescribeAclsRequest(**ANY_WIRE_FILTER))
        assert response.error_code == SECURITY_DISABLED
        delete = DeleteAclsRequest(filters=[DeleteAclsRequest.DeleteAclsFilter(**ANY_WIRE_FILTER)])
        response = wire.request(31, 3, delete)
        assert [r.error_code for r in response.filter_results] == [SECURITY_DISABLED]
    admin = AdminClient({"bootstrap.servers": open_broker.bootstrap})
    acl = binding(ResourceType.TOPIC, "t", AclOperation.READ)
    code, message = ck_error(admin.create_acls([acl])[acl])
    assert code == KafkaError.SECURITY_DISABLED, message
    # Everything else works as before.
    topic = new_topic(admin, "free-")
    assert produce_error(open_broker, topic) == 0
    assert consume_outcome(open_broker, topic, f"g-{topic}") == b"v"


def test_an_unknown_authorizer_class_stops_the_broker(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "b", {"authorizer.class.name": "com.example.Nope"})
    with pytest.raises(RuntimeError, match="not an authorizer pystream has"):
        broker.start(timeout=20)
    assert broker.process is not None and broker.process.wait(10) == 1


def test_cli_adds_lists_and_removes_acls(secured: BrokerProcess, admin: AdminClient) -> None:
    topic = new_topic(admin, "cli-")
    connect = ["--bootstrap-server", secured.bootstrap]
    added = run(
        "acls", "add", "--allow-principal", ANON, "--operation", "Write",
        "--topic", topic[:-3], "--resource-pattern-type", "prefixed", *connect,
    )  # fmt: skip
    assert "operation=WRITE, permissionType=ALLOW" in added.stdout
    assert produce_error(secured, topic) == 0
    listed = run("acls", "list", "--topic", topic, "--resource-pattern-type", "match", *connect)
    assert f"name={topic[:-3]}, patternType=PREFIXED" in listed.stdout
    removed = run(
        "acls", "remove", "--topic", topic[:-3], "--resource-pattern-type", "prefixed",
        "--force", *connect,
    )  # fmt: skip
    assert f"principal={ANON}, host=*, operation=WRITE" in removed.stdout
    assert produce_error(secured, topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert f"name={topic[:-3]}" not in run("acls", "list", *connect).stdout


def test_cli_says_when_the_broker_has_no_authorizer(open_broker: BrokerProcess) -> None:
    result = run(
        "acls", "add", "--allow-principal", ANON, "--topic", "t",
        "--bootstrap-server", open_broker.bootstrap, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "No Authorizer is configured" in result.stderr


def test_each_api_refuses_with_kafkas_error(secured: BrokerProcess, admin: AdminClient) -> None:
    """No ACL names this topic, group or transactional id: every API answers the error
    Kafka's KafkaApis answers (ANONYMOUS holds only ALTER/DESCRIBE/CREATE on the cluster)."""
    topic = new_topic(admin, "refused-")
    group, txn = f"g-{topic}", f"tx-{topic}"
    cluster_authorization_failed, txn_authorization_failed = 31, 53
    with secured.wire() as wire:

        def ask(key: int, version: int, request: object) -> object:
            return wire.request(key, version, request)

        fc_group = ask(10, 3, fc.FindCoordinatorRequest(key=group, key_type=0))
        assert fc_group.error_code == GROUP_AUTHORIZATION_FAILED
        fc_txn = ask(10, 3, fc.FindCoordinatorRequest(key=txn, key_type=1))
        assert fc_txn.error_code == txn_authorization_failed
        fetched = ask(9, 7, of.OffsetFetchRequest(group_id=group, topics=None))
        assert fetched.error_code == GROUP_AUTHORIZATION_FAILED
        deleted = ask(42, 2, dg.DeleteGroupsRequest(groups_names=[group]))
        assert deleted.results[0].error_code == GROUP_AUTHORIZATION_FAILED
        described = ask(15, 5, dgr.DescribeGroupsRequest(groups=[group]))
        assert described.groups[0].error_code == GROUP_AUTHORIZATION_FAILED
        offsets = lo.ListOffsetsRequest(
            replica_id=-1,
            topics=[
                lo.ListOffsetsRequest.ListOffsetsTopic(
                    name=topic,
                    partitions=[
                        lo.ListOffsetsRequest.ListOffsetsPartition(partition_index=0, timestamp=-1)
                    ],
                )
            ],
        )
        listed = ask(2, 7, offsets)
        assert listed.topics[0].partitions[0].error_code == TOPIC_AUTHORIZATION_FAILED
        records = dr.DeleteRecordsRequest(
            topics=[
                dr.DeleteRecordsRequest.DeleteRecordsTopic(
                    name=topic,
                    partitions=[
                        dr.DeleteRecordsRequest.DeleteRecordsPartition(partition_index=0, offset=0)
                    ],
                )
            ],
            timeout_ms=5000,
        )
        deleted_records = ask(21, 2, records)
        assert deleted_records.topics[0].partitions[0].error_code == TOPIC_AUTHORIZATION_FAILED
        grow = cp.CreatePartitionsRequest(
            topics=[cp.CreatePartitionsRequest.CreatePartitionsTopic(name=topic, count=2)],
            timeout_ms=5000,
            validate_only=True,
        )
        assert ask(37, 3, grow).results[0].error_code == TOPIC_AUTHORIZATION_FAILED
        drop = dt.DeleteTopicsRequest(topic_names=[topic], timeout_ms=5000)
        assert ask(20, 4, drop).responses[0].error_code == TOPIC_AUTHORIZATION_FAILED
        configs = dc.DescribeConfigsRequest(
            resources=[
                dc.DescribeConfigsRequest.DescribeConfigsResource(
                    resource_type=2, resource_name=topic, configuration_keys=None
                )
            ]
        )
        assert ask(32, 4, configs).results[0].error_code == TOPIC_AUTHORIZATION_FAILED
        producers = dp.DescribeProducersRequest(
            topics=[dp.DescribeProducersRequest.TopicRequest(name=topic, partition_indexes=[0])]
        )
        answer = ask(61, 0, producers)
        assert answer.topics[0].partitions[0].error_code == TOPIC_AUTHORIZATION_FAILED
        epochs = ofle.OffsetForLeaderEpochRequest(
            replica_id=-1,
            topics=[
                ofle.OffsetForLeaderEpochRequest.OffsetForLeaderTopic(
                    topic=topic,
                    partitions=[
                        ofle.OffsetForLeaderEpochRequest.OffsetForLeaderPartition(
                            partition=0, current_leader_epoch=-1, leader_epoch=0
                        )
                    ],
                )
            ],
        )
        answer = ask(23, 4, epochs)
        assert answer.topics[0].partitions[0].error_code == TOPIC_AUTHORIZATION_FAILED
        init = ip.InitProducerIdRequest(transactional_id=txn, transaction_timeout_ms=60_000)
        assert ask(22, 4, init).error_code == txn_authorization_failed
        end = et.EndTxnRequest(transactional_id=txn, producer_id=1, producer_epoch=0)
        assert ask(26, 3, end).error_code == txn_authorization_failed
        # Inter-broker APIs need CLUSTER_ACTION.
        marker = wtm.WriteTxnMarkersRequest.WritableTxnMarker(
            producer_id=1,
            producer_epoch=0,
            transaction_result=True,
            coordinator_epoch=0,
            topics=[
                wtm.WriteTxnMarkersRequest.WritableTxnMarkerTopic(name=topic, partition_indexes=[0])
            ],
        )
        markers = ask(27, 1, wtm.WriteTxnMarkersRequest(markers=[marker]))
        assert markers.markers[0].topics[0].partitions[0].error_code == (
            cluster_authorization_failed
        )
        shutdown = cs.ControlledShutdownRequest(broker_id=0, broker_epoch=-1)
        assert ask(7, 3, shutdown).error_code == cluster_authorization_failed


def test_idempotent_producer_needs_idempotent_write_or_write_on_a_topic(
    secured: BrokerProcess, admin: AdminClient
) -> None:
    """KIP-679: InitProducerId without a transactional id needs IDEMPOTENT_WRITE on the
    cluster or WRITE on some topic; a DENY of WRITE on every topic takes the latter away."""
    deny_all = binding(
        ResourceType.TOPIC, "*", AclOperation.WRITE, AclPermissionType.DENY, principal="User:*"
    )
    idempotent = binding(ResourceType.BROKER, "kafka-cluster", AclOperation.IDEMPOTENT_WRITE)
    init = ip.InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000)
    create_acls(admin, [deny_all])
    try:
        with secured.wire() as wire:
            assert wire.request(22, 4, init).error_code == 31  # CLUSTER_AUTHORIZATION_FAILED
            create_acls(admin, [idempotent])
            answer = wire.request(22, 4, init)
            assert answer.error_code == 0
            assert answer.producer_id >= 0
    finally:
        filters = [
            AclBindingFilter(
                b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                b.operation, b.permission_type,
            )
            for b in (deny_all, idempotent)
        ]  # fmt: skip
        for future in admin.delete_acls(filters).values():
            future.result(15)


def test_acl_hosts_match_the_client_address(secured: BrokerProcess, admin: AdminClient) -> None:
    elsewhere, here = new_topic(admin, "host-a-"), new_topic(admin, "host-b-")
    create_acls(
        admin,
        [
            AclBinding(
                ResourceType.TOPIC, elsewhere, ResourcePatternType.LITERAL, ANON, "10.9.9.9",
                AclOperation.WRITE, AclPermissionType.ALLOW,
            ),
            AclBinding(
                ResourceType.TOPIC, here, ResourcePatternType.LITERAL, ANON, "127.0.0.1",
                AclOperation.WRITE, AclPermissionType.ALLOW,
            ),
        ],
    )  # fmt: skip
    assert produce_error(secured, elsewhere) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce_error(secured, here) == 0
