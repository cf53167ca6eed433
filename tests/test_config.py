"""Topic-level configuration: Kafka's names, types, defaults, validation and broker synonyms."""

from __future__ import annotations

import dataclasses
import re

import pytest

from pystream.config import (
    TOPIC_CONFIGS,
    BrokerConfig,
    ConfigSource,
    ConfigType,
    LogConfig,
    broker_synonyms,
    parse_value,
    validate_dynamic_broker_configs,
)
from pystream.errors import InvalidConfigError

# Every topic config of Kafka 3.9 with its default, from Kafka 3.9.0's LogConfig.java (the
# CONFIG definitions) and TopicConfig.java: DescribeConfigs lists exactly these.
KAFKA_DEFAULTS = {
    "cleanup.policy": "delete",
    "compression.gzip.level": "-1",
    "compression.lz4.level": "9",
    "compression.type": "producer",
    "compression.zstd.level": "3",
    "delete.retention.ms": "86400000",
    "file.delete.delay.ms": "60000",
    "flush.messages": "9223372036854775807",
    "flush.ms": "9223372036854775807",
    "follower.replication.throttled.replicas": "",
    "index.interval.bytes": "4096",
    "leader.replication.throttled.replicas": "",
    "local.retention.bytes": "-2",
    "local.retention.ms": "-2",
    "max.compaction.lag.ms": "9223372036854775807",
    "max.message.bytes": "1048588",
    "message.downconversion.enable": "true",
    "message.format.version": "3.0-IV1",
    "message.timestamp.difference.max.ms": "9223372036854775807",
    "message.timestamp.type": "CreateTime",
    "message.timestamp.before.max.ms": "9223372036854775807",
    "message.timestamp.after.max.ms": "9223372036854775807",
    "min.cleanable.dirty.ratio": "0.5",
    "min.compaction.lag.ms": "0",
    "min.insync.replicas": "1",
    "preallocate": "false",
    "remote.log.copy.disable": "false",
    "remote.log.delete.on.disable": "false",
    "remote.storage.enable": "false",
    "retention.bytes": "-1",
    "retention.ms": "604800000",
    "segment.bytes": "1073741824",
    "segment.index.bytes": "10485760",
    "segment.jitter.ms": "0",
    "segment.ms": "604800000",
    "unclean.leader.election.enable": "false",
}


def test_defaults_match_kafka() -> None:
    config = LogConfig()
    assert config.to_properties() == KAFKA_DEFAULTS
    assert all(e.source is ConfigSource.DEFAULT_CONFIG for e in config.entries())
    assert config.non_default_entries() == []
    assert config.overrides() == {}


def test_every_definition_has_a_pythonic_attribute() -> None:
    fields = {f.name for f in dataclasses.fields(LogConfig)} - {"sources"}
    assert fields == {d.attribute for d in TOPIC_CONFIGS.values()}
    assert TOPIC_CONFIGS["segment.bytes"].attribute == "segment_bytes"


def test_from_properties_parses_strings() -> None:
    config = LogConfig.from_properties(
        {
            "segment.bytes": " 1048576 ",
            "cleanup.policy": "compact, delete",
            "preallocate": "TRUE",
            "min.cleanable.dirty.ratio": "0.25",
            "message.timestamp.type": "LogAppendTime",
            "retention.ms": "-1",
        }
    )
    assert config.segment_bytes == 1048576
    assert config.cleanup_policy == ("compact", "delete")
    assert config.compact_enabled and config.delete_enabled
    assert config.preallocate is True
    assert config.min_cleanable_dirty_ratio == 0.25
    assert config.log_append_time
    assert config.retention_ms == -1
    assert config.get("segment.bytes") == 1048576


def test_typed_values_are_accepted() -> None:
    config = LogConfig.from_properties({"segment.bytes": 4096, "preallocate": True})
    assert config.segment_bytes == 4096 and config.preallocate is True


