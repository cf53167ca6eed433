"""DescribeUserScramCredentials (50) and AlterUserScramCredentials (51).

Credentials live in the metadata store (the local file, or ZooKeeper's
``/config/users/<name>``), as salted SCRAM hashes only.  An upsertion carries
what the client derived (salt, iterations, salted password): the broker keeps
the stored and server keys computed from it.  Errors are per user, with
Kafka's codes and messages: an unknown mechanism is UNSUPPORTED_SASL_MECHANISM,
iterations outside 4096..16384 or an empty name UNACCEPTABLE_CREDENTIAL, the
same (user, mechanism) twice DUPLICATE_RESOURCE, deleting or describing what
does not exist RESOURCE_NOT_FOUND; a user with an error has nothing of it
applied, the others are.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from pystream.broker.apis.common import distinct
from pystream.errors import (
    ClusterAuthorizationFailedError,
    DuplicateResourceError,
    KafkaError,
    ResourceNotFoundError,
    UnacceptableCredentialError,
    UnsupportedSaslMechanismError,
)
from pystream.protocol.handlers import api_handler
from pystream.protocol.messages.alter_user_scram_credentials import (
    AlterUserScramCredentialsRequest,
    AlterUserScramCredentialsResponse,
)
from pystream.protocol.messages.describe_user_scram_credentials import (
    DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse,
)
from pystream.security.acl import AclOperation
from pystream.security.scram import (
    MAX_ITERATIONS,
    MECHANISM_TYPES,
    MIN_ITERATIONS,
    ScramCredential,
    mechanism_type,
)

if TYPE_CHECKING:
    from pystream.broker.context import RequestContext
    from pystream.cluster.metadata.store import ScramCredentialChange

AlterResult = AlterUserScramCredentialsResponse.AlterUserScramCredentialsResult
DescribeResult = DescribeUserScramCredentialsResponse.DescribeUserScramCredentialsResult
CredentialInfo = DescribeUserScramCredentialsResponse.CredentialInfo
_DENIED = "Not authorized to use this resource"  # Kafka's message, as for other APIs


@api_handler(50, 0, 0)
async def handle_describe_user_scram_credentials(
    request: DescribeUserScramCredentialsRequest, context: RequestContext
) -> DescribeUserScramCredentialsResponse:
    if not context.authorize_cluster(AclOperation.DESCRIBE):  # Kafka: DESCRIBE on the cluster
        denied = ClusterAuthorizationFailedError(_DENIED)
        return DescribeUserScramCredentialsResponse(
            error_code=denied.error_code, error_message=denied.message, results=[]
        )
    stored = context.services.metadata.scram_credentials()
    names = [u.name for u in request.users] if request.users else sorted(stored)
    results = []
    for name, repeated in distinct(names):
        if repeated:
            error: KafkaError | None = DuplicateResourceError(
                "Cannot describe SCRAM credentials for the same user twice in a single request"
            )
        elif name not in stored:
            error = ResourceNotFoundError(
                "Attempt to describe a user credential that does not exist"
            )
        else:
            error = None
        infos = (
            []
            if error is not None
            else [
                CredentialInfo(mechanism=mechanism_type(m), iterations=c.iterations)
                for m, c in sorted(stored[name].items())
            ]
        )
        results.append(
            DescribeResult(
                user=name,
                error_code=error.error_code if error else 0,
                error_message=error.message if error else None,
                credential_infos=infos,
            )
        )
    return DescribeUserScramCredentialsResponse(error_code=0, error_message=None, results=results)


@api_handler(51, 0, 0)
async def handle_alter_user_scram_credentials(
    request: AlterUserScramCredentialsRequest, context: RequestContext
) -> AlterUserScramCredentialsResponse:
    store = context.services.metadata
    stored = store.scram_credentials()
    alterations = [(d.name, d.mechanism) for d in request.deletions] + [
        (u.name, u.mechanism) for u in request.upsertions
    ]
    if not context.authorize_cluster(AclOperation.ALTER):  # Kafka: ALTER on the cluster
        denied = ClusterAuthorizationFailedError(_DENIED)
        return AlterUserScramCredentialsResponse(
            results=[
                AlterResult(user=name, error_code=denied.error_code, error_message=denied.message)
                for name in dict.fromkeys(name for name, _ in alterations)
            ]
        )
    repeated = {key for key, count in Counter(alterations).items() if count > 1}
    users = list(dict.fromkeys(name for name, _ in alterations))
    errors: dict[str, KafkaError] = {}

    def fail(name: str, error: KafkaError) -> None:
        errors.setdefault(name, error)  # the first problem of a user is the one reported

    changes: list[ScramCredentialChange] = []
    for deletion in request.deletions:
        mechanism = MECHANISM_TYPES.get(deletion.mechanism)
        if error := _check(deletion.name, deletion.mechanism, repeated):
            fail(deletion.name, error)
        elif mechanism not in stored.get(deletion.name, {}):
            fail(
                deletion.name,
                ResourceNotFoundError("Attempt to delete a user credential that does not exist"),
            )
        else:
            changes.append((deletion.name, mechanism, None))  # type: ignore[arg-type]
    for upsertion in request.upsertions:
        mechanism = MECHANISM_TYPES.get(upsertion.mechanism)
        if error := _check(upsertion.name, upsertion.mechanism, repeated):
            fail(upsertion.name, error)
        elif upsertion.iterations < MIN_ITERATIONS:
            fail(upsertion.name, UnacceptableCredentialError("Too few iterations"))
        elif upsertion.iterations > MAX_ITERATIONS:
            fail(upsertion.name, UnacceptableCredentialError("Too many iterations"))
        elif not upsertion.salt or not upsertion.salted_password:
            fail(
                upsertion.name, UnacceptableCredentialError("Salt and salted password are required")
            )
        else:
            assert mechanism is not None
            credential = ScramCredential.from_salted_password(
                mechanism,
                bytes(upsertion.salted_password),
                bytes(upsertion.salt),
                upsertion.iterations,
            )
            changes.append((upsertion.name, mechanism, credential))
    changes = [change for change in changes if change[0] not in errors]
    if changes:
        try:
            await store.alter_scram_credentials(changes)
        except KafkaError as exc:
            for name, _, _ in changes:
                fail(name, exc)
    return AlterUserScramCredentialsResponse(
        results=[
            AlterResult(
                user=name,
                error_code=errors[name].error_code if name in errors else 0,
                error_message=errors[name].message if name in errors else None,
            )
            for name in users
        ]
    )


def _check(name: str, mechanism: int, repeated: set[tuple[str, int]]) -> KafkaError | None:
    """The errors an alteration can have whatever is stored (Kafka's order)."""
    if mechanism not in MECHANISM_TYPES:
        return UnsupportedSaslMechanismError("Unknown SCRAM mechanism")
    if not name:
        return UnacceptableCredentialError("Username must not be empty")
    if (name, mechanism) in repeated:
        return DuplicateResourceError(
            "A user credential cannot be altered twice in the same request"
        )
    return None
