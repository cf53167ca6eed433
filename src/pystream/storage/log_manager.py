"""All partition logs of a broker, across its ``log.dirs``.

Per log dir::

    meta.properties                      broker.id, cluster.id
    .kafka_cleanshutdown                 present only while the broker is stopped cleanly
    recovery-point-offset-checkpoint     below these offsets the data is fsynced
    log-start-offset-checkpoint          moved by retention and DeleteRecords
    replication-offset-checkpoint        high watermarks
    <topic>-<partition>/                 one Log each
    <topic>-<partition>.<uuid>-delete/   a deleted log waiting for file.delete.delay.ms

The LogManager exposes the periodic steps (flush, retention, checkpoints) as
methods; the broker drives the timers.  Topic configs are not persisted here
(that is the metadata store's job): the caller hands in a LogConfig per topic.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence

from pystream.clock import now_ms
from pystream.config import LogConfig
from pystream.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicException,
    KafkaStorageError,
    LogDirNotFoundError,
    UnknownTopicOrPartitionError,
)
from pystream.fileutil import fsync_directory
from pystream.storage.checkpoints import (
    LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    REPLICATION_OFFSET_CHECKPOINT,
    CorruptCheckpointError,
    OffsetCheckpointFile,
)
from pystream.storage.log import Log, parse_topic_partition
from pystream.storage.meta_properties import ensure_meta_properties

logger = logging.getLogger(__name__)

CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"
DELETE_DIR_SUFFIX = "-delete"
FUTURE_DIR_SUFFIX = "-future"
STRAY_DIR_SUFFIX = "-stray"
MAX_TOPIC_NAME_LENGTH = 249
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]+")

TopicPartition = tuple[str, int]


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
    ) -> None:
        """Check ``meta.properties`` in every dir and load every log (recovering after an
        unclean stop), then remove the clean-shutdown markers.

        ``topic_configs`` gives the configs of existing topics (from the
        metadata store); others get ``default_config``.  Raises
        InvalidConfigError for an empty or duplicated ``log_dirs``,
        LogDirNotFoundError if a dir cannot be created, and
        InconsistentBrokerIdError / InconsistentClusterIdError if a dir
        belongs to another broker or cluster.
        """
        if not log_dirs:
            raise InvalidConfigError("log.dirs is empty: configure at least one log directory")
        resolved = [os.path.realpath(d) for d in log_dirs]
        if len(set(resolved)) != len(resolved):
            raise InvalidConfigError(
                f"log.dirs {list(log_dirs)} names the same directory twice; list each once"
            )
        for log_dir in resolved:
            try:
                os.makedirs(log_dir, exist_ok=True)
            except OSError as exc:
                raise LogDirNotFoundError(
                    f"Cannot create log directory {log_dir}: {exc}; check log.dirs and permissions"
                ) from exc
        self.log_dirs: list[str] = resolved
        self.broker_id = broker_id
        self.default_config = default_config
        self.cluster_id = ensure_meta_properties(resolved, broker_id, cluster_id)
        self._topic_configs: dict[str, LogConfig] = dict(topic_configs or {})
        self._clock = clock
        self._logs: dict[TopicPartition, Log] = {}
        # Logs are created from worker threads too (topic creation): one creation at a time.
        self._create_lock = threading.RLock()
        self._dir_of: dict[TopicPartition, str] = {}
        self._logs_to_delete: list[tuple[int, Log, str]] = []  # (due ms, log, renamed dir)
        self._closed = False
        for log_dir in resolved:
            self._load_dir(log_dir)

    # --- startup ---------------------------------------------------------------------------

    def _read_checkpoint(self, log_dir: str, name: str) -> dict[TopicPartition, int]:
        try:
            return OffsetCheckpointFile(os.path.join(log_dir, name)).read()
        except CorruptCheckpointError as exc:
            # As Kafka: a lost checkpoint only costs a longer recovery, never data.
            logger.warning("%s; using defaults for every log in %s", exc, log_dir)
            return {}

    def _load_dir(self, log_dir: str) -> None:
        marker = os.path.join(log_dir, CLEAN_SHUTDOWN_FILE)
        clean = os.path.exists(marker)
        recovery_points = self._read_checkpoint(log_dir, RECOVERY_POINT_CHECKPOINT)
        start_offsets = self._read_checkpoint(log_dir, LOG_START_OFFSET_CHECKPOINT)
        high_watermarks = self._read_checkpoint(log_dir, REPLICATION_OFFSET_CHECKPOINT)
        names = sorted(os.listdir(log_dir))
        if not clean and any(parse_topic_partition(name) for name in names):
            logger.info("No clean shutdown marker in %s: recovering its logs", log_dir)
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
            log = Log.open(
                path,
                self.config_for(tp[0]),
                log_start_offset=start_offsets.get(tp, 0),
                recovery_point=recovery_points.get(tp, 0),
                had_clean_shutdown=clean,
                clock=self._clock,
            )
            if tp in high_watermarks:
                log.high_watermark = high_watermarks[tp]
            self._logs[tp] = log
            self._dir_of[tp] = log_dir
        if clean:
            os.remove(marker)  # from now on a crash must trigger recovery
            fsync_directory(log_dir)

    # --- access ----------------------------------------------------------------------------

    def config_for(self, topic: str) -> LogConfig:
        """The topic's config, or the default."""
        return self._topic_configs.get(topic, self.default_config)

    def get_log(self, topic: str, partition: int) -> Log | None:
        """The partition's log, or None."""
        return self._logs.get((topic, partition))

    def logs(self) -> dict[TopicPartition, Log]:
        """Every live log by (topic, partition) (a copy)."""
        return dict(self._logs)

    def log_dir_of(self, topic: str, partition: int) -> str | None:
        """The log dir holding the partition, or None."""
        return self._dir_of.get((topic, partition))

    def get_or_create_log(self, topic: str, partition: int, config: LogConfig | None = None) -> Log:
        """The partition's log, created in the log dir with the fewest partitions if absent.

        ``config`` (if given) becomes the topic's config.  Raises
        InvalidTopicException for an illegal topic name, InvalidPartitionsError
        for a negative partition.
        """
        with self._create_lock:
            return self._get_or_create_log(topic, partition, config)

    def _get_or_create_log(self, topic: str, partition: int, config: LogConfig | None) -> Log:
        self._check_open()
        if config is not None:
            self._topic_configs[topic] = config
        tp = (topic, partition)
        log = self._logs.get(tp)
        if log is not None:
            return log
        validate_topic_name(topic)
        if partition < 0:
            raise InvalidPartitionsError(f"Partition {partition} of {topic} is negative")
        counts = {d: 0 for d in self.log_dirs}
        for d in self._dir_of.values():
            counts[d] += 1
        log_dir = min(self.log_dirs, key=lambda d: counts[d])  # ties: the first listed
        path = os.path.join(log_dir, f"{topic}-{partition}")
        log = Log.open(path, self.config_for(topic), clock=self._clock)
        fsync_directory(log_dir)
        logger.info("Created log for %s-%d in %s", topic, partition, log_dir)
        self._logs[tp] = log
        self._dir_of[tp] = log_dir
        return log

    def create_logs(
        self, partitions: Sequence[TopicPartition], config: LogConfig | None = None
    ) -> list[Log]:
        """:meth:`get_or_create_log` for many partitions: callable from a worker thread, so
        that creating a topic's files does not stall the event loop."""
        with self._create_lock:
            return [self.get_or_create_log(topic, index, config) for topic, index in partitions]

    def update_config(self, topic: str, config: LogConfig) -> None:
        """Give the topic a new config, applied to its existing logs at once."""
        self._topic_configs[topic] = config
        for (t, _), log in self._logs.items():
            if t == topic:
                log.update_config(config)

    def delete_log(self, topic: str, partition: int) -> None:
        """Remove a partition: rename its dir to ``<topic>-<partition>.<uuid>-delete`` now,
        delete the files after the topic's ``file.delete.delay.ms`` (cleanup_logs).

        The delay lets in-flight fetches finish sending from the files.
        Raises UnknownTopicOrPartitionError if there is no such log.
        """
        self._check_open()
        tp = (topic, partition)
        log = self._logs.pop(tp, None)
        if log is None:
            raise UnknownTopicOrPartitionError(f"No log for {topic}-{partition} on this broker")
        log_dir = self._dir_of.pop(tp)
        renamed = os.path.join(log_dir, _delete_dir_name(topic, partition))
        try:
            os.rename(log.directory, renamed)
            fsync_directory(log_dir)
        except OSError as exc:
            raise KafkaStorageError(f"Cannot rename {log.directory} for deletion: {exc}") from exc
        due = self._clock() + log.config.file_delete_delay_ms
        self._logs_to_delete.append((due, log, renamed))
        self._delete_due_logs(self._clock())

    def _delete_due_logs(self, now_ms: int | None) -> int:
        # now_ms None: everything (shutdown).
        keep, due = [], []
        for entry in self._logs_to_delete:
            (due if now_ms is None or entry[0] <= now_ms else keep).append(entry)
        self._logs_to_delete = keep
        for _, log, path in due:
            log.delete()
            shutil.rmtree(path, ignore_errors=True)
        return len(due)

    # --- periodic steps --------------------------------------------------------------------

    def flush_dirty_logs(self, now_ms: int | None = None) -> int:
        """fsync logs whose ``flush.ms`` has passed, and segments closed by a roll; returns
        how many logs were flushed."""
        self._check_open()
        now = self._clock() if now_ms is None else now_ms
        flushed = 0
        for log in self._logs.values():
            if now - log.last_flush_ms >= log.config.flush_ms and log.unflushed_messages > 0:
                log.flush()
                flushed += 1
            elif log.recovery_point < log.active_segment.base_offset:
                log.flush(log.active_segment.base_offset)  # Kafka's flush after roll
                flushed += 1
        return flushed

    def cleanup_logs(self, now_ms: int | None = None) -> int:
        """Retention for every log, then removal of files whose delete delay passed; returns
        the number of segments deleted by retention."""
        self._check_open()
        now = self._clock() if now_ms is None else now_ms
        deleted = 0
        for log in self._logs.values():
            deleted += log.delete_old_segments(now)
            log.delete_pending_segments(now)
        self._delete_due_logs(now)
        return deleted

    def checkpoint_snapshot(
        self, name: str, offset_of: Callable[[Log], int]
    ) -> list[tuple[str, dict[TopicPartition, int]]]:
        """Each dir's checkpoint file path and its entries, read now.

        Writing them (:func:`write_checkpoints`) fsyncs, so a caller on an event
        loop can take the snapshot there and write from a thread.
        """
        return [
            (
                os.path.join(log_dir, name),
                {
                    tp: offset_of(log)
                    for tp, log in self._logs.items()
                    if self._dir_of[tp] == log_dir
                },
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
        """Flush every log, write the checkpoints, close the logs, finish pending deletes,
        and mark each dir cleanly shut down."""
        if self._closed:
            return
        for log in self._logs.values():
            log.flush()
        self.checkpoint_recovery_points()
        self.checkpoint_log_start_offsets()
        self.checkpoint_high_watermarks()
        for log in self._logs.values():
            log.close()
        self._delete_due_logs(None)
        for log_dir in self.log_dirs:
            with open(os.path.join(log_dir, CLEAN_SHUTDOWN_FILE), "w"):
                pass
            fsync_directory(log_dir)
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise KafkaStorageError("The log manager is shut down")


def write_checkpoints(snapshot: list[tuple[str, dict[TopicPartition, int]]]) -> None:
    """Write checkpoint files taken by :meth:`LogManager.checkpoint_snapshot` (fsyncs)."""
    for path, offsets in snapshot:
        OffsetCheckpointFile(path).write(offsets)