@pytest.mark.parametrize(
    ("key", "value", "expected_in_message"),
    [
        ("segment.bytes", "13", "at least 14"),
        ("segment.bytes", "1_000", "32-bit integer"),
        ("segment.bytes", "2147483648", "32-bit integer"),
        ("segment.bytes", "abc", "32-bit integer"),
        ("retention.ms", "-2", "at least -1"),
        ("flush.messages", "0", "at least 1"),
        ("cleanup.policy", "remove", "delete, compact"),
        ("cleanup.policy", "", "non-empty"),
        ("cleanup.policy", "delete,delete", "distinct"),
        ("compression.type", "brotli", "producer"),
        ("compression.type", "GZIP", "gzip"),  # case-sensitive, as Kafka
        ("compression.gzip.level", "0", "between 1 and 9 inclusive, or -1"),  # KIP-390's ranges
        ("compression.lz4.level", "18", "between 1 and 17"),
        ("compression.zstd.level", "23", "between -131072 and 22"),
        ("message.timestamp.type", "createtime", "CreateTime"),
        ("min.cleanable.dirty.ratio", "1.5", "between 0 and 1"),
        ("min.cleanable.dirty.ratio", "nan", "a number"),
        ("preallocate", "yes", "true or false"),
        ("min.insync.replicas", "0", "at least 1"),
        ("segment.ms", "0", "at least 1"),
        ("max.message.bytes", True, "32-bit integer"),
    ],
)
def test_invalid_values_name_the_key_and_what_is_allowed(
    key: str, value: object, expected_in_message: str
) -> None:
    with pytest.raises(InvalidConfigError) as info:
        LogConfig.from_properties({key: value})
    assert key in str(info.value)
    assert expected_in_message in str(info.value)
    assert info.value.error_code == 40


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(InvalidConfigError, match="Unknown topic config name: 'segment.size'"):
        LogConfig.from_properties({"segment.size": "1"})


def test_conflicting_compaction_lags_are_rejected() -> None:
    with pytest.raises(InvalidConfigError, match="min.compaction.lag.ms"):
        LogConfig.from_properties({"min.compaction.lag.ms": "10", "max.compaction.lag.ms": "5"})


def test_overrides_on_top_of_defaults_track_sources() -> None:
    broker = LogConfig.from_broker_properties(
        {"log.segment.bytes": "2048", "log.retention.hours": "1"}
    )
    topic = LogConfig.from_properties({"retention.ms": "5000"}, defaults=broker)
    assert topic.segment_bytes == 2048
    assert topic.retention_ms == 5000
    assert topic.source("segment.bytes") is ConfigSource.STATIC_BROKER_CONFIG
    assert topic.source("retention.ms") is ConfigSource.TOPIC_CONFIG
    assert topic.source("flush.ms") is ConfigSource.DEFAULT_CONFIG
    assert topic.overrides() == {"retention.ms": "5000"}
    assert {e.name: e.value for e in topic.non_default_entries()} == {
        "segment.bytes": "2048",
        "retention.ms": "5000",
    }
    # Sources are bookkeeping, not part of equality.
    assert LogConfig.from_properties({"segment.bytes": "2048"}) == dataclasses.replace(
        LogConfig(), segment_bytes=2048
    )


def test_broker_synonyms_and_units() -> None:
    assert broker_synonyms("segment.bytes") == ("log.segment.bytes",)
    assert broker_synonyms("retention.ms") == (
        "log.retention.ms",
        "log.retention.minutes",
        "log.retention.hours",
    )
    assert broker_synonyms("max.message.bytes") == ("message.max.bytes",)
    assert broker_synonyms("cleanup.policy") == ("log.cleanup.policy",)
    assert broker_synonyms("flush.messages") == ("log.flush.interval.messages",)
    hours = LogConfig.from_broker_properties({"log.retention.hours": "2"})
    assert hours.retention_ms == 2 * 3_600_000
    minutes = LogConfig.from_broker_properties(
        {"log.retention.hours": "2", "log.retention.minutes": "3"}
    )
    assert minutes.retention_ms == 3 * 60_000  # the finer unit wins
    millis = LogConfig.from_broker_properties(
        {"log.retention.ms": "7", "log.retention.minutes": "3"}
    )
    assert millis.retention_ms == 7
    unlimited = LogConfig.from_broker_properties({"log.retention.hours": "-1"})
    assert unlimited.retention_ms == -1
    rolls = LogConfig.from_broker_properties({"log.roll.hours": "1", "message.max.bytes": "100"})
    assert rolls.segment_ms == 3_600_000 and rolls.max_message_bytes == 100
    ignored = LogConfig.from_broker_properties({"listeners": "PLAINTEXT://:9092"})
    assert ignored == LogConfig()


def test_invalid_broker_value_names_the_broker_key() -> None:
    with pytest.raises(InvalidConfigError, match="log.segment.bytes"):
        LogConfig.from_broker_properties({"log.segment.bytes": "1"})


def test_parse_value_rejects_null() -> None:
    with pytest.raises(InvalidConfigError, match="x"):
        parse_value("x", ConfigType.LONG, None)


def test_config_is_immutable() -> None:
    config = LogConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.segment_bytes = 1  # type: ignore[misc]


# --- broker configs ---------------------------------------------------------------------------


