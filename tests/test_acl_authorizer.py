"""Kafka's AclAuthorizer matching rules, on the authorizer alone (no broker needed)."""

from __future__ import annotations

import pytest

from pystream.security.acl import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
)
from pystream.security.authorizer import AclAuthorizer, authorizer_enabled

ALICE = "User:alice"
BOB = "User:bob"
R, W, D = AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE
TOPIC, GROUP = ResourceType.TOPIC, ResourceType.GROUP
LIT, PRE = PatternType.LITERAL, PatternType.PREFIXED
ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY


class Source:
    """An in-memory ACL source (the metadata store's role)."""

    def __init__(self, *bindings: AclBinding) -> None:
        self.bindings = list(bindings)
        self.acl_version = 0

    def acls(self) -> list[AclBinding]:
        return self.bindings

    def add(self, binding: AclBinding) -> None:
        self.bindings.append(binding)
        self.acl_version += 1


def acl(
    name: str,
    op: AclOperation = R,
    perm: AclPermissionType = ALLOW,
    principal: str = ALICE,
    host: str = "*",
    pattern: PatternType = LIT,
    rtype: ResourceType = TOPIC,
) -> AclBinding:
    return AclBinding(rtype, name, pattern, principal, host, op, perm)


def allowed(
    auth: AclAuthorizer,
    name: str,
    op: AclOperation = R,
    principal: str = ALICE,
    host: str = "10.0.0.1",
    rtype: ResourceType = TOPIC,
) -> bool:
    return auth.authorize(principal, host, op, rtype, name)


def test_no_acl_denies_unless_allow_everyone_if_no_acl_found() -> None:
    assert not allowed(AclAuthorizer(Source()), "t")
    assert allowed(AclAuthorizer(Source(), allow_everyone_if_no_acl_found=True), "t")
    # Any ACL on the resource (even for someone else) turns allow-everyone off for it.
    other = AclAuthorizer(Source(acl("t", principal=BOB)), allow_everyone_if_no_acl_found=True)
    assert not allowed(other, "t")
    assert allowed(other, "u")


def test_literal_prefixed_and_wildcard_resource_names() -> None:
    auth = AclAuthorizer(Source(acl("orders"), acl("logs-", pattern=PRE), acl("*", op=W)))
    assert allowed(auth, "orders")
    assert not allowed(auth, "orders2")  # literal is exact
    assert allowed(auth, "logs-app")
    assert allowed(auth, "logs-")
    assert not allowed(auth, "log")
    assert allowed(auth, "anything", W)  # literal '*' covers every name
    assert not allowed(auth, "anything", R)
    # The resource type must match too.
    assert not allowed(auth, "orders", rtype=GROUP)


def test_principal_and_host_wildcards() -> None:
    auth = AclAuthorizer(
        Source(acl("t", principal="User:*"), acl("h", host="10.0.0.9"), acl("k", host="*"))
    )
    assert allowed(auth, "t", principal=BOB)
    assert allowed(auth, "h", host="10.0.0.9")
    assert not allowed(auth, "h", host="10.0.0.1")
    assert allowed(auth, "k", host="192.168.1.1")
    assert not allowed(auth, "k", principal=BOB)


def test_deny_wins_over_allow_and_all() -> None:
    auth = AclAuthorizer(
        Source(
            acl("t", AclOperation.ALL),
            acl("t", W, DENY),
            acl("p-", R, DENY, principal="User:*", pattern=PRE),
            acl("p-x", R),
            acl("q", AclOperation.ALL, DENY, host="10.0.0.1"),
            acl("q", R),
        )
    )
    assert allowed(auth, "t", R)
    assert not allowed(auth, "t", W)
    assert not allowed(auth, "p-x", R)  # a prefixed DENY for everyone beats a literal ALLOW
    assert not allowed(auth, "q", R, host="10.0.0.1")
    assert allowed(auth, "q", R, host="10.0.0.2")


@pytest.mark.parametrize(
    ("granted", "asked", "expected"),
    [
        (R, D, True),
        (W, D, True),
        (AclOperation.DELETE, D, True),
        (AclOperation.ALTER, D, True),
        (AclOperation.CREATE, D, False),
        (D, R, False),
        (R, W, False),
        (AclOperation.ALTER_CONFIGS, AclOperation.DESCRIBE_CONFIGS, True),
        (AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS, False),
        (AclOperation.ALL, AclOperation.IDEMPOTENT_WRITE, True),
        (AclOperation.ALL, AclOperation.CLUSTER_ACTION, True),
    ],
)
def test_implied_operations(granted: AclOperation, asked: AclOperation, expected: bool) -> None:
    assert allowed(AclAuthorizer(Source(acl("t", granted))), "t", asked) is expected


def test_a_deny_of_read_does_not_deny_describe() -> None:
    # Kafka: implication only widens ALLOW; DENY READ leaves DESCRIBE (allowed by WRITE) alone.
    auth = AclAuthorizer(Source(acl("t", W), acl("t", R, DENY)))
    assert allowed(auth, "t", D)
    assert not allowed(auth, "t", R)


def test_super_users_bypass_acls() -> None:
    supers = AclAuthorizer.parse_super_users(" User:admin ; User:ops;")
    assert supers == ["User:admin", "User:ops"]
    auth = AclAuthorizer(Source(acl("t", AclOperation.ALL, DENY, principal="User:*")), supers)
    assert allowed(auth, "t", W, principal="User:ops")
    assert not allowed(auth, "t", W, principal=ALICE)


def test_cache_is_invalidated_on_acl_change() -> None:
    source = Source()
    auth = AclAuthorizer(source)
    assert not allowed(auth, "t")
    source.add(acl("t"))
    assert allowed(auth, "t")
    source.add(acl("t", R, DENY))
    assert not allowed(auth, "t")


