"""SASL_SSL: SCRAM and PLAIN logins over TLS, with confluent-kafka, kafka-python and
pystream's own client (the TLS and SASL layers together on one listener)."""

from __future__ import annotations

import ssl
import time
import uuid
from collections.abc import Iterator

import pytest
from broker_process import BrokerProcess
from cli_helpers import run
from confluent_kafka import Consumer, KafkaError, Producer
from kafka import KafkaProducer
from tls_certs import CertificateAuthority

import pystream

TIMEOUT = 30.0
USER, PASSWORD = "carol", "carol-Secret-9"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("sasl-ssl-pki"))


@pytest.fixture(scope="module")
def broker(
    ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    server = ca.issue("broker", "localhost")
    process = BrokerProcess(
        tmp_path_factory.mktemp("sasl-ssl-broker"),
        {
            "listeners": "PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
            "ssl.keystore.location": str(server.pem),
            "ssl.truststore.location": str(ca.ca_file),
            "auto.create.topics.enable": "true",
        },
    )
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        run(
            "users", "add", USER, "--password", PASSWORD, "--mechanism", mechanism,
            "--log-dirs", str(process.log_dir),
        )  # fmt: skip
    process.start()
    yield process
    process.close()


def _bootstrap(broker: BrokerProcess) -> str:
    return f"127.0.0.1:{broker.listener_ports['SASL_SSL']}"


def _confluent(
    broker: BrokerProcess, ca: CertificateAuthority, mechanism: str, password: str = PASSWORD
) -> dict[str, str]:
    return {
        "bootstrap.servers": _bootstrap(broker),
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(ca.ca_file),
        "sasl.mechanisms": mechanism,
        "sasl.username": USER,
        "sasl.password": password,
    }


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_confluent_kafka_over_sasl_ssl(
    broker: BrokerProcess, ca: CertificateAuthority, mechanism: str
) -> None:
    topic = f"sasl-ssl-{mechanism.lower()}-{uuid.uuid4().hex[:6]}"
    errors: list[object] = []
    producer = Producer({**_confluent(broker, ca, mechanism), "linger.ms": 0})
    for i in range(10):
        producer.produce(topic, f"v{i}".encode(), on_delivery=lambda e, m: errors.append(e))
    assert producer.flush(TIMEOUT) == 0
    assert errors == [None] * 10
    consumer = Consumer(
        {
            **_confluent(broker, ca, mechanism),
            "group.id": topic,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    got: list[bytes] = []
    try:
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                got.append(message.value())
            if len(got) == 10:
                break
    finally:
        consumer.close()
    assert got == [f"v{i}".encode() for i in range(10)]


def test_wrong_password_over_sasl_ssl_fails(
    broker: BrokerProcess, ca: CertificateAuthority
) -> None:
    errors: list[KafkaError] = []
    producer = Producer(
        {
            **_confluent(broker, ca, "SCRAM-SHA-512", password="wrong"),
            "message.timeout.ms": 5000,
            "error_cb": errors.append,
        }
    )
    producer.produce("sasl-ssl-refused", b"x")
    producer.flush(10)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def test_kafka_python_and_pystream_over_sasl_ssl(
    broker: BrokerProcess, ca: CertificateAuthority
) -> None:
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    producer = KafkaProducer(
        bootstrap_servers=_bootstrap(broker),
        security_protocol="SASL_SSL",
        ssl_context=context,
        sasl_mechanism="SCRAM-SHA-256",
        sasl_plain_username=USER,
        sasl_plain_password=PASSWORD,
    )
    producer.send("sasl-ssl-mixed", b"from-kafka-python").get(timeout=TIMEOUT)
    producer.close()
    settings = {
        "bootstrap_servers": _bootstrap(broker),
        "security_protocol": "SASL_SSL",
        "ssl_cafile": str(ca.ca_file),
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": USER,
        "sasl_plain_password": PASSWORD,
    }
    with pystream.Producer(**settings) as ours:
        ours.send("sasl-ssl-mixed", b"from-pystream")
        ours.flush(TIMEOUT)
    with pystream.Consumer("sasl-ssl-mixed", **settings, auto_offset_reset="earliest") as consumer:
        values: list[bytes | None] = []
        deadline = time.monotonic() + TIMEOUT
        while len(values) < 2 and time.monotonic() < deadline:
            values += [record.value for record in consumer.poll(0.5)]
    assert values == [b"from-kafka-python", b"from-pystream"]
