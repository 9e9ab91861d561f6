/*
 * ops-table.cu: the seam's ops on the CUDA backend. Each op checks its arguments, decides at
 * record time which kernels run (matrix-vector path for up to MMV_MAX_N tokens, cuBLAS past
 * it; whether its input is already quantized), and records them (cu_record): the same calls
 * record the same op list, which is what lets backend-cuda.cu replay a captured graph. The backend
 * remembers which activation buffer the 8-bit scratch holds (q8_src), so the norm that
 * quantized xn serves the q, k and v products, or gate and up, without requantizing.
 */
#include <string.h>

#include "cuda/cuda.h"

#define REC(fn, a) cu_record(c, fn, &(a), sizeof(a))

static int bad(struct cuda_be *c, int code, const char *what)
{
    cu_fail(c, code, what, cudaSuccess);
    return code;
}

/* The q8 scratch no longer matches x (x is being written). */
static void invalidate(struct cuda_be *c, const float *x)
{
    if (!x || c->q8_src == x)
        c->q8_src = NULL;
}

/* ---- quantization ------------------------------------------------------------------------------ */

struct quant_args {
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
    if (c->q8_src == x && c->q8_n >= n && c->q8_K == K)
        return;
    struct quant_args a = {x, n, K};
    REC(run_quant, a);
    c->q8_src = x, c->q8_n = n, c->q8_K = K;
}

static void tag(struct cuda_be *c, const float *x, int n, int64_t K)
{
    c->q8_src = x, c->q8_n = n, c->q8_K = K;
}

static bool quantized(int gt)
{
    return gt != GT_F32 && gt != GT_F16 && gt != GT_BF16;
}

/* ---- products ---------------------------------------------------------------------------------- */

static void run_mmv(struct cuda_be *c, const void *p)
{
    cu_mmv(c, (const struct mmv_args *)p);
}

