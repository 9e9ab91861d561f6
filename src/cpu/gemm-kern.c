/*
 * gemm-kern.c: the kernels of the prefill path (gemm.h): AMX-BF16 tile products, the AVX-512
 * BF16 dot-product fallback, packing of activations and weight rows into the bf16 layouts.
 * Compiled for levels BF16 and AMX (features.h); gemm.c calls them only at those levels.
 *
 * Both kernels compute 16 weight rows x 16 tokens blocks C[r][t] and write them transposed into
 * y[t][n] (16x16 in-register transpose, masked at the last rows of N and tokens of n_tok).
 */
#include <stdalign.h>
#include <string.h>

#include "cpu/gemm.h"
#include "cpu/simd.h"

#if defined(__x86_64__) && defined(__GNUC__)

#define TILE_EL 512 /* bf16 elements of one 1 KiB tile */

/* ---- AMX tiles ------------------------------------------------------------------------ */

struct tilecfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

static _Thread_local bool tl_tiles_on;

/* Tiles 0-7 all 16 rows x 64 bytes: 0-3 accumulators, 4-5 weights (A), 6-7 activations (B). */
static TGT_AMX void amx_config(void)
{
    if (tl_tiles_on)
        return;
    alignas(64) struct tilecfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.colsb[i] = 64;
        cfg.rows[i] = 16;
    }
    _tile_loadconfig(&cfg);
    tl_tiles_on = true;
}

TGT_AMX void gemm_amx_done(void)
{
    if (tl_tiles_on)
        _tile_release();
    tl_tiles_on = false;
}

/* ---- 16x16 transpose and the transposed write of one C block ----------------------------- */

INL_BF16 void transpose16(__m512 *r)
{
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        const __m512d t0 = _mm512_castps_pd(t[4 * i]), t1 = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d t2 = _mm512_castps_pd(t[4 * i + 2]), t3 = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    /* u[4i + c], lane L: column 4L + c of rows 4i..4i+3 */
    for (int c = 0; c < 4; c++) {
        const __m512 p0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);
        const __m512 p1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xee);
        const __m512 q0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
        const __m512 q1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xee);
        r[c] = _mm512_shuffle_f32x4(p0, q0, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(p0, q0, 0xdd);
        r[8 + c] = _mm512_shuffle_f32x4(p1, q1, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(p1, q1, 0xdd);
    }
}

/* C[r][t] (16x16 f32, rows of panel group g, tokens of block b) into y[t][n0 + 16 g + r]. */
INL_BF16 void write_block(const struct gemm_tile_job *j, const float *C, int g, int b)
{
    __m512 r[16];
    for (int i = 0; i < 16; i++)
        r[i] = _mm512_load_ps(C + 16 * i);
    transpose16(r);
    const int rows = j->n_valid - 16 * g, toks = j->n_tok - 16 * b;
    if (rows <= 0)
        return;
    const __mmask16 m = rows >= 16 ? 0xffff : (__mmask16)((1u << rows) - 1);
    float *y = j->y + (int64_t)16 * b * j->ldy + j->n0 + 16 * g;
    for (int t = 0; t < 16 && t < toks; t++)
        _mm512_mask_storeu_ps(y + t * j->ldy, m, r[t]);
}

/* ---- AMX kernel ----------------------------------------------------------------------------- */

