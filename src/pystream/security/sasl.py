"""SASL server mechanisms: PLAIN (RFC 4616) and SCRAM-SHA-256/512 (RFC 5802, 7677).

Each exchange is a :class:`SaslServer`: the broker feeds it the client's
tokens (:meth:`SaslServer.evaluate`) and sends back what it returns until
:attr:`SaslServer.complete`; then :attr:`SaslServer.username` is who logged
in.  Failures raise :class:`SaslAuthenticationFailed`, whose ``detail`` is for
the broker's log (never a secret) while the client only gets a generic
message.  Credentials come from a lookup ``(username, mechanism) ->
ScramCredential | None``: PLAIN checks the password against the same stored
SCRAM hashes, so no plaintext password exists anywhere.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping

from pystream.security.scram import (
    MIN_ITERATIONS,
    SCRAM_MECHANISMS,
    ScramCredential,
    hash_digest,
    hmac_digest,
    salted_password,
)

__all__ = [
    "SASL_API_KEYS",
    "SASL_PROTOCOLS",
    "SUPPORTED_MECHANISMS",
    "CredentialLookup",
    "LoginThrottle",
    "PlainServer",
    "SaslAuthenticationFailed",
    "SaslAuthenticator",
    "SaslServer",
    "SaslSession",
    "SaslState",
    "ScramServer",
    "new_server",
]

CredentialLookup = Callable[[str, str], "ScramCredential | None"]

SUPPORTED_MECHANISMS = ("PLAIN", *SCRAM_MECHANISMS)

#: What a client is told: never which part (user or password) was wrong.
GENERIC_FAILURE = "Authentication failed: Invalid username or password"


class SaslAuthenticationFailed(Exception):
    """The login failed; ``detail`` says why, for the broker's log only."""

    def __init__(self, detail: str, username: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.username = username


class SaslServer:
    """The server side of one SASL exchange."""

    mechanism: str = ""
    #: True if evaluating a token is CPU-heavy (PLAIN: PBKDF2): run it in a thread.
    expensive = False

    def __init__(self) -> None:
        self.complete = False
        self.username: str | None = None

    def evaluate(self, token: bytes) -> bytes:
        """Consume one client token, return the server's answer (may be b"")."""
        raise NotImplementedError


class PlainServer(SaslServer):
    """PLAIN: one message ``authzid NUL authcid NUL passwd``."""

    mechanism = "PLAIN"
    expensive = True

    def __init__(self, lookup: CredentialLookup) -> None:
        super().__init__()
        self._lookup = lookup

    def evaluate(self, token: bytes) -> bytes:
        if self.complete:
            raise SaslAuthenticationFailed("PLAIN exchange already complete")
        parts = bytes(token).split(b"\0")
        if len(parts) != 3:
            raise SaslAuthenticationFailed("malformed PLAIN message (want authzid\\0user\\0pass)")
        try:
            authzid, username, password = (p.decode() for p in parts)
        except UnicodeDecodeError as exc:
            raise SaslAuthenticationFailed("PLAIN message is not UTF-8") from exc
        if not username:
            raise SaslAuthenticationFailed("PLAIN message without a username")
        if authzid and authzid != username:
            raise SaslAuthenticationFailed(
                "authorization id differs from the username (impersonation is not supported)",
                username,
            )
        # PBKDF2 with the stored salt and iterations, compared with the StoredKey: the
        # caller runs this in a thread (thousands of HMACs).
        for mechanism in SCRAM_MECHANISMS:
            credential = self._lookup(username, mechanism)
            if credential is not None:
                if credential.matches_password(mechanism, password):
                    break
                raise SaslAuthenticationFailed("wrong password", username)
        else:
            raise SaslAuthenticationFailed("unknown user", username)
        self.username = username
        self.complete = True
        return b""


def _sasl_name(text: str) -> str:
    """RFC 5802 saslname decoding (``=2C`` is ``,``, ``=3D`` is ``=``)."""
    if "=" in text.replace("=2C", "").replace("=3D", ""):
        raise SaslAuthenticationFailed("invalid username encoding")
    return text.replace("=2C", ",").replace("=3D", "=")


class ScramServer(SaslServer):
    """SCRAM-SHA-256 / SCRAM-SHA-512, server side (no channel binding, as Kafka)."""

    def __init__(self, mechanism: str, lookup: CredentialLookup) -> None:
        super().__init__()
        self.mechanism = mechanism
        self._lookup = lookup
        self._state = 0
        self._gs2_header = b""
        self._client_first_bare = b""
        self._server_first = b""
        self._nonce = ""
        self._credential: ScramCredential | None = None
        self._known_user = False

    def evaluate(self, token: bytes) -> bytes:
        if self._state == 0:
            return self._client_first(bytes(token))
        if self._state == 1:
            return self._client_final(bytes(token))
        raise SaslAuthenticationFailed("SCRAM exchange already complete")

    def _client_first(self, message: bytes) -> bytes:
        try:
            text = message.decode()
        except UnicodeDecodeError as exc:
            raise SaslAuthenticationFailed("client-first-message is not UTF-8") from exc
        # gs2-header: "n," or "y," (no channel binding) then "[a=authzid],"
        cbind, sep1, rest = text.partition(",")
        authzid_part, sep2, bare = rest.partition(",")
        if not (sep1 and sep2) or cbind not in ("n", "y"):
            raise SaslAuthenticationFailed("invalid or unsupported SCRAM gs2 header")
        if authzid_part and not authzid_part.startswith("a="):
            raise SaslAuthenticationFailed("invalid SCRAM authzid")
        attributes = bare.split(",")
        if (
            len(attributes) < 2
            or not attributes[0].startswith("n=")
            or not (attributes[1].startswith("r="))
        ):
            raise SaslAuthenticationFailed("invalid client-first-message")
        username = _sasl_name(attributes[0][2:])
        client_nonce = attributes[1][2:]
        if not username or not client_nonce:
            raise SaslAuthenticationFailed("client-first-message without a username or nonce")
        extensions = dict(a.split("=", 1) for a in attributes[2:] if "=" in a)
        if extensions.get("tokenauth", "false").lower() == "true":
            raise SaslAuthenticationFailed("delegation tokens are not supported", username)
        authzid = _sasl_name(authzid_part[2:]) if authzid_part else ""
        if authzid and authzid != username:
            raise SaslAuthenticationFailed(
                "authorization id differs from the username (impersonation is not supported)",
                username,
            )
        self.username = username
        credential = self._lookup(username, self.mechanism)
        self._known_user = credential is not None
        if credential is None:
            # Go on with a fake credential (salt derived from the name: stable per user)
            # so an unknown user looks exactly like a wrong password.
            salt = hashlib.sha256(b"pystream-unknown-user:" + username.encode()).digest()
            credential = ScramCredential(salt, secrets.token_bytes(32), b"", MIN_ITERATIONS)
        self._credential = credential
        self._gs2_header = (text[: len(cbind) + len(authzid_part) + 2]).encode()
        self._client_first_bare = bare.encode()
        self._nonce = client_nonce + secrets.token_urlsafe(24)
        salt_b64 = base64.b64encode(credential.salt).decode()
        self._server_first = f"r={self._nonce},s={salt_b64},i={credential.iterations}".encode()
        self._state = 1
        return self._server_first

    def _client_final(self, message: bytes) -> bytes:
        try:
            text = message.decode()
        except UnicodeDecodeError as exc:
            raise SaslAuthenticationFailed("client-final-message is not UTF-8") from exc
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        attributes = dict(a.split("=", 1) for a in without_proof.split(",") if "=" in a)
        if not sep or "c" not in attributes or "r" not in attributes:
            raise SaslAuthenticationFailed("invalid client-final-message", self.username)
        if attributes["r"] != self._nonce:
            raise SaslAuthenticationFailed("nonce mismatch", self.username)
        try:
            channel_binding = base64.b64decode(attributes["c"], validate=True)
            proof = base64.b64decode(proof_b64, validate=True)
        except ValueError as exc:
            raise SaslAuthenticationFailed("invalid base64 in client-final-message") from exc
        if channel_binding != self._gs2_header:
            raise SaslAuthenticationFailed("channel binding mismatch", self.username)
        credential = self._credential
        assert credential is not None
        auth_message = b",".join(
            (self._client_first_bare, self._server_first, without_proof.encode())
        )
        mechanism = self.mechanism
        client_signature = hmac_digest(mechanism, credential.stored_key, auth_message)
        if len(proof) != len(client_signature):
            raise SaslAuthenticationFailed("client proof of the wrong length", self.username)
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        valid = hmac.compare_digest(hash_digest(mechanism, client_key), credential.stored_key)
        if not (valid and self._known_user):
            raise SaslAuthenticationFailed(
                "wrong password" if self._known_user else "unknown user", self.username
            )
        server_signature = hmac_digest(mechanism, credential.server_key, auth_message)
        self._state = 2
        self.complete = True
        return b"v=" + base64.b64encode(server_signature)


def new_server(mechanism: str, lookup: CredentialLookup) -> SaslServer:
    """The server for an enabled mechanism name (ValueError if pystream has none)."""
    if mechanism == "PLAIN":
        return PlainServer(lookup)
    if mechanism in SCRAM_MECHANISMS:
        return ScramServer(mechanism, lookup)
    raise ValueError(f"unsupported SASL mechanism {mechanism!r}")


# --- the broker side of a connection --------------------------------------------------------
#: Security protocols whose connections must authenticate with SASL first.
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
#: What a connection may send before it has authenticated (Kafka: anything else is
#: ILLEGAL_SASL_STATE and the connection is closed).
SASL_API_KEYS = frozenset({17, 18, 36})  # SaslHandshake, ApiVersions, SaslAuthenticate


class SaslState(enum.Enum):
    """Where one connection's SASL exchange is."""

    HANDSHAKE = "handshake"  # nothing yet: ApiVersions or SaslHandshake
    AUTHENTICATE = "authenticate"  # after SaslHandshake v1: SaslAuthenticate requests
    LEGACY_TOKENS = "legacy"  # after SaslHandshake v0: raw size-prefixed tokens, no header
    AUTHENTICATED = "authenticated"
    FAILED = "failed"  # the answer goes out, then the connection closes


class SaslSession:
    """The SASL state of one connection on a SASL listener."""

    __slots__ = ("expires_at_ms", "server", "state", "username")

    def __init__(self) -> None:
        self.state = SaslState.HANDSHAKE
        self.server: SaslServer | None = None
        # Who logged in (kept while re-authenticating: KIP-368 keeps the session usable).
        self.username: str | None = None
        # KIP-368: the session ends here unless re-authenticated (0: never).
        self.expires_at_ms = 0

    def authenticated(self, now_ms: int) -> bool:
        """Whether requests beyond the SASL ones may be served now."""
        return self.username is not None and (
            self.expires_at_ms == 0 or now_ms < self.expires_at_ms
        )


class LoginThrottle:
    """Slows repeated failed logins from one address: each failure within
    ``window_s`` of the previous one adds ``base_delay_ms`` to the delay before the
    next failure is answered (capped at ``max_steps`` times it).  The delay is an
    ``asyncio.sleep`` of the failing connection only: nobody else waits."""

    def __init__(self, base_delay_ms: int, max_steps: int = 50, window_s: float = 60.0) -> None:
        self.base_delay_ms = base_delay_ms
        self.max_steps = max_steps
        self.window_s = window_s
        self._failures: dict[str, tuple[int, float]] = {}

    def record_failure(self, host: str) -> float:
        """Count a failure from ``host``; the delay (seconds) before answering it."""
        now = time.monotonic()
        count, last = self._failures.get(host, (0, now))
        count = 1 if now - last > self.window_s else count + 1
        self._failures[host] = (count, now)
        if len(self._failures) > 10_000:  # forget quiet addresses: bounded memory
            self._failures = {
                h: v for h, v in self._failures.items() if now - v[1] <= self.window_s
            }
        return self.base_delay_ms * min(count, self.max_steps) / 1000


class SaslAuthenticator:
    """The broker's SASL settings and shared state: the mechanisms enabled on each SASL
    listener, the credential lookup, session lifetime (``connections.max.reauth.ms``) and
    the login throttle."""

    def __init__(
        self,
        enabled_mechanisms: Mapping[str, tuple[str, ...]],
        lookup: CredentialLookup,
        *,
        max_reauth_ms: int = 0,
        failed_delay_ms: int = 100,
    ) -> None:
        """``enabled_mechanisms``: {listener name: its ``sasl.enabled.mechanisms``}."""
        self.enabled_mechanisms = dict(enabled_mechanisms)
        self.lookup = lookup
        self.max_reauth_ms = max_reauth_ms
        self.throttle = LoginThrottle(failed_delay_ms)

    def mechanisms(self, listener_name: str) -> tuple[str, ...]:
        """The mechanisms offered on ``listener_name`` (none on a listener without SASL)."""
        return self.enabled_mechanisms.get(listener_name, ())

    def new_server(self, mechanism: str, listener_name: str) -> SaslServer | None:
        """A server for ``mechanism``, None if it is not enabled on ``listener_name``."""
        if mechanism not in self.mechanisms(listener_name):
            return None
        return new_server(mechanism, self.lookup)


# --- the client side (pystream's own clients) --------------------------------------------------
class SaslClient:
    """The client side of one SASL exchange: send :meth:`first_token`, then feed each
    server answer to :meth:`evaluate` while it returns a token to send."""

    def __init__(self, mechanism: str, username: str, password: str) -> None:
        self.mechanism = mechanism
        self.username = username
        self.password = password

    def first_token(self) -> bytes:
        raise NotImplementedError

    def evaluate(self, challenge: bytes) -> bytes | None:
        """The next token to send, or None when the exchange is complete."""
        raise NotImplementedError


class PlainClient(SaslClient):
    """PLAIN: ``\\0user\\0password`` (send it over TLS where that matters)."""

    def first_token(self) -> bytes:
        return f"\0{self.username}\0{self.password}".encode()

    def evaluate(self, challenge: bytes) -> bytes | None:
        return None


class ScramClient(SaslClient):
    """SCRAM-SHA-256/512 client (RFC 5802), checking the server's signature."""

    def __init__(self, mechanism: str, username: str, password: str) -> None:
        super().__init__(mechanism, username, password)
        name = username.replace("=", "=3D").replace(",", "=2C")
        self._nonce = secrets.token_urlsafe(24)
        self._client_first_bare = f"n={name},r={self._nonce}"
        self._server_signature: bytes | None = None

    def first_token(self) -> bytes:
        return f"n,,{self._client_first_bare}".encode()

    def evaluate(self, challenge: bytes) -> bytes | None:
        mechanism = self.mechanism
        if self._server_signature is not None:  # server-final-message
            fields = dict(a.split("=", 1) for a in challenge.decode().split(",") if "=" in a)
            if "e" in fields:
                raise SaslAuthenticationFailed(f"server error: {fields['e']}")
            if not hmac.compare_digest(
                base64.b64decode(fields.get("v", "")), self._server_signature
            ):
                raise SaslAuthenticationFailed("the server's SCRAM signature is wrong")
            return None
        server_first = challenge.decode()
        fields = dict(a.split("=", 1) for a in server_first.split(",") if "=" in a)
        nonce, salt, iterations = fields["r"], base64.b64decode(fields["s"]), int(fields["i"])
        if not nonce.startswith(self._nonce):
            raise SaslAuthenticationFailed("the server's SCRAM nonce does not extend ours")
        salted = salted_password(mechanism, self.password, salt, iterations)
        client_key = hmac_digest(mechanism, salted, b"Client Key")
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._client_first_bare},{server_first},{without_proof}".encode()
        signature = hmac_digest(mechanism, hash_digest(mechanism, client_key), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac_digest(mechanism, salted, b"Server Key")
        self._server_signature = hmac_digest(mechanism, server_key, auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def new_client(mechanism: str, username: str, password: str) -> SaslClient:
    """A client for a mechanism pystream has (ValueError otherwise)."""
    if mechanism == "PLAIN":
        return PlainClient(mechanism, username, password)
    if mechanism in SCRAM_MECHANISMS:
        return ScramClient(mechanism, username, password)
    raise ValueError(
        f"unsupported sasl_mechanism {mechanism!r}: use one of {', '.join(SUPPORTED_MECHANISMS)}"
    )
