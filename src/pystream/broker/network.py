"""Kafka connections on asyncio: framing, in-order processing, zero-copy writes.

One :class:`KafkaConnection` (an ``asyncio.BufferedProtocol``: the transport
receives straight into our buffers) per client socket.  It cuts the byte
stream into size-prefixed frames, refuses a frame larger than
``socket.request.max.bytes`` before reading it into memory, and hands frames
one at a time to the request handler — Kafka answers a connection's requests
in order, so one in flight per connection keeps that trivially true.

One exception, for throughput: a handler may answer with a
:class:`DeferredResponse` once its in-order part is done (a Produce's appends)
while the rest waits on other parties (``acks=all``: the followers' next
fetches).  The following Produce requests of the connection are then appended
meanwhile, and a writer sends the responses strictly in request order; any
other request waits until every earlier response is written, as in Kafka.
Without this an ``acks=all`` producer gets one batch replicated per round trip
to the followers, however many requests it pipelines.

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

from pystream._core.frame_writer import receive_buffer
from pystream.errors import InvalidConfigError
from pystream.protocol.framing import _hint as _traffic_hint
from pystream.security.principal import ANONYMOUS, KafkaPrincipal
from pystream.security.sasl import SASL_PROTOCOLS, SaslSession
from pystream.security.ssl import SslPrincipalMapper, peer_principal

log = logging.getLogger(__name__)

_SIZE = struct.Struct(">i")
# Frames waiting for the handler before we stop reading from the socket.
_MAX_QUEUED_FRAMES = 64
# Receive buffer; larger frames get their own buffer and are received in place.
_SCRATCH_SIZE = 256 * 1024
# Scratch buffers are borrowed while a connection has unparsed bytes and returned when
# it has none, so idle connections hold no buffer and busy ones allocate none.
_SCRATCH_POOL: list[tuple[bytearray, memoryview]] = []
_SCRATCH_POOL_MAX = 32
# Held-back responses are written once they reach this size, queue or not.
_COALESCE_MAX_BYTES = 256 * 1024
_PRODUCE = b"\x00\x00"
# A file region sent through the transport (no loop.sendfile) is read this much at a time.
_COPY_PIECE = 1024 * 1024


class FileChunk(NamedTuple):
    """Bytes [position, position+length) of an open file, sent with sendfile.

    ``file`` (a segment's :class:`~pystream._core.segment.FileHandle`) owns ``fd``: the
    chunk's reference keeps it open until the chunk is sent, also if the segment is
    deleted meanwhile (a slow consumer must not read a closed or reused descriptor).
    """

    fd: int
    position: int
    length: int
    file: object = None


Chunk = bytes | bytearray | memoryview | FileChunk


class ConnectionClosed(Exception):
    """Raised inside a handler's write when the peer went away."""


class DeferredResponse:
    """A response still to come: the handler did its in-order work and ``awaitable``
    gives the chunks later (see the module docstring).  Only Produce defers."""

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[Sequence[Chunk] | None]) -> None:
        self.awaitable = awaitable


class RequestHandler(Protocol):
    def __call__(
        self, frame: bytearray, connection: KafkaConnection
    ) -> Awaitable[Sequence[Chunk] | DeferredResponse | None]: ...


