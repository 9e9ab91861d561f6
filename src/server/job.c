/*
 * job.c: what the generating routes share: sampling parameters read from JSON and checked
 * (400 naming the parameter), the context and vocabulary checks, and running a job through the
 * scheduler with one of two replies: an SSE stream (struct stream: a libmicrohttpd content
 * reader that drains the request's channel and formats OpenAI chunks or Exsa events), or one
 * JSON body built once the reply is over. Both notice a client that left and cancel its request
 * only. An error after the stream began goes out as an SSE error event. Called by openai.c and
 * exsa_api.c.
 */
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "sampler.h"
#include "server.h"

void job_init(struct job *j, enum job_kind kind, const char *id_prefix)
{
    static unsigned long counter;
    memset(j, 0, sizeof *j);
    j->kind = kind;
    j->created = (long)time(NULL);
    unsigned long n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
    snprintf(j->id, sizeof j->id, "%s-%lx%04lx", id_prefix, (unsigned long)j->created, n);
    gen_params_default(&j->gp);
    j->gp.sp.seed = SAMPLER_SEED_RANDOM;
}

void job_free(struct job *j)
{
    for (int i = 0; j->stop && i < j->gp.n_stop; i++)
        free(j->stop[i]);
    free(j->stop);
    free(j->prompt);
    free(j->bias_id);
    free(j->bias);
    memset(j, 0, sizeof *j);
}

void job_log_unknown(const struct srv_conn *c, const cJSON *o, const char *const *known)
{
    for (const cJSON *it = o ? o->child : NULL; it; it = it->next) {
        bool found = false;
        for (const char *const *k = known; *k && !found; k++)
            found = !strcmp(*k, it->string);
        if (!found)
            fprintf(stderr, "exsa serve: %s: ignoring unknown parameter '%s'\n", c->url,
                    it->string);
    }
}

/* Reads number key of o into *out when present and not null. Returns 0 (absent), 1 (set) or
 * -1 after replying 400 (wrong type or outside [lo, hi]). */
static int get_num(struct srv_conn *c, const cJSON *o, const char *key, double lo, double hi,
                   bool integer, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v))
        return 0;
    /* floor(), not a cast to an integer type: a cast of a value past its range (a seed above
     * 2^63) is undefined and refused valid seeds */
    if (!cJSON_IsNumber(v) || v->valuedouble < lo || v->valuedouble > hi ||
        (integer && v->valuedouble != floor(v->valuedouble))) {
        srv_reply_error(c, 400, "invalid_request_error", key, "invalid_value",
                        integer ? "'%s' must be %s in [%.0f, %.0f]" : "'%s' must be %s in [%g, %g]",
                        key, integer ? "an integer" : "a number", lo, hi);
        return -1;
    }
    *out = v->valuedouble;
    return 1;
}

/* Reads stop strings (a string or an array of strings) of key into j. */
static int get_stop(struct srv_conn *c, struct job *j, const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v))
        return 0;
    int n = cJSON_IsString(v) ? 1 : cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
    bool ok = n >= 0 && n <= 16;
    for (int i = 0; ok && cJSON_IsArray(v) && i < n; i++)
        ok = cJSON_IsString(cJSON_GetArrayItem(v, i)) && cJSON_GetArrayItem(v, i)->valuestring[0];
    if (ok && cJSON_IsString(v) && !v->valuestring[0])
        n = 0; /* "" means no stop string */
    if (!ok) {
        srv_reply_error(c, 400, "invalid_request_error", key, "invalid_value",
                        "'%s' must be a non-empty string or a list of at most 16 of them", key);
        return -1;
    }
    j->stop = calloc(n > 0 ? n : 1, sizeof(char *));
    for (int i = 0; j->stop && i < n; i++)
        j->stop[i] = strdup(cJSON_IsString(v) ? v->valuestring
                                              : cJSON_GetArrayItem(v, i)->valuestring);
    j->gp.n_stop = n;
    j->gp.stop = (const char *const *)j->stop;
    return 1;
}

