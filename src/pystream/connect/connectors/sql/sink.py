"""The SQL sink: writes records from topics into tables, as Confluent's JDBC sink.

Each record becomes a row of the table ``table.name.format`` names (``${topic}`` is
replaced by the record's topic).  Its columns are the value's fields: a struct with a
schema, or a schemaless ``dict`` (then the columns are the dict's keys, and
``auto.create`` guesses their types from the values: a bool is BOOLEAN, an int
BIGINT, a float DOUBLE PRECISION/REAL, bytes BYTEA/BLOB, anything else TEXT, nested
dicts and lists as JSON text).

``pk.mode`` says where the primary key comes from: ``none``; ``record_key`` (a
primitive key is the column ``pk.fields`` names, default ``__connect_key``; a struct
or dict key gives its fields, or those ``pk.fields`` lists); ``record_value`` (the
value's fields that ``pk.fields`` lists); ``kafka`` (``__connect_topic``,
``__connect_partition``, ``__connect_offset``).  ``insert.mode=upsert`` replaces the
row with the same key (``INSERT … ON CONFLICT (key) DO UPDATE``, in both databases),
``update`` only updates.  With ``delete.enabled`` (needs ``pk.mode=record_key``) a
tombstone (null value) deletes the key's row.

Rows are written in batches, each in a transaction of its own, by a writer thread of
the task's (:class:`BackgroundWriter`), so that the next records are converted while
the database takes the last ones.  One batch at most is in flight: ``put`` hands its
rows over when the writer is free (rows land after each ``put``, as with Confluent's
sink), and otherwise keeps them until the writer is free, ``batch.size`` rows wait or
a ``put`` brings no records (the worker calls it after every poll, as Kafka's does),
then waits for the write in flight.  Under load batches grow towards ``batch.size``.
``flush`` waits for the write in flight too, raises its error and writes the rest, so
that the worker commits offsets only after everything before them is in the database.
A batch whose write failed with a retriable error (the connection broke) is kept and
written again before anything later; the records of the ``put`` that found the
failure are handed back (:class:`RetriableError`: the worker delivers them again after
``retry.backoff.ms``).
A record that cannot be turned into a row goes to the errant record reporter (the dead
letter queue) when there is one, and fails the task otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from functools import partial
from operator import itemgetter
from typing import Any, NamedTuple

from ...api import (
    ConfigDef,
    ConfigError,
    ConfigKey,
    ConfigType,
    ConnectError,
    Importance,
    RetriableError,
    SinkRecord,
    SinkTask,
    Task,
    TopicPartition,
)
from ...data import Schema
from ..common import BackgroundWriter, SharedConfigSinkConnector, at_least, one_of
from .dialects import (
    CONNECTION_KEYS,
    Column,
    Dialect,
    close_quietly,
    dialect_for,
    schema_for_value,
)

__all__ = ["SqlSinkConnector", "SqlSinkTask"]

log = logging.getLogger(__name__)

BULK_MIN_ROWS = 64  # below this, executemany's pipeline is as quick as staging with COPY
# How long stop() waits for the writer thread once the write in flight is cancelled (a
# server that does not answer at all leaves the daemon thread behind, with a warning).
STOP_WAIT_S = 10.0
KAFKA_PK = ("__connect_topic", "__connect_partition", "__connect_offset")
KAFKA_PK_SCHEMAS = (Schema("string"), Schema("int32"), Schema("int64"))

SINK_CONFIG = ConfigDef(
    [
        *CONNECTION_KEYS,
        ConfigKey("topics", ConfigType.LIST, [], Importance.HIGH,
                  "The topics to write (or topics.regex, read by the worker).",
                  group="Connector"),
        ConfigKey("insert.mode", ConfigType.STRING, "insert", Importance.HIGH,
                  "insert, upsert (insert or replace the row with the same primary key) or "
                  "update.", one_of("insert.mode", ("insert", "upsert", "update")), "Writes"),
        ConfigKey("pk.mode", ConfigType.STRING, "none", Importance.HIGH,
                  "Where the primary key comes from: none, record_key, record_value or "
                  "kafka.", one_of("pk.mode", ("none", "record_key", "record_value", "kafka")),
                  "Data mapping"),
        ConfigKey("pk.fields", ConfigType.LIST, [], Importance.MEDIUM,
                  "The primary key's columns (see pk.mode).", group="Data mapping"),
        ConfigKey("fields.whitelist", ConfigType.LIST, [], Importance.MEDIUM,
                  "Only these value fields become columns (default: all).",
                  group="Data mapping"),
        ConfigKey("table.name.format", ConfigType.STRING, "${topic}", Importance.MEDIUM,
                  "The table of a record; ${topic} is its topic.", group="Data mapping"),
        ConfigKey("auto.create", ConfigType.BOOLEAN, False, Importance.MEDIUM,
                  "Create missing tables from the records' schemas (CREATE TABLE).",
                  group="DDL support"),
        ConfigKey("auto.evolve", ConfigType.BOOLEAN, False, Importance.MEDIUM,
                  "Add missing columns (ALTER TABLE … ADD COLUMN, nullable).",
                  group="DDL support"),
        ConfigKey("delete.enabled", ConfigType.BOOLEAN, False, Importance.MEDIUM,
                  "A tombstone (null value) deletes its key's row; needs pk.mode=record_key.",
                  group="Writes"),
        ConfigKey("batch.size", ConfigType.INT, 3000, Importance.MEDIUM,
                  "Rows written per statement batch and transaction.",
                  at_least("batch.size", 1), "Writes"),
        ConfigKey("retry.backoff.ms", ConfigType.INT, 3000, Importance.MEDIUM,
                  "After a retriable error (the database could not be reached), how long "
                  "the worker waits before it delivers the records again.",
                  at_least("retry.backoff.ms", 0), "Retries"),
    ]
)  # fmt: skip


def parse_sink_config(props: Mapping[str, Any]) -> dict[str, Any]:
    """Typed and checked sink settings (raises :class:`ConfigError` naming the key)."""
    parsed = SINK_CONFIG.parse(props)
    if parsed["delete.enabled"] and parsed["pk.mode"] != "record_key":
        raise ConfigError("delete.enabled=true needs pk.mode=record_key")
    if parsed["insert.mode"] != "insert" and parsed["pk.mode"] == "none":
        raise ConfigError(f"insert.mode={parsed['insert.mode']} needs a pk.mode other than none")
    if parsed["pk.mode"] == "record_value" and not parsed["pk.fields"]:
        raise ConfigError("pk.mode=record_value needs pk.fields (the value's key fields)")
    if parsed["pk.mode"] == "kafka" and parsed["pk.fields"] and len(parsed["pk.fields"]) != 3:
        raise ConfigError("pk.mode=kafka takes three pk.fields (topic, partition, offset)")
    return parsed


class SqlSinkConnector(SharedConfigSinkConnector):
    """Writes topics into database tables (aliases ``JdbcSinkConnector``,
    ``io.confluent.connect.jdbc.JdbcSinkConnector``)."""

    config_def = SINK_CONFIG

    @property
    def task(self) -> type[Task]:  # type: ignore[override]
        return SqlSinkTask

    def check(self, props: dict[str, str]) -> None:
        parse_sink_config(props)


class _Op(NamedTuple):
    """One buffered write: an upsert/insert/update of ``row`` or a delete of ``key`` (a
    tuple: one is made per record)."""

    table: str
    kind: str  # "write" or "delete"
    columns: tuple[str, ...]
    values: tuple[Any, ...]
    schemas: tuple[tuple[str, Schema], ...]  # every column's schema, for auto.create/evolve
    keys: tuple[str, ...]


class SqlSinkTask(SinkTask):
    """Turns records into rows, buffers them and writes them in batches."""

    def start(self, props: dict[str, str]) -> None:
        self.config = parse_sink_config(props)
        self.dialect: Dialect = dialect_for(self.config)
        self.pk_mode: str = self.config["pk.mode"]
        self.pk_fields: list[str] = self.config["pk.fields"]
        self.insert_mode: str = self.config["insert.mode"]
        self.batch_size: int = self.config["batch.size"]
        self.whitelist = set(self.config["fields.whitelist"])
        self._buffer: list[_Op] = []  # converted, not handed to the writer yet
        # The batch handed to the writer: in flight while ``_in_flight`` is set, else a
        # batch whose write failed with a retriable error, to be written again first.
        self._pending: list[_Op] = []
        self._in_flight: Future[None] | None = None
        self._writer: BackgroundWriter | None = None
        # Only the thread writing uses these (the writer, or the task's own thread when
        # nothing is in flight).
        self._tables: dict[str, dict[str, Column]] = {}  # described tables, by name
        self._shapes: dict[tuple[str, int, int], _Shape] = {}
        self._conn: Any = None

    # -- records to rows ---------------------------------------------------------------

    def _table_name(self, record: SinkRecord) -> str:
        return self.config["table.name.format"].replace("${topic}", record.topic)

    @staticmethod
    def _fields(schema: Schema | None, value: Any, what: str) -> list[tuple[str, Schema, Any]]:
        """``value`` (a struct or a schemaless dict) as (name, schema, value) triples."""
        if not isinstance(value, Mapping):
            raise ConnectError(
                f"the record {what} is a {type(value).__name__}, not a struct or a map: "
                "a SQL sink needs one (use a converter with schemas, or HoistField)"
            )
        if schema is not None and schema.type == "struct":
            return [(f.name, f.schema, value.get(f.name)) for f in schema.fields]
        return [(str(k), schema_for_value(v), v) for k, v in value.items()]

    def _key_fields(self, record: SinkRecord) -> list[tuple[str, Schema, Any]]:
        if self.pk_mode == "kafka":
            names = self.pk_fields or list(KAFKA_PK)
            values = (record.topic, record.kafka_partition, record.kafka_offset)
            return list(zip(names, KAFKA_PK_SCHEMAS, values, strict=True))
        if self.pk_mode != "record_key":
            return []
        if record.key is None:
            raise ConnectError(f"pk.mode=record_key but the record at {_where(record)} has no key")
        if isinstance(record.key, Mapping):
            fields = self._fields(record.key_schema, record.key, "key")
            if self.pk_fields:
                by_name = {f[0]: f for f in fields}
                missing = [n for n in self.pk_fields if n not in by_name]
                if missing:
                    raise ConnectError(f"the record key has no field(s) {missing} (pk.fields)")
                fields = [by_name[n] for n in self.pk_fields]
            return fields
        if self.pk_fields and len(self.pk_fields) != 1:
            raise ConnectError("a primitive record key fills one column: give one pk.fields")
        name = self.pk_fields[0] if self.pk_fields else "__connect_key"
        schema = record.key_schema or schema_for_value(record.key)
        return [(name, schema, record.key)]

    def _op(self, record: SinkRecord) -> _Op | None:
        """``record`` as a buffered write; records with the same schemas as an earlier
        one reuse the row shape worked out for it (the common case: one schema per topic)."""
        schema = record.value_schema
        if record.value is None or schema is None or schema.type != "struct":
            return self._new_op(record)
        cache_key = (record.topic, id(record.key_schema), id(schema))
        shape = self._shapes.get(cache_key)
        if shape is not None and shape.fits(record):
            return shape.op(record)
        op = self._new_op(record)
        if op is not None and len(self._shapes) < 1000:  # (a bound, should schemas churn)
            self._shapes[cache_key] = _Shape(self, record, op)
        return op

    def _new_op(self, record: SinkRecord) -> _Op | None:
        table = self._table_name(record)
        keys = self._key_fields(record)
        key_names = tuple(name for name, _, _ in keys)
        if self.pk_mode == "record_value":
            key_names = tuple(self.pk_fields)
        if record.value is None:
            if not self.config["delete.enabled"]:
                raise ConnectError(
                    f"the record at {_where(record)} has a null value (a tombstone): set "
                    "delete.enabled=true with pk.mode=record_key to delete rows"
                )
            values = tuple(self.dialect.to_db(v, s) for _, s, v in keys)
            schemas = tuple((n, s) for n, s, _ in keys)
            return _Op(table, "delete", key_names, values, schemas, key_names)
        fields = self._fields(record.value_schema, record.value, "value")
        if self.whitelist:
            fields = [f for f in fields if f[0] in self.whitelist or f[0] in self.pk_fields]
        if self.pk_mode == "record_value":
            present = {f[0] for f in fields}
            missing = [n for n in self.pk_fields if n not in present]
            if missing:
                raise ConnectError(f"the record value has no field(s) {missing} (pk.fields)")
        seen = {name for name, _, _ in keys}  # key columns come from the key, not the value
        merged = list(keys) + [f for f in fields if f[0] not in seen]
        return _Op(
            table,
            "write",
            tuple(n for n, _, _ in merged),
            tuple(self.dialect.to_db(v, s) for _, s, v in merged),
            tuple((n, s) for n, s, _ in merged),
            key_names,
        )

    # -- SinkTask ----------------------------------------------------------------------

    def put(self, records: list[SinkRecord]) -> None:
        if self._pending and self._in_flight is None:
            # A batch whose write failed: written again before anything later.
            self._submit()
        reporter = self.context.errant_record_reporter() if hasattr(self, "context") else None
        before = len(self._buffer)
        for record in records:
            try:
                op = self._op(record)
            except ConnectError as exc:
                if reporter is None:
                    del self._buffer[before:]  # the worker delivers these again or fails
                    raise
                reporter(record, exc)
                continue
            if op is not None:
                self._buffer.append(op)
        if not self._buffer:
            return
        busy = self._in_flight is not None and not self._in_flight.done()
        if busy and records and len(self._buffer) < self.batch_size:
            # Written with the next records once the writer is free (a put without
            # records, the topics quiet, waits for it and hands the rest over).
            return
        try:
            self._settle()  # one batch in flight at most
        except BaseException:
            # The worker hands these records to put() again (retriable), or the task
            # fails and restarts from the committed offsets: forget them, keep the rest.
            del self._buffer[before:]
            raise
        self._pending, self._buffer = self._buffer, []
        self._submit()

    def flush(self, current_offsets: Mapping[TopicPartition, int]) -> None:
        try:
            self._settle()
            if self._pending or self._buffer:
                # Nothing is in flight: write the rest in this thread, in order.
                self._write(self._pending + self._buffer)
        except BaseException:
            # Offsets are not committed: the worker delivers everything since the last
            # commit again, so what is buffered is dropped rather than written twice.
            self._pending = []
            self._buffer.clear()
            raise
        self._pending = []
        self._buffer.clear()

    def stop(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            in_flight = self._in_flight
            if in_flight is not None and not in_flight.done():
                # No flush came after it, so its offsets are not committed: abandon it
                # (rolled back; the worker delivers the records again) rather than wait
                # on a slow or unresponsive server.
                self.dialect.cancel(self._conn)
            if not writer.close(STOP_WAIT_S):
                log.warning("SQL sink: a write did not end after it was cancelled")
                return  # its thread owns the connection: it goes with the thread
        self._in_flight = None
        conn, self._conn = self._conn, None
        close_quietly(conn, rollback=True)

    # -- writing -----------------------------------------------------------------------

    def _submit(self) -> None:
        """Hand ``_pending`` to the writer thread (nothing is in flight)."""
        if self._writer is None:
            self._writer = BackgroundWriter("pystream-sql-sink-writer")
        self._in_flight = self._writer.submit(partial(self._write, self._pending))

    def _settle(self) -> None:
        """Wait for the write in flight and raise its error.  After a retriable error its
        batch stays pending (written again before anything later, after the worker's
        backoff); after any other the task fails and restarts from the committed
        offsets, so the batch is dropped."""
        future, self._in_flight = self._in_flight, None
        if future is None:
            return
        try:
            future.result()
        except RetriableError:
            if hasattr(self, "context"):
                self.context.timeout(self.config["retry.backoff.ms"])
            raise
        except BaseException:
            self._pending = []
            raise
        self._pending = []

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.dialect.connect()
        return self._conn

    def _write(self, ops: Sequence[_Op]) -> None:
        """Write ``ops`` in one transaction, in record order, consecutive operations of
        the same shape together in one ``executemany`` (or staged COPY)."""
        if not ops:
            return
        try:
            conn = self._connection()
            try:
                for group in _runs(ops):
                    self._execute(conn, group)
                conn.commit()
            except BaseException:
                self._tables.clear()  # the DDL may have been rolled back with the rest
                conn.rollback()
                raise
        except (ConnectError, KeyboardInterrupt):
            raise
        except Exception as exc:
            if self.dialect.is_transient(exc):
                close_quietly(self._conn)
                self._conn = None
                raise RetriableError(f"writing to the database: {exc}") from exc
            raise ConnectError(f"writing to the database: {exc}") from exc

    def _execute(self, conn: Any, ops: Sequence[_Op]) -> None:
        first = ops[0]
        if not self._ensure_table(conn, first):
            return  # deletes from a table that is not there (yet): nothing to delete
        cursor = conn.cursor()
        if first.kind == "delete":
            cursor.executemany(
                self.dialect.delete_sql(first.table, first.keys), [o.values for o in ops]
            )
            return
        if self.insert_mode != "update" and len(ops) >= BULK_MIN_ROWS:
            rows = [o.values for o in ops]
            if self.insert_mode == "upsert":
                # One statement may not touch a row twice: the last write of a key wins,
                # as it would statement by statement.
                key_of = itemgetter(*(first.columns.index(k) for k in first.keys))
                rows = list({key_of(r): r for r in rows}.values())
            keys = first.keys if self.insert_mode == "upsert" else None
            described = self._tables[first.table]
            types = [described[c].type_name for c in first.columns]
            if self.dialect.bulk_write(conn, first.table, first.columns, types, keys, rows):
                return
        if self.insert_mode == "insert":
            sql = self.dialect.insert_sql(first.table, first.columns)
            rows = [o.values for o in ops]
        elif self.insert_mode == "upsert":
            sql = self.dialect.upsert_sql(first.table, first.columns, first.keys)
            rows = [o.values for o in ops]
        else:
            sql = self.dialect.update_sql(first.table, first.columns, first.keys)
            positions = [i for i, c in enumerate(first.columns) if c not in first.keys]
            key_positions = [first.columns.index(k) for k in first.keys]
            rows = [tuple(o.values[i] for i in positions + key_positions) for o in ops]
        cursor.executemany(sql, rows)

    def _ensure_table(self, conn: Any, op: _Op) -> bool:
        """The table exists with ``op``'s columns (``auto.create``/``auto.evolve``), or a
        :class:`ConnectError` saying what is missing; False for a delete from a table
        ``auto.create`` has not made yet."""
        columns = self._tables.get(op.table)
        if columns is None:
            described = self.dialect.describe_table(conn, op.table)
            if described is None:
                if not self.config["auto.create"]:
                    raise ConnectError(
                        f"table {op.table!r} does not exist: create it, or set auto.create=true"
                    )
                if op.kind == "delete":
                    return False  # nothing to delete from a table that is not there
                conn.execute(self.dialect.create_table_sql(op.table, op.schemas, op.keys))
                log.info("SQL sink: created table %s", op.table)
                described = self.dialect.describe_table(conn, op.table) or []
            columns = self._tables[op.table] = {c.name: c for c in described}
        missing = [(n, s) for n, s in op.schemas if n not in columns]
        if not missing:
            return True
        if not self.config["auto.evolve"]:
            raise ConnectError(
                f"table {op.table!r} has no column(s) {[n for n, _ in missing]}: add them, or "
                "set auto.evolve=true"
            )
        for name, schema in missing:
            conn.execute(self.dialect.add_column_sql(op.table, name, schema))
            log.info("SQL sink: added column %s to %s", name, op.table)
        self._tables.pop(op.table)
        return self._ensure_table(conn, op)


class _Shape:
    """Where each column of a struct record's row comes from, and how its value is
    converted, for records with the same schemas as ``record`` (kept alive here, so that
    their ids stay theirs)."""

    def __init__(self, task: SqlSinkTask, record: SinkRecord, op: _Op) -> None:
        self.key_schema = record.key_schema
        self.value_schema = record.value_schema
        self.key_is_map = isinstance(record.key, Mapping)
        self.needs_key = task.pk_mode == "record_key"
        self.template = op
        kafka = task.pk_fields or list(KAFKA_PK) if task.pk_mode == "kafka" else []
        to_db = task.dialect.to_db
        self.key_parts: list[tuple[str, str, Any]] = []
        self.value_names: list[str] = []
        self.value_convs: list[Any] = []
        plain = {"int8", "int16", "int32", "int64", "float32", "float64", "boolean", "string"}
        for name, schema in op.schemas:
            conv = None if schema.name is None and schema.type in plain else schema
            if name in kafka:
                self.key_parts.append(("kafka", name, kafka.index(name)))
            elif self.needs_key and name in op.keys:
                self.key_parts.append(("key", name, conv))
            else:
                self.value_names.append(name)
                self.value_convs.append(conv)
        self.plain_values = not any(self.value_convs)
        self.to_db = to_db

    def fits(self, record: SinkRecord) -> bool:
        if record.key_schema is not self.key_schema or record.value_schema is not self.value_schema:
            return False
        return not self.needs_key or (
            record.key is not None and isinstance(record.key, Mapping) == self.key_is_map
        )

    def op(self, record: SinkRecord) -> _Op:
        values: list[Any] = []
        key = record.key
        for source, name, how in self.key_parts:
            if source == "kafka":
                value = (record.topic, record.kafka_partition, record.kafka_offset)[how]
            else:
                value = key.get(name) if self.key_is_map else key
                if how is not None:
                    value = self.to_db(value, how)
            values.append(value)
        fields = record.value
        if self.plain_values:
            values.extend([fields.get(name) for name in self.value_names])
        else:
            to_db = self.to_db
            for name, how in zip(self.value_names, self.value_convs, strict=True):
                value = fields.get(name)
                values.append(value if how is None else to_db(value, how))
        t = self.template
        return _Op(t.table, t.kind, t.columns, tuple(values), t.schemas, t.keys)


def _runs(ops: Sequence[_Op]) -> list[list[_Op]]:
    """``ops`` cut into runs of the same table, kind and columns, in order."""
    runs: list[list[_Op]] = []
    for op in ops:
        last = runs[-1][-1] if runs else None
        if last is not None and (last.table, last.kind, last.columns) == (
            op.table,
            op.kind,
            op.columns,
        ):
            runs[-1].append(op)
        else:
            runs.append([op])
    return runs


def _where(record: SinkRecord) -> str:
    return f"{record.topic}-{record.kafka_partition}@{record.kafka_offset}"
