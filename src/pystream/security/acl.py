"""ACL bindings and filters, with Kafka's enums, codes and matching rules.

The codes are the wire values of Kafka's ``ResourceType``, ``PatternType``,
``AclOperation`` and ``AclPermissionType``; the names (``Topic``, ``Read``,
``Allow`` ...) are the ones Kafka writes in ZooKeeper's ``/kafka-acl`` JSON.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "AUTHORIZED_OPERATIONS_OMITTED",
    "CLUSTER_NAME",
    "SUPPORTED_OPERATIONS",
    "WILDCARD",
    "WILDCARD_PRINCIPAL",
    "AclBinding",
    "AclBindingFilter",
    "AclOperation",
    "AclPermissionType",
    "PatternType",
    "ResourceType",
    "operations_bitfield",
]

# The one CLUSTER resource's name, and the wildcard resource name / host / principal.
CLUSTER_NAME = "kafka-cluster"
WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"


class _Named(enum.IntEnum):
    """An enum with Kafka's wire code and its CamelCase name (``IDEMPOTENT_WRITE`` ->
    ``IdempotentWrite``), parsed case-insensitively with or without underscores."""

    @property
    def camel(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_"))

    @classmethod
    def parse(cls, text: str) -> _Named:
        key = text.replace("_", "").replace("-", "").lower()
        for member in cls:
            if member.name.replace("_", "").lower() == key:
                return member
        names = ", ".join(m.name for m in cls if m.name not in ("UNKNOWN", "ANY", "MATCH"))
        raise ValueError(f"unknown {cls.__name__} {text!r}; use one of {names}")


class ResourceType(_Named):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(_Named):
    UNKNOWN = 0
    ANY = 1  # filters only: any pattern type, exact name
    MATCH = 2  # filters only: every pattern that would apply to the name
    LITERAL = 3
    PREFIXED = 4


class AclOperation(_Named):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class AclPermissionType(_Named):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


E = TypeVar("E", bound=_Named)


def _member(cls: type[E], code: int) -> E:
    """The member for a wire code; UNKNOWN (0) for codes this side does not know."""
    try:
        return cls(code)
    except ValueError:
        return cls(0)


def _decoded(
    resource_type: int, pattern_type: int, operation: int, permission_type: int
) -> tuple[ResourceType, PatternType, AclOperation, AclPermissionType]:
    return (
        _member(ResourceType, resource_type),
        _member(PatternType, pattern_type),
        _member(AclOperation, operation),
        _member(AclPermissionType, permission_type),
    )


# Kafka's implied operations: an ALLOW of any of these grants the key (AclAuthorizer).
IMPLIED_BY: dict[AclOperation, frozenset[AclOperation]] = {
    AclOperation.DESCRIBE: frozenset(
        {
            AclOperation.DESCRIBE,
            AclOperation.READ,
            AclOperation.WRITE,
            AclOperation.DELETE,
            AclOperation.ALTER,
        }
    ),
    AclOperation.DESCRIBE_CONFIGS: frozenset(
        {AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS}
    ),
}

# What each resource type can be asked about (Kafka's ``AclEntry.supportedOperations``): the
# operations an ``authorized_operations`` bitfield covers.
SUPPORTED_OPERATIONS: dict[ResourceType, tuple[AclOperation, ...]] = {
    ResourceType.TOPIC: (
        AclOperation.READ,
        AclOperation.WRITE,
        AclOperation.CREATE,
        AclOperation.DESCRIBE,
        AclOperation.DELETE,
        AclOperation.ALTER,
        AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS,
    ),
    ResourceType.GROUP: (
        AclOperation.READ,
        AclOperation.DESCRIBE,
        AclOperation.DELETE,
        AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS,
    ),
    ResourceType.CLUSTER: (
        AclOperation.CREATE,
        AclOperation.CLUSTER_ACTION,
        AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS,
        AclOperation.IDEMPOTENT_WRITE,
        AclOperation.ALTER,
        AclOperation.DESCRIBE,
    ),
    ResourceType.TRANSACTIONAL_ID: (AclOperation.DESCRIBE, AclOperation.WRITE),
    ResourceType.DELEGATION_TOKEN: (AclOperation.DESCRIBE,),
    ResourceType.USER: (AclOperation.CREATE_TOKENS, AclOperation.DESCRIBE_TOKENS),
}

# The ``*_authorized_operations`` value when the client did not ask (the schema default,
# Java's Integer.MIN_VALUE).
AUTHORIZED_OPERATIONS_OMITTED = -(2**31)


def operations_bitfield(operations: Iterable[AclOperation]) -> int:
    """One bit per operation code (Kafka's ``Utils.to32BitField``)."""
    field = 0
    for operation in operations:
        field |= 1 << operation
    return field


_CONCRETE_RESOURCES = frozenset(ResourceType) - {ResourceType.UNKNOWN, ResourceType.ANY}
_CONCRETE_OPERATIONS = frozenset(AclOperation) - {AclOperation.UNKNOWN, AclOperation.ANY}


@dataclass(frozen=True, slots=True)
class AclBinding:
    """One ACL: a resource pattern and an access-control entry."""

    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: AclOperation
    permission_type: AclPermissionType

    def validate(self) -> None:
        """ValueError saying what is wrong with a binding CreateAcls was asked to store."""
        if self.resource_type not in _CONCRETE_RESOURCES:
            raise ValueError(f"resource type {self.resource_type.name} cannot hold an ACL")
        if self.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
            raise ValueError(
                f"pattern type {self.pattern_type.name} cannot be stored; use LITERAL or PREFIXED"
            )
        if self.operation not in _CONCRETE_OPERATIONS:
            raise ValueError(f"operation {self.operation.name} cannot be stored")
        if self.permission_type not in (AclPermissionType.ALLOW, AclPermissionType.DENY):
            raise ValueError(f"permission type {self.permission_type.name} cannot be stored")
        if not self.resource_name:
            raise ValueError("the resource name is empty")
        if self.resource_type is ResourceType.CLUSTER and self.resource_name != CLUSTER_NAME:
            raise ValueError(f"the CLUSTER resource is named {CLUSTER_NAME!r}")
        if self.pattern_type is PatternType.PREFIXED and self.resource_name == WILDCARD:
            raise ValueError("a PREFIXED pattern cannot be the wildcard '*'; use LITERAL '*'")
        principal_type, sep, name = self.principal.partition(":")
        if not sep or not principal_type or not name:
            raise ValueError(f"principal {self.principal!r} must be <type>:<name>, e.g. User:bob")
        if not self.host:
            raise ValueError("the host is empty; use '*' for any host")

    @classmethod
    def parse(
        cls,
        resource_type: str,
        resource_name: str,
        pattern_type: str,
        principal: str,
        host: str,
        operation: str,
        permission_type: str,
    ) -> AclBinding:
        """A binding from text (names as ``kafka-acls`` takes them: ``Topic``, ``Prefixed``,
        ``IdempotentWrite``, ``Allow`` ...), validated; ValueError saying what was wrong."""
        binding = cls(
            ResourceType.parse(resource_type),  # type: ignore[arg-type]
            resource_name.strip(),
            PatternType.parse(pattern_type),  # type: ignore[arg-type]
            principal.strip(),
            host.strip(),
            AclOperation.parse(operation),  # type: ignore[arg-type]
            AclPermissionType.parse(permission_type),  # type: ignore[arg-type]
        )
        binding.validate()
        return binding

    @classmethod
    def from_codes(
        cls,
        resource_type: int,
        resource_name: str,
        pattern_type: int,
        principal: str,
        host: str,
        operation: int,
        permission_type: int,
    ) -> AclBinding:
        """A binding from wire codes (a code this side does not know becomes UNKNOWN, which
        :meth:`validate` refuses)."""
        rtype, ptype, op, perm = _decoded(resource_type, pattern_type, operation, permission_type)
        return cls(rtype, resource_name, ptype, principal, host, op, perm)

    # -- ZooKeeper / local file form (Kafka's /kafka-acl JSON entries) -------------------
    def entry_json(self) -> dict[str, str]:
        return {
            "principal": self.principal,
            "permissionType": self.permission_type.camel,
            "operation": self.operation.camel,
            "host": self.host,
        }

    @classmethod
    def from_entry_json(
        cls,
        resource_type: ResourceType,
        resource_name: str,
        pattern_type: PatternType,
        entry: dict[str, str],
    ) -> AclBinding:
        return cls(
            resource_type,
            resource_name,
            pattern_type,
            str(entry["principal"]),
            str(entry["host"]),
            AclOperation.parse(entry["operation"]),  # type: ignore[arg-type]
            AclPermissionType.parse(entry["permissionType"]),  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class AclBindingFilter:
    """What DescribeAcls / DeleteAcls select: None fields and ANY match everything; a MATCH
    pattern type selects every pattern that would apply to the name (Kafka's
    ``ResourcePatternFilter`` and ``AccessControlEntryFilter``)."""

    resource_type: ResourceType = ResourceType.ANY
    resource_name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: AclOperation = AclOperation.ANY
    permission_type: AclPermissionType = AclPermissionType.ANY

    @classmethod
    def from_codes(
        cls,
        resource_type: int,
        resource_name: str | None,
        pattern_type: int,
        principal: str | None,
        host: str | None,
        operation: int,
        permission_type: int,
    ) -> AclBindingFilter:
        """A filter from wire codes (see :meth:`AclBinding.from_codes`)."""
        rtype, ptype, op, perm = _decoded(resource_type, pattern_type, operation, permission_type)
        return cls(rtype, resource_name, ptype, principal, host, op, perm)

    def validate(self) -> None:
        """ValueError for filters Kafka rejects (UNKNOWN anywhere)."""
        for value in (self.resource_type, self.pattern_type, self.operation, self.permission_type):
            if value.name == "UNKNOWN":
                raise ValueError(f"the filter has an UNKNOWN {type(value).__name__}")

    def matches(self, binding: AclBinding) -> bool:
        if (
            self.resource_type is not ResourceType.ANY
            and self.resource_type != binding.resource_type
        ):
            return False
        if not self._matches_pattern(binding):
            return False
        if self.principal is not None and self.principal != binding.principal:
            return False
        if self.host is not None and self.host != binding.host:
            return False
        if self.operation is not AclOperation.ANY and self.operation != binding.operation:
            return False
        return (
            self.permission_type is AclPermissionType.ANY
            or self.permission_type == binding.permission_type
        )

    def _matches_pattern(self, binding: AclBinding) -> bool:
        kind = self.pattern_type
        if kind not in (PatternType.ANY, PatternType.MATCH) and kind != binding.pattern_type:
            return False
        if self.resource_name is None:
            return True
        if kind is not PatternType.MATCH:
            return self.resource_name == binding.resource_name
        if binding.pattern_type is PatternType.LITERAL:
            return binding.resource_name in (self.resource_name, WILDCARD)
        return self.resource_name.startswith(binding.resource_name)


ResourceKey = tuple[ResourceType, PatternType, str]


def group_by_resource(bindings: Iterable[AclBinding]) -> dict[ResourceKey, list[AclBinding]]:
    """Bindings per resource pattern, as stored (one ``/kafka-acl`` znode per resource)."""
    grouped: dict[ResourceKey, list[AclBinding]] = {}
    for b in bindings:
        grouped.setdefault((b.resource_type, b.pattern_type, b.resource_name), []).append(b)
    return grouped


def resource_acls_json(bindings: Iterable[AclBinding]) -> dict[str, Any]:
    """One resource's ACLs as Kafka stores them: ``{"version":1,"acls":[…]}``."""
    return {"version": 1, "acls": [b.entry_json() for b in bindings]}


def bindings_from_json(key: ResourceKey, data: dict[str, Any]) -> list[AclBinding]:
    """The inverse of :func:`resource_acls_json` (ValueError/KeyError if malformed)."""
    resource_type, pattern_type, name = key
    return [
        AclBinding.from_entry_json(resource_type, name, pattern_type, entry)
        for entry in data["acls"]
    ]


def apply_acl_changes(
    current: Iterable[AclBinding],
    create: Iterable[AclBinding] = (),
    delete_filters: Iterable[AclBindingFilter] = (),
) -> tuple[list[AclBinding], list[list[AclBinding]]]:
    """``current`` with ``create`` added (duplicates once) and whatever any filter matches
    removed; also, per filter, the bindings it matched (what DeleteAcls reports: as in
    Kafka, every filter sees the ACLs as they were, so two filters can report one binding)."""
    before = list(dict.fromkeys([*current, *create]))
    removed_per_filter = [[b for b in before if f.matches(b)] for f in delete_filters]
    gone = {b for removed in removed_per_filter for b in removed}
    return [b for b in before if b not in gone], removed_per_filter