struct gemm_args {
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

static bool mmv_path(const struct dweight *w, int n)
{
    return n <= MMV_MAX_N && w->K % (w->gt == GT_F32 ? 32 : 64) == 0;
}

/* Records products of up to 3 segments sharing x, type and K, MMV_MAX_TOK tokens a launch. */
static void record_mmv(struct cuda_be *c, struct mmv_args a, const float *x, int n)
{
    const struct dweight *w = a.seg[0].w;
    if (quantized(w->gt))
        need_q8(c, x, n, w->K);
    for (int t0 = 0; t0 < n; t0 += MMV_MAX_TOK) {
        struct mmv_args b = a;
        b.n = n - t0 < MMV_MAX_TOK ? n - t0 : MMV_MAX_TOK;
        b.x = x + (int64_t)t0 * w->K;
        b.ldx = w->K;
        b.q8 = c->q8;
        b.q8.q += (int64_t)t0 * w->K;
        b.q8.d += (int64_t)t0 * (w->K / 32);
        b.q8.s += (int64_t)t0 * (w->K / 32);
        for (int i = 0; i < b.n_seg; i++)
            b.seg[i].y += (int64_t)t0 * b.seg[i].ldy;
        REC(run_mmv, b);
    }
}

static struct mmv_seg seg_of(const struct dweight *w, int expert, float *y)
{
    return mmv_seg{w, (int64_t)expert * w->N, w->N, y, w->N};
}

static int product(struct cuda_be *c, const struct tensor *t, int expert, const float *x,
                   float *y, int n, bool acc)
{
    const struct dweight *w = DW(t);
    if (!w)
        return bad(c, EXSA_EINVAL, "matmul: the weight was not prepared for this backend");
    invalidate(c, y);
    if (mmv_path(w, n)) {
        struct mmv_args a;
        memset(&a, 0, sizeof a);
        a.seg[0] = seg_of(w, expert, y);
        a.n_seg = 1;
        a.acc = acc;
        record_mmv(c, a, x, n);
    } else {
        struct gemm_args a = {w, (int64_t)expert * w->N, w->N, x, y, n, acc};
        REC(run_gemm, a);
    }
    return 0;
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

struct ew_args {
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
    invalidate(c, out);
    if (g->gt == u->gt && g->K == u->K && g->N == u->N && mmv_path(g, n)) {
        struct mmv_args a;
        memset(&a, 0, sizeof a);
        a.seg[0] = seg_of(g, 0, out);
        a.seg[1] = seg_of(u, 0, NULL);
        a.n_seg = 2;
        a.glu = true;
        record_mmv(c, a, x, n);
        return 0;
    }
    int rc = product(c, gate, 0, x, out, n, false);
    if (!rc)
        rc = product(c, up, 0, x, c->glu_tmp, n, false);
    struct ew_args a = {out, out, c->glu_tmp, (long)n * g->N};
    REC(run_swiglu, a);
    invalidate(c, out);
    return rc;
}

static int op_qkv(struct backend *be, const struct tensor *wq, const struct tensor *wk,
                  const struct tensor *wv, const float *x, float *q, float *k, float *v, int n)
{
    struct cuda_be *c = CB(be);
    const struct tensor *ts[3] = {wq, wk, wv};
    float *ys[3] = {q, k, v};
    bool done[3] = {false, false, false};
    for (int i = 0; i < 3; i++) {
        const struct dweight *w = DW(ts[i]);
        if (!w)
            return bad(c, EXSA_EINVAL, "qkv: the weights were not prepared for this backend");
        if (done[i])
            continue;
        if (!mmv_path(w, n)) {
            int rc = product(c, ts[i], 0, x, ys[i], n, false);
            if (rc)
                return rc;
            continue;
        }
        struct mmv_args a; /* every later matrix of the same type and K joins this launch */
        memset(&a, 0, sizeof a);
        for (int j = i; j < 3; j++) {
            const struct dweight *o = DW(ts[j]);
            if (!done[j] && o->gt == w->gt && o->K == w->K) {
                a.seg[a.n_seg++] = seg_of(o, 0, ys[j]);
                done[j] = true;
            }
        }
        record_mmv(c, a, x, n);
    }
    return 0;
}

/* ---- norms, rope, element-wise ------------------------------------------------------------------ */

struct norm_args {
    float *y;
    const float *x, *w;
    int rows, dim;
    float eps;
    bool quant;
};

static void run_norm(struct cuda_be *c, const void *p)
{
    const struct norm_args *a = (const struct norm_args *)p;
    cu_rmsnorm(c, a->y, a->x, a->w, a->rows, a->dim, a->eps, a->quant ? &c->q8 : NULL);
}

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
    const bool quant = dim % 32 == 0 && rows <= c->cfg.n_batch && dim <= c->q8.K &&
                       rows <= MMV_MAX_N;
    struct norm_args a = {y, x, vec(w), rows, dim, eps, quant};
    invalidate(c, y);
    REC(run_norm, a);
    if (quant)
        tag(c, y, rows, dim);
    return 0;
}

struct qknr_args {
    float *q, *k;
    const float *qw, *kw;
    int n, H, Hkv, hd;
    float eps;
};

static void run_qknr(struct cuda_be *c, const void *p)
{
    const struct qknr_args *a = (const struct qknr_args *)p;
    cu_qk_norm_rope(c, a->q, a->k, a->qw, a->kw, a->n, a->H, a->Hkv, a->hd, a->eps);
}

static int op_qk_norm_rope(struct backend *be, const struct step *st, float *q, float *k,
                           const struct tensor *qn, const struct tensor *kn, int H, int Hkv,
                           int hd, float eps, float base)
{
    struct cuda_be *c = CB(be);
    if ((hd != 64 && hd != 128) || hd != c->hp.head_dim || !vec(qn) || !vec(kn))
        return bad(c, EXSA_EUNSUPPORTED, "q/k norm: head size must be 64 or 128");
    invalidate(c, q), invalidate(c, k);
    struct qknr_args a = {q, k, vec(qn), vec(kn), st->n, H, Hkv, hd, eps};
    REC(run_qknr, a);
    return 0;
}

struct rope_args {
    float *x;
    int n, H, hd;
};

static void run_rope(struct cuda_be *c, const void *p)
{
    const struct rope_args *a = (const struct rope_args *)p;
    cu_rope(c, a->x, a->n, a->H, a->hd);
}

static int op_rope(struct backend *be, const struct step *st, float *x, int H, int hd,
                   float base)
{
    struct cuda_be *c = CB(be);
    if (hd != c->hp.head_dim || base != c->hp.rope_base)
        return bad(c, EXSA_EUNSUPPORTED, "rope: only the model's head size and base");
    invalidate(c, x);
    struct rope_args a = {x, st->n, H, hd};
    REC(run_rope, a);
    return 0;
}

static int op_swiglu(struct backend *be, float *out, const float *g, const float *u, long n)
{
    struct cuda_be *c = CB(be);
    invalidate(c, out);
    struct ew_args a = {out, g, u, n};
    REC(run_swiglu, a);
    return 0;
}

static int op_add(struct backend *be, float *y, const float *x, long n)
{
    struct cuda_be *c = CB(be);
    invalidate(c, y);
    struct ew_args a = {y, x, NULL, n};
    REC(run_add, a);
    return 0;
}

/* ---- embed, gather --------------------------------------------------------------------------- */

struct embed_args {
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
    invalidate(c, out);
    struct embed_args a = {DW(w), st->n, out};
    REC(run_embed, a);
    return 0;
}

struct gather_args {
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
    invalidate(c, dst);
    struct gather_args a = {dst, src, r0, n_rows, dim};
    REC(run_gather, a);
    return 0;
}

/* ---- short conv, attention ------------------------------------------------------------------- */

struct conv_args {
    float *y;
    const float *bcx, *w;
    float *state;
    int n_sq, dim, l_cache;
    bool quant;
};

static void run_conv(struct cuda_be *c, const void *p)
{
    const struct conv_args *a = (const struct conv_args *)p;
    cu_shortconv(c, a->y, a->bcx, a->w, a->state, a->n_sq, a->dim, a->l_cache,
                 a->quant ? &c->q8 : NULL);
}

static int op_shortconv(struct backend *be, const struct step *st, float *y, const float *bcx,
                        const struct tensor *w, struct kv_cache *kv, int ci, int dim,
                        int l_cache)
{
    struct cuda_be *c = CB(be);
    if (!vec(w) || l_cache < 1 || l_cache > 9 || kv->conv_be[ci] != be)
        return bad(c, EXSA_EUNSUPPORTED, "short conv: kernel size 1..9 with its state here");
    const bool quant = dim % 32 == 0 && dim <= c->q8.K && st->n <= MMV_MAX_N;
    invalidate(c, y);
    struct conv_args a = {y, bcx, vec(w), kv->conv[ci], st->n_sq, dim, l_cache, quant};
    REC(run_conv, a);
    if (quant)
        tag(c, y, st->n, dim);
    return 0;
}

struct attn_args {
    const struct kv_cache *kv;
    int a;
    const float *q, *k, *v;
    float *out;
    int n, H, Hkv, hd;
    bool quant;
};

static void run_attn(struct cuda_be *c, const void *p)
{
    const struct attn_args *a = (const struct attn_args *)p;
    cu_kv_store(c, a->kv, a->a, a->k, a->v, a->n);
    cu_attention(c, a->kv, a->a, a->q, a->out, a->n, a->H, a->Hkv, a->hd, a->quant);
}

static int op_attention(struct backend *be, const struct step *st, float *out, const float *q,
                        const float *k, const float *v, struct kv_cache *kv, int a, int H,
                        int Hkv, int hd)
{
    struct cuda_be *c = CB(be);
    if ((hd != 32 && hd != 64 && hd != 128) || H % Hkv || kv->attn_be[a] != be ||
        kv->kv_dim != Hkv * hd)
        return bad(c, EXSA_EUNSUPPORTED, "attention: head size 32, 64 or 128, cache here");
    const bool quant = st->n <= MMV_MAX_N && (int64_t)H * hd <= c->q8.K;
    invalidate(c, out);
    struct attn_args args = {kv, a, q, k, v, out, st->n, H, Hkv, hd, quant};
    REC(run_attn, args);
    if (quant)
        tag(c, out, st->n, (int64_t)H * hd);
    return 0;
}

/* ---- MoE ------------------------------------------------------------------------------------- */

struct moe_args {
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
    int rc = product(c, &l->router, 0, x, c->moe_logits, n, false);
    if (rc)
        return rc;
    struct moe_args a = {l, x, out, vec(&l->exp_bias), n, dim, E, k, fe};
    REC(run_moe_route, a);
    if (quantized(DW(&l->gate_exps)->gt))
        need_q8(c, x, n, dim);
    invalidate(c, out);
    REC(run_moe_ffn, a);
    return 0;
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
    .matmul_add = op_matmul_add,
    .glu = op_glu,
    .qkv = op_qkv,
    .qk_norm_rope = op_qk_norm_rope,
};
