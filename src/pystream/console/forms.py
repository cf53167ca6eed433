"""What the pages' forms and query strings carry, parsed with errors that say what was
wrong: whole numbers, ``name=value`` lines (topic configs, record headers), timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

__all__ = ["parse_count", "parse_pairs", "parse_timestamp", "read_form"]


async def read_form(request: Request) -> dict[str, str]:
    """An HTML form's fields (application/x-www-form-urlencoded, what the pages post):
    parsed here, so the console needs no multipart library."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return dict(parse_qsl(body, keep_blank_values=True))


def parse_count(raw: Any, what: str, minimum: int = 1) -> int:
    """A whole number of at least ``minimum``, or ValueError saying what was wrong."""
    text = str(raw if raw is not None else "").strip()
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{what} must be a whole number, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {value}")
    return value


def parse_pairs(text: str, what: str) -> list[tuple[str, str]]:
    """``name=value`` per line (blank lines ignored), or ValueError naming the bad line."""
    pairs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{what} line {line.strip()!r} is not name=value")
        pairs.append((name.strip(), value.strip()))
    return pairs


def parse_timestamp(text: str) -> int:
    """Epoch milliseconds, or an ISO date-time (UTC unless it names a zone)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"timestamp {text!r} is neither epoch milliseconds nor YYYY-MM-DDTHH:MM[:SS]"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
