"""KafkaPrincipal: Kafka's ``<type>:<name>`` form."""

import pytest

from pystream.security.principal import ANONYMOUS, KafkaPrincipal


def test_parse_and_str_round_trip() -> None:
    principal = KafkaPrincipal.parse("User:CN=alice,O=example")
    assert principal == KafkaPrincipal("User", "CN=alice,O=example")
    assert str(principal) == "User:CN=alice,O=example"
    assert str(ANONYMOUS) == "User:ANONYMOUS"


@pytest.mark.parametrize("text", ["alice", ":alice", "User:", ""])
def test_a_principal_without_type_or_name_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="<type>:<name>"):
        KafkaPrincipal.parse(text)
