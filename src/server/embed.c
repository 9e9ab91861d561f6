/*
 * embed.c: POST /v1/embeddings in OpenAI's shape. `input` is a string, a list of strings, a
 * list of token ids or a list of such lists (up to EMBED_MAX_INPUTS); each input runs through
 * the scheduler as an embedding request of its own (its own sequence, prefill only, in a
 * forward call apart from the generating requests', so chat replies are not changed), up to
 * half of MAX_BATCH_SIZE of them at once (the other half stays free for chats). The vector is the
 * final hidden state (after the output norm) pooled as the GGUF says ({arch}.pooling_type: mean
 * when absent), L2-normalised; `dimensions` truncates it and normalises again (OpenAI's
 * shortening); `encoding_format` "base64" sends the little-endian float32 bytes. A model the engine
 * cannot embed with (a bidirectional encoder, a per-token ColBERT model, a reranker) is a 400 that
 * says why. Called by http.c's table.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "model.h"
#include "server.h"
#include "strbuf.h"

#define EMBED_MAX_INPUTS 2048 /* OpenAI's limit on the inputs of one request */

struct embed_job {
    cJSON *body;
    const char *model; /* the body's "model", or NULL */
    bool base64;
    int dims;           /* "dimensions", 0 when absent */
    const cJSON *input; /* a string, or the list */
    int n;              /* inputs */
    int32_t **ids;      /* n token lists (tokenized or given) */
    int *n_ids;
    long n_tokens; /* in all inputs */
};

static void embed_free(struct embed_job *ej)
{
    for (int i = 0; ej->ids && i < ej->n; i++)
        free(ej->ids[i]);
    free(ej->ids);
    free(ej->n_ids);
    cJSON_Delete(ej->body);
}

/* ---- the body ------------------------------------------------------------------------------- */

/* Whether v is a non-empty list of token ids (integers in [0, 2^31)). */
static bool is_id_list(const cJSON *v)
{
    if (!cJSON_IsArray(v) || !v->child)
        return false;
    for (const cJSON *it = v->child; it; it = it->next)
        if (!cJSON_IsNumber(it) || !(it->valuedouble >= 0 && it->valuedouble <= INT32_MAX) ||
            it->valuedouble != floor(it->valuedouble))
            return false;
    return true;
}

/* Checks "input" and counts the inputs (one walk of each list; the ids are capped in all). */
static int parse_input(struct embed_job *ej, struct srv_err *e)
{
    static const char shape[] = "'input' must be a non-empty string, a list of non-empty "
                                "strings, a list of token ids or a list of such lists";
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(ej->body, "input");
    ej->input = in;
    if (cJSON_IsString(in) && in->valuestring[0]) {
        ej->n = 1;
        return 0;
    }
    if (is_id_list(in)) { /* one input of token ids */
        ej->n = 1;
        return cJSON_GetArraySize(in) <= JOB_MAX_IDS
                   ? 0
                   : srv_err_set(e, 400, "input", "too_many_entries",
                                 "'input' holds more than %d token ids", JOB_MAX_IDS);
    }
    if (!cJSON_IsArray(in) || !in->child)
        return srv_err_set(e, 400, "input", "invalid_value", "%s", shape);
    long ids = 0;
    for (const cJSON *it = in->child; it; it = it->next) {
        bool str = cJSON_IsString(it) && it->valuestring[0];
        if (!(str ? cJSON_IsString(in->child) : is_id_list(it) && cJSON_IsArray(in->child)))
            return srv_err_set(e, 400, "input", "invalid_value",
                               "%s: entry %d is not (every entry must be of the first one's "
                               "kind, and none empty)",
                               shape, ej->n);
        if (++ej->n > EMBED_MAX_INPUTS)
            return srv_err_set(e, 400, "input", "too_many_entries",
                               "'input' holds more than %d entries", EMBED_MAX_INPUTS);
        for (const cJSON *t = str ? NULL : it->child; t; t = t->next)
            if (++ids > JOB_MAX_IDS)
                return srv_err_set(e, 400, "input", "too_many_entries",
                                   "'input' holds more than %d token ids in all", JOB_MAX_IDS);
    }
    return 0;
}

