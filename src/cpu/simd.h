/*
 * simd.h: what the SIMD kernel files of src/cpu share. The weight blocks of the int8-kernel
 * types (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K) unpacked 32 weights at a time to unsigned bytes with a
 * scale and an offset per 16 (struct wblock), built from the nibble, high-bit and 6-bit-scale
 * helpers below, which the decode kernels also use on their own 512-bit layouts; fp16 loads;
 * field offsets of the block structs of quant.h (BLK_AT).
 *
 * Include only from kernel files. Each helper carries the target of the lowest level that uses
 * it (features.h: TGT_AVX2), so it inlines into the functions of any level above; the caller
 * runs it only after cpu_has() said yes.
 */
#ifndef EXSA_CPU_SIMD_H
#define EXSA_CPU_SIMD_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cpu/features.h"
#include "quant.h"

/* A helper inlined into the kernels of one level (features.h) */
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define INL_AVX2 ALWAYS_INLINE TGT_AVX2
#define INL_VNNI ALWAYS_INLINE TGT_VNNI
#define INL_VBMI ALWAYS_INLINE TGT_VBMI
#define INL_BF16 ALWAYS_INLINE TGT_BF16

/* Where field f of block struct s (quant.h) starts, for a block at byte pointer blk. */
#define BLK_AT(blk, s, f) ((blk) + offsetof(struct s, f))

/* The fp16 at p as a float. */
INL_AVX2 float f16_load(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* The low and the high nibble of every byte. */
INL_AVX2 __m256i lo_nib(__m256i q)
{
    return _mm256_and_si256(q, _mm256_set1_epi8(0x0f));
}
INL_AVX2 __m256i hi_nib(__m256i q)
{
    return _mm256_and_si256(_mm256_srli_epi16(q, 4), _mm256_set1_epi8(0x0f));
}
/* ((q >> shift) & mask) << 4 on every byte, shift < 8, mask 1 or 3: high bits above a nibble. */
INL_AVX2 __m256i bits_up(__m256i q, int shift, int mask)
{
    return _mm256_slli_epi16(
        _mm256_and_si256(_mm256_srli_epi16(q, shift), _mm256_set1_epi8((char)mask)), 4);
}

/* The 6-bit scales sc and mins mn of a Q4_K / Q5_K super-block from its 12 scale bytes q
 * (LFM2-SPEC.md 5.3), as two words of bytes: *lo = [sc0..3, mn0..3], *hi = [sc4..7, mn4..7].
 * 64-bit scalar work: the decode kernels move the pair to a vector register as it is. */
static inline void k4_scale_words(const uint8_t *q, uint64_t *lo, uint64_t *hi)
{
    uint64_t a;
    uint32_t a2;
    memcpy(&a, q, 8);
    memcpy(&a2, q + 8, 4);
    *lo = a & 0x3f3f3f3f3f3f3f3full;
    *hi = (((uint64_t)a2 | ((uint64_t)a2 << 28)) & 0x0f0f0f0f0f0f0f0full) |
          ((a >> 2) & 0x3030303030303030ull);
}

/* The same as arrays: sc[j], mn[j] for sub-block j < 8. */
static inline void k4_scales(const uint8_t *q, uint8_t *sc, uint8_t *mn)
{
    uint64_t w[2];
    uint8_t b[16];
    k4_scale_words(q, &w[0], &w[1]);
    memcpy(b, w, 16);
    for (int j = 0; j < 4; j++) {
        sc[j] = b[j], mn[j] = b[4 + j];
        sc[4 + j] = b[8 + j], mn[4 + j] = b[12 + j];
    }
}

/* ---- one block of an int8-kernel type, 32 weights per chunk -------------------------------- */

/* Chunk c holds weights 32c..32c+31 of the block; weight 32c + i is a[h] * u[c][i] + b[h] with
 * h = 2c + i / 16 (u unsigned, 0..255). Q4_0 and Q8_0 blocks have 1 chunk, the K-quants 8. */
struct wblock {
    __m256i u[8];
    float a[16], b[16];
};

/* Q4_0: element i < 16 is the low nibble of qs[i], i >= 16 the high nibble of qs[i - 16];
 * w = d (q - 8). */
INL_AVX2 int unpack_q4_0(const uint8_t *blk, struct wblock *wb)
{
    const float d = f16_load(BLK_AT(blk, blk_q4_0, d));
    const __m128i qs = _mm_loadu_si128((const __m128i *)BLK_AT(blk, blk_q4_0, qs));
    const __m256i both = _mm256_broadcastsi128_si256(qs);
    wb->u[0] = _mm256_blend_epi32(lo_nib(both), hi_nib(both), 0xf0);
    wb->a[0] = wb->a[1] = d;
    wb->b[0] = wb->b[1] = -8 * d;
    return 1;
}

/* Q8_0: w = d q with q signed; as unsigned bytes q + 128 with offset -128 d (exact in f32). */
INL_AVX2 int unpack_q8_0(const uint8_t *blk, struct wblock *wb)
{
    const float d = f16_load(BLK_AT(blk, blk_q8_0, d));
    const __m256i q = _mm256_loadu_si256((const __m256i *)BLK_AT(blk, blk_q8_0, qs));
    wb->u[0] = _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80));
    wb->a[0] = wb->a[1] = d;
    wb->b[0] = wb->b[1] = -128 * d;
    return 1;
}

/* Q4_K (q5 false) and Q5_K (q5 true): qs byte 32g + i holds element 64g + i in its low nibble
 * and 64g + 32 + i in its high one; Q5_K's qh bit 2g (2g + 1) of byte i is the 5th bit of the
 * first (second). Sub-block j: w = d sc[j] q - dmin mn[j]. */
