/*
 * test_tokmask.c: src/tokmask.c against brute force. Along seeded random walks through several
 * grammars (schemas with strings of bounded length, enums, anyOf, json_object, a tool call),
 * the mask at every step must equal the set found by feeding every token of the vocabulary
 * through the grammar on its own (bytes one by one, special tokens as tokens, end-of-generation
 * where the value may end): on the tiny fixture's 1,024-token vocabulary and on the synthetic
 * 65,536-token one (`demo` preset, written to /tmp). The walk ends with an end-of-generation
 * token, so every walk is also a complete value.
 */
#include <string.h>
#include <unistd.h>

#include "exsa.h"
#include "grammar.h"
#include "harness.h"
#include "jsonschema.h"
#include "synth.h"
#include "tokenizer.h"
#include "tokmask.h"

static const char *const schemas[] = {
    "{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\", \"maxLength\": 5}, "
    "\"n\": {\"type\": \"integer\"}, \"tags\": {\"type\": \"array\", \"items\": {\"type\": "
    "\"string\", \"minLength\": 1, \"maxLength\": 20}, \"maxItems\": 2}}, \"required\": "
    "[\"name\"], \"additionalProperties\": false}",
    "{\"anyOf\": [{\"enum\": [\"alpha\", \"beta\", 12, true]}, {\"type\": \"array\", \"items\": "
    "{\"type\": \"number\"}, \"maxItems\": 3}, {\"type\": \"string\", \"maxLength\": 30}]}",
    /* two strings at once: the plain-string shortcut over several threads */
    "{\"anyOf\": [{\"type\": \"string\", \"maxLength\": 3}, {\"type\": \"string\", "
    "\"minLength\": 2, \"maxLength\": 25}]}",
};

/* The brute-force set: each token fed alone. */
static void brute(const struct grammar *g, const struct gr_state *s, const struct tokenizer *tok,
                  int nv, uint64_t *bits)
{
    static struct gr_state a, b;
    memset(bits, 0, sizeof *bits * (size_t)((nv + 63) / 64));
    bool any = false, end = gr_step(g, s, GR_END, &a) == 1;
    for (int32_t id = 0; id < nv; id++) {
        const char *p;
        size_t n;
        bool ok;
        if (tok_is_eog(tok, id))
            continue;
        if (tok_is_control(tok, id)) {
            ok = gr_step(g, s, GR_TOKEN_INPUT(id), &a) > 0;
        } else {
            ok = tok_piece(tok, id, false, &p, &n) == 0 && n > 0;
            gr_copy(&a, s);
            for (size_t i = 0; ok && i < n; i++) {
                ok = gr_step(g, &a, (unsigned char)p[i], &b) > 0;
                gr_copy(&a, &b);
            }
        }
        if (ok)
            bits[id >> 6] |= 1ull << (id & 63), any = true;
    }
    for (int32_t id = 0; id < nv; id++)
        if (tok_is_eog(tok, id) && (end || !any))
            bits[id >> 6] |= 1ull << (id & 63);
}

static uint64_t rng_next(uint64_t *x)
{
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    return *x;
}

/* A random allowed token; after 40 steps the walk heads for the end: an end-of-generation
 * token if allowed, else a token that closes something (holds one of " } ] ) or a special
 * token), else any. */
static int32_t pick(const uint64_t *bits, int nv, const struct tokenizer *tok, int step,
                    uint64_t *rng)
{
    static int32_t c[65536], close[65536];
    int n = 0, nc = 0;
    for (int32_t id = 0; id < nv; id++) {
        if (!(bits[id >> 6] >> (id & 63) & 1))
            continue;
        if (step > 40 && tok_is_eog(tok, id))
            return id;
        const char *p;
        size_t len;
        c[n++] = id;
        bool closes = tok_is_control(tok, id);
        for (size_t i = 0; !closes && tok_piece(tok, id, false, &p, &len) == 0 && i < len; i++)
            closes = memchr("\"}])", p[i], 4) != NULL;
        if (closes)
            close[nc++] = id;
    }
    if (step > 40 && nc)
        return close[rng_next(rng) % (uint64_t)nc];
    return n ? c[rng_next(rng) % (uint64_t)n] : -1;
}

/* Walks g with random allowed tokens, comparing the mask with brute force at every step. */
static int walk(const struct grammar *g, const struct tm_vocab *v, const struct tokenizer *tok,
                int nv, uint64_t seed, int every, const char *what)
{
    struct tm_mask *m = NULL;
    CHECK(tm_mask_new(v, g, &m) == 0, "%s: mask", what);
    if (!m)
        return -1;
    static uint64_t want[1024];
    static struct gr_state cur, nxt;
    gr_start(g, &cur);
    uint64_t rng = seed * 2654435761u + 1;
    int steps = 0, bad = 0;
    for (; steps < 200 && !tm_done(m); steps++) {
        const uint64_t *got = tm_allowed(m);
        if (steps % every == 0)
            brute(g, &cur, tok, nv, want);
        if (steps % every == 0 && memcmp(got, want, sizeof *want * (size_t)((nv + 63) / 64)) &&
            !bad++) {
            for (int32_t id = 0; id < nv; id++)
                if ((got[id >> 6] ^ want[id >> 6]) >> (id & 63) & 1)
                    CHECK(0, "%s seed %llu step %d: token %d mask %d brute %d", what,
                          (unsigned long long)seed, steps, id, (int)(got[id >> 6] >> (id & 63) & 1),
                          (int)(want[id >> 6] >> (id & 63) & 1));
        }
        int32_t t = pick(got, nv, tok, steps, &rng);
        CHECK(t >= 0 && tm_accept(m, t) == 0, "%s: accept %d", what, t);
        if (t < 0 || tok_is_eog(tok, t))
            continue;
        const char *p;
        size_t n;
        if (tok_is_control(tok, t)) {
            gr_step(g, &cur, GR_TOKEN_INPUT(t), &nxt);
            gr_copy(&cur, &nxt);
        } else if (tok_piece(tok, t, false, &p, &n) == 0) {
            for (size_t i = 0; i < n; i++) {
                gr_step(g, &cur, (unsigned char)p[i], &nxt);
                gr_copy(&cur, &nxt);
            }
        }
    }
    CHECK(tm_done(m), "%s seed %llu: ended with an end-of-generation token", what,
          (unsigned long long)seed);
    CHECK(bad == 0, "%s seed %llu: %d steps differ", what, (unsigned long long)seed, bad);
    tm_mask_free(m);
    return steps;
}

/* seeds walks per grammar, brute force at every `every`-th step. */
static void run_vocab(const struct tokenizer *tok, int nv, int seeds, int every, const char *what)
{
    struct tm_vocab *v = NULL;
    CHECK(tm_vocab_new(tok, nv, &v) == 0, "%s: vocab", what);
    if (!v)
        return;
    char err[256];
    for (int k = 0; k < 4; k++) {
        struct grammar *g = NULL;
        int rc = k < 3 ? js_schema(schemas[k], &g, err, sizeof err)
                       : js_response_format("{\"type\": \"json_object\"}", &g, err, sizeof err);
        CHECK(rc == 0, "%s: schema %d: %s", what, k, err);
        for (int s = 0; g && s < seeds; s++)
            walk(g, v, tok, nv, (uint64_t)(s + 1) * 7919 + (uint64_t)k, every, what);
        js_free(g);
    }
    int32_t a = tok_find(tok, "<|tool_call_start|>"), b = tok_find(tok, "<|tool_call_end|>");
    struct grammar *g = NULL;
    CHECK(
        js_tool_choice("[{\"name\": \"f\", \"parameters\": {\"type\": \"object\", \"properties\": "
                       "{\"s\": {\"type\": \"string\", \"maxLength\": 8}, \"b\": {\"type\": "
                       "\"boolean\"}}, \"required\": [\"s\"], \"additionalProperties\": false}}, "
                       "{\"name\": \"g.h\"}]",
                       "\"required\"", a, b, 2, &g, err, sizeof err) == 0,
        "%s: tools %s", what, err);
    for (int s = 0; g && s < seeds; s++)
        walk(g, v, tok, nv, (uint64_t)s + 100, every, what);
    js_free(g);
    tm_vocab_free(v);
}

static void test_tiny_vocab(void)
{
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/lfm2-tiny-F32.gguf", fixtures_dir());
    struct exsa_model *m = NULL;
    CHECK(exsa_model_load(path, &m, err, sizeof err) == 0, "load: %s", err);
    if (m)
        run_vocab(tok_of_model(m), exsa_model_info(m)->vocab_size, 6, 1, "tiny");
    exsa_model_free(m);
}

static void test_synthetic_vocab(void)
{
    char path[128], err[256];
    snprintf(path, sizeof path, "/tmp/exsa-test-tokmask-%d.gguf", (int)getpid());
    int rc =
        synth_write(path, synth_find_preset("demo"), synth_find_ftype("Q8_0"), 1, err, sizeof err);
    CHECK(rc == 0, "synth: %s", err);
    struct exsa_model *m = NULL;
    CHECK(rc || exsa_model_load(path, &m, err, sizeof err) == 0, "load: %s", err);
    unlink(path);
    if (m)
        run_vocab(tok_of_model(m), exsa_model_info(m)->vocab_size, 2, 1, "65k");
    exsa_model_free(m);
}

/* A token outside the mask is refused and changes nothing. */
static void test_refuse(void)
{
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/lfm2-tiny-F32.gguf", fixtures_dir());
    struct exsa_model *m = NULL;
    struct tm_vocab *v = NULL;
    struct tm_mask *k = NULL;
    struct grammar *g = NULL;
    CHECK(exsa_model_load(path, &m, err, sizeof err) == 0, "load");
    if (!m)
        return;
    CHECK(tm_vocab_new(tok_of_model(m), exsa_model_info(m)->vocab_size, &v) == 0 &&
              js_schema("{\"type\": \"boolean\"}", &g, err, sizeof err) == 0 &&
              tm_mask_new(v, g, &k) == 0,
          "setup");
    int32_t a = -1, t = -1, eos = tok_eos(tok_of_model(m));
    for (int32_t id = 0; id < exsa_model_info(m)->vocab_size; id++) {
        const char *p;
        size_t n;
        if (tok_is_control(tok_of_model(m), id) || tok_piece(tok_of_model(m), id, false, &p, &n) ||
            n != 1)
            continue;
        if (*p == 'a')
            a = id;
        if (*p == 't')
            t = id;
    }
    const uint64_t *bits = k ? tm_allowed(k) : NULL;
    CHECK(bits && !(bits[eos >> 6] >> (eos & 63) & 1), "no end before a value");
    CHECK(k && tm_accept(k, a) == EXSA_EINVAL && tm_accept(k, eos) == EXSA_EINVAL, "refused");
    CHECK(k && tm_accept(k, t) == 0, "t of true");
    tm_mask_free(k);
    js_free(g);
    tm_vocab_free(v);
    exsa_model_free(m);
}

int main(void)
{
    RUN(test_tiny_vocab);
    RUN(test_synthetic_vocab);
    RUN(test_refuse);
    TEST_END();
}
