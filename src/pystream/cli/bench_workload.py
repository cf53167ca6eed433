"""The workloads behind ``pystream bench``: one produce or consume loop per client.

Two clients run the same workload: pystream's own (``send`` or ``send_batch``)
and confluent-kafka (librdkafka, with ``bench/e2e.py``'s producer settings), so
``--compare`` measures the clients and not two different loops.  A workload is
split over N processes (:func:`run_shares`): each runs its share after a
barrier, and :func:`aggregate` merges them into one summary (records over the
first start to the last acknowledgement, latency samples pooled).  Nothing here
uses click: ``pystream.cli.bench`` and the pytest plugin's ``kafka_bench`` both
call it.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import operator
import queue
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = [
    "CLIENT_NAMES",
    "LIBRDKAFKA_PRODUCER",
    "BenchError",
    "ConsumeWorkload",
    "ProduceWorkload",
    "Share",
    "aggregate",
    "consume_share",
    "produce_share",
    "run_shares",
    "split_count",
    "summarize",
]

#: What ``--compare`` calls each client in tables and JSON.
CLIENT_NAMES = {"pystream": "pystream", "confluent": "confluent-kafka"}

#: librdkafka's producer for throughput: acks=1, linger.ms=5, 1 MB batches
#: (``batch.num.messages`` raised so the byte limit decides), no compression, a local queue
#: of a million records, no idempotence.  ``bench/e2e.py``'s ``throughput_producer_settings()``,
#: which cannot import pystream (it runs against any broker from a bare checkout): a test
#: keeps the two equal.
LIBRDKAFKA_PRODUCER: dict[str, Any] = {
    "acks": 1,
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "batch.num.messages": 1_000_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "compression.type": "none",
    "enable.idempotence": False,
}

MAX_SAMPLES = 50_000  # latency samples per run, over all processes
FETCH_PARTITION_BYTES = 8 * 1024 * 1024  # per-partition fetch size of both consumers
CONSUME_BATCH = 10_000  # records asked of one poll()/consume()


class BenchError(Exception):
    """A workload that could not run or did not deliver what it was asked to."""


@dataclasses.dataclass(frozen=True)
class ProduceWorkload:
    """``records`` records of ``record_size`` bytes to ``partitions`` partitions of ``topic``.

    Unkeyed records go to the partitions in turn, a batch's worth (``batch_size``
    bytes) at a time, so both clients fill whole batches; with ``keyed`` every record
    has an 8-byte key (its index) and the murmur2 partitioner (Kafka's, also asked of
    librdkafka) spreads them.  ``api`` is pystream's: ``send`` (one call per record) or
    ``send_batch`` (one call per batch's worth, from a numpy array).  ``settings``: more
    pystream producer keyword arguments; ``librdkafka``: more librdkafka properties.
    """

    bootstrap: str
    topic: str
    records: int
    record_size: int = 100
    partitions: int = 1
    acks: str = "1"
    linger_ms: float = 5
    batch_size: int = 1_000_000
    api: str = "send"
    keyed: bool = False
    throughput: float = -1
    timeout_s: float = 60.0
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    librdkafka: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def chunk(self) -> int:
        """Records per batch: how many go to one partition before the next."""
        return max(1, min(65_536, self.batch_size // max(1, self.record_size)))


@dataclasses.dataclass(frozen=True)
class ConsumeWorkload:
    """Read, from ``topic``, the offsets ``[start, stop)`` of each partition in ``ranges``."""

    bootstrap: str
    topic: str
    ranges: dict[int, tuple[int, int]]
    timeout_s: float = 30.0
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    librdkafka: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def records(self) -> int:
        return sum(stop - start for start, stop in self.ranges.values())


@dataclasses.dataclass
class Share:
    """One process's part of a run (``monotonic_ns`` times: shared by a machine's processes)."""

    records: int
    bytes: int
    start_ns: int
    end_ns: int
    latencies_ms: list[float]


Progress = Callable[[int], None]


def _no_progress(_: int) -> None:
    """A progress callback that does nothing."""


def split_count(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal counts (the first ones one larger)."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def summarize(records: int, total_bytes: int, seconds: float, latencies_ms: list[float]) -> dict:
    """Throughput (MB = 2**20 bytes of values, as kafka-producer-perf-test) and latency
    percentiles in milliseconds of one run."""
    seconds = max(seconds, 1e-9)
    out: dict[str, Any] = {
        "records": records,
        "seconds": round(seconds, 6),
        "records_per_sec": round(records / seconds, 1),
        "mb_per_sec": round(total_bytes / seconds / (1024 * 1024), 3),
    }
    if latencies_ms:
        lat = np.asarray(latencies_ms, dtype=np.float64)
        p50, p95, p99, p999 = np.percentile(lat, [50, 95, 99, 99.9])
        out.update(
            latency_avg_ms=round(float(lat.mean()), 3),
            latency_p50_ms=round(float(p50), 3),
            latency_p95_ms=round(float(p95), 3),
            latency_p99_ms=round(float(p99), 3),
            latency_p999_ms=round(float(p999), 3),
            latency_max_ms=round(float(lat.max()), 3),
        )
    return out


def aggregate(shares: list[Share]) -> dict:
    """One summary of every process's share: the window is first start to last end."""
    seconds = (max(s.end_ns for s in shares) - min(s.start_ns for s in shares)) / 1e9
    latencies = [x for s in shares for x in s.latencies_ms]
    return summarize(
        sum(s.records for s in shares), sum(s.bytes for s in shares), seconds, latencies
    )


