/*
 * ops-table.cu: the seam's ops on the CUDA backend. Each op checks its arguments, decides at
 * record time which kernels run (matrix-vector path for up to MMV_MAX_N tokens, cuBLAS past
 * it), and records them (cu_record): the same calls record the same op list, which is what lets
 * backend-cuda.cu replay a captured graph.
 *
 * An RMSNorm of a few rows is not run at once but kept pending (c->pend): the products that read
 * its output norm their input on the way in (q, k and v, or gate and up, all from one norm), and
 * the norm is only materialized when something else reads its output or overwrites its input;
 * when its output is overwritten first, it is dropped. Every op says what it reads and writes
 * (touch) so the pending norm stays correct. MoE inputs are quantized into c->q8 (q8_tag says
 * which buffer it holds).
 */
#include <string.h>

#include "cuda/cuda.h"

#define REC(fn, a) cu_record(c, fn, #fn, &(a), sizeof(a))

/* An op's result for its caller: in a step the errors come at end(); outside one the op has
 * run and finished, and its error (if any) is returned. */
static int done(struct cuda_be *c)
{
    if (c->in_step)
        return 0;
    int rc = c->err;
    c->err = 0;
    return rc;
}

static int bad(struct cuda_be *c, int code, const char *what)
{
    cu_fail(c, code, what, cudaSuccess);
    return code;
}

/* The quantized scratches no longer match x (x is being written). */
static void invalidate(struct cuda_be *c, const float *x)
{
    if (c->q8_tag.src == x)
        c->q8_tag.src = NULL;
    if (c->mq_tag.src == x)
        c->mq_tag.src = NULL;
}

/* Whether a scratch tagged t holds x [n][K] quantized (only known within a step). */
static bool holds(const struct cuda_be *c, const struct qtag *t, const float *x, int n, int64_t K)
{
    return c->in_step && t->src == x && t->n >= n && t->K == K;
}

/* The scratch tagged t now holds x [n][K] quantized (kept within a step only). */
static void tag(const struct cuda_be *c, struct qtag *t, const float *x, int n, int64_t K)
{
    *t = qtag{c->in_step ? x : NULL, n, K};
}

/* ---- the pending norm -------------------------------------------------------------------------- */

struct PACKED norm_args {
    float *y;
    const float *x, *w;
    int rows, dim;
    float eps;
};

static void run_norm(struct cuda_be *c, const void *p)
{
    const struct norm_args *a = (const struct norm_args *)p;
    cu_rmsnorm(c, a->y, a->x, a->w, a->rows, a->dim, a->eps);
}

/* Runs the pending norm (its output is needed as it is). */
static void flush(struct cuda_be *c)
{
    if (!c->pend.on)
        return;
    c->pend.on = false;
    struct norm_args a = {c->pend.y, c->pend.x, c->pend.w, c->pend.rows, c->pend.dim, c->pend.eps};
    REC(run_norm, a);
    invalidate(c, c->pend.y);
}

/* An op is about to read rd[] and write wr[] (NULL entries ignored). */
static void touch(struct cuda_be *c, const void *const *rd, int n_rd, const void *const *wr,
                  int n_wr)
{
    for (int i = 0; c->pend.on && i < n_rd; i++)
        if (rd[i] && rd[i] == c->pend.y)
            flush(c);
    for (int i = 0; c->pend.on && i < n_wr; i++) {
        if (wr[i] && wr[i] == c->pend.x)
            flush(c); /* its input changes: the norm must run first */
        else if (wr[i] && wr[i] == c->pend.y)
            c->pend.on = false; /* its output is overwritten unread */
    }
    for (int i = 0; i < n_wr; i++)
        if (wr[i])
            invalidate(c, (const float *)wr[i]);
}

#define TOUCH(rd, wr)                                                                              \
    do {                                                                                           \
        const void *r_[] = rd, *w_[] = wr;                                                         \
        touch(c, r_, (int)(sizeof r_ / sizeof r_[0]), w_, (int)(sizeof w_ / sizeof w_[0]));        \
    } while (0)
#define L(...)                                                                                     \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }

void cu_touch(struct cuda_be *c, const void *rd, const void *wr)
{
    TOUCH(L(rd), L(wr));
}

void cu_step_reset(struct cuda_be *c)
{
    c->pend.on = false;
    cu_forget_quantized(c);
}

