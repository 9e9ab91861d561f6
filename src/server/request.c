/*
 * request.c: the bodies of every route that takes one, parsed and checked with no socket and
 * no model: bytes in, a struct job or a 400 out (struct srv_err names the parameter and what
 * was wrong). Linear in the body: every list is walked once through ->next (cJSON_GetArrayItem
 * in a loop is quadratic), and every list a client controls has a cap (JOB_MAX_* in server.h)
 * past which the answer is a 400 naming the field and the cap. A job's strings point into its
 * parsed body, which it owns. Called by job.c and exsa_api.c, and by tests/fuzz_request.c.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "jsonschema.h"
#include "sampler.h"
#include "server.h"
#include "tokmask.h"

#define SAMPLING_KEYS                                                                              \
    "temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty",     \
        "repeat_penalty", "repetition_penalty", "repeat_last_n", "penalty_last_n", "logit_bias",   \
        "ignore_eos", "max_tokens"

static const char *const chat_keys[] = {"model",
                                        "messages",
                                        "stream",
                                        "stream_options",
                                        "max_completion_tokens",
                                        "stop",
                                        "n",
                                        "tools",
                                        "tool_choice",
                                        "parallel_tool_calls",
                                        "response_format",
                                        "logprobs",
                                        "top_logprobs",
                                        "user",
                                        "cache_prompt",
                                        SAMPLING_KEYS,
                                        NULL};
static const char *const completion_keys[] = {
    "model", "prompt",   "stream",          "stream_options", "stop",        "n",
    "user",  "logprobs", "response_format", "cache_prompt",   SAMPLING_KEYS, NULL};
static const char *const generate_keys[] = {
    "prompt", "sampling_params", "use_chat_template", "stream", "model", "cache_prompt", NULL};
static const char *const sampling_keys[] = {"stop_sequences", "stop", SAMPLING_KEYS, NULL};
static const char *const tokenize_keys[] = {"content",       "text",  "add_special",
                                            "parse_special", "model", NULL};
static const char *const detokenize_keys[] = {"tokens", "model", NULL};
static const char *const load_keys[] = {"model_path", "gpu_layers", "context_size", NULL};

int srv_err_set(struct srv_err *e, int status, const char *param, const char *code, const char *fmt,
                ...)
{
    va_list ap;
    e->status = status;
    e->param = param;
    e->code = code;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

static int bad_value(struct srv_err *e, const char *param, const char *fmt, const char *arg)
{
    return srv_err_set(e, 400, param, "invalid_value", fmt, arg);
}

static const cJSON *get(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* Items of list v, counted up to limit + 1 (one walk, stops early). */
static int count_upto(const cJSON *v, int limit)
{
    int n = 0;
    for (const cJSON *it = v ? v->child : NULL; it && n <= limit; it = it->next)
        n++;
    return n;
}

/* Notes the keys of o that are not in known (the route logs them). */
static void note_unknown(struct job *j, const cJSON *o, const char *const *known)
{
    for (const cJSON *it = o ? o->child : NULL; it; it = it->next) {
        const char *const *k = known;
        while (*k && strcmp(*k, it->string))
            k++;
        if (*k)
            continue;
        if (j->n_unknown < JOB_MAX_UNKNOWN)
            j->unknown[j->n_unknown] = it->string;
        j->n_unknown++;
    }
}

static void job_init(struct job *j, enum job_kind kind)
{
    static const char *const prefix[] = {"chatcmpl", "cmpl", "gen", "tok", "detok", "load"};
    static unsigned long counter;
    memset(j, 0, sizeof *j);
    j->kind = kind;
    j->created = (long)time(NULL);
    unsigned long n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
    snprintf(j->id, sizeof j->id, "%s-%lx%04lx", prefix[kind], (unsigned long)j->created, n);
    gen_params_default(&j->gp);
    j->gp.sp.seed = SAMPLER_SEED_RANDOM;
    j->load_gpu_layers = j->load_n_ctx = -1;
    j->use_chat_template = j->add_special = j->parse_special = true;
    j->n = 1;
    j->parallel_tool_calls = true;
    j->cache_prompt = true;
    if (kind == JOB_GENERATE) { /* EXSA-API.md's defaults for /v1/generate */
        j->gp.sp.temperature = 0.7f, j->gp.sp.top_k = 40, j->gp.sp.top_p = 0.9f;
        j->gp.sp.repeat_penalty = 1.1f, j->gp.max_tokens = 512;
        j->stream = true;
    }
}

