"""pystream client parts that need no broker: murmur2, batch building and decoding,
assignors, the accumulator, config and version negotiation."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pystream._core import records as R
from pystream.client import _accumulator, _fast
from pystream.client.accumulator import NEED_METADATA, RecordAccumulator, RecordFuture
from pystream.client.assignors import (
    CooperativeStickyAssignor,
    MemberSubscription,
    RangeAssignor,
    RoundRobinAssignor,
    assignors_from_names,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from pystream.client.config import parse_bootstrap_servers
from pystream.client.errors import UnsupportedFeatureError
from pystream.client.partitioner import murmur2, partition_for_key, partitions_for_keys
from pystream.client.types import ConsumerRecord, TopicPartition
from pystream.client.versions import choose_version
from pystream.protocol.messages.consumer_protocol import ConsumerProtocolSubscription

TP = TopicPartition


def test_compiled_extensions_loaded() -> None:
    # The hot paths must be the Cython builds, not something else on the path.
    assert _fast.__file__.endswith((".so", ".pyd"))
    assert _accumulator.__file__.endswith((".so", ".pyd"))


# ---------------------------------------------------------------- murmur2 / partitioning


def murmur2_reference(data: bytes) -> int:
    """Kafka's Utils.murmur2, transcribed from the Java source (32-bit signed arithmetic)."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = data[length // 4 * 4 :]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h >= 1 << 31 else h


# org.apache.kafka.common.utils.UtilsTest.testMurmur2
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    bytes([ord("a"), ord("b"), ord("c")]): 479470107,
}


@pytest.mark.parametrize(("data", "expected"), sorted(JAVA_VECTORS.items()))
def test_murmur2_matches_java_vectors(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected
    assert murmur2_reference(data) == expected


def test_murmur2_matches_reference_on_random_keys() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
        assert murmur2(data) == murmur2_reference(data)


def test_partition_is_positive_murmur2_modulo() -> None:
    rng = random.Random(3)
    keys = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 20))) for _ in range(500)]
    for n in (1, 3, 7, 64):
        expected = [(murmur2_reference(k) & 0x7FFFFFFF) % n for k in keys]
        assert [partition_for_key(k, n) for k in keys] == expected
        assert partitions_for_keys(keys, n).tolist() == expected
    # bytearray and memoryview keys hash like bytes
    assert partition_for_key(bytearray(b"foobar"), 7) == partition_for_key(b"foobar", 7)
    assert partitions_for_keys([None, b"x"], 5).tolist()[0] == -1
    with pytest.raises(ValueError, match="positive"):
        partition_for_key(b"k", 0)


def test_fixed_key_partitions_match_list_partitions() -> None:
    keys = np.frombuffer(b"".join(b"key%05d" % i for i in range(300)), dtype=np.uint8)
    as_list = [bytes(keys[i * 8 : i * 8 + 8]) for i in range(300)]
    got = _fast.partitions_for_fixed_keys(keys, 8, 300, 12)
    assert got.tolist() == partitions_for_keys(as_list, 12).tolist()


# ---------------------------------------------------------------- building batches


def test_build_fixed_batch_is_a_valid_producer_batch() -> None:
    rows = np.arange(50 * 16, dtype=np.uint8).reshape(50, 16)
    data = _fast.build_fixed_batch(rows.reshape(-1), 16, 10, 20, None, 1_700_000_000_000)
    info = R.validate_produce_records(bytearray(data))
    assert (info.batch_count, info.record_count) == (1, 20)
    records = list(R.iter_records(data))
    assert [r.value for r in records] == [bytes(rows[i]) for i in range(10, 30)]
    assert all(r.key is None and r.timestamp == 1_700_000_000_000 for r in records)
    assert [r.offset for r in records] == list(range(20))


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4])
def test_build_fixed_batch_with_rows_keys_and_compression(codec: int) -> None:
    values = np.frombuffer(b"".join(b"value-%04d" % i for i in range(100)), dtype=np.uint8)
    keys = np.frombuffer(b"".join(b"k%03d" % i for i in range(100)), dtype=np.uint8)
    picked = np.array([5, 17, 99, 0], dtype=np.int64)
    data = _fast.build_fixed_batch(
        values, 10, 0, 4, picked, 123, key_data=keys, key_size=4, compression=codec
    )
    R.validate_produce_records(bytearray(data))
    assert R.read_batch_header(data).compression == codec
    got = [(r.key, r.value) for r in R.iter_records(data)]
    assert got == [(b"k%03d" % i, b"value-%04d" % i) for i in (5, 17, 99, 0)]


