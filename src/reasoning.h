/*
 * reasoning.h: splits a thinking model's reply into reasoning and content: a reply that opens
 * with <think> (after optional whitespace) puts everything up to </think> into reasoning, the
 * rest into content; a reply that never opens one is all content. Whitespace just inside the
 * think block and at the start of the content after it is dropped. An unclosed block is all
 * reasoning (the reply ran out while thinking). Streaming: split anywhere, the pieces give the
 * same reasoning and content as the whole text; only a possible start of <think> or </think>
 * (and trailing whitespace inside the block) is held back. Used by the server before the
 * tool-call parser (toolcall.h), which then sees only the content.
 */
#ifndef EXSA_REASONING_H
#define EXSA_REASONING_H

#include <stdbool.h>
#include <stddef.h>

#define RSN_OPEN "<think>"
#define RSN_CLOSE "</think>"

/* What one feed produced; valid until the next feed, finish or free. */
struct rsn_out {
    const char *reasoning, *content; /* NUL-terminated */
    size_t reasoning_len, content_len;
};

struct rsn;

/* open: the prompt already opened the think block (the reply starts inside it). Returns 0 or
 * EXSA_ENOMEM. */
int rsn_new(bool open, struct rsn **out);
void rsn_free(struct rsn *r);
/* Returns 0 or EXSA_ENOMEM. */
int rsn_feed(struct rsn *r, const char *text, size_t n, struct rsn_out *o);
/* The reply is over: releases what was held. */
int rsn_finish(struct rsn *r, struct rsn_out *o);

#endif