/* Here, not in job.c: the body parser (and its fuzz target) stays apart from the engine. */
void job_mask_free(struct job_mask *m)
{
    if (!m)
        return;
    tm_mask_free(m->mask);
    js_free(m->g);
    free(m);
}

void job_free(struct job *j)
{
    for (int i = 0; j->stop && i < j->gp.n_stop; i++)
        free(j->stop[i]);
    for (int i = 0; i < j->n_owned; i++)
        free(j->owned[i]);
    free(j->stop);
    free(j->owned);
    free(j->msgs);
    free(j->tools);
    free(j->tool_choice);
    free(j->response_format);
    for (int i = 0; i < JOB_MAX_N; i++)
        job_mask_free(j->masks[i]);
    free(j->prompt);
    free(j->bias_id);
    free(j->bias);
    free(j->bounds);
    cJSON_Delete(j->body);
    memset(j, 0, sizeof *j);
}

/* ---- sampling ------------------------------------------------------------------------------- */

/* Reads number key of o into *out when present and not null. Returns 0 (absent), 1 (set) or
 * -1 with the 400 in e (wrong type or outside [lo, hi]). */
static int get_num(const cJSON *o, const char *key, double lo, double hi, bool integer, double *out,
                   struct srv_err *e)
{
    const cJSON *v = get(o, key);
    if (!v || cJSON_IsNull(v))
        return 0;
    /* floor(), not a cast to an integer type: a cast of a value past its range (a seed above
     * 2^63) is undefined and refused valid seeds */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi) ||
        (integer && v->valuedouble != floor(v->valuedouble)))
        return srv_err_set(e, 400, key, "invalid_value",
                           integer ? "'%s' must be %s in [%.0f, %.0f]"
                                   : "'%s' must be %s in [%g, %g]",
                           key, integer ? "an integer" : "a number", lo, hi);
    *out = v->valuedouble;
    return 1;
}

/* Reads stop strings (a string or a list of strings) of key into j. */
static int get_stop(struct job *j, const cJSON *o, const char *key, struct srv_err *e)
{
    const cJSON *v = get(o, key), *list = cJSON_IsArray(v) ? v : NULL, *it;
    if (!v || cJSON_IsNull(v))
        return 0;
    int n = cJSON_IsString(v) ? (v->valuestring[0] != 0) : count_upto(list, JOB_MAX_STOP);
    bool ok = cJSON_IsString(v) || (list && n <= JOB_MAX_STOP);
    cJSON_ArrayForEach (it, list) {
        ok = ok && cJSON_IsString(it) && it->valuestring[0];
    }
    if (!ok)
        return srv_err_set(e, 400, key, "invalid_value",
                           "'%s' must be a non-empty string or a list of at most %d of them", key,
                           JOB_MAX_STOP);
    if (!(j->stop = calloc(n > 0 ? n : 1, sizeof(char *))))
        return srv_err_set(e, 503, NULL, NULL, "out of memory");
    j->gp.n_stop = n; /* job_free frees what is set */
    j->gp.stop = (const char *const *)j->stop;
    int i = 0;
    if (cJSON_IsString(v) && n)
        ok = (j->stop[i++] = strdup(v->valuestring)) != NULL;
    cJSON_ArrayForEach (it, list) {
        ok = ok && (j->stop[i++] = strdup(it->valuestring)) != NULL;
    }
    return ok ? 1 : srv_err_set(e, 503, NULL, NULL, "out of memory");
}

