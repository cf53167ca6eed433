"""``pystream bench produce|consume|e2e`` (like ``kafka-producer-perf-test.sh``).

A progress bar (on stderr, when it is a terminal) while the run goes, then one
summary line: records/s, MB/s and latency percentiles in milliseconds;
``--json`` adds one JSON object as the last line.  Latency means: *produce* --
send() until the broker acknowledged; *consume* -- how long each poll() that
returned records waited; *e2e* -- send() in this process until the consumer
(in the same process) received the record.

``produce`` and ``consume`` also take ``--processes N`` (N processes, each its
share, one summary), ``--compare`` (the same workload through confluent-kafka
right after, alternating which goes first, in a side-by-side table) and
``--runs N`` (median and min-max of N runs).  Bench scripts call the same code
through :func:`run_produce`, :func:`run_consume` and :func:`run_series`.
"""

from __future__ import annotations

import importlib
import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from pystream.cli.bench_workload import (
    CLIENT_NAMES,
    MAX_SAMPLES,
    BenchError,
    ConsumeWorkload,
    ProduceWorkload,
    Throttle,
    aggregate,
    consume_share,
    produce_share,
    run_shares,
    split_count,
    summarize,
)
from pystream.cli.common import (
    admin_client,
    client_settings,
    connection_options,
    kafka_properties,
    make_client,
    parse_properties,
    read_properties,
)

__all__ = [
    "BenchError",
    "run_consume",
    "run_produce",
    "run_series",
    "series_summary",
    "summarize",
]

Progress = Callable[[int], None]


def _no_progress(_: int) -> None:
    """A progress callback that does nothing."""


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
    """Create ``topic`` if it does not exist (``partitions`` -1: the broker default); an
    existing one must have ``partitions`` partitions if that is positive."""
    with admin_client(bootstrap, command_config) as admin:
        _topic_layout(admin, topic, partitions, create=True)


# --------------------------------------------------------------------------- the API


def _topic_layout(
    admin: Any, topic: str, partitions: int, create: bool
) -> dict[int, tuple[int, int]]:
    """``{partition: (log_start_offset, high_watermark)}`` of ``topic``; created with
    ``partitions`` (-1: the broker's ``num.partitions``) first if missing and ``create``.
    An existing topic with another count than a positive ``partitions`` is an error."""
    from pystream.client import NewTopic, TopicPartition
    from pystream.errors import TopicAlreadyExistsError

    if topic not in admin.list_topics(internal=True):
        if not create:
            raise BenchError(f"topic {topic!r} does not exist")
        try:
            admin.create_topics([NewTopic(topic, num_partitions=partitions)])
        except TopicAlreadyExistsError:
            pass
    deadline = time.monotonic() + 10
    while not (found := admin.describe_topics([topic])[topic].partitions):
        if time.monotonic() > deadline:  # a cluster's metadata can lag a creation briefly
            raise BenchError(f"topic {topic!r} has no partitions in the metadata")
        time.sleep(0.1)
    if partitions > 0 and len(found) != partitions:
        raise BenchError(
            f"topic {topic!r} exists with {len(found)} partitions, not --partitions "
            f"{partitions}: omit --partitions to use its {len(found)}, or name a new topic"
        )
    tps = [TopicPartition(topic, p.partition) for p in found]
    low = admin.list_offsets({tp: "earliest" for tp in tps})
    high = admin.list_offsets({tp: "latest" for tp in tps})
    return {tp.partition: (low[tp], high[tp]) for tp in sorted(tps)}


def _settings(properties: dict[str, str], command_config: str | None, what: str) -> dict:
    """Kafka client properties as pystream keyword arguments (``--command-config`` first)."""
    items = tuple(f"{k}={v}" for k, v in properties.items())
    return {**client_settings(command_config), **kafka_properties(items, what)}


def _librdkafka(properties: dict[str, str], command_config: str | None) -> dict[str, str]:
    """The same properties for librdkafka, which takes Kafka's names as they are."""
    return {**(read_properties(command_config) if command_config else {}), **properties}


