"""DescribeGroups (15), ListGroups (16) and DeleteGroups (42): groups for admin tools."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pystream.broker.apis.groups import coordinator_of
from pystream.errors import ErrorCode
from pystream.groups.group import ClassicGroup, GroupState
from pystream.protocol.handlers import api_handler
from pystream.protocol.messages.delete_groups import DeleteGroupsRequest, DeleteGroupsResponse
from pystream.protocol.messages.describe_groups import (
    DescribeGroupsRequest,
    DescribeGroupsResponse,
)
from pystream.protocol.messages.list_groups import ListGroupsRequest, ListGroupsResponse
from pystream.security.acl import AUTHORIZED_OPERATIONS_OMITTED, AclOperation, ResourceType

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext

CLASSIC_GROUP_TYPE = "classic"

Described = DescribeGroupsResponse.DescribedGroup
DescribedMember = DescribeGroupsResponse.DescribedGroupMember


def _describe(group_id: str, group: ClassicGroup | None, operations: int) -> Described:
    if group is None or group.state is GroupState.DEAD:
        # Kafka answers an unknown group as a Dead one (GROUP_ID_NOT_FOUND only from v6).
        return Described(
            group_id=group_id,
            group_state=GroupState.DEAD.value,
            protocol_type="",
            protocol_data="",
            authorized_operations=operations,
        )
    stable = group.state is GroupState.STABLE and group.protocol_name is not None
    members = []
    for member in group.members.values():
        metadata = assignment = b""
        if stable:
            # Subscriptions and assignments are only meaningful once the generation is settled.
            assert group.protocol_name is not None
            metadata = member.metadata(group.protocol_name)
            assignment = member.assignment
        members.append(
            DescribedMember(
                member_id=member.member_id,
                group_instance_id=member.group_instance_id,
                client_id=member.client_id,
                client_host=member.client_host,
                member_metadata=metadata,
                member_assignment=assignment,
            )
        )
    return Described(
        group_id=group_id,
        group_state=group.state.value,
        protocol_type=group.protocol_type or "",
        protocol_data=(group.protocol_name or "") if stable else "",
        members=members,
        authorized_operations=operations,
    )


@api_handler(15, 0, 5)
async def handle_describe_groups(
    request: DescribeGroupsRequest, context: RequestContext
) -> DescribeGroupsResponse:
    coordinator = coordinator_of(context)
    wants_operations = context.api_version >= 3 and request.include_authorized_operations
    groups = []
    for group_id in request.groups:
        if context.authorize(AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
            error, group = coordinator.describe_group(group_id)
        else:
            error, group = ErrorCode.GROUP_AUTHORIZATION_FAILED, None
        if error:
            groups.append(
                Described(
                    error_code=error,
                    group_id=group_id,
                    group_state="",
                    protocol_type="",
                    protocol_data="",
                    authorized_operations=AUTHORIZED_OPERATIONS_OMITTED,  # Kafka's groupError
                )
            )
        else:
            operations = (
                context.authorized_operations(ResourceType.GROUP, group_id)
                if wants_operations
                else AUTHORIZED_OPERATIONS_OMITTED
            )
            groups.append(_describe(group_id, group, operations))
    return DescribeGroupsResponse(groups=groups)


@api_handler(16, 0, 5)
async def handle_list_groups(
    request: ListGroupsRequest, context: RequestContext
) -> ListGroupsResponse:
    version = context.api_version
    # Filters match case-insensitively, as Kafka parses them; empty means no filter.
    states = {s.lower() for s in request.states_filter} if version >= 4 else set()
    types = {t.lower() for t in request.types_filter} if version >= 5 else set()
    error, groups = coordinator_of(context).list_groups()
    if not context.authorize_cluster(AclOperation.DESCRIBE):
        # Without DESCRIBE on the cluster: only the groups the principal may describe.
        groups = [
            g
            for g in groups
            if context.authorize(AclOperation.DESCRIBE, ResourceType.GROUP, g.group_id)
        ]
    listed = []
    if not types or CLASSIC_GROUP_TYPE in types:
        for group in groups:
            if states and group.state.value.lower() not in states:
                continue
            listed.append(
                ListGroupsResponse.ListedGroup(
                    group_id=group.group_id,
                    protocol_type=group.protocol_type or "",
                    group_state=group.state.value,
                    group_type=CLASSIC_GROUP_TYPE,
                )
            )
    return ListGroupsResponse(error_code=error, groups=listed)


@api_handler(42, 0, 2)
async def handle_delete_groups(
    request: DeleteGroupsRequest, context: RequestContext
) -> DeleteGroupsResponse:
    names = list(request.groups_names)
    allowed = [g for g in names if context.authorize(AclOperation.DELETE, ResourceType.GROUP, g)]
    results = coordinator_of(context).delete_groups(allowed) if allowed else {}
    return DeleteGroupsResponse(
        results=[
            DeleteGroupsResponse.DeletableGroupResult(
                group_id=group_id,
                error_code=results.get(group_id, ErrorCode.GROUP_AUTHORIZATION_FAILED),
            )
            for group_id in dict.fromkeys(names)
        ]
    )
