"""Kafka framing: every request and response is ``int32 size`` + ``size`` bytes.

The size is checked against a maximum (Kafka's ``socket.request.max.bytes``)
as soon as its 4 bytes arrive, before any buffer for the body is allocated.
A negative size or one over the limit raises :class:`ProtocolDecodeError`;
the connection must then be closed (the stream cannot be resynchronised).
"""

from __future__ import annotations

import struct

from .codec import ProtocolDecodeError, Writer

__all__ = ["DEFAULT_MAX_FRAME_SIZE", "FrameDecoder", "begin_frame", "end_frame", "frame_size"]

DEFAULT_MAX_FRAME_SIZE = 104_857_600
"""Kafka's default ``socket.request.max.bytes`` (100 MiB)."""

_SIZE = struct.Struct(">i")
_HTTP_METHODS = (b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN")


def _hint(prefix: bytes) -> str:
    """Common non-Kafka traffic on a Kafka port, named in the error."""
    if prefix[:2] == b"\x16\x03":
        return " (looks like a TLS handshake: a TLS client on a plaintext listener?)"
    if prefix in _HTTP_METHODS:
        return " (looks like an HTTP request)"
    return ""


def frame_size(
    prefix: bytes | bytearray | memoryview, max_size: int = DEFAULT_MAX_FRAME_SIZE
) -> int:
    """The body size announced by a 4-byte frame prefix, validated against ``max_size``."""
    if len(prefix) != 4:
        raise ProtocolDecodeError(f"frame size prefix must be 4 bytes, got {len(prefix)}")
    size = _SIZE.unpack(prefix)[0]
    if size < 0:
        raise ProtocolDecodeError(f"invalid frame size {size}{_hint(bytes(prefix))}")
    if size > max_size:
        raise ProtocolDecodeError(
            f"frame size {size} exceeds the maximum {max_size}{_hint(bytes(prefix))}"
        )
    return size


class FrameDecoder:
    """Split a byte stream into frames: ``feed()`` what arrives, get complete frame bodies.

    Each frame body is returned as its own ``bytes`` object, so decoded
    messages may keep zero-copy slices (record sets) of it.
    """

    __slots__ = ("max_size", "_buf")

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add received bytes; return every frame body now complete, in order."""
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        with memoryview(buf) as view:
            while len(buf) - pos >= 4:
                size = frame_size(view[pos : pos + 4], self.max_size)
                if len(buf) - pos - 4 < size:
                    break
                frames.append(bytes(view[pos + 4 : pos + 4 + size]))
                pos += 4 + size
        if pos:
            del buf[:pos]
        return frames


def begin_frame() -> Writer:
    """A writer with 4 bytes reserved for the frame size (filled by :func:`end_frame`)."""
    return Writer(4)


def end_frame(writer: Writer) -> bytes:
    """Patch the size into a writer from :func:`begin_frame` and return the frame."""
    _SIZE.pack_into(writer, 0, len(writer) - 4)
    return bytes(writer)