def test_build_fixed_batch_rejects_rows_outside_the_buffer() -> None:
    data = np.zeros(40, dtype=np.uint8)
    with pytest.raises(ValueError, match="outside"):
        _fast.build_fixed_batch(data, 10, 2, 3)
    with pytest.raises(ValueError, match="outside"):
        _fast.build_fixed_batch(data, 10, 0, 1, np.array([4], dtype=np.int64))
    with pytest.raises(ValueError, match="at least one record"):
        _fast.build_fixed_batch(data, 10, 0, 0)


def test_chunk_bounds_respects_max_bytes() -> None:
    values = [b"x" * 100] * 1000
    bounds = _fast.chunk_bounds(values, None, 10_000)
    assert bounds[-1] == 1000
    start = 0
    for end in bounds:
        batch = R.build_batch_from_values(values[start:end], timestamp=0)
        assert len(batch) <= 10_000
        start = end
    # one record larger than the limit gets a batch of its own
    assert _fast.chunk_bounds([b"a", b"b" * 500, b"c"], None, 200) == [1, 2, 3]


# ---------------------------------------------------------------- decoding


def _batches(*parts: bytes) -> bytes:
    return b"".join(parts)


def test_decode_records_matches_core_reader() -> None:
    batch = R.build_batch(
        [
            (1000 + i, b"k%d" % i if i % 2 else None, b"v%d" % i, [("h", b"x")] if i == 3 else [])
            for i in range(10)
        ],
        compression=3,
        base_offset=40,
    )
    records, next_offset, batches = _fast.decode_records(batch, "t", 2, 40)
    assert (next_offset, batches) == (50, 1)
    expected = list(R.iter_records(batch))
    assert [(r.offset, r.timestamp, r.key, r.value) for r in records] == [
        (e.offset, e.timestamp, e.key, e.value) for e in expected
    ]
    assert records[3].headers == [("h", b"x")] and records[0].headers == ()
    assert all(r.topic == "t" and r.partition == 2 for r in records)


def test_decode_records_starts_at_the_fetch_offset_and_stops_at_a_partial_batch() -> None:
    first = R.build_batch_from_values([b"a", b"b", b"c"], timestamp=5, base_offset=0)
    second = R.build_batch_from_values([b"d"], timestamp=5, base_offset=3)
    data = first + second[: len(second) - 3]
    records, next_offset, batches = _fast.decode_records(data, "t", 0, 1)
    assert [r.value for r in records] == [b"b", b"c"]
    assert (next_offset, batches) == (3, 1)
    assert _fast.decode_records(second[:30], "t", 0, 3) == ([], 3, 0)


def test_decode_records_rejects_a_bad_crc() -> None:
    data = bytearray(R.build_batch_from_values([b"abc"], timestamp=5))
    data[-1] ^= 0xFF
    with pytest.raises(Exception, match="invalid"):
        _fast.decode_records(bytes(data), "t", 0, 0)


def test_decode_records_skips_control_and_aborted_transactions() -> None:
    pid_a, pid_b = 7, 8
    committed = R.build_batch_from_values(
        [b"a1", b"a2"],
        timestamp=1,
        base_offset=0,
        producer_id=pid_a,
        producer_epoch=0,
        base_sequence=0,
        is_transactional=True,
    )
    aborted = R.build_batch_from_values(
        [b"b1"],
        timestamp=1,
        base_offset=2,
        producer_id=pid_b,
        producer_epoch=0,
        base_sequence=0,
        is_transactional=True,
    )
    commit_a = R.build_control_batch(True, pid_a, 0, 1, base_offset=3)
    abort_b = R.build_control_batch(False, pid_b, 0, 1, base_offset=4)
    plain = R.build_batch_from_values([b"p"], timestamp=1, base_offset=5)
    data = _batches(committed, aborted, commit_a, abort_b, plain)

    uncommitted, next_offset, _ = _fast.decode_records(data, "t", 0, 0)
    assert [r.value for r in uncommitted] == [b"a1", b"a2", b"b1", b"p"]
    assert next_offset == 6

    committed_only, next_offset, _ = _fast.decode_records(data, "t", 0, 0, aborted=[(pid_b, 2)])
    assert [r.value for r in committed_only] == [b"a1", b"a2", b"p"]
    assert next_offset == 6


