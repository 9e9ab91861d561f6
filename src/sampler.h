/*
 * sampler.h: turns one row of logits into one token (llama.cpp's chain and semantics): logit
 * bias, repetition/presence/frequency penalties over the last penalty_last_n tokens, top-k,
 * top-p, min-p, temperature, then a draw from a seeded xoshiro256** generator. Greedy (argmax
 * after bias and penalties) when temperature <= 0. Same seed + same settings + same logits ->
 * same tokens. A mask (constrained decoding, tokmask.h) may bar tokens after the penalties and
 * before the filters; logprobs, when asked for, describe the distribution that the filters then
 * cut: the softmax of the logits after bias, penalties, mask and temperature. One struct sampler
 * per request; not thread-safe. Used by gen.c and tests.
 */
#ifndef EXSA_SAMPLER_H
#define EXSA_SAMPLER_H

#include <stdint.h>

#include "exsa.h"

/* exsa_sampling_params.seed value that means "seed from the clock" (every other value, 0
 * included, is used as given). */
#define SAMPLER_SEED_RANDOM UINT64_MAX

struct sampler;

/* A candidate that survived the filters: its id, its logit after bias, penalties and
 * temperature, and its probability among the survivors. */
struct sampler_cand {
    int32_t id;
    float logit;
    float p;
};

/* Which tokens may come next (constrained decoding). apply() sets the logit of every token not
 * allowed now to -INFINITY; accept() moves the constraint past the token that was drawn. The
 * owner of ctx keeps it alive while the sampler uses it. */
struct sampler_mask {
    void (*apply)(void *ctx, float *logits, int n_vocab);
    void (*accept)(void *ctx, int32_t tok);
    void *ctx;
};

#define SAMPLER_MAX_TOP_LOGPROBS 20

struct sampler_logprob {
    int32_t id;
    float logprob; /* natural log; -INFINITY for a token that could not be drawn */
};

/* Copies p (the logit-bias arrays included); n_vocab > 0. Returns 0, EXSA_EINVAL or
 * EXSA_ENOMEM. */
int sampler_create(const struct exsa_sampling_params *p, int n_vocab, struct sampler **out);
void sampler_free(struct sampler *s);
/* Forgets the penalty window (a new request with the same settings). The RNG is not reseeded. */
void sampler_reset(struct sampler *s);
/* Pushes a token (prompt or generated) into the penalty window; ids out of range are ignored. */
void sampler_accept(struct sampler *s, int32_t tok);

/* Applies bias and penalties to logits in place (n_vocab floats). */
void sampler_apply_penalties(struct sampler *s, float *logits);
/* Applies bias, penalties and the mask (in place) and then top-k, top-p, min-p and temperature;
 * points *cands at the survivors (valid until the next call; sorted by logit, highest first, when
 * top-p ran, otherwise in no set order) and returns their count (>= 1). With temperature <= 0
 * the one survivor is the argmax (ties: lowest id) with p = 1. */
int sampler_filter(struct sampler *s, float *logits, const struct sampler_cand **cands);
/* sampler_filter, then a draw by the survivors' probabilities; the mask (if any) accepts the
 * token and logprobs (if on) are recorded. Does not call sampler_accept. */
int32_t sampler_sample(struct sampler *s, float *logits);

/* Sets the mask applied from the next draw on (NULL or apply == NULL: none). */
void sampler_set_mask(struct sampler *s, const struct sampler_mask *m);
/* From the next draw on, records logprobs: the drawn token's and those of the n_top most likely
 * tokens (0..SAMPLER_MAX_TOP_LOGPROBS; -1 turns it off). Returns 0 or EXSA_EINVAL. */
int sampler_set_logprobs(struct sampler *s, int n_top);
/* After sampler_sample with logprobs on: *chosen gets the drawn token's logprob and *top the
 * n_top best (highest first, ties by lower id; only tokens that could be drawn, so fewer when
 * fewer are allowed). Returns their count, or -1 when logprobs are off or nothing was drawn. */
int sampler_logprobs(const struct sampler *s, struct sampler_logprob *chosen,
                     const struct sampler_logprob **top);

/* The next uniform double in [0, 1) from the sampler's generator (tests). */
double sampler_uniform(struct sampler *s);

#endif
