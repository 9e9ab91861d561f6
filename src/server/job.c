/*
 * job.c: what the routes with a body share: the prologue (body parsed by request.c, the model
 * borrowed and the body's "model" checked against it), tokenizing a generating request, and
 * running it through the scheduler with one of two replies: an SSE stream (struct stream: a
 * libmicrohttpd content reader that drains the request's channel and formats OpenAI chunks or
 * Exsa events), or one JSON body built once the reply is over. Both notice a client that left
 * and cancel its request only. An error after the stream began goes out as an SSE error event.
 * Called by openai.c and exsa_api.c.
 */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat.h"
#include "model.h"
#include "server.h"

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

static cJSON *usage_json(const struct sched_result *res)
{
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", res->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", res->n_gen);
    cJSON_AddNumberToObject(u, "total_tokens", res->n_prompt + res->n_gen);
    return u;
}

/* The common head of an OpenAI object. */
static cJSON *openai_head(const struct job *j, const char *object)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)j->created);
    cJSON_AddStringToObject(o, "model", j->model_id);
    cJSON_AddStringToObject(o, "system_fingerprint", "exsa-" EXSA_VERSION);
    return o;
}

/* Adds key: text[0..len) to o as a JSON string. Generated text may hold NUL bytes, which
 * cJSON's C strings would cut: srv_json_quote writes them as \u0000. */
static void add_text(cJSON *o, const char *key, const char *text, size_t len)
{
    char *q = srv_json_quote(text, len);
    if (q)
        cJSON_AddRawToObject(o, key, q);
    else
        cJSON_AddStringToObject(o, key, "");
    free(q);
}

/* One OpenAI choice. Chat: the object key ("delta" in a chunk, "message" in a whole reply)
 * with the role (when role is set) and the text (when not NULL); completions: the text. */
static cJSON *openai_choice(const struct job *j, const char *key, const char *text, size_t len,
                            bool role, const char *finish)
{
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    if (j->kind == JOB_CHAT) {
        cJSON *d = cJSON_AddObjectToObject(ch, key);
        if (role)
            cJSON_AddStringToObject(d, "role", "assistant");
        if (text)
            add_text(d, "content", text, len);
    } else {
        add_text(ch, "text", text ? text : "", text ? len : 0);
    }
    cJSON_AddNullToObject(ch, "logprobs");
    if (finish)
        cJSON_AddStringToObject(ch, "finish_reason", finish);
    else
        cJSON_AddNullToObject(ch, "finish_reason");
    return ch;
}

/* One streaming OpenAI chunk: text (may be NULL), role in the delta, finish reason or NULL. */
static cJSON *openai_chunk(const struct job *j, const char *text, size_t len, bool role,
                           const char *finish)
{
    cJSON *o = openai_head(j, j->kind == JOB_CHAT ? "chat.completion.chunk" : "text_completion");
    cJSON *arr = cJSON_AddArrayToObject(o, "choices");
    cJSON_AddItemToArray(arr, openai_choice(j, "delta", text, len, role, finish));
    if (j->include_usage)
        cJSON_AddNullToObject(o, "usage");
    return o;
}

static const char *finish_name(enum gen_finish f)
{
    return f == GEN_LENGTH ? "length" : "stop";
}

/* Records the end of a request in the metrics and the log. */
static void record(struct server *srv, struct sched_req *r, struct sched_result *res)
{
    sched_req_result(r, res);
    metrics_tokens(srv->metrics, res->n_prompt, res->n_gen);
    double ttft = res->t_first > 0 ? res->t_first - res->t_submit : -1;
    double tpot = res->t_first > 0 && res->n_gen > 1
                      ? (res->t_done - res->t_first) / (res->n_gen - 1) : -1;
    double wait = res->t_admit > 0 ? res->t_admit - res->t_submit : -1;
    metrics_latency(srv->metrics, wait, ttft, tpot);
    if (res->empty_reason[0])
        fprintf(stderr, "exsa serve: empty reply: %s\n", res->empty_reason);
}

/* ---- streaming ------------------------------------------------------------------------------ */

struct stream {
    struct server *srv;
    struct sched_req *req;
    struct job meta; /* kind, ids, include_usage; no owned arrays */
    struct srv_peer peer;
    struct out out;
    bool began, finished;
};

