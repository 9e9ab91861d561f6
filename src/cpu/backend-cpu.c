/*
 * backend-cpu.c: the fast CPU backend: the reference ops table with the hot ops replaced:
 * matrix products by the SIMD kernels of matmul.c (8-bit activations, VNNI) and attention split
 * over (entry, head) pairs on the backend's thread pool. Everything else stays the reference op.
 * The pool is created with the backend and owned by it.
 *
 * Batch invariance: when the step gives each entry its job length (exsa_batch.job_len: the
 * length of the prompt it belongs to, 1 for a generated token), every matrix product of the
 * layers runs each entry with the kernel family the table picks for that length (decode below
 * MM_PREFILL_MIN_TOK, prefill from there: what the prompt or token would get alone), and the
 * head runs every output row with the decode family, whatever the step's size
 * (cpu_matmul_roles). Each family computes a token's row independently of the other tokens, so
 * a sequence gets the same results alone or batched with any others and however its prompt is
 * cut into chunks; a lone request runs the kernels it ran before. Without job lengths, a
 * product's kernel follows its own token count (the table's rule). Attention and the
 * element-wise ops work per entry (attn-avx512.c, ops-fast.c).
 */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu/attn.h"
#include "cpu/matmul.h"
#include "cpu/ops-fast.h"
#include "cpu/ops-ref.h"
#include "cpu/scratch.h"
#include "kvcache.h"

struct cpu_priv {
    struct threadpool *tp;
    float *moe; /* MoE scratch, grown on demand (first calls only) */
    size_t moe_floats;
    /* The step between begin and end (cpu_begin), when it has job lengths: dec[i] = 1 where
     * entry i takes the decode kernel family; n_step its entries (0: no job lengths or no step:
     * products go by their token count); in_head: the output rows' products have begun. */
    uint8_t *dec; /* [n_batch] */
    int n_batch, n_step;
    bool in_head;
};

static struct cpu_priv *priv(struct backend *be)
{
    return be->priv;
}

/* The step's kernel families, from its job lengths: what the table gives a call of that many
 * tokens (cpu_matmul_pick), so a lone prompt or token keeps its kernels. */
static int cpu_begin(struct backend *be, const struct step *st)
{
    struct cpu_priv *p = priv(be);
    p->n_step = 0;
    p->in_head = false;
    if (!st->job_len || st->n > p->n_batch)
        return 0; /* no job lengths (or a step larger than any engine makes): by token count */
    for (int i = 0; i < st->n; i++)
        p->dec[i] = st->job_len[i] < MM_PREFILL_MIN_TOK;
    p->n_step = st->n;
    return 0;
}

static int cpu_end(struct backend *be)
{
    priv(be)->n_step = 0;
    priv(be)->in_head = false;
    return 0;
}

/* The head starts with the gather of the output rows: the products after it are the head's. */
static int cpu_gather(struct backend *be, const struct step *st, float *dst, const float *src,
                      int r0, int n_rows, int dim)
{
    priv(be)->in_head = true;
    return ref_gather(be, st, dst, src, r0, n_rows, dim);
}

/* A product of the layers runs each entry with its family and the head's every output row with
 * the decode family (a lone decode token or prompt end takes gemv there too); with no job
 * lengths, the kernel follows the call's token count. */
static void matmul_in_step(const struct cpu_priv *p, const struct tensor *w, int expert,
                           const float *x, float *y, int n_tok)
{
    if (p->n_step != 0 && p->in_head)
        cpu_matmul_family(p->tp, w, expert, x, y, n_tok, true);
    else if (p->n_step != 0 && n_tok == p->n_step)
        cpu_matmul_roles(p->tp, w, expert, x, y, n_tok, p->dec);
    else
        cpu_matmul(p->tp, w, expert, x, y, n_tok);
}

static int cpu_matmul_op(struct backend *be, const struct tensor *w, int expert, const float *x,
                         float *y, int n_tok)
{
    matmul_in_step(priv(be), w, expert, x, y, n_tok);
    return 0;
}

