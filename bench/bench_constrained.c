/*
 * bench_constrained.c: decode speed with and without constrained decoding, through the public
 * API (exsa_model_load, exsa_engine_create, exsa_decode) and the sampler's mask hook: the same
 * prompt, temperature 1, N decode steps unconstrained, then N under each of three grammars (a
 * long string field: mostly the in-string fast path; a list of integers: the trie walk at every
 * token; json_object). A constrained reply that completes early is started again, so each line
 * counts N decode steps, taken in 4 rounds that alternate between the lines (a shared machine's
 * load then weighs on all alike). Prints tokens/s and the mask's own time per token. Not built by
 * `make test`. Build and run (from the repo root, after `make`):
 *   cc -std=c11 -D_GNU_SOURCE -O2 -Iinclude -Isrc bench/bench_constrained.c build/libexsa.a \
 *      -lmicrohttpd -lcjson -lpcre2-8 -lpthread -lm -o build/bench_constrained
 *   build/exsa synth --preset lfm2-1.2b --type Q4_K_M -o /tmp/x.gguf
 *   build/bench_constrained /tmp/x.gguf [threads=2] [tokens=128]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench-util.h"
#include "chat.h"
#include "exsa.h"
#include "gen.h"
#include "jsonschema.h"
#include "tokenizer.h"
#include "tokmask.h"

#define ROUNDS 4

/* The mask hook, timed. */
struct timed {
    struct sampler_mask inner;
    double seconds;
};

static void timed_apply(void *ctx, float *logits, int n)
{
    struct timed *t = ctx;
    double t0 = now();
    t->inner.apply(t->inner.ctx, logits, n);
    t->seconds += now() - t0;
}

static void timed_accept(void *ctx, int32_t tok)
{
    struct timed *t = ctx;
    double t0 = now();
    t->inner.accept(t->inner.ctx, tok);
    t->seconds += now() - t0;
}

struct run {
    struct exsa_model *m;
    struct exsa_engine *e;
    struct tm_vocab *v;
    int32_t *prompt;
    int n_prompt;
    float *logits;
};

/* Decodes up to *left tokens of one reply (g NULL: unconstrained); returns the decode-loop
 * seconds and adds the mask's seconds to *mask_s. */
static double one_reply(struct run *r, const struct grammar *g, int *left, double *mask_s,
                        uint64_t seed)
{
    int seq = exsa_seq_new(r->e);
    int32_t *pos = malloc(sizeof *pos * (size_t)r->n_prompt),
            *sq = malloc(sizeof *sq * (size_t)r->n_prompt);
    for (int i = 0; i < r->n_prompt; i++)
        pos[i] = i, sq[i] = seq;
    struct exsa_batch b = {r->n_prompt, r->prompt, pos, sq, NULL, NULL};
    exsa_decode(r->e, &b, r->logits);
    free(pos);
    free(sq);
    struct tm_mask *mask = NULL;
    struct timed tm = {{0}, 0};
    struct gen_params gp;
    gen_params_default(&gp);
    gp.sp.temperature = 1, gp.sp.min_p = 0, gp.sp.seed = seed;
    gp.max_tokens = *left;
    gp.ignore_eog = !g;
    if (g && tm_mask_new(r->v, g, &mask) == 0) {
        tm.inner = tm_sampler_mask(mask);
        gp.mask = (struct sampler_mask){timed_apply, timed_accept, &tm};
    }
    struct gen *gen = NULL;
    gen_create(tok_of_model(r->m), exsa_model_info(r->m)->vocab_size, &gp, &gen);
    double t0 = now();
    for (int32_t p = r->n_prompt; gen; p++) {
        const char *t;
        size_t len;
        int32_t tok = gen_next(gen, r->logits, &t, &len);
        (*left)--;
        if (gen_finished(gen) != GEN_RUNNING)
            break;
        struct exsa_batch d = {1, &tok, &p, &seq, NULL, NULL};
        exsa_decode(r->e, &d, r->logits);
    }
    double dt = now() - t0;
    *mask_s += tm.seconds;
    gen_free(gen);
    tm_mask_free(mask);
    exsa_seq_free(r->e, seq);
    return dt;
}

/* Runs n decode steps under g (NULL: unconstrained); adds the seconds to *sec, *mask_s. */
static void measure(struct run *r, const struct grammar *g, int n, double *sec, double *mask_s)
{
    int left = n;
    for (uint64_t seed = 1; left > 0; seed++)
        *sec += one_reply(r, g, &left, mask_s, seed);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [threads=2] [tokens=128]\n", argv[0]);
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 2, n = argc > 3 ? atoi(argv[3]) : 128;
    char err[256];
    struct run r = {0};
    struct exsa_engine_params ep;
    exsa_engine_params_default(&ep);
    ep.backend = EXSA_BACKEND_CPU;
    ep.n_threads = threads;
    ep.n_ctx = 1024;
    struct exsa_chat_msg msgs[] = {{"user", "Describe a cat as JSON.", NULL, NULL}};
    if (exsa_model_load(argv[1], &r.m, err, sizeof err) ||
        exsa_engine_create(r.m, &ep, &r.e, err, sizeof err) ||
        chat_tokenize(chat_of_model(r.m), tok_of_model(r.m), msgs, 1, NULL, true, &r.prompt,
                      &r.n_prompt)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    double t1 = now();
    tm_vocab_new(tok_of_model(r.m), exsa_model_info(r.m)->vocab_size, &r.v);
    printf("%s: %d tokens of vocabulary, %d threads, %d decode steps per line; token index "
           "built in %.1f ms\n",
           argv[1], exsa_model_info(r.m)->vocab_size, threads, n, (now() - t1) * 1e3);
    r.logits = malloc(sizeof *r.logits * (size_t)exsa_model_info(r.m)->vocab_size);
    const char *schemas[3] = {
        "{\"type\": \"object\", \"properties\": {\"text\": {\"type\": \"string\"}}, "
        "\"required\": [\"text\"], \"additionalProperties\": false}",
        "{\"type\": \"array\", \"items\": {\"type\": \"integer\"}}", NULL};
    const char *names[3] = {"json_schema: long string", "json_schema: integer list", "json_object"};
    struct grammar *g[4] = {NULL};
    for (int k = 0; k < 3; k++) {
        int rc = schemas[k] ? js_schema(schemas[k], &g[k + 1], err, sizeof err)
                            : js_response_format("{\"type\": \"json_object\"}", &g[k + 1], err,
                                                 sizeof err);
        if (rc) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    }
    double sec[4] = {0}, mask_s[4] = {0}, warm = 0, wm = 0;
    measure(&r, NULL, 8, &warm, &wm);
    /* rounds that take turns, so a change in the machine's load hits every line alike */
    for (int round = 0; round < ROUNDS; round++)
        for (int k = 0; k < 4; k++)
            measure(&r, g[k], n / ROUNDS, &sec[k], &mask_s[k]);
    int steps = n / ROUNDS * ROUNDS;
    double base = steps / sec[0];
    printf("%-26s %8.2f tokens/s\n", "unconstrained", base);
    for (int k = 1; k < 4; k++)
        printf("%-26s %8.2f tokens/s   %6.1f%% of unconstrained   mask %.3f ms/token\n",
               names[k - 1], steps / sec[k], 100 * steps / sec[k] / base, mask_s[k] * 1e3 / steps);
    for (int k = 1; k < 4; k++)
        js_free(g[k]);
    free(r.logits);
    free(r.prompt);
    tm_vocab_free(r.v);
    exsa_engine_free(r.e);
    exsa_model_free(r.m);
    return 0;
}
