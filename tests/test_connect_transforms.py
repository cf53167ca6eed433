"""Single message transforms, predicates and the chain from ``transforms=``/``predicates=``.

Each SMT is checked on Kafka's documented examples, schemaless (dicts) and with a schema
(struct schema + dict, the schema rebuilt when fields change), and bad settings give a
ConfigError naming the key.  Transforms are pure functions: in-process tests are right;
the chain through a real worker is the runtime's end-to-end test.
"""

from __future__ import annotations

import datetime as dt

import pytest

from pystream.connect.api import ConfigError, ConnectError, Header, SinkRecord, SourceRecord
from pystream.connect.data import Schema, timestamp_schema
from pystream.connect.plugins import load_predicate, load_transformation
from pystream.connect.transforms import TransformationChain

TS = 1_483_228_800_123  # 2017-01-01T00:00:00.123Z

STRING = Schema("string")
INT32 = Schema("int32")
INT64 = Schema("int64")
PERSON = Schema.struct(
    [("name", STRING), ("age", INT32), ("ssn", Schema("string", optional=True))],
    name="com.example.Person",
)


def record(value, schema=None, *, key=None, key_schema=None, topic="people", headers=()):
    return SinkRecord(topic, 3, key_schema, key, schema, value, TS, tuple(headers), kafka_offset=42)


def transform(name: str, **configs: str):
    instance = load_transformation(name)()
    instance.configure(configs)
    return instance


# -- InsertField ----------------------------------------------------------------------


def test_insert_field_schemaless_kafka_example():
    # Kafka's docs: add a static field and the record's metadata to a map value.
    smt = transform(
        "org.apache.kafka.connect.transforms.InsertField$Value",
        **{
            "static.field": "data_source",
            "static.value": "test-file-source",
            "topic.field": "topic",
            "partition.field": "partition",
            "offset.field": "offset",
            "timestamp.field": "ts",
        },
    )
    out = smt.apply(record({"line": "hello"}))
    assert out.value == {
        "line": "hello",
        "topic": "people",
        "partition": 3,
        "offset": 42,
        "ts": TS,
        "data_source": "test-file-source",
    }
    assert out.value_schema is None and out.key is None


def test_insert_field_with_schema_rebuilds_the_schema():
    smt = transform(
        "InsertField$Value",
        **{"topic.field": "topic!", "timestamp.field": "ts?", "static.field": "src"},
        **{"static.value": "db"},
    )
    out = smt.apply(record({"name": "ann", "age": 7, "ssn": None}, PERSON))
    schema = out.value_schema
    assert [f.name for f in schema.fields] == ["name", "age", "ssn", "topic", "ts", "src"]
    assert schema.field("topic").schema == Schema("string", optional=False)
    assert schema.field("ts").schema == timestamp_schema(optional=True)
    assert schema.field("src").schema == Schema("string", optional=True)
    assert schema.name == "com.example.Person"  # name, version… carried over
    assert out.value["topic"] == "people"
    assert out.value["ts"] == dt.datetime(2017, 1, 1, 0, 0, 0, 123000, tzinfo=dt.UTC)
    assert out.value["name"] == "ann"
    # The same input schema gives the same (cached) output schema.
    again = smt.apply(record({"name": "bo", "age": 8, "ssn": "x"}, PERSON))
    assert again.value_schema is schema


def test_insert_field_key_tombstone_and_errors():
    smt = transform("InsertField$Key", **{"topic.field": "t"})
    out = smt.apply(record("v", STRING, key={"id": 1}))
    assert out.key == {"id": 1, "t": "people"} and out.value == "v"
    tombstone = record(None)
    assert transform("InsertField$Value", **{"topic.field": "t"}).apply(tombstone) is tombstone
    with pytest.raises(ConnectError, match="Only Map objects supported"):
        transform("InsertField$Value", **{"topic.field": "t"}).apply(record("plain string"))
    source = SourceRecord("t", None, None, None, None, {"a": 1})
    with pytest.raises(ConnectError, match="Only SinkRecord supported"):
        transform("InsertField$Value", **{"offset.field": "o"}).apply(source)
    with pytest.raises(ConfigError, match="No field insertion configured"):
        transform("InsertField$Value")
    with pytest.raises(ConfigError, match="static.value"):
        transform("InsertField$Value", **{"static.field": "s"})
    with pytest.raises(ConfigError, match=r"InsertField\$Key or InsertField\$Value"):
        load_transformation("InsertField$Value").__mro__[1]().configure({"topic.field": "t"})


