"""``pystream bench produce|consume|e2e`` (like ``kafka-producer-perf-test.sh``).

A progress bar (on stderr, when it is a terminal) while the run goes, then one
summary line: records/s, MB/s and latency percentiles in milliseconds;
``--json`` adds one JSON object as the last line.  Latency means: *produce* --
send() until the broker acknowledged; *consume* -- how long each poll() that
returned records waited; *e2e* -- send() in this process until the consumer
(in the same process) received the record.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import numpy as np

from pystream.cli.common import (
    admin_client,
    client_settings,
    connection_options,
    kafka_properties,
    make_client,
)

_MAX_SAMPLES = 50_000


def summarize(records: int, total_bytes: int, seconds: float, latencies_ms: list[float]) -> dict:
    """Throughput and latency percentiles of one run."""
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


def summary_line(verb: str, result: dict) -> str:
    """Kafka's perf-test summary line."""
    line = (
        f"{result['records']} records {verb}, {result['records_per_sec']:.1f} records/sec "
        f"({result['mb_per_sec']:.2f} MB/sec)"
    )
    if "latency_avg_ms" in result:
        line += (
            f", {result['latency_avg_ms']:.2f} ms avg latency, "
            f"{result['latency_max_ms']:.2f} ms max latency, "
            f"{result['latency_p50_ms']:.2f} ms 50th, {result['latency_p95_ms']:.2f} ms 95th, "
            f"{result['latency_p99_ms']:.2f} ms 99th, {result['latency_p999_ms']:.2f} ms 99.9th."
        )
    return line


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


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (only on a terminal); yields ``update(completed)``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    console = Console(stderr=True)
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    task = progress.add_task(label, total=total)
    with progress:
        yield lambda completed: progress.update(task, completed=completed)


def ensure_topic(bootstrap: str, command_config: str | None, topic: str, partitions: int) -> None:
    """Create ``topic`` if it does not exist (``partitions`` -1: the broker default)."""
    from pystream.client import NewTopic
    from pystream.errors import TopicAlreadyExistsError

    with admin_client(bootstrap, command_config) as admin:
        if topic in admin.list_topics(internal=True):
            return
        try:
            admin.create_topics([NewTopic(topic, num_partitions=partitions)])
        except TopicAlreadyExistsError:
            pass


