"""Fetch (1): read each partition from its fetch offset, long-polling until data arrives.

A fetch is planned (which bytes of which segment each partition returns),
then encoded.  If the plan has fewer than ``min_bytes`` and no error, the
request waits in the fetch purgatory until an append to one of its partitions
wakes it or ``max_wait_ms`` passes — no polling loop.

Fetch sessions (KIP-227, v7+): a full fetch with epoch 0 creates a session
(``broker/fetch_session.py``) when a slot is free; an incremental fetch updates
it with the partitions it carries and forgets the ones it names, reads again
the partitions that may have changed (a parked fetch likewise re-reads only the
partitions whose keys woke it) and answers only those with something to say
(the encoder picks them).  Kafka's contexts map onto the code below: Sessionless
(epoch -1, or no slot: session id 0 in the response), Full (the plan from the
request, then a session created from it), Incremental (the plan is the
session's) and SessionError (a top-level error, no partitions).
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pystream.broker.fetch_response import encode_fetch_response
from pystream.broker.fetch_session import (
    FINAL_EPOCH,
    INITIAL_EPOCH,
    INVALID_SESSION_ID,
    FetchSession,
    next_epoch,
)
from pystream.clock import now_ms
from pystream.errors import (
    FetchSessionIdNotFoundError,
    FetchSessionTopicIdError,
    InvalidFetchSessionEpochError,
    KafkaError,
    TopicAuthorizationFailedError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
)
from pystream.protocol.handlers import api_handler
from pystream.protocol.headers import encode_response_frame
from pystream.protocol.messages.fetch import FetchRequest, FetchResponse
from pystream.purgatory import DelayedOperation
from pystream.security.acl import AclOperation, ResourceType
from pystream.storage.log import FetchDataInfo

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext
    from pystream.broker.network import Chunk
    from pystream.broker.services import BrokerServices
    from pystream.cluster.replication.replica_manager import ReplicaManager

ZERO_UUID = uuid.UUID(int=0)
READ_COMMITTED = 1  # FetchRequest.isolation_level
# A session reads all its partitions at least this often, not only those that changed or
# are not caught up: nothing notifies a log start offset moved by retention.
SESSION_FULL_READ_INTERVAL_MS = 1000


@dataclass(slots=True)
class PartitionFetch:
    """What one partition contributes to a fetch response."""

    partition: int
    fetch_offset: int
    max_bytes: int
    current_leader_epoch: int = -1
    error_code: int = 0
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    data: FetchDataInfo | None = None
    # read_committed: the aborted transactions in `data` (the client drops their records).
    aborted_transactions: list[FetchResponse.AbortedTransaction] | None = None
    # In a fetch session: what the fetcher was last told (-1: nothing yet, or an error),
    # so that an incremental response leaves out a partition with nothing new.
    sent_high_watermark: int = -1
    sent_last_stable_offset: int = -1
    sent_log_start_offset: int = -1

    @property
    def size(self) -> int:
        return self.data.size if self.data is not None else 0


@dataclass(slots=True)
class TopicFetch:
    name: str
    topic_id: uuid.UUID
    partitions: list[PartitionFetch] = field(default_factory=list)
    # Set when the topic itself is unknown: every partition answers with it.
    error_code: int = 0


@dataclass(slots=True)
class FetchPlan:
    """The fetch request reduced to what the broker must read; re-read on every wake-up."""

    topics: list[TopicFetch]
    max_bytes: int
    error_code: int = 0
    total_bytes: int = 0
    has_error: bool = False
    isolation_level: int = 0  # 1 = read_committed: below the last stable offset only
    # A follower's fetch (its broker id; -1 for consumers): reads up to the log end offset.
    replica_id: int = -1
    # The fetch session answered (0: none); incremental: answer only what changed.
    session_id: int = INVALID_SESSION_ID
    incremental: bool = False
    # (topic name, partition) -> partition: the purgatory's keys, when a session has them.
    watched: dict[tuple[str, int], PartitionFetch] | None = None
    # A session's partitions not caught up or in error (kept up to date by every read).
    pending: set[tuple[str, int]] | None = None
    # A session's partitions to read first (changed, pending, sent): None reads them all.
    reread: set[tuple[str, int]] | None = None


def _lookup_topic(
    services: BrokerServices, version: int, name: str, topic_id: uuid.UUID
) -> tuple[str, uuid.UUID, int]:
    """(name, topic id, error code) of a topic a fetch names: by id from v13 on."""
    store = services.metadata
    if version >= 13:
        meta = store.topic_by_id(topic_id)
        if meta is None:
            return "", topic_id, UnknownTopicIdError.error_code
        return meta.name, topic_id, 0
    meta = store.get_topic(name)
    if meta is None:
        return name, topic_id, UnknownTopicOrPartitionError.error_code
    return name, meta.topic_id, 0


def _resolve_topics(
    services: BrokerServices, request: FetchRequest, version: int
) -> list[TopicFetch]:
    topics = []
    for fetch_topic in request.topics:
        name, topic_id, error_code = _lookup_topic(
            services, version, "" if version >= 13 else fetch_topic.topic, fetch_topic.topic_id
        )
        topic = TopicFetch(name, topic_id, error_code=error_code)
        topic.partitions = [
            PartitionFetch(
                p.partition,
                p.fetch_offset,
                p.partition_max_bytes,
                p.current_leader_epoch,
                error_code=error_code,
            )
            for p in fetch_topic.partitions
        ]
        topics.append(topic)
    return topics


def read_plan(services: BrokerServices, plan: FetchPlan) -> None:
    """(Re)read every partition of the plan, within the response's byte budget."""
    replicas = services.replica_manager
    remaining = plan.max_bytes
    total = 0
    has_error = False
    for topic in plan.topics:
        if topic.error_code:
            has_error = True
            continue
        for p in topic.partitions:
            if not _read_partition(replicas, plan, topic.name, p, remaining, total == 0):
                has_error = True
                continue
            if p.data is not None:
                size = p.data.size
                total += size
                remaining = max(remaining - size, 0)
    plan.total_bytes = total
    plan.has_error = has_error


