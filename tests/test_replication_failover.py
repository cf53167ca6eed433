"""Failover with replication: SIGKILLed leaders and controllers, RF=3, min.insync.replicas=2.

Idempotent acks=all producers (confluent-kafka) write while leaders die; at the end
a consumer reads everything back and :mod:`replication_checker` compares it with
the delivery reports: no acknowledged record lost, none stored twice, none out of
production order, and each where its acknowledgement said.  Replica logs are
compared batch for batch on disk once the brokers are back: a returning leader
truncates what it alone had (KIP-101) and then holds exactly the new leader's log.
"""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from broker_process import fetch_session_gauges, paused  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from replication_checker import (  # noqa: E402
    StoredRecord,
    check_delivery,
    log_batches,
    record_key,
    record_value,
)
from test_replication import (  # noqa: E402
    BROKER_IDS,
    NONE,
    Deliveries,
    ReplicatedCluster,
    acks_all_producer,
    assert_delivered,
    consume_all,
    list_offset,
    produce,
    produce_sequenced,
    replicated,  # noqa: F401 - fixture
)
from waiting import wait_until  # noqa: E402
from zookeeper import (  # noqa: E402
    kazoo_clients,  # noqa: F401 - fixture
    zk_connect,  # noqa: F401 - fixture
    zookeeper,  # noqa: F401 - fixture
)

PAYMENTS = 30_000  # records produced across a leader's SIGKILL
LEADER_KILLS = 10
MAX_OUTSTANDING = 2_000  # records queued but not yet reported, so that sends keep coming


def test_the_checker_reports_lost_duplicated_reordered_and_misplaced_records() -> None:
    acked = [StoredRecord(0, i, record_key(i), record_value(i)) for i in range(4)]
    assert check_delivery(acked, acked).ok
    consumed = [
        StoredRecord(0, 0, record_key(0), record_value(0)),
        StoredRecord(0, 1, record_key(2), record_value(2)),  # 2 before 1: reordered
        StoredRecord(0, 2, record_key(1), record_value(1)),
        StoredRecord(0, 3, record_key(0), record_value(0)),  # a second copy of 0
        StoredRecord(1, 0, record_key(9), record_value(9)),  # never acknowledged
    ]  # 3 is missing
    report = check_delivery(acked, consumed)
    assert not report.ok
    assert report.lost == [acked[3]]
    assert report.duplicated == [consumed[3]]
    assert report.reordered == [(consumed[1], consumed[2])]
    assert report.misplaced == [(acked[1], consumed[2]), (acked[2], consumed[1])]
    assert report.unacknowledged == [consumed[4]]


def reported(deliveries: Deliveries) -> int:
    """How many sends have been reported, acknowledged or failed."""
    return len(deliveries.acknowledged) + len(deliveries.failed)


def wait_for_acks(deliveries: Deliveries, count: int, timeout: float = 120) -> None:
    """Until ``count`` sends have been reported by another thread's polling."""
    wait_until(
        lambda: reported(deliveries) >= count, timeout=timeout, what=f"{count} delivery reports"
    )


def poll_until_reported(
    producer: Producer, deliveries: Deliveries, count: int, timeout: float = 120
) -> None:
    """Serve the producer's delivery reports (``poll``) until ``count`` have come."""
    deadline = time.monotonic() + timeout
    while reported(deliveries) < count:
        assert time.monotonic() < deadline, f"{reported(deliveries)} of {count} reports"
        producer.poll(0.05)


def test_sigkill_of_the_leader_during_an_idempotent_produce_loses_nothing(
    replicated: ReplicatedCluster,  # noqa: F811
) -> None:
    replicated.create_topic("payments", 3)
    old = replicated.state("payments", 0)
    deliveries = Deliveries()
    producer = acks_all_producer(replicated.bootstrap())
    chunk = 500
    killed = False
    for start in range(0, PAYMENTS, chunk):
        produce_sequenced(
            producer, deliveries, "payments", range(start, start + chunk), 3, value_size=100
        )
        # A bounded backlog: sends keep coming before, during and after the kill.
        poll_until_reported(producer, deliveries, start - MAX_OUTSTANDING)
        if not killed and len(deliveries.acknowledged) >= PAYMENTS // 3:
            replicated.kill(old.leader)  # with sends in flight to it
            killed = True
    assert killed
    assert producer.flush(120) == 0
    new = replicated.wait_new_leader("payments", 0, old)
    assert new.leader != old.leader and new.leader in new.isr

    # The victim comes back, drops whatever the new leader does not have, catches up.
    replicated.restart(old.leader)
    replicated.wait_isr("payments", range(3), set(BROKER_IDS))
    replicated.wait_converged("payments", range(3))
    consumed = consume_all(replicated.bootstrap(), "payments", 3)
    assert_delivered(deliveries, consumed, PAYMENTS)


