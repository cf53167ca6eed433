"""DescribeConfigs, AlterConfigs and IncrementalAlterConfigs against a real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from admin_helpers import ck_admin, ck_error, produce
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource as AioConfigResource
from aiokafka.admin.config_resource import ConfigResourceType as AioConfigResourceType
from broker_process import BrokerProcess
from confluent_kafka import TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    OffsetSpec,
)
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType as KpConfigResourceType
from waiting import wait_until

from pystream.config import DYNAMIC_BROKER_CONFIGS, TOPIC_CONFIGS, ConfigSource
from pystream.errors import ErrorCode
from pystream.protocol.messages.describe_configs import DescribeConfigsRequest
from pystream.protocol.messages.incremental_alter_configs import IncrementalAlterConfigsRequest

# AlterConfigs (replace all) is deprecated in the clients, but they still send it.
pytestmark = pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")

TOPIC, BROKER = 2, 4
TOPIC_CONFIG = int(ConfigSource.TOPIC_CONFIG)
STATIC = int(ConfigSource.STATIC_BROKER_CONFIG)
DEFAULT = int(ConfigSource.DEFAULT_CONFIG)


@pytest.fixture
def config_broker(broker_factory: object) -> BrokerProcess:
    """A broker with topic defaults in its properties (log.retention.hours=48) that checks
    retention often."""
    return broker_factory(  # type: ignore[operator]
        **{"log.retention.hours": "48", "log.retention.check.interval.ms": "100"}
    )


def _create(admin: AdminClient, name: str, **config: str) -> None:
    future = admin.create_topics([NewTopic(name, 1, 1, config=config)])[name]
    assert ck_error(future) == (0, "")


def _describe(admin: AdminClient, resource: ConfigResource) -> dict[str, ConfigEntry]:
    return admin.describe_configs([resource])[resource].result(15)


def _topic_values(admin: AdminClient, topic: str) -> dict[str, str]:
    entries = _describe(admin, ConfigResource("topic", topic))
    return {name: entry.value for name, entry in entries.items()}


# --- DescribeConfigs --------------------------------------------------------------------------


def test_describe_topic_configs_with_sources_and_synonyms(config_broker: BrokerProcess) -> None:
    admin = ck_admin(config_broker)
    _create(admin, "described", **{"segment.bytes": "1048576"})
    entries = _describe(admin, ConfigResource("topic", "described"))
    assert set(entries) == set(TOPIC_CONFIGS)
    override, hours, default = (
        entries["segment.bytes"],
        entries["retention.ms"],
        entries["compression.type"],
    )
    assert (override.value, override.source) == ("1048576", TOPIC_CONFIG)
    assert (default.value, default.source) == ("producer", DEFAULT)
    assert not any(e.is_read_only or e.is_sensitive for e in entries.values())
    # librdkafka asks for synonyms: the chain from the override down to the broker default.
    assert [(s.name, s.value, s.source) for s in override.synonyms.values()] == [
        ("segment.bytes", "1048576", TOPIC_CONFIG),
        ("log.segment.bytes", "1073741824", DEFAULT),
    ]
    # log.retention.hours=48 sets the value, but Kafka's synonyms of retention.ms start at
    # its primary broker key, log.retention.ms, which no layer sets: none, and the source
    # is DEFAULT_CONFIG (ConfigHelper.configSynonyms' dropWhile), not log.retention.hours.
    assert (hours.value, hours.source, dict(hours.synonyms)) == (
        str(48 * 3600 * 1000),
        DEFAULT,
        {},
    )


# Every topic config of Kafka 3.9 (LogConfig.java's CONFIG, TopicConfig.java names): default,
# DescribeConfigs type (BOOLEAN 1, STRING 2, INT 3, LONG 5, DOUBLE 6, LIST 7), and the synonym a
# broker with nothing set reports: the primary broker key's built-in default (Kafka's
# ServerTopicConfigSynonyms and KafkaConfig defaults), or none when that key has no default
# (log.retention.ms, log.roll.ms ...) or the topic config no broker key (throttles, remote).
LONG_MAX = str(2**63 - 1)
KAFKA_39_TOPIC_CONFIGS: dict[str, tuple[str, int, tuple[str, str] | None]] = {
    "cleanup.policy": ("delete", 7, ("log.cleanup.policy", "delete")),
    "compression.gzip.level": ("-1", 3, ("compression.gzip.level", "-1")),
    "compression.lz4.level": ("9", 3, ("compression.lz4.level", "9")),
    "compression.type": ("producer", 2, ("compression.type", "producer")),
    "compression.zstd.level": ("3", 3, ("compression.zstd.level", "3")),
    "delete.retention.ms": ("86400000", 5, ("log.cleaner.delete.retention.ms", "86400000")),
    "file.delete.delay.ms": ("60000", 5, ("log.segment.delete.delay.ms", "60000")),
    "flush.messages": (LONG_MAX, 5, ("log.flush.interval.messages", LONG_MAX)),
    "flush.ms": (LONG_MAX, 5, None),
    "follower.replication.throttled.replicas": ("", 7, None),
    "index.interval.bytes": ("4096", 3, ("log.index.interval.bytes", "4096")),
    "leader.replication.throttled.replicas": ("", 7, None),
    "local.retention.bytes": ("-2", 5, ("log.local.retention.bytes", "-2")),
    "local.retention.ms": ("-2", 5, ("log.local.retention.ms", "-2")),
    "max.compaction.lag.ms": (LONG_MAX, 5, ("log.cleaner.max.compaction.lag.ms", LONG_MAX)),
    "max.message.bytes": ("1048588", 3, ("message.max.bytes", "1048588")),
    "message.downconversion.enable": ("true", 1, ("log.message.downconversion.enable", "true")),
    "message.format.version": ("3.0-IV1", 2, ("log.message.format.version", "3.0-IV1")),
    "message.timestamp.after.max.ms": (
        LONG_MAX,
        5,
        ("log.message.timestamp.after.max.ms", LONG_MAX),
    ),
    "message.timestamp.before.max.ms": (
        LONG_MAX,
        5,
        ("log.message.timestamp.before.max.ms", LONG_MAX),
    ),
    "message.timestamp.difference.max.ms": (
        LONG_MAX,
        5,
        ("log.message.timestamp.difference.max.ms", LONG_MAX),
    ),
    "message.timestamp.type": ("CreateTime", 2, ("log.message.timestamp.type", "CreateTime")),
    "min.cleanable.dirty.ratio": ("0.5", 6, ("log.cleaner.min.cleanable.ratio", "0.5")),
    "min.compaction.lag.ms": ("0", 5, ("log.cleaner.min.compaction.lag.ms", "0")),
    "min.insync.replicas": ("1", 3, ("min.insync.replicas", "1")),
    "preallocate": ("false", 1, ("log.preallocate", "false")),
    "remote.log.copy.disable": ("false", 1, None),
    "remote.log.delete.on.disable": ("false", 1, None),
    "remote.storage.enable": ("false", 1, None),
    "retention.bytes": ("-1", 5, ("log.retention.bytes", "-1")),
    "retention.ms": ("604800000", 5, None),
    "segment.bytes": ("1073741824", 3, ("log.segment.bytes", "1073741824")),
    "segment.index.bytes": ("10485760", 3, ("log.index.size.max.bytes", "10485760")),
    "segment.jitter.ms": ("0", 5, None),
    "segment.ms": ("604800000", 5, None),
    "unclean.leader.election.enable": ("false", 1, ("unclean.leader.election.enable", "false")),
}


def test_topic_configs_are_kafka_39s(broker: BrokerProcess) -> None:
    """A topic of a broker with nothing configured describes exactly as on Kafka 3.9."""
    _create(ck_admin(broker), "kafka-39")
    request = DescribeConfigsRequest(
        resources=[
            DescribeConfigsRequest.DescribeConfigsResource(
                resource_type=TOPIC, resource_name="kafka-39", configuration_keys=None
            )
        ],
        include_synonyms=True,
        include_documentation=True,
    )
    with broker.wire() as wire:
        (result,) = wire.request(32, 4, request).results
    described = {
        c.name: (
            c.value,
            c.config_type,
            [(s.name, s.value) for s in c.synonyms],
            c.config_source,
            c.read_only,
            c.is_sensitive,
        )
        for c in result.configs
    }
    expected = {
        name: (value, config_type, [synonym] if synonym else [], DEFAULT, False, False)
        for name, (value, config_type, synonym) in KAFKA_39_TOPIC_CONFIGS.items()
    }
    assert described == expected
    assert all(c.documentation for c in result.configs)
    assert all(s.source == DEFAULT for c in result.configs for s in c.synonyms)


def test_describe_broker_configs(config_broker: BrokerProcess) -> None:
    admin = ck_admin(config_broker)
    entries = _describe(admin, ConfigResource("broker", "0"))
    assert entries["log.retention.hours"].value == "48"
    assert entries["log.retention.hours"].source == STATIC
    assert entries["log.dirs"].value == str(config_broker.log_dir)  # given by the test
    assert entries["log.dirs"].source == STATIC
    assert (entries["num.partitions"].value, entries["num.partitions"].source) == ("1", DEFAULT)
    assert entries["log.retention.ms"].value is None  # unset, as in Kafka
    # Read-only unless Kafka can change the key dynamically.
    assert {name for name, e in entries.items() if not e.is_read_only} == set(
        DYNAMIC_BROKER_CONFIGS
    )
    assert entries["log.retention.hours"].is_read_only
    # "" is the cluster-wide dynamic defaults (there are none); other ids are other brokers'.
    resource = DescribeConfigsRequest.DescribeConfigsResource
    request = DescribeConfigsRequest(
        resources=[
            resource(resource_type=BROKER, resource_name="", configuration_keys=None),
            resource(resource_type=BROKER, resource_name="7", configuration_keys=None),
            resource(resource_type=BROKER, resource_name="x", configuration_keys=None),
        ]
    )
    with config_broker.wire() as wire:
        results = wire.request(32, 1, request).results
    assert [(r.error_code, r.configs) for r in results] == [
        (0, []),
        (ErrorCode.INVALID_REQUEST, []),
        (ErrorCode.INVALID_REQUEST, []),
    ]


def test_describe_configs_errors_are_per_resource(config_broker: BrokerProcess) -> None:
    admin = ck_admin(config_broker)
    _create(admin, "present")
    resources = [
        ConfigResource("topic", "present"),
        ConfigResource("topic", "absent"),
        ConfigResource("topic", "bad name!"),
    ]
    futures = admin.describe_configs(resources)
    assert [ck_error(futures[r])[0] for r in resources] == [
        0,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.INVALID_TOPIC_EXCEPTION,
    ]
    request = DescribeConfigsRequest(
        resources=[
            DescribeConfigsRequest.DescribeConfigsResource(
                resource_type=16, resource_name="metrics", configuration_keys=None
            ),
            DescribeConfigsRequest.DescribeConfigsResource(
                resource_type=TOPIC, resource_name="present", configuration_keys=["flush.ms"]
            ),
        ]
    )
    with config_broker.wire() as wire:
        response = wire.request(32, 4, request)
    unsupported, filtered = response.results
    assert unsupported.error_code == ErrorCode.INVALID_REQUEST and unsupported.configs == []
    assert [c.name for c in filtered.configs] == ["flush.ms"]


@pytest.mark.parametrize("version", [0, 1, 3, 4])
def test_describe_configs_versions(config_broker: BrokerProcess, version: int) -> None:
    _create(ck_admin(config_broker), "versioned", **{"retention.bytes": "1000"})
    request = DescribeConfigsRequest(
        resources=[
            DescribeConfigsRequest.DescribeConfigsResource(
                resource_type=TOPIC,
                resource_name="versioned",
                configuration_keys=["retention.bytes", "preallocate"],
            )
        ],
        include_synonyms=True,
        include_documentation=True,
    )
    with config_broker.wire() as wire:
        (result,) = wire.request(32, version, request).results
    entries = {c.name: c for c in result.configs}
    changed, default = entries["retention.bytes"], entries["preallocate"]
    assert (changed.value, default.value) == ("1000", "false")
    if version == 0:  # is_default instead of a source; no synonyms
        assert (changed.is_default, default.is_default) == (False, True)
        return
    assert (changed.config_source, default.config_source) == (TOPIC_CONFIG, DEFAULT)
    assert [s.name for s in changed.synonyms] == ["retention.bytes", "log.retention.bytes"]
    if version >= 3:  # config types (LONG 5, BOOLEAN 1) and documentation
        assert (changed.config_type, default.config_type) == (5, 1)
        assert "Largest size" in changed.documentation


# --- AlterConfigs -----------------------------------------------------------------------------


def test_alter_configs_replaces_the_overrides(config_broker: BrokerProcess) -> None:
    admin = ck_admin(config_broker)
    _create(admin, "replaced", **{"segment.bytes": "1048576", "retention.ms": "1000"})
    resource = ConfigResource("topic", "replaced", set_config={"cleanup.policy": "compact"})
    assert ck_error(admin.alter_configs([resource])[resource]) == (0, "")
    values = _topic_values(admin, "replaced")
    assert values["cleanup.policy"] == "compact"
    # Keys left out return to the broker's value (log.retention.hours=48 here).
    assert values["segment.bytes"] == "1073741824"
    assert values["retention.ms"] == str(48 * 3600 * 1000)


def test_alter_configs_validation_and_validate_only(config_broker: BrokerProcess) -> None:
    admin = ck_admin(config_broker)
    _create(admin, "guarded", **{"retention.ms": "1000"})
    checked = ConfigResource("topic", "guarded", set_config={"retention.ms": "2000"})
    assert ck_error(admin.alter_configs([checked], validate_only=True)[checked]) == (0, "")
    assert _topic_values(admin, "guarded")["retention.ms"] == "1000"
    bad = [
        ConfigResource("topic", "guarded", set_config={"retention.ms": "-5"}),
        ConfigResource("topic", "missing", set_config={"retention.ms": "5"}),
        ConfigResource("broker", "0", set_config={"num.partitions": "5"}),
    ]
    futures = admin.alter_configs(bad)
    errors = [ck_error(futures[r]) for r in bad]
    assert [code for code, _ in errors] == [
        ErrorCode.INVALID_CONFIG,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.INVALID_CONFIG,  # num.partitions is not a dynamic broker config
    ]
    assert "retention.ms" in errors[0][1]
    assert "Cannot update these configs dynamically: Set(num.partitions)" in errors[2][1]
    assert _topic_values(admin, "guarded")["retention.ms"] == "1000"


def test_incremental_alter_configs(config_broker: BrokerProcess) -> None:
    admin = ck_admin(config_broker)
    _create(admin, "incremental", **{"segment.bytes": "1048576", "retention.ms": "1000"})

    def alter(*entries: ConfigEntry, validate_only: bool = False) -> tuple[int, str]:
        resource = ConfigResource("topic", "incremental", incremental_configs=list(entries))
        return ck_error(
            admin.incremental_alter_configs([resource], validate_only=validate_only)[resource]
        )

    def op(name: str, value: str | None, operation: AlterConfigOpType) -> ConfigEntry:
        return ConfigEntry(name, value, incremental_operation=operation)

    assert alter(
        op("max.message.bytes", "2000", AlterConfigOpType.SET),
        op("retention.ms", None, AlterConfigOpType.DELETE),
        op("cleanup.policy", "compact", AlterConfigOpType.APPEND),
    ) == (0, "")
    values = _topic_values(admin, "incremental")
    assert values["max.message.bytes"] == "2000"
    assert values["segment.bytes"] == "1048576"  # untouched
    assert values["retention.ms"] == str(48 * 3600 * 1000)  # deleted: the broker's value
    assert values["cleanup.policy"] == "delete,compact"
    assert alter(op("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT)) == (0, "")
    assert _topic_values(admin, "incremental")["cleanup.policy"] == "compact"
    # validate_only changes nothing; bad operations change nothing either.
    assert alter(op("segment.bytes", "2000000", AlterConfigOpType.SET), validate_only=True)[0] == 0
    code, message = alter(op("segment.bytes", "1", AlterConfigOpType.SET))
    assert code == ErrorCode.INVALID_CONFIG and "segment.bytes" in message
    code, message = alter(op("retention.ms", "5", AlterConfigOpType.APPEND))
    assert code == ErrorCode.INVALID_CONFIG and "LIST" in message
    code, message = alter(op("no.such.config", "5", AlterConfigOpType.SET))
    assert code == ErrorCode.INVALID_CONFIG and "no.such.config" in message
    assert _topic_values(admin, "incremental")["segment.bytes"] == "1048576"


def test_config_changes_apply_to_the_live_log_and_persist(config_broker: BrokerProcess) -> None:
    admin = ck_admin(config_broker)
    _create(admin, "shrinking", **{"segment.bytes": "1024"})  # many small segments
    produce(config_broker, "shrinking", 200, **{"batch.size": "200"})
    partition = TopicPartition("shrinking", 0)

    def earliest() -> int:
        return admin.list_offsets({partition: OffsetSpec.earliest()})[partition].result(15).offset

    assert earliest() == 0
    resource = ConfigResource(
        "topic",
        "shrinking",
        incremental_configs=[
            ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    assert ck_error(admin.incremental_alter_configs([resource])[resource]) == (0, "")
    # The next retention check (every 100 ms here) deletes every segment: all are too old.
    start = wait_until(earliest, what="retention.ms=1 to delete the old segments")
    assert start == 200
    config_broker.restart()
    admin = ck_admin(config_broker)
    assert _topic_values(admin, "shrinking")["retention.ms"] == "1"
    assert earliest() == 200


def test_static_broker_keys_cannot_be_altered_but_deletes_are_no_ops(
    config_broker: BrokerProcess,
) -> None:
    admin = ck_admin(config_broker)

    def alter(name: str, operation: AlterConfigOpType) -> int:
        entry = ConfigEntry("log.retention.hours", "1", incremental_operation=operation)
        resource = ConfigResource("broker", name, incremental_configs=[entry])
        return ck_error(admin.incremental_alter_configs([resource])[resource])[0]

    assert alter("0", AlterConfigOpType.SET) == ErrorCode.INVALID_CONFIG  # static only
    assert alter("0", AlterConfigOpType.DELETE) == 0  # there is no dynamic value to delete
    config = IncrementalAlterConfigsRequest.AlterableConfig(
        name="log.retention.hours", config_operation=1, value=None
    )
    request = IncrementalAlterConfigsRequest(
        resources=[
            IncrementalAlterConfigsRequest.AlterConfigsResource(
                resource_type=BROKER, resource_name=name, configs=[config]
            )
            for name in ("", "5")  # the cluster defaults; another broker
        ]
    )
    with config_broker.wire() as wire:
        responses = wire.request(44, 1, request).responses
    assert [r.error_code for r in responses] == [0, ErrorCode.INVALID_REQUEST]
    assert _describe(admin, ConfigResource("broker", "0"))["log.retention.hours"].value == "48"


# --- kafka-python and aiokafka ----------------------------------------------------------------


@pytest.fixture
def kp_admin(config_broker: BrokerProcess) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=config_broker.bootstrap)
    try:
        yield client
    finally:
        client.close()


def test_kafka_python_describe_and_alter_configs(
    config_broker: BrokerProcess, kp_admin: KafkaAdminClient
) -> None:
    _create(ck_admin(config_broker), "kp-configs", **{"segment.bytes": "1048576"})
    topic = KpConfigResource(KpConfigResourceType.TOPIC, "kp-configs")
    described = kp_admin.describe_configs([topic])  # v4; by default only modified configs
    assert described["topic"]["kp-configs"]["segment.bytes"]["value"] == "1048576"
    # kafka-python's alter_configs uses IncrementalAlterConfigs (SET) when the broker has it.
    change = KpConfigResource(KpConfigResourceType.TOPIC, "kp-configs", {"retention.ms": "5000"})
    kp_admin.alter_configs([change])
    values = _topic_values(ck_admin(config_broker), "kp-configs")
    assert (values["retention.ms"], values["segment.bytes"]) == ("5000", "1048576")
    broker = KpConfigResource(KpConfigResourceType.BROKER, "0")
    described = kp_admin.describe_configs([broker], config_filter="all")
    assert described["broker"]["0"]["log.retention.hours"]["value"] == "48"


def test_aiokafka_describe_and_alter_configs(config_broker: BrokerProcess) -> None:
    _create(ck_admin(config_broker), "aio-configs", **{"segment.bytes": "1048576"})

    async def run() -> tuple[object, object]:
        client = AIOKafkaAdminClient(bootstrap_servers=config_broker.bootstrap)
        await client.start()
        try:
            topic = AioConfigResource(AioConfigResourceType.TOPIC, "aio-configs")
            described = await client.describe_configs([topic])  # v2
            change = AioConfigResource(
                AioConfigResourceType.TOPIC, "aio-configs", {"retention.ms": "7000"}
            )
            altered = await client.alter_configs([change])  # v1: replaces every override
            return described, altered
        finally:
            await client.close()

    described, altered = asyncio.run(run())
    (response,) = described
    ((error_code, _, _, name, entries),) = response.resources
    assert (error_code, name) == (0, "aio-configs")
    assert ("segment.bytes", "1048576") in [(e[0], e[1]) for e in entries]
    (response,) = altered
    assert [r[0] for r in response.resources] == [0]
    values = _topic_values(ck_admin(config_broker), "aio-configs")
    assert (values["retention.ms"], values["segment.bytes"]) == ("7000", "1073741824")
