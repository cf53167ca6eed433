"""The ACL authorizer: Kafka's ``AclAuthorizer`` rules over the stored ACL bindings.

A request is allowed when its principal is a super user, or no DENY binding
matches and an ALLOW binding does (deny wins).  A binding matches a resource
when it is LITERAL with the resource's name or the wildcard ``*``, or PREFIXED
with a prefix of the name; its principal is the request's or ``User:*``; its
host is the client's address or ``*``; its operation is the one asked, ``ALL``,
or (ALLOW only) one that implies it (READ/WRITE/DELETE/ALTER imply DESCRIBE,
ALTER_CONFIGS implies DESCRIBE_CONFIGS).  A resource with no binding at all is
allowed only with ``allow.everyone.if.no.acl.found=true``.

Decisions are cached per (principal, host, operation, resource); the cache and
the index are rebuilt whenever the store's ``acl_version`` moves, so an ACL
change (here or, in a cluster, on another broker) applies to the next request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from pystream.security.acl import (
    IMPLIED_BY,
    WILDCARD,
    WILDCARD_PRINCIPAL,
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
)

__all__ = ["AUTHORIZER_CLASS_NAMES", "AclAuthorizer", "AclSource", "authorizer_enabled"]

# authorizer.class.name values that turn the ACL authorizer on (Kafka's names are aliases).
AUTHORIZER_CLASS_NAMES = frozenset(
    {
        "pystream.security.AclAuthorizer",
        "kafka.security.authorizer.AclAuthorizer",
        "kafka.security.auth.SimpleAclAuthorizer",
    }
)

# A bound on the decision cache: a client cycling through endless names cannot grow it.
_MAX_CACHED_DECISIONS = 100_000


def authorizer_enabled(class_name: str) -> bool:
    """True for an ACL authorizer class name, False for '' (none); ValueError otherwise."""
    if not class_name:
        return False
    if class_name in AUTHORIZER_CLASS_NAMES:
        return True
    raise ValueError(
        f"authorizer.class.name={class_name!r} is not an authorizer pystream has; use "
        "pystream.security.AclAuthorizer (or Kafka's kafka.security.authorizer.AclAuthorizer), "
        "or leave it empty for no authorization"
    )


class AclSource(Protocol):
    """Where the ACLs live (the metadata store): the bindings and a counter that moves on
    every change."""

    @property
    def acl_version(self) -> int: ...

    def acls(self) -> Iterable[AclBinding]: ...


class _ResourceAcls:
    """The bindings of one resource type: literal by name, prefixed as (prefix, bindings)."""

    __slots__ = ("literal", "prefixed")

    def __init__(self) -> None:
        self.literal: dict[str, list[AclBinding]] = {}
        self.prefixed: dict[str, list[AclBinding]] = {}

    def matching(self, name: str) -> list[AclBinding]:
        found = list(self.literal.get(name, ()))
        if name != WILDCARD:
            found.extend(self.literal.get(WILDCARD, ()))
        for prefix, bindings in self.prefixed.items():
            if name.startswith(prefix):
                found.extend(bindings)
        return found


class AclAuthorizer:
    """Allows or denies (principal, host, operation, resource) by the ACLs of ``source``."""

    def __init__(
        self,
        source: AclSource,
        super_users: Iterable[str] = (),
        allow_everyone_if_no_acl_found: bool = False,
    ) -> None:
        self.source = source
        self.super_users = frozenset(super_users)
        self.allow_everyone_if_no_acl_found = allow_everyone_if_no_acl_found
        self._version = -1
        self._index: dict[ResourceType, _ResourceAcls] = {}
        # (principal, host, operation, resource type, name or None for "any") -> decision.
        self._cache: dict[tuple[str, str, AclOperation, ResourceType, str | None], bool] = {}

    @staticmethod
    def parse_super_users(text: str) -> list[str]:
        """``super.users``: principals separated by semicolons (``User:a;User:b``)."""
        return [p.strip() for p in text.split(";") if p.strip()]

    def authorize(
        self,
        principal: str,
        host: str,
        operation: AclOperation,
        resource_type: ResourceType,
        resource_name: str,
    ) -> bool:
        """Whether ``principal`` from ``host`` may do ``operation`` on the resource."""
        if self._version != self.source.acl_version:
            self._rebuild()
        key = (principal, host, operation, resource_type, resource_name)
        decision = self._cache.get(key)
        if decision is None:
            decision = self._decide(principal, host, operation, resource_type, resource_name)
            self._remember(key, decision)
        return decision

    def _remember(self, key: tuple[Any, ...], decision: bool) -> None:
        if len(self._cache) >= _MAX_CACHED_DECISIONS:
            self._cache.clear()
        self._cache[key] = decision

    def authorize_any(
        self, principal: str, host: str, operation: AclOperation, resource_type: ResourceType
    ) -> bool:
        """Whether ``operation`` is allowed on at least one resource of the type (Kafka's
        ``authorizeByResourceType``, KIP-679's test for idempotent producers): an ALLOW
        that no DENY for the same principal/host covers — a literal DENY of the same name,
        a prefixed DENY of a prefix of it, or a DENY on everything (literal ``*``)."""
        # One decision per resource type: cached under the name None.
        if self._version != self.source.acl_version:
            self._rebuild()
        key = (principal, host, operation, resource_type, None)
        decision = self._cache.get(key)
        if decision is None:
            decision = self._decide_any(principal, host, operation, resource_type)
            self._remember(key, decision)
        return decision

    def _decide_any(
        self, principal: str, host: str, operation: AclOperation, resource_type: ResourceType
    ) -> bool:
        if principal in self.super_users:
            return True
        acls = self._index.get(resource_type)
        if acls is None:
            return self.allow_everyone_if_no_acl_found
        principals, hosts = (principal, WILDCARD_PRINCIPAL), (host, WILDCARD)
        ops = (operation, AclOperation.ALL)

        def names(by_name: dict[str, list[AclBinding]], permission: AclPermissionType) -> set[str]:
            return {
                name
                for name, bindings in by_name.items()
                for b in bindings
                if b.permission_type is permission
                and b.principal in principals
                and b.host in hosts
                and b.operation in ops
            }

        deny_literal = names(acls.literal, AclPermissionType.DENY)
        deny_prefixed = names(acls.prefixed, AclPermissionType.DENY)
        if WILDCARD in deny_literal or "" in deny_prefixed:
            return False

        def denied(name: str) -> bool:
            return any(name.startswith(prefix) for prefix in deny_prefixed)

        if any(not denied(n) for n in names(acls.prefixed, AclPermissionType.ALLOW)):
            return True
        return any(
            n not in deny_literal and not denied(n)
            for n in names(acls.literal, AclPermissionType.ALLOW)
        )

    def _rebuild(self) -> None:
        # Read the version first: a change landing during the rebuild moves it again, and
        # the next call rebuilds once more rather than keeping a stale index.
        version = self.source.acl_version
        index: dict[ResourceType, _ResourceAcls] = {}
        for binding in self.source.acls():
            acls = index.setdefault(binding.resource_type, _ResourceAcls())
            by_name = acls.literal if binding.pattern_type is PatternType.LITERAL else acls.prefixed
            by_name.setdefault(binding.resource_name, []).append(binding)
        self._index = index
        self._cache = {}
        self._version = version

    def _decide(
        self,
        principal: str,
        host: str,
        operation: AclOperation,
        resource_type: ResourceType,
        resource_name: str,
    ) -> bool:
        if principal in self.super_users:
            return True
        acls = self._index.get(resource_type)
        matching = acls.matching(resource_name) if acls is not None else []
        if not matching:
            return self.allow_everyone_if_no_acl_found
        principals = (principal, WILDCARD_PRINCIPAL)
        hosts = (host, WILDCARD)
        applicable = [b for b in matching if b.principal in principals and b.host in hosts]
        for binding in applicable:
            if binding.permission_type is AclPermissionType.DENY and binding.operation in (
                operation,
                AclOperation.ALL,
            ):
                return False
        granting = IMPLIED_BY.get(operation, frozenset({operation}))
        return any(
            binding.permission_type is AclPermissionType.ALLOW
            and (binding.operation is AclOperation.ALL or binding.operation in granting)
            for binding in applicable
        )
