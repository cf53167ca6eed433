"""The installed package: compiled core present, console script works."""

import importlib
import shutil
import subprocess
import sys

import pytest

import pystream

CORE_MODULES = ("crc32c", "varint", "records", "compression", "segment")


@pytest.mark.parametrize("name", CORE_MODULES)
def test_core_module_is_compiled(name: str) -> None:
    # aiokafka's lesson: a silently missing extension turns into a slow or broken broker.
    module = importlib.import_module(f"pystream._core.{name}")
    assert module.__file__ is not None
    assert module.__file__.endswith((".so", ".pyd")), f"{name} is not compiled: {module.__file__}"


def test_console_script_help() -> None:
    exe = shutil.which("pystream")
    cmd = [exe] if exe else [sys.executable, "-m", "pystream"]
    result = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pystream" in result.stdout


def test_version_matches_package() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pystream", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert pystream.__version__ in result.stdout
