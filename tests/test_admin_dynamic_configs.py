"""Dynamic broker configs: AlterConfigs / IncrementalAlterConfigs on BROKER resources.

Per broker (the resource named by the broker id) and cluster-wide (the resource named
""), as Kafka's ``DynamicBrokerConfig``: applied without a restart, persisted (the
single node's metadata file, ZooKeeper's ``/config/brokers/*``), reported by
DescribeConfigs with their sources and synonyms in Kafka's order.  Real brokers,
real clients (confluent-kafka, kafka-python), a real ZooKeeper.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from admin_helpers import ck_admin, ck_error, produce  # noqa: E402
from broker_process import BrokerProcess  # noqa: E402
from cluster_fixtures import bootstrap, by_id, start_cluster  # noqa: E402
from confluent_kafka import KafkaError, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import (  # noqa: E402
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    OffsetSpec,
)
from kafka import KafkaAdminClient  # noqa: E402
from kafka.admin import ConfigResource as KpConfigResource  # noqa: E402
from kafka.admin import ConfigResourceType as KpConfigResourceType  # noqa: E402
from waiting import wait_until  # noqa: E402
from zookeeper import ZooKeeperServer, zookeeper  # noqa: E402, F401 - fixture

from pystream.config import ConfigSource  # noqa: E402
from pystream.errors import ErrorCode  # noqa: E402
from pystream.protocol.messages.alter_configs import AlterConfigsRequest  # noqa: E402
from pystream.protocol.messages.describe_configs import DescribeConfigsRequest  # noqa: E402
from pystream.protocol.messages.incremental_alter_configs import (  # noqa: E402
    IncrementalAlterConfigsRequest,
)

BROKER = 4
DYNAMIC_BROKER = int(ConfigSource.DYNAMIC_BROKER_CONFIG)
DYNAMIC_DEFAULT = int(ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
STATIC = int(ConfigSource.STATIC_BROKER_CONFIG)
DEFAULT = int(ConfigSource.DEFAULT_CONFIG)
HOURS_48 = str(48 * 3600 * 1000)
SET, DELETE = AlterConfigOpType.SET, AlterConfigOpType.DELETE


# --- helpers ----------------------------------------------------------------------------------


def describe(broker: BrokerProcess, resource_type: int, name: str) -> dict[str, Any]:
    """DescribeConfigs v4 with synonyms over the raw wire (the clients key synonyms by name,
    which hides their order and repeats): config name -> entry."""
    request = DescribeConfigsRequest(
        resources=[
            DescribeConfigsRequest.DescribeConfigsResource(
                resource_type=resource_type, resource_name=name, configuration_keys=None
            )
        ],
        include_synonyms=True,
        include_documentation=False,
    )
    with broker.wire() as wire:
        (result,) = wire.request(32, 4, request).results
    assert result.error_code == 0, result.error_message
    return {c.name: c for c in result.configs}


def synonyms(entry: Any) -> list[tuple[str, str | None, int]]:
    return [(s.name, s.value, s.source) for s in entry.synonyms]


def value_and_source(entry: Any) -> tuple[str | None, int]:
    return entry.value, entry.config_source


def alter(
    broker: BrokerProcess,
    name: str,
    *ops: tuple[str, str | None, AlterConfigOpType],
    validate_only: bool = False,
    wire: bool = False,
) -> tuple[int, str]:
    """IncrementalAlterConfigs of broker resource ``name`` sent to ``broker``: by confluent-kafka
    for a broker id; over the raw wire for "" (the cluster default), which confluent-kafka's
    ConfigResource refuses (Kafka's Java AdminClient sends it), or with ``wire``."""
    if name and not wire:
        entries = [ConfigEntry(key, value, incremental_operation=op) for key, value, op in ops]
        resource = ConfigResource("broker", name, incremental_configs=entries)
        admin = ck_admin(broker)  # kept alive until the answer: its futures die with it
        future = admin.incremental_alter_configs([resource], validate_only=validate_only)
        return ck_error(future[resource])
    request = IncrementalAlterConfigsRequest(
        resources=[
            IncrementalAlterConfigsRequest.AlterConfigsResource(
                resource_type=BROKER,
                resource_name=name,
                configs=[
                    IncrementalAlterConfigsRequest.AlterableConfig(
                        name=key, config_operation=int(op.value), value=value
                    )
                    for key, value, op in ops
                ],
            )
        ],
        validate_only=validate_only,
    )
    with broker.wire() as wire:
        (response,) = wire.request(44, 1, request).responses
    return response.error_code, response.error_message or ""


def clear(broker: BrokerProcess, *names: str) -> None:
    """AlterConfigs (replace all) with no configs: the dynamic configs of ``names`` are gone."""
    request = AlterConfigsRequest(
        resources=[
            AlterConfigsRequest.AlterConfigsResource(
                resource_type=BROKER, resource_name=name, configs=[]
            )
            for name in names
        ],
        validate_only=False,
    )
    with broker.wire() as wire:
        responses = wire.request(33, 1, request).responses
    assert [r.error_code for r in responses] == [0] * len(names)


def earliest(admin: AdminClient, topic: str) -> int:
    partition = TopicPartition(topic, 0)
    return admin.list_offsets({partition: OffsetSpec.earliest()})[partition].result(15).offset


def create(
    admin: AdminClient, name: str, assignment: list[list[int]] | None = None, **config: str
) -> None:
    topic = (
        NewTopic(name, len(assignment), replica_assignment=assignment, config=config)
        if assignment
        else NewTopic(name, 1, 1, config=config)
    )
    assert ck_error(admin.create_topics([topic])[name]) == (0, "")


# --- one node ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for the module (log.retention.hours=48 in its properties; retention checked
    every 100 ms)."""
    broker = BrokerProcess(
        tmp_path_factory.mktemp("dynamic") / "broker",
        {"log.retention.hours": "48", "log.retention.check.interval.ms": "100"},
    ).start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def clean_node(node: BrokerProcess) -> Iterator[BrokerProcess]:
    """The module's broker, its dynamic configs removed after the test."""
    try:
        yield node
    finally:
        if node.process is not None:
            clear(node, "0", "")


