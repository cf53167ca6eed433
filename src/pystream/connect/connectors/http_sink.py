"""The HTTP sink: POSTs records to a URL, a batch at a time, with retries (config names
from Confluent's HTTP sink connector).

Each request's body is a JSON array of up to ``batch.max.size`` record values, in
order (structs and maps as JSON objects, timestamps and dates as ISO-8601 text, bytes
as base64, decimals as strings).  A 2xx answer is success.  A 5xx answer, a 429, a
timeout or a connection error is retried ``max.retries`` times, waiting
``retry.backoff.ms`` and doubling the wait each time (up to 30 s), then raises
:class:`RetriableError` so that the worker delivers the records again later.  Any other
answer (a 4xx) means the records will never be accepted: they go to the errant record
reporter (the dead letter queue) when there is one, else the task fails with the
status and the start of the answer's body.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

import httpx

from ..api import (
    NO_DEFAULT,
    ConfigDef,
    ConfigError,
    ConfigKey,
    ConfigType,
    ConnectError,
    Importance,
    RetriableError,
    SinkRecord,
    SinkTask,
    Task,
    TopicPartition,
)
from .common import SharedConfigSinkConnector, at_least, json_default, one_of

__all__ = ["HttpSink", "HttpSinkConnector", "HttpSinkTask"]

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


def _check_url(value: Any) -> None:
    if not str(value).startswith(("http://", "https://")):
        raise ConfigError(
            f"Invalid value {value!r} for configuration http.api.url: expected http(s)://…"
        )


HTTP_SINK_CONFIG = ConfigDef(
    [
        ConfigKey("topics", ConfigType.LIST, [], Importance.HIGH,
                  "The topics to send (or topics.regex, read by the worker).",
                  group="Connector"),
        ConfigKey("http.api.url", ConfigType.STRING, NO_DEFAULT, Importance.HIGH,
                  "Where the batches are sent.", _check_url, "HTTP"),
        ConfigKey("request.method", ConfigType.STRING, "POST", Importance.MEDIUM,
                  "POST or PUT.", one_of("request.method", ("POST", "PUT")), "HTTP"),
        ConfigKey("headers", ConfigType.STRING, "", Importance.MEDIUM,
                  "Extra request headers: Name:Value pairs separated by header.separator.",
                  group="HTTP"),
        ConfigKey("header.separator", ConfigType.STRING, "|", Importance.LOW,
                  "What separates the pairs in headers.", group="HTTP"),
        ConfigKey("batch.max.size", ConfigType.INT, 500, Importance.MEDIUM,
                  "Records per request at most.", at_least("batch.max.size", 1), "HTTP"),
        ConfigKey("max.retries", ConfigType.INT, 10, Importance.MEDIUM,
                  "Retries of a request that failed with a 5xx, a 429 or a connection "
                  "error.", at_least("max.retries", 0), "Retries"),
        ConfigKey("retry.backoff.ms", ConfigType.INT, 3000, Importance.MEDIUM,
                  "The wait before the first retry; it doubles with each retry (30 s at "
                  "most).", at_least("retry.backoff.ms", 0), "Retries"),
        ConfigKey("http.connect.timeout.ms", ConfigType.INT, 30000, Importance.LOW,
                  "Connection timeout.", at_least("http.connect.timeout.ms", 1), "HTTP"),
        ConfigKey("http.request.timeout.ms", ConfigType.INT, 30000, Importance.LOW,
                  "Timeout waiting for the answer.", at_least("http.request.timeout.ms", 1),
                  "HTTP"),
        ConfigKey("auth.type", ConfigType.STRING, "NONE", Importance.MEDIUM,
                  "NONE or BASIC (with connection.user and connection.password).",
                  one_of("auth.type", ("NONE", "BASIC")), "Security"),
        ConfigKey("connection.user", ConfigType.STRING, None, Importance.MEDIUM,
                  "The user for auth.type=BASIC.", group="Security"),
        ConfigKey("connection.password", ConfigType.PASSWORD, None, Importance.MEDIUM,
                  "The password for auth.type=BASIC.", group="Security"),
    ]
)  # fmt: skip


def parse_headers(text: str, separator: str) -> dict[str, str]:
    """``headers``: ``Name:Value`` pairs separated by ``separator``."""
    headers: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(separator))):
        name, colon, value = pair.partition(":")
        if not colon or not name.strip():
            raise ConfigError(
                f"Invalid value {pair!r} in configuration headers: expected Name:Value "
                f"pairs separated by {separator!r}"
            )
        headers[name.strip()] = value.strip()
    return headers


def parse_http_sink_config(props: Mapping[str, Any]) -> dict[str, Any]:
    """Typed and checked settings (raises :class:`ConfigError` naming the key)."""
    parsed = HTTP_SINK_CONFIG.parse(props)
    parsed["headers"] = parse_headers(parsed["headers"] or "", parsed["header.separator"])
    if parsed["auth.type"] == "BASIC" and not parsed["connection.user"]:
        raise ConfigError("auth.type=BASIC needs connection.user (and connection.password)")
    return parsed


class HttpSinkConnector(SharedConfigSinkConnector):
    """Sends topics' records to an HTTP endpoint (alias ``HttpSink``)."""

    config_def = HTTP_SINK_CONFIG

    @property
    def task(self) -> type[Task]:  # type: ignore[override]
        return HttpSinkTask

    def check(self, props: dict[str, str]) -> None:
        parse_http_sink_config(props)


