"""Capture request frames from a real librdkafka client (confluent-kafka) into *.hex files.

    PYTHONPATH=src python tests/golden/capture_librdkafka.py tests/golden

A tiny loopback broker built on pystream.protocol answers ApiVersions,
Metadata, InitProducerId, Produce, FindCoordinator, ListOffsets, Fetch and
CreateTopics; confluent-kafka then runs an idempotent acks=all produce, an
assign-and-consume and a create_topics. The first frame of each (api key,
version) is saved, size prefix included. The client accepting our responses
(all flexible versions) is itself a check of the encoder.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pystream.protocol import API_SPECS, FrameDecoder, decode_request, encode_response_frame
from pystream.protocol.messages.api_versions import ApiVersionsResponse
from pystream.protocol.messages.create_topics import CreateTopicsResponse
from pystream.protocol.messages.fetch import FetchResponse
from pystream.protocol.messages.find_coordinator import FindCoordinatorResponse
from pystream.protocol.messages.init_producer_id import InitProducerIdResponse
from pystream.protocol.messages.list_offsets import ListOffsetsResponse
from pystream.protocol.messages.metadata import MetadataResponse
from pystream.protocol.messages.produce import ProduceResponse

TOPIC_ID = uuid.UUID(int=0x1234)
NAMES = {
    0: "produce",
    1: "fetch",
    2: "list_offsets",
    3: "metadata",
    10: "find_coordinator",
    18: "api_versions",
    19: "create_topics",
    22: "init_producer_id",
}


class TinyBroker:
    """One node, one topic ("golden", 1 partition); record batches kept in a list."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.batches: list[bytes] = []
        self.captured: dict[tuple[int, int], bytes] = {}

    def respond(self, key: int, version: int, req):  # one branch per API
        if key == 18:
            a = ApiVersionsResponse
            return a(
                api_keys=[
                    a.ApiVersion(
                        api_key=k,
                        min_version=API_SPECS[k].valid_versions.lo,
                        max_version=API_SPECS[k].valid_versions.hi,
                    )
                    for k in sorted(NAMES)
                ]
            )
        if key == 3:
            m = MetadataResponse
            topic = m.MetadataResponseTopic(
                name="golden",
                topic_id=TOPIC_ID,
                partitions=[
                    m.MetadataResponsePartition(
                        partition_index=0, leader_id=0, replica_nodes=[0], isr_nodes=[0]
                    )
                ],
            )
            wanted = req.topics is None or any(t.name == "golden" for t in req.topics)
            return m(
                brokers=[m.MetadataResponseBroker(node_id=0, host="127.0.0.1", port=self.port)],
                cluster_id="golden-cluster",
                controller_id=0,
                topics=[topic] if wanted else [],
            )
        if key == 0:
            p = ProduceResponse
            topics = []
            for td in req.topic_data:
                parts = []
                for pd in td.partition_data:
                    parts.append(
                        p.PartitionProduceResponse(index=pd.index, base_offset=len(self.batches))
                    )
                    self.batches.append(bytes(pd.records))
                topics.append(p.TopicProduceResponse(name=td.name, partition_responses=parts))
            return p(responses=topics)
        if key == 2:
            lo = ListOffsetsResponse
            return lo(
                topics=[
                    lo.ListOffsetsTopicResponse(
                        name=t.name,
                        partitions=[
                            lo.ListOffsetsPartitionResponse(
                                partition_index=p.partition_index,
                                offset=0 if p.timestamp == -2 else len(self.batches),
                            )
                            for p in t.partitions
                        ],
                    )
                    for t in req.topics
                ]
            )
        if key == 1:
            f = FetchResponse
            end = len(self.batches)
            return f(
                responses=[
                    f.FetchableTopicResponse(
                        topic=t.topic,
                        topic_id=t.topic_id,
                        partitions=[
                            f.PartitionData(
                                partition_index=p.partition,
                                high_watermark=end,
                                last_stable_offset=end,
                                log_start_offset=0,
                                records=b"".join(self.batches[p.fetch_offset :]),
                            )
                            for p in t.partitions
                        ],
                    )
                    for t in req.topics
                ]
            )
        if key == 10:
            return FindCoordinatorResponse(node_id=0, host="127.0.0.1", port=self.port)
        if key == 19:
            c = CreateTopicsResponse
            return c(
                topics=[
                    c.CreatableTopicResult(
                        name=t.name, num_partitions=t.num_partitions, replication_factor=1
                    )
                    for t in req.topics
                ]
            )
        if key == 22:
            return InitProducerIdResponse(producer_id=1000, producer_epoch=0)
        raise RuntimeError(f"unhandled api key {key}")

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for payload in decoder.feed(data):
                header, req = decode_request(payload)
                key, version = header.request_api_key, header.request_api_version
                self.captured.setdefault((key, version), len(payload).to_bytes(4, "big") + payload)
                resp = self.respond(key, version, req)
                writer.write(encode_response_frame(key, version, header.correlation_id, resp))
        writer.close()

    def start(self) -> None:
        ready = threading.Event()

        async def main() -> None:
            server = await asyncio.start_server(self.serve, "127.0.0.1", self.port)
            ready.set()
            async with server:
                await server.serve_forever()

        threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()
        ready.wait()


def run_clients(bootstrap: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    producer.produce("golden", key=b"k1", value=b"value-1", headers=[("h", b"v")])
    producer.produce("golden", key=b"k2", value=b"value-2")
    assert producer.flush(10) == 0
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "golden-group", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition("golden", 0, OFFSET_BEGINNING)])
    values: list[bytes] = []
    deadline = time.monotonic() + 10
    while len(values) < 2 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            values.append(msg.value())
    consumer.close()
    assert values == [b"value-1", b"value-2"], values
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(
        [NewTopic("golden-new", 3, 1, config={"cleanup.policy": "compact"})]
    ).values():
        future.result(10)


def main(out: Path) -> None:
    broker = TinyBroker()
    broker.start()
    run_clients(f"127.0.0.1:{broker.port}")
    out.mkdir(parents=True, exist_ok=True)
    for (key, version), raw in sorted(broker.captured.items()):
        text = raw.hex()
        path = out / f"librdkafka-2.16-{NAMES[key]}-{key}-v{version}.hex"
        path.write_text("\n".join(text[i : i + 64] for i in range(0, len(text), 64)) + "\n")
        print(path, len(raw))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/golden"))
