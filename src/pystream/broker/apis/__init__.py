"""Every API the broker serves: one handler per API key, all in this package.

Each module handles one family of APIs and marks each handler with
:func:`~pystream.protocol.handlers.api_handler` (key and versions).  A handler is
``async def handle_x(request, context) -> response``: it sees the request and a
:class:`~pystream.broker.context.RequestContext` (header, connection, the
broker's :class:`~pystream.broker.services.BrokerServices`), never the broker
itself.  :data:`API_MODULES` is the registry the broker dispatches on, and
ApiVersions advertises exactly what it collects — a new API is a handler in one
of these modules (or a new module listed here), nothing more.

========================  =========================================================
module                    APIs
========================  =========================================================
:mod:`.produce`           Produce (0)
:mod:`.fetch`             Fetch (1)
:mod:`.list_offsets`      ListOffsets (2)
:mod:`.metadata`          Metadata (3)
:mod:`.controller`        ControlledShutdown (7), ElectLeaders (43),
                          AlterPartitionReassignments (45), ListPartitionReassignments (46)
:mod:`.offsets`           OffsetCommit (8), OffsetFetch (9), OffsetDelete (47)
:mod:`.groups`            FindCoordinator (10), JoinGroup (11), Heartbeat (12),
                          LeaveGroup (13), SyncGroup (14)
:mod:`.group_admin`       DescribeGroups (15), ListGroups (16), DeleteGroups (42)
:mod:`.api_versions`      ApiVersions (18)
:mod:`.topics`            CreateTopics (19), DeleteTopics (20), CreatePartitions (37)
:mod:`.partitions`        DeleteRecords (21), OffsetForLeaderEpoch (23)
:mod:`.transactions`      InitProducerId (22), AddPartitionsToTxn (24), AddOffsetsToTxn (25),
                          EndTxn (26), WriteTxnMarkers (27), TxnOffsetCommit (28),
                          DescribeProducers (61), DescribeTransactions (65),
                          ListTransactions (66)
:mod:`.configs`           DescribeConfigs (32), AlterConfigs (33), IncrementalAlterConfigs (44)
:mod:`.cluster`           DescribeLogDirs (35), DescribeCluster (60)
:mod:`.sasl`              SaslHandshake (17), SaslAuthenticate (36)
:mod:`.scram_users`       DescribeUserScramCredentials (50), AlterUserScramCredentials (51)
:mod:`.acls`              DescribeAcls (29), CreateAcls (30), DeleteAcls (31)
========================  =========================================================
"""

from __future__ import annotations

from types import ModuleType

from pystream.broker.apis import (
    acls,
    api_versions,
    cluster,
    configs,
    controller,
    fetch,
    group_admin,
    groups,
    list_offsets,
    metadata,
    offsets,
    partitions,
    produce,
    sasl,
    scram_users,
    topics,
    transactions,
)
from pystream.protocol.handlers import HandlerSpec, collect_handlers

API_MODULES: tuple[ModuleType, ...] = (
    produce,
    fetch,
    list_offsets,
    metadata,
    controller,
    offsets,
    groups,
    group_admin,
    api_versions,
    topics,
    partitions,
    transactions,
    configs,
    cluster,
    sasl,
    scram_users,
    acls,
)


def registry() -> dict[int, HandlerSpec]:
    """Every handler by API key (two handlers for one key is an error)."""
    return collect_handlers(API_MODULES)
