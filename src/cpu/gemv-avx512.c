/*
 * gemv-avx512.c: the AVX-512 kernels of the decode matmul path (gemv.c): one pass over a row
 * range of W for up to GV_MAX_TOK tokens, weights in their file layout, activations in the
 * per-type formats of gemv-impl.h. Compiled for level VBMI (features.h); gemv.c runs only there.
 *
 * int8 types: 64 weights per zmm as unsigned bytes (nibbles, 5 or 6 bits, or Q8_0 + 128), the
 * activations (int8, laid out to match) as the signed operand of vpdpbusd. K-quants: the int32
 * lane sums of 16 or 32 weights are packed to int16 and multiplied by the integer sub-block
 * scales (shifted by the activations' power-of-two sub-scales) with vpdpwssd, so one float FMA
 * per super-block and token remains; mins and the Q6_K offset go through the activation sums
 * (for 2+ tokens the mins of 4 tokens share one vector). Q4_0 / Q8_0: the offset enters as the
 * initial accumulator (activation side), one FMA per 4 (2) blocks. F16/BF16/F32: f32 FMA on
 * exact inputs. Every kernel prefetches the weights PF_DIST bytes ahead into L2.
 */
#include <math.h>
#include <string.h>

#include "cpu/gemv-impl.h"
#include "cpu/simd.h"

#if defined(__x86_64__) && defined(__GNUC__)

#define ROW_CHUNK 32 /* rows per pass when the tokens come in several groups (stay in L1/L2) */

#ifndef PF_DIST
/* Software prefetch distance in bytes (to L2). 8 KB: with 4 KB, decode of 1.2B Q8_0 streamed
 * clearly slower than with 8 KB while memory was busy (no prefetch at all: ~50% of the ceiling). */
#define PF_DIST 8192
#endif
#ifndef PF_HINT
#define PF_HINT _MM_HINT_T1
#endif
/* Prefetch the n bytes at p + PF_DIST (one hint per cache line). */
#define PF(p, n)                                                                                   \
    do {                                                                                           \
        for (int pf_ = 0; pf_ < (int)(n); pf_ += 64)                                               \
            _mm_prefetch((const char *)(p) + PF_DIST + pf_, PF_HINT);                              \
    } while (0)

/* ---- activation formats --------------------------------------------------------------------- */

size_t gv_act_bytes(int kind, int64_t K)
{
    switch (kind) {
    case GV_ACT_K8:
    case GV_ACT_K6: return (size_t)(K / 256) * GV_K_BYTES;
    case GV_ACT_B4: return (size_t)((K / 32 + 3) / 4) * GV_B4_BYTES;
    case GV_ACT_B8: return (size_t)((K / 32 + 1) / 2) * GV_B8_BYTES;
    case GV_ACT_F32: return (size_t)K * 4;
    case GV_ACT_BF: return (size_t)((K + 31) / 32) * 128;
    default: return 0;
    }
}

/* q = round(v / d) for 16 floats, d = scale; returns the int32 lanes. */
INL_VBMI __m512i quant16(__m512 v, float id)
{
    return _mm512_cvtps_epi32(_mm512_mul_ps(v, _mm512_set1_ps(id)));
}

INL_VBMI void store_q16(int8_t *dst, __m512i q)
{
    _mm_storeu_si128((__m128i *)dst, _mm512_cvtepi32_epi8(q));
}

/* Word i of the packed int16 lane sums of a K8 / K6 super-block -> its 32-element chunk (the
 * layouts the kernels' sA and sB vectors follow; half 1 is the sB vector). */
static int k8_chunk(int half, int i)
{
    const int L = i / 8, j = i % 8;
    return 4 * half + (j < 4 ? 0 : 1) + (L >= 2 ? 2 : 0);
}
static int k6_chunk(int half, int i)
{
    const int L = i / 8, j = i % 8;
    return (8 * half + (j < 4 ? L : 4 + L)) / 2;
}

/* One 256-element super-block to K8 (k6 0) or K6 (k6 1) layout. One scale d for the block;
 * 32-element chunk c is quantized with step d / 2^e[c] (e <= GV_SUB_SHIFT, as fine as its own
 * range allows), and the kernels multiply its integer dot product by 2^(GV_SUB_SHIFT - e[c]):
 * near per-32 precision with integer sub-block arithmetic. */