def test_cluster_default_retention_reaches_an_existing_topic_and_survives_a_restart(
    clean_node: BrokerProcess,
) -> None:
    node = clean_node
    admin = ck_admin(node)
    create(admin, "aging", **{"segment.bytes": "1024"})  # many small segments
    produce(node, "aging", 200, **{"batch.size": "200"})
    assert value_and_source(describe(node, 2, "aging")["retention.ms"]) == (HOURS_48, DEFAULT)

    # validate_only checks and changes nothing.
    assert alter(node, "", ("log.retention.ms", "1", SET), validate_only=True) == (0, "")
    assert describe(node, BROKER, "") == {}
    assert describe(node, 2, "aging")["retention.ms"].value == HOURS_48

    assert alter(node, "", ("log.retention.ms", "1", SET)) == (0, "")
    # The topic has no retention.ms of its own: the next retention check deletes every
    # segment with the new cluster-wide default.
    assert wait_until(lambda: earliest(admin, "aging"), what="retention by the new default")
    assert earliest(admin, "aging") == 200
    retention = describe(node, 2, "aging")["retention.ms"]
    assert value_and_source(retention) == ("1", DYNAMIC_DEFAULT)
    # Kafka's synonym order: dynamic per broker, dynamic default, static, default.
    assert synonyms(retention) == [
        ("log.retention.ms", "1", DYNAMIC_DEFAULT),
        ("log.retention.hours", "48", STATIC),
        ("log.retention.hours", "168", DEFAULT),
    ]
    broker_entry = describe(node, BROKER, "0")["log.retention.ms"]
    assert value_and_source(broker_entry) == ("1", DYNAMIC_DEFAULT)
    assert not broker_entry.read_only
    default_entries = describe(node, BROKER, "")
    assert list(default_entries) == ["log.retention.ms"]
    assert synonyms(default_entries["log.retention.ms"]) == [
        ("log.retention.ms", "1", DYNAMIC_DEFAULT)
    ]

    node.restart()
    admin = ck_admin(node)
    assert value_and_source(describe(node, 2, "aging")["retention.ms"]) == ("1", DYNAMIC_DEFAULT)
    assert list(describe(node, BROKER, "")) == ["log.retention.ms"]

    # DELETE returns the key to its next source: log.retention.hours=48 (which Kafka reports
    # as DEFAULT_CONFIG for retention.ms: its synonyms start at log.retention.ms).
    assert alter(node, "", ("log.retention.ms", None, DELETE)) == (0, "")
    retention = describe(node, 2, "aging")["retention.ms"]
    assert (value_and_source(retention), synonyms(retention)) == ((HOURS_48, DEFAULT), [])
    assert describe(node, BROKER, "") == {}


