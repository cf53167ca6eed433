"""Generated protocol codec speed (pure Python, before any Cython fast path).

Run: PYTHONPATH=src python -m pytest bench/bench_protocol.py --benchmark-only -q

Cases: a Metadata v12 response with one topic of 100 partitions (3 replicas
each) and a Produce v9 request with 10 partitions of 200-byte batches, plus
Fetch v16 request/response (10 partitions) and a Metadata v12 request. kafka-python's
compiled codec is measured on the same bytes as a reference point.
"""

from uuid import UUID

import pytest

from pystream.protocol.messages.fetch import FetchRequest, FetchResponse
from pystream.protocol.messages.metadata import MetadataRequest, MetadataResponse
from pystream.protocol.messages.produce import ProduceRequest

BATCH = bytes(200)


def metadata_response() -> MetadataResponse:
    m = MetadataResponse
    parts = [
        m.MetadataResponsePartition(
            partition_index=i,
            leader_id=i % 3,
            leader_epoch=5,
            replica_nodes=[0, 1, 2],
            isr_nodes=[0, 1, 2],
        )
        for i in range(100)
    ]
    return m(
        brokers=[
            m.MetadataResponseBroker(node_id=i, host=f"broker{i}", port=9092) for i in range(3)
        ],
        cluster_id="cluster",
        controller_id=0,
        topics=[m.MetadataResponseTopic(name="orders", topic_id=UUID(int=7), partitions=parts)],
    )


def produce_request() -> ProduceRequest:
    p = ProduceRequest
    parts = [p.PartitionProduceData(index=i, records=BATCH) for i in range(10)]
    return p(
        acks=-1,
        timeout_ms=30000,
        topic_data=[p.TopicProduceData(name="orders", partition_data=parts)],
    )


def fetch_response() -> FetchResponse:
    f = FetchResponse
    parts = [
        f.PartitionData(
            partition_index=i,
            high_watermark=100,
            last_stable_offset=100,
            log_start_offset=0,
            records=BATCH,
        )
        for i in range(10)
    ]
    return f(responses=[f.FetchableTopicResponse(topic_id=UUID(int=7), partitions=parts)])


def fetch_request() -> FetchRequest:
    f = FetchRequest
    parts = [
        f.FetchPartition(partition=i, fetch_offset=1000 * i, partition_max_bytes=1 << 20)
        for i in range(10)
    ]
    return f(
        max_wait_ms=500,
        min_bytes=1,
        max_bytes=50 << 20,
        isolation_level=1,
        topics=[f.FetchTopic(topic_id=UUID(int=7), partitions=parts)],
    )


def metadata_request() -> MetadataRequest:
    return MetadataRequest(
        topics=[MetadataRequest.MetadataRequestTopic(name=f"topic-{i}") for i in range(3)]
    )


CASES = {
    "metadata-v12-req-3topics": (MetadataRequest, metadata_request(), 12),
    "fetch-v16-req-10p": (FetchRequest, fetch_request(), 16),
    "metadata-v12-resp-100p": (MetadataResponse, metadata_response(), 12),
    "produce-v9-req-10p": (ProduceRequest, produce_request(), 9),
    "fetch-v16-resp-10p": (FetchResponse, fetch_response(), 16),
}


@pytest.mark.parametrize("case", list(CASES))
def test_decode(benchmark, case):
    cls, msg, version = CASES[case]
    data = msg.encode(version)
    benchmark.group = f"{case} decode"
    assert benchmark(lambda: cls.decode(data, version)) == msg


@pytest.mark.parametrize("case", list(CASES))
def test_encode(benchmark, case):
    cls, msg, version = CASES[case]
    benchmark.group = f"{case} encode"
    assert len(benchmark(lambda: msg.encode(version))) > 0


@pytest.mark.parametrize("case", list(CASES))
def test_roundtrip(benchmark, case):
    cls, msg, version = CASES[case]
    data = msg.encode(version)
    benchmark.group = f"{case} decode+encode"
    assert benchmark(lambda: cls.decode(data, version).encode(version)) == data


KAFKA_PYTHON = {
    "metadata-v12-resp-100p": ("kafka.protocol.metadata", "MetadataResponse"),
    "produce-v9-req-10p": ("kafka.protocol.producer", "ProduceRequest"),
    "fetch-v16-resp-10p": ("kafka.protocol.consumer", "FetchResponse"),
}


@pytest.mark.parametrize("case", list(KAFKA_PYTHON))
def test_kafka_python_reference_roundtrip(benchmark, case):
    module = pytest.importorskip(KAFKA_PYTHON[case][0])
    theirs = getattr(module, KAFKA_PYTHON[case][1])
    _, msg, version = CASES[case]
    data = msg.encode(version)
    benchmark.group = f"{case} decode+encode"
    assert bytes(benchmark(lambda: theirs.decode(data, version=version).encode())) == data
