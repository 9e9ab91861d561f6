/*
 * test_server_cache.c: the prompt cache through `exsa serve` (the real binary on a loopback
 * port, tiny fixture, reference backend so that replies with and without the cache can be
 * compared exactly). A second chat turn computes only the new turn's tokens: usage's
 * prompt_tokens_details.cached_tokens is the first turn's prompt + reply (or, when the reply's
 * text does not tokenize back to the same ids, the start of the reply's message), in whole
 * replies and in the stream's usage chunk; a retried completion restores its last BATCH_SIZE
 * checkpoint; cache_prompt: false gives 0 and leaves nothing behind, and a non-bool is a 400;
 * under PROMPT_CACHE_MB=1 many chats evict each other while every reply stays the one the
 * model gives without the cache and the cache stays under its bound; /metrics counts it all.
 */
#include <cjson/cJSON.h>

#include "server-util.h"

static struct srv S;                    /* BACKEND=ref, BATCH_SIZE=64, the default cache */
static char g_env_model[PATH_MAX + 16]; /* MODEL_PATH=the fixture */

/* POSTs body (cJSON, freed) to path; *st gets the status; returns the parsed reply or NULL. */
static cJSON *post(struct srv *s, const char *path, cJSON *body, int *st)
{
    char *txt = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    char *out = req(s, "POST", path, txt, NULL, st);
    cJSON *o = cJSON_Parse(out);
    free(txt);
    free(out);
    return o;
}

static int num_at(const cJSON *o, const char *a, const char *b, const char *c)
{
    const cJSON *v = cJSON_GetObjectItem(o, a);
    if (b)
        v = cJSON_GetObjectItem(v, b);
    if (c)
        v = cJSON_GetObjectItem(v, c);
    return cJSON_IsNumber(v) ? v->valueint : -1;
}

static int cached_of(const cJSON *o)
{
    return num_at(o, "usage", "prompt_tokens_details", "cached_tokens");
}

static const char *content_of(const cJSON *o)
{
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
    const cJSON *m = cJSON_GetObjectItem(ch, "message");
    const cJSON *t = cJSON_GetObjectItem(m ? m : ch, m ? "content" : "text");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

/* The value of metric name (a line "name value") in /metrics; -1 when absent. */
static double metric(struct srv *s, const char *name)
{
    int st;
    char *b = req(s, "GET", "/metrics", NULL, NULL, &st), *p = b;
    size_t n = strlen(name);
    double v = -1;
    while (p && (p = strstr(p, name)))
        if ((p == b || p[-1] == '\n') && p[n] == ' ') {
            v = atof(p + n + 1);
            break;
        } else {
            p += n;
        }
    free(b);
    return v;
}

/* Token ids of text (no BOS; special tokens parsed) into ids; returns how many, or -1. */
static int tokenize(struct srv *s, const char *text, int *ids, int max)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "content", text);
    cJSON_AddFalseToObject(b, "add_special");
    int st, n = 0;
    cJSON *o = post(s, "/tokenize", b, &st), *t;
    cJSON_ArrayForEach (t, cJSON_GetObjectItem(o, "tokens")) {
        if (n < max)
            ids[n++] = t->valueint;
    }
    cJSON_Delete(o);
    return st == 200 ? n : -1;
}

static cJSON *msg(const char *role, const char *content)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    cJSON_AddStringToObject(m, "content", content);
    return m;
}

static const char *SYS = "You are a careful assistant. Answer in short sentences, and say when "
                         "you do not know something about the weather or the city.";
static const char *USER1 = "Hello there, how are you today? Tell me about the weather in Paris "
                           "in the spring, and what people wear there.";
static const char *USER2 = "And in summer? Please give a long and detailed answer with numbers, "
                           "and compare it with the weather in London and in Rome in July.";

/* A chat body: messages [SYS, USER1, (reply, USER2 when reply)], greedy, max_tokens mt;
 * force: token id every step (logit bias), or -1. */
