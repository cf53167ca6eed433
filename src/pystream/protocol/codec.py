"""Runtime of the Kafka wire codec: a bounds-checked reader, a writer, and the
base class of every generated message struct.

The generated modules in :mod:`pystream.protocol.messages` are straight-line
code that calls the primitives here, one function per (struct, wire layout).

Decoding rules (what makes a frame "malformed"):

* every length and count is checked against the bytes that remain *before*
  anything is allocated, so a 4-byte frame claiming a 2 GiB string costs
  nothing;
* ``-1`` (or compact ``0``) means null only where the field is nullable in that
  version; any other negative length is an error;
* tagged-field sections must have strictly ascending tag ids, and each field
  must use exactly the bytes its size prefix declares;
* strings must be valid UTF-8.

Every such failure raises :class:`ProtocolDecodeError` (an ``INVALID_REQUEST``
error) whose message names the field and the byte offset.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from operator import attrgetter
from typing import Any, ClassVar, NamedTuple
from uuid import UUID

from pystream.errors import InvalidRequestError, UnsupportedVersionError

__all__ = [
    "UNSET",
    "ZERO_UUID",
    "Field",
    "ProtocolDecodeError",
    "Reader",
    "Struct",
    "VersionedData",
    "Versions",
    "Writer",
    "uuid_from_bytes",
]

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_NULL16 = _I16.pack(-1)
_NULL32 = _I32.pack(-1)
_ZERO16 = bytes(16)

ZERO_UUID = UUID(int=0)
"""Kafka's default for uuid fields (``Uuid.ZERO_UUID``)."""

_INT16_MAX = 0x7FFF
_INT32_MAX = 0x7FFFFFFF
_UVARINT32_MAX_BYTES = 5
_VARINT64_MAX_BYTES = 10


class ProtocolDecodeError(InvalidRequestError):
    """Bytes on the wire do not form a valid message (INVALID_REQUEST, 42).

    The message names the field and the byte offset, so the connection can be
    closed with a precise logged reason.
    """


class _Unset:
    """Marker for "use the schema default" in generated ``__init__`` signatures.

    Needed because ``None`` is a real value (null) for nullable arrays/structs,
    and a list default must be fresh per instance.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


class Versions(NamedTuple):
    """An inclusive version range; ``hi is None`` means "and every later version"."""

    lo: int
    hi: int | None = None

    def __contains__(self, version: object) -> bool:  # type: ignore[override]
        if not isinstance(version, int):
            return False
        return self.lo <= version and (self.hi is None or version <= self.hi)

    def __str__(self) -> str:
        if self.hi is None:
            return f"{self.lo}+"
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"


class Field(NamedTuple):
    """Facts about one schema field, as generated from Kafka's JSON."""

    name: str
    """Attribute name (snake_case of the JSON name)."""
    type: str
    """Kafka type: ``int32``, ``string``, ``[]int32``, ``[]StructName``, ``StructName``..."""
    versions: Versions
    nullable: Versions | None = None
    tag: int | None = None
    tagged: Versions | None = None
    default: Any = None
    """The JSON default for scalars; ``UNSET`` for arrays/structs (empty / all defaults)."""


# ---------------------------------------------------------------------------
# Reader

# Cached struct.Struct for primitive arrays of small counts (partition lists, replica ids).
_ARRAY_PACKERS: dict[tuple[str, int], struct.Struct] = {}
_ARRAY_PACKER_MAX_COUNT = 256


def _array_packer(fmt: str, count: int) -> struct.Struct:
    packer = _ARRAY_PACKERS.get((fmt, count))
    if packer is None:
        packer = struct.Struct(f">{count}{fmt}")
        if count <= _ARRAY_PACKER_MAX_COUNT:
            _ARRAY_PACKERS[(fmt, count)] = packer
    return packer