def _read_partition(
    replicas: ReplicaManager,
    plan: FetchPlan,
    name: str,
    p: PartitionFetch,
    max_bytes: int,
    min_one_batch: bool,
) -> bool:
    """Read one partition of the plan into ``p``; False if it answers with an error."""
    p.data = None
    p.error_code = 0
    p.aborted_transactions = None
    read_committed = plan.isolation_level == READ_COMMITTED
    consumer = plan.replica_id < 0
    try:
        partition = replicas.leader_partition(name, p.partition)
        state = partition.state
        if p.current_leader_epoch >= 0 and p.current_leader_epoch != state.leader_epoch:
            state.check_leader_epoch(p.current_leader_epoch, f"{name}-{p.partition}")
        log = partition.log
        p.high_watermark = high_watermark = log.high_watermark
        p.last_stable_offset = partition.last_stable_offset
        p.log_start_offset = log.log_start_offset
        # Caught up: nothing to read.  Most partitions of a big fetch session are idle,
        # and this is all they cost.
        caught_up = (
            not read_committed
            and p.fetch_offset == (high_watermark if consumer else log.log_end_offset)
            and p.fetch_offset >= p.log_start_offset
        )
        if not caught_up:
            # Kafka: the first partition with data may exceed the limits by one batch, so
            # a batch larger than max_bytes can never block a consumer.
            p.data = replicas.read(
                partition,
                p.fetch_offset,
                min(p.max_bytes, max_bytes),
                up_to_high_watermark=consumer,
                min_one_batch=min_one_batch,
                read_committed=read_committed,
            )
        if read_committed:
            p.aborted_transactions = [
                FetchResponse.AbortedTransaction(
                    producer_id=txn.producer_id, first_offset=txn.first_offset
                )
                for txn in log.collect_aborted_transactions(p.fetch_offset, p.data)
            ]
    except KafkaError as exc:
        p.error_code = exc.error_code
    pending = plan.pending
    if pending is not None:
        # In a session a partition is read again at the next fetch only if it is not
        # caught up (or in error), or changes meanwhile.
        if p.error_code or p.data is not None:
            pending.add((name, p.partition))
        else:
            pending.discard((name, p.partition))
    return p.error_code == 0


def _reread(services: BrokerServices, plan: FetchPlan, changed: set[tuple[str, int]]) -> None:
    """Re-read only the ``changed`` partitions of a plan whose last read found nothing and no
    error (a parked fetch with min_bytes <= 1): every other partition reads the same."""
    watched = _watched(plan)
    replicas = services.replica_manager
    remaining = plan.max_bytes
    total = 0
    for key in changed:
        p = watched.get(key)
        if p is None:  # forgotten (or its topic renamed) since
            if plan.pending is not None:
                plan.pending.discard(key)
            continue
        if not _read_partition(replicas, plan, key[0], p, remaining, total == 0):
            plan.has_error = True
        elif p.data is not None:
            total += p.data.size
            remaining = max(remaining - p.data.size, 0)
    changed.clear()
    plan.total_bytes = total


