/*
 * gemv.c: the decode matmul path (fastmm.h): calls of 1..GV_MAX_CALL_TOK tokens for Q4_0, Q8_0,
 * Q4_K, Q5_K, Q6_K, F16, BF16 and F32 weights, on CPUs with AVX-512 F/BW/VL/DQ/VNNI/VBMI.
 *
 * A call quantizes (or rearranges) the activations once on the calling thread into the format of
 * the weight type (gemv-impl.h), then the pool threads stream W through the kernels of
 * gemv-avx512.c, all tokens per pass, taking chunks of consecutive rows in order from one atomic
 * counter (long linear reads per thread, and no thread idles while another one is behind:
 * decode is bound by memory bandwidth). Scratch: one thread-local buffer that only grows.
 * Anything else (types, CPUs, cpu_matmul's plain C level, longer calls) returns false and
 * cpu_matmul runs its own kernels. Caller: cpu_matmul (matmul.c); tests/test_gemv.c.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "cpu/fastmm.h"
#include "cpu/scratch.h"
#include "cpu/gemv-impl.h"
#include "quant.h"

#define GV_MAX_CALL_TOK 15 /* larger calls: gemm (>= 16 tokens) or cpu_matmul's tiled kernels */

static int g_ok = -1; /* CPU has the kernels' features; -1 until checked */

static bool cpu_ok(void)
{
    if (g_ok < 0) {
        g_ok = 0;
#if defined(__x86_64__) && defined(__GNUC__)
        __builtin_cpu_init();
        g_ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi") &&
               __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
               __builtin_cpu_supports("bmi2");
#endif
    }
    return g_ok;
}

static _Thread_local struct scratch tl_act;

/* A 64-byte aligned buffer of at least size bytes, kept for the thread's next calls. */
static uint8_t *act_buffer(size_t size)
{
    return scratch_get(&tl_act, size);
}

/* Bytes between tokens' activations: a multiple of 64 that is not one of 4096, so that the
 * tokens' current lines do not all fall in one L1 set. */
static size_t act_stride(size_t bytes)
{
    size_t s = (bytes + 63) & ~(size_t)63;
    return s % 4096 == 0 ? s + 256 : s;
}

/* A call shared by the pool's threads: rows are handed out in chunks, in order, from one atomic
 * counter, so each thread still reads long runs of consecutive rows while a thread slowed down
 * (another process on its core, a slower memory channel) leaves the rest to the others. Chunks
 * shrink with the rows left (guided): long runs first, short ones at the end so that the
 * threads finish together (the last chunk is what one thread waits for at each of the ~100
 * matmuls of a token). */
struct call {
    struct gv_job j;
    int64_t min_chunk; /* rows per chunk at least (~16 KB of weights) */
    int div;           /* chunk = rows left / div, at least min_chunk */
    atomic_llong next; /* first row not yet handed out */
};

static void worker(void *arg, int ith, int nth)
{
    struct call *c = arg;
    const int64_t N = c->j.N;
    long long r0 = atomic_load_explicit(&c->next, memory_order_relaxed);
    for (;;) {
        if (r0 >= N)
            break;
        int64_t n = (N - r0) / c->div;
        n = n < c->min_chunk ? c->min_chunk : n;
        if (!atomic_compare_exchange_weak_explicit(&c->next, &r0, r0 + n, memory_order_relaxed,
                                                   memory_order_relaxed))
            continue; /* r0 now holds the counter's value */
        gv_avx512_rows(&c->j, r0, r0 + n < N ? r0 + n : N);
        r0 = atomic_load_explicit(&c->next, memory_order_relaxed);
    }
}

/* Rows per chunk at least: ~16 KB of weights (a run the prefetcher can follow). */
static int64_t min_chunk_rows(size_t row_bytes)
{
    return (int64_t)((16384 + row_bytes - 1) / row_bytes);
}

/* Whether this call is one for the decode path: type, shape, tokens and CPU. */
static bool handles(const struct tensor *w, int n_tok)
{
    const int kind = gv_act_kind(w->type);
    const int64_t K = w->ne[0];
    if (kind == GV_ACT_NONE || n_tok < 1 || n_tok > GV_MAX_CALL_TOK || K <= 0 || w->ne[1] <= 0)
        return false;
    if (dtype_row_size(w->type, K) == 0)
        return false;
    if (cpu_matmul_level() < CPU_LEVEL_AVX512 || !cpu_ok())
        return false;
    return true;
}

bool gemv_run(struct threadpool *tp, const struct tensor *w, int expert, const float *x,
              float *y, int n_tok)
{
    if (!handles(w, n_tok))
        return false;
    const int64_t K = w->ne[0], N = w->ne[1];
    const int kind = gv_act_kind(w->type);
    const size_t row_bytes = dtype_row_size(w->type, K);
    struct call c;
    struct gv_job j = {
        .type = w->type, .n_tok = n_tok, .row_bytes = row_bytes, .K = K, .N = N, .y = y,
        .ldy = N,
    };
    j.w = (const uint8_t *)w->data + (size_t)expert * (size_t)N * row_bytes;
    if (kind == GV_ACT_F32 && n_tok == 1) {
        j.act = (const uint8_t *)x;
        j.act_stride = (size_t)K * sizeof(float);
    } else {
        const size_t stride = act_stride(gv_act_bytes(kind, K));
        const bool side = kind == GV_ACT_K8 && n_tok >= 2;
        const size_t side_bytes = side ? (size_t)(K / 256) * GV_SIDE_BYTES : 0;
        uint8_t *a = act_buffer(stride * (size_t)n_tok + side_bytes);
        if (!a)
            return false;
        for (int t = 0; t < n_tok; t++)
            gv_avx512_quantize(kind, x + (size_t)t * K, K, a + (size_t)t * stride);
        j.act = a;
        j.act_stride = stride;
        if (side) {
            uint8_t *sd = a + stride * (size_t)n_tok; /* 64-byte aligned: stride is */
            gv_avx512_side(&j, sd);
            j.side = sd;
        }
    }
    c.j = j;
    c.min_chunk = min_chunk_rows(row_bytes);
    c.div = 3 * tp_n_threads(tp);
    atomic_init(&c.next, 0);
    tp_run(tp, worker, &c);
    return true;
}