/* Norms and vectors stay as they are; matrices may get a repacked copy. */
static int cpu_prepare(struct backend *be, struct tensor *w)
{
    return w->n_dims >= 2 && w->ne[1] > 1 ? cpu_matmul_prepare(w) : 0;
}

static void cpu_unprepare(struct backend *be, struct tensor *w)
{
    cpu_matmul_release(w);
}

struct attn_job {
    float *out;
    const float *q;
    struct kv_cache *kv;
    const struct step *b;
    int a, n_heads, n_kv_heads, head_dim;
    int n_blocks;
    const int32_t *block_start; /* n_blocks + 1 entry indices */
};

/* Plain path for one lane: softmax(q k^T / sqrt(hd)) v over positions 0..pos. */
static void attend_lane(const struct attn_block *ab, int l, float *sc)
{
    const int hd = ab->head_dim, np = ab->lane_pos[l] + 1;
    const float *qh = ab->lane_q[l];
    const float scale = 1.0f / sqrtf((float)hd);
    float mx = -INFINITY, sum = 0.0f;
    for (int p = 0; p < np; p++) {
        sc[p] = cpu_dot_f32(qh, kv_k(ab->kv, ab->a, ab->seq, p) + ab->g * hd, hd) * scale;
        mx = sc[p] > mx ? sc[p] : mx;
    }
    for (int p = 0; p < np; p++) {
        sc[p] = expf(sc[p] - mx);
        sum += sc[p];
    }
    float *oh = ab->lane_out[l];
    memset(oh, 0, sizeof(float) * hd);
    for (int p = 0; p < np; p++) {
        const float *vp = kv_v(ab->kv, ab->a, ab->seq, p) + ab->g * hd;
        const float w = sc[p] / sum;
        for (int k = 0; k < hd; k++)
            oh[k] += w * vp[k];
    }
}

/* The lanes of item `it`: entry block it / n_kv_heads, KV head it % n_kv_heads, every query
 * head of that KV head for every entry of the block. */
static void fill_block(const struct attn_job *j, int it, struct attn_block *ab)
{
    const int g = it % j->n_kv_heads, blk = it / j->n_kv_heads;
    const int per_g = j->n_heads / j->n_kv_heads, hd = j->head_dim;
    const int i0 = j->block_start[blk], i1 = j->block_start[blk + 1];
    *ab = (struct attn_block){.kv = j->kv, .a = j->a, .seq = j->b->seq[i0], .g = g, .head_dim = hd};
    for (int i = i0; i < i1; i++)
        for (int h = g * per_g; h < (g + 1) * per_g; h++) {
            int l = ab->n_lanes++;
            ab->lane_pos[l] = j->b->pos[i];
            ab->lane_q[l] = j->q + ((size_t)i * j->n_heads + h) * hd;
            ab->lane_out[l] = j->out + ((size_t)i * j->n_heads + h) * hd;
            if (j->b->pos[i] + 1 > ab->n_pos)
                ab->n_pos = j->b->pos[i] + 1;
        }
}

static _Thread_local struct scratch tl_attn;

static void attn_worker(void *arg, int ith, int nth)
{
    const struct attn_job *j = arg;
    const int items = j->n_blocks * j->n_kv_heads;
    /* attn_block_avx512: 16 x head_dim transposed queries + 16 scores per position */
    const size_t floats = 16 * ((size_t)j->head_dim + (size_t)j->kv->n_ctx + 1);
    float *work = scratch_get(&tl_attn, sizeof(float) * floats);
    for (int it = ith; work && it < items; it += nth) {
        struct attn_block ab;
        fill_block(j, it, &ab);
        if (attn_block_avx512(&ab, work) != 0)
            for (int l = 0; l < ab.n_lanes; l++)
                attend_lane(&ab, l, work);
    }
}

/* Splits the batch into blocks of consecutive entries of one sequence, at most 16 lanes each;
 * returns the block count (starts[n_blocks] = n). */