/* Reads "encoding_format" and "dimensions". */
static int parse_format(struct embed_job *ej, struct srv_err *e)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(ej->body, "encoding_format");
    if (cJSON_IsString(f) && !strcmp(f->valuestring, "base64"))
        ej->base64 = true;
    else if (f && !cJSON_IsNull(f) && !(cJSON_IsString(f) && !strcmp(f->valuestring, "float")))
        return srv_err_set(e, 400, "encoding_format", "invalid_value",
                           "'encoding_format' must be \"float\" or \"base64\"");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(ej->body, "dimensions");
    if (!d || cJSON_IsNull(d))
        return 0;
    if (!cJSON_IsNumber(d) || !(d->valuedouble >= 1 && d->valuedouble <= 1 << 20) ||
        d->valuedouble != floor(d->valuedouble))
        return srv_err_set(e, 400, "dimensions", "invalid_value",
                           "'dimensions' must be a positive integer");
    ej->dims = (int)d->valuedouble;
    return 0;
}

/* Parses the body into ej (always initialised: embed_free it). Returns 0 or -1 with e. */
static int embed_parse(struct srv_conn *c, struct embed_job *ej, struct srv_err *e)
{
    static const char *const known[] = {"input", "model", "encoding_format", "dimensions", "user"};
    memset(ej, 0, sizeof *ej);
    ej->body = c->body ? cJSON_ParseWithLength(c->body, c->body_len) : NULL;
    if (!cJSON_IsObject(ej->body))
        return srv_err_set(e, 400, NULL, "invalid_json", "the request body must be a JSON object");
    int unknown = 0;
    for (const cJSON *it = ej->body->child; it; it = it->next) {
        size_t k = 0;
        while (k < sizeof known / sizeof known[0] && strcmp(known[k], it->string))
            k++;
        if (k == sizeof known / sizeof known[0] && unknown++ < JOB_MAX_UNKNOWN)
            fprintf(stderr, "exsa serve: %s: ignoring unknown parameter '%s'\n", c->url,
                    it->string);
    }
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(ej->body, "model");
    if (m && !cJSON_IsNull(m) && !cJSON_IsString(m))
        return srv_err_set(e, 400, "model", "invalid_value", "'model' must be a string");
    ej->model = cJSON_IsString(m) && m->valuestring[0] ? m->valuestring : NULL;
    return parse_format(ej, e) < 0 ? -1 : parse_input(ej, e);
}

/* ---- the model ------------------------------------------------------------------------------ */

/* How m pools a sequence into one vector, from its GGUF: 0 and *pool, or -1 with the reason
 * (why) this engine cannot embed with it. LFM2's embedding checkpoints (docs/API.md):
 * LFM2-ColBERT-350M (causal, one 128-d vector per token through a dense projection,
 * {arch}.embedding_length_out, pooling none), LFM2.5-ColBERT-350M and LFM2.5-Embedding-350M
 * (bidirectional: {arch}.attention.causal false, CLS pooling for the latter). */
static int model_pooling(const struct exsa_model *m, enum sched_pool *pool, char *why, size_t size)
{
    const char *arch = exsa_model_info(m)->arch;
    const struct gguf_file *f = model_gguf(m);
    char key[128];
    bool causal = true;
    snprintf(key, sizeof key, "%s.attention.causal", arch);
    if (gguf_get_bool(f, key, &causal) == 0 && !causal)
        return snprintf(why, size,
                        "it is a bidirectional encoder (%s is false, as in "
                        "LFM2.5-Embedding and LFM2.5-ColBERT), and exsa runs LFM2 causally "
                        "only",
                        key),
               -1;
    int64_t pt = 1; /* mean, when the file does not say */
    snprintf(key, sizeof key, "%s.pooling_type", arch);
    gguf_get_int(f, key, &pt);
    char out_key[128];
    snprintf(out_key, sizeof out_key, "%s.embedding_length_out", arch);
    if (pt == 0 || gguf_find_kv(f, out_key) || gguf_find_tensor(f, "dense_2.weight"))
        return snprintf(why, size,
                        "it gives one vector per token (a ColBERT late-interaction "
                        "model such as LFM2-ColBERT-350M: %s none, or a per-token projection), "
                        "not one vector per input",
                        key),
               -1;
    if (pt == 4)
        return snprintf(why, size, "it is a reranker (%s rank)", key), -1;
    if (pt < 1 || pt > 3)
        return snprintf(why, size, "its %s %lld is not one exsa knows", key, (long long)pt), -1;
    *pool = pt == 1 ? SCHED_POOL_MEAN : pt == 2 ? SCHED_POOL_FIRST : SCHED_POOL_LAST;
    return 0;
}