def test_a_leader_cut_off_past_its_session_steps_down_and_rejoins_as_a_follower(
    replicated: ReplicatedCluster,  # noqa: F811
) -> None:
    """A leader frozen (SIGSTOP) longer than its ZooKeeper session loses its registration:
    another ISR member is elected and takes the writes.  When it wakes it re-registers,
    learns it is a follower from its watches, truncates to the new leader's epoch
    boundary and rejoins the ISR; nothing acknowledged is lost or duplicated."""
    replicated.create_topic("cutoff", 1)
    old = replicated.state("cutoff", 0)
    deliveries = Deliveries()
    producer = acks_all_producer(replicated.bootstrap())
    produce_sequenced(producer, deliveries, "cutoff", range(0, 1_000))
    assert producer.flush(60) == 0
    with paused(replicated.brokers[old.leader]):
        new = replicated.wait_new_leader("cutoff", 0, old)
        assert old.leader not in new.isr  # the frozen broker left the ISR with its session
        produce_sequenced(producer, deliveries, "cutoff", range(1_000, 2_000))
        assert producer.flush(60) == 0
    replicated.wait_isr("cutoff", [0], set(BROKER_IDS))
    assert replicated.state("cutoff", 0).leader == new.leader  # it came back as a follower
    replicated.wait_converged("cutoff", [0])
    consumed = consume_all(replicated.bootstrap(), "cutoff", 1)
    assert_delivered(deliveries, consumed, 2_000)


def test_a_committed_transaction_survives_a_sigkill_of_its_partition_leader(
    replicated: ReplicatedCluster,  # noqa: F811
) -> None:
    """Markers are on every ISR member before a transaction completes (Kafka writes them
    with acks=all): a leader SIGKILLed right after the commits leaves its successor with
    every marker, so read_committed readers are not held at a last stable offset for
    good, and they see each committed record once."""
    replicated.create_topic("txn-out", 1)
    old = replicated.state("txn-out", 0)
    producer = Producer(
        {
            "bootstrap.servers": replicated.bootstrap(),
            "transactional.id": "failover-txn",
            "transaction.timeout.ms": 60_000,
        }
    )
    producer.init_transactions(60)
    deliveries = Deliveries()
    for transaction in range(3):
        producer.begin_transaction()
        produce_sequenced(
            producer, deliveries, "txn-out", range(transaction * 100, (transaction + 1) * 100)
        )
        producer.commit_transaction(60)
    replicated.kill(old.leader)  # at once: the last markers were only just written
    new = replicated.wait_new_leader("txn-out", 0, old)
    replicated.restart(old.leader)
    # Every transaction ends on the new leader: its last stable offset reaches its high
    # watermark (a marker lost with the old leader would hold it back for good).
    leader = replicated.brokers[new.leader]
    wait_until(
        lambda: (
            list_offset(leader, "txn-out", 0, isolation_level=1)
            == list_offset(leader, "txn-out", 0)
            == (NONE, 303)
        ),
        timeout=60,
        what="the last stable offset of txn-out at its high watermark (300 records, 3 markers)",
    )
    consumed = consume_all(replicated.bootstrap(), "txn-out", 1)  # read_committed
    assert_delivered(deliveries, consumed, 300)


