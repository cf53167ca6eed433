#!/usr/bin/env python3
"""Take the console screenshots in ``docs/`` (``docs/console.md`` shows them).

    python scripts/console_screenshots.py [--out docs]

Starts a broker with ``console.enable=true`` (tests/broker_process.py), some traffic
(a producer thread, a consumer group that falls behind and then catches up), and drives
the console in headless chromium (tests/console_helpers.py), as tests/test_console.py
does: the overview with its throughput chart, a group's lag chart dropping, and the
live metrics page.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from broker_process import BrokerProcess  # noqa: E402
from confluent_kafka import (  # noqa: E402
    Consumer,
    ConsumerGroupTopicPartitions,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from console_helpers import CONSOLE_LINE, chromium, full_page_screenshot  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from waiting import wait_until  # noqa: E402


def _traffic(bootstrap: str, stop: threading.Event) -> None:
    """About 500 orders a second until ``stop``."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    n = 0
    while not stop.is_set():
        for _ in range(50):
            n += 1
            producer.produce("orders", key=f"customer-{n % 40}", value=f'{{"order": {n}}}')
        producer.poll(0)
        time.sleep(0.1)
    producer.flush(30)


def _points(browser: object, chart: str) -> int:
    element = browser.find_element(By.ID, chart)  # type: ignore[attr-defined]
    return int(element.get_attribute("data-points") or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        broker = BrokerProcess(
            Path(scratch),
            {
                "console.enable": "true",
                "console.port": "0",
                "group.initial.rebalance.delay.ms": "0",
            },
        ).start()
        stop = threading.Event()
        browser = chromium(1280, 800)
        try:
            url = CONSOLE_LINE.search(broker.output()).group(1)  # type: ignore[union-attr]
            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            for topic, partitions in (("orders", 3), ("payments", 2), ("audit-log", 1)):
                admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
            traffic = threading.Thread(target=_traffic, args=(broker.bootstrap, stop))
            traffic.start()

            browser.get(url + "/")
            wait_until(lambda: _points(browser, "chart-throughput") >= 8, 60, "8 points")
            full_page_screenshot(browser, out / "console-overview.png")
            print(out / "console-overview.png")

            # A group that starts at the log start (every partition committed, so all of its
            # lag counts from the first point) and catches up slowly.
            stop.set()
            traffic.join()
            start = [TopicPartition("orders", p, 0) for p in range(3)]
            admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions("billing", start)])[
                "billing"
            ].result(30)
            consumer = Consumer(
                {
                    "bootstrap.servers": broker.bootstrap,
                    "group.id": "billing",
                    "client.id": "billing-1",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                }
            )
            consumer.subscribe(["orders"])
            wait_until(lambda: consumer.consume(100, 1.0), 30, "the first records")
            consumer.commit(asynchronous=False)
            browser.get(url + "/groups/billing")
            deadline = time.monotonic() + 16
            while time.monotonic() < deadline:
                if consumer.consume(250, 0.5):
                    consumer.commit(asynchronous=False)
                time.sleep(0.5)
            while consumer.consume(1000, 1.0):
                consumer.commit(asynchronous=False)
            wait_until(lambda: browser.find_element(By.ID, "total-lag").text == "0", 30, "lag 0")
            time.sleep(2.5)  # one more point on the chart, at zero
            full_page_screenshot(browser, out / "console-group-lag.png")
            print(out / "console-group-lag.png")
            consumer.close()
        finally:
            stop.set()
            browser.quit()
            broker.stop()


if __name__ == "__main__":
    main()