/* Formats what a read took from the channel into SSE events. */
static void stream_format(struct stream *st, const struct sched_chunk *ch)
{
    const struct job *j = &st->meta;
    if (!st->began && j->kind == JOB_CHAT && !ch->status)
        out_event(&st->out, openai_chunk(j, "", 0, true, NULL));
    st->began = true;
    size_t off = 0;
    for (int i = 0; i < ch->n_pieces; i++) {
        const char *p = ch->text + off;
        size_t n = (size_t)ch->piece_len[i];
        off += n;
        if (j->kind != JOB_GENERATE) {
            out_event(&st->out, openai_chunk(j, p, n, false, NULL));
            continue;
        }
        cJSON *e = cJSON_CreateObject();
        add_text(e, "token", p, n);
        cJSON_AddFalseToObject(e, "done");
        out_event(&st->out, e);
    }
    if (!ch->done)
        return;
    st->finished = true;
    struct sched_result res;
    record(st->srv, st->req, &res);
    if (ch->status) {
        char *s = srv_error_json(ch->message, ch->status >= 500 ? "server_error"
                                                                : "invalid_request_error",
                                 NULL, NULL);
        if (s) {
            out_put(&st->out, "data: ", 6), out_put(&st->out, s, strlen(s));
            out_put(&st->out, "\n\n", 2);
            free(s);
        }
        return;
    }
    if (j->kind == JOB_GENERATE) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "token", "");
        cJSON_AddTrueToObject(e, "done");
        cJSON_AddStringToObject(e, "finish_reason", finish_name(ch->finish));
        cJSON_AddItemToObject(e, "usage", usage_json(&res));
        if (res.empty_reason[0])
            cJSON_AddStringToObject(e, "empty_reason", res.empty_reason);
        out_event(&st->out, e);
        return;
    }
    out_event(&st->out, openai_chunk(j, j->kind == JOB_CHAT ? NULL : "", 0, false,
                                     finish_name(ch->finish)));
    if (j->include_usage) {
        cJSON *u = openai_head(j, j->kind == JOB_CHAT ? "chat.completion.chunk"
                                                      : "text_completion");
        cJSON_AddArrayToObject(u, "choices");
        cJSON_AddItemToObject(u, "usage", usage_json(&res));
        out_event(&st->out, u);
    }
    out_put(&st->out, "data: [DONE]\n\n", 14);
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
        struct sched_chunk ch;
        bool got = sched_read(st->req, 100, &ch);
        enum srv_peer_state ps = srv_peer_check(&st->peer);
        if (ps == PEER_GONE) {
            if (got)
                sched_chunk_free(&ch);
            sched_cancel(st->req);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (ps == PEER_PROBE) /* an SSE comment: clients skip it */
            out_put(&st->out, ":\n\n", 3);
        if (!got)
            continue;
        stream_format(st, &ch);
        sched_chunk_free(&ch);
    }
}

static void stream_free(void *cls)
{
    struct stream *st = cls;
    sched_cancel(st->req); /* a no-op when the reply is over */
    sched_req_put(st->req);
    free(st->out.p);
    free(st);
}

