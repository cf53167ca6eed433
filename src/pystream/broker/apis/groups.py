"""FindCoordinator (10), JoinGroup (11), Heartbeat (12), LeaveGroup (13), SyncGroup (14).

Each handler turns a request of any supported version into one call on the
:class:`~pystream.groups.coordinator.GroupCoordinator` and the result into the
response of that version; the protocol rules live in the coordinator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pystream.errors import ErrorCode
from pystream.protocol.handlers import api_handler
from pystream.protocol.messages.find_coordinator import (
    FindCoordinatorRequest,
    FindCoordinatorResponse,
)
from pystream.protocol.messages.heartbeat import HeartbeatRequest, HeartbeatResponse
from pystream.protocol.messages.join_group import JoinGroupRequest, JoinGroupResponse
from pystream.protocol.messages.leave_group import LeaveGroupRequest, LeaveGroupResponse
from pystream.protocol.messages.sync_group import SyncGroupRequest, SyncGroupResponse
from pystream.security.acl import AclOperation, ResourceType

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext
    from pystream.coordinator.base import CoordinatorBase
    from pystream.groups.coordinator import GroupCoordinator

E = ErrorCode
KEY_TYPE_GROUP = 0
KEY_TYPE_TRANSACTION = 1


def coordinator_of(context: RequestContext) -> GroupCoordinator:
    return context.services.group_coordinator


def may_read_group(context: RequestContext, group_id: str) -> bool:
    """READ on the group: what every member request (and offset commits/fetches) needs."""
    return context.authorize(AclOperation.READ, ResourceType.GROUP, group_id)


def client_host(context: RequestContext) -> str:
    """Kafka shows a member's address as ``/<ip>``."""
    return "/" + context.connection.peer.rsplit(":", 1)[0]


# --- FindCoordinator --------------------------------------------------------------------------


async def _find_coordinator(
    context: RequestContext, key: str, key_type: int
) -> tuple[int, str | None, int, str, int]:
    """(error, message, node id, host, port) of the coordinator of a group / transactional id:
    the leader of the key's partition of the coordinator's internal topic, which may be
    another broker.  The topic is created on first use (COORDINATOR_NOT_AVAILABLE while
    fewer brokers are alive than its replication factor, as in Kafka)."""
    services = context.services
    coordinator: CoordinatorBase
    # DESCRIBE on the group or transactional id (Kafka's FindCoordinator check).
    if key_type == KEY_TYPE_GROUP and not context.authorize(
        AclOperation.DESCRIBE, ResourceType.GROUP, key
    ):
        return E.GROUP_AUTHORIZATION_FAILED, "Group authorization failed.", -1, "", -1
    if key_type == KEY_TYPE_TRANSACTION and not context.authorize(
        AclOperation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, key
    ):
        message = "Transactional Id authorization failed."
        return E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, message, -1, "", -1
    if key_type == KEY_TYPE_GROUP:
        coordinator = coordinator_of(context)
        partition_for = coordinator.partition_for
    elif key_type == KEY_TYPE_TRANSACTION:
        coordinator = services.transaction_coordinator
        partition_for = coordinator.partition_for
    else:
        return E.INVALID_REQUEST, f"unknown coordinator key type {key_type}", -1, "", -1
    error = await coordinator.ensure_topic()
    if error:
        return error, f"{coordinator.topic} is not available", -1, "", -1
    topic = services.metadata.get_topic(coordinator.topic)
    state = topic.partitions.get(partition_for(key)) if topic is not None else None
    leader = state.leader if state is not None else -1
    if leader == services.broker_id:
        listener = services.listener_for(context.listener_name)
        return 0, None, services.broker_id, listener.host, listener.port
    for node_id, host, port, _ in services.live_brokers(context.listener_name):
        if node_id == leader:
            return 0, None, node_id, host, port
    # No leader (its replicas are down) or not registered yet: the client retries.
    return E.COORDINATOR_NOT_AVAILABLE, "the coordinator is not available", -1, "", -1


@api_handler(10, 0, 6)
async def handle_find_coordinator(
    request: FindCoordinatorRequest, context: RequestContext
) -> FindCoordinatorResponse:
    version = context.api_version
    key_type = request.key_type if version >= 1 else KEY_TYPE_GROUP
    if version >= 4:  # KIP-699: batched keys
        coordinators = []
        for key in request.coordinator_keys:
            error, message, node_id, host, port = await _find_coordinator(context, key, key_type)
            coordinators.append(
                FindCoordinatorResponse.Coordinator(
                    key=key,
                    node_id=node_id,
                    host=host,
                    port=port,
                    error_code=error,
                    error_message=message,
                )
            )
        return FindCoordinatorResponse(coordinators=coordinators)
    error, message, node_id, host, port = await _find_coordinator(context, request.key, key_type)
    return FindCoordinatorResponse(
        error_code=error, error_message=message, node_id=node_id, host=host, port=port
    )


