/*
 * test_server_tools.c: the OpenAI fields of issue 10 that shape a reply, end to end through
 * `exsa serve` on the random-weight tiny fixture: a named tool_choice and a json_schema
 * response_format at temperature 1 over 20 seeds each always give a call / a content that
 * parses and validates (tests/schema-check.h is the oracle, independent of the grammar code);
 * tool_choice required streamed and not give the same calls; none keeps the tools out of the
 * prompt; a history's tool_calls and reasoning_content reach the template; logprobs at
 * temperature 0 put the chosen token first, on chat and completions, streamed and not; n = 3
 * gives three choices (the same text at temperature 0, forked from one prefill: the metrics
 * count the forks); the errors name their field. The reply module (reply.c) is also driven
 * directly with chunks as the scheduler sends them: reasoning, content and tool calls split
 * one byte at a time give the same reply streamed and whole, and every token's logprob is sent
 * once.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>

#include "server-util.h"

#include "scheduler.h"
#include "schema-check.h"
#include "server/server.h"

#pragma GCC diagnostic ignored "-Wformat-truncation"

static char g_argv0[PATH_MAX];
static struct srv A; /* the tiny model */
static bool g_ready;

static const char params[] =
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":10},"
    "\"days\":{\"type\":\"integer\"},\"unit\":{\"enum\":[\"c\",\"f\"]},\"alerts\":{\"type\":"
    "\"boolean\"}},\"required\":[\"city\",\"unit\"],\"additionalProperties\":false}";
static const char params2[] =
    "{\"type\":\"object\",\"properties\":{\"zone\":{\"type\":\"string\",\"maxLength\":6}},"
    "\"required\":[\"zone\"],\"additionalProperties\":false}";
static const char schema[] =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":12},"
    "\"age\":{\"type\":\"integer\"},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\","
    "\"maxLength\":6},\"maxItems\":3},\"kind\":{\"enum\":[\"cat\",\"dog\",null]},\"nested\":"
    "{\"anyOf\":[{\"type\":\"null\"},{\"type\":\"object\",\"properties\":{\"x\":{\"type\":"
    "\"number\"}},\"required\":[\"x\"],\"additionalProperties\":false}]}},\"required\":[\"name\","
    "\"age\",\"kind\",\"nested\"],\"additionalProperties\":false}";

/* The tools of the tests: get_weather(params) and get_time(params2). */
static char g_tools[2048];

/* ---- helpers -------------------------------------------------------------------------------- */

/* POSTs body to path; returns the parsed reply (NULL when it is not JSON), status in *st and
 * the raw body in *raw (malloc'd) when raw is not NULL. */
static cJSON *post(const char *path, const char *body, int *st, char **raw)
{
    char *b = req(&A, "POST", path, body, NULL, st);
    cJSON *o = cJSON_Parse(b);
    if (raw)
        *raw = b;
    else
        free(b);
    return o;
}

