"""The pytest plugin (entry point ``pytest11``: ``pystream``): real brokers as fixtures.

Fixtures: ``kafka_broker`` (a :class:`~pystream.testing.broker.KafkaBroker`),
``kafka_topic`` (a fresh topic's name per test), ``kafka_cluster`` (a factory:
``kafka_cluster(3)`` -> a :class:`~pystream.testing.cluster.KafkaCluster`) and
``kafka_bench`` (with pytest-benchmark).  Settings come from ini options
(``pystream_mode``, ``pystream_scope``, ``pystream_config``, ``pystream_start_timeout``)
and, closer to a test, the ``@pytest.mark.pystream(...)`` marker.

pytest imports this module in every session of every project that has pystream
installed, so it imports nothing but pytest at module level: the broker is loaded the
first time a test asks for one, and a session that never does pays nothing.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pystream.testing.bench import KafkaBench
    from pystream.testing.broker import KafkaBroker
    from pystream.testing.cluster import KafkaCluster

MARKER = "pystream"
MODES = ("thread", "process")  # (as pystream.testing.broker.MODES, not imported: see above)
SCOPES = ("session", "module", "function")
MARKER_KEYS = ("config", "mode", "scope", "partitions", "topic_config")
# The brokers and clusters a test used, for its failure report.
_USED: pytest.StashKey[list[Any]] = pytest.StashKey()
_topic_numbers = itertools.count()


@dataclass(frozen=True)
class Settings:
    """What a test's brokers are: ini options, overridden by its ``pystream`` markers."""

    mode: str
    scope: str
    config: tuple[tuple[str, str], ...]
    start_timeout: float
    partitions: int = 1
    topic_config: tuple[tuple[str, str], ...] = ()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "pystream_mode",
        "where kafka_broker runs: thread (in the test process, fast) or process "
        "(pystream serve, for kill())",
        default="thread",
    )
    parser.addini(
        "pystream_scope",
        "how long a kafka_broker/kafka_cluster is shared: session, module or function",
        default="session",
    )
    parser.addini(
        "pystream_config",
        "broker properties for kafka_broker and kafka_cluster, one key=value per line",
        type="linelist",
        default=[],
    )
    parser.addini("pystream_start_timeout", "seconds a broker may take to start", default="30")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pystream(config={...}, mode='thread'|'process', scope='session'|'module'|'function', "
        "partitions=1, topic_config={...}): the kafka_broker/kafka_cluster/kafka_topic "
        "this test uses (pystream's pytest plugin)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing test that used a broker shows the broker's log tail in its report."""
    report = yield
    if report.failed:
        for used in item.stash.get(_USED, ()):
            name = getattr(used, "bootstrap_servers", "") or "not started"
            report.sections.append((f"pystream broker log ({name})", used.log_tail()))
    return report


# --- settings -----------------------------------------------------------------------------
def _pairs(mapping: Mapping[str, Any] | None, what: str) -> tuple[tuple[str, str], ...]:
    if mapping is None:
        return ()
    if not isinstance(mapping, Mapping):
        raise pytest.UsageError(f"pystream marker: {what} must be a dict, not {mapping!r}")
    return tuple((str(k), str(v)) for k, v in mapping.items())


def settings_for(node: pytest.Item, config: pytest.Config) -> Settings:
    """The ini options, then each ``pystream`` marker from the farthest (module, class) to
    the closest (the test): a closer one wins, and ``config`` dicts are merged."""
    broker_config: dict[str, str] = {}
    for line in config.getini("pystream_config"):
        key, sep, value = line.partition("=")
        if not sep:
            raise pytest.UsageError(f"pystream_config: {line!r} is not key=value")
        broker_config[key.strip()] = value.strip()
    values: dict[str, Any] = {
        "mode": config.getini("pystream_mode").strip() or "thread",
        "scope": config.getini("pystream_scope").strip() or "session",
        "partitions": 1,
        "topic_config": {},
    }
    for marker in reversed(list(node.iter_markers(MARKER))):
        unknown = set(marker.kwargs) - set(MARKER_KEYS)
        if unknown or marker.args:
            raise pytest.UsageError(
                f"pystream marker on {node.nodeid}: takes only the keywords "
                f"{', '.join(MARKER_KEYS)} (got {marker.args or sorted(unknown)})"
            )
        broker_config.update(_pairs(marker.kwargs.get("config"), "config"))
        values.update({k: v for k, v in marker.kwargs.items() if k != "config"})
    if values["mode"] not in MODES:
        raise pytest.UsageError(f"pystream mode {values['mode']!r}: use {' or '.join(MODES)}")
    if values["scope"] not in SCOPES:
        raise pytest.UsageError(f"pystream scope {values['scope']!r}: use one of {SCOPES}")
    return Settings(
        mode=values["mode"],
        scope=values["scope"],
        config=tuple(sorted(broker_config.items())),
        start_timeout=float(config.getini("pystream_start_timeout")),
        partitions=int(values["partitions"]),
        topic_config=_pairs(values["topic_config"], "topic_config"),
    )


# --- pools: the brokers of one scope ------------------------------------------------------
class BrokerPool:
    """The brokers and clusters started for one scope (the session, a module or a test),
    one per distinct setting, stopped when the scope ends."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.brokers: dict[tuple[Any, ...], KafkaBroker] = {}
        self.clusters: dict[tuple[Any, ...], KafkaCluster] = {}

    def broker(self, settings: Settings) -> KafkaBroker:
        from pystream.testing.broker import KafkaBroker

        key = (settings.mode, settings.config)
        broker = self.brokers.get(key)
        if broker is None:
            broker = KafkaBroker(
                self.factory.mktemp("pystream-broker"),
                dict(settings.config),
                mode=settings.mode,
                start_timeout=settings.start_timeout,
            )
            self.brokers[key] = broker
        # A broker an earlier test killed (and left down) comes back with its data.
        return broker.start()

    def cluster(self, size: int, settings: Settings) -> KafkaCluster:
        from pystream.testing.cluster import KafkaCluster

        key = (size, settings.config)
        cluster = self.clusters.get(key)
        if cluster is None:
            cluster = KafkaCluster(
                self.factory.mktemp(f"pystream-cluster{size}"),
                size,
                dict(settings.config),
                start_timeout=max(settings.start_timeout, 60.0),
            )
            cluster.start()
            self.clusters[key] = cluster
        for broker in cluster.brokers:  # one an earlier test killed comes back
            broker.start()
        return cluster

    def close(self) -> None:
        for owner in [*self.clusters.values(), *self.brokers.values()]:
            owner.close()
        self.clusters.clear()
        self.brokers.clear()


def _pool_fixture(scope: str) -> Callable[..., Iterator[BrokerPool]]:
    def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerPool]:
        brokers = BrokerPool(tmp_path_factory)
        try:
            yield brokers
        finally:
            brokers.close()

    pool.__doc__ = f"pystream: the brokers shared by one {scope}."
    return pytest.fixture(scope=scope, name=f"_pystream_{scope}_pool")(pool)  # type: ignore[call-overload,no-any-return]


_pystream_session_pool = _pool_fixture("session")
_pystream_module_pool = _pool_fixture("module")
_pystream_function_pool = _pool_fixture("function")


def _pool(request: pytest.FixtureRequest, settings: Settings) -> BrokerPool:
    return request.getfixturevalue(f"_pystream_{settings.scope}_pool")  # type: ignore[no-any-return]


def _used(request: pytest.FixtureRequest, owner: Any) -> None:
    used = request.node.stash.setdefault(_USED, [])
    if owner not in used:
        used.append(owner)


# --- fixtures -----------------------------------------------------------------------------
@pytest.fixture
def kafka_broker(request: pytest.FixtureRequest) -> KafkaBroker:
    """A running pystream broker (shared per ``pystream_scope``, default the session):
    ``bootstrap_servers``, ``create_topic``, ``delete_topic``, ``restart()``, ``kill()``
    (process mode), ``logs``.  Answers Metadata before the test starts."""
    settings = settings_for(request.node, request.config)  # type: ignore[arg-type]
    broker = _pool(request, settings).broker(settings)
    _used(request, broker)
    return broker


@pytest.fixture
def kafka_topic(request: pytest.FixtureRequest, kafka_broker: KafkaBroker) -> Iterator[str]:
    """A topic of its own for this test (``partitions``/``topic_config`` from the marker),
    created before it and deleted after it."""
    settings = settings_for(request.node, request.config)  # type: ignore[arg-type]
    name = topic_name(request.node.nodeid)
    kafka_broker.create_topic(name, settings.partitions, dict(settings.topic_config))
    yield name
    from pystream.errors import KafkaError

    kafka_broker.start()  # (if the test killed it: the topic is still on disk to delete)
    try:
        kafka_broker.delete_topic(name)
    except KafkaError as exc:
        if exc.error_code != 3:  # UNKNOWN_TOPIC_OR_PARTITION: the test deleted it itself
            raise


def topic_name(nodeid: str) -> str:
    """A topic name unique in this session, readable as the test that owns it."""
    legal = re.sub(r"[^A-Za-z0-9._-]+", "-", nodeid).strip("-.")
    return f"{legal[-200:]}-{next(_topic_numbers)}"


@pytest.fixture
def kafka_cluster(request: pytest.FixtureRequest) -> Callable[..., KafkaCluster]:
    """``kafka_cluster(n)``: ZooKeeper and ``n`` pystream brokers (subprocesses), shared
    per ``pystream_scope``.  Skipped when ZooKeeper is not installed."""
    settings = settings_for(request.node, request.config)  # type: ignore[arg-type]

    def start(size: int = 3) -> KafkaCluster:
        from pystream.cli.local_zookeeper import ZooKeeperNotInstalledError
        from pystream.testing.cluster import ZOOKEEPER_MISSING

        try:
            cluster = _pool(request, settings).cluster(size, settings)
        except ZooKeeperNotInstalledError as exc:
            pytest.skip(f"{ZOOKEEPER_MISSING}: {exc}")
        _used(request, cluster)
        return cluster

    return start


@pytest.fixture
def kafka_bench(request: pytest.FixtureRequest, kafka_broker: KafkaBroker) -> KafkaBench:
    """``kafka_bench(client="confluent"|"pystream", records=..., size=...)``: a produce +
    consume workload timed by pytest-benchmark; records/s and MB/s go to ``extra_info``."""
    try:
        benchmark = request.getfixturevalue("benchmark")
    except pytest.FixtureLookupError:
        pytest.skip("kafka_bench needs pytest-benchmark (pip install pytest-benchmark)")
    from pystream.testing.bench import KafkaBench

    return KafkaBench(benchmark, kafka_broker)
