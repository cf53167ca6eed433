"""``pystream acls add|list|remove`` (like ``kafka-acls.sh``, with its flag names).

Through the admin APIs (CreateAcls, DescribeAcls, DeleteAcls) of a running
broker, so the broker needs ``authorizer.class.name`` and the caller ALTER
(add/remove) or DESCRIBE (list) on the cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from pystream.cli.common import admin_client, connection_options
from pystream.security.acl import (
    CLUSTER_NAME,
    WILDCARD,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
    group_by_resource,
)

F = TypeVar("F", bound=Callable[..., Any])
Resource = tuple[ResourceType, str]

_FILTER_PATTERNS = set(PatternType) - {PatternType.UNKNOWN}
_OPERATIONS = [op.camel for op in AclOperation if op.name not in ("UNKNOWN", "ANY")]


def resource_options(func: F) -> F:
    """The resources a command names (``--topic``, ``--group``, ``--cluster`` ...)."""
    for decorator in reversed(
        [
            click.option("--topic", multiple=True, help="A topic (repeatable; '*' for all)."),
            click.option("--group", multiple=True, help="A consumer group (repeatable)."),
            click.option("--cluster", is_flag=True, help="The cluster resource."),
            click.option(
                "--transactional-id", multiple=True, help="A transactional id (repeatable)."
            ),
            click.option(
                "--resource-pattern-type",
                default=None,
                metavar="LITERAL|PREFIXED|ANY|MATCH",
                help="How the resource names match (add: LITERAL or PREFIXED).",
            ),
        ]
    ):
        func = decorator(func)
    return func


def _resources(
    topic: Iterable[str], group: Iterable[str], cluster: bool, transactional_id: Iterable[str]
) -> list[Resource]:
    named: list[Resource] = [(ResourceType.TOPIC, t) for t in topic]
    named += [(ResourceType.GROUP, g) for g in group]
    named += [(ResourceType.TRANSACTIONAL_ID, t) for t in transactional_id]
    if cluster:
        named.append((ResourceType.CLUSTER, CLUSTER_NAME))
    return named


def _pattern_type(text: str | None, default: PatternType, allowed: set[PatternType]) -> PatternType:
    if text is None:
        return default
    try:
        pattern = PatternType.parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--resource-pattern-type") from None
    if pattern not in allowed:
        names = ", ".join(sorted(p.name for p in allowed))
        raise click.BadParameter(f"use one of {names} here", param_hint="--resource-pattern-type")
    return pattern  # type: ignore[return-value]


def _operation(text: str) -> AclOperation:
    try:
        return AclOperation.parse(text)  # type: ignore[return-value]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--operation") from None


def _print(bindings: Iterable[AclBinding], heading: str) -> None:
    """Kafka's layout: a heading per resource pattern, then one entry a line."""
    for (rtype, ptype, name), entries in group_by_resource(bindings).items():
        click.echo(
            f"{heading} for resource `ResourcePattern(resourceType={rtype.name}, "
            f"name={name}, patternType={ptype.name})`: "
        )
        for b in entries:
            click.echo(
                f" \t(principal={b.principal}, host={b.host}, operation={b.operation.name}, "
                f"permissionType={b.permission_type.name})"
            )
        click.echo()


@click.group()
def acls() -> None:
    """Add, list and remove ACLs (the broker needs authorizer.class.name)."""


