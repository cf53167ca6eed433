"""The ZooKeeper layout of a pystream cluster: Kafka's znodes, with Kafka's JSON in them.

Kafka operators know these paths (and ``zkCli.sh``/``zookeeper-shell`` show them
the same way), so pystream keeps them exactly:

==========================================================  ==================================
``/cluster/id``                                             ``{"version":"1","id":...}``
``/controller``  (ephemeral)                                ``{"version":1,"brokerid":..}``
``/controller_epoch``                                       ``"7"`` (fences old controllers)
``/brokers/ids/<id>``  (ephemeral)                          endpoints, rack (v5 JSON)
``/brokers/topics/<topic>``                                 topic id, partition -> replicas,
                                                            ongoing reassignments
``/brokers/topics/<topic>/partitions/<p>/state``            leader, leader_epoch, isr, ...
``/config/topics/<topic>``, ``/config/brokers/<id>``        ``{"version":1,"config":{..}}``
``/admin/delete_topics/<topic>``                            deletion requested (empty)
``/isr_change_notification/isr_change_<seq>``               partitions whose ISR changed
``/latest_producer_id_block``                               the last reserved id block
==========================================================  ==================================

Partition reassignments (KIP-455) are kept where Kafka 2.4+ keeps them: in the
topic znode's ``adding_replicas`` / ``removing_replicas`` maps (partition ->
brokers), next to ``partitions`` whose replicas are then the union, target
replicas first.  The target is ``replicas - removing``, the original
``replicas - adding``; no ``/admin/reassign_partitions`` znode is used (that is
the pre-KIP-455 tool's channel).  A partition with neither map entry has no
reassignment in progress.

Everything lives under the ``zookeeper.connect`` chroot when one is given.
This module is pure: paths, values and their (de)serialisation; no I/O.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field

from pystream.clock import now_ms
from pystream.cluster.metadata.model import DEFAULT_BROKER_ENTITY
from pystream.errors import InvalidConfigError
from pystream.security.listeners import Listener

__all__ = [
    "BROKER_IDS",
    "BROKER_TOPICS",
    "CLUSTER_ID",
    "CONTROLLER",
    "CONTROLLER_EPOCH",
    "DEFAULT_BROKER_ENTITY",
    "DELETE_TOPICS",
    "ISR_CHANGE_NOTIFICATION",
    "NO_LEADER",
    "PERSISTENT_PATHS",
    "PRODUCER_ID_BLOCK",
    "BrokerInfo",
    "EndPoint",
    "LeaderAndIsr",
    "TopicAssignment",
    "parse_connect",
]

CLUSTER_ID = "/cluster/id"
CONTROLLER = "/controller"
CONTROLLER_EPOCH = "/controller_epoch"
BROKER_IDS = "/brokers/ids"
BROKER_TOPICS = "/brokers/topics"
CONFIG_TOPICS = "/config/topics"
CONFIG_BROKERS = "/config/brokers"
CONFIG_CHANGES = "/config/changes"
CONFIG_USERS = "/config/users"
DELETE_TOPICS = "/admin/delete_topics"
ISR_CHANGE_NOTIFICATION = "/isr_change_notification"
ISR_CHANGE_PREFIX = ISR_CHANGE_NOTIFICATION + "/isr_change_"
CONFIG_CHANGE_PREFIX = CONFIG_CHANGES + "/config_change_"
PRODUCER_ID_BLOCK = "/latest_producer_id_block"
# ACLs (Kafka's ZkAclStore): LITERAL and PREFIXED bindings, and their change notifications.
LITERAL_ACLS = "/kafka-acl"
PREFIXED_ACLS = "/kafka-acl-extended/prefixed"
LITERAL_ACL_CHANGES = "/kafka-acl-changes"
EXTENDED_ACL_CHANGES = "/kafka-acl-extended-changes"
# Kafka's AclAuthorizer creates one znode per resource type under each root up front.
ACL_RESOURCE_TYPES = ("Topic", "Group", "Cluster", "TransactionalId", "DelegationToken", "User")

# Created by every broker at startup (Kafka's ZkData.PersistentZkPaths), so watches on
# their children can be set before anything exists.
PERSISTENT_PATHS = (
    "/admin",
    DELETE_TOPICS,
    "/brokers",
    BROKER_IDS,
    BROKER_TOPICS,
    "/brokers/seqid",
    "/cluster",
    "/config",
    CONFIG_CHANGES,
    CONFIG_TOPICS,
    CONFIG_BROKERS,
    "/config/clients",
    CONFIG_USERS,
    ISR_CHANGE_NOTIFICATION,
    PRODUCER_ID_BLOCK,
    LITERAL_ACL_CHANGES,
    EXTENDED_ACL_CHANGES,
    *(f"{root}/{kind}" for root in (LITERAL_ACLS, PREFIXED_ACLS) for kind in ACL_RESOURCE_TYPES),
)

NO_LEADER = -1


# --- paths -----------------------------------------------------------------------------------
def broker_path(broker_id: int) -> str:
    return f"{BROKER_IDS}/{broker_id}"


def topic_path(topic: str) -> str:
    return f"{BROKER_TOPICS}/{topic}"


def partitions_path(topic: str) -> str:
    return f"{BROKER_TOPICS}/{topic}/partitions"


def partition_path(topic: str, partition: int) -> str:
    return f"{BROKER_TOPICS}/{topic}/partitions/{partition}"


def partition_state_path(topic: str, partition: int) -> str:
    return f"{BROKER_TOPICS}/{topic}/partitions/{partition}/state"


def topic_config_path(topic: str) -> str:
    return f"{CONFIG_TOPICS}/{topic}"


def broker_config_path(entity: int | str) -> str:
    """``entity``: a broker id, or :data:`DEFAULT_BROKER_ENTITY` for the cluster default."""
    return f"{CONFIG_BROKERS}/{entity}"


def user_config_path(user: str) -> str:
    """A user's SCRAM credentials (Kafka's ``/config/users/<name>``)."""
    return f"{CONFIG_USERS}/{user}"


def config_change_entity_path(entity: int | str) -> str:
    """The ``entity_path`` of a ``/config/changes/config_change_<seq>`` notification for a
    broker's dynamic configs (``brokers/<id>`` or ``brokers/<default>``)."""
    return f"brokers/{entity}"


