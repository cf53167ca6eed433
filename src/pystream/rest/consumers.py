"""API v2 consumer instances: one ``pystream.aio.Consumer`` per instance, kept by name
in a registry that closes instances left idle for ``consumer.instance.timeout.ms``.

An instance remembers the offset after the last record each response handed out
(``consumed``): a commit with an empty body commits exactly those, never records
fetched but not yet returned (they wait in ``pending`` for the next request).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from pystream.aio import AdminClient, Consumer, ConsumerRecord, OffsetAndMetadata, TopicPartition

from .errors import (
    CONSUMER_ALREADY_EXISTS,
    CONSUMER_ALREADY_SUBSCRIBED,
    CONSUMER_INSTANCE_NOT_FOUND,
    ILLEGAL_STATE,
    INVALID_CONSUMER_CONFIG,
    RestError,
)
from .formats import EmbeddedFormat

__all__ = ["ConsumerInstance", "ConsumerRegistry"]

log = logging.getLogger("pystream.rest.consumers")

_RESETS = ("earliest", "latest", "none")


def _invalid(message: str) -> RestError:
    return RestError(422, INVALID_CONSUMER_CONFIG, f"Invalid consumer configuration: {message}")


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _invalid(f"{key} must be true or false, got {value!r}")


def _int(value: Any, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise _invalid(f"{key} must be an integer >= 0, got {value!r}")


class ConsumerInstance:
    """One named consumer of a group, as ``POST /consumers/{group}`` created it."""

    def __init__(
        self,
        group: str,
        name: str,
        embedded: EmbeddedFormat,
        consumer: Consumer,
        request_timeout_ms: int,
        owner: str | None,
    ) -> None:
        self.group = group
        self.owner = owner  # the HTTP user who created it (None without authentication)
        self.name = name
        self.format = embedded
        self.consumer = consumer
        self.request_timeout_ms = request_timeout_ms
        self.lock = asyncio.Lock()  # one request at a time per instance, as in Confluent's
        self.last_used = time.monotonic()
        self.in_use = 0
        self.pending: deque[ConsumerRecord] = deque()
        self.consumed: dict[TopicPartition, int] = {}

    def touch(self) -> None:
        self.last_used = time.monotonic()

    async def subscribe(self, topics: list[str]) -> None:
        if self.consumer.assignment() and not self.consumer.subscription():
            raise RestError(
                409,
                CONSUMER_ALREADY_SUBSCRIBED,
                "the instance has partitions assigned manually; it cannot also subscribe",
            )
        self.pending.clear()
        await self.consumer.subscribe(topics)

    async def unsubscribe(self) -> None:
        self.pending.clear()
        await self.consumer.unsubscribe()

    async def assign(self, partitions: list[TopicPartition]) -> None:
        if self.consumer.subscription():
            raise RestError(
                409,
                CONSUMER_ALREADY_SUBSCRIBED,
                "the instance is subscribed to topics; unsubscribe before assigning partitions",
            )
        self.pending.clear()
        await self.consumer.assign(partitions)

    async def records(self, timeout_ms: int | None, max_bytes: int) -> list[dict[str, Any]]:
        """The records as v2 documents in the instance's format, waiting up to the timeout
        for the first; at most ``max_bytes`` of keys and values, but at least one record
        (one larger than ``max_bytes`` must not stall the instance).

        A record is handed out (and counts as consumed) only once it is encoded: one that
        cannot be (JSON format, not JSON) fails the request and stays first in line, so
        nothing is skipped silently; seek past it or read with a binary instance."""
        # As Confluent's: the request's timeout, at most the instance's
        # consumer.request.timeout.ms (also when none is given), so one request cannot
        # hold the instance (and keep it from expiring) for long.
        limit = self.request_timeout_ms
        timeout = (limit if not timeout_ms else min(timeout_ms, limit)) / 1000
        if not self.pending:
            self.pending.extend(await self.consumer.poll(timeout))
        assignment = set(self.consumer.assignment())
        encode = self.format.encode
        out: list[dict[str, Any]] = []
        size = 0
        pending = self.pending
        while pending:
            r = pending[0]
            tp = TopicPartition(r.topic, r.partition)
            if tp not in assignment:
                pending.popleft()  # revoked since it was fetched
                continue
            record_size = len(r.key or b"") + len(r.value or b"")
            if out and size + record_size > max_bytes:
                break
            where = f"{r.topic}-{r.partition}@{r.offset}"
            try:
                document = {
                    "topic": r.topic,
                    "key": encode(r.key, where),
                    "value": encode(r.value, where),
                    "partition": r.partition,
                    "offset": r.offset,
                }
            except RestError:
                if out:
                    break  # hand out what precedes it; the next request reports it
                raise
            pending.popleft()
            out.append(document)
            size += record_size
            self.consumed[tp] = r.offset + 1
        return out

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata] | None) -> None:
        """Commit ``offsets``, or with None everything handed out so far."""
        if offsets is None:
            assignment = set(self.consumer.assignment())
            offsets = {
                tp: OffsetAndMetadata(offset)
                for tp, offset in self.consumed.items()
                if tp in assignment
            }
            if not offsets:
                return
        await self.consumer.commit(offsets)  # type: ignore[arg-type]

    def _require_assigned(self, partitions: Iterable[TopicPartition]) -> None:
        """Kafka's seek on a partition the consumer does not hold is an IllegalState:
        Confluent's 409 / 40903."""
        assignment = set(self.consumer.assignment())
        missing = sorted(set(partitions) - assignment)
        if missing:
            names = ", ".join(f"{tp.topic}-{tp.partition}" for tp in missing)
            raise RestError(
                409,
                ILLEGAL_STATE,
                f"Illegal state: no current assignment for partition(s) {names}; subscribe "
                f"and poll records until they are assigned, or assign them",
            )

    def seek(self, positions: dict[TopicPartition, int]) -> None:
        self._require_assigned(positions)
        self._drop_pending(set(positions))
        for tp, offset in positions.items():
            self.consumer.seek(tp, offset)

    async def seek_to(self, partitions: list[TopicPartition], end: bool) -> None:
        """Seek to the beginning or the end, and wait until the offset is looked up: a
        record produced after this request returns is then always read (Kafka's lazy
        seekToEnd would pick the end only at the next fetch)."""
        self._require_assigned(partitions)
        self._drop_pending(set(partitions))
        if end:
            self.consumer.seek_to_end(*partitions)
        else:
            self.consumer.seek_to_beginning(*partitions)
        for tp in partitions:
            await self.consumer.position(tp, timeout=self.request_timeout_ms / 1000 + 30)

    def _drop_pending(self, partitions: set[TopicPartition]) -> None:
        self.pending = deque(
            r for r in self.pending if TopicPartition(r.topic, r.partition) not in partitions
        )

    async def close(self) -> None:
        await self.consumer.close()