/* Reads OpenAI's logit_bias object {"token id": bias} into j (ids checked by job_check). */
static int get_bias(struct job *j, const cJSON *o, struct srv_err *e)
{
    const cJSON *v = get(o, "logit_bias");
    if (!v || cJSON_IsNull(v))
        return 0;
    int n = cJSON_IsObject(v) ? count_upto(v, JOB_MAX_LOGIT_BIAS) : 0;
    if (n > JOB_MAX_LOGIT_BIAS)
        return srv_err_set(e, 400, "logit_bias", "too_many_entries",
                           "'logit_bias' has more than %d entries", JOB_MAX_LOGIT_BIAS);
    j->bias_id = malloc(sizeof(int32_t) * (n ? n : 1));
    j->bias = malloc(sizeof(float) * (n ? n : 1));
    bool ok = cJSON_IsObject(v) && j->bias_id && j->bias;
    int i = 0;
    for (const cJSON *it = ok ? v->child : NULL; ok && it; it = it->next, i++) {
        char *end;
        errno = 0;
        long id = strtol(it->string, &end, 10);
        ok = !errno && end != it->string && !*end && id >= 0 && id <= INT32_MAX &&
             cJSON_IsNumber(it) && it->valuedouble >= -100 && it->valuedouble <= 100;
        if (ok)
            j->bias_id[i] = (int32_t)id, j->bias[i] = (float)it->valuedouble;
    }
    if (!ok)
        return bad_value(e, "logit_bias", "%s",
                         "'logit_bias' must map token ids (as strings) "
                         "to numbers in [-100, 100]");
    j->gp.sp.n_logit_bias = n;
    j->gp.sp.logit_bias_id = j->bias_id;
    j->gp.sp.logit_bias = j->bias;
    return 1;
}

/* Sampling parameters of o (an OpenAI body, or Exsa's sampling_params when exsa is true) into
 * j->gp, over the defaults already there. */
static int parse_sampling(struct job *j, const cJSON *o, bool exsa, struct srv_err *e)
{
    struct exsa_sampling_params *sp = &j->gp.sp;
    double v;
    int rc;
#define NUM(key, lo, hi, integer, dst)                                                             \
    if ((rc = get_num(o, key, lo, hi, integer, &v, e)) < 0)                                        \
        return -1;                                                                                 \
    else if (rc)                                                                                   \
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
    if ((rc = get_num(o, "seed", -9223372036854775808.0, 18446744073709551616.0, true, &v, e)) < 0)
        return -1;
    else if (rc)
        sp->seed = v < 0                         ? (uint64_t)(int64_t)v
                   : v >= 18446744073709551616.0 ? UINT64_MAX
                                                 : (uint64_t)v;
#undef NUM
    /* several choices on the OpenAI routes (forked sequences); /v1/generate has one */
    if ((rc = get_num(o, "n", 1, exsa ? 1 : JOB_MAX_N, true, &v, e)) < 0)
        return -1;
    else if (rc)
        j->n = (int)v;
    if (get_stop(j, o, exsa ? "stop_sequences" : "stop", e) < 0 ||
        (exsa && !j->stop && get_stop(j, o, "stop", e) < 0) || get_bias(j, o, e) < 0)
        return -1;
    const cJSON *ie = get(o, "ignore_eos");
    if (ie && !cJSON_IsBool(ie))
        return bad_value(e, "ignore_eos", "%s", "'ignore_eos' must be true or false");
    j->gp.ignore_eog = cJSON_IsTrue(ie);
    return 0;
}

/* ---- the pieces of the bodies ---------------------------------------------------------------- */

/* Reads the boolean key of o into *out when present; true or false, else a 400. */
static int get_bool(const cJSON *o, const char *key, bool *out, struct srv_err *e)
{
    const cJSON *v = get(o, key);
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsBool(v))
        return srv_err_set(e, 400, key, "invalid_value", "'%s' must be true or false", key);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* Reads the optional "model" (a string or null). */
