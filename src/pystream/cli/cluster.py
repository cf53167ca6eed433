"""``pystream cluster up``: a real local cluster -- ZooKeeper and N brokers -- in the foreground.

Every piece is a real process: a standalone ZooKeeper (unless ``--zookeeper``
names one) and ``pystream serve`` brokers 0..N-1 on loopback ports
``--base-port``+i, each with its own data directory under ``--data-dir`` and its
output in ``<data-dir>/logs/``.  The data (ZooKeeper's too) stays there, so the
next ``cluster up`` with the same ``--data-dir`` brings back the same cluster.

The children run in process groups of their own: a Ctrl-C in the terminal
reaches only this command, which stops the brokers first (SIGTERM, then SIGKILL
after ``--stop-timeout``) and ZooKeeper last, so the brokers can still
deregister on their way out.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pystream.cli.child_process import start_pystream_serve
from pystream.cli.serve import METRICS_MARK
from pystream.config import BrokerConfig, parse_overrides

if TYPE_CHECKING:
    from pystream.cli.local_zookeeper import LocalZooKeeper

DEFAULT_DATA_DIR = "./pystream-cluster"
DEFAULT_CHROOT = "/pystream"
# What ``pystream serve`` prints once it listens and (in cluster mode) is registered.
READY_MARK = "clients: bootstrap.servers="
LAST_WORDS_MAX = 300  # characters of a dead broker's last log line quoted in the error
POLL_S = 0.2  # how often the children are looked at; a Ctrl-C is handled within this
# Keys this command sets per broker, and the option that sets them instead.
RESERVED_KEYS = {
    "broker.id": "--brokers",
    "log.dirs": "--data-dir",
    "log.dir": "--data-dir",
    "listeners": "--base-port",
    "zookeeper.connect": "--zookeeper",
}
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def cluster_defaults(brokers: int) -> dict[str, str]:
    """Replication settings that fit ``brokers`` brokers (Kafka's defaults assume 3+ or 1)."""
    replicas = str(min(3, brokers))
    return {
        "default.replication.factor": replicas,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": str(min(2, brokers)),
        # min.insync.replicas stays at Kafka's 1: acks=all still works with one broker down.
    }


def zookeeper_connect(zookeeper: str) -> str:
    """``--zookeeper HOST:PORT[,...][/chroot]`` as ``zookeeper.connect``; the chroot
    defaults to :data:`DEFAULT_CHROOT` so the cluster's znodes stay in one place."""
    from pystream.cluster.zookeeper.paths import parse_connect

    hosts, chroot = parse_connect(zookeeper)
    return hosts + (chroot or DEFAULT_CHROOT)


@dataclass
class BrokerChild:
    """One ``pystream serve`` child: where it lives, and its process once started."""

    broker_id: int
    port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def listening(self) -> bool:
        """The broker said it serves clients (it says so after registering)."""
        try:
            return READY_MARK in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def metrics_url(self) -> str:
        """The ``GET /metrics`` URL the broker printed ('' with metrics.enable=false)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        found = re.search(re.escape(METRICS_MARK) + r"(\S+)", text)
        return found.group(1) if found else ""

    def last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        last = next((line.strip() for line in reversed(lines) if line.strip()), "")
        return last if len(last) <= LAST_WORDS_MAX else last[: LAST_WORDS_MAX - 3] + "..."

    def death(self) -> str | None:
        """Why this broker is gone (one line, naming its log), or None while it runs."""
        if self.process is None or self.process.poll() is None:
            return None
        code = self.process.returncode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        last = self.last_log_line()
        said = f"; its last words: {last!r}" if last else ""
        return f"broker {self.broker_id} {how}{said} (log: {self.log_path})"


class LocalCluster:
    """ZooKeeper (started here or given) and ``brokers`` ``pystream serve`` children."""

    def __init__(
        self,
        brokers: int,
        data_dir: Path,
        base_port: int,
        zookeeper: str | None,
        overrides: dict[str, str],
    ) -> None:
        self.data_dir = data_dir
        self.log_dir = data_dir / "logs"
        self.external_zookeeper = zookeeper
        self.zookeeper: LocalZooKeeper | None = None  # when started here
        self.connect = zookeeper_connect(zookeeper) if zookeeper else ""
        self.overrides = overrides
        self.brokers = [
            BrokerChild(
                i, base_port + i, data_dir / f"broker-{i}", self.log_dir / f"broker-{i}.log"
            )
            for i in range(brokers)
        ]

    # --- configuration ----------------------------------------------------------------------
    def broker_properties(self, broker: BrokerChild) -> dict[str, str]:
        """What broker ``broker`` runs with: per-broker keys, cluster defaults, overrides."""
        return {
            "broker.id": str(broker.broker_id),
            "log.dirs": str(broker.data_dir),
            "listeners": f"PLAINTEXT://{broker.address}",
            "zookeeper.connect": self.connect,
            # A free port each (printed by describe()): the brokers never share 9644.
            "metrics.listener": "http://127.0.0.1:0",
            **cluster_defaults(len(self.brokers)),
            **self.overrides,
        }

    def check_ports(self) -> None:
        """Fail before starting anything if a broker's port is taken."""
        for broker in self.brokers:
            with socket.socket() as sock:
                # As the broker binds: a port in TIME_WAIT is not "taken".
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", broker.port))
                except OSError:
                    raise click.ClickException(
                        f"port {broker.port} (broker {broker.broker_id}) is in use; "
                        "is a cluster already running? (pick another --base-port)"
                    ) from None

    # --- starting ---------------------------------------------------------------------------
    def start_zookeeper(self, timeout: float) -> None:
        """A local standalone ZooKeeper, data in ``<data-dir>/zookeeper``; unless given one."""
        from pystream.cli.local_zookeeper import LocalZooKeeper, require_zookeeper

        if self.external_zookeeper:
            return
        java, jar = require_zookeeper()  # ZooKeeperNotInstalledError: checked by the caller
        directory = self.data_dir / "zookeeper"
        self.zookeeper = LocalZooKeeper(
            directory,
            jar=jar,
            java=java,
            log_path=self.log_dir / "zookeeper.log",
            own_process_group=True,
        )
        try:
            self.zookeeper.start(timeout)
        except RuntimeError as exc:
            last = exc.args[0].strip().splitlines()[-1] if exc.args else ""
            raise click.ClickException(
                f"ZooKeeper did not start: {last} (log: {self.zookeeper.log_path})"
            ) from None
        self.connect = self.zookeeper.hosts + DEFAULT_CHROOT

    def start_brokers(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the ready line reaches the log at once
        for broker in self.brokers:
            broker.data_dir.mkdir(parents=True, exist_ok=True)
            with open(broker.log_path, "wb") as log:  # this run's output only
                broker.process = start_pystream_serve(
                    self.broker_properties(broker),
                    log,
                    broker.data_dir,
                    env=env,
                    own_process_group=True,
                )

    def connect_zookeeper(self, timeout: float) -> Any:
        """A ZooKeeper client in the cluster's chroot (created if new), to watch the brokers
        register; a one-line error if ZooKeeper cannot be reached."""
        from pystream.cluster.zookeeper import client as zk_client

        # kazoo's retries would print a warning per attempt; the one error below says it all.
        logging.getLogger("kazoo").addHandler(logging.NullHandler())
        try:
            return zk_client.connect(self.connect, connection_timeout_ms=int(timeout * 1000))
        except zk_client.ZooKeeperUnavailableError:
            raise click.ClickException(
                f"cannot reach ZooKeeper at {self.connect} within {timeout:g}s"
            ) from None

    def wait_ready(self, client: Any, timeout: float, stop: threading.Event) -> bool:
        """Until every broker listens and is in ``/brokers/ids``; False if ``stop`` is set
        first.  ClickException naming the broker (and its log) if one dies or is late."""
        from kazoo.exceptions import KazooException

        from pystream.cluster.zookeeper.paths import BROKER_IDS

        deadline = time.monotonic() + timeout
        wanted = {b.broker_id for b in self.brokers}
        while not stop.is_set():
            self.raise_if_dead()
            try:
                registered = {int(i) for i in client.get_children(BROKER_IDS)} & wanted
            except KazooException:  # ZooKeeper gone: raise_if_dead says so on the next turn
                registered = set()
            late = [b for b in self.brokers if b.broker_id not in registered or not b.listening()]
            if not late:
                return True
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"broker {late[0].broker_id} is not up after {timeout:g}s "
                    f"(log: {late[0].log_path})"
                )
            stop.wait(POLL_S)
        return False

    def raise_if_dead(self) -> None:
        """ClickException naming the first child that exited."""
        for broker in self.brokers:
            death = broker.death()
            if death is not None:
                raise click.ClickException(death)
        zookeeper = self.zookeeper
        if zookeeper is not None and zookeeper.process is not None:
            code = zookeeper.process.poll()
            if code is not None:
                raise click.ClickException(
                    f"ZooKeeper exited with code {code} (log: {zookeeper.log_path})"
                )

    # --- stopping ---------------------------------------------------------------------------
    def stop(self, timeout: float) -> list[int]:
        """SIGTERM every broker, SIGKILL those still running after ``timeout``, then stop
        ZooKeeper.  Returns the ids of the brokers that had to be killed."""
        running = [b for b in self.brokers if b.process is not None and b.process.poll() is None]
        for broker in running:
            broker.process.terminate()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        killed = []
        for broker in running:
            process = broker.process
            assert process is not None
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
                killed.append(broker.broker_id)
        for broker in self.brokers:  # reap any that died on their own
            if broker.process is not None:
                broker.process.wait(timeout)
        if self.zookeeper is not None:
            self.zookeeper.stop(timeout)
        return killed


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP set ``stop`` (instead of raising) while inside."""
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        signal.signal(signum, lambda *_: stop.set())
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@click.group()
def cluster() -> None:
    """Run a local multi-broker cluster (ZooKeeper included) for development."""


@cluster.command()
@click.option(
    "--brokers",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Brokers, ids 0..N-1.",
)
@click.option(
    "--zookeeper",
    metavar="HOST:PORT[/CHROOT]",
    default=None,
    help=f"Use this ZooKeeper (chroot {DEFAULT_CHROOT} if none) instead of starting one.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Brokers' (and ZooKeeper's) data, and logs/.",
)
@click.option(
    "--base-port",
    type=click.IntRange(1, 65535),
    default=9092,
    show_default=True,
    help="Broker i listens on 127.0.0.1:BASE+i.",
)
@click.option(
    "--override",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="A broker config for every broker (repeatable).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=120,
    show_default=True,
    help="Seconds to wait for the cluster to come up.",
)
@click.option(
    "--stop-timeout",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    help="Seconds a broker gets to shut down cleanly before SIGKILL.",
)
def up(
    brokers: int,
    zookeeper: str | None,
    data_dir: str,
    base_port: int,
    overrides: tuple[str, ...],
    timeout: float,
    stop_timeout: float,
) -> None:
    """Start ZooKeeper and BROKERS brokers; Ctrl-C (or SIGTERM) stops them all."""
    from pystream.cli.local_zookeeper import INSTALL_HINT, ZooKeeperNotInstalledError
    from pystream.cluster.zookeeper import client as zk_client

    if base_port + brokers - 1 > 65535:
        raise click.UsageError(f"--base-port {base_port} leaves no port for {brokers} brokers")
    extra = parse_overrides(overrides)
    for key, option in RESERVED_KEYS.items():
        if key in extra:
            raise click.UsageError(f"--override {key} is set per broker; use {option}")
    local = LocalCluster(brokers, Path(data_dir).resolve(), base_port, zookeeper, extra)
    # A bad --override is one error now rather than N brokers dying of it.
    BrokerConfig.from_properties(local.broker_properties(local.brokers[0]))
    local.check_ports()

    stop = threading.Event()
    with stop_on_signals(stop):
        try:
            try:
                local.start_zookeeper(timeout)
            except ZooKeeperNotInstalledError as exc:
                raise click.ClickException(
                    f"{exc}: {INSTALL_HINT}, or pass --zookeeper HOST:PORT"
                ) from None
            if stop.is_set():
                return
            client = local.connect_zookeeper(timeout)
            try:
                local.start_brokers()
                ready = local.wait_ready(client, timeout, stop)
            finally:
                zk_client.close(client)
            if not ready:
                return
            describe(local)
            while not stop.wait(POLL_S):
                local.raise_if_dead()
        finally:
            if stop.is_set():  # (after an error, the error says why it stops)
                click.echo("stopping the cluster...", err=True)
            killed = local.stop(stop_timeout)
            if killed:
                click.echo(
                    f"brokers {killed} did not stop within {stop_timeout:g}s and were killed",
                    err=True,
                )
    click.echo("cluster stopped", err=True)


def describe(local: LocalCluster) -> None:
    """Where everything is: ZooKeeper, each broker (pid, data, log), the bootstrap string."""
    zk = local.zookeeper
    started = f" (pid {zk.pid}, log {zk.log_path})" if zk is not None else ""
    click.echo(f"zookeeper.connect={local.connect}{started}")
    for b in local.brokers:
        pid = b.process.pid if b.process is not None else "?"
        metrics = b.metrics_url()
        click.echo(
            f"broker {b.broker_id}: {b.address} (pid {pid}, data {b.data_dir}"
            + (f", metrics {metrics})" if metrics else ")")
        )
    click.echo(f"logs: {local.log_dir}")
    click.echo("bootstrap.servers=" + ",".join(b.address for b in local.brokers))
    click.echo("Ctrl-C (or SIGTERM) stops the cluster.")
