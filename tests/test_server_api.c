/*
 * test_server_api.c: `exsa serve` end to end for issue 10's server side: POST /v1/embeddings
 * (deterministic, normalised, a batch equal to each input alone, token ids equal to the text
 * tokenized, base64 equal to the floats, dimensions, errors, models that cannot embed, chat
 * replies unchanged while embeddings run), the "model" field (any name is answered by the
 * served model, a name of another MODELS_DIR file is a 404 saying how to load it),
 * GET /v1/models/{id}, GET /health and its 503s, and CORS: the preflight's allowed headers
 * and a real browser (Debian's headless chromium) streaming a chat completion from a page on
 * another loopback port with an x-stainless-os header and a key. Also the reply helpers'
 * UTF-8 scrub and JSON quoting (srv_utf8_scrub, srv_json_quote) on handwritten bytes.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <sys/stat.h>

#include "server-util.h"

#include "scheduler.h"
#include "server/server.h"

#pragma GCC diagnostic ignored "-Wformat-truncation"

static char g_argv0[PATH_MAX];
static struct srv A; /* the tiny model, MODELS_DIR with other files, CONTEXT_SIZE 256 */
static bool g_ready;

#define EMB(body) req(&A, "POST", "/v1/embeddings", body, NULL, &st)

/* ---- helpers -------------------------------------------------------------------------------- */

/* The embedding vectors of a reply (float format): n vectors of *dim floats, malloc'd; NULL
 * when the body is not a well-formed list. */
static float *vectors(const char *body, int *n, int *dim)
{
    cJSON *o = cJSON_Parse(body);
    const cJSON *data = cJSON_GetObjectItem(o, "data");
    *n = cJSON_GetArraySize(data), *dim = 0;
    float *v = NULL;
    for (int i = 0; i < *n; i++) {
        const cJSON *d = cJSON_GetArrayItem(data, i), *e = cJSON_GetObjectItem(d, "embedding");
        const cJSON *idx = cJSON_GetObjectItem(d, "index"), *obj = cJSON_GetObjectItem(d, "object");
        if (!cJSON_IsArray(e) || !cJSON_IsNumber(idx) || idx->valueint != i ||
            !cJSON_IsString(obj) || strcmp(obj->valuestring, "embedding"))
            goto bad;
        if (i == 0) {
            *dim = cJSON_GetArraySize(e);
            v = malloc(sizeof(float) * (size_t)*n * (*dim ? *dim : 1));
        }
        if (cJSON_GetArraySize(e) != *dim)
            goto bad;
        int k = 0;
        for (const cJSON *x = e->child; x; x = x->next)
            v[(size_t)i * *dim + k++] = (float)x->valuedouble;
    }
    cJSON_Delete(o);
    return *n > 0 ? v : (free(v), NULL);
bad:
    cJSON_Delete(o);
    free(v);
    return NULL;
}

static double norm(const float *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += (double)v[i] * v[i];
    return sqrt(s);
}

