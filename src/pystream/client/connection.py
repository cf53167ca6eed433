"""One TCP connection to one broker: pipelined requests, responses matched in order.

Kafka answers the requests of a connection in the order they were sent, so
the connection keeps a FIFO of in-flight requests and checks that each
response's correlation id is the head's.  Many requests can be outstanding
(the producer pipelines up to ``max_in_flight``); acks=0 produce requests
take no slot because the broker never answers them.

Receiving uses :class:`asyncio.BufferedProtocol`: small frames are read into
one reusable 64 KiB buffer, and a frame larger than that gets a buffer of
its exact size that the socket reads into directly, so a multi-megabyte
fetch response is copied once (kernel to its buffer), not twice.

The first request on every connection is ApiVersions (v3, falling back to
the version the broker names if it answers UNSUPPORTED_VERSION); the
versions it advertises decide every later request's version.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from typing import Any

from pystream._core.frame_writer import receive_buffer
from pystream.errors import RequestTimedOutError, SaslAuthenticationFailedError, error_for_code
from pystream.protocol import ProtocolDecodeError, RequestHeader, Struct
from pystream.protocol.headers import decode_response, encode_request_frame
from pystream.protocol.messages.api_versions import ApiVersionsRequest, ApiVersionsResponse
from pystream.protocol.messages.sasl_authenticate import SaslAuthenticateRequest
from pystream.protocol.messages.sasl_handshake import SaslHandshakeRequest
from pystream.security.client_security import PLAINTEXT, ClientSecurity, SaslLogin
from pystream.security.sasl import SaslAuthenticationFailed
from pystream.security.sasl import new_client as new_sasl_client
from pystream.version import __version__

from .errors import KafkaConnectionError
from .versions import choose_version

__all__ = ["BrokerConnection"]

log = logging.getLogger("pystream.client")

_SIZE = struct.Struct(">i")
_SMALL = 65536
_API_VERSIONS = 18
_SASL_HANDSHAKE = 17
_SASL_AUTHENTICATE = 36
_UNSUPPORTED_VERSION = 35


class _InFlight:
    __slots__ = ("correlation_id", "api_key", "version", "future", "timer", "raw")

    def __init__(
        self,
        correlation_id: int,
        api_key: int,
        version: int,
        future: asyncio.Future[Any],
        raw: bool = False,
    ) -> None:
        self.correlation_id = correlation_id
        self.api_key = api_key
        self.version = version
        self.future = future
        self.timer: asyncio.TimerHandle | None = None
        self.raw = raw  # hand over the frame undecoded (a Cython decoder takes it)


class BrokerConnection(asyncio.BufferedProtocol):
    """A connected broker.  Create with :meth:`open`; send with :meth:`send` / :meth:`request`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        request_timeout_ms: int,
        max_response_size: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.request_timeout = request_timeout_ms / 1000
        self.max_response_size = max_response_size
        self.loop = loop
        self.api_versions: dict[int, tuple[int, int]] = {}
        self._chosen: dict[int, int] = {}
        self._transport: asyncio.Transport | None = None
        self._in_flight: deque[_InFlight] = deque()
        self._correlation = 0
        self._error: Exception | None = None
        self._closed = loop.create_future()
        self._small = bytearray(_SMALL)
        self._small_view = memoryview(self._small)
        self._start = 0
        self._end = 0
        self._frame: bytearray | None = None
        self._frame_view: memoryview | None = None
        self._frame_pos = 0

    def __repr__(self) -> str:
        return f"<BrokerConnection {self.host}:{self.port} in_flight={len(self._in_flight)}>"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        client_id: str,
        request_timeout_ms: int,
        connect_timeout_ms: int,
        max_response_size: int,
        security: ClientSecurity = PLAINTEXT,
    ) -> BrokerConnection:
        """Connect (over TLS if ``security`` has a TLS context), negotiate API versions and,
        if it has a SASL login, log in; :class:`KafkaConnectionError` on failure, the
        broker's SASL_AUTHENTICATION_FAILED (or UNSUPPORTED_SASL_MECHANISM) error if it
        refuses."""
        loop = asyncio.get_running_loop()
        conn = cls(
            host,
            port,
            client_id=client_id,
            request_timeout_ms=request_timeout_ms,
            max_response_size=max_response_size,
            loop=loop,
        )
        try:
            async with asyncio.timeout(connect_timeout_ms / 1000):
                await loop.create_connection(
                    lambda: conn,
                    host,
                    port,
                    ssl=security.ssl_context,
                    server_hostname=host if security.ssl_context is not None else None,
                )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            raise KafkaConnectionError(
                f"cannot connect to broker {host}:{port}: {exc or type(exc).__name__}"
            ) from exc
        try:
            await conn._negotiate_versions()
            if security.sasl is not None:
                await conn._authenticate(security.sasl)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _negotiate_versions(self) -> None:
        version = 3
        for _ in range(3):
            body = ApiVersionsRequest(
                client_software_name="pystream", client_software_version=__version__
            )
            response = await self.request(_API_VERSIONS, body, version)
            assert isinstance(response, ApiVersionsResponse)
            if response.error_code == _UNSUPPORTED_VERSION:
                # The broker names the versions it speaks in a v0 body.
                offered = [k for k in response.api_keys if k.api_key == _API_VERSIONS]
                version = min(offered[0].max_version, 3) if offered else 0
                continue
            if response.error_code:
                raise error_for_code(response.error_code)(
                    f"broker {self.address} refused ApiVersions v{version}"
                )
            self.api_versions = {
                k.api_key: (k.min_version, k.max_version) for k in response.api_keys
            }
            return
        raise KafkaConnectionError(f"broker {self.address}: ApiVersions negotiation failed")

    async def _authenticate(self, login: SaslLogin) -> None:
        """SaslHandshake v1 then SaslAuthenticate round trips until the mechanism is done."""
        mechanism = login.mechanism
        handshake = await self.request(
            _SASL_HANDSHAKE, SaslHandshakeRequest(mechanism=mechanism), 1
        )
        if handshake.error_code:
            raise error_for_code(handshake.error_code)(
                f"broker {self.address} refused SASL mechanism {mechanism} "
                f"(it offers {', '.join(handshake.mechanisms) or 'none'})"
            )
        client = new_sasl_client(mechanism, login.username, login.password)
        token: bytes | None = client.first_token()
        version = min(2, self.api_versions.get(_SASL_AUTHENTICATE, (0, 0))[1])
        while token is not None:
            response = await self.request(
                _SASL_AUTHENTICATE, SaslAuthenticateRequest(auth_bytes=token), version
            )
            if response.error_code:
                raise error_for_code(response.error_code)(
                    f"broker {self.address}: {response.error_message or 'SASL login refused'}"
                )
            try:
                token = client.evaluate(bytes(response.auth_bytes))
            except SaslAuthenticationFailed as exc:
                raise SaslAuthenticationFailedError(
                    f"broker {self.address}: {exc.detail}"
                ) from None

    def close(self, error: Exception | None = None) -> None:
        """Close now; every in-flight request fails with ``error`` (or a connection error)."""
        if self._error is None:
            self._error = error or KafkaConnectionError(f"connection to {self.address} closed")
        if self._transport is not None:
            self._transport.close()
        self._fail_all(self._error)

    @property
    def closed(self) -> bool:
        return self._error is not None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    # ------------------------------------------------------------------ requests

    def supports(self, api_key: int) -> bool:
        try:
            self.version(api_key)
        except Exception:
            return False
        return True

    def version(self, api_key: int) -> int:
        """The version to use for ``api_key`` (:class:`UnsupportedFeatureError` if none)."""
        v = self._chosen.get(api_key)
        if v is None:
            v = self._chosen[api_key] = choose_version(
                api_key, self.api_versions, f"broker {self.address}"
            )
        return v

    def send(
        self,
        api_key: int,
        body: Struct,
        version: int,
        *,
        expect_response: bool = True,
        timeout: float | None = None,
        raw: bool = False,
    ) -> asyncio.Future[Any] | None:
        """Write one request; return the future of its decoded response (None if none comes).

        With ``raw`` the future's result is the response frame itself (``bytes`` or
        ``bytearray``, from the correlation id on), for a caller that decodes it in C.
        """
        if self._error is not None:
            raise self._error
        self._correlation = correlation_id = (self._correlation + 1) & 0x7FFFFFFF
        header = RequestHeader(
            request_api_key=api_key,
            request_api_version=version,
            correlation_id=correlation_id,
            client_id=self.client_id,
        )
        frame = encode_request_frame(header, body)
        future = None
        if expect_response:
            future = self.loop.create_future()
            entry = _InFlight(correlation_id, api_key, version, future, raw)
            entry.timer = self.loop.call_later(
                self.request_timeout if timeout is None else timeout, self._timed_out, entry
            )
            self._in_flight.append(entry)
        assert self._transport is not None
        self._transport.write(frame)
        return future

    async def request(
        self, api_key: int, body: Struct, version: int | None = None, timeout: float | None = None
    ) -> Any:
        """Send and await the response (version chosen from ApiVersions if not given)."""
        if version is None:
            version = self.version(api_key)
        future = self.send(api_key, body, version, timeout=timeout)
        assert future is not None
        return await future

    def _timed_out(self, entry: _InFlight) -> None:
        if entry.future.done():
            return
        # Kafka's NetworkClient treats a timed-out request as a dead connection.
        self.close(
            RequestTimedOutError(
                f"broker {self.address} did not answer api key {entry.api_key} within "
                f"{self.request_timeout:.1f}s (request_timeout_ms); disconnected"
            )
        )

    def _fail_all(self, error: Exception) -> None:
        while self._in_flight:
            entry = self._in_flight.popleft()
            if entry.timer is not None:
                entry.timer.cancel()
            if not entry.future.done():
                entry.future.set_exception(error)
        if not self._closed.done():
            self._closed.set_result(None)

    # ------------------------------------------------------------------ protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self._error is None:
            detail = f": {exc}" if exc else ""
            self._error = KafkaConnectionError(f"connection to {self.address} lost{detail}")
        self._fail_all(self._error)

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._frame_view is not None:
            return self._frame_view[self._frame_pos :]
        if self._end == _SMALL:
            # Keep the partial frame, drop what was consumed.
            n = self._end - self._start
            self._small[:n] = bytes(self._small_view[self._start : self._end])
            self._start, self._end = 0, n
        return self._small_view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        try:
            if self._frame is not None:
                self._frame_pos += nbytes
                if self._frame_pos == len(self._frame):
                    frame = self._frame
                    self._frame = self._frame_view = None
                    self._deliver(frame)
                return
            self._end += nbytes
            self._parse_small()
        except ProtocolDecodeError as exc:
            log.warning("closing connection to %s: %s", self.address, exc)
            self.close(KafkaConnectionError(f"broker {self.address} sent a bad frame: {exc}"))

    def _parse_small(self) -> None:
        view = self._small_view
        start, end = self._start, self._end
        while end - start >= 4:
            size = _SIZE.unpack_from(self._small, start)[0]
            if size < 0 or size > self.max_response_size:
                raise ProtocolDecodeError(
                    f"response frame size {size} is outside 0..{self.max_response_size}"
                )
            have = end - start - 4
            if have >= size:
                payload = bytes(view[start + 4 : start + 4 + size])
                start += 4 + size
                self._start = start
                self._deliver(payload)
                continue
            if size + 4 > _SMALL:
                # Too big for the shared buffer: give it its own, read into directly.
                frame = receive_buffer(size)  # the socket fills it: no zeroing
                frame[:have] = view[start + 4 : end]
                self._frame = frame
                self._frame_view = memoryview(frame)
                self._frame_pos = have
                start = end = 0
            break
        if start == end:
            start = end = 0
        self._start, self._end = start, end

    def _deliver(self, payload: bytes | bytearray) -> None:
        if not self._in_flight:
            raise ProtocolDecodeError(f"broker {self.address} sent a response nobody asked for")
        entry = self._in_flight.popleft()
        if entry.timer is not None:
            entry.timer.cancel()
        correlation_id = _SIZE.unpack_from(payload, 0)[0] if len(payload) >= 4 else None
        if correlation_id != entry.correlation_id:
            raise ProtocolDecodeError(
                f"response correlation id {correlation_id} does not match the oldest request's "
                f"{entry.correlation_id}"
            )
        if entry.future.done():  # cancelled by its caller; the stream stays in sync
            return
        if entry.raw:
            entry.future.set_result(payload)
            return
        try:
            response = _decode(payload, entry.api_key, entry.version)
        except Exception as exc:
            entry.future.set_exception(exc)
        else:
            entry.future.set_result(response)


def _decode(payload: bytes | bytearray, api_key: int, version: int) -> Struct:
    try:
        return decode_response(payload, api_key, version)[1]
    except ProtocolDecodeError:
        if api_key != _API_VERSIONS or version == 0:
            raise
        # An UNSUPPORTED_VERSION answer to ApiVersions comes as a v0 body.
        return decode_response(payload, api_key, 0)[1]
