"""docs/configuration.md is generated from pystream.config and must stay so.

* the committed file is exactly what ``scripts/gen_config_docs.py`` renders now;
* every key the broker parses (and every topic config) has a row in it;
* a key marked "accepted only" (``honoured=False``) is really never read outside
  config.py, so the reference does not call a working key ignored, or the other
  way round once someone implements it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pystream.config import (
    BROKER_ALIASES,
    BROKER_CONFIGS,
    TOPIC_CONFIGS,
    BrokerConfig,
    broker_property_names,
    format_value,
)

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_config_docs.py"
REFERENCE = ROOT / "docs" / "configuration.md"
SOURCE = ROOT / "src" / "pystream"
_ROW_KEY = re.compile(r"^\| `([^`]+)` \|", re.MULTILINE)


def test_committed_reference_is_what_the_generator_writes() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, (
        "docs/configuration.md is stale: run `python scripts/gen_config_docs.py` and commit it\n"
        + result.stdout
        + result.stderr
    )


def _documented_keys() -> set[str]:
    return set(_ROW_KEY.findall(REFERENCE.read_text(encoding="utf-8")))


def _sample_value(name: str) -> str:
    """A valid value for a broker key (scaled synonyms get 1: their default would overflow)."""
    if name in BROKER_CONFIGS:
        return format_value(BROKER_CONFIGS[name].default)
    if name in BROKER_ALIASES:
        return "/tmp/pystream-docs-test"
    topic = next(d for d in TOPIC_CONFIGS.values() if name in {s.name for s in d.synonyms})
    scale = next(s.scale for s in topic.synonyms if s.name == name)
    return "1" if scale != 1 else format_value(topic.default)


def test_every_key_the_broker_parses_is_documented() -> None:
    names = broker_property_names()
    # The set is what BrokerConfig really parses: none of it is "unknown", a made-up key is.
    parsed = BrokerConfig.from_properties({name: _sample_value(name) for name in names})
    assert parsed.unknown_keys == ()
    assert BrokerConfig.from_properties({"no.such.key": "1"}).unknown_keys == ("no.such.key",)

    text = REFERENCE.read_text(encoding="utf-8")
    documented = _documented_keys()
    missing = sorted((names - set(BROKER_ALIASES)) - documented)
    assert not missing, f"broker keys without a row in docs/configuration.md: {missing}"
    assert set(TOPIC_CONFIGS) <= documented, sorted(set(TOPIC_CONFIGS) - documented)
    for alias in BROKER_ALIASES:
        assert f"`{alias}`" in text, alias


def _read_outside_config(attribute: str) -> list[str]:
    """Source files (other than config.py) that mention ``attribute`` as a whole word.

    The generated wire codecs are left out: their field names (``compression_type`` of
    PushTelemetry) can coincide with a config attribute without reading the config.
    """
    word = re.compile(rf"\b{re.escape(attribute)}\b")
    found = []
    for path in sorted(SOURCE.rglob("*")):
        if path.suffix not in (".py", ".pyx", ".pxd") or path.name == "config.py":
            continue
        if "messages" in path.relative_to(SOURCE).parts[:2]:
            continue
        if word.search(path.read_text(encoding="utf-8")):
            found.append(str(path.relative_to(SOURCE)))
    return found


def test_accepted_only_keys_are_not_read_anywhere() -> None:
    accepted_only = [
        d for d in (*TOPIC_CONFIGS.values(), *BROKER_CONFIGS.values()) if not d.honoured
    ]
    assert "background.threads" in {d.name for d in accepted_only}
    for definition in accepted_only:
        readers = _read_outside_config(definition.attribute)
        assert not readers, (
            f"{definition.name} is marked honoured=False in config.py but "
            f"{definition.attribute} is read in {readers}: if pystream honours it now, "
            "drop honoured=False and run `python scripts/gen_config_docs.py`"
        )
