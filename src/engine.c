/*
 * engine.c: struct exsa_engine: creation (backends, the split of layers into stages, device
 * memory checked before anything is allocated, the sequence cache, per-stage activations, the
 * engine's prepared copy of the weights) and freeing. The step and the sequence operations are
 * in engine-step.c. One engine is used by one thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"

void exsa_engine_params_default(struct exsa_engine_params *p)
{
    memset(p, 0, sizeof(*p));
    p->backend = EXSA_BACKEND_CPU;
    p->n_seq_max = 1;
    p->n_batch = 512;
}

static void resolve_params(struct exsa_engine_params *p, const struct hparams *hp)
{
    if (p->n_ctx <= 0)
        p->n_ctx = hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
    if (p->n_seq_max <= 0)
        p->n_seq_max = 1;
    if (p->n_batch <= 0)
        p->n_batch = 512;
    if (p->n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        p->n_threads = c > 0 ? (int)c : 1;
    }
    if (p->gpu_layers < 0)
        p->gpu_layers = 0;
    if (p->backend == EXSA_BACKEND_CUDA && p->gpu_layers == 0)
        p->gpu_layers = hp->n_layers;
    if (p->gpu_layers > hp->n_layers)
        p->gpu_layers = hp->n_layers;
}

/* ---- activations ---------------------------------------------------------------------------- */

static size_t acts_floats(const struct hparams *hp, int n_batch, bool device_head, size_t off[8])
{
    size_t nb = (size_t)n_batch, d = (size_t)hp->dim;
    size_t qd = (size_t)hp->n_heads * hp->head_dim, kvd = 0;
    for (int l = 0; l < hp->n_layers; l++)
        if ((size_t)hp->n_kv_heads[l] * hp->head_dim > kvd)
            kvd = (size_t)hp->n_kv_heads[l] * hp->head_dim;
    size_t wide = 3 * d > qd + 2 * kvd ? 3 * d : qd + 2 * kvd;
    size_t att = qd > d ? qd : d;
    size_t hid =
        (size_t)(hp->hidden_dim > hp->expert_hidden_dim ? hp->hidden_dim : hp->expert_hidden_dim);
    /* widths, 16-float aligned so each array starts on a 64-byte boundary */
    size_t w[8] = {d, d, d, wide, att, hid, hid, 0};
    size_t n = 0;
    for (int i = 0; i < 7; i++) {
        off[i] = n;
        n += (nb * w[i] + 15) & ~(size_t)15;
    }
    off[7] = n;
    if (device_head)
        n += (size_t)ENGINE_HEAD_ROWS * hp->vocab_size;
    return n;
}

static int alloc_acts(struct exsa_engine *e, struct stage *s)
{
    size_t off[8];
    const bool dev_head = s->head && !s->be->host_memory;
    size_t floats = acts_floats(&e->m->hp, e->p.n_batch, dev_head, off);
    s->mem_bytes = floats * sizeof(float);
    float *f = s->mem = s->be->ops->alloc(s->be, s->mem_bytes);
    if (!f)
        return EXSA_ENOMEM;
    float **dst[7] = {&s->a.h, &s->a.xn, &s->a.y, &s->a.wide, &s->a.att, &s->a.gate, &s->a.up};
    for (int i = 0; i < 7; i++)
        *dst[i] = f + off[i];
    s->a.logits = dev_head ? f + off[7] : NULL;
    return 0;
}

/* ---- backends and stages -------------------------------------------------------------------- */

static int make_backends(struct exsa_engine *e, char *err, size_t errlen)
{
    const struct hparams *hp = &e->m->hp;
    struct backend_config c = {e->p.n_threads, e->p.n_batch, e->p.n_ctx,
                               e->p.n_seq_max, hp,           e->p.deterministic};
    if (e->p.gpu_layers > 0) {
        e->gpu = backend_cuda_create(&c, err, errlen);
        if (!e->gpu)
            return EXSA_EUNSUPPORTED;
    }
    if (e->p.gpu_layers < hp->n_layers) {
        if (e->p.backend == EXSA_BACKEND_REF)
            e->cpu = backend_ref_create(&c);
        else
            e->cpu = backend_cpu_create(&c);
        if (!e->cpu) {
            snprintf(err, errlen, "out of memory creating the CPU backend");
            return EXSA_ENOMEM;
        }
    }
    return 0;
}