INL_VBMI void quant_k(const float *x, uint8_t *o, int k6)
{
    __m512 v[16];
    float cmax[8], amax = 0;
    for (int c = 0; c < 8; c++) {
        v[2 * c] = _mm512_loadu_ps(x + 32 * c);
        v[2 * c + 1] = _mm512_loadu_ps(x + 32 * c + 16);
        cmax[c] = _mm512_reduce_max_ps(
            _mm512_max_ps(_mm512_abs_ps(v[2 * c]), _mm512_abs_ps(v[2 * c + 1])));
        amax = cmax[c] > amax ? cmax[c] : amax;
    }
    const float d = amax / 127, id = d != 0 ? 1 / d : 0;
    int16_t *sums = (int16_t *)(o + GV_K_SUMS);
    int16_t *shA = (int16_t *)(o + GV_K_SHIFT_A), *shB = (int16_t *)(o + GV_K_SHIFT_B);
    int e[8];
    memset(o + GV_K_SUMS, 0, GV_K_SHIFT_A - GV_K_SUMS);
    for (int c = 0; c < 8; c++) { /* 32-element chunks */
        e[c] = 0;
        while (e[c] < GV_SUB_SHIFT && cmax[c] * (float)(2 << e[c]) <= amax)
            e[c]++;
        const float idc = id * (float)(1 << e[c]);
        const __m512i q0 = quant16(v[2 * c], idc), q1 = quant16(v[2 * c + 1], idc);
        /* K8: chunk c goes to slot c with 1<->2 and 5<->6 swapped (nibble order of qs) */
        const int slot = k6 ? c : ((c & 3) == 1 || (c & 3) == 2) ? c ^ 3 : c;
        store_q16((int8_t *)o + 32 * slot, q0);
        store_q16((int8_t *)o + 32 * slot + 16, q1);
        const int s0 = _mm512_reduce_add_epi32(q0), s1 = _mm512_reduce_add_epi32(q1);
        const int f = 1 << (GV_SUB_SHIFT - e[c]);
        if (k6) {
            sums[2 * c] = (int16_t)(-s0 * f);
            sums[2 * c + 1] = (int16_t)(-s1 * f);
        } else {
            sums[c] = (int16_t)((s0 + s1) * f);
        }
    }
    for (int i = 0; i < 32; i++) {
        shA[i] = (int16_t)(GV_SUB_SHIFT - e[k6 ? k6_chunk(0, i) : k8_chunk(0, i)]);
        shB[i] = (int16_t)(GV_SUB_SHIFT - e[k6 ? k6_chunk(1, i) : k8_chunk(1, i)]);
    }
    const float ds = d / (1 << GV_SUB_SHIFT);
    memcpy(o + GV_K_STEP, &ds, 4);
}

/* Scale and int8 values of one 32-block: returns d, q0/q1 the two halves, *sum the sum of q. */
INL_VBMI float quant_b32(const float *x, int n, __m512i *q0, __m512i *q1, int *sum)
{
    const __mmask16 m0 = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
    const __mmask16 m1 = n >= 32 ? 0xffff : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
    const __m512 v0 = _mm512_maskz_loadu_ps(m0, x), v1 = _mm512_maskz_loadu_ps(m1, x + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float d = amax / 127, id = d != 0 ? 1 / d : 0;
    *q0 = quant16(v0, id);
    *q1 = quant16(v1, id);
    *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(*q0, *q1));
    return d;
}

/* B4 (nb4 blocks per group of 4) and B8 (2 per group) layouts; K a multiple of 32. */
INL_VBMI void quant_b(const float *x, int64_t K, uint8_t *o, int per)
{
    const int64_t nb = K / 32, ng = (nb + per - 1) / per;
    const size_t gbytes = per == 4 ? GV_B4_BYTES : GV_B8_BYTES;
    memset(o, 0, (size_t)ng * gbytes);
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *g = o + (size_t)(b / per) * gbytes;
        const int i = (int)(b % per);
        __m512i q0, q1;
        int sum;
        const float d = quant_b32(x + 32 * b, 32, &q0, &q1, &sum);
        float *dxv = (float *)(g + (per == 4 ? GV_B4_SCALE : GV_B8_SCALE));
        int32_t *corr = (int32_t *)(g + (per == 4 ? GV_B4_CORR : GV_B8_CORR));
        if (per == 4) {
            store_q16((int8_t *)g + 16 * i, q0);
            store_q16((int8_t *)g + 64 + 16 * i, q1);
            for (int l = 0; l < 4; l++)
                dxv[4 * i + l] = d;
            corr[4 * i] = -8 * sum;
        } else {
            store_q16((int8_t *)g + 32 * i, q0);
            store_q16((int8_t *)g + 32 * i + 16, q1);
            for (int l = 0; l < 8; l++)
                dxv[8 * i + l] = d;
            corr[8 * i] = -128 * sum;
        }
    }
}

/* BF layout: per 32, the even elements then the odd ones; zero-padded. */
INL_VBMI void split_bf(const float *x, int64_t K, float *o)
{
    const __m512i ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i io = _mm512_add_epi32(ie, _mm512_set1_epi32(1));
    for (int64_t k = 0; k < K; k += 32, o += 32) {
        const int64_t n = K - k < 32 ? K - k : 32;
        const __mmask16 m0 = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
        const __mmask16 m1 = n >= 32 ? 0xffff : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
        const __m512 v0 = _mm512_maskz_loadu_ps(m0, x + k),
                     v1 = _mm512_maskz_loadu_ps(m1, x + k + 16);
        _mm512_storeu_ps(o, _mm512_permutex2var_ps(v0, ie, v1));
        _mm512_storeu_ps(o + 16, _mm512_permutex2var_ps(v0, io, v1));
    }
}

