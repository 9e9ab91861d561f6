/*
 * matmul-avx512.c: the AVX-512 VNNI / FMA kernels of cpu_matmul (compiled with target
 * attributes, run only when matmul.c found the features with cpuid).
 *
 * int8 path (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K): every weight type is unpacked, 32 elements at a
 * time, to unsigned bytes u (0..255) with a per-lane float scale sc (8 lanes of 4 elements: one
 * scale per 16 elements at most) and an offset m per 16 elements, so that w = sc * u + m. Then
 * dot(w, x) = sum_chunks dx * sc * dpbusd(u, xq) + sum_halves m * s16, where dpbusd is the VNNI
 * u8 x s8 dot product and s16 the activation half-block sums (matmul-impl.h). The unpacked chunk
 * is reused for a tile of up to 4 tokens; m goes to a per-row array dotted with s16 at the end.
 * 256-bit vectors: Zen 4 runs 512-bit ops double-pumped, so ymm loses nothing and keeps
 * frequencies up elsewhere. f32 path (F32, F16, BF16): convert 16 weights, FMA with 4 tokens.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/matmul-impl.h"
#include "quant.h"

#if defined(__x86_64__) && defined(__GNUC__)

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT

#define TILE_T 4   /* tokens per tile: shares one unpacked weight chunk */
#define ROW_CHUNK 16 /* rows whose weights stay in L2 while all token tiles pass over them */

struct tok {
    const int8_t *xq;
    const float *dx;
    const float *s16;
};

INL float f16(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

INL float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* acc[t] += dx[t][c] * sc * dpbusd(u, xq[t][chunk c]) for the T tokens. */
INL void chunk(__m256i u, __m256 sc, int64_t c, const struct tok *tk, int T, __m256 *acc)
{
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        const __m256i xq = _mm256_loadu_si256((const __m256i *)(tk[t].xq + 32 * c));
        const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, xq);
        const __m256 s = _mm256_mul_ps(sc, _mm256_broadcast_ss(tk[t].dx + c));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc[t]);
    }
}

INL __m256i lo_nib(__m256i q) { return _mm256_and_si256(q, _mm256_set1_epi8(0x0f)); }
INL __m256i hi_nib(__m256i q)
{
    return _mm256_and_si256(_mm256_srli_epi16(q, 4), _mm256_set1_epi8(0x0f));
}
/* ((q >> shift) & mask) << 4 on every byte, shift < 8, for mask 1 or 3. */
INL __m256i bits_up(__m256i q, int shift, int mask)
{
    return _mm256_slli_epi16(
        _mm256_and_si256(_mm256_srli_epi16(q, shift), _mm256_set1_epi8((char)mask)), 4);
}

/* ---- per-type row bodies: w = one row, K elements; fill m[K/16], accumulate acc[T] ---------- */

INL void row_q4_0(const uint8_t *w, int64_t K, const struct tok *tk, int T, float *m, __m256 *acc)
{
    for (int64_t c = 0; c < K / 32; c++, w += 18) {
        const float d = f16(w);
        /* qs in both 128-bit halves: low nibbles are elements 0..15, high ones 16..31 */
        const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(w + 2)));
        const __m256i u = _mm256_blend_epi32(lo_nib(both), hi_nib(both), 0xf0);
        m[2 * c] = m[2 * c + 1] = -8 * d;
        chunk(u, _mm256_set1_ps(d), c, tk, T, acc);
    }
}

INL void row_q8_0(const uint8_t *w, int64_t K, const struct tok *tk, int T, float *m, __m256 *acc)
{
    for (int64_t c = 0; c < K / 32; c++, w += 34) {
        const float d = f16(w);
        const __m256i q = _mm256_loadu_si256((const __m256i *)(w + 2));
        m[2 * c] = m[2 * c + 1] = -128 * d;
        chunk(_mm256_xor_si256(q, _mm256_set1_epi8((char)0x80)), _mm256_set1_ps(d), c, tk, T,
              acc);
    }
}

/* The 6-bit scales and mins of a Q4_K / Q5_K super-block (LFM2-SPEC.md 5.3). */
INL void k4_scales(const uint8_t *q, uint8_t *sc, uint8_t *mn)
{
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
        sc[j + 4] = (q[j + 8] & 0x0f) | ((q[j] >> 6) << 4);
        mn[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
}

/* Q4_K (has_qh 0, 144-byte blocks) and Q5_K (has_qh 1, 176-byte blocks). */
INL void row_q45_k(const uint8_t *w, int64_t K, const struct tok *tk, int T, float *m,
                   __m256 *acc, int has_qh)
{
    for (int64_t sb = 0; sb < K / 256; sb++, w += has_qh ? 176 : 144) {
        const float d = f16(w), dmin = f16(w + 2);
        uint8_t sc[8], mn[8];
        k4_scales(w + 4, sc, mn);
        const uint8_t *qs = w + (has_qh ? 48 : 16);
        const __m256i qh = has_qh ? _mm256_loadu_si256((const __m256i *)(w + 16))
                                  : _mm256_setzero_si256();
        for (int g = 0; g < 4; g++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * g));
            __m256i lo = lo_nib(q), hi = hi_nib(q);
            if (has_qh) {
                lo = _mm256_or_si256(lo, bits_up(qh, 2 * g, 1));
                hi = _mm256_or_si256(hi, bits_up(qh, 2 * g + 1, 1));
            }
            const int64_t c = 8 * sb + 2 * g;
            m[2 * c] = m[2 * c + 1] = -dmin * mn[2 * g];
            m[2 * c + 2] = m[2 * c + 3] = -dmin * mn[2 * g + 1];
            chunk(lo, _mm256_set1_ps(d * sc[2 * g]), c, tk, T, acc);
            chunk(hi, _mm256_set1_ps(d * sc[2 * g + 1]), c + 1, tk, T, acc);
        }
    }
}

INL void row_q6_k(const uint8_t *w, int64_t K, const struct tok *tk, int T, float *m, __m256 *acc)
{
    for (int64_t sb = 0; sb < K / 256; sb++, w += 210) {
        const float d = f16(w + 208);
        const int8_t *S = (const int8_t *)(w + 192);
        for (int n = 0; n < 2; n++) {
            const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(w + 64 * n));
            const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(w + 64 * n + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(w + 128 + 32 * n));
            const __m256i u[4] = {
                _mm256_or_si256(lo_nib(ql0), bits_up(qh, 0, 3)),
                _mm256_or_si256(lo_nib(ql1), bits_up(qh, 2, 3)),
                _mm256_or_si256(hi_nib(ql0), bits_up(qh, 4, 3)),
                _mm256_or_si256(hi_nib(ql1), bits_up(qh, 6, 3)),
            };
            for (int j = 0; j < 4; j++) {
                const int s = 2 * (4 * n + j); /* scale of the chunk's first 16 */
                const float da = d * S[s], db = d * S[s + 1];
                const int64_t c = 8 * sb + 4 * n + j;
                m[2 * c] = -32 * da;
                m[2 * c + 1] = -32 * db;
                chunk(u[j], _mm256_set_m128(_mm_set1_ps(db), _mm_set1_ps(da)), c, tk, T, acc);
            }
        }
    }
}

/* sum m[i] * s[i], i < n (n even). */
INL float dot_m(const float *m, const float *s, int64_t n)
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
INL void row_q8(int type, const uint8_t *w, int64_t K, const struct tok *tk, int T, float *m,
                float *out, int64_t ldy)
{
    __m256 acc[TILE_T];
    for (int t = 0; t < T; t++)
        acc[t] = _mm256_setzero_ps();
    switch (type) {
    case EXSA_DTYPE_Q4_0: row_q4_0(w, K, tk, T, m, acc); break;
    case EXSA_DTYPE_Q8_0: row_q8_0(w, K, tk, T, m, acc); break;
    case EXSA_DTYPE_Q4_K: row_q45_k(w, K, tk, T, m, acc, 0); break;
    case EXSA_DTYPE_Q5_K: row_q45_k(w, K, tk, T, m, acc, 1); break;
    case EXSA_DTYPE_Q6_K: row_q6_k(w, K, tk, T, m, acc); break;
    }
    for (int t = 0; t < T; t++)
        out[t * ldy] = hsum8(acc[t]) + dot_m(m, tk[t].s16, K / 16);
}

/* Instantiations with a constant tile size, so the token loops unroll and acc stays in regs. */
static TGT void row_q8_t1(int ty, const uint8_t *w, int64_t K, const struct tok *tk, float *m,
                          float *o, int64_t ld) { row_q8(ty, w, K, tk, 1, m, o, ld); }
static TGT void row_q8_t2(int ty, const uint8_t *w, int64_t K, const struct tok *tk, float *m,
                          float *o, int64_t ld) { row_q8(ty, w, K, tk, 2, m, o, ld); }
static TGT void row_q8_t3(int ty, const uint8_t *w, int64_t K, const struct tok *tk, float *m,
                          float *o, int64_t ld) { row_q8(ty, w, K, tk, 3, m, o, ld); }