static int parse_model(struct job *j, struct srv_err *e)
{
    const cJSON *mv = get(j->body, "model");
    if (mv && !cJSON_IsNull(mv) && !cJSON_IsString(mv))
        return bad_value(e, "model", "%s", "'model' must be a string");
    j->model = cJSON_IsString(mv) && mv->valuestring[0] ? mv->valuestring : NULL;
    return 0;
}

/* Reads "stream" and "stream_options". */
static int parse_stream(struct job *j, struct srv_err *e)
{
    const cJSON *so = get(j->body, "stream_options");
    if (get_bool(j->body, "stream", &j->stream, e) < 0)
        return -1;
    if (so && !cJSON_IsNull(so) && !cJSON_IsObject(so))
        return bad_value(e, "stream_options", "%s", "'stream_options' must be an object");
    return get_bool(so, "include_usage", &j->include_usage, e);
}

/* Reads a list of token ids (integers in [0, 2^31)) into j->prompt; false when v is not one. */
static bool get_ids(struct job *j, const cJSON *v)
{
    int n = cJSON_IsArray(v) ? count_upto(v, JOB_MAX_IDS) : 0;
    if (n <= 0 || n > JOB_MAX_IDS || !(j->prompt = malloc(sizeof(int32_t) * n)))
        return false;
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach (it, v) {
        if (!cJSON_IsNumber(it) || !(it->valuedouble >= 0 && it->valuedouble <= INT32_MAX) ||
            it->valuedouble != floor(it->valuedouble))
            return false;
        j->prompt[i++] = (int32_t)it->valuedouble;
    }
    j->n_prompt = n;
    j->ids_given = true;
    return true;
}

/* The completions prompt: a string, a list of one string, or token ids (a list of ints, or a
 * list of one such list). */
static int parse_prompt(struct job *j, struct srv_err *e)
{
    const cJSON *p = get(j->body, "prompt");
    if (cJSON_IsArray(p) && p->child && !p->child->next &&
        (cJSON_IsString(p->child) || cJSON_IsArray(p->child)))
        p = p->child;
    if (cJSON_IsString(p)) {
        j->text = p->valuestring;
        return 0;
    }
    if (get_ids(j, p))
        return 0;
    return srv_err_set(e, 400, "prompt", "invalid_value",
                       "'prompt' must be a string, or a non-empty list of at most %d token ids "
                       "(one prompt: n = 1)",
                       JOB_MAX_IDS);
}

/* ---- chat messages -------------------------------------------------------------------------- */

/* Takes s as one of j's owned strings. */
static char *own(struct job *j, char *s)
{
    if (s)
        j->owned[j->n_owned++] = s;
    return s;
}

/* The text of message i's content: a string, a list of text parts (joined by newlines), or
 * null (""). NULL with the 400 in e when bad. */
