"""The console's ACL and user pages against a secured broker, in headless chromium.

One broker for the module: its only listener is SASL_PLAINTEXT (SCRAM), with the ACL
authorizer and ``User:admin`` as its super user; it serves the in-broker console
(``console.enable`` with ``console.config.file``), and a ``pystream console
--command-config`` process logs in as admin too.  Through the pages a user is created and
given Write on a topic, and confluent-kafka logging in as that user is refused
(TOPIC_AUTHORIZATION_FAILED), then allowed, then refused again once the ACL is deleted.
The no-authorizer message is checked on the plain broker of ``test_console.py``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import httpx
import pytest
import test_console
from broker_process import BrokerProcess, free_ports
from cli_helpers import run
from confluent_kafka.admin import AdminClient as CKAdmin
from confluent_kafka.admin import NewTopic
from console_helpers import (
    CONSOLE_LINE,
    ConsoleProcess,
    full_page_screenshot,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from test_console import _fill, _flash, _open, _stale
from waiting import wait_until

pytestmark = pytest.mark.timeout(180)

# This module's chromium and screenshot directory, made as test_console's are.
browser = test_console.browser
shots = test_console.shots

ADMIN_PASSWORD = "admin-Secret-1"
JAAS = (
    "org.apache.kafka.common.security.scram.ScramLoginModule required "
    f'username="admin" password="{ADMIN_PASSWORD}";'
)


@pytest.fixture(scope="module")
def client_properties(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The admin's login as Kafka's tools take it (--command-config)."""
    path = tmp_path_factory.mktemp("console-security") / "client.properties"
    path.write_text(
        f"security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\nsasl.jaas.config={JAAS}\n"
    )
    return path


def _secured_config(port: int) -> dict[str, str]:
    """SASL_PLAINTEXT only (SCRAM), ACLs on, admin the super user and the brokers' login."""
    return {
        "listeners": f"SASL_PLAINTEXT://127.0.0.1:{port}",
        "security.inter.broker.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-256",
        "sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512",
        "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config": JAAS,
        "authorizer.class.name": "pystream.security.AclAuthorizer",
        "super.users": "User:admin",
        "allow.everyone.if.no.acl.found": "false",
        "auto.create.topics.enable": "false",
        "console.enable": "true",
        "console.port": "0",
    }


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, client_properties: Path
) -> Iterator[BrokerProcess]:
    """SASL_PLAINTEXT only, ACLs on, admin the super user; the in-broker console logs in
    with console.config.file."""
    (port,) = free_ports(1)
    process = BrokerProcess(
        tmp_path_factory.mktemp("console-security") / "broker",
        {**_secured_config(port), "console.config.file": str(client_properties)},
    )
    # The bootstrap admin, before the first start (as kafka-storage format --add-scram).
    run(
        "users", "add", "admin", "--password", ADMIN_PASSWORD, "--mechanism", "SCRAM-SHA-256",
        "--log-dirs", str(process.log_dir),
    )  # fmt: skip
    process.start()
    yield process
    assert process.stop() == 0
    assert "Traceback" not in process.output(), process.output()


@pytest.fixture(scope="module")
def console(
    secured: BrokerProcess, client_properties: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleProcess]:
    process = ConsoleProcess(
        tmp_path_factory.mktemp("console-security") / "console",
        secured.bootstrap,
        "--command-config",
        str(client_properties),
    )
    process.start()
    yield process
    assert process.stop() == 0


def _login(bootstrap: str, user: str, password: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "SCRAM-SHA-256",
        "sasl.username": user,
        "sasl.password": password,
    }


