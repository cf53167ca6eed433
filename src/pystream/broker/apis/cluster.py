"""DescribeCluster (60) and DescribeLogDirs (35): the cluster's brokers and their disks."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pystream.errors import (
    ErrorCode,
    InvalidRequestError,
    KafkaStorageError,
    MismatchedEndpointTypeError,
    UnsupportedEndpointTypeError,
)
from pystream.protocol.handlers import api_handler
from pystream.protocol.messages.describe_cluster import (
    DescribeClusterRequest,
    DescribeClusterResponse,
)
from pystream.protocol.messages.describe_log_dirs import (
    DescribeLogDirsRequest,
    DescribeLogDirsResponse,
)
from pystream.security.acl import AUTHORIZED_OPERATIONS_OMITTED, AclOperation, ResourceType

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext
    from pystream.storage.log_manager import LogManager

LogDirResult = DescribeLogDirsResponse.DescribeLogDirsResult
LogDirTopic = DescribeLogDirsResponse.DescribeLogDirsTopic
LogDirPartition = DescribeLogDirsResponse.DescribeLogDirsPartition
ClusterBroker = DescribeClusterResponse.DescribeClusterBroker

# KIP-919 endpoint types: this is a broker endpoint (pystream has no separate controllers).
ENDPOINT_BROKER = 1
ENDPOINT_CONTROLLER = 2


def cluster_authorized_operations(context: RequestContext) -> int:
    """What the principal may do on the cluster, for DescribeCluster and Metadata v8-10:
    0 without DESCRIBE on it (Kafka does not tell such a principal anything more)."""
    if not context.authorize_cluster(AclOperation.DESCRIBE):
        return 0
    return context.authorized_operations(ResourceType.CLUSTER)


@api_handler(60, 0, 1)
async def handle_describe_cluster(
    request: DescribeClusterRequest, context: RequestContext
) -> DescribeClusterResponse:
    """The brokers (on the listener the client used), the cluster id and the controller."""
    services = context.services
    version = context.api_version
    endpoint_type = request.endpoint_type if version >= 1 else ENDPOINT_BROKER
    if endpoint_type != ENDPOINT_BROKER:
        # v0 clients know neither endpoint-type error.
        if endpoint_type == ENDPOINT_CONTROLLER:
            cls = MismatchedEndpointTypeError if version >= 1 else InvalidRequestError
            error = cls(
                "The request was sent to an endpoint of type BROKER, but we wanted an endpoint "
                "of type CONTROLLER; pystream brokers are their own controllers"
            )
        else:
            cls = UnsupportedEndpointTypeError if version >= 1 else InvalidRequestError
            error = cls(f"Unsupported endpoint type {endpoint_type}")
        return DescribeClusterResponse(error_code=error.error_code, error_message=str(error))
    live = services.live_brokers(context.listener_name)
    return DescribeClusterResponse(
        error_message=None,
        endpoint_type=ENDPOINT_BROKER,
        cluster_id=services.metadata.cluster_id,
        controller_id=services.controller_id,
        brokers=[
            ClusterBroker(broker_id=node_id, host=host, port=port, rack=rack)
            for node_id, host, port, rack in live
        ],
        cluster_authorized_operations=(
            cluster_authorized_operations(context)
            if request.include_cluster_authorized_operations
            else AUTHORIZED_OPERATIONS_OMITTED
        ),
    )


def _log_dir_result(
    log_manager: LogManager, log_dir: str, wanted: set[tuple[str, int]] | None
) -> LogDirResult:
    """One log dir: its partitions' sizes (those in ``wanted``; None: all) and its disk."""
    topics: dict[str, list[LogDirPartition]] = {}
    for (topic, index), log in sorted(log_manager.logs().items()):
        if log_manager.log_dir_of(topic, index) != log_dir:
            continue
        if wanted is not None and (topic, index) not in wanted:
            continue
        topics.setdefault(topic, []).append(
            LogDirPartition(
                partition_index=index,
                partition_size=log.size_in_bytes,  # the .log files, as Kafka's Log.size
                # Kafka's getLogEndOffsetLag for a current replica (0: its high watermark
                # never passes its log end).  Future replicas, which lag the current one while
                # AlterReplicaLogDirs moves them, do not exist: pystream does not serve it.
                offset_lag=max(log.high_watermark - log.log_end_offset, 0),
                is_future_key=False,
            )
        )
    result = LogDirResult(
        log_dir=log_dir,
        topics=[LogDirTopic(name=name, partitions=parts) for name, parts in topics.items()],
    )
    try:
        disk = os.statvfs(log_dir)
    except OSError as exc:
        error = KafkaStorageError(f"Cannot read log dir {log_dir}: {exc.strerror}")
        result.error_code, result.topics = error.error_code, []
    else:
        result.total_bytes = disk.f_blocks * disk.f_frsize
        result.usable_bytes = disk.f_bavail * disk.f_frsize
    return result


@api_handler(35, 0, 4)
async def handle_describe_log_dirs(
    request: DescribeLogDirsRequest, context: RequestContext
) -> DescribeLogDirsResponse:
    """Every log dir of this broker with the size of each partition in it."""
    log_manager = context.services.log_manager
    if not context.authorize_cluster(AclOperation.DESCRIBE):
        # Kafka: no log dirs, and (v3+) CLUSTER_AUTHORIZATION_FAILED.
        return DescribeLogDirsResponse(
            error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED, results=[]
        )
    wanted = (
        None
        if request.topics is None
        else {(t.topic, p) for t in request.topics for p in t.partitions}
    )
    return DescribeLogDirsResponse(
        results=[_log_dir_result(log_manager, d, wanted) for d in log_manager.log_dirs]
    )
