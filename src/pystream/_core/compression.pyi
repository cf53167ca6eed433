"""Record-batch compression codecs by Kafka codec id (see compression.pyx)."""

from typing import Final, TypeAlias

# Any C-contiguous buffer of bytes works (read-only ones too).
Buffer: TypeAlias = bytes | bytearray | memoryview

NONE: Final = 0
GZIP: Final = 1
SNAPPY: Final = 2
LZ4: Final = 3
ZSTD: Final = 4

def codec_name(codec: int) -> str:
    """Kafka's name for a codec id; UnsupportedCompressionTypeError if unknown."""

def codec_from_name(name: str) -> int:
    """Codec id for none/uncompressed, gzip, snappy, lz4, zstd (any case)."""

def compress(codec: int, data: Buffer, level: int | None = None) -> bytes:
    """Compress for a batch with `codec`; `level` None = library default."""

def decompress(codec: int, data: Buffer, max_size: int = 0) -> bytes:
    """Decompress a batch's records; max_size > 0 caps the output."""
