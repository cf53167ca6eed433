"""A standalone Apache ZooKeeper on a loopback port, for ``pystream cluster up`` and the tests.

The server is Debian's ``zookeeper`` package (``/usr/share/java/zookeeper.jar``,
whose manifest carries its classpath) or ``$ZOOKEEPER_JAR``, started with
``java`` directly (not ``zkServer.sh``) so that its output lands in one log file
we can show when it fails, and so that we hold its pid.  It listens on
127.0.0.1 only and its AdminServer (an HTTP port of its own) is disabled.

Finding the pieces is separate from running them (:func:`find_zookeeper_jar`,
:func:`find_java`, :func:`require_zookeeper`) so a missing installation is one
clear error -- and can be provoked in a test by pointing ``$ZOOKEEPER_JAR`` or
``$PATH`` elsewhere, without uninstalling anything.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from pystream.cli.child_process import terminate_with_parent

DEFAULT_JARS = ("/usr/share/java/zookeeper.jar", "/usr/share/zookeeper/zookeeper.jar")
MAIN_CLASS = "org.apache.zookeeper.server.ZooKeeperServerMain"
# A logger binding so that ZooKeeper's own messages reach the log file (else SLF4J is silent).
LOG_BINDINGS = ("/usr/share/java/slf4j-simple.jar",)
INSTALL_HINT = "apt-get install zookeeper"
DEFAULT_TICK_MS = 2000  # ZooKeeper's own default: sessions of 4 s .. 40 s


class ZooKeeperNotInstalledError(RuntimeError):
    """java or the ZooKeeper jar is missing; the message says what and how to fix it."""


def find_zookeeper_jar(environ: Mapping[str, str] | None = None) -> str | None:
    """The ZooKeeper server jar to run, or None if there is none.

    ``$ZOOKEEPER_JAR``, when set, is the only candidate: a setting that points
    nowhere is a mistake to report, not a reason to quietly run another jar.
    """
    environ = os.environ if environ is None else environ
    configured = environ.get("ZOOKEEPER_JAR", "")
    candidates = (configured,) if configured else DEFAULT_JARS
    return next((jar for jar in candidates if os.path.isfile(jar)), None)


def find_java(path: str | None = None) -> str | None:
    """The ``java`` executable on ``path`` (default ``$PATH``), or None."""
    return shutil.which("java", path=path)


def require_zookeeper(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(java, jar)``, or :class:`ZooKeeperNotInstalledError` saying which one is missing."""
    environ = os.environ if environ is None else environ
    jar = find_zookeeper_jar(environ)
    if jar is None:
        configured = environ.get("ZOOKEEPER_JAR", "")
        where = (
            f"$ZOOKEEPER_JAR={configured} is not a file"
            if configured
            else f"no ZooKeeper jar at {' or '.join(DEFAULT_JARS)}"
        )
        raise ZooKeeperNotInstalledError(f"ZooKeeper is not installed ({where})")
    java = find_java(environ.get("PATH"))
    if java is None:
        raise ZooKeeperNotInstalledError("java is not on $PATH; ZooKeeper needs it")
    return java, jar


def free_port() -> int:
    """A loopback port free right now (another process may take it before it is used)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def four_letter_word(port: int, word: str, timeout: float = 2.0) -> str:
    """Send a ZooKeeper four-letter command (``srvr``, ``ruok``...) and return the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(word.encode())
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


class LocalZooKeeper:
    """A standalone ZooKeeper in a subprocess: ``start()``, ``hosts``, ``stop()``.

    ``directory`` holds its config and (unless ``data_dir`` is given) its data;
    its output goes to ``log_path`` (default ``directory/zookeeper.log``).  With
    ``port=0`` a free port is picked, and re-picked if java loses the race for it.
    ``own_process_group`` puts the server in a process group of its own, so that
    a Ctrl-C in the terminal reaches only its parent, which then stops it *after*
    the brokers that use it.
    """

    def __init__(
        self,
        directory: Path,
        *,
        jar: str,
        java: str,
        port: int = 0,
        data_dir: Path | None = None,
        log_path: Path | None = None,
        tick_ms: int = DEFAULT_TICK_MS,
        force_sync: bool = True,
        own_process_group: bool = False,
    ) -> None:
        self.directory = directory
        self.jar = jar
        self.java = java
        self.requested_port = port
        self.port = port
        self.data_dir = data_dir or directory / "data"
        self.log_path = log_path or directory / "zookeeper.log"
        self.tick_ms = tick_ms
        self.force_sync = force_sync
        self.own_process_group = own_process_group
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def hosts(self) -> str:
        """The ``host:port`` clients connect to."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self, timeout: float = 60.0) -> LocalZooKeeper:
        """Start and wait until it serves requests; RuntimeError (with its log) if it cannot."""
        attempts = 3 if self.requested_port == 0 else 1
        last_error = ""
        for _ in range(attempts):
            self.port = self.requested_port or free_port()
            self._launch()
            try:
                self._wait_serving(timeout)
                return self
            except RuntimeError as exc:
                last_error = str(exc)
                self.stop()
        raise RuntimeError(f"ZooKeeper did not start: {last_error}")

    def _launch(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        config = self.directory / "zoo.cfg"
        config.write_text(
            "\n".join(
                [
                    f"tickTime={self.tick_ms}",
                    f"dataDir={self.data_dir}",
                    f"clientPort={self.port}",
                    "clientPortAddress=127.0.0.1",
                    "admin.enableServer=false",
                    "4lw.commands.whitelist=*",
                    "maxClientCnxns=0",
                    # No fsync per write for throwaway servers: tests stay fast.
                    f"forceSync={'yes' if self.force_sync else 'no'}",
                    "",
                ]
            )
        )
        classpath = os.pathsep.join([self.jar, *(j for j in LOG_BINDINGS if os.path.isfile(j))])
        command = [
            self.java,
            "-Xmx256m",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-cp",
            classpath,
            MAIN_CLASS,
            str(config),
        ]
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                process_group=0 if self.own_process_group else None,
                # In its own group a Ctrl-C no longer reaches it: it stops with its parent.
                preexec_fn=terminate_with_parent() if self.own_process_group else None,
            )

    def _wait_serving(self, timeout: float) -> None:
        """Until ``srvr`` over a real connection says the server serves requests."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if "Mode:" in four_letter_word(self.port, "srvr"):
                    return
            except OSError:
                pass
            time.sleep(0.05)  # polling the server's port, not synchronising threads
        raise RuntimeError(f"not serving after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` of its log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL.  Returns the exit code (None if
        it was not running)."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(timeout)