static const cJSON *item(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = item(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const cJSON *choice(const cJSON *o, int i)
{
    return cJSON_GetArrayItem(item(o, "choices"), i);
}

/* The data events of an SSE body, in order, as a JSON list ([DONE] left out); *done tells
 * whether [DONE] came last. */
static cJSON *sse_events(const char *body, bool *done)
{
    cJSON *list = cJSON_CreateArray();
    *done = false;
    for (const char *p = body ? strstr(body, "data: ") : NULL; p; p = strstr(p, "data: ")) {
        p += 6;
        const char *e = strstr(p, "\n\n");
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 6 && !strncmp(p, "[DONE]", 6))
            *done = true;
        else
            cJSON_AddItemToArray(list, cJSON_ParseWithLength(p, n));
        p += n;
    }
    return list;
}

/* What a client's stream helper does: per choice index, the content, reasoning and tool calls
 * (tool_calls: a JSON list of {id, name, arguments}, the arguments fragments joined), the
 * finish_reason and the logprobs entries (chat: content[]; completions: the legacy columns'
 * tokens). */
struct acc {
    char content[8192], reasoning[8192];
    cJSON *calls, *lp;
    char finish[32];
    int n_events, n_roles;
};

static void acc_init(struct acc *a, int n)
{
    memset(a, 0, sizeof *a * (size_t)n);
    for (int i = 0; i < n; i++)
        a[i].calls = cJSON_CreateArray(), a[i].lp = cJSON_CreateArray();
}

static void acc_free(struct acc *a, int n)
{
    for (int i = 0; i < n; i++)
        cJSON_Delete(a[i].calls), cJSON_Delete(a[i].lp);
}

static void acc_calls(struct acc *a, const cJSON *tcs)
{
    for (const cJSON *t = tcs ? tcs->child : NULL; t; t = t->next) {
        int idx = item(t, "index") ? item(t, "index")->valueint : -1;
        const cJSON *fn = item(t, "function");
        while (idx >= 0 && cJSON_GetArraySize(a->calls) <= idx)
            cJSON_AddItemToArray(a->calls, cJSON_CreateObject());
        cJSON *c = cJSON_GetArrayItem(a->calls, idx);
        if (!c)
            continue;
        if (str(t, "id"))
            cJSON_AddStringToObject(c, "id", str(t, "id"));
        if (str(fn, "name"))
            cJSON_AddStringToObject(c, "name", str(fn, "name"));
        const char *frag = str(fn, "arguments");
        if (frag) {
            const char *had = str(c, "arguments");
            char *joined = malloc(strlen(had ? had : "") + strlen(frag) + 1);
            sprintf(joined, "%s%s", had ? had : "", frag);
            cJSON_DeleteItemFromObject(c, "arguments");
            cJSON_AddStringToObject(c, "arguments", joined);
            free(joined);
        }
    }
}

/* Folds the events of a stream into acc[0..n) (by choice index). Returns false when an event
 * is malformed (no choices, an index out of range). */
static bool accumulate(const cJSON *events, struct acc *acc, int n)
{
    for (const cJSON *e = events->child; e; e = e->next) {
        const cJSON *chs = item(e, "choices");
        if (!cJSON_IsArray(chs))
            return false;
        for (const cJSON *ch = chs->child; ch; ch = ch->next) {
            int idx = item(ch, "index") ? item(ch, "index")->valueint : -1;
            if (idx < 0 || idx >= n)
                return false;
            struct acc *a = &acc[idx];
            const cJSON *d = item(ch, "delta"), *lp = item(ch, "logprobs");
            a->n_events++;
            if (str(d, "role"))
                a->n_roles++;
            const char *t = d ? str(d, "content") : str(ch, "text");
            if (t)
                strncat(a->content, t, sizeof a->content - strlen(a->content) - 1);
            if (str(d, "reasoning_content"))
                strncat(a->reasoning, str(d, "reasoning_content"),
                        sizeof a->reasoning - strlen(a->reasoning) - 1);
            acc_calls(a, item(d, "tool_calls"));
            const cJSON *entries = d ? item(lp, "content") : item(lp, "tokens");
            for (const cJSON *x = entries ? entries->child : NULL; x; x = x->next)
                cJSON_AddItemToArray(a->lp, cJSON_Duplicate(x, true));
            if (str(ch, "finish_reason"))
                snprintf(a->finish, sizeof a->finish, "%s", str(ch, "finish_reason"));
        }
    }
    return true;
}

/* A chat body: the user's question, the tools (or none), then extra fields (",..." or ""). */
static char *chat_body(bool tools, const char *extra)
{
    char *b = malloc(8192);
    snprintf(b, 8192,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"What is the weather in Paris?\"}]"
             "%s%s%s}",
             tools ? ",\"tools\":" : "", tools ? g_tools : "", extra);
    return b;
}

#define NAMED ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}"

/* Whether call (a {name, arguments} object of a reply) is name(...) whose arguments validate
 * against sch. */
static bool call_valid(const cJSON *call, const char *name, const char *sch)
{
    const cJSON *fn = item(call, "function");
    const char *n = str(fn ? fn : call, "name"), *args = str(fn ? fn : call, "arguments");
    return n && args && !strcmp(n, name) && sc_check(args, sch);
}

/* ---- setup ---------------------------------------------------------------------------------- */

static void test_setup(void)
{
    find_paths(g_argv0, "exsa-test-server-tools");
    if (h_cur_failed)
        return;
    snprintf(g_tools, sizeof g_tools,
             "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":"
             "\"Weather of a city\",\"parameters\":%s}},{\"type\":\"function\",\"function\":"
             "{\"name\":\"get_time\",\"parameters\":%s}}]",
             params, params2);
    static char e1[PATH_MAX + 16];
    snprintf(e1, sizeof e1, "MODEL_PATH=%s", g_model);
    const char *env[] = {e1, "CONTEXT_SIZE=1024", "BATCH_TIMEOUT_MS=0", "MAX_BATCH_SIZE=4", NULL};
    CHECK(start(&A, env, NULL) == 0, "server A did not start");
    g_ready = !h_cur_failed;
}

/* ---- constrained replies -------------------------------------------------------------------- */

/* A named tool_choice at temperature 1, 20 seeds: one get_weather call each, arguments valid. */
static void test_named_tool_seeds(void)
{
    int good = 0;
    for (int seed = 0; seed < 20; seed++) {
        char extra[256];
        snprintf(extra, sizeof extra, NAMED ",\"temperature\":1,\"seed\":%d,\"max_tokens\":400",
                 seed);
        char *body = chat_body(true, extra), *raw = NULL;
        int st;
        cJSON *o = post("/v1/chat/completions", body, &st, &raw);
        const cJSON *ch = choice(o, 0), *msg = item(ch, "message");
        const cJSON *calls = item(msg, "tool_calls");
        bool ok = st == 200 && cJSON_GetArraySize(calls) == 1 &&
                  call_valid(cJSON_GetArrayItem(calls, 0), "get_weather", params) &&
                  !strcmp(str(ch, "finish_reason") ? str(ch, "finish_reason") : "", "tool_calls") &&
                  cJSON_IsNull(item(msg, "content")) &&
                  !strcmp(str(cJSON_GetArrayItem(calls, 0), "type") ?: "", "function") &&
                  !strncmp(str(cJSON_GetArrayItem(calls, 0), "id") ?: "", "call_", 5);
        CHECK(ok, "seed %d: %d %s", seed, st, raw);
        good += ok;
        cJSON_Delete(o), free(raw), free(body);
    }
    CHECK(good == 20, "%d of 20 named calls valid", good);
}

/* response_format json_schema (strict) at temperature 1, 20 seeds: content validates. */
static void test_json_schema_seeds(void)
{
    int good = 0;
    for (int seed = 0; seed < 20; seed++) {
        char extra[2048];
        snprintf(extra, sizeof extra,
                 ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":"
                 "\"pet\",\"strict\":true,\"schema\":%s}},\"temperature\":1,\"seed\":%d,"
                 "\"max_tokens\":600",
                 schema, seed + 100);
        char *body = chat_body(false, extra), *raw = NULL;
        int st;
        cJSON *o = post("/v1/chat/completions", body, &st, &raw);
        const cJSON *ch = choice(o, 0);
        const char *content = str(item(ch, "message"), "content");
        bool ok = st == 200 && content && sc_check(content, schema) &&
                  !strcmp(str(ch, "finish_reason") ?: "", "stop");
        CHECK(ok, "seed %d: %d %s", seed, st, raw);
        good += ok;
        cJSON_Delete(o), free(raw), free(body);
    }
    CHECK(good == 20, "%d of 20 json_schema replies valid", good);
    /* json_object: any JSON object, on completions too */
    int st;
    cJSON *o = post("/v1/completions",
                    "{\"prompt\":\"A JSON object:\",\"response_format\":{\"type\":\"json_object\"},"
                    "\"temperature\":1,\"seed\":3,\"max_tokens\":600}",
                    &st, NULL);
    const char *text = str(choice(o, 0), "text");
    cJSON *parsed = text ? cJSON_Parse(text) : NULL;
    CHECK(st == 200 && cJSON_IsObject(parsed), "json_object completion: %d %s", st,
          text ? text : "");
    cJSON_Delete(parsed), cJSON_Delete(o);
}

/* tool_choice required: calls of either tool, each valid; the stream's deltas, accumulated as
 * a client does, give the same calls as the whole reply of the same seed. */
static void test_required_stream_equals_whole(void)
{
    for (int seed = 0; seed < 4; seed++) {
        char extra[256];
        /* parallel_tool_calls false but for the last seed (then the random model may run out
         * of tokens within its list of calls: the block is content and the finish length) */
        snprintf(extra, sizeof extra,
                 ",\"tool_choice\":\"required\",\"temperature\":1,\"seed\":%d,"
                 "\"max_tokens\":400%s",
                 seed, seed < 3 ? ",\"parallel_tool_calls\":false" : "");
        char *body = chat_body(true, extra), *raw = NULL, *sraw = NULL;
        int st, st2;
        cJSON *o = post("/v1/chat/completions", body, &st, &raw);
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra), ",\"stream\":true");
        free(body);
        body = chat_body(true, extra);
        sraw = req(&A, "POST", "/v1/chat/completions", body, NULL, &st2);
        bool done;
        cJSON *ev = sse_events(sraw, &done);
        struct acc a;
        acc_init(&a, 1);
        bool shaped = accumulate(ev, &a, 1);
        const cJSON *msg = item(choice(o, 0), "message"), *calls = item(msg, "tool_calls");
        const char *finish = str(choice(o, 0), "finish_reason") ?: "";
        int n = cJSON_GetArraySize(calls);
        bool ran_out = !strcmp(finish, "length") && seed == 3;
        bool ok = st == 200 && st2 == 200 && done && shaped && !strcmp(a.finish, finish) &&
                  n == cJSON_GetArraySize(a.calls) && a.n_roles == 1 &&
                  (ran_out ? n == 0 && !strcmp(a.content, str(msg, "content") ?: "-") &&
                                 !strncmp(a.content, "<|tool_call_start|>", 19)
                           : n >= 1 && !strcmp(finish, "tool_calls") && !a.content[0]);
        CHECK(seed == 3 || n == 1, "parallel_tool_calls false: %d calls", n);
        for (int i = 0; ok && i < n; i++) {
            const cJSON *w = cJSON_GetArrayItem(calls, i), *s = cJSON_GetArrayItem(a.calls, i);
            const char *name = str(item(w, "function"), "name");
            ok = name &&
                 (call_valid(w, "get_weather", params) || call_valid(w, "get_time", params2));
            ok = ok && !strcmp(name, str(s, "name") ?: "") &&
                 !strcmp(str(item(w, "function"), "arguments"), str(s, "arguments") ?: "") &&
                 !strncmp(str(s, "id") ?: "", "call_", 5);
        }
        CHECK(ok, "seed %d: whole %d %s\nstream %d %s", seed, st, raw, st2, sraw);
        acc_free(&a, 1);
        cJSON_Delete(ev), cJSON_Delete(o), free(raw), free(sraw), free(body);
    }
}

