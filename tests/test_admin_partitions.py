"""DeleteRecords, OffsetForLeaderEpoch, DescribeLogDirs, DescribeCluster and the admin APIs'
advertisement, against a real broker with real clients."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from admin_helpers import ck_admin, ck_error, produce
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import TopicPartition as AioTopicPartition
from broker_process import BrokerProcess
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AclOperation, NewTopic, OffsetSpec
from kafka import KafkaAdminClient
from kafka.structs import TopicPartition as KpTopicPartition

from pystream.broker.apis import cluster, configs, controller, partitions, topics
from pystream.errors import ErrorCode
from pystream.protocol.handlers import collect_handlers
from pystream.protocol.messages.alter_configs import AlterConfigsRequest
from pystream.protocol.messages.alter_partition_reassignments import (
    AlterPartitionReassignmentsRequest,
)
from pystream.protocol.messages.api_versions import ApiVersionsRequest
from pystream.protocol.messages.controlled_shutdown import ControlledShutdownRequest
from pystream.protocol.messages.create_partitions import CreatePartitionsRequest
from pystream.protocol.messages.create_topics import CreateTopicsRequest
from pystream.protocol.messages.delete_records import DeleteRecordsRequest
from pystream.protocol.messages.delete_topics import DeleteTopicsRequest
from pystream.protocol.messages.describe_cluster import DescribeClusterRequest
from pystream.protocol.messages.describe_configs import DescribeConfigsRequest
from pystream.protocol.messages.describe_log_dirs import DescribeLogDirsRequest
from pystream.protocol.messages.elect_leaders import ElectLeadersRequest
from pystream.protocol.messages.incremental_alter_configs import IncrementalAlterConfigsRequest
from pystream.protocol.messages.list_partition_reassignments import (
    ListPartitionReassignmentsRequest,
)
from pystream.protocol.messages.offset_for_leader_epoch import OffsetForLeaderEpochRequest

# The versions each admin API is advertised with: every client's from CLIENTS.md, up to 3.9.
ADMIN_APIS = {
    7: (0, 3),  # ControlledShutdown (broker to controller)
    19: (0, 7),  # CreateTopics
    20: (0, 6),  # DeleteTopics
    21: (0, 2),  # DeleteRecords
    23: (0, 4),  # OffsetForLeaderEpoch
    32: (0, 4),  # DescribeConfigs
    33: (0, 2),  # AlterConfigs
    35: (0, 4),  # DescribeLogDirs
    37: (0, 3),  # CreatePartitions
    43: (0, 2),  # ElectLeaders
    44: (0, 1),  # IncrementalAlterConfigs
    45: (0, 0),  # AlterPartitionReassignments
    46: (0, 0),  # ListPartitionReassignments
    60: (0, 1),  # DescribeCluster
}


def _create(broker: BrokerProcess, name: str, partitions: int = 1, **config: str) -> None:
    client = ck_admin(broker)  # keep it alive until the future is done
    future = client.create_topics([NewTopic(name, partitions, 1, config=config)])[name]
    assert ck_error(future) == (0, "")


def _offsets(broker: BrokerProcess, topic: str, partition: int = 0) -> tuple[int, int]:
    """(earliest, latest) offsets of a partition, by confluent-kafka's ListOffsets."""
    client = ck_admin(broker)
    tp = TopicPartition(topic, partition)
    earliest = client.list_offsets({tp: OffsetSpec.earliest()})[tp].result(15).offset
    latest = client.list_offsets({tp: OffsetSpec.latest()})[tp].result(15).offset
    return earliest, latest


# --- DeleteRecords ----------------------------------------------------------------------------


