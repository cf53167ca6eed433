"""``KafkaBroker``: one real pystream broker for a test, in this process or a child one.

Two modes, one handle:

* ``thread`` -- the :class:`~pystream.broker.server.Broker` on an asyncio event loop of
  its own in a daemon thread of the test process: no interpreter to start, so it is
  up in a fraction of a second.  No signal handlers there (they work only in the main
  thread).  Its log is what the ``pystream`` loggers say on that loop while it runs.
* ``process`` -- ``pystream serve`` as a child process, its output in ``broker.log``:
  what crash tests need, since :meth:`KafkaBroker.kill` is a real SIGKILL.

Either way the broker listens on a free loopback port (port 0, read back from the
broker, never guessed), keeps that port and its data directory across
:meth:`~KafkaBroker.restart`, and :meth:`~KafkaBroker.start` returns only once the
broker answers a Metadata request.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "MODES",
    "CrashNeedsProcessModeError",
    "KafkaBroker",
    "TopicAdmin",
    "wait_for_metadata",
]

MODES = ("thread", "process")
DEFAULT_LISTENERS = "PLAINTEXT://127.0.0.1:0"  # a free loopback port, read back once bound
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Which in-thread broker a log record comes from: set on its loop, inherited by its tasks
# and by asyncio.to_thread's workers, so several in-thread brokers keep separate logs.
_BROKER_TAG: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "pystream_testing_broker", default=None
)


class CrashNeedsProcessModeError(RuntimeError):
    """``kill()`` on an in-thread broker: a crash test needs ``mode="process"``."""


def wait_for_metadata(bootstrap: str, brokers: int = 1, timeout: float = 30.0) -> None:
    """Poll until the broker at ``bootstrap`` (its first address) answers Metadata listing at
    least ``brokers`` brokers; TimeoutError saying what it last saw otherwise."""
    from pystream.protocol import decode_response, encode_request_frame
    from pystream.protocol.messages import API_SPECS, RequestHeader

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    request_cls = API_SPECS[3].request  # Metadata
    version = 1  # every client speaks it; null topics = all topics, no auto-creation
    frame = encode_request_frame(
        RequestHeader(
            request_api_key=3, request_api_version=version, correlation_id=1, client_id="wait"
        ),
        request_cls(topics=None),
    )
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2.0) as sock:
                sock.sendall(frame)
                size = struct.unpack(">i", _recv_exactly(sock, 4))[0]
                _, response = decode_response(_recv_exactly(sock, size), 3, version)
            if len(response.brokers) >= brokers:
                return
            last = f"{len(response.brokers)} of {brokers} brokers registered"
        except (OSError, struct.error, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise TimeoutError(f"no Metadata answer from {bootstrap} in {timeout:g}s ({last})")
        time.sleep(0.01)  # polling a socket another thread or process opens


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed by the broker")
        data += chunk
    return bytes(data)


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


class TopicAdmin:
    """Topic creation and deletion over pystream's admin client, for a broker or a cluster.

    Subclasses provide ``bootstrap_servers``; the admin client is made on first use and
    dropped whenever the brokers go away (:meth:`_drop_admin`)."""

    bootstrap_servers: str
    _admin: Any = None

    def admin(self) -> Any:
        """A :class:`pystream.AdminClient` connected to these brokers (kept until stop)."""
        if self._admin is None:
            from pystream.client import AdminClient

            self._admin = AdminClient(self.bootstrap_servers)
        return self._admin

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
        replication_factor: int = -1,
        timeout: float = 30.0,
    ) -> str:
        """Create ``name`` and wait until every partition has a leader; returns the name.
        ``replication_factor=-1``: the broker's ``default.replication.factor``."""
        from pystream.client import NewTopic

        admin = self.admin()
        admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    config={k: str(v) for k, v in (config or {}).items()},
                )
            ]
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                described = admin.describe_topics([name]).get(name)
            except Exception:  # e.g. UNKNOWN_TOPIC_OR_PARTITION until metadata spreads
                described = None
            if described is not None and all(p.leader >= 0 for p in described.partitions):
                if len(described.partitions) == partitions:
                    return name
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name!r} has no leader for every partition yet")
            time.sleep(0.01)  # polling the brokers' metadata

    def delete_topic(self, name: str) -> None:
        """Delete ``name`` (UnknownTopicOrPartitionError if there is no such topic)."""
        self.admin().delete_topics([name])

    def _drop_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                admin.close()
            except Exception:  # the brokers it knew are gone; nothing to flush
                pass


