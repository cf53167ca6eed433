"""An event loop running in a background thread, for the synchronous client facades.

Each sync client owns one: its asyncio core lives there, and the caller's
thread hands it coroutines with :meth:`LoopThread.run`.  Hot paths avoid
the hop entirely (``Producer.send`` appends under a lock on the caller's
thread and only *wakes* the loop when a batch needs sending).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")

# How long the main thread blocks at a time before it looks for a Ctrl-C that CPython
# (before 3.13) can leave pending: a signal that lands while the main thread still runs
# bytecode sets the "eval breaker", but another thread taking the GIL (this loop's, most
# often with uvloop's fast start) recomputes the breaker without it; the main thread
# then blocks in the wait below with KeyboardInterrupt pending but never raised.
_SIGNAL_CHECK_INTERVAL = 0.25


def _new_loop() -> asyncio.AbstractEventLoop:
    # asyncio's loop unless PYSTREAM_UVLOOP=1: uvloop is installed with pystream (for
    # `pystream rest`), but the sync client's figures and tests are asyncio's.
    if os.environ.get("PYSTREAM_UVLOOP") == "1":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class _Call(Generic[T]):
    """One coroutine handed to the loop: started, cancelled and reported from there.

    Unlike ``asyncio.run_coroutine_threadsafe``, the caller holds the handle *before*
    the coroutine can start, so an interruption at any point can still cancel it.
    """

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self.coro = coro
        self.result: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._task: asyncio.Task[T] | None = None
        self._abandoned = False

    def start(self) -> None:
        """On the loop: run the coroutine as a task (unless abandoned first)."""
        if self._abandoned:
            return
        self._task = asyncio.ensure_future(self.coro)
        self._task.add_done_callback(self._done)

    def abandon(self) -> None:
        """On the loop: the caller stopped waiting; cancel the task, or close the coroutine
        if it never started."""
        self._abandoned = True
        if self._task is None:
            self.coro.close()
        else:
            self._task.cancel()

    def _done(self, task: asyncio.Task[T]) -> None:
        if task.cancelled():
            self.result.cancel()
        elif (exc := task.exception()) is not None:
            self.result.set_exception(exc)
        else:
            self.result.set_result(task.result())


class LoopThread:
    """A daemon thread running an event loop until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.loop = _new_loop()
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()
        self._started.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                pending = asyncio.all_tasks(self.loop)
                for task in pending:
                    task.cancel()
                if pending:
                    self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    @property
    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def run(
        self, make_coro: Callable[[], Coroutine[Any, Any, T]], timeout: float | None = None
    ) -> T:
        """Run the coroutine ``make_coro()`` on the loop and wait for its result
        (``TimeoutError`` after ``timeout``).

        The coroutine is made here, not by the caller, so that an interruption (a
        Ctrl-C's ``KeyboardInterrupt``) at any point leaves it either closed unstarted
        or cancelled on the loop -- never "never awaited".
        """
        if self.in_loop_thread:
            raise RuntimeError(
                "a blocking pystream client method was called on the client's own event loop "
                "thread (e.g. from a callback); use the pystream.aio client there instead"
            )
        if not self.thread.is_alive():
            raise RuntimeError("the client's event loop has stopped (the client was closed)")
        call = _Call(make_coro())
        try:
            self.loop.call_soon_threadsafe(call.start)
            if threading.current_thread() is not threading.main_thread():
                return call.result.result(timeout)
            return _wait_in_main_thread(call.result, timeout)
        except BaseException:
            # Whenever the interruption came (even before the hand-off was queued), the loop
            # cancels the task or closes the unstarted coroutine: never this thread, which
            # must not touch a coroutine the loop may be running.
            try:
                self.loop.call_soon_threadsafe(call.abandon)
            except RuntimeError:  # the loop is closed: nothing runs the coroutine any more
                call.coro.close()
            raise

    def stop(self) -> None:
        """Stop the loop (cancelling what still runs) and join the thread."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            if not self.in_loop_thread:
                self.thread.join()


def _wait_in_main_thread(result: concurrent.futures.Future[T], timeout: float | None) -> T:
    """``result.result(timeout)``, waking every :data:`_SIGNAL_CHECK_INTERVAL` to run
    pending signal handlers, so a Ctrl-C is never held until the call ends."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        wait = _SIGNAL_CHECK_INTERVAL
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        try:
            return result.result(wait)
        except concurrent.futures.TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise
        # Signal 0 sends nothing; CPython's pthread_kill then runs pending handlers
        # (raising KeyboardInterrupt here if a Ctrl-C was held).
        signal.pthread_kill(threading.get_ident(), 0)
