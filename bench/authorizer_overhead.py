"""What the ACL authorizer costs on the produce path: ``e2e.py --scenario produce-100b``
against two fresh brokers, one with ``authorizer.class.name`` and 1,000 ACLs (the
producer allowed by a literal ``*`` topic ACL), one without, alternating which goes
first; the median and range of ``--runs`` rounds (issue 14's target: within 5%).

    python bench/authorizer_overhead.py [--runs 3] [--records 1m] [--acls 1000]

The broker with the authorizer is started once with ``super.users=User:ANONYMOUS`` to
load the ACLs through CreateAcls, then restarted without super users, so every
request is decided by the ACLs (PLAINTEXT connections are ``User:ANONYMOUS``); the
other broker is restarted too, so both have the same history.  ``--control`` runs
the same procedure without the authorizer on either (an A/A run: the noise floor).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

ROOT = Path(__file__).resolve().parent.parent
_BOOTSTRAP = re.compile(r"clients: bootstrap\.servers=(\S+)")
_METRICS = re.compile(r"pystream metrics on (\S+)")


class Broker:
    """A ``pystream serve`` subprocess on a free port."""

    def __init__(self, directory: Path, overrides: dict[str, str]) -> None:
        self.directory = directory
        self.overrides = {
            "log.dirs": str(directory / "data"),
            "listeners": "PLAINTEXT://127.0.0.1:0",
            "metrics.listener": "http://127.0.0.1:0",  # two brokers: never both on 9644
            **overrides,
        }
        self.process: subprocess.Popen[str] | None = None
        self.bootstrap = ""
        self.metrics_url = ""  # GET /metrics, when the broker serves it

    def start(self) -> Broker:
        command = [sys.executable, "-m", "pystream", "serve"]
        for key, value in self.overrides.items():
            command += ["--override", f"{key}={value}"]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "broker.log", "a")  # noqa: SIM115 - the broker's lifetime
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, text=True, env=env
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 60
        for line in self.process.stdout:
            metrics = _METRICS.search(line)
            if metrics:
                self.metrics_url = metrics.group(1)
            found = _BOOTSTRAP.search(line)
            if found:
                self.bootstrap = found.group(1)
                break
            if time.monotonic() > deadline:
                break
        if not self.bootstrap:
            raise SystemExit(f"broker in {self.directory} did not start; see broker.log")
        # Keep reading what it prints: a full pipe would block the broker.
        threading.Thread(target=self.process.stdout.read, daemon=True).start()
        self.overrides["listeners"] = f"PLAINTEXT://{self.bootstrap}"
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(60)
            self.process = None


def acls(count: int) -> list[AclBinding]:
    """The producer's rights (a literal ``*`` topic ACL, the cluster) plus filler ACLs for
    other principals, literal and prefixed, up to ``count``."""

    def acl(
        rtype: ResourceType,
        name: str,
        principal: str,
        op: AclOperation,
        pattern: ResourcePatternType = ResourcePatternType.LITERAL,
    ) -> AclBinding:
        return AclBinding(rtype, name, pattern, principal, "*", op, AclPermissionType.ALLOW)

    mine = [
        acl(ResourceType.TOPIC, "*", "User:ANONYMOUS", AclOperation.ALL),
        acl(ResourceType.BROKER, "kafka-cluster", "User:ANONYMOUS", AclOperation.ALL),
    ]
    filler = [
        acl(
            ResourceType.TOPIC,
            f"team-{i}-",
            f"User:user{i}",
            AclOperation.WRITE,
            ResourcePatternType.PREFIXED if i % 2 else ResourcePatternType.LITERAL,
        )
        for i in range(count - len(mine))
    ]
    return mine + filler


def run_e2e(
    bootstraps: list[str], records: str, out: Path, scenario: str = "produce-100b"
) -> dict[str, float]:
    """``e2e.py --scenario <scenario>`` against each bootstrap in turn: records/s by broker."""
    command = [sys.executable, str(ROOT / "bench" / "e2e.py"), "--scenario", scenario]
    command += ["--records", records, "--json", str(out)]
    for bootstrap in bootstraps:
        command += ["--bootstrap", bootstrap]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    results = json.loads(out.read_text())["results"]
    return {r["broker"]: r["records_per_s"] for r in results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--records", default="1m")
    parser.add_argument("--acls", type=int, default=1000)
    parser.add_argument(
        "--control",
        action="store_true",
        help="A/A run: the 'on' broker is started and restarted the same way, without the "
        "authorizer (how much the two brokers differ by themselves)",
    )
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="authz-bench-") as tmp:
        authorizer = {
            "authorizer.class.name": "pystream.security.AclAuthorizer",
            "super.users": "User:ANONYMOUS",
        }
        on = Broker(Path(tmp) / "on", {} if ns.control else authorizer).start()
        off = Broker(Path(tmp) / "off", {}).start()
        try:
            if not ns.control:
                admin = AdminClient({"bootstrap.servers": on.bootstrap})
                for future in admin.create_acls(acls(ns.acls)).values():
                    future.result(60)
            on.stop()
            on.overrides["super.users"] = ""
            on.start()
            # The same history for both (a restarted broker measured slower than a fresh one
            # in an A/A run): restart the one without the authorizer too.
            off.stop()
            off.start()
            rates: dict[str, list[float]] = {"on": [], "off": []}
            for i in range(ns.runs):
                order = [("on", on), ("off", off)] if i % 2 == 0 else [("off", off), ("on", on)]
                got = run_e2e([b.bootstrap for _, b in order], ns.records, Path(tmp) / "r.json")
                for label, broker in order:
                    rates[label].append(got[broker.bootstrap])
                print(
                    f"run {i + 1}: "
                    + ", ".join(f"{k} {v[-1]:,.0f} rec/s" for k, v in rates.items())
                )
        finally:
            on.stop()
            off.stop()
    median = {k: statistics.median(v) for k, v in rates.items()}
    for label, values in rates.items():
        print(
            f"authorizer {label:>3}: median {median[label]:,.0f} rec/s "
            f"(range {min(values):,.0f} .. {max(values):,.0f}) over {len(values)} runs"
        )
    print(f"on/off: {median['on'] / median['off']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