def test_consumer_record_is_a_value() -> None:
    a = ConsumerRecord("t", 1, 5, 99, b"k", b"v", [("h", b"1")])
    assert a == ConsumerRecord("t", 1, 5, 99, b"k", b"v", [("h", b"1")])
    assert a != ConsumerRecord("t", 1, 6, 99, b"k", b"v", [("h", b"1")])
    assert (a.topic, a.partition, a.offset, a.timestamp, a.key, a.value) == (
        "t",
        1,
        5,
        99,
        b"k",
        b"v",
    )
    assert "offset=5" in repr(a)


# ---------------------------------------------------------------- accumulator


def _make_acc(**overrides: float) -> RecordAccumulator:
    settings = dict(
        batch_size=1000, linger_ms=5, codec=0, buffer_memory=1 << 20, delivery_timeout_ms=60_000
    )
    settings.update(overrides)
    acc = RecordAccumulator(**settings)  # type: ignore[arg-type]
    acc.set_topic("t", 4, [0, 1, 2, 3])
    return acc


def test_accumulator_keyed_records_follow_murmur2() -> None:
    acc = _make_acc()
    futures = [acc.try_send("t", b"v", b"key%d" % i, None, None, 100) for i in range(40)]
    assert all(isinstance(f, RecordFuture) for f in futures)
    assert [f.batch.partition for f in futures] == [
        partition_for_key(b"key%d" % i, 4) for i in range(40)
    ]
    assert acc.try_send("unknown", b"v", None, None, None, None) == NEED_METADATA


def test_accumulator_sticky_partition_fills_a_batch_then_moves_on() -> None:
    acc = _make_acc(batch_size=61 + 10 * 30)
    partitions = [
        acc.try_send("t", b"x" * 10, None, None, None, 1).batch.partition for _ in range(60)
    ]
    runs = [partitions[0]]
    for p in partitions[1:]:
        if p != runs[-1]:
            runs.append(p)
    # a run per full batch, each run a different partition from the one before
    assert 4 <= len(runs) <= 8
    assert all(a != b for a, b in zip(runs, runs[1:], strict=False))


def test_accumulator_batches_become_ready_when_full_or_lingered() -> None:
    acc = _make_acc(batch_size=61 + 25 * 10, linger_ms=1000)
    now = _accumulator_mod_now()
    acc.try_send("t", b"x" * 10, None, None, 0, 1)
    ready, next_at = acc.ready(now)
    assert ready == [] and next_at is not None and next_at > now
    futures = [acc.try_send("t", b"x" * 10, None, None, 0, 1) for _ in range(30)]
    first, last = futures[0].batch, futures[-1].batch
    ready, _ = acc.ready(now)
    assert ready == [("t", 0)]
    drained = []
    while acc.ready(now)[0]:
        drained += acc.drain([("t", 0)], 1 << 20, now)
    # full batches went at once; the open one lingers until linger_ms passed
    assert drained[0] is first and last not in drained and all(b.closed for b in drained)
    data = drained[0].build(0)
    assert [r.value for r in R.iter_records(data)] == [b"x" * 10] * first.record_count
    assert len(data) <= 61 + 25 * 10
    assert acc.ready(now + 2)[0] == [("t", 0)]
    assert acc.drain([("t", 0)], 1 << 20, now + 2) == [last]


def _accumulator_mod_now() -> float:
    return _accumulator.monotonic()  # the clock batches are stamped with


