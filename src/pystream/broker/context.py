"""What a handler gets besides its request: the header, the connection, the broker's services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pystream.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailedError,
)
from pystream.protocol.messages import RequestHeader
from pystream.security.acl import (
    CLUSTER_NAME,
    SUPPORTED_OPERATIONS,
    AclOperation,
    ResourceType,
    operations_bitfield,
)
from pystream.security.principal import KafkaPrincipal

if TYPE_CHECKING:
    from pystream.broker.network import KafkaConnection
    from pystream.broker.services import BrokerServices


# The error a refused operation answers, by resource type (Kafka's *_AUTHORIZATION_FAILED).
DENIED_ERRORS: dict[ResourceType, type[KafkaError]] = {
    ResourceType.TOPIC: TopicAuthorizationFailedError,
    ResourceType.GROUP: GroupAuthorizationFailedError,
    ResourceType.CLUSTER: ClusterAuthorizationFailedError,
    ResourceType.TRANSACTIONAL_ID: TransactionalIdAuthorizationFailedError,
}


@dataclass(slots=True)
class RequestContext:
    """One request in flight."""

    header: RequestHeader
    connection: KafkaConnection
    services: BrokerServices

    @property
    def api_version(self) -> int:
        return self.header.request_api_version

    @property
    def client_id(self) -> str | None:
        return self.header.client_id

    @property
    def principal(self) -> KafkaPrincipal:
        """Who sent the request (``User:ANONYMOUS`` before any authentication)."""
        return self.connection.principal

    @property
    def listener_name(self) -> str:
        """The listener the request arrived on."""
        return self.connection.listener_name

    def authorize(
        self, operation: AclOperation, resource_type: ResourceType, name: str = CLUSTER_NAME
    ) -> bool:
        """Whether the request's principal may do ``operation`` on the resource (always,
        without an authorizer; a cached dictionary look-up with one)."""
        authorizer = self.services.authorizer
        if authorizer is None:
            return True
        return authorizer.authorize(
            str(self.connection.principal),
            self.connection.peer_host,
            operation,
            resource_type,
            name,
        )

    def authorize_any(self, operation: AclOperation, resource_type: ResourceType) -> bool:
        """Whether ``operation`` is allowed on some resource of the type (Kafka's
        ``authorizeByResourceType``)."""
        authorizer = self.services.authorizer
        if authorizer is None:
            return True
        return authorizer.authorize_any(
            str(self.connection.principal), self.connection.peer_host, operation, resource_type
        )

    def authorize_cluster(self, operation: AclOperation) -> bool:
        """:meth:`authorize` on the CLUSTER resource."""
        return self.authorize(operation, ResourceType.CLUSTER, CLUSTER_NAME)

    def authorized_operations(self, resource_type: ResourceType, name: str = CLUSTER_NAME) -> int:
        """The ``*_authorized_operations`` bitfield of a resource: a bit per operation of
        the type's supported ones the principal may do (Kafka's
        ``AuthHelper.authorizedOperations``; every supported one without an authorizer).
        Each check is one of the authorizer's cached decisions."""
        supported = SUPPORTED_OPERATIONS[resource_type]
        return operations_bitfield(
            op for op in supported if self.authorize(op, resource_type, name)
        )

    def require(
        self, operation: AclOperation, resource_type: ResourceType, name: str = CLUSTER_NAME
    ) -> None:
        """:meth:`authorize`, raising the resource type's ``*_AUTHORIZATION_FAILED`` if not."""
        if not self.authorize(operation, resource_type, name):
            what = "the cluster" if resource_type is ResourceType.CLUSTER else repr(name)
            raise DENIED_ERRORS[resource_type](
                f"{self.principal} is not authorized to {operation.name} "
                f"{resource_type.name} {what}"
            )
