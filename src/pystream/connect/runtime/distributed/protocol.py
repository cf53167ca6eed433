"""Kafka's ``ConnectProtocol`` version 0 (the eager protocol ``default``): a worker's
JoinGroup metadata and the leader's SyncGroup assignments, in Kafka's layout so that
Kafka's tooling can read them, and the eager round-robin assignment.

Metadata: ``version int16 (0) | url string | config_offset int64``.
Assignment: ``version int16 (0) | error int16 | leader string | leader_url string |
config_offset int64 | [connector string, [task int32]]`` where task ``-1`` stands for
the connector itself.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..states import TaskId

__all__ = [
    "PROTOCOL",
    "Assignment",
    "WorkerMetadata",
    "decode_assignment",
    "decode_metadata",
    "encode_assignment",
    "encode_metadata",
    "round_robin",
]

PROTOCOL = "default"
CONNECTOR_TASK = -1
NO_ERROR = 0
CONFIG_MISMATCH = 1


@dataclass(frozen=True)
class WorkerMetadata:
    url: str
    config_offset: int


@dataclass
class Assignment:
    leader: str
    leader_url: str
    config_offset: int
    connectors: list[str] = field(default_factory=list)
    tasks: list[TaskId] = field(default_factory=list)
    error: int = NO_ERROR


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.at = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str:
        size = self.take(">h")
        text = self.data[self.at : self.at + size].decode()
        self.at += size
        return text


def encode_metadata(meta: WorkerMetadata) -> bytes:
    return struct.pack(">h", 0) + _string(meta.url) + struct.pack(">q", meta.config_offset)


def decode_metadata(data: bytes) -> WorkerMetadata:
    reader = _Reader(data)
    reader.take(">h")  # later versions only add fields after these
    return WorkerMetadata(reader.string(), reader.take(">q"))


def encode_assignment(assignment: Assignment) -> bytes:
    by_connector: dict[str, list[int]] = {}
    for name in assignment.connectors:
        by_connector.setdefault(name, []).append(CONNECTOR_TASK)
    for task in assignment.tasks:
        by_connector.setdefault(task.connector, []).append(task.task)
    out = [
        struct.pack(">hh", 0, assignment.error),
        _string(assignment.leader),
        _string(assignment.leader_url),
        struct.pack(">qi", assignment.config_offset, len(by_connector)),
    ]
    for name, tasks in by_connector.items():
        out.append(_string(name))
        out.append(struct.pack(f">i{len(tasks)}i", len(tasks), *tasks))
    return b"".join(out)


def decode_assignment(data: bytes) -> Assignment:
    reader = _Reader(data)
    reader.take(">h")
    error = reader.take(">h")
    assignment = Assignment(reader.string(), reader.string(), reader.take(">q"), error=error)
    for _ in range(reader.take(">i")):
        name = reader.string()
        for _ in range(reader.take(">i")):
            index = reader.take(">i")
            if index == CONNECTOR_TASK:
                assignment.connectors.append(name)
            else:
                assignment.tasks.append(TaskId(name, index))
    return assignment


def round_robin(
    members: Iterable[str], connectors: Iterable[str], tasks: Iterable[TaskId]
) -> dict[str, tuple[list[str], list[TaskId]]]:
    """Kafka's eager assignment: connectors, then tasks, dealt in turn to the members
    sorted by id, one circular walk for both (so two connectors with one task each
    land on two workers)."""
    order = sorted(members)
    out: dict[str, tuple[list[str], list[TaskId]]] = {m: ([], []) for m in order}
    turn = 0
    for name in sorted(connectors):
        out[order[turn % len(order)]][0].append(name)
        turn += 1
    for task in sorted(tasks):
        out[order[turn % len(order)]][1].append(task)
        turn += 1
    return out
