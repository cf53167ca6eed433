"""A broker's in-memory view of the cluster metadata in ZooKeeper, kept current by watches.

What is watched: ``/brokers/ids/*`` (live brokers), ``/brokers/topics/*`` (topic
assignments), each partition's ``state``, ``/config/topics/*``, ``/controller``
and this broker's (and the default) ``/config/brokers/*`` — with kazoo's
``ChildrenWatch``/``DataWatch`` recipes, which re-arm themselves after a
reconnection or a new session and then report whatever changed meanwhile.

This is how brokers learn their roles: a partition state naming this broker as
leader *is* the LeaderAndIsr request, delivered by ZooKeeper rather than sent by
the controller over the Kafka protocol.  Listeners hear each change as a
:data:`MetadataEvent`.

Threads.  Watch callbacks run on kazoo's threads and only read ZooKeeper; they
post each reading to the asyncio loop (:class:`~pystream.cluster.zookeeper.client.LoopHandoff`),
where it is applied and listeners are called.  The cache is thus touched by the
loop alone, and a watch's successive readings of one znode are applied in order.

Ordering.  Every cached value remembers the zxid that wrote it (``mzxid``).  A
reading older than the cached value is dropped, so the store can apply its own
writes at once (read-your-writes) without a late, older watch reading rolling
them back.  Absence (a deleted znode) is always applied; if the znode came back,
its watch reports that afterwards.  The watches therefore always end on
ZooKeeper's latest state: the cache converges, whatever the interleaving.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionLoss,
    NoNodeError,
    SessionExpiredError,
)
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from pystream.cluster.metadata.model import PartitionState, TopicMetadata
from pystream.cluster.zookeeper.acls import ACL_CHANGE_DIRS, read_acls
from pystream.cluster.zookeeper.client import LoopHandoff
from pystream.cluster.zookeeper.entity_configs import user_scram_credentials
from pystream.cluster.zookeeper.paths import (
    BROKER_IDS,
    BROKER_TOPICS,
    CONFIG_USERS,
    CONTROLLER,
    DEFAULT_BROKER_ENTITY,
    NO_LEADER,
    BrokerInfo,
    LeaderAndIsr,
    TopicAssignment,
    broker_config_path,
    broker_path,
    decode_config,
    decode_controller,
    partition_state_path,
    topic_config_path,
    topic_path,
    user_config_path,
)
from pystream.security.acl import AclBinding
from pystream.security.scram import ScramCredential

log = logging.getLogger(__name__)

# How often the ACL reader looks whether kazoo has reconnected after a connection loss.
_RECONNECT_POLL_S = 0.2

__all__ = [
    "BrokerChange",
    "BrokerConfigChange",
    "ControllerChange",
    "MetadataEvent",
    "Reading",
    "TopicChange",
    "ZkMetadataCache",
]

V = TypeVar("V")


@dataclass(frozen=True)
class TopicChange:
    """A topic appeared (``before`` None), changed, or vanished (``after`` None)."""

    name: str
    before: TopicMetadata | None
    after: TopicMetadata | None


@dataclass(frozen=True)
class BrokerChange:
    """The registered (live) brokers changed."""

    before: dict[int, BrokerInfo]
    after: dict[int, BrokerInfo]


@dataclass(frozen=True)
class ControllerChange:
    """``/controller`` changed: the new controller's id, or -1 while there is none."""

    controller_id: int


@dataclass(frozen=True)
class BrokerConfigChange:
    """The dynamic configs of a watched broker entity (this broker's id, or ``<default>``)
    changed; ``configs`` are the new ones ({} when removed)."""

    entity: str
    configs: dict[str, str]


MetadataEvent = TopicChange | BrokerChange | ControllerChange | BrokerConfigChange


@dataclass(frozen=True)
class Reading(Generic[V]):
    """A znode's value as cached, with the zxids that order readings of it."""

    value: V
    mzxid: int  # the transaction that wrote the value
    czxid: int  # the transaction that created the znode: tells incarnations apart
    version: int  # the data version, which compare-and-set writes expect


def _reading(value: V, stat: Any) -> Reading[V]:
    return Reading(value, stat.mzxid, stat.czxid, stat.version)


