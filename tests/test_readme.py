"""The README's quickstart, run as written against a real broker.

Every snippet marked ``<!-- readme-test: NAME -->`` in README.md (the marker on
the line before its fenced block) is extracted and run in README order against
one ``pystream serve`` process: shell blocks through ``bash -eo pipefail`` with
a ``pystream`` on PATH that is this checkout's command, Python blocks in a
subprocess with the checkout on PYTHONPATH (as broker_process.py does).  The
only change made to a snippet is the bootstrap address: ``127.0.0.1:9092``
becomes the test broker's address.  What each snippet prints is checked, so a
renamed CLI option or client API breaks this test, not the reader.

The test fails when a marker disappears or appears without an expectation
here, when a quickstart code block has no marker, and when a ``pystream``
command in a snippet does not name the address (it would reach whatever listens
on 9092 instead of the test broker).

``pystream cluster up --brokers 3`` is only referred to in the quickstart, not
run here: it stays in the foreground on the fixed ports 9092-9094 and needs
ZooKeeper; tests/test_cli_cluster.py runs it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broker_process import BrokerProcess
from cli_helpers import ENV, PYSTREAM

README = Path(__file__).resolve().parent.parent / "README.md"
ADDRESS = "127.0.0.1:9092"
_MARKED_BLOCK = re.compile(
    r"^<!-- readme-test: (?P<name>[\w-]+) -->\n```(?P<lang>sh|python)\n(?P<code>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
_FENCE = re.compile(r"^```(\w+)$", re.MULTILINE)
_GROUP_ROW = re.compile(r"^readers\s+quickstart\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s", re.MULTILINE)


@dataclass(frozen=True)
class Snippet:
    """One marked code block of the README."""

    name: str
    lang: str
    code: str


def readme_snippets() -> list[Snippet]:
    """The marked blocks, in README order."""
    text = README.read_text(encoding="utf-8")
    return [Snippet(m["name"], m["lang"], m["code"]) for m in _MARKED_BLOCK.finditer(text)]


def _quickstart_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Quickstart")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _pystream_commands(code: str) -> list[str]:
    """The logical lines (continuations joined) of a shell snippet that run pystream."""
    logical = code.replace("\\\n", " ").splitlines()
    return [line for line in logical if re.search(r"(^|\|)\s*pystream\b", line)]


def run_snippet(snippet: Snippet, bootstrap: str, workdir: Path) -> str:
    """Run one snippet with the address replaced; its stdout (it must exit 0)."""
    assert "9092" not in snippet.code.replace(ADDRESS, ""), (
        f"{snippet.name}: port 9092 spelt other than {ADDRESS}:\n{snippet.code}"
    )
    code = snippet.code.replace(ADDRESS, bootstrap)
    if snippet.lang == "sh":
        # `pystream` as the reader has it after `pip install .`: this checkout's command.
        bin_dir = workdir / "bin"
        bin_dir.mkdir(exist_ok=True)
        wrapper = bin_dir / "pystream"
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.join(PYSTREAM)} "$@"\n')
        wrapper.chmod(0o755)
        env = {**ENV, "PATH": f"{bin_dir}:{ENV.get('PATH', '')}"}
        command = ["bash", "-eo", "pipefail", "-c", code]
    else:
        script = workdir / f"{snippet.name}.py"
        script.write_text(code)
        env, command = ENV, [sys.executable, str(script)]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=workdir, timeout=120
    )
    assert result.returncode == 0, (
        f"README snippet {snippet.name} failed ({result.returncode}):\n{code}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


def _lines(output: str) -> list[str]:
    return sorted(line for line in output.splitlines() if line)


def check_create_topic(output: str) -> None:
    assert "Created topic quickstart." in output
    assert "quickstart" in output.splitlines()  # `topics list`


def check_produce_consume(output: str) -> None:
    # Two partitions: the order across them is not fixed.
    assert _lines(output) == ["alice\thello", "bob\tworld"]


def check_python_clients(output: str) -> None:
    expected = ["alice hello", "bob world", "carol event 0", "carol event 1", "carol event 2"]
    assert _lines(output) == expected


def check_consumer_group(output: str) -> None:
    lines = output.splitlines()
    # `consume` prints the values only: every record so far, then `groups describe`.
    assert sorted(lines[:5]) == ["event 0", "event 1", "event 2", "hello", "world"]
    rows = {int(m[1]): (int(m[2]), int(m[3]), int(m[4])) for m in _GROUP_ROW.finditer(output)}
    assert sorted(rows) == [0, 1], output
    assert all(current == end and lag == 0 for current, end, lag in rows.values()), output
    assert sum(end for _, end, _ in rows.values()) == 5, output


CHECKS: dict[str, Callable[[str], None]] = {
    "create-topic": check_create_topic,
    "produce-consume": check_produce_consume,
    "python-clients": check_python_clients,
    "consumer-group": check_consumer_group,
}


def test_every_quickstart_block_is_marked_and_checked() -> None:
    snippets = readme_snippets()
    assert [s.name for s in snippets] == list(CHECKS), (
        "README.md's readme-test markers and tests/test_readme.py's CHECKS differ"
    )
    blocks = _FENCE.findall(_quickstart_section())
    assert len(blocks) == len(snippets), "a quickstart code block without a readme-test marker"
    for snippet in snippets:
        if snippet.lang == "sh":
            commands = _pystream_commands(snippet.code)
            assert commands, snippet.name
            for command in commands:
                assert f"--bootstrap-server {ADDRESS}" in command, command
        else:
            assert ADDRESS in snippet.code, snippet.name


def test_quickstart_runs_as_written(broker: BrokerProcess, tmp_path: Path) -> None:
    for snippet in readme_snippets():
        output = run_snippet(snippet, broker.bootstrap, tmp_path)
        CHECKS[snippet.name](output)
