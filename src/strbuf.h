/*
 * strbuf.h: a growable byte string (struct sb) and the UTF-8 checks the text modules share
 * (toolcall.c, reasoning.c, grammar.c, gen.c).
 *
 * struct sb keeps its bytes NUL-terminated whenever err is 0; a failed allocation sets err to
 * EXSA_ENOMEM once and every later append is ignored, so callers check err at the end instead of
 * after every call. Not thread-safe; one owner. grow_array is the doubling growth behind it, for
 * the other growable arrays of the tree (one copy of the capacity arithmetic).
 */
#ifndef EXSA_STRBUF_H
#define EXSA_STRBUF_H

#include <stddef.h>
#include <stdint.h>

struct sb {
    char *s; /* NULL until the first append */
    size_t len, cap;
    int err; /* 0 or EXSA_ENOMEM */
};

/* Appends n bytes (no-op after an error). */
void sb_put(struct sb *b, const char *s, size_t n);
void sb_puts(struct sb *b, const char *s);
void sb_putc(struct sb *b, char c);
/* Appends the UTF-8 encoding of code point cp (U+FFFD for surrogates and cp > 0x10FFFF). */
void sb_put_utf8(struct sb *b, uint32_t cp);
/* Appends s[0..n) as the inside of a JSON string: ", \ and control bytes escaped, other
 * bytes as they are (the caller passes valid UTF-8). */
void sb_put_json_escaped(struct sb *b, const char *s, size_t n);
/* The JSON escape of byte c (\n, \", \\, ..., or \u00XX written into u), or NULL when c goes
 * into a JSON string as it is: the one escape table of sb_put_json_escaped and chat.c. */
const char *json_escape(unsigned char c, char u[8]);
/* Empties the string, keeping its memory. */
void sb_clear(struct sb *b);
/* Drops the first n bytes. */
void sb_drop(struct sb *b, size_t n);
void sb_free(struct sb *b);
/* Moves the bytes out (the caller frees them; "" if none) and empties b; NULL on error. */
char *sb_take(struct sb *b);

/* p (an array with room for *cap elements of elem bytes) with room for at least need: the
 * same pointer when it has it, else a larger block (capacity first, doubled until need fits;
 * *cap updated). NULL when out of memory, with p and *cap unchanged (p still the caller's).
 * Doubling keeps appending n elements one at a time O(n) in all. */
void *grow_array(void *p, size_t *cap, size_t need, size_t elem, size_t first);

/* Length of the valid UTF-8 character at s[0..n), 0 if s starts an invalid sequence (overlong,
 * surrogate, above U+10FFFF, stray continuation byte), or -1 if s[0..n) is a valid but
 * incomplete start of one. n >= 1. */
int utf8_char(const unsigned char *s, size_t n);
/* The code point of the valid character of length len at s. */
uint32_t utf8_decode(const unsigned char *s, int len);

#endif
