"""Fast codecs of the produce hot path (see fast_produce.pyx); registered on import.

RequestHeader v1/v2 reader, ProduceRequest v3..v10 reader, ProduceResponse
v3..v10 writer.  The generated ones they replace are kept below (the oracles).
"""

from collections.abc import Callable
from typing import Any

from pystream.protocol.codec import Reader, Writer
from pystream.protocol.messages.produce import ProduceRequest

FAST_VERSIONS: range
GENERATED_READERS: dict[int, Callable[[Reader], Any]]
GENERATED_WRITERS: dict[int, Callable[[Writer, Any], None]]
GENERATED_HEADER_READERS: dict[int, Callable[[Reader], Any]]

def read_produce_request(reader: Reader, version: int) -> ProduceRequest: ...
