/*
 * fastmm.h: the two specialised matmul paths that plug into cpu_matmul (matmul.c):
 * gemv_* (decode: few tokens, streams the weights at memory bandwidth; cpu/gemv*.c) and
 * gemm_* (prefill: many tokens, compute-bound, may use weights repacked at load; cpu/gemm*.c).
 * cpu_matmul tries gemm_run, then gemv_run, then its own kernels; a path that does not handle
 * a call (type, size, CPU features) returns false and leaves y untouched.
 */
#ifndef EXSA_CPU_FASTMM_H
#define EXSA_CPU_FASTMM_H

#include <stdbool.h>

#include "cpu/matmul.h"

/* Same contract as cpu_matmul. */
bool gemv_run(struct threadpool *tp, const struct tensor *w, int expert, const float *x,
              float *y, int n_tok);
bool gemm_run(struct threadpool *tp, const struct tensor *w, int expert, const float *x,
              float *y, int n_tok);
/* Called by cpu_matmul_prepare / cpu_matmul_release for every weight of an engine. A repacked
 * copy goes in w->be_data (the original stays in w->data). Returns 0 or a negative code. */
int gemm_prepare(struct tensor *w);
void gemm_release(struct tensor *w);

#endif
