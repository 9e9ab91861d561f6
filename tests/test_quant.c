/*
 * test_quant.c: the dtype table, fp16/bf16 conversion and dequantize_row of every supported type.
 *
 * The block tests work backwards from the decoder: they draw random integer fields (quants,
 * sub-block scales, mins), PACK them into a block with an encoder written here from the element's
 * point of view (which byte and bit holds element i), and compute each element's expected value
 * as d * scale * q - dmin * min in double. Scales d are k * 2^-10 so every product is exact in
 * float and the comparison is exact. The fixture test dequantizes every tensor of each quantized
 * lfm2-tiny file and compares it with the F32 file it was made from (NMSE per tensor).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "gguf.h"
#include "harness.h"
#include "quant.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static int rnd_in(int lo, int hi)
{
    return lo + (int)(rnd() % (uint32_t)(hi - lo + 1));
}

/* A random exact scale k * 2^-10 (k 1..31) as fp16 bits, and its value. */
static uint16_t rnd_scale(double *val)
{
    int k = rnd_in(1, 31);
    *val = k / 1024.0;
    return f32_to_fp16((float)*val);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static const int iq4_table[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                  1,    13,   25,  38,  53,  69,  89,  113};

/* Dequantizes nb blocks of blk and checks them against expect exactly. */
static void check_exact(int type, const uint8_t *blk, const double *expect, int n, const char *what)
{
    float y[1024];
    int rc = dequantize_row(type, blk, y, n);
    CHECK(rc == 0, "%s: rc %d", what, rc);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        if ((double)y[i] != expect[i]) {
            if (bad++ < 4)
                CHECK(0, "%s: y[%d] = %.9g, expected %.9g", what, i, y[i], expect[i]);
        }
    }
    CHECK(bad == 0, "%s: %d of %d values differ", what, bad, n);
}

/* ---- 32-element blocks: each packs element i of 32 by its own bit position ------------------- */

/* Element i (0..31) of a 4-bit nibble block: byte i % 16, high nibble when i >= 16. */
static void put_nibble(uint8_t *qs, int i, int v)
{
    qs[i % 16] |= (uint8_t)(v << (4 * (i / 16)));
}

static void test_q4_0_q4_1(void)
{
    for (int rep = 0; rep < 50; rep++) {
        uint8_t b0[2 * 18] = {0}, b1[2 * 20] = {0};
        double e0[64], e1[64];
        for (int blk = 0; blk < 2; blk++) {
            double d, m = -rnd_in(0, 200) / 256.0;
            uint16_t dh = rnd_scale(&d);
            put16(b0 + 18 * blk, dh);
            put16(b1 + 20 * blk, dh);
            put16(b1 + 20 * blk + 2, f32_to_fp16((float)m));
            for (int i = 0; i < 32; i++) {
                int q = rnd_in(0, 15);
                put_nibble(b0 + 18 * blk + 2, i, q);
                put_nibble(b1 + 20 * blk + 4, i, q);
                e0[32 * blk + i] = d * (q - 8);
                e1[32 * blk + i] = (double)(float)(d * q + m); /* one float rounding */
            }
        }
        check_exact(EXSA_DTYPE_Q4_0, b0, e0, 64, "Q4_0");
        check_exact(EXSA_DTYPE_Q4_1, b1, e1, 64, "Q4_1");
    }
}

static void test_q5_0_q5_1(void)
{
    for (int rep = 0; rep < 50; rep++) {
        uint8_t b0[22] = {0}, b1[24] = {0};
        double e0[32], e1[32], d, m = rnd_in(-100, 100) / 512.0;
        uint16_t dh = rnd_scale(&d);
        put16(b0, dh);
        put16(b1, dh);
        put16(b1 + 2, f32_to_fp16((float)m));
        for (int i = 0; i < 32; i++) {
            int q = rnd_in(0, 31);
            put_nibble(b0 + 6, i, q & 15);
            put_nibble(b1 + 8, i, q & 15);
            /* the 5th bit of element i is bit i of the 32-bit qh */
            b0[2 + i / 8] |= (uint8_t)((q >> 4) << (i % 8));
            b1[4 + i / 8] |= (uint8_t)((q >> 4) << (i % 8));
            e0[i] = d * (q - 16);
            e1[i] = (double)(float)(d * q + m);
        }
        check_exact(EXSA_DTYPE_Q5_0, b0, e0, 32, "Q5_0");
        check_exact(EXSA_DTYPE_Q5_1, b1, e1, 32, "Q5_1");
    }
}