static int make_blocks(const struct step *b, int lanes_per_entry, int32_t *starts)
{
    const int per_block = lanes_per_entry <= 16 ? 16 / lanes_per_entry : 1;
    int n = 0;
    for (int i = 0; i < b->n; i++)
        if (i == 0 || b->seq[i] != b->seq[i - 1] || i - starts[n - 1] >= per_block)
            starts[n++] = i;
    starts[n] = b->n;
    return n;
}

static int cpu_attention(struct backend *be, const struct step *b, float *out, const float *q,
                         const float *k, const float *v, struct kv_cache *kv, int a, int n_heads,
                         int n_kv_heads, int head_dim)
{
    if (n_heads / n_kv_heads > 16)
        return ref_attention(be, b, out, q, k, v, kv, a, n_heads, n_kv_heads, head_dim);
    int rc = ref_kv_store(b, kv, a, k, v);
    if (rc < 0)
        return rc;
    int32_t starts[b->n + 1];
    struct attn_job j = {out, q, kv, b, a, n_heads, n_kv_heads, head_dim, 0, starts};
    j.n_blocks = make_blocks(b, n_heads / n_kv_heads, starts);
    tp_run(priv(be)->tp, attn_worker, &j);
    return 0;
}

static bool grow_moe(struct cpu_priv *p, size_t floats)
{
    float *m = realloc(p->moe, sizeof(float) * floats);
    if (!m)
        return false;
    p->moe = m;
    p->moe_floats = floats;
    return true;
}

/* One expert's product over its c gathered rows: by their count without job lengths; else the
 * first n_dec rows with the decode family, the rest with the prefill family. */
static void expert_matmul(const struct cpu_priv *p, const struct tensor *w, int e, const float *x,
                          float *y, int c, int n_dec, size_t ldx, size_t ldy)
{
    if (p->n_step == 0) {
        cpu_matmul(p->tp, w, e, x, y, c);
        return;
    }
    cpu_matmul_family(p->tp, w, e, x, y, n_dec, true);
    cpu_matmul_family(p->tp, w, e, x + (size_t)n_dec * ldx, y + (size_t)n_dec * ldy, c - n_dec,
                      false);
}

/* The rows routed to expert e, as (token, weight) pairs in rows/rw and their inputs in xg: with
 * job lengths, the entries of the decode family first. Returns the count; *n_dec: how many of
 * them are of the decode family. */
static int gather_expert(const struct cpu_priv *p, int e, const float *x, const int *ids,
                         const float *wts, int n_tok, int k, int dim, int32_t *rows, float *rw,
                         float *xg, int *n_dec)
{
    const uint8_t *dec = p->n_step == n_tok ? p->dec : NULL;
    int c = 0;
    *n_dec = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int t = 0; t < n_tok; t++) {
            if (dec ? (dec[t] != 0) != (pass == 0) : pass == 1)
                continue;
            for (int j = 0; j < k; j++)
                if (ids[(size_t)t * k + j] == e) {
                    rows[c] = t, rw[c] = wts[(size_t)t * k + j];
                    memcpy(xg + (size_t)c++ * dim, x + (size_t)t * dim, sizeof(float) * dim);
                }
        }
        if (pass == 0)
            *n_dec = c;
    }
    return c;
}

/* MoE over a batch, grouped by expert: each expert's tokens go through its three matrices as
 * one matmul of many rows (the reference op runs one token at a time). */