# -- ReplaceField ---------------------------------------------------------------------


def test_replace_field_schemaless():
    value = {"dont": "whatever", "abc": 42, "foo": True, "etc": "etc"}
    out = transform("ReplaceField$Value", exclude="dont", renames="abc:xyz,foo:bar").apply(
        record(value)
    )
    assert out.value == {"xyz": 42, "bar": True, "etc": "etc"}
    kept = transform("ReplaceField$Value", include="abc,foo").apply(record(value))
    assert kept.value == {"abc": 42, "foo": True}
    # The old names still work.
    old = transform("ReplaceField$Value", blacklist="dont,etc", whitelist="").apply(record(value))
    assert old.value == {"abc": 42, "foo": True}


def test_replace_field_with_schema():
    out = transform("ReplaceField$Value", exclude="ssn", renames="name:full_name").apply(
        record({"name": "ann", "age": 7, "ssn": "123"}, PERSON)
    )
    assert out.value == {"full_name": "ann", "age": 7}
    assert [(f.name, f.schema) for f in out.value_schema.fields] == [
        ("full_name", STRING),
        ("age", INT32),
    ]
    assert out.value_schema.name == "com.example.Person"


def test_replace_field_bad_renames_names_the_key():
    with pytest.raises(ConfigError, match="renames.*abc"):
        transform("ReplaceField$Value", renames="abc")


# -- MaskField ------------------------------------------------------------------------


def test_mask_field():
    value = {"name": "ann", "age": 7, "ok": True, "tags": ["a"], "score": 1.5}
    out = transform("MaskField$Value", fields="name,age,ok,tags,score").apply(record(value))
    assert out.value == {"name": "", "age": 0, "ok": False, "tags": [], "score": 0.0}
    with_schema = transform("MaskField$Value", fields="ssn,age", replacement="0000").apply(
        record({"name": "ann", "age": 7, "ssn": "123-45"}, PERSON)
    )
    assert with_schema.value == {"name": "ann", "age": 0, "ssn": "0000"}
    assert with_schema.value_schema == PERSON
    with pytest.raises(ConnectError, match="Unable to convert 'x' to number"):
        transform("MaskField$Value", fields="age", replacement="x").apply(record({"age": 1}))
    with pytest.raises(ConnectError, match="Cannot mask value of type list with custom"):
        transform("MaskField$Value", fields="t", replacement="x").apply(record({"t": [1]}))
    with pytest.raises(ConfigError, match='"fields"'):
        transform("MaskField$Value")


# -- ValueToKey, ExtractField, HoistField ---------------------------------------------


def test_value_to_key():
    smt = transform("org.apache.kafka.connect.transforms.ValueToKey", fields="name,age")
    out = smt.apply(record({"name": "ann", "age": 7, "ssn": None}))
    assert out.key == {"name": "ann", "age": 7} and out.key_schema is None
    out = smt.apply(record({"name": "ann", "age": 7, "ssn": None}, PERSON))
    assert out.key == {"name": "ann", "age": 7}
    assert out.key_schema == Schema.struct([("name", STRING), ("age", INT32)])
    with pytest.raises(ConnectError, match="Field does not exist: nope"):
        transform("ValueToKey", fields="nope").apply(
            record({"name": "a"}, Schema.struct([("name", STRING)]))
        )
    with pytest.raises(ConnectError, match="Only Map objects supported"):
        smt.apply(record(None))
    with pytest.raises(ConfigError, match="fields"):
        transform("ValueToKey", fields="")


def test_extract_field():
    smt = transform("ExtractField$Key", field="id")
    out = smt.apply(record("v", key={"id": 5, "x": 1}))
    assert out.key == 5 and out.key_schema is None
    key_schema = Schema.struct([("id", INT64), ("x", INT32)])
    out = smt.apply(record("v", key={"id": 5, "x": 1}, key_schema=key_schema))
    assert out.key == 5 and out.key_schema == INT64
    assert transform("ExtractField$Value", field="a").apply(record(None)).value is None
    with pytest.raises(ConnectError, match="Field does not exist: nope"):
        transform("ExtractField$Value", field="nope").apply(record({"name": "a"}, PERSON))
    with pytest.raises(ConfigError, match='"field"'):
        transform("ExtractField$Value")


