"""Contract of pystream.client._fast (see _fast.pyx): client hot paths in C."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Buffer = bytes | bytearray | memoryview

def murmur2(data: Buffer) -> int: ...  # Kafka's Utils.murmur2 (signed 32-bit)
def partition_for_key(key: Buffer, num_partitions: int) -> int: ...
def partitions_for_keys(keys: list[bytes | None], num_partitions: int) -> npt.NDArray[np.int32]: ...
def partitions_for_fixed_keys(
    key_data: Buffer | np.ndarray, key_size: int, count: int, num_partitions: int
) -> npt.NDArray[np.int32]: ...
def record_overhead(key_length: int, value_length: int) -> int: ...
def chunk_bounds(
    values: list[bytes | None], keys: list[bytes | None] | None, max_bytes: int
) -> list[int]: ...
def build_fixed_batch(
    data: Buffer | np.ndarray,
    record_size: int,
    start: int,
    count: int,
    rows: npt.NDArray[np.int64] | None = None,
    timestamp: int | None = None,
    *,
    key_data: Buffer | np.ndarray | None = None,
    key_size: int = -1,
    compression: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    is_transactional: bool = False,
) -> bytes: ...
def take(items: list, index: npt.NDArray[np.int64], start: int, stop: int) -> list: ...

class ConsumerRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int  # 0 CreateTime, 1 LogAppendTime
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]  # () when there are none
    leader_epoch: int
    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp: int,
        key: object,
        value: object,
        headers: Sequence[tuple[str, bytes | None]] = (),
        timestamp_type: int = 0,
        leader_epoch: int = -1,
    ) -> None: ...

def decode_records(
    buf: Buffer,
    topic: str,
    partition: int,
    fetch_offset: int,
    *,
    check_crc: bool = True,
    aborted: list[tuple[int, int]] | None = None,
    max_decompressed_size: int = 0,
) -> tuple[list[ConsumerRecord], int, int]: ...  # records, next offset, whole batches read

# One Fetch partition: (topic name, or 16-byte topic id from v13, partition index, error
# code, high watermark, last stable offset, log start offset, whole batches as a view of
# the frame or None, bytes of a batch cut off after them).
FetchPartitionData = tuple[str | bytes, int, int, int, int, int, memoryview | None, int]

def decode_fetch_response(
    data: Buffer, version: int
) -> tuple[int, int, list[FetchPartitionData]]: ...  # (error code, session id, partitions)
