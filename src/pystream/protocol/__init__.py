"""Kafka wire protocol: framing, headers and a codec for every API key and version.

* :mod:`.codec` -- bounds-checked :class:`Reader` / :class:`Writer`, the
  :class:`Struct` base of generated messages, :class:`ProtocolDecodeError`;
* :mod:`.framing` -- size-prefixed frames with a maximum size;
* :mod:`.headers` -- request/response headers and which version each API uses;
* :mod:`.messages` -- generated from Kafka's JSON by ``scripts/gen_protocol.py``,
  with the registry ``API_SPECS`` (api key -> :class:`ApiSpec`).

Typical broker use::

    for payload in decoder.feed(data):            # FrameDecoder
        header, reader = decode_request_header(payload)
        request = decode_request_body(header, reader)
        ...
        frame = encode_response_frame(key, version, header.correlation_id, response)
"""

from .codec import ProtocolDecodeError, Reader, Struct, Writer
from .framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, frame_size
from .headers import (
    decode_request,
    decode_request_body,
    decode_request_header,
    decode_response,
    encode_request_frame,
    encode_response_frame,
    request_header_version,
    response_header_version,
)
from .messages import API_BY_NAME, API_SPECS, ApiSpec, RequestHeader, ResponseHeader

__all__ = [
    "API_BY_NAME",
    "API_SPECS",
    "DEFAULT_MAX_FRAME_SIZE",
    "ApiSpec",
    "FrameDecoder",
    "ProtocolDecodeError",
    "Reader",
    "RequestHeader",
    "ResponseHeader",
    "Struct",
    "Writer",
    "decode_request",
    "decode_request_body",
    "decode_request_header",
    "decode_response",
    "encode_request_frame",
    "encode_response_frame",
    "frame_size",
    "request_header_version",
    "response_header_version",
]
