"""The console's Starlette app: routes, the app factory and its lifespan.

Pages are rendered on the server (Jinja2, autoescaped); forms POST and redirect back with
a flash message (a cookie read once).  A cluster that cannot be reached gives every page
a 503 saying so; a Kafka error is shown with its name and message, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pystream.aio import NewPartitions
from pystream.errors import KafkaError
from pystream.version import __version__

from . import cluster_view, groups, messages, security_view
from .clients import ConsoleClients, is_unreachable
from .config import ConsoleConfig
from .forms import parse_count, parse_pairs, parse_timestamp, read_form
from .live_metrics import LiveMetrics

__all__ = ["create_app"]

log = logging.getLogger("pystream.console")

HERE = Path(__file__).resolve().parent
_FLASH = "pystream_console_flash"

# DescribeConfigs' config_source codes.
_CONFIG_SOURCES = {
    1: "topic",
    2: "broker (dynamic)",
    3: "cluster default (dynamic)",
    4: "broker (static)",
    5: "default",
    6: "broker logger",
}

Handler = Callable[[Request], Awaitable[Response]]


class Console:
    """What the handlers use, built by the lifespan."""

    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.clients = ConsoleClients(config)
        self.metrics = LiveMetrics(config, self.clients.admin)
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        env.filters["bytes"] = _human_bytes
        env.filters["rate"] = _rate
        env.filters["config_source"] = lambda code: _CONFIG_SOURCES.get(code, "unknown")
        env.filters["urlpart"] = lambda value: quote(str(value), safe="")
        env.filters["binding_fields"] = security_view.binding_fields
        self.templates = env

    async def render(
        self, request: Request, name: str, status: int = 200, **context: Any
    ) -> Response:
        """The page ``name`` (rendered in a thread: with console.enable this loop is the
        broker's, and a page of 500 records is milliseconds of work)."""
        flash = request.cookies.get(_FLASH)
        context = {
            "bootstrap": self.config.bootstrap_servers,
            "version": __version__,
            "flash": _read_flash(flash),
            "active": name.split(".")[0],
            **context,
        }
        html = await asyncio.to_thread(lambda: self.templates.get_template(name).render(context))
        response = HTMLResponse(html, status_code=status)
        if flash:
            response.delete_cookie(_FLASH)
        return response


def _read_flash(cookie: str | None) -> dict[str, str] | None:
    """The message a form left for this page (None: none, or a cookie not of ours)."""
    if not cookie:
        return None
    try:
        flash = json.loads(unquote(cookie))
    except ValueError:
        return None
    return flash if isinstance(flash, dict) and {"kind", "text"} <= flash.keys() else None


def _human_bytes(value: int | None) -> str:
    if value is None:
        return "–"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f}"


def kafka_message(exc: KafkaError) -> str:
    """``NAME: message`` of a Kafka error; for an admin call over one resource, that
    resource's error as the broker worded it (not the call's summary)."""
    errors = getattr(exc, "errors", None)
    if isinstance(errors, dict) and len(errors) == 1:
        exc = next(iter(errors.values()))
    return f"{exc.error_name}: {exc}"


def _redirect(url: str, kind: str, text: str) -> Response:
    """Redirect-after-post, with a message for the next page."""
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(_FLASH, quote(json.dumps({"kind": kind, "text": text})), httponly=True)
    return response


def _console(request: Request) -> Console:
    return request.app.state.console  # type: ignore[no-any-return]


def page(handler: Handler) -> Handler:
    """Errors as pages: the cluster unreachable (503), a Kafka error (its name and
    message), bad input (400), anything else (500, logged)."""

    async def wrapped(request: Request) -> Response:
        console = _console(request)
        try:
            return await handler(request)
        except Exception as exc:
            if is_unreachable(exc):
                reason = console.clients.lost(exc)
                return await console.render(request, "unreachable.html", 503, reason=reason)
            if isinstance(exc, KafkaError):
                # UNKNOWN_TOPIC_OR_PARTITION, GROUP_ID_NOT_FOUND: no such page.
                status = 404 if exc.error_code in (3, 69) else 400
                message = kafka_message(exc)
                return await console.render(request, "error.html", status, message=message)
            if isinstance(exc, ValueError):  # bad input, said by what parsed it
                return await console.render(request, "error.html", 400, message=str(exc))
            log.exception("console page %s failed", request.url.path)
            return await console.render(
                request,
                "error.html",
                500,
                message="The console failed to render this page; its log says why.",
            )

    return wrapped


