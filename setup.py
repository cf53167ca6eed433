"""Build the Cython core.

Every ``.pyx`` under ``src/pystream`` becomes an extension module of the same
dotted name, so adding a Cython module needs no edit here.

Environment knobs (for development and profiling):

* ``PYSTREAM_CYTHON_ANNOTATE=1`` writes ``cython -a`` HTML next to each ``.pyx``.
* ``PYSTREAM_ONLY=crc32c,records`` builds only the named modules (by last
  dotted component), so work on one module does not wait on another.
* ``PYSTREAM_DEBUG=1`` builds with ``-O0 -g`` and Cython bounds checks on.
"""

import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).parent
SRC = ROOT / "src"


def _extensions() -> list[Extension]:
    only = {m.strip() for m in os.environ.get("PYSTREAM_ONLY", "").split(",") if m.strip()}
    debug = os.environ.get("PYSTREAM_DEBUG") == "1"
    cflags = ["-O0", "-g"] if debug else ["-O3"]
    exts = []
    for pyx in sorted(SRC.rglob("*.pyx")):
        rel = pyx.relative_to(SRC).with_suffix("")
        name = ".".join(rel.parts)
        if only and rel.parts[-1] not in only:
            continue
        exts.append(
            Extension(
                name,
                [str(pyx.relative_to(ROOT))],
                include_dirs=[str(pyx.parent)],
                extra_compile_args=cflags,
            )
        )
    return exts


directives = {
    "language_level": "3",
    "boundscheck": os.environ.get("PYSTREAM_DEBUG") == "1",
    "wraparound": False,
    "cdivision": True,
    "embedsignature": True,
}

setup(
    # Compile the extensions on every core (a fresh `pip install .` builds ~20 of them).
    options={"build_ext": {"parallel": os.cpu_count() or 1}},
    ext_modules=cythonize(
        _extensions(),
        compiler_directives=directives,
        annotate=os.environ.get("PYSTREAM_CYTHON_ANNOTATE") == "1",
        nthreads=int(os.environ.get("PYSTREAM_BUILD_JOBS", "0")) or None,
    ),
)
