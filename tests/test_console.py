"""The web console in a real headless browser (Debian's chromium through Selenium) against
a real broker: ``pystream serve`` with ``console.enable=true`` for the module, and a
``pystream console`` process pointed at a port nothing listens on until a second broker
starts there.  Every page is loaded and checked; topics are created, grown, reconfigured
and deleted through the forms; records produced through the form are found in the
browser and by confluent-kafka; a group's lag is seen and seen to drop; an Empty group's
offsets are reset.  Each page's screenshot is saved (the directory is printed)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from broker_process import BrokerProcess
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka import Producer as CKProducer
from confluent_kafka import TopicPartition as CKTopicPartition
from confluent_kafka.admin import AdminClient as CKAdmin
from confluent_kafka.admin import ConfigResource
from console_helpers import (
    CONSOLE_LINE,
    ConsoleProcess,
    artifacts_dir,
    chromium,
    full_page_screenshot,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select
from waiting import wait_until

from pystream.console.live_metrics import quantile

pytestmark = pytest.mark.timeout(240)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker serving the console in its process (console.enable), on free ports."""
    process = BrokerProcess(
        tmp_path_factory.mktemp("console-broker"),
        {"console.enable": "true", "console.port": "0", "group.initial.rebalance.delay.ms": "0"},
    ).start()
    yield process
    # The console stops first, then the broker: cleanly, without a traceback on the way.
    assert process.stop() == 0
    assert "Traceback" not in process.output(), process.output()


@pytest.fixture(scope="module")
def url(broker: BrokerProcess) -> str:
    match = CONSOLE_LINE.search(broker.output())
    assert match, f"pystream serve did not print the console's URL:\n{broker.output()}"
    return match.group(1)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = artifacts_dir(tmp_path_factory.mktemp("console-screenshots"))
    print(f"\nconsole screenshots: {directory}")
    return directory


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def admin(broker: BrokerProcess) -> CKAdmin:
    return CKAdmin({"bootstrap.servers": broker.bootstrap})


def _open(browser: WebDriver, address: str, shots: Path | None = None, name: str = "") -> str:
    """Load a page; its text (and its screenshot as ``name``.png)."""
    browser.get(address)
    wait_until(
        lambda: browser.execute_script("return document.readyState") == "complete",
        30,
        f"{address} to load",
    )
    if shots is not None and name:
        full_page_screenshot(browser, shots / f"{name}.png")
    return str(browser.find_element(By.TAG_NAME, "body").text)


def _flash(browser: WebDriver) -> str:
    return str(wait_until(lambda: browser.find_elements(By.CLASS_NAME, "flash"), 30)[0].text)


def _fill(browser: WebDriver, form_id: str, values: dict[str, str], button: str = "") -> None:
    """Fill a form's fields by name and submit it (with the named button, if given)."""
    form = browser.find_element(By.ID, form_id)
    for name, value in values.items():
        field = form.find_element(By.NAME, name)
        if field.tag_name == "select":
            Select(field).select_by_visible_text(value)
        else:
            field.clear()
            field.send_keys(value)
    submit = (
        form.find_element(By.CSS_SELECTOR, f"button[name='{button}']")
        if button
        else form.find_element(By.CSS_SELECTOR, "button[type='submit']")
    )
    old = browser.find_element(By.TAG_NAME, "html")
    submit.click()
    wait_until(lambda: _stale(old), 30, f"{form_id} to be submitted")


def _stale(element: object) -> bool:
    try:
        element.tag_name  # type: ignore[attr-defined]  # noqa: B018
    except Exception:
        return True
    return False


def _offsets(browser: WebDriver) -> list[str]:
    """The offsets of the records the message browser shows, top to bottom."""
    rows = browser.find_elements(By.CSS_SELECTOR, "#records tbody tr[data-offset]")
    return [str(r.get_attribute("data-offset")) for r in rows]


def _points(browser: WebDriver, chart: str) -> int:
    """How many points a live chart has drawn (console.js counts them)."""
    return int(browser.find_element(By.ID, chart).get_attribute("data-points") or 0)


def _produce(bootstrap: str, topic: str, records: list[dict[str, object]]) -> None:
    producer = CKProducer({"bootstrap.servers": bootstrap})
    for record in records:
        producer.produce(topic, **record)
    assert producer.flush(30) == 0


def _create(admin: CKAdmin, topic: str, partitions: int = 1) -> None:
    from confluent_kafka.admin import NewTopic

    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)