def test_delete_records_librdkafka(broker: BrokerProcess) -> None:
    _create(broker, "trimmed", 2)
    _create(broker, "compacted", 1, **{"cleanup.policy": "compact"})
    produce(broker, "trimmed", 10, partition=0)
    produce(broker, "trimmed", 4, partition=1)
    client = ck_admin(broker)
    requests = [
        TopicPartition("trimmed", 0, 6),
        TopicPartition("trimmed", 1, -1),  # -1: up to the high watermark
        TopicPartition("compacted", 0, 0),
    ]
    futures = client.delete_records(requests)
    assert futures[requests[0]].result(15).low_watermark == 6
    assert futures[requests[1]].result(15).low_watermark == 4
    assert ck_error(futures[requests[2]])[0] == ErrorCode.POLICY_VIOLATION
    past_end = TopicPartition("trimmed", 0, 11)
    assert ck_error(client.delete_records([past_end])[past_end])[0] == (
        ErrorCode.OFFSET_OUT_OF_RANGE
    )
    assert _offsets(broker, "trimmed", 0) == (6, 10)
    assert _offsets(broker, "trimmed", 1) == (4, 4)
    # librdkafka checks partitions itself; on the wire an unknown one gets its own error.
    request = DeleteRecordsRequest(
        topics=[
            DeleteRecordsRequest.DeleteRecordsTopic(
                name="trimmed",
                partitions=[
                    DeleteRecordsRequest.DeleteRecordsPartition(partition_index=i, offset=6)
                    for i in (7, 0)
                ],
            )
        ],
        timeout_ms=10_000,
    )
    with broker.wire() as wire:
        (topic,) = wire.request(21, 0, request).topics
    assert [(p.error_code, p.low_watermark) for p in topic.partitions] == [
        (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1),
        (0, 6),
    ]


def test_consumers_see_the_new_log_start(broker: BrokerProcess) -> None:
    _create(broker, "consumed")
    produce(broker, "consumed", 10)
    client, deleted = ck_admin(broker), TopicPartition("consumed", 0, 7)
    assert client.delete_records([deleted])[deleted].result(15).low_watermark == 7

    def first_event(reset: str) -> tuple[int | None, int | None]:
        """(error code, offset) of the first message or error from offset 0."""
        consumer = Consumer(
            {"bootstrap.servers": broker.bootstrap, "group.id": f"g-{reset}"}
            | {"auto.offset.reset": reset, "enable.auto.commit": False}
        )
        consumer.assign([TopicPartition("consumed", 0, 0)])
        try:
            for _ in range(60):
                message = consumer.poll(0.5)
                if message is not None:
                    error = message.error()
                    return (error.code() if error else None), message.offset()
        finally:
            consumer.close()
        raise AssertionError("the consumer got neither a message nor an error")

    # Offset 0 is below the log start now: OFFSET_OUT_OF_RANGE, which librdkafka reports as
    # a failed automatic reset when auto.offset.reset=error ...
    code, _ = first_event("error")
    assert code == KafkaError._AUTO_OFFSET_RESET
    # ... and answers by resetting to the new log start with earliest.
    assert first_event("earliest") == (None, 7)


def test_delete_records_survives_a_crash(broker: BrokerProcess) -> None:
    _create(broker, "crashed")
    produce(broker, "crashed", 5)
    client, deleted = ck_admin(broker), TopicPartition("crashed", 0, 3)
    assert client.delete_records([deleted])[deleted].result(15).low_watermark == 3
    broker.kill()  # no clean shutdown: the log start offset must already be on disk
    broker.start()
    assert _offsets(broker, "crashed") == (3, 5)


def test_kafka_python_and_aiokafka_delete_records(broker: BrokerProcess) -> None:
    _create(broker, "kp-trim", 2)
    produce(broker, "kp-trim", 8, partition=0)
    produce(broker, "kp-trim", 8, partition=1)
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        client.delete_records({KpTopicPartition("kp-trim", 0): 5})  # v2
    finally:
        client.close()

    async def aiokafka_delete() -> dict[AioTopicPartition, int]:
        aio = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await aio.start()
        try:
            return await aio.delete_records({AioTopicPartition("kp-trim", 1): RecordsToDelete(3)})
        finally:
            await aio.close()

    assert asyncio.run(aiokafka_delete()) == {AioTopicPartition("kp-trim", 1): 3}
    assert (_offsets(broker, "kp-trim", 0), _offsets(broker, "kp-trim", 1)) == ((5, 8), (3, 8))


