"""Errors in Confluent REST Proxy's shape: ``{"error_code": <int>, "message": "..."}``.

The codes are Confluent's (kafka-rest ``Errors.java`` and rest-utils
``KafkaExceptionMapper``), so scripts written against Confluent's proxy can
branch on them unchanged.  Every failure a request can cause is a
:class:`RestError`; the app's exception handlers turn it (and Starlette's own
404/405, and Kafka errors) into a JSON response.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from pystream.client.errors import KafkaConnectionError
from pystream.errors import KafkaError

__all__ = [
    "CONSUMER_ALREADY_EXISTS",
    "CONSUMER_ALREADY_SUBSCRIBED",
    "CONSUMER_FORMAT_MISMATCH",
    "CONSUMER_INSTANCE_NOT_FOUND",
    "ILLEGAL_STATE",
    "INVALID_CONSUMER_CONFIG",
    "JSON_CONVERSION",
    "KAFKA_ERROR",
    "KAFKA_RETRIABLE_ERROR",
    "PARTITION_NOT_FOUND",
    "TOPIC_NOT_FOUND",
    "V2_JSON",
    "RestError",
    "error_response",
    "kafka_error_code",
    "rest_error_from_kafka",
]

log = logging.getLogger("pystream.rest")

# The media type of every v2 response that has no embedded format.
V2_JSON = "application/vnd.kafka.v2+json"

BAD_REQUEST = 400
KAFKA_BAD_REQUEST = 40002
KAFKA_AUTHENTICATION = 40101
KAFKA_AUTHORIZATION = 40301
TOPIC_NOT_FOUND = 40401
PARTITION_NOT_FOUND = 40402
CONSUMER_INSTANCE_NOT_FOUND = 40403
UNKNOWN_TOPIC_OR_PARTITION = 40403  # rest-utils' KAFKA_UNKNOWN_TOPIC_PARTITION_CODE
CONSUMER_FORMAT_MISMATCH = 40601
# The Accept header names no media type the endpoint produces.
NOT_ACCEPTABLE = 40602
CONSUMER_ALREADY_SUBSCRIBED = 40901
CONSUMER_ALREADY_EXISTS = 40902
ILLEGAL_STATE = 40903
PAYLOAD_TOO_LARGE = 413
UNSUPPORTED_MEDIA_TYPE = 415
JSON_CONVERSION = 42203
INVALID_CONSUMER_CONFIG = 42204
KAFKA_ERROR = 50002
KAFKA_RETRIABLE_ERROR = 50003
BROKER_NOT_AVAILABLE = 50302

# Kafka errors that mean the request was wrong (rest-utils: 400 / 40002): an invalid
# topic name, a topic that exists, bad partition counts, replication or configs.
_BAD_REQUEST_ERRORS = frozenset({17, 36, 37, 38, 39, 40, 42, 44})


class RestError(Exception):
    """A request that failed: HTTP ``status``, Confluent ``error_code`` and a message
    that says what was wrong and what to do."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers: dict[str, str] | None = None  # e.g. WWW-Authenticate on a 401


def error_response(status: int, error_code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error_code": error_code, "message": message}, status_code=status, media_type=V2_JSON
    )


def kafka_error_code(exc: BaseException) -> int:
    """Confluent's code for a Kafka error, as in a produce response's ``offsets``."""
    if isinstance(exc, KafkaError):
        if exc.error_code == 3:
            return UNKNOWN_TOPIC_OR_PARTITION
        if exc.error_code in _BAD_REQUEST_ERRORS:
            return KAFKA_BAD_REQUEST
        if exc.error_code in (29, 30, 31):
            return KAFKA_AUTHORIZATION
        if exc.error_code in (33, 34, 58):
            return KAFKA_AUTHENTICATION
        if exc.retriable:
            return KAFKA_RETRIABLE_ERROR
    return KAFKA_ERROR


def rest_error_from_kafka(exc: BaseException) -> RestError:
    """A Kafka (or broker connection) failure as the response Confluent's proxy gives."""
    code = kafka_error_code(exc)
    status = code // 100
    if isinstance(exc, KafkaConnectionError) or (
        isinstance(exc, KafkaError) and exc.error_code == 8
    ):
        status, code = 503, BROKER_NOT_AVAILABLE
    elif isinstance(exc, TimeoutError):
        status, code = 500, KAFKA_RETRIABLE_ERROR
    return RestError(status, code, f"Kafka error: {exc}")


async def handle_rest_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RestError)
    response = error_response(exc.status, exc.error_code, exc.message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (no such route: 404, wrong method: 405) in Confluent's shape."""
    assert isinstance(exc, HTTPException)
    response = error_response(exc.status_code, exc.status_code, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def handle_kafka_error(request: Request, exc: Exception) -> JSONResponse:
    error = rest_error_from_kafka(exc)
    log.warning("%s %s: %s", request.method, request.url.path, error.message)
    return error_response(error.status, error.error_code, error.message)


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not bad input: logged with its traceback, answered in the same shape."""
    log.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, 500, f"internal error: {type(exc).__name__}: {exc}")


EXCEPTION_HANDLERS = {
    RestError: handle_rest_error,
    HTTPException: handle_http_error,
    KafkaError: handle_kafka_error,
    TimeoutError: handle_kafka_error,
    Exception: handle_unexpected,
}
