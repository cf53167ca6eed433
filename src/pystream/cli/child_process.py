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
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["terminate_with_parent"]

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
