"""How a client (pystream's own, or a broker talking to its peers) secures a connection."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

#: The SASL mechanisms pystream's client side speaks.
CLIENT_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class SaslLogin:
    """The SASL mechanism and credentials a connection logs in with."""

    mechanism: str
    username: str
    password: str = field(repr=False)  # never in a repr (logs, tracebacks)

    def __post_init__(self) -> None:
        if self.mechanism not in CLIENT_SASL_MECHANISMS:
            raise ValueError(
                f"SASL mechanism {self.mechanism!r}: use {', '.join(CLIENT_SASL_MECHANISMS)}"
            )


@dataclass(frozen=True)
class ClientSecurity:
    """A connection's security protocol and what it needs: for SSL and SASL_SSL the TLS
    context to wrap it with, for SASL_PLAINTEXT and SASL_SSL the login (mechanism,
    username, password)."""

    security_protocol: str = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None
    sasl: SaslLogin | None = None

    def __post_init__(self) -> None:
        if self.security_protocol in ("SSL", "SASL_SSL") and self.ssl_context is None:
            raise ValueError(f"security_protocol={self.security_protocol} needs an SSL context")
        if self.security_protocol.startswith("SASL_") and self.sasl is None:
            raise ValueError(
                f"security_protocol={self.security_protocol} needs a SASL mechanism, username "
                "and password"
            )


#: No TLS, no SASL.
PLAINTEXT = ClientSecurity()
