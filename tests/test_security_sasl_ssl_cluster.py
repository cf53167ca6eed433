"""Three brokers on SASL_SSL only, with ACLs enforced by every broker (issue 14).

``INTERNAL`` (SASL_SSL, SCRAM-SHA-512 only) is the inter-broker listener: followers'
fetches, controller requests and transaction markers log in as ``admin``
(``sasl.mechanism.inter.broker.protocol`` + the broker's JAAS login).  ``EXTERNAL``
(SASL_SSL, every mechanism) is for clients.  ``admin`` is created in ZooKeeper with
``pystream users add --zookeeper`` before the first start, as Kafka's
``kafka-configs --zookeeper`` does; ``allow.everyone.if.no.acl.found`` keeps its default
(false), so only the super user ``admin`` may do anything until ACLs say otherwise.
One cluster for the module.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from broker_process import BrokerProcess  # noqa: E402
from cli_helpers import assert_one_line_error, run  # noqa: E402
from cluster_fixtures import cluster_broker, produce_request  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import (  # noqa: E402
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from tls_certs import CertificateAuthority  # noqa: E402
from waiting import wait_until  # noqa: E402
from zookeeper import ZooKeeperServer, zookeeper  # noqa: E402, F401 - fixture

from pystream.client.connection import BrokerConnection  # noqa: E402
from pystream.errors import (  # noqa: E402
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
)
from pystream.security.client_security import ClientSecurity, SaslLogin  # noqa: E402
from pystream.security.ssl import client_context  # noqa: E402

TIMEOUT = 30.0
ADMIN_PASSWORD = "admin-Secret-1"
WRONG_PASSWORD = "not-the-Admin-pw-7"
ALICE, ALICE_PASSWORD = "alice", "alice-Secret-2"
TOPIC_AUTHORIZATION_FAILED = 29
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"


def _jaas(password: str) -> str:
    return f'{SCRAM_LOGIN} required username="admin" password="{password}";'


class Cluster:
    """The brokers, the CA and how clients reach them."""

    def __init__(self, brokers: list[BrokerProcess], ca: CertificateAuthority, connect: str):
        self.brokers = brokers
        self.ca = ca
        self.connect = connect

    def external(self, broker: BrokerProcess) -> str:
        return f"127.0.0.1:{broker.listener_ports['EXTERNAL']}"

    def bootstrap(self, brokers: list[BrokerProcess] | None = None) -> str:
        return ",".join(self.external(b) for b in brokers or self.brokers)

    def client(
        self,
        bootstrap: str,
        user: str = "admin",
        password: str = ADMIN_PASSWORD,
        mechanism: str = "SCRAM-SHA-512",
    ) -> dict[str, Any]:
        """confluent-kafka settings for SASL_SSL on EXTERNAL."""
        return {
            "bootstrap.servers": bootstrap,
            "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(self.ca.ca_file),
            "sasl.mechanisms": mechanism,
            "sasl.username": user,
            "sasl.password": password,
        }

    def admin(self, brokers: list[BrokerProcess] | None = None) -> AdminClient:
        return AdminClient(self.client(self.bootstrap(brokers)))


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    zookeeper: ZooKeeperServer,  # noqa: F811
) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("sasl-ssl-cluster")
    connect = f"{zookeeper.hosts}/pystream-test/{uuid.uuid4().hex[:12]}"
    ca = CertificateAuthority(tmp / "pki")
    identity = ca.issue("broker", "localhost")
    # The brokers' own user, before the first start (the chroot does not exist yet).
    run(
        "users", "add", "admin", "--password", ADMIN_PASSWORD,
        "--mechanism", "SCRAM-SHA-512", "--zookeeper", connect,
    )  # fmt: skip
    run(
        "users", "add", ALICE, "--password", ALICE_PASSWORD,
        "--mechanism", "SCRAM-SHA-256", "--zookeeper", connect,
    )  # fmt: skip
    brokers = [security_broker(tmp, connect, i, identity.pem, ca.ca_file) for i in range(3)]
    try:
        for broker in brokers:
            broker.start()
        yield Cluster(brokers, ca, connect)
    finally:
        for broker in brokers:
            broker.close()


def security_broker(
    tmp: Path, connect: str, broker_id: int, keystore: Path, truststore: Path
) -> BrokerProcess:
    broker = cluster_broker(tmp, connect, broker_id)
    broker.overrides.update(
        {
            "listeners": "INTERNAL://127.0.0.1:0,EXTERNAL://127.0.0.1:0",
            "listener.security.protocol.map": "INTERNAL:SASL_SSL,EXTERNAL:SASL_SSL",
            "inter.broker.listener.name": "INTERNAL",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.internal.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            # The broker-wide login (the last fallback of Kafka's lookup).
            "sasl.jaas.config": _jaas(ADMIN_PASSWORD),
            "ssl.keystore.location": str(keystore),
            "ssl.truststore.location": str(truststore),
            "authorizer.class.name": "pystream.security.AclAuthorizer",
            "super.users": "User:admin",
            "transaction.state.log.num.partitions": "3",
            # A follower that cannot log in leaves the ISR in seconds, not Kafka's 30.
            "replica.lag.time.max.ms": "4000",
        }
    )
    return broker


def wait_full_isr(admin: AdminClient, topic: str, partitions: int) -> dict[int, int]:
    """Partition -> leader, once every partition has all 3 replicas in its ISR."""

    def in_sync() -> dict[int, int] | None:
        described = admin.list_topics(topic, timeout=TIMEOUT).topics[topic]
        if described.error is not None or len(described.partitions) != partitions:
            return None
        if all(len(p.isrs) == 3 and p.leader >= 0 for p in described.partitions.values()):
            return {i: p.leader for i, p in described.partitions.items()}
        return None

    return wait_until(in_sync, TIMEOUT, what=f"every replica of {topic} in sync")


def create_topic(cluster: Cluster, name: str, partitions: int) -> dict[int, int]:
    admin = cluster.admin()
    admin.create_topics([NewTopic(name, partitions, 3)])[name].result(TIMEOUT)
    return wait_full_isr(admin, name, partitions)


async def open_connection(
    broker: BrokerProcess, listener: str, security: ClientSecurity
) -> BrokerConnection:
    """pystream's own client connection (the brokers' inter-broker code path) to one
    listener of ``broker``, logged in as ``security`` says."""
    return await BrokerConnection.open(
        "127.0.0.1",
        broker.listener_ports[listener],
        client_id="sasl-ssl-cluster-test",
        request_timeout_ms=15_000,
        connect_timeout_ms=15_000,
        max_response_size=1 << 20,
        security=security,
    )


def raw_produce_error(cluster: Cluster, broker: BrokerProcess, topic: str) -> int:
    """A Produce sent to ``broker`` itself by alice (SASL_SSL with SCRAM-SHA-256), its
    error code: the broker authorizes before looking at leadership."""
    security = ClientSecurity(
        "SASL_SSL",
        client_context(cafile=str(cluster.ca.ca_file)),
        SaslLogin("SCRAM-SHA-256", ALICE, ALICE_PASSWORD),
    )

    async def send() -> int:
        connection = await open_connection(broker, "EXTERNAL", security)
        try:
            response = await connection.request(0, produce_request(topic, 0, b"raw"), 9)
        finally:
            connection.close()
        return int(response.responses[0].partition_responses[0].error_code)

    return asyncio.run(send())


def consume(
    settings: dict[str, Any], partitions: list[TopicPartition], done: Callable[[list[bytes]], bool]
) -> list[bytes]:
    """Records of ``partitions`` (assigned, no group membership) until ``done(records)``."""
    consumer = Consumer({**settings, "enable.auto.commit": False})
    consumer.assign(partitions)
    got: list[bytes] = []

    def poll() -> bool:
        message = consumer.poll(0.5)
        if message is not None:
            assert message.error() is None, message.error()
            got.append(message.value())
        return done(got)

    try:
        wait_until(poll, TIMEOUT, what="the records")
    finally:
        consumer.close()
    return got


def test_admin_was_written_to_zookeeper_as_kafka_configs_does(cluster: Cluster) -> None:
    from kazoo.client import KazooClient

    zk = KazooClient(hosts=cluster.connect)
    zk.start(timeout=TIMEOUT)
    try:
        data, _ = zk.get("/config/users/admin")
        config = json.loads(data)["config"]
        assert set(config) == {"SCRAM-SHA-512"}
        assert "iterations=4096" in config["SCRAM-SHA-512"]
        notices = [
            json.loads(zk.get(f"/config/changes/{c}")[0])
            for c in zk.get_children("/config/changes")
        ]
        assert {"version": 2, "entity_path": "users/admin"} in notices
    finally:
        zk.stop()
        zk.close()
    listed = run("users", "list", "--zookeeper", cluster.connect).stdout
    assert "'admin' are SCRAM-SHA-512(iterations=4096)" in listed
    assert "'alice' are SCRAM-SHA-256(iterations=4096)" in listed
    assert ADMIN_PASSWORD not in listed
    both = run("users", "list", "--zookeeper", cluster.connect, "--log-dirs", "/tmp/x", check=False)
    assert_one_line_error(both, "--log-dirs", "--zookeeper")


def test_users_changed_in_zookeeper_apply_to_the_running_brokers(cluster: Cluster) -> None:
    security = ClientSecurity(
        "SASL_SSL",
        client_context(cafile=str(cluster.ca.ca_file)),
        SaslLogin("SCRAM-SHA-256", "carol", "carol-Secret-3"),
    )

    def login_error(broker: BrokerProcess) -> str:
        async def login() -> str:
            try:
                (await open_connection(broker, "EXTERNAL", security)).close()
            except SaslAuthenticationFailedError as exc:
                return str(exc)
            return ""

        return asyncio.run(login())

    assert "Authentication failed" in login_error(cluster.brokers[0])
    connect = cluster.connect
    run("users", "add", "carol", "--password", "carol-Secret-3", "--zookeeper", connect)
    # The change notification reaches every running broker.
    for broker in cluster.brokers:
        wait_until(lambda b=broker: login_error(b) == "", TIMEOUT, what="carol's login")
    deleted = run("users", "delete", "carol", "--zookeeper", connect).stdout
    assert "Completed deleting SCRAM-SHA-256 credentials for user carol" in deleted
    for broker in cluster.brokers:
        wait_until(lambda b=broker: login_error(b) != "", TIMEOUT, what="carol refused")
    again = run("users", "delete", "carol", "--zookeeper", connect, check=False)
    assert_one_line_error(again, "user carol has no SCRAM credentials")


def test_the_jaas_login_is_hidden_by_describe_configs(cluster: Cluster) -> None:
    resource = ConfigResource(ConfigResource.Type.BROKER, "0")
    admin = cluster.admin()  # kept: a collected client cancels its requests
    described = admin.describe_configs([resource])[resource].result(TIMEOUT)
    entry = described["sasl.jaas.config"]
    assert entry.is_sensitive and entry.value is None
    assert entry.synonyms and all(s.value is None for s in entry.synonyms.values())
    assert described["sasl.mechanism.inter.broker.protocol"].value == "SCRAM-SHA-512"


def test_sasl_enabled_mechanisms_per_listener(cluster: Cluster) -> None:
    broker = cluster.brokers[0]
    context = client_context(cafile=str(cluster.ca.ca_file))
    plain = ClientSecurity("SASL_SSL", context, SaslLogin("PLAIN", "admin", ADMIN_PASSWORD))

    async def login(listener: str) -> None:
        (await open_connection(broker, listener, plain)).close()

    asyncio.run(login("EXTERNAL"))  # PLAIN is offered to clients
    with pytest.raises(UnsupportedSaslMechanismError, match="it offers SCRAM-SHA-512"):
        asyncio.run(login("INTERNAL"))  # listener.name.internal.sasl.enabled.mechanisms


def test_acls_created_on_one_broker_are_enforced_by_every_broker(cluster: Cluster) -> None:
    topic = "alice-topic"
    create_topic(cluster, topic, 1)
    # No ACL and allow.everyone.if.no.acl.found=false: every broker refuses alice.
    for broker in cluster.brokers:
        assert raw_produce_error(cluster, broker, topic) == TOPIC_AUTHORIZATION_FAILED
    # CreateAcls through ONE broker; the others learn them from ZooKeeper.
    acls = [
        AclBinding(
            ResourceType.TOPIC,
            topic,
            ResourcePatternType.LITERAL,
            f"User:{ALICE}",
            "*",
            operation,
            AclPermissionType.ALLOW,
        )
        for operation in (AclOperation.WRITE, AclOperation.READ)
    ] + [
        AclBinding(
            ResourceType.GROUP,
            "alice-",
            ResourcePatternType.PREFIXED,
            f"User:{ALICE}",
            "*",
            AclOperation.READ,
            AclPermissionType.ALLOW,
        )
    ]
    admin = cluster.admin(cluster.brokers[:1])
    for future in admin.create_acls(acls).values():
        future.result(TIMEOUT)
    for broker in cluster.brokers:
        wait_until(
            lambda b=broker: raw_produce_error(cluster, b, topic) != TOPIC_AUTHORIZATION_FAILED,
            TIMEOUT,
            what=f"broker {broker.overrides['broker.id']} allowing alice",
        )
    # Alice produces and consumes through each broker (bootstrapped on that one only).
    for index, broker in enumerate(cluster.brokers):
        settings = cluster.client(
            cluster.external(broker), ALICE, ALICE_PASSWORD, mechanism="SCRAM-SHA-256"
        )
        errors: list[object] = []
        producer = Producer({**settings, "acks": "all", "linger.ms": 0})
        value = f"via-broker-{index}".encode()
        producer.produce(topic, value, on_delivery=lambda e, m, seen=errors: seen.append(e))
        assert producer.flush(TIMEOUT) == 0
        assert errors == [None]
        got = consume(
            {**settings, "group.id": f"alice-{index}"},
            [TopicPartition(topic, 0, 0)],
            lambda got, wanted=value: wanted in got,
        )
        assert got.count(value) == 1


def test_the_security_docs_cli_example(cluster: Cluster, tmp_path: Path) -> None:
    """docs/security.md's admin commands, as written there (but for paths and ports)."""
    admin_properties = tmp_path / "admin.properties"
    admin_properties.write_text(
        "security.protocol=SASL_SSL\n"
        f"ssl.truststore.location={cluster.ca.ca_file}\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        f"sasl.jaas.config={SCRAM_LOGIN} required "
        f'username="admin" password="{ADMIN_PASSWORD}";\n'
    )
    connection = ["--bootstrap-server", cluster.external(cluster.brokers[0])]
    connection += ["--command-config", str(admin_properties)]
    run(
        "topics", "create", "orders", "--partitions", "3", "--replication-factor", "3",
        *connection,
    )  # fmt: skip
    run(
        "acls", "add", "--allow-principal", "User:alice", "--producer", "--consumer",
        "--topic", "orders", "--group", "orders-app", *connection,
    )  # fmt: skip
    wait_full_isr(cluster.admin(), "orders", 3)
    for broker in cluster.brokers:
        wait_until(
            lambda b=broker: raw_produce_error(cluster, b, "orders") != TOPIC_AUTHORIZATION_FAILED,
            TIMEOUT,
            what=f"broker {broker.overrides['broker.id']} allowing alice to produce to orders",
        )