def test_hoist_field():
    out = transform("HoistField$Value", field="line").apply(record("hello"))
    assert out.value == {"line": "hello"} and out.value_schema is None
    out = transform("HoistField$Key", field="k").apply(record("v", key=42, key_schema=INT64))
    assert out.key == {"k": 42} and out.key_schema == Schema.struct([("k", INT64)])


# -- Cast -----------------------------------------------------------------------------


def test_cast_fields_schemaless_and_with_schema():
    smt = transform("Cast$Value", spec="age:string,name:boolean,ssn:int8")
    out = smt.apply(record({"name": "TRUE", "age": 7, "ssn": "12", "other": 1}))
    assert out.value == {"name": True, "age": "7", "ssn": 12, "other": 1}
    out = smt.apply(record({"name": "no", "age": 7, "ssn": None}, PERSON))
    assert out.value == {"name": False, "age": "7", "ssn": None}
    assert [(f.name, f.schema) for f in out.value_schema.fields] == [
        ("name", Schema("boolean")),
        ("age", STRING),
        ("ssn", Schema("int8", optional=True)),
    ]


def test_cast_whole_value_and_java_narrowing():
    assert transform("Cast$Value", spec="int8").apply(record(300, INT32)).value == 44
    assert transform("Cast$Value", spec="int32").apply(record(-3.9)).value == -3
    assert transform("Cast$Value", spec="float64").apply(record("2.5")).value == 2.5
    out = transform("Cast$Value", spec="string").apply(record(b"\x00\x01", Schema("bytes")))
    assert out.value == "AAE=" and out.value_schema == STRING
    assert transform("Cast$Key", spec="int64").apply(record("v", key=True)).key == 1
    # Kafka's date formats for logical values cast to string.
    when = dt.datetime(2017, 1, 1, 0, 0, 0, 123000, tzinfo=dt.UTC)
    out = transform("Cast$Value", spec="string").apply(record(when, timestamp_schema()))
    assert out.value == "2017-01-01T00:00:00.123Z"
    with pytest.raises(ConnectError, match="out of range"):
        transform("Cast$Value", spec="int8").apply(record("300"))
    with pytest.raises(ConnectError, match="does not support casting from STRUCT"):
        transform("Cast$Value", spec="int8").apply(record({"name": "a"}, PERSON))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("age:uint8", "Invalid type found in casting spec: 'uint8'"),
        ("int8,age:int16", "only specify a single cast"),
        ("", "spec"),
    ],
)
def test_cast_bad_spec(spec, message):
    with pytest.raises(ConfigError, match=message):
        transform("Cast$Value", spec=spec)


# -- RegexRouter, TimestampRouter -------------------------------------------------------


@pytest.mark.parametrize(
    ("regex", "replacement", "topic", "expected"),
    [
        # Kafka's RegexRouterTest cases.
        ("(.*)", "prefix-$1", "orig", "prefix-orig"),
        ("(.*)", "$1-suffix", "orig", "orig-suffix"),
        ("(.*)-(.*)-(.*)", "$1-$3", "orig-foo-bar", "orig-bar"),
        ("a(.*)", "$1", "b", "b"),  # no whole match: unchanged
        ("(?<name>x.*)", "${name}!", "xyz", "xyz!"),
        ("(.*)", "\\$1 is $1", "t", "$1 is t"),
        ("(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)", "$11-$12", "abcdefghijk", "k-a2"),
    ],
)
def test_regex_router(regex, replacement, topic, expected):
    smt = transform("RegexRouter", regex=regex, replacement=replacement)
    assert smt.apply(record("v", topic=topic)).topic == expected


def test_regex_router_bad_config():
    with pytest.raises(ConfigError, match="regex"):
        transform("RegexRouter", regex="(", replacement="x")
    with pytest.raises(ConfigError, match="replacement.*No group 2"):
        transform("RegexRouter", regex="(a)", replacement="$2")
    with pytest.raises(ConfigError, match='"replacement"'):
        transform("RegexRouter", regex="a")


