"""Contract of pystream._core.offset_map (implemented in offset_map.pyx).

The log cleaner's hot loops: a compact key -> offset table (Kafka's
SkimpyOffsetMap, 24 bytes a key: a 128-bit MurmurHash3 digest and the
offset), and the per-batch record filter and batch writer.  The
per-record loops release the GIL and create no Python objects.
"""

from typing import Final, TypeAlias

Buffer: TypeAlias = bytes | bytearray | memoryview

SLOT_SIZE: Final[int]  # bytes a key takes in the map

def murmur3_hash128(data: Buffer, seed: int = 0) -> tuple[int, int]: ...

class OffsetMap:
    """Key -> latest offset in at most ``memory`` bytes; one per cleaner thread."""

    memory: int
    load_factor: float
    def __init__(self, memory: int, load_factor: float = 0.9) -> None: ...
    # ValueError if memory < 2 slots or load_factor outside (0, 1]
    def reset(self, expected_keys: int = -1) -> None: ...
    # empty it; expected_keys >= 0 sizes the table for that many keys to start with; it grows
    # (rehashing) up to the budget as more keys come
    def put(self, key: Buffer, offset: int) -> bool: ...  # False: full (a new key did not fit)
    def get(self, key: Buffer) -> int: ...  # -1 if absent
    def __len__(self) -> int: ...
    @property
    def slots(self) -> int: ...
    @property
    def max_entries(self) -> int: ...  # slots * load_factor (at most slots - 1)
    @property
    def is_full(self) -> bool: ...
    @property
    def utilization(self) -> float: ...
    @property
    def allocated_bytes(self) -> int: ...
    @property
    def average_probes(self) -> float: ...
    @property
    def latest_offset(self) -> int: ...
    @latest_offset.setter
    def latest_offset(self, offset: int) -> None: ...
    def put_records(
        self,
        data: Buffer,
        start: int,
        end: int,
        count: int,
        base_offset: int,
        min_offset: int,
    ) -> int: ...
    # map build over one batch's records section data[start:end]: -1 if every keyed record
    # at/after min_offset went in, else the offset of the first that did not fit (map full)

def filter_records(
    offset_map: OffsetMap,
    data: Buffer,
    start: int,
    end: int,
    count: int,
    base_offset: int,
    base_timestamp: int,
    new_base_timestamp: int,
    retain_tombstones: bool,
    out: bytearray,
) -> tuple[int, int, int]: ...

# appends the kept records' bytes to out (timestamp deltas re-encoded against
# new_base_timestamp if it differs); returns (kept, kept tombstones, max CreateTime of kept)

def write_batch(
    out: bytearray,
    header: Buffer,
    payload: Buffer,
    attributes: int,
    base_timestamp: int,
    max_timestamp: int,
    record_count: int,
) -> int: ...

# appends header (first 61 bytes of the original batch, fields overridden) + payload with
# a fresh CRC; returns the batch size
