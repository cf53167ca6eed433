"""A throwaway PostgreSQL server for the SQL connector tests.

One server per test session (started on first use, stopped at session end) on a free
loopback port, with its cluster in a temporary directory, trust authentication and no
fsync (a throwaway server: tests stay fast).  Each test module gets a database of its
own from :func:`postgres_database`.

``initdb`` and ``postgres`` refuse to run as root; this machine and CI run the tests as
root, so there they run as the ``postgres`` system user (made by Debian's
``postgresql`` package, which ``scripts/test`` installs) with the directory chowned to
it.  The server is started from the main thread with ``terminate_with_parent``: if the
test process is killed, the kernel sends the server SIGTERM, so nothing leaks.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from waiting import wait_until

from pystream.cli.child_process import terminate_with_parent
from pystream.cli.local_zookeeper import free_port

INSTALL_HINT = "install Debian's postgresql package: scripts/test does it"


def find_postgres_bin() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``: on PATH, else Debian's
    ``/usr/lib/postgresql/<version>/bin`` (the newest)."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parts[-3].split(".")],
    )
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    """A running server: ``dsn(database)`` is a psycopg connection string."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def url(self, database: str = "postgres") -> str:
        """The JDBC form the connectors' ``connection.url`` takes."""
        return f"jdbc:postgresql://127.0.0.1:{self.port}/{database}?user=postgres"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(2)  # SIGINT: PostgreSQL's fast shutdown
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _run_as() -> tuple[dict[str, object], int | None, int | None]:
    """Popen arguments running a command as ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return {}, None, None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip(f"running as root and there is no postgres user ({INSTALL_HINT})")
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}, user.pw_uid, user.pw_gid


def start_server(directory: Path) -> PostgresServer:
    """A started server with its cluster in ``directory`` (the test is skipped, with the
    reason, if PostgreSQL or psycopg is missing)."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    bindir = find_postgres_bin()
    if bindir is None:
        pytest.skip(f"PostgreSQL's initdb is not installed ({INSTALL_HINT})")
    as_user, uid, gid = _run_as()
    if uid is not None:
        os.chown(directory, uid, gid or -1)
    data = directory / "data"
    env = {**os.environ, "LC_ALL": "C", "HOME": str(directory)}
    initdb = subprocess.run(
        [bindir / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
         "--locale=C", "--no-sync"],
        capture_output=True, text=True, env=env, cwd=directory, **as_user,
    )  # fmt: skip
    if initdb.returncode != 0:
        raise RuntimeError(f"initdb in {directory} failed:\n{initdb.stdout}{initdb.stderr}")
    port = free_port()
    log = open(directory / "postgres.log", "wb")  # noqa: SIM115 (the server's lifetime)
    process = subprocess.Popen(
        [bindir / "postgres", "-D", data, "-k", directory, "-h", "127.0.0.1", "-p", str(port),
         "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
         "-c", "max_connections=50"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=directory,
        preexec_fn=terminate_with_parent(), **as_user,
    )  # fmt: skip
    log.close()
    server = PostgresServer(directory, port, process)

    def ready() -> bool:
        if process.poll() is not None:
            text = (directory / "postgres.log").read_text(errors="replace")
            raise AssertionError(f"postgres exited with {process.returncode}:\n{text}")
        try:
            psycopg.connect(server.dsn(), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    try:
        wait_until(ready, timeout=60, what=f"PostgreSQL on port {port}", interval=0.1)
    except BaseException:
        server.stop()
        raise
    return server


_shared: PostgresServer | None = None
_shared_lock = threading.Lock()


def shared_server(request: pytest.FixtureRequest) -> PostgresServer:
    """The session's server, started on first use and stopped when the session ends
    (kept in this module so that every test module importing the fixtures shares it)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            directory = Path(tempfile.mkdtemp(prefix="pystream-pg-"))
            try:
                server = start_server(directory)
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
            _shared = server

            def stop() -> None:
                global _shared
                server.stop()
                shutil.rmtree(directory, ignore_errors=True)
                _shared = None

            request.addfinalizer(stop)
        return _shared


@pytest.fixture(scope="session")
def postgres(request: pytest.FixtureRequest) -> PostgresServer:
    """The session's PostgreSQL server."""
    return shared_server(request)


@pytest.fixture(scope="module")
def postgres_database(postgres: PostgresServer) -> Iterator[str]:
    """A fresh database for this test module; yields its name (dropped afterwards)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
