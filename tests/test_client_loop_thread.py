"""The sync clients' loop thread: a Ctrl-C during a blocking call leaves nothing behind."""

from __future__ import annotations

import asyncio
import signal
import threading
import warnings

import pytest

from pystream.client.loop_thread import LoopThread


def test_ctrl_c_during_a_blocking_call_cancels_its_coroutine_on_the_loop() -> None:
    loop_thread = LoopThread("test-loop")
    cancelled = threading.Event()
    main_thread = threading.main_thread().ident
    assert main_thread is not None

    async def long_wait() -> None:
        # The Ctrl-C arrives once this runs, while the caller blocks on the result.
        signal.pthread_kill(main_thread, signal.SIGINT)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            loop_thread.run(long_wait, timeout=30)
        assert cancelled.wait(10), "the interrupted call's coroutine kept running on the loop"
    finally:
        signal.signal(signal.SIGINT, previous)
        loop_thread.stop()


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
