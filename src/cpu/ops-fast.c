/*
 * ops-fast.c: the element-wise ops of the fast CPU backend (SwiGLU, RMSNorm, residual add) with
 * AVX-512 and split over the pool's threads when the batch is large enough to pay for the
 * wake-up (prefill); small calls (decode) run on the caller. Plain C where AVX-512 is missing.
 */
#include <math.h>
#include <stdbool.h>

#include "cpu/features.h"
#include "cpu/ops-fast.h"
#include "cpu/vmath.h"

#define PAR_MIN 65536 /* elements below which one thread does it all */

static TGT_AVX512F void swiglu_avx512(float *out, const float *g, const float *u, long n)
{
    long i = 0;
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
        __m512 x = _mm512_loadu_ps(g + i);
        __m512 s =
            _mm512_div_ps(x, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(s, _mm512_loadu_ps(u + i)));
    }
    if (i < n) { /* the tail in the same vector arithmetic: an element's result does not
                  * depend on where the call's rows split it (batch invariance) */
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 x = _mm512_maskz_loadu_ps(m, g + i);
        __m512 s =
            _mm512_div_ps(x, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, u + i)));
    }
}

static TGT_AVX512F void add_avx512(float *y, const float *x, long n)
{
    long i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(y + i), _mm512_loadu_ps(x + i)));
    for (; i < n; i++)
        y[i] += x[i];
}

static TGT_AVX512F void rmsnorm_row_avx512(float *y, const float *x, const float *w, int dim,
                                           float eps)
{
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= dim; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        acc = _mm512_fmadd_ps(v, v, acc);
    }
    float ss = _mm512_reduce_add_ps(acc);
    for (; i < dim; i++)
        ss += x[i] * x[i];
    const float scale = 1.0f / sqrtf(ss / dim + eps);
    const __m512 sv = _mm512_set1_ps(scale);
    for (i = 0; i + 16 <= dim; i += 16)
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), sv),
                                              _mm512_loadu_ps(w + i)));
    for (; i < dim; i++)
        y[i] = x[i] * scale * w[i];
}

static void rmsnorm_row_c(float *y, const float *x, const float *w, int dim, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < dim; i++)
        ss += (double)x[i] * x[i];
    const float scale = 1.0f / sqrtf((float)(ss / dim) + eps);
    for (int i = 0; i < dim; i++)
        y[i] = x[i] * scale * w[i];
}

struct ew_job {
    int kind; /* 0 swiglu, 1 add, 2 rmsnorm */
    float *y;
    const float *a, *b;
    long n; /* elements (swiglu, add) or rows (rmsnorm) */
    int dim;
    float eps;
};

static void run_range(const struct ew_job *j, long i0, long i1)
{
    const bool v = cpu_has(CPU_LEVEL_AVX512F);
    if (j->kind == 0) {
        if (v)
            swiglu_avx512(j->y + i0, j->a + i0, j->b + i0, i1 - i0);
        else
            for (long i = i0; i < i1; i++)
                j->y[i] = j->a[i] / (1.0f + expf(-j->a[i])) * j->b[i];
    } else if (j->kind == 1) {
        if (v)
            add_avx512(j->y + i0, j->a + i0, i1 - i0);
        else
            for (long i = i0; i < i1; i++)
                j->y[i] += j->a[i];
    } else {
        for (long r = i0; r < i1; r++)
            (v ? rmsnorm_row_avx512 : rmsnorm_row_c)(j->y + r * j->dim, j->a + r * j->dim, j->b,
                                                     j->dim, j->eps);
    }
}

static void ew_worker(void *arg, int ith, int nth)
{
    const struct ew_job *j = arg;
    long i0 = j->n * ith / nth, i1 = j->n * (ith + 1) / nth;
    if (j->kind != 2) /* keep vector-width chunks */
        i0 = i0 & ~15L, i1 = ith == nth - 1 ? j->n : i1 & ~15L;
    run_range(j, i0, i1);
}

static void run(struct threadpool *tp, const struct ew_job *j, long elements)
{
    if (elements < PAR_MIN || tp_n_threads(tp) < 2)
        run_range(j, 0, j->n);
    else
        tp_run(tp, ew_worker, (void *)j);
}

void fast_swiglu(struct threadpool *tp, float *out, const float *gate, const float *up, long n)
{
    struct ew_job j = {0, out, gate, up, n, 0, 0};
    run(tp, &j, n);
}

void fast_add(struct threadpool *tp, float *y, const float *x, long n)
{
    struct ew_job j = {1, y, x, NULL, n, 0, 0};
    run(tp, &j, n);
}

void fast_rmsnorm(struct threadpool *tp, float *y, const float *x, const float *w, int n_rows,
                  int dim, float eps)
{
    struct ew_job j = {2, y, x, w, n_rows, dim, eps};
    run(tp, &j, (long)n_rows * dim);
}
