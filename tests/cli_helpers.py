"""Running the ``pystream`` command in CLI tests: the installed script when it is this
checkout's (``pip install -e .``, as ``scripts/test`` does), else ``python -m pystream``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pystream

_ROOT = str(Path(pystream.__file__).resolve().parent.parent)
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])),
}


def _installed_command() -> list[str] | None:
    script = shutil.which("pystream")
    if script is None:
        return None
    probe = subprocess.run([script, "info"], capture_output=True, text=True, env=ENV, timeout=60)
    return [script] if probe.returncode == 0 else None


PYSTREAM = _installed_command() or [sys.executable, "-m", "pystream"]


def run(*args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
    """``pystream ARGS``; asserts success if ``check``."""
    result = subprocess.run(
        [*PYSTREAM, *args], input=stdin, capture_output=True, text=True, env=ENV, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """A user error: non-zero exit, one line on stderr, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
