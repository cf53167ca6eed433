"""What a consumer reads: subscribed topics or assigned partitions, and where it is in each.

Per assigned partition two offsets matter (as in the Java consumer):

* ``position`` -- the next offset ``poll()`` will return (what ``commit()``
  commits and ``position()`` reports);
* ``fetch_offset`` -- the next offset to *fetch*; it runs ahead of the
  position while fetched records wait in the buffer (prefetch).

``seek()`` sets both and bumps ``epoch``, so fetch responses and buffered
records from before the seek are recognised and dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .types import TopicPartition

__all__ = ["OffsetResetStrategy", "PartitionState", "SubscriptionState"]


class OffsetResetStrategy:
    EARLIEST = -2  # ListOffsets timestamp for the log start
    LATEST = -1  # ListOffsets timestamp for the end (high watermark / LSO)
    NONE = 0

    @staticmethod
    def parse(value: str) -> int:
        try:
            return {
                "earliest": -2,
                "smallest": -2,
                "beginning": -2,
                "latest": -1,
                "largest": -1,
                "end": -1,
                "none": 0,
                "error": 0,
            }[value.lower()]
        except KeyError:
            raise ValueError(
                f"auto_offset_reset must be 'earliest', 'latest' or 'none', got {value!r}"
            ) from None


class PartitionState:
    """One assigned partition's consumption state."""

    __slots__ = (
        "position",
        "fetch_offset",
        "epoch",
        "paused",
        "reset_to",
        "awaiting_position",
        "high_watermark",
        "last_stable_offset",
        "log_start_offset",
        "buffered_bytes",
        "max_bytes_boost",
    )

    def __init__(self) -> None:
        self.position: int | None = None
        self.fetch_offset: int | None = None
        self.epoch = 0
        self.paused = False
        self.reset_to: int | None = None  # pending reset: EARLIEST/LATEST timestamp
        self.awaiting_position = False  # a committed-offset lookup / reset is running
        self.high_watermark = -1
        self.last_stable_offset = -1
        self.log_start_offset = -1
        self.buffered_bytes = 0
        self.max_bytes_boost = 1  # grows when one batch is larger than the fetch size

    def seek(self, offset: int) -> None:
        self.position = self.fetch_offset = offset
        self.epoch += 1
        self.reset_to = None
        self.awaiting_position = False
        self.buffered_bytes = 0

    @property
    def fetchable(self) -> bool:
        return not self.paused and self.fetch_offset is not None and self.reset_to is None

    @property
    def lag(self) -> int | None:
        if self.position is None or self.high_watermark < 0:
            return None
        return max(self.high_watermark - self.position, 0)


class SubscriptionState:
    """Subscribed topics (group or auto-assign) or a manual assignment, and per-partition state."""

    def __init__(self, auto_offset_reset: str) -> None:
        self.default_reset = OffsetResetStrategy.parse(auto_offset_reset)
        self.topics: set[str] = set()
        self.manual = False
        self.assignment: dict[TopicPartition, PartitionState] = {}
        self.version = 0  # bumped whenever the assignment changes
        self.listeners: list[Callable[[], None]] = []  # told about assignment changes

    def subscribe(self, topics: Iterable[str]) -> None:
        topics = set(topics)
        if self.manual and self.assignment:
            raise ValueError("subscribe() after assign(): call unsubscribe() first")
        self.manual = False
        self.topics = topics

    def assign_manually(self, partitions: Iterable[TopicPartition]) -> None:
        if self.topics:
            raise ValueError("assign() after subscribe(): call unsubscribe() first")
        self.manual = True
        self.set_assignment(partitions)

    def set_assignment(self, partitions: Iterable[TopicPartition]) -> None:
        """Keep the state of partitions that stay, start fresh ones without a position."""
        wanted = [TopicPartition(*tp) for tp in partitions]
        old = self.assignment
        self.assignment = {tp: old.get(tp) or PartitionState() for tp in wanted}
        self.version += 1
        for listener in self.listeners:
            listener()

    def unsubscribe(self) -> None:
        self.topics = set()
        self.manual = False
        self.assignment = {}
        self.version += 1
        for listener in self.listeners:
            listener()

    def state(self, tp: TopicPartition | tuple[str, int]) -> PartitionState:
        st = self.assignment.get(TopicPartition(*tp))
        if st is None:
            raise ValueError(f"partition {tp[0]}-{tp[1]} is not assigned to this consumer")
        return st

    def positions(self) -> dict[TopicPartition, int]:
        """Current positions of partitions that have one (what commit() commits)."""
        return {tp: st.position for tp, st in self.assignment.items() if st.position is not None}

    def needing_position(self) -> list[TopicPartition]:
        return [
            tp
            for tp, st in self.assignment.items()
            if st.position is None and st.reset_to is None and not st.awaiting_position
        ]

    def needing_reset(self) -> list[TopicPartition]:
        return [
            tp
            for tp, st in self.assignment.items()
            if st.reset_to is not None and not st.awaiting_position
        ]
