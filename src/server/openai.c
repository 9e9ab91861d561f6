/*
 * openai.c: the OpenAI routes: GET /v1/models, POST /v1/chat/completions, POST /v1/completions.
 * Each parses and checks its body (400 naming the parameter), borrows the model from the
 * scheduler just long enough to tokenize (chat template for chat; plain text or token ids for
 * completions), and hands a struct job to job_run(). Unknown parameters are logged, not fatal.
 */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat.h"
#include "model.h"
#include "server.h"

static const char *const chat_keys[] = {
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "top_k", "min_p", "seed", "stop", "presence_penalty",
    "frequency_penalty", "repeat_penalty", "repetition_penalty", "repeat_last_n",
    "penalty_last_n", "n", "logit_bias", "ignore_eos", "tools", "user", NULL};
static const char *const completion_keys[] = {
    "model", "prompt", "stream", "stream_options", "max_tokens", "temperature", "top_p",
    "top_k", "min_p", "seed", "stop", "presence_penalty", "frequency_penalty", "repeat_penalty",
    "repetition_penalty", "repeat_last_n", "penalty_last_n", "n", "logit_bias", "ignore_eos",
    "user", NULL};

void srv_model_id(const char *path, char *out, size_t size)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf"))
        n -= 5;
    snprintf(out, size, "%.*s", (int)n, base);
}

cJSON *job_body(struct srv_conn *c)
{
    cJSON *b = c->body ? cJSON_ParseWithLength(c->body, c->body_len) : NULL;
    if (!b || !cJSON_IsObject(b)) {
        cJSON_Delete(b);
        srv_reply_error(c, 400, "invalid_request_error", NULL, "invalid_json",
                        "the request body must be a JSON object");
        return NULL;
    }
    return b;
}

/* Borrows the model and checks the body's "model" names it; fills j->model_id. Returns the
 * model (release it with sched_model_release) or NULL after replying 503 / 404. */
struct exsa_model *job_model(struct srv_conn *c, struct job *j, const cJSON *b, unsigned *gen,
                             int *n_ctx)
{
    struct exsa_model *m = sched_model_acquire(c->srv->sched, gen, n_ctx);
    if (!m) {
        c->retry_after = 1;
        srv_reply_error(c, 503, "server_error", NULL, "model_not_loaded",
                        "no model is loaded; POST /v1/models/load first");
        return NULL;
    }
    srv_model_id(m->path, j->model_id, sizeof j->model_id);
    const cJSON *mv = cJSON_GetObjectItemCaseSensitive(b, "model");
    if (mv && cJSON_IsString(mv) && mv->valuestring[0]) {
        const char *want = mv->valuestring, *base = strrchr(m->path, '/');
        base = base ? base + 1 : m->path;
        if (strcmp(want, j->model_id) && strcmp(want, base) && strcmp(want, m->path)) {
            sched_model_release(c->srv->sched);
            srv_reply_error(c, 404, "invalid_request_error", "model", "model_not_found",
                            "the model '%s' is not loaded; this server serves '%s'", want,
                            j->model_id);
            return NULL;
        }
    } else if (mv && !cJSON_IsNull(mv) && !cJSON_IsString(mv)) {
        sched_model_release(c->srv->sched);
        srv_reply_error(c, 400, "invalid_request_error", "model", "invalid_value",
                        "'model' must be a string");
        return NULL;
    }
    return m;
}

/* Reads "stream" and "stream_options". Returns 0 or -1 after replying 400. */
static int parse_stream(struct srv_conn *c, struct job *j, const cJSON *b)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(b, "stream");
    if (s && !cJSON_IsBool(s) && !cJSON_IsNull(s))
        return srv_reply_error(c, 400, "invalid_request_error", "stream", "invalid_value",
                               "'stream' must be true or false"), -1;
    j->stream = cJSON_IsTrue(s);
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(b, "stream_options");
    if (so && cJSON_IsObject(so))
        j->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    return 0;
}

