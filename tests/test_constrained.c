/*
 * test_constrained.c: constrained decoding end to end on the random-weight fixtures, driven
 * through the public API (exsa_model_load, exsa_engine_create, exsa_decode) with the sampler's
 * mask hook (gen.c, tokmask.c): at temperature 1, 20 seeds each, a response_format json_schema
 * reply must parse and validate against its schema (tests/schema-check.h is the oracle), and a
 * named tool_choice reply must be exactly one LFM2 call of that function (toolcall.c parses it)
 * whose arguments validate against its parameters; every reply must end by itself (an
 * end-of-generation token), not by running out of tokens. Three seeds also run on the
 * synthetic 65,536-token `demo` model, and one greedy reply must still follow the schema.
 */
#include <string.h>
#include <unistd.h>

#include "chat.h"
#include "exsa.h"
#include "gen.h"
#include "harness.h"
#include "jsonschema.h"
#include "schema-check.h"
#include "strbuf.h"
#include "synth.h"
#include "tokenizer.h"
#include "tokmask.h"
#include "toolcall.h"

static const char schema[] =
    "{\"type\": \"object\", \"properties\": {"
    "\"name\": {\"type\": \"string\", \"maxLength\": 12}, "
    "\"age\": {\"type\": \"integer\"}, "
    "\"score\": {\"type\": \"number\"}, "
    "\"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\", \"maxLength\": 6}, "
    "\"maxItems\": 3}, "
    "\"kind\": {\"enum\": [\"cat\", \"dog\", null, 3]}, "
    "\"ok\": {\"type\": \"boolean\"}, "
    "\"nested\": {\"type\": \"object\", \"properties\": {\"x\": {\"anyOf\": [{\"type\": \"null\"}, "
    "{\"type\": \"string\", \"maxLength\": 4}]}}, \"required\": [\"x\"], "
    "\"additionalProperties\": false}}, "
    "\"required\": [\"name\", \"age\", \"kind\", \"nested\"], \"additionalProperties\": false}";

static const char params[] =
    "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"maxLength\": 10}, "
    "\"days\": {\"type\": \"integer\"}, \"unit\": {\"enum\": [\"c\", \"f\"]}, \"alerts\": "
    "{\"type\": \"boolean\"}}, \"required\": [\"city\", \"unit\"], \"additionalProperties\": "
    "false}";

struct rig {
    struct exsa_model *m;
    struct exsa_engine *e;
    struct tm_vocab *v;
    float *logits;
};

static int rig_open(struct rig *r, const char *path)
{
    char err[256];
    memset(r, 0, sizeof *r);
    struct exsa_engine_params ep;
    exsa_engine_params_default(&ep);
    ep.backend = EXSA_BACKEND_CPU;
    ep.n_ctx = 2048;
    ep.n_threads = 1; /* tiny models: a second thread only spins */
    if (exsa_model_load(path, &r->m, err, sizeof err) ||
        exsa_engine_create(r->m, &ep, &r->e, err, sizeof err) ||
        tm_vocab_new(tok_of_model(r->m), exsa_model_info(r->m)->vocab_size, &r->v) ||
        !(r->logits = malloc(sizeof *r->logits * (size_t)exsa_model_info(r->m)->vocab_size))) {
        fprintf(stderr, "  %s: %s\n", path, err);
        return -1;
    }
    return 0;
}

static void rig_close(struct rig *r)
{
    free(r->logits);
    tm_vocab_free(r->v);
    exsa_engine_free(r->e);
    exsa_model_free(r->m);
}

/* Prefills the prompt into seq; returns 0 or the decode error. */
static int prefill(struct rig *r, int seq, const int32_t *ids, int n)
{
    int32_t pos[4096], sq[4096];
    for (int i = 0; i < n && i < 4096; i++)
        pos[i] = i, sq[i] = seq;
    struct exsa_batch b = {n, ids, pos, sq, NULL, NULL};
    return n > 4096 ? EXSA_ERANGE : exsa_decode(r->e, &b, r->logits);
}

/* One reply to the chat under grammar g (temperature, seed); the text in out. */
static enum gen_finish reply(struct rig *r, const struct exsa_chat_msg *msgs, int n_msgs,
                             const char *tools, const struct grammar *g, float temp, uint64_t seed,
                             struct sb *out)
{
    int32_t *ids = NULL;
    int n = 0, seq = exsa_seq_new(r->e);
    struct tm_mask *mask = NULL;
    struct gen *gen = NULL;
    struct gen_params gp;
    gen_params_default(&gp);
    gp.sp = (struct exsa_sampling_params){
        .temperature = temp, .top_p = 1, .repeat_penalty = 1, .penalty_last_n = 0, .seed = seed};
    gp.max_tokens = 1000;
    if (seq < 0 ||
        chat_tokenize(chat_of_model(r->m), tok_of_model(r->m), msgs, n_msgs, tools, true, &ids,
                      &n) ||
        tm_mask_new(r->v, g, &mask) || prefill(r, seq, ids, n))
        goto done;
    gp.mask = tm_sampler_mask(mask);
    if (gen_create(tok_of_model(r->m), exsa_model_info(r->m)->vocab_size, &gp, &gen))
        goto done;
    for (int32_t pos = n;; pos++) {
        const char *t;
        size_t len;
        int32_t tok = gen_next(gen, r->logits, &t, &len);
        sb_put(out, t, len);
        if (gen_finished(gen) != GEN_RUNNING)
            break;
        struct exsa_batch b = {1, &tok, &pos, &seq, NULL, NULL};
        if (exsa_decode(r->e, &b, r->logits))
            break;
    }
    const char *t;
    size_t len;
    gen_flush(gen, &t, &len);
    sb_put(out, t, len);
done:;
    enum gen_finish f = gen ? gen_finished(gen) : GEN_RUNNING;
    gen_free(gen);
    tm_mask_free(mask);
    free(ids);
    if (seq >= 0)
        exsa_seq_free(r->e, seq);
    return f;
}

