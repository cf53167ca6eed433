"""Request/response headers and the rule for which header version an API version uses.

From Kafka's JSON (``flexibleVersions`` of each API) and KIP-482 / KIP-511:

* a flexible API version uses **request header v2** (v1 plus a tagged-field
  section; ``ClientId`` stays an int16-length nullable string) and
  **response header v1** (correlation id plus a tagged-field section);
* any other version uses request header v1 and response header v0;
* **ApiVersions responses always use header v0**, so a client can read the
  answer to an ApiVersions request whose version the broker does not know;
* ControlledShutdown v0 used request header v0 (no ``ClientId``);
* a version above the spec's maximum follows the open-ended flexible range
  (ApiVersions v5 would still be read with header v2), and an unknown api key
  is read with header v1, enough to answer it with its correlation id.

Payloads here are frame bodies (without the 4-byte size); the ``*_frame``
encoders return complete frames ready for the socket.
"""

from __future__ import annotations

import struct
from typing import Any

from pystream.errors import UnsupportedVersionError

from .codec import Reader, Struct
from .framing import begin_frame, end_frame
from .messages import API_SPECS, RequestHeader, ResponseHeader

__all__ = [
    "RequestHeader",
    "ResponseHeader",
    "decode_request",
    "decode_request_body",
    "decode_request_header",
    "decode_response",
    "encode_request_frame",
    "encode_response_frame",
    "request_header_version",
    "response_header_version",
]

_KEY_AND_VERSION = struct.Struct(">hh")


def request_header_version(api_key: int, api_version: int) -> int:
    """Request header version (0, 1 or 2) for an API version."""
    spec = API_SPECS.get(api_key)
    if spec is None:
        return 1
    return spec.request_header_version(api_version)


def response_header_version(api_key: int, api_version: int) -> int:
    """Response header version (0 or 1) for an API version."""
    spec = API_SPECS.get(api_key)
    if spec is None:
        return 0
    return spec.response_header_version(api_version)


def decode_request_header(payload: Any) -> tuple[RequestHeader, Reader]:
    """Read the request header; return it and a reader positioned at the body.

    Raises :class:`ProtocolDecodeError` if even the header is malformed (then
    there is no correlation id to answer with: close the connection).
    """
    reader = Reader(payload)
    if reader.remaining < 4:
        raise reader.error("RequestHeader", f"truncated: {reader.remaining} bytes")
    api_key, api_version = _KEY_AND_VERSION.unpack_from(reader.buf, 0)
    header = RequestHeader.decode(reader, request_header_version(api_key, api_version))
    return header, reader


def decode_request_body(header: RequestHeader, reader: Reader) -> Struct:
    """Decode the request body that follows ``header``.

    Bytes left after the body are ignored, as Kafka's parser does: librdkafka
    2.16's AdminClient sends a Metadata v12 request with three extra bytes.

    Raises :class:`UnsupportedVersionError` for an unknown api key or version
    (answerable: the header is known) and :class:`ProtocolDecodeError` for
    malformed bytes.
    """
    api_key, version = header.request_api_key, header.request_api_version
    spec = API_SPECS.get(api_key)
    if spec is None:
        raise UnsupportedVersionError(f"unknown api key {api_key}")
    if version not in spec.valid_versions:
        raise UnsupportedVersionError(
            f"{spec.name} v{version} is not supported (valid: {spec.valid_versions})"
        )
    return spec.request.decode(reader, version)


def decode_request(payload: Any) -> tuple[RequestHeader, Struct]:
    """Header and body of one request frame body."""
    header, reader = decode_request_header(payload)
    return header, decode_request_body(header, reader)


def encode_request_frame(header: RequestHeader, body: Struct) -> bytes:
    """A complete request frame: size, header (version chosen by the rule), body."""
    writer = begin_frame()
    version = header.request_api_version
    header.write(writer, request_header_version(header.request_api_key, version))
    body.write(writer, version)
    return end_frame(writer)


def encode_response_frame(
    api_key: int, api_version: int, correlation_id: int, body: Struct
) -> bytes:
    """A complete response frame: size, response header, body encoded at ``api_version``."""
    writer = begin_frame()
    ResponseHeader(correlation_id=correlation_id).write(
        writer, response_header_version(api_key, api_version)
    )
    body.write(writer, api_version)
    return end_frame(writer)


def decode_response(payload: Any, api_key: int, api_version: int) -> tuple[ResponseHeader, Struct]:
    """Header and body of one response frame body, for the request that was sent."""
    spec = API_SPECS.get(api_key)
    if spec is None:
        raise UnsupportedVersionError(f"unknown api key {api_key}")
    reader = Reader(payload)
    header = ResponseHeader.decode(reader, spec.response_header_version(api_version))
    body = spec.response.decode(reader, api_version)
    reader.expect_end(f"{spec.name}Response v{api_version}")
    return header, body
