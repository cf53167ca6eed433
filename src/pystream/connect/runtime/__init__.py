"""Connect's runtime: the worker that runs connectors and tasks, its offset storage,
error handling and dead letter queue, the herder that manages connectors, and the
REST API (Kafka Connect's paths and JSON shapes).

``config`` (worker and connector settings), ``states`` (Kafka's connector/task
states), ``offsets`` (``OffsetBackingStore``: the file store of standalone mode),
``loading`` (plugins, converters and transforms by name), ``errors``
(``errors.tolerance``, retries, the DLQ), ``source_task``/``sink_task`` (the task
runners, one thread each), ``worker`` (connectors and tasks of one process),
``herder`` (what the REST API calls; standalone now), ``rest`` (the Starlette app).
"""

from __future__ import annotations
