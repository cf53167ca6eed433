"""This broker's membership: the ephemeral ``/brokers/ids/<broker.id>`` znode.

The znode lives as long as the broker's ZooKeeper session.  A broker that dies
(or is cut off longer than ``zookeeper.session.timeout.ms``) loses its session,
ZooKeeper deletes the znode, and the controller, which watches ``/brokers/ids``,
moves leadership away.

Session expiry.  kazoo reports it as LOST, then opens a new session by itself.
The broker is told at once (``on_session_lost``: it is no longer registered and,
if it was controller, no longer is); on the new session it registers again and
is told ``on_registered(broker_epoch)``.  If the id was taken meanwhile by
another live broker — two brokers configured with one ``broker.id``, or a
replacement started while this one was cut off — it does not fight over it and
does not wait (our expired session's znode is gone already, so the one there is
another broker's): it is told ``on_step_down(reason)`` and must stop serving as
that id (Kafka's broker exits when ``registerBroker`` finds the znode "not owned
by this session").

The broker epoch is the registration znode's creation zxid (Kafka's KIP-380):
a re-registration has a larger one, so requests from an older incarnation of a
broker can be told apart.

Threads.  kazoo calls the session listener on its connection thread, which must
not block; registration runs in a thread kazoo spawns.  The three callbacks are
handed to ``post`` (e.g. :meth:`LoopHandoff.post`, so that they run on the loop);
without one they run on kazoo's thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState, KeeperState

from pystream.cluster.zookeeper.paths import BrokerInfo, broker_path
from pystream.errors import BrokerStartupError

# A deregistration waits this long for ZooKeeper at most (then the session expiry does it).
DEREGISTER_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)

__all__ = ["BrokerIdInUseError", "BrokerRegistration"]


class BrokerIdInUseError(BrokerStartupError):
    """Another live broker holds this ``broker.id``."""


def _run_now(fn: Callable[..., Any], *args: Any) -> None:
    fn(*args)


class BrokerRegistration:
    """Register ``info`` and keep it registered across session expiry."""

    def __init__(
        self,
        client: KazooClient,
        info: BrokerInfo,
        *,
        on_registered: Callable[[int], None] | None = None,
        on_session_lost: Callable[[], None] | None = None,
        on_step_down: Callable[[str], None] | None = None,
        post: Callable[..., None] | None = None,
        stale_wait_s: float | None = None,
    ) -> None:
        self.client = client
        self.info = info
        self.path = broker_path(info.broker_id)
        self._on_registered = on_registered or (lambda epoch: None)
        self._on_session_lost = on_session_lost or (lambda: None)
        self._on_step_down = on_step_down or (lambda reason: None)
        self._post = post or _run_now
        # How long a znode of our id owned by another session may be an expired session's
        # leftover (ZooKeeper deletes it just after expiring the session): the session timeout.
        self._stale_wait_s = stale_wait_s
        self.registered = False
        self.epoch = -1
        self._stopped = False
        self._needs_registration = False
        self._listening = False
        self._lock = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------------
    def register(self, *, wait_stale: bool = True) -> int:
        """Create the znode (blocking); returns the broker epoch.

        Raises BrokerIdInUseError if another live broker has this id.  With ``wait_stale``
        a znode of an expired session is waited out (up to the session timeout): a broker
        restarted quickly after a crash finds its old registration still there.
        """
        with self._lock:
            epoch = self._create(wait_stale)
            self.registered, self.epoch = True, epoch
            self._needs_registration = False
            if not self._listening:
                self.client.add_listener(self._on_state)
                self._listening = True
        log.info(
            "registered broker %d at %s (broker epoch %d)",
            self.info.broker_id,
            ", ".join(str(e) for e in self.info.endpoints),
            epoch,
        )
        return epoch

    def deregister(self) -> None:
        """Delete our znode (clean shutdown) and stop re-registering."""
        self._stopped = True
        if self._listening:
            self.client.remove_listener(self._on_state)
            self._listening = False
        with self._lock:
            # Without a connection there is nothing to do (the znode goes with the session),
            # and kazoo would retry a plain get() for as long as ZooKeeper stays away: a
            # broker stopping while ZooKeeper is down must not hang.
            if self.client.connected:
                try:
                    _, stat = self.client.get_async(self.path).get(timeout=DEREGISTER_TIMEOUT_S)
                    if stat.ephemeralOwner == self._session_id():
                        self.client.delete_async(self.path, version=stat.version).get(
                            timeout=DEREGISTER_TIMEOUT_S
                        )
                except (NoNodeError, KazooException, KazooTimeoutError):
                    pass  # gone already, or the session is (so is the znode), or unreachable
            self.registered = False

    # --- internals ----------------------------------------------------------------------------
    def _session_id(self) -> int:
        client_id = self.client.client_id
        return client_id[0] if client_id else 0

    def _create(self, wait_stale: bool) -> int:
        timeout = self._stale_wait_s
        if timeout is None:
            timeout = getattr(self.client, "_session_timeout", 18_000) / 1000
        if not wait_stale:
            timeout = 0.0
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, stat = self.client.create(
                    self.path, self.info.to_bytes(), ephemeral=True, include_data=True
                )
                return stat.czxid
            except NodeExistsError:
                pass
            gone = threading.Event()
            try:
                _, stat = self.client.get(self.path, watch=lambda event, gone=gone: gone.set())
            except NoNodeError:
                continue  # deleted meanwhile: try again
            owner = stat.ephemeralOwner
            if owner == self._session_id():
                return stat.czxid  # ours: a create whose answer was lost, then retried
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not gone.wait(remaining):
                raise BrokerIdInUseError(
                    f"broker.id {self.info.broker_id} is registered by another live broker: "
                    f"{self.path} is not owned by this session (it is ZooKeeper session "
                    f"{owner:#x}'s); give every broker its own broker.id"
                )

    def _on_state(self, state: str) -> None:
        # kazoo's connection thread: decide, never block.
        if self._stopped:
            return
        if state == KazooState.LOST and self.client.client_state == KeeperState.CLOSED:
            return  # our own client.stop(): shutting down, not an expiry
        if state == KazooState.LOST:
            self.registered = False
            self._needs_registration = True
            log.warning(
                "broker %d: ZooKeeper session expired; no longer registered", self.info.broker_id
            )
            self._post(self._on_session_lost)
        elif state == KazooState.CONNECTED and self._needs_registration:
            self.client.handler.spawn(self._reregister)

    def _reregister(self) -> None:
        if self._stopped or not self._needs_registration:
            return
        try:
            # No wait: our expired session's znode went with it, so one there now belongs
            # to another broker that registered this id meanwhile.
            epoch = self.register(wait_stale=False)
        except BrokerIdInUseError as exc:
            self._stopped = True
            reason = f"after its ZooKeeper session expired, {exc}"
            log.error("broker %d steps down: %s", self.info.broker_id, reason)
            self._post(self._on_step_down, reason)
            return
        except KazooException as exc:
            # Lost the connection again: the next CONNECTED tries again.
            log.warning("broker %d: re-registration failed (%s)", self.info.broker_id, exc)
            return
        self._post(self._on_registered, epoch)
