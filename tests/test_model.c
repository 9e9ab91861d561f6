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
#include "gguf-write.h"
#include "gguf.h"
#include "harness.h"

struct prompt {
    int n_tok, n_pos, row_offset;
    int32_t *tok, *pos, greedy[32];
};

struct ref {
    int n_vocab, n_prompts;
    struct prompt p[8];
    float *logits; /* all rows */
};

static char *read_file(const char *path, size_t *size)
{
    return read_whole_file(path, size);
}

static int32_t *int_array(const cJSON *a, int *n)
{
    *n = cJSON_GetArraySize(a);
    int32_t *v = malloc(sizeof(int32_t) * (size_t)(*n + 1));
    for (int i = 0; i < *n; i++)
        v[i] = (int32_t)cJSON_GetArrayItem(a, i)->valuedouble;
    return v;
}

static int load_ref(const char *name, struct ref *r)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.ref.json", fixtures_dir(), name);
    char *txt = read_file(path, NULL);
    cJSON *j = txt ? cJSON_Parse(txt) : NULL;
    free(txt);
    if (!j)
        return -1;
    memset(r, 0, sizeof(*r));
    r->n_vocab = cJSON_GetObjectItem(j, "n_vocab")->valueint;
    const cJSON *ps = cJSON_GetObjectItem(j, "prompts");
    r->n_prompts = cJSON_GetArraySize(ps);
    for (int i = 0; i < r->n_prompts && i < 8; i++) {
        const cJSON *p = cJSON_GetArrayItem(ps, i);
        struct prompt *q = &r->p[i];
        q->tok = int_array(cJSON_GetObjectItem(p, "tokens"), &q->n_tok);
        q->pos = int_array(cJSON_GetObjectItem(p, "positions"), &q->n_pos);
        q->row_offset = cJSON_GetObjectItem(p, "row_offset")->valueint;
        int ng;
        int32_t *g = int_array(cJSON_GetObjectItem(p, "greedy_reference_engine"), &ng);
        memcpy(q->greedy, g, sizeof(int32_t) * (ng < 32 ? ng : 32));
        free(g);
    }
    cJSON_Delete(j);
    snprintf(path, sizeof(path), "%s/%s.logits", fixtures_dir(), name);
    r->logits = (float *)read_file(path, NULL);
    return r->logits ? 0 : -1;
}

static void free_ref(struct ref *r)
{
    for (int i = 0; i < r->n_prompts; i++) {
        free(r->p[i].tok);
        free(r->p[i].pos);
    }
    free(r->logits);
}

static struct exsa_model *load_model(const char *name)
{
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/%s.gguf", fixtures_dir(), name);
    struct exsa_model *m = NULL;
    int rc = exsa_model_load(path, &m, err, sizeof(err));
    CHECK(rc == 0, "%s: %s", name, err);
    return m;
}

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

/* Feeds prompt q of one new sequence in chunks of `chunk`, collecting the logits of the
 * positions the fixture stores into out (n_pos rows). Returns the sequence id. */
static int run_prompt(struct exsa_engine *e, const struct prompt *q, int chunk, int n_vocab,
                      float *out)
{
    int seq = exsa_seq_new(e);
    int32_t pos[1024], sq[1024];
    uint8_t want[1024];
    float *buf = malloc(sizeof(float) * (size_t)n_vocab * 1024);
    int k = 0;
    for (int i = 0; i < q->n_tok; i += chunk) {
        int n = q->n_tok - i < chunk ? q->n_tok - i : chunk, n_want = 0;
        for (int j = 0; j < n; j++) {
            pos[j] = i + j, sq[j] = seq;
            want[j] = k + n_want < q->n_pos && q->pos[k + n_want] == i + j;
            n_want += want[j];
        }
        struct exsa_batch b = {n, q->tok + i, pos, sq, want};
        int rc = exsa_decode(e, &b, buf);
        CHECK(rc == 0, "decode rc %d", rc);
        memcpy(out + (size_t)k * n_vocab, buf, sizeof(float) * (size_t)n_want * n_vocab);
        k += n_want;
    }
    free(buf);
    return seq;
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* rel = ||a - b|| / ||b|| over n_rows rows; *agree = rows whose argmax matches. */
static double rel_err(const float *a, const float *b, int n_rows, int n_vocab, int *agree)
{
    double num = 0, den = 0;
    *agree = 0;
    for (int r = 0; r < n_rows; r++) {
        const float *x = a + (size_t)r * n_vocab, *y = b + (size_t)r * n_vocab;
        for (int i = 0; i < n_vocab; i++) {
            num += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
            den += (double)y[i] * y[i];
        }
        *agree += argmax(x, n_vocab) == argmax(y, n_vocab);
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static const char *FIXTURES[] = {
    "lfm2-tiny-F32",    "lfm2-tiny-F16",     "lfm2-tiny-BF16",   "lfm2-tiny-Q8_0",
    "lfm2-tiny-Q4_0",   "lfm2-tiny-Q4_1",    "lfm2-tiny-Q5_0",   "lfm2-tiny-Q5_1",
    "lfm2-tiny-Q4_K_M", "lfm2-tiny-Q5_K_M",  "lfm2-tiny-Q6_K",   "lfm2-tiny-Q3_K_M",
    "lfm2-tiny-Q2_K",   "lfm2-tiny-IQ4_NL",  "lfm2-tiny-IQ4_XS", "lfm2moe-tiny-F16",
    "lfm2moe-tiny-Q8_0", "lfm2moe-tiny-Q4_K_M",
};
#define N_FIXTURES (int)(sizeof(FIXTURES) / sizeof(FIXTURES[0]))

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
    float *logits = malloc(sizeof(float) * (size_t)r.n_vocab * 1024);
    for (int i = 0; e && i < r.n_prompts; i++) {
        const struct prompt *q = &r.p[i];
        int seq = exsa_seq_new(e);
        int32_t pos[1024], sq[1024];
        for (int j = 0; j < q->n_tok; j++)
            pos[j] = j, sq[j] = seq;
        struct exsa_batch b = {q->n_tok, q->tok, pos, sq, NULL};
        CHECK(exsa_decode(e, &b, logits) == 0, "prefill");
        int ok = 0;
        for (int t = 0; t < 32; t++) {
            int32_t tok = argmax(logits, r.n_vocab), p = q->n_tok + t;
            if (tok != q->greedy[t])
                break;
            ok++;
            struct exsa_batch d = {1, &tok, &p, &seq, NULL};
            CHECK(exsa_decode(e, &d, logits) == 0, "decode");
        }
        CHECK(ok == 32, "prompt %d: greedy tokens agree for %d of 32", i, ok);
        exsa_seq_free(e, seq);
    }
    free(logits);
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
    struct exsa_batch bb = {n, tok, pos, seq, want};
    CHECK(e && exsa_decode(e, &bb, both) == 0, "interleaved decode");
    float *ra = malloc(sizeof(float) * V * a->n_tok), *rb = malloc(sizeof(float) * V * b->n_tok);
    for (int i = 0, ka = 0, kb = 0; i < n; i++)
        memcpy(seq[i] == sa ? ra + (size_t)ka++ * V : rb + (size_t)kb++ * V,
               both + (size_t)i * V, sizeof(float) * V);
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