static const char *const models[] = {"lfm2-tiny-Q4_K_M.gguf", "lfm2-tiny-F32.gguf",
                                     "lfm2moe-tiny-Q8_0.gguf"};

static int open_fixture(struct rig *r, int k)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", fixtures_dir(), models[k]);
    return rig_open(r, path);
}

/* n seeds of a json_schema reply on r; returns how many parsed, validated and ended. */
static int schema_replies(struct rig *r, int first_seed, int n, const struct grammar *g)
{
    struct exsa_chat_msg msgs[] = {{"system", "Answer in JSON.", NULL, NULL},
                                   {"user", "Describe a pet.", NULL, NULL}};
    int good = 0;
    for (int s = first_seed; s < first_seed + n; s++) {
        struct sb out = {0};
        enum gen_finish f = reply(r, msgs, 2, NULL, g, 1.0f, (uint64_t)s, &out);
        const char *txt = out.s ? out.s : "";
        bool ok = f == GEN_EOG && sc_check(txt, schema);
        CHECK(ok, "seed %d: finish %d, reply does not validate: %s", s, (int)f, txt);
        good += ok;
        sb_free(&out);
    }
    return good;
}

static void test_json_schema(void)
{
    char err[256];
    struct grammar *g = NULL;
    char rf[2048];
    snprintf(rf, sizeof rf,
             "{\"type\": \"json_schema\", \"json_schema\": {\"name\": \"pet\", "
             "\"strict\": true, \"schema\": %s}}",
             schema);
    CHECK(js_response_format(rf, &g, err, sizeof err) == 0, "compile: %s", err);
    int good = 0;
    for (int k = 0; g && k < 3; k++) {
        struct rig r;
        if (open_fixture(&r, k) == 0)
            good += schema_replies(&r, k * 7, k < 2 ? 7 : 6, g);
        rig_close(&r);
    }
    CHECK(good == 20, "%d of 20 replies valid", good);
    js_free(g);
}

static void test_named_tool(void)
{
    char tools[1024], err[256];
    snprintf(tools, sizeof tools,
             "[{\"type\": \"function\", \"function\": {\"name\": "
             "\"get_weather\", \"parameters\": %s}}, {\"type\": \"function\", "
             "\"function\": {\"name\": \"other\"}}]",
             params);
    struct exsa_chat_msg msgs[] = {{"user", "Weather in Paris?", NULL, NULL}};
    int good = 0;
    for (int k = 0; k < 3; k++) {
        struct rig r;
        struct grammar *g = NULL;
        int rc = open_fixture(&r, k);
        int32_t a = rc ? -1 : tok_find(tok_of_model(r.m), TC_START),
                b = rc ? -1 : tok_find(tok_of_model(r.m), TC_END);
        CHECK(!rc && js_tool_choice(tools,
                                    "{\"type\": \"function\", \"function\": {\"name\": "
                                    "\"get_weather\"}}",
                                    a, b, 1, &g, err, sizeof err) == 0,
              "compile: %s", err);
        for (int s = k * 7; g && s < k * 7 + (k < 2 ? 7 : 6); s++) {
            struct sb out = {0};
            struct tc_result res;
            enum gen_finish f = reply(&r, msgs, 1, tools, g, 1.0f, (uint64_t)s + 100, &out);
            const char *txt = out.s ? out.s : "";
            bool ok = f == GEN_EOG && tc_parse(txt, out.len, NULL, &res) == 0;
            ok = ok && res.n_calls == 1 && !strcmp(res.calls[0].name, "get_weather") &&
                 res.content_len == 0 && sc_check(res.calls[0].arguments, params);
            CHECK(ok, "seed %d: finish %d, not one valid get_weather call: %s", s, (int)f, txt);
            good += ok;
            if (f == GEN_EOG)
                tc_result_free(&res);
            sb_free(&out);
        }
        js_free(g);
        rig_close(&r);
    }
    CHECK(good == 20, "%d of 20 calls valid", good);
}

/* The 65,536-token vocabulary: three sampled replies and a greedy one. */
static void test_full_vocab(void)
{
    char path[128], err[256];
    snprintf(path, sizeof path, "/tmp/exsa-test-constrained-%d.gguf", (int)getpid());
    int rc =
        synth_write(path, synth_find_preset("demo"), synth_find_ftype("Q8_0"), 7, err, sizeof err);
    CHECK(rc == 0, "synth: %s", err);
    struct rig r = {0};
    struct grammar *g = NULL;
    if (!rc && rig_open(&r, path) == 0 && js_schema(schema, &g, err, sizeof err) == 0) {
        CHECK(schema_replies(&r, 500, 3, g) == 3, "sampled replies on the 65k vocabulary");
        struct exsa_chat_msg msgs[] = {{"user", "Describe a pet.", NULL, NULL}};
        struct sb out = {0};
        enum gen_finish f = reply(&r, msgs, 1, NULL, g, 0.0f, 1, &out);
        CHECK(f == GEN_EOG && sc_check(out.s ? out.s : "", schema), "greedy: %s",
              out.s ? out.s : "");
        sb_free(&out);
    }
    js_free(g);
    rig_close(&r);
    unlink(path);
}

int main(void)
{
    RUN(test_json_schema);
    RUN(test_named_tool);
    RUN(test_full_vocab);
    TEST_END();
}