def test_a_transaction_commits_with_markers_over_the_sasl_ssl_channel(cluster: Cluster) -> None:
    topic = "txn-topic"
    leaders = create_topic(cluster, topic, 3)
    # Leaders on at least two brokers: whichever broker coordinates the transaction, it
    # sends WriteTxnMarkers to another one over INTERNAL.
    assert len(set(leaders.values())) >= 2, leaders
    admin_settings = cluster.client(cluster.bootstrap())
    producer = Producer({**admin_settings, "transactional.id": "sasl-ssl-txn"})
    producer.init_transactions(TIMEOUT)
    producer.begin_transaction()
    values = [f"t{i}".encode() for i in range(30)]
    for i, value in enumerate(values):
        producer.produce(topic, value, partition=i % 3)
    producer.commit_transaction(TIMEOUT)
    # read_committed returns the records only once every partition has its COMMIT marker.
    got = consume(
        {**admin_settings, "group.id": "txn-reader", "isolation.level": "read_committed"},
        [TopicPartition(topic, p, 0) for p in range(3)],
        lambda got: len(got) >= len(values),
    )
    assert sorted(got) == sorted(values)


def test_a_broker_with_a_wrong_inter_broker_password_stays_out_of_the_isr(
    cluster: Cluster, tmp_path: Path
) -> None:
    first = cluster.brokers[0]
    pem = Path(first.overrides["ssl.keystore.location"])
    outsider = security_broker(tmp_path, cluster.connect, 3, pem, cluster.ca.ca_file)
    # The listener's own key wins over the right broker-wide sasl.jaas.config (Kafka's order).
    outsider.overrides["listener.name.internal.scram-sha-512.sasl.jaas.config"] = _jaas(
        WRONG_PASSWORD
    )
    # Its shutdown cannot ask the controller (no login): a plain clean shutdown, which
    # ends its ZooKeeper session at once so later topics are not assigned to it.
    outsider.overrides["controlled.shutdown.enable"] = "false"
    outsider.start()
    try:
        admin = cluster.admin()
        admin.create_topics([NewTopic("outsider", 1, replica_assignment=[[0, 3]])])[
            "outsider"
        ].result(TIMEOUT)
        # Broker 3 follows broker 0 and cannot log in to it.
        outsider.wait_for_output("authentication failed to broker 0", timeout=TIMEOUT)

        def isr() -> list[int]:
            described = admin.list_topics("outsider", timeout=TIMEOUT).topics["outsider"]
            return list(described.partitions[0].isrs)

        # A new topic's ISR is its live replicas; the leader removes the follower that never
        # fetches after replica.lag.time.max.ms, as Kafka does ...
        wait_until(lambda: isr() == [0], TIMEOUT, what="broker 3 out of the ISR")
        # ... and it does not come back: a record, then another failed login, same ISR.
        producer = Producer({**cluster.client(cluster.bootstrap()), "acks": "all"})
        producer.produce("outsider", b"after")
        assert producer.flush(TIMEOUT) == 0
        mark = outsider.output_lines()
        outsider.wait_for_output("fetcher from broker 0:", timeout=TIMEOUT, since=mark)
        assert "authentication failed" in outsider.output_since(mark).lower()
        assert isr() == [0]
        assert WRONG_PASSWORD not in outsider.output()
        assert ADMIN_PASSWORD not in outsider.output()
        assert outsider.stop() == 0
    finally:
        outsider.close()


