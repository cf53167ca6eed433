# cython: language_level=3
"""Record-batch compression codecs, by Kafka's attribute codec id.

    0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd

The codecs themselves come from well-kept libraries (zlib, cramjam's snappy,
lz4.frame, zstandard).  What lives here is what Kafka adds on top of them and
what a broker must not trust:

* snappy: Java clients write *xerial* framing (``\\x82SNAPPY\\x00``, two int32
  version fields, then ``[int32 length][raw snappy block]*``), librdkafka
  writes one raw block.  We read both and write xerial, which every client
  reads.
* lz4: the LZ4 *frame* format with independent 64 KiB blocks and no content
  size, exactly as Java's KafkaLZ4BlockOutputStream writes it.
* zstd: frames written by streaming compressors (Java, librdkafka) carry no
  content size, so each frame is decoded in one shot into a buffer sized by
  the walk below.  Several frames in a row are read as one stream.
* ``max_size`` bounds the output *before* memory is committed: snappy blocks
  declare their sizes, zstd and lz4 frames are walked (headers only) for what
  they can produce at most, and gzip output is cut off at max_size + 1 bytes.
  A small batch cannot make the broker allocate gigabytes.  The same walks
  size the output buffers when there is no cap, and find truncated input.

Corrupt input raises CorruptMessageError naming the codec; an unknown codec
raises UnsupportedCompressionTypeError.
"""
import threading
import zlib

import cramjam
import lz4.frame
import zstandard

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint32_t, uint64_t
from pystream._core.endian cimport load_be32, load_le32
from libc.string cimport memcmp, memcpy

from pystream._core.varint cimport read_uvarint32

from pystream.errors import CorruptMessageError, UnsupportedCompressionTypeError


cdef extern from "Python.h":
    object PyMemoryView_FromMemory(char* mem, Py_ssize_t size, int flags)
    int PyBUF_WRITE


NONE = 0
GZIP = 1
SNAPPY = 2
LZ4 = 3
ZSTD = 4

cdef tuple _NAMES = ("none", "gzip", "snappy", "lz4", "zstd")
cdef dict _BY_NAME = {name: i for i, name in enumerate(_NAMES)}
_BY_NAME["uncompressed"] = NONE        # Kafka's spelling in topic configs

# Accepted `level` per codec: Kafka's compression.<codec>.level ranges
# (gzip also takes zlib's -1 = default).  None means the library default:
# gzip 6, lz4 fast mode, zstd 3.
cdef dict _LEVELS = {GZIP: (-1, 9), LZ4: (0, 17), ZSTD: (-131072, 22)}
cdef int _ZSTD_DEFAULT_LEVEL = 3

# Per-thread codec contexts: zstandard objects may not be shared by threads
# running at the same time (the library releases the GIL while it works).
_local = threading.local()


# ---------------------------------------------------------------- names

def codec_name(int codec) -> str:
    """Kafka's name for a codec id: 0 -> "none", 1 -> "gzip", ... 4 -> "zstd"."""
    _check_codec(codec)
    return _NAMES[codec]


def codec_from_name(str name) -> int:
    """Codec id for a name as used in ``compression.type`` (case-insensitive).

    Accepts none/uncompressed, gzip, snappy, lz4, zstd.
    """
    try:
        return _BY_NAME[name.strip().lower()]
    except KeyError:
        raise UnsupportedCompressionTypeError(
            f"unknown compression type {name!r}: use one of "
            "none (or uncompressed), gzip, snappy, lz4, zstd"
        ) from None


cdef inline int _check_codec(int codec) except -1:
    if codec < 0 or codec > 4:
        raise UnsupportedCompressionTypeError(
            f"unknown compression codec id {codec} in the batch attributes: "
            "Kafka knows 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd"
        )
    return 0


# ---------------------------------------------------------------- helpers

cdef object _byte_view(object data):
    """A flat unsigned-byte memoryview over any C-contiguous buffer."""
    cdef object mv = memoryview(data)
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    return mv