/* Reads OpenAI's logit_bias object {"token id": bias} into j. */
static int get_bias(struct srv_conn *c, struct job *j, const cJSON *o)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "logit_bias");
    if (!v || cJSON_IsNull(v))
        return 0;
    int n = cJSON_IsObject(v) ? cJSON_GetArraySize(v) : -1;
    if (n < 0 || n > 4096)
        goto bad;
    j->bias_id = malloc(sizeof(int32_t) * (n ? n : 1));
    j->bias = malloc(sizeof(float) * (n ? n : 1));
    if (!j->bias_id || !j->bias)
        goto bad;
    int i = 0;
    for (const cJSON *it = v->child; it; it = it->next, i++) {
        char *end;
        errno = 0;
        long id = strtol(it->string, &end, 10);
        if (errno || end == it->string || *end || id < 0 || id > INT32_MAX ||
            !cJSON_IsNumber(it) || it->valuedouble < -100 || it->valuedouble > 100)
            goto bad;
        j->bias_id[i] = (int32_t)id;
        j->bias[i] = (float)it->valuedouble;
    }
    j->gp.sp.n_logit_bias = n;
    j->gp.sp.logit_bias_id = j->bias_id;
    j->gp.sp.logit_bias = j->bias;
    return 1;
bad:
    srv_reply_error(c, 400, "invalid_request_error", "logit_bias", "invalid_value",
                    "'logit_bias' must map token ids (as strings) to numbers in [-100, 100]");
    return -1;
}

int job_parse_sampling(struct srv_conn *c, struct job *j, const cJSON *o, bool exsa)
{
    struct exsa_sampling_params *sp = &j->gp.sp;
    double v;
    int rc;
#define NUM(key, lo, hi, integer, dst)                                                         \
    if ((rc = get_num(c, o, key, lo, hi, integer, &v)) < 0)                                    \
        return -1;                                                                             \
    else if (rc)                                                                               \
        dst = v
    NUM("temperature", 0, 100, false, sp->temperature);
    NUM("top_p", 0, 1, false, sp->top_p);
    NUM("top_k", 0, 1 << 30, true, sp->top_k);
    NUM("min_p", 0, 1, false, sp->min_p);
    NUM("presence_penalty", -2, 2, false, sp->presence_penalty);
    NUM("frequency_penalty", -2, 2, false, sp->frequency_penalty);
    NUM("repeat_penalty", 0.01, 10, false, sp->repeat_penalty);
    NUM("repetition_penalty", 0.01, 10, false, sp->repeat_penalty);
    NUM("repeat_last_n", -1, 1 << 30, true, sp->penalty_last_n);
    NUM("penalty_last_n", -1, 1 << 30, true, sp->penalty_last_n);
    NUM("max_tokens", 1, 1 << 30, true, j->gp.max_tokens);
    NUM("max_completion_tokens", 1, 1 << 30, true, j->gp.max_tokens);
    /* any 64-bit seed, signed or not (2^64 - 1 reads as the double 2^64) */
    if ((rc = get_num(c, o, "seed", -9223372036854775808.0, 18446744073709551616.0, true, &v)) < 0)
        return -1;
    else if (rc)
        sp->seed = v < 0 ? (uint64_t)(int64_t)v : v >= 18446744073709551616.0 ? UINT64_MAX
                                                                            : (uint64_t)v;
#undef NUM
    if ((rc = get_num(c, o, "n", 1, 1, true, &v)) < 0)
        return -1;
    if (get_stop(c, j, o, exsa ? "stop_sequences" : "stop") < 0)
        return -1;
    if (exsa && !j->stop && get_stop(c, j, o, "stop") < 0)
        return -1;
    if (get_bias(c, j, o) < 0)
        return -1;
    const cJSON *ie = cJSON_GetObjectItemCaseSensitive(o, "ignore_eos");
    if (ie && !cJSON_IsBool(ie))
        return srv_reply_error(c, 400, "invalid_request_error", "ignore_eos", "invalid_value",
                               "'ignore_eos' must be true or false"), -1;
    j->gp.ignore_eog = cJSON_IsTrue(ie);
    return 0;
}

