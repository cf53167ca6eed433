"""Event-loop lag monitor: detects anything that blocks the broker's event loop.

The broker serves every connection from one asyncio loop, so a single slow call
on it (an fsync, an ``rmtree``, creating hundreds of partitions) stalls every
client for its duration.  :class:`LoopLagMonitor` is a task that sleeps for
``interval_ms`` and measures how late it wakes up: the lateness (the *lag*) is
how long the loop was busy with something else.  A lag above
``threshold_ms`` is logged as a WARNING ``event loop blocked for N ms`` so an
operator (and tests/test_loop_lag.py) sees every stall.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time

logger = logging.getLogger(__name__)

#: Upper bounds (ms, inclusive) of the histogram buckets; the last bucket is +Inf.
DEFAULT_BUCKETS_MS: tuple[float, ...] = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000)


class LoopLagMonitor:
    """Measures event-loop lag; ``start()`` on the loop, ``await stop()`` to end it.

    Exposes ``max_lag_ms``, ``stalls`` (lags over the threshold), ``samples``
    and ``histogram()`` (cumulative-free bucket counts, ready for Prometheus).
    """

    def __init__(
        self,
        interval_ms: float = 20.0,
        threshold_ms: float = 100.0,
        buckets_ms: tuple[float, ...] = DEFAULT_BUCKETS_MS,
    ) -> None:
        """``interval_ms``: how often to wake; ``threshold_ms``: the lag that counts as a
        stall (logged as a WARNING); ``buckets_ms``: increasing histogram bounds."""
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be positive, got {interval_ms}")
        if list(buckets_ms) != sorted(buckets_ms):
            raise ValueError(f"buckets_ms must increase, got {buckets_ms}")
        self.interval_ms = interval_ms
        self.threshold_ms = threshold_ms
        self.buckets_ms = tuple(buckets_ms)
        self.max_lag_ms = 0.0
        self.stalls = 0
        self.samples = 0
        self.lag_sum_ms = 0.0
        self._counts = [0] * (len(self.buckets_ms) + 1)  # the extra one: above every bound
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start measuring on the running loop (idempotent)."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="loop-lag-monitor"
            )

    async def stop(self) -> None:
        """Stop measuring and log the maximum lag seen (INFO)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        logger.info(
            "event loop lag monitor stopped: max lag %.1f ms, %d stalls over %.0f ms in %d samples",
            self.max_lag_ms,
            self.stalls,
            self.threshold_ms,
            self.samples,
        )

    def record(self, lag_ms: float) -> None:
        """Account one measured lag (public so tests and other probes can feed it)."""
        lag_ms = max(lag_ms, 0.0)  # a timer firing a hair early is no lag
        self.samples += 1
        self.lag_sum_ms += lag_ms
        self._counts[bisect.bisect_left(self.buckets_ms, lag_ms)] += 1
        if lag_ms > self.max_lag_ms:
            self.max_lag_ms = lag_ms
        if lag_ms > self.threshold_ms:
            self.stalls += 1
            logger.warning("event loop blocked for %d ms", round(lag_ms))

    def histogram(self) -> list[tuple[float, int]]:
        """(upper bound ms, count) per bucket, the last bound being ``inf``; not cumulative."""
        bounds = [*self.buckets_ms, float("inf")]
        return list(zip(bounds, self._counts, strict=True))

    async def _run(self) -> None:
        interval = self.interval_ms / 1000
        while True:
            expected = time.monotonic() + interval
            await asyncio.sleep(interval)
            self.record((time.monotonic() - expected) * 1000)