def test_every_page_loads(
    browser: WebDriver, url: str, broker: BrokerProcess, shots: Path, admin: CKAdmin
) -> None:
    """``pystream serve`` with console.enable serves it; each page shows what it is for."""
    topic = f"load-{uuid.uuid4().hex[:6]}"
    _create(admin, topic, 2)
    group = f"team/{topic} g"  # a "/" and a space: the URLs must carry them
    _produce(broker.bootstrap, topic, [{"value": b"x", "partition": 0}])
    consumer = CKConsumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
    )
    consumer.assign([CKTopicPartition(topic, 0, 0)])
    consumer.commit(offsets=[CKTopicPartition(topic, 0, 0)], asynchronous=False)
    consumer.close()

    overview = _open(browser, url + "/", shots, "overview")
    cluster_id = admin.list_topics(timeout=30).cluster_id
    assert cluster_id and cluster_id in overview
    brokers = browser.find_element(By.ID, "brokers").text
    assert f"127.0.0.1:{broker.port}" in brokers and "yes" in brokers  # the controller

    topics = _open(browser, url + "/topics", shots, "topics")
    assert topic in topics and "__consumer_offsets" in topics

    page = _open(browser, f"{url}/topics/{topic}", shots, "topic")
    rows = browser.find_elements(By.CSS_SELECTOR, "#partitions tbody tr")
    assert len(rows) == 2 and "retention.ms" in page
    assert rows[0].text.split()[:2] == ["0", "0"]  # partition 0, leader broker 0

    messages = _open(browser, f"{url}/topics/{topic}/messages", shots, "messages")
    assert "newest first" in messages

    groups = _open(browser, url + "/groups", shots, "groups")
    assert group in groups and "Empty" in groups
    browser.find_element(By.LINK_TEXT, group).click()
    wait_until(lambda: group in browser.find_element(By.TAG_NAME, "h1").text, 30, "its page")

    detail = _open(browser, f"{url}/groups/{quote(group, safe='')}", shots, "group")
    assert "Empty" in detail and topic in detail

    for missing, error in (
        ("/topics/no-such-topic", "UNKNOWN_TOPIC_OR_PARTITION"),
        ("/groups/no-such-group", "GROUP_ID_NOT_FOUND"),
    ):
        response = httpx.get(url + missing, timeout=30)
        assert response.status_code == 404 and error in response.text, missing

    live = _open(browser, url + "/metrics", shots, "metrics")
    assert "/metrics" in live and "Throughput" in live
    # The charts are drawn from the scrapes (two make the first rate).
    wait_until(
        lambda: _points(browser, "chart-throughput") >= 1,
        30,
        "the throughput chart's first point",
    )
    full_page_screenshot(browser, shots / "metrics-chart.png")


def test_topic_forms_create_grow_configure_delete(
    browser: WebDriver, url: str, shots: Path, admin: CKAdmin
) -> None:
    topic = f"form-{uuid.uuid4().hex[:6]}"
    _open(browser, url + "/topics")
    _fill(browser, "create-topic", {"name": topic, "partitions": "x"})
    assert "partitions must be a whole number, got 'x'" in _flash(browser)
    _fill(browser, "create-topic", {"name": "bad name!", "partitions": "1"})
    assert "INVALID_TOPIC_EXCEPTION" in _flash(browser) and "illegal" in _flash(browser)

    _fill(
        browser,
        "create-topic",
        {"name": topic, "partitions": "2", "configs": "cleanup.policy=compact"},
    )
    assert f"Created topic {topic} with 2 partition(s)." in _flash(browser)
    full_page_screenshot(browser, shots / "topic-created.png")
    described = admin.list_topics(topic, timeout=30).topics[topic]
    assert len(described.partitions) == 2
    assert topic in _open(browser, url + "/topics")

    _open(browser, f"{url}/topics/{topic}")
    _fill(browser, "add-partitions", {"total": "4"})
    assert f"Topic {topic} now has 4 partitions." in _flash(browser)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#partitions tbody tr")) == 4
    assert len(admin.list_topics(topic, timeout=30).topics[topic].partitions) == 4

    _fill(browser, "alter-config", {"key": "retention.ms", "value": "3600000"}, "set")
    assert "Set retention.ms=3600000." in _flash(browser)
    resource = ConfigResource("topic", topic)
    configs = admin.describe_configs([resource])[resource].result(30)
    assert configs["retention.ms"].value == "3600000"
    assert configs["cleanup.policy"].value == "compact"
    _fill(browser, "alter-config", {"key": "no.such.config", "value": "1"}, "set")
    assert "INVALID_CONFIG" in _flash(browser) and "no.such.config" in _flash(browser)
    full_page_screenshot(browser, shots / "topic-config-error.png")

    _fill(browser, "delete-topic", {"confirm": "not-it"})
    assert "type the topic's name" in _flash(browser)
    _fill(browser, "delete-topic", {"confirm": topic})
    assert f"Deleted topic {topic}." in _flash(browser)
    wait_until(lambda: topic not in admin.list_topics(timeout=30).topics, 30, "the deletion")
    assert topic not in browser.find_element(By.ID, "topics").text