static cJSON *chat_body(const char *reply, int mt, int force, bool stream)
{
    cJSON *b = cJSON_CreateObject(), *ms = cJSON_AddArrayToObject(b, "messages");
    cJSON_AddItemToArray(ms, msg("system", SYS));
    cJSON_AddItemToArray(ms, msg("user", USER1));
    if (reply) {
        cJSON_AddItemToArray(ms, msg("assistant", reply));
        cJSON_AddItemToArray(ms, msg("user", USER2));
    }
    cJSON_AddNumberToObject(b, "max_tokens", mt);
    cJSON_AddNumberToObject(b, "temperature", 0);
    cJSON_AddTrueToObject(b, "ignore_eos");
    if (force >= 0) {
        char id[16];
        snprintf(id, sizeof id, "%d", force);
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(b, "logit_bias"), id, 100);
    }
    if (stream) {
        cJSON_AddTrueToObject(b, "stream");
        cJSON_AddTrueToObject(cJSON_AddObjectToObject(b, "stream_options"), "include_usage");
    }
    return b;
}

/* A word that is one token x and that, repeated 4 times as an assistant's reply, tokenizes
 * back to x x x x in the rendered chat: a forced reply that the next turn sends back as the
 * same ids. Returns x (word in *w), or -1. */
static int round_trip_word(const char **w)
{
    static const char *const cand[] = {" the", " and", " of", " to", " a", "the", "e", "a"};
    int a[64], b[64], one[4];
    int na = tokenize(&S, "<|im_start|>assistant\n", a, 64);
    for (size_t i = 0; na > 0 && i < sizeof cand / sizeof cand[0]; i++) {
        char text[128];
        if (tokenize(&S, cand[i], one, 4) != 1)
            continue;
        snprintf(text, sizeof text, "<|im_start|>assistant\n%s%s%s%s<|im_end|>", cand[i], cand[i],
                 cand[i], cand[i]);
        int nb = tokenize(&S, text, b, 64);
        bool ok = nb == na + 5 && !memcmp(a, b, sizeof(int) * na);
        for (int k = 0; ok && k < 4; k++)
            ok = b[na + k] == one[0];
        if (ok) {
            *w = cand[i];
            return one[0];
        }
    }
    return -1;
}

/* The second turn restores the first turn's prompt + reply (in a stream's usage chunk too). */
static void test_second_turn(void)
{
    const char *w = NULL;
    int x = round_trip_word(&w), st;
    CHECK(x >= 0, "no word of the fixture's vocabulary round-trips as a reply");
    if (x < 0)
        return;
    double reused0 = metric(&S, "exsa_prompt_cache_reused_tokens_total");
    cJSON *r1 = post(&S, "/v1/chat/completions", chat_body(NULL, 4, x, false), &st);
    int p1 = num_at(r1, "usage", "prompt_tokens", NULL);
    int c1 = num_at(r1, "usage", "completion_tokens", NULL);
    char reply[64];
    snprintf(reply, sizeof reply, "%s%s%s%s", w, w, w, w);
    CHECK(st == 200 && c1 == 4 && content_of(r1) && !strcmp(content_of(r1), reply) &&
              cached_of(r1) == 0,
          "turn 1: %d c1 %d cached %d '%s'", st, c1, cached_of(r1), content_of(r1));
    cJSON *r2 = post(&S, "/v1/chat/completions", chat_body(reply, 4, x, false), &st);
    int p2 = num_at(r2, "usage", "prompt_tokens", NULL), k2 = cached_of(r2);
    /* KV holds turn 1's prompt and its reply but the last sampled token (never fed) */
    CHECK(st == 200 && k2 == p1 + c1 - 1, "turn 2: cached %d, expected %d + %d - 1 (prompt %d)", k2,
          p1, c1, p2);
    /* the stream's usage chunk carries it too (a retry of turn 2: its checkpoint at the start
     * of the generation prompt, the last message start, or at a multiple of 64 past it) */
    int g[64], ng = tokenize(&S, "<|im_start|>assistant\n", g, 64);
    cJSON *b = chat_body(reply, 4, x, true);
    char *txt = cJSON_PrintUnformatted(b), *out;
    cJSON_Delete(b);
    out = req(&S, "POST", "/v1/chat/completions", txt, "-N", &st);
    char want[96];
    snprintf(want, sizeof want, "\"prompt_tokens_details\":{\"cached_tokens\":");
    char *at = strstr(out, want);
    int k3 = at ? atoi(at + strlen(want)) : -1;
    CHECK(st == 200 && k3 >= p2 - ng && k3 < p2,
          "stream retry: cached %d, expected %d - %d "
          "or a BATCH_SIZE multiple above: %s",
          k3, p2, ng, out);
    free(txt), free(out);
    double reused = metric(&S, "exsa_prompt_cache_reused_tokens_total") - reused0;
    CHECK(reused == k2 + k3, "metrics: reused %.0f, expected %d", reused, k2 + k3);
    cJSON_Delete(r1), cJSON_Delete(r2);
}

