"""``pystream produce`` and ``pystream consume`` as subprocesses against a real broker."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from broker_process import BrokerProcess
from cli_helpers import ENV, PYSTREAM, run
from txn_helpers import ck_read_committed


def test_produce_keys_headers_and_consume_with_properties(broker: BrokerProcess) -> None:
    b = ("--bootstrap-server", broker.bootstrap)
    run("topics", "create", "events", "--partitions", "1", *b)
    lines = "user-1:hello\nuser-2:world\nuser-3:\n"
    run(
        "produce",
        "events",
        "--property",
        "parse.key=true",
        "--property",
        "key.separator=:",
        "--header",
        "source=cli",
        *b,
        stdin=lines,
    )
    out = run(
        "consume",
        "events",
        "--from-beginning",
        "--max-messages",
        "3",
        "--property",
        "print.key=true",
        "--property",
        "print.offset=true",
        "--property",
        "print.headers=true",
        "--property",
        "print.partition=true",
        *b,
    )
    assert out.stdout.splitlines() == [
        "Partition:0\tOffset:0\tsource:cli\tuser-1\thello",
        "Partition:0\tOffset:1\tsource:cli\tuser-2\tworld",
        "Partition:0\tOffset:2\tsource:cli\tuser-3\t",
    ]
    assert "Processed a total of 3 messages" in out.stderr

    parsed = "h1:a,h2:b\tk\tv\n"
    run(
        "produce",
        "events",
        "--property",
        "parse.headers=true",
        "--property",
        "parse.key=true",
        "--property",
        "null.marker=NULL",
        *b,
        stdin=parsed + "\tNULL\tx\n",
    )
    out = run(
        "consume",
        "events",
        "--partition",
        "0",
        "--offset",
        "3",
        "--max-messages",
        "2",
        "--property",
        "print.key=true",
        "--property",
        "print.headers=true",
        "--property",
        "print.timestamp=true",
        "--property",
        "key.separator= | ",
        *b,
    )
    first, second = out.stdout.splitlines()
    assert first.startswith("CreateTime:") and first.endswith(" | h1:a,h2:b | k | v")
    assert second.endswith(" | NO_HEADERS | null | x")


def test_consume_partition_offset_and_timeout(broker: BrokerProcess) -> None:
    b = ("--bootstrap-server", broker.bootstrap)
    run("topics", "create", "nums", "--partitions", "2", *b)
    run("produce", "nums", "--partition", "1", *b, stdin="".join(f"{i}\n" for i in range(10)))
    out = run("consume", "nums", "--partition", "1", "--offset", "7", "--timeout-ms", "1500", *b)
    assert out.stdout.split() == ["7", "8", "9"]
    out = run("consume", "nums", "--partition", "1", "--offset", "-2", "--max-messages", "2", *b)
    assert out.stdout.split() == ["8", "9"]
    out = run("consume", "nums", "--partition", "0", "--from-beginning", "--timeout-ms", "500", *b)
    assert out.stdout == "" and "Processed a total of 0 messages" in out.stderr
    out = run(
        "consume",
        "nums",
        "--from-beginning",
        "--max-messages",
        "10",
        "--isolation-level",
        "read_committed",
        *b,
    )
    assert sorted(out.stdout.split(), key=int) == [str(i) for i in range(10)]


def test_consume_with_group_commits(broker: BrokerProcess) -> None:
    b = ("--bootstrap-server", broker.bootstrap)
    run("topics", "create", "jobs", *b)
    run("produce", "jobs", "--sync", *b, stdin="a\nb\nc\nd\n")
    first = run(
        "consume", "jobs", "--group", "workers", "--from-beginning", "--max-messages", "2", *b
    )
    assert first.stdout.split() == ["a", "b"]
    second = run("consume", "jobs", "--group", "workers", "--max-messages", "2", *b)
    assert second.stdout.split() == ["c", "d"]


@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        (("produce", "events", "--property", "parse.key=true"), "no-separator\n", "line 1"),
        (("produce", "events", "--property", "nonsense=1"), "", "nonsense"),
        (("produce", "events", "--producer-property", "no.such.setting=1"), "", "setting"),
        (("produce", "events", "--transaction-size", "2"), "", "--transactional-id"),
        (("produce", "events", "--acks", "1", "--idempotence"), "", "acks"),
        (("consume", "missing", "--timeout-ms", "100"), "", "missing"),
        (("consume", "events", "--partition", "9", "--timeout-ms", "100"), "", "partition 9"),
        (("consume", "events", "--offset", "3"), "", "--offset needs --partition"),
        (("consume", "events", "--partition", "0", "--offset", "soon"), "", "--offset"),
        (("consume", "events", "--isolation-level", "dirty"), "", "isolation-level"),
    ],
)
def test_console_errors_are_one_line(
    broker: BrokerProcess, args: tuple[str, ...], stdin: str, needle: str
) -> None:
    run("topics", "create", "events", "--bootstrap-server", broker.bootstrap)
    result = run(*args, "--bootstrap-server", broker.bootstrap, stdin=stdin, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and needle in errors[0], result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def as_foreground_job(argv: list[str]) -> list[str]:
    """``argv`` started as a shell starts a foreground job: with SIGINT at its default.
    A test run started in the background (CI scripts, ``cmd &``) inherits SIGINT ignored,
    and so would the child, which then never sees the Ctrl-C this test sends."""
    reset = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execvp(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", reset, *argv]


def test_consume_stops_cleanly_on_ctrl_c(broker: BrokerProcess) -> None:
    b = ("--bootstrap-server", broker.bootstrap)
    run("topics", "create", "live", *b)
    run("produce", "live", *b, stdin="first\n")
    process = subprocess.Popen(
        as_foreground_job([*PYSTREAM, "consume", "live", "--from-beginning", *b]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "first\n"  # it is consuming now
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert stderr.strip() == "Processed a total of 1 messages"


def test_produce_in_transactions_commits_each_and_aborts_on_error(broker: BrokerProcess) -> None:
    b = ("--bootstrap-server", broker.bootstrap)
    run("topics", "create", "txn", "--partitions", "1", *b)
    # Transactions of 2 records: v1 v2 | v3 v4 | v5 + a bad line -> aborted.
    lines = "".join(f"k:v{i}\n" for i in range(1, 6)) + "no-separator\n"
    keyed = ("--property", "parse.key=true", "--property", "key.separator=:")
    result = run(
        "produce",
        "txn",
        *keyed,
        "--transactional-id",
        "cli-txn",
        "--transaction-size",
        "2",
        *b,
        stdin=lines,
        check=False,
    )
    assert result.returncode != 0 and "line 6" in result.stderr, result.stderr
    # The whole input in one transaction, then a non-idempotent producer.
    run("produce", "txn", "--transactional-id", "cli-txn", *b, stdin="w1\nw2\nend\n")
    run("produce", "txn", "--no-idempotence", "--acks", "1", *b, stdin="plain\n")
    values = ck_read_committed(
        broker.bootstrap, "txn", 1, lambda seen: b"plain" in seen, "the last record"
    )
    assert values == [b"v1", b"v2", b"v3", b"v4", b"w1", b"w2", b"end", b"plain"]
