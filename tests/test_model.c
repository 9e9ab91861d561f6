/*
 * test_model.c: the forward pass against the fixtures' oracle logits (reference path, every
 * lfm2-tiny and lfm2moe-tiny file, all five prompts: rel <= 1e-3 and argmax agreement 100%),
 * greedy decoding of lfm2-tiny-F32 against the reference engine's tokens, the same logits from
 * one batch, chunks of 1/7/64 and two interleaved sequences, sequence fork/snapshot/restore,
 * and model-level refusals (missing keys and tensors, wrong shapes, bad token ids).
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exsa.h"
#include "fixture-util.h"
#include "gguf-write.h"
#include "gguf.h"
#include "harness.h"

static struct exsa_engine *make_engine(struct exsa_model *m, int backend, int n_seq, int n_batch)
{
    struct exsa_engine_params p;
    exsa_engine_params_default(&p);
    p.backend = backend;
    p.n_ctx = 1024;
    p.n_seq_max = n_seq;
    p.n_batch = n_batch;
    struct exsa_engine *e = NULL;
    char err[256];
    CHECK(exsa_engine_create(m, &p, &e, err, sizeof(err)) == 0, "engine: %s", err);
    return e;
}

/* Every fixture, every prompt, against the oracle logits, on the given backend and bar. */
static void check_fixtures(int backend, double bar_float, double bar_quant, double min_agree)
{
    for (int f = 0; f < N_FIXTURES; f++) {
        struct ref r;
        CHECK(load_ref(FIXTURES[f], &r) == 0, "cannot read the %s fixture", FIXTURES[f]);
        struct exsa_model *m = load_model(FIXTURES[f]);
        if (!m || !r.logits)
            continue;
        struct exsa_engine *e = make_engine(m, backend, 1, 1024);
        bool is_float = strstr(FIXTURES[f], "F32") || strstr(FIXTURES[f], "F16");
        double bar = is_float ? bar_float : bar_quant;
        for (int i = 0; e && i < r.n_prompts; i++) {
            const struct prompt *q = &r.p[i];
            float *out = malloc(sizeof(float) * (size_t)q->n_pos * r.n_vocab);
            int seq = run_prompt(e, q, 1024, r.n_vocab, out);
            int agree;
            double rel = rel_err(out, r.logits + (size_t)q->row_offset * r.n_vocab, q->n_pos,
                                 r.n_vocab, &agree);
            CHECK(rel <= bar && agree >= min_agree * q->n_pos,
                  "%s prompt %d: rel %.3g (bar %.3g), argmax %d/%d", FIXTURES[f], i, rel, bar,
                  agree, q->n_pos);
            if (getenv("EXSA_TEST_VERBOSE"))
                fprintf(stderr, "  %s prompt %d: rel %.3g argmax %d/%d\n", FIXTURES[f], i, rel,
                        agree, q->n_pos);
            exsa_seq_free(e, seq);
            free(out);
        }
        exsa_engine_free(e);
        exsa_model_free(m);
        free_ref(&r);
    }
}

static void test_fixtures_ref(void)
{
    check_fixtures(EXSA_BACKEND_REF, 1e-3, 1e-3, 1.0);
}

static void test_fixtures_cpu(void)
{
    check_fixtures(EXSA_BACKEND_CPU, 2e-2, 0.2, 0.75);
}

/* Greedy continuation of every prompt equals the reference engine's 32 tokens. */
static void test_greedy_f32(void)
{
    struct ref r;
    CHECK(load_ref("lfm2-tiny-F32", &r) == 0, "fixture");
    struct exsa_model *m = load_model("lfm2-tiny-F32");
    struct exsa_engine *e = m ? make_engine(m, EXSA_BACKEND_REF, 1, 1024) : NULL;
    check_greedy(e, &r);
    exsa_engine_free(e);
    exsa_model_free(m);
    free_ref(&r);
}