def test_message_max_bytes_reaches_produce_validation(clean_node: BrokerProcess) -> None:
    node = clean_node
    admin = ck_admin(node)
    create(admin, "sized")

    def produce_one(size: int) -> int:
        errors: list[Any] = []
        producer = Producer({"bootstrap.servers": node.bootstrap, "retries": 0})
        producer.produce("sized", b"x" * size, on_delivery=lambda err, msg: errors.append(err))
        assert producer.flush(30) == 0
        return errors[0].code() if errors[0] is not None else 0

    assert produce_one(5000) == 0
    assert alter(node, "0", ("message.max.bytes", "2000", SET)) == (0, "")
    max_bytes = describe(node, 2, "sized")["max.message.bytes"]
    assert value_and_source(max_bytes) == ("2000", DYNAMIC_BROKER)
    assert synonyms(max_bytes) == [
        ("message.max.bytes", "2000", DYNAMIC_BROKER),
        ("message.max.bytes", "1048588", DEFAULT),
    ]
    assert produce_one(5000) == KafkaError.MSG_SIZE_TOO_LARGE
    assert produce_one(1000) == 0
    assert alter(node, "0", ("message.max.bytes", None, DELETE)) == (0, "")
    assert produce_one(5000) == 0


def test_sources_and_synonyms_of_both_levels(clean_node: BrokerProcess) -> None:
    node = clean_node
    admin = ck_admin(node)
    create(admin, "layered")
    assert alter(node, "0", ("log.segment.bytes", "2097152", SET)) == (0, "")
    assert alter(node, "", ("log.segment.bytes", "4194304", SET)) == (0, "")
    entry = describe(node, BROKER, "0")["log.segment.bytes"]
    assert (value_and_source(entry), entry.read_only) == (("2097152", DYNAMIC_BROKER), False)
    assert synonyms(entry) == [
        ("log.segment.bytes", "2097152", DYNAMIC_BROKER),
        ("log.segment.bytes", "4194304", DYNAMIC_DEFAULT),
        ("log.segment.bytes", "1073741824", DEFAULT),
    ]
    (default_entry,) = describe(node, BROKER, "").values()
    assert (default_entry.name, value_and_source(default_entry)) == (
        "log.segment.bytes",
        ("4194304", DYNAMIC_DEFAULT),
    )
    assert synonyms(default_entry) == [("log.segment.bytes", "4194304", DYNAMIC_DEFAULT)]
    topic_entry = describe(node, 2, "layered")["segment.bytes"]
    assert value_and_source(topic_entry) == ("2097152", DYNAMIC_BROKER)
    assert synonyms(topic_entry) == synonyms(entry)
    # Without the per-broker value the cluster default applies.
    assert alter(node, "0", ("log.segment.bytes", None, DELETE)) == (0, "")
    topic_entry = describe(node, 2, "layered")["segment.bytes"]
    assert value_and_source(topic_entry) == ("4194304", DYNAMIC_DEFAULT)
    # Static keys stay read-only; the thread pools are dynamic (accepted, ignored).
    broker_entries = describe(node, BROKER, "0")
    assert broker_entries["log.retention.hours"].read_only
    assert alter(node, "0", ("num.io.threads", "4", SET)) == (0, "")
    assert value_and_source(describe(node, BROKER, "0")["num.io.threads"]) == (
        "4",
        DYNAMIC_BROKER,
    )
    # APPEND to a LIST starts from the value in force (the built-in "delete" here).
    append = AlterConfigOpType.APPEND
    assert alter(node, "0", ("log.cleanup.policy", "compact", append)) == (0, "")
    policy = describe(node, 2, "layered")["cleanup.policy"]
    assert value_and_source(policy) == ("delete,compact", DYNAMIC_BROKER)


