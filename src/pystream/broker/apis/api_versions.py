"""ApiVersions (18): exactly the APIs and versions this broker has handlers for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pystream.protocol.handlers import HandlerSpec, api_handler
from pystream.protocol.messages.api_versions import ApiVersionsRequest, ApiVersionsResponse

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext


def response_for(handlers: Mapping[int, HandlerSpec], error_code: int = 0) -> ApiVersionsResponse:
    """The advertisement, derived from the broker's handler registry."""
    keys = [
        ApiVersionsResponse.ApiVersion(
            api_key=spec.api_key, min_version=spec.min_version, max_version=spec.max_version
        )
        for spec in sorted(handlers.values(), key=lambda s: s.api_key)
    ]
    return ApiVersionsResponse(error_code=error_code, api_keys=keys)


@api_handler(18, 0, 4)
async def handle_api_versions(
    request: ApiVersionsRequest, context: RequestContext
) -> ApiVersionsResponse:
    return response_for(context.services.handlers)