def test_double_failover_leaves_every_follower_log_a_prefix_of_the_leaders(
    replicated: ReplicatedCluster,  # noqa: F811
) -> None:
    """KIP-101: a leader that dies with records no follower has must drop them when it
    returns, whatever its high watermark said, and leaders elected later hold every
    acknowledged record."""
    replicated.create_topic("ledger", 1)
    first = replicated.state("ledger", 0)
    a = first.leader
    deliveries = Deliveries()
    producer = acks_all_producer(replicated.bootstrap())
    produce_sequenced(producer, deliveries, "ledger", range(0, 100))
    assert producer.flush(60) == 0

    # Records the followers (mostly) miss: acks=1, one per request, while they are paused.
    # A fetch the leader had parked is answered by the first append, and that answer waits
    # in the paused follower's socket: the first record or so may reach it all the same.
    followers = [replicated.brokers[i] for i in BROKER_IDS if i != a]
    divergent = [record_value(s) for s in range(1000, 1020)]
    with paused(followers[0]), paused(followers[1]):
        with replicated.brokers[a].wire() as wire:
            for value in divergent:
                assert produce(wire, "ledger", 0, value).error_code == NONE
        replicated.kill(a)
    a_log = replicated.brokers[a].log_dir / "ledger-0"
    assert log_batches(a_log)[-1].last_offset == 100 + len(divergent) - 1

    second = replicated.wait_new_leader("ledger", 0, first)
    x = second.leader
    (y,) = set(BROKER_IDS) - {a, x}
    produce_sequenced(producer, deliveries, "ledger", range(100, 200))
    assert producer.flush(60) == 0

    replicated.kill(x)  # the second leader dies too: y, the last of the ISR, takes over
    third = replicated.wait_new_leader("ledger", 0, second)
    assert third.leader == y
    replicated.restart(a)  # a truncates its divergent tail, then follows y
    replicated.wait_isr("ledger", [0], {a, y})
    produce_sequenced(producer, deliveries, "ledger", range(200, 300))
    assert producer.flush(60) == 0

    replicated.kill(y)  # now a, back for a while, must lead with every acknowledged record
    fourth = replicated.wait_new_leader("ledger", 0, third)
    assert fourth.leader == a
    replicated.restart(x)
    replicated.restart(y)
    replicated.wait_isr("ledger", [0], set(BROKER_IDS))
    produce_sequenced(producer, deliveries, "ledger", range(300, 400))
    assert producer.flush(60) == 0

    logs = replicated.wait_converged("ledger", [0])  # equal on all three, HW at the end
    epochs = [batch.leader_epoch for batch in logs[0]]
    assert epochs == sorted(epochs) and epochs[0] == first.leader_epoch
    now = replicated.state("ledger", 0)
    assert now.leader == a and epochs[-1] == now.leader_epoch
    # What survives of the divergent records is what a follower had: a prefix of them,
    # right after the first records; a's copies of the rest were truncated.
    consumed = consume_all(replicated.bootstrap(), "ledger", 1)
    survivors = [r for r in consumed if r.key is None]
    assert [(r.offset, r.value) for r in survivors] == [
        (100 + i, value) for i, value in enumerate(divergent[: len(survivors)])
    ]
    assert len(survivors) < len(divergent), "the followers had every record: nothing diverged"
    assert log_batches(a_log) == logs[0]
    assert_delivered(deliveries, [r for r in consumed if r.key is not None], 400)
    # After three leader changes the followers fetch from a through sessions again (a
    # restarted leader knows no session: its followers started new ones).
    assert fetch_session_gauges(replicated.brokers[a])[0] >= 2


def test_ten_leader_kills_under_idempotent_load(
    replicated: ReplicatedCluster,  # noqa: F811
) -> None:
    replicated.create_topic("churn", 1)
    deliveries = Deliveries()
    producer = acks_all_producer(replicated.bootstrap())
    sent = [0]
    stop = threading.Event()

    def keep_producing() -> None:
        deadline = time.monotonic() + 600  # bounded even if the main thread hangs
        while not stop.is_set() and time.monotonic() < deadline and sent[0] < 500_000:
            if sent[0] - reported(deliveries) < MAX_OUTSTANDING:
                produce_sequenced(producer, deliveries, "churn", range(sent[0], sent[0] + 100))
                sent[0] += 100
            producer.poll(0.02)

    thread = threading.Thread(target=keep_producing, name="churn-producer", daemon=True)
    thread.start()
    try:
        state = replicated.state("churn", 0)
        for _ in range(LEADER_KILLS):
            # Records flow before each kill (acks=all with the whole ISR back).
            wait_for_acks(deliveries, len(deliveries.acknowledged) + 500)
            replicated.kill(state.leader)
            new = replicated.wait_new_leader("churn", 0, state)
            replicated.restart(state.leader)
            replicated.wait_isr("churn", [0], set(BROKER_IDS))
            state = replicated.state("churn", 0)
            assert state.leader == new.leader
        wait_for_acks(deliveries, len(deliveries.acknowledged) + 500)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert producer.flush(120) == 0
    replicated.wait_converged("churn", [0])
    consumed = consume_all(replicated.bootstrap(), "churn", 1)
    assert_delivered(deliveries, consumed, sent[0])


def test_sigkill_of_the_controller_elects_another_and_partitions_stay_available(
    replicated: ReplicatedCluster,  # noqa: F811
) -> None:
    replicated.create_topic("steady", 3)
    controller = replicated.wait_controller()
    before = {p: replicated.state("steady", p) for p in range(3)}
    replicated.kill(controller)
    elected = replicated.wait_controller(other_than=controller)
    survivors = set(BROKER_IDS) - {controller}
    assert elected in survivors
    for p, old in before.items():
        if old.leader == controller:
            replicated.wait_new_leader("steady", p, old)
    replicated.wait_isr("steady", range(3), survivors)
    deliveries = Deliveries()
    producer = acks_all_producer(replicated.bootstrap())
    produce_sequenced(producer, deliveries, "steady", range(3000), 3)
    assert producer.flush(60) == 0
    consumed = consume_all(replicated.bootstrap(), "steady", 3)
    assert_delivered(deliveries, consumed, 3000)
    # The old controller returns as a follower and catches up.
    replicated.restart(controller)
    replicated.wait_isr("steady", range(3), set(BROKER_IDS))
    replicated.wait_converged("steady", range(3))