/* tool_choice none leaves the tools out of the prompt; auto puts them in; a history's
 * assistant tool_calls and tool results reach the template. */
static void test_tools_in_prompt(void)
{
    int st1, st2, st3;
    char *b1 = chat_body(true, ",\"tool_choice\":\"none\",\"max_tokens\":4");
    char *b2 = chat_body(true, ",\"tool_choice\":\"auto\",\"max_tokens\":4");
    char *b3 = chat_body(false, ",\"max_tokens\":4");
    cJSON *none = post("/v1/chat/completions", b1, &st1, NULL);
    cJSON *aut = post("/v1/chat/completions", b2, &st2, NULL);
    cJSON *bare = post("/v1/chat/completions", b3, &st3, NULL);
    int p_none = item(item(none, "usage"), "prompt_tokens")->valueint;
    int p_auto = item(item(aut, "usage"), "prompt_tokens")->valueint;
    int p_bare = item(item(bare, "usage"), "prompt_tokens")->valueint;
    CHECK(st1 == 200 && st2 == 200 && st3 == 200 && p_none == p_bare && p_auto > p_none + 50,
          "prompt tokens: none %d, auto %d, no tools %d", p_none, p_auto, p_bare);
    cJSON_Delete(none), cJSON_Delete(aut), cJSON_Delete(bare);
    free(b1), free(b2), free(b3);
    /* the same history with and without the assistant's tool_calls */
    const char *fmt =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"},{\"role\":\"assistant\","
        "\"content\":null%s},{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":"
        "\"{\\\"temp\\\": 21}\"}],\"tools\":%s,\"max_tokens\":4}";
    char *with = malloc(8192), *without = malloc(8192);
    snprintf(with, 8192, fmt,
             ",\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":"
             "\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\", \\\"unit\\\": "
             "\\\"c\\\"}\"}}]",
             g_tools);
    snprintf(without, 8192, fmt, "", g_tools);
    cJSON *a = post("/v1/chat/completions", with, &st1, NULL);
    cJSON *b = post("/v1/chat/completions", without, &st2, NULL);
    int pa = item(item(a, "usage"), "prompt_tokens")
                 ? item(item(a, "usage"), "prompt_tokens")->valueint
                 : -1;
    int pb = item(item(b, "usage"), "prompt_tokens")
                 ? item(item(b, "usage"), "prompt_tokens")->valueint
                 : -1;
    CHECK(st1 == 200 && st2 == 200 && pa > pb + 5, "history tool_calls: %d %d, tokens %d vs %d",
          st1, st2, pa, pb);
    cJSON_Delete(a), cJSON_Delete(b);
    free(with), free(without);
}

/* ---- logprobs ------------------------------------------------------------------------------- */

/* Chat entries: each token first among its top_logprobs with the same logprob, its bytes
 * spelling it, top_k alternatives in falling order; the tokens spell the content. */
static bool chat_entries_ok(const cJSON *content, const char *text, int top_k, char *why, size_t wl)
{
    char joined[8192] = "";
    int i = 0;
    for (const cJSON *e = content ? content->child : NULL; e; e = e->next, i++) {
        const char *tok = str(e, "token");
        const cJSON *top = item(e, "top_logprobs"), *bytes = item(e, "bytes");
        double lp = item(e, "logprob") ? item(e, "logprob")->valuedouble : 1;
        const cJSON *t0 = cJSON_GetArrayItem(top, 0);
        if (!tok || lp > 0 || cJSON_GetArraySize(top) != top_k || !t0 ||
            strcmp(str(t0, "token") ?: "", tok) || item(t0, "logprob")->valuedouble != lp)
            return snprintf(why, wl, "entry %d: not first among its alternatives", i), false;
        for (const cJSON *x = top->child; x && x->next; x = x->next)
            if (item(x, "logprob")->valuedouble < item(x->next, "logprob")->valuedouble)
                return snprintf(why, wl, "entry %d: alternatives out of order", i), false;
        char spelled[256];
        int k = 0;
        for (const cJSON *b = bytes ? bytes->child : NULL; b && k < 255; b = b->next)
            spelled[k++] = (char)b->valueint;
        spelled[k] = 0;
        if (strcmp(spelled, tok))
            return snprintf(why, wl, "entry %d: bytes do not spell '%s'", i, tok), false;
        strncat(joined, tok, sizeof joined - strlen(joined) - 1);
    }
    if (strcmp(joined, text))
        return snprintf(why, wl, "tokens spell '%s', content '%s'", joined, text), false;
    return true;
}

