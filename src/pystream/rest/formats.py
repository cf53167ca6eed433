"""Content types, request bodies and the embedded formats of API v2.

A v2 media type is ``application/vnd.kafka[.<embedded>].v2+json``: the embedded
format says how keys and values travel inside the JSON -- ``json`` (any JSON
value, stored as its compact UTF-8 text) or ``binary`` (base64).  Plain
``application/json`` means the json format.  The schema-registry formats
(avro, jsonschema, protobuf) are refused with 415: pystream has no schema
registry.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from enum import StrEnum
from json import encoder as json_encoder
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from .errors import (
    BAD_REQUEST,
    CONSUMER_FORMAT_MISMATCH,
    JSON_CONVERSION,
    NOT_ACCEPTABLE,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    RestError,
)

__all__ = [
    "EmbeddedFormat",
    "V2Response",
    "accepted_format",
    "compact_json",
    "parse_json",
    "body_json",
    "produce_format",
    "read_body",
    "read_json",
    "require_v2_json",
]

_SCHEMA_FORMATS = ("avro", "jsonschema", "protobuf")


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# Compact JSON, the bytes Kafka stores for the json format and every response body.
# json.dumps (and JSONEncoder.encode) build a new C encoder on every call, which is
# most of the cost for a small value; this builds it once.  No cycle check: what is
# encoded comes from a JSON parse or is built here.  It is the fallback for what
# orjson refuses (integers beyond 64 bits).
if json_encoder.c_make_encoder is not None:
    _ITERENCODE = json_encoder.c_make_encoder(
        None, _not_json, json_encoder.encode_basestring, None, ":", ",", False, False, True
    )

    def _stdlib_compact_json(value: Any) -> bytes:
        return "".join(_ITERENCODE(value, 0)).encode()

else:  # an interpreter without the C accelerator
    _stdlib_compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # type: ignore[assignment]


def compact_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON (what ``json.dumps(separators=(",", ":"),
    ensure_ascii=False)`` gives, but for floats' exponents: ``1e16``, not ``1e+16``).

    orjson first: on the produce path it is most of the proxy's own JSON cost, and
    several times faster than the standard library's encoder."""
    try:
        return orjson.dumps(value)
    except TypeError:  # an int beyond 64 bits (a json.loads fallback parsed it): stdlib
        return _stdlib_compact_json(value)