cdef object _corrupt(int codec, str detail):
    return CorruptMessageError(
        f"{_NAMES[codec]} compressed data is corrupt: {detail}; "
        "the producer sent a damaged batch, it must be produced again"
    )


cdef object _too_large(int codec, Py_ssize_t max_size):
    what = "the records take" if codec == NONE else f"{_NAMES[codec]} compressed data expands to"
    return CorruptMessageError(
        f"{what} more than {max_size} bytes, "
        "the limit for one batch; send smaller batches or raise the limit "
        "(max.message.bytes)"
    )



cdef object _join(list parts):
    return parts[0] if len(parts) == 1 else b"".join(parts)


# ---------------------------------------------------------------- snappy

cdef bytes _XERIAL_MAGIC = b"\x82SNAPPY\x00"
cdef Py_ssize_t _XERIAL_HEADER = 16          # magic + int32 version + int32 compat
cdef bytes _XERIAL_HEADER_V1 = _XERIAL_MAGIC + b"\x00\x00\x00\x01\x00\x00\x00\x01"
cdef Py_ssize_t _XERIAL_BLOCK = 32 * 1024    # uncompressed bytes per block, as Java
# Snappy's densest element is a 3-byte copy of 64 bytes, so no block expands
# more than ~21x: one claiming more than this many times its size is lying.
cdef Py_ssize_t _SNAPPY_MAX_RATIO = 32


cdef inline Py_ssize_t _snappy_max_len(Py_ssize_t n) noexcept nogil:
    return 32 + n + n // 6                   # snappy's MaxCompressedLength


cdef bytes _snappy_compress(object mv):
    cdef Py_ssize_t n = len(mv)
    cdef Py_ssize_t full = n // _XERIAL_BLOCK
    cdef Py_ssize_t cap = (_XERIAL_HEADER + full * (4 + _snappy_max_len(_XERIAL_BLOCK))
                           + 4 + _snappy_max_len(n - full * _XERIAL_BLOCK))
    cdef bytearray out = bytearray(cap)
    cdef unsigned char* o = out
    cdef object ov = memoryview(out)
    cdef Py_ssize_t pos = _XERIAL_HEADER, start, written
    memcpy(o, <const char*>_XERIAL_HEADER_V1, _XERIAL_HEADER)
    try:
        for start in range(0, n, _XERIAL_BLOCK):
            written = cramjam.snappy.compress_raw_into(
                mv[start:start + _XERIAL_BLOCK], ov[pos + 4:]
            )
            o[pos] = <unsigned char>(written >> 24)
            o[pos + 1] = <unsigned char>(written >> 16)
            o[pos + 2] = <unsigned char>(written >> 8)
            o[pos + 3] = <unsigned char>written
            pos += 4 + written
    finally:
        ov.release()
    return PyBytes_FromStringAndSize(<char*>o, pos)


cdef Py_ssize_t _snappy_block_size(const unsigned char* p, Py_ssize_t n) except -1:
    """Uncompressed size a raw snappy block declares in its varint preamble."""
    cdef Py_ssize_t pos = 0
    cdef uint32_t size
    if read_uvarint32(p, n, &pos, &size) < 0:
        raise _corrupt(SNAPPY, "a block's length preamble is malformed")
    if <uint64_t>size > <uint64_t>n * _SNAPPY_MAX_RATIO:
        raise _corrupt(SNAPPY, f"a {n}-byte block claims to expand to {size} bytes")
    return size


