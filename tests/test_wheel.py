"""`python -m build --wheel` gives a wheel that installs into a fresh venv and works.

Slow (compiles the core and installs dependencies from PyPI), but it is the
only test that sees the package as a new user's machine does.
"""

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, (
        f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def test_wheel_builds_and_installs_in_fresh_venv(tmp_path: Path) -> None:
    # Build from a copy of the tracked sources so in-place build artefacts don't leak in.
    src = tmp_path / "src"
    files = _run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT).stdout.split()
    for name in files:
        # .html: `cython -a` output, except the console's templates.
        annotated = name.endswith(".html") and "/console/templates/" not in name
        if (ROOT / name).is_file() and not name.endswith((".so", ".c")) and not annotated:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(src)])
    wheels = list(dist.glob("pystream-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = wheel.namelist()
    compiled = [n for n in names if n.endswith(".so")]
    assert any("_core/records" in n for n in compiled), compiled
    # The console's pages and its vendored chart library are package data.
    for data in (
        "pystream/console/templates/base.html",
        "pystream/console/templates/overview.html",
        "pystream/console/static/console.js",
        "pystream/console/static/console.css",
        "pystream/console/static/vendor/uPlot.iife.min.js",
        "pystream/console/static/vendor/uPlot.min.css",
        "pystream/console/static/vendor/uPlot.LICENSE",
    ):
        assert data in names, f"{data} is not in the wheel"

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", str(wheels[0])])

    check = (
        "import pystream, pystream._core.crc32c as c;"
        "print(pystream.__file__);"
        "assert c.crc32c(b'123456789') == 0xE3069283"
    )
    out = _run([str(python), "-c", check], cwd=tmp_path).stdout
    assert str(env_dir) in out, f"imported pystream from outside the venv: {out}"
    help_text = _run([str(env_dir / "bin" / "pystream"), "--help"]).stdout
    assert "Usage" in help_text
