"""Entity configs in ZooKeeper, as Kafka's ``AdminZkClient`` writes them: the
``/config/<type>/<entity>`` znode (``{"version":1,"config":{...}}``) and a
``/config/changes/config_change_<seq>`` notification naming the entity, in one
multi-op.  Used by the broker's :class:`~pystream.cluster.zookeeper.store.ZkMetadataStore`
and by ``pystream users --zookeeper`` (the bootstrap credentials before a cluster's
first start), so both write exactly the same thing.
"""

from __future__ import annotations

import contextlib
import logging

from kazoo.exceptions import NoNodeError

from pystream.clock import now_ms
from pystream.cluster.metadata.store import ScramCredentialChange
from pystream.cluster.zookeeper.client import TimedClient, TransactionFailed
from pystream.cluster.zookeeper.paths import (
    CONFIG_CHANGE_PREFIX,
    CONFIG_CHANGES,
    CONFIG_USERS,
    decode_config,
    encode_config,
    encode_config_change,
    user_config_path,
)
from pystream.errors import KafkaStorageError
from pystream.security.scram import SCRAM_MECHANISMS, ScramCredential

log = logging.getLogger(__name__)

__all__ = [
    "CONFIG_CHANGE_EXPIRATION_MS",
    "MAX_CAS_ATTEMPTS",
    "alter_scram_credentials",
    "purge_changes",
    "read_scram_credentials",
    "user_scram_credentials",
    "write_entity_config",
]

MAX_CAS_ATTEMPTS = 10  # a compare-and-set that keeps losing means others keep writing: give up
CONFIG_CHANGE_EXPIRATION_MS = 15 * 60 * 1000  # Kafka's notification expiry


def purge_changes(zk: TimedClient, directory: str, node_prefix: str) -> None:
    """Delete change notifications older than Kafka's 15 minutes, oldest first
    (Kafka's ``ZkNodeChangeNotificationListener`` does so): they would pile up."""
    now = now_ms()
    for child in sorted(zk.get_children(directory)):
        if not child.startswith(node_prefix):
            continue
        path = f"{directory}/{child}"
        stat = zk.exists(path)
        if stat is None:
            continue
        if now - stat.ctime < CONFIG_CHANGE_EXPIRATION_MS:
            break  # sequential: the rest are newer
        with contextlib.suppress(NoNodeError):  # another broker purged it
            zk.delete(path)


def write_entity_config(
    zk: TimedClient, path: str, entity_path: str, configs: dict[str, str], what: str
) -> object | None:
    """Write a ``/config/<type>/<entity>`` znode and its change notification in one
    multi-op compare-and-set on the version just read; the znode's new stat (None if it
    was deleted meanwhile).  KafkaStorageError naming ``what`` if it keeps changing."""
    data = encode_config(configs)
    notification = encode_config_change(entity_path)
    for _ in range(MAX_CAS_ATTEMPTS):
        stat = zk.exists(path)
        txn = zk.transaction()
        if stat is None:
            txn.create(path, data)
        else:
            txn.set_data(path, data, stat.version)
        txn.create(CONFIG_CHANGE_PREFIX, notification, sequence=True)
        try:
            results = zk.commit(txn)
        except TransactionFailed as failed:
            if failed.index == 0:
                continue  # written concurrently: read the version again
            raise KafkaStorageError(f"could not write {what}: {failed.error!r}") from None
        written = results[0] if stat is not None else zk.exists(path)
        purge_changes(zk, CONFIG_CHANGES, CONFIG_CHANGE_PREFIX.rsplit("/", 1)[1])
        return written
    raise KafkaStorageError(f"could not write {what}: they keep changing")


def alter_scram_credentials(
    zk: TimedClient, changes: list[ScramCredentialChange]
) -> list[tuple[str, dict[str, str], object | None]]:
    """Store or delete credentials: Kafka's ``/config/users/<name>`` znodes
    (``{"version":1,"config":{"SCRAM-SHA-256":"salt=...,iterations=4096"}}``) with a
    ``users/<name>`` change notification each; a user left with none loses the znode's
    config (Kafka keeps the empty znode too).  Returns (user, its configs, the znode's
    stat) per user written.  Other configs of the user (quotas) are kept."""
    by_user: dict[str, list[ScramCredentialChange]] = {}
    for change in changes:
        by_user.setdefault(change[0], []).append(change)
    written = []
    for user, user_changes in by_user.items():
        path = user_config_path(user)
        try:
            data, _ = zk.get(path)
            configs = decode_config(data, path)
        except NoNodeError:
            configs = {}
        for _, mechanism, credential in user_changes:
            if credential is None:
                configs.pop(mechanism, None)
            else:
                configs[mechanism] = credential.to_string()
        stat = write_entity_config(
            zk, path, f"users/{user}", configs, f"the credentials of user {user}"
        )
        written.append((user, configs, stat))
    return written


def read_scram_credentials(zk: TimedClient) -> dict[str, dict[str, ScramCredential]]:
    """Every user's SCRAM credentials under ``/config/users`` (unparsable ones left out)."""
    out: dict[str, dict[str, ScramCredential]] = {}
    try:
        users = zk.get_children(CONFIG_USERS)
    except NoNodeError:
        return out
    for user in users:
        path = user_config_path(user)
        try:
            data, _ = zk.get(path)
        except NoNodeError:
            continue
        credentials = user_scram_credentials(user, decode_config(data, path))
        if credentials:
            out[user] = credentials
    return out


def user_scram_credentials(user: str, configs: dict[str, str]) -> dict[str, ScramCredential]:
    """The SCRAM credentials among a ``/config/users/<user>`` znode's configs (quotas and
    other user configs share it); a bad one is left out with a warning."""
    credentials: dict[str, ScramCredential] = {}
    for mechanism, text in configs.items():
        if mechanism not in SCRAM_MECHANISMS:
            continue
        try:
            credentials[mechanism] = ScramCredential.from_string(text)
        except ValueError as exc:
            log.warning("ignoring bad %s credential of user %s: %s", mechanism, user, exc)
    return credentials