static double max_diff(const float *a, const float *b, int n)
{
    double m = 0;
    for (int i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* Decodes base64 text (no line breaks) into out; returns the byte count or -1. */
static int unbase64(const char *s, unsigned char *out, int max)
{
    int n = 0, bits = 0;
    uint32_t acc = 0;
    for (; *s && *s != '='; s++) {
        const char *tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const char *p = strchr(tab, *s);
        if (!p)
            return -1;
        acc = acc << 6 | (uint32_t)(p - tab), bits += 6;
        if (bits >= 8) {
            if (n == max)
                return -1;
            out[n++] = (unsigned char)(acc >> (bits - 8));
            bits -= 8;
        }
    }
    return n;
}

/* ---- setup ---------------------------------------------------------------------------------- */

/* MODELS_DIR: another model file (other.gguf), a symlink to the served file, and two files the
 * engine loads but cannot embed with: a bidirectional encoder and a per-token ColBERT model. */
static void make_models_dir(void)
{
    char other[PATH_MAX], rel[PATH_MAX];
    snprintf(rel, sizeof rel, "%s/lfm2-tiny-Q8_0.gguf", fixtures_dir());
    CHECK(realpath(rel, other) != NULL, "fixture %s missing", rel);
    free(sh("mkdir -p %s/models && ln -s '%s' %s/models/served-link.gguf && "
            "ln -s '%s' %s/models/other.gguf",
            g_tmp, g_model, g_tmp, other, g_tmp));
    unsigned char kv[256];
    size_t len = 0;
    uint8_t f = 0;
    put_kv(kv, &len, "lfm2.attention.causal", 7 /* BOOL */, &f, 1);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/models/bidir.gguf", g_tmp);
    CHECK(gguf_with_kvs(g_model, path, kv, len, 1), "write %s", path);
    len = 0;
    uint32_t none = 0, out = 16;
    put_kv(kv, &len, "lfm2.pooling_type", 4 /* UINT32 */, &none, 4);
    put_kv(kv, &len, "lfm2.embedding_length_out", 4, &out, 4);
    snprintf(path, sizeof path, "%s/models/colbert.gguf", g_tmp);
    CHECK(gguf_with_kvs(g_model, path, kv, len, 2), "write %s", path);
}

static void test_setup(void)
{
    find_paths(g_argv0, "exsa-test-server-api");
    if (h_cur_failed)
        return;
    make_models_dir();
    static char e1[PATH_MAX + 16], e2[PATH_MAX + 32];
    snprintf(e1, sizeof e1, "MODEL_PATH=%s", g_model);
    snprintf(e2, sizeof e2, "MODELS_DIR=%s/models", g_tmp);
    const char *env[] = {e1,  e2, "CONTEXT_SIZE=256", "BATCH_TIMEOUT_MS=0", "MAX_BATCH_SIZE=4",
                         NULL};
    CHECK(start(&A, env, NULL) == 0, "server A did not start");
    g_ready = !h_cur_failed;
}

/* ---- embeddings ----------------------------------------------------------------------------- */

static void test_embed_shape_deterministic(void)
{
    int st, n1, n2, d1, d2;
    const char *body = "{\"input\":\"The quick brown fox\",\"model\":\"text-embedding-3-small\"}";
    char *a = EMB(body), *b = EMB(body);
    float *va = vectors(a, &n1, &d1), *vb = vectors(b, &n2, &d2);
    CHECK(st == 200 && va && vb && n1 == 1 && d1 == 256 && n2 == 1 && d2 == d1, "shape %d %.300s",
          st, a);
    CHECK(has(a, "\"object\":\"list\"") && has(a, "\"model\":\"lfm2-tiny-F32\"") &&
              has(a, "\"usage\":{\"prompt_tokens\":") && has(a, "\"total_tokens\":"),
          "list, real model id, usage: %.200s", a);
    if (va && vb) {
        CHECK(!memcmp(va, vb, sizeof(float) * d1), "same input twice: max diff %g",
              max_diff(va, vb, d1));
        CHECK(fabs(norm(va, d1) - 1) < 1e-5, "|v| = %.9f", norm(va, d1));
    }
    free(va), free(vb), free(a), free(b);
}

/* A batch of inputs of different lengths gives each input's vector alone (on the default CPU
 * backend the batch changes the matrix products' summing order, hence the bound). */
static void test_embed_batch_equals_alone(void)
{
    const char *in[3] = {"Hello", "A somewhat longer sentence about the weather in spring.",
                         "third input, with punctuation; and numbers 12345"};
    char body[1024];
    snprintf(body, sizeof body, "{\"input\":[\"%s\",\"%s\",\"%s\"]}", in[0], in[1], in[2]);
    int st, n, dim;
    char *b = EMB(body);
    float *all = vectors(b, &n, &dim);
    CHECK(st == 200 && all && n == 3, "batch %d %.200s", st, b);
    free(b);
    for (int i = 0; all && i < 3; i++) {
        snprintf(body, sizeof body, "{\"input\":\"%s\"}", in[i]);
        int n1, d1;
        b = EMB(body);
        float *one = vectors(b, &n1, &d1);
        CHECK(one && d1 == dim && max_diff(one, all + (size_t)i * dim, dim) < 1e-5,
              "input %d: batched vs alone %g", i,
              one ? max_diff(one, all + (size_t)i * dim, dim) : -1);
        free(one), free(b);
    }
    free(all);
}

/* Token ids as input equal the text tokenized (with the BOS, special tokens as text); a list of
 * id lists is a batch; base64 decodes to the float answer. */
static void test_embed_tokens_and_base64(void)
{
    int st, n, dim;
    const char *text = "Embeddings of <|im_start|> as plain text";
    char body[1024];
    snprintf(body, sizeof body, "{\"content\":\"%s\",\"add_special\":true,\"parse_special\":false}",
             text);
    char *t = req(&A, "POST", "/tokenize", body, NULL, &st);
    const char *ids = t ? strstr(t, "[") : NULL, *end = ids ? strchr(ids, ']') : NULL;
    CHECK(st == 200 && ids && end, "tokenize %d %s", st, t);
    if (!ids || !end) {
        free(t);
        return;
    }
    snprintf(body, sizeof body, "{\"input\":\"%s\"}", text);
    char *bs = EMB(body);
    float *vs = vectors(bs, &n, &dim);
    snprintf(body, sizeof body, "{\"input\":%.*s}", (int)(end - ids + 1), ids);
    char *bt = EMB(body);
    int n2, d2;
    float *vt = vectors(bt, &n2, &d2);
    CHECK(vs && vt && d2 == dim && !memcmp(vs, vt, sizeof(float) * dim), "ids vs text: %s / %.200s",
          body, bt);
    CHECK(has(bs, "\"prompt_tokens\":") && has(bt, "\"prompt_tokens\":") &&
              atoi(strstr(bs, "\"prompt_tokens\":") + 16) ==
                  atoi(strstr(bt, "\"prompt_tokens\":") + 16),
          "same usage");
    snprintf(body, sizeof body, "{\"input\":[%.*s,[1,2,3]]}", (int)(end - ids + 1), ids);
    char *bl = EMB(body);
    float *vl = vectors(bl, &n2, &d2);
    CHECK(vl && n2 == 2 && vs && max_diff(vl, vs, dim) < 1e-5, "list of id lists %.200s", bl);
    snprintf(body, sizeof body, "{\"input\":\"%s\",\"encoding_format\":\"base64\"}", text);
    char *b64 = EMB(body);
    cJSON *o = cJSON_Parse(b64);
    const cJSON *e =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "data"), 0), "embedding");
    unsigned char raw[4096];
    int nb = cJSON_IsString(e) ? unbase64(e->valuestring, raw, sizeof raw) : -1;
    CHECK(nb == 4 * dim, "base64 bytes %d for %d floats: %.200s", nb, dim, b64);
    bool same = vs && nb == 4 * dim;
    for (int i = 0; same && i < dim; i++) {
        uint32_t u = raw[4 * i] | raw[4 * i + 1] << 8 | raw[4 * i + 2] << 16 |
                     (uint32_t)raw[4 * i + 3] << 24;
        float f;
        memcpy(&f, &u, 4);
        same = f == vs[i];
    }
    CHECK(same, "base64 (little-endian f32) equals the float answer exactly");
    cJSON_Delete(o);
    free(t), free(bs), free(bt), free(bl), free(b64), free(vs), free(vt), free(vl);
}

