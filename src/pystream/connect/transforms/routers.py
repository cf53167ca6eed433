"""Routers: change a record's topic.  RegexRouter (``regex``, ``replacement`` with Java's
``$1``/``${name}`` group references) and TimestampRouter (``topic.format`` with
``${topic}``/``${timestamp}``, ``timestamp.format`` in Java's SimpleDateFormat letters,
in UTC)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from ..api import (
    ConfigDef,
    ConfigError,
    ConfigKey,
    ConfigType,
    ConnectError,
    ConnectRecord,
    Importance,
    Transformation,
)
from ._dateformat import SimpleDateFormat
from ._util import Defined


def compile_java_regex(pattern: str, key: str) -> re.Pattern[str]:
    """A Java regular expression as Python's: ``(?<name>…)`` becomes ``(?P<name>…)``; the
    rest of the common syntax is the same.  A bad pattern raises ConfigError naming ``key``."""
    translated = re.sub(r"(?<!\\)\(\?<(?=[A-Za-z])", "(?P<", pattern)
    try:
        return re.compile(translated)
    except re.error as exc:
        raise ConfigError(
            f"Invalid value {pattern!r} for configuration {key}: not a regular expression ({exc})"
        ) from None


# One part of a parsed replacement: (True, literal text) or (False, group number or name).
_Part = tuple[bool, int | str]


def parse_java_replacement(text: str, regex: re.Pattern[str], key: str) -> list[_Part]:
    """Java's ``Matcher.replaceFirst`` replacement syntax: ``$n`` (as many digits as name
    a group), ``${name}``, and ``\\`` escaping the next character."""
    parts: list[_Part] = []
    literal: list[str] = []

    def bad(reason: str) -> ConfigError:
        return ConfigError(f"Invalid value {text!r} for configuration {key}: {reason}")

    def group(ref: int | str) -> None:
        if literal:
            parts.append((True, "".join(literal)))
            literal.clear()
        parts.append((False, ref))

    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            if i + 1 == len(text):
                raise bad("character to be escaped is missing")
            literal.append(text[i + 1])
            i += 2
        elif char == "$":
            i += 1
            if i == len(text):
                raise bad("Illegal group reference: group index is missing")
            if text[i] == "{":
                end = text.find("}", i)
                name = text[i + 1 : end] if end > 0 else ""
                if name not in regex.groupindex:
                    raise bad(f"No group with name {{{name}}}")
                group(name)
                i = end + 1
            elif text[i].isdigit():
                number = int(text[i])
                if number > regex.groups:
                    raise bad(f"No group {number}")
                i += 1
                # Java takes more digits while they still name an existing group.
                while i < len(text) and text[i].isdigit():
                    longer = number * 10 + int(text[i])
                    if longer > regex.groups:
                        break
                    number = longer
                    i += 1
                group(number)
            else:
                raise bad("Illegal group reference")
        else:
            literal.append(char)
            i += 1
    if literal:
        parts.append((True, "".join(literal)))
    return parts


class RegexRouter(Defined, Transformation):
    """If the topic matches ``regex`` as a whole, it becomes ``replacement``."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "regex",
                ConfigType.STRING,
                documentation="Regular expression to use for matching.",
                importance=Importance.HIGH,
            ),
            ConfigKey(
                "replacement",
                ConfigType.STRING,
                documentation="Replacement string.",
                importance=Importance.HIGH,
            ),
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        parsed = self.CONFIG_DEF.parse(configs)
        self.regex = compile_java_regex(parsed["regex"], "regex")
        self.replacement = parse_java_replacement(parsed["replacement"], self.regex, "replacement")

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        match = self.regex.fullmatch(record.topic)
        if match is None:
            return record
        topic = "".join(
            ref if is_literal else (match.group(ref) or "")  # type: ignore[misc]
            for is_literal, ref in self.replacement
        )
        return record.new_record(topic=topic)


class TimestampRouter(Defined, Transformation):
    """The topic becomes ``topic.format`` with ``${topic}`` and ``${timestamp}`` (the
    record's timestamp in ``timestamp.format``, UTC) filled in."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "topic.format",
                ConfigType.STRING,
                "${topic}-${timestamp}",
                Importance.HIGH,
                "Format string which can contain ${topic} and ${timestamp} as placeholders "
                "for the topic and timestamp, respectively.",
            ),
            ConfigKey(
                "timestamp.format",
                ConfigType.STRING,
                "yyyyMMdd",
                Importance.HIGH,
                "Format string for the timestamp that is compatible with "
                "java.text.SimpleDateFormat.",
            ),
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        parsed = self.CONFIG_DEF.parse(configs)
        self.topic_format: str = parsed["topic.format"]
        self.timestamp_format = SimpleDateFormat(parsed["timestamp.format"], "timestamp.format")

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        if record.timestamp is None:
            raise ConnectError(f"Timestamp missing on record: {record!r}")
        when = dt.datetime.fromtimestamp(record.timestamp / 1000, dt.UTC)
        topic = self.topic_format.replace("${topic}", record.topic).replace(
            "${timestamp}", self.timestamp_format.format(when)
        )
        return record.new_record(topic=topic)
