"""Generated message codecs: round trips for every message and version, golden
bytes from real clients and from kafka-python's independent encoder, registry facts."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_samples import cases, message_classes, sample, strategy

from pystream.errors import UnsupportedVersionError
from pystream.protocol import (
    API_SPECS,
    FrameDecoder,
    Reader,
    RequestHeader,
    decode_request,
    decode_response,
    encode_request_frame,
    encode_response_frame,
)
from pystream.protocol.codec import ZERO_UUID
from pystream.protocol.messages import DATA_SCHEMAS, register_fast_codec
from pystream.protocol.messages.api_versions import ApiVersionsRequest, ApiVersionsResponse
from pystream.protocol.messages.consumer_protocol import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
)
from pystream.protocol.messages.create_topics import CreateTopicsRequest
from pystream.protocol.messages.fetch import FetchRequest, FetchResponse
from pystream.protocol.messages.internal import OffsetCommitKey, OffsetCommitValue
from pystream.protocol.messages.join_group import JoinGroupResponse
from pystream.protocol.messages.metadata import MetadataRequest, MetadataResponse
from pystream.protocol.messages.produce import ProduceRequest, ProduceResponse

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "kafka-protocol"
GOLDEN = Path(__file__).parent / "golden"

kp_protocol = pytest.importorskip("kafka.protocol")


def _id(case: tuple[type, int]) -> str:
    return f"{case[0].__name__}-v{case[1]}"


# ---------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("case", cases(), ids=_id)
def test_roundtrip_every_field_set(case):
    cls, version = case
    for nulls in (False, True):
        msg = sample(cls, cls, version, nulls=nulls)
        data = msg.encode(version)
        decoded = cls.decode(data, version)
        assert decoded == msg
        assert decoded.encode(version) == data


@pytest.mark.parametrize("cls", message_classes(), ids=lambda c: c.__name__)
def test_roundtrip_hypothesis(cls):
    versions = cls.versions()

    @settings(
        max_examples=max(10, 2 * len(versions)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def check(data):
        version = data.draw(st.sampled_from(versions), label="version")
        msg = data.draw(strategy(cls, cls, version), label="message")
        assert cls.decode(msg.encode(version), version) == msg

    check()


def test_every_api_has_every_valid_version():
    for spec in API_SPECS.values():
        expected = list(range(spec.valid_versions.lo, spec.valid_versions.hi + 1))
        assert spec.request.versions() == expected, spec.name
        assert spec.response.versions() == expected, spec.name


def test_unknown_version_is_unsupported():
    with pytest.raises(UnsupportedVersionError):
        ProduceRequest().encode(12)
    with pytest.raises(UnsupportedVersionError):
        ProduceRequest.decode(b"", 99)


def test_absent_fields_decode_to_defaults():
    # v0 has no TransactionalId; FetchResponse v11 has no tagged CurrentLeader
    req = ProduceRequest(transactional_id="tx", acks=1, timeout_ms=5)
    assert ProduceRequest.decode(req.encode(0), 0).transactional_id is None
    part = FetchResponse.PartitionData(current_leader=FetchResponse.LeaderIdAndEpoch(leader_id=3))
    resp = FetchResponse(responses=[FetchResponse.FetchableTopicResponse(partitions=[part])])
    got = FetchResponse.decode(resp.encode(11), 11).responses[0].partitions[0]
    assert got.current_leader == FetchResponse.LeaderIdAndEpoch(leader_id=-1, leader_epoch=-1)
    assert FetchResponse.decode(resp.encode(12), 12).responses[0].partitions[0] == part


def test_tagged_fields_written_only_when_not_default():
    plain = ApiVersionsResponse(api_keys=[])
    assert plain.encode(3) == bytes.fromhex("0000010000000000")
    tagged = ApiVersionsResponse(api_keys=[], finalized_features_epoch=7, zk_migration_ready=True)
    data = tagged.encode(3)
    # count 2; tag 1 size 8 int64 7; tag 3 size 1 bool
    assert data.endswith(bytes.fromhex("0201080000000000000007030101"))
    assert ApiVersionsResponse.decode(data, 3) == tagged


def test_records_decode_as_zero_copy_slices():
    batch = b"\x00" * 61
    req = ProduceRequest(
        acks=1,
        topic_data=[
            ProduceRequest.TopicProduceData(
                name="t",
                partition_data=[ProduceRequest.PartitionProduceData(index=0, records=batch)],
            )
        ],
    )
    for version in (3, 9):
        frame = req.encode(version)
        records = ProduceRequest.decode(frame, version).topic_data[0].partition_data[0].records
        assert isinstance(records, memoryview)
        assert records.obj is frame  # a view of the request bytes, not a copy
        assert records == batch


def test_register_fast_codec_overrides_decode_and_encode():
    original_read = dict(ApiVersionsRequest._READERS)
    original_write = dict(ApiVersionsRequest._WRITERS)
    calls = []

    def read(reader):
        calls.append("read")
        return original_read[3](reader)

    def write(writer, obj):
        calls.append("write")
        original_write[3](writer, obj)

    try:
        register_fast_codec(ApiVersionsRequest, [3], read=read, write=write)
        msg = ApiVersionsRequest(client_software_name="a", client_software_version="1")
        assert ApiVersionsRequest.decode(msg.encode(3), 3) == msg
        assert calls == ["write", "read"]
        msg.encode(2)
        assert calls == ["write", "read"]  # other versions untouched
        with pytest.raises(ValueError):
            register_fast_codec(ApiVersionsRequest, [9], read=read)
    finally:
        ApiVersionsRequest._READERS.update(original_read)
        ApiVersionsRequest._WRITERS.update(original_write)


# ---------------------------------------------------------------------------
# registry facts


def test_registry_facts_from_the_spec():
    produce, fetch, meta, av = API_SPECS[0], API_SPECS[1], API_SPECS[3], API_SPECS[18]
    assert (produce.name, produce.request, produce.response) == (
        "Produce",
        ProduceRequest,
        ProduceResponse,
    )
    assert (produce.valid_versions.lo, produce.valid_versions.hi) == (0, 11)
    assert produce.flexible_versions.lo == 9
    assert (fetch.valid_versions.hi, fetch.flexible_versions.lo) == (17, 12)
    assert (meta.valid_versions.hi, meta.flexible_versions.lo) == (12, 9)
    assert (av.valid_versions.hi, av.flexible_versions.lo) == (4, 3)
    assert API_SPECS[17].flexible_versions is None  # SaslHandshake: never flexible
    assert all(spec.api_key == key for key, spec in API_SPECS.items())
    assert all(spec.supported_versions == spec.valid_versions for spec in API_SPECS.values())


def test_registry_covers_every_version_clients_use():
    # min-apiversions.json: the advertisement every client was verified with
    minimum = json.loads((SHARED / "min-apiversions.json").read_text()) if SHARED.exists() else {}
    minimum = {int(k): v for k, v in minimum.items() if not k.startswith("_")}
    # CLIENTS.md table maxima (3.9 spec): Produce 10, Fetch 16, Metadata 12, ApiVersions 4 ...
    used = {
        0: [3, 7, 9, 10],
        1: [4, 11, 12, 16],
        2: [1, 2, 3, 7, 9],
        3: [0, 4, 5, 6, 12],
        8: [2, 3, 5, 7, 8, 9],
        9: [1, 3, 4, 8, 9],
        10: [0, 1, 2, 6],
        11: [0, 5, 7],
        14: [0, 3, 5],
        18: [0, 1, 2, 3, 4],
        19: [3, 4, 7],
        22: [0, 1, 4],
        36: [0, 1, 2],
    }
    for key, (lo, hi) in minimum.items():
        used.setdefault(key, []).extend([lo, hi])
    for key, versions in used.items():
        for v in versions:
            assert v in API_SPECS[key].valid_versions, (API_SPECS[key].name, v)


def test_data_schemas_and_internal_records_versioned():
    sub = ConsumerProtocolSubscription(
        topics=["a", "b"], user_data=None, generation_id=4, rack_id="r1"
    )
    data = sub.encode_versioned(3)
    assert data[:2] == b"\x00\x03"
    assert ConsumerProtocolSubscription.decode_versioned(data) == (3, sub)
    # a newer subscription version than we know is read as our newest (Kafka's rule)
    newer = b"\x00\x07" + data[2:] + b"future-fields"
    assert ConsumerProtocolSubscription.decode_versioned(newer, allow_newer=True) == (7, sub)
    with pytest.raises(UnsupportedVersionError):
        ConsumerProtocolSubscription.decode_versioned(newer)
    assign = ConsumerProtocolAssignment(
        assigned_partitions=[ConsumerProtocolAssignment.TopicPartition(topic="a", partitions=[0])]
    )
    assert ConsumerProtocolAssignment.decode_versioned(assign.encode_versioned(0)) == (0, assign)
    key = OffsetCommitKey(group="g", topic="t", partition=3)
    assert OffsetCommitKey.decode_versioned(key.encode_versioned(1)) == (1, key)
    value = OffsetCommitValue(offset=10, leader_epoch=2, metadata="", commit_timestamp=5)
    assert OffsetCommitValue.decode_versioned(value.encode_versioned(4)) == (4, value)
    assert set(DATA_SCHEMAS) >= {
        "GroupMetadataKey",
        "GroupMetadataValue",
        "TransactionLogKey",
        "TransactionLogValue",
        "ConsumerProtocolSubscription",
    }


def _generator(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protocol.py"), *args],
        capture_output=True,
        text=True,
    )


@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/kafka-protocol")
def test_generated_output_is_current():
    proc = _generator("--check")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/kafka-protocol")
def test_generator_check_detects_stale_output(tmp_path):
    assert _generator("--out", str(tmp_path)).returncode == 0
    assert _generator("--out", str(tmp_path), "--check").returncode == 0  # deterministic
    produce = tmp_path / "produce.py"
    produce.write_text(produce.read_text() + "# edited\n")
    (tmp_path / "leftover.py").write_text("")
    proc = _generator("--out", str(tmp_path), "--check")
    assert proc.returncode == 1
    assert "produce.py" in proc.stderr and "leftover.py" in proc.stderr


# ---------------------------------------------------------------------------
# golden bytes: ApiVersions captured from five real clients


def _vectors():
    path = SHARED / "test-vectors" / "apiversions.json"
    if not path.exists():
        pytest.skip("needs ../shared/kafka-protocol/test-vectors")
    return json.loads(path.read_text())


def test_apiversions_request_vectors_from_real_clients():
    for vec in _vectors()["requests"]:
        raw = bytes.fromhex(vec["hex"])
        (payload,) = FrameDecoder().feed(raw)
        header, body = decode_request(payload)
        assert header.request_api_version == vec["api_version"], vec["client"]
        assert header.correlation_id == vec["correlation_id"]
        assert header.client_id == vec["client_id"]
        assert body.client_software_name == vec["body"].get("ClientSoftwareName", "")
        assert body.client_software_version == vec["body"].get("ClientSoftwareVersion", "")
        assert encode_request_frame(header, body) == raw


def test_apiversions_response_vectors_clients_accepted():
    versions = {
        "unsupported_version_reply": 0,
        "v0_small": 0,
        "v1_small": 1,
        "v3_small": 3,
        "v3_full_kafka_3_9": 3,
    }
    for vec in _vectors()["responses"]:
        raw = bytes.fromhex(vec["hex"])
        version = versions[vec["name"]]
        header, body = decode_response(raw[4:], 18, version)
        assert header.correlation_id == vec["correlation_id"]
        if "api_keys" in vec:
            assert [[k.api_key, k.min_version, k.max_version] for k in body.api_keys] == vec[
                "api_keys"
            ]
        assert encode_response_frame(18, version, header.correlation_id, body) == raw
    unsupported = ApiVersionsResponse(
        error_code=35,
        api_keys=[ApiVersionsResponse.ApiVersion(api_key=18, min_version=0, max_version=4)],
    )
    assert (
        encode_response_frame(18, 0, 1, unsupported).hex()
        == "0000001000000001002300000001001200000004"
    )


def _golden(name: str):
    raw = bytes.fromhex("".join((GOLDEN / name).read_text().split()))
    (payload,) = FrameDecoder().feed(raw)
    header, body = decode_request(payload)
    assert encode_request_frame(header, body) == raw, name  # byte-exact re-encode
    return header, body


def test_golden_client_frames_all_decode_and_reencode():
    """Frames captured from real clients (tests/golden/*.hex, see README there)."""
    files = sorted(GOLDEN.glob("*.hex"))
    assert len(files) >= 8
    for path in files:
        header, _ = _golden(path.name)
        assert path.stem.endswith(f"-{header.request_api_key}-v{header.request_api_version}")
        assert header.client_id == "rdkafka"


def test_golden_librdkafka_flexible_requests():
    _, produce = _golden("librdkafka-2.16-produce-0-v10.hex")
    assert (produce.acks, produce.transactional_id) == (-1, None)
    batch = produce.topic_data[0].partition_data[0].records
    assert produce.topic_data[0].name == "golden"
    assert batch[16] == 2  # record batch magic v2, kept raw
    assert int.from_bytes(batch[43:51], "big") == 1000  # producer id from InitProducerId

    _, fetch = _golden("librdkafka-2.16-fetch-1-v16.hex")
    topic = fetch.topics[0]
    assert (topic.topic, topic.topic_id) == ("", UUID(int=0x1234))  # v13+: by topic id
    assert (topic.partitions[0].partition, topic.partitions[0].fetch_offset) == (0, 0)
    assert (fetch.max_wait_ms, fetch.isolation_level) == (500, 1)

    _, meta = _golden("librdkafka-2.16-metadata-3-v12.hex")
    assert [t.name for t in meta.topics] == ["golden"]
    _, offsets = _golden("librdkafka-2.16-list_offsets-2-v7.hex")
    assert offsets.topics[0].partitions[0].timestamp == -2  # earliest
    _, create = _golden("librdkafka-2.16-create_topics-19-v4.hex")
    assert (create.topics[0].name, create.topics[0].num_partitions) == ("golden-new", 3)
    assert [(c.name, c.value) for c in create.topics[0].configs] == [("cleanup.policy", "compact")]
    _, init = _golden("librdkafka-2.16-init_producer_id-22-v4.hex")
    assert (init.transactional_id, init.producer_id) == (None, -1)
    _, coordinator = _golden("librdkafka-2.16-find_coordinator-10-v2.hex")
    assert (coordinator.key, coordinator.key_type) == ("golden-group", 0)


# ---------------------------------------------------------------------------
# golden bytes: kafka-python's own encoder (its vendored Kafka 4.x schemas)


def _kp_records():
    from kafka.record.memory_records import MemoryRecordsBuilder

    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    builder.append(timestamp=1_700_000_000_000, key=b"k", value=b"v", headers=[])
    builder.close()
    return bytes(builder.buffer())


def _kp_frame(request, version, correlation_id=7):
    request.with_header(correlation_id=correlation_id, client_id="kp-golden")
    return bytes(request.encode(version=version, header=True, framed=True))


def _decode_frame(raw):
    (payload,) = FrameDecoder().feed(raw)
    header, body = decode_request(payload)
    assert header.correlation_id == 7 and header.client_id == "kp-golden"
    assert encode_request_frame(header, body) == raw  # byte-exact both ways
    return header, body


@pytest.mark.parametrize("version", [3, 7, 9, 10])
def test_kafka_python_produce_request(version):
    from kafka.protocol.producer import ProduceRequest as K

    records = _kp_records()
    topic = K.TopicProduceData(
        name="orders",
        partition_data=[
            K.TopicProduceData.PartitionProduceData(index=i, records=records) for i in range(3)
        ],
    )
    raw = _kp_frame(
        K[version](transactional_id="tx-1", acks=-1, timeout_ms=30000, topic_data=[topic]), version
    )
    header, body = _decode_frame(raw)
    assert (header.request_api_key, header.request_api_version) == (0, version)
    assert (body.transactional_id, body.acks, body.timeout_ms) == ("tx-1", -1, 30000)
    assert [p.index for p in body.topic_data[0].partition_data] == [0, 1, 2]
    assert body.topic_data[0].partition_data[2].records == records


@pytest.mark.parametrize("version", [4, 11, 12, 16])
def test_kafka_python_fetch_request(version):
    from kafka.protocol.consumer import FetchRequest as K

    tid = UUID("0123456789abcdef0123456789abcdef")
    part = K.FetchTopic.FetchPartition(
        partition=2,
        current_leader_epoch=5,
        fetch_offset=1234,
        last_fetched_epoch=-1,
        log_start_offset=-1,
        partition_max_bytes=1 << 20,
    )
    raw = _kp_frame(
        K[version](
            replica_id=-1,
            max_wait_ms=500,
            min_bytes=1,
            max_bytes=50 << 20,
            isolation_level=1,
            session_id=0,
            session_epoch=-1,
            rack_id="",
            topics=[K.FetchTopic(topic="orders", topic_id=tid, partitions=[part])],
            forgotten_topics_data=[],
        ),
        version,
    )
    header, body = _decode_frame(raw)
    assert (body.max_wait_ms, body.min_bytes) == (500, 1)
    topic = body.topics[0]
    assert topic.topic == ("orders" if version < 13 else "")
    assert topic.partitions[0].fetch_offset == 1234
    assert topic.partitions[0].partition == 2
    if version >= 9:
        assert topic.partitions[0].current_leader_epoch == 5
    if version >= 4:
        assert body.isolation_level == 1


@pytest.mark.parametrize("version", [0, 4, 9, 12])
def test_kafka_python_metadata_request(version):
    from kafka.protocol.metadata import MetadataRequest as K

    topics = [K.MetadataRequestTopic(topic_id=None, name=n) for n in ("a", "b")]
    raw = _kp_frame(
        K[version](
            topics=topics,
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False,
        ),
        version,
    )
    header, body = _decode_frame(raw)
    assert [t.name for t in body.topics] == ["a", "b"]
    assert all(t.topic_id == ZERO_UUID for t in body.topics)
    if version >= 4:
        assert body.allow_auto_topic_creation is False
    if version >= 1:  # null = all topics
        all_topics = _kp_frame(
            K[version](
                topics=None,
                allow_auto_topic_creation=True,
                include_topic_authorized_operations=False,
            ),
            version,
        )
        assert _decode_frame(all_topics)[1].topics is None


@pytest.mark.parametrize("version", [0, 2, 3, 4])
def test_kafka_python_apiversions_request(version):
    from kafka.protocol.metadata import ApiVersionsRequest as K

    raw = _kp_frame(
        K[version](client_software_name="kafka-python", client_software_version="3.0.12"), version
    )
    header, body = _decode_frame(raw)
    after_client_id = 4 + 8 + 2 + len("kp-golden")
    if version >= 3:  # request header v2 (empty tag section), compact strings
        assert body.client_software_name == "kafka-python"
        assert raw[after_client_id] == 0
        assert raw[after_client_id + 1] == len("kafka-python") + 1
    else:  # header v1, empty body
        assert body.client_software_name == ""
        assert len(raw) == after_client_id


@pytest.mark.parametrize("version", [0, 5, 7, 9])
def test_kafka_python_join_group_request(version):
    from kafka.protocol.consumer import JoinGroupRequest as K

    sub = ConsumerProtocolSubscription(topics=["orders"]).encode_versioned(0)
    raw = _kp_frame(
        K[version](
            group_id="g1",
            session_timeout_ms=10000,
            rebalance_timeout_ms=30000,
            member_id="",
            group_instance_id=None,
            protocol_type="consumer",
            reason="join",
            protocols=[K.JoinGroupRequestProtocol(name="range", metadata=sub)],
        ),
        version,
    )
    header, body = _decode_frame(raw)
    assert (body.group_id, body.session_timeout_ms, body.protocol_type) == ("g1", 10000, "consumer")
    proto = body.protocols[0]
    assert proto.name == "range"
    assert ConsumerProtocolSubscription.decode_versioned(proto.metadata)[1].topics == ["orders"]


@pytest.mark.parametrize("version", [2, 3, 4, 5, 7])
def test_kafka_python_create_topics_request(version):
    from kafka.protocol.admin import CreateTopicsRequest as K

    topic = K.CreatableTopic(
        name="new",
        num_partitions=3,
        replication_factor=1,
        assignments=[],
        configs=[K.CreatableTopic.CreatableTopicConfig(name="cleanup.policy", value="compact")],
    )
    raw = _kp_frame(K[version](topics=[topic], timeout_ms=5000, validate_only=True), version)
    header, body = _decode_frame(raw)
    assert isinstance(body, CreateTopicsRequest)
    t = body.topics[0]
    assert (t.name, t.num_partitions, t.replication_factor) == ("new", 3, 1)
    assert [(c.name, c.value) for c in t.configs] == [("cleanup.policy", "compact")]
    assert body.validate_only is True


@pytest.mark.parametrize("version", [0, 3, 4])
def test_our_apiversions_response_decodes_in_kafka_python(version):
    from kafka.protocol.metadata import ApiVersionsResponse as K

    ours = ApiVersionsResponse(
        api_keys=[
            ApiVersionsResponse.ApiVersion(
                api_key=k, min_version=s.valid_versions.lo, max_version=s.valid_versions.hi
            )
            for k, s in sorted(API_SPECS.items())
        ],
        throttle_time_ms=3,
    )
    data = ours.encode(version)
    theirs = K.decode(data, version=version)
    assert [(k.api_key, k.min_version, k.max_version) for k in theirs.api_keys] == [
        (k.api_key, k.min_version, k.max_version) for k in ours.api_keys
    ]


@pytest.mark.parametrize("version", [5, 9, 12])
def test_our_metadata_response_decodes_in_kafka_python(version):
    from kafka.protocol.metadata import MetadataResponse as K

    parts = [
        MetadataResponse.MetadataResponsePartition(
            partition_index=i, leader_id=1, leader_epoch=4, replica_nodes=[1, 2], isr_nodes=[1]
        )
        for i in range(3)
    ]
    ours = MetadataResponse(
        brokers=[MetadataResponse.MetadataResponseBroker(node_id=1, host="h", port=9092)],
        cluster_id="c",
        controller_id=1,
        topics=[MetadataResponse.MetadataResponseTopic(name="t", partitions=parts)],
    )
    theirs = K.decode(ours.encode(version), version=version)
    assert [(b.node_id, b.host, b.port) for b in theirs.brokers] == [(1, "h", 9092)]
    assert [p.partition_index for p in theirs.topics[0].partitions] == [0, 1, 2]
    assert theirs.topics[0].partitions[0].replica_nodes == [1, 2]
    assert bytes(theirs.encode()) == ours.encode(version)


@pytest.mark.parametrize("version", [7, 9, 10])
def test_our_produce_response_decodes_in_kafka_python(version):
    from kafka.protocol.producer import ProduceResponse as K

    part = ProduceResponse.PartitionProduceResponse(
        index=0, error_code=0, base_offset=42, log_start_offset=0
    )
    ours = ProduceResponse(
        responses=[ProduceResponse.TopicProduceResponse(name="t", partition_responses=[part])],
        throttle_time_ms=0,
    )
    theirs = K.decode(ours.encode(version), version=version)
    assert theirs.responses[0].partition_responses[0].base_offset == 42
    assert bytes(theirs.encode()) == ours.encode(version)


@pytest.mark.parametrize("version", [4, 11, 12, 16])
def test_our_fetch_response_decodes_in_kafka_python(version):
    from kafka.protocol.consumer import FetchResponse as K

    records = _kp_records()
    part = FetchResponse.PartitionData(
        partition_index=0, high_watermark=10, last_stable_offset=10, records=records
    )
    ours = FetchResponse(
        responses=[FetchResponse.FetchableTopicResponse(topic="t", partitions=[part])]
    )
    theirs = K.decode(ours.encode(version), version=version)
    assert theirs.responses[0].partitions[0].high_watermark == 10
    assert bytes(theirs.responses[0].partitions[0].records) == records


def test_our_join_group_response_decodes_in_kafka_python():
    from kafka.protocol.consumer import JoinGroupResponse as K

    ours = JoinGroupResponse(
        generation_id=3,
        protocol_name="range",
        leader="m1",
        member_id="m1",
        members=[JoinGroupResponse.JoinGroupResponseMember(member_id="m1", metadata=b"\x00\x01")],
    )
    for version in (5, 7):
        theirs = K.decode(ours.encode(version), version=version)
        assert (theirs.generation_id, theirs.leader) == (3, "m1")
        assert bytes(theirs.members[0].metadata) == b"\x00\x01"


# -- every shared API and version against kafka-python's encoder -------------


def _kp_classes():
    from kafka.protocol.api_message import ApiMessage

    found = {}
    for mod_info in pkgutil.walk_packages(kp_protocol.__path__, "kafka.protocol."):
        if ".old" in mod_info.name:
            continue
        mod = importlib.import_module(mod_info.name)
        for obj in vars(mod).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, ApiMessage)
                and obj is not ApiMessage
                and getattr(obj, "_json", None)
            ):
                found[obj.name] = obj
    return found


def _norm(name):
    return name.replace("_", "").lower()


def _to_kafka_python(obj, kp_struct, version):
    """Our struct -> kafka-python's, matching fields by Kafka name."""
    from kafka.protocol.schemas.fields.codecs.types import BitField

    is_message = hasattr(kp_struct, "_struct")
    fields = kp_struct._struct.fields if is_message else kp_struct.fields
    ours = {_norm(f.name): f.name for f in type(obj).FIELDS}
    kwargs = {}
    for name, kf in fields.items():
        if not kf.for_version_q(version):
            continue
        if kf._type_str == "bitfield":  # kafka-python turns *AuthorizedOperations into a set
            attr = next(a for n, a in ours.items() if n.endswith("authorizedoperations"))
            kwargs[name] = BitField.from_32_bit_field(getattr(obj, attr) & 0xFFFFFFFF)
            continue
        value = getattr(obj, ours[_norm(kf._name)])
        if kf.is_struct_array() and value is not None:
            value = [_to_kafka_python(e, kf.array_of, version) for e in value]
        elif kf.is_struct() and value is not None:
            value = _to_kafka_python(value, kf, version)
        kwargs[name] = value
    return kp_struct[version](**kwargs) if is_message else kp_struct.data_class(**kwargs)


def _shared_cases():
    kp = _kp_classes()
    out = []
    for cls, version in cases():
        theirs = kp.get(cls.__name__)
        if theirs is not None and theirs._valid_versions[0] <= version <= theirs._valid_versions[1]:
            out.append((cls, version, theirs))
    return out


def test_every_shared_message_matches_kafka_python_bytes():
    """Same fields encoded by kafka-python and by us give the same bytes, both directions."""
    checked = 0
    for cls, version, theirs in _shared_cases():
        for nulls in (False, True):
            ours = sample(cls, cls, version, nulls=nulls)
            data = ours.encode(version)
            assert bytes(_to_kafka_python(ours, theirs, version).encode()) == data, (
                f"{cls.__name__} v{version}"
            )
            if cls is ApiVersionsResponse and ours.error_code:
                continue  # kafka-python reads any failed ApiVersions reply as v0 (by design)
            back = theirs.decode(data, version=version)
            back._header = None  # kafka-python's decode leaves this slot unset
            assert bytes(back.encode()) == data, f"{cls.__name__} v{version}"
            checked += 1
    assert checked > 800  # ~430 API versions shared with kafka-python 3.0


def test_reader_can_continue_after_a_message():
    """Decoding from a Reader leaves it after the message (for concatenated structs)."""
    a = MetadataRequest(topics=None).encode(12)
    b = FetchRequest(max_wait_ms=9).encode(4)
    r = Reader(a + b)
    assert MetadataRequest.decode(r, 12).topics is None
    assert FetchRequest.decode(r, 4).max_wait_ms == 9
    assert r.remaining == 0


def test_request_header_roundtrip_through_frames():
    h = RequestHeader(
        request_api_key=1, request_api_version=16, correlation_id=9, client_id="rdkafka"
    )
    frame = encode_request_frame(h, FetchRequest(max_wait_ms=1))
    header, body = decode_request(frame[4:])
    assert header == h and body.max_wait_ms == 1
