"""The log cleaner: compaction of ``cleanup.policy=compact`` logs in the background.

Kafka's ``LogCleaner``.  What a clean does is :mod:`~pystream.storage.cleaner_job`;
which log is cleaned when is :mod:`~pystream.storage.cleaner_manager`; this
module runs them.

**Threads and the handoff.**  The broker uses its logs from one asyncio event
loop and :class:`~pystream.storage.log.Log` has no locks.  So the cleaner
splits each clean between that loop (the logs' *owner*) and a worker thread:

1. on the loop: pick the filthiest log and snapshot it (segment sizes, own
   file descriptors, producer state, aborted transactions);
2. in the worker: build the offset map and write each group's cleaned
   segment (``.cleaned`` files nobody else knows about; the Cython loops
   release the GIL, so the loop keeps serving meanwhile);
3. on the loop: swap each cleaned group into the log (renames plus a change
   of the segment list, all between two requests: a reader sees the old
   segments or the new one, never half a swap), then checkpoint.

``log.cleaner.threads`` such tasks run, each with its own worker thread and
offset map (``log.cleaner.dedupe.buffer.size / threads`` bytes); a task with
nothing to clean sleeps ``log.cleaner.backoff.ms``.  :meth:`LogCleaner.shutdown`
sets a stop flag that the worker checks between batches, waits for the tasks,
and must run before the log manager closes the logs.

Without an event loop (tests, tools), :meth:`LogCleaner.clean_once` and
:meth:`Cleaner.clean` run a whole clean in the calling thread, which must own
the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pystream._core.offset_map import OffsetMap
from pystream.clock import now_ms
from pystream.metrics import BrokerMetrics
from pystream.storage.cleaner_config import CleanerConfig
from pystream.storage.cleaner_io import CleanAborted
from pystream.storage.cleaner_job import CleanJob, CleanResult, Progress
from pystream.storage.cleaner_manager import (
    CleanOutcome,
    LogCleanerManager,
    LogToClean,
    describe,
    first_dirty_offset,
    first_uncleanable_offset,
)
from pystream.storage.log import Log
from pystream.storage.log_manager import LogManager

logger = logging.getLogger(__name__)

__all__ = ["CleanAborted", "CleanResult", "Cleaner", "CleanerConfig", "LogCleaner"]


class Cleaner:
    """One cleaner thread's resources: its offset map and I/O budget."""

    def __init__(self, config: CleanerConfig, stop: threading.Event | None = None) -> None:
        self.config = config
        self.offset_map = OffsetMap(config.map_memory_per_thread, config.io_buffer_load_factor)
        self.stop = stop if stop is not None else threading.Event()

    def new_job(
        self,
        log: Log,
        first_dirty: int,
        upper: int,
        now_ms: int,
        *,
        is_live: Callable[[], bool] = lambda: True,
        progress: Progress | None = None,
    ) -> CleanJob:
        """Snapshot ``log`` for a clean of ``[first_dirty, upper)`` (on the log's owner)."""
        return CleanJob(
            log,
            first_dirty,
            upper,
            self.offset_map,
            now_ms=now_ms,
            io_buffer_size=self.config.io_buffer_per_thread,
            max_io_bytes_per_second=self.config.io_max_bytes_per_second
            / max(self.config.threads, 1),
            stop=self.stop,
            is_live=is_live,
            progress=progress,
        )

    def clean(
        self,
        log: Log,
        *,
        first_dirty: int | None = None,
        now_ms: int | None = None,
        progress: Progress | None = None,
    ) -> CleanResult:
        """Clean ``log`` now, in the calling thread (which must own the log).

        The dirty section starts at ``first_dirty`` (default: the log start
        offset, i.e. everything is dirty) and ends where the manager would end it.
        """
        now = now_ms() if now_ms is None else now_ms
        first = first_dirty_offset(log, first_dirty)
        job = self.new_job(
            log, first, first_uncleanable_offset(log, first, now), now, progress=progress
        )
        try:
            return job.run()
        finally:
            job.close()


def _log_result(ltc: LogToClean, result: CleanResult) -> None:
    stats = result.stats
    logger.info(
        "Cleaned %s: offsets [%d, %d) deduplicated, %d segments in %d groups, %d swapped; "
        "read %.1f MB, wrote %.1f MB in %.2f s (%.1f MB/s); offset map %d keys in %.1f MB",
        describe(ltc),
        result.first_dirty_offset,
        result.end_offset,
        stats.segments_in,
        stats.groups,
        stats.segments_swapped,
        stats.bytes_read / 1e6,
        stats.bytes_written / 1e6,
        stats.seconds,
        stats.mb_per_second,
        stats.map_keys,
        stats.map_bytes / 1e6,
    )


