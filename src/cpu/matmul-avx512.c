/*
 * matmul-avx512.c: the tiled kernels of cpu_matmul (MM_TILED_Q8, MM_TILED_F), the fallback of
 * the int8 and float types and the prefill of F32 (compiled for level VNNI, features.h).
 *
 * int8 path (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K): every weight block is unpacked (simd.h), 32 elements
 * at a time, to unsigned bytes u (0..255) with a per-lane float scale sc (8 lanes of 4 elements:
 * one scale per 16 elements) and an offset m per 16 elements, so that w = sc * u + m. Then
 * dot(w, x) = sum_chunks dx * sc * dpbusd(u, xq) + sum_halves m * s16, where dpbusd is the VNNI
 * u8 x s8 dot product and s16 the activation half-block sums (matmul-impl.h). The unpacked chunk
 * is reused for a tile of up to 4 tokens; m goes to a per-row array dotted with s16 at the end.
 * 256-bit vectors: Zen 4 runs 512-bit ops double-pumped, so ymm loses nothing and keeps
 * frequencies up elsewhere. f32 path (F32, F16, BF16): convert 16 weights, FMA with 4 tokens.
 */
#include <stdlib.h>
#include <string.h>

#include "cpu/matmul-impl.h"
#include "cpu/scratch.h"
#include "cpu/simd.h"

#if defined(__x86_64__) && defined(__GNUC__)

#define TILE_T 4     /* tokens per tile: shares one unpacked weight chunk */
#define ROW_CHUNK 16 /* rows whose weights stay in L2 while all token tiles pass over them */

struct tok {
    const int8_t *xq;
    const float *dx;
    const float *s16;
};

INL_VNNI float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* acc[t] += dx[t][c] * sc * dpbusd(u, xq[t][chunk c]) for the T tokens. */
INL_VNNI void chunk(__m256i u, __m256 sc, int64_t c, const struct tok *tk, int T, __m256 *acc)
{
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        const __m256i xq = _mm256_loadu_si256((const __m256i *)(tk[t].xq + 32 * c));
        const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, xq);
        const __m256 s = _mm256_mul_ps(sc, _mm256_broadcast_ss(tk[t].dx + c));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc[t]);
    }
}

/* One row of K elements of type (a constant after inlining) against T tokens: accumulates the
 * chunks' dot products in acc[T] and leaves the weight offsets per 16 elements in m[K/16]. */
INL_VNNI void row_body(int type, const uint8_t *w, int64_t K, const struct tok *tk, int T, float *m,
                       __m256 *acc)
{
    int64_t c = 0; /* 32-element chunk of the row */
    for (const uint8_t *b = w; c < K / 32; b += block_bytes(type)) {
        struct wblock wb;
        const int n = unpack_block(type, b, &wb);
        for (int i = 0; i < n; i++, c++) {
            m[2 * c] = wb.b[2 * i];
            m[2 * c + 1] = wb.b[2 * i + 1];
            const __m256 a0 = _mm256_set1_ps(wb.a[2 * i]);
            const __m256 sc = _mm256_insertf128_ps(a0, _mm_set1_ps(wb.a[2 * i + 1]), 1);
            chunk(wb.u[i], sc, c, tk, T, acc);
        }
    }
}

/* sum m[i] * s[i], i < n (n even). */
INL_VNNI float dot_m(const float *m, const float *s, int64_t n)
{
    __m256 a = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        a = _mm256_fmadd_ps(_mm256_loadu_ps(m + i), _mm256_loadu_ps(s + i), a);
    float r = hsum8(a);
    for (; i < n; i++)
        r += m[i] * s[i];
    return r;
}

/* One row against T tokens; out[t * ldy] = the dot products. */
INL_VNNI void row_q8(int type, const uint8_t *w, int64_t K, const struct tok *tk, int T, float *m,
                     float *out, int64_t ldy)
{
    __m256 acc[TILE_T];
    for (int t = 0; t < T; t++)
        acc[t] = _mm256_setzero_ps();
    WITH_Q8_TYPE(type, row_body, w, K, tk, T, m, acc);
    for (int t = 0; t < T; t++)
        out[t * ldy] = hsum8(acc[t]) + dot_m(m, tk[t].s16, K / 16);
}

/* Instantiations with a constant tile size, so the token loops unroll and acc stays in regs. */
#define ROW_Q8(n)                                                                                  \
    static TGT_VNNI void row_q8_t##n(int ty, const uint8_t *w, int64_t K, const struct tok *tk,    \
                                     float *m, float *o, int64_t ld)                               \
    {                                                                                              \
        row_q8(ty, w, K, tk, n, m, o, ld);                                                         \
    }
ROW_Q8(1)
ROW_Q8(2)
ROW_Q8(3)
ROW_Q8(4)

static _Thread_local struct scratch tl_m; /* the weight offsets of one row, float [K/16] */