@acls.command("add")
@click.option("--allow-principal", multiple=True, help="Principal to allow, e.g. User:alice.")
@click.option("--deny-principal", multiple=True, help="Principal to deny, e.g. User:mallory.")
@click.option("--allow-host", multiple=True, help="Host the allow entries apply to (default *).")
@click.option("--deny-host", multiple=True, help="Host the deny entries apply to (default *).")
@click.option(
    "--operation",
    multiple=True,
    help=f"Operation (repeatable, default All): {', '.join(_OPERATIONS)}.",
)
@click.option("--producer", is_flag=True, help="Producer rights: Write/Describe/Create on topics.")
@click.option(
    "--consumer", is_flag=True, help="Consumer rights: Read/Describe topics, Read groups."
)
@click.option("--idempotent", is_flag=True, help="With --producer: IdempotentWrite on the cluster.")
@resource_options
@connection_options
def add(
    allow_principal: tuple[str, ...],
    deny_principal: tuple[str, ...],
    allow_host: tuple[str, ...],
    deny_host: tuple[str, ...],
    operation: tuple[str, ...],
    producer: bool,
    consumer: bool,
    idempotent: bool,
    topic: tuple[str, ...],
    group: tuple[str, ...],
    cluster: bool,
    transactional_id: tuple[str, ...],
    resource_pattern_type: str | None,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Add ACLs: every principal x host x operation on every resource named."""
    if not allow_principal and not deny_principal:
        raise click.UsageError("give --allow-principal and/or --deny-principal")
    pattern = _pattern_type(
        resource_pattern_type, PatternType.LITERAL, {PatternType.LITERAL, PatternType.PREFIXED}
    )
    wanted: dict[Resource, list[AclOperation]] = {}
    if producer or consumer:
        # kafka-acls' convenience options: the rights a producer / consumer needs.
        for name in topic:
            ops = wanted.setdefault((ResourceType.TOPIC, name), [])
            if producer:
                ops += [AclOperation.WRITE, AclOperation.DESCRIBE, AclOperation.CREATE]
            if consumer:
                ops += [AclOperation.READ, AclOperation.DESCRIBE]
        if consumer:
            for name in group:
                wanted[(ResourceType.GROUP, name)] = [AclOperation.READ]
        if producer:
            for name in transactional_id:
                ops = [AclOperation.WRITE, AclOperation.DESCRIBE]
                wanted[(ResourceType.TRANSACTIONAL_ID, name)] = ops
            if idempotent:
                wanted[(ResourceType.CLUSTER, CLUSTER_NAME)] = [AclOperation.IDEMPOTENT_WRITE]
    else:
        ops = [_operation(o) for o in operation] or [AclOperation.ALL]
        for resource in _resources(topic, group, cluster, transactional_id):
            wanted[resource] = ops
    if not wanted:
        raise click.UsageError("name a resource: --topic, --group, --cluster or --transactional-id")
    entries = [(p, AclPermissionType.ALLOW, allow_host or (WILDCARD,)) for p in allow_principal]
    entries += [(p, AclPermissionType.DENY, deny_host or (WILDCARD,)) for p in deny_principal]
    bindings = list(
        dict.fromkeys(
            AclBinding(rtype, name, pattern, principal, host, op, permission)
            for (rtype, name), ops in wanted.items()
            for principal, permission, hosts in entries
            for host in hosts
            for op in dict.fromkeys(ops)
        )
    )
    for b in bindings:
        try:
            b.validate()
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    _print(bindings, "Adding ACLs")
    with admin_client(bootstrap_server, command_config) as admin:
        admin.create_acls(bindings)


def _filters(
    topic: tuple[str, ...],
    group: tuple[str, ...],
    cluster: bool,
    transactional_id: tuple[str, ...],
    pattern: PatternType,
    principal: str | None,
) -> list[AclBindingFilter]:
    resources = _resources(topic, group, cluster, transactional_id)
    if not resources:
        return [AclBindingFilter(pattern_type=PatternType.ANY, principal=principal)]
    return [
        AclBindingFilter(rtype, name, pattern, principal=principal) for rtype, name in resources
    ]


@acls.command("list")
@click.option("--principal", default=None, help="Only the ACLs of this principal.")
@resource_options
@connection_options
def list_(
    principal: str | None,
    topic: tuple[str, ...],
    group: tuple[str, ...],
    cluster: bool,
    transactional_id: tuple[str, ...],
    resource_pattern_type: str | None,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """List ACLs (all of them, or those of the resources named)."""
    pattern = _pattern_type(
        resource_pattern_type, PatternType.ANY, set(PatternType) - {PatternType.UNKNOWN}
    )
    with admin_client(bootstrap_server, command_config) as admin:
        found: list[AclBinding] = []
        for acl_filter in _filters(topic, group, cluster, transactional_id, pattern, principal):
            found += admin.describe_acls(acl_filter)
    _print(dict.fromkeys(found), "Current ACLs")


@acls.command("remove")
@click.option("--principal", default=None, help="Only the ACLs of this principal.")
@click.option("--force", is_flag=True, help="Accepted for kafka-acls compatibility (no prompt).")
@resource_options
@connection_options
def remove(
    principal: str | None,
    force: bool,
    topic: tuple[str, ...],
    group: tuple[str, ...],
    cluster: bool,
    transactional_id: tuple[str, ...],
    resource_pattern_type: str | None,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Remove the ACLs of the resources named (with --principal: only that principal's)."""
    if not _resources(topic, group, cluster, transactional_id):
        raise click.UsageError("name a resource: --topic, --group, --cluster or --transactional-id")
    pattern = _pattern_type(
        resource_pattern_type, PatternType.LITERAL, set(PatternType) - {PatternType.UNKNOWN}
    )
    with admin_client(bootstrap_server, command_config) as admin:
        removed = admin.delete_acls(
            _filters(topic, group, cluster, transactional_id, pattern, principal)
        )
    _print([b for bindings in removed for b in bindings], "Removed ACLs")