def test_timestamp_router():
    smt = transform("org.apache.kafka.connect.transforms.TimestampRouter")
    assert smt.apply(record("v", topic="test")).topic == "test-20170101"
    custom = transform(
        "TimestampRouter",
        **{
            "topic.format": "${timestamp}.${topic}",
            "timestamp.format": "yy-M-d'T'HH:mm:ss.SSS EEE MMM",
        },
    )
    late = SinkRecord("t", 0, None, None, None, "v", 1_700_000_000_007)  # 2023-11-14 22:13:20Z
    assert custom.apply(late).topic == "23-11-14T22:13:20.007 Tue Nov.t"
    with pytest.raises(ConnectError, match="Timestamp missing"):
        smt.apply(SinkRecord("t", 0, None, None, None, "v", None))
    with pytest.raises(ConfigError, match="timestamp.format.*'Q'"):
        transform("TimestampRouter", **{"timestamp.format": "yyyyQ"})


# -- predicates -----------------------------------------------------------------------


def test_predicates():
    topic_matches = load_predicate("TopicNameMatches")()
    topic_matches.configure({"pattern": "peo.*"})
    assert topic_matches.test(record("v", topic="people"))
    assert not topic_matches.test(record("v", topic="a-people"))  # whole-name match
    has_header = load_predicate("org.apache.kafka.connect.transforms.predicates.HasHeaderKey")()
    has_header.configure({"name": "trace"})
    assert has_header.test(record("v", headers=[Header("trace", b"1")]))
    assert not has_header.test(record("v", headers=[Header("other", b"1")]))
    tombstone = load_predicate("RecordIsTombstone")()
    assert tombstone.test(record(None)) and not tombstone.test(record("v"))
    with pytest.raises(ConfigError, match='"pattern"'):
        load_predicate("TopicNameMatches")().configure({})


# -- the chain ------------------------------------------------------------------------


def test_empty_chain_passes_records_unchanged():
    chain = TransformationChain.from_config({})
    original = record({"a": 1})
    assert chain.apply(original) is original
    assert len(TransformationChain.from_config({"transforms": ""})) == 0


def test_chain_kafka_quickstart_example():
    # Kafka's quickstart: the file source's lines hoisted into a map, then tagged.
    chain = TransformationChain.from_config(
        {
            "transforms": "MakeMap, InsertSource",
            "transforms.MakeMap.type": "org.apache.kafka.connect.transforms.HoistField$Value",
            "transforms.MakeMap.field": "line",
            "transforms.InsertSource.type": "org.apache.kafka.connect.transforms.InsertField$Value",
            "transforms.InsertSource.static.field": "data_source",
            "transforms.InsertSource.static.value": "test-file-source",
        }
    )
    out = chain.apply(SourceRecord("connect-test", None, None, None, STRING, "foo"))
    assert out.value == {"line": "foo", "data_source": "test-file-source"}
    assert [f.name for f in out.value_schema.fields] == ["line", "data_source"]
    chain.close()