int mm_avx512_q8(const struct mm_job *j, int r0, int r1, int t0, int t1)
{
    static void (*const rows[TILE_T + 1])(int, const uint8_t *, int64_t, const struct tok *,
                                          float *, float *, int64_t) = {NULL, row_q8_t1, row_q8_t2,
                                                                        row_q8_t3, row_q8_t4};
    const int64_t K = j->K;
    float *m = scratch_get(&tl_m, sizeof(float) * (size_t)(K / 16));
    if (!m || block_bytes(j->type) == 0)
        return -1;
    for (int rc = r0; rc < r1; rc += ROW_CHUNK) {
        const int re = rc + ROW_CHUNK < r1 ? rc + ROW_CHUNK : r1;
        for (int t = t0; t < t1; t += TILE_T) {
            const int T = t1 - t < TILE_T ? t1 - t : TILE_T;
            struct tok tk[TILE_T];
            for (int i = 0; i < T; i++)
                tk[i] = (struct tok){j->a.xq + (size_t)(t + i) * K,
                                     j->a.dx + (size_t)(t + i) * (K / 32),
                                     j->a.s16 + (size_t)(t + i) * (K / 16)};
            for (int r = rc; r < re; r++)
                rows[T](j->type, j->w + (size_t)r * j->row_bytes, K, tk, m,
                        j->y + (size_t)t * j->N + r, j->N);
        }
    }
    return 0;
}

/* ---- f32 path ------------------------------------------------------------------------------- */

/* 8 weights from element k of a row of type F32, F16 or BF16, as floats. */
INL_VNNI __m256 load_w8(int type, const uint8_t *w, int64_t k)
{
    if (type == EXSA_DTYPE_F32)
        return _mm256_loadu_ps((const float *)w + k);
    const __m128i h = _mm_loadu_si128((const __m128i *)(w + 2 * k));
    if (type == EXSA_DTYPE_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INL_VNNI float load_w1(int type, const uint8_t *w, int64_t k)
{
    uint16_t h;
    if (type == EXSA_DTYPE_F32)
        return ((const float *)w)[k];
    memcpy(&h, w + 2 * k, 2);
    return type == EXSA_DTYPE_F16 ? fp16_to_f32(h) : bf16_to_f32(h);
}

INL_VNNI void row_f(int type, const uint8_t *w, int64_t K, const float *const *x, int T, float *out,
                    int64_t ldy)
{
    __m256 a0[TILE_T], a1[TILE_T];
    for (int t = 0; t < T; t++)
        a0[t] = a1[t] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        const __m256 w0 = load_w8(type, w, k), w1 = load_w8(type, w, k + 8);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            a0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x[t] + k), a0[t]);
            a1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x[t] + k + 8), a1[t]);
        }
    }
    for (; k + 8 <= K; k += 8) {
        const __m256 w0 = load_w8(type, w, k);
        for (int t = 0; t < T; t++)
            a0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x[t] + k), a0[t]);
    }
    for (int t = 0; t < T; t++) {
        float s = hsum8(_mm256_add_ps(a0[t], a1[t]));
        for (int64_t i = k; i < K; i++)
            s += load_w1(type, w, i) * x[t][i];
        out[t * ldy] = s;
    }
}

#define ROW_F(n)                                                                                   \
    static TGT_VNNI void row_f_t##n(int ty, const uint8_t *w, int64_t K, const float *const *x,    \
                                    float *o, int64_t ld)                                          \
    {                                                                                              \
        row_f(ty, w, K, x, n, o, ld);                                                              \
    }
ROW_F(1)
ROW_F(2)
ROW_F(3)
ROW_F(4)

int mm_avx512_f(const struct mm_job *j, int r0, int r1, int t0, int t1)
{
    static void (*const rows[TILE_T + 1])(int, const uint8_t *, int64_t, const float *const *,
                                          float *,
                                          int64_t) = {NULL, row_f_t1, row_f_t2, row_f_t3, row_f_t4};
    for (int rc = r0; rc < r1; rc += ROW_CHUNK) {
        const int re = rc + ROW_CHUNK < r1 ? rc + ROW_CHUNK : r1;
        for (int t = t0; t < t1; t += TILE_T) {
            const int T = t1 - t < TILE_T ? t1 - t : TILE_T;
            const float *x[TILE_T];
            for (int i = 0; i < T; i++)
                x[i] = j->x + (size_t)(t + i) * j->K;
            for (int r = rc; r < re; r++)
                rows[T](j->type, j->w + (size_t)r * j->row_bytes, j->K, x,
                        j->y + (size_t)t * j->N + r, j->N);
        }
    }
    return 0;
}

/* ---- activation quantization ---------------------------------------------------------------- */

TGT_VNNI void mm_avx512_quantize(const float *x, int64_t K, int8_t *xq, float *dx, float *s16)
{
    for (int64_t b = 0; b < K / 32; b++) {
        const __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
        const float amax =
            _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const float d = amax / 127, id = d != 0 ? 1 / d : 0;
        const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, _mm512_set1_ps(id)));
        const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, _mm512_set1_ps(id)));
        _mm_storeu_si128((__m128i *)(xq + 32 * b), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(xq + 32 * b + 16), _mm512_cvtepi32_epi8(q1));
        dx[b] = d;
        s16[2 * b] = d * _mm512_reduce_add_epi32(q0);
        s16[2 * b + 1] = d * _mm512_reduce_add_epi32(q1);
    }
}

#else /* not x86-64 gcc/clang: no SIMD kernels, matmul.c uses the plain C path */

int mm_avx512_q8(const struct mm_job *j, int r0, int r1, int t0, int t1)
{
    return -1;
}
int mm_avx512_f(const struct mm_job *j, int r0, int r1, int t0, int t1)
{
    return -1;
}
void mm_avx512_quantize(const float *x, int64_t K, int8_t *xq, float *dx, float *s16)
{
}

#endif
