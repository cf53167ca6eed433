"""``pystream groups`` as a subprocess against a real broker (offsets, lag, resets)."""

from __future__ import annotations

import pytest
from broker_process import BrokerProcess
from cli_helpers import assert_one_line_error, run

import pystream


def _lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def _group_with_offsets(bootstrap: str) -> None:
    """Topic ``work`` (2 partitions, 4 + 6 records) and group ``g`` committed at 2 and 6."""
    b = ("--bootstrap-server", bootstrap)
    run("topics", "create", "work", "--partitions", "2", *b)
    run("produce", "work", "--partition", "0", *b, stdin="a\nb\nc\nd\n")
    run("produce", "work", "--partition", "1", *b, stdin="".join(f"{i}\n" for i in range(6)))
    with pystream.AdminClient(bootstrap) as admin:
        admin.alter_consumer_group_offsets("g", {("work", 0): 2, ("work", 1): 6})


def test_list_and_describe_show_lag(broker: BrokerProcess) -> None:
    b = ("--bootstrap-server", broker.bootstrap)
    _group_with_offsets(broker.bootstrap)
    assert "g" in run("groups", "list", *b).stdout.split()
    assert ["g", "Empty"] in _lines(run("groups", "list", "--state", *b).stdout)
    out = run("groups", "describe", "--group", "g", *b).stdout
    rows = _lines(out)
    assert out.startswith("Consumer group 'g' has no active members.")
    assert rows[1][:6] == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"]
    assert rows[2] == ["g", "work", "0", "2", "4", "2", "-", "-", "-"]
    assert rows[3] == ["g", "work", "1", "6", "6", "0", "-", "-", "-"]
    state = _lines(run("groups", "describe", "g", "--state", *b).stdout)
    assert state[1][0] == "g" and "Empty" in state[1]


def test_describe_active_member(broker: BrokerProcess) -> None:
    _group_with_offsets(broker.bootstrap)
    with pystream.Consumer(
        "work", bootstrap_servers=broker.bootstrap, group_id="live", client_id="member-1"
    ) as consumer:
        consumer.wait_for_assignment(30)
        members = _lines(
            run(
                "groups", "describe", "live", "--members", "--bootstrap-server", broker.bootstrap
            ).stdout
        )
        assert members[0] == ["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS"]
        assert members[1][0] == "live" and members[1][-2:] == ["member-1", "2"]
        result = run(
            "groups",
            "reset-offsets",
            "live",
            "--all-topics",
            "--to-earliest",
            "--execute",
            "--bootstrap-server",
            broker.bootstrap,
            check=False,
        )
        assert_one_line_error(result, "inactive", "Stable")
        result = run(
            "groups", "delete", "live", "--bootstrap-server", broker.bootstrap, check=False
        )
        assert_one_line_error(result, "'live' is not empty")


def test_reset_offsets_dry_run_and_execute(broker: BrokerProcess) -> None:
    b = ("--bootstrap-server", broker.bootstrap)
    _group_with_offsets(broker.bootstrap)
    dry = run("groups", "reset-offsets", "g", "--topic", "work", "--to-earliest", *b)
    assert _lines(dry.stdout) == [
        ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"],
        ["g", "work", "0", "0"],
        ["g", "work", "1", "0"],
    ]
    assert "--execute" in dry.stderr
    still = _lines(run("groups", "describe", "g", *b).stdout)
    assert still[2][3] == "2"

    def reset(*how: str) -> list[list[str]]:
        out = run("groups", "reset-offsets", "--group", "g", *how, "--execute", *b).stdout
        return _lines(out)[1:]

    assert reset("--all-topics", "--to-latest") == [
        ["g", "work", "0", "4"],
        ["g", "work", "1", "6"],
    ]
    assert reset("--topic", "work:0", "--shift-by", "-3") == [["g", "work", "0", "1"]]
    assert reset("--topic", "work:0", "--shift-by", "-10") == [["g", "work", "0", "0"]]
    assert reset("--topic", "work:1", "--to-offset", "99") == [["g", "work", "1", "6"]]
    assert reset("--topic", "work:1", "--to-offset", "3") == [["g", "work", "1", "3"]]
    assert reset("--all-topics", "--to-datetime", "2000-01-01T00:00:00+00:00") == [
        ["g", "work", "0", "0"],
        ["g", "work", "1", "0"],
    ]
    assert reset("--all-topics", "--to-datetime", "2999-01-01T00:00:00") == [
        ["g", "work", "0", "4"],
        ["g", "work", "1", "6"],
    ]
    rows = _lines(run("groups", "describe", "g", *b).stdout)
    assert [r[3] for r in rows[2:]] == ["4", "6"]


def test_delete_group(broker: BrokerProcess) -> None:
    b = ("--bootstrap-server", broker.bootstrap)
    _group_with_offsets(broker.bootstrap)
    out = run("groups", "delete", "g", *b)
    assert out.stdout.strip() == "Deletion of requested consumer groups ('g') was successful."
    assert "g" not in run("groups", "list", *b).stdout.split()
    assert_one_line_error(run("groups", "delete", "g", *b, check=False), "'g' does not exist")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("groups", "describe", "nobody"), "does not exist"),
        (("groups", "describe"), "--all-groups"),
        (("groups", "reset-offsets", "g", "--all-topics"), "exactly one of"),
        (("groups", "reset-offsets", "g", "--to-earliest"), "--topic or --all-topics"),
        (
            (
                "groups",
                "reset-offsets",
                "g",
                "--all-topics",
                "--to-latest",
                "--dry-run",
                "--execute",
            ),
            "not both",
        ),
        (
            ("groups", "reset-offsets", "g", "--all-topics", "--to-datetime", "yesterday"),
            "--to-datetime",
        ),
        (("groups", "reset-offsets", "g", "--topic", "work:x", "--to-latest"), "work:x"),
        (("groups", "reset-offsets", "g", "--topic", "work:7", "--to-latest"), "partition 7"),
        (("groups", "reset-offsets", "g", "--topic", "nope", "--to-latest"), "nope"),
    ],
)
def test_group_errors_are_one_line(
    broker: BrokerProcess, args: tuple[str, ...], needle: str
) -> None:
    _group_with_offsets(broker.bootstrap)
    result = run(*args, "--bootstrap-server", broker.bootstrap, check=False)
    assert_one_line_error(result, needle)


def test_describe_offsets_of_a_deleted_topic(broker: BrokerProcess) -> None:
    b = ("--bootstrap-server", broker.bootstrap)
    _group_with_offsets(broker.bootstrap)
    run("topics", "delete", "work", *b)
    rows = _lines(run("groups", "describe", "g", *b).stdout)
    assert rows[2] == ["g", "work", "0", "2", "-", "-", "-", "-", "-"]
    reset = run("groups", "reset-offsets", "g", "--all-topics", "--to-earliest", *b)
    assert _lines(reset.stdout) == [["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]]
