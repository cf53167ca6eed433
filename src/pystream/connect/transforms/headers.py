"""Header SMTs, as Kafka's: InsertHeader (``header``, ``value.literal``, typed as the
SimpleHeaderConverter reads a header) and DropHeaders (``headers``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import (
    ConfigDef,
    ConfigKey,
    ConfigType,
    ConnectRecord,
    Header,
    Importance,
    Transformation,
)
from ..converters import SimpleHeaderConverter
from ._util import Defined, non_empty_list


class InsertHeader(Defined, Transformation):
    """Add a header ``header`` whose value is the literal ``value.literal``."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "header",
                ConfigType.STRING,
                documentation="The name of the header.",
                importance=Importance.HIGH,
            ),
            ConfigKey(
                "value.literal",
                ConfigType.STRING,
                documentation="The literal value that is to be set as the header value on all "
                "records.",
                importance=Importance.HIGH,
            ),
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        parsed = self.CONFIG_DEF.parse(configs)
        # Kafka parses the literal with Values.parseString, as SimpleHeaderConverter reads.
        typed = SimpleHeaderConverter().to_connect_data("", parsed["value.literal"].encode())
        self.header = Header(parsed["header"], typed.value, typed.schema)

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        return record.new_record(headers=(*record.headers, self.header))


class DropHeaders(Defined, Transformation):
    """Remove every header whose name is in ``headers``."""

    CONFIG_DEF = ConfigDef(
        [
            ConfigKey(
                "headers",
                ConfigType.LIST,
                documentation="The name of the headers to be removed.",
                importance=Importance.HIGH,
                validator=non_empty_list("headers"),
            )
        ]
    )

    def configure(self, configs: Mapping[str, Any]) -> None:
        self.names = frozenset(self.CONFIG_DEF.parse(configs)["headers"])

    def apply(self, record: ConnectRecord) -> ConnectRecord:
        kept = tuple(h for h in record.headers if h.key not in self.names)
        if len(kept) == len(record.headers):
            return record
        return record.new_record(headers=kept)
