"""SaslHandshake (17) and SaslAuthenticate (36): logging in on SASL listeners.

A connection on a SASL_PLAINTEXT/SASL_SSL listener carries a
:class:`~pystream.security.sasl.SaslSession`; until it has authenticated,
:meth:`Broker.handle_frame` serves only ApiVersions, SaslHandshake and
SaslAuthenticate and closes the connection on anything else, as Kafka does.
SaslHandshake v1 picks the mechanism and SaslAuthenticate requests carry its
tokens; after SaslHandshake v0 (old clients) the tokens come as raw
size-prefixed frames without a request header (:func:`handle_legacy_token`).

A failed login is answered after the login throttle's delay (growing with
recent failures from the same address; only this connection waits) with
SASL_AUTHENTICATION_FAILED and a generic message, then the connection closes;
the broker logs why, never the secret.  ``connections.max.reauth.ms``
(KIP-368) bounds the session: SaslAuthenticate v1+ tells the client, and a
connection that has not re-authenticated in time is closed at its next request.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from pystream.clock import now_ms
from pystream.errors import (
    IllegalSaslStateError,
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
)
from pystream.protocol.handlers import api_handler
from pystream.protocol.messages.sasl_authenticate import (
    SaslAuthenticateRequest,
    SaslAuthenticateResponse,
)
from pystream.protocol.messages.sasl_handshake import SaslHandshakeRequest, SaslHandshakeResponse
from pystream.security.principal import USER_TYPE, KafkaPrincipal
from pystream.security.sasl import (
    GENERIC_FAILURE,
    SaslAuthenticationFailed,
    SaslAuthenticator,
    SaslSession,
    SaslState,
)

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext
    from pystream.broker.network import KafkaConnection

log = logging.getLogger(__name__)


@api_handler(17, 0, 1)
async def handle_sasl_handshake(
    request: SaslHandshakeRequest, context: RequestContext
) -> SaslHandshakeResponse:
    authenticator = context.services.authenticator
    mechanisms = list(authenticator.mechanisms(context.listener_name))
    session = context.connection.sasl
    if session is None or session.state not in (SaslState.HANDSHAKE, SaslState.AUTHENTICATED):
        # Not a SASL listener (Kafka answers ILLEGAL_SASL_STATE), or a second handshake.
        if session is not None:
            session.state = SaslState.FAILED
        return SaslHandshakeResponse(
            error_code=IllegalSaslStateError.error_code, mechanisms=mechanisms
        )
    if session.state is SaslState.AUTHENTICATED and context.api_version == 0:
        session.state = SaslState.FAILED  # KIP-368: re-authentication needs v1
        return SaslHandshakeResponse(
            error_code=IllegalSaslStateError.error_code, mechanisms=mechanisms
        )
    server = authenticator.new_server(request.mechanism, context.listener_name)
    if server is None:
        log.info(
            "refusing SASL mechanism %r from %s (enabled: %s)",
            request.mechanism,
            context.connection.peer,
            ", ".join(mechanisms),
        )
        session.state = SaslState.FAILED
        return SaslHandshakeResponse(
            error_code=UnsupportedSaslMechanismError.error_code, mechanisms=mechanisms
        )
    session.server = server
    session.state = SaslState.AUTHENTICATE if context.api_version >= 1 else SaslState.LEGACY_TOKENS
    return SaslHandshakeResponse(error_code=0, mechanisms=mechanisms)


@api_handler(36, 0, 2)
async def handle_sasl_authenticate(
    request: SaslAuthenticateRequest, context: RequestContext
) -> SaslAuthenticateResponse:
    connection = context.connection
    session = connection.sasl
    if session is None or session.state is not SaslState.AUTHENTICATE:
        if session is not None:
            session.state = SaslState.FAILED
        return SaslAuthenticateResponse(
            error_code=IllegalSaslStateError.error_code,
            error_message="SaslAuthenticate is only valid after a SaslHandshake v1 on a "
            "SASL listener",
        )
    authenticator = context.services.authenticator
    try:
        challenge = await _evaluate(session, bytes(request.auth_bytes), connection)
    except SaslAuthenticationFailed as failure:
        await _failed(authenticator, session, connection, failure)
        return SaslAuthenticateResponse(
            error_code=SaslAuthenticationFailedError.error_code, error_message=GENERIC_FAILURE
        )
    lifetime_ms = 0
    if session.state is SaslState.AUTHENTICATED and authenticator.max_reauth_ms > 0:
        lifetime_ms = authenticator.max_reauth_ms
        session.expires_at_ms = now_ms() + lifetime_ms
    return SaslAuthenticateResponse(
        error_code=0, error_message=None, auth_bytes=challenge, session_lifetime_ms=lifetime_ms
    )


async def handle_legacy_token(
    frame: bytearray, connection: KafkaConnection, authenticator: SaslAuthenticator
) -> list[bytes] | None:
    """One raw token after SaslHandshake v0: the answer as a raw size-prefixed frame.

    There is no way to send an error here: a failed login is closed (after the delay).
    """
    session = connection.sasl
    assert session is not None
    try:
        challenge = await _evaluate(session, bytes(frame), connection)
    except SaslAuthenticationFailed as failure:
        await _failed(authenticator, session, connection, failure)
        connection.close()
        return None
    if session.state is SaslState.AUTHENTICATED and authenticator.max_reauth_ms > 0:
        session.expires_at_ms = now_ms() + authenticator.max_reauth_ms
    return [len(challenge).to_bytes(4, "big") + challenge]


async def _evaluate(session: SaslSession, token: bytes, connection: KafkaConnection) -> bytes:
    """Feed one token to the session's mechanism; on completion, log the principal in."""
    server = session.server
    assert server is not None
    if server.expensive:  # PLAIN: PBKDF2 must not stall the loop
        challenge = await asyncio.to_thread(server.evaluate, token)
    else:
        challenge = server.evaluate(token)
    if server.complete:
        username = server.username
        assert username is not None
        if session.username is not None and session.username != username:
            # KIP-368: re-authentication may not change who the connection is.
            raise SaslAuthenticationFailed(
                f"re-authentication as {username!r} on a connection of {session.username!r}",
                username,
            )
        session.username = username
        session.server = None
        session.state = SaslState.AUTHENTICATED
        connection.principal = KafkaPrincipal(USER_TYPE, username)
    return challenge


async def _failed(
    authenticator: SaslAuthenticator,
    session: SaslSession,
    connection: KafkaConnection,
    failure: SaslAuthenticationFailed,
) -> None:
    """Log the failure (no secret), wait the throttle's delay, mark the session failed."""
    mechanism = session.server.mechanism if session.server is not None else "?"
    session.state = SaslState.FAILED
    host = connection.peer.rsplit(":", 1)[0]
    delay = authenticator.throttle.record_failure(host)
    log.info(
        "failed authentication from %s (user %r, SASL mechanism %s): %s",
        connection.peer,
        failure.username,
        mechanism,
        failure.detail,
    )
    if delay > 0:
        await asyncio.sleep(delay)