def test_produce_through_the_form_and_browse(
    browser: WebDriver, url: str, broker: BrokerProcess, shots: Path, admin: CKAdmin
) -> None:
    topic = f"msg-{uuid.uuid4().hex[:6]}"
    _create(admin, topic, 2)
    _open(browser, f"{url}/topics/{topic}/messages")
    value = '{"order": 42, "item": "<b>tea</b>"}'
    _fill(
        browser,
        "produce",
        {"partition": "1", "key": "order-42", "value": value, "headers": "source=console"},
    )
    assert f"Produced a record to {topic}-1 at offset 0." in _flash(browser)
    row = browser.find_element(By.CSS_SELECTOR, "#records tbody tr[data-offset='0']")
    assert "order-42" in row.text and '"item": "<b>tea</b>"'.replace(" ", "") in row.text.replace(
        " ", ""
    )
    assert "source" in row.text and "console" in row.text

    consumer = CKConsumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"check-{topic}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([CKTopicPartition(topic, 1, 0)])
    record = wait_until(lambda: consumer.poll(0.5), 30, "the produced record")
    consumer.close()
    assert record.error() is None
    assert (record.key(), record.value()) == (b"order-42", value.encode())
    assert record.headers() == [("source", b"console")]

    # Pretty JSON, hex, and binary data that is neither UTF-8 nor safe HTML.
    _produce(
        broker.bootstrap,
        topic,
        [{"key": b"bin", "value": b"\xff\x00<script>x</script>", "partition": 1}]
        + [{"key": f"k{i}".encode(), "value": f"v{i}".encode(), "partition": 1} for i in range(10)],
    )
    page = _open(
        browser, f"{url}/topics/{topic}/messages?partition=1&format=json", shots, "messages-json"
    )
    assert '"order": 42,' in page  # pretty-printed
    assert _offsets(browser)[0] == "11"  # newest first
    binary = browser.find_element(By.CSS_SELECTOR, "#records tbody tr[data-offset='1']")
    assert "ff 00 3c 73 63" in binary.text and "value is not UTF-8: shown as hex" in binary.text
    assert not browser.find_elements(By.XPATH, "//td/script")  # escaped, not injected

    hexed = _open(browser, f"{url}/topics/{topic}/messages?partition=1&format=hex")
    assert "6f 72 64 65 72 2d 34 32" in hexed  # "order-42"

    # Key search over a bounded window, which the page names.
    found = _open(
        browser, f"{url}/topics/{topic}/messages?partition=1&key=k1", shots, "messages-search"
    )
    assert "Searched offsets 0–11" in found
    offsets = _offsets(browser)
    assert offsets == ["3"]  # "k1" is the key of offset 3 only (k10 does not exist)

    # From an offset: oldest first from there.
    _open(browser, f"{url}/topics/{topic}/messages?partition=1&offset=5&limit=3")
    offsets = _offsets(browser)
    assert offsets == ["5", "6", "7"]


