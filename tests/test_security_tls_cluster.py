"""Three brokers replicating over an SSL inter-broker listener (``inter.broker.listener.name``)
with ``ssl.client.auth=required``: followers fetch, the controlled shutdown asks the
controller, all over TLS with the broker's own certificate; clients use the PLAINTEXT
listener or SSL."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("kazoo", reason="kazoo is not installed (pip install kazoo)")

from cluster_fixtures import by_id, metadata, start_cluster  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from tls_certs import CertificateAuthority  # noqa: E402
from zookeeper import (  # noqa: E402
    wait_until,
    zk_connect,  # noqa: F401 - fixture
    zookeeper,  # noqa: F401 - fixture
)

TIMEOUT = 30.0


def test_replication_over_ssl_inter_broker_listener(
    tmp_path: Path,
    zk_connect: str,  # noqa: F811
) -> None:
    ca = CertificateAuthority(tmp_path / "pki")
    broker_identity = ca.issue("broker", "localhost", "brokers", "example")
    brokers = start_cluster(
        tmp_path,
        zk_connect,
        {
            "listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
            "inter.broker.listener.name": "SSL",
            "ssl.keystore.location": str(broker_identity.pem),
            "ssl.truststore.location": str(ca.ca_file),
            "ssl.client.auth": "required",
        },
    )
    try:
        plain = ",".join(f"127.0.0.1:{b.listener_ports['PLAINTEXT']}" for b in brokers)
        tls = {
            "bootstrap.servers": ",".join(f"127.0.0.1:{b.listener_ports['SSL']}" for b in brokers),
            "security.protocol": "SSL",
            "ssl.ca.location": str(ca.ca_file),
            "ssl.certificate.location": str(broker_identity.cert),
            "ssl.key.location": str(broker_identity.key),
        }
        admin = AdminClient({"bootstrap.servers": plain})
        admin.create_topics([NewTopic("replicated-tls", 1, 3)])["replicated-tls"].result(TIMEOUT)

        def full_isr() -> list[int] | None:
            partition = metadata(brokers[0], ["replicated-tls"]).topics[0].partitions
            if partition and len(partition[0].isr_nodes) == 3:
                return [partition[0].leader_id]
            return None

        # Followers are in the ISR only once they fetch (over the SSL listener).
        leader_id = wait_until(full_isr, TIMEOUT, "3 replicas in sync")[0]
        producer = Producer({**tls, "acks": "all", "enable.idempotence": True})
        values = [f"r{i}".encode() * 20 for i in range(100)]
        for value in values:
            producer.produce("replicated-tls", value)
        assert producer.flush(TIMEOUT) == 0

        by_broker = by_id(brokers)
        by_broker[leader_id].kill()
        survivors = [b for i, b in by_broker.items() if i != leader_id]

        def new_leader() -> int | None:
            partition = metadata(survivors[0], ["replicated-tls"]).topics[0].partitions[0]
            return partition.leader_id + 1 if partition.leader_id not in (-1, leader_id) else None

        wait_until(new_leader, TIMEOUT, "a new leader")
        consumer = Consumer(
            {
                **tls,
                "bootstrap.servers": ",".join(
                    f"127.0.0.1:{b.listener_ports['SSL']}" for b in survivors
                ),
                "group.id": "tls-cluster",
                "enable.auto.commit": False,
            }
        )
        consumer.assign([TopicPartition("replicated-tls", 0, 0)])
        got: list[bytes] = []
        try:
            wait_until(lambda: _poll_into(consumer, got) >= len(values), TIMEOUT, "every record")
        finally:
            consumer.close()
        assert got == values
        # A controlled shutdown asks the controller over the SSL listener too.
        mark = survivors[0].output_lines()
        assert survivors[0].stop() == 0
        assert "controlled shutdown succeeded" in survivors[0].output_since(mark)
    finally:
        for broker in brokers:
            broker.close()


def _poll_into(consumer: Consumer, got: list[bytes]) -> int:
    message = consumer.poll(0.5)
    if message is not None and message.error() is None:
        got.append(message.value())
    return len(got)
