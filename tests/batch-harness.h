/*
 * batch-harness.h: batch invariance through the public API, for test_batch.c (CPU backends) and
 * tests/gpu/test_cuda.c (the GPU with exsa_engine_params.deterministic). Scripted sequences
 * (prompts, then BH_GEN decode tokens) run alone and then in groups through a scheduler like
 * sched.c's: decode tokens first, prompt chunks from what is left of a per-step budget, logits
 * for a prompt's last entry and the decode tokens, later sequences arriving a step or two apart.
 * So prompts are cut into other chunks and steps mix prefill and decode; every logit row must be
 * bit for bit the one the sequence had alone. Also one prompt fed whole and in other chunkings.
 */
#ifndef EXSA_TEST_BATCH_HARNESS_H
#define EXSA_TEST_BATCH_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exsa.h"
#include "harness.h"

enum { BH_SEQ = 16, BH_GEN = 6, BH_ROWS = BH_GEN + 1, BH_PROMPT_CAP = 320, BH_BATCH_CAP = 512 };

/* The shape of a run: prompts of min_prompt..max_prompt tokens, a budget of entries a step
 * (<= n_batch of the engine), and the chunk lengths check_chunking feeds one prompt in. */
struct bh_cfg {
    int min_prompt, max_prompt, budget;
    int chunks[4];    /* the first is the prompt whole */
    bool jobs;        /* give exsa_decode the entries' job lengths */
    bool expect_same; /* check every row equals alone (and the chunkings) */
};

struct bh_script {
    int n_prompt;
    int32_t tok[BH_PROMPT_CAP + BH_GEN];
};

static inline void bh_make_scripts(const struct bh_cfg *c, int vocab, struct bh_script *s)
{
    const int span = c->max_prompt - c->min_prompt + 1;
    for (int i = 0; i < BH_SEQ; i++) {
        s[i].n_prompt = c->min_prompt + (i * 29) % span; /* some short, some long */
        for (int k = 0; k < s[i].n_prompt + BH_GEN; k++)
            s[i].tok[k] = (int32_t)(20 + (i * 131 + k * 37) % (vocab - 20));
    }
}

/* A sequence being run: its engine id, how far its script is, where its logit rows go. */
struct bh_run {
    const struct bh_script *s;
    int id, done, rows, start_step;
    float *out; /* [BH_ROWS][vocab] */
};

struct bh_ctx {
    const struct bh_cfg *cfg;
    struct exsa_engine *e;
    int vocab;
    float *logits; /* [BH_BATCH_CAP][vocab] */
};

/* Adds this step's entries of run q (pass 0: its decode token, 1: a prompt chunk). */
static inline int bh_take(struct bh_run *q, int pass, int budget, int n, int32_t *tok, int32_t *pos,
                          int32_t *seq, int32_t *job, uint8_t *want, struct bh_run **owner)
{
    const int left_prompt = q->s->n_prompt - q->done;
    const int take = pass == 0 ? 1 : (left_prompt < budget ? left_prompt : budget);
    for (int k = 0; k < take; k++, n++) {
        tok[n] = q->s->tok[q->done + k], pos[n] = q->done + k, seq[n] = q->id;
        want[n] = pass == 0 || k == left_prompt - 1;
        job[n] = pass == 0 ? 1 : q->s->n_prompt;
        owner[n] = q;
    }
    q->done += take;
    return take;
}

/* One step of the simulated scheduler over the running sequences; returns the entry count, or
 * -1 when nothing was left to do. Logits are copied to each sequence's rows. */
static inline int bh_step(struct bh_ctx *x, struct bh_run *r, int n_run, int step)
{
    static int32_t tok[BH_BATCH_CAP], pos[BH_BATCH_CAP], seq[BH_BATCH_CAP], job[BH_BATCH_CAP];
    static uint8_t want[BH_BATCH_CAP];
    static struct bh_run *owner[BH_BATCH_CAP];
    int n = 0, budget = x->cfg->budget;
    for (int pass = 0; pass < 2; pass++) /* 0: decode tokens, 1: prompt chunks */
        for (int i = 0; i < n_run; i++) {
            struct bh_run *q = &r[i];
            const int total = q->s->n_prompt + BH_GEN, left_prompt = q->s->n_prompt - q->done;
            if (step < q->start_step || q->done >= total || (pass == 0) != (left_prompt <= 0))
                continue;
            const int took = bh_take(q, pass, budget, n, tok, pos, seq, job, want, owner);
            n += took, budget -= took;
        }
    if (n == 0)
        return -1;
    struct exsa_batch b = {n, tok, pos, seq, want, x->cfg->jobs ? job : NULL};
    const int rc = exsa_decode(x->e, &b, x->logits);
    CHECK(rc == 0, "exsa_decode: %d", rc);
    for (int i = 0, k = 0; i < n && rc == 0; i++)
        if (want[i]) {
            struct bh_run *q = owner[i];
            if (q->rows < BH_ROWS)
                memcpy(q->out + (size_t)q->rows * x->vocab, x->logits + (size_t)k * x->vocab,
                       sizeof(float) * x->vocab);
            q->rows++, k++;
        }
    return n;
}

/* Runs the scripts first..first+n together (sequence j arriving at step j * stagger); their rows
 * go to out[i]. Returns the largest step's entry count. */
