"""The controller: one broker that keeps partition leadership right as brokers come and go.

Election.  Every broker runs a :class:`ZkController`; the one that creates the
ephemeral ``/controller`` znode is the controller.  In the same multi-op it
increments ``/controller_epoch``, so each reign has its own epoch, and it
remembers the epoch znode's version.  The others watch ``/controller`` and
try again when it goes (the controller died, resigned or lost its session).

Fencing.  Every write the controller makes is a multi-op that starts with
``check(/controller_epoch, version)``.  A controller that was deposed without
noticing (a long pause, a partition from ZooKeeper) finds the version moved on:
its write is refused as a whole, and it resigns.  Partition states record the
controller epoch that wrote them.

What it does while active (Kafka's vocabulary):

* **broker change** (``/brokers/ids`` children): for every partition whose leader
  is gone, elect a new one from the ISR — clean only, unless the topic (or the
  broker default) enables ``unclean.leader.election.enable`` — and bump the leader
  epoch; remove dead brokers from ISRs; give leaderless partitions a leader as soon
  as an eligible replica returns (:mod:`pystream.cluster.zk_election`);
* **topic change** (``/brokers/topics`` children, each topic's data): give new
  partitions a state if their creator did not, and check their leaders are alive;
* **topic deletion** (``/admin/delete_topics``): delete the topic's znodes and config;
* **ISR change notification** (``/isr_change_notification``): consume them and
  re-check those partitions (e.g. a leader re-added a broker that just died).

Every reaction is a reconciliation: read the partitions' current state from
ZooKeeper, decide, write with compare-and-set on the state znode's version (a
leader's concurrent ISR change makes it retry with fresh data).  Doing the same
thing twice is harmless, so events can be coalesced and replayed after a reconnect.

Brokers learn the outcome through their own watches on the state znodes (see
:mod:`pystream.cluster.zk_cache`): no LeaderAndIsr requests are sent.

Threads.  Like Kafka's ControllerEventManager, one thread processes events one
at a time from a queue; ZooKeeper watches and session changes only enqueue
events.  The controller never touches the asyncio loop; ``on_change`` (activation,
resignation) is called on the controller thread, or handed to ``post``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    KazooException,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
)
from kazoo.protocol.states import KazooState

from pystream.cluster.zk_client import TransactionFailed, commit
from pystream.cluster.zk_election import initial_leader_and_isr, offline_partition_election
from pystream.cluster.zk_paths import (
    BROKER_IDS,
    BROKER_TOPICS,
    CONTROLLER,
    CONTROLLER_EPOCH,
    DELETE_TOPICS,
    ISR_CHANGE_NOTIFICATION,
    LeaderAndIsr,
    TopicAssignment,
    broker_path,
    decode_config,
    decode_controller,
    decode_controller_epoch,
    decode_isr_change,
    delete_topic_path,
    encode_controller,
    encode_controller_epoch,
    partition_path,
    partition_state_path,
    partitions_path,
    topic_config_path,
    topic_path,
)
from pystream.errors import NotControllerError

log = logging.getLogger(__name__)

__all__ = ["ControllerState", "EpochFence", "ZkController"]

UNCLEAN_KEY = "unclean.leader.election.enable"
MAX_WRITE_ROUNDS = 10  # compare-and-set retries per reconciliation
MAX_ELECTION_ATTEMPTS = 20


@dataclass(frozen=True)
class ControllerState:
    """What ``on_change`` is told: whether this broker is now the controller, and its epoch."""

    active: bool
    epoch: int


# Events; a pending event is not queued twice (reconciliations are idempotent).
STARTUP = "startup"
REELECT = "reelect"
EXPIRE = "expire"
RESYNC = "resync"
BROKER_CHANGE = "broker_change"
TOPIC_CHANGE = "topic_change"
TOPIC_DELETION = "topic_deletion"
ISR_CHANGE = "isr_change"
SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class _PartitionReading:
    replicas: list[int]
    state: LeaderAndIsr | None
    version: int  # the state znode's version (-1: no state znode)


@dataclass(frozen=True)
class EpochFence:
    """A reign: the controller epoch and the ``/controller_epoch`` version it was won with.

    Every controller write goes through :meth:`transaction` / :meth:`commit`, so it only
    happens while no other broker has been elected since.
    """

    epoch: int
    zk_version: int

    def transaction(self, client: KazooClient) -> Any:
        txn = client.transaction()
        txn.check(CONTROLLER_EPOCH, self.zk_version)
        return txn

    def commit(self, txn: Any) -> list[Any]:
        """Commit; NotControllerError if the epoch moved on (nothing was written then)."""
        try:
            return commit(txn)
        except TransactionFailed as failed:
            if failed.index == 0:
                raise self.superseded() from None
            raise

    def check_results(self, results: list[Any]) -> Exception | None:
        """For a multi-op committed asynchronously: the error that refused it, if any."""
        for index, result in enumerate(results):
            if isinstance(result, Exception) and not isinstance(result, RolledBackError):
                if index == 0:
                    raise self.superseded()
                return result
        return None

    def superseded(self) -> NotControllerError:
        return NotControllerError(
            f"controller epoch {self.epoch} was superseded: another broker was elected"
        )


class ZkController:
    """Controller election and, while elected, partition leadership for the cluster."""

    def __init__(
        self,
        client: KazooClient,
        broker_id: int,
        *,
        unclean_leader_election_enable: bool = False,
        delete_topic_enable: bool = True,
        on_change: Callable[[ControllerState], None] | None = None,
        post: Callable[..., None] | None = None,
    ) -> None:
        self.client = client
        self.broker_id = broker_id
        self.unclean_default = unclean_leader_election_enable
        self.delete_topic_enable = delete_topic_enable
        self._on_change = on_change or (lambda state: None)
        self._post = post or (lambda fn, *args: fn(*args))
        self._queue: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._pending: set[tuple[str, str | None]] = set()
        self._pending_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._lost_session = False
        # --- the controller thread only (read elsewhere as snapshots)
        self.active = False
        self.fence = EpochFence(0, -1)
        self._live: set[int] = set()
        self._epochs: dict[int, int] = {}  # broker id -> broker epoch (registration czxid)
        self._topics: set[str] = set()
        # One callable per watch kind, made once: kazoo keeps a set of watchers per path,
        # so re-arming with the same callable does not pile up duplicates.
        self._watchers = {
            kind: partial(self._on_watch, kind)
            for kind in (REELECT, BROKER_CHANGE, TOPIC_CHANGE, TOPIC_DELETION, ISR_CHANGE)
        }

    @property
    def epoch(self) -> int:
        """The epoch of this broker's current (or last) reign; 0 if it never reigned."""
        return self.fence.epoch

    # === lifecycle ===============================================================================
    def start(self) -> None:
        """Start the event thread and stand for election."""
        self.client.add_listener(self._on_session_state)
        self._thread = threading.Thread(
            target=self._run, name=f"controller-{self.broker_id}", daemon=True
        )
        self._thread.start()
        self._enqueue(STARTUP)

    def stop(self, timeout: float = 30.0) -> None:
        """Resign (deleting ``/controller`` if ours, so another broker takes over at once)
        and stop the thread."""
        self.client.remove_listener(self._on_session_state)
        self._queue.put((SHUTDOWN, None))
        if self._thread is not None:
            self._thread.join(timeout)

    # === events ==================================================================================
    def _enqueue(self, kind: str, key: str | None = None) -> None:
        with self._pending_lock:
            if (kind, key) in self._pending:
                return
            self._pending.add((kind, key))
        self._queue.put((kind, key))

    def _on_session_state(self, state: str) -> None:
        # kazoo's connection thread: enqueue only.
        if state == KazooState.LOST:
            self._lost_session = True
            self._enqueue(EXPIRE)
        elif state == KazooState.CONNECTED:
            # A new session has none of our watches: stand again.  Same session after a
            # disconnection: watches survive, but events may have failed meanwhile: resync.
            self._enqueue(REELECT if self._lost_session else RESYNC)
            self._lost_session = False

    def _watch(self, kind: str) -> Callable[[Any], None]:
        return self._watchers[kind]

    def _on_watch(self, kind: str, event: Any) -> None:
        self._enqueue(kind)

    def _on_topic_data(self, event: Any) -> None:
        self._enqueue(TOPIC_CHANGE, event.path.rsplit("/", 1)[-1])

    def _run(self) -> None:
        while True:
            kind, key = self._queue.get()
            with self._pending_lock:
                self._pending.discard((kind, key))
            if kind == SHUTDOWN:
                self._shutdown()
                return
            try:
                self._process(kind, key)
            except NotControllerError as exc:
                log.warning("broker %d: %s; resigning", self.broker_id, exc)
                self._resign()
                self._enqueue(REELECT)
            except ConnectionClosedError:
                return  # the client was closed under us: the broker is going away
            except KazooException as exc:
                # Connection trouble: kazoo reconnects, and CONNECTED enqueues a resync.
                log.warning("controller event %s failed: %r; retried on reconnect", kind, exc)
            except Exception:
                log.exception("controller event %s failed", kind)

    def _process(self, kind: str, key: str | None) -> None:
        if kind in (STARTUP, REELECT):
            self._elect()
        elif kind == EXPIRE:
            self._resign()
        elif not self.active:
            if kind == RESYNC:
                self._elect()
            return  # a watch from an earlier reign
        elif kind == RESYNC:
            self._on_failover()
        elif kind == BROKER_CHANGE:
            self._on_broker_change()
        elif kind == TOPIC_CHANGE:
            self._on_topic_change(key)
        elif kind == TOPIC_DELETION:
            self._process_deletions()
        elif kind == ISR_CHANGE:
            self._process_isr_changes()

    # === election ================================================================================
    def _elect(self) -> None:
        """Become controller if nobody is; else watch ``/controller`` for a vacancy.

        Also run when ``/controller`` changes: if it no longer names us (deleted by an
        operator to force a new election, say), we resign first.
        """
        if self.active:
            stat = self.client.exists(CONTROLLER, watch=self._watch(REELECT))
            if stat is not None and stat.ephemeralOwner == self._session_id():
                return
            self._resign()
        for _ in range(MAX_ELECTION_ATTEMPTS):
            try:
                data, stat = self.client.get(CONTROLLER_EPOCH)
                epoch, version = decode_controller_epoch(data), stat.version
            except NoNodeError:
                epoch, version = 0, -1
            txn = self.client.transaction()
            if version >= 0:
                txn.check(CONTROLLER_EPOCH, version)
            txn.create(CONTROLLER, encode_controller(self.broker_id), ephemeral=True)
            if version >= 0:
                txn.set_data(CONTROLLER_EPOCH, encode_controller_epoch(epoch + 1), version)
            else:
                txn.create(CONTROLLER_EPOCH, encode_controller_epoch(epoch + 1))
            try:
                results = commit(txn)
            except TransactionFailed as failed:
                if isinstance(failed.error, NodeExistsError) and failed.index == (
                    1 if version >= 0 else 0
                ):
                    if self._follow_controller():
                        return
                continue  # the epoch moved (another election won meanwhile), or a vacancy
            new_version = results[-1].version if version >= 0 else 0
            self._become_active(epoch + 1, new_version)
            return
        log.error(
            "broker %d: gave up standing for controller; retry on next change", self.broker_id
        )

    def _follow_controller(self) -> bool:
        """Watch the existing controller; False if there is none any more (stand again).

        ``/controller`` of our own session means an election of ours succeeded though
        its answer was lost (connection loss then retry): take office.
        """
        stat = self.client.exists(CONTROLLER, watch=self._watch(REELECT))
        if stat is None:
            return False
        if stat.ephemeralOwner == self._session_id():
            data, epoch_stat = self.client.get(CONTROLLER_EPOCH)
            self._become_active(decode_controller_epoch(data), epoch_stat.version)
            return True
        try:
            data, _ = self.client.get(CONTROLLER)
            log.info(
                "broker %d: broker %d is the controller", self.broker_id, decode_controller(data)
            )
        except (NoNodeError, ValueError, KeyError):
            pass
        return True

    def _session_id(self) -> int:
        client_id = self.client.client_id
        return client_id[0] if client_id else 0

    def _become_active(self, epoch: int, epoch_version: int) -> None:
        self.active, self.fence = True, EpochFence(epoch, epoch_version)
        log.info("broker %d is the controller (epoch %d)", self.broker_id, epoch)
        # Hear of our own /controller going away (an operator forcing a new election).
        self.client.exists(CONTROLLER, watch=self._watch(REELECT))
        self._post(self._on_change, ControllerState(True, epoch))
        self._on_failover()

    def _on_failover(self) -> None:
        """Load everything and put it right (Kafka's onControllerFailover)."""
        self._topics = set(self.client.get_children(BROKER_TOPICS, watch=self._watch(TOPIC_CHANGE)))
        self._process_deletions()
        self._on_broker_change()  # reads the live brokers, then reconciles every partition
        self._process_isr_changes()

    def _resign(self) -> None:
        if not self.active:
            return
        self.active = False
        self._live, self._epochs, self._topics = set(), {}, set()
        log.info("broker %d resigned as controller (epoch %d)", self.broker_id, self.epoch)
        self._post(self._on_change, ControllerState(False, self.epoch))

    def _shutdown(self) -> None:
        if self.active:
            try:
                _, stat = self.client.get(CONTROLLER)
                if stat.ephemeralOwner == self._session_id():
                    self.client.delete(CONTROLLER, version=stat.version)
            except KazooException:
                pass  # no session any more: /controller went with it
            self._resign()

    # === broker and topic changes ================================================================
    def _refresh_live_brokers(self) -> set[int]:
        """Read the registered brokers and their broker epochs; returns the *bounced* ones:
        registered before and now, but anew (restarted within the session timeout, so the
        controller may never have seen them gone)."""
        children = self.client.get_children(BROKER_IDS, watch=self._watch(BROKER_CHANGE))
        reads = {
            int(c): self.client.exists_async(broker_path(int(c))) for c in children if c.isdigit()
        }
        epochs = {}
        for broker, result in reads.items():
            stat = result.get()
            if stat is not None:
                epochs[broker] = stat.czxid  # the broker epoch
        bounced = {b for b, e in epochs.items() if self._epochs.get(b, e) != e}
        live = set(epochs)
        if live != self._live or bounced:
            log.info(
                "controller: live brokers %s (gone: %s, new: %s, restarted: %s)",
                sorted(live),
                sorted(self._live - live),
                sorted(live - self._live),
                sorted(bounced),
            )
        self._live, self._epochs = live, epochs
        return bounced

    def _on_broker_change(self) -> None:
        bounced = self._refresh_live_brokers()
        if bounced:
            # Kafka's onBrokerFailure then onBrokerStartup: a restarted broker lost whatever
            # it had in memory; leadership moves off it (a new leader epoch) and it leaves the
            # ISRs, to rejoin them by catching up like any returning follower.
            live = self._live
            self._live = live - bounced
            try:
                self._reconcile(self._topics)
            finally:
                self._live = live
        self._reconcile(self._topics)

    def _on_topic_change(self, topic: str | None) -> None:
        if topic is not None:  # one topic's assignment changed (e.g. partitions added)
            self._reconcile([topic])
            return
        topics = set(self.client.get_children(BROKER_TOPICS, watch=self._watch(TOPIC_CHANGE)))
        added = topics - self._topics
        self._topics = topics
        if added:
            self._reconcile(added)

    def _reconcile(self, topics: Iterable[str]) -> None:
        """Bring every partition of ``topics`` to the state the election rules want."""
        topics = sorted(topics)
        for _ in range(MAX_WRITE_ROUNDS):
            readings = self._read_partitions(topics)
            leaderless = {
                t
                for (t, _p), r in readings.items()
                if r.state is not None
                and (r.state.leader not in self._live or r.state.leader not in r.replicas)
            }
            unclean = self._unclean_topics(leaderless)
            writes = []
            for (topic, partition), reading in readings.items():
                if reading.state is None:
                    target = initial_leader_and_isr(reading.replicas, self._live, self.epoch)
                else:
                    target = offline_partition_election(
                        reading.replicas,
                        reading.state,
                        self._live,
                        unclean=topic in unclean,
                        controller_epoch=self.epoch,
                    )
                if target is not None:
                    writes.append((topic, partition, reading, target))
            conflicts = self._write_states(writes)
            if not conflicts:
                return
            topics = sorted(conflicts)  # someone wrote meanwhile: read those again
        log.warning("controller: partition states of %s keep changing; retry later", topics)

    def _read_partitions(self, topics: list[str]) -> dict[tuple[str, int], _PartitionReading]:
        """Assignments (watched) and current states of ``topics``, read in parallel."""
        assignment_reads = {
            t: self.client.get_async(topic_path(t), watch=self._on_topic_data) for t in topics
        }
        assignments: dict[str, TopicAssignment] = {}
        for topic, result in assignment_reads.items():
            try:
                data, _ = result.get()
                assignments[topic] = TopicAssignment.from_bytes(topic, data)
            except NoNodeError:
                continue  # deleted
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("controller: ignoring topic %s: unreadable assignment (%s)", topic, exc)
        state_reads = {
            (t, p): self.client.get_async(partition_state_path(t, p))
            for t, a in assignments.items()
            for p in a.partitions
        }
        readings = {}
        for (topic, partition), result in state_reads.items():
            replicas = assignments[topic].partitions[partition]
            try:
                data, stat = result.get()
                state = LeaderAndIsr.from_bytes(data, partition_state_path(topic, partition))
                readings[(topic, partition)] = _PartitionReading(replicas, state, stat.version)
            except NoNodeError:
                readings[(topic, partition)] = _PartitionReading(replicas, None, -1)
        return readings

    def _unclean_topics(self, topics: set[str]) -> set[str]:
        """Topics whose effective ``unclean.leader.election.enable`` is true."""
        reads = {t: self.client.get_async(topic_config_path(t)) for t in topics}
        unclean = set()
        for topic, result in reads.items():
            try:
                data, _ = result.get()
                value = decode_config(data).get(UNCLEAN_KEY)
            except NoNodeError:
                value = None
            except (ValueError, AttributeError):
                value = None
            enabled = self.unclean_default if value is None else value.strip().lower() == "true"
            if enabled:
                unclean.add(topic)
        return unclean

    def _write_states(
        self, writes: list[tuple[str, int, _PartitionReading, LeaderAndIsr]]
    ) -> set[str]:
        """Write the new states, in parallel; returns topics whose writes lost a race."""
        pending = []
        for topic, partition, reading, target in writes:
            txn = self.fence.transaction(self.client)
            # Written only while the topic's znode exists: a state must never resurrect the
            # path of a topic deleted meanwhile.
            txn.check(topic_path(topic), -1)
            data = target.to_bytes()
            if reading.version >= 0:
                txn.set_data(partition_state_path(topic, partition), data, reading.version)
            else:
                if not self.client.exists(partitions_path(topic)):
                    txn.create(partitions_path(topic))
                if not self.client.exists(partition_path(topic, partition)):
                    txn.create(partition_path(topic, partition))
                txn.create(partition_state_path(topic, partition), data)
            pending.append((topic, partition, reading, target, txn.commit_async()))
        conflicts: set[str] = set()
        superseded = None
        for topic, partition, reading, target, result in pending:
            try:
                error = self.fence.check_results(result.get())
            except NotControllerError as exc:
                superseded = exc  # collect every answer first, then resign
                continue
            if error is None:
                self._log_transition(topic, partition, reading, target)
            elif isinstance(error, BadVersionError | NodeExistsError):
                conflicts.add(topic)  # a leader or another writer got there first
            # else NoNode: the topic was deleted meanwhile; nothing to do
        if superseded is not None:
            raise superseded
        return conflicts

    def _log_transition(
        self, topic: str, partition: int, reading: _PartitionReading, target: LeaderAndIsr
    ) -> None:
        before = reading.state
        if before is None:
            log.info(
                "controller: %s-%d online, leader %d, isr %s",
                topic,
                partition,
                target.leader,
                target.isr,
            )
        elif before.leader != target.leader:
            log.info(
                "controller: %s-%d leader %d -> %d (epoch %d), isr %s",
                topic,
                partition,
                before.leader,
                target.leader,
                target.leader_epoch,
                target.isr,
            )
        else:
            log.info("controller: %s-%d isr %s -> %s", topic, partition, before.isr, target.isr)

    # === deletions and notifications =============================================================
    def _process_deletions(self) -> None:
        """Delete the topics in ``/admin/delete_topics`` (Kafka's TopicDeletionManager, minus
        StopReplica: brokers drop their replicas when they see the topic vanish)."""
        for topic in self.client.get_children(DELETE_TOPICS, watch=self._watch(TOPIC_DELETION)):
            for _ in range(MAX_WRITE_ROUNDS):
                txn = self.fence.transaction(self.client)
                if self.delete_topic_enable:
                    for path in self._topic_tree(topic):
                        txn.delete(path)
                    if self.client.exists(topic_config_path(topic)):
                        txn.delete(topic_config_path(topic))
                txn.delete(delete_topic_path(topic))
                try:
                    self.fence.commit(txn)
                except TransactionFailed:
                    continue  # the tree changed while we read it: read it again
                if self.delete_topic_enable:
                    self._topics.discard(topic)
                    log.info("controller: deleted topic %s", topic)
                else:
                    log.warning(
                        "controller: ignored deletion of topic %s (delete.topic.enable=false)",
                        topic,
                    )
                break

    def _topic_tree(self, topic: str) -> list[str]:
        """Every znode of a topic, children before parents (a multi-op deletes leaves first)."""
        paths: list[str] = []

        def walk(path: str) -> None:
            try:
                children = self.client.get_children(path)
            except NoNodeError:
                return
            for child in children:
                walk(f"{path}/{child}")
            paths.append(path)

        walk(topic_path(topic))
        return paths

    def _process_isr_changes(self) -> None:
        """Consume ISR change notifications; re-check the partitions they name."""
        children = self.client.get_children(ISR_CHANGE_NOTIFICATION, watch=self._watch(ISR_CHANGE))
        topics: set[str] = set()
        for child in sorted(children):
            path = f"{ISR_CHANGE_NOTIFICATION}/{child}"
            try:
                data, _ = self.client.get(path)
                topics.update(t for t, _p in decode_isr_change(data))
            except (NoNodeError, ValueError, KeyError):
                pass
            try:
                self.client.delete(path)
            except NoNodeError:
                pass
        if topics:
            self._reconcile(topics & self._topics)