#ifndef PF_DIST
#define PF_DIST 4
#endif
#ifndef PF_HINT
#define PF_HINT _MM_HINT_T0
#endif
TGT_AMX void gemm_kern_amx(const struct gemm_tile_job *j, int g0, int g1, int b0, int b1)
{
    amx_config();
    alignas(64) float C[4][256];
    const size_t nks = (size_t)j->nks, gs = nks * TILE_EL; /* gs: one group */
    for (int b = b0; b < b1; b += 2) {
        const bool two = b + 1 < b1;
        const uint16_t *x0 = j->xb + (size_t)b * nks * TILE_EL, *x1 = x0 + nks * TILE_EL;
        for (int g = g0; g < g1; g += 2) {
            const uint16_t *a0 = j->panel + (size_t)g * gs, *a1 = a0 + gs;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            if (two) {
                for (size_t s = 0; s < nks; s++) {
                    if (PF_DIST && s + PF_DIST < nks) {
                        const char *p0 = (const char *)(x0 + (s + PF_DIST) * TILE_EL);
                        const char *p1 = (const char *)(x1 + (s + PF_DIST) * TILE_EL);
                        for (int l = 0; l < 16; l++) {
                            _mm_prefetch(p0 + 64 * l, PF_HINT);
                            _mm_prefetch(p1 + 64 * l, PF_HINT);
                        }
                    }
                    _tile_loadd(4, a0 + s * TILE_EL, 64);
                    _tile_loadd(6, x0 + s * TILE_EL, 64);
                    _tile_dpbf16ps(0, 4, 6);
                    _tile_loadd(7, x1 + s * TILE_EL, 64);
                    _tile_dpbf16ps(1, 4, 7);
                    _tile_loadd(5, a1 + s * TILE_EL, 64);
                    _tile_dpbf16ps(2, 5, 6);
                    _tile_dpbf16ps(3, 5, 7);
                }
            } else {
                for (size_t s = 0; s < nks; s++) {
                    _tile_loadd(4, a0 + s * TILE_EL, 64);
                    _tile_loadd(6, x0 + s * TILE_EL, 64);
                    _tile_loadd(5, a1 + s * TILE_EL, 64);
                    _tile_dpbf16ps(0, 4, 6);
                    _tile_dpbf16ps(2, 5, 6);
                }
            }
            _tile_stored(0, C[0], 64);
            _tile_stored(2, C[2], 64);
            write_block(j, C[0], g, b);
            write_block(j, C[2], g + 1, b);
            if (two) {
                _tile_stored(1, C[1], 64);
                _tile_stored(3, C[3], 64);
                write_block(j, C[1], g, b + 1);
                write_block(j, C[3], g + 1, b + 1);
            }
        }
    }
}

/* ---- AVX-512 BF16 kernel ---------------------------------------------------------------- */

/* 8 rows (panel group g, half h) x 16 or 32 tokens: C[v][8h + r][t] for token block b + v. */
INL_BF16 void avx_8rows(const struct gemm_tile_job *j, int g, int h, int b, bool two, float *C0,
                        float *C1)
{
    const size_t nks = (size_t)j->nks;
    const uint16_t *x0 = j->xb + (size_t)b * nks * TILE_EL, *x1 = x0 + nks * TILE_EL;
    const uint16_t *w = j->panel + (size_t)g * nks * TILE_EL + 8 * h * 32;
    __m512 acc0[8], acc1[8];
    for (int r = 0; r < 8; r++)
        acc0[r] = acc1[r] = _mm512_setzero_ps();
    for (size_t s = 0; s < nks; s++, w += TILE_EL, x0 += TILE_EL, x1 += TILE_EL) {
        for (int kp = 0; kp < 16; kp++) {
            const __m512bh xa = (__m512bh)_mm512_load_si512(x0 + 32 * kp);
            const __m512bh xb = two ? (__m512bh)_mm512_load_si512(x1 + 32 * kp) : xa;
#pragma GCC unroll 8
            for (int r = 0; r < 8; r++) {
                uint32_t pair;
                memcpy(&pair, w + 32 * r + 2 * kp, 4);
                const __m512bh wv = (__m512bh)_mm512_set1_epi32((int)pair);
                acc0[r] = _mm512_dpbf16_ps(acc0[r], wv, xa);
                if (two)
                    acc1[r] = _mm512_dpbf16_ps(acc1[r], wv, xb);
            }
        }
    }
    for (int r = 0; r < 8; r++) {
        _mm512_store_ps(C0 + 16 * (8 * h + r), acc0[r]);
        _mm512_store_ps(C1 + 16 * (8 * h + r), acc1[r]);
    }
}

static TGT_BF16 void avx_block_2(const struct gemm_tile_job *j, int g, int b, float *C0, float *C1)
{
    avx_8rows(j, g, 0, b, true, C0, C1);
    avx_8rows(j, g, 1, b, true, C0, C1);
}

static TGT_BF16 void avx_block_1(const struct gemm_tile_job *j, int g, int b, float *C0, float *C1)
{
    avx_8rows(j, g, 0, b, false, C0, C1);
    avx_8rows(j, g, 1, b, false, C0, C1);
}