class ZkMetadataCache:
    """Topics, brokers, controller and configs as last read from ZooKeeper.

    ``start(handoff)`` arms the watches (blocking: call it off the loop, see
    :meth:`ZkMetadataStore.start`); everything else runs on the loop.
    """

    def __init__(self, client: KazooClient, broker_id: int) -> None:
        self.client = client
        self.broker_id = broker_id
        self.handoff: LoopHandoff | None = None
        self._closed = False
        # --- the cache: the loop only
        self.topics: dict[str, TopicMetadata] = {}
        self.brokers: dict[int, BrokerInfo] = {}
        self.controller_id = NO_LEADER
        self._assignments: dict[str, Reading[TopicAssignment]] = {}
        self._states: dict[tuple[str, int], Reading[LeaderAndIsr]] = {}
        self._configs: dict[str, Reading[dict[str, str]]] = {}
        self._broker_mzxid: dict[int, int] = {}
        self._broker_configs: dict[str, Reading[dict[str, str]]] = {}
        # /config/users/<name>: each user's credential strings, and their parsed form.
        self._user_configs: dict[str, Reading[dict[str, str]]] = {}
        self.scram_credentials: dict[str, dict[str, ScramCredential]] = {}
        self._listeners: list[Callable[[MetadataEvent], None]] = []
        # Every ACL binding, as of the change stamp it was read at (see zookeeper/acls.py).
        self.acls: list[AclBinding] = []
        self.acl_version = 0
        self._acl_stamp = -1
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        # --- which znodes are watched: kazoo's threads, under the lock
        self._lock = threading.Lock()
        self._watched_topics: set[str] = set()
        self._watched_states: set[tuple[str, int]] = set()
        self._watched_brokers: set[int] = set()
        self._watched_users: set[str] = set()
        self._acls_stale = False
        self._acl_reader_running = False

    # === lifecycle ===============================================================================
    def start(self, handoff: LoopHandoff) -> None:
        """Arm the watches.  Blocks while kazoo takes the first readings, each posted to
        the loop before this returns."""
        self.handoff = handoff
        ChildrenWatch(self.client, BROKER_IDS, self._on_broker_ids)
        ChildrenWatch(self.client, BROKER_TOPICS, self._on_topic_names)
        DataWatch(self.client, CONTROLLER, self._on_controller)
        for entity in (str(self.broker_id), DEFAULT_BROKER_ENTITY):
            path = broker_config_path(entity)
            DataWatch(self.client, path, partial(self._on_broker_config, entity))
        ChildrenWatch(self.client, CONFIG_USERS, self._on_user_names)
        # Any new notification (another broker's CreateAcls/DeleteAcls): read the ACLs again.
        for changes in ACL_CHANGE_DIRS:
            ChildrenWatch(self.client, changes, self._on_acl_changes)
        # The first reading here, not in the watch's thread: no request is authorized
        # before the ACLs are loaded (the watches only keep them current).
        self._post(self.apply_acls, *read_acls(self.client))

    def close(self) -> None:
        """Stop applying readings (each watch stops when it next fires; all end with the
        client's session) and cancel waiters."""
        self._closed = True
        for _, future in self._waiters:
            if not future.done():
                future.cancel()

    # === queries =================================================================================
    def state(self, topic: str, partition: int) -> Reading[LeaderAndIsr] | None:
        return self._states.get((topic, partition))

    def assignment(self, topic: str) -> Reading[TopicAssignment] | None:
        return self._assignments.get(topic)

    def topic_config_reading(self, topic: str) -> Reading[dict[str, str]] | None:
        return self._configs.get(topic)

    def broker_configs(self, entity: str) -> dict[str, str] | None:
        """A watched entity's configs ({} if none); None if it is not watched here."""
        if entity not in (str(self.broker_id), DEFAULT_BROKER_ENTITY):
            return None
        reading = self._broker_configs.get(entity)
        return dict(reading.value) if reading else {}

    def add_listener(self, listener: Callable[[MetadataEvent], None]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[MetadataEvent], None]) -> None:
        self._listeners.remove(listener)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Until ``predicate()`` holds, checked after every change; TimeoutError after
        ``timeout`` seconds."""
        if predicate():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            self._waiters.remove(entry)

    # === watch callbacks: kazoo's threads, read and post only ====================================
    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        if self.handoff is not None and not self._closed:
            self.handoff.post(fn, *args)

    def _on_topic_names(self, children: list[str]) -> bool | None:
        if self._closed:
            return False
        for name in children:
            with self._lock:
                if name in self._watched_topics:
                    continue
                self._watched_topics.add(name)
            # Kept for good, even after a deletion: a topic re-created under the same name
            # is seen through the same watches (one idle watch per deleted name).  The config
            # first, so that a new topic appears with its config, not bare for a moment.
            DataWatch(self.client, topic_config_path(name), partial(self._on_topic_config, name))
            DataWatch(self.client, topic_path(name), partial(self._on_assignment, name))
        return None

    def _on_assignment(self, name: str, data: Any, stat: Any, event: Any = None) -> Any:
        if self._closed:
            return False
        assignment = None
        if stat is not None:
            try:
                assignment = TopicAssignment.from_bytes(name, data or b"")
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring topic %s: unreadable %s (%s)", name, topic_path(name), exc)
        if assignment is not None:
            for partition in assignment.partitions:
                self._watch_state(name, partition)
        # Posted after the new partitions' watches posted their first readings: the topic
        # appears with its leaders, not leaderless for a moment.
        self._post(self.apply_assignment, name, assignment, stat)
        return None

    def _watch_state(self, name: str, partition: int) -> None:
        with self._lock:
            if (name, partition) in self._watched_states:
                return
            self._watched_states.add((name, partition))
        path = partition_state_path(name, partition)
        DataWatch(self.client, path, partial(self._on_state, name, partition))

    def _on_state(self, name: str, partition: int, data: Any, stat: Any, event: Any = None) -> Any:
        if self._closed:
            return False
        state = None
        if stat is not None:
            try:
                state = LeaderAndIsr.from_bytes(data or b"", partition_state_path(name, partition))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable state of %s-%d: %s", name, partition, exc)
        self._post(self.apply_state, name, partition, state, stat)
        return None

    def _on_topic_config(self, name: str, data: Any, stat: Any, event: Any = None) -> Any:
        if self._closed:
            return False
        configs = None
        if stat is not None:
            try:
                configs = decode_config(data or b"", topic_config_path(name))
            except (ValueError, AttributeError) as exc:
                log.warning("ignoring unreadable config of topic %s: %s", name, exc)
        self._post(self.apply_config, name, configs, stat)
        return None

    def _on_broker_ids(self, children: list[str]) -> bool | None:
        if self._closed:
            return False
        for child in children:
            if not child.isdigit():
                continue
            broker_id = int(child)
            with self._lock:
                if broker_id in self._watched_brokers:
                    continue
                self._watched_brokers.add(broker_id)
            DataWatch(self.client, broker_path(broker_id), partial(self._on_broker, broker_id))
        return None

    def _on_broker(self, broker_id: int, data: Any, stat: Any, event: Any = None) -> Any:
        if self._closed:
            return False
        info = None
        if stat is not None:
            try:
                info = BrokerInfo.from_bytes(broker_id, data or b"", epoch=stat.czxid)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable registration of broker %d: %s", broker_id, exc)
        self._post(self._apply_broker, broker_id, info, stat.mzxid if stat else -1)
        return None

    def _on_controller(self, data: Any, stat: Any, event: Any = None) -> Any:
        if self._closed:
            return False
        controller = NO_LEADER
        if stat is not None:
            try:
                controller = decode_controller(data or b"")
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("unreadable %s: %s", CONTROLLER, exc)
        self._post(self._apply_controller, controller)
        return None

    def _on_broker_config(self, entity: str, data: Any, stat: Any, event: Any = None) -> Any:
        if self._closed:
            return False
        configs = None
        if stat is not None:
            try:
                configs = decode_config(data or b"", broker_config_path(entity))
            except (ValueError, AttributeError) as exc:
                log.warning("ignoring unreadable config of broker %s: %s", entity, exc)
        self._post(self.apply_broker_config, entity, configs, stat)
        return None

    def _on_user_names(self, children: list[str]) -> bool | None:
        if self._closed:
            return False
        with self._lock:
            new = [u for u in children if u not in self._watched_users]
            self._watched_users.update(new)
        for user in new:
            DataWatch(self.client, user_config_path(user), partial(self._on_user_config, user))
        return None

    def _on_user_config(self, user: str, data: Any, stat: Any, event: Any = None) -> Any:
        if self._closed:
            return False
        configs = None
        if stat is not None:
            try:
                configs = decode_config(data or b"", user_config_path(user))
            except (ValueError, AttributeError) as exc:
                log.warning("ignoring unreadable credentials of user %s: %s", user, exc)
        else:
            with self._lock:
                self._watched_users.discard(user)  # re-armed if the user comes back
        self._post(self.apply_user_config, user, configs, stat)
        return False if stat is None else None

    def _on_acl_changes(self, children: list[str]) -> bool | None:
        if self._closed:
            return False
        # One reader at a time, re-reading once for any number of notifications that
        # arrived meanwhile: a CreateAcls of 1,000 bindings is 1,000 notifications, and
        # each reading walks every ACL znode.
        with self._lock:
            self._acls_stale = True
            if self._acl_reader_running:
                return None
            self._acl_reader_running = True
        threading.Thread(target=self._read_acls_until_current, daemon=True).start()
        return None

    def _read_acls_until_current(self) -> None:
        try:
            while not self._closed:
                with self._lock:
                    if not self._acls_stale:
                        return
                    self._acls_stale = False
                try:
                    self._post(self.apply_acls, *read_acls(self.client))
                except (ConnectionLoss, ConnectionClosedError, SessionExpiredError) as exc:
                    # The children watch does not fire again on reconnect when the
                    # notifications are unchanged: read again once connected, or the
                    # cache would keep the old ACLs.
                    log.warning(
                        "could not read the ACLs from ZooKeeper (%s); reading them again "
                        "once reconnected",
                        type(exc).__name__,
                    )
                    with self._lock:
                        self._acls_stale = True
                    while not self._closed and not self.client.connected:
                        time.sleep(_RECONNECT_POLL_S)
                except Exception:  # a bug or unreadable data: the next notification reads again
                    log.exception("could not read the ACLs from ZooKeeper")
                    return
        finally:
            with self._lock:
                self._acl_reader_running = False

    # === applying readings and our own writes: the loop only =====================================
    @staticmethod
    def _newer(current: Reading[Any] | None, stat: Any) -> bool:
        """Whether a reading (``stat`` None: the znode is gone) may replace the cached one."""
        return stat is None or current is None or stat.mzxid > current.mzxid

    def apply_assignment(self, name: str, assignment: TopicAssignment | None, stat: Any) -> None:
        if not self._newer(self._assignments.get(name), stat):
            return
        if assignment is None:
            self._assignments.pop(name, None)
        else:
            self._assignments[name] = _reading(assignment, stat)
        self._rebuild(name)

    def apply_state(self, name: str, partition: int, state: LeaderAndIsr | None, stat: Any) -> None:
        key = (name, partition)
        if not self._newer(self._states.get(key), stat):
            return
        if state is None:
            self._states.pop(key, None)
        else:
            self._states[key] = _reading(state, stat)
        self._rebuild(name)

    def apply_config(self, name: str, configs: dict[str, str] | None, stat: Any) -> None:
        if not self._newer(self._configs.get(name), stat):
            return
        if configs is None:
            self._configs.pop(name, None)
        else:
            self._configs[name] = _reading(configs, stat)
        self._rebuild(name)

    def apply_topic_write(
        self,
        name: str,
        assignment: TopicAssignment,
        assignment_stat: Any,
        states: dict[int, LeaderAndIsr],
        configs: dict[str, str] | None,
        zxid: int,
    ) -> None:
        """Our own multi-op that wrote a topic's assignment, new partition states (created,
        version 0) and maybe its config — all in transaction ``zxid``."""
        if not self._newer(self._assignments.get(name), assignment_stat):
            return
        self._assignments[name] = _reading(assignment, assignment_stat)
        for p, state in states.items():
            self._states[(name, p)] = Reading(state, zxid, zxid, 0)
        if configs is not None:
            current = self._configs.get(name)
            version = current.version + 1 if current else 0
            self._configs[name] = Reading(
                dict(configs), zxid, current.czxid if current else zxid, version
            )
        self._rebuild(name)

    def _rebuild(self, name: str) -> None:
        """Recompute ``name``'s TopicMetadata from its znodes; tell listeners if it changed."""
        before = self.topics.get(name)
        assignment = self._assignments.get(name)
        after = None
        if assignment is not None:
            born = assignment.czxid

            def current(reading: Reading[V] | None) -> Reading[V] | None:
                # Readings older than the topic's znode belong to an earlier topic of the
                # same name, whose deletion the watch has not reported yet.
                return reading if reading is not None and reading.mzxid >= born else None

            partitions = {}
            for p, replicas in sorted(assignment.value.partitions.items()):
                state = current(self._states.get((name, p)))
                if state is None:  # no state yet: the controller is to elect a leader
                    partitions[p] = PartitionState(list(replicas), NO_LEADER, 0, [], -1)
                else:
                    partitions[p] = PartitionState(
                        list(replicas),
                        state.value.leader,
                        state.value.leader_epoch,
                        list(state.value.isr),
                        state.version,  # the partition epoch is the state znode's version
                    )
            config = current(self._configs.get(name))
            configs = dict(config.value) if config else {}
            after = TopicMetadata(name, assignment.value.topic_id, partitions, configs)
        if before == after:
            return
        if after is None:
            self.topics.pop(name, None)
        else:
            self.topics[name] = after
        self._emit(TopicChange(name, before, after))

    def _apply_broker(self, broker_id: int, info: BrokerInfo | None, mzxid: int) -> None:
        if info is not None and mzxid <= self._broker_mzxid.get(broker_id, -1):
            return
        before = dict(self.brokers)
        if info is None:
            self.brokers.pop(broker_id, None)
            self._broker_mzxid.pop(broker_id, None)
        else:
            self.brokers[broker_id] = info
            self._broker_mzxid[broker_id] = mzxid
        if before != self.brokers:
            self._emit(BrokerChange(before, dict(self.brokers)))

    def _apply_controller(self, controller_id: int) -> None:
        if controller_id != self.controller_id:
            self.controller_id = controller_id
            self._emit(ControllerChange(controller_id))

    def apply_broker_config(self, entity: str, configs: dict[str, str] | None, stat: Any) -> None:
        """A watch reading of (or our own write to) a broker entity's dynamic configs."""
        current = self._broker_configs.get(entity)
        if not self._newer(current, stat):
            return
        before = current.value if current is not None else {}
        if configs is None:
            self._broker_configs.pop(entity, None)
        else:
            self._broker_configs[entity] = _reading(configs, stat)
        after = configs or {}
        if after != before:
            self._emit(BrokerConfigChange(entity, dict(after)))
        else:
            self._check_waiters()

    def apply_user_config(self, user: str, configs: dict[str, str] | None, stat: Any) -> None:
        """A watch reading of (or our own write to) ``/config/users/<user>``."""
        current = self._user_configs.get(user)
        if not self._newer(current, stat):
            return
        if configs is None:
            self._user_configs.pop(user, None)
        else:
            self._user_configs[user] = _reading(configs, stat)
        credentials = user_scram_credentials(user, configs or {})
        # A new dict: readers on the loop never see a half-applied change.
        scram = dict(self.scram_credentials)
        if credentials:
            scram[user] = credentials
        else:
            scram.pop(user, None)
        self.scram_credentials = scram
        self._check_waiters()

    def apply_acls(self, stamp: int, acls: list[AclBinding]) -> None:
        """A reading of every ACL (a watch's, or after our own write), unless a newer one
        was applied already."""
        if stamp < self._acl_stamp:
            return
        self._acl_stamp = stamp
        if acls != self.acls:
            self.acls = acls
            self.acl_version += 1
        self._check_waiters()

    def _emit(self, event: MetadataEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("metadata listener failed on %s", type(event).__name__)
        self._check_waiters()

    def _check_waiters(self) -> None:
        for predicate, future in list(self._waiters):
            if not future.done() and predicate():
                future.set_result(None)


def read_topic(client: KazooClient, name: str) -> TopicMetadata | None:
    """A topic straight from ZooKeeper (blocking), or None if it does not exist."""
    try:
        data, _ = client.get(topic_path(name))
    except NoNodeError:
        return None
    assignment = TopicAssignment.from_bytes(name, data)
    partitions = {}
    for p, replicas in sorted(assignment.partitions.items()):
        try:
            state_data, stat = client.get(partition_state_path(name, p))
        except NoNodeError:
            partitions[p] = PartitionState(list(replicas), NO_LEADER, 0, [], -1)
            continue
        state = LeaderAndIsr.from_bytes(state_data)
        partitions[p] = PartitionState(
            list(replicas), state.leader, state.leader_epoch, list(state.isr), stat.version
        )
    try:
        config_data, _ = client.get(topic_config_path(name))
        configs = decode_config(config_data)
    except NoNodeError:
        configs = {}
    return TopicMetadata(name, assignment.topic_id or uuid.UUID(int=0), partitions, configs)