/* CPU layers first, then the GPU layers and the head. */
static void plan_stages(struct exsa_engine *e)
{
    const int L = e->m->hp.n_layers, n_cpu = L - e->p.gpu_layers;
    e->n_stages = 0;
    if (n_cpu > 0)
        e->stages[e->n_stages++] = (struct stage){.be = e->cpu, .l0 = 0, .l1 = n_cpu};
    if (e->gpu)
        e->stages[e->n_stages++] = (struct stage){.be = e->gpu, .l0 = n_cpu, .l1 = L};
    e->stages[0].embed = true;
    e->stages[e->n_stages - 1].head = true;
    for (int k = 0; k < e->n_stages; k++)
        for (int l = e->stages[k].l0; l < e->stages[k].l1; l++)
            e->layer_be[l] = e->stages[k].be;
}

/* K/V element type per layer; an f16 cache is refused where no layer could use it. */
static int plan_kv_types(struct exsa_engine *e, char *err, size_t errlen)
{
    const struct hparams *hp = &e->m->hp;
    for (int l = 0; l < hp->n_layers; l++) {
        bool gpu = e->layer_be[l] == e->gpu;
        int t = gpu ? EXSA_DTYPE_F16 : EXSA_DTYPE_F32;
        if (e->p.kv_type == EXSA_KV_F32)
            t = EXSA_DTYPE_F32;
        e->kv_type[l] = t;
    }
    if (e->p.kv_type == EXSA_KV_F16 && !e->gpu) {
        snprintf(err, errlen,
                 "KV_TYPE=f16 is a GPU cache type and no layer runs on the GPU: "
                 "use KV_TYPE=f32, or offload layers with GPU_LAYERS");
        return EXSA_EUNSUPPORTED;
    }
    return 0;
}

/* ---- weights -------------------------------------------------------------------------------- */

/* Calls fn on every tensor of the engine's copy (norms and vectors included) with the backend
 * that uses it; stops at the first negative return. */
static int for_each_weight(struct exsa_engine *e,
                           int (*fn)(struct exsa_engine *e, struct backend *be, struct tensor *t,
                                     void *arg),
                           void *arg)
{
    struct weights *w = &e->w;
    struct backend *first = e->stages[0].be, *last = e->stages[e->n_stages - 1].be;
    int rc = fn(e, first, &w->tok_embd, arg);
    if (rc == 0)
        rc = fn(e, last, &w->out_norm, arg);
    if (rc == 0)
        rc = fn(e, last, &w->output, arg);
    for (int i = 0; rc == 0 && i < e->m->hp.n_layers; i++) {
        struct layer *l = &w->layers[i];
        struct tensor *ts[] = {&l->attn_norm, &l->ffn_norm, &l->conv_in,  &l->conv_w,
                               &l->conv_out,  &l->wq,       &l->wk,       &l->wv,
                               &l->wo,        &l->q_norm,   &l->k_norm,   &l->ffn_gate,
                               &l->ffn_up,    &l->ffn_down, &l->router,   &l->exp_bias,
                               &l->gate_exps, &l->up_exps,  &l->down_exps};
        for (size_t k = 0; rc == 0 && k < sizeof(ts) / sizeof(ts[0]); k++)
            if (ts[k]->data)
                rc = fn(e, e->layer_be[i], ts[k], arg);
    }
    return rc;
}

struct progress {
    uint64_t done, total;
    int shown; /* percent last printed, -1 before the first */
    bool tty;
};

