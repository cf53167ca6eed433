"""pystream: a Kafka-compatible event-streaming broker with a Cython core."""

__version__ = "0.1.0"
