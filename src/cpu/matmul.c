/*
 * matmul.c: cpu_matmul, the dispatcher of the fast CPU matrix product (see matmul.h): picks the
 * kernel family for the weight type and the CPU, quantizes the activations once per call when
 * the kernel wants 8-bit ones, and splits the N rows across the pool's threads.
 *
 * Also the plain C paths: activation quantization and the fallback kernel (dequantize one row
 * into a per-thread buffer, f32 dot with every token), which is what any type without a SIMD
 * kernel and any CPU without AVX-512 VNNI runs. Scratch lives in thread-local buffers that only
 * grow, so the step loop does not allocate after the first calls.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/matmul-impl.h"
#include "cpu/matmul.h"
#include "cpu/scratch.h"
#include "cpu/fastmm.h"
#include "quant.h"

static int g_level = -1; /* current kernel level; -1 until detected */

static int detect_level(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
        __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
        __builtin_cpu_supports("avx2"))
        return CPU_LEVEL_AVX512;
#endif
    return CPU_LEVEL_C;
}

int cpu_matmul_level(void)
{
    if (g_level < 0)
        g_level = detect_level();
    return g_level;
}

void cpu_matmul_set_level(int level)
{
    int max = detect_level();
    g_level = level < max ? (level < 0 ? 0 : level) : max;
}

static bool is_q8_type(int type)
{
    return type == EXSA_DTYPE_Q4_0 || type == EXSA_DTYPE_Q8_0 || type == EXSA_DTYPE_Q4_K ||
           type == EXSA_DTYPE_Q5_K || type == EXSA_DTYPE_Q6_K;
}

static bool is_float_type(int type)
{
    return type == EXSA_DTYPE_F32 || type == EXSA_DTYPE_F16 || type == EXSA_DTYPE_BF16;
}

int cpu_matmul_is_fast(int type)
{
    return cpu_matmul_level() >= CPU_LEVEL_AVX512 && (is_q8_type(type) || is_float_type(type));
}

int cpu_matmul_prepare(struct tensor *w)
{
    return w->be_data ? 0 : gemm_prepare(w);
}

void cpu_matmul_release(struct tensor *w)
{
    gemm_release(w);
}

/* ---- thread-local scratch ------------------------------------------------------------------- */

static _Thread_local struct scratch tl_act, tl_row;

/* ---- activation quantization (plain C) ------------------------------------------------------ */

/* One token: xq[k] = round(x[k] / dx[b]) with dx[b] = max|x| / 127 per 32-block b; s16[h] = dx
 * times the sum of xq over 16-element half h. K a multiple of 32. */
static void quantize_c(const float *x, int64_t K, int8_t *xq, float *dx, float *s16)
{
    for (int64_t b = 0; b < K / 32; b++) {
        const float *xb = x + 32 * b;
        float amax = 0;
        for (int i = 0; i < 32; i++)
            amax = fmaxf(amax, fabsf(xb[i]));
        const float d = amax / 127, id = d != 0 ? 1 / d : 0;
        int sum[2] = {0, 0};
        for (int i = 0; i < 32; i++) {
            int q = (int)lrintf(xb[i] * id);
            xq[32 * b + i] = (int8_t)q;
            sum[i / 16] += q;
        }
        dx[b] = d;
        s16[2 * b] = d * sum[0];
        s16[2 * b + 1] = d * sum[1];
    }
}

/* ---- fallback kernel: dequantize a row, f32 dot with every token ---------------------------- */

