"""pystream's pytest plugin (``pystream.testing``), tested with ``pytester``.

Each test here runs a small generated test suite in a pytest session of its own
(in this process: pytester's in-process runs) with the plugin loaded, and checks
its outcomes and report.  One session exercises many fixtures at once so they share
its brokers: the module stays well under a minute.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import aiokafka  # noqa: F401
import confluent_kafka  # noqa: F401
import kafka  # noqa: F401
import pytest

import pystream
import pystream.broker.server  # noqa: F401
import pystream.client  # noqa: F401
import pystream.testing.bench  # noqa: F401
import pystream.testing.cluster  # noqa: F401

# Imported here, not first in the sessions below: pytester's in-process runs drop the
# modules a session imported when it ends, and C extensions (numpy's) load once only.
pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "test_with_pystream.py"


def plugin_args() -> list[str]:
    """``-p pystream.testing.plugin`` unless the installed entry point loads it already
    (then ``-p`` would register it a second time, under another name)."""
    installed = any(ep.value == "pystream.testing.plugin" for ep in _pytest11_entry_points())
    return [] if installed else ["-p", "pystream.testing.plugin"]


def _pytest11_entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group="pytest11"))


@pytest.fixture
def pystream_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Children (``pystream serve``, node, pytest) import this tree's pystream wherever
    they run: PYTHONPATH made absolute (the suite may run with a relative ``src``)."""
    root = str(Path(pystream.__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))


HELPERS = '''
import time


def consume_confluent(bootstrap, topic, count, timeout=30.0):
    """The first ``count`` values of partition 0, read from the beginning."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                         "enable.auto.commit": False})
    values = []
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout
        while len(values) < count and time.monotonic() < deadline:
            for message in consumer.consume(count, 0.5):
                assert message.error() is None, message.error()
                values.append(message.value())
    finally:
        consumer.close()
    return values


def produce_confluent(bootstrap, topic, values):
    """Produce with acks=all and wait for every acknowledgement."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for value in values:
        producer.produce(topic, value, partition=0)
    assert producer.flush(30) == 0
'''

