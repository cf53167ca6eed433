"""CRC-32C (Castagnoli), hardware-accelerated where the CPU allows (see crc32c.pyx)."""

from typing import TypeAlias

# Any C-contiguous buffer of bytes works (read-only ones too).
Buffer: TypeAlias = bytes | bytearray | memoryview

def crc32c(data: Buffer, crc: int = 0) -> int: ...
def crc32c_table(data: Buffer, crc: int = 0) -> int: ...
def has_hardware_crc() -> bool: ...