/* The token ids of every input (strings tokenized with the BOS the vocabulary asks for, special
 * tokens as plain text), checked against the vocabulary and the context. */
static int embed_tokenize(struct exsa_model *m, struct embed_job *ej, int n_ctx, struct srv_err *e)
{
    const int n_vocab = exsa_model_info(m)->vocab_size;
    ej->ids = calloc((size_t)ej->n, sizeof *ej->ids);
    ej->n_ids = calloc((size_t)ej->n, sizeof *ej->n_ids);
    if (!ej->ids || !ej->n_ids)
        return srv_err_set(e, 503, NULL, NULL, "out of memory");
    bool one = cJSON_IsString(ej->input) || is_id_list(ej->input);
    const cJSON *it = one ? ej->input : ej->input->child;
    for (int i = 0; i < ej->n; i++, it = it->next) {
        if (cJSON_IsString(it)) {
            if (job_tokenize(m, it->valuestring, true, false, &ej->ids[i], &ej->n_ids[i]) < 0)
                return srv_err_set(e, 400, "input", "invalid_value", "cannot tokenize input %d", i);
        } else {
            int n = 0;
            for (const cJSON *t = it->child; t; t = t->next)
                n++;
            if (!(ej->ids[i] = malloc(sizeof(int32_t) * (size_t)n)))
                return srv_err_set(e, 503, NULL, NULL, "out of memory");
            for (const cJSON *t = it->child; t; t = t->next) {
                if (t->valuedouble >= n_vocab)
                    return srv_err_set(e, 400, "input", "invalid_value",
                                       "input %d names token %.0f but the vocabulary has %d "
                                       "tokens",
                                       i, t->valuedouble, n_vocab);
                ej->ids[i][ej->n_ids[i]++] = (int32_t)t->valuedouble;
            }
        }
        if (ej->n_ids[i] <= 0)
            return srv_err_set(e, 400, "input", "invalid_value", "input %d has no tokens", i);
        if (ej->n_ids[i] > n_ctx)
            return srv_err_set(e, 400, "input", "context_length_exceeded",
                               "input %d has %d tokens but the context holds %d (CONTEXT_SIZE)", i,
                               ej->n_ids[i], n_ctx);
        ej->n_tokens += ej->n_ids[i];
    }
    return 0;
}

/* Borrows the model, checks "model", "dimensions" and that it can embed, tokenizes; releases
 * it. *gen, *pool, *dim: for the run; id: the model's id for the reply. Returns 0 or -1
 * with e. */
static int embed_prepare(struct srv_conn *c, struct embed_job *ej, unsigned *gen,
                         enum sched_pool *pool, int *dim, char *id, size_t id_size,
                         struct srv_err *e)
{
    struct sched *s = c->srv->sched;
    int n_ctx;
    struct exsa_model *m = sched_model_acquire(s, gen, &n_ctx);
    if (!m) {
        e->retry_after = 1;
        return srv_err_set(e, 503, NULL, "model_not_loaded",
                           "no model is loaded; POST /v1/models/load first");
    }
    char why[320];
    *dim = exsa_model_info(m)->dim;
    srv_model_id(exsa_model_info(m)->path, id, id_size);
    int rc = srv_model_check(c->srv, ej->model, exsa_model_info(m)->path, e);
    if (rc == 0 && model_pooling(m, pool, why, sizeof why) < 0)
        rc = srv_err_set(e, 400, "model", "model_cannot_embed", "this model cannot embed: %s", why);
    if (rc == 0 && ej->dims > *dim)
        rc = srv_err_set(e, 400, "dimensions", "invalid_value",
                         "'dimensions' is %d but the model's vectors have %d", ej->dims, *dim);
    if (rc == 0)
        rc = embed_tokenize(m, ej, n_ctx, e);
    sched_model_release(s);
    return rc;
}

/* ---- the run -------------------------------------------------------------------------------- */

/* Fills e for a refused sched_submit (503 with Retry-After). */
static int submit_error(struct server *srv, int rc, struct srv_err *e)
{
    e->retry_after = 1;
    if (rc == EXSA_ENOMEM)
        return srv_err_set(e, 503, NULL, "queue_full",
                           "the queue is full (MAX_QUEUE_SIZE=%d); retry later",
                           srv->cfg.max_queue);
    if (rc == EXSA_ECANCELLED)
        return srv_err_set(e, 503, NULL, "shutting_down", "the server is shutting down");
    return srv_err_set(e, 503, NULL, "model_not_loaded",
                       "no model is loaded (or it was just replaced); POST /v1/models/load first");
}

/* Waits for r to end (the client may leave: then -2), and takes its vector into v. Returns 0,
 * -1 with e, or -2. */
static int wait_one(struct srv_conn *c, struct sched_req *r, float *v, int dim, struct srv_err *e)
{
    struct srv_peer peer = {.fd = c->fd, .http11 = c->http11};
    struct sched_chunk ch;
    for (;;) {
        bool got = sched_read(r, 100, &ch);
        enum srv_peer_state ps = srv_peer_check(&peer);
        if (ps == PEER_GONE || (ps == PEER_PROBE && !srv_peer_probe_continue(&peer))) {
            if (got)
                sched_chunk_free(&ch);
            return -2;
        }
        if (got && ch.done)
            break;
        if (got)
            sched_chunk_free(&ch);
    }
    int status = ch.status;
    if (status) {
        e->retry_after = status == 503;
        srv_err_set(e, status, NULL, NULL, "%s", ch.message);
    }
    sched_chunk_free(&ch);
    if (status)
        return -1;
    if (sched_embed_vector(r, v, dim) != dim)
        return srv_err_set(e, 500, NULL, NULL, "the embedding request ended without a vector");
    return 0;
}

/* Runs every input through the scheduler, at most half of MAX_BATCH_SIZE at once (a full queue
 * waits for one of ours, when one runs), into vecs (n x dim). Returns 0, -1 with e, or -2
 * (the client left). */
static int embed_run(struct srv_conn *c, const struct embed_job *ej, unsigned gen,
                     enum sched_pool pool, int dim, float *vecs, struct srv_err *e)
{
    struct server *srv = c->srv;
    struct sched_stats st;
    sched_get_stats(srv->sched, &st);
    /* half the sequence slots at most: a request of many inputs leaves room for chats */
    const int window = st.max_batch > 1 ? (st.max_batch + 1) / 2 : 1;
    struct sched_req **live = calloc((size_t)ej->n, sizeof *live);
    if (!live)
        return srv_err_set(e, 503, NULL, NULL, "out of memory");
    int next = 0, done = 0, rc = 0;
    while (rc == 0 && done < ej->n) {
        while (rc == 0 && next < ej->n && next - done < window) {
            struct sched_req *r = sched_embed_new(ej->ids[next], ej->n_ids[next], pool, gen);
            int sr = r ? sched_submit(srv->sched, r) : EXSA_ENOMEM;
            if (sr < 0)
                sched_req_put(r);
            if (sr == EXSA_ENOMEM && r && next > done)
                break; /* the queue is full: wait for one of ours */
            if (sr < 0)
                rc =
                    r ? submit_error(srv, sr, e) : srv_err_set(e, 503, NULL, NULL, "out of memory");
            else
                live[next++] = r;
        }
        if (rc == 0 && done < next) {
            rc = wait_one(c, live[done], vecs + (size_t)done * dim, dim, e);
            sched_req_put(live[done]);
            live[done++] = NULL;
        }
    }
    for (int i = done; i < next; i++) { /* after an error or a client that left */
        sched_cancel(live[i]);
        sched_req_put(live[i]);
    }
    free(live);
    return rc;
}

/* ---- the reply ------------------------------------------------------------------------------ */

/* Normalises v[0..n) to unit L2 length (in double); false when it is not finite or zero. */
static bool normalise(float *v, int n)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)v[i] * v[i];
    if (!isfinite(ss) || ss <= 0)
        return false;
    double k = 1.0 / sqrt(ss);
    for (int i = 0; i < n; i++)
        v[i] = (float)(v[i] * k);
    return true;
}