SUITE = """
import asyncio

import pytest

import pystream
from pystream.testing import CrashNeedsProcessModeError
from helpers import consume_confluent, produce_confluent

SEEN = {}


def test_confluent_kafka(kafka_broker, kafka_topic):
    assert kafka_broker.mode == "thread"
    produce_confluent(kafka_broker.bootstrap_servers, kafka_topic, [b"from confluent"])
    assert consume_confluent(kafka_broker.bootstrap_servers, kafka_topic, 1) == [b"from confluent"]
    SEEN["topic"], SEEN["broker"] = kafka_topic, kafka_broker.bootstrap_servers


def test_topics_are_isolated(kafka_broker, kafka_topic):
    from confluent_kafka import Consumer, TopicPartition

    assert kafka_broker.bootstrap_servers == SEEN["broker"]  # the session's broker
    assert kafka_topic != SEEN["topic"]
    topics = kafka_broker.admin().list_topics()
    assert kafka_topic in topics and SEEN["topic"] not in topics  # deleted after its test
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap_servers, "group.id": "g"})
    try:
        low_high = consumer.get_watermark_offsets(TopicPartition(kafka_topic, 0), timeout=10)
    finally:
        consumer.close()
    assert low_high == (0, 0)  # nothing of the earlier test's records


def test_kafka_python(kafka_broker, kafka_topic):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    producer.send(kafka_topic, b"from kafka-python").get(timeout=20)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=20000)
    consumer.assign([TopicPartition(kafka_topic, 0)])
    assert next(iter(consumer)).value == b"from kafka-python"
    consumer.close()


def test_aiokafka(kafka_broker, kafka_topic):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    async def roundtrip():
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(kafka_topic, b"from aiokafka")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign([TopicPartition(kafka_topic, 0)])
            return (await asyncio.wait_for(consumer.getone(), 20)).value
        finally:
            await consumer.stop()

    assert asyncio.run(roundtrip()) == b"from aiokafka"


def test_pystream_client(kafka_broker, kafka_topic):
    with pystream.Producer(kafka_broker.bootstrap_servers) as producer:
        assert producer.send(kafka_topic, b"from pystream").result(20).offset == 0
    with pystream.Consumer(bootstrap_servers=kafka_broker.bootstrap_servers,
                           auto_offset_reset="earliest") as consumer:
        consumer.assign([(kafka_topic, 0)])
        records = []
        while not records:
            records = consumer.poll(timeout=20)
    assert [r.value for r in records] == [b"from pystream"]


@pytest.mark.pystream(partitions=4, topic_config={"cleanup.policy": "compact"})
def test_topic_from_the_marker(kafka_broker, kafka_topic):
    admin = kafka_broker.admin()
    assert len(admin.describe_topics([kafka_topic])[kafka_topic].partitions) == 4
    (entries,) = admin.describe_configs([("topic", kafka_topic)]).values()
    assert entries["cleanup.policy"].value == "compact"
    kafka_broker.delete_topic(kafka_topic)  # the fixture's teardown copes


@pytest.mark.pystream(config={"num.partitions": 3}, scope="function")
def test_broker_config_from_the_marker(kafka_broker):
    assert kafka_broker.bootstrap_servers != SEEN["broker"]  # a broker of its own
    with pystream.Producer(kafka_broker.bootstrap_servers) as producer:
        producer.send("auto-created", b"x").result(20)
    described = kafka_broker.admin().describe_topics(["auto-created"])
    assert len(described["auto-created"].partitions) == 3


def test_restart_in_thread_mode_keeps_data(kafka_broker, kafka_topic):
    values = [b"%d" % n for n in range(20)]
    produce_confluent(kafka_broker.bootstrap_servers, kafka_topic, values)
    before = kafka_broker.bootstrap_servers
    kafka_broker.restart()
    assert kafka_broker.bootstrap_servers == before  # the same port
    assert consume_confluent(kafka_broker.bootstrap_servers, kafka_topic, 20) == values
    with pytest.raises(CrashNeedsProcessModeError, match='mode="process"'):
        kafka_broker.kill()
    assert "shut down cleanly" in kafka_broker.logs


@pytest.mark.pystream(mode="process", scope="module")
def test_kill_keeps_acknowledged_data(kafka_broker, kafka_topic):
    assert kafka_broker.mode == "process" and kafka_broker.bootstrap_servers != SEEN["broker"]
    values = [b"acknowledged %d" % n for n in range(200)]
    produce_confluent(kafka_broker.bootstrap_servers, kafka_topic, values)
    kafka_broker.kill()
    assert not kafka_broker.is_running
    assert kafka_broker.process is None
    kafka_broker.restart()
    assert consume_confluent(kafka_broker.bootstrap_servers, kafka_topic, 200) == values
    assert "No clean shutdown marker" in kafka_broker.logs  # it did crash and recover


@pytest.mark.pystream(mode="process", scope="module")
def test_the_process_broker_is_back_for_the_next_test(kafka_broker, kafka_topic):
    kafka_broker.kill()  # left down: the next user of this broker gets it restarted


@pytest.mark.pystream(mode="process", scope="module")
def test_after_a_kill_left_down(kafka_broker, kafka_topic):
    assert kafka_broker.is_running
    produce_confluent(kafka_broker.bootstrap_servers, kafka_topic, [b"again"])


def test_cluster(kafka_cluster):
    cluster = kafka_cluster(2)
    assert len(cluster.brokers) == 2
    topic = cluster.create_topic("replicated", partitions=2, replication_factor=2)
    described = cluster.admin().describe_topics([topic])[topic]
    assert all(len(p.replicas) == 2 for p in described.partitions)
    produce_confluent(cluster.bootstrap_servers, topic, [b"replicated"])
    assert consume_confluent(cluster.bootstrap_servers, topic, 1) == [b"replicated"]
    described = cluster.admin().describe_cluster()
    assert [b.node_id for b in described["brokers"]] == [0, 1]
    assert described["controller_id"] in (0, 1)
    assert "=== broker 1" in cluster.logs


def test_fails_on_purpose(kafka_broker, kafka_topic):
    assert kafka_topic == "fails on purpose"
"""


