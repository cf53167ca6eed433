"""End to end through a real ``pystream connect standalone`` worker and a real broker:
a SQLite table → (SQL source, ValueToKey, JsonConverter with schemas) → topic →
(SQL sink, upserts by the record key, auto.create) → a PostgreSQL table; updated rows
replace theirs, and a restarted worker resumes from its stored offsets.  Records the
sink rejects (no primary key, not an object) go to the dead letter queue.  The HTTP
sink posts a topic to a real local HTTP server, retrying the calls it fails."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg
import pytest
from broker_process import BrokerProcess
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import Producer as KafkaProducer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from connect_process import ConnectWorkerProcess
from http_endpoint import Endpoint
from postgres import PostgresServer, postgres, postgres_database  # noqa: F401 (fixtures)
from waiting import wait_until


@pytest.fixture(scope="module")
def broker(connect_broker: BrokerProcess) -> BrokerProcess:
    return connect_broker  # the session's broker for Connect tests (conftest.py)


SCHEMALESS_JSON = {
    "value.converter": "org.apache.kafka.connect.json.JsonConverter",
    "value.converter.schemas.enable": "false",
}


def produce(broker: BrokerProcess, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer({"bootstrap.servers": broker.bootstrap})
    for value in values:
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0


def sqlite_execute(path: Path, sql: str, rows: list[tuple] | None = None) -> None:
    with sqlite3.connect(path) as conn:  # commits on leaving
        if rows is None:
            conn.execute(sql)
        else:
            conn.executemany(sql, rows)
    conn.close()


def test_sqlite_source_to_topic_to_postgres_upserts(
    broker: BrokerProcess,
    postgres: PostgresServer,  # noqa: F811
    postgres_database: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    source_db = tmp_path / "shop.db"
    sqlite_execute(
        source_db,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL, qty INTEGER, "
        "updated DATETIME NOT NULL)",
    )
    sqlite_execute(
        source_db,
        "INSERT INTO orders VALUES (?, ?, ?, ?)",
        [(i, f"item {i}", i, "2024-01-01 00:00:00") for i in range(1, 51)],
    )

    def pg_rows() -> list[tuple]:
        with psycopg.connect(postgres.dsn(postgres_database)) as conn:
            exists = conn.execute("SELECT to_regclass('orders_copy')").fetchone()[0]
            if exists is None:
                return []
            return conn.execute(
                "SELECT id, item, qty, updated FROM orders_copy ORDER BY id"
            ).fetchall()

    worker = ConnectWorkerProcess(
        tmp_path / "worker",
        broker.bootstrap,
        worker={
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "key.converter.schemas.enable": "true",
            "value.converter.schemas.enable": "true",
        },
        connectors={
            "sqlite-source": {
                "connector.class": "JdbcSourceConnector",
                "connection.url": f"jdbc:sqlite:{source_db}",
                "mode": "timestamp+incrementing",
                "incrementing.column.name": "id",
                "timestamp.column.name": "updated",
                "table.whitelist": "orders",
                "topic.prefix": "sqlite-",
                "poll.interval.ms": "200",
                "transforms": "createKey",
                "transforms.createKey.type": "org.apache.kafka.connect.transforms.ValueToKey",
                "transforms.createKey.fields": "id",
            },
            "postgres-sink": {
                "connector.class": "io.confluent.connect.jdbc.JdbcSinkConnector",
                "connection.url": postgres.url(postgres_database),
                "topics": "sqlite-orders",
                "table.name.format": "orders_copy",
                "insert.mode": "upsert",
                "pk.mode": "record_key",
                "auto.create": "true",
                "batch.size": "20",
            },
        },
    ).start()
    try:
        wait_until(lambda: len(pg_rows()) == 50, 60, "the 50 rows in PostgreSQL")
        rows = pg_rows()
        assert rows[0][:3] == (1, "item 1", 1)
        assert str(rows[0][3]) == "2024-01-01 00:00:00"  # a TIMESTAMP column, in UTC
        # Updated rows come through again and replace theirs (upsert by the key).
        sqlite_execute(
            source_db,
            "UPDATE orders SET qty = qty * 100, updated = '2024-01-02 00:00:00' WHERE id <= 10",
        )
        wait_until(
            lambda: [r[2] for r in pg_rows()[:10]] == [i * 100 for i in range(1, 11)],
            60,
            "the updated quantities in PostgreSQL",
        )
        assert len(pg_rows()) == 50
        assert worker.stop() == 0, worker.output()
    finally:
        worker.close()

    # Rows added while the worker is down are read after the restart, from the stored
    # offset: the earlier rows are not read again (their PostgreSQL copies are changed
    # here, and stay changed).
    with psycopg.connect(postgres.dsn(postgres_database)) as conn:
        conn.execute("UPDATE orders_copy SET item = 'kept' WHERE id <= 50")
    sqlite_execute(
        source_db,
        "INSERT INTO orders VALUES (?, ?, ?, ?)",
        [(i, f"item {i}", i, "2024-01-03 00:00:00") for i in range(51, 61)],
    )
    worker.start()
    try:
        wait_until(lambda: len(pg_rows()) == 60, 60, "the rows added while the worker was down")
        rows = pg_rows()
        assert {r[1] for r in rows[:50]} == {"kept"}
        assert [r[1] for r in rows[50:]] == [f"item {i}" for i in range(51, 61)]
    finally:
        assert worker.stop() == 0, worker.output()


def test_records_the_postgres_sink_rejects_go_to_the_dead_letter_queue(
    broker: BrokerProcess,
    postgres: PostgresServer,  # noqa: F811
    postgres_database: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    produced = [
        b'{"code": "a", "n": 1}',
        b'"not an object"',  # no columns in it
        b'{"n": 2}',  # no "code": the primary key is missing
        b'{"code": "b", "n": 3}',
        b'{"code": "a", "n": 4}',  # replaces the first
    ]
    produce(broker, "events-in", produced)

    def pg_rows() -> list[tuple]:
        with psycopg.connect(postgres.dsn(postgres_database)) as conn:
            if conn.execute("SELECT to_regclass('events_out')").fetchone()[0] is None:
                return []
            return conn.execute("SELECT code, n FROM events_out ORDER BY code").fetchall()

    worker = ConnectWorkerProcess(
        tmp_path / "worker",
        broker.bootstrap,
        worker=SCHEMALESS_JSON,
        connectors={
            "events-sink": {
                "connector.class": "JdbcSink",
                "connection.url": postgres.url(postgres_database),
                "topics": "events-in",
                "table.name.format": "events_out",
                "insert.mode": "upsert",
                "pk.mode": "record_value",
                "pk.fields": "code",
                "auto.create": "true",
                "errors.tolerance": "all",
                "errors.deadletterqueue.topic.name": "events-dlq",
                "errors.deadletterqueue.topic.replication.factor": "1",
                "errors.deadletterqueue.context.headers.enable": "true",
            },
        },
    ).start()
    try:
        wait_until(lambda: pg_rows() == [("a", 4), ("b", 3)], 60, "the good rows in PostgreSQL")
        dead = wait_until(
            lambda: (lambda m: m if len(m) >= 2 else None)(topic_messages(broker, "events-dlq")),
            60,
            "the rejected records in the dead letter queue",
        )
        assert [m.value() for m in dead] == [produced[1], produced[2]]
        headers = dict(dead[1].headers() or [])
        assert b"pk.fields" in headers["__connect.errors.exception.message"]
    finally:
        assert worker.stop() == 0, worker.output()


def test_postgres_sink_loses_nothing_when_its_sessions_are_ended(
    broker: BrokerProcess,
    postgres: PostgresServer,  # noqa: F811
    postgres_database: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """While a real worker upserts a growing topic, the sink's PostgreSQL sessions are
    ended again and again (as a server restart or a failover would): the writes are
    retried, the offset committed for the sink's group never covers a record whose write
    is not in the table, and in the end every key holds its last value."""
    topic, keys, rounds, per_round = "pg-sessions-ended", 150, 8, 300
    dsn = postgres.dsn(postgres_database)

    def rows() -> dict[int, int]:
        with psycopg.connect(dsn) as conn:
            if conn.execute("SELECT to_regclass('pg_ended')").fetchone()[0] is None:
                return {}
            return dict(conn.execute("SELECT id, n FROM pg_ended").fetchall())

    def committed() -> int:
        consumer = KafkaConsumer({"bootstrap.servers": broker.bootstrap,
                                  "group.id": "connect-pg-ended-sink"})  # fmt: skip
        try:
            [tp] = consumer.committed([KafkaTopicPartition(topic, 0)], timeout=10)
            return max(tp.offset, 0)
        finally:
            consumer.close()

    def check_covered() -> int:
        """The rows hold at least every write below the committed offset, key by key."""
        upto = committed()
        table = rows()
        for offset in range(max(0, upto - keys), upto):  # the last write of each key
            assert table.get(offset % keys, -1) >= offset, (offset, upto)
        return upto

    def end_sessions() -> None:
        with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (postgres_database,),
            )

    def produce_round(round_: int) -> None:
        first = round_ * per_round
        produce(broker, topic, [json.dumps({"id": o % keys, "n": o}).encode()
                                for o in range(first, first + per_round)])  # fmt: skip

    produce_round(0)  # the topic exists before the sink starts, as in the tests above
    worker = ConnectWorkerProcess(
        tmp_path / "worker",
        broker.bootstrap,
        worker={**SCHEMALESS_JSON, "offset.flush.interval.ms": "200"},
        connectors={
            "pg-ended-sink": {
                "connector.class": "JdbcSinkConnector",
                "connection.url": postgres.url(postgres_database),
                "topics": topic,
                "table.name.format": "pg_ended",
                "insert.mode": "upsert",
                "pk.mode": "record_value",
                "pk.fields": "id",
                "auto.create": "true",
                "batch.size": "50",
                "retry.backoff.ms": "100",
            },
        },
    ).start()
    try:
        for round_ in range(rounds):
            first = round_ * per_round
            if round_:
                produce_round(round_)
            # Some of this round is written, then the sessions end under the rest.
            wait_until(lambda: max(rows().values(), default=-1) >= first, 60,  # noqa: B023
                       f"round {round_}'s first rows")  # fmt: skip
            end_sessions()
            check_covered()
        total = rounds * per_round
        wait_until(lambda: check_covered() == total, 60, "every offset committed")
        assert rows() == {k: total - keys + k for k in range(keys)}
        # The breaks were seen: by a put (delivered again) or a flush (rewound).
        out = worker.output()
        assert "retriable error from put" in out or "rewinding to the last committed" in out
    finally:
        assert worker.stop() == 0, worker.output()


def topic_messages(broker: BrokerProcess, topic: str) -> list:
    """Every message of partition 0 of ``topic`` (none if it does not exist yet)."""
    consumer = KafkaConsumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "dlq-check",
         "enable.auto.commit": False}
    )  # fmt: skip
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            return []
        low, high = consumer.get_watermark_offsets(KafkaTopicPartition(topic, 0), timeout=10)
        consumer.assign([KafkaTopicPartition(topic, 0, low)])
        messages = []
        while len(messages) < high - low:
            message = consumer.poll(5)
            assert message is not None and message.error() is None
            messages.append(message)
        return messages
    finally:
        consumer.close()


def test_http_sink_posts_a_topic_and_retries_through_the_worker(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    values = [{"n": i, "text": f"record {i}"} for i in range(40)]
    produce(broker, "http-out", [json.dumps(value).encode() for value in values])
    endpoint = Endpoint()
    endpoint.failures.extend([503, 503])  # the first two attempts fail, then retries work
    worker = ConnectWorkerProcess(
        tmp_path / "worker",
        broker.bootstrap,
        worker=SCHEMALESS_JSON,
        connectors={
            "http": {
                "connector.class": "HttpSink",
                "topics": "http-out",
                "http.api.url": endpoint.url,
                "batch.max.size": "15",
                "retry.backoff.ms": "50",
                "headers": "X-Pipeline:connect-test",
            },
        },
    ).start()
    try:
        received = lambda: [item for body in endpoint.bodies()[2:] for item in body]  # noqa: E731
        wait_until(lambda: len(received()) >= 40, 60, "the 40 records at the endpoint")
        assert received() == values  # in order, once each: failed attempts were not accepted
        assert len(endpoint.requests) >= 2 + 3 and endpoint.failures == []
        assert {r["headers"]["X-Pipeline"] for r in endpoint.requests} == {"connect-test"}
    finally:
        assert worker.stop() == 0, worker.output()
        endpoint.close()