static int prepare_one(struct exsa_engine *e, struct backend *be, struct tensor *t, void *arg)
{
    struct progress *p = arg;
    int rc = be->ops->prepare ? be->ops->prepare(be, t) : 0;
    if (rc < 0 || be->host_memory || !p->tty || !p->total)
        return rc;
    p->done += t->nbytes;
    int pct = (int)(100 * p->done / p->total);
    if (pct != p->shown) {
        fprintf(stderr, "\rexsa: uploading weights to %s: %3d%% (%.2f of %.2f GB)", be->ops->name,
                pct, p->done / 1e9, p->total / 1e9);
        p->shown = pct;
    }
    return 0;
}

static int unprepare_one(struct exsa_engine *e, struct backend *be, struct tensor *t, void *arg)
{
    if (be->ops->unprepare)
        be->ops->unprepare(be, t);
    t->be_data = NULL;
    return 0;
}

static int copy_weights(struct exsa_engine *e)
{
    const struct exsa_model *m = e->m;
    e->w.tok_embd = m->tok_embd;
    e->w.out_norm = m->out_norm;
    e->w.output = m->output;
    e->w.layers = malloc(sizeof(struct layer) * (size_t)m->hp.n_layers);
    if (!e->w.layers)
        return EXSA_ENOMEM;
    memcpy(e->w.layers, m->layers, sizeof(struct layer) * (size_t)m->hp.n_layers);
    return 0;
}

static int prepare_weights(struct exsa_engine *e)
{
    struct progress p = {0, e->gpu_need.weights, -1, isatty(2) != 0};
    int rc = for_each_weight(e, prepare_one, &p);
    if (p.shown >= 0)
        fprintf(stderr, "\n");
    return rc;
}

/* ---- device memory -------------------------------------------------------------------------- */

static int sum_weight_bytes(struct exsa_engine *e, struct backend *be, struct tensor *t, void *arg)
{
    if (be == e->gpu)
        *(uint64_t *)arg += t->nbytes;
    return 0;
}

/* What the GPU stage will take: weights (tied ones counted twice), K/V pools, activations. */
static void plan_gpu_need(struct exsa_engine *e)
{
    size_t off[8];
    struct gpu_need *g = &e->gpu_need;
    g->weights = 0;
    for_each_weight(e, sum_weight_bytes, &g->weights);
    g->kv = kv_bytes_for(&e->m->hp, e->p.n_seq_max, e->p.n_ctx, 0, e->layer_be, e->kv_type, e->gpu);
    g->acts = acts_floats(&e->m->hp, e->p.n_batch, true, off) * sizeof(float);
}

/* Refuses, before allocating, a model or context that does not fit the device. */
static int check_device_memory(struct exsa_engine *e, char *err, size_t errlen)
{
    size_t free_b = 0, total_b = 0;
    if (!e->gpu || backend_cuda_mem_info(&free_b, &total_b) < 0)
        return 0;
    const uint64_t weights = e->gpu_need.weights;
    const size_t kv = e->gpu_need.kv, acts = e->gpu_need.acts;
    double need = (double)weights + kv + acts, mib = 1024.0 * 1024.0;
    if (need <= (double)free_b)
        return 0;
    snprintf(err, errlen,
             "the GPU has %.0f MiB free of %.0f MiB, and %d layers need %.0f MiB "
             "(weights %.0f, KV cache %.0f for %d x %d positions, activations %.0f): offload "
             "fewer layers (GPU_LAYERS) or shrink CONTEXT_SIZE",
             free_b / mib, total_b / mib, e->p.gpu_layers, need / mib, weights / mib, kv / mib,
             e->p.n_seq_max, e->p.n_ctx, acts / mib);
    return EXSA_ENOMEM;
}

/* ---- create / free -------------------------------------------------------------------------- */

