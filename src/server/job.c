/*
 * job.c: what the routes with a body share: the prologue (body parsed by request.c, the model
 * borrowed and the body's "model" checked against it), tokenizing a generating request, and
 * running it through the scheduler with one of two replies: an SSE stream (struct stream: a
 * libmicrohttpd content reader that drains the request's channel and formats OpenAI chunks or
 * Exsa events), or one JSON body built once the reply is over. Both notice a client that left
 * and cancel its request only. An error after the stream began goes out as an SSE error event.
 * A request of n choices is n scheduler requests queued as a group (struct run), each choice's
 * text shaped by reply.c; a constrained reply (response_format, a forced tool_choice) gets a
 * grammar and token mask per choice over the model's token index, built once per model.
 * Called by openai.c and exsa_api.c.
 */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat.h"
#include "jsonschema.h"
#include "sampler.h"
#include "server.h"
#include "tokenizer.h"
#include "tokmask.h"
#include "toolcall.h"

/* ---- formatting ----------------------------------------------------------------------------- */

struct out {
    char *p;
    size_t len, off, cap;
};

static void out_put(struct out *o, const char *s, size_t n)
{
    if (o->len + n + 1 > o->cap) {
        size_t cap = (o->len + n + 1) * 2;
        char *p = realloc(o->p, cap);
        if (!p)
            return;
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = 0;
}

/* Appends "data: <json>\n\n" and frees json. */
static void out_event(struct out *o, cJSON *json)
{
    char *s = cJSON_PrintUnformatted(json);
    cJSON_Delete(json);
    if (!s)
        return;
    out_put(o, "data: ", 6);
    out_put(o, s, strlen(s));
    out_put(o, "\n\n", 2);
    free(s);
}

static const char *finish_name(enum gen_finish f)
{
    return f == GEN_LENGTH ? "length" : "stop";
}

/* ---- a running request: its choices ---------------------------------------------------------- */

/* The choices of one generating request (n of them; /v1/generate has one and no reply_choice),
 * read by the connection thread that answers it. */
struct run {
    struct server *srv;
    struct reply_meta rm;
    enum job_kind kind;
    int n, n_done;
    struct sched_req *req[JOB_MAX_N]; /* a reference each */
    struct reply_choice *ch[JOB_MAX_N];
    bool done[JOB_MAX_N];
    int status; /* the first error a choice ended with (0: none) */
    char message[256];
    enum gen_finish finish; /* /v1/generate */
};

static void run_free(struct run *r)
{
    for (int i = 0; i < r->n; i++) {
        if (r->req[i]) {
            sched_cancel(r->req[i]); /* a no-op when it is over */
            sched_req_put(r->req[i]);
        }
        reply_choice_free(r->ch[i]);
    }
    free(r);
}

static void run_cancel(struct run *r)
{
    for (int i = 0; i < r->n; i++)
        if (r->req[i])
            sched_cancel(r->req[i]);
}

/* Reads each choice not over yet once: the first of them waits up to wait_ms for something,
 * the others are only looked at. Calls take(ctx, i, chunk) for every read. Returns how many
 * reads took something. */
static int run_read(struct run *r, int wait_ms,
                    void (*take)(void *ctx, int i, const struct sched_chunk *ch), void *ctx)
{
    int got = 0;
    for (int i = 0; i < r->n; i++) {
        if (r->done[i])
            continue;
        struct sched_chunk ch;
        if (!sched_read(r->req[i], got || wait_ms < 0 ? 0 : wait_ms, &ch)) {
            wait_ms = -1; /* waited once: the rest are only looked at */
            continue;
        }
        got++;
        if (ch.done) {
            r->done[i] = true;
            r->n_done++;
        }
        if (ch.status && !r->status) {
            r->status = ch.status;
            snprintf(r->message, sizeof r->message, "%s", ch.message);
        }
        take(ctx, i, &ch);
        sched_chunk_free(&ch);
    }
    return got;
}

/* Records the end of a request in the metrics and the log: the prompt once, the tokens of
 * every choice, the first choice's latency. *res gets the first choice's result, *n_gen the
 * tokens of all. */
static void record(struct run *r, struct sched_result *res, int *n_gen)
{
    struct server *srv = r->srv;
    *n_gen = 0;
    for (int i = r->n - 1; i >= 0; i--) {
        sched_req_result(r->req[i], res);
        *n_gen += res->n_gen;
    }
    metrics_tokens(srv->metrics, res->n_prompt, *n_gen);
    double ttft = res->t_first > 0 ? res->t_first - res->t_submit : -1;
    double tpot =
        res->t_first > 0 && res->n_gen > 1 ? (res->t_done - res->t_first) / (res->n_gen - 1) : -1;
    double wait = res->t_admit > 0 ? res->t_admit - res->t_submit : -1;
    metrics_latency(srv->metrics, wait, ttft, tpot);
    if (res->empty_reason[0])
        fprintf(stderr, "exsa serve: empty reply: %s\n", res->empty_reason);
}

/* ---- streaming ------------------------------------------------------------------------------ */

struct stream {
    struct run *run;
    struct srv_peer peer;
    struct out out;
    bool finished;
};

/* The error event of a stream (an error after it began). */
static void stream_error(struct stream *st)
{
    const struct run *r = st->run;
    char *s = srv_error_json(
        r->message, r->status >= 500 ? "server_error" : "invalid_request_error", NULL, NULL);
    if (s) {
        out_put(&st->out, "data: ", 6), out_put(&st->out, s, strlen(s));
        out_put(&st->out, "\n\n", 2);
        free(s);
    }
}

/* Exsa's /v1/generate events: {"token", "done"}, and at the end the finish and usage. */
static void generate_events(struct stream *st, const struct sched_chunk *ch)
{
    size_t off = 0;
    for (int i = 0; i < ch->n_pieces; i++) {
        cJSON *e = cJSON_CreateObject();
        reply_add_text(e, "token", ch->text + off, (size_t)ch->piece_len[i]);
        off += (size_t)ch->piece_len[i];
        cJSON_AddFalseToObject(e, "done");
        out_event(&st->out, e);
    }
    if (!ch->done)
        return;
    struct sched_result res;
    int n_gen;
    record(st->run, &res, &n_gen);
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "token", "");
    cJSON_AddTrueToObject(e, "done");
    cJSON_AddStringToObject(e, "finish_reason", finish_name(ch->finish));
    cJSON_AddItemToObject(e, "usage", reply_usage(res.n_prompt, n_gen, res.n_cached));
    if (res.empty_reason[0])
        cJSON_AddStringToObject(e, "empty_reason", res.empty_reason);
    out_event(&st->out, e);
    st->finished = true;
}

/* The end of an OpenAI stream: the usage chunk (include_usage) and [DONE]. */
static void stream_end(struct stream *st)
{
    struct sched_result res;
    int n_gen;
    record(st->run, &res, &n_gen);
    const struct reply_meta *rm = &st->run->rm;
    if (rm->include_usage) {
        cJSON *u =
            reply_head(rm, rm->kind == JOB_CHAT ? "chat.completion.chunk" : "text_completion");
        cJSON_AddArrayToObject(u, "choices");
        cJSON_AddItemToObject(u, "usage", reply_usage(res.n_prompt, n_gen, res.n_cached));
        out_event(&st->out, u);
    }
    out_put(&st->out, "data: [DONE]\n\n", 14);
    st->finished = true;
}

/* Formats what one read of choice i took into SSE events. */
static void stream_take(void *ctx, int i, const struct sched_chunk *ch)
{
    struct stream *st = ctx;
    struct run *r = st->run;
    if (st->finished)
        return;
    if (ch->status) { /* the request ended with an error: so does the stream */
        struct sched_result res;
        int n_gen;
        record(r, &res, &n_gen);
        stream_error(st);
        run_cancel(r);
        st->finished = true;
        return;
    }
    if (r->kind == JOB_GENERATE) {
        generate_events(st, ch);
        return;
    }
    cJSON *events = cJSON_CreateArray();
    int rc = events ? reply_choice_take(r->ch[i], ch, events) : EXSA_ENOMEM;
    for (cJSON *e = events ? events->child : NULL; e;) {
        cJSON *next = e->next;
        out_event(&st->out, cJSON_DetachItemViaPointer(events, e));
        e = next;
    }
    cJSON_Delete(events);
    if (rc) {
        r->status = 503;
        snprintf(r->message, sizeof r->message, "out of memory while formatting the reply");
        stream_error(st);
        run_cancel(r);
        st->finished = true;
    } else if (r->n_done == r->n) {
        stream_end(st);
    }
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream *st = cls;
    for (;;) {
        if (st->out.off < st->out.len) {
            size_t n = st->out.len - st->out.off;
            n = n < max ? n : max;
            memcpy(buf, st->out.p + st->out.off, n);
            st->out.off += n;
            if (st->out.off == st->out.len)
                st->out.off = st->out.len = 0;
            return (ssize_t)n;
        }
        if (st->finished)
            return MHD_CONTENT_READER_END_OF_STREAM;
        /* several choices: a shorter wait on the first keeps the others' text flowing */
        int got = run_read(st->run, st->run->n > 1 ? 20 : 100, stream_take, st);
        enum srv_peer_state ps = srv_peer_check(&st->peer);
        if (ps == PEER_GONE) {
            run_cancel(st->run);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (ps == PEER_PROBE && !got) /* an SSE comment: clients skip it */
            out_put(&st->out, ":\n\n", 3);
    }
}

static void stream_free(void *cls)
{
    struct stream *st = cls;
    run_free(st->run); /* cancels what is not over */
    free(st->out.p);
    free(st);
}

static int reply_stream(struct srv_conn *c, struct run *r)
{
    struct stream *st = calloc(1, sizeof *st);
    if (!st) {
        run_free(r);
        return MHD_NO;
    }
    st->run = r;
    st->peer = (struct srv_peer){.fd = c->fd, .http11 = c->http11};
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, st, stream_free);
    if (!resp) {
        stream_free(st);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    return srv_queue_response(c, 200, resp);
}

/* ---- blocking ------------------------------------------------------------------------------- */

struct whole {
    struct run *run;
    struct out text; /* /v1/generate */
    int err;
};

static void whole_take(void *ctx, int i, const struct sched_chunk *ch)
{
    struct whole *w = ctx;
    if (ch->status)
        return;
    if (w->run->kind == JOB_GENERATE) {
        out_put(&w->text, ch->text, ch->len);
        w->run->finish = ch->finish;
    } else if (!w->err) {
        w->err = reply_choice_take(w->run->ch[i], ch, NULL);
    }
}

/* The body of a whole reply once every choice is over. */
static int whole_reply(struct srv_conn *c, struct whole *w)
{
    struct run *r = w->run;
    struct sched_result res;
    int n_gen;
    record(r, &res, &n_gen);
    if (r->status || w->err) {
        if (r->status == 503 || (!r->status && w->err)) /* a swap, the shutdown: retry */
            c->retry_after = 1;
        int st = r->status ? r->status : 503;
        return srv_reply_error(c, st, st >= 500 ? "server_error" : "invalid_request_error", NULL,
                               NULL, "%s",
                               r->status ? r->message : "out of memory while formatting the reply");
    }
    cJSON *o;
    if (r->kind == JOB_GENERATE) {
        o = cJSON_CreateObject();
        reply_add_text(o, "text", w->text.p ? w->text.p : "", w->text.len);
        cJSON_AddStringToObject(o, "finish_reason", finish_name(r->finish));
        cJSON_AddItemToObject(o, "usage", reply_usage(res.n_prompt, n_gen, res.n_cached));
        if (res.empty_reason[0])
            cJSON_AddStringToObject(o, "empty_reason", res.empty_reason);
        return srv_reply_json(c, 200, o);
    }
    o = reply_head(&r->rm, r->kind == JOB_CHAT ? "chat.completion" : "text_completion");
    cJSON *arr = cJSON_AddArrayToObject(o, "choices");
    for (int i = 0; i < r->n; i++)
        cJSON_AddItemToArray(arr, reply_choice_json(r->ch[i]));
    cJSON_AddItemToObject(o, "usage", reply_usage(res.n_prompt, n_gen, res.n_cached));
    if (res.empty_reason[0])
        cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "exsa"), "empty_reason",
                                res.empty_reason);
    return srv_reply_json(c, 200, o);
}

static int reply_blocking(struct srv_conn *c, struct run *r)
{
    struct whole w = {.run = r};
    struct srv_peer peer = {.fd = c->fd, .http11 = c->http11};
    while (r->n_done < r->n) {
        int got = run_read(r, r->n > 1 ? 20 : 100, whole_take, &w);
        enum srv_peer_state ps = srv_peer_check(&peer);
        if (ps == PEER_GONE || (ps == PEER_PROBE && !srv_peer_probe_continue(&peer))) {
            run_free(r); /* cancels every choice */
            free(w.text.p);
            return MHD_NO; /* closes the connection */
        }
        if (got && r->status) /* one choice failed: the others are not worth waiting for */
            run_cancel(r);
    }
    int ret = whole_reply(c, &w);
    free(w.text.p);
    run_free(r);
    return ret;
}

/* ---- submitting ----------------------------------------------------------------------------- */

/* The seed of choice i: the request's for the first, the next ones after it for the others
 * (so that choices differ, and a seeded request gives the same choices again). */
static uint64_t choice_seed(uint64_t seed, int i)
{
    if (seed == SAMPLER_SEED_RANDOM || i == 0)
        return seed;
    uint64_t s = seed + (uint64_t)i;
    return s == SAMPLER_SEED_RANDOM ? 0 : s;
}

/* The scheduler requests of j's choices in r (each with its mask, which it then owns).
 * Returns 0 or EXSA_ENOMEM. */
static int make_choices(struct run *r, struct job *j, unsigned model_gen)
{
    r->n = j->n > 0 ? j->n : 1;
    if (r->kind != JOB_GENERATE)
        reply_meta_of(&r->rm, j);
    for (int i = 0; i < r->n; i++) {
        struct gen_params gp = j->gp;
        gp.sp.seed = choice_seed(j->gp.sp.seed, i);
        if (j->masks[i])
            gp.mask = tm_sampler_mask(j->masks[i]->mask);
        if (!(r->req[i] = sched_req_new(j->prompt, j->n_prompt, &gp, model_gen)))
            return EXSA_ENOMEM;
        /* the prompt cache (no message starts when out of memory: still served) */
        sched_req_set_cache(r->req[i], j->cache_prompt, j->bounds, j->n_bounds);
        if (j->masks[i]) {
            sched_req_attach(r->req[i], j->masks[i], (void (*)(void *))job_mask_free);
            j->masks[i] = NULL;
        }
        if (r->kind != JOB_GENERATE && !(r->ch[i] = reply_choice_new(&r->rm, i)))
            return EXSA_ENOMEM;
    }
    return 0;
}

static int job_run(struct srv_conn *c, struct job *j, unsigned model_gen)
{
    struct server *srv = c->srv;
    struct run *r = calloc(1, sizeof *r);
    if (r) {
        r->srv = srv;
        r->kind = j->kind;
    }
    if (!r || make_choices(r, j, model_gen) < 0) {
        if (r)
            run_free(r);
        return srv_reply_error(c, 503, "server_error", NULL, NULL, "out of memory");
    }
    int rc = sched_submit_group(srv->sched, r->req, r->n);
    if (rc < 0) {
        run_free(r);
        c->retry_after = 1;
        if (rc == EXSA_ENOMEM)
            return srv_reply_error(c, 503, "server_error", NULL, "queue_full",
                                   "the queue is full (MAX_QUEUE_SIZE=%d); retry later",
                                   srv->cfg.max_queue);
        if (rc == EXSA_ECANCELLED)
            return srv_reply_error(c, 503, "server_error", NULL, "shutting_down",
                                   "the server is shutting down");
        return srv_reply_error(c, 503, "server_error", NULL, "model_not_loaded",
                               "no model is loaded (or it was just replaced); "
                               "POST /v1/models/load first");
    }
    /* the connection's reference to the first choice: cancelled (with the others) when the
     * connection ends */
    c->req = r->req[0];
    sched_req_get(r->req[0]);
    return j->stream ? reply_stream(c, r) : reply_blocking(c, r);
}

/* ---- the prologue of the routes with a body ------------------------------------------------- */

void srv_model_id(const char *path, char *out, size_t size)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf"))
        n -= 5;
    snprintf(out, size, "%.*s", (int)n, base);
}

/* Borrows the model and checks j->model (srv_model_check: any name but another file of
 * MODELS_DIR is answered by it); fills j->model_id. Returns the model or NULL with the 503 /
 * 404 in e. */
static struct exsa_model *job_model(struct srv_conn *c, struct job *j, unsigned *gen, int *n_ctx,
                                    struct srv_err *e)
{
    struct exsa_model *m = sched_model_acquire(c->srv->sched, gen, n_ctx);
    if (!m) {
        e->retry_after = 1;
        srv_err_set(e, 503, NULL, "model_not_loaded",
                    "no model is loaded; POST /v1/models/load first");
        return NULL;
    }
    srv_model_id(exsa_model_info(m)->path, j->model_id, sizeof j->model_id);
    if (srv_model_check(c->srv, j->model, exsa_model_info(m)->path, e) < 0) {
        sched_model_release(c->srv->sched);
        return NULL;
    }
    return m;
}

struct exsa_model *job_open(struct srv_conn *c, enum job_kind kind, struct job *j, unsigned *gen,
                            int *n_ctx, struct srv_err *e)
{
    if (job_parse(kind, c->body, c->body_len, j, e) < 0)
        return NULL;
    for (int i = 0; i < j->n_unknown && i < JOB_MAX_UNKNOWN; i++)
        fprintf(stderr, "exsa serve: %s: ignoring unknown parameter '%s'\n", c->url, j->unknown[i]);
    if (j->n_unknown > JOB_MAX_UNKNOWN)
        fprintf(stderr, "exsa serve: %s: and %d more unknown parameters\n", c->url,
                j->n_unknown - JOB_MAX_UNKNOWN);
    return job_model(c, j, gen, n_ctx, e);
}

int job_tokenize(struct exsa_model *m, const char *text, bool add_bos, bool special, int32_t **out,
                 int *n_out)
{
    size_t len = strlen(text);
    int cap = (int)(len < (1u << 26) ? len : (1u << 26)) + 8;
    int32_t *ids = malloc(sizeof(int32_t) * cap);
    if (!ids)
        return EXSA_ENOMEM;
    int n = exsa_tokenize(m, text, len, add_bos, special, ids, cap);
    if (n > cap) {
        int32_t *t = realloc(ids, sizeof(int32_t) * n);
        if (!t)
            return free(ids), EXSA_ENOMEM;
        ids = t;
        n = exsa_tokenize(m, text, len, add_bos, special, ids, n);
    }
    if (n < 0)
        return free(ids), n;
    *out = ids;
    *n_out = n;
    return 0;
}

/* The prompt ids of a generating job: the chat template over its messages (chat, generate with
 * use_chat_template), or its text (special tokens parsed), unless the body gave ids. */
static int job_prompt(struct exsa_model *m, struct job *j, struct srv_err *e)
{
    int rc = 0;
    struct exsa_chat_msg one = {"user", j->text, NULL, NULL};
    if (j->kind == JOB_CHAT) /* tool_choice none: the model is not told of the tools */
        rc = chat_tokenize(chat_of_model(m), tok_of_model(m), j->msgs, j->n_msgs,
                           j->tool_mode == JOB_TOOLS_NONE ? NULL : j->tools, true, &j->prompt,
                           &j->n_prompt);
    else if (j->kind == JOB_GENERATE && j->use_chat_template)
        rc = chat_tokenize(chat_of_model(m), tok_of_model(m), &one, 1, NULL, true, &j->prompt,
                           &j->n_prompt);
    else if (!j->ids_given)
        rc = job_tokenize(m, j->text, true, true, &j->prompt, &j->n_prompt);
    if (rc < 0 && j->kind == JOB_CHAT)
        return srv_err_set(e, 400, "messages", "invalid_value",
                           "cannot render the conversation "
                           "with the model's chat template: %s",
                           exsa_strerror(rc));
    if (rc < 0)
        return srv_err_set(e, 400, "prompt", "invalid_value", "cannot tokenize the prompt: %s",
                           exsa_strerror(rc));
    /* message starts: the prompt cache's checkpoints (none without memory: still served) */
    if (j->cache_prompt)
        chat_msg_starts(tok_of_model(m), j->prompt, j->n_prompt, &j->bounds, &j->n_bounds);
    return 0;
}

