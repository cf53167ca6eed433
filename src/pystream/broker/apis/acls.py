"""DescribeAcls (29), CreateAcls (30), DeleteAcls (31), as Kafka's ``KafkaApis``.

Always advertised (clients check ApiVersions before sending); without an
authorizer every answer is SECURITY_DISABLED.  Creating and deleting need ALTER
on the cluster, describing needs DESCRIBE (CLUSTER_AUTHORIZATION_FAILED otherwise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pystream.errors import ErrorCode
from pystream.protocol.handlers import api_handler
from pystream.protocol.messages.create_acls import CreateAclsRequest, CreateAclsResponse
from pystream.protocol.messages.delete_acls import DeleteAclsRequest, DeleteAclsResponse
from pystream.protocol.messages.describe_acls import DescribeAclsRequest, DescribeAclsResponse
from pystream.security.acl import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    group_by_resource,
)

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext

NO_AUTHORIZER = "No Authorizer is configured on the broker (set authorizer.class.name)."
CLUSTER_DENIED = "Cluster authorization failed."


def _filter(request: DescribeAclsRequest | DeleteAclsRequest.DeleteAclsFilter) -> AclBindingFilter:
    return AclBindingFilter.from_codes(
        request.resource_type_filter,
        request.resource_name_filter,
        request.pattern_type_filter,
        request.principal_filter,
        request.host_filter,
        request.operation,
        request.permission_type,
    )


@api_handler(29, 0, 3)
async def handle_describe_acls(
    request: DescribeAclsRequest, context: RequestContext
) -> DescribeAclsResponse:
    def failed(code: int, message: str) -> DescribeAclsResponse:
        return DescribeAclsResponse(error_code=code, error_message=message, resources=[])

    if not context.authorize_cluster(AclOperation.DESCRIBE):
        return failed(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, CLUSTER_DENIED)
    if context.services.authorizer is None:
        return failed(ErrorCode.SECURITY_DISABLED, NO_AUTHORIZER)
    acl_filter = _filter(request)
    try:
        acl_filter.validate()
    except ValueError as exc:
        return failed(ErrorCode.INVALID_REQUEST, str(exc))
    matching = [b for b in context.services.metadata.acls() if acl_filter.matches(b)]
    return DescribeAclsResponse(
        error_code=0,
        error_message=None,
        resources=[
            DescribeAclsResponse.DescribeAclsResource(
                resource_type=rtype,
                resource_name=name,
                pattern_type=ptype,
                acls=[
                    DescribeAclsResponse.AclDescription(
                        principal=b.principal,
                        host=b.host,
                        operation=b.operation,
                        permission_type=b.permission_type,
                    )
                    for b in bindings
                ],
            )
            for (rtype, ptype, name), bindings in group_by_resource(matching).items()
        ],
    )


@api_handler(30, 0, 3)
async def handle_create_acls(
    request: CreateAclsRequest, context: RequestContext
) -> CreateAclsResponse:
    def everyone(code: int, message: str) -> CreateAclsResponse:
        return CreateAclsResponse(
            results=[
                CreateAclsResponse.AclCreationResult(error_code=code, error_message=message)
                for _ in request.creations
            ]
        )

    if not context.authorize_cluster(AclOperation.ALTER):
        return everyone(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, CLUSTER_DENIED)
    if context.services.authorizer is None:
        return everyone(ErrorCode.SECURITY_DISABLED, NO_AUTHORIZER)
    results: list[CreateAclsResponse.AclCreationResult] = []
    valid: list[AclBinding] = []
    for creation in request.creations:
        binding = AclBinding.from_codes(
            creation.resource_type,
            creation.resource_name,
            # v0 has no pattern type: LITERAL, the field's default.
            creation.resource_pattern_type,
            creation.principal,
            creation.host,
            creation.operation,
            creation.permission_type,
        )
        try:
            binding.validate()
            context.services.metadata.check_acl_resource_name(binding.resource_name)
        except ValueError as exc:
            results.append(
                CreateAclsResponse.AclCreationResult(
                    error_code=ErrorCode.INVALID_REQUEST, error_message=str(exc)
                )
            )
            continue
        valid.append(binding)
        results.append(CreateAclsResponse.AclCreationResult(error_code=0, error_message=None))
    if valid:
        await context.services.metadata.change_acls(valid, [])
    return CreateAclsResponse(results=results)


@api_handler(31, 0, 3)
async def handle_delete_acls(
    request: DeleteAclsRequest, context: RequestContext
) -> DeleteAclsResponse:
    result_cls = DeleteAclsResponse.DeleteAclsFilterResult

    def everyone(code: int, message: str) -> DeleteAclsResponse:
        return DeleteAclsResponse(
            filter_results=[
                result_cls(error_code=code, error_message=message, matching_acls=[])
                for _ in request.filters
            ]
        )

    if not context.authorize_cluster(AclOperation.ALTER):
        return everyone(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, CLUSTER_DENIED)
    if context.services.authorizer is None:
        return everyone(ErrorCode.SECURITY_DISABLED, NO_AUTHORIZER)
    filters = [_filter(f) for f in request.filters]
    invalid: dict[int, str] = {}
    for i, acl_filter in enumerate(filters):
        try:
            acl_filter.validate()
        except ValueError as exc:
            invalid[i] = str(exc)
    valid = [f for i, f in enumerate(filters) if i not in invalid]
    removed = iter(await context.services.metadata.change_acls([], valid) if valid else [])
    results = []
    for i in range(len(filters)):
        if i in invalid:
            results.append(
                result_cls(
                    error_code=ErrorCode.INVALID_REQUEST, error_message=invalid[i], matching_acls=[]
                )
            )
            continue
        results.append(
            result_cls(
                error_code=0,
                error_message=None,
                matching_acls=[
                    DeleteAclsResponse.DeleteAclsMatchingAcl(
                        error_code=0,
                        error_message=None,
                        resource_type=b.resource_type,
                        resource_name=b.resource_name,
                        pattern_type=b.pattern_type,
                        principal=b.principal,
                        host=b.host,
                        operation=b.operation,
                        permission_type=b.permission_type,
                    )
                    for b in next(removed)
                ],
            )
        )
    return DeleteAclsResponse(filter_results=results)