TGT_VBMI void gv_avx512_quantize(int kind, const float *x, int64_t K, uint8_t *out)
{
    switch (kind) {
    case GV_ACT_K8:
    case GV_ACT_K6:
        for (int64_t s = 0; s < K / 256; s++)
            quant_k(x + 256 * s, out + GV_K_BYTES * s, kind == GV_ACT_K6);
        break;
    case GV_ACT_B4: quant_b(x, K, out, 4); break;
    case GV_ACT_B8: quant_b(x, K, out, 2); break;
    case GV_ACT_BF: split_bf(x, K, (float *)out); break;
    default: memcpy(out, x, (size_t)K * 4); break;
    }
}

size_t gv_side_bytes(const struct gv_job *j)
{
    const size_t blocks = (size_t)(j->n_tok + GV_SIDE_TOK - 1) / GV_SIDE_TOK;
    return blocks * (size_t)(j->K / 256) * GV_SIDE_BYTES;
}

void gv_avx512_side(const struct gv_job *j, uint8_t *side, int b0, int b1)
{
    const int64_t nsb = j->K / 256;
    for (int b = b0; b < b1; b++) {
        uint8_t *blk = side + (size_t)b * (size_t)nsb * GV_SIDE_BYTES;
        const int t0 = b * GV_SIDE_TOK;
        const int nt = j->n_tok - t0 < GV_SIDE_TOK ? j->n_tok - t0 : GV_SIDE_TOK;
        memset(blk, 0, (size_t)nsb * GV_SIDE_BYTES);
        for (int64_t s = 0; s < nsb; s++) {
            uint8_t *sd = blk + (size_t)s * GV_SIDE_BYTES;
            for (int t = 0; t < nt; t++) {
                const uint8_t *rec =
                    j->act + (size_t)(t0 + t) * j->act_stride + (size_t)s * GV_K_BYTES;
                float dx;
                memcpy(&dx, rec + GV_K_STEP, 4);
                memcpy(sd + GV_SIDE_SUMS + 16 * t, rec + GV_K_SUMS, 16);
                for (int l = 0; l < 4; l++)
                    memcpy(sd + GV_SIDE_STEP4 + 16 * t + 4 * l, &dx, 4);
                memcpy(sd + GV_SIDE_STEP + 4 * t, &dx, 4);
            }
        }
    }
}

/* ---- helpers -------------------------------------------------------------------------------- */

INL_VBMI __m512i ld(const void *p)
{
    return _mm512_loadu_si512(p);
}

INL_VBMI __m512i zext256(__m256i v)
{
    return _mm512_inserti64x4(_mm512_setzero_si512(), v, 0);
}

/* Byte index vector: word i of the result takes byte idx(i) of the source (zero high byte when
 * used with the 0x5555... mask). */
static const uint64_t EVEN_BYTES = 0x5555555555555555ull;

/* ---- K-quants: the VNNI dot of one super-block --------------------------------------------- */

/* The weights of one K-quant super-block as the dot products below take them: u[4] 64 unsigned
 * weights each (Q4_K/Q5_K: in the order of the nibbles of a 64-byte qs load; Q6_K: in order),
 * sA / sB the integer sub-block scale behind each int16 word of packs(p0, p1) / packs(p2, p3). */
struct kblock {
    __m512i u[4], sA, sB;
};

/* The integer dot product of a K8 or K6 activation record xa with the super-block: each
 * 16 or 32 weights' int32 sum, packed to int16, times its sub-block scale shifted by the
 * record's sub-scale shift (dpwssd), summed in int32 lanes. */
INL_VBMI __m512i kblock_dot(const struct kblock *b, const uint8_t *xa)
{
    const __m512i z = _mm512_setzero_si512();
    const __m512i p0 = _mm512_dpbusd_epi32(z, b->u[0], ld(xa));
    const __m512i p1 = _mm512_dpbusd_epi32(z, b->u[1], ld(xa + 64));
    const __m512i p2 = _mm512_dpbusd_epi32(z, b->u[2], ld(xa + 128));
    const __m512i p3 = _mm512_dpbusd_epi32(z, b->u[3], ld(xa + 192));
    const __m512i sAt = _mm512_sllv_epi16(b->sA, ld(xa + GV_K_SHIFT_A));
    const __m512i sBt = _mm512_sllv_epi16(b->sB, ld(xa + GV_K_SHIFT_B));
    const __m512i sum = _mm512_dpwssd_epi32(z, _mm512_packs_epi32(p0, p1), sAt);
    return _mm512_dpwssd_epi32(sum, _mm512_packs_epi32(p2, p3), sBt);
}

/* The float step of a K8 / K6 record. */
INL_VBMI float kstep(const uint8_t *xa)
{
    float dx;
    memcpy(&dx, xa + GV_K_STEP, 4);
    return dx;
}

/* ---- Q4_K / Q5_K ---------------------------------------------------------------------------- */

/* Adds the 5th bits of a Q5_K block (qh, 32 bytes) to the four nibble vectors u0..u3 (chunks
 * [0|2], [1|3], [4|6], [5|7]: qh bits 0/2, 1/3, 4/6, 5/7). */
INL_VBMI void q5_high_bits(const uint8_t *qhp, __m512i *u0, __m512i *u1, __m512i *u2, __m512i *u3)
{
    const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)qhp));
    const __m512i b16 = _mm512_set1_epi8(16);
    const __m512i c0 = _mm512_set_epi64(
        0x0404040404040404ll, 0x0404040404040404ll, 0x0404040404040404ll, 0x0404040404040404ll,
        0x0101010101010101ll, 0x0101010101010101ll, 0x0101010101010101ll, 0x0101010101010101ll);
    const __m512i c4 = _mm512_slli_epi64(c0, 4);
    *u0 = _mm512_mask_add_epi8(*u0, _mm512_test_epi8_mask(qh, c0), *u0, b16);
    *u1 = _mm512_mask_add_epi8(*u1, _mm512_test_epi8_mask(qh, _mm512_add_epi8(c0, c0)), *u1, b16);
    *u2 = _mm512_mask_add_epi8(*u2, _mm512_test_epi8_mask(qh, c4), *u2, b16);
    *u3 = _mm512_mask_add_epi8(*u3, _mm512_test_epi8_mask(qh, _mm512_add_epi8(c4, c4)), *u3, b16);
}

/* One Q4_K (q5 0) or Q5_K (q5 1) super-block: the weights, and in *scm its scale bytes
 * [sc0..3, mn0..3, sc4..7, mn4..7] (for the mins) and in *dm its d and dmin. */
INL_VBMI void k45_block(const uint8_t *w, int q5, struct kblock *b, __m512i *scm, __m128 *dm)
{
    /* word i of sA: scale of the sub-block in dpbusd lanes of packs(p0, p1) */
    const __m512i idxA = _mm512_set_epi64(
        0x0003000300030003ll, 0x0002000200020002ll, 0x0003000300030003ll, 0x0002000200020002ll,
        0x0001000100010001ll, 0x0000000000000000ll, 0x0001000100010001ll, 0x0000000000000000ll);
    const __m512i idxB = _mm512_add_epi16(idxA, _mm512_set1_epi16(8));
    uint64_t lo, hi;
    k4_scale_words(BLK_AT(w, blk_q4_k, scales), &lo, &hi);
    *scm = _mm512_castsi128_si512(_mm_set_epi64x((long long)hi, (long long)lo));
    b->sA = _mm512_maskz_permutexvar_epi8(EVEN_BYTES, idxA, *scm);
    b->sB = _mm512_maskz_permutexvar_epi8(EVEN_BYTES, idxB, *scm);
    uint32_t dd; /* d and dmin */
    memcpy(&dd, BLK_AT(w, blk_q4_k, d), 4);
    *dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dd));
    const uint8_t *qs = q5 ? BLK_AT(w, blk_q5_k, qs) : BLK_AT(w, blk_q4_k, qs);
    const __m512i q0 = ld(qs), q1 = ld(qs + 64), m4 = _mm512_set1_epi8(0x0f);
    b->u[0] = _mm512_and_si512(q0, m4);
    b->u[1] = _mm512_and_si512(_mm512_srli_epi16(q0, 4), m4);
    b->u[2] = _mm512_and_si512(q1, m4);
    b->u[3] = _mm512_and_si512(_mm512_srli_epi16(q1, 4), m4);
    if (q5)
        q5_high_bits(BLK_AT(w, blk_q5_k, qh), &b->u[0], &b->u[1], &b->u[2], &b->u[3]);
}

/* One token x one row of Q4_K (q5 0) or Q5_K (q5 1). The mins go to their own accumulator
 * (lanes 0..3) and are added after the reduction, as row_q45k_multi does for each of its
 * tokens: the same operations in the same order, so a token's result does not depend on
 * whether it came alone or with others (batch invariance). */
INL_VBMI void row_q45k(const uint8_t *w, int64_t nsb, const uint8_t *act, int q5, float *y)
{
    /* words 0..7: the mins (bytes 4..7, 12..15 of the scale bytes); the rest zero (mask) */
    const __m512i idxM =
        _mm512_set_epi64(0, 0, 0, 0, 0, 0, 0x000f000e000d000cll, 0x0007000600050004ll);
    const __m512i z = _mm512_setzero_si512();
    const size_t bs = q5 ? sizeof(struct blk_q5_k) : sizeof(struct blk_q4_k);
    __m512 acc = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
    for (int64_t s = 0; s < nsb; s++, w += bs) {
        PF(w, bs);
        struct kblock b;
        __m512i scm;
        __m128 dm;
        k45_block(w, q5, &b, &scm, &dm);
        const __m512i mins = _mm512_maskz_permutexvar_epi8(0x5555, idxM, scm);
        const __m512 dv = _mm512_broadcastss_ps(dm);
        const __m512 mv = _mm512_broadcastss_ps(_mm_movehdup_ps(dm));
        const uint8_t *xa = act + (size_t)s * GV_K_BYTES;
        const __m512i sum = kblock_dot(&b, xa);
        const __m512i msum = _mm512_dpwssd_epi32(z, mins, ld(xa + GV_K_SUMS));
        const __m512 dxv = _mm512_set1_ps(kstep(xa));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(dv, dxv), acc);
        accm = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_mul_ps(mv, dxv), accm);
    }
    float m[16];
    _mm512_storeu_ps(m, accm);
    *y = _mm512_reduce_add_ps(acc) + ((m[0] + m[1]) + (m[2] + m[3]));
}

