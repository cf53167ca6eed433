"""The follower's fetch path under load: several fetchers, exact copies of the leader.

One cluster of three brokers with ``num.replica.fetchers=3`` for the module: each
follower runs up to three fetchers per leader, each on its own connection, and the
partitions are spread over them as Kafka spreads them.  Followers decode Fetch
responses in C and append the leader's batches as they are, so the tests compare
the replicas' segment files byte for byte after loads that exercise every kind of
batch (compressed in each codec, transactional with commit and abort markers) and
after a SIGKILL of a leader in the middle of an acks=all load.
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from broker_process import paused  # noqa: E402
from cluster_fixtures import metadata, produce_request, start_cluster  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from replication_checker import log_batches, record_key  # noqa: E402
from test_replication import (  # noqa: E402
    BROKER_IDS,
    REPLICA_LAG_MS,
    REPLICATION_OVERRIDES,
    Deliveries,
    ReplicatedCluster,
    acks_all_producer,
    assert_delivered,
    consume_all,
    partition_sizes,
    produce_sequenced,
)
from waiting import wait_until  # noqa: E402
from zookeeper import ZooKeeperServer, zookeeper  # noqa: E402, F401 - fixture

from pystream.cluster.replication.replica_fetcher import fetcher_id  # noqa: E402
from pystream.protocol.headers import decode_response  # noqa: E402
from pystream.protocol.messages.metadata import MetadataRequest  # noqa: E402

FETCHERS = 3


@pytest.fixture(scope="module")
def fetchers_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    zookeeper: ZooKeeperServer,  # noqa: F811
) -> Iterator[ReplicatedCluster]:
    """Three brokers with RF=3 defaults and ``num.replica.fetchers=3``, for the module."""
    from kazoo.client import KazooClient

    connect = f"{zookeeper.hosts}/pystream-test/fetchers-{os.getpid()}"
    brokers = start_cluster(
        tmp_path_factory.mktemp("fetchers"),
        connect,
        {**REPLICATION_OVERRIDES, "num.replica.fetchers": str(FETCHERS)},
    )
    zk = KazooClient(hosts=connect, timeout=2.0)  # chrooted: the cluster's own paths
    zk.start(timeout=15)
    try:
        yield ReplicatedCluster(brokers, zk)
    finally:
        zk.stop()
        zk.close()
        for broker in brokers:
            if broker.process is not None:
                os.kill(broker.process.pid, signal.SIGCONT)
            broker.close()


# --- what is on disk and on the wire ----------------------------------------------------------
def log_bytes(partition_dir: Path) -> bytes:
    """A replica's whole log: its segment files' bytes in offset order."""
    return b"".join(s.read_bytes() for s in sorted(partition_dir.glob("*.log")))


def assert_replicas_identical(cluster: ReplicatedCluster, topic: str, partitions: int) -> None:
    """Every replica's log equals the leader's, batch for batch (offsets, epochs, CRCs,
    every CRC verified) and byte for byte.  Polled: transaction markers are written after
    EndTxn is answered, so a leader may still append one while the replicas are read."""

    def identical() -> str:
        logs = cluster.wait_converged(topic, range(partitions))
        for p, batches in logs.items():
            if not batches:
                return f"{topic}-{p} is empty"
            leader = cluster.state(topic, p).leader
            expected = log_bytes(cluster.brokers[leader].log_dir / f"{topic}-{p}")
            for broker_id, broker in cluster.live().items():
                directory = broker.log_dir / f"{topic}-{p}"
                if log_batches(directory, verify_crc=True) != batches:
                    return f"{topic}-{p} on broker {broker_id}: batches differ"
                if log_bytes(directory) != expected:
                    return f"{topic}-{p} on broker {broker_id}: bytes differ"
        return ""

    problem = ["not checked"]

    def settled() -> bool:
        problem[0] = identical()
        return not problem[0]

    try:
        wait_until(settled, timeout=60, what=f"identical replicas of {topic}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {problem[0]}") from None


def established_to(pid: int, port: int) -> int:
    """TCP connections of process ``pid`` to 127.0.0.1:``port`` that are ESTABLISHED."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    wanted = f"0100007F:{port:04X}"
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2] == wanted and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