def test_static_bad_and_unknown_keys(clean_node: BrokerProcess) -> None:
    node = clean_node
    code, message = alter(node, "0", ("log.retention.hours", "1", SET))
    assert code == ErrorCode.INVALID_CONFIG
    assert "Cannot update these configs dynamically: Set(log.retention.hours)" in message
    code, message = alter(node, "", ("listeners", "PLAINTEXT://:1", SET))
    assert (code, "Set(listeners)" in message) == (ErrorCode.INVALID_CONFIG, True)
    code, message = alter(node, "", ("log.segment.bytes", "1", SET))
    assert (code, "log.segment.bytes" in message) == (ErrorCode.INVALID_CONFIG, True)
    code, message = alter(
        node,
        "0",
        ("log.cleaner.min.compaction.lag.ms", "10", SET),
        ("log.cleaner.max.compaction.lag.ms", "5", SET),
    )
    assert (code, "max.compaction.lag.ms" in message) == (ErrorCode.INVALID_CONFIG, True)
    # Another broker's resource is that broker's to answer.
    assert alter(node, "3", ("log.cleanup.policy", "compact", SET), wire=True)[0] == (
        ErrorCode.INVALID_REQUEST
    )
    assert describe(node, BROKER, "") == {}
    assert describe(node, BROKER, "0")["log.cleanup.policy"].config_source == DEFAULT
    # Thread pools change by at most a factor of two at a time (num.io.threads is 8).
    code, message = alter(node, "0", ("num.io.threads", "17", SET))
    assert (code, "at most" in message or "double" in message) == (ErrorCode.INVALID_CONFIG, True)
    # Kafka keeps keys it does not know (custom configs of plugins), and lists them.
    assert alter(node, "0", ("custom.plugin.setting", "x", SET)) == (0, "")
    custom = describe(node, BROKER, "0")["custom.plugin.setting"]
    assert (value_and_source(custom), custom.read_only, custom.config_type) == (
        ("x", DYNAMIC_BROKER),
        True,
        0,  # UNKNOWN
    )


def test_kafka_python_alters_and_describes_broker_configs(clean_node: BrokerProcess) -> None:
    node = clean_node
    client = KafkaAdminClient(bootstrap_servers=node.bootstrap)
    try:
        change = KpConfigResource(
            KpConfigResourceType.BROKER, "0", {"log.cleanup.policy": "compact"}
        )
        client.alter_configs([change])
        broker = KpConfigResource(KpConfigResourceType.BROKER, "0")
        described = client.describe_configs([broker], config_filter="all")
    finally:
        client.close()
    entry = described["broker"]["0"]["log.cleanup.policy"]
    assert entry["value"] == "compact"
    assert value_and_source(describe(node, BROKER, "0")["log.cleanup.policy"]) == (
        "compact",
        DYNAMIC_BROKER,
    )


# --- a cluster --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    zookeeper: ZooKeeperServer,  # noqa: F811
) -> Iterator[tuple[list[BrokerProcess], str]]:
    """Three brokers of one cluster and their ``zookeeper.connect``."""
    connect = f"{zookeeper.hosts}/pystream-test/{uuid.uuid4().hex[:12]}"
    brokers = start_cluster(
        tmp_path_factory.mktemp("dynamic-cluster"),
        connect,
        {"controlled.shutdown.retry.backoff.ms": "200", "log.retention.check.interval.ms": "100"},
    )
    try:
        yield brokers, connect
    finally:
        for broker in brokers:
            broker.close()