static TGT void row_q8_t4(int ty, const uint8_t *w, int64_t K, const struct tok *tk, float *m,
                          float *o, int64_t ld) { row_q8(ty, w, K, tk, 4, m, o, ld); }

static _Thread_local float *tl_m;
static _Thread_local int64_t tl_m_n;

int mm_avx512_q8(const struct mm_job *j, int r0, int r1, int t0, int t1)
{
    static void (*const rows[TILE_T + 1])(int, const uint8_t *, int64_t, const struct tok *,
                                          float *, float *, int64_t) = {
        NULL, row_q8_t1, row_q8_t2, row_q8_t3, row_q8_t4};
    const int64_t K = j->K;
    if (tl_m_n < K / 16) {
        free(tl_m);
        tl_m = malloc(sizeof(float) * (size_t)(K / 16));
        tl_m_n = tl_m ? K / 16 : 0;
        if (!tl_m)
            return -1;
    }
    for (int rc = r0; rc < r1; rc += ROW_CHUNK) {
        const int re = rc + ROW_CHUNK < r1 ? rc + ROW_CHUNK : r1;
        for (int t = t0; t < t1; t += TILE_T) {
            const int T = t1 - t < TILE_T ? t1 - t : TILE_T;
            struct tok tk[TILE_T];
            for (int i = 0; i < T; i++)
                tk[i] = (struct tok){j->a.xq + (size_t)(t + i) * K, j->a.dx + (size_t)(t + i) * (K / 32),
                                     j->a.s16 + (size_t)(t + i) * (K / 16)};
            for (int r = rc; r < re; r++)
                rows[T](j->type, j->w + (size_t)r * j->row_bytes, K, tk, tl_m,
                        j->y + (size_t)t * j->N + r, j->N);
        }
    }
    return 0;
}

/* ---- f32 path ------------------------------------------------------------------------------- */

/* 8 weights from element k of a row of type F32, F16 or BF16, as floats. */
INL __m256 load_w8(int type, const uint8_t *w, int64_t k)
{
    if (type == EXSA_DTYPE_F32)
        return _mm256_loadu_ps((const float *)w + k);
    const __m128i h = _mm_loadu_si128((const __m128i *)(w + 2 * k));
    if (type == EXSA_DTYPE_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INL float load_w1(int type, const uint8_t *w, int64_t k)
{
    uint16_t h;
    if (type == EXSA_DTYPE_F32)
        return ((const float *)w)[k];
    memcpy(&h, w + 2 * k, 2);
    return type == EXSA_DTYPE_F16 ? fp16_to_f32(h) : bf16_to_f32(h);
}

INL void row_f(int type, const uint8_t *w, int64_t K, const float *const *x, int T, float *out,
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

#define ROW_F(n)                                                                                \
    static TGT void row_f_t##n(int ty, const uint8_t *w, int64_t K, const float *const *x,      \
                               float *o, int64_t ld)                                            \
    {                                                                                           \
        row_f(ty, w, K, x, n, o, ld);                                                           \
    }
ROW_F(1)
ROW_F(2)
ROW_F(3)
ROW_F(4)

int mm_avx512_f(const struct mm_job *j, int r0, int r1, int t0, int t1)
{
    static void (*const rows[TILE_T + 1])(int, const uint8_t *, int64_t, const float *const *,
                                          float *, int64_t) = {NULL, row_f_t1, row_f_t2,
                                                               row_f_t3, row_f_t4};
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

/* Same results as the plain C quantize_c in matmul.c, bit for bit (same float ops, rint). */
TGT int mm_avx512_quantize(const float *x, int64_t K, int8_t *xq, float *dx, float *s16)
{
    for (int64_t b = 0; b < K / 32; b++) {
        const __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const float d = amax / 127, id = d != 0 ? 1 / d : 0;
        const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, _mm512_set1_ps(id)));
        const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, _mm512_set1_ps(id)));
        _mm_storeu_si128((__m128i *)(xq + 32 * b), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(xq + 32 * b + 16), _mm512_cvtepi32_epi8(q1));
        dx[b] = d;
        s16[2 * b] = d * _mm512_reduce_add_epi32(q0);
        s16[2 * b + 1] = d * _mm512_reduce_add_epi32(q1);
    }
    return 0;
}

#else /* not x86-64 gcc/clang: no SIMD kernels, matmul.c uses the plain C path */

int mm_avx512_q8(const struct mm_job *j, int r0, int r1, int t0, int t1) { return -1; }
int mm_avx512_f(const struct mm_job *j, int r0, int r1, int t0, int t1) { return -1; }
int mm_avx512_quantize(const float *x, int64_t K, int8_t *xq, float *dx, float *s16) { return -1; }

#endif