struct msgs {
    struct exsa_chat_msg *m;
    char **owned; /* strings made here (joined text parts, tool calls) */
    int n, n_owned;
};

static void msgs_free(struct msgs *ms)
{
    for (int i = 0; i < ms->n_owned; i++)
        free(ms->owned[i]);
    free(ms->owned);
    free(ms->m);
}

/* The text of a message's content: a string, a list of text parts, or null. NULL when bad. */
static const char *content_text(struct msgs *ms, const cJSON *v)
{
    if (!v || cJSON_IsNull(v))
        return "";
    if (cJSON_IsString(v))
        return v->valuestring;
    if (!cJSON_IsArray(v))
        return NULL;
    size_t len = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, v) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "text");
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type");
        if (!cJSON_IsString(t) || (ty && (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text"))))
            return NULL;
        len += strlen(t->valuestring) + 1;
    }
    char *s = calloc(1, len + 1);
    if (!s)
        return NULL;
    ms->owned[ms->n_owned++] = s;
    cJSON_ArrayForEach(p, v) {
        if (s[0])
            strcat(s, "\n");
        strcat(s, cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring);
    }
    return s;
}

/* Reads "messages" into ms. Returns 0 or -1 after replying 400. */
static int parse_messages(struct srv_conn *c, const cJSON *b, struct msgs *ms)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(b, "messages");
    int n = cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : 0;
    if (n <= 0)
        return srv_reply_error(c, 400, "invalid_request_error", "messages", "invalid_value",
                               "'messages' must be a non-empty list"), -1;
    ms->m = calloc(n, sizeof *ms->m);
    ms->owned = calloc(2 * n, sizeof(char *));
    if (!ms->m || !ms->owned)
        return srv_reply_error(c, 503, "server_error", NULL, NULL, "out of memory"), -1;
    for (int i = 0; i < n; i++) {
        const cJSON *msg = cJSON_GetArrayItem(arr, i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
        const char *r = cJSON_IsString(role) ? role->valuestring : "";
        if (!strcmp(r, "developer"))
            r = "system";
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") &&
            strcmp(r, "tool"))
            return srv_reply_error(c, 400, "invalid_request_error", "messages", "invalid_value",
                                   "messages[%d].role must be system, developer, user, "
                                   "assistant or tool", i), -1;
        const char *text = content_text(ms, cJSON_GetObjectItemCaseSensitive(msg, "content"));
        if (!text)
            return srv_reply_error(c, 400, "invalid_request_error", "messages", "invalid_value",
                                   "messages[%d].content must be a string or a list of text "
                                   "parts ({\"type\": \"text\", \"text\": ...})", i), -1;
        ms->m[i].role = r;
        ms->m[i].content = text;
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
        if (cJSON_IsArray(tc) && (ms->m[i].tool_calls = cJSON_PrintUnformatted(tc)))
            ms->owned[ms->n_owned++] = (char *)ms->m[i].tool_calls;
    }
    ms->n = n;
    return 0;
}

