/*
 * matmul-impl.h: what matmul.c shares with its SIMD kernel files (matmul-avx512.c).
 *
 * Activations in the 8-bit format ("act8") are, per token of K elements: xq[K] int8, dx[K/32]
 * (the scale of each 32-block: x ~= dx * xq) and s16[K/16] (dx times the sum of xq over each
 * 16-element half block, used for weight offsets and K-quant mins). Each kernel computes
 * y[t][r] for a row range and a token range; it never allocates.
 */
#ifndef EXSA_CPU_MATMUL_IMPL_H
#define EXSA_CPU_MATMUL_IMPL_H

#include <stddef.h>
#include <stdint.h>

struct act8 {
    const int8_t *xq; /* [n_tok][K] */
    const float *dx;  /* [n_tok][K/32] */
    const float *s16; /* [n_tok][K/16] */
    int64_t K;
};

/* The work of one call to a kernel: rows [r0, r1) of w, tokens [t0, t1). */
struct mm_job {
    int type;
    const uint8_t *w; /* row 0 of the matrix (expert already applied) */
    size_t row_bytes;
    int64_t K, N;
    const float *x;   /* [n_tok][K] f32 (float kernels) */
    struct act8 a;    /* quantized activations (int8 kernels) */
    float *y;         /* [n_tok][N] */
};

/* AVX-512 VNNI kernels (matmul-avx512.c). Return 0 when done, -1 when the type has none. */
int mm_avx512_q8(const struct mm_job *j, int r0, int r1, int t0, int t1);
int mm_avx512_f(const struct mm_job *j, int r0, int r1, int t0, int t1);
int mm_avx512_quantize(const float *x, int64_t K, int8_t *xq, float *dx, float *s16);

#endif