def test_record_future_metadata_and_headers() -> None:
    acc = _make_acc()
    f1 = acc.try_send("t", b"a", None, [("h1", b"x"), ("h2", None)], 2, 111)
    f2 = acc.try_send("t", b"b", b"k", None, 2, 222)
    assert f1.batch is f2.batch and (f1.index, f2.index) == (0, 1)
    batch = acc.drain([("t", 2)], 1 << 20, _accumulator_mod_now() + 1)[0]
    records = list(R.iter_records(batch.build(4)))
    assert records[0].headers == [("h1", b"x"), ("h2", None)]
    assert (records[1].key, records[1].timestamp) == (b"k", 222)
    acc.complete(batch, 500, -1)
    assert f2.result(0) == ("t", 2, 501, 222)
    assert f1.done() and f1.exception(0) is None


def test_send_rejects_a_partition_the_topic_does_not_have() -> None:
    acc = _make_acc()
    with pytest.raises(Exception, match="partitions 0..3"):
        acc.try_send("t", b"v", None, None, 9, None)


# ---------------------------------------------------------------- assignors


def _member(
    mid: str,
    topics: list[str],
    owned: list[TopicPartition] = (),
    gen: int = -1,
    instance: str | None = None,
) -> MemberSubscription:
    return MemberSubscription(mid, topics, list(owned), gen, instance)


def test_range_assignor_matches_java() -> None:
    members = [_member("c1", ["a", "b"]), _member("c0", ["a", "b"]), _member("c2", ["b"])]
    out = RangeAssignor().assign(members, {"a": 3, "b": 4})
    assert out == {
        "c0": [TP("a", 0), TP("a", 1), TP("b", 0), TP("b", 1)],
        "c1": [TP("a", 2), TP("b", 2)],
        "c2": [TP("b", 3)],
    }


def test_range_assignor_orders_static_members_first() -> None:
    members = [_member("a", ["t"]), _member("z", ["t"], instance="i1")]
    out = RangeAssignor().assign(members, {"t": 3})
    assert out == {"z": [TP("t", 0), TP("t", 1)], "a": [TP("t", 2)]}


def test_roundrobin_assignor_matches_java() -> None:
    members = [
        _member("c0", ["t0"]),
        _member("c1", ["t0", "t1"]),
        _member("c2", ["t0", "t1", "t2"]),
    ]
    out = RoundRobinAssignor().assign(members, {"t0": 1, "t1": 2, "t2": 3})
    # Java RoundRobinAssignorTest.testMultipleConsumersMixedTopics-style dealing
    assert out == {
        "c0": [TP("t0", 0)],
        "c1": [TP("t1", 0)],
        "c2": [TP("t1", 1), TP("t2", 0), TP("t2", 1), TP("t2", 2)],
    }


def _all(out: dict[str, list[TopicPartition]]) -> list[TopicPartition]:
    return sorted(tp for parts in out.values() for tp in parts)


def test_cooperative_sticky_balances_a_new_group() -> None:
    members = [_member(f"c{i}", ["t", "u"]) for i in range(3)]
    out = CooperativeStickyAssignor().assign(members, {"t": 4, "u": 3})
    assert _all(out) == [TP("t", p) for p in range(4)] + [TP("u", p) for p in range(3)]
    assert sorted(len(v) for v in out.values()) == [2, 2, 3]


def test_cooperative_sticky_keeps_owners_and_defers_moves() -> None:
    owned = [TP("t", p) for p in range(6)]
    first = [_member("c0", ["t"], owned, gen=1), _member("c1", ["t"])]
    out = CooperativeStickyAssignor().assign(first, {"t": 6})
    # c0 keeps three of its partitions; the three that will move are not given to
    # c1 yet: c0 must revoke them first (KIP-429).
    assert len(out["c0"]) == 3 and set(out["c0"]) <= set(owned)
    assert out["c1"] == []
    second = [_member("c0", ["t"], out["c0"], gen=2), _member("c1", ["t"], [], gen=2)]
    out2 = CooperativeStickyAssignor().assign(second, {"t": 6})
    assert out2["c0"] == out["c0"]
    assert sorted(out2["c1"]) == sorted(set(owned) - set(out["c0"]))