static int reply_stream(struct srv_conn *c, struct job *j, struct sched_req *r)
{
    struct stream *st = calloc(1, sizeof *st);
    if (!st)
        return MHD_NO;
    st->srv = c->srv;
    st->req = r;
    st->peer = (struct srv_peer){.fd = c->fd, .http11 = c->http11};
    st->meta = *j;
    st->meta.prompt = NULL, st->meta.stop = NULL, st->meta.bias_id = NULL, st->meta.bias = NULL;
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

static int reply_blocking(struct srv_conn *c, struct job *j, struct sched_req *r)
{
    struct out text = {0};
    struct sched_chunk ch;
    struct srv_peer peer = {.fd = c->fd, .http11 = c->http11};
    for (;;) {
        bool got = sched_read(r, 100, &ch);
        enum srv_peer_state ps = srv_peer_check(&peer);
        if (ps == PEER_GONE || (ps == PEER_PROBE && !srv_peer_probe_continue(&peer))) {
            if (got)
                sched_chunk_free(&ch);
            sched_cancel(r);
            free(text.p);
            return MHD_NO; /* closes the connection */
        }
        if (!got)
            continue;
        out_put(&text, ch.text, ch.len);
        if (ch.done)
            break;
        sched_chunk_free(&ch);
    }
    struct sched_result res;
    record(c->srv, r, &res);
    int ret;
    if (ch.status) {
        if (ch.status == 503) /* a model swap or the shutdown ended it: worth a retry */
            c->retry_after = 1;
        ret = srv_reply_error(c, ch.status, ch.status >= 500 ? "server_error"
                                                              : "invalid_request_error",
                              NULL, NULL, "%s", ch.message);
    } else if (j->kind == JOB_GENERATE) {
        cJSON *o = cJSON_CreateObject();
        add_text(o, "text", text.p ? text.p : "", text.len);
        cJSON_AddStringToObject(o, "finish_reason", finish_name(ch.finish));
        cJSON_AddItemToObject(o, "usage", usage_json(&res));
        if (res.empty_reason[0])
            cJSON_AddStringToObject(o, "empty_reason", res.empty_reason);
        ret = srv_reply_json(c, 200, o);
    } else {
        cJSON *o = openai_head(j, j->kind == JOB_CHAT ? "chat.completion" : "text_completion");
        cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"),
                             openai_choice(j, "message", text.p ? text.p : "", text.len, true,
                                           finish_name(ch.finish)));
        cJSON_AddItemToObject(o, "usage", usage_json(&res));
        if (res.empty_reason[0])
            cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "exsa"), "empty_reason",
                                    res.empty_reason);
        ret = srv_reply_json(c, 200, o);
    }
    sched_chunk_free(&ch);
    free(text.p);
    return ret;
}

int job_run(struct srv_conn *c, struct job *j, unsigned model_gen)
{
    struct server *srv = c->srv;
    struct sched_req *r = sched_req_new(j->prompt, j->n_prompt, &j->gp, model_gen);
    if (!r)
        return srv_reply_error(c, 503, "server_error", NULL, NULL, "out of memory");
    int rc = sched_submit(srv->sched, r);
    if (rc < 0) {
        sched_req_put(r);
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
    c->req = r; /* the connection's reference: cancelled when the connection ends */
    sched_req_get(r);
    if (j->stream)
        return reply_stream(c, j, r);
    int ret = reply_blocking(c, j, r);
    sched_req_put(r);
    return ret;
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
    srv_model_id(m->path, j->model_id, sizeof j->model_id);
    if (srv_model_check(c->srv, j->model, m->path, e) < 0) {
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
        fprintf(stderr, "exsa serve: %s: ignoring unknown parameter '%s'\n", c->url,
                j->unknown[i]);
    if (j->n_unknown > JOB_MAX_UNKNOWN)
        fprintf(stderr, "exsa serve: %s: and %d more unknown parameters\n", c->url,
                j->n_unknown - JOB_MAX_UNKNOWN);
    return job_model(c, j, gen, n_ctx, e);
}

int job_tokenize(struct exsa_model *m, const char *text, bool add_bos, bool special,
                 int32_t **out, int *n_out)
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
    if (j->kind == JOB_CHAT)
        rc = chat_tokenize(m->tmpl, m->tok, j->msgs, j->n_msgs, j->tools, true, &j->prompt,
                           &j->n_prompt);
    else if (j->kind == JOB_GENERATE && j->use_chat_template)
        rc = chat_tokenize(m->tmpl, m->tok, &one, 1, NULL, true, &j->prompt, &j->n_prompt);
    else if (!j->ids_given)
        rc = job_tokenize(m, j->text, true, true, &j->prompt, &j->n_prompt);
    if (rc < 0 && j->kind == JOB_CHAT)
        return srv_err_set(e, 400, "messages", "invalid_value", "cannot render the conversation "
                           "with the model's chat template: %s", exsa_strerror(rc));
    if (rc < 0)
        return srv_err_set(e, 400, "prompt", "invalid_value", "cannot tokenize the prompt: %s",
                           exsa_strerror(rc));
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
        int rc = job_prompt(m, &j, &e);
        sched_model_release(c->srv->sched);
        if (rc == 0)
            job_check(&j, n_ctx, n_vocab, &e);
    }
    ret = e.status ? srv_reply_err(c, &e) : job_run(c, &j, gen);
    job_free(&j);
    return ret;
}