class LogCleaner:
    """Compacts the broker's compacted logs in the background (see the module docstring)."""

    def __init__(
        self,
        log_manager: LogManager,
        config: CleanerConfig | None = None,
        *,
        clock: Callable[[], int] = now_ms,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        """``metrics``: the broker's (cleans and their bytes are counted there)."""
        self.config = config if config is not None else CleanerConfig()
        self.metrics = metrics if metrics is not None else BrokerMetrics()
        self.log_manager = log_manager
        self.manager = LogCleanerManager(
            log_manager, clock=clock, retry_backoff_ms=self.config.backoff_ms
        )
        self._clock = clock
        self._stop = threading.Event()
        self._cleaners = [Cleaner(self.config, self._stop) for _ in range(self.config.threads)]
        self._tasks: list[asyncio.Task[None]] = []
        self._executors: list[ThreadPoolExecutor] = []
        self._wakeup: asyncio.Event | None = None
        self.last_result: CleanResult | None = None

    @classmethod
    def for_broker(
        cls, log_manager: LogManager, broker_config: Any, metrics: BrokerMetrics | None = None
    ) -> LogCleaner:
        """A cleaner configured by the broker's ``log.cleaner.*`` settings."""
        return cls(log_manager, CleanerConfig.from_broker_config(broker_config), metrics=metrics)

    # --- one clean on the calling thread ----------------------------------------------------

    def _new_job(
        self, cleaner: Cleaner, ltc: LogToClean, progress: Progress | None = None
    ) -> CleanJob:
        topic, partition = ltc.topic_partition
        return cleaner.new_job(
            ltc.log,
            ltc.first_dirty_offset,
            ltc.first_uncleanable_offset,
            self._clock(),
            is_live=lambda: self.log_manager.get_log(topic, partition) is ltc.log,
            progress=progress,
        )

    def _finish(self, ltc: LogToClean, job: CleanJob) -> CleanResult:
        result = job.result()
        self.manager.done_cleaning(
            ltc, CleanOutcome(result.end_offset, result.earliest_horizon_ms, result.progressed)
        )
        self.last_result = result
        self.metrics.cleaner_runs += 1
        self.metrics.cleaner_bytes_read += result.stats.bytes_read_total
        self.metrics.cleaner_bytes_written += result.stats.bytes_written
        _log_result(ltc, result)
        return result

    def clean_once(self, progress: Progress | None = None) -> CleanResult | None:
        """Clean the filthiest log now in the calling thread (which must own the logs);
        None if no log needs cleaning or the clean was aborted."""
        ltc = self.manager.grab_filthiest_log()
        if ltc is None:
            return None
        cleaner = self._cleaners[0] if self._cleaners else Cleaner(self.config, self._stop)
        job = self._new_job(cleaner, ltc, progress)
        try:
            job.run()
        except CleanAborted as exc:
            logger.info("Clean of %s aborted: %s", describe(ltc), exc)
            self.manager.abort_cleaning(ltc)
            return None
        except BaseException:
            self.manager.abort_cleaning(ltc, failed=True)
            raise
        finally:
            job.close()
        result = self._finish(ltc, job)
        if progress is not None:
            progress("checkpointed")
        return result

    # --- background tasks on the event loop -------------------------------------------------

    def start(self) -> None:
        """Start the cleaner tasks on the running event loop (no-op if disabled)."""
        if not self.config.enable or not self._cleaners or self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        for i, cleaner in enumerate(self._cleaners):
            executor = ThreadPoolExecutor(1, thread_name_prefix=f"log-cleaner-{i}")
            self._executors.append(executor)
            self._tasks.append(loop.create_task(self._run(cleaner, executor), name=f"cleaner-{i}"))
        logger.info("Started %d log cleaner thread(s)", len(self._tasks))

    async def shutdown(self) -> None:
        """Stop cleaning: in-flight cleans abort at their next batch; wait for them."""
        self._stop.set()
        if self._wakeup is not None:
            self._wakeup.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for executor in self._executors:
            executor.shutdown(wait=True)
        self._executors = []

    async def _run(self, cleaner: Cleaner, executor: ThreadPoolExecutor) -> None:
        assert self._wakeup is not None
        while not self._stop.is_set():
            try:
                cleaned = await self._clean_filthiest(cleaner, executor)
            except Exception:  # never let one bad log stop the cleaner
                logger.exception("Log cleaner iteration failed")
                cleaned = False
            if not cleaned:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self.config.backoff_ms / 1000)

    async def _clean_filthiest(self, cleaner: Cleaner, executor: ThreadPoolExecutor) -> bool:
        """One clean; True if it made progress (then the next one starts at once)."""
        ltc = self.manager.grab_filthiest_log()
        if ltc is None:
            return False
        loop = asyncio.get_running_loop()
        logger.info("Cleaning %s", describe(ltc))
        job = self._new_job(cleaner, ltc)
        pending: asyncio.Future[Any] | None = None
        try:
            # shield: a cancelled task must not close descriptors under a running worker.
            pending = loop.run_in_executor(executor, job.build_offset_map)
            await asyncio.shield(pending)
            for group in job.groups():
                pending = loop.run_in_executor(executor, job.clean_group, group)
                cleaned = await asyncio.shield(pending)
                job.check_stop()
                job.swap_group(group, cleaned)
            pending = None
        except CleanAborted as exc:
            logger.info("Clean of %s aborted: %s", describe(ltc), exc)
            self.manager.abort_cleaning(ltc)
            return False
        except asyncio.CancelledError:
            self._stop.set()
            self.manager.abort_cleaning(ltc)
            raise
        except Exception:
            topic, partition = ltc.topic_partition
            if self.log_manager.get_log(topic, partition) is not ltc.log:
                logger.info("Clean of %s aborted: the log was deleted", describe(ltc))
                self.manager.abort_cleaning(ltc)
                return False
            logger.exception("Cleaning %s failed; it is retried after a backoff", describe(ltc))
            self.manager.abort_cleaning(ltc, failed=True)
            return False
        finally:
            if pending is not None and not pending.done():
                pending.add_done_callback(lambda _: job.close())
            else:
                job.close()
        return self._finish(ltc, job).progressed