def _same_origin(request: Request) -> bool:
    """False for a form a browser posts from another site's page (its Origin names that
    site): such a page must not delete topics or reset offsets through a console it can
    reach (cross-site request forgery).  Tools that send no Origin are not browsers."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host")


def form_action(back: Callable[[Request], str]) -> Callable[[Handler], Handler]:
    """A POST handler: what it raises becomes a flash message on the page it came from
    (``back``); the cluster being unreachable is still the 503 page."""

    def decorate(handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            if not _same_origin(request):
                return await _console(request).render(
                    request,
                    "error.html",
                    403,
                    message="Refused a form posted from another site "
                    f"({request.headers.get('origin')}): use the console's own pages.",
                )
            try:
                return await handler(request)
            except KafkaError as exc:
                if is_unreachable(exc):
                    raise
                return _redirect(back(request), "error", kafka_message(exc))
            except ValueError as exc:
                return _redirect(back(request), "error", str(exc))

        return page(wrapped)

    return decorate


# ---------------------------------------------------------------- overview and topics


@page
async def overview(request: Request) -> Response:
    console = _console(request)
    admin = await console.clients.admin()
    return await console.render(request, "overview.html", view=await cluster_view.overview(admin))


@page
async def topics(request: Request) -> Response:
    console = _console(request)
    admin = await console.clients.admin()
    rows = await cluster_view.topic_rows(admin, console.metrics)
    return await console.render(
        request, "topics.html", rows=rows, scraped=bool(console.metrics.partition_sizes())
    )


def _topic_url(request: Request) -> str:
    return f"/topics/{quote(request.path_params['topic'], safe='')}"


@form_action(lambda request: "/topics")
async def create_topic(request: Request) -> Response:
    console = _console(request)
    form = await read_form(request)
    admin = await console.clients.admin()
    topic = await cluster_view.create_topic(
        admin,
        form.get("name", ""),
        form.get("partitions"),
        form.get("replication_factor"),
        form.get("configs", ""),
    )
    return _redirect(
        f"/topics/{quote(topic.name, safe='')}",
        "ok",
        f"Created topic {topic.name} with {topic.num_partitions} partition(s).",
    )


@page
async def topic(request: Request) -> Response:
    console = _console(request)
    admin = await console.clients.admin()
    detail = await cluster_view.topic_detail(admin, console.metrics, request.path_params["topic"])
    return await console.render(request, "topic.html", topic=detail)


@form_action(_topic_url)
async def delete_topic(request: Request) -> Response:
    console = _console(request)
    name = request.path_params["topic"]
    form = await read_form(request)
    if form.get("confirm") != name:
        raise ValueError(f"type the topic's name ({name}) to confirm its deletion")
    await (await console.clients.admin()).delete_topics([name])
    return _redirect("/topics", "ok", f"Deleted topic {name}.")


@form_action(_topic_url)
async def add_partitions(request: Request) -> Response:
    console = _console(request)
    name = request.path_params["topic"]
    form = await read_form(request)
    total = parse_count(form.get("total"), "the new partition count")
    await (await console.clients.admin()).create_partitions([NewPartitions(name, total)])
    return _redirect(_topic_url(request), "ok", f"Topic {name} now has {total} partitions.")


@form_action(_topic_url)
async def alter_config(request: Request) -> Response:
    console = _console(request)
    name = request.path_params["topic"]
    form = await read_form(request)
    key = form.get("key", "").strip()
    if not key:
        raise ValueError("name the config to change")
    value = form.get("value", "")
    reset = form.get("reset") is not None
    await (await console.clients.admin()).alter_configs(
        ("topic", name), {key: None if reset else value}
    )
    text = f"Reset {key} to its default." if reset else f"Set {key}={value}."
    return _redirect(_topic_url(request) + "#configs", "ok", text)


# ---------------------------------------------------------------- messages


def _int_param(request: Request, name: str, default: int | None, minimum: int = 0) -> int | None:
    """A query parameter's whole number (``default`` when absent)."""
    raw = request.query_params.get(name, "").strip()
    return parse_count(raw, name, minimum) if raw else default