static void test_q8_0_iq4_nl(void)
{
    for (int rep = 0; rep < 50; rep++) {
        uint8_t b8[34] = {0}, bn[18] = {0};
        double e8[32], en[32], d;
        uint16_t dh = rnd_scale(&d);
        put16(b8, dh);
        put16(bn, dh);
        for (int i = 0; i < 32; i++) {
            int q = rnd_in(-128, 127), k = rnd_in(0, 15);
            b8[2 + i] = (uint8_t)(int8_t)q;
            put_nibble(bn + 2, i, k);
            e8[i] = d * q;
            en[i] = d * iq4_table[k];
        }
        check_exact(EXSA_DTYPE_Q8_0, b8, e8, 32, "Q8_0");
        check_exact(EXSA_DTYPE_IQ4_NL, bn, en, 32, "IQ4_NL");
    }
}

/* ---- K super-blocks -------------------------------------------------------------------------- */

/* In Q2_K, Q3_K and Q6_K element i = 128 n + 32 j + l (half n, 2-bit plane or quarter j, l < 32)
 * uses scale i / 16 and byte l of the half's quant run. */
static void test_q2_k(void)
{
    for (int rep = 0; rep < 30; rep++) {
        uint8_t b[84] = {0};
        double e[256], d, dmin;
        int sc[16], mn[16];
        put16(b + 80, rnd_scale(&d));
        put16(b + 82, rnd_scale(&dmin));
        for (int s = 0; s < 16; s++) {
            sc[s] = rnd_in(0, 15), mn[s] = rnd_in(0, 15);
            b[s] = (uint8_t)(sc[s] | mn[s] << 4);
        }
        for (int i = 0; i < 256; i++) {
            int q = rnd_in(0, 3), n = i / 128, j = (i % 128) / 32, l = i % 32;
            b[16 + 32 * n + l] |= (uint8_t)(q << (2 * j));
            e[i] = d * sc[i / 16] * q - dmin * mn[i / 16];
        }
        check_exact(EXSA_DTYPE_Q2_K, b, e, 256, "Q2_K");
    }
}

static void test_q3_k(void)
{
    for (int rep = 0; rep < 30; rep++) {
        uint8_t b[110] = {0};
        double e[256], d;
        int S[16];
        put16(b + 108, rnd_scale(&d));
        uint8_t *sc = b + 96;
        for (int s = 0; s < 16; s++) {
            S[s] = rnd_in(0, 63);
            /* low 4 bits: nibble s / 8 of byte s % 8; high 2 bits: byte 8 + s % 4, at 2 (s / 4) */
            sc[s % 8] |= (uint8_t)((S[s] & 15) << (4 * (s / 8)));
            sc[8 + s % 4] |= (uint8_t)((S[s] >> 4) << (2 * (s / 4)));
        }
        for (int i = 0; i < 256; i++) {
            int v = rnd_in(-4, 3), n = i / 128, j = (i % 128) / 32, l = i % 32;
            int hbit = v >= 0, lo = hbit ? v : v + 4;
            b[32 + 32 * n + l] |= (uint8_t)(lo << (2 * j));
            b[l] |= (uint8_t)(hbit << (4 * n + j));
            e[i] = d * (S[i / 16] - 32) * v;
        }
        check_exact(EXSA_DTYPE_Q3_K, b, e, 256, "Q3_K");
    }
}

/* Packs 8 six-bit scales and mins the Q4_K / Q5_K way into 12 bytes. */
static void pack_k4_scales(uint8_t *p, const int *sc, const int *mn)
{
    for (int j = 0; j < 4; j++) {
        p[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        p[j + 4] = (uint8_t)(mn[j] | (mn[j + 4] >> 4) << 6);
        p[j + 8] = (uint8_t)((sc[j + 4] & 15) | (mn[j + 4] & 15) << 4);
    }
}

/* Q4_K (bits 4) and Q5_K (bits 5): element i is in sub-block i / 32, byte 32 (i / 64) + i % 32 of
 * qs, high nibble for odd sub-blocks; Q5_K's 5th bit is bit (i / 32) of qh[i % 32]. */
static void test_q4_k_q5_k(void)
{
    for (int rep = 0; rep < 30; rep++) {
        for (int bits = 4; bits <= 5; bits++) {
            uint8_t b[176] = {0};
            double e[256], d, dmin;
            int sc[8], mn[8];
            put16(b, rnd_scale(&d));
            put16(b + 2, rnd_scale(&dmin));
            for (int j = 0; j < 8; j++)
                sc[j] = rnd_in(0, 63), mn[j] = rnd_in(0, 63);
            pack_k4_scales(b + 4, sc, mn);
            uint8_t *qh = b + 16, *qs = bits == 5 ? b + 48 : b + 16;
            for (int i = 0; i < 256; i++) {
                int q = rnd_in(0, (1 << bits) - 1), sub = i / 32;
                qs[32 * (i / 64) + i % 32] |= (uint8_t)((q & 15) << (4 * (sub % 2)));
                if (bits == 5)
                    qh[i % 32] |= (uint8_t)((q >> 4) << sub);
                e[i] = d * sc[sub] * q - dmin * mn[sub];
            }
            check_exact(bits == 4 ? EXSA_DTYPE_Q4_K : EXSA_DTYPE_Q5_K, b, e, 256,
                        bits == 4 ? "Q4_K" : "Q5_K");
        }
    }
}

static void test_q6_k(void)
{
    for (int rep = 0; rep < 30; rep++) {
        uint8_t b[210] = {0};
        double e[256], d;
        int sc[16];
        put16(b + 208, rnd_scale(&d));
        for (int s = 0; s < 16; s++) {
            sc[s] = rnd_in(-128, 127);
            b[192 + s] = (uint8_t)(int8_t)sc[s];
        }
        for (int i = 0; i < 256; i++) {
            int q = rnd_in(0, 63), n = i / 128, j = (i % 128) / 32, l = i % 32;
            /* quarters 0,1 use low nibbles of ql[l], ql[l+32]; quarters 2,3 the high ones */
            b[64 * n + l + 32 * (j % 2)] |= (uint8_t)((q & 15) << (4 * (j / 2)));
            b[128 + 32 * n + l] |= (uint8_t)((q >> 4) << (2 * j));
            e[i] = d * sc[i / 16] * (q - 32);
        }
        check_exact(EXSA_DTYPE_Q6_K, b, e, 256, "Q6_K");
    }
}

static void test_iq4_xs(void)
{
    for (int rep = 0; rep < 30; rep++) {
        uint8_t b[136] = {0};
        double e[256], d;
        int ls[8];
        uint16_t sh = 0;
        put16(b, rnd_scale(&d));
        for (int ib = 0; ib < 8; ib++) {
            ls[ib] = rnd_in(0, 63);
            b[4 + ib / 2] |= (uint8_t)((ls[ib] & 15) << (4 * (ib % 2)));
            sh |= (uint16_t)((ls[ib] >> 4) << (2 * ib));
        }
        put16(b + 2, sh);
        for (int i = 0; i < 256; i++) {
            int k = rnd_in(0, 15), ib = i / 32;
            put_nibble(b + 8 + 16 * ib, i % 32, k);
            e[i] = d * (ls[ib] - 32) * iq4_table[k];
        }
        check_exact(EXSA_DTYPE_IQ4_XS, b, e, 256, "IQ4_XS");
    }
}

static void test_q8_k(void)
{
    uint8_t b[292] = {0};
    double e[256];
    float d = 0.015625f;
    memcpy(b, &d, 4);
    for (int i = 0; i < 256; i++) {
        int q = rnd_in(-127, 127);
        b[4 + i] = (uint8_t)(int8_t)q;
        e[i] = (double)d * q;
    }
    check_exact(EXSA_DTYPE_Q8_K, b, e, 256, "Q8_K");
}

/* ---- fp16 / bf16 ----------------------------------------------------------------------------- */

/* The value of half bits h from the IEEE formula (NAN for nans). */
static double half_value(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static void test_fp16_all(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        double want = half_value((uint16_t)h);
        float f = fp16_to_f32((uint16_t)h);
        bool ok = isnan(want) ? isnan(f) : (double)f == want && !signbit(f) == !signbit(want);
        ok = ok && f32_to_fp16(f) == h; /* round trip is exact, nans included */
        if (!ok && bad++ < 5)
            CHECK(0, "half 0x%04x: got %g (back 0x%04x), want %g", h, f, f32_to_fp16(f), want);
    }
    CHECK(bad == 0, "%d half values wrong", bad);
}

/* Midpoints between neighbouring halves round to the even one; just off them, to the nearer. */
static void test_fp16_rounding(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 0x7c00; h++) {
        double lo = half_value((uint16_t)h);
        double hi = h + 1 == 0x7c00 ? 65536.0 : half_value((uint16_t)(h + 1));
        float mid = (float)((lo + hi) / 2); /* exact: 12 significant bits */
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        uint16_t got[3] = {f32_to_fp16(mid), f32_to_fp16(nextafterf(mid, 0)),
                           f32_to_fp16(nextafterf(mid, INFINITY))};
        uint16_t want[3] = {even, (uint16_t)h, (uint16_t)(h + 1)};
        for (int k = 0; k < 3; k++) {
            if (got[k] != want[k] && bad++ < 5)
                CHECK(0, "fp16 case %d near 0x%04x: got 0x%04x want 0x%04x", k, h, got[k], want[k]);
            uint16_t neg = f32_to_fp16(-(k == 0   ? mid
                                         : k == 1 ? nextafterf(mid, 0)
                                                  : nextafterf(mid, INFINITY)));
            if (neg != (want[k] | 0x8000) && bad++ < 5)
                CHECK(0, "fp16 negative case %d near 0x%04x: got 0x%04x", k, h, neg);
        }
    }
    CHECK(bad == 0, "%d fp16 roundings wrong", bad);
    CHECK(f32_to_fp16(1e10f) == 0x7c00, "overflow to inf");
    CHECK(f32_to_fp16(-INFINITY) == 0xfc00, "-inf");
    CHECK(f32_to_fp16(1e-30f) == 0 && f32_to_fp16(-1e-30f) == 0x8000, "underflow to signed 0");
    uint16_t n = f32_to_fp16(NAN);
    CHECK((n & 0x7c00) == 0x7c00 && (n & 0x3ff), "nan stays nan: 0x%04x", n);
}

static void test_bf16(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
        double want = e == 0     ? ldexp(m, -133)
                      : e == 255 ? (m ? NAN : INFINITY)
                                 : ldexp(128 + m, e - 134);
        if (s)
            want = -want;
        float f = bf16_to_f32((uint16_t)h);
        bool ok = isnan(want) ? isnan(f) : (double)f == want;
        ok = ok && f32_to_bf16(f) == h;
        if (!ok && bad++ < 5)
            CHECK(0, "bf16 0x%04x: got %g want %g back 0x%04x", h, f, want, f32_to_bf16(f));
        if (e < 254 || (e == 254 && m < 127)) { /* midpoint to the next value rounds to even */
            float lo = f, hi = bf16_to_f32((uint16_t)(h + 1));
            float mid = (float)(((double)lo + hi) / 2);
            uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            if (f32_to_bf16(mid) != even && bad++ < 5)
                CHECK(0, "bf16 midpoint after 0x%04x: got 0x%04x", h, f32_to_bf16(mid));
            if (f32_to_bf16(nextafterf(mid, s ? -INFINITY : INFINITY)) != h + 1 && bad++ < 5)
                CHECK(0, "bf16 above midpoint after 0x%04x", h);
        }
    }
    CHECK(bad == 0, "%d bf16 values wrong", bad);
    uint16_t n = f32_to_bf16(NAN);
    CHECK((n & 0x7f80) == 0x7f80 && (n & 0x7f), "nan stays nan: 0x%04x", n);
}

static void test_float_rows(void)
{
    uint16_t h[4] = {0x3c00, 0xc000, 0x0001, 0x7bff};
    uint16_t b[4] = {0x3f80, 0xc000, 0x0001, 0x7f7f};
    float f[4] = {1.5f, -2.25f, 0, 3e38f}, y[4];
    CHECK(dequantize_row(EXSA_DTYPE_F16, h, y, 4) == 0, "F16");
    CHECK(y[0] == 1 && y[1] == -2 && y[2] == 0x1p-24f && y[3] == 65504, "F16 values");
    CHECK(dequantize_row(EXSA_DTYPE_BF16, b, y, 4) == 0, "BF16");
    CHECK(y[0] == 1 && y[1] == -2 && y[2] == 0x1p-133f && y[3] > 3.38e38f, "BF16 values");
    CHECK(dequantize_row(EXSA_DTYPE_F32, f, y, 4) == 0 && memcmp(f, y, 16) == 0, "F32 copy");
}

/* ---- the type table -------------------------------------------------------------------------- */

static void test_dtype_table(void)
{
    static const struct {
        int id;
        const char *name;
        int bs, ts;
        bool sup;
    } want[] = {
        {0, "F32", 1, 4, true},          {1, "F16", 1, 2, true},
        {2, "Q4_0", 32, 18, true},       {3, "Q4_1", 32, 20, true},
        {6, "Q5_0", 32, 22, true},       {7, "Q5_1", 32, 24, true},
        {8, "Q8_0", 32, 34, true},       {9, "Q8_1", 32, 36, false},
        {10, "Q2_K", 256, 84, true},     {11, "Q3_K", 256, 110, true},
        {12, "Q4_K", 256, 144, true},    {13, "Q5_K", 256, 176, true},
        {14, "Q6_K", 256, 210, true},    {15, "Q8_K", 256, 292, true},
        {16, "IQ2_XXS", 256, 66, false}, {20, "IQ4_NL", 32, 18, true},
        {23, "IQ4_XS", 256, 136, true},  {24, "I8", 1, 1, false},
        {28, "F64", 1, 8, false},        {30, "BF16", 1, 2, true},
        {39, "MXFP4", 32, 17, false},    {42, "Q2_0", 64, 18, false},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const struct dtype_info *t = dtype_info(want[i].id);
        CHECK(t != NULL, "id %d missing", want[i].id);
        if (!t)
            continue;
        CHECK(strcmp(t->name, want[i].name) == 0, "id %d name %s", want[i].id, t->name);
        CHECK(t->block_size == want[i].bs && t->type_size == want[i].ts, "%s geometry %d/%d",
              t->name, t->block_size, t->type_size);
        CHECK(t->supported == want[i].sup, "%s supported flag", t->name);
    }
    int retired[] = {-1, 4, 5, 31, 32, 33, 36, 37, 38, 43, 1000};
    for (size_t i = 0; i < sizeof retired / sizeof *retired; i++)
        CHECK(dtype_info(retired[i]) == NULL, "id %d should be unknown", retired[i]);
    int n_sup = 0;
    for (int id = 0; id < EXSA_DTYPE_COUNT; id++)
        n_sup += dtype_info(id) && dtype_info(id)->supported;
    CHECK(n_sup == 16, "16 supported types, got %d", n_sup);
    CHECK(dtype_row_size(EXSA_DTYPE_Q4_K, 2048) == 8 * 144, "Q4_K row");
    CHECK(dtype_row_size(EXSA_DTYPE_F16, 7) == 14, "F16 row");
    CHECK(dtype_row_size(EXSA_DTYPE_Q8_0, 33) == 0, "partial block");
    CHECK(dtype_row_size(4, 32) == 0, "retired id");
    float y[32];
    CHECK(dequantize_row(EXSA_DTYPE_Q8_1, y, y, 32) == EXSA_EUNSUPPORTED, "Q8_1 unsupported");
    CHECK(dequantize_row(31, y, y, 32) == EXSA_EUNSUPPORTED, "retired id unsupported");
}

/* ---- fixtures: every tensor of each quantized file against the file it was quantized from ---- */

/* NMSE bound per tensor type: ~10x the error the quantizer leaves on these random weights, and
 * far below what a wrong bit or scale order gives (~1 or more). */
static double nmse_bound(int type)
{
    switch (type) {
    case EXSA_DTYPE_F32: return 0;
    case EXSA_DTYPE_F16: return 1e-6;
    case EXSA_DTYPE_BF16: return 1e-4;
    case EXSA_DTYPE_Q8_0: return 1e-4;
    case EXSA_DTYPE_Q6_K: return 1e-3;
    case EXSA_DTYPE_Q5_0:
    case EXSA_DTYPE_Q5_1:
    case EXSA_DTYPE_Q5_K: return 5e-3;
    case EXSA_DTYPE_Q3_K: return 0.1;
    case EXSA_DTYPE_Q2_K: return 0.2;
    default: return 2e-2; /* Q4_*, IQ4_* */
    }
}

/* NMSE of tensor t against the reference tensor r (same shape), both dequantized; -1 on error. */
static double tensor_nmse(const struct gguf_tensor *t, const struct gguf_tensor *r)
{
    int64_t k = t->ne[0], rows = t->ne[1] * t->ne[2] * t->ne[3];
    size_t ts = dtype_row_size(t->type, k), rs = dtype_row_size(r->type, k);
    float *a = malloc(sizeof(float) * k), *b = malloc(sizeof(float) * k);
    double err = 0, ref = 0;
    int rc = 0;
    for (int64_t i = 0; i < rows && rc == 0; i++) {
        rc = dequantize_row(t->type, (const uint8_t *)t->data + i * ts, a, k);
        rc |= dequantize_row(r->type, (const uint8_t *)r->data + i * rs, b, k);
        for (int64_t j = 0; j < k; j++) {
            err += ((double)a[j] - b[j]) * ((double)a[j] - b[j]);
            ref += (double)b[j] * b[j];
        }
    }
    free(a);
    free(b);
    return rc || !(ref > 0) ? -1 : err / ref;
}

