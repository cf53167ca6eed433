"""Instances of generated protocol messages for tests.

Both builders read the generated ``FIELDS`` facts, so they respect which
fields exist at a version, which are nullable there, and which are tagged:

* :func:`sample` -- deterministic: every present field set to a non-default
  value (``nulls=True``: every nullable field null, arrays empty);
* :func:`strategy` -- hypothesis strategy over all valid values.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from hypothesis import strategies as st

from pystream.protocol.codec import Field, Struct
from pystream.protocol.messages import API_SPECS, DATA_SCHEMAS, RequestHeader, ResponseHeader

INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
}


def message_classes() -> list[type[Struct]]:
    """Every generated top-level class: API requests/responses, headers, data schemas."""
    out: list[type[Struct]] = []
    for spec in API_SPECS.values():
        out += [spec.request, spec.response]
    out += [RequestHeader, ResponseHeader, *DATA_SCHEMAS.values()]
    return out


def cases() -> list[tuple[type[Struct], int]]:
    """(class, version) for every version of every generated message."""
    return [(cls, v) for cls in message_classes() for v in cls.versions()]


def _struct_of(root: type[Struct], f: Field) -> type[Struct]:
    return getattr(root, f.type.removeprefix("[]"))


def present(f: Field, version: int) -> bool:
    return version in f.versions


def nullable(f: Field, version: int) -> bool:
    return f.nullable is not None and version in f.nullable


# ---------------------------------------------------------------------------
# deterministic samples


def _scalar(kind: str, seed: int, default: Any) -> Any:
    if kind in INT_RANGES:
        lo, hi = INT_RANGES[kind]
        value = lo + (seed * 7919 + 3) % (hi - lo + 1) if seed else 7
        return value if value != default else value + 1 if value < hi else value - 1
    if kind == "bool":
        return not default
    if kind == "float64":
        return 1.5 + seed
    if kind == "uuid":
        return UUID(int=0x1234_5678_9ABC_DEF0 + seed)
    if kind == "string":
        return f"s{seed}-é"
    if kind in ("bytes", "records"):
        return bytes([seed % 256, 1, 2, 3])
    raise AssertionError(kind)


def sample(
    root: type[Struct],
    cls: type[Struct],
    version: int,
    *,
    nulls: bool = False,
    seed: int = 0,
    depth: int = 0,
) -> Struct:
    """An instance of ``cls`` (a struct of message ``root``) with every present field set."""
    kwargs: dict[str, Any] = {}
    for i, f in enumerate(cls.FIELDS):
        if not present(f, version):
            continue
        s = seed * 31 + i + 1
        if nulls and nullable(f, version):
            kwargs[f.name] = None
        elif f.type.startswith("[]"):
            elem = f.type[2:]
            if nulls:
                kwargs[f.name] = []
            elif elem in INT_RANGES or elem in ("string", "uuid", "bool", "float64", "bytes"):
                kwargs[f.name] = [_scalar(elem, s + k, None) for k in range(2)]
            else:
                n = 2 if depth < 3 else 1
                kwargs[f.name] = [
                    sample(root, _struct_of(root, f), version, seed=s + k, depth=depth + 1)
                    for k in range(n)
                ]
        elif f.type in INT_RANGES or f.type in (
            "string",
            "uuid",
            "bool",
            "float64",
            "bytes",
            "records",
        ):
            kwargs[f.name] = _scalar(f.type, s, f.default)
        else:
            kwargs[f.name] = sample(
                root, _struct_of(root, f), version, nulls=nulls, seed=s, depth=depth + 1
            )
    return cls(**kwargs)


# ---------------------------------------------------------------------------
# hypothesis strategies


def _scalar_strategy(kind: str) -> st.SearchStrategy[Any]:
    if kind in INT_RANGES:
        lo, hi = INT_RANGES[kind]
        return st.integers(lo, hi)
    if kind == "bool":
        return st.booleans()
    if kind == "float64":
        return st.floats(allow_nan=False)
    if kind == "uuid":
        return st.uuids() | st.just(UUID(int=0))
    if kind == "string":
        return st.text(max_size=6)
    if kind in ("bytes", "records"):
        return st.binary(max_size=12)
    raise AssertionError(kind)


def strategy(
    root: type[Struct], cls: type[Struct], version: int, depth: int = 0
) -> st.SearchStrategy[Struct]:
    """Any valid instance of ``cls`` at ``version``: absent fields keep their defaults."""
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    max_len = 3 if depth < 2 else 1
    for f in cls.FIELDS:
        if not present(f, version):
            continue
        if f.type.startswith("[]"):
            elem = f.type[2:]
            if elem in INT_RANGES or elem in ("string", "uuid", "bool", "float64", "bytes"):
                inner = _scalar_strategy(elem)
            else:
                inner = strategy(root, _struct_of(root, f), version, depth + 1)
            value = st.lists(inner, max_size=max_len)
        elif f.type in INT_RANGES or f.type in (
            "string",
            "uuid",
            "bool",
            "float64",
            "bytes",
            "records",
        ):
            value = _scalar_strategy(f.type)
        else:
            value = strategy(root, _struct_of(root, f), version, depth + 1)
        if nullable(f, version):
            value = st.none() | value
        kwargs[f.name] = value
    return st.builds(cls, **kwargs)