def bench_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every bench command shares."""
    options = [
        click.option("--topic", required=True, help="Topic (created if missing)."),
        click.option("--num-records", type=click.IntRange(min=1), required=True),
        click.option("--record-size", type=click.IntRange(min=0), default=100, show_default=True),
        click.option(
            "--throughput", type=float, default=-1, help="Records/s cap (-1: unthrottled)."
        ),
        click.option("--partitions", type=int, default=-1, help="Partitions if created."),
        click.option("--producer-property", "producer_props", multiple=True, metavar="K=V"),
        click.option("--consumer-property", "consumer_props", multiple=True, metavar="K=V"),
        click.option(
            "--timeout-ms",
            type=click.IntRange(min=1),
            default=30_000,
            show_default=True,
            help="Give up when no record arrived for this long.",
        ),
        click.option("--json", "as_json", is_flag=True, help="End with one JSON object line."),
        connection_options,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def report(verb: str, result: dict, as_json: bool) -> None:
    """The summary line, then (with ``--json``) the result as one JSON line."""
    click.echo(summary_line(verb, result))
    if as_json:
        click.echo(json.dumps(result, separators=(",", ":")))


@click.group()
def bench() -> None:
    """Measure produce, consume and end-to-end throughput and latency."""


def _run_produce(
    producer: Any,
    topic: str,
    payloads: Callable[[int], bytes],
    n: int,
    rate: float,
    update: Callable[[int], None],
    latencies: list[float],
) -> float:
    """Send ``n`` records, sampling ack latency; returns the elapsed seconds."""
    step = max(1, n // _MAX_SAMPLES)
    throttle = Throttle(rate)
    clock = time.perf_counter
    report_every = max(1, n // 200)
    start = clock()
    for i in range(n):
        future = producer.send(topic, payloads(i))
        if i % step == 0:
            sent = clock()
            future.add_done_callback(lambda f, t=sent: latencies.append((clock() - t) * 1000))
        if i % report_every == 0:
            update(i)
            throttle.wait(i)
    producer.flush()
    elapsed = clock() - start
    update(n)
    return elapsed


@bench.command("produce")
@bench_options
@click.option("--acks", default="all", type=click.Choice(["all", "-1", "0", "1"]))
def produce_bench(
    topic: str,
    num_records: int,
    record_size: int,
    throughput: float,
    partitions: int,
    producer_props: tuple[str, ...],
    consumer_props: tuple[str, ...],
    timeout_ms: int,
    as_json: bool,
    bootstrap_server: str,
    command_config: str | None,
    acks: str,
) -> None:
    """Send records as fast as allowed; report throughput and ack latency."""
    from pystream.client import Producer

    ensure_topic(bootstrap_server, command_config, topic, partitions)
    payload = bytes(record_size)
    settings = {
        **client_settings(command_config),
        "acks": acks,
        **kafka_properties(producer_props, "--producer-property"),
    }
    latencies: list[float] = []
    with make_client(Producer, bootstrap_server, **settings) as producer:
        with progress_bar(num_records, "producing") as update:
            elapsed = _run_produce(
                producer, topic, lambda i: payload, num_records, throughput, update, latencies
            )
    result = summarize(num_records, num_records * record_size, elapsed, latencies)
    report("sent", result, as_json)


@bench.command("consume")
@bench_options
def consume_bench(
    topic: str,
    num_records: int,
    record_size: int,
    throughput: float,
    partitions: int,
    producer_props: tuple[str, ...],
    consumer_props: tuple[str, ...],
    timeout_ms: int,
    as_json: bool,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Read --num-records records from the start of the topic; report throughput."""
    from pystream.client import Consumer, TopicPartition

    settings = {
        **client_settings(command_config),
        **kafka_properties(consumer_props, "--consumer-property"),
    }
    with make_client(Consumer, bootstrap_servers=bootstrap_server, **settings) as consumer:
        parts = consumer.partitions_for(topic)
        if not parts:
            raise click.ClickException(f"topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        latencies: list[float] = []
        with progress_bar(num_records, "consuming") as update:
            count, size, elapsed = _consume(
                consumer, num_records, timeout_ms, update, latencies, None
            )
    if count < num_records:
        raise click.ClickException(
            f"only {count} of {num_records} records arrived within {timeout_ms} ms of idle time"
        )
    report("consumed", summarize(count, size, elapsed, latencies), as_json)


def _consume(
    consumer: Any,
    n: int,
    timeout_ms: int,
    update: Callable[[int], None],
    poll_latencies: list[float],
    e2e_latencies: list[float] | None,
) -> tuple[int, int, float]:
    """Poll until ``n`` records or ``timeout_ms`` without one: (count, bytes, seconds)."""
    clock = time.perf_counter
    count = size = 0
    start = clock()
    idle_deadline = start + timeout_ms / 1000
    while count < n:
        before = clock()
        if before > idle_deadline:
            break
        records = consumer.poll(min(1.0, idle_deadline - before), max_records=n - count)
        if not records:
            continue
        now = clock()
        poll_latencies.append((now - before) * 1000)
        idle_deadline = now + timeout_ms / 1000
        for record in records:
            value = record.value or b""
            size += len(value)
            if e2e_latencies is not None and len(value) >= 8:
                sent_ns = int.from_bytes(value[:8], "big")
                e2e_latencies.append((time.perf_counter_ns() - sent_ns) / 1e6)
        count += len(records)
        update(count)
    return count, size, clock() - start


@bench.command("e2e")
@bench_options
def e2e_bench(
    topic: str,
    num_records: int,
    record_size: int,
    throughput: float,
    partitions: int,
    producer_props: tuple[str, ...],
    consumer_props: tuple[str, ...],
    timeout_ms: int,
    as_json: bool,
    bootstrap_server: str,
    command_config: str | None,
) -> None:
    """Produce and consume at once; report throughput and send-to-receive latency."""
    from pystream.client import Consumer, Producer, TopicPartition

    if record_size < 8:
        raise click.UsageError("e2e needs --record-size of at least 8 (it carries a timestamp)")
    ensure_topic(bootstrap_server, command_config, topic, partitions)
    common = client_settings(command_config)
    consumer = make_client(
        Consumer,
        bootstrap_servers=bootstrap_server,
        **{**common, **kafka_properties(consumer_props, "--consumer-property")},
    )
    producer = make_client(
        Producer,
        bootstrap_server,
        **{**common, **kafka_properties(producer_props, "--producer-property")},
    )
    errors: list[BaseException] = []
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for(topic))]
        consumer.assign(tps)
        for tp in tps:
            consumer.position(tp)  # fix the start before producing
        filler = bytes(record_size - 8)

        def payload(i: int) -> bytes:
            return time.perf_counter_ns().to_bytes(8, "big") + filler

        def run() -> None:
            try:
                _run_produce(producer, topic, payload, num_records, throughput, _ignore, [])
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        sender = threading.Thread(target=run, name="bench-producer", daemon=True)
        latencies: list[float] = []
        with progress_bar(num_records, "end to end") as update:
            sender.start()
            count, size, elapsed = _consume(
                consumer, num_records, timeout_ms, update, [], latencies
            )
            sender.join(timeout_ms / 1000)
    finally:
        producer.close(5)
        consumer.close()
    if errors:
        raise errors[0]
    if count < num_records:
        raise click.ClickException(
            f"only {count} of {num_records} records arrived within {timeout_ms} ms of idle time"
        )
    report("end to end", summarize(count, size, elapsed, latencies), as_json)


def _ignore(_: int) -> None:
    """A progress callback that does nothing."""
