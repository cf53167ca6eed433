"""Fetch response encoder: chunks with file regions for record sets (see fetch_response.pyx)."""

from typing import Any

from pystream.broker.network import Chunk

SENDFILE_MIN_BYTES: int

def encode_fetch_response(
    plan: Any,
    version: int,
    correlation_id: int,
    sendfile: bool = False,
    sendfile_min_bytes: int | None = None,
) -> list[Chunk]: ...