/* Appends v[0..n) as base64 of its little-endian float32 bytes, in quotes. */
static void put_base64(struct sb *b, const float *v, int n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t nb = (size_t)n * 4;
    unsigned char *bytes = malloc(nb ? nb : 1);
    if (!bytes) {
        b->err = EXSA_ENOMEM;
        return;
    }
    for (int i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        for (int k = 0; k < 4; k++)
            bytes[(size_t)i * 4 + k] = (unsigned char)(u >> (8 * k));
    }
    sb_putc(b, '"');
    for (size_t i = 0; i < nb; i += 3) {
        uint32_t w = (uint32_t)bytes[i] << 16 | (i + 1 < nb ? (uint32_t)bytes[i + 1] << 8 : 0) |
                     (i + 2 < nb ? bytes[i + 2] : 0);
        char q[4] = {tab[w >> 18], tab[(w >> 12) & 63], i + 1 < nb ? tab[(w >> 6) & 63] : '=',
                     i + 2 < nb ? tab[w & 63] : '='};
        sb_put(b, q, 4);
    }
    sb_putc(b, '"');
    free(bytes);
}

/* Appends v[0..n) as a JSON list of numbers (9 significant digits: each float32 reads back
 * exactly). */
static void put_floats(struct sb *b, const float *v, int n)
{
    char num[32];
    sb_putc(b, '[');
    for (int i = 0; i < n; i++)
        sb_put(b, num, (size_t)snprintf(num, sizeof num, "%s%.9g", i ? "," : "", v[i]));
    sb_putc(b, ']');
}

/* The reply: each vector truncated to out_dim, normalised, in OpenAI's list shape. */
static int embed_reply(struct srv_conn *c, const struct embed_job *ej, float *vecs, int dim,
                       int out_dim, const char *model_id)
{
    struct sb b = {0};
    sb_puts(&b, "{\"object\":\"list\",\"data\":[");
    for (int i = 0; i < ej->n; i++) {
        float *v = vecs + (size_t)i * dim;
        if (!normalise(v, out_dim)) {
            sb_free(&b);
            return srv_reply_error(c, 500, "server_error", NULL, NULL,
                                   "input %d gave a vector that is zero or not finite", i);
        }
        char head[96];
        sb_puts(&b, i ? "," : "");
        snprintf(head, sizeof head, "{\"object\":\"embedding\",\"index\":%d,\"embedding\":", i);
        sb_puts(&b, head);
        if (ej->base64)
            put_base64(&b, v, out_dim);
        else
            put_floats(&b, v, out_dim);
        sb_putc(&b, '}');
    }
    char *id = srv_json_quote(model_id, strlen(model_id)), usage[128];
    snprintf(usage, sizeof usage, ",\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld}}",
             ej->n_tokens, ej->n_tokens);
    sb_puts(&b, "],\"model\":");
    sb_puts(&b, id ? id : "\"\"");
    sb_puts(&b, usage);
    free(id);
    return srv_reply_take(c, "application/json", sb_take(&b));
}

int route_embeddings(struct srv_conn *c)
{
    struct embed_job ej;
    struct srv_err e = {0};
    unsigned gen = 0;
    enum sched_pool pool = SCHED_POOL_MEAN;
    char id[256] = "";
    int dim = 0, rc = embed_parse(c, &ej, &e);
    if (rc == 0)
        rc = embed_prepare(c, &ej, &gen, &pool, &dim, id, sizeof id, &e);
    float *vecs = rc == 0 ? malloc(sizeof(float) * (size_t)ej.n * dim) : NULL;
    if (rc == 0 && !vecs)
        rc = srv_err_set(&e, 503, NULL, NULL, "out of memory");
    if (rc == 0)
        rc = embed_run(c, &ej, gen, pool, dim, vecs, &e);
    int ret = MHD_NO; /* rc == -2: the client left; closing the connection is the answer */
    if (rc == 0) {
        metrics_tokens(c->srv->metrics, (int)ej.n_tokens, 0);
        ret = embed_reply(c, &ej, vecs, dim, ej.dims ? ej.dims : dim, id);
    } else if (rc == -1) {
        ret = srv_reply_err(c, &e);
    }
    free(vecs);
    embed_free(&ej);
    return ret;
}