static void test_logprobs_chat(void)
{
    const char *extra = ",\"temperature\":0,\"max_tokens\":12,\"ignore_eos\":true,"
                        "\"logprobs\":true,\"top_logprobs\":5";
    char *body = chat_body(false, extra), *raw = NULL, why[256] = "";
    int st;
    cJSON *o = post("/v1/chat/completions", body, &st, &raw);
    const cJSON *ch = choice(o, 0), *content = item(item(ch, "logprobs"), "content");
    const char *text = str(item(ch, "message"), "content");
    CHECK(st == 200 && text && cJSON_GetArraySize(content) == 12 &&
              chat_entries_ok(content, text, 5, why, sizeof why),
          "%s: %s", why, raw);
    /* streamed: the same entries, each sent once */
    char sextra[256];
    snprintf(sextra, sizeof sextra, "%s,\"stream\":true", extra);
    char *sbody = chat_body(false, sextra),
         *sraw = req(&A, "POST", "/v1/chat/completions", sbody, NULL, &st);
    bool done;
    cJSON *ev = sse_events(sraw, &done);
    struct acc a;
    acc_init(&a, 1);
    CHECK(st == 200 && done && accumulate(ev, &a, 1) && cJSON_Compare(a.lp, content, true) &&
              !strcmp(a.content, text ? text : ""),
          "stream logprobs differ: %s", sraw);
    acc_free(&a, 1);
    cJSON_Delete(ev), free(sraw), free(sbody);
    cJSON_Delete(o), free(raw), free(body);
    /* off: null */
    body = chat_body(false, ",\"max_tokens\":2");
    o = post("/v1/chat/completions", body, &st, NULL);
    CHECK(st == 200 && cJSON_IsNull(item(choice(o, 0), "logprobs")), "logprobs off");
    cJSON_Delete(o), free(body);
}

static void test_logprobs_completions(void)
{
    const char *b = "{\"prompt\":\"Once upon a time\",\"temperature\":0,\"max_tokens\":10,"
                    "\"ignore_eos\":true,\"logprobs\":3%s}";
    char body[256], sbody[256];
    snprintf(body, sizeof body, b, "");
    snprintf(sbody, sizeof sbody, b, ",\"stream\":true");
    int st;
    char *raw = NULL;
    cJSON *o = post("/v1/completions", body, &st, &raw);
    const cJSON *ch = choice(o, 0), *lp = item(ch, "logprobs");
    const cJSON *toks = item(lp, "tokens"), *lps = item(lp, "token_logprobs"),
                *tops = item(lp, "top_logprobs"), *offs = item(lp, "text_offset");
    const char *text = str(ch, "text");
    bool ok = st == 200 && text && cJSON_GetArraySize(toks) == 10 &&
              cJSON_GetArraySize(lps) == 10 && cJSON_GetArraySize(tops) == 10 &&
              cJSON_GetArraySize(offs) == 10;
    char joined[4096] = "";
    int chars = 0; /* text_offset counts characters */
    for (int i = 0; ok && i < 10; i++) {
        const char *t = cJSON_GetArrayItem(toks, i)->valuestring;
        const cJSON *top = cJSON_GetArrayItem(tops, i), *self = item(top, t);
        double v = cJSON_GetArrayItem(lps, i)->valuedouble;
        ok = self && self->valuedouble == v && cJSON_GetArrayItem(offs, i)->valueint == chars;
        for (const char *p = t; *p; p++)
            chars += ((unsigned char)*p & 0xC0) != 0x80;
        for (const cJSON *x = top ? top->child : NULL; ok && x; x = x->next)
            ok = x->valuedouble <= v; /* greedy: the chosen token is the most likely */
        strncat(joined, t, sizeof joined - strlen(joined) - 1);
    }
    CHECK(ok && !strcmp(joined, text), "completions logprobs: %s", raw);
    char *sraw = req(&A, "POST", "/v1/completions", sbody, NULL, &st);
    bool done;
    cJSON *ev = sse_events(sraw, &done);
    struct acc a;
    acc_init(&a, 1);
    CHECK(st == 200 && done && accumulate(ev, &a, 1) && cJSON_Compare(a.lp, toks, true) &&
              !strcmp(a.content, text ? text : ""),
          "streamed completions logprobs: %s", sraw);
    acc_free(&a, 1);
    cJSON_Delete(ev), free(sraw);
    cJSON_Delete(o), free(raw);
}

/* ---- n > 1 ---------------------------------------------------------------------------------- */

/* exsa_forked_choices_total from /metrics. */
static double forks(void)
{
    int st;
    char *m = req(&A, "GET", "/metrics", NULL, NULL, &st);
    const char *p = strstr(m ? m : "", "\nexsa_forked_choices_total ");
    double v = p ? atof(p + 27) : -1;
    free(m);
    return v;
}