# --- JoinGroup / SyncGroup --------------------------------------------------------------------


@api_handler(11, 0, 9)
async def handle_join_group(
    request: JoinGroupRequest, context: RequestContext
) -> JoinGroupResponse:
    version = context.api_version
    if not may_read_group(context, request.group_id):
        return JoinGroupResponse(
            error_code=E.GROUP_AUTHORIZATION_FAILED,
            generation_id=-1,
            protocol_name=None if version >= 7 else "",
            leader="",
            member_id="",
            members=[],
        )
    result = await coordinator_of(context).membership.join_group(
        request.group_id,
        request.member_id,
        request.group_instance_id if version >= 5 else None,
        context.client_id or "",
        client_host(context),
        # v0 has no rebalance timeout: the session timeout bounded the join.
        request.rebalance_timeout_ms if version >= 1 else request.session_timeout_ms,
        request.session_timeout_ms,
        request.protocol_type,
        [(p.name, bytes(p.metadata)) for p in request.protocols],
        # KIP-394: from v4 a new member first gets MEMBER_ID_REQUIRED and its id.
        require_known_member_id=version >= 4,
        supports_skip_assignment=version >= 9,
        reason=request.reason if version >= 8 else None,
    )
    protocol_name = result.protocol_name
    if protocol_name is None and version < 7:
        protocol_name = ""  # nullable only from v7
    return JoinGroupResponse(
        error_code=result.error,
        generation_id=result.generation_id,
        protocol_type=result.protocol_type,
        protocol_name=protocol_name,
        leader=result.leader_id,
        skip_assignment=result.skip_assignment,
        member_id=result.member_id,
        members=[
            JoinGroupResponse.JoinGroupResponseMember(
                member_id=member_id, group_instance_id=instance_id, metadata=metadata
            )
            for member_id, instance_id, metadata in result.members
        ],
    )


@api_handler(14, 0, 5)
async def handle_sync_group(
    request: SyncGroupRequest, context: RequestContext
) -> SyncGroupResponse:
    version = context.api_version
    if version >= 5 and (request.protocol_type is None or request.protocol_name is None):
        # From v5 the member must say which protocol it thinks the group uses.
        return SyncGroupResponse(error_code=E.INCONSISTENT_GROUP_PROTOCOL)
    if not may_read_group(context, request.group_id):
        return SyncGroupResponse(error_code=E.GROUP_AUTHORIZATION_FAILED, assignment=b"")
    result = await coordinator_of(context).membership.sync_group(
        request.group_id,
        request.generation_id,
        request.member_id,
        request.group_instance_id if version >= 3 else None,
        request.protocol_type if version >= 5 else None,
        request.protocol_name if version >= 5 else None,
        {a.member_id: bytes(a.assignment) for a in request.assignments},
    )
    return SyncGroupResponse(
        error_code=result.error,
        protocol_type=result.protocol_type,
        protocol_name=result.protocol_name,
        assignment=result.assignment,
    )


# --- Heartbeat / LeaveGroup -------------------------------------------------------------------


@api_handler(12, 0, 4)
async def handle_heartbeat(request: HeartbeatRequest, context: RequestContext) -> HeartbeatResponse:
    if not may_read_group(context, request.group_id):
        return HeartbeatResponse(error_code=E.GROUP_AUTHORIZATION_FAILED)
    error = coordinator_of(context).membership.heartbeat(
        request.group_id,
        request.member_id,
        request.group_instance_id if context.api_version >= 3 else None,
        request.generation_id,
    )
    return HeartbeatResponse(error_code=error)


@api_handler(13, 0, 5)
async def handle_leave_group(
    request: LeaveGroupRequest, context: RequestContext
) -> LeaveGroupResponse:
    version = context.api_version
    if not may_read_group(context, request.group_id):
        return LeaveGroupResponse(error_code=E.GROUP_AUTHORIZATION_FAILED, members=[])
    if version >= 3:  # KIP-345: a batch of members, by member id or group instance id
        members = [
            (m.member_id, m.group_instance_id, m.reason if version >= 5 else None)
            for m in request.members
        ]
    else:
        members = [(request.member_id, None, None)]
    error, member_errors = coordinator_of(context).membership.leave_group(request.group_id, members)
    if version < 3:
        return LeaveGroupResponse(error_code=error or (member_errors[0] if member_errors else 0))
    return LeaveGroupResponse(
        error_code=error,
        members=[
            LeaveGroupResponse.MemberResponse(
                member_id=member_id, group_instance_id=instance_id, error_code=member_error
            )
            for (member_id, instance_id, _), member_error in zip(
                members, member_errors, strict=False
            )
        ],
    )
