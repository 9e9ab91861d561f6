/*
 * gen.h: one reply being generated: the sampler, the stop conditions (end-of-generation
 * tokens, stop strings, max tokens) and the streaming detokenizer that never emits half a UTF-8
 * character and holds back text that could be the start of a stop string; on request each
 * token's logprobs, and a mask (constrained decoding) handed to the sampler. Used by `exsa run`,
 * `exsa chat` and the scheduler (one struct gen per request). Not thread-safe.
 */
#ifndef EXSA_GEN_H
#define EXSA_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "exsa.h"
#include "sampler.h"

enum gen_finish {
    GEN_RUNNING = 0,
    GEN_EOG,    /* the model produced an end-of-generation token */
    GEN_STOP,   /* a stop string matched */
    GEN_LENGTH, /* max_tokens reached (or the context is full) */
    GEN_CANCELLED,
};

struct gen_params {
    struct exsa_sampling_params sp;
    int max_tokens;          /* <= 0: no limit but the context */
    const char *const *stop; /* stop strings (copied) */
    int n_stop;
    bool ignore_eog;
    bool logprobs;    /* record each sampled token's logprob (gen_logprobs) */
    int top_logprobs; /* with logprobs: alternatives per token, 0..SAMPLER_MAX_TOP_LOGPROBS */
    struct sampler_mask mask; /* constrained decoding (tokmask.h), or all NULL */
};

/* Liquid's recommended LFM2 defaults (temperature 0.3, min_p 0.15, repetition penalty 1.05,
 * penalty window 64), used when a caller sets no sampling parameter. */
void gen_params_default(struct gen_params *p);

struct gen;
struct tokenizer;

int gen_create(const struct tokenizer *tok, int n_vocab, const struct gen_params *p,
               struct gen **out);
void gen_free(struct gen *g);
/* Feeds prompt tokens into the penalty window (call once before the first gen_next). */
void gen_prompt(struct gen *g, const int32_t *toks, int n);
/* Samples the next token from logits (n_vocab floats; may be modified), updates the stop state,
 * and points *text and *len at the text that may now be shown (possibly empty; valid until the next
 * call). Returns the token. After it, gen_finished() tells whether the reply is over; the
 * token that ended it (an EOG token) is not part of the text. */
int32_t gen_next(struct gen *g, float *logits, const char **text, size_t *len);
/* A token's logprob (sampler.h) and its bytes (special tokens as their text; valid while the
 * tokenizer lives). */
struct gen_logprob {
    int32_t id;
    float logprob;
    const char *bytes;
    size_t len;
};
/* After gen_next, with logprobs on: *chosen gets the sampled token, top[0..) up to max_top of
 * the most likely ones (highest first). Returns how many went into top, or -1 (logprobs off,
 * or no token sampled yet). */
int gen_logprobs(const struct gen *g, struct gen_logprob *chosen, struct gen_logprob *top,
                 int max_top);
/* Marks the reply over for a reason found outside (cancel, context full). */
void gen_end(struct gen *g, enum gen_finish why);
enum gen_finish gen_finished(const struct gen *g);
int gen_n_tokens(const struct gen *g); /* tokens sampled so far, the ending EOG included */
/* After the end: the held-back text that belongs to the reply (no stop string). */
void gen_flush(struct gen *g, const char **text, size_t *len);
/* "stop" or "length" (OpenAI's finish_reason); "cancelled" for GEN_CANCELLED. */
const char *gen_finish_reason(enum gen_finish f);
/* When the reply ended on its very first token with no text (the "0-token issue"): a sentence
 * saying why ("the model ended its turn at once with <|im_end|>"), else NULL. */
const char *gen_empty_reason(const struct gen *g);

#endif