def test_replicas_in_sync_and_records_survive_killing_the_leader(cluster: Cluster) -> None:
    topic = "replicated"
    leader = create_topic(cluster, topic, 1)[0]
    settings = cluster.client(cluster.bootstrap())
    producer = Producer({**settings, "acks": "all", "enable.idempotence": True})
    values = [f"r{i}".encode() * 10 for i in range(100)]
    for value in values:
        producer.produce(topic, value)
    assert producer.flush(TIMEOUT) == 0
    killed = next(b for b in cluster.brokers if int(b.overrides["broker.id"]) == leader)
    survivors = [b for b in cluster.brokers if b is not killed]
    killed.kill()
    try:
        admin = cluster.admin(survivors)

        def new_leader() -> bool:
            described = admin.list_topics(topic, timeout=TIMEOUT).topics[topic]
            return described.partitions[0].leader not in (-1, leader)

        wait_until(new_leader, TIMEOUT, what="a new leader")
        got = consume(
            {**cluster.client(cluster.bootstrap(survivors)), "group.id": "survivor-reader"},
            [TopicPartition(topic, 0, 0)],
            lambda got: len(got) >= len(values),
        )
        assert got == values
    finally:
        killed.start()  # the module's cluster stays whole


def test_a_controlled_shutdown_asks_the_controller_over_sasl_ssl(cluster: Cluster) -> None:
    admin = cluster.admin()
    controller = admin.describe_cluster().result(TIMEOUT).controller.id
    # Not the controller: its ControlledShutdown request crosses the INTERNAL listener.
    broker = next(b for b in cluster.brokers if int(b.overrides["broker.id"]) != controller)
    mark = broker.output_lines()
    try:
        assert broker.stop() == 0
        assert "controlled shutdown succeeded" in broker.output_since(mark)
    finally:
        broker.start()