class Reader:
    """Bounds-checked cursor over a memoryview.

    ``end`` is the current read limit; it is narrowed while a tagged field is
    read so the field cannot run past its declared size. Every method takes
    ``what`` (the field's name, for error messages); variable-length readers
    take ``nullable`` (whether -1 / compact 0 may mean null at this version).
    """

    __slots__ = ("buf", "pos", "end")

    def __init__(self, data: Any, pos: int = 0, end: int | None = None) -> None:
        buf = data if type(data) is memoryview else memoryview(data)
        if buf.ndim != 1 or buf.itemsize != 1:
            buf = buf.cast("B")
        size = len(buf)
        end = size if end is None else end
        if not 0 <= pos <= end <= size:
            raise ValueError(f"bad reader window [{pos}:{end}] over {size} bytes")
        self.buf = buf
        self.pos = pos
        self.end = end

    @property
    def remaining(self) -> int:
        """Bytes left before the current limit."""
        return self.end - self.pos

    # -- errors -------------------------------------------------------------

    def error(self, what: str, reason: str) -> ProtocolDecodeError:
        """A decode error for field ``what`` at the current offset."""
        return ProtocolDecodeError(f"{what}: {reason} (at byte {self.pos})")

    def _truncated(self, what: str, need: int) -> ProtocolDecodeError:
        return self.error(what, f"truncated: need {need} bytes, {self.end - self.pos} left")

    def expect_end(self, what: str) -> None:
        """Fail unless every byte up to the limit was consumed (a message must fill its frame)."""
        if self.pos != self.end:
            raise self.error(what, f"{self.end - self.pos} unexpected bytes after the message")

    # -- fixed width --------------------------------------------------------

    def unpack(self, packer: struct.Struct, what: str) -> tuple[Any, ...]:
        """Read a run of fixed-width fields with one precompiled ``struct.Struct``."""
        pos = self.pos
        stop = pos + packer.size
        if stop > self.end:
            raise self._truncated(what, packer.size)
        self.pos = stop
        return packer.unpack_from(self.buf, pos)

    def int8(self, what: str) -> int:
        return self.unpack(_I8, what)[0]

    def int16(self, what: str) -> int:
        return self.unpack(_I16, what)[0]

    def int32(self, what: str) -> int:
        return self.unpack(_I32, what)[0]

    def uuid(self, what: str) -> UUID:
        pos = self.pos
        if pos + 16 > self.end:
            raise self._truncated(what, 16)
        self.pos = pos + 16
        return uuid_from_bytes(bytes(self.buf[pos : pos + 16]))

    # -- varints ------------------------------------------------------------

    def uvarint(self, what: str) -> int:
        """Unsigned varint of at most 5 bytes (a uint32), as Kafka's readUnsignedVarint."""
        buf = self.buf
        pos = self.pos
        end = self.end
        value = 0
        shift = 0
        for _ in range(_UVARINT32_MAX_BYTES):
            if pos >= end:
                raise self.error(what, "truncated unsigned varint")
            b = buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                if value > 0xFFFFFFFF:
                    raise self.error(what, "unsigned varint exceeds 32 bits")
                self.pos = pos
                return value
            shift += 7
        raise self.error(what, "unsigned varint longer than 5 bytes")

    def uvarlong(self, what: str) -> int:
        """Unsigned varint of at most 10 bytes (a uint64)."""
        buf = self.buf
        pos = self.pos
        end = self.end
        value = 0
        shift = 0
        for _ in range(_VARINT64_MAX_BYTES):
            if pos >= end:
                raise self.error(what, "truncated varint")
            b = buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                if value >> 64:
                    raise self.error(what, "varint exceeds 64 bits")
                self.pos = pos
                return value
            shift += 7
        raise self.error(what, "varint longer than 10 bytes")

    def varint(self, what: str) -> int:
        """Zig-zag signed varint (int32)."""
        u = self.uvarint(what)
        return (u >> 1) ^ -(u & 1)

    def varlong(self, what: str) -> int:
        """Zig-zag signed varint (int64)."""
        u = self.uvarlong(what)
        return (u >> 1) ^ -(u & 1)

    # -- lengths ------------------------------------------------------------

    def _bad_length(self, what: str, n: int) -> ProtocolDecodeError:
        if n == -1:
            return self.error(what, "invalid length -1 for a non-nullable field")
        return self.error(what, f"invalid negative length {n}")

    def _too_long(self, what: str, n: int, min_size: int) -> ProtocolDecodeError:
        scale = f" (x{min_size} bytes)" if min_size != 1 else ""
        return self.error(what, f"length {n}{scale} exceeds the {self.end - self.pos} bytes left")

    def length(self, what: str, nullable: bool, min_size: int = 1) -> int:
        """An int32 length or element count; -1 for null (only if ``nullable``).

        ``min_size`` is the fewest bytes one element takes, so a count is
        rejected unless ``count * min_size`` bytes remain: nothing is ever
        allocated for data that is not there.
        """
        pos = self.pos
        if pos + 4 > self.end:
            raise self._truncated(what, 4)
        n = _I32.unpack_from(self.buf, pos)[0]
        self.pos = pos + 4
        if n < 0:
            if n == -1 and nullable:
                return -1
            raise self._bad_length(what, n)
        if n * min_size > self.end - pos - 4:
            raise self._too_long(what, n, min_size)
        return n

    def compact_length(self, what: str, nullable: bool, min_size: int = 1) -> int:
        """A compact length (unsigned varint N+1, 0 = null); -1 for null."""
        pos = self.pos
        if pos < self.end and self.buf[pos] < 0x80:  # one-byte fast path
            n = self.buf[pos] - 1
            self.pos = pos + 1
        else:
            n = self.uvarint(what) - 1
        if n < 0:
            if nullable:
                return -1
            raise self.error(what, "null (compact length 0) for a non-nullable field")
        if n > _INT32_MAX:
            raise self.error(what, f"compact length {n} exceeds INT32_MAX")
        if n * min_size > self.end - self.pos:
            raise self._too_long(what, n, min_size)
        return n

    # -- strings ------------------------------------------------------------

    def _text(self, n: int, what: str) -> str:
        pos = self.pos
        try:
            text = str(self.buf[pos : pos + n], "utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(what, f"invalid UTF-8 in string: {exc.reason}") from None
        self.pos = pos + n
        return text

    def string(self, what: str, nullable: bool = False) -> str | None:
        """An int16-length string (``nullable``: -1 is None)."""
        pos = self.pos
        if pos + 2 > self.end:
            raise self._truncated(what, 2)
        n = _I16.unpack_from(self.buf, pos)[0]
        self.pos = pos + 2
        if n < 0:
            if n == -1 and nullable:
                return None
            raise self._bad_length(what, n)
        if n > self.end - pos - 2:
            raise self._too_long(what, n, 1)
        return self._text(n, what)

    def compact_string(self, what: str, nullable: bool = False) -> str | None:
        """A compact string (``nullable``: length 0 is None)."""
        n = self.compact_length(what, nullable)
        if n < 0:
            return None
        if n > _INT16_MAX:
            raise self.error(what, f"string length {n} exceeds INT16_MAX")
        return self._text(n, what)

    # -- bytes and records --------------------------------------------------

    def _view(self, n: int) -> memoryview:
        pos = self.pos
        self.pos = pos + n
        return self.buf[pos : pos + n]

    def bytes(self, what: str, nullable: bool = False) -> bytes | None:
        n = self.length(what, nullable)
        return None if n < 0 else bytes(self._view(n))

    def compact_bytes(self, what: str, nullable: bool = False) -> bytes | None:
        n = self.compact_length(what, nullable)
        return None if n < 0 else bytes(self._view(n))

    # Record sets stay raw: zero-copy slices of the input, never parsed here.

    def records(self, what: str, nullable: bool = False) -> memoryview | None:
        n = self.length(what, nullable)
        if n < 0:
            return None
        pos = self.pos
        self.pos = pos + n
        return self.buf[pos : pos + n]

    def compact_records(self, what: str, nullable: bool = False) -> memoryview | None:
        n = self.compact_length(what, nullable)
        if n < 0:
            return None
        pos = self.pos
        self.pos = pos + n
        return self.buf[pos : pos + n]

    # -- arrays of primitives -------------------------------------------------

    def fixed_array(
        self, fmt: str, size: int, what: str, nullable: bool, compact: bool
    ) -> list[Any] | None:
        """Length and values of an array of fixed-width values (struct format ``fmt``)."""
        buf = self.buf
        pos = self.pos
        if compact and pos < self.end and 1 < buf[pos] < 0x80:
            # fast path: short non-empty compact array that fits
            n = buf[pos] - 1
            stop = pos + 1 + n * size
            if stop <= self.end:
                self.pos = stop
                return list(_array_packer(fmt, n).unpack_from(buf, pos + 1))
        if compact:
            n = self.compact_length(what, nullable, size)
        else:
            n = self.length(what, nullable, size)
        if n <= 0:
            return None if n < 0 else []
        pos = self.pos
        self.pos = pos + n * size
        return list(_array_packer(fmt, n).unpack_from(buf, pos))

    def uuid_array(self, what: str, nullable: bool, compact: bool) -> list[UUID] | None:
        if compact:
            n = self.compact_length(what, nullable, 16)
        else:
            n = self.length(what, nullable, 16)
        return None if n < 0 else [self.uuid(what) for _ in range(n)]

    # -- tagged fields ------------------------------------------------------

    def tags(self, what: str) -> Iterator[int]:
        """Walk a tagged-field section, yielding each tag id.

        While the caller handles a tag, ``end`` is narrowed to that field's
        bytes; the caller reads the field, or skips it with ``pos = end``.
        Tag ids must ascend strictly and each field must use exactly its size.
        """
        count = self.uvarint(what)
        if count * 2 > self.end - self.pos:  # each tagged field needs >= 2 bytes
            raise self.error(
                what, f"{count} tagged fields cannot fit in {self.end - self.pos} bytes"
            )
        outer_end = self.end
        last = -1
        for _ in range(count):
            tag = self.uvarint(what)
            if tag <= last:
                raise self.error(
                    what, f"tag {tag} after tag {last}: duplicate or descending tag ids"
                )
            last = tag
            size = self.uvarint(what)
            stop = self.pos + size
            if stop > outer_end:
                raise self.error(what, f"tagged field {tag} size {size} exceeds the bytes left")
            self.end = stop
            yield tag
            self.end = outer_end
            if self.pos != stop:
                raise self.error(
                    what,
                    f"tagged field {tag} declared {size} bytes but its value used "
                    f"{size - (stop - self.pos)}",
                )

    def skip_tags(self, what: str) -> None:
        """Read a tagged-field section whose tags are all unknown at this version."""
        pos = self.pos
        if pos < self.end and self.buf[pos] == 0:  # the usual empty section
            self.pos = pos + 1
            return
        for _ in self.tags(what):
            self.pos = self.end


def uuid_from_bytes(raw: bytes) -> UUID:
    """A UUID from 16 big-endian bytes; the all-zero one is shared."""
    if raw == _ZERO16:
        return ZERO_UUID
    return UUID(bytes=raw)


# ---------------------------------------------------------------------------
# Writer


def _null_error(kind: str) -> ValueError:
    return ValueError(f"null given for a non-nullable {kind} field")


class Writer(bytearray):
    """Output buffer. Generated code appends fixed-width runs with ``w += packer.pack(...)``.

    Variable-length writers take ``nullable``: whether None may be written as
    null; None for a non-nullable field is a caller bug and raises ValueError.
    """

    __slots__ = ()

    def uvarint(self, value: int) -> None:
        if not 0 <= value <= 0xFFFFFFFFFFFFFFFF:
            raise ValueError(f"unsigned varint out of range: {value}")
        while value > 0x7F:
            self.append((value & 0x7F) | 0x80)
            value >>= 7
        self.append(value)

    def varint(self, value: int) -> None:
        """Zig-zag signed varint (int32)."""
        if not -0x80000000 <= value <= 0x7FFFFFFF:
            raise ValueError(f"varint out of int32 range: {value}")
        self.uvarint(((value << 1) ^ (value >> 31)) & 0xFFFFFFFF)

    def varlong(self, value: int) -> None:
        """Zig-zag signed varint (int64)."""
        if not -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF:
            raise ValueError(f"varlong out of int64 range: {value}")
        self.uvarint(((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF)

    def uuid(self, value: UUID) -> None:
        self += value.bytes

    # -- lengths: return False when the value is null (nothing more to write) --

    def length(self, value: Any, nullable: bool = False) -> bool:
        """Write the int32 length/count of ``value`` (-1 for None)."""
        if value is None:
            if not nullable:
                raise _null_error("array/bytes")
            self += _NULL32
            return False
        self += _I32.pack(len(value))
        return True

    def compact_length(self, value: Any, nullable: bool = False) -> bool:
        """Write the compact length/count of ``value`` (N+1; 0 for None)."""
        if value is None:
            if not nullable:
                raise _null_error("array/bytes")
            self.append(0)
            return False
        n = len(value) + 1
        if n < 0x80:
            self.append(n)
        else:
            self.uvarint(n)
        return True

    # -- strings ------------------------------------------------------------

    def string(self, value: str | None, nullable: bool = False) -> None:
        if value is None:
            if not nullable:
                raise _null_error("string")
            self += _NULL16
            return
        data = value.encode()
        if len(data) > _INT16_MAX:
            raise ValueError(f"string of {len(data)} bytes exceeds INT16_MAX")
        self += _I16.pack(len(data))
        self += data

    def compact_string(self, value: str | None, nullable: bool = False) -> None:
        if value is None:
            if not nullable:
                raise _null_error("string")
            self.append(0)
            return
        data = value.encode()
        n = len(data)
        if n > _INT16_MAX:
            raise ValueError(f"string of {n} bytes exceeds INT16_MAX")
        if n < 0x7F:
            self.append(n + 1)
        else:
            self.uvarint(n + 1)
        self += data

    # -- bytes and records (any buffer: bytes, bytearray, memoryview) ---------

    def bytes(self, value: Any, nullable: bool = False) -> None:
        if self.length(value, nullable):
            self += value

    def compact_bytes(self, value: Any, nullable: bool = False) -> None:
        if self.compact_length(value, nullable):
            self += value

    records = bytes
    compact_records = compact_bytes

    # -- arrays of primitives -------------------------------------------------

    def fixed_array(
        self, fmt: str, values: list[Any] | None, nullable: bool, compact: bool
    ) -> None:
        """Length and values of an array of fixed-width values (struct format ``fmt``)."""
        if values is None:
            (self.compact_length if compact else self.length)(None, nullable)
            return
        n = len(values)
        if not compact:
            self += _I32.pack(n)
        elif n < 0x7F:
            self.append(n + 1)
        else:
            self.uvarint(n + 1)
        if n:
            self += _array_packer(fmt, n).pack(*values)

    def uuid_array(self, values: list[UUID] | None, nullable: bool, compact: bool) -> None:
        if (self.compact_length if compact else self.length)(values, nullable):
            for v in values:  # type: ignore[union-attr]
                self += v.bytes

    # -- tagged fields --------------------------------------------------------

    def tag_section(self, fields: list[tuple[int, bytearray]]) -> None:
        """Write a tagged-field section from ``(tag, encoded value)`` pairs in tag order."""
        self.uvarint(len(fields))
        for tag, data in fields:
            self.uvarint(tag)
            self.uvarint(len(data))
            self += data


# ---------------------------------------------------------------------------
# Base class of generated structs


def _short(value: Any) -> str:
    if isinstance(value, memoryview | bytearray):
        value = bytes(value)
    if isinstance(value, bytes) and len(value) > 32:
        return f"<{len(value)} bytes>"
    return repr(value)


class Struct:
    """Base of every generated message and nested struct.

    Subclasses define ``__slots__`` (one per field), ``FIELDS`` and the
    per-version codec tables ``_READERS`` / ``_WRITERS`` (version -> function);
    a faster hand-written codec can replace an entry in those tables.
    """

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]  # mutable

    FIELDS: ClassVar[tuple[Field, ...]] = ()
    _READERS: ClassVar[dict[int, Any]] = {}
    _WRITERS: ClassVar[dict[int, Any]] = {}
    _values: ClassVar[Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # all field values as one tuple, for a fast __eq__
        names = cls.__slots__
        cls._values = staticmethod(
            attrgetter(*names)
            if len(names) > 1
            else (lambda o: (getattr(o, names[0]),))
            if names
            else (lambda o: ())
        )

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        values = self._values
        return values(self) == values(other)

    def __repr__(self) -> str:
        body = ", ".join(f"{n}={_short(getattr(self, n))}" for n in self.__slots__)
        return f"{type(self).__qualname__}({body})"

    @classmethod
    def versions(cls) -> list[int]:
        """Versions this struct can be encoded and decoded at."""
        return sorted(cls._READERS)

    def write(self, writer: Writer, version: int) -> None:
        """Append this struct, encoded at ``version``, to ``writer``."""
        try:
            write = self._WRITERS[version]
        except KeyError:
            raise UnsupportedVersionError(
                f"{type(self).__qualname__} has no version {version}"
            ) from None
        write(writer, self)

    def encode(self, version: int) -> bytes:
        """This struct encoded at ``version`` (no header, no size prefix)."""
        writer = Writer()
        self.write(writer, version)
        return bytes(writer)

    @classmethod
    def decode(cls, data: Any, version: int) -> Any:
        """Decode one struct at ``version``.

        ``data`` is a :class:`Reader` (read from its position, leave it after
        the struct) or any buffer (which must hold exactly one struct).
        """
        try:
            read = cls._READERS[version]
        except KeyError:
            raise UnsupportedVersionError(f"{cls.__qualname__} has no version {version}") from None
        if isinstance(data, Reader):
            return read(data)
        reader = Reader(data)
        obj = read(reader)
        reader.expect_end(f"{cls.__qualname__} v{version}")
        return obj


class VersionedData(Struct):
    """A data schema stored with an int16 version prefix.

    Used for the consumer protocol's subscription/assignment bytes and for the
    keys/values of ``__consumer_offsets`` and ``__transaction_state``.
    """

    __slots__ = ()

    def encode_versioned(self, version: int) -> bytes:
        """``int16 version`` followed by the struct encoded at that version."""
        writer = Writer(_I16.pack(version))
        self.write(writer, version)
        return bytes(writer)

    @classmethod
    def decode_versioned(cls, data: Any, allow_newer: bool = False) -> tuple[int, Any]:
        """Read the int16 version prefix, then the struct; returns ``(version, struct)``.

        With ``allow_newer`` a version above the highest known one is read as
        the highest and trailing bytes are ignored: Kafka's forward-compatible
        rule for the consumer protocol.
        """
        reader = Reader(data)
        version = reader.int16(f"{cls.__qualname__} version")
        newest = max(cls._READERS)
        if allow_newer and version > newest:
            return version, cls._READERS[newest](reader)
        return version, cls.decode(reader.buf[reader.pos :], version)
