/*
 * fixture-util.h: what the model tests share: the fixtures' expected outputs (NAME.ref.json
 * prompts with their token ids, stored positions and greedy tokens; NAME.logits rows), loading
 * a fixture model, feeding a prompt in chunks while collecting the stored positions' logits,
 * and the relative-error / argmax comparison of ../shared/fixtures/README.md. Header-only
 * (each test is one translation unit).
 */
#ifndef EXSA_FIXTURE_UTIL_H
#define EXSA_FIXTURE_UTIL_H

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exsa.h"
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
    char *txt = read_whole_file(path, NULL);
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
    r->logits = (float *)read_whole_file(path, NULL);
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
        struct exsa_batch b = {n, q->tok + i, pos, sq, want, NULL};
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
    "lfm2-tiny-F32",     "lfm2-tiny-F16",       "lfm2-tiny-BF16",   "lfm2-tiny-Q8_0",
    "lfm2-tiny-Q4_0",    "lfm2-tiny-Q4_1",      "lfm2-tiny-Q5_0",   "lfm2-tiny-Q5_1",
    "lfm2-tiny-Q4_K_M",  "lfm2-tiny-Q5_K_M",    "lfm2-tiny-Q6_K",   "lfm2-tiny-Q3_K_M",
    "lfm2-tiny-Q2_K",    "lfm2-tiny-IQ4_NL",    "lfm2-tiny-IQ4_XS", "lfm2moe-tiny-F16",
    "lfm2moe-tiny-Q8_0", "lfm2moe-tiny-Q4_K_M",
};
#define N_FIXTURES (int)(sizeof(FIXTURES) / sizeof(FIXTURES[0]))

/* Greedy continuation of every prompt of r on e equals the reference engine's 32 tokens. */
static void check_greedy(struct exsa_engine *e, const struct ref *r)
{
    float *logits = malloc(sizeof(float) * (size_t)r->n_vocab);
    for (int i = 0; e && i < r->n_prompts; i++) {
        const struct prompt *q = &r->p[i];
        int seq = exsa_seq_new(e);
        int32_t pos[1024], sq[1024];
        for (int j = 0; j < q->n_tok; j++)
            pos[j] = j, sq[j] = seq;
        struct exsa_batch b = {q->n_tok, q->tok, pos, sq, NULL, NULL};
        CHECK(exsa_decode(e, &b, logits) == 0, "prefill");
        int ok = 0;
        for (int t = 0; t < 32; t++) {
            int32_t tok = argmax(logits, r->n_vocab), p = q->n_tok + t;
            if (tok != q->greedy[t])
                break;
            ok++;
            struct exsa_batch d = {1, &tok, &p, &seq, NULL, NULL};
            CHECK(exsa_decode(e, &d, logits) == 0, "decode");
        }
        CHECK(ok == 32, "prompt %d: greedy tokens agree for %d of 32", i, ok);
        exsa_seq_free(e, seq);
    }
    free(logits);
}

#endif