void cu_forget_quantized(struct cuda_be *c)
{
    c->q8_tag.src = c->mq_tag.src = NULL;
}

/* ---- quantization ------------------------------------------------------------------------------ */

struct PACKED quant_args {
    const float *x;
    int n;
    int64_t K;
};

static void run_quant(struct cuda_be *c, const void *p)
{
    const struct quant_args *a = (const struct quant_args *)p;
    cu_quantize(c, a->x, a->n, a->K, &c->q8);
}

/* Makes c->q8 hold x [n][K] quantized (records the quantization unless it already does). */
static void need_q8(struct cuda_be *c, const float *x, int n, int64_t K)
{
    if (holds(c, &c->q8_tag, x, n, K))
        return;
    struct quant_args a = {x, n, K};
    REC(run_quant, a);
    tag(c, &c->q8_tag, x, n, K);
}

/* ---- products ---------------------------------------------------------------------------------- */

static void run_mmv(struct cuda_be *c, const void *p)
{
    cu_mmv(c, (const struct mmv_args *)p);
}

struct PACKED gemm_args {
    const struct dweight *w;
    int64_t row0, N;
    const float *x;
    float *y;
    int n;
    bool acc;
};

static void run_gemm(struct cuda_be *c, const void *p)
{
    const struct gemm_args *a = (const struct gemm_args *)p;
    cu_gemm(c, a->w, a->row0, a->N, a->x, a->y, a->n, a->acc);
}

/* The matrix-vector kernels up to MMV_MAX_N tokens, or for any count when deterministic (a
 * token's row is then computed the same way whatever the step's size; cuBLAS picks its
 * algorithm by shape). */
static bool mmv_path(const struct cuda_be *c, const struct dweight *w, int n)
{
    return (n <= MMV_MAX_N || c->cfg.deterministic) && w->K % gt_vpu(w->gt) == 0;
}

/* The batched products (mmq.cu) from mmq_min to mmq_max tokens; when deterministic, for every
 * count (their rows do not depend on the launch's other tokens either). */
static bool mmq_path(const struct cuda_be *c, const struct dweight *w, int n)
{
    if (c->mmq_min <= 0 || w->K > c->mq_kmax || !cu_mmq_supported(w))
        return false;
    return c->cfg.deterministic || (n >= c->mmq_min && n <= c->mmq_max);
}

/* Products without cuBLAS: the batched or the matrix-vector kernels. */
static bool small_path(const struct cuda_be *c, const struct dweight *w, int n)
{
    return mmq_path(c, w, n) || mmv_path(c, w, n);
}

/* Records products of up to 3 segments sharing x, type and K, as many tokens a launch as the
 * kernel's shared memory holds; x is read through the pending norm when it is its output. */
static void record_mmv(struct cuda_be *c, struct mmv_args a, const float *x, int n)
{
    const struct dweight *w = a.seg[0].w;
    const bool normed = c->pend.on && x == c->pend.y;
    if (normed)
        x = c->pend.x, a.nw = c->pend.w, a.eps = c->pend.eps;
    const int per = cu_mmv_max_tok(w->gt, w->K);
    for (int t0 = 0; t0 < n; t0 += per) {
        struct mmv_args b = a;
        b.n = n - t0 < per ? n - t0 : per;
        b.x = x + (int64_t)t0 * w->K;
        b.ldx = w->K;
        for (int i = 0; i < b.n_seg; i++)
            b.seg[i].y += (int64_t)t0 * b.seg[i].ldy;
        REC(run_mmv, b);
    }
}

struct PACKED mq_args {
    const float *x, *nw;
    float eps;
    int n;
    int64_t K;
};

static void run_mq_quant(struct cuda_be *c, const void *p)
{
    const struct mq_args *a = (const struct mq_args *)p;
    cu_mq_quant(c, a->x, a->nw, a->eps, a->n, a->K);
}

static void run_mmq(struct cuda_be *c, const void *p)
{
    cu_mmq(c, (const struct mmv_args *)p);
}

/* As record_mmv, on the batched kernels: MMQ_TOK tokens at a time, each group quantized into
 * c->mq first (normed there when x is the pending norm's output) unless mq already holds it. */