static float dot_f32(const float *a, const float *b, int64_t n)
{
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += a[i + j] * b[i + j];
    for (; i < n; i++)
        s[0] += a[i] * b[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

static void rows_generic(const struct mm_job *j, int r0, int r1, int n_tok)
{
    float *row = scratch_get(&tl_row, sizeof(float) * (size_t)j->K);
    for (int r = r0; r < r1; r++) {
        int rc = row ? dequantize_row(j->type, j->w + (size_t)r * j->row_bytes, row, j->K) : -1;
        for (int t = 0; t < n_tok; t++)
            j->y[(size_t)t * j->N + r] = rc == 0 ? dot_f32(row, j->x + (size_t)t * j->K, j->K) : 0;
    }
}

/* ---- the threaded call ---------------------------------------------------------------------- */

enum path { PATH_GENERIC, PATH_Q8, PATH_F };

struct mm_call {
    struct mm_job job;
    enum path path;
    int n_tok;
    int8_t *xq;
    float *dx, *s16;
};

static void quantize_tokens(const struct mm_call *c, int t0, int t1)
{
    const int64_t K = c->job.K;
    for (int t = t0; t < t1; t++) {
        const float *x = c->job.x + (size_t)t * K;
        int8_t *xq = c->xq + (size_t)t * K;
        float *dx = c->dx + (size_t)t * (K / 32), *s16 = c->s16 + (size_t)t * (K / 16);
        if (cpu_matmul_level() < CPU_LEVEL_AVX512 || mm_avx512_quantize(x, K, xq, dx, s16) != 0)
            quantize_c(x, K, xq, dx, s16);
    }
}

static void quantize_worker(void *arg, int ith, int nth)
{
    const struct mm_call *c = arg;
    quantize_tokens(c, c->n_tok * ith / nth, c->n_tok * (ith + 1) / nth);
}

static void matmul_worker(void *arg, int ith, int nth)
{
    const struct mm_call *c = arg;
    const int r0 = (int)(c->job.N * ith / nth), r1 = (int)(c->job.N * (ith + 1) / nth);
    if (r0 >= r1)
        return;
    int done = -1;
    if (c->path == PATH_Q8)
        done = mm_avx512_q8(&c->job, r0, r1, 0, c->n_tok);
    else if (c->path == PATH_F)
        done = mm_avx512_f(&c->job, r0, r1, 0, c->n_tok);
    if (done != 0)
        rows_generic(&c->job, r0, r1, c->n_tok);
}

/* Points c at the quantized-activation scratch of this thread; false if out of memory. */
static bool act_scratch(struct mm_call *c)
{
    const size_t K = (size_t)c->job.K, n = (size_t)c->n_tok;
    const size_t q_bytes = (n * K + 63) & ~(size_t)63, d_bytes = (n * K / 32 * 4 + 63) & ~63ul;
    uint8_t *p = scratch_get(&tl_act, q_bytes + d_bytes + n * K / 16 * 4);
    if (!p)
        return false;
    c->xq = (int8_t *)p;
    c->dx = (float *)(p + q_bytes);
    c->s16 = (float *)(p + q_bytes + d_bytes);
    c->job.a = (struct act8){c->xq, c->dx, c->s16, c->job.K};
    return true;
}

void cpu_matmul(struct threadpool *tp, const struct tensor *w, int expert, const float *x,
                float *y, int n_tok)
{
    if (gemm_run(tp, w, expert, x, y, n_tok) || gemv_run(tp, w, expert, x, y, n_tok))
        return;
    const int64_t K = w->ne[0], N = w->ne[1];
    const size_t row_bytes = dtype_row_size(w->type, K);
    struct mm_call c = {
        .job = {.type = w->type, .row_bytes = row_bytes, .K = K, .N = N, .x = x, .y = y},
        .n_tok = n_tok,
    };
    c.job.w = (const uint8_t *)w->data + (size_t)expert * (size_t)N * row_bytes;
    c.path = !cpu_matmul_is_fast(w->type) ? PATH_GENERIC
             : is_float_type(w->type)     ? PATH_F
                                          : PATH_Q8;
    if (c.path == PATH_Q8 && !act_scratch(&c))
        c.path = PATH_GENERIC;
    if (c.path == PATH_Q8) {
        if (n_tok >= 2 * tp_n_threads(tp))
            tp_run(tp, quantize_worker, &c);
        else
            quantize_tokens(&c, 0, n_tok);
    }
    tp_run(tp, matmul_worker, &c);
}
