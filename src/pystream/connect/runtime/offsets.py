"""Source offsets: where each source partition has been read up to.

Kafka keys an offset by ``[connector name, source partition]`` serialized as JSON
and stores the offset as JSON; so do we.  :class:`OffsetBackingStore` is the small
interface a worker needs; :class:`FileOffsetBackingStore` is standalone mode's
(``offset.storage.file.filename``; a distributed worker's will be a compacted topic).
"""

from __future__ import annotations

import abc
import json
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from ...fileutil import atomic_write
from ..api import OffsetStorageReader

__all__ = [
    "FileOffsetBackingStore",
    "MemoryOffsetBackingStore",
    "OffsetBackingStore",
    "TaskOffsetReader",
    "offset_key",
]

log = logging.getLogger("pystream.connect.offsets")


def offset_key(connector: str, partition: Mapping[str, Any]) -> str:
    """Kafka's key: ``["<connector>",{<source partition>}]`` as compact JSON."""
    return json.dumps([connector, dict(partition)], separators=(",", ":"), sort_keys=True)


class OffsetBackingStore(abc.ABC):
    """Committed source offsets by :func:`offset_key`."""

    @abc.abstractmethod
    def get(self, key: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def set(self, values: Mapping[str, dict[str, Any] | None]) -> None:
        """Store these offsets durably (None deletes one) before returning; called from
        task threads, never the event loop."""

    @abc.abstractmethod
    def items(self) -> dict[str, dict[str, Any]]:
        """Every stored offset."""

    def connector_offsets(self, connector: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(source partition, offset) pairs of one connector (``GET .../offsets``)."""
        out = []
        for key, value in self.items().items():
            name, partition = json.loads(key)
            if name == connector:
                out.append((partition, value))
        return out

    def close(self) -> None:
        return None


class MemoryOffsetBackingStore(OffsetBackingStore):
    """Offsets in memory only (lost at exit): for tests and embedded use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._data.get(key)

    def set(self, values: Mapping[str, dict[str, Any] | None]) -> None:
        with self._lock:
            self._apply(values)

    def _apply(self, values: Mapping[str, dict[str, Any] | None]) -> None:
        for key, value in values.items():
            if value is None:
                self._data.pop(key, None)
            else:
                self._data[key] = value

    def items(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._data)


class FileOffsetBackingStore(MemoryOffsetBackingStore):
    """Standalone mode's store: a JSON object ``{key: offset}`` in one file, replaced
    atomically (written to a temporary file, fsynced, renamed) on every commit."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._write_lock = threading.Lock()
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            raise OSError(
                f"offset.storage.file.filename={path}: cannot read the stored offsets "
                f"({exc}); move the file away to start over from no offsets"
            ) from exc
        if not isinstance(data, dict):
            raise OSError(f"offset.storage.file.filename={path}: expected a JSON object")
        self._data.update(data)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)

    def set(self, values: Mapping[str, dict[str, Any] | None]) -> None:
        # One writer at a time so that a later snapshot never lands before an earlier one.
        with self._write_lock:
            with self._lock:
                self._apply(values)
                snapshot = json.dumps(self._data, separators=(",", ":"), sort_keys=True)
            atomic_write(self.path, snapshot.encode())


class TaskOffsetReader(OffsetStorageReader):
    """What a source task reads its committed offsets through."""

    def __init__(self, store: OffsetBackingStore, connector: str) -> None:
        self.store = store
        self.connector = connector

    def offset(self, partition: Mapping[str, Any]) -> dict[str, Any] | None:
        return self.store.get(offset_key(self.connector, partition))


def read_offsets_topic(
    consumer_factory: Any, topic: str, connector: str | None = None
) -> dict[str, dict[str, Any] | None]:
    """Every committed offset in the offsets topic (Kafka's ``offset.storage.topic``
    layout: key ``[connector, partition]`` JSON, value the offset JSON or null), read to
    its end with ``read_committed``; only ``connector``'s if given.  The latest wins.
    ``consumer_factory()`` makes a group-less pystream consumer."""
    consumer = consumer_factory()
    try:
        partitions = [(topic, p) for p in consumer.partitions_for(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        found: dict[str, dict[str, Any] | None] = {}
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            for record in consumer.poll(1.0):
                if record.key is None:
                    continue
                key = bytes(record.key).decode()
                if connector is not None and json.loads(key)[0] != connector:
                    continue
                found[key] = None if record.value is None else json.loads(bytes(record.value))
        return found
    finally:
        consumer.close()
