"""A broker's ``log.dirs``, checked, created and locked for one process's exclusive use.

Two brokers writing the same segment files corrupt them, so, as Kafka's
LogManager, whoever writes to a log dir first takes an exclusive OS lock on
its ``.lock`` file (:class:`~pystream.fileutil.DirectoryLock`) and refuses to
start if another process holds it.  The broker holds the locks for its
lifetime (from before it opens its metadata store, which lives in the first
log dir, until :meth:`LogManager.shutdown`); an offline tool that writes a log
dir (``meta.properties``, the metadata store, logs) holds them while it works::

    with lock_log_dirs(config.log_dirs) as log_dirs:
        ...  # write under log_dirs.paths

A killed broker leaves no stale lock: the kernel drops it with the process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from pystream.errors import InvalidConfigError, KafkaStorageError, LogDirNotFoundError
from pystream.fileutil import DirectoryLock, lock_directories


class LockedLogDirs:
    """Log directories (real paths, in ``log.dirs`` order), each locked until :meth:`release`."""

    def __init__(self, paths: list[str], locks: list[DirectoryLock]) -> None:
        self.paths = paths
        self._locks = locks

    @property
    def held(self) -> bool:
        """True while every directory is locked (until :meth:`release`)."""
        return all(lock.held for lock in self._locks)

    def release(self) -> None:
        """Release every lock (idempotent): another process may use the dirs now."""
        for lock in self._locks:
            lock.release()

    def __enter__(self) -> LockedLogDirs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def resolve_log_dirs(log_dirs: Sequence[str]) -> list[str]:
    """The real paths of ``log.dirs``; InvalidConfigError if it is empty or names a dir twice."""
    if not log_dirs:
        raise InvalidConfigError("log.dirs is empty: configure at least one log directory")
    resolved = [os.path.realpath(d) for d in log_dirs]
    if len(set(resolved)) != len(resolved):
        raise InvalidConfigError(
            f"log.dirs {list(log_dirs)} names the same directory twice; list each once"
        )
    return resolved


def lock_log_dirs(log_dirs: Sequence[str]) -> LockedLogDirs:
    """Check ``log.dirs``, create missing dirs and lock every one.

    Raises InvalidConfigError for an empty or duplicated list, LogDirNotFoundError
    if a dir cannot be created, and DirectoryLockedError ("Failed to acquire lock
    on file .lock in <dir> ...") if another process or thread uses one (then no
    lock is kept).
    """
    resolved = resolve_log_dirs(log_dirs)
    for log_dir in resolved:
        try:
            os.makedirs(log_dir, exist_ok=True)
        except OSError as exc:
            raise LogDirNotFoundError(
                f"Cannot create log directory {log_dir}: {exc}; check log.dirs and permissions"
            ) from exc
    try:
        locks = lock_directories(resolved)
    except OSError as exc:  # e.g. a read-only dir (a held lock is DirectoryLockedError)
        raise KafkaStorageError(
            f"Cannot lock log directory {os.path.dirname(exc.filename or '') or log_dirs}: "
            f"{exc.strerror or exc}; check log.dirs and permissions"
        ) from exc
    return LockedLogDirs(resolved, locks)
