"""Admin API handlers: the cluster's own APIs, gathered in one module for the broker.

The handlers live in small modules by subject and are imported here, so the
broker's ``HANDLER_MODULES`` (and with it ApiVersions) sees them all:

- :mod:`.admin_topics`: CreateTopics (19), DeleteTopics (20), CreatePartitions (37)
- :mod:`.admin_configs`: DescribeConfigs (32), AlterConfigs (33), IncrementalAlterConfigs (44)
- :mod:`.admin_partitions`: DeleteRecords (21), OffsetForLeaderEpoch (23)
- :mod:`.admin_cluster`: DescribeLogDirs (35), DescribeCluster (60)
- :mod:`.admin_controller`: ControlledShutdown (7), ElectLeaders (43),
  AlterPartitionReassignments (45), ListPartitionReassignments (46)
"""

from __future__ import annotations

from pystream.cluster.admin_cluster import handle_describe_cluster, handle_describe_log_dirs
from pystream.cluster.admin_configs import (
    handle_alter_configs,
    handle_describe_configs,
    handle_incremental_alter_configs,
)
from pystream.cluster.admin_controller import (
    handle_alter_partition_reassignments,
    handle_controlled_shutdown,
    handle_elect_leaders,
    handle_list_partition_reassignments,
)
from pystream.cluster.admin_partitions import (
    handle_delete_records,
    handle_offset_for_leader_epoch,
)
from pystream.cluster.admin_topics import (
    handle_create_partitions,
    handle_create_topics,
    handle_delete_topics,
)

__all__ = [
    "handle_alter_configs",
    "handle_alter_partition_reassignments",
    "handle_controlled_shutdown",
    "handle_elect_leaders",
    "handle_list_partition_reassignments",
    "handle_create_partitions",
    "handle_create_topics",
    "handle_delete_records",
    "handle_delete_topics",
    "handle_describe_cluster",
    "handle_describe_configs",
    "handle_describe_log_dirs",
    "handle_incremental_alter_configs",
    "handle_offset_for_leader_epoch",
]