def encode_config_change(entity_path: str) -> bytes:
    """A config change notification, as Kafka's ``ConfigEntityChangeNotificationSequenceZNode``."""
    return _dumps({"version": 2, "entity_path": entity_path})


def delete_topic_path(topic: str) -> str:
    return f"{DELETE_TOPICS}/{topic}"


def parse_connect(connect: str) -> tuple[str, str]:
    """Split ``zookeeper.connect`` into the host list and the chroot ('' for none).

    ``"zk1:2181,zk2:2181/pystream"`` -> ``("zk1:2181,zk2:2181", "/pystream")``; as in
    Kafka the chroot comes once, after the last host.
    """
    text = connect.strip()
    hosts, slash, chroot = text.partition("/")
    chroot = (slash + chroot).rstrip("/") if slash else ""
    if not hosts or any(not h.strip() for h in hosts.split(",")):
        raise InvalidConfigError(
            f"zookeeper.connect: {connect!r} is not host:port[,host:port...][/chroot] "
            "(e.g. 127.0.0.1:2181/pystream)"
        )
    if "//" in chroot or any(part in (".", "..") for part in chroot.split("/")[1:]):
        raise InvalidConfigError(f"zookeeper.connect: chroot {chroot!r} is not a valid path")
    return hosts, chroot


