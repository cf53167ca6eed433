"""The SQL source and sink connectors against real databases: SQLite files and a real
PostgreSQL server (``postgres.py``), driven through the task API."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import re
import signal
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from connect_contexts import (
    DictSourceTaskContext,
    ListSinkTaskContext,
    RecordingConnectorContext,
    committed_offsets,
    poll_until,
    sink_record,
)
from postgres import PostgresServer, postgres, postgres_database  # noqa: F401 (fixtures)
from waiting import wait_until

from pystream.connect.api import (
    ConfigError,
    ConnectError,
    ExactlyOnceSupport,
    RetriableError,
    SinkRecord,
)
from pystream.connect.connectors.sql import (
    JdbcSourceConnector,
    SqlSinkConnector,
    SqlSinkTask,
    SqlSourceConnector,
    SqlSourceTask,
)
from pystream.connect.data import TIMESTAMP_NAME, Schema

UTC = dt.UTC


class Database:
    """A database the test writes and reads directly (``?`` placeholders in both)."""

    def __init__(self, kind: str, url: str, connect: Any) -> None:
        self.kind = kind
        self.url = url
        self._connect = connect

    def execute(self, sql: str, params: Any = ()) -> None:
        conn = self._connect()
        try:
            conn.execute(self._sql(sql), params)
            conn.commit()
        finally:
            conn.close()

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        conn = self._connect()
        try:
            return [tuple(row) for row in conn.execute(self._sql(sql), params).fetchall()]
        finally:
            conn.close()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.kind == "postgresql" else sql

    def table(self) -> str:
        """A fresh table name."""
        return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "test.db"
        yield Database("sqlite", f"jdbc:sqlite:{path}", lambda: sqlite3.connect(path))
        return
    yield postgres_db(
        request.getfixturevalue("postgres"), request.getfixturevalue("postgres_database")
    )


def postgres_db(server: PostgresServer, name: str) -> Database:
    import psycopg

    return Database("postgresql", server.url(name), lambda: psycopg.connect(server.dsn(name)))


def source_task(props: dict[str, str], offsets: Any = None) -> SqlSourceTask:
    task = SqlSourceTask()
    task.initialize(DictSourceTaskContext(props, offsets or {}))
    task.start(props)
    return task


def sink_task(props: dict[str, str], report_errors: bool = False) -> SqlSinkTask:
    task = SqlSinkTask()
    task.initialize(ListSinkTaskContext(props, report_errors))
    task.start(props)
    return task


# -- source ---------------------------------------------------------------------------


def test_incrementing_source_reads_new_rows_in_batches_and_resumes(db: Database) -> None:
    table = db.table()
    db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL)")
    for i in range(1, 6):
        db.execute(f"INSERT INTO {table} VALUES (?, ?, ?)", (i, f"user{i}", i / 2))
    props = {
        "connection.url": db.url,
        "mode": "incrementing",
        "incrementing.column.name": "id",
        "table.whitelist": table,
        "topic.prefix": "db-",
        "poll.interval.ms": "100",
        "batch.max.rows": "2",
    }
    task = source_task(props)
    try:
        # Full batches come back at once, without waiting for poll.interval.ms.
        first = task.poll()
        assert [r.value["id"] for r in first] == [1, 2]
        records = first + poll_until(task, 3)
        assert [r.value["id"] for r in records] == [1, 2, 3, 4, 5]
        record = records[0]
        assert record.topic == f"db-{table}"
        assert record.key is None
        assert record.value == {"id": 1, "name": "user1", "score": 0.5}
        schema = record.value_schema
        assert schema.type == "struct" and schema.name == table
        assert [(f.name, f.schema.type, f.schema.optional) for f in schema.fields][1:] == [
            ("name", "string", False),
            ("score", "float32" if db.kind == "postgresql" else "float64", True),
        ]
        assert record.source_partition == {"table": table}
        assert records[-1].source_offset == {"incrementing": 5}

        db.execute(f"INSERT INTO {table} VALUES (?, ?, ?)", (6, "late", None))
        assert [r.value["id"] for r in poll_until(task, 1)] == [6]
        # A column added later: its rows carry it, with its declared type.
        db.execute(f"ALTER TABLE {table} ADD COLUMN flag BOOLEAN")
        db.execute(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", (100, "flagged", 2.0, True))
        (flagged,) = poll_until(task, 1)
        assert flagged.value == {"id": 100, "name": "flagged", "score": 2.0, "flag": True}
        assert flagged.value_schema.field("flag").schema == Schema("boolean", optional=True)
        offsets = committed_offsets(records)  # acknowledged up to id 5
    finally:
        task.stop()

    # A new task given the stored offset (id 5) reads only what came after it.
    db.execute(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", (101, "after restart", 1.5, None))
    restarted = source_task(props, offsets)
    try:
        assert [r.value["id"] for r in poll_until(restarted, 3)] == [6, 100, 101]
    finally:
        restarted.stop()


def test_timestamp_incrementing_source_reads_updates_once(db: Database) -> None:
    table = db.table()
    ts_type = "TIMESTAMP" if db.kind == "postgresql" else "DATETIME"
    db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, v TEXT, updated {ts_type})")
    t0 = dt.datetime(2024, 5, 1, 12, 0, 0, 123456)
    text = (lambda t: t.isoformat(" ")) if db.kind == "sqlite" else (lambda t: t)
    # Three rows in the same instant: none may be lost between polls of 2 rows.
    for i in (1, 2, 3):
        db.execute(f"INSERT INTO {table} VALUES (?, ?, ?)", (i, f"v{i}", text(t0)))
    props = {
        "connection.url": db.url,
        "mode": "timestamp+incrementing",
        "incrementing.column.name": "id",
        "timestamp.column.name": "updated",
        "table.include.list": table,
        "topic.prefix": "",
        "poll.interval.ms": "50",
        "batch.max.rows": "2",
    }
    task = source_task(props)
    try:
        records = poll_until(task, 3)
        assert [r.value["id"] for r in records] == [1, 2, 3]
        assert records[0].value_schema.field("updated").schema.name == TIMESTAMP_NAME
        assert records[0].value["updated"] == t0.replace(tzinfo=UTC)
        expected_ms = (
            t0.replace(tzinfo=UTC) - dt.datetime(1970, 1, 1, tzinfo=UTC)
        ) // dt.timedelta(milliseconds=1)
        assert records[-1].source_offset == {
            "timestamp": expected_ms,
            "timestamp_nanos": 123456000,
            "incrementing": 3,
        }
        # An update moves row 1's timestamp: it is read again, once.
        db.execute(
            f"UPDATE {table} SET v = ?, updated = ? WHERE id = 1",
            ("v1b", text(t0 + dt.timedelta(seconds=1))),
        )
        again = poll_until(task, 1)
        assert [(r.value["id"], r.value["v"]) for r in again] == [(1, "v1b")]
        assert task.poll() == []
        offsets = committed_offsets(records + again)
    finally:
        task.stop()
    restarted = source_task(props, offsets)
    try:
        db.execute(
            f"INSERT INTO {table} VALUES (?, ?, ?)", (4, "v4", text(t0 + dt.timedelta(seconds=2)))
        )
        assert [r.value["id"] for r in poll_until(restarted, 1)] == [4]
    finally:
        restarted.stop()


def test_timestamp_source_does_not_split_an_instant(db: Database) -> None:
    table = db.table()
    # SQLite: epoch milliseconds in an INTEGER column; PostgreSQL: TIMESTAMPTZ.
    ts_type = "TIMESTAMPTZ" if db.kind == "postgresql" else "INTEGER"
    db.execute(f"CREATE TABLE {table} (id INTEGER, at {ts_type})")
    base = dt.datetime(2024, 1, 1, tzinfo=UTC)
    stamps = [
        base,
        base + dt.timedelta(seconds=1),
        base + dt.timedelta(seconds=1),
        base + dt.timedelta(seconds=1),
        base + dt.timedelta(seconds=2),
    ]
    for i, at in enumerate(stamps):
        value = at if db.kind == "postgresql" else int(at.timestamp() * 1000)
        db.execute(f"INSERT INTO {table} VALUES (?, ?)", (i, value))
    props = {
        "connection.url": db.url,
        "mode": "timestamp",
        "timestamp.column.name": "at",
        "table.whitelist": table,
        "topic.prefix": "ts.",
        "poll.interval.ms": "50",
        "batch.max.rows": "2",
    }
    task = source_task(props)
    try:
        records = poll_until(task, 5)
        assert sorted(r.value["id"] for r in records) == [0, 1, 2, 3, 4]
        assert [r.value["at"] for r in records] == sorted(r.value["at"] for r in records)
        assert task.poll() == []
    finally:
        task.stop()


def test_bulk_source_and_query_mode(db: Database) -> None:
    table = db.table()
    db.execute(f"CREATE TABLE {table} (id INTEGER, kind TEXT)")
    for i, kind in enumerate(["a", "b", "a"]):
        db.execute(f"INSERT INTO {table} VALUES (?, ?)", (i, kind))
    bulk = source_task(
        {"connection.url": db.url, "mode": "bulk", "table.whitelist": table,
         "topic.prefix": "bulk-", "poll.interval.ms": "50"}
    )  # fmt: skip
    try:
        # The whole table, every interval.
        assert sorted(r.value["id"] for r in poll_until(bulk, 3)) == [0, 1, 2]
        assert sorted(r.value["id"] for r in poll_until(bulk, 3)) == [0, 1, 2]
    finally:
        bulk.stop()
    query = source_task(
        {"connection.url": db.url, "mode": "incrementing", "incrementing.column.name": "id",
         "query": f"SELECT id, kind FROM {table} WHERE kind = 'a'", "topic.prefix": "only-a",
         "poll.interval.ms": "50"}
    )  # fmt: skip
    try:
        records = poll_until(query, 2)
        assert [r.value for r in records] == [{"id": 0, "kind": "a"}, {"id": 2, "kind": "a"}]
        assert {r.topic for r in records} == {"only-a"}
        assert records[0].source_partition == {
            "query": f"SELECT id, kind FROM {table} WHERE kind = 'a'"
        }
    finally:
        query.stop()


def test_source_connector_shares_tables_between_tasks(db: Database) -> None:
    tables = sorted(db.table() for _ in range(3))
    for table in tables:
        db.execute(f"CREATE TABLE {table} (id INTEGER)")
    assert JdbcSourceConnector is SqlSourceConnector
    connector = JdbcSourceConnector()
    context = RecordingConnectorContext()
    connector.initialize(context)
    connector.start(
        {"connection.url": db.url, "mode": "bulk", "topic.prefix": "x-",
         "table.whitelist": ",".join(tables)}
    )  # fmt: skip
    configs = connector.task_configs(2)
    connector.stop()
    assert [c["tables"].split(",") for c in configs] == [[tables[0], tables[2]], [tables[1]]]
    # Without a whitelist: every table of the database but the excluded ones, and
    # tables created later too (the tasks are reconfigured).
    connector.start(
        {"connection.url": db.url, "mode": "bulk", "topic.prefix": "x-",
         "table.exclude.list": tables[0], "table.poll.interval.ms": "50"}
    )  # fmt: skip
    try:
        listed = {t for c in connector.task_configs(1) for t in c["tables"].split(",")}
        assert tables[0] not in listed and set(tables[1:]) <= listed
        later = db.table()
        db.execute(f"CREATE TABLE {later} (id INTEGER)")
        wait_until(lambda: context.reconfigurations, 30, "a task reconfiguration request")
        listed = {t for c in connector.task_configs(4) for t in c["tables"].split(",")}
        assert later in listed and tables[0] not in listed
    finally:
        connector.stop()


def test_source_config_errors_name_the_key(tmp_path: Path) -> None:
    connector = SqlSourceConnector()
    with pytest.raises(ConfigError, match="incrementing.column.name"):
        connector.start({"connection.url": f"jdbc:sqlite:{tmp_path}/x.db", "mode": "incrementing",
                         "topic.prefix": "p"})  # fmt: skip
    with pytest.raises(ConfigError, match="connection.url"):
        connector.start(
            {"connection.url": "jdbc:mysql://h/db", "mode": "bulk", "topic.prefix": "p"}
        )
    with pytest.raises(ConfigError, match="mode"):
        connector.start({"connection.url": f"sqlite:///{tmp_path}/x.db", "mode": "sometimes",
                         "topic.prefix": "p"})  # fmt: skip
    results = connector.validate({"connection.url": "nope", "mode": "bulk"})
    assert results["connection.url"].errors and results["topic.prefix"].errors
    task = source_task({"connection.url": f"jdbc:sqlite:{tmp_path}/x.db", "mode": "incrementing",
                        "incrementing.column.name": "id", "table.whitelist": "missing",
                        "topic.prefix": "p"})  # fmt: skip
    try:
        with pytest.raises(ConnectError, match="missing"):
            task.poll()
    finally:
        task.stop()


# -- sink -----------------------------------------------------------------------------

KEY = Schema.struct([("id", Schema("int64"))], name="Key")
VALUE = Schema.struct(
    [
        ("id", Schema("int64")),
        ("name", Schema("string")),
        ("score", Schema("float64", optional=True)),
        ("active", Schema("boolean", optional=True)),
        ("at", Schema("int64", optional=True, name=TIMESTAMP_NAME)),
    ],
    name="Value",
)


def person(i: int, name: str, score: float | None = None) -> dict[str, Any]:
    return {"id": i, "name": name, "score": score, "active": i % 2 == 0,
            "at": dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=i)}  # fmt: skip


def test_sink_upserts_by_record_key_with_auto_create_and_deletes(db: Database) -> None:
    table = db.table()
    props = {
        "connection.url": db.url,
        "topics": table,
        "insert.mode": "upsert",
        "pk.mode": "record_key",
        "auto.create": "true",
        "delete.enabled": "true",
        "batch.size": "3",
    }
    task = sink_task(props)
    try:
        first = [
            sink_record(table, i, person(i, f"n{i}", i * 1.5), {"id": i}, VALUE, KEY)
            for i in range(5)
        ]
        task.put(first)
        task.flush({})
        assert db.query(f"SELECT id, name, score FROM {table} ORDER BY id") == [
            (i, f"n{i}", i * 1.5) for i in range(5)
        ]
        # Upserts replace rows by key, in record order; a tombstone deletes its row.
        later = [
            sink_record(table, 5, person(1, "one"), {"id": 1}, VALUE, KEY),
            sink_record(table, 6, person(1, "uno", 9.0), {"id": 1}, VALUE, KEY),
            sink_record(table, 7, None, {"id": 3}, None, KEY),
            sink_record(table, 8, person(3, "three again"), {"id": 3}, VALUE, KEY),
            sink_record(table, 9, None, {"id": 4}, None, KEY),
            sink_record(table, 10, person(7, "seven"), {"id": 7}, VALUE, KEY),
        ]
        task.put(later)
        task.flush({})
        assert db.query(f"SELECT id, name, score FROM {table} ORDER BY id") == [
            (0, "n0", 0.0), (1, "uno", 9.0), (2, "n2", 3.0), (3, "three again", None),
            (7, "seven", None),
        ]  # fmt: skip
        # The created table: the key is the primary key, types from the schema.
        stamps = db.query(f"SELECT at FROM {table} WHERE id = 7")[0][0]
        if db.kind == "postgresql":
            assert stamps == dt.datetime(2024, 1, 1, 0, 0, 7)
            with pytest.raises(Exception, match="duplicate key"):
                db.execute(f"INSERT INTO {table} (id, name) VALUES (?, ?)", (7, "dup"))
        else:
            assert stamps == "2024-01-01 00:00:07"
            with pytest.raises(sqlite3.IntegrityError):
                db.execute(f"INSERT INTO {table} (id, name) VALUES (?, ?)", (7, "dup"))
    finally:
        task.stop()


def test_sink_schemaless_values_with_record_value_key_and_evolve(db: Database) -> None:
    table = db.table()
    props = {
        "connection.url": db.url,
        "topics": "events",
        "table.name.format": f"{table}_${{topic}}",
        "insert.mode": "upsert",
        "pk.mode": "record_value",
        "pk.fields": "code",
        "auto.create": "true",
        "auto.evolve": "true",
    }
    task = sink_task(props)
    target = f"{table}_events"
    try:
        task.put([sink_record("events", 0, {"code": "a", "n": 1}),
                  sink_record("events", 1, {"code": "b", "n": 2})])  # fmt: skip
        # A new field: auto.evolve adds the column; nested values are stored as JSON.
        task.put([sink_record("events", 2, {"code": "a", "n": 10, "tags": ["x", "y"]})])
        task.flush({})
        assert db.query(f"SELECT code, n, tags FROM {target} ORDER BY code") == [
            ("a", 10, '["x","y"]'),
            ("b", 2, None),
        ]
    finally:
        task.stop()
    no_evolve = sink_task(dict(props, **{"auto.evolve": "false"}))
    try:
        no_evolve.put([sink_record("events", 3, {"code": "c", "extra": 1})])
        with pytest.raises(ConnectError, match="extra.*auto.evolve"):
            no_evolve.flush({})
    finally:
        no_evolve.stop()


def test_sink_reports_records_it_cannot_write(db: Database) -> None:
    table = db.table()
    props = {"connection.url": db.url, "topics": table, "pk.mode": "record_key",
             "pk.fields": "id", "insert.mode": "upsert", "auto.create": "true"}  # fmt: skip
    task = sink_task(props, report_errors=True)
    try:
        bad_value = sink_record(table, 1, "not a struct", 2)
        no_key = sink_record(table, 2, {"name": "keyless"})
        tombstone = sink_record(table, 3, None, 3)  # delete.enabled is off
        task.put([sink_record(table, 0, {"name": "ok"}, 1), bad_value, no_key, tombstone])
        task.flush({})
        assert db.query(f"SELECT id, name FROM {table}") == [(1, "ok")]
        assert [record for record, _ in task.context.errant] == [bad_value, no_key, tombstone]
        assert "not a struct" in str(task.context.errant[0][1])
    finally:
        task.stop()
    # Without a reporter the task fails on the first such record.
    strict = sink_task(props)
    try:
        with pytest.raises(ConnectError, match="tombstone"):
            strict.put([sink_record(table, 3, None, 3)])
    finally:
        strict.stop()


def test_sink_insert_mode_and_missing_table(db: Database) -> None:
    table = db.table()
    db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT)")
    task = sink_task({"connection.url": db.url, "topics": table})
    try:
        task.put([sink_record(table, 0, {"id": 1, "name": "a"})])
        task.flush({})
        task.put([sink_record(table, 1, {"id": 1, "name": "dup"})])
        with pytest.raises(ConnectError, match="writing to the database"):
            task.flush({})
        # The failed transaction was rolled back and the buffer dropped: the worker
        # delivers the records again from the last committed offsets.
        task.put([sink_record(table, 1, {"id": 2, "name": "b"})])
        task.flush({})
        assert db.query(f"SELECT id, name FROM {table} ORDER BY id") == [(1, "a"), (2, "b")]
        task.put([sink_record("elsewhere", 0, {"id": 1})])
        with pytest.raises(ConnectError, match="does not exist.*auto.create"):
            task.flush({})
    finally:
        task.stop()


def test_sink_config_errors() -> None:
    connector = SqlSinkConnector()
    with pytest.raises(ConfigError, match="delete.enabled"):
        connector.start({"connection.url": "sqlite:///x.db", "delete.enabled": "true"})
    with pytest.raises(ConfigError, match="upsert"):
        connector.start({"connection.url": "sqlite:///x.db", "insert.mode": "upsert"})
    with pytest.raises(ConfigError, match="insert.mode"):
        connector.start({"connection.url": "sqlite:///x.db", "insert.mode": "merge"})
    connector.start({"connection.url": "sqlite:///x.db", "topics": "a"})
    assert len(connector.task_configs(3)) == 3


def test_sink_large_batches_keep_the_last_write_of_each_key(db: Database) -> None:
    """Batches big enough for PostgreSQL's staged COPY path (and SQLite's executemany):
    keys repeat within one batch, and deletes split the runs."""
    table = db.table()
    props = {"connection.url": db.url, "topics": table, "insert.mode": "upsert",
             "pk.mode": "record_key", "auto.create": "true", "delete.enabled": "true",
             "batch.size": "1000"}  # fmt: skip
    task = sink_task(props)
    try:
        records = [
            sink_record(table, i, person(i % 50, f"v{i}", float(i)), {"id": i % 50}, VALUE, KEY)
            for i in range(300)
        ]
        records.insert(280, sink_record(table, 1000, None, {"id": 7}, None, KEY))
        task.put(records)
        task.flush({})
        rows = db.query(f"SELECT id, name, score FROM {table} ORDER BY id")
        # Key 7's last write (i=257) came before its delete; every other key's is 250..299.
        assert rows == [(k, f"v{250 + k}", float(250 + k)) for k in range(50) if k != 7]
    finally:
        task.stop()
    inserts = sink_task({"connection.url": db.url, "topics": table, "pk.mode": "record_key"})
    try:
        inserts.put([sink_record(table, i, person(100 + i, "new"), {"id": 100 + i}, VALUE, KEY)
                     for i in range(100)])  # fmt: skip
        inserts.flush({})
        assert db.query(f"SELECT count(*) FROM {table} WHERE name = 'new'") == [(100,)]
        inserts.put(
            [sink_record(table, i, person(i, "dup"), {"id": i}, VALUE, KEY) for i in range(100)]
        )
        with pytest.raises(ConnectError, match="writing to the database"):
            inserts.flush({})
        assert db.query(f"SELECT count(*) FROM {table}") == [(149,)]  # nothing half-written
    finally:
        inserts.stop()


def test_every_setting_is_documented() -> None:
    from pystream.connect.connectors.http_sink import HTTP_SINK_CONFIG
    from pystream.connect.connectors.sql.sink import SINK_CONFIG
    from pystream.connect.connectors.sql.source import SOURCE_CONFIG

    text = (Path(__file__).parent.parent / "docs" / "connect-sql-http.md").read_text()
    for config in (SOURCE_CONFIG, SINK_CONFIG, HTTP_SINK_CONFIG):
        missing = [name for name in config.keys if f"`{name}`" not in text]
        assert not missing, f"docs/connect-sql-http.md does not describe {missing}"


def test_validate_reports_rules_between_keys_under_their_key() -> None:
    results = SqlSinkConnector().validate(
        {"connection.url": "sqlite:///x.db", "delete.enabled": "true"}
    )
    assert results["delete.enabled"].errors == ["delete.enabled=true needs pk.mode=record_key"]
    assert not results["connection.url"].errors
    results = SqlSourceConnector().validate(
        {"connection.url": "sqlite:///x.db", "mode": "timestamp", "topic.prefix": "p"}
    )
    assert results["mode"].errors == ["mode=timestamp needs timestamp.column.name"]


def test_sink_kafka_coordinates_key_and_update_mode(db: Database) -> None:
    table = db.table()
    kafka_keyed = sink_task({"connection.url": db.url, "topics": table, "pk.mode": "kafka",
                             "auto.create": "true", "fields.whitelist": "name"})  # fmt: skip
    try:
        kafka_keyed.put([sink_record(table, 10 + i, {"name": f"n{i}", "dropped": i}, partition=2)
                         for i in range(3)])  # fmt: skip
        kafka_keyed.flush({})
        assert db.query(
            f"SELECT __connect_topic, __connect_partition, __connect_offset, name FROM {table} "
            "ORDER BY __connect_offset"
        ) == [(table, 2, 10 + i, f"n{i}") for i in range(3)]
        columns = [
            c.name for c in kafka_keyed.dialect.describe_table(kafka_keyed._connection(), table)
        ]
        assert "dropped" not in columns  # fields.whitelist
    finally:
        kafka_keyed.stop()
    updates = sink_task({"connection.url": db.url, "topics": table, "pk.mode": "kafka",
                         "insert.mode": "update"})  # fmt: skip
    try:
        # Updates change existing rows only: offset 99 matches none.
        updates.put([sink_record(table, 11, {"name": "changed"}, partition=2),
                     sink_record(table, 99, {"name": "nowhere"}, partition=2)])  # fmt: skip
        updates.flush({})
        assert db.query(f"SELECT name FROM {table} ORDER BY __connect_offset") == [
            ("n0",), ("changed",), ("n2",),
        ]  # fmt: skip
    finally:
        updates.stop()


@pytest.mark.parametrize(
    "settings",
    [
        {"pk.mode": "record_key"},
        {"pk.mode": "record_key", "pk.fields": "id"},
        {"pk.mode": "record_value", "pk.fields": "id,name"},
        {"pk.mode": "kafka"},
        {"pk.mode": "none", "fields.whitelist": "name,at"},
    ],
)
def test_sink_rows_from_the_shape_cache_match_the_first_record(
    settings: dict[str, str], tmp_path: Path
) -> None:
    """Records with the schemas of an earlier one take a cached row shape: the rows it
    makes are those the full conversion makes."""
    task = sink_task({"connection.url": f"jdbc:sqlite:{tmp_path}/t.db", "topics": "t", **settings})
    primitive_key = Schema("int64")
    for key_schema in (KEY, primitive_key):
        if key_schema is primitive_key and settings.get("pk.fields") != "id":
            continue
        records = [
            sink_record(
                "t",
                i,
                person(i, f"n{i}", i / 3),
                {"id": i} if key_schema is KEY else i,
                VALUE,
                key_schema,
            )
            for i in range(5)
        ]
        ops = [task._op(r) for r in records]
        assert len(task._shapes) >= 1
        assert ops == [task._new_op(r) for r in records]
    task.stop()


def test_a_lost_postgres_connection_is_retriable_and_nothing_is_lost(
    postgres: PostgresServer,  # noqa: F811
    postgres_database: str,  # noqa: F811
) -> None:
    """The server ends the tasks' sessions (as a restart or failover would): the next
    call raises RetriableError, and the one after reconnects and carries on."""
    server = postgres
    db = postgres_db(postgres, postgres_database)

    def terminate(conn: Any) -> None:
        import psycopg

        with psycopg.connect(server.dsn(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))

    table = db.table()
    db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT)")
    sink = sink_task({"connection.url": db.url, "topics": table, "insert.mode": "upsert",
                      "pk.mode": "record_value", "pk.fields": "id"})  # fmt: skip
    source = source_task({"connection.url": db.url, "mode": "incrementing",
                          "incrementing.column.name": "id", "table.whitelist": table,
                          "topic.prefix": "", "poll.interval.ms": "50"})  # fmt: skip
    try:
        sink.put([sink_record(table, 0, {"id": 1, "name": "a"})])
        sink.flush({})
        assert [r.value["id"] for r in poll_until(source, 1)] == [1]
        terminate(sink._conn)
        terminate(source._conn)
        sink.put([sink_record(table, 1, {"id": 2, "name": "b"})])
        with pytest.raises(RetriableError):
            sink.flush({})
        # The worker delivers again what was not committed: now it is written.
        sink.put([sink_record(table, 1, {"id": 2, "name": "b"})])
        sink.flush({})
        with pytest.raises(RetriableError):  # polls return nothing until the table is due
            wait_until(lambda: source.poll() and False, 30, "the source to notice")
        assert [r.value["id"] for r in poll_until(source, 1)] == [2]
        assert db.query(f"SELECT id, name FROM {table} ORDER BY id") == [(1, "a"), (2, "b")]
    finally:
        sink.stop()
        source.stop()


def test_exactly_once_support_follows_the_mode() -> None:
    connector = SqlSourceConnector()
    assert connector.exactly_once_support({"mode": "incrementing"}) is ExactlyOnceSupport.SUPPORTED
    assert (
        connector.exactly_once_support({"mode": "timestamp+incrementing"})
        is ExactlyOnceSupport.SUPPORTED
    )
    for mode in ("bulk", "timestamp"):
        assert connector.exactly_once_support({"mode": mode}) is ExactlyOnceSupport.UNSUPPORTED


# -- PostgreSQL: the background writer --------------------------------------------------

WRITER_THREAD = "pystream-sql-sink-writer"


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WRITER_THREAD]


def upsert_props(db: Database, table: str, batch_size: int, **more: str) -> dict[str, str]:
    return {"connection.url": db.url, "topics": table, "insert.mode": "upsert",
            "pk.mode": "record_key", "auto.create": "true", "batch.size": str(batch_size),
            **more}  # fmt: skip


@pytest.fixture
def pg(postgres: PostgresServer, postgres_database: str) -> Database:  # noqa: F811
    return postgres_db(postgres, postgres_database)


def test_background_writes_land_exactly_in_record_order(pg: Database) -> None:
    """Batches go to the database from the writer thread while the next ones are
    converted: after flush the table holds each key's last write (deletes included),
    and stop() ends the thread."""
    table = pg.table()
    task = sink_task(upsert_props(pg, table, 100, **{"delete.enabled": "true"}))
    expected: dict[int, tuple[Any, ...]] = {}
    records = []
    for offset in range(1500):
        key = (offset * 7) % 230
        if offset % 97 == 0:
            records.append(sink_record(table, offset, None, {"id": key}, None, KEY))
            expected.pop(key, None)
        else:
            value = person(key, f"v{offset}", offset / 4)
            records.append(sink_record(table, offset, value, {"id": key}, VALUE, KEY))
            expected[key] = (key, f"v{offset}", offset / 4, key % 2 == 0,
                             dt.datetime(2024, 1, 1) + dt.timedelta(seconds=key))  # fmt: skip
    try:
        for i in range(0, len(records), 37):  # puts of a poll's size, batches of 100
            task.put(records[i : i + 37])
        threads = writer_threads()
        assert len(threads) == 1
        task.flush({})
        assert pg.query(f"SELECT id, name, score, active, at FROM {table} ORDER BY id") == [
            expected[key] for key in sorted(expected)
        ]
    finally:
        task.stop()
    assert not threads[0].is_alive()
    assert writer_threads() == []


def test_columns_copy_cannot_send_in_binary_go_as_text(pg: Database) -> None:
    """A table with types binary COPY does not take here (numeric, timestamptz, jsonb)
    and values whose Python type does not match their column (text for an integer):
    COPY sends text and PostgreSQL parses it, as before."""
    table = pg.table()
    pg.execute(
        f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, amount NUMERIC(10, 2), "
        "seen TIMESTAMPTZ, tags JSONB, code VARCHAR(8), n INTEGER)"
    )
    task = sink_task({"connection.url": pg.url, "topics": table, "insert.mode": "upsert",
                      "pk.mode": "record_value", "pk.fields": "id",
                      "batch.size": "100"})  # fmt: skip
    at = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    try:
        task.put([sink_record(table, i, {"id": i, "amount": i + 0.25, "seen": at.isoformat(),
                                          "tags": {"k": i}, "code": f"c{i}",
                                          "n": str(i) if i % 2 else i})
                  for i in range(120)])  # fmt: skip
        task.flush({})
        assert pg.query(f"SELECT count(*), sum(n), min(code) FROM {table}") == [
            (120, sum(range(120)), "c0")
        ]
        assert pg.query(f"SELECT amount, seen, tags, n FROM {table} WHERE id = 7") == [
            (decimal.Decimal("7.25"), at, {"k": 7}, 7)
        ]
    finally:
        task.stop()


def test_a_background_write_that_failed_retriably_is_written_again_first(
    postgres: PostgresServer,  # noqa: F811
    pg: Database,
) -> None:
    """The connection breaks under a batch in flight: the put that finds out raises
    RetriableError (its own records handed back, the backoff asked for), and the failed
    batch is written again before anything after it: the last write of each key wins."""
    table = pg.table()
    task = sink_task(upsert_props(pg, table, 50, **{"retry.backoff.ms": "250"}))

    def batch(first: int, name: str) -> list[SinkRecord]:
        return [sink_record(table, first + i, person(i, name), {"id": i}, VALUE, KEY)
                for i in range(50)]  # fmt: skip

    try:
        task.put(batch(0, "a"))
        task.flush({})
        with psycopg.connect(postgres.dsn(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (task._conn.info.backend_pid,))
        task.put(batch(50, "b"))  # handed to the writer, which fails on the broken link
        with pytest.raises(RetriableError):
            task.put(batch(100, "c"))
        assert task.context.timeouts == [250]
        assert pg.query(f"SELECT DISTINCT name FROM {table}") == [("a",)]  # nothing half-done
        task.put(batch(100, "c"))  # the worker delivers the same records again
        task.flush({})
        assert pg.query(f"SELECT DISTINCT name FROM {table}") == [("c",)]
        assert pg.query(f"SELECT count(*) FROM {table}") == [(50,)]
    finally:
        task.stop()
    assert writer_threads() == []


def test_a_table_dropped_under_the_writer_fails_the_task(pg: Database) -> None:
    """A write that cannot succeed by retrying (the table is gone) is not retriable: the
    next call raises it, and flush writes nothing more (offsets stay uncommitted)."""
    table = pg.table()
    task = sink_task(upsert_props(pg, table, 50, **{"auto.create": "false"}))
    pg.execute(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE "
               "PRECISION, active BOOLEAN, at TIMESTAMP)")  # fmt: skip
    try:
        task.put([sink_record(table, i, person(i, "a"), {"id": i}, VALUE, KEY) for i in range(50)])
        task.flush({})
        pg.execute(f"ALTER TABLE {table} RENAME TO {table}_gone")
        task.put([sink_record(table, i, person(i, "b"), {"id": i}, VALUE, KEY)
                  for i in range(50, 100)])  # fmt: skip
        with pytest.raises(ConnectError, match="writing to the database") as raised:
            task.flush({})
        assert not isinstance(raised.value, RetriableError)
        assert pg.query(f"SELECT count(*), min(name) FROM {table}_gone") == [(50, "a")]
    finally:
        task.stop()
    assert writer_threads() == []


def _process_state(pid: int) -> str:
    """The state letter of process ``pid`` (``T``: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _pending_signals(pid: int) -> int:
    """The signals pending for process ``pid`` (a bit mask, bit n-1 for signal n)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^ShdPnd:\s*([0-9a-f]+)", status, re.M).group(1), 16)  # type: ignore[union-attr]


def test_stop_cancels_a_write_stuck_on_a_stopped_server(pg: Database) -> None:
    """The task's PostgreSQL backend is frozen (SIGSTOP) under a write in flight: stop()
    cancels the statement (PostgreSQL's cancel request reaches the backend as SIGINT) and
    waits; once the backend runs again the write ends, whole or not at all, and so does
    the writer thread."""
    table = pg.table()
    task = sink_task(upsert_props(pg, table, 50))
    rows = [sink_record(table, i, person(i, "a"), {"id": i}, VALUE, KEY) for i in range(100)]
    task.put(rows[:50])
    task.flush({})
    backend = task._conn.info.backend_pid
    os.kill(backend, signal.SIGSTOP)
    try:
        # Stopped for sure: a SIGINT sent before it stops would be handled, not pending.
        wait_until(lambda: _process_state(backend) == "T", 30, "the backend to stop")
        task.put(rows[50:])  # in flight, and stuck
        stopper = threading.Thread(target=task.stop)
        stopper.start()
        wait_until(lambda: _pending_signals(backend) & (1 << (signal.SIGINT - 1)), 30,
                   "the cancel request to reach the frozen backend")  # fmt: skip
        assert stopper.is_alive()  # the write cannot end while the backend is frozen
    finally:
        os.kill(backend, signal.SIGCONT)
    stopper.join(30)
    assert not stopper.is_alive()
    assert writer_threads() == []
    assert pg.query(f"SELECT count(*) FROM {table}")[0][0] in (50, 100)
