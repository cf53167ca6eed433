"""SCRAM credentials (RFC 5802 / RFC 7677) as Kafka stores them.

A password is never stored: only the salt, the iteration count and the two
keys derived from the salted password (``StoredKey`` proves a client,
``ServerKey`` proves the server).  The text form is Kafka's
``ScramCredentialUtils.credentialToString``:
``salt=<base64>,stored_key=<base64>,server_key=<base64>,iterations=4096``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = [
    "MAX_ITERATIONS",
    "MECHANISM_TYPES",
    "MIN_ITERATIONS",
    "SCRAM_MECHANISMS",
    "ScramCredential",
    "check_iterations",
    "new_credential",
]

#: Kafka's ``ScramMechanism``: name -> (hash name, type id used by the admin APIs).
SCRAM_MECHANISMS: dict[str, str] = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
#: AlterUserScramCredentials / DescribeUserScramCredentials mechanism ids (``ScramMechanism.type``).
MECHANISM_TYPES: dict[int, str] = {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}
#: Kafka's bounds (``ScramMechanism.minIterations`` and the controller's 16384 maximum).
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384


def mechanism_type(name: str) -> int:
    """The admin API's id of a SCRAM mechanism name (0: unknown)."""
    return next((t for t, n in MECHANISM_TYPES.items() if n == name), 0)


def hmac_digest(mechanism: str, key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, SCRAM_MECHANISMS[mechanism]).digest()


def hash_digest(mechanism: str, data: bytes) -> bytes:
    return hashlib.new(SCRAM_MECHANISMS[mechanism], data).digest()


def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    """``Hi(Normalize(password), salt, i)``: PBKDF2-HMAC (the expensive step)."""
    return hashlib.pbkdf2_hmac(SCRAM_MECHANISMS[mechanism], password.encode(), salt, iterations)


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """One user's credential for one SCRAM mechanism."""

    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    @classmethod
    def from_salted_password(
        cls, mechanism: str, salted: bytes, salt: bytes, iterations: int
    ) -> ScramCredential:
        """The credential for a salted password (what AlterUserScramCredentials carries)."""
        client_key = hmac_digest(mechanism, salted, b"Client Key")
        return cls(
            salt=salt,
            stored_key=hash_digest(mechanism, client_key),
            server_key=hmac_digest(mechanism, salted, b"Server Key"),
            iterations=iterations,
        )

    def matches_password(self, mechanism: str, password: str) -> bool:
        """True if ``password`` derives this credential (PLAIN checks this way)."""
        salted = salted_password(mechanism, password, self.salt, self.iterations)
        candidate = hash_digest(mechanism, hmac_digest(mechanism, salted, b"Client Key"))
        return hmac.compare_digest(candidate, self.stored_key)

    def to_string(self) -> str:
        """Kafka's ``credentialToString`` form (stored in ZooKeeper and the local metadata)."""
        b64 = base64.b64encode
        return (
            f"salt={b64(self.salt).decode()},stored_key={b64(self.stored_key).decode()},"
            f"server_key={b64(self.server_key).decode()},iterations={self.iterations}"
        )

    @classmethod
    def from_string(cls, text: str) -> ScramCredential:
        """Parse :meth:`to_string`'s form; ValueError naming what is missing or bad."""
        fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
        try:
            return cls(
                salt=base64.b64decode(fields["salt"], validate=True),
                stored_key=base64.b64decode(fields["stored_key"], validate=True),
                server_key=base64.b64decode(fields["server_key"], validate=True),
                iterations=int(fields["iterations"]),
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(
                f"malformed SCRAM credential (want salt=,stored_key=,server_key=,iterations=): "
                f"{exc}"
            ) from exc


def check_iterations(iterations: int) -> None:
    """ValueError unless ``iterations`` is in Kafka's range for SCRAM (4096..16384)."""
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(
            f"iterations must be in {MIN_ITERATIONS}..{MAX_ITERATIONS}, got {iterations}"
        )


def new_credential(
    mechanism: str, password: str, iterations: int = MIN_ITERATIONS
) -> ScramCredential:
    """A fresh credential with a random salt (``kafka-configs --add-config SCRAM-...``)."""
    if mechanism not in SCRAM_MECHANISMS:
        raise ValueError(
            f"unknown SCRAM mechanism {mechanism!r}: use one of {', '.join(SCRAM_MECHANISMS)}"
        )
    check_iterations(iterations)
    salt = secrets.token_bytes(32)
    return ScramCredential.from_salted_password(
        mechanism, salted_password(mechanism, password, salt, iterations), salt, iterations
    )