static void check_file(const char *name, const char *ref_name, int *types_seen)
{
    char path[512], rpath[512], err[256];
    struct gguf_file *f = NULL, *r = NULL;
    snprintf(path, sizeof path, "%s/%s", fixtures_dir(), name);
    snprintf(rpath, sizeof rpath, "%s/%s", fixtures_dir(), ref_name);
    int rc = gguf_open(path, &f, err, sizeof err);
    CHECK(rc == 0, "%s: %s", name, err);
    rc |= gguf_open(rpath, &r, err, sizeof err);
    CHECK(rc == 0, "%s: %s", ref_name, err);
    for (uint64_t i = 0; rc == 0 && i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i], *rt = gguf_find_tensor(r, t->name);
        CHECK(rt && memcmp(rt->ne, t->ne, sizeof t->ne) == 0, "%s: %s shape", name, t->name);
        if (!rt || memcmp(rt->ne, t->ne, sizeof t->ne) != 0)
            continue;
        double e = tensor_nmse(t, rt), bound = nmse_bound(t->type);
        if (getenv("QUANT_VERBOSE"))
            fprintf(stderr, "  %-22s %-30s %-6s nmse %.3g\n", name, t->name,
                    dtype_info(t->type)->name, e);
        CHECK(e >= 0 && e <= bound, "%s: %s (%s) nmse %.3g > %.3g", name, t->name,
              dtype_info(t->type)->name, e, bound);
        types_seen[t->type] = 1;
    }
    gguf_close(f);
    gguf_close(r);
}

static void test_fixtures(void)
{
    static const char *dense[] = {"F16",    "BF16",   "Q8_0", "Q4_0",   "Q4_1", "Q5_0",   "Q5_1",
                                  "Q4_K_M", "Q5_K_M", "Q6_K", "Q3_K_M", "Q2_K", "IQ4_NL", "IQ4_XS"};
    int seen[EXSA_DTYPE_COUNT] = {0};
    char name[64];
    for (size_t i = 0; i < sizeof dense / sizeof *dense; i++) {
        snprintf(name, sizeof name, "lfm2-tiny-%s.gguf", dense[i]);
        check_file(name, "lfm2-tiny-F32.gguf", seen);
    }
    check_file("lfm2moe-tiny-Q8_0.gguf", "lfm2moe-tiny-F16.gguf", seen);
    check_file("lfm2moe-tiny-Q4_K_M.gguf", "lfm2moe-tiny-F16.gguf", seen);
    /* every weight type the fixtures carry was exercised */
    int want[] = {EXSA_DTYPE_F32,  EXSA_DTYPE_F16,    EXSA_DTYPE_BF16,  EXSA_DTYPE_Q8_0,
                  EXSA_DTYPE_Q4_0, EXSA_DTYPE_Q4_1,   EXSA_DTYPE_Q5_0,  EXSA_DTYPE_Q5_1,
                  EXSA_DTYPE_Q2_K, EXSA_DTYPE_Q3_K,   EXSA_DTYPE_Q4_K,  EXSA_DTYPE_Q5_K,
                  EXSA_DTYPE_Q6_K, EXSA_DTYPE_IQ4_NL, EXSA_DTYPE_IQ4_XS};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        CHECK(seen[want[i]], "no fixture tensor of type %s", dtype_info(want[i])->name);
}

int main(void)
{
    RUN(test_dtype_table);
    RUN(test_fp16_all);
    RUN(test_fp16_rounding);
    RUN(test_bf16);
    RUN(test_float_rows);
    RUN(test_q4_0_q4_1);
    RUN(test_q5_0_q5_1);
    RUN(test_q8_0_iq4_nl);
    RUN(test_q2_k);
    RUN(test_q3_k);
    RUN(test_q4_k_q5_k);
    RUN(test_q6_k);
    RUN(test_iq4_xs);
    RUN(test_q8_k);
    RUN(test_fixtures);
    TEST_END();
}
