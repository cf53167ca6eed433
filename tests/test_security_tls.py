"""TLS listeners against real clients: confluent-kafka and kafka-python produce and consume
over SSL, a plaintext client on the SSL listener is refused while the broker keeps serving,
mTLS names the principal ``User:<subject>``, and each listener advertises itself in
Metadata.

Two brokers serve the module: one with PLAINTEXT and SSL listeners and
``ssl.client.auth=requested`` (a certificate is optional; given, it names the principal), one
SSL-only with ``listener.name.ssl.ssl.client.auth=required`` (over a broker-wide ``none``).
Certificates are made here (``tls_certs``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import BrokerProcess, KafkaWire
from cli_helpers import run
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from kafka import KafkaConsumer, KafkaProducer
from tls_certs import CertificateAuthority, Identity
from waiting import wait_until

import pystream
from pystream import aio
from pystream.protocol.messages.api_versions import ApiVersionsRequest
from pystream.security.ssl import HandshakeFailureLog

TIMEOUT = 30.0
BROKER_KEY_PASSWORD = "broker-key-secret"


class Pki:
    def __init__(self, directory: Path) -> None:
        self.ca = CertificateAuthority(directory)
        self.broker = self.ca.issue(
            "broker", "localhost", "brokers", "example", password=BROKER_KEY_PASSWORD
        )
        self.alice = self.ca.issue("alice", "alice", "eng", "example")
        # A certificate from a CA the brokers do not trust.
        self.mallory = CertificateAuthority(directory / "rogue").issue("mallory", "mallory")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def _tls_overrides(pki: Pki, client_auth: str) -> dict[str, str]:
    return {
        "ssl.keystore.location": str(pki.broker.pem),
        "ssl.key.password": BROKER_KEY_PASSWORD,
        "ssl.truststore.location": str(pki.ca.ca_file),
        "ssl.client.auth": client_auth,
        "auto.create.topics.enable": "true",
    }


@pytest.fixture(scope="module")
def broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("tls-broker"),
        {
            "listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
            **_tls_overrides(pki, "requested"),
        },
    ).start()
    yield process
    process.close()


@pytest.fixture(scope="module")
def mtls_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("mtls-broker"),
        {
            "listeners": "SSL://127.0.0.1:0",
            **_tls_overrides(pki, "none"),
            # Kafka's per-listener override decides for the SSL listener.
            "listener.name.ssl.ssl.client.auth": "required",
        },
    ).start()
    yield process
    process.close()


def _ssl_bootstrap(broker: BrokerProcess) -> str:
    return f"127.0.0.1:{broker.listener_ports['SSL']}"


def _confluent_ssl(pki: Pki, identity: Identity | None = None) -> dict[str, str]:
    config = {"security.protocol": "SSL", "ssl.ca.location": str(pki.ca.ca_file)}
    if identity is not None:
        config["ssl.certificate.location"] = str(identity.cert)
        config["ssl.key.location"] = str(identity.key)
    return config


def _client_context(pki: Pki, identity: Identity | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca.ca_file))
    if identity is not None:
        context.load_cert_chain(str(identity.cert), str(identity.key))
    return context


def test_confluent_produce_consume_over_ssl(broker: BrokerProcess, pki: Pki) -> None:
    config = {"bootstrap.servers": _ssl_bootstrap(broker), **_confluent_ssl(pki)}
    producer = Producer({**config, "acks": "all"})
    values = [f"tls-{i}".encode() * 50 for i in range(200)]
    for value in values:
        producer.produce("tls-confluent", value)
    assert producer.flush(TIMEOUT) == 0
    consumer = Consumer({**config, "group.id": "tls-g", "auto.offset.reset": "earliest"})
    consumer.subscribe(["tls-confluent"])
    got: list[bytes] = []
    try:
        wait_until(lambda: _consume_into(consumer, got) >= len(values), TIMEOUT, "200 records")
    finally:
        consumer.close()
    assert got == values


def test_large_fetches_over_ssl(broker: BrokerProcess, pki: Pki) -> None:
    """Record sets over 64 KiB go out as views of the segment's mmap on TLS: 4 MiB of
    1 KiB records come back intact, in order."""
    config = {"bootstrap.servers": _ssl_bootstrap(broker), **_confluent_ssl(pki)}
    producer = Producer({**config, "linger.ms": 20, "batch.size": 1 << 20})
    values = [i.to_bytes(4, "big") * 256 for i in range(4096)]
    for value in values:
        producer.produce("tls-large", value)
    assert producer.flush(TIMEOUT) == 0
    consumer = Consumer(
        {
            **config,
            "group.id": "tls-large",
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 8 << 20,
            "max.partition.fetch.bytes": 4 << 20,
        }
    )
    consumer.assign([TopicPartition("tls-large", 0, 0)])
    got: list[bytes] = []
    try:
        wait_until(lambda: _consume_into(consumer, got) >= len(values), TIMEOUT, "4096 records")
    finally:
        consumer.close()
    assert got == values
    assert "ERROR" not in broker.output() and "Traceback" not in broker.output()


def _consume_into(consumer: Consumer, got: list[bytes]) -> int:
    for message in consumer.consume(1000, 0.5):
        if message.error() is None:
            got.append(message.value())
    return len(got)


def test_kafka_python_produce_consume_over_ssl(broker: BrokerProcess, pki: Pki) -> None:
    common = {
        "bootstrap_servers": _ssl_bootstrap(broker),
        "security_protocol": "SSL",
        "ssl_cafile": str(pki.ca.ca_file),
    }
    producer = KafkaProducer(**common, acks="all")
    values = [f"kp-{i}".encode() * 30 for i in range(100)]
    for value in values:
        producer.send("tls-kafka-python", value)
    producer.flush(TIMEOUT)
    producer.close()
    consumer = KafkaConsumer(
        "tls-kafka-python",
        **common,
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(TIMEOUT * 1000),
    )
    got = []
    for message in consumer:
        got.append(message.value)
        if len(got) == len(values):
            break
    consumer.close()
    assert got == values


def test_pystream_clients_over_ssl(broker: BrokerProcess, pki: Pki) -> None:
    """pystream's own clients with kafka-python's ssl_* names: sync and asyncio, with a
    client certificate (the principal is logged) and without."""
    tls = {
        "bootstrap_servers": _ssl_bootstrap(broker),
        "security_protocol": "SSL",
        "ssl_cafile": str(pki.ca.ca_file),
    }
    mark = broker.output_lines()
    with pystream.Producer(
        **tls, ssl_certfile=str(pki.alice.cert), ssl_keyfile=str(pki.alice.key)
    ) as producer:
        for i in range(20):
            producer.send("tls-pystream", f"sync-{i}".encode())
        producer.flush(TIMEOUT)
    broker.wait_for_output("authenticated as User:CN=alice,OU=eng,O=example", since=mark)

    async def consume_async() -> list[bytes]:
        seen: list[bytes] = []
        async with aio.Consumer("tls-pystream", **tls, auto_offset_reset="earliest") as consumer:
            async with asyncio.timeout(TIMEOUT):
                async for record in consumer:
                    seen.append(record.value)
                    if len(seen) == 20:
                        return seen
        return seen

    assert asyncio.run(consume_async()) == [f"sync-{i}".encode() for i in range(20)]
    # A client that does not trust the broker's CA fails with a clear error.
    with pytest.raises(Exception, match="(?i)certificate"):
        pystream.Producer(
            bootstrap_servers=_ssl_bootstrap(broker),
            security_protocol="SSL",
            request_timeout_ms=5000,
        ).partitions_for("tls-pystream")


def test_cli_with_command_config(broker: BrokerProcess, pki: Pki, tmp_path: Path) -> None:
    config = tmp_path / "client.properties"
    config.write_text(
        "security.protocol=SSL\n"
        f"ssl.truststore.location={pki.ca.ca_file}\n"
        "ssl.truststore.type=PEM\n"
        f"ssl.keystore.location={pki.alice.pem}\n"
    )
    b = ("--bootstrap-server", _ssl_bootstrap(broker), "--command-config", str(config))
    run("topics", "create", "tls-cli", "--partitions", "1", *b)
    run("produce", "tls-cli", *b, stdin="one\ntwo\n")
    out = run("consume", "tls-cli", "--from-beginning", "--max-messages", "2", *b)
    assert out.stdout.splitlines() == ["one", "two"]


def test_plaintext_client_on_ssl_listener_is_refused(broker: BrokerProcess, pki: Pki) -> None:
    port = broker.listener_ports["SSL"]
    for _ in range(3):
        with KafkaWire(("127.0.0.1", port), timeout=TIMEOUT) as wire:
            wire.send(wire.frame(18, 0, ApiVersionsRequest()))
            assert wire.recv_frame() is None  # no Kafka response: the TLS handshake failed
    # The broker still serves TLS clients (and the plaintext listener).
    with KafkaWire(("127.0.0.1", port), TIMEOUT, _client_context(pki)) as wire:
        assert wire.request(18, 0, ApiVersionsRequest()).error_code == 0
    with broker.wire() as wire:
        assert wire.request(18, 0, ApiVersionsRequest()).error_code == 0


def test_each_listener_advertises_itself(broker: BrokerProcess, pki: Pki) -> None:
    ports = broker.listener_ports
    assert set(ports) == {"PLAINTEXT", "SSL"} and ports["PLAINTEXT"] != ports["SSL"]
    plain = AdminClient({"bootstrap.servers": f"127.0.0.1:{ports['PLAINTEXT']}"})
    tls = AdminClient({"bootstrap.servers": _ssl_bootstrap(broker), **_confluent_ssl(pki)})
    for client, name in ((plain, "PLAINTEXT"), (tls, "SSL")):
        brokers = client.list_topics(timeout=TIMEOUT).brokers
        assert [(b.host, b.port) for b in brokers.values()] == [("127.0.0.1", ports[name])]


def test_client_certificate_names_the_principal(broker: BrokerProcess, pki: Pki) -> None:
    mark = broker.output_lines()
    port = broker.listener_ports["SSL"]
    with KafkaWire(("127.0.0.1", port), TIMEOUT, _client_context(pki, pki.alice)) as wire:
        assert wire.request(18, 0, ApiVersionsRequest()).error_code == 0
    broker.wait_for_output("authenticated as User:CN=alice,OU=eng,O=example", since=mark)
    # Without a certificate (requested, not required) the client is served as ANONYMOUS.
    mark = broker.output_lines()
    with KafkaWire(("127.0.0.1", port), TIMEOUT, _client_context(pki)) as wire:
        assert wire.request(18, 0, ApiVersionsRequest()).error_code == 0
    assert "authenticated as" not in broker.output_since(mark)


def _api_versions_over_tls(port: int, context: ssl.SSLContext) -> bool:
    """True if the broker answers ApiVersions; False if it refuses the connection."""
    try:
        with KafkaWire(("127.0.0.1", port), TIMEOUT, context) as wire:
            wire.send(wire.frame(18, 0, ApiVersionsRequest()))
            return wire.recv_frame() is not None
    except (TimeoutError, ssl.SSLError, ConnectionError):
        return False


def test_mtls_required(mtls_broker: BrokerProcess, pki: Pki) -> None:
    port = mtls_broker.listener_ports["SSL"]
    assert not _api_versions_over_tls(port, _client_context(pki))
    mark = mtls_broker.output_lines()
    assert _api_versions_over_tls(port, _client_context(pki, pki.alice))
    mtls_broker.wait_for_output("authenticated as User:CN=alice,OU=eng,O=example", since=mark)
    # confluent-kafka with its certificate produces.
    producer = Producer(
        {
            "bootstrap.servers": _ssl_bootstrap(mtls_broker),
            **_confluent_ssl(pki, pki.alice),
        }
    )
    producer.produce("mtls", b"hello")
    assert producer.flush(TIMEOUT) == 0


def test_key_password_is_sensitive(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{broker.port}"})
    resource = ConfigResource(ConfigResource.Type.BROKER, "0")
    entries = admin.describe_configs([resource])[resource].result(TIMEOUT)
    password = entries["ssl.key.password"]
    assert password.is_sensitive and password.value is None
    assert BROKER_KEY_PASSWORD not in repr(entries)
    location = entries["ssl.keystore.location"]
    assert not location.is_sensitive and location.value.endswith("broker.pem")


def test_broker_refuses_tls_listener_without_keystore(tmp_path: Path) -> None:
    process = BrokerProcess(tmp_path, {"listeners": "SSL://127.0.0.1:0"})
    with pytest.raises(RuntimeError, match="ssl.keystore.location"):
        process.start(timeout=TIMEOUT)
    process.close()


def test_failed_handshakes_leave_no_connection_behind(pki: Pki, tmp_path: Path) -> None:
    """A broker in this process: connections whose TLS handshake fails (plaintext clients,
    scanners) are never tracked, so they cannot pile up; a TLS client is, until it goes."""
    from pystream.broker.server import Broker
    from pystream.config import BrokerConfig

    config = BrokerConfig.from_properties(
        {
            "log.dirs": str(tmp_path / "data"),
            "listeners": "SSL://127.0.0.1:0",
            **_tls_overrides(pki, "none"),
        }
    )

    async def main() -> None:
        broker = Broker(config)
        await broker.start()
        try:
            port = broker.bound_ports["SSL"]
            for _ in range(5):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"\x00\x00\x00\x0a" + b"\x00" * 10)  # a Kafka frame, not TLS
                assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed
                writer.close()
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=_client_context(pki), server_hostname="127.0.0.1"
            )
            await _until(lambda: len(broker._connections) == 1)
            writer.close()
            await _until(lambda: not broker._connections)
        finally:
            await broker.stop()

    asyncio.run(main())


async def _until(condition: Any, timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def _handshake_from(source: str, port: int, context: ssl.SSLContext | None) -> bool:
    """Connect from the loopback address ``source`` (each case its own: the failure log's
    per-host rate limit leaves every case its line), over TLS with ``context`` or in
    plaintext; True if the broker answered ApiVersions."""
    try:
        with KafkaWire(("127.0.0.1", port), TIMEOUT, context, source_host=source) as wire:
            wire.send(wire.frame(18, 0, ApiVersionsRequest()))
            return wire.recv_frame() is not None
    except (TimeoutError, ssl.SSLError, ConnectionError):
        return False


@pytest.mark.parametrize(
    ("source", "client", "reason"),
    [
        ("127.0.0.11", "plaintext", "wrong version number"),
        ("127.0.0.12", "untrusted certificate", "certificate verify failed"),
        ("127.0.0.13", "no certificate", "client certificate required"),
    ],
)
def test_a_failed_handshake_is_logged_with_its_reason(
    mtls_broker: BrokerProcess, pki: Pki, source: str, client: str, reason: str
) -> None:
    """ssl.client.auth=required: each refused client leaves one line naming the listener,
    its address and why; the broker goes on serving a client with a trusted certificate."""
    port = mtls_broker.listener_ports["SSL"]
    contexts = {
        "plaintext": None,
        "untrusted certificate": _client_context(pki, pki.mallory),
        "no certificate": _client_context(pki),
    }
    mark = mtls_broker.output_lines()
    assert not _handshake_from(source, port, contexts[client])
    prefix = f"Failed TLS handshake on listener SSL from {source}:"
    output = mtls_broker.wait_for_output(prefix, since=mark)
    [line] = [line for line in output.splitlines() if prefix in line]
    assert reason in line, line
    assert _handshake_from("127.0.0.1", port, _client_context(pki, pki.alice))


def test_failed_handshakes_are_rate_limited_per_host() -> None:
    """One line per host per interval; the next one counts those left out."""
    now = [0.0]
    logger = logging.getLogger("test.handshakes")
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        failures = HandshakeFailureLog(logger, interval_s=10, clock=lambda: now[0])
        error = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
        error.reason = "WRONG_VERSION_NUMBER"
        logged = [failures.failed("SSL", f"10.0.0.1:{p}", "10.0.0.1", error) for p in range(50)]
        assert logged == [True] + [False] * 49
        assert failures.failed("SSL", "10.0.0.2:1", "10.0.0.2", error)  # another host: logged
        now[0] = 10.5
        assert failures.failed("SSL", "10.0.0.1:99", "10.0.0.1", error)
        assert failures.failed("SSL", "10.0.0.1:100", "10.0.0.1", error) is False
    finally:
        logger.removeHandler(handler)
    assert len(lines) == 3
    assert lines[0] == (
        "Failed TLS handshake on listener SSL from 10.0.0.1:0: wrong version number "
        "(a plaintext client on a TLS listener?)"
    )
    assert lines[1].startswith("Failed TLS handshake on listener SSL from 10.0.0.2:1: ")
    assert lines[2].endswith(
        "(49 more failed handshake(s) from 10.0.0.1 not logged in the last 10 s)"
    )
