/*
 * lfm2.c: LFM2 and LFM2-MoE (LFM2-SPEC.md sections 2-4): hyper-parameters from the GGUF
 * metadata, every tensor bound by name and shape, and the forward pass over a batch as backend
 * calls. Layer kind comes from head_count_kv (0: gated short conv, > 0: GQA attention with
 * QK-norm and NEOX RoPE); lfm2moe layers from leading_dense_block_count on use a sigmoid-routed
 * top-k MoE instead of the dense SwiGLU FFN. Called by model.c (load) and engine.c (forward).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

static int get_int_key(const struct gguf_file *f, const char *arch, const char *suffix,
                       bool required, int64_t def, int64_t lo, int64_t hi, int *out, char *err,
                       size_t errlen)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    int64_t v = def;
    int rc = gguf_get_int(f, key, &v);
    if (rc == EXSA_ENOTFOUND && !required)
        v = def;
    else if (rc == EXSA_ENOTFOUND) {
        snprintf(err, errlen, "key %s: missing", key);
        return EXSA_EFORMAT;
    } else if (rc < 0) {
        snprintf(err, errlen, "key %s: expected an integer", key);
        return EXSA_EFORMAT;
    }
    if (v < lo || v > hi) {
        snprintf(err, errlen, "key %s: value %lld out of range [%lld, %lld]", key, (long long)v,
                 (long long)lo, (long long)hi);
        return EXSA_EFORMAT;
    }
    *out = (int)v;
    return 0;
}

static int get_float_key(const struct gguf_file *f, const char *arch, const char *suffix,
                         bool required, double def, float *out, char *err, size_t errlen)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    double v = def;
    int rc = gguf_get_float(f, key, &v);
    if (rc == EXSA_ENOTFOUND && required) {
        snprintf(err, errlen, "key %s: missing", key);
        return EXSA_EFORMAT;
    }
    if (rc < 0 && rc != EXSA_ENOTFOUND) {
        snprintf(err, errlen, "key %s: expected a float", key);
        return EXSA_EFORMAT;
    }
    if (!(v > 0) || !isfinite(v)) {
        snprintf(err, errlen, "key %s: value %g must be positive and finite", key, v);
        return EXSA_EFORMAT;
    }
    *out = (float)v;
    return 0;
}

/* head_count_kv: an array of n_layers integers, or one scalar for every layer. */
static int read_kv_heads(const struct gguf_file *f, const char *arch, struct hparams *hp, char *err,
                         size_t errlen)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.attention.head_count_kv", arch);
    struct gguf_array a;
    int64_t v;
    if (gguf_get_arr(f, key, &a) == 0) {
        if (a.n != (uint64_t)hp->n_layers) {
            snprintf(err, errlen, "key %s: %llu entries, expected one per layer (%d)", key,
                     (unsigned long long)a.n, hp->n_layers);
            return EXSA_EFORMAT;
        }
        for (int l = 0; l < hp->n_layers; l++) {
            if (gguf_arr_int(&a, (uint64_t)l, &v) < 0) {
                snprintf(err, errlen, "key %s: expected an array of integers", key);
                return EXSA_EFORMAT;
            }
            hp->n_kv_heads[l] = (int)(v < 0 || v > hp->n_heads ? -1 : v);
        }
    } else if (gguf_get_int(f, key, &v) == 0) {
        for (int l = 0; l < hp->n_layers; l++)
            hp->n_kv_heads[l] = (int)(v < 0 || v > hp->n_heads ? -1 : v);
    } else {
        snprintf(err, errlen, "key %s: missing (it gives each layer's kind)", key);
        return EXSA_EFORMAT;
    }
    for (int l = 0; l < hp->n_layers; l++) {
        int kvh = hp->n_kv_heads[l];
        if (kvh < 0 || (kvh > 0 && hp->n_heads % kvh != 0)) {
            snprintf(err, errlen, "key %s: layer %d has an invalid KV head count for %d heads", key,
                     l, hp->n_heads);
            return EXSA_EFORMAT;
        }
    }
    return 0;
}