class _ThreadLogHandler(logging.Handler):
    """Keeps the records the ``pystream`` loggers emit on one in-thread broker's loop."""

    def __init__(self, tag: int) -> None:
        super().__init__(logging.DEBUG)
        self.tag = tag
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter(_LOG_FORMAT))

    def filter(self, record: logging.LogRecord) -> bool:
        return _BROKER_TAG.get() == self.tag

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:
            self.handleError(record)


# The ``pystream`` logger level while in-thread brokers run (INFO: their start and stop
# lines), restored when the last of them is closed.
_level_users = 0
_saved_level = logging.NOTSET


def _raise_log_level() -> None:
    global _level_users, _saved_level
    logger = logging.getLogger("pystream")
    if _level_users == 0:
        _saved_level = logger.level
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    _level_users += 1


def _restore_log_level() -> None:
    global _level_users
    _level_users -= 1
    if _level_users == 0:
        logging.getLogger("pystream").setLevel(_saved_level)


class KafkaBroker(TopicAdmin):
    """A real broker for tests.  ``start()``, ``bootstrap_servers``, ``create_topic``,
    ``delete_topic``, ``restart()``, ``kill()`` (process mode), ``logs``, ``close()``.

    ``config``: broker properties with Kafka's key names, on top of what the handle sets
    (``log.dirs`` in ``directory``, a loopback listener on a free port).
    """

    def __init__(
        self,
        directory: Path,
        config: Mapping[str, Any] | None = None,
        *,
        mode: str = "thread",
        start_timeout: float = 30.0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"pystream broker mode {mode!r}: use one of {', '.join(MODES)}")
        self.directory = Path(directory)
        self.mode = mode
        self.start_timeout = start_timeout
        self.data_dir = self.directory / "data"
        self.log_path = self.directory / "broker.log"
        self.properties: dict[str, str] = {
            "log.dirs": str(self.data_dir),
            "listeners": DEFAULT_LISTENERS,
            # Never 9644: brokers of parallel sessions would fight over it.
            "metrics.listener": "http://127.0.0.1:0",
            **{key: str(value) for key, value in (config or {}).items()},
        }
        self.bootstrap_servers = ""
        self.starts = 0  # how many times it was started (restarts included)
        # thread mode
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._log_handler: _ThreadLogHandler | None = None
        self._thread_lines: list[str] = []
        self._tag = 0
        # process mode
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<KafkaBroker {self.mode} {self.bootstrap_servers or '-'} {state}>"

    # --- state ------------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        if self.mode == "thread":
            return self._broker is not None
        return self.process is not None and self.process.poll() is None

    @property
    def host(self) -> str:
        return self.bootstrap_servers.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.bootstrap_servers.rpartition(":")[2])

    @property
    def logs(self) -> str:
        """Everything the broker logged since the handle was made (all its starts)."""
        if self.mode == "process":
            try:
                return self.log_path.read_text(errors="replace")
            except OSError:
                return ""
        lines = self._thread_lines + (self._log_handler.lines if self._log_handler else [])
        return "".join(line + "\n" for line in lines)

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` of :attr:`logs`, for error messages and test reports."""
        return _tail(self.logs, lines)

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> KafkaBroker:
        """Start the broker and return once it answers Metadata.  RuntimeError with the
        broker's log if it cannot start."""
        if self.is_running:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.mode == "thread":
            self._start_thread()
        else:
            self.launch()
            self.wait_started()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Clean shutdown (listeners closed, logs flushed and checkpointed)."""
        self._drop_admin()
        if self.mode == "thread":
            self._stop_thread(timeout)
            return
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the broker: nothing flushed, nothing checkpointed, as a real crash.

        Process mode only.  An in-thread broker cannot be crashed honestly -- its open
        files, locks and memory belong to the test process, which goes on running -- so
        this raises :class:`CrashNeedsProcessModeError` instead of pretending."""
        if self.mode != "process":
            raise CrashNeedsProcessModeError(
                "kill() needs a broker in its own process: mark the test "
                '@pytest.mark.pystream(mode="process") or set pystream_mode = process'
            )
        self._drop_admin()
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait(30)

    def restart(self) -> KafkaBroker:
        """Stop cleanly (unless killed already), start again: same port, same data."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the broker if it runs; the handle can be started again afterwards."""
        self.stop()

    # --- thread mode ------------------------------------------------------------------------
    def _start_thread(self) -> None:
        from pystream.broker.server import Broker
        from pystream.config import BrokerConfig

        config = BrokerConfig.from_properties(self.properties)
        if config.unknown_keys:
            raise ValueError(
                f"unknown broker config {', '.join(map(repr, config.unknown_keys))} "
                "(Kafka's key names, see docs/configuration.md)"
            )
        self.starts += 1
        tag = id(self) * 1000 + self.starts
        if self._log_handler is not None:
            self._thread_lines += self._log_handler.lines
        self._log_handler = _ThreadLogHandler(tag)
        logging.getLogger("pystream").addHandler(self._log_handler)
        _raise_log_level()
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name=f"pystream-broker-{tag}", daemon=True
        )
        thread.start()
        broker = Broker(config)
        self._tag = tag
        try:
            self._on_loop(loop, broker.start(), self.start_timeout)
        except BaseException as exc:
            self._loop, self._thread = loop, thread
            self._end_loop(broker=broker, timeout=5.0)
            raise RuntimeError(
                f"the in-thread broker did not start: {exc}\n{self.log_tail()}"
            ) from exc
        self._loop, self._thread, self._broker = loop, thread, broker
        port = broker.bound_ports[broker.listeners[0].name]
        self.bootstrap_servers = f"127.0.0.1:{port}"
        # Restarts come back on the same ports (clients reconnect to them).
        self.properties["listeners"] = ",".join(
            f"{listener.name}://{listener.host}:{broker.bound_ports[listener.name]}"
            for listener in broker.listeners
        )
        wait_for_metadata(self.bootstrap_servers, timeout=self.start_timeout)

    def _on_loop(self, loop: asyncio.AbstractEventLoop, coro: Any, timeout: float) -> Any:
        """Run ``coro`` on the broker's loop, tagged as this broker's (its log records, and
        those of the tasks and threads it starts, go to this broker's log)."""

        async def tagged() -> Any:
            _BROKER_TAG.set(self._tag)
            return await coro

        return asyncio.run_coroutine_threadsafe(tagged(), loop).result(timeout)

    def _stop_thread(self, timeout: float) -> None:
        broker, self._broker = self._broker, None
        if self._loop is None:
            return
        self._end_loop(broker=broker, timeout=timeout)

    def _end_loop(self, broker: Any, timeout: float) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        assert loop is not None and thread is not None
        try:
            if broker is not None:
                self._on_loop(loop, broker.stop(), timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                loop.close()
            if self._log_handler is not None:
                logging.getLogger("pystream").removeHandler(self._log_handler)
                _restore_log_level()

    # --- process mode -----------------------------------------------------------------------
    def launch(self) -> None:
        """Start ``pystream serve`` without waiting (a cluster starts its brokers together,
        then waits for them with :meth:`wait_started`)."""
        from pystream.cli.child_process import start_pystream_serve

        # The child runs the pystream this process imported (a source tree or installed).
        package_root = str(Path(__file__).resolve().parents[2])
        python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": python_path}
        self.directory.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.log_path, "ab") as log:  # appended: a restart keeps the earlier log
            self._log_offset = log.tell()
            log.write(f"--- pystream testing: start {self.starts} ---\n".encode())
            log.flush()
            self.process = start_pystream_serve(self.properties, log, self.directory, env=env)

    def wait_started(self) -> None:
        """Until the child prints where clients connect and answers Metadata."""
        from pystream.cli.cluster import READY_MARK

        ready = re.compile(re.escape(READY_MARK) + r"(\S+)")
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            found = ready.search(self._log_since_start())
            if found:
                self.bootstrap_servers = found.group(1).split(",")[0]
                break
            code = self.process.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop(5.0)
                how = f"exited with {code}" if code is not None else "timed out"
                raise RuntimeError(
                    f"pystream serve did not start ({how}; log {self.log_path}):\n"
                    + _tail(self._log_since_start(), 60)
                )
            time.sleep(0.01)  # polling the child's log file
        if self.properties["listeners"] == DEFAULT_LISTENERS:  # restarts keep the port
            self.properties["listeners"] = f"PLAINTEXT://{self.bootstrap_servers}"
        wait_for_metadata(self.bootstrap_servers, timeout=max(1.0, deadline - time.monotonic()))

    def _log_since_start(self) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""
