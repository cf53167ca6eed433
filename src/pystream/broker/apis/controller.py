"""The controller's APIs: ControlledShutdown (7), ElectLeaders (43),
AlterPartitionReassignments (45), ListPartitionReassignments (46).

In cluster mode only the active controller answers them (elsewhere NOT_CONTROLLER,
and the client looks the controller up again); the work runs on the controller's
thread (:class:`~pystream.cluster.zookeeper.controller.ZkController`) and the handler awaits
its future, so the event loop keeps serving meanwhile.  A single node is its own
controller: every partition has one replica there, so nothing ever needs electing
or can be moved, and it answers accordingly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from pystream.cluster.zookeeper.election import PREFERRED_ELECTION, UNCLEAN_ELECTION
from pystream.errors import (
    ClusterAuthorizationFailedError,
    ElectionNotNeededError,
    InvalidReplicaAssignmentError,
    InvalidRequestError,
    KafkaError,
    NoReassignmentInProgressError,
    NotControllerError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
)
from pystream.protocol.handlers import api_handler
from pystream.protocol.messages.alter_partition_reassignments import (
    AlterPartitionReassignmentsRequest,
    AlterPartitionReassignmentsResponse,
)
from pystream.protocol.messages.controlled_shutdown import (
    ControlledShutdownRequest,
    ControlledShutdownResponse,
)
from pystream.protocol.messages.elect_leaders import ElectLeadersRequest, ElectLeadersResponse
from pystream.protocol.messages.list_partition_reassignments import (
    ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse,
)
from pystream.security.acl import AclOperation, ResourceType

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext
    from pystream.cluster.zookeeper.controller import OngoingReassignment, ZkController

T = TypeVar("T")
TopicPartition = tuple[str, int]
Outcomes = dict[TopicPartition, KafkaError | None]

CONTROLLED_SHUTDOWN_TIMEOUT_S = 30.0  # the broker's own retry covers a slower controller
RemainingPartition = ControlledShutdownResponse.RemainingPartition
ElectionTopicResult = ElectLeadersResponse.ReplicaElectionResult
ElectionPartitionResult = ElectLeadersResponse.PartitionResult
ReassignTopicResult = AlterPartitionReassignmentsResponse.ReassignableTopicResponse
ReassignPartitionResult = AlterPartitionReassignmentsResponse.ReassignablePartitionResponse
OngoingTopic = ListPartitionReassignmentsResponse.OngoingTopicReassignment
OngoingPartition = ListPartitionReassignmentsResponse.OngoingPartitionReassignment


def _controller(context: RequestContext) -> ZkController | None:
    """This broker's controller if it is the active one; None on a single node.

    NotControllerError when another broker (or none) is the controller."""
    cluster = context.services.cluster
    if cluster is None:
        return None
    controller = cluster.controller
    if controller is None or not controller.active:
        raise NotControllerError(
            f"broker {context.services.broker_id} is not the controller "
            f"(the controller is {cluster.controller_id})"
        )
    return controller


async def _outcome(future: Future[T], timeout_ms: int) -> T:
    """The controller thread's answer, awaited without blocking the loop."""
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), max(timeout_ms, 1) / 1000)
    except TimeoutError:
        raise RequestTimedOutError(
            f"the controller did not finish within {timeout_ms} ms; it may still complete"
        ) from None


def _local_partitions(context: RequestContext, keys: Iterable[TopicPartition]) -> Outcomes:
    """A single node's view: UNKNOWN_TOPIC_OR_PARTITION for partitions that do not exist."""
    topics = context.services.metadata.topics()
    outcomes: Outcomes = {}
    for topic, partition in keys:
        known = topics.get(topic)
        if known is None or partition not in known.partitions:
            outcomes[(topic, partition)] = UnknownTopicOrPartitionError(
                f"{topic}-{partition} does not exist"
            )
        else:
            outcomes[(topic, partition)] = None
    return outcomes


# --- ControlledShutdown ---------------------------------------------------------------------


@api_handler(7, 0, 3)
async def handle_controlled_shutdown(
    request: ControlledShutdownRequest, context: RequestContext
) -> ControlledShutdownResponse:
    """Move leadership off a broker that is about to stop; answer what it still leads."""
    try:
        context.require(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER)
        controller = _controller(context)
        if controller is None:
            return ControlledShutdownResponse(remaining_partitions=[])
        remaining = await _outcome(
            controller.controlled_shutdown(request.broker_id, request.broker_epoch),
            int(CONTROLLED_SHUTDOWN_TIMEOUT_S * 1000),
        )
    except KafkaError as exc:
        return ControlledShutdownResponse(error_code=exc.error_code, remaining_partitions=[])
    return ControlledShutdownResponse(
        remaining_partitions=[
            RemainingPartition(topic_name=t, partition_index=p) for t, p in remaining
        ]
    )


# --- ElectLeaders -----------------------------------------------------------------------------


def _election_results(outcomes: Outcomes) -> list[Any]:
    by_topic: dict[str, list[Any]] = {}
    for (topic, partition), error in sorted(outcomes.items()):
        result = ElectionPartitionResult(partition_id=partition, error_message=None)
        if error is not None:
            result.error_code, result.error_message = error.error_code, str(error)
        by_topic.setdefault(topic, []).append(result)
    return [ElectionTopicResult(topic=t, partition_result=r) for t, r in by_topic.items()]