def test_chain_with_predicates_and_negate():
    props = {
        "transforms": "dropFoo,route,mask",
        "transforms.dropFoo.type": "Filter",
        "transforms.dropFoo.predicate": "isFoo",
        "transforms.route.type": "RegexRouter",
        "transforms.route.regex": "(.*)",
        "transforms.route.replacement": "$1-masked",
        "transforms.route.predicate": "hasTrace",
        "transforms.route.negate": "true",
        "transforms.mask.type": "MaskField$Value",
        "transforms.mask.fields": "ssn",
        "predicates": "isFoo,hasTrace",
        "predicates.isFoo.type": "org.apache.kafka.connect.transforms.predicates.TopicNameMatches",
        "predicates.isFoo.pattern": "foo",
        "predicates.hasTrace.type": "HasHeaderKey",
        "predicates.hasTrace.name": "trace",
    }
    chain = TransformationChain.from_config(props)
    assert chain.apply(record({"ssn": "1"}, topic="foo")) is None
    plain = chain.apply(record({"ssn": "1"}, topic="bar"))
    assert plain.topic == "bar-masked" and plain.value == {"ssn": ""}
    traced = chain.apply(record({"ssn": "1"}, topic="bar", headers=[Header("trace", b"")]))
    assert traced.topic == "bar" and traced.value == {"ssn": ""}


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"transforms": "a"}, 'Missing required configuration "transforms.a.type"'),
        ({"transforms": "a", "transforms.a.type": "Nope"}, "transforms.a.*.*matches Nope"),
        (
            {"transforms": "a", "transforms.a.type": "RegexRouter", "transforms.a.regex": "x"},
            'transforms.a.*.*"replacement"',
        ),
        (
            {"transforms": "a", "transforms.a.type": "Filter", "transforms.a.predicate": "p"},
            "transforms.a.predicate",
        ),
        (
            {"transforms": "a", "transforms.a.type": "Filter", "transforms.a.negate": "true"},
            "transforms.a.negate",
        ),
        (
            {
                "transforms": "a",
                "transforms.a.type": "Filter",
                "transforms.a.predicate": "p",
                "transforms.a.negate": "perhaps",
                "predicates": "p",
                "predicates.p.type": "RecordIsTombstone",
            },
            "transforms.a.negate",
        ),
        ({"transforms": "a,a", "transforms.a.type": "Filter"}, "duplicate aliases a"),
        ({"predicates": "p"}, 'Missing required configuration "predicates.p.type"'),
        (
            {"predicates": "p", "predicates.p.type": "TopicNameMatches"},
            'predicates.p.*.*"pattern"',
        ),
        ({"transforms": "a", "transforms.a.type": "TopicNameMatches"}, "transforms.a"),
    ],
)
def test_chain_bad_config_names_the_key(props, message):
    with pytest.raises(ConfigError, match=message):
        TransformationChain.from_config(props)


# -- TimestampConverter ---------------------------------------------------------------

WHEN = dt.datetime(2017, 1, 1, 0, 0, 0, 123000, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("configs", "given", "given_schema", "expected", "expected_schema"),
    [
        ({"target.type": "unix"}, WHEN, timestamp_schema(), TS, INT64),
        (
            {"target.type": "Timestamp", "unix.precision": "seconds"},
            TS // 1000,
            INT64,
            WHEN.replace(microsecond=0),
            timestamp_schema(),
        ),
        ({"target.type": "unix", "unix.precision": "microseconds"}, WHEN, None, TS * 1000, None),
        (
            {"target.type": "string", "format": "yyyy-MM-dd'T'HH:mm:ss.SSSX"},
            WHEN,
            timestamp_schema(),
            "2017-01-01T00:00:00.123Z",
            STRING,
        ),
        (
            {"target.type": "Timestamp", "format": "yyyy-MM-dd HH:mm:ss.SSS"},
            "2017-01-01 00:00:00.123",
            STRING,
            WHEN,
            timestamp_schema(),
        ),
        ({"target.type": "Date"}, WHEN, None, dt.date(2017, 1, 1), None),
        ({"target.type": "Time"}, TS, None, dt.time(0, 0, 0, 123000), None),
    ],
)
def test_timestamp_converter_whole_value(configs, given, given_schema, expected, expected_schema):
    smt = transform("org.apache.kafka.connect.transforms.TimestampConverter$Value", **configs)
    out = smt.apply(record(given, given_schema))
    assert out.value == expected
    if expected_schema is not None:
        assert out.value_schema.type == expected_schema.type
        assert out.value_schema.name == expected_schema.name


def test_timestamp_converter_field():
    schema = Schema.struct([("id", INT32), ("ts", timestamp_schema(optional=True))])
    smt = transform("TimestampConverter$Value", field="ts", **{"target.type": "unix"})
    out = smt.apply(record({"id": 1, "ts": WHEN}, schema))
    assert out.value == {"id": 1, "ts": TS}
    assert out.value_schema.field("ts").schema == Schema("int64", optional=True)
    assert smt.apply(record({"id": 2, "ts": None}, schema)).value == {"id": 2, "ts": None}
    assert smt.apply(record({"id": 1, "ts": WHEN})).value == {"id": 1, "ts": TS}