/* The same for 2..8 tokens (t0: index of the first token within its side block, a multiple of
 * 4; side: that block's records), with the mins of 4 tokens per vector and the per-token
 * factors d x step from the side data. */
INL_VBMI void row_q45k_multi(const uint8_t *w, int64_t nsb, const uint8_t *act, size_t ast,
                             const uint8_t *side, int t0, int T, int q5, float *y, int64_t ldy)
{
    /* word i: min i % 8 (bytes 4..7, 12..15 of the scale bytes), for 4 tokens side by side */
    const __m512i idxM4 = _mm512_set_epi64(
        0x000f000e000d000cll, 0x0007000600050004ll, 0x000f000e000d000cll, 0x0007000600050004ll,
        0x000f000e000d000cll, 0x0007000600050004ll, 0x000f000e000d000cll, 0x0007000600050004ll);
    const __m512i z = _mm512_setzero_si512();
    const size_t bs = q5 ? sizeof(struct blk_q5_k) : sizeof(struct blk_q4_k);
    const int G = (T + 3) / 4, g0 = t0 / 4;
    __m512 acc[GV_MAX_TOK], accm[GV_MAX_TOK / 4];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        acc[t] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int g = 0; g < G; g++)
        accm[g] = _mm512_setzero_ps();
    for (int64_t s = 0; s < nsb; s++, w += bs) {
        PF(w, bs);
        const uint8_t *sd = side + (size_t)s * GV_SIDE_BYTES;
        struct kblock b;
        __m512i scm;
        __m128 dm;
        k45_block(w, q5, &b, &scm, &dm);
        const __m512i mins4 = _mm512_maskz_permutexvar_epi8(EVEN_BYTES, idxM4, scm);
        const __m512 dv = _mm512_broadcastss_ps(dm);
        const __m512 mv = _mm512_broadcastss_ps(_mm_movehdup_ps(dm));
        float f[16] __attribute__((aligned(64)));
        _mm512_store_ps(f, _mm512_mul_ps(dv, _mm512_load_ps((const float *)(sd + GV_SIDE_STEP))));
#pragma GCC unroll 2
        for (int g = 0; g < G; g++) {
            const uint8_t *sg = sd + 64 * (g0 + g);
            const __m512i msum = _mm512_dpwssd_epi32(z, mins4, ld(sg + GV_SIDE_SUMS));
            const __m512 st = _mm512_load_ps((const float *)(sg + GV_SIDE_STEP4));
            const __m512 mf = _mm512_mul_ps(mv, st);
            accm[g] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), mf, accm[g]);
        }
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const uint8_t *xa = act + (size_t)t * ast + (size_t)s * GV_K_BYTES;
            const __m512i sum = kblock_dot(&b, xa);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(f[t0 + t]), acc[t]);
        }
    }
    float m[GV_MAX_TOK / 4][16];
#pragma GCC unroll 2
    for (int g = 0; g < G; g++)
        _mm512_storeu_ps(m[g], accm[g]);
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        const float *mt = m[t / 4] + 4 * (t % 4);
        y[t * ldy] = _mm512_reduce_add_ps(acc[t]) + ((mt[0] + mt[1]) + (mt[2] + mt[3]));
    }
}

/* ---- Q6_K ----------------------------------------------------------------------------------- */

/* The 6-bit values of one half (128 weights) of a Q6_K block: lo = elements 0..63, hi = 64..127
 * (unsigned, 0..63). */
INL_VBMI void q6_half(const uint8_t *ql, const uint8_t *qh, __m512i *lo, __m512i *hi)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    const __m512i q = ld(ql);
    const __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)qh));
    /* elements 0..31 take qh bits 0-1, 32..63 bits 2-3, 64..95 bits 4-5, 96..127 bits 6-7 */
    const __m512i hl =
        _mm512_and_si512(_mm512_sllv_epi64(h, _mm512_set_epi64(2, 2, 2, 2, 4, 4, 4, 4)), m30);
    const __m512i hh =
        _mm512_and_si512(_mm512_srlv_epi64(h, _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0)), m30);
    *lo = _mm512_ternarylogic_epi32(q, hl, m4, 0xEC); /* (q & m4) | hl */
    *hi = _mm512_ternarylogic_epi32(_mm512_srli_epi16(q, 4), hh, m4, 0xEC);
}