# --- OffsetForLeaderEpoch ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 2, 4])
def test_offset_for_leader_epoch(broker: BrokerProcess, version: int) -> None:
    _create(broker, "epochs")
    produce(broker, "epochs", 6)
    partition = OffsetForLeaderEpochRequest.OffsetForLeaderPartition
    request = OffsetForLeaderEpochRequest(
        replica_id=-1,
        topics=[
            OffsetForLeaderEpochRequest.OffsetForLeaderTopic(
                topic="epochs",
                partitions=[
                    partition(partition=0, current_leader_epoch=0, leader_epoch=0),
                    partition(partition=0, current_leader_epoch=-1, leader_epoch=3),
                    partition(partition=0, current_leader_epoch=1, leader_epoch=0),
                    partition(partition=1, current_leader_epoch=-1, leader_epoch=0),
                ],
            )
        ],
    )
    with broker.wire() as wire:
        (topic,) = wire.request(23, version, request).topics
    results = [(p.error_code, p.leader_epoch, p.end_offset) for p in topic.partitions]
    current = results[0]
    assert current[0] == 0 and current[2] == 6  # the latest epoch ends at the log end
    assert results[1] == (0, -1, -1)  # an epoch newer than any known: undefined
    # current_leader_epoch exists from v2: newer than the leader's is UNKNOWN_LEADER_EPOCH.
    assert results[2][0] == (ErrorCode.UNKNOWN_LEADER_EPOCH if version >= 2 else 0)
    assert results[3][0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    if version >= 1:
        assert current[1] == 0


# --- DescribeLogDirs --------------------------------------------------------------------------


def test_describe_log_dirs_kafka_python(broker_factory: object, tmp_path: Path) -> None:
    dirs = [tmp_path / "disk-a", tmp_path / "disk-b"]
    broker = broker_factory(**{"log.dirs": ",".join(map(str, dirs))})  # type: ignore[operator]
    _create(broker, "spread", 2)
    produce(broker, "spread", 20, partition=1)
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        (described,) = client.describe_log_dirs()  # v4
    finally:
        client.close()
    by_dir = {d["log_dir"]: d for d in described["log_dirs"]}
    assert sorted(by_dir) == sorted(str(d) for d in dirs)
    sizes = {}
    for log_dir in by_dir.values():
        assert log_dir["error_code"] == 0
        assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]
        for topic in log_dir["topics"]:
            for p in topic["partitions"]:
                assert (p["offset_lag"], p["is_future_key"]) == (0, False)
                sizes[(topic["name"], p["partition_index"], log_dir["log_dir"])] = p[
                    "partition_size"
                ]
    # One partition per dir, each where its directory really is, with its real size.
    for (topic, index, log_dir), size in sizes.items():
        segment = Path(log_dir) / f"{topic}-{index}" / "00000000000000000000.log"
        assert size == segment.stat().st_size
    assert sorted((t, i) for t, i, _ in sizes) == [("spread", 0), ("spread", 1)]
    assert sizes[next(k for k in sizes if k[1] == 1)] > 0


def test_describe_log_dirs_names_dirs_as_configured_and_counts_every_segment(
    broker_factory: object, tmp_path: Path
) -> None:
    real = tmp_path / "disk"
    real.mkdir()
    link = tmp_path / "disk-link"  # log.dirs names a symlink: reported as configured, as Kafka
    link.symlink_to(real)
    broker = broker_factory(**{"log.dirs": str(link)})  # type: ignore[operator]
    _create(broker, "segmented", 1, **{"segment.bytes": "1024"})
    produce(broker, "segmented", 200, **{"batch.size": "200"})
    files = sorted((real / "segmented-0").glob("*.log"))
    assert len(files) > 1
    for version in (1, 4):
        with broker.wire() as wire:
            (result,) = wire.request(35, version, DescribeLogDirsRequest(topics=None)).results
        assert (result.error_code, result.log_dir) == (0, str(link))
        (topic,) = [t for t in result.topics if t.name == "segmented"]
        (partition,) = topic.partitions
        # Every segment's .log file; no future replica (offset_lag 0: see docs/admin-apis.md).
        assert partition.partition_size == sum(f.stat().st_size for f in files)
        assert (partition.offset_lag, partition.is_future_key) == (0, False)
        if version >= 4:
            disk = os.statvfs(real)
            assert result.total_bytes == disk.f_blocks * disk.f_frsize
            assert 0 < result.usable_bytes <= result.total_bytes
        else:
            assert (result.total_bytes, result.usable_bytes) == (-1, -1)
    # There are no future replicas because AlterReplicaLogDirs is not served at all.
    request = ApiVersionsRequest(client_software_name="pytest", client_software_version="1")
    with broker.wire() as wire:
        advertised = {k.api_key for k in wire.request(18, 3, request).api_keys}
    assert 35 in advertised and 34 not in advertised


