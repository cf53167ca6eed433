"""SASL on a real broker: PLAIN and SCRAM with confluent-kafka and kafka-python, failed logins,
clients that skip SASL, the legacy v0 handshake, the login throttle and KIP-368 sessions."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import kafka
import kafka.errors
import pytest
from broker_process import BrokerProcess, KafkaWire, free_ports
from cli_helpers import assert_one_line_error, run
from confluent_kafka.admin import AdminClient
from waiting import wait_until

from pystream.errors import ErrorCode
from pystream.protocol.messages.alter_user_scram_credentials import (
    AlterUserScramCredentialsRequest,
)
from pystream.protocol.messages.api_versions import ApiVersionsRequest
from pystream.protocol.messages.describe_user_scram_credentials import (
    DescribeUserScramCredentialsRequest,
)
from pystream.protocol.messages.metadata import MetadataRequest
from pystream.protocol.messages.sasl_authenticate import SaslAuthenticateRequest
from pystream.protocol.messages.sasl_handshake import SaslHandshakeRequest

MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
USER, PASSWORD = "alice", "alice-Secret-1"


class SaslBroker:
    """A broker with a PLAINTEXT and a SASL_PLAINTEXT listener."""

    def __init__(self, directory: Path, **overrides: str) -> None:
        self.plain_port, self.sasl_port = free_ports(2)
        self.process = BrokerProcess(
            directory,
            {
                "listeners": f"PLAINTEXT://127.0.0.1:{self.plain_port},"
                f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}",
                **overrides,
            },
        )
        # The bootstrap admin, before the first start (as kafka-storage format --add-scram).
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            run(
                "users", "add", USER, "--password", PASSWORD, "--mechanism", mechanism,
                "--log-dirs", str(self.process.log_dir),
            )  # fmt: skip

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    def sasl_wire(self) -> KafkaWire:
        return KafkaWire(("127.0.0.1", self.sasl_port))

    def confluent(self, mechanism: str, password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.sasl_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": mechanism,
            "sasl.username": USER,
            "sasl.password": password,
            **extra,
        }

    def kafka_python(
        self, mechanism: str, password: str = PASSWORD, **extra: Any
    ) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.sasl_bootstrap,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": mechanism,
            "sasl_plain_username": USER,
            "sasl_plain_password": password,
            **extra,
        }


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    # A short failure delay: the brute-force test's 200 failures must end in seconds.
    broker = SaslBroker(
        tmp_path_factory.mktemp("sasl"), **{"connection.failed.authentication.delay.ms": "5"}
    )
    broker.process.start()
    try:
        yield broker
    finally:
        broker.process.close()


def produce_one(config: dict[str, Any], topic: str, value: bytes) -> Any:
    """Produce one record; the delivery error (None: delivered) and the client's errors."""
    errors: list[Any] = []
    producer = confluent_kafka.Producer(
        {"message.timeout.ms": 10000, **config, "error_cb": errors.append}
    )
    delivered: list[Any] = []
    producer.produce(topic, value, on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(20)
    return (delivered[0] if delivered else "not delivered"), errors


def produce_and_flush(producer: Any, topic: str) -> None:
    """One record through an existing producer, delivered or the test fails."""
    delivered: list[Any] = []
    producer.produce(topic, b"v", on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(20) == 0 and delivered == [None]


def plain_login(wire: KafkaWire, user: str, password: str, version: int = 2) -> Any:
    handshake = wire.request(17, 1, SaslHandshakeRequest(mechanism="PLAIN"))
    assert handshake.error_code == 0
    token = f"\0{user}\0{password}".encode()
    return wire.request(36, version, SaslAuthenticateRequest(auth_bytes=token))


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_confluent_kafka_logs_in_with_each_mechanism(
    sasl_broker: SaslBroker, mechanism: str
) -> None:
    topic = f"sasl-ck-{mechanism.lower()}"
    error, client_errors = produce_one(sasl_broker.confluent(mechanism), topic, b"hello")
    assert error is None and client_errors == []
    consumer = confluent_kafka.Consumer(
        sasl_broker.confluent(
            mechanism, **{"group.id": f"g-{uuid.uuid4()}", "auto.offset.reset": "earliest"}
        )
    )
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
        message = wait_until(lambda: consumer.poll(0.5), 30, "a record over SASL")
        assert message.error() is None and message.value() == b"hello"
    finally:
        consumer.close()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_kafka_python_logs_in_with_each_mechanism(sasl_broker: SaslBroker, mechanism: str) -> None:
    producer = kafka.KafkaProducer(**sasl_broker.kafka_python(mechanism))
    try:
        metadata = producer.send(f"sasl-kp-{mechanism.lower()}", b"x").get(timeout=20)
        assert metadata.offset == 0
    finally:
        producer.close()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_wrong_password_fails_and_the_broker_stays_up(
    sasl_broker: SaslBroker, mechanism: str
) -> None:
    mark = sasl_broker.process.output_lines()
    wrong = "Not-The-Password-42"
    errors: list[Any] = []
    producer = confluent_kafka.Producer(
        sasl_broker.confluent(mechanism, wrong, error_cb=errors.append)
    )

    def auth_errors() -> list[Any]:
        producer.poll(0.1)  # error_cb runs from poll()
        return [e for e in errors if e.code() == confluent_kafka.KafkaError._AUTHENTICATION]

    auth_error = wait_until(auth_errors, 20, "an authentication error")[0]
    assert "Authentication failed" in auth_error.str()
    producer.purge()
    log = sasl_broker.process.wait_for_output("failed authentication", since=mark)
    assert f"SASL mechanism {mechanism}" in log and wrong not in log
    # kafka-python is refused too: it never gets metadata, and the broker logged why.
    mark = sasl_broker.process.output_lines()
    producer = kafka.KafkaProducer(
        # api_version: no bootstrap probe, the login happens on send
        **sasl_broker.kafka_python(mechanism, wrong, api_version=(2, 8), max_block_ms=3000)
    )
    try:
        with pytest.raises(kafka.errors.KafkaError):
            producer.send("refused", b"x").get(timeout=10)
    finally:
        producer.close(0)
    assert f"SASL mechanism {mechanism}" in sasl_broker.process.wait_for_output(
        "failed authentication", since=mark
    )
    # The broker still serves a good login.
    assert produce_one(sasl_broker.confluent(mechanism), "after-bad-login", b"ok") == (None, [])


def test_a_client_skipping_sasl_is_refused(sasl_broker: SaslBroker) -> None:
    with sasl_broker.sasl_wire() as wire:
        # ApiVersions is allowed before authenticating (clients ask it first) ...
        assert wire.request(18, 3, ApiVersionsRequest()).error_code == 0
        # ... anything else closes the connection (Kafka: ILLEGAL_SASL_STATE).
        wire.send(wire.frame(3, 12, MetadataRequest(topics=None)))
        assert wire.is_closed_by_peer()
    # A PLAINTEXT client on the SASL listener gets nowhere.
    admin = AdminClient({"bootstrap.servers": sasl_broker.sasl_bootstrap})
    with pytest.raises(confluent_kafka.KafkaException):
        admin.list_topics(timeout=3)
    # SaslAuthenticate without a handshake is an illegal state too.
    with sasl_broker.sasl_wire() as wire:
        response = wire.request(36, 2, SaslAuthenticateRequest(auth_bytes=b"\0a\0b"))
        assert response.error_code == ErrorCode.ILLEGAL_SASL_STATE
        assert wire.is_closed_by_peer()


def test_handshake_errors(sasl_broker: SaslBroker) -> None:
    with sasl_broker.sasl_wire() as wire:
        response = wire.request(17, 1, SaslHandshakeRequest(mechanism="GSSAPI"))
        assert response.error_code == ErrorCode.UNSUPPORTED_SASL_MECHANISM
        assert set(response.mechanisms) == set(MECHANISMS)
        assert wire.is_closed_by_peer()
    # On a PLAINTEXT listener SASL is an illegal state (and the connection stays usable).
    with KafkaWire(("127.0.0.1", sasl_broker.plain_port)) as wire:
        response = wire.request(17, 1, SaslHandshakeRequest(mechanism="PLAIN"))
        assert response.error_code == ErrorCode.ILLEGAL_SASL_STATE
        assert wire.request(3, 12, MetadataRequest(topics=None)).brokers


def test_sasl_authenticate_v0_to_v2_and_the_principal_serves_requests(
    sasl_broker: SaslBroker,
) -> None:
    for version in (0, 1, 2):
        with sasl_broker.sasl_wire() as wire:
            response = plain_login(wire, USER, PASSWORD, version)
            assert response.error_code == 0 and response.session_lifetime_ms == 0
            assert wire.request(3, 12, MetadataRequest(topics=None)).brokers


def test_the_legacy_unframed_v0_handshake(sasl_broker: SaslBroker) -> None:
    with sasl_broker.sasl_wire() as wire:
        assert wire.request(17, 0, SaslHandshakeRequest(mechanism="PLAIN")).error_code == 0
        token = f"\0{USER}\0{PASSWORD}".encode()
        wire.send(len(token).to_bytes(4, "big") + token)  # a raw token, no request header
        assert wire.recv_exactly(4) == b"\0\0\0\0"  # PLAIN's empty answer, size-prefixed
        assert wire.request(3, 12, MetadataRequest(topics=None)).brokers
    with sasl_broker.sasl_wire() as wire:
        assert wire.request(17, 0, SaslHandshakeRequest(mechanism="PLAIN")).error_code == 0
        token = f"\0{USER}\0wrong".encode()
        wire.send(len(token).to_bytes(4, "big") + token)
        assert wire.is_closed_by_peer()  # no way to send an error in the legacy flow


def test_200_bad_logins_neither_stop_nor_block_a_legitimate_client(
    sasl_broker: SaslBroker,
) -> None:
    failures: list[int] = []
    lock = threading.Lock()
    attempts = iter(range(200))

    def attack() -> None:
        while True:
            with lock:
                if next(attempts, None) is None:
                    return
            with sasl_broker.sasl_wire() as wire:
                response = plain_login(wire, USER, f"guess-{uuid.uuid4()}")
            with lock:
                failures.append(response.error_code)

    attackers = [threading.Thread(target=attack) for _ in range(8)]
    for thread in attackers:
        thread.start()
    producer = confluent_kafka.Producer(sasl_broker.confluent("SCRAM-SHA-256"))
    produced_during_attack = 0
    try:
        while any(t.is_alive() for t in attackers):
            produce_and_flush(producer, "under-attack")
            produced_during_attack += 1
    finally:
        for thread in attackers:
            thread.join(120)
    assert failures == [ErrorCode.SASL_AUTHENTICATION_FAILED] * 200
    assert produced_during_attack >= 1
    # The broker is still up and still serves new logins.
    assert produce_one(sasl_broker.confluent("PLAIN"), "under-attack", b"after") == (None, [])


@pytest.fixture(scope="module")
def reauth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    broker = SaslBroker(tmp_path_factory.mktemp("reauth"), **{"connections.max.reauth.ms": "2000"})
    broker.process.start()
    try:
        yield broker
    finally:
        broker.process.close()


def test_an_expired_session_is_closed_and_clients_reauthenticate(
    reauth_broker: SaslBroker,
) -> None:
    with reauth_broker.sasl_wire() as wire:
        response = plain_login(wire, USER, PASSWORD, version=1)
        assert response.error_code == 0 and response.session_lifetime_ms == 2000
        assert wire.request(3, 12, MetadataRequest(topics=None)).brokers

        def closed_after_expiry() -> bool:
            try:
                wire.request(3, 12, MetadataRequest(topics=None))
            except (ConnectionError, OSError):
                return True
            return False

        wait_until(closed_after_expiry, 20, "the expired session to be closed", interval=0.2)
    # librdkafka re-authenticates (KIP-368): a producer keeps working across expiries,
    # and the broker never has to close one of its connections for an expired session.
    mark = reauth_broker.process.output_lines()
    errors: list[Any] = []
    producer = confluent_kafka.Producer(
        reauth_broker.confluent("SCRAM-SHA-512", error_cb=errors.append)
    )
    started = time.monotonic()
    while time.monotonic() - started < 5:
        produce_and_flush(producer, "reauth")
        time.sleep(0.25)
    assert [e for e in errors if e.code() == confluent_kafka.KafkaError._AUTHENTICATION] == []
    assert "SASL session expired" not in reauth_broker.process.output_since(mark)


def test_pystream_users_cli_through_the_broker_and_offline(sasl_broker: SaslBroker) -> None:
    plain = f"127.0.0.1:{sasl_broker.plain_port}"
    run("users", "add", "dave", "--password", "dave-Pw-9", "--mechanism", "SCRAM-SHA-512",
        "--iterations", "4096", "--bootstrap-server", plain)  # fmt: skip
    config = {**sasl_broker.confluent("SCRAM-SHA-512", "dave-Pw-9"), "sasl.username": "dave"}
    assert produce_one(config, "daves-topic", b"hi") == (None, [])
    listed = run("users", "list", "--bootstrap-server", plain).stdout
    assert "user-principal 'dave' are SCRAM-SHA-512(iterations=4096)" in listed
    assert f"user-principal '{USER}'" in listed
    deleted = run("users", "delete", "dave", "--bootstrap-server", plain).stdout
    assert "Completed deleting SCRAM-SHA-512 credentials for user dave" in deleted
    assert "dave" not in run("users", "list", "--bootstrap-server", plain).stdout
    # Offline writes are refused while a broker holds the log dirs.
    refused = run(
        "users", "add", "eve", "--password", "x", "--log-dirs", str(sasl_broker.process.log_dir),
        check=False,
    )  # fmt: skip
    assert_one_line_error(refused, "a broker is running on these log dirs")


def test_alter_user_scram_credentials_errors_per_user(sasl_broker: SaslBroker) -> None:
    upsert = AlterUserScramCredentialsRequest.ScramCredentialUpsertion
    delete = AlterUserScramCredentialsRequest.ScramCredentialDeletion
    salted = b"s" * 32

    def credential(name: str, mechanism: int = 1, iterations: int = 4096) -> Any:
        return upsert(name=name, mechanism=mechanism, iterations=iterations, salt=b"salt",
                      salted_password=salted)  # fmt: skip

    request = AlterUserScramCredentialsRequest(
        deletions=[delete(name="twice", mechanism=1), delete(name="ghost", mechanism=2)],
        upsertions=[
            credential("odd-mechanism", mechanism=7),
            credential("too-many", iterations=16385),
            credential("twice"),  # also deleted above: altered twice
            credential(""),
            credential("fine"),
        ],
    )
    with KafkaWire(("127.0.0.1", sasl_broker.plain_port)) as wire:
        response = wire.request(51, 0, request)
        described = wire.request(
            50, 0, DescribeUserScramCredentialsRequest(users=[
                DescribeUserScramCredentialsRequest.UserName(name="fine"),
                DescribeUserScramCredentialsRequest.UserName(name="fine"),
            ]),
        )  # fmt: skip
    assert {r.user: (r.error_code, r.error_message) for r in response.results} == {
        "twice": (
            ErrorCode.DUPLICATE_RESOURCE,
            "A user credential cannot be altered twice in the same request",
        ),
        "ghost": (
            ErrorCode.RESOURCE_NOT_FOUND,
            "Attempt to delete a user credential that does not exist",
        ),
        "odd-mechanism": (ErrorCode.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism"),
        "too-many": (ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too many iterations"),
        "": (ErrorCode.UNACCEPTABLE_CREDENTIAL, "Username must not be empty"),
        "fine": (0, None),
    }
    (result,) = described.results
    assert result.error_code == ErrorCode.DUPLICATE_RESOURCE


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_pystream_clients_speak_sasl(
    sasl_broker: SaslBroker, mechanism: str, tmp_path: Path
) -> None:
    import asyncio

    import pystream
    import pystream.aio
    from pystream.errors import SaslAuthenticationFailedError

    settings = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": USER,
        "sasl_plain_password": PASSWORD,
    }
    topic = f"own-client-{mechanism.lower()}"
    with pystream.Producer(sasl_broker.sasl_bootstrap, **settings) as producer:
        assert producer.send_and_wait(topic, b"sync", timeout=20).offset == 0

    async def aio_send() -> int:
        async with pystream.aio.Producer(sasl_broker.sasl_bootstrap, **settings) as producer:
            return (await producer.send_and_wait(topic, b"aio")).offset

    assert asyncio.run(aio_send()) == 1
    with pystream.Consumer(
        bootstrap_servers=sasl_broker.sasl_bootstrap, auto_offset_reset="earliest", **settings
    ) as consumer:
        consumer.assign([(topic, 0)])
        values: list[bytes] = []
        wait_until(lambda: values.extend(r.value for r in consumer.poll(0.5)) or len(values) >= 2)
        assert values == [b"sync", b"aio"]
    with pytest.raises(SaslAuthenticationFailedError):
        pystream.AdminClient(
            sasl_broker.sasl_bootstrap, **{**settings, "sasl_plain_password": "wrong-One"}
        )
    # The CLI with Kafka's --command-config keys (sasl.jaas.config, as kafka-configs takes).
    module = "scram.ScramLoginModule" if mechanism != "PLAIN" else "plain.PlainLoginModule"
    properties = tmp_path / "client.properties"
    properties.write_text(
        "security.protocol=SASL_PLAINTEXT\n"
        f"sasl.mechanism={mechanism}\n"
        f"sasl.jaas.config=org.apache.kafka.common.security.{module} required "
        f'username="{USER}" password="{PASSWORD}";\n'
    )
    listed = run("users", "list", "--bootstrap-server", sasl_broker.sasl_bootstrap,
                 "--command-config", str(properties)).stdout  # fmt: skip
    assert f"user-principal '{USER}'" in listed


def test_alter_and_describe_user_scram_credentials_with_confluent_admin(
    sasl_broker: SaslBroker,
) -> None:
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient(sasl_broker.confluent("SCRAM-SHA-512"))

    def alter(*alterations: Any) -> dict[str, Any]:
        outcome: dict[str, Any] = {}
        for user, future in admin.alter_user_scram_credentials(list(alterations)).items():
            try:
                future.result(20)
                outcome[user] = None
            except confluent_kafka.KafkaException as exc:
                outcome[user] = exc.args[0].code()
        return outcome

    sha256 = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192)
    assert alter(UserScramCredentialUpsertion("bob", sha256, b"bob-Pass-1")) == {"bob": None}
    described = admin.describe_user_scram_credentials(["bob"])["bob"].result(20)
    assert [(i.mechanism, i.iterations) for i in described.scram_credential_infos] == [
        (ScramMechanism.SCRAM_SHA_256, 8192)
    ]
    everyone = admin.describe_user_scram_credentials().result(20)
    assert {USER, "bob"} <= set(everyone)  # (other tests add users to this broker too)
    assert {i.mechanism for i in everyone[USER].scram_credential_infos} == {
        ScramMechanism.SCRAM_SHA_256,
        ScramMechanism.SCRAM_SHA_512,
    }
    # bob logs in at once, with SCRAM and with PLAIN (checked against the same hash).
    for mechanism in ("SCRAM-SHA-256", "PLAIN"):
        config = {**sasl_broker.confluent(mechanism, "bob-Pass-1"), "sasl.username": "bob"}
        assert produce_one(config, "bobs-topic", b"hi") == (None, [])
    # Kafka's errors, per user.
    too_few = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 1000)
    assert alter(
        UserScramCredentialUpsertion("carol", too_few, b"pw"),
        UserScramCredentialDeletion("bob", ScramMechanism.SCRAM_SHA_512),
    ) == {
        "carol": confluent_kafka.KafkaError.UNACCEPTABLE_CREDENTIAL,
        "bob": confluent_kafka.KafkaError.RESOURCE_NOT_FOUND,
    }
    with pytest.raises(confluent_kafka.KafkaException) as missing:
        admin.describe_user_scram_credentials(["nobody"])["nobody"].result(20)
    assert missing.value.args[0].code() == confluent_kafka.KafkaError.RESOURCE_NOT_FOUND

    # Credentials survive a restart (the shared broker restarts last in this module).
    sasl_broker.process.restart()
    config = {**sasl_broker.confluent("SCRAM-SHA-256", "bob-Pass-1"), "sasl.username": "bob"}
    assert produce_one(config, "bobs-topic", b"again") == (None, [])
    assert produce_one(sasl_broker.confluent("SCRAM-SHA-512"), "bobs-topic", b"alice") == (None, [])
    admin = AdminClient(sasl_broker.confluent("SCRAM-SHA-512"))
    deletion = UserScramCredentialDeletion("bob", ScramMechanism.SCRAM_SHA_256)
    assert alter(deletion) == {"bob": None}
    error, client_errors = produce_one({**config, "message.timeout.ms": 3000}, "bobs-topic", b"no")
    assert error is not None
    assert any(e.code() == confluent_kafka.KafkaError._AUTHENTICATION for e in client_errors)
