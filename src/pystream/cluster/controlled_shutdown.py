"""Controlled shutdown, the broker's side (``controlled.shutdown.enable``).

Before a broker deregisters and exits it asks the controller to move leadership of
the partitions it leads to other in-sync replicas, and to take it out of the ISRs
(Kafka's ``KafkaServer.controlledShutdown``): clients then switch leaders at once
instead of waiting for the session to expire and an offline election.

The request is ControlledShutdown (api key 7) to the controller found in the
metadata store; if this broker is the controller it asks its own
:class:`~pystream.cluster.zookeeper.controller.ZkController` directly.  The controller
answers with the partitions still led here (those that had no other ISR member to
take over); the broker retries up to ``controlled.shutdown.max.retries`` times,
``controlled.shutdown.retry.backoff.ms`` apart, then shuts down anyway — exactly
Kafka's loop, in which the retries count the attempts.

Meanwhile the broker keeps serving: the new states reach it through its ZooKeeper
watches like any other leader change, so it becomes a follower of its partitions
before it stops.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from pystream.cluster.broker_channel import BrokerChannels
from pystream.errors import KafkaError, error_for_code
from pystream.protocol.messages.controlled_shutdown import ControlledShutdownRequest

if TYPE_CHECKING:
    from pystream.cluster.cluster_mode import ClusterMode
    from pystream.cluster.zookeeper.store import ZkMetadataStore

log = logging.getLogger(__name__)

__all__ = ["controlled_shutdown", "movable_partitions_led"]

API_KEY = 7
VERSIONS = (0, 3)
REQUEST_TIMEOUT_MS = 30_000  # Kafka's controller.socket.timeout.ms
# How long to wait for our own watches to show the outcome (we keep serving meanwhile).
OUTCOME_WAIT_S = 5.0

TopicPartition = tuple[str, int]


def movable_partitions_led(store: ZkMetadataStore, broker_id: int) -> list[TopicPartition]:
    """Partitions ``broker_id`` leads that have another live replica to lead them (as the
    controller counts what remains)."""
    live = store.brokers()
    return sorted(
        (name, index)
        for name, topic in store.topics().items()
        for index, state in topic.partitions.items()
        if state.leader == broker_id and any(b != broker_id and b in live for b in state.replicas)
    )


async def _ask_controller(
    cluster: ClusterMode, channels: BrokerChannels, broker_epoch: int
) -> list[TopicPartition]:
    """One ControlledShutdown round trip; the partitions still led here.

    Raises KafkaError (NOT_CONTROLLER, a network error ...) for the caller to retry."""
    store, me = cluster.store, cluster.broker_id
    controller_id = store.controller_id
    if controller_id < 0:
        raise error_for_code(41)("no controller is elected at the moment")
    local = cluster.controller
    if controller_id == me and local is not None and local.active:
        future = local.controlled_shutdown(me, broker_epoch)
        return await asyncio.wait_for(asyncio.wrap_future(future), REQUEST_TIMEOUT_MS / 1000)
    request = ControlledShutdownRequest(broker_id=me, broker_epoch=broker_epoch)
    response = await channels.channel(controller_id).request(API_KEY, request, VERSIONS)
    if response.error_code:
        raise error_for_code(response.error_code)(
            f"the controller (broker {controller_id}) refused the controlled shutdown"
        )
    return [(p.topic_name, p.partition_index) for p in response.remaining_partitions]


async def controlled_shutdown(cluster: ClusterMode) -> bool:
    """Hand leadership over before this broker stops; True if nothing is left led here.

    Never raises: a broker that cannot hand over still shuts down (the controller's
    offline election takes over when its registration goes)."""
    config, store = cluster.config, cluster.store
    me = cluster.broker_id
    if cluster.registration is None or not cluster.registration.registered:
        return False
    broker_epoch = cluster.registration.epoch
    listener = cluster.listener_name
    channels = BrokerChannels(
        me,
        store,
        listener_name=listener,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        security=cluster.security,
    )
    attempts = config.controlled_shutdown_max_retries
    backoff_s = config.controlled_shutdown_retry_backoff_ms / 1000
    succeeded = False
    try:
        for attempt in range(1, attempts + 1):
            log.info("broker %d: controlled shutdown, attempt %d of %d", me, attempt, attempts)
            try:
                remaining = await _ask_controller(cluster, channels, broker_epoch)
            except (KafkaError, TimeoutError) as exc:
                log.warning("broker %d: controlled shutdown attempt failed: %s", me, exc)
            else:
                if not remaining:
                    succeeded = True
                    break
                log.warning(
                    "broker %d: controlled shutdown: still leading %s",
                    me,
                    ", ".join(f"{t}-{p}" for t, p in remaining),
                )
            if attempt < attempts:
                await asyncio.sleep(backoff_s)
    finally:
        channels.close()
    if not succeeded:
        log.warning("broker %d: controlled shutdown did not complete; shutting down anyway", me)
        return False
    # The controller has written the new states; wait (briefly) until our own watches
    # have turned us into a follower, so that we stop answering as leader before we go.
    try:
        await store.wait_for(lambda s: not movable_partitions_led(s, me), OUTCOME_WAIT_S)
    except TimeoutError:
        log.warning("broker %d: leadership changes not seen yet; shutting down", me)
    log.info("broker %d: controlled shutdown succeeded", me)
    return True