@page
async def browse(request: Request) -> Response:
    console = _console(request)
    name = request.path_params["topic"]
    admin = await console.clients.admin()
    description = (await admin.describe_topics([name]))[name]
    partition = _int_param(request, "partition", 0)
    assert partition is not None
    if partition not in {p.partition for p in description.partitions}:
        raise ValueError(f"topic {name} has no partition {partition}")
    fmt = request.query_params.get("format", "text")
    if fmt not in messages.FORMATS:
        raise ValueError(f"format must be one of {', '.join(messages.FORMATS)}, got {fmt!r}")
    since = request.query_params.get("timestamp", "").strip()
    # A page of at most 500 records: the browser reads and renders them all at once.
    limit = min(_int_param(request, "limit", console.config.browse_limit, 1) or 1, 500)
    async with console.clients.consumer() as consumer:
        result = await messages.browse(
            admin,
            consumer,
            name,
            partition,
            fmt=fmt,
            limit=limit,
            offset=_int_param(request, "offset", None),
            timestamp_ms=parse_timestamp(since) if since else None,
            key_contains=request.query_params.get("key", ""),
            search_window=console.config.search_window,
        )
    return await console.render(
        request,
        "messages.html",
        topic=name,
        partitions=[p.partition for p in description.partitions],
        page=result,
        query=request.query_params,
        fmt=fmt,
        formats=messages.FORMATS,
        limit=limit,
    )


@form_action(lambda request: _topic_url(request) + "/messages")
async def produce(request: Request) -> Response:
    console = _console(request)
    name = request.path_params["topic"]
    form = await read_form(request)
    raw_partition = form.get("partition", "").strip()
    partition = parse_count(raw_partition, "partition", 0) if raw_partition else None
    key = form.get("key", "")
    producer = await console.clients.producer()
    metadata = await producer.send_and_wait(
        name,
        form.get("value", "").encode(),
        key=key.encode() if key else None,
        headers=[
            (name, value.encode()) for name, value in parse_pairs(form.get("headers", ""), "header")
        ]
        or None,
        partition=partition,
    )
    return _redirect(
        f"{_topic_url(request)}/messages?partition={metadata.partition}",
        "ok",
        f"Produced a record to {name}-{metadata.partition} at offset {metadata.offset}.",
    )


# ---------------------------------------------------------------- groups


@page
async def group_list(request: Request) -> Response:
    console = _console(request)
    rows = await groups.group_rows(await console.clients.admin())
    return await console.render(request, "groups.html", rows=rows)


@page
async def group(request: Request) -> Response:
    console = _console(request)
    detail = await groups.group_detail(await console.clients.admin(), request.path_params["group"])
    topics = sorted({row.partition.topic for row in detail.lags})
    return await console.render(request, "group.html", group=detail, topics=topics)


def _group_url(request: Request) -> str:
    return f"/groups/{quote(request.path_params['group'], safe='')}"


@form_action(_group_url)
async def reset_group(request: Request) -> Response:
    console = _console(request)
    group_id = request.path_params["group"]
    form = await read_form(request)
    to = form.get("to", "")
    raw_time = form.get("timestamp", "").strip()
    timestamp = parse_timestamp(raw_time) if to == "timestamp" and raw_time else None
    targets = await groups.reset_offsets(
        await console.clients.admin(), group_id, to, timestamp, form.get("topic", "")
    )
    return _redirect(
        _group_url(request),
        "ok",
        f"Reset {len(targets)} partition(s) of {group_id} to {to}.",
    )