/* dimensions: the first d components, normalised again. */
static void test_embed_dimensions(void)
{
    int st, n, dim, n2, d2;
    char *full = EMB("{\"input\":\"short vectors\"}");
    char *cut = EMB("{\"input\":\"short vectors\",\"dimensions\":16}");
    float *vf = vectors(full, &n, &dim), *vc = vectors(cut, &n2, &d2);
    CHECK(st == 200 && vf && vc && d2 == 16, "dimensions 16: %d %.200s", st, cut);
    if (vf && vc && d2 == 16) {
        double k = norm(vf, 16);
        float want[16];
        for (int i = 0; i < 16; i++)
            want[i] = (float)(vf[i] / k);
        CHECK(max_diff(want, vc, 16) < 1e-6 && fabs(norm(vc, 16) - 1) < 1e-5,
              "truncated and renormalised: %g", max_diff(want, vc, 16));
    }
    free(full), free(cut), free(vf), free(vc);
}

static void test_embed_errors(void)
{
    struct {
        const char *body;
        int status;
        const char *needle;
    } cases[] = {
        {"{\"input\":\"\"}", 400, "\"param\":\"input\""},
        {"{\"input\":[]}", 400, "\"param\":\"input\""},
        {"{\"input\":[\"a\",[1,2]]}", 400, "entry 1"},
        {"{\"input\":[\"a\",\"\"]}", 400, "entry 1"},
        {"{\"input\":[1,-2]}", 400, "\"param\":\"input\""},
        {"{\"input\":3}", 400, "\"param\":\"input\""},
        {"{}", 400, "\"param\":\"input\""},
        {"{\"input\":[99999999]}", 400, "vocabulary"},
        {"{\"input\":\"a\",\"encoding_format\":\"int8\"}", 400, "encoding_format"},
        {"{\"input\":\"a\",\"dimensions\":0}", 400, "dimensions"},
        {"{\"input\":\"a\",\"dimensions\":257}", 400, "have 256"},
        {"{\"input\":\"a\",\"model\":7}", 400, "\"param\":\"model\""},
        {"{\"input\":\"a\",\"model\":\"other\"}", 404, "/v1/models/load"},
        {"[1]", 400, "JSON object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st;
        char *b = EMB(cases[i].body);
        CHECK(st == cases[i].status && is_error_shape(b) && has(b, cases[i].needle), "%s: %d %s",
              cases[i].body, st, b);
        free(b);
    }
    /* longer than the context (256) */
    char *big = malloc(8192), *p = big;
    p += sprintf(p, "{\"input\":[1");
    for (int i = 0; i < 300; i++)
        p += sprintf(p, ",%d", 20 + i);
    strcpy(p, "]}");
    int st;
    char *b = EMB(big);
    CHECK(st == 400 && has(b, "context_length_exceeded") && has(b, "holds 256"), "long %d %s", st,
          b);
    free(b), free(big);
    /* more than 2048 inputs */
    char *many = malloc(2049 * 4 + 32);
    p = many + sprintf(many, "{\"input\":[");
    for (int i = 0; i < 2049; i++)
        p += sprintf(p, "%s\"a\"", i ? "," : "");
    strcpy(p, "]}");
    b = EMB(many);
    CHECK(st == 400 && has(b, "more than 2048"), "2049 inputs %d %.200s", st, b);
    free(b), free(many);
}

/* Writes a body of n inputs of about 40 tokens each to path. */
static void write_big_input(const char *path, int n)
{
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"input\":[");
    for (int i = 0; i < n; i++)
        fprintf(f,
                "%s\"input %d: a paragraph long enough to take two steps of prefill, with "
                "words and more words and yet more words to embed %d\"",
                i ? "," : "", i, i);
    fprintf(f, "]}");
    fclose(f);
}

/* The sequences and KV blocks the engine holds are back to none (or 15 s passed: a step of the
 * SAN=1 build on a loaded machine can take seconds). */
static bool cache_idle(const struct srv *s)
{
    bool idle = false;
    for (int i = 0; i < 150 && !idle; i++, usleep(100000)) {
        int st;
        char *b = req(s, "GET", "/metrics", NULL, NULL, &st);
        idle = has(b, "exsa_active_sequences 0") && has(b, "exsa_cache_sequences 0") &&
               has(b, "exsa_kv_blocks_used 0");
        free(b);
    }
    return idle;
}

/* A chat reply with a seed is the same alone and while a big embedding request runs (slowed
 * steps, so they overlap); embedding sequences are freed after, and when the client leaves. */
static void test_embed_beside_chat(void)
{
    struct srv E;
    const char *env[] = {"EXSA_TEST_STEP_DELAY_MS=10", "BATCH_TIMEOUT_MS=0", NULL};
    char flags[PATH_MAX + 64];
    snprintf(flags, sizeof flags, "-m '%s' -c 256 -b 32 --max-batch 4", g_model);
    if (start(&E, env, flags) < 0) {
        CHECK(0, "server E did not start");
        return;
    }
    const char *chat = "{\"messages\":[{\"role\":\"user\",\"content\":\"Tell me a story\"}],"
                       "\"max_tokens\":24,\"ignore_eos\":true,\"seed\":5,\"temperature\":1}";
    int st;
    /* the SAN=1 build on a loaded machine: a step with an embedding chunk can take seconds */
    char *alone = req(&E, "POST", "/v1/chat/completions", chat, "-m 240", &st);
    CHECK(st == 200, "chat alone %d", st);
    char path[PATH_MAX + 32], cmd[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/big.json", g_tmp);
    write_big_input(path, 16);
    snprintf(cmd, sizeof cmd,
             "curl -s -m 240 -o %s/big.out -w '%%{http_code}' %s/v1/embeddings " JSON_CT
             "--data-binary @%s > %s/big.code",
             g_tmp, E.url, path, g_tmp);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    usleep(100000);
    char *beside = req(&E, "POST", "/v1/chat/completions", chat, "-m 240", &st);
    waitpid(pid, NULL, 0);
    const char *ca = alone ? strstr(alone, "\"content\":") : NULL;
    const char *cb = beside ? strstr(beside, "\"content\":") : NULL;
    const char *ea = ca ? strstr(ca, "\"finish_reason\"") : NULL;
    const char *eb = cb ? strstr(cb, "\"finish_reason\"") : NULL;
    CHECK(st == 200 && ea && eb && ea - ca == eb - cb && !strncmp(ca, cb, ea - ca),
          "chat beside embeddings: %.200s / %.200s", alone, beside);
    char *code = sh("cat %s/big.code", g_tmp), *out = sh("cat %s/big.out", g_tmp);
    int n, dim;
    float *v = vectors(out, &n, &dim);
    CHECK(!strcmp(code, "200") && v && n == 16, "16 embeddings beside: %s %.200s", code, out);
    CHECK(cache_idle(&E), "no sequence or KV block left after the embeddings");
    /* a client that leaves mid-way: its inputs are cancelled, their sequences freed */
    free(sh("curl -s -m 0.3 -o /dev/null %s/v1/embeddings " JSON_CT "--data-binary @%s", E.url,
            path));
    CHECK(cache_idle(&E), "no sequence or KV block left after a client left");
    char *b = req(&E, "POST", "/v1/embeddings", "{\"input\":\"still here\"}", NULL, &st);
    CHECK(st == 200, "embeddings after a client left %d %.200s", st, b);
    free(b);
    free(v), free(code), free(out), free(alone), free(beside);
    CHECK(stop(&E) == 0, "server E exit status");
}

/* Files of MODELS_DIR that load but cannot embed: a clear 400, and chat still works. */
static void test_embed_cannot(void)
{
    const char *files[] = {"bidir.gguf", "colbert.gguf"};
    const char *why[] = {"bidirectional encoder", "one vector per token"};
    int st;
    for (int i = 0; i < 2; i++) {
        char body[128];
        snprintf(body, sizeof body, "{\"model_path\":\"%s\"}", files[i]);
        char *b = req(&A, "POST", "/v1/models/load", body, NULL, &st);
        CHECK(st == 200, "load %s: %d %s", files[i], st, b);
        free(b);
        b = EMB("{\"input\":\"x\"}");
        CHECK(st == 400 && has(b, "this model cannot embed: ") && has(b, why[i]) &&
                  has(b, "model_cannot_embed"),
              "%s: %d %s", files[i], st, b);
        free(b);
        b = req(&A, "POST", "/v1/completions", "{\"prompt\":\"a\",\"max_tokens\":2}", NULL, &st);
        CHECK(st == 200, "completions on %s %d %s", files[i], st, b);
        free(b);
    }
    char body[PATH_MAX + 32];
    snprintf(body, sizeof body, "{\"model_path\":\"served-link.gguf\"}");
    free(req(&A, "POST", "/v1/models/load", body, NULL, &st));
    CHECK(st == 200, "back to the tiny model %d", st);
}

/* ---- the model field, /v1/models/{id}, health -------------------------------------------- */

static void test_model_field(void)
{
    struct {
        const char *path, *body;
        int status;
        const char *needle;
    } cases[] = {
        {"/v1/chat/completions", CHAT(",\"max_tokens\":2,\"model\":\"gpt-4\""), 200,
         "\"model\":\"lfm2-tiny-F32\""},
        {"/v1/chat/completions", CHAT(",\"max_tokens\":2,\"model\":\"LiquidAI/LFM2-1.2B\""), 200,
         "\"model\":\"lfm2-tiny-F32\""},
        {"/v1/completions", "{\"prompt\":\"a\",\"max_tokens\":2,\"model\":\"served-link\"}", 200,
         "\"model\":\"lfm2-tiny-F32\""},
        {"/v1/completions", "{\"prompt\":\"a\",\"max_tokens\":2,\"model\":\"lfm2-tiny-F32.gguf\"}",
         200, "text_completion"},
        {"/v1/chat/completions", CHAT(",\"model\":\"other\""), 404,
         "POST /v1/models/load with {\\\"model_path\\\": \\\"other.gguf\\\"}"},
        {"/v1/completions", "{\"prompt\":\"a\",\"model\":\"other.gguf\"}", 404, "model_not_found"},
        {"/v1/generate", "{\"prompt\":\"a\",\"model\":\"other\"}", 404, "\"param\":\"model\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st;
        char *b = req(&A, "POST", cases[i].path, cases[i].body, NULL, &st);
        CHECK(st == cases[i].status && has(b, cases[i].needle) && (st == 200 || is_error_shape(b)),
              "%s %s: %d %s", cases[i].path, cases[i].body, st, b);
        free(b);
    }
}

static void test_models_get(void)
{
    struct {
        const char *method, *path;
        int status;
        const char *needle;
    } cases[] = {
        {"GET", "/v1/models/lfm2-tiny-F32", 200, "\"object\":\"model\""},
        {"GET", "/v1/models/lfm2-tiny-F32.gguf", 200, "\"id\":\"lfm2-tiny-F32\""},
        {"GET", "/v1/models/served-link", 200, "\"id\":\"lfm2-tiny-F32\""},
        {"GET", "/v1/models/gpt-4", 404, "\"code\":\"model_not_found\""},
        {"GET", "/v1/models/other", 404, "/v1/models/load"},
        {"GET", "/v1/models/list", 200, "\"models\":["},
        {"GET", "/v1/models/active", 200, "\"model_path\""},
        {"POST", "/v1/models/lfm2-tiny-F32", 405, "method_not_allowed"},
        {"GET", "/v1/models/", 404, "not_found"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st;
        char *b = req(&A, cases[i].method, cases[i].path, NULL, NULL, &st);
        CHECK(st == cases[i].status && has(b, cases[i].needle) && (st == 200 || is_error_shape(b)),
              "%s %s: %d %s", cases[i].method, cases[i].path, st, b);
        free(b);
    }
    int st;
    char *b = req(&A, "GET", "/metrics", NULL, NULL, &st);
    CHECK(has(b, "route=\"/v1/models/{id}\",status=\"200\"") && !has(b, "route=\"/v1/models/gpt"),
          "metrics name the pattern, not the ids");
    free(b);
}

static void test_health(void)
{
    int st, st2;
    char *a = req(&A, "GET", "/health", NULL, NULL, &st);
    char *b = req(&A, "GET", "/v1/health", NULL, NULL, &st2);
    CHECK(st == 200 && st2 == 200 && has(a, "\"status\":\"healthy\"") &&
              has(a, "\"model_loaded\":true") && has(b, "\"status\":\"healthy\"") &&
              !has(a, "\"error\""),
          "health %d %s / %d %s", st, a, st2, b);
    free(a), free(b);
    /* a server with no model: 503 on both, with the reason and Retry-After; 200 after a load */
    struct srv N;
    static char e1[PATH_MAX + 32];
    snprintf(e1, sizeof e1, "MODELS_DIR=%s/models", g_tmp);
    const char *env[] = {e1, "API_KEY=k", NULL};
    if (start_opt(&N, env, "-c 128", true) < 0) {
        CHECK(0, "server N did not start");
        return;
    }
    const char *paths[] = {"/health", "/v1/health"};
    for (int i = 0; i < 2; i++) {
        char hdr[PATH_MAX + 16];
        snprintf(hdr, sizeof hdr, "-D %s/h503", g_tmp);
        a = req(&N, "GET", paths[i], NULL, hdr, &st);
        char *h = sh("cat %s/h503", g_tmp);
        CHECK(st == 503 && has(a, "\"status\":\"no_model\"") && is_error_shape(a) &&
                  has(a, "POST /v1/models/load") && has(a, "\"model_loaded\":false") &&
                  (has(h, "Retry-After: 1") || has(h, "retry-after: 1")),
              "%s with no model (no key needed): %d %s %s", paths[i], st, a, h);
        free(a), free(h);
    }
    a = req(&N, "POST", "/v1/models/load", "{\"model_path\":\"served-link.gguf\"}",
            "-H 'Authorization: Bearer k'", &st);
    CHECK(st == 200, "load %d %s", st, a);
    free(a);
    a = req(&N, "GET", "/health", NULL, NULL, &st);
    CHECK(st == 200 && has(a, "\"status\":\"healthy\""), "after the load %d %s", st, a);
    free(a);
    CHECK(stop(&N) == 0, "server N exit status");
}

/* The state health reads, with a load under way (a window too short to catch end to end). */
static void test_health_states(void)
{
    struct sched_stats st = {.loaded = true};
    struct srv_health h;
    srv_health_state(&st, false, &h);
    CHECK(h.http_status == 200 && !strcmp(h.status, "healthy") && !h.reason, "loaded");
    st.queue_full = true;
    srv_health_state(&st, false, &h);
    CHECK(h.http_status == 200 && !strcmp(h.status, "overloaded"), "overloaded");
    st.loading = true; /* a replacement loads beside the model, which serves on */
    st.queue_full = false;
    srv_health_state(&st, false, &h);
    CHECK(h.http_status == 200 && !strcmp(h.status, "healthy"), "loading beside: %d %s",
          h.http_status, h.status);
    st.loaded = false; /* the first model */
    srv_health_state(&st, false, &h);
    CHECK(h.http_status == 503 && !strcmp(h.status, "loading") && h.reason &&
              !strcmp(h.code, "model_loading"),
          "loading: %d %s", h.http_status, h.status);
    st = (struct sched_stats){.loaded = false};
    srv_health_state(&st, false, &h);
    CHECK(h.http_status == 503 && !strcmp(h.status, "no_model"), "no model");
    st.loaded = true;
    srv_health_state(&st, true, &h);
    CHECK(h.http_status == 503 && !strcmp(h.status, "shutting_down"), "shutting down");
}

/* ---- CORS ----------------------------------------------------------------------------------- */

static void test_cors_preflight(void)
{
    struct srv C;
    const char *env[] = {"ENABLE_CORS=true", NULL};
    char flags[PATH_MAX + 32];
    snprintf(flags, sizeof flags, "-m '%s' -c 128", g_model);
    if (start(&C, env, flags) < 0) {
        CHECK(0, "server C did not start");
        return;
    }
    char hdr[PATH_MAX + 16];
    snprintf(hdr, sizeof hdr,
             "-D %s/hpre -H 'Origin: http://page.example' -H "
             "'Access-Control-Request-Method: POST' -H 'Access-Control-Request-Headers: "
             "authorization,content-type, x-stainless-os, X-Stainless-Retry-Count,"
             "x-stainless-package-version,openai-organization,OpenAI-Beta,x-evil,cookie'",
             g_tmp);
    int st;
    free(req(&C, "OPTIONS", "/v1/chat/completions", NULL, hdr, &st));
    char *h = sh("cat %s/hpre", g_tmp);
    CHECK(st == 204 && has(h, "Access-Control-Allow-Headers: authorization, content-type, "
                              "x-stainless-os, x-stainless-retry-count, "
                              "x-stainless-package-version, openai-organization, openai-beta\r"),
          "echoed families only: %d %s", st, h);
    free(h);
    snprintf(hdr, sizeof hdr,
             "-D %s/hpre -H 'Origin: http://page.example' -H "
             "'Access-Control-Request-Method: POST'",
             g_tmp);
    free(req(&C, "OPTIONS", "/v1/embeddings", NULL, hdr, &st));
    h = sh("cat %s/hpre", g_tmp);
    CHECK(st == 204 && has(h, "OpenAI-Organization") && has(h, "X-Stainless-Helper-Method") &&
              has(h, "X-Stainless-Async") && has(h, "Authorization"),
          "no request headers: the whole list %d %s", st, h);
    free(h);
    CHECK(stop(&C) == 0, "server C exit status");
}

/* The page: streams a chat completion with fetch + ReadableStream from the server at port,
 * sending a key and x-stainless-os, then reports the outcome to its own origin as
 * GET /done?<result> (which the page's server logs). */
static const char page_fmt[] =
    "<!doctype html><html><body><pre id=out>pending</pre><script>\n"
    "const report = (s) => { document.getElementById('out').textContent = s;\n"
    "  return fetch('/done?' + encodeURIComponent(s)).catch(() => {}); };\n"
    "(async () => {\n"
    "  try {\n"
    "    const r = await fetch('http://127.0.0.1:%d/v1/chat/completions', {method: 'POST',\n"
    "      headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer pagekey',\n"
    "        'x-stainless-os': 'Linux', 'X-Stainless-Lang': 'js'},\n"
    "      body: JSON.stringify({messages: [{role: 'user', content: 'hi'}], max_tokens: 12,\n"
    "        ignore_eos: true, stream: true})});\n"
    "    const rd = r.body.getReader(), dec = new TextDecoder();\n"
    "    let buf = '', text = '', chunks = 0, done = false;\n"
    "    for (;;) {\n"
    "      const {value, done: end} = await rd.read();\n"
    "      if (end) break;\n"
    "      buf += dec.decode(value, {stream: true});\n"
    "      for (let i; (i = buf.indexOf('\\n\\n')) >= 0; buf = buf.slice(i + 2)) {\n"
    "        const ev = buf.slice(0, i);\n"
    "        if (!ev.startsWith('data: ')) continue;\n"
    "        if (ev === 'data: [DONE]') { done = true; continue; }\n"
    "        const c = JSON.parse(ev.slice(6)).choices;\n"
    "        if (c.length && c[0].delta.content) { text += c[0].delta.content; chunks++; }\n"
    "      }\n"
    "    }\n"
    "    await report(`RESULT status=${r.status} chunks=${chunks} done=${done} "
    "len=${text.length}`);\n"
    "  } catch (e) { await report('RESULT error ' + e); }\n"
    "})();\n"
    "</script></body></html>\n";

/* s[0..n) with %XX escapes decoded (malloc'd). */
static char *url_decode(const char *s, size_t n)
{
    char *o = malloc(n + 1), *p = o;
    for (size_t i = 0; o && i < n; i++) {
        unsigned x;
        if (s[i] == '%' && i + 2 < n + 1 && sscanf(s + i + 1, "%2x", &x) == 1)
            *p++ = (char)x, i += 2;
        else
            *p++ = s[i];
    }
    if (o)
        *p = 0;
    return o;
}

/* Starts cmd in a process group of its own; returns its pid. */
static pid_t spawn(const char *cmd)
{
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    if (pid > 0)
        setpgid(pid, pid); /* also here: the group exists before anyone signals it */
    return pid;
}

static void end_group(pid_t pid)
{
    kill(-pid, SIGTERM);
    for (int i = 0; i < 50 && waitpid(pid, NULL, WNOHANG) == 0; i++)
        usleep(100000);
    kill(-pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void test_cors_browser(void)
{
    const char *chromium = "/usr/bin/chromium";
    CHECK(access(chromium, X_OK) == 0,
          "%s is missing: `make test` installs Debian's chromium "
          "as root (apt-get install chromium); this check needs it and does not skip",
          chromium);
    if (access(chromium, X_OK) != 0)
        return;
    struct srv B;
    int page_port = free_port();
    static char origins[64];
    snprintf(origins, sizeof origins, "CORS_ORIGINS=http://127.0.0.1:%d", page_port);
    const char *env[] = {"ENABLE_CORS=true", origins, "API_KEY=pagekey", NULL};
    char flags[PATH_MAX + 32];
    snprintf(flags, sizeof flags, "-m '%s' -c 128", g_model);
    if (start(&B, env, flags) < 0) {
        CHECK(0, "server B did not start");
        return;
    }
    char dir[PATH_MAX + 16], path[PATH_MAX + 32], cmd[PATH_MAX * 3];
    snprintf(dir, sizeof dir, "%s/page", g_tmp);
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/index.html", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, page_fmt, B.port);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "exec python3 -m http.server %d --bind 127.0.0.1 --directory %s "
             "> %s/page.log 2>&1",
             page_port, dir, g_tmp);
    pid_t web = spawn(cmd);
    char *log = NULL;
    for (int i = 0; i < 50; i++, usleep(100000)) { /* the page server is up */
        free(log);
        log =
            sh("curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/index.html", page_port);
        if (!strcmp(log, "200"))
            break;
    }
    CHECK(log && !strcmp(log, "200"), "the page server did not start: %s", log);
    free(log);
    snprintf(cmd, sizeof cmd,
             "exec %s --headless --no-sandbox --disable-gpu "
             "--user-data-dir=%s/chromium http://127.0.0.1:%d/index.html > %s/chromium.log 2>&1",
             chromium, g_tmp, page_port, g_tmp);
    pid_t br = spawn(cmd);
    log = NULL;
    for (int i = 0; i < 300 && !has(log, "GET /done?"); i++, usleep(100000)) {
        free(log);
        log = sh("cat %s/page.log", g_tmp);
    }
    end_group(br);
    end_group(web);
    const char *d = log ? strstr(log, "GET /done?") : NULL;
    char *res = d ? url_decode(d + 10, strcspn(d + 10, " ")) : NULL;
    CHECK(res && has(res, "RESULT status=200") && has(res, "done=true") && !has(res, "chunks=0") &&
              !has(res, "len=0"),
          "the browser streamed the reply: %s (page server log: %.500s)", res ? res : "no report",
          log);
    free(res), free(log);
    CHECK(stop(&B) == 0, "server B exit status");
}

#define FFFD "\xef\xbf\xbd"

/* Valid text passes as it is; each byte that starts no valid character (overlong, surrogate,
 * stray continuation, a character cut off at the end) becomes one U+FFFD. */
static void test_utf8_helpers(void)
{
    char *ok = strdup("a\xc3\xa9\xe2\x82\xac\xf0\x9f\xa6\x99");
    char *s = srv_utf8_scrub(ok);
    CHECK(s == ok, "valid text was copied");
    free(s);
    s = srv_utf8_scrub(strdup("x\xc0\xaf"
                              "y\xed\xa0\x80"
                              "z\x80"
                              "w\xe2\x82"));
    CHECK(s && !strcmp(s, "x" FFFD FFFD "y" FFFD FFFD FFFD "z" FFFD "w" FFFD FFFD), "scrub: %s",
          s ? s : "(null)");
    free(s);
    char *q = srv_json_quote("a\"\\\n\x01\xff"
                             "b\xe2\x82\xac",
                             10);
    CHECK(q && !strcmp(q, "\"a\\\"\\\\\\n\\u0001" FFFD "b\xe2\x82\xac\""), "quote: %s",
          q ? q : "(null)");
    free(q);
}

static void test_stop_a(void)
{
    CHECK(stop(&A) == 0, "server A exit status");
}

int main(int argc, char **argv)
{
    snprintf(g_argv0, sizeof g_argv0, "%s", argv[0]);
    RUN(test_utf8_helpers);
    RUN(test_setup);
    if (!g_ready)
        TEST_END();
    RUN(test_embed_shape_deterministic);
    RUN(test_embed_batch_equals_alone);
    RUN(test_embed_tokens_and_base64);
    RUN(test_embed_dimensions);
    RUN(test_embed_errors);
    RUN(test_embed_beside_chat);
    RUN(test_model_field);
    RUN(test_models_get);
    RUN(test_health);
    RUN(test_health_states);
    RUN(test_embed_cannot);
    RUN(test_stop_a);
    RUN(test_cors_preflight);
    RUN(test_cors_browser);
    free(sh("rm -rf %s", g_tmp));
    TEST_END();
}
