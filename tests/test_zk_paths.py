"""The ZooKeeper layout: Kafka's znode JSON read and written, ``zookeeper.connect`` parsing."""

from __future__ import annotations

import json
import uuid

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from pystream.cluster.metadata.model import ProducerIdBlock  # noqa: E402
from pystream.cluster.zookeeper.paths import (  # noqa: E402
    BrokerInfo,
    EndPoint,
    LeaderAndIsr,
    TopicAssignment,
    decode_cluster_id,
    decode_config,
    decode_controller,
    decode_controller_epoch,
    decode_isr_change,
    decode_topic_id,
    encode_cluster_id,
    encode_config,
    encode_controller,
    encode_isr_change,
    encode_topic_id,
    new_topic_id,
    parse_connect,
    partition_state_path,
)
from pystream.cluster.zookeeper.producer_ids import decode_block, encode_block  # noqa: E402
from pystream.errors import InvalidConfigError  # noqa: E402

# Znode contents as a Kafka 3.x broker (ZooKeeper mode) writes them.
KAFKA_BROKER = (
    b'{"features":{},"listener_security_protocol_map":{"PLAINTEXT":"PLAINTEXT",'
    b'"INTERNAL":"SSL"},"endpoints":["PLAINTEXT://kafka-1:9092","INTERNAL://kafka-1:9093"],'
    b'"jmx_port":-1,"port":9092,"host":"kafka-1","version":5,"timestamp":"1690000000000",'
    b'"rack":"eu-west-1a"}'
)
KAFKA_TOPIC = (
    b'{"partitions":{"0":[1,2,3],"1":[2,3,1]},"topic_id":"h6a0Mx4RQ5-VfC2CCOWBpg",'
    b'"adding_replicas":{},"removing_replicas":{},"version":3}'
)
KAFKA_STATE = b'{"controller_epoch":3,"leader":2,"version":1,"leader_epoch":7,"isr":[2,3]}'


def test_kafka_broker_registration_is_understood() -> None:
    info = BrokerInfo.from_bytes(1, KAFKA_BROKER, epoch=42)
    assert info.endpoints == (
        EndPoint("PLAINTEXT", "kafka-1", 9092, "PLAINTEXT"),
        EndPoint("INTERNAL", "kafka-1", 9093, "SSL"),
    )
    assert (info.rack, info.epoch) == ("eu-west-1a", 42)


def test_broker_registration_round_trips_in_kafkas_format() -> None:
    info = BrokerInfo(
        7, (EndPoint("PLAINTEXT", "10.0.0.7", 9092), EndPoint("SSL", "::1", 9093, "SSL")), "r2"
    )
    value = json.loads(info.to_bytes())
    assert value["version"] == 5
    assert value["endpoints"] == ["PLAINTEXT://10.0.0.7:9092", "SSL://[::1]:9093"]
    assert value["listener_security_protocol_map"] == {"PLAINTEXT": "PLAINTEXT", "SSL": "SSL"}
    assert (value["host"], value["port"], value["rack"]) == ("10.0.0.7", 9092, "r2")
    assert BrokerInfo.from_bytes(7, info.to_bytes()) == info


def test_broker_without_rack_or_plaintext_listener() -> None:
    value = json.loads(BrokerInfo(3, (EndPoint("SSL", "h", 9093, "SSL"),)).to_bytes())
    assert "rack" not in value
    assert (value["host"], value["port"]) == (None, -1)


def test_topic_assignment_and_topic_id_in_kafkas_text_form() -> None:
    assignment = TopicAssignment.from_bytes("orders", KAFKA_TOPIC)
    assert assignment.partitions == {0: [1, 2, 3], 1: [2, 3, 1]}
    assert encode_topic_id(assignment.topic_id) == "h6a0Mx4RQ5-VfC2CCOWBpg"
    again = json.loads(assignment.to_bytes())
    assert again == json.loads(KAFKA_TOPIC)


def test_topic_ids_are_22_characters_and_never_start_with_a_dash() -> None:
    for _ in range(200):
        topic_id = new_topic_id()
        text = encode_topic_id(topic_id)
        assert len(text) == 22 and not text.startswith("-")
        assert decode_topic_id(text) == topic_id
    assert decode_topic_id(encode_topic_id(uuid.UUID(int=0))) == uuid.UUID(int=0)


def test_partition_state_round_trip() -> None:
    state = LeaderAndIsr.from_bytes(KAFKA_STATE)
    assert state == LeaderAndIsr(leader=2, leader_epoch=7, isr=[2, 3], controller_epoch=3)
    assert json.loads(state.to_bytes()) == json.loads(KAFKA_STATE)
    assert partition_state_path("t", 4) == "/brokers/topics/t/partitions/4/state"


def test_small_znodes() -> None:
    assert decode_config(encode_config({"b": "2", "a": "1"})) == {"a": "1", "b": "2"}
    assert json.loads(encode_config({"x": "y"})) == {"version": 1, "config": {"x": "y"}}
    assert decode_config(b"") == {}
    assert decode_controller(encode_controller(5)) == 5
    assert json.loads(encode_controller(5))["brokerid"] == 5
    assert decode_controller_epoch(b"12") == 12
    assert json.loads(encode_cluster_id("abc")) == {"version": "1", "id": "abc"}
    assert decode_cluster_id(encode_cluster_id("abc")) == "abc"
    assert decode_isr_change(encode_isr_change([("t", 1), ("u", 0)])) == [("t", 1), ("u", 0)]


def test_producer_id_block_in_kafkas_format() -> None:
    block = ProducerIdBlock(broker_id=2, first=2000, size=1000)
    assert json.loads(encode_block(block)) == {
        "version": 1,
        "broker": 2,
        "block_start": "2000",
        "block_end": "2999",
    }
    assert decode_block(encode_block(block)) == block
    assert decode_block(b"") is None


@pytest.mark.parametrize(
    ("connect", "expected"),
    [
        ("127.0.0.1:2181", ("127.0.0.1:2181", "")),
        ("zk1:2181,zk2:2181/pystream", ("zk1:2181,zk2:2181", "/pystream")),
        ("zk1:2181/a/b/", ("zk1:2181", "/a/b")),
    ],
)
def test_parse_connect(connect: str, expected: tuple[str, str]) -> None:
    assert parse_connect(connect) == expected


@pytest.mark.parametrize("connect", ["", "/chroot", "zk1:2181,,zk2:2181", "zk:2181/a//b"])
def test_parse_connect_rejects_nonsense(connect: str) -> None:
    with pytest.raises(InvalidConfigError, match="zookeeper.connect"):
        parse_connect(connect)