# --- tests -----------------------------------------------------------------------------------
def test_num_replica_fetchers_gives_each_fetcher_its_partitions_and_a_connection(
    fetchers_cluster: ReplicatedCluster,
) -> None:
    cluster = fetchers_cluster
    # Leaders chosen so that a leader has several fetchers per follower (with leaders
    # round-robin over three brokers and three fetchers, every partition a broker leads in
    # one topic lands on the same fetcher: fetcher - leader is constant per topic).
    assignments = {
        "spread-a": [[0, 1, 2]] * 6,
        "spread-b": [[1, 2, 0], [1, 2, 0], [2, 0, 1], [2, 0, 1]],
    }
    topics = {name: len(assignment) for name, assignment in assignments.items()}
    for name, assignment in assignments.items():
        cluster.create_topic(name, assignment=assignment)
    deliveries = Deliveries()
    producer = acks_all_producer(cluster.bootstrap())
    for name, partitions in topics.items():
        produce_sequenced(producer, deliveries, name, range(2_000), partitions, value_size=50)
    assert producer.flush(60) == 0 and not deliveries.failed
    for name, partitions in topics.items():
        assert_replicas_identical(cluster, name, partitions)

    # Kafka's spread: fetcher abs(31 * topic.hashCode() + partition) % 3 of the leader.
    expected: dict[int, set[int]] = {i: set() for i in BROKER_IDS}
    for name, partitions in topics.items():
        for p in range(partitions):
            expected[cluster.state(name, p).leader].add(fetcher_id(name, p, FETCHERS))
    assert [len(expected[i]) for i in BROKER_IDS] == [3, 2, 2], expected
    # Each fetcher has a connection of its own: a follower holds as many connections to a
    # leader's listener as it runs fetchers for that leader (no other inter-broker channel
    # is in use here: no transactions, no controlled shutdown).
    for follower_id, follower in cluster.brokers.items():
        assert follower.process is not None
        for leader_id, ids in expected.items():
            if leader_id == follower_id:
                continue
            port, wanted = cluster.brokers[leader_id].port, len(ids)
            wait_until(
                lambda f=follower, p=port, n=wanted: established_to(f.process.pid, p) == n,
                timeout=30,
                what=f"{len(ids)} fetcher connection(s) from broker {follower_id} to {leader_id}",
            )


def test_compressed_and_transactional_batches_are_copied_byte_for_byte(
    fetchers_cluster: ReplicatedCluster,
) -> None:
    cluster = fetchers_cluster
    cluster.create_topic("mixed", 3)
    deliveries = Deliveries()
    sequence = 0
    for codec in ("gzip", "snappy", "lz4", "zstd", "none"):
        producer = acks_all_producer(cluster.bootstrap(), **{"compression.type": codec})
        produce_sequenced(
            producer, deliveries, "mixed", range(sequence, sequence + 600), 3, value_size=200
        )
        assert producer.flush(60) == 0, codec
        sequence += 600
    # Transactions: committed ones and aborted ones, control batches (markers) included.
    transactional = Producer(
        {
            "bootstrap.servers": cluster.bootstrap(),
            "transactional.id": "fetchers-txn",
            "transaction.timeout.ms": 60_000,
            "compression.type": "lz4",
        }
    )
    transactional.init_transactions(60)
    aborted = Deliveries()
    for commit in (True, False, True, False, True):
        transactional.begin_transaction()
        target = deliveries if commit else aborted
        produce_sequenced(
            transactional, target, "mixed", range(sequence, sequence + 150), 3, value_size=80
        )
        sequence += 150
        if commit:
            transactional.commit_transaction(60)
        else:
            transactional.abort_transaction(60)
    assert_replicas_identical(cluster, "mixed", 3)
    # read_committed readers see exactly the committed records, wherever they are led.
    consumed = consume_all(cluster.bootstrap(), "mixed", 3)
    assert_delivered(deliveries, consumed, len(deliveries.acknowledged))
    assert not {r.key for r in consumed} & {r.key for r in aborted.acknowledged}