class KafkaConnection(asyncio.BufferedProtocol):
    """One client connection: framing, ordered dispatch, backpressure.

    An idle connection holds no buffer, task, event or future (the broker may hold
    tens of thousands): the receive buffer is borrowed from a pool while bytes are
    unparsed, the task that runs the handler exists while frames wait for it, and a
    future exists only while a write waits for the transport to drain.
    """

    __slots__ = (
        "_handler",
        "security_protocol",
        "_max_request_size",
        "listener_name",
        "_on_close",
        "_on_open",
        "_principal_mapper",
        "_scratch",
        "_scratch_view",
        "_start",
        "_end",
        "_large",
        "_large_view",
        "_large_filled",
        "_frames",
        "_write_paused",
        "_drained",
        "_reading_paused",
        "_closed",
        "_worker",
        "transport",
        "peer",
        "peer_host",
        "supports_sendfile",
        "sends_views",
        "_pending",
        "_pending_bytes",
        "_state",
        "principal",
        "sasl",
        "quota_host",
        "_max_deferred",
        "_deferred",
        "_deferred_writer",
        "_deferred_room",
    )

    def __init__(
        self,
        handler: RequestHandler,
        max_request_size: int,
        listener_name: str = "PLAINTEXT",
        on_close: Callable[[KafkaConnection], None] | None = None,
        security_protocol: str = "PLAINTEXT",
        principal_mapper: SslPrincipalMapper | None = None,
        on_open: Callable[[KafkaConnection], None] | None = None,
        max_deferred: int = 4,
    ) -> None:
        """``principal_mapper``: on a TLS listener, names the principal of a client
        certificate (mTLS).  ``on_open``/``on_close``: told when the connection opens (after
        the TLS handshake) and closes; a connection whose handshake fails is told neither.
        ``max_deferred``: deferred responses outstanding before the next request waits
        (``produce.pipeline.max.requests``; it bounds the request frames held)."""
        self._handler = handler
        self._max_deferred = max_deferred
        #: The listener's security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL).
        self.security_protocol = security_protocol
        self._max_request_size = max_request_size
        self.listener_name = listener_name
        self._on_close = on_close
        self._on_open = on_open
        self._principal_mapper = principal_mapper
        # Received bytes: a reusable scratch buffer, or one large frame being filled.
        self._scratch: bytearray | None = None
        self._scratch_view: memoryview | None = None
        self._start = 0
        self._end = 0
        self._large: bytearray | None = None
        self._large_view: memoryview | None = None
        self._large_filled = 0
        # Frames waiting for the handler (a list: an empty deque costs 600 bytes).
        self._frames: list[bytearray] = []
        # The transport asked us to stop writing (pause_writing) ...
        self._write_paused = False
        # ... and a write waits on this until it resumes (made only when one waits).
        self._drained: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._closed = False
        self._worker: asyncio.Task[None] | None = None
        # Deferred responses in request order, and the task writing them as they complete
        # (made on the first deferral: an idle connection holds none).
        self._deferred: deque[asyncio.Task[Sequence[Chunk] | None]] | None = None
        self._deferred_writer: asyncio.Task[None] | None = None
        self._deferred_room: asyncio.Event | None = None
        self.transport: asyncio.Transport | None = None
        self.peer: str = "?"
        # The peer's address alone: what ACL host entries name.
        self.peer_host: str = "?"
        self.supports_sendfile = False
        self.sends_views = False
        # Responses held back while more requests are queued (see write()).
        self._pending: list[bytes | bytearray | memoryview] = []
        self._pending_bytes = 0
        self._state: dict[str, object] | None = None
        # Who the peer is: ANONYMOUS until TLS client auth or SASL says otherwise.
        self.principal: KafkaPrincipal = ANONYMOUS
        # SASL listeners: the connection's authentication state (None: no SASL needed).
        self.sasl: SaslSession | None = (
            SaslSession() if security_protocol in SASL_PROTOCOLS else None
        )
        # The address the listener's connection limits counted this connection under
        # (None once given back).
        self.quota_host: str | None = None

    @property
    def state(self) -> dict[str, object]:
        """Per-connection state handlers may keep (made on first use)."""
        if self._state is None:
            self._state = {}
        return self._state

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.peer_host = str(peer[0]) if peer else "?"
        if self._on_open is not None:
            self._on_open(self)
        sock = transport.get_extra_info("socket")
        ssl_object = transport.get_extra_info("ssl_object")
        # sendfile needs the raw socket: plaintext only (TLS encrypts in user space).
        self.supports_sendfile = sock is not None and ssl_object is None
        # TLS encrypts in user space: fetch responses hand it views of the segments' mmaps
        # (asyncio's TLS layer encrypts written data at once, so the views are released
        # right after the write and never block a log truncation for long).
        self.sends_views = ssl_object is not None
        if ssl_object is not None and self._principal_mapper is not None:
            # asyncio calls connection_made once the TLS handshake is done: a verified
            # client certificate (mTLS) names the principal now.
            try:
                principal = peer_principal(ssl_object, self._principal_mapper)
            except InvalidConfigError as exc:  # no mapping rule applies to the subject
                self.close(f"TLS client certificate refused: {exc}")
                return
            if principal is not None:
                self.principal = principal
                log.info(
                    "TLS client %s on %s authenticated as %s",
                    self.peer,
                    self.listener_name,
                    principal,
                )

    def get_buffer(self, sizehint: int) -> memoryview:
        # The transport recv_into()s here: the scratch buffer, or the unfilled tail of a
        # large frame that is being received in place.
        if self._large_view is not None:
            return self._large_view[self._large_filled :]
        if self._scratch_view is None:
            if _SCRATCH_POOL:
                self._scratch, self._scratch_view = _SCRATCH_POOL.pop()
            else:
                self._scratch = bytearray(_SCRATCH_SIZE)
                self._scratch_view = memoryview(self._scratch)
        return self._scratch_view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._large is not None:
            self._large_filled += nbytes
            if self._large_filled < len(self._large):
                return
            self._frames.append(self._large)
            self._large_view.release()  # type: ignore[union-attr]
            self._large = self._large_view = None
        else:
            self._end += nbytes
            if not self._cut_frames():
                return
        if self._frames:
            if self._worker is None:
                self._worker = asyncio.get_running_loop().create_task(self._process_frames())
            if len(self._frames) >= _MAX_QUEUED_FRAMES and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]

    def _cut_frames(self) -> bool:
        """Move complete frames out of the scratch buffer; False if the connection closed.

        Each frame becomes a private, writable bytearray (the produce path patches
        offsets in place).  A frame that does not fit the rest of the scratch buffer
        gets a bytearray of its exact size and the rest of it is received in place.
        The size is checked on the 4-byte prefix, before anything is allocated.
        """
        scratch, view = self._scratch, self._scratch_view
        assert scratch is not None and view is not None
        start, end = self._start, self._end
        while end - start >= 4:
            (size,) = _SIZE.unpack_from(scratch, start)
            if size < 0 or size > self._max_request_size:
                self.close(
                    f"frame of {size} bytes is outside 0..socket.request.max.bytes "
                    f"({self._max_request_size}){_traffic_hint(bytes(view[start : start + 4]))}"
                )
                return False
            body = start + 4
            if end - body >= size:
                self._frames.append(bytearray(view[body : body + size]))
                start = body + size
                continue
            if body + size > _SCRATCH_SIZE:
                large = receive_buffer(size)  # the socket fills it: no zeroing
                have = end - body
                large[:have] = view[body:end]
                self._large, self._large_view, self._large_filled = large, memoryview(large), have
                start = end = 0
            break
        if start == end:
            start = end = 0
            self._return_scratch()
        elif end == _SCRATCH_SIZE:
            # Only part of a 4-byte size prefix can be left at the very end: move it.
            tail = bytes(view[start:end])
            scratch[: len(tail)] = tail
            start, end = 0, len(tail)
        self._start, self._end = start, end
        return True

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()

    def _wake_writer(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    async def _wait_writable(self) -> None:
        """Return once the transport takes writes again; ConnectionClosed if it closed."""
        if self._write_paused and not self._closed:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        if self._closed:
            raise ConnectionClosed

    def _return_scratch(self) -> None:
        if self._scratch is not None and len(_SCRATCH_POOL) < _SCRATCH_POOL_MAX:
            _SCRATCH_POOL.append((self._scratch, self._scratch_view))  # type: ignore[arg-type]
        self._scratch = self._scratch_view = None

    def eof_received(self) -> bool | None:
        # The peer closed.  The transport borrowed a receive buffer for the read that
        # found the end: give it back now, not at connection_lost (called later), or a
        # burst of closes (10,000 idle clients leaving) takes a fresh 256 KiB buffer each.
        if self._start == self._end:
            self._return_scratch()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._start == self._end:
            self._return_scratch()
        if self._large_view is not None:
            self._large_view.release()
            self._large = self._large_view = None
        self._closed = True
        self._wake_writer()
        if self._worker is not None:
            self._worker.cancel()
        for task in self._deferred or ():
            task.cancel()
        if self._deferred_writer is not None:
            self._deferred_writer.cancel()
        if self._on_close is not None:
            self._on_close(self)

    # -- processing -------------------------------------------------------
    async def _process_frames(self) -> None:
        """Answer the queued frames in order; ends when none is left (buffer_updated
        starts it again with the next frame)."""
        try:
            while self._frames and not self._closed:
                frame = self._frames.pop(0)
                if self._reading_paused and len(self._frames) < _MAX_QUEUED_FRAMES // 2:
                    self._reading_paused = False
                    self.transport.resume_reading()  # type: ignore[union-attr]
                if self._deferred_writer is not None and not frame.startswith(_PRODUCE):
                    await self._deferred_writer  # Kafka's order: earlier answers first
                chunks = await self._handler(frame, self)
                if type(chunks) is DeferredResponse:
                    self._flush_pending()  # answers held back so far need not wait for it
                    await self._defer(chunks)
                    continue
                if self._deferred_writer is not None:
                    await self._deferred_writer
                if chunks:
                    await self.write(chunks, more_coming=bool(self._frames))
                elif not self._frames:
                    self._flush_pending()  # e.g. an acks=0 produce ended a burst
                # Sent: let go of the response now, not at the next request (an idle
                # consumer would otherwise keep a deleted segment's file open).
                chunks = None
        except asyncio.CancelledError:
            pass
        except ConnectionClosed:
            pass
        except Exception as exc:  # a handler bug must cost one connection, not the broker
            log.exception("closing connection from %s after an internal error", self.peer)
            self.close(f"internal error: {exc!r}")
        finally:
            self._worker = None

    async def _defer(self, response: DeferredResponse) -> None:
        """Queue a deferred response behind the earlier ones; handling goes on unless
        ``max_deferred`` are outstanding."""
        loop = asyncio.get_running_loop()
        if self._deferred is None:
            self._deferred = deque()
            self._deferred_room = asyncio.Event()
        deferred, room = self._deferred, self._deferred_room
        assert room is not None
        deferred.append(loop.create_task(response.awaitable))  # type: ignore[arg-type]
        if self._deferred_writer is None:
            self._deferred_writer = loop.create_task(self._write_deferred())
        while len(deferred) >= self._max_deferred and not self._closed:
            room.clear()
            await room.wait()

    async def _write_deferred(self) -> None:
        """Write the deferred responses in request order as each completes."""
        deferred, room = self._deferred, self._deferred_room
        assert deferred is not None and room is not None
        try:
            while deferred and not self._closed:
                chunks = await deferred[0]
                deferred.popleft()
                room.set()
                if chunks:
                    # Hold small answers back while the next one is ready too: one send
                    # per burst.
                    await self.write(chunks, more_coming=bool(deferred) and deferred[0].done())
            if not self._closed:
                self._flush_pending()
        except (asyncio.CancelledError, ConnectionClosed):
            pass
        except Exception as exc:  # a handler bug must cost one connection, not the broker
            log.exception("closing connection from %s after an internal error", self.peer)
            self.close(f"internal error: {exc!r}")
        finally:
            self._deferred_writer = None
            room.set()
            if self._closed:
                for task in deferred:
                    task.cancel()

    async def write(self, chunks: Sequence[Chunk], more_coming: bool = False) -> None:
        """Write one response: the size prefix is the caller's (part of chunks).

        With ``more_coming`` (further requests are already queued) in-memory chunks
        are held back and go out with the next responses in one ``writelines``:
        pipelining clients (librdkafka) then cost one send per burst, not per request.
        """
        transport = self.transport
        if transport is None or self._closed:
            raise ConnectionClosed
        pending = self._pending
        views: list[memoryview] = []
        for chunk in chunks:
            if isinstance(chunk, FileChunk):
                if self.supports_sendfile:
                    self._flush_pending()
                    await self._sendfile(chunk)
                else:
                    pending.append(os.pread(chunk.fd, chunk.length, chunk.position))
                    self._pending_bytes += chunk.length
            else:
                pending.append(chunk)
                self._pending_bytes += len(chunk)
                if self.sends_views and type(chunk) is memoryview:
                    views.append(chunk)
        if views or not more_coming or self._pending_bytes >= _COALESCE_MAX_BYTES:
            self._flush_pending()
            if views and _tls_backlog_empty(transport):
                # asyncio's TLS layer encrypted the views as they were written: let go of
                # the segments' mappings now, not after a slow reader drains the socket
                # (a held view makes a log truncation over it wait).
                for view in views:
                    view.release()
        if self._write_paused:
            await self._wait_writable()

    def _flush_pending(self) -> None:
        if self._pending:
            self.transport.writelines(self._pending)  # type: ignore[union-attr]
            self._pending.clear()
            self._pending_bytes = 0

    async def _drain_completely(self) -> None:
        """Wait until the transport has handed every buffered byte to the kernel."""
        transport = self.transport
        assert transport is not None
        if transport.get_write_buffer_size() == 0:
            return
        high, low = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=0, low=0)  # pause now, resume at empty
        try:
            await self._wait_writable()
        finally:
            transport.set_write_buffer_limits(high=high, low=low)

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
        if not isinstance(loop, asyncio.BaseEventLoop):
            # uvloop has no loop.sendfile: the rest goes through the transport, copied.
            # Only a reader slower than the broker (a full socket buffer) gets here.
            return await self._write_copied(fd, position, count)
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

    async def _write_copied(self, fd: int, position: int, count: int) -> int:
        """Write a file region through the transport, a piece at a time (backpressure
        between pieces); returns the bytes written (fewer at EOF)."""
        transport = self.transport
        assert transport is not None
        written = 0
        while written < count:
            piece = os.pread(fd, min(_COPY_PIECE, count - written), position + written)
            if not piece:
                break
            transport.write(piece)
            written += len(piece)
            await self._wait_writable()
        return written

    def close(self, reason: str | None = None) -> None:
        """Close this connection (only this one), logging why."""
        if self.transport is not None and not self._closed:
            self._flush_pending()  # answers already computed still go out first
        if reason:
            log.warning("closing connection from %s: %s", self.peer, reason)
        self._closed = True
        if self.transport is not None:
            self.transport.close()


def _tls_backlog_empty(transport: asyncio.BaseTransport) -> bool:
    """True if the TLS transport holds none of the data written to it unencrypted (it
    would, mid-renegotiation); False when that cannot be told (another event loop)."""
    backlog = getattr(getattr(transport, "_ssl_protocol", None), "_write_backlog", None)
    return backlog is not None and not backlog


class _FileDescriptor:
    """The file object ``loop.sendfile`` wants, for an fd it must not close."""

    __slots__ = ("_fd",)
    mode = "rb"

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd
