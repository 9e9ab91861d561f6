/*
 * engine.c: struct exsa_engine: creation (backend, sequence cache, scratch carved from one
 * allocation), exsa_decode (checks the whole batch and reserves KV blocks before anything
 * changes, then runs the model's forward pass), and the sequence operations the scheduler
 * needs (new, free, fork, truncate, snapshot, restore). One engine is used by one thread.
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
}

static int alloc_scratch(struct exsa_engine *e)
{
    const struct hparams *hp = &e->m->hp;
    size_t nb = (size_t)e->p.n_batch, d = (size_t)hp->dim;
    size_t qd = (size_t)hp->n_heads * hp->head_dim, kvd = 0;
    for (int l = 0; l < hp->n_layers; l++)
        if ((size_t)hp->n_kv_heads[l] * hp->head_dim > kvd)
            kvd = (size_t)hp->n_kv_heads[l] * hp->head_dim;
    size_t wide = 3 * d > qd + 2 * kvd ? 3 * d : qd + 2 * kvd;
    size_t att = qd > d ? qd : d;
    size_t hid = (size_t)hp->hidden_dim;
    size_t floats = nb * (3 * d + wide + att + 2 * hid);
    size_t bytes = floats * sizeof(float) + nb * (sizeof(float *) + sizeof(int32_t)) + 64;
    char *mem = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!mem)
        return EXSA_ENOMEM;
    e->scratch_mem = mem;
    float *f = (float *)mem;
    e->s.h = f, f += nb * d;
    e->s.xn = f, f += nb * d;
    e->s.y = f, f += nb * d;
    e->s.wide = f, f += nb * wide;
    e->s.att = f, f += nb * att;
    e->s.gate = f, f += nb * hid;
    e->s.up = f, f += nb * hid;
    e->s.state = (float **)f;
    e->s.rows = (int32_t *)(e->s.state + nb);
    return 0;
}

static struct backend *make_backend(const struct exsa_engine_params *p, char *err, size_t errlen)
{
    switch (p->backend) {
    case EXSA_BACKEND_REF:
        return backend_ref_create();
    case EXSA_BACKEND_CPU:
        return backend_cpu_create(p->n_threads);
    default:
        snprintf(err, errlen, "backend cuda: this build has no CUDA support (build with "
                 "make CUDA=1 on a machine with the CUDA toolkit)");
        return NULL;
    }
}

static int prepare_one(struct tensor *t, void *arg)
{
    struct backend *be = arg;
    return be->ops->prepare(be, t);
}

/* Lets the backend repack every matrix once (the copy is kept with the model). */
static int prepare_weights(struct exsa_engine *e)
{
    if (!e->be->ops->prepare)
        return 0;
    return model_for_each_matrix(e->m, prepare_one, e->be) < 0 ? EXSA_ENOMEM : 0;
}

int exsa_engine_create(struct exsa_model *m, const struct exsa_engine_params *p,
                       struct exsa_engine **out, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen)
        err = dummy, errlen = sizeof(dummy);
    struct exsa_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return EXSA_ENOMEM;
    e->m = m;
    if (p)
        e->p = *p;
    else
        exsa_engine_params_default(&e->p);
    resolve_params(&e->p, &m->hp);
    int rc = EXSA_ENOMEM;
    if (e->p.gpu_layers > 0 && e->p.backend != EXSA_BACKEND_CUDA) {
        /* Offload is a CUDA-build feature; accepting it and running on the CPU would hide it. */
        snprintf(err, errlen, "GPU_LAYERS=%d asks for GPU offload, but this build has no CUDA "
                 "backend: set GPU_LAYERS=0 (-ngl 0) to run on the CPU", e->p.gpu_layers);
        rc = EXSA_EUNSUPPORTED;
        goto fail;
    }
    e->be = make_backend(&e->p, err, errlen);
    if (!e->be) {
        rc = e->p.backend == EXSA_BACKEND_CUDA ? EXSA_EUNSUPPORTED : EXSA_ENOMEM;
        goto fail;
    }
    if (kv_create(&m->hp, e->p.n_seq_max, e->p.n_ctx, 0, &e->kv) < 0 || alloc_scratch(e) < 0 ||
        prepare_weights(e) < 0) {
        snprintf(err, errlen, "out of memory creating an engine (%d sequences x %d positions)",
                 e->p.n_seq_max, e->p.n_ctx);
        goto fail;
    }
    *out = e;
    return 0;
fail:
    exsa_engine_free(e);
    return rc;
}

