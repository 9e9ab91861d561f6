/*
 * tok_pre.h: private to the tokenizer. The pre-tokenizers (LFM2-SPEC.md section 6.4 step B):
 * a GGUF `tokenizer.ggml.pre` name resolved to one split regex compiled with PCRE2 (UTF, UCP,
 * JIT), and the llama.cpp reading of invalid UTF-8 (each bad byte becomes U+FFFD) that makes any
 * input safe to split. A struct tok_pre is read-only after tok_pre_new(); tok_pre_split() may be
 * called from several threads at once. Called by tokenizer.c only.
 */
#ifndef EXSA_TOK_PRE_H
#define EXSA_TOK_PRE_H

#include <stdbool.h>
#include <stddef.h>

struct tok_pre;

/* Compiles the split regex that pre-tokenizer `name` (n bytes, not NUL-terminated) selects.
 * *ignore_merges and *add_bos get llama.cpp's settings for that name. An unknown name is
 * EXSA_EUNSUPPORTED with a sentence in err; EXSA_ENOMEM if PCRE2 fails. */
int tok_pre_new(const char *name, size_t n, struct tok_pre **out, bool *ignore_merges,
                bool *add_bos, char *err, size_t errlen);
void tok_pre_free(struct tok_pre *p);

/* Called once per piece, in order; a non-zero return stops the split and is passed back. */
typedef int (*tok_piece_fn)(void *ctx, const char *s, size_t n);

/* Splits len bytes of valid UTF-8 (see tok_utf8_sanitize) into pieces whose concatenation is
 * the text. Returns 0, the callback's non-zero value, or EXSA_ENOMEM / EXSA_EINVAL. */
int tok_pre_split(const struct tok_pre *p, const char *text, size_t len, tok_piece_fn fn,
                  void *ctx);

/* Makes text valid UTF-8 the way llama.cpp decodes it: a byte that does not start a well-formed
 * (if lenient: overlong forms are accepted and re-encoded) sequence becomes U+FFFD, and so do
 * surrogates and code points past U+10FFFF. When text is already strictly valid, *out = text and
 * *owned = NULL; otherwise *out = *owned = a malloc'd copy the caller frees. Returns 0 or
 * EXSA_ENOMEM. */
int tok_utf8_sanitize(const char *text, size_t len, const char **out, size_t *outlen, char **owned);

/* Decodes one code point at s[0..n) (n >= 1) leniently as above; *adv gets the bytes used.
 * Returns the code point, or 0xFFFD for an invalid byte (then *adv = 1). */
unsigned tok_utf8_decode(const unsigned char *s, size_t n, size_t *adv);
/* Writes the UTF-8 form of cp (<= 0x10FFFF) to buf; returns its length (1-4). */
size_t tok_utf8_encode(unsigned cp, char *buf);

#endif
