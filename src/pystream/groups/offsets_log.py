"""The records of ``__consumer_offsets``: Kafka's key/value schemas, writing and replaying them.

The topic is compacted and keyed, so the latest record per key is the state:

- an **offset commit**: key ``OffsetCommitKey`` v1 (group, topic, partition),
  value ``OffsetCommitValue`` v3 (v1 when the commit carried an explicit
  expire timestamp, as Kafka does); a null value (tombstone) deletes it;
- a **group's metadata**: key ``GroupMetadataKey`` v2 (group), value
  ``GroupMetadataValue`` v3 (generation, protocol, leader, members with their
  subscriptions and assignments); a tombstone deletes the group.

These are exactly the versions a Kafka 3.x broker writes, so tools that read the
topic (``kafka-console-consumer --formatter ...OffsetsMessageFormatter``) read
ours too.  A group lives on partition ``abs(java hashCode(group)) % partitions``.

:class:`PartitionLoader` replays one partition (what a coordinator does when it
becomes the leader of that partition, e.g. at startup): the newest record per
key wins, transactional offset commits only count once their commit marker is
read, and records of key versions this broker does not know are skipped.
"""

from __future__ import annotations

import functools
import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from pystream._core import records as core_records
from pystream.cluster.metadata.model import OFFSETS_TOPIC
from pystream.protocol.codec import ProtocolDecodeError
from pystream.protocol.messages.internal import (
    GroupMetadataKey,
    GroupMetadataValue,
    OffsetCommitKey,
    OffsetCommitValue,
)

log = logging.getLogger(__name__)


# Key versions: 0 and 1 are offset commits (same layout), 2 is group metadata.
OFFSET_KEY_VERSION = 1
GROUP_KEY_VERSION = 2
OFFSET_VALUE_VERSION = 3
OFFSET_VALUE_VERSION_WITH_EXPIRY = 1
GROUP_VALUE_VERSION = 3

TopicPartition = tuple[str, int]

