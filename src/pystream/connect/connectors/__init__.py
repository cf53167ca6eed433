"""Built-in connectors: ``file`` (FileStreamSource/FileStreamSink), ``sql`` (SQLite and
PostgreSQL source and sink) and ``http_sink``."""

from __future__ import annotations
