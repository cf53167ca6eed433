"""Finding Connect plugins: built-ins by short, Kafka and dotted names; a third-party
plugin installed as a real distribution (a ``.dist-info`` with ``entry_points.txt`` on
``sys.path`` of a fresh interpreter), found by entry-point name and by class name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pystream.connect import converters, plugins
from pystream.connect.api import ConfigError

SRC = Path(__file__).resolve().parent.parent / "src"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("StringConverter", converters.StringConverter),
        ("org.apache.kafka.connect.storage.StringConverter", converters.StringConverter),
        ("org.apache.kafka.connect.json.JsonConverter", converters.JsonConverter),
        ("org.apache.kafka.connect.converters.ByteArrayConverter", converters.ByteArrayConverter),
        (
            "org.apache.kafka.connect.storage.SimpleHeaderConverter",
            converters.SimpleHeaderConverter,
        ),
        ("pystream.connect.converters.JsonConverter", converters.JsonConverter),
        ("pystream.connect.converters:JsonConverter", converters.JsonConverter),
        ("  JsonConverter ", converters.JsonConverter),
    ],
)
def test_load_converter_by_any_of_its_names(name, expected):
    assert plugins.load_converter(name) is expected


def test_unknown_name_says_what_exists():
    with pytest.raises(ConfigError) as info:
        plugins.load_converter("AvroConverter")
    message = str(info.value)
    assert "AvroConverter" in message
    assert "JsonConverter" in message and "StringConverter" in message
    with pytest.raises(ConfigError, match="FileStreamSourceConnector"):
        plugins.load_connector("com.example.NoSuchConnector")
    with pytest.raises(ConfigError, match="give a class name"):
        plugins.load_connector("")


def test_a_class_of_the_wrong_kind_is_refused():
    with pytest.raises(ConfigError, match="is not a Connector"):
        plugins.load_connector("pystream.connect.converters.JsonConverter")
    with pytest.raises(ConfigError, match="is not a Converter"):
        plugins.load_converter("pystream.connect.data.Schema")


def test_plugin_infos_shape():
    infos = plugins.plugin_infos("converter")
    classes = [info["class"] for info in infos]
    assert classes == sorted(classes)
    assert {
        "class": "pystream.connect.converters.JsonConverter",
        "type": "converter",
        "version": plugins.__version__,
    } in infos
    assert all(set(info) == {"class", "type", "version"} for info in infos)
    everything = plugins.plugin_infos()
    assert {info["type"] for info in everything} >= {"converter", "transformation", "predicate"}
    with pytest.raises(ValueError, match="unknown plugin kind"):
        plugins.plugin_infos("widget")


def _run(code: str, *paths: Path) -> dict:
    """Run ``code`` in a fresh interpreter with ``paths`` first on sys.path; it prints JSON."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(SRC)])
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


THIRD_PARTY = """
from pystream.connect.api import (
    Converter, Predicate, SchemaAndValue, SourceConnector, SourceTask, Transformation,
)


class AcmeSourceTask(SourceTask):
    def start(self, props): pass
    def stop(self): pass
    def poll(self): return []


class AcmeSourceConnector(SourceConnector):
    def version(self): return "7.1.2"
    def start(self, props): pass
    def task_class(self): return AcmeSourceTask
    def task_configs(self, max_tasks): return [{}]
    def stop(self): pass


class ShoutConverter(Converter):
    def from_connect_data(self, topic, schema, value): return str(value).upper().encode()
    def to_connect_data(self, topic, data): return SchemaAndValue(None, data.decode())


class Upper:
    class Value(Transformation):
        def apply(self, record):
            return record.new_record(value=record.value.upper())


class Always(Predicate):
    def test(self, record): return True
"""

ENTRY_POINTS = """
[pystream.connectors]
acme-source = acme_connect:AcmeSourceConnector

[pystream.converters]
shout = acme_connect:ShoutConverter

[pystream.transforms]
Upper$Value = acme_connect:Upper.Value

[pystream.predicates]
always = acme_connect:Always
"""


@pytest.fixture(scope="module")
def third_party(tmp_path_factory) -> Path:
    """A distribution ``acme-connect`` as pip would lay it out in site-packages."""
    site = tmp_path_factory.mktemp("site")
    (site / "acme_connect").mkdir()
    (site / "acme_connect" / "__init__.py").write_text(THIRD_PARTY)
    info = site / "acme_connect-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-connect\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    # A module that exists but needs a dependency that is not installed.
    (site / "acme_broken.py").write_text("import acme_missing_dependency\n")
    return site