/* A reply whose text does not come back as the same ids: the reply's message start. */
static void test_second_turn_unforced(void)
{
    int st, g[64];
    int ng = tokenize(&S, "<|im_start|>assistant\n", g, 64);
    cJSON *r1 = post(&S, "/v1/chat/completions", chat_body(NULL, 12, -1, false), &st);
    int p1 = num_at(r1, "usage", "prompt_tokens", NULL);
    int c1 = num_at(r1, "usage", "completion_tokens", NULL);
    const char *reply = content_of(r1);
    CHECK(st == 200 && reply && ng > 0, "turn 1: %d", st);
    if (!reply)
        return;
    cJSON *r2 = post(&S, "/v1/chat/completions", chat_body(reply, 4, -1, false), &st);
    int k2 = cached_of(r2);
    CHECK(st == 200 && (k2 == p1 + c1 - 1 || k2 == p1 - ng),
          "turn 2: cached %d, expected %d (prompt + reply) or %d (the reply's message start)", k2,
          p1 + c1 - 1, p1 - ng);
    cJSON_Delete(r1), cJSON_Delete(r2);
}

static cJSON *completion_body(const char *prompt, int cache)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "prompt", prompt);
    cJSON_AddNumberToObject(b, "max_tokens", 3);
    cJSON_AddNumberToObject(b, "temperature", 0);
    cJSON_AddTrueToObject(b, "ignore_eos");
    if (cache >= 0)
        cJSON_AddBoolToObject(b, "cache_prompt", cache);
    return b;
}

/* A long completion prompt: checkpoints every BATCH_SIZE (64); cache_prompt: false opts out. */
static void test_completion_and_opt_out(void)
{
    char prompt[2048] = "";
    for (int i = 0; i < 30; i++)
        snprintf(prompt + strlen(prompt), sizeof prompt - strlen(prompt),
                 "line %d of a long document about caches; ", i);
    int st, ids[1024];
    int n = tokenize(&S, prompt, ids, 1024) + 1; /* + BOS */
    CHECK(n > 140, "prompt of %d tokens", n);
    /* off: nothing restored, nothing left behind */
    double ck0 = metric(&S, "exsa_prompt_cache_checkpoints");
    double miss0 = metric(&S, "exsa_prompt_cache_misses_total");
    cJSON *a = post(&S, "/v1/completions", completion_body(prompt, 0), &st);
    cJSON *b = post(&S, "/v1/completions", completion_body(prompt, 0), &st);
    CHECK(st == 200 && cached_of(a) == 0 && cached_of(b) == 0, "off: cached %d %d", cached_of(a),
          cached_of(b));
    CHECK(metric(&S, "exsa_prompt_cache_checkpoints") == ck0 &&
              metric(&S, "exsa_prompt_cache_misses_total") == miss0,
          "cache_prompt false touched the cache");
    /* on: the retry restores the last multiple of 64 below the prompt's end */
    cJSON *c = post(&S, "/v1/completions", completion_body(prompt, 1), &st);
    cJSON *d = post(&S, "/v1/completions", completion_body(prompt, -1), &st);
    int want = (n - 1) / 64 * 64;
    CHECK(st == 200 && cached_of(c) == 0 && cached_of(d) == want, "on: cached %d %d (want %d)",
          cached_of(c), cached_of(d), want);
    const char *ta = content_of(a), *td = content_of(d);
    CHECK(ta && td && !strcmp(ta, td), "reply with the cache differs: '%s' vs '%s'", ta, td);
    cJSON_Delete(a), cJSON_Delete(b), cJSON_Delete(c), cJSON_Delete(d);
    /* a cache_prompt that is not a bool is a 400 naming it, on every generating route */
    const char *bad[][2] = {
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                                 "\"cache_prompt\":\"no\"}"},
        {"/v1/completions", "{\"prompt\":\"hi\",\"cache_prompt\":0}"},
        {"/v1/generate", "{\"prompt\":\"hi\",\"cache_prompt\":[]}"},
    };
    for (int i = 0; i < 3; i++) {
        char *o = req(&S, "POST", bad[i][0], bad[i][1], NULL, &st);
        CHECK(st == 400 && has(o, "\"param\":\"cache_prompt\"") && is_error_shape(o), "%s: %d %s",
              bad[i][0], st, o);
        free(o);
    }
}

