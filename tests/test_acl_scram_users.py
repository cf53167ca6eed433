"""The SCRAM credential APIs under the authorizer: DESCRIBE / ALTER on the cluster, as
Kafka's KafkaApis checks them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from broker_process import BrokerProcess

from pystream.errors import ErrorCode
from pystream.protocol.messages import alter_user_scram_credentials as alter
from pystream.protocol.messages.describe_user_scram_credentials import (
    DescribeUserScramCredentialsRequest,
)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    # No ACL at all: User:ANONYMOUS may do nothing on the cluster.
    broker = BrokerProcess(
        tmp_path_factory.mktemp("acl-scram") / "broker",
        {"authorizer.class.name": "pystream.security.AclAuthorizer"},
    )
    try:
        yield broker.start()
    finally:
        broker.close()


def test_describing_credentials_needs_describe_on_the_cluster(locked: BrokerProcess) -> None:
    with locked.wire() as wire:
        response = wire.request(50, 0, DescribeUserScramCredentialsRequest(users=None))
    assert response.error_code == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    assert response.results == []


def test_altering_credentials_needs_alter_on_the_cluster(locked: BrokerProcess) -> None:
    request = alter.AlterUserScramCredentialsRequest(
        deletions=[],
        upsertions=[
            alter.AlterUserScramCredentialsRequest.ScramCredentialUpsertion(
                name="mallory",
                mechanism=1,
                iterations=4096,
                salt=b"s" * 16,
                salted_password=b"p" * 32,
            )
        ],
    )
    with locked.wire() as wire:
        response = wire.request(51, 0, request)
        (result,) = response.results
        assert (result.user, result.error_code) == (
            "mallory",
            ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
        )
    # Nothing was stored (the single node keeps credentials in its metadata file).
    assert "mallory" not in (locked.log_dir / "pystream-metadata.json").read_text()
