"""Java's ``SimpleDateFormat`` patterns (``yyyyMMdd``, ``yyyy-MM-dd'T'HH:mm:ss.SSSZ``…)
for the SMTs that take one (TimestampRouter, TimestampConverter): formatting and
parsing, always in UTC as Kafka's SMTs use them, with English month and day names."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from ..api import ConfigError, ConnectError

_MONTHS = ("January February March April May June July August September October November "
           "December").split()  # fmt: skip
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()

_Formatter = Callable[[dt.datetime], str]

# letter → (number of the datetime it shows, strptime directive for parsing)
_NUMBERS: dict[str, tuple[Callable[[dt.datetime], int], str | None]] = {
    "d": (lambda t: t.day, "%d"),
    "H": (lambda t: t.hour, "%H"),
    "k": (lambda t: t.hour or 24, None),
    "K": (lambda t: t.hour % 12, None),
    "h": (lambda t: t.hour % 12 or 12, "%I"),
    "m": (lambda t: t.minute, "%M"),
    "s": (lambda t: t.second, "%S"),
    "S": (lambda t: t.microsecond // 1000, None),
    "D": (lambda t: t.timetuple().tm_yday, "%j"),
    "u": (lambda t: t.isoweekday(), "%u"),
}
SUPPORTED = "y M d H h k K m s S D u E a z Z X"


def _number(get: Callable[[dt.datetime], int], width: int) -> _Formatter:
    return lambda t: str(get(t)).zfill(width)


def _literal(text: str) -> _Formatter:
    return lambda t: text


class SimpleDateFormat:
    """One pattern, compiled: :meth:`format` a datetime, :meth:`parse` a string.  A letter
    outside :data:`SUPPORTED` is a ConfigError naming ``key``."""

    def __init__(self, pattern: str, key: str) -> None:
        self.pattern = pattern
        self._parts: list[_Formatter] = []
        strptime: list[str] | None = []
        for letter, count, text in self._tokens(pattern, key):
            if letter is None:
                self._parts.append(_literal(text))
                if strptime is not None:
                    strptime.append(text.replace("%", "%%"))
                continue
            part, directive = self._letter(letter, count)
            if part is None:
                raise ConfigError(
                    f"Invalid value {pattern!r} for configuration {key}: the pattern letter "
                    f"{letter!r} is not supported (use {SUPPORTED})"
                )
            self._parts.append(part)
            if strptime is not None and directive is not None:
                strptime.append(directive)
            else:
                strptime = None  # formats, but cannot parse
        self._strptime = "".join(strptime) if strptime is not None else None

    @staticmethod
    def _tokens(pattern: str, key: str):
        i = 0
        while i < len(pattern):
            char = pattern[i]
            if char == "'":
                end = pattern.find("'", i + 1)
                if end < 0:
                    raise ConfigError(
                        f"Invalid value {pattern!r} for configuration {key}: unterminated quote"
                    )
                yield None, 0, pattern[i + 1 : end] or "'"  # '' is a literal quote
                i = end + 1
            elif char.isalpha():
                count = 1
                while i + count < len(pattern) and pattern[i + count] == char:
                    count += 1
                yield char, count, ""
                i += count
            else:
                yield None, 0, char
                i += 1

    @staticmethod
    def _letter(letter: str, count: int) -> tuple[_Formatter | None, str | None]:
        if letter == "y":
            if count == 2:
                return (lambda t: str(t.year % 100).zfill(2)), "%y"
            return _number(lambda t: t.year, count), "%Y"
        if letter == "M":
            if count >= 4:
                return (lambda t: _MONTHS[t.month - 1]), "%B"
            if count == 3:
                return (lambda t: _MONTHS[t.month - 1][:3]), "%b"
            return _number(lambda t: t.month, count), "%m"
        if letter == "S":
            # Milliseconds: strptime's %f reads a fraction, right for exactly three digits.
            return _number(lambda t: t.microsecond // 1000, count), "%f" if count == 3 else None
        if letter in _NUMBERS:
            get, directive = _NUMBERS[letter]
            return _number(get, count), directive
        if letter == "E":
            if count >= 4:
                return (lambda t: _DAYS[t.weekday()]), "%A"
            return (lambda t: _DAYS[t.weekday()][:3]), "%a"
        if letter == "a":
            return (lambda t: "AM" if t.hour < 12 else "PM"), "%p"
        if letter == "z":
            return (lambda t: "UTC"), "%Z"
        if letter == "Z":
            return (lambda t: "+0000"), "%z"
        if letter == "X":
            return (lambda t: "Z"), "%z"
        return None, None

    def format(self, when: dt.datetime) -> str:
        """``when`` (UTC) as the pattern writes it."""
        return "".join(part(when) for part in self._parts)

    def parse(self, text: str) -> dt.datetime:
        """``text`` read with the pattern, as an aware UTC datetime (UTC if it names no
        zone); a mismatch is a ConnectError."""
        if self._strptime is None:
            raise ConnectError(f"The pattern {self.pattern!r} can format but not parse dates")
        try:
            parsed = dt.datetime.strptime(text, self._strptime)
        except ValueError:
            raise ConnectError(
                f"Could not parse timestamp: value ({text}) does not match pattern ({self.pattern})"
            ) from None
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC)
