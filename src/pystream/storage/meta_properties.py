"""``meta.properties``: which cluster and broker a log directory belongs to.

Kafka's format (Java properties)::

    #
    #<date>
    version=0
    broker.id=0
    cluster.id=9jS1e7QZSZ2C7B7D0i1ZTg

Every log dir of a broker carries the same file, so a directory moved to the
wrong broker (or another cluster) is refused at startup instead of silently
mixing data.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from dataclasses import dataclass

from pystream.errors import InconsistentClusterIdError, InvalidConfigError, KafkaStorageError
from pystream.fileutil import atomic_write

META_PROPERTIES = "meta.properties"


class InconsistentBrokerIdError(InvalidConfigError):
    """The configured broker.id differs from the one stored in a log dir."""


def generate_cluster_id() -> str:
    """A Kafka-style cluster id: a random UUID, URL-safe base64 without padding (22 chars)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class MetaProperties:
    """The contents of one ``meta.properties``."""

    broker_id: int
    cluster_id: str | None
    version: int = 0


def read_meta_properties(log_dir: str) -> MetaProperties | None:
    """The log dir's meta.properties, or None if it has none.

    Raises KafkaStorageError naming the file if it is unreadable or malformed.
    """
    path = os.path.join(log_dir, META_PROPERTIES)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise KafkaStorageError(f"Cannot read {path}: {exc}") from exc
    props: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, _, value = line.partition(":")
        props[key.strip()] = value.strip()
    try:
        version = int(props.get("version", "0"))
        broker_id = int(props["broker.id"])
    except (KeyError, ValueError):
        raise KafkaStorageError(
            f"Malformed {path}: it needs integer 'version' and 'broker.id' entries; fix it, or "
            "remove it if this directory belongs to this broker"
        ) from None
    if version != 0:
        raise KafkaStorageError(f"{path} has version {version}; only version 0 is supported")
    return MetaProperties(broker_id, props.get("cluster.id") or None, version)


def write_meta_properties(log_dir: str, meta: MetaProperties) -> None:
    """Write meta.properties atomically (tmp + fsync + rename)."""
    path = os.path.join(log_dir, META_PROPERTIES)
    lines = ["#", "#" + time.strftime("%a %b %d %H:%M:%S %Z %Y"), f"version={meta.version}"]
    lines.append(f"broker.id={meta.broker_id}")
    if meta.cluster_id is not None:
        lines.append(f"cluster.id={meta.cluster_id}")
    atomic_write(path, ("\n".join(lines) + "\n").encode("utf-8"))


def ensure_meta_properties(log_dirs: list[str], broker_id: int, cluster_id: str | None) -> str:
    """Check every dir's meta.properties against ``broker_id``/``cluster_id``; write missing ones.

    Returns the cluster id in use: the configured one, else the one stored
    in the dirs, else a new one.  Raises InconsistentBrokerIdError or
    InconsistentClusterIdError if a dir belongs to another broker or cluster.
    """
    stored: dict[str, MetaProperties] = {}
    for log_dir in log_dirs:
        meta = read_meta_properties(log_dir)
        if meta is None:
            continue
        if meta.broker_id != broker_id:
            raise InconsistentBrokerIdError(
                f"Configured broker.id {broker_id} doesn't match stored broker.id "
                f"{meta.broker_id} in {os.path.join(log_dir, META_PROPERTIES)}. If you moved your "
                "data, make sure your configured broker.id matches. If you intend to create a new "
                "broker, remove all data in your log.dirs"
            )
        stored[log_dir] = meta
    known = {m.cluster_id for m in stored.values() if m.cluster_id is not None}
    if cluster_id is not None:
        known.add(cluster_id)
    if len(known) > 1:
        where = ", ".join(f"{d}: {m.cluster_id}" for d, m in stored.items())
        raise InconsistentClusterIdError(
            f"The log dirs belong to different clusters (configured {cluster_id}; {where}); "
            "a broker's log.dirs must all belong to its cluster"
        )
    chosen = known.pop() if known else generate_cluster_id()
    for log_dir in log_dirs:
        meta = stored.get(log_dir)
        if meta is None or meta.cluster_id != chosen:
            write_meta_properties(log_dir, MetaProperties(broker_id, chosen))
    return chosen
