/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) for pystream._core.crc32c.
 *
 * Three implementations behind one entry point, chosen once at import:
 *   - x86-64 SSE4.2 `crc32` instruction,
 *   - ARMv8 CRC32 instructions (`crc32cx`), Linux and macOS on aarch64,
 *   - portable slicing-by-8 tables.
 * The hardware functions carry a target attribute instead of needing -msse4.2
 * for the whole module, so one build runs on every CPU and picks the fast path
 * at run time.
 *
 * Hardware path (the method of Mark Adler's crc32c.c): the instruction has a
 * latency of ~3 cycles but a throughput of 1 per cycle, so large buffers are
 * cut into three adjacent streams whose CRCs are computed in parallel and then
 * combined.  Combining uses the linearity of the CRC register:
 *     reg(A || B) = shift(reg(A), |B|) ^ reg0(B)
 * where reg0 starts from 0 and shift(., n) appends n zero bytes, done with four
 * precomputed 256-entry tables per stream length.
 *
 * All functions take and return the *finalised* CRC (pre/post inversion is
 * inside), so calls chain: crc(a + b) == update(update(0, a), b).
 */
#ifndef PYSTREAM_CRC32C_HW_H
#define PYSTREAM_CRC32C_HW_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PYSTREAM_CRC32C_POLY 0x82F63B78u

/* ------------------------------------------------------------ which hardware */

/* Define PYSTREAM_CRC32C_PORTABLE to build the table code only. */
#if defined(PYSTREAM_CRC32C_PORTABLE)
   /* tables only */
#elif defined(__GNUC__) && defined(__x86_64__)
#  define PYSTREAM_CRC32C_X86 1
#  include <nmmintrin.h>
#elif defined(__GNUC__) && defined(__aarch64__) && (defined(__linux__) || defined(__APPLE__))
#  define PYSTREAM_CRC32C_ARM 1
#  include <arm_acle.h>
#  if defined(__linux__)
#    include <sys/auxv.h>
#    ifndef HWCAP_CRC32
#      define HWCAP_CRC32 (1 << 7)
#    endif
#  endif
#endif

/* ------------------------------------------------------------ tables */

static uint32_t pystream_crc32c_slice8[8][256];   /* slicing-by-8 tables */
#if defined(PYSTREAM_CRC32C_X86) || defined(PYSTREAM_CRC32C_ARM)
#  define PYSTREAM_CRC32C_LONG 8192                /* stream length, large blocks */
#  define PYSTREAM_CRC32C_SHORT 256                /* stream length, medium blocks */
static uint32_t pystream_crc32c_long_shift[4][256];
static uint32_t pystream_crc32c_short_shift[4][256];
#endif
static int pystream_crc32c_hw_ok = 0;

static inline uint64_t pystream_load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);                 /* unaligned-safe; compiles to one load */
    return v;
}

/* ------------------------------------------------------------ portable path */

