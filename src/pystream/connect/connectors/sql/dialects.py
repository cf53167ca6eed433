"""The databases the SQL connectors speak: SQLite (stdlib ``sqlite3``) and PostgreSQL
(psycopg 3), chosen by ``connection.url``.

A :class:`Dialect` opens connections, quotes names, describes tables, maps column types
to Connect schemas and back (``auto.create``), and writes the statements that differ
between the two (upserts).  Values go between Connect and the database through
:func:`to_connect` and :meth:`Dialect.to_db`.

``connection.url`` forms: ``jdbc:sqlite:/abs/path.db``, ``jdbc:sqlite::memory:``,
``sqlite:///relative.db`` and ``sqlite:////abs/path.db`` (SQLAlchemy's form),
``jdbc:postgresql://host:port/db?…`` and ``postgresql://…`` (libpq's URI, so
``sslmode=…`` and the like pass through).
"""

from __future__ import annotations

import abc
import datetime as dt
import decimal
import json
import logging
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...api import ConfigError, ConfigKey, ConfigType, ConnectError, Importance, RetriableError
from ...data import DATE_NAME, DECIMAL_NAME, TIME_NAME, TIMESTAMP_NAME, Schema
from ..common import json_default

__all__ = [
    "CONNECTION_KEYS",
    "Column",
    "Dialect",
    "close_quietly",
    "PostgresDialect",
    "SqliteDialect",
    "dialect_for",
    "schema_for_value",
    "to_connect",
]

log = logging.getLogger(__name__)

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Column:
    """A table column as the database describes it."""

    name: str
    type_name: str  # as declared (SQLite) or ``format_type`` (PostgreSQL), lowercase
    nullable: bool = True
    primary_key: bool = False


# -- types ----------------------------------------------------------------------------


def timestamp_schema(optional: bool) -> Schema:
    return Schema("int64", optional=optional, name=TIMESTAMP_NAME, version=1)


def schema_for_type(type_name: str, optional: bool, numeric_mapping: str = "none") -> Schema:
    """The Connect schema of a column of SQL type ``type_name`` (SQLite's declared types
    by its affinity rules; PostgreSQL's ``format_type`` or catalog names)."""
    name = type_name.lower().strip()
    base = re.sub(r"\(.*", "", name).strip()
    if base in ("bool", "boolean"):
        return Schema("boolean", optional=optional)
    if base in ("smallint", "int2", "tinyint"):
        return Schema("int16", optional=optional)
    if base in ("integer", "int", "int4", "serial", "mediumint"):
        return Schema("int32", optional=optional)
    if base in ("bigint", "int8", "bigserial"):
        return Schema("int64", optional=optional)
    if base in ("real", "float4"):
        return Schema("float32", optional=optional)
    if base in ("double precision", "float8", "double", "float"):
        return Schema("float64", optional=optional)
    if base in ("numeric", "decimal"):
        match = re.search(r"\(\s*(\d+)\s*(?:,\s*(-?\d+)\s*)?\)", name)
        scale = int(match.group(2) or 0) if match else None
        if numeric_mapping == "best_fit" or scale is None:
            # Without a declared scale no fixed-scale Decimal fits every value.
            return Schema("int64" if scale == 0 else "float64", optional=optional)
        return Schema(
            "bytes",
            optional=optional,
            name=DECIMAL_NAME,
            version=1,
            parameters={"scale": str(scale)},
        )
    if base.startswith("timestamp") or base == "datetime":
        return timestamp_schema(optional)
    if base == "date":
        return Schema("int32", optional=optional, name=DATE_NAME, version=1)
    if base.startswith("time"):
        return Schema("int32", optional=optional, name=TIME_NAME, version=1)
    if base in ("bytea", "blob"):
        return Schema("bytes", optional=optional)
    if "int" in base:  # SQLite's INTEGER affinity: any declared type containing INT
        return Schema("int64", optional=optional)
    if any(word in base for word in ("real", "floa", "doub")):
        return Schema("float64", optional=optional)
    return Schema("string", optional=optional)  # text, varchar, uuid, json, and the rest


