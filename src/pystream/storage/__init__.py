"""Storage: partition logs on disk, their recovery, retention and checkpoints.

:class:`Log` is one partition (``<topic>-<partition>/`` with Kafka's segment
files); :class:`LogManager` holds every log in the broker's ``log.dirs``.
Nothing here knows about sockets or the wire protocol.
"""

from pystream.storage.log import (
    AppendOrigin,
    FetchDataInfo,
    Log,
    LogAppendInfo,
    TimestampAndOffset,
)
from pystream.storage.log_manager import LogManager, validate_topic_name

__all__ = [
    "AppendOrigin",
    "FetchDataInfo",
    "Log",
    "LogAppendInfo",
    "LogManager",
    "TimestampAndOffset",
    "validate_topic_name",
]