@pytest.mark.parametrize("version", [0, 4])
def test_describe_log_dirs_of_some_partitions(broker: BrokerProcess, version: int) -> None:
    _create(broker, "wanted", 3)
    request = DescribeLogDirsRequest(
        topics=[DescribeLogDirsRequest.DescribableLogDirTopic(topic="wanted", partitions=[0, 2, 9])]
    )
    with broker.wire() as wire:
        (result,) = wire.request(35, version, request).results
    assert result.log_dir == str(broker.log_dir)
    assert [(t.name, [p.partition_index for p in t.partitions]) for t in result.topics] == [
        ("wanted", [0, 2])
    ]
    assert (result.total_bytes > 0) == (version >= 4)


# --- DescribeCluster --------------------------------------------------------------------------


def test_describe_cluster(broker: BrokerProcess) -> None:
    client = ck_admin(broker)
    described = client.describe_cluster().result(15)  # librdkafka asks Metadata for it
    assert [(n.id, n.host, n.port) for n in described.nodes] == [(0, "127.0.0.1", broker.port)]
    assert described.controller.id == 0
    assert len(described.cluster_id) == 22
    kp_client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        kp_described = kp_client.describe_cluster()
    finally:
        kp_client.close()
    assert (kp_described["cluster_id"], kp_described["controller_id"]) == (
        described.cluster_id,
        0,
    )


def test_describe_cluster_on_the_wire(broker: BrokerProcess) -> None:
    with broker.wire() as wire:
        plain = wire.request(60, 0, DescribeClusterRequest())
        authorized = wire.request(
            60, 1, DescribeClusterRequest(include_cluster_authorized_operations=True)
        )
        controller = wire.request(60, 1, DescribeClusterRequest(endpoint_type=2))
        unknown = wire.request(60, 1, DescribeClusterRequest(endpoint_type=7))
    assert plain.error_code == 0 and plain.controller_id == 0
    assert plain.cluster_authorized_operations == -(2**31)  # not requested
    # No authorizer: every operation Kafka defines on the cluster resource is allowed.
    bits = authorized.cluster_authorized_operations
    assert {op for op in AclOperation if bits & (1 << op.value)} == {
        AclOperation.CREATE,
        AclOperation.ALTER,
        AclOperation.DESCRIBE,
        AclOperation.CLUSTER_ACTION,
        AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS,
        AclOperation.IDEMPOTENT_WRITE,
    }
    assert (authorized.brokers[0].port, authorized.endpoint_type) == (broker.port, 1)
    assert controller.error_code == ErrorCode.MISMATCHED_ENDPOINT_TYPE
    assert unknown.error_code == ErrorCode.UNSUPPORTED_ENDPOINT_TYPE


# --- ApiVersions ------------------------------------------------------------------------------


def test_api_versions_advertises_the_admin_apis(broker: BrokerProcess) -> None:
    request = ApiVersionsRequest(client_software_name="pytest", client_software_version="1")
    with broker.wire() as wire:
        response = wire.request(18, 3, request)
    advertised = {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}
    assert {key: advertised.get(key) for key in ADMIN_APIS} == ADMIN_APIS
    # ... and the admin modules mark nothing else.
    handlers = collect_handlers([cluster, configs, controller, partitions, topics])
    assert {k: (h.min_version, h.max_version) for k, h in handlers.items()} == ADMIN_APIS