TGT_BF16 void gemm_kern_avx512(const struct gemm_tile_job *j, int g0, int g1, int b0, int b1)
{
    alignas(64) float C[2][256];
    for (int b = b0; b < b1; b += 2) {
        const bool two = b + 1 < b1;
        for (int g = g0; g < g1; g++) {
            if (two)
                avx_block_2(j, g, b, C[0], C[1]);
            else
                avx_block_1(j, g, b, C[0], C[1]);
            write_block(j, C[0], g, b);
            if (two)
                write_block(j, C[1], g, b + 1);
        }
    }
}

/* ---- packing ---------------------------------------------------------------------------- */

/* 32 floats -> 32 bf16 (round to nearest even), as 16 dword pairs. */
INL_BF16 __m512i bf16x32(__m512 lo, __m512 hi)
{
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* The bf16 rounding of 16 floats, and the f32 value of that rounding. */
INL_BF16 __m256i bf16x16(__m512 v, __m512 *back)
{
    const __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
    *back = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return h;
}

/* 32 floats of x at k (for segs > 1 also their residuals) as dword pair vectors. */
INL_BF16 void x_pairs(const float *x, int segs, __m512 *hi, __m512 *lo)
{
    const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    if (segs == 1) {
        *hi = (__m512)bf16x32(v0, v1);
        return;
    }
    __m512 b0, b1;
    const __m256i h0 = bf16x16(v0, &b0), h1 = bf16x16(v1, &b1);
    *hi = _mm512_castsi512_ps(_mm512_inserti64x4(_mm512_castsi256_si512(h0), h1, 1));
    *lo = (__m512)bf16x32(_mm512_sub_ps(v0, b0), _mm512_sub_ps(v1, b1));
}

INL_BF16 void store_tile_t(uint16_t *dst, __m512 *r)
{
    transpose16(r); /* r[kp] = pair kp of the 16 tokens */
    for (int kp = 0; kp < 16; kp++)
        _mm512_store_ps((float *)(dst + 32 * kp), r[kp]);
}

TGT_BF16 void gemm_pack_x(const float *x, int64_t K, int segs, int b0, int b1, int n_tok,
                          uint16_t *xb)
{
    const int64_t nks = K / 32, steps = nks * segs;
    for (int b = b0; b < b1; b++) {
        const int toks = n_tok - 16 * b < 16 ? n_tok - 16 * b : 16;
        const float *xt = x + (int64_t)16 * b * K;
        uint16_t *dst = xb + (size_t)b * steps * TILE_EL;
        for (int64_t s = 0; s < nks; s++, dst += TILE_EL) {
            __m512 hi[16], lo[16];
            for (int t = 0; t < 16; t++) {
                hi[t] = lo[t] = _mm512_setzero_ps();
                if (t < toks)
                    x_pairs(xt + t * K + 32 * s, segs, &hi[t], &lo[t]);
            }
            if (segs == 3) {
                __m512 h2[16];
                memcpy(h2, hi, sizeof(h2));
                store_tile_t(dst + 2 * nks * TILE_EL, h2);
            }
            if (segs > 1)
                store_tile_t(dst + nks * TILE_EL, lo);
            store_tile_t(dst, hi);
        }
    }
}

/* Where K-step s of panel row p starts (steps: K-steps of a row over all its segments). */
static inline uint16_t *panel_at(uint16_t *panel, int p, int64_t steps, int64_t s)
{
    return panel + ((size_t)(p / 16) * steps + s) * TILE_EL + (p % 16) * 32;
}

TGT_BF16 void gemm_pack_row_f32(const float *row, int64_t K, int segs, int p, uint16_t *panel)
{
    const int64_t nks = K / 32, steps = segs * nks;
    for (int64_t s = 0; s < nks; s++) {
        __m512 hi, lo;
        x_pairs(row + 32 * s, segs == 1 ? 1 : 2, &hi, &lo);
        _mm512_store_ps((float *)panel_at(panel, p, steps, s), hi);
        if (segs == 3) {
            _mm512_store_ps((float *)panel_at(panel, p, steps, s + nks), hi);
            _mm512_store_ps((float *)panel_at(panel, p, steps, s + 2 * nks), lo);
        }
    }
}

/* ---- direct unpackers of the int8-kernel types: 32 weights per K-step -------------------- */

/* dst = bf16 of (u[i] * a0 + b0) for i < 16 and (u[i] * a1 + b1) for i >= 16, u unsigned bytes. */
INL_BF16 void put32(uint16_t *dst, __m256i u, float a0, float b0, float a1, float b1)
{
    const __m512i i0 = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(u));
    const __m512i i1 = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(u, 1));
    const __m512 v0 =
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0), _mm512_set1_ps(a0), _mm512_set1_ps(b0));
    const __m512 v1 =
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1), _mm512_set1_ps(a1), _mm512_set1_ps(b1));
    _mm512_store_si512(dst, bf16x32(v0, v1));
}

