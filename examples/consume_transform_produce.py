"""Consume-transform-produce, exactly once, with pystream's own client.

Reads ``--input`` as a member of ``--group`` (read_committed), writes each record's
value upper-cased to ``--output``, and commits the consumed offsets in the same
transaction as the output records: after a crash (even SIGKILL mid-transaction)
and a restart with the same ``--transactional-id``, every input record is in the
output exactly once for read_committed readers.

    pystream serve &                      # a broker on localhost:9092
    python examples/consume_transform_produce.py --input in --output out --group upper

Order matters at start-up: ``init_transactions()`` comes first, so the crashed
instance's open transaction (records and offsets) is aborted before this
instance's consumer reads the group's committed offsets.
"""

from __future__ import annotations

import argparse
import signal
import time

import pystream
from pystream import OffsetAndMetadata, TopicPartition


def transform(value: bytes | None) -> bytes | None:
    return None if value is None else value.upper()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", default="localhost:9092")
    parser.add_argument("--input", default="ctp-input", help="topic to consume")
    parser.add_argument("--output", default="ctp-output", help="topic to produce to")
    parser.add_argument("--group", default="ctp-transformer", help="consumer group id")
    parser.add_argument(
        "--transactional-id",
        help="stable across restarts of this instance (default: GROUP-transformer)",
    )
    parser.add_argument("--session-timeout-ms", type=int, default=10_000)
    parser.add_argument(
        "--max-poll-records", type=int, default=500, help="at most this many per transaction"
    )
    parser.add_argument(
        "--max-idle-s",
        type=float,
        default=None,
        help="exit after this many seconds without input (default: run until Ctrl-C)",
    )
    args = parser.parse_args(argv)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    producer = pystream.Producer(
        args.bootstrap_servers,
        transactional_id=args.transactional_id or f"{args.group}-transformer",
    )
    producer.init_transactions(60)
    consumer = pystream.Consumer(
        args.input,
        bootstrap_servers=args.bootstrap_servers,
        group_id=args.group,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        session_timeout_ms=args.session_timeout_ms,
        max_poll_records=args.max_poll_records,
    )
    processed = 0
    idle_since = time.monotonic()
    try:
        while not stop:
            records = consumer.poll(0.5)
            if not records:
                if args.max_idle_s is not None and time.monotonic() - idle_since > args.max_idle_s:
                    break
                continue
            idle_since = time.monotonic()
            offsets: dict[TopicPartition, OffsetAndMetadata] = {}
            with producer.transaction():
                for record in records:
                    producer.send(args.output, transform(record.value), key=record.key)
                    offsets[TopicPartition(record.topic, record.partition)] = OffsetAndMetadata(
                        record.offset + 1
                    )
                # The current generation and member id: the coordinator refuses offsets
                # from a member that was rebalanced out meanwhile (a zombie, KIP-447).
                producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
            processed += len(records)
            print(f"committed {len(records)} records ({processed} in all)", flush=True)
    finally:
        consumer.close()
        producer.close(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
