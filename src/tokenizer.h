/*
 * tokenizer.h: byte-level BPE read from a GGUF's tokenizer.ggml.* keys (LFM2-SPEC.md section 6):
 * special-token partitioning, the `lfm2` (llama-3 regex, whole pre-token lookup before merging)
 * and `gpt-2` pre-tokenizers on PCRE2, merges by rank, BOS per add_bos_token, and the
 * end-of-generation set. Read-only after tok_load(); safe to share between threads.
 */
#ifndef EXSA_TOKENIZER_H
#define EXSA_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

struct tokenizer;
struct exsa_model;

/* Reads the vocabulary from f. vocab_size is the model's embedding row count (every token id
 * must be below it), or 0 for a vocabulary-only file. An unknown tokenizer model or pre-tokenizer
 * is EXSA_EUNSUPPORTED with a sentence in err. */
int tok_load(const struct gguf_file *f, int vocab_size, struct tokenizer **out, char *err,
             size_t errlen);
void tok_free(struct tokenizer *t);

int tok_n_vocab(const struct tokenizer *t);
int32_t tok_bos(const struct tokenizer *t); /* -1 if none */
int32_t tok_eos(const struct tokenizer *t);
bool tok_add_bos(const struct tokenizer *t);
bool tok_is_eog(const struct tokenizer *t, int32_t id);
bool tok_is_control(const struct tokenizer *t, int32_t id);
/* The id of the token whose text is exactly s, or -1. */
int32_t tok_find(const struct tokenizer *t, const char *s);

/* Encodes len bytes of text. add_bos: prepend BOS when the vocabulary's add_bos is on.
 * parse_special: match control tokens as whole strings. Writes up to max ids; returns the
 * total count (may exceed max: call again with more room) or a negative code. */
int tok_encode(const struct tokenizer *t, const char *text, size_t len, bool add_bos,
               bool parse_special, int32_t *out, int max);
/* The bytes of token id (control tokens: empty unless special is true). *len gets the length;
 * the pointer stays valid while t lives. Returns 0 or EXSA_ERANGE. */
int tok_piece(const struct tokenizer *t, int32_t id, bool special, const char **bytes, size_t *len);

/* The tokenizer of a loaded model (NULL for NULL): what code outside the model module uses. */
const struct tokenizer *tok_of_model(const struct exsa_model *m);

#endif
