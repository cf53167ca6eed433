"""A fetch response keeps sending a segment's bytes after retention deleted the segment.

A Fetch response sends record sets with ``sendfile`` from the segment's file
descriptor, for as long as the consumer takes to read them.  The descriptor is
reference counted (``_core.segment.FileHandle``): each response chunk holds it,
so deleting the segment (here DeleteRecords, then retention removing the files
with ``file.delete.delay.ms=0``) closes it only once the response is sent.
Before, deletion closed it at once: the slow consumer's connection broke, or
got the bytes of whatever file reused the descriptor's number.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from admin_helpers import ck_admin, ck_error
from broker_process import BrokerProcess
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import NewTopic
from kafka.record.memory_records import MemoryRecords
from waiting import wait_until

from pystream.protocol import decode_response, encode_request_frame
from pystream.protocol.messages import RequestHeader
from pystream.protocol.messages.fetch import FetchRequest

TOPIC = "slow-read"
# Bigger than anything the kernel buffers between broker and client (tcp_wmem's 4 MiB
# maximum plus the client's tiny receive buffer): the broker is mid-sendfile for sure.
SEGMENT_BYTES = 8 << 20
VALUE_BYTES = 10_000
RECORDS = 1_000  # ~10 MB: segment 0 is full and closed, segment 1 holds the rest
FETCH_VERSION = 11


def value_of(i: int) -> bytes:
    return (b"%08d|" % i) * (VALUE_BYTES // 9)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    overrides = {"log.retention.check.interval.ms": "100"}
    process = BrokerProcess(tmp_path_factory.mktemp("fd") / "broker", overrides).start()
    try:
        yield process
    finally:
        process.close()


def open_fds_to(pid: int, directory: Path) -> list[str]:
    """What the broker's open descriptors under ``directory`` point to (``/proc``)."""
    fd_dir = f"/proc/{pid}/fd"
    targets = []
    for name in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith(str(directory)):
            targets.append(target)
    return targets


def recv_exactly(sock: socket.socket, size: int, step: int = 65536) -> bytes:
    """``size`` bytes, or fewer if the broker closed the connection."""
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(step, size - len(data)))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def test_a_slow_fetch_survives_deletion_of_its_segment(broker: BrokerProcess) -> None:
    admin = ck_admin(broker)
    configs = {"segment.bytes": str(SEGMENT_BYTES), "file.delete.delay.ms": "0"}
    assert ck_error(admin.create_topics([NewTopic(TOPIC, 1, config=configs)])[TOPIC]) == (0, "")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(RECORDS):
        producer.produce(TOPIC, value_of(i), partition=0)
    assert producer.flush(60) == 0
    directory = Path(broker.log_dir) / f"{TOPIC}-0"
    segments = sorted(directory.glob("*.log"))
    assert len(segments) >= 2, segments
    first, second = segments[0], int(segments[1].name.split(".")[0])

    # A consumer with a tiny receive buffer asks for everything from offset 0: the
    # response carries all of segment 0 and the broker sends it as the client reads.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", broker.port))
    with sock:
        header = RequestHeader(
            request_api_key=1, request_api_version=FETCH_VERSION, correlation_id=7, client_id="slow"
        )
        request = FetchRequest(
            max_wait_ms=0,
            min_bytes=1,
            max_bytes=64 << 20,
            topics=[
                FetchRequest.FetchTopic(
                    topic=TOPIC,
                    partitions=[
                        FetchRequest.FetchPartition(
                            partition=0, fetch_offset=0, partition_max_bytes=64 << 20
                        )
                    ],
                )
            ],
        )
        sock.sendall(encode_request_frame(header, request))
        (size,) = struct.unpack(">i", recv_exactly(sock, 4))
        assert size > SEGMENT_BYTES // 2, size  # segment 0's batches, not a short answer
        head = recv_exactly(sock, 1000)

        # Segment 0 goes: DeleteRecords below segment 1, retention removes the files.
        futures = admin.delete_records([TopicPartition(TOPIC, 0, second)])
        assert ck_error(next(iter(futures.values()))) == (0, "")
        wait_until(lambda: not list(directory.glob(first.name + "*")), 30, f"{first} removed")
        # Checked below, after the bytes: the broker still has the unlinked file open.
        pid = broker.process.pid  # type: ignore[union-attr]
        still_open = open_fds_to(pid, directory)
        # New files in the broker: they would take over a closed descriptor's number.
        for i in range(3):
            name = f"filler-{i}"
            assert ck_error(admin.create_topics([NewTopic(name, 2)])[name]) == (0, "")
            wait_until(lambda name=name: (Path(broker.log_dir) / f"{name}-1").is_dir(), 30)

        rest = recv_exactly(sock, size - len(head))
    assert len(head) + len(rest) == size, f"connection closed after {len(head) + len(rest)} bytes"

    response_header, response = decode_response(head + rest, 1, FETCH_VERSION)
    assert response_header.correlation_id == 7
    (partition,) = response.responses[0].partitions
    assert partition.error_code == 0
    records = MemoryRecords(bytes(partition.records))
    offsets = []
    while (batch := records.next_batch()) is not None:
        assert batch.validate_crc()
        for record in batch:
            assert record.value == value_of(record.offset), record.offset
            offsets.append(record.offset)
    assert offsets == list(range(second))  # exactly segment 0, every record intact
    # It was mid-send: its descriptor was still open, the file already unlinked.
    assert any(first.name in target and "(deleted)" in target for target in still_open), still_open
    # Sent: the last reference went and the deleted file's descriptor is closed.
    wait_until(
        lambda: not [t for t in open_fds_to(pid, directory) if first.name in t],
        30,
        "the deleted segment's descriptor closed",
    )
