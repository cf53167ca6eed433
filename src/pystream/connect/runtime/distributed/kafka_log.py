"""Kafka's ``KafkaBasedLog``: a compacted topic used as a replicated log of settings.

The topic is created (compacted) if it is missing, read from the beginning to its end
at :meth:`KafkaBasedLog.start`, then followed by a thread that hands every record to
``on_record``.  :meth:`KafkaBasedLog.send` returns once the broker acknowledged the
write (``acks=all``), so a write that returned counts; :meth:`KafkaBasedLog.read_to_end`
returns once every record written before the call has been handed over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ....client import AdminClient, Consumer, NewTopic, Producer, TopicPartition
from ....errors import TopicAlreadyExistsError
from ..config import WorkerConfig

__all__ = ["KafkaBasedLog", "LogRecord"]

log = logging.getLogger("pystream.connect.kafka_log")

# (key, value, offset): value None is a tombstone.
LogRecord = tuple[str, bytes | None, int]

SEND_TIMEOUT = 30.0


class KafkaBasedLog:
    """One internal topic of a distributed worker (see the module docstring)."""

    def __init__(
        self,
        config: WorkerConfig,
        topic: str,
        partitions: int,
        replication_factor: int,
        on_record: Callable[[LogRecord], None],
        client_id: str,
        isolation_level: str = "read_uncommitted",
    ) -> None:
        self.config = config
        self.topic = topic
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.on_record = on_record
        self.client_id = client_id
        self.isolation_level = isolation_level
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._parts: list[TopicPartition] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._waiters_lock = threading.Lock()
        self._waiters: list[threading.Event] = []
        self._error: BaseException | None = None

    def start(self) -> None:
        """Create the topic if missing, read it to its end, then follow it."""
        self._create_topic()
        config = self.config
        self._consumer = Consumer(
            bootstrap_servers=config.bootstrap_servers,
            client_id=f"{self.client_id}-reader",
            enable_auto_commit=False,
            isolation_level=self.isolation_level,
            **config.consumer_settings(),
        )
        self._parts = [
            TopicPartition(self.topic, p) for p in self._consumer.partitions_for(self.topic)
        ]
        self._consumer.assign(self._parts)
        self._consumer.seek_to_beginning(*self._parts)
        self._catch_up()
        settings: dict[str, Any] = {"acks": "all", **config.producer_settings()}
        self._producer = Producer(
            config.bootstrap_servers, client_id=f"{self.client_id}-writer", **settings
        )
        self._thread = threading.Thread(
            target=self._follow, name=f"connect-log-{self.topic}", daemon=True
        )
        self._thread.start()

    @property
    def partition_count(self) -> int:
        """How many partitions the topic has (known once started)."""
        return len(self._parts)

    def _create_topic(self) -> None:
        config = self.config
        admin = AdminClient(config.bootstrap_servers, **config.admin_settings())
        try:
            if self.topic in admin.list_topics():
                return
            log.info(
                "creating %s (%d partitions, replication factor %d, compacted)",
                self.topic,
                self.partitions,
                self.replication_factor,
            )
            try:
                admin.create_topics(
                    NewTopic(
                        self.topic,
                        self.partitions,
                        self.replication_factor,
                        {"cleanup.policy": "compact"},
                    )
                )
            except TopicAlreadyExistsError:
                pass  # another worker created it first
        finally:
            admin.close()

    def _poll_once(self, timeout: float) -> None:
        assert self._consumer is not None
        for record in self._consumer.poll(timeout):
            if record.key is None:
                continue
            value = None if record.value is None else bytes(record.value)
            try:
                self.on_record((bytes(record.key).decode(), value, record.offset))
            except Exception:
                log.exception("%s: cannot apply the record at offset %d", self.topic, record.offset)

    def _catch_up(self) -> None:
        """Read until every partition's position reaches the end offsets of now."""
        assert self._consumer is not None
        consumer = self._consumer
        ends = consumer.end_offsets(self._parts)
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            self._poll_once(0.2)

    def _follow(self) -> None:
        while not self._stopping.is_set():
            with self._waiters_lock:
                waiters, self._waiters = self._waiters, []
            try:
                if waiters:
                    self._catch_up()
                else:
                    self._poll_once(0.2)
            except Exception as exc:
                if self._stopping.is_set():
                    break
                log.warning("%s: reading failed (%s); retrying", self.topic, exc)
                with self._waiters_lock:
                    self._waiters.extend(waiters)
                self._stopping.wait(0.5)
                continue
            for waiter in waiters:
                waiter.set()

    def read_to_end(self, timeout: float = 30.0) -> None:
        """Block until everything written before this call has been applied."""
        if self._thread is None:
            return
        done = threading.Event()
        with self._waiters_lock:
            self._waiters.append(done)
        if not done.wait(timeout):
            raise TimeoutError(f"{self.topic}: not read to its end within {timeout:.0f} s")

    def send(self, key: str, value: bytes | None, wait: bool = True) -> None:
        """Write one record (None: a tombstone); with ``wait``, return once acknowledged."""
        assert self._producer is not None, "start() first"
        future = self._producer.send(self.topic, value, key=key.encode())
        if wait:
            future.result(SEND_TIMEOUT)

    def flush(self) -> None:
        if self._producer is not None:
            self._producer.flush(SEND_TIMEOUT)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5.0)
        for client in (self._producer, self._consumer):
            if client is not None:
                try:
                    client.close()
                except Exception:
                    log.debug("%s: closing a client failed", self.topic, exc_info=True)
