"""Errors raised only by the client (broker errors are :mod:`pystream.errors` classes)."""

from __future__ import annotations

from pystream.errors import KafkaError, NetworkException, UnsupportedVersionError

__all__ = [
    "ClientClosedError",
    "TransactionAbortedError",
    "KafkaConnectionError",
    "UnsupportedFeatureError",
]


class KafkaConnectionError(NetworkException):
    """A broker could not be reached or the connection broke (retriable)."""


class UnsupportedFeatureError(UnsupportedVersionError):
    """The broker does not advertise an API (or any version of it) this client needs.

    Raised when an operation is attempted, with the API, the versions the
    client speaks and what the broker advertised, so the message says what is
    missing rather than failing on the wire.
    """


class ClientClosedError(KafkaError):
    """The producer/consumer/admin client was closed; create a new one."""

    error_name = "CLIENT_CLOSED"


class TransactionAbortedError(KafkaError):
    """The record was not sent: its transaction was aborted (``abort_transaction``, or an
    earlier error in the transaction)."""

    error_name = "TRANSACTION_ABORTED"
