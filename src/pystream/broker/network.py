"""Kafka connections on asyncio: framing, in-order processing, zero-copy writes.

One :class:`KafkaConnection` (an ``asyncio.Protocol``) per client socket.  It
cuts the byte stream into size-prefixed frames, refuses a frame larger than
``socket.request.max.bytes`` before reading it into memory, and hands frames
one at a time to the request handler — Kafka answers a connection's requests
in order, so one in flight per connection keeps that trivially true.

A handler's response is a list of chunks: ``bytes``/``memoryview`` are written
through the transport; a ``(fd, position, length)`` file range goes out with
``os.sendfile`` straight from the page cache once the transport's buffer is
empty (zero copy on plaintext sockets).
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple, Protocol

from pystream.protocol.framing import _hint as _traffic_hint

log = logging.getLogger(__name__)

_SIZE = struct.Struct(">i")
# Frames waiting for the handler before we stop reading from the socket.
_MAX_QUEUED_FRAMES = 64


class FileChunk(NamedTuple):
    """Bytes [position, position+length) of an open file, sent with sendfile."""

    fd: int
    position: int
    length: int


Chunk = bytes | bytearray | memoryview | FileChunk


class ConnectionClosed(Exception):
    """Raised inside a handler's write when the peer went away."""


class RequestHandler(Protocol):
    def __call__(
        self, frame: bytearray, connection: KafkaConnection
    ) -> Awaitable[Sequence[Chunk] | None]: ...


class KafkaConnection(asyncio.Protocol):
    """One client connection: framing, ordered dispatch, backpressure."""

    def __init__(
        self,
        handler: RequestHandler,
        max_request_size: int,
        listener_name: str = "PLAINTEXT",
        on_close: Callable[[KafkaConnection], None] | None = None,
    ) -> None:
        self._handler = handler
        self._max_request_size = max_request_size
        self.listener_name = listener_name
        self._on_close = on_close
        self._buffer = bytearray()
        self._frames: deque[bytearray] = deque()
        self._frame_ready = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._reading_paused = False
        self._closed = False
        self._worker: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.peer: str = "?"
        self.supports_sendfile = False
        # Per-connection state handlers may keep (SASL, client id, ...).
        self.state: dict[str, object] = {}

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        sock = transport.get_extra_info("socket")
        # sendfile needs the raw socket: plaintext only (TLS transports have no usable fd).
        self.supports_sendfile = sock is not None and transport.get_extra_info("sslcontext") is None
        self._worker = asyncio.get_running_loop().create_task(self._process_frames())

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 4:
            (size,) = _SIZE.unpack_from(buffer)
            if size < 0 or size > self._max_request_size:
                self.close(
                    f"frame of {size} bytes is outside 0..socket.request.max.bytes "
                    f"({self._max_request_size}){_traffic_hint(bytes(buffer[:4]))}"
                )
                return
            if len(buffer) < 4 + size:
                break
            # A private, writable copy: the produce path patches offsets in place.
            with memoryview(buffer) as view:
                self._frames.append(bytearray(view[4 : 4 + size]))
            del buffer[: 4 + size]
        if self._frames:
            self._frame_ready.set()
            if len(self._frames) >= _MAX_QUEUED_FRAMES and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._writable.set()
        self._frame_ready.set()
        if self._worker is not None:
            self._worker.cancel()
        if self._on_close is not None:
            self._on_close(self)

    # -- processing -------------------------------------------------------
    async def _process_frames(self) -> None:
        try:
            while not self._closed:
                if not self._frames:
                    self._frame_ready.clear()
                    await self._frame_ready.wait()
                    continue
                frame = self._frames.popleft()
                if self._reading_paused and len(self._frames) < _MAX_QUEUED_FRAMES // 2:
                    self._reading_paused = False
                    self.transport.resume_reading()  # type: ignore[union-attr]
                chunks = await self._handler(frame, self)
                if chunks:
                    await self.write(chunks)
        except asyncio.CancelledError:
            pass
        except ConnectionClosed:
            pass
        except Exception as exc:  # a handler bug must cost one connection, not the broker
            log.exception("closing connection from %s after an internal error", self.peer)
            self.close(f"internal error: {exc!r}")

    async def write(self, chunks: Sequence[Chunk]) -> None:
        """Write one response: the size prefix is the caller's (part of chunks)."""
        transport = self.transport
        if transport is None or self._closed:
            raise ConnectionClosed
        for chunk in chunks:
            if isinstance(chunk, FileChunk):
                if self.supports_sendfile:
                    await self._sendfile(chunk)
                else:
                    transport.write(os.pread(chunk.fd, chunk.length, chunk.position))
            else:
                transport.write(chunk)
        if not self._writable.is_set():
            await self._writable.wait()
            if self._closed:
                raise ConnectionClosed

    async def _drain_completely(self) -> None:
        """Wait until the transport has handed every buffered byte to the kernel."""
        transport = self.transport
        assert transport is not None
        if transport.get_write_buffer_size() == 0:
            return
        high, low = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=0, low=0)  # pause now, resume at empty
        try:
            await self._writable.wait()
        finally:
            transport.set_write_buffer_limits(high=high, low=low)
        if self._closed:
            raise ConnectionClosed

    async def _sendfile(self, chunk: FileChunk) -> None:
        await self._drain_completely()
        sock_fd = self.transport.get_extra_info("socket").fileno()  # type: ignore[union-attr]
        position, remaining = chunk.position, chunk.length
        while remaining > 0:
            try:
                # Straight away while the socket has room (no loop round trip) ...
                sent = os.sendfile(sock_fd, chunk.fd, position, remaining)
            except BlockingIOError:
                # ... then through the loop, which waits for writability on the
                # transport's behalf (loop.add_writer refuses a transport's fd).
                sent = await self._sendfile_when_writable(chunk.fd, position, remaining)
            except OSError as exc:
                self.close(f"sendfile failed: {exc}")
                raise ConnectionClosed from exc
            if sent == 0:
                # The file shrank under us (truncation): the response is now short.
                self.close("log truncated while sending a fetch response")
                raise ConnectionClosed
            position += sent
            remaining -= sent

    async def _sendfile_when_writable(self, fd: int, position: int, count: int) -> int:
        """``loop.sendfile`` of a file region; returns the bytes sent (fewer at EOF)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.sendfile(
                self.transport,  # type: ignore[arg-type]
                _FileDescriptor(fd),  # type: ignore[arg-type]
                position,
                count,
                fallback=False,
            )
        except (OSError, RuntimeError) as exc:  # peer gone, transport closing
            self.close(f"sendfile failed: {exc}")
            raise ConnectionClosed from exc

    def close(self, reason: str | None = None) -> None:
        """Close this connection (only this one), logging why."""
        if reason:
            log.warning("closing connection from %s: %s", self.peer, reason)
        self._closed = True
        if self.transport is not None:
            self.transport.close()


class _FileDescriptor:
    """The file object ``loop.sendfile`` wants, for an fd it must not close."""

    __slots__ = ("_fd",)
    mode = "rb"

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd
