/*
 * quant.c: the ggml type table (LFM2-SPEC.md 1.7), fp16/bf16 conversion and the reference
 * dequantization of every supported block type (LFM2-SPEC.md section 5), in plain C.
 *
 * Invariants: the block structs of quant.h mirror the on-disk bytes exactly (static_asserts
 * here check the sizes); every dequantizer evaluates its floats in the same order as the
 * reference engine (scale products first, then times the quant, then minus the min), so results
 * are bit-exact against it. Callers: the GGUF reader and model binding (dtype_info /
 * dtype_row_size), the reference backend (dequantize_row), the fast CPU kernels (fallback path and
 * tests).
 */
#include "quant.h"

#include <assert.h>
#include <string.h>

/* The block structs of quant.h are the on-disk bytes. */
_Static_assert(sizeof(struct blk_q4_0) == 18, "q4_0");
_Static_assert(sizeof(struct blk_q4_1) == 20, "q4_1");
_Static_assert(sizeof(struct blk_q5_0) == 22, "q5_0");
_Static_assert(sizeof(struct blk_q5_1) == 24, "q5_1");
_Static_assert(sizeof(struct blk_q8_0) == 34, "q8_0");
_Static_assert(sizeof(struct blk_iq4_nl) == 18, "iq4_nl");
_Static_assert(sizeof(struct blk_q2_k) == 84, "q2_k");
_Static_assert(sizeof(struct blk_q3_k) == 110, "q3_k");
_Static_assert(sizeof(struct blk_q4_k) == 144, "q4_k");
_Static_assert(sizeof(struct blk_q5_k) == 176, "q5_k");
_Static_assert(sizeof(struct blk_q6_k) == 210, "q6_k");
_Static_assert(sizeof(struct blk_iq4_xs) == 136, "iq4_xs");

/* ---- type table ----------------------------------------------------------------------------- */

static const struct dtype_info dtypes[EXSA_DTYPE_COUNT] = {
    [0] = {"F32", 1, 4, true},          [1] = {"F16", 1, 2, true},
    [2] = {"Q4_0", 32, 18, true},       [3] = {"Q4_1", 32, 20, true},
    [6] = {"Q5_0", 32, 22, true},       [7] = {"Q5_1", 32, 24, true},
    [8] = {"Q8_0", 32, 34, true},       [9] = {"Q8_1", 32, 36, false},
    [10] = {"Q2_K", 256, 84, true},     [11] = {"Q3_K", 256, 110, true},
    [12] = {"Q4_K", 256, 144, true},    [13] = {"Q5_K", 256, 176, true},
    [14] = {"Q6_K", 256, 210, true},    [15] = {"Q8_K", 256, 292, true},
    [16] = {"IQ2_XXS", 256, 66, false}, [17] = {"IQ2_XS", 256, 74, false},
    [18] = {"IQ3_XXS", 256, 98, false}, [19] = {"IQ1_S", 256, 50, false},
    [20] = {"IQ4_NL", 32, 18, true},    [21] = {"IQ3_S", 256, 110, false},
    [22] = {"IQ2_S", 256, 82, false},   [23] = {"IQ4_XS", 256, 136, true},
    [24] = {"I8", 1, 1, false},         [25] = {"I16", 1, 2, false},
    [26] = {"I32", 1, 4, false},        [27] = {"I64", 1, 8, false},
    [28] = {"F64", 1, 8, false},        [29] = {"IQ1_M", 256, 56, false},
    [30] = {"BF16", 1, 2, true},        [34] = {"TQ1_0", 256, 54, false},
    [35] = {"TQ2_0", 256, 66, false},   [39] = {"MXFP4", 32, 17, false},
    [40] = {"NVFP4", 64, 36, false},    [41] = {"Q1_0", 128, 18, false},
    [42] = {"Q2_0", 64, 18, false},
};

const struct dtype_info *dtype_info(int type)
{
    if (type < 0 || type >= EXSA_DTYPE_COUNT || !dtypes[type].name)
        return NULL;
    return &dtypes[type];
}

size_t dtype_row_size(int type, int64_t n)
{
    const struct dtype_info *t = dtype_info(type);
    if (!t || n < 0 || n % t->block_size)
        return 0;
    return (size_t)(n / t->block_size) * (size_t)t->type_size;
}

/* ---- fp16 / bf16 ---------------------------------------------------------------------------- */

static inline uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float fp16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) /* inf / nan: keep the payload bits as they are */
        return u2f(sign | 0x7f800000u | (man << 13));
    if (exp == 0) { /* zero or subnormal: man * 2^-24, exact in f32 */
        float v = (float)man * 0x1p-24f;
        return u2f(sign | f2u(v));
    }
    return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_fp16(float f)
{
    uint32_t u = f2u(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) { /* nan: keep the top payload bits; stay a nan if they are all 0 */
        uint16_t man = (uint16_t)((a >> 13) & 0x3ff);
        return sign | 0x7c00 | (man ? man : 0x200);
    }
    if (a >= 0x477ff000u) /* >= 65520 rounds to inf */
        return sign | 0x7c00;
    if (a < 0x38800000u) { /* below 2^-14: subnormal half; the adding rounds to nearest even */
        float v = u2f(a) + 0.5f; /* 0.5 = 2^-1: ulp of 0.5f is 2^-24, the half subnormal step */
        return sign | (uint16_t)(f2u(v) - f2u(0.5f));
    }
    /* normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even */
    uint32_t odd = (a >> 13) & 1;
    a += 0x0fffu + odd;
    a -= 112u << 23;
    return sign | (uint16_t)(a >> 13);
}

float bf16_to_f32(uint16_t h)
{
    return u2f((uint32_t)h << 16);
}

uint16_t f32_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* nan: truncate, but stay a nan */
        return (uint16_t)((u >> 16) | ((u & 0x007f0000u) ? 0 : 0x40));
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* ---- 32-element blocks ---------------------------------------------------------------------- */

static const int8_t iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                        1,    13,   25,  38,  53,  69,  89,  113};

static void deq_q4_0(const struct blk_q4_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++, y += QK) {
        const float d = fp16_to_f32(b->d);
        for (int j = 0; j < QK / 2; j++) {
            y[j] = ((b->qs[j] & 0x0f) - 8) * d;
            y[j + QK / 2] = ((b->qs[j] >> 4) - 8) * d;
        }
    }
}

static void deq_q4_1(const struct blk_q4_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++, y += QK) {
        const float d = fp16_to_f32(b->d), m = fp16_to_f32(b->m);
        for (int j = 0; j < QK / 2; j++) {
            y[j] = (b->qs[j] & 0x0f) * d + m;
            y[j + QK / 2] = (b->qs[j] >> 4) * d + m;
        }
    }
}

static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void deq_q5_0(const struct blk_q5_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++, y += QK) {
        const float d = fp16_to_f32(b->d);
        const uint32_t h = le32(b->qh);
        for (int j = 0; j < QK / 2; j++) {
            const int x0 = ((b->qs[j] & 0x0f) | ((h >> j) & 1) << 4) - 16;
            const int x1 = ((b->qs[j] >> 4) | ((h >> (j + 16)) & 1) << 4) - 16;
            y[j] = x0 * d;
            y[j + QK / 2] = x1 * d;
        }
    }
}

static void deq_q5_1(const struct blk_q5_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++, y += QK) {
        const float d = fp16_to_f32(b->d), m = fp16_to_f32(b->m);
        const uint32_t h = le32(b->qh);
        for (int j = 0; j < QK / 2; j++) {
            const int x0 = (b->qs[j] & 0x0f) | ((h >> j) & 1) << 4;
            const int x1 = (b->qs[j] >> 4) | ((h >> (j + 16)) & 1) << 4;
            y[j] = x0 * d + m;
            y[j + QK / 2] = x1 * d + m;
        }
    }
}

static void deq_q8_0(const struct blk_q8_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++, y += QK) {
        const float d = fp16_to_f32(b->d);
        for (int j = 0; j < QK; j++)
            y[j] = b->qs[j] * d;
    }
}

static void deq_iq4_nl(const struct blk_iq4_nl *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++, y += QK) {
        const float d = fp16_to_f32(b->d);
        for (int j = 0; j < QK / 2; j++) {
            y[j] = d * iq4nl_values[b->qs[j] & 0x0f];
            y[j + QK / 2] = d * iq4nl_values[b->qs[j] >> 4];
        }
    }
}

/* ---- 256-element K super-blocks ------------------------------------------------------------- */

/* The 6-bit scale sc and min mn of sub-block j (0..7) from the 12-byte Q4_K/Q5_K scales. */
static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void deq_q2_k(const struct blk_q2_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++) {
        const float d = fp16_to_f32(b->d), dmin = fp16_to_f32(b->dmin);
        int is = 0;
        for (int n = 0; n < 2; n++) {
            const uint8_t *q = b->qs + 32 * n;
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; half++) {
                    const uint8_t sc = b->scales[is++];
                    const float dl = d * (sc & 0x0f), ml = dmin * (sc >> 4);
                    for (int l = 0; l < 16; l++)
                        *y++ = dl * ((q[l + 16 * half] >> shift) & 3) - ml;
                }
            }
        }
    }
}

/* The 16 6-bit Q3_K scales (still biased by 32) from the 12 packed bytes. */
static void q3_k_scales(const uint8_t *packed, uint8_t *s)
{
    const uint32_t m1 = 0x03030303u, m2 = 0x0f0f0f0fu;
    const uint32_t a0 = le32(packed), a1 = le32(packed + 4), a2 = le32(packed + 8);
    const uint32_t w[4] = {
        (a0 & m2) | (((a2 >> 0) & m1) << 4),
        (a1 & m2) | (((a2 >> 2) & m1) << 4),
        ((a0 >> 4) & m2) | (((a2 >> 4) & m1) << 4),
        ((a1 >> 4) & m2) | (((a2 >> 6) & m1) << 4),
    };
    for (int i = 0; i < 16; i++)
        s[i] = (uint8_t)(w[i / 4] >> (8 * (i % 4)));
}

static void deq_q3_k(const struct blk_q3_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++) {
        const float d = fp16_to_f32(b->d);
        uint8_t s[16];
        q3_k_scales(b->scales, s);
        int is = 0;
        uint8_t m = 1;
        for (int n = 0; n < 2; n++) {
            const uint8_t *q = b->qs + 32 * n;
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int half = 0; half < 2; half++) {
                    const float dl = d * (s[is++] - 32);
                    for (int l = 16 * half; l < 16 * half + 16; l++) {
                        const int v = ((q[l] >> shift) & 3) - ((b->hmask[l] & m) ? 0 : 4);
                        *y++ = dl * v;
                    }
                }
            }
        }
    }
}

/* One Q4_K or Q5_K super-block (qh: the fifth bits, NULL for Q4_K); inlined into each caller, so
 * the Q4_K copy has no fifth-bit arithmetic left. */
static inline void deq_k45_block(uint16_t d16, uint16_t dmin16, const uint8_t *scales,
                                 const uint8_t *qs, const uint8_t *qh, float *y)
{
    const float d = fp16_to_f32(d16), dmin = fp16_to_f32(dmin16);
    for (int g = 0; g < 4; g++) {
        const uint8_t *q = qs + 32 * g;
        uint8_t sc, mn;
        scale_min_k4(2 * g, scales, &sc, &mn);
        const float d1 = d * sc, m1 = dmin * mn;
        scale_min_k4(2 * g + 1, scales, &sc, &mn);
        const float d2 = d * sc, m2 = dmin * mn;
        for (int l = 0; l < 32; l++)
            *y++ = d1 * ((q[l] & 0x0f) + (qh ? ((qh[l] >> (2 * g)) & 1) << 4 : 0)) - m1;
        for (int l = 0; l < 32; l++)
            *y++ = d2 * ((q[l] >> 4) + (qh ? ((qh[l] >> (2 * g + 1)) & 1) << 4 : 0)) - m2;
    }
}

static void deq_q4_k(const struct blk_q4_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++, y += QK_K)
        deq_k45_block(b->d, b->dmin, b->scales, b->qs, NULL, y);
}

static void deq_q5_k(const struct blk_q5_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++, y += QK_K)
        deq_k45_block(b->d, b->dmin, b->scales, b->qs, b->qh, y);
}

static void deq_q6_k(const struct blk_q6_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++) {
        const float d = fp16_to_f32(b->d);
        for (int n = 0; n < 2; n++, y += 128) {
            const uint8_t *ql = b->ql + 64 * n, *qh = b->qh + 32 * n;
            const int8_t *s = b->scales + 8 * n;
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0x0f) | ((qh[l] >> 0) & 3) << 4) - 32;
                const int q2 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4) - 32;
                const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                y[l] = d * s[is + 0] * q1;
                y[l + 32] = d * s[is + 2] * q2;
                y[l + 64] = d * s[is + 4] * q3;
                y[l + 96] = d * s[is + 6] * q4;
            }
        }
    }
}

static void deq_iq4_xs(const struct blk_iq4_xs *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++) {
        const float d = fp16_to_f32(b->d);
        for (int ib = 0; ib < 8; ib++, y += 32) {
            const int ls = ((b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f) |
                           (((b->scales_h >> (2 * ib)) & 3) << 4);
            const float dl = d * (ls - 32);
            const uint8_t *q = b->qs + 16 * ib;
            for (int j = 0; j < 16; j++) {
                y[j] = dl * iq4nl_values[q[j] & 0x0f];
                y[j + 16] = dl * iq4nl_values[q[j] >> 4];
            }
        }
    }
}

static void deq_q8_k(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += 292, y += QK_K) {
        float d;
        memcpy(&d, b, 4);
        const int8_t *qs = (const int8_t *)(b + 4);
        for (int j = 0; j < QK_K; j++)
            y[j] = d * qs[j];
    }
}

/* ---- dispatch ------------------------------------------------------------------------------- */

int dequantize_row(int type, const void *src, float *y, int64_t n)
{
    const struct dtype_info *t = dtype_info(type);
    if (!t || !t->supported)
        return EXSA_EUNSUPPORTED;
    assert(n >= 0 && n % t->block_size == 0);
    const int64_t nb = n / t->block_size;
    switch (type) {
    case EXSA_DTYPE_F32: memcpy(y, src, (size_t)n * sizeof(float)); break;
    case EXSA_DTYPE_F16: {
        const uint16_t *h = src;
        for (int64_t i = 0; i < n; i++)
            y[i] = fp16_to_f32(h[i]);
        break;
    }
    case EXSA_DTYPE_BF16: {
        const uint16_t *h = src;
        for (int64_t i = 0; i < n; i++)
            y[i] = bf16_to_f32(h[i]);
        break;
    }
    case EXSA_DTYPE_Q4_0: deq_q4_0(src, y, nb); break;
    case EXSA_DTYPE_Q4_1: deq_q4_1(src, y, nb); break;
    case EXSA_DTYPE_Q5_0: deq_q5_0(src, y, nb); break;
    case EXSA_DTYPE_Q5_1: deq_q5_1(src, y, nb); break;
    case EXSA_DTYPE_Q8_0: deq_q8_0(src, y, nb); break;
    case EXSA_DTYPE_IQ4_NL: deq_iq4_nl(src, y, nb); break;
    case EXSA_DTYPE_Q2_K: deq_q2_k(src, y, nb); break;
    case EXSA_DTYPE_Q3_K: deq_q3_k(src, y, nb); break;
    case EXSA_DTYPE_Q4_K: deq_q4_k(src, y, nb); break;
    case EXSA_DTYPE_Q5_K: deq_q5_k(src, y, nb); break;
    case EXSA_DTYPE_Q6_K: deq_q6_k(src, y, nb); break;
    case EXSA_DTYPE_IQ4_XS: deq_iq4_xs(src, y, nb); break;
    case EXSA_DTYPE_Q8_K: deq_q8_k(src, y, nb); break;
    default: return EXSA_EUNSUPPORTED;
    }
    return 0;
}
