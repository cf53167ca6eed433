"""The SQL source: reads tables (or one query) into topics, as Confluent's JDBC source.

``mode`` says how new rows are found:

- ``bulk``: the whole table every ``poll.interval.ms`` (no offsets);
- ``incrementing``: rows whose ``incrementing.column.name`` is above the last one
  seen (new rows only; a strictly increasing column such as an autoincrement id);
- ``timestamp``: rows whose ``timestamp.column.name`` is after the last one seen
  (new and updated rows); rows with the same timestamp are never split between
  polls, so none is skipped;
- ``timestamp+incrementing``: ordered by both, so that rows updated in the same
  instant are each read once.

Each table is a source partition ``{"table": name}`` (``{"query": query}`` with
``query``) whose offset is ``{"incrementing": id}`` and/or ``{"timestamp": ms,
"timestamp_nanos": ns}`` (Confluent's keys); a restarted task resumes from it.  Rows
become struct values whose schema (named after the table) comes from the column types;
the record key is null (``ValueToKey`` makes one) and the topic is ``topic.prefix``
followed by the table name (just ``topic.prefix`` with ``query``).

Timestamps are UTC.  SQLite has no timestamp type: a timestamp column holds epoch
milliseconds (a column declared with ``INT`` in its type) or ISO text in
``YYYY-MM-DD HH:MM:SS[.ffffff]`` form, which is what ``CURRENT_TIMESTAMP`` writes.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...api import (
    NO_DEFAULT,
    ConfigDef,
    ConfigError,
    ConfigKey,
    ConfigType,
    ConnectError,
    ExactlyOnceSupport,
    Importance,
    RetriableError,
    SourceConnector,
    SourceRecord,
    SourceTask,
    Task,
)
from ...data import Schema
from ..common import at_least, one_of, validate_with
from .dialects import (
    CONNECTION_KEYS,
    EPOCH,
    UTC,
    Column,
    Dialect,
    close_quietly,
    dialect_for,
    schema_for_value,
    to_connect,
    to_datetime,
)

__all__ = ["SqlSourceConnector", "SqlSourceTask"]

log = logging.getLogger(__name__)

MODES = ("bulk", "incrementing", "timestamp", "timestamp+incrementing")
TABLES_KEY = "tables"  # the task config key listing a task's tables (Confluent's)


SOURCE_CONFIG = ConfigDef(
    [
        *CONNECTION_KEYS,
        ConfigKey("mode", ConfigType.STRING, NO_DEFAULT, Importance.HIGH,
                  "How new rows are found: bulk, incrementing, timestamp or "
                  "timestamp+incrementing.", one_of("mode", MODES), "Mode"),
        ConfigKey("incrementing.column.name", ConfigType.STRING, "", Importance.MEDIUM,
                  "The strictly increasing column (modes incrementing and "
                  "timestamp+incrementing).", group="Mode"),
        ConfigKey("timestamp.column.name", ConfigType.LIST, [], Importance.MEDIUM,
                  "The timestamp column(s) of modes timestamp and timestamp+incrementing; "
                  "several are COALESCEd in order.", group="Mode"),
        ConfigKey("timestamp.delay.interval.ms", ConfigType.LONG, 0, Importance.HIGH,
                  "How long after its timestamp a row is read, giving transactions with "
                  "earlier timestamps time to commit.",
                  at_least("timestamp.delay.interval.ms", 0), "Mode"),
        ConfigKey("timestamp.initial", ConfigType.LONG, None, Importance.LOW,
                  "Where timestamp modes start with no stored offset: epoch ms, or -1 for "
                  "now (default: from the beginning).", group="Mode"),
        ConfigKey("table.whitelist", ConfigType.LIST, [], Importance.MEDIUM,
                  "The tables to read (default: every table).", group="Database"),
        ConfigKey("table.include.list", ConfigType.LIST, [], Importance.MEDIUM,
                  "Same as table.whitelist (the newer name).", group="Database"),
        ConfigKey("table.blacklist", ConfigType.LIST, [], Importance.MEDIUM,
                  "Tables not to read when no whitelist is given.", group="Database"),
        ConfigKey("table.exclude.list", ConfigType.LIST, [], Importance.MEDIUM,
                  "Same as table.blacklist (the newer name).", group="Database"),
        ConfigKey("table.poll.interval.ms", ConfigType.LONG, 60000, Importance.LOW,
                  "How often the database is asked for its tables, when no whitelist is "
                  "given (new tables are then read too).",
                  at_least("table.poll.interval.ms", 1), "Connector"),
        ConfigKey("query", ConfigType.STRING, "", Importance.MEDIUM,
                  "Read this query's result instead of tables (its rows are filtered and "
                  "ordered by the mode's columns, so it needs no WHERE for them).",
                  group="Mode"),
        ConfigKey("topic.prefix", ConfigType.STRING, NO_DEFAULT, Importance.HIGH,
                  "Prefixed to the table name to make the topic (the whole topic with "
                  "query).", group="Connector"),
        ConfigKey("poll.interval.ms", ConfigType.INT, 5000, Importance.HIGH,
                  "How often each table is queried for new rows.",
                  at_least("poll.interval.ms", 1), "Connector"),
        ConfigKey("batch.max.rows", ConfigType.INT, 100, Importance.LOW,
                  "Rows returned by one poll at most.",
                  at_least("batch.max.rows", 1), "Connector"),
        ConfigKey("numeric.mapping", ConfigType.STRING, "none", Importance.LOW,
                  "NUMERIC columns: none (Decimal when the scale is declared) or best_fit "
                  "(int64 or float64).", one_of("numeric.mapping", ("none", "best_fit")), "Mode"),
    ]
)  # fmt: skip


def _check_mode(props: dict[str, Any]) -> None:
    mode = props["mode"]
    if "incrementing" in mode and not props["incrementing.column.name"]:
        raise ConfigError(f"mode={mode} needs incrementing.column.name")
    if "timestamp" in mode and not props["timestamp.column.name"]:
        raise ConfigError(f"mode={mode} needs timestamp.column.name")
    tables = props["table.whitelist"] or props["table.include.list"]
    if props["query"] and tables:
        raise ConfigError("query and table.whitelist/table.include.list exclude each other")


def parse_source_config(props: dict[str, Any]) -> dict[str, Any]:
    """Typed and checked source settings (raises :class:`ConfigError` naming the key)."""
    parsed = SOURCE_CONFIG.parse(props)
    _check_mode(parsed)
    return parsed


class SqlSourceConnector(SourceConnector):
    """Reads database tables into topics (aliases ``JdbcSourceConnector``,
    ``io.confluent.connect.jdbc.JdbcSourceConnector``); the tables are shared out
    between ``tasks.max`` tasks."""

    def start(self, props: dict[str, str]) -> None:
        self.props = dict(props)
        parsed = parse_source_config(self.props)
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self.query = parsed["query"]
        self.tables: list[str] = list(parsed["table.whitelist"] or parsed["table.include.list"])
        if self.query or self.tables:
            return
        # Every table but the excluded ones, looked up again every table.poll.interval.ms:
        # when tables come or go the tasks are given the new list.
        self.dialect = dialect_for(parsed)
        self.excluded = set(parsed["table.blacklist"] or parsed["table.exclude.list"])
        self.tables = self._list_tables()
        if not self.tables:
            log.warning("SQL source: no tables to read in %s", parsed["connection.url"])
        self._monitor = threading.Thread(
            target=self._watch_tables,
            args=(parsed["table.poll.interval.ms"] / 1000,),
            name=f"sql-source-tables-{self.props.get('name', '')}",
            daemon=True,
        )
        self._monitor.start()

    def _list_tables(self) -> list[str]:
        conn = self.dialect.connect()
        try:
            return [t for t in self.dialect.list_tables(conn) if t not in self.excluded]
        finally:
            close_quietly(conn)

    def _watch_tables(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            try:
                tables = self._list_tables()
            except Exception:  # noqa: BLE001 (the database may be away for a while)
                log.warning("SQL source: listing the tables failed", exc_info=True)
                continue
            if tables != self.tables:
                log.info("SQL source: the tables changed to %s", tables)
                self.tables = tables
                self.context.request_task_reconfiguration()

    def task_class(self) -> type[Task]:
        return SqlSourceTask

    def exactly_once_support(self, props: Mapping[str, str]) -> ExactlyOnceSupport | None:
        """Reading again from a stored offset gives the same rows in the modes ordered by
        a strictly increasing column; ``bulk`` has no offsets, and ``timestamp`` alone
        may meet rows committed later with a timestamp already passed."""
        mode = props.get("mode")
        if mode in ("incrementing", "timestamp+incrementing"):
            return ExactlyOnceSupport.SUPPORTED
        return ExactlyOnceSupport.UNSUPPORTED

    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        if self.query:
            return [dict(self.props, **{TABLES_KEY: ""})]
        tables = list(self.tables)
        count = min(max_tasks, len(tables))  # no tables, no tasks (as Confluent's)
        return [dict(self.props, **{TABLES_KEY: ",".join(tables[i::count])}) for i in range(count)]

    def stop(self) -> None:
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join(10)

    def config(self) -> ConfigDef:
        return SOURCE_CONFIG

    def validate(self, props: Any) -> dict[str, Any]:
        return validate_with(SOURCE_CONFIG, props, parse_source_config)


@dataclass
class _Table:
    """One table's (or the query's) reading state."""

    name: str
    partition: dict[str, Any]
    topic: str
    columns: list[Column] | None = None  # as described (tables only)
    schema: Schema | None = None
    column_names: tuple[str, ...] = ()
    incrementing: int | None = None
    timestamp: dt.datetime | None = None
    next_poll: float = 0.0
    ts_as_ms: bool = False  # SQLite: the timestamp column holds epoch ms


def offset_of(table: _Table) -> dict[str, Any]:
    """The source offset after the last row read (Confluent's keys)."""
    offset: dict[str, Any] = {}
    if table.timestamp is not None:
        delta = table.timestamp - EPOCH
        offset["timestamp"] = delta // dt.timedelta(milliseconds=1)
        offset["timestamp_nanos"] = table.timestamp.microsecond * 1000
    if table.incrementing is not None:
        offset["incrementing"] = table.incrementing
    return offset


def timestamp_from_offset(offset: dict[str, Any]) -> dt.datetime | None:
    if offset.get("timestamp") is None:
        return None
    moment = EPOCH + dt.timedelta(milliseconds=int(offset["timestamp"]))
    nanos = offset.get("timestamp_nanos")
    return moment.replace(microsecond=int(nanos) // 1000) if nanos is not None else moment


class SqlSourceTask(SourceTask):
    """Queries its tables in turn, each at most every ``poll.interval.ms``."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # held while the connection is in use
        self._conn: Any = None

    def start(self, props: dict[str, str]) -> None:
        self.config = parse_source_config(props)
        self.dialect: Dialect = dialect_for(self.config)
        self.mode: str = self.config["mode"]
        self.batch_max_rows: int = self.config["batch.max.rows"]
        self.poll_interval = self.config["poll.interval.ms"] / 1000
        # The mode's columns only: others configured are ignored, as in Confluent's.
        self.inc_column: str = (
            self.config["incrementing.column.name"] if "incrementing" in self.mode else ""
        )
        self.ts_columns: list[str] = (
            self.config["timestamp.column.name"] if "timestamp" in self.mode else []
        )
        prefix = self.config["topic.prefix"]
        query = self.config["query"]
        if query:
            self.tables = [_Table(query, {"query": query}, prefix)]
        else:
            names = [t.strip() for t in str(props.get(TABLES_KEY, "")).split(",") if t.strip()]
            if not names:
                names = list(self.config["table.whitelist"] or self.config["table.include.list"])
            if not names:
                raise ConfigError(f"this task was given no tables ({TABLES_KEY} is empty)")
            self.tables = [_Table(t, {"table": t}, prefix + t) for t in names]
        reader = self.context.offset_storage_reader() if hasattr(self, "context") else None
        initial = self.config["timestamp.initial"]
        for table in self.tables:
            stored = reader.offset(table.partition) if reader is not None else None
            if stored:
                if stored.get("incrementing") is not None:
                    table.incrementing = int(stored["incrementing"])
                table.timestamp = timestamp_from_offset(stored)
            elif initial is not None and "timestamp" in self.mode:
                table.timestamp = (
                    dt.datetime.now(UTC)
                    if initial == -1
                    else EPOCH + dt.timedelta(milliseconds=initial)
                )
        self._next = 0  # round-robin over the due tables

    # -- polling -----------------------------------------------------------------------

    def poll(self) -> list[SourceRecord] | None:
        while not self._stopping.is_set():
            now = time.monotonic()
            due = [t for t in self.tables if t.next_poll <= now]
            if not due:
                wake = min(t.next_poll for t in self.tables)
                # Return within a second at most, so that pause and stop are prompt.
                self._stopping.wait(min(wake - now, 1.0))
                return []
            table = due[self._next % len(due)]
            self._next += 1
            with self._lock:
                if self._stopping.is_set():
                    return []
                records, more = self._read(table)
            if not more:
                table.next_poll = time.monotonic() + self.poll_interval
            if records:
                return records
        return []

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.dialect.connect()
        return self._conn

    def _read(self, table: _Table) -> tuple[list[SourceRecord], bool]:
        """The next rows of ``table`` as records, and whether more may be waiting."""
        try:
            conn = self._connection()
            try:
                if table.columns is None and "query" not in table.partition:
                    table.columns = self.dialect.describe_table(conn, table.name)
                    if table.columns is None:
                        raise ConnectError(f"table {table.name!r} does not exist")
                    self._check_columns(table)
                rows, names, types = self._query(conn, table)
                if table.schema is not None and tuple(names) != table.column_names:
                    # The table was altered: its column types and nullability again.
                    table.columns = self.dialect.describe_table(conn, table.name) or table.columns
            finally:
                conn.commit()  # end the read transaction: SQLite's lock, PostgreSQL's snapshot
        except ConnectError:
            raise
        except Exception as exc:
            self._close_connection()
            if self.dialect.is_transient(exc):
                raise RetriableError(f"reading {table.name!r}: {exc}") from exc
            raise ConnectError(f"reading {table.name!r}: {exc}") from exc
        if not rows:
            return [], False
        schema = self._schema(table, names, types, rows)
        records = []
        for row in rows:
            value = {
                f.name: to_connect(v, f.schema) for f, v in zip(schema.fields, row, strict=True)
            }
            if self.mode != "bulk":
                if self.inc_column:
                    table.incrementing = int(value[self.inc_column])
                if self.ts_columns:
                    stamp = next((value[c] for c in self.ts_columns if value[c] is not None), None)
                    if stamp is not None:
                        table.timestamp = to_datetime(stamp)
            records.append(
                SourceRecord(
                    topic=table.topic,
                    kafka_partition=None,
                    key_schema=None,
                    key=None,
                    value_schema=schema,
                    value=value,
                    source_partition=table.partition,
                    source_offset=offset_of(table),
                )
            )
        more = self.mode != "bulk" and len(rows) >= self.batch_max_rows
        return records, more

    def _check_columns(self, table: _Table) -> None:
        names = {c.name for c in table.columns or ()}
        for column in ([self.inc_column] if self.inc_column else []) + self.ts_columns:
            if column not in names:
                raise ConnectError(
                    f"table {table.name!r} has no column {column!r} (mode={self.mode}); "
                    f"its columns are {sorted(names)}"
                )
        if self.ts_columns and self.dialect.name == "sqlite":
            declared = next(
                c.type_name for c in table.columns or () if c.name == self.ts_columns[0]
            )
            table.ts_as_ms = "int" in declared

    def _ts_param(self, table: _Table, moment: dt.datetime) -> Any:
        if table.ts_as_ms:
            return (moment - EPOCH) // dt.timedelta(milliseconds=1)
        return self.dialect.to_db(moment, None)

    def _query(self, conn: Any, table: _Table) -> tuple[list[Any], list[str], list[str | None]]:
        q = self.dialect.quote
        mark = self.dialect.placeholder
        if "query" in table.partition:
            source = f"({table.name}) AS pystream_query"
        else:
            source = self.dialect.quote_table(table.name)
        sql = f"SELECT * FROM {source}"
        params: list[Any] = []
        limit = f" LIMIT {self.batch_max_rows}"
        ts = (
            q(self.ts_columns[0])
            if len(self.ts_columns) == 1
            else "COALESCE(" + ", ".join(q(c) for c in self.ts_columns) + ")"
        )
        inc = q(self.inc_column) if self.inc_column else ""
        if "timestamp" in self.mode:
            delay = dt.timedelta(milliseconds=self.config["timestamp.delay.interval.ms"])
            until = self._ts_param(table, dt.datetime.now(UTC) - delay)
            since = self._ts_param(table, table.timestamp or EPOCH)
        if self.mode == "bulk":
            limit = ""
        elif self.mode == "incrementing":
            sql += f" WHERE {inc} > {mark} ORDER BY {inc} ASC"
            params = [table.incrementing if table.incrementing is not None else -1]
        elif self.mode == "timestamp":
            sql += f" WHERE {ts} > {mark} AND {ts} < {mark} ORDER BY {ts} ASC"
            params = [since, until]
        else:
            sql += (
                f" WHERE {ts} < {mark} AND (({ts} = {mark} AND {inc} > {mark}) OR {ts} > {mark})"
                f" ORDER BY {ts}, {inc} ASC"
            )
            last_inc = table.incrementing if table.incrementing is not None else -1
            params = [until, since, last_inc, since]
        cursor = conn.execute(sql + limit, params)
        rows = cursor.fetchall()
        names = [d[0] for d in cursor.description] if cursor.description else []
        types = self.dialect.query_types(cursor) if cursor.description else []
        if self.mode == "timestamp" and len(rows) >= self.batch_max_rows:
            rows = self._whole_instants(conn, sql, rows, names, ts)
        return rows, names, types

    def _whole_instants(
        self, conn: Any, sql: str, rows: list[Any], names: list[str], ts: str
    ) -> list[Any]:
        """In ``timestamp`` mode the next query starts after the last timestamp read, so a
        batch must not end part-way through the rows sharing one: drop that instant's
        rows (read next time), or, if the batch is nothing but that instant, read all of
        them."""
        index = names.index(self.ts_columns[0])
        last = rows[-1][index]
        kept = [row for row in rows if row[index] != last]
        if kept:
            return kept
        select = sql.split(" WHERE ", 1)[0]
        return conn.execute(f"{select} WHERE {ts} = {self.dialect.placeholder}", [last]).fetchall()

    def _schema(
        self, table: _Table, names: list[str], types: list[str | None], rows: list[Any]
    ) -> Schema:
        """The struct schema of ``table``'s rows (kept while the columns stay the same)."""
        if table.schema is not None and table.column_names == tuple(names):
            return table.schema
        numeric = self.config["numeric.mapping"]
        described = {c.name: c for c in table.columns or ()}
        fields: list[tuple[str, Schema]] = []
        for i, name in enumerate(names):
            column = described.get(name)
            type_name = column.type_name if column is not None else types[i]
            if type_name:
                optional = column.nullable if column is not None else True
                fields.append((name, self.dialect.column_schema(type_name, optional, numeric)))
            else:  # no declared type (a SQLite query): the first value's type
                sample = next((row[i] for row in rows if row[i] is not None), None)
                fields.append((name, schema_for_value(sample)))
        table.schema = Schema.struct(
            fields, name=table.name if "table" in table.partition else None
        )
        table.column_names = tuple(names)
        return table.schema

    # -- stopping ----------------------------------------------------------------------

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        close_quietly(conn)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:  # a query under way finishes first (bounded by batch.max.rows)
            self._close_connection()