def test_authorizer_class_names() -> None:
    assert not authorizer_enabled("")
    assert authorizer_enabled("pystream.security.AclAuthorizer")
    assert authorizer_enabled("kafka.security.authorizer.AclAuthorizer")
    assert authorizer_enabled("kafka.security.auth.SimpleAclAuthorizer")
    with pytest.raises(ValueError, match="not an authorizer pystream has"):
        authorizer_enabled("com.example.MyAuthorizer")


def test_filters_any_and_match() -> None:
    literal, prefixed, wildcard = acl("orders"), acl("ord", pattern=PRE), acl("*")
    everything = [literal, prefixed, wildcard, acl("x", rtype=GROUP)]

    def selected(f: AclBindingFilter) -> list[AclBinding]:
        return [b for b in everything if f.matches(b)]

    assert selected(AclBindingFilter()) == everything
    assert selected(AclBindingFilter(TOPIC, "orders")) == [literal]
    assert selected(AclBindingFilter(TOPIC, "orders", PatternType.MATCH)) == [
        literal,
        prefixed,
        wildcard,
    ]
    assert selected(AclBindingFilter(TOPIC, "ord", PRE)) == [prefixed]
    assert selected(AclBindingFilter(TOPIC, None, LIT)) == [literal, wildcard]
    assert selected(AclBindingFilter(operation=W)) == []
    assert selected(AclBindingFilter(principal=BOB)) == []
    assert selected(AclBindingFilter(permission_type=ALLOW, host="*")) == everything


def test_binding_validation_and_json_round_trip() -> None:
    good = acl("t", AclOperation.IDEMPOTENT_WRITE, DENY)
    good.validate()
    entry = good.entry_json()
    assert entry == {
        "principal": ALICE,
        "permissionType": "Deny",
        "operation": "IdempotentWrite",
        "host": "*",
    }
    assert AclBinding.from_entry_json(TOPIC, "t", LIT, entry) == good
    for bad, message in [
        (acl("*", pattern=PRE), "wildcard"),
        (acl("t", principal="alice"), "<type>:<name>"),
        (acl("t", AclOperation.ANY), "cannot be stored"),
        (acl("t", pattern=PatternType.MATCH), "LITERAL or PREFIXED"),
        (acl("other", rtype=ResourceType.CLUSTER), "kafka-cluster"),
    ]:
        with pytest.raises(ValueError, match=message):
            bad.validate()
    assert AclOperation.parse("idempotent-write") is AclOperation.IDEMPOTENT_WRITE
    assert ResourceType.parse("TransactionalId") is ResourceType.TRANSACTIONAL_ID


def test_binding_parsed_from_kafka_names() -> None:
    """What the console's add form sends: Kafka's names, any case, then validated."""
    parsed = AclBinding.parse("topic", " orders ", "Prefixed", "User:alice", "*", "Write", "ALLOW")
    assert parsed == AclBinding(TOPIC, "orders", PRE, ALICE, "*", W, ALLOW)
    with pytest.raises(ValueError, match="unknown AclOperation 'Fly'; use one of ALL, READ"):
        AclBinding.parse("Topic", "t", "Literal", ALICE, "*", "Fly", "Allow")
    with pytest.raises(ValueError, match="principal '' must be <type>:<name>"):
        AclBinding.parse("Topic", "t", "Literal", " ", "*", "Read", "Allow")
    with pytest.raises(ValueError, match="LITERAL or PREFIXED"):
        AclBinding.parse("Topic", "t", "Match", ALICE, "*", "Read", "Allow")


def test_local_store_persists_acls_and_moves_the_version(tmp_path) -> None:
    from pystream.cluster.metadata.local_store import LocalMetadataStore

    store = LocalMetadataStore(tmp_path, 0)
    literal, prefixed = acl("t"), acl("logs-", W, DENY, principal="User:*", pattern=PRE)
    assert store.change_acls_blocking([literal, prefixed, literal], []) == []
    assert store.acls() == [literal, prefixed]
    version = store.acl_version
    # Creating what exists changes nothing (the version stays: caches stay valid).
    store.change_acls_blocking([literal], [])
    assert store.acl_version == version
    reopened = LocalMetadataStore(tmp_path, 0)
    assert reopened.acls() == [literal, prefixed]
    removed = reopened.change_acls_blocking(
        [], [AclBindingFilter(pattern_type=PRE), AclBindingFilter()]
    )
    assert removed == [[prefixed], [literal, prefixed]]
    assert LocalMetadataStore(tmp_path, 0).acls() == []


def test_authorize_any_topic_as_kafka_authorize_by_resource_type() -> None:
    def any_write(*bindings: AclBinding, **kwargs: object) -> bool:
        return AclAuthorizer(Source(*bindings), **kwargs).authorize_any(  # type: ignore[arg-type]
            ALICE, "10.0.0.1", W, TOPIC
        )

    assert not any_write()
    assert any_write(allow_everyone_if_no_acl_found=True)
    assert any_write(acl("t", W))
    assert any_write(acl("t", AclOperation.ALL))
    assert not any_write(acl("t", R))
    assert not any_write(acl("t", W, principal=BOB))
    assert not any_write(acl("t", W), acl("t", W, DENY))
    assert not any_write(acl("t-", W, pattern=PRE), acl("t", W, DENY, pattern=PRE))
    assert any_write(acl("t-", W, pattern=PRE), acl("u", W, DENY, pattern=PRE))
    assert not any_write(acl("t", W), acl("*", W, DENY, principal="User:*"))
    assert any_write(acl("t", W), acl("u", W, DENY))
