"""All partition logs of a broker, across its ``log.dirs``.

Per log dir::

    .lock                                locked (flock) while a broker or tool uses the dir
    meta.properties                      broker.id, cluster.id
    .kafka_cleanshutdown                 present only while the broker is stopped cleanly
    recovery-point-offset-checkpoint     below these offsets the data is fsynced
    log-start-offset-checkpoint          moved by retention and DeleteRecords
    replication-offset-checkpoint        high watermarks
    cleaner-offset-checkpoint            the log cleaner's (storage.cleaner_manager),
    cleaner-delete-horizon-checkpoint    written through run_in_background
    <topic>-<partition>/                 one Log each
    <topic>-<partition>.<uuid>-delete/   a deleted log waiting for file.delete.delay.ms

The LogManager exposes the periodic steps (flush, retention, checkpoints) as
methods; the broker drives the timers.  Topic configs are not persisted here
(that is the metadata store's job): the caller hands in a LogConfig per topic.

**Threads.**  The broker calls the manager from its asyncio event loop, where
nothing may block for long.  Called on a running loop, the manager does its
slow file work (fsyncs, deleting segment files and deleted logs' directories)
on one worker thread of its own (``log-io``), in submission order, so that a
flush and a later deletion of the same files never overlap; the state changes
(recovery points, segment lists, renames) stay on the loop.  ``shutdown()``
waits for that work.  Without a running loop (tools, tests) everything happens
inline as before.  Logs may also be created from another thread
(:meth:`LogManager.create_logs` under ``asyncio.to_thread``): a lock guards the
log map and the choice of log dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pystream._core.segment import LogSegment
from pystream.clock import now_ms
from pystream.config import LogConfig
from pystream.errors import (
    InvalidPartitionsError,
    InvalidTopicException,
    KafkaStorageError,
    UnknownTopicOrPartitionError,
)
from pystream.fileutil import fsync_directory, sync_filesystems
from pystream.storage.checkpoints import (
    LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    REPLICATION_OFFSET_CHECKPOINT,
    CorruptCheckpointError,
    OffsetCheckpointFile,
)
from pystream.storage.log import (
    FlushPlan,
    Log,
    delete_segment_files,
    parse_topic_partition,
)
from pystream.storage.log_dirs import LockedLogDirs, lock_log_dirs, resolve_log_dirs
from pystream.storage.meta_properties import ensure_meta_properties

logger = logging.getLogger(__name__)

CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"
DELETE_DIR_SUFFIX = "-delete"
FUTURE_DIR_SUFFIX = "-future"
STRAY_DIR_SUFFIX = "-stray"
MAX_TOPIC_NAME_LENGTH = 249
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]+")

TopicPartition = tuple[str, int]
T = TypeVar("T")


def validate_topic_name(topic: str) -> None:
    """Kafka's topic name rules; raises InvalidTopicException saying which one is broken."""
    if not topic:
        raise InvalidTopicException("Topic name is illegal, it can't be empty")
    if topic in (".", ".."):
        raise InvalidTopicException(f"Topic name cannot be {topic!r}")
    if len(topic) > MAX_TOPIC_NAME_LENGTH:
        raise InvalidTopicException(
            f"Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LENGTH} characters, "
            f"topic name: {topic[:40]}... ({len(topic)} characters)"
        )
    if not _LEGAL_TOPIC.fullmatch(topic):
        raise InvalidTopicException(
            f"Topic name {topic!r} is illegal, it contains a character other than ASCII "
            "alphanumerics, '.', '_' and '-'"
        )


def _delete_dir_name(topic: str, partition: int) -> str:
    # Kafka's logDeleteDirName: shorten the topic so the name fits a 255-byte file name.
    suffix = f"-{partition}.{uuid.uuid4().hex}{DELETE_DIR_SUFFIX}"
    return topic[: 255 - len(suffix)] + suffix