class ConsumerRegistry:
    """Consumer instances by (group, name); a task closes those idle for
    ``instance_timeout_ms`` (an instance serving a request is never idle)."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        instance_timeout_ms: int,
        request_timeout_ms: int,
        consumer_settings: dict[str, Any],
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._timeout = instance_timeout_ms / 1000
        self._request_timeout_ms = request_timeout_ms
        self._consumer_settings = consumer_settings
        self._instances: dict[tuple[str, str], ConsumerInstance] = {}
        self._creating: set[tuple[str, str]] = set()
        self._expiry: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._instances)

    def start(self) -> None:
        self._expiry = asyncio.create_task(self._expire_idle(), name="rest-consumer-expiry")

    async def close(self) -> None:
        """Stop the expiry task and close every instance (they leave their groups)."""
        if self._expiry is not None:
            self._expiry.cancel()
        instances = list(self._instances.values())
        self._instances.clear()
        await asyncio.gather(*(i.close() for i in instances), return_exceptions=True)

    async def create(
        self,
        group: str,
        settings: dict[str, Any],
        client_settings: dict[str, Any],
        owner: str | None,
    ) -> ConsumerInstance:
        """A new instance from a v2 create body (``name``, ``format``,
        ``auto.offset.reset``, ``auto.commit.enable``, ``fetch.min.bytes``,
        ``consumer.request.timeout.ms``); 409 if the name is taken in the group."""
        name = settings.get("name") or f"rest-consumer-{uuid.uuid4()}"
        if not isinstance(name, str):
            raise _invalid(f"name must be a string, got {name!r}")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", name):
            raise _invalid(f"name {name!r} may contain only letters, digits, '.', '_' and '-'")
        key = (group, name)
        if key in self._instances or key in self._creating:
            raise RestError(
                409,
                CONSUMER_ALREADY_EXISTS,
                f"Consumer with specified consumer ID already exists in the specified consumer "
                f"group: {name!r} in {group!r}",
            )
        embedded = settings.get("format", "binary")
        if embedded not in ("json", "binary"):
            raise _invalid(
                f"format must be 'json' or 'binary' (no schema registry), got {embedded!r}"
            )
        kwargs: dict[str, Any] = {**client_settings, **self._consumer_settings}
        reset = settings.get("auto.offset.reset")
        if reset is not None:
            if reset not in _RESETS:
                raise _invalid(
                    f"auto.offset.reset must be one of {', '.join(_RESETS)}, got {reset!r}"
                )
            kwargs["auto_offset_reset"] = reset
        commit = settings.get("auto.commit.enable")
        if commit is not None:
            kwargs["enable_auto_commit"] = _bool(commit, "auto.commit.enable")
        if settings.get("fetch.min.bytes") is not None:
            kwargs["fetch_min_bytes"] = _int(settings["fetch.min.bytes"], "fetch.min.bytes")
        request_timeout_ms = self._request_timeout_ms
        if settings.get("consumer.request.timeout.ms") is not None:
            request_timeout_ms = _int(
                settings["consumer.request.timeout.ms"], "consumer.request.timeout.ms"
            )
        consumer = Consumer(bootstrap_servers=self._bootstrap, group_id=group, **kwargs)
        self._creating.add(key)
        try:
            await consumer.start()
        except BaseException:
            await consumer.close()
            raise
        finally:
            self._creating.discard(key)
        instance = ConsumerInstance(
            group, name, EmbeddedFormat(embedded), consumer, request_timeout_ms, owner
        )
        self._instances[key] = instance
        log.info("consumer instance %s created in group %s", name, group)
        return instance

    def get(self, group: str, name: str, owner: str | None) -> ConsumerInstance:
        """The instance; 404 also when another user created it (it is not theirs to see)."""
        instance = self._instances.get((group, name))
        if instance is None or instance.owner != owner:
            raise RestError(
                404,
                CONSUMER_INSTANCE_NOT_FOUND,
                f"Consumer instance not found: {name!r} in group {group!r} (deleted, expired "
                f"after consumer.instance.timeout.ms idle, or never created)",
            )
        return instance

    @asynccontextmanager
    async def use(
        self, group: str, name: str, owner: str | None
    ) -> AsyncIterator[ConsumerInstance]:
        """The instance, locked for one request and not idle while it runs."""
        instance = self.get(group, name, owner)
        instance.in_use += 1
        try:
            async with instance.lock:
                if self._instances.get((group, name)) is not instance:
                    self.get(group, name, owner)  # deleted while this request waited: 404
                yield instance
        finally:
            instance.in_use -= 1
            instance.touch()

    async def delete(self, group: str, name: str, owner: str | None) -> None:
        instance = self.get(group, name, owner)
        del self._instances[(group, name)]
        async with instance.lock:
            await instance.close()
        log.info("consumer instance %s of group %s deleted", name, group)

    @staticmethod
    async def matching_topics(admin: AdminClient, pattern: str) -> list[str]:
        """Topics whose whole name matches ``pattern`` now (a v2 ``topic_pattern``)."""
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise _invalid(
                f"topic_pattern {pattern!r} is not a regular expression: {exc}"
            ) from None
        return [t for t in await admin.list_topics() if regex.fullmatch(t)]

    async def _expire_idle(self) -> None:
        interval = min(max(self._timeout / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for key, instance in list(self._instances.items()):
                if instance.in_use or now - instance.last_used < self._timeout:
                    continue
                if self._instances.get(key) is instance:
                    del self._instances[key]
                    log.info(
                        "consumer instance %s of group %s expired after %.0f s idle",
                        instance.name,
                        instance.group,
                        now - instance.last_used,
                    )
                    try:
                        await instance.close()
                    except Exception:
                        log.exception("closing expired consumer instance %s", instance.name)
