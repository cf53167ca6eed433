"""The ACL and user pages' reads and writes, through the admin client: ACL bindings
(DescribeAcls / CreateAcls / DeleteAcls) and SCRAM credentials
(Describe/AlterUserScramCredentials).

Form fields are checked as ``pystream acls add`` and ``pystream users add`` check theirs
(Kafka's names parsed by the ACL enums and :meth:`AclBinding.validate`, both through
:meth:`AclBinding.parse`; :func:`check_iterations`; the admin client salts and iterates the
password); bad input is raised as the Kafka error the broker's own check answers
(INVALID_REQUEST), so the page words it as it words the broker's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pystream.aio import AdminClient
from pystream.errors import ErrorCode, KafkaError, error_for_code
from pystream.security.acl import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
)
from pystream.security.scram import MIN_ITERATIONS, SCRAM_MECHANISMS, check_iterations

from .forms import parse_count

__all__ = [
    "CHOICES",
    "DEFAULT_ITERATIONS",
    "AclListing",
    "add_acl",
    "binding_fields",
    "binding_from_form",
    "delete_acl",
    "delete_user",
    "describe_binding",
    "list_acls",
    "list_users",
    "upsert_user",
]

# What the add form offers: the values CreateAcls can store.
CHOICES: dict[str, list[str]] = {
    "operation": [o.camel for o in AclOperation if o.name not in ("UNKNOWN", "ANY")],
    "permission_type": [AclPermissionType.ALLOW.camel, AclPermissionType.DENY.camel],
    "resource_type": [r.camel for r in ResourceType if r.name not in ("UNKNOWN", "ANY")],
    "pattern_type": [PatternType.LITERAL.camel, PatternType.PREFIXED.camel],
    "mechanism": sorted(SCRAM_MECHANISMS),
}
DEFAULT_ITERATIONS = MIN_ITERATIONS


def _invalid(message: str) -> KafkaError:
    return error_for_code(ErrorCode.INVALID_REQUEST)(message)


@dataclass
class AclListing:
    """The ACL page's table: ``bindings`` is None when the cluster has no authorizer."""

    bindings: list[AclBinding] | None
    principal: str
    resource_type: str
    resource_name: str


def binding_fields(binding: AclBinding) -> dict[str, str]:
    """A binding's fields as the forms carry them (the enums by their Kafka names): the
    delete buttons' hidden inputs."""
    return {
        "principal": binding.principal,
        "host": binding.host,
        "operation": binding.operation.camel,
        "permission_type": binding.permission_type.camel,
        "resource_type": binding.resource_type.camel,
        "pattern_type": binding.pattern_type.camel,
        "resource_name": binding.resource_name,
    }


async def list_acls(admin: AdminClient, query: Mapping[str, str]) -> AclListing:
    """Every binding DescribeAcls returns, narrowed by the page's ``principal``,
    ``resource_type`` and ``resource`` query parameters (DescribeAcls' own filter fields:
    exact principal, exact resource name of any pattern type)."""
    principal = query.get("principal", "").strip()
    rtype = query.get("resource_type", "").strip()
    name = query.get("resource", "").strip()
    try:
        resource_type = ResourceType.parse(rtype) if rtype else ResourceType.ANY
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    acl_filter = AclBindingFilter(
        resource_type,  # type: ignore[arg-type]
        name or None,
        PatternType.ANY,
        principal=principal or None,
    )
    try:
        found = await admin.describe_acls(acl_filter)
    except KafkaError as exc:
        if exc.error_code != ErrorCode.SECURITY_DISABLED:
            raise
        return AclListing(None, principal, rtype, name)
    found.sort(
        key=lambda b: (b.resource_type, b.resource_name, b.pattern_type, b.principal, b.operation)
    )
    return AclListing(found, principal, rtype, name)


def binding_from_form(form: dict[str, str]) -> AclBinding:
    """The binding a form names, checked as CreateAcls checks it (INVALID_REQUEST)."""
    try:
        return AclBinding.parse(*(form.get(field, "") for field in _PARSE_ORDER))
    except ValueError as exc:
        raise _invalid(str(exc)) from None


# AclBinding.parse's argument order.
_PARSE_ORDER = (
    "resource_type",
    "resource_name",
    "pattern_type",
    "principal",
    "host",
    "operation",
    "permission_type",
)


async def add_acl(admin: AdminClient, form: dict[str, str]) -> AclBinding:
    """CreateAcls of the form's one binding."""
    binding = binding_from_form(form)
    await admin.create_acls([binding])
    return binding


async def delete_acl(admin: AdminClient, form: dict[str, str]) -> AclBinding:
    """DeleteAcls with exactly the form's binding as the filter (nothing else matches)."""
    b = binding_from_form(form)
    exact = AclBindingFilter(
        b.resource_type,
        b.resource_name,
        b.pattern_type,
        b.principal,
        b.host,
        b.operation,
        b.permission_type,
    )
    (removed,) = await admin.delete_acls([exact])
    if not removed:
        raise ValueError(f"no such ACL (deleted already?): {describe_binding(b)}")
    return b


def describe_binding(b: AclBinding) -> str:
    """One line for a flash message."""
    return (
        f"{b.permission_type.camel} {b.principal} {b.operation.camel} on "
        f"{b.resource_type.camel} {b.pattern_type.camel} {b.resource_name!r} from host {b.host}"
    )


# ---------------------------------------------------------------- SCRAM users


async def list_users(admin: AdminClient) -> list[tuple[str, list[tuple[str, int]]]]:
    """Each SCRAM user with its (mechanism, iterations), sorted; never a secret."""
    described = await admin.describe_user_scram_credentials(None)
    return [(user, sorted(described[user].items())) for user in sorted(described)]


async def upsert_user(admin: AdminClient, form: dict[str, str]) -> tuple[str, str, int]:
    """Create a user's credential for one mechanism, or change its password (salted and
    iterated by the admin client, as ``pystream users add`` does). The password is used
    once and never returned: (user, mechanism, iterations) are what the page may show."""
    name = form.get("user", "").strip()
    if not name:
        raise _invalid("the user name is empty")
    mechanism = form.get("mechanism", "")
    if mechanism not in SCRAM_MECHANISMS:
        raise _invalid(f"unknown SCRAM mechanism; use one of {', '.join(SCRAM_MECHANISMS)}")
    raw = form.get("iterations", "").strip()
    iterations = parse_count(raw, "iterations") if raw else DEFAULT_ITERATIONS
    try:
        check_iterations(iterations)
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    password = form.get("password", "")
    if not password:
        raise _invalid("the password is empty")
    if password != form.get("password_again", ""):
        raise ValueError("the two passwords differ: type the same password twice")
    await admin.upsert_user_scram_credential(name, mechanism, password, iterations)
    return name, mechanism, iterations


async def delete_user(admin: AdminClient, form: dict[str, str]) -> tuple[str, str]:
    """Delete a user's credential for one mechanism."""
    name = form.get("user", "").strip()
    mechanism = form.get("mechanism", "")
    if not name or mechanism not in SCRAM_MECHANISMS:
        raise _invalid("name the user and one of its SCRAM mechanisms")
    await admin.delete_user_scram_credential(name, mechanism)
    return name, mechanism
