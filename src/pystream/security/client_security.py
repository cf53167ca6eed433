"""How a client (pystream's own, or a broker talking to its peers) secures a connection."""

from __future__ import annotations

import ssl
from dataclasses import dataclass


@dataclass(frozen=True)
class ClientSecurity:
    """A connection's security protocol and, for SSL, the TLS context to wrap it with."""

    security_protocol: str = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if self.security_protocol in ("SSL", "SASL_SSL") and self.ssl_context is None:
            raise ValueError(f"security_protocol={self.security_protocol} needs an SSL context")


#: No TLS, no SASL.
PLAINTEXT = ClientSecurity()