def schema_for_value(value: Any) -> Schema:
    """An optional schema for a schemaless value (a column of a query's result that has
    no declared type, or a field of a schemaless record for ``auto.create``)."""
    if isinstance(value, bool):
        return Schema("boolean", optional=True)
    if isinstance(value, int):
        return Schema("int64", optional=True)
    if isinstance(value, float | decimal.Decimal):  # schemaless JSON numbers may be Decimals
        return Schema("float64", optional=True)
    if isinstance(value, bytes | bytearray | memoryview):
        return Schema("bytes", optional=True)
    if isinstance(value, dt.datetime):
        return timestamp_schema(True)
    return Schema("string", optional=True)


def to_datetime(value: Any) -> dt.datetime:
    """A timestamp column's value (datetime, ISO text, or epoch ms) as an aware UTC
    datetime; naive values are taken to be UTC."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float):
        return EPOCH + dt.timedelta(milliseconds=value)
    if isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value.strip())
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise ConnectError(f"cannot read {value!r} as a timestamp")


def to_connect(value: Any, schema: Schema) -> Any:
    """A value read from the database as Connect holds it for ``schema`` (Timestamp: an
    aware UTC datetime; Date: a date; Time: a time; Decimal: a ``decimal.Decimal``)."""
    if value is None:
        return None
    if schema.name == TIMESTAMP_NAME:
        return to_datetime(value)
    if schema.name == DATE_NAME:
        return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
    if schema.name == TIME_NAME:
        return value if isinstance(value, dt.time) else dt.time.fromisoformat(str(value))
    if schema.name == DECIMAL_NAME:
        return decimal.Decimal(str(value))
    kind = schema.type
    if kind == "boolean":
        return bool(value)
    if kind.startswith("int"):
        return int(value)
    if kind.startswith("float"):
        return float(value)
    if kind == "bytes":
        return bytes(value) if not isinstance(value, str) else value.encode()
    if kind == "string" and not isinstance(value, str):
        if isinstance(value, dict | list):  # json/jsonb columns
            return json.dumps(value, separators=(",", ":"))
        return str(value)  # uuid, and the like
    return value


_PLAIN = frozenset({int, str, float, bool, bytes})

# -- dialects -------------------------------------------------------------------------


class Dialect(abc.ABC):
    """What differs between the databases."""

    name: str
    placeholder: str  # the DB-API parameter marker

    @abc.abstractmethod
    def connect(self) -> Any:
        """A new DB-API connection, in a transaction on first statement (not autocommit)."""

    @abc.abstractmethod
    def list_tables(self, conn: Any) -> list[str]:
        """The user tables (and views) a source may read."""

    @abc.abstractmethod
    def describe_table(self, conn: Any, table: str) -> list[Column] | None:
        """The table's columns in order, or None if there is no such table."""

    @abc.abstractmethod
    def sql_type(self, schema: Schema) -> str:
        """The column type ``auto.create``/``auto.evolve`` use for ``schema``."""

    def column_schema(self, type_name: str, optional: bool, numeric_mapping: str) -> Schema:
        """The Connect schema of a column of type ``type_name``."""
        return schema_for_type(type_name, optional, numeric_mapping)

    @abc.abstractmethod
    def query_types(self, cursor: Any) -> list[str | None]:
        """The type names of a result's columns, None where the database does not say."""

    @staticmethod
    def is_transient(error: BaseException) -> bool:
        """Whether ``error`` is worth retrying (the connection broke, the database was
        busy), as opposed to a bad statement or value."""
        return False

    def cancel(self, conn: Any) -> None:
        """Cancel the statement ``conn`` is running in another thread (it fails there and
        is rolled back); quietly, as the connection may be broken or idle."""
        if conn is None:
            return
        try:
            self._cancel(conn)
        except Exception:  # noqa: BLE001 (best effort: the caller is stopping)
            log.debug("cancelling a statement failed", exc_info=True)

    @abc.abstractmethod
    def _cancel(self, conn: Any) -> None: ...

    def quote(self, name: str) -> str:
        """A quoted identifier: ``"a""b"``."""
        return '"' + name.replace('"', '""') + '"'

    def quote_table(self, table: str) -> str:
        """A possibly schema-qualified table name (``schema.table``), each part quoted."""
        return ".".join(self.quote(part) for part in table.split("."))

    def insert_sql(self, table: str, columns: Sequence[str]) -> str:
        names = ", ".join(self.quote(c) for c in columns)
        marks = ", ".join([self.placeholder] * len(columns))
        return f"INSERT INTO {self.quote_table(table)} ({names}) VALUES ({marks})"

    def upsert_sql(self, table: str, columns: Sequence[str], keys: Sequence[str]) -> str:
        """Insert, or update the row with the same key."""
        return f"{self.insert_sql(table, columns)} {self.on_conflict(columns, keys)}"

    def on_conflict(self, columns: Sequence[str], keys: Sequence[str]) -> str:
        """What makes an INSERT an upsert (both databases speak ``ON CONFLICT … DO
        UPDATE``; SQLite since 3.24)."""
        conflict = ", ".join(self.quote(k) for k in keys)
        rest = [c for c in columns if c not in keys]
        if not rest:
            return f"ON CONFLICT ({conflict}) DO NOTHING"
        updates = ", ".join(f"{self.quote(c)} = excluded.{self.quote(c)}" for c in rest)
        return f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}"

    def update_sql(self, table: str, columns: Sequence[str], keys: Sequence[str]) -> str:
        """Parameters: the non-key columns, then the keys."""
        rest = [c for c in columns if c not in keys]
        sets = ", ".join(f"{self.quote(c)} = {self.placeholder}" for c in rest)
        where = " AND ".join(f"{self.quote(k)} = {self.placeholder}" for k in keys)
        return f"UPDATE {self.quote_table(table)} SET {sets} WHERE {where}"

    def bulk_write(
        self,
        conn: Any,
        table: str,
        columns: Sequence[str],
        types: Sequence[str],
        keys: Sequence[str] | None,
        rows: Sequence[Sequence[Any]],
    ) -> bool:
        """Insert (or, with ``keys``, upsert) many rows at once, faster than one
        statement per row; False if this database has no such way (then the caller
        uses ``executemany``).  ``types`` are the columns' types as
        :meth:`describe_table` gives them.  Rows of an upsert have distinct keys."""
        return False

    def delete_sql(self, table: str, keys: Sequence[str]) -> str:
        where = " AND ".join(f"{self.quote(k)} = {self.placeholder}" for k in keys)
        return f"DELETE FROM {self.quote_table(table)} WHERE {where}"

    def create_table_sql(
        self, table: str, fields: Sequence[tuple[str, Schema]], keys: Sequence[str]
    ) -> str:
        """``CREATE TABLE`` for ``auto.create``: key columns NOT NULL, the others NOT NULL
        only when their schema is required and has no default (as Confluent's)."""
        lines = []
        for name, schema in fields:
            not_null = name in keys or (not schema.optional and schema.default is None)
            lines.append(f"{self.quote(name)} {self.sql_type(schema)}{' NOT NULL' * not_null}")
        if keys:
            lines.append(f"PRIMARY KEY ({', '.join(self.quote(k) for k in keys)})")
        return f"CREATE TABLE {self.quote_table(table)} (\n  " + ",\n  ".join(lines) + "\n)"

    def add_column_sql(self, table: str, name: str, schema: Schema) -> str:
        """``auto.evolve``: new columns are nullable (existing rows have no value)."""
        column = f"{self.quote(name)} {self.sql_type(schema)}"
        return f"ALTER TABLE {self.quote_table(table)} ADD COLUMN {column}"

    def to_db(self, value: Any, schema: Schema | None) -> Any:
        """A Connect value as a statement parameter."""
        name = schema.name if schema is not None else None
        if value is None or (name is None and type(value) in _PLAIN):
            return value  # the common case first: the sink calls this for every field
        if name == TIMESTAMP_NAME or isinstance(value, dt.datetime):
            return self.adapt(to_datetime(value))
        if name == DATE_NAME and isinstance(value, int):
            return self.adapt(dt.date(1970, 1, 1) + dt.timedelta(days=value))
        if name == TIME_NAME and isinstance(value, int):
            return self.adapt((dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=value)).time())
        if isinstance(value, dict | list):
            return json.dumps(value, separators=(",", ":"), default=json_default)
        return self.adapt(value)

    def adapt(self, value: Any) -> Any:
        """A datetime, date, time or Decimal as this database's driver takes it."""
        return value


