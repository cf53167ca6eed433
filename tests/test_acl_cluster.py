"""ACLs in a three-broker cluster: stored in ZooKeeper at Kafka's layout, and an ACL
created through one broker is enforced by every broker (each watches the change
notifications).

``allow.everyone.if.no.acl.found=true`` lets the brokers (``User:ANONYMOUS`` on
PLAINTEXT) replicate and the test create ACLs; the first ACL on a topic then
closes it to everyone else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from admin_helpers import CK_ANY_ACL, ck_error  # noqa: E402
from broker_process import BrokerProcess  # noqa: E402
from cluster_fixtures import (  # noqa: E402
    NONE,
    create_topic,
    produce,
    start_cluster,
    wait_leaders_serve,
)
from confluent_kafka.admin import (  # noqa: E402
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from waiting import wait_until  # noqa: E402
from zookeeper import (  # noqa: E402
    kazoo_clients,  # noqa: F401 - fixture
    zk_connect,  # noqa: F401 - fixture
    zookeeper,  # noqa: F401 - fixture
)

TOPIC_AUTHORIZATION_FAILED = 29
INVALID_REQUEST = 42


@pytest.fixture
def cluster(tmp_path: Path, zk_connect: str) -> Iterator[list[BrokerProcess]]:  # noqa: F811
    brokers = start_cluster(
        tmp_path,
        zk_connect,
        {
            "authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
            "allow.everyone.if.no.acl.found": "true",
        },
    )
    try:
        yield brokers
    finally:
        for broker in brokers:
            broker.close()


def produce_error(broker: BrokerProcess, topic: str) -> int:
    with broker.wire() as wire:
        return produce(wire, topic, 0, b"v").error_code


def test_an_acl_created_on_one_broker_is_enforced_by_all(
    cluster: list[BrokerProcess],
    zk_connect: str,  # noqa: F811
    kazoo_clients: Callable[..., object],  # noqa: F811
) -> None:
    create_topic(cluster, "guarded", 1, 3)
    wait_leaders_serve(cluster, "guarded")
    leader = next(b for b in cluster if produce_error(b, "guarded") == NONE)  # replicated, open
    admin = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    acls = [
        AclBinding(
            ResourceType.TOPIC,
            "guarded",
            ResourcePatternType.LITERAL,
            "User:bob",
            "*",
            AclOperation.WRITE,
            AclPermissionType.ALLOW,
        ),
        AclBinding(
            ResourceType.GROUP,
            "team-",
            ResourcePatternType.PREFIXED,
            "User:*",
            "*",
            AclOperation.READ,
            AclPermissionType.DENY,
        ),
    ]
    for future in admin.create_acls(acls).values():
        future.result(15)
    # Kafka's znodes, so Kafka's tools (and a Kafka broker) read the same ACLs.
    zk = kazoo_clients(zk_connect)
    literal, _ = zk.get("/kafka-acl/Topic/guarded")  # type: ignore[attr-defined]
    assert json.loads(literal) == {
        "version": 1,
        "acls": [
            {"principal": "User:bob", "permissionType": "Allow", "operation": "Write", "host": "*"}
        ],
    }
    prefixed, _ = zk.get("/kafka-acl-extended/prefixed/Group/team-")  # type: ignore[attr-defined]
    assert json.loads(prefixed)["acls"][0]["permissionType"] == "Deny"
    assert zk.get_children("/kafka-acl-changes")  # type: ignore[attr-defined]
    assert zk.get_children("/kafka-acl-extended-changes")  # type: ignore[attr-defined]
    # Every broker, the leader and the followers, now refuses ANONYMOUS (not bob) the topic.
    for broker in cluster:
        wait_until(
            lambda b=broker: produce_error(b, "guarded") == TOPIC_AUTHORIZATION_FAILED,
            30,
            what=f"broker {broker.overrides['broker.id']} enforcing the ACL",
        )
    # Another broker describes the ACLs the first one wrote; deleting them reopens the topic.
    other = AdminClient({"bootstrap.servers": cluster[2].bootstrap})
    everything = CK_ANY_ACL
    assert sorted(map(str, other.describe_acls(everything).result(15))) == sorted(map(str, acls))
    for future in other.delete_acls([everything]).values():
        future.result(15)
    wait_until(lambda: produce_error(leader, "guarded") == NONE, 30, what="the topic reopened")
    # Group and transactional ids may contain '/', znode names may not: such an ACL is
    # refused with INVALID_REQUEST (Kafka's ZooKeeper layout names a znode after the
    # resource), the others of the same request are stored.
    slashed = AclBinding(
        ResourceType.GROUP, "team/app", ResourcePatternType.LITERAL, "User:bob", "*",
        AclOperation.READ, AclPermissionType.ALLOW,
    )  # fmt: skip
    plain = AclBinding(
        ResourceType.GROUP, "team-app", ResourcePatternType.LITERAL, "User:bob", "*",
        AclOperation.READ, AclPermissionType.ALLOW,
    )  # fmt: skip
    results = admin.create_acls([slashed, plain])
    code, message = ck_error(results[slashed])
    assert code == INVALID_REQUEST and "contains '/'" in message
    assert ck_error(results[plain]) == (NONE, "")
    assert [str(b) for b in other.describe_acls(everything).result(15)] == [str(plain)]
    assert zk.get_children("/kafka-acl/Group") == ["team-app"]  # type: ignore[attr-defined]
