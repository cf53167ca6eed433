"""DescribeConfigs (32), AlterConfigs (33), IncrementalAlterConfigs (44).

Resources are topics (type 2) and brokers (type 4, named by the broker id, or
"" for the cluster-wide dynamic defaults).  Every requested resource gets
exactly one result with its own error code: librdkafka aborts on a response
that misses one.

Topic configs are validated with :class:`~pystream.config.LogConfig` (an
unknown key or a bad value is INVALID_CONFIG naming the key), persisted in
the metadata store and applied to the live logs at once.  Broker resources
hold the dynamic broker configs
(:class:`~pystream.cluster.dynamic_config.DynamicBrokerConfig`): a key Kafka
cannot change dynamically, or a bad value, is INVALID_CONFIG with Kafka's
message ("Cannot update these configs dynamically: Set(...)").
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pystream.broker.apis.common import distinct
from pystream.broker.apis.config_entries import (
    CONFIG_TYPE_IDS,
    DescribedConfig,
    broker_config_entries,
    default_broker_config_entries,
    topic_config_entries,
)
from pystream.cluster.metadata.model import DEFAULT_BROKER_ENTITY, validate_topic_name
from pystream.config import (
    TOPIC_CONFIGS,
    ConfigSource,
    ConfigType,
    broker_key_type,
    broker_property_names,
    format_value,
    is_sensitive_broker_config,
)
from pystream.errors import (
    InvalidConfigError,
    InvalidRequestError,
    KafkaError,
    UnknownTopicOrPartitionError,
)
from pystream.protocol.handlers import api_handler
from pystream.protocol.messages.alter_configs import AlterConfigsRequest, AlterConfigsResponse
from pystream.protocol.messages.describe_configs import (
    DescribeConfigsRequest,
    DescribeConfigsResponse,
)
from pystream.protocol.messages.incremental_alter_configs import (
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
)
from pystream.security.acl import AclOperation
from pystream.security.acl import ResourceType as AclResourceType

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext
    from pystream.broker.services import BrokerServices

DescribeResult = DescribeConfigsResponse.DescribeConfigsResult
DescribeEntry = DescribeConfigsResponse.DescribeConfigsResourceResult
DescribeSynonym = DescribeConfigsResponse.DescribeConfigsSynonym
AlterResult = AlterConfigsResponse.AlterConfigsResourceResponse
IncrementalAlterResult = IncrementalAlterConfigsResponse.AlterConfigsResourceResponse
IncrementalOp = IncrementalAlterConfigsRequest.AlterableConfig


class ResourceType(enum.IntEnum):
    """Kafka's ``ConfigResource.Type`` ids."""

    UNKNOWN = 0
    TOPIC = 2
    BROKER = 4
    BROKER_LOGGER = 8
    CLIENT_METRICS = 16
    GROUP = 32


class OpType(enum.IntEnum):
    """IncrementalAlterConfigs operations (``AlterConfigOp.OpType``)."""

    SET = 0
    DELETE = 1
    APPEND = 2
    SUBTRACT = 3


# The ACL resource guarding each config resource type (Kafka: broker, broker-logger and
# client-metrics configs are the cluster's).
_CONFIG_ACL_RESOURCE: dict[int, AclResourceType] = {
    ResourceType.TOPIC: AclResourceType.TOPIC,
    ResourceType.GROUP: AclResourceType.GROUP,
    ResourceType.BROKER: AclResourceType.CLUSTER,
    ResourceType.BROKER_LOGGER: AclResourceType.CLUSTER,
    ResourceType.CLIENT_METRICS: AclResourceType.CLUSTER,
}


# Legacy AlterConfigs knows neither broker-logger nor group configs (Kafka: INVALID_REQUEST,
# before any authorization).
_LEGACY_ALTER_ACL_RESOURCE = {
    code: acl
    for code, acl in _CONFIG_ACL_RESOURCE.items()
    if code not in (ResourceType.BROKER_LOGGER, ResourceType.GROUP)
}


def _require_configs(
    context: RequestContext,
    operation: AclOperation,
    code: int,
    name: str,
    acl_resources: dict[int, AclResourceType] = _CONFIG_ACL_RESOURCE,
) -> None:
    """DESCRIBE_CONFIGS / ALTER_CONFIGS on the resource the config belongs to, as Kafka's
    ConfigHelper / KafkaApis check it (TOPIC_, GROUP_ or CLUSTER_AUTHORIZATION_FAILED),
    before saying whether pystream has configs of that type (a refused client learns
    nothing more); a type Kafka does not know is INVALID_REQUEST."""
    acl_type = acl_resources.get(code)
    if acl_type is None:
        raise _unsupported_type(code)
    if acl_type is AclResourceType.CLUSTER:
        context.require(operation, acl_type)
    else:
        context.require(operation, acl_type, name)


