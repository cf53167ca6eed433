"""API v2 produce: records of one request through the proxy's one shared producer.

Every record is queued with ``Producer.send`` (the client's C fast path appends
it to its partition's open batch), so concurrent requests share batches and
round trips; the response waits for all of them.  A record that fails is
reported in its ``offsets`` entry (``error_code``, ``error``), as Confluent's
proxy does; the request itself succeeds.
"""

from __future__ import annotations

from typing import Any

from pystream.aio import Producer
from pystream.errors import KafkaError, UnknownTopicOrPartitionError

from .errors import TOPIC_NOT_FOUND, RestError, kafka_error_code
from .formats import EmbeddedFormat, conversion_error, json_list, json_object
from .topics import TopicCache, topic_not_found

__all__ = ["ProduceService"]


class ProduceService:
    """Parses v2 produce bodies and sends their records with the shared ``producer``."""

    def __init__(self, producer: Producer, topics: TopicCache) -> None:
        self._producer = producer
        self._topics = topics

    async def produce(
        self, topic: str, body: Any, embedded: EmbeddedFormat, partition: int | None = None
    ) -> dict[str, Any]:
        """``{"key_schema_id", "value_schema_id", "offsets": [...]}`` for a v2 body
        ``{"records": [{"key", "value", "partition"}]}``; ``partition`` (the
        ``/partitions/{p}`` form) overrides the records' own."""
        return await self.produce_records(
            topic, _parse_records(body, embedded, partition is None), partition
        )

    async def produce_records(
        self,
        topic: str,
        records: list[tuple[bytes | None, bytes | None, int | None]],
        partition: int | None = None,
    ) -> dict[str, Any]:
        """The response document for records already parsed and validated: (key,
        value, own partition) each, ``partition`` overriding their own."""
        count = len((await self._describe_or_create(topic)).partitions)
        if partition is not None:
            await self._topics.partition(topic, partition)  # 404 40402 if there is none
        if self._one_batch(records, partition):
            return _response(await self._send_one_batch(topic, records, partition))
        send = self._producer.send
        futures: list[Any] = []
        for key, value, own in records:
            target = own if partition is None else partition
            if target is not None and target >= count:
                # As in Confluent's proxy, a record naming a missing partition fails alone.
                futures.append(
                    UnknownTopicOrPartitionError(
                        f"topic {topic!r} has partitions 0..{count - 1}, not {target}"
                    )
                )
                continue
            try:
                futures.append(await send(topic, value, key, partition=target))
            except (KafkaError, TimeoutError) as exc:  # refused before queueing (too large)
                futures.append(exc)
        offsets = []
        for future in futures:
            if isinstance(future, BaseException):
                offsets.append(_failed(future))
                continue
            try:
                # The records of one request mostly share a batch: once the first is
                # acknowledged the rest are done, and result(0) skips a suspension each.
                metadata = future.result(0) if future.done() else await future
            except (KafkaError, TimeoutError) as exc:
                offsets.append(_failed(exc))
                continue
            offsets.append(
                {
                    "partition": metadata.partition,
                    "offset": metadata.offset,
                    "error_code": None,
                    "error": None,
                }
            )
        return _response(offsets)

    async def _describe_or_create(self, topic: str) -> Any:
        """The topic's description; an unknown topic is asked for with auto-creation, as
        Kafka's producer would (Confluent's proxy produces through one).  A broker with
        ``auto.create.topics.enable=false`` answers at once, and the 404 (40401) stands."""
        try:
            return await self._topics.describe(topic)
        except RestError as exc:
            if exc.error_code != TOPIC_NOT_FOUND:
                raise
        try:
            await self._producer.wait_for_topic(topic, missing_is_final=True)
        except UnknownTopicOrPartitionError:
            raise topic_not_found(topic) from None
        return await self._topics.describe(topic, fresh=True)

    def _one_batch(
        self, records: list[tuple[bytes | None, bytes | None, int | None]], partition: int | None
    ) -> bool:
        """Whether the records can go as one batch built in Cython (``send_batch``): many
        of them, no keys or own partitions to route, and small enough that the batch is
        not split -- so it succeeds or fails as a whole and the offsets are consecutive."""
        if len(records) < _MIN_BATCH_RECORDS:
            return False
        size = 0
        for key, value, own in records:
            if key is not None or (own is not None and partition is None):
                return False
            size += _RECORD_OVERHEAD + (0 if value is None else len(value))
        return size < self._producer.batch_size // 2

    async def _send_one_batch(
        self,
        topic: str,
        records: list[tuple[bytes | None, bytes | None, int | None]],
        partition: int | None,
    ) -> list[dict[str, Any]]:
        try:
            future = await self._producer.send_batch(
                topic, [value for _, value, _ in records], partition=partition
            )
            (batch,) = await future
        except (KafkaError, TimeoutError) as exc:
            return [_failed(exc)] * len(records)
        return [
            {"partition": batch.partition, "offset": offset, "error_code": None, "error": None}
            for offset in range(batch.base_offset, batch.base_offset + batch.record_count)
        ]


# Fewer records than this go record by record, sharing the batches of concurrent requests.
_MIN_BATCH_RECORDS = 8
# A generous bound on a record's framing in a batch (varints, attributes, headers count).
_RECORD_OVERHEAD = 32


def _response(offsets: list[dict[str, Any]]) -> dict[str, Any]:
    return {"key_schema_id": None, "value_schema_id": None, "offsets": offsets}


def _failed(exc: BaseException) -> dict[str, Any]:
    return {
        "partition": None,
        "offset": None,
        "error_code": kafka_error_code(exc),
        "error": str(exc),
    }


def _parse_records(
    body: Any, embedded: EmbeddedFormat, partition_allowed: bool
) -> list[tuple[bytes | None, bytes | None, int | None]]:
    """(key, value, partition) per record, validated before anything is sent: a bad
    record fails the whole request (422) so no half of it is written."""
    items = json_list(json_object(body, "the body"), "records")
    if not items:
        raise conversion_error("'records' is empty: send at least one record")
    out: list[tuple[bytes | None, bytes | None, int | None]] = []
    decode = embedded.decode
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise conversion_error(f"records[{i}] must be a JSON object")
        p = item.get("partition")
        if p is not None:
            if isinstance(p, bool) or not isinstance(p, int) or p < 0:
                raise conversion_error(f"records[{i}].partition must be an integer >= 0")
            if not partition_allowed:
                p = None  # the URL's partition wins, as in Confluent's partition produce
        out.append(
            (
                decode(item.get("key"), f"records[{i}].key"),
                decode(item.get("value"), f"records[{i}].value"),
                p,
            )
        )
    return out
