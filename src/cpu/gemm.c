/*
 * gemm.c: the prefill matmul path (MM_GEMM_AMX, MM_GEMM_BF16 of matmul.c's table): y = W x as
 * a bf16 GEMM with f32 accumulation, on AMX-BF16 tiles or on AVX-512 BF16 dot products
 * (gemm.h has the layouts). The table gives it calls of MM_PREFILL_MIN_TOK tokens or more.
 *
 * A call: (1) the threads convert x to bf16 in the tile layout, 16-token blocks split among
 * them; (2) each thread takes a contiguous range of 32-row sub-panels of W, and for each panel of
 * up to P rows (P x K bf16 <= ~1 MiB, stays in L2) dequantizes the rows once, then runs every
 * token block over it. Weights are dequantized on the fly (their cost is shared by all tokens),
 * so gemm_prepare repacks nothing and the model keeps no second copy.
 * Accuracy: bf16 rounding of weights and activations (relative 2^-9) is well inside the 8-bit
 * activation bar (NMSE 1e-4); F32 weights stay on cpu_matmul's exact f32 path.
 * K segments per type (the table's segs): 1 (bf16 products) for the types whose other kernels
 * quantize activations to 8 bits; else split products at f32 accuracy, as their other kernels
 * are exact: BF16 weights are exact in bf16 (2), the rest need hi + lo (3).
 * Scratch lives in thread-local buffers that only grow. Caller: cpu_matmul (matmul.c).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/gemm.h"
#include "cpu/matmul-impl.h"
#include "cpu/scratch.h"
#include "quant.h"

#ifndef PANEL_BYTES
#define PANEL_BYTES (1024 * 1024) /* bf16 weight panel kept in L2 while all tokens pass */
#endif
#define PANEL_MAX 256 /* rows */

/* ---- thread-local scratch --------------------------------------------------------------- */

static _Thread_local struct scratch tl_x, tl_panel, tl_row;

/* ---- the threaded call ------------------------------------------------------------------ */

struct gemm_call {
    int type, n_tok, n_blocks;
    bool amx;         /* AMX tiles, else AVX-512 BF16 dot products */
    int segs;         /* K segments (gemm.h): 1, or 2 (BF16) / 3 (F16) for f32-accurate products */
    const uint8_t *w; /* row 0 of the matrix (expert applied) */
    size_t row_bytes;
    int64_t K, N;
    const float *x;
    float *y;
    uint16_t *xb;
    atomic_int failed; /* a worker could not get its scratch (read after the join) */
};

static void pack_worker(void *arg, int ith, int nth)
{
    const struct gemm_call *c = arg;
    gemm_pack_x(c->x, c->K, c->segs, c->n_blocks * ith / nth, c->n_blocks * (ith + 1) / nth,
                c->n_tok, c->xb);
}

/* Dequantizes rows [n0, n0 + n_valid) of W into a panel of `groups` 16-row groups (rows past
 * n_valid zero). False if out of memory. */
static bool fill_panel(const struct gemm_call *c, int n0, int n_valid, int groups, uint16_t *panel)
{
    const int64_t K = c->K;
    float *row = NULL;
    for (int p = 0; p < 16 * groups; p++) {
        const uint8_t *src = c->w + (size_t)(n0 + p) * c->row_bytes;
        if (p < n_valid && gemm_pack_row(c->type, src, K, c->segs, p, panel))
            continue;
        if (!row && !(row = scratch_get(&tl_row, sizeof(float) * (size_t)K)))
            return false;
        if (p >= n_valid || dequantize_row(c->type, src, row, K) != 0)
            memset(row, 0, sizeof(float) * (size_t)K);
        gemm_pack_row_f32(row, K, c->segs, p, panel);
    }
    return true;
}

static void gemm_worker(void *arg, int ith, int nth)
{
    struct gemm_call *c = arg;
    const int64_t n_sub = (c->N + 31) / 32;
    const int s0 = (int)(n_sub * ith / nth), s1 = (int)(n_sub * (ith + 1) / nth);
    const int64_t KS = c->K * c->segs;
    int P = (int)(PANEL_BYTES / (2 * KS)) / 32 * 32;
    P = P < 32 ? 32 : P > PANEL_MAX ? PANEL_MAX : P;
    uint16_t *panel = s0 < s1 ? scratch_get(&tl_panel, (size_t)P * (size_t)KS * 2) : NULL;
    if (s0 < s1 && !panel) {
        atomic_store(&c->failed, 1);
        return;
    }
    for (int64_t n0 = 32 * (int64_t)s0; n0 < 32 * (int64_t)s1; n0 += P) {
        const int rows = (int)(32 * (int64_t)s1 - n0 < P ? 32 * (int64_t)s1 - n0 : P);
        const int groups = (rows + 15) / 16 + ((rows + 15) / 16 & 1); /* even */
        const int n_valid = (int)(c->N - n0 < rows ? c->N - n0 : rows);
        if (!fill_panel(c, (int)n0, n_valid, groups, panel)) {
            atomic_store(&c->failed, 1);
            return;
        }
        const struct gemm_tile_job j = {
            .panel = panel,
            .xb = c->xb,
            .nks = (int)(KS / 32),
            .y = c->y,
            .ldy = c->N,
            .n0 = (int)n0,
            .n_valid = n_valid,
            .n_tok = c->n_tok,
        };
        if (c->amx)
            gemm_kern_amx(&j, 0, groups, 0, c->n_blocks);
        else
            gemm_kern_avx512(&j, 0, groups, 0, c->n_blocks);
    }
    if (c->amx)
        gemm_amx_done();
}

/* Whether the path can take a weight of type with rows of K elements. */
static bool shape_ok(int type, int64_t K)
{
    const struct dtype_info *ti = dtype_info(type);
    return ti && ti->supported && K % 32 == 0 && K % ti->block_size == 0;
}

bool gemm_run(const struct mm_call *mc, bool amx)
{
    if (mc->route->segs < 1 || !shape_ok(mc->type, mc->K))
        return false;
    struct gemm_call c = {
        .type = mc->type,
        .amx = amx,
        .n_tok = mc->n_tok,
        .n_blocks = (mc->n_tok + 15) / 16,
        .segs = mc->route->segs,
        .w = mc->w,
        .row_bytes = mc->row_bytes,
        .K = mc->K,
        .N = mc->N,
        .x = mc->x,
        .y = mc->y,
    };
    c.xb = scratch_get(&tl_x, (size_t)c.n_blocks * (size_t)c.K * c.segs * 32);
    if (!c.xb)
        return false;
    tp_run(mc->tp, pack_worker, &c);
    tp_run(mc->tp, gemm_worker, &c);
    return !atomic_load(&c.failed); /* out of memory: the next kernel overwrites all of y */
}