static int read_moe_hparams(const struct gguf_file *f, const char *arch, struct hparams *hp,
                            char *err, size_t errlen)
{
    int rc = get_int_key(f, arch, "expert_count", true, 0, 1, 512, &hp->n_experts, err, errlen);
    if (!rc)
        rc = get_int_key(f, arch, "expert_used_count", true, 0, 1, 64, &hp->n_experts_used, err,
                         errlen);
    if (!rc)
        rc = get_int_key(f, arch, "expert_feed_forward_length", true, 0, 1, 1 << 20,
                         &hp->expert_hidden_dim, err, errlen);
    if (!rc)
        rc = get_int_key(f, arch, "leading_dense_block_count", false, 0, 0, hp->n_layers,
                         &hp->n_dense_lead, err, errlen);
    if (!rc)
        rc = get_int_key(f, arch, "expert_gating_func", false, 2, 0, 10, &hp->gating_func, err,
                         errlen);
    if (!rc && hp->n_experts_used > hp->n_experts) {
        snprintf(err, errlen, "key %s.expert_used_count: %d exceeds expert_count %d", arch,
                 hp->n_experts_used, hp->n_experts);
        return EXSA_EFORMAT;
    }
    if (!rc && hp->gating_func != 2) {
        snprintf(err, errlen,
                 "key %s.expert_gating_func: %d is not supported (LFM2-MoE uses 2, "
                 "sigmoid)",
                 arch, hp->gating_func);
        return EXSA_EUNSUPPORTED;
    }
    return rc;
}

int lfm2_load_hparams(const struct gguf_file *f, const char *arch, struct hparams *hp, char *err,
                      size_t errlen)
{
    memset(hp, 0, sizeof(*hp));
    hp->is_moe = strcmp(arch, "lfm2moe") == 0;
    int rc = get_int_key(f, arch, "block_count", true, 0, 1, MODEL_MAX_LAYERS, &hp->n_layers, err,
                         errlen);
    if (!rc)
        rc = get_int_key(f, arch, "embedding_length", true, 0, 1, 1 << 16, &hp->dim, err, errlen);
    if (!rc)
        rc = get_int_key(f, arch, "feed_forward_length", true, 0, 1, 1 << 20, &hp->hidden_dim, err,
                         errlen);
    if (!rc)
        rc = get_int_key(f, arch, "attention.head_count", true, 0, 1, 1024, &hp->n_heads, err,
                         errlen);
    if (!rc)
        rc = get_int_key(f, arch, "context_length", true, 0, 1, 1 << 24, &hp->n_ctx_train, err,
                         errlen);
    if (!rc)
        rc = get_int_key(f, arch, "shortconv.l_cache", true, 0, 1, 64, &hp->l_cache, err, errlen);
    if (!rc)
        rc = get_float_key(f, arch, "attention.layer_norm_rms_epsilon", true, 0, &hp->eps, err,
                           errlen);
    /* LFM2 was trained with 1e6; llama.cpp's 10000 fallback for a missing key is wrong here. */
    if (!rc)
        rc = get_float_key(f, arch, "rope.freq_base", false, 1e6, &hp->rope_base, err, errlen);
    if (!rc)
        rc = get_int_key(f, arch, "attention.key_length", false, hp->dim / hp->n_heads, 2, 1024,
                         &hp->head_dim, err, errlen);
    if (!rc && hp->head_dim % 2 != 0) {
        snprintf(err, errlen, "key %s.attention.key_length: head size %d must be even", arch,
                 hp->head_dim);
        rc = EXSA_EFORMAT;
    }
    if (!rc)
        rc = read_kv_heads(f, arch, hp, err, errlen);
    if (!rc && hp->is_moe)
        rc = read_moe_hparams(f, arch, hp, err, errlen);
    if (!rc && !hp->is_moe)
        hp->n_dense_lead = hp->n_layers;
    return rc;
}

#define BIND(t, name, req, nd, ...)                                                                \
    do {                                                                                           \
        int64_t ne_[] = {__VA_ARGS__};                                                             \
        int rc_ = model_bind(f, name, nd, ne_, t, req, err, errlen);                               \
        if (rc_ < 0)                                                                               \
            return rc_;                                                                            \
    } while (0)

static int check_f32(const struct tensor *t, char *err, size_t errlen)
{
    if (t->data && t->type != EXSA_DTYPE_F32) {
        snprintf(err, errlen, "tensor %s: expected type F32, got type %d", t->name, t->type);
        return EXSA_EFORMAT;
    }
    return 0;
}

static int bind_layer(const struct gguf_file *f, const struct hparams *hp, int i, struct layer *l,
                      char *err, size_t errlen)
{
    const int64_t d = hp->dim, hd = hp->head_dim, F = hp->hidden_dim;
    char n[GGUF_MAX_NAME + 32];
#define NAME(s) (snprintf(n, sizeof(n), "blk.%d.%s", i, s), n)
    BIND(&l->attn_norm, NAME("attn_norm.weight"), true, 1, d);
    BIND(&l->ffn_norm, NAME("ffn_norm.weight"), true, 1, d);
    if (l->is_attn) {
        int64_t kvd = (int64_t)l->n_kv_heads * hd, qd = (int64_t)hp->n_heads * hd;
        BIND(&l->wq, NAME("attn_q.weight"), true, 2, d, qd);
        BIND(&l->wk, NAME("attn_k.weight"), true, 2, d, kvd);
        BIND(&l->wv, NAME("attn_v.weight"), true, 2, d, kvd);
        BIND(&l->wo, NAME("attn_output.weight"), true, 2, qd, d);
        BIND(&l->q_norm, NAME("attn_q_norm.weight"), true, 1, hd);
        BIND(&l->k_norm, NAME("attn_k_norm.weight"), true, 1, hd);
    } else {
        BIND(&l->conv_in, NAME("shortconv.in_proj.weight"), true, 2, d, 3 * d);
        BIND(&l->conv_w, NAME("shortconv.conv.weight"), true, 2, hp->l_cache, d);
        BIND(&l->conv_out, NAME("shortconv.out_proj.weight"), true, 2, d, d);
    }
    if (l->is_moe) {
        const int64_t E = hp->n_experts, Fe = hp->expert_hidden_dim;
        BIND(&l->router, NAME("ffn_gate_inp.weight"), true, 2, d, E);
        BIND(&l->exp_bias, NAME("exp_probs_b.bias"), true, 1, E);
        BIND(&l->gate_exps, NAME("ffn_gate_exps.weight"), true, 3, d, Fe, E);
        BIND(&l->up_exps, NAME("ffn_up_exps.weight"), true, 3, d, Fe, E);
        BIND(&l->down_exps, NAME("ffn_down_exps.weight"), true, 3, Fe, d, E);
    } else {
        BIND(&l->ffn_gate, NAME("ffn_gate.weight"), true, 2, d, F);
        BIND(&l->ffn_up, NAME("ffn_up.weight"), true, 2, d, F);
        BIND(&l->ffn_down, NAME("ffn_down.weight"), true, 2, F, d);
    }
#undef NAME
    const struct tensor *f32s[] = {&l->attn_norm, &l->ffn_norm, &l->q_norm,  &l->k_norm,
                                   &l->conv_w,    &l->router,   &l->exp_bias};
    for (size_t k = 0; k < sizeof(f32s) / sizeof(f32s[0]); k++)
        if (check_f32(f32s[k], err, errlen) < 0)
            return EXSA_EFORMAT;
    return 0;
}

static int bind_globals(struct exsa_model *m, const struct gguf_file *f, char *err, size_t errlen)
{
    const struct gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    if (!emb) {
        snprintf(err, errlen, "tensor token_embd.weight: missing");
        return EXSA_ENOTFOUND;
    }
    if (emb->ne[1] < 1 || emb->ne[1] > (1 << 24)) {
        snprintf(err, errlen, "tensor token_embd.weight: vocabulary size %lld out of range",
                 (long long)emb->ne[1]);
        return EXSA_EFORMAT;
    }
    m->hp.vocab_size = (int)emb->ne[1];
    const int64_t d = m->hp.dim, V = m->hp.vocab_size;
    BIND(&m->tok_embd, "token_embd.weight", true, 2, d, V);
    /* The final norm: llama.cpp names it token_embd_norm, Ollama output_norm. */
    BIND(&m->out_norm, "token_embd_norm.weight", false, 1, d);
    if (!m->out_norm.data)
        BIND(&m->out_norm, "output_norm.weight", false, 1, d);
    if (!m->out_norm.data) {
        snprintf(err, errlen, "tensor token_embd_norm.weight (or output_norm.weight): missing");
        return EXSA_ENOTFOUND;
    }
    if (check_f32(&m->out_norm, err, errlen) < 0)
        return EXSA_EFORMAT;
    BIND(&m->output, "output.weight", false, 2, d, V);
    m->tied_output = m->output.data == NULL;
    if (m->tied_output)
        m->output = m->tok_embd;
    return 0;
}

