"""KafkaConnection over real loopback sockets: framing, limits, ordering, sendfile."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest

from pystream.broker.network import Chunk, FileChunk, KafkaConnection

MAX_REQUEST = 1024


async def _serve(handler, max_request: int = MAX_REQUEST):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: KafkaConnection(handler, max_request), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


async def _echo(frame: bytearray, connection: KafkaConnection) -> Sequence[Chunk]:
    return [struct.pack(">i", len(frame)), bytes(frame)]


def test_frames_split_and_coalesced_are_answered_in_order() -> None:
    async def main() -> None:
        server, port = await _serve(_echo)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payloads = [bytes([i]) * (i * 7 % 300) for i in range(50)]
        stream = b"".join(_frame(p) for p in payloads)
        # Dribble the bytes in uneven pieces: frame boundaries never line up with writes.
        for start in range(0, len(stream), 37):
            writer.write(stream[start : start + 37])
        await writer.drain()
        for payload in payloads:
            assert await asyncio.wait_for(_read_frame(reader), 5) == payload
        writer.close()
        server.close()

    asyncio.run(main())


@pytest.mark.parametrize("size", [MAX_REQUEST + 1, -1, 2**31 - 1])
def test_bad_frame_size_closes_only_that_connection(size: int) -> None:
    async def main() -> None:
        server, port = await _serve(_echo)
        bad_reader, bad_writer = await asyncio.open_connection("127.0.0.1", port)
        good_reader, good_writer = await asyncio.open_connection("127.0.0.1", port)
        bad_writer.write(struct.pack(">i", size) + b"x" * 10)
        assert await asyncio.wait_for(bad_reader.read(), 5) == b""  # EOF: closed by broker
        good_writer.write(_frame(b"still here"))
        assert await asyncio.wait_for(_read_frame(good_reader), 5) == b"still here"
        good_writer.close()
        server.close()

    asyncio.run(main())


def test_handler_error_closes_connection_but_server_keeps_serving() -> None:
    async def handler(frame: bytearray, connection: KafkaConnection) -> Sequence[Chunk]:
        if frame == b"boom":
            raise RuntimeError("handler bug")
        return await _echo(frame, connection)

    async def main() -> None:
        server, port = await _serve(handler)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_frame(b"boom"))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_frame(b"ok"))
        assert await asyncio.wait_for(_read_frame(reader), 5) == b"ok"
        writer.close()
        server.close()

    asyncio.run(main())


def test_file_chunks_go_out_with_sendfile(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # larger than socket buffers: EAGAIN path runs
    path = tmp_path / "segment.log"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)

    async def handler(frame: bytearray, connection: KafkaConnection) -> Sequence[Chunk]:
        start, length = struct.unpack(">ii", frame)
        assert connection.supports_sendfile
        return [struct.pack(">i", length + 3), b"hdr", FileChunk(fd, start, length)]

    async def main() -> None:
        server, port = await _serve(handler)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for start, length in [(0, 10), (5, len(data) - 5), (len(data) - 1, 1)]:
            writer.write(_frame(struct.pack(">ii", start, length)))
            body = await asyncio.wait_for(_read_frame(reader), 10)
            assert body == b"hdr" + data[start : start + length]
        writer.close()
        server.close()

    try:
        asyncio.run(main())
    finally:
        os.close(fd)


def test_large_and_boundary_frames_in_random_pieces() -> None:
    """Frames around and beyond the 256 KiB receive buffer, split at random points."""
    import random

    rng = random.Random(7)

    async def main() -> None:
        server, port = await _serve(_echo, max_request=2 * 1024 * 1024)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sizes = [0, 1, 262_140, 262_144, 300_000, 5, 1_048_576, 3, 262_139]
        payloads = [bytes([i + 1]) * size for i, size in enumerate(sizes)]
        stream = b"".join(_frame(p) for p in payloads)

        async def send() -> None:
            position = 0
            while position < len(stream):
                step = rng.choice([1, 3, 4, 7, 1000, 65_536, 300_000])
                writer.write(stream[position : position + step])
                position += step
                await writer.drain()

        sender = asyncio.create_task(send())
        for payload in payloads:
            assert await asyncio.wait_for(_read_frame(reader), 10) == payload
        await sender
        writer.close()
        server.close()

    asyncio.run(main())


def test_held_back_responses_are_sent_when_a_burst_ends_without_a_response() -> None:
    """Pipelined requests: answers are coalesced, and one that needs no answer (acks=0)
    at the end of the burst must not strand the answers held back before it."""

    async def handler(frame: bytearray, connection: KafkaConnection) -> Sequence[Chunk] | None:
        if frame.startswith(b"silent"):
            return None
        return await _echo(frame, connection)

    async def main() -> None:
        server, port = await _serve(handler)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answered = [b"a%d" % i for i in range(20)]
        writer.write(b"".join(_frame(p) for p in answered) + _frame(b"silent"))
        for payload in answered:
            assert await asyncio.wait_for(_read_frame(reader), 5) == payload
        writer.close()
        server.close()

    asyncio.run(main())
