/*
 * tokmask.h: the token mask of constrained decoding: which tokens of the vocabulary may come
 * next under a grammar (grammar.h, built by jsonschema.h), as a bit set, and the sampler hook
 * (sampler.h) that bars all others and follows the tokens drawn. End-of-generation tokens are
 * allowed only where the value is complete, special tokens only where the grammar names them.
 * struct tm_vocab is built once per tokenizer (a trie over the tokens' bytes, and the tokens
 * that can stand anywhere inside a JSON string), read-only after, shared by every request;
 * struct tm_mask is one request's position in its grammar. Used by the server and tests.
 */
#ifndef EXSA_TOKMASK_H
#define EXSA_TOKMASK_H

#include <stdbool.h>
#include <stdint.h>

#include "sampler.h"

struct tokenizer;
struct grammar;
struct tm_vocab;
struct tm_mask;

/* Indexes the n_vocab tokens of tok (n_vocab: the model's logit count). Returns 0 or
 * EXSA_ENOMEM. */
int tm_vocab_new(const struct tokenizer *tok, int n_vocab, struct tm_vocab **out);
void tm_vocab_free(struct tm_vocab *v);

/* A mask at the start of grammar g; v and g must outlive it. Returns 0, EXSA_ENOMEM, or
 * EXSA_EINVAL when g allows nothing. */
int tm_mask_new(const struct tm_vocab *v, const struct grammar *g, struct tm_mask **out);
void tm_mask_free(struct tm_mask *m);
/* The tokens allowed now: bit t of word t / 64. Never empty: should the grammar leave no token
 * (only past its nesting cap), the end-of-generation tokens are allowed. Valid until the next
 * tm_accept or free. */
const uint64_t *tm_allowed(struct tm_mask *m);
/* Moves past token tok. Returns 0, or EXSA_EINVAL (tok is not allowed: nothing changes). */
int tm_accept(struct tm_mask *m, int32_t tok);
/* The value is complete: only end-of-generation tokens are allowed. */
bool tm_done(const struct tm_mask *m);
/* The hook for sampler_set_mask / gen_params.mask (ctx is m). */
struct sampler_mask tm_sampler_mask(struct tm_mask *m);

#endif
