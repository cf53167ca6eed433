"""A transactional id's state at the coordinator, and its record in ``__transaction_state``.

Kafka's ``TransactionMetadata`` and ``TransactionState``.  A transaction moves

    Empty -> Ongoing -> PrepareCommit -> CompleteCommit -> Ongoing ...
                    \\-> PrepareAbort  -> CompleteAbort  -> Ongoing ...

and a new producer instance (InitProducerId) or a timeout fences an Ongoing
transaction: PrepareEpochFence (in memory only: the epoch is bumped) then
PrepareAbort.  Every transition is first *prepared* (``pending_state`` set,
a new :class:`TxnTransit` computed), written to the log, and only then
*completed* in memory — so a request that arrives while a write is in flight
sees CONCURRENT_TRANSACTIONS, and a coordinator that restarts finds in the log
the last state it acted on (a PrepareCommit/PrepareAbort it reads back is
finished by writing the markers again: markers are idempotent).

The log record is Kafka's: key ``TransactionLogKey`` v0 (the transactional
id), value ``TransactionLogValue`` v1 (producer id and epoch, timeout, state
id, partitions, timestamps, and as tagged fields the previous producer id and —
pystream's own tag, see ``scripts/schemas/internal-records`` — the previous
epoch); a null value (tombstone) removes an expired id.  The previous (id,
epoch) is what a retried InitProducerId names when the response to its first
attempt was lost (KIP-360): kept in the log, the retry is recognised by a
coordinator that restarted or moved meanwhile, not fenced.  v0 records (older
pystream) read with no previous producer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pystream.protocol.messages.internal import TransactionLogKey, TransactionLogValue

KEY_VERSION = 0
VALUE_VERSION = 1
NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
MAX_PRODUCER_EPOCH = 2**15 - 1

TopicPartition = tuple[str, int]


class TxnState(enum.IntEnum):
    """Kafka's TransactionState; the values are the ids stored in the log."""

    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7

    @property
    def kafka_name(self) -> str:
        """The name DescribeTransactions / ListTransactions use (``PrepareCommit`` ...)."""
        return _NAMES[self]

    @classmethod
    def from_kafka_name(cls, name: str) -> TxnState | None:
        for state, kafka_name in _NAMES.items():
            if kafka_name == name:
                return state
        return None

    @property
    def is_complete(self) -> bool:
        return self in (TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)

    @property
    def is_preparing(self) -> bool:
        return self in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT)


_NAMES = {
    TxnState.EMPTY: "Empty",
    TxnState.ONGOING: "Ongoing",
    TxnState.PREPARE_COMMIT: "PrepareCommit",
    TxnState.PREPARE_ABORT: "PrepareAbort",
    TxnState.COMPLETE_COMMIT: "CompleteCommit",
    TxnState.COMPLETE_ABORT: "CompleteAbort",
    TxnState.DEAD: "Dead",
    TxnState.PREPARE_EPOCH_FENCE: "PrepareEpochFence",
}

# Which states may follow which (Kafka's TransactionState.validPreviousStates, inverted).
_VALID_NEXT: dict[TxnState, frozenset[TxnState]] = {
    TxnState.EMPTY: frozenset(
        {TxnState.EMPTY, TxnState.ONGOING, TxnState.PREPARE_EPOCH_FENCE, TxnState.DEAD}
    ),
    TxnState.ONGOING: frozenset(
        {
            TxnState.ONGOING,
            TxnState.PREPARE_COMMIT,
            TxnState.PREPARE_ABORT,
            TxnState.PREPARE_EPOCH_FENCE,
        }
    ),
    TxnState.PREPARE_COMMIT: frozenset({TxnState.COMPLETE_COMMIT}),
    TxnState.PREPARE_ABORT: frozenset({TxnState.COMPLETE_ABORT}),
    TxnState.COMPLETE_COMMIT: frozenset(
        {TxnState.EMPTY, TxnState.ONGOING, TxnState.PREPARE_EPOCH_FENCE, TxnState.DEAD}
    ),
    TxnState.COMPLETE_ABORT: frozenset(
        {TxnState.EMPTY, TxnState.ONGOING, TxnState.PREPARE_EPOCH_FENCE, TxnState.DEAD}
    ),
    TxnState.PREPARE_EPOCH_FENCE: frozenset({TxnState.PREPARE_ABORT}),
    TxnState.DEAD: frozenset(),
}


@dataclass(frozen=True, slots=True)
class TxnTransit:
    """The state a transition leads to: what is written to the log, then applied."""

    producer_id: int
    last_producer_id: int
    producer_epoch: int
    last_producer_epoch: int
    txn_timeout_ms: int
    state: TxnState
    partitions: frozenset[TopicPartition]
    txn_start_timestamp: int
    txn_last_update_timestamp: int