static inline int bh_group(struct bh_ctx *x, const struct bh_script *s, int first, int n,
                           int stagger, float **out)
{
    struct bh_run r[BH_SEQ];
    for (int j = 0; j < n; j++) {
        r[j] = (struct bh_run){.s = &s[first + j],
                               .id = exsa_seq_new(x->e),
                               .start_step = j * stagger,
                               .out = out[first + j]};
        CHECK(r[j].id >= 0, "exsa_seq_new: %d", r[j].id);
    }
    int widest = 0;
    for (int step = 0; step < 4000; step++) {
        const int got = bh_step(x, r, n, step);
        bool waiting = false; /* a late arrival still to come */
        for (int j = 0; j < n; j++)
            waiting |= step < r[j].start_step;
        if (got < 0 && !waiting)
            break;
        widest = got > widest ? got : widest;
    }
    for (int j = 0; j < n; j++) {
        CHECK(r[j].rows == BH_ROWS, "sequence %d: %d logit rows", first + j, r[j].rows);
        exsa_seq_free(x->e, r[j].id);
    }
    return widest;
}

/* The first row of a that differs from b (bitwise), or -1. */
static inline int bh_first_diff(const float *a, const float *b, int rows, int vocab)
{
    for (int k = 0; k < rows; k++)
        if (memcmp(a + (size_t)k * vocab, b + (size_t)k * vocab, sizeof(float) * vocab))
            return k;
    return -1;
}

/* A prompt fed in each of cfg->chunks (each chunk's last entry asking for logits), then its
 * decode tokens: the same rows as whole. */
static inline void bh_check_chunking(struct bh_ctx *x, const struct bh_script *s, float *whole,
                                     float *part, const char *what)
{
    static int32_t pos[BH_BATCH_CAP], seq[BH_BATCH_CAP], job[BH_BATCH_CAP];
    for (int c = 0; c < 4 && x->cfg->chunks[c] > 0; c++) {
        float *out = c == 0 ? whole : part;
        const int id = exsa_seq_new(x->e), n_tot = s->n_prompt + BH_GEN, len = x->cfg->chunks[c];
        int rows = 0;
        for (int done = 0; done < n_tot;) {
            const bool prompt = done < s->n_prompt;
            const int left = s->n_prompt - done;
            const int n = !prompt ? 1 : left < len ? left : len;
            for (int k = 0; k < n; k++)
                pos[k] = done + k, seq[k] = id, job[k] = prompt ? s->n_prompt : 1;
            struct exsa_batch b = {n, s->tok + done, pos, seq, NULL, job};
            CHECK(exsa_decode(x->e, &b, x->logits) == 0, "decode");
            done += n;
            if (done >= s->n_prompt) /* the prompt's end, then every decode token */
                memcpy(out + (size_t)rows++ * x->vocab, x->logits, sizeof(float) * x->vocab);
        }
        exsa_seq_free(x->e, id);
        const int bad = c == 0 ? -1 : bh_first_diff(part, whole, BH_ROWS, x->vocab);
        CHECK(bad < 0, "%s: chunks of %d: row %d differs from the whole prompt's", what, len, bad);
    }
}

/* The scripts alone and in groups of 2, 8 and 16 on engine e. With job lengths every row must
 * match (and the chunking check runs); returns how many (sequence, group size) pairs differed
 * from alone, and the widest step in *widest. */
static inline int bh_check_engine(struct exsa_engine *e, const struct bh_cfg *cfg, int vocab,
                                  const char *what, int *widest)
{
    struct bh_ctx x = {cfg, e, vocab, malloc(sizeof(float) * BH_BATCH_CAP * (size_t)vocab)};
    struct bh_script *s = malloc(sizeof(struct bh_script) * BH_SEQ);
    bh_make_scripts(cfg, vocab, s);
    float *alone[BH_SEQ], *batched[BH_SEQ];
    for (int i = 0; i < BH_SEQ; i++) {
        alone[i] = malloc(sizeof(float) * BH_ROWS * (size_t)vocab);
        batched[i] = malloc(sizeof(float) * BH_ROWS * (size_t)vocab);
    }
    for (int i = 0; i < BH_SEQ; i++)
        bh_group(&x, s, i, 1, 0, alone);
    static const int groups[] = {2, 8, 16};
    int differed = 0;
    *widest = 0;
    for (int g = 0; g < 3; g++) {
        for (int first = 0; first < BH_SEQ; first += groups[g]) {
            const int w = bh_group(&x, s, first, groups[g], 1 + g % 2, batched);
            *widest = w > *widest ? w : *widest;
        }
        int same = 0;
        for (int i = 0; i < BH_SEQ; i++) {
            const int bad = bh_first_diff(batched[i], alone[i], BH_ROWS, vocab);
            same += bad < 0;
            CHECK(!cfg->expect_same || bad < 0,
                  "%s: sequence %d with %d others: row %d differs from alone", what, i,
                  groups[g] - 1, bad);
        }
        CHECK(!cfg->expect_same || same == BH_SEQ, "%s: %d of %d sequences the same with %d others",
              what, same, BH_SEQ, groups[g] - 1);
        differed += BH_SEQ - same;
    }
    int longest = 0;
    for (int i = 1; i < BH_SEQ; i++)
        longest = s[i].n_prompt > s[longest].n_prompt ? i : longest;
    if (cfg->expect_same)
        bh_check_chunking(&x, &s[longest], alone[0], batched[0], what);
    for (int i = 0; i < BH_SEQ; i++)
        free(alone[i]), free(batched[i]);
    free(s);
    free(x.logits);
    return differed;
}

#endif
