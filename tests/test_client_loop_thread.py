"""The sync clients' loop thread: a Ctrl-C during a blocking call leaves nothing behind."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import warnings

import pytest

from pystream.client.loop_thread import LoopThread

# Interruptions checked: each lands at a slightly different point of the hand-off.
INTERRUPTIONS = 100


@pytest.mark.parametrize("uvloop", ["0", "1"], ids=["asyncio", "uvloop"])
def test_ctrl_c_during_a_blocking_call_cancels_its_coroutine_on_the_loop(
    uvloop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Ctrl-C arrives as soon as the coroutine runs, wherever the caller then is:
    blocked on the result, or still handing the coroutine over.  Either way the loop
    cancels it (a coroutine closed from the caller's thread would skip its cleanup, or
    fail with "coroutine already executing").  With uvloop (``PYSTREAM_UVLOOP=1``) the
    coroutine starts so fast that CPython often held the Ctrl-C pending until the call's
    timeout: the main thread's sliced wait must still raise it at once."""
    monkeypatch.setenv("PYSTREAM_UVLOOP", uvloop)
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    # Set here, not inherited: a test run started in the background (``cmd &``) has SIGINT
    # ignored, and its Ctrl-C would never arrive.
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    # Switch threads as often as possible, so the interruption also lands mid-hand-off.
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for attempt in range(1, INTERRUPTIONS + 1):
            loop_thread = LoopThread("test-loop")
            cancelled = threading.Event()

            async def long_wait(cancelled: threading.Event = cancelled) -> None:
                signal.pthread_kill(main_thread, signal.SIGINT)
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    cancelled.set()
                    raise

            try:
                with pytest.raises(KeyboardInterrupt):
                    loop_thread.run(long_wait, timeout=30)
                assert cancelled.wait(10), (
                    f"interrupted call {attempt} of {INTERRUPTIONS} left its coroutine running"
                )
            finally:
                loop_thread.stop()
    finally:
        sys.setswitchinterval(previous_interval)
        signal.signal(signal.SIGINT, previous_handler)


def test_a_call_on_a_stopped_loop_makes_no_coroutine() -> None:
    loop_thread = LoopThread("test-loop")
    loop_thread.stop()
    made: list[object] = []

    def make() -> object:
        made.append(1)
        return asyncio.sleep(0)

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(RuntimeError, match="event loop has stopped"):
            loop_thread.run(make)  # type: ignore[arg-type]
    assert made == []
