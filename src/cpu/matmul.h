/*
 * matmul.h: the fast CPU matrix product y = W x for every weight type, and the thread pool it
 * runs on. W is a struct tensor {K, N} (N rows of K elements; expert e of {K, N, E} starts at row
 * e N); x is [n_tok][K] f32, y is [n_tok][N] f32 (row-major, as backend_ops.matmul).
 *
 * Paths, chosen per type at run time from cpuid: Q4_0, Q8_0, Q4_K, Q5_K, Q6_K quantize the
 * activations to 8 bits per 32 and use int8 VNNI dot products (AVX-512 VNNI/VL); F32, F16, BF16
 * use f32 FMA; everything else (and any CPU without those features) dequantizes a row and takes
 * an f32 dot product. Threads split the N rows into contiguous ranges (one linear weight stream
 * per thread); prefill walks token tiles over a small row chunk that stays in L2.
 * Callers: cpu/backend-cpu.c (the lead plugs it in), tests/test_kernels.c, bench/bench_matmul.c.
 */
#ifndef EXSA_CPU_MATMUL_H
#define EXSA_CPU_MATMUL_H

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

/* Optional per-weight preparation at load (a repacked copy in w->be_data). Returns 0 or a
 * negative EXSA_E* code; today it repacks nothing and always returns 0. */
int cpu_matmul_prepare(struct tensor *w);
/* Frees what cpu_matmul_prepare made (safe on any tensor). */
void cpu_matmul_release(struct tensor *w);

/* y[t][n] = sum_k W[n][k] x[t][k], t < n_tok, for expert `expert` of w (0 for 2-D weights).
 * tp may be NULL (one thread, scratch from malloc). Never fails for a supported type; for a type
 * dequantize_row cannot read it fills y with zeros (model binding rejects such types earlier). */
void cpu_matmul(struct threadpool *tp, const struct tensor *w, int expert, const float *x,
                float *y, int n_tok);

/* Kernel level in use: 0 plain C (dequantize + f32 dot), 1 AVX-512 VNNI. cpu_matmul_set_level
 * lowers (or restores, up to what the CPU has) the level: tests and benchmarks compare paths. */
enum { CPU_LEVEL_C = 0, CPU_LEVEL_AVX512 = 1 };
int cpu_matmul_level(void);
void cpu_matmul_set_level(int level);
/* Whether type has a fast (non-fallback) kernel at the current level. */
int cpu_matmul_is_fast(int type);

#endif
