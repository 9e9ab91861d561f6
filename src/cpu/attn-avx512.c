/*
 * attn-avx512.c: causal GQA attention with AVX-512, 16 query lanes at a time. A lane is one
 * (batch entry, query head) pair; the lanes of a block share one sequence and one KV head, so
 * every K and V row is read once for all of them: in prefill, 4 consecutive entries x 4 heads
 * of a group; in decode, the heads of a group. Scores are kept per position as one vector over
 * the lanes (two passes: scores and their maximum, then exp, sums and the weighted V).
 * Called by backend-cpu.c for each block; the plain path there stays for other CPUs.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "cpu/attn.h"
#include "cpu/features.h"
#include "cpu/vmath.h"
#include "kvcache.h"

/* Scores of every position for all lanes into s[p*16 + lane] (masked lanes: -inf); returns
 * the per-lane maximum. qt is [hd][16] (queries transposed, pre-scaled). */
static TGT_AVX512F __m512 scores(const struct attn_block *b, const float *qt, float *s)
{
    __m512 mx = _mm512_set1_ps(-INFINITY);
    const __m512i lane_pos = _mm512_loadu_si512(b->lane_pos);
    const int hd = b->head_dim;
    for (int p = 0; p < b->n_pos; p++) {
        const float *k = kv_k(b->kv, b->a, b->seq, p) + b->g * hd;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int d = 0; d < hd; d += 4) {
            a0 = _mm512_fmadd_ps(_mm512_load_ps(qt + (d + 0) * 16), _mm512_set1_ps(k[d + 0]), a0);
            a1 = _mm512_fmadd_ps(_mm512_load_ps(qt + (d + 1) * 16), _mm512_set1_ps(k[d + 1]), a1);
            a2 = _mm512_fmadd_ps(_mm512_load_ps(qt + (d + 2) * 16), _mm512_set1_ps(k[d + 2]), a2);
            a3 = _mm512_fmadd_ps(_mm512_load_ps(qt + (d + 3) * 16), _mm512_set1_ps(k[d + 3]), a3);
        }
        __m512 acc = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
        __mmask16 live = _mm512_cmp_epi32_mask(_mm512_set1_epi32(p), lane_pos, _MM_CMPINT_LE);
        acc = _mm512_mask_blend_ps(live, _mm512_set1_ps(-INFINITY), acc);
        mx = _mm512_max_ps(mx, acc);
        _mm512_store_ps(s + (size_t)p * 16, acc);
    }
    return mx;
}

/* out rows of 4 lanes (l0..l0+3) = sum_p e[p][lane] v[p] / sum[lane]. */
static TGT_AVX512F void weighted_v(const struct attn_block *b, const float *s, const float *inv,
                                   int l0)
{
    const int hd = b->head_dim;
    for (int d0 = 0; d0 < hd; d0 += 64) {
        const int nd = hd - d0 < 64 ? (hd - d0) / 16 : 4;
        __m512 o[4][4];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                o[i][j] = _mm512_setzero_ps();
        for (int p = 0; p < b->n_pos; p++) {
            const float *v = kv_v(b->kv, b->a, b->seq, p) + b->g * hd + d0;
            const float *e = s + (size_t)p * 16 + l0;
            for (int j = 0; j < nd; j++) {
                __m512 vj = _mm512_loadu_ps(v + 16 * j);
                for (int i = 0; i < 4; i++)
                    o[i][j] = _mm512_fmadd_ps(_mm512_set1_ps(e[i]), vj, o[i][j]);
            }
        }
        for (int i = 0; i < 4 && l0 + i < b->n_lanes; i++)
            for (int j = 0; j < nd; j++)
                _mm512_storeu_ps(b->lane_out[l0 + i] + d0 + 16 * j,
                                 _mm512_mul_ps(o[i][j], _mm512_set1_ps(inv[l0 + i])));
    }
}

static TGT_AVX512F void attend(const struct attn_block *b, float *work)
{
    const int hd = b->head_dim;
    float *qt = work, *s = work + (size_t)hd * 16; /* both 64-byte aligned */
    const float scale = 1.0f / sqrtf((float)hd);
    for (int d = 0; d < hd; d++)
        for (int l = 0; l < 16; l++)
            qt[d * 16 + l] = l < b->n_lanes ? b->lane_q[l][d] * scale : 0.0f;
    __m512 mx = scores(b, qt, s);
    __m512 sum = _mm512_setzero_ps();
    for (int p = 0; p < b->n_pos; p++) {
        /* masked positions (-inf) weigh exactly 0: exp512 would give e^-87 there, and a lane's
         * result would then depend on the positions of the other lanes in its block (which
         * follow how the batch was cut into chunks) */
        const __m512 sp = _mm512_load_ps(s + (size_t)p * 16);
        const __mmask16 live = _mm512_cmp_ps_mask(sp, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
        __m512 e = _mm512_maskz_mov_ps(live, exp512(_mm512_sub_ps(sp, mx)));
        sum = _mm512_add_ps(sum, e);
        _mm512_store_ps(s + (size_t)p * 16, e);
    }
    float inv[16];
    _mm512_storeu_ps(inv, _mm512_div_ps(_mm512_set1_ps(1.0f), sum));
    for (int l0 = 0; l0 < b->n_lanes; l0 += 4)
        weighted_v(b, s, inv, l0);
}

int attn_block_avx512(const struct attn_block *b, float *work)
{
    if (b->head_dim % 16 != 0 || b->n_lanes > 16 || !cpu_has(CPU_LEVEL_AVX512F))
        return -1;
    attend(b, work);
    return 0;
}