static void test_n_choices(void)
{
    double f0 = forks();
    char *body =
        chat_body(false, ",\"temperature\":0,\"max_tokens\":8,\"ignore_eos\":true,\"n\":3");
    char *raw = NULL;
    int st;
    cJSON *o = post("/v1/chat/completions", body, &st, &raw);
    const char *t[3];
    for (int i = 0; i < 3; i++) {
        t[i] = str(item(choice(o, i), "message"), "content");
        CHECK(item(choice(o, i), "index") && item(choice(o, i), "index")->valueint == i, "index %d",
              i);
    }
    CHECK(st == 200 && cJSON_GetArraySize(item(o, "choices")) == 3 && t[0] && t[1] && t[2] &&
              !strcmp(t[0], t[1]) && !strcmp(t[0], t[2]) &&
              item(item(o, "usage"), "completion_tokens")->valueint == 24,
          "n=3 greedy: %s", raw);
    double f1 = forks();
    CHECK(f1 == f0 + 2, "forks: %g before, %g after", f0, f1);
    cJSON_Delete(o), free(raw), free(body);
    /* sampled, seeded: streamed choices (by index) equal the whole reply's; they differ */
    const char *extra = ",\"temperature\":1,\"seed\":42,\"max_tokens\":10,\"n\":3";
    body = chat_body(false, extra);
    o = post("/v1/chat/completions", body, &st, &raw);
    char sextra[256];
    snprintf(sextra, sizeof sextra, "%s,\"stream\":true", extra);
    char *sbody = chat_body(false, sextra),
         *sraw = req(&A, "POST", "/v1/chat/completions", sbody, NULL, &st);
    bool done;
    cJSON *ev = sse_events(sraw, &done);
    struct acc a[3];
    acc_init(a, 3);
    bool ok = done && accumulate(ev, a, 3);
    for (int i = 0; ok && i < 3; i++) {
        const char *w = str(item(choice(o, i), "message"), "content");
        ok = w && !strcmp(w, a[i].content) && a[i].finish[0] && a[i].n_roles == 1;
    }
    const char *c0 = str(item(choice(o, 0), "message"), "content"),
               *c1 = str(item(choice(o, 1), "message"), "content");
    CHECK(ok && c0 && c1 && strcmp(c0, c1), "n=3 sampled: %s\nstream: %s", raw, sraw);
    acc_free(a, 3);
    cJSON_Delete(ev), free(sraw), free(sbody);
    cJSON_Delete(o), free(raw), free(body);
    /* two constrained choices: both valid */
    char extra2[2048];
    snprintf(extra2, sizeof extra2,
             NAMED ",\"temperature\":1,\"seed\":7,\"n\":2,\"max_tokens\":400");
    body = chat_body(true, extra2);
    o = post("/v1/chat/completions", body, &st, &raw);
    for (int i = 0; i < 2; i++)
        CHECK(call_valid(cJSON_GetArrayItem(item(item(choice(o, i), "message"), "tool_calls"), 0),
                         "get_weather", params),
              "constrained choice %d: %s", i, raw);
    cJSON_Delete(o), free(raw), free(body);
}

/* ---- errors --------------------------------------------------------------------------------- */

static void test_errors(void)
{
    char unsupported[512];
    snprintf(unsupported, sizeof unsupported,
             ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
             "\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\","
             "\"pattern\":\"^a+$\"}}}}}");
    struct {
        bool tools;
        const char *extra, *param, *needle;
    } cases[] = {
        {true, ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"nope\"}}",
         "tool_choice", "nope"},
        {false, ",\"tool_choice\":\"required\"", "tool_choice", "required"},
        {true, ",\"tool_choice\":\"sometimes\"", "tool_choice", "tool_choice"},
        {false, unsupported, "response_format", "pattern"},
        {false, ",\"response_format\":{\"type\":\"xml\"}", "response_format", "xml"},
        {false, ",\"response_format\":\"json\"", "response_format", "response_format"},
        {false, ",\"logprobs\":true,\"top_logprobs\":21", "top_logprobs", "top_logprobs"},
        {false, ",\"top_logprobs\":2", "top_logprobs", "logprobs"},
        {false, ",\"logprobs\":3", "logprobs", "logprobs"},
        {false, ",\"n\":9", "n", "'n'"},
        {false, ",\"n\":0", "n", "'n'"},
        {true, NAMED ",\"response_format\":{\"type\":\"json_object\"}", "response_format",
         "tool_choice"},
        {false, ",\"tools\":[{\"type\":\"function\"}]", "tools", "tools[0]"},
        {false, ",\"parallel_tool_calls\":1", "parallel_tool_calls", "parallel_tool_calls"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *body = chat_body(cases[i].tools, cases[i].extra), *raw = NULL;
        int st;
        cJSON *o = post("/v1/chat/completions", body, &st, &raw);
        const cJSON *err = item(o, "error");
        CHECK(st == 400 && is_error_shape(raw) && str(err, "param") &&
                  !strcmp(str(err, "param"), cases[i].param) &&
                  has(str(err, "message"), cases[i].needle),
              "%s: %d %s", cases[i].extra, st, raw);
        cJSON_Delete(o), free(raw), free(body);
    }
    int st;
    char *raw = NULL;
    cJSON *o = post("/v1/completions", "{\"prompt\":\"x\",\"logprobs\":21}", &st, &raw);
    CHECK(st == 400 && has(raw, "\"param\":\"logprobs\""), "completions logprobs 21: %s", raw);
    cJSON_Delete(o), free(raw);
}

/* ---- a thinking template --------------------------------------------------------------------- */

/* A copy of the tiny model whose chat template is LFM2.5's reasoning one (the fixture's own
 * template key renamed in place, the new one added). */
static bool write_reasoning_model(const char *dst)
{
    char tpath[PATH_MAX], mid[PATH_MAX + 32];
    snprintf(tpath, sizeof tpath, "%s/templates/LFM2.5-8B-A1B.jinja", fixtures_dir());
    snprintf(mid, sizeof mid, "%s/renamed.gguf", g_tmp);
    size_t tl = 0, size = 0;
    char *tmpl = read_whole_file(tpath, &tl), *f = read_whole_file(g_model, &size);
    const char key[] = "tokenizer.chat_template";
    char *k = f ? memmem(f, size, key, sizeof key - 1) : NULL;
    bool ok = tmpl && k;
    if (ok) {
        k[sizeof key - 2] = 'X'; /* "tokenizer.chat_templatX": an unknown key now */
        FILE *o = fopen(mid, "wb");
        ok = o && fwrite(f, 1, size, o) == size;
        ok = o && fclose(o) == 0 && ok;
    }
    unsigned char *kv = ok ? malloc(tl + 128) : NULL;
    size_t len = 0;
    if (kv) {
        unsigned char *v = malloc(tl + 8);
        uint64_t n = tl;
        memcpy(v, &n, 8), memcpy(v + 8, tmpl, tl);
        put_kv(kv, &len, key, 8 /* STRING */, v, tl + 8);
        free(v);
        ok = gguf_with_kvs(mid, dst, kv, len, 1);
    }
    free(kv), free(tmpl), free(f);
    return ok && kv;
}

/* The reasoning template: a history's reasoning_content goes back to it (the turn after the
 * last user message keeps its thinking), and replies are still content. */
static void test_reasoning_template(void)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/think.gguf", g_tmp);
    CHECK(write_reasoning_model(path), "write %s", path);
    static char e1[PATH_MAX + 48];
    snprintf(e1, sizeof e1, "MODEL_PATH=%s", path);
    const char *env[] = {e1, "CONTEXT_SIZE=1024", "BATCH_TIMEOUT_MS=0", NULL};
    struct srv B;
    if (h_cur_failed || start(&B, env, NULL) != 0) {
        CHECK(0, "server B did not start");
        return;
    }
    int st;
    char *info = req(&B, "GET", "/v1/model/info", NULL, NULL, &st);
    CHECK(has(info, "lfm2.5-reasoning"), "template: %s", info);
    free(info);
    const char *fmt =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"},{\"role\":\"assistant\","
        "\"content\":\"\"%s,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":"
        "{\"name\":\"get_time\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"content\":\"9am\"}],"
        "\"max_tokens\":4}";
    char a[1024], b[1024];
    snprintf(a, sizeof a, fmt, ",\"reasoning_content\":\"The user wants the local time first.\"");
    snprintf(b, sizeof b, fmt, "");
    char *ra = req(&B, "POST", "/v1/chat/completions", a, NULL, &st);
    int st2;
    char *rb = req(&B, "POST", "/v1/chat/completions", b, NULL, &st2);
    cJSON *oa = cJSON_Parse(ra), *ob = cJSON_Parse(rb);
    const cJSON *ua = item(item(oa, "usage"), "prompt_tokens"),
                *ub = item(item(ob, "usage"), "prompt_tokens");
    CHECK(st == 200 && st2 == 200 && ua && ub && ua->valueint > ub->valueint + 5 &&
              str(item(choice(oa, 0), "message"), "content"),
          "reasoning_content in history: %s / %s", ra, rb);
    cJSON_Delete(oa), cJSON_Delete(ob), free(ra), free(rb);
    CHECK(stop(&B) == 0, "server B exit status");
}