def _has_news(services: BrokerServices, plan: FetchPlan, key: tuple[str, int]) -> bool:
    """Whether the partition ``key`` (just changed) now has something for the plan: records
    past its fetch offset, or an error.  Kafka's DelayedFetch.tryComplete, per partition."""
    p = _watched(plan).get(key)
    if p is None:
        return False
    try:
        partition = services.replica_manager.leader_partition(*key)
    except KafkaError:
        return True  # answered with the error
    if plan.replica_id >= 0:
        end = partition.log.log_end_offset
    elif plan.isolation_level == READ_COMMITTED:
        end = partition.last_stable_offset
    else:
        end = partition.log.high_watermark
    return end != p.fetch_offset


def _watched(plan: FetchPlan) -> dict[tuple[str, int], PartitionFetch]:
    """The plan's partitions by (topic name, partition): the purgatory's keys."""
    if plan.watched is None:
        plan.watched = {(t.name, p.partition): p for t in plan.topics for p in t.partitions}
    return plan.watched


def must_respond(p: PartitionFetch) -> bool:
    """Whether an incremental response includes ``p`` (Kafka's maybeUpdateResponseData):
    records, an error, or offsets other than the ones last sent.  The encoder decides the
    same in C; this is the reference."""
    return bool(
        p.error_code
        or p.size
        or p.high_watermark != p.sent_high_watermark
        or p.log_start_offset != p.sent_log_start_offset
        or p.last_stable_offset != p.sent_last_stable_offset
    )


def encode_reference(plan: FetchPlan, version: int, correlation_id: int) -> list[Chunk]:
    """Encode with the generated codec, copying record bytes (the reference path).  It
    leaves the plan as it is (the encoder records what a session was sent)."""
    topics = []
    incremental = getattr(plan, "incremental", False)
    for topic in plan.topics:
        partitions = []
        for p in topic.partitions:
            if incremental and not must_respond(p):
                continue
            records = b""
            if p.data is not None and p.data.records is not None:
                with p.data.view() as view:
                    records = bytes(view)
            partitions.append(
                FetchResponse.PartitionData(
                    partition_index=p.partition,
                    error_code=p.error_code,
                    high_watermark=p.high_watermark,
                    last_stable_offset=p.last_stable_offset,
                    log_start_offset=p.log_start_offset,
                    aborted_transactions=p.aborted_transactions,
                    records=records,
                )
            )
        if incremental and not partitions:
            continue
        topics.append(
            FetchResponse.FetchableTopicResponse(
                topic=topic.name, topic_id=topic.topic_id, partitions=partitions
            )
        )
    response = FetchResponse(
        error_code=plan.error_code, session_id=getattr(plan, "session_id", 0), responses=topics
    )
    return [encode_response_frame(1, version, correlation_id, response)]


@api_handler(1, 4, 16)
async def handle_fetch(request: FetchRequest, context: RequestContext) -> list[Chunk]:
    services = context.services
    version = context.api_version
    max_bytes = min(request.max_bytes, services.config.fetch_max_bytes)
    replica_id = request.replica_state.replica_id if version >= 15 else request.replica_id
    plan = FetchPlan(
        [],
        max_bytes,
        isolation_level=request.isolation_level,
        replica_id=replica_id,
    )
    create_session = False
    if version < 7:
        plan.topics = _resolve_topics(services, request, version)
    elif request.session_epoch in (INITIAL_EPOCH, FINAL_EPOCH):
        # A full fetch: it closes the session it names, and epoch 0 asks for a new one.
        if request.session_id != INVALID_SESSION_ID:
            services.fetch_sessions.remove(request.session_id)
        plan.topics = _resolve_topics(services, request, version)
        create_session = request.session_epoch == INITIAL_EPOCH
    else:
        _plan_incremental(services, request, version, plan)
    if services.authorizer is not None:
        _authorize(context, plan)
    if not plan.error_code:
        if replica_id >= 0:
            _record_follower_fetches(services, plan)
        if plan.reread is None or any(t.error_code for t in plan.topics):
            read_plan(services, plan)
        else:
            _reread(services, plan, plan.reread)  # a session: what may have changed
        if plan.total_bytes < request.min_bytes and not plan.has_error and request.max_wait_ms > 0:
            await _wait_for_data(services, plan, request.min_bytes, request.max_wait_ms)
        if create_session:
            _create_session(services, plan, version)
    _record_metrics(services, plan)
    # Record sets go out as file regions (sendfile) on plaintext, as views of the segments'
    # mmaps on TLS (encrypted straight from them); encode_reference is the oracle.
    connection = context.connection
    return encode_fetch_response(
        plan,
        version,
        context.header.correlation_id,
        connection.supports_sendfile,
        views=connection.sends_views,
    )


