"""Nothing slow runs on the broker's event loop: the loop-lag monitor sees no stall > 100 ms.

The broker's :class:`~pystream.broker.loop_monitor.LoopLagMonitor` logs
``event loop blocked for N ms`` whenever its 20 ms timer fires over 100 ms
late.  Each case marks the broker's output, does the heavy operation, waits
until it is finished, and reads the warnings printed since the mark.  A
positive control (SIGSTOP for 300 ms) proves that a stall is seen.

Topic creation (the CreateTopics case, and the first group join, which creates the
50 ``__consumer_offsets`` partitions) makes its logs in a thread
(``TopicManager.create_missing_logs``); retention and topic deletion remove
files on the log manager's log-io thread.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from admin_helpers import ck_admin, ck_error, produce
from broker_process import BrokerProcess, paused
from confluent_kafka import Consumer
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic
from waiting import wait_until

THRESHOLD_MS = 100
_STALL = re.compile(r"event loop blocked for (\d+) ms")

BROKER_OVERRIDES = {
    "log.retention.check.interval.ms": "200",
    "log.flush.scheduler.interval.ms": "100",
    "log.segment.delete.delay.ms": "100",  # file.delete.delay.ms: removals within the test
    "offsets.topic.num.partitions": "50",
}


@pytest.fixture(scope="module")
def lag_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker shared by the cases (none of them uses a consumer group but case 4)."""
    process = BrokerProcess(tmp_path_factory.mktemp("lag") / "broker", BROKER_OVERRIDES).start()
    try:
        yield process
    finally:
        process.close()


def stalls_since(broker: BrokerProcess, mark: int) -> list[int]:
    """The lags (ms) the monitor reported in the broker's output from line ``mark`` on."""
    return [int(lag) for lag in _STALL.findall(broker.output_since(mark))]


def settle(broker: BrokerProcess, name: str) -> None:
    """Make sure every stall before now is in the output: create a one-partition topic
    and wait for its log line.  The monitor's timer was due during any stall, so it
    reports before the loop gets to this request."""
    admin = ck_admin(broker)
    assert ck_error(admin.create_topics([NewTopic(name, 1)])[name]) == (0, "")
    broker.wait_for_output(f"Created log for {name}-0", timeout=30)


def assert_no_stall(broker: BrokerProcess, mark: int, what: str) -> None:
    settle(broker, f"sync-{re.sub(r'[^a-z0-9]', '-', what)}-{time.monotonic_ns()}")
    stalls = stalls_since(broker, mark)
    print(f"{what}: stalls {stalls} ms")  # noqa: T201 (shown with -s: the report's numbers)
    assert not [lag for lag in stalls if lag > THRESHOLD_MS], (
        f"the event loop was blocked during {what}: {stalls} ms"
    )


def partition_dir(broker: BrokerProcess, topic: str, partition: int) -> Path:
    return Path(broker.log_dir) / f"{topic}-{partition}"


def test_retention_deleting_many_segments(lag_broker: BrokerProcess) -> None:
    admin = ck_admin(lag_broker)
    topic = "retained"
    # One record per batch of ~80 bytes, 300 bytes per segment: ~3 per segment.
    configs = {"segment.bytes": "300", "retention.ms": "-1"}
    assert ck_error(admin.create_topics([NewTopic(topic, 1, config=configs)])[topic]) == (0, "")
    produce(lag_broker, topic, 240, **{"linger.ms": "0", "batch.num.messages": "1"})
    directory = partition_dir(lag_broker, topic, 0)
    segments = len(list(directory.glob("*.log")))
    assert segments >= 50, f"only {segments} segments"
    mark = lag_broker.output_lines()
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.bytes", "0", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(15)
    wait_until(
        lambda: len(list(directory.glob("*.log"))) <= 2 and not list(directory.glob("*.deleted")),
        60,
        "retention deleted the segments and their files",
    )
    assert_no_stall(lag_broker, mark, "retention")


def test_deleting_a_topic_with_many_partitions(lag_broker: BrokerProcess) -> None:
    admin = ck_admin(lag_broker)
    topic = "doomed"
    partitions = 100
    assert ck_error(admin.create_topics([NewTopic(topic, partitions)])[topic]) == (0, "")
    for p in range(0, partitions, 10):
        produce(lag_broker, topic, 5, partition=p)
    mark = lag_broker.output_lines()
    assert ck_error(admin.delete_topics([topic])[topic]) == (0, "")
    log_dir = Path(lag_broker.log_dir)
    wait_until(
        lambda: not [d for d in log_dir.iterdir() if d.name.startswith(f"{topic}-")],
        60,
        f"{topic}'s directories removed",
    )
    assert_no_stall(lag_broker, mark, "topic deletion")


def test_creating_a_topic_with_200_partitions(lag_broker: BrokerProcess) -> None:
    admin = ck_admin(lag_broker)
    topic = "wide"
    mark = lag_broker.output_lines()
    assert ck_error(admin.create_topics([NewTopic(topic, 200)])[topic], 60) == (0, "")
    wait_until(
        lambda: partition_dir(lag_broker, topic, 199).is_dir(), 60, "the 200th partition's log"
    )
    assert_no_stall(lag_broker, mark, "topic creation")


def test_first_group_join_creates_the_offsets_topic(lag_broker: BrokerProcess) -> None:
    admin = ck_admin(lag_broker)
    assert ck_error(admin.create_topics([NewTopic("joined", 1)])["joined"]) == (0, "")
    mark = lag_broker.output_lines()
    consumer = Consumer(
        {
            "bootstrap.servers": lag_broker.bootstrap,
            "group.id": "first-group",
            "session.timeout.ms": 10_000,
        }
    )
    try:
        consumer.subscribe(["joined"])
        deadline = time.monotonic() + 60
        while not consumer.assignment():
            assert time.monotonic() < deadline, "the consumer never got its assignment"
            consumer.poll(0.1)
    finally:
        consumer.close()
    assert partition_dir(lag_broker, "__consumer_offsets", 49).is_dir()
    assert_no_stall(lag_broker, mark, "first group join")


def test_positive_control_a_paused_broker_is_a_stall(lag_broker: BrokerProcess) -> None:
    mark = lag_broker.output_lines()
    with paused(lag_broker):
        time.sleep(0.3)  # the stall itself
    lag_broker.wait_for_output("event loop blocked for", timeout=15, since=mark)
    stalls = stalls_since(lag_broker, mark)
    print(f"positive control: stalls {stalls} ms")  # noqa: T201
    assert max(stalls) >= 250, stalls
