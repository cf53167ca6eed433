"""Small file-system helpers shared by storage and metadata."""

from __future__ import annotations

import os
from pathlib import Path

# Suffix of a file being written by atomic_write; leftovers after a crash are garbage.
TMP_SUFFIX = ".tmp"


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename or create inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a mix.

    Writes ``path.tmp``, fsyncs it, renames it over ``path`` and fsyncs the
    directory (skipped with ``durable=False``).
    """
    target = Path(path)
    tmp = target.with_name(target.name + TMP_SUFFIX)
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        if durable:
            os.fsync(handle.fileno())
    os.replace(tmp, target)
    if durable:
        fsync_directory(target.parent)