_OFFSET_EPOCH = struct.Struct(">qi")
_I64 = struct.Struct(">q")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_KEY_HEADER = struct.Struct(">hh")  # version, length of the group
_V3_HEAD = struct.Struct(">hqih")  # version, offset, leader epoch, length of the metadata
_V3_NO_METADATA = struct.Struct(">hqihq")  # version, offset, epoch, "" (length 0), timestamp


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode()``: 31-based over UTF-16 code units, as a signed int32."""
    h = 0
    data = text.encode("utf-16-be")
    for (unit,) in struct.iter_unpack(">H", data):
        h = (31 * h + unit) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


@functools.lru_cache(maxsize=65536)
def partition_for(group_id: str, num_partitions: int) -> int:
    """The ``__consumer_offsets`` partition of a group: Kafka's ``Utils.abs(hashCode) % n``.

    ``Utils.abs`` maps ``Integer.MIN_VALUE`` to 0 rather than overflowing.
    """
    h = java_string_hash(group_id)
    return (0 if h == -(2**31) else abs(h)) % num_partitions


@dataclass(slots=True)
class OffsetAndMetadata:
    """A committed offset as stored: what OffsetFetch returns and what expires."""

    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp: int = -1
    # Only OffsetCommit v1..v4 with a retention time set this (old per-commit expiry).
    expire_timestamp: int = -1


# --- encoding ---------------------------------------------------------------------------------


def offset_commit_key(group: str, topic: str, partition: int) -> bytes:
    """``OffsetCommitKey`` v1: int16 version, string group, string topic, int32 partition."""
    g, t = group.encode("utf-8"), topic.encode("utf-8")
    if len(g) > 0x7FFF or len(t) > 0x7FFF:
        raise ValueError("group or topic name too long for a string field")
    return b"".join(
        (
            _KEY_HEADER.pack(OFFSET_KEY_VERSION, len(g)),
            g,
            _I16.pack(len(t)),
            t,
            _I32.pack(partition),
        )
    )


def offset_commit_value(offset: OffsetAndMetadata) -> bytes:
    """``OffsetCommitValue`` v3 (v1 when the commit carries an expire timestamp, which v3
    cannot hold: Kafka does the same)."""
    if offset.expire_timestamp < 0:
        metadata = offset.metadata.encode("utf-8")
        if len(metadata) <= 0x7FFF:
            return b"".join(
                (
                    _V3_HEAD.pack(
                        OFFSET_VALUE_VERSION, offset.offset, offset.leader_epoch, len(metadata)
                    ),
                    metadata,
                    _I64.pack(offset.commit_timestamp),
                )
            )
    value = OffsetCommitValue(
        offset=offset.offset,
        leader_epoch=offset.leader_epoch,
        metadata=offset.metadata,
        commit_timestamp=offset.commit_timestamp,
        expire_timestamp=offset.expire_timestamp,
    )
    version = (
        OFFSET_VALUE_VERSION_WITH_EXPIRY if offset.expire_timestamp >= 0 else OFFSET_VALUE_VERSION
    )
    return value.encode_versioned(version)


def group_metadata_key(group: str) -> bytes:
    return GroupMetadataKey(group=group).encode_versioned(GROUP_KEY_VERSION)


def group_metadata_value(value: GroupMetadataValue) -> bytes:
    return value.encode_versioned(GROUP_VALUE_VERSION)


def build_records(
    records: Iterable[tuple[bytes, bytes | None]],
    timestamp: int,
    *,
    producer_id: int = -1,
    producer_epoch: int = -1,
    transactional: bool = False,
) -> bytearray:
    """One uncompressed batch of ``(key, value)`` records (value None: tombstone).

    A writable buffer: the log patches the base offset and leader epoch in place.
    """
    batch = core_records.build_batch(
        [(timestamp, key, value) for key, value in records],
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        is_transactional=transactional,
    )
    return bytearray(batch)


# --- decoding ---------------------------------------------------------------------------------


def decode_offset_key(key: bytes) -> tuple[str, str, int]:
    """``(group, topic, partition)`` of an offset-commit key (versions 0 and 1)."""
    _, decoded = OffsetCommitKey.decode_versioned(key)
    return decoded.group, decoded.topic, decoded.partition


def decode_offset_value(value: bytes) -> OffsetAndMetadata:
    """An offset-commit value of any version (fast paths for the v3 records we write)."""
    size = len(value)
    if size == 24 and value[:2] == b"\x00\x03" and value[14:16] == b"\x00\x00":
        # v3 without metadata, by far the most common record: one unpack.
        _, offset, epoch, _, commit_timestamp = _V3_NO_METADATA.unpack(value)
        return OffsetAndMetadata(offset, epoch, "", commit_timestamp)
    if size >= 24 and value[:2] == b"\x00\x03":
        offset, epoch = _OFFSET_EPOCH.unpack_from(value, 2)
        n = (value[14] << 8) | value[15]
        if size == 24 + n:
            metadata = value[16 : 16 + n].decode("utf-8")
            (commit_timestamp,) = _I64.unpack_from(value, 16 + n)
            return OffsetAndMetadata(offset, epoch, metadata, commit_timestamp)
    _, decoded = OffsetCommitValue.decode_versioned(value, allow_newer=True)
    return OffsetAndMetadata(
        decoded.offset,
        decoded.leader_epoch,
        decoded.metadata,
        decoded.commit_timestamp,
        decoded.expire_timestamp,
    )


class _OffsetKeyDecoder:
    """Decodes offset-commit keys (versions 0 and 1), caching the group and topic strings:
    a partition holds many keys of few groups and topics."""

    def __init__(self) -> None:
        self._strings: dict[bytes, str] = {}

    def _text(self, raw: bytes) -> str:
        text = self._strings.get(raw)
        if text is None:
            text = self._strings[raw] = raw.decode("utf-8")
        return text

    def __call__(self, key: bytes) -> tuple[str, str, int]:
        # int16 version | int16 length | group | int16 length | topic | int32 partition
        n = (key[2] << 8) | key[3]
        pos = 4 + n
        m = (key[pos] << 8) | key[pos + 1]
        end = pos + 2 + m
        if n >= 0x8000 or m >= 0x8000 or end + 4 != len(key):
            raise ValueError("malformed offset commit key")
        group = self._text(key[4:pos])
        topic = self._text(key[pos + 2 : end])
        partition = int.from_bytes(key[end:], "big", signed=True)
        return group, topic, partition


@dataclass
class LoadedPartition:
    """The state one ``__consumer_offsets`` partition holds, after replaying it."""

    # group -> (topic, partition) -> committed offset
    offsets: dict[str, dict[TopicPartition, OffsetAndMetadata]] = field(default_factory=dict)
    groups: dict[str, GroupMetadataValue] = field(default_factory=dict)
    # Groups whose latest record is a tombstone (deleted or expired).
    removed_groups: set[str] = field(default_factory=set)
    # Transactional offset commits still open at the log end: producer id -> group -> offsets.
    pending_transactions: dict[int, dict[str, dict[TopicPartition, OffsetAndMetadata]]] = field(
        default_factory=dict
    )
    records: int = 0
    skipped: int = 0


class PartitionLoader:
    """Replays the batches of one partition in log order; :meth:`finish` gives the state.

    The newest record per key wins (the raw key bytes are the dict key, so most
    records are never decoded: only the survivors are).  Records of an open
    transaction are kept aside per producer and applied when its commit marker
    comes, unless a plain commit of the same key came after them.
    """

    def __init__(self) -> None:
        self._latest: dict[bytes, bytes | None] = {}
        self._pending: dict[int, dict[bytes, bytes]] = {}
        self._pending_keys: dict[bytes, set[int]] = {}
        self.records = 0

    def add_batch(self, batch: core_records.RecordBatch) -> None:
        header = batch.header
        if header.is_control:
            if header.is_transactional:
                self._complete_transaction(
                    header.producer_id, batch.control_record_type() == core_records.CONTROL_COMMIT
                )
            return
        index = batch.index()
        count = index.count
        self.records += count
        keys = [index.key(i) for i in range(count)]
        values = [index.value(i) for i in range(count)]
        if header.is_transactional:
            pending = self._pending.setdefault(header.producer_id, {})
            for key, value in zip(keys, values, strict=True):
                if key is None or value is None:
                    continue
                pending[key] = value
                self._pending_keys.setdefault(key, set()).add(header.producer_id)
            return
        if self._pending_keys:
            # A plain commit after a transactional one supersedes it (Kafka compares the
            # log positions of the two when the transaction completes).
            for key in keys:
                producers = self._pending_keys.pop(key, None) if key is not None else None
                for producer_id in producers or ():
                    self._pending.get(producer_id, {}).pop(key, None)
        self._latest.update(zip(keys, values, strict=True))

    def _complete_transaction(self, producer_id: int, committed: bool) -> None:
        pending = self._pending.pop(producer_id, None)
        if not pending:
            return
        for key in pending:
            producers = self._pending_keys.get(key)
            if producers is not None:
                producers.discard(producer_id)
                if not producers:
                    del self._pending_keys[key]
        if committed:
            self._latest.update(pending)

    def finish(self) -> LoadedPartition:
        """Decode the surviving records into groups and offsets."""
        result = LoadedPartition(records=self.records)
        offsets = result.offsets
        decode_key = _OffsetKeyDecoder()
        by_group: dict[str, dict[TopicPartition, OffsetAndMetadata]] | None = None
        for key, value in self._latest.items():
            try:
                if key is None or len(key) < 2:
                    raise ValueError("record without a key")
                version = (key[0] << 8) | key[1]
                if version in (0, 1):
                    if value is None:
                        continue
                    group, topic, partition = decode_key(key)
                    by_group = offsets.get(group)
                    if by_group is None:
                        by_group = offsets[group] = {}
                    by_group[(topic, partition)] = decode_offset_value(value)
                elif version == GROUP_KEY_VERSION:
                    _, group_key = GroupMetadataKey.decode_versioned(key)
                    group = group_key.group
                    if value is None:
                        result.removed_groups.add(group)
                    else:
                        _, decoded = GroupMetadataValue.decode_versioned(value, allow_newer=True)
                        result.groups[group] = decoded
                else:
                    result.skipped += 1  # e.g. KIP-848 consumer-group records: not ours
            except (ProtocolDecodeError, ValueError, struct.error, UnicodeDecodeError) as exc:
                result.skipped += 1
                log.warning("skipping an unreadable %s record: %s", OFFSETS_TOPIC, exc)
        for producer_id, pending in self._pending.items():
            for key, value in pending.items():
                try:
                    group, topic, partition = decode_key(key)
                    txn = result.pending_transactions.setdefault(producer_id, {})
                    txn.setdefault(group, {})[(topic, partition)] = decode_offset_value(value)
                except (ProtocolDecodeError, ValueError, struct.error, UnicodeDecodeError):
                    result.skipped += 1
        return result