def _plan_incremental(
    services: BrokerServices, request: FetchRequest, version: int, plan: FetchPlan
) -> None:
    """Kafka's IncrementalFetchContext: update the session and make it the plan (or set the
    session error the fetcher answers with a full fetch).  Unlike Kafka, which reads every
    partition of the session, only those that may have changed are read again: those the
    replica manager notified, those not caught up or in error, those the request carries
    (and all of them once a second)."""
    sessions = services.fetch_sessions
    session = sessions.get(request.session_id)
    if session is None:
        plan.error_code = FetchSessionIdNotFoundError.error_code
        return
    if session.epoch != request.session_epoch:
        plan.error_code = InvalidFetchSessionEpochError.error_code
        return
    if session.uses_topic_ids != (version >= 13):
        # A session made with topic names cannot go on with ids, nor the other way round.
        plan.error_code = FetchSessionTopicIdError.error_code
        return
    sent = _update_session(session, request, version)
    if not session.partitions:
        sessions.remove(session.id)  # nothing left: a sessionless (empty) answer
        return
    sessions.touch(session, now_ms())
    session.epoch = next_epoch(session.epoch)
    renamed = False
    for key, topic in session.topics.items():
        # Re-resolved on every fetch: the topic may have been deleted (or created) since.
        name, topic_id, error_code = _lookup_topic(
            services, version, "" if version >= 13 else key, topic.topic_id
        )
        renamed |= name != topic.name
        topic.name, topic.topic_id, topic.error_code = name, topic_id, error_code
        if error_code:
            for p in topic.partitions:
                p.error_code = error_code
    if renamed:
        session.renamed()
        session.full_read_ms = -SESSION_FULL_READ_INTERVAL_MS  # keys moved: read them all
    plan.topics = list(session.topics.values())
    plan.session_id = session.id
    plan.incremental = True
    plan.watched = sessions.index(session)
    plan.pending = session.pending
    now = now_ms()
    if now - session.full_read_ms >= SESSION_FULL_READ_INTERVAL_MS or plan.isolation_level:
        session.full_read_ms = now
    else:
        # Only what may have changed since the last read; the others answer as before
        # (and an incremental response leaves them out).
        reread = session.changed | session.pending
        for key, index in sent:
            topic = session.topics.get(key)
            if topic is not None:
                reread.add((topic.name, index))
        plan.reread = reread
    session.changed = set()  # changes from now on are for the next fetch


def _update_session(
    session: FetchSession, request: FetchRequest, version: int
) -> list[tuple[Any, int]]:
    """Kafka's FetchSession.update: the request's partitions are added or updated (fetch
    offset, limits, leader epoch), then the forgotten ones removed.  Returns the (topic
    key, partition)s the request carried."""
    by_id = version >= 13
    partitions = session.partitions
    sent = []
    for fetch_topic in request.topics:
        key = fetch_topic.topic_id if by_id else fetch_topic.topic
        for fp in fetch_topic.partitions:
            sent.append((key, fp.partition))
            p = partitions.get((key, fp.partition))
            if p is None:
                # Named or identified only here; the per-fetch lookup fills in the rest.
                topic = TopicFetch("" if by_id else key, key if by_id else ZERO_UUID)
                p = PartitionFetch(
                    fp.partition, fp.fetch_offset, fp.partition_max_bytes, fp.current_leader_epoch
                )
                session.add(key, topic, p)
            else:
                p.fetch_offset = fp.fetch_offset
                p.max_bytes = fp.partition_max_bytes
                p.current_leader_epoch = fp.current_leader_epoch
    for forgotten in request.forgotten_topics_data:
        session.forget(forgotten.topic_id if by_id else forgotten.topic, list(forgotten.partitions))
    return sent