def run_produce(
    bootstrap: str,
    topic: str,
    records: int,
    record_size: int = 100,
    *,
    client: str = "pystream",
    api: str = "send",
    partitions: int = -1,
    processes: int = 1,
    acks: str = "1",
    keyed: bool = False,
    throughput: float = -1,
    timeout_s: float = 60.0,
    properties: dict[str, str] | None = None,
    command_config: str | None = None,
    update: Progress = _no_progress,
) -> dict[str, Any]:
    """Produce ``records`` records of ``record_size`` bytes to ``topic`` and return the
    summary (:func:`summarize`'s keys, plus the workload's and ``stored``: how much the
    partitions' high watermarks grew, checked to be at least ``records`` unless acks=0).

    ``client``: ``"pystream"`` or ``"confluent"``; ``api``: pystream's ``"send"`` or
    ``"send_batch"``; ``partitions``: the topic is created with that many if missing
    (-1: the broker's default), and an existing topic must have as many; records go to
    the partitions in turn, a batch at a time, or by key with ``keyed``.  ``processes``:
    each produces its share, started together (spawned: the caller's main module must
    be importable, i.e. behind ``if __name__ == "__main__"``).  ``properties``: Kafka
    producer properties (``linger.ms``, ``batch.size``, ...) for either client.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    if client not in CLIENT_NAMES or api not in ("send", "send_batch"):
        raise ValueError(
            f"client must be one of {', '.join(CLIENT_NAMES)} and api send or send_batch, "
            f"not {client!r} and {api!r}"
        )
    props = dict(properties or {})
    with admin_client(bootstrap, command_config) as admin:
        layout = _topic_layout(admin, topic, partitions, create=True)
        before = sum(high for _, high in layout.values())
        workload = ProduceWorkload(
            bootstrap,
            topic,
            records,
            record_size,
            partitions=len(layout),
            acks=acks,
            linger_ms=float(props.get("linger.ms", 5)),
            batch_size=int(props.get("batch.size", 1_000_000)),
            api=api,
            keyed=keyed,
            throughput=throughput / processes if throughput > 0 else -1,
            timeout_s=timeout_s,
            settings=_settings(props, command_config, "--producer-property"),
            librdkafka=_librdkafka(props, command_config),
        )
        counts = split_count(records, processes)
        args = [
            (client, workload, n, sum(counts[:j]), j % len(layout), MAX_SAMPLES // processes)
            for j, n in enumerate(counts)
        ]
        result = aggregate(run_shares(produce_share, args, update))
        stored = _stored(admin, topic, layout, before, records if acks != "0" else 0)
    if stored < records and acks != "0":
        raise BenchError(
            f"{CLIENT_NAMES[client]}: the high watermarks of {topic!r} grew by {stored}, "
            f"not the {records} records produced"
        )
    result.update(
        client=client,
        api=api if client == "pystream" else "produce",
        processes=processes,
        partitions=len(layout),
        record_size=record_size,
        acks=acks,
        stored=stored,
    )
    return result


def _stored(
    admin: Any, topic: str, layout: dict[int, tuple[int, int]], before: int, expected: int
) -> int:
    """How much the high watermarks grew, waiting up to 10 s for ``expected`` (with acks=1
    in a cluster the high watermark follows the followers)."""
    deadline = time.monotonic() + 10
    while True:
        now = _topic_layout(admin, topic, len(layout), create=False)
        grown = sum(high for _, high in now.values()) - before
        if grown >= expected or time.monotonic() > deadline:
            return grown
        time.sleep(0.1)


def consume_ranges(
    layout: dict[int, tuple[int, int]], records: int, topic: str
) -> dict[int, tuple[int, int]]:
    """Which offsets to read to get ``records`` records from the start of the partitions:
    as even a share of each as their sizes allow."""
    available = sum(high - low for low, high in layout.values())
    if available < records:
        raise BenchError(f"only {available} of {records} records are in topic {topic!r}")
    ranges: dict[int, tuple[int, int]] = {}
    left = records
    by_size = sorted(layout.items(), key=lambda item: item[1][1] - item[1][0])
    for k, (partition, (low, high)) in enumerate(by_size):
        take = min(high - low, -(-left // (len(by_size) - k)))
        if take:
            ranges[partition] = (low, low + take)
        left -= take
    return dict(sorted(ranges.items()))


def run_consume(
    bootstrap: str,
    topic: str,
    records: int,
    *,
    client: str = "pystream",
    partitions: int = -1,
    processes: int = 1,
    timeout_s: float = 30.0,
    properties: dict[str, str] | None = None,
    command_config: str | None = None,
    update: Progress = _no_progress,
) -> dict[str, Any]:
    """Read ``records`` records from the start of ``topic``'s partitions (an even share
    of each, see :func:`consume_ranges`) and return the summary.  ``processes``: each
    is assigned its share of the partitions (so at most one per partition with records).
    ``partitions``, if positive, is how many the topic must have.
    Raises :class:`BenchError` if the topic has fewer records, or none arrives for
    ``timeout_s``."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    if client not in CLIENT_NAMES:
        raise ValueError(f"client {client!r}: use one of {', '.join(CLIENT_NAMES)}")
    props = dict(properties or {})
    with admin_client(bootstrap, command_config) as admin:
        layout = _topic_layout(admin, topic, partitions, create=False)
    ranges = consume_ranges(layout, records, topic)
    parts = list(ranges)
    if processes > len(parts):
        raise BenchError(
            f"--processes {processes} needs as many partitions to read; {topic!r} has "
            f"{len(parts)} with records (each process reads whole partitions)"
        )
    args = [
        (
            client,
            ConsumeWorkload(
                bootstrap,
                topic,
                {p: ranges[p] for p in parts[j::processes]},
                timeout_s=timeout_s,
                settings=_settings(props, command_config, "--consumer-property"),
                librdkafka=_librdkafka(props, command_config),
            ),
        )
        for j in range(processes)
    ]
    result = aggregate(run_shares(consume_share, args, update))
    result.update(client=client, processes=processes, partitions=len(layout))
    return result


