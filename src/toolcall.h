/*
 * toolcall.h: LFM2 tool calls in generated text, turned into OpenAI tool_calls
 * (LFM2-SPEC.md 7.4). A call block is <|tool_call_start|>[...]<|tool_call_end|> holding either
 * Python calls, [name(arg=value, ...), other.name(...)] (strings in single or double quotes with
 * Python escapes, numbers, True/False/None and true/false/null, lists, tuples, dicts, nested), or
 * the JSON form, [{"name": ..., "arguments": {...}}]; the brackets may be left out around a
 * single call, and the end marker at the very end of the reply. Text around blocks is content;
 * a block that does not parse is content too, byte for byte: never an error.
 * Streaming: feed the reply's text as it is decoded; each feed returns the content that can no
 * longer become part of a call and one delta per call completed. Split anywhere, the pieces
 * give the same content and calls as the whole text. Used by the server and tests.
 */
#ifndef EXSA_TOOLCALL_H
#define EXSA_TOOLCALL_H

#include <stdbool.h>
#include <stddef.h>

#define TC_START "<|tool_call_start|>"
#define TC_END "<|tool_call_end|>"

struct tc_call {
    char *id;        /* id_prefix + the call's index ("call_0") */
    char *name;      /* as written: letters, digits, _ and -, dotted parts */
    char *arguments; /* a compact JSON object: {"city":"Paris","n":3} */
};

/* One call, in OpenAI's streaming shape: a call arrives whole, so each delta carries the
 * index, id, name and all of the arguments. */
struct tc_delta {
    int index;
    const char *id, *name, *arguments;
};

/* What one feed produced; valid until the next feed, finish or free. */
struct tc_events {
    const char *content; /* NUL-terminated */
    size_t content_len;
    const struct tc_delta *deltas;
    int n_deltas;
};

struct tc_parser;

/* id_prefix (copied; NULL: "call_") starts every call id. Returns 0 or EXSA_ENOMEM. */
int tc_parser_new(const char *id_prefix, struct tc_parser **out);
void tc_parser_free(struct tc_parser *p);
/* Feeds n bytes of the reply. Returns 0 or EXSA_ENOMEM (the parser is then unusable). */
int tc_feed(struct tc_parser *p, const char *text, size_t n, struct tc_events *ev);
/* The reply is over: what was held back is resolved (a call, or content). Further feeds are
 * EXSA_EINVAL. */
int tc_finish(struct tc_parser *p, struct tc_events *ev);
/* The calls found so far, in order (tc_call(p, i) for i < tc_n_calls(p)). */
int tc_n_calls(const struct tc_parser *p);
const struct tc_call *tc_call(const struct tc_parser *p, int i);

/* A whole reply at once. */
struct tc_result {
    char *content; /* everything that is not a call, NUL-terminated */
    size_t content_len;
    struct tc_call *calls;
    int n_calls;
};
/* Returns 0 or EXSA_ENOMEM; r is filled (free it with tc_result_free) only on success. */
int tc_parse(const char *text, size_t n, const char *id_prefix, struct tc_result *r);
void tc_result_free(struct tc_result *r);

#endif
