"""Connect: moving data between outside systems and topics, as Kafka Connect does.

``api`` is the plugin API (connectors, tasks, converters, transforms), ``data`` the
schemas; the runtime (workers, their REST API), the built-in converters, transforms
and connectors build on them.  Built on :mod:`pystream.aio`, never on the broker.
"""

from __future__ import annotations