int route_chat(struct srv_conn *c)
{
    cJSON *b = job_body(c);
    if (!b)
        return MHD_YES;
    job_log_unknown(c, b, chat_keys);
    struct job j;
    job_init(&j, JOB_CHAT, "chatcmpl");
    struct msgs ms = {0};
    char *tools = NULL;
    int ret = MHD_YES;
    if (parse_stream(c, &j, b) < 0 || job_parse_sampling(c, &j, b, false) < 0 ||
        parse_messages(c, b, &ms) < 0)
        goto done;
    const cJSON *tv = cJSON_GetObjectItemCaseSensitive(b, "tools");
    if (cJSON_IsArray(tv) && cJSON_GetArraySize(tv) > 0)
        tools = cJSON_PrintUnformatted(tv);
    unsigned gen;
    int n_ctx;
    struct exsa_model *m = job_model(c, &j, b, &gen, &n_ctx);
    if (!m)
        goto done;
    int rc = chat_tokenize(m->tmpl, m->tok, ms.m, ms.n, tools, true, &j.prompt, &j.n_prompt);
    int n_vocab = exsa_model_info(m)->vocab_size;
    sched_model_release(c->srv->sched);
    if (rc < 0) {
        srv_reply_error(c, 400, "invalid_request_error", "messages", "invalid_value",
                        "cannot render the conversation with the model's chat template: %s",
                        exsa_strerror(rc));
        goto done;
    }
    if (job_check(c, &j, n_ctx, n_vocab) == 0)
        ret = job_run(c, &j, gen);
done:
    free(tools);
    msgs_free(&ms);
    job_free(&j);
    cJSON_Delete(b);
    return ret;
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

/* Reads the completions prompt: a string, a list of one string, or token ids (a list of ints,
 * or a list of one such list). Returns 0 or -1 after replying 400. */
static int completion_prompt(struct srv_conn *c, struct job *j, const cJSON *p,
                             struct exsa_model *m, int n_vocab)
{
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 &&
        (cJSON_IsString(p->child) || cJSON_IsArray(p->child)))
        p = p->child;
    if (cJSON_IsString(p)) {
        int rc = job_tokenize(m, p->valuestring, true, true, &j->prompt, &j->n_prompt);
        if (rc < 0)
            return srv_reply_error(c, 400, "invalid_request_error", "prompt", "invalid_value",
                                   "cannot tokenize the prompt: %s", exsa_strerror(rc)), -1;
        return 0;
    }
    int n = cJSON_IsArray(p) ? cJSON_GetArraySize(p) : -1;
    if (n > 0 && (j->prompt = malloc(sizeof(int32_t) * n))) {
        const cJSON *it;
        int i = 0;
        cJSON_ArrayForEach(it, p) {
            if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble >= n_vocab ||
                it->valuedouble != (int)it->valuedouble)
                break;
            j->prompt[i++] = (int32_t)it->valuedouble;
        }
        if (i == n) {
            j->n_prompt = n;
            return 0;
        }
    }
    srv_reply_error(c, 400, "invalid_request_error", "prompt", "invalid_value",
                    "'prompt' must be a string, or a list of token ids below %d (one prompt: n "
                    "= 1)", n_vocab);
    return -1;
}

int route_completions(struct srv_conn *c)
{
    cJSON *b = job_body(c);
    if (!b)
        return MHD_YES;
    job_log_unknown(c, b, completion_keys);
    struct job j;
    job_init(&j, JOB_COMPLETION, "cmpl");
    int ret = MHD_YES;
    if (parse_stream(c, &j, b) < 0 || job_parse_sampling(c, &j, b, false) < 0)
        goto done;
    unsigned gen;
    int n_ctx;
    struct exsa_model *m = job_model(c, &j, b, &gen, &n_ctx);
    if (!m)
        goto done;
    int n_vocab = exsa_model_info(m)->vocab_size;
    int rc = completion_prompt(c, &j, cJSON_GetObjectItemCaseSensitive(b, "prompt"), m, n_vocab);
    sched_model_release(c->srv->sched);
    if (rc == 0 && job_check(c, &j, n_ctx, n_vocab) == 0)
        ret = job_run(c, &j, gen);
done:
    job_free(&j);
    cJSON_Delete(b);
    return ret;
}

int route_models(struct srv_conn *c)
{
    struct sched_stats st;
    sched_get_stats(c->srv->sched, &st);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    if (st.loaded) {
        char id[256];
        srv_model_id(st.model_path, id, sizeof id);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "id", id);
        cJSON_AddStringToObject(e, "object", "model");
        cJSON_AddNumberToObject(e, "created", (double)(long)c->srv->t_start_wall);
        cJSON_AddStringToObject(e, "owned_by", "exsa");
        cJSON_AddNumberToObject(e, "context_length", st.n_ctx);
        cJSON_AddItemToArray(data, e);
    }
    return srv_reply_json(c, 200, o);
}