def test_broker_defaults_serve_a_laptop() -> None:
    from pystream.config import BrokerConfig

    config = BrokerConfig.from_properties({})
    assert config.listeners == "PLAINTEXT://127.0.0.1:9092"
    assert config.log_dirs == ("./pystream-data",)
    assert config.auto_create_topics_enable is True
    assert config.num_partitions == 1
    assert config.socket_request_max_bytes == 104_857_600


def test_broker_properties_feed_topic_defaults_and_collect_unknown_keys() -> None:
    from pystream.config import BrokerConfig

    config = BrokerConfig.from_properties(
        {
            "log.dir": "/data/a",
            "log.segment.bytes": "1048576",
            "log.retention.hours": "1",
            "message.max.bytes": "2000000",
            "no.such.key": "x",
        }
    )
    assert config.log_dirs == ("/data/a",)
    assert config.log_config.segment_bytes == 1048576
    assert config.log_config.retention_ms == 3_600_000
    assert config.log_config.max_message_bytes == 2_000_000
    assert config.unknown_keys == ("no.such.key",)


@pytest.mark.parametrize(
    ("key", "value"),
    [("num.partitions", "0"), ("broker.id", "x"), ("log.dirs", ""), ("log.segment.bytes", "1")],
)
def test_bad_broker_values_name_the_key(key: str, value: str) -> None:
    from pystream.config import BrokerConfig

    with pytest.raises(InvalidConfigError, match=key.replace(".", r"\.")):
        BrokerConfig.from_properties({key: value})


def test_properties_file_and_overrides(tmp_path) -> None:
    from pystream.config import parse_overrides, read_properties_file

    path = tmp_path / "server.properties"
    path.write_text(
        "# comment\n! also a comment\n\nbroker.id = 2\nlisteners=PLAINTEXT://127.0.0.1:\\\n  9093\n"
        "log.dirs: /a,/b\n"
    )
    assert read_properties_file(str(path)) == {
        "broker.id": "2",
        "listeners": "PLAINTEXT://127.0.0.1:9093",
        "log.dirs": "/a,/b",
    }
    assert parse_overrides(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(InvalidConfigError, match="key=value"):
        parse_overrides(["novalue"])


# --- dynamic broker configs -------------------------------------------------------------------


def test_dynamic_layers_override_static_as_kafka_merges_them() -> None:
    static = BrokerConfig.from_properties({"log.retention.ms": "1000", "log.segment.bytes": "2048"})
    config = static.with_dynamic(
        {"log.segment.bytes": "4096"},
        {"log.segment.bytes": "8192", "log.retention.hours": "1", "message.max.bytes": "300"},
    )
    log = config.log_config
    assert (log.segment_bytes, log.source("segment.bytes")) == (
        4096,
        ConfigSource.DYNAMIC_BROKER_CONFIG,
    )
    assert (log.max_message_bytes, log.source("max.message.bytes")) == (
        300,
        ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG,
    )
    # Kafka merges the layers into one set of properties first: the static log.retention.ms
    # still beats a dynamic log.retention.hours (which is not dynamic anyway: ignored).
    assert (log.retention_ms, log.source("retention.ms")) == (
        1000,
        ConfigSource.STATIC_BROKER_CONFIG,
    )
    assert config.dynamic_default == {"log.segment.bytes": "8192", "message.max.bytes": "300"}
    assert config.source_of("log.segment.bytes") is ConfigSource.DYNAMIC_BROKER_CONFIG
    assert config.static_properties == static.static_properties
    assert static.with_dynamic({}, {}) == static


def test_stored_dynamic_values_that_are_invalid_or_static_are_ignored() -> None:
    static = BrokerConfig.from_properties({})
    config = static.with_dynamic(
        {"log.segment.bytes": "1", "custom.plugin": "x", "num.io.threads": "4"},
        {"num.partitions": "3"},  # static only: written by some tool, ignored as by Kafka
    )
    assert (config.log_config.segment_bytes, config.num_partitions) == (1024**3, 1)
    # Custom keys are kept (DescribeConfigs reports them, as Kafka).
    assert config.dynamic_broker == {"custom.plugin": "x", "num.io.threads": "4"}
    assert config.dynamic_default == {}
    assert config.num_io_threads == 4


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"log.retention.hours": "1"}, "Set(log.retention.hours)"),
        ({"listeners": "x", "num.partitions": "2"}, "Set(listeners, num.partitions)"),
        ({"log.segment.bytes": "1"}, "log.segment.bytes"),
        ({"num.io.threads": "0"}, "num.io.threads"),
    ],
)
def test_dynamic_changes_are_validated_as_kafka(props: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidConfigError, match=re.escape(message)):
        validate_dynamic_broker_configs(props, per_broker=True)
    validate_dynamic_broker_configs(
        {"log.cleanup.policy": "compact", "x.custom": "1"}, per_broker=False
    )
