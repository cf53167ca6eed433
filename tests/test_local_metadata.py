"""LocalMetadataStore: topics survive a restart; bad input gets Kafka errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pystream.cluster.metadata.local_store import METADATA_FILE, LocalMetadataStore
from pystream.cluster.metadata.model import validate_topic_name
from pystream.errors import (
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    InvalidTopicException,
    KafkaStorageError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)


def test_topics_survive_reopen(tmp_path: Path) -> None:
    store = LocalMetadataStore(tmp_path, broker_id=3)
    created = store.create_topic_blocking("orders", 4, 1, {"retention.ms": "1000"})
    store.create_partitions_blocking("orders", 6)
    reopened = LocalMetadataStore(tmp_path, broker_id=3)
    assert reopened.cluster_id == store.cluster_id and len(store.cluster_id) == 22
    topic = reopened.get_topic("orders")
    assert topic is not None
    assert topic.topic_id == created.topic_id
    assert sorted(topic.partitions) == list(range(6))
    assert topic.partitions[5].leader == 3 and topic.partitions[5].isr == [3]
    assert topic.configs == {"retention.ms": "1000"}
    assert reopened.topic_by_id(created.topic_id) is topic


def test_errors(tmp_path: Path) -> None:
    store = LocalMetadataStore(tmp_path, broker_id=0)
    store.create_topic_blocking("a", 1)
    with pytest.raises(TopicAlreadyExistsError):
        store.create_topic_blocking("a", 1)
    with pytest.raises(InvalidPartitionsError):
        store.create_topic_blocking("b", 0)
    with pytest.raises(InvalidReplicationFactorError, match="1 available broker"):
        store.create_topic_blocking("b", 1, replication_factor=3)
    with pytest.raises(InvalidPartitionsError, match="must be larger"):
        store.create_partitions_blocking("a", 1)
    with pytest.raises(UnknownTopicOrPartitionError):
        store.delete_topic_blocking("missing")
    assert store.get_topic("b") is None  # failed creates left nothing behind
    store.delete_topic_blocking("a")
    assert LocalMetadataStore(tmp_path, broker_id=0).topics() == {}


def test_validate_only_changes_nothing(tmp_path: Path) -> None:
    store = LocalMetadataStore(tmp_path, broker_id=0)
    store.check_create_topic("x", 3, 1)
    assert store.get_topic("x") is None
    store.create_topic_blocking("x", 1)
    assert store.create_partitions_blocking("x", 3, validate_only=True) == [1, 2]
    assert len(LocalMetadataStore(tmp_path, 0).get_topic("x").partitions) == 1


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 250, "bad name", "ü", "a/b"])
def test_invalid_topic_names(name: str) -> None:
    with pytest.raises(InvalidTopicException):
        validate_topic_name(name)


def test_valid_topic_names() -> None:
    for name in ["a", "A.b_c-9", "a" * 249, "__consumer_offsets"]:
        validate_topic_name(name)


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    LocalMetadataStore(tmp_path, broker_id=0).create_topic_blocking("t", 1)
    (tmp_path / METADATA_FILE).write_text("{not json")
    with pytest.raises(KafkaStorageError, match="cannot read cluster metadata"):
        LocalMetadataStore(tmp_path, broker_id=0)
