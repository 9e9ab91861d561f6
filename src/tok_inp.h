/*
 * tok_inp.h: the text layout of llama.cpp's tokenizer tests, shared by `exsa tokenize --inp`
 * and tests/test_tokenizer.c. An `.inp` buffer holds strings, each followed by the line
 * "__ggml_vocab_test__" (so a string is everything up to "\n__ggml_vocab_test__\n", and may be
 * empty or hold newlines); an `.out` file holds one line per string: its ids, space-separated,
 * no BOS, special tokens not parsed. Stateless; safe from any thread.
 */
#ifndef EXSA_TOK_INP_H
#define EXSA_TOK_INP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "tokenizer.h"

#define TOK_INP_MARKER "\n__ggml_vocab_test__\n"

/* The string that starts at *pos in data[0..len): returns true with *s / *n set and *pos moved
 * past its marker, or false when no string is left. Text after the last marker, if any, counts
 * as one last string. */
bool tok_inp_next(const char *data, size_t len, size_t *pos, const char **s, size_t *n);

/* Encodes every string of an .inp buffer and writes the .out layout to out. Returns the number
 * of strings, or a negative code from tok_encode (EXSA_EIO when writing fails). */
int tok_inp_run(const struct tokenizer *t, const char *data, size_t len, FILE *out);

#endif
