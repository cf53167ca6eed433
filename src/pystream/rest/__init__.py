"""The REST proxy: Confluent REST Proxy's API v2 over HTTP, built on :mod:`pystream.aio`.

``pystream rest --bootstrap-server HOST:PORT`` serves :func:`create_app` with
uvicorn.  Modules, one job each: ``app`` (routes, the app factory), ``produce``
(produce requests), ``consumers`` (consumer instances and their expiry),
``topics`` (topic metadata), ``formats`` (content types, bodies, embedded
formats), ``errors`` (Confluent's error shape and codes), ``config``.
"""

from __future__ import annotations

from .app import create_app
from .config import RestConfig

__all__ = ["RestConfig", "create_app"]
