"""Shared helpers for the storage tests: batches built by kafka-python (an independent
implementation of the v2 format) and readers that decode what a Log returns."""

from __future__ import annotations

import os

from kafka.record.default_records import DefaultRecordBatchBuilder

from pystream._core import records as core_records
from pystream.storage.log import Log


def make_batch(
    count: int = 1,
    *,
    timestamp: int = 1_000,
    value_size: int = 10,
    base_offset: int = 0,
    compression: int = 0,
    tag: int = 0,
    producer_id: int = -1,
) -> bytearray:
    """One v2 batch of ``count`` records, values ``b"<tag>-<i>"`` padded to ``value_size``,
    timestamps ``timestamp + i`` (all -1, "no timestamp", when ``timestamp`` is -1)."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=False,
        producer_id=producer_id,
        producer_epoch=0 if producer_id >= 0 else -1,
        base_sequence=0 if producer_id >= 0 else -1,
        batch_size=1 << 30,
    )
    for i in range(count):
        value = f"{tag}-{i}".encode().ljust(value_size, b".")
        ts = timestamp + i if timestamp >= 0 else timestamp
        builder.append(i, timestamp=ts, key=None, value=value, headers=[])
    data = bytearray(builder.build())
    if base_offset:
        data[0:8] = base_offset.to_bytes(8, "big")
    return data


def read_all(log: Log, start: int | None = None) -> list[tuple[int, bytes]]:
    """Every (offset, value) from ``start`` (default: log start) to the LEO, via Log.read."""
    out: list[tuple[int, bytes]] = []
    offset = log.log_start_offset if start is None else start
    while offset < log.log_end_offset:
        fetched = log.read(offset, 1 << 20)
        if fetched.records is None:
            break
        data = bytes(fetched.view())
        for batch in core_records.iter_batches(data):
            for record in batch:
                if record.offset >= offset:
                    out.append((record.offset, record.value))
            offset = batch.header.last_offset + 1
    return out


def read_via_fd(log: Log, offset: int, max_bytes: int) -> bytes:
    """What a sendfile of Log.read's FileRange would send."""
    fetched = log.read(offset, max_bytes)
    if fetched.records is None:
        return b""
    records = fetched.records
    return os.pread(records.fd, records.length, records.position)


def segment_files(directory: str) -> list[str]:
    """Segment-related file names in a partition directory, sorted (producer-state
    ``.snapshot`` and ``.txnindex`` files are not counted)."""
    return sorted(
        n
        for n in os.listdir(directory)
        if n[:20].isdigit() and not n.endswith((".snapshot", ".txnindex"))
    )