/* n = 2: the first choice restores the cached prefix and the second forks its sequence; both
 * give the replies the model gives without the cache. */
static void test_choices(void)
{
    const char *ref[2] = {NULL, NULL};
    double forked0 = metric(&S, "exsa_forked_choices_total");
    for (int pass = 0; pass < 3; pass++) { /* off, on (stores), on (restores) */
        cJSON *b = chat_body(NULL, 6, -1, false);
        cJSON_AddNumberToObject(b, "n", 2);
        cJSON_AddBoolToObject(b, "cache_prompt", pass > 0);
        int st;
        cJSON *o = post(&S, "/v1/chat/completions", b, &st);
        const cJSON *chs = cJSON_GetObjectItem(o, "choices");
        CHECK(st == 200 && cJSON_GetArraySize(chs) == 2, "pass %d: %d", pass, st);
        for (int i = 0; i < 2 && st == 200; i++) {
            const cJSON *m = cJSON_GetObjectItem(cJSON_GetArrayItem(chs, i), "message");
            const cJSON *t = cJSON_GetObjectItem(m, "content");
            const char *txt = cJSON_IsString(t) ? t->valuestring : "";
            if (pass == 0)
                ref[i] = strdup(txt);
            else
                CHECK(ref[i] && !strcmp(ref[i], txt), "pass %d choice %d: '%s' vs '%s'", pass, i,
                      txt, ref[i] ? ref[i] : "");
        }
        if (pass == 2)
            CHECK(cached_of(o) > 0, "the retry restored nothing");
        cJSON_Delete(o);
    }
    double forked = metric(&S, "exsa_forked_choices_total") - forked0;
    CHECK(forked == 3, "%.0f of 3 second choices forked the first one's sequence", forked);
    free((char *)ref[0]), free((char *)ref[1]);
}

