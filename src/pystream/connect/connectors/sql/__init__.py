"""SQL source and sink connectors (SQLite out of the box, PostgreSQL through psycopg),
with Confluent's JDBC connectors' configuration names.

``dialects`` is what differs between the databases, ``source`` reads tables into
topics, ``sink`` writes topics into tables.  ``JdbcSourceConnector`` and
``JdbcSinkConnector`` are the same classes under Confluent's names.
"""

from __future__ import annotations

from .sink import SqlSinkConnector, SqlSinkTask
from .source import SqlSourceConnector, SqlSourceTask

JdbcSourceConnector = SqlSourceConnector
JdbcSinkConnector = SqlSinkConnector

__all__ = [
    "JdbcSinkConnector",
    "JdbcSourceConnector",
    "SqlSinkConnector",
    "SqlSinkTask",
    "SqlSourceConnector",
    "SqlSourceTask",
]