def test_a_leader_killed_mid_load_leaves_identical_replicas(
    fetchers_cluster: ReplicatedCluster,
) -> None:
    """SIGKILL of a leader while acks=all batches stream to it: the survivors elect a new
    leader, the victim comes back, truncates what it had alone, and every replica ends
    up byte-identical, with every acknowledged record exactly once."""
    cluster = fetchers_cluster
    cluster.create_topic("killed", 3)
    victim = cluster.state("killed", 0).leader
    old = cluster.state("killed", 0)
    deliveries = Deliveries()
    producer = acks_all_producer(cluster.bootstrap(), **{"compression.type": "snappy"})
    total, chunk, killed = 12_000, 500, False
    for start in range(0, total, chunk):
        produce_sequenced(
            producer, deliveries, "killed", range(start, start + chunk), 3, value_size=300
        )
        producer.poll(0)
        if not killed and start >= total // 3:
            cluster.kill(victim)  # with produce requests and replica fetches in flight
            killed = True
    assert producer.flush(120) == 0
    cluster.wait_new_leader("killed", 0, old)
    cluster.restart(victim)
    cluster.wait_isr("killed", range(3), set(BROKER_IDS))
    assert_replicas_identical(cluster, "killed", 3)
    consumed = consume_all(cluster.bootstrap(), "killed", 3)
    assert_delivered(deliveries, consumed, total)
    assert {r.key for r in consumed} == {record_key(s) for s in range(total)}


def test_acks_all_produce_requests_are_pipelined_and_answered_in_order(
    fetchers_cluster: ReplicatedCluster,
) -> None:
    """While an acks=all Produce waits for a stalled follower, the leader appends the
    connection's next Produce requests (pipelining); the answers still come in request
    order, and a Metadata request between them is handled only after the answers before
    it, as Kafka handles every request of a connection."""
    cluster = fetchers_cluster
    controller = cluster.wait_controller()
    victim = next(i for i in BROKER_IDS if i != controller)  # a paused controller stalls all
    leader = next(i for i in BROKER_IDS if i != victim)
    other = next(i for i in BROKER_IDS if i not in (victim, leader))
    cluster.create_topic("pipelined", assignment=[[leader, other, victim]])
    requests = []
    for i in range(6):
        request = produce_request("pipelined", 0, b"value-%d" % i)
        request.acks = -1
        request.timeout_ms = 30_000
        requests.append(request)
    batch_size = len(requests[0].topic_data[0].partition_data[0].records)
    with paused(cluster.brokers[victim]), cluster.brokers[leader].wire(timeout=30) as wire:
        # Three: within produce.pipeline.max.requests (4 by default).
        frames = [wire.frame(0, 9, r) for r in requests[:3]]
        frames.append(wire.frame(3, 12, MetadataRequest(topics=None)))
        frames += [wire.frame(0, 9, r) for r in requests[3:]]
        wire.send(b"".join(frames))
        # The three batches before the Metadata request are appended while the first still
        # waits for the paused ISR member (it leaves the ISR after replica.lag.time.max.ms);
        # the Metadata request waits for their answers, the batches after it for its own.
        wait_until(
            lambda: partition_sizes(cluster.brokers[leader], "pipelined")[0] == 3 * batch_size,
            timeout=REPLICA_LAG_MS / 1000,
            what="three batches in the leader's log before the ISR shrinks",
        )
        assert not select.select([wire.sock], [], [], 0)[0], "answered before the ISR moved"
        answers = [wire.recv_frame() for _ in frames]
        assert partition_sizes(cluster.brokers[leader], "pipelined")[0] == 6 * batch_size
    kinds = [0] * 3 + [3] + [0] * 3
    offsets = []
    for correlation_id, (kind, payload) in enumerate(zip(kinds, answers, strict=True), 1):
        assert payload is not None, f"no answer {correlation_id}"
        header, body = decode_response(payload, kind, 9 if kind == 0 else 12)
        assert header.correlation_id == correlation_id  # request order
        if kind == 0:
            partition = body.responses[0].partition_responses[0]
            assert partition.error_code == 0, partition
            offsets.append(partition.base_offset)
    assert offsets == list(range(6))
    cluster.wait_isr("pipelined", [0], set(BROKER_IDS))
    assert metadata(cluster.brokers[leader], ["pipelined"]).topics[0].partitions[0].leader_id == (
        leader
    )