/* PROMPT_CACHE_MB=1: chats evict each other; every reply is the one without the cache. */
static void test_small_cap(void)
{
    struct srv E;
    const char *env[] = {g_env_model,
                         "BACKEND=ref",
                         "BATCH_SIZE=64",
                         "PROMPT_CACHE_MB=1",
                         "CONTEXT_SIZE=1024",
                         "BATCH_TIMEOUT_MS=0",
                         NULL};
    CHECK(start(&E, env, NULL) == 0, "server E did not start");
    if (h_cur_failed)
        return;
    CHECK(metric(&E, "exsa_prompt_cache_capacity_bytes") == 1048576, "capacity");
    enum { N = 6 };
    char user[N][1024];
    int hits = 0, st;
    for (int k = 0; k < N; k++) {
        snprintf(user[k], sizeof user[k], "Chat number %d. ", k);
        for (int i = 0; i < 12; i++)
            snprintf(user[k] + strlen(user[k]), sizeof user[k] - strlen(user[k]),
                     "Sentence %d of chat %d talks about %s. ", i, k, i % 2 ? "rain" : "sun");
        const char *ref = NULL;
        for (int pass = 0; pass < 3; pass++) { /* off, on (stores), on (restores) */
            cJSON *b = cJSON_CreateObject(), *ms = cJSON_AddArrayToObject(b, "messages");
            cJSON_AddItemToArray(ms, msg("system", SYS));
            cJSON_AddItemToArray(ms, msg("user", user[k]));
            cJSON_AddNumberToObject(b, "max_tokens", 8);
            cJSON_AddNumberToObject(b, "temperature", 0);
            cJSON_AddTrueToObject(b, "ignore_eos");
            cJSON_AddBoolToObject(b, "cache_prompt", pass > 0);
            cJSON *o = post(&E, "/v1/chat/completions", b, &st);
            const char *t = content_of(o);
            CHECK(st == 200 && t, "chat %d pass %d: %d", k, pass, st);
            if (pass == 0 && t)
                ref = strdup(t);
            else if (t && ref)
                CHECK(!strcmp(t, ref), "chat %d pass %d: '%s' vs '%s' without the cache", k, pass,
                      t, ref);
            hits += pass == 2 && cached_of(o) > 0;
            cJSON_Delete(o);
        }
        free((char *)ref);
        double bytes = metric(&E, "exsa_prompt_cache_bytes");
        CHECK(bytes > 0 && bytes <= 1048576, "chat %d: cache holds %.0f bytes", k, bytes);
    }
    CHECK(hits == N, "%d of %d retries restored something", hits, N);
    CHECK(metric(&E, "exsa_prompt_cache_evictions_total") > 0, "nothing was evicted");
    CHECK(stop(&E) == 0, "server E exit status");
}

/* PROMPT_CACHE_MB=0 (or --cache-mb 0, which wins over the variable): no cache at all. */
static void test_cache_off(void)
{
    struct srv O;
    const char *env[] = {g_env_model, "BACKEND=ref", "PROMPT_CACHE_MB=64", NULL};
    CHECK(start(&O, env, "--cache-mb 0") == 0, "server O did not start");
    if (h_cur_failed)
        return;
    int st;
    for (int i = 0; i < 2; i++) {
        cJSON *o = post(&O, "/v1/chat/completions", chat_body(NULL, 3, -1, false), &st);
        CHECK(st == 200 && cached_of(o) == 0, "cached %d with the cache off", cached_of(o));
        cJSON_Delete(o);
    }
    CHECK(metric(&O, "exsa_prompt_cache_capacity_bytes") == 0 &&
              metric(&O, "exsa_prompt_cache_misses_total") == 0,
          "metrics with the cache off");
    CHECK(stop(&O) == 0, "server O exit status");
    char *out = sh("PROMPT_CACHE_MB=-1 '%s' serve 2>&1; echo rc=$?", g_exsa);
    CHECK(has(out, "PROMPT_CACHE_MB") && has(out, "rc=2"), "a bad PROMPT_CACHE_MB: %s", out);
    free(out);
}

static char g_argv0[PATH_MAX];
static bool g_ready;

static void test_setup(void)
{
    find_paths(g_argv0, "exsa-test-cache");
    if (h_cur_failed)
        return;
    snprintf(g_env_model, sizeof g_env_model, "MODEL_PATH=%s", g_model);
    const char *env[] = {g_env_model,         "BACKEND=ref",        "BATCH_SIZE=64",
                         "CONTEXT_SIZE=1024", "BATCH_TIMEOUT_MS=0", NULL};
    CHECK(start(&S, env, NULL) == 0, "server S did not start");
    g_ready = !h_cur_failed;
}

int main(int argc, char **argv)
{
    snprintf(g_argv0, sizeof g_argv0, "%s", argv[0]);
    RUN(test_setup);
    if (!g_ready)
        TEST_END();
    RUN(test_second_turn);
    RUN(test_second_turn_unforced);
    RUN(test_completion_and_opt_out);
    RUN(test_choices);
    RUN(test_small_cap);
    RUN(test_cache_off);
    CHECK(stop(&S) == 0, "server S exit status");
    free(sh("rm -rf %s", g_tmp));
    TEST_END();
}
