/*
 * gemv-impl.h: what gemv.c (threads, scratch) shares with its kernel file gemv-avx512.c. The
 * decode path quantizes the activations of each call into a format made for the weight type
 * (the table row's gv_act), per token gv_act_bytes bytes, 64-byte aligned; the GV_* offsets
 * below name where each part of a record starts:
 *   GV_ACT_K8 (Q4_K, Q5_K), per 256 (GV_K_BYTES): int8 q[256] in the order the nibbles of a
 *       64-byte qs load come out (32-element chunks 0,2,1,3,4,6,5,7); at GV_K_SUMS int16 sums
 *       of q per chunk [8], each times 2^(GV_SUB_SHIFT - e) (zero up to GV_K_SHIFT_A but for
 *       the step); at GV_K_STEP the float step d / 2^GV_SUB_SHIFT; at GV_K_SHIFT_A and
 *       GV_K_SHIFT_B int16 [32] shift counts GV_SUB_SHIFT - e of the chunk behind each word of
 *       the kernels' packed sums. Chunk c is quantized with step d / 2^e[c] (power-of-two
 *       sub-scales: near per-32 precision).
 *   GV_ACT_K6 (Q6_K), per 256 (GV_K_BYTES): the same with q in order and, at GV_K_SUMS, minus
 *       the sums of q per 16 [16] times 2^(GV_SUB_SHIFT - e).
 *   GV_ACT_B4 (Q4_0), per 128 (4 blocks b, GV_B4_BYTES): q [b0 0..15, b1 0..15, b2 .., b3 ..,
 *       b0 16..31, ..]; at GV_B4_SCALE float scale of block b in lanes 4b..4b+3 [16]; at
 *       GV_B4_CORR int32 -8 x sum of block b in lane 4b [16]. A partial last group is padded
 *       with zeros.
 *   GV_ACT_B8 (Q8_0), per 64 (2 blocks, GV_B8_BYTES): q in order; at GV_B8_SCALE float scales
 *       [8 x b0, 8 x b1]; at GV_B8_CORR int32 -128 x sum of each block in lanes 0 and 8.
 *       Padded like B4.
 *   GV_ACT_F32 (F32, F16): x itself (no copy). GV_ACT_BF (BF16): f32 copy with each 32 split
 *       into its 16 even then 16 odd elements, zero-padded to a multiple of 32.
 * Kernels compute y[t][r] for a row range and all tokens of the job.
 */
#ifndef EXSA_CPU_GEMV_IMPL_H
#define EXSA_CPU_GEMV_IMPL_H

#include <stddef.h>
#include <stdint.h>

#define GV_MAX_TOK 8   /* tokens per kernel pass: their accumulators stay in registers */
#define GV_SIDE_TOK 16 /* tokens per block of K8 side data (a call may have several blocks) */
#define GV_SUB_SHIFT 3 /* K-quant activation sub-scales d / 2^e, e <= 3 (int16 sums fit) */

enum gv_act_kind { GV_ACT_NONE, GV_ACT_K8, GV_ACT_K6, GV_ACT_B4, GV_ACT_B8, GV_ACT_F32, GV_ACT_BF };

/* Byte offsets in the records of the formats above. */
enum {
    GV_K_SUMS = 256,
    GV_K_STEP = 288,
    GV_K_SHIFT_A = 320,
    GV_K_SHIFT_B = 384,
    GV_K_BYTES = 448,
    GV_B4_SCALE = 128,
    GV_B4_CORR = 192,
    GV_B4_BYTES = 256,
    GV_B8_SCALE = 64,
    GV_B8_CORR = 128,
    GV_B8_BYTES = 192,
};

struct gv_job {
    int type;
    int n_tok;        /* >= 1 */
    const uint8_t *w; /* row 0 of the matrix (expert applied) */
    size_t row_bytes;
    int64_t K, N;
    const uint8_t *act; /* token t's activations at act + t * act_stride */
    size_t act_stride;
    const uint8_t *side; /* K8 with n_tok >= 2: gv_side_bytes (gv_avx512_side) */
    float *y;            /* y[t * ldy + r] */
    int64_t ldy;
};

/* Bytes of one token's activations in format kind for K elements (a multiple of 64). */
size_t gv_act_bytes(int kind, int64_t K);
/* Quantizes (or copies) one token's x[K] into out, gv_act_bytes(kind, K) bytes. */
void gv_avx512_quantize(int kind, const float *x, int64_t K, uint8_t *out);
/* Side data of a K8 call of several tokens: for each block b of GV_SIDE_TOK tokens (tokens
 * 16b..16b+15), K/256 records, one per super-block s (GV_SIDE_BYTES, record b * K/256 + s): at
 * GV_SIDE_SUMS, int16 [4 groups of 4 tokens][4][8] chunk sums of the tokens (as in their
 * records, zero for missing tokens); at GV_SIDE_STEP4, float [4 groups][16] the tokens' steps,
 * each in 4 lanes; at GV_SIDE_STEP, float [16] the tokens' steps. Lets the kernels do the mins of
 * 4 tokens in one vector. */
enum { GV_SIDE_SUMS = 0, GV_SIDE_STEP4 = 256, GV_SIDE_STEP = 512, GV_SIDE_BYTES = 576 };
/* Bytes of the side data of a job (all its blocks). */
size_t gv_side_bytes(const struct gv_job *j);
/* Fills the side records of token blocks [b0, b1) from the job's activations. */
void gv_avx512_side(const struct gv_job *j, uint8_t *side, int b0, int b1);
/* Rows [r0, r1) of the job for all its tokens, for the job's type (one with a format above).
 * Each y[t][r] comes out bit for bit the same whatever the job's other tokens and their count:
 * a token's sums run in one fixed order in every pass shape (batch invariance). */
void gv_avx512_rows(const struct gv_job *j, int64_t r0, int64_t r1);

#endif
