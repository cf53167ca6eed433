"""Connect's converters: the bytes Kafka's converters write and read.

The expected JSON is Kafka's (``JsonConverterTest``): the envelope, the type names, the
key order Kafka's ``asJsonSchema`` writes, base64 bytes and the logical types.  These
are pure functions, so they run in-process; round trips are fuzzed with hypothesis.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pystream.connect.api import ConfigError, ConnectError
from pystream.connect.converters import (
    ByteArrayConverter,
    JsonConverter,
    SimpleHeaderConverter,
    StringConverter,
)
from pystream.connect.data import (
    Schema,
    SchemaAndValue,
    date_schema,
    decimal_schema,
    time_schema,
    timestamp_schema,
)

TOPIC = "topic"


def json_converter(**configs: object) -> JsonConverter:
    converter = JsonConverter()
    converter.configure(configs, False)
    return converter


# -- JsonConverter: Connect → bytes, as Kafka writes them -----------------------------


@pytest.mark.parametrize(
    ("schema", "value", "expected"),
    [
        (Schema("boolean"), True, b'{"schema":{"type":"boolean","optional":false},"payload":true}'),
        (
            Schema("boolean", optional=True),
            None,
            b'{"schema":{"type":"boolean","optional":true},"payload":null}',
        ),
        (Schema("int8"), 12, b'{"schema":{"type":"int8","optional":false},"payload":12}'),
        (
            Schema("int64"),
            4398046511104,
            b'{"schema":{"type":"int64","optional":false},"payload":4398046511104}',
        ),
        (Schema("float32"), 12.34, b'{"schema":{"type":"float","optional":false},"payload":12.34}'),
        (
            Schema("float64"),
            12.34,
            b'{"schema":{"type":"double","optional":false},"payload":12.34}',
        ),
        (
            Schema("bytes"),
            b"test-string",
            b'{"schema":{"type":"bytes","optional":false},"payload":"dGVzdC1zdHJpbmc="}',
        ),
        (
            Schema("string"),
            "test-string",
            b'{"schema":{"type":"string","optional":false},"payload":"test-string"}',
        ),
        (
            Schema("array", value_schema=Schema("int32")),
            [1, 2, 3],
            b'{"schema":{"type":"array","items":{"type":"int32","optional":false},'
            b'"optional":false},"payload":[1,2,3]}',
        ),
        (
            Schema("map", key_schema=Schema("string"), value_schema=Schema("int32")),
            {"key1": 12, "key2": 15},
            b'{"schema":{"type":"map","keys":{"type":"string","optional":false},'
            b'"values":{"type":"int32","optional":false},"optional":false},'
            b'"payload":{"key1":12,"key2":15}}',
        ),
        (
            # Non-string keys: an array of [key, value] pairs.
            Schema("map", key_schema=Schema("int32"), value_schema=Schema("int32")),
            {1: 12, 2: 15},
            b'{"schema":{"type":"map","keys":{"type":"int32","optional":false},'
            b'"values":{"type":"int32","optional":false},"optional":false},'
            b'"payload":[[1,12],[2,15]]}',
        ),
        (
            Schema.struct(
                [
                    ("field1", Schema("boolean")),
                    ("field2", Schema("string")),
                    ("field3", Schema("string")),
                    ("field4", Schema("boolean")),
                ]
            ),
            {"field1": True, "field2": "string2", "field3": "string3", "field4": False},
            b'{"schema":{"type":"struct","fields":['
            b'{"type":"boolean","optional":false,"field":"field1"},'
            b'{"type":"string","optional":false,"field":"field2"},'
            b'{"type":"string","optional":false,"field":"field3"},'
            b'{"type":"boolean","optional":false,"field":"field4"}],"optional":false},'
            b'"payload":{"field1":true,"field2":"string2","field3":"string3","field4":false}}',
        ),
        (
            Schema(
                "boolean",
                name="bool",
                version=3,
                doc="the documentation",
                parameters={"foo": "bar"},
            ),
            True,
            b'{"schema":{"type":"boolean","optional":false,"name":"bool","version":3,'
            b'"doc":"the documentation","parameters":{"foo":"bar"}},"payload":true}',
        ),
        (
            decimal_schema(2),
            decimal.Decimal("1.56"),
            b'{"schema":{"type":"bytes","optional":false,'
            b'"name":"org.apache.kafka.connect.data.Decimal","version":1,'
            b'"parameters":{"scale":"2"}},"payload":"AJw="}',
        ),
        (
            date_schema(),
            dt.date(1997, 5, 19),  # Kafka's test: 10000 days after the epoch
            b'{"schema":{"type":"int32","optional":false,'
            b'"name":"org.apache.kafka.connect.data.Date","version":1},"payload":10000}',
        ),
        (
            time_schema(),
            dt.time(4, 0),
            b'{"schema":{"type":"int32","optional":false,'
            b'"name":"org.apache.kafka.connect.data.Time","version":1},"payload":14400000}',
        ),
        (
            timestamp_schema(),
            dt.datetime(1970, 2, 16, 7, 6, 40, tzinfo=dt.UTC),
            b'{"schema":{"type":"int64","optional":false,'
            b'"name":"org.apache.kafka.connect.data.Timestamp","version":1},'
            b'"payload":4000000000}',
        ),
    ],
    ids=lambda p: p.type if isinstance(p, Schema) else None,
)
def test_json_writes_kafkas_bytes_and_reads_them_back(schema, value, expected):
    converter = json_converter()
    assert converter.from_connect_data(TOPIC, schema, value) == expected
    assert converter.to_connect_data(TOPIC, expected) == SchemaAndValue(schema, value)


def test_json_decimal_numeric_format_is_a_json_number():
    converter = json_converter(**{"decimal.format": "NUMERIC"})
    data = converter.from_connect_data(TOPIC, decimal_schema(4), decimal.Decimal("1.5600"))
    assert data.endswith(b',"payload":1.5600}')
    # Every digit survives the way back, as Kafka reads with BigDecimal.
    big = decimal.Decimal("12345678901234567890.1234")
    back = converter.to_connect_data(
        TOPIC, converter.from_connect_data(TOPIC, decimal_schema(4), big)
    )
    assert back.value == big


def test_json_numeric_marker_cannot_be_forged_by_a_string():
    converter = json_converter(**{"decimal.format": "NUMERIC"})
    schema = Schema.struct([("d", decimal_schema(1)), ("s", Schema("string"))])
    sneaky = "\x00dec:1.5\x00"
    data = converter.from_connect_data(TOPIC, schema, {"d": decimal.Decimal("2.5"), "s": sneaky})
    assert json.loads(data)["payload"] == {"d": 2.5, "s": sneaky}


def test_json_decimal_negative_and_zero_base64_as_javas_biginteger():
    converter = json_converter()
    for value, payload in (
        ("-0.01", "/w=="),
        ("-1.00", "nA=="),
        ("0.00", "AA=="),
        ("-1.28", "gA=="),
        ("1.28", "AIA="),
    ):
        data = converter.from_connect_data(TOPIC, decimal_schema(2), decimal.Decimal(value))
        assert json.loads(data)["payload"] == payload
        assert converter.to_connect_data(TOPIC, data).value == decimal.Decimal(value)


def test_json_decimal_with_more_digits_than_the_scale_is_refused():
    with pytest.raises(ConnectError, match="scale 2"):
        json_converter().from_connect_data(TOPIC, decimal_schema(2), decimal.Decimal("1.234"))


def test_json_reads_kafkas_test_inputs():
    converter = json_converter()
    read = converter.to_connect_data
    assert read(TOPIC, b'{ "schema": { "type": "boolean" }, "payload": true }') == SchemaAndValue(
        Schema("boolean"), True
    )
    assert read(
        TOPIC, b'{ "schema": { "type": "boolean", "optional": true }, "payload": null }'
    ) == SchemaAndValue(Schema("boolean", optional=True), None)
    # A null payload with a default reads as the default.
    defaulted = read(
        TOPIC, b'{ "schema": { "type": "boolean", "default": true }, "payload": null }'
    )
    assert defaulted.value is True and defaulted.schema.default is True
    named = read(
        TOPIC,
        b'{ "schema": { "type": "boolean", "optional": false, "name": "bool", "version": 2, '
        b'"doc": "the documentation", "parameters": { "foo": "bar" }}, "payload": true }',
    )
    assert named.schema == Schema(
        "boolean", name="bool", version=2, doc="the documentation", parameters={"foo": "bar"}
    )
    struct = read(
        TOPIC,
        b'{ "schema": { "type": "struct", "fields": [{ "field":"optional", "type": "string", '
        b'"optional": true }, {  "field": "required", "type": "string" }] }, '
        b'"payload": { "required": "required" } }',
    )
    assert struct.value == {"optional": None, "required": "required"}
    assert [f.name for f in struct.schema.fields] == ["optional", "required"]
    # Schemaless payload inside the envelope: integers int64, others float64, objects maps.
    assert read(TOPIC, b'{ "schema": null, "payload": [1, "2", 3] }').value == [1, "2", 3]
    assert read(TOPIC, b'{ "schema": null, "payload": 12.24 }').value == 12.24
    assert read(TOPIC, b'{ "schema": null, "payload": {"field1": 1} }').value == {"field1": 1}


def test_json_plain_message_with_schemas_enabled_says_to_disable_them():
    with pytest.raises(ConnectError, match="set schemas.enable=false"):
        json_converter().to_connect_data(TOPIC, b'{"name": "alice"}')
    with pytest.raises(ConnectError, match="set schemas.enable=false"):
        json_converter().to_connect_data(TOPIC, b"true")


def test_json_schemaless():
    converter = json_converter(**{"schemas.enable": "false"})
    value = {"a": "", "b": None, "c": [1, 2.5, True], "d": {"e": "f"}}
    data = converter.from_connect_data(TOPIC, None, value)
    assert data == b'{"a":"","b":null,"c":[1,2.5,true],"d":{"e":"f"}}'
    assert converter.to_connect_data(TOPIC, data) == SchemaAndValue(None, value)
    assert converter.to_connect_data(TOPIC, b"true") == SchemaAndValue(None, True)
    assert converter.to_connect_data(TOPIC, b"") == SchemaAndValue(None, None)
    assert converter.to_connect_data(TOPIC, None) == SchemaAndValue(None, None)
    assert converter.from_connect_data(TOPIC, None, None) is None
    # Non-string map keys become [key, value] pairs; bytes become base64.
    assert converter.from_connect_data(TOPIC, None, {1: b"ab"}) == b'[[1,"YWI="]]'
    # With the envelope, a schemaless value has "schema": null.
    enveloped = json_converter().from_connect_data(TOPIC, None, [1, "string", True])
    assert enveloped == b'{"schema":null,"payload":[1,"string",true]}'


def test_json_null_handling():
    converter = json_converter()
    with pytest.raises(ConnectError, match="null value for field that is required"):
        converter.from_connect_data(TOPIC, Schema("int32"), None)
    with_default = Schema("int32", default=42)
    data = converter.from_connect_data(TOPIC, with_default, None)
    assert data == b'{"schema":{"type":"int32","optional":false,"default":42},"payload":42}'
    keep_null = json_converter(**{"replace.null.with.default": "false"})
    optional_default = Schema("int32", optional=True, default=42)
    data = keep_null.from_connect_data(TOPIC, optional_default, None)
    assert json.loads(data)["payload"] is None
    assert keep_null.to_connect_data(TOPIC, data).value is None
    with pytest.raises(ConnectError, match="Invalid null value for required INT32"):
        converter.to_connect_data(TOPIC, b'{"schema":{"type":"int32"},"payload":null}')


@pytest.mark.parametrize(
    ("schema", "value", "message"),
    [
        (Schema("int32"), "12", "Invalid type for INT32: str"),
        (Schema("int8"), 300, "out of range"),
        (Schema("boolean"), 1, "Invalid type for BOOLEAN"),
        (Schema("string"), b"x", "Invalid type for STRING"),
        (Schema.struct([("a", Schema("int32"))]), {"a": 1, "b": 2}, "'b' is not a field"),
        (decimal_schema(2), 1.5, "expected Decimal"),
        (date_schema(), "2020-01-01", "Invalid type for Date"),
    ],
)
def test_json_value_not_fitting_its_schema_is_a_connect_error(schema, value, message):
    with pytest.raises(ConnectError, match=message):
        json_converter().from_connect_data(TOPIC, schema, value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "serialization error"),
        (b'{"schema":{"type":"nope"},"payload":1}', "Unknown schema type: nope"),
        (b'{"schema":{"optional":true},"payload":1}', "Schema must contain 'type' field"),
        (b'{"schema":{"type":"array"},"payload":[]}', "did not specify the element type"),
        (b'{"schema":{"type":"struct","fields":{}},"payload":{}}', "not an array"),
        (b'{"schema":{"type":"int32"},"payload":"x"}', "for a int32 value"),
        (b'{"schema":{"type":"bytes"},"payload":"!!"}', "not base64"),
    ],
)
def test_json_malformed_input_is_a_connect_error(data, message):
    with pytest.raises(ConnectError, match=message):
        json_converter().to_connect_data(TOPIC, data)


def test_json_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="decimal.format"):
        json_converter(**{"decimal.format": "HEX"})
    with pytest.raises(ConfigError, match="schemas.enable"):
        json_converter(**{"schemas.enable": "maybe"})


def test_json_header_methods():
    converter = json_converter()
    data = converter.from_connect_header(TOPIC, "h", Schema("string"), "test-string")
    assert data == b'{"schema":{"type":"string","optional":false},"payload":"test-string"}'
    assert converter.to_connect_header(TOPIC, "h", data).value == "test-string"


# -- round trips ----------------------------------------------------------------------

_PRIMITIVES = {
    "boolean": st.booleans(),
    "int8": st.integers(-(2**7), 2**7 - 1),
    "int16": st.integers(-(2**15), 2**15 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "float64": st.floats(allow_nan=False, allow_infinity=False),
    "string": st.text(max_size=20),
    "bytes": st.binary(max_size=20),
}


@st.composite
def schema_and_value(draw, depth: int = 2):
    kinds = list(_PRIMITIVES) + (["array", "map", "struct", "decimal"] if depth else [])
    kind = draw(st.sampled_from(kinds))
    optional = draw(st.booleans())
    if kind in _PRIMITIVES:
        schema = Schema(kind, optional=optional)
        value = draw(_PRIMITIVES[kind])
    elif kind == "decimal":
        scale = draw(st.integers(0, 6))
        schema = decimal_schema(scale, optional=optional)
        value = decimal.Decimal(draw(st.integers(-(10**30), 10**30))).scaleb(-scale)
    elif kind == "array":
        items, _ = draw(schema_and_value(depth - 1))
        value = draw(st.lists(_values_of(items), max_size=3))
        schema = Schema("array", optional=optional, value_schema=items)
    elif kind == "map":
        values_schema, _ = draw(schema_and_value(depth - 1))
        keys = draw(st.lists(st.text(max_size=5), max_size=3, unique=True))
        value = {k: draw(_values_of(values_schema)) for k in keys}
        schema = Schema(
            "map", optional=optional, key_schema=Schema("string"), value_schema=values_schema
        )
    else:
        names = draw(st.lists(st.text("abcdef", min_size=1, max_size=4), max_size=4, unique=True))
        fields = [(n, draw(schema_and_value(depth - 1))) for n in names]
        schema = Schema.struct([(n, s) for n, (s, _) in fields], optional=optional)
        value = {n: v for n, (_, v) in fields}
    if optional and draw(st.booleans()):
        value = None
    return schema, value


def _values_of(schema: Schema):
    if schema.name is not None:  # a decimal
        scale = int(schema.parameters["scale"])
        return st.integers(-(10**20), 10**20).map(lambda n: decimal.Decimal(n).scaleb(-scale))
    if schema.type in _PRIMITIVES:
        return _PRIMITIVES[schema.type]
    if schema.type == "array":
        return st.lists(_values_of(schema.value_schema), max_size=3)
    if schema.type == "map":
        return st.dictionaries(st.text(max_size=5), _values_of(schema.value_schema), max_size=3)
    return st.fixed_dictionaries({f.name: _values_of(f.schema) for f in schema.fields})


@settings(max_examples=200, deadline=None)
@given(schema_and_value(), st.sampled_from(["BASE64", "NUMERIC"]))
def test_json_round_trip_with_schemas(pair, decimal_format):
    schema, value = pair
    converter = json_converter(**{"decimal.format": decimal_format})
    data = converter.from_connect_data(TOPIC, schema, value)
    assert converter.to_connect_data(TOPIC, data) == SchemaAndValue(schema, value)


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_JSON_VALUES)
def test_json_schemaless_round_trip(value):
    converter = json_converter(**{"schemas.enable": "false"})
    data = converter.from_connect_data(TOPIC, None, value)
    assert converter.to_connect_data(TOPIC, data).value == value
    if value is not None:  # a null value with no schema is a tombstone: no bytes
        assert json.loads(data) == value


# -- StringConverter, ByteArrayConverter, SimpleHeaderConverter --------------------------


def test_string_converter():
    converter = StringConverter()
    converter.configure({}, False)
    assert (
        converter.from_connect_data(TOPIC, Schema("string"), "a-string ü") == "a-string ü".encode()
    )
    assert converter.from_connect_data(TOPIC, None, 12) == b"12"
    assert converter.from_connect_data(TOPIC, None, True) == b"true"
    assert converter.from_connect_data(TOPIC, None, None) is None
    assert converter.to_connect_data(TOPIC, "é".encode()) == SchemaAndValue(
        Schema("string", optional=True), "é"
    )
    assert converter.to_connect_data(TOPIC, None) == SchemaAndValue(
        Schema("string", optional=True), None
    )
    with pytest.raises(ConnectError, match="could not decode"):
        converter.to_connect_data(TOPIC, b"\xff\xfe\xfa")


def test_string_converter_encoding():
    converter = StringConverter()
    converter.configure({"converter.encoding": "UTF-16"}, True)
    data = converter.from_connect_data(TOPIC, None, "hé")
    assert data == "hé".encode("utf-16")
    assert converter.to_connect_data(TOPIC, data).value == "hé"
    latin = StringConverter()
    latin.configure({"converter.encoding": "ISO-8859-1"}, False)
    assert latin.from_connect_data(TOPIC, None, "é") == b"\xe9"
    with pytest.raises(ConnectError, match="converter.encoding"):
        StringConverter().configure({"converter.encoding": "klingon"}, False)


def test_byte_array_converter():
    converter = ByteArrayConverter()
    assert converter.from_connect_data(TOPIC, Schema("bytes"), b"\x00\x01") == b"\x00\x01"
    assert converter.from_connect_data(TOPIC, None, bytearray(b"ab")) == b"ab"
    assert converter.from_connect_data(TOPIC, None, None) is None
    assert converter.to_connect_data(TOPIC, b"\x00\x01") == SchemaAndValue(
        Schema("bytes", optional=True), b"\x00\x01"
    )
    with pytest.raises(ConnectError, match="not compatible with objects of type str"):
        converter.from_connect_data(TOPIC, None, "text")
    with pytest.raises(ConnectError, match="Invalid schema type for ByteArrayConverter: string"):
        converter.from_connect_data(TOPIC, Schema("string"), b"x")


@pytest.mark.parametrize(
    ("data", "schema", "value"),
    [
        (b"true", Schema("boolean"), True),
        (b"false", Schema("boolean"), False),
        (b"12", Schema("int8"), 12),
        (b"-300", Schema("int16"), -300),
        (b"70000", Schema("int32"), 70000),
        (b"4398046511104", Schema("int64"), 4398046511104),
        (b"1.5", Schema("float64"), 1.5),
        (b"hello world", Schema("string"), "hello world"),
        (b"", Schema("string"), ""),
    ],
)
def test_simple_header_converter_infers_types(data, schema, value):
    converter = SimpleHeaderConverter()
    assert converter.to_connect_header(TOPIC, "h", data) == SchemaAndValue(schema, value)
    assert converter.from_connect_header(TOPIC, "h", schema, value) == data


def test_simple_header_converter_null():
    converter = SimpleHeaderConverter()
    assert converter.to_connect_header(TOPIC, "h", None) == SchemaAndValue(None, None)
    assert converter.from_connect_header(TOPIC, "h", None, None) is None


def test_json_schema_cache_tells_schemas_apart():
    converter = json_converter()
    read = converter.to_connect_data
    for _ in range(2):  # the second round is served from the cache
        assert read(TOPIC, b'{"schema":{"type":"int32"},"payload":1}').schema == Schema("int32")
        assert read(TOPIC, b'{"schema":{"type":"int64"},"payload":1}').schema == Schema("int64")
        optional = read(TOPIC, b'{"schema":{"type":"int64","optional":true},"payload":1}')
        assert optional.schema == Schema("int64", optional=True)
        assert read(TOPIC, b'{"schema":null,"payload":1}').schema is None


def test_json_reading_a_run_of_messages_with_one_schema():
    # After one message, those starting with the same '{"schema":…,"payload":' read only
    # their payload; anything else still takes the full path.
    converter = json_converter()
    read = converter.to_connect_data
    first = read(TOPIC, b'{"schema":{"type":"int32","optional":false},"payload":1}')
    second = read(TOPIC, b'{"schema":{"type":"int32","optional":false},"payload":2}')
    assert second == SchemaAndValue(Schema("int32"), 2) and second.schema is first.schema
    # A longer schema that shares the text up to the previous schema's end is not it.
    named = read(TOPIC, b'{"schema":{"type":"int32","optional":false,"name":"n"},"payload":3}')
    assert named.schema == Schema("int32", name="n")
    read(TOPIC, b'{"schema":{"type":"int32","optional":false},"payload":1}')
    spaced = read(TOPIC, b'{"schema":{"type":"int32","optional":false},"payload": 4 }')
    assert spaced.value == 4
    with pytest.raises(ConnectError, match="may not contain additional fields"):
        read(TOPIC, b'{"schema":{"type":"int32","optional":false},"payload":5,"x":1}')
    with pytest.raises(ConnectError, match="serialization error"):
        read(TOPIC, b'{"schema":{"type":"int32","optional":false},"payload":[}')
    with pytest.raises(ConnectError, match="Invalid JSON STRING for a int32 value"):
        read(TOPIC, b'{"schema":{"type":"int32","optional":false},"payload":"x"}')


@pytest.mark.parametrize(
    "payload",
    [
        '{"id":1,"name":"x","amount":2,"ok":true}',
        '{"id":1e3,"name":"x","amount":1.5,"ok":false}',
        '{"id":123456789012345678901234567890,"name":"x","amount":1.5,"ok":true}',
        '{"id":1,"name":null,"amount":0.1000000000000000055511151231257827,"ok":true}',
        '{"id":1,"name":"x","amount":1.5,"ok":1}',
        '{"id":null,"name":"x","amount":1.5,"ok":true}',
        '{"id":1,"name":"x","amount":1.5,"ok":true},"extra":1',
        '{"id":1,"name":"x","amount":1.5,"ok":true,"unknown":[1]}',
        ' {"id": 1, "name": "y", "amount": -0.0, "ok": true} ',
    ],
)
def test_the_plain_struct_fast_path_reads_what_the_general_path_reads(payload: str) -> None:
    """After one message, a message with the same schema text has its payload read by
    orjson when every field is plain; the result (or the error) is the general path's."""
    schema = (
        '{"type":"struct","fields":[{"type":"int64","optional":false,"field":"id"},'
        '{"type":"string","optional":true,"field":"name"},'
        '{"type":"double","optional":true,"field":"amount"},'
        '{"type":"boolean","optional":false,"field":"ok"}],"optional":false}'
    )
    read_like_the_general_path(schema, '{"id":0,"name":"a","amount":1.0,"ok":true}', payload)