/* ---- reply.c with the scheduler's chunks ------------------------------------------------------
 */

/* A chunk of text split into one-byte pieces, token i = byte i (id base + i, logprob
 * -(base + i) / 10) with itself as its one alternative; done at the end when done is set. */
static void byte_chunk(struct sched_chunk *ch, const char *text, int base, bool done)
{
    size_t n = strlen(text);
    memset(ch, 0, sizeof *ch);
    ch->text = strdup(text);
    ch->len = n;
    ch->n_pieces = ch->n_toks = (int)n;
    ch->piece_len = malloc(sizeof(int) * (n + 1));
    ch->piece_toks = malloc(sizeof(int) * (n + 1));
    ch->toks = malloc(sizeof *ch->toks * (n + 1));
    ch->lp_top = malloc(sizeof *ch->lp_top * (n + 1));
    ch->lp_bytes = strdup(text);
    for (size_t i = 0; i < n; i++) {
        ch->piece_len[i] = 1;
        ch->piece_toks[i] = (int)i + 1;
        int32_t id = base + (int32_t)i;
        ch->toks[i] = (struct sched_tok){{id, -(float)id / 10, (uint32_t)i, 1}, (int)i, 1};
        ch->lp_top[i] = ch->toks[i].tok;
    }
    ch->done = done;
    ch->finish = GEN_EOG;
}

/* Runs text through a choice in two reads (split at half), streamed or whole. */
static cJSON *run_choice(const struct reply_meta *rm, const char *text, bool stream)
{
    struct reply_choice *c = reply_choice_new(rm, 0);
    cJSON *events = stream ? cJSON_CreateArray() : NULL;
    size_t half = strlen(text) / 2;
    char *first = strndup(text, half);
    struct sched_chunk a, b;
    byte_chunk(&a, first, 0, false);
    byte_chunk(&b, text + half, (int)half, true);
    bool ok = c && reply_choice_take(c, &a, events) == 0 && reply_choice_take(c, &b, events) == 0 &&
              reply_choice_done(c);
    cJSON *made = !ok ? NULL : stream ? events : reply_choice_json(c);
    if (!ok || !stream)
        cJSON_Delete(events);
    /* as a client reads it (text values are raw JSON in the objects) */
    char *printed = made ? cJSON_PrintUnformatted(made) : NULL;
    cJSON *out = printed ? cJSON_Parse(printed) : NULL;
    free(printed);
    cJSON_Delete(made);
    sched_chunk_free(&a), sched_chunk_free(&b);
    free(first);
    reply_choice_free(c);
    return out;
}