cdef bytes _snappy_decompress(object mv, Py_ssize_t max_size):
    cdef const unsigned char[::1] buf = mv
    cdef Py_ssize_t n = buf.shape[0], pos, blen, total = 0, usize
    cdef list blocks = []                 # (start, length, uncompressed size)
    cdef object ov
    cdef bytes out
    if n == 0:
        raise _corrupt(SNAPPY, "it is empty")
    cdef const unsigned char* p = &buf[0]

    if n >= 8 and memcmp(p, <const char*>_XERIAL_MAGIC, 8) == 0:
        # The version/compat ints are not checked: some writers (redpanda) put
        # them in little-endian, and there is only one xerial block format.
        if n < _XERIAL_HEADER:
            raise _corrupt(SNAPPY, "the xerial header is truncated")
        pos = _XERIAL_HEADER
        while pos < n:
            if n - pos < 4:
                raise _corrupt(SNAPPY, f"a xerial block length is truncated at byte {pos}")
            blen = load_be32(p + pos)
            pos += 4
            if blen <= 0 or blen > n - pos:
                raise _corrupt(SNAPPY, f"a xerial block of {blen} bytes does not fit "
                                       f"the {n - pos} bytes left at byte {pos}")
            usize = _snappy_block_size(p + pos, blen)
            blocks.append((pos, blen, usize))
            total += usize
            if max_size > 0 and total > max_size:
                raise _too_large(SNAPPY, max_size)
            pos += blen
    else:
        total = _snappy_block_size(p, n)
        if max_size > 0 and total > max_size:
            raise _too_large(SNAPPY, max_size)
        blocks.append((0, n, total))

    # Decompress straight into a fresh bytes object through a writable view:
    # nobody else can see it yet, and it saves copying the whole output.
    out = PyBytes_FromStringAndSize(NULL, total)
    ov = PyMemoryView_FromMemory(PyBytes_AS_STRING(out), total, PyBUF_WRITE)
    pos = 0
    try:
        for start, blen, usize in blocks:
            if cramjam.snappy.decompress_raw_into(mv[start:start + blen],
                                                  ov[pos:pos + usize]) != usize:
                raise _corrupt(SNAPPY, "a block is shorter than its preamble says")
            pos += usize
    except cramjam.DecompressionError as e:
        raise _corrupt(SNAPPY, str(e)) from None
    finally:
        ov.release()
    return out


# ---------------------------------------------------------------- zstd and lz4 frames
# Both formats are walked in C first (frame and block headers only), which
# finds where each frame ends, whether it is truncated, and how much it can
# possibly produce; the library then decodes the frame into a buffer of that
# size (or of what max_size leaves).

cdef enum FrameKind:
    FRAME_DATA = 0
    FRAME_SKIPPABLE = 1         # zstd/lz4 skippable frame: user data, no output
    FRAME_TRUNCATED = -1
    FRAME_MALFORMED = -2


cdef FrameKind _skippable_frame(const unsigned char* p, Py_ssize_t n,
                                Py_ssize_t* frame_len) noexcept nogil:
    """Magic 0x184D2A5?, then a 4-byte LE size and that many bytes to skip."""
    if n < 8:
        return FRAME_TRUNCATED
    if load_le32(p + 4) > <uint64_t>(n - 8):
        return FRAME_TRUNCATED
    frame_len[0] = 8 + load_le32(p + 4)
    return FRAME_SKIPPABLE


cdef bint _frame_error(int codec, FrameKind kind, Py_ssize_t pos,
                       int64_t size, int64_t bound) except -1:
    """Raise for a bad frame walk; True for a frame to skip."""
    if kind == FRAME_TRUNCATED:
        raise _corrupt(codec, f"the frame at byte {pos} is truncated")
    if kind == FRAME_MALFORMED:
        raise _corrupt(codec, f"the frame at byte {pos} has a malformed frame or block header")
    if kind == FRAME_SKIPPABLE:
        return True
    if size > bound:
        raise _corrupt(codec, f"a frame declares {size} bytes but its blocks hold at most {bound}")
    return False

# ---------------------------------------------------------------- zstd

cdef enum:
    _ZSTD_BLOCK_MAX = 128 * 1024              # no block regenerates more than this