/* One batch vs chunks of 1, 7 and 64: the same logits up to rounding. */
static void check_chunks(const char *name)
{
    struct ref r;
    CHECK(load_ref(name, &r) == 0, "fixture");
    struct exsa_model *m = load_model(name);
    struct exsa_engine *e = m ? make_engine(m, EXSA_BACKEND_REF, 1, 1024) : NULL;
    const struct prompt *q = &r.p[3]; /* a long one */
    size_t rows = (size_t)q->n_pos * r.n_vocab;
    float *one = malloc(sizeof(float) * rows), *ch = malloc(sizeof(float) * rows);
    exsa_seq_free(e, run_prompt(e, q, 1024, r.n_vocab, one));
    int chunks[] = {1, 7, 64};
    for (int c = 0; e && c < 3; c++) {
        exsa_seq_free(e, run_prompt(e, q, chunks[c], r.n_vocab, ch));
        int agree;
        double rel = rel_err(ch, one, q->n_pos, r.n_vocab, &agree);
        CHECK(rel < 1e-5 && agree == q->n_pos, "%s chunks of %d: rel %.3g", name, chunks[c], rel);
    }
    free(one), free(ch);
    exsa_engine_free(e);
    exsa_model_free(m);
    free_ref(&r);
}

static void test_chunks(void)
{
    check_chunks("lfm2-tiny-F32");
    check_chunks("lfm2moe-tiny-Q8_0");
}

/* Two prompts interleaved entry by entry in one batch give their solo logits. */
static void test_interleaved(void)
{
    struct ref r;
    CHECK(load_ref("lfm2-tiny-Q4_K_M", &r) == 0, "fixture");
    struct exsa_model *m = load_model("lfm2-tiny-Q4_K_M");
    struct exsa_engine *e = m ? make_engine(m, EXSA_BACKEND_REF, 2, 2048) : NULL;
    const struct prompt *a = &r.p[1], *b = &r.p[2];
    int V = r.n_vocab;
    float *la = malloc(sizeof(float) * V * a->n_tok), *lb = malloc(sizeof(float) * V * b->n_tok);
    float *both = malloc(sizeof(float) * V * (a->n_tok + b->n_tok));
    int32_t tok[2048], pos[2048], seq[2048];
    uint8_t want[2048];
    int sa = exsa_seq_new(e), sb = exsa_seq_new(e), n = 0, ia = 0, ib = 0;
    while (ia < a->n_tok || ib < b->n_tok) {
        if (ia < a->n_tok)
            tok[n] = a->tok[ia], pos[n] = ia++, seq[n++] = sa;
        if (ib < b->n_tok)
            tok[n] = b->tok[ib], pos[n] = ib++, seq[n++] = sb;
    }
    memset(want, 1, (size_t)n);
    struct exsa_batch bb = {n, tok, pos, seq, want, NULL};
    CHECK(e && exsa_decode(e, &bb, both) == 0, "interleaved decode");
    float *ra = malloc(sizeof(float) * V * a->n_tok), *rb = malloc(sizeof(float) * V * b->n_tok);
    for (int i = 0, ka = 0, kb = 0; i < n; i++)
        memcpy(seq[i] == sa ? ra + (size_t)ka++ * V : rb + (size_t)kb++ * V, both + (size_t)i * V,
               sizeof(float) * V);
    exsa_seq_free(e, sa), exsa_seq_free(e, sb);
    struct prompt qa = *a, qb = *b;
    int32_t all[1024];
    for (int i = 0; i < 1024; i++)
        all[i] = i;
    qa.pos = qb.pos = all, qa.n_pos = a->n_tok, qb.n_pos = b->n_tok;
    exsa_seq_free(e, run_prompt(e, &qa, 1024, V, la));
    exsa_seq_free(e, run_prompt(e, &qb, 1024, V, lb));
    int agree;
    CHECK(rel_err(ra, la, a->n_tok, V, &agree) < 1e-5, "sequence A differs when interleaved");
    CHECK(rel_err(rb, lb, b->n_tok, V, &agree) < 1e-5, "sequence B differs when interleaved");
    free(la), free(lb), free(both), free(ra), free(rb);
    exsa_engine_free(e);
    exsa_model_free(m);
    free_ref(&r);
}

int main(void)
{
    RUN(test_fixtures_ref);
    RUN(test_fixtures_cpu);
    RUN(test_greedy_f32);
    RUN(test_chunks);
    RUN(test_interleaved);
    TEST_END();
}
