"""ACLs in ZooKeeper, at Kafka's layout (``ZkAclStore``), so Kafka's tools read them too.

* LITERAL: ``/kafka-acl/<ResourceType>/<name>``; PREFIXED:
  ``/kafka-acl-extended/prefixed/<ResourceType>/<name>``; each holds
  ``{"version":1,"acls":[{"principal":…,"permissionType":"Allow","operation":"Read","host":"*"}]}``.
* Every change adds a sequential ``acl_changes_`` notification, under
  ``/kafka-acl-changes`` (LITERAL, data ``<ResourceType>:<name>``) or
  ``/kafka-acl-extended-changes`` (PREFIXED, JSON naming the resource); brokers
  watch both and re-read the ACLs.

Every function here blocks on ZooKeeper round trips: call them in a thread (or in
kazoo's watch thread).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from kazoo.exceptions import NoNodeError

from pystream.cluster.zookeeper.client import TransactionFailed
from pystream.cluster.zookeeper.paths import (
    EXTENDED_ACL_CHANGES,
    LITERAL_ACL_CHANGES,
    LITERAL_ACLS,
    PREFIXED_ACLS,
)
from pystream.errors import KafkaStorageError
from pystream.security.acl import (
    AclBinding,
    AclBindingFilter,
    PatternType,
    ResourceKey,
    ResourceType,
    apply_acl_changes,
    bindings_from_json,
    group_by_resource,
    resource_acls_json,
)

log = logging.getLogger(__name__)

ACL_CHANGE_NODE = "acl_changes_"
ACL_CHANGE_DIRS = (LITERAL_ACL_CHANGES, EXTENDED_ACL_CHANGES)
_ROOTS = {PatternType.LITERAL: LITERAL_ACLS, PatternType.PREFIXED: PREFIXED_ACLS}
_MAX_CAS_ATTEMPTS = 10


def check_resource_name(name: str) -> None:
    """ValueError if ``name`` cannot be a znode name, which Kafka's layout makes it
    (``/kafka-acl/<ResourceType>/<name>``): a ``/`` would nest it (Kafka itself then fails
    the write after its retries), ``.``/``..`` are reserved, and ZooKeeper refuses control
    and some unicode characters.  Encoding the name instead would show Kafka's tools (and a
    Kafka broker reading the same ZooKeeper) another name, so such names are refused."""
    problem = None
    if "/" in name:
        problem = "contains '/'"
    elif name in (".", ".."):
        problem = f"is {name!r}"
    elif any(_bad_znode_char(c) for c in name):
        problem = "contains a control or reserved unicode character"
    if problem is not None:
        raise ValueError(
            f"the resource name {name!r} {problem}: ACLs are stored in ZooKeeper at Kafka's "
            "layout, one znode named after each resource (/kafka-acl/<ResourceType>/<name>), "
            "and a znode name cannot be that; name the resource without it (or use a "
            "PREFIXED ACL on the part before the '/')"
        )


def _bad_znode_char(c: str) -> bool:
    # ZooKeeper's PathUtils.validatePath.
    code = ord(c)
    return (
        code <= 0x1F or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xF8FF or 0xFFF0 <= code <= 0xFFFF
    )


def acl_path(key: ResourceKey) -> str:
    resource_type, pattern_type, name = key
    return f"{_ROOTS[pattern_type]}/{resource_type.camel}/{name}"


def change_notification(key: ResourceKey) -> tuple[str, bytes]:
    """(sequential node prefix, data) of the notification of a change to ``key``."""
    resource_type, pattern_type, name = key
    if pattern_type is PatternType.LITERAL:
        return f"{LITERAL_ACL_CHANGES}/{ACL_CHANGE_NODE}", f"{resource_type.camel}:{name}".encode()
    event = {
        "version": 1,
        "resourceType": resource_type.camel,
        "name": name,
        "patternType": pattern_type.camel,
    }
    return f"{EXTENDED_ACL_CHANGES}/{ACL_CHANGE_NODE}", json.dumps(event).encode()


def change_stamp(client: Any) -> int:
    """A number that grows with every change notification (the change directories' pzxid):
    a reading of the ACLs taken after a larger stamp is the newer one."""
    stamps = [client.exists(path) for path in ACL_CHANGE_DIRS]
    return max(stat.pzxid for stat in stamps if stat is not None) if any(stamps) else 0


def read_acls(client: Any) -> tuple[int, list[AclBinding]]:
    """(stamp, every ACL binding); unreadable znodes are logged and skipped."""
    stamp = change_stamp(client)
    bindings: list[AclBinding] = []
    for pattern_type, root in _ROOTS.items():
        try:
            type_names = client.get_children(root)
        except NoNodeError:
            continue
        for type_name in type_names:
            try:
                resource_type = ResourceType.parse(type_name)
                names = client.get_children(f"{root}/{type_name}")
            except (ValueError, NoNodeError):
                continue
            for name in names:
                key: ResourceKey = (resource_type, pattern_type, name)  # type: ignore[assignment]
                try:
                    data, _ = client.get(acl_path(key))
                    bindings.extend(bindings_from_json(key, json.loads(data)))
                except NoNodeError:
                    continue
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("ignoring unreadable ACLs at %s: %s", acl_path(key), exc)
    return stamp, bindings


def change_acls(
    client: Any, create: list[AclBinding], delete_filters: list[AclBindingFilter]
) -> list[list[AclBinding]]:
    """Store ``create`` and remove what ``delete_filters`` match, one resource znode at a
    time (compare-and-set with its change notification, as Kafka's ``updateResourceAcls``);
    per filter, the bindings it removed."""
    _, current = read_acls(client)
    _, removed = apply_acl_changes(current, create, delete_filters)
    gone = {b for bindings in removed for b in bindings}
    touched = group_by_resource([*create, *gone])
    for key in touched:
        additions = [b for b in create if b not in gone and _key(b) == key]
        _update_resource(client, key, additions, gone)
    return removed


def _key(binding: AclBinding) -> ResourceKey:
    return (binding.resource_type, binding.pattern_type, binding.resource_name)


def _update_resource(
    client: Any, key: ResourceKey, additions: list[AclBinding], gone: set[AclBinding]
) -> None:
    path = acl_path(key)
    prefix, notification = change_notification(key)
    for _ in range(_MAX_CAS_ATTEMPTS):
        try:
            data, stat = client.get(path)
            existing = bindings_from_json(key, json.loads(data))
        except NoNodeError:
            stat, existing = None, []
        wanted = [b for b in dict.fromkeys([*existing, *additions]) if b not in gone]
        if wanted == existing:
            return
        txn = client.transaction()
        payload = json.dumps(resource_acls_json(wanted)).encode()
        if stat is None:  # its parent, /kafka-acl/<ResourceType>, exists from startup
            txn.create(path, payload)
        elif wanted:
            txn.set_data(path, payload, stat.version)
        else:
            txn.delete(path, stat.version)
        txn.create(prefix, notification, sequence=True)
        try:
            client.commit(txn)
        except TransactionFailed as failed:
            if failed.index == 0:
                continue  # written concurrently: read again
            raise KafkaStorageError(
                f"could not write the ACLs of {path}: {failed.error!r}"
            ) from None
        return
    raise KafkaStorageError(f"could not write the ACLs of {path}: they keep changing")