cdef FrameKind _zstd_frame(const unsigned char* p, Py_ssize_t n, Py_ssize_t* frame_len,
                           int64_t* content_size, int64_t* bound) noexcept nogil:
    """Walk one zstd frame (RFC 8878 section 3.1) at p[0:n] without decoding it.

    Sets its length, its declared content size (-1 if absent) and an upper
    bound on what it can decompress to (the sum of its blocks' maxima).
    """
    cdef uint32_t magic, header
    cdef unsigned char fhd
    cdef Py_ssize_t pos, fcs_size, did_size, csize
    cdef int64_t gen, total = 0
    cdef uint64_t fcs = 0
    cdef int i, last = 0, kind, bsize
    if n < 4:
        return FRAME_TRUNCATED
    magic = load_le32(p)
    if (magic & 0xFFFFFFF0U) == 0x184D2A50U:
        return _skippable_frame(p, n, frame_len)
    if magic != 0xFD2FB528U:
        return FRAME_MALFORMED
    if n < 5:
        return FRAME_TRUNCATED
    fhd = p[4]
    if fhd & 0x08:                              # reserved bit
        return FRAME_MALFORMED
    did_size = fhd & 3
    if did_size == 3:
        did_size = 4                            # dictionary id: 0, 1, 2 or 4 bytes
    # content size: 0 (or 1 in a single-segment frame), 2, 4 or 8 bytes
    fcs_size = (1 << (fhd >> 6)) if fhd >> 6 else (1 if fhd & 0x20 else 0)
    pos = 5 + (0 if fhd & 0x20 else 1) + did_size   # + window descriptor unless single segment
    if n - pos < fcs_size:
        return FRAME_TRUNCATED
    for i in range(fcs_size):
        fcs |= <uint64_t>p[pos + i] << (8 * i)
    if fcs_size == 2:
        fcs += 256
    if fcs > 0x7FFFFFFFFFFFFFFFULL:
        return FRAME_MALFORMED
    pos += fcs_size
    while not last:
        if n - pos < 3:
            return FRAME_TRUNCATED
        header = p[pos] | (<uint32_t>p[pos + 1] << 8) | (<uint32_t>p[pos + 2] << 16)
        pos += 3
        last = header & 1
        kind = (header >> 1) & 3
        bsize = header >> 3
        if kind == 3 or bsize > _ZSTD_BLOCK_MAX:
            return FRAME_MALFORMED
        if kind == 0:                           # raw
            csize, gen = bsize, bsize
        elif kind == 1:                         # RLE: one byte repeated bsize times
            csize, gen = 1, bsize
        else:                                   # compressed
            csize, gen = bsize, _ZSTD_BLOCK_MAX
        if n - pos < csize:
            return FRAME_TRUNCATED
        pos += csize
        total += gen
    if fhd & 0x04:                              # content checksum
        if n - pos < 4:
            return FRAME_TRUNCATED
        pos += 4
    frame_len[0] = pos
    content_size[0] = <int64_t>fcs if fcs_size else -1
    bound[0] = total
    return FRAME_DATA


cdef object _zstd_decompressor():
    try:
        return _local.zstd_d
    except AttributeError:
        d = _local.zstd_d = zstandard.ZstdDecompressor()
        return d


cdef bytes _zstd_compress(object mv, object level):
    cdef dict cache
    try:
        cache = _local.zstd_c
    except AttributeError:
        cache = _local.zstd_c = {}
    if level is None:
        level = _ZSTD_DEFAULT_LEVEL
    cctx = cache.get(level)
    if cctx is None:
        cctx = cache[level] = zstandard.ZstdCompressor(level=level)
    return cctx.compress(mv)


# ---------------------------------------------------------------- lz4

cdef enum:
    _LZ4_MAGIC = 0x184D2204