static int cpu_moe(struct backend *be, float *out, const float *x, const struct layer *l, int n_tok,
                   int dim, int n_experts, int k, int fe)
{
    struct cpu_priv *p = priv(be);
    size_t n = (size_t)n_tok;
    size_t need = n * n_experts + n * k * 2 + n * dim * 2 + n * fe * 2;
    if (n_experts > 512 || k > 64 || (need > p->moe_floats && !grow_moe(p, need)))
        return ref_moe(be, out, x, l, n_tok, dim, n_experts, k, fe);
    float *logits = p->moe, *wts = logits + n * n_experts;
    int *ids = (int *)(wts + n * k);
    float *xg = (float *)(ids + n * k), *yg = xg + n * dim, *g = yg + n * dim, *u = g + n * fe;
    matmul_in_step(p, &l->router, 0, x, logits, n_tok);
    for (int t = 0; t < n_tok; t++)
        moe_route(logits + (size_t)t * n_experts, l->exp_bias.data, n_experts, k,
                  ids + (size_t)t * k, wts + (size_t)t * k);
    memset(out, 0, sizeof(float) * n * dim);
    int32_t rows[n_tok];
    float rw[n_tok];
    for (int e = 0; e < n_experts; e++) {
        int n_dec;
        const int c = gather_expert(p, e, x, ids, wts, n_tok, k, dim, rows, rw, xg, &n_dec);
        if (c == 0)
            continue;
        expert_matmul(p, &l->gate_exps, e, xg, g, c, n_dec, (size_t)dim, (size_t)fe);
        expert_matmul(p, &l->up_exps, e, xg, u, c, n_dec, (size_t)dim, (size_t)fe);
        be->ops->swiglu(be, g, g, u, (long)c * fe);
        expert_matmul(p, &l->down_exps, e, g, yg, c, n_dec, (size_t)fe, (size_t)dim);
        for (int r = 0; r < c; r++) {
            float *o = out + (size_t)rows[r] * dim;
            const float *yr = yg + (size_t)r * dim;
            for (int i = 0; i < dim; i++)
                o[i] += rw[r] * yr[i];
        }
    }
    return 0;
}

static int cpu_swiglu(struct backend *be, float *out, const float *gate, const float *up, long n)
{
    fast_swiglu(priv(be)->tp, out, gate, up, n);
    return 0;
}

static int cpu_add(struct backend *be, float *y, const float *x, long n)
{
    fast_add(priv(be)->tp, y, x, n);
    return 0;
}

static int cpu_rmsnorm(struct backend *be, float *y, const float *x, const struct tensor *w,
                       int n_rows, int dim, float eps)
{
    fast_rmsnorm(priv(be)->tp, y, x, w->data, n_rows, dim, eps);
    return 0;
}

static void cpu_free(struct backend *be)
{
    if (!be)
        return;
    struct cpu_priv *p = priv(be);
    if (p) {
        tp_free(p->tp);
        free(p->moe);
        free(p->dec);
        free(p);
    }
    free(be);
}

/* The hot ops replaced; memory, embed, rope and the short conv are the reference ones (gather
 * too, marking the head's start). */
static const struct backend_ops cpu_ops = {
    .name = "cpu",
    .free = cpu_free,
    CPU_HOST_MEMORY_OPS,
    .prepare = cpu_prepare,
    .unprepare = cpu_unprepare,
    .begin = cpu_begin,
    .end = cpu_end,
    .matmul = cpu_matmul_op,
    .embed = ref_embed,
    .rmsnorm = cpu_rmsnorm,
    .rope = ref_rope,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .shortconv = ref_shortconv,
    .attention = cpu_attention,
    .moe = cpu_moe,
    .gather = cpu_gather,
};

struct backend *backend_cpu_create(const struct backend_config *c)
{
    struct backend *be = calloc(1, sizeof(*be));
    struct cpu_priv *p = calloc(1, sizeof(*p));
    if (p)
        p->n_batch = c && c->n_batch > 0 ? c->n_batch : 512;
    if (!be || !p || !(p->dec = malloc((size_t)p->n_batch)) ||
        !(p->tp = tp_create(c ? c->n_threads : 0))) {
        if (p)
            free(p->dec);
        free(p);
        free(be);
        return NULL;
    }
    be->ops = &cpu_ops;
    be->n_threads = tp_n_threads(p->tp);
    be->host_memory = true;
    be->priv = p;
    return be;
}
