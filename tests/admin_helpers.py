"""Helpers shared by the admin API tests (tests/test_admin_*.py)."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from broker_process import BrokerProcess
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from pystream.protocol.messages.metadata import MetadataRequest

T = TypeVar("T")

# A confluent-kafka ACL filter that matches every ACL.
CK_ANY_ACL = AclBindingFilter(
    ResourceType.ANY,
    None,
    ResourcePatternType.ANY,
    None,
    None,
    AclOperation.ANY,
    AclPermissionType.ANY,
)


def ck_admin(broker: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def ck_error(future: Future[Any], timeout: float = 15) -> tuple[int, str]:
    """(error code, message) of a confluent-kafka admin future; (0, "") on success."""
    try:
        future.result(timeout)
    except KafkaException as exc:
        error = exc.args[0]
        return error.code(), error.str()
    return 0, ""


def produce(
    broker: BrokerProcess, topic: str, count: int, partition: int = 0, **config: str
) -> None:
    """``count`` records to one partition, acknowledged (``config``: producer settings)."""
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, **config})
    failures: list[object] = []
    for i in range(count):
        producer.produce(
            topic,
            b"value-%d" % i,
            partition=partition,
            on_delivery=lambda err, msg: err and failures.append(err),
        )
    assert producer.flush(30) == 0
    assert failures == []


def topic_partitions(broker: BrokerProcess) -> dict[str, int]:
    """Every topic and its partition count, from a Metadata v1 request for all topics."""
    with broker.wire() as wire:
        response = wire.request(3, 1, MetadataRequest(topics=None))
    return {t.name: len(t.partitions) for t in response.topics if t.error_code == 0}


def partition_dirs(broker: BrokerProcess, topic: str) -> list[str]:
    """Names of the entries in the broker's log dir that belong to ``topic``'s partitions
    (live ``<topic>-<n>`` and deleted ``<topic>-<n>.<uuid>-delete`` directories)."""
    log_dir = Path(broker.log_dir)
    return sorted(p.name for p in log_dir.iterdir() if p.name.startswith(f"{topic}-"))
