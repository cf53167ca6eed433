"""Child processes that stop when their parent dies, even by SIGKILL (Linux).

``pystream cluster up`` starts ZooKeeper and the brokers in process groups of their
own (so that a Ctrl-C reaches only the command, which then stops them in order); a
SIGKILL of the command would otherwise leave them all running.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["start_pystream_serve", "terminate_with_parent"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()  # looked up here: a preexec_fn should do as little as possible


def terminate_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the kernel sends the child SIGTERM
    (its clean shutdown) when the parent dies; None where that is not available.

    The parent must outlive the thread that starts the child (PR_SET_PDEATHSIG follows
    the creating thread): start children from the main thread.
    """
    if _prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def start_pystream_serve(
    properties: Mapping[str, str],
    log: IO[bytes],
    cwd: Path,
    *,
    env: Mapping[str, str],
    own_process_group: bool = False,
) -> subprocess.Popen[bytes]:
    """``pystream serve`` with one ``--override`` per property, its output in ``log``.

    Started from the main thread, the child stops when this process dies (see
    :func:`terminate_with_parent`); ``own_process_group`` keeps a terminal's Ctrl-C
    from reaching it (its parent stops it, in order)."""
    command = [sys.executable, "-m", "pystream", "serve"]
    for key, value in properties.items():
        command += ["--override", f"{key}={value}"]
    main_thread = threading.current_thread() is threading.main_thread()
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(env),
        cwd=cwd,
        process_group=0 if own_process_group else None,
        preexec_fn=terminate_with_parent() if main_thread else None,
    )