cdef FrameKind _lz4_frame(const unsigned char* p, Py_ssize_t n, Py_ssize_t* frame_len,
                          int64_t* content_size, int64_t* bound) noexcept nogil:
    """Walk one LZ4 frame (lz4 Frame format 1.6) at p[0:n] without decoding it.

    Same contract as _zstd_frame.  lz4 cannot decompress into a caller's
    buffer and grows its own badly when the frame has no content size (as
    Kafka's frames have not), so the bound found here sizes its output.
    """
    cdef unsigned char flg, bd
    cdef Py_ssize_t pos = 7, size, block_max
    cdef uint32_t word
    cdef int64_t total = 0, declared = -1
    cdef uint64_t fcs = 0
    cdef int i
    if n < 4:
        return FRAME_TRUNCATED
    word = load_le32(p)
    if (word & 0xFFFFFFF0U) == 0x184D2A50U:
        return _skippable_frame(p, n, frame_len)
    if word != _LZ4_MAGIC:
        return FRAME_MALFORMED
    if n < 7:
        return FRAME_TRUNCATED
    flg, bd = p[4], p[5]
    # version 01; reserved bits clear; block size code 4..7 (64 KiB .. 4 MiB)
    if (flg >> 6) != 1 or flg & 0x02 or bd & 0x8F or (bd >> 4) < 4:
        return FRAME_MALFORMED
    block_max = 1 << (8 + 2 * (bd >> 4))
    if flg & 0x08:                              # content size, 8 bytes LE
        if n < 15:
            return FRAME_TRUNCATED
        for i in range(8):
            fcs |= <uint64_t>p[6 + i] << (8 * i)
        if fcs > 0x7FFFFFFFFFFFFFFFULL:
            return FRAME_MALFORMED
        declared = <int64_t>fcs
        pos += 8
    if flg & 0x01:                              # dictionary id
        pos += 4
    # pos now points past the header checksum byte
    while True:
        if n - pos < 4:
            return FRAME_TRUNCATED
        word = load_le32(p + pos)
        pos += 4
        if word == 0:                           # EndMark
            break
        size = word & 0x7FFFFFFF
        if size > block_max:
            return FRAME_MALFORMED
        if n - pos < size:
            return FRAME_TRUNCATED
        pos += size
        if flg & 0x10:                          # block checksum
            pos += 4
        total += size if word & 0x80000000U else block_max
    if flg & 0x04:                              # content checksum
        pos += 4
    if pos > n:
        return FRAME_TRUNCATED
    frame_len[0] = pos
    content_size[0] = declared
    bound[0] = total
    return FRAME_DATA


# ---------------------------------------------------------------- decoding frames

ctypedef FrameKind (*FrameWalker)(const unsigned char*, Py_ssize_t, Py_ssize_t*,
                                   int64_t*, int64_t*) noexcept nogil


cdef bytes _decode_frame(int codec, object frame, int64_t limit, bint room_limited,
                         Py_ssize_t max_size, Py_ssize_t pos):
    """Decode one whole frame into at most `limit` bytes of output."""
    try:
        if codec == ZSTD:
            return _zstd_decompressor().decompress(frame, max_output_size=limit)
        d = lz4.frame.LZ4FrameDecompressor()
        part = d.decompress(frame, max_length=limit)
        if d.eof:
            return part
        if room_limited and len(part) == limit:
            raise _too_large(codec, max_size)
        raise _corrupt(codec, f"the frame at byte {pos} does not decode to its end")
    except (zstandard.ZstdError, RuntimeError) as e:   # lz4 raises RuntimeError
        if room_limited:   # zstd does not say whether the data or the room ran out
            raise CorruptMessageError(
                f"{_NAMES[codec]} compressed data is corrupt or expands to more than "
                f"{max_size} bytes, the limit for one batch ({e})"
            ) from None
        raise _corrupt(codec, str(e)) from None