def read_like_the_general_path(schema: str, first: str, payload: str) -> JsonConverter:
    """Read a message with payload ``first``, then one with ``payload`` (same schema):
    the second (a fast-path candidate) reads as a fresh converter reads it, value, types
    and errors alike.  Returns the converter that read both."""
    message = ('{"schema":' + schema + ',"payload":' + payload + "}").encode()

    def read(converter: JsonConverter) -> object:
        try:
            return converter.to_connect_data("t", message)
        except (ConnectError, OverflowError) as exc:
            return ("error", type(exc).__name__, str(exc))

    warm, cold = JsonConverter(), JsonConverter()
    warm.configure({}, False)
    cold.configure({}, False)
    warm.to_connect_data("t", ('{"schema":' + schema + ',"payload":' + first + "}").encode())
    result = read(warm)
    assert result == read(cold)
    if not isinstance(result, tuple):
        assert [type(v) for v in result.value.values()] == [  # type: ignore[union-attr]
            type(v)
            for v in read(cold).value.values()  # type: ignore[union-attr]
        ]
    return warm


@pytest.mark.parametrize(
    "payload",
    [
        '{"id":1,"at":1704067200123,"day":19723}',
        '{"id":1,"at":-1,"day":0}',
        '{"id":1,"at":null,"day":19723}',
        '{"id":1,"at":1704067200123,"day":null}',
        '{"id":1,"at":1.5,"day":1}',
        '{"id":1,"at":true,"day":1}',
        '{"id":1,"at":"2024-01-01","day":1}',
        '{"id":1,"at":99999999999999999,"day":1}',
        '{"id":1,"at":1,"day":999999999}',
    ],
)
def test_timestamp_and_date_fields_take_the_fast_path_as_the_general_one(payload: str) -> None:
    """Timestamp and Date fields (ints in JSON) in a struct of plain fields: the fast path
    makes the values (or the error) the general path makes."""
    schema = (
        '{"type":"struct","fields":[{"type":"int64","optional":false,"field":"id"},'
        '{"type":"int64","optional":true,"field":"at",'
        '"name":"org.apache.kafka.connect.data.Timestamp","version":1},'
        '{"type":"int32","optional":false,"field":"day",'
        '"name":"org.apache.kafka.connect.data.Date","version":1}],"optional":false}'
    )
    first = '{"id":0,"at":0,"day":0}'
    warm = read_like_the_general_path(schema, first, payload)
    assert warm._last_envelope is not None and warm._last_envelope[2] is not None  # planned
    envelope = ('{"schema":' + schema + ',"payload":' + first + "}").encode()
    assert warm.to_connect_data("t", envelope).value == {
        "id": 0,
        "at": dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
        "day": dt.date(1970, 1, 1),
    }