static void describe(struct exsa_engine *e)
{
    const int L = e->m->hp.n_layers;
    size_t o = 0, n = sizeof(e->describe);
    for (int k = 0; k < e->n_stages && o < n; k++) {
        const struct stage *s = &e->stages[k];
        o +=
            (size_t)snprintf(e->describe + o, n - o, "%slayers %d-%d%s on %s", k ? "; " : "", s->l0,
                             s->l1 - 1, s->head ? " and the output head" : "", s->be->ops->name);
    }
    if (e->gpu && o < n) {
        const uint64_t w = e->gpu_need.weights;
        const size_t kv = e->gpu_need.kv;
        const struct stage *g = &e->stages[e->n_stages - 1];
        int kvt = EXSA_DTYPE_F16;
        for (int l = 0; l < L; l++)
            if (e->layer_be[l] == e->gpu && e->m->hp.n_kv_heads[l] > 0)
                kvt = e->kv_type[l];
        snprintf(e->describe + o, n - o,
                 " (%d of %d layers on the GPU; device memory: "
                 "weights %.0f MiB, KV cache %.0f MiB %s, activations %.0f MiB)",
                 e->p.gpu_layers, L, w / 1048576.0, kv / 1048576.0,
                 kvt == EXSA_DTYPE_F16 ? "f16" : "f32", g->mem_bytes / 1048576.0);
    }
}

static int build(struct exsa_engine *e, char *err, size_t errlen)
{
    const struct hparams *hp = &e->m->hp;
    e->layer_be = calloc((size_t)hp->n_layers, sizeof(*e->layer_be));
    e->kv_type = calloc((size_t)hp->n_layers, sizeof(int));
    if (!e->layer_be || !e->kv_type || copy_weights(e) < 0)
        return EXSA_ENOMEM;
    if (e->m->weights_released && e->p.gpu_layers < hp->n_layers) {
        snprintf(err, errlen,
                 "this model's host weights were released after a GPU upload: "
                 "load it again to run layers on the CPU");
        return EXSA_EINVAL;
    }
    int rc = make_backends(e, err, errlen);
    if (rc < 0)
        return rc;
    plan_stages(e);
    if ((rc = plan_kv_types(e, err, errlen)) < 0)
        return rc;
    if (e->gpu)
        plan_gpu_need(e);
    if ((rc = check_device_memory(e, err, errlen)) < 0)
        return rc;
    rc = kv_create(hp, e->p.n_seq_max, e->p.n_ctx, 0, e->layer_be, e->kv_type, &e->kv);
    for (int k = 0; rc == 0 && k < e->n_stages; k++)
        rc = alloc_acts(e, &e->stages[k]);
    if (rc == 0)
        rc = kv_step_buf_init(&e->sb, e->kv, e->p.n_batch);
    if (rc == 0)
        rc = prepare_weights(e);
    if (rc < 0)
        snprintf(err, errlen,
                 "out of %s memory creating an engine (%d sequences x %d "
                 "positions, batch %d)",
                 e->gpu ? "device or host" : "host", e->p.n_seq_max, e->p.n_ctx, e->p.n_batch);
    return rc;
}

int exsa_engine_create(struct exsa_model *m, const struct exsa_engine_params *p,
                       struct exsa_engine **out, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen)
        err = dummy, errlen = sizeof(dummy);
    err[0] = 0;
    struct exsa_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return EXSA_ENOMEM;
    e->m = m;
    if (p)
        e->p = *p;
    else
        exsa_engine_params_default(&e->p);
    resolve_params(&e->p, &m->hp);
    int rc = build(e, err, errlen);
    if (rc < 0) {
        exsa_engine_free(e);
        return rc;
    }
    describe(e);
    *out = e;
    return 0;
}

const char *exsa_engine_describe(const struct exsa_engine *e)
{
    return e->describe;
}

void exsa_engine_free(struct exsa_engine *e)
{
    if (!e)
        return;
    if (e->w.layers && e->n_stages > 0)
        for_each_weight(e, unprepare_one, NULL);
    kv_free(e->kv);
    for (int k = 0; k < e->n_stages; k++)
        e->stages[k].be->ops->release(e->stages[k].be, e->stages[k].mem);
    kv_step_buf_free(&e->sb);
    if (e->cpu)
        e->cpu->ops->free(e->cpu);
    if (e->gpu)
        e->gpu->ops->free(e->gpu);
    free(e->w.layers);
    free(e->layer_be);
    free(e->kv_type);
    free(e);
}
