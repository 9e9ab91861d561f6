/*
 * engine-step.c: exsa_decode (checks the whole batch and reserves KV blocks before anything
 * changes, builds the step's host arrays, runs the model's forward pass, and commits the new
 * lengths and conv slots only when every backend reported success) and the sequence
 * operations the scheduler needs (new, free, fork, truncate, snapshot, restore), which go
 * through the backends that hold each layer's state.
 */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* Gives back the blocks reserved past every sequence's length (after a failed step). */
static void unreserve(struct kv_cache *kv)
{
    for (int s = 0; s < kv->n_seq_max; s++)
        if (kv->seqs[s].used)
            kv_truncate(kv, s, kv->seqs[s].len);
}

/* Checks every entry and reserves KV blocks; on failure nothing has changed. */
static int check_batch(struct exsa_engine *e, const struct exsa_batch *b, int32_t *next)
{
    struct kv_cache *kv = e->kv;
    if (!b || b->n <= 0 || b->n > e->p.n_batch || !b->token || !b->pos || !b->seq)
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
        if (b->job_len && b->job_len[i] < 1)
            return EXSA_EINVAL;
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
        if (kv->seqs[s].used && kv_reserve(kv, s, next[s]) < 0) {
            unreserve(kv);
            return EXSA_ENOMEM;
        }
    return 0;
}

static int decode(struct exsa_engine *e, const struct exsa_batch *b, enum head_out what, float *out)
{
    if (!e)
        return EXSA_EINVAL;
    int32_t nexts[e->kv->n_seq_max];
    int rc = check_batch(e, b, nexts);
    if (rc < 0)
        return rc;
    struct step st;
    kv_step_build(e->kv, &e->sb, b->n, b->token, b->pos, b->seq, b->logits, &st);
    st.job_len = b->job_len;
    rc = lfm2_forward(e, &st, what, out);
    if (rc < 0) {
        unreserve(e->kv); /* lengths and conv slots were not touched: as before the call */
        return rc;
    }
    kv_commit(e->kv, &st, nexts);
    return 0;
}

int exsa_decode(struct exsa_engine *e, const struct exsa_batch *b, float *logits_out)
{
    return decode(e, b, HEAD_LOGITS, logits_out);
}

int exsa_decode_hidden(struct exsa_engine *e, const struct exsa_batch *b, float *hidden_out)
{
    return decode(e, b, HEAD_HIDDEN, hidden_out);
}

/* ---- sequences ------------------------------------------------------------------------------ */

struct kv_cache *engine_kv(const struct exsa_engine *e)
{
    return e->kv;
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
    return kv_snapshot(e->kv, seq, out);
}

int exsa_seq_restore(struct exsa_engine *e, int seq, const struct exsa_snapshot *s)
{
    return kv_restore(e->kv, seq, s);
}

void exsa_snapshot_free(struct exsa_snapshot *s)
{
    if (s) {
        free(s->conv);
        free(s);
    }
}