int lfm2_bind_tensors(struct exsa_model *m, char *err, size_t errlen)
{
    const struct gguf_file *f = m->gguf;
    struct hparams *hp = &m->hp;
    int rc = bind_globals(m, f, err, errlen);
    if (rc < 0)
        return rc;
    m->layers = calloc((size_t)hp->n_layers, sizeof(struct layer));
    if (!m->layers)
        return EXSA_ENOMEM;
    int n_attn = 0, n_conv = 0, first_kvh = 0;
    for (int i = 0; i < hp->n_layers; i++) {
        struct layer *l = &m->layers[i];
        l->n_kv_heads = hp->n_kv_heads[i];
        l->is_attn = l->n_kv_heads > 0;
        l->is_moe = hp->is_moe && i >= hp->n_dense_lead;
        l->attn_idx = l->is_attn ? n_attn++ : -1;
        l->conv_idx = l->is_attn ? -1 : n_conv++;
        /* kvcache.c keeps one kv_dim for all attention layers. */
        if (l->is_attn && first_kvh && l->n_kv_heads != first_kvh) {
            snprintf(err, errlen,
                     "layer %d: %d KV heads, but an earlier attention layer has %d; "
                     "mixed KV head counts are not supported",
                     i, l->n_kv_heads, first_kvh);
            return EXSA_EUNSUPPORTED;
        }
        if (l->is_attn)
            first_kvh = l->n_kv_heads;
        rc = bind_layer(f, hp, i, l, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- forward ----------------------------------------------------------------------------- */

/* Tells the backend that activation buffer x is dead until its next write. */
static void discard(struct backend *be, const float *x)
{
    if (be->ops->discard)
        be->ops->discard(be, x);
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_ < 0)                                                                               \
            return rc_;                                                                            \
    } while (0)

/* h += W x: one fused op where the backend has it, else the product into y and an add. */
static int residual(struct backend *be, const struct tensor *w, const float *x, float *y, float *h,
                    int n, int dim)
{
    if (be->ops->matmul_add)
        return be->ops->matmul_add(be, w, x, h, n);
    TRY(be->ops->matmul(be, w, 0, x, y, n));
    return be->ops->add(be, h, y, (long)n * dim);
}

static int attention_block(struct exsa_engine *e, struct stage *sg, const struct step *st,
                           const struct layer *l)
{
    const struct hparams *hp = &e->m->hp;
    struct backend *be = sg->be;
    struct acts *s = &sg->a;
    const int n = st->n, hd = hp->head_dim, H = hp->n_heads, Hkv = l->n_kv_heads;
    float *q = s->wide, *k = q + (size_t)n * H * hd, *v = k + (size_t)n * Hkv * hd;
    if (be->ops->qkv) {
        TRY(be->ops->qkv(be, &l->wq, &l->wk, &l->wv, s->xn, q, k, v, n));
    } else {
        TRY(be->ops->matmul(be, &l->wq, 0, s->xn, q, n));
        TRY(be->ops->matmul(be, &l->wk, 0, s->xn, k, n));
        TRY(be->ops->matmul(be, &l->wv, 0, s->xn, v, n));
    }
    discard(be, s->xn);
    if (be->ops->qk_norm_rope) {
        TRY(be->ops->qk_norm_rope(be, st, q, k, &l->q_norm, &l->k_norm, H, Hkv, hd, hp->eps,
                                  hp->rope_base));
    } else {
        TRY(be->ops->rmsnorm(be, q, q, &l->q_norm, n * H, hd, hp->eps));
        TRY(be->ops->rmsnorm(be, k, k, &l->k_norm, n * Hkv, hd, hp->eps));
        TRY(be->ops->rope(be, st, q, H, hd, hp->rope_base));
        TRY(be->ops->rope(be, st, k, Hkv, hd, hp->rope_base));
    }
    return be->ops->attention(be, st, s->att, q, k, v, e->kv, l->attn_idx, H, Hkv, hd);
}

static int conv_block(struct exsa_engine *e, struct stage *sg, const struct step *st,
                      const struct layer *l)
{
    const struct hparams *hp = &e->m->hp;
    struct backend *be = sg->be;
    struct acts *s = &sg->a;
    TRY(be->ops->matmul(be, &l->conv_in, 0, s->xn, s->wide, st->n));
    discard(be, s->xn);
    return be->ops->shortconv(be, st, s->att, s->wide, &l->conv_w, e->kv, l->conv_idx, hp->dim,
                              hp->l_cache);
}

static int ffn_block(struct exsa_engine *e, struct stage *sg, const struct layer *l, int n)
{
    const struct hparams *hp = &e->m->hp;
    struct backend *be = sg->be;
    struct acts *s = &sg->a;
    if (l->is_moe) {
        TRY(be->ops->moe(be, s->y, s->xn, l, n, hp->dim, hp->n_experts, hp->n_experts_used,
                         hp->expert_hidden_dim));
        discard(be, s->xn);
        return be->ops->add(be, s->h, s->y, (long)n * hp->dim);
    }
    if (be->ops->glu) {
        TRY(be->ops->glu(be, &l->ffn_gate, &l->ffn_up, s->xn, s->gate, n));
    } else {
        TRY(be->ops->matmul(be, &l->ffn_gate, 0, s->xn, s->gate, n));
        TRY(be->ops->matmul(be, &l->ffn_up, 0, s->xn, s->up, n));
        TRY(be->ops->swiglu(be, s->gate, s->gate, s->up, (long)n * hp->hidden_dim));
    }
    discard(be, s->xn);
    return residual(be, &l->ffn_down, s->gate, s->y, s->h, n, hp->dim);
}

static int layer_forward(struct exsa_engine *e, struct stage *sg, const struct step *st,
                         const struct layer *l)
{
    const struct hparams *hp = &e->m->hp;
    struct backend *be = sg->be;
    struct acts *s = &sg->a;
    const int n = st->n, d = hp->dim;
    TRY(be->ops->rmsnorm(be, s->xn, s->h, &l->attn_norm, n, d, hp->eps));
    TRY(l->is_attn ? attention_block(e, sg, st, l) : conv_block(e, sg, st, l));
    /* the mixer's output projection, added to the residual stream */
    TRY(residual(be, l->is_attn ? &l->wo : &l->conv_out, s->att, s->y, s->h, n, d));
    TRY(be->ops->rmsnorm(be, s->xn, s->h, &l->ffn_norm, n, d, hp->eps));
    return ffn_block(e, sg, l, n);
}

/* The rows that asked for output through the final norm (and the LM head), in chunks of
 * ENGINE_HEAD_ROWS on a device backend (whose logits buffer holds one chunk). */
static int head_forward(struct exsa_engine *e, struct stage *sg, const struct step *st,
                        enum head_out what, float *out)
{
    const struct hparams *hp = &e->m->hp;
    struct backend *be = sg->be;
    struct acts *s = &sg->a;
    const int d = hp->dim, V = hp->vocab_size;
    const int chunk = be->host_memory ? st->n_out : ENGINE_HEAD_ROWS;
    const size_t width = what == HEAD_LOGITS ? (size_t)V : (size_t)d;
    for (int r0 = 0; r0 < st->n_out; r0 += chunk) {
        const int nr = st->n_out - r0 < chunk ? st->n_out - r0 : chunk;
        float *dst = out + (size_t)r0 * width;
        TRY(be->ops->gather(be, st, s->xn, s->h, r0, nr, d));
        TRY(be->ops->rmsnorm(be, s->xn, s->xn, &e->w.out_norm, nr, d, hp->eps));
        const float *res = s->xn;
        if (what == HEAD_LOGITS) {
            float *y = be->host_memory ? dst : s->logits;
            TRY(be->ops->matmul(be, &e->w.output, 0, s->xn, y, nr));
            discard(be, s->xn);
            res = y;
        }
        if (be->host_memory && res != dst)
            memcpy(dst, res, sizeof(float) * nr * width);
        else if (!be->host_memory)
            TRY(be->ops->download(be, dst, res, sizeof(float) * nr * width));
    }
    return 0;
}

/* One stage between its backend's begin and end: its input (the embeddings, or the hidden
 * state of the previous stage), its layers, and the head if it has it. */
static int stage_forward(struct exsa_engine *e, int k, const struct step *st, enum head_out what,
                         float *out)
{
    struct stage *sg = &e->stages[k];
    struct backend *be = sg->be;
    const size_t h_bytes = sizeof(float) * (size_t)st->n * e->m->hp.dim;
    if (sg->embed)
        TRY(be->ops->embed(be, st, &e->w.tok_embd, sg->a.h));
    else
        TRY(backend_transfer(be, sg->a.h, e->stages[k - 1].be, e->stages[k - 1].a.h, h_bytes));
    for (int i = sg->l0; i < sg->l1; i++)
        TRY(layer_forward(e, sg, st, &e->w.layers[i]));
    return sg->head && st->n_out > 0 ? head_forward(e, sg, st, what, out) : 0;
}

int lfm2_forward(struct exsa_engine *e, const struct step *st, enum head_out what, float *out)
{
    for (int k = 0; k < e->n_stages; k++) {
        struct backend *be = e->stages[k].be;
        int rc = be->ops->begin ? be->ops->begin(be, st) : 0;
        if (rc == 0)
            rc = stage_forward(e, k, st, what, out);
        int end = be->ops->end ? be->ops->end(be) : 0; /* closes the step even after an error */
        if (rc < 0 || end < 0)
            return rc < 0 ? rc : end;
    }
    return 0;
}