def test_browse_from_a_timestamp(
    browser: WebDriver, url: str, broker: BrokerProcess, admin: CKAdmin
) -> None:
    topic = f"ts-{uuid.uuid4().hex[:6]}"
    _create(admin, topic)
    base = 1_700_000_000_000
    _produce(
        broker.bootstrap,
        topic,
        [{"value": f"v{i}".encode(), "timestamp": base + i * 60_000} for i in range(6)],
    )
    _open(browser, f"{url}/topics/{topic}/messages?timestamp={base + 3 * 60_000 - 1}")
    offsets = _offsets(browser)
    assert offsets == ["3", "4", "5"]
    text = _open(browser, f"{url}/topics/{topic}/messages?timestamp=2023-11-14T22:15:00")
    # 2023-11-14T22:13:20Z is the base: 22:15 falls between offsets 1 and 2.
    assert (
        browser.find_elements(By.CSS_SELECTOR, "#records tbody tr")[0].get_attribute("data-offset")
        == "2"
    )
    assert "Showing offsets 2–5" in text
    late = _open(browser, f"{url}/topics/{topic}/messages?timestamp={base + 3_600_000}")
    assert "no record has a timestamp at or after the one given" in late
    bad = _open(browser, f"{url}/topics/{topic}/messages?timestamp=yesterday")
    assert "neither epoch milliseconds nor" in bad
    assert "limit must be at least 1, got -5" in _open(
        browser, f"{url}/topics/{topic}/messages?limit=-5"
    )
    assert "offset must be a whole number, got 'ten'" in _open(
        browser, f"{url}/topics/{topic}/messages?offset=ten"
    )


def test_group_lag_drops_and_reset(
    browser: WebDriver, url: str, broker: BrokerProcess, shots: Path, admin: CKAdmin
) -> None:
    topic = f"lag-{uuid.uuid4().hex[:6]}"
    group = f"billing-{topic}"
    _create(admin, topic)
    _produce(broker.bootstrap, topic, [{"value": f"r{i}".encode()} for i in range(20)])
    consumer = CKConsumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "client.id": "lag-checker",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])

    def consume(n: int) -> None:
        got = 0
        deadline = time.monotonic() + 60
        while got < n and time.monotonic() < deadline:
            for message in consumer.consume(n - got, 0.5):
                assert message.error() is None
                got += 1
        assert got == n
        consumer.commit(asynchronous=False)

    try:
        consume(8)
        page = _open(browser, f"{url}/groups/{group}")
        assert browser.find_element(By.ID, "total-lag").text == "12"
        assert "Stable" in page and "lag-checker" in page
        assert browser.find_element(By.CSS_SELECTOR, "#lags .lag").text == "12"
        full_page_screenshot(browser, shots / "group-lag-12.png")

        # A reset while the group has members is refused, with Kafka's error name.
        _fill(browser, "reset-offsets", {"to": "earliest"})
        flash = _flash(browser)
        assert (
            "UNKNOWN_MEMBER_ID" in flash and "Stable" in flash and "only while it is Empty" in flash
        )

        consume(12)
        # The page's live poll sees the lag drop without a reload, and charts it.
        wait_until(lambda: browser.find_element(By.ID, "total-lag").text == "0", 30, "lag 0")
        assert browser.find_element(By.CSS_SELECTOR, "#lags .lag").text == "0"
        wait_until(
            lambda: _points(browser, "chart-lag") >= 2,
            30,
            "two lag points",
        )
        full_page_screenshot(browser, shots / "group-lag-0.png")
    finally:
        consumer.close()

    # Empty now: reset to the earliest offset through the form.
    wait_until(
        lambda: "Empty" in _open(browser, f"{url}/groups/{group}"), 30, "the group to be Empty"
    )
    _fill(browser, "reset-offsets", {"to": "earliest"})
    assert f"Reset 1 partition(s) of {group} to earliest." in _flash(browser)
    assert browser.find_element(By.ID, "total-lag").text == "20"
    committed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[
        group
    ].result(30)
    assert [(tp.topic, tp.partition, tp.offset) for tp in committed.topic_partitions] == [
        (topic, 0, 0)
    ]
    # And to a timestamp in the future: the log end.
    _fill(browser, "reset-offsets", {"to": "timestamp", "timestamp": "2999-01-01T00:00"})
    assert "to timestamp" in _flash(browser)
    assert browser.find_element(By.ID, "total-lag").text == "0"


def test_live_metrics_show_traffic(
    browser: WebDriver, url: str, broker: BrokerProcess, admin: CKAdmin
) -> None:
    topic = f"rate-{uuid.uuid4().hex[:6]}"
    _create(admin, topic)
    _produce(broker.bootstrap, topic, [{"value": b"x" * 100} for _ in range(50)])

    def api_rows() -> str:
        _open(browser, url + "/metrics")
        return str(browser.find_element(By.ID, "apis").text)

    assert "Produce" in wait_until(lambda: "Produce" in api_rows() and api_rows(), 30, "Produce")
    wait_until(
        lambda: _points(browser, "chart-latency") >= 1,
        30,
        "the latency chart",
    )

    # The topics page's size comes from the same scrapes.
    def size() -> str:
        _open(browser, url + "/topics")
        row = browser.find_element(By.XPATH, f"//table[@id='topics']//tr[td/a[text()='{topic}']]")
        return str(row.find_elements(By.TAG_NAME, "td")[4].text)

    assert wait_until(
        lambda: size() not in ("–", "0 B") and size(), 30, "the topic's size"
    ).endswith(("B", "KiB"))