INL_AVX2 int unpack_q45_k(const uint8_t *blk, bool q5, struct wblock *wb)
{
    const float d = f16_load(BLK_AT(blk, blk_q4_k, d));
    const float dmin = f16_load(BLK_AT(blk, blk_q4_k, dmin));
    uint8_t sc[8], mn[8];
    k4_scales(BLK_AT(blk, blk_q4_k, scales), sc, mn);
    const uint8_t *qs = q5 ? BLK_AT(blk, blk_q5_k, qs) : BLK_AT(blk, blk_q4_k, qs);
    const __m256i qh = q5 ? _mm256_loadu_si256((const __m256i *)BLK_AT(blk, blk_q5_k, qh))
                          : _mm256_setzero_si256();
    for (int g = 0; g < 4; g++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * g));
        wb->u[2 * g] = lo_nib(q);
        wb->u[2 * g + 1] = hi_nib(q);
        if (q5) {
            wb->u[2 * g] = _mm256_or_si256(wb->u[2 * g], bits_up(qh, 2 * g, 1));
            wb->u[2 * g + 1] = _mm256_or_si256(wb->u[2 * g + 1], bits_up(qh, 2 * g + 1, 1));
        }
    }
    for (int j = 0; j < 8; j++) {
        wb->a[2 * j] = wb->a[2 * j + 1] = d * sc[j];
        wb->b[2 * j] = wb->b[2 * j + 1] = -dmin * mn[j];
    }
    return 8;
}

/* Q6_K: half n (128 weights) takes ql[64n..64n+63] and qh[32n..32n+31]; its four 32-chunks are
 * the low nibbles of ql 0..31, of ql 32..63, then the high nibbles, each with 2 bits of qh (bits
 * 0-1, 2-3, 4-5, 6-7) above. Per 16: w = d S[h] (q - 32), S the int8 scales. */
INL_AVX2 int unpack_q6_k(const uint8_t *blk, struct wblock *wb)
{
    const float d = f16_load(BLK_AT(blk, blk_q6_k, d));
    const int8_t *S = (const int8_t *)BLK_AT(blk, blk_q6_k, scales);
    for (int n = 0; n < 2; n++) {
        const uint8_t *ql = BLK_AT(blk, blk_q6_k, ql) + 64 * n;
        const __m256i ql0 = _mm256_loadu_si256((const __m256i *)ql);
        const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
        const __m256i qh =
            _mm256_loadu_si256((const __m256i *)(BLK_AT(blk, blk_q6_k, qh) + 32 * n));
        wb->u[4 * n + 0] = _mm256_or_si256(lo_nib(ql0), bits_up(qh, 0, 3));
        wb->u[4 * n + 1] = _mm256_or_si256(lo_nib(ql1), bits_up(qh, 2, 3));
        wb->u[4 * n + 2] = _mm256_or_si256(hi_nib(ql0), bits_up(qh, 4, 3));
        wb->u[4 * n + 3] = _mm256_or_si256(hi_nib(ql1), bits_up(qh, 6, 3));
    }
    for (int h = 0; h < 16; h++) {
        wb->a[h] = d * S[h];
        wb->b[h] = -32 * wb->a[h];
    }
    return 8;
}

/* Bytes of one block of an int8-kernel type (0 for any other type). */
ALWAYS_INLINE size_t block_bytes(int type)
{
    switch (type) {
    case EXSA_DTYPE_Q4_0: return sizeof(struct blk_q4_0);
    case EXSA_DTYPE_Q8_0: return sizeof(struct blk_q8_0);
    case EXSA_DTYPE_Q4_K: return sizeof(struct blk_q4_k);
    case EXSA_DTYPE_Q5_K: return sizeof(struct blk_q5_k);
    case EXSA_DTYPE_Q6_K: return sizeof(struct blk_q6_k);
    default: return 0;
    }
}

/* Calls f(T, ...) with T the int8-kernel type `type` as a constant (nothing for other types),
 * so that an always-inline f is specialised per type: block_bytes and unpack_block fold. */
#define WITH_Q8_TYPE(type, f, ...)                                                                 \
    do {                                                                                           \
        switch (type) {                                                                            \
        case EXSA_DTYPE_Q4_0: f(EXSA_DTYPE_Q4_0, __VA_ARGS__); break;                              \
        case EXSA_DTYPE_Q8_0: f(EXSA_DTYPE_Q8_0, __VA_ARGS__); break;                              \
        case EXSA_DTYPE_Q4_K: f(EXSA_DTYPE_Q4_K, __VA_ARGS__); break;                              \
        case EXSA_DTYPE_Q5_K: f(EXSA_DTYPE_Q5_K, __VA_ARGS__); break;                              \
        case EXSA_DTYPE_Q6_K: f(EXSA_DTYPE_Q6_K, __VA_ARGS__); break;                              \
        }                                                                                          \
    } while (0)

/* One block of type (an int8-kernel type) at blk into wb; returns its chunk count (0: type is
 * none of them). Inlined with a constant type, the switch folds away. */
INL_AVX2 int unpack_block(int type, const uint8_t *blk, struct wblock *wb)
{
    switch (type) {
    case EXSA_DTYPE_Q4_0: return unpack_q4_0(blk, wb);
    case EXSA_DTYPE_Q8_0: return unpack_q8_0(blk, wb);
    case EXSA_DTYPE_Q4_K: return unpack_q45_k(blk, false, wb);
    case EXSA_DTYPE_Q5_K: return unpack_q45_k(blk, true, wb);
    case EXSA_DTYPE_Q6_K: return unpack_q6_k(blk, wb);
    default: return 0;
    }
}

#endif