class LogManager:
    """Opens, creates, deletes and maintains the logs in ``log_dirs``."""

    def __init__(
        self,
        log_dirs: Sequence[str],
        default_config: LogConfig,
        *,
        broker_id: int = 0,
        cluster_id: str | None = None,
        topic_configs: Mapping[str, LogConfig] | None = None,
        clock: Callable[[], int] = now_ms,
        locked_dirs: LockedLogDirs | None = None,
        recovery_threads_per_dir: int = 1,
    ) -> None:
        """Lock every dir, check its ``meta.properties`` and load every log (recovering
        after an unclean stop; ``recovery_threads_per_dir`` logs at a time, Kafka's
        ``num.recovery.threads.per.data.dir``; the dirs one after the other), then remove
        the clean-shutdown markers.

        The locks (each dir's ``.lock``, as Kafka's) are held until :meth:`shutdown`:
        ``locked_dirs``, taken by the caller with ``lock_log_dirs(log_dirs)`` (the
        broker locks before it opens its metadata store), become the manager's;
        without them the manager locks ``log_dirs`` itself.
        ``topic_configs`` gives the configs of existing topics (from the
        metadata store); others get ``default_config``.  Raises
        InvalidConfigError for an empty or duplicated ``log_dirs``,
        LogDirNotFoundError if a dir cannot be created, DirectoryLockedError if
        another process or thread uses a dir, and InconsistentBrokerIdError /
        InconsistentClusterIdError if a dir belongs to another broker or cluster.
        """
        if recovery_threads_per_dir < 1:
            raise ValueError(f"recovery threads per dir must be >= 1: {recovery_threads_per_dir}")
        if locked_dirs is None:
            locked_dirs = lock_log_dirs(log_dirs)
        elif locked_dirs.paths != resolve_log_dirs(log_dirs):
            raise ValueError(f"locked_dirs {locked_dirs.paths} are not log.dirs {list(log_dirs)}")
        self._locked_dirs = locked_dirs
        self._recovery_threads_per_dir = recovery_threads_per_dir
        try:
            self._open(log_dirs, default_config, broker_id, cluster_id, topic_configs, clock)
        except BaseException:
            locked_dirs.release()  # a manager that failed to open must not keep the dirs
            raise

    def _open(
        self,
        log_dirs: Sequence[str],
        default_config: LogConfig,
        broker_id: int,
        cluster_id: str | None,
        topic_configs: Mapping[str, LogConfig] | None,
        clock: Callable[[], int],
    ) -> None:
        # Absolute, as configured (symlinks kept): the paths Kafka reports (DescribeLogDirs)
        # and operators recognise; duplicates were found through their real paths.
        self.log_dirs: list[str] = [os.path.abspath(d) for d in log_dirs]
        self.broker_id = broker_id
        self.default_config = default_config
        self.cluster_id = ensure_meta_properties(self.log_dirs, broker_id, cluster_id)
        self._topic_configs: dict[str, LogConfig] = dict(topic_configs or {})
        self._clock = clock
        self._logs: dict[TopicPartition, Log] = {}
        self._dir_of: dict[TopicPartition, str] = {}
        # Logs per dir, kept with _dir_of: a new log goes to the dir with the fewest, and
        # counting them afresh for each new log made creating N partitions O(N²).
        self._logs_in_dir: dict[str, int] = dict.fromkeys(self.log_dirs, 0)
        self._logs_to_delete: list[tuple[int, Log, str]] = []  # (due ms, log, renamed dir)
        self._closed = False
        # Guards _logs/_dir_of changes and the choice of a new log's dir: logs may be
        # created from a worker thread (create_logs) while the loop creates or deletes others.
        self._lock = threading.RLock()
        # The log-io thread (made on first use) and the work handed to it from the loop.
        self._io: ThreadPoolExecutor | None = None
        self._background: set[asyncio.Future[Any]] = set()
        # Logs with a flush.messages flush out, and the future that completes with it.
        self._message_flushes: dict[Log, asyncio.Future[int]] = {}
        self._roll_flushes: dict[Log, asyncio.Future[int]] = {}  # the same, after a roll
        threads = self._recovery_threads_per_dir
        if threads == 1:
            for log_dir in self.log_dirs:
                self._load_dir(log_dir, None)
        else:
            # Opening a log is mostly file-system calls (they release the GIL) and, after a
            # crash, reading segments: a pool keeps the disk busy while Python works.
            with ThreadPoolExecutor(threads, thread_name_prefix="log-recovery") as pool:
                for log_dir in self.log_dirs:
                    self._load_dir(log_dir, pool)
        self.sync_log_dirs()  # what loading wrote without an fsync each (leader epochs)

    # --- startup ---------------------------------------------------------------------------

    def _read_checkpoint(self, log_dir: str, name: str) -> dict[TopicPartition, int]:
        try:
            return OffsetCheckpointFile(os.path.join(log_dir, name)).read()
        except CorruptCheckpointError as exc:
            # As Kafka: a lost checkpoint only costs a longer recovery, never data.
            logger.warning("%s; using defaults for every log in %s", exc, log_dir)
            return {}

    def _load_dir(self, log_dir: str, pool: ThreadPoolExecutor | None) -> None:
        marker = os.path.join(log_dir, CLEAN_SHUTDOWN_FILE)
        clean = os.path.exists(marker)
        recovery_points = self._read_checkpoint(log_dir, RECOVERY_POINT_CHECKPOINT)
        start_offsets = self._read_checkpoint(log_dir, LOG_START_OFFSET_CHECKPOINT)
        high_watermarks = self._read_checkpoint(log_dir, REPLICATION_OFFSET_CHECKPOINT)
        names = sorted(os.listdir(log_dir))
        if not clean and any(parse_topic_partition(name) for name in names):
            logger.info("No clean shutdown marker in %s: recovering its logs", log_dir)
        to_open: list[tuple[TopicPartition, str]] = []
        for name in names:
            path = os.path.join(log_dir, name)
            if not os.path.isdir(path):
                continue
            if name.endswith(DELETE_DIR_SUFFIX):
                logger.info("Removing deleted log %s", path)
                shutil.rmtree(path, ignore_errors=True)
                continue
            tp = parse_topic_partition(name)
            if name.endswith((FUTURE_DIR_SUFFIX, STRAY_DIR_SUFFIX)) or tp is None:
                logger.warning("Ignoring %s: not a <topic>-<partition> log directory", path)
                continue
            if tp in self._logs:
                raise KafkaStorageError(
                    f"Duplicate log directories for {name}: {self._logs[tp].directory} and "
                    f"{path}; remove the stale one"
                )
            to_open.append((tp, path))

        def open_log(item: tuple[TopicPartition, str]) -> Log:
            tp, path = item
            return Log.open(
                path,
                self.config_for(tp[0]),
                log_start_offset=start_offsets.get(tp, 0),
                recovery_point=recovery_points.get(tp, 0),
                had_clean_shutdown=clean,
                clock=self._clock,
            )

        if pool is None:
            opened = [(tp, open_log((tp, path)), None) for tp, path in to_open]
        else:
            futures = [(tp, pool.submit(open_log, (tp, path))) for tp, path in to_open]
            opened = [(tp, f.result() if f.exception() is None else None, f.exception())
                      for tp, f in futures]  # fmt: skip
        failure = None
        for tp, log, error in opened:
            if log is None:
                failure = failure or error
                continue
            if tp in high_watermarks:
                log.high_watermark = high_watermarks[tp]
            self._adopt(tp, log, log_dir)  # the loaded ones are closed with the manager
        if failure is not None:
            raise failure
        if clean:
            os.remove(marker)  # from now on a crash must trigger recovery
            fsync_directory(log_dir)

    def sync_log_dirs(self) -> None:
        """Make durable every file written in the log dirs without its own fsync (one
        ``syncfs`` per file system).  Blocking: call it from a thread, or at startup."""
        sync_filesystems(self.log_dirs)

    # --- access ----------------------------------------------------------------------------

    def config_for(self, topic: str) -> LogConfig:
        """The topic's config, or the default."""
        return self._topic_configs.get(topic, self.default_config)

    def get_log(self, topic: str, partition: int) -> Log | None:
        """The partition's log, or None."""
        return self._logs.get((topic, partition))

    def logs(self) -> dict[TopicPartition, Log]:
        """Every live log by (topic, partition) (a copy)."""
        # One C-level copy (atomic under the GIL), without the creation lock: a thread
        # creating a topic's logs takes that lock log after log, and the event loop must
        # not queue behind it.
        return dict(self._logs)

    def _live_logs(self) -> list[Log]:
        # A copy: another thread may add logs while the caller iterates (see logs()).
        return list(self._logs.values())

    def _adopt(self, tp: TopicPartition, log: Log, log_dir: str) -> None:
        # Under _lock (or during __init__): the log joins the map, wired for background work.
        log.defer_file_deletes = True
        # An append reaching flush.messages fsyncs on the log-io thread; the produce
        # request waits for it (wait_message_flushed) before it is answered.
        log.flush_requester = self._request_message_flush
        log.roll_flush_requester = self._request_roll_flush
        self._logs[tp] = log
        self._dir_of[tp] = log_dir
        self._logs_in_dir[log_dir] = self._logs_in_dir.get(log_dir, 0) + 1

    def log_dir_of(self, topic: str, partition: int) -> str | None:
        """The log dir holding the partition, or None."""
        return self._dir_of.get((topic, partition))

    def get_or_create_log(self, topic: str, partition: int, config: LogConfig | None = None) -> Log:
        """The partition's log, created in the log dir with the fewest partitions if absent.

        ``config`` (if given) becomes the topic's config.  Raises
        InvalidTopicException for an illegal topic name, InvalidPartitionsError
        for a negative partition.
        """
        log, created_in = self._get_or_create(topic, partition, config)
        if created_in is not None:
            fsync_directory(created_in)
        return log

    def create_logs(
        self, partitions: Iterable[TopicPartition], config: LogConfig | None = None
    ) -> list[Log]:
        """The logs of many partitions (in order), creating those that are absent.

        Made to run on a worker thread (``asyncio.to_thread``) when a topic with many
        partitions is created: each log dir is fsynced once at the end rather than
        once per log.  ``config`` (if given) becomes the config of every topic named.
        Raises as :meth:`get_or_create_log` (logs created before the error stay).
        """
        logs: list[Log] = []
        touched: set[str] = set()
        try:
            for topic, partition in partitions:
                log, created_in = self._get_or_create(topic, partition, config)
                logs.append(log)
                if created_in is not None:
                    touched.add(created_in)
        finally:
            for log_dir in sorted(touched):
                fsync_directory(log_dir)
        return logs

    def _get_or_create(
        self, topic: str, partition: int, config: LogConfig | None
    ) -> tuple[Log, str | None]:
        # (the log, the dir it was created in, to fsync; None if it existed)
        self._check_open()
        tp = (topic, partition)
        existing = self._logs.get(tp)
        if existing is not None:  # the common case, without queueing behind a creating thread
            if config is not None:
                self._topic_configs[topic] = config
            return existing, None
        with self._lock:  # held for one Log.open: a loop caller waits at most that long
            if config is not None:
                self._topic_configs[topic] = config
            log = self._logs.get(tp)
            if log is not None:
                return log, None
            validate_topic_name(topic)
            if partition < 0:
                raise InvalidPartitionsError(f"Partition {partition} of {topic} is negative")
            counts = self._logs_in_dir
            log_dir = min(self.log_dirs, key=lambda d: counts.get(d, 0))  # ties: the first listed
            path = os.path.join(log_dir, f"{topic}-{partition}")
            log = Log.open(path, self.config_for(topic), clock=self._clock)
            self._adopt(tp, log, log_dir)
        logger.info("Created log for %s-%d in %s", topic, partition, log_dir)
        return log, log_dir

    def update_config(self, topic: str, config: LogConfig) -> None:
        """Give the topic a new config, applied to its existing logs at once."""
        self._topic_configs[topic] = config
        for (t, _), log in self.logs().items():
            if t == topic:
                log.update_config(config)

    def update_configs(self, configs: Mapping[str, LogConfig], default: LogConfig) -> None:
        """New configs of many topics (and the default of topics without one), applied to
        their existing logs in one pass: new broker-level defaults reach every topic."""
        self.default_config = default
        self._topic_configs.update(configs)
        for (topic, _), log in self.logs().items():
            config = configs.get(topic)
            if config is not None:
                log.update_config(config)

    def delete_log(self, topic: str, partition: int) -> None:
        """Remove a partition: rename its dir to ``<topic>-<partition>.<uuid>-delete`` now,
        delete the files after the topic's ``file.delete.delay.ms`` (cleanup_logs).

        In-flight fetches keep sending from the files whatever the delay: each holds
        its segment's descriptor until its response is sent.
        Raises UnknownTopicOrPartitionError if there is no such log.
        Called on an event loop, the rename happens now and its directory fsync and
        the removal happen on the log-io thread.
        """
        self._check_open()
        tp = (topic, partition)
        with self._lock:
            log = self._logs.pop(tp, None)
            if log is None:
                raise UnknownTopicOrPartitionError(f"No log for {topic}-{partition} on this broker")
            log_dir = self._dir_of.pop(tp)
            self._logs_in_dir[log_dir] -= 1
        renamed = os.path.join(log_dir, _delete_dir_name(topic, partition))
        try:
            os.rename(log.directory, renamed)
        except OSError as exc:
            with self._lock:  # still there: keep serving it
                self._logs[tp], self._dir_of[tp] = log, log_dir
                self._logs_in_dir[log_dir] += 1
            raise KafkaStorageError(f"Cannot rename {log.directory} for deletion: {exc}") from exc
        due = self._clock() + log.config.file_delete_delay_ms
        self._logs_to_delete.append((due, log, renamed))
        due_logs = self._take_due_logs(self._clock())
        self._offload(_remove_deleted_logs, due_logs, [log_dir])

    def _take_due_logs(self, now_ms: int | None) -> list[tuple[Log, str]]:
        # now_ms None: everything (shutdown).  A log whose background flush is still out
        # waits for the next round (the flush holds its segments).
        keep, due = [], []
        for entry in self._logs_to_delete:
            due_now = now_ms is None or entry[0] <= now_ms
            (due if due_now and not entry[1].flush_in_flight else keep).append(entry)
        self._logs_to_delete = keep
        return [(log, path) for _, log, path in due]

    # --- background work -------------------------------------------------------------------

    def _offload(self, func: Callable[..., T], *args: Any) -> asyncio.Future[T] | None:
        """Run ``func(*args)`` on the log-io thread when called on a running event loop
        (returns its future, which shutdown() waits for), else inline (returns None)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            func(*args)
            return None
        if self._io is None:
            self._io = ThreadPoolExecutor(1, thread_name_prefix="log-io")
        # run_in_executor submits at once (to_thread would wait for the task's first step,
        # and never run if cancelled before it): the work is queued before we return.
        future = loop.run_in_executor(self._io, func, *args)
        self._background.add(future)
        future.add_done_callback(self._background_done)
        return future

    def run_in_background(self, func: Callable[..., T], *args: Any) -> asyncio.Future[T] | None:
        """Run ``func(*args)`` on the log-io thread, after the file work queued before it
        (in submission order; shutdown() waits for it), when called on a running event
        loop; else inline.  For slow file work of components over the logs (the
        cleaner's checkpoint).  Returns the future, or None when run inline."""
        return self._offload(func, *args)

    def _background_done(self, future: asyncio.Future[Any]) -> None:
        self._background.discard(future)
        if not future.cancelled() and future.exception() is not None:
            logger.error("Background log work failed", exc_info=future.exception())

    def _flush_off_loop(self, plans: list[FlushPlan]) -> asyncio.Future[int]:
        """Run the plans' fsyncs on the log-io thread, finish them on the loop; the
        future gives how many logs were flushed."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[int] = loop.create_future()
        if not plans:
            result.set_result(0)
            return result
        work = self._offload(_run_flush_plans, plans)
        assert work is not None

        def finish(work: asyncio.Future[None]) -> None:
            for plan in plans:
                plan.log.finish_flush(plan)
            for plan in plans:
                for pending in (self._message_flushes, self._roll_flushes):
                    if pending.get(plan.log) is result:
                        del pending[plan.log]
            # Appends during the flush may have reached flush.messages again, or rolled.
            for plan in plans:
                log = plan.log
                if not plan.ok or self._closed or self._logs.get(log.topic_partition) is not log:
                    continue  # a failed flush is retried by the next roll or flush
                # (Capped at the LEO: a follower's roll may start the new segment past it.)
                rolled_end = min(log.active_segment.base_offset, log.log_end_offset)
                if log.needs_flush_for_messages():
                    self._request_message_flush(log)
                elif log.recovery_point < rolled_end:
                    self._request_roll_flush(log, rolled_end)
            if not result.done():
                result.set_result(sum(plan.ok for plan in plans))

        work.add_done_callback(finish)
        return result

    def _request_message_flush(self, log: Log) -> None:
        # flush.messages reached in an append: flush on the log-io thread when on a loop
        # (one flush per log at a time: appends meanwhile are covered by the next one).
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            log.flush()
            return
        if log in self._message_flushes or self._closed:
            return
        self._message_flushes[log] = self._flush_off_loop([log.plan_flush()])

    def _request_roll_flush(self, log: Log, new_segment_base: int) -> None:
        # A roll closed segments: fsync them on the log-io thread and move the recovery
        # point to the new segment, as Kafka's Log.roll schedules
        # flushUptoOffsetExclusive(newSegment.baseOffset); the periodic recovery-point
        # checkpoint then records it, so a crash recovers only the segments after it.
        # Without a loop (tools, tests) flush_dirty_logs does it.  One flush per log at a
        # time: rolls meanwhile are covered when it finishes (see _flush_off_loop).
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if log in self._roll_flushes or self._closed:
            return
        self._roll_flushes[log] = self._flush_off_loop([log.plan_flush(new_segment_base)])

    async def wait_message_flushed(self, targets: Iterable[tuple[str, int, int]]) -> None:
        """Until each ``(topic, partition, offset)`` is fsynced, where an append reaching
        ``flush.messages`` asked for a flush: Kafka answers such a produce after its fsync.
        Returns at once for the others (the default config never asks)."""
        for topic, partition, offset in targets:
            log = self._logs.get((topic, partition))
            while log is not None and log.recovery_point < offset:
                pending = self._message_flushes.get(log)
                if pending is None:
                    break
                await asyncio.shield(pending)

    @property
    def message_flushes_pending(self) -> bool:
        """True while some flush.messages flush is out (the produce path then waits)."""
        return bool(self._message_flushes)

    # --- periodic steps --------------------------------------------------------------------

    def flush_dirty_logs(self, now_ms: int | None = None) -> int:
        """fsync logs whose ``flush.ms`` has passed, and segments closed by a roll; returns
        how many logs were flushed.  Inline: on an event loop use
        :meth:`flush_dirty_logs_in_background`."""
        plans = self._plan_dirty_flushes(now_ms)
        try:
            _run_flush_plans(plans)
        finally:
            for plan in plans:
                plan.log.finish_flush(plan)
        return len(plans)

    def flush_dirty_logs_in_background(self, now_ms: int | None = None) -> asyncio.Future[int]:
        """:meth:`flush_dirty_logs` with the fsyncs on the log-io thread (call on the
        event loop); the future gives how many logs were flushed."""
        return self._flush_off_loop(self._plan_dirty_flushes(now_ms))

    def _plan_dirty_flushes(self, now_ms: int | None) -> list[FlushPlan]:
        self._check_open()
        now = self._clock() if now_ms is None else now_ms
        plans = []
        for log in self._live_logs():
            if log.flush_in_flight:
                continue  # the next round covers whatever it leaves
            if now - log.last_flush_ms >= log.config.flush_ms and log.unflushed_messages > 0:
                plans.append(log.plan_flush())
            elif log.recovery_point < log.active_segment.base_offset:
                # Kafka's flush after roll: the segments closed by rolls.
                plans.append(log.plan_flush(log.active_segment.base_offset))
        return plans

    def cleanup_logs(self, now_ms: int | None = None) -> int:
        """Retention for every log, then removal of files whose delete delay passed; returns
        the number of segments deleted by retention.  Inline: on an event loop use
        :meth:`cleanup_logs_in_background`."""
        deleted, segments, logs = self._retention_step(now_ms)
        delete_segment_files(segments)
        _remove_deleted_logs(logs, [])
        return deleted

    def cleanup_logs_in_background(self, now_ms: int | None = None) -> asyncio.Future[int]:
        """:meth:`cleanup_logs` with the file deletions on the log-io thread (call on the
        event loop): retention renames segments to ``.deleted`` now (cheap, and a restart
        never loads them); their files and deleted logs' directories go on the thread.
        The future gives the number of segments deleted by retention."""
        deleted, segments, logs = self._retention_step(now_ms)
        loop = asyncio.get_running_loop()
        result: asyncio.Future[int] = loop.create_future()
        if not segments and not logs:
            result.set_result(deleted)
            return result
        work = self._offload(_delete_files, segments, logs)
        assert work is not None
        work.add_done_callback(lambda _: result.done() or result.set_result(deleted))
        return result

    def _retention_step(
        self, now_ms: int | None
    ) -> tuple[int, list[LogSegment], list[tuple[Log, str]]]:
        # (segments deleted by retention, segment files due for removal, logs due for removal)
        self._check_open()
        now = self._clock() if now_ms is None else now_ms
        deleted = 0
        due: list[LogSegment] = []
        for log in self._live_logs():
            deleted += log.delete_old_segments(now)
            due += log.take_due_deletes(now)
        return deleted, due, self._take_due_logs(now)

    def checkpoint_snapshot(
        self, name: str, offset_of: Callable[[Log], int]
    ) -> list[tuple[str, dict[TopicPartition, int]]]:
        """Each dir's checkpoint file path and its entries, read now.

        Writing them (:func:`write_checkpoints`) fsyncs, so a caller on an event
        loop can take the snapshot there and write from a thread.
        """
        dir_of = dict(self._dir_of)  # copies, as in logs(): no lock on the loop
        logs = [(tp, log, dir_of.get(tp)) for tp, log in list(self._logs.items())]
        return [
            (
                os.path.join(log_dir, name),
                {tp: offset_of(log) for tp, log, in_dir in logs if in_dir == log_dir},
            )
            for log_dir in self.log_dirs
        ]

    def _write_checkpoint(self, name: str, offset_of: Callable[[Log], int]) -> None:
        write_checkpoints(self.checkpoint_snapshot(name, offset_of))

    def checkpoint_recovery_points(self) -> None:
        """Write every dir's ``recovery-point-offset-checkpoint``."""
        self._write_checkpoint(RECOVERY_POINT_CHECKPOINT, lambda log: log.recovery_point)

    def checkpoint_log_start_offsets(self) -> None:
        """Write every dir's ``log-start-offset-checkpoint``."""
        self._write_checkpoint(LOG_START_OFFSET_CHECKPOINT, lambda log: log.log_start_offset)

    def checkpoint_high_watermarks(self) -> None:
        """Write every dir's ``replication-offset-checkpoint``."""
        self._write_checkpoint(REPLICATION_OFFSET_CHECKPOINT, lambda log: log.high_watermark)

    def shutdown(self) -> None:
        """Wait for the background work, flush every log, write the checkpoints, close
        the logs, finish pending deletes, and mark each dir cleanly shut down.

        Blocks (also on an event loop: nothing else must touch the logs now)."""
        if self._closed:
            return
        if self._io is not None:
            # Queued flushes and deletions finish first: no fsync of a closed segment, no
            # double delete.  Their loop-side completions then see closed logs and stop.
            self._io.shutdown(wait=True)
        logs = self._live_logs()
        for log in logs:
            log.flush()
        self.checkpoint_recovery_points()
        self.checkpoint_log_start_offsets()
        self.checkpoint_high_watermarks()
        for log in logs:
            log.close()
        _remove_deleted_logs(self._take_due_logs(None), [])
        for log_dir in self.log_dirs:
            with open(os.path.join(log_dir, CLEAN_SHUTDOWN_FILE), "w"):
                pass
            fsync_directory(log_dir)
        self._closed = True
        self._locked_dirs.release()  # last: the dirs are consistent for the next owner

    def _check_open(self) -> None:
        if self._closed:
            raise KafkaStorageError("The log manager is shut down")


def _run_flush_plans(plans: list[FlushPlan]) -> None:
    """Run each plan's fsyncs (any thread); a failing log does not stop the others."""
    for plan in plans:
        try:
            plan.run()
        except KafkaStorageError:
            logger.exception("Flush of %s failed; the next flush retries", plan.log.directory)


def _remove_deleted_logs(logs: list[tuple[Log, str]], renamed_in: list[str]) -> None:
    """fsync the dirs where logs were renamed for deletion, then remove the due logs'
    files and directories (any thread: the logs left the manager's map)."""
    for log_dir in renamed_in:
        with contextlib.suppress(OSError):  # only costs a resurrected dir after a crash
            fsync_directory(log_dir)
    for log, path in logs:
        log.delete()
        shutil.rmtree(path, ignore_errors=True)


def _delete_files(segments: list[LogSegment], logs: list[tuple[Log, str]]) -> None:
    delete_segment_files(segments)
    _remove_deleted_logs(logs, [])


def write_checkpoints(snapshot: list[tuple[str, dict[TopicPartition, int]]]) -> None:
    """Write checkpoint files taken by :meth:`LogManager.checkpoint_snapshot` (fsyncs)."""
    for path, offsets in snapshot:
        OffsetCheckpointFile(path).write(offsets)