def test_a_suite_using_every_fixture(pytester: pytest.Pytester, pystream_on_path: None) -> None:
    """Every fixture and client in one session; the failing test's report has the log."""
    pytester.makepyfile(helpers=HELPERS, test_suite=SUITE)
    result = pytester.runpytest(*plugin_args(), "-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=12, failed=1)
    # The failing test's report carries its broker's log (the topic it created is in it).
    result.stdout.fnmatch_lines(
        [
            "*pystream broker log (127.0.0.1:*",
            "*created topic *test_fails_on_purpose* with 1 partition(s)*",
        ]
    )
    assert "pystream broker log" not in result.stdout.str().split("test_fails_on_purpose")[0]


# pystream_scope = module: this module's broker is not test_ini's.
INI_SECOND_MODULE = """
def test_a_broker_per_module(kafka_broker):
    with open("first-module-broker") as f:
        assert f.read() != kafka_broker.bootstrap_servers
"""

INI_SUITE = """
import pytest


def test_ini_options(kafka_broker):
    assert kafka_broker.mode == "process"
    with open("first-module-broker", "w") as f:
        f.write(kafka_broker.bootstrap_servers)
    import pystream
    with pystream.Producer(kafka_broker.bootstrap_servers) as producer:
        producer.send("auto", b"x").result(20)
    assert len(kafka_broker.admin().describe_topics(["auto"])["auto"].partitions) == 2


@pytest.mark.parametrize("client", ["confluent", "pystream"])
def test_kafka_bench(kafka_bench, client):
    info = kafka_bench(client=client, records=2000, size=100, rounds=2)
    assert info["records_per_s"] > 0


def test_cluster_skipped_without_zookeeper(kafka_cluster):
    kafka_cluster(1)


@pytest.mark.pystream(scope="function", config={"log.dirs": "/dev/null/not-a-dir"})
def test_a_broker_that_cannot_start(kafka_broker):
    pass
"""


def test_ini_options_kafka_bench_and_cluster_skip(
    pytester: pytest.Pytester, pystream_on_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ini options set the mode, scope and config; kafka_bench's figures land in the benchmark
    JSON; a broker that cannot start fails the test with its log; kafka_cluster skips,
    saying why, when ZooKeeper is missing."""
    pytester.makeini(
        "[pytest]\npystream_mode = process\npystream_scope = module\n"
        "pystream_config =\n    num.partitions=2\n"
    )
    pytester.makepyfile(test_ini=INI_SUITE, test_ini_2=INI_SECOND_MODULE)
    monkeypatch.setenv("ZOOKEEPER_JAR", str(pytester.path / "no-such-zookeeper.jar"))
    result = pytester.runpytest(
        *plugin_args(), "-p", "no:cacheprovider", "-rs", "--benchmark-json=bench.json"
    )
    result.assert_outcomes(passed=4, skipped=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            # The broker that could not start: the error says so, with its log.
            "*pystream serve did not start (exited with 1; log *broker.log)*",
            "*/dev/null/not-a-dir*",
            "*kafka_cluster needs Apache ZooKeeper (Debian package `zookeeper`)*",
        ]
    )
    benchmarks = json.loads((pytester.path / "bench.json").read_text())["benchmarks"]
    assert sorted(b["extra_info"]["client"] for b in benchmarks) == ["confluent", "pystream"]
    for benchmark in benchmarks:
        extra = benchmark["extra_info"]
        assert extra["records"] == 2000 and extra["record_size"] == 100
        assert extra["records_per_s"] > 0 and extra["produce_records_per_s"] > 0
        assert extra["mb_per_s"] == pytest.approx(extra["records_per_s"] * 100 / 1e6)


def test_the_example_runs(pytester: pytest.Pytester, pystream_on_path: None) -> None:
    """examples/test_with_pystream.py, as a user would run it."""
    pytester.makepyfile(test_with_pystream=EXAMPLE.read_text())
    result = pytester.runpytest(*plugin_args(), "-p", "no:cacheprovider", "-q")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 3 and "failed" not in outcomes, result.stdout.str()


def test_the_plugin_costs_nothing_unused() -> None:
    """Loading the plugin imports no broker, client or protocol module, and our own suite
    never asks for its fixtures (they would start brokers behind the test's back)."""
    code = (
        "import sys, pystream.testing.plugin\n"
        "heavy = [m for m in sys.modules if m.startswith('pystream.') and "
        "m.split('.')[1] not in ('testing', 'version')]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"
    fixtures = {"kafka_broker", "kafka_topic", "kafka_cluster", "kafka_bench"}
    users = [
        f"{path.name}::{node.name}"
        for path in (REPO / "tests").glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and fixtures & {a.arg for a in node.args.args + node.args.kwonlyargs}
    ]
    assert users == []


KAFKAJS_SCRIPT = r"""
const { Kafka, logLevel } = require("kafkajs");
const [bootstrap, topic] = process.argv.slice(2);
const kafka = new Kafka({
  clientId: "pystream-test", brokers: [bootstrap], logLevel: logLevel.ERROR,
});
(async () => {
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, acks: -1, messages: [{ key: "k", value: "from kafkajs" }] });
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: "kafkajs-readers" });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await new Promise((resolve, reject) => {
    consumer.run({ eachMessage: async ({ message }) => {
      process.stdout.write(JSON.stringify({ value: message.value.toString() }) + "\n");
      resolve();
    } }).catch(reject);
  });
  await consumer.disconnect();
})().catch((e) => { console.error(e); process.exit(1); });
"""

KAFKAJS_SUITE = """
import json, os, subprocess


def test_kafkajs(kafka_broker, kafka_topic):
    done = subprocess.run(
        ["node", "kafkajs_roundtrip.js", kafka_broker.bootstrap_servers, kafka_topic],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "NODE_PATH": os.environ["KAFKAJS_NODE_PATH"]},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0]) == {"value": "from kafkajs"}
    assert "kafkajs-readers" in {g.group_id for g in kafka_broker.admin().list_groups()}
"""


@pytest.fixture(scope="session")
def kafkajs_node_path() -> str:
    """A ``node_modules`` with kafkajs: ``$KAFKAJS_NODE_PATH``, else the cache that
    ``scripts/test`` fills (``npm install kafkajs`` there now if npm is present)."""
    configured = os.environ.get("KAFKAJS_NODE_PATH")
    if configured:
        return configured
    if shutil.which("node") is None:
        pytest.skip("kafkajs needs node (Debian packages `nodejs` and `npm`)")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pystream-kafkajs"
    modules = cache / "node_modules"
    if not (modules / "kafkajs").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip(f"kafkajs is not in {modules} and npm is not installed")
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund", "kafkajs@2"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            pytest.skip(f"npm install kafkajs failed (no registry?): {done.stderr[-300:]}")
    return str(modules)


def test_kafkajs_through_a_subprocess(
    pytester: pytest.Pytester,
    pystream_on_path: None,
    kafkajs_node_path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kafkajs (node) produces and consumes through a group against ``kafka_broker``."""
    monkeypatch.setenv("KAFKAJS_NODE_PATH", kafkajs_node_path)
    (pytester.path / "kafkajs_roundtrip.js").write_text(KAFKAJS_SCRIPT)
    pytester.makepyfile(test_kafkajs=KAFKAJS_SUITE)
    result = pytester.runpytest(*plugin_args(), "-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)