def _resource_type(code: int) -> ResourceType:
    """TOPIC or BROKER; any other resource type is INVALID_REQUEST (for that resource)."""
    if code in (ResourceType.TOPIC, ResourceType.BROKER):
        return ResourceType(code)
    raise _unsupported_type(code)


def _unsupported_type(code: int) -> InvalidRequestError:
    try:
        name = ResourceType(code).name
    except ValueError:
        name = "unknown"
    return InvalidRequestError(
        f"Unsupported resource type {code} ({name}); pystream has configs for topics (2) "
        "and brokers (4)"
    )


def _topic_overrides(services: BrokerServices, name: str) -> dict[str, str]:
    validate_topic_name(name)
    topic = services.metadata.get_topic(name)
    if topic is None:
        raise UnknownTopicOrPartitionError(f"Topic '{name}' does not exist")
    return topic.configs


# --- DescribeConfigs --------------------------------------------------------------------------


def _described(services: BrokerServices, resource_type: int, name: str) -> list[DescribedConfig]:
    config = services.dynamic_config.current
    if _resource_type(resource_type) is ResourceType.TOPIC:
        overrides = _topic_overrides(services, name)
        manager = services.topic_manager
        return topic_config_entries(config, overrides, manager.log_config_for(overrides))
    if services.dynamic_config.entity_of(name) == DEFAULT_BROKER_ENTITY:
        return default_broker_config_entries(config)
    return broker_config_entries(config)


def _describe_entry(
    entry: DescribedConfig, include_synonyms: bool, include_documentation: bool
) -> DescribeEntry:
    sensitive = is_sensitive_broker_config(entry.name)
    # A secret's synonyms carry the same secret: hidden too, as Kafka does.
    synonyms = [
        DescribeSynonym(name=s.name, value=None if sensitive else s.value, source=int(s.source))
        for s in entry.synonyms
    ]
    return DescribeEntry(
        name=entry.name,
        value=None if sensitive else entry.value,
        read_only=entry.read_only,
        is_default=entry.source is ConfigSource.DEFAULT_CONFIG,  # v0's view of the source
        config_source=int(entry.source),
        is_sensitive=sensitive,
        synonyms=synonyms if include_synonyms else [],
        config_type=CONFIG_TYPE_IDS.get(entry.type, 0),  # 0: UNKNOWN (a custom key)
        documentation=entry.documentation if include_documentation else None,
    )


@api_handler(32, 0, 4)
async def handle_describe_configs(
    request: DescribeConfigsRequest, context: RequestContext
) -> DescribeConfigsResponse:
    """Every config of each resource (or those in ``configuration_keys``)."""
    results = []
    for resource in request.resources:
        result = DescribeResult(
            resource_type=resource.resource_type,
            resource_name=resource.resource_name,
            error_message=None,
            configs=[],
        )
        try:
            _require_configs(
                context,
                AclOperation.DESCRIBE_CONFIGS,
                resource.resource_type,
                resource.resource_name,
            )
            entries = _described(context.services, resource.resource_type, resource.resource_name)
        except KafkaError as exc:
            result.error_code, result.error_message = exc.error_code, str(exc)
        else:
            wanted = set(resource.configuration_keys or ())  # null or empty: all of them
            result.configs = [
                _describe_entry(e, request.include_synonyms, request.include_documentation)
                for e in entries
                if not wanted or e.name in wanted
            ]
        results.append(result)
    return DescribeConfigsResponse(results=results)


# --- AlterConfigs / IncrementalAlterConfigs ---------------------------------------------------

# The new configs of a resource from its current ones: (resource, current, type_of,
# current_list) -> new, where type_of(key) is a key's type (None: unknown) and
# current_list(key) a LIST key's value in force.
NewConfigs = Callable[
    [Any, dict[str, str], Callable[[str], ConfigType | None], Callable[[str], list[str]]],
    dict[str, str],
]


def _topic_type(name: str) -> ConfigType | None:
    definition = TOPIC_CONFIGS.get(name)
    if definition is None:
        raise InvalidConfigError(f"Unknown topic config name: {name!r}")
    return definition.type


def _broker_type(name: str) -> ConfigType | None:
    # Kafka keeps unknown (custom) broker keys: they have no type.
    return broker_key_type(name) if name in broker_property_names() else None


