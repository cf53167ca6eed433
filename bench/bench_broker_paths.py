"""The broker's hot paths: Produce request decoding and Fetch response encoding.

Micro benchmarks, fast path against the reference (generated codec)::

    PYTHONPATH=src python -m pytest bench/bench_broker_paths.py --benchmark-only -q

* produce: a v9 request with one topic of 1 / 10 / 100 partitions of 16 KiB
  batches, decoded from a Reader (what ``decode_request_body`` does);
* fetch: a v16 response with 1 / 10 / 100 partitions of 64 KiB record sets from
  a real segment: ``encode_fetch_response`` with sendfile (file regions), without
  (copied from the mmap), and ``encode_reference``;
* whole requests through ``Broker.handle_frame`` (in process, no sockets): a
  one-record Produce v10 (what ``linger.ms=0`` sends) and a small Fetch v16, on
  the fast codecs and on the generated ones (each round includes ~12 us of
  ``loop.run_until_complete``).

A broker with the reference paths, for before/after end-to-end runs
(``bench/e2e.py``)::

    PYTHONPATH=src python bench/bench_broker_paths.py serve --reference \\
        --override log.dirs=/tmp/x --override listeners=PLAINTEXT://127.0.0.1:0

Without ``--reference`` it is plain ``pystream serve``.  More switches:
``--loop-lag`` prints how late a 1 ms timer fires
(event-loop stalls); ``--sendfile-min-bytes=N`` copies record sets below N
bytes instead of sendfile.

Broker CPU per record (robust on a busy machine; kcat produces, confluent-kafka consumes)::

    python bench/bench_broker_paths.py cpu BROKER_PID 127.0.0.1:PORT [RECORDS] [SIZE] [CODEC]

(CODEC: kcat's ``compression.codec``, e.g. lz4 or zstd; default none.)
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pystream._core.records import build_batch_from_values
from pystream.broker.apis import produce as _produce_handler  # noqa: F401  (registers the decoder)
from pystream.broker.apis.fetch import FetchPlan, PartitionFetch, TopicFetch, encode_reference
from pystream.broker.fetch_response import encode_fetch_response
from pystream.config import LogConfig
from pystream.protocol import Reader, fast_produce
from pystream.protocol.messages.produce import ProduceRequest
from pystream.storage.log import Log

BATCH = bytes(16 * 1024)
RECORD_SET = 64 * 1024


def _produce_frame(partitions: int) -> bytearray:
    p = ProduceRequest
    parts = [p.PartitionProduceData(index=i, records=BATCH) for i in range(partitions)]
    request = p(
        acks=1,
        timeout_ms=30000,
        topic_data=[p.TopicProduceData(name="orders", partition_data=parts)],
    )
    return bytearray(request.encode(9))


@pytest.mark.parametrize("partitions", [1, 10, 100])
@pytest.mark.parametrize("decoder", ["fast", "generated"])
def test_produce_decode(benchmark, decoder: str, partitions: int) -> None:
    frame = _produce_frame(partitions)
    read = ProduceRequest._READERS[9] if decoder == "fast" else fast_produce.GENERATED_READERS[9]
    result = benchmark(lambda: read(Reader(frame)))
    assert len(result.topic_data[0].partition_data) == partitions


@pytest.fixture(scope="module")
def segment_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    log = Log.open(str(tmp_path_factory.mktemp("bench") / "t-0"), LogConfig())
    while log.read(0, 1 << 30).size < RECORD_SET:
        log.append(bytearray(build_batch_from_values([bytes(100)] * 100)), leader_epoch=0)
    yield log
    log.close()


def _fetch_plan(log: Log, partitions: int) -> FetchPlan:
    data = log.read(0, RECORD_SET)
    parts = [
        PartitionFetch(i, 0, RECORD_SET, high_watermark=10, data=data) for i in range(partitions)
    ]
    return FetchPlan([TopicFetch("orders", uuid.UUID(int=7), parts)], 1 << 30)


@pytest.mark.parametrize("partitions", [1, 10, 100])
@pytest.mark.parametrize("encoder", ["sendfile", "copy", "reference"])
def test_fetch_encode(benchmark, segment_log: Log, encoder: str, partitions: int) -> None:
    plan = _fetch_plan(segment_log, partitions)
    if encoder == "reference":
        benchmark(encode_reference, plan, 16, 1)
    else:
        # sendfile_min_bytes=0: every record set a file region (64 KiB is below the default).
        benchmark(encode_fetch_response, plan, 16, 1, encoder == "sendfile", 0)


# ------------------------------------------------------------------- whole requests


class _Connection:
    """What handle_frame needs of a connection."""

    supports_sendfile = True
    state: dict[str, object] = {}

    def close(self, reason: str | None = None) -> None:
        raise AssertionError(reason)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """An in-process broker (no sockets) with topic ``t`` and a running event loop."""
    import asyncio

    from pystream.broker.server import Broker
    from pystream.config import BrokerConfig

    loop = asyncio.new_event_loop()
    config = BrokerConfig.from_properties(
        {
            "log.dirs": str(tmp_path_factory.mktemp("broker")),
            "listeners": "PLAINTEXT://127.0.0.1:0",
        }
    )
    b = Broker(config)
    loop.run_until_complete(b.start())
    loop.run_until_complete(b.services.topic_manager.create_topic("t", 1, 1))
    yield b, loop
    loop.run_until_complete(b.stop())
    loop.close()


def _request_frame(api_key: int, version: int, body: Any) -> bytearray:
    from pystream.protocol import RequestHeader, encode_request_frame

    header = RequestHeader(
        request_api_key=api_key, request_api_version=version, correlation_id=7, client_id="rdkafka"
    )
    return bytearray(encode_request_frame(header, body)[4:])


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_produce_request_one_record(benchmark, broker: tuple[Any, Any], path: str) -> None:
    """Dispatch + decode + append + response of a one-record Produce v10 (linger.ms=0 traffic)."""
    b, loop = broker
    batch = build_batch_from_values([bytes(100)])
    p = ProduceRequest
    body = p(
        acks=1,
        timeout_ms=30000,
        topic_data=[
            p.TopicProduceData(
                name="t", partition_data=[p.PartitionProduceData(index=0, records=batch)]
            )
        ],
    )
    frame = _request_frame(0, 10, body)
    connection = _Connection()
    from pystream.protocol import RequestHeader
    from pystream.protocol.messages.produce import ProduceResponse

    saved = [
        (c, dict(c._READERS), dict(c._WRITERS))
        for c in (ProduceRequest, ProduceResponse, RequestHeader)
    ]
    if path == "reference":
        ProduceRequest._READERS.update(fast_produce.GENERATED_READERS)
        ProduceResponse._WRITERS.update(fast_produce.GENERATED_WRITERS)
        RequestHeader._READERS.update(fast_produce.GENERATED_HEADER_READERS)
    try:
        # Each round patches a fresh copy: the broker assigns offsets in place.
        result = benchmark(
            lambda: loop.run_until_complete(b.handle_frame(bytearray(frame), connection))
        )
    finally:
        for cls, readers, writers in saved:
            cls._READERS.update(readers)
            cls._WRITERS.update(writers)
    assert result


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_fetch_request_small(benchmark, broker: tuple[Any, Any], path: str, monkeypatch) -> None:
    """Dispatch + decode + read + response of a Fetch v16 for the last batch of ``t``."""
    from pystream.broker.apis import fetch
    from pystream.protocol.messages.fetch import FetchRequest

    b, loop = broker
    log = b.services.replica_manager.partition("t", 0).log
    for _ in range(3):
        log.append(bytearray(build_batch_from_values([bytes(100)] * 5)), leader_epoch=0)
    b.services.replica_manager._maybe_advance_high_watermark(
        b.services.replica_manager.partition("t", 0)
    )
    topic_id = b.services.metadata.get_topic("t").topic_id
    f = FetchRequest
    body = f(
        max_wait_ms=0,
        min_bytes=1,
        max_bytes=1 << 20,
        session_epoch=-1,
        topics=[
            f.FetchTopic(
                topic_id=topic_id,
                partitions=[
                    f.FetchPartition(
                        partition=0,
                        fetch_offset=log.log_end_offset - 5,
                        partition_max_bytes=1 << 20,
                    )
                ],
            )
        ],
    )
    frame = _request_frame(1, 16, body)
    connection = _Connection()
    if path == "reference":

        def reference(plan, version, correlation_id, sendfile=False):  # type: ignore[no-untyped-def]
            return encode_reference(plan, version, correlation_id)

        monkeypatch.setattr(fetch, "encode_fetch_response", reference)
    result = benchmark(lambda: loop.run_until_complete(b.handle_frame(frame, connection)))
    assert result


# ------------------------------------------------------------------- reference broker


def use_reference_paths() -> None:
    """Route the broker back to the generated codecs and ``encode_reference``."""
    from pystream.broker.apis import fetch
    from pystream.protocol import RequestHeader
    from pystream.protocol.messages.produce import ProduceResponse

    ProduceRequest._READERS.update(fast_produce.GENERATED_READERS)
    ProduceResponse._WRITERS.update(fast_produce.GENERATED_WRITERS)
    RequestHeader._READERS.update(fast_produce.GENERATED_HEADER_READERS)

    def reference(plan: FetchPlan, version: int, correlation_id: int, sendfile: bool = False):
        return encode_reference(plan, version, correlation_id)

    fetch.encode_fetch_response = reference  # type: ignore[assignment]


def report_loop_lag(interval_s: float = 5.0) -> None:
    """Print, every ``interval_s``, how late a 1 ms timer fired (``--loop-lag``).

    A broker stall (a long callback, GC, a blocking syscall) delays every
    response by as much; this tells those apart from client or machine delays.
    """
    import asyncio
    import time

    from pystream.cli import serve

    original = serve.run_broker

    async def run_broker(config):  # type: ignore[no-untyped-def]
        async def probe() -> None:
            lags: list[float] = []
            last_report = time.perf_counter()
            while True:
                before = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append(time.perf_counter() - before - 0.001)
                if before - last_report >= interval_s:
                    lags.sort()
                    p99, worst = lags[int(len(lags) * 0.99)], lags[-1]
                    print(f"loop lag: p99 {p99 * 1e3:.2f} ms, max {worst * 1e3:.2f} ms", flush=True)
                    lags.clear()
                    last_report = before

        task = asyncio.create_task(probe())
        try:
            await original(config)
        finally:
            task.cancel()

    serve.run_broker = run_broker  # type: ignore[assignment]


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (what the broker spent, whatever else runs)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_cost(argv: list[str]) -> None:
    """``cpu PID BOOTSTRAP [RECORDS] [SIZE] [CODEC]``: broker CPU per record, producing and
    consuming.

    Produces RECORDS x SIZE bytes with kcat (acks=1, linger.ms=5, batch.size=1000000,
    compression.codec=CODEC, default none),
    then reads them back with one confluent-kafka consumer, and prints the
    broker's CPU time (from /proc) per record and per MB for each phase.  Wall
    time on a shared machine varies with everything else running; the broker's
    own CPU time does much less.
    """
    import subprocess
    import tempfile
    import time

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    pid, bootstrap = int(argv[0]), argv[1]
    records = int(argv[2]) if len(argv) > 2 else 1_000_000
    size = int(argv[3]) if len(argv) > 3 else 100
    codec = argv[4] if len(argv) > 4 else "none"
    topic = f"cpu-{uuid.uuid4().hex[:8]}"
    with tempfile.NamedTemporaryFile("wb", suffix=".txt") as lines:
        line = b"v" * (size - 1) + b"\n"
        lines.write(line * records)
        lines.flush()
        settings = ["-X", "acks=1", "-X", "linger.ms=5", "-X", "batch.size=1000000"]
        settings += ["-X", f"compression.codec={codec}"]
        command = ["kcat", "-P", "-b", bootstrap, "-t", topic, "-p", "0", *settings]
        cpu, wall = _cpu_seconds(pid), time.perf_counter()
        subprocess.run([*command, "-l", lines.name], check=True)
        produce = _cpu_seconds(pid) - cpu, time.perf_counter() - wall
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": topic,
            "enable.auto.commit": False,
            "max.partition.fetch.bytes": 8 << 20,
            "fetch.max.bytes": 64 << 20,
            "queued.min.messages": 1_000_000,
            "queued.max.messages.kbytes": 256 << 10,
            "fetch.queue.backoff.ms": 10,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    cpu, wall, got = _cpu_seconds(pid), time.perf_counter(), 0
    while got < records:
        got += len(consumer.consume(10_000, timeout=1))
    consume = _cpu_seconds(pid) - cpu, time.perf_counter() - wall
    consumer.close()
    mb = records * size / 1e6
    for name, (cpu_s, wall_s) in (("produce", produce), ("consume", consume)):
        print(
            f"{name} ({codec}): {records:,} x {size} B in {wall_s:.2f} s wall "
            f"({records / wall_s:,.0f} rec/s); "
            f"broker CPU {cpu_s:.2f} s = {cpu_s / records * 1e6:.2f} us/record, "
            f"{mb / cpu_s if cpu_s else float('inf'):,.0f} MB per CPU-second"
        )


def main(argv: list[str]) -> None:
    from pystream.cli.main import main as cli

    if argv[:1] == ["cpu"]:
        cpu_cost(argv[1:])
        return
    if argv[:1] != ["serve"]:
        raise SystemExit(__doc__)
    for arg in [a for a in argv if a.startswith("--sendfile-min-bytes=")]:
        argv.remove(arg)
        from pystream.broker import fetch_response

        fetch_response.SENDFILE_MIN_BYTES = int(arg.partition("=")[2])  # type: ignore[misc]
    if "--loop-lag" in argv:
        argv.remove("--loop-lag")
        report_loop_lag()
    if "--reference" in argv:
        argv.remove("--reference")
        use_reference_paths()
        print("pystream broker with the REFERENCE produce decoder and fetch encoder", flush=True)
    sys.argv = ["pystream", *argv]
    cli()


if __name__ == "__main__":
    main(sys.argv[1:])