/* ---- constrained decoding ------------------------------------------------------------------ */

/* The token index of model m (generation gen), built on first use. The caller borrows m, so
 * no newer model can be loaded meanwhile; when gen is newer than the index, every request of
 * the older model is over (a swap ends them before a borrower can see the new generation),
 * so no mask reads the old index any more. NULL when out of memory. */
static const struct tm_vocab *model_vocab(struct server *srv, struct exsa_model *m, unsigned gen)
{
    pthread_mutex_lock(&srv->vocab_mu);
    if (!srv->vocab || srv->vocab_gen != gen) {
        tm_vocab_free(srv->vocab);
        srv->vocab = NULL;
        if (tm_vocab_new(tok_of_model(m), exsa_model_info(m)->vocab_size, &srv->vocab) == 0)
            srv->vocab_gen = gen;
    }
    const struct tm_vocab *v = srv->vocab;
    pthread_mutex_unlock(&srv->vocab_mu);
    return v;
}

/* One grammar and mask per choice of j when its reply is constrained (response_format, or
 * tool_choice required or a named function): the grammar compiled for m (its tool-call
 * tokens), the mask at the grammar's start. Returns 0 or -1 with the answer in e. */
static int job_masks(struct srv_conn *c, struct exsa_model *m, unsigned gen, struct job *j,
                     struct srv_err *e)
{
    bool forced = j->tool_mode == JOB_TOOLS_REQUIRED || j->tool_mode == JOB_TOOLS_NAMED;
    if (!j->response_format && !forced)
        return 0;
    const struct tm_vocab *v = model_vocab(c->srv, m, gen);
    if (!v)
        return srv_err_set(e, 503, NULL, NULL, "out of memory for the token index");
    int32_t a = tok_find(tok_of_model(m), TC_START), b = tok_find(tok_of_model(m), TC_END);
    /* a named function is called once; "required" calls as many as the model writes, one
     * when parallel_tool_calls is false */
    int max_calls = j->tool_mode == JOB_TOOLS_NAMED || !j->parallel_tool_calls ? 1 : 16;
    for (int i = 0; i < j->n; i++) {
        char err[400] = "";
        struct job_mask *jm = calloc(1, sizeof *jm);
        int rc = !jm ? EXSA_ENOMEM
                 : j->response_format
                     ? js_response_format(j->response_format, &jm->g, err, sizeof err)
                     : js_tool_choice(j->tools, j->tool_choice, a, b, max_calls, &jm->g, err,
                                      sizeof err);
        if (!rc)
            rc = tm_mask_new(v, jm->g, &jm->mask);
        if (jm)
            j->masks[i] = jm; /* job_free frees it */
        if (rc == EXSA_ENOMEM)
            return srv_err_set(e, 503, NULL, NULL, "out of memory for constrained decoding");
        if (rc)
            return srv_err_set(e, 400, j->response_format ? "response_format" : "tool_choice",
                               "invalid_value", "%s",
                               err[0] ? err : "the constraint allows no reply with this model");
    }
    return 0;
}

int job_route(struct srv_conn *c, enum job_kind kind)
{
    struct job j;
    struct srv_err e;
    unsigned gen;
    int n_ctx, ret;
    struct exsa_model *m = job_open(c, kind, &j, &gen, &n_ctx, &e);
    if (m) {
        int n_vocab = exsa_model_info(m)->vocab_size;
        j.reasoning = chat_template_variant(chat_of_model(m)) == CHAT_LFM25_REASONING;
        int rc = job_prompt(m, &j, &e);
        if (rc == 0)
            rc = job_check(&j, n_ctx, n_vocab, &e);
        if (rc == 0)
            job_masks(c, m, gen, &j, &e);
        sched_model_release(c->srv->sched);
    }
    ret = e.status ? srv_reply_err(c, &e) : job_run(c, &j, gen);
    job_free(&j);
    return ret;
}