class SqliteDialect(Dialect):
    name = "sqlite"
    placeholder = "?"

    def __init__(self, path: str) -> None:
        self.path = path

    def connect(self) -> sqlite3.Connection:
        # check_same_thread off: a task's stop() may close it from another thread, after
        # the task's own thread is done with it.  The timeout waits out a writer's lock.
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        return conn

    def list_tables(self, conn: Any) -> list[str]:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
        ).fetchall()
        return [row[0] for row in rows]

    def describe_table(self, conn: Any, table: str) -> list[Column] | None:
        rows = conn.execute(f"PRAGMA table_info({self.quote_table(table)})").fetchall()
        if not rows:
            return None
        # (cid, name, type, notnull, dflt_value, pk)
        return [Column(r[1], (r[2] or "").lower(), not r[3], bool(r[5])) for r in rows]

    def sql_type(self, schema: Schema) -> str:
        if schema.name == DECIMAL_NAME:
            return "NUMERIC"
        if schema.name == TIMESTAMP_NAME:
            return "TIMESTAMP"  # stored as ISO text, which sorts in time order
        if schema.name == DATE_NAME:
            return "DATE"
        if schema.name == TIME_NAME:
            return "TIME"
        return {
            "boolean": "BOOLEAN",
            "float32": "REAL",
            "float64": "REAL",
            "string": "TEXT",
            "bytes": "BLOB",
        }.get(schema.type, "INTEGER" if schema.type.startswith("int") else "TEXT")

    def column_schema(self, type_name: str, optional: bool, numeric_mapping: str) -> Schema:
        # SQLite's integers are 64-bit and its reals doubles, whatever the declared name.
        base = type_name.lower()
        if "int" in base and "point" not in base:
            return Schema("int64", optional=optional)
        if any(word in base for word in ("real", "floa", "doub")):
            return Schema("float64", optional=optional)
        return schema_for_type(type_name, optional, numeric_mapping)

    def query_types(self, cursor: Any) -> list[str | None]:
        return [None] * len(cursor.description)

    @staticmethod
    def is_transient(error: BaseException) -> bool:
        return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)

    def _cancel(self, conn: Any) -> None:
        conn.interrupt()

    def adapt(self, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            # ISO text in UTC without the offset: what CURRENT_TIMESTAMP writes, so
            # comparisons between both sort in time order.
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
        if isinstance(value, dt.date | dt.time):
            return value.isoformat()
        if isinstance(value, decimal.Decimal):
            return str(value)
        return value


class PostgresDialect(Dialect):
    name = "postgresql"
    placeholder = "%s"

    def __init__(self, conninfo: str, user: str | None, password: str | None) -> None:
        self.conninfo = conninfo
        self.user = user
        self.password = password
        self._stages = 0  # staging tables made, for unique names

    def connect(self) -> Any:
        import psycopg

        kwargs: dict[str, Any] = {}
        if self.user:
            kwargs["user"] = self.user
        if self.password:
            kwargs["password"] = self.password
        try:
            # UTC sessions: naive timestamps are read and written as UTC.
            return psycopg.connect(
                self.conninfo, connect_timeout=10, options="-c TimeZone=UTC", **kwargs
            )
        except psycopg.OperationalError as exc:
            raise RetriableError(f"cannot connect to PostgreSQL: {exc}") from exc

    def list_tables(self, conn: Any) -> list[str]:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() ORDER BY table_name"
        ).fetchall()
        return [row[0] for row in rows]

    def describe_table(self, conn: Any, table: str) -> list[Column] | None:
        rows = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, "
            "  COALESCE(a.attnum = ANY(i.indkey), false) "
            "FROM pg_attribute a "
            "LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum",
            (self.quote_table(table),),
        ).fetchall()
        if not rows:
            return None
        return [
            Column(name, type_name.lower(), nullable, pk) for name, type_name, nullable, pk in rows
        ]

    def sql_type(self, schema: Schema) -> str:
        if schema.name == DECIMAL_NAME:
            return "NUMERIC"
        if schema.name == TIMESTAMP_NAME:
            return "TIMESTAMP"  # UTC, as the session's time zone
        if schema.name == DATE_NAME:
            return "DATE"
        if schema.name == TIME_NAME:
            return "TIME"
        return {
            "int8": "SMALLINT",
            "int16": "SMALLINT",
            "int32": "INT",
            "int64": "BIGINT",
            "float32": "REAL",
            "float64": "DOUBLE PRECISION",
            "boolean": "BOOLEAN",
            "string": "TEXT",
            "bytes": "BYTEA",
        }.get(schema.type, "TEXT")

    def bulk_write(
        self,
        conn: Any,
        table: str,
        columns: Sequence[str],
        types: Sequence[str],
        keys: Sequence[str] | None,
        rows: Sequence[Sequence[Any]],
    ) -> bool:
        # COPY into a temporary table shaped like the target (dropped at commit), then
        # one INSERT … SELECT: a few round trips for the whole batch.
        self._stages += 1
        stage = self.quote(f"pystream_stage_{self._stages}")
        names = ", ".join(self.quote(c) for c in columns)
        conn.execute(
            f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS "
            f"SELECT {names} FROM {self.quote_table(table)} WITH NO DATA"
        )
        binary = _binary_copy_types(types, rows)
        copy_sql = f"COPY {stage} ({names}) FROM STDIN"
        with conn.cursor().copy(copy_sql + (" (FORMAT BINARY)" if binary else "")) as copy:
            if binary:
                copy.set_types(binary)
            for row in rows:
                copy.write_row(row)
        insert = f"INSERT INTO {self.quote_table(table)} ({names}) SELECT {names} FROM {stage}"
        if keys:
            insert += " " + self.on_conflict(columns, keys)
        conn.execute(insert)
        return True

    def query_types(self, cursor: Any) -> list[str | None]:
        import psycopg

        names: list[str | None] = []
        for column in cursor.description:
            info = psycopg.adapters.types.get(column.type_code)
            names.append(info.name if info is not None else None)
        return names

    def _cancel(self, conn: Any) -> None:
        conn.cancel_safe(timeout=5)  # its own connection, so bounded if the server hangs

    @staticmethod
    def is_transient(error: BaseException) -> bool:
        import psycopg

        return isinstance(error, psycopg.OperationalError) and not isinstance(
            error, psycopg.errors.QueryCanceled
        )

    def adapt(self, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            # TIMESTAMP columns hold UTC (converters make UTC datetimes: skip the math).
            if value.tzinfo is not UTC:
                value = value.astimezone(UTC)
            return value.replace(tzinfo=None)
        return value


# Column types COPY may send in binary (less work on both sides than text: no number or
# timestamp formatting and parsing), with the Python types psycopg's binary dumpers for
# them take; anything else goes as text, which PostgreSQL parses into any type.
_BINARY_COPY: dict[str, frozenset[type]] = {
    "smallint": frozenset({int}),
    "integer": frozenset({int}),
    "bigint": frozenset({int}),
    "real": frozenset({float, int}),
    "double precision": frozenset({float, int}),
    "text": frozenset({str}),
    "character varying": frozenset({str}),
    "boolean": frozenset({bool}),
    "timestamp without time zone": frozenset({dt.datetime}),  # naive UTC (adapt)
    "date": frozenset({dt.date}),
}
_NONE = type(None)


def _binary_copy_types(types: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str] | None:
    """The type names for a binary COPY of ``rows``, or None if a column's type or one
    of its values does not suit one (then COPY sends text)."""
    names = [re.sub(r"\(.*?\)", "", t).strip() for t in types]  # varchar(20): varchar
    if not rows or not all(name in _BINARY_COPY for name in names):
        return None
    for name, values in zip(names, zip(*rows, strict=True), strict=True):
        if not set(map(type, values)) - {_NONE} <= _BINARY_COPY[name]:
            return None
    return names


def close_quietly(conn: Any, rollback: bool = False) -> None:
    """Close a connection that may be broken (after an error, or at stop)."""
    if conn is None:
        return
    try:
        if rollback:
            conn.rollback()
        conn.close()
    except Exception:  # noqa: BLE001 (it is going away either way)
        log.debug("closing a database connection failed", exc_info=True)


_JDBC_SQLITE = re.compile(r"^(?:jdbc:)?sqlite:(?P<rest>.*)$", re.IGNORECASE)
_POSTGRES = re.compile(r"^(?:jdbc:)?(?:postgresql|postgres)://", re.IGNORECASE)


def dialect_for(props: Mapping[str, Any]) -> Dialect:
    """The dialect for ``connection.url`` (with ``connection.user``/``.password``)."""
    url = str(props.get("connection.url") or "").strip()
    user = props.get("connection.user") or None
    password = props.get("connection.password") or None
    if match := _JDBC_SQLITE.match(url):
        rest = match.group("rest")
        if rest.startswith("///"):  # SQLAlchemy's sqlite:///relative, sqlite:////absolute
            path = rest[3:]
        elif rest.startswith("//"):
            raise ConfigError(
                f"Invalid connection.url {url!r}: a SQLite URL is jdbc:sqlite:/path/to.db, "
                "sqlite:///relative.db or sqlite:////absolute/path.db"
            )
        else:
            path = rest
        if not path:
            raise ConfigError(f"Invalid connection.url {url!r}: no database file")
        return SqliteDialect(path)
    if _POSTGRES.match(url):
        conninfo = url[5:] if url.lower().startswith("jdbc:") else url
        return PostgresDialect(conninfo, user, password)
    raise ConfigError(
        f"Invalid connection.url {url!r}: expected jdbc:sqlite:<path>, sqlite:///<path>, "
        "jdbc:postgresql://host:port/db or postgresql://host:port/db"
    )


def _check_url(value: Any) -> None:
    dialect_for({"connection.url": value})


CONNECTION_KEYS = (
    ConfigKey(
        "connection.url",
        ConfigType.STRING,
        importance=Importance.HIGH,
        documentation="The database: jdbc:sqlite:/path/to.db, sqlite:///relative.db, "
        "sqlite:////absolute.db, jdbc:postgresql://host:port/db or postgresql://host:port/db.",
        validator=_check_url,
        group="Database",
    ),
    ConfigKey(
        "connection.user",
        ConfigType.STRING,
        None,
        Importance.HIGH,
        "The database user (PostgreSQL).",
        group="Database",
    ),
    ConfigKey(
        "connection.password",
        ConfigType.PASSWORD,
        None,
        Importance.HIGH,
        "The database password (PostgreSQL).",
        group="Database",
    ),
)
"""The settings both SQL connectors share (Confluent's JDBC connectors' names)."""
