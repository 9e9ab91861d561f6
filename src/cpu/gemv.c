/*
 * gemv.c: the decode matmul path (MM_GEMV of matmul.c's table): calls of any number of tokens
 * for the types whose table row names an activation format (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K, F16,
 * BF16, F32), at level VBMI (features.h). The table gives it the calls of fewer than
 * MM_PREFILL_MIN_TOK tokens, and cpu_matmul_roles the decode family's tokens of any call
 * (matmul.h): a token's result is the same whatever the other tokens of the call (gemv-impl.h).
 *
 * A call quantizes (or rearranges) the activations once on the calling thread into the format of
 * the weight type (gemv-impl.h), then the pool threads stream W through the kernels of
 * gemv-avx512.c, all tokens per pass, taking chunks of consecutive rows in order from one atomic
 * counter (long linear reads per thread, and no thread idles while another one is behind:
 * decode is bound by memory bandwidth). Scratch: one thread-local buffer that only grows.
 * A call of more than GV_SIDE_TOK tokens quantizes on the pool; a failed scratch allocation
 * returns false: the row's fallback runs.
 * Caller: cpu_matmul (matmul.c).
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "cpu/gemv-impl.h"
#include "cpu/matmul-impl.h"
#include "cpu/scratch.h"

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

/* The activations of a call being quantized by the pool: side block ranges split among the
 * threads (each block's tokens, then its side records). */
struct quant_call {
    const float *x;
    int kind;
    uint8_t *side; /* NULL: no side data */
    const struct gv_job *j;
};

static void quantize_blocks(const struct quant_call *q, int b0, int b1)
{
    const struct gv_job *j = q->j;
    const int t1 = b1 * GV_SIDE_TOK < j->n_tok ? b1 * GV_SIDE_TOK : j->n_tok;
    for (int t = b0 * GV_SIDE_TOK; t < t1; t++)
        gv_avx512_quantize(q->kind, q->x + (size_t)t * j->K, j->K,
                           (uint8_t *)j->act + (size_t)t * j->act_stride);
    if (q->side)
        gv_avx512_side(j, q->side, b0, b1);
}

static void quantize_worker(void *arg, int ith, int nth)
{
    const struct quant_call *q = arg;
    const int nb = (q->j->n_tok + GV_SIDE_TOK - 1) / GV_SIDE_TOK;
    quantize_blocks(q, nb * ith / nth, nb * (ith + 1) / nth);
}

/* Quantizes (or rearranges) the tokens' activations into the job's format, in one buffer with
 * the side data of a multi-token K8 call after them; calls of several side blocks (prefill)
 * share the work among the pool's threads. False if out of memory. */
static bool quantize_all(struct threadpool *tp, const float *x, int kind, struct gv_job *j)
{
    if (kind == GV_ACT_F32 && j->n_tok == 1) { /* x as it is */
        j->act = (const uint8_t *)x;
        j->act_stride = (size_t)j->K * sizeof(float);
        return true;
    }
    const size_t stride = act_stride(gv_act_bytes(kind, j->K));
    const bool side = kind == GV_ACT_K8 && j->n_tok >= 2;
    const size_t side_bytes = side ? gv_side_bytes(j) : 0;
    uint8_t *a = act_buffer(stride * (size_t)j->n_tok + side_bytes);
    if (!a)
        return false;
    j->act = a;
    j->act_stride = stride;
    struct quant_call q = {x, kind, side ? a + stride * (size_t)j->n_tok : NULL, j};
    if (j->n_tok > GV_SIDE_TOK && tp_n_threads(tp) > 1)
        tp_run(tp, quantize_worker, &q);
    else
        quantize_blocks(&q, 0, (j->n_tok + GV_SIDE_TOK - 1) / GV_SIDE_TOK);
    j->side = q.side; /* 64-byte aligned: stride is */
    return true;
}

bool gemv_run(const struct mm_call *mc)
{
    const int kind = mc->route->gv_act;
    if (kind == GV_ACT_NONE || mc->n_tok < 1 || mc->row_bytes == 0)
        return false; /* row_bytes 0: K is no multiple of the block size */
    struct call c = {
        .j = {.type = mc->type,
              .n_tok = mc->n_tok,
              .w = mc->w,
              .row_bytes = mc->row_bytes,
              .K = mc->K,
              .N = mc->N,
              .y = mc->y,
              .ldy = mc->N},
        .min_chunk = min_chunk_rows(mc->row_bytes),
        .div = 3 * tp_n_threads(mc->tp),
    };
    if (!quantize_all(mc->tp, mc->x, kind, &c.j))
        return false;
    atomic_init(&c.next, 0);
    tp_run(mc->tp, worker, &c);
    return true;
}