def _create_session(services: BrokerServices, plan: FetchPlan, version: int) -> None:
    """Kafka's FullFetchContext: a session of the plan's partitions, if a slot is free (the
    encoder then records what each partition's answer said)."""
    size = sum(len(t.partitions) for t in plan.topics)
    session = services.fetch_sessions.maybe_create(
        now_ms(), plan.replica_id >= 0, size, uses_topic_ids=version >= 13
    )
    if session is None:
        return
    for topic in plan.topics:
        partitions = topic.partitions
        key = topic.topic_id if version >= 13 else topic.name
        for p in partitions:
            session.add(key, topic, p)
            if p.error_code or p.data is not None:
                session.pending.add((topic.name, p.partition))  # not caught up
    services.fetch_sessions.index(session)
    session.full_read_ms = now_ms()
    plan.session_id = session.id


def _record_metrics(services: BrokerServices, plan: FetchPlan) -> None:
    """Kafka's BrokerTopicMetrics of a fetch: once per partition, with its bytes out."""
    metrics = services.metrics
    record = metrics.record_fetch
    follower = plan.replica_id >= 0
    if plan.pending is not None and plan.watched is not None:
        # A session: only its pending partitions may have records or errors.
        busy: Counter[str] = Counter()
        failed_topics = {t.name for t in plan.topics if t.error_code}
        for key in plan.pending:
            p = plan.watched.get(key)
            if p is not None and key[0] not in failed_topics:
                busy[key[0]] += 1
                record(key[0], p.size, follower=follower, failed=p.error_code != 0)
        for topic in plan.topics:
            if topic.error_code:
                for _ in topic.partitions:
                    record(topic.name, 0, follower=follower, failed=True)
            else:
                metrics.record_idle_fetches(topic.name, len(topic.partitions) - busy[topic.name])
        return
    for topic in plan.topics:
        for p in topic.partitions:
            record(topic.name, p.size, follower=follower, failed=p.error_code != 0)


def _authorize(context: RequestContext, plan: FetchPlan) -> None:
    """Kafka's rule: a follower needs CLUSTER_ACTION (else every partition is refused), a
    consumer READ on each topic; refused topics answer TOPIC_AUTHORIZATION_FAILED."""
    follower_allowed = plan.replica_id < 0 or context.authorize_cluster(AclOperation.CLUSTER_ACTION)
    for topic in plan.topics:
        if topic.error_code == UnknownTopicIdError.error_code:
            continue  # an id nobody knows names nothing to authorize
        if follower_allowed and (
            plan.replica_id >= 0
            or context.authorize(AclOperation.READ, ResourceType.TOPIC, topic.name)
        ):
            continue
        topic.error_code = TopicAuthorizationFailedError.error_code
        for p in topic.partitions:
            p.error_code = topic.error_code


def _record_follower_fetches(services: BrokerServices, plan: FetchPlan) -> None:
    """A follower's fetch offsets are its log end offsets: the leader's view of the ISR and
    the high watermark move with them (once per request, before any long poll)."""
    replicas = services.replica_manager
    for topic in plan.topics:
        if topic.error_code:
            continue
        for p in topic.partitions:
            try:
                partition = replicas.leader_partition(topic.name, p.partition)
                partition.state.check_leader_epoch(
                    p.current_leader_epoch, f"{topic.name}-{p.partition}"
                )
                replicas.update_follower_fetch(partition, plan.replica_id, p.fetch_offset)
            except KafkaError:
                continue  # read_plan answers the partition with the same error


async def _wait_for_data(
    services: BrokerServices, plan: FetchPlan, min_bytes: int, max_wait_ms: int
) -> None:
    entered = True
    # Partitions changed since the plan's last read (their purgatory keys fired).
    changed: set[tuple[str, int]] = set()

    def try_complete(key: tuple[str, int] | None) -> bool | None:
        nonlocal entered
        if entered:
            # The purgatory's check on entry: read_plan has just run, nothing changed since.
            entered = False
            return None
        if key is None or min_bytes > 1:
            read_plan(services, plan)
        else:
            # Kafka's DelayedFetch.tryComplete, for the one partition that changed: a big
            # session is not re-read on every append to one of its partitions.
            changed.add(key)
            if not _has_news(services, plan, key):
                return None
            _reread(services, plan, changed)
        return True if plan.total_bytes >= min_bytes or plan.has_error else None

    operation = DelayedOperation(try_complete, lambda: False, _watched(plan), keyed=True)
    expired_without_data = not await services.fetch_purgatory.wait(operation, max_wait_ms)
    if expired_without_data:
        if min_bytes <= 1:
            _reread(services, plan, changed)  # whatever changed, even without records
        else:
            read_plan(services, plan)  # whatever arrived, even below min_bytes