static void test_reply_module(void)
{
    const char *text = "<think> The user asks. </think>\n\nLet me check. <|tool_call_start|>"
                       "[get_weather(city='Paris', unit=\"c\"), get_time(zone='CET')]"
                       "<|tool_call_end|>";
    struct reply_meta rm = {.kind = JOB_CHAT,
                            .id = "chatcmpl-x",
                            .model_id = "m",
                            .logprobs = true,
                            .reasoning = true,
                            .tool_calls = true,
                            .max_calls = 16};
    cJSON *whole = run_choice(&rm, text, false), *events = run_choice(&rm, text, true);
    const cJSON *msg = item(whole, "message"), *calls = item(msg, "tool_calls");
    CHECK(whole && !strcmp(str(msg, "reasoning_content") ?: "", "The user asks.") &&
              !strcmp(str(msg, "content") ?: "", "Let me check. ") &&
              cJSON_GetArraySize(calls) == 2 &&
              !strcmp(str(whole, "finish_reason") ?: "", "tool_calls") &&
              !strcmp(str(item(cJSON_GetArrayItem(calls, 1), "function"), "arguments") ?: "",
                      "{\"zone\":\"CET\"}") &&
              cJSON_GetArraySize(item(item(whole, "logprobs"), "content")) == (int)strlen(text),
          "whole: %s", whole ? cJSON_PrintUnformatted(whole) : "NULL");
    struct acc a;
    acc_init(&a, 1);
    CHECK(events && accumulate(events, &a, 1) && !strcmp(a.reasoning, "The user asks.") &&
              !strcmp(a.content, "Let me check. ") && cJSON_GetArraySize(a.calls) == 2 &&
              !strcmp(a.finish, "tool_calls") && a.n_roles == 1 &&
              cJSON_GetArraySize(a.lp) == (int)strlen(text),
          "stream: reasoning '%s' content '%s' calls %d finish %s logprobs %d", a.reasoning,
          a.content, cJSON_GetArraySize(a.calls), a.finish, cJSON_GetArraySize(a.lp));
    for (int i = 0; i < cJSON_GetArraySize(a.calls) && i < 2; i++) {
        const cJSON *s = cJSON_GetArrayItem(a.calls, i), *w = cJSON_GetArrayItem(calls, i);
        CHECK(!strcmp(str(s, "id") ?: "", str(w, "id") ?: "-") &&
                  !strcmp(str(s, "name") ?: "", str(item(w, "function"), "name") ?: "-") &&
                  !strcmp(str(s, "arguments") ?: "", str(item(w, "function"), "arguments") ?: "-"),
              "call %d differs", i);
    }
    /* each logprob once, in order */
    for (int i = 0; i < cJSON_GetArraySize(a.lp); i++) {
        const cJSON *e = cJSON_GetArrayItem(a.lp, i);
        char want[2] = {text[i], 0};
        CHECK(!strcmp(str(e, "token") ?: "", want) &&
                  fabs(item(e, "logprob")->valuedouble + i / 10.0) < 1e-5,
              "logprob %d", i);
    }
    acc_free(&a, 1);
    cJSON_Delete(whole), cJSON_Delete(events);
    /* one call at most (parallel_tool_calls false); no tools: the block is content */
    rm.max_calls = 1;
    whole = run_choice(&rm, text, false);
    CHECK(cJSON_GetArraySize(item(item(whole, "message"), "tool_calls")) == 1, "max_calls 1");
    cJSON_Delete(whole);
    rm.tool_calls = false, rm.reasoning = false, rm.logprobs = false;
    whole = run_choice(&rm, text, false);
    CHECK(!strcmp(str(item(whole, "message"), "content") ?: "", text) &&
              !item(item(whole, "message"), "tool_calls") &&
              cJSON_IsNull(item(whole, "logprobs")) &&
              !strcmp(str(whole, "finish_reason") ?: "", "stop"),
          "no tools: %s", cJSON_PrintUnformatted(whole));
    cJSON_Delete(whole);
}

static void test_stop_a(void)
{
    CHECK(stop(&A) == 0, "server A exit status");
}

int main(int argc, char **argv)
{
    snprintf(g_argv0, sizeof g_argv0, "%s", argv[0]);
    RUN(test_reply_module);
    RUN(test_setup);
    if (!g_ready)
        TEST_END();
    RUN(test_named_tool_seeds);
    RUN(test_json_schema_seeds);
    RUN(test_required_stream_equals_whole);
    RUN(test_tools_in_prompt);
    RUN(test_logprobs_chat);
    RUN(test_logprobs_completions);
    RUN(test_n_choices);
    RUN(test_errors);
    RUN(test_reasoning_template);
    RUN(test_stop_a);
    free(sh("rm -rf %s", g_tmp));
    TEST_END();
}