static void record_mmq(struct cuda_be *c, struct mmv_args a, const float *x, int n)
{
    const int64_t K = a.seg[0].w->K;
    const bool normed = c->pend.on && x == c->pend.y;
    const float *src = normed ? c->pend.x : x;
    for (int t0 = 0; t0 < n; t0 += MMQ_TOK) {
        const int nb = n - t0 < MMQ_TOK ? n - t0 : MMQ_TOK;
        if (n > MMQ_TOK || !holds(c, &c->mq_tag, x, n, K)) {
            struct mq_args q = {src + (int64_t)t0 * K, normed ? c->pend.w : NULL,
                                normed ? c->pend.eps : 0.0f, nb, K};
            REC(run_mq_quant, q);
        }
        tag(c, &c->mq_tag, n <= MMQ_TOK ? x : NULL, n, K);
        struct mmv_args b = a;
        b.n = nb;
        for (int i = 0; i < b.n_seg; i++)
            b.seg[i].y += (int64_t)t0 * b.seg[i].ldy;
        REC(run_mmq, b);
    }
}

/* Records a product on the batched or the matrix-vector kernels (small_path holds). */
static void record_small(struct cuda_be *c, const struct mmv_args &a, const float *x, int n)
{
    if (mmq_path(c, a.seg[0].w, n))
        record_mmq(c, a, x, n);
    else
        record_mmv(c, a, x, n);
}

static struct mmv_seg seg_of(const struct dweight *w, int expert, float *y)
{
    return mmv_seg{w, (int64_t)expert * w->N, w->N, y, w->N};
}

static int product(struct cuda_be *c, const struct tensor *t, int expert, const float *x, float *y,
                   int n, bool acc)
{
    const struct dweight *w = DW(t);
    if (!w)
        return bad(c, EXSA_EINVAL, "matmul: the weight was not prepared for this backend");
    const bool mmv = small_path(c, w, n);
    if (!mmv) /* cuBLAS reads x as it is */
        TOUCH(L(x), L(acc ? (const void *)y : NULL));
    TOUCH(L(acc ? (const void *)y : NULL), L(y));
    if (mmv) {
        struct mmv_args a;
        memset(&a, 0, sizeof a);
        a.seg[0] = seg_of(w, expert, y);
        a.n_seg = 1;
        a.acc = acc;
        record_small(c, a, x, n);
    } else {
        struct gemm_args a = {w, (int64_t)expert * w->N, w->N, x, y, n, acc};
        REC(run_gemm, a);
    }
    return done(c);
}

static void op_discard(struct backend *be, const float *x)
{
    struct cuda_be *c = CB(be);
    if (c->pend.on && c->pend.y == x)
        c->pend.on = false;
}

static int op_matmul(struct backend *be, const struct tensor *w, int expert, const float *x,
                     float *y, int n)
{
    return product(CB(be), w, expert, x, y, n, false);
}

static int op_matmul_add(struct backend *be, const struct tensor *w, const float *x, float *y,
                         int n)
{
    return product(CB(be), w, 0, x, y, n, true);
}

struct PACKED ew_args {
    float *y;
    const float *a, *b;
    long n;
};

static void run_swiglu(struct cuda_be *c, const void *p)
{
    const struct ew_args *a = (const struct ew_args *)p;
    cu_swiglu(c, a->y, a->a, a->b, a->n);
}

static void run_add(struct cuda_be *c, const void *p)
{
    const struct ew_args *a = (const struct ew_args *)p;
    cu_add(c, a->y, a->a, a->n);
}

static int op_glu(struct backend *be, const struct tensor *gate, const struct tensor *up,
                  const float *x, float *out, int n)
{
    struct cuda_be *c = CB(be);
    const struct dweight *g = DW(gate), *u = DW(up);
    if (!g || !u)
        return bad(c, EXSA_EINVAL, "glu: the weights were not prepared for this backend");
    if (g->gt == u->gt && g->K == u->K && g->N == u->N && small_path(c, g, n)) {
        TOUCH(L(NULL), L(out));
        struct mmv_args a;
        memset(&a, 0, sizeof a);
        a.seg[0] = seg_of(g, 0, out);
        a.seg[1] = seg_of(u, 0, NULL);
        a.n_seg = 2;
        a.glu = true;
        record_small(c, a, x, n);
        return done(c);
    }
    int rc = product(c, gate, 0, x, out, n, false);
    if (!rc)
        rc = product(c, up, 0, x, c->glu_tmp, n, false);
    TOUCH(L(out, c->glu_tmp), L(out));
    struct ew_args a = {out, out, c->glu_tmp, (long)n * g->N};
    REC(run_swiglu, a);
    return rc ? rc : done(c);
}

