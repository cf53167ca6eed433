"""Connection limits (Kafka's ``ConnectionQuotas``) on a real ``pystream serve``.

``max.connections.per.ip``: a connection over its address's limit is closed at once (and
logged), ``max.connections.per.ip.overrides`` wins for the hosts it names, and a freed slot
is usable again.  ``max.connections`` (and ``listener.name.<name>.max.connections``): at
the limit the listener stops accepting — a new connection waits, unanswered, until one
closes — while the inter-broker listener stays exempt from the broker-wide limit.  Clients
connect from several 127.0.0.x addresses to be counted as different hosts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from broker_process import BrokerProcess, KafkaWire
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from waiting import wait_until

from pystream.config import BrokerConfig, parse_connection_overrides
from pystream.errors import InvalidConfigError
from pystream.protocol.messages.api_versions import ApiVersionsRequest

DEADLINE = 20.0
PER_IP = 3
OVERRIDE_HOST, OVERRIDE = "127.0.0.2", 5
MAX_CONNECTIONS = 8
INTERNAL_MAX = 3


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("limits") / "broker",
        {
            "listeners": "CLIENT://127.0.0.1:0,INTERNAL://127.0.0.1:0",
            "listener.security.protocol.map": "CLIENT:PLAINTEXT,INTERNAL:PLAINTEXT",
            "inter.broker.listener.name": "INTERNAL",
            "max.connections": str(MAX_CONNECTIONS),
            "max.connections.per.ip": str(PER_IP),
            "max.connections.per.ip.overrides": f"{OVERRIDE_HOST}:{OVERRIDE}",
            "listener.name.internal.max.connections": str(INTERNAL_MAX),
        },
    ).start()
    try:
        yield process
        assert "Traceback" not in process.output()
    finally:
        process.close()


def _address(broker: BrokerProcess, listener: str = "CLIENT") -> tuple[str, int]:
    return ("127.0.0.1", broker.listener_ports[listener])


def _served(wire: KafkaWire) -> bool:
    """Whether ``wire`` gets an ApiVersions answer (False: the broker closed it)."""
    try:
        response = wire.request(18, 3, ApiVersionsRequest(client_software_name="limits"))
    except (ConnectionError, OSError):
        return False
    return response.error_code == 0


def _open(
    stack: ExitStack, broker: BrokerProcess, host: str, count: int, listener: str = "CLIENT"
) -> list[KafkaWire]:
    """``count`` served connections from ``host``."""
    wires = [
        stack.enter_context(KafkaWire(_address(broker, listener), source_host=host))
        for _ in range(count)
    ]
    assert all(_served(wire) for wire in wires)
    return wires


def _served_again(broker: BrokerProcess, host: str) -> None:
    """A new connection from ``host`` is served once the broker has seen a close (the
    slot comes back when the broker notices the close: poll for it)."""

    def attempt() -> bool:
        with KafkaWire(_address(broker), source_host=host) as wire:
            return _served(wire)

    wait_until(attempt, DEADLINE, "a freed per-IP slot was not usable again")


def test_per_ip_limit_closes_the_extra_connection(broker: BrokerProcess) -> None:
    mark = broker.output_lines()
    with ExitStack() as stack:
        wires = _open(stack, broker, "127.0.0.1", PER_IP)
        with KafkaWire(_address(broker), source_host="127.0.0.1") as extra:
            assert extra.is_closed_by_peer(DEADLINE), "the connection over the limit stayed"
        broker.wait_for_output("Rejected connection from 127.0.0.1 on listener CLIENT", since=mark)
        # The connections within the limit were untouched.
        assert all(_served(wire) for wire in wires)
        # A real client cannot get in while the address is at its limit ...
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{_address(broker)[1]}"})
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=3)
        wires[0].close()
        wires[1].close()
        _served_again(broker, "127.0.0.1")
    # ... and gets in once the address has room again.
    wait_until(
        lambda: admin.list_topics(timeout=3).brokers, DEADLINE, "the admin client stayed out"
    )


def test_per_ip_override_wins(broker: BrokerProcess) -> None:
    with ExitStack() as stack:
        # More than max.connections.per.ip, as many as the override allows.
        _open(stack, broker, OVERRIDE_HOST, OVERRIDE)
        with KafkaWire(_address(broker), source_host=OVERRIDE_HOST) as extra:
            assert extra.is_closed_by_peer(DEADLINE)
        # Other addresses still have the default limit, and their own count.
        _open(stack, broker, "127.0.0.3", 1)


def test_max_connections_stops_accepting_until_one_closes(broker: BrokerProcess) -> None:
    with ExitStack() as stack:
        held: list[KafkaWire] = []
        hosts = iter(f"127.0.0.{i}" for i in range(10, 20))
        while len(held) < MAX_CONNECTIONS:
            held += _open(stack, broker, next(hosts), min(PER_IP, MAX_CONNECTIONS - len(held)))
        # The kernel completes the handshake (listen backlog), but the broker does not
        # accept: the request waits unanswered.
        waiting = stack.enter_context(KafkaWire(_address(broker), source_host=next(hosts)))
        waiting.send(waiting.frame(18, 3, ApiVersionsRequest(client_software_name="waiting")))
        waiting.sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            waiting.sock.recv(1)
        # The inter-broker listener is exempt from the broker-wide limit ...
        internal = _open(stack, broker, "127.0.0.30", 1, listener="INTERNAL")
        internal += _open(stack, broker, "127.0.0.31", INTERNAL_MAX - 1, listener="INTERNAL")
        # ... but not from its own listener.name.internal.max.connections.
        over = stack.enter_context(
            KafkaWire(_address(broker, "INTERNAL"), source_host="127.0.0.32")
        )
        over.send(over.frame(18, 3, ApiVersionsRequest(client_software_name="over")))
        over.sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            over.sock.recv(1)
        internal[0].close()
        over.sock.settimeout(DEADLINE)
        assert over.recv_frame() is not None, "a freed listener slot was not used"
        # The inter-broker connections count towards max.connections too: once they and
        # one client connection close, the waiting one is accepted and answered.
        for wire in [*internal[1:], over]:
            wire.close()
        held[0].close()
        waiting.sock.settimeout(DEADLINE)
        assert waiting.recv_frame() is not None, "the broker did not accept after a close"
        assert all(_served(wire) for wire in held[1:])


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"max.connections": "-1"}, "max.connections"),
        ({"max.connections.per.ip": "x"}, "max.connections.per.ip"),
        ({"max.connections.per.ip.overrides": "127.0.0.1"}, "host:count"),
        ({"max.connections.per.ip.overrides": "127.0.0.1:-2"}, "at least 0"),
        ({"max.connections.per.ip.overrides": "host:many"}, "'host:many'"),
        ({"max.connections.per.ip": "0"}, "overrides is empty"),
        ({"listener.name.client.max.connections": "-5"}, "listener.name.client.max.connections"),
    ],
)
def test_bad_limits_are_config_errors(props: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        BrokerConfig.from_properties({"log.dirs": "/tmp/x", **props})


def test_limits_parse() -> None:
    config = BrokerConfig.from_properties(
        {
            "log.dirs": "/tmp/x",
            "max.connections.per.ip": "0",
            "max.connections.per.ip.overrides": "127.0.0.1:10, [::1]:0,localhost:3",
            "listener.name.client.max.connections": "7",
        }
    )
    assert config.max_connections_per_ip == 0
    assert parse_connection_overrides(config.max_connections_per_ip_overrides) == {
        "127.0.0.1": 10,
        "::1": 0,
        "localhost": 3,
    }
    assert config.for_listener("CLIENT", "max.connections") == 7
    assert config.for_listener("OTHER", "max.connections") == 2**31 - 1