INL_VBMI void row_q6k(const uint8_t *w, int64_t nsb, const uint8_t *act, size_t ast, int T,
                      float *y, int64_t ldy)
{
    /* word 8L+j of packs(p0, p1): scale j < 4 ? L : 4 + L; of packs(p2, p3): 8 more */
    const __m512i idxA = _mm512_set_epi64(
        0x0007000700070007ll, 0x0003000300030003ll, 0x0006000600060006ll, 0x0002000200020002ll,
        0x0005000500050005ll, 0x0001000100010001ll, 0x0004000400040004ll, 0x0000000000000000ll);
    const __m512i idxB = _mm512_add_epi16(idxA, _mm512_set1_epi16(8));
    __m512 acc[GV_MAX_TOK];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        acc[t] = _mm512_setzero_ps();
    for (int64_t s = 0; s < nsb; s++, w += sizeof(struct blk_q6_k)) {
        PF(w, sizeof(struct blk_q6_k));
        const __m128i S8 = _mm_loadu_si128((const __m128i *)BLK_AT(w, blk_q6_k, scales));
        const __m256i S16 = _mm256_cvtepi8_epi16(S8);
        struct kblock b;
        b.sA = _mm512_permutexvar_epi16(idxA, _mm512_castsi256_si512(S16));
        b.sB = _mm512_permutexvar_epi16(idxB, _mm512_castsi256_si512(S16));
        const __m512i S32 = zext256(_mm256_slli_epi16(S16, 5));
        const __m512 dv = _mm512_set1_ps(f16_load(BLK_AT(w, blk_q6_k, d)));
        const uint8_t *ql = BLK_AT(w, blk_q6_k, ql), *qh = BLK_AT(w, blk_q6_k, qh);
        q6_half(ql, qh, &b.u[0], &b.u[1]);
        q6_half(ql + 64, qh + 32, &b.u[2], &b.u[3]);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const uint8_t *xa = act + (size_t)t * ast + (size_t)s * GV_K_BYTES;
            __m512i sum = kblock_dot(&b, xa);
            sum = _mm512_dpwssd_epi32(sum, S32, ld(xa + GV_K_SUMS)); /* -32 x scale x sum of x */
            const __m512 f = _mm512_mul_ps(dv, _mm512_set1_ps(kstep(xa)));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), f, acc[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        y[t * ldy] = _mm512_reduce_add_ps(acc[t]);
}

/* ---- Q4_0 / Q8_0 ---------------------------------------------------------------------------- */

INL_VBMI __mmask64 bytes_mask(int64_t n)
{
    return n >= 64 ? ~0ull : n <= 0 ? 0 : (1ull << n) - 1;
}

/* The nbytes bytes of a group (full bytes when whole) as two overlapping vectors: *v0 from b,
 * *v1 from b + off; bytes past nbytes read as zero. */
INL_VBMI void group_load(const uint8_t *b, int64_t nbytes, int64_t full, int off, __m512i *v0,
                         __m512i *v1)
{
    if (nbytes >= full) {
        *v0 = ld(b);
        *v1 = ld(b + off);
    } else {
        *v0 = _mm512_maskz_loadu_epi8(bytes_mask(nbytes), b);
        *v1 = _mm512_maskz_loadu_epi8(bytes_mask(nbytes - off), b + off);
    }
}

/* Group g of a Q4_0 row (4 blocks, 72 bytes; nbytes < 72 for a partial last group): the low and
 * high nibbles of the 4 blocks' qs side by side, and the 4 scales 4 lanes each. */
INL_VBMI void q4_0_group(const uint8_t *b, int64_t nbytes, __m512i *lo, __m512i *hi, __m512 *dv)
{
    const __m512i idxQ = _mm512_set_epi64(
        0x7f7e7d7c7b7a7978ll, 0x3f3e3d3c3b3a3938ll, 0x3534333231302f2ell, 0x2d2c2b2a29282726ll,
        0x232221201f1e1d1cll, 0x1b1a191817161514ll, 0x11100f0e0d0c0b0all, 0x0908070605040302ll);
    const __m512i idxD = _mm512_set_epi64(0, 0, 0, 0, 0x001b001b001b001bll, 0x0012001200120012ll,
                                          0x0009000900090009ll, 0x0000000000000000ll);
    __m512i v0, v1;
    group_load(b, nbytes, 4 * sizeof(struct blk_q4_0), 8, &v0, &v1);
    const __m512i q = _mm512_permutex2var_epi8(v0, idxQ, v1);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    *lo = _mm512_and_si512(q, m4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
    *dv = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(idxD, v0)));
}

/* Group g of a Q8_0 row (2 blocks, 68 bytes): qs + 128 as unsigned bytes, scales 8 lanes each. */
INL_VBMI void q8_0_group(const uint8_t *b, int64_t nbytes, __m512i *u, __m512 *dv)
{
    const __m512i idxQ = _mm512_set_epi64(
        0x7f7e7d7c3f3e3d3cll, 0x3b3a393837363534ll, 0x333231302f2e2d2cll, 0x2b2a292827262524ll,
        0x21201f1e1d1c1b1all, 0x1918171615141312ll, 0x11100f0e0d0c0b0all, 0x0908070605040302ll);
    const __m512i idxD = _mm512_set_epi64(0, 0, 0, 0, 0x0011001100110011ll, 0x0011001100110011ll,
                                          0x0000000000000000ll, 0x0000000000000000ll);
    __m512i v0, v1;
    group_load(b, nbytes, 2 * sizeof(struct blk_q8_0), 4, &v0, &v1);
    *u = _mm512_xor_si512(_mm512_permutex2var_epi8(v0, idxQ, v1), _mm512_set1_epi8((char)0x80));
    *dv = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(idxD, v0)));
}