def _not_a_number(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def _finite_float(text: str) -> float:
    # As orjson refuses it: 1e400 is no double, and would be stored as null.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text} is beyond a double's range")
    return value


# orjson reads an integer beyond 64 bits as a float, losing digits: a body with a run
# of 19+ digits (maybe such an integer) goes to the standard library's parser.  Found
# by mapping every digit to 0 and searching for 19 zeros: a tenth of a regex's cost.
_DIGITS_TO_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_DIGITS = b"0" * 19


def parse_json(body: bytes) -> Any:
    """``body`` parsed as strict JSON (``ValueError`` if it is not; NaN and Infinity
    are refused, as Confluent's proxy does).

    orjson, several times faster than the standard library's parser, unless the body
    may hold an integer beyond 64 bits, which only the standard library keeps exact."""
    if body.translate(_DIGITS_TO_ZERO).find(_LONG_DIGITS) < 0:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # the standard library's message is the clearer one
    return json.loads(body, parse_constant=_not_a_number, parse_float=_finite_float)


class EmbeddedFormat(StrEnum):
    """How keys and values are carried inside a v2 JSON body."""

    JSON = "json"
    BINARY = "binary"

    @property
    def media_type(self) -> str:
        return f"application/vnd.kafka.{self.value}.v2+json"

    def decode(self, data: Any, what: str) -> bytes | None:
        """A key or value of a produce request as the bytes Kafka stores."""
        if data is None:
            return None
        if self is EmbeddedFormat.JSON:
            return compact_json(data)
        if not isinstance(data, str):
            raise RestError(
                422, JSON_CONVERSION, f"{what} must be a base64 string in the binary format"
            )
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise RestError(422, JSON_CONVERSION, f"{what} is not valid base64") from None

    def encode(self, data: bytes | None, where: str) -> Any:
        """A stored key or value as it goes out in a records response."""
        if data is None:
            return None
        if self is EmbeddedFormat.BINARY:
            return base64.b64encode(data).decode("ascii")
        try:
            return parse_json(data)
        except ValueError:
            raise RestError(
                422,
                JSON_CONVERSION,
                f"the record at {where} is not JSON; read it with a consumer instance "
                f"created with format 'binary'",
            ) from None


class V2Response(Response):
    """A JSON response (``application/vnd.kafka.v2+json`` unless told otherwise),
    rendered with the shared compact encoder."""

    media_type = "application/vnd.kafka.v2+json"

    def render(self, content: Any) -> bytes:
        return compact_json(content)


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _embedded(media_type: str) -> str | None:
    """'json' for application/vnd.kafka.json.v2+json, '' for vnd.kafka.v2+json, None
    for anything that is not a v2 vendor type."""
    if not media_type.startswith("application/vnd.kafka.") or not media_type.endswith(".v2+json"):
        return "" if media_type == "application/vnd.kafka.v2+json" else None
    return media_type[len("application/vnd.kafka.") : -len(".v2+json")]


def produce_format(request: Request) -> EmbeddedFormat:
    """The embedded format named by a produce request's Content-Type (415 otherwise)."""
    media_type = _media_type(request.headers.get("content-type", ""))
    if media_type == "application/json":
        return EmbeddedFormat.JSON
    embedded = _embedded(media_type)
    if embedded in ("json", "binary"):
        return EmbeddedFormat(embedded)
    if embedded in _SCHEMA_FORMATS:
        message = (
            f"the {embedded} format needs a schema registry, which pystream does not have; "
            f"use application/vnd.kafka.json.v2+json or application/vnd.kafka.binary.v2+json"
        )
    else:
        message = (
            f"unsupported Content-Type {media_type or '(none)'!r}: use "
            f"application/vnd.kafka.json.v2+json, application/vnd.kafka.binary.v2+json "
            f"or application/json"
        )
    raise RestError(415, UNSUPPORTED_MEDIA_TYPE, message)


def require_v2_json(request: Request, body_expected: bool) -> None:
    """Consumer and admin requests take ``application/vnd.kafka.v2+json`` or
    ``application/json``; a request without a body may omit the Content-Type."""
    raw = request.headers.get("content-type")
    if raw is None and not body_expected:
        return
    media_type = _media_type(raw or "")
    if media_type not in ("application/vnd.kafka.v2+json", "application/json"):
        raise RestError(
            415,
            UNSUPPORTED_MEDIA_TYPE,
            f"unsupported Content-Type {media_type or '(none)'!r}: use "
            f"application/vnd.kafka.v2+json or application/json",
        )


def accepted_format(request: Request, instance_format: EmbeddedFormat) -> None:
    """Check a records request's Accept header against the consumer instance's format:
    Confluent answers 406 when it names another embedded format."""
    accept = request.headers.get("accept", "")
    wanted = [_media_type(part) for part in accept.split(",") if part.strip()]
    if not wanted or any(w in ("*/*", "application/*", "application/json") for w in wanted):
        return
    embedded = [_embedded(w) for w in wanted]
    if instance_format.value in embedded or "" in embedded:
        return
    if any(e is not None for e in embedded):
        raise RestError(
            406,
            CONSUMER_FORMAT_MISMATCH,
            f"The requested embedded data format does not match the deserializer for this "
            f"consumer instance: it reads {instance_format.value!r}, ask with Accept: "
            f"{instance_format.media_type}",
        )
    raise RestError(
        406,
        NOT_ACCEPTABLE,
        f"the Accept header {accept!r} names nothing this endpoint produces; "
        f"use {instance_format.media_type}",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body's bytes, at most ``limit`` of them (413 beyond)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise RestError(400, BAD_REQUEST, "the client went away before sending the body") from None
    return b"".join(chunks)


def body_json(body: bytes, *, optional: bool = False) -> Any:
    """A request body parsed as JSON (400 if it is not; 422 if it is empty).

    With ``optional`` an empty body is None (e.g. a commit of everything consumed)."""
    if not body.strip():
        if optional:
            return None
        raise RestError(422, JSON_CONVERSION, "the request needs a JSON body")
    try:
        return parse_json(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RestError(400, BAD_REQUEST, f"the body is not valid JSON: {exc}") from None


async def read_json(request: Request, limit: int, *, optional: bool = False) -> Any:
    """The request body parsed as JSON, at most ``limit`` bytes (413 beyond).

    With ``optional`` an empty body is None (e.g. a commit of everything consumed)."""
    return body_json(await read_body(request, limit), optional=optional)


def _too_large(size: int, limit: int) -> RestError:
    return RestError(
        413,
        PAYLOAD_TOO_LARGE,
        f"the request body ({size}+ bytes) is larger than max.request.body.bytes ({limit}); "
        f"send fewer records per request",
    )


def conversion_error(message: str) -> RestError:
    """A body that is JSON but not the shape the endpoint takes (Confluent: 422)."""
    return RestError(422, JSON_CONVERSION, f"Conversion of JSON to Object failed: {message}")


def json_object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise conversion_error(f"{what} must be a JSON object, got {type(body).__name__}")
    return body


def json_list(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if not isinstance(value, list):
        raise conversion_error(f"the body needs {name!r} as a JSON array")
    return value


# Kafka's widths: partitions are int32, offsets int64; a JSON number past them
# is a bad request, not an overflow in the client's encoder.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def json_int(
    item: dict[str, Any], name: str, where: str, *, minimum: int = 0, maximum: int = INT64_MAX
) -> int:
    """``item[name]`` as an integer in [minimum, maximum], or a 422 saying what was wrong."""
    value = item.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise conversion_error(
            f"{where}: {name!r} must be an integer in [{minimum}, {maximum}], got {value!r}"
        )
    return value


def json_str(item: dict[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value:
        raise conversion_error(f"{where}: {name!r} must be a non-empty string, got {value!r}")
    return value