class Throttle:
    """Keeps a loop at ``rate`` iterations per second (no limit if ``rate`` <= 0)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.perf_counter()

    def wait(self, done: int) -> None:
        if self.rate <= 0:
            return
        ahead = done / self.rate - (time.perf_counter() - self.start)
        if ahead > 0:
            time.sleep(ahead)


def _slices(
    w: ProduceWorkload, count: int, first_partition: int, rate: float
) -> Iterator[tuple[int, int, int]]:
    """``(start, end, partition)`` runs of record indexes: each within one batch's worth
    (one partition), shorter when throttled so the throttle is checked often."""
    chunk = w.chunk
    step = chunk if rate <= 0 else max(1, min(chunk, count // 200, int(rate // 100) or 1))
    i = 0
    while i < count:
        end = min(count, i + step, (i // chunk + 1) * chunk)
        yield i, end, (first_partition + i // chunk) % w.partitions
        i = end


# --------------------------------------------------------------------------- produce


def produce_share(
    client: str,
    w: ProduceWorkload,
    count: int,
    first: int,
    first_partition: int,
    samples: int,
    ready: Callable[[], None] | None = None,
    update: Progress = _no_progress,
) -> Share:
    """Produce ``count`` records (indexes from ``first``) with ``client``; ``ready()`` is
    called once connected, just before the clock starts (the processes' barrier)."""
    produce = _pystream_produce if client == "pystream" else _confluent_produce
    return produce(w, count, first, first_partition, samples, ready or (lambda: None), update)


def _pystream_produce(
    w: ProduceWorkload,
    count: int,
    first: int,
    first_partition: int,
    samples: int,
    ready: Callable[[], None],
    update: Progress,
) -> Share:
    from pystream.client import Producer

    settings = {
        "acks": w.acks,
        "linger_ms": w.linger_ms,
        "batch_size": w.batch_size,
        "enable_idempotence": False,  # as librdkafka's: the same work on both sides
        **w.settings,
    }
    latencies: list[float] = []
    clock = time.perf_counter
    step = max(1, count // max(1, samples))

    def sample(future: Any) -> None:
        sent = clock()
        future.add_done_callback(lambda _f: latencies.append((clock() - sent) * 1000))

    with Producer(w.bootstrap, **settings) as producer:
        producer.partitions_for(w.topic)  # metadata before the clock starts
        ready()
        throttle = Throttle(w.throughput)
        start = time.monotonic_ns()
        if w.api == "send_batch":
            _send_batches(producer, w, count, first, first_partition, throttle, sample, update)
        else:
            _send_each(producer, w, count, first, first_partition, step, throttle, sample, update)
        producer.flush(w.timeout_s)
        end = time.monotonic_ns()
    update(count)
    return Share(count, count * w.record_size, start, end, latencies)


def _send_each(
    producer: Any,
    w: ProduceWorkload,
    count: int,
    first: int,
    first_partition: int,
    step: int,
    throttle: Throttle,
    sample: Callable[[Any], None],
    update: Progress,
) -> None:
    """``send()`` per record; every ``step``-th record's acknowledgement is timed."""
    send, topic, payload = producer.send, w.topic, bytes(w.record_size)
    for start, end, partition in _slices(w, count, first_partition, throttle.rate):
        for i in range(start, end, step):
            stop = min(end, i + step)
            if w.keyed:
                sample(send(topic, payload, (first + i).to_bytes(8, "big")))
                for k in range(first + i + 1, first + stop):
                    send(topic, payload, k.to_bytes(8, "big"))
            else:
                sample(send(topic, payload, partition=partition))
                for _ in range(i + 1, stop):
                    send(topic, payload, partition=partition)
        update(end)
        throttle.wait(end)


def _send_batches(
    producer: Any,
    w: ProduceWorkload,
    count: int,
    first: int,
    first_partition: int,
    throttle: Throttle,
    sample: Callable[[Any], None],
    update: Progress,
) -> None:
    """``send_batch()`` per batch's worth of rows of one numpy array; each call's
    acknowledgement (its last batch) is one latency sample."""
    values: Any = np.zeros((w.chunk, w.record_size), dtype=np.uint8)
    if w.record_size == 0:
        values = [b""] * w.chunk
    for start, end, partition in _slices(w, count, first_partition, throttle.rate):
        rows = values[: end - start]
        if w.keyed:
            keys = np.arange(first + start, first + end, dtype=">u8").view(np.uint8)
            sample(producer.send_batch(w.topic, rows, keys.reshape(-1, 8)))
        else:
            sample(producer.send_batch(w.topic, rows, partition=partition))
        update(end)
        throttle.wait(end)


def _confluent_produce(
    w: ProduceWorkload,
    count: int,
    first: int,
    first_partition: int,
    samples: int,
    ready: Callable[[], None],
    update: Progress,
) -> Share:
    from confluent_kafka import KafkaException, Producer

    errors: list[str] = []
    config = {
        "bootstrap.servers": w.bootstrap,
        **LIBRDKAFKA_PRODUCER,
        "acks": w.acks,
        "linger.ms": w.linger_ms,
        "batch.size": w.batch_size,
        "partitioner": "murmur2_random",  # Kafka's (and pystream's) for keyed records
        "delivery.report.only.error": False,  # the sampled records' callbacks must run
        "error_cb": lambda err: errors.append(err.str()),
        **w.librdkafka,
    }
    try:
        producer = Producer(config)
    except KafkaException as exc:
        raise BenchError(f"confluent-kafka refused its settings: {exc.args[0].str()}") from None
    latencies: list[float] = []
    clock = time.perf_counter
    step = max(1, count // max(1, samples))
    produce, poll, topic, payload = producer.produce, producer.poll, w.topic, bytes(w.record_size)

    def put(key: bytes | None, partition: int, on_delivery: Any = None) -> None:
        while True:
            try:
                if key is None:
                    produce(topic, payload, partition=partition, on_delivery=on_delivery)
                else:
                    produce(topic, payload, key, on_delivery=on_delivery)
                return
            except BufferError:  # its queue is full: serve delivery reports, then retry
                poll(0.001)

    def timed(key: bytes | None, partition: int) -> None:
        sent = clock()
        put(key, partition, lambda _err, _msg: latencies.append((clock() - sent) * 1000))

    producer.list_topics(topic, timeout=10)  # metadata before the clock starts
    ready()
    throttle = Throttle(w.throughput)
    start = time.monotonic_ns()
    for s, end, partition in _slices(w, count, first_partition, throttle.rate):
        for i in range(s, end, step):
            stop = min(end, i + step)
            if w.keyed:
                timed((first + i).to_bytes(8, "big"), -1)
                for k in range(first + i + 1, first + stop):
                    try:
                        produce(topic, payload, k.to_bytes(8, "big"))
                    except BufferError:
                        put(k.to_bytes(8, "big"), -1)
            else:
                timed(None, partition)
                for _ in range(i + 1, stop):
                    try:
                        produce(topic, payload, partition=partition)
                    except BufferError:
                        put(None, partition)
        poll(0)
        update(end)
        throttle.wait(end)
    left = producer.flush(w.timeout_s)
    end_ns = time.monotonic_ns()
    if left:
        why = f" ({errors[-1]})" if errors else ""
        raise BenchError(f"confluent-kafka: {left} records unacknowledged{why}")
    update(count)
    return Share(count, count * w.record_size, start, end_ns, latencies)


# --------------------------------------------------------------------------- consume


def consume_share(
    client: str,
    w: ConsumeWorkload,
    ready: Callable[[], None] | None = None,
    update: Progress = _no_progress,
) -> Share:
    """Read ``w.ranges`` with ``client``; each poll that returned records is a latency
    sample (how long it waited).  Raises :class:`BenchError` when ``w.timeout_s`` passes
    without a record."""
    consume = _pystream_consume if client == "pystream" else _confluent_consume
    return consume(w, ready or (lambda: None), update)


class _Progress:
    """Counts what was read of each partition's range; knows when all is read.

    Per-record Python work would cost either client a good part of its speed, so a
    poll's records are counted by C-level ``map``s: a poll whose highest offset is below
    every range's last is counted whole; only the others go record by record.
    """

    def __init__(self, w: ConsumeWorkload) -> None:
        self.stops = {p: stop for p, (_, stop) in w.ranges.items()}
        self.below = min(self.stops.values()) - 1  # offsets below this end no range
        self.records = self.bytes = 0
        self.timeout_s = w.timeout_s
        self.deadline = time.monotonic() + w.timeout_s

    def add(
        self, batch: list[Any], partition_of: Any, offset_of: Any, size_of: Any, sizes: Any
    ) -> list[int]:
        """Count a poll's records (getters of their fields, ``sizes(batch)``: the sum of
        their value sizes); the partitions it finished."""
        if max(map(offset_of, batch)) < self.below:
            self.records += len(batch)
            self.bytes += sizes(batch)
            return []
        fields = zip(
            map(partition_of, batch), map(offset_of, batch), map(size_of, batch), strict=True
        )
        finished = [p for p, offset, size in fields if self._take(p, offset, size)]
        if finished and self.stops:
            self.below = min(self.stops.values()) - 1
        return finished

    def _take(self, partition: int, offset: int, size: int) -> bool:
        """Count one record; True when it was its partition's last."""
        stop = self.stops.get(partition, -1)
        if offset >= stop:
            return False
        self.records += 1
        self.bytes += size
        if offset == stop - 1:
            del self.stops[partition]
            return True
        return False

    def idle(self, got: bool, total: int) -> float:
        """The next poll's timeout; raises when nothing came for ``timeout_s``."""
        now = time.monotonic()
        if got:
            self.deadline = now + self.timeout_s
        elif now > self.deadline:
            raise BenchError(
                f"only {self.records} of {total} records arrived within "
                f"{self.timeout_s:g} s of idle time"
            )
        return min(1.0, max(0.01, self.deadline - now))


_PARTITION, _OFFSET = operator.attrgetter("partition"), operator.attrgetter("offset")
_PARTITION_OF, _OFFSET_OF = operator.methodcaller("partition"), operator.methodcaller("offset")
_ERROR = operator.methodcaller("error")  # confluent-kafka: None, or a (truthy) KafkaError


_VALUE = operator.attrgetter("value")


def _value_size(record: Any) -> int:
    value = record.value
    return 0 if value is None else len(value)


def _value_sizes(records: list[Any]) -> int:
    try:
        return sum(map(len, map(_VALUE, records)))
    except TypeError:  # a None value
        return sum(map(_value_size, records))


def _message_sizes(messages: list[Any]) -> int:
    return sum(map(len, messages))


def _pystream_consume(w: ConsumeWorkload, ready: Callable[[], None], update: Progress) -> Share:
    from pystream.client import Consumer, TopicPartition

    settings = {
        "max_partition_fetch_bytes": FETCH_PARTITION_BYTES,
        "enable_auto_commit": False,
        # The ranges start at the log start: no seek.  (assign() starts fetching at the
        # reset position at once; from "latest" that fetch waits fetch.max.wait.ms, 500 ms,
        # for data, and a seek's fetch waits behind it.)
        "auto_offset_reset": "earliest",
        **w.settings,
    }
    total, latencies = w.records, []
    state = _Progress(w)
    clock = time.perf_counter
    with Consumer(bootstrap_servers=w.bootstrap, **settings) as consumer:
        consumer.partitions_for(w.topic)  # metadata before the clock starts
        tps = {p: TopicPartition(w.topic, p) for p in w.ranges}
        ready()
        # The clock starts before the assignment, as confluent-kafka's: fetching starts there.
        start = time.monotonic_ns()
        consumer.assign(list(tps.values()))
        for p, (first, _) in w.ranges.items():
            if consumer.position(tps[p]) != first:  # a seek drops what was fetched
                consumer.seek(tps[p], first)
        timeout = 1.0
        while state.stops:
            before = clock()
            records = consumer.poll(timeout, max_records=CONSUME_BATCH)
            if records:
                latencies.append((clock() - before) * 1000)
                for p in state.add(records, _PARTITION, _OFFSET, _value_size, _value_sizes):
                    consumer.pause(tps[p])
                update(state.records)
            timeout = state.idle(bool(records), total)
        end = time.monotonic_ns()
    return Share(state.records, state.bytes, start, end, latencies)


def _confluent_consume(w: ConsumeWorkload, ready: Callable[[], None], update: Progress) -> Share:
    from confluent_kafka import Consumer, TopicPartition

    # bench/e2e.py's consumer: no group joined (manual assignment), a big prefetch.
    consumer = Consumer(
        {
            "bootstrap.servers": w.bootstrap,
            "group.id": f"pystream-bench-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "max.partition.fetch.bytes": FETCH_PARTITION_BYTES,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "queued.min.messages": 1_000_000,
            "queued.max.messages.kbytes": 256 * 1024,
            "fetch.queue.backoff.ms": 10,
            **w.librdkafka,
        }
    )
    total, latencies = w.records, []
    state = _Progress(w)
    clock = time.perf_counter
    try:
        consumer.list_topics(w.topic, timeout=10)
        tps = [TopicPartition(w.topic, p, first) for p, (first, _) in w.ranges.items()]
        ready()
        start = time.monotonic_ns()
        consumer.assign(tps)
        timeout = 1.0
        while state.stops:
            before = clock()
            batch = consumer.consume(CONSUME_BATCH, timeout)
            if batch:
                latencies.append((clock() - before) * 1000)
                if any(map(_ERROR, batch)):
                    error = next(m.error() for m in batch if m.error() is not None)
                    raise BenchError(f"confluent-kafka consumer: {error.str()}")
                for p in state.add(batch, _PARTITION_OF, _OFFSET_OF, len, _message_sizes):
                    consumer.pause([TopicPartition(w.topic, p)])
                update(state.records)
            timeout = state.idle(bool(batch), total)
        end = time.monotonic_ns()
    finally:
        consumer.close()
    return Share(state.records, state.bytes, start, end, latencies)


# --------------------------------------------------------------------------- processes


def _child(
    target: Callable[..., Share], args: tuple, barrier: Any, results: Any, index: int
) -> None:
    """One worker process: run ``target(*args, ready)`` after the barrier; report."""
    try:
        share = target(*args, lambda: barrier.wait(timeout=60))
        results.put((index, share, None))
    except Exception as exc:  # the parent reports it
        barrier.abort()
        results.put((index, None, _one_line(exc)))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_shares(
    target: Callable[..., Share], args: list[tuple], update: Progress = _no_progress
) -> list[Share]:
    """``target(*a, ready)`` for each ``a`` of ``args``: in this process for one (with
    ``update``), else one spawned process each, started together by a barrier."""
    if len(args) == 1:
        return [target(*args[0], None, update)]
    mp = multiprocessing.get_context("spawn")
    barrier, results = mp.Barrier(len(args)), mp.Queue()
    procs = [
        mp.Process(target=_child, args=(target, a, barrier, results, i), daemon=True)
        for i, a in enumerate(args)
    ]
    for proc in procs:
        proc.start()
    shares: dict[int, Share] = {}
    errors: list[str] = []
    try:
        while len(shares) + len(errors) < len(procs):
            try:
                index, share, error = results.get(timeout=0.5)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead and results.empty():
                    raise BenchError(
                        f"a bench process exited with status {dead[0].exitcode} without reporting"
                    ) from None
                continue
            if error is not None:
                errors.append(error)
            else:
                shares[index] = share
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
    if errors:
        first = next((e for e in errors if "BrokenBarrierError" not in e), errors[0])
        raise BenchError(f"{len(errors)} of {len(procs)} processes failed: {first}")
    return [shares[i] for i in range(len(procs))]
