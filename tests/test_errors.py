"""Error codes agree with Kafka's numbering (kafka-python's table as the oracle)."""

import kafka.errors as kafka_errors
import pytest

from pystream import errors


def _oracle() -> dict[int, type]:
    table: dict[int, type] = {}
    for value in vars(kafka_errors).values():
        if isinstance(value, type) and isinstance(getattr(value, "errno", None), int):
            table.setdefault(value.errno, value)
    return table


def test_every_code_matches_kafka_python() -> None:
    oracle = _oracle()
    checked = 0
    for code in errors.ErrorCode:
        if code.value in oracle and code.value > 0:
            ours = errors.error_for_code(code.value)
            assert ours.error_code == code.value
            # Java marks CORRUPT_MESSAGE retriable (CorruptRecordException); kafka-python does not.
            assert ours.retriable == bool(oracle[code.value].retriable) or code.value == 2
            checked += 1
    assert checked > 100


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (errors.CorruptMessageError, 2),
        (errors.InvalidRecordError, 87),
        (errors.UnsupportedVersionError, 35),
        (errors.InvalidConfigError, 40),
        (errors.InvalidTopicException, 17),
    ],
)
def test_named_classes(cls: type[errors.KafkaError], code: int) -> None:
    assert cls.error_code == code
    assert errors.error_for_code(code) is cls
    assert errors.ErrorCode[cls.error_name] == code
    assert issubclass(cls, errors.KafkaError)
    err = cls("what went wrong")
    assert err.message == "what went wrong"


def test_unknown_code_maps_to_unknown_server_error() -> None:
    assert errors.error_for_code(12345) is errors.UnknownServerError
    assert errors.UnknownServerError.error_code == -1
