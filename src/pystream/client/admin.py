"""The asyncio admin client (``pystream.aio.AdminClient``); ``pystream.AdminClient`` wraps it.

Topics, partitions, configs, consumer groups and their offsets, records, leader
elections and partition reassignments.
Requests go where Kafka routes them: topic changes, elections and reassignments
to the controller, group
operations to the group's coordinator, DeleteRecords/ListOffsets to partition
leaders, ListGroups to every broker.  An operation over several resources
raises the first failure's Kafka error (the exception's ``errors`` attribute
maps every failed resource to its error) after the others were applied.
SCRAM users: describe, upsert (the salted password is derived here, as Kafka's
admin client does: the password never leaves the client) and delete.  ACLs join
when the broker's authorization lands.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pystream.errors import KafkaError, error_for_code
from pystream.protocol.messages.alter_configs import AlterConfigsRequest
from pystream.protocol.messages.alter_partition_reassignments import (
    AlterPartitionReassignmentsRequest,
)
from pystream.protocol.messages.alter_user_scram_credentials import (
    AlterUserScramCredentialsRequest,
)
from pystream.protocol.messages.create_acls import CreateAclsRequest
from pystream.protocol.messages.create_partitions import CreatePartitionsRequest
from pystream.protocol.messages.create_topics import CreateTopicsRequest
from pystream.protocol.messages.delete_acls import DeleteAclsRequest
from pystream.protocol.messages.delete_groups import DeleteGroupsRequest
from pystream.protocol.messages.delete_records import DeleteRecordsRequest
from pystream.protocol.messages.delete_topics import DeleteTopicsRequest
from pystream.protocol.messages.describe_acls import DescribeAclsRequest
from pystream.protocol.messages.describe_configs import DescribeConfigsRequest
from pystream.protocol.messages.describe_groups import DescribeGroupsRequest
from pystream.protocol.messages.describe_user_scram_credentials import (
    DescribeUserScramCredentialsRequest,
)
from pystream.protocol.messages.elect_leaders import ElectLeadersRequest
from pystream.protocol.messages.incremental_alter_configs import IncrementalAlterConfigsRequest
from pystream.protocol.messages.list_groups import ListGroupsRequest
from pystream.protocol.messages.list_offsets import ListOffsetsRequest
from pystream.protocol.messages.list_partition_reassignments import (
    ListPartitionReassignmentsRequest,
)
from pystream.protocol.messages.metadata import MetadataRequest
from pystream.protocol.messages.offset_commit import OffsetCommitRequest
from pystream.protocol.messages.offset_delete import OffsetDeleteRequest
from pystream.protocol.messages.offset_fetch import OffsetFetchRequest
from pystream.security.acl import (
    AclBinding,
    AclBindingFilter,
)
from pystream.security.scram import MECHANISM_TYPES, mechanism_type, salted_password

from .assignors import decode_assignment
from .config import ClientConfig
from .connection import BrokerConnection
from .core import ClientCore
from .errors import UnsupportedFeatureError
from .types import (
    ConfigEntry,
    ConsumerGroupLag,
    GroupDescription,
    GroupListing,
    MemberDescription,
    NewPartitions,
    NewTopic,
    OffsetAndMetadata,
    PartitionInfo,
    TopicDescription,
    TopicPartition,
)

__all__ = ["AdminClient", "ConfigResourceType"]

log = logging.getLogger("pystream.client.admin")

NOT_CONTROLLER = 41
ELECTION_TYPES = {"preferred": 0, "unclean": 1}
_COORDINATOR_RETRY = frozenset({14, 15, 16})


class ConfigResourceType:
    """Kafka's ``ConfigResource.Type`` codes."""

    TOPIC = 2
    GROUP = 3
    BROKER = 4
    BROKER_LOGGER = 8

    @staticmethod
    def parse(value: int | str) -> int:
        if isinstance(value, int):
            return value
        try:
            return {"topic": 2, "group": 3, "broker": 4, "broker_logger": 8}[value.lower()]
        except KeyError:
            raise ValueError(f"unknown config resource type {value!r}") from None


def _raise_errors(what: str, errors: dict[Any, KafkaError]) -> None:
    if not errors:
        return
    first = next(iter(errors.values()))
    detail = "; ".join(f"{key}: {err}" for key, err in errors.items())
    exc = type(first)(f"{what} failed for {len(errors)} resource(s): {detail}")
    exc.errors = errors  # type: ignore[attr-defined]
    raise exc


def _filter_fields(acl_filter: AclBindingFilter) -> dict[str, Any]:
    """The DescribeAcls / DeleteAcls filter fields of ``acl_filter``."""
    return {
        "resource_type_filter": acl_filter.resource_type,
        "resource_name_filter": acl_filter.resource_name,
        "pattern_type_filter": acl_filter.pattern_type,
        "principal_filter": acl_filter.principal,
        "host_filter": acl_filter.host,
        "operation": acl_filter.operation,
        "permission_type": acl_filter.permission_type,
    }