def _produce(config: dict[str, Any], topic: str) -> Any:
    """One record from a fresh producer (no metadata cached from an earlier refusal):
    its delivery error, None when delivered."""
    producer = confluent_kafka.Producer({**config, "message.timeout.ms": 15000})
    delivered: list[Any] = []
    producer.produce(topic, b"v", on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(30)
    assert delivered, "no delivery report within 30 s"
    return delivered[0]


def _error_code(error: Any) -> int | None:
    return None if error is None else int(error.code())


def _rows(browser: WebDriver, table: str) -> list[str]:
    return [str(r.text) for r in browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")]


def test_in_broker_console_logs_in_with_console_config_file(secured: BrokerProcess) -> None:
    """console.enable on a broker with no PLAINTEXT listener: console.config.file's SASL
    login reaches the SASL_PLAINTEXT listener, as the super user (ACLs, users readable)."""
    match = CONSOLE_LINE.search(secured.output())
    assert match, secured.output()
    with httpx.Client(base_url=match.group(1), timeout=30) as http:
        overview = http.get("/")
        assert overview.status_code == 200, overview.text
        assert secured.bootstrap in overview.text
        acls = http.get("/acls")
        assert acls.status_code == 200 and 'id="acls"' in acls.text, acls.text
        users = http.get("/users")
        assert users.status_code == 200 and 'data-user="admin"' in users.text, users.text


def test_user_and_acl_made_in_the_pages_govern_a_real_client(
    secured: BrokerProcess, console: ConsoleProcess, browser: WebDriver, shots: Path
) -> None:
    topic = f"payments-{uuid.uuid4().hex[:6]}"
    user, password = f"carol{uuid.uuid4().hex[:4]}", "carol-Pw-" + uuid.uuid4().hex
    admin = CKAdmin(_login(secured.bootstrap, "admin", ADMIN_PASSWORD))
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)

    # A user, made through the form; the page never shows the password.
    _open(browser, console.url + "/users")
    _fill(
        browser,
        "upsert-user",
        {"user": user, "password": password, "password_again": password},
    )
    assert _flash(browser) == f"Set the SCRAM-SHA-256 credential of user {user} (4096 iterations)."
    assert any(r.startswith(f"{user} SCRAM-SHA-256 4096") for r in _rows(browser, "users"))
    _open(browser, console.url + "/users", shots, "users")
    assert password not in browser.page_source and password not in browser.current_url

    carol = _login(secured.bootstrap, user, password)
    # Logged in (a bad login is not TOPIC_AUTHORIZATION_FAILED), but no ACL yet.
    assert (
        _error_code(_produce(carol, topic)) == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED
    )

    _open(browser, console.url + "/acls")
    _fill(
        browser,
        "add-acl",
        {
            "principal": f"User:{user}",
            "operation": "Write",
            "permission_type": "Allow",
            "resource_type": "Topic",
            "pattern_type": "Literal",
            "resource_name": topic,
        },
    )
    assert _flash(browser).startswith(f"Added ACL: Allow User:{user} Write on Topic Literal")
    (row,) = [r for r in _rows(browser, "acls") if f"User:{user}" in r]
    assert row.startswith(f"User:{user} * Write Allow Topic Literal {topic}")
    assert _error_code(_produce(carol, topic)) is None

    # Filtered on the server: by principal, by resource.
    _open(browser, f"{console.url}/acls?principal=User:{user}", shots, "acls")
    assert len(_rows(browser, "acls")) == 1
    _open(browser, f"{console.url}/acls?resource_type=Topic&resource=no-such-topic")
    assert _rows(browser, "acls") == ["No ACLs match this filter."]

    # Deleted with its row's button (confirmed): carol is refused again.
    _open(browser, f"{console.url}/acls?principal=User:{user}")
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, "#acls form.delete-acl button").click()
    alert = wait_until(lambda: _alert(browser), 30, "the delete confirmation")
    assert "Delete this ACL: Allow" in alert.text
    alert.accept()
    wait_until(lambda: _stale(old), 30, "the delete to be posted")
    assert _flash(browser).startswith(f"Deleted ACL: Allow User:{user} Write")
    assert not [r for r in _rows(browser, "acls") if f"User:{user}" in r]
    assert (
        _error_code(_produce(carol, topic)) == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED
    )

    # The user's credential deleted: it is gone from the page.
    _open(browser, console.url + "/users")
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, f"tr[data-user='{user}'] form.delete-user button").click()
    wait_until(lambda: _alert(browser), 30, "the delete confirmation").accept()
    wait_until(lambda: _stale(old), 30, "the delete to be posted")
    assert _flash(browser) == f"Deleted the SCRAM-SHA-256 credential of user {user}."
    assert not browser.find_elements(By.CSS_SELECTOR, f"tr[data-user='{user}']")
    assert password not in console.output() and password not in secured.output()


def test_bad_input_shows_kafkas_error(
    console: ConsoleProcess, browser: WebDriver, shots: Path
) -> None:
    _open(browser, console.url + "/acls")
    _fill(browser, "add-acl", {"principal": "", "resource_name": "t"})
    assert _flash(browser) == ("INVALID_REQUEST: principal '' must be <type>:<name>, e.g. User:bob")
    _open(browser, console.url + "/acls")
    # An operation the form does not offer, as a hand-made post would send it.
    browser.execute_script(
        "document.querySelector('#add-acl select[name=operation]')"
        ".add(new Option('Fly', 'Fly', true, true))"
    )
    _fill(browser, "add-acl", {"principal": "User:x", "resource_name": "t"})
    text = _flash(browser)
    assert text.startswith("INVALID_REQUEST: unknown AclOperation 'Fly'; use one of"), text
    full_page_screenshot(browser, shots / "acls-bad-input.png")

    _open(browser, console.url + "/users")
    secret = "one-" + uuid.uuid4().hex
    _fill(
        browser,
        "upsert-user",
        {"user": "dora", "password": secret, "password_again": secret + "x"},
    )
    assert _flash(browser) == "the two passwords differ: type the same password twice"
    assert secret not in browser.page_source
    _fill(
        browser,
        "upsert-user",
        {"user": "dora", "iterations": "100", "password": "p", "password_again": "p"},
    )
    assert _flash(browser) == "INVALID_REQUEST: iterations must be in 4096..16384, got 100"
    assert 'data-user="dora"' not in browser.page_source


def _alert(browser: WebDriver) -> Any:
    try:
        return browser.switch_to.alert
    except Exception:
        return None


def test_serve_refuses_a_console_it_could_not_connect(tmp_path: Path) -> None:
    """console.enable on a broker without a PLAINTEXT listener and no console.config.file:
    pystream serve refuses before the broker starts, saying what to set."""
    (port,) = free_ports(1)
    broker = BrokerProcess(tmp_path, _secured_config(port))
    with pytest.raises(RuntimeError) as failed:
        broker.start()
    assert (
        "console.enable needs a PLAINTEXT listener for the console to connect to; add one to "
        "listeners, or set console.config.file" in " ".join(str(failed.value).split())
    ), failed.value
    assert broker.process is not None and broker.process.wait(30) == 1
    assert "listening on" not in broker.output()