/* T tokens x one row of Q4_0 (q4 1: groups of 4 blocks) or Q8_0 (q4 0: groups of 2). The
 * blocks' offsets (-8 or -128 x d x sum of x) start each group's accumulator. */
INL_VBMI void row_b(int q4, const uint8_t *w, int64_t K, const uint8_t *act, size_t ast, int T,
                    float *y, int64_t ldy)
{
    const int64_t nb = K / 32, per = q4 ? 4 : 2;
    const size_t bb = q4 ? sizeof(struct blk_q4_0) : sizeof(struct blk_q8_0), gb = per * bb;
    const size_t rec = q4 ? GV_B4_BYTES : GV_B8_BYTES;
    const size_t scale = q4 ? GV_B4_SCALE : GV_B8_SCALE, corr = q4 ? GV_B4_CORR : GV_B8_CORR;
    __m512 acc[GV_MAX_TOK];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        acc[t] = _mm512_setzero_ps();
    for (int64_t g = 0; per * g < nb; g++) {
        PF(w + gb * g, gb);
        __m512i u0, u1 = _mm512_setzero_si512();
        __m512 dv;
        if (q4)
            q4_0_group(w + gb * g, (nb - per * g) * bb, &u0, &u1, &dv);
        else
            q8_0_group(w + gb * g, (nb - per * g) * bb, &u0, &dv);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const uint8_t *xa = act + (size_t)t * ast + (size_t)g * rec;
            __m512i p = _mm512_dpbusd_epi32(ld(xa + corr), u0, ld(xa));
            if (q4)
                p = _mm512_dpbusd_epi32(p, u1, ld(xa + 64));
            const __m512 sx = _mm512_mul_ps(dv, _mm512_loadu_ps((const float *)(xa + scale)));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), sx, acc[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        y[t * ldy] = _mm512_reduce_add_ps(acc[t]);
}

/* ---- F32 / F16 / BF16 ----------------------------------------------------------------------- */

/* 16 weights from element k as floats; n < 16 loads only n (the rest 0). BF16 is not here. */
INL_VBMI __m512 wload16(int type, const uint8_t *w, int64_t k, int n)
{
    const __mmask16 m = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
    if (type == EXSA_DTYPE_F32)
        return n >= 16 ? _mm512_loadu_ps((const float *)w + k)
                       : _mm512_maskz_loadu_ps(m, (const float *)w + k);
    const __m256i h = n >= 16 ? _mm256_loadu_si256((const __m256i *)(w + 2 * k))
                              : _mm256_maskz_loadu_epi16(m, w + 2 * k);
    return _mm512_cvtph_ps(h);
}

/* F32 or F16 row: U accumulators per token so that the FMA chains overlap. */
INL_VBMI void row_f(int type, const uint8_t *w, int64_t K, const uint8_t *act, size_t ast, int T,
                    float *y, int64_t ldy)
{
    enum { U = 2 };
    __m512 acc[GV_MAX_TOK][U];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
#pragma GCC unroll 8
        for (int u = 0; u < U; u++)
            acc[t][u] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 * U <= K; k += 16 * U) {
        __m512 wv[U];
        PF(w + (type == EXSA_DTYPE_F32 ? 4 : 2) * k, (type == EXSA_DTYPE_F32 ? 4 : 2) * 16 * U);
#pragma GCC unroll 8
        for (int u = 0; u < U; u++)
            wv[u] = wload16(type, w, k + 16 * u, 16);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const float *x = (const float *)(act + (size_t)t * ast);
#pragma GCC unroll 8
            for (int u = 0; u < U; u++)
                acc[t][u] = _mm512_fmadd_ps(wv[u], _mm512_loadu_ps(x + k + 16 * u), acc[t][u]);
        }
    }
    for (; k < K; k += 16) {
        const int n = K - k < 16 ? (int)(K - k) : 16;
        const __mmask16 m = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
        const __m512 wv = wload16(type, w, k, n);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const float *x = (const float *)(act + (size_t)t * ast);
            acc[t][0] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + k), acc[t][0]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        y[t * ldy] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]));
}

/* BF16 row: 32 weights per load, even elements (w << 16) and odd ones (w & 0xffff0000) against
 * the split activations of GV_ACT_BF. */