def test_third_party_plugin_found_through_its_entry_points(third_party):
    found = _run(
        """
        import json
        from pystream.connect import plugins
        names = {}
        for name in ("acme-source", "AcmeSourceConnector", "AcmeSource",
                     "acme_connect.AcmeSourceConnector"):
            names[name] = plugins.load_connector(name).__name__
        converter = plugins.load_converter("shout")
        transform = plugins.load_transformation("Upper$Value")
        by_path = plugins.load_transformation("acme_connect.Upper$Value")
        predicate = plugins.load_predicate("always")
        try:
            plugins.load_connector("acme_broken.SomeConnector")
            broken = None
        except plugins.ConfigError as exc:
            broken = str(exc)
        print(json.dumps({
            "connectors": names,
            "converter": converter().from_connect_data("t", None, "hi").decode(),
            "transform": transform.__qualname__,
            "same": transform is by_path,
            "predicate": predicate.__name__,
            "broken": broken,
            "sources": [i for i in plugins.plugin_infos("source")],
            "connectors_listed": [i["class"] for i in plugins.plugin_infos("connector")],
            "transforms": [i["class"] for i in plugins.plugin_infos("transformation")],
        }))
        """,
        third_party,
    )
    assert set(found["connectors"].values()) == {"AcmeSourceConnector"}
    assert found["converter"] == "HI"
    assert found["transform"] == "Upper.Value" and found["same"]
    assert found["predicate"] == "Always"
    # Found but failing to import: said as such, with the cause.
    assert "acme_broken.SomeConnector was found but could not be loaded" in found["broken"]
    assert "acme_missing_dependency" in found["broken"]
    assert {
        "class": "acme_connect.AcmeSourceConnector",
        "type": "source",
        "version": "7.1.2",
    } in found["sources"]
    assert "acme_connect.AcmeSourceConnector" in found["connectors_listed"]
    assert "acme_connect.Upper$Value" in found["transforms"]


def test_without_the_distribution_the_plugin_is_not_found(tmp_path):
    found = _run(
        """
        import json
        from pystream.connect import plugins
        from pystream.connect.api import ConfigError
        try:
            plugins.load_connector("acme-source")
            print(json.dumps({"error": None}))
        except ConfigError as exc:
            print(json.dumps({"error": str(exc)}))
        """,
        tmp_path,
    )
    assert "acme-source" in found["error"]


def test_a_missing_builtin_module_does_not_hide_the_others():
    # The import system refuses a module set to None in sys.modules: a built-in whose
    # module is absent from this install.
    found = _run(
        """
        import json, sys
        sys.modules["pystream.connect.converters"] = None
        from pystream.connect import plugins
        from pystream.connect.api import ConfigError
        try:
            plugins.load_converter("JsonConverter")
            error = None
        except ConfigError as exc:
            error = str(exc)
        print(json.dumps({
            "error": error,
            "transform": plugins.load_transformation("InsertField$Value").__name__,
            "types": sorted({i["type"] for i in plugins.plugin_infos()}),
        }))
        """
    )
    assert "JsonConverter is not available" in found["error"]
    assert "pystream.connect.converters" in found["error"]
    assert found["transform"] == "InsertFieldValue"
    assert "converter" not in found["types"] and "transformation" in found["types"]


def test_pyproject_entry_points_name_the_builtins_of_the_table():
    # An installed pystream is found through these; a source tree through the table.
    import tomllib

    pyproject = tomllib.loads((SRC.parent / "pyproject.toml").read_text())
    kinds = {group: kind for kind, group in plugins.ENTRY_POINT_GROUPS.items()}
    # Connect's groups (pytest11, the test plugin's, is not one of them).
    groups = {
        group: entries
        for group, entries in pyproject["project"]["entry-points"].items()
        if group.startswith("pystream.")
    }
    assert set(groups) == set(kinds)
    listed = set()
    for group, entries in groups.items():
        for name, target in entries.items():
            module, _, attr = target.partition(":")
            builtin = plugins._BY_ALIAS[(kinds[group], name)]
            assert (builtin.module, builtin.attr) == (module, attr), name
            listed.add(builtin)
    assert listed == set(plugins._BUILTINS)


@pytest.mark.parametrize(
    "name",
    [
        "InsertField$Value",
        "org.apache.kafka.connect.transforms.ReplaceField$Key",
        "Cast$Value",
        "ExtractField$Key",
        "HoistField$Value",
        "MaskField$Value",
        "ValueToKey",
        "org.apache.kafka.connect.transforms.RegexRouter",
        "TimestampRouter",
        "Filter",
        "pystream.connect.transforms.insert_field.InsertField$Key",
        "pystream.connect.transforms.insert_field:InsertField.Key",
    ],
)
def test_every_builtin_transform_loads(name):
    cls = plugins.load_transformation(name)
    assert cls.__module__.startswith("pystream.connect.transforms.")
    assert name.rsplit(".", 1)[-1].split("$")[0].split(":")[-1] in cls.__qualname__


def test_transform_listing_matches_kafkas_names():
    classes = {info["class"] for info in plugins.plugin_infos("transformation")}
    assert "pystream.connect.transforms.insert_field.InsertField$Value" in classes
    assert "pystream.connect.transforms.routers.RegexRouter" in classes
    predicates = {info["class"] for info in plugins.plugin_infos("predicate")}
    assert predicates == {
        "pystream.connect.transforms.predicates.HasHeaderKey",
        "pystream.connect.transforms.predicates.RecordIsTombstone",
        "pystream.connect.transforms.predicates.TopicNameMatches",
    }
    # Every listed class name loads back to a class.
    for info in plugins.plugin_infos("transformation"):
        assert plugins.load_transformation(info["class"])


def test_docs_list_every_builtin_and_its_settings():
    """docs/connect-plugins.md stays current: each converter, transform and predicate and
    each of its settings is named there."""
    docs = (SRC.parent / "docs" / "connect-plugins.md").read_text()
    for builtin in plugins._BUILTINS:
        if builtin.kind == "connector":
            continue  # connectors are the runtime's and the connectors' pages
        short = builtin.attr.split(".")[0]
        assert f"`{short}`" in docs, short
        cls = plugins._import_path(builtin.class_name)
        for key in cls().config().keys:
            assert f"`{key}`" in docs, f"{short}: {key}"
