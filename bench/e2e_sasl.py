"""SASL connection set-ups per second against a running broker.

Each set-up is what a client does before its first real request: TCP connect,
ApiVersions and, on a SASL listener, SaslHandshake + SaslAuthenticate (one
round trip for PLAIN, two for SCRAM), with pystream's own client connection::

    pystream users add bench --password bench-pw --log-dirs /tmp/b --mechanism SCRAM-SHA-256
    pystream users add bench --password bench-pw --log-dirs /tmp/b --mechanism SCRAM-SHA-512
    pystream serve --override log.dirs=/tmp/b \\
        --override listeners=PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9093
    PYTHONPATH=src python bench/e2e_sasl.py 127.0.0.1:9092 127.0.0.1:9093 [SECONDS] [CLIENTS]

Prints set-ups per second for PLAINTEXT (no login) and each mechanism, with
``CLIENTS`` concurrent connectors (default 4) for ``SECONDS`` (default 5) each.
"""

from __future__ import annotations

import asyncio
import sys
import time

from pystream.client.connection import BrokerConnection
from pystream.security.client_security import PLAINTEXT, ClientSecurity, SaslLogin

USER, PASSWORD = "bench", "bench-pw"


async def setups_per_second(
    address: str, security: ClientSecurity, seconds: float, clients: int
) -> float:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + seconds
    done = 0

    async def connector() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            conn = await BrokerConnection.open(
                host,
                int(port),
                client_id="bench-sasl",
                request_timeout_ms=30_000,
                connect_timeout_ms=10_000,
                max_response_size=1 << 20,
                security=security,
            )
            conn.close()
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(connector() for _ in range(clients)))
    return done / (time.monotonic() - started)


async def main(plain: str, sasl: str, seconds: float, clients: int) -> None:
    rate = await setups_per_second(plain, PLAINTEXT, seconds, clients)
    print(f"PLAINTEXT (no login)  {rate:8.0f} set-ups/s")
    for mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        login = ClientSecurity("SASL_PLAINTEXT", sasl=SaslLogin(mechanism, USER, PASSWORD))
        rate = await setups_per_second(sasl, login, seconds, clients)
        print(f"SASL {mechanism:<16} {rate:8.0f} set-ups/s")


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    asyncio.run(
        main(
            args[0],
            args[1],
            float(args[2]) if len(args) > 2 else 5.0,
            int(args[3]) if len(args) > 3 else 4,
        )
    )
