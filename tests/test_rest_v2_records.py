"""The Cython split of v2 JSON produce bodies (``rest/v2_records.pyx``) against the
general path it stands in for (``parse_json`` then ``compact_json`` per key and
value): wherever the split answers, it answers the same bytes; it answers for the
bodies clients send (compact or spaced, any JSON values); and it declines what the
general path must judge (malformed bodies, bad partitions, other shapes).

Through a running proxy: ``test_rest_v2.py``'s ``test_json_values_are_stored_exactly``
and ``test_spellings_of_a_value_are_stored_as_its_compact_json``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pystream.rest.formats import compact_json, parse_json
from pystream.rest.v2_records import split_json_records


def general(body: bytes) -> list[tuple[bytes | None, bytes | None, int | None]] | None:
    """What the general path stores for ``body``, None where it answers an error."""
    try:
        document = parse_json(body)
    except ValueError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("records"), list):
        return None
    out = []
    for item in document["records"]:
        if not isinstance(item, dict):
            return None
        partition = item.get("partition")
        if partition is not None and (type(partition) is not int or partition < 0):
            return None
        key, value = item.get("key"), item.get("value")
        out.append(
            (
                None if key is None else compact_json(key),
                None if value is None else compact_json(value),
                partition,
            )
        )
    return out or None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)
items = st.fixed_dictionaries(
    {},
    optional={
        "key": json_values,
        "value": json_values,
        "partition": st.none() | st.integers(min_value=0, max_value=10**6),
        "other": json_values,
    },
)
styles = st.sampled_from(
    [
        {"separators": (",", ":"), "ensure_ascii": False},
        {"separators": (",", ":"), "ensure_ascii": True},
        {"separators": (", ", ": "), "ensure_ascii": False},
        {"indent": 2, "ensure_ascii": False},
    ]
)


@settings(max_examples=400, deadline=None)
@given(records=st.lists(items, min_size=1, max_size=5), style=styles)
def test_the_split_stores_what_the_general_path_stores(
    records: list[dict[str, Any]], style: dict[str, Any]
) -> None:
    body = json.dumps({"records": records}, **style).encode()
    want = general(body)
    assert want is not None
    got = split_json_records(body)
    if got is not None:
        assert got == want
    # Plain records (no escapes to resolve, no fields it does not read) always split.
    if (
        "ensure_ascii" in style
        and not style["ensure_ascii"]
        and not any("other" in r for r in records)
    ):
        if b"\\" not in body:
            assert got == want


@settings(max_examples=400, deadline=None)
@given(
    records=st.lists(items, min_size=1, max_size=3),
    cut=st.integers(min_value=0, max_value=10**6),
    byte=st.integers(min_value=0, max_value=255),
    mode=st.sampled_from(["replace", "insert", "delete"]),
)
def test_a_damaged_body_splits_only_as_the_general_path_reads_it(
    records: list[dict[str, Any]], cut: int, byte: int, mode: str
) -> None:
    body = bytearray(json.dumps({"records": records}, separators=(",", ":")).encode())
    at = cut % len(body)
    if mode == "replace":
        body[at] = byte
    elif mode == "insert":
        body[at:at] = bytes([byte])
    else:
        del body[at]
    got = split_json_records(bytes(body))
    if got is not None:
        assert got == general(bytes(body))


# Spellings of values and what is stored for each: the compact JSON of what it parses to.
SPELLINGS = [
    (b"12.5", b"12.5"),
    (b"12.50", b"12.5"),
    (b"1E5", b"100000.0"),
    (b"1e16", b"1e16"),
    (b"0.00001", b"0.00001"),
    (b"-0", b"0"),
    (b"-0.0", b"-0.0"),
    (b"123456789012345678901234567890", b"123456789012345678901234567890"),
    (b'"a\\/b\\u00e9\\n"', '"a/b\u00e9\\n"'.encode()),
    (b'{"a" : 1, "a": [ 2 ,3 ]}', b'{"a":[2,3]}'),
    (b'{ "b" : "x y" , "c" : [ ] }', b'{"b":"x y","c":[]}'),
    ('"d\u00e9j\u00e0 \U0001f600"'.encode(), '"d\u00e9j\u00e0 \U0001f600"'.encode()),
]


@pytest.mark.parametrize(("value", "stored"), SPELLINGS)
def test_spellings_of_a_value(value: bytes, stored: bytes) -> None:
    body = b'{"records":[{"value":' + value + b',"partition":1}]}'
    assert split_json_records(body) == [(None, stored, 1)]
    assert general(body) == [(None, stored, 1)]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"records":[]}',
        b'{"records":[{"value":1}],"value_schema":"x"}',
        b'{"records":[{"value":1,"partition":-1}]}',
        b'{"records":[{"value":1,"partition":1.0}]}',
        b'{"records":[{"value":1,"partition":"1"}]}',
        b'{"records":[{"value":1,"partition":01}]}',
        b'{"records":[{"value":1,"value":2}]}',
        b'{"records":[{"v\\u0061lue":1}]}',
        b'{"records":[{"value":1e400}]}',
        b'{"records":[{"value":1,"other":1e400}]}',
        b'{"records":[{"value":"\xff"}]}',
        b'{"records":[{"value":"\xed\xa0\x80"}]}',
        b'{"records":[{"value":[1,]}]}',
        b'{"records":[{"value":NaN}]}',
        b'{"records":[{"value":1}]} x',
        b'{"records":[1]}',
    ],
)
def test_what_the_general_path_must_judge_is_declined(body: bytes) -> None:
    assert split_json_records(body) is None
