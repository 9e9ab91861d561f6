/*
 * matmul-impl.h: what cpu_matmul (matmul.c: the kernel table and the plain C kernel) shares
 * with its kernel files: the call as every kernel entry sees it (struct mm_call, with the table
 * row of its weight type), the entries, and the tiled kernels' job format.
 *
 * An entry runs a whole call on the pool and returns true, or returns false when it cannot
 * (shape, token count, scratch), leaving y to the next kernel of the row, which overwrites all
 * of it. Entries run only at their CPU level and only for types whose row names them.
 */
#ifndef EXSA_CPU_MATMUL_IMPL_H
#define EXSA_CPU_MATMUL_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu/matmul.h"

/* The table row of one weight type (enum mm_kernel values; the formats its kernels use). */
struct mm_route {
    int decode;   /* calls of 1 .. MM_PREFILL_MIN_TOK - 1 tokens */
    int prefill;  /* calls of MM_PREFILL_MIN_TOK tokens or more */
    int fallback; /* when the CPU lacks the level of those, or they decline */
    int gv_act;   /* activation format of MM_GEMV (gemv-impl.h: GV_ACT_*) */
    int segs;     /* K segments of MM_GEMM_* (gemm.h): 1 bf16, 2 or 3 split f32-exact */
};

struct mm_call {
    struct threadpool *tp; /* may be NULL: one thread */
    const struct mm_route *route;
    int type, n_tok;
    int64_t K, N;
    size_t row_bytes;
    const uint8_t *w; /* row 0 of the matrix (expert applied) */
    const float *x;   /* [n_tok][K] */
    float *y;         /* [n_tok][N] */
};

bool gemv_run(const struct mm_call *c);           /* gemv.c */
bool gemm_run(const struct mm_call *c, bool amx); /* gemm.c */

/* ---- the tiled kernels (matmul-avx512.c), threaded by matmul.c ---------------------------- */

/* Activations in the 8-bit format ("act8") are, per token of K elements: xq[K] int8, dx[K/32]
 * (the scale of each 32-block: x ~= dx * xq) and s16[K/16] (dx times the sum of xq over each
 * 16-element half block, used for weight offsets and K-quant mins). Only the tiled kernels use
 * them, so only their level has a quantizer. */
struct act8 {
    const int8_t *xq; /* [n_tok][K] */
    const float *dx;  /* [n_tok][K/32] */
    const float *s16; /* [n_tok][K/16] */
    int64_t K;
};

/* The work of one call to a kernel: rows [r0, r1) of w, tokens [t0, t1). */
struct mm_job {
    int type;
    const uint8_t *w; /* row 0 of the matrix (expert applied) */
    size_t row_bytes;
    int64_t K, N;
    const float *x; /* [n_tok][K] f32 (float kernels) */
    struct act8 a;  /* quantized activations (int8 kernels) */
    float *y;       /* [n_tok][N] */
};

/* y for rows [r0, r1) and tokens [t0, t1) of the job. Return 0, or -1 when out of memory (q8)
 * or on a build without the kernels. Never allocate beyond a per-thread row buffer. */
int mm_avx512_q8(const struct mm_job *j, int r0, int r1, int t0, int t1);
int mm_avx512_f(const struct mm_job *j, int r0, int r1, int t0, int t1);
/* One token of K elements (a multiple of 32) to act8: dx[b] = max |x| / 127 over 32-block b,
 * xq[k] = x[k] / dx[b] rounded to nearest even, s16[h] = dx[b] x the sum of xq over half h. */
void mm_avx512_quantize(const float *x, int64_t K, int8_t *xq, float *dx, float *s16);

#endif