@api_handler(43, 0, 2)
async def handle_elect_leaders(
    request: ElectLeadersRequest, context: RequestContext
) -> ElectLeadersResponse:
    """Preferred (type 0) or unclean (type 1) leader election for the named partitions
    (all partitions when ``topic_partitions`` is null)."""
    keys = (
        None
        if request.topic_partitions is None
        else list(
            dict.fromkeys((t.topic, p) for t in request.topic_partitions for p in t.partitions)
        )
    )
    try:
        context.require(AclOperation.ALTER, ResourceType.CLUSTER)
        if request.election_type not in (PREFERRED_ELECTION, UNCLEAN_ELECTION):
            raise InvalidRequestError(f"unknown election type {request.election_type}")
        controller = _controller(context)
        if controller is None:
            # One replica per partition: its leader is its preferred replica, and alive.
            outcomes = {
                key: error or ElectionNotNeededError(f"{key[0]}-{key[1]}: no election needed")
                for key, error in _local_partitions(context, keys or ()).items()
            }
        else:
            outcomes = await _outcome(
                controller.elect_leaders(request.election_type, keys), request.timeout_ms
            )
    except KafkaError as exc:
        # Every partition asked for carries the error (Kafka's answer, e.g. to a principal
        # without ALTER on the cluster); v1+ also has it at the top (v0 has no such field).
        return ElectLeadersResponse(
            error_code=exc.error_code if context.api_version >= 1 else 0,
            replica_election_results=_election_results(dict.fromkeys(keys or (), exc)),
        )
    return ElectLeadersResponse(replica_election_results=_election_results(outcomes))


# --- AlterPartitionReassignments --------------------------------------------------------------


@api_handler(45, 0, 0)
async def handle_alter_partition_reassignments(
    request: AlterPartitionReassignmentsRequest, context: RequestContext
) -> AlterPartitionReassignmentsResponse:
    """Start (replicas given) or cancel (replicas null) partition reassignments."""
    targets: dict[TopicPartition, list[int] | None] = {}
    duplicates: set[TopicPartition] = set()
    for topic in request.topics:
        for p in topic.partitions:
            key = (topic.name, p.partition_index)
            if key in targets:
                duplicates.add(key)
            targets[key] = None if p.replicas is None else list(p.replicas)
    try:
        context.require(AclOperation.ALTER, ResourceType.CLUSTER)
        controller = _controller(context)
    except (NotControllerError, ClusterAuthorizationFailedError) as exc:
        return AlterPartitionReassignmentsResponse(
            error_code=exc.error_code, error_message=str(exc), responses=[]
        )
    outcomes: Outcomes = {
        key: InvalidRequestError(f"{key[0]}-{key[1]} is named more than once") for key in duplicates
    }
    wanted = {k: v for k, v in targets.items() if k not in duplicates}
    try:
        if controller is None:
            outcomes.update(_local_reassignments(context, wanted))
        elif wanted:
            outcomes.update(
                await _outcome(controller.alter_partition_reassignments(wanted), request.timeout_ms)
            )
    except KafkaError as exc:
        return AlterPartitionReassignmentsResponse(
            error_code=exc.error_code, error_message=str(exc), responses=[]
        )
    by_topic: dict[str, list[Any]] = {}
    for (topic, partition), error in sorted(outcomes.items()):
        result = ReassignPartitionResult(partition_index=partition, error_message=None)
        if error is not None:
            result.error_code, result.error_message = error.error_code, str(error)
        by_topic.setdefault(topic, []).append(result)
    return AlterPartitionReassignmentsResponse(
        error_message=None,
        responses=[ReassignTopicResult(name=t, partitions=r) for t, r in by_topic.items()],
    )


def _local_reassignments(
    context: RequestContext, targets: dict[TopicPartition, list[int] | None]
) -> Outcomes:
    """A single node: its one replica can only stay where it is."""
    me = context.services.broker_id
    outcomes = _local_partitions(context, targets)
    for key, target in targets.items():
        if outcomes[key] is not None:
            continue
        if target is None:
            outcomes[key] = NoReassignmentInProgressError(
                f"{key[0]}-{key[1]} has no reassignment in progress"
            )
        elif target != [me]:
            outcomes[key] = InvalidReplicaAssignmentError(
                f"The proposed assignment {target} names brokers other than this single "
                f"node ({me})."
            )
    return outcomes


# --- ListPartitionReassignments ---------------------------------------------------------------


@api_handler(46, 0, 0)
async def handle_list_partition_reassignments(
    request: ListPartitionReassignmentsRequest, context: RequestContext
) -> ListPartitionReassignmentsResponse:
    """The ongoing reassignments of the named partitions (all when ``topics`` is null)."""
    keys = (
        None
        if request.topics is None
        else [(t.name, p) for t in request.topics for p in t.partition_indexes]
    )
    try:
        context.require(AclOperation.DESCRIBE, ResourceType.CLUSTER)
        controller = _controller(context)
        ongoing: dict[TopicPartition, OngoingReassignment] = (
            {}
            if controller is None
            else await _outcome(controller.list_partition_reassignments(keys), request.timeout_ms)
        )
    except KafkaError as exc:
        return ListPartitionReassignmentsResponse(
            error_code=exc.error_code, error_message=str(exc), topics=[]
        )
    by_topic: dict[str, list[Any]] = {}
    for (topic, partition), reassignment in sorted(ongoing.items()):
        by_topic.setdefault(topic, []).append(
            OngoingPartition(
                partition_index=partition,
                replicas=reassignment.replicas,
                adding_replicas=reassignment.adding,
                removing_replicas=reassignment.removing,
            )
        )
    return ListPartitionReassignmentsResponse(
        error_message=None,
        topics=[OngoingTopic(name=t, partitions=ps) for t, ps in by_topic.items()],
    )
