"""Small file-system helpers shared by storage and metadata."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
from pathlib import Path
from typing import Any

from pystream.errors import KafkaStorageError

# Suffix of a file being written by atomic_write; leftovers after a crash are garbage.
TMP_SUFFIX = ".tmp"


def sync_filesystems(directories: list[str]) -> None:
    """Flush everything written to the file systems holding ``directories`` (``syncfs``,
    one call per file system): many files written without their own fsync are made
    durable at once, far faster than an fsync per file and its directory."""
    seen: set[int] = set()
    for directory in directories:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            device = os.fstat(fd).st_dev
            if device in seen:
                continue
            seen.add(device)
            if _LIBC is None or _LIBC.syncfs(fd) != 0:
                os.sync()  # no syncfs (or it failed): every file system, still correct
        finally:
            os.close(fd)


def _load_libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.syncfs.argtypes = [ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _load_libc()


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


# The file in a directory whose OS lock says who is using it (Kafka's name).
LOCK_FILE = ".lock"


class DirectoryLockedError(KafkaStorageError):
    """Another process (or another lock in this one) holds a directory's ``.lock``."""


class DirectoryLock:
    """An exclusive OS lock (``flock``) on ``<directory>/.lock``, as Kafka's ``FileLock``.

    Held until :meth:`release` (or until the process dies: the kernel drops it, so a
    SIGKILLed owner never leaves a stale lock).  ``flock`` locks belong to the open
    file, not the process, so a second lock of the same directory in this process is
    refused too.  The ``.lock`` file itself stays (removing it would race a locker).
    """

    def __init__(self, directory: str) -> None:
        """Take the lock now; raise :class:`DirectoryLockedError` if it is held."""
        self.directory = directory
        self.path = os.path.join(directory, LOCK_FILE)
        self._fd = -1
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DirectoryLockedError(
                f"Failed to acquire lock on file {LOCK_FILE} in {directory}. A broker in another "
                "process or thread is using this directory: stop it, or give this one other "
                "log.dirs"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    @property
    def held(self) -> bool:
        """True until :meth:`release`."""
        return self._fd >= 0

    def release(self) -> None:
        """Unlock and close the lock file.  Idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> DirectoryLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        # A lock nobody references any more protects nothing: do what process exit would.
        with contextlib.suppress(Exception):
            self.release()


def lock_directories(directories: list[str]) -> list[DirectoryLock]:
    """A :class:`DirectoryLock` on each directory (they must exist), or none at all: on a
    :class:`DirectoryLockedError` the locks already taken are released."""
    locks: list[DirectoryLock] = []
    try:
        for directory in directories:
            locks.append(DirectoryLock(directory))
    except BaseException:
        for lock in locks:
            lock.release()
        raise
    return locks