@dataclass
class TransactionMetadata:
    """One transactional id at its coordinator."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    txn_timeout_ms: int
    state: TxnState = TxnState.EMPTY
    partitions: set[TopicPartition] = field(default_factory=set)
    txn_start_timestamp: int = -1
    txn_last_update_timestamp: int = -1
    # The producer id/epoch before the last bump, so a retried InitProducerId is recognised.
    last_producer_id: int = NO_PRODUCER_ID
    last_producer_epoch: int = NO_PRODUCER_EPOCH
    # Set while a transition is being written; requests meanwhile get CONCURRENT_TRANSACTIONS.
    pending_state: TxnState | None = None

    @property
    def is_epoch_exhausted(self) -> bool:
        return self.producer_epoch >= MAX_PRODUCER_EPOCH - 1

    def transit(
        self,
        state: TxnState,
        now_ms: int,
        *,
        producer_id: int | None = None,
        producer_epoch: int | None = None,
        last_producer_id: int | None = None,
        last_producer_epoch: int | None = None,
        txn_timeout_ms: int | None = None,
        partitions: frozenset[TopicPartition] | None = None,
        txn_start_timestamp: int | None = None,
    ) -> TxnTransit:
        """Prepare a transition to ``state`` (sets ``pending_state``); ValueError if illegal."""
        pending = self.pending_state
        if pending is not None and pending is not TxnState.PREPARE_EPOCH_FENCE:
            raise ValueError(
                f"{self.transactional_id}: a transition to {self.pending_state.kafka_name} is "
                "already in flight"
            )
        current = self.pending_state or self.state
        if state not in _VALID_NEXT[current]:
            raise ValueError(
                f"{self.transactional_id}: {current.kafka_name} -> {state.kafka_name} is not a "
                "valid transaction state change"
            )
        new_producer_id = self.producer_id if producer_id is None else producer_id
        if last_producer_id is None:
            last_producer_id = (
                self.producer_id if new_producer_id != self.producer_id else self.last_producer_id
            )
        transit = TxnTransit(
            producer_id=new_producer_id,
            last_producer_id=last_producer_id,
            producer_epoch=self.producer_epoch if producer_epoch is None else producer_epoch,
            last_producer_epoch=(
                self.last_producer_epoch if last_producer_epoch is None else last_producer_epoch
            ),
            txn_timeout_ms=self.txn_timeout_ms if txn_timeout_ms is None else txn_timeout_ms,
            state=state,
            partitions=frozenset(self.partitions) if partitions is None else partitions,
            txn_start_timestamp=(
                self.txn_start_timestamp if txn_start_timestamp is None else txn_start_timestamp
            ),
            txn_last_update_timestamp=now_ms,
        )
        self.pending_state = state
        return transit

    def complete(self, transit: TxnTransit) -> None:
        """The transit is in the log: make it the state."""
        self.producer_id = transit.producer_id
        self.last_producer_id = transit.last_producer_id
        self.producer_epoch = transit.producer_epoch
        self.last_producer_epoch = transit.last_producer_epoch
        self.txn_timeout_ms = transit.txn_timeout_ms
        self.state = transit.state
        self.partitions = set(transit.partitions)
        self.txn_start_timestamp = transit.txn_start_timestamp
        self.txn_last_update_timestamp = transit.txn_last_update_timestamp
        self.pending_state = None

    def abandon(self) -> None:
        """The write failed: stay in the current state."""
        self.pending_state = None


# --- the log record ---------------------------------------------------------------------------


def encode_key(transactional_id: str) -> bytes:
    return TransactionLogKey(transactional_id=transactional_id).encode_versioned(KEY_VERSION)


def encode_value(transit: TxnTransit) -> bytes:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(transit.partitions):
        by_topic.setdefault(topic, []).append(partition)
    value = TransactionLogValue(
        producer_id=transit.producer_id,
        previous_producer_id=transit.last_producer_id,
        previous_producer_epoch=transit.last_producer_epoch,
        producer_epoch=transit.producer_epoch,
        transaction_timeout_ms=transit.txn_timeout_ms,
        transaction_status=int(transit.state),
        # Kafka writes no partitions for Empty and the Complete states.
        transaction_partitions=(
            None
            if transit.state.is_complete
            else [
                TransactionLogValue.PartitionsSchema(topic=topic, partition_ids=ids)
                for topic, ids in by_topic.items()
            ]
        ),
        transaction_last_update_timestamp_ms=transit.txn_last_update_timestamp,
        transaction_start_timestamp_ms=transit.txn_start_timestamp,
    )
    return value.encode_versioned(VALUE_VERSION)


def decode_key(data: bytes | memoryview) -> str | None:
    """The transactional id of a record key; None for a key version this broker cannot read."""
    version, key = TransactionLogKey.decode_versioned(data, allow_newer=True)
    return key.transactional_id if version == KEY_VERSION else None


def decode_value(transactional_id: str, data: bytes | memoryview) -> TransactionMetadata:
    _, value = TransactionLogValue.decode_versioned(data, allow_newer=True)
    partitions = {
        (p.topic, partition)
        for p in value.transaction_partitions or ()
        for partition in p.partition_ids
    }
    return TransactionMetadata(
        transactional_id=transactional_id,
        producer_id=value.producer_id,
        producer_epoch=value.producer_epoch,
        txn_timeout_ms=value.transaction_timeout_ms,
        state=TxnState(value.transaction_status),
        partitions=partitions,
        txn_start_timestamp=value.transaction_start_timestamp_ms,
        txn_last_update_timestamp=value.transaction_last_update_timestamp_ms,
        last_producer_id=value.previous_producer_id,
        last_producer_epoch=value.previous_producer_epoch,
    )
