"""Filter: drop every record it is applied to; with a predicate (``transforms.<a>.predicate``,
``.negate``) it drops the records that match (Kafka's Filter)."""

from __future__ import annotations

from ..api import ConnectRecord, Transformation


class Filter(Transformation):
    """Drops the record (use it with a predicate)."""

    def apply(self, record: ConnectRecord) -> None:
        return None
