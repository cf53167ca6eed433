"""Records waiting to be sent, one open batch per partition (implemented in Cython).

See :mod:`pystream.client._accumulator` for the design: ``send()`` encodes each
record straight into its partition's open batch under a C lock; the sender
drains ready batches (full, lingered ``linger_ms``, or flushing) and builds
their header and CRC.
"""

from __future__ import annotations

from ._accumulator import (
    NEED_METADATA,
    NEED_SPACE,
    ProducerBatch,
    RecordAccumulator,
    RecordFuture,
    monotonic,
)

__all__ = [
    "NEED_METADATA",
    "NEED_SPACE",
    "ProducerBatch",
    "RecordAccumulator",
    "RecordFuture",
    "monotonic",
]