static const char *content_text(struct job *j, const cJSON *v, int i, struct srv_err *e)
{
    if (!v || cJSON_IsNull(v))
        return "";
    if (cJSON_IsString(v))
        return v->valuestring;
    if (!cJSON_IsArray(v))
        return NULL;
    if (count_upto(v, JOB_MAX_PARTS) > JOB_MAX_PARTS)
        return srv_err_set(e, 400, "messages", "too_many_parts",
                           "messages[%d].content has more "
                           "than %d parts",
                           i, JOB_MAX_PARTS),
               NULL;
    size_t len = 0;
    const cJSON *p;
    cJSON_ArrayForEach (p, v) {
        const cJSON *t = get(p, "text"), *ty = get(p, "type");
        if (!cJSON_IsString(t) || (ty && (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text"))))
            return NULL;
        len += strlen(t->valuestring) + 1;
    }
    char *s = own(j, malloc(len + 1)), *w = s;
    if (!s)
        return srv_err_set(e, 503, NULL, NULL, "out of memory"), NULL;
    cJSON_ArrayForEach (p, v) {
        const char *t = get(p, "text")->valuestring;
        size_t k = strlen(t);
        if (w != s) /* a newline between parts, after the first that has text */
            *w++ = '\n';
        memcpy(w, t, k);
        w += k;
    }
    *w = 0;
    return s;
}

/* Reads message msg (index i) into j->msgs[i]. */
static int parse_message(struct job *j, const cJSON *msg, int i, struct srv_err *e)
{
    static const char *const roles[] = {"system", "user", "assistant", "tool", "developer"};
    const cJSON *role = get(msg, "role");
    int r = 0;
    while (r < 5 && !(cJSON_IsString(role) && !strcmp(role->valuestring, roles[r])))
        r++;
    if (r == 5)
        return srv_err_set(e, 400, "messages", "invalid_value",
                           "messages[%d].role must be "
                           "system, developer, user, assistant or tool",
                           i);
    const char *text = content_text(j, get(msg, "content"), i, e);
    if (!text && !e->status)
        srv_err_set(e, 400, "messages", "invalid_value",
                    "messages[%d].content must be a string "
                    "or a list of text parts ({\"type\": \"text\", \"text\": ...})",
                    i);
    if (!text)
        return -1;
    j->msgs[i].role = roles[r == 4 ? 0 : r];
    j->msgs[i].content = text;
    const cJSON *tc = get(msg, "tool_calls"), *rc = get(msg, "reasoning_content");
    if (cJSON_IsArray(tc))
        j->msgs[i].tool_calls = own(j, cJSON_PrintUnformatted(tc));
    /* an assistant's earlier thinking, as a thinking model's reply gave it: back to the
     * template's thinking field */
    if (rc && !cJSON_IsNull(rc) && !cJSON_IsString(rc))
        return srv_err_set(e, 400, "messages", "invalid_value",
                           "messages[%d].reasoning_content must be a string", i);
    if (cJSON_IsString(rc) && r == 2)
        j->msgs[i].thinking = rc->valuestring;
    return 0;
}

/* Whether each of tools is a function tool with a name: {"type": "function", "function":
 * {"name": ...}} (or the bare function object). */
static int check_tools(const cJSON *tools, struct srv_err *e)
{
    int i = 0;
    for (const cJSON *t = tools->child; t; t = t->next, i++) {
        const cJSON *ty = get(t, "type"), *fn = get(t, "function");
        const cJSON *name = get(cJSON_IsObject(fn) ? fn : t, "name");
        if (!cJSON_IsObject(t) ||
            (ty && !(cJSON_IsString(ty) && !strcmp(ty->valuestring, "function"))) ||
            !cJSON_IsString(name) || !name->valuestring[0])
            return srv_err_set(e, 400, "tools", "invalid_value",
                               "tools[%d] must be {\"type\": \"function\", \"function\": "
                               "{\"name\": ..., \"parameters\": {...}}}",
                               i);
    }
    return 0;
}

/* Reads "tool_choice" and "parallel_tool_calls". A forced choice is compiled once here (with
 * stand-in token ids) so that a bad one (an unknown function, parameters using an unsupported
 * schema keyword) is a 400 before the model is touched; job.c compiles it again for the model. */
static int parse_tool_choice(struct job *j, struct srv_err *e)
{
    const cJSON *tc = get(j->body, "tool_choice");
    if (get_bool(j->body, "parallel_tool_calls", &j->parallel_tool_calls, e) < 0)
        return -1;
    if (!tc || cJSON_IsNull(tc)) {
        j->tool_mode = JOB_TOOLS_AUTO;
        return 0;
    }
    if (!(j->tool_choice = cJSON_PrintUnformatted(tc)))
        return srv_err_set(e, 503, NULL, NULL, "out of memory");
    if (cJSON_IsString(tc) && !strcmp(tc->valuestring, "none"))
        j->tool_mode = JOB_TOOLS_NONE;
    else if (cJSON_IsString(tc) && !strcmp(tc->valuestring, "auto"))
        j->tool_mode = JOB_TOOLS_AUTO;
    else
        j->tool_mode = cJSON_IsString(tc) ? JOB_TOOLS_REQUIRED : JOB_TOOLS_NAMED;
    if (j->tool_mode == JOB_TOOLS_NAMED && cJSON_IsObject(tc)) {
        const cJSON *ty = get(tc, "type");
        if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "function"))
            return bad_value(e, "tool_choice", "%s",
                             "tool_choice: an object must be {\"type\": \"function\", "
                             "\"function\": {\"name\": ...}}");
    }
    char err[400];
    struct grammar *g = NULL;
    int rc = js_tool_choice(j->tools, j->tool_choice, 0, 1, 1, &g, err, sizeof err);
    js_free(g);
    if (rc == EXSA_ENOMEM)
        return srv_err_set(e, 503, NULL, NULL, "out of memory");
    return rc ? bad_value(e, "tool_choice", "%s", err) : 0;
}

/* Reads "response_format" (chat and completions): none or {"type": "text"} leaves the reply
 * free; json_object and json_schema are compiled once here to check them (400 naming an
 * unknown type or an unsupported keyword), and again per choice by job.c. */
static int parse_response_format(struct job *j, struct srv_err *e)
{
    const cJSON *rf = get(j->body, "response_format");
    if (!rf || cJSON_IsNull(rf))
        return 0;
    if (!cJSON_IsObject(rf))
        return bad_value(e, "response_format", "%s",
                         "'response_format' must be an object: {\"type\": \"text\"}, "
                         "{\"type\": \"json_object\"} or {\"type\": \"json_schema\", "
                         "\"json_schema\": {\"name\": ..., \"schema\": {...}}}");
    if (!(j->response_format = cJSON_PrintUnformatted(rf)))
        return srv_err_set(e, 503, NULL, NULL, "out of memory");
    char err[400];
    struct grammar *g = NULL;
    int rc = js_response_format(j->response_format, &g, err, sizeof err);
    if (rc == EXSA_ENOMEM)
        return srv_err_set(e, 503, NULL, NULL, "out of memory");
    if (rc)
        return bad_value(e, "response_format", "%s", err);
    if (!g) { /* "text": no constraint */
        free(j->response_format);
        j->response_format = NULL;
    }
    js_free(g);
    return 0;
}

/* Reads logprobs: chat's "logprobs" (true/false) and "top_logprobs" (0..20, with logprobs
 * true), or the completions' legacy "logprobs" (the number of alternatives, 0..20). */
static int parse_logprobs(struct job *j, struct srv_err *e)
{
    const cJSON *lp = get(j->body, "logprobs");
    double v;
    int rc;
    if (j->kind == JOB_COMPLETION) {
        if ((rc = get_num(j->body, "logprobs", 0, SAMPLER_MAX_TOP_LOGPROBS, true, &v, e)) < 0)
            return -1;
        j->gp.logprobs = rc > 0;
        j->gp.top_logprobs = rc > 0 ? (int)v : 0;
        return 0;
    }
    if (get_bool(j->body, "logprobs", &j->gp.logprobs, e) < 0)
        return -1;
    if ((rc = get_num(j->body, "top_logprobs", 0, SAMPLER_MAX_TOP_LOGPROBS, true, &v, e)) < 0)
        return -1;
    if (rc && !cJSON_IsTrue(lp))
        return bad_value(e, "top_logprobs", "%s", "'top_logprobs' needs 'logprobs': true");
    j->gp.top_logprobs = rc ? (int)v : 0;
    return 0;
}

/* Reads "messages" and "tools". */
static int parse_chat(struct job *j, struct srv_err *e)
{
    const cJSON *arr = get(j->body, "messages"), *msg, *tv = get(j->body, "tools");
    int n = cJSON_IsArray(arr) ? count_upto(arr, JOB_MAX_MESSAGES) : 0;
    if (n == 0)
        return bad_value(e, "messages", "%s", "'messages' must be a non-empty list");
    if (n > JOB_MAX_MESSAGES)
        return srv_err_set(e, 400, "messages", "too_many_messages",
                           "'messages' has more than %d entries", JOB_MAX_MESSAGES);
    j->msgs = calloc(n, sizeof *j->msgs);
    j->owned = calloc(2 * n, sizeof(char *)); /* joined parts and tool calls: two a message */
    if (!j->msgs || !j->owned)
        return srv_err_set(e, 503, NULL, NULL, "out of memory");
    int i = 0;
    cJSON_ArrayForEach (msg, arr) {
        if (parse_message(j, msg, i++, e) < 0)
            return -1;
    }
    j->n_msgs = n;
    int nt = cJSON_IsArray(tv) ? count_upto(tv, JOB_MAX_TOOLS) : 0;
    if (tv && !cJSON_IsNull(tv) && !cJSON_IsArray(tv))
        return bad_value(e, "tools", "%s", "'tools' must be a list of tool definitions");
    if (nt > JOB_MAX_TOOLS)
        return srv_err_set(e, 400, "tools", "too_many_tools", "'tools' has more than %d entries",
                           JOB_MAX_TOOLS);
    if (nt > 0 && check_tools(tv, e) < 0)
        return -1;
    if (nt > 0 && !(j->tools = cJSON_PrintUnformatted(tv)))
        return srv_err_set(e, 503, NULL, NULL, "out of memory");
    if (parse_tool_choice(j, e) < 0 || parse_response_format(j, e) < 0)
        return -1;
    if (j->response_format &&
        (j->tool_mode == JOB_TOOLS_REQUIRED || j->tool_mode == JOB_TOOLS_NAMED))
        return bad_value(e, "response_format", "%s",
                         "'response_format' cannot be combined with tool_choice \"required\" "
                         "or a named function: both would shape the same reply");
    return parse_logprobs(j, e);
}

/* ---- the bodies of the other routes ---------------------------------------------------------- */

static int parse_generate(struct job *j, struct srv_err *e)
{
    const cJSON *prompt = get(j->body, "prompt"), *sp = get(j->body, "sampling_params");
    if (!cJSON_IsString(prompt))
        return bad_value(e, "prompt", "%s", "'prompt' must be a string");
    j->text = prompt->valuestring;
    if (sp && !cJSON_IsObject(sp) && !cJSON_IsNull(sp))
        return bad_value(e, "sampling_params", "%s", "'sampling_params' must be an object");
    if (get_bool(j->body, "use_chat_template", &j->use_chat_template, e) < 0 ||
        get_bool(j->body, "stream", &j->stream, e) < 0)
        return -1;
    if (!cJSON_IsObject(sp))
        return 0;
    note_unknown(j, sp, sampling_keys);
    return parse_sampling(j, sp, true, e);
}

static int parse_tokenize(struct job *j, struct srv_err *e)
{
    const cJSON *t = get(j->body, "content");
    if (!t)
        t = get(j->body, "text");
    if (!cJSON_IsString(t))
        return bad_value(e, "content", "%s", "'content' must be a string");
    j->text = t->valuestring;
    if (get_bool(j->body, "add_special", &j->add_special, e) < 0)
        return -1;
    return get_bool(j->body, "parse_special", &j->parse_special, e);
}

static int parse_detokenize(struct job *j, struct srv_err *e)
{
    const cJSON *t = get(j->body, "tokens");
    if (cJSON_IsArray(t) && !t->child)
        return 0; /* nothing to decode */
    if (!get_ids(j, t))
        return srv_err_set(e, 400, "tokens", "invalid_value",
                           "'tokens' must be a list of at "
                           "most %d token ids",
                           JOB_MAX_IDS);
    return 0;
}

/* Whether v is absent, null, or an integer in [lo, hi] (then *out gets it). */
static bool int_or_absent(const cJSON *v, double lo, double hi, int *out)
{
    if (!v || cJSON_IsNull(v))
        return true;
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi) ||
        v->valuedouble != floor(v->valuedouble))
        return false;
    *out = (int)v->valuedouble;
    return true;
}

static int parse_load(struct job *j, struct srv_err *e)
{
    const cJSON *p = get(j->body, "model_path");
    /* the same ranges as GPU_LAYERS and CONTEXT_SIZE; integers only (1.5 or 1e300 must not be
     * cut to an int) */
    if (!cJSON_IsString(p) || !p->valuestring[0] ||
        !int_or_absent(get(j->body, "gpu_layers"), 0, 100000, &j->load_gpu_layers) ||
        !int_or_absent(get(j->body, "context_size"), 1, 1 << 24, &j->load_n_ctx))
        return bad_value(e, "model_path", "%s",
                         "expected {\"model_path\": \"x.gguf\", "
                         "\"gpu_layers\"?: integer in [0, 100000], \"context_size\"?: integer "
                         "in [1, 16777216]}");
    j->load_path = p->valuestring;
    return 0;
}

int job_parse(enum job_kind kind, const char *body, size_t len, struct job *j, struct srv_err *e)
{
    static const char *const *const keys[] = {chat_keys,     completion_keys, generate_keys,
                                              tokenize_keys, detokenize_keys, load_keys};
    job_init(j, kind);
    memset(e, 0, sizeof *e);
    j->body = body ? cJSON_ParseWithLength(body, len) : NULL;
    if (!cJSON_IsObject(j->body))
        return srv_err_set(e, 400, NULL, "invalid_json", "the request body must be a JSON object");
    note_unknown(j, j->body, keys[kind]);
    if (kind != JOB_LOAD && parse_model(j, e) < 0)
        return -1;
    /* the prompt cache opt-out (llama-server's name); a bool, else a 400 */
    if ((kind == JOB_CHAT || kind == JOB_COMPLETION || kind == JOB_GENERATE) &&
        get_bool(j->body, "cache_prompt", &j->cache_prompt, e) < 0)
        return -1;
    switch (kind) {
    case JOB_CHAT:
        return parse_stream(j, e) < 0 || parse_sampling(j, j->body, false, e) < 0
                   ? -1
                   : parse_chat(j, e);
    case JOB_COMPLETION:
        return parse_stream(j, e) < 0 || parse_sampling(j, j->body, false, e) < 0 ||
                       parse_response_format(j, e) < 0 || parse_logprobs(j, e) < 0
                   ? -1
                   : parse_prompt(j, e);
    case JOB_GENERATE: return parse_generate(j, e);
    case JOB_TOKENIZE: return parse_tokenize(j, e);
    case JOB_DETOKENIZE: return parse_detokenize(j, e);
    case JOB_LOAD: return parse_load(j, e);
    }
    return -1;
}

int job_check(const struct job *j, int n_ctx, int n_vocab, struct srv_err *e)
{
    const char *param = j->kind == JOB_CHAT ? "messages" : "prompt";
    if (j->n_prompt <= 0)
        return srv_err_set(e, 400, param, "invalid_value", "the prompt is empty");
    if (j->n_prompt >= n_ctx)
        return srv_err_set(e, 400, param, "context_length_exceeded",
                           "the prompt has %d tokens but the context holds %d (CONTEXT_SIZE), "
                           "and at least one more is needed to reply",
                           j->n_prompt, n_ctx);
    for (int i = 0; j->ids_given && i < j->n_prompt; i++)
        if (j->prompt[i] >= n_vocab)
            return srv_err_set(e, 400, "prompt", "invalid_value",
                               "'prompt' names token %d but "
                               "the vocabulary has %d tokens",
                               (int)j->prompt[i], n_vocab);
    for (int i = 0; i < j->gp.sp.n_logit_bias; i++)
        if (j->bias_id[i] >= n_vocab)
            return srv_err_set(e, 400, "logit_bias", "invalid_value",
                               "logit_bias names token "
                               "%d but the vocabulary has %d tokens",
                               (int)j->bias_id[i], n_vocab);
    return 0;
}