def test_cooperative_sticky_higher_generation_wins_a_double_claim() -> None:
    members = [
        _member("c0", ["t"], [TP("t", 0), TP("t", 1)], gen=5),
        _member("c1", ["t"], [TP("t", 1)], gen=4),
    ]
    out = CooperativeStickyAssignor().assign(members, {"t": 2})
    assert out["c0"] == [TP("t", 0), TP("t", 1)] or TP("t", 1) not in out["c1"]
    assert TP("t", 1) not in out["c1"]


def test_cooperative_sticky_with_different_subscriptions() -> None:
    members = [_member("c0", ["a"]), _member("c1", ["a", "b"]), _member("c2", ["b"])]
    out = CooperativeStickyAssignor().assign(members, {"a": 4, "b": 4})
    assert _all(out) == [TP("a", p) for p in range(4)] + [TP("b", p) for p in range(4)]
    assert all(tp.topic == "a" for tp in out["c0"])
    assert all(tp.topic == "b" for tp in out["c2"])
    assert max(len(v) for v in out.values()) - min(len(v) for v in out.values()) <= 1


def test_subscription_and_assignment_encodings_round_trip() -> None:
    data = encode_subscription(["b", "a"], [TP("a", 1), TP("a", 0)], 7, b"ud")
    sub = decode_subscription("m1", data)
    assert (sub.topics, sub.owned_partitions, sub.generation, sub.user_data) == (
        ["a", "b"],
        [TP("a", 0), TP("a", 1)],
        7,
        b"ud",
    )
    assert data[:2] == b"\x00\x03"  # ConsumerProtocolSubscription v3
    assert decode_assignment(encode_assignment([TP("x", 2), TP("w", 0)])) == [
        TP("w", 0),
        TP("x", 2),
    ]
    assert decode_assignment(b"") == []


def test_decode_subscription_v0_and_generation_in_user_data() -> None:
    v0 = ConsumerProtocolSubscription(topics=["t"], user_data=None).encode_versioned(0)
    assert decode_subscription("m", v0).topics == ["t"]
    v1 = ConsumerProtocolSubscription(
        topics=["t"],
        user_data=(9).to_bytes(4, "big"),
        owned_partitions=[ConsumerProtocolSubscription.TopicPartition(topic="t", partitions=[0])],
    ).encode_versioned(1)
    sub = decode_subscription("m", v1)
    assert (sub.generation, sub.owned_partitions) == (9, [TP("t", 0)])


def test_assignor_names() -> None:
    names = [a.name for a in assignors_from_names("range, roundrobin,cooperative-sticky")]
    assert names == ["range", "roundrobin", "cooperative-sticky"]
    java = "org.apache.kafka.clients.consumer.CooperativeStickyAssignor"
    assert assignors_from_names([java])[0].name == "cooperative-sticky"
    with pytest.raises(ValueError, match="unknown partition assignment strategy"):
        assignors_from_names("sticky-ish")


# ---------------------------------------------------------------- config and versions


def test_parse_bootstrap_servers() -> None:
    assert parse_bootstrap_servers("a:1, b:2,[::1]:3,c") == [
        ("a", 1),
        ("b", 2),
        ("::1", 3),
        ("c", 9092),
    ]
    assert parse_bootstrap_servers(["PLAINTEXT://h:9093"]) == [("h", 9093)]
    with pytest.raises(ValueError, match="empty"):
        parse_bootstrap_servers(" , ")
    with pytest.raises(ValueError, match="not a number"):
        parse_bootstrap_servers("h:x")


def test_choose_version_picks_the_common_maximum() -> None:
    assert choose_version(1, {1: (4, 16)}) == 12
    assert choose_version(0, {0: (3, 7)}) == 7


def test_choose_version_explains_a_missing_api() -> None:
    with pytest.raises(UnsupportedFeatureError, match="JoinGroup.*consumer groups.*no version"):
        choose_version(11, {0: (3, 10)})
    with pytest.raises(UnsupportedFeatureError, match="Fetch.*versions 13-17"):
        choose_version(1, {1: (13, 17)})
