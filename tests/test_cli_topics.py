"""``pystream topics`` and ``pystream configs`` run as a subprocess against a real broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from broker_process import BrokerProcess
from cli_helpers import assert_one_line_error, run


def test_create_list_describe_alter_delete(broker: BrokerProcess) -> None:
    b = ("--bootstrap-server", broker.bootstrap)
    out = run(
        "topics", "create", "orders", "--partitions", "3", "--config", "retention.ms=60000", *b
    )
    assert out.stdout.strip() == "Created topic orders."
    run("topics", "create", "--topic", "audit", "--replication-factor", "1", *b)
    listed = run("topics", "list", *b).stdout.split()
    assert {"orders", "audit"} <= set(listed)

    described = run("topics", "describe", "--topic", "orders", *b).stdout.splitlines()
    assert described[0].startswith("Topic: orders\tTopicId: ")
    assert "PartitionCount: 3\tReplicationFactor: 1\tConfigs: retention.ms=60000" in described[0]
    assert described[1] == "\tTopic: orders\tPartition: 0\tLeader: 0\tReplicas: 0\tIsr: 0"
    assert len(described) == 4

    run("topics", "alter", "orders", "--partitions", "5", "--config", "retention.ms=1000", *b)
    described = run("topics", "describe", "orders", *b).stdout
    assert "PartitionCount: 5" in described and "retention.ms=1000" in described

    out = run("topics", "delete", "orders", "audit", *b)
    assert out.stdout.splitlines() == ["Deleted topic orders.", "Deleted topic audit."]
    assert "orders" not in run("topics", "list", *b).stdout.split()


def test_topic_errors_are_one_line(broker: BrokerProcess) -> None:
    b = ("--bootstrap-server", broker.bootstrap)
    run("topics", "create", "t", *b)
    assert_one_line_error(run("topics", "create", "t", *b, check=False), "already exists")
    run("topics", "create", "t", "--if-not-exists", *b)
    assert_one_line_error(run("topics", "delete", "missing", *b, check=False), "missing")
    run("topics", "delete", "missing", "--if-exists", *b)
    assert_one_line_error(run("topics", "describe", "missing", *b, check=False), "missing")
    assert_one_line_error(
        run("topics", "alter", "t", "--partitions", "1", *b, check=False), "Error:"
    )
    assert_one_line_error(run("topics", "alter", "t", *b, check=False), "nothing to alter")
    assert_one_line_error(
        run("topics", "create", "x", "--config", "novalue", *b, check=False), "KEY=VALUE"
    )


def test_unreachable_broker_and_bad_command_config(tmp_path: Path) -> None:
    result = run("topics", "list", "--bootstrap-server", "127.0.0.1:1", check=False)
    assert_one_line_error(result, "no broker is reachable")
    assert_one_line_error(
        run("topics", "list", "--bootstrap-server", "nohost:notaport", check=False), "port"
    )
    assert_one_line_error(
        run("topics", "list", "--command-config", str(tmp_path / "nope"), check=False),
        "cannot read",
    )
    bad = tmp_path / "client.properties"
    bad.write_text("request.timeout.ms=soon\n")
    assert_one_line_error(
        run("topics", "list", "--command-config", str(bad), check=False), "request.timeout.ms"
    )


def test_command_config_is_used(broker: BrokerProcess, tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text("# a client config\nclient.id=cli-test\nrequest.timeout.ms=20000\n")
    run(
        "topics",
        "create",
        "c",
        "--bootstrap-server",
        broker.bootstrap,
        "--command-config",
        str(props),
    )
    listed = run(
        "topics", "list", "--bootstrap-server", broker.bootstrap, "--command-config", str(props)
    )
    assert "c" in listed.stdout.split()


def test_configs_describe_and_alter(broker: BrokerProcess) -> None:
    b = ("--bootstrap-server", broker.bootstrap)
    run("topics", "create", "cfg", *b)
    out = run(
        "configs",
        "alter",
        "--topic",
        "cfg",
        "--add-config",
        "retention.ms=5000,cleanup.policy=[delete,compact]",
        *b,
    )
    assert out.stdout.strip() == "Completed updating config for topic cfg."
    described = run("configs", "describe", "--entity-type", "topics", "--entity-name", "cfg", *b)
    lines = described.stdout.splitlines()
    assert lines[0] == "Dynamic configs for topic cfg are:"
    assert "  cleanup.policy=delete,compact sensitive=false source=DYNAMIC_TOPIC_CONFIG" in lines
    assert "  retention.ms=5000 sensitive=false source=DYNAMIC_TOPIC_CONFIG" in lines

    run("configs", "alter", "--topic", "cfg", "--delete-config", "retention.ms", *b)
    described = run("configs", "describe", "--topic", "cfg", *b).stdout
    assert "retention.ms" not in described
    everything = run("configs", "describe", "--topic", "cfg", "--all", *b).stdout
    assert everything.startswith("All configs for topic cfg are:")
    assert "  retention.ms=" in everything
    assert run("configs", "describe", "--broker", "0", "--all", *b).stdout.startswith(
        "All configs for broker 0 are:"
    )


def test_configs_alter_dynamic_broker_configs(broker: BrokerProcess) -> None:
    b = ("--bootstrap-server", broker.bootstrap)
    default = ("--entity-type", "brokers", "--entity-default")
    out = run("configs", "alter", *default, "--add-config", "log.retention.ms=3600000", *b)
    assert out.stdout.strip() == "Completed updating default config for brokers in the cluster."
    run("configs", "alter", "--broker", "0", "--add-config", "log.cleanup.policy=compact", *b)
    lines = run("configs", "describe", "--broker", "0", *b).stdout.splitlines()
    assert lines[0] == "Dynamic configs for broker 0 are:"
    retention = "  log.retention.ms=3600000 sensitive=false source=DYNAMIC_DEFAULT_BROKER_CONFIG"
    assert retention in lines
    assert "  log.cleanup.policy=compact sensitive=false source=DYNAMIC_BROKER_CONFIG" in lines
    lines = run("configs", "describe", *default, *b).stdout.splitlines()
    assert lines == ["Default configs for brokers in the cluster are:", retention]
    run("configs", "alter", *default, "--delete-config", "log.retention.ms", *b)
    assert run("configs", "describe", *default, *b).stdout.splitlines()[1:] == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("configs", "describe", "--topic", "missing"), "missing"),
        (("configs", "alter", "--topic", "cfg", "--add-config", "no.such.key=1"), "no.such.key"),
        (("configs", "alter", "--topic", "cfg"), "nothing to alter"),
        (("configs", "describe"), "name one entity"),
        (("configs", "describe", "--broker", "zero"), "not a broker id"),
        (("configs", "alter", "--broker", "0", "--add-config", "num.partitions=3"), "dynamically"),
        (("configs", "describe", "--entity-default"), "--entity-type brokers"),
    ],
)
def test_config_errors_are_one_line(
    broker: BrokerProcess, args: tuple[str, ...], needle: str
) -> None:
    run("topics", "create", "cfg", "--bootstrap-server", broker.bootstrap)
    result = run(*args, "--bootstrap-server", broker.bootstrap, check=False)
    assert_one_line_error(result, needle)