async def group_lag_json(request: Request) -> Response:
    """The group page's live chart: its total lag now."""
    console = _console(request)
    try:
        detail = await groups.group_detail(
            await console.clients.admin(), request.path_params["group"]
        )
    except Exception as exc:
        if is_unreachable(exc):
            console.clients.lost(exc)
        return JSONResponse({"error": str(exc)}, status_code=503)
    return JSONResponse(
        {
            "total_lag": detail.total_lag,
            "state": detail.description.state,
            "partitions": [
                {
                    "topic": r.partition.topic,
                    "partition": r.partition.partition,
                    "committed": r.committed,
                    "end": r.end,
                    "lag": r.lag,
                }
                for r in detail.lags
            ],
        }
    )


# ---------------------------------------------------------------- ACLs and users


@page
async def acl_list(request: Request) -> Response:
    console = _console(request)
    listing = await security_view.list_acls(await console.clients.admin(), request.query_params)
    return await console.render(
        request, "acls.html", listing=listing, choices=security_view.CHOICES
    )


@form_action(lambda request: "/acls")
async def add_acl(request: Request) -> Response:
    console = _console(request)
    binding = await security_view.add_acl(await console.clients.admin(), await read_form(request))
    return _redirect("/acls", "ok", f"Added ACL: {security_view.describe_binding(binding)}.")


@form_action(lambda request: "/acls")
async def delete_acl(request: Request) -> Response:
    console = _console(request)
    form = await read_form(request)
    binding = await security_view.delete_acl(await console.clients.admin(), form)
    return _redirect("/acls", "ok", f"Deleted ACL: {security_view.describe_binding(binding)}.")


@page
async def user_list(request: Request) -> Response:
    console = _console(request)
    rows = await security_view.list_users(await console.clients.admin())
    return await console.render(
        request,
        "users.html",
        rows=rows,
        choices=security_view.CHOICES,
        default_iterations=security_view.DEFAULT_ITERATIONS,
    )


@form_action(lambda request: "/users")
async def upsert_user(request: Request) -> Response:
    console = _console(request)
    # The flash names the user and mechanism only: a password is never echoed back.
    user, mechanism, iterations = await security_view.upsert_user(
        await console.clients.admin(), await read_form(request)
    )
    text = f"Set the {mechanism} credential of user {user} ({iterations} iterations)."
    return _redirect("/users", "ok", text)


@form_action(lambda request: "/users")
async def delete_user(request: Request) -> Response:
    console = _console(request)
    user, mechanism = await security_view.delete_user(
        await console.clients.admin(), await read_form(request)
    )
    return _redirect("/users", "ok", f"Deleted the {mechanism} credential of user {user}.")


# ---------------------------------------------------------------- live metrics


@page
async def live(request: Request) -> Response:
    console = _console(request)
    return await console.render(request, "metrics.html", metrics=console.metrics)


async def metrics_json(request: Request) -> Response:
    return JSONResponse(_console(request).metrics.series())


def create_app(config: ConsoleConfig) -> Starlette:
    """The console as an ASGI app; its clients connect on first use (so it starts, and
    says why on every page, while the cluster is down)."""
    console = Console(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await console.metrics.start()
        try:
            yield
        finally:
            await console.metrics.stop()
            await console.clients.close()

    app = Starlette(
        routes=[
            Route("/", overview),
            Route("/topics", topics),
            Route("/topics", create_topic, methods=["POST"]),
            Route("/topics/{topic}", topic),
            Route("/topics/{topic}/delete", delete_topic, methods=["POST"]),
            Route("/topics/{topic}/partitions", add_partitions, methods=["POST"]),
            Route("/topics/{topic}/configs", alter_config, methods=["POST"]),
            Route("/topics/{topic}/messages", browse),
            Route("/topics/{topic}/messages", produce, methods=["POST"]),
            Route("/groups", group_list),
            # Group ids may hold "/": the path converter keeps them whole.
            Route("/groups/{group:path}/reset", reset_group, methods=["POST"]),
            Route("/groups/{group:path}", group),
            Route("/acls", acl_list),
            Route("/acls", add_acl, methods=["POST"]),
            Route("/acls/delete", delete_acl, methods=["POST"]),
            Route("/users", user_list),
            Route("/users", upsert_user, methods=["POST"]),
            Route("/users/delete", delete_user, methods=["POST"]),
            Route("/metrics", live),
            Route("/api/metrics", metrics_json),
            Route("/api/groups/{group:path}/lag", group_lag_json),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.console = console
    return app
