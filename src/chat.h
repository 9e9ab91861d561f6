/*
 * chat.h: LFM2-family chat templates rendered in C (LFM2-SPEC.md section 7): LFM2 v1 (tool
 * lists), LFM2.5-Instruct and LFM2.5 reasoning, chosen from the GGUF's tokenizer.chat_template;
 * an unrecognised template falls back to the LFM2 layout with a warning.
 */
#ifndef EXSA_CHAT_H
#define EXSA_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "exsa.h"
#include "gguf.h"

enum chat_variant { CHAT_LFM2 = 0, CHAT_LFM25, CHAT_LFM25_REASONING, CHAT_FALLBACK };

struct chat_template;
struct tokenizer;
struct exsa_model;

/* Picks the variant from f's tokenizer.chat_template. Never fails on an odd template: it falls
 * back to CHAT_FALLBACK (the LFM2 layout) and writes a warning into warn (empty if none). */
int chat_template_load(const struct gguf_file *f, struct chat_template **out, char *warn,
                       size_t warnlen);
void chat_template_free(struct chat_template *t);
enum chat_variant chat_template_variant(const struct chat_template *t);
/* The chat template of a loaded model (NULL for NULL): what code outside the model module uses. */
const struct chat_template *chat_of_model(const struct exsa_model *m);
const char *chat_variant_name(enum chat_variant v);

/* Renders the conversation as text (the BOS marker included); *out is malloc'd. tools_json is
 * a JSON array of tool definitions or NULL. Returns 0 or a negative code. */
int chat_render(const struct chat_template *t, const struct exsa_chat_msg *msgs, int n_msgs,
                const char *tools_json, bool add_generation_prompt, char **out);

/* Renders and tokenizes: the template's own markers with special-token parsing, message
 * contents without it (user text cannot inject control tokens), exactly one BOS. *out is
 * malloc'd (n_out ids). Returns 0 or a negative code. */
int chat_tokenize(const struct chat_template *t, const struct tokenizer *tok,
                  const struct exsa_chat_msg *msgs, int n_msgs, const char *tools_json,
                  bool add_generation_prompt, int32_t **out, int *n_out);

/* Where the messages of a rendered LFM2-family chat start in ids[0..n): the positions (> 0,
 * ascending) of its <|im_start|> tokens, which chat_tokenize emits only to open a message (or
 * the generation prompt), never from message text. *out is malloc'd (NULL when none). The
 * prompt cache takes checkpoints there. Returns 0 or a negative code. */
int chat_msg_starts(const struct tokenizer *tok, const int32_t *ids, int n, int32_t **out,
                    int *n_out);

#endif
