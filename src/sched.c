/*
 * sched.c: continuous batching over one engine (see scheduler.h for the contract): the queue,
 * the scheduler thread (admit, step, sample, retire; the prompt cache's checkpoints), model
 * loads, swaps and unloads, and the stats. The structs and their locking rules are in
 * sched-impl.h; a request and its channel are in sched-req.c.
 */
#include "sched-impl.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "model.h"
#include "pcache.h"

/* How long the requests of a model being replaced may run on before they end with a 503. */
#define SWAP_GRACE_S 60.0

double sched_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void sched_params_default(struct sched_params *p)
{
    memset(p, 0, sizeof *p);
    p->backend = EXSA_BACKEND_CPU;
    p->n_ctx = 4096;
    p->n_batch = 512;
    p->max_queue = 100;
    p->max_batch = 8;
    p->continuous = true;
    p->batch_timeout_ms = 0;
}

static int max_seqs(const struct sched *s);

/* Whether the queue is full: max_queue requests wait beyond those the free sequence slots
 * take at the next step (so MAX_QUEUE_SIZE=0 still serves up to max_batch at once). Called
 * with mu held. */
static bool queue_full(const struct sched *s)
{
    int free_slots = max_seqs(s) - s->n_active_shared;
    return s->n_queued >= s->p.max_queue + (free_slots > 0 ? free_slots : 0);
}

/* Whether n more requests fit in the queue (queue_full after the first n - 1 of them). */
static bool queue_fits(const struct sched *s, int n)
{
    int free_slots = max_seqs(s) - s->n_active_shared;
    return s->n_queued + n <= s->p.max_queue + (free_slots > 0 ? free_slots : 0);
}

void sched_req_attach(struct sched_req *r, void *p, void (*free_fn)(void *))
{
    r->attached = p;
    r->attached_free = free_fn;
}

/* Appends r to the queue with the scheduler's reference. Called with mu held. */
static void enqueue(struct sched *s, struct sched_req *r)
{
    r->s = s;
    r->res.t_submit = sched_now();
    atomic_fetch_add(&r->refs, 1); /* the scheduler's reference */
    r->next = NULL;
    if (s->qtail)
        s->qtail->next = r;
    else
        s->qhead = r;
    s->qtail = r;
    s->n_queued++;
}

int sched_submit_group(struct sched *s, struct sched_req *const *rs, int n)
{
    int rc = 0;
    if (n > 1 && !(rs[0]->choices = malloc(sizeof *rs[0]->choices * (size_t)(n - 1))))
        return EXSA_ENOMEM;
    pthread_mutex_lock(&s->mu);
    /* the current model's, or (while a replacement waits for its switch) the next one's */
    const unsigned gen = rs[0]->model_gen;
    bool stale = !(s->engine && gen == s->gen) && !(s->next_engine && gen == s->gen + 1);
    for (int i = 1; i < n; i++)
        stale |= rs[i]->model_gen != gen;
    if (s->closing || s->stop)
        rc = EXSA_ECANCELLED;
    else if (stale)
        rc = EXSA_ENOTFOUND;
    else if (!queue_fits(s, n))
        rc = EXSA_ENOMEM; /* all the choices, or none */
    for (int i = 0; !rc && i < n; i++) {
        enqueue(s, rs[i]);
        if (i > 0) {
            rs[i]->await_fork = true;
            sched_req_get(rs[i]);
            rs[0]->choices[rs[0]->n_choices++] = rs[i];
        }
    }
    if (!rc)
        pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (rc) {
        free(rs[0]->choices);
        rs[0]->choices = NULL;
    }
    return rc;
}

int sched_submit(struct sched *s, struct sched_req *r)
{
    return sched_submit_group(s, &r, 1);
}

/* ---- the scheduler thread ---------------------------------------------------------------- */

/* Takes r out of the running set: frees its sequence and sampler, drops the scheduler's ref. */
static void release_active(struct sched *s, int i)
{
    struct sched_req *r = s->active[i];
    if (r->seq >= 0 && s->engine)
        exsa_seq_free(s->engine, r->seq);
    r->seq = -1;
    for (int k = 0; k < r->n_choices; k++) /* no prefill to fork now: each does its own */
        r->choices[k]->await_fork = false;
    gen_free(r->gen);
    r->gen = NULL;
    s->active[i] = s->active[--s->n_active];
    sched_req_put(r);
}

/* Publishes the running set for sched_get_stats / sched_get_slots. Scheduler thread, with mu
 * held (n_past and the generator change only on this thread). */
static void publish_slots(struct sched *s)
{
    double now = sched_now();
    for (int i = 0; i < s->n_active; i++) {
        const struct sched_req *r = s->active[i];
        s->slots[i] = (struct sched_slot){
            .id = r->seq,
            .state = r->embed                  ? "embedding"
                     : r->n_past < r->n_prompt ? "prefill"
                                               : "generating",
            .n_prompt = r->n_prompt,
            .n_past = r->n_past,
            .n_decoded = r->gen ? gen_n_tokens(r->gen) : 0,
            .n_cached = r->n_cached,
            .seconds = now - r->res.t_submit,
        };
    }
    s->n_active_shared = s->n_active;
}

/* The first queued request of the current model (one tokenized for a replacement waits for the
 * switch), unlinked from the queue; NULL when there is none. Called with mu held. */
static struct sched_req *take_queued(struct sched *s)
{
    struct sched_req **pp = &s->qhead, *prev = NULL;
    while (*pp && (*pp)->model_gen != s->gen)
        prev = *pp, pp = &(*pp)->next;
    struct sched_req *r = *pp;
    if (!r)
        return NULL;
    *pp = r->next;
    if (s->qtail == r)
        s->qtail = prev;
    s->n_queued--;
    return r;
}

/* Ends every running request and the queued ones of the current model (all queued ones when
 * every_gen) with status/msg. Called with mu held. */
static void fail_all_of(struct sched *s, bool every_gen, int status, const char *msg)
{
    struct sched_req *r;
    while (every_gen && s->qhead) {
        r = s->qhead;
        s->qhead = r->next;
        s->n_queued--;
        sched_req_finish(r, GEN_CANCELLED, status, msg);
        sched_req_put(r);
    }
    if (every_gen)
        s->qtail = NULL;
    while ((r = take_queued(s))) {
        sched_req_finish(r, GEN_CANCELLED, status, msg);
        sched_req_put(r);
    }
    while (s->n_active > 0) {
        sched_req_finish(s->active[s->n_active - 1], GEN_CANCELLED, status, msg);
        release_active(s, s->n_active - 1);
    }
    s->n_active_shared = 0;
}

static void fail_all(struct sched *s, int status, const char *msg)
{
    fail_all_of(s, true, status, msg);
}

/* Drops queued requests whose client went away. Called with mu held. */
static void drop_cancelled_queued(struct sched *s)
{
    struct sched_req **pp = &s->qhead, *last = NULL;
    while (*pp) {
        struct sched_req *r = *pp;
        if (atomic_load(&r->cancelled)) {
            *pp = r->next;
            s->n_queued--;
            s->n_cancelled++;
            sched_req_finish(r, GEN_CANCELLED, 0, NULL);
            sched_req_put(r);
        } else {
            last = r;
            pp = &r->next;
        }
    }
    s->qtail = last;
}

static int max_seqs(const struct sched *s)
{
    return s->p.continuous ? (s->p.max_batch > 0 ? s->p.max_batch : 1) : 1;
}

/* Moves queued requests into the running set while there is room. Called with mu held. */
static void admit(struct sched *s)
{
    struct sched_req *r;
    while (s->n_active < max_seqs(s) && (r = take_queued(s))) {
        r->seq = exsa_seq_new(s->engine);
        int rc = r->seq < 0 ? r->seq
                 : r->embed ? 0
                            : gen_create(s->model->tok, s->n_vocab, &r->gp, &r->gen);
        if (rc < 0) {
            if (r->seq >= 0)
                exsa_seq_free(s->engine, r->seq);
            sched_req_finish(r, GEN_CANCELLED, 503, "the scheduler has no free sequence slot");
            sched_req_put(r);
            continue;
        }
        if (r->gen)
            gen_prompt(r->gen, r->prompt, r->n_prompt);
        pthread_mutex_lock(&r->mu);
        r->res.t_admit = sched_now();
        pthread_mutex_unlock(&r->mu);
        r->n_past = 0;
        r->pending = false;
        r->cache_restore = true; /* cache_restore_admitted, before its first step */
        s->active[s->n_active++] = r;
    }
    publish_slots(s);
}

/* ---- the prompt cache (pcache.c) -------------------------------------------------------------
 * A request with the cache on restores the longest cached checkpoint of its prompt before its
 * first step (its prefill starts there); during its prefill it takes checkpoints at planned
 * lengths (its chunks end there, since the conv state exists only at the end of a step); when it
 * retires, those and one at its final length go into the cache with its K/V rows, so the next
 * turn of the chat (prompt + reply + new message) finds them. Scheduler thread only. */

#define CACHE_MIN_GAP 32 /* tokens between two checkpoints of a request (closer: a wasted step) */
#define CACHE_MAX_CK 32  /* checkpoints planned per request */

int sched_req_set_cache(struct sched_req *r, bool use, const int32_t *bounds, int n_bounds)
{
    r->cache_off = !use;
    free(r->bounds);
    r->bounds = NULL;
    r->n_bounds = 0;
    if (!bounds || n_bounds <= 0)
        return 0;
    if (!(r->bounds = malloc(sizeof(int32_t) * n_bounds)))
        return EXSA_ENOMEM;
    memcpy(r->bounds, bounds, sizeof(int32_t) * n_bounds);
    r->n_bounds = n_bounds;
    return 0;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Plans r's checkpoints past the `from` restored positions: message starts and multiples of
 * n_batch in (from, n_prompt), from the last down, each at least CACHE_MIN_GAP below the one
 * kept above it and above from; at most CACHE_MAX_CK (then the lowest stays: the end of a
 * system prompt other chats share). No plan when out of memory: no checkpoint then. */
static void cache_plan(struct sched *s, struct sched_req *r, int from)
{
    const int nb = s->p.n_batch, n_cand = r->n_bounds + r->n_prompt / nb;
    int32_t *cand = malloc(sizeof(int32_t) * (n_cand + 1));
    r->ck = malloc(sizeof(int32_t) * (n_cand + 1));
    r->snaps = calloc(CACHE_MAX_CK + 2, sizeof *r->snaps);
    if (!cand || !r->ck || !r->snaps) {
        free(cand), free(r->ck), free(r->snaps);
        r->ck = NULL, r->snaps = NULL;
        return;
    }
    if (r->n_bounds > 0)
        memcpy(cand, r->bounds, sizeof(int32_t) * r->n_bounds);
    for (int k = 1; k <= r->n_prompt / nb; k++)
        cand[r->n_bounds + k - 1] = k * nb;
    qsort(cand, n_cand, sizeof *cand, cmp_i32);
    int n = 0, above = INT_MAX;
    for (int i = n_cand - 1; i >= 0; i--) { /* r->ck descending for now */
        const int c = cand[i];
        if (c < r->n_prompt && c - from >= CACHE_MIN_GAP && above - c >= CACHE_MIN_GAP)
            r->ck[n++] = above = c;
    }
    if (n > CACHE_MAX_CK) {
        r->ck[CACHE_MAX_CK - 1] = r->ck[n - 1];
        n = CACHE_MAX_CK;
    }
    for (int i = 0; i < n / 2; i++) { /* ascending */
        int32_t t = r->ck[i];
        r->ck[i] = r->ck[n - 1 - i], r->ck[n - 1 - i] = t;
    }
    r->n_ck = n;
    r->i_ck = 0;
    free(cand);
}

/* Before the first step of requests just admitted: restores each one's longest cached prefix
 * (n_past starts there) and plans its checkpoints. A choice of n > 1 waits: it gets a copy of
 * the first choice's sequence instead (then it has no checkpoints of its own), or, when that
 * fork does not happen, looks the prompt up before prefilling it alone. */
static void cache_restore_admitted(struct sched *s)
{
    for (int i = 0; i < s->n_active; i++) {
        struct sched_req *r = s->active[i];
        if (!r->cache_restore || r->await_fork)
            continue;
        r->cache_restore = false;
        if (!s->pc || r->cache_off || r->embed || r->n_past > 0 || r->done)
            continue;
        int got = pcache_restore(s->pc, r->seq, r->prompt, r->n_prompt - 1);
        if (got < 0) { /* out of KV blocks, or a backend error: start from nothing */
            exsa_seq_free(s->engine, r->seq);
            if ((r->seq = exsa_seq_new(s->engine)) < 0)
                sched_req_finish(r, GEN_CANCELLED, 503, "the scheduler has no free sequence slot");
            got = 0;
        }
        r->n_past = r->n_cached = got;
        pthread_mutex_lock(&r->mu);
        r->res.n_cached = got;
        pthread_mutex_unlock(&r->mu);
        cache_plan(s, r, got);
    }
}

/* How many of r's next `take` prompt tokens to feed in this step: up to its next checkpoint. */
static int cache_cut(const struct sched_req *r, int take)
{
    if (r->i_ck < r->n_ck && r->ck[r->i_ck] - r->n_past < take)
        return r->ck[r->i_ck] - r->n_past;
    return take;
}

/* After a step: takes the checkpoint of each request whose prefill just reached one. */
static void cache_checkpoint(struct sched *s)
{
    for (int i = 0; i < s->n_active; i++) {
        struct sched_req *r = s->active[i];
        while (r->i_ck < r->n_ck && r->ck[r->i_ck] < r->n_past)
            r->i_ck++; /* passed (a step that could not stop there) */
        if (r->i_ck < r->n_ck && r->ck[r->i_ck] == r->n_past && r->step_n > 0) {
            if (exsa_seq_snapshot(s->engine, r->seq, &r->snaps[r->n_snaps]) == 0)
                r->n_snaps++;
            r->i_ck++;
        }
    }
}

/* Notes a sampled token: the cache keys a retired sequence by prompt + tokens fed back. */
static void cache_note(struct sched *s, struct sched_req *r, int32_t tok)
{
    if (!s->pc || r->cache_off)
        return;
    if (r->n_sampled == r->cap_sampled) {
        int cap = r->cap_sampled ? 2 * r->cap_sampled : 64;
        int32_t *p = realloc(r->sampled, sizeof(int32_t) * cap);
        if (!p)
            return; /* the sequence is then not cached (cache_retire checks the count) */
        r->sampled = p, r->cap_sampled = cap;
    }
    r->sampled[r->n_sampled++] = tok;
}

/* Before r's sequence is freed: leaves its checkpoints, and one at its final length, in the
 * cache (not after an error: a request that failed may not have what its length says). */
static void cache_retire(struct sched *s, struct sched_req *r, bool ok)
{
    if (!ok || !s->pc || r->cache_off || r->embed || r->seq < 0 || !r->snaps)
        return;
    const int len = exsa_seq_len(s->engine, r->seq), n_fed = len - r->n_prompt;
    int32_t *toks = len > 0 && n_fed <= r->n_sampled ? malloc(sizeof(int32_t) * len) : NULL;
    if (!toks)
        return;
    memcpy(toks, r->prompt, sizeof(int32_t) * (n_fed < 0 ? len : r->n_prompt));
    if (n_fed > 0)
        memcpy(toks + r->n_prompt, r->sampled, sizeof(int32_t) * n_fed);
    if ((r->n_snaps == 0 || r->snaps[r->n_snaps - 1]->len < len) &&
        exsa_seq_snapshot(s->engine, r->seq, &r->snaps[r->n_snaps]) == 0)
        r->n_snaps++;
    pcache_insert(s->pc, r->seq, toks, len, r->snaps, r->n_snaps);
    r->n_snaps = 0; /* the cache took them */
    free(toks);
}

/* A new cache for the engine just installed (the old one's rows belong to the old model). */
static void cache_swap(struct sched *s)
{
    pcache_free(s->pc);
    s->pc = s->engine && s->p.cache_bytes > 0 ? pcache_new(s->engine, s->p.cache_bytes) : NULL;
    if (s->engine && s->p.cache_bytes > 0 && !s->pc)
        fprintf(stderr, "exsa serve: out of memory for the prompt cache: it is off\n");
}

/* Samples r's next token from one logits row and pushes its text (and, when asked for, its
 * logprobs: not for the end-of-generation token, which is no part of the reply); ends r when
 * it is over. */
static void sample_one(struct sched *s, struct sched_req *r, float *row)
{
    const char *text = NULL;
    size_t len = 0;
    int32_t tok = gen_next(r->gen, row, &text, &len);
    cache_note(s, r, tok);
    if (r->res.t_first == 0) {
        pthread_mutex_lock(&r->mu);
        r->res.t_first = sched_now();
        pthread_mutex_unlock(&r->mu);
    }
    struct tok_lp lp;
    bool with_lp =
        r->gp.logprobs && gen_finished(r->gen) != GEN_EOG &&
        (lp.n_top = gen_logprobs(r->gen, &lp.chosen, lp.top, SAMPLER_MAX_TOP_LOGPROBS)) >= 0;
    sched_req_push(r, text, len, with_lp ? &lp : NULL);
    if (gen_finished(r->gen) == GEN_RUNNING && r->n_past >= s->n_ctx)
        gen_end(r->gen, GEN_LENGTH); /* the context is full */
    if (gen_finished(r->gen) != GEN_RUNNING) {
        gen_flush(r->gen, &text, &len);
        sched_req_push_text(r, text, len);
        sched_req_finish(r, gen_finished(r->gen), 0, NULL);
        return;
    }
    r->next_tok = tok;
    r->pending = true;
}

/* Adds n entries of r (tokens toks, positions from r->n_past) to the batch at *n. */
static void add_entries(struct sched *s, struct sched_req *r, const int32_t *toks, int cnt,
                        bool want_last, int *n)
{
    /* the engine picks each entry's kernels by its job's length: the whole prompt's (not the
     * chunk's, nor what the prompt cache left), 1 for a generated token, so a request's results
     * depend neither on its batch nor on a retry's cache hit (batch invariance) */
    for (int i = 0; i < cnt; i++) {
        s->b_job[*n] = toks == &r->next_tok ? 1 : r->n_prompt;
        s->b_tok[*n] = toks[i];
        s->b_pos[*n] = r->n_past + i;
        s->b_seq[*n] = r->seq;
        s->b_logits[*n] = want_last && i == cnt - 1;
        (*n)++;
    }
    r->step_n = cnt;
}

/* Ends every request of the kind given (embedding or not) that had entries in a failed step. */
static void fail_step(struct sched *s, bool embed, int rc)
{
    char msg[160];
    snprintf(msg, sizeof msg, "the engine failed on this step: %s", exsa_strerror(rc));
    fprintf(stderr, "exsa serve: %s\n", msg);
    for (int i = 0; i < s->n_active; i++)
        if (s->active[i]->step_n > 0 && s->active[i]->embed == embed)
            sched_req_finish(s->active[i], GEN_CANCELLED, 500, msg);
}

/* Gives choice c of first (n > 1) a copy of first's sequence, whose prompt has just been
 * prefilled (row: its logits, unchanged), and draws c's first token from row. A choice not
 * running yet, or whose fork fails, prefills the prompt itself. */
static void fork_choice(struct sched *s, struct sched_req *first, struct sched_req *c,
                        const float *row)
{
    if (!c->await_fork)
        return;
    c->await_fork = false;
    /* still queued (or over): it prefills alone once admitted */
    if (c->seq < 0 || c->done || c->n_past > 0 || atomic_load(&c->cancelled))
        return;
    exsa_seq_free(s->engine, c->seq); /* frees the slot the fork takes */
    int seq = exsa_seq_fork(s->engine, first->seq);
    c->seq = seq >= 0 ? seq : exsa_seq_new(s->engine);
    if (c->seq < 0) {
        sched_req_finish(c, GEN_CANCELLED, 503, "the scheduler has no free sequence slot");
        return;
    }
    if (seq < 0)
        return;
    c->n_past = first->n_past;
    atomic_fetch_add(&s->n_forked, 1);
    memcpy(s->fork_row, row, sizeof(float) * (size_t)s->n_vocab);
    sample_one(s, c, s->fork_row);
}

/* Runs the generating entries [0, n) of the step, then samples the rows that got logits. */
static void step_generate(struct sched *s, int n, int rows)
{
    struct exsa_batch b = {n, s->b_tok, s->b_pos, s->b_seq, s->b_logits, s->b_job};
    int rc = exsa_decode(s->engine, &b, s->logits);
    if (rc < 0) {
        fail_step(s, false, rc);
        return;
    }
    for (int i = 0; i < s->n_active; i++)
        if (!s->active[i]->embed)
            s->active[i]->n_past += s->active[i]->step_n;
    for (int i = 0; i < rows; i++) {
        struct sched_req *r = s->b_row[i];
        float *row = s->logits + (size_t)i * s->n_vocab;
        r->pending = false;
        if (r->n_choices > 0 && gen_n_tokens(r->gen) == 0) /* its prompt is done: fork */
            for (int k = 0; k < r->n_choices; k++)
                fork_choice(s, r, r->choices[k], row);
        sample_one(s, r, row);
    }
}

/* Adds prefill chunks of the embedding requests to the batch at *n from what is left of the
 * budget; each of their entries wants its hidden state. */
static void add_embed_chunks(struct sched *s, int budget, int *n)
{
    for (int i = 0; i < s->n_active && budget > 0; i++) {
        struct sched_req *r = s->active[i];
        int left = r->n_prompt - r->n_past;
        if (!r->embed || r->done || left <= 0)
            continue;
        int take = left < budget ? left : budget;
        add_entries(s, r, r->prompt + r->n_past, take, false, n);
        memset(s->b_logits + *n - take, 1, (size_t)take);
        budget -= take;
    }
}

/* Pools the hidden states h (cnt rows of dim, positions from r->n_past) into r. */
static int pool_rows(struct sched_req *r, const float *h, int cnt, int dim)
{
    if (!r->pooled && !(r->pooled = calloc((size_t)dim, sizeof(double))))
        return EXSA_ENOMEM;
    r->dim = dim;
    if (r->pool == SCHED_POOL_MEAN) {
        for (int k = 0; k < cnt; k++)
            for (int d = 0; d < dim; d++)
                r->pooled[d] += h[(size_t)k * dim + d];
        return 0;
    }
    int row = r->pool == SCHED_POOL_FIRST ? (r->n_past == 0 ? 0 : -1)
                                          : (r->n_past + cnt == r->n_prompt ? cnt - 1 : -1);
    for (int d = 0; row >= 0 && d < dim; d++)
        r->pooled[d] = h[(size_t)row * dim + d];
    return 0;
}

/* Runs the embedding entries [off, off + m) of the step in a forward call of their own (hidden
 * states out, not logits), pools them, and ends each request whose prompt is done. */
static void step_embed(struct sched *s, int off, int m)
{
    const int dim = exsa_model_info(s->model)->dim;
    if (!s->hidden)
        s->hidden = malloc(sizeof(float) * (size_t)s->p.n_batch * dim);
    struct exsa_batch b = {
        m, s->b_tok + off, s->b_pos + off, s->b_seq + off, s->b_logits + off, s->b_job + off};
    int rc = s->hidden ? exsa_decode_hidden(s->engine, &b, s->hidden) : EXSA_ENOMEM;
    if (rc < 0) {
        fail_step(s, true, rc);
        return;
    }
    const float *h = s->hidden;
    for (int i = 0; i < s->n_active; i++) {
        struct sched_req *r = s->active[i];
        if (!r->embed || r->step_n == 0)
            continue;
        if (pool_rows(r, h, r->step_n, dim) < 0)
            sched_req_finish(r, GEN_CANCELLED, 503, "out of memory for the embedding");
        h += (size_t)r->step_n * dim;
        r->n_past += r->step_n;
        if (r->n_past == r->n_prompt)
            sched_req_finish(r, GEN_STOP, 0, NULL);
    }
}

/* One step over every running sequence: decode tokens first (one each), then prefill chunks of
 * generating requests from the remaining token budget, then chunks of embedding requests from
 * what is left. The generating entries run in one forward call (every sequence that got logits
 * is sampled), the embedding entries in a second one. */
static void sched_step(struct sched *s)
{
    int n = 0, rows = 0, budget = s->p.n_batch;
    for (int i = 0; i < s->n_active; i++) {
        struct sched_req *r = s->active[i];
        r->step_n = 0;
        if (r->pending && !r->done && budget > 0) {
            add_entries(s, r, &r->next_tok, 1, true, &n);
            s->b_row[rows++] = r;
            budget--;
        }
    }
    for (int i = 0; i < s->n_active && budget > 0; i++) {
        struct sched_req *r = s->active[i];
        int left = r->n_prompt - r->n_past;
        if (r->embed || r->pending || r->done || left <= 0 || r->await_fork)
            continue;
        int take = cache_cut(r, left < budget ? left : budget);
        add_entries(s, r, r->prompt + r->n_past, take, take == left, &n);
        if (take == left)
            s->b_row[rows++] = r;
        budget -= take;
    }
    const int n_gen = n;
    add_embed_chunks(s, budget, &n);
    if (n_gen > 0) {
        step_generate(s, n_gen, rows);
        cache_checkpoint(s);
    }
    if (n > n_gen)
        step_embed(s, n_gen, n - n_gen);
}

/* Publishes what the engine's cache holds (sequences, KV blocks in use and in all) for the
 * stats: a sequence or block that outlives its request shows there. Scheduler thread, with mu
 * held (the engine changes only on this thread). */
static void count_cache(struct sched *s)
{
    const struct kv_cache *kv = s->engine ? s->engine->kv : NULL;
    s->cache_seqs = 0;
    for (int i = 0; kv && i < kv->n_seq_max; i++)
        s->cache_seqs += kv->seqs[i].used;
    s->cache_blocks = kv ? kv->n_blocks - kv->n_free : 0;
    s->cache_blocks_total = kv ? kv->n_blocks : 0;
    if (s->pc)
        pcache_get_stats(s->pc, &s->pc_stats);
    else
        memset(&s->pc_stats, 0, sizeof s->pc_stats);
}

/* Retires finished and cancelled sequences. Called without mu. */
static void retire(struct sched *s)
{
    int n_cancel = 0;
    for (int i = s->n_active - 1; i >= 0; i--) {
        struct sched_req *r = s->active[i];
        bool cancelled = atomic_load(&r->cancelled);
        pthread_mutex_lock(&r->mu);
        bool done = r->done, failed = r->status != 0;
        pthread_mutex_unlock(&r->mu);
        if (!done && !cancelled)
            continue;
        if (cancelled && !done) {
            if (r->gen)
                gen_end(r->gen, GEN_CANCELLED);
            sched_req_finish(r, GEN_CANCELLED, 0, NULL);
            n_cancel++;
        }
        cache_retire(s, r, !failed);
        release_active(s, i);
    }
    pthread_mutex_lock(&s->mu);
    publish_slots(s);
    s->n_cancelled += n_cancel;
    count_cache(s);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Frees the batch buffers and sizes them for the current model. */
static int size_buffers(struct sched *s)
{
    free(s->b_tok), free(s->b_pos), free(s->b_seq), free(s->b_logits), free(s->logits);
    free(s->hidden), free(s->fork_row), free(s->b_job);
    s->b_tok = s->b_pos = s->b_seq = s->b_job = NULL, s->b_logits = NULL, s->logits = NULL;
    s->hidden = NULL, s->fork_row = NULL;
    if (!s->model)
        return 0;
    size_t nb = (size_t)s->p.n_batch, nr = (size_t)max_seqs(s);
    s->b_tok = malloc(nb * sizeof(int32_t));
    s->b_pos = malloc(nb * sizeof(int32_t));
    s->b_seq = malloc(nb * sizeof(int32_t));
    s->b_logits = malloc(nb);
    s->b_job = malloc(nb * sizeof(int32_t));
    s->logits = malloc(nr * (size_t)s->n_vocab * sizeof(float));
    s->fork_row = malloc((size_t)s->n_vocab * sizeof(float));
    const bool ok =
        s->b_tok && s->b_pos && s->b_seq && s->b_logits && s->b_job && s->logits && s->fork_row;
    return ok ? 0 : EXSA_ENOMEM;
}

/* Installs model m / engine e (either may be NULL) in place of the current ones, after ending
 * what runs on the current model (every queued request too when every_gen) and waiting for
 * the borrowers. Called with mu held; returns with it held. */
static void swap_model(struct sched *s, struct exsa_model *m, struct exsa_engine *e,
                       const char *path, int ngl, int nctx, bool every_gen, const char *why)
{
    fail_all_of(s, every_gen, 503, why);
    s->gen++;
    while (s->borrowers > 0)
        pthread_cond_wait(&s->cv, &s->mu);
    struct exsa_model *old_m = s->model;
    struct exsa_engine *old_e = s->engine;
    char *old_path = s->path;
    s->model = m;
    s->engine = e;
    s->path = path ? strdup(path) : NULL;
    s->gpu_layers = ngl;
    s->n_ctx = nctx;
    s->n_vocab = m ? exsa_model_info(m)->vocab_size : 0;
    pthread_mutex_unlock(&s->mu);
    exsa_engine_free(old_e);
    exsa_model_free(old_m);
    free(old_path);
    int rc = size_buffers(s);
    pthread_mutex_lock(&s->mu);
    if (rc < 0) { /* cannot serve without buffers: drop the model again */
        exsa_engine_free(s->engine), exsa_model_free(s->model);
        s->engine = NULL, s->model = NULL;
        s->ctl_rc = rc;
        snprintf(s->ctl_err, sizeof s->ctl_err, "out of memory for the batch buffers");
        fail_all(s, 503, "out of memory for the batch buffers of the new model");
    }
    cache_swap(s);
    count_cache(s);
}

/* Loads path into a new model and an engine with these settings. Any thread: it touches no
 * scheduler state, so the current model serves on while it runs. */
static int load_engine(const struct sched_params *sp, int n_seq, const char *path, int ngl,
                       int nctx, struct exsa_model **mo, struct exsa_engine **eo, char *err,
                       size_t errlen)
{
    struct exsa_model *m = NULL;
    struct exsa_engine *e = NULL;
    int rc = exsa_model_load(path, &m, err, errlen);
    if (rc < 0)
        return rc;
    struct exsa_engine_params ep;
    exsa_engine_params_default(&ep);
    ep.backend = sp->backend;
    ep.n_ctx = nctx;
    ep.n_seq_max = n_seq;
    ep.n_batch = sp->n_batch;
    ep.n_threads = sp->n_threads;
    ep.gpu_layers = ngl;
    ep.kv_type = sp->kv_type;
    ep.deterministic = sp->deterministic;
    rc = exsa_engine_create(m, &ep, &e, err, errlen);
    if (rc < 0) {
        exsa_model_free(m);
        return rc;
    }
    fprintf(stderr, "exsa: %s: %s\n", path, exsa_engine_describe(e));
    /* every weight is on the GPU: the file mapping no longer holds them (a file replaced on
     * disk cannot fault the server) */
    if (ngl >= exsa_model_info(m)->n_layers && exsa_model_release_weights(m) == 0)
        fprintf(stderr, "exsa: %s: host copy of the weights released\n", path);
    *mo = m;
    *eo = e;
    return 0;
}

/* Whether a queued request can run on the current model. Called with mu held. */
static bool has_admissible(const struct sched *s)
{
    for (const struct sched_req *r = s->qhead; r; r = r->next)
        if (r->model_gen == s->gen)
            return true;
    return false;
}

/* A pending replacement is installed once nothing of the current model is left to run (or at
 * the deadline, ending what is). The borrowers are waited for first, with new borrowers held
 * back; one of them may just have queued a request for the current model, which then runs
 * first. Called with mu held; returns with it held. */
static void try_switch(struct sched *s)
{
    bool late = sched_now() >= s->swap_deadline;
    if (!late && (s->n_active > 0 || has_admissible(s)))
        return;
    s->switching = true;
    while (s->borrowers > 0)
        pthread_cond_wait(&s->cv, &s->mu);
    if (!late && has_admissible(s)) {
        s->switching = false;
        pthread_cond_broadcast(&s->cv);
        return;
    }
    struct exsa_model *m = s->next_model;
    struct exsa_engine *e = s->next_engine;
    char *path = s->next_path;
    s->next_model = NULL, s->next_engine = NULL, s->next_path = NULL;
    s->ctl_rc = 0;
    swap_model(s, m, e, path, s->next_ngl, s->next_nctx, false,
               "the model was replaced while this request ran");
    free(path);
    s->switching = false;
    s->ctl = CTL_NONE;
    s->ctl_done = true;
    pthread_cond_broadcast(&s->cv);
}

/* Runs an unload: everything in flight ends with a 503. Called with mu held. */
static void do_unload(struct sched *s)
{
    s->ctl_rc = 0;
    s->switching = true; /* new borrowers wait, then find no model */
    swap_model(s, NULL, NULL, NULL, s->gpu_layers, s->n_ctx, true,
               "the model was unloaded while this request ran");
    s->switching = false;
    s->ctl = CTL_NONE;
    s->ctl_done = true;
    pthread_cond_broadcast(&s->cv);
}

/* Waits on cv until the absolute monotonic time t (seconds) or a signal. */
static void wait_until(struct sched *s, double t)
{
    double dt = t - sched_now();
    if (dt <= 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long ns = ts.tv_nsec + (long long)(dt * 1e9);
    ts.tv_sec += ns / 1000000000LL;
    ts.tv_nsec = ns % 1000000000LL;
    pthread_cond_timedwait(&s->cv, &s->mu, &ts);
}

/* The oldest queued request of the current model, or NULL. Called with mu held. */
static const struct sched_req *first_admissible(const struct sched *s)
{
    const struct sched_req *r = s->qhead;
    while (r && r->model_gen != s->gen)
        r = r->next;
    return r;
}

/* What the scheduler thread does between steps: control operations, and waiting while there
 * is nothing to run. True when a step is due (requests admitted). Called with mu held. */
static bool next_step_due(struct sched *s)
{
    if (s->ctl == CTL_UNLOAD) {
        do_unload(s);
        return false;
    }
    if (s->ctl == CTL_SWAP)
        try_switch(s);
    drop_cancelled_queued(s);
    if (s->stop)
        return false;
    if (s->n_active == 0) {
        const struct sched_req *r = s->engine ? first_admissible(s) : NULL;
        if (!r) {
            if (s->ctl == CTL_SWAP)
                wait_until(s, s->swap_deadline);
            else
                pthread_cond_wait(&s->cv, &s->mu);
            return false;
        }
        /* BATCH_TIMEOUT_MS > 0 (off by default): an idle scheduler waits that long for a burst
         * of requests to start together. At 0 a lone request starts at once, and continuous
         * batching admits later ones into the running batch. */
        double start = r->res.t_submit + s->p.batch_timeout_ms * 1e-3;
        if (s->p.batch_timeout_ms > 0 && s->p.continuous && s->n_queued < max_seqs(s) &&
            !s->closing && sched_now() < start) {
            wait_until(s, start);
            return false;
        }
    }
    admit(s);
    return true;
}

static void *sched_main(void *arg)
{
    struct sched *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        if (!next_step_due(s))
            continue;
        pthread_mutex_unlock(&s->mu);
        cache_restore_admitted(s);
        sched_step(s);
        retire(s);
        if (s->p.step_delay_ms > 0)
            usleep(s->p.step_delay_ms * 1000);
        pthread_mutex_lock(&s->mu);
    }
    fail_all(s, 503, "the server is shutting down");
    if (s->ctl != CTL_NONE) { /* a load waiting for its switch; sched_destroy frees the model */
        s->ctl = CTL_NONE;
        s->ctl_rc = EXSA_ECANCELLED;
        snprintf(s->ctl_err, sizeof s->ctl_err, "the server is shutting down");
        s->ctl_done = true;
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- the public control surface -------------------------------------------------------------- */

int sched_create(const struct sched_params *p, struct sched **out)
{
    struct sched *s = calloc(1, sizeof *s);
    if (!s)
        return EXSA_ENOMEM;
    s->p = *p;
    if (s->p.n_batch <= 0)
        s->p.n_batch = 512;
    if (s->p.max_batch <= 0)
        s->p.max_batch = 1;
    if (s->p.n_batch < max_seqs(s))
        s->p.n_batch = max_seqs(s); /* room for one decode token per sequence */
    if (s->p.max_queue < 0)
        s->p.max_queue = 0;
    s->n_ctx = p->n_ctx > 0 ? p->n_ctx : 4096;
    s->gpu_layers = p->gpu_layers;
    s->active = calloc(max_seqs(s), sizeof *s->active);
    s->b_row = calloc(max_seqs(s), sizeof *s->b_row);
    s->slots = calloc(max_seqs(s), sizeof *s->slots);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->ctl_mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (!s->active || !s->b_row || !s->slots ||
        pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        free(s->active), free(s->b_row), free(s->slots), free(s);
        return EXSA_ENOMEM;
    }
    s->started = true;
    *out = s;
    return 0;
}

void sched_close(struct sched *s, int grace_ms)
{
    pthread_mutex_lock(&s->mu);
    if (!s->started) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->closing = true;
    double deadline = sched_now() + grace_ms * 1e-3;
    while ((s->n_queued > 0 || s->n_active_shared > 0) && sched_now() < deadline)
        wait_until(s, deadline < sched_now() + 0.05 ? deadline : sched_now() + 0.05);
    s->stop = true;
    pthread_cond_broadcast(&s->cv);
    s->started = false;
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
}

void sched_destroy(struct sched *s, int grace_ms)
{
    if (!s)
        return;
    sched_close(s, grace_ms);
    pcache_free(s->pc);
    exsa_engine_free(s->engine);
    exsa_model_free(s->model);
    s->model = NULL, s->engine = NULL;
    exsa_engine_free(s->next_engine);
    exsa_model_free(s->next_model);
    size_buffers(s);
    free(s->path), free(s->next_path), free(s->active), free(s->b_row), free(s->slots);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->ctl_mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

/* Posts a control operation and waits for the scheduler thread to run it. Called with ctl_mu
 * and mu held; returns with them held. */
static int post_control(struct sched *s, enum ctl_op op)
{
    if (s->closing || s->stop) {
        snprintf(s->ctl_err, sizeof s->ctl_err, "the server is shutting down");
        return EXSA_ECANCELLED;
    }
    s->ctl = op;
    s->ctl_done = false;
    pthread_cond_broadcast(&s->cv);
    while (!s->ctl_done)
        pthread_cond_wait(&s->cv, &s->mu);
    return s->ctl_rc;
}

/* Hands the loaded replacement to the scheduler thread and waits for the switch. Called with
 * ctl_mu and mu held; returns with them held. */
static int post_swap(struct sched *s, struct exsa_model *m, struct exsa_engine *e, const char *path,
                     int ngl, int nctx)
{
    s->next_model = m, s->next_engine = e;
    s->next_path = strdup(path);
    s->next_ngl = ngl, s->next_nctx = nctx;
    s->swap_deadline = sched_now() + SWAP_GRACE_S;
    int rc = post_control(s, CTL_SWAP);
    if (s->next_model == m) { /* not switched (shutting down): still ours */
        exsa_engine_free(s->next_engine), exsa_model_free(s->next_model);
        free(s->next_path);
        s->next_model = NULL, s->next_engine = NULL, s->next_path = NULL;
    }
    return rc;
}

/* The new model is loaded beside the current one, which serves on meanwhile; requests that
 * arrive then are tokenized for the new one and start after the switch, which waits for the
 * current model's requests (up to SWAP_GRACE_S). When both do not fit (EXSA_ENOMEM), the
 * current model is unloaded first and err says so, also on success. */
int sched_load(struct sched *s, const char *path, int gpu_layers, int n_ctx, char *err,
               size_t errlen)
{
    char dummy[8];
    if (!err || !errlen)
        err = dummy, errlen = sizeof dummy;
    err[0] = 0;
    pthread_mutex_lock(&s->ctl_mu);
    pthread_mutex_lock(&s->mu);
    char *p = path ? strdup(path) : s->path ? strdup(s->path) : NULL;
    int ngl = gpu_layers >= 0 ? gpu_layers : s->gpu_layers;
    int nctx = n_ctx > 0 ? n_ctx : s->n_ctx;
    bool had_model = s->model != NULL;
    int rc = s->closing || s->stop ? EXSA_ECANCELLED : p ? 0 : EXSA_ENOTFOUND;
    if (rc == 0)
        s->loading = true;
    pthread_mutex_unlock(&s->mu);
    struct exsa_model *m = NULL;
    struct exsa_engine *e = NULL;
    char lerr[480] = "";
    bool unloaded = false;
    if (rc == 0)
        rc = load_engine(&s->p, max_seqs(s), p, ngl, nctx, &m, &e, lerr, sizeof lerr);
    if (rc == EXSA_ENOMEM && had_model) { /* both do not fit: the old model goes first */
        pthread_mutex_lock(&s->mu);
        rc = post_control(s, CTL_UNLOAD);
        pthread_mutex_unlock(&s->mu);
        unloaded = rc == 0;
        if (rc == 0)
            rc = load_engine(&s->p, max_seqs(s), p, ngl, nctx, &m, &e, lerr, sizeof lerr);
    }
    pthread_mutex_lock(&s->mu);
    if (rc == 0)
        rc = post_swap(s, m, e, p, ngl, nctx);
    s->loading = false;
    if (rc == EXSA_ECANCELLED)
        snprintf(err, errlen, "the server is shutting down");
    else if (rc == EXSA_ENOTFOUND && !p)
        snprintf(err, errlen, "no model was loaded before, so none to reload");
    else if (rc < 0)
        snprintf(err, errlen, "cannot load %s: %s%s", p, lerr[0] ? lerr : exsa_strerror(rc),
                 unloaded ? " (the previous model was unloaded to make room)" : "");
    else if (unloaded)
        snprintf(err, errlen,
                 "the new model did not fit beside the previous one, which was "
                 "unloaded first: requests in flight ended with a 503");
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->ctl_mu);
    free(p);
    return rc;
}

int sched_unload(struct sched *s)
{
    pthread_mutex_lock(&s->ctl_mu);
    pthread_mutex_lock(&s->mu);
    int rc = post_control(s, CTL_UNLOAD);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->ctl_mu);
    return rc;
}

/* While a replacement waits for its switch, new requests get it (generation gen + 1); during
 * the switch itself, callers wait the moment it takes. */
struct exsa_model *sched_model_acquire(struct sched *s, unsigned *gen, int *n_ctx)
{
    pthread_mutex_lock(&s->mu);
    while (s->switching && !s->stop)
        pthread_cond_wait(&s->cv, &s->mu);
    bool next = s->next_model != NULL;
    struct exsa_model *m = s->stop ? NULL : next ? s->next_model : s->model;
    if (m) {
        s->borrowers++;
        if (gen)
            *gen = next ? s->gen + 1 : s->gen;
        if (n_ctx)
            *n_ctx = next ? s->next_nctx : s->n_ctx;
    }
    pthread_mutex_unlock(&s->mu);
    return m;
}

void sched_model_release(struct sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->borrowers--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void sched_get_stats(struct sched *s, struct sched_stats *st)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&s->mu);
    st->loaded = s->model != NULL;
    st->loading = s->loading || s->next_model != NULL;
    st->closing = s->closing || s->stop;
    snprintf(st->model_path, sizeof st->model_path, "%s", s->path ? s->path : "");
    st->n_ctx = s->n_ctx;
    st->gpu_layers = s->gpu_layers;
    st->n_batch = s->p.n_batch;
    st->max_batch = max_seqs(s);
    st->active = s->n_active_shared;
    st->queued = s->n_queued;
    st->max_queue = s->p.max_queue;
    st->queue_full = queue_full(s);
    st->n_cancelled = s->n_cancelled;
    st->n_forked = atomic_load(&s->n_forked);
    st->cache_seqs = s->cache_seqs;
    st->cache_blocks = s->cache_blocks;
    st->cache_blocks_total = s->cache_blocks_total;
    st->pcache = s->pc_stats;
    pthread_mutex_unlock(&s->mu);
}

int sched_get_slots(struct sched *s, struct sched_slot *out, int max)
{
    pthread_mutex_lock(&s->mu);
    int n = s->n_active_shared;
    for (int i = 0; i < n && i < max; i++)
        out[i] = s->slots[i];
    pthread_mutex_unlock(&s->mu);
    return n;
}