static uint32_t pystream_crc32c_sw(uint32_t crc, const unsigned char *p, size_t len)
{
    const uint32_t (*t)[256] = (const uint32_t (*)[256])pystream_crc32c_slice8;
    crc = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        crc = t[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
        len--;
    }
    while (len >= 8) {
        /* Bytes assembled explicitly so this is right on either byte order. */
        uint32_t lo = crc ^ ((uint32_t)p[0] | ((uint32_t)p[1] << 8) |
                             ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24));
        crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^
              t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
              t[3][p[4]] ^ t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = t[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* ------------------------------------------------------------ GF(2) helpers
 * Used only at init, to build the "append n zero bytes" operator tables. */

#if defined(PYSTREAM_CRC32C_X86) || defined(PYSTREAM_CRC32C_ARM)

static uint32_t pystream_gf2_times(const uint32_t *mat, uint32_t vec)
{
    uint32_t sum = 0;
    while (vec) {
        if (vec & 1)
            sum ^= *mat;
        vec >>= 1;
        mat++;
    }
    return sum;
}

static void pystream_gf2_square(uint32_t *square, const uint32_t *mat)
{
    for (int n = 0; n < 32; n++)
        square[n] = pystream_gf2_times(mat, mat[n]);
}

/* Operator (32x32 bit matrix) appending `len` zero bytes; len a power of two. */
static void pystream_crc32c_zeros_op(uint32_t *even, size_t len)
{
    uint32_t odd[32];
    uint32_t row = 1;
    odd[0] = PYSTREAM_CRC32C_POLY;      /* one zero bit */
    for (int n = 1; n < 32; n++) {
        odd[n] = row;
        row <<= 1;
    }
    pystream_gf2_square(even, odd);     /* two zero bits */
    pystream_gf2_square(odd, even);     /* four zero bits */
    /* Each further square doubles: 1 byte, 2 bytes, ... until len is used up. */
    do {
        pystream_gf2_square(even, odd);
        len >>= 1;
        if (len == 0)
            return;
        pystream_gf2_square(odd, even);
        len >>= 1;
    } while (len);
    memcpy(even, odd, sizeof(odd));
}

static void pystream_crc32c_zeros(uint32_t zeros[4][256], size_t len)
{
    uint32_t op[32];
    pystream_crc32c_zeros_op(op, len);
    for (uint32_t n = 0; n < 256; n++) {
        zeros[0][n] = pystream_gf2_times(op, n);
        zeros[1][n] = pystream_gf2_times(op, n << 8);
        zeros[2][n] = pystream_gf2_times(op, n << 16);
        zeros[3][n] = pystream_gf2_times(op, n << 24);
    }
}

static inline uint32_t pystream_crc32c_shift(uint32_t zeros[4][256], uint32_t crc)
{
    return zeros[0][crc & 0xFF] ^ zeros[1][(crc >> 8) & 0xFF] ^
           zeros[2][(crc >> 16) & 0xFF] ^ zeros[3][crc >> 24];
}

/* The hardware loop, written once and instantiated per ISA.
 * OP64(crc, u64) and OP8(crc, u8) are the instruction intrinsics. */
#define PYSTREAM_CRC32C_HW_BODY(OP64, OP8)                                        \
    uint64_t c0 = (uint32_t)~crc, c1, c2;                                         \
    const unsigned char *end;                                                     \
    while (len && ((uintptr_t)p & 7)) {    /* align to 8 bytes */                 \
        c0 = OP8((uint32_t)c0, *p++);                                             \
        len--;                                                                    \
    }                                                                             \
    while (len >= 3 * PYSTREAM_CRC32C_LONG) {                                     \
        c1 = c2 = 0;                                                              \
        end = p + PYSTREAM_CRC32C_LONG;                                           \
        do {                                                                      \
            c0 = OP64(c0, pystream_load64(p));                                    \
            c1 = OP64(c1, pystream_load64(p + PYSTREAM_CRC32C_LONG));             \
            c2 = OP64(c2, pystream_load64(p + 2 * PYSTREAM_CRC32C_LONG));         \
            p += 8;                                                               \
        } while (p < end);                                                        \
        c0 = pystream_crc32c_shift(pystream_crc32c_long_shift, (uint32_t)c0) ^ c1; \
        c0 = pystream_crc32c_shift(pystream_crc32c_long_shift, (uint32_t)c0) ^ c2; \
        p += 2 * PYSTREAM_CRC32C_LONG;                                            \
        len -= 3 * PYSTREAM_CRC32C_LONG;                                          \
    }                                                                             \
    while (len >= 3 * PYSTREAM_CRC32C_SHORT) {                                    \
        c1 = c2 = 0;                                                              \
        end = p + PYSTREAM_CRC32C_SHORT;                                          \
        do {                                                                      \
            c0 = OP64(c0, pystream_load64(p));                                    \
            c1 = OP64(c1, pystream_load64(p + PYSTREAM_CRC32C_SHORT));            \
            c2 = OP64(c2, pystream_load64(p + 2 * PYSTREAM_CRC32C_SHORT));        \
            p += 8;                                                               \
        } while (p < end);                                                        \
        c0 = pystream_crc32c_shift(pystream_crc32c_short_shift, (uint32_t)c0) ^ c1; \
        c0 = pystream_crc32c_shift(pystream_crc32c_short_shift, (uint32_t)c0) ^ c2; \
        p += 2 * PYSTREAM_CRC32C_SHORT;                                           \
        len -= 3 * PYSTREAM_CRC32C_SHORT;                                         \
    }                                                                             \
    while (len >= 8) {                                                            \
        c0 = OP64(c0, pystream_load64(p));                                        \
        p += 8;                                                                   \
        len -= 8;                                                                 \
    }                                                                             \
    while (len--)                                                                 \
        c0 = OP8((uint32_t)c0, *p++);                                             \
    return ~(uint32_t)c0;

#endif /* hardware helpers */

/* ------------------------------------------------------------ x86-64 SSE4.2 */

#if defined(PYSTREAM_CRC32C_X86)
__attribute__((target("sse4.2")))
static uint32_t pystream_crc32c_hw(uint32_t crc, const unsigned char *p, size_t len)
{
#define PYSTREAM_X86_OP64(c, v) _mm_crc32_u64((c), (v))
#define PYSTREAM_X86_OP8(c, v) _mm_crc32_u8((c), (v))
    PYSTREAM_CRC32C_HW_BODY(PYSTREAM_X86_OP64, PYSTREAM_X86_OP8)
#undef PYSTREAM_X86_OP64
#undef PYSTREAM_X86_OP8
}

static int pystream_crc32c_cpu_has_hw(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
}

/* ------------------------------------------------------------ ARMv8 CRC32 */

#elif defined(PYSTREAM_CRC32C_ARM)
__attribute__((target("+crc")))
static uint32_t pystream_crc32c_hw(uint32_t crc, const unsigned char *p, size_t len)
{
#define PYSTREAM_ARM_OP64(c, v) __crc32cd((uint32_t)(c), (v))
#define PYSTREAM_ARM_OP8(c, v) __crc32cb((uint32_t)(c), (v))
    PYSTREAM_CRC32C_HW_BODY(PYSTREAM_ARM_OP64, PYSTREAM_ARM_OP8)
#undef PYSTREAM_ARM_OP64
#undef PYSTREAM_ARM_OP8
}

static int pystream_crc32c_cpu_has_hw(void)
{
#  if defined(__APPLE__)
    return 1;                          /* every Apple aarch64 CPU has CRC32 */
#  else
    return (getauxval(AT_HWCAP) & HWCAP_CRC32) ? 1 : 0;
#  endif
}

/* ------------------------------------------------------------ no hardware */

#else
static uint32_t pystream_crc32c_hw(uint32_t crc, const unsigned char *p, size_t len)
{
    return pystream_crc32c_sw(crc, p, len);
}

static int pystream_crc32c_cpu_has_hw(void) { return 0; }
#endif

/* ------------------------------------------------------------ entry points */

/* Build the tables and detect the CPU.  Call once, before any other function
 * here (the Cython module does it at import, under the GIL). */
static void pystream_crc32c_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ ((c & 1) ? PYSTREAM_CRC32C_POLY : 0);
        pystream_crc32c_slice8[0][n] = c;
    }
    for (int t = 1; t < 8; t++)   /* table t: byte followed by t zero bytes */
        for (uint32_t n = 0; n < 256; n++) {
            uint32_t c = pystream_crc32c_slice8[t - 1][n];
            pystream_crc32c_slice8[t][n] = (c >> 8) ^ pystream_crc32c_slice8[0][c & 0xFF];
        }
#if defined(PYSTREAM_CRC32C_X86) || defined(PYSTREAM_CRC32C_ARM)
    pystream_crc32c_zeros(pystream_crc32c_long_shift, PYSTREAM_CRC32C_LONG);
    pystream_crc32c_zeros(pystream_crc32c_short_shift, PYSTREAM_CRC32C_SHORT);
#endif
    pystream_crc32c_hw_ok = pystream_crc32c_cpu_has_hw();
}

static inline uint32_t pystream_crc32c(uint32_t crc, const unsigned char *p, size_t len)
{
    return pystream_crc32c_hw_ok ? pystream_crc32c_hw(crc, p, len)
                                 : pystream_crc32c_sw(crc, p, len);
}

#endif /* PYSTREAM_CRC32C_HW_H */