INL_VBMI void row_bf16(const uint8_t *w, int64_t K, const uint8_t *act, size_t ast, int T, float *y,
                       int64_t ldy)
{
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    __m512 acc[GV_MAX_TOK][2];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 32) {
        __m512i v;
        if (K - k >= 32) {
            v = ld(w + 2 * k);
            PF(w + 2 * k, 64);
        } else {
            v = _mm512_maskz_loadu_epi16((__mmask32)((1u << (K - k)) - 1), w + 2 * k);
        }
        const __m512 ev = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        const __m512 od = _mm512_castsi512_ps(_mm512_and_si512(v, hi));
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const float *x = (const float *)(act + (size_t)t * ast) + k;
            acc[t][0] = _mm512_fmadd_ps(ev, _mm512_loadu_ps(x), acc[t][0]);
            acc[t][1] = _mm512_fmadd_ps(od, _mm512_loadu_ps(x + 16), acc[t][1]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        y[t * ldy] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]));
}

/* ---- row loops and dispatch ----------------------------------------------------------------- */

/* One row of Q4_K (q5 0) or Q5_K (q5 1) for T tokens starting at token t0 of the job (a
 * multiple of 4 that does not cross a side block: passes start at multiples of GV_MAX_TOK). */
INL_VBMI void row_k45(const struct gv_job *j, const uint8_t *w, const uint8_t *act, int t0, int T,
                      int q5, float *y)
{
    const int64_t nsb = j->K / 256;
    if (j->n_tok == 1) {
        row_q45k(w, nsb, act, q5, y);
        return;
    }
    const uint8_t *side = j->side + (size_t)(t0 / GV_SIDE_TOK) * (size_t)nsb * GV_SIDE_BYTES;
    row_q45k_multi(w, nsb, act, j->act_stride, side, t0 % GV_SIDE_TOK, T, q5, y, j->ldy);
}

/* Rows [r0, r1) for T tokens starting at token t0. */
INL_VBMI void rows_T(const struct gv_job *j, int64_t r0, int64_t r1, int t0, int T)
{
    const uint8_t *act = j->act + (size_t)t0 * j->act_stride;
    const size_t ast = j->act_stride;
    const int64_t K = j->K;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = j->w + (size_t)r * j->row_bytes;
        float *y = j->y + (size_t)t0 * j->ldy + r;
        switch (j->type) {
        case EXSA_DTYPE_Q4_K: row_k45(j, w, act, t0, T, 0, y); break;
        case EXSA_DTYPE_Q5_K: row_k45(j, w, act, t0, T, 1, y); break;
        case EXSA_DTYPE_Q6_K: row_q6k(w, K / 256, act, ast, T, y, j->ldy); break;
        case EXSA_DTYPE_Q4_0: row_b(1, w, K, act, ast, T, y, j->ldy); break;
        case EXSA_DTYPE_Q8_0: row_b(0, w, K, act, ast, T, y, j->ldy); break;
        case EXSA_DTYPE_F32: row_f(EXSA_DTYPE_F32, w, K, act, ast, T, y, j->ldy); break;
        case EXSA_DTYPE_F16: row_f(EXSA_DTYPE_F16, w, K, act, ast, T, y, j->ldy); break;
        case EXSA_DTYPE_BF16: row_bf16(w, K, act, ast, T, y, j->ldy); break;
        }
    }
}

#define ROWS_T(n)                                                                                  \
    static TGT_VBMI void rows_t##n(const struct gv_job *j, int64_t r0, int64_t r1, int t0)         \
    {                                                                                              \
        rows_T(j, r0, r1, t0, n);                                                                  \
    }
ROWS_T(1)
ROWS_T(2)
ROWS_T(3)
ROWS_T(4)
ROWS_T(5)
ROWS_T(6)
ROWS_T(7)
ROWS_T(8)

void gv_avx512_rows(const struct gv_job *j, int64_t r0, int64_t r1)
{
    static void (*const fns[GV_MAX_TOK + 1])(const struct gv_job *, int64_t, int64_t, int) = {
        NULL, rows_t1, rows_t2, rows_t3, rows_t4, rows_t5, rows_t6, rows_t7, rows_t8};
    if (j->n_tok <= GV_MAX_TOK) {
        fns[j->n_tok](j, r0, r1, 0);
        return;
    }
    for (int64_t rc = r0; rc < r1; rc += ROW_CHUNK) {
        const int64_t re = rc + ROW_CHUNK < r1 ? rc + ROW_CHUNK : r1;
        for (int t = 0; t < j->n_tok; t += GV_MAX_TOK) {
            const int T = j->n_tok - t < GV_MAX_TOK ? j->n_tok - t : GV_MAX_TOK;
            fns[T](j, rc, re, t);
        }
    }
}

#else /* not x86-64 gcc: no kernels; gemv.c never calls these */

size_t gv_side_bytes(const struct gv_job *j)
{
    return 0;
}
void gv_avx512_side(const struct gv_job *j, uint8_t *side, int b0, int b1)
{
}
size_t gv_act_bytes(int kind, int64_t K)
{
    return 0;
}
void gv_avx512_quantize(int kind, const float *x, int64_t K, uint8_t *out)
{
}
void gv_avx512_rows(const struct gv_job *j, int64_t r0, int64_t r1)
{
}

#endif