/* Row p of a panel from one row of K elements of type (a constant after inlining). */
INL_BF16 void pack_row_q8(int type, const uint8_t *w, int64_t K, int p, int64_t steps,
                          uint16_t *panel)
{
    int64_t s = 0; /* K-step: 32-element chunk of the row */
    for (const uint8_t *b = w; s < K / 32; b += block_bytes(type)) {
        struct wblock wb;
        const int n = unpack_block(type, b, &wb);
        for (int i = 0; i < n; i++, s++)
            put32(panel_at(panel, p, steps, s), wb.u[i], wb.a[2 * i], wb.b[2 * i], wb.a[2 * i + 1],
                  wb.b[2 * i + 1]);
    }
}

TGT_BF16 bool gemm_pack_row(int type, const uint8_t *w, int64_t K, int segs, int p, uint16_t *panel)
{
    const int64_t nks = K / 32, steps = segs * nks;
    if (segs == 1 && block_bytes(type) != 0) { /* the int8-kernel types: plain bf16 only */
        WITH_Q8_TYPE(type, pack_row_q8, w, K, p, steps, panel);
        return true;
    }
    switch (type) {
    case EXSA_DTYPE_BF16: /* segments: w, w */
        for (int64_t s = 0; s < nks; s++)
            for (int g = 0; g < segs; g++)
                _mm512_store_si512(panel_at(panel, p, steps, s + g * nks),
                                   _mm512_loadu_si512(w + 64 * s));
        return true;
    case EXSA_DTYPE_F16: /* segments: hi (1); hi, hi, lo (3) */
        for (int64_t s = 0; s < nks; s += 16) {
            alignas(64) float f[512];
            const int64_t n = nks - s < 16 ? nks - s : 16;
            for (int64_t i = 0; i < 2 * n; i++)
                _mm512_store_ps(f + 16 * i, _mm512_cvtph_ps(_mm256_loadu_si256(
                                                (const __m256i *)(w + 64 * s + 32 * i))));
            for (int64_t i = 0; i < n; i++) {
                __m512 hi, lo;
                x_pairs(f + 32 * i, segs == 1 ? 1 : 2, &hi, &lo);
                _mm512_store_ps((float *)panel_at(panel, p, steps, s + i), hi);
                if (segs == 3) {
                    _mm512_store_ps((float *)panel_at(panel, p, steps, s + i + nks), hi);
                    _mm512_store_ps((float *)panel_at(panel, p, steps, s + i + 2 * nks), lo);
                }
            }
        }
        return true;
    default: return false;
    }
}

#else /* not x86-64 gcc/clang: no kernels; features.c finds no level that runs them */

void gemm_amx_done(void)
{
}
void gemm_kern_amx(const struct gemm_tile_job *j, int g0, int g1, int b0, int b1)
{
}
void gemm_kern_avx512(const struct gemm_tile_job *j, int g0, int g1, int b0, int b1)
{
}
void gemm_pack_x(const float *x, int64_t K, int segs, int b0, int b1, int n_tok, uint16_t *xb)
{
}
void gemm_pack_row_f32(const float *row, int64_t K, int segs, int p, uint16_t *panel)
{
}
bool gemm_pack_row(int type, const uint8_t *w, int64_t K, int segs, int p, uint16_t *panel)
{
    return false;
}

#endif