def test_unreachable_cluster_then_recovery(browser: WebDriver, tmp_path: Path, shots: Path) -> None:
    """``pystream console`` at a port nothing listens on: every page says so with 503;
    once a broker starts there the pages work, and the live charts find its metrics
    through DescribeConfigs (metrics.listener)."""
    port = _free_port()
    console = ConsoleProcess(tmp_path / "console", f"127.0.0.1:{port}").start()
    other = BrokerProcess(
        tmp_path / "broker",
        {
            "listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "metrics.listener": f"http://127.0.0.1:{_free_port()}",
        },
    )
    try:
        for path in ("/", "/topics", "/topics/t", "/topics/t/messages", "/groups", "/groups/g"):
            response = httpx.get(console.url + path, timeout=30)
            assert response.status_code == 503, path
            assert f"cannot reach the cluster at 127.0.0.1:{port}:" in response.text
            assert "Traceback" not in response.text
        text = _open(browser, console.url + "/", shots, "unreachable")
        assert f"cannot reach the cluster at 127.0.0.1:{port}" in text

        other.start()
        wait_until(
            lambda: httpx.get(console.url + "/", timeout=30).status_code == 200, 60, "recovery"
        )
        assert f"127.0.0.1:{port}" in _open(browser, console.url + "/")
        metrics_url = other.metrics_url
        assert metrics_url
        wait_until(
            lambda: (
                metrics_url in httpx.get(console.url + "/api/metrics", timeout=30).json()["sources"]
            ),
            60,
            "the scraper to find the broker's metrics.listener",
        )
    finally:
        assert console.stop() == 0
        other.close()


def test_acls_page_without_an_authorizer_says_so(browser: WebDriver, url: str, shots: Path) -> None:
    """No authorizer.class.name: DescribeAcls answers SECURITY_DISABLED, and the page says
    what to set instead of showing an error; the users page works without one."""
    response = httpx.get(f"{url}/acls", timeout=30)
    assert response.status_code == 200, response.text
    text = _open(browser, f"{url}/acls", shots, "acls-no-authorizer")
    assert "This cluster has no authorizer: set authorizer.class.name=" in text
    assert not browser.find_elements(By.ID, "acls")
    assert not browser.find_elements(By.ID, "add-acl")
    assert "No SCRAM users." in _open(browser, f"{url}/users", shots, "users-none")


def test_a_form_posted_from_another_site_is_refused(url: str, admin: CKAdmin) -> None:
    """A page elsewhere cannot make the browser delete a topic through the console."""
    topic = f"csrf-{uuid.uuid4().hex[:6]}"
    _create(admin, topic)
    response = httpx.post(
        f"{url}/topics/{topic}/delete",
        data={"confirm": topic},
        headers={"Origin": "http://attacker.example"},
        timeout=30,
    )
    assert response.status_code == 403
    assert "Refused a form posted from another site" in response.text
    assert topic in admin.list_topics(timeout=30).topics


def test_latency_quantile_from_histogram_buckets() -> None:
    """As Prometheus' histogram_quantile: linear within the bucket holding the rank."""
    buckets = [(1.0, 50.0), (5.0, 90.0), (10.0, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == 1.0
    assert quantile(0.7, buckets) == 3.0  # rank 70: halfway through (1, 5]
    assert quantile(0.99, buckets) == 9.5
    assert quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None  # no requests
    # Beyond the last finite bound, that bound is all that is known.
    assert quantile(0.99, [(1.0, 10.0), (float("inf"), 100.0)]) == 1.0


def test_serve_says_when_the_console_port_is_taken(tmp_path: Path) -> None:
    """console.port in use: pystream serve stops (broker included) and says which port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = BrokerProcess(tmp_path, {"console.enable": "true", "console.port": str(port)})
        with pytest.raises(RuntimeError) as failed:
            broker.start()
    assert f"the console did not start on 127.0.0.1:{port} (console.port in use?)" in str(
        failed.value
    )
    assert broker.process is not None and broker.process.wait(30) == 1