def _error(code: int, message: str | None, context: str) -> KafkaError:
    cls = error_for_code(code)
    return cls(f"{context}: {message or cls.error_name}")


def _tp(value: TopicPartition | tuple[str, int]) -> TopicPartition:
    return value if isinstance(value, TopicPartition) else TopicPartition(*value)


class AdminClient:
    """Asynchronous admin client: ``async with AdminClient(bootstrap_servers=...) as admin``."""

    def __init__(self, bootstrap_servers: str | Sequence[str], **client_settings: Any) -> None:
        self.config = ClientConfig.from_kwargs(bootstrap_servers, **client_settings)
        self._core = ClientCore(self.config)
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if not self._started:
            await self._core.start()
            self._started = True

    async def __aenter__(self) -> AdminClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._core.close()

    # ------------------------------------------------------------------ routing

    async def _metadata(self, topics: list[str] | None) -> Any:
        def build(version: int) -> MetadataRequest:
            return MetadataRequest(
                topics=None
                if topics is None
                else [MetadataRequest.MetadataRequestTopic(name=t) for t in topics],
                allow_auto_topic_creation=False,
            )

        response = await self._core.request(None, 3, build)
        self._core.metadata.update(response, all_topics=topics is None)
        return response

    async def _controller(self) -> BrokerConnection:
        await self._metadata([])
        controller = self._core.metadata.controller_id
        if controller < 0:
            return await self._core.any_connection()
        return await self._core.connection(controller)

    async def _to_controller(self, api_key: int, build: Any, retries: int = 5) -> Any:
        """Send to the controller; after NOT_CONTROLLER refresh and try again."""
        for attempt in range(retries):
            conn = await self._controller()
            version = conn.version(api_key)
            response = await conn.request(api_key, build(version), version)
            if not _has_error(response, NOT_CONTROLLER) or attempt == retries - 1:
                return response
            await asyncio.sleep(self.config.retry_backoff_ms / 1000)
        raise AssertionError("unreachable")

    async def _group_coordinator(self, group_id: str) -> BrokerConnection:
        return await self._core.find_coordinator(group_id, 0, attempts=20)

    async def _to_coordinator(self, group_id: str, api_key: int, build: Any) -> Any:
        for _ in range(20):
            conn = await self._group_coordinator(group_id)
            version = conn.version(api_key)
            response = await conn.request(api_key, build(version), version)
            if not any(_has_error(response, code) for code in _COORDINATOR_RETRY):
                return response
            await asyncio.sleep(self.config.retry_backoff_ms / 1000)
        raise error_for_code(15)(f"group {group_id!r}: the coordinator kept moving")

    # ------------------------------------------------------------------ cluster and topics

    async def describe_cluster(self) -> dict[str, Any]:
        """``{"cluster_id", "controller_id", "brokers": [BrokerInfo, ...]}``."""
        await self._metadata([])
        metadata = self._core.metadata
        return {
            "cluster_id": metadata.cluster_id,
            "controller_id": metadata.controller_id,
            "brokers": sorted(metadata.brokers.values(), key=lambda b: b.node_id),
        }

    async def list_topics(self, internal: bool = False) -> list[str]:
        """Topic names (without internal topics such as ``__consumer_offsets`` unless asked)."""
        response = await self._metadata(None)
        return sorted(
            t.name
            for t in response.topics
            if t.name is not None and not t.error_code and (internal or not t.is_internal)
        )

    async def describe_topics(
        self, topics: Iterable[str] | None = None
    ) -> dict[str, TopicDescription]:
        """Partitions, leaders and replicas of ``topics`` (all topics if None)."""
        names = None if topics is None else list(topics)
        response = await self._metadata(names)
        out: dict[str, TopicDescription] = {}
        errors: dict[Any, KafkaError] = {}
        for t in response.topics:
            if t.error_code:
                errors[t.name] = _error(t.error_code, None, f"topic {t.name!r}")
                continue
            out[t.name] = TopicDescription(
                name=t.name,
                topic_id=str(t.topic_id),
                is_internal=t.is_internal,
                partitions=[
                    PartitionInfo(
                        partition=p.partition_index,
                        leader=p.leader_id,
                        leader_epoch=p.leader_epoch,
                        replicas=list(p.replica_nodes),
                        isr=list(p.isr_nodes),
                        offline_replicas=list(p.offline_replicas),
                    )
                    for p in sorted(t.partitions, key=lambda p: p.partition_index)
                ],
            )
        _raise_errors("describe_topics", errors)
        return out

    async def create_topics(
        self,
        topics: NewTopic | Iterable[NewTopic],
        *,
        validate_only: bool = False,
        timeout_ms: int = 30_000,
    ) -> None:
        """Create topics (raises e.g. TopicAlreadyExistsError for ones that exist)."""
        new = [topics] if isinstance(topics, NewTopic) else list(topics)
        if not new:
            return

        def build(version: int) -> CreateTopicsRequest:
            return CreateTopicsRequest(
                topics=[
                    CreateTopicsRequest.CreatableTopic(
                        name=t.name,
                        num_partitions=t.num_partitions,
                        replication_factor=t.replication_factor,
                        assignments=[
                            CreateTopicsRequest.CreatableReplicaAssignment(
                                partition_index=p, broker_ids=list(ids)
                            )
                            for p, ids in sorted((t.replica_assignment or {}).items())
                        ],
                        configs=[
                            CreateTopicsRequest.CreatableTopicConfig(name=k, value=v)
                            for k, v in t.config.items()
                        ],
                    )
                    for t in new
                ],
                timeout_ms=timeout_ms,
                validate_only=validate_only,
            )

        response = await self._to_controller(19, build)
        errors = {
            t.name: _error(t.error_code, t.error_message, f"create topic {t.name!r}")
            for t in response.topics
            if t.error_code
        }
        if not validate_only:
            await self._core.refresh_metadata([t.name for t in new if t.name not in errors])
        _raise_errors("create_topics", errors)

    async def delete_topics(self, topics: Iterable[str], *, timeout_ms: int = 30_000) -> None:
        names = list(topics)
        if not names:
            return

        def build(version: int) -> DeleteTopicsRequest:
            return DeleteTopicsRequest(
                topic_names=names,
                topics=[DeleteTopicsRequest.DeleteTopicState(name=n) for n in names],
                timeout_ms=timeout_ms,
            )

        response = await self._to_controller(20, build)
        errors = {
            r.name: _error(r.error_code, r.error_message, f"delete topic {r.name!r}")
            for r in response.responses
            if r.error_code
        }
        _raise_errors("delete_topics", errors)

    async def create_partitions(
        self,
        new_partitions: Mapping[str, int] | Iterable[NewPartitions],
        *,
        validate_only: bool = False,
        timeout_ms: int = 30_000,
    ) -> None:
        """Grow topics: ``{"topic": total_count}`` or :class:`NewPartitions` items."""
        if isinstance(new_partitions, Mapping):
            items = [NewPartitions(t, n) for t, n in new_partitions.items()]
        else:
            items = list(new_partitions)

        def build(version: int) -> CreatePartitionsRequest:
            return CreatePartitionsRequest(
                topics=[
                    CreatePartitionsRequest.CreatePartitionsTopic(
                        name=p.topic,
                        count=p.total_count,
                        assignments=None
                        if p.assignments is None
                        else [
                            CreatePartitionsRequest.CreatePartitionsAssignment(broker_ids=ids)
                            for ids in p.assignments
                        ],
                    )
                    for p in items
                ],
                timeout_ms=timeout_ms,
                validate_only=validate_only,
            )

        response = await self._to_controller(37, build)
        errors = {
            r.name: _error(r.error_code, r.error_message, f"create partitions for {r.name!r}")
            for r in response.results
            if r.error_code
        }
        if not validate_only:
            await self._core.refresh_metadata([p.topic for p in items])
        _raise_errors("create_partitions", errors)

    # ------------------------------------------------------------------ leaders and replicas

    async def elect_leaders(
        self,
        election_type: str | int = "preferred",
        partitions: Iterable[TopicPartition | tuple[str, int]] | None = None,
        *,
        timeout_ms: int = 30_000,
    ) -> dict[TopicPartition, KafkaError | None]:
        """Elect the preferred (or, ``"unclean"``, any live) replica as leader of each
        partition (None: every partition).  Returns each partition's outcome: None when
        elected, else its error (e.g. ElectionNotNeededError when it already leads)."""
        kind = ELECTION_TYPES[election_type] if isinstance(election_type, str) else election_type
        by_topic: dict[str, list[int]] = defaultdict(list)
        for tp in map(_tp, partitions or ()):
            by_topic[tp.topic].append(tp.partition)

        def build(version: int) -> ElectLeadersRequest:
            return ElectLeadersRequest(
                election_type=kind,
                topic_partitions=None
                if partitions is None
                else [
                    ElectLeadersRequest.TopicPartitions(topic=t, partitions=ps)
                    for t, ps in by_topic.items()
                ],
                timeout_ms=timeout_ms,
            )

        response = await self._to_controller(43, build)
        if response.error_code:
            raise _error(response.error_code, None, "elect leaders")
        out: dict[TopicPartition, KafkaError | None] = {}
        for t in response.replica_election_results:
            for p in t.partition_result:
                tp = TopicPartition(t.topic, p.partition_id)
                out[tp] = (
                    _error(p.error_code, p.error_message, f"elect leader of {tp}")
                    if p.error_code
                    else None
                )
        return out

    async def alter_partition_reassignments(
        self,
        reassignments: Mapping[Any, Sequence[int] | None],
        *,
        timeout_ms: int = 30_000,
    ) -> None:
        """Move partitions to new replicas: ``{("topic", 0): [1, 2, 3]}``; None as the
        replicas cancels an ongoing reassignment.  Returns once the controller has
        started them (:meth:`list_partition_reassignments` shows those in progress)."""
        wanted = {_tp(tp): None if r is None else list(r) for tp, r in reassignments.items()}
        by_topic: dict[str, list[Any]] = defaultdict(list)
        for tp, replicas in wanted.items():
            by_topic[tp.topic].append(
                AlterPartitionReassignmentsRequest.ReassignablePartition(
                    partition_index=tp.partition, replicas=replicas
                )
            )

        def build(version: int) -> AlterPartitionReassignmentsRequest:
            return AlterPartitionReassignmentsRequest(
                timeout_ms=timeout_ms,
                topics=[
                    AlterPartitionReassignmentsRequest.ReassignableTopic(name=t, partitions=ps)
                    for t, ps in by_topic.items()
                ],
            )

        response = await self._to_controller(45, build)
        if response.error_code:
            raise _error(response.error_code, response.error_message, "reassign partitions")
        errors: dict[Any, KafkaError] = {
            TopicPartition(t.name, p.partition_index): _error(
                p.error_code, p.error_message, f"reassign {t.name}-{p.partition_index}"
            )
            for t in response.responses
            for p in t.partitions
            if p.error_code
        }
        _raise_errors("alter_partition_reassignments", errors)

    async def list_partition_reassignments(
        self,
        partitions: Iterable[TopicPartition | tuple[str, int]] | None = None,
        *,
        timeout_ms: int = 30_000,
    ) -> dict[TopicPartition, dict[str, list[int]]]:
        """Ongoing reassignments (of ``partitions``, or all): per partition its
        ``replicas``, ``adding_replicas`` and ``removing_replicas``."""
        by_topic: dict[str, list[int]] = defaultdict(list)
        for tp in map(_tp, partitions or ()):
            by_topic[tp.topic].append(tp.partition)

        def build(version: int) -> ListPartitionReassignmentsRequest:
            return ListPartitionReassignmentsRequest(
                timeout_ms=timeout_ms,
                topics=None
                if partitions is None
                else [
                    ListPartitionReassignmentsRequest.ListPartitionReassignmentsTopics(
                        name=t, partition_indexes=ps
                    )
                    for t, ps in by_topic.items()
                ],
            )

        response = await self._to_controller(46, build)
        if response.error_code:
            raise _error(response.error_code, response.error_message, "list reassignments")
        return {
            TopicPartition(t.name, p.partition_index): {
                "replicas": list(p.replicas),
                "adding_replicas": list(p.adding_replicas),
                "removing_replicas": list(p.removing_replicas),
            }
            for t in response.topics
            for p in t.partitions
        }

    # ------------------------------------------------------------------ configs

    async def describe_configs(
        self, resources: Iterable[tuple[int | str, str]], keys: Iterable[str] | None = None
    ) -> dict[tuple[int, str], dict[str, ConfigEntry]]:
        """Config entries per ``(resource_type, name)``, e.g. ``[("topic", "t")]``."""
        wanted = [(ConfigResourceType.parse(t), n) for t, n in resources]
        key_list = None if keys is None else list(keys)
        by_node: dict[int | None, list[tuple[int, str]]] = defaultdict(list)
        for rtype, name in wanted:
            node = int(name) if rtype in (ConfigResourceType.BROKER, 8) and name else None
            by_node[node].append((rtype, name))
        out: dict[tuple[int, str], dict[str, ConfigEntry]] = {}
        errors: dict[Any, KafkaError] = {}
        for node, group in by_node.items():

            def build(version: int, group: list[tuple[int, str]] = group) -> DescribeConfigsRequest:
                return DescribeConfigsRequest(
                    resources=[
                        DescribeConfigsRequest.DescribeConfigsResource(
                            resource_type=t, resource_name=n, configuration_keys=key_list
                        )
                        for t, n in group
                    ],
                    include_synonyms=False,
                    include_documentation=False,
                )

            response = await self._core.request(node, 32, build)
            for r in response.results:
                key = (r.resource_type, r.resource_name)
                if r.error_code:
                    errors[key] = _error(r.error_code, r.error_message, f"describe configs {key}")
                    continue
                out[key] = {
                    c.name: ConfigEntry(
                        name=c.name,
                        value=c.value,
                        read_only=c.read_only,
                        is_default=c.is_default or c.config_source == 5,
                        is_sensitive=c.is_sensitive,
                        source=c.config_source,
                    )
                    for c in r.configs
                }
        _raise_errors("describe_configs", errors)
        return out

    async def alter_configs(
        self,
        resource: tuple[int | str, str],
        configs: Mapping[str, str | None],
        *,
        validate_only: bool = False,
    ) -> None:
        """Set (value) or reset to default (None) config keys of one resource.

        Uses IncrementalAlterConfigs (only the named keys change); brokers
        without it get AlterConfigs, which replaces the resource's whole set.
        """
        rtype, name = ConfigResourceType.parse(resource[0]), resource[1]
        node = int(name) if rtype == ConfigResourceType.BROKER and name else None
        conn = await (self._core.any_connection() if node is None else self._core.connection(node))
        if conn.supports(44):
            body: Any = IncrementalAlterConfigsRequest(
                resources=[
                    IncrementalAlterConfigsRequest.AlterConfigsResource(
                        resource_type=rtype,
                        resource_name=name,
                        configs=[
                            IncrementalAlterConfigsRequest.AlterableConfig(
                                name=k, config_operation=0 if v is not None else 1, value=v
                            )
                            for k, v in configs.items()
                        ],
                    )
                ],
                validate_only=validate_only,
            )
            response = await conn.request(44, body)
        else:
            body = AlterConfigsRequest(
                resources=[
                    AlterConfigsRequest.AlterConfigsResource(
                        resource_type=rtype,
                        resource_name=name,
                        configs=[
                            AlterConfigsRequest.AlterableConfig(name=k, value=v)
                            for k, v in configs.items()
                            if v is not None
                        ],
                    )
                ],
                validate_only=validate_only,
            )
            response = await conn.request(33, body)
        errors = {
            (r.resource_type, r.resource_name): _error(
                r.error_code, r.error_message, f"alter configs of {name!r}"
            )
            for r in response.responses
            if r.error_code
        }
        _raise_errors("alter_configs", errors)

    # ------------------------------------------------------------------ groups

    # ------------------------------------------------------------------ ACLs

    async def create_acls(self, bindings: Iterable[AclBinding]) -> None:
        """Store ACL bindings (CreateAcls); raises the first error (SECURITY_DISABLED without
        an authorizer, CLUSTER_AUTHORIZATION_FAILED without ALTER on the cluster)."""
        wanted = list(bindings)
        creations = [
            CreateAclsRequest.AclCreation(
                resource_type=b.resource_type,
                resource_name=b.resource_name,
                resource_pattern_type=b.pattern_type,
                principal=b.principal,
                host=b.host,
                operation=b.operation,
                permission_type=b.permission_type,
            )
            for b in wanted
        ]
        response = await self._core.request(
            None, 30, lambda v: CreateAclsRequest(creations=creations)
        )
        errors = {
            str(b): _error(r.error_code, r.error_message, "create ACL")
            for b, r in zip(wanted, response.results, strict=False)
            if r.error_code
        }
        _raise_errors("create_acls", errors)

    async def describe_acls(self, acl_filter: AclBindingFilter) -> list[AclBinding]:
        """The ACL bindings ``acl_filter`` matches (DescribeAcls)."""
        response = await self._core.request(
            None, 29, lambda v: DescribeAclsRequest(**_filter_fields(acl_filter))
        )
        if response.error_code:
            raise _error(response.error_code, response.error_message, "DescribeAcls")
        return [
            AclBinding.from_codes(
                resource.resource_type,
                resource.resource_name,
                resource.pattern_type,
                acl.principal,
                acl.host,
                acl.operation,
                acl.permission_type,
            )
            for resource in response.resources
            for acl in resource.acls
        ]

    async def delete_acls(self, filters: Iterable[AclBindingFilter]) -> list[list[AclBinding]]:
        """Remove what each filter matches (DeleteAcls); per filter, the bindings removed."""
        wire_filters = [DeleteAclsRequest.DeleteAclsFilter(**_filter_fields(f)) for f in filters]
        response = await self._core.request(
            None, 31, lambda v: DeleteAclsRequest(filters=wire_filters)
        )
        errors = {
            i: _error(r.error_code, r.error_message, "delete ACLs")
            for i, r in enumerate(response.filter_results)
            if r.error_code
        }
        _raise_errors("delete_acls", errors)
        fields = ("resource_type", "resource_name", "pattern_type", "principal", "host")
        return [
            [
                AclBinding.from_codes(
                    *(getattr(m, f) for f in fields), m.operation, m.permission_type
                )
                for m in r.matching_acls
            ]
            for r in response.filter_results
        ]

    async def list_groups(self) -> list[GroupListing]:
        """Every group on every broker."""
        await self._metadata([])
        listings: dict[str, GroupListing] = {}
        for node in list(self._core.metadata.brokers):
            response = await self._core.request(node, 16, lambda v: ListGroupsRequest())
            if response.error_code:
                raise _error(response.error_code, None, f"ListGroups on broker {node}")
            for g in response.groups:
                listings[g.group_id] = GroupListing(g.group_id, g.protocol_type, g.group_state)
        return sorted(listings.values(), key=lambda g: g.group_id)

    async def describe_groups(self, group_ids: Iterable[str]) -> dict[str, GroupDescription]:
        """State, protocol and members (with their assignments) of each group."""
        out: dict[str, GroupDescription] = {}
        errors: dict[Any, KafkaError] = {}
        for group_id in group_ids:
            response = await self._to_coordinator(
                group_id, 15, lambda v, g=group_id: DescribeGroupsRequest(groups=[g])
            )
            for g in response.groups:
                if g.error_code:
                    errors[g.group_id] = _error(g.error_code, None, f"group {g.group_id!r}")
                    continue
                members = []
                for m in g.members:
                    try:
                        assignment = (
                            decode_assignment(m.member_assignment)
                            if g.protocol_type == "consumer"
                            else []
                        )
                    except Exception:
                        assignment = []
                    members.append(
                        MemberDescription(
                            member_id=m.member_id,
                            client_id=m.client_id,
                            client_host=m.client_host,
                            group_instance_id=m.group_instance_id,
                            assignment=assignment,
                        )
                    )
                out[g.group_id] = GroupDescription(
                    group_id=g.group_id,
                    state=g.group_state,
                    protocol_type=g.protocol_type,
                    protocol=g.protocol_data,
                    members=members,
                )
        _raise_errors("describe_groups", errors)
        return out

    async def delete_groups(self, group_ids: Iterable[str]) -> None:
        """Delete empty groups (and their committed offsets)."""
        errors: dict[Any, KafkaError] = {}
        for group_id in group_ids:
            response = await self._to_coordinator(
                group_id, 42, lambda v, g=group_id: DeleteGroupsRequest(groups_names=[g])
            )
            for r in response.results:
                if r.error_code:
                    errors[r.group_id] = _error(r.error_code, None, f"delete group {r.group_id!r}")
        _raise_errors("delete_groups", errors)

    async def list_consumer_group_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition | tuple[str, int]] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Committed offsets of a group (all its partitions if ``partitions`` is None)."""
        by_topic: dict[str, list[int]] | None = None
        if partitions is not None:
            by_topic = defaultdict(list)
            for tp in partitions:
                tp = _tp(tp)
                by_topic[tp.topic].append(tp.partition)

        def build(version: int) -> OffsetFetchRequest:
            if by_topic is None and version < 2:
                raise UnsupportedFeatureError(
                    "listing all of a group's offsets needs OffsetFetch v2+; name the partitions"
                )
            return OffsetFetchRequest(
                group_id=group_id,
                topics=None
                if by_topic is None
                else [
                    OffsetFetchRequest.OffsetFetchRequestTopic(name=t, partition_indexes=ps)
                    for t, ps in by_topic.items()
                ],
                require_stable=False,
            )

        response = await self._to_coordinator(group_id, 9, build)
        if response.error_code:
            raise _error(response.error_code, None, f"offsets of group {group_id!r}")
        out: dict[TopicPartition, OffsetAndMetadata] = {}
        for t in response.topics:
            for p in t.partitions:
                if p.error_code:
                    raise _error(p.error_code, None, f"offset of {t.name}-{p.partition_index}")
                if p.committed_offset >= 0:
                    out[TopicPartition(t.name, p.partition_index)] = OffsetAndMetadata(
                        p.committed_offset, p.metadata or "", p.committed_leader_epoch
                    )
        return out

    async def alter_consumer_group_offsets(
        self, group_id: str, offsets: Mapping[Any, int | OffsetAndMetadata]
    ) -> None:
        """Set a group's committed offsets (the group must have no active members)."""
        by_topic: dict[str, list[Any]] = defaultdict(list)
        for tp, value in offsets.items():
            tp = _tp(tp)
            om = OffsetAndMetadata(value) if isinstance(value, int) else value
            by_topic[tp.topic].append(
                OffsetCommitRequest.OffsetCommitRequestPartition(
                    partition_index=tp.partition,
                    committed_offset=om.offset,
                    committed_leader_epoch=om.leader_epoch,
                    committed_metadata=om.metadata,
                )
            )

        def build(version: int) -> OffsetCommitRequest:
            return OffsetCommitRequest(
                group_id=group_id,
                generation_id_or_member_epoch=-1,
                member_id="",
                retention_time_ms=-1,
                topics=[
                    OffsetCommitRequest.OffsetCommitRequestTopic(name=t, partitions=ps)
                    for t, ps in by_topic.items()
                ],
            )

        response = await self._to_coordinator(group_id, 8, build)
        errors = {
            TopicPartition(t.name, p.partition_index): _error(
                p.error_code, None, f"commit {t.name}-{p.partition_index}"
            )
            for t in response.topics
            for p in t.partitions
            if p.error_code
        }
        _raise_errors("alter_consumer_group_offsets", errors)

    async def delete_consumer_group_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition | tuple[str, int]]
    ) -> None:
        """Forget a group's committed offsets for these partitions (OffsetDelete)."""
        by_topic: dict[str, list[Any]] = defaultdict(list)
        for tp in partitions:
            tp = _tp(tp)
            by_topic[tp.topic].append(
                OffsetDeleteRequest.OffsetDeleteRequestPartition(partition_index=tp.partition)
            )

        def build(version: int) -> OffsetDeleteRequest:
            return OffsetDeleteRequest(
                group_id=group_id,
                topics=[
                    OffsetDeleteRequest.OffsetDeleteRequestTopic(name=t, partitions=ps)
                    for t, ps in by_topic.items()
                ],
            )

        response = await self._to_coordinator(group_id, 47, build)
        if response.error_code:
            raise _error(response.error_code, None, f"delete offsets of group {group_id!r}")
        errors = {
            TopicPartition(t.name, p.partition_index): _error(
                p.error_code, None, f"delete offset {t.name}-{p.partition_index}"
            )
            for t in response.topics
            for p in t.partitions
            if p.error_code
        }
        _raise_errors("delete_consumer_group_offsets", errors)

    async def list_consumer_group_lags(
        self, group_id: str, description: GroupDescription | None = None
    ) -> list[ConsumerGroupLag]:
        """Per partition the group committed or owns: committed offset, log end offset, lag
        and owner, sorted (as ``kafka-consumer-groups --describe``).  ``description``: the
        group's, if the caller has it already."""
        if description is None:
            description = (await self.describe_groups([group_id]))[group_id]
        owners = {tp: member for member in description.members for tp in member.assignment}
        committed = await self.list_consumer_group_offsets(group_id)
        partitions = sorted(set(committed) | set(owners))
        existing = set(await self.list_topics(internal=True))
        live = [tp for tp in partitions if tp.topic in existing]  # a deleted topic has no end
        ends = await self.list_offsets({tp: "latest" for tp in live}) if live else {}
        lags = []
        for tp in partitions:
            current = committed[tp].offset if tp in committed else None
            end = ends.get(tp)
            lag = None if current is None or end is None else max(0, end - current)
            lags.append(ConsumerGroupLag(tp, current, end, lag, owners.get(tp)))
        return lags

    async def consumer_group_reset_targets(
        self, group_id: str, partitions: Iterable[TopicPartition], how: str, arg: int = 0
    ) -> dict[TopicPartition, int]:
        """The offsets ``kafka-consumer-groups --reset-offsets`` would commit, clamped to
        [log start, log end]: ``how`` is ``to-earliest``, ``to-latest``, ``to-offset``
        (``arg``), ``to-datetime`` (``arg`` ms; the log end where no record is that new),
        ``shift-by`` (``arg``) or ``to-current``."""
        tps = list(partitions)
        if not tps:
            return {}
        earliest = await self.list_offsets({tp: "earliest" for tp in tps})
        latest = await self.list_offsets({tp: "latest" for tp in tps})
        if how == "to-earliest":
            wanted = dict(earliest)
        elif how == "to-latest":
            wanted = dict(latest)
        elif how == "to-offset":
            wanted = {tp: arg for tp in tps}
        elif how == "to-datetime":
            found = await self.list_offsets({tp: arg for tp in tps})
            wanted = {tp: found[tp] if found[tp] >= 0 else latest[tp] for tp in tps}
        elif how in ("shift-by", "to-current"):
            committed = await self.list_consumer_group_offsets(group_id, tps)
            shift = arg if how == "shift-by" else 0
            wanted = {
                tp: (committed[tp].offset if tp in committed else latest[tp]) + shift for tp in tps
            }
        else:
            raise ValueError(f"unknown offset reset {how!r}")
        return {tp: min(max(wanted[tp], earliest[tp]), latest[tp]) for tp in tps}

    # ------------------------------------------------------------------ records and offsets

    async def _by_leader(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[int, list[TopicPartition]]:
        tps = list(partitions)
        await self._metadata(sorted({tp.topic for tp in tps}))
        by_node: dict[int, list[TopicPartition]] = defaultdict(list)
        for tp in tps:
            leader = self._core.metadata.leader_for(tp)
            if leader < 0:
                raise error_for_code(3)(
                    f"{tp.topic}-{tp.partition}: unknown partition or no leader"
                )
            by_node[leader].append(tp)
        return by_node

    async def delete_records(
        self, offsets: Mapping[Any, int], *, timeout_ms: int = 30_000
    ) -> dict[TopicPartition, int]:
        """Delete records before the given offsets (-1: the high watermark); returns the
        new low watermarks."""
        wanted = {_tp(tp): off for tp, off in offsets.items()}
        out: dict[TopicPartition, int] = {}
        errors: dict[Any, KafkaError] = {}
        for node, tps in (await self._by_leader(wanted)).items():
            by_topic: dict[str, list[Any]] = defaultdict(list)
            for tp in tps:
                by_topic[tp.topic].append(
                    DeleteRecordsRequest.DeleteRecordsPartition(
                        partition_index=tp.partition, offset=wanted[tp]
                    )
                )

            def build(
                version: int, by_topic: dict[str, list[Any]] = by_topic
            ) -> DeleteRecordsRequest:
                return DeleteRecordsRequest(
                    topics=[
                        DeleteRecordsRequest.DeleteRecordsTopic(name=t, partitions=ps)
                        for t, ps in by_topic.items()
                    ],
                    timeout_ms=timeout_ms,
                )

            response = await self._core.request(node, 21, build)
            for t in response.topics:
                for p in t.partitions:
                    tp = TopicPartition(t.name, p.partition_index)
                    if p.error_code:
                        errors[tp] = _error(p.error_code, None, f"delete records of {tp}")
                    else:
                        out[tp] = p.low_watermark
        _raise_errors("delete_records", errors)
        return out

    async def list_offsets(
        self, specs: Mapping[Any, int | str], *, isolation_level: str = "read_uncommitted"
    ) -> dict[TopicPartition, int]:
        """Offsets per partition for ``"earliest"``, ``"latest"`` or a timestamp (ms):
        the first offset at or after it (-1 if none)."""
        named = {"earliest": -2, "latest": -1, "max_timestamp": -3}
        wanted = {_tp(tp): named[s] if isinstance(s, str) else int(s) for tp, s in specs.items()}
        isolation = 1 if isolation_level == "read_committed" else 0
        out: dict[TopicPartition, int] = {}
        for node, tps in (await self._by_leader(wanted)).items():
            by_topic: dict[str, list[Any]] = defaultdict(list)
            for tp in tps:
                by_topic[tp.topic].append(
                    ListOffsetsRequest.ListOffsetsPartition(
                        partition_index=tp.partition, timestamp=wanted[tp]
                    )
                )

            def build(
                version: int, by_topic: dict[str, list[Any]] = by_topic
            ) -> ListOffsetsRequest:
                return ListOffsetsRequest(
                    replica_id=-1,
                    isolation_level=isolation,
                    topics=[
                        ListOffsetsRequest.ListOffsetsTopic(name=t, partitions=ps)
                        for t, ps in by_topic.items()
                    ],
                )

            response = await self._core.request(node, 2, build)
            for t in response.topics:
                for p in t.partitions:
                    if p.error_code:
                        raise _error(p.error_code, None, f"offsets of {t.name}-{p.partition_index}")
                    out[TopicPartition(t.name, p.partition_index)] = p.offset
        return out

    # ------------------------------------------------------------------ SCRAM users

    async def describe_user_scram_credentials(
        self, users: Iterable[str] | None = None
    ) -> dict[str, dict[str, int]]:
        """``{user: {mechanism: iterations}}`` for ``users`` (None: every user)."""
        names = None if users is None else list(users)

        def build(version: int) -> DescribeUserScramCredentialsRequest:
            return DescribeUserScramCredentialsRequest(
                users=None
                if names is None
                else [DescribeUserScramCredentialsRequest.UserName(name=n) for n in names]
            )

        response = await self._core.request(None, 50, build)
        if response.error_code:
            raise _error(response.error_code, response.error_message, "describe users")
        errors = {
            r.user: _error(r.error_code, r.error_message, f"describe user {r.user!r}")
            for r in response.results
            if r.error_code
        }
        _raise_errors("describe_user_scram_credentials", errors)
        return {
            r.user: {
                MECHANISM_TYPES.get(i.mechanism, "UNKNOWN"): i.iterations
                for i in r.credential_infos
            }
            for r in response.results
        }

    async def upsert_user_scram_credential(
        self, user: str, mechanism: str, password: str, iterations: int = 4096
    ) -> None:
        """Create or replace ``user``'s credential for a SCRAM mechanism."""
        if mechanism_type(mechanism) == 0:
            raise ValueError(f"unknown SCRAM mechanism {mechanism!r}")
        salt = secrets.token_bytes(32)
        # PBKDF2 over thousands of iterations: milliseconds of CPU, kept off the caller's loop
        # (the console's is the broker's with console.enable).
        salted = await asyncio.to_thread(salted_password, mechanism, password, salt, iterations)
        upsertion = AlterUserScramCredentialsRequest.ScramCredentialUpsertion(
            name=user,
            mechanism=mechanism_type(mechanism),
            iterations=iterations,
            salt=salt,
            salted_password=salted,
        )
        await self._alter_user_scram_credentials(
            AlterUserScramCredentialsRequest(deletions=[], upsertions=[upsertion])
        )

    async def delete_user_scram_credential(self, user: str, mechanism: str) -> None:
        """Delete ``user``'s credential for one SCRAM mechanism."""
        deletion = AlterUserScramCredentialsRequest.ScramCredentialDeletion(
            name=user, mechanism=mechanism_type(mechanism)
        )
        await self._alter_user_scram_credentials(
            AlterUserScramCredentialsRequest(deletions=[deletion], upsertions=[])
        )

    async def _alter_user_scram_credentials(
        self, request: AlterUserScramCredentialsRequest
    ) -> None:
        response = await self._core.request(None, 51, lambda version: request)
        errors = {
            r.user: _error(r.error_code, r.error_message, f"alter user {r.user!r}")
            for r in response.results
            if r.error_code
        }
        _raise_errors("alter_user_scram_credentials", errors)


def _has_error(response: Any, code: int) -> bool:
    """Whether any per-resource result of a response carries ``code``."""
    for field in ("topics", "responses", "results", "groups"):
        for item in getattr(response, field, None) or ():
            if getattr(item, "error_code", 0) == code:
                return True
            for sub in getattr(item, "partitions", None) or ():
                if getattr(sub, "error_code", 0) == code:
                    return True
    return getattr(response, "error_code", 0) == code
