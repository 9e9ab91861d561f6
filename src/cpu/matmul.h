/*
 * matmul.h: the fast CPU matrix product y = W x for every weight type, the thread pool it runs
 * on, and the f32 dot product of the CPU kernels. W is a struct tensor {K, N} (N rows of K
 * elements; expert e of {K, N, E} starts at row e N); x is [n_tok][K] f32, y is [n_tok][N] f32
 * (row-major, as backend_ops.matmul).
 *
 * Which kernel runs a call is one table in matmul.c: a row per weight type names its decode
 * kernel (calls of fewer than MM_PREFILL_MIN_TOK tokens), its prefill kernel (that many or more)
 * and its fallback, for when the CPU lacks a kernel's level (cpu/features.h) or a kernel declines
 * the call (shape, scratch); the reference kernel runs where nothing else can.
 * Callers: cpu/backend-cpu.c, tests/test_kernels.c, test_gemv.c, test_gemm.c, bench/bench_matmul.c.
 */
#ifndef EXSA_CPU_MATMUL_H
#define EXSA_CPU_MATMUL_H

#include <stdbool.h>

#include "model.h"

struct threadpool;

/* n_threads workers in all (the caller's thread counts as worker 0; n_threads <= 0: 1).
 * Returns NULL on failure. */
struct threadpool *tp_create(int n_threads);
void tp_free(struct threadpool *tp);
int tp_n_threads(const struct threadpool *tp);
/* Runs fn(arg, ith, nth) on every worker (ith 0 on the caller) and returns when all are done.
 * Not reentrant: one tp_run at a time per pool. tp NULL: runs fn(arg, 0, 1). */
void tp_run(struct threadpool *tp, void (*fn)(void *arg, int ith, int nth), void *arg);

/* Optional per-weight preparation at load. Every kernel reads the weights in their file layout,
 * so nothing is repacked: returns 0 and leaves w->be_data alone. */
int cpu_matmul_prepare(struct tensor *w);
/* Frees what cpu_matmul_prepare made: nothing today (safe on any tensor). */
void cpu_matmul_release(struct tensor *w);

/* y[t][n] = sum_k W[n][k] x[t][k], t < n_tok, for expert `expert` of w (0 for 2-D weights).
 * K must be a multiple of the type's block size (model binding checks it). tp may be NULL (one
 * thread). Never fails for a supported type; for a type dequantize_row cannot read it fills y
 * with zeros (model binding rejects such types earlier). */
void cpu_matmul(struct threadpool *tp, const struct tensor *w, int expert, const float *x, float *y,
                int n_tok);

/* y = W x as cpu_matmul, but each token's kernel family is fixed by the caller instead of by
 * the call's token count: token t takes the decode kernel of w's table row where dec[t] is
 * set, the prefill kernel where it is not (each with the usual fallbacks on a CPU without its
 * level). Both kernel families compute a token's row independently of the other tokens of a
 * call and of their number, so a token's result depends only on its own x and its flag: a
 * sequence's results do not depend on what it is batched with (batch invariance). The CPU
 * backend sets dec from each entry's job length (exsa_batch.job_len: the kernel the table gives
 * that prompt or token alone). A call that mixes both families runs two kernel calls, each over
 * its own tokens (gathered into scratch when they are not one contiguous run). dec NULL:
 * cpu_matmul. */
void cpu_matmul_roles(struct threadpool *tp, const struct tensor *w, int expert, const float *x,
                      float *y, int n_tok, const uint8_t *dec);
/* cpu_matmul_roles with every token of the decode (dec) or the prefill family (n_tok 0: none). */
void cpu_matmul_family(struct threadpool *tp, const struct tensor *w, int expert, const float *x,
                       float *y, int n_tok, bool dec);

/* The kernels of the table (what each is: matmul.c). */
enum mm_kernel {
    MM_REF,       /* plain C: dequantize a row, cpu_dot_f32 with each token */
    MM_TILED_Q8,  /* 8-bit activations, VNNI dot products, 4-token tiles (matmul-avx512.c) */
    MM_TILED_F,   /* f32 FMA, 4-token tiles (matmul-avx512.c) */
    MM_GEMV,      /* decode: weights streamed once for all tokens (gemv.c, gemv-avx512.c) */
    MM_GEMM_BF16, /* prefill: bf16 GEMM on AVX-512 BF16 dot products (gemm.c, gemm-kern.c) */
    MM_GEMM_AMX,  /* prefill: the same GEMM on AMX tiles */
    MM_N_KERNELS
};
#define MM_PREFILL_MIN_TOK 16 /* calls of this many tokens or more take the prefill kernel */

/* The kernel cpu_matmul runs first for n_tok tokens of type, at the current CPU limit. */
int cpu_matmul_pick(int type, int n_tok);
/* The kernel cpu_matmul_roles runs first for type's decode (dec) or prefill family. */
int cpu_matmul_pick_family(int type, bool dec);
/* "gemv", "gemm-amx", ...; "?" for a number that is no kernel. */
const char *cpu_matmul_kernel_name(int kernel);
/* Whether kernel keeps f32 accuracy on type (NMSE 1e-7 against the exact product) rather than
 * rounding activations to 8 bits or products to bf16 (NMSE 1e-4). */
bool cpu_matmul_exact(int kernel, int type);
/* Runs the one kernel on the call, as cpu_matmul would. False when it is not in the table row
 * of w's type or the CPU (at the current limit) lacks its level (y untouched), or when it
 * declines the call (y untouched, except after running out of scratch midway). For tests and
 * benchmarks, which compare the kernels. */
bool cpu_matmul_with(int kernel, struct threadpool *tp, const struct tensor *w, int expert,
                     const float *x, float *y, int n_tok);

/* sum a[i] b[i], i < n, in a fixed order whatever the build: 16 partial sums, s[j] over the
 * i = j (mod 16) (the tail too), then s[0] + s[1] + ... + s[15] left to right. */
float cpu_dot_f32(const float *a, const float *b, int64_t n);

#endif