void exsa_engine_free(struct exsa_engine *e)
{
    if (!e)
        return;
    if (e->be)
        e->be->ops->free(e->be);
    kv_free(e->kv);
    free(e->scratch_mem);
    free(e);
}

/* Checks every entry and reserves KV blocks; on failure nothing has changed. */
static int check_batch(struct exsa_engine *e, const struct exsa_batch *b, int32_t *next)
{
    struct kv_cache *kv = e->kv;
    if (b->n <= 0 || b->n > e->p.n_batch || !b->token || !b->pos || !b->seq)
        return EXSA_EINVAL;
    for (int s = 0; s < kv->n_seq_max; s++)
        next[s] = kv->seqs[s].len;
    for (int i = 0; i < b->n; i++) {
        int s = b->seq[i];
        if (!kv_seq_valid(kv, s))
            return EXSA_EINVAL;
        if (b->token[i] < 0 || b->token[i] >= e->m->hp.vocab_size)
            return EXSA_ERANGE;
        if (b->pos[i] != next[s] || b->pos[i] >= e->p.n_ctx)
            return EXSA_ERANGE;
        next[s]++;
    }
    int need = 0;
    for (int s = 0; s < kv->n_seq_max; s++) {
        struct kv_seq *q = &kv->seqs[s];
        if (q->used)
            need += (next[s] + KV_BLOCK - 1) / KV_BLOCK - q->n_blocks;
    }
    if (need > kv->n_free)
        return EXSA_ENOMEM;
    for (int s = 0; s < kv->n_seq_max; s++)
        if (kv->seqs[s].used && kv_reserve(kv, s, next[s]) < 0)
            return EXSA_ENOMEM;
    return 0;
}

int exsa_decode(struct exsa_engine *e, const struct exsa_batch *b, float *logits_out)
{
    int32_t nexts[e->kv->n_seq_max];
    int rc = check_batch(e, b, nexts);
    if (rc < 0)
        return rc;
    uint8_t *want = (uint8_t *)e->s.rows;
    for (int i = 0; i < b->n; i++)
        want[i] = b->logits ? b->logits[i] != 0 : i == b->n - 1;
    struct batch_view v = {b->n, b->pos, b->seq};
    lfm2_forward(e, b->token, &v, want, logits_out);
    for (int s = 0; s < e->kv->n_seq_max; s++)
        if (e->kv->seqs[s].used)
            e->kv->seqs[s].len = nexts[s];
    return 0;
}

int exsa_seq_new(struct exsa_engine *e)
{
    return kv_seq_new(e->kv);
}

void exsa_seq_free(struct exsa_engine *e, int seq)
{
    kv_seq_free(e->kv, seq);
}

int exsa_seq_len(const struct exsa_engine *e, int seq)
{
    return kv_seq_valid(e->kv, seq) ? e->kv->seqs[seq].len : EXSA_EINVAL;
}

int exsa_seq_fork(struct exsa_engine *e, int src)
{
    return kv_fork(e->kv, src);
}

int exsa_seq_truncate(struct exsa_engine *e, int seq, int n_pos)
{
    return kv_truncate(e->kv, seq, n_pos);
}

int exsa_seq_snapshot(struct exsa_engine *e, int seq, struct exsa_snapshot **out)
{
    if (!kv_seq_valid(e->kv, seq))
        return EXSA_EINVAL;
    struct exsa_snapshot *s = calloc(1, sizeof(*s));
    size_t nf = kv_conv_floats(e->kv);
    if (!s || !(s->conv = malloc(sizeof(float) * (nf + 1)))) {
        free(s);
        return EXSA_ENOMEM;
    }
    s->len = e->kv->seqs[seq].len;
    s->conv_floats = nf;
    memcpy(s->conv, e->kv->seqs[seq].conv, sizeof(float) * nf);
    *out = s;
    return 0;
}

int exsa_seq_restore(struct exsa_engine *e, int seq, const struct exsa_snapshot *s)
{
    if (!kv_seq_valid(e->kv, seq) || s->conv_floats != kv_conv_floats(e->kv) ||
        s->len > e->kv->seqs[seq].len)
        return EXSA_EINVAL;
    memcpy(e->kv->seqs[seq].conv, s->conv, sizeof(float) * s->conv_floats);
    return kv_truncate(e->kv, seq, s->len);
}

void exsa_snapshot_free(struct exsa_snapshot *s)
{
    if (s) {
        free(s->conv);
        free(s);
    }
}