cdef bytes _decompress_frames(int codec, object mv, Py_ssize_t max_size):
    """zstd or lz4: every frame in `mv`, concatenated (Java's streams read on
    across frames too)."""
    cdef FrameWalker walk = _zstd_frame if codec == ZSTD else _lz4_frame
    cdef const unsigned char[::1] buf = mv
    cdef Py_ssize_t n = buf.shape[0], pos = 0, flen = 0, total = 0
    cdef int64_t size = 0, bound = 0, room, limit
    cdef list parts = []
    if n == 0:
        raise _corrupt(codec, "it is empty")
    while pos < n:
        if _frame_error(codec, walk(&buf[pos], n - pos, &flen, &size, &bound),
                        pos, size, bound):
            pos += flen                 # skippable frame
            continue
        room = max_size - total if max_size > 0 else bound
        if size > room:
            raise _too_large(codec, max_size)
        # Output buffer: the declared size, else the frame's bound, or one byte
        # past what max_size leaves if that is less (so an overrun shows).
        limit = size if size >= 0 else min(bound, room + 1)
        part = _decode_frame(codec, mv[pos:pos + flen], max(1, limit),
                             size < 0 and room < bound, max_size, pos)
        total += len(part)
        if max_size > 0 and total > max_size:
            raise _too_large(codec, max_size)
        parts.append(part)
        pos += flen
    if not parts:
        raise _corrupt(codec, "it holds no data frame")
    return _join(parts)


# ---------------------------------------------------------------- gzip

cdef bytes _gzip_decompress(object mv, Py_ssize_t max_size):
    # Several gzip members in a row are one stream (as Java's GZIPInputStream
    # reads them); wbits 47 = any window, gzip or zlib header detected.
    cdef list parts = []
    cdef Py_ssize_t total = 0
    data = mv
    try:
        while True:
            d = zlib.decompressobj(47)
            part = d.decompress(data, max_size - total + 1 if max_size > 0 else 0)
            total += len(part)
            if max_size > 0 and total > max_size:
                raise _too_large(GZIP, max_size)
            if not d.eof:
                raise _corrupt(GZIP, "the stream is truncated")
            parts.append(part)
            data = d.unused_data
            if not data:
                return _join(parts)
    except zlib.error as e:
        raise _corrupt(GZIP, str(e)) from None


# ---------------------------------------------------------------- API

def compress(int codec, data, level=None) -> bytes:
    """Compress ``data`` (any C-contiguous buffer) for a batch with ``codec``.

    ``level`` is the codec's compression level (Kafka's
    ``compression.<codec>.level`` ranges: gzip 1..9, lz4 1..17, zstd
    -131072..22); None picks the library default.  none and snappy have no
    levels and ignore it.
    """
    _check_codec(codec)
    mv = _byte_view(data)
    if level is not None and codec in _LEVELS:
        lo, hi = _LEVELS[codec]
        if not lo <= level <= hi:
            raise ValueError(f"{_NAMES[codec]} compression level {level} is out of "
                             f"range: use {lo}..{hi}, or None for the default")
    if codec == NONE:
        return bytes(mv)
    if codec == GZIP:
        return zlib.compress(mv, -1 if level is None else level, wbits=31)
    if codec == SNAPPY:
        return _snappy_compress(mv)
    if codec == LZ4:
        # Independent 64 KiB blocks, no checksums, no content size: Kafka's format.
        return lz4.frame.compress(
            mv, compression_level=level or 0, block_size=lz4.frame.BLOCKSIZE_MAX64KB,
            block_linked=False, content_checksum=False, store_size=False,
        )
    return _zstd_compress(mv, level)


def decompress(int codec, data, Py_ssize_t max_size=0) -> bytes:
    """Decompress a batch's records section written with ``codec``.

    Reads what real clients write (see the module docstring).  ``max_size``
    > 0 caps the output: data that would expand past it raises
    CorruptMessageError without the memory being taken first.
    """
    _check_codec(codec)
    mv = _byte_view(data)
    if codec == NONE:
        if max_size > 0 and len(mv) > max_size:
            raise _too_large(NONE, max_size)
        return bytes(mv)
    if codec == GZIP:
        return _gzip_decompress(mv, max_size)
    if codec == SNAPPY:
        return _snappy_decompress(mv, max_size)
    return _decompress_frames(codec, mv, max_size)    # lz4, zstd
