"""The inter-broker channel: one persistent connection per destination broker.

Brokers talk to each other with the Kafka protocol, as clients do: the
transaction coordinator sends WriteTxnMarkers to partition leaders (and a
replica fetcher can send Fetch the same way).  :class:`BrokerChannels` keeps
one :class:`BrokerChannel` per destination broker id; a channel resolves the
broker's endpoint from the metadata store (``/brokers/ids/<id>``) when it
connects, and after a failure (connection refused, broken, timed out) it drops
the connection and connects again on the next request, re-reading the endpoint
(a restarted broker may advertise a new one).

Channels connect to the inter-broker listener (``inter.broker.listener.name``) with
its security (:class:`~pystream.security.client_security.ClientSecurity`: TLS with the
broker's trust store and key store on an SSL listener, the broker's SASL login on a
SASL one).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pystream.client.connection import BrokerConnection
from pystream.client.errors import KafkaConnectionError
from pystream.cluster.metadata.store import MetadataStore
from pystream.errors import (
    NetworkException,
    RequestTimedOutError,
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
    UnsupportedVersionError,
)
from pystream.protocol import Struct
from pystream.security.client_security import PLAINTEXT, ClientSecurity

log = logging.getLogger(__name__)

__all__ = ["BrokerChannel", "BrokerChannels", "ChannelError"]

# Kafka's max.response.size for inter-broker requests is the socket's request limit.
MAX_RESPONSE_BYTES = 104_857_600


class ChannelError(NetworkException):
    """The destination broker could not be reached or the request got no answer (retriable)."""


EndpointResolver = Callable[[int], "tuple[str, int] | None"]


class BrokerChannel:
    """A connection to one broker, opened on first use and reopened after a failure."""

    def __init__(
        self,
        destination: int,
        resolve: EndpointResolver,
        *,
        client_id: str,
        request_timeout_ms: int,
        connect_timeout_ms: int,
        security: ClientSecurity = PLAINTEXT,
    ) -> None:
        self.destination = destination
        self._security = security
        self._resolve = resolve
        self._client_id = client_id
        self._request_timeout_ms = request_timeout_ms
        self._connect_timeout_ms = connect_timeout_ms
        self._connection: BrokerConnection | None = None
        # One connect at a time: concurrent requests wait for it rather than open several.
        self._connecting = asyncio.Lock()
        self._closed = False
        self._login_failed = False  # the last connect was refused its SASL login

    def __repr__(self) -> str:
        return f"<BrokerChannel to broker {self.destination} connected={self.connected}>"

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.closed

    async def _connect(self) -> BrokerConnection:
        async with self._connecting:
            if self._closed:
                raise ChannelError(f"the channel to broker {self.destination} is closed")
            connection = self._connection
            if connection is not None and not connection.closed:
                return connection
            endpoint = self._resolve(self.destination)
            if endpoint is None:
                raise ChannelError(f"broker {self.destination} is not registered (not alive)")
            host, port = endpoint
            try:
                connection = await BrokerConnection.open(
                    host,
                    port,
                    client_id=self._client_id,
                    request_timeout_ms=self._request_timeout_ms,
                    connect_timeout_ms=self._connect_timeout_ms,
                    max_response_size=MAX_RESPONSE_BYTES,
                    security=self._security,
                )
            except (SaslAuthenticationFailedError, UnsupportedSaslMechanismError) as exc:
                # The operator must fix this (sasl.jaas.config, the user's credentials,
                # sasl.enabled.mechanisms): say so once per failure streak, not per retry.
                if not self._login_failed:
                    self._login_failed = True
                    login = self._security.sasl
                    log.warning(
                        "authentication failed to broker %d at %s:%d as %s (%s): %s; check "
                        "this broker's sasl.jaas.config and the user's SCRAM credentials "
                        "(pystream users)",
                        self.destination,
                        host,
                        port,
                        login.username if login else "?",
                        login.mechanism if login else "?",
                        exc,
                    )
                raise ChannelError(
                    f"broker {self.destination} ({host}:{port}): authentication failed: {exc}"
                ) from exc
            except (KafkaConnectionError, RequestTimedOutError, OSError) as exc:
                raise ChannelError(f"broker {self.destination} ({host}:{port}): {exc}") from exc
            self._login_failed = False
            log.debug("connected to broker %d at %s:%d", self.destination, host, port)
            self._connection = connection
            return connection

    async def request(self, api_key: int, body: Struct, versions: tuple[int, int]) -> Any:
        """Send one request at the highest version within ``versions`` (min, max) that the
        destination advertises, and await its response.

        :class:`ChannelError` when the broker cannot be reached or does not answer in time
        (the connection is dropped then; the next request reconnects);
        :class:`UnsupportedVersionError` when it speaks no version in ``versions``.
        """
        return (await self._send(api_key, body, versions, raw=False))[1]

    async def request_raw(
        self, api_key: int, body: Struct, versions: tuple[int, int]
    ) -> tuple[int, bytes | bytearray]:
        """As :meth:`request`, but the response frame undecoded (from its correlation id
        on), with the version it was sent at: for a caller that decodes it in C."""
        return await self._send(api_key, body, versions, raw=True)

    async def _send(
        self, api_key: int, body: Struct, versions: tuple[int, int], *, raw: bool
    ) -> tuple[int, Any]:
        connection = await self._connect()
        advertised = connection.api_versions.get(api_key)
        lo, hi = versions
        if advertised is None or min(hi, advertised[1]) < max(lo, advertised[0]):
            raise UnsupportedVersionError(
                f"broker {self.destination} does not support api key {api_key} "
                f"versions {lo}-{hi} (it advertises {advertised})"
            )
        version = min(hi, advertised[1])
        try:
            future = connection.send(api_key, body, version, raw=raw)
            assert future is not None
            return version, await future
        except (KafkaConnectionError, RequestTimedOutError, OSError) as exc:
            connection.close()
            if self._connection is connection:
                self._connection = None
            raise ChannelError(f"broker {self.destination}: {exc}") from exc

    def close(self) -> None:
        """Close the connection; requests in flight fail with :class:`ChannelError`."""
        self._closed = True
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def broker_endpoint(
    metadata: MetadataStore, broker_id: int, listener_name: str | None
) -> tuple[str, int] | None:
    """(host, port) of a registered broker on ``listener_name`` (else its first PLAINTEXT
    endpoint); None if the broker is not registered."""
    for endpoint_id, host, port, _rack in metadata.broker_endpoints(listener_name):
        if endpoint_id == broker_id:
            return host, port
    return None


class BrokerChannels:
    """One :class:`BrokerChannel` per destination broker, made on first use."""

    def __init__(
        self,
        local_id: int,
        metadata: MetadataStore,
        *,
        listener_name: str | None = None,
        request_timeout_ms: int = 30_000,
        connect_timeout_ms: int = 10_000,
        security: ClientSecurity = PLAINTEXT,
    ) -> None:
        self.local_id = local_id
        self.security = security
        self.metadata = metadata
        self.listener_name = listener_name
        self.request_timeout_ms = request_timeout_ms
        self.connect_timeout_ms = connect_timeout_ms
        self._channels: dict[int, BrokerChannel] = {}

    def endpoint(self, broker_id: int) -> tuple[str, int] | None:
        """(host, port) of a registered broker (see :func:`broker_endpoint`)."""
        return broker_endpoint(self.metadata, broker_id, self.listener_name)

    def channel(self, broker_id: int) -> BrokerChannel:
        """The channel to ``broker_id`` (never this broker itself)."""
        if broker_id == self.local_id:
            raise ValueError("a broker does not open a channel to itself")
        channel = self._channels.get(broker_id)
        if channel is None:
            channel = self._channels[broker_id] = BrokerChannel(
                broker_id,
                self.endpoint,
                client_id=f"broker-{self.local_id}",
                request_timeout_ms=self.request_timeout_ms,
                connect_timeout_ms=self.connect_timeout_ms,
                security=self.security,
            )
        return channel

    def close(self) -> None:
        """Close every channel."""
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
