# cython: language_level=3
"""A v2 JSON produce body split into its records' key and value bytes in one pass.

The general path parses the body (orjson) into Python objects and encodes every key
and value back to compact JSON: on 100-record requests that is a third of the
proxy's CPU.  Most bodies are already compact, so a key's or value's stored bytes
are its own text: ``split_json_records`` validates the body as strict JSON and
slices them out.  A value whose text is not what ``compact_json(parse_json(text))``
gives (whitespace, ``\\u``/``\\/`` escapes, an exponent, a float not in its shortest
form, a duplicated object key, an integer of 19 digits or more) goes through those
two functions alone, so the bytes are always the general path's.  Anything else --
another top-level key, a malformed body, a bad partition -- answers None and the
caller takes the general path, which gives the errors their messages.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject
from libc.string cimport memchr, memcmp, strlen

from .formats import compact_json, parse_json


cdef extern from "Python.h":
    double PyOS_string_to_double(const char* s, char** endptr, PyObject* overflow_exception) except? -1.0
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags, int* ptype)
    void* PyMem_Malloc(size_t n)
    void PyMem_Free(void* p)
    int Py_DTSF_ADD_DOT_0


cdef enum:
    REJECT = -1            # not the simple shape, or not valid JSON: the general path
    MAX_DEPTH = 64         # deeper values go the general way (its own limits apply)
    MAX_KEYS_COMPARED = 32  # an object's keys checked for duplicates; beyond: rewritten
    MAX_FLOAT_TEXT = 40    # longer floats are rewritten without the round-trip check


cdef inline bint _is_ws(unsigned char c) noexcept:
    return c == 32 or c == 10 or c == 13 or c == 9


cdef inline bint _is_digit(unsigned char c) noexcept:
    return 48 <= c <= 57


cdef inline bint _is_hex(unsigned char c) noexcept:
    return _is_digit(c) or 65 <= c <= 70 or 97 <= c <= 102


cdef bint _shortest_positional(const unsigned char* s, Py_ssize_t size) noexcept:
    """Whether a float's text (grammar checked, a fraction, no exponent) is the one
    repr and orjson write, without converting it: at most 15 significant digits
    (DBL_DIG: no shorter text reads as the same double, so the digits are the
    shortest round trip's), no trailing zero but in "N.0", and a magnitude repr
    writes without an exponent (1e-4 <= |x| < 1e16)."""
    cdef Py_ssize_t i = 0, dot, significant = 0, leading_zeros = 0
    cdef bint nonzero_seen = False
    if s[0] == 45:
        i = 1
    dot = i
    while s[dot] != 46:
        dot += 1
    if dot - i > 16:
        return False
    if s[size - 1] == 48 and size - dot != 2:
        return False  # 1.50: repr writes 1.5
    for k in range(i, size):
        if s[k] == 46:
            continue
        if s[k] != 48:
            nonzero_seen = True
        if nonzero_seen:
            significant += 1
        elif k > dot:
            leading_zeros += 1
    if significant > 15:
        return False
    if dot - i == 1 and s[i] == 48 and nonzero_seen and leading_zeros > 3:
        return False  # below 1e-4 repr switches to an exponent
    return True


cdef class _Scanner:
    cdef const unsigned char* s
    cdef Py_ssize_t n
    cdef bint rewrite  # the value being scanned is not in compact_json's form
    cdef bint spaced   # it has whitespace between its tokens (dropped here, in C)

    cdef inline Py_ssize_t skip_ws(self, Py_ssize_t i) noexcept:
        while i < self.n and _is_ws(self.s[i]):
            i += 1
        return i

    cdef inline Py_ssize_t skip_ws_inside(self, Py_ssize_t i) noexcept:
        """Whitespace inside a value: compact_json would drop it."""
        cdef Py_ssize_t j = self.skip_ws(i)
        if j != i:
            self.spaced = True
        return j

    cdef Py_ssize_t string(self, Py_ssize_t i) noexcept:
        """``s[i]`` is a quote: the index after the closing one, or REJECT."""
        cdef unsigned char c, c1
        cdef const unsigned char* s = self.s
        cdef Py_ssize_t n = self.n
        i += 1
        while i < n:
            c = s[i]
            if c == 34:  # "
                return i + 1
            if c == 92:  # backslash
                if i + 1 >= n:
                    return REJECT
                c1 = s[i + 1]
                # orjson writes these escapes as they are; \/ and \u it does not.
                if c1 == 34 or c1 == 92 or c1 == 110 or c1 == 114 or c1 == 116 or c1 == 98 or c1 == 102:
                    i += 2
                elif c1 == 47:
                    self.rewrite = True
                    i += 2
                elif c1 == 117:
                    if i + 5 >= n or not (
                        _is_hex(s[i + 2]) and _is_hex(s[i + 3]) and _is_hex(s[i + 4]) and _is_hex(s[i + 5])
                    ):
                        return REJECT
                    self.rewrite = True
                    i += 6
                else:
                    return REJECT
            elif c < 32:
                return REJECT
            elif c < 128:
                i += 1
            else:
                i = self.utf8(i)
                if i == REJECT:
                    return REJECT
        return REJECT

    cdef Py_ssize_t utf8(self, Py_ssize_t i) noexcept:
        """One multi-byte UTF-8 sequence at ``i`` (well-formed: no overlongs, no
        surrogates, at most U+10FFFF, as orjson demands): the index after it."""
        cdef const unsigned char* s = self.s
        cdef unsigned char c = s[i]
        cdef unsigned char lo = 0x80, hi = 0xBF
        cdef int more, k
        if 0xC2 <= c <= 0xDF:
            more = 1
        elif 0xE0 <= c <= 0xEF:
            more = 2
            if c == 0xE0:
                lo = 0xA0
            elif c == 0xED:
                hi = 0x9F
        elif 0xF0 <= c <= 0xF4:
            more = 3
            if c == 0xF0:
                lo = 0x90
            elif c == 0xF4:
                hi = 0x8F
        else:
            return REJECT
        if i + more >= self.n:
            return REJECT
        if not (lo <= s[i + 1] <= hi):
            return REJECT
        for k in range(2, more + 1):
            if not (0x80 <= s[i + k] <= 0xBF):
                return REJECT
        return i + more + 1

    cdef Py_ssize_t number(self, Py_ssize_t i) noexcept:
        """A JSON number at ``i``: the index after it, or REJECT."""
        cdef const unsigned char* s = self.s
        cdef Py_ssize_t n = self.n, start = i, digits_start
        cdef bint fraction = False, exponent = False
        cdef char* end
        cdef char* text
        cdef double value
        if s[i] == 45:  # -
            i += 1
        digits_start = i
        if i >= n:
            return REJECT
        if s[i] == 48:  # 0
            i += 1
        elif _is_digit(s[i]):
            while i < n and _is_digit(s[i]):
                i += 1
        else:
            return REJECT
        if i < n and s[i] == 46:  # .
            fraction = True
            i += 1
            if i >= n or not _is_digit(s[i]):
                return REJECT
            while i < n and _is_digit(s[i]):
                i += 1
        if i < n and (s[i] == 101 or s[i] == 69):  # e E
            exponent = True
            i += 1
            if i < n and (s[i] == 43 or s[i] == 45):
                i += 1
            if i >= n or not _is_digit(s[i]):
                return REJECT
            while i < n and _is_digit(s[i]):
                i += 1
        if exponent or i - start > MAX_FLOAT_TEXT:
            self.rewrite = True
        elif not fraction:
            # -0 is written 0; 19+ digits may exceed 64 bits (parse_json's own rule).
            if i - digits_start >= 19 or (i - start == 2 and s[start] == 45 and s[start + 1] == 48):
                self.rewrite = True
        elif not _shortest_positional(s + start, i - start):
            # A float is written in its shortest round-trip form (repr's, when that has
            # no exponent): other spellings of the same number are rewritten.
            value = PyOS_string_to_double(<const char*>s + start, &end, NULL)
            text = PyOS_double_to_string(value, c'r', 0, Py_DTSF_ADD_DOT_0, NULL)
            if text == NULL:
                return REJECT
            if <Py_ssize_t>strlen(text) != i - start or memcmp(text, s + start, i - start) != 0:
                self.rewrite = True
            PyMem_Free(text)
        return i

    cdef Py_ssize_t literal(self, Py_ssize_t i, const char* word, Py_ssize_t size) noexcept:
        if i + size <= self.n and memcmp(self.s + i, word, size) == 0:
            return i + size
        return REJECT

    cdef Py_ssize_t value(self, Py_ssize_t i, int depth) noexcept:
        """A JSON value at ``i`` (not whitespace): the index after it, or REJECT."""
        cdef unsigned char c
        if i >= self.n:
            return REJECT
        c = self.s[i]
        if c == 34:
            return self.string(i)
        if c == 123:
            return self.object(i, depth + 1)
        if c == 91:
            return self.array(i, depth + 1)
        if c == 45 or _is_digit(c):
            return self.number(i)
        if c == 116:
            return self.literal(i, b"true", 4)
        if c == 102:
            return self.literal(i, b"false", 5)
        if c == 110:
            return self.literal(i, b"null", 4)
        return REJECT

    cdef Py_ssize_t array(self, Py_ssize_t i, int depth) noexcept:
        if depth > MAX_DEPTH:
            return REJECT
        i = self.skip_ws_inside(i + 1)
        if i < self.n and self.s[i] == 93:  # ]
            return i + 1
        while True:
            i = self.value(i, depth)
            if i == REJECT:
                return REJECT
            i = self.skip_ws_inside(i)
            if i >= self.n:
                return REJECT
            if self.s[i] == 93:
                return i + 1
            if self.s[i] != 44:  # ,
                return REJECT
            i = self.skip_ws_inside(i + 1)

    cdef Py_ssize_t object(self, Py_ssize_t i, int depth) noexcept:
        cdef Py_ssize_t key_start[MAX_KEYS_COMPARED]
        cdef Py_ssize_t key_size[MAX_KEYS_COMPARED]
        cdef Py_ssize_t keys = 0, start, k
        if depth > MAX_DEPTH:
            return REJECT
        i = self.skip_ws_inside(i + 1)
        if i < self.n and self.s[i] == 125:  # }
            return i + 1
        while True:
            if i >= self.n or self.s[i] != 34:
                return REJECT
            start = i
            i = self.string(i)
            if i == REJECT:
                return REJECT
            # A repeated key: the parsed object keeps the last value only.
            if keys < MAX_KEYS_COMPARED:
                for k in range(keys):
                    if key_size[k] == i - start and memcmp(self.s + key_start[k], self.s + start, i - start) == 0:
                        self.rewrite = True
                key_start[keys] = start
                key_size[keys] = i - start
                keys += 1
            else:
                self.rewrite = True
            i = self.skip_ws_inside(i)
            if i >= self.n or self.s[i] != 58:  # :
                return REJECT
            i = self.value(self.skip_ws_inside(i + 1), depth)
            if i == REJECT:
                return REJECT
            i = self.skip_ws_inside(i)
            if i >= self.n:
                return REJECT
            if self.s[i] == 125:
                return i + 1
            if self.s[i] != 44:
                return REJECT
            i = self.skip_ws_inside(i + 1)

    cdef Py_ssize_t partition(self, Py_ssize_t i, long* out) noexcept:
        """A record's ``partition``: null (-1) or a plain integer of up to 9 digits;
        anything else (negative, a float, a string) is for the general path's error."""
        cdef long p = 0
        cdef Py_ssize_t start = i
        if i < self.n and self.s[i] == 110:
            out[0] = -1
            return self.literal(i, b"null", 4)
        while i < self.n and _is_digit(self.s[i]):
            p = p * 10 + (self.s[i] - 48)
            i += 1
        if i == start or i - start > 9 or (self.s[start] == 48 and i - start > 1):
            return REJECT
        if i < self.n and (self.s[i] == 46 or self.s[i] == 101 or self.s[i] == 69):
            return REJECT
        out[0] = p
        return i


cdef enum:
    OTHER = 0
    KEY = 1
    VALUE = 2
    PARTITION = 4


cdef inline int _field(const unsigned char* name, Py_ssize_t size) noexcept:
    """Which field of a record a quoted name is (OTHER for those the proxy ignores)."""
    if size == 5 and memcmp(name, b'"key"', 5) == 0:
        return KEY
    if size == 7 and memcmp(name, b'"value"', 7) == 0:
        return VALUE
    if size == 11 and memcmp(name, b'"partition"', 11) == 0:
        return PARTITION
    return OTHER


cdef object _stored(_Scanner scanner, bytes body, Py_ssize_t start, Py_ssize_t end):
    """A key's or value's bytes as the general path stores them (None for null)."""
    if scanner.s[start] == 110:  # the one value starting with n
        return None
    if scanner.rewrite:
        return compact_json(parse_json(body[start:end]))
    if scanner.spaced:
        return _without_whitespace(scanner.s + start, end - start)
    return PyBytes_FromStringAndSize(<const char*>scanner.s + start, end - start)


cdef bytes _without_whitespace(const unsigned char* s, Py_ssize_t size):
    """A valid JSON value's text without the whitespace between its tokens."""
    cdef unsigned char* out = <unsigned char*>PyMem_Malloc(size)
    cdef Py_ssize_t i = 0, m = 0
    cdef bint in_string = False
    cdef unsigned char c
    if out == NULL:
        raise MemoryError()
    try:
        while i < size:
            c = s[i]
            if in_string:
                out[m] = c
                m += 1
                if c == 92:  # an escape: its next byte is copied as it is
                    out[m] = s[i + 1]
                    m += 1
                    i += 1
                elif c == 34:
                    in_string = False
            elif not _is_ws(c):
                out[m] = c
                m += 1
                if c == 34:
                    in_string = True
            i += 1
        return PyBytes_FromStringAndSize(<const char*>out, m)
    finally:
        PyMem_Free(out)


def split_json_records(bytes body):
    """``[(key, value, partition), ...]`` of a v2 body ``{"records": [{"key": …,
    "value": …, "partition": …}, …]}`` in the JSON embedded format, keys and values
    as the compact JSON bytes Kafka stores; None when the body should take the
    general path (another shape, an empty list, invalid JSON, a bad partition)."""
    cdef _Scanner scanner = _Scanner()
    cdef Py_ssize_t i, start, end
    cdef long partition_value
    cdef int seen, field
    cdef object key, value, partition
    cdef list records = []
    scanner.s = <const unsigned char*>PyBytes_AS_STRING(body)
    scanner.n = PyBytes_GET_SIZE(body)
    i = scanner.skip_ws(0)
    if scanner.literal(i, b"{", 1) == REJECT:
        return None
    i = scanner.skip_ws(i + 1)
    i = scanner.literal(i, b'"records"', 9)
    if i == REJECT:
        return None
    i = scanner.skip_ws(i)
    if scanner.literal(i, b":", 1) == REJECT:
        return None
    i = scanner.skip_ws(i + 1)
    if scanner.literal(i, b"[", 1) == REJECT:
        return None
    i = scanner.skip_ws(i + 1)
    try:
        while True:
            if scanner.literal(i, b"{", 1) == REJECT:
                return None
            key = value = partition = None
            seen = 0
            i = scanner.skip_ws(i + 1)
            if scanner.literal(i, b"}", 1) == REJECT:
                while True:
                    start = i
                    if scanner.literal(i, b'"', 1) == REJECT:
                        return None
                    i = scanner.string(i)
                    if i == REJECT:
                        return None
                    end = i
                    if memchr(scanner.s + start, 92, end - start) != NULL:
                        return None  # an escaped field name may spell "value": parse it
                    i = scanner.skip_ws(i)
                    if scanner.literal(i, b":", 1) == REJECT:
                        return None
                    i = scanner.skip_ws(i + 1)
                    field = _field(scanner.s + start, end - start)
                    if field & seen:
                        return None  # a repeated field: the parsed object keeps the last
                    seen |= field
                    if field == PARTITION:
                        i = scanner.partition(i, &partition_value)
                        if i == REJECT:
                            return None
                        partition = None if partition_value < 0 else partition_value
                    else:
                        # A field the proxy does not read (escaped names declined above)
                        # is validated, then ignored as the general path ignores it.
                        scanner.rewrite = scanner.spaced = False
                        start = i
                        i = scanner.value(i, 0)
                        if i == REJECT:
                            return None
                        if field == KEY:
                            key = _stored(scanner, body, start, i)
                        elif field == VALUE:
                            value = _stored(scanner, body, start, i)
                        elif scanner.rewrite:
                            parse_json(body[start:i])  # 1e400 fails the body even here
                    i = scanner.skip_ws(i)
                    if scanner.literal(i, b",", 1) != REJECT:
                        i = scanner.skip_ws(i + 1)
                        continue
                    if scanner.literal(i, b"}", 1) == REJECT:
                        return None
                    break
            records.append((key, value, partition))
            i = scanner.skip_ws(i + 1)
            if scanner.literal(i, b",", 1) != REJECT:
                i = scanner.skip_ws(i + 1)
                continue
            if scanner.literal(i, b"]", 1) == REJECT:
                return None
            break
    except (ValueError, TypeError, OverflowError):
        return None  # a rewritten value the general path refuses: let it say why
    i = scanner.skip_ws(i + 1)
    if scanner.literal(i, b"}", 1) == REJECT:
        return None
    if scanner.skip_ws(i + 1) != scanner.n:
        return None
    return records