int job_check(struct srv_conn *c, struct job *j, int n_ctx, int n_vocab)
{
    const char *param = j->kind == JOB_CHAT ? "messages" : "prompt";
    if (j->n_prompt <= 0)
        return srv_reply_error(c, 400, "invalid_request_error", param, "invalid_value",
                               "the prompt is empty"), -1;
    if (j->n_prompt >= n_ctx)
        return srv_reply_error(c, 400, "invalid_request_error", param, "context_length_exceeded",
                               "the prompt has %d tokens but the context holds %d "
                               "(CONTEXT_SIZE), and at least one more is needed to reply",
                               j->n_prompt, n_ctx), -1;
    for (int i = 0; i < j->gp.sp.n_logit_bias; i++)
        if (j->bias_id[i] >= n_vocab)
            return srv_reply_error(c, 400, "invalid_request_error", "logit_bias",
                                   "invalid_value", "logit_bias names token %d but the "
                                   "vocabulary has %d tokens", (int)j->bias_id[i], n_vocab), -1;
    return 0;
}

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

/* One streaming OpenAI chunk: text (may be NULL), role in the delta, finish reason or NULL. */
static cJSON *openai_chunk(const struct job *j, const char *text, size_t len, bool role,
                           const char *finish)
{
    bool chat = j->kind == JOB_CHAT;
    cJSON *o = openai_head(j, chat ? "chat.completion.chunk" : "text_completion");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    if (chat) {
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
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
    cJSON *arr = cJSON_AddArrayToObject(o, "choices");
    cJSON_AddItemToArray(arr, ch);
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
    metrics_latency(srv->metrics, ttft, tpot);
    if (res->empty_reason[0])
        fprintf(stderr, "exsa serve: empty reply: %s\n", res->empty_reason);
}

/* ---- streaming ------------------------------------------------------------------------------ */

struct stream {
    struct server *srv;
    struct sched_req *req;
    struct job meta; /* kind, ids, include_usage; no owned arrays */
    int fd;
    struct out out;
    bool began, finished;
};

static bool fd_alive(int fd)
{
    if (fd < 0)
        return true;
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
}

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
        if (!sched_read(st->req, 100, &ch)) {
            if (!fd_alive(st->fd)) {
                sched_cancel(st->req);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            continue;
        }
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
    st->fd = c->fd;
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
    for (;;) {
        if (!sched_read(r, 100, &ch)) {
            if (!fd_alive(c->fd)) {
                sched_cancel(r);
                free(text.p);
                return MHD_NO; /* closes the connection */
            }
            continue;
        }
        out_put(&text, ch.text, ch.len);
        if (ch.done)
            break;
        sched_chunk_free(&ch);
    }
    struct sched_result res;
    record(c->srv, r, &res);
    int ret;
    if (ch.status) {
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
        bool chat = j->kind == JOB_CHAT;
        cJSON *o = openai_head(j, chat ? "chat.completion" : "text_completion");
        cJSON *choice = cJSON_CreateObject();
        cJSON_AddNumberToObject(choice, "index", 0);
        if (chat) {
            cJSON *m = cJSON_AddObjectToObject(choice, "message");
            cJSON_AddStringToObject(m, "role", "assistant");
            add_text(m, "content", text.p ? text.p : "", text.len);
        } else {
            add_text(choice, "text", text.p ? text.p : "", text.len);
        }
        cJSON_AddNullToObject(choice, "logprobs");
        cJSON_AddStringToObject(choice, "finish_reason", finish_name(ch.finish));
        cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"), choice);
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