async def _alter_resources(
    context: RequestContext,
    request: Any,
    result_cls: Any,
    new_configs: NewConfigs,
    acl_resources: dict[int, AclResourceType] = _CONFIG_ACL_RESOURCE,
) -> list[Any]:
    """AlterConfigs and IncrementalAlterConfigs: one ``result_cls`` per distinct resource."""
    services = context.services
    manager, dynamic = services.topic_manager, services.dynamic_config
    results = []
    resources = {(r.resource_type, r.resource_name): r for r in request.resources}
    for key, duplicate in distinct((r.resource_type, r.resource_name) for r in request.resources):
        resource = resources[key]
        name = resource.resource_name
        result = result_cls(
            resource_type=resource.resource_type, resource_name=name, error_message=None
        )
        try:
            if duplicate:
                raise InvalidRequestError("Duplicate resource.")
            _require_configs(
                context, AclOperation.ALTER_CONFIGS, resource.resource_type, name, acl_resources
            )
            if _resource_type(resource.resource_type) is ResourceType.TOPIC:
                current = _topic_overrides(services, name)
                config = manager.log_config_for(current)
                overrides = new_configs(
                    resource, current, _topic_type, lambda key, c=config: list(c.get(key))
                )
                await manager.set_topic_configs(
                    name, overrides, validate_only=request.validate_only
                )
            else:
                entity = dynamic.entity_of(name)
                configs = new_configs(
                    resource, dynamic.stored(entity), _broker_type, dynamic.list_in_force
                )
                try:
                    await dynamic.alter(entity, configs, validate_only=request.validate_only)
                except InvalidConfigError as exc:  # Kafka's wording for a broker resource
                    label = "" if entity == DEFAULT_BROKER_ENTITY else name
                    raise InvalidConfigError(
                        f"Invalid config value for resource ConfigResource(type=BROKER, "
                        f"name='{label}'): {exc}"
                    ) from None
        except KafkaError as exc:
            result.error_code, result.error_message = exc.error_code, str(exc)
        results.append(result)
    return results


@api_handler(33, 0, 2)
async def handle_alter_configs(
    request: AlterConfigsRequest, context: RequestContext
) -> AlterConfigsResponse:
    """Replace each resource's whole set of overrides (keys not given return to the next
    source; a null value means "no override", as in Kafka)."""
    responses = await _alter_resources(
        context,
        request,
        AlterResult,
        lambda resource, current, type_of, current_list: {
            c.name: c.value for c in resource.configs if c.value is not None
        },
        _LEGACY_ALTER_ACL_RESOURCE,
    )
    return AlterConfigsResponse(responses=responses)


def apply_incremental(
    current: dict[str, str],
    ops: list[IncrementalOp],
    type_of: Callable[[str], ConfigType | None],
    current_list: Callable[[str], list[str]],
) -> dict[str, str]:
    """A resource's configs after IncrementalAlterConfigs' SET / DELETE / APPEND / SUBTRACT.

    ``type_of(name)`` is a key's type (None for a key without one, which only SET and
    DELETE may change; it raises for a key the resource cannot have).  APPEND and SUBTRACT
    work on LIST configs, starting from ``current_list(name)``, the value in force;
    APPEND adds only values not already there (as Kafka's controller does).
    """
    duplicates = sorted(name for name, n in Counter(op.name for op in ops).items() if n > 1)
    if duplicates:
        raise InvalidRequestError(f"Error due to duplicate config keys: {duplicates}")
    result = dict(current)
    for op in ops:
        name, value, code = op.name, op.value, op.config_operation
        config_type = type_of(name)
        try:
            operation = OpType(code)
        except ValueError:
            raise InvalidRequestError(
                f"Unknown config operation {code} for {name}; use 0..3"
            ) from None
        if operation is OpType.DELETE:
            result.pop(name, None)
            continue
        if value is None:
            raise InvalidRequestError(f"Null value not supported for {operation.name} of {name}")
        if operation is OpType.SET:
            result[name] = value
            continue
        if config_type is not ConfigType.LIST:
            raise InvalidConfigError(
                f"Can't {operation.name} to key {name} because its type is not LIST."
            )
        in_force = current_list(name)
        given = [item.strip() for item in value.split(",") if item.strip()]
        if operation is OpType.APPEND:
            new = in_force + [item for item in given if item not in in_force]
        else:
            new = [item for item in in_force if item not in given]
        result[name] = format_value(new)
    return result


@api_handler(44, 0, 1)
async def handle_incremental_alter_configs(
    request: IncrementalAlterConfigsRequest, context: RequestContext
) -> IncrementalAlterConfigsResponse:
    """Change only the configs named, each by its operation."""
    responses = await _alter_resources(
        context,
        request,
        IncrementalAlterResult,
        lambda resource, current, type_of, current_list: apply_incremental(
            current, resource.configs, type_of, current_list
        ),
    )
    return IncrementalAlterConfigsResponse(responses=responses)
