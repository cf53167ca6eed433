"""The broker process: starts, serves a real client, shuts down cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from broker_process import BrokerProcess
from confluent_kafka import Consumer, Producer, TopicPartition
from waiting import wait_until

import pystream


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    errors: list[object] = []
    for value in values:
        producer.produce(topic, value, on_delivery=lambda err, msg: err and errors.append(err))
    assert producer.flush(30) == 0
    assert errors == []


def _consume_all(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(values) < count and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                assert message.error() is None, message.error()
                values.append(message.value())
    finally:
        consumer.close()
    return values


def test_prints_address_and_serves_librdkafka(broker: BrokerProcess) -> None:
    assert broker.bootstrap.startswith("127.0.0.1:")
    values = [b"value-%d" % i for i in range(500)]
    _produce(broker.bootstrap, "lifecycle", values)
    assert _consume_all(broker.bootstrap, "lifecycle", 500) == values


def test_sigterm_is_a_clean_shutdown_and_data_survives(broker: BrokerProcess) -> None:
    _produce(broker.bootstrap, "survive", [b"a", b"b", b"c"])
    assert broker.stop() == 0
    assert "shut down cleanly" in broker.output()
    assert (broker.log_dir / ".kafka_cleanshutdown").exists()
    broker.start()
    assert "recovering" not in broker.output().split("shutting down")[-1]
    assert _consume_all(broker.bootstrap, "survive", 3) == [b"a", b"b", b"c"]


def test_unknown_api_key_is_refused_without_crashing(broker: BrokerProcess) -> None:
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        # api key 999, version 0, correlation 7, null client id
        body = struct.pack(">hhih", 999, 0, 7, -1)
        sock.sendall(struct.pack(">i", len(body)) + body)
        assert sock.recv(100) == b""  # closed, with a logged reason
    assert "api key 999" in _wait_for_log(broker, "api key 999")
    _produce(broker.bootstrap, "still-up", [b"x"])


def _wait_for_log(broker: BrokerProcess, text: str, timeout: float = 10) -> str:
    def logged() -> str | None:
        output = broker.output()
        return output if text in output else None

    return wait_until(logged, timeout=timeout, what=f"{text!r} in the broker output")


def test_unknown_config_key_is_a_warning_naming_it(broker_factory) -> None:
    broker = broker_factory(**{"log.retention.hourz": "5"})
    assert "unknown config 'log.retention.hourz'" in broker.output()


def test_ctrl_c_is_a_clean_shutdown(broker: BrokerProcess) -> None:
    _produce(broker.bootstrap, "interrupted", [b"x"])
    assert broker.interrupt() == 0
    assert "shut down cleanly" in broker.output()
    assert (broker.log_dir / ".kafka_cleanshutdown").exists()


def _serve_once(*overrides: str) -> subprocess.CompletedProcess[str]:
    """``pystream serve`` with these overrides, expected to exit by itself."""
    command = [sys.executable, "-m", "pystream", "serve"]
    for override in overrides:
        command += ["--override", override]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=_env())


def test_bad_config_is_one_line_and_nonzero_exit(tmp_path) -> None:
    result = _serve_once("num.partitions=zero", f"log.dirs={tmp_path}")
    assert result.returncode != 0
    assert "num.partitions" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_zookeeper_is_one_line_and_nonzero_exit(tmp_path) -> None:
    # Nothing listens on port 1 of loopback: the connection is refused at once.
    result = _serve_once(
        "zookeeper.connect=127.0.0.1:1",
        "zookeeper.connection.timeout.ms=1500",
        f"log.dirs={tmp_path}",
    )
    assert result.returncode == 1
    assert "cannot connect to ZooKeeper at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


def _env() -> dict[str, str]:
    root = str(Path(pystream.__file__).resolve().parent.parent)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }


def _serve_until_exit(log_dir: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Another ``pystream serve`` (on another port) on ``log_dir``; it must exit by itself
    within ``timeout`` (TimeoutExpired if it serves instead)."""
    command = [sys.executable, "-m", "pystream", "serve", "--override", f"log.dirs={log_dir}"]
    command += ["--override", "listeners=PLAINTEXT://127.0.0.1:0"]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env())


def _assert_refused_for_lock(result: subprocess.CompletedProcess[str], log_dir: Path) -> None:
    assert result.returncode != 0
    assert f"Failed to acquire lock on file .lock in {os.path.realpath(log_dir)}." in result.stderr
    assert "another process or thread is using this directory" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_second_broker_on_the_same_log_dirs_is_refused(broker_factory) -> None:
    """Kafka's log dir lock: one broker per log dir; the first keeps serving, and once it
    stops the dir is free for the next."""
    first = broker_factory("first")
    _produce(first.bootstrap, "locked", [b"a", b"b"])
    metadata = (first.log_dir / "pystream-metadata.json").read_bytes()
    _assert_refused_for_lock(_serve_until_exit(first.log_dir), first.log_dir)
    assert (first.log_dir / "pystream-metadata.json").read_bytes() == metadata  # untouched
    _produce(first.bootstrap, "locked", [b"c"])
    assert _consume_all(first.bootstrap, "locked", 3) == [b"a", b"b", b"c"]
    assert first.stop() == 0
    after = broker_factory("after", **{"log.dirs": str(first.log_dir)})  # released
    assert _consume_all(after.bootstrap, "locked", 3) == [b"a", b"b", b"c"]


def test_a_killed_broker_leaves_no_stale_lock(broker_factory) -> None:
    """The kernel drops the lock with the process: a restart after SIGKILL is not refused,
    and the restarted broker holds the lock in turn."""
    first = broker_factory("first")
    _produce(first.bootstrap, "killed", [b"x"])
    assert first.kill() == -signal.SIGKILL
    assert (first.log_dir / ".lock").exists()  # the file stays; its lock is gone
    restarted = broker_factory("restarted", **{"log.dirs": str(first.log_dir)})
    assert _consume_all(restarted.bootstrap, "killed", 1) == [b"x"]
    _assert_refused_for_lock(_serve_until_exit(first.log_dir), first.log_dir)
    assert _consume_all(restarted.bootstrap, "killed", 1) == [b"x"]


def test_checkpoints_are_written_while_running(broker_factory) -> None:
    """The periodic checkpoints (written from a thread, off the event loop) appear and
    track the log while the broker runs, not only at shutdown."""
    broker = broker_factory(
        **{
            "replica.high.watermark.checkpoint.interval.ms": "100",
            "log.flush.offset.checkpoint.interval.ms": "100",
        }
    )
    _produce(broker.bootstrap, "checkpointed", [b"a", b"b", b"c"])
    path = broker.log_dir / "replication-offset-checkpoint"
    wait_until(
        lambda: path.exists() and "checkpointed 0 3" in path.read_text(),
        timeout=30,
        what=f"a high watermark checkpoint in {path}",
    )
    assert (broker.log_dir / "recovery-point-offset-checkpoint").exists()
    # Unmoved offsets are not written again (each write replaces the file: a new inode),
    # checked over ten checkpoint intervals; moved ones are.
    written = path.stat().st_ino
    until = time.monotonic() + 1.0
    while time.monotonic() < until:
        assert path.stat().st_ino == written, "an unchanged checkpoint was rewritten"
        time.sleep(0.05)
    _produce(broker.bootstrap, "checkpointed", [b"d", b"e"])
    wait_until(
        lambda: "checkpointed 0 5" in path.read_text(),
        timeout=30,
        what=f"the moved high watermark in {path}",
    )
    assert broker.stop() == 0