def _sample_requests() -> dict[int, object]:
    """One request per admin API that touches an existing topic ("sample")."""
    return {
        # A single node is its own controller: nothing to hand over, nothing to elect.
        7: ControlledShutdownRequest(broker_id=0, broker_epoch=-1),
        43: ElectLeadersRequest(
            election_type=0,
            topic_partitions=[ElectLeadersRequest.TopicPartitions(topic="sample", partitions=[0])],
            timeout_ms=1000,
        ),
        45: AlterPartitionReassignmentsRequest(
            timeout_ms=1000,
            topics=[
                AlterPartitionReassignmentsRequest.ReassignableTopic(
                    name="sample",
                    partitions=[
                        AlterPartitionReassignmentsRequest.ReassignablePartition(
                            partition_index=0, replicas=None
                        )
                    ],
                )
            ],
        ),
        46: ListPartitionReassignmentsRequest(timeout_ms=1000, topics=None),
        19: CreateTopicsRequest(
            topics=[
                CreateTopicsRequest.CreatableTopic(
                    name="sample", num_partitions=1, replication_factor=1
                )
            ],
            validate_only=False,
        ),
        20: DeleteTopicsRequest(
            topic_names=["no-such"],
            topics=[DeleteTopicsRequest.DeleteTopicState(name="no-such")],
        ),
        21: DeleteRecordsRequest(
            topics=[
                DeleteRecordsRequest.DeleteRecordsTopic(
                    name="sample",
                    partitions=[
                        DeleteRecordsRequest.DeleteRecordsPartition(partition_index=0, offset=-1)
                    ],
                )
            ]
        ),
        23: OffsetForLeaderEpochRequest(
            topics=[
                OffsetForLeaderEpochRequest.OffsetForLeaderTopic(
                    topic="sample",
                    partitions=[
                        OffsetForLeaderEpochRequest.OffsetForLeaderPartition(
                            partition=0, leader_epoch=0
                        )
                    ],
                )
            ]
        ),
        32: DescribeConfigsRequest(
            resources=[
                DescribeConfigsRequest.DescribeConfigsResource(
                    resource_type=2, resource_name="sample", configuration_keys=None
                ),
                DescribeConfigsRequest.DescribeConfigsResource(
                    resource_type=4, resource_name="0", configuration_keys=None
                ),
            ],
            include_synonyms=True,
            include_documentation=True,
        ),
        33: AlterConfigsRequest(
            resources=[
                AlterConfigsRequest.AlterConfigsResource(
                    resource_type=2,
                    resource_name="sample",
                    configs=[AlterConfigsRequest.AlterableConfig(name="flush.ms", value="9")],
                )
            ]
        ),
        35: DescribeLogDirsRequest(topics=None),
        37: CreatePartitionsRequest(
            topics=[CreatePartitionsRequest.CreatePartitionsTopic(name="sample", count=1)]
        ),
        44: IncrementalAlterConfigsRequest(
            resources=[
                IncrementalAlterConfigsRequest.AlterConfigsResource(
                    resource_type=2,
                    resource_name="sample",
                    configs=[
                        IncrementalAlterConfigsRequest.AlterableConfig(
                            name="flush.ms", config_operation=0, value="9"
                        )
                    ],
                )
            ]
        ),
        60: DescribeClusterRequest(),
    }


def test_every_advertised_version_answers(broker: BrokerProcess) -> None:
    # Each admin API at each version it is advertised with: the broker answers (rather than
    # closing the connection), and the answer decodes.  CreateTopics/CreatePartitions of an
    # existing topic are errors, but answered ones.
    _create(broker, "sample")
    requests = _sample_requests()
    with broker.wire() as wire:
        for api_key, (low, high) in ADMIN_APIS.items():
            for version in range(low, high + 1):
                # (wire.request raises if the broker closes the connection instead)
                response = wire.request(api_key, version, requests[api_key])
                assert type(response).API_KEY == api_key
