/*
 * sched-req.c: a scheduler request and its channel (the contract: scheduler.h; the structs:
 * sched-impl.h). The HTTP thread creates a request, submits it (sched.c), reads its channel and
 * puts it; the scheduler thread pushes text pieces and logprobs into the channel and finishes
 * it. The channel lives under the request's own mutex and condition variable; a request is
 * freed when its last reference is put.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sched-impl.h"

struct sched_req *sched_req_new(const int32_t *prompt, int n_prompt, const struct gen_params *gp,
                                unsigned model_gen)
{
    struct sched_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->gp = *gp;
    r->prompt = malloc(sizeof(int32_t) * (n_prompt > 0 ? n_prompt : 1));
    r->stop = calloc(gp->n_stop > 0 ? gp->n_stop : 1, sizeof(char *));
    int nb = gp->sp.n_logit_bias > 0 ? gp->sp.n_logit_bias : 1;
    r->bias_id = malloc(sizeof(int32_t) * nb);
    r->bias = malloc(sizeof(float) * nb);
    bool ok = r->prompt && r->stop && r->bias_id && r->bias;
    for (int i = 0; ok && i < gp->n_stop; i++)
        ok = (r->stop[i] = strdup(gp->stop[i])) != NULL;
    if (!ok) {
        r->gp.n_stop = gp->n_stop;
        atomic_init(&r->refs, 1);
        pthread_mutex_init(&r->mu, NULL);
        pthread_cond_init(&r->cv, NULL);
        sched_req_put(r);
        return NULL;
    }
    if (n_prompt > 0)
        memcpy(r->prompt, prompt, sizeof(int32_t) * n_prompt);
    if (gp->sp.n_logit_bias > 0) {
        memcpy(r->bias_id, gp->sp.logit_bias_id, sizeof(int32_t) * gp->sp.n_logit_bias);
        memcpy(r->bias, gp->sp.logit_bias, sizeof(float) * gp->sp.n_logit_bias);
    }
    r->n_prompt = n_prompt;
    r->gp.stop = (const char *const *)r->stop;
    r->gp.sp.logit_bias_id = r->bias_id;
    r->gp.sp.logit_bias = r->bias;
    r->model_gen = model_gen;
    r->seq = -1;
    atomic_init(&r->refs, 1);
    atomic_init(&r->cancelled, false);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->res.n_prompt = n_prompt;
    return r;
}

struct sched_req *sched_embed_new(const int32_t *prompt, int n_prompt, enum sched_pool pool,
                                  unsigned model_gen)
{
    struct gen_params gp;
    gen_params_default(&gp);
    struct sched_req *r = sched_req_new(prompt, n_prompt, &gp, model_gen);
    if (r) {
        r->embed = true;
        r->pool = pool;
    }
    return r;
}

int sched_embed_vector(struct sched_req *r, float *out, int max)
{
    pthread_mutex_lock(&r->mu);
    int rc = !r->embed || !r->done || r->status || r->finish == GEN_CANCELLED || !r->pooled
                 ? EXSA_EINVAL
             : r->dim > max ? EXSA_ERANGE
                            : r->dim;
    double scale = r->pool == SCHED_POOL_MEAN && r->n_prompt > 0 ? 1.0 / r->n_prompt : 1.0;
    for (int i = 0; i < rc; i++)
        out[i] = (float)(r->pooled[i] * scale);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void sched_req_get(struct sched_req *r)
{
    atomic_fetch_add(&r->refs, 1);
}

void sched_req_put(struct sched_req *r)
{
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    for (int i = 0; r->stop && i < r->gp.n_stop; i++)
        free(r->stop[i]);
    free(r->stop);
    free(r->prompt);
    free(r->bias_id);
    free(r->bias);
    free(r->text);
    free(r->pieces);
    free(r->piece_toks);
    free(r->toks);
    free(r->lp_top);
    free(r->lp_bytes);
    free(r->pooled);
    for (int i = 0; i < r->n_choices; i++)
        sched_req_put(r->choices[i]);
    free(r->choices);
    if (r->attached_free)
        r->attached_free(r->attached);
    free(r->bounds);
    free(r->ck);
    for (int i = 0; i < r->n_snaps; i++)
        exsa_snapshot_free(r->snaps[i]);
    free(r->snaps);
    free(r->sampled);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

/* Makes room for need elements of size sz in *p (capacity *cap); false when out of memory. */
static bool room(void **p, size_t *cap, size_t need, size_t sz)
{
    if (need <= *cap)
        return true;
    void *q = realloc(*p, need * 2 * sz);
    if (!q)
        return false;
    *p = q;
    *cap = need * 2;
    return true;
}

/* Copies one logprob into r's channel (its bytes into lp_bytes: the reader may outlive the
 * tokenizer). Called with r->mu held. */
static bool put_lp(struct sched_req *r, const struct gen_logprob *g, struct sched_lp *out)
{
    if (!room((void **)&r->lp_bytes, &r->cap_bytes, r->n_bytes + g->len + 1, 1))
        return false;
    memcpy(r->lp_bytes + r->n_bytes, g->bytes, g->len);
    *out = (struct sched_lp){g->id, g->logprob, (uint32_t)r->n_bytes, (uint32_t)g->len};
    r->n_bytes += g->len;
    return true;
}

/* Appends a sampled token's logprobs to r's channel. Called with r->mu held. */
static bool put_tok(struct sched_req *r, const struct tok_lp *lp)
{
    if (!room((void **)&r->toks, &r->cap_toks, (size_t)r->n_toks + 1, sizeof *r->toks) ||
        !room((void **)&r->lp_top, &r->cap_top, (size_t)(r->n_top + lp->n_top), sizeof *r->lp_top))
        return false;
    struct sched_tok *t = &r->toks[r->n_toks];
    t->top = r->n_top;
    t->n_top = 0;
    if (!put_lp(r, &lp->chosen, &t->tok))
        return false;
    for (int i = 0; i < lp->n_top; i++, t->n_top++)
        if (!put_lp(r, &lp->top[i], &r->lp_top[r->n_top++]))
            return false;
    r->n_toks++;
    return true;
}

/* Appends one sampled token to r's channel: its logprobs when lp is set (an allocation
 * failure loses them, not the reply), then its piece of text (if any), and wakes the reader. */
void sched_req_push(struct sched_req *r, const char *text, size_t len, const struct tok_lp *lp)
{
    pthread_mutex_lock(&r->mu);
    if (lp)
        put_tok(r, lp);
    if (!len)
        goto out;
    if (r->len + len + 1 > r->cap) {
        size_t cap = (r->len + len + 1) * 2;
        char *t = realloc(r->text, cap);
        if (!t)
            goto out; /* the piece is lost; the reply goes on */
        r->text = t;
        r->cap = cap;
    }
    if (r->n_pieces == r->cap_pieces) {
        int cap = r->cap_pieces ? r->cap_pieces * 2 : 16;
        int *p = realloc(r->pieces, sizeof(int) * cap),
            *q = p ? realloc(r->piece_toks, sizeof(int) * cap) : NULL;
        if (p)
            r->pieces = p;
        if (q)
            r->piece_toks = q;
        if (!p || !q)
            goto out;
        r->cap_pieces = cap;
    }
    memcpy(r->text + r->len, text, len);
    r->len += len;
    r->text[r->len] = 0;
    r->piece_toks[r->n_pieces] = r->n_toks;
    r->pieces[r->n_pieces++] = (int)len;
    pthread_cond_broadcast(&r->cv);
out:
    pthread_mutex_unlock(&r->mu);
}

void sched_req_push_text(struct sched_req *r, const char *text, size_t len)
{
    if (len)
        sched_req_push(r, text, len, NULL);
}

/* Ends r's reply: with finish when status == 0, else with an error of that HTTP status. */
void sched_req_finish(struct sched_req *r, enum gen_finish finish, int status, const char *msg)
{
    pthread_mutex_lock(&r->mu);
    if (!r->done) {
        r->done = true;
        r->finish = finish;
        r->status = status;
        snprintf(r->message, sizeof r->message, "%s", msg ? msg : "");
        r->res.t_done = sched_now();
        if (r->gen) {
            r->res.n_gen = gen_n_tokens(r->gen);
            const char *why = gen_empty_reason(r->gen);
            snprintf(r->res.empty_reason, sizeof r->res.empty_reason, "%s", why ? why : "");
        }
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

int sched_read(struct sched_req *r, int timeout_ms, struct sched_chunk *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&r->mu);
    if (!r->len && !r->done && timeout_ms > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long ns = ts.tv_nsec + (long)(timeout_ms % 1000) * 1000000L;
        ts.tv_sec += timeout_ms / 1000 + ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        while (!r->len && !r->done)
            if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT)
                break;
    }
    int got = r->len || r->done;
    if (got) {
        out->text = r->text ? r->text : strdup("");
        out->len = r->len;
        out->piece_len = r->pieces;
        out->n_pieces = r->n_pieces;
        out->piece_toks = r->piece_toks;
        out->toks = r->toks;
        out->n_toks = r->n_toks;
        out->lp_top = r->lp_top;
        out->lp_bytes = r->lp_bytes;
        r->text = NULL;
        r->pieces = r->piece_toks = NULL;
        r->len = r->cap = 0;
        r->n_pieces = r->cap_pieces = 0;
        r->toks = NULL, r->lp_top = NULL, r->lp_bytes = NULL;
        r->n_toks = r->n_top = 0;
        r->n_bytes = r->cap_toks = r->cap_top = r->cap_bytes = 0;
        out->done = r->done;
        out->finish = r->finish;
        out->status = r->status;
        snprintf(out->message, sizeof out->message, "%s", r->message);
    }
    pthread_mutex_unlock(&r->mu);
    return got;
}

void sched_chunk_free(struct sched_chunk *c)
{
    free(c->text);
    free(c->piece_len);
    free(c->piece_toks);
    free(c->toks);
    free(c->lp_top);
    free(c->lp_bytes);
    memset(c, 0, sizeof *c);
}

void sched_req_result(struct sched_req *r, struct sched_result *res)
{
    pthread_mutex_lock(&r->mu);
    *res = r->res;
    pthread_mutex_unlock(&r->mu);
}

void sched_cancel(struct sched_req *r)
{
    atomic_store(&r->cancelled, true);
    for (int i = 0; i < r->n_choices; i++) /* set at submit, read-only after */
        atomic_store(&r->choices[i]->cancelled, true);
    struct sched *s = r->s;
    if (s) {
        pthread_mutex_lock(&s->mu);
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
}