def znode(connect: str, path: str) -> Any:
    """A znode's JSON, or a list of children for a path ending in '/'."""
    from kazoo.client import KazooClient

    client = KazooClient(hosts=connect)
    client.start(15)
    try:
        if path.endswith("/"):
            return [
                json.loads(client.get(path + child)[0])
                for child in sorted(client.get_children(path))
            ]
        return json.loads(client.get(path)[0])
    finally:
        client.stop()
        client.close()


def segment_files(broker: BrokerProcess, topic: str) -> int:
    return len(list(Path(broker.log_dir, f"{topic}-0").glob("*.log")))


def test_cluster_wide_and_per_broker_configs(cluster: tuple[list[BrokerProcess], str]) -> None:
    brokers, connect = cluster
    admin = AdminClient({"bootstrap.servers": bootstrap(brokers)})
    ids = by_id(brokers)
    create(admin, "rolled", [[1]])  # one replica, on broker 1: an existing topic
    create(admin, "expiring", [[2]], **{"segment.bytes": "1024"})  # on broker 2, many segments
    produce(ids[2], "expiring", 200, **{"batch.size": "200"})
    assert earliest(admin, "expiring") == 0

    # A cluster-wide default set through broker 0 reaches broker 2's existing topic: the next
    # retention check there deletes every segment.
    assert alter(ids[0], "", ("log.retention.ms", "1", SET)) == (0, "")
    assert wait_until(lambda: earliest(admin, "expiring"), 30, what="retention on broker 2")
    assert earliest(admin, "expiring") == 200

    assert alter(ids[0], "", ("log.retention.ms", "3600000", SET)) == (0, "")
    # Kafka's znode and change notification, which other brokers (and tools) follow.
    assert znode(connect, "/config/brokers/<default>") == {
        "version": 1,
        "config": {"log.retention.ms": "3600000"},
    }
    assert {"version": 2, "entity_path": "brokers/<default>"} in znode(connect, "/config/changes/")
    for broker_id, broker in ids.items():
        wait_until(
            lambda broker=broker, broker_id=broker_id: (
                value_and_source(describe(broker, BROKER, str(broker_id))["log.retention.ms"])
                == ("3600000", DYNAMIC_DEFAULT)
            ),
            30,
            what=f"broker {broker_id} to see the cluster-wide default",
        )

    # Per broker: broker 1 only.  A dynamic log.segment.bytes reaches its existing topic.
    assert alter(ids[1], "1", ("log.segment.bytes", "1024", SET)) == (0, "")
    assert znode(connect, "/config/brokers/1") == {
        "version": 1,
        "config": {"log.segment.bytes": "1024"},
    }
    assert {"version": 2, "entity_path": "brokers/1"} in znode(connect, "/config/changes/")
    assert value_and_source(describe(ids[1], BROKER, "1")["log.segment.bytes"]) == (
        "1024",
        DYNAMIC_BROKER,
    )
    for other in (0, 2):
        entry = describe(ids[other], BROKER, str(other))["log.segment.bytes"]
        assert value_and_source(entry) == ("1073741824", DEFAULT)
    produce(ids[1], "rolled", 100, **{"batch.size": "200"})
    assert segment_files(ids[1], "rolled") > 1  # rolled at ~1 KiB, not at 1 GiB

    # Both levels survive restarts (read back from ZooKeeper).
    ids[2].restart()
    ids[1].restart()
    assert value_and_source(describe(ids[2], BROKER, "2")["log.retention.ms"]) == (
        "3600000",
        DYNAMIC_DEFAULT,
    )
    entries = describe(ids[1], BROKER, "1")
    assert value_and_source(entries["log.segment.bytes"]) == ("1024", DYNAMIC_BROKER)
    assert value_and_source(entries["log.retention.ms"]) == ("3600000", DYNAMIC_DEFAULT)
    assert value_and_source(describe(ids[1], 2, "rolled")["segment.bytes"]) == (
        "1024",
        DYNAMIC_BROKER,
    )
