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
  as an eligible replica returns (:mod:`pystream.cluster.zookeeper.election`);
* **topic change** (``/brokers/topics`` children, each topic's data): give new
  partitions a state if their creator did not, and check their leaders are alive;
* **topic deletion** (``/admin/delete_topics``): delete the topic's znodes and config;
* **ISR change notification** (``/isr_change_notification``): consume them and
  re-check those partitions (e.g. a leader re-added a broker that just died);
* **controlled shutdown** (a broker's ControlledShutdown request): the broker joins
  the shutting-down set, leadership of its partitions moves to other ISR members
  (:func:`~pystream.cluster.zookeeper.election.controlled_shutdown_election`) and it leaves
  the ISRs; until it deregisters it is never elected leader again.  The answer names
  the partitions it still leads that another live replica could take, for the broker
  to retry;
* **preferred leader election**: on request (ElectLeaders, preferred or unclean), and
  every ``leader.imbalance.check.interval.seconds`` when ``auto.leader.rebalance.enable``
  for brokers whose share of preferred-but-not-led partitions is above
  ``leader.imbalance.per.broker.percentage``;
* **partition reassignment** (KIP-455, AlterPartitionReassignments): the topic znode
  records the target (``adding_replicas``/``removing_replicas``, see
  :mod:`pystream.cluster.zookeeper.paths`) with replicas = target + original; once every
  target replica is in the ISR (heard through ISR change notifications) one multi-op
  sets replicas = target, drops the others from the ISR and, if the leader is leaving,
  elects one from the target (a new leader epoch).  Removed replicas delete their logs
  when they see they are no longer assigned.  Cancelling reverts to the original.

Requests (ControlledShutdown, ElectLeaders, reassignments) reach the controller from
the asyncio loop of the broker that received them: they are queued like events, run
on the controller thread, and answered through a :class:`concurrent.futures.Future`.

Every reaction is a reconciliation: read the partitions' current state from
ZooKeeper, decide, write with compare-and-set on the state znode's version (a
leader's concurrent ISR change makes it retry with fresh data).  Doing the same
thing twice is harmless, so events can be coalesced and replayed after a reconnect.

Brokers learn the outcome through their own watches on the state znodes (see
:mod:`pystream.cluster.zookeeper.cache`): no LeaderAndIsr requests are sent.

Threads.  Like Kafka's ControllerEventManager, one thread processes events one
at a time from a queue; ZooKeeper watches and session changes only enqueue
events.  The controller never touches the asyncio loop; ``on_change`` (activation,
resignation) is called on the controller thread, or handed to ``post``.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    KazooException,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState

from pystream.cluster.zookeeper.client import (
    TransactionFailed,
    commit,
    is_connection_event,
    zookeeper_error,
)
from pystream.cluster.zookeeper.election import (
    PREFERRED_ELECTION,
    UNCLEAN_ELECTION,
    controlled_shutdown_election,
    imbalanced_partitions,
    initial_leader_and_isr,
    offline_partition_election,
    preferred_replica_election,
    reassignment_completion,
)
from pystream.cluster.zookeeper.paths import (
    BROKER_IDS,
    BROKER_TOPICS,
    CONTROLLER,
    CONTROLLER_EPOCH,
    DELETE_TOPICS,
    ISR_CHANGE_NOTIFICATION,
    NO_LEADER,
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
from pystream.errors import (
    BrokerNotAvailableError,
    ElectionNotNeededError,
    EligibleLeadersNotAvailableError,
    InvalidReplicaAssignmentError,
    InvalidRequestError,
    KafkaError,
    KafkaStorageError,
    NoReassignmentInProgressError,
    NotControllerError,
    PreferredLeaderNotAvailableError,
    StaleBrokerEpochError,
    UnknownTopicOrPartitionError,
)

log = logging.getLogger(__name__)

__all__ = ["ControllerState", "EpochFence", "ZkController"]

UNCLEAN_KEY = "unclean.leader.election.enable"
MAX_WRITE_ROUNDS = 10  # compare-and-set retries per reconciliation
MAX_ELECTION_ATTEMPTS = 20

T = TypeVar("T")
TopicPartition = tuple[str, int]


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
CALL = "call"  # a request from a handler: its key names the queued callable
REBALANCE = "rebalance"  # the periodic preferred-leader check (not queued: a timeout)


@dataclass(frozen=True)
class _PartitionReading:
    replicas: list[int]
    state: LeaderAndIsr | None
    version: int  # the state znode's version (-1: no state znode)
    assignment: TopicAssignment  # the whole topic znode (ongoing reassignments)
    topic_version: int  # the topic znode's version


@dataclass(frozen=True)
class OngoingReassignment:
    """A partition being reassigned, as ListPartitionReassignments reports it."""

    replicas: list[int]
    adding: list[int]
    removing: list[int]


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
        auto_leader_rebalance_enable: bool = False,
        leader_imbalance_check_interval_seconds: float = 300.0,
        leader_imbalance_per_broker_percentage: int = 10,
        on_change: Callable[[ControllerState], None] | None = None,
        post: Callable[..., None] | None = None,
    ) -> None:
        self.client = client
        self.broker_id = broker_id
        self.unclean_default = unclean_leader_election_enable
        self.delete_topic_enable = delete_topic_enable
        self.auto_leader_rebalance_enable = auto_leader_rebalance_enable
        self.imbalance_check_interval_s = leader_imbalance_check_interval_seconds
        self.imbalance_percentage = leader_imbalance_per_broker_percentage
        self._calls: dict[str, tuple[Callable[[], Any], Future[Any]]] = {}
        self._call_ids = itertools.count()
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
        # Brokers in a controlled shutdown -> their broker epoch (Kafka's
        # shuttingDownBrokerIds): live, but never elected leader until they deregister.
        self._shutting_down: dict[int, int] = {}
        self._next_rebalance = 0.0  # time.monotonic() of the next imbalance check
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
        if not is_connection_event(event):  # reconnection resyncs (_on_session_state)
            self._enqueue(kind)

    def _on_topic_data(self, event: Any) -> None:
        # A deleted topic's znode fires too: _on_topic_change then finds it gone.
        if not is_connection_event(event):
            self._enqueue(TOPIC_CHANGE, event.path.rsplit("/", 1)[-1])

    def _submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on the controller thread while this broker is the controller;
        its result (or NotControllerError) through the future.  Thread-safe."""
        future: Future[T] = Future()
        if self._thread is None or not self._thread.is_alive():
            future.set_exception(NotControllerError(f"broker {self.broker_id}: not running"))
            return future
        key = str(next(self._call_ids))
        with self._pending_lock:
            self._calls[key] = (partial(fn, *args), future)
        self._queue.put((CALL, key))
        return future

    def _run_call(self, key: str) -> None:
        with self._pending_lock:
            fn, future = self._calls.pop(key)
        if not future.set_running_or_notify_cancel():
            return  # the caller gave up
        if not self.active:
            future.set_exception(
                NotControllerError(f"broker {self.broker_id} is not the controller")
            )
            return
        try:
            future.set_result(fn())
        except BaseException as exc:
            # The caller answers a Kafka client: ZooKeeper trouble is a Kafka error to it.
            if isinstance(exc, KazooException | KazooTimeoutError):
                future.set_exception(zookeeper_error(exc, "a controller request"))
            else:
                future.set_exception(exc)
            if isinstance(exc, KafkaError) and not isinstance(exc, NotControllerError):
                return  # the request's own error: its answer says so
            raise  # resign on NotControllerError, log the rest (see _run)

    def _fail_calls(self) -> None:
        with self._pending_lock:
            calls, self._calls = list(self._calls.values()), {}
        for _fn, future in calls:
            if future.set_running_or_notify_cancel():
                future.set_exception(NotControllerError(f"broker {self.broker_id} shut down"))

    def _rebalance_delay(self) -> float | None:
        """Seconds until the next imbalance check; None while there is none to make."""
        if not (self.active and self.auto_leader_rebalance_enable):
            return None
        return max(0.0, self._next_rebalance - time.monotonic())

    def _run(self) -> None:
        while True:
            try:
                kind, key = self._queue.get(timeout=self._rebalance_delay())
            except queue.Empty:
                kind, key = REBALANCE, None
                self._next_rebalance = time.monotonic() + self.imbalance_check_interval_s
            with self._pending_lock:
                self._pending.discard((kind, key))
            if kind == SHUTDOWN:
                self._shutdown()
                self._fail_calls()
                return
            try:
                if kind == CALL:
                    assert key is not None
                    self._run_call(key)
                else:
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
        elif kind == REBALANCE:
            self._check_leader_imbalance()

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
        self._next_rebalance = time.monotonic() + self.imbalance_check_interval_s
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
        self._shutting_down = {}
        log.info("broker %d resigned as controller (epoch %d)", self.broker_id, self.epoch)
        self._post(self._on_change, ControllerState(False, self.epoch))

    def _shutdown(self) -> None:
        # Without a connection kazoo would hold the request until ZooKeeper is back (maybe
        # never): /controller goes with our session anyway.
        if not self.active:
            return
        if self.client.connected:
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
        # A broker leaves the shutting-down set when it deregisters (or comes back anew).
        self._shutting_down = {b: e for b, e in self._shutting_down.items() if epochs.get(b) == e}
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
        """Bring every partition of ``topics`` to the state the election rules want, and
        move their reassignments on."""
        topics = every_topic = sorted(topics)
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
                        shutting_down=self._shutting_down.keys(),
                    )
                if target is not None:
                    writes.append((topic, partition, reading, target))
            conflicts = self._write_states(writes)
            if not conflicts:
                break
            topics = sorted(conflicts)  # someone wrote meanwhile: read those again
        else:
            log.warning("controller: partition states of %s keep changing; retry later", topics)
        self._progress_reassignments(every_topic)

    def _read_partitions(self, topics: list[str]) -> dict[tuple[str, int], _PartitionReading]:
        """Assignments (watched) and current states of ``topics``, read in parallel."""
        assignment_reads = {
            t: self.client.get_async(topic_path(t), watch=self._on_topic_data) for t in topics
        }
        assignments: dict[str, TopicAssignment] = {}
        topic_versions: dict[str, int] = {}
        for topic, result in assignment_reads.items():
            try:
                data, stat = result.get()
                assignments[topic] = TopicAssignment.from_bytes(topic, data)
                topic_versions[topic] = stat.version
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
            assignment, topic_version = assignments[topic], topic_versions[topic]
            replicas = assignment.partitions[partition]
            try:
                data, stat = result.get()
                state = LeaderAndIsr.from_bytes(data, partition_state_path(topic, partition))
                version = stat.version
            except NoNodeError:
                state, version = None, -1
            readings[(topic, partition)] = _PartitionReading(
                replicas, state, version, assignment, topic_version
            )
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

    def _elect_partitions(
        self,
        topics: Iterable[str],
        decide: Callable[[TopicPartition, _PartitionReading], LeaderAndIsr | None],
    ) -> None:
        """Write ``decide(partition, reading)`` for every partition of ``topics`` where it is
        not None; partitions whose write lost a race are read and decided again."""
        topics = sorted(topics)
        for _ in range(MAX_WRITE_ROUNDS):
            readings = self._read_partitions(topics)
            writes = []
            for (topic, partition), reading in readings.items():
                target = decide((topic, partition), reading)
                if target is not None:
                    writes.append((topic, partition, reading, target))
            conflicts = self._write_states(writes)
            if not conflicts:
                return
            topics = sorted(conflicts)
        raise KafkaStorageError(f"the partition states of {topics} keep changing; retry")

    # === controlled shutdown =====================================================================
    def controlled_shutdown(
        self, broker_id: int, broker_epoch: int
    ) -> Future[list[TopicPartition]]:
        """Move leadership off ``broker_id`` (a ControlledShutdown request).  The future gives
        the partitions with other replicas that it still leads (empty: done);
        NotControllerError if this broker is not the controller."""
        return self._submit(self._controlled_shutdown, broker_id, broker_epoch)

    def _controlled_shutdown(self, broker_id: int, broker_epoch: int) -> list[TopicPartition]:
        if broker_id not in self._live:
            raise BrokerNotAvailableError(f"broker {broker_id} is not registered")
        current_epoch = self._epochs[broker_id]
        if broker_epoch >= 0 and broker_epoch != current_epoch:
            raise StaleBrokerEpochError(
                f"broker {broker_id}: epoch {broker_epoch} given, registered as {current_epoch}"
            )
        if broker_id not in self._shutting_down:
            log.info("controller: broker %d is shutting down", broker_id)
        self._shutting_down[broker_id] = current_epoch
        shutting_down = self._shutting_down.keys()

        def decide(key: TopicPartition, reading: _PartitionReading) -> LeaderAndIsr | None:
            # A sole replica cannot hand over: it goes offline with its broker (Kafka's rule).
            if reading.state is None or len(reading.replicas) < 2:
                return None
            if broker_id not in reading.replicas and broker_id not in reading.state.isr:
                return None
            return controlled_shutdown_election(
                reading.replicas, reading.state, self._live, shutting_down, self.epoch
            )

        self._elect_partitions(self._topics, decide)
        readings = self._read_partitions(sorted(self._topics))
        # Still led there, with another live replica that may yet catch up and take over
        # (worth the broker's retry); with none left, retrying cannot help.
        return sorted(
            key
            for key, r in readings.items()
            if r.state is not None
            and r.state.leader == broker_id
            and any(b != broker_id and b in self._live for b in r.replicas)
        )

    # === preferred and unclean leader election ===================================================
    def elect_leaders(
        self, election_type: int, partitions: Iterable[TopicPartition] | None
    ) -> Future[dict[TopicPartition, KafkaError | None]]:
        """ElectLeaders: each partition's outcome (None: elected).  ``partitions`` None means
        every partition, and then the ones that needed no election are left out."""
        wanted = None if partitions is None else list(partitions)
        return self._submit(self._elect_leaders, election_type, wanted)

    def _elect_leaders(
        self, election_type: int, partitions: list[TopicPartition] | None
    ) -> dict[TopicPartition, KafkaError | None]:
        if election_type not in (PREFERRED_ELECTION, UNCLEAN_ELECTION):
            raise InvalidRequestError(f"unknown election type {election_type}")
        wanted = None if partitions is None else set(partitions)
        # Named topics are read even if their creation has not reached us yet (its watch
        # event may be queued behind this request); topics that do not exist read as none.
        topics = self._topics if wanted is None else {t for t, _ in wanted}
        results: dict[TopicPartition, KafkaError | None] = {}
        shutting_down = self._shutting_down.keys()

        def decide(key: TopicPartition, reading: _PartitionReading) -> LeaderAndIsr | None:
            if wanted is not None and key not in wanted:
                return None
            name, state = f"{key[0]}-{key[1]}", reading.state
            if state is None:
                results[key] = EligibleLeadersNotAvailableError(f"{name} has no state yet")
                return None
            if election_type == PREFERRED_ELECTION:
                preferred = reading.replicas[0]
                if state.leader == preferred:
                    results[key] = ElectionNotNeededError(f"{name}: {preferred} already leads")
                    return None
                target = preferred_replica_election(
                    reading.replicas, state, self._live, self.epoch, shutting_down
                )
                results[key] = (
                    None
                    if target is not None
                    else PreferredLeaderNotAvailableError(
                        f"{name}: the preferred leader {preferred} is not live and in the "
                        f"ISR {state.isr}"
                    )
                )
                return target
            if state.leader in self._live and state.leader in reading.replicas:
                results[key] = ElectionNotNeededError(f"{name}: {state.leader} leads")
                return None
            target = offline_partition_election(
                reading.replicas,
                state,
                self._live,
                unclean=True,
                controller_epoch=self.epoch,
                shutting_down=shutting_down,
            )
            if target is None or target.leader == NO_LEADER:
                results[key] = EligibleLeadersNotAvailableError(f"{name}: no replica is live")
                return None
            results[key] = None
            return target

        self._elect_partitions(topics, decide)
        if wanted is None:
            return {k: e for k, e in results.items() if not isinstance(e, ElectionNotNeededError)}
        for key in wanted - results.keys():
            results[key] = UnknownTopicOrPartitionError(f"{key[0]}-{key[1]} does not exist")
        return results

    def _check_leader_imbalance(self) -> None:
        """Kafka's checkAndTriggerAutoLeaderRebalance: preferred leaders back where the
        imbalance of a broker is above ``leader.imbalance.per.broker.percentage``."""
        readings = self._read_partitions(sorted(self._topics))
        candidates = {
            key: (r.replicas, r.state.leader)
            for key, r in readings.items()
            if r.state is not None and not r.assignment.reassigning(key[1])
        }
        chosen = set(imbalanced_partitions(candidates, self.imbalance_percentage))
        if not chosen:
            return
        log.info("controller: leader imbalance; preferred leader election for %s", sorted(chosen))
        shutting_down = self._shutting_down.keys()

        def decide(key: TopicPartition, reading: _PartitionReading) -> LeaderAndIsr | None:
            if key not in chosen or reading.state is None:
                return None
            if reading.assignment.reassigning(key[1]):
                return None
            return preferred_replica_election(
                reading.replicas, reading.state, self._live, self.epoch, shutting_down
            )

        self._elect_partitions({t for t, _ in chosen}, decide)

    # === partition reassignment ==================================================================
    def alter_partition_reassignments(
        self, targets: Mapping[TopicPartition, list[int] | None]
    ) -> Future[dict[TopicPartition, KafkaError | None]]:
        """Start (target replicas) or cancel (None) reassignments; each partition's outcome.

        The future completes once the reassignments are recorded, not when they finish
        (ListPartitionReassignments tells that)."""
        return self._submit(self._alter_reassignments, dict(targets))

    def list_partition_reassignments(
        self, partitions: Iterable[TopicPartition] | None
    ) -> Future[dict[TopicPartition, OngoingReassignment]]:
        """The ongoing reassignments among ``partitions`` (None: all partitions)."""
        wanted = None if partitions is None else list(partitions)
        return self._submit(self._list_reassignments, wanted)

    def _list_reassignments(
        self, partitions: list[TopicPartition] | None
    ) -> dict[TopicPartition, OngoingReassignment]:
        wanted = None if partitions is None else set(partitions)
        topics = self._topics if wanted is None else {t for t, _ in wanted}
        ongoing = {}
        for key, r in self._read_partitions(sorted(topics)).items():
            if (wanted is None or key in wanted) and r.assignment.reassigning(key[1]):
                ongoing[key] = OngoingReassignment(
                    list(r.replicas),
                    list(r.assignment.adding.get(key[1], [])),
                    list(r.assignment.removing.get(key[1], [])),
                )
        return ongoing

    def _check_target(self, replicas: list[int]) -> None:
        """Kafka's validation of a reassignment target (INVALID_REPLICA_ASSIGNMENT)."""
        if not replicas:
            raise InvalidReplicaAssignmentError("The partition assignment is empty.")
        if len(set(replicas)) != len(replicas):
            raise InvalidReplicaAssignmentError(
                f"The proposed assignment {replicas} has duplicate replicas."
            )
        unknown = sorted(set(replicas) - self._live)
        if unknown:
            raise InvalidReplicaAssignmentError(
                f"The proposed assignment {replicas} contains non-existent broker ids {unknown}."
            )

    def _alter_reassignments(
        self, targets: dict[TopicPartition, list[int] | None]
    ) -> dict[TopicPartition, KafkaError | None]:
        results: dict[TopicPartition, KafkaError | None] = {}
        by_topic: dict[str, dict[int, list[int] | None]] = {}
        for (topic, partition), target in targets.items():
            by_topic.setdefault(topic, {})[partition] = target
        changed = []
        for topic, wanted in sorted(by_topic.items()):
            for _ in range(MAX_WRITE_ROUNDS):
                outcome = self._record_reassignments(topic, wanted)
                if outcome is not None:
                    results.update(outcome)
                    break
            else:
                error = KafkaStorageError(f"topic {topic} keeps changing; retry")
                results.update({(topic, p): error for p in wanted})
                continue
            if any(results[(topic, p)] is None for p in wanted):
                changed.append(topic)
        if changed:
            self._reconcile(changed)  # starts the new replicas' ISR wait, or completes
        return results

    def _record_reassignments(
        self, topic: str, wanted: dict[int, list[int] | None]
    ) -> dict[TopicPartition, KafkaError | None] | None:
        """One compare-and-set of the topic znode with the reassignments; None if it lost a
        race (read again and retry)."""
        try:
            data, stat = self.client.get(topic_path(topic), watch=self._on_topic_data)
        except NoNodeError:
            error = UnknownTopicOrPartitionError(f"Topic '{topic}' does not exist")
            return {(topic, p): error for p in wanted}
        current = TopicAssignment.from_bytes(topic, data)
        partitions, adding, removing = (
            dict(current.partitions),
            dict(current.adding),
            dict(current.removing),
        )
        results: dict[TopicPartition, KafkaError | None] = {}
        for partition, target in sorted(wanted.items()):
            key = (topic, partition)
            if partition not in current.partitions:
                results[key] = UnknownTopicOrPartitionError(f"{topic}-{partition} does not exist")
                continue
            original = current.original_replicas(partition)
            if target is None:
                if not current.reassigning(partition):
                    results[key] = NoReassignmentInProgressError(
                        f"{topic}-{partition} has no reassignment in progress"
                    )
                    continue
                target = original  # cancel: back to where it was
            else:
                try:
                    self._check_target(target)
                except KafkaError as exc:
                    results[key] = exc
                    continue
            # Kafka's order: the target replicas first, then the original ones leaving.
            partitions[partition] = list(target) + [b for b in original if b not in target]
            adding[partition] = [b for b in target if b not in original]
            removing[partition] = [b for b in original if b not in target]
            results[key] = None
            log.info("controller: reassigning %s-%d %s -> %s", topic, partition, original, target)
        if all(e is not None for e in results.values()):
            return results
        updated = TopicAssignment(current.topic_id, partitions, adding, removing)
        txn = self.fence.transaction(self.client)
        txn.set_data(topic_path(topic), updated.to_bytes(), stat.version)
        try:
            self.fence.commit(txn)
        except TransactionFailed as failed:
            if isinstance(failed.error, BadVersionError | NoNodeError):
                return None
            raise
        return results

    def _progress_reassignments(self, topics: Iterable[str]) -> None:
        """Complete the reassignments of ``topics`` whose target replicas are all in sync;
        also drop from ISRs any broker that is no longer a replica (after a cancellation)."""
        topics = sorted(topics)
        for _ in range(MAX_WRITE_ROUNDS):
            readings = self._read_partitions(topics)
            completions: dict[str, list[tuple[int, _PartitionReading, LeaderAndIsr]]] = {}
            for (topic, partition), r in readings.items():
                if r.state is None:
                    continue
                target = r.assignment.target_replicas(partition)
                reassigning = r.assignment.reassigning(partition)
                if reassigning and not all(b in r.state.isr for b in target):
                    continue  # still catching up
                strays = [b for b in r.state.isr if b not in target]
                if not reassigning and not strays:
                    continue
                state = reassignment_completion(
                    target, r.state, self._live, self.epoch, self._shutting_down.keys()
                )
                if state is None:
                    continue  # no target replica can lead yet
                completions.setdefault(topic, []).append((partition, r, state))
            conflicts = {t for t, done in completions.items() if not self._complete(t, done)}
            if not conflicts:
                return
            topics = sorted(conflicts)
        log.warning("controller: reassignments of %s keep conflicting; retry later", topics)

    def _complete(
        self, topic: str, done: list[tuple[int, _PartitionReading, LeaderAndIsr]]
    ) -> bool:
        """One multi-op: the topic's replicas become the targets, the states follow.  False
        if the topic znode or a state changed meanwhile."""
        assignment, topic_version = done[0][1].assignment, done[0][1].topic_version
        partitions = dict(assignment.partitions)
        adding, removing = dict(assignment.adding), dict(assignment.removing)
        for partition, _r, _state in done:
            partitions[partition] = assignment.target_replicas(partition)
            adding.pop(partition, None)
            removing.pop(partition, None)
        updated = TopicAssignment(assignment.topic_id, partitions, adding, removing)
        txn = self.fence.transaction(self.client)
        if updated != assignment:
            txn.set_data(topic_path(topic), updated.to_bytes(), topic_version)
        else:
            txn.check(topic_path(topic), topic_version)
        for partition, r, state in done:
            txn.set_data(partition_state_path(topic, partition), state.to_bytes(), r.version)
        try:
            self.fence.commit(txn)
        except TransactionFailed as failed:
            if isinstance(failed.error, BadVersionError | NoNodeError):
                return False
            raise
        for partition, _r, state in done:
            log.info(
                "controller: %s-%d reassigned: replicas %s, leader %d (epoch %d), isr %s",
                topic,
                partition,
                partitions[partition],
                state.leader,
                state.leader_epoch,
                state.isr,
            )
        return True

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