HttpSink = HttpSinkConnector


class _Rejected(Exception):
    """The endpoint answered with a status that retrying will not change."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code} {response.reason_phrase}: {response.text[:200]!r}"
        )


class HttpSinkTask(SinkTask):
    """Sends records as they are put, ``batch.max.size`` per request."""

    def start(self, props: dict[str, str]) -> None:
        self.config = parse_http_sink_config(props)
        self._stopping = threading.Event()
        auth = None
        if self.config["auth.type"] == "BASIC":
            auth = httpx.BasicAuth(
                self.config["connection.user"], self.config["connection.password"] or ""
            )
        self.client = httpx.Client(
            headers={"Content-Type": "application/json", **self.config["headers"]},
            auth=auth,
            timeout=httpx.Timeout(
                self.config["http.request.timeout.ms"] / 1000,
                connect=self.config["http.connect.timeout.ms"] / 1000,
            ),
        )

    def put(self, records: list[SinkRecord]) -> None:
        size = self.config["batch.max.size"]
        for start in range(0, len(records), size):
            batch = records[start : start + size]
            try:
                self._send(batch)
            except _Rejected as exc:
                reporter = (
                    self.context.errant_record_reporter() if hasattr(self, "context") else None
                )
                if reporter is None:
                    raise ConnectError(str(exc)) from None
                error = ConnectError(str(exc))
                for record in batch:
                    reporter(record, error)

    def flush(self, current_offsets: Mapping[TopicPartition, int]) -> None:
        return None  # everything put was sent (and answered 2xx) before put returned

    def stop(self) -> None:
        self._stopping.set()  # cuts a backoff short
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    def _send(self, batch: list[SinkRecord]) -> None:
        try:
            body = json.dumps([r.value for r in batch], separators=(",", ":"), default=json_default)
        except (TypeError, ValueError) as exc:
            raise ConnectError(f"a record value cannot be sent as JSON: {exc}") from exc
        url = self.config["http.api.url"]
        method = self.config["request.method"]
        retries = self.config["max.retries"]
        backoff = self.config["retry.backoff.ms"] / 1000
        for attempt in range(retries + 1):
            try:
                response = self.client.request(method, url, content=body)
            except httpx.HTTPError as exc:
                problem = f"{method} {url} failed: {exc!r}"
            else:
                if response.is_success:
                    return
                if response.status_code < 500 and response.status_code != 429:
                    raise _Rejected(response)
                problem = f"{method} {url} answered {response.status_code}: {response.text[:200]!r}"
            if attempt < retries:
                wait = min(backoff * 2**attempt, MAX_BACKOFF_S)
                log.warning(
                    "HTTP sink: %s; retry %d of %d in %.1f s", problem, attempt + 1, retries, wait
                )
                if self._stopping.wait(wait):
                    break
        raise RetriableError(f"{problem} (after {retries} retries)")
