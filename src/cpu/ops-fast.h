/* ops-fast.h: element-wise ops of the fast CPU backend (ops-fast.c); contracts as in backend.h. */
#ifndef EXSA_CPU_OPS_FAST_H
#define EXSA_CPU_OPS_FAST_H

#include "cpu/matmul.h"

void fast_swiglu(struct threadpool *tp, float *out, const float *gate, const float *up, long n);
void fast_add(struct threadpool *tp, float *y, const float *x, long n);
void fast_rmsnorm(struct threadpool *tp, float *y, const float *x, const float *w, int n_rows,
                  int dim, float eps);

#endif
