"""The Kafka clients behind the proxy's requests.

Without authentication one set of clients (an admin client, the shared producer, the
topic cache) serves every request.  With ``authentication.method=BASIC`` each HTTP
Basic user gets clients of its own that log in to the broker over SASL with that
user's name and password, so the broker's ACLs apply per user; the proxy checks no
password itself (the broker does), and a set of clients idle for
``consumer.instance.timeout.ms`` is closed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import time
from typing import Any

from starlette.requests import Request

from pystream.aio import AdminClient, Producer
from pystream.errors import KafkaError, SaslAuthenticationFailedError

from .config import RestConfig
from .errors import RestError
from .produce import ProduceService
from .topics import TopicCache

__all__ = ["ClientPool", "KafkaClients", "kafka_clients"]

log = logging.getLogger("pystream.rest.clients")

UNAUTHORIZED = 401
KAFKA_AUTHENTICATION = 40101


# Every HTTP request waits for its records' acknowledgement, so the producer's linger is
# latency the client sees: 1 ms instead of the client's 5 (Kafka 4.0's) keeps batching
# under concurrent requests and doubles the one-record POSTs a connection can make
# (bench/rest_produce.py).  ``producer.linger.ms`` overrides it.
PRODUCER_DEFAULTS: dict[str, Any] = {"linger_ms": 1}


class KafkaClients:
    """One principal's clients: ``admin``, ``producer``, ``topics`` and ``produce``."""

    def __init__(self, config: RestConfig, settings: dict[str, Any], user: str | None) -> None:
        self.user = user
        self.settings = settings
        self.admin = AdminClient(config.bootstrap_servers, **settings)
        # v2 produce to an unknown topic asks the broker to auto-create it, as Confluent's
        # proxy does through its producer (the broker's auto.create.topics.enable decides).
        self.producer = Producer(
            config.bootstrap_servers,
            allow_auto_create_topics=True,
            **{**PRODUCER_DEFAULTS, **settings, **config.producer_settings},
        )
        self.topics = TopicCache(self.admin, config.metadata_max_age_ms)
        self.produce = ProduceService(self.producer, self.topics)
        self.last_used = time.monotonic()

    async def start(self) -> None:
        await self.admin.start()
        try:
            await self.producer.start()
        except BaseException:
            await self.admin.close()
            raise

    async def close(self) -> None:
        await self.producer.close()
        await self.admin.close()


class ClientPool:
    """The clients for each request (see the module docstring)."""

    def __init__(self, config: RestConfig) -> None:
        self.config = config
        # With BASIC every request has its user's clients: there are no shared ones
        # (the configured client settings may not even hold a login).
        self.shared = None if self.basic else KafkaClients(config, config.client_settings, None)
        self._users: dict[tuple[str, bytes], KafkaClients] = {}
        self._starting: dict[tuple[str, bytes], asyncio.Task[KafkaClients]] = {}
        self._expiry: asyncio.Task[None] | None = None

    @property
    def basic(self) -> bool:
        return self.config.authentication_method == "BASIC"

    async def start(self) -> None:
        """Connect the shared clients, or start closing idle users' clients."""
        if self.shared is not None:
            await self.shared.start()
        else:
            self._expiry = asyncio.create_task(self._close_idle(), name="rest-client-expiry")

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        users, self._users = list(self._users.values()), {}
        await asyncio.gather(*(c.close() for c in users), return_exceptions=True)
        if self.shared is not None:
            await self.shared.close()

    async def for_request(self, request: Request) -> KafkaClients:
        """The clients of the request's user (401 without valid Basic credentials)."""
        if self.shared is not None:
            return self.shared
        user, password = self._credentials(request)
        key = (user, hashlib.sha256(password.encode()).digest())
        clients = self._users.get(key)
        if clients is None:
            starting = self._starting.get(key)
            if starting is None:
                starting = asyncio.ensure_future(self._login(user, password))
                self._starting[key] = starting
                starting.add_done_callback(lambda _: self._starting.pop(key, None))
            clients = await asyncio.shield(starting)
            self._users[key] = clients
        clients.last_used = time.monotonic()
        return clients

    def _credentials(self, request: Request) -> tuple[str, str]:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
            except (binascii.Error, ValueError):
                sep = ""
            if sep and user:
                return user, password
        raise self._unauthorized("this proxy needs HTTP Basic credentials (the Kafka user)")

    def _unauthorized(self, message: str) -> RestError:
        error = RestError(UNAUTHORIZED, KAFKA_AUTHENTICATION, message)
        error.headers = {"WWW-Authenticate": f'Basic realm="{self.config.authentication_realm}"'}
        return error

    async def _login(self, user: str, password: str) -> KafkaClients:
        settings = {
            **self.config.client_settings,
            "sasl_plain_username": user,
            "sasl_plain_password": password,
        }
        clients = KafkaClients(self.config, settings, user)
        try:
            await clients.start()
        except SaslAuthenticationFailedError:
            await clients.close()
            raise self._unauthorized(
                f"the broker refused the login of user {user!r} (wrong name or password)"
            ) from None
        except (KafkaError, OSError, TimeoutError):
            await clients.close()
            raise
        log.info("clients for user %s connected", user)
        return clients

    async def _close_idle(self) -> None:
        idle = self.config.consumer_instance_timeout_ms / 1000
        while True:
            await asyncio.sleep(min(max(idle / 4, 0.05), 30.0))
            now = time.monotonic()
            for key, clients in list(self._users.items()):
                if now - clients.last_used > idle:
                    del self._users[key]
                    await clients.close()


async def kafka_clients(request: Request) -> KafkaClients:
    """The clients that serve ``request``."""
    pool: ClientPool = request.app.state.proxy.clients
    return await pool.for_request(request)
