"""The asyncio consumer (``pystream.aio.Consumer``); the sync ``pystream.Consumer`` wraps it.

Three ways to say what to read:

* ``Consumer("a", "b", group_id="g")`` -- group membership: the group's leader
  assigns partitions (``range``, ``roundrobin`` or ``cooperative-sticky``),
  positions start at the group's committed offsets;
* ``Consumer("a", "b")`` without a group -- every partition of the topics,
  following partition-count changes;
* ``assign([...])`` -- exactly these partitions (commits still need ``group_id``).

``poll()`` returns what the background fetcher has buffered (up to
``max_poll_records``), waiting up to ``timeout`` seconds for the first record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from pystream.errors import InvalidGroupIdError, KafkaError

from .assignors import assignors_from_names
from .config import ClientConfig
from .coordinator import GroupCoordinator, Listener, call_listener
from .core import ClientCore
from .errors import ClientClosedError
from .fetcher import Fetcher
from .subscription import OffsetResetStrategy, SubscriptionState
from .types import ConsumerGroupMetadata, ConsumerRecord, OffsetAndMetadata, TopicPartition

__all__ = ["Consumer"]

log = logging.getLogger("pystream.client.consumer")

TPLike = TopicPartition | tuple[str, int]


def _tp(value: TPLike) -> TopicPartition:
    return value if isinstance(value, TopicPartition) else TopicPartition(*value)


def _isolation(value: str | int) -> int:
    if value in (0, "read_uncommitted"):
        return 0
    if value in (1, "read_committed"):
        return 1
    raise ValueError(
        f"isolation_level must be 'read_uncommitted' or 'read_committed', got {value!r}"
    )


class Consumer:
    """Asynchronous Kafka consumer: ``async with Consumer("t", ...) as c: await c.poll(1)``.

    Settings (Kafka's names): ``group_id``, ``group_instance_id``,
    ``auto_offset_reset`` ('latest', 'earliest', 'none'), ``enable_auto_commit``,
    ``auto_commit_interval_ms``, ``isolation_level`` ('read_uncommitted' /
    'read_committed'), ``max_poll_records``, ``max_poll_interval_ms``,
    ``session_timeout_ms``, ``heartbeat_interval_ms``,
    ``partition_assignment_strategy`` ('range,roundrobin' by default, like
    librdkafka; or 'cooperative-sticky'), ``fetch_min_bytes``,
    ``fetch_max_wait_ms``, ``fetch_max_bytes``, ``max_partition_fetch_bytes``,
    ``check_crcs``, ``allow_auto_create_topics``, ``on_assign`` / ``on_revoke`` /
    ``on_lost`` (callables taking a list of TopicPartition, plain or async, run
    on the client's event loop), ``key_deserializer`` / ``value_deserializer``,
    plus the connection settings of :class:`~pystream.client.config.ClientConfig`.
    """

    def __init__(
        self,
        *topics: str,
        bootstrap_servers: str | Sequence[str],
        group_id: str | None = None,
        group_instance_id: str | None = None,
        auto_offset_reset: str = "latest",
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5_000,
        isolation_level: str = "read_uncommitted",
        max_poll_records: int = 500,
        max_poll_interval_ms: int = 300_000,
        session_timeout_ms: int = 45_000,
        heartbeat_interval_ms: int = 3_000,
        partition_assignment_strategy: str | Sequence[str] = "range,roundrobin",
        fetch_min_bytes: int = 1,
        fetch_max_wait_ms: int = 500,
        fetch_max_bytes: int = 52_428_800,
        max_partition_fetch_bytes: int = 1_048_576,
        check_crcs: bool = True,
        allow_auto_create_topics: bool = False,
        on_assign: Listener | None = None,
        on_revoke: Listener | None = None,
        on_lost: Listener | None = None,
        key_deserializer: Any = None,
        value_deserializer: Any = None,
        **client_settings: Any,
    ) -> None:
        self.config = ClientConfig.from_kwargs(bootstrap_servers, **client_settings)
        self.group_id = group_id
        self.max_poll_records = max_poll_records
        self.key_deserializer = key_deserializer
        self.value_deserializer = value_deserializer
        self._core = ClientCore(self.config)
        self._core.allow_auto_topic_creation = allow_auto_create_topics
        self._subs = SubscriptionState(auto_offset_reset)
        self._isolation = _isolation(isolation_level)
        self._fetcher_settings = dict(
            fetch_min_bytes=fetch_min_bytes,
            fetch_max_wait_ms=fetch_max_wait_ms,
            fetch_max_bytes=fetch_max_bytes,
            max_partition_fetch_bytes=max_partition_fetch_bytes,
            isolation_level=self._isolation,
            check_crcs=check_crcs,
        )
        self._group_settings = dict(
            group_instance_id=group_instance_id,
            assignors=assignors_from_names(partition_assignment_strategy),
            session_timeout_ms=session_timeout_ms,
            rebalance_timeout_ms=max_poll_interval_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            enable_auto_commit=enable_auto_commit and group_id is not None,
            auto_commit_interval_ms=auto_commit_interval_ms,
        )
        self._listeners: dict[str, Listener | None] = dict(
            on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost
        )
        self._fetcher: Fetcher | None = None
        self._coordinator: GroupCoordinator | None = None
        self._initial_topics = list(topics)
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect (bootstrap), start fetching and, with a group, join it."""
        if self._started:
            return
        await self._core.start()
        self._fetcher = Fetcher(
            self._core,
            self._subs,
            position_provider=self._committed_positions if self.group_id else None,
            **self._fetcher_settings,  # type: ignore[arg-type]
        )
        self._fetcher.start()
        if self.group_id is not None:
            self._coordinator = GroupCoordinator(
                self._core,
                self._subs,
                group_id=self.group_id,
                on_partitions_dropped=self._fetcher.drop_partitions,
                **self._group_settings,  # type: ignore[arg-type]
                **self._listeners,  # type: ignore[arg-type]
            )
            self._coordinator.start()
        self._core.metadata_listeners.append(self._follow_topics)
        self._started = True
        if self._initial_topics:
            await self.subscribe(self._initial_topics)

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Commit (auto-commit), leave the group and disconnect."""
        if self._closed:
            return
        self._closed = True
        if self._coordinator is not None:
            await self._coordinator.close()
        if self._fetcher is not None:
            await self._fetcher.stop()
        await self._core.close()

    def _check(self) -> None:
        if self._closed:
            raise ClientClosedError("the consumer is closed")
        if not self._started:
            raise RuntimeError("call `await consumer.start()` (or use `async with`) first")

    # ------------------------------------------------------------------ what to read

    async def subscribe(
        self,
        topics: Iterable[str],
        *,
        on_assign: Listener | None = None,
        on_revoke: Listener | None = None,
        on_lost: Listener | None = None,
    ) -> None:
        """Read these topics (replacing an earlier subscription); with a group, via its
        assignor; without one, every partition."""
        self._check()
        topics = list(topics)
        self._subs.subscribe(topics)
        await self._core.refresh_metadata(topics)
        if self._coordinator is not None:
            for name, value in (
                ("on_assign", on_assign),
                ("on_revoke", on_revoke),
                ("on_lost", on_lost),
            ):
                if value is not None:
                    setattr(self._coordinator, name, value)
            self._coordinator.request_rejoin("subscription changed")
        else:
            self._follow_topics()

    def _follow_topics(self) -> None:
        """Without a group, a subscription means every partition of the topics."""
        subs = self._subs
        if self._coordinator is not None or subs.manual or not subs.topics:
            return
        metadata = self._core.metadata
        wanted = [
            TopicPartition(t, p)
            for t in sorted(subs.topics)
            if t in metadata.topics
            for p in sorted(metadata.topics[t].partitions)
        ]
        if set(wanted) != set(subs.assignment):
            subs.set_assignment(wanted)
            if self._fetcher is not None:
                self._fetcher.wakeup()

    async def assign(self, partitions: Iterable[TPLike]) -> None:
        """Read exactly these partitions (no group membership)."""
        self._check()
        tps = [_tp(p) for p in partitions]
        dropped = set(self._subs.assignment) - set(tps)
        self._subs.assign_manually(tps)
        assert self._fetcher is not None
        self._fetcher.drop_partitions(dropped)
        await self._core.refresh_metadata({tp.topic for tp in tps})
        self._fetcher.wakeup()

    async def unsubscribe(self) -> None:
        """Stop reading everything (leaves the group's assignment on the next rejoin)."""
        self._check()
        dropped = list(self._subs.assignment)
        if self._coordinator is not None and dropped and not self._subs.manual:
            if self._coordinator.enable_auto_commit:
                try:
                    await self._coordinator.commit(None)
                except KafkaError as exc:
                    log.warning("commit before unsubscribing failed: %s", exc)
            await call_listener(self._coordinator.on_revoke, dropped)
        self._subs.unsubscribe()
        assert self._fetcher is not None
        self._fetcher.drop_partitions(dropped)
        if self._coordinator is not None:
            self._coordinator.request_rejoin("unsubscribed")

    def assignment(self) -> list[TopicPartition]:
        """The partitions this consumer reads now."""
        return sorted(self._subs.assignment)

    def subscription(self) -> list[str]:
        return sorted(self._subs.topics)

    async def wait_for_assignment(self, timeout: float | None = None) -> list[TopicPartition]:
        """Wait until the group gave this member an assignment (immediate without a group)."""
        self._check()
        if self._coordinator is not None:
            async with asyncio.timeout(timeout):
                while not self._coordinator.stable.is_set():
                    self._coordinator.raise_error()
                    try:
                        async with asyncio.timeout(0.5):
                            await self._coordinator.stable.wait()
                    except TimeoutError:
                        pass
        return self.assignment()

    # ------------------------------------------------------------------ reading

    async def poll(
        self, timeout: float | None = None, max_records: int | None = None
    ) -> list[ConsumerRecord]:
        """Records fetched since the last poll (at most ``max_records``, default
        ``max_poll_records``), waiting up to ``timeout`` seconds (None: until one
        arrives) if none are buffered."""
        self._check()
        fetcher = self._fetcher
        assert fetcher is not None
        coordinator = self._coordinator
        if coordinator is not None:
            coordinator.polled()
            coordinator.raise_error()
        limit = self.max_poll_records if max_records is None else max_records
        records = fetcher.drain(limit)
        if not records and timeout != 0:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not records:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        await fetcher.data_ready.wait()
                except TimeoutError:
                    break
                if coordinator is not None:
                    coordinator.raise_error()
                records = fetcher.drain(limit)
        if self.key_deserializer is not None or self.value_deserializer is not None:
            return [self._deserialize(r) for r in records]  # type: ignore[misc]
        return records

    def _poll_buffered(self, max_records: int | None, notify: Any) -> list[ConsumerRecord] | None:
        """poll() without waiting, callable off the loop thread; None if it must go
        through the loop (closed, not started, or a rejoin is due)."""
        fetcher = self._fetcher
        coordinator = self._coordinator
        if self._closed or fetcher is None or not fetcher.has_records():
            return None
        if coordinator is not None:
            if coordinator.needs_loop_for_poll():
                return None
            coordinator.last_poll = time.monotonic()
            coordinator.raise_error()
        limit = self.max_poll_records if max_records is None else max_records
        records = fetcher.drain(limit, notify)
        if self.key_deserializer is not None or self.value_deserializer is not None:
            return [self._deserialize(r) for r in records]  # type: ignore[misc]
        return records

    def _deserialize(self, r: ConsumerRecord) -> ConsumerRecord:
        key, value = r.key, r.value
        if self.key_deserializer is not None and key is not None:
            key = self.key_deserializer(key)
        if self.value_deserializer is not None and value is not None:
            value = self.value_deserializer(value)
        return ConsumerRecord(
            r.topic,
            r.partition,
            r.offset,
            r.timestamp,
            key,
            value,
            r.headers,
            r.timestamp_type,
            r.leader_epoch,
        )

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> ConsumerRecord:
        buffered = getattr(self, "_iter_buffer", None)
        while not buffered:
            if self._closed:
                raise StopAsyncIteration
            buffered = list(reversed(await self.poll(1.0)))
        self._iter_buffer = buffered
        return buffered.pop()

    # ------------------------------------------------------------------ positions

    async def _committed_positions(self, tps: list[TopicPartition]) -> None:
        """Fetcher hook (group mode): start new partitions at the committed offset."""
        assert self._coordinator is not None
        # A seek (or seek_to_beginning/end) while the lookup runs wins over its answer,
        # as in Kafka: only partitions untouched since the lookup began take it.
        epochs = {tp: st.epoch for tp in tps if (st := self._subs.assignment.get(tp))}
        committed = await self._coordinator.fetch_committed(tps)
        for tp in tps:
            st = self._subs.assignment.get(tp)
            if (
                st is None
                or st.position is not None
                or st.reset_to is not None
                or st.epoch != epochs.get(tp)
            ):
                continue
            om = committed.get(tp)
            if om is not None:
                st.seek(om.offset)
            else:
                st.reset_to = self._subs.default_reset

    async def position(self, partition: TPLike, timeout: float | None = None) -> int:
        """The offset of the next record ``poll()`` returns for this partition, waiting
        (up to ``timeout`` seconds) while the starting offset is looked up."""
        self._check()
        tp = _tp(partition)
        fetcher = self._fetcher
        assert fetcher is not None
        async with asyncio.timeout(timeout):
            while True:
                position = self._subs.state(tp).position
                if position is not None:
                    return position
                fetcher.positions_known.clear()
                fetcher.wakeup()
                await fetcher.positions_known.wait()
                fetcher.raise_errors()

    def known_position(self, partition: TPLike) -> int | None:
        """The position if known now (no waiting)."""
        return self._subs.state(_tp(partition)).position

    def seek(self, partition: TPLike, offset: int) -> None:
        """Read ``partition`` from ``offset`` on (drops what was buffered for it)."""
        self._check()
        tp = _tp(partition)
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        st = self._subs.state(tp)
        assert self._fetcher is not None
        self._fetcher.drop_partitions([tp])
        st.seek(offset)
        self._fetcher.wakeup()

    def _reset(self, partitions: Iterable[TPLike], strategy: int) -> None:
        self._check()
        tps = [_tp(p) for p in partitions] or list(self._subs.assignment)
        assert self._fetcher is not None
        self._fetcher.drop_partitions(tps)
        for tp in tps:
            st = self._subs.state(tp)
            st.seek(0)
            st.position = st.fetch_offset = None
            st.reset_to = strategy
        self._fetcher.wakeup()

    def seek_to_beginning(self, *partitions: TPLike) -> None:
        """Read from the earliest offset (all assigned partitions if none given)."""
        self._reset(partitions, OffsetResetStrategy.EARLIEST)

    def seek_to_end(self, *partitions: TPLike) -> None:
        """Read only records written from now on (all assigned partitions if none given)."""
        self._reset(partitions, OffsetResetStrategy.LATEST)

    def pause(self, *partitions: TPLike) -> None:
        """Stop fetching these partitions (their buffered records are dropped)."""
        assert self._fetcher is not None
        for p in partitions:
            tp = _tp(p)
            st = self._subs.state(tp)
            st.paused = True
            st.fetch_offset = st.position
            st.epoch += 1
        self._fetcher.drop_partitions(_tp(p) for p in partitions)

    def resume(self, *partitions: TPLike) -> None:
        assert self._fetcher is not None
        for p in partitions:
            self._subs.state(_tp(p)).paused = False
        self._fetcher.wakeup()

    def paused(self) -> list[TopicPartition]:
        return sorted(tp for tp, st in self._subs.assignment.items() if st.paused)

    def highwater(self, partition: TPLike) -> int | None:
        """The partition's high watermark as of the last fetch (None before one); for
        read_committed the last stable offset, as librdkafka reports it (what such a
        consumer can reach, so lag computed from it is right)."""
        st = self._subs.state(_tp(partition))
        hw = st.last_stable_offset if self._isolation else st.high_watermark
        return None if hw < 0 else hw

    async def beginning_offsets(self, partitions: Iterable[TPLike]) -> dict[TopicPartition, int]:
        self._check()
        assert self._fetcher is not None
        return await self._fetcher.list_offsets({_tp(p): -2 for p in partitions})

    async def end_offsets(self, partitions: Iterable[TPLike]) -> dict[TopicPartition, int]:
        """High watermarks (last stable offsets for read_committed)."""
        self._check()
        assert self._fetcher is not None
        return await self._fetcher.list_offsets({_tp(p): -1 for p in partitions})

    async def offsets_for_times(
        self, timestamps: dict[TPLike, int]
    ) -> dict[TopicPartition, int | None]:
        """The first offset with a timestamp >= the given one (ms), None if there is none."""
        self._check()
        assert self._fetcher is not None
        found = await self._fetcher.list_offsets({_tp(p): ts for p, ts in timestamps.items()})
        return {tp: (None if off < 0 else off) for tp, off in found.items()}

    async def partitions_for(self, topic: str) -> list[int]:
        """The topic's partition ids.  A topic the broker does not know raises
        UnknownTopicOrPartitionError at once, unless ``allow_auto_create_topics``."""
        self._check()
        info = await self._core.wait_for_topic(
            topic,
            self.config.request_timeout_ms / 1000,
            missing_is_final=not self._core.allow_auto_topic_creation,
        )
        return sorted(info.partitions)

    # ------------------------------------------------------------------ committing

    def _group(self) -> GroupCoordinator:
        if self._coordinator is None:
            raise KafkaError(
                "committing offsets needs a group: create the consumer with group_id=..."
            )
        return self._coordinator

    async def commit(self, offsets: dict[TPLike, OffsetAndMetadata | int] | None = None) -> None:
        """Commit positions (``offsets``: partition -> next offset to read; None: the
        current positions of every assigned partition)."""
        self._check()
        coordinator = self._group()
        await coordinator.commit(
            None if offsets is None else {_tp(tp): v for tp, v in offsets.items()}
        )

    async def committed(
        self, partitions: Iterable[TPLike]
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        """The group's committed offsets for these partitions."""
        self._check()
        return await self._group().fetch_committed([_tp(p) for p in partitions])

    @property
    def member_id(self) -> str | None:
        return None if self._coordinator is None else self._coordinator.member_id

    @property
    def generation(self) -> int:
        return -1 if self._coordinator is None else self._coordinator.generation

    def group_metadata(self) -> ConsumerGroupMetadata:
        """This member's group membership now, for a transactional producer's
        ``send_offsets_to_transaction`` (KIP-447: the broker fences offsets sent with a
        stale generation).  Call it after ``poll()``, so it reflects the latest rebalance;
        before the first join the generation is -1 and the member id empty.

        Raises InvalidGroupIdError if the consumer has no ``group_id``.
        """
        coordinator = self._coordinator
        if self.group_id is None:
            raise InvalidGroupIdError(
                "group_metadata() needs a consumer group: create the consumer with group_id=..."
            )
        if coordinator is None:  # not started yet: no membership
            return ConsumerGroupMetadata(
                self.group_id, group_instance_id=self._group_settings["group_instance_id"]
            )
        return ConsumerGroupMetadata(
            self.group_id,
            coordinator.generation,
            coordinator.member_id,
            coordinator.group_instance_id,
        )