def run_series(
    run: Callable[[str], dict[str, Any]], clients: list[str], runs: int
) -> dict[str, list[dict[str, Any]]]:
    """``run(client)`` ``runs`` times for each client, alternating which goes first
    (so neither always meets a warmer broker); the summaries per client."""
    series: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
    for r in range(runs):
        for client in clients if r % 2 == 0 else clients[::-1]:
            series[client].append(run(client))
    return series


SERIES_KEYS = ("records_per_sec", "mb_per_sec", "latency_p50_ms", "latency_p99_ms")


def series_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max over runs of records/s, MB/s, p50 and p99."""
    out: dict[str, Any] = {"runs": results}
    for stat, fn in (("median", statistics.median), ("min", min), ("max", max)):
        out[stat] = {k: round(fn(r[k] for r in results), 3) for k in SERIES_KEYS if k in results[0]}
    return out


def _ratio(series: dict[str, dict[str, Any]]) -> dict[str, float]:
    """pystream's median over confluent-kafka's, per figure."""
    mine, theirs = series["pystream"]["median"], series["confluent"]["median"]
    return {k: round(mine[k] / theirs[k], 3) for k in mine if k in theirs and theirs[k]}


SERIES_HEAD = ("client", "records/s", "MB/s", "p50 ms", "p99 ms")


def series_rows(series: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """Per client (of :func:`series_summary`s): its name and each figure's median
    (min-max); with both clients, then the ratio of the medians."""

    def spread(s: dict[str, Any], key: str, fmt: str) -> str:
        med, lo, hi = (s[stat].get(key) for stat in ("median", "min", "max"))
        if med is None:
            return "-"
        text = format(med, fmt)
        return text if len(s["runs"]) == 1 else f"{text} ({format(lo, fmt)}-{format(hi, fmt)})"

    formats = dict(zip(SERIES_KEYS, (",.0f", ".1f", ".2f", ".2f"), strict=True))
    rows = [
        (CLIENT_NAMES[client], *(spread(s, k, formats[k]) for k in SERIES_KEYS))
        for client, s in series.items()
    ]
    if len(series) == 2:
        ratio = _ratio(series)
        cells = (f"{ratio[k]:.2f}x" if k in ratio else "-" for k in SERIES_KEYS)
        rows.append(("pystream/confluent", *cells))
    return rows


def format_table(head: tuple[str, ...], rows: list[tuple[str, ...]], left: int = 1) -> list[str]:
    """Aligned text columns: the first ``left`` to the left, the figures to the right."""
    widths = [max(len(row[i]) for row in (head, *rows)) for i in range(len(head))]
    return [
        "  ".join(
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in (head, *rows)
    ]


def series_table(series: dict[str, dict[str, Any]]) -> list[str]:
    """The side-by-side table of ``--compare``/``--runs``."""
    runs = len(next(iter(series.values()))["runs"])
    caption = [f"median of {runs} runs (min-max)"] if runs > 1 else []
    return caption + format_table(SERIES_HEAD, series_rows(series))


# --------------------------------------------------------------------------- the commands


def bench_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every bench command shares."""
    options = [
        click.option("--topic", required=True, help="Topic (created if missing)."),
        click.option("--num-records", "--records", type=click.IntRange(min=1), required=True),
        click.option("--record-size", type=click.IntRange(min=0), default=100, show_default=True),
        click.option(
            "--throughput", type=float, default=-1, help="Records/s cap (-1: unthrottled)."
        ),
        click.option(
            "--partitions",
            type=int,
            default=-1,
            help="Create the topic with this many if missing; an existing topic must "
            "have as many (-1: the broker's num.partitions, or the topic's).",
        ),
        click.option("--producer-property", "producer_props", multiple=True, metavar="K=V"),
        click.option("--consumer-property", "consumer_props", multiple=True, metavar="K=V"),
        click.option(
            "--timeout-ms",
            type=click.IntRange(min=1),
            default=30_000,
            show_default=True,
            help="Give up when no record arrived for this long (produce: when the last "
            "acknowledgements take longer).",
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
    step = max(1, n // MAX_SAMPLES)
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


def series_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--processes``, ``--compare`` and ``--runs`` (produce and consume)."""
    options = [
        click.option(
            "--processes",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Processes, each with its share of the records, in one summary.",
        ),
        click.option(
            "--compare",
            is_flag=True,
            help="Also run the workload through confluent-kafka (librdkafka); side by side.",
        ),
        click.option(
            "--runs",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Repeat, and report the median and min-max.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def require_confluent() -> None:
    """Exit 2 with a clear message when confluent-kafka (a bench dependency) is missing."""
    try:
        importlib.import_module("confluent_kafka")
    except ImportError:
        error = click.ClickException(
            "--compare needs the confluent-kafka package, which is not installed "
            "(pip install confluent-kafka)"
        )
        error.exit_code = 2
        raise error from None


def run_command(
    verb: str,
    run: Callable[[str, Progress], dict[str, Any]],
    total: int,
    processes: int,
    compare: bool,
    runs: int,
    as_json: bool,
) -> None:
    """One run (the perf-test summary line), or a series: a line per run, then the table."""
    if compare:
        require_confluent()

    def one(client: str) -> dict[str, Any]:
        label = f"{verb} ({CLIENT_NAMES[client]})"
        with progress_bar(total, label) as update:
            return run(client, update if processes == 1 else _no_progress)

    try:
        if not compare and runs == 1:
            report(verb, one("pystream"), as_json)
            return
        series = run_series(
            lambda client: _echo_run(verb, client, one(client)),
            ["pystream", "confluent"] if compare else ["pystream"],
            runs,
        )
    except BenchError as exc:
        raise click.ClickException(str(exc)) from None
    summaries = {client: series_summary(results) for client, results in series.items()}
    for line in series_table(summaries):
        click.echo(line)
    if as_json:
        document = {
            "runs": runs,
            "clients": summaries,
            "ratio": _ratio(summaries) if compare else {},
        }
        click.echo(json.dumps(document, separators=(",", ":")))


def _echo_run(verb: str, client: str, result: dict[str, Any]) -> dict[str, Any]:
    click.echo(f"{CLIENT_NAMES[client]}: {summary_line(verb, result)}")
    return result


def _check_partitions(partitions: int) -> None:
    if partitions == 0 or partitions < -1:
        raise click.UsageError(f"--partitions must be positive (or -1), not {partitions}")


@bench.command("produce")
@bench_options
@series_options
@click.option(
    "--acks",
    default="1",
    show_default=True,
    type=click.Choice(["all", "-1", "0", "1"]),
    help="As bench/e2e.py's producers (acks=1); both clients get the same.",
)
@click.option(
    "--api",
    type=click.Choice(["send", "send_batch"]),
    default="send",
    show_default=True,
    help="pystream's producer call: send() per record, or send_batch() per batch of a numpy array.",
)
@click.option("--keyed", is_flag=True, help="An 8-byte key per record: partitions by murmur2.")
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
    processes: int,
    compare: bool,
    runs: int,
    acks: str,
    api: str,
    keyed: bool,
) -> None:
    """Send records as fast as allowed; report throughput and ack latency.

    Unkeyed records go to the partitions in turn, a batch (batch.size bytes) at a time.
    Producer settings are bench/e2e.py's (acks=1, linger.ms=5, batch.size=1000000, no
    compression, no idempotence) for pystream and confluent-kafka alike;
    --producer-property changes them for both.
    """
    _check_partitions(partitions)
    properties = parse_properties(producer_props, "--producer-property")

    def run(client: str, update: Progress) -> dict[str, Any]:
        return run_produce(
            bootstrap_server,
            topic,
            num_records,
            record_size,
            client=client,
            api=api,
            partitions=partitions,
            processes=processes,
            acks=acks,
            keyed=keyed,
            throughput=throughput,
            timeout_s=timeout_ms / 1000,
            properties=properties,
            command_config=command_config,
            update=update,
        )

    run_command("sent", run, num_records, processes, compare, runs, as_json)


@bench.command("consume")
@bench_options
@series_options
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
    processes: int,
    compare: bool,
    runs: int,
) -> None:
    """Read --num-records records from the start of the topic; report throughput.

    The records are an even share of each partition (as far as each has them);
    with --processes each process reads its share of the partitions.
    """
    _check_partitions(partitions)
    properties = parse_properties(consumer_props, "--consumer-property")

    def run(client: str, update: Progress) -> dict[str, Any]:
        return run_consume(
            bootstrap_server,
            topic,
            num_records,
            client=client,
            partitions=partitions,
            processes=processes,
            timeout_s=timeout_ms / 1000,
            properties=properties,
            command_config=command_config,
            update=update,
        )

    run_command("consumed", run, num_records, processes, compare, runs, as_json)


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
