"""``GET /metrics``, ``/healthz`` and ``/readyz`` of real ``pystream serve`` processes.

The scrape is parsed with ``prometheus_client.parser``; counters are checked against what
confluent-kafka produced and consumed, consumer lag against a group's true lag, and
readiness against a ZooKeeper cluster broker cut off from ZooKeeper.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_process import BrokerProcess, free_ports
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until
from zookeeper import ZkProxy, zk_connect, zookeeper  # noqa: F401 - fixtures

RECORDS = 500
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(url: str) -> tuple[int, str]:
    """(status, body) of a GET, 4xx/5xx included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(broker: BrokerProcess) -> Samples:
    """Every sample of ``GET /metrics``, by (name, labels)."""
    status, text = get(broker.metrics_url)
    assert status == 200, text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("metrics"),
        {
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.check.interval.ms": "200",
            "log.cleaner.backoff.ms": "50",
        },
    ).start()
    try:
        yield process
    finally:
        process.close()


def create_topic(broker: BrokerProcess, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)


def produce(broker: BrokerProcess, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(count):
        producer.produce(topic, key=f"k{i}".encode(), value=b"v" * (i % 50))
    assert producer.flush(30) == 0


def consume(broker: BrokerProcess, topic: str, group: str, count: int) -> Consumer:
    """A consumer of ``group`` that has read ``count`` records of ``topic`` (no commits)."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen = 0

    def read() -> bool:
        nonlocal seen
        for message in consumer.consume(100, timeout=0.5):
            assert message.error() is None, message.error()
            seen += 1
        return seen >= count

    wait_until(read, 60, f"{count} records of {topic}")
    assert seen == count
    return consumer


def test_health_and_readiness_of_a_running_single_node(broker: BrokerProcess) -> None:
    base = broker.metrics_url.removesuffix("/metrics")
    assert get(f"{base}/healthz") == (200, "ok\n")
    assert get(f"{base}/readyz") == (200, "ready\n")
    status, body = get(f"{base}/nothing-here")
    assert status == 404 and "/metrics" in body


def test_produce_counts_exactly_the_records_and_bytes_appended(broker: BrokerProcess) -> None:
    create_topic(broker, "produced")
    before = scrape(broker)
    produce(broker, "produced", RECORDS)
    after = scrape(broker)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    messages = "kafka_server_brokertopicmetrics_messagesin_total"
    assert delta(messages, topic="produced") == RECORDS
    assert delta(messages) == RECORDS  # the all-topics sample
    # Every byte appended is in the (fresh) log: bytes in is its size, exactly.
    size = value(after, "kafka_log_log_size", topic="produced", partition="0")
    assert size > RECORDS
    assert delta("kafka_server_brokertopicmetrics_bytesin_total", topic="produced") == size
    assert value(after, "kafka_log_log_logendoffset", topic="produced", partition="0") == RECORDS
    assert value(after, "kafka_log_log_logstartoffset", topic="produced", partition="0") == 0
    assert delta("kafka_server_brokertopicmetrics_failedproducerequests_total") == 0
    # One Produce request per batch, each in the latency histogram.
    requests = delta("kafka_network_requestmetrics_requests_total", request="Produce")
    assert requests == delta("kafka_server_brokertopicmetrics_totalproducerequests_total")
    assert 1 <= requests <= RECORDS
    histogram = "kafka_network_requestmetrics_totaltimems"
    assert delta(f"{histogram}_count", request="Produce") == requests
    assert delta(f"{histogram}_bucket", request="Produce", le="+Inf") == requests
    assert value(after, "kafka_server_replicamanager_partitioncount") >= 1
    assert value(after, "kafka_server_replicamanager_leadercount") >= 1
    assert value(after, "kafka_server_replicamanager_underreplicatedpartitions") == 0
    assert value(after, "kafka_controller_kafkacontroller_activecontrollercount") == 1


def test_a_consumer_fetches_exactly_the_log_as_bytes_out(broker: BrokerProcess) -> None:
    create_topic(broker, "fetched")
    produce(broker, "fetched", RECORDS)
    before = scrape(broker)
    consumer = consume(broker, "fetched", "fetcher", RECORDS)
    try:
        after = scrape(broker)
        size = value(after, "kafka_log_log_size", topic="fetched", partition="0")
        bytes_out = "kafka_server_brokertopicmetrics_bytesout_total"
        # Each batch is sent once (the consumer reads on from where it is).
        assert (
            value(after, bytes_out, topic="fetched") - value(before, bytes_out, topic="fetched")
            == size
        )
        fetches = "kafka_network_requestmetrics_requests_total"
        assert value(after, fetches, request="Fetch") > value(before, fetches, request="Fetch")
        assert (
            value(after, "kafka_server_socketservermetrics_connectioncount", listener="PLAINTEXT")
            >= 1
        )
    finally:
        consumer.close()


def test_consumer_group_lag_is_the_true_lag(broker: BrokerProcess) -> None:
    create_topic(broker, "lagging")
    produce(broker, "lagging", RECORDS)
    consumer = consume(broker, "lagging", "laggards", RECORDS)
    committed = 123
    try:
        consumer.commit(offsets=[TopicPartition("lagging", 0, committed)], asynchronous=False)
        labels = {"consumergroup": "laggards", "topic": "lagging", "partition": "0"}
        samples = wait_until(
            lambda: (
                (s := scrape(broker))
                and ("kafka_consumergroup_lag", frozenset(labels.items())) in s
                and s
            ),
            30,
            "the group's lag in /metrics",
        )
        assert value(samples, "kafka_consumergroup_lag", **labels) == RECORDS - committed
        assert value(samples, "kafka_consumergroup_current_offset", **labels) == committed
        # More records: the lag grows by as many, at once (computed at scrape time).
        produce(broker, "lagging", 7)
        assert value(scrape(broker), "kafka_consumergroup_lag", **labels) == (
            RECORDS + 7 - committed
        )
    finally:
        consumer.close()


def test_retention_deletions_are_counted(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    # Small segments, and only the newest kept: retention deletes every older one.
    configs = {"segment.bytes": "1024", "retention.bytes": "1", "file.delete.delay.ms": "0"}
    admin.create_topics([NewTopic("retained", 1, 1, config=configs)])["retained"].result(30)
    counter = "kafka_log_logmanager_retentionsegmentsdeleted_total"
    before = value(scrape(broker), counter)
    # One batch per record (flushed each time): the 1 KiB segments roll every few.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for _ in range(60):
        producer.produce("retained", value=b"r" * 100)
        assert producer.flush(30) == 0
    samples = wait_until(
        lambda: (
            (s := scrape(broker))
            and value(s, "kafka_log_log_logstartoffset", topic="retained", partition="0") > 0
            and value(s, counter) > before
            and s
        ),
        30,
        "retention to delete segments of 'retained'",
    )
    assert value(samples, "kafka_log_log_logendoffset", topic="retained", partition="0") == 60


def test_log_cleaner_runs_are_counted(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    configs = {
        "cleanup.policy": "compact",
        "segment.bytes": "1024",
        "min.cleanable.dirty.ratio": "0.01",
    }
    admin.create_topics([NewTopic("compacted", 1, 1, config=configs)])["compacted"].result(30)
    before = scrape(broker)
    # Ten keys written over and over, one batch each: closed segments full of duplicates.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(80):
        producer.produce("compacted", key=f"key-{i % 10}".encode(), value=b"c" * 50)
        assert producer.flush(30) == 0
    runs = "kafka_log_logcleaner_cleanerruns_total"
    after = wait_until(
        lambda: (s := scrape(broker)) and value(s, runs) > value(before, runs) and s,
        30,
        "the log cleaner to clean 'compacted'",
    )
    read = "kafka_log_logcleaner_cleanerbytesread_total"
    assert value(after, read) > value(before, read)


def test_readyz_is_503_while_the_logs_load(tmp_path: Path) -> None:
    """After a SIGKILL the broker recovers every log before it serves; meanwhile /healthz
    says the process is up and /readyz answers 503 naming the log loading."""
    port = free_ports(1)[0]  # known before the broker prints it: polled while it starts
    base = f"http://127.0.0.1:{port}"
    process = BrokerProcess(tmp_path, {"metrics.listener": base})
    process.start()
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                seen.append(get(f"{base}/readyz"))
            except OSError:
                pass  # not listening (yet, or any more)
            time.sleep(0.002)

    try:
        admin = AdminClient({"bootstrap.servers": process.bootstrap})
        admin.create_topics([NewTopic("many", 600, 1)])["many"].result(60)
        process.kill()  # no clean-shutdown marker: every log is recovered at start
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        process.start()
        stop.set()
        poller.join(15)
        assert (503, "not ready: loading logs\n") in seen, sorted(set(seen))
        assert get(f"{base}/readyz") == (200, "ready\n")
        assert get(f"{base}/healthz") == (200, "ok\n")
    finally:
        stop.set()
        process.close()


def test_metrics_enable_false_serves_no_endpoint(tmp_path: Path) -> None:
    process = BrokerProcess(tmp_path, {"metrics.enable": "false"}).start()
    try:
        assert process.metrics_url == ""
        assert "pystream metrics on" not in process.output()
    finally:
        process.close()


def test_a_malformed_metrics_listener_is_refused_with_the_expected_form(tmp_path: Path) -> None:
    process = BrokerProcess(tmp_path, {"metrics.listener": "127.0.0.1:9644"})
    with pytest.raises(RuntimeError, match="expected http://HOST:PORT"):
        process.start(timeout=30)


def test_readyz_is_503_while_a_cluster_broker_has_lost_zookeeper(
    tmp_path: Path,
    zookeeper,  # noqa: F811
) -> None:
    """Cut off from ZooKeeper (a proxy closes its connections), the broker is not ready;
    reconnected, it is again."""
    from cluster_fixtures import cluster_broker

    proxy = ZkProxy(zookeeper.port)
    broker = cluster_broker(tmp_path, f"{proxy.hosts}/pystream-metrics-{tmp_path.name}", 0)
    broker.start()
    try:
        readyz = broker.metrics_url.removesuffix("/metrics") + "/readyz"
        assert wait_until(lambda: get(readyz)[0] == 200, 30, "ready") is True
        proxy.block()
        status, body = wait_until(
            lambda: (r := get(readyz))[0] == 503 and r, 30, "503 without ZooKeeper"
        )
        assert body == "not ready: the ZooKeeper session is lost\n"
        assert get(readyz.removesuffix("readyz") + "healthz")[0] == 200  # the process is up
        proxy.unblock()
        assert wait_until(lambda: get(readyz) == (200, "ready\n"), 30, "ready again")
    finally:
        broker.close()
        proxy.close()


def test_isr_shrinks_and_expands_are_counted_by_the_leader(
    tmp_path: Path,
    zk_connect: str,  # noqa: F811
) -> None:
    """A follower killed leaves the ISR (the leader shrinks it: under-replicated); restarted,
    it catches up and rejoins (the leader expands it)."""
    from cluster_fixtures import by_id, create_topic, leaders, metadata, start_cluster

    brokers = start_cluster(tmp_path, zk_connect, {"replica.lag.time.max.ms": "1000"})
    try:
        create_topic(brokers, "replicated", 1, 3)
        # The active controller says so by its own election state; the others say 0.
        active = "kafka_controller_kafkacontroller_activecontrollercount"
        wait_until(
            lambda: [value(scrape(b), active) for b in brokers].count(1) == 1,
            30,
            "one broker to report itself the active controller",
        )
        (reporting,) = [b for b in brokers if value(scrape(b), active) == 1]
        assert by_id(brokers)[metadata(brokers[0]).controller_id] is reporting
        leader = by_id(brokers)[leaders(brokers[0], "replicated")[0]]
        follower = next(b for b in brokers if b is not leader)
        prefix = "kafka_server_replicamanager_"
        assert value(scrape(leader), f"{prefix}underreplicatedpartitions") == 0
        follower.kill()
        shrunk = wait_until(
            lambda: (
                (s := scrape(leader)) and value(s, f"{prefix}underreplicatedpartitions") >= 1 and s
            ),
            30,
            "the leader to report an under-replicated partition",
        )
        assert value(shrunk, f"{prefix}isrshrinks_total") >= 1
        expands = value(shrunk, f"{prefix}isrexpands_total")
        follower.start()
        grown = wait_until(
            lambda: (
                (s := scrape(leader)) and value(s, f"{prefix}underreplicatedpartitions") == 0 and s
            ),
            60,
            "the follower back in the ISR",
        )
        assert value(grown, f"{prefix}isrexpands_total") > expands
        # One active controller among the three (each broker reports its own election
        # state; while a controller moves there may briefly be none).
        wait_until(
            lambda: (
                sum(
                    value(scrape(b), "kafka_controller_kafkacontroller_activecontrollercount")
                    for b in brokers
                )
                == 1
            ),
            30,
            "exactly one broker to report itself the active controller",
        )
    finally:
        for b in brokers:
            b.close()