static int op_qkv(struct backend *be, const struct tensor *wq, const struct tensor *wk,
                  const struct tensor *wv, const float *x, float *q, float *k, float *v, int n)
{
    struct cuda_be *c = CB(be);
    const struct tensor *ts[3] = {wq, wk, wv};
    float *ys[3] = {q, k, v};
    bool taken[3] = {false, false, false};
    for (int i = 0; i < 3; i++) {
        const struct dweight *w = DW(ts[i]);
        if (!w)
            return bad(c, EXSA_EINVAL, "qkv: the weights were not prepared for this backend");
        TOUCH(L(NULL), L(ys[i]));
        if (taken[i])
            continue;
        if (!small_path(c, w, n)) {
            int rc = product(c, ts[i], 0, x, ys[i], n, false);
            if (rc)
                return rc;
            continue;
        }
        struct mmv_args a; /* every later matrix of the same type and K joins this launch */
        memset(&a, 0, sizeof a);
        for (int j = i; j < 3; j++) {
            const struct dweight *o = DW(ts[j]);
            if (!taken[j] && o->gt == w->gt && o->K == w->K) {
                a.seg[a.n_seg++] = seg_of(o, 0, ys[j]);
                taken[j] = true;
            }
        }
        record_small(c, a, x, n);
    }
    return done(c);
}

/* ---- norms, rope, element-wise ------------------------------------------------------------------ */

static const float *vec(const struct tensor *t)
{
    const struct dweight *w = DW(t);
    return w && w->gt == GT_F32 ? (const float *)w->q : NULL;
}

static int op_rmsnorm(struct backend *be, float *y, const float *x, const struct tensor *w,
                      int rows, int dim, float eps)
{
    struct cuda_be *c = CB(be);
    if (!vec(w))
        return bad(c, EXSA_EINVAL, "rmsnorm: the norm weight is not an F32 vector on the GPU");
    TOUCH(L(x), L(y));
    /* kept for the products that follow; deterministic: whatever the row count, so a row is
     * normed the same way in any step */
    if ((rows <= MMV_MAX_N || c->cfg.deterministic) && dim % 32 == 0 && c->in_step) {
        c->pend = cuda_be::pending_norm{true, y, x, vec(w), rows, dim, eps};
        return 0;
    }
    struct norm_args a = {y, x, vec(w), rows, dim, eps};
    REC(run_norm, a);
    return done(c);
}

struct PACKED qknr_args {
    float *q, *k;
    const float *qw, *kw;
    int n, H, Hkv, hd;
    float eps;
    struct kv_dst store; /* set by the attention op that follows (it then stores nothing) */
};

static void run_qknr(struct cuda_be *c, const void *p)
{
    const struct qknr_args *a = (const struct qknr_args *)p;
    cu_qk_norm_rope(c, a->q, a->k, a->qw, a->kw, a->n, a->H, a->Hkv, a->hd, a->eps, a->store);
}

struct PACKED rope_args {
    float *x;
    int n, H, hd;
};

static void run_rope(struct cuda_be *c, const void *p)
{
    const struct rope_args *a = (const struct rope_args *)p;
    cu_rope(c, a->x, a->n, a->H, a->hd);
}

static int op_qk_norm_rope(struct backend *be, const struct step *st, float *q, float *k,
                           const struct tensor *qn, const struct tensor *kn, int H, int Hkv, int hd,
                           float eps, float base)
{
    struct cuda_be *c = CB(be);
    if (hd != c->hp.head_dim || base != c->hp.rope_base || !vec(qn) || !vec(kn))
        return bad(c, EXSA_EUNSUPPORTED, "q/k norm: the model's head size and rope base only");
    TOUCH(L(q, k), L(q, k));
    if (hd == 64 || hd == 128) { /* one warp per head, in registers */
        struct qknr_args a;
        memset(&a, 0, sizeof a);
        a.q = q, a.k = k, a.qw = vec(qn), a.kw = vec(kn), a.n = st->n, a.H = H, a.Hkv = Hkv;
        a.hd = hd, a.eps = eps;
        REC(run_qknr, a);
        return done(c);
    }
    struct norm_args nq = {q, q, vec(qn), st->n * H, hd, eps};
    struct norm_args nk = {k, k, vec(kn), st->n * Hkv, hd, eps};
    struct rope_args rq = {q, st->n, H, hd}, rk = {k, st->n, Hkv, hd};
    REC(run_norm, nq);
    REC(run_norm, nk);
    REC(run_rope, rq);
    REC(run_rope, rk);
    return done(c);
}

static int op_rope(struct backend *be, const struct step *st, float *x, int H, int hd, float base)
{
    struct cuda_be *c = CB(be);
    if (hd != c->hp.head_dim || base != c->hp.rope_base)
        return bad(c, EXSA_EUNSUPPORTED, "rope: only the model's head size and base");
    TOUCH(L(x), L(x));
    struct rope_args a = {x, st->n, H, hd};
    REC(run_rope, a);
    return done(c);
}

static int op_swiglu(struct backend *be, float *out, const float *g, const float *u, long n)
{
    struct cuda_be *c = CB(be);
    TOUCH(L(g, u), L(out));
    struct ew_args a = {out, g, u, n};
    REC(run_swiglu, a);
    return done(c);
}

static int op_add(struct backend *be, float *y, const float *x, long n)
{
    struct cuda_be *c = CB(be);
    TOUCH(L(x, y), L(y));
    struct ew_args a = {y, x, NULL, n};
    REC(run_add, a);
    return done(c);
}

/* ---- embed, gather --------------------------------------------------------------------------- */

struct PACKED embed_args {
    const struct dweight *w;
    int n;
    float *out;
};

static void run_embed(struct cuda_be *c, const void *p)
{
    const struct embed_args *a = (const struct embed_args *)p;
    cu_embed(c, a->w, c->ds.tok, a->n, a->out);
}

static int op_embed(struct backend *be, const struct step *st, const struct tensor *w, float *out)
{
    struct cuda_be *c = CB(be);
    if (!DW(w) || !st->tok)
        return bad(c, EXSA_EINVAL, "embed: no prepared table or no tokens");
    TOUCH(L(NULL), L(out));
    struct embed_args a = {DW(w), st->n, out};
    REC(run_embed, a);
    return done(c);
}

struct PACKED gather_args {
    float *dst;
    const float *src;
    int r0, n_rows, dim;
};

static void run_gather(struct cuda_be *c, const void *p)
{
    const struct gather_args *a = (const struct gather_args *)p;
    cu_gather(c, a->dst, a->src, a->r0, a->n_rows, a->dim);
}

static int op_gather(struct backend *be, const struct step *st, float *dst, const float *src,
                     int r0, int n_rows, int dim)
{
    struct cuda_be *c = CB(be);
    if (dst == src)
        return bad(c, EXSA_EINVAL, "gather: in place is not supported");
    TOUCH(L(src), L(dst));
    struct gather_args a = {dst, src, r0, n_rows, dim};
    REC(run_gather, a);
    return done(c);
}

/* ---- short conv, attention ------------------------------------------------------------------- */

struct PACKED conv_args {
    float *y;
    const float *bcx, *w;
    float *state;
    int n, n_sq, dim, l_cache;
};

static void run_conv(struct cuda_be *c, const void *p)
{
    const struct conv_args *a = (const struct conv_args *)p;
    cu_shortconv(c, a->y, a->bcx, a->w, a->state, a->n, a->n_sq, a->dim, a->l_cache);
}

static int op_shortconv(struct backend *be, const struct step *st, float *y, const float *bcx,
                        const struct tensor *w, struct kv_cache *kv, int ci, int dim, int l_cache)
{
    struct cuda_be *c = CB(be);
    if (!vec(w) || l_cache < 1 || l_cache > 9 || kv->conv_be[ci] != be)
        return bad(c, EXSA_EUNSUPPORTED, "short conv: kernel size 1..9 with its state here");
    TOUCH(L(bcx), L(y));
    struct conv_args a = {y, bcx, vec(w), kv->conv[ci], st->n, st->n_sq, dim, l_cache};
    REC(run_conv, a);
    return done(c);
}

struct PACKED attn_args {
    const struct kv_cache *kv;
    int a;
    const float *q, *k, *v;
    float *out;
    int n, H, Hkv, hd;
    int span;    /* the step's longest context, a power of two: sets the position splits */
    bool stored; /* the q/k norm before stored k and v */
};

static void run_attn(struct cuda_be *c, const void *p)
{
    const struct attn_args *a = (const struct attn_args *)p;
    if (!a->stored)
        cu_kv_store(c, a->kv, a->a, a->k, a->v, a->n);
    cu_attention(c, a->kv, a->a, a->q, a->out, a->n, a->H, a->Hkv, a->hd, a->span);
}