# --- values ----------------------------------------------------------------------------------
def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _loads(data: bytes, path: str) -> dict:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc}): {data[:200]!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {data[:200]!r}")
    return value


def encode_topic_id(topic_id: uuid.UUID) -> str:
    """Kafka's text form of a Uuid: URL-safe base64 of its 16 bytes, no padding."""
    return base64.urlsafe_b64encode(topic_id.bytes).decode("ascii").rstrip("=")


def decode_topic_id(text: str) -> uuid.UUID:
    return uuid.UUID(bytes=base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def new_topic_id() -> uuid.UUID:
    """A random topic id whose text form does not start with '-' (as Kafka's: CLI-safe)."""
    while True:
        topic_id = uuid.uuid4()
        if not encode_topic_id(topic_id).startswith("-"):
            return topic_id


#: One advertised listener of a broker (Kafka's EndPoint): pystream's listener model.
EndPoint = Listener


@dataclass(frozen=True)
class BrokerInfo:
    """A live broker as registered in ``/brokers/ids/<id>``.

    ``epoch`` is the registration znode's creation zxid (Kafka's broker epoch, KIP-380):
    it grows with every registration, so a restarted or re-registered broker is told
    apart from its earlier self.  -1 when not read from ZooKeeper.
    """

    broker_id: int
    endpoints: tuple[EndPoint, ...]
    rack: str | None = None
    epoch: int = -1

    def endpoint_for(self, listener_name: str | None) -> EndPoint | None:
        """The endpoint clients on ``listener_name`` use: that listener's, else the first
        PLAINTEXT one, else the first; None if the broker advertises none."""
        if not self.endpoints:
            return None
        return next(
            (e for e in self.endpoints if e.name == listener_name),
            next(
                (e for e in self.endpoints if e.security_protocol == "PLAINTEXT"), self.endpoints[0]
            ),
        )

    def to_bytes(self) -> bytes:
        plaintext = next((e for e in self.endpoints if e.security_protocol == "PLAINTEXT"), None)
        value: dict[str, object] = {
            "features": {},
            "listener_security_protocol_map": {e.name: e.security_protocol for e in self.endpoints},
            "endpoints": [str(e) for e in self.endpoints],
            "jmx_port": -1,
            "port": plaintext.port if plaintext else -1,
            "host": plaintext.host if plaintext else None,
            "version": 5,
            "timestamp": str(now_ms()),
        }
        if self.rack is not None:
            value["rack"] = self.rack
        return _dumps(value)

    @classmethod
    def from_bytes(cls, broker_id: int, data: bytes, epoch: int = -1) -> BrokerInfo:
        value = _loads(data, broker_path(broker_id))
        protocols = value.get("listener_security_protocol_map") or {}
        endpoints = []
        for text in value.get("endpoints", []):
            name, _, address = text.partition("://")
            if address.startswith("["):
                host, _, port = address[1:].partition("]:")
            else:
                host, _, port = address.rpartition(":")
            endpoints.append(EndPoint(name, host, int(port), protocols.get(name, name)))
        if not endpoints and value.get("host") is not None:  # version 1 registrations
            endpoints.append(EndPoint("PLAINTEXT", value["host"], int(value["port"])))
        return cls(broker_id, tuple(endpoints), value.get("rack"), epoch)


@dataclass(frozen=True)
class TopicAssignment:
    """``/brokers/topics/<topic>``: the topic id and each partition's replicas, in order.

    The first replica of a partition is its preferred leader.  ``adding`` and
    ``removing`` hold the ongoing reassignments (partition -> brokers being added /
    removed), as Kafka's ``adding_replicas`` / ``removing_replicas``.
    """

    topic_id: uuid.UUID
    partitions: dict[int, list[int]]
    adding: dict[int, list[int]] = field(default_factory=dict)
    removing: dict[int, list[int]] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return _dumps(
            {
                "partitions": {str(p): r for p, r in sorted(self.partitions.items())},
                "topic_id": encode_topic_id(self.topic_id),
                "adding_replicas": {str(p): r for p, r in sorted(self.adding.items()) if r},
                "removing_replicas": {str(p): r for p, r in sorted(self.removing.items()) if r},
                "version": 3,
            }
        )

    @classmethod
    def from_bytes(cls, topic: str, data: bytes) -> TopicAssignment:
        value = _loads(data, topic_path(topic))
        text = value.get("topic_id")
        # Topics written by tools older than topic ids get one derived from nothing: zero.
        topic_id = decode_topic_id(text) if text else uuid.UUID(int=0)
        partitions = {int(p): [int(b) for b in r] for p, r in value["partitions"].items()}

        def brokers_by_partition(key: str) -> dict[int, list[int]]:
            entries = value.get(key) or {}
            return {int(p): [int(b) for b in r] for p, r in entries.items() if r}

        return cls(
            topic_id,
            partitions,
            brokers_by_partition("adding_replicas"),
            brokers_by_partition("removing_replicas"),
        )

    def reassigning(self, partition: int) -> bool:
        """Whether ``partition`` has a reassignment in progress."""
        return bool(self.adding.get(partition) or self.removing.get(partition))

    def target_replicas(self, partition: int) -> list[int]:
        """Where ``partition`` is going: its replicas less those being removed."""
        removing = self.removing.get(partition, [])
        return [b for b in self.partitions[partition] if b not in removing]

    def original_replicas(self, partition: int) -> list[int]:
        """Where ``partition`` was before its reassignment: replicas less those being added."""
        adding = self.adding.get(partition, [])
        return [b for b in self.partitions[partition] if b not in adding]


@dataclass(frozen=True)
class LeaderAndIsr:
    """``.../partitions/<p>/state``: who leads, since which leader epoch, the ISR.

    ``controller_epoch`` records which controller (epoch) wrote it.  The znode's
    version is the partition epoch: every writer compares-and-sets on it.
    """

    leader: int
    leader_epoch: int
    isr: list[int] = field(default_factory=list)
    controller_epoch: int = 0

    def to_bytes(self) -> bytes:
        return _dumps(
            {
                "controller_epoch": self.controller_epoch,
                "leader": self.leader,
                "version": 1,
                "leader_epoch": self.leader_epoch,
                "isr": self.isr,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, path: str = "partition state") -> LeaderAndIsr:
        value = _loads(data, path)
        return cls(
            leader=int(value["leader"]),
            leader_epoch=int(value["leader_epoch"]),
            isr=[int(b) for b in value["isr"]],
            controller_epoch=int(value.get("controller_epoch", 0)),
        )


def encode_config(configs: dict[str, str]) -> bytes:
    return _dumps({"version": 1, "config": dict(sorted(configs.items()))})


def decode_config(data: bytes, path: str = "config") -> dict[str, str]:
    if not data:
        return {}
    return {str(k): str(v) for k, v in (_loads(data, path).get("config") or {}).items()}


def encode_controller(broker_id: int) -> bytes:
    return _dumps({"version": 1, "brokerid": broker_id, "timestamp": str(now_ms())})


def decode_controller(data: bytes) -> int:
    return int(_loads(data, CONTROLLER)["brokerid"])


def encode_controller_epoch(epoch: int) -> bytes:
    return str(epoch).encode()


def decode_controller_epoch(data: bytes) -> int:
    return int(data.decode().strip())


def encode_cluster_id(cluster_id: str) -> bytes:
    return _dumps({"version": "1", "id": cluster_id})


def decode_cluster_id(data: bytes) -> str:
    return str(_loads(data, CLUSTER_ID)["id"])


def encode_isr_change(partitions: list[tuple[str, int]]) -> bytes:
    return _dumps(
        {"version": 1, "partitions": [{"topic": t, "partition": p} for t, p in partitions]}
    )


def decode_isr_change(data: bytes) -> list[tuple[str, int]]:
    value = _loads(data, ISR_CHANGE_NOTIFICATION)
    return [(str(e["topic"]), int(e["partition"])) for e in value.get("partitions", [])]