def test_timestamp_converter_errors():
    with pytest.raises(ConfigError, match="requires format"):
        transform("TimestampConverter$Value", **{"target.type": "string"})
    with pytest.raises(ConfigError, match="target.type"):
        transform("TimestampConverter$Value", **{"target.type": "epoch"})
    with pytest.raises(ConfigError, match="unix.precision"):
        transform("TimestampConverter$Value", **{"target.type": "unix", "unix.precision": "days"})
    smt = transform("TimestampConverter$Value", **{"target.type": "unix", "format": "yyyy"})
    with pytest.raises(ConnectError, match=r"does not match pattern \(yyyy\)"):
        smt.apply(record("not a year"))


# -- Flatten, SetSchemaMetadata, InsertHeader, DropHeaders ------------------------------


def test_flatten_schemaless_kafka_example():
    value = {"content": {"id": 42, "name": {"first": "David", "middle": None}}, "tags": ["a"]}
    out = transform("Flatten$Value").apply(record(value))
    assert out.value == {
        "content.id": 42,
        "content.name.first": "David",
        "content.name.middle": None,
        "tags": ["a"],
    }
    underscore = transform("Flatten$Value", delimiter="_").apply(record(value))
    assert "content_name_first" in underscore.value


def test_flatten_with_schema():
    name = Schema.struct([("first", STRING), ("last", STRING)], optional=True)
    schema = Schema.struct([("id", INT32), ("name", name)], name="com.example.P")
    smt = transform("Flatten$Value")
    out = smt.apply(record({"id": 1, "name": {"first": "a", "last": "b"}}, schema))
    assert out.value == {"id": 1, "name.first": "a", "name.last": "b"}
    assert [(f.name, f.schema.optional) for f in out.value_schema.fields] == [
        ("id", False),
        ("name.first", True),  # under an optional struct: may be absent
        ("name.last", True),
    ]
    assert out.value_schema.name == "com.example.P"
    absent = smt.apply(record({"id": 2, "name": None}, schema))
    assert absent.value == {"id": 2, "name.first": None, "name.last": None}


def test_set_schema_metadata():
    smt = transform("SetSchemaMetadata$Value", **{"schema.name": "com.example.V2"})
    out = smt.apply(record({"name": "a", "age": 1, "ssn": None}, PERSON))
    assert out.value_schema.name == "com.example.V2"
    assert out.value_schema.fields == PERSON.fields
    versioned = transform("SetSchemaMetadata$Key", **{"schema.version": "3"})
    assert versioned.apply(record("v", key=1, key_schema=INT64)).key_schema.version == 3
    with pytest.raises(ConnectError, match="Schema required"):
        smt.apply(record({"a": 1}))
    with pytest.raises(ConfigError, match="schema.name or schema.version"):
        transform("SetSchemaMetadata$Value")


def test_insert_and_drop_headers():
    insert = transform("InsertHeader", header="source", **{"value.literal": "42"})
    out = insert.apply(record("v", headers=[Header("trace", b"1")]))
    assert out.headers == (Header("trace", b"1"), Header("source", 42, Schema("int8")))
    drop = transform("org.apache.kafka.connect.transforms.DropHeaders", headers="trace,x")
    assert drop.apply(out).headers == (Header("source", 42, Schema("int8")),)
    with pytest.raises(ConfigError, match='"value.literal"'):
        transform("InsertHeader", header="h")


def test_new_record_copies_with_changes():
    # Transforms make a record per record: new_record copies the attributes instead of
    # re-running __init__, and must still be dataclasses.replace's equal.
    import dataclasses

    original = record({"a": 1}, headers=[Header("h", b"1")])
    changed = original.new_record(topic="other", value={"b": 2})
    assert changed == dataclasses.replace(original, topic="other", value={"b": 2})
    assert type(changed) is SinkRecord and changed.kafka_offset == 42
    assert original.topic == "people" and original.value == {"a": 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.topic = "x"  # type: ignore[misc]
    with pytest.raises(TypeError, match="valu"):
        original.new_record(valu=1)

    @dataclasses.dataclass(frozen=True)
    class Checked(SourceRecord):
        def __post_init__(self) -> None:
            if self.topic == "":
                raise ValueError("empty topic")

    checked = Checked("t", None, None, None, None, 1)
    assert checked.new_record(value=2).value == 2
    with pytest.raises(ValueError, match="empty topic"):
        checked.new_record(topic="")  # a subclass's __post_init__ still runs