/* When the op just recorded is the fused q/k norm of these q and k, it stores k and v into the
 * cache as well (one kernel less). */
static bool store_in_qk_norm(struct cuda_be *c, const struct kv_cache *kv, int a, const float *q,
                             const float *k, const float *v)
{
    if (c->n_ops == 0 || c->ops[c->n_ops - 1].fn != run_qknr)
        return false;
    struct qknr_args *qa = (struct qknr_args *)c->ops[c->n_ops - 1].args;
    if (qa->q != q || qa->k != k)
        return false;
    qa->store = kv_dst{kv->k[a], kv->v[a], v, kv->kv_dim, kv->kv_type[a] == EXSA_DTYPE_F16};
    return true;
}

static int op_attention(struct backend *be, const struct step *st, float *out, const float *q,
                        const float *k, const float *v, struct kv_cache *kv, int a, int H, int Hkv,
                        int hd)
{
    struct cuda_be *c = CB(be);
    if ((hd != 32 && hd != 64 && hd != 128) || H % Hkv || kv->attn_be[a] != be ||
        kv->kv_dim != Hkv * hd)
        return bad(c, EXSA_EUNSUPPORTED, "attention: head size 32, 64 or 128, cache here");
    TOUCH(L(q, k, v), L(out));
    int span = 64; /* a power of two, so that graphs are captured again only as it doubles */
    for (int i = 0; i < st->n; i++)
        while (span <= st->pos[i])
            span *= 2;
    struct attn_args args = {kv, a, q, k, v, out, st->n, H, Hkv, hd, span, false};
    args.stored = store_in_qk_norm(c, kv, a, q, k, v);
    REC(run_attn, args);
    return done(c);
}

/* ---- MoE ------------------------------------------------------------------------------------- */

struct PACKED moe_args {
    const struct layer *l;
    const float *x;
    float *out;
    const float *bias;
    int n, dim, E, k, fe;
};

static void run_moe_route(struct cuda_be *c, const void *p)
{
    const struct moe_args *a = (const struct moe_args *)p;
    cu_moe_route(c, c->moe_logits, a->bias, a->n, a->E, a->k);
}

static void run_moe_ffn(struct cuda_be *c, const void *p)
{
    const struct moe_args *a = (const struct moe_args *)p;
    cu_moe_ffn(c, a->l, a->x, a->out, a->n, a->dim, a->E, a->k, a->fe);
}

static int op_moe(struct backend *be, float *out, const float *x, const struct layer *l, int n,
                  int dim, int E, int k, int fe)
{
    struct cuda_be *c = CB(be);
    if (!c->moe_ids || E > 512 || k > 32 || !vec(&l->exp_bias) || !cu_moe_supported(l))
        return bad(c, EXSA_EUNSUPPORTED, "moe: up to 512 experts, top-32, prepared weights");
    TOUCH(L(x), L(out)); /* the experts read x as it is */
    int rc = product(c, &l->router, 0, x, c->moe_logits, n, false);
    if (rc)
        return rc;
    struct moe_args a = {l, x, out, vec(&l->exp_bias), n, dim, E, k, fe};
    REC(run_moe_route, a);
    if (gt_quantized(DW(&l->gate_exps)->gt))
        need_q8(c, x, n, dim);
    REC(run_moe_ffn, a);
    return done(c);
}

const struct backend_ops cuda_ops = {
    .name = "cuda",
    .free = cu_free,
    .alloc = cu_alloc,
    .release = cu_release,
    .upload = cu_upload,
    .download = cu_download,
    .copy = cu_copy,
    .zero = cu_zero,
    .prepare = cu_prepare,
    .unprepare = cu_unprepare,
    .begin = cu_begin,
    .end = cu_end,
    .matmul = op_matmul,
    .embed = op_embed,
    .rmsnorm = op_rmsnorm,
    .rope = op_rope,
    .swiglu = op_swiglu,
    .add = op_add,
    .shortconv = op_shortconv,
    .attention = op_attention,
    .moe = op_moe,
    .gather = op_gather,
    .discard = op_discard,
    .matmul_add = op_matmul_add,
    .glu = op_glu,
    .qkv = op_qkv,
    .qk_norm_rope = op_qk_norm_rope,
};
