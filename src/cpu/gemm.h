/*
 * gemm.h: what the prefill matmul path (MM_GEMM_BF16, MM_GEMM_AMX: gemm_run in gemm.c) shares
 * with its kernels (gemm-kern.c).
 *
 * Layouts (bf16 = 16-bit brain float, K-steps of 32 elements, s = k / 32):
 * - weight panel: P rows (P a multiple of 32) x K, as 16-row groups: element (row p, k) at
 *   ((p / 16 * nks + s) * 16 + p % 16) * 32 + k % 32. One (group, s) is a 1 KiB AMX A tile
 *   (16 rows x 64 bytes); a group's tiles are contiguous.
 * - activations: token blocks of 16 (zero-padded), element (token t, k) at
 *   ((t / 16 * nks + s) * 16 + (k % 32) / 2) * 32 + (t % 16) * 2 + k % 2, nks = K / 32. One
 *   (block, s) is a 1 KiB AMX B tile: row kp holds the pairs (2kp, 2kp+1) of 16 tokens.
 * Results: y[t][n] = sum_k W[n][k] x[t][k] with bf16 inputs and f32 accumulation.
 */
#ifndef EXSA_CPU_GEMM_H
#define EXSA_CPU_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- kernels (gemm-kern.c): run only at their level (features.h: BF16, AMX) --------------- */

struct gemm_tile_job {
    const uint16_t *panel; /* weight panel (layout above), P rows */
    const uint16_t *xb;    /* activations (layout above) */
    int nks;               /* K-steps of 32 over all segments: segs * K / 32 */
    float *y;              /* output: y[t * ldy + n] */
    int64_t ldy;
    int n0, n_valid; /* global row of panel row 0; rows of the panel that exist (< P) */
    int n_tok;       /* tokens that exist */
};

/* y for panel rows [g0 * 16, g1 * 16) and token blocks [b0, b1) (all of them here). */
void gemm_kern_amx(const struct gemm_tile_job *j, int g0, int g1, int b0, int b1);
void gemm_kern_avx512(const struct gemm_tile_job *j, int g0, int g1, int b0, int b1);
/* Ends AMX use on this thread (tile release). */
void gemm_amx_done(void);

/* Token blocks [b0, b1) of x [n_tok][K] into the activation layout (tokens past n_tok: 0), as
 * segs segments of K/32 steps each: 1: bf16(x); 2: hi = bf16(x), lo = bf16(x - hi); 3: hi, lo,
 * hi. With weight segments w, w (BF16) or whi, whi, wlo (F16), the sum over all segments is
 * the product to about 2^-16: these "split" products keep F16/BF16 weights at f32 accuracy. */
void gemm_pack_x(const float *x, int64_t K, int segs, int b0, int b1, int n_tok, uint16_t *xb);
/* Row p of a panel from K f32 values (K a multiple of 32), as segs segments: 1: bf16(w);
 * 3: whi, whi, wlo (see gemm_pack_x). */
void gemm_pack_row_f32(const float *row, int64_t K, int segs, int p, uint16_t *panel);
/* Row p of a panel straight from the weight bytes of one row of type, as segs segments (see
 * gemm_pack_x; F16: 1 or 3, BF16: 1 or 2); false if the type has
 * no direct unpacker (the caller dequantizes to f32 first). */
bool gemm_pack_row(int type, const uint8_t *w, int64_t K, int segs, int p, uint16_t *panel);

#endif
