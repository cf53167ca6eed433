"""What a handler gets besides its request: the header, the connection, the broker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pystream.protocol.messages import RequestHeader

if TYPE_CHECKING:
    from pystream.broker.network import KafkaConnection
    from pystream.broker.server import Broker


@dataclass(slots=True)
class RequestContext:
    """One request in flight."""

    header: RequestHeader
    connection: KafkaConnection
    broker: Broker

    @property
    def api_version(self) -> int:
        return self.header.request_api_version

    @property
    def client_id(self) -> str | None:
        return self.header.client_id
